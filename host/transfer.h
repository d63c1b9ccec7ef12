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
 * Links: an object's first word holds (next ^ nsp__transfer_key), 0 encoded at the end. The key
 * has its top bit set, so a link never decodes to an address for a word that holds a pointer or
 * a small integer; a taker checks every link (an object of the class, at a slot's start) before
 * following it, and a free of an object that decodes so (a double free of an object waiting in a
 * chain: its alloc bit is set) is reported (nsp__transfer_lists). A taker zeroes the word of the
 * object it hands out, so that the program's object does not look listed. A bin's push does not
 * decode transfer links: a second free of a waiting object by the cpu whose bin holds its span
 * is pushed there, and it overwrites the link; the taker that reaches that object then reports
 * it (naming it) and drops it with the rest of its chain, so it is handed out once, by the bin.
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
/* Whether object p of span s looks like it waits in a chain: its first word decodes to the end
 * of a chain or to an object of its class. A double free of such an object must be refused: its
 * alloc bit is set, and freeing it would hand it out twice. */
int nsp__transfer_lists(const struct nsp_span *s, const void *p);

#endif /* NSP_HOST_TRANSFER_H */
