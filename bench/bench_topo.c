/*
 * bench/bench_topo.c — what it costs a thread to find its core cache.
 *
 * Prints ns per lookup for: sched_getcpu() alone, nsp_topo_current_cache() on the real machine
 * (sched_getcpu + table) and on a synthetic topology (virtual core from TLS), median of 9 runs.
 * DESIGN.md §3 budgets about 2 ns for the real-machine lookup.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "numaspan.h"

#define ITERS 10000000u
#define RUNS 9

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static volatile unsigned sink;

static double run(const nsp_topo_t *t)
{
    double v[RUNS];
    for (int r = 0; r < RUNS; r++) {
        unsigned acc = 0;
        double t0 = now_ns();
        for (unsigned i = 0; i < ITERS; i++)
            acc += t ? nsp_topo_current_cache(t) : (unsigned)sched_getcpu();
        v[r] = (now_ns() - t0) / ITERS;
        sink = acc;
    }
    qsort(v, RUNS, sizeof v[0], cmp);
    return v[RUNS / 2];
}

int main(void)
{
    char err[256];
    nsp_topo_t *real = nsp_topo_load("real", NSP_GROUP_PU, err, sizeof err);
    nsp_topo_t *syn = nsp_topo_load("synthetic:pack:8 numa:1 core:16 pu:1", NSP_GROUP_PU, err,
                                    sizeof err);
    if (!real || !syn) {
        fprintf(stderr, "bench_topo: %s\n", err);
        return 1;
    }
    printf("%-44s %8s\n", "lookup", "ns/op");
    printf("%-44s %8.2f\n", "sched_getcpu()", run(NULL));
    printf("%-44s %8.2f\n", "nsp_topo_current_cache (real machine)", run(real));
    printf("%-44s %8.2f\n", "nsp_topo_current_cache (synthetic, virtual)", run(syn));
    nsp_topo_destroy(real);
    nsp_topo_destroy(syn);
    return 0;
}
