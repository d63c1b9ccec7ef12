/*
 * host/aligned.c — aligned allocation (posix_memalign, aligned_alloc, memalign, valloc, pvalloc:
 * their arguments' rules are api.c's).
 *
 * Owns no state. An alignment up to a page is met by a size class: classes are multiples of 16
 * and powers of two are classes, and a class's objects start at multiples of its size in a span
 * that starts on a page, so every object of a class whose size is a multiple of align is
 * aligned. A larger alignment, or a request above NSP_MAX_SMALL, is a large span placed at that
 * alignment (large.c).
 */
#include <stdint.h>

#include "alloc.h"
#include "runtime.h"
#include "sizeclass.h"

/* The smallest class that holds n bytes with every object aligned to align (<= a page):
 * classes are multiples of 16 and powers of two are classes, so one is always found. */
static unsigned aligned_class(size_t n, size_t align)
{
    unsigned cls = nsp__size_to_class(n < align ? align : n);
    while (cls < NSP_NUM_CLASSES && nsp__classes[cls].size % align)
        cls++;
    return cls < NSP_NUM_CLASSES ? cls : 0;
}

void *nsp__alloc_aligned(size_t align, size_t n)
{
    if (align <= 16) /* class 8 objects are only 8-aligned: ask for 16 B at least */
        return alloc(n < align ? align : n);
    if (unlikely(!atomic_load_explicit(&nsp__ready, memory_order_acquire)) &&
        !nsp__init_keeping_errno())
        return nsp__alloc_boot(n, align);
    if (n <= NSP_MAX_SMALL && align <= NSP_PAGE_SIZE) {
        unsigned cls = aligned_class(n ? n : 1, align);
        if (cls)
            return alloc_small(cls);
    }
    return nsp__alloc_large_on(n, align, nsp__current_node());
}
