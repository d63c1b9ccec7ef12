/*
 * tests/test_span_protocol.c — the span protocol of DESIGN.md §3 as a deterministic interleaving
 * of two cores and one span, step by step, with the span's state checked after each step.
 *
 * The machine is synthetic (1 node x 2 cores, set by CTest through NSP_TOPOLOGY), so cores are
 * virtual and the one test thread plays core A or core B by binding itself to one or the other
 * (nsp_thread_bind_core): a rebinding between two operations is a thread migrating between cores,
 * in the middle of a free if we like. Objects of 1,000 B: class 1,024 B, 64 per span.
 * NSP_IDLE_RELEASE_MS=0 (CTest): only the test moves spans between the caches and the central.
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "host/cache.h"
#include "host/central.h"
#include "host/check.h"
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

/* A cached span that remote frees dirtied is swept before its cursor takes a fresh slot
 * (cache.c, from_cached): the slot B freed comes back at A's next slow path, not after A has run
 * the cursor through the rest of the span. Before, the sweep waited for the span's end, so every
 * cached span was touched page by page to its end before any remote free was reused: with Larson's
 * frees (most of them through a slab's overflow, remote) a cpu's cached spans were all resident
 * (peak RSS 7.1 MB at 2 threads, 6.3-6.6 after; with 256 KiB spans 10-16 MB, 7.6-7.9 after). 256 B
 * objects: 256 to a span, so the cursor's word runs out long before the span does. */
START_TEST(a_dirty_span_is_swept_before_fresh_slots)
{
    free(malloc(1));
    unsigned cls = nsp__size_to_class(256);
    ck_assert_uint_ge(nsp__classes[cls].nelems, 128);
    struct nsp_cache *ca = &nsp__caches[A];
    static void *p[64];
    on(A);
    /* A takes a fresh span and its first word's 64 slots: the cursor's word is then empty */
    for (int i = 0; i < 64; i++)
        p[i] = malloc(256);
    struct nsp_span *s = span(p[0]);
    ck_assert_ptr_eq(ca->spans[cls], s);
    for (int i = 0; i < 64; i++)
        ck_assert_uint_eq(nsp__span_index(s, (uintptr_t)p[i]), (uint32_t)i);
    on(B);
    free(p[5]); /* remote: its freed bit, the span dirty */
    ck_assert_uint_eq(freed_bits(s), 1);
    on(A);
    uint64_t sweeps = ca->sweeps;
    void *q = malloc(256); /* the slow path: the freed slot, swept, not slot 64 */
    ck_assert_ptr_eq(q, p[5]);
    ck_assert_uint_eq(ca->sweeps, sweeps + 1);
    ck_assert_uint_eq(freed_bits(s), 0);
    ck_assert_uint_eq(s->alloc_count, 64);
    for (int i = 0; i < 64; i++)
        free(p[i] == q ? NULL : p[i]);
    free(q);
}
END_TEST

/* A slot freed below the cursor comes before fresh slots, even when the slots just past the
 * cursor are allocated (span.h, nsp__span_cursor_down). Before, the cursor went back to the
 * first fit only when the span's allocated slots were fewer than the cursor's index, so with
 * live objects above it (here slots 128..191) it ran on into fresh words while the freed slot 5
 * waited for the span's end: under churn every cached span was touched to its end (Larson's
 * peak RSS grew with the run: docs/host-rounds.md, 20). 256 B objects, 256 to a span. */
START_TEST(a_freed_slot_below_the_cursor_comes_before_fresh_slots)
{
    free(malloc(1));
    unsigned cls = nsp__size_to_class(256);
    ck_assert_uint_ge(nsp__classes[cls].nelems, 256);
    static void *p[192];
    on(A);
    for (int i = 0; i < 192; i++)
        p[i] = malloc(256);
    struct nsp_span *s = span(p[0]);
    ck_assert_ptr_eq(nsp__caches[A].spans[cls], s);
    ck_assert_uint_eq(nsp__span_index(s, (uintptr_t)p[191]), 191);
    /* slots 64..127 freed and taken again: the cursor is at 128, its word used up */
    for (int i = 64; i < 128; i++)
        free(p[i]);
    for (int i = 64; i < 128; i++) {
        p[i] = malloc(256);
        ck_assert_uint_eq(nsp__span_index(s, (uintptr_t)p[i]), (uint32_t)i);
    }
    free(p[5]); /* local: 191 allocated, the cursor at 128 */
    void *q = malloc(256);
    ck_assert_ptr_eq(q, p[5]); /* not slot 192 */
    ck_assert_uint_eq(s->frontier, 192);
    on(B);
    free(p[7]); /* remote: applied by A's sweep, which moves A's cursor down the same way */
    on(A);
    void *r = malloc(256);
    ck_assert_ptr_eq(r, p[7]);
    ck_assert_uint_eq(s->frontier, 192);
    for (int i = 0; i < 192; i++)
        free(p[i]);
}
END_TEST

/* ... and only then: while the cursor has slots ahead that were handed out before (below the
 * frontier, so no fresh memory is at stake), remote frees wait for a later sweep (cache.c,
 * sweep_before_fresh). Sweeping at every refill took the freed and alloc words' lines from the
 * cpu freeing into them once per refill (producer/consumer: README). Here slot 150, freed
 * locally above the cursor's word, comes before slot 9, freed remotely; then, with only fresh
 * slots ahead, the sweep brings slot 9 back before slot 192. 256 B objects, 256 to a span. */
START_TEST(a_dirty_span_waits_while_used_slots_lie_ahead)
{
    free(malloc(1));
    unsigned cls = nsp__size_to_class(256);
    ck_assert_uint_ge(nsp__classes[cls].nelems, 256);
    struct nsp_cache *ca = &nsp__caches[A];
    static void *p[192];
    on(A);
    for (int i = 0; i < 192; i++)
        p[i] = malloc(256);
    struct nsp_span *s = span(p[0]);
    ck_assert_ptr_eq(ca->spans[cls], s);
    ck_assert_uint_eq(nsp__span_index(s, (uintptr_t)p[191]), 191);
    free(p[100]); /* local: the cursor down to 100, its word loaded */
    free(p[150]); /* local, in the next word */
    ck_assert_ptr_eq(malloc(256), p[100]); /* the cursor's word: used up now */
    on(B);
    free(p[9]); /* remote: its freed bit, the span dirty */
    on(A);
    uint64_t sweeps = ca->sweeps;
    ck_assert_ptr_eq(malloc(256), p[150]); /* the slow path: a used slot ahead, no sweep */
    ck_assert_uint_eq(ca->sweeps, sweeps);
    ck_assert_uint_eq(freed_bits(s), 1);
    void *q = malloc(256); /* only fresh slots ahead: swept first, slot 9 and not slot 192 */
    ck_assert_ptr_eq(q, p[9]);
    ck_assert_uint_eq(ca->sweeps, sweeps + 1);
    ck_assert_uint_eq(freed_bits(s), 0);
    ck_assert_uint_eq(s->frontier, 192);
    for (int i = 0; i < 192; i++)
        free(p[i]);
}
END_TEST

/* Under churn a cached span's carve frontier stays at its peak of live objects (first fit,
 * span.h: a fresh slot is taken only when every slot below it is allocated): 100 live objects
 * of 64 B (1,024 to a span) replaced at random, freed on their core. Before the cursor moved
 * down at each free it took the fresh slots of its word (up to 127) before going back to the
 * freed ones, and with bins and slabs holding objects that the span counts as allocated it ran
 * on word after word (Larson's frontiers grew with the run: docs/host-rounds.md, 20). */
START_TEST(churn_keeps_the_frontier_at_the_live_objects)
{
    free(malloc(1));
    unsigned cls = nsp__size_to_class(64);
    ck_assert_uint_ge(nsp__classes[cls].nelems, 1024);
    enum { LIVE = 100, OPS = 40000 };
    static void *p[LIVE];
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    on(A);
    for (int i = 0; i < LIVE; i++)
        p[i] = malloc(64);
    struct nsp_span *s = span(p[0]);
    /* the objects the test's set-up allocated in this class come first: the frontier then */
    uint32_t filled = s->frontier;
    ck_assert_uint_le(filled, 128 - 8); /* room in the cursor's word, where the fault showed */
    for (int op = 0; op < OPS; op++) {
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        unsigned i = (unsigned)(seed % LIVE);
        free(p[i]);
        p[i] = malloc(64);
        ck_assert_ptr_eq(nsp__caches[A].spans[cls], s); /* one span all along */
    }
    ck_assert_uint_eq(s->frontier, filled); /* no fresh slot while a freed one waits */
    for (int i = 0; i < LIVE; i++)
        free(p[i]);
}
END_TEST

/* A refill passes over a thin span (central.c, cache_span): s1 is woken with a quarter of its
 * slots freed, then s2 by a single free, which puts s2 on top of the partial stack. A's next
 * refill must park s2 (swept) at the list's tail and take s1. Before, it took s2, the last one
 * in, and under Larson a cache got back, over and over, spans that it or a single free had just
 * put there (a refill every few objects). */
START_TEST(a_refill_passes_over_a_thin_span)
{
    free(malloc(1));
    unsigned cls = nsp__size_to_class(SZ);
    struct nsp_cache *ca = &nsp__caches[A];
    struct nsp_central *c = nsp__central(0, cls);
    static void *p[3 * 64];
    /* A's three spans are the class's first: a fresh process (Check's fork) has none, but under
     * CK_FORK=no two_cores_one_span's objects stay, and A's refills would take their spans */
    if (!nsp_check_forks() && (ca->spans[cls] != &nsp__empty_span || c->npartial || c->nfull)) {
        fprintf(stderr, "a_refill_passes_over_a_thin_span: skipped: CK_FORK=no, and the cases "
                        "before it left spans of class %u B\n", nsp__classes[cls].size);
        return;
    }
    on(A);
    for (int i = 0; i < 3 * 64; i++)
        p[i] = malloc(SZ);
    struct nsp_span *s1 = span(p[0]), *s2 = span(p[64]), *s3 = span(p[128]);
    ck_assert_ptr_ne(s1, s2);
    ck_assert_ptr_eq(ca->spans[cls], s3);
    ck_assert_uint_eq(s3->alloc_count, 64);
    ck_assert_uint_eq(state(s1), NSP_SPAN_FULL);
    ck_assert_uint_eq(state(s2), NSP_SPAN_FULL);
    ck_assert_uint_eq(c->npartial, 0);
    on(B);
    for (int i = 0; i < 16; i++)
        free(p[i]); /* wakes s1, 16 free slots */
    free(p[64]);    /* wakes s2, 1 free slot: on top */
    ck_assert_uint_eq(c->npartial, 2);
    ck_assert_ptr_eq(c->partial, s2);
    on(A);
    void *q = malloc(SZ); /* s3 is full and clean: released, and the refill looks */
    ck_assert_ptr_eq(span(q), s1);
    ck_assert_ptr_eq(ca->spans[cls], s1);
    ck_assert_ptr_eq(c->partial, s2); /* parked, alone in the list now */
    ck_assert_ptr_eq(c->partial_tail, s2);
    ck_assert_uint_eq(state(s2), NSP_SPAN_PARTIAL);
    ck_assert_uint_eq(freed_bits(s2), 0); /* swept on the way, as a taken span is */
    ck_assert_uint_eq(s2->alloc_count, 63);
    char why[256];
    ck_assert_msg(nsp__central_is_valid(0, cls, why, sizeof why), "%s", why);
    free(q);
}
END_TEST

/* ---- cross-thread double frees (issue 10, failure 2) ------------------------------------------ */

struct job {
    unsigned core;
    void (*fn)(void *);
    void *arg;
};

static void *job_main(void *arg)
{
    struct job *j = arg;
    if (nsp_thread_bind_core(j->core) < 0)
        return NULL; /* run_on sees that fn did not run */
    j->fn(j->arg);
    j->fn = NULL;
    return NULL;
}

/* Runs fn(arg) on a new thread bound to core, and waits for it: the join orders the steps. */
static void run_on(unsigned core, void (*fn)(void *), void *arg)
{
    struct job j = {core, fn, arg};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, job_main, &j), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_msg(j.fn == NULL, "could not bind a thread to core %u", core);
}

#define SLOTS 64

struct dbl {
    void *p;              /* the object freed twice */
    void *got[2 * SLOTS]; /* what core A allocates afterwards */
    unsigned ngot;
};

static void a_alloc_free(void *arg)
{
    struct dbl *d = arg;
    d->p = malloc(SZ);
    free(d->p); /* a local free: A caches the span */
}

static void b_free_again(void *arg)
{
    struct dbl *d = arg;
    free(d->p); /* a remote free of an object that is not allocated */
}

static void a_fill_and_sweep(void *arg)
{
    /* the slot comes back first; then A runs the span out, and its in-place sweep would apply a
     * freed bit left by B's free to the live object, handing its slot out a second time */
    struct dbl *d = arg;
    for (unsigned i = 0; i < 2 * SLOTS; i++)
        d->got[d->ngot++] = malloc(SZ);
}

/* Returns 1 when A's free went the remote way (a foreign taker held A's cache at that moment: rare,
 * and legitimate): its freed bit is then set, or waits in a magazine (the object tagged) for the
 * flush that B's free starts. 0 when A's bin or locked path took it. B's second free must add no
 * freed bit to either. */
static uint64_t remote_double_free(struct dbl *d)
{
    free(malloc(1));
    run_on(A, a_alloc_free, d);
    struct nsp_span *s = span(d->p);
    uint32_t idx = nsp__span_index(s, (uintptr_t)d->p);
    /* a local free cleared the alloc bit (the locked path) or left the object in A's bin */
    uint64_t word = __atomic_load_n(&s->alloc_bits[idx >> 6], __ATOMIC_RELAXED);
    uint64_t remote = (word >> (idx & 63) & 1) != 0;
#ifdef NSP_RSEQ_LOCKS
    remote = remote && !nsp__bin_lists(s, d->p);
#endif
    run_on(B, b_free_again, d);
    return remote;
}

START_TEST(remote_double_free_is_caught_and_never_aliases)
{
    static struct dbl d;
    nsp__on_error = NSP_ON_ERROR_WARN;
    uint64_t dbl = errors(NSP_ERR_DOUBLE_FREE);
    uint64_t remote = remote_double_free(&d);
    ck_assert_msg(errors(NSP_ERR_DOUBLE_FREE) == dbl + 1,
                  "a remote free of an object its owner had freed was not reported");
    /* and left nothing for the sweep to apply */
    ck_assert_uint_eq(freed_bits(span(d.p)), remote);
    run_on(A, a_fill_and_sweep, &d);
    /* the slot comes back (first, from the bin; after the sweep when A's free went remote) */
    unsigned seen = 0;
    for (unsigned i = 0; i < d.ngot; i++)
        seen += d.got[i] == d.p;
    ck_assert_msg(seen == 1, "the slot freed twice came back %u times", seen);
    if (!remote)
        ck_assert_ptr_eq(d.got[0], d.p);
    for (unsigned i = 0; i < d.ngot; i++) {
        ck_assert_ptr_nonnull(d.got[i]);
        for (unsigned j = 0; j < i; j++)
            ck_assert_msg(d.got[i] != d.got[j], "malloc handed out %p twice (allocations %u, %u)",
                          d.got[i], j, i);
    }
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), dbl + 1);
}
END_TEST

/* The same free under the default NSP_ON_ERROR=abort: the process stops at the second free. */
START_TEST(remote_double_free_aborts)
{
    static struct dbl d;
    ck_assert_int_eq(nsp__on_error, NSP_ON_ERROR_ABORT);
    remote_double_free(&d);
}
END_TEST

/* An object malloc'd and freed on A, with bad frees counted, not fatal: what the next two
 * tests free or realloc a second time. */
static void *freed_on_a(void)
{
    free(malloc(1));
    nsp__on_error = NSP_ON_ERROR_WARN;
    on(A);
    void *p = malloc(SZ);
    free(p);
    return p;
}

/* free() leaves errno as it was (POSIX.1-2024), also when it reports a bad free: the report's
 * write to stderr fails with EBADF here (fd 2 closed), and that must not reach the program. */
START_TEST(a_reported_double_free_keeps_errno)
{
    void *p = freed_on_a();
    uint64_t dbl = errors(NSP_ERR_DOUBLE_FREE);
    int saved = dup(2);
    ck_assert_int_ge(saved, 0);
    close(2);
    errno = 4242;
    free(p);
    int after = errno;
    dup2(saved, 2);
    close(saved);
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), dbl + 1);
    ck_assert_msg(after == 4242, "free() reporting a double free changed errno to %d", after);
}
END_TEST

START_TEST(realloc_of_freed_object_is_reported)
{
    void *p = freed_on_a();
    uint64_t dbl = errors(NSP_ERR_DOUBLE_FREE);
    void *q = realloc(p, SZ + 8); /* the same class: it used to come back as it was */
    ck_assert_ptr_null(q);
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), dbl + 1);
    void *r = malloc(SZ);
    ck_assert_ptr_eq(r, p); /* the slot is free, and handed out once */
    /* the same after a remote free (a freed bit not yet swept) */
    on(B);
    free(r);
    on(A);
    ck_assert_ptr_null(realloc(r, SZ));
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), dbl + 2);
    /* a large object freed: reported too (its span is no longer LARGE, or no longer mapped) */
    void *big = malloc(100000);
    void *keep = malloc(100000);
    free(big);
    uint64_t bad = errors(NSP_ERR_DOUBLE_FREE) + errors(NSP_ERR_NOT_OWNED);
    ck_assert_ptr_null(realloc(big, 100001));
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE) + errors(NSP_ERR_NOT_OWNED), bad + 1);
    free(keep);
}
END_TEST

/* ---- the hardened mode (NSP_SECURE=1; test_span_protocol_secure) ------------------------------ */

START_TEST(secure_canary_catches_an_overflow_at_free)
{
    free(malloc(1));
    nsp__on_error = NSP_ON_ERROR_WARN;
    unsigned char *p = malloc(100);
    size_t usable = malloc_usable_size(p);
    ck_assert_uint_ge(usable, 100);
    memset(p, 'x', usable); /* all the program may use: no report */
    uint64_t canary = errors(NSP_ERR_CANARY);
    free(p);
    ck_assert_uint_eq(errors(NSP_ERR_CANARY), canary);
    p = malloc(100);
    memset(p, 'x', usable + 1); /* one byte past it: the canary */
    free(p);
    ck_assert_uint_eq(errors(NSP_ERR_CANARY), canary + 1);
}
END_TEST

START_TEST(secure_canary_overflow_aborts)
{
    free(malloc(1));
    unsigned char *p = malloc(SZ);
    p[malloc_usable_size(p)] ^= 1;
    free(p); /* NSP_ON_ERROR=abort, the default */
}
END_TEST

START_TEST(secure_write_after_free_is_caught_at_reuse)
{
    free(malloc(1));
    nsp__on_error = NSP_ON_ERROR_WARN;
    on(A);
    void *keep = malloc(SZ); /* A caches the span */
    unsigned char *p = malloc(SZ);
    free(p);
    p[SZ / 2] = 1; /* a write after free */
    uint64_t waf = errors(NSP_ERR_WRITE_AFTER_FREE);
    void *got[64];
    int again = 0;
    for (int i = 0; i < 63 && !again; i++) /* the span's other 62 slots, then p's (random order) */
        again = (got[i] = malloc(SZ)) == p;
    ck_assert_msg(again, "the freed slot never came back");
    ck_assert_uint_eq(errors(NSP_ERR_WRITE_AFTER_FREE), waf + 1);
    free(keep);
}
END_TEST

/* Hands out objects of n bytes until p comes back (its span's other slots first, in random
 * order), then frees the others. Returns whether p came back. */
static int take_back(void *p, size_t n)
{
    void *got[64];
    int k = 0, again = 0;
    while (k < 64 && !again)
        again = (got[k++] = malloc(n)) == p;
    for (int i = 0; i < k - again; i++)
        free(got[i]);
    return again;
}

/* Slots over 1 KiB are poisoned and checked in their first and last 512 B only (secure.h): a
 * write after free there is still caught, and what the program left in the middle is no false
 * report. */
START_TEST(secure_write_after_free_at_the_edges_of_a_large_slot)
{
    enum { BIG = 16000 }; /* the 16 KiB class */
    free(malloc(1));
    nsp__on_error = NSP_ON_ERROR_WARN;
    on(A);
    void *keep = malloc(BIG); /* A caches the span */
    unsigned char *p = malloc(BIG);
    size_t usable = malloc_usable_size(p);
    ck_assert_uint_ge(usable, BIG);
    memset(p, 'x', usable); /* the middle keeps this after the free: unchecked */
    uint64_t waf = errors(NSP_ERR_WRITE_AFTER_FREE);
    free(p);
    p[8] = 1; /* in the first 512 B */
    ck_assert_msg(take_back(p, BIG), "the freed slot never came back");
    ck_assert_uint_eq(errors(NSP_ERR_WRITE_AFTER_FREE), waf + 1);
    free(p);
    p[usable - 1] = 1; /* in the last 512 B, just before the canary */
    ck_assert_msg(take_back(p, BIG), "the freed slot never came back");
    ck_assert_uint_eq(errors(NSP_ERR_WRITE_AFTER_FREE), waf + 2);
    free(p);
    free(keep);
}
END_TEST

START_TEST(secure_slot_order_is_random)
{
    free(malloc(1));
    on(A);
    uintptr_t a[64];
    int ascending = 1, adjacent = 0;
    for (int i = 0; i < 64; i++) {
        a[i] = (uintptr_t)malloc(SZ);
        if (i && a[i] < a[i - 1])
            ascending = 0;
        if (i && a[i] == a[i - 1] + 1024)
            adjacent++;
    }
    ck_assert_msg(!ascending, "64 objects of one span came in address order");
    ck_assert_int_lt(adjacent, 32); /* first fit would make 63 of them neighbours */
    /* and with free slots to choose from, the last freed one is not simply the next handed out */
    for (int i = 32; i < 64; i++)
        free((void *)a[i]);
    int same = 0;
    for (int i = 0; i < 32; i++) {
        void *p = (void *)a[i];
        free(p);
        void *q = malloc(SZ);
        same += q == p;
        a[i] = (uintptr_t)q;
    }
    ck_assert_int_lt(same, 16); /* 1 in 33 each time when random; 32 of 32 under first fit */
}
END_TEST

START_TEST(secure_guard_page_after_a_large_object)
{
    free(malloc(1));
    unsigned char *p = malloc(100000);
    size_t usable = malloc_usable_size(p);
    memset(p, 1, usable); /* fine */
    volatile unsigned char *past = p + ((usable + NSP_PAGE_SIZE - 1) & ~(NSP_PAGE_SIZE - 1));
    *past = 1; /* the guard page: SIGSEGV */
}
END_TEST

/* realloc grows a large object in place (free pages after it, or mremap of a huge one): its
 * contents stay, all of its usable size is writable, and the guard lies at its new end. */
static unsigned char *grow_large_in_place(void)
{
    free(malloc(1));
    unsigned char *p = malloc(100000);
    memset(p, 7, 100000);
    size_t sizes[] = {300000, 40u << 20, 90u << 20};
    size_t had = 100000;
    for (int i = 0; i < 3; i++) {
        p = realloc(p, sizes[i]);
        ck_assert_ptr_nonnull(p);
        for (size_t j = 0; j < had; j += 4096)
            ck_assert_uint_eq(p[j], 7);
        size_t usable = malloc_usable_size(p);
        ck_assert_uint_ge(usable, sizes[i]);
        memset(p, 7, usable);
        had = sizes[i];
    }
    return p;
}

START_TEST(secure_large_realloc_keeps_contents)
{
    free(grow_large_in_place()); /* no fault on the way */
}
END_TEST

START_TEST(secure_guard_follows_a_large_realloc)
{
    unsigned char *p = grow_large_in_place();
    size_t usable = malloc_usable_size(p);
    p[usable + NSP_PAGE_SIZE - 1 - ((uintptr_t)(p + usable - 1) & (NSP_PAGE_SIZE - 1))] = 1;
}
END_TEST

int main(void)
{
    Suite *s = suite_create("span protocol");
    TCase *tc = tcase_create("interleaving");
    /* a bound for a hang, not Check's 4 s default: cases with threads on other cpus ran
     * past it beside a loaded ctest -j2 (test_bins' remote free, in its pthread_join) */
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, two_cores_one_span);
    tcase_add_test(tc, a_refill_passes_over_a_thin_span);
    tcase_add_test(tc, a_dirty_span_is_swept_before_fresh_slots);
    tcase_add_test(tc, a_freed_slot_below_the_cursor_comes_before_fresh_slots);
    tcase_add_test(tc, a_dirty_span_waits_while_used_slots_lie_ahead);
    tcase_add_test(tc, churn_keeps_the_frontier_at_the_live_objects);
    tcase_add_test(tc, remote_double_free_is_caught_and_never_aliases);
    NSP_ADD_SIGNAL_TEST(tc, remote_double_free_aborts, SIGABRT);
    tcase_add_test(tc, a_reported_double_free_keeps_errno);
    tcase_add_test(tc, realloc_of_freed_object_is_reported);
    suite_add_tcase(s, tc);
    /* the hardened mode is chosen at initialisation: its tests run in their own CTest entry */
    if (nsp__secure) {
        tc = tcase_create("secure");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, secure_canary_catches_an_overflow_at_free);
        NSP_ADD_SIGNAL_TEST(tc, secure_canary_overflow_aborts, SIGABRT);
        tcase_add_test(tc, secure_write_after_free_is_caught_at_reuse);
        tcase_add_test(tc, secure_write_after_free_at_the_edges_of_a_large_slot);
        tcase_add_test(tc, secure_slot_order_is_random);
        NSP_ADD_SIGNAL_TEST(tc, secure_guard_page_after_a_large_object, SIGSEGV);
        tcase_add_test(tc, secure_large_realloc_keeps_contents);
        NSP_ADD_SIGNAL_TEST(tc, secure_guard_follows_a_large_realloc, SIGSEGV);
        suite_add_tcase(s, tc);
    } else {
        printf("secure tests skipped: NSP_SECURE is not 1 (test_span_protocol_secure runs them)\n");
    }
    return nsp_run_suite(s);
}
