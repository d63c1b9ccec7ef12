/*
 * host/malloc.c — the malloc entry points: nsp_* and the standard names.
 *
 * Owns: the routing of each request. Small (<= 32 KiB): the calling thread's core cache. On the
 * real machine that is its bin (cache.h): one restartable sequence whose commit pops, no lock and
 * no atomic; a miss takes the cache's lock and goes to the slow path, which refills the bin from
 * the cached span (or the central). Caches without bins give a slot from the cached span's bitmap
 * under the cache's lock. A cache that cannot be taken at once sends the request to the central.
 * Large: page-granular spans from the node's page heap; huge (>= 32 MiB): a mapping of its own.
 *
 * free: the page map gives the span; a pointer no span owns, one inside an object, or a freed
 * object is reported (runtime.h). A free by the thread whose core caches the span is a push onto
 * its bin (one restartable sequence), or, without bins or when the object looks freed already,
 * applied under the cache lock after re-checking that the cache still holds the span (the bin
 * settled first); every other free is one atomic OR on the span's freed bitmap (DESIGN.md §3).
 * errno: untouched by every call that succeeds (an allocation that got its memory only after a
 * refusal inside — a spill to another node, a retry after a trim — included), set by every one
 * that fails (ENOMEM, EINVAL); free keeps it.
 *
 * Out of memory: before an allocation returns NULL it trims (idle caches released, centrals'
 * empty spans back to the page heaps, free pages handed back) and tries once more, so memory
 * freed by other size classes or held in caches is used before the caller sees ENOMEM.
 */
#include <errno.h>
#include <malloc.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>

#include "cache.h"
#include "central.h"
#include "ledger.h"
#include "numaspan.h"
#include "pacer.h"
#include "pageheap.h"
#include "runtime.h"
#include "sizeclass.h"
#include "secure.h"
#include "span.h"

#define NSP_EXPORT __attribute__((visibility("default")))
#define NSP_ALIAS(name) __attribute__((alias(#name), visibility("default")))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* ---- allocation ------------------------------------------------------------------------------- */

static void *enomem(void)
{
    errno = ENOMEM;
    return NULL;
}

/* The end of every allocation's slow path: errno as the caller left it when p was found (inner
 * refusals may have set it), ENOMEM when not. */
static void *outcome(void *p, int saved)
{
    errno = p ? saved : ENOMEM;
    return p;
}

static __attribute__((noinline)) void *alloc_small_slow(unsigned cls, struct nsp_cache *c)
{
    int saved = errno;
    void *p = NULL;
    if (c) {
        p = c->bins_on && nsp__tb == c ? nsp__cache_alloc_bin(c, cls)
                                       : nsp__cache_alloc_slow(c, cls);
        nsp__cache_unlock(c);
    }
    if (!p) {
        /* the cache is busy (or this cpu has none, or its bin could not be detached): the
         * central serves, nobody spins */
        p = nsp__central_alloc(nsp__topo->cache_node[nsp__cache_index_now()], cls);
    }
    if (!p) { /* no cache lock held now: a trim may take the other caches */
        nsp_trim();
        p = nsp__central_alloc(nsp__topo->cache_node[nsp__cache_index_now()], cls);
    }
    nsp__pacer_after_alloc(); /* a synchronous cycle that came due runs here, holding no lock */
    return outcome(p, saved);
}

/* The first generation's path: the cache's lock, then the cached span's bitmap. Caches without
 * bins (cache.h) live on it; the bins' misses come through it to their slow path. */
static __attribute__((noinline)) void *alloc_small_locked(unsigned cls)
{
    struct nsp_cache *c = nsp__cache_acquire();
    if (likely(c) && !(c->bins_on && nsp__tb == c)) {
        struct nsp_span *s = c->spans[cls];
        /* a cycle since this cache last looked: its spans are stale, the slow path releases them */
        uint32_t sg = atomic_load_explicit(&nsp__sweepgen, memory_order_relaxed);
        void *p = likely(c->flush_gen == sg) ? nsp__span_alloc_fast(s) : NULL;
        if (likely(p)) {
            s->nmalloc++;
            if (nsp__ledger_exact())
                nsp__ledger_exact_objects(s, 1, c->pending);
            nsp__cache_unlock(c);
            return p;
        }
    }
    return alloc_small_slow(cls, c);
}

static inline void *alloc_small(unsigned cls)
{
#ifdef NSP_RSEQ_LOCKS
    /* the bins (cache.h): one restartable sequence whose commit is the pop */
    struct nsp_cache *tb = nsp__tb;
    if (likely(tb != NULL)) {
        void *p;
        while (unlikely((p = nsp__bin_pop(&tb->bins[cls])) == (void *)1))
            ;
        if (likely(p)) {
            /* the link is the program's now: a free of an object never written must not look
             * like a free of a listed one (free_to_bin) */
            *(uint64_t *)p = 0;
            return p;
        }
    }
#endif
    return alloc_small_locked(cls);
}

static unsigned current_node(void)
{
    unsigned i = nsp__topo_current_cache(nsp__topo);
    return nsp__topo->cache_node[i];
}

static struct nsp_span *large_span(size_t n, size_t align, unsigned node)
{
    size_t npages = (n + NSP_PAGE_SIZE - 1) >> NSP_PAGE_SHIFT;
    size_t align_pages = align > NSP_PAGE_SIZE ? align >> NSP_PAGE_SHIFT : 1;
    if (n >= NSP_HUGE_MIN || npages + align_pages - 1 > NSP_ARENA_PAGES)
        return nsp__huge_alloc(node, n, align);
    return nsp__central_pages(node, npages, align_pages);
}

static void *alloc_large_on(size_t n, size_t align, unsigned node)
{
    if (n > PTRDIFF_MAX || align > ((size_t)1 << 40))
        return enomem();
    if (n == 0) /* a zero-size request at a large alignment: one page, a unique pointer */
        n = 1;
    int saved = errno;
    size_t guard = nsp__secure ? NSP_PAGE_SIZE : 0; /* secure.h: a page after the object */
    n += guard;
    struct nsp_span *s = large_span(n, align, node);
    if (!s) {
        nsp_trim();
        s = large_span(n, align, node);
    }
    if (!s)
        return enomem();
    s->sizeclass = 0;
    s->elemsize = (uint32_t)((size_t)s->npages << NSP_PAGE_SHIFT);
    s->nelems = 1;
    if (guard)
        nsp__secure_guard(s, 1);
    atomic_store_explicit(&s->state, NSP_SPAN_LARGE, memory_order_release);
    atomic_fetch_add_explicit(&nsp__large_allocs[s->node], 1, memory_order_relaxed);
    nsp__ledger_large(s, 1);
    nsp__pacer_after_alloc();
    return outcome((void *)s->base, saved);
}

/* Before initialisation: the bootstrap path (runtime.h). */
static __attribute__((noinline)) void *alloc_boot(size_t n, size_t align)
{
    return nsp__boot_alloc(n ? n : 1, align);
}

/* nsp__ready not yet seen: initialise (hwloc may set errno on its way: the caller's is kept). */
static __attribute__((noinline)) int init_keeping_errno(void)
{
    int saved = errno, ready = nsp__init();
    errno = saved;
    return ready;
}

/* A large malloc, out of line: its retry and accounting would otherwise make every malloc save
 * registers it does not use. */
static __attribute__((noinline)) void *alloc_large(size_t n)
{
    return alloc_large_on(n, NSP_PAGE_SIZE, current_node());
}

static inline void *alloc(size_t n)
{
    if (unlikely(!atomic_load_explicit(&nsp__ready, memory_order_acquire)) && !init_keeping_errno())
        return alloc_boot(n, 16);
    if (likely(n <= NSP_MAX_SMALL))
        return alloc_small(nsp__size_to_class(n ? n : 1));
    return alloc_large(n);
}

/* The smallest class that holds n bytes with every object aligned to align (<= a page):
 * classes are multiples of 16 and powers of two are classes, so one is always found. */
static unsigned aligned_class(size_t n, size_t align)
{
    unsigned cls = nsp__size_to_class(n < align ? align : n);
    while (cls < NSP_NUM_CLASSES && nsp__classes[cls].size % align)
        cls++;
    return cls < NSP_NUM_CLASSES ? cls : 0;
}

static void *alloc_aligned(size_t align, size_t n)
{
    if (align <= 16) /* class 8 objects are only 8-aligned: ask for 16 B at least */
        return alloc(n < align ? align : n);
    if (unlikely(!atomic_load_explicit(&nsp__ready, memory_order_acquire)) && !init_keeping_errno())
        return alloc_boot(n, align);
    if (n <= NSP_MAX_SMALL && align <= NSP_PAGE_SIZE) {
        unsigned cls = aligned_class(n ? n : 1, align);
        if (cls)
            return alloc_small(cls);
    }
    return alloc_large_on(n, align, current_node());
}

/* ---- free ------------------------------------------------------------------------------------- */

static __attribute__((noinline)) void free_large(struct nsp_span *s, void *p)
{
    if ((uintptr_t)p != s->base) {
        nsp__report_error(NSP_ERR_INTERIOR, "free", p);
        return;
    }
    uint32_t large = NSP_SPAN_LARGE;
    if (!atomic_compare_exchange_strong(&s->state, &large, NSP_SPAN_TAKEN)) { /* being freed */
        nsp__report_error(NSP_ERR_DOUBLE_FREE, "free", p);
        return;
    }
    int saved = errno;
    if (unlikely(nsp__secure))
        nsp__secure_guard(s, 0);
    atomic_fetch_add_explicit(&nsp__large_frees[s->node], 1, memory_order_relaxed);
    nsp__ledger_large(s, 0);
    if (s->arena->huge)
        nsp__huge_free(s);
    else
        nsp__pageheap_free(s);
    errno = saved;
}

static __attribute__((noinline)) void free_unowned(void *p)
{
    if (nsp__boot_owns(p))
        return; /* bootstrap memory is never reused: nothing to do */
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

static __attribute__((noinline)) void free_remote(struct nsp_span *s, uint32_t idx, void *p)
{
#ifdef NSP_RSEQ_LOCKS
    if (unlikely(nsp__bin_lists(s, p)))
        fold_bins_of(s);
#endif
    /* exact charges the free before its freed bit can be seen: the other way round, a sweep
     * could apply the bit and give the emptied span back to the page heap with this charge still
     * to come (heapLive then differed from the sum of the charges, NSP_DEBUG=1 found it). The
     * other modes wait for the sweep. */
    int exact = nsp__ledger_exact();
    if (exact)
        nsp__ledger_exact_objects(s, -1, NULL);
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

#ifdef NSP_RSEQ_LOCKS
/* A local free into the thread's bin (cache.h): 0 when pushed; 1 when the locked path must do
 * it: the bin is detached or holds another span, or the object does not look allocated. Inside
 * the sequence, after the key is read: its alloc bit must be set (clear: freed already, or folded
 * back from a bin), and its first word must not decode, with the bin's key, to a link of this span
 * (a listed object's does, so a second free of it goes to the locked path, which settles the bin
 * and answers exactly; a live object whose first word decodes so by chance is freed there too).
 * The order matters: a fold clears alloc bits before a new key is published, and a fold after the
 * key was read restarts the sequence (its fence), so the bit read is never older than the key. */
static inline int free_to_bin(struct nsp_cache *tb, struct nsp_span *s, uint32_t idx, void *p)
{
    struct nsp_bin *b = &tb->bins[s->sizeclass];
    int r;
    while (unlikely((r = nsp__bin_push(b, s, idx, p)) == 2))
        ;
    return r;
}
#endif

/* A small object's free that its bin did not take: the locked local free, or a remote one. */
static __attribute__((noinline)) void free_small(struct nsp_span *s, uint32_t idx, void *p)
{
    if (unlikely(nsp__secure)) /* the canary checked, the slot poisoned (secure.h) */
        nsp__secure_free(s, idx, p);
    uint32_t hint = nsp__cache_hint();
    if (atomic_load_explicit(&s->state, memory_order_relaxed) == NSP_SPAN_CACHED &&
        (hint == UINT32_MAX || hint == __atomic_load_n(&s->cache, __ATOMIC_RELAXED))) {
        /* (a span another cache holds is freed remotely without taking our own cache) */
        struct nsp_cache *c = nsp__cache_acquire();
        if (likely(c)) {
            /* re-checked under the lock: only this cache can take the span from itself; its
             * bin settled first, so that the bitmap's answer is exact (a double free of an
             * object in the bin's list is caught here) */
            if (likely(c->spans[s->sizeclass] == s) &&
                likely(nsp__cache_settle(c, s->sizeclass) == 0)) {
                int r = nsp__span_free_local(s, idx);
                if (likely(r == 0)) {
                    s->nfree++;
                    if (nsp__ledger_exact())
                        nsp__ledger_exact_objects(s, -1, c->pending);
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

/* Every free the bins' fast path does not finish: NULL, foreign, large, interior, or a small one
 * without bins. */
static __attribute__((noinline)) void free_any(void *p)
{
    if (unlikely(!p))
        return;
    struct nsp_span *s = nsp__span_of(p);
    if (unlikely(!s)) {
        free_unowned(p);
        return;
    }
    if (unlikely(s->sizeclass == 0)) {
        free_large(s, p);
        return;
    }
    uint32_t idx = nsp__span_index(s, (uintptr_t)p);
    if (unlikely(idx == UINT32_MAX)) {
        nsp__report_error(NSP_ERR_INTERIOR, "free", p);
        return;
    }
    free_small(s, idx, p);
}

NSP_EXPORT void nsp_free(void *p)
{
#ifdef NSP_RSEQ_LOCKS
    /* the bins' fast path: a small object of the span our bin holds is pushed (free_to_bin),
     * with no call, no lock and no atomic; everything else is free_any's */
    struct nsp_cache *tb = nsp__tb;
    if (likely(tb != NULL) && likely(p != NULL)) {
        struct nsp_span *s = nsp__span_of(p);
        if (likely(s != NULL) && likely(s->sizeclass != 0)) {
            uint32_t idx = nsp__span_index(s, (uintptr_t)p);
            if (likely(idx != UINT32_MAX)) {
                if (likely(free_to_bin(tb, s, idx, p) == 0))
                    return;
                free_small(s, idx, p);
                return;
            }
        }
    }
#endif
    free_any(p);
}

/* ---- the rest of the API ---------------------------------------------------------------------- */

NSP_EXPORT void *nsp_malloc(size_t n)
{
    return alloc(n);
}

NSP_EXPORT void *nsp_calloc(size_t n, size_t size)
{
    size_t total;
    if (unlikely(__builtin_mul_overflow(n, size, &total)))
        return enomem();
    void *p = alloc(total);
    if (!p)
        return NULL;
    struct nsp_span *s = nsp__span_of(p);
    /* fresh pages from the OS are zero already; a small slot or a reused run is not */
    if (!s || s->sizeclass != 0 || s->needzero)
        memset(p, 0, total);
    return p;
}

NSP_EXPORT size_t nsp_malloc_usable_size(void *p)
{
    if (!p)
        return 0;
    struct nsp_span *s = nsp__span_of(p);
    if (!s) {
        if (nsp__boot_owns(p))
            return nsp__boot_size(p);
        nsp__report_error(NSP_ERR_NOT_OWNED, "malloc_usable_size", p);
        return 0;
    }
    if (s->sizeclass == 0)
        return ((size_t)s->npages << NSP_PAGE_SHIFT) - ((uintptr_t)p - s->base) -
               (nsp__secure ? NSP_PAGE_SIZE : 0); /* the guard page */
    return nsp__secure_usable(s->sizeclass, s->elemsize); /* the canary is not the program's */
}

/* Whether slot idx of s (object p) is allocated, exactly: an object in a bin's list still has its
 * alloc bit set, so one whose first word decodes to a link of its span (see free_to_bin) has its
 * cache taken, which folds the bins, and is asked again. */
static int slot_live(struct nsp_span *s, uint32_t idx, void *p)
{
    (void)p; /* without rseq there are no bins to ask */
    if (!nsp__span_slot_live(s, idx))
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

/* realloc of an object that is not allocated (freed already): reported like a double free;
 * nothing is returned, so nothing can alias it. */
static __attribute__((noinline)) void *realloc_freed(void *p)
{
    nsp__report_error(NSP_ERR_DOUBLE_FREE, "realloc", p);
    errno = EINVAL;
    return NULL;
}

/* nsp__huge_resize within the hard limit on mapped memory (pageheap.h): growth is counted first
 * and refused past the limit (realloc then tries a fresh allocation, which trims); a shrink is
 * uncounted once done. */
static int huge_resize_counted(struct nsp_span *s, size_t n)
{
    size_t old = s->arena->size, len = (n + NSP_ARENA_SIZE - 1) & ~(NSP_ARENA_SIZE - 1);
    if (len < n)
        return -1;
    if (len > old && nsp__mapped_add(len - old) < 0)
        return -1;
    if (nsp__huge_resize(s, n) < 0) {
        if (len > old)
            nsp__mapped_sub(len - old);
        return -1;
    }
    if (len < old)
        nsp__mapped_sub(old - len);
    return 0;
}

NSP_EXPORT void *nsp_realloc(void *p, size_t n)
{
    if (!p)
        return alloc(n);
    if (n == 0) {
        nsp_free(p);
        return NULL;
    }
    size_t old;
    struct nsp_span *s = nsp__span_of(p);
    if (s && s->sizeclass) {
        uint32_t idx = nsp__span_index(s, (uintptr_t)p);
        if (idx == UINT32_MAX) {
            nsp__report_error(NSP_ERR_INTERIOR, "realloc", p);
            return NULL;
        }
        /* a freed object must not come back as the result: the next malloc would alias it */
        if (!slot_live(s, idx, p))
            return realloc_freed(p);
        old = nsp__secure_usable(s->sizeclass, s->elemsize);
        if (n <= NSP_MAX_SMALL && nsp__size_to_class(n) == s->sizeclass)
            return p;
    } else if (s) {
        if (atomic_load_explicit(&s->state, memory_order_acquire) != NSP_SPAN_LARGE)
            return realloc_freed(p); /* being freed, or freed and its pages reused */
        if ((uintptr_t)p != s->base) {
            nsp__report_error(NSP_ERR_INTERIOR, "realloc", p);
            return NULL;
        }
        /* NSP_SECURE: the last page is the guard (secure.h), outside the object */
        size_t guard = nsp__secure ? NSP_PAGE_SIZE : 0;
        old = ((size_t)s->npages << NSP_PAGE_SHIFT) - guard;
        /* keep the pages while the new size still uses more than half of them */
        if (n > NSP_MAX_SMALL && n <= old && n > old / 2)
            return p;
        /* grow without copying: into the free pages after it, or by moving a huge mapping's
         * pages (mremap), as glibc does for its mmapped chunks; a guard page is lifted first
         * and laid again at the new end */
        int saved = errno, moved = -1;
        size_t want = n + guard;
        if (want > old + guard && !s->arena->huge && want < NSP_HUGE_MIN) {
            if (guard)
                nsp__secure_guard(s, 0);
            moved = nsp__pageheap_grow(s, (want + NSP_PAGE_SIZE - 1) >> NSP_PAGE_SHIFT);
        } else if (s->arena->huge && want >= NSP_HUGE_MIN) {
            if (guard)
                nsp__secure_guard(s, 0);
            moved = huge_resize_counted(s, want);
        }
        if (guard) /* at the end of the object, moved or not */
            nsp__secure_guard(s, 1);
        if (moved == 0) {
            nsp__ledger_large_resized(s);
            errno = saved; /* an mremap tried in place first may have failed */
            return (void *)s->base;
        }
        errno = saved;
    } else if (nsp__boot_owns(p)) {
        old = nsp__boot_size(p);
    } else {
        nsp__report_error(NSP_ERR_NOT_OWNED, "realloc", p);
        return NULL;
    }
    void *q = alloc(n);
    if (!q)
        return NULL; /* the old block stays valid, as the standard says */
    memcpy(q, p, old < n ? old : n);
    nsp_free(p);
    return q;
}

static int valid_alignment(size_t a)
{
    return a && !(a & (a - 1));
}

NSP_EXPORT int nsp_posix_memalign(void **out, size_t align, size_t n)
{
    if (!valid_alignment(align) || align % sizeof(void *))
        return EINVAL;
    int saved = errno;
    void *p = alloc_aligned(align, n);
    if (!p) {
        errno = saved;
        return ENOMEM;
    }
    *out = p;
    return 0;
}

NSP_EXPORT void *nsp_aligned_alloc(size_t align, size_t n)
{
    if (!valid_alignment(align)) {
        errno = EINVAL;
        return NULL;
    }
    return alloc_aligned(align, n);
}

/* glibc's memalign (and its documented behaviour since forever): an alignment up to 16 is
 * malloc's, one that is not a power of two is rounded up to the next power of two, and only an
 * alignment no power of two of size_t can reach is EINVAL. aligned_alloc and posix_memalign keep
 * their standards' stricter rules. */
static void *nsp_memalign(size_t align, size_t n)
{
    if (align <= 16) /* not alloc(n): a class-8 slot is only 8-aligned, glibc's malloc is 16 */
        return alloc_aligned(align, n);
    if (align > SIZE_MAX / 2 + 1) {
        errno = EINVAL;
        return NULL;
    }
    if (!valid_alignment(align))
        align = (size_t)1 << (64 - __builtin_clzll((unsigned long long)align));
    return alloc_aligned(align, n);
}

static void *nsp_valloc(size_t n)
{
    return nsp_aligned_alloc(4096, n);
}

static void *nsp_pvalloc(size_t n)
{
    size_t r = (n + 4095) & ~(size_t)4095;
    if (r < n)
        return enomem();
    return nsp_aligned_alloc(4096, r ? r : 4096);
}

static void *nsp_reallocarray(void *p, size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total))
        return enomem();
    return nsp_realloc(p, total);
}

NSP_EXPORT void *nsp_malloc_node(size_t n, unsigned node)
{
    if (!atomic_load_explicit(&nsp__ready, memory_order_acquire) && !nsp__init())
        return enomem();
    if (node >= nsp__nnodes) {
        errno = EINVAL;
        return NULL;
    }
    if (n <= NSP_MAX_SMALL) {
        int saved = errno;
        void *p = nsp__central_alloc(node, nsp__size_to_class(n ? n : 1));
        return outcome(p, saved);
    }
    return alloc_large_on(n, NSP_PAGE_SIZE, node);
}

NSP_EXPORT int nsp_node_of(const void *p)
{
    struct nsp_span *s = p ? nsp__span_of(p) : NULL;
    return s ? (int)s->node : -1;
}

NSP_EXPORT size_t nsp_trim(void)
{
    if (!atomic_load_explicit(&nsp__ready, memory_order_acquire))
        return 0;
    size_t released = 0;
    for (unsigned i = 0; i < nsp__ncaches; i++) {
        struct nsp_cache *c = &nsp__caches[i];
        if (nsp__cache_lock_foreign(c)) { /* a busy cache is not idle: leave it */
            nsp__cache_release_all(c);
            nsp__cache_unlock(c);
        }
    }
    for (unsigned n = 0; n < nsp__nnodes; n++) {
        nsp__central_trim(n);
        released += nsp__pageheap_scavenge(n);
    }
    return released;
}

/* Here rather than in pacer.c: it initialises the allocator and trims, both above the pacer. */
NSP_EXPORT size_t nsp_pacer_release_all(void)
{
    if (!atomic_load_explicit(&nsp__ready, memory_order_acquire) && !nsp__init())
        return 0;
    size_t scavenged = nsp__pacer_release_cycle();
    return nsp_trim() + scavenged;
}

/* ---- the standard names ----------------------------------------------------------------------- */

void *malloc(size_t n) NSP_ALIAS(nsp_malloc);
void free(void *p) NSP_ALIAS(nsp_free);
void *calloc(size_t n, size_t size) NSP_ALIAS(nsp_calloc);
void *realloc(void *p, size_t n) NSP_ALIAS(nsp_realloc);
int posix_memalign(void **out, size_t align, size_t n) NSP_ALIAS(nsp_posix_memalign);
void *aligned_alloc(size_t align, size_t n) NSP_ALIAS(nsp_aligned_alloc);
void *memalign(size_t align, size_t n) NSP_ALIAS(nsp_memalign);
void *valloc(size_t n) NSP_ALIAS(nsp_valloc);
void *pvalloc(size_t n) NSP_ALIAS(nsp_pvalloc);
size_t malloc_usable_size(void *p) NSP_ALIAS(nsp_malloc_usable_size);
void *reallocarray(void *p, size_t n, size_t size) NSP_ALIAS(nsp_reallocarray);
void cfree(void *p) NSP_ALIAS(nsp_free);
/* glibc's internal names, which some programs and static links call directly */
void *__libc_malloc(size_t n) NSP_ALIAS(nsp_malloc);
void __libc_free(void *p) NSP_ALIAS(nsp_free);
void *__libc_calloc(size_t n, size_t size) NSP_ALIAS(nsp_calloc);
void *__libc_realloc(void *p, size_t n) NSP_ALIAS(nsp_realloc);
void *__libc_memalign(size_t align, size_t n) NSP_ALIAS(nsp_memalign);
void *__libc_valloc(size_t n) NSP_ALIAS(nsp_valloc);
void *__libc_pvalloc(size_t n) NSP_ALIAS(nsp_pvalloc);

NSP_EXPORT int malloc_trim(size_t pad)
{
    (void)pad;
    return nsp_trim() > 0;
}
