/*
 * host/alloc.c — small objects' slow paths: what a malloc does when its bin's pop (alloc.h) does
 * not give an object, and the bootstrap before initialisation.
 *
 * Owns no state. Two paths, each out of line so the fast path pays for neither:
 *   nsp__alloc_small_locked: the first generation's path — the cache's lock, then a slot of the
 *     cached span's bitmap. Caches without bins (cache.h: virtual cores, no rseq, grouping) live
 *     on it; the bins' misses come through it to the cache's slow path, which refills the bin.
 *     Before the lock, a bins' miss pops the cpu's slab (slab.h) when the bin's span was found
 *     full, and after it when the cache is busy.
 *   alloc_small_slow: the cache's slow path, or, when the cache is busy (or this cpu has none,
 *     or its bin could not be detached), the node's central — nobody spins on a cache — and,
 *     before ENOMEM, a trim (trim.c) holding no lock, then the central once more.
 * A span of a cache whose flush_gen is not the current sweepgen is stale (a cycle ran since the
 * cache last looked): the locked path gives nothing from it and the slow path releases it.
 */
#include <errno.h>
#include <stdint.h>

#include "alloc.h"
#include "cache.h"
#include "central.h"
#include "ledger.h"
#include "pacer.h"
#include "runtime.h"
#include "span.h"

static __attribute__((noinline)) void *alloc_small_slow(unsigned cls, struct nsp_cache *c)
{
    int saved = errno;
    void *p = NULL;
    if (c && c->bins_on && nsp__tb == c) {
        p = nsp__cache_alloc_bin(c, cls); /* gives the lock back itself */
    } else if (c) {
        p = nsp__cache_alloc_slow(c, cls);
        nsp__cache_unlock(c);
    }
    if (!p) {
        /* the cache is busy (or this cpu has none, or its bin could not be detached): the
         * central serves, nobody spins. On the real machine from the node's transfer (busy
         * means a holder preempted: take without its mutex, central.h); virtual cores keep one
         * object under the mutex, exactly charged (their busy caches are foreign takers') */
        unsigned node = nsp__topo->cache_node[nsp__cache_index_now()];
        p = nsp__virtual ? nsp__central_alloc(node, cls) : nsp__central_alloc_busy(node, cls);
    }
    if (!p) { /* no cache lock held now: a trim may take the other caches */
        nsp_trim();
        p = nsp__central_alloc(nsp__topo->cache_node[nsp__cache_index_now()], cls);
    }
    if (p) /* a slot freed through a magazine keeps its tag until written: not the program's */
        *(uint64_t *)p = 0;
    nsp__pacer_after_alloc(); /* a synchronous cycle that came due runs here, holding no lock */
    return nsp__outcome(p, saved);
}

/* The first generation's path: the cache's lock, then the cached span's bitmap. Caches without
 * bins (cache.h) live on it; the bins' misses come through it to their slow path. */
__attribute__((noinline)) void *nsp__alloc_small_locked(unsigned cls)
{
#ifdef NSP_RSEQ_LOCKS
    /* the bin's span had no free slot left at its last miss (cache.h, `full`): the cpu's slab,
     * no lock (slab.h) */
    struct nsp_cache *tb = nsp__tb;
    void *q;
    if (likely(tb != NULL) && __atomic_load_n(&tb->bins[cls].full, __ATOMIC_RELAXED) &&
        (q = nsp__slab_alloc(tb, cls)))
        return q;
#endif
    struct nsp_cache *c = nsp__cache_acquire();
#ifdef NSP_RSEQ_LOCKS
    /* the cache is busy (a holder preempted): the cpu's slab, no lock */
    if (unlikely(!c) && tb && (q = nsp__slab_alloc(tb, cls)))
        return q;
#endif
    if (likely(c) && !(c->bins_on && nsp__tb == c)) {
        struct nsp_span *s = c->spans[cls];
        /* a cycle since this cache last looked: its spans are stale, the slow path releases them */
        uint32_t sg = atomic_load_explicit(&nsp__sweepgen, memory_order_relaxed);
        uint32_t a0 = s->alloc_count; /* the hand-out may keep a slot back too (span.h) */
        /* the cursor's word, without a look at `dirty`: with the cursor below the frontier in
         * the frontier's word, this takes that word's fresh slots while remote frees wait (at
         * most the word: the slow path, from_cached, sweeps before its next fresh slot; a bin's
         * carve stops at the frontier instead, cache.c). Not checked here: a load and a branch
         * on every locked malloc for at most 63 slots of a span touched early */
        void *p = likely(c->flush_gen == sg) ? nsp__span_alloc_fast(s) : NULL;
        if (likely(p)) {
            s->nmalloc++;
            nsp__cache_counts_check(s); /* a span cached for good (cache.h) */
            if (nsp__ledger_exact())
                nsp__ledger_exact_objects(s, (int64_t)(s->alloc_count - a0), c->pending);
            nsp__cache_unlock(c);
            return p;
        }
        /* exact: a slot the hand-out kept back (span.h) is allocated even when the cursor's
         * word had no other to give: charged here, or never (the slow path counts its own) */
        if (unlikely(s->alloc_count != a0) && nsp__ledger_exact())
            nsp__ledger_exact_objects(s, (int64_t)(s->alloc_count - a0), c->pending);
    }
    return alloc_small_slow(cls, c);
}

/* Before initialisation: the bootstrap path (runtime.h). */
__attribute__((noinline)) void *nsp__alloc_boot(size_t n, size_t align)
{
    return nsp__boot_alloc(n ? n : 1, align);
}

/* malloc's path when the thread has no bin cache (alloc.h) or n is large: the
 * initialisation's check (the bins' path needs none), then the small or large path. */
__attribute__((noinline)) void *nsp__alloc_nobin(size_t n)
{
    if (unlikely(!atomic_load_explicit(&nsp__ready, memory_order_acquire)) &&
        !nsp__init_keeping_errno())
        return nsp__alloc_boot(n, 16);
    if (likely(n <= NSP_MAX_SMALL))
        return alloc_small(nsp__size_to_class(n ? n : 1));
    return nsp__alloc_large(n);
}

/* nsp__ready not yet seen: initialise (hwloc may set errno on its way: the caller's is kept). */
__attribute__((noinline)) int nsp__init_keeping_errno(void)
{
    int saved = errno, ready = nsp__init();
    errno = saved;
    return ready;
}
