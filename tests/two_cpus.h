/*
 * tests/two_cpus.h — the two cpus a cross-cpu test runs on: the first two the process may use,
 * the calling (main) thread pinned to the first, so that its own frees (Check's included) never
 * land on the second cpu's magazine or slab. Needs _GNU_SOURCE (cpu_set_t), as every test here.
 */
#ifndef NSP_TESTS_TWO_CPUS_H
#define NSP_TESTS_TWO_CPUS_H

#include <sched.h>
#include <stdio.h>

/* Sets *a and *b and pins the calling thread to *a: 1, else 0 with the reason printed as the
 * test `name`'s skip (fewer than two cpus, or the pinning refused). */
static inline int nsp_test_two_cpus(const char *name, int *a, int *b)
{
    cpu_set_t all;
    if (sched_getaffinity(0, sizeof all, &all) != 0 || CPU_COUNT(&all) < 2) {
        fprintf(stderr, "%s: skipped: fewer than two cpus\n", name);
        return 0;
    }
    *a = *b = -1;
    for (int i = 0; i < CPU_SETSIZE && *b < 0; i++)
        if (CPU_ISSET(i, &all)) {
            if (*a < 0)
                *a = i;
            else
                *b = i;
        }
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(*a, &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0) {
        fprintf(stderr, "%s: skipped: cannot pin the thread to cpu %d\n", name, *a);
        return 0;
    }
    return 1;
}

#endif
