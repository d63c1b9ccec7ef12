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
 * its cache between the call and the return; 0 if one starved for 10 s. */
static int all_progressed(int n)
{
    uint64_t seen[MAX_WORKERS];
    for (int i = 0; i < n; i++)
        seen[i] = atomic_load(&workers[i].progress);
    int64_t deadline = now_ns() + 10000000000LL;
    for (int i = 0; i < n; i++)
        while (atomic_load(&workers[i].progress) < seen[i] + 2)
            if (now_ns() > deadline)
                return 0;
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

int main(void)
{
    Suite *s = suite_create("foreign");
    TCase *tc = tcase_create("foreign");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, idle_release_leaves_busy_caches_alone);
    suite_add_tcase(s, tc);
    return nsp_run_suite(s);
}
