/*
 * tests/test_transfer.c — the node's transfer (host/transfer.h): what a thread whose core's
 * cache is busy takes from, without the central's mutex.
 *
 * Deterministic, one thread: nsp__central_alloc_busy is called directly (as malloc's slow path
 * calls it when the cache's lock is held), so the transfer's state is known at every step:
 *   - one call moves a batch: the object returned and the rest waiting in a slot, all distinct,
 *     all allocated from their spans' view (so no owner hands them out meanwhile);
 *   - a second free of an object waiting in the transfer (its alloc bit is set) is reported and
 *     leaves no freed bit (freeing it would hand it out twice), also by the locked local free
 *     of a cache that holds its span, and by a bin holding its span after a give-back set its
 *     freed bit;
 *   - a cycle gives the batch back: slots empty, the objects free in their spans, and the ledger
 *     (heapLive + pending) back to what it was plus the one object still live;
 *   - a link overwritten while it waits is reported when the chain is taken, never followed,
 *     and the object that held it is not handed out;
 *   - nor is it touched by a cycle's give-back (written into, or freed while a bin may list it);
 *   - a second free of a waiting object into a bin holding its span is refused by the push (the
 *     transfer's tag) and reported; a live object that merely looks tagged is freed, unreported;
 *   - realloc of a waiting object is refused as a freed pointer's, not handed back as it was;
 *   - 8-byte objects (one word: no room for tag and link) have no transfer.
 *
 * Calls nsp_malloc/nsp_free by name: under a sanitizer the process's malloc is the sanitizer's,
 * and these tests are about numaspan's.
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "host/alloc.h"
#include "host/central.h"
#include "host/ledger.h"
#include "host/magazine.h"
#include "host/pageheap.h"
#include "host/runtime.h"
#include "host/span.h"
#include "host/transfer.h"
#include "check_main.h"
#include "ledger_now.h"
#include "numaspan.h"

#define SZ 96

static unsigned cls;

static uint64_t errors(enum nsp_error_kind k)
{
    return atomic_load(&nsp__errors[k]);
}

static struct nsp_transfer *front(void)
{
    return &nsp__central(0, cls)->front;
}

/* Objects waiting in the transfer, following the links (each checked by nsp__transfer_next). */
static unsigned waiting(uintptr_t *out, unsigned max)
{
    unsigned n = 0;
    for (unsigned i = 0; i < NSP_TRANSFER_SLOTS; i++)
        for (uintptr_t p = atomic_load(&front()->slot[i].v); p && n < max;
             p = nsp__transfer_next(p, cls))
            out[n++] = p;
    return n;
}

/* A busy cache's miss (one object, p, returned), which leaves a batch of the class waiting:
 * its objects into w, at least `least` of them; their number into *n when asked. */
static void *busy_batch(uintptr_t *w, unsigned least, unsigned *n)
{
    void *p = nsp__central_alloc_busy(0, cls);
    unsigned got = waiting(w, NSP_TRANSFER_BATCH_MAX);
    ck_assert_uint_ge(got, least);
    if (n)
        *n = got;
    return p;
}

static void setup(void)
{
    nsp_free(nsp_malloc(1)); /* initialised */
    nsp__on_error = NSP_ON_ERROR_WARN;
    cls = nsp__size_to_class(SZ);
    nsp_pacer_cycle(); /* every transfer empty, the ledger settled */
}

/* setup(); 0 (the test skipped) where no transfer batches: exact and NSP_SECURE take one object. */
static int setup_transfer(const char *name)
{
    setup();
    if (nsp__accounting == NSP_ACCT_EXACT || nsp__secure) {
        fprintf(stderr, "%s: skipped: no transfer (exact and NSP_SECURE take one object)\n", name);
        return 0;
    }
    return 1;
}

START_TEST(one_call_moves_a_batch)
{
    if (!setup_transfer("one_call_moves_a_batch"))
        return;
    uintptr_t w[NSP_TRANSFER_BATCH_MAX + 1];
    ck_assert_uint_eq(waiting(w, NSP_TRANSFER_BATCH_MAX), 0);
    void *p = nsp__central_alloc_busy(0, cls);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(nsp__transfer_lists(p), 0); /* the program's object */
    unsigned n = waiting(w, NSP_TRANSFER_BATCH_MAX + 1);
    ck_assert_uint_eq(n, nsp__transfer_batch(cls) - 1);
    w[n] = (uintptr_t)p;
    for (unsigned i = 0; i <= n; i++) {
        struct nsp_span *s = nsp__span_of((void *)w[i]);
        ck_assert_ptr_nonnull(s);
        ck_assert_uint_eq(s->sizeclass, cls);
        ck_assert_int_eq(nsp__span_slot_live(s, nsp__span_index(s, w[i])), 1);
        for (unsigned j = 0; j < i; j++)
            ck_assert_msg(w[i] != w[j], "%p twice in one batch", (void *)w[i]);
    }
    /* the next call takes from the batch: no new one */
    void *q = nsp__central_alloc_busy(0, cls);
    ck_assert_uint_eq(waiting(w, NSP_TRANSFER_BATCH_MAX), nsp__transfer_batch(cls) - 2);
    nsp_free(q);
    nsp_free(p);
}
END_TEST

START_TEST(double_free_of_a_waiting_object_is_caught)
{
    if (!setup_transfer("double_free_of_a_waiting_object_is_caught"))
        return;
    uintptr_t w[NSP_TRANSFER_BATCH_MAX];
    void *p = busy_batch(w, 2, NULL);
    uintptr_t x = w[1]; /* a dangling pointer to an object freed before the batch took it */
    struct nsp_span *s = nsp__span_of((void *)x);
    uint32_t idx = nsp__span_index(s, x);
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE);
    nsp_free((void *)x);
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before + 1);
    ck_assert_uint_eq((atomic_load(&s->freed_bits[idx >> 6]) >> (idx & 63)) & 1, 0);
    ck_assert_int_eq(nsp__span_slot_live(s, idx), 1); /* still the transfer's */
    nsp_free(p);
}
END_TEST

/* The same through the locked local free (caches without bins, or a bin that misses): an object
 * waiting in the transfer whose span the thread's own cache now holds. Before, the span's local
 * free cleared its alloc bit without a word: the cache handed it out, and so did the transfer. */
START_TEST(a_locked_local_double_free_of_a_waiting_object_is_caught)
{
    if (!setup_transfer("a_locked_local_double_free_of_a_waiting_object_is_caught"))
        return;
    uintptr_t w[NSP_TRANSFER_BATCH_MAX];
    void *p = busy_batch(w, 2, NULL);
    uintptr_t x = w[1];
    struct nsp_span *s = nsp__span_of((void *)x);
    uint32_t idx = nsp__span_index(s, x);
    void *q = nsp_malloc(SZ); /* the cache's refill: the batch's span, partial, is the one */
    if (atomic_load(&s->state) != NSP_SPAN_CACHED || nsp__span_of(q) != s) {
        fprintf(stderr, "a_locked_local_double_free_of_a_waiting_object_is_caught: skipped: the "
                        "cache did not take the batch's span\n");
        nsp_free(q);
        nsp_free(p);
        return;
    }
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE);
    nsp__free_small(s, idx, (void *)x); /* the locked path, as a bin's miss reaches it */
    uint64_t after = errors(NSP_ERR_DOUBLE_FREE);
    int still = nsp__span_slot_live(s, idx);
    nsp_free(q);
    nsp_free(p);
    ck_assert_uint_eq(after, before + 1);
    ck_assert_int_eq(still, 1); /* still the transfer's: nobody else hands it out */
}
END_TEST

/* A batch given back (nsp__central_drain, as a cycle's or a trim's first step) to a span the
 * thread's bin holds: the objects' freed bits wait there for the span's release. A second free of
 * one meanwhile must not be pushed: the bins' push reads no freed bitmap (host/cache.h), only the
 * object's first word, which the give-back tags as a remote free's (magazine.h). Pushed, the
 * object would be listed, handed out again, and then freed live by the sweep. */
START_TEST(a_bin_refuses_an_object_given_back_and_freed_again)
{
    const char *name = "a_bin_refuses_an_object_given_back_and_freed_again";
    if (!setup_transfer(name))
        return;
    uintptr_t w[NSP_TRANSFER_BATCH_MAX];
    void *p = busy_batch(w, 2, NULL);
    uintptr_t x = w[1];
    struct nsp_span *s = nsp__span_of((void *)x);
    uint32_t idx = nsp__span_index(s, x);
    void *q = nsp_malloc(SZ); /* the bin's refill: the batch's span, partial, is the one */
    struct nsp_cache *tb = nsp__tb;
    if (!tb || atomic_load(&tb->bins[cls].key) == 0 || tb->bins[cls].base != s->base) {
        fprintf(stderr, "%s: skipped: no bin holds the batch's span\n", name);
        nsp_free(q);
        nsp_free(p);
        return;
    }
    nsp__central_drain(0); /* x's freed bit set, waiting for the span's release */
    uint64_t freed = (atomic_load(&s->freed_bits[idx >> 6]) >> (idx & 63)) & 1;
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE);
    nsp_free((void *)x);
    uint64_t after = errors(NSP_ERR_DOUBLE_FREE);
    /* x must not be listed: the bin would hand it out while its freed bit waits */
    int listed = 0;
    uint64_t key = atomic_load(&tb->bins[cls].key);
    uintptr_t head = (uintptr_t)(tb->bins[cls].word >> 16);
    for (unsigned i = 0; head && key && i < 4096; i++) {
        listed |= head == x;
        uint64_t next = *(uint64_t *)head ^ key;
        head = next - s->base < tb->bins[cls].size ? (uintptr_t)next : 0;
    }
    nsp_free(q);
    nsp_free(p);
    ck_assert_uint_eq(freed, 1);
    ck_assert_uint_eq(after, before + 1);
    ck_assert_int_eq(listed, 0);
}
END_TEST

/* The bins' push (host/cache.h) of a second free of an object waiting in the transfer, by the
 * thread whose bin holds its span (issue 11). Its alloc bit is set, so the push took it: listed
 * in the bin and waiting in the batch, it would be handed out twice, and nothing was reported.
 * The push must miss (the transfer's tag, transfer.h) and the slow path report it, naming it,
 * leaving it the transfer's and out of the bin. */
START_TEST(a_bin_refuses_a_second_free_of_a_waiting_object)
{
    const char *name = "a_bin_refuses_a_second_free_of_a_waiting_object";
    if (!setup_transfer(name))
        return;
    uintptr_t w[NSP_TRANSFER_BATCH_MAX];
    unsigned n;
    void *p = busy_batch(w, 2, &n);
    uintptr_t x = w[1];
    struct nsp_span *s = nsp__span_of((void *)x);
    uint32_t idx = nsp__span_index(s, x);
    void *q = nsp_malloc(SZ); /* the bin's refill: the batch's span, partial, is the one */
    struct nsp_cache *tb = nsp__tb;
    if (!tb || atomic_load(&tb->bins[cls].key) == 0 || tb->bins[cls].base != s->base) {
        fprintf(stderr, "%s: skipped: no bin holds the batch's span\n", name);
        nsp_free(q);
        nsp_free(p);
        return;
    }
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE);
    nsp_free((void *)x);
    uint64_t after = errors(NSP_ERR_DOUBLE_FREE);
    int listed = 0;
    uint64_t key = atomic_load(&tb->bins[cls].key);
    uintptr_t head = (uintptr_t)(tb->bins[cls].word >> 16);
    for (unsigned i = 0; head && key && i < 4096; i++) {
        listed |= head == x;
        uint64_t next = *(uint64_t *)head ^ key;
        head = next - s->base < tb->bins[cls].size ? (uintptr_t)next : 0;
    }
    int live = nsp__span_slot_live(s, idx);
    unsigned still = waiting(w, NSP_TRANSFER_BATCH_MAX);
    int in_batch = 0;
    for (unsigned i = 0; i < still; i++)
        in_batch |= w[i] == x;
    nsp_free(q);
    nsp_free(p);
    ck_assert_uint_eq(after, before + 1);
    ck_assert_int_eq(listed, 0); /* the bin would hand it out, and so would the transfer */
    ck_assert_int_eq(live, 1);
    ck_assert_uint_eq(still, n); /* the batch untouched by the search that proved it */
    ck_assert_int_eq(in_batch, 1);
}
END_TEST

/* The transfer's tag is a hint: a live object whose first word the program set to that value
 * (it cannot know the key; a test can) is freed without a report, since the slow path finds it
 * in no chain (nsp__transfer_holds). */
START_TEST(a_live_object_that_looks_tagged_is_freed_without_a_report)
{
    if (!setup_transfer("a_live_object_that_looks_tagged_is_freed_without_a_report"))
        return;
    void *p = nsp__central_alloc_busy(0, cls); /* a batch waits: there is something to search */
    void *q = nsp_malloc(SZ);
    struct nsp_span *s = nsp__span_of(q);
    uint32_t idx = nsp__span_index(s, (uintptr_t)q);
    *(uint64_t *)q = nsp__magazine_tag(q, NSP_MAG_TRANSFER);
    int looks = nsp__transfer_lists(q);
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE), lists = errors(NSP_ERR_FREE_LIST);
    nsp_free(q);
    uint64_t after = errors(NSP_ERR_DOUBLE_FREE), lists_after = errors(NSP_ERR_FREE_LIST);
    nsp_pacer_cycle(); /* every free applied, whichever path took it */
    int live = nsp__span_slot_live(s, idx);
    nsp_free(p);
    ck_assert_int_eq(looks, 1);
    ck_assert_uint_eq(after, before);
    ck_assert_uint_eq(lists_after, lists);
    ck_assert_int_eq(live, 0); /* freed */
}
END_TEST

/* A waiting object holds its tag and its link: two words, so 8-byte objects have no transfer. */
START_TEST(the_smallest_class_has_no_transfer)
{
    if (!setup_transfer("the_smallest_class_has_no_transfer"))
        return;
    unsigned k = nsp__size_to_class(8);
    ck_assert_uint_lt(nsp__classes[k].size, NSP_TRANSFER_MIN_SIZE);
    void *p = nsp__central_alloc_busy(0, k);
    ck_assert_ptr_nonnull(p);
    for (unsigned i = 0; i < NSP_TRANSFER_SLOTS; i++)
        ck_assert_uint_eq(atomic_load(&nsp__central(0, k)->front.slot[i].v), 0);
    nsp_free(p);
}
END_TEST

/* realloc of a dangling pointer to an object waiting in the transfer, to a size of its class:
 * its bits say allocated, so realloc returned it as it was, and the program then wrote into an
 * object the transfer hands out later (an alias). It must be reported as a freed pointer's
 * realloc: NULL with EINVAL, the object left waiting. */
START_TEST(realloc_of_a_waiting_object_is_refused)
{
    if (!setup_transfer("realloc_of_a_waiting_object_is_refused"))
        return;
    uintptr_t w[NSP_TRANSFER_BATCH_MAX];
    unsigned n;
    void *p = busy_batch(w, 2, &n);
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE);
    errno = 0;
    void *r = nsp_realloc((void *)w[1], SZ - 1);
    int e = errno;
    uint64_t after = errors(NSP_ERR_DOUBLE_FREE);
    unsigned still = waiting(w, NSP_TRANSFER_BATCH_MAX);
    nsp_free(p);
    ck_assert_ptr_null(r);
    ck_assert_int_eq(e, EINVAL);
    ck_assert_uint_eq(after, before + 1);
    ck_assert_uint_eq(still, n);
}
END_TEST

START_TEST(a_cycle_gives_the_batch_back)
{
    setup();
    /* Check's successful asserts allocate (a cache's refill is charged whole): every value is
     * read first, asserted at the end */
    int64_t before = ledger_now();
    void *p = nsp__central_alloc_busy(0, cls);
    uintptr_t w[NSP_TRANSFER_BATCH_MAX + 1];
    unsigned n = waiting(w, NSP_TRANSFER_BATCH_MAX);
    nsp_pacer_cycle();
    int64_t after = ledger_now();
    unsigned left = waiting(w + n, 1), live = 0;
    for (unsigned i = 0; i < n; i++) {
        struct nsp_span *s = nsp__span_of((void *)w[i]);
        live += (unsigned)nsp__span_slot_live(s, nsp__span_index(s, w[i]));
    }
    int64_t elem = p ? (int64_t)nsp__span_of(p)->elemsize : 0;
    nsp_free(p);
    nsp_pacer_cycle();
    int64_t end = ledger_now();
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(left, 0);
    ck_assert_uint_eq(live, 0); /* each waiting object free in its span again */
    /* what is left charged: the one live object (its span is the central's, uncached) */
    ck_assert_int_eq(after, before + elem);
    ck_assert_int_eq(end, before);
}
END_TEST

START_TEST(an_overwritten_link_is_reported_not_followed)
{
    if (!setup_transfer("an_overwritten_link_is_reported_not_followed"))
        return;
    uintptr_t w[NSP_TRANSFER_BATCH_MAX];
    unsigned n;
    void *p = busy_batch(w, 3, &n);
    *(uint64_t *)w[1] = 0x4141414141414141ULL; /* a write after free into a waiting object */
    uint64_t before = errors(NSP_ERR_FREE_LIST);
    void *a = nsp__central_alloc_busy(0, cls); /* w[0]: its link leads to w[1], which is fine */
    /* w[1]: its link is garbage. It was written while it waited (by the program, or by a bin's
     * push of a second free): it is not handed out, nor is what follows it; a new batch comes */
    void *b = nsp__central_alloc_busy(0, cls);
    void *c = nsp__central_alloc_busy(0, cls);
    ck_assert_ptr_eq(a, (void *)w[0]);
    ck_assert_uint_eq(errors(NSP_ERR_FREE_LIST), before + 1);
    for (unsigned i = 1; i < n; i++) {
        ck_assert_ptr_ne(b, (void *)w[i]);
        ck_assert_ptr_ne(c, (void *)w[i]);
    }
    nsp_free(a);
    nsp_free(b);
    nsp_free(c);
    nsp_free(p);
}
END_TEST

/* A cycle gives the batches back (nsp__transfer_take_all, then each object freed remotely). An
 * object whose link was overwritten while it waited may be in a bin by now (a second free pushed
 * it there, writing its bin link): the cycle must neither write into it nor free it, nor what
 * follows it (leaked, never handed out twice). */
START_TEST(a_cycle_leaves_an_overwritten_object_alone)
{
    if (!setup_transfer("a_cycle_leaves_an_overwritten_object_alone"))
        return;
    uintptr_t w[NSP_TRANSFER_BATCH_MAX];
    unsigned n;
    void *p = busy_batch(w, 3, &n);
    const uint64_t junk = 0x4141414141414141ULL;
    *(uint64_t *)w[1] = junk; /* a write after free (or a bin's link) into a waiting object */
    uint64_t before = errors(NSP_ERR_FREE_LIST);
    nsp_pacer_cycle(); /* takes every chain out and gives it back */
    uint64_t word = *(volatile uint64_t *)w[1];
    unsigned freed_after = 0;
    for (unsigned i = 1; i < n; i++) {
        struct nsp_span *s = nsp__span_of((void *)w[i]);
        freed_after += (unsigned)!nsp__span_slot_live(s, nsp__span_index(s, w[i]));
    }
    struct nsp_span *s0 = nsp__span_of((void *)w[0]);
    int first_live = nsp__span_slot_live(s0, nsp__span_index(s0, w[0]));
    ck_assert_uint_ge(errors(NSP_ERR_FREE_LIST), before + 1);
    ck_assert_msg(word == junk, "the cycle wrote %#llx into the overwritten object",
                  (unsigned long long)word);
    ck_assert_uint_eq(freed_after, 0); /* it and its followers stay allocated: leaked */
    ck_assert_int_eq(first_live, 0);    /* the object before it went back as before */
    nsp_free(p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("transfer");
    TCase *tc = tcase_create("transfer");
    /* a bound for a hang, not Check's 4 s default: cases with threads on other cpus ran
     * past it beside a loaded ctest -j2 (test_bins' remote free, in its pthread_join) */
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, one_call_moves_a_batch);
    tcase_add_test(tc, double_free_of_a_waiting_object_is_caught);
    tcase_add_test(tc, a_locked_local_double_free_of_a_waiting_object_is_caught);
    tcase_add_test(tc, a_bin_refuses_an_object_given_back_and_freed_again);
    tcase_add_test(tc, a_bin_refuses_a_second_free_of_a_waiting_object);
    tcase_add_test(tc, a_live_object_that_looks_tagged_is_freed_without_a_report);
    tcase_add_test(tc, the_smallest_class_has_no_transfer);
    tcase_add_test(tc, realloc_of_a_waiting_object_is_refused);
    tcase_add_test(tc, a_cycle_gives_the_batch_back);
    tcase_add_test(tc, an_overwritten_link_is_reported_not_followed);
    tcase_add_test(tc, a_cycle_leaves_an_overwritten_object_alone);
    suite_add_tcase(s, tc);
    return nsp_run_suite(s);
}
