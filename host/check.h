/*
 * host/check.h — the validators of host/'s layers and the ledger's recount, in one place above
 * them (DESIGN.md §2: spans, page heap, centrals, caches and ledger are below; only the pacer,
 * init.c and the tests call in here, and nothing here calls back up).
 *
 * Each nsp__*_is_valid checks one structure against the invariants its header states, and
 * returns 1, or 0 with a sentence in why[0..len) that names the structure (node, class, cache,
 * span address) and the broken invariant. Each needs the lock its owner writes under, said at
 * its declaration; nsp_heap_check (numaspan.h) takes them all and validates the whole heap.
 *
 * The debug level (NSP_DEBUG, options.c) turns the checks on outside the tests:
 *   0  off (the default: release builds pay nothing)
 *   1  the ledger's recount at every pacer cycle that finds every cache free (pacer.c)
 *   2  also every layer's validators at the end of every cycle, and at exit
 *   3  also the ledger's recount at exit (exact only if no other thread still allocates)
 * A failed check at a debug level prints "numaspan: NSP_DEBUG..." on stderr and aborts.
 */
#ifndef NSP_HOST_CHECK_H
#define NSP_HOST_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "cache.h"
#include "numaspan.h"
#include "types.h"

/* Any live span, with nothing changing it: its owner's lock held (a cache's or a central's) or
 * every lock of the heap held. Its place in its arena and the page map; then, unless it is TAKEN
 * (written by its taker, who holds no lock), geometry against its class, alloc_count against
 * the alloc bitmap, and (without NSP_SECURE) the carve frontier and the free tags (span.h): no
 * slot at or past the frontier allocated, every free slot below it tagged. */
int nsp__span_is_valid(const struct nsp_span *s, char *why, size_t len);
/* Node's page heap, its lock held still (nsp__pageheap_lock_still: no cut without the lock
 * half done, none pending unlinked) and (for its live spans' bitmaps) every cache and central:
 * arenas, runs tiling each arena, the page map of FREE runs, coalescing, free lists, pages_free. */
int nsp__pageheap_is_valid(unsigned node, char *why, size_t len);
/* The central of (node, cls), its lock held: list membership, links and counts, and each span. */
int nsp__central_is_valid(unsigned node, unsigned cls, char *why, size_t len);
/* A cache held by the caller (nsp__cache_lock_foreign or lock_all): spans[k] is the empty span or
 * one CACHED by this cache with class k, held_bytes is the sum of their reservations (a window
 * each), and in `over` each is charged at least what its cache can hand out (ledger.h). */
int nsp__cache_is_valid(const struct nsp_cache *c, char *why, size_t len);

/* At rest (no other thread allocating or freeing): what read (nsp_stats_get: counters only,
 * stats.c) returns with every lock of the heap held, and the counters it reads, against a walk
 * of every span: per node and class the freed bits pending (span.h) and the centrals' allocated
 * slots; per class objects in use and spans cached/partial/full; per node large objects and bytes
 * (huge ones included), objects and bytes in use, free pages. 0 when all agree; -1 with the
 * first disagreement in why (or why it could not check). While threads run a disagreement means
 * nothing: the counters of an operation in flight. The reader is the caller's to pass: this file
 * does not name stats.c (stats prints the pacer's devices, and the pacer calls in here). */
int nsp__stats_is_valid(int (*read)(nsp_stats_t *), char *why, size_t len);

/* The debug level (nsp__debug, runtime.h), read once by nsp__check_init (init.c). */
void nsp__check_init(void);
/* The debug recount (nsp_ledger_recount): with every cache, central, page heap (still) and ledger
 * lock held, heapLive + pending against the sum of the charges, per node. 0 when they agree; -1 with
 * the first node that disagrees; 1 if a cache was busy and wait was 0 (nothing checked). */
int nsp__ledger_recount(int wait, unsigned *node, int64_t *ledger, int64_t *charges);
/* At debug level `level` or above: validates the whole heap; on failure reports `when` and
 * aborts. No lock may be held by the caller. */
void nsp__check_at(int level, const char *when);

#endif /* NSP_HOST_CHECK_H */
