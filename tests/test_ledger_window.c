/*
 * tests/test_ledger_window.c — `over` charges a cached span a window at a time (host/ledger.h,
 * the table's refill and cover rows; host/sizeclass.h, the window), so that spans grown past
 * their window (NSP_SMALL_SPAN: the classes up to 1 KiB) do not grow the pacer's overestimate.
 *
 * CTest runs it with NSP_SMALL_SPAN=256K (the spans grown, whatever the default is), on a
 * synthetic machine (virtual cores: the locked path, whose cursor hands out a bitmap word without
 * coming back to the ledger) and on the real one (the bins where rseq works: a carve lists a few
 * KiB at a time). What it holds the ledger to, one span at a time, against what the test itself
 * allocated (the exact ledger's value, known here without running `exact`):
 *   - a refill of a grown class charges at most a window, not the span;
 *   - at every malloc heapLive + pending is at least the bytes allocated: a hand-out past the
 *     charge raises it first (the cover), so `over` is never below `exact`, and the raises happen;
 *   - a charge that local frees left more than a window ahead comes down at the next cover;
 *   - the release reconciles to the allocated bytes, exactly;
 *   - a class whose span did not grow is charged its whole span at every step, as before;
 *   - a cache's held_bytes count a window per span (the reservation the pacer's budget bounds);
 *   - the class table keeps every span within its 16-bit carve frontier and its bitmaps.
 * Reads are taken first and asserted afterwards: Check's successful asserts allocate.
 */
#define _GNU_SOURCE
#include <check.h>
#include <malloc.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/cache.h"
#include "host/ledger.h"
#include "host/pageheap.h"
#include "host/runtime.h"
#include "host/sizeclass.h"
#include "host/span.h"
#include "check_main.h"
#include "ledger_now.h"
#include "numaspan.h"

#define GROWN 100    /* class 112 B: 256 KiB spans, 64 KiB window */
#define WHOLE 2000   /* class 2048 B: a span of one window (did not grow) */
#define MAXOBJ 8192

static void *obj[MAXOBJ];

/* The thread on one cpu (real machine) or one core (synthetic), so that its cache stays one. */
static void settle(void)
{
    free(malloc(1));
    if (nsp__virtual) {
        nsp_thread_bind_core(0);
    } else {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(sched_getcpu(), &one);
        sched_setaffinity(0, sizeof one, &one);
    }
    nsp_pacer_cycle(); /* every cache released: heapLive is exact from here */
}

static int64_t span_bytes(const struct nsp_span *s)
{
    return (int64_t)s->npages << NSP_PAGE_SHIFT;
}

START_TEST(class_table_fits_its_spans)
{
    free(malloc(1));
    for (unsigned k = 1; k < NSP_NUM_CLASSES; k++) {
        const struct nsp_sizeclass *c = &nsp__classes[k];
        ck_assert_uint_le(c->nelems, UINT16_MAX);            /* the carve frontier */
        ck_assert_uint_le(c->nelems, c->npages * (NSP_PAGE_SIZE / 8)); /* the bitmaps */
        ck_assert_uint_le(c->window_pages, c->npages);
        ck_assert_uint_ge(c->window_pages, 8);
        if (c->size <= NSP_BIG_SPAN_MAX_SIZE)
            ck_assert_msg(c->npages >= 32, "class %u B: a span of %u pages with "
                          "NSP_SMALL_SPAN=256K", c->size, c->npages);
        else
            ck_assert_uint_eq(c->window_pages, c->npages); /* larger classes did not grow */
        /* the window is the span the class had: at least 32 objects (16 above 16 KiB) */
        ck_assert_uint_ge((size_t)c->window_pages * NSP_PAGE_SIZE / c->size,
                          c->size > 16384 ? 16 : 32);
    }
}
END_TEST

/* A grown class: the refill charges one window at most, then every malloc leaves heapLive at or
 * above what was allocated, through raises; a cycle reconciles exactly. */
START_TEST(grown_span_is_charged_a_window_at_a_time)
{
    if (nsp__accounting != NSP_ACCT_OVER) {
        fprintf(stderr, "grown_span_is_charged_a_window_at_a_time: skipped: a rule of over\n");
        return;
    }
    settle();
    int64_t base = ledger_now();
    uint64_t raises0 = atomic_load(&nsp__ledger_raises);
    uint64_t lowered0 = atomic_load(&nsp__ledger_lowerings);
    obj[0] = malloc(GROWN);
    uint64_t lowered = atomic_load(&nsp__ledger_lowerings) - lowered0; /* the refill's own */
    fprintf(stderr, "grown_span_is_charged_a_window_at_a_time: the %s path\n",
            nsp__tb ? "bins'" : "locked");
    struct nsp_span *s = nsp__span_of(obj[0]);
    int64_t e = s->elemsize, window = (int64_t)nsp__class_window_bytes(s->sizeclass);
    /* read now: after the frees and the cycle below, s's descriptor may describe the free run its
     * pages joined (the whole arena, when nothing else of the process lives there) */
    int64_t sbytes = span_bytes(s);
    int64_t refill_charge = atomic_load(&s->charge), after_refill = ledger_now() - base;
    int64_t covered_at_refill = nsp__ledger_covered(s);
    struct nsp_cache *c = &nsp__caches[s->cache];
    size_t held = c->held_bytes;
    /* past three windows of this span, and into the next span */
    unsigned n = (unsigned)(sbytes / e) + 64, late = 0, late_at = 0;
    int64_t worst = INT64_MAX;
    int64_t full_charge = 0; /* s's charge at its last object, before its release */
    for (unsigned i = 1; i < n && i < MAXOBJ; i++) {
        obj[i] = malloc(GROWN);
        if (nsp__span_of(obj[i]) == s)
            full_charge = atomic_load(&s->charge);
        int64_t lead = ledger_now() - base - (int64_t)(i + 1) * e;
        if (lead < 0 && !late++)
            late_at = i;
        worst = lead < worst ? lead : worst;
    }
    uint64_t raises = atomic_load(&nsp__ledger_raises) - raises0;
    nsp_pacer_cycle(); /* released: charged their allocated bytes */
    int64_t settled = ledger_now() - base;
    for (unsigned i = 0; i < n && i < MAXOBJ; i++)
        free(obj[i]);
    nsp_pacer_cycle();
    int64_t back = ledger_now() - base;

    ck_assert_int_lt(window, sbytes); /* the span grew past its window */
    ck_assert_int_ge(refill_charge, covered_at_refill);
    ck_assert_int_le(refill_charge, window); /* a fresh span: at most a window, not the span */
    ck_assert_int_eq(after_refill, refill_charge);
    ck_assert_uint_eq(lowered, 0); /* charged so by the refill, not lowered to it after */
    ck_assert_msg(late == 0, "heapLive + pending fell below the allocated bytes at %u mallocs "
                  "(first at malloc %u; worst by %lld B)", late, late_at, (long long)worst);
    ck_assert_uint_ge(raises, (uint64_t)(sbytes / window)); /* raised window by window */
    ck_assert_int_eq(full_charge, sbytes); /* a full span: whole, tail waste included */
    ck_assert_int_eq(settled, (int64_t)n * e); /* the release reconciles, exactly */
    ck_assert_int_eq(back, 0);
    ck_assert_uint_ge(held, (size_t)window); /* held_bytes count the window, not the span */
}
END_TEST

/* A charge that local frees left more than a window ahead is lowered at the next cover, and
 * never below what the cache can hand out. */
START_TEST(charge_comes_down_after_local_frees)
{
    if (nsp__accounting != NSP_ACCT_OVER) {
        fprintf(stderr, "charge_comes_down_after_local_frees: skipped: a rule of over\n");
        return;
    }
    settle();
    obj[0] = malloc(GROWN);
    struct nsp_span *s = nsp__span_of(obj[0]);
    int64_t e = s->elemsize, window = (int64_t)nsp__class_window_bytes(s->sizeclass);
    unsigned n = (unsigned)(3 * window / e); /* three windows of this span allocated */
    for (unsigned i = 1; i < n; i++)
        obj[i] = malloc(GROWN);
    int64_t high = atomic_load(&s->charge);
    uint64_t lowered0 = atomic_load(&nsp__ledger_lowerings);
    for (unsigned i = 0; i + 64 < n; i++) { /* all but the last 64: local frees */
        free(obj[i]);
        obj[i] = NULL;
    }
    /* a bins cache lists its local frees, allocated from the span's view until a fold gives
     * them back (host/cache.h): a foreign take folds them, and the bin's next miss covers */
    struct nsp_cache *c = &nsp__caches[s->cache];
    if (c->bins_on && nsp__cache_lock_foreign(c))
        nsp__cache_unlock(c);
    /* mallocs until the cursor's word runs out and the slow path covers again */
    unsigned extra = 0, same = 1;
    for (; extra < 256; extra++) {
        obj[n + extra] = malloc(GROWN);
        same &= nsp__span_of(obj[n + extra]) == s;
        if (atomic_load(&nsp__ledger_lowerings) != lowered0)
            break;
    }
    int64_t low = atomic_load(&s->charge), covered = nsp__ledger_covered(s);
    int cached = nsp__caches[s->cache].spans[s->sizeclass] == s;
    char why[512];
    int valid = nsp_heap_check(why, sizeof why); /* over's validator: charge >= covered */
    for (unsigned i = 0; i <= n + extra && i < MAXOBJ; i++)
        free(obj[i]);

    ck_assert_int_eq(cached, 1);
    ck_assert_int_eq(same, 1);
    ck_assert_int_ge(high, 3 * window);
    ck_assert_uint_gt(atomic_load(&nsp__ledger_lowerings), lowered0);
    ck_assert_int_ge(low, covered);
    ck_assert_int_le(low, covered + window);
    ck_assert_int_lt(low, high);
    ck_assert_msg(valid == 0, "heap check: %s", why);
}
END_TEST

/* A class whose span is one window: charged its whole span at refill and at every malloc after,
 * exactly as the seed's rule (and this code before spans grew) charged it. */
START_TEST(span_of_one_window_is_charged_whole)
{
    if (nsp__accounting != NSP_ACCT_OVER) {
        fprintf(stderr, "span_of_one_window_is_charged_whole: skipped: a rule of over\n");
        return;
    }
    settle();
    int64_t base = ledger_now();
    uint64_t raises0 = atomic_load(&nsp__ledger_raises);
    obj[0] = malloc(WHOLE);
    struct nsp_span *s = nsp__span_of(obj[0]);
    int64_t whole = span_bytes(s), first = atomic_load(&s->charge), jump = ledger_now() - base;
    unsigned n = s->nelems, changed = 0;
    for (unsigned i = 1; i < n; i++) {
        obj[i] = malloc(WHOLE);
        changed += atomic_load(&s->charge) != whole;
    }
    uint64_t raises = atomic_load(&nsp__ledger_raises) - raises0;
    unsigned window = nsp__classes[s->sizeclass].window_pages;
    for (unsigned i = 0; i < n; i++)
        free(obj[i]);
    ck_assert_uint_eq(window, s->npages);
    ck_assert_int_eq(first, whole);
    ck_assert_int_eq(jump, whole);
    ck_assert_uint_eq(changed, 0);
    ck_assert_uint_eq(raises, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ledger_window");
    TCase *tc = tcase_create("window");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, class_table_fits_its_spans);
    tcase_add_test(tc, grown_span_is_charged_a_window_at_a_time);
    tcase_add_test(tc, charge_comes_down_after_local_frees);
    tcase_add_test(tc, span_of_one_window_is_charged_whole);
    suite_add_tcase(s, tc);
    return nsp_run_suite(s);
}
