/*
 * bench/bench_host.c — host allocator workloads and the side-by-side driver (`numaspan bench host`).
 *
 * One program, two roles:
 *   bench_host run WORKLOAD [--threads N] [--seconds S] [--cpu-clock] [--allocator NAME]
 *       runs one workload with whatever malloc the process has (the driver preloads the
 *       allocator under test, and names it) and prints one JSON line: its metric, peak RSS and
 *       the workload's own counts;
 *   bench_host [--quick] [--threads N[,N..]] [--reps R] [--json] [--only W,..] [--allocators A,..]
 *              [--cpu-clock] [--seed S]
 *       the driver: every workload under glibc, jemalloc, mimalloc, tcmalloc, numaspan and
 *       numaspan-secure (the same library with NSP_SECURE=1: what the hardened mode costs), in
 *       R rounds that each run every allocator once, in an order shuffled per round from a
 *       printed seed (--seed repeats it); medians, ratios of the medians to glibc's and the
 *       rounds' paired ratios to glibc. A run whose metric is not the allocator's (a starved
 *       prodcons run, "low-free"; a Larson run whose threads did not all report, "unfinished")
 *       is named and left out of the median. A list of thread counts gives one table (one JSON
 *       line) per count, e.g. --threads 1,2,8,32. Named in --allocators only: numaspan-vcores
 *       and numaspan-exact, its caches without bins.
 * The workload shapes are those of ../shared/BENCHMARKS.md. Uses only malloc/free and, for the
 * NUMA placement shape, numaspan's public API when it is the allocator (looked up with dlsym).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "spawn.h"

/* ---- helpers ---------------------------------------------------------------------------------- */

/* The workloads' clock: wall time, or with --cpu-clock the process's cpu time (every thread's),
 * so that on a machine shared with other jobs a run descheduled for a while does not read as a
 * slow allocator: per-cpu-second metrics compare libraries where wall time only shows the
 * neighbours (the 2-CPU VM, issue 11's fast-path work). */
static clockid_t clock_id = CLOCK_MONOTONIC;

static double now(void)
{
    struct timespec ts;
    clock_gettime(clock_id, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static unsigned nthreads = 2;
/* more fields for the run's JSON line, set by a workload: ", \"k\": v" */
static char run_note[320];
static double seconds = 0.5;
static size_t pair_size = 64;
static _Atomic int stop;
static _Atomic uint64_t total_ops;

/* Runs n threads of fn for the run's seconds; at_stop (if any) runs right after stop is set,
 * before the threads are joined: what the workload had done by the run's end. */
static void run_threads_at_stop(void *(*fn)(void *), unsigned n, void (*at_stop)(void))
{
    pthread_t th[1024];
    atomic_store(&stop, 0);
    for (unsigned i = 0; i < n && i < 1024; i++)
        pthread_create(&th[i], NULL, fn, (void *)(uintptr_t)i);
    usleep((useconds_t)(seconds * 1e6));
    atomic_store(&stop, 1);
    if (at_stop)
        at_stop();
    for (unsigned i = 0; i < n && i < 1024; i++)
        pthread_join(th[i], NULL);
}

static void run_threads(void *(*fn)(void *), unsigned n)
{
    run_threads_at_stop(fn, n, NULL);
}

static void touch(void *p, size_t n)
{
    if (p && n)
        ((volatile char *)p)[0] = 1, ((volatile char *)p)[n - 1] = 1;
}

/* ---- workloads: each returns its metric ------------------------------------------------------- */

/* single-thread pairs: ns per malloc+free pair */
static double w_pairs(void)
{
    void *volatile sink;
    size_t n = pair_size;
    for (int i = 0; i < 100000; i++) { /* warm */
        void *p = malloc(n);
        sink = p;
        free(p);
    }
    uint64_t iters = 0;
    double t0 = now(), t;
    do {
        for (int i = 0; i < 100000; i++) {
            void *p = malloc(n);
            sink = p;
            free(p);
        }
        iters += 100000;
    } while ((t = now()) - t0 < seconds);
    (void)sink;
    return (t - t0) * 1e9 / (double)iters;
}

/* per-thread malloc/free loops: each thread allocates a batch of 64 objects of 16..256 B, writes
 * them, and frees them in the order it got them; nothing crosses threads. Metric: malloc+free
 * pairs per second, all threads together. */
static void *loops_thread(void *arg)
{
    uint64_t seed = 11 + (uintptr_t)arg * 7919, ops = 0;
    void *p[64];
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        for (int r = 0; r < 100; r++) {
            for (int i = 0; i < 64; i++) {
                size_t n = 16 + rng(&seed) % 241;
                p[i] = malloc(n);
                touch(p[i], n);
            }
            for (int i = 0; i < 64; i++)
                free(p[i]);
        }
        ops += 6400;
    }
    atomic_fetch_add(&total_ops, ops);
    return NULL;
}

static double w_loops(void)
{
    atomic_store(&total_ops, 0);
    double t0 = now();
    run_threads(loops_thread, nthreads);
    return (double)atomic_load(&total_ops) / (now() - t0);
}

/* server simulation (Larson): live blocks of 8..1000 B, replace a random one; every so often a
 * thread hands its array to a new thread and exits, so blocks die on other threads. The handed-on
 * threads are detached, so the run waits for them by count (larson_live: every running
 * larson_thread, the successor counted before its predecessor leaves, so it reaches 0 only when
 * all have reported their ops) instead of sleeping a fixed 100 ms: a thread still running after
 * that (a loaded machine) had its ops left out of the metric while its cpu time was in it, and
 * with the wall clock the 100 ms themselves were in it. A run whose threads do not all report
 * within LARSON_WAIT_S prints how many did not ("unfinished"), and the driver leaves it out of
 * the median; otherwise the roots' arrays are freed once all are done. */
#define LARSON_BLOCKS 1000
#define LARSON_WAIT_S 10
struct larson_arg {
    void **blocks;
    size_t *sizes;
    uint64_t seed;
};
static _Atomic int larson_live;
/* NSP_BENCH_TEST_SLOW_LARSON (tests): the first handed-on thread to see stop reports its ops
 * 300 ms late, later than the fixed 100 ms the run used to wait (a root thread is joined) */
static int larson_test_slow;
static _Atomic int larson_slowed;
static __thread int larson_is_root;
static struct larson_arg *larson_args[1024]; /* the roots' arrays, freed once all are done */

static void *larson_thread(void *arg)
{
    struct larson_arg *a = arg;
    uint64_t ops = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        for (int r = 0; r < 20000; r++) {
            unsigned i = rng(&a->seed) % LARSON_BLOCKS;
            free(a->blocks[i]);
            size_t n = 8 + rng(&a->seed) % 993;
            a->blocks[i] = malloc(n);
            touch(a->blocks[i], n);
        }
        ops += 20000;
        if (ops % 100000 == 0 && !atomic_load(&stop)) {
            /* hand the array on to a fresh thread */
            pthread_t t;
            atomic_fetch_add(&total_ops, ops);
            atomic_fetch_add(&larson_live, 1);
            if (pthread_create(&t, NULL, larson_thread, a) == 0) {
                pthread_detach(t);
                atomic_fetch_sub(&larson_live, 1);
                return NULL;
            }
            atomic_fetch_sub(&larson_live, 1);
            ops = 0;
        }
    }
    if (larson_test_slow && !larson_is_root && !atomic_exchange(&larson_slowed, 1))
        usleep(300000);
    atomic_fetch_add(&total_ops, ops);
    atomic_fetch_sub(&larson_live, 1);
    return NULL;
}

static void *larson_root(void *arg)
{
    struct larson_arg *a = malloc(sizeof *a);
    a->blocks = malloc(LARSON_BLOCKS * sizeof(void *));
    a->sizes = NULL;
    a->seed = 0x1234567 + (uint64_t)(uintptr_t)arg * 7919;
    larson_args[(uintptr_t)arg] = a;
    for (int i = 0; i < LARSON_BLOCKS; i++)
        a->blocks[i] = malloc(8 + rng(&a->seed) % 993);
    larson_is_root = 1;
    larson_thread(a);
    return NULL;
}

static double w_larson(void)
{
    atomic_store(&total_ops, 0);
    atomic_store(&larson_live, (int)(nthreads > 1024 ? 1024 : nthreads)); /* the roots' */
    larson_test_slow = getenv("NSP_BENCH_TEST_SLOW_LARSON") != NULL;
    atomic_store(&larson_slowed, 0);
    double t0 = now();
    run_threads(larson_root, nthreads);
    struct timespec w0, w;
    clock_gettime(CLOCK_MONOTONIC, &w0);
    do { /* the handed-on threads see stop at their next 20000 ops */
        if (atomic_load(&larson_live) <= 0)
            break;
        usleep(1000);
        clock_gettime(CLOCK_MONOTONIC, &w);
    } while (w.tv_sec - w0.tv_sec < LARSON_WAIT_S);
    double rate = (double)atomic_load(&total_ops) / (now() - t0);
    int unfinished = atomic_load(&larson_live);
    snprintf(run_note, sizeof run_note, ", \"unfinished\": %d", unfinished);
    for (unsigned i = 0; i < nthreads && i < 1024 && !unfinished; i++) {
        for (int k = 0; k < LARSON_BLOCKS; k++)
            free(larson_args[i]->blocks[k]);
        free(larson_args[i]->blocks);
        free(larson_args[i]);
    }
    if (larson_test_slow)
        snprintf(run_note + strlen(run_note), sizeof run_note - strlen(run_note),
                 ", \"slowed\": %d", atomic_load(&larson_slowed));
    return rate;
}

/* producer/consumer: producers only allocate (64 B), consumers only free what they receive, and
 * every free is remote: pair i's producer runs on the i-th cpu of the process's affinity set and
 * its consumer on the next one (pinned; with one cpu allowed, unpinned and said in the JSON). The
 * ring is handed over in blocks of PC_BLOCK objects (one head or tail store per block, not per
 * object) and a side that finds nothing to do sleeps on a futex until the other has done half a
 * ring, instead of spinning on sched_yield. What that removes (measured, README): a spin that
 * burned the waiting side's cpu into the --cpu-clock metric, so that the metric was the slower
 * side's rate over two cpus; a consumer a few slots behind its producer moving the head's and the
 * slots' lines across cpus per object; and the scheduler's choice of whether a pair shares a cpu
 * (its frees then local to a per-cpu cache). A wait that ends by its timeout although the other
 * side had made its condition true and checked the sleeper's flag after that (a lost wake-up,
 * pc_wait) is counted: the run prints "rescued" (0 in a sound run), and the driver names any run
 * that had one.
 * A run counts only if its consumers freed, by the run's end (when stop is set; their frees
 * after it drain the rings), at least PC_MIN_RINGS rings' worth per pair: a consumer starved of
 * its cpu (the machine loaded, its pinned cpu busy) frees almost nothing while its producer
 * sleeps on a full ring, then one ring after stop, and such a run's rate is the cold start's
 * (fresh pages, fresh thread state: such runs measured 0.09-0.26x a sound run's rate per
 * cpu-second), not the allocator's. The consumers drain every ring after stop, so "frees" is
 * never far below what the producers allocated: the share freed says nothing, the count before
 * stop does. The run prints "frees_at_stop" and "low_free" (1 when under the minimum), and the
 * driver leaves such a run out of the median. */
#define RING 4096
#define PC_BLOCK 64
#define PC_WAKE (RING / 2)
#define PC_MIN_RINGS 4
struct ring {
    _Atomic uint64_t head __attribute__((aligned(64)));
    _Atomic uint32_t consumer_sleeps; /* futex word: 1 while the consumer waits for the head */
    _Atomic uint64_t tail __attribute__((aligned(64)));
    _Atomic uint32_t producer_sleeps; /* futex word: 1 while the producer waits for the tail */
    /* the last head (tail) its side stored and then made its wake check for: written by that
     * side after the check, read only by the other side's timed-out waits (pc_wait), so these
     * lines stay in their writer's cache */
    _Atomic uint64_t head_checked __attribute__((aligned(64)));
    _Atomic uint64_t tail_checked __attribute__((aligned(64)));
    void *slot[RING] __attribute__((aligned(64)));
};
static struct ring *rings;
static _Atomic uint64_t frees_done, pc_waits, pc_rescued;
/* tests (test_bench_host), from the environment. NSP_BENCH_TEST_LATE=1: pair 0's producer
 * starts only once its consumer's first wait (the ring empty) has timed out, and that consumer
 * comes back from its timeout only once the producer has made its condition true and woken it:
 * a sleeper that runs late after its timeout, no wake-up lost. NSP_BENCH_TEST_LOSE=1: the
 * producers skip every wake of their consumer, a wake-up lost at each wait. Either way pair 0
 * goes on past the run's end until its moment is done (the late consumer back; a wait that
 * timed out with its condition true), so that it is built however loaded the machine. */
static int pc_test_late, pc_test_lose;
/* NSP_BENCH_TEST_STARVE: the consumers free nothing until stop, as consumers starved of their cpus
 * for the whole run would ("1": every run; a path: only a run that removes that file, so a test
 * starves one run of the driver's rounds) */
static int pc_test_starve;
static _Atomic int late_phase; /* NSP_BENCH_TEST_LATE: 0, 1 timed out, 2 woken, 3 back */
static _Atomic int lost_seen;  /* NSP_BENCH_TEST_LOSE: a wait timed out with its condition true */

/* The run is over for a side; `tested`: a side of pair 0 under a test above, which goes on until
 * its moment is done. */
static int pc_stop(int tested)
{
    if (!atomic_load(&stop))
        return 0;
    if (tested && pc_test_late)
        return atomic_load(&late_phase) == 3;
    if (tested && pc_test_lose)
        return atomic_load(&lost_seen);
    return 1;
}
static int pc_pinned;
static _Atomic unsigned char pc_cpu_used[CPU_SETSIZE]; /* cpus a prodcons thread was pinned to */

static void pc_wake(_Atomic uint32_t *sleeps)
{
    if (atomic_load(sleeps) && atomic_exchange(sleeps, 0))
        syscall(SYS_futex, sleeps, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* Waits until ready(r) or stop. The sleeper's store of its flag and the other side's store of
 * head or tail are both seq_cst, each followed by a seq_cst load of the other's, so one of them
 * sees the other: the sleeper its condition, or the waker the flag. The 100 ms timeout only
 * rescues a lost wake-up, counted when it is one: checked(r) says the waker has made its wake
 * check (head_checked, tail_checked) for an index that meets the condition, and it is read
 * before the sleeper's exchange of its flag. That check then read the flag before the exchange,
 * and after the flag's store (else the sleeper's own check before its futex had seen the index
 * and not slept): it read 1, and took it, unless the protocol is broken. So the flag still 1 at
 * the exchange means a wake-up lost. A timed-out wait whose condition is true now is none by
 * itself: on a loaded machine the sleeper runs again well after its timeout, and the waker,
 * which took the flag and woke nobody, or which stored its index and was preempted before its
 * check, made it true meanwhile: the likely cause of test_bench_host's one failure of its
 * "rescued" check in CI (NSP_BENCH_TEST_LATE builds the moment). */
static void pc_wait(struct ring *r, _Atomic uint32_t *sleeps, int (*ready)(struct ring *),
                    int (*checked)(struct ring *), int tested)
{
    atomic_fetch_add_explicit(&pc_waits, 1, memory_order_relaxed);
    while (!ready(r) && !pc_stop(tested)) {
        atomic_store(sleeps, 1);
        if (ready(r) || pc_stop(tested)) {
            atomic_store(sleeps, 0);
            break;
        }
        struct timespec to = {0, 100 * 1000 * 1000};
        long rc = syscall(SYS_futex, sleeps, FUTEX_WAIT_PRIVATE, 1, &to, NULL, 0);
        if (rc < 0 && errno == ETIMEDOUT && tested && pc_test_late &&
            atomic_load(&late_phase) == 0) {
            atomic_store(&late_phase, 1); /* back once the producer has woken this side */
            while (atomic_load(&late_phase) == 1)
                sched_yield();
            atomic_store(&late_phase, 3);
        }
        if (rc < 0 && errno == ETIMEDOUT && checked(r) && atomic_exchange(sleeps, 0))
            atomic_fetch_add_explicit(&pc_rescued, 1, memory_order_relaxed);
        if (rc < 0 && errno == ETIMEDOUT && tested && pc_test_lose && ready(r))
            atomic_store(&lost_seen, 1);
    }
}

static int pc_room(struct ring *r) /* the producer may go on: half a ring free */
{
    return atomic_load(&r->head) - atomic_load(&r->tail) <= RING - PC_WAKE;
}

static int pc_filled(struct ring *r) /* the consumer may go on: half a ring to free */
{
    return atomic_load(&r->head) - atomic_load(&r->tail) >= PC_WAKE;
}

/* pc_room for the tail the consumer has made its wake check for */
static int pc_room_checked(struct ring *r)
{
    return atomic_load(&r->head) - atomic_load_explicit(&r->tail_checked, memory_order_acquire) <=
           RING - PC_WAKE;
}

/* pc_filled for the head the producer has made its wake check for (signed: the consumer may
 * have freed past it, up to a head stored and not yet checked) */
static int pc_filled_checked(struct ring *r)
{
    return (int64_t)(atomic_load_explicit(&r->head_checked, memory_order_acquire) -
                     atomic_load(&r->tail)) >= PC_WAKE;
}

static void pc_pin(unsigned id)
{
    cpu_set_t allowed, one;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0 || CPU_COUNT(&allowed) < 2)
        return;
    /* pair p's producer on slot 2p, its consumer on the next, wrapping with a shift of one per
     * round of the set, so that pairs fill every cpu before any cpu takes a second thread: with
     * n >= 2 pairs' threads each cpu has one producer and one consumer, or none. (On two cpus the
     * same as pair p on p % 2 and its consumer on the other.) */
    unsigned n = (unsigned)CPU_COUNT(&allowed), pair = id / 2, k = 0;
    unsigned want = ((2 * pair + 2 * pair / n) % n + id % 2) % n;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &allowed) && k++ == want) {
            CPU_ZERO(&one);
            CPU_SET(c, &one);
            if (pthread_setaffinity_np(pthread_self(), sizeof one, &one) == 0) {
                atomic_store(&pc_cpu_used[c], 1);
                if (id == 0)
                    pc_pinned = 1;
            }
            return;
        }
}

static void *producer(void *arg)
{
    struct ring *r = &rings[(uintptr_t)arg / 2];
    uint64_t h = 0;
    int tested = (pc_test_late || pc_test_lose) && arg == 0;
    int late = tested && pc_test_late;
    pc_pin((unsigned)(uintptr_t)arg);
    while (late && atomic_load(&late_phase) == 0) /* NSP_BENCH_TEST_LATE: the consumer times out */
        sched_yield();
    while (tested ? !pc_stop(tested) : !atomic_load_explicit(&stop, memory_order_relaxed)) {
        if (h - atomic_load_explicit(&r->tail, memory_order_acquire) > RING - PC_BLOCK) {
            pc_wait(r, &r->producer_sleeps, pc_room, pc_room_checked, tested);
            continue;
        }
        for (int i = 0; i < PC_BLOCK; i++, h++) {
            void *p = malloc(64);
            touch(p, 64);
            r->slot[h % RING] = p;
        }
        atomic_store(&r->head, h);
        int woke = h - atomic_load_explicit(&r->tail, memory_order_relaxed) >= PC_WAKE;
        if (woke && !pc_test_lose)
            pc_wake(&r->consumer_sleeps);
        atomic_store_explicit(&r->head_checked, h, memory_order_release);
        if (late && woke && atomic_load(&late_phase) == 1)
            atomic_store(&late_phase, 2); /* the timed-out consumer comes back now */
    }
    pc_wake(&r->consumer_sleeps);
    return NULL;
}

static void *consumer(void *arg)
{
    struct ring *r = &rings[(uintptr_t)arg / 2];
    uint64_t t = 0, n = 0;
    int tested = (pc_test_late || pc_test_lose) && (uintptr_t)arg == 1;
    pc_pin((unsigned)(uintptr_t)arg);
    while (pc_test_starve && !atomic_load(&stop))
        usleep(1000);
    for (;;) {
        uint64_t h = atomic_load_explicit(&r->head, memory_order_acquire);
        if (t == h) {
            if (pc_stop(tested))
                break;
            pc_wait(r, &r->consumer_sleeps, pc_filled, pc_filled_checked, tested);
            continue;
        }
        while (t < h) {
            free(r->slot[t % RING]);
            t++;
            n++;
            if (t % PC_BLOCK == 0 || t == h) {
                atomic_store(&r->tail, t);
                if (atomic_load_explicit(&r->head, memory_order_relaxed) - t <= RING - PC_WAKE)
                    pc_wake(&r->producer_sleeps);
                atomic_store_explicit(&r->tail_checked, t, memory_order_release);
            }
        }
    }
    pc_wake(&r->producer_sleeps);
    atomic_fetch_add(&frees_done, n);
    return NULL;
}

static void *prodcons_thread(void *arg)
{
    return ((uintptr_t)arg % 2 ? consumer : producer)(arg);
}

static unsigned pc_pairs;
static uint64_t pc_frees_at_stop;

static void pc_at_stop(void) /* what the consumers had freed when the run ended */
{
    uint64_t n = 0;
    for (unsigned i = 0; i < pc_pairs; i++)
        n += atomic_load(&rings[i].tail);
    pc_frees_at_stop = n;
}

static int pc_starve_this_run(void)
{
    const char *v = getenv("NSP_BENCH_TEST_STARVE");
    if (!v || !*v)
        return 0;
    return strcmp(v, "1") == 0 || unlink(v) == 0;
}

static double w_prodcons(void)
{
    unsigned n = nthreads < 2 ? 2 : nthreads & ~1u;
    if (posix_memalign((void **)&rings, 64, n / 2 * sizeof *rings))
        return -1;
    memset(rings, 0, n / 2 * sizeof *rings);
    atomic_store(&frees_done, 0);
    atomic_store(&pc_waits, 0);
    atomic_store(&pc_rescued, 0);
    atomic_store(&late_phase, 0);
    atomic_store(&lost_seen, 0);
    pc_test_late = getenv("NSP_BENCH_TEST_LATE") != NULL;
    pc_test_lose = getenv("NSP_BENCH_TEST_LOSE") != NULL;
    pc_test_starve = pc_starve_this_run();
    pc_pairs = n / 2;
    double t0 = now();
    run_threads_at_stop(prodcons_thread, n, pc_at_stop);
    for (unsigned i = 0; i < n / 2; i++) { /* wake a side asleep when stop came */
        pc_wake(&rings[i].producer_sleeps);
        pc_wake(&rings[i].consumer_sleeps);
    }
    double rate = (double)atomic_load(&frees_done) / (now() - t0);
    /* tests: rescued waits added, as a run that had them would count them (test_bench_host:
     * the driver names such a run) */
    const char *fake = getenv("NSP_BENCH_TEST_RESCUED");
    if (fake)
        atomic_fetch_add(&pc_rescued, strtoull(fake, NULL, 10));
    unsigned cpus = 0; /* the cpus the threads were pinned to */
    for (int c = 0; c < CPU_SETSIZE; c++)
        cpus += atomic_load(&pc_cpu_used[c]);
    snprintf(run_note, sizeof run_note,
             ", \"frees\": %llu, \"pinned\": %d, \"cpus\": %u, \"waits\": %llu, "
             "\"rescued\": %llu, \"frees_at_stop\": %llu, \"low_free\": %d",
             (unsigned long long)atomic_load(&frees_done), pc_pinned, cpus,
             (unsigned long long)atomic_load(&pc_waits),
             (unsigned long long)atomic_load(&pc_rescued),
             (unsigned long long)pc_frees_at_stop,
             pc_frees_at_stop < (uint64_t)PC_MIN_RINGS * RING * pc_pairs);
    if (pc_test_late) /* 3: the late consumer's moment was built */
        snprintf(run_note + strlen(run_note), sizeof run_note - strlen(run_note),
                 ", \"late\": %d", atomic_load(&late_phase));
    for (unsigned i = 0; i < n / 2; i++) /* whatever the consumers did not reach */
        for (uint64_t t = rings[i].tail; t < rings[i].head; t++)
            free(rings[i].slot[t % RING]);
    free(rings);
    return rate;
}

/* passive false sharing: a thread frees an object it was handed, then allocates small objects
 * and writes them over and over; an allocator that gives two cores one cache line loses. */
static void **handed;

static void *falseshare_thread(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    free(handed[id]);
    uint64_t ops = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        char *p = malloc(8);
        for (int k = 0; k < 1000; k++)
            ((volatile char *)p)[k & 7]++;
        free(p);
        ops++;
    }
    atomic_fetch_add(&total_ops, ops);
    return NULL;
}

static double w_falseshare(void)
{
    handed = malloc(nthreads * sizeof *handed);
    for (unsigned i = 0; i < nthreads; i++)
        handed[i] = malloc(8); /* neighbours, likely on one cache line */
    atomic_store(&total_ops, 0);
    double t0 = now();
    run_threads(falseshare_thread, nthreads);
    double rate = (double)atomic_load(&total_ops) / (now() - t0);
    free(handed);
    return rate;
}

/* thread churn: threads created and ended continuously, each with a working set, each leaving
 * some objects alive for the next generation to free. Metric: threads per second. */
#define CHURN_LEFT 64
static void *churn_left[1024][CHURN_LEFT];

static void *churn_worker(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    uint64_t seed = 99 + id;
    void *ws[500];
    for (int i = 0; i < CHURN_LEFT; i++) /* the previous generation's leftovers */
        free(churn_left[id][i]);
    for (int i = 0; i < 500; i++) {
        size_t n = 16 + rng(&seed) % 2000;
        ws[i] = malloc(n);
        touch(ws[i], n);
    }
    for (int i = 0; i < 500 - CHURN_LEFT; i++)
        free(ws[i]);
    memcpy(churn_left[id], ws + 500 - CHURN_LEFT, sizeof churn_left[id]);
    return NULL;
}

static double w_churn(void)
{
    uint64_t threads = 0;
    unsigned n = nthreads > 1024 ? 1024 : nthreads;
    double t0 = now();
    while (now() - t0 < seconds) {
        pthread_t th[1024];
        for (unsigned i = 0; i < n; i++)
            pthread_create(&th[i], NULL, churn_worker, (void *)(uintptr_t)i);
        for (unsigned i = 0; i < n; i++)
            pthread_join(th[i], NULL);
        threads += n;
    }
    return (double)threads / (now() - t0);
}

/* random mixed ops: sizes 8 B..16 KiB, alloc/free interleaved, a share freed by other threads.
 * Metric: operations per CPU second. */
#define MIXED_SLOTS 4096
static _Atomic(void *) mixed_shared[MIXED_SLOTS];

static void *mixed_thread(void *arg)
{
    uint64_t seed = 7 + (uintptr_t)arg * 31337, ops = 0;
    void *local[1024] = {0};
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        for (int k = 0; k < 1000; k++) {
            uint64_t r = rng(&seed);
            unsigned i = (r >> 20) % 1024;
            if (r % 8 == 0) { /* hand over: freed by whoever takes the slot */
                void *got = atomic_exchange(&mixed_shared[(r >> 40) % MIXED_SLOTS], local[i]);
                local[i] = got;
            } else if (local[i]) {
                free(local[i]);
                local[i] = NULL;
            } else {
                size_t n = 8 + (r >> 32) % (16 * 1024);
                local[i] = malloc(n);
                touch(local[i], n);
            }
        }
        ops += 1000;
    }
    for (int i = 0; i < 1024; i++)
        free(local[i]);
    atomic_fetch_add(&total_ops, ops);
    return NULL;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

static double w_mixed(void)
{
    atomic_store(&total_ops, 0);
    double c0 = cpu_seconds();
    run_threads(mixed_thread, nthreads);
    double rate = (double)atomic_load(&total_ops) / (cpu_seconds() - c0);
    for (int j = 0; j < MIXED_SLOTS; j++)
        free(atomic_exchange(&mixed_shared[j], NULL));
    return rate;
}

/* large and aligned: 64 KiB..64 MiB blocks, realloc growth, posix_memalign with big alignments.
 * Metric: operations per second. */
static double w_large(void)
{
    uint64_t seed = 5, ops = 0;
    double t0 = now();
    while (now() - t0 < seconds) {
        size_t n = (size_t)64 << 10 << (rng(&seed) % 11); /* 64 KiB .. 64 MiB */
        char *p = malloc(n);
        touch(p, n);
        for (int g = 0; g < 4; g++) {
            n += n / 2;
            p = realloc(p, n);
            touch(p, n);
        }
        free(p);
        void *q;
        size_t align = (size_t)4096 << (rng(&seed) % 10);
        if (posix_memalign(&q, align, 100000) == 0) {
            touch(q, 100000);
            free(q);
        }
        ops += 6;
    }
    return (double)ops / (now() - t0);
}

/* NUMA placement (numaspan only): threads on the virtual cores of a synthetic machine; the share
 * of allocations served from the thread's own node. */
static int (*p_node_of)(const void *);
static int (*p_bind_core)(unsigned);
static void *(*p_topology)(void);
static unsigned (*p_node_of_cache)(const void *, unsigned);
static unsigned (*p_ncaches)(const void *);
static _Atomic uint64_t numa_local, numa_total;

static void *numa_thread(void *arg)
{
    unsigned core = (unsigned)(uintptr_t)arg % p_ncaches(p_topology());
    p_bind_core(core);
    int node = (int)p_node_of_cache(p_topology(), core);
    uint64_t local = 0, total = 0, seed = core + 1;
    void *keep[256] = {0};
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        for (int k = 0; k < 1000; k++) {
            unsigned i = rng(&seed) % 256;
            free(keep[i]);
            keep[i] = malloc(16 + rng(&seed) % 4000);
            local += p_node_of(keep[i]) == node;
            total++;
        }
    }
    for (int i = 0; i < 256; i++)
        free(keep[i]);
    atomic_fetch_add(&numa_local, local);
    atomic_fetch_add(&numa_total, total);
    return NULL;
}

static double w_numa(void)
{
    p_node_of = (int (*)(const void *))dlsym(RTLD_DEFAULT, "nsp_node_of");
    p_bind_core = (int (*)(unsigned))dlsym(RTLD_DEFAULT, "nsp_thread_bind_core");
    p_topology = (void *(*)(void))dlsym(RTLD_DEFAULT, "nsp_topology");
    p_node_of_cache = (unsigned (*)(const void *, unsigned))dlsym(RTLD_DEFAULT, "nsp_topo_node_of_cache");
    p_ncaches = (unsigned (*)(const void *))dlsym(RTLD_DEFAULT, "nsp_topo_num_caches");
    if (!p_node_of || !p_bind_core || !p_topology || !p_node_of_cache || !p_ncaches)
        return -1; /* not numaspan: no placement to measure */
    unsigned n = p_ncaches(p_topology());
    run_threads(numa_thread, nthreads > n ? nthreads : n);
    return 100.0 * (double)atomic_load(&numa_local) / (double)atomic_load(&numa_total);
}

struct workload {
    const char *name;
    double (*fn)(void);
    const char *unit;
    int higher_better;
    int numaspan_only;
    const char *what;
};

static const struct workload workloads[] = {
    {"pairs-16", w_pairs, "ns/pair", 0, 0, "single thread malloc+free of 16 B"},
    {"pairs-64", w_pairs, "ns/pair", 0, 0, "single thread malloc+free of 64 B"},
    {"pairs-256", w_pairs, "ns/pair", 0, 0, "single thread malloc+free of 256 B"},
    {"loops", w_loops, "Mpairs/s", 1, 0, "per-thread malloc/free loops, 16..256 B, batches of 64"},
    {"larson", w_larson, "Mops/s", 1, 0, "server simulation (Larson), blocks handed between threads"},
    {"prodcons", w_prodcons, "Mfrees/s", 1, 0, "producer/consumer, every free remote"},
    {"falseshare", w_falseshare, "Kops/s", 1, 0, "passive false sharing"},
    {"churn", w_churn, "Kthreads/s", 1, 0, "thread churn with leftovers"},
    {"mixed", w_mixed, "Mops/cpu-s", 1, 0, "random mixed ops 8 B..16 KiB, 1/8 cross-thread"},
    {"large", w_large, "Kops/s", 1, 0, "64 KiB..64 MiB, realloc growth, big alignments"},
    {"numa", w_numa, "% local", 1, 1, "share served from the thread's own node (synthetic 2x4)"},
};
#define NWORK (sizeof workloads / sizeof workloads[0])

static double scale(const char *unit)
{
    if (strncmp(unit, "M", 1) == 0)
        return 1e-6;
    if (strncmp(unit, "K", 1) == 0)
        return 1e-3;
    return 1;
}

/* Runs one workload; `as`: the allocator's name, given by the driver (--allocator), or NULL. */
static int run_one(const char *name, const char *as)
{
    for (size_t i = 0; i < NWORK; i++) {
        if (strcmp(workloads[i].name, name))
            continue;
        /* tests (test_bench_host): each run appends "WORKLOAD ALLOCATOR" to this file, the order
         * in which the driver really ran them */
        const char *log = getenv("NSP_BENCH_TEST_ORDER");
        FILE *f = log && *log ? fopen(log, "a") : NULL;
        if (f) {
            fprintf(f, "%s %s\n", name, as ? as : "?");
            fclose(f);
        }
        if (strncmp(name, "pairs-", 6) == 0)
            pair_size = (size_t)atoi(name + 6);
        double v = workloads[i].fn();
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        printf("{\"workload\": \"%s\", ", name);
        if (as)
            printf("\"allocator\": \"%s\", ", as);
        printf("\"value\": %.6g, \"rss_kb\": %ld%s}\n", v * scale(workloads[i].unit),
               ru.ru_maxrss, run_note);
        return 0;
    }
    fprintf(stderr, "bench_host: unknown workload \"%s\"\n", name);
    return 2;
}

/* ---- the driver -------------------------------------------------------------------------------- */

struct allocator {
    const char *name;
    char path[512]; /* "" for glibc */
    int present;
    const char *env; /* one more environment entry for its runs */
    int optin;       /* 1: run only when --allocators names it */
};

/* The opt-in numaspan configurations are its caches without bins (host/cache.h: the
 * non-restartable path), to measure what that path costs beside the bins (issue 11, Deliver 2):
 * virtual cores (64 on a synthetic machine, more than any real one here) and the `exact` ledger.
 * NSP_SECURE (numaspan-secure) has no bins either. */
static struct allocator allocators[] = {
    {"glibc", "", 1, NULL, 0},
    {"jemalloc", "libjemalloc.so.2", 0, NULL, 0},
    {"mimalloc", "libmimalloc.so.2", 0, NULL, 0},
    {"tcmalloc", "libtcmalloc_minimal.so.4", 0, NULL, 0},
    {"numaspan", "", 0, "NSP_SECURE", 0},
    {"numaspan-secure", "", 0, "NSP_SECURE=1", 0},
    {"numaspan-vcores", "", 0, "NSP_TOPOLOGY=synthetic:pack:1 numa:1 core:64 pu:1", 1},
    {"numaspan-exact", "", 0, "NSP_ACCOUNTING=exact", 1},
};
#define NALLOC (sizeof allocators / sizeof allocators[0])

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The upper median of n values (the middle one when n is odd), sorting them in place. */
static double median(double *x, int n)
{
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    return x[n / 2];
}

static const char *self_exe;

/* A number field of a run's JSON line, or 0 when the line has none. */
static long run_field(const char *line, const char *key)
{
    char k[64];
    snprintf(k, sizeof k, "\"%s\": ", key);
    const char *x = strstr(line, k);
    return x ? strtol(x + strlen(k), NULL, 10) : 0;
}

/* Runs one workload under one allocator in a fresh process; its metric and peak RSS. Returns -1
 * when the run failed, 1 when its metric is not the allocator's and the run must be left out of
 * the median (a prodcons run whose consumers were starved, "low_free"; a Larson run with threads
 * that never reported, "unfinished"), 0 for a run that counts. Runs with waits rescued by their
 * timeout count: those waits took longer, the run still did its work. Every run that is not
 * clean is named on stderr. */
static int child(const struct workload *w, const struct allocator *a, double *value, long *rss)
{
    char th[16], sec[32], preload[600], buf[512];
    snprintf(th, sizeof th, "%u", nthreads);
    snprintf(sec, sizeof sec, "%g", seconds);
    snprintf(preload, sizeof preload, "LD_PRELOAD=%s", a->path);
    const char *env[] = {a->path[0] ? preload : "LD_PRELOAD",
                         w->numaspan_only ? "NSP_TOPOLOGY=synthetic:pack:2 numa:2 core:2 pu:1"
                                          : "NSP_TOPOLOGY",
                         a->env, NULL};
    char *argv[] = {(char *)self_exe, "run", (char *)w->name, "--threads", th, "--seconds", sec,
                    "--allocator", (char *)a->name,
                    clock_id == CLOCK_MONOTONIC ? NULL : "--cpu-clock", NULL};
    if (nsp_bench_spawn(self_exe, argv, env, buf, sizeof buf) < 0)
        return -1;
    char *v = strstr(buf, "\"value\": "), *k = strstr(buf, "\"rss_kb\": ");
    if (!v || !k)
        return -1;
    *value = strtod(v + 9, NULL);
    *rss = strtol(k + 10, NULL, 10);
    long rescued = run_field(buf, "rescued"); /* prodcons: waits its timeout ended */
    if (rescued > 0)
        fprintf(stderr, "\nbench: %s under %s: %ld waits rescued by their timeout (a lost "
                        "wake-up; the run is kept, its waits took longer)\n",
                w->name, a->name, rescued);
    if (run_field(buf, "low_free") > 0) {
        fprintf(stderr, "\nbench: %s under %s: low-free: the consumers freed %ld objects by the "
                        "run's end, under %d rings (%d objects) a pair: starved; left out of the "
                        "median\n",
                w->name, a->name, run_field(buf, "frees_at_stop"), PC_MIN_RINGS,
                PC_MIN_RINGS * RING);
        return 1;
    }
    long unfinished = run_field(buf, "unfinished");
    if (unfinished > 0) {
        fprintf(stderr, "\nbench: %s under %s: unfinished: %ld threads had not reported %d s "
                        "after the run's end; left out of the median\n",
                w->name, a->name, unfinished, LARSON_WAIT_S);
        return 1;
    }
    return 0;
}

static void find_allocators(const char *numaspan_lib)
{
    for (size_t i = 0; i < NALLOC; i++) {
        struct allocator *a = &allocators[i];
        if (strcmp(a->name, "glibc") == 0)
            continue;
        if (strncmp(a->name, "numaspan", 8) == 0) {
            if (numaspan_lib && access(numaspan_lib, R_OK) == 0) {
                snprintf(a->path, sizeof a->path, "%s", numaspan_lib);
                a->present = 1;
            }
            continue;
        }
        char full[512];
        snprintf(full, sizeof full, "/usr/lib/x86_64-linux-gnu/%s", a->path);
        if (access(full, R_OK) == 0) {
            snprintf(a->path, sizeof a->path, "%s", full);
            a->present = 1;
        }
    }
}

static int listed(const char *list, const char *name)
{
    if (!list)
        return 1;
    size_t n = strlen(name);
    for (const char *p = list; (p = strstr(p, name)); p += n)
        if ((p == list || p[-1] == ',') && (p[n] == 0 || p[n] == ','))
            return 1;
    return 0;
}

/* Whether allocator a runs: named by --allocators, or, with no list, every one not opt-in. */
static int chosen(const char *which, const struct allocator *a)
{
    return which ? listed(which, a->name) : !a->optin;
}

/* Whether workload w runs under allocator a in this table. */
static int runs_under(const char *which, const struct workload *w, const struct allocator *a)
{
    return a->present && chosen(which, a) &&
           (!w->numaspan_only || strcmp(a->name, "numaspan") == 0);
}

/* The allocators' order in each round is shuffled: in a fixed rotation (A B C D E A B C ...) each
 * allocator always ran right after the same one and paid for what it left behind (the page
 * cache's work, the cpu caches, memory still being handed back), which biased paired rounds by a
 * few percent. The shuffle is drawn from the seed the driver prints (splitmix64), so that --seed
 * with the same options repeats every order; the orders go to stderr, one line a round. Every
 * round still runs each allocator once, so each round's ratios stay paired. */
static uint64_t order_state;

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void shuffle(size_t *x, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(splitmix64(&order_state) % i), t = x[i - 1];
        x[i - 1] = x[j];
        x[j] = t;
    }
}

/* What became of one run: failed (no value), counted, or flagged by child() (left out of the
 * median). */
enum { RUN_FAILED, RUN_COUNTED, RUN_FLAGGED };

/* One cell of the table: the median of the runs that counted, or, when every run was flagged,
 * of those (suspect: a table that is all suspect still has its numbers, marked); the rounds'
 * paired ratios to glibc, over the rounds where both runs counted. */
struct cell {
    double med;  /* -1: no run gave a value */
    long medrss;
    int runs;    /* values the median is of */
    int flagged; /* runs child() flagged: left out of the median unless every run was */
    int suspect; /* every run was flagged: the median is of them */
    double paired; /* median over the rounds of this round's ratio to glibc's (>1 better) */
    int paired_n, paired_wins;
};

static int driver(int reps, int json, const char *only, const char *which, const char *lib,
                  uint64_t seed)
{
    static int looked;
    if (!looked)
        find_allocators(lib);
    for (size_t i = 0; i < NALLOC && !looked; i++)
        if (!allocators[i].present && chosen(which, &allocators[i]))
            fprintf(stderr, "bench: %s not found (%s): its column is empty\n", allocators[i].name,
                    strncmp(allocators[i].name, "numaspan", 8) == 0 ? "pass --lib"
                                                                   : "apt-get install it");
    looked = 1;
    static double v[NWORK][NALLOC][64];
    static long rss[NWORK][NALLOC][64];
    static unsigned char state[NWORK][NALLOC][64]; /* RUN_* by round */
    memset(state, 0, sizeof state);
    double t0 = now();
    size_t nruns = 0, total = 0;
    for (size_t w = 0; w < NWORK; w++)
        if (listed(only, workloads[w].name))
            for (size_t a = 0; a < NALLOC; a++)
                total += (size_t)reps * runs_under(which, &workloads[w], &allocators[a]);
    fprintf(stderr, "bench: %u threads, allocators in a shuffled order each round, seed %llu\n",
            nthreads, (unsigned long long)seed);
    for (size_t w = 0; w < NWORK; w++) {
        if (!listed(only, workloads[w].name))
            continue;
        for (int r = 0; r < reps && r < 64; r++) {
            size_t order[NALLOC], n = 0;
            for (size_t a = 0; a < NALLOC; a++)
                if (runs_under(which, &workloads[w], &allocators[a]))
                    order[n++] = a;
            shuffle(order, n);
            char line[512];
            int len = snprintf(line, sizeof line, "bench: %s round %d/%d:", workloads[w].name,
                               r + 1, reps);
            for (size_t k = 0; k < n && len > 0 && (size_t)len < sizeof line; k++)
                len += snprintf(line + len, sizeof line - (size_t)len, " %s",
                                allocators[order[k]].name);
            fprintf(stderr, "\r%-60s\n", line);
            for (size_t k = 0; k < n; k++) {
                size_t a = order[k];
                double val;
                long kb;
                nruns++;
                double el = now() - t0;
                fprintf(stderr, "\rbench: %zu/%zu runs, %.0f s, about %.0f s left   ", nruns,
                        total, el, el / (double)nruns * (double)(total - nruns));
                int rc = child(&workloads[w], &allocators[a], &val, &kb);
                if (rc >= 0) {
                    v[w][a][r] = val;
                    rss[w][a][r] = kb;
                    state[w][a][r] = rc == 0 ? RUN_COUNTED : RUN_FLAGGED;
                }
            }
        }
    }
    fprintf(stderr, "\n");
    int nr = reps < 64 ? reps : 64, flagged_total = 0;
    static struct cell cell[NWORK][NALLOC];
    for (size_t w = 0; w < NWORK; w++)
        for (size_t a = 0; a < NALLOC; a++) {
            struct cell *c = &cell[w][a];
            memset(c, 0, sizeof *c);
            c->med = -1;
            c->medrss = -1;
            double x[64], y[64];
            for (int r = 0; r < nr; r++)
                if (state[w][a][r] == RUN_COUNTED) {
                    x[c->runs] = v[w][a][r];
                    y[c->runs++] = (double)rss[w][a][r];
                } else if (state[w][a][r] == RUN_FLAGGED) {
                    c->flagged++;
                }
            flagged_total += c->flagged;
            if (c->runs == 0 && c->flagged > 0) { /* nothing counted: the median of the rest */
                c->suspect = 1;
                for (int r = 0; r < nr; r++)
                    if (state[w][a][r] == RUN_FLAGGED) {
                        x[c->runs] = v[w][a][r];
                        y[c->runs++] = (double)rss[w][a][r];
                    }
            }
            if (c->runs) {
                c->med = median(x, c->runs);
                c->medrss = (long)median(y, c->runs);
            }
            if (a == 0)
                continue;
            for (int r = 0; r < nr; r++) /* rounds where both glibc's and this run counted */
                if (state[w][0][r] == RUN_COUNTED && state[w][a][r] == RUN_COUNTED &&
                    v[w][0][r] > 0 && v[w][a][r] > 0) {
                    x[c->paired_n] = workloads[w].higher_better ? v[w][a][r] / v[w][0][r]
                                                                : v[w][0][r] / v[w][a][r];
                    c->paired_wins += x[c->paired_n++] > 1;
                }
            if (c->paired_n)
                c->paired = median(x, c->paired_n);
        }
    if (json) {
        printf("{\"threads\": %u, \"seconds\": %g, \"reps\": %d, \"seed\": %llu, "
               "\"flagged_runs\": %d, \"results\": [",
               nthreads, seconds, reps, (unsigned long long)seed, flagged_total);
        int first = 1;
        for (size_t w = 0; w < NWORK; w++)
            for (size_t a = 0; a < NALLOC; a++) {
                const struct cell *c = &cell[w][a], *g = &cell[w][0];
                if (c->med < 0)
                    continue;
                printf("%s{\"workload\": \"%s\", \"unit\": \"%s\", \"higher_better\": %s, "
                       "\"allocator\": \"%s\", \"median\": %.6g, \"runs\": %d, "
                       "\"flagged_runs\": %d, \"suspect\": %s, \"peak_rss_kb\": %ld, "
                       "\"ratio_to_glibc\": %.4g",
                       first ? "" : ", ", workloads[w].name, workloads[w].unit,
                       workloads[w].higher_better ? "true" : "false", allocators[a].name, c->med,
                       c->runs, c->flagged, c->suspect ? "true" : "false", c->medrss,
                       g->med > 0 ? (workloads[w].higher_better ? c->med / g->med
                                                                : g->med / c->med)
                                  : 0);
                if (c->paired_n)
                    printf(", \"paired_ratio_to_glibc\": %.4g, \"paired_rounds\": %d, "
                           "\"paired_wins\": %d",
                           c->paired, c->paired_n, c->paired_wins);
                printf(", \"values\": [");
                for (int r = 0; r < nr; r++)
                    if (state[w][a][r] == RUN_FAILED)
                        printf("%snull", r ? ", " : "");
                    else
                        printf("%s%.6g", r ? ", " : "", v[w][a][r]);
                printf("], \"flagged_rounds\": [");
                for (int r = 0, k = 0; r < nr; r++)
                    if (state[w][a][r] == RUN_FLAGGED)
                        printf("%s%d", k++ ? ", " : "", r + 1);
                printf("]}");
                first = 0;
            }
        printf("]}\n");
        return 0;
    }
    printf("host benchmarks: %u threads, %g s per run, median of %d runs, alternating "
           "allocators\nin an order shuffled each round (seed %llu: --seed %llu with these options "
           "repeats the orders)\n(ratio: to glibc, >1 is better; rss: median peak RSS in MB)%s\n\n",
           nthreads, seconds, reps, (unsigned long long)seed, (unsigned long long)seed,
           clock_id == CLOCK_MONOTONIC ? ""
                                       : "\n(--cpu-clock: each metric per cpu-second of the process "
                                         "(ns/pair: cpu ns), not per second of wall time)");
    printf("%-11s %-11s", "workload", "unit");
    for (size_t a = 0; a < NALLOC; a++)
        if (chosen(which, &allocators[a]))
            printf(" %18s", allocators[a].name);
    printf("\n");
    int marked = 0, paired_any = 0;
    for (size_t w = 0; w < NWORK; w++) {
        if (!listed(only, workloads[w].name))
            continue;
        printf("%-11s %-11s", workloads[w].name, workloads[w].unit);
        for (size_t a = 0; a < NALLOC; a++) {
            const struct cell *c = &cell[w][a], *g = &cell[w][0];
            if (!chosen(which, &allocators[a]))
                continue;
            paired_any |= c->paired_n > 0;
            if (c->med < 0) {
                printf(" %18s", "-");
                continue;
            }
            double ratio = g->med > 0 ? (workloads[w].higher_better ? c->med / g->med
                                                                    : g->med / c->med)
                                      : 0;
            const char *mark = c->suspect ? "?" : c->flagged ? "*" : "";
            marked |= *mark != 0;
            char cell_text[64];
            if (ratio > 0)
                snprintf(cell_text, sizeof cell_text, "%.3g (%.2fx)%s", c->med, ratio, mark);
            else
                snprintf(cell_text, sizeof cell_text, "%.3g%s", c->med, mark);
            printf(" %18s", cell_text);
        }
        printf("\n");
    }
    if (marked)
        printf("\n*: flagged runs left out of the median; ?: every run flagged, the median is of "
               "them\n(suspect). low-free: a prodcons run whose consumers freed under %d rings a "
               "pair by its\nend (starved); unfinished: a Larson run whose threads did not all "
               "report. stderr\nnames each run.\n",
               PC_MIN_RINGS);
    if (paired_any) {
        printf("\npaired: median over rounds of each round's ratio to glibc (>1 is better), "
               "rounds won / rounds\n");
        for (size_t w = 0; w < NWORK; w++) {
            if (!listed(only, workloads[w].name) || workloads[w].numaspan_only)
                continue;
            printf("%-23s", workloads[w].name);
            for (size_t a = 0; a < NALLOC; a++) {
                const struct cell *c = &cell[w][a];
                if (!chosen(which, &allocators[a]))
                    continue;
                char cell_text[64] = "-";
                if (c->paired_n)
                    snprintf(cell_text, sizeof cell_text, "%.2fx %d/%d", c->paired,
                             c->paired_wins, c->paired_n);
                printf(" %18s", cell_text);
            }
            printf("\n");
        }
    }
    printf("\npeak RSS (MB)\n");
    for (size_t w = 0; w < NWORK; w++) {
        if (!listed(only, workloads[w].name) || workloads[w].numaspan_only)
            continue;
        printf("%-23s", workloads[w].name);
        for (size_t a = 0; a < NALLOC; a++)
            if (chosen(which, &allocators[a])) {
                const struct cell *c = &cell[w][a];
                if (c->medrss < 0) {
                    printf(" %18s", "-");
                } else {
                    char cell_text[64];
                    snprintf(cell_text, sizeof cell_text, "%.1f%s", (double)c->medrss / 1024.0,
                             c->suspect ? "?" : c->flagged ? "*" : "");
                    printf(" %18s", cell_text);
                }
            }
        printf("\n");
    }
    return 0;
}

int main(int argc, char **argv)
{
    self_exe = "/proc/self/exe";
    char exe[512];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        self_exe = strdup(exe);
    }
    int reps = 5, json = 0;
    const char *only = NULL, *which = NULL, *lib = getenv("NSP_BENCH_LIB"), *as = NULL;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts); /* the orders' seed unless --seed: short enough to type */
    uint64_t seed = ((uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec * 1000003u ^
                     (uint64_t)getpid() << 12) & 0xffffffffu;
    const char *workload = NULL, *thread_list = "2";
    int i = 1;
    if (argc > 2 && strcmp(argv[1], "run") == 0) {
        workload = argv[2];
        i = 3;
    }
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            thread_list = argv[++i];
        else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            only = argv[++i];
        else if (strcmp(argv[i], "--allocators") == 0 && i + 1 < argc)
            which = argv[++i];
        else if (strcmp(argv[i], "--lib") == 0 && i + 1 < argc)
            lib = argv[++i];
        else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            char *end;
            const char *arg = argv[++i];
            errno = 0;
            seed = strtoull(arg, &end, 10);
            if (end == arg || *end || errno || *arg == '-') {
                fprintf(stderr, "bench_host: --seed \"%s\": a number 0..2^64-1\n", arg);
                return 2;
            }
        } else if (strcmp(argv[i], "--allocator") == 0 && i + 1 < argc && workload)
            as = argv[++i];
        else if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else if (strcmp(argv[i], "--cpu-clock") == 0)
            clock_id = CLOCK_PROCESS_CPUTIME_ID;
        else if (strcmp(argv[i], "--quick") == 0) {
            reps = 3;
            seconds = 0.2;
        } else {
            fprintf(stderr,
                    "usage: bench_host [--quick] [--threads N[,N..]] [--seconds S] [--reps R] [--json]\n"
                    "                  [--only W,..] [--allocators A,..] [--lib libnumaspan.so]\n"
                    "                  [--cpu-clock] [--seed S]\n"
                    "       bench_host run WORKLOAD [--threads N] [--seconds S] [--cpu-clock]\n"
                    "                  [--allocator NAME]\n"
                    "bench_host: unknown argument \"%s\"\n", argv[i]);
            return 2;
        }
    }
    if (seconds <= 0 || reps < 1 || reps > 64) {
        fprintf(stderr, "bench_host: seconds > 0, reps 1..64\n");
        return 2;
    }
    unsigned counts[16], ncounts = 0;
    for (const char *t = thread_list; *t && ncounts < 16;) {
        char *end;
        unsigned long v = strtoul(t, &end, 10);
        if (end == t || v == 0 || v > 1024 || (*end && *end != ',')) {
            fprintf(stderr, "bench_host: --threads \"%s\": thread counts 1..1024, separated by "
                            "commas\n", thread_list);
            return 2;
        }
        counts[ncounts++] = (unsigned)v;
        t = *end ? end + 1 : end;
    }
    if (workload) {
        nthreads = counts[0];
        return run_one(workload, as);
    }
    int rc = 0;
    order_state = seed; /* one sequence of orders over every table */
    for (unsigned k = 0; k < ncounts; k++) {
        nthreads = counts[k];
        if (k && !json)
            printf("\n");
        rc |= driver(reps, json, only, which, lib, seed);
    }
    return rc;
}
