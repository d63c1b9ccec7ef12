/*
 * host/sizeclass.h — size classes: which class a request falls in, and each class's span shape.
 *
 * Classes run from 8 B to 32 KiB (the rule is include/numaspan_geometry.h's, shared with the
 * device heap): 8, 16, then multiples of 16 up to 128, then eight classes per
 * doubling (step = 2^(floor(log2(size-1)) - 3), a multiple of 16). Every class but 8 is a multiple
 * of 16, so every object of 16 B or more is 16-byte aligned (glibc's guarantee, which programs rely
 * on); powers of two are classes, so aligned requests find a class whose objects are aligned.
 * Rounding waste per object is under 12.5% above 128 B (at most 15 B below).
 *
 * A class's *window* is the fewest pages, at least 8 (64 KiB), that hold at least 32 objects (16
 * for the classes above 16 KiB, whose 32 would pass 512 KiB) with tail waste at most 1/16: refills
 * are rare, for big classes too, and little is lost at the end of a span. Its *span* is the
 * window, except for the classes up to NSP_BIG_SPAN_MAX_SIZE (1 KiB), whose spans are the fewest
 * pages of at least NSP_SMALL_SPAN (256 KiB; 64K gives the table before spans grew) under the
 * same waste rule (issue 11: at 32
 * threads on 2 cpus a cpu's cache serves 16 threads' live objects, and a 64 KiB span covered a
 * fraction of them, so most of Larson's frees missed the bin: docs/host-rounds.md, 15).
 * The window is what `over` charges a cached span at a time (ledger.h): a refill charges its
 * allocated slots plus one window, and the charge grows by a window as the cache hands the span
 * out, so the overestimate C = caches x classes x window bytes does not grow with the span.
 * For a class whose span did not grow (window = span), every charge is the whole span, as before.
 * `numaspan classes` prints the table with its waste; tests/test_host_units.c checks the bounds.
 *
 * Object index from an offset is (offset * divmul) >> 32 with divmul = ceil(2^32 / size), exact
 * for every offset that is a multiple of the size within a span (checked for every class).
 */
#ifndef NSP_HOST_SIZECLASS_H
#define NSP_HOST_SIZECLASS_H

#include <stddef.h>
#include <stdint.h>

#include "numaspan_geometry.h"
#include "types.h"

#define NSP_NUM_CLASSES NSP_GEOM_NUM_CLASSES /* class 0 is "large": no class */

/* Classes up to this size get spans of at least NSP_SMALL_SPAN bytes (options.c; 256 KiB by
 * default, at most NSP_BIG_SPAN_PAGES pages: see above). */
#define NSP_BIG_SPAN_MAX_SIZE 1024u
#define NSP_BIG_SPAN_PAGES 32u

struct nsp_sizeclass {
    uint32_t size;
    uint32_t npages;       /* the span's pages */
    uint32_t nelems;       /* objects a span holds: at most 65535 (the 16-bit carve frontier,
                            * types.h) and one per 8 bytes (the bitmaps' 1024 bits a page) */
    uint32_t divmul;
    uint32_t window_pages; /* the charge window (above): at most npages */
};

extern struct nsp_sizeclass nsp__classes[NSP_NUM_CLASSES];
/* Per class, what a local free's push checks a slot's start with (cache.h, nsp__bin_push): the
 * class's divisibility constant m = floor((2^64 - 1) / size) + 1, so that for an offset n below
 * 2^32 (every offset inside a span: a span has at most 2^16 slots of at most 32 KiB)
 *     n % size == 0  <=>  (n * m mod 2^64) < m
 * (Lemire, Kaser and Kurz, "Faster remainder by direct computation", 2019): one multiply and one
 * compare, where the quotient's (divmul, a shift, a second multiply) cost three more instructions
 * on every local free (loops and pairs, issue 11). One 8-byte load from a 512-byte table (8 lines,
 * all hot under Larson's mix of classes), not the 20-byte class records. Built with nsp__classes;
 * test_host_units checks the equivalence at every offset of every class's span. */
extern uint64_t nsp__class_push[NSP_NUM_CLASSES];
/* The class of every request size, by (n + 7) >> 3: one table (4 KiB, of which a program whose
 * requests stay under 1 KiB touches two lines) so that malloc's lookup is one load with no
 * branch on the size's range (issue 11: the per-operation cost; the classes above 1 KiB are
 * multiples of 128, so 8-byte steps are exact for them too). */
extern uint8_t nsp__class_of[NSP_MAX_SMALL / 8 + 1];

/* Bytes of class cls's span, and of its charge window: what a cached span reserves (cache.h). */
static inline size_t nsp__class_span_bytes(unsigned cls)
{
    return (size_t)nsp__classes[cls].npages << NSP_PAGE_SHIFT;
}

static inline size_t nsp__class_window_bytes(unsigned cls)
{
    return (size_t)nsp__classes[cls].window_pages << NSP_PAGE_SHIFT;
}

/* Builds the tables. Idempotent; called once at initialisation, before any allocation. */
void nsp__sizeclass_init(void);

/* Builds the lookup tables so that a request of n bytes gets the class of n + extra (the
 * hardened mode's canary; 0 otherwise). Before any allocation only. */
void nsp__sizeclass_lookup(size_t extra);

/* Class cls's divisibility constant (above), and the test it makes: whether offset n (below
 * 2^32) is a multiple of the class's size. */
static inline uint64_t nsp__class_push_mul(unsigned cls)
{
    return nsp__class_push[cls];
}

static inline uint64_t nsp__class_divisor_mul(uint32_t size)
{
    return UINT64_MAX / size + 1;
}

static inline int nsp__class_slot_start(uint64_t mul, uint64_t n)
{
    return n * mul < mul;
}

/* The class of a request of n bytes (n <= NSP_MAX_SMALL); n == 0 is the class of 1. */
static inline unsigned nsp__size_to_class(size_t n)
{
    return nsp__class_of[(n + 7) >> 3];
}

#endif /* NSP_HOST_SIZECLASS_H */
