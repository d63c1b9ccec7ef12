/*
 * host/transfer.h — per node and size class, the central's lock-free front: batches of free
 * objects that a thread whose core's slow path is busy takes from without the central's mutex
 * (DESIGN.md §3, "Misses move batches"; TCMalloc's transfer cache, in a lock-free form).
 *
 * Owns: the slots of each (node, class) transfer and the chains in them.
 *
 * A transfer is NSP_TRANSFER_SLOTS words, each 0 or the first object of a chain of free objects
 * of the class. A chain is owned by whoever holds it: the slot, or the thread that took it out.
 * Only two atomic operations touch a slot: exchange with 0 (a take: the chain is the taker's
 * alone, so no ABA and no read of memory another thread may own) and compare-and-swap 0 -> chain
 * (a put). A taker keeps the first object and puts the rest back.
 *
 * The objects of a chain are allocated from their spans' view (alloc bit set, counted in
 * alloc_count, charged by their span as the central's allocation charged them), exactly as an
 * object handed to the program is: neither a sweep nor the ledger can tell them apart, so the
 * ledger's invariants need nothing new. They go back to their spans as remote frees when the
 * central is trimmed (nsp__central_trim: every cycle, malloc_trim, a reclaim before the page
 * heap grows), so nothing stays stranded past a cycle.
 *
 * Links: an object's first word holds the transfer's tag (magazine.h's tag with cache index
 * NSP_MAG_TRANSFER: p ^ nsp__magazine_key ^ (NSP_MAG_TRANSFER << 48)), its second (next ^
 * nsp__transfer_key), 0 encoded at the end. The tag is why a bins' push of a second free of a
 * waiting object misses (issue 11): the push refuses any remote free's tag in the object's first
 * word (cache.h), so no instruction is added to the fast path, and the slow path
 * (nsp__free_small) sees the tag and asks the transfers. The tag alone is a hint: a live object
 * whose first word the program set to that value by chance (it would need the secret key) must
 * not be reported, so the report waits for a proof: nsp__transfer_holds finds the object in a
 * chain. A taker checks every object's tag and link (an object of the class, at a slot's start)
 * before following it, and zeroes both words of the object it hands out, so that the program's
 * object does not look listed. Two words: classes below NSP_TRANSFER_MIN_SIZE have no transfer
 * (their busy misses take one object under the central's mutex, as `exact` and NSP_SECURE do).
 * A chain whose object was written while it waited (a write after free) is reported by whoever
 * walks it next, and that object and what follows it are dropped (leaked, not handed out).
 *
 * Ordering: a put is a release compare-and-swap, every take (a take, take_all, a walk) an acquire
 * exchange, so a taker reads the links and tags its putter wrote; a taker that puts the rest
 * back with its own release passes the first putter's writes on (happens-before is transitive),
 * and the object it hands out was allocated, with its span set up, before the putter's put.
 *
 * Proof without a lock: nsp__transfer_holds takes each slot's chain out (the exchange: it is the
 * walker's alone), walks it and puts it back. A chain another thread holds at that instant (a
 * taker between its exchange and its put-back, a few instructions; or a trim giving it back) is
 * not seen: a second free racing that is not reported, and the bits decide, as for any double
 * free racing the first (span.h).
 */
#ifndef NSP_HOST_TRANSFER_H
#define NSP_HOST_TRANSFER_H

#include <stdatomic.h>
#include <stdint.h>

#include "types.h"

#define NSP_TRANSFER_SLOTS 4
/* Bytes of objects one fill moves: enough that the central's mutex, its sweep and the ledger
 * are paid once per batch, few enough that a batch stays in a core's cache. */
#define NSP_TRANSFER_BATCH_BYTES 16384
#define NSP_TRANSFER_BATCH_MAX 64
#define NSP_TRANSFER_BATCH_MIN 8
/* The smallest class with a transfer: a waiting object holds its tag and its link (above). */
#define NSP_TRANSFER_MIN_SIZE 16
/* The tag's cache index for an object waiting in a transfer chain (magazine.h's tag; no cache
 * has this index, NSP_MAG_NONE is the one above it). */
#define NSP_MAG_TRANSFER 0x7ffeu

/* A slot per line: a thread starts at its cpu's slot (transfer.c), so a cpu's takes and puts
 * stay on a line its cache holds; one shared line cost a third of the take in line transfers. */
struct nsp_transfer {
    struct {
        _Atomic uintptr_t v;
    } __attribute__((aligned(NSP_CACHE_LINE))) slot[NSP_TRANSFER_SLOTS];
};

extern uint64_t nsp__transfer_key;

/* Sets the links' key (once, at the centrals' init). */
void nsp__transfer_init(void);
/* Objects of class cls one fill moves (NSP_TRANSFER_BATCH_*). */
unsigned nsp__transfer_batch(unsigned cls);
/* One object of class cls from t, its link zeroed; NULL when every slot is empty. The rest of
 * the chain it came from goes back into t; what finds no empty slot is returned in *spill (a
 * chain the caller gives back to its spans), else *spill is 0. */
void *nsp__transfer_take(struct nsp_transfer *t, unsigned cls, uintptr_t *spill);
/* Links objs[0..n) into a chain and puts it into an empty slot of t: 0, or -1 when none was
 * empty (the objects are then still the caller's, linked). */
int nsp__transfer_put(struct nsp_transfer *t, void **objs, unsigned n);
/* Takes every chain out of t, linked into one: its first object, or 0. */
uintptr_t nsp__transfer_take_all(struct nsp_transfer *t, unsigned cls);
/* The next object of a chain held by the caller, after p (0 at the end, or when the link does
 * not decode to an object of class cls: that is reported, and the rest of the chain is dropped,
 * leaked rather than handed out twice). */
uintptr_t nsp__transfer_next(uintptr_t p, unsigned cls);
/* The same, for a holder that frees or rewrites p next: -1 (reported, *next = 0) when p's own
 * link does not decode, and then p must be left alone (a bin may list it), else 0. */
int nsp__transfer_follow(uintptr_t p, unsigned cls, uintptr_t *next);
/* Whether object p looks like it waits in a chain: its first word is the transfer's tag. A hint
 * (a live object may hold that value by chance): nsp__transfer_holds proves it. */
int nsp__transfer_lists(const void *p);
/* Whether p waits in one of t's chains (of class cls), walking each (taken out, put back). Any
 * object of a walked chain found written while it waited is reported and dropped (as a take does).
 * 1 proves p is waiting: a free of it is a double free, and must not be applied (its alloc bit
 * is set; freed, it would be handed out twice). */
int nsp__transfer_holds(struct nsp_transfer *t, unsigned cls, const void *p);

#endif /* NSP_HOST_TRANSFER_H */
