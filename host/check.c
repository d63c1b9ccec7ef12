/*
 * host/check.c — the validators of each layer, the stats' counters against a walk of every span,
 * and the ledger's recount (see check.h for what each checks, the locks each needs, and the debug
 * levels).
 *
 * This file sits above the span, page heap, central, cache and ledger layers and reads their
 * structures; none of them calls it. Whole-heap checks take the locks in the heap's order
 * (caches, centrals, page heaps, as fork and stats do), so with every lock held nothing but a
 * remote free (one atomic OR on a freed bitmap, which no check reads) changes what they read.
 */
#include "check.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "central.h"
#include "ledger.h"
#include "options.h"
#include "pageheap.h"
#include "runtime.h"
#include "secure.h"
#include "sizeclass.h"
#include "span.h"

int nsp__debug;

/* Writes the failure into why and returns 0, so that a check reads `return fail(...)`. */
__attribute__((format(printf, 3, 4))) static int fail(char *why, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (len)
        vsnprintf(why, len, fmt, ap);
    va_end(ap);
    return 0;
}

/* ---- span --------------------------------------------------------------------------------------- */

static const char *const state_name[] = {"FREE", "CACHED", "PARTIAL", "FULL", "SWEEPING",
                                         "LARGE", "TAKEN"};

static const char *state_of(uint32_t st)
{
    return st < sizeof state_name / sizeof state_name[0] ? state_name[st] : "unknown";
}

/* Every page of a live span maps to it (pageheap.h): with its size class when it is a small
 * span, plain when it is large, and the class map's byte says the same class (the bins' free
 * reads the class from there, alloc.h); a TAKEN span's set-up may be writing its class
 * meanwhile. */
static int pages_map_to(const struct nsp_span *s, char *why, size_t len)
{
    const struct nsp_arena *ar = s->arena;
    if (ar->huge)
        return ar->spans == s ? 1 : fail(why, len, "span %p: not the span of its huge arena", (void *)s);
    uint32_t st = atomic_load_explicit(&s->state, memory_order_relaxed);
    /* (a TAKEN span's class is being written by its set-up, holding no lock: not read) */
    uintptr_t cls = st == NSP_SPAN_LARGE || st == NSP_SPAN_TAKEN ? 0 : s->sizeclass;
    for (uint64_t p = s->start_page; p < s->start_page + s->npages; p++) {
        if (st == NSP_SPAN_TAKEN ? nsp__pagemap_span(nsp__pagemap_entry(ar, p)) != s
                                 : (uintptr_t)nsp__pagemap_entry(ar, p) != ((uintptr_t)s | cls))
            return fail(why, len, "span %p (%s, pages %u..%llu): page %llu maps to %p, not to it "
                        "(with its class)",
                        (void *)s, state_of(atomic_load(&s->state)), s->start_page,
                        (unsigned long long)(s->start_page + s->npages - 1), (unsigned long long)p,
                        (void *)nsp__pagemap_entry(ar, p));
        unsigned byte = __atomic_load_n(&ar->classmap[p], __ATOMIC_RELAXED);
        if (st != NSP_SPAN_TAKEN && byte != cls)
            return fail(why, len, "span %p (%s, class %u): page %llu's class byte is %u, not %u",
                        (void *)s, state_of(st), s->sizeclass, (unsigned long long)p, byte,
                        (unsigned)cls);
    }
    return 1;
}

/* The carve frontier and the free tag (span.h, types.h), which the bins' push relies on instead of
 * the alloc bit: no slot at or past the frontier was handed out (its alloc bit clear), and every
 * free slot below it holds a tag in its first word. A slot that fails was written while free (a
 * test's stray write), or freed by a path that forgot its tag. Nothing writes a free slot while
 * its span's owner is held, so its first word is read plainly. */
static int free_slots_tagged(const struct nsp_span *s, uint32_t st, char *why, size_t len)
{
    if (s->frontier > s->nelems)
        return fail(why, len, "span %p (%s, class %u): frontier %u past its %u slots", (void *)s,
                    state_of(st), s->sizeclass, s->frontier, s->nelems);
    for (uint32_t i = 0; i < s->nelems; i++) {
        int allocated = (__atomic_load_n(&s->alloc_bits[i >> 6], __ATOMIC_RELAXED) >> (i & 63)) & 1;
        const void *p = (const void *)(s->base + (uintptr_t)i * s->elemsize);
        if (i >= s->frontier && allocated)
            return fail(why, len, "span %p (%s, class %u): slot %u (%p) is allocated, but its "
                        "frontier is %u: it was handed out without moving the frontier",
                        (void *)s, state_of(st), s->sizeclass, i, p, s->frontier);
        if (i < s->frontier && !allocated && nsp__magazine_tagged(p) < 0)
            return fail(why, len, "span %p (%s, class %u): slot %u (%p) is free below the "
                        "frontier %u, but its first word %#llx is no free tag",
                        (void *)s, state_of(st), s->sizeclass, i, p, s->frontier,
                        (unsigned long long)*(const uint64_t *)p);
    }
    return 1;
}

int nsp__span_is_valid(const struct nsp_span *s, char *why, size_t len)
{
    /* acquire: a large object's holder sets its fields, then publishes LARGE (release) without
     * any lock a check holds */
    uint32_t st = atomic_load_explicit(&s->state, memory_order_acquire);
    const struct nsp_arena *ar = s->arena;
    if (st > NSP_SPAN_TAKEN)
        return fail(why, len, "span %p: state %u is no state", (void *)s, st);
    if (st == NSP_SPAN_FREE)
        return 1; /* a page run: the page heap's check covers it */
    if (!ar)
        return fail(why, len, "span %p (%s): no arena", (void *)s, state_of(st));
    if (s->node != ar->node)
        return fail(why, len, "span %p (%s): node %u, but its arena is on node %u", (void *)s,
                    state_of(st), s->node, ar->node);
    if (!ar->huge) {
        if (&ar->spans[s->start_page] != s || s->npages == 0 ||
            s->start_page + s->npages > nsp__arena_pages(ar))
            return fail(why, len, "span %p (%s): start page %u and %llu pages do not fit its arena",
                        (void *)s, state_of(st), s->start_page, (unsigned long long)s->npages);
        if (s->base != ar->base + ((uintptr_t)s->start_page << NSP_PAGE_SHIFT))
            return fail(why, len, "span %p (%s): base %p is not its first page's address",
                        (void *)s, state_of(st), (void *)s->base);
    }
    if (!pages_map_to(s, why, len))
        return 0;
    /* set up or freed by its taker, who writes the rest without any lock a check holds */
    if (st == NSP_SPAN_TAKEN)
        return 1;
    if (st == NSP_SPAN_LARGE)
        return s->sizeclass == 0 ? 1
                                 : fail(why, len, "span %p (LARGE): size class %u, not 0",
                                        (void *)s, s->sizeclass);
    /* a small span: CACHED, PARTIAL, FULL or SWEEPING (its central's lock held) */
    if (s->sizeclass == 0 || s->sizeclass >= NSP_NUM_CLASSES)
        return fail(why, len, "span %p (%s): size class %u is no small class", (void *)s,
                    state_of(st), s->sizeclass);
    const struct nsp_sizeclass *c = &nsp__classes[s->sizeclass];
    if (s->elemsize != c->size || s->nelems != c->nelems || s->npages != c->npages ||
        s->divmul != c->divmul)
        return fail(why, len, "span %p (%s, class %u): geometry %u B x %u in %llu pages, the "
                    "class has %u B x %u in %u pages", (void *)s, state_of(st), s->sizeclass,
                    s->elemsize, s->nelems, (unsigned long long)s->npages, c->size, c->nelems,
                    c->npages);
    if (s->alloc_bits != nsp__span_bitmaps_at(ar, s->start_page))
        return fail(why, len, "span %p (%s): its alloc bitmap is not at its first page's place "
                    "in the bitmap array", (void *)s, state_of(st));
    if ((const uint64_t *)s->freed_bits !=
        s->alloc_bits + nsp__span_freed_offset(nsp__span_nwords(s)))
        return fail(why, len, "span %p (%s): its freed bitmap is not right after its alloc one",
                    (void *)s, state_of(st));
    if (st == NSP_SPAN_CACHED && s->cache >= nsp__ncaches)
        return fail(why, len, "span %p (CACHED): cache %u of %u", (void *)s, s->cache,
                    nsp__ncaches);
    uint32_t n = 0, words = nsp__span_nwords(s);
    for (uint32_t w = 0; w < words; w++) {
        uint64_t v = __atomic_load_n(&s->alloc_bits[w], __ATOMIC_RELAXED);
        if (w == words - 1 && (s->nelems & 63) && (v >> (s->nelems & 63)))
            return fail(why, len, "span %p (%s, class %u): alloc bits set past its %u slots",
                        (void *)s, state_of(st), s->sizeclass, s->nelems);
        n += (uint32_t)nsp__popcount64(v);
    }
    if (n != s->alloc_count)
        return fail(why, len, "span %p (%s, class %u): alloc_count %u, but %u alloc bits are set",
                    (void *)s, state_of(st), s->sizeclass, s->alloc_count, n);
    return nsp__secure || free_slots_tagged(s, st, why, len);
}

/* ---- page heap ---------------------------------------------------------------------------------- */

int nsp__pageheap_is_valid(unsigned node, char *why, size_t len)
{
    const struct nsp_pageheap *h = &nsp__pageheaps[node];
    uint64_t free_pages = 0;
    for (const struct nsp_arena *ar = h->arenas; ar; ar = ar->next) {
        if (ar->node != node || ar->huge)
            return fail(why, len, "page heap %u: arena %p (node %u%s) in its list", node,
                        (void *)ar->base, ar->node, ar->huge ? ", huge" : "");
        if (nsp__arena_table[ar->base >> NSP_ARENA_SHIFT] != ar)
            return fail(why, len, "page heap %u: arena %p is not in the arena table", node,
                        (void *)ar->base);
        int prev_free = 0;
        for (uint32_t p = 0; p < nsp__arena_pages(ar);) {
            const struct nsp_span *s = &ar->spans[p];
            if (s->npages == 0 || p + s->npages > nsp__arena_pages(ar) || s->start_page != p)
                return fail(why, len, "page heap %u, arena %p: the run at page %u (start %u, %llu "
                            "pages) does not tile the arena", node, (void *)ar->base, p,
                            s->start_page, (unsigned long long)s->npages);
            int is_free = atomic_load_explicit(&s->state, memory_order_relaxed) == NSP_SPAN_FREE;
            if (is_free) {
                uint32_t last = p + (uint32_t)s->npages - 1;
                if (nsp__pagemap_entry(ar, p) != s || nsp__pagemap_entry(ar, last) != s)
                    return fail(why, len, "page heap %u, arena %p: free run at page %u: its first "
                                "and last pages must map to it", node, (void *)ar->base, p);
                for (uint32_t q = p + 1; q < last; q++)
                    if (nsp__pagemap_entry(ar, q))
                        return fail(why, len, "page heap %u, arena %p: free run at page %u: "
                                    "inner page %u maps to %p, not NULL", node, (void *)ar->base,
                                    p, q, (void *)nsp__pagemap_entry(ar, q));
                for (uint32_t q = p; q <= last; q++) /* a free run's pages have no class */
                    if (__atomic_load_n(&ar->classmap[q], __ATOMIC_RELAXED))
                        return fail(why, len, "page heap %u, arena %p: free run at page %u: "
                                    "page %u's class byte is %u, not 0", node, (void *)ar->base,
                                    p, q, __atomic_load_n(&ar->classmap[q], __ATOMIC_RELAXED));
                if (prev_free)
                    return fail(why, len, "page heap %u, arena %p: free runs before page %u and "
                                "at it were not coalesced", node, (void *)ar->base, p);
            } else if (!nsp__span_is_valid(s, why, len)) {
                return 0;
            }
            prev_free = is_free;
            p += (uint32_t)s->npages;
        }
    }
    for (unsigned i = 0; i < NSP_FREE_LISTS; i++) {
        const struct nsp_span *prev = NULL;
        for (const struct nsp_span *r = h->free_runs[i]; r; prev = r, r = r->next) {
            if (atomic_load_explicit(&r->state, memory_order_relaxed) != NSP_SPAN_FREE ||
                r->prev != prev || r->node != node)
                return fail(why, len, "page heap %u: free list %u holds %p (%s, node %u) out of "
                            "place", node, i, (void *)r, state_of(atomic_load(&r->state)),
                            r->node);
            if (i ? r->npages != i : r->npages < NSP_FREE_LISTS)
                return fail(why, len, "page heap %u: a run of %llu pages in free list %u", node,
                            (unsigned long long)r->npages, i);
            free_pages += r->npages;
        }
    }
    if (free_pages != h->pages_free)
        return fail(why, len, "page heap %u: pages_free %llu, but its free lists hold %llu",
                    node, (unsigned long long)h->pages_free, (unsigned long long)free_pages);
    return 1;
}

/* ---- central ------------------------------------------------------------------------------------ */

static int central_list_is_valid(unsigned node, unsigned cls, unsigned which, char *why,
                                 size_t len)
{
    const struct nsp_central *c = nsp__central(node, cls);
    const char *name = which == NSP_LIST_FULL ? "full" : "partial";
    uint64_t n = 0;
    const struct nsp_span *prev = NULL;
    for (const struct nsp_span *s = which == NSP_LIST_FULL ? c->full : c->partial; s;
         prev = s, s = s->next, n++) {
        uint32_t st = atomic_load_explicit(&s->state, memory_order_relaxed);
        /* a FULL span woken by a remote free is PARTIAL until its waker moves it (central.h) */
        int state_ok = st == NSP_SPAN_PARTIAL || (which == NSP_LIST_FULL && st == NSP_SPAN_FULL);
        if (!state_ok || s->list != which)
            return fail(why, len, "central (node %u, class %u): span %p in the %s list is %s "
                        "with list mark %u", node, cls, (void *)s, name, state_of(st), s->list);
        if (s->prev != prev)
            return fail(why, len, "central (node %u, class %u): span %p in the %s list: its prev "
                        "link is %p, not %p", node, cls, (void *)s, name, (void *)s->prev,
                        (void *)prev);
        if (s->node != node || s->sizeclass != cls)
            return fail(why, len, "central (node %u, class %u): span %p of node %u, class %u in "
                        "its %s list", node, cls, (void *)s, s->node, s->sizeclass, name);
        if (!nsp__span_is_valid(s, why, len))
            return 0;
    }
    if (which == NSP_LIST_PARTIAL && c->partial_tail != prev)
        return fail(why, len, "central (node %u, class %u): the partial list ends at %p, but its "
                    "tail is %p", node, cls, (void *)prev, (void *)c->partial_tail);
    uint64_t want = which == NSP_LIST_FULL ? c->nfull : c->npartial;
    if (n != want)
        return fail(why, len, "central (node %u, class %u): n%s %llu, but the list holds %llu",
                    node, cls, name, (unsigned long long)want, (unsigned long long)n);
    return 1;
}

int nsp__central_is_valid(unsigned node, unsigned cls, char *why, size_t len)
{
    return central_list_is_valid(node, cls, NSP_LIST_PARTIAL, why, len) &&
           central_list_is_valid(node, cls, NSP_LIST_FULL, why, len);
}

/* ---- cache -------------------------------------------------------------------------------------- */

int nsp__cache_is_valid(const struct nsp_cache *c, char *why, size_t len)
{
    size_t held = 0;
    for (unsigned k = 1; k < NSP_NUM_CLASSES; k++) {
        const struct nsp_span *s = c->spans[k];
        if (s == &nsp__empty_span)
            continue;
        uint32_t st = atomic_load_explicit(&s->state, memory_order_relaxed);
        if (st != NSP_SPAN_CACHED || s->cache != c->index || s->sizeclass != k)
            return fail(why, len, "cache %u: its span of class %u (%p) is %s by cache %u with "
                        "class %u", c->index, k, (void *)s, state_of(st), s->cache, s->sizeclass);
        if (!nsp__span_is_valid(s, why, len))
            return 0;
        /* over: charged ahead of every slot the cache can hand out (ledger.h, the cover) */
        if (nsp__accounting == NSP_ACCT_OVER &&
            atomic_load_explicit(&s->charge, memory_order_relaxed) < nsp__ledger_covered(s))
            return fail(why, len, "cache %u: its span of class %u (%p) is charged %lld B, less "
                        "than the %lld B it can hand out (allocated slots and cursor)", c->index,
                        k, (void *)s, (long long)atomic_load(&s->charge),
                        (long long)nsp__ledger_covered(s));
        held += nsp__class_window_bytes(k);
    }
    if (held != c->held_bytes)
        return fail(why, len, "cache %u: held_bytes %zu, but its spans hold %zu", c->index,
                    c->held_bytes, held);
    return 1;
}

/* ---- the whole heap ----------------------------------------------------------------------------- */

/* Takes every lock of the heap in fork's order (init.c): caches, centrals, page heaps (held
 * still: pageheap.h), the ledger's node locks. The caches all of them, waiting
 * (nsp__cache_lock_all, serialised among foreign takers), or (wait == 0) one by one with the
 * foreign try-lock, giving up at the first busy one (returns 0, nothing held): a cycle must not
 * wait for a cache whose owner may be waiting for that cycle. Waiting, it also returns 0
 * (nothing held) when lock_all had to leave a cache out (its cpu cannot be fenced): a check over
 * a cache it cannot hold would race its owner. */
static int lock_heap(int wait)
{
    if (wait) {
        if (nsp__cache_lock_all() != 0) { /* a cache whose cpu cannot be fenced: not checked */
            nsp__cache_unlock_all();
            return 0;
        }
    } else {
        for (unsigned i = 0; i < nsp__ncaches; i++)
            if (!nsp__cache_lock_foreign(&nsp__caches[i])) {
                while (i-- > 0)
                    nsp__cache_unlock(&nsp__caches[i]);
                return 0;
            }
    }
    for (unsigned n = 0; n < nsp__nnodes; n++)
        for (unsigned k = 0; k < NSP_NUM_CLASSES; k++)
            nsp__central_lock(nsp__central(n, k));
    /* still: no cut without the lock in flight, none pending unlinked (pageheap.h). Before the
     * ledger's locks: a large object cut without it and charged under them (ledger.c) is then
     * in a linked arena by the time its charge can land before this check's reading */
    for (unsigned n = 0; n < nsp__nnodes; n++)
        nsp__pageheap_lock_still(n);
    nsp__ledger_lock_all();
    return 1;
}

static void unlock_heap(int wait)
{
    nsp__ledger_unlock_all();
    for (unsigned n = nsp__nnodes; n-- > 0;)
        nsp__pageheap_unlock_still(n);
    for (unsigned n = nsp__nnodes; n-- > 0;)
        for (unsigned k = NSP_NUM_CLASSES; k-- > 0;)
            nsp__central_unlock(nsp__central(n, k));
    if (wait) {
        nsp__cache_unlock_all();
    } else {
        for (unsigned i = 0; i < nsp__ncaches; i++)
            nsp__cache_unlock(&nsp__caches[i]);
    }
}

/* What every whole-heap check starts with: why emptied; 1 with the whole heap held (lock_heap),
 * or 0 with why saying why it cannot be checked. */
static int begin_check(char *why, size_t len)
{
    if (len)
        why[0] = 0;
    if (!atomic_load_explicit(&nsp__ready, memory_order_acquire)) {
        fail(why, len, "the allocator is not initialised");
        return 0;
    }
    if (!lock_heap(1)) {
        fail(why, len, "not checked: a cache's cpu cannot be fenced, so it cannot be held");
        return 0;
    }
    return 1;
}

int nsp_heap_check(char *why, size_t len)
{
    if (!begin_check(why, len))
        return -1;
    int ok = 1;
    for (unsigned i = 0; ok && i < nsp__ncaches; i++)
        ok = nsp__cache_is_valid(&nsp__caches[i], why, len);
    for (unsigned n = 0; ok && n < nsp__nnodes; n++)
        for (unsigned k = 1; ok && k < NSP_NUM_CLASSES; k++)
            ok = nsp__central_is_valid(n, k, why, len);
    for (unsigned n = 0; ok && n < nsp__nnodes; n++)
        ok = nsp__pageheap_is_valid(n, why, len);
    unlock_heap(1);
    return ok ? 0 : -1;
}

/* ---- stats against a walk ----------------------------------------------------------------------- */

/* What a walk of node n's spans finds: per class, and for the node's large objects and free
 * pages. The numbers nsp_stats_get derives from counters (stats.c) must equal these at rest. */
struct stats_walk {
    uint64_t in_use[NSP_NUM_CLASSES];   /* allocated slots less remote frees not yet swept (freed
                                         * bits; a cached span's list) */
    uint64_t owned[NSP_NUM_CLASSES];    /* allocated slots of spans no cache holds */
    uint64_t freed[NSP_NUM_CLASSES];    /* freed bits set */
    uint64_t cached[NSP_NUM_CLASSES], partial[NSP_NUM_CLASSES], full[NSP_NUM_CLASSES];
    uint64_t large_objects, large_bytes, free_pages;
};

static void walk_small(const struct nsp_span *s, uint32_t st, struct stats_walk *w)
{
    unsigned k = s->sizeclass;
    uint64_t freed = 0, pending = 0;
    for (uint32_t i = 0; i < nsp__span_nwords(s); i++) {
        uint64_t f = atomic_load_explicit(&s->freed_bits[i], memory_order_relaxed);
        freed += (uint64_t)nsp__popcount64(f);
        pending += (uint64_t)nsp__popcount64(f & s->alloc_bits[i]);
    }
    w->freed[k] += freed;
    struct nsp_cached_counts cc = {.slots = (int64_t)s->alloc_count};
    if (st == NSP_SPAN_CACHED) {
        nsp__cache_span_counts(s, &cc); /* its bin's listed objects are free */
        pending += nsp__span_xfree_length(s, k); /* and its remote-free list's (stats.c) */
        w->cached[k]++;
    } else {
        w->owned[k] += s->alloc_count;
        if (st == NSP_SPAN_FULL)
            w->full[k]++;
        else
            w->partial[k]++; /* PARTIAL, or SWEEPING: out of its list for a moment */
    }
    uint64_t slots = cc.slots > 0 ? (uint64_t)cc.slots : 0;
    w->in_use[k] += slots > pending ? slots - pending : 0;
}

/* Node n's arenas span by span (spans and free runs tile them), then its huge mappings (in the
 * arena table only). Every lock of the heap held. */
static void stats_walk(unsigned n, struct stats_walk *w)
{
    memset(w, 0, sizeof *w);
    for (const struct nsp_arena *ar = nsp__pageheaps[n].arenas; ar; ar = ar->next)
        for (uint32_t p = 0; p < nsp__arena_pages(ar);) {
            const struct nsp_span *s = &ar->spans[p];
            uint32_t st = atomic_load_explicit(&s->state, memory_order_acquire);
            if (st == NSP_SPAN_FREE) {
                w->free_pages += s->npages;
            } else if (st == NSP_SPAN_LARGE) {
                w->large_objects++;
                w->large_bytes += s->npages << NSP_PAGE_SHIFT;
            } else if (st != NSP_SPAN_TAKEN && s->sizeclass && s->sizeclass < NSP_NUM_CLASSES) {
                walk_small(s, st, w);
            }
            p += s->npages ? (uint32_t)s->npages : 1;
        }
    for (size_t i = 0; i < NSP_ARENA_SLOTS; i++) {
        uintptr_t e = (uintptr_t)__atomic_load_n(&nsp__arena_table[i], __ATOMIC_ACQUIRE);
        const struct nsp_arena *ar = (const struct nsp_arena *)(e - 1);
        /* a huge arena is in every slot it covers: counted at its first */
        if (!(e & 1) || ar->node != n || ar->base >> NSP_ARENA_SHIFT != i ||
            atomic_load_explicit(&ar->spans->state, memory_order_acquire) != NSP_SPAN_LARGE)
            continue;
        w->large_objects++;
        w->large_bytes += ar->spans->npages << NSP_PAGE_SHIFT;
    }
}

#define ULL(x) ((unsigned long long)(x))

/* Node n's counters and st's node n against its walk; its classes' numbers are added to sum[]
 * (compared with st's per-class sums over the nodes once every node is walked). */
static int node_stats_match(unsigned n, const nsp_stats_t *st, const struct stats_walk *w,
                            struct stats_walk *sum, char *why, size_t len)
{
    uint64_t in_use = 0, bytes = 0;
    for (unsigned k = 1; k < NSP_NUM_CLASSES; k++) {
        int64_t freed = nsp__span_freed_pending(n, k);
        uint64_t owned = __atomic_load_n(&nsp__central(n, k)->objects, __ATOMIC_RELAXED);
        if (freed < 0 || (uint64_t)freed != w->freed[k])
            return fail(why, len, "stats, node %u class %u: nsp__freed_pending %lld, but the "
                        "spans' freed bitmaps hold %llu bits", n, k, (long long)freed,
                        ULL(w->freed[k]));
        if (owned != w->owned[k])
            return fail(why, len, "stats, node %u class %u: the central's objects %llu, but its "
                        "spans hold %llu allocated slots", n, k, ULL(owned), ULL(w->owned[k]));
        in_use += w->in_use[k];
        bytes += w->in_use[k] * nsp__classes[k].size;
        sum->in_use[k] += w->in_use[k];
        sum->cached[k] += w->cached[k];
        sum->partial[k] += w->partial[k];
        sum->full[k] += w->full[k];
    }
    const nsp_node_stats_t *d = &st->node[n];
    in_use += w->large_objects;
    bytes += w->large_bytes;
    if (d->large_objects != w->large_objects || d->large_bytes != w->large_bytes)
        return fail(why, len, "stats, node %u: %llu large objects of %llu B, but a walk finds "
                    "%llu of %llu B", n, ULL(d->large_objects), ULL(d->large_bytes),
                    ULL(w->large_objects), ULL(w->large_bytes));
    if (d->objects_in_use != in_use || d->bytes_in_use != bytes)
        return fail(why, len, "stats, node %u: %llu objects, %llu B in use, but a walk finds "
                    "%llu, %llu B", n, ULL(d->objects_in_use), ULL(d->bytes_in_use),
                    ULL(in_use), ULL(bytes));
    if (d->pages_free != w->free_pages)
        return fail(why, len, "stats, node %u: %llu free pages, but its free runs hold %llu", n,
                    ULL(d->pages_free), ULL(w->free_pages));
    return 1;
}

static int classes_match(const nsp_stats_t *st, const struct stats_walk *sum, char *why,
                         size_t len)
{
    for (unsigned k = 1; k < NSP_NUM_CLASSES; k++) {
        const nsp_class_stats_t *c = &st->cls[k];
        if (c->objects_in_use != sum->in_use[k] || c->spans_cached != sum->cached[k] ||
            c->spans_partial != sum->partial[k] || c->spans_full != sum->full[k])
            return fail(why, len, "stats, class %u (%u B): in use %llu, spans cached/partial/"
                        "full %llu/%llu/%llu; a walk of the spans finds %llu, %llu/%llu/%llu", k,
                        nsp__classes[k].size, ULL(c->objects_in_use), ULL(c->spans_cached),
                        ULL(c->spans_partial), ULL(c->spans_full), ULL(sum->in_use[k]),
                        ULL(sum->cached[k]), ULL(sum->partial[k]), ULL(sum->full[k]));
    }
    return 1;
}

/* Every small malloc counted once and every small free once: what is left is what the walk
 * finds in use. A malloc no counter saw (a slab's pop, slab.h) or a free counted twice or never
 * (a pending remote free) breaks it. */
static int counts_match(const nsp_stats_t *st, const struct stats_walk *sum, char *why, size_t len)
{
    uint64_t in_use = 0;
    for (unsigned k = 1; k < NSP_NUM_CLASSES; k++)
        in_use += sum->in_use[k];
    uint64_t freed = st->local_frees + st->remote_frees;
    if (st->mallocs < freed || st->mallocs - freed != in_use)
        return fail(why, len, "stats: %llu small mallocs, %llu local and %llu remote frees leave "
                    "%lld in use, but a walk finds %llu small objects in use", ULL(st->mallocs),
                    ULL(st->local_frees), ULL(st->remote_frees),
                    (long long)(st->mallocs - freed), ULL(in_use));
    return 1;
}

int nsp__stats_is_valid(int (*read)(nsp_stats_t *), char *why, size_t len)
{
    if (!begin_check(why, len))
        return -1;
    /* large: not on a small thread's stack; serialised by lock_heap (foreign takers take
     * turns). The reading too is taken with every lock held: taking the caches flushes what
     * they hold back (magazines), which a reading before it would not have seen. */
    static struct stats_walk w, sum;
    static nsp_stats_t st;
    memset(&sum, 0, sizeof sum);
    int ok = read(&st) == 0 || fail(why, len, "the stats reader failed");
    for (unsigned n = 0; ok && n < nsp__nnodes; n++) {
        stats_walk(n, &w);
        ok = node_stats_match(n, &st, &w, &sum, why, len);
    }
    ok = ok && classes_match(&st, &sum, why, len);
    ok = ok && counts_match(&st, &sum, why, len);
    unlock_heap(1);
    return ok ? 0 : -1;
}

/* ---- the ledger's recount ----------------------------------------------------------------------- */

int nsp__ledger_recount(int wait, unsigned *node, int64_t *ledger, int64_t *charges)
{
    if (!atomic_load_explicit(&nsp__ready, memory_order_acquire))
        return -1;
    int64_t sum[NSP_MAX_NODES] = {0};
    if (!lock_heap(wait))
        return 1;
    for (unsigned n = 0; n < nsp__nnodes; n++) {
        struct nsp_pageheap *h = &nsp__pageheaps[n];
        for (struct nsp_arena *ar = h->arenas; ar; ar = ar->next)
            for (uint32_t p = 0; p < nsp__arena_pages(ar);) {
                struct nsp_span *s = &ar->spans[p];
                if (atomic_load_explicit(&s->state, memory_order_relaxed) != NSP_SPAN_FREE)
                    sum[s->node] += atomic_load_explicit(&s->charge, memory_order_relaxed);
                p += s->npages ? s->npages : 1;
            }
    }
    int rc = 0;
    for (unsigned n = 0; n < nsp__nnodes && rc == 0; n++) {
        int64_t l = atomic_load(&nsp__ledger[n].heap_live);
        for (unsigned i = 0; i < nsp__ncaches; i++)
            l += nsp__caches[i].pending[n];
        /* huge objects live outside the arenas: their charges are kept beside them */
        sum[n] += atomic_load(&nsp__huge_charge[n]);
        if (l != sum[n]) {
            rc = -1;
            *node = n;
            *ledger = l;
            *charges = sum[n];
        }
    }
    unlock_heap(wait);
    return rc;
}

int nsp_ledger_recount(unsigned *node, int64_t *ledger, int64_t *charges)
{
    return nsp__ledger_recount(1, node, ledger, charges);
}

/* ---- debug levels ------------------------------------------------------------------------------- */

void nsp__check_init(void)
{
    nsp__debug = (int)nsp__option_int(NSP_OPT_DEBUG, 0, 3,
                                      "expected a debug level from 0 (off) to 3 (host/check.h)");
}

static void report(const char *when, const char *why)
{
    char msg[768];
    int n = snprintf(msg, sizeof msg, "numaspan: NSP_DEBUG=%d: heap check %s failed: %s\n",
                     nsp__debug, when, why);
    if (n > 0)
        (void)!write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
    abort();
}

void nsp__check_at(int level, const char *when)
{
    if (nsp__debug < level)
        return;
    char why[512];
    if (nsp_heap_check(why, sizeof why) != 0)
        report(when, why);
}

__attribute__((destructor)) static void nsp__check_at_exit(void)
{
    if (nsp__debug < 2 || !atomic_load_explicit(&nsp__ready, memory_order_acquire))
        return;
    nsp__check_at(2, "at exit");
    if (nsp__debug >= 3) {
        unsigned node;
        int64_t ledger, charges;
        char why[256];
        if (nsp_ledger_recount(&node, &ledger, &charges) != 0) {
            snprintf(why, sizeof why, "node %u: heapLive + pending %lld, the spans' charges %lld",
                     node, (long long)ledger, (long long)charges);
            report("(the ledger's recount) at exit", why);
        }
    }
}
