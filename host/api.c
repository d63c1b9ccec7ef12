/*
 * host/api.c — the public names: nsp_* (numaspan.h) and the standard ones, glibc's internal
 * names included.
 *
 * Owns the arguments' rules of each standard (overflow of count x size, alignments that must be
 * powers of two, memalign's rounding, realloc's cases) and nothing else: each entry point inlines
 * the fast path it shares with the others (alloc.h) and hands everything else to the file of its
 * concern (alloc.c, free.c, aligned.c, large.c, trim.c). The standard names are aliases of the
 * nsp_* definitions, so they are here: an alias must be in the file that defines its target.
 * errno and out of memory: as alloc.h says for every entry point.
 */
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <string.h>

#include "alloc.h"
#include "cache.h"
#include "central.h"
#include "ledger.h"
#include "numaspan.h"
#include "pageheap.h"
#include "runtime.h"
#include "secure.h"
#include "sizeclass.h"
#include "span.h"

/* ---- malloc and free -------------------------------------------------------------------------- */

NSP_EXPORT void *nsp_malloc(size_t n)
{
    return alloc(n);
}

NSP_EXPORT void nsp_free(void *p)
{
#ifdef NSP_RSEQ_LOCKS
    /* the bins' fast path: a small object of the span our bin holds is pushed (free_to_bin), with
     * no call, no lock and no atomic, its bin found from the class map's byte without the span's
     * descriptor (pageheap.h); a small object it refuses (mostly another cpu's: a remote free) is
     * nsp__free_classed's, everything else (NULL and large objects: class 0) nsp__free_any's
     * (free.c). Nothing but p lives across the push: a value kept for the slow path would make the
     * push save a register. */
    struct nsp_cache *tb = nsp__tb;
    if (likely(tb != NULL)) {
        uintptr_t cls = nsp__page_class_wrapped(p); /* p checked against the bin's span */
        if (likely(cls != 0)) {
            if (likely(free_to_bin(tb, cls, p) == 0))
                return;
            nsp__free_classed(p);
            return;
        }
    }
#endif
    nsp__free_any(p);
}

/* ---- the rest of the API ---------------------------------------------------------------------- */

NSP_EXPORT void *nsp_calloc(size_t n, size_t size)
{
    size_t total;
    if (unlikely(__builtin_mul_overflow(n, size, &total)))
        return nsp__enomem();
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

/* realloc of an object that is not allocated (freed already): reported like a double free;
 * nothing is returned, so nothing can alias it. */
static __attribute__((noinline)) void *realloc_freed(void *p)
{
    nsp__report_error(NSP_ERR_DOUBLE_FREE, "realloc", p);
    errno = EINVAL;
    return NULL;
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
        if (!nsp__slot_live(s, idx, p))
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
            moved = nsp__huge_resize_counted(s, want);
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
    void *p = nsp__alloc_aligned(align, n);
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
    return nsp__alloc_aligned(align, n);
}

/* glibc's memalign (and its documented behaviour since forever): an alignment up to 16 is
 * malloc's, one that is not a power of two is rounded up to the next power of two, and only an
 * alignment no power of two of size_t can reach is EINVAL. aligned_alloc and posix_memalign keep
 * their standards' stricter rules. */
static void *nsp_memalign(size_t align, size_t n)
{
    if (align <= 16) /* not alloc(n): a class-8 slot is only 8-aligned, glibc's malloc is 16 */
        return nsp__alloc_aligned(align, n);
    if (align > SIZE_MAX / 2 + 1) {
        errno = EINVAL;
        return NULL;
    }
    if (!valid_alignment(align))
        align = (size_t)1 << (64 - __builtin_clzll((unsigned long long)align));
    return nsp__alloc_aligned(align, n);
}

static void *nsp_valloc(size_t n)
{
    return nsp_aligned_alloc(4096, n);
}

static void *nsp_pvalloc(size_t n)
{
    size_t r = (n + 4095) & ~(size_t)4095;
    if (r < n)
        return nsp__enomem();
    return nsp_aligned_alloc(4096, r ? r : 4096);
}

static void *nsp_reallocarray(void *p, size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total))
        return nsp__enomem();
    return nsp_realloc(p, total);
}

NSP_EXPORT void *nsp_malloc_node(size_t n, unsigned node)
{
    if (!atomic_load_explicit(&nsp__ready, memory_order_acquire) && !nsp__init())
        return nsp__enomem();
    if (node >= nsp__nnodes) {
        errno = EINVAL;
        return NULL;
    }
    if (n <= NSP_MAX_SMALL) {
        int saved = errno;
        void *p = nsp__central_alloc(node, nsp__size_to_class(n ? n : 1));
        /* a slot freed remotely keeps its free tag until written (span.h): as every other
         * hand-out (alloc.h, alloc.c), not the program's, or a free of it before it writes there
         * looks listed or waiting (free.c: a search of its span's remote-free list, or a foreign
         * take of the cache a magazine tag names) */
        if (p)
            *(uint64_t *)p = 0;
        return nsp__outcome(p, saved);
    }
    return nsp__alloc_large_on(n, NSP_PAGE_SIZE, node);
}

NSP_EXPORT int nsp_node_of(const void *p)
{
    struct nsp_span *s = p ? nsp__span_of(p) : NULL;
    return s ? (int)s->node : -1;
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
