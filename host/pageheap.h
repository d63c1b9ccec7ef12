/*
 * host/pageheap.h — per-node page heaps: arenas, the page map, page runs, large and huge spans.
 *
 * Owns: arena_table (address -> arena), every arena's page map, class map and span descriptors, and
 * each node's free page runs. One mutex per node guards that node's runs and arena list; the arena
 * table and page maps are written under it and read without it. A reader that races with the reuse
 * of pages (a stale page map entry, a span let go while it reads) reads a descriptor slot that
 * may describe another span by now, or nothing (a dead one, desc_kill: FREE, no pages, its
 * other words stale).
 * A slot only ever holds a descriptor (a span's bitmaps are kept out of its interior ones: span.h,
 * nsp__span_bitmaps_at), so a late write of a remote free's `dirty` or state lands on one.
 * Readers without the span (the pacer's cache reading, stats) follow no pointer from a
 * descriptor and check that the span is still where they found it; a program's free racing the
 * reuse of its own object's pages is its use-after-free, reported when it is seen and not
 * guaranteed to be seen.
 *
 * Invariants:
 *   - every page of a live span (CACHED, PARTIAL, FULL, SWEEPING, LARGE, TAKEN) maps to it;
 *     a small span's pages carry its size class in the entry's low bits (below), from its
 *     set-up (nsp__span_init_small) until its pages go back to the page heap;
 *   - the class map holds each page's class bits again, a byte per page (classmap[page] ==
 *     pagemap[page] & NSP_PAGEMAP_CLASS_MASK whenever no writer is between its two stores):
 *     every writer of an entry writes its byte (nsp__pagemap_publish, nsp__span_init_small,
 *     free_locked's clearing); free's fast path reads it (nsp__page_class_wrapped, below);
 *   - the first and last page of a FREE run map to the run; its other pages map to nothing
 *     (NULL), so a lookup needs no range check: an entry is NULL, a live span holding the page,
 *     or a FREE run;
 *   - adjacent FREE runs of one arena never both exist: frees coalesce at once;
 *   - pages_mapped counts pages of arenas and huge mappings on the node, free or not;
 *   - an arena has nsp__arena_pages(ar) pages (fewer than NSP_ARENA_PAGES when the OS refused a
 *     full one) and starts its 64 MiB slot; its page map is NULL past its pages.
 * Lock order: cache -> central -> page heap. Nothing here calls malloc or hwloc.
 *
 * Nobody waits for a stuck holder (issue 11, hold.h). A free that finds the node's lock held pushes
 * the span on the node's pending frees (a lock-free stack through s->next, state still TAKEN,
 * so a second free is a double free and no neighbour coalesces with it); an allocation waits for
 * a holder that runs, and when the hold is stuck (hold.h: one wait per stuck hold) maps a fresh
 * arena of its own for its span (the OS arena path) and pushes the arena and the rest of it as
 * pending too. Ordinary contention maps nothing new, so the runs do not multiply under load. Whoever holds the lock next
 * links what is pending first (nsp__pageheap_lock): the runs and the counters are exact for
 * every holder. Only the OS refusing that fresh arena, or a checker holding the lock
 * (nsp__pageheap_lock_still), makes an allocation wait for the lock.
 * The counters (pages_*, arenas_mapped) are written under the lock and read without it;
 * pages_mapped is an atomic add, and counts a stuck hold's fresh arena from its mapping (so that
 * NSP_NODE_LIMITS holds while it waits to be linked).
 *
 * Publication (for weakly ordered cpus: aarch64, POWER; on x86-64 every ordering below compiles
 * to the plain mov it replaces). A page map entry that names a descriptor is the descriptor's
 * publication: it is stored with release (nsp__pagemap_publish) after every field of the
 * descriptor that its readers use is written (desc_at's state, npages, start_page, base; the
 * class's set-up in nsp__span_init_small), and read with acquire by every reader that may have
 * no other happens-before edge to that write:
 *   - the holder of a node's lock looking at a neighbour (free_locked's coalescing,
 *     nsp__pageheap_grow) while a cut without the lock (alloc_busy) rewrites a pending run's
 *     descriptors: with a relaxed store an aarch64 holder could find the new entry, read the
 *     dead descriptor's FREE state beside the new npages and start_page, and coalesce a TAKEN
 *     span into a free run (the race test_check_cut builds on x86, where TSO hides it). So
 *     nsp__pagemap_entry loads with acquire, and the state it then reads is TAKEN or later;
 *   - nsp__span_of (every free but the bins', realloc, malloc_usable_size, a transfer's link
 *     check): its callers hold a happens-before edge to the set-up through the program (a valid
 *     free is of an object whose allocation the set-up preceded), but a free racing the pages'
 *     reuse has none; acquire is what keeps the header's promise that it still reads a valid
 *     descriptor (one at least as new as the entry it found);
 *   - nsp__page_entry (nsp__free_classed) and the class map's byte (nsp__page_class_wrapped,
 *     nsp_free's fast path) load relaxed, on purpose: the bins' push uses only the class, to
 *     pick its bin, and checks the object against that bin's span, never the descriptor;
 *     nsp__free_classed reads the descriptor of an object the program allocated, whose set-up
 *     happened-before that allocation and so this free. The arena table's acquire before it
 *     (set_table's release) covers the arena's own fields.
 * The class map's bytes publish nothing either: no reader follows a byte to a descriptor, so they
 * are relaxed stores, written after the entry they copy. A byte read stale, or between the two
 * stores, is a hint that misses the bin's check and goes to the slow path's acquire look-up.
 * Entries stored NULL (free_locked's interior pages) publish nothing: plain stores under the lock,
 * their class bytes cleared with them.
 * tests/test_publish.c is the check: under TSan, a relaxed store or a relaxed load here is
 * reported as a race on the descriptor.
 */
#ifndef NSP_HOST_PAGEHEAP_H
#define NSP_HOST_PAGEHEAP_H

#include <stddef.h>
#include <stdint.h>

#include "hold.h"
#include "numaspan_geometry.h"
#include "types.h"

#define NSP_FREE_LISTS 64 /* runs of 1..63 pages by exact length; list 0: longer runs */

struct nsp_pageheap {
    pthread_mutex_t lock;
    struct nsp_hold hold; /* which hold of `lock` is stuck, if one is (hold.h) */
    unsigned node;
    struct nsp_arena *arenas;
    struct nsp_span *free_runs[NSP_FREE_LISTS];
    /* counters, under lock */
    uint64_t pages_mapped;
    uint64_t pages_free;
    uint64_t pages_scavenged;
    uint64_t arenas_mapped;
    uint64_t large_allocs, large_frees;
    uint64_t os_refusals;
    _Atomic uint64_t busy_arenas; /* arenas mapped because the lock was held (file header) */
    _Atomic uint64_t busy_frees;  /* frees pushed pending because the lock was held */
    /* Unlocked cuts against the heap's checkers (nsp__pageheap_lock_still): cuts in flight
     * (alloc_busy, from before its cut until the span and what it pushed are published), the
     * checkers that hold the heap still, and the cuts that found one and waited for the lock. */
    _Atomic uint32_t busy_cuts;
    _Atomic uint32_t checkers;
    _Atomic uint64_t busy_checked;
    /* pushed without the lock, linked by its next holder: spans (s->next) and arenas */
    struct nsp_span *_Atomic pending_frees;
    struct nsp_arena *_Atomic pending_arenas;
} __attribute__((aligned(NSP_CACHE_LINE)));

/* A node's page-heap lock for those outside this file who must see it whole (fork, the
 * recount's validators): what was pushed pending is linked first. */
void nsp__pageheap_lock(unsigned node);
void nsp__pageheap_unlock(unsigned node);
/* The same unless its holder is stuck (hold.h): 0 when taken, else -1. */
int nsp__pageheap_trylock(unsigned node);
/* The lock for a checker (the recount, the validators, stats against a walk: check.c), who
 * reads every descriptor and charge of the node's arenas: taken, then no cut without it starts
 * (a thread that finds the hold stuck waits for the lock instead, counted in busy_checked), the
 * cuts in flight end (waited for with the lock let go: a cutter may be stopped, pageheap.c), the
 * lock is taken again, and what they pushed is linked. So the checker sees no descriptor half
 * written, and no span charged in an arena it does not walk. Never on an allocation's path. */
void nsp__pageheap_lock_still(unsigned node);
void nsp__pageheap_unlock_still(unsigned node);
/* Test hook: called by a cut without the lock from a pending run, with the node and the step
 * it stands at: its span's descriptor rewritten but its pages not yet mapped (PLACED), then the
 * span cut but not yet the rest of the run (HALF). NULL outside tests. */
enum { NSP_TEST_CUT_PLACED, NSP_TEST_CUT_HALF };
extern void (*_Atomic nsp__test_busy_cut)(unsigned node, int step);
/* Scavenges and trims that skipped a node's busy page heap (best effort: nsp_trim, the pacer). */
extern _Atomic uint64_t nsp__pageheap_busy_skips;
/* A counter of the page heap, read without its lock (written under it). */
static inline uint64_t nsp__pageheap_counter(const uint64_t *field)
{
    return __atomic_load_n(field, __ATOMIC_RELAXED);
}

extern struct nsp_pageheap nsp__pageheaps[NSP_MAX_NODES];
extern struct nsp_arena *nsp__arena_table[NSP_ARENA_SLOTS];
/* Pages a node may map (NSP_NODE_LIMITS, section 6), 0 = no limit: set once by the pacer's init
 * (which parses the option and paces by it) and read here, where a node's growth is refused. */
extern int64_t nsp__node_limit_pages[NSP_MAX_NODES];
/* Bit n: node n is past its trigger at its node limit, and its refills go to the nearest node
 * with room until the next cycle. Written by the pacer, read by the page heap's spill order. */
extern _Atomic uint64_t nsp__pacer_spilling;

void nsp__pageheap_init(unsigned nnodes);

/* The smallest arena: when the OS refuses a 64 MiB one, arenas halve down to this (pageheap.c). */
#define NSP_ARENA_MIN_SIZE ((size_t)2 << 20)
/* An arena's pages: NSP_ARENA_PAGES, or fewer for an arena the OS would not give 64 MiB. Every
 * walk of an arena's descriptors stops here (its page map still has NSP_ARENA_PAGES entries). */
static inline uint32_t nsp__arena_pages(const struct nsp_arena *ar)
{
    return (uint32_t)(ar->size >> NSP_PAGE_SHIFT);
}

/* The linked arena whose descriptors hold address d, with *start the page d describes, if a span
 * of npages pages starting there lies inside the arena; else NULL. For a reader that holds a
 * descriptor it may no longer own (the pacer's reading of caches, cache.c; the stats' walk of a
 * span's list, span.c) and so may not follow a pointer read from it, nor trust its geometry: its
 * slot may describe another span by now, or nothing (desc_kill). Without the lock: the list
 * is published with release (arena_link) and an arena is never unlinked nor unmapped; an arena a
 * stuck hold has not had linked yet is not found. */
const struct nsp_arena *nsp__arena_of_desc(const void *d, uint32_t npages, uint32_t *start);

/* A run of npages pages on node, its first page aligned to align_pages pages (a power of two).
 * The span comes back with its page map set, state TAKEN (being set up: never FREE, or a
 * neighbour freed meanwhile would coalesce with it) and needzero telling whether its pages
 * may hold old data; the caller sets its final state. NULL if the node has no room and the OS refuses. */
struct nsp_span *nsp__pageheap_alloc(unsigned node, size_t npages, size_t align_pages);
/* The same from node's free runs only: NULL rather than a new arena (the caller may first give
 * back empty spans: central.h, nsp__central_pages). */
struct nsp_span *nsp__pageheap_alloc_free(unsigned node, size_t npages, size_t align_pages);
/* The same, on node if it has room, else on the nearest node that has (DESIGN.md §3, spill by
 * the topology's distance order); spills are counted on both nodes. The counters are all the
 * page heap says about a spill: the pacer and stats read them (the page heap, at the bottom,
 * calls nothing above it). */
struct nsp_span *nsp__pageheap_alloc_near(unsigned node, size_t npages, size_t align_pages);
extern _Atomic uint64_t nsp__spills_out[NSP_MAX_NODES], nsp__spills_in[NSP_MAX_NODES];
/* Gives a span's pages back to its node's heap (coalescing). */
void nsp__pageheap_free(struct nsp_span *s);

/* Grows a large span in place to npages pages by taking the free run right after it. Returns 0,
 * or -1 (nothing changed) if that run is missing or too short. */
int nsp__pageheap_grow(struct nsp_span *s, size_t npages);

/* A huge object of size bytes (> NSP_HUGE_MIN) in a mapping of its own, aligned to align. */
struct nsp_span *nsp__huge_alloc(unsigned node, size_t size, size_t align);
void nsp__huge_free(struct nsp_span *s);
/* A test hook: called by nsp__huge_resize once mremap has given the old range up (NULL outside
 * tests). */
extern void (*_Atomic nsp__test_huge_given_up)(void);
/* Resizes a huge object to size bytes (>= NSP_HUGE_MIN) without copying: in place when the
 * address space allows, else by moving its pages (mremap) to a new aligned mapping. Returns 0,
 * or -1 (nothing changed) if the OS refuses. */
int nsp__huge_resize(struct nsp_span *s, size_t size);

/* User pages mapped (arenas and huge mappings, every node), and the hard limit on them
 * (NSP_MEMORY_LIMIT with NSP_MEMORY_LIMIT_HARD=1; 0: none). nsp__mapped_add counts len more bytes
 * and returns 0, or -1 with nothing counted when that would pass the limit. */
extern _Atomic uint64_t nsp__mapped_bytes;
extern uint64_t nsp__mapped_limit;
int nsp__mapped_add(size_t len);
void nsp__mapped_sub(size_t len);

/* Test hook: nodes (bit n) whose page heaps get no new arena, as if the node had no memory. */
extern uint64_t nsp__test_nodes_without_memory;
/* Tests: the end of the user addresses the arena table covers, lowered (0: 2^NSP_ADDR_BITS), so
 * that every mapping past it is refused as the OS's refusal is (pageheap.c, table_covers). */
extern uintptr_t nsp__test_addr_end;

/* Hands every free run's pages back to the OS (or about `want` bytes of them). Returns the bytes
 * released. */
size_t nsp__pageheap_scavenge(unsigned node);
size_t nsp__pageheap_scavenge_upto(unsigned node, size_t want);
/* 1 while the pacer thread scavenges at its rate (pacer.c): frees then hand nothing back
 * themselves. */
extern _Atomic int nsp__scavenge_paced;

/* A page map entry is a descriptor's address (128-byte aligned: a descriptor is two lines and
 * the descriptors follow the 128-byte header, the page map and the class map, pageheap.c) with,
 * for a set-up small span, its size class in the low 7 bits. The page heap writes plain addresses
 * (class 0: FREE runs, large and TAKEN spans); nsp__span_init_small adds the class. The class map
 * repeats the class bits, a byte per page: 8 KiB an arena beside the page map's 64 KiB, so the
 * bins' free learns the class, so its bin, from a line that covers 64 pages (two spans of 256
 * KiB) where the page map's covers 8, and never reads the span's descriptor (alloc.h). */
#define NSP_PAGEMAP_CLASS_MASK ((uintptr_t)127)
_Static_assert(NSP_GEOM_NUM_CLASSES <= NSP_PAGEMAP_CLASS_MASK + 1,
               "every size class fits in an entry's low bits");
_Static_assert(sizeof(struct nsp_span) == NSP_PAGEMAP_CLASS_MASK + 1 &&
                   (NSP_ARENA_CLASSMAP + NSP_ARENA_PAGES) % (NSP_PAGEMAP_CLASS_MASK + 1) == 0,
               "descriptors 128-byte aligned: the low 7 bits of an entry are free for the class");

/* The span an entry names (its class bits dropped). */
static inline struct nsp_span *nsp__pagemap_span(const struct nsp_span *e)
{
    return (struct nsp_span *)((uintptr_t)e & ~NSP_PAGEMAP_CLASS_MASK);
}

/* Page map entry `page` of ar, read with acquire (the file header, "Publication"): the holder of
 * the node's lock reads the descriptor it names while a cut without the lock may have just
 * written it. The set-up of a small span (nsp__span_init_small) also writes its class holding no
 * page heap lock, so a page heap's look at a neighbour's entry (coalescing, growth) or a
 * validator's may meet it: the span the entry names is the same either way, only the low bits
 * move. */
static inline struct nsp_span *nsp__pagemap_entry(const struct nsp_arena *ar, uint64_t page)
{
    return __atomic_load_n(&ar->pagemap[page], __ATOMIC_ACQUIRE);
}

/* Stores page `page`'s class byte (cls: 0, or a small span's class) into ar's class map, relaxed:
 * a hint that publishes nothing (the file header, "Publication"). After the entry it copies. */
static inline void nsp__classmap_store(struct nsp_arena *ar, uint64_t page, uintptr_t cls)
{
    __atomic_store_n(&ar->classmap[page], (uint8_t)cls, __ATOMIC_RELAXED);
}

/* Stores entry e (a descriptor, with a small span's class in its low bits) for page `page` of ar,
 * with release: every field of the descriptor written before it is seen by whoever loads the
 * entry with acquire (the file header, "Publication"); then the entry's class byte. */
static inline void nsp__pagemap_publish(struct nsp_arena *ar, uint64_t page,
                                        const struct nsp_span *e)
{
    __atomic_store_n(&ar->pagemap[page], (struct nsp_span *)e, __ATOMIC_RELEASE);
    nsp__classmap_store(ar, page, (uintptr_t)e & NSP_PAGEMAP_CLASS_MASK);
}

/*
 * The span that owns address p: NULL if numaspan never mapped p or p lies in free pages.
 * O(1): the arena table, then the page map. The span may still be in any live state.
 */
static inline struct nsp_span *nsp__span_of(const void *p)
{
    uintptr_t a = (uintptr_t)p;
    if (__builtin_expect(a >> NSP_ADDR_BITS, 0))
        return NULL;
    uintptr_t e = (uintptr_t)__atomic_load_n(&nsp__arena_table[a >> NSP_ARENA_SHIFT],
                                             __ATOMIC_ACQUIRE);
    if (__builtin_expect(e & 1, 0)) { /* a huge arena: one span */
        struct nsp_arena *ar = (struct nsp_arena *)(e - 1);
        return a < ar->base + ar->size ? ar->spans : NULL;
    }
    if (__builtin_expect(!e, 0))
        return NULL;
    struct nsp_span *const *pagemap = (struct nsp_span *const *)(e + NSP_ARENA_HDR);
    /* acquire: the descriptor as whole as the entry (the file header, "Publication") */
    struct nsp_span *s = nsp__pagemap_span(
        __atomic_load_n(&pagemap[(a >> NSP_PAGE_SHIFT) & (NSP_ARENA_PAGES - 1)], __ATOMIC_ACQUIRE));
    if (!s || atomic_load_explicit(&s->state, memory_order_relaxed) == NSP_SPAN_FREE)
        return NULL;
    return s;
}

/*
 * p's page map entry as stored (the span's descriptor, its class in the low bits), or 0 when p
 * lies in no arena or in a huge one. The class bits (NSP_PAGEMAP_CLASS_MASK) are 0 for free pages
 * and a large or TAKEN span. A hint read without the descriptor: the pages may have changed hands
 * since (a free racing the reuse of its pages is a use after free), so the caller checks p against
 * what it holds (the bin's span, cache.h; the descriptor's state and class, free.c) before it
 * relies on it. nsp__free_classed reads it once, for both its class and its span.
 */
static inline uintptr_t nsp__page_entry(const void *p)
{
    uintptr_t a = (uintptr_t)p;
    if (__builtin_expect(a >> NSP_ADDR_BITS, 0))
        return 0;
    uintptr_t e = (uintptr_t)__atomic_load_n(&nsp__arena_table[a >> NSP_ARENA_SHIFT],
                                             __ATOMIC_ACQUIRE);
    if (__builtin_expect((e & 1) || !e, 0)) /* none, or a huge arena: one large span */
        return 0;
    struct nsp_span *const *pagemap = (struct nsp_span *const *)(e + NSP_ARENA_HDR);
    /* relaxed: the fast path's (the file header, "Publication", says why that is enough) */
    return (uintptr_t)__atomic_load_n(&pagemap[(a >> NSP_PAGE_SHIFT) & (NSP_ARENA_PAGES - 1)],
                                      __ATOMIC_RELAXED);
}

/* The size class p's page map entry carries (nsp__page_entry): the class of the small span that
 * holds p, or 0 (no arena, a huge one, free pages, a large or TAKEN span). A hint, as the entry. */
static inline unsigned nsp__page_class(const void *p)
{
    return (unsigned)(nsp__page_entry(p) & NSP_PAGEMAP_CLASS_MASK);
}

/* The same hint for free's fast path (api.c), from the class map's byte instead of the entry
 * (a line of it covers 64 pages, the page map's 8: Larson's frees, issue 11), and without the
 * test of p's top bits: the arena table's index wraps instead, so a p at or above
 * 2^NSP_ADDR_BITS (no arena lies there, pageheap.c) reads some arena's byte, and may get a class.
 * Only for a caller that then checks p against the span it holds for that class (the bin's push:
 * p - base < size, cache.h), which such a p fails, and whose miss goes to nsp__page_entry's
 * checked look-up (free.c). Two instructions fewer on every free (loops and pairs, issue 11). */
static inline uintptr_t nsp__page_class_wrapped(const void *p)
{
    uintptr_t a = (uintptr_t)p;
    uintptr_t e = (uintptr_t)__atomic_load_n(
        &nsp__arena_table[(a >> NSP_ARENA_SHIFT) & (NSP_ARENA_SLOTS - 1)], __ATOMIC_ACQUIRE);
    if (__builtin_expect((e & 1) || !e, 0)) /* none, or a huge arena: one large span */
        return 0;
    const uint8_t *classmap = (const uint8_t *)(e + NSP_ARENA_CLASSMAP);
    /* relaxed: the fast path's (the file header, "Publication", says why that is enough) */
    return __atomic_load_n(&classmap[(a >> NSP_PAGE_SHIFT) & (NSP_ARENA_PAGES - 1)],
                           __ATOMIC_RELAXED);
}

#endif /* NSP_HOST_PAGEHEAP_H */
