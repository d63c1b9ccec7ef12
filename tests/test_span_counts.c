/*
 * tests/test_span_counts.c — a cached span's owner counts (nmalloc, nfree: types.h, 32 bits
 * each, the descriptor has no room for more) reach the ledger's totals and the stats whole, however
 * long the span stays cached.
 *
 * A span a cache never gives back (malloc/free pairs on one cpu: no pacer, never idle) kept
 * counting into them until its release; past 2^32 allocations (about 20 s of a tight pair on the
 * bins' path, where a pop is a few ns) the count wrapped, and the release then booked the
 * allocations and frees 2^32 short: the totals and the stats' mallocs lost 4 billion objects, and
 * between the two wraps the stats' mallocs - frees was 2^32 off the objects in use. The test
 * stands for those 2^32 pairs by adding them to both counts of the cached span (with the cache
 * taken: its bin folded, nobody else writes them), runs real pairs across the wrap, releases the
 * span with a cycle, and asserts that the class's mallocs and the node's totals grew by all of
 * them. Run on the bins' path (the real machine, the thread pinned; CTest's test_span_counts)
 * and on the locked path (virtual cores: test_span_counts_virtual).
 * Reads are taken first and asserted afterwards: Check's successful asserts allocate.
 */
#define _GNU_SOURCE
#include <check.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "host/cache.h"
#include "host/ledger.h"
#include "host/pageheap.h"
#include "host/runtime.h"
#include "host/sizeclass.h"
#include "host/span.h"
#include "check_main.h"
#include "numaspan.h"

#define SZ 13000 /* a class Check leaves alone */
#define PAIRS 3000

static void one_core(void)
{
    free(malloc(1));
    if (nsp__virtual) {
        nsp_thread_bind_core(0);
        return;
    }
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(sched_getcpu(), &one);
    sched_setaffinity(0, sizeof one, &one);
}

static uint64_t class_mallocs(unsigned cls)
{
    static nsp_stats_t st; /* large: not on the stack */
    nsp_stats_get(&st);
    return st.cls[cls].mallocs;
}

START_TEST(counts_past_2_to_the_32_reach_the_totals_whole)
{
    one_core();
    nsp_pacer_cycle(); /* every cache released: the class starts with no cached span */
    void *first = malloc(SZ);
    struct nsp_span *s = nsp__span_of(first);
    if (!s) {
        free(first);
        fprintf(stderr, "counts_past_2_to_the_32_reach_the_totals_whole: skipped: malloc is not "
                        "numaspan's here (a sanitizer or valgrind)\n");
        return;
    }
    unsigned cls = s->sizeclass, node = s->node;
    struct nsp_cache *c = &nsp__caches[s->cache];
    uint64_t m0 = class_mallocs(cls);
    uint64_t a0 = atomic_load(&nsp__ledger[node].alloc_objects);
    uint64_t f0 = atomic_load(&nsp__ledger[node].free_objects);
    /* 2^32 - 1000 pairs that ran before (both counts): the real pairs below cross the wrap */
    int took = 0;
    for (int tries = 0; tries < 1000 && !(took = nsp__cache_lock_foreign(c)); tries++)
        sched_yield();
    uint32_t add = UINT32_MAX - 1000u - (s->nmalloc > s->nfree ? s->nmalloc : s->nfree);
    int cached = c->spans[cls] == s;
    if (took) {
        s->nmalloc += add;
        s->nfree += add;
        nsp__cache_unlock(c);
    }
    unsigned same = 0;
    for (unsigned i = 0; i < PAIRS; i++) {
        void *p = malloc(SZ);
        same += nsp__span_of(p) == s;
        free(p);
    }
    uint64_t m_cached = class_mallocs(cls); /* while the span is still cached */
    nsp_pacer_cycle(); /* released: its counts go to the totals */
    uint64_t m1 = class_mallocs(cls);
    uint64_t a1 = atomic_load(&nsp__ledger[node].alloc_objects);
    uint64_t f1 = atomic_load(&nsp__ledger[node].free_objects);
    free(first);

    ck_assert_msg(took, "the cache could not be taken");
    ck_assert_msg(cached, "the first object's span is not its cache's");
    ck_assert_uint_eq(same, PAIRS); /* every pair on the span (one slot, reused) */
    /* the stats counted the first malloc before m0; the ledger books it at the release */
    uint64_t want = (uint64_t)add + PAIRS;
    ck_assert_msg(m_cached - m0 == want, "stats while cached: %llu mallocs of class %u, want %llu",
                  (unsigned long long)(m_cached - m0), cls, (unsigned long long)want);
    ck_assert_msg(m1 - m0 == want, "stats after the release: %llu mallocs of class %u, want %llu",
                  (unsigned long long)(m1 - m0), cls, (unsigned long long)want);
    /* the totals: at least these (Check's own objects may add a few) */
    ck_assert_msg(a1 - a0 >= want + 1, "ledger: %llu allocations booked, want at least %llu",
                  (unsigned long long)(a1 - a0), (unsigned long long)(want + 1));
    ck_assert_msg(f1 - f0 >= want, "ledger: %llu frees booked, want at least %llu",
                  (unsigned long long)(f1 - f0), (unsigned long long)want);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("span_counts");
    TCase *tc = tcase_create("counts");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, counts_past_2_to_the_32_reach_the_totals_whole);
    suite_add_tcase(s, tc);
    return nsp_run_suite(s);
}
