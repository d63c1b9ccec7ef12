/*
 * host/span.c — the slow parts of a span's life: set-up, the cursor's scan, and the sweep; and the
 * remote-free tag's key.
 * The fast parts and the rules of ownership are in span.h; the fields in types.h.
 */
#include "span.h"

#include <string.h>

#include "magazine.h"
#include "pageheap.h"
#include "runtime.h"
#include "secure.h"
#include "sizeclass.h"

/* The remote-free tag's key (magazine.h), set by nsp__magazine_init. It lives here, at the bottom
 * of the layers, because a tag is written wherever a free sets a freed bit: by the magazines, by
 * free.c's direct remote free and by the central's give-back of a transfer chain, and the central
 * sits below the magazines. */
uint64_t nsp__magazine_key;

/* The remote-free list's searches by second frees (span.h): free.c counts, stats.c reads. */
_Atomic uint64_t nsp__xfree_searches;

struct nsp_freed_stripe nsp__freed_pending[NSP_MAX_NODES][NSP_FREED_STRIPES];

void nsp__span_init_small(struct nsp_span *s, unsigned cls)
{
    const struct nsp_sizeclass *k = &nsp__classes[cls];
    s->sizeclass = (uint8_t)cls;
    s->elemsize = k->size;
    s->nelems = k->nelems;
    s->divmul = k->divmul;
    s->alloc_count = 0;
    s->frontier = 0; /* nothing handed out yet: the slots' memory is the pages' old contents */
    atomic_store_explicit(&s->charge, 0, memory_order_relaxed);
    s->nmalloc = s->nfree = 0;
    uint32_t nw = nsp__span_nwords(s);
    /* the bitmaps at the first page's place in the arena's bitmap array, the freed one right
     * after the alloc one (types.h; never in the interior descriptors: nsp__span_bitmaps_at).
     * Line 0 is written before the span is published (the page map's release below) */
    s->alloc_bits = nsp__span_bitmaps_at(s->arena, s->start_page);
    s->freed_bits = (_Atomic uint64_t *)s->alloc_bits + nsp__span_freed_offset(nw);
    /* The bitmap area is reused from earlier spans of these pages: clear what this one uses. */
    for (uint32_t w = 0; w < nw; w++) {
        nsp__span_set_alloc_word(s, w, 0);
        atomic_store_explicit(&s->freed_bits[w], 0, memory_order_relaxed);
    }
    atomic_store_explicit(&s->dirty, 0, memory_order_relaxed);
    if (nsp__span_has_xfree(s))
        nsp__span_xfree_init(s);
    /* the class into the page map and the class map (pageheap.h): the bins' free finds its bin
     * from the class map's byte. The entry with release, after the fields above, then the byte,
     * relaxed (pageheap.h, "Publication": nsp__pagemap_publish's stores, written out here since
     * the page heap's header sits above this layer) */
    for (uint64_t p = s->start_page; p < s->start_page + s->npages; p++) {
        __atomic_store_n(&s->arena->pagemap[p], (struct nsp_span *)((uintptr_t)s | cls),
                         __ATOMIC_RELEASE);
        __atomic_store_n(&s->arena->classmap[p], (uint8_t)cls, __ATOMIC_RELAXED);
    }
    if (__builtin_expect(nsp__secure, 0))
        nsp__secure_init_span(s);
    nsp__span_rewind(s);
}

void *nsp__span_next_free(struct nsp_span *s)
{
    if (__builtin_expect(nsp__secure, 0))
        return nsp__secure_next_free(s);
    /* first fit: every slot below the cursor is allocated (nsp__span_cursor_down), so the scan
     * from it finds the lowest free slot: live objects stay packed in a span's first pages (RSS)
     * and freed slots are reused while still warm */
    uint32_t fi = s->freeindex, nw = nsp__span_nwords(s);
    for (uint32_t w = fi >> 6; w < nw; w++) {
        uint64_t avail = ~s->alloc_bits[w];
        if (w == (fi >> 6))
            avail &= ~0ULL << (fi & 63);
        if (w == nw - 1 && (s->nelems & 63))
            avail &= (1ULL << (s->nelems & 63)) - 1;
        if (!avail)
            continue;
        unsigned bit = (unsigned)__builtin_ctzll(avail);
        uint32_t idx = w * 64 + bit;
        s->alloc_cache = (avail >> bit) >> 1;
        s->freeindex = idx + 1;
        nsp__span_set_alloc_word(s, w, s->alloc_bits[w] | 1ULL << bit);
        s->alloc_count++;
        void *p = nsp__span_handout(s, idx);
        /* NULL: the slot was kept back, written over while free (nsp__span_untagged), and the
         * cursor's word had nothing after it: on from the cursor */
        return p ? p : nsp__span_next_free(s);
    }
    s->freeindex = s->nelems;
    s->alloc_cache = 0;
    return NULL;
}

int nsp__span_next_is_fresh(const struct nsp_span *s)
{
    uint32_t fi = s->freeindex, front = s->frontier;
    if (__builtin_expect(nsp__secure, 0) || fi >= front)
        return 1;
    if (s->alloc_cache) /* bit 0 is slot fi (types.h): its lowest free slot is taken next */
        return fi + (uint32_t)__builtin_ctzll(s->alloc_cache) >= front;
    /* the word used up, or not loaded after a rewind: nsp__span_next_free's scan, up to the
     * frontier (every slot below fi is allocated: types.h) */
    uint32_t last = (front - 1) >> 6;
    for (uint32_t w = fi >> 6; w <= last; w++) {
        uint64_t avail = ~s->alloc_bits[w];
        if (w == (fi >> 6))
            avail &= ~0ULL << (fi & 63);
        if (w == last && (front & 63))
            avail &= (1ULL << (front & 63)) - 1;
        if (avail)
            return 0;
    }
    return 1;
}

uint32_t nsp__span_carve(struct nsp_span *s, uint32_t room, uintptr_t *out)
{
    uint64_t c = s->alloc_cache;
    uint32_t fi = s->freeindex;
    if (!c || !room || fi >= s->nelems)
        return 0;
    if (s->nelems - fi < 64) /* no slot past the span's end (alloc_fast's test, once) */
        c &= (1ULL << (s->nelems - fi)) - 1;
    /* bit k of c is slot fi + k, bit (fi & 63) + k of the cursor's word: the word holds them all */
    uint32_t sh = fi & 63, front = s->frontier, n = 0, taken = 0, k = 0;
    uintptr_t base = s->base, size = s->elemsize;
    uint64_t set = 0, bad = 0;
    for (uint64_t rest = c; rest && taken < room; taken++) {
        k = (uint32_t)__builtin_ctzll(rest);
        rest &= rest - 1;
        set |= 1ULL << (sh + k);
        uintptr_t p = base + (uintptr_t)(fi + k) * size;
        /* below the frontier a free slot carries its tag (the header): one without it was
         * written while free, and stays allocated (reported below, once the span is whole) */
        if (fi + k < front && __builtin_expect(nsp__magazine_tagged((void *)p) < 0, 0) &&
            !nsp__secure)
            bad |= 1ULL << k;
        else
            out[n++] = p;
    }
    if (!taken)
        return 0;
    uint32_t last = fi + k, w = fi >> 6;
    s->alloc_cache = (c >> k) >> 1;
    s->freeindex = last + 1;
    nsp__span_set_alloc_word(s, w, s->alloc_bits[w] | set);
    s->alloc_count += taken;
    if (last >= front)
        s->frontier = (uint16_t)(last + 1);
    for (; bad; bad &= bad - 1) { /* kept allocated, counted as allocations (nsp__span_untagged) */
        s->nmalloc++;
        nsp__report_error(NSP_ERR_WRITE_AFTER_FREE, "malloc",
                          (void *)(base + (uintptr_t)(fi + __builtin_ctzll(bad)) * size));
    }
    return n;
}

void *nsp__span_untagged(struct nsp_span *s, uint32_t idx)
{
    void *p = (void *)(s->base + (uintptr_t)idx * s->elemsize);
    /* It stays allocated (its bit set by the hand-out): whoever holds it (a double free's push
     * may have handed it out from a bin, alloc.h) frees it as any live object, and the counts
     * agree with the bitmap (an allocation made, as the program may hold it). */
    s->nmalloc++;
    nsp__report_error(NSP_ERR_WRITE_AFTER_FREE, "malloc", p);
    /* From the cursor's word only: a scan of the bitmap would load a new word, which in `over`
     * a cached span's charge must cover before it hands any of it out (ledger.h, the cover),
     * and the locked fast path that may have called us does not check it. NULL sends that path
     * to its slow side, which scans and covers; nsp__span_next_free scans on by itself. */
    return nsp__span_alloc_fast(s);
}

uint32_t nsp__span_keep_held(struct nsp_span *s)
{
    if (__builtin_expect(nsp__secure, 0))
        return 0;
    uint32_t kept = 0;
    for (uint32_t idx = 0; idx < s->frontier; idx++) {
        void *p = (void *)(s->base + (uintptr_t)idx * s->elemsize);
        uint64_t bit = 1ULL << (idx & 63);
        if ((s->alloc_bits[idx >> 6] & bit) || nsp__magazine_tagged(p) >= 0)
            continue;
        nsp__span_set_alloc_word(s, idx >> 6, s->alloc_bits[idx >> 6] | bit);
        s->alloc_count++;
        s->nmalloc++;
        kept++;
        nsp__report_error(NSP_ERR_WRITE_AFTER_FREE, "free", p);
    }
    return kept;
}

/* The remote-free list from l, applied to the alloc bitmap: the sweep's walk (span.h). Each link is
 * checked to land on a slot of s (one written over is reported, naming the object it was read
 * from, and never followed) and each object to be still allocated (else a second push of one
 * object, or one freed already: *first and *xdbl name it and the walk stops, the rest may be a
 * cycle); each object's alloc bit is cleared. Returns the objects freed; *lowest comes down to
 * the lowest of them. Owner only.
 *
 * Why it is written so (producer/consumer, issue 11). A walk of a linked list waits, at each step,
 * for the load of the link before it can issue the next one: with the lines coming from another
 * cpu's cache or from L2, that chain, not the work, was the walk's time (3-5 ns an object, the
 * producer's sweep; perf). But a list a consumer pushed is its frees in the order it made them,
 * which is the order the producer handed the objects out: slot after slot, so each link names the
 * slot just below (99.7% of links, counted at 2, 8 and 32 threads). So the next step starts from
 * that guess, l - size, and the loaded link only confirms it (a branch, predicted, instead of a
 * data dependency: the loads of several steps are in flight at once); a link that names anything
 * else is followed and checked as before. For the same reason the alloc word of a run of slots is
 * read once and stored once, its cleared bits collected in a register, instead of a load and a
 * store through memory per object. */
static uint32_t xfree_apply(struct nsp_span *s, uintptr_t l, uint32_t *lowest, uintptr_t *first,
                            uint32_t *xdbl)
{
    const uintptr_t size = s->elemsize, key = nsp__magazine_key;
    uintptr_t prev = l;
    uint32_t n = 0, cw = UINT32_MAX, idx = l ? nsp__span_index(s, l) : 0;
    uint64_t a = 0, m = 0; /* alloc word cw as read, and the bits this walk cleared in it */
    for (uint32_t steps = 0; l && steps <= s->nelems; steps++) {
        if (idx == UINT32_MAX) { /* a link written over while listed */
            nsp__report_error(NSP_ERR_FREE_LIST, "free", (void *)prev);
            break;
        }
        uint32_t w = idx >> 6;
        uint64_t bit = 1ULL << (idx & 63);
        if (w != cw) {
            if (m) {
                nsp__span_set_alloc_word(s, cw, a & ~m);
                nsp__span_cursor_add(s, cw, m); /* the cursor's word stays exact (span.h) */
            }
            cw = w;
            a = s->alloc_bits[w];
            m = 0;
        }
        if (!(a & ~m & bit)) {
            *first = l;
            *xdbl = 1;
            break; /* a second push of one object (or freed already): the rest may be a cycle */
        }
        m |= bit;
        n++;
        if (idx < *lowest)
            *lowest = idx;
        uintptr_t next = ((const uint64_t *)l)[1] ^ key, guess = l - size;
        __asm__("" : "+r"(guess)); /* l from the guess, not from the loaded link (above) */
        prev = l;
        if (__builtin_expect(next == guess && idx != 0, 1)) {
            l = guess; /* the slot below: a slot of s, as idx - 1 says */
            idx--;
        } else {
            l = next;
            idx = l ? nsp__span_index(s, l) : 0;
        }
    }
    if (m) {
        nsp__span_set_alloc_word(s, cw, a & ~m);
        nsp__span_cursor_add(s, cw, m);
    }
    return n;
}

__attribute__((no_sanitize("thread"))) uint32_t nsp__span_xfree_length(const struct nsp_span *s,
                                                                     unsigned k)
{
    /* The span's geometry from the descriptor's place in its arena and class k's table, not from
     * the descriptor's words: s may be let go and its pages set up again while it is read, and
     * then its slot may describe another span or nothing (pageheap.h), so base and bytes read
     * from it could send the walk anywhere. By place, every link the walk follows
     * lies in the arena's pages, which stay mapped. */
    if (k == 0 || k >= NSP_NUM_CLASSES)
        return 0;
    const struct nsp_sizeclass *kc = &nsp__classes[k];
    uint32_t start, nelems = kc->nelems, size = kc->size, n = 0;
    const struct nsp_arena *ar;
    if (kc->npages < 2 || size < 16 || !(ar = nsp__arena_of_desc(s, kc->npages, &start)))
        return 0; /* no list (nsp__span_has_xfree's test, on k), or not a span of k there */
    uintptr_t base = ar->base + ((uintptr_t)start << NSP_PAGE_SHIFT);
    uintptr_t bytes = (uintptr_t)kc->npages << NSP_PAGE_SHIFT;
    uintptr_t l = atomic_load_explicit(nsp__span_xfree((struct nsp_span *)s),
                                       memory_order_acquire) ^
                  nsp__span_xfree_seal(s);
    /* a slot's start inside the span, as the sweep checks each link (nsp__span_index) */
    while (l && n <= nelems && l - base <= bytes - size && (l - base) % size == 0) {
        n++;
        l = __atomic_load_n(&((const uint64_t *)l)[1], __ATOMIC_RELAXED) ^ nsp__magazine_key;
    }
    return n;
}

uint32_t nsp__span_sweep(struct nsp_span *s, uint32_t *doubles, uintptr_t *first_double)
{
    uint32_t applied = 0, dbl = 0, nw = nsp__span_nwords(s);
    uintptr_t first = 0;
    uint32_t lowest = UINT32_MAX; /* the lowest slot applied: the cursor moves down to it */
    /* Clear `dirty` before taking the words: a free that lands after a word was taken sets it
     * again, so it is never lost (types.h). */
    atomic_store(&s->dirty, 0);
    /* The remote-free list first (span.h): its objects are in no freed bit, so neither what it
     * applies nor its double (xdbl) goes off the freed-pending count below, which counts bits. */
    uint32_t xapplied = 0, xdbl = 0;
    if (nsp__span_has_xfree(s))
        xapplied = xfree_apply(s, nsp__span_xfree_take(s), &lowest, &first, &xdbl);
    for (uint32_t w = 0; w < nw; w++) {
        /* seq_cst, not relaxed: a word skipped here must be one whose freer then sees the clear
         * above (span.h, "Ordering": the store-buffer pair with nsp__span_freed_remote) */
        if (!atomic_load(&s->freed_bits[w]))
            continue;
        uint64_t f = atomic_exchange(&s->freed_bits[w], 0);
        uint64_t a = s->alloc_bits[w];
        uint64_t bad = f & ~a;
        if (bad) {
            if (!dbl && !xdbl)
                first = s->base + (uintptr_t)(w * 64 + (unsigned)__builtin_ctzll(bad)) * s->elemsize;
            dbl += nsp__popcount64(bad);
        }
        nsp__span_set_alloc_word(s, w, a & ~f);
        nsp__span_cursor_add(s, w, f & a); /* past the cursor in its word: cached (span.h) */
        applied += nsp__popcount64(f & a);
        /* the lowest of the list's slots and the bits' (the words go up, the list in no order) */
        if ((f & a) && w * 64 + (unsigned)__builtin_ctzll(f & a) < lowest)
            lowest = w * 64 + (unsigned)__builtin_ctzll(f & a);
    }
    s->alloc_count -= applied + xapplied;
    if (applied + xapplied)
        nsp__span_cursor_down(s, lowest);
    if (applied + dbl) /* every bit the exchanges took, applied or double (span.h) */
        nsp__span_count_freed(nsp__span_freed_counter(s), -(int64_t)(applied + dbl));
    applied += xapplied;
    *doubles = dbl + xdbl;
    *first_double = first;
    return applied;
}
