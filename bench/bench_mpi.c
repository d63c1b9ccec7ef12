/*
 * bench/bench_mpi.c — numaspan under mpirun: each rank runs an allocation workload with numaspan
 * preloaded (LD_PRELOAD, as a user whose job spans several machines would run it), reads its own
 * numaspan stats, and rank 0 gathers one row per rank into a table (JSON lines on stdout).
 *
 *   mpirun -n N [--bind-to core] -x LD_PRELOAD=libnumaspan.so bench_mpi [--seconds S]
 * The program does not link numaspan: it finds nsp_stats_get and nsp_node_of with dlsym, and says
 * so when numaspan is not the allocator.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <mpi.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "numaspan.h"

struct row {
    int rank, cpu, node, numaspan;
    double seconds, mops;
    uint64_t mallocs, refills, spills, bytes_in_use, remote_frees, rss_kb;
    char host[64];
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    double seconds = 0.5;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = atof(argv[++i]);
    int (*stats_get)(nsp_stats_t *) = (int (*)(nsp_stats_t *))dlsym(RTLD_DEFAULT, "nsp_stats_get");
    int (*node_of)(const void *) = (int (*)(const void *))dlsym(RTLD_DEFAULT, "nsp_node_of");
    /* the workload: a live set of 16 B .. 4 KiB objects replaced at random */
    enum { LIVE = 8192 };
    void **live = calloc(LIVE, sizeof *live);
    uint64_t s = 0x9E3779B97F4A7C15ull ^ (uint64_t)(rank + 1), ops = 0;
    double t0 = now(), t1 = t0;
    while (t1 - t0 < seconds) {
        for (int k = 0; k < 4096; k++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            unsigned i = (unsigned)(s % LIVE);
            free(live[i]);
            live[i] = malloc(16u << (s >> 60) % 9);
            if (live[i])
                memset(live[i], rank, 16);
            ops += 2;
        }
        t1 = now();
    }
    struct row r;
    memset(&r, 0, sizeof r);
    r.rank = rank;
    r.cpu = sched_getcpu();
    r.seconds = t1 - t0;
    r.mops = ops / (t1 - t0) / 1e6;
    gethostname(r.host, sizeof r.host - 1);
    r.node = node_of ? node_of(live[0]) : -1;
    nsp_stats_t st;
    if (stats_get && stats_get(&st) == 0) {
        r.numaspan = 1;
        r.mallocs = st.mallocs;
        r.bytes_in_use = st.bytes_in_use;
        r.remote_frees = st.remote_frees;
        for (unsigned n = 0; n < st.nnodes; n++) {
            r.refills += st.node[n].refills;
            r.spills += st.node[n].spills_out;
        }
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    r.rss_kb = (uint64_t)ru.ru_maxrss;
    for (unsigned i = 0; i < LIVE; i++)
        free(live[i]);
    free(live);
    struct row *all = rank == 0 ? calloc((size_t)size, sizeof *all) : NULL;
    MPI_Gather(&r, sizeof r, MPI_BYTE, all, sizeof r, MPI_BYTE, 0, MPI_COMM_WORLD);
    int rc = 0;
    if (rank == 0) {
        for (int i = 0; i < size; i++) {
            struct row *x = &all[i];
            if (!x->numaspan)
                rc = 1;
            printf("{\"rank\": %d, \"host\": \"%s\", \"cpu\": %d, \"node\": %d, \"numaspan\": %s, "
                   "\"seconds\": %.3f, \"mops\": %.3f, \"mallocs\": %llu, \"refills\": %llu, "
                   "\"spills\": %llu, \"remote_frees\": %llu, \"bytes_in_use\": %llu, "
                   "\"rss_kb\": %llu}\n",
                   x->rank, x->host, x->cpu, x->node, x->numaspan ? "true" : "false", x->seconds,
                   x->mops, (unsigned long long)x->mallocs, (unsigned long long)x->refills,
                   (unsigned long long)x->spills, (unsigned long long)x->remote_frees,
                   (unsigned long long)x->bytes_in_use, (unsigned long long)x->rss_kb);
        }
        if (rc)
            fprintf(stderr, "bench_mpi: numaspan is not the allocator of every rank (preload "
                            "libnumaspan.so: mpirun -x LD_PRELOAD=...)\n");
        free(all);
    }
    MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Finalize();
    return rc;
}
