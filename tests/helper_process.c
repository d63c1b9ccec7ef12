/*
 * tests/helper_process.c — a program for tests/test_process.sh: it reports what the library made
 * of its environment (the process topology, options) and can misuse the allocator on request.
 *   helper_process topo          spec, grouping, nodes, and the cache after binding to core 9
 *   helper_process bad-free      frees a stack address, then an interior pointer, then twice
 *   helper_process stats         allocates, frees, prints nsp_stats as JSON
 *   helper_process stats-wide    keeps an object of every small size, so that NSP_STATS's block
 *                                at exit has a row for every class (several KiB of text)
 *   helper_process remote-double-free   a thread frees main's object twice (run it on virtual
 *                                cores: the thread's cache is not the object's, both frees remote)
 *   helper_process stray-write   writes into a free object in its bin's list, then allocates:
 *                                the pop must refuse the link and the fold name the object
 *                                (exit 77, saying why, where there are no bins)
 *   helper_process pacer         frees 8 MiB, runs one cycle, then prints what the pacer made of
 *                                its options and what the cycle handed back
 *   helper_process option-names  prints the name of every option, one a line
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "numaspan.h"

/* These two cases call numaspan by its nsp_* names, so that they test it in sanitizer builds too
 * (whose runtime keeps the process's malloc). */
static void *free_twice(void *p)
{
    nsp_free(p);
    nsp_free(p);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "topo";
    if (strcmp(cmd, "topo") == 0) {
        nsp_topo_t *t = nsp_topology();
        int rc = nsp_thread_bind_core(9);
        printf("spec=%s grouping=%s nodes=%u bind=%d cache=%u\n", nsp_topo_spec(t),
               nsp_grouping_name(nsp_topo_grouping(t)), nsp_topo_num_nodes(t), rc,
               nsp_topo_current_cache(t));
        return 0;
    }
    if (strcmp(cmd, "bad-free") == 0) {
        int local;
        char *p = malloc(64);
        char *big = malloc(100000);
        free(&local);
        free(p + 8);
        free(big + 4096);
        free(p);
        free(p);
        free(big);
        free(big);
        nsp_stats_t st;
        nsp_stats_get(&st);
        /* frees of freed small objects are caught now (local) or at the next sweep (remote) */
        printf("not_owned=%llu interior=%llu double=%llu\n",
               (unsigned long long)st.not_owned_frees, (unsigned long long)st.interior_frees,
               (unsigned long long)st.double_frees);
        return 0;
    }
    if (strcmp(cmd, "remote-double-free") == 0) {
        char *p = nsp_malloc(64);
        pthread_t t;
        if (pthread_create(&t, NULL, free_twice, p) != 0 || pthread_join(t, NULL) != 0)
            return 3;
        nsp_stats_t st;
        nsp_stats_get(&st);
        printf("object=%p double=%llu remote=%llu\n", (void *)p,
               (unsigned long long)st.double_frees, (unsigned long long)st.remote_frees);
        return 0;
    }
    if (strcmp(cmd, "stray-write") == 0) {
        /* the bins are per cpu: stay on this one, so that the free below is the bin's push */
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(sched_getcpu(), &one);
        if (sched_setaffinity(0, sizeof one, &one) != 0) {
            printf("skipped: cannot pin the thread to its cpu\n");
            return 77;
        }
        /* asked before the bin is set up: nothing the snapshot does may fold it in between */
        nsp_stats_t st;
        if (nsp_stats_get(&st) != 0 || !st.rseq) {
            printf("skipped: no bins here (no rseq, virtual cores, NSP_SECURE or exact)\n");
            return 77;
        }
        enum { SZ = 20000 }; /* a class nothing else here uses: the bin holds our objects only */
        char *q = nsp_malloc(SZ), *p = nsp_malloc(SZ); /* the first attaches the bin */
        nsp_free(p); /* p heads the bin's list: its first word is its link, encoded */
        printf("object=%p\n", (void *)p);
        fflush(stdout);
        *(volatile uint64_t *)p = 0x4141414141414141ULL; /* a write after free */
        char *r = nsp_malloc(SZ), *r2 = nsp_malloc(SZ);
        /* with NSP_ON_ERROR=warn: reported, and nothing handed out twice */
        printf("distinct=%d\n", r && r2 && r != r2 && r != q && r2 != q);
        return 0;
    }
    if (strcmp(cmd, "stats") == 0) {
        void *keep[100];
        for (int i = 0; i < 100; i++)
            keep[i] = malloc(48);
        for (int i = 0; i < 50; i++)
            free(keep[i]);
        nsp_stats_print(stdout, 1);
        return 0;
    }
    if (strcmp(cmd, "stats-wide") == 0) {
        static void *keep[4096];
        for (size_t i = 0; i < 4096; i++)
            keep[i] = malloc((i + 1) * 8);
        printf("kept %s\n", keep[4095] ? "all" : "not all");
        return 0;
    }
    if (strcmp(cmd, "pacer") == 0) {
        static char *mem[128]; /* 8 MiB touched, then free: pages the cycle may hand back */
        for (int i = 0; i < 128; i++)
            if ((mem[i] = malloc(65536)))
                memset(mem[i], 1, 65536);
        for (int i = 0; i < 128; i++)
            free(mem[i]);
        nsp_pacer_cycle(); /* with NSP_TRACE=stderr: its line on stderr */
        nsp_pacer_info_t pi;
        if (nsp_pacer_get(&pi) != 0)
            return 1;
        printf("accounting=%d concurrent=%d memory_limit=%lld scavenged=%llu\n", pi.accounting,
               pi.concurrent, (long long)pi.memory_limit,
               (unsigned long long)pi.bytes_scavenged);
        return 0;
    }
    if (strcmp(cmd, "option-names") == 0) {
        nsp_option_info_t o;
        for (unsigned i = 0; nsp_option_get(i, &o) == 0; i++)
            printf("%s\n", o.name);
        return 0;
    }
    fprintf(stderr, "helper_process: unknown command %s\n", cmd);
    return 2;
}
