/*
 * tests/test_stats.c — nsp_stats_get and mallinfo2 are answered from counters (issue 11
 * Deliver 3), and at rest those counters say exactly what a walk of every span finds.
 *
 * Each test runs a workload, stops (no other thread allocates or frees), and asks check.c's
 * nsp__stats_is_valid, which holds every lock of the heap, walks every span of every node (and
 * the huge mappings) and compares: freed bits pending per node and class, the centrals'
 * allocated slots, objects in use and spans cached/partial/full per class, large objects and
 * bytes, objects and bytes in use and free pages per node. The workloads cover every place the
 * counters change: small objects freed locally and by other threads (bins, magazines, direct
 * remote frees), objects a central hands out without a cache (nsp_malloc_node, a busy cache's
 * transfer batch), large and huge objects with realloc in place, trim, pacer cycles, thread exit
 * and a fork child, and a cpu's slab (host/slab.h: frees waiting there and the mallocs it
 * serves, which no span counts). The validator also asserts that every small malloc and free is
 * counted once (mallocs - local frees - remote frees = small objects in use); slab_pops asserts
 * it without the validator's drain too.
 * Links the static library to call the validator; run on the real machine and on a synthetic
 * 4-node topology (virtual cores: no slabs, slab_pops skips saying so).
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
#include <unistd.h>

#include "host/cache.h"
#include "host/central.h"
#include "host/check.h"
#include "host/runtime.h"
#include "host/sizeclass.h"
#include "check_main.h"
#include "numaspan.h"

static void ready(void)
{
    free(malloc(1)); /* initialises the allocator */
    ck_assert_int_eq(atomic_load(&nsp__ready), 1);
}

/* The counters against the walk, at rest; `after` names the workload step. Returns 0 (and says
 * so) when the validator could not hold every cache (a cpu that cannot be fenced). */
static int at_rest(const char *after)
{
    char why[512];
    int rc = nsp__stats_is_valid(nsp_stats_get, why, sizeof why);
    if (rc != 0 && strncmp(why, "not checked", 11) == 0) {
        fprintf(stderr, "test_stats: %s: skipped: %s\n", after, why);
        return 0;
    }
    ck_assert_msg(rc == 0, "after %s: %s", after, why);
    /* mallinfo2 is the same counters, summed */
    nsp_stats_t st;
    ck_assert_int_eq(nsp_stats_get(&st), 0);
    struct mallinfo2 mi = mallinfo2();
    size_t mapped = 0;
    for (unsigned n = 0; n < st.nnodes; n++)
        mapped += st.node[n].pages_mapped << 13;
    ck_assert_uint_eq(mi.uordblks, st.bytes_in_use);
    ck_assert_uint_eq(mi.arena, mapped);
    return 1;
}

/* Sizes over the small classes, a few of each. */
#define NSMALL 4000
static void *small[NSMALL];

static size_t small_size(unsigned i)
{
    return 8 + (size_t)(i * 37) % 3000;
}

static void alloc_small(unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        ck_assert_ptr_nonnull(small[i] = malloc(small_size(i)));
        memset(small[i], (int)i, 8);
    }
}

static void free_small(unsigned from, unsigned to, unsigned step)
{
    for (unsigned i = from; i < to; i += step) {
        free(small[i]);
        small[i] = NULL;
    }
}

START_TEST(small_local)
{
    ready();
    alloc_small(NSMALL);
    at_rest("small mallocs");
    free_small(0, NSMALL, 3);
    at_rest("a third freed by their owner");
    free_small(1, NSMALL, 3);
    free_small(2, NSMALL, 3);
    at_rest("all freed");
}
END_TEST

static void *free_every_other(void *arg)
{
    (void)arg;
    free_small(0, NSMALL, 2); /* frees by another thread: magazines or direct remote frees */
    return NULL;
}

static void *alloc_and_exit(void *arg)
{
    (void)arg;
    alloc_small(NSMALL); /* its cache keeps the spans; the objects stay live */
    return NULL;
}

START_TEST(remote_frees_and_thread_exit)
{
    ready();
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, alloc_and_exit, NULL), 0);
    pthread_join(t, NULL);
    at_rest("a thread allocated and exited");
    ck_assert_int_eq(pthread_create(&t, NULL, free_every_other, NULL), 0);
    pthread_join(t, NULL);
    at_rest("another thread freed half of them (freed bits pending)");
    nsp_pacer_cycle();
    at_rest("a pacer cycle (sweeps, caches released)");
    free_small(1, NSMALL, 2);
    at_rest("the rest freed");
    nsp_trim();
    at_rest("a trim");
}
END_TEST

START_TEST(central_direct)
{
    ready();
    unsigned nodes = nsp__nnodes;
    for (unsigned i = 0; i < 600; i++) {
        ck_assert_ptr_nonnull(small[i] = nsp_malloc_node(small_size(i), i % nodes));
    }
    at_rest("nsp_malloc_node on every node");
    /* a busy cache's miss: a batch from the node's transfer, the rest waiting there */
    unsigned cls = nsp__size_to_class(48);
    for (unsigned i = 600; i < 700; i++)
        ck_assert_ptr_nonnull(small[i] = nsp__central_alloc_busy(i % nodes, cls));
    at_rest("objects from the transfer");
    free_small(0, 700, 2);
    at_rest("half of them freed");
    nsp_trim(); /* the transfers drained, spans swept and given back */
    at_rest("a trim");
    free_small(1, 700, 2);
    nsp_pacer_cycle();
    at_rest("the rest freed and a cycle");
}
END_TEST

START_TEST(large_and_huge)
{
    ready();
    void *l[40];
    for (unsigned i = 0; i < 40; i++) {
        ck_assert_ptr_nonnull(l[i] = malloc(40000 + (size_t)i * 9000));
        memset(l[i], 1, 100);
    }
    void *h = malloc((size_t)40 << 20); /* a huge object: a mapping of its own */
    ck_assert_ptr_nonnull(h);
    at_rest("large and huge mallocs");
    free(l[1]); /* room after l[0]: it grows in place */
    ck_assert_ptr_eq(realloc(l[0], 40000 + 2 * 9000), l[0]);
    h = realloc(h, (size_t)80 << 20);
    ck_assert_ptr_nonnull(h);
    at_rest("reallocs of a large and a huge object");
    for (unsigned i = 0; i < 40; i++)
        if (i != 1)
            free(l[i]);
    free(h);
    at_rest("all freed");
    nsp_trim();
    at_rest("a trim");
}
END_TEST

START_TEST(fork_child)
{
    ready();
    alloc_small(NSMALL / 2);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        char why[512];
        free_small(0, NSMALL / 2, 2);
        void *p = malloc(300000);
        int rc = nsp__stats_is_valid(nsp_stats_get, why, sizeof why);
        if (rc != 0 && strncmp(why, "not checked", 11) != 0) {
            fprintf(stderr, "fork child: %s\n", why);
            _exit(1);
        }
        free(p);
        _exit(0);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "the fork child's stats disagree with its walk (its stderr says how)");
    at_rest("a fork child's work (the parent's heap)");
    free_small(0, NSMALL / 2, 1);
    at_rest("all freed");
}
END_TEST

/* mallocs less local and remote frees: the small objects in use (a reading with no other thread
 * allocating or freeing is exact, drained or not) */
static void counts_balance(const char *after)
{
    nsp_stats_t st;
    ck_assert_int_eq(nsp_stats_get(&st), 0);
    uint64_t small = st.objects_in_use;
    for (unsigned n = 0; n < st.nnodes; n++)
        small -= st.node[n].large_objects;
    ck_assert_msg(st.mallocs - st.local_frees - st.remote_frees == small,
                  "after %s: %llu mallocs, %llu local and %llu remote frees, but %llu small "
                  "objects in use", after, (unsigned long long)st.mallocs,
                  (unsigned long long)st.local_frees, (unsigned long long)st.remote_frees,
                  (unsigned long long)small);
}

/* A free into a slab and a malloc the slab serves (host/slab.h) touch no span: the stats count
 * them from the slab (a remote free, a malloc), before a drain (nsp_stats_get drains nothing)
 * and after one (the validator's take). */
/* 512 B: 512 objects a span (its 256 KiB), so that two spans' worth fit NSMALL; 64 B held 4096
 * since the classes up to 1 KiB got spans of 256 KiB (host/sizeclass.h) */
#define SLAB_SIZE 512
START_TEST(slab_pops)
{
    ready();
    cpu_set_t all, one;
    int cpu = -1;
    if (sched_getaffinity(0, sizeof all, &all) == 0)
        for (int i = 0; i < CPU_SETSIZE && cpu < 0; i++)
            if (CPU_ISSET(i, &all))
                cpu = i;
    CPU_ZERO(&one);
    if (cpu >= 0)
        CPU_SET(cpu, &one);
    if (cpu < 0 || sched_setaffinity(0, sizeof one, &one) != 0) {
        fprintf(stderr, "test_stats: slab_pops: skipped: cannot pin the thread to a cpu\n");
        return;
    }
    free(malloc(SLAB_SIZE)); /* the thread's cache is its cpu's from here on */
    unsigned cls = nsp__size_to_class(SLAB_SIZE);
    struct nsp_cache *c = nsp__tb;
    if (c && c->bins_on) { /* the malloc above set the class's slab up (slab.h) */
        ck_assert_int_eq(nsp__cache_lock_foreign(c), 1);
        nsp__cache_slab_set_up(c, cls); /* a no-op unless the thread moved meanwhile */
        nsp__cache_unlock(c);
    }
    if (!c || !c->bins_on || !c->slabs[cls].cap) {
        fprintf(stderr, "test_stats: slab_pops: skipped: no slabs here (no rseq, virtual cores, "
                        "NSP_SECURE or exact)\n");
        return;
    }
    uint32_t size, pages, nelems;
    ck_assert_int_eq(nsp_size_class(cls, &size, &pages, &nelems), 0);
    ck_assert_uint_le(2 * nelems + 64, NSMALL);
    nsp_stats_t st0, st1;
    int read0 = nsp_stats_get(&st0); /* asserted after st1: an assert mallocs */
    /* a span and more: the first span full and given back, the next one cached (no ck_assert
     * in the loops: Check's asserts malloc, to record where the test got to) */
    int got = 1;
    for (unsigned i = 0; i < nelems + 16; i++)
        got &= (small[i] = malloc(SLAB_SIZE)) != NULL;
    /* frees of the first span's objects wait in the cpu's slab (not the bin's span) */
    free_small(0, 16, 1);
    uint64_t pops0 = c->slabs[cls].popped + (c->slabs[cls].word >> 8);
    /* the cached span runs full; then its bin pops the slab before asking the central */
    for (unsigned i = nelems + 16; i < 2 * nelems + 32; i++)
        got &= (small[i] = malloc(SLAB_SIZE)) != NULL;
    uint64_t pops = c->slabs[cls].popped + (c->slabs[cls].word >> 8) - pops0;
    if (sched_getcpu() != cpu || pops == 0) { /* nothing to count: the case did not happen */
        fprintf(stderr, "test_stats: slab_pops: skipped: the slab served no malloc (%llu pops)\n",
                (unsigned long long)pops);
        return;
    }
    int read1 = nsp_stats_get(&st1);
    ck_assert_int_eq(read0, 0);
    ck_assert_int_eq(read1, 0);
    ck_assert_msg(got, "a malloc of %d B failed", SLAB_SIZE);
    ck_assert_msg(st1.mallocs - st0.mallocs == 2 * nelems + 32,
                  "%u mallocs (%llu served by the slab) counted as %llu", 2 * nelems + 32,
                  (unsigned long long)pops, (unsigned long long)(st1.mallocs - st0.mallocs));
    ck_assert_uint_eq(st1.cls[cls].mallocs - st0.cls[cls].mallocs, 2 * nelems + 32);
    counts_balance("mallocs served by the slab, not drained");
    at_rest("mallocs served by the slab, drained");
    counts_balance("mallocs served by the slab, drained");
    free_small(16, 2 * nelems + 32, 1);
    counts_balance("all freed");
    at_rest("all freed");
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("stats");
    TCase *tc = tcase_create("counters");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, small_local);
    tcase_add_test(tc, remote_frees_and_thread_exit);
    tcase_add_test(tc, central_direct);
    tcase_add_test(tc, large_and_huge);
    tcase_add_test(tc, fork_child);
    tcase_add_test(tc, slab_pops);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return nsp_run_suite(suite());
}
