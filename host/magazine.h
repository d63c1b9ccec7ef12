/*
 * host/magazine.h — per-core remote-free magazines: cross-core frees collected per core and
 * applied in batches sorted by span (DESIGN.md §3, "Remote frees in batches").
 *
 * Owns: struct nsp_magazine, the objects' tag, the top bits every bin key shares (what an
 * object's first word may hold is decided here: a tag, a link, or the program's data), and the
 * flush. The push (a restartable sequence on the core's cpu) and who may flush when are the core
 * cache's (cache.h), since a magazine lives in its cache and is detached with its bins.
 *
 *   count   objects in slot[0..count): committed by the push sequence, whose commit IS the push
 *           (the slot is written first; a sequence that restarts only rewrites a slot past count),
 *           and by the take sequence of the cpu's thread whose push found it full, which copies
 *           the slots out and commits 0 (no lock: nsp__cache_take_magazine_rseq, cache.c)
 *   on      0: detached. The push misses, and the free goes the direct way (one atomic OR). Only
 *           the holder of the cache's lock detaches a magazine (a sequence on its cpu whose
 *           commit stores 0, or a store of 0 and a fence of the cpu), flushes it and attaches it
 *           again (count = 0, then on = 1 with release).
 *
 * An object in a magazine is still allocated from its span's view (alloc bit set, freed bit
 * clear), exactly as it was before the free: the ledger and the sweeps see nothing until the
 * flush, which makes it a remote free (its freed bit), so every cycle's foreign take of the cache
 * (which flushes the magazine) leaves the ledger's invariants as a direct remote free would.
 *
 * The tag. A pushed object's first word holds p ^ nsp__magazine_key ^ (cache << 48). A second
 * free of an object waiting in a magazine would otherwise pass every check (its bits say
 * allocated): the free paths test the tag (the bins' push inside its sequence, the locked and
 * remote paths here), and a tagged object has the named cache's magazine flushed before its
 * free is decided by the bits, so that a double free through a magazine is reported at the
 * second free, naming the pointer, as a direct one is. The tag is a hint (a flushed object keeps
 * it until it is written again): a flush settles it, never a false report.
 *
 * The flush groups the objects by (span, bitmap word) in one pass (runs, and a few groups searched
 * in a row, then a small hash table; not a sort: magazine.c says why): one atomic OR per (span,
 * bitmap word), and FULL -> PARTIAL woken once per span (the first CAS wins). A bit already set
 * there, or an object listed twice, is a double free that raced the tag's check: reported with
 * its pointer at the flush.
 */
#ifndef NSP_HOST_MAGAZINE_H
#define NSP_HOST_MAGAZINE_H

#include <stdatomic.h>
#include <stdint.h>

#include "types.h"

#define NSP_MAG_SLOTS 60

struct nsp_magazine {
    uint64_t count;       /* offset 0: the push's commit */
    _Atomic uint64_t on;  /* offset 8: 0 = detached */
    int64_t cpu;          /* offset 16: the cache's rseq cpu, copied for the sequence */
    uint64_t flushes;     /* objects flushed (lock holder) */
    uintptr_t slot[NSP_MAG_SLOTS]; /* offset 32 */
} __attribute__((aligned(NSP_CACHE_LINE)));
/* the push sequence (cache.h) addresses these fields by offset */
_Static_assert(__builtin_offsetof(struct nsp_magazine, on) == 8 &&
                   __builtin_offsetof(struct nsp_magazine, cpu) == 16 &&
                   __builtin_offsetof(struct nsp_magazine, slot) == 32,
               "nsp__mag_push's offsets");

/* The tag's key. Defined in span.c, the bottom layer, since every layer that frees remotely
 * writes a tag (free.c's direct remote free and the central's give-back of a transfer chain
 * too). */
extern __attribute__((visibility("hidden"))) uint64_t nsp__magazine_key; /* as nsp__rseq_off */

/* The cache a tag names for a remote free that went the direct way (one atomic OR, no
 * magazine): no magazine holds the object, so the bits decide at its next free. Written before
 * the freed bit is set, it keeps the bins' push (which reads no freed bitmap, cache.h) from
 * taking the object while that bit waits for a sweep. No cache with a magazine has this index
 * (caches of a real machine, one per cpu; NSP_MAG_XFREE and NSP_MAG_TRANSFER, below it, are
 * reserved too), so a free of an object tagged so looks into no magazine (free.c). */
#define NSP_MAG_NONE 0x7fffu

/* The top 16 bits of every bin's key (cache.c, next_key), as a word: a per-process constant,
 * neither 0 nor 0xffff, drawn with the tag's key. A listed object's first word is a link, the
 * next object's address (below 2^47) or 0 xor the key, so its top 16 bits are the key's: a
 * first word whose top bits differ is no link of any bin, and a free need not read the bin of
 * the cache that holds the span (nsp__may_be_link). That read was the consumer's one miss per
 * free on a line the producer writes at every malloc (the bin's word sits beside its key):
 * producer/consumer, README. Links stay as hard to forge by chance: a stray word is taken as a
 * link only when its top bits match (small integers, pointers and tags never do) and the rest
 * decodes into the span. */
extern uint64_t nsp__bin_key_top;
#define NSP_BIN_KEY_TOP_MASK (0xffffULL << 48)

/* Whether word, an object's first word, may be a link of some bin (its top 16 bits are the
 * bins' keys'): when 0 the object is in no bin's list. */
static inline int nsp__may_be_link(uint64_t word)
{
    return (word & NSP_BIN_KEY_TOP_MASK) == nsp__bin_key_top;
}

/* Sets the tag's key and the bins' keys' top bits (once, with the caches, before any bin is
 * attached). */
void nsp__magazine_init(void);

/* The tag written into object p pushed into cache ci's magazine. */
static inline uint64_t nsp__magazine_tag(const void *p, uint32_t ci)
{
    return (uint64_t)(uintptr_t)p ^ nsp__magazine_key ^ ((uint64_t)ci << 48);
}

/* The cache whose magazine tag word w0, p's first word, names, or -1 when it is not a tag. */
static inline int64_t nsp__magazine_tag_of(const void *p, uint64_t w0)
{
    uint64_t x = w0 ^ nsp__magazine_key ^ (uint64_t)(uintptr_t)p;
    return x << 16 ? -1 : (int64_t)((x >> 48) & 0x7fff);
}

/* The cache whose magazine p's tag names, or -1 when p's first word is not a tag. */
static inline int64_t nsp__magazine_tagged(const void *p)
{
    return nsp__magazine_tag_of(p, __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED));
}

/* Applies objs[0..n) as remote frees, grouped by (span, bitmap word). errno kept. */
void nsp__magazine_apply(const uintptr_t *objs, unsigned n);

#endif /* NSP_HOST_MAGAZINE_H */
