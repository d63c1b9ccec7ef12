/*
 * host/free.c — the frees the bins' fast path (free_to_bin, alloc.h) does not finish.
 *
 * Owns no state; it decides, for each free, who may apply it and reports the bad ones:
 *   - NULL: nothing; a pointer no span owns (bootstrap memory aside), one inside an object, or
 *     an object that is not allocated: reported (runtime.h, nsp__report_error) and not applied;
 *   - large: large.c;
 *   - small, by the thread whose core caches the span: under the cache's lock, after
 *     re-checking that the cache still holds the span and settling its bin, so the alloc bit's
 *     answer is exact (a double free of an object in the bin's list is caught here);
 *   - small, of a span another cpu's cache holds (a producer/consumer program's every free):
 *     onto that span's remote-free list (span.h, nsp__span_xfree_push: one CAS), the object
 *     tagged NSP_MAG_XFREE; its owner's next sweep applies the list. nsp__free_classed's alone,
 *     from p's page map entry, for an untagged, allocated object of a span of 16 B or more;
 *   - small, of another span on the cache's node that no cache holds: into the cpu's slab
 *     (slab.h), checked and tagged as a magazine's object is (nsp__free_classed, or
 *     nsp__free_any -> nsp__free_small);
 *   - every other small free: remote, one atomic OR on the span's freed bitmap (DESIGN.md §3),
 *     applied later by whoever sweeps the span.
 * errno is kept by every free.
 */
#include <errno.h>
#include <sched.h>
#include <stdint.h>

#include "alloc.h"
#include "cache.h"
#include "central.h"
#include "ledger.h"
#include "pageheap.h"
#include "runtime.h"
#include "secure.h"
#include "span.h"
#include "transfer.h"

static __attribute__((noinline)) void free_unowned(void *p)
{
    if (nsp__boot_owns(p)) {
        nsp__boot_free(p); /* never reused, but its pages may go back (runtime.c) */
        return;
    }
    nsp__report_error(NSP_ERR_NOT_OWNED, "free", p);
}

#ifdef NSP_RSEQ_LOCKS
/* The object being freed remotely looks listed in the bin of the cache that holds its span
 * (nsp__bin_lists): a listed object is free, yet its alloc bit is set, so the remote check below
 * would pass a second free of it, and the sweep would later free it again once the bin had handed
 * it out. The look is only a hint (a push preempted after it wrote the object's link leaves the
 * same look on a live object, and its thread may then free it from another cpu), so the cache is
 * taken, which folds its bins: the alloc bit is then exact. A cache that stays busy is left
 * alone: that free is then not checked (as before the bins were folded). errno kept. */
static __attribute__((noinline)) void fold_bins_of(struct nsp_span *s)
{
    int saved = errno;
    struct nsp_cache *c = &nsp__caches[__atomic_load_n(&s->cache, __ATOMIC_RELAXED)];
    for (int tries = 0; tries < 100; tries++) {
        if (nsp__cache_lock_foreign(c)) {
            nsp__cache_unlock(c);
            break;
        }
        sched_yield();
    }
    errno = saved;
}
#endif

#ifdef NSP_RSEQ_LOCKS
/* p's first word is a magazine's tag (magazine.h) naming cache ci: p may wait in its magazine,
 * freed already though its bits say allocated. The callers leave out NSP_MAG_NONE, the free tag of
 * a slot freed locally or the direct way (no magazine holds p: the bits decide), which is most such
 * tags: a slot handed out again keeps it until the program writes its first word. That magazine is
 * flushed (the cache taken, which applies it), so that the bits answer. A cache that cannot be
 * taken (busy, or its cpu unfenceable) is read instead: 1 when p is listed in it (a double free:
 * the bits must not decide, or a local free would free p while it waits there, and the flush would
 * later free whoever got it next), else 0 and the bits decide (p flushed already, or in flight: a
 * free racing the first, span.h). Each value read there was pushed after the generation that held
 * any earlier free of p was flushed, so a listed p is a free not yet applied. errno kept. */
static __attribute__((noinline)) int flush_magazine_of(int64_t ci, const void *p, unsigned cls)
{
    if (ci >= (int64_t)nsp__ncaches || !nsp__caches[ci].bins_on)
        return 0;
    int saved = errno;
    struct nsp_cache *c = &nsp__caches[ci];
    int listed = 0;
    for (int tries = 0;; tries++) {
        if (nsp__cache_lock_foreign(c)) {
            nsp__cache_unlock(c);
            break;
        }
        if (tries == 100) {
            /* the push writes the slot before it commits the count: read the count first */
            uint64_t n = __atomic_load_n(&c->mag.count, __ATOMIC_ACQUIRE);
            for (uint64_t i = 0; i < n && i < NSP_MAG_SLOTS && !listed; i++)
                listed = __atomic_load_n(&c->mag.slot[i], __ATOMIC_RELAXED) == (uintptr_t)p;
            /* or in the slab of its class (slab.h), which the tag names the same way */
            listed = listed || nsp__cache_slab_holds(c, cls, (uintptr_t)p);
            break;
        }
        sched_yield();
    }
    errno = saved;
    return listed;
}

/* A remote free into the thread's cpu's magazine (magazine.h): 1 when pushed, 0 when it must go
 * the direct way (no magazine here, the object not plainly allocated — the direct path reports
 * it —, or the magazine full and the cache busy). A full magazine is emptied by a restartable
 * take on its cpu (or, off that cpu, by taking the cache), applied, and pushed into again. */
static int free_to_magazine(struct nsp_span *s, uint32_t idx, void *p)
{
    struct nsp_cache *tb = nsp__tb;
    if (!tb || !nsp__span_slot_live(s, idx))
        return 0;
    for (int tries = 0; tries < 2; tries++) {
        *(uint64_t *)p = nsp__magazine_tag(p, tb->index); /* rewritten if the push moves on */
        int r;
        while (unlikely((r = nsp__mag_push(&tb->mag, p)) == 2))
            ;
        if (likely(r == 0))
            return 1;
        if (tries)
            break;
        uintptr_t objs[NSP_MAG_SLOTS];
        unsigned n = nsp__cache_take_magazine_rseq(tb, objs); /* no lock: its cpu's sequence */
        uint32_t ci = tb->index; /* whose tag the taken objects carry */
        if (!n) { /* moved off its cpu, or detached: the locked take */
            struct nsp_cache *c = nsp__cache_acquire(); /* may move nsp__tb to another cache */
            if (!c)
                return 0;
            n = nsp__cache_take_magazine(c, objs);
            ci = c->index;
            nsp__cache_unlock(c);
        }
        /* applied without the cache: in between, these frees are in flight (a racing second
         * free of one is reported by the apply, naming it) */
        nsp__magazine_apply(objs, nsp__cache_drop_listed(objs, n, ci));
        if (!(tb = nsp__tb))
            return 0;
    }
    return 0;
}
#endif

#ifdef NSP_RSEQ_LOCKS
/* Whether p (slot idx of s, its first word no tag) may go into the slab of tb (slab.h, "What may
 * enter"): p's span on the cache's node, a slab for its class, p plainly allocated (alloc bit set,
 * freed bit clear), and not listed in the bin of the cache that holds its span. The caller knows
 * that the span is not the one our own bin holds. */
static inline __attribute__((always_inline)) int slab_takes(struct nsp_cache *tb,
                                                           struct nsp_span *s, uint32_t idx,
                                                           const void *p)
{
    /* cap with acquire: read before the push's sequence reads the slab's cpu (slab.h, "Set-up") */
    return s->node == tb->node &&
           __atomic_load_n(&tb->slabs[s->sizeclass].cap, __ATOMIC_ACQUIRE) &&
           nsp__span_slot_live(s, idx) &&
           !(nsp__may_be_link(__atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED)) &&
             nsp__bin_lists(s, p));
}

/* The slab of p's class was full (or the push missed): its top half goes back to the spans as a
 * batch of remote frees (one atomic OR per span and bitmap word), applied holding nothing, and
 * p, tagged already, is pushed again. 0, p's tag undone, when the take misses (moved off the
 * cpu, or detached) or the second push does: the caller's remote path then decides, reading no
 * tag of ours (the checks are done) but still refusing a magazine-listed double free. Out of
 * line: the objects' buffer and the apply stay off the push's path. */
static __attribute__((noinline)) int slab_full(struct nsp_cache *tb, struct nsp_span *s, void *p)
{
    struct nsp_slab *m = &tb->slabs[s->sizeclass];
    uintptr_t objs[NSP_SLAB_MAX / 2 + 1];
    unsigned n = nsp__cache_take_slab_rseq(tb, s->sizeclass, objs);
    if (n) {
        int saved = errno;
        nsp__magazine_apply(objs, nsp__cache_drop_listed(objs, n, tb->index));
        errno = saved;
        int r;
        while (unlikely((r = nsp__slab_push(m, p)) == 2))
            ;
        if (likely(r == 0))
            return 1;
    }
    *(uint64_t *)p = 0;
    return 0;
}

/* p (slab_takes said yes) tagged with the magazine's tag naming this cache, before the push can
 * commit, and pushed into its class's slab: 1 when pushed, 0 when the remote path must take it
 * (slab_full). */
static inline __attribute__((always_inline)) int slab_push_tagged(struct nsp_cache *tb,
                                                                 struct nsp_span *s, void *p)
{
    *(uint64_t *)p = nsp__magazine_tag(p, tb->index);
    int r;
    while (unlikely((r = nsp__slab_push(&tb->slabs[s->sizeclass], p)) == 2))
        ;
    return likely(r == 0) ? 1 : slab_full(tb, s, p);
}

/* A free into the thread's cpu's slab of p's class (slab.h): 1 when pushed, 0 when it must go
 * another way (no slab here or for this class, p's span on another node, p not plainly allocated,
 * already tagged, or listed in a bin: the remote path decides those; or the slab full and its
 * top half could not be taken). The caller checked the tags of a magazine and a transfer (p then
 * has been settled by the bits), and that p's span is not the one our bin holds. */
static __attribute__((noinline)) int free_to_slab(struct nsp_cache *tb, struct nsp_span *s,
                                                  uint32_t idx, void *p)
{
    if (!slab_takes(tb, s, idx, p) || nsp__magazine_tagged(p) >= 0)
        return 0;
    return slab_push_tagged(tb, s, p);
}
#endif

static __attribute__((noinline)) void free_remote(struct nsp_span *s, uint32_t idx, void *p)
{
#ifdef NSP_RSEQ_LOCKS
    if (unlikely(nsp__may_be_link(__atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED))) &&
        unlikely(nsp__bin_lists(s, p)))
        fold_bins_of(s);
#endif
    /* exact charges the free before its freed bit can be seen: the other way round, a sweep
     * could apply the bit and give the emptied span back to the page heap with this charge still
     * to come (heapLive then differed from the sum of the charges, NSP_DEBUG=1 found it). The
     * other modes wait for the sweep. */
    int exact = nsp__ledger_exact();
#ifdef NSP_RSEQ_LOCKS
    /* batched: one atomic OR per (span, bitmap word) at the flush (`exact` has no bins, so no
     * magazine: it charges each free as it happens) */
    if (!exact && free_to_magazine(s, idx, p))
        return;
#endif
    if (exact)
        nsp__ledger_exact_objects(s, -1, NULL);
    /* tagged before its freed bit is set: the bins' push refuses a tagged object, so a local free
     * of it while that bit waits for a sweep goes to the locked path, which asks the bits (the
     * push reads no freed bitmap: one line fewer per free, cache.h). NSP_SECURE has no bins,
     * and its poison must stay as nsp__secure_free left it. */
    if (likely(!nsp__secure))
        *(uint64_t *)p = nsp__magazine_tag(p, NSP_MAG_NONE);
    int r = nsp__span_free_remote(s, idx);
    if (r < 0 && exact)
        nsp__ledger_exact_objects(s, 1, NULL); /* not a free after all: undone */
    if (r > 0) {
        int saved = errno;
        nsp__central_wake(s);
        errno = saved;
    } else if (r < 0) {
        nsp__report_error(NSP_ERR_DOUBLE_FREE, "free", p);
    }
}

/* Whether p, whose first word is the transfer's tag, waits in a chain of any node's transfer of
 * class cls (a batch goes to the transfer of the node that asked, whatever node its span is on).
 * A few looks apart: a chain a taker holds for a moment is back in a slot at the next look. */
static __attribute__((noinline)) int waits_in_transfer(unsigned cls, const void *p)
{
    int saved = errno;
    int held = 0;
    for (int look = 0; look < 3 && !held && nsp__transfer_lists(p); look++) {
        for (unsigned n = 0; n < nsp__nnodes && !held; n++)
            held = nsp__transfer_holds(&nsp__central(n, cls)->front, cls, p);
        if (!held)
            sched_yield();
    }
    errno = saved;
    return held;
}

#ifdef NSP_RSEQ_LOCKS
/* Whether p waits on s's remote-free list (its first word names NSP_MAG_XFREE: a hint). Any
 * thread may ask: the whole list is taken (one CAS, only while the head word is s's: s may have
 * been released and its pages cut again since p's page map entry was read, span.h,
 * nsp__span_xfree_take_foreign; then p is not found here and the bits decide), searched, and
 * pushed back whole, so that meanwhile no one else reads it; a sweep in between merely finds
 * fewer frees. A link written over is reported here, as the sweep would (the push-back writes
 * over it), and the list goes back up to it; a head inside s that is no slot of s is reported and
 * the list dropped. What another thread's search holds meanwhile is not found (that free then
 * goes on as a first one: a racing double free, not promised a report, span.h). Each search is
 * counted (span.h, nsp__xfree_searches: NSP_STATS shows it). errno kept. */
static __attribute__((noinline)) int xfree_holds(struct nsp_span *s, const void *p)
{
    if (!nsp__span_has_xfree(s))
        return 0;
    atomic_fetch_add_explicit(&nsp__xfree_searches, 1, memory_order_relaxed);
    uintptr_t first, tail = 0;
    if (!nsp__span_xfree_take_foreign(s, &first))
        return 0; /* the head is no longer s's (span.h): s's pages are another span's now */
    uintptr_t l = first;
    int held = 0;
    for (uint32_t steps = 0; l && steps <= s->nelems; steps++) {
        if (nsp__span_index(s, l) == UINT32_MAX) {
            /* written over: reported here, since the push-back below writes over the bad link
             * (the sweep would find a clean list; what lay behind it stays allocated) */
            int saved = errno;
            nsp__report_error(NSP_ERR_FREE_LIST, "free", (void *)(tail ? tail : first));
            errno = saved;
            break;
        }
        held |= l == (uintptr_t)p;
        tail = l;
        l = ((const uint64_t *)l)[1] ^ nsp__magazine_key;
    }
    if (tail) { /* back, whole: the tail linked to whatever was pushed meanwhile (a head that
                 * is no slot of s is dropped, reported above: there is no link to write; a head
                 * word that is no longer s's, span.h, leaves the chain allocated, not pushed) */
        if (nsp__span_xfree_push_chain(s, first, tail) > 0 && nsp__span_freed_remote(s)) {
            int saved = errno;
            nsp__central_wake(s);
            errno = saved;
        }
    }
    return held;
}
#endif

/* A small object's free that its bin did not take: the locked local free, or a remote one. */
__attribute__((noinline)) void nsp__free_small(struct nsp_span *s, uint32_t idx, void *p)
{
    if (unlikely(nsp__secure)) /* the canary checked, the slot poisoned (secure.h) */
        nsp__secure_free(s, idx, p);
    /* an object waiting in a node's transfer batch has its alloc bit set: freed again (by a bin's
     * push, which its tag sends here, or by the locked local free), it would be handed out twice
     * (transfer.h). The tag is a hint; the report waits for the proof. */
    if (unlikely(nsp__transfer_lists(p)) && waits_in_transfer(s->sizeclass, p)) {
        nsp__report_error(NSP_ERR_DOUBLE_FREE, "free", p);
        return;
    }
#ifdef NSP_RSEQ_LOCKS
    /* freed already into a magazine? that one is flushed first, and the bits then answer */
    int64_t mag = nsp__magazine_tagged(p);
    if (unlikely(mag == NSP_MAG_XFREE) && xfree_holds(s, p)) {
        nsp__report_error(NSP_ERR_DOUBLE_FREE, "free", p);
        return;
    }
    if (unlikely(mag >= 0 && mag != NSP_MAG_NONE) && flush_magazine_of(mag, p, s->sizeclass)) {
        nsp__report_error(NSP_ERR_DOUBLE_FREE, "free", p);
        return;
    }
#endif
    uint32_t hint = nsp__cache_hint();
#ifdef NSP_RSEQ_LOCKS
    /* not the span our bin holds (that one is the locked local free's): the cpu's slab */
    struct nsp_cache *tb = nsp__tb;
    if (likely(tb != NULL) &&
        (atomic_load_explicit(&s->state, memory_order_relaxed) != NSP_SPAN_CACHED ||
         __atomic_load_n(&s->cache, __ATOMIC_RELAXED) != tb->index) &&
        free_to_slab(tb, s, idx, p))
        return;
#endif
    if (atomic_load_explicit(&s->state, memory_order_relaxed) == NSP_SPAN_CACHED &&
        (hint == UINT32_MAX || hint == __atomic_load_n(&s->cache, __ATOMIC_RELAXED))) {
        /* (a span another cache holds is freed remotely without taking our own cache) */
        struct nsp_cache *c = nsp__cache_acquire();
        if (likely(c)) {
            /* re-checked under the lock: only this cache can take the span from itself; its
             * bin settled first, so that the bitmap's answer is exact (a double free of an
             * object in the bin's list is caught here) */
            int bound = nsp__cache_bound_missed(c, s->sizeclass);
            if (likely(c->spans[s->sizeclass] == s) &&
                likely(nsp__cache_settle(c, s->sizeclass) == 0)) {
                int r = nsp__span_free_local(s, idx);
                if (likely(r == 0)) {
                    s->nfree++;
                    nsp__cache_counts_check(s); /* a span cached for good (cache.h) */
                    if (nsp__ledger_exact())
                        nsp__ledger_exact_objects(s, -1, c->pending);
                    /* over: a charge more than a window past what the cache can hand out comes
                     * down here, not at the next cursor word (ledger.h): else a malloc/free pair
                     * in the cursor's word kept the charge of the span's fullest moment, unspent
                     * past the window its cache reserves for it */
                    nsp__ledger_cover(s, c->pending);
                    if (bound) /* the fold left it detached: attached again at once (cache.h) */
                        nsp__cache_reattach(c, s->sizeclass);
                }
                nsp__cache_unlock(c);
                if (unlikely(r < 0))
                    nsp__report_error(NSP_ERR_DOUBLE_FREE, "free", p);
                return;
            }
            nsp__cache_unlock(c);
        }
    }
    free_remote(s, idx, p);
}

/* The free of a small object that its bin refused (nsp_free): mostly an object of another cpu's
 * span (producer/consumer: every free), which goes into our cpu's slab. That case is taken here in
 * one function, from p's page map entry (nsp__page_entry: its class and its span at once, the arena
 * table's line hot from nsp_free's class byte) and the object's first word read once: it is neither
 * a transfer's nor a magazine's tag (both are magazine tags, magazine.h), so nsp__free_small's
 * checks of those (which act only on a tag) and its locked path (only for the span our bin holds)
 * have nothing to do, and slab_takes makes free_to_slab's checks, in its order. Measured with perf
 * (prodcons at 8 threads): the remote free went nsp__free_any -> nsp__free_small -> free_to_slab,
 * three prologues and a second look-up of the arena table and page map. Anything else goes the
 * whole way, judged exactly as before. */
#ifdef NSP_RSEQ_LOCKS
/* nsp__free_classed's slab way: p (slot idx of s, its first word no tag, its span not our bin's)
 * into the cpu's slab, or the whole way. Out of line, as every way but the list's push: called in
 * tail position, they leave the push's path without a stack frame. */
static __attribute__((noinline)) void classed_to_slab(struct nsp_span *s, uint32_t idx, void *p)
{
    struct nsp_cache *tb = nsp__tb;
    if (slab_takes(tb, s, idx, p) && slab_push_tagged(tb, s, p))
        return;
    nsp__free_small(s, idx, p);
}

/* The list's push did not end plainly (r, nsp__span_xfree_push_begin's): onto an empty list (the
 * span woken if it was FULL), or refused (p as it was, w0, and freed the slab's way). */
static __attribute__((noinline)) void classed_pushed(struct nsp_span *s, uint32_t idx, void *p,
                                                    uint64_t w0, int r)
{
    r = nsp__span_xfree_push_end(s, p, w0, r);
    if (r > 0) {
        int saved = errno;
        nsp__central_wake(s);
        errno = saved;
    } else if (r < 0) {
        classed_to_slab(s, idx, p);
    }
}

static __attribute__((noinline)) void classed_interior(void *p)
{
    nsp__report_error(NSP_ERR_INTERIOR, "free", p);
}
#endif

__attribute__((noinline)) void nsp__free_classed(void *p)
{
#ifdef NSP_RSEQ_LOCKS
    uintptr_t e = nsp__page_entry(p);
    struct nsp_span *s = nsp__pagemap_span((const struct nsp_span *)e);
    struct nsp_cache *tb = nsp__tb;
    if (likely(e & NSP_PAGEMAP_CLASS_MASK) && likely(s != NULL) && likely(tb != NULL) &&
        likely(!nsp__secure)) {
        uint32_t st = atomic_load_explicit(&s->state, memory_order_relaxed);
        if (likely(st != NSP_SPAN_FREE) && likely(s->sizeclass != 0)) {
            uint32_t idx = nsp__span_index(s, (uintptr_t)p);
            if (unlikely(idx == UINT32_MAX)) {
                classed_interior(p);
                return;
            }
            /* p's first word, read once: not a tag, and for the list not a possible link (a
             * listed object's second free goes the slow way). No look at the accounting mode:
             * exact has no bins, so no tb (cache.c), and never reaches here. */
            uint64_t w0 = __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED);
            if (likely(nsp__magazine_tag_of(p, w0) < 0) &&
                (st != NSP_SPAN_CACHED ||
                 __atomic_load_n(&s->cache, __ATOMIC_RELAXED) != tb->index)) {
                if (st == NSP_SPAN_CACHED && likely(nsp__span_has_xfree(s)) &&
                    !nsp__may_be_link(w0) &&
                    likely(__atomic_load_n(&s->alloc_bits[idx >> 6], __ATOMIC_RELAXED) &
                           (1ULL << (idx & 63)))) {
                    /* nsp__span_xfree_push, its end out of line (classed_pushed) */
                    int r = nsp__span_xfree_push_begin(s, p);
                    if (likely(r == 0))
                        return;
                    classed_pushed(s, idx, p, w0, r);
                    return;
                }
                classed_to_slab(s, idx, p);
                return;
            }
            nsp__free_small(s, idx, p);
            return;
        }
    }
#endif
    nsp__free_any(p);
}

/* Every free the bins' fast path does not finish: NULL, foreign, large, interior, or a small one
 * without bins. */
__attribute__((noinline)) void nsp__free_any(void *p)
{
    if (unlikely(!p))
        return;
    struct nsp_span *s = nsp__span_of(p);
    if (unlikely(!s)) {
        free_unowned(p);
        return;
    }
    if (unlikely(s->sizeclass == 0)) {
        nsp__free_large(s, p);
        return;
    }
    uint32_t idx = nsp__span_index(s, (uintptr_t)p);
    if (unlikely(idx == UINT32_MAX)) {
        nsp__report_error(NSP_ERR_INTERIOR, "free", p);
        return;
    }
    nsp__free_small(s, idx, p);
}

/* Whether slot idx of s (object p) is allocated, exactly: an object in a bin's list or waiting in a
 * transfer batch still has its alloc bit set, so a transfer's is looked for in the batches, and
 * one whose first word decodes to a link of its span (see free_to_bin) has its
 * cache taken, which folds the bins, and is asked again. */
int nsp__slot_live(struct nsp_span *s, uint32_t idx, void *p)
{
    (void)p; /* without rseq there are no bins to ask */
#ifdef NSP_RSEQ_LOCKS
    int64_t mag = nsp__magazine_tagged(p); /* waiting in a magazine: flushed, then asked */
    if (mag == NSP_MAG_XFREE && xfree_holds(s, p))
        return 0;
    if (mag >= 0 && mag != NSP_MAG_NONE && flush_magazine_of(mag, p, s->sizeclass))
        return 0;
#endif
    if (!nsp__span_slot_live(s, idx))
        return 0;
    /* waiting in a transfer batch: free, though its bit is set (realloc must not hand it back) */
    if (unlikely(nsp__transfer_lists(p)) && waits_in_transfer(s->sizeclass, p))
        return 0;
#ifdef NSP_RSEQ_LOCKS
    if (atomic_load_explicit(&s->state, memory_order_relaxed) == NSP_SPAN_CACHED) {
        struct nsp_cache *c = &nsp__caches[__atomic_load_n(&s->cache, __ATOMIC_RELAXED)];
        struct nsp_bin *b = &c->bins[s->sizeclass];
        uint64_t key = atomic_load_explicit(&b->key, memory_order_acquire);
        uintptr_t base = __atomic_load_n(&b->base, __ATOMIC_RELAXED);
        uint64_t link = *(const uint64_t *)p ^ key;
        if (key && base == s->base &&
            (link - base < __atomic_load_n(&b->size, __ATOMIC_RELAXED) || link == 0)) {
            if (nsp__cache_lock_foreign(c))
                nsp__cache_unlock(c);
            return nsp__span_slot_live(s, idx);
        }
    }
#endif
    return 1;
}
