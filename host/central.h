/*
 * host/central.h — node centrals: per NUMA node and size class, the spans no cache holds.
 *
 * Owns: each central's PARTIAL and FULL lists (doubly linked through the spans, guarded by the
 * central's mutex) and its counters. A span in a list is owned by the central; handing it to a
 * cache (cacheSpan) and taking it back (uncacheSpan) are the only ways in and out, plus a remote
 * free that wakes a FULL span (FULL -> PARTIAL by CAS, then a move under the lock), and the trim
 * that returns empty spans to the page heap.
 * Lock order: cache -> central -> page heap. A central never calls malloc or hwloc.
 *
 * Nobody waits for a stuck holder (issue 11, hold.h). A release (uncacheSpan) that finds the
 * central's mutex held pushes its span on the central's pending stack (through s->next: the
 * span is in no list) and goes; a remote free that woke a FULL span (its CAS won) and finds the
 * mutex held leaves the span in the full list with state PARTIAL and raises `wakes_pending`.
 * Neither waits at all, and neither makes anything new. A refill, a transfer batch or a direct
 * object waits for a holder that runs, as for any mutex; only when the hold is stuck (a waiter
 * waited NSP_HOLD_WAIT_NS for it, once per hold, hold.h) does it carve a new span from the page
 * heap instead (itself never waiting for a stuck holder: pageheap.h), take what it needs and push
 * the span pending too (TAKEN until listed). Whoever holds the mutex next lists what is pending
 * first (nsp__central_lock), so every holder sees exact lists, and no object or free is lost: a
 * pending span is owned by the central, out of every list, as one being swept is. The counters
 * are bumped atomically, by holders and pushers alike, and read racily by stats. A trim (malloc_trim,
 * a cycle, a reclaim) skips a central whose hold is stuck: best effort, nsp__central_busy_skips
 * counts it, the next trim gets it.
 */
#ifndef NSP_HOST_CENTRAL_H
#define NSP_HOST_CENTRAL_H

#include <stdint.h>

#include "hold.h"
#include "sizeclass.h"
#include "transfer.h"
#include "types.h"

struct nsp_central {
    pthread_mutex_t lock;
    struct nsp_hold hold; /* which hold of `lock` is stuck, if one is (hold.h) */
    struct nsp_span *partial;
    struct nsp_span *partial_tail; /* its last span: where a refill parks a thin one */
    struct nsp_span *full;
    uint64_t npartial, nfull;
    /* counters: bumped by atomic adds (with or without the mutex), read racily by stats */
    uint64_t refills;        /* spans handed to caches */
    uint64_t releases;       /* spans taken back */
    uint64_t sweeps;         /* sweeps done by this central */
    uint64_t swept_objects;  /* remote frees applied by them */
    uint64_t spans_new;      /* spans carved from the page heap */
    uint64_t spans_returned; /* empty spans given back to it */
    uint64_t direct_allocs;  /* objects handed out without a cache */
    uint64_t cached_mallocs; /* objects caches handed out of spans since given back */
    uint64_t wakes;          /* FULL spans woken by a remote free */
    /* allocated slots (alloc_count) of the spans it owns: its lists and the span a refill or a
     * direct allocation has out of them; remote frees count until swept. Bumped by relaxed
     * atomic adds, with or without the mutex (count_objects), so that stats read it without the
     * lock (stats.c). */
    uint64_t objects;
    /* pushed without the mutex, listed by its next holder (file header) */
    struct nsp_span *_Atomic pending;
    _Atomic int wakes_pending;
    /* the lock-free front of this node's class (transfer.h): on its own line, outside the lock */
    struct nsp_transfer front;
} __attribute__((aligned(NSP_CACHE_LINE)));

/* [node * NSP_NUM_CLASSES + class] */
extern struct nsp_central *nsp__centrals;

static inline struct nsp_central *nsp__central(unsigned node, unsigned cls)
{
    return &nsp__centrals[node * NSP_NUM_CLASSES + cls];
}

/* A central's mutex for those outside this file who must see it whole (fork, the recount):
 * what was pushed pending is listed first. */
void nsp__central_lock(struct nsp_central *c);
void nsp__central_unlock(struct nsp_central *c);
/* Centrals a trim or a cycle found busy and skipped. */
extern _Atomic uint64_t nsp__central_busy_skips;

/* Returns 0, or -1 if the OS refused memory for the centrals. */
int nsp__central_init(unsigned nnodes);

/* cacheSpan: a swept span of class cls with a free slot, CACHED by cache, from node's central or,
 * when it has none, carved from node's page heap (or the nearest node with room). NULL if no node
 * has memory, or if the central's mutex is held: the caller holds its cache's lock, and waiting
 * there made every other thread of its cpu find the cache busy for as long (the caller's miss
 * then goes to the node's transfer, without the cache). */
struct nsp_span *nsp__central_cache_span(unsigned node, unsigned cls, unsigned cache);
/* The same for a caller that holds no cache's lock (the bins' refill, cache.c): a held mutex
 * is waited for unless its hold is stuck, and then the span is a new one (file header). NULL only
 * if no node has memory. */
struct nsp_span *nsp__central_cache_span_unheld(unsigned node, unsigned cls, unsigned cache);
/* uncacheSpan: takes back a span a cache held (PARTIAL if it has or may have free slots); the
 * cache made `mallocs` allocations from it (the class's counter). The ledger's release is the
 * cache's to do first. */
void nsp__central_uncache_span(struct nsp_span *s, uint32_t mallocs);
/* A remote free found s FULL: move it to PARTIAL (the first freer to win the CAS does). */
void nsp__central_wake(struct nsp_span *s);
/* One object of class cls from node's central without caching a span, under its mutex (the
 * reservation budget's refusals, nsp_malloc_node). NULL if no node has memory. */
void *nsp__central_alloc(unsigned node, unsigned cls);
/* The same for a thread whose core's cache is busy (its lock held by a thread that may be
 * preempted). Outside `exact` and NSP_SECURE it comes from the node's transfer (transfer.h): a
 * take without the mutex, and when the transfer is empty one pass under the mutex fills it with
 * a batch (one sweep and one ledger change per span, not per object). Objects waiting in a
 * transfer are charged as allocated (their spans cannot tell them from live ones) until the next
 * cycle or trim gives them back: at most NSP_TRANSFER_SLOTS batches per node and class. */
void *nsp__central_alloc_busy(unsigned node, unsigned cls);
/* Pages for a new span or a large object on node: from its free runs; else, after giving the
 * node's empty spans back to its page heap (reclaim, central.c); else a new arena or the
 * nearest node with room (nsp__pageheap_alloc_near). No central lock may be held. */
struct nsp_span *nsp__central_pages(unsigned node, size_t npages, size_t align_pages);
/* Gives the node's transfer batches back to their spans (remote frees). A cycle or a trim does
 * it before it releases the caches, so that frees into spans the caches hold are applied by
 * their release within the same cycle. */
void nsp__central_drain(unsigned node);
/* Gives the node's transfer batches back to their spans (remote frees), sweeps node's uncached
 * spans (reconciling their charges) and returns the empty ones to the page heap. Returns bytes.
 * A central whose hold is stuck (hold.h) is skipped and counted: best effort. */
size_t nsp__central_trim(unsigned node);

#endif /* NSP_HOST_CENTRAL_H */
