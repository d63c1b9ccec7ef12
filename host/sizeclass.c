/*
 * host/sizeclass.c — building the size-class tables (the method is in sizeclass.h).
 *
 * Owns: nsp__classes and the two lookup tables. Built once, read-only afterwards.
 */
#include "sizeclass.h"

#include <assert.h>

struct nsp_sizeclass nsp__classes[NSP_NUM_CLASSES];
uint8_t nsp__class_small[1024 / 8 + 1];
uint8_t nsp__class_mid[(NSP_MAX_SMALL - 1024) / 128 + 1];

static uint32_t span_pages(uint32_t size)
{
    /* at least 32 objects, or 512 KiB when 32 would not fit: big classes refill rarely too */
    uint32_t want = (uint32_t)((512u << 10) / size);
    want = want < 32 ? want : 32;
    for (uint32_t n = 8;; n++) {
        size_t bytes = (size_t)n * NSP_PAGE_SIZE;
        if (bytes / size >= want && bytes % size <= bytes / 16)
            return n;
    }
}

void nsp__sizeclass_init(void)
{
    if (nsp__classes[1].size)
        return;
    /* the sizes are the shared rule of include/numaspan_geometry.h (the device heap's too) */
    for (unsigned c = 1; c < NSP_NUM_CLASSES; c++) {
        struct nsp_sizeclass *k = &nsp__classes[c];
        uint32_t size = nsp_geom_class_size(c);
        k->size = size;
        k->npages = span_pages(size);
        k->nelems = (uint32_t)((size_t)k->npages * NSP_PAGE_SIZE / size);
        k->divmul = (uint32_t)(((1ULL << 32) + size - 1) / size);
    }
    assert(nsp__classes[NSP_NUM_CLASSES - 1].size == NSP_MAX_SMALL);
    nsp__sizeclass_lookup(0);
}

void nsp__sizeclass_lookup(size_t extra)
{
    /* a request the largest class cannot hold with `extra` more bytes still gets that class */
    unsigned k = 1;
    for (size_t i = 0; i < sizeof nsp__class_small; i++) {
        size_t n = (i << 3) + extra;
        while (k + 1 < NSP_NUM_CLASSES && nsp__classes[k].size < n)
            k++;
        nsp__class_small[i] = (uint8_t)k;
    }
    for (size_t i = 0; i < sizeof nsp__class_mid; i++) {
        size_t n = 1024 + (i << 7) + extra;
        while (k + 1 < NSP_NUM_CLASSES && nsp__classes[k].size < n)
            k++;
        nsp__class_mid[i] = (uint8_t)k;
    }
}
