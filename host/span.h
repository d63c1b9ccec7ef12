/*
 * host/span.h — operations on one span: its owner's allocation and local free (inline, the fast
 * path), the remote free any thread may do, and the sweep that folds remote frees in.
 *
 * The span's fields and their invariants are in types.h. Who may call what:
 *   nsp__span_alloc_fast, nsp__span_next_free, nsp__span_free_local, nsp__span_sweep
 *       the span's owner only (its cache under the cache lock, or its central under its lock);
 *   nsp__span_free_remote
 *       anyone, at any time, with one atomic OR (and a rare exchange of `dirty`).
 *
 * alloc_bits are written by the owner alone but read by remote freers (the double-free check of
 * nsp__span_free_remote), so the owner stores each word with a relaxed atomic store (the same
 * instructions as a plain one on x86-64, and no data race for the remote reader).
 *
 * The free tag (issue 11: a local free that reads no bitmap). Every slot below the span's carve
 * frontier (types.h) whose alloc bit is clear holds a remote free's tag in its first word
 * (magazine.h: p ^ key ^ (cache << 48), any cache index): whoever clears an alloc bit writes one
 * first, or a remote freer wrote it before setting the freed bit that a sweep then applied. So:
 *   - nsp__span_free_local tags the slot it frees (the locked local free);
 *   - a bin's fold tags each object it gives back (cache.c);
 *   - the sweep writes nothing: every setter of a freed bit tagged the object first (free.c's
 *     direct remote free, the magazines' and slabs' pushes, the central's give-back of a chain);
 *   - NSP_SECURE keeps its poison instead (it has no bins, and its own write-after-free check).
 * And nothing else writes a free slot (no madvise inside a live span: a scavenger that gave
 * back a live span's free pages would have to re-tag them). The hand-out checks it: a slot below
 * the frontier whose first word is no tag was written while free (a use after free, or a double
 * free that the bins' push took because the write had erased the tag): it is reported naming the
 * slot and kept allocated, never handed out a second time (nsp__span_untagged); and so is one
 * found before an empty span's pages go back (nsp__span_keep_held).
 *
 * nsp__span_freed_pending(node, class) counts the freed bits set and not yet swept in that node's
 * spans of that class: every setter of a freed bit adds what its OR set (nsp__span_free_remote,
 * the magazines' flush), every sweep subtracts what its exchange took (applied frees and double
 * frees alike). So at rest it equals the popcount of every such span's freed bitmap (check.c's
 * stats validator asserts it); stats read it instead of walking the spans. It is the sum of
 * NSP_FREED_STRIPES stripes, and a thread adds into its cpu's stripe (a stripe's classes share
 * lines, written from one cpu): a single counter per (node, class) was one contended line that
 * every flush of every cpu added to, which cost the producer/consumer shape at 8 and 32 threads
 * on 2 cpus 10-30% (the lock add waited for the line from the other cpu each time: README, host
 * section). A stripe alone may go negative (a sweep on one cpu takes what another added); the
 * sum may not.
 *
 * Ordering (for weakly ordered cpus, aarch64 and POWER; x86-64 emits the same code for any of
 * these). A remote free publishes the object to whoever sweeps it and, through the sweep, to the
 * object's next owner: its free tag (and the program's last writes to the object) precede the
 * freer's OR on the freed word, and the sweep's exchange of that word follows. Both are
 * sequentially consistent read-modify-writes, and each half is needed:
 *   - the OR's release and the exchange's acquire: the tag and the program's writes are seen by
 *     the sweeper and by everyone its hand-out reaches (else the next owner's first writes could
 *     be overtaken by the old ones, and a tag read at the hand-out be stale);
 *   - the exchange's release and the OR's acquire: the sweep clears `dirty` before it takes the
 *     words, and a freer whose OR lands after that exchange reads from it, so its look at
 *     `dirty` (nsp__span_freed_remote) sees the clear and sets `dirty` again: never a bit left
 *     waiting on a span marked clean (types.h). The magazines' flush (one OR per word) is the
 *     same OR;
 *   - and a word the sweep skips (its first look, a load, read 0) has no exchange to read from:
 *     that pair is a store-buffer one (the sweep: store `dirty` = 0, then load the word; the
 *     freer: OR the word, then load `dirty`), where both loads may read the old value unless
 *     both are seq_cst too, so both are (relaxed, an aarch64 or POWER cpu could leave the bit on
 *     a clean span: a slot never freed, its span never empty). x86-64: the same plain loads.
 * `dirty` against `state` is the FULL protocol's Dekker pair (central.c: a seq_cst store then a
 * seq_cst load on each side). alloc_bits are read by remote freers relaxed: the program's own
 * happens-before (it allocated the object before handing it over) is what makes the owner's 1
 * visible; a racing double free is not promised a report (nsp__span_free_remote). The
 * freed-pending stripes are relaxed counters: exact only at rest (after joins or locks).
 */
#ifndef NSP_HOST_SPAN_H
#define NSP_HOST_SPAN_H

#include <stdatomic.h>
#include <stdint.h>

#include "magazine.h"
#include "numaspan_geometry.h"
#include "secure.h"
#include "topology/topology.h"
#include "types.h"

#define NSP_FREED_STRIPES 16u
struct nsp_freed_stripe {
    _Atomic int64_t n[NSP_GEOM_NUM_CLASSES];
} __attribute__((aligned(NSP_CACHE_LINE)));
extern struct nsp_freed_stripe nsp__freed_pending[NSP_MAX_NODES][NSP_FREED_STRIPES];

/* The counter of s's node and class in the calling thread's cpu's stripe (a thread that moves
 * meanwhile only adds from the other stripe: the sum is the same). A freer finds it before its
 * OR: once the bit is set, the owner may sweep the span, empty it and give its pages back, and
 * the descriptor may be set up again for another class (its node and class read after the OR
 * would be a race, and would put the bit in the wrong counter). */
static inline _Atomic int64_t *nsp__span_freed_counter(const struct nsp_span *s)
{
    unsigned stripe = (unsigned)nsp__cpu_now() % NSP_FREED_STRIPES;
    return &nsp__freed_pending[s->node][stripe].n[s->sizeclass];
}

/* Freed bits set and not yet swept in node's spans of class cls: the stripes' sum, read racily
 * (exact at rest). */
static inline int64_t nsp__span_freed_pending(unsigned node, unsigned cls)
{
    int64_t sum = 0;
    for (unsigned i = 0; i < NSP_FREED_STRIPES; i++)
        sum += atomic_load_explicit(&nsp__freed_pending[node][i].n[cls], memory_order_relaxed);
    return sum;
}

/* n freed bits set (n > 0) or swept (n < 0) into counter (see above). */
static inline void nsp__span_count_freed(_Atomic int64_t *counter, int64_t n)
{
    atomic_fetch_add_explicit(counter, n, memory_order_relaxed);
}

/* Sets up a span fresh from the page heap for objects of class cls: geometry, cleared bitmaps,
 * cursor at 0. The caller sets its state. */
void nsp__span_init_small(struct nsp_span *s, unsigned cls);

/* Words of each bitmap the span uses. */
static inline uint32_t nsp__span_nwords(const struct nsp_span *s)
{
    return (s->nelems + 63) / 64;
}

/* Where a small span's freed bitmap starts, in words after its alloc bitmap (types.h): the next
 * 128-byte pair of cache lines past the alloc words, so that the owner's stores into the alloc
 * words and the remote freers' ORs into the freed ones never share a line, nor the pair an
 * adjacent-line prefetcher fetches together. A span has 16 words a page for each bitmap, and
 * this is never more than that. */
static inline uint32_t nsp__span_freed_offset(uint32_t nwords)
{
    return (nwords + 15) & ~15u;
}

/* Where a small span of npages pages from page `start` of ar, nwords words a bitmap, keeps its two
 * bitmaps (types.h, "Span"): at its first page's place in the arena's bitmap array, for every
 * class. Not in the span's own interior descriptors (d73d97b put them there from 32 B, 4 KiB less
 * resident per span in use): a remote free's last steps come after its OR (nsp__span_freed_remote:
 * the look at `dirty` and its exchange, the look at state; nsp__central_wake's CAS), when the span
 * may have been swept empty, given back and its pages cut again into another span whose run
 * holds the freer's old first descriptor. Kept apart, a descriptor slot only ever holds a
 * descriptor, and those late steps land on one: a spurious dirty mark or wake, which a sweep or a
 * central shrugs off. A bitmap word there took the `dirty` store as a freed bit nobody set (its
 * sweep then frees a live object, handed out twice) or as an alloc bit nobody set, and the state
 * CAS likewise (test_host_units, a_late_remote_free_writes_no_live_span_s_bitmaps). Readers that
 * may not trust a descriptor find a span's bitmaps by its place (cache.c, span_unspent). */
static inline uint64_t *nsp__span_bitmaps_at(const struct nsp_arena *ar, uint32_t start)
{
    return ar->bitmaps + (size_t)start * 2 * NSP_BITMAP_WORDS_PER_PAGE;
}

/* Object index of p in s, or UINT32_MAX if p is not the start of a slot of s. */
static inline uint32_t nsp__span_index(const struct nsp_span *s, uintptr_t p)
{
    uint64_t off = p - s->base;
    uint32_t idx = (uint32_t)((off * s->divmul) >> 32);
    if (idx >= s->nelems || (uint64_t)idx * s->elemsize != off)
        return UINT32_MAX;
    return idx;
}

/* The owner's store of alloc word w (see the header: remote freers read it). */
static inline void nsp__span_set_alloc_word(struct nsp_span *s, uint32_t w, uint64_t v)
{
    __atomic_store_n(&s->alloc_bits[w], v, __ATOMIC_RELAXED);
}

/* Whether slot idx is allocated and not yet freed remotely, as any thread may see it. */
static inline int nsp__span_slot_live(const struct nsp_span *s, uint32_t idx)
{
    uint64_t bit = 1ULL << (idx & 63);
    return (__atomic_load_n(&s->alloc_bits[idx >> 6], __ATOMIC_RELAXED) & bit) &&
           !(atomic_load_explicit(&s->freed_bits[idx >> 6], memory_order_relaxed) & bit);
}

/* The free tag written into slot p as its alloc bit is cleared (see above): the remote direct
 * free's (NSP_MAG_NONE: no magazine holds it, the bits decide at a second free). */
static inline void nsp__span_tag_free(void *p)
{
    __atomic_store_n((uint64_t *)p, nsp__magazine_tag(p, NSP_MAG_NONE), __ATOMIC_RELAXED);
}

/* Slot idx (object p), just taken from the bitmap, was free below the frontier but its tag is
 * gone: reported (write after free, naming p) and kept allocated, counted as an allocation (a
 * double free that took it into a bin may have handed it to the program already). Returns the
 * next free slot in the cursor's word instead, or NULL when it has none (then the caller goes on
 * with nsp__span_next_free, which loads the next word: span.c says why not here). span.c. */
void *nsp__span_untagged(struct nsp_span *s, uint32_t idx);

/* The end of every hand-out of slot idx from the bitmap (its alloc bit just set): past the
 * frontier it moves the frontier; below it, the slot must still carry its free tag. */
static inline void *nsp__span_handout(struct nsp_span *s, uint32_t idx)
{
    void *p = (void *)(s->base + (uintptr_t)idx * s->elemsize);
    if (idx >= s->frontier)
        s->frontier = (uint16_t)(idx + 1);
    else if (__builtin_expect(nsp__magazine_tagged(p) < 0, 0) && !nsp__secure)
        return nsp__span_untagged(s, idx);
    return p;
}

/* Before empty span s (alloc_count 0, swept) gives its pages back: every slot below its frontier
 * must hold its free tag. One that does not is the program's: a double free of a slot written
 * over while free is the one free the bins' push cannot refuse (cache.h), and the bin may then
 * have handed the slot out with its alloc bit clear; the span's pages going back would hand the
 * same memory out again. Each such slot is reported (write after free, naming it) and kept
 * allocated, counted as an allocation; returns how many (0: the pages may go). Owner only;
 * reads each slot's first word (once per span emptied; NSP_SECURE: none, it has no bins). */
uint32_t nsp__span_keep_held(struct nsp_span *s);

/* The fast path: the next free slot from the cursor's cached word, or NULL (then call
 * nsp__span_next_free). Plain loads and stores only. */
static inline void *nsp__span_alloc_fast(struct nsp_span *s)
{
    uint64_t c = s->alloc_cache;
    if (__builtin_expect(c == 0, 0))
        return NULL;
    unsigned bit = (unsigned)__builtin_ctzll(c);
    uint32_t idx = s->freeindex + bit;
    if (__builtin_expect(idx >= s->nelems, 0))
        return NULL;
    s->alloc_cache = (c >> bit) >> 1;
    s->freeindex = idx + 1;
    nsp__span_set_alloc_word(s, idx >> 6, s->alloc_bits[idx >> 6] | 1ULL << (idx & 63));
    s->alloc_count++;
    return nsp__span_handout(s, idx);
}

/* Up to `room` free slots of the cursor's cached word (alloc_cache), lowest first, handed out at
 * once: out[] gets their addresses and the count is returned. Exactly what `room` calls of
 * nsp__span_alloc_fast would hand out, stopping at the word's end, with each of the span's fields
 * written once instead of once per slot (a bin's carve, cache.c: the producer of a
 * producer/consumer program carves every object it mallocs). A slot below the frontier that lost
 * its free tag is reported and kept allocated, as nsp__span_untagged does, and is not in out[].
 * 0 when the cached word is used up (then nsp__span_next_free scans). Owner only. */
uint32_t nsp__span_carve(struct nsp_span *s, uint32_t room, uintptr_t *out);

/* Scans the alloc bitmap from the cursor for a free slot; NULL when none is left past it. */
void *nsp__span_next_free(struct nsp_span *s);

/* Whether the cursor's next slot is a fresh one, at or past the frontier (types.h): none of the
 * free slots it would take first lies below the frontier. What a cached span's owner asks before
 * it sweeps remote frees in (cache.c: from_cached, a refill's first object and the bin's carve;
 * not the locked fast path, alloc.c, which runs on within its cursor's word): a sweep is what keeps
 * the cursor out of fresh memory while freed slots wait (RSS), so it is due only then; while
 * the cursor has handed-out-before slots ahead, the remote frees wait for a later, larger
 * sweep. Reads the cursor and, when its word is used up, the alloc words up to the frontier's;
 * 1 under NSP_SECURE (its own order: swept at every refill, as before). Owner only. */
int nsp__span_next_is_fresh(const struct nsp_span *s);

/* How many of the cursor's cached word's free slots (alloc_cache) lie below the frontier, at most
 * `room`; `room` when the word has none there (its next slot is fresh: nsp__span_next_is_fresh
 * says 1) or is not loaded. A carve of a dirty span takes only these (cache.c, bin_attach): one
 * nsp__span_carve takes the word's slots lowest first across the frontier, so a word holding
 * used and fresh slots would move the frontier on with the remote frees still waiting; stopped
 * there, the carve's next step sweeps before it takes a fresh slot. Owner only. */
static inline uint32_t nsp__span_room_below_frontier(const struct nsp_span *s, uint32_t room)
{
    uint32_t fi = s->freeindex, front = s->frontier;
    uint64_t c = s->alloc_cache;
    if (fi >= front || !c)
        return room;
    if (front - fi < 64)
        c &= (1ULL << (front - fi)) - 1; /* bit k is slot fi + k (types.h) */
    uint32_t below = nsp__popcount64(c);
    return below && below < room ? below : room;
}

/* Slot idx was just freed in the bitmap (a local free, a sweep, a bin's fold): the cursor moves
 * down to it if it is below, so that every slot below the cursor stays allocated and the cursor
 * is the span's lowest free slot (types.h). Without it the cursor ran on through fresh words
 * (64 slots each: 64 KiB at 1 KiB objects) while the slots freed behind it waited for it to
 * reach the span's end: Larson's cached spans' carve frontiers grew with the run towards their
 * 256 KiB (issue 11; docs/host-rounds.md, "Spans of 256 KiB").
 * The cursor's word is loaded whole, and that never raises the ledger's `covered` (ledger.h:
 * the locked fast path hands out the word without a cover): every slot below the old cursor
 * was allocated, so the word's free slots from idx are the ones just freed and those already in
 * the old cursor's word; covered = alloc_count + the word's free slots stays or falls. Secure
 * mode keeps no cursor. */
static inline void nsp__span_cursor_down(struct nsp_span *s, uint32_t idx)
{
    if (idx >= s->freeindex || __builtin_expect(nsp__secure, 0))
        return;
    uint64_t avail = ~s->alloc_bits[idx >> 6] >> (idx & 63);
    uint32_t left = s->nelems - idx;
    if (left < 64)
        avail &= (1ULL << left) - 1; /* slots past the span's end are not free */
    s->freeindex = idx;
    s->alloc_cache = avail;
}

/* Slots `bits` of alloc word w were just freed into the bitmap (a local free, a sweep, a bin's
 * fold): those of the cursor's word at or past the cursor join its cached word, which holds every
 * free slot of that word from the cursor (types.h) whenever it is loaded: not 0, or 0 with the
 * cursor inside the word (used up; 0 with the cursor at a word's start is a word not loaded, after
 * a rewind or a hand-out of a word's last slot, which the scan reads whole). Slots below the cursor
 * are nsp__span_cursor_down's. Without it a sweep or a fold that freed slots of the cursor's word
 * past the cursor left them out of the cached word: the next hand-outs from it stepped the cursor
 * over them, leaving free slots below it (first fit lost: they waited for a rewind), and the
 * covered bytes (ledger.h: allocated slots and the cached word's) fell by them, to rise again when
 * a later cursor_down into that word loaded them: after a foreign take's fold, with no cover to
 * follow, the charge was short of what the cache could hand out (nsp_heap_check: "charged ... less
 * than the ... it can hand out"; test_span_carve, the_cursor_s_word_stays_exact). In the cursor's
 * word a freed slot so moves from allocated to cached: covered stays. Owner only. */
static inline void nsp__span_cursor_add(struct nsp_span *s, uint32_t w, uint64_t bits)
{
    uint32_t fi = s->freeindex;
    /* (NSP_SECURE's cursor, NSP_SECURE_NO_CURSOR, lies in no word of a span) */
    if (w != fi >> 6 || (!s->alloc_cache && !(fi & 63)))
        return;
    s->alloc_cache |= bits >> (fi & 63); /* bit k is slot fi + k; those below fi drop out */
}

/* Moves the cursor back to slot 0 (after a sweep, or when local frees left room behind it). */
static inline void nsp__span_rewind(struct nsp_span *s)
{
    /* secure.h: in the hardened mode the cursor stays empty, so every allocation goes through
     * nsp__span_next_free and a local free never gives a slot back to the cursor */
    s->freeindex = nsp__secure ? NSP_SECURE_NO_CURSOR : 0;
    s->alloc_cache = 0;
}

/* Local free of slot idx by the owner. Returns 0, or -1 if the slot was not allocated or was freed
 * remotely already (a double free, reported by the caller). The slot gets its free tag (above).
 * A slot below the cursor moves it down (first fit), so that malloc/free pairs reuse one hot
 * slot and freed slots come before fresh ones. */
static inline int nsp__span_free_local(struct nsp_span *s, uint32_t idx)
{
    uint64_t bit = 1ULL << (idx & 63);
    uint64_t *w = &s->alloc_bits[idx >> 6];
    if (__builtin_expect(!(*w & bit), 0))
        return -1;
    /* freed remotely already: its freed bit waits for the sweep, which would otherwise free the
     * slot again after it was handed out anew */
    if (__builtin_expect(atomic_load_explicit(&s->freed_bits[idx >> 6], memory_order_relaxed) & bit,
                         0))
        return -1;
    if (__builtin_expect(!nsp__secure, 1)) /* secure.h: its poison stays */
        nsp__span_tag_free((void *)(s->base + (uintptr_t)idx * s->elemsize));
    __atomic_store_n(w, *w & ~bit, __ATOMIC_RELAXED);
    s->alloc_count--;
    if (idx < s->freeindex) {
        /* first fit: the cursor is the lowest free slot (the most recent allocation, just
         * below it, is the usual case) */
        nsp__span_cursor_down(s, idx);
    } else {
        /* into the cursor's word when it is loaded (not after a rewind: a bit alone there would
         * send the cursor past free slots below it; the scan finds it) */
        nsp__span_cursor_add(s, idx >> 6, bit);
    }
    return 0;
}

/* The span's part of a remote free, after its freed bits were set (once for a batch of them, as
 * a magazine's flush does): marks it dirty (the exchange only when it was clean, so that a span
 * freed into often keeps its line shared) and returns 1 if it was FULL: the caller wakes it. */
static inline int nsp__span_freed_remote(struct nsp_span *s)
{
    /* seq_cst (header, "Ordering"): read after the OR in the single total order */
    if (!atomic_load(&s->dirty))
        atomic_exchange(&s->dirty, 1);
    return atomic_load(&s->state) == NSP_SPAN_FULL;
}

/* Remote free of slot idx: one atomic OR on the freed bitmap. Returns 1 if the span was FULL
 * (the caller must wake it: nsp__central_wake), 0 otherwise, -1 for a double free: the slot's
 * alloc bit is 0 (freed by its owner, or already swept), or its freed bit was set already.
 * See types.h for why a FULL span can never strand a free.
 *
 * Why the alloc bit can be trusted from here: it is written only by the span's owner, but a
 * valid free is of an object whose allocation happened-before it (the program passed the pointer
 * to this thread), so this read sees that store of 1 or a later one; and the bit goes back to 0
 * only by a free of this very slot (a local free, or a sweep applying its freed bit). So 0 means
 * the object was freed already: without this check the freed bit would wait for the sweep while
 * the owner hands the slot out again, and the sweep would then free that live object. What it
 * cannot catch is a double free racing the first free, or one after the slot was reused (that
 * free is of the new, live object: a use after free no bitmap can tell from a valid free). */
static inline int nsp__span_free_remote(struct nsp_span *s, uint32_t idx)
{
    uint64_t bit = 1ULL << (idx & 63);
    if (__builtin_expect(!(__atomic_load_n(&s->alloc_bits[idx >> 6], __ATOMIC_RELAXED) & bit), 0))
        return -1;
    _Atomic int64_t *pending = nsp__span_freed_counter(s); /* before the OR (above) */
    uint64_t old = atomic_fetch_or(&s->freed_bits[idx >> 6], bit);
    if (__builtin_expect(old & bit, 0))
        return -1;
    nsp__span_count_freed(pending, 1);
    return nsp__span_freed_remote(s);
}

/* The remote-free list (mimalloc's xthread_free). A free on another cpu of an object of a
 * span some cache holds pushes the object onto the span's own list with one CAS (free.c); the
 * owner's sweep (nsp__span_sweep, owner only) takes the whole list with one exchange and applies
 * it to the alloc bitmap as it applies freed bits: a listed object is allocated from the span's
 * view until then, exactly as one whose freed bit waits. An object on it carries the tag naming
 * NSP_MAG_XFREE in its first word (a second free of it goes the slow way, which searches the
 * list: free.c, xfree_holds) and the next object, xor the tag's key, in its second (so objects of
 * 16 B or more only). The sweep checks each link decodes to a slot of the span: one written over
 * is reported (NSP_ERR_FREE_LIST) and the rest of the list is left allocated, never followed
 * (xfree_holds' search reports it the same way).
 * The push onto an empty list marks the span dirty and wakes it if FULL, as an OR of a freed bit
 * does (same order: the CAS, then the seq_cst look at `dirty`); one onto a non-empty list leaves
 * that to the first pusher, whose object the same exchange takes.
 * Where the head lives: in the span's second page's descriptor (arena->spans[start + 1]), in its
 * alloc_cache word, which describes nothing while the span is set up: nobody reads an interior
 * page's descriptor (the page map names the span's own), its owner writes nothing there, and the
 * page heap rewrites it (desc_at) only once the span's pages are free again, which needs every
 * listed object swept (each keeps its alloc bit, so alloc_count > 0 until then). It sits on that
 * descriptor's second line, apart from both of the span's own lines. So only spans of two pages
 * or more have a list (1-page spans' remote frees go to the slab or the freed bits, as before),
 * and objects of 16 B or more (the link is the second word). types.h says the same. */
#define NSP_MAG_XFREE 0x7ffdu
static inline int nsp__span_has_xfree(const struct nsp_span *s)
{
    return s->npages >= 2 && s->elemsize >= 16;
}
/* Frees' searches of a list (free.c, xfree_holds: each takes the whole list, searches it and
 * pushes it back), for the stats (nsp_stats_t.list_searches). The sweep leaves a listed object's
 * tag in its first word, but every hand-out clears that word (the bins' pop, alloc.h; the slow
 * path, alloc.c; nsp_malloc_node, api.c), so a valid program's frees make none: a search is a
 * second free of a listed object (or a live one whose first word the program set to the tag). */
extern _Atomic uint64_t nsp__xfree_searches;
static inline _Atomic uintptr_t *nsp__span_xfree(struct nsp_span *s)
{
    return (_Atomic uintptr_t *)&(s + 1)->alloc_cache;
}
/* The head word is sealed: it holds the first object xor the span's seal (the magazine key xor
 * the descriptor's address, odd), the empty list the seal itself. A push reads the word, unseals
 * it and pushes only if it names nothing or an address of s; else it refuses (-1) and the free
 * goes the other way. Why: a double free racing the span's release can reach the push after the
 * span was swept empty, released, and its pages set up again, the second page's descriptor now
 * describing another span, whose cursor word the CAS would overwrite. That word unseals to an
 * address of s with a chance of about the span's bytes in 2^64 (and to 0 when it equals the
 * seal), so the late push refuses instead. (A span set up again at the same first page has the
 * same seal: its late push lands on the new span's list, and the sweep's checks of each link and
 * alloc bit then stand where a late freed bit's OR stands; span.h "Ordering".) */
static inline uintptr_t nsp__span_xfree_seal(const struct nsp_span *s)
{
    return (nsp__magazine_key ^ (uintptr_t)s) | 1;
}
/* Empties s's list at set-up. */
static inline void nsp__span_xfree_init(struct nsp_span *s)
{
    atomic_store_explicit(nsp__span_xfree(s), nsp__span_xfree_seal(s), memory_order_relaxed);
}
/* The list's first object (0: empty), unsealed: what a test reads. */
static inline uintptr_t nsp__span_xfree_first(struct nsp_span *s)
{
    return atomic_load(nsp__span_xfree(s)) ^ nsp__span_xfree_seal(s);
}
/* Takes the whole list (one exchange): its first object, or 0. */
static inline uintptr_t nsp__span_xfree_take(struct nsp_span *s)
{
    uintptr_t seal = nsp__span_xfree_seal(s);
    return atomic_exchange(nsp__span_xfree(s), seal) ^ seal;
}
/* The same for a thread that does not own s (free.c, xfree_holds: a second free's search of the
 * list), which found s from a page map entry read before the search: a double free racing the
 * span's release may get there after s was swept empty, released and its pages cut again, and
 * then s's second page's descriptor may be the first one of a live span (cut from the page after
 * s's first), whose alloc_cache is its cursor's word. The exchange stored s's seal there: its
 * owner then handed out slots of the seal's bits, allocated ones among them, a second time
 * (test_host_units, a_late_second_free_takes_no_live_span_s_cursor). So the take checks the head
 * as a push does (nsp__span_xfree_push_chain: it must unseal to 0 or an address of s) and takes it
 * by CAS; an empty list is taken without a write. 1 with the list's first object in *first (0:
 * empty), 0 when the head word is not s's: nothing read or written there. */
static inline int nsp__span_xfree_take_foreign(struct nsp_span *s, uintptr_t *first)
{
    uintptr_t seal = nsp__span_xfree_seal(s), bytes = (uintptr_t)s->npages << NSP_PAGE_SHIFT;
    _Atomic uintptr_t *head = nsp__span_xfree(s);
    uintptr_t v = atomic_load_explicit(head, memory_order_acquire), h;
    do {
        h = v ^ seal;
        if (h && h - s->base >= bytes)
            return 0;
        if (!h)
            break; /* empty: nothing to take, nothing written */
    } while (!atomic_compare_exchange_weak(head, &v, seal)); /* seq_cst, as the exchange */
    *first = h;
    return 1;
}
/* Pushes the chain first..last (last's link is written here) onto s's list: one CAS, after which
 * the chain is visible with it (release). 1 when the list was empty (the caller marks the span
 * dirty: nsp__span_freed_remote), 0 when not, -1 when the head is not s's (above): nothing
 * pushed (last's link may have been written by a try whose CAS failed: the chain is the
 * caller's still, to free another way). */
static inline int nsp__span_xfree_push_chain(struct nsp_span *s, uintptr_t first, uintptr_t last)
{
    uintptr_t seal = nsp__span_xfree_seal(s), bytes = (uintptr_t)s->npages << NSP_PAGE_SHIFT;
    _Atomic uintptr_t *head = nsp__span_xfree(s);
    uintptr_t v = atomic_load_explicit(head, memory_order_relaxed), h;
    do {
        h = v ^ seal;
        if (h && h - s->base >= bytes)
            return -1;
        __atomic_store_n(&((uint64_t *)last)[1], h ^ nsp__magazine_key, __ATOMIC_RELAXED);
    } while (!atomic_compare_exchange_weak(head, &v, first ^ seal));
    return h == 0;
}
/* The push of one object in two halves, so that a caller on a hot path (free.c,
 * nsp__free_classed) can inline the first and call the second only when it is not 0. The first:
 * p tagged as listed and pushed (push_chain's result). The second, given that result r: 1 when
 * the caller wakes s (the push onto an empty list marked it dirty and it was FULL), 0 when done,
 * -1 when refused (the head is not s's, above), p's first word put back to `was`. */
static inline int nsp__span_xfree_push_begin(struct nsp_span *s, void *p)
{
    __atomic_store_n((uint64_t *)p, nsp__magazine_tag(p, NSP_MAG_XFREE), __ATOMIC_RELAXED);
    return nsp__span_xfree_push_chain(s, (uintptr_t)p, (uintptr_t)p);
}
static inline int nsp__span_xfree_push_end(struct nsp_span *s, void *p, uint64_t was, int r)
{
    if (r < 0) {
        __atomic_store_n((uint64_t *)p, was, __ATOMIC_RELAXED);
        return -1;
    }
    /* the push onto an empty list marks the span dirty and wakes it; a push onto a non-empty one
     * precedes the exchange that will take it, and the first pusher marks it */
    return r ? nsp__span_freed_remote(s) : 0;
}
/* p, an allocated slot of s whose first word `was` the caller read and checked, onto s's list:
 * one CAS. Returns as nsp__span_xfree_push_end; on -1 the caller frees p the other way. */
static inline int nsp__span_xfree_push(struct nsp_span *s, void *p, uint64_t was)
{
    return nsp__span_xfree_push_end(s, p, was, nsp__span_xfree_push_begin(s, p));
}

/* The length of s's list, s a span of class k, read without taking it (stats, check.c): a walk
 * from the head that stops at a link leaving the span's bytes or after nelems + 1 steps, the
 * span's bytes and slots found from the descriptor's place and class k (span.c says why). Any
 * thread may call it, at any time, on a descriptor of an arena: racing pushes and sweeps, or the
 * span's release, it counts some of them or none, and exactly at rest (no thread freeing or
 * sweeping). */
uint32_t nsp__span_xfree_length(const struct nsp_span *s, unsigned k);

/* Folds the remote-free list and the freed bits into the alloc bitmap (owner only); the cursor
 * comes down to the lowest slot freed, and those past it in its word join its cached word
 * (nsp__span_cursor_add). Returns the number of objects freed; *doubles gets the number of freed
 * bits whose slot was not allocated (double frees), plus one when the list names an object twice
 * (two frees that raced past the push's checks), and *first_double the address of the first of
 * them (or 0). */
uint32_t nsp__span_sweep(struct nsp_span *s, uint32_t *doubles, uintptr_t *first_double);

#endif /* NSP_HOST_SPAN_H */
