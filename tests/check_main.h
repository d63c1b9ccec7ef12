/*
 * tests/check_main.h — the one main() of every Check suite: run it (fork mode, the default),
 * print Check's summary line, exit non-zero on any failure (CTest judges by exit code).
 */
#ifndef NSP_TESTS_CHECK_MAIN_H
#define NSP_TESTS_CHECK_MAIN_H

#include <check.h>
#include <stdlib.h>

static inline int nsp_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
