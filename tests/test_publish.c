/*
 * tests/test_publish.c — what one thread publishes and another reads without a lock (the memory
 * ordering audit of host/, for weakly ordered cpus). Mainly: a page map entry publishes the
 * descriptor it names (pageheap.h, "Publication"): a thread that finds the entry, with no other
 * happens-before edge to the thread that wrote the descriptor, reads the descriptor whole. And
 * the pacer's collector, read by a cycle with the argument it was registered with.
 *
 * On x86-64 every case passes whatever the ordering (stores are not reordered with stores, nor
 * loads with loads); the cases are for ThreadSanitizer (tests/sanitize.sh, tsan-units), which
 * treats a relaxed atomic as no synchronisation, as an aarch64 or POWER cpu may: with the
 * entry's store or load weakened to relaxed, TSan reports the descriptor's reads below as races
 * with its set-up, and the case fails. Each case:
 *   - a reader spins, lock-free, on an entry that is NULL (or classless) until a writer's set-up
 *     stores it, then reads the descriptor's fields as its real readers do;
 *   - the writer is this thread, calling the page heap (or the span's set-up) as the allocator
 *     does; the reader takes no lock and the flag that ends its wait is relaxed, so the entry is
 *     the only edge between them.
 * The cases:
 *   - nsp__span_of (every free but the bins', realloc, usable size) against a cut under the lock
 *     (span_map's release);
 *   - nsp__pagemap_entry, as the lock holder's look at a neighbour reads it (state first, then
 *     npages and start_page: free_locked), against the same cut: the reader stands for a holder
 *     racing a cut made without the lock (alloc_busy), whose stores are span_map's too;
 *   - the class bits nsp__span_init_small adds (its release) and the fields set up before them;
 *   - a cycle's read of the collector and its argument (under the pacer's model lock) against
 *     their registration (TSan reports an unlocked read as a race; an x86 build passes either way);
 *   - the slow paths' poll's read of `paced` (an atomic load, unlocked) against its setter;
 *   - a cycle's and nsp_pacer_get's unlocked reads of the memory limit against its setter.
 *
 * Links the static library to reach the page heap. The pages are taken and given back through the
 * page heap itself (no cache, no central); nothing here mallocs while a reader spins.
 */
#define _GNU_SOURCE
#include <check.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "host/pacer.h"
#include "host/pageheap.h"
#include "host/runtime.h"
#include "host/sizeclass.h"
#include "host/span.h"
#include "check_main.h"
#include "numaspan.h"

static void ready(void)
{
    free(malloc(1)); /* initialises the allocator */
    ck_assert_int_eq(atomic_load(&nsp__ready), 1);
}

/* What a reader saw (written by the reader, read after the join). */
struct seen {
    struct nsp_span *s;
    uint32_t state, start_page, nelems, elemsize;
    uint64_t npages;
    uintptr_t base;
};

/* The reader's task: where to look, and the writer's relaxed "done" (no edge: see the header). */
enum how { BY_SPAN_OF, BY_ENTRY, BY_CLASS };
struct look {
    enum how how;
    struct nsp_arena *ar;
    uint32_t page;
    _Atomic int done;
    struct seen got;
};

static struct nsp_span *find(struct look *l)
{
    switch (l->how) {
    case BY_SPAN_OF:
        return nsp__span_of((const void *)(l->ar->base + ((uintptr_t)l->page << NSP_PAGE_SHIFT)));
    case BY_ENTRY:
        return nsp__pagemap_span(nsp__pagemap_entry(l->ar, l->page));
    case BY_CLASS: {
        struct nsp_span *e = nsp__pagemap_entry(l->ar, l->page);
        return ((uintptr_t)e & NSP_PAGEMAP_CLASS_MASK) ? nsp__pagemap_span(e) : NULL;
    }
    }
    return NULL;
}

static void *reader(void *arg)
{
    struct look *l = arg;
    struct nsp_span *s;
    for (;;) {
        int done = atomic_load_explicit(&l->done, memory_order_relaxed);
        if ((s = find(l)) || done)
            break;
    }
    l->got.s = s;
    if (!s)
        return NULL;
    /* the descriptor's fields, plain, as its readers read them: the state first (free_locked) */
    l->got.state = atomic_load_explicit(&s->state, memory_order_relaxed);
    l->got.npages = s->npages;
    l->got.start_page = s->start_page;
    l->got.base = s->base;
    if (l->how == BY_CLASS) {
        l->got.nelems = s->nelems;
        l->got.elemsize = s->elemsize;
    }
    return NULL;
}

static void spawn(pthread_t *t, struct look *l)
{
    ck_assert_int_eq(pthread_create(t, NULL, reader, l), 0);
}

static void finish(pthread_t t, struct look *l)
{
    atomic_store_explicit(&l->done, 1, memory_order_relaxed);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
}

/* Three spans of 4 pages cut one after another on node 0, the middle one given back: a FREE run
 * of exactly 4 pages between two live spans (so it coalesces with neither), at the head of its
 * list, so the next cut of 4 pages takes it. Its interior pages map to NULL (pageheap.h). The
 * spans that were not adjacent (another run served one) are kept out of the way until the end. */
static struct nsp_span *keep[64];
static unsigned nkeep;

static struct nsp_span *hole_of_four(void)
{
    for (int tries = 0; tries < 16; tries++) {
        struct nsp_span *l = nsp__pageheap_alloc(0, 4, 1), *x = nsp__pageheap_alloc(0, 4, 1),
                        *y = nsp__pageheap_alloc(0, 4, 1);
        ck_assert(l && x && y);
        if (x->arena == l->arena && y->arena == x->arena &&
            x->start_page == l->start_page + 4 && y->start_page == x->start_page + 4) {
            keep[nkeep++] = l;
            keep[nkeep++] = y;
            nsp__pageheap_free(x);
            ck_assert(nsp__pagemap_entry(x->arena, x->start_page + 1) == NULL);
            return x;
        }
        keep[nkeep++] = l;
        keep[nkeep++] = x;
        keep[nkeep++] = y;
    }
    ck_abort_msg("no three adjacent spans of 4 pages in 16 tries");
    return NULL;
}

static void give_back(void)
{
    while (nkeep)
        nsp__pageheap_free(keep[--nkeep]);
}

/* A cut publishes the descriptor to whoever finds one of its pages, by `how`. */
static void cut_against(enum how how)
{
    ready();
    struct nsp_span *hole = hole_of_four();
    struct look l = {.how = how, .ar = hole->arena, .page = hole->start_page + 1};
    uint32_t start = hole->start_page;
    pthread_t t;
    spawn(&t, &l);
    struct nsp_span *sp = nsp__pageheap_alloc(0, 4, 1); /* span_place, then span_map */
    finish(t, &l);
    ck_assert_msg(sp == hole, "the cut took another run (%p, not the hole %p)", (void *)sp,
                  (void *)hole);
    ck_assert_msg(l.got.s == sp, "the reader found %p, not the cut %p", (void *)l.got.s, (void *)sp);
    ck_assert_uint_eq(l.got.state, NSP_SPAN_TAKEN);
    ck_assert_uint_eq(l.got.npages, 4);
    ck_assert_uint_eq(l.got.start_page, start);
    ck_assert_uint_eq(l.got.base, sp->arena->base + ((uintptr_t)start << NSP_PAGE_SHIFT));
    nsp__pageheap_free(sp);
    give_back();
}

START_TEST(span_of_reads_the_cut_whole)
{
    cut_against(BY_SPAN_OF);
}
END_TEST

START_TEST(a_neighbour_look_reads_the_cut_whole)
{
    cut_against(BY_ENTRY);
}
END_TEST

/* The small span's set-up publishes its class, and the geometry set up before it, to a reader
 * that finds the class in the entry (nsp__span_init_small's release). */
START_TEST(the_class_entry_publishes_the_set_up)
{
    ready();
    unsigned cls = nsp__size_to_class(1024);
    const struct nsp_sizeclass *k = &nsp__classes[cls];
    struct nsp_span *sp = nsp__pageheap_alloc(0, k->npages, 1);
    ck_assert_ptr_nonnull(sp);
    struct look l = {.how = BY_CLASS, .ar = sp->arena, .page = sp->start_page};
    pthread_t t;
    spawn(&t, &l);
    nsp__span_init_small(sp, cls);
    finish(t, &l);
    ck_assert_msg(l.got.s == sp, "the reader found %p, not the span %p", (void *)l.got.s, (void *)sp);
    ck_assert_uint_eq(l.got.nelems, k->nelems);
    ck_assert_uint_eq(l.got.elemsize, k->size);
    ck_assert_uint_eq(l.got.npages, k->npages);
    nsp__pageheap_free(sp);
}
END_TEST

/* ---- the pacer's collector ------------------------------------------------------------------ */

static _Atomic int collector_calls, collector_wrong, cycler_stop;
static int token;

static void collect(void *arg)
{
    atomic_fetch_add(&collector_calls, 1);
    if (arg != &token)
        atomic_fetch_add(&collector_wrong, 1);
}

static void *cycler(void *unused)
{
    (void)unused;
    while (!atomic_load_explicit(&cycler_stop, memory_order_relaxed))
        nsp_pacer_cycle();
    return NULL;
}

/* A cycle calls the collector registered with its own argument, while the program registers
 * and unregisters it (pacer.c, cycle: both read under the lock they are written under). Unfixed,
 * the cycle read the pair unlocked: TSan reports that read against the registration. */
START_TEST(a_cycle_calls_the_collector_with_its_argument)
{
    ready();
    atomic_store(&collector_calls, 0);
    atomic_store(&collector_wrong, 0);
    atomic_store(&cycler_stop, 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, cycler, NULL), 0);
    for (int i = 0; i < 200; i++) {
        nsp_pacer_set_collector(collect, &token);
        sched_yield();
        nsp_pacer_set_collector(NULL, NULL);
    }
    /* once registered for good, a cycle calls it (no time limit asserted: the cycler loops) */
    nsp_pacer_set_collector(collect, &token);
    int calls0 = atomic_load(&collector_calls);
    while (atomic_load(&collector_calls) == calls0)
        sched_yield();
    atomic_store(&cycler_stop, 1);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    nsp_pacer_set_collector(NULL, NULL);
    ck_assert_int_eq(atomic_load(&collector_wrong), 0);
}
END_TEST

/* The slow paths' poll asks whether the pacer thread is wanted (pacer.c, wants_thread: a limit,
 * a trace or a collector) without the model lock, while a setter rewrites `paced` under it: the
 * poll's read must be an atomic one, as the crossing hooks' is (pacing). Limit 0 keeps the thread
 * unstarted, so every poll reads it. A plain read is a race TSan reports against the setter. */
static _Atomic int poller_stop;

static void *poller(void *unused)
{
    (void)unused;
    while (!atomic_load_explicit(&poller_stop, memory_order_relaxed))
        nsp__pacer_poll();
    return NULL;
}

START_TEST(the_poll_reads_paced_as_the_setter_writes_it)
{
    ready();
    atomic_store(&poller_stop, 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, poller, NULL), 0);
    for (int i = 0; i < 2000; i++) {
        ck_assert_int_eq(nsp_pacer_set_memory_limit(0), 0);
        if (i % 64 == 0)
            sched_yield();
    }
    atomic_store(&poller_stop, 1);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
}
END_TEST

/* The memory limit, which nsp_pacer_set_memory_limit writes under the model lock, is read without
 * it by a cycle (pacer.c, cycle: whether to count what numaspan holds outside the heap) and by
 * nsp_pacer_get (between its two locked reads). Both must read it as the setter writes it (atomic,
 * as `paced` is): a plain read is a race TSan reports against the setter. A reader thread runs
 * cycles and reads the pacer's state while this one rewrites the limit (0: no thread started). */
static _Atomic int getter_stop;

static void *cycle_and_get(void *unused)
{
    (void)unused;
    nsp_pacer_info_t info;
    while (!atomic_load_explicit(&getter_stop, memory_order_relaxed)) {
        nsp_pacer_cycle();
        ck_assert_int_eq(nsp_pacer_get(&info), 0);
        ck_assert_int_ge(info.memory_limit, 0);
    }
    return NULL;
}

START_TEST(cycles_and_readers_read_the_limit_as_the_setter_writes_it)
{
    ready();
    atomic_store(&getter_stop, 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, cycle_and_get, NULL), 0);
    for (int i = 0; i < 2000; i++) {
        ck_assert_int_eq(nsp_pacer_set_memory_limit(0), 0);
        if (i % 16 == 0)
            sched_yield();
    }
    atomic_store(&getter_stop, 1);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("publish");
    TCase *tc = tcase_create("pagemap");
    /* a bound for a hang, not Check's 4 s default: cases with threads on other cpus ran
     * past it beside a loaded ctest -j2 (test_bins' remote free, in its pthread_join) */
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, span_of_reads_the_cut_whole);
    tcase_add_test(tc, a_neighbour_look_reads_the_cut_whole);
    tcase_add_test(tc, the_class_entry_publishes_the_set_up);
    suite_add_tcase(s, tc);
    TCase *tp = tcase_create("pacer");
    tcase_set_timeout(tp, 30);
    tcase_add_test(tp, a_cycle_calls_the_collector_with_its_argument);
    tcase_add_test(tp, the_poll_reads_paced_as_the_setter_writes_it);
    tcase_add_test(tp, cycles_and_readers_read_the_limit_as_the_setter_writes_it);
    suite_add_tcase(s, tp);
    return nsp_run_suite(s);
}
