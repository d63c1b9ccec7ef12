/*
 * bench/bench_locality.c — where the allocator's memory comes from, per topology: one thread per
 * core cache of the process topology (NSP_TOPOLOGY), each bound to its cache, allocating and
 * freeing 16 B..4 KiB objects around a live set (1/8 of the frees cross threads). Prints one
 * JSON object: throughput, and per node the spans its caches took (refills), how many of them
 * came from another node (spills), and the bytes in use — the share of refills served from the
 * requesting core's own node is 1 - spills_out / refills. With NSP_NODE_LIMITS a small node
 * fills and its cores spill; with NSP_TRACE the pacer's events go to a CSV (experiments/).
 *
 *   bench_locality [--seconds S] [--live N] [--threads T]
 * Uses the public API only.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "numaspan.h"

static double seconds = 0.5;
static unsigned live_per_thread = 4096, nthreads;
static _Atomic int stop;
static _Atomic uint64_t total_ops;
static void *_Atomic *handoff; /* one slot per thread: objects passed to the next thread */

static uint64_t rng(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void *worker(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    if (nsp_thread_bind_core(id % nsp_topo_num_caches(nsp_topology())) < 0)
        fprintf(stderr, "bench_locality: cannot bind thread %u\n", id);
    void **live = calloc(live_per_thread, sizeof *live);
    uint64_t s = 0x9E3779B97F4A7C15ull ^ (id + 1), ops = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        for (int k = 0; k < 256; k++) {
            unsigned i = (unsigned)(rng(&s) % live_per_thread);
            void *old = live[i];
            if (old && (rng(&s) & 7) == 0) /* hand it to the next thread, which frees it */
                old = atomic_exchange(&handoff[(id + 1) % nthreads], old);
            free(old);
            size_t n = 16u << (rng(&s) % 9); /* 16 B .. 4 KiB */
            live[i] = malloc(n);
            if (live[i])
                memset(live[i], (int)id, 16);
            ops += 2;
        }
    }
    for (unsigned i = 0; i < live_per_thread; i++)
        free(live[i]);
    free(live);
    atomic_fetch_add(&total_ops, ops);
    return NULL;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (strcmp(argv[i], "--live") == 0 && i + 1 < argc)
            live_per_thread = (unsigned)atoi(argv[++i]);
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            nthreads = (unsigned)atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_locality [--seconds S] [--live N] [--threads T]\n");
            return 2;
        }
    }
    free(malloc(1)); /* initialise numaspan */
    nsp_topo_t *t = nsp_topology();
    if (!t) {
        fprintf(stderr, "bench_locality: numaspan has no topology (is it the allocator?)\n");
        return 1;
    }
    if (!nthreads)
        nthreads = nsp_topo_num_caches(t);
    if (nthreads < 1 || nthreads > 1024 || live_per_thread < 1) {
        fprintf(stderr, "bench_locality: --threads 1..1024, --live >= 1\n");
        return 2;
    }
    handoff = calloc(nthreads, sizeof *handoff);
    pthread_t *th = calloc(nthreads, sizeof *th);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (unsigned i = 0; i < nthreads; i++)
        pthread_create(&th[i], NULL, worker, (void *)(uintptr_t)i);
    struct timespec d = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
    nanosleep(&d, NULL);
    atomic_store(&stop, 1);
    for (unsigned i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    for (unsigned i = 0; i < nthreads; i++)
        free(atomic_load(&handoff[i]));
    double el = (double)(b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
    nsp_stats_t st;
    nsp_stats_get(&st);
    nsp_pacer_info_t pi;
    nsp_pacer_get(&pi);
    uint64_t refills = 0, spills = 0;
    printf("{\"topology\": \"%s\", \"nodes\": %u, \"caches\": %u, \"threads\": %u, "
           "\"seconds\": %.3f, \"mops\": %.4f, \"cycles\": %llu, \"node\": [",
           nsp_topo_spec(t), st.nnodes, st.ncaches, nthreads, el, atomic_load(&total_ops) / el / 1e6,
           (unsigned long long)pi.cycles);
    for (unsigned n = 0; n < st.nnodes; n++) {
        const nsp_node_stats_t *x = &st.node[n];
        refills += x->refills;
        spills += x->spills_out;
        printf("%s{\"node\": %u, \"refills\": %llu, \"spills_out\": %llu, \"spills_in\": %llu, "
               "\"pages_mapped\": %llu}",
               n ? ", " : "", n, (unsigned long long)x->refills, (unsigned long long)x->spills_out,
               (unsigned long long)x->spills_in, (unsigned long long)x->pages_mapped);
    }
    printf("], \"refills\": %llu, \"spills\": %llu, \"local_share\": %.4f}\n",
           (unsigned long long)refills, (unsigned long long)spills,
           refills ? 1.0 - (double)spills / (double)refills : 1.0);
    free(th);
    free(handoff);
    return 0;
}
