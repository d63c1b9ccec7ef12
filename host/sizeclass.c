/*
 * host/sizeclass.c — building the size-class tables (the method is in sizeclass.h).
 *
 * Owns: nsp__classes, the local free's divisibility constants (nsp__class_push) and the lookup
 * table (nsp__class_of). Built once, read-only afterwards.
 */
#include "sizeclass.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "options.h"

struct nsp_sizeclass nsp__classes[NSP_NUM_CLASSES];
uint64_t nsp__class_push[NSP_NUM_CLASSES] __attribute__((aligned(64)));
uint8_t nsp__class_of[NSP_MAX_SMALL / 8 + 1] __attribute__((aligned(64)));

/* The fewest pages, at least min_pages, that hold the class's objects with little tail waste. */
static uint32_t span_pages(uint32_t size, uint32_t min_pages)
{
    /* at least 32 objects, or 512 KiB when 32 would not fit: big classes refill rarely too */
    uint32_t want = (uint32_t)((512u << 10) / size);
    want = want < 32 ? want : 32;
    for (uint32_t n = min_pages;; n++) {
        size_t bytes = (size_t)n * NSP_PAGE_SIZE;
        if (bytes / size >= want && bytes % size <= bytes / 16)
            return n;
    }
}

/* A class table that breaks a span's limits: said, naming the class, and stopped (allocates
 * nothing: this runs before the allocator is ready). */
static void class_bad(unsigned c, const struct nsp_sizeclass *k)
{
    char msg[200];
    int n = snprintf(msg, sizeof msg,
                     "numaspan: size class %u (%u B): a span of %u pages holds %u objects, past "
                     "the carve frontier's 65535 or its bitmaps' %u (window %u pages)\n",
                     c, k->size, k->npages, k->nelems, k->npages * (unsigned)(NSP_PAGE_SIZE / 8),
                     k->window_pages);
    if (n > 0)
        (void)!write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
    abort();
}

/* NSP_SMALL_SPAN in pages: the least span of the classes up to NSP_BIG_SPAN_MAX_SIZE. Past
 * 256 KiB the 8 B class would hold more slots than the carve frontier counts (types.h). */
static uint32_t small_span_pages(void)
{
    size_t bytes = nsp__option_size(NSP_OPT_SMALL_SPAN);
    if (bytes < 8 * NSP_PAGE_SIZE || bytes > NSP_BIG_SPAN_PAGES * NSP_PAGE_SIZE ||
        bytes % NSP_PAGE_SIZE)
        nsp__option_reject(NSP_OPT_SMALL_SPAN, "a span size from 64K to 256K, a multiple of 8K");
    return (uint32_t)(bytes >> NSP_PAGE_SHIFT);
}

void nsp__sizeclass_init(void)
{
    if (nsp__classes[1].size)
        return;
    uint32_t small = small_span_pages();
    /* the sizes are the shared rule of include/numaspan_geometry.h (the device heap's too) */
    for (unsigned c = 1; c < NSP_NUM_CLASSES; c++) {
        struct nsp_sizeclass *k = &nsp__classes[c];
        uint32_t size = nsp_geom_class_size(c);
        k->size = size;
        /* the window is the span the class had before spans grew (sizeclass.h) */
        k->window_pages = span_pages(size, 8);
        k->npages = size <= NSP_BIG_SPAN_MAX_SIZE ? span_pages(size, small) : k->window_pages;
        k->nelems = (uint32_t)((size_t)k->npages * NSP_PAGE_SIZE / size);
        k->divmul = (uint32_t)(((1ULL << 32) + size - 1) / size);
        nsp__class_push[c] = nsp__class_divisor_mul(size);
        /* every slot index must fit the span's 16-bit carve frontier (types.h: one past the
         * highest slot) and its bitmaps (one bit per 8 bytes of its pages); a table that breaks
         * either would corrupt spans silently, so it stops here */
        if (k->nelems > UINT16_MAX || k->nelems > k->npages * (NSP_PAGE_SIZE / 8) ||
            k->window_pages > k->npages)
            class_bad(c, k);
    }
    assert(nsp__classes[NSP_NUM_CLASSES - 1].size == NSP_MAX_SMALL);
    nsp__sizeclass_lookup(0);
}

void nsp__sizeclass_lookup(size_t extra)
{
    /* a request the largest class cannot hold with `extra` more bytes still gets that class */
    unsigned k = 1;
    for (size_t i = 0; i < sizeof nsp__class_of; i++) {
        size_t n = (i ? i << 3 : 1) + extra; /* malloc(0) is malloc(1): alloc.h looks 0 up */
        while (k + 1 < NSP_NUM_CLASSES && nsp__classes[k].size < n)
            k++;
        nsp__class_of[i] = (uint8_t)k;
    }
}
