/*
 * tests/test_span_protocol.c — the span protocol of DESIGN.md §3 as a deterministic interleaving
 * of two cores and one span, step by step, with the span's state checked after each step.
 *
 * The machine is synthetic (1 node x 2 cores, set by CTest through NSP_TOPOLOGY), so cores are
 * virtual and the one test thread plays core A or core B by binding itself to one or the other
 * (nsp_thread_bind_core): a rebinding between two operations is a thread migrating between cores,
 * in the middle of a free if we like. Objects of 1,000 B: class 1,024 B, 64 per span.
 */
#define _GNU_SOURCE
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "host/cache.h"
#include "host/central.h"
#include "host/pageheap.h"
#include "host/runtime.h"
#include "host/span.h"
#include "check_main.h"
#include "numaspan.h"

#define SZ 1000
#define A 0u
#define B 1u

static void on(unsigned core)
{
    ck_assert_int_ge(nsp_thread_bind_core(core), 0);
}

static struct nsp_span *span(void *p)
{
    struct nsp_span *s = nsp__span_of(p);
    ck_assert_ptr_nonnull(s);
    return s;
}

static uint32_t state(struct nsp_span *s)
{
    return atomic_load(&s->state);
}

static uint64_t freed_bits(struct nsp_span *s)
{
    uint64_t n = 0;
    for (uint32_t w = 0; w < nsp__span_nwords(s); w++)
        n += (uint64_t)__builtin_popcountll(atomic_load(&s->freed_bits[w]));
    return n;
}

static uint64_t errors(enum nsp_error_kind k)
{
    return atomic_load(&nsp__errors[k]);
}

START_TEST(two_cores_one_span)
{
    ck_assert_uint_eq(nsp_topo_num_caches(nsp_topology()), 2);
    ck_assert_int_eq(nsp_topo_uses_virtual_cores(nsp_topology()), 1);
    free(malloc(1));
    nsp__on_error = NSP_ON_ERROR_WARN; /* count the double frees this test commits */
    unsigned cls = nsp__size_to_class(SZ);
    struct nsp_cache *ca = &nsp__caches[A], *cb = &nsp__caches[B];
    void *p[64];

    /* refill: A's first allocation caches a fresh span */
    on(A);
    for (int i = 0; i < 10; i++)
        p[i] = malloc(SZ);
    struct nsp_span *s = span(p[0]);
    ck_assert_ptr_eq(ca->spans[cls], s);
    ck_assert_uint_eq(state(s), NSP_SPAN_CACHED);
    ck_assert_uint_eq(s->cache, A);
    ck_assert_uint_eq(s->alloc_count, 10);
    for (int i = 1; i < 10; i++)
        ck_assert_ptr_eq(span(p[i]), s);

    /* local free: the owner clears the alloc bit directly, no freed bit */
    free(p[9]);
    ck_assert_uint_eq(s->alloc_count, 9);
    ck_assert_uint_eq(freed_bits(s), 0);
    ck_assert_ptr_eq(malloc(SZ), p[9]); /* and the slot comes straight back */

    /* remote free: B sets the freed bit; the owner's count is untouched until a sweep */
    on(B);
    free(p[0]);
    ck_assert_uint_eq(s->alloc_count, 10);
    ck_assert_uint_eq(freed_bits(s), 1);
    ck_assert_uint_eq(atomic_load(&s->dirty), 1);
    ck_assert_uint_eq(state(s), NSP_SPAN_CACHED);

    /* remote double free: caught at once by the atomic OR */
    uint64_t dbl = errors(NSP_ERR_DOUBLE_FREE);
    free(p[0]);
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), dbl + 1);
    ck_assert_uint_eq(freed_bits(s), 1);

    /* in-place sweep: A runs its span out; the freed slot is applied and handed out again */
    on(A);
    for (int i = 10; i < 64; i++)
        p[i] = malloc(SZ);
    for (int i = 10; i < 64; i++)
        ck_assert_ptr_eq(span(p[i]), s);
    ck_assert_uint_eq(s->alloc_count, 64);
    uint64_t sweeps = ca->sweeps;
    void *again = malloc(SZ); /* the cursor is at the end: sweep, rewind, reuse p[0]'s slot */
    ck_assert_ptr_eq(again, p[0]);
    p[0] = again;
    ck_assert_uint_eq(ca->sweeps, sweeps + 1);
    ck_assert_uint_eq(freed_bits(s), 0);
    ck_assert_ptr_eq(ca->spans[cls], s);

    /* local double free: caught by the alloc bit */
    free(p[5]);
    dbl = errors(NSP_ERR_DOUBLE_FREE);
    free(p[5]);
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), dbl + 1);
    p[5] = malloc(SZ);
    ck_assert_ptr_eq(span(p[5]), s);

    /* release as FULL: the span is full and clean, so the next allocation releases it */
    void *q = malloc(SZ);
    struct nsp_span *s2 = span(q);
    ck_assert_ptr_ne(s2, s);
    ck_assert_uint_eq(state(s), NSP_SPAN_FULL);
    ck_assert_uint_eq(s->list, NSP_LIST_FULL);
    ck_assert_ptr_eq(ca->spans[cls], s2);

    /* FULL -> PARTIAL wake-up: the first remote free moves it, by CAS, to the partial list */
    on(B);
    uint64_t wakes = nsp__central(0, cls)->wakes;
    free(p[20]);
    ck_assert_uint_eq(state(s), NSP_SPAN_PARTIAL);
    ck_assert_uint_eq(s->list, NSP_LIST_PARTIAL);
    ck_assert_uint_eq(nsp__central(0, cls)->wakes, wakes + 1);
    free(p[21]); /* a second free finds it PARTIAL already: no second wake */
    ck_assert_uint_eq(nsp__central(0, cls)->wakes, wakes + 1);
    ck_assert_uint_eq(freed_bits(s), 2);

    /* migration mid-free: a thread that allocated on A moves to B before freeing; the free is
     * remote (B does not cache s2), and A's sweep applies it later — nothing is lost */
    on(A);
    void *r = malloc(SZ);
    ck_assert_ptr_eq(span(r), s2);
    uint32_t before = s2->alloc_count;
    on(B);
    free(r);
    ck_assert_uint_eq(s2->alloc_count, before);
    ck_assert_uint_eq(freed_bits(s2), 1);

    /* release while dirty: A gives s2 back with a freed bit pending: PARTIAL, never FULL */
    ck_assert_int_eq(nsp__cache_lock_foreign(ca), 1);
    nsp__cache_release(ca, cls);
    nsp__cache_unlock(ca);
    ck_assert_uint_eq(state(s2), NSP_SPAN_PARTIAL);
    ck_assert_uint_eq(s2->list, NSP_LIST_PARTIAL);

    /* central sweep: B's first allocation of the class takes a partial span, swept first */
    on(B);
    void *t = malloc(SZ);
    struct nsp_span *got = span(t);
    ck_assert_ptr_eq(cb->spans[cls], got);
    ck_assert_uint_eq(state(got), NSP_SPAN_CACHED);
    ck_assert_uint_eq(got->cache, B);
    ck_assert_uint_eq(freed_bits(got), 0);
    ck_assert(got == s || got == s2);
    /* s had 2 pending frees, s2 had 1: whichever B took, they were applied exactly once */
    if (got == s)
        ck_assert_uint_eq(s->alloc_count, 64 - 2 + 1);
    else
        ck_assert_uint_eq(s2->alloc_count, before - 1 + 1);

    /* B frees its own object: a local free now, since B caches that span */
    uint32_t local = got->nfree;
    free(t);
    ck_assert_uint_eq(got->nfree, local + 1);
    ck_assert_uint_eq(errors(NSP_ERR_NOT_OWNED), 0);
    ck_assert_uint_eq(errors(NSP_ERR_INTERIOR), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("span protocol");
    TCase *tc = tcase_create("interleaving");
    tcase_add_test(tc, two_cores_one_span);
    suite_add_tcase(s, tc);
    return nsp_run_suite(s);
}
