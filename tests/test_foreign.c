/*
 * tests/test_foreign.c — foreign access to the core caches is serialised and cheap (issue 11,
 * Deliver 3): the periodic idle-release tick does not interrupt a busy cpu, stats and mallinfo2
 * are answered without taking any cache, and taking every cache (fork, the recount) ends when a
 * cpu cannot be fenced.
 *
 * The real machine (rseq caches where the kernel has rseq, CAS caches otherwise), threads pinned
 * one per cpu so that every free is local and only the test's foreign takers could reach a
 * cache. Each cache counts the foreign takers' CASes of its lock word (cache.h, foreign_takes):
 * that counter is what the cases read. Run with NSP_IDLE_RELEASE_MS=0, so that no housekeeping
 * look but the test's own (nsp__pacer_test_release_idle, on the test's clock) takes a cache.
 */
#define _GNU_SOURCE
#include <check.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "host/cache.h"
#include "host/pacer.h"
#include "host/runtime.h"
#include "check_main.h"
#include "numaspan.h"

#define MAX_WORKERS 16

static void ready(void)
{
    free(malloc(1)); /* initialises the allocator */
    ck_assert_int_eq(atomic_load(&nsp__ready), 1);
}

/* The cpus this process may run on, at most n of them; returns how many. */
static int usable_cpus(int *cpus, int n)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return 0;
    int k = 0;
    for (int c = 0; c < CPU_SETSIZE && k < n; c++)
        if (CPU_ISSET(c, &set))
            cpus[k++] = c;
    return k;
}

static void pin_self(int cpu)
{
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    ck_assert_int_eq(sched_setaffinity(0, sizeof one, &one), 0);
}

static pthread_t start_pinned(void *(*fn)(void *), void *arg, int cpu)
{
    pthread_attr_t attr;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    pthread_attr_init(&attr);
    pthread_attr_setaffinity_np(&attr, sizeof one, &one);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, &attr, fn, arg), 0);
    pthread_attr_destroy(&attr);
    return t;
}

static uint64_t takes_of(unsigned cache)
{
    return atomic_load(&nsp__caches[cache].foreign_takes);
}

static uint64_t all_takes(void)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < nsp__ncaches; i++)
        n += takes_of(i);
    return n;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- idle release does not interrupt busy cpus ------------------------------------------------ */

struct worker {
    int cpu;
    _Atomic unsigned cache;     /* the cache it allocates from (set once it runs) */
    _Atomic uint64_t progress;  /* rounds of malloc/free done */
};
static struct worker workers[MAX_WORKERS];
static _Atomic int stop;

static void *busy(void *arg)
{
    struct worker *w = arg;
    atomic_store(&w->cache, nsp__cache_index_now());
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        char *p = malloc(48), *q = malloc(1000);
        p[0] = q[0] = 1;
        free(q);
        free(p);
        atomic_fetch_add_explicit(&w->progress, 1, memory_order_relaxed);
    }
    return NULL;
}

/* Waits until every worker has done a whole round after this was called (two counts: the
 * first may end a round whose operations were all done before), so that each did operations on
 * its cache between the call and the return; 0 if one starved for 10 s. The wait yields: where
 * the threads do not really run side by side (valgrind runs one at a time, and hands its lock to
 * another thread at a system call), a spin without one kept the worker from ever running. */
static int all_progressed(int n)
{
    uint64_t seen[MAX_WORKERS];
    for (int i = 0; i < n; i++)
        seen[i] = atomic_load(&workers[i].progress);
    int64_t deadline = now_ns() + 10000000000LL;
    for (int i = 0; i < n; i++)
        while (atomic_load(&workers[i].progress) < seen[i] + 2) {
            if (now_ns() > deadline)
                return 0;
            sched_yield();
        }
    return 1;
}

START_TEST(idle_release_leaves_busy_caches_alone)
{
    ready();
    int cpus[MAX_WORKERS + 1];
    int ncpu = usable_cpus(cpus, MAX_WORKERS + 1);
    if (ncpu < 2 || nsp_topo_uses_virtual_cores(nsp__topo)) {
        fprintf(stderr, "idle_release_leaves_busy_caches_alone: skipped: needs 2 cpus with a "
                        "cache each (this process has %d)\n", ncpu);
        return;
    }
    /* this thread's cpu is the idle one: its cache holds spans and nobody touches it */
    pin_self(cpus[0]);
    int n = ncpu - 1;
    pthread_t t[MAX_WORKERS];
    atomic_store(&stop, 0);
    for (int i = 0; i < n; i++) {
        workers[i].cpu = cpus[i + 1];
        atomic_store(&workers[i].cache, UINT32_MAX);
        atomic_store(&workers[i].progress, 0);
        t[i] = start_pinned(busy, &workers[i], cpus[i + 1]);
    }
    static void *keep[64];
    for (int i = 0; i < 64; i++)
        keep[i] = malloc(i % 2 ? 48 : 3000);
    unsigned idle = nsp__cache_index_now();
    ck_assert_msg(all_progressed(n), "a busy thread never ran");
    uint64_t before[MAX_WORKERS];
    for (int i = 0; i < n; i++) {
        ck_assert_uint_ne(atomic_load(&workers[i].cache), idle);
        before[i] = takes_of(atomic_load(&workers[i].cache));
    }
    uint64_t idle_before = takes_of(idle);
    ck_assert_uint_gt(nsp__caches[idle].held_bytes, 0);
    /* N ticks of the test's clock, each an idle time after the last, every busy thread having
     * allocated in between: a busy cache never looks idle, so it is never taken */
    const int64_t idle_ns = 1000000;
    int64_t clock = now_ns();
    int ticks = 0, starved = 0;
    for (int k = 0; k < 20; k++) {
        clock += idle_ns;
        while (!nsp__pacer_test_release_idle(clock, idle_ns))
            sched_yield();
        ticks++;
        if (!all_progressed(n)) { /* an operation on each busy cache before the next look */
            starved = 1;
            break;
        }
    }
    size_t held_after = nsp__caches[idle].held_bytes; /* before anything here allocates again */
    atomic_store(&stop, 1);
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    ck_assert_msg(!starved, "a busy thread made no progress for 10 s: the test cannot tell");
    for (int i = 0; i < n; i++) {
        unsigned c = atomic_load(&workers[i].cache);
        ck_assert_msg(takes_of(c) == before[i],
                      "%d ticks took busy cache %u (cpu %d) %llu times", ticks, c,
                      workers[i].cpu, (unsigned long long)(takes_of(c) - before[i]));
    }
    ck_assert_msg(takes_of(idle) == idle_before + 1,
                  "the idle cache %u was taken %llu times in %d ticks (want once)", idle,
                  (unsigned long long)(takes_of(idle) - idle_before), ticks);
    ck_assert_msg(held_after == 0, "the idle cache still holds %zu bytes", held_after);
    for (int i = 0; i < 64; i++)
        free(keep[i]);
}
END_TEST

/* ---- stats and mallinfo2 take no cache ------------------------------------------------------ */

enum { RING = 64, ROUNDS = 20000 };
static _Atomic int go, done_count, leave;
static void *rings[MAX_WORKERS][RING];

/* Churns a ring of RING objects of 48 B (each free local: the thread is pinned), then leaves the
 * ring full and waits, so that the test reads the heap at rest with exactly RING objects each. */
static void *churn(void *arg)
{
    struct worker *w = arg;
    void **ring = rings[w - workers];
    memset(ring, 0, sizeof rings[0]);
    while (!atomic_load(&go))
        sched_yield();
    for (unsigned r = 0; r < ROUNDS; r++) {
        unsigned i = r % RING;
        free(ring[i]);
        ring[i] = malloc(48);
        memset(ring[i], 0xa5, 48); /* nothing that decodes as a free-list link */
    }
    atomic_fetch_add(&done_count, 1);
    while (!atomic_load(&leave))
        sched_yield();
    return NULL;
}

START_TEST(stats_and_mallinfo2_take_no_cache)
{
    ready();
    int cpus[MAX_WORKERS];
    int n = usable_cpus(cpus, MAX_WORKERS);
    if (nsp_topo_uses_virtual_cores(nsp__topo)) {
        fprintf(stderr, "stats_and_mallinfo2_take_no_cache: skipped: virtual cores\n");
        return;
    }
    pin_self(cpus[0]);
    pthread_t t[MAX_WORKERS];
    atomic_store(&go, 0);
    atomic_store(&done_count, 0);
    atomic_store(&leave, 0);
    for (int i = 0; i < n; i++)
        t[i] = start_pinned(churn, &workers[i], cpus[i]);
    nsp_stats_t b0, st, b1;
    uint64_t takes = all_takes();
    int rc0 = nsp_stats_get(&b0); /* asserted at the end: Check's asserts allocate */
    struct mallinfo2 m0 = mallinfo2();
    atomic_store(&go, 1);
    /* While they churn: every reading is within one span's objects per cpu of the truth, which
     * lies between b0 and b0 + n * RING objects (stats.c: a bin whose reading keeps changing
     * counts its listed objects as in use). */
    uint32_t csize, cpages, nelems;
    unsigned cls = 1;
    while (nsp_size_class(cls, &csize, &cpages, &nelems) == 0 && csize < 48)
        cls++;
    uint64_t slack = (uint64_t)n * nelems, readings = 0;
    /* Check's asserts allocate (each marks its place through a pipe): the loop only notes the
     * first reading out of bounds, and asserts after the threads are at rest */
    int bad = 0;
    nsp_stats_t first_bad;
    struct mallinfo2 first_bad_m;
    memset(&first_bad, 0, sizeof first_bad);
    memset(&first_bad_m, 0, sizeof first_bad_m);
    while (atomic_load(&done_count) < n) {
        int rc = nsp_stats_get(&st);
        struct mallinfo2 m = mallinfo2();
        readings++;
        int out = rc != 0 || st.objects_in_use + slack < b0.objects_in_use ||
                  st.objects_in_use > b0.objects_in_use + (uint64_t)n * RING + slack ||
                  m.uordblks + slack * csize < m0.uordblks ||
                  m.uordblks > m0.uordblks + ((uint64_t)n * RING + slack) * csize ||
                  m.uordblks + m.fordblks != m.arena;
        if (out && !bad++) {
            first_bad = st;
            first_bad_m = m;
        }
    }
    int rc1 = nsp_stats_get(&b1);
    struct mallinfo2 m1 = mallinfo2();
    uint64_t taken = all_takes() - takes;
    atomic_store(&leave, 1);
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    ck_assert_int_eq(rc0, 0);
    ck_assert_int_eq(rc1, 0);
    ck_assert_msg(!bad,
                  "%d of %llu readings out of bounds; the first: %llu objects in use (at rest "
                  "%llu, +%d x %d live, slack %llu), mallinfo2 in use %zu (at rest %zu), free "
                  "%zu, arena %zu",
                  bad, (unsigned long long)readings, (unsigned long long)first_bad.objects_in_use,
                  (unsigned long long)b0.objects_in_use, n, RING, (unsigned long long)slack,
                  first_bad_m.uordblks, m0.uordblks, first_bad_m.fordblks, first_bad_m.arena);
    ck_assert_msg(taken == 0, "%llu readings of stats and mallinfo2 took caches %llu times",
                  (unsigned long long)readings + 2, (unsigned long long)taken);
    /* at rest, exact: the rings' objects, their mallocs and their local frees */
    uint64_t live = (uint64_t)n * RING;
    ck_assert_uint_eq(b1.objects_in_use - b0.objects_in_use, live);
    ck_assert_uint_eq(b1.bytes_in_use - b0.bytes_in_use, live * csize);
    ck_assert_uint_eq(b1.cls[cls].objects_in_use - b0.cls[cls].objects_in_use, live);
    ck_assert_uint_eq(b1.mallocs - b0.mallocs, (uint64_t)n * ROUNDS);
    ck_assert_uint_eq(b1.local_frees - b0.local_frees, (uint64_t)n * (ROUNDS - RING));
    ck_assert_uint_eq(b1.remote_frees, b0.remote_frees);
    ck_assert_uint_eq(m1.uordblks - m0.uordblks, live * csize);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < RING; j++)
            free(rings[i][j]);
}
END_TEST

/* ---- taking every cache ends when a cpu cannot be fenced ---------------------------------------- */

/* Cache 0 made an rseq cache of this thread's cpu as far as foreign takers go (they fence that
 * cpu), every fence then refused (membarrier, the whole process's, and a move onto the cpu). */
static int32_t unfenceable_cache0(void)
{
    ready();
    struct nsp_cache *c0 = &nsp__caches[0];
    int32_t saved = c0->rseq_cpu;
    ck_assert_uint_eq(atomic_load(&c0->lock), 0);
    c0->rseq_cpu = sched_getcpu();
    atomic_store(&nsp__test_fence_fail, 3);
    return saved;
}

START_TEST(lock_all_ends_when_a_cpu_cannot_be_fenced)
{
    struct nsp_cache *c0 = &nsp__caches[0];
    int32_t saved = unfenceable_cache0();
    unsigned left = nsp__cache_lock_all(); /* before: retried forever */
    uint32_t word = atomic_load(&c0->lock);
    uint32_t held = c0->all_held;
    nsp__cache_unlock_all();
    atomic_store(&nsp__test_fence_fail, 0);
    c0->rseq_cpu = saved;
    ck_assert_msg(left >= 1, "lock_all says it took every cache, cache 0 included");
    ck_assert_uint_eq(held, 0);
    ck_assert_msg(word == 0, "cache 0 left out with its lock word at %u, not given back", word);
    for (unsigned i = 0; i < nsp__ncaches; i++)
        ck_assert_msg(atomic_load(&nsp__caches[i].lock) == 0, "cache %u still held", i);
    /* and the cache works as before */
    ck_assert_int_eq(nsp__cache_lock_foreign(c0), 1);
    nsp__cache_unlock(c0);
}
END_TEST

START_TEST(fork_completes_when_a_cpu_cannot_be_fenced)
{
    struct nsp_cache *c0 = &nsp__caches[0];
    int32_t saved = unfenceable_cache0();
    pid_t pid = fork(); /* its prepare handler takes every cache: before, forever */
    if (pid == 0) {
        atomic_store(&nsp__test_fence_fail, 0);
        char *p = malloc(100);
        p[0] = 1;
        free(p);
        _exit(atomic_load(&nsp__caches[0].lock) <= 1 ? 0 : 3);
    }
    atomic_store(&nsp__test_fence_fail, 0);
    c0->rseq_cpu = saved;
    ck_assert_int_gt(pid, 0);
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child failed: status %d",
                  status);
    free(malloc(100));
    ck_assert_uint_eq(atomic_load(&c0->lock), 0);
}
END_TEST

int main(void)
{
    free(malloc(1));
    if (!atomic_load(&nsp__ready)) { /* a sanitizer's runtime owns malloc in its builds */
        fprintf(stderr, "test_foreign: skipped: malloc is not numaspan's in this build, so the "
                        "caches under test would never be used\n");
        return 77;
    }
    Suite *s = suite_create("foreign");
    TCase *tc = tcase_create("foreign");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, idle_release_leaves_busy_caches_alone);
    tcase_add_test(tc, stats_and_mallinfo2_take_no_cache);
    tcase_add_test(tc, lock_all_ends_when_a_cpu_cannot_be_fenced);
    tcase_add_test(tc, fork_completes_when_a_cpu_cannot_be_fenced);
    suite_add_tcase(s, tc);
    return nsp_run_suite(s);
}
