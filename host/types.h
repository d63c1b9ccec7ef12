/*
 * host/types.h — every core struct of the host allocator and its geometry, in one place.
 *
 * The layers (DESIGN.md §2, bottom up): size classes (sizeclass.c), spans (span.c), the page heap
 * with its arenas and page map (pageheap.c), node centrals (central.c), core caches (cache.c),
 * the malloc entry points (alloc.h: trim.c, large.c, alloc.c, free.c, aligned.c, api.c), stats
 * (stats.c).
 *
 * Geometry
 *   page   8 KiB (NSP_PAGE_SHIFT)
 *   arena  64 MiB of pages (fewer when the OS refuses that much: pageheap.c), aligned to 64 MiB,
 *          all of one node; its metadata (page map, class map, span descriptors, bitmaps) lives
 *          in a separate mapping so that user pages stay contiguous.
 *          arena_table[addr >> 26] finds the arena of any address in O(1); pagemap[page] its span
 *          (and a small span's class, in the entry's low bits: pageheap.h); classmap[page] the
 *          same class alone, a byte per page (the bins' free reads it: pageheap.h).
 *   huge   a request above NSP_HUGE_MIN gets its own mapping (a "huge arena" of one span).
 *
 * Span (struct nsp_span). A run of pages holding objects of one size class, or one large object.
 * Its descriptor is arena->spans[start page], so it needs no allocation of its own. Its two
 * bitmaps lie side by side, alloc_bits first, freed_bits at nsp__span_freed_offset words after
 * them (span.h: the next 128-byte pair of lines), in arena->bitmaps at 32 words per page from its
 * first page's (16 words each: 1,024 bits, one per 8-byte object, the most a page can hold): the
 * pair takes 256 bytes for up to 16 words a bitmap (every class from 256 B in a 256 KiB span),
 * which never cross a 4 KiB page from their place, and a page or two for the smallest classes.
 * So a 256 KiB span in use has 8 KiB of metadata resident: its descriptors' page and a page of
 * bitmaps (12 KiB with the bitmaps in two arrays; Larson at 2 threads holds ~68 spans). Never in
 * the span's interior descriptors (4 KiB less, but a descriptor slot must only ever hold a
 * descriptor: span.h, nsp__span_bitmaps_at).
 *
 *   alloc_bits    1 = slot allocated. Written only by the span's owner (the caching core under its
 *                 cache lock, or the central under its lock), with relaxed atomic stores: remote
 *                 freers read a slot's bit to catch a double free (span.h).
 *   freed_bits    1 = freed by a non-owner, not yet applied. Any thread sets a bit with one atomic
 *                 OR; a sweep folds a word in with one atomic exchange: alloc &= ~(freed & alloc),
 *                 and freed & ~alloc are double frees. Each freed bit is applied exactly once.
 *   dirty         1 = some freed bit may be set. Set by the first remote freer after a sweep,
 *                 cleared by the sweep before it exchanges the words.
 *   freeindex, alloc_cache
 *                 the owner's cursor: every slot below freeindex is allocated (each free into
 *                 the bitmap moves it down: nsp__span_cursor_down), so the scan from it is first
 *                 fit; alloc_cache holds ~alloc_bits of freeindex's word shifted so that bit 0
 *                 is slot freeindex (bits past the word's end are 0): every free slot of the
 *                 word from freeindex up to its highest bit, or 0 (used up, or not loaded
 *                 after a rewind: nsp__span_next_free scans).
 *   alloc_count   slots whose alloc bit is 1 (owner-written). Live objects of the span are
 *                 alloc_count - popcount(freed_bits & alloc_bits).
 *   frontier      the carve frontier: one past the highest slot handed out (to the program, a
 *                 bin's list, a transfer) since the span was set up; 0 at set-up, it only grows.
 *                 Slots are handed out lowest first from the cursor, so every slot below it has
 *                 been handed out once and every slot at or past it never has (its memory is
 *                 whatever the pages held: never read, never written, RSS follows use).
 *                 Free slots below it carry the free tag (span.h): what lets the bins' push tell
 *                 a free slot from a live one without reading the alloc bitmap (cache.h).
 *   state         changed only by compare-and-swap (or by the owner of the span's list):
 *
 *     FREE      a page run in the page heap (or a dead descriptor absorbed by a neighbour)
 *     CACHED    held by core cache `cache`; only that cache allocates from it
 *     PARTIAL   in its central's partial list: has (or may have) free slots
 *     FULL      in its central's full list; the first remote freer moves it to PARTIAL by CAS
 *     SWEEPING  taken out of a list by a central that is sweeping it or serving from it, under
 *               that central's lock (owner: that central); always a set-up small span
 *     LARGE     one large object (sizeclass 0)
 *     TAKEN     out of the page heap and not yet anything else: being set up (fresh from
 *               nsp__pageheap_alloc, until the caller makes it CACHED, PARTIAL, FULL, SWEEPING or
 *               LARGE) or being freed (a large object on its way back); its fields are being
 *               written by the one thread that took it, holding no lock. Never FREE, or a
 *               neighbour freed meanwhile would coalesce with it.
 *
 *   A span has exactly one owner at any time: its cache (CACHED), its central (PARTIAL, FULL,
 *   SWEEPING), its page heap (FREE), its object's holder (LARGE) or the thread that took it
 *   (TAKEN).
 *   A span released while dirty goes to PARTIAL, never FULL, so no free is stranded.
 *
 *   charge        the bytes the span contributes to heapLive[node] (DESIGN.md §5, the ledger);
 *                 applied to heapLive by the rules of ledger.h.
 *
 *   The remote-free list's head (span.h, nsp__span_xfree) is not a field of the span's own
 *   descriptor: it is the alloc_cache word of its second page's descriptor, which no one reads
 *   or writes otherwise while the span is set up (an interior page's descriptor describes
 *   nothing; desc_at rewrites it only when the pages are free again, after every listed object
 *   has been swept; the word is sealed with the span's identity, span.h, so that a late push
 *   refuses it once it is another span's). Objects on the list keep their alloc bits until the
 *   owner's sweep applies them, exactly as objects whose freed bits wait.
 */
#ifndef NSP_HOST_TYPES_H
#define NSP_HOST_TYPES_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define NSP_PAGE_SHIFT 13
#define NSP_PAGE_SIZE ((size_t)1 << NSP_PAGE_SHIFT)
#define NSP_ARENA_SHIFT 26
#define NSP_ARENA_SIZE ((size_t)1 << NSP_ARENA_SHIFT)
#define NSP_ARENA_PAGES (NSP_ARENA_SIZE / NSP_PAGE_SIZE)
/* The user addresses the arena table covers (pageheap.c, set_table: a mapping past them is
 * refused). x86-64: 47 bits, its user space with 4-level paging (5-level paging maps higher only
 * for a hint past 2^47, which numaspan never gives). aarch64: 48 bits, its kernels' usual user
 * space, where mmap hands out addresses just below 2^48 (a 52-bit kernel goes higher only for a
 * hint past 2^48). */
#if defined(__aarch64__)
#define NSP_ADDR_BITS 48
#else
#define NSP_ADDR_BITS 47
#endif
#define NSP_ARENA_SLOTS ((size_t)1 << (NSP_ADDR_BITS - NSP_ARENA_SHIFT))
#define NSP_BITMAP_WORDS_PER_PAGE (NSP_PAGE_SIZE / 8 / 64)

#define NSP_MAX_SMALL 32768        /* largest size class; above: page-granular spans */
#define NSP_HUGE_MIN (NSP_ARENA_SIZE / 2) /* from here on, a mapping of its own */
#define NSP_MAX_NODES 64
#define NSP_CACHE_LINE 64

/* The bits set in a bitmap word, inline: the library is built for x86-64's baseline, without the
 * popcnt instruction, and __builtin_popcountll there is a call into libgcc's table loop
 * (__popcountdi2). Every count of the span bitmaps' bits uses this one. */
static inline unsigned nsp__popcount64(uint64_t x)
{
    x -= (x >> 1) & 0x5555555555555555ULL;
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
    return (unsigned)((x * 0x0101010101010101ULL) >> 56);
}

enum nsp_span_state {
    NSP_SPAN_FREE = 0,
    NSP_SPAN_CACHED,
    NSP_SPAN_PARTIAL,
    NSP_SPAN_FULL,
    NSP_SPAN_SWEEPING,
    NSP_SPAN_LARGE,
    NSP_SPAN_TAKEN, /* last: the states before it keep their numbers */
};

enum nsp_span_list { NSP_LIST_NONE = 0, NSP_LIST_PARTIAL, NSP_LIST_FULL };

struct nsp_arena;

/* Field order is the free path's: everything the frees that are not the bins' push read (the
 * locked and remote frees, free.c; the push reads no descriptor: its class is in the page map
 * entry, pageheap.h) lies in the first cache line, and nothing written while the span is cached
 * does, so that line stays in every freeing cpu's cache; the owner's cursor and counts, what
 * remote freers write (dirty) and the central's list links are in the second. (With the cursor
 * in the first line, each carve of the owner's took that line from the cpus freeing the span's
 * objects: producer/consumer's every free read it again.) */
struct nsp_span {
    /* line 0: what frees read; set while the span is set up or changes owner */
    uintptr_t base;
    uint64_t *alloc_bits;
    _Atomic uint64_t *freed_bits;
    struct nsp_arena *arena;
    uint64_t npages;        /* 64 bits: a huge object of 32 TiB has 2^32 pages */
    uint32_t elemsize;
    uint32_t nelems;
    uint32_t divmul;        /* ceil(2^32 / elemsize): index = (offset * divmul) >> 32 */
    _Atomic uint32_t state;
    uint32_t cache;         /* the caching core cache while CACHED */
    uint8_t sizeclass;      /* 0 for a large object (classes < 128: the page map's low bits) */
    uint8_t node;           /* < NSP_MAX_NODES */
    uint8_t needzero;       /* FREE runs: 1 if the pages may hold old data (not fresh from the OS) */
    uint8_t scavenged;      /* FREE runs: 1 if the pages were handed back with madvise */
    /* line 1: the owner's cursor and counts, remote freers' flag, the list links */
    uint64_t alloc_cache;
    uint32_t freeindex;
    uint32_t alloc_count;
    uint16_t frontier;      /* one past the highest slot handed out since set-up (owner's; see
                             * above; a span has at most 32768 slots, 32 pages of 8 B, and
                             * the class table refuses one past 65535: sizeclass.c) */
    uint16_t list;          /* enum nsp_span_list: where its central keeps it (central lock) */
    _Atomic uint32_t dirty;
    struct nsp_span *next, *prev; /* central list or page-heap free list */
    _Atomic int64_t charge; /* ledger: bytes charged to heapLive[node] (ledger.h) */
    uint32_t start_page;    /* index of the first page in its arena */
    uint32_t sweepgen;      /* ledger.h: sg + 3 cached this cycle, sg + 1 stale */
    uint32_t nmalloc;       /* owner's counts since the last flush into the ledger's totals
                             * (at its release, or past 2^31 while cached: cache.h) */
    uint32_t nfree;
} __attribute__((aligned(NSP_CACHE_LINE)));
_Static_assert(offsetof(struct nsp_span, alloc_cache) == NSP_CACHE_LINE,
               "the owner's cursor starts the second line: the first is the frees' (above)");
_Static_assert(sizeof(struct nsp_span) == 2 * NSP_CACHE_LINE,
               "a descriptor per page: two cache lines, no more");

/* The metadata mapping of an arena starts with this struct, its page map follows at
 * NSP_ARENA_HDR bytes and its class map at NSP_ARENA_CLASSMAP, so that a lookup computes their
 * addresses instead of loading them. arena_table entries have bit 0 set for huge arenas. */
#define NSP_ARENA_HDR 128
#define NSP_ARENA_CLASSMAP (NSP_ARENA_HDR + NSP_ARENA_PAGES * sizeof(struct nsp_span *))
struct nsp_arena {
    uintptr_t base;
    size_t size;
    unsigned node;
    int huge;                   /* 1: a mapping of its own holding one large span */
    struct nsp_arena *next;     /* the node's arenas */
    struct nsp_span **pagemap;  /* [NSP_ARENA_PAGES] (always); NULL for huge arenas */
    uint8_t *classmap;          /* [NSP_ARENA_PAGES]: each entry's class bits (pageheap.h); NULL
                                 * for huge arenas */
    struct nsp_span *spans;     /* [size >> NSP_PAGE_SHIFT], or the one span of a huge arena */
    uint64_t *bitmaps;          /* [(size >> NSP_PAGE_SHIFT) * 2 * NSP_BITMAP_WORDS_PER_PAGE]:
                                 * each span's two bitmaps at its first page's (above) */
    size_t meta_size;           /* bytes of the metadata mapping (this struct included) */
};

#endif /* NSP_HOST_TYPES_H */
