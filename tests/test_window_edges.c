/*
 * tests/test_window_edges.c — edges of the windowed charge (host/ledger.h, the cover) that its
 * own test (test_ledger_window.c) does not walk: what the hand-outs it changed do to the other
 * modes, and a random walk of frees and mallocs in the mode it serves.
 *
 *   - `exact`: a slot the cursor's hand-out keeps back (written over while free: span.h,
 *     nsp__span_untagged) is an allocation like any other and is charged as one, also when the
 *     locked fast path found it at the end of its cursor's word, where the hand-out now ends
 *     empty-handed (it no longer scans on: span.c) and the malloc goes on to the slow path;
 *   - `over` (and `exact`): never late under churn — local and remote frees, first-fit rescans,
 *     rewinds, in-place sweeps, bins folded by foreign takes and cycles, across several windows
 *     of a grown span and back: every span's charge covers what the program holds in it at every
 *     step (the heap's sum alone hides one span's shortfall behind another's slack);
 *   - `over`: the caches' unspent reservation (charge less live bytes) stays within what they
 *     reserve (a window per cached span), after local frees and a steady state on the span.
 *
 * The cases run on one core (virtual: CTest's synthetic machine; real: the thread pinned, the
 * bins' path), from size classes the rest of the process leaves alone, so that the slots they
 * name are the ones they took. Reads are taken first and asserted afterwards: Check's successful
 * asserts allocate.
 */
#define _GNU_SOURCE
#include <check.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
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
#include "ledger_now.h"
#include "numaspan.h"

/* Whether malloc is numaspan's here: 0 under a tool that replaces it (valgrind), the reason
 * printed as test `name`'s skip. */
static int ours(const char *name)
{
    void *p = malloc(1);
    int yes = nsp__span_of(p) != NULL;
    free(p);
    if (!yes)
        fprintf(stderr, "%s: skipped: malloc is not numaspan's here (valgrind?)\n", name);
    return yes;
}

#define SZ 700 /* the 704 B class: 93 slots a span, two bitmap words; unused by Check */
#define GROWN 100 /* the 112 B class: a span of 256 KiB, a window of 64 KiB */

/* The thread on one core (virtual) or its cpu (real), so that its cache stays one. */
static void one_core(void)
{
    if (nsp__virtual) {
        nsp_thread_bind_core(0);
        return;
    }
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(sched_getcpu(), &one);
    sched_setaffinity(0, sizeof one, &one);
}

/* `exact`: the locked fast path meets a slot written over while free as the last free slot of
 * its cursor's word. The hand-out keeps the slot (allocated, reported) and, with no other in the
 * word, gives nothing: the malloc goes on to the slow path. The kept slot must still be charged:
 * an uncharged one leaves the span's charge an object under its allocated slots for as long as
 * the span lives (`exact` then under the truth, and the books off at rest). */
START_TEST(exact_charges_a_slot_kept_at_the_end_of_the_cursor_word)
{
    if (!ours("exact_charges_a_slot_kept_at_the_end_of_the_cursor_word"))
        return;
    if (nsp__accounting != NSP_ACCT_EXACT || !nsp__virtual) {
        fprintf(stderr, "exact_charges_a_slot_kept_at_the_end_of_the_cursor_word: skipped: "
                        "needs NSP_ACCOUNTING=exact on virtual cores (CTest sets both)\n");
        return;
    }
    nsp__on_error = NSP_ON_ERROR_WARN;
    nsp_thread_bind_core(0);
    nsp_pacer_cycle(); /* every cache released: the class's next span is a fresh one */
    void *o[70];
    for (int i = 0; i < 64; i++) /* word 0: slots 0..63, the cursor's word used up */
        o[i] = malloc(SZ);
    struct nsp_span *s = nsp__span_of(o[0]);
    uint32_t first = nsp__span_index(s, (uintptr_t)o[0]);
    uint32_t fi = s->freeindex;
    uint64_t cursor = s->alloc_cache;
    free(o[62]);
    free(o[63]);                              /* local frees: free, tagged, behind the cursor */
    *(volatile uint64_t *)o[63] = 0x4141414141414141ULL; /* written after free */
    uint64_t waf = atomic_load(&nsp__errors[NSP_ERR_WRITE_AFTER_FREE]);
    o[62] = malloc(SZ); /* the slow path's scan: slot 62, the cursor's word {63} */
    uint32_t fi62 = s->freeindex;
    o[63] = malloc(SZ); /* the fast path: slot 63 kept, the word empty: on to the slow path */
    uint64_t waf_after = atomic_load(&nsp__errors[NSP_ERR_WRITE_AFTER_FREE]);
    int kept = nsp__span_slot_live(s, 63);
    int64_t charge = atomic_load(&s->charge), slots = (int64_t)s->alloc_count * s->elemsize;
    int same_span = nsp__span_of(o[63]) == s;
    for (int i = 0; i < 64; i++)
        free(o[i]);
    int64_t left = atomic_load(&s->charge), left_slots = (int64_t)s->alloc_count * s->elemsize;

    ck_assert_uint_eq(first, 0); /* a fresh span: the slots are the ones named */
    ck_assert_uint_eq(fi, 64);
    ck_assert_uint_eq(cursor, 0);
    ck_assert_uint_eq(fi62, 63);
    ck_assert_uint_eq(waf_after, waf + 1);
    ck_assert_int_eq(kept, 1);
    ck_assert_int_eq(same_span, 1); /* the next object came from the span's word 1 */
    ck_assert_msg(charge == slots, "exact: the span is charged %lld B with %lld B in allocated "
                  "slots (the kept slot uncharged)", (long long)charge, (long long)slots);
    ck_assert_int_eq(left, left_slots); /* the kept slot: allocated and charged, still */
}
END_TEST

#define MAXBIG 4096
static void *held_big[MAXBIG];

/* `over`: what a cached span holds charged and unallocated stays within what its cache reserves
 * for it (its window: held_bytes, the caps and the pacer's budget count that, cache.c), also
 * after the program frees most of what it took and goes on allocating from the span. A charge
 * left at the span's fullest moment is unspent the budget never counted: past it, B no longer
 * bounds how far heapLive runs ahead of the live bytes (DESIGN.md §6). Local frees here are the
 * bins' pushes (listed: allocated from the span's view) on the real machine, the locked path's
 * bitmap frees on virtual cores; a malloc/free pair after them stays in the bin or the cursor's
 * word, as a program's steady state does. */
START_TEST(unspent_stays_within_the_reservation)
{
    if (!ours("unspent_stays_within_the_reservation"))
        return;
    unsigned k = nsp__size_to_class(GROWN);
    int64_t window = (int64_t)nsp__class_window_bytes(k), span = (int64_t)nsp__class_span_bytes(k);
    if (nsp__accounting != NSP_ACCT_OVER || window >= span) {
        fprintf(stderr, "unspent_stays_within_the_reservation: skipped: needs `over` and spans "
                        "grown past their window (NSP_SMALL_SPAN=256K; CTest sets both)\n");
        return;
    }
    one_core();
    nsp_pacer_cycle(); /* every cache released: the class's next span is a fresh one */
    int64_t e = (int64_t)nsp__classes[k].size;
    unsigned n = (unsigned)(3 * window / e); /* three windows of one span */
    for (unsigned i = 0; i < n; i++)
        held_big[i] = malloc(GROWN);
    struct nsp_span *s = nsp__span_of(held_big[0]);
    int one_span = nsp__span_of(held_big[n - 1]) == s;
    for (unsigned i = 0; i + 8 < n; i++) /* all but the last 8 freed, on the span's core */
        free(held_big[i]);
    for (unsigned i = 0; i < 4096; i++) /* the steady state: a malloc/free pair at a time */
        free(malloc(GROWN));
    nsp_pacer_info_t pi;
    nsp_pacer_get(&pi);
    int64_t charge = atomic_load(&s->charge), live = 8 * e;
    for (unsigned i = n - 8; i < n; i++)
        free(held_big[i]);

    ck_assert_int_eq(one_span, 1);
    ck_assert_msg(pi.unspent <= pi.cached_bytes,
                  "the caches' unspent reservation %lld B passes what they reserve, %lld B (the "
                  "span of class %u: charged %lld B, %lld B live, window %lld B)",
                  (long long)pi.unspent, (long long)pi.cached_bytes, k, (long long)charge,
                  (long long)live, (long long)window);
}
END_TEST

/* ---- never late, under churn ----------------------------------------------------------------- */

#define NSTEPS 48000
#define NHELD 4000

struct remote {
    void **objs;
    unsigned n;
};

static int other_cpu = -1;

/* Frees the batch from another core (virtual) or cpu (real): remote frees, applied by a sweep. */
static void *free_remotely(void *arg)
{
    struct remote *r = arg;
    if (nsp__virtual) {
        nsp_thread_bind_core(1);
    } else if (other_cpu >= 0) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(other_cpu, &one);
        sched_setaffinity(0, sizeof one, &one);
    }
    for (unsigned i = 0; i < r->n; i++)
        free(r->objs[i]);
    return NULL;
}

/* The bytes the walk holds in each span it took objects from (its charge must cover them). */
#define MAXSPANS 256
static struct {
    struct nsp_span *s;
    int64_t bytes;
} spans[MAXSPANS];
static unsigned nspans;

static void held_in(void *p, int64_t bytes)
{
    struct nsp_span *s = nsp__span_of(p);
    unsigned i = 0;
    while (i < nspans && spans[i].s != s)
        i++;
    if (i == nspans && nspans < MAXSPANS)
        spans[nspans++].s = s;
    if (i < MAXSPANS)
        spans[i].bytes += bytes;
}

static uint64_t rnd_state = 0x243f6a8885a308d3ULL;
static uint64_t rnd(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return rnd_state;
}

/* A random walk of mallocs and frees of two grown classes on one core — local frees, batches
 * freed from another core (remote: swept in place later), foreign takes (the bins folded, their
 * listed slots back in the span), cycles (stale spans released) — read after every step: in
 * `over` and `exact` neither heapLive + pending nor any span's charge is below the bytes the
 * program holds (there, or in that span: what the test counts itself). Every hand-out that
 * passes a charge must have raised it first, whatever mix of first-fit rescans, rewinds, sweeps
 * and refolds led there; seen red with the cover of counted() (virtual cores) or of bin_attach
 * (the bins) taken out. In `over` the walk must reach both of the cover's moves. At the end, at
 * rest after a cycle, the ledger is exact and the heap's validators (`over`: charge >= covered)
 * agree. */
START_TEST(never_late_under_churn)
{
    if (!ours("never_late_under_churn"))
        return;
    if (nsp__accounting == NSP_ACCT_UNDER) {
        fprintf(stderr, "never_late_under_churn: skipped: `under` has no bound at an instant\n");
        return;
    }
    if (!nsp__virtual) {
        cpu_set_t all;
        if (sched_getaffinity(0, sizeof all, &all) == 0)
            for (int i = 0; i < CPU_SETSIZE; i++)
                if (CPU_ISSET(i, &all) && i != sched_getcpu()) {
                    other_cpu = i;
                    break;
                }
    }
    one_core();
    struct remote none = {NULL, 0};
    pthread_t t0; /* the first thread's own allocations (glibc's), before the base is read */
    pthread_create(&t0, NULL, free_remotely, &none);
    pthread_join(t0, NULL);
    nsp_pacer_cycle();
    uint64_t raises0 = atomic_load(&nsp__ledger_raises);
    uint64_t lowerings0 = atomic_load(&nsp__ledger_lowerings);
    static const size_t sizes[2] = {GROWN, 16};
    static void *held[NHELD];
    static size_t held_size[NHELD];
    static void *batch[64];
    nspans = 0;
    unsigned span_late = 0, span_late_at = 0;
    int64_t worst_span = 0;
    unsigned nheld = 0, late = 0, late_at = 0, remote_batches = 0, takes = 0, cycles = 0;
    int64_t base = ledger_now(), live = 0, worst = 0;
    for (unsigned step = 0; step < NSTEPS; step++) {
        /* phases of 8000 steps: growing (70% mallocs) then shrinking (30%), so that the live
         * bytes walk across several windows of a span and back */
        uint64_t r = rnd() % 1000, grow = (step / 8000) % 2 == 0 ? 700 : 300;
        if ((r < grow && nheld < NHELD) || nheld == 0) {
            size_t n = sizes[(rnd() & 3) == 0]; /* GROWN 3 times in 4 */
            void *p = malloc(n);
            held[nheld] = p;
            held_size[nheld++] = nsp__classes[nsp__size_to_class(n)].size;
            live += (int64_t)nsp__classes[nsp__size_to_class(n)].size;
            held_in(p, (int64_t)nsp__classes[nsp__size_to_class(n)].size);
        } else if (r < 985) {
            unsigned i = (unsigned)(rnd() % nheld);
            free(held[i]);
            live -= (int64_t)held_size[i];
            held_in(held[i], -(int64_t)held_size[i]);
            held[i] = held[--nheld];
            held_size[i] = held_size[nheld];
        } else if (r < 991) {
            struct remote b = {batch, 0};
            while (b.n < 16 && nheld) {
                unsigned i = (unsigned)(rnd() % nheld);
                batch[b.n++] = held[i];
                live -= (int64_t)held_size[i];
                held_in(held[i], -(int64_t)held_size[i]);
                held[i] = held[--nheld];
                held_size[i] = held_size[nheld];
            }
            pthread_t t;
            pthread_create(&t, NULL, free_remotely, &b);
            pthread_join(t, NULL);
            remote_batches++;
        } else {
            for (unsigned i = 0; i < nsp__ncaches; i++) /* folds the bins, as a cycle's take */
                if (nsp__cache_lock_foreign(&nsp__caches[i])) {
                    nsp__cache_unlock(&nsp__caches[i]);
                    takes++;
                }
        }
        if (step % 16000 == 12000) { /* a cycle: the spans released, stale ones reconciled */
            nsp_pacer_cycle();
            cycles++;
        }
        int64_t lead = ledger_now() - base - live;
        if (lead < 0 && !late++)
            late_at = step;
        worst = lead < worst ? lead : worst;
        for (unsigned i = 0; i < nspans; i++) { /* and each span on its own: others' slack */
            int64_t short_by = spans[i].bytes - atomic_load(&spans[i].s->charge);
            if (short_by > 0 && !span_late++)
                span_late_at = step;
            worst_span = short_by > worst_span ? short_by : worst_span;
        }
    }
    uint64_t raises = atomic_load(&nsp__ledger_raises) - raises0;
    uint64_t lowerings = atomic_load(&nsp__ledger_lowerings) - lowerings0;
    for (unsigned i = 0; i < nheld; i++)
        free(held[i]);
    nsp_pacer_cycle();
    int64_t rest = ledger_now() - base;
    char why[512] = "";
    int valid = nsp_heap_check(why, sizeof why);

    ck_assert_msg(late == 0, "heapLive + pending fell below the bytes held at %u steps (first at "
                  "step %u; worst by %lld B)", late, late_at, (long long)worst);
    ck_assert_msg(span_late == 0, "a span's charge fell below the bytes held in it at %u steps "
                  "(first at step %u; worst by %lld B)", span_late, span_late_at,
                  (long long)worst_span);
    ck_assert_uint_lt(nspans, MAXSPANS);
    ck_assert_uint_gt(remote_batches, 0);
    if (nsp__accounting == NSP_ACCT_OVER) { /* the walk reaches both of the cover's moves */
        ck_assert_uint_gt(raises, 0);
        ck_assert_uint_gt(lowerings, 0);
    }
    ck_assert_uint_gt(cycles, 0);
    ck_assert_int_eq(rest, 0);
    ck_assert_msg(valid == 0, "heap check: %s", why);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("window_edges");
    TCase *exact = tcase_create("exact"), *churn = tcase_create("churn");
    tcase_add_test(exact, exact_charges_a_slot_kept_at_the_end_of_the_cursor_word);
    suite_add_tcase(s, exact);
    TCase *over = tcase_create("over");
    tcase_add_test(over, unspent_stays_within_the_reservation);
    suite_add_tcase(s, over);
    tcase_set_timeout(churn, 60);
    tcase_add_test(churn, never_late_under_churn);
    suite_add_tcase(s, churn);
    return nsp_run_suite(s);
}
