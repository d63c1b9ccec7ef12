/*
 * tests/test_window_edges.c — edges of the windowed charge (host/ledger.h, the cover) that its
 * own test (test_ledger_window.c) does not walk: what the hand-outs it changed do to the other
 * modes.
 *
 *   - `exact`: a slot the cursor's hand-out keeps back (written over while free: span.h,
 *     nsp__span_untagged) is an allocation like any other and is charged as one, also when the
 *     locked fast path found it at the end of its cursor's word, where the hand-out now ends
 *     empty-handed (it no longer scans on: span.c) and the malloc goes on to the slow path.
 *
 * Each case builds its span from a size class nothing else in the process uses, on one core of
 * a synthetic machine (CTest), so that the slots it names are the ones it took. Reads are taken
 * first and asserted afterwards: Check's successful asserts allocate.
 */
#define _GNU_SOURCE
#include <check.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "host/cache.h"
#include "host/ledger.h"
#include "host/pageheap.h"
#include "host/runtime.h"
#include "host/span.h"
#include "check_main.h"
#include "numaspan.h"

#define SZ 700 /* the 704 B class: 93 slots a span, two bitmap words; unused by Check */

/* `exact`: the locked fast path meets a slot written over while free as the last free slot of
 * its cursor's word. The hand-out keeps the slot (allocated, reported) and, with no other in the
 * word, gives nothing: the malloc goes on to the slow path. The kept slot must still be charged:
 * an uncharged one leaves the span's charge an object under its allocated slots for as long as
 * the span lives (`exact` then under the truth, and the books off at rest). */
START_TEST(exact_charges_a_slot_kept_at_the_end_of_the_cursor_word)
{
    free(malloc(1));
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

int main(void)
{
    Suite *s = suite_create("window_edges");
    TCase *exact = tcase_create("exact");
    tcase_add_test(exact, exact_charges_a_slot_kept_at_the_end_of_the_cursor_word);
    suite_add_tcase(s, exact);
    return nsp_run_suite(s);
}
