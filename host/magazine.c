/*
 * host/magazine.c — the remote-free magazines' key and flush (magazine.h says what a magazine
 * holds and why the tag exists; cache.h and cache.c push, detach and attach them).
 */
#include "magazine.h"

#include <errno.h>

#include "central.h"
#include "os.h"
#include "pageheap.h"
#include "runtime.h"
#include "span.h"

void nsp__magazine_init(void)
{
    /* the cache index rides in bits 48..62 of a tag: the key leaves them to it */
    nsp__magazine_key = nsp__os_random() & ~(0x7fffULL << 48);
}

/* Insertion sort: at most NSP_MAG_SLOTS objects, and a magazine filled by one thread's frees is
 * often nearly sorted already. Measured against a shell sort (Ciura's gaps) and a heap sort on 60
 * random addresses, as Larson's frees fill a magazine: 1.0-1.3 us here, against 2.0-2.1 and 2.2
 * (their comparisons mispredict; the insertion's inner loop exits once per object). */
static void sort(uintptr_t *a, unsigned n)
{
    for (unsigned i = 1; i < n; i++) {
        uintptr_t v = a[i];
        unsigned j = i;
        for (; j > 0 && a[j - 1] > v; j--)
            a[j] = a[j - 1];
        a[j] = v;
    }
}

/* objs[i..end) lie in span s and bitmap word w: their bits, a repeat reported. */
static uint64_t word_mask(struct nsp_span *s, const uintptr_t *objs, unsigned i, unsigned end)
{
    uint64_t mask = 0;
    for (; i < end; i++) {
        uint64_t bit = 1ULL << (nsp__span_index(s, objs[i]) & 63);
        if (mask & bit) /* listed twice: two frees of one object raced the tag */
            nsp__report_error(NSP_ERR_DOUBLE_FREE, "free", (void *)objs[i]);
        mask |= bit;
    }
    return mask;
}

/* The first of objs[i..end) whose bit is in bad. */
static uintptr_t first_of(struct nsp_span *s, const uintptr_t *objs, unsigned i, unsigned end,
                          uint64_t bad)
{
    for (; i < end; i++)
        if (bad >> (nsp__span_index(s, objs[i]) & 63) & 1)
            return objs[i];
    return objs[end - 1];
}

void nsp__magazine_apply(uintptr_t *objs, unsigned n)
{
    int saved = errno;
    sort(objs, n);
    for (unsigned i = 0; i < n;) {
        struct nsp_span *s = nsp__span_of((void *)objs[i]);
        /* every object passed the free's checks: an allocated object of a live span */
        uintptr_t end_addr = s->base + (uintptr_t)s->nelems * s->elemsize;
        while (i < n && objs[i] < end_addr) {
            uint32_t w = nsp__span_index(s, objs[i]) >> 6;
            unsigned j = i + 1;
            while (j < n && objs[j] < end_addr && nsp__span_index(s, objs[j]) >> 6 == w)
                j++;
            uint64_t mask = word_mask(s, objs, i, j);
            uint64_t alloc = __atomic_load_n(&s->alloc_bits[w], __ATOMIC_RELAXED);
            uint64_t old = atomic_fetch_or(&s->freed_bits[w], mask & alloc);
            /* freed since the tag's check (a racing double free): the bit was set already, or
             * the slot is free; the OR left such bits as they were */
            uint64_t bad = (old & mask & alloc) | (mask & ~alloc);
            if (bad)
                nsp__report_error(NSP_ERR_DOUBLE_FREE, "free",
                                  (void *)first_of(s, objs, i, j, bad));
            i = j;
        }
        if (nsp__span_freed_remote(s)) /* once for all its objects */
            nsp__central_wake(s);
    }
    errno = saved;
}
