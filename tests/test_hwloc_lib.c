/*
 * tests/test_hwloc_lib.c — hwloc loaded for a topology's load only (topology/hwloc_lib.h).
 *
 * A topology keeps nothing of hwloc: after nsp_topo_load returns, libhwloc is no longer mapped in
 * this process (which does not link it), yet binding and every table still answer. A library
 * that cannot be loaded, or is not hwloc 2.x, is an error naming it.
 * Links the static library for nsp__hwloc_set_soname; the test itself never links hwloc.
 */
#define _GNU_SOURCE
#include <check.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "numaspan.h"

void nsp__hwloc_set_soname(const char *soname); /* topology/hwloc_lib.h, tests only */

/* Whether a mapping of this process names `what`. */
static int mapped(const char *what)
{
    FILE *f = fopen("/proc/self/maps", "r");
    ck_assert_ptr_nonnull(f);
    char line[1024];
    int found = 0;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, what) != NULL;
    fclose(f);
    return found;
}

START_TEST(hwloc_is_unmapped_once_loaded)
{
    char err[512];
    static const char *const specs[] = {"real", "synthetic:pack:2 numa:2 core:2 pu:2",
                                        "xml:" NSP_FIXTURES "/numalatency-4node.xml"};
    for (unsigned i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        nsp_topo_t *t = nsp_topo_load(specs[i], NSP_GROUP_PU, err, sizeof err);
        ck_assert_msg(t != NULL, "%s: %s", specs[i], err);
        ck_assert_msg(!mapped("libhwloc"), "%s: libhwloc still mapped after the load", specs[i]);
        ck_assert_msg(!mapped("libudev"), "%s: libudev still mapped after the load", specs[i]);
        nsp_topo_destroy(t);
    }
}
END_TEST

/* Binding needs each cache's cpus, which come from hwloc: copied at load, they bind every cache
 * of the real machine to exactly its cpus with hwloc gone. */
START_TEST(binding_after_hwloc_is_gone)
{
    char err[512];
    nsp_topo_t *t = nsp_topo_load("real", NSP_GROUP_PU, err, sizeof err);
    ck_assert_msg(t != NULL, "%s", err);
    ck_assert(!mapped("libhwloc"));
    for (unsigned c = 0; c < nsp_topo_num_caches(t); c++) {
        ck_assert_int_eq(nsp_topo_bind_thread(t, c), 0);
        cpu_set_t set;
        ck_assert_int_eq(sched_getaffinity(0, sizeof set, &set), 0);
        ck_assert_int_ge(CPU_COUNT(&set), 1);
        for (unsigned cpu = 0; cpu < CPU_SETSIZE; cpu++)
            if (CPU_ISSET(cpu, &set))
                ck_assert_uint_eq(nsp_topo_cache_of_cpu(t, cpu), c);
        ck_assert_uint_eq(nsp_topo_current_cache(t), c);
    }
    nsp_topo_destroy(t);
}
END_TEST

START_TEST(missing_library_is_named)
{
    char err[512];
    nsp__hwloc_set_soname("libnsp-no-such-hwloc.so.15");
    nsp_topo_t *t = nsp_topo_load("synthetic:pack:1 numa:1 core:2 pu:1", NSP_GROUP_PU, err,
                                  sizeof err);
    nsp__hwloc_set_soname(NULL);
    ck_assert_ptr_null(t);
    ck_assert_msg(strstr(err, "libnsp-no-such-hwloc.so.15") && strstr(err, "cannot be loaded") &&
                      strstr(err, "synthetic:pack:1 numa:1 core:2 pu:1"),
                  "error does not name the library and the topology: %s", err);
    /* and the next load, with the real library, works */
    t = nsp_topo_load("synthetic:pack:1 numa:1 core:2 pu:1", NSP_GROUP_PU, err, sizeof err);
    ck_assert_msg(t != NULL, "%s", err);
    nsp_topo_destroy(t);
}
END_TEST

START_TEST(library_that_is_not_hwloc_is_named)
{
    char err[512];
    nsp__hwloc_set_soname("libm.so.6");
    nsp_topo_t *t = nsp_topo_load("real", NSP_GROUP_PU, err, sizeof err);
    nsp__hwloc_set_soname(NULL);
    ck_assert_ptr_null(t);
    ck_assert_msg(strstr(err, "libm.so.6") && strstr(err, "no symbol hwloc_"),
                  "error does not name the library and the symbol: %s", err);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("hwloc_lib");
    TCase *tc = tcase_create("load");
    tcase_add_test(tc, hwloc_is_unmapped_once_loaded);
    tcase_add_test(tc, binding_after_hwloc_is_gone);
    tcase_add_test(tc, missing_library_is_named);
    tcase_add_test(tc, library_that_is_not_hwloc_is_named);
    suite_add_tcase(s, tc);
    return nsp_run_suite(s);
}
