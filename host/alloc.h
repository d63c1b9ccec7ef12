/*
 * host/alloc.h — the malloc entry points' shared fast paths and their files' internal interface.
 *
 * The entry points are split by concern, one file each, layered in this order (bottom first):
 *   trim.c     nsp_trim and the pacer's release: what an allocation does before it returns NULL
 *   large.c    large objects (page-granular spans of the node's page heap) and huge ones (a
 *              mapping of their own, >= 32 MiB): allocation, free, growth in place
 *   alloc.c    small objects' slow paths: the cache's lock, the central, the bootstrap region
 *   free.c     the frees the bins' fast path does not finish: locked local, remote, bad ones
 *   aligned.c  aligned allocation: a class whose objects are all aligned, else a large span
 *   api.c      the public names, nsp_* and the standard ones (an alias must sit in the file of
 *              the definition it names), with the arguments' rules of each standard
 *
 * Owns: the inline fast paths (alloc, alloc_small, alloc_from_bin, free_to_bin) that every public
 * entry point inlines. Invariant: a fast path makes no call before its bin's pop or push commits;
 * every slow path is a separate noinline function, so the fast path saves no register it does not
 * use and builds no stack frame (`objdump -d` of nsp_malloc and nsp_free shows only tail jumps to
 * them; test_fast_path.py).
 *
 * Routing. Small (<= 32 KiB): the calling thread's core cache. On the real machine that is its
 * bin (cache.h): one restartable sequence whose commit pops, no lock and no atomic; a miss takes
 * the cache's lock and goes to the slow path, which refills the bin from the cached span, or,
 * when that span is full or the cache busy, pops the cpu's slab (slab.h), or refills from the
 * central. Caches without bins give a slot from the cached span's bitmap under the cache's lock.
 * A cache that cannot be taken at once sends the request to the central. Large: page-granular
 * spans from the node's page heap; huge (>= 32 MiB): a mapping of its own.
 *
 * free: the page map gives the span (and, in its entry, a small span's class: the bins' push
 * needs nothing else of the span); a pointer no span owns, one inside an object, or a freed
 * object is reported (runtime.h). A free by the thread whose core caches the span is a push onto
 * its bin (one restartable sequence), or, without bins or when the object looks freed already,
 * applied under the cache lock after re-checking that the cache still holds the span (the bin
 * settled first); a free of another span's object on the cache's node goes into the cpu's slab
 * (slab.h: free.c's nsp__free_classed, from p's page map entry); every other free
 * is a remote one (the cpu's magazine, or one atomic OR on the span's
 * freed bitmap: DESIGN.md §3).
 *
 * errno: untouched by every call that succeeds (an allocation that got its memory only after a
 * refusal inside — a spill to another node, a retry after a trim — included), set by every one
 * that fails (ENOMEM, EINVAL); free keeps it.
 *
 * Out of memory: before an allocation returns NULL it trims (idle caches released, centrals'
 * empty spans back to the page heaps, free pages handed back) and tries once more, so memory
 * freed by other size classes or held in caches is used before the caller sees ENOMEM.
 */
#ifndef NSP_HOST_ALLOC_H
#define NSP_HOST_ALLOC_H

#include <errno.h>
#include <stdint.h>

#include "cache.h"
#include "runtime.h"
#include "sizeclass.h"
#include "span.h"

#define NSP_EXPORT __attribute__((visibility("default")))
#define NSP_ALIAS(name) __attribute__((alias(#name), visibility("default")))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* ---- the slow paths, one file each ------------------------------------------------------------ */

/* alloc.c: the small path without its bin (the cache's lock, then the central); the bootstrap
 * path before initialisation; initialisation keeping the caller's errno (hwloc may set it). */
void *nsp__alloc_small_locked(unsigned cls);
/* malloc(n) for a thread without a bin cache, or n large: initialises first if needed. */
void *nsp__alloc_nobin(size_t n);
void *nsp__alloc_boot(size_t n, size_t align);
int nsp__init_keeping_errno(void);

/* large.c: a large object on node (align a power of two up to 2^40), ENOMEM set on failure; the
 * same on the calling thread's node at page alignment (malloc's, out of line); the free of a
 * large span's object; a huge mapping resized within the limit on mapped memory (-1: refused). */
void *nsp__alloc_large_on(size_t n, size_t align, unsigned node);
void *nsp__alloc_large(size_t n);
void nsp__free_large(struct nsp_span *s, void *p);
int nsp__huge_resize_counted(struct nsp_span *s, size_t n);
unsigned nsp__current_node(void);

/* free.c: a small object's free its bin did not take (idx its slot in s); every other free; and
 * whether slot idx of s (object p) is allocated, exactly (bins folded when p looks listed). */
void nsp__free_small(struct nsp_span *s, uint32_t idx, void *p);
void nsp__free_any(void *p);
/* free.c: the free of p, whose class byte names a class, that its bin refused (nsp_free). */
void nsp__free_classed(void *p);
int nsp__slot_live(struct nsp_span *s, uint32_t idx, void *p);

/* aligned.c: n bytes aligned to align (a power of two), small when a class fits. */
void *nsp__alloc_aligned(size_t align, size_t n);

/* ---- shared helpers and the fast paths -------------------------------------------------------- */

static inline void *nsp__enomem(void)
{
    errno = ENOMEM;
    return NULL;
}

/* The end of every allocation's slow path: errno as the caller left it when p was found (inner
 * refusals may have set it), ENOMEM when not. */
static inline void *nsp__outcome(void *p, int saved)
{
    errno = p ? saved : ENOMEM;
    return p;
}

/* The fast paths are always_inline: with several callers in one file gcc would otherwise keep one
 * out-of-line copy, and nsp_malloc would jump to it (objdump showed it when malloc.c was split). */
#ifdef NSP_RSEQ_LOCKS
/* The bins (cache.h): one restartable sequence whose commit is the pop; a miss: the slow path. */
static inline __attribute__((always_inline)) void *alloc_from_bin(struct nsp_cache *tb,
                                                                  unsigned cls)
{
    void *p;
    ptrdiff_t rs = nsp__rseq_off; /* once: the sequence's "memory" clobber would reload it */
    while (unlikely((p = nsp__bin_pop_rs(&tb->bins[cls], rs)) == (void *)1))
        ;
    if (likely(p)) {
        /* the link is the program's now: a free of an object never written must not look like a
         * free of a listed one (free_to_bin) */
        *(uint64_t *)p = 0;
        return p;
    }
    return nsp__alloc_small_locked(cls);
}
#endif

static inline __attribute__((always_inline)) void *alloc_small(unsigned cls)
{
#ifdef NSP_RSEQ_LOCKS
    struct nsp_cache *tb = nsp__tb;
    if (likely(tb != NULL))
        return alloc_from_bin(tb, cls);
#endif
    return nsp__alloc_small_locked(cls);
}

/* A thread with a bin cache (nsp__tb set) saw the allocator initialised: its cache was found
 * from the topology, which exists only after nsp__ready. So malloc tests nsp__tb first and reads
 * nsp__ready only without one (nsp__alloc_nobin): the fast path loads no flag and builds no stack
 * frame for the initialisation's call (issue 11, Larson at 2 threads: the per-operation cost;
 * test_fast_path checks both). n == 0 is looked up as 1 (sizeclass.h). */
static inline __attribute__((always_inline)) void *alloc(size_t n)
{
#ifdef NSP_RSEQ_LOCKS
    struct nsp_cache *tb = nsp__tb;
    if (likely(tb != NULL) && likely(n <= NSP_MAX_SMALL))
        return alloc_from_bin(tb, nsp__size_to_class(n));
#endif
    return nsp__alloc_nobin(n);
}

#ifdef NSP_RSEQ_LOCKS
/* A local free into the thread's bin of class cls, the class p's class byte names
 * (nsp__page_class_wrapped, pageheap.h; nsp__bin_push, cache.h, lists what the sequence checks): 0
 * when pushed; 1 when the locked path must do it. A listed object's first word decodes to a link of
 * its span, so a second free of it goes to the locked path, which settles the bin and answers
 * exactly (a live object whose first word decodes so by chance is freed there too). The order
 * matters: a fold clears alloc bits before a new key is published, and a fold after the key was
 * read restarts the sequence (its fence), so the bit read is never older than the key. The class's
 * divisibility constant comes from the class table nsp__class_push (one load from a line every free
 * of the class shares, sizeclass.h), not from the span. */
static inline __attribute__((always_inline)) int free_to_bin(struct nsp_cache *tb, uintptr_t cls,
                                                             void *p)
{
    uint64_t mul = nsp__class_push_mul(cls); /* before b: gcc then spends no move on cls */
    struct nsp_bin *b = &tb->bins[cls];
    ptrdiff_t rs = nsp__rseq_off; /* once, as alloc_from_bin's */
    int r;
    while (unlikely((r = nsp__bin_push_rs(b, p, mul, rs)) == 2))
        ;
    return r;
}
#endif

#endif /* NSP_HOST_ALLOC_H */
