/*
 * host/ledger.h — heapLive as a ledger (DESIGN.md §5): per-node counters, span charges, batching.
 *
 * Owns: heapLive[n] and the monotonic totals of every node, the sum over nodes, the accounting
 * mode and sweepgen.
 *
 * The one rule: every accounting event computes the span's new charge and applies
 *     heapLive[s.node] += new - s.charge;  s.charge = new
 * to the span's own node, whatever core caused it. heapLive is never overwritten.
 *
 * The charge, by event and mode (nsp__ledger_* below compute it):
 *               over (default)            under                     exact
 *   refill      step_up(covered)          allocCount * elemsize     (unchanged)
 *   cover       step_up(covered)          (unchanged)               (unchanged)
 *     (a cached span whose covered bytes passed its charge, or whose charge passes them by
 *     more than W)
 *   release     allocCount * elemsize     allocCount * elemsize     (unchanged)
 *   sweep of an allocCount * elemsize     allocCount * elemsize     (unchanged)
 *   uncached span
 *   malloc/free (unchanged)               (unchanged)               +/- elemsize each
 *   large       npages * pageSize when allocated, 0 when freed (every mode)
 * span = npages * pageSize. W = the class's charge window (sizeclass.h: the span the class had
 * before spans grew; W = span for every class whose span did not). covered = (allocCount + the
 * free slots in the owner's cursor word) * elemsize: every slot the cache can hand out without
 * coming back to the ledger (allocCount counts a bin's listed slots already). step_up(x) = the
 * end of the step x falls in, min(span, (x / step + 1) * step), the step being W for a span
 * that did not grow and W/2 for one that did (ledger.c, window_charge, says why).
 * "over" charges a cached span ahead of its allocations: its free slots (up to a step of them
 * beyond what the cache can hand out) and, once the steps reach the span's end, its tail waste
 * count as allocated until the release reconciles them — the seed's overestimate (Go 1ebc983):
 * an underestimate lets the pacer believe it is in better shape than it is. Its invariant, while
 * a span is cached:
 *     charge >= covered >= allocCount * elemsize
 * kept by nsp__ledger_cover after every hand-out that can raise `covered` (the cursor's next
 * word, a bin's carve), before the object or the bin's list leaves the cache's lock; a raise is a
 * positive change, applied at once, so `over` is never late. The same check lowers a charge that
 * passes covered by more than W (local frees and in-place sweeps gave slots back) to step_up:
 * without it a span in churn kept the charge of its fullest moment, up to the whole span. So the
 * span's size is invisible to the pacer: a cached span's charge passes what its cache can hand
 * out by at most a window (its reservation, cache.h) at every check, W/2 after a raise, and
 * passes its allocated slots by at most that and the cursor's word (at most 63 slots, under a
 * window), so the seed's C = caches x classes x W whatever the span. For a class whose span
 * did not grow every charge is the whole span, as the seed's (covered never passes it, nor it
 * covered by more than W). "under" is what golang/go#53738 regressed to. "exact" is the oracle,
 * slow on purpose.
 *
 * Batching: positive changes are applied at once; negative ones collect per (cache, node) in the
 * cache's `pending` and are flushed past NSP_DELTA_BATCH, at the cache's next refill, and at a
 * cycle. A late negative change only makes the estimate larger. heapLive[n] + pending[n] is the
 * sum of the charges of node n's spans at every instant (between two ledger operations).
 *
 * sweepgen, in the seed's encoding, seen from a span held by a cache: sweepgen == sg + 3 swept and
 * cached this cycle; sg + 1 cached before this cycle's sweep (stale: its owner releases it before
 * allocating again). A cycle advances sg by 2. The release computes the charge afresh, so a stale
 * span is reconciled correctly by construction (no "skip the stale span" rule is needed).
 */
#ifndef NSP_HOST_LEDGER_H
#define NSP_HOST_LEDGER_H

#include <stdatomic.h>
#include <stdint.h>

#include "sizeclass.h"
#include "types.h"

enum nsp_accounting { NSP_ACCT_OVER = 0, NSP_ACCT_UNDER, NSP_ACCT_EXACT };

struct nsp_ledger_node {
    _Atomic int64_t heap_live __attribute__((aligned(NSP_CACHE_LINE)));
    /* monotonic totals, bytes and objects */
    _Atomic uint64_t alloc_bytes __attribute__((aligned(NSP_CACHE_LINE)));
    _Atomic uint64_t alloc_objects, free_bytes, free_objects;
};

extern struct nsp_ledger_node nsp__ledger[NSP_MAX_NODES];
extern _Atomic int64_t nsp__heap_live_total; /* sum over nodes, kept beside them */
extern _Atomic int64_t nsp__charged_total;   /* monotonic: every positive change (runway) */
extern _Atomic int64_t nsp__huge_charge[NSP_MAX_NODES]; /* charges of huge objects (recount) */
extern int nsp__accounting;                  /* enum nsp_accounting, set at init */
extern int64_t nsp__delta_batch;             /* NSP_DELTA_BATCH */
extern _Atomic uint32_t nsp__sweepgen;
/* The reservation budget: what all caches together may hold charged and unallocated while
 * something is paced in `over`, counted as their spans' reservations (a charge window each,
 * sizeclass.h; cache.c) (the pacer sets it, DESIGN.md §6 "Bounding the overestimate");
 * INT64_MAX: none. */
extern _Atomic int64_t nsp__reserve_budget;
/* The budget's floor: F = one span's reservation (its window) of every size class a cache has
 * refilled since the last cycle
 * (the working set one cache needs; a thread using more classes than B holds spans of would see
 * each refill past B served one object at a time by the central: `loops` ran at 0.57x with the
 * pacer on), and twice that in force (nsp__ledger_reserve_floor: the cache a thread moved from
 * still holds its set). A refill may cache its span while all caches hold at most max(B, 2F);
 * F does not grow with the number of caches (at most one span of each class, 12 MiB with every
 * class), so the lead stays bounded by max(B, 2F) whatever the cache count. Reset at each cycle. */
extern _Atomic int64_t nsp__reserve_floor;
/* The one hook from the ledger to the pacer (DESIGN.md §2: layers reach the pacer only through
 * the ledger). The pacer publishes the heap total from which it wants to hear of a positive change
 * (nsp__pacer_notify: its trigger, or 0 while a concurrent cycle runs, for back-pressure;
 * INT64_MAX when nothing is paced) and installs nsp__ledger_crossed at its init; a positive change
 * that takes the total heapLive to or past nsp__pacer_notify calls it with that total. Both are
 * defined here, beside their one reader on every positive change, so that neither file needs the
 * other by name. */
extern _Atomic int64_t nsp__pacer_notify;
extern void (*_Atomic nsp__ledger_crossed)(int64_t total);
/* Per node: the heapLive from which a positive change calls nsp__ledger_node_crossed (the node's
 * trigger; INT64_MAX when not paced per node), after nsp__ledger_crossed if the same change
 * also reached nsp__pacer_notify. Written by the pacer. */
extern _Atomic int64_t nsp__node_notify[NSP_MAX_NODES];
extern void (*_Atomic nsp__ledger_node_crossed)(unsigned node, int64_t hl);
/* Large objects allocated and freed per node (counted by large.c, read by stats.c):
 * monotonic totals of the node like those above, so they live here, below both readers. */
extern _Atomic uint64_t nsp__large_allocs[NSP_MAX_NODES], nsp__large_frees[NSP_MAX_NODES];
/* Bytes of the large and huge objects live on each node: the sum of their charges, changed
 * with them (nsp__ledger_large, nsp__ledger_large_resized), read by stats.c. */
extern _Atomic int64_t nsp__large_bytes[NSP_MAX_NODES];

/* Applies a change of heapLive on node (delta > 0 at once; delta < 0 into *pending, flushed past
 * the batch, or at once when pending is NULL). */
void nsp__ledger_delta(unsigned node, int64_t delta, int64_t *pending);
/* Sets s's charge to charge, applying the difference as nsp__ledger_delta does. */
void nsp__ledger_set(struct nsp_span *s, int64_t charge, int64_t *pending);
/* A refill of class cls (a span reserving `bytes`) under the reservation budget `budget`: notes
 * cls among the classes in use and returns what all caches may hold with it, max(budget, 2F)
 * while that leaves heapLive under the trigger, budget otherwise. */
int64_t nsp__ledger_reserve_room(unsigned cls, int64_t bytes, int64_t budget);
/* The floor in force: 2F (a thread's working set in the cache it runs on and the one it left). */
int64_t nsp__ledger_reserve_floor(void);
/* A cycle: the classes in use are counted afresh (F = 0). */
void nsp__ledger_reserve_reset(void);
/* Flushes pending[0..nnodes-1] into heapLive. */
void nsp__ledger_flush(int64_t *pending);

/* The events. pending: the acting cache's negative batch, or NULL. */
void nsp__ledger_refill(struct nsp_span *s, int64_t *pending);
/* over's cover (the table): sets cached span s's charge to step_up(covered): a raise (applied at
 * once) or a lowering (into pending). Its cache's lock held. */
void nsp__ledger_recharge(struct nsp_span *s, int64_t *pending);
/* Raises and lowerings counted since the start (tests, and what a reader of the table can
 * check). */
extern _Atomic uint64_t nsp__ledger_raises, nsp__ledger_lowerings;
void nsp__ledger_release(struct nsp_span *s, int64_t *pending);
void nsp__ledger_sweep(struct nsp_span *s, int64_t *pending); /* uncached span, after a sweep */
/* The same for a span no cache or central lock covers (a new span a central carved while its
 * mutex was held, central.h): under the node's ledger lock, shared. */
void nsp__ledger_sweep_unlocked(struct nsp_span *s);
void nsp__ledger_large(struct nsp_span *s, int allocated);
/* A large object grew or shrank in place (realloc): charged its new page count. */
void nsp__ledger_large_resized(struct nsp_span *s);
/* Objects allocated (n > 0) or freed (n < 0) in s outside the owner's counters (a central
 * serving directly, remote frees applied by a sweep): the node's totals. */
void nsp__ledger_count(struct nsp_span *s, int64_t n);
/* The exact mode's charge of n objects allocated (n > 0) or freed (n < 0) in s, at the moment it
 * happens; nothing in the other modes. */
void nsp__ledger_exact_objects(struct nsp_span *s, int64_t n, int64_t *pending);
/* A sweep found `doubles` freed bits on slots that were not allocated (double frees). The exact
 * mode charged each at its remote free, before anyone could tell: given back here. */
void nsp__ledger_sweep_doubles(struct nsp_span *s, uint32_t doubles, int64_t *pending);
/* Adds the span's owner counters (allocations and local frees since the last flush) to the
 * node's totals and zeroes them (owner only). */
void nsp__ledger_flush_counts(struct nsp_span *s);

/* The nodes' ledger locks, which changes made outside any cache or central lock hold across
 * their two steps (charge, heapLive): fork's prepare handler and the debug recount take them
 * after every cache, central and page heap lock, so that neither sees a change half made. */
void nsp__ledger_lock_all(void);
void nsp__ledger_unlock_all(void);
/* In a fork child, instead of nsp__ledger_unlock_all: the locks are rwlocks, which glibc lets go
 * by the thread id that took them, and the child's one thread has a new one. Made new (free). */
void nsp__ledger_forked_child(void);
/* Tests only: called between the two steps of a change made under a ledger lock. */
extern void (*nsp__ledger_test_hook)(void);

/* Bytes of cached span s its cache can hand out without coming back to the ledger (the table's
 * `covered`): its allocated slots and the free ones in its cursor's word. */
static inline int64_t nsp__ledger_covered(const struct nsp_span *s)
{
    return ((int64_t)s->alloc_count + nsp__popcount64(s->alloc_cache)) * s->elemsize;
}

/* over: after a hand-out from cached span s that may have raised its covered bytes (a new cursor
 * word, a bin's carve), and before what it handed out leaves the cache's lock: a charge that no
 * longer covers them is raised to the end of their step (the table); one more than a window past
 * them (local frees and in-place sweeps took them back) is lowered likewise. Nothing in the
 * other modes. Lock held; pending: the cache's. */
static inline void nsp__ledger_cover(struct nsp_span *s, int64_t *pending)
{
    if (nsp__accounting != NSP_ACCT_OVER)
        return;
    int64_t need = nsp__ledger_covered(s), w = (int64_t)nsp__class_window_bytes(s->sizeclass);
    int64_t charge = atomic_load_explicit(&s->charge, memory_order_relaxed);
    if (__builtin_expect(need > charge || charge - need > w, 0))
        nsp__ledger_recharge(s, pending);
}

/* The exact mode's per-object change, on the fast path's slow side. */
static inline int nsp__ledger_exact(void)
{
    return __builtin_expect(nsp__accounting == NSP_ACCT_EXACT, 0);
}

#endif /* NSP_HOST_LEDGER_H */
