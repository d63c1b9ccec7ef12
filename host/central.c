/*
 * host/central.c — node centrals (see central.h for what it owns).
 *
 * The FULL protocol, the one place where a free could be stranded: a span is made FULL by
 * pushing it on the full list and then storing state = FULL, then reading `dirty`; a remote freer
 * sets its freed bit and `dirty`, then reads state. Both pairs are sequentially consistent, so at
 * least one side sees the other: the owner finds it dirty, or the freer finds it FULL. Either
 * CASes FULL -> PARTIAL, and only the winner moves the span to the partial list (under the lock).
 * (seq_cst on both sides is the weakest that works: a release store and an acquire load may pass
 * each other on any cpu, x86 too; span.h says why the freer's OR must be acq_rel as well.)
 *
 * Publication without the mutex (weakly ordered cpus): a span pushed pending (push_pending, a
 * release CAS) is read whole by the drain's acquire exchange; a woken FULL span is announced by
 * its CAS and wakes_pending, both seq_cst, and its freed bits by the freer's OR (span.h). A
 * cached span's `cache` is stored before its release store of CACHED; free.c reads both relaxed
 * as a hint, re-checked under the cache's lock.
 *
 * Memory that comes back. Remote frees only set bits, so a span whose objects were all freed
 * stays in its central, charged and holding its pages, until something sweeps it: a refill, a
 * trim, or, for the frees that came while a cache held it, its listing when the cache gives it
 * back (list_owned). Before a
 * node's page heap grows (a new arena), nsp__central_pages sweeps that node's uncached spans and
 * gives the empty ones back (Go's mheap reclaim): memory freed by one size class is reused by any
 * other, and by large objects, before the OS is asked for more. A span goes back only with its
 * charge settled (swept, nsp__ledger_sweep: 0 for an empty span), out of its list, under its
 * central's lock: the central owns it until the page heap does (DESIGN.md §3, §5).
 * reclaim_epoch[node] counts events that can leave a span empty in a central (a remote free
 * waking a FULL span, a cache giving one back); a reclaim with no new event since the last is
 * skipped, so that a node at its page limit, whose every refill spills, does not sweep each time.
 *
 * Objects without a cache. A thread whose core's cache is busy (its lock held by a thread that
 * may be preempted) used to take one object per call under the mutex, with a sweep and a ledger
 * change each time: at 8 threads on 2 cpus a third of Larson's time went there, and the mutex's
 * queue made the cache holders' own refills wait, which made more caches busy. Now such a call
 * takes an object from the node's transfer (transfer.h) without the mutex; an empty transfer is
 * filled with a batch under one hold of the mutex.
 */
#include "central.h"

#include <string.h>

#include "ledger.h"
#include "magazine.h"
#include "os.h"
#include "pacer.h"
#include "pageheap.h"
#include "runtime.h"
#include "span.h"
#include "transfer.h"

struct nsp_central *nsp__centrals;
static _Atomic uint64_t reclaim_epoch[NSP_MAX_NODES], reclaimed_epoch[NSP_MAX_NODES];
_Atomic uint64_t nsp__central_busy_skips;

/* A central's counter (central.h): atomic, since a pusher bumps it without the mutex. */
#define CADD(field, n) __atomic_fetch_add(&(field), (n), __ATOMIC_RELAXED)

static void epoch_bump(unsigned node)
{
    atomic_fetch_add_explicit(&reclaim_epoch[node], 1, memory_order_relaxed);
}

int nsp__central_init(unsigned nnodes)
{
    size_t len = (size_t)nnodes * NSP_NUM_CLASSES * sizeof(struct nsp_central);
    len = (len + 4095) & ~(size_t)4095;
    nsp__centrals = nsp__os_map(len, 4096);
    if (!nsp__centrals)
        return -1;
    nsp__transfer_init();
    /* The mapping is zero-filled: where that is an initialised mutex (glibc's and musl's
     * PTHREAD_MUTEX_INITIALIZER), the centrals are ready as mapped, and the pages of the classes
     * a node never uses stay unbacked (a central a class: 37 KiB a node, most of it untouched by
     * a program of a few sizes). Elsewhere each mutex is initialised. */
    static const pthread_mutex_t initializer = PTHREAD_MUTEX_INITIALIZER;
    static const pthread_mutex_t zero;
    int zero_is_init = memcmp(&initializer, &zero, sizeof zero) == 0;
    for (unsigned n = 0; n < nnodes; n++) {
        for (unsigned k = 0; k < NSP_NUM_CLASSES && !zero_is_init; k++)
            pthread_mutex_init(&nsp__central(n, k)->lock, NULL);
        /* centrals of a node live on that node (recorded only on a synthetic topology) */
        nsp_topo_bind_memory(nsp__topo, nsp__central(n, 0),
                             NSP_NUM_CLASSES * sizeof(struct nsp_central), n);
    }
    return 0;
}

/* ---- lists (central lock held) ---------------------------------------------------------------- */

/* Pushes s on list `which`: at the head, or with at_tail at the partial list's tail (a span a
 * refill parks: cache_span). */
static void list_push_at(struct nsp_central *c, struct nsp_span *s, unsigned which, int at_tail)
{
    s->list = which;
    if (which == NSP_LIST_FULL)
        c->nfull++;
    else
        c->npartial++;
    if (at_tail && which == NSP_LIST_PARTIAL) {
        s->next = NULL;
        s->prev = c->partial_tail;
        if (c->partial_tail)
            c->partial_tail->next = s;
        else
            c->partial = s;
        c->partial_tail = s;
        return;
    }
    struct nsp_span **head = which == NSP_LIST_FULL ? &c->full : &c->partial;
    s->prev = NULL;
    s->next = *head;
    if (*head)
        (*head)->prev = s;
    else if (which == NSP_LIST_PARTIAL)
        c->partial_tail = s;
    *head = s;
}

static void list_push(struct nsp_central *c, struct nsp_span *s, unsigned which)
{
    list_push_at(c, s, which, 0);
}

static void list_remove(struct nsp_central *c, struct nsp_span *s)
{
    struct nsp_span **head = s->list == NSP_LIST_FULL ? &c->full : &c->partial;
    if (s->prev)
        s->prev->next = s->next;
    else
        *head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else if (s->list == NSP_LIST_PARTIAL)
        c->partial_tail = s->prev;
    if (s->list == NSP_LIST_FULL)
        c->nfull--;
    else
        c->npartial--;
    s->next = s->prev = NULL;
    s->list = NSP_LIST_NONE;
}

static void make_partial(struct nsp_central *c, struct nsp_span *s)
{
    atomic_store_explicit(&s->state, NSP_SPAN_PARTIAL, memory_order_relaxed);
    list_push(c, s, NSP_LIST_PARTIAL);
}

/* The FULL protocol of the file header. */
static void make_full(struct nsp_central *c, struct nsp_span *s)
{
    list_push(c, s, NSP_LIST_FULL);
    atomic_store(&s->state, NSP_SPAN_FULL);
    if (atomic_load(&s->dirty)) {
        uint32_t full = NSP_SPAN_FULL;
        if (atomic_compare_exchange_strong(&s->state, &full, NSP_SPAN_PARTIAL)) {
            list_remove(c, s);
            list_push(c, s, NSP_LIST_PARTIAL);
        }
    }
}

/* n more (or fewer) allocated slots in the spans c owns (central.h: stats read it unlocked). An
 * atomic add: a release pushed pending and a span taken behind a stuck hold count it without
 * the mutex. */
static void count_objects(struct nsp_central *c, int64_t n)
{
    __atomic_fetch_add(&c->objects, (uint64_t)n, __ATOMIC_RELAXED);
}

/* ---- what waits for the mutex (central.h: nobody waits for a preempted holder) ---------------- */

static void push_pending(struct nsp_central *c, struct nsp_span *s)
{
    struct nsp_span *old = atomic_load_explicit(&c->pending, memory_order_relaxed);
    do
        s->next = old;
    while (!atomic_compare_exchange_weak_explicit(&c->pending, &old, s, memory_order_release,
                                                  memory_order_relaxed));
}

/* Slots of s that its owner's last hand-out kept back (span.h: a free slot found written over,
 * nsp__span_untagged at a hand-out, nsp__span_keep_held before an empty span's pages go) are
 * allocations from then on, and are booked as the central's own hand-outs are: its objects and
 * direct allocations (the stats' mallocs), the ledger's totals and s's charge (`exact`: each
 * object; else what the caller's sweep of s charges, locked or not). Those slots are s's nmalloc,
 * which is 0 otherwise while the central owns s (a cache's release flushed it). Else the stats
 * and heapLive stay short of them for as long as the span lives. Returns how many. */
static uint32_t book_kept(struct nsp_central *c, struct nsp_span *s)
{
    uint32_t kept = s->nmalloc;
    if (__builtin_expect(!kept, 1))
        return 0;
    count_objects(c, kept);
    CADD(c->direct_allocs, kept);
    nsp__ledger_flush_counts(s);
    if (nsp__accounting == NSP_ACCT_EXACT)
        nsp__ledger_exact_objects(s, (int64_t)kept, NULL);
    return kept;
}

/* Whether empty span s may give its pages back: no slot of it is held by the program though its
 * bitmap says free (span.h, nsp__span_keep_held); those kept are booked (book_kept). */
static int vacant(struct nsp_central *c, struct nsp_span *s)
{
    if (!nsp__span_keep_held(s))
        return 1;
    book_kept(c, s);
    nsp__ledger_sweep(s, NULL);
    return 0;
}

static void sweep_owned(struct nsp_central *c, struct nsp_span *s);

/* Lists a span the central owns and no list holds (mutex held), swept first: an empty one goes
 * back to the page heap when the central has others to give; else PARTIAL if it has or may have
 * free slots, else FULL (its protocol: a free racing it is not stranded).
 * Why swept here: a span a cache gives back carries the remote frees that came while it was
 * cached (a collector's frees during a cycle that found its cache busy, whose owner releases it
 * stale afterwards), and its release charges them as allocated (ledger.h). Left for the next
 * trim or refill, they stayed in heapLive and in the pacer's live reading until the next cycle:
 * with spans of 256 KiB, which hold most of a small heap, `bench pacer`'s live error at 2
 * caches and 1 MiB live rose from 1.6% to 12.8% (the median run's worst cycle); swept here,
 * 0.1%. A clean span costs one load (sweep_owned reads `dirty` first). */
static void list_owned(struct nsp_central *c, struct nsp_span *s)
{
    sweep_owned(c, s);
    if (s->alloc_count == 0 && !atomic_load(&s->dirty) && c->npartial > 0 && vacant(c, s)) {
        CADD(c->spans_returned, 1);
        nsp__pageheap_free(s); /* never waits (pageheap.h) */
        return;
    }
    if (s->alloc_count < s->nelems || atomic_load(&s->dirty))
        make_partial(c, s);
    else
        make_full(c, s);
}

/* Mutex held: lists the pending spans, and moves to the partial list the FULL spans a remote
 * free woke (state PARTIAL, still in the full list) while the mutex was held. */
static void drain(struct nsp_central *c)
{
    if (atomic_load_explicit(&c->wakes_pending, memory_order_relaxed) &&
        atomic_exchange(&c->wakes_pending, 0)) {
        struct nsp_span *s = c->full, *next;
        for (; s; s = next) {
            next = s->next;
            if (atomic_load(&s->state) != NSP_SPAN_FULL) {
                list_remove(c, s);
                list_push(c, s, NSP_LIST_PARTIAL);
            }
        }
    }
    if (!atomic_load_explicit(&c->pending, memory_order_relaxed))
        return;
    struct nsp_span *s = atomic_exchange_explicit(&c->pending, NULL, memory_order_acquire);
    while (s) {
        struct nsp_span *next = s->next;
        s->next = NULL;
        list_owned(c, s);
        s = next;
    }
}

static void central_lock(struct nsp_central *c)
{
    nsp__hold_lock_always(&c->lock, &c->hold);
    drain(c);
}

/* The mutex unless its holder is stuck (hold.h): a holder that runs is waited for, as always; a
 * hold another waiter already waited NSP_HOLD_WAIT_NS for is not waited for again, and the
 * caller goes elsewhere (central.h). 0 when taken (and drained). */
static int central_trylock(struct nsp_central *c)
{
    if (nsp__hold_lock(&c->lock, &c->hold) != 0)
        return -1;
    drain(c);
    return 0;
}

/* Unlocks; what was pushed meanwhile is listed now if nobody else holds the mutex (else that
 * holder lists it at its own unlock). */
static void central_unlock(struct nsp_central *c)
{
    for (;;) {
        nsp__hold_unlock(&c->lock, &c->hold);
        if (!atomic_load(&c->pending) && !atomic_load(&c->wakes_pending))
            return;
        if (nsp__hold_trylock(&c->lock, &c->hold) != 0)
            return;
        drain(c);
    }
}

void nsp__central_lock(struct nsp_central *c)
{
    central_lock(c);
}

void nsp__central_unlock(struct nsp_central *c)
{
    central_unlock(c);
}

/* A span of c's with free slots taken off its pending stack, without the mutex, or NULL: what a
 * refill, a batch or a direct object uses before it carves a new span for a stuck hold. The
 * whole stack is taken at once (an exchange: its spans are ours, no ABA) and all but the one
 * taken pushed back, then listed if the mutex is free by now. Without it, 64 threads on 2 cpus
 * (test_host_stress 64), whose holders are often off their cpu for longer than NSP_HOLD_WAIT_NS,
 * carved a new span for nearly every refill behind a stuck hold while the spans released
 * meanwhile waited: 3,000 fresh arenas and 2.6 GB of RSS against 250 MB. A span taken here is
 * not swept (its owner sweeps it in place, as a cache does when its span runs out). */
static struct nsp_span *pending_with_room(struct nsp_central *c)
{
    if (!atomic_load_explicit(&c->pending, memory_order_relaxed))
        return NULL;
    struct nsp_span *s = atomic_exchange_explicit(&c->pending, NULL, memory_order_acquire);
    struct nsp_span *got = NULL;
    int back = 0;
    while (s) {
        struct nsp_span *next = s->next;
        if (!got && s->alloc_count < s->nelems) {
            s->next = NULL;
            got = s;
        } else {
            push_pending(c, s);
            back = 1;
        }
        s = next;
    }
    if (back && nsp__hold_trylock(&c->lock, &c->hold) == 0) {
        drain(c);
        central_unlock(c);
    }
    return got;
}

/* Sweeps a span the central owns, reporting double frees the sweep found. */
static void sweep_owned(struct nsp_central *c, struct nsp_span *s)
{
    if (!atomic_load(&s->dirty))
        return;
    uint32_t doubles;
    uintptr_t first;
    uint32_t applied = nsp__span_sweep(s, &doubles, &first);
    CADD(c->swept_objects, applied);
    CADD(c->sweeps, 1);
    count_objects(c, -(int64_t)applied);
    nsp__ledger_count(s, -(int64_t)applied);
    nsp__ledger_sweep(s, NULL);
    if (doubles) {
        nsp__ledger_sweep_doubles(s, doubles, NULL);
        atomic_fetch_add(&nsp__errors[NSP_ERR_DOUBLE_FREE], doubles - 1);
        nsp__report_error(NSP_ERR_DOUBLE_FREE, "free", (void *)first);
    }
}

static void take(struct nsp_span *s, unsigned cache)
{
    __atomic_store_n(&s->cache, cache, __ATOMIC_RELAXED); /* nsp_free reads it unlocked */
    nsp__span_rewind(s);
    atomic_store_explicit(&s->state, NSP_SPAN_CACHED, memory_order_release);
}

struct nsp_span *nsp__central_pages(unsigned node, size_t npages, size_t align_pages)
{
    /* the pacer sends this node's refills away (pacer.h, nsp__pacer_spilling) */
    if (atomic_load_explicit(&nsp__pacer_spilling, memory_order_relaxed) >> node & 1)
        return nsp__pageheap_alloc_near(node, npages, align_pages);
    struct nsp_span *s = nsp__pageheap_alloc_free(node, npages, align_pages);
    if (s)
        return s;
    uint64_t e = atomic_load_explicit(&reclaim_epoch[node], memory_order_relaxed);
    if (atomic_exchange_explicit(&reclaimed_epoch[node], e, memory_order_relaxed) != e &&
        nsp__central_trim(node) && (s = nsp__pageheap_alloc_free(node, npages, align_pages)))
        return s;
    return nsp__pageheap_alloc_near(node, npages, align_pages);
}

/* A new span of class cls carved from node's page heap (or a near one). */
static struct nsp_span *new_span(unsigned node, unsigned cls)
{
    struct nsp_span *s = nsp__central_pages(node, nsp__classes[cls].npages, 1);
    if (!s)
        return NULL;
    nsp__span_init_small(s, cls);
    return s;
}

/* The next partial span, taken out of its list and swept (central lock held), or NULL. */
static struct nsp_span *pop_swept(struct nsp_central *c)
{
    struct nsp_span *s = c->partial;
    if (s) {
        list_remove(c, s);
        atomic_store_explicit(&s->state, NSP_SPAN_SWEEPING, memory_order_relaxed);
        sweep_owned(c, s);
    }
    return s;
}

/* A refill passes over a span with fewer free slots than thin() (after its sweep) while the list
 * has others, at most NSP_REFILL_PARK_MAX of them, parking each at the list's tail. The list is a
 * stack: what comes back last (a span a cache gave back full with a free or two pending, one that
 * a single remote free woke) is on top, and a cache that took it ran it out after a few objects
 * and came back. Measured (Larson on 2 cpus, refills per 1000 mallocs): 14 at 8 threads and 57
 * at 32 taking the top; 6 and 14 parking. Every span passed over is swept, as a taken one is, so
 * no free waits longer in the ledger than before (a queue instead, which left spans unswept while
 * they waited, took the node pacing test's heapLive out of its 5% band). */
#define NSP_REFILL_PARK_MAX 4
static uint32_t thin(const struct nsp_span *s)
{
    return s->nelems / 8 > 1 ? s->nelems / 8 : 1;
}

static struct nsp_span *cache_span(unsigned node, unsigned cls, unsigned cache, int wait)
{
    struct nsp_central *c = nsp__central(node, cls);
    /* never wait holding a cache (central.h); without one, the mutex unless its hold is stuck
     * (hold.h), and then a span released meanwhile or a new one */
    struct nsp_span *s;
    if ((wait ? central_trylock(c) : nsp__hold_trylock(&c->lock, &c->hold)) == 0) {
        unsigned parked = 0;
        while ((s = pop_swept(c))) {
            uint32_t room = s->nelems - s->alloc_count;
            if (room && (room >= thin(s) || parked >= NSP_REFILL_PARK_MAX || !c->npartial)) {
                CADD(c->refills, 1);
                count_objects(c, -(int64_t)s->alloc_count); /* the cache's now */
                take(s, cache);
                central_unlock(c);
                return s;
            }
            if (room) { /* thin: parked at the tail, swept, for a refill that finds nothing better */
                atomic_store_explicit(&s->state, NSP_SPAN_PARTIAL, memory_order_relaxed);
                list_push_at(c, s, NSP_LIST_PARTIAL, 1);
                parked++;
                continue;
            }
            make_full(c, s); /* may come straight back to partial if freed meanwhile */
        }
        central_unlock(c);
    } else if (!wait) {
        return NULL;
    }

    if ((s = pending_with_room(c))) { /* stuck: what was released meanwhile first */
        CADD(c->refills, 1);
        count_objects(c, -(int64_t)s->alloc_count); /* the cache's now */
        take(s, cache);
        return s;
    }
    /* a new span is in no list: no mutex to take it */
    if (!(s = new_span(node, cls)))
        return NULL;
    c = nsp__central(s->node, cls); /* a spilled span belongs to the node that gave it */
    CADD(c->spans_new, 1);
    CADD(c->refills, 1);
    take(s, cache);
    return s;
}

struct nsp_span *nsp__central_cache_span(unsigned node, unsigned cls, unsigned cache)
{
    return cache_span(node, cls, cache, 0);
}

struct nsp_span *nsp__central_cache_span_unheld(unsigned node, unsigned cls, unsigned cache)
{
    return cache_span(node, cls, cache, 1);
}

void nsp__central_uncache_span(struct nsp_span *s, uint32_t mallocs)
{
    struct nsp_central *c = nsp__central(s->node, s->sizeclass);
    epoch_bump(s->node);
    CADD(c->releases, 1);
    CADD(c->cached_mallocs, mallocs);
    count_objects(c, s->alloc_count); /* 0 if its pages go back below */
    if (nsp__hold_trylock(&c->lock, &c->hold) != 0) {
        /* held: pushed for the holder to list (still CACHED, by a cache that no longer has it:
         * a free of its objects goes the remote way meanwhile, as during a refill's window) */
        push_pending(c, s);
        if (nsp__hold_trylock(&c->lock, &c->hold) != 0)
            return;
        drain(c); /* the holder went meanwhile: listed here */
    } else {
        drain(c);
        if (s->alloc_count == 0 && !atomic_load(&s->dirty) && c->npartial > 0 && vacant(c, s)) {
            /* empty, and the central has other spans to give: the pages go back, after the
             * unlock (the page heap's work, a scavenge even, is not done holding the central) */
            CADD(c->spans_returned, 1);
            central_unlock(c);
            nsp__pageheap_free(s);
            return;
        }
        list_owned(c, s);
    }
    central_unlock(c);
}

void nsp__central_wake(struct nsp_span *s)
{
    uint32_t full = NSP_SPAN_FULL;
    if (!atomic_compare_exchange_strong(&s->state, &full, NSP_SPAN_PARTIAL))
        return; /* another freer, or the owner, got there first */
    struct nsp_central *c = nsp__central(s->node, s->sizeclass);
    epoch_bump(s->node);
    CADD(c->wakes, 1);
    if (nsp__hold_lock(&c->lock, &c->hold) != 0) {
        /* stuck: the holder moves it (state PARTIAL in the full list: drain). Only then: that
         * drain walks the whole full list, too much for every busy mutex under Larson's remote
         * frees */
        atomic_store(&c->wakes_pending, 1);
        if (nsp__hold_trylock(&c->lock, &c->hold) != 0)
            return;
    }
    drain(c);
    if (s->list == NSP_LIST_FULL) {
        list_remove(c, s);
        list_push(c, s, NSP_LIST_PARTIAL);
    }
    central_unlock(c);
}

/* One object from a span the central owns; the span goes back to the right list. */
static void *alloc_from(struct nsp_central *c, struct nsp_span *s)
{
    void *p = nsp__span_next_free(s);
    if (!p) {
        nsp__span_rewind(s);
        p = nsp__span_next_free(s);
    }
    if (book_kept(c, s) && !p)
        nsp__ledger_sweep(s, NULL);
    if (p) { /* uncached: charged by its allocated slots (exact: by this object) */
        count_objects(c, 1);
        nsp__ledger_count(s, 1);
        if (nsp__accounting == NSP_ACCT_EXACT)
            nsp__ledger_exact_objects(s, 1, NULL);
        else
            nsp__ledger_sweep(s, NULL);
    }
    if (p && s->alloc_count < s->nelems)
        make_partial(c, s);
    else
        make_full(c, s);
    return p;
}

/* Up to `want` of span s's free objects into out, rewinding its cursor once when it runs out
 * (the caller owns s: the mutex held, or s in no list). */
static unsigned next_free_objects(struct nsp_span *s, void **out, unsigned want)
{
    unsigned n = 0;
    while (n < want) {
        void *p = nsp__span_next_free(s);
        if (!p) {
            nsp__span_rewind(s);
            if (!(p = nsp__span_next_free(s)))
                break;
        }
        out[n++] = p;
    }
    return n;
}

/* Up to `want` objects from a span s of c's that its caller owns without the mutex (in no list:
 * a new one, still TAKEN, or one taken off the pending stack; no validator reads it meanwhile),
 * charged as take_from charges them but under the node's ledger lock, since no central's covers
 * s; then s is listed (made PARTIAL or FULL), now if the mutex is free, else by its next holder
 * (central.h). `fresh`: s is a new span (counted). */
static unsigned take_owned(struct nsp_central *c, struct nsp_span *s, void **out, unsigned want,
                           int fresh)
{
    unsigned n = next_free_objects(s, out, want);
    if (fresh)
        CADD(c->spans_new, 1);
    if (book_kept(c, s) && !n)
        nsp__ledger_sweep_unlocked(s);
    if (n) {
        count_objects(c, n);
        nsp__ledger_count(s, n);
        if (nsp__accounting == NSP_ACCT_EXACT)
            nsp__ledger_exact_objects(s, n, NULL);
        else
            nsp__ledger_sweep_unlocked(s);
        CADD(c->direct_allocs, n);
    }
    if (nsp__hold_trylock(&c->lock, &c->hold) != 0) {
        push_pending(c, s);
        if (nsp__hold_trylock(&c->lock, &c->hold) != 0)
            return n;
        drain(c);
    } else {
        drain(c);
        list_owned(c, s);
    }
    central_unlock(c);
    return n;
}

/* A new span of class cls for node (TAKEN), and in *c the central it will belong to, or NULL. */
static struct nsp_span *new_owned(unsigned node, unsigned cls, struct nsp_central **c)
{
    struct nsp_span *s = new_span(node, cls);
    if (s)
        *c = nsp__central(s->node, cls); /* a spilled span belongs to the node that gave it */
    return s;
}

/* One object at a time under the mutex: what the reservation budget's refusals and
 * nsp_malloc_node get (an object charged as it is handed out, nothing held beside it, so the
 * ledger at rest is live + the caches' unspent bytes), and what the `exact` ledger (each object
 * charged as it is handed out) and NSP_SECURE (its own slot order and poison checks) keep for
 * busy caches too. Behind a stuck hold, from a span released meanwhile or a new one.
 */
static void *alloc_one(unsigned node, unsigned cls)
{
    struct nsp_central *c = nsp__central(node, cls);
    struct nsp_span *s;
    if (central_trylock(c) == 0) { /* else stuck: around it, below (central.h) */
        while ((s = pop_swept(c))) {
            void *p = alloc_from(c, s);
            if (p) {
                CADD(c->direct_allocs, 1);
                central_unlock(c);
                return p;
            }
        }
        central_unlock(c);
    }
    void *p;
    if ((s = pending_with_room(c))) /* stuck: what was released meanwhile first */
        return take_owned(c, s, &p, 1, 0) ? p : NULL;
    if (!(s = new_owned(node, cls, &c)))
        return NULL;
    return take_owned(c, s, &p, 1, 1) ? p : NULL;
}

/* Up to `want` objects from span s, which the central owns (lock held): charged as alloc_from
 * charges one, once for all of them; the span goes back to the right list. */
static unsigned take_from(struct nsp_central *c, struct nsp_span *s, void **out, unsigned want)
{
    unsigned n = next_free_objects(s, out, want);
    if (book_kept(c, s) && !n)
        nsp__ledger_sweep(s, NULL);
    if (n) {
        count_objects(c, n);
        nsp__ledger_count(s, n);
        nsp__ledger_sweep(s, NULL);
        CADD(c->direct_allocs, n);
    }
    if (s->alloc_count < s->nelems)
        make_partial(c, s);
    else
        make_full(c, s);
    return n;
}

/* A batch for the transfer: from the central's partial spans, else from a new span. */
static unsigned fill(unsigned node, unsigned cls, void **out, unsigned want)
{
    struct nsp_central *c = nsp__central(node, cls);
    unsigned n = 0;
    struct nsp_span *s;
    if (central_trylock(c) == 0) { /* else stuck: around it, below (central.h) */
        while (n < want && (s = pop_swept(c)))
            n += take_from(c, s, out + n, want - n);
        central_unlock(c);
    }
    if (n)
        return n;
    if ((s = pending_with_room(c))) /* stuck: what was released meanwhile first */
        return take_owned(c, s, out, want, 0);
    if (!(s = new_owned(node, cls, &c)))
        return n;
    return take_owned(c, s, out, want, 1);
}

/* Objects of a chain no transfer took back go to their spans as remote frees (no lock held). */
static void give_back_chain(uintptr_t p, unsigned cls)
{
    while (p) {
        uintptr_t next;
        /* p's link overwritten while it waited: p may be in a bin now, so neither p nor what
         * follows is written or freed (leaked, not handed out twice; transfer.h) */
        if (nsp__transfer_follow(p, cls, &next) != 0)
            return;
        /* a remote free's tag (magazine.h): it must not look listed when handed out again some
         * day, and the bins' push must refuse it while its freed bit waits for a sweep */
        *(uint64_t *)p = nsp__magazine_tag((void *)p, NSP_MAG_NONE);
        struct nsp_span *s = nsp__span_of((void *)p);
        if (nsp__span_free_remote(s, nsp__span_index(s, p)) > 0)
            nsp__central_wake(s);
        p = next;
    }
}

void *nsp__central_alloc(unsigned node, unsigned cls)
{
    return alloc_one(node, cls);
}

void *nsp__central_alloc_busy(unsigned node, unsigned cls)
{
    if (nsp__accounting == NSP_ACCT_EXACT || nsp__secure ||
        nsp__classes[cls].size < NSP_TRANSFER_MIN_SIZE) /* a waiting object's two words */
        return alloc_one(node, cls);
    struct nsp_central *c = nsp__central(node, cls);
    uintptr_t spill;
    void *p = nsp__transfer_take(&c->front, cls, &spill);
    if (!p) {
        void *objs[NSP_TRANSFER_BATCH_MAX];
        unsigned n = fill(node, cls, objs, nsp__transfer_batch(cls));
        if (!n)
            return NULL;
        p = objs[0];
        if (n > 1 && nsp__transfer_put(&c->front, objs + 1, n - 1) != 0)
            spill = (uintptr_t)objs[1]; /* every slot filled meanwhile: linked, given back */
    }
    if (spill)
        give_back_chain(spill, cls);
    return p;
}

/* Gives an empty span the central owns back to the page heap, if it is empty and settled:
 * swept, its charge reconciled (0), no free pending. Central lock held. Returns its bytes or 0. */
static size_t give_back_empty(struct nsp_central *c, struct nsp_span *s)
{
    nsp__ledger_sweep(s, NULL); /* a span that had nothing to sweep is reconciled too */
    if (s->alloc_count != 0 || atomic_load(&s->dirty) || !vacant(c, s))
        return 0;
    list_remove(c, s);
    CADD(c->spans_returned, 1);
    size_t bytes = (size_t)s->npages << NSP_PAGE_SHIFT;
    nsp__pageheap_free(s);
    return bytes;
}

void nsp__central_drain(unsigned node)
{
    for (unsigned k = 1; k < NSP_NUM_CLASSES; k++)
        give_back_chain(nsp__transfer_take_all(&nsp__central(node, k)->front, k), k);
}

size_t nsp__central_trim(unsigned node)
{
    size_t bytes = 0;
    for (unsigned k = 1; k < NSP_NUM_CLASSES; k++) {
        struct nsp_central *c = nsp__central(node, k);
        /* the transfer's batches first: freed bits the sweep below applies (a span a cache
         * holds has them applied at its release: hence nsp__central_drain before the caches) */
        give_back_chain(nsp__transfer_take_all(&c->front, k), k);
        if (central_trylock(c) != 0) { /* stuck: best effort, the next trim gets it */
            atomic_fetch_add_explicit(&nsp__central_busy_skips, 1, memory_order_relaxed);
            continue;
        }
        struct nsp_span *s = c->partial, *next;
        for (; s; s = next) {
            next = s->next;
            sweep_owned(c, s);
            bytes += give_back_empty(c, s);
        }
        /* FULL spans with frees pending: swept here; the first of us and their freer to CAS
         * FULL -> PARTIAL moves them */
        for (s = c->full; s; s = next) {
            next = s->next;
            if (!atomic_load(&s->dirty))
                continue;
            sweep_owned(c, s);
            uint32_t full = NSP_SPAN_FULL;
            if (s->alloc_count < s->nelems &&
                atomic_compare_exchange_strong(&s->state, &full, NSP_SPAN_PARTIAL)) {
                list_remove(c, s);
                list_push(c, s, NSP_LIST_PARTIAL);
                bytes += give_back_empty(c, s);
            }
        }
        central_unlock(c);
    }
    return bytes;
}
