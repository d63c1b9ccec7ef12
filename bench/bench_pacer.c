/*
 * bench/bench_pacer.c — the accounting experiment (`numaspan bench pacer`): golang/go#53738 on
 * numaspan.
 *
 * A collector-driven program under the concurrent pacer: it keeps a live set of objects, replaces
 * them at random and drops the old ones; the collector (run by the pacer in its cycles, while the
 * program goes on allocating) walks the live set and frees what was dropped. The program moves
 * over N virtual caches (a synthetic machine of N cores), so the free capacity the caches hold,
 * C ~ N x classes x span bytes, grows with N while the live heap stays put.
 *
 * Under `over` the pacer sees C as allocated and starts cycles early enough; under `under` it sees
 * less than is allocated, and the heap overshoots its goal by up to C (DESIGN.md §6); `exact` is
 * the oracle. For each (N, live heap, mode) the driver runs R repetitions with fixed seeds and
 * prints medians: peak heap (what is really allocated and not yet freed, allocator units), peak
 * heapLive (the ledger), the goal, peak RSS, cycles, and the overshoot predicted beside the one
 * measured.
 *
 *   bench_pacer [--quick] [--reps R] [--json]          the sweep
 *   bench_pacer run --caches N --live BYTES --seed S   one run (the driver sets NSP_* for it)
 * Uses the public API only.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "numaspan.h"
#include "spawn.h"

/* ---- one run ---------------------------------------------------------------------------------- */

/* The program's own bookkeeping (its live set, the two dropped lists) is mapped, not allocated,
 * so that the heap being measured holds the program's objects alone. */
static _Atomic(char *) *live;
static size_t nlive;
static char **dropped, **spare; /* the list being filled, and the one the collector frees */
static size_t ndropped, cap_dropped;
static pthread_mutex_t drop_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int64_t heap_real; /* bytes allocated and not yet freed, allocator units */
static volatile uint64_t walked;

static void collector(void *arg)
{
    (void)arg;
    uint64_t sum = 0;
    for (size_t i = 0; i < nlive; i++) { /* the mark phase: work grows with the live heap */
        char *p = atomic_load_explicit(&live[i], memory_order_relaxed);
        if (p)
            sum += (unsigned char)p[0];
    }
    walked += sum;
    pthread_mutex_lock(&drop_lock);
    char **batch = dropped;
    size_t n = ndropped;
    dropped = spare;
    ndropped = 0;
    pthread_mutex_unlock(&drop_lock);
    for (size_t i = 0; i < n; i++) {
        atomic_fetch_sub(&heap_real, (int64_t)malloc_usable_size(batch[i]));
        free(batch[i]);
    }
    spare = batch; /* only the collector swaps, and one cycle runs at a time */
}

static void *map(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("bench_pacer: mmap");
        exit(1);
    }
    return p;
}

static int run(unsigned caches, int64_t live_bytes, uint64_t seed)
{
    static const size_t sizes[] = {48, 96, 160, 320, 640};
    size_t avg = (48 + 96 + 160 + 320 + 640) / 5;
    nlive = (size_t)live_bytes / avg;
    live = map(nlive * sizeof *live);
    cap_dropped = nlive * 8 + 4096;
    dropped = map(cap_dropped * sizeof *dropped);
    spare = map(cap_dropped * sizeof *spare);
    for (size_t i = 0; i < nlive; i++) {
        size_t n = sizes[i % 5];
        char *p = malloc(n);
        p[0] = 1;
        atomic_store(&live[i], p);
        atomic_fetch_add(&heap_real, (int64_t)malloc_usable_size(p));
    }
    nsp_pacer_set_collector(collector, NULL);
    int64_t total = 24 * live_bytes > (64 << 20) ? 24 * live_bytes : (64 << 20);
    int64_t done = 0, peak_real = 0, peak_ledger = 0, peak_goal = 0;
    uint64_t cached_max = 0;
    unsigned core = 0;
    for (uint64_t k = 0; done < total; k++) {
        if (k % 64 == 0) /* visit every cache in turn: each holds a span of every class */
            nsp_thread_bind_core(core++ % caches);
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t i = (size_t)(seed >> 33) % nlive, n = sizes[(seed >> 20) % 5];
        char *p = malloc(n);
        p[0] = 1;
        int64_t u = (int64_t)malloc_usable_size(p);
        int64_t now = atomic_fetch_add(&heap_real, u) + u;
        char *old = atomic_exchange(&live[i], p);
        pthread_mutex_lock(&drop_lock);
        if (ndropped < cap_dropped) {
            dropped[ndropped++] = old;
            old = NULL;
        }
        pthread_mutex_unlock(&drop_lock);
        if (old) { /* the collector is far behind: free it here */
            atomic_fetch_sub(&heap_real, (int64_t)malloc_usable_size(old));
            free(old);
        }
        done += u;
        if (now > peak_real)
            peak_real = now;
        if (k % 512 == 0) {
            nsp_pacer_info_t pi;
            nsp_pacer_get(&pi);
            if (pi.heap_live_total > peak_ledger)
                peak_ledger = pi.heap_live_total;
            if (pi.goal > peak_goal)
                peak_goal = pi.goal;
        }
        if (k % 8192 == 0) {
            nsp_stats_t st;
            nsp_stats_get(&st);
            if (st.cached_bytes > cached_max)
                cached_max = st.cached_bytes;
        }
    }
    nsp_pacer_info_t pi;
    nsp_pacer_get(&pi);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"caches\": %u, \"live\": %lld, \"peak_real\": %lld, \"peak_ledger\": %lld, "
           "\"goal\": %lld, \"cycles\": %llu, \"cached_max\": %llu, \"rss_kb\": %ld, "
           "\"accounting\": %d}\n",
           caches, (long long)live_bytes, (long long)peak_real, (long long)peak_ledger,
           (long long)(pi.goal > peak_goal ? pi.goal : peak_goal), (unsigned long long)pi.cycles,
           (unsigned long long)cached_max, ru.ru_maxrss, pi.accounting);
    return 0;
}

/* ---- the driver ------------------------------------------------------------------------------- */

struct result {
    double peak_real, peak_ledger, goal, cycles, cached, rss;
};

static const char *self;

/* One run in a fresh process, with its options. */
static int child(unsigned caches, int64_t live_bytes, const char *mode, uint64_t seed,
                 struct result *r)
{
    char topo[128], acct[64], c[32], l[32], s[32], buf[1024];
    snprintf(topo, sizeof topo, "NSP_TOPOLOGY=synthetic:pack:1 numa:1 core:%u pu:1", caches);
    snprintf(acct, sizeof acct, "NSP_ACCOUNTING=%s", mode);
    snprintf(c, sizeof c, "%u", caches);
    snprintf(l, sizeof l, "%lld", (long long)live_bytes);
    snprintf(s, sizeof s, "%llu", (unsigned long long)seed);
    /* NSP_HEAP_MIN lowered so that the minimum heap does not hide the effect */
    const char *env[] = {topo, acct, "NSP_PACER=concurrent", "NSP_HEAP_MIN=64K",
                         "NSP_IDLE_RELEASE_MS=0", NULL};
    char *argv[] = {(char *)self, "run", "--caches", c, "--live", l, "--seed", s, NULL};
    if (nsp_bench_spawn(self, argv, env, buf, sizeof buf) < 0)
        return -1;
    long long pr, pl, g, cy, cm, rss, lv;
    unsigned cc;
    int a;
    if (sscanf(buf,
               "{\"caches\": %u, \"live\": %lld, \"peak_real\": %lld, \"peak_ledger\": %lld, "
               "\"goal\": %lld, \"cycles\": %lld, \"cached_max\": %lld, \"rss_kb\": %lld, "
               "\"accounting\": %d}",
               &cc, &lv, &pr, &pl, &g, &cy, &cm, &rss, &a) != 9)
        return -1;
    *r = (struct result){(double)pr, (double)pl, (double)g, (double)cy, (double)cm, (double)rss};
    return 0;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp);
    return n ? v[n / 2] : 0;
}

int main(int argc, char **argv)
{
    self = "/proc/self/exe";
    if (argc > 1 && strcmp(argv[1], "run") == 0) {
        unsigned caches = 2;
        int64_t lb = 1 << 20;
        uint64_t seed = 1;
        for (int i = 2; i + 1 < argc; i += 2) {
            if (strcmp(argv[i], "--caches") == 0)
                caches = (unsigned)atoi(argv[i + 1]);
            else if (strcmp(argv[i], "--live") == 0)
                lb = atoll(argv[i + 1]);
            else if (strcmp(argv[i], "--seed") == 0)
                seed = strtoull(argv[i + 1], NULL, 10);
        }
        return run(caches, lb, seed);
    }
    int reps = 10, json = 0, quick = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = 1;
        else if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_pacer [--quick] [--reps R] [--json]\n"
                            "bench_pacer: unknown argument \"%s\"\n", argv[i]);
            return 2;
        }
    }
    if (quick && reps == 10)
        reps = 3;
    if (reps < 1 || reps > 64) {
        fprintf(stderr, "bench_pacer: --reps 1..64\n");
        return 2;
    }
    static const unsigned caches_full[] = {2, 8, 32, 128, 512}, caches_quick[] = {2, 32, 512};
    static const int64_t live_full[] = {1 << 20, 8 << 20, 32 << 20}, live_quick[] = {1 << 20, 8 << 20};
    const unsigned *cs = quick ? caches_quick : caches_full;
    const int64_t *ls = quick ? live_quick : live_full;
    int ncs = quick ? 3 : 5, nls = quick ? 2 : 3;
    static const char *modes[] = {"over", "under", "exact"};
    if (json)
        printf("{\"reps\": %d, \"results\": [", reps);
    else
        printf("accounting experiment: concurrent pacer, collector-driven, median of %d runs\n"
               "peak: bytes really allocated and not yet freed; ledger: peak heapLive; C: bytes of\n"
               "spans held by caches; overshoot: (peak - peak under over) / goal, predicted for\n"
               "under as at most C/goal (DESIGN.md section 6)\n\n"
               "%6s %8s %6s %10s %10s %10s %8s %8s %7s %9s %9s\n",
               reps, "caches", "live MiB", "mode", "peak MiB", "ledger MiB", "goal MiB", "C MiB",
               "RSS MiB", "cycles", "predicted", "measured");
    int first = 1, total = ncs * nls * 3 * reps, runs = 0;
    for (int ci = 0; ci < ncs; ci++)
        for (int li = 0; li < nls; li++) {
            double med[3][6];
            for (int m = 0; m < 3; m++) {
                double v[6][64];
                int n = 0;
                for (int r = 0; r < reps; r++) {
                    struct result res;
                    fprintf(stderr, "\rbench pacer: %d/%d runs   ", ++runs, total);
                    if (child(cs[ci], ls[li], modes[m], 1000 + (uint64_t)r, &res) == 0) {
                        v[0][n] = res.peak_real;
                        v[1][n] = res.peak_ledger;
                        v[2][n] = res.goal;
                        v[3][n] = res.cycles;
                        v[4][n] = res.cached;
                        v[5][n] = res.rss;
                        n++;
                    }
                }
                for (int k = 0; k < 6; k++)
                    med[m][k] = median(v[k], n);
            }
            for (int m = 0; m < 3; m++) {
                /* the measured overshoot of a mode: its peak over the peak under over, relative
                 * to the goal; predicted for under: up to C/goal */
                double goal = med[0][2] > 0 ? med[0][2] : 1;
                double measured = (med[m][0] - med[0][0]) / goal;
                double predicted = m == 1 ? med[1][4] / goal : 0; /* C as cached under `under` */
                if (json) {
                    printf("%s{\"caches\": %u, \"live\": %lld, \"mode\": \"%s\", \"peak\": %.0f, "
                           "\"peak_ledger\": %.0f, \"goal\": %.0f, \"cached\": %.0f, \"rss_kb\": %.0f, "
                           "\"cycles\": %.0f, \"predicted_overshoot\": %.4f, "
                           "\"measured_overshoot\": %.4f}",
                           first ? "" : ", ", cs[ci], (long long)ls[li], modes[m], med[m][0],
                           med[m][1], med[m][2], med[m][4], med[m][5], med[m][3], predicted,
                           measured);
                    first = 0;
                } else {
                    printf("%6u %8.0f %6s %10.2f %10.2f %10.2f %8.2f %8.1f %7.0f %8.0f%% %8.0f%%\n",
                           cs[ci], (double)ls[li] / (1 << 20), modes[m], med[m][0] / (1 << 20),
                           med[m][1] / (1 << 20), med[m][2] / (1 << 20), med[m][4] / (1 << 20),
                           med[m][5] / 1024, med[m][3], 100 * predicted, 100 * measured);
                }
            }
        }
    fprintf(stderr, "\n");
    if (json)
        printf("]}\n");
    return 0;
}
