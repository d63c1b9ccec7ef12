/*
 * tests/check_main.h — the one main() of every Check suite: run it (fork mode, the default),
 * print Check's summary line, exit non-zero on any failure (CTest judges by exit code).
 *
 * Every suite here links numaspan and tests it through the process's malloc, free and the rest.
 * Under valgrind's memcheck those names are valgrind's, not numaspan's, unless it is told to leave
 * the executable's alone (--soname-synonyms=somalloc=nouserintercepts): the suites would then
 * free numaspan's nsp_malloc_node objects with valgrind's free and look up spans for pointers
 * numaspan never made (crashes and "invalid free" reports that say nothing of numaspan). So under
 * valgrind with its malloc in place, a suite says so and is skipped, whole. Outside valgrind a
 * malloc that is not numaspan's is a broken build: the suite runs, and fails.
 */
#ifndef NSP_TESTS_CHECK_MAIN_H
#define NSP_TESTS_CHECK_MAIN_H

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "numaspan.h"

/* 1 when valgrind runs the process: its preload is in the environment. Valgrind runs one thread
 * at a time, so a case that needs a thread to run beside another (a holder that spins while a
 * waiter reads its state) skips under it, saying so. */
static inline int nsp_under_valgrind(void)
{
    const char *pre = getenv("LD_PRELOAD");
    return pre && strstr(pre, "vgpreload");
}

/* 1 when valgrind runs the process and the malloc the suite calls is not numaspan's (the object
 * it returns is in no span of numaspan's). */
static inline int nsp_malloc_is_valgrinds(void)
{
    if (!nsp_under_valgrind())
        return 0;
    void *p = malloc(64);
    int ours = nsp_node_of(p) >= 0;
    free(p);
    return !ours;
}

/* 0 when Check runs every case in this one process (CK_FORK=no, read as Check's own
 * srunner_fork_status reads it): a case registered to expect a signal (SIGABRT from an abort
 * it provokes) cannot pass there — the signal ends the whole run, and the cases after it never
 * report. Such a case is left out there, saying so (NSP_ADD_SIGNAL_TEST). */
static inline int nsp_check_forks(void)
{
    const char *e = getenv("CK_FORK");
    return !(e && strcmp(e, "no") == 0);
}

/* Registers tf as a case that must end in signal sig (SIGABRT from an abort it provokes, SIGSEGV
 * from a guard page it touches) where Check forks; under CK_FORK=no it is left out, saying so on
 * stderr (nsp_check_forks). */
#define NSP_ADD_SIGNAL_TEST(tc, tf, sig)                                                           \
    do {                                                                                           \
        if (nsp_check_forks())                                                                     \
            tcase_add_test_raise_signal(tc, tf, sig);                                              \
        else                                                                                       \
            fprintf(stderr, "%s: skipped: CK_FORK=no (its %s would end every case's run)\n", #tf,  \
                    (sig) == SIGABRT ? "abort" : (sig) == SIGSEGV ? "fault" : "signal");           \
    } while (0)

static inline int nsp_run_suite(Suite *s)
{
    if (nsp_malloc_is_valgrinds()) {
        fprintf(stderr, "skipped: malloc here is valgrind's, not numaspan's: run valgrind with "
                        "--soname-synonyms=somalloc=nouserintercepts to test numaspan\n");
        srunner_free(srunner_create(s)); /* the suite, unrun */
        return EXIT_SUCCESS;
    }
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
