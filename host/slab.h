/*
 * host/slab.h — per-cpu object slabs: per (core cache, size class) a bounded stack of free
 * objects from any span of the cache's node (issue 11; TCMalloc's per-cpu slabs, written anew).
 *
 * Why. A bin (cache.h) lists one span's free objects. A program that frees a random one of many
 * live blocks (Larson) frees mostly objects of other spans; before the slabs each such free went
 * into the remote-free magazine, whose flush set its freed bit, woke the span, and a later refill
 * took a span from the central (its mutex), swept it, charged the ledger and attached it: every
 * freed object made that round trip. A slab keeps the object on its cpu instead, and a malloc of
 * the cpu pops it where it would otherwise have gone down a level: no span is touched either way.
 *
 * When a malloc pops (alloc.c, cache.c): when its bin misses and the bin's span has no free slot
 * left (the bin's `full`, cache.h: the slow path found the span full, popped the slab instead of
 * refilling from the central, and attached the bin empty so that the span's local frees still
 * push), until the slab is empty; and when the cache is busy (its holder preempted: the slab
 * instead of the node's transfer). Not before the span's own slots: measured (Larson at 2
 * threads, the brief's first design, the slab popped at every bin miss), the live objects then
 * spread over many spans, 35-55% of frees missed the bin (4-17% before) and Larson ran at half
 * the speed; refilled from itself, a span keeps the live objects together.
 *
 * Owns: struct nsp_slab and its capacity rule. The sequences (push, pop, take) are cache.h's,
 * beside the magazine's push; the detach, drain and attach are cache.c's, with the bins'.
 *
 *   word   (pops << 8) | count. count: objects in slot[0..count), at most cap (<= 32: 8 bits);
 *          pops: objects popped since the slab was last drained (a free and a malloc that no
 *          span counts: the drain adds them to the node's totals, ledger.h). The one word every
 *          sequence commits:
 *            push  writes slot[count] (past count: a restart only rewrites it), commits count + 1;
 *            pop   reads slot[count - 1], commits count - 1, pops + 1;
 *            take  (the owner's, when a push finds the slab full) copies the top half out to the
 *                  caller's buffer and commits count - half (nsp__cache_take_slab_rseq).
 *   on     0: detached (every sequence misses). Exactly the magazine's `on` protocol (magazine.h):
 *          only the holder of the cache's lock detaches (a sequence on its cpu whose commit stores
 *          0, or a store of 0 and a fence of the cpu), drains, and attaches again (word = 0, then
 *          on = 1 with release).
 *   cpu    the cache's rseq cpu, copied so that a sequence reads one line.
 *   cap    objects it may hold; 0: no slab (a class without one, or not set up yet).
 *
 * Set-up. A slab is set up at its class's first span that the bins' path installs in the cache
 * (nsp__cache_slab_set_up, by the lock holder): cpu, then cap (release), then on (release).
 * Until then it is as mapped, zero, so the slabs of the classes a cpu never allocates, most of a
 * cache's 24 KiB, stay unbacked. The mapped zero in cpu is cpu 0: a sequence that read it before
 * the set-up and `on` after it would run on a cpu that is not the slab's. So every path reads cap
 * with acquire before its sequence and misses on 0 (free.c's slab_takes before a push or a take,
 * nsp__slab_alloc before a pop): a cap it saw set orders the cpu it then reads after the set-up.
 * A set-up slab stays so (a take detaches it, a drain attaches it again; cpu and cap never
 * change).
 *   popped pops drained so far (the drain's): with the word's pops, every malloc a slab served.
 *
 * Stats take no cache (stats.c): they read each slab's word and `popped` racily, and count its
 * objects as free (the program freed them; their spans still say allocated) and its pops as
 * mallocs (no span or central counted them), so that at rest their fields stay exact.
 *
 * An object in a slab is still allocated from its span's view (alloc bit set, freed bit clear),
 * exactly as one in a magazine: the ledger and the sweeps see nothing until it is popped (then it
 * is allocated again, and nothing changed) or drained (then it is a remote free, applied as the
 * magazine's flush applies them: magazine.h). So every foreign take of the cache (cycles, trim,
 * idle release, stats, fork, the recount: bins_detach_all in cache.c) drains the slabs with the
 * magazine, and the owner's flush after a cycle does too: exact per-span counts at release and
 * the ledger's invariants (DESIGN.md §5) hold as they did.
 *
 * What may enter (free.c, free_to_slab): a small object whose span is not the one the freeing
 * thread's bin holds nor one another cpu's cache holds (that one goes onto its span's remote-free
 * list, span.h, back to the cpu that carves it; objects under 16 B and listed-looking ones still
 * come here), whose span is on the cache's node (others keep going to the magazine:
 * placement, DESIGN.md §3), checked as a bins' push checks it (a slot's start, alloc bit set and
 * freed bit clear, not a remote free's tag, not listed in the bin of the cache that holds its
 * span), and then tagged with the magazine's tag naming this cache: a second free of it goes to
 * the slow path, which has this cache taken (its slabs drained) and asks the bits (magazine.h,
 * "The tag"), and realloc asks the same way (nsp__slot_live). A popped object's first word is
 * zeroed, so that the program's object does not look tagged.
 *
 * What may leave (nsp__slab_alloc, nsp__cache_drop_listed). The checks at the push cannot see
 * one case: an object waiting here whose tag the program wrote over (a write after free), freed
 * again on this cpu. Its bits say allocated, as every slab object's do, and its first word is
 * the program's, as a live object's is: it enters a second time. So an object leaves only with
 * this cache's tag: the pop hands out only such an object (and zeroes it), and a drain or a take
 * applies only such objects, giving each the direct remote free's tag first. The other copy is
 * then refused wherever it leaves, reported naming the pointer (its tag was zeroed by the pop, or
 * is the remote free's): never handed out twice, nor marked freed under its new owner. An object
 * refused so, and one merely written while it waited, stays allocated: leaked, as a transfer's
 * written object is (transfer.h).
 *
 * Capacity (NSP_SLAB_BYTES, _MIN, _MAX, _MAX_SIZE): up to 2 KiB objects, 8 KiB of objects per
 * class, at least 16 and at most 32 slots; so 32 slots up to 256 B, 16 from 512 B (16 to 32 KiB
 * of objects). Smaller than TCMalloc's per-cpu capacity on purpose: here the slab is not
 * the first cache (the bin is), and what it holds is kept from its spans. Measured with 32 KiB
 * and up to 128 slots, Larson at 2 threads ran at 0.8x the tree before the slabs (its live
 * objects spread over more spans: more lines and pages per operation); with at most 16 or 32
 * slots at 1.1x, at 8 threads 1.2x, and at 32 threads both kept the gain (1.8-2x: medians of 5-6
 * alternated runs). 32 slots keep a take's half batch (16) worth the apply.
 *
 * Above 2 KiB (NSP_SLAB_BIG, _BIG_MAX_SIZE): 16 slots up to 16 KiB objects, whatever their bytes.
 * There a span holds 32 objects or fewer (sizeclass.c), so a program whose live objects of one
 * class outnumber a span's (the `mixed` benchmark: 8 B..16 KiB, about 32 live per class and
 * thread) frees mostly objects of spans its bin no longer holds: without a slab each went to the
 * magazine as a remote free, and its bin refilled from the central every few mallocs (NSP_STATS,
 * mixed at 2 threads: half of all frees remote, 236k refills a cpu-second, 33k per class above
 * 8 KiB). With the slab those frees stay on the cpu and the full bin pops them instead of
 * refilling. Measured (alternated runs, medians of 5-7, this VM): mixed at 2, 8 and 32 threads
 * 1.4-1.95x, 1.8-2.5x and 2.2-3.75x the slabs up to 2 KiB alone, with 8 slots about 12% less at
 * 8 and 32 threads; Larson (objects up to 1000 B) and peak RSS unchanged. The price: a cpu may
 * hold up to 16 objects of each class from 2.3 to 16 KiB that the program freed there (about
 * 3 MiB in all, 32 KiB per class below), until a malloc pops them or a take drains them (every
 * cycle and idle release does). Above 16 KiB spans hold 16-28 objects of 18-32 KiB: not measured
 * here, those keep the magazine.
 */
#ifndef NSP_HOST_SLAB_H
#define NSP_HOST_SLAB_H

#include <stdatomic.h>
#include <stdint.h>

#include "types.h"

#define NSP_SLAB_BYTES 8192u
#define NSP_SLAB_MIN 16u
#define NSP_SLAB_MAX 32u
#define NSP_SLAB_MAX_SIZE 2048u
#define NSP_SLAB_BIG 16u               /* slots of a slab of objects above 2 KiB */
#define NSP_SLAB_BIG_MAX_SIZE 16384u   /* and up to 16 KiB */
#define NSP_SLAB_COUNT 0xffu /* count's bits in word */
#define NSP_SLAB_POP (NSP_SLAB_COUNT + 1u) /* one pop, in word */
_Static_assert(NSP_SLAB_MAX <= NSP_SLAB_COUNT, "count fits its 8 bits");

struct nsp_slab {
    uint64_t word;        /* offset 0: (pops << 8) | count, every sequence's commit */
    _Atomic uint64_t on;  /* offset 8: 0 = detached */
    int64_t cpu;          /* offset 16: the cache's rseq cpu */
    uint64_t cap;         /* offset 24: 0 = no slab for this class */
    uintptr_t slot[NSP_SLAB_MAX]; /* offset 32 */
    /* pops drained so far (the lock holder's, at each drain; in the line's padding): stats read
     * no cache (stats.c), so a drained pop must stay a malloc there, as it is in the totals */
    uint64_t popped;
} __attribute__((aligned(NSP_CACHE_LINE)));
/* the sequences (cache.h) address these fields by offset */
_Static_assert(__builtin_offsetof(struct nsp_slab, on) == 8 &&
                   __builtin_offsetof(struct nsp_slab, cpu) == 16 &&
                   __builtin_offsetof(struct nsp_slab, cap) == 24 &&
                   __builtin_offsetof(struct nsp_slab, slot) == 32,
               "the slab sequences' offsets");

/* The capacity of a slab of objects of `size` bytes (the rule above). */
static inline uint64_t nsp__slab_cap(uint32_t size)
{
    if (size == 0 || size > NSP_SLAB_BIG_MAX_SIZE)
        return 0;
    if (size > NSP_SLAB_MAX_SIZE)
        return NSP_SLAB_BIG;
    uint32_t n = NSP_SLAB_BYTES / size;
    return n < NSP_SLAB_MIN ? NSP_SLAB_MIN : n > NSP_SLAB_MAX ? NSP_SLAB_MAX : n;
}

#endif /* NSP_HOST_SLAB_H */
