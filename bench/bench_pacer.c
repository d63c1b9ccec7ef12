/*
 * bench/bench_pacer.c — the accounting experiment (`numaspan bench pacer`): golang/go#53738 on
 * numaspan, measuring the pacer rather than itself.
 *
 * A collector-driven program under the concurrent pacer: T threads allocate at once, each
 * keeping its share of a live set, replacing objects at random and dropping the old ones; the
 * collector (run by the pacer in its cycles, while the threads go on allocating) walks the live
 * set and frees what was dropped. Each thread moves over its own slice of N virtual caches (a
 * synthetic machine of N cores), so the free capacity caches can hold, C ~ N x 5 classes x
 * 64 KiB, grows with N while the live heap stays put.
 *
 * What a run must not do to be trusted (issue 12):
 *   - perturb what it measures: no nsp_stats_get (it reads every cache's lines, which the
 *     threads write) inside a run; the run reads the pacer with nsp_pacer_get, which takes no
 *     cache, once per cycle, in the collector;
 *   - hide its own backstop: a thread whose dropped list is full frees the object itself (the
 *     collector is far behind); every such free is counted, and a row with any is censored;
 *   - report one number: every cycle's peak over the goal in force is recorded, and rows are
 *     medians with interquartile ranges over R seeds (10 by default).
 * Per cycle (cycle k's window: from the end of cycle k-1's collector to cycle k's frees):
 *   peak/goal   the most bytes really allocated and not yet freed in the window, over the goal
 *   early       how far from the trigger the cycle started, as a share of trigger - live:
 *               (trigger - allocated at the start) / (trigger - live), 0 when at or past it.
 *               Predicted for `over`: at most C/(trigger - live) with no reservation budget,
 *               at most max(kappa, F/(trigger - live)) with it (kappa: NSP_PACE_RESERVE; F:
 *               the budget's floor, one span of each class in use; DESIGN.md §6)
 *   live error  the pacer's reading of the live bytes at the cycle's start (nsp_pacer_get in
 *               the collector, which a cycle runs first; read without any cache, as the
 *               cycle's end reads them) against the bytes the program holds at that moment
 * The first cycle, forced at rest before the threads start, is left out of the distributions;
 * a run with no other cycle (`under` with more free capacity cached than it allocates) has one
 * window, to its end, and its ok share is that window's peak/goal (not 100% of no cycles).
 *
 *   lead        how early heapLive alone would have started the cycle: (heapLive - allocated)
 *               / (trigger - live) at its start, the overestimate the budget bounds (by max(kappa, F/(trigger - live)))
 *               and the confirmed crossing then waits out (so `early` stays 0)
 * Per run also: the CPU time of the cycles' thread (the pacer's cycle_cpu_ns) and of the
 * collector, the peak RSS, and the wall time of the allocating phase (run_ms, JSON only: what
 * a small reservation budget costs, as more objects come from the central).
 *
 *   bench_pacer [--quick] [--reps R] [--json] [--threads T] [--caches N,..] [--live SIZE,..]
 *               [--percent P,..] [--heap-min SIZE,..] [--kappa K]     the sweep (every list)
 *   bench_pacer run --caches N --live BYTES --seed S --threads T [--cycles-out FILE]
 *               [--stats-reader]
 *               one run (the driver sets NSP_*); FILE: one CSV line per cycle; with a thread
 *               reading nsp_stats_get in a loop
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
#include <time.h>
#include <unistd.h>

#include "numaspan.h"
#include "spawn.h"

#define MAX_THREADS 16
#define MAX_CYCLES 4096
#define WARMUP 1

/* ---- one run ---------------------------------------------------------------------------------- */

/* The program's own bookkeeping (live set, dropped lists, per-cycle records) is mapped, not
 * allocated, so that the heap being measured holds the program's objects alone. */
struct dropped {
    pthread_mutex_t lock;
    char **list, **spare; /* the list being filled, and the one the collector frees */
    size_t n, cap;
} __attribute__((aligned(64)));

static _Atomic(char *) *live;
static size_t nlive;
static unsigned nthreads, ncaches;
static struct dropped drops[MAX_THREADS];
static _Atomic int64_t heap_real;   /* bytes allocated and not yet freed, allocator units */
static _Atomic int64_t window_peak; /* the most heap_real since the last cycle's frees */
static _Atomic uint64_t backstop;   /* frees the threads did because the collector was behind */
static volatile uint64_t walked;

struct cycle_rec {
    double peak_goal, early, live_err, lead;
};
static struct cycle_rec *recs;
static _Atomic unsigned ncycles_seen; /* collector calls: one per cycle run with it */
static int64_t peak_ledger, cached_max, budget_seen, peak_real;
static double lead_pred; /* the largest bound on the lead predicted at a cycle's start */
static uint64_t collector_cpu_ns;

static int64_t cpu_ns(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void note_peak(int64_t now)
{
    int64_t p = atomic_load_explicit(&window_peak, memory_order_relaxed);
    while (now > p && !atomic_compare_exchange_weak(&window_peak, &p, now))
        ;
}

static void collector(void *arg)
{
    (void)arg;
    int64_t c0 = cpu_ns(CLOCK_THREAD_CPUTIME_ID);
    nsp_pacer_info_t pi;
    int64_t before = atomic_load(&heap_real);
    nsp_pacer_get(&pi); /* takes no cache: the trigger and goal in force, the live bytes now */
    int64_t at_start = atomic_load(&heap_real);
    int64_t truth = (before + at_start) / 2; /* the threads allocate while it reads */
    int64_t peak = atomic_exchange(&window_peak, at_start);
    if (peak < at_start)
        peak = at_start;
    unsigned k = atomic_fetch_add(&ncycles_seen, 1);
    if (k < MAX_CYCLES) {
        struct cycle_rec *r = &recs[k];
        r->peak_goal = pi.goal > 0 ? (double)peak / (double)pi.goal : 0;
        r->early = 0;
        if (pi.trigger > pi.live && at_start < pi.trigger)
            r->early = (double)(pi.trigger - at_start) / (double)(pi.trigger - pi.live);
        r->live_err = truth > 0 ? (double)pi.live_now / (double)truth - 1.0 : -1;
        /* how early heapLive alone would have started the cycle: its lead over the bytes
         * really allocated, as a share of trigger - live (what the reservation budget bounds
         * by kappa; the confirmed crossing then waits for the live bytes, so `early` is 0) */
        r->lead = 0;
        if (pi.trigger > pi.live && pi.heap_live_total > at_start)
            r->lead = (double)(pi.heap_live_total - at_start) / (double)(pi.trigger - pi.live);
        /* the bound on it: caches hold at most max(B, F), B = kappa x (trigger - live) and F
         * the budget's floor (one span of each class refilled since the last cycle, read
         * before this cycle resets it) */
        if (pi.trigger > pi.live && pi.reserve_budget >= 0) {
            int64_t room = pi.reserve_floor > pi.reserve_budget ? pi.reserve_floor
                                                                : pi.reserve_budget;
            double pred = (double)room / (double)(pi.trigger - pi.live);
            if (pred > lead_pred)
                lead_pred = pred;
        }
    }
    if (peak > peak_real)
        peak_real = peak;
    if (pi.heap_live_total > peak_ledger)
        peak_ledger = pi.heap_live_total;
    if (pi.cached_bytes > cached_max)
        cached_max = pi.cached_bytes;
    budget_seen = pi.reserve_budget;
    uint64_t sum = 0;
    for (size_t i = 0; i < nlive; i++) { /* the mark phase: work grows with the live heap */
        char *p = atomic_load_explicit(&live[i], memory_order_relaxed);
        if (p)
            sum += (unsigned char)p[0];
    }
    walked += sum;
    for (unsigned t = 0; t < nthreads; t++) {
        struct dropped *d = &drops[t];
        pthread_mutex_lock(&d->lock);
        char **batch = d->list;
        size_t n = d->n;
        d->list = d->spare;
        d->n = 0;
        pthread_mutex_unlock(&d->lock);
        for (size_t i = 0; i < n; i++) {
            atomic_fetch_sub(&heap_real, (int64_t)malloc_usable_size(batch[i]));
            free(batch[i]);
        }
        d->spare = batch; /* only the collector swaps, and one cycle runs at a time */
    }
    /* the next cycle's window opens with the heap as the frees left it */
    atomic_store(&window_peak, atomic_load(&heap_real));
    collector_cpu_ns += (uint64_t)(cpu_ns(CLOCK_THREAD_CPUTIME_ID) - c0);
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

static const size_t sizes[] = {48, 96, 160, 320, 640};

struct worker {
    pthread_t th;
    unsigned t;
    uint64_t seed;
    int64_t total;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct dropped *d = &drops[w->t];
    size_t lo = nlive * w->t / nthreads, hi = nlive * (w->t + 1) / nthreads;
    uint64_t seed = w->seed;
    unsigned visit = 0;
    int64_t done = 0;
    for (uint64_t k = 0; done < w->total; k++) {
        if (k % 64 == 0) { /* this thread's slice of the caches, in turn */
            unsigned slice = (ncaches + nthreads - 1 - w->t) / nthreads;
            nsp_thread_bind_core(w->t + nthreads * (visit++ % (slice ? slice : 1)));
        }
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t i = lo + (size_t)(seed >> 33) % (hi - lo), n = sizes[(seed >> 20) % 5];
        char *p = malloc(n);
        p[0] = 1;
        int64_t u = (int64_t)malloc_usable_size(p);
        note_peak(atomic_fetch_add(&heap_real, u) + u);
        char *old = atomic_exchange(&live[i], p);
        pthread_mutex_lock(&d->lock);
        if (d->n < d->cap) {
            d->list[d->n++] = old;
            old = NULL;
        }
        pthread_mutex_unlock(&d->lock);
        if (old) { /* the collector is far behind: the backstop, counted */
            atomic_fetch_add(&backstop, 1);
            atomic_fetch_sub(&heap_real, (int64_t)malloc_usable_size(old));
            free(old);
        }
        done += u;
    }
    return NULL;
}

/* --stats-reader: a thread that reads nsp_stats_get in a loop while the program runs, beside
 * which a cycle must still measure live within 5% (issue 12, Deliver 1: the stats then locked
 * every cache, so a cycle found caches busy; since issue 11 they take no lock, and the case
 * stays to keep it so). Off in the sweep: a measured run must not perturb itself. */
static _Atomic int readers_stop;
static _Atomic uint64_t stats_reads;
static void *stats_reader(void *arg)
{
    (void)arg;
    nsp_stats_t st;
    while (!atomic_load(&readers_stop)) {
        nsp_stats_get(&st);
        atomic_fetch_add(&stats_reads, 1);
        struct timespec nap = {0, 100000};
        nanosleep(&nap, NULL);
    }
    return NULL;
}

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The q-quantile of v[0..n) (sorts v). */
static double quantile(double *v, int n, double q)
{
    if (n <= 0)
        return 0;
    qsort(v, (size_t)n, sizeof *v, cmpd);
    double x = q * (n - 1);
    int i = (int)x;
    return i + 1 < n ? v[i] + (x - i) * (v[i + 1] - v[i]) : v[i];
}

static int run(unsigned caches, int64_t live_bytes, uint64_t seed, unsigned threads,
               const char *cycles_out, int reader)
{
    ncaches = caches;
    nthreads = threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
    if (nthreads > caches)
        nthreads = caches;
    size_t avg = (48 + 96 + 160 + 320 + 640) / 5;
    nlive = (size_t)live_bytes / avg;
    live = map(nlive * sizeof *live);
    recs = map(MAX_CYCLES * sizeof *recs);
    for (unsigned t = 0; t < nthreads; t++) {
        struct dropped *d = &drops[t];
        pthread_mutex_init(&d->lock, NULL);
        /* room for every object the thread can drop (48 B at the least): the backstop is there
         * for a pacer that stops collecting (as `under` can), and is counted when used */
        d->cap = (size_t)(24 * live_bytes > (64 << 20) ? 24 * live_bytes : (64 << 20)) / 48 /
                     nthreads + 4096;
        d->list = map(d->cap * sizeof(char *));
        d->spare = map(d->cap * sizeof(char *));
    }
    for (size_t i = 0; i < nlive; i++) {
        char *p = malloc(sizes[i % 5]);
        p[0] = 1;
        atomic_store(&live[i], p);
        atomic_fetch_add(&heap_real, (int64_t)malloc_usable_size(p));
    }
    atomic_store(&window_peak, atomic_load(&heap_real));
    int64_t total = 24 * live_bytes > (64 << 20) ? 24 * live_bytes : (64 << 20);
    static struct worker w[MAX_THREADS];
    nsp_pacer_set_collector(collector, NULL);
    nsp_pacer_cycle(); /* the live set measured once at rest: the first goal is the program's */
    for (unsigned t = 0; t < nthreads; t++) {
        w[t] = (struct worker){.t = t, .seed = seed * 7919 + t, .total = total / nthreads};
        pthread_create(&w[t].th, NULL, worker_main, &w[t]);
    }
    int64_t t_run = cpu_ns(CLOCK_MONOTONIC);
    pthread_t rd;
    if (reader)
        pthread_create(&rd, NULL, stats_reader, NULL);
    for (unsigned t = 0; t < nthreads; t++)
        pthread_join(w[t].th, NULL);
    double run_ms = (double)(cpu_ns(CLOCK_MONOTONIC) - t_run) / 1e6;
    if (reader) {
        atomic_store(&readers_stop, 1);
        pthread_join(rd, NULL);
    }
    nsp_pacer_set_collector(NULL, NULL);
    /* A cycle the pacer thread started before the collector was taken away may still be running:
     * its collector has counted, its cycle not yet (the pacer counts a cycle at its end). Wait
     * for it (up to 10 s), so that the cycles read below include every cycle whose collector
     * ran, as the --cycles-out file's one line per cycle does (tests/test_bench_pacer.sh; once
     * in 24 runs the file had a line more than the count said). */
    nsp_pacer_info_t pi;
    nsp_pacer_get(&pi);
    for (int i = 0; i < 10000 && pi.cycles < atomic_load(&ncycles_seen); i++) {
        nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
        nsp_pacer_get(&pi);
    }
    /* C at the run's end too: a run with no cycle after the first (under, with more capacity in
     * its caches than it allocates) read C only at rest, before the threads started */
    if (pi.cached_bytes > cached_max)
        cached_max = pi.cached_bytes;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    /* per-cycle distributions, warm-up left out */
    unsigned seen = atomic_load(&ncycles_seen);
    unsigned n = seen < MAX_CYCLES ? seen : MAX_CYCLES;
    static double pg[MAX_CYCLES], early[MAX_CYCLES], err[MAX_CYCLES], lead[MAX_CYCLES];
    int npg = 0, nerr = 0, ok = 0;
    if (cycles_out) { /* every cycle, for the distributions (experiments/exp.py) */
        FILE *f = fopen(cycles_out, "w");
        if (!f) {
            fprintf(stderr, "bench_pacer: --cycles-out %s: cannot write it\n", cycles_out);
            return 1;
        }
        fprintf(f, "cycle,peak_goal,early,lead,live_err\n");
        for (unsigned k = WARMUP; k < n; k++)
            fprintf(f, "%u,%.5f,%.5f,%.5f,%.5f\n", k, recs[k].peak_goal, recs[k].early,
                    recs[k].lead, recs[k].live_err);
        fclose(f);
    }
    for (unsigned k = WARMUP; k < n; k++) {
        pg[npg] = recs[k].peak_goal;
        early[npg] = recs[k].early;
        lead[npg] = recs[k].lead;
        ok += recs[k].peak_goal <= 1.05;
        npg++;
        if (recs[k].live_err > -1)
            err[nerr++] = recs[k].live_err < 0 ? -recs[k].live_err : recs[k].live_err;
    }
    if (atomic_load(&window_peak) > peak_real) /* the window after the last cycle */
        peak_real = atomic_load(&window_peak);
    /* No cycle after the first: the run was one window, to its end, under the one goal it had.
     * Its ok is that window's (it was 100% of no cycles: 512 caches, `under`, 65 MiB against a
     * goal of 2 MiB read as ok 100%) */
    if (npg == 0)
        ok = atomic_load(&window_peak) <= 1.05 * (double)pi.goal;
    double early_med = quantile(early, npg, 0.5), early_max = npg ? early[npg - 1] : 0;
    double pg_p95 = quantile(pg, npg, 0.95), err_max = nerr ? quantile(err, nerr, 1.0) : 0;
    double lead_med = quantile(lead, npg, 0.5), lead_max = npg ? lead[npg - 1] : 0;
    printf("{\"caches\": %u, \"live\": %lld, \"threads\": %u, \"accounting\": %d, "
           "\"cycles\": %llu, \"peak_ledger\": %lld, \"goal\": %lld, \"cached_max\": %lld, "
           "\"rss_kb\": %ld, \"backstop\": %llu, \"ok_share\": %.4f, \"peak_goal_p95\": %.4f, "
           "\"early_med\": %.4f, \"early_max\": %.4f, \"live_err_max\": %.4f, "
           "\"collector_ms\": %.2f, \"pause_ms\": %.2f, \"budget\": %lld, \"unconfirmed\": %llu, "
           "\"peak_real\": %lld, \"lead_med\": %.4f, \"lead_max\": %.4f, "
           "\"cycle_cpu_ms\": %.2f, \"stats_reads\": %llu, \"run_ms\": %.1f, "
           "\"lead_pred\": %.4f}\n",
           caches, (long long)live_bytes, nthreads, pi.accounting, (unsigned long long)pi.cycles,
           (long long)peak_ledger, (long long)pi.goal, (long long)cached_max, ru.ru_maxrss,
           (unsigned long long)atomic_load(&backstop), npg ? (double)ok / npg : (double)ok, pg_p95,
           early_med, early_max, err_max, collector_cpu_ns / 1e6, pi.pause_ns_total / 1e6,
           (long long)budget_seen, (unsigned long long)pi.unconfirmed, (long long)peak_real,
           lead_med, lead_max, pi.cycle_cpu_ns / 1e6,
           (unsigned long long)atomic_load(&stats_reads), run_ms, lead_pred);
    return 0;
}

/* ---- the driver ------------------------------------------------------------------------------- */

enum { FLD_CYCLES, FLD_PEAK, FLD_LEDGER, FLD_GOAL, FLD_CACHED, FLD_RSS, FLD_BACKSTOP, FLD_OK,
       FLD_P95, FLD_EARLY, FLD_EARLY_MAX, FLD_ERR, FLD_COLL, FLD_PAUSE, FLD_BUDGET, FLD_LEAD,
       FLD_LEAD_MAX, FLD_CYCLE_CPU, FLD_RUN_MS, FLD_LEAD_PRED, FLD_NFIELDS };
static const char *const field_names[FLD_NFIELDS] = {
    "cycles", "peak", "peak_ledger", "goal", "cached", "rss_kb", "backstop", "ok_share",
    "peak_goal_p95", "early_med", "early_max", "live_err_max", "collector_ms", "pause_ms",
    "budget", "lead_med", "lead_max", "cycle_cpu_ms", "run_ms", "lead_pred"};

static const char *self;
static const char *opt_percent = "100", *opt_heap_min = "64K", *opt_kappa = "0.25";
static const char *cur_percent, *cur_heap_min; /* the sweep's values for the runs now */
static unsigned opt_threads = 4;

/* One run in a fresh process, with its options: its fields, or -1. */
static int child(unsigned caches, int64_t live_bytes, const char *mode, uint64_t seed,
                 double *f)
{
    char topo[128], acct[64], pct[64], hm[64], kap[64], c[32], l[32], s[32], t[32], buf[2048];
    snprintf(topo, sizeof topo, "NSP_TOPOLOGY=synthetic:pack:1 numa:1 core:%u pu:1", caches);
    snprintf(acct, sizeof acct, "NSP_ACCOUNTING=%s", mode);
    snprintf(pct, sizeof pct, "NSP_PACE_PERCENT=%s", cur_percent);
    /* a low minimum heap, so that it does not hide the effect */
    snprintf(hm, sizeof hm, "NSP_HEAP_MIN=%s", cur_heap_min);
    snprintf(kap, sizeof kap, "NSP_PACE_RESERVE=%s", opt_kappa);
    snprintf(c, sizeof c, "%u", caches);
    snprintf(l, sizeof l, "%lld", (long long)live_bytes);
    snprintf(s, sizeof s, "%llu", (unsigned long long)seed);
    snprintf(t, sizeof t, "%u", opt_threads);
    const char *env[] = {topo, acct, pct, hm, kap, "NSP_PACER=concurrent",
                         "NSP_IDLE_RELEASE_MS=0", "NSP_TRACE", "NSP_DEBUG", NULL};
    char *argv[] = {(char *)self, "run", "--caches", c, "--live", l, "--seed", s,
                    "--threads", t, NULL};
    if (nsp_bench_spawn(self, argv, env, buf, sizeof buf) < 0)
        return -1;
    unsigned cc, th;
    long long lv, cy, pl, g, cm, bud, pr;
    long rss;
    int a;
    unsigned long long bs, unc;
    double ok, p95, em, ex, er, cms, pms, lm, lx, ccpu, rms, lp;
    if (sscanf(buf,
               "{\"caches\": %u, \"live\": %lld, \"threads\": %u, \"accounting\": %d, "
               "\"cycles\": %lld, \"peak_ledger\": %lld, \"goal\": %lld, \"cached_max\": %lld, "
               "\"rss_kb\": %ld, \"backstop\": %llu, \"ok_share\": %lf, \"peak_goal_p95\": %lf, "
               "\"early_med\": %lf, \"early_max\": %lf, \"live_err_max\": %lf, "
               "\"collector_ms\": %lf, \"pause_ms\": %lf, \"budget\": %lld, \"unconfirmed\": %llu, "
               "\"peak_real\": %lld, \"lead_med\": %lf, \"lead_max\": %lf, "
               "\"cycle_cpu_ms\": %lf, \"stats_reads\": %*u, \"run_ms\": %lf, "
               "\"lead_pred\": %lf}",
               &cc, &lv, &th, &a, &cy, &pl, &g, &cm, &rss, &bs, &ok, &p95, &em, &ex, &er, &cms,
               &pms, &bud, &unc, &pr, &lm, &lx, &ccpu, &rms, &lp) != 25)
        return -1;
    double v[FLD_NFIELDS] = {(double)cy, (double)pr, (double)pl, (double)g, (double)cm,
                           (double)rss, (double)bs, ok, p95, em, ex, er, cms, pms, (double)bud,
                           lm, lx, ccpu, rms, lp};
    memcpy(f, v, sizeof v);
    return 0;
}

static int parse_list(const char *text, int64_t *out, int max)
{
    int n = 0;
    for (const char *p = text; *p && n < max;) {
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p || v <= 0)
            return -1;
        if (*end == 'K' || *end == 'k')
            v <<= 10, end++;
        else if (*end == 'M' || *end == 'm')
            v <<= 20, end++;
        out[n++] = v;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return -1;
    }
    return n;
}

static int usage(const char *bad)
{
    fprintf(stderr,
            "usage: bench_pacer [--quick] [--reps R] [--json] [--threads T] [--caches N,N..]\n"
            "                   [--live SIZE,SIZE..] [--percent P,P..] [--heap-min SIZE,SIZE..]\n"
            "                   [--kappa K]\n"
            "       bench_pacer run --caches N --live BYTES --seed S --threads T\n"
            "                   [--cycles-out FILE] [--stats-reader]\n");
    if (bad)
        fprintf(stderr, "bench_pacer: bad argument \"%s\"\n", bad);
    return 2;
}

/* A comma-separated list of option values (percents, sizes) into out[0..max): each checked by
 * ok(); the count, or -1 (naming the bad value) */
static int split_values(const char *text, char out[][24], int max, int (*ok)(const char *),
                        const char *what)
{
    int n = 0;
    for (const char *p = text; *p; n++) {
        size_t len = strcspn(p, ",");
        if (n >= max || len == 0 || len >= 24) {
            fprintf(stderr, "bench_pacer: %s \"%s\": at most %d values of up to 23 characters\n",
                    what, text, max);
            return -1;
        }
        memcpy(out[n], p, len);
        out[n][len] = 0;
        if (!ok(out[n])) {
            fprintf(stderr, "bench_pacer: %s: \"%s\" is not a valid value\n", what, out[n]);
            return -1;
        }
        p += len + (p[len] == ',');
    }
    return n;
}

static int percent_ok(const char *v)
{
    char *end;
    double x = strtod(v, &end);
    return *end == 0 && x >= 1 && x <= 100000;
}

static int size_ok(const char *v)
{
    int64_t x;
    return parse_list(v, &x, 1) == 1;
}

int main(int argc, char **argv)
{
    self = "/proc/self/exe";
    if (argc > 1 && strcmp(argv[1], "run") == 0) {
        unsigned caches = 2, threads = 4;
        int64_t lb = 1 << 20;
        uint64_t seed = 1;
        const char *cycles_out = NULL;
        int reader = 0;
        for (int i = 2; i < argc; i += 2) {
            if (strcmp(argv[i], "--stats-reader") == 0) {
                reader = 1;
                i--;
                continue;
            }
            if (i + 1 >= argc)
                return usage(argv[i]);
            if (strcmp(argv[i], "--caches") == 0)
                caches = (unsigned)atoi(argv[i + 1]);
            else if (strcmp(argv[i], "--live") == 0)
                lb = atoll(argv[i + 1]);
            else if (strcmp(argv[i], "--seed") == 0)
                seed = strtoull(argv[i + 1], NULL, 10);
            else if (strcmp(argv[i], "--threads") == 0)
                threads = (unsigned)atoi(argv[i + 1]);
            else if (strcmp(argv[i], "--cycles-out") == 0)
                cycles_out = argv[i + 1];
            else
                return usage(argv[i]);
        }
        return run(caches, lb, seed, threads, cycles_out, reader);
    }
    int reps = 10, json = 0, quick = 0, reps_set = 0;
    int64_t cs[16] = {2, 8, 32, 128, 512}, ls[16] = {1 << 20, 8 << 20, 32 << 20};
    int ncs = 5, nls = 3, cs_set = 0, ls_set = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--quick") == 0)
            quick = 1;
        else if (strcmp(a, "--json") == 0)
            json = 1;
        else if (strcmp(a, "--reps") == 0 && v)
            reps = atoi(v), reps_set = 1, i++;
        else if (strcmp(a, "--threads") == 0 && v)
            opt_threads = (unsigned)atoi(v), i++;
        else if (strcmp(a, "--percent") == 0 && v)
            opt_percent = v, i++;
        else if (strcmp(a, "--heap-min") == 0 && v)
            opt_heap_min = v, i++;
        else if (strcmp(a, "--kappa") == 0 && v)
            opt_kappa = v, i++;
        else if (strcmp(a, "--caches") == 0 && v) {
            if ((ncs = parse_list(v, cs, 16)) <= 0)
                return usage(v);
            cs_set = 1, i++;
        } else if (strcmp(a, "--live") == 0 && v) {
            if ((nls = parse_list(v, ls, 16)) <= 0)
                return usage(v);
            ls_set = 1, i++;
        } else
            return usage(a);
    }
    /* the percent and heap-minimum sweeps: lists, outermost */
    static char pcts[8][24], hmins[8][24];
    int npct = split_values(opt_percent, pcts, 8, percent_ok, "--percent");
    int nhm = split_values(opt_heap_min, hmins, 8, size_ok, "--heap-min");
    if (npct <= 0 || nhm <= 0)
        return usage(npct <= 0 ? opt_percent : opt_heap_min);
    if (quick) {
        if (!reps_set)
            reps = 3;
        if (!cs_set)
            cs[0] = 2, cs[1] = 32, cs[2] = 512, ncs = 3;
        if (!ls_set)
            ls[0] = 1 << 20, ls[1] = 8 << 20, nls = 2;
    }
    if (reps < 1 || reps > 64 || opt_threads < 1 || opt_threads > MAX_THREADS)
        return usage("--reps 1..64, --threads 1..16");
    static const char *modes[] = {"over", "under", "exact"};
    double kappa = atof(opt_kappa);
    if (json)
        printf("{\"reps\": %d, \"threads\": %u, \"percent\": \"%s\", \"heap_min\": \"%s\", "
               "\"kappa\": %s, \"results\": [",
               reps, opt_threads, opt_percent, opt_heap_min, opt_kappa);
    else
        printf("accounting experiment: concurrent pacer, collector-driven, %u threads allocating\n"
               "at once, median [interquartile range] of %d seeds; kappa %s. pct: percent;\n"
               "hmin: heap minimum; peak: the most bytes really allocated and not freed; goal:\n"
               "the last; C: the most the caches reserved (a charge window per cached span), at\n"
               "cycles and at the end; ok: share of cycles whose peak <= 1.05 x goal (a run with\n"
               "no cycle after the first: its one window, to its end); early: (trigger -\n"
               "allocated at a cycle's start) / (trigger - live); lead:\n"
               "(heapLive - allocated) / (trigger - live) at a cycle's start, how early heapLive\n"
               "alone would have started it, predicted (pred) for over <= C/(trigger-live)\n"
               "without a budget, <= max(kappa, F/(trigger-live)) with it (F: one span of each\n"
               "class in use); live err: the pacer's live at a cycle's start against the truth;\n"
               "backstop: frees the program did itself (a row with any is\n"
               "censored, '*'); cyc/coll ms: CPU of the cycles' thread and of the collector; RSS:\n"
               "the run's peak resident set.\n\n"
               "%5s %5s %6s %5s %5s %16s %7s %8s %8s %6s %5s %12s %12s %5s %8s %8s %7s %7s %6s\n",
               opt_threads, reps, opt_kappa, "pct", "hmin", "caches", "live", "mode", "cycles",
               "x exact", "peak MiB", "goal MiB", "C MiB", "ok", "early [IQR]", "lead [IQR]",
               "pred", "live err", "backstop", "cyc ms", "coll ms", "RSS MiB");
    int first = 1, total = npct * nhm * ncs * nls * 3 * reps, runs = 0, censored_rows = 0;
    for (int pi = 0; pi < npct; pi++)
    for (int hi = 0; hi < nhm; hi++)
    for (int ci = 0; ci < ncs; ci++)
        for (int li = 0; li < nls; li++) {
            cur_percent = pcts[pi];
            cur_heap_min = hmins[hi];
            double q[3][FLD_NFIELDS][3]; /* per mode, field: p25, median, p75 */
            int got[3], cens[3];
            for (int m = 0; m < 3; m++) {
                static double v[FLD_NFIELDS][64];
                int n = 0;
                cens[m] = 0;
                for (int r = 0; r < reps; r++) {
                    double f[FLD_NFIELDS];
                    fprintf(stderr, "\rbench pacer: %d/%d runs   ", ++runs, total);
                    if (child((unsigned)cs[ci], ls[li], modes[m], 1000 + (uint64_t)r, f) == 0) {
                        for (int k = 0; k < FLD_NFIELDS; k++)
                            v[k][n] = f[k];
                        cens[m] += f[FLD_BACKSTOP] > 0;
                        n++;
                    }
                }
                got[m] = n;
                for (int k = 0; k < FLD_NFIELDS; k++) {
                    q[m][k][0] = quantile(v[k], n, 0.25);
                    q[m][k][1] = quantile(v[k], n, 0.5);
                    q[m][k][2] = quantile(v[k], n, 0.75);
                }
            }
            for (int m = 0; m < 3; m++) {
                double exact_cycles = q[2][FLD_CYCLES][1] > 0 ? q[2][FLD_CYCLES][1] : 1;
                double ratio = q[m][FLD_CYCLES][1] / exact_cycles;
                double goal = q[m][FLD_GOAL][1] > 0 ? q[m][FLD_GOAL][1] : 1;
                double live = (double)ls[li];
                /* the trigger sits between 45/64 and 61/64 of the way from live to the goal;
                 * the prediction takes the widest gap, goal - live */
                double gap = goal - live > 0 ? goal - live : 1;
                double cap = (double)cs[ci] * 5 * (64 << 10); /* C with no budget */
                /* with the budget: max(B, F) / (trigger - live), F the budget's floor (one
                 * span of each class in use), as the runs read it at their cycles' starts */
                double floor_pred = q[m][FLD_LEAD_PRED][1] > kappa ? q[m][FLD_LEAD_PRED][1] : kappa;
                double pred = m == 0 ? (kappa > 0 && kappa < 1 ? floor_pred : cap / gap) : 0;
                censored_rows += cens[m] > 0;
                if (json) {
                    printf("%s{\"percent\": %s, \"heap_min\": \"%s\", \"caches\": %lld, "
                           "\"live\": %lld, \"mode\": \"%s\", \"runs\": %d, "
                           "\"censored_runs\": %d, \"cycles_over_exact\": %.3f, "
                           "\"predicted_early\": %.4f, \"predicted_early_no_budget\": %.4f",
                           first ? "" : ", ", cur_percent, cur_heap_min, (long long)cs[ci],
                           (long long)ls[li], modes[m], got[m], cens[m], ratio, pred,
                           m == 0 ? cap / gap : 0.0);
                    for (int k = 0; k < FLD_NFIELDS; k++)
                        printf(", \"%s\": %.4f, \"%s_p25\": %.4f, \"%s_p75\": %.4f",
                               field_names[k], q[m][k][1], field_names[k], q[m][k][0],
                               field_names[k], q[m][k][2]);
                    printf("}");
                    first = 0;
                } else {
                    char cyc[32], early[32], lead[32];
                    snprintf(cyc, sizeof cyc, "%.0f [%.0f-%.0f]", q[m][FLD_CYCLES][1],
                             q[m][FLD_CYCLES][0], q[m][FLD_CYCLES][2]);
                    snprintf(early, sizeof early, "%.2f [%.2f]", q[m][FLD_EARLY][1],
                             q[m][FLD_EARLY][2] - q[m][FLD_EARLY][0]);
                    snprintf(lead, sizeof lead, "%.2f [%.2f]", q[m][FLD_LEAD][1],
                             q[m][FLD_LEAD][2] - q[m][FLD_LEAD][0]);
                    printf("%5s %5s %6lld %5.0f %5s %16s %7.2f %8.2f %8.2f %6.1f %4.0f%% %12s "
                           "%12s %5.2f %7.1f%% %8.0f %7.1f %7.1f %6.1f%s\n",
                           cur_percent, cur_heap_min, (long long)cs[ci], live / (1 << 20),
                           modes[m], cyc, ratio, q[m][FLD_PEAK][1] / (1 << 20), goal / (1 << 20),
                           q[m][FLD_CACHED][1] / (1 << 20), 100 * q[m][FLD_OK][1], early, lead,
                           pred, 100 * q[m][FLD_ERR][1], q[m][FLD_BACKSTOP][1],
                           q[m][FLD_CYCLE_CPU][1], q[m][FLD_COLL][1], q[m][FLD_RSS][1] / 1024,
                           cens[m] ? " *" : "");
                }
            }
        }
    fprintf(stderr, "\n");
    if (json)
        printf("], \"censored_rows\": %d}\n", censored_rows);
    else if (censored_rows)
        printf("\n%d censored rows (*): the program freed objects itself; their peaks are not the "
               "pacer's\n", censored_rows);
    return 0;
}
