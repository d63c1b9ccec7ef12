/*
 * host/pacer.h — the pacer (DESIGN.md §6): when to run a cycle, node limits, scavenging.
 *
 * Owns: the goal and trigger, the cycle (collector hook, sweepgen, release of caches, sweep of
 * uncached spans, measurement of live, scavenging), the pacer thread, its stats and trace.
 *
 * The model (nsp__pacer_goal, nsp__pacer_trigger_for) is pure arithmetic on the live heap,
 * percent, limits and runway, shared by the running pacer and the simulation tests:
 *   goal     = max(live * (1 + percent/100), heapMin) (percent off: no such bound), and with a
 *              memory limit at most
 *              limit - outside - max(3% of limit, 1 MiB)
 *   trigger  sync:       the goal
 *            concurrent: goal - runway, clamped to [live + 45/64 (goal - live),
 *                        max(live + 61/64 (goal - live), goal - 4 MiB for goals above 4 MiB)]
 *   and never less than live + a minimum allocation between cycles (no cycle storms).
 * Bounding the overestimate (DESIGN.md §6), in `over` while something is paced:
 *   budget   caches together hold spans of at most B = kappa * (trigger - live) bytes
 *            (NSP_PACE_RESERVE, kappa = 1/4): heapLive exceeds the live bytes by at most B, so a
 *            crossing comes at most kappa of the way from live to the trigger early
 *   confirm  a crossing starts a cycle only if the live bytes read without taking any cache
 *            (heapLive + pending - the caches' unspent reservation) are at the trigger too, and
 *            the program allocated the minimum between cycles since the last one
 *   runway   and the minimum between cycles are counted in allocated bytes, not charged ones.
 *   back-pressure  an allocation that takes heapLive to the goal, once its thread holds no
 *            lock, waits for the running concurrent cycle (bounded: 20 ms) or runs the due one;
 *            per node too: one that takes its node's heapLive to the node's goal.
 * With a memory limit: `outside` (what numaspan retains beyond the live bytes) is measured at
 * each cycle, and cycles take at most about half the process's CPU time (a limiter, as Go's GC
 * CPU limiter; the cycle thread's clock against the process's).
 * Per node (several nodes, something paced): each node's goal is its share of the goal by its
 * live bytes, at most its node limit less headroom (the rest to the other nodes), its trigger
 * as far toward it as the heap's; a node crossing its trigger starts a cycle, or, when its goal
 * is its limit's, sends its refills to the nearest node under its trigger (nsp__pacer_spilling).
 * Percent off (NSP_PACE_PERCENT=off, nsp_pacer_set_percent): the memory limit alone paces.
 * The pacer acts only when there is something to pace (a memory limit, node limits, or a
 * collector); otherwise the trigger is infinite and the process has no pacer thread.
 * Scavenging and idle-cache release always run: on the pacer thread if there is one, else at
 * the program's slow paths, at most once per tick (pacer.c says why). On the thread the
 * scavenger is paced (about 1% of a CPU toward retained <= in use x goal/last goal x 1.1, at
 * once near a memory limit); without it, frees and slow paths hand back at once.
 * Layers reach the pacer only through the ledger's hooks (nsp__ledger_crossed,
 * nsp__ledger_node_crossed) and counters it reads (the page heap's spills); the pacer drives
 * them down through their interfaces.
 */
#ifndef NSP_HOST_PACER_H
#define NSP_HOST_PACER_H

#include <stdatomic.h>
#include <stdint.h>

#include "numaspan.h"
#include "types.h"

struct nsp_pacer_params {
    int concurrent;       /* 0 sync, 1 concurrent */
    double percent;       /* NSP_PACE_PERCENT */
    int64_t heap_min;     /* NSP_HEAP_MIN */
    int64_t memory_limit; /* NSP_MEMORY_LIMIT, 0 = none */
    int64_t outside;      /* bytes numaspan holds outside the heap (metadata) */
};

/* The goal for a live heap (bytes). */
int64_t nsp__pacer_goal(const struct nsp_pacer_params *p, int64_t live);
/* The headroom under a memory limit: max(3%, 1 MiB). */
int64_t nsp__pacer_headroom(int64_t limit);
/* The trigger for a cycle that ended with live bytes live, goal goal, and runway (bytes allocated
 * during recent cycles). */
int64_t nsp__pacer_trigger_for(const struct nsp_pacer_params *p, int64_t live, int64_t goal,
                               int64_t runway);
/* Per-node pacing: every node's goal (goal_n[0..nnodes-1]) for the heap's goal and live bytes
 * and the nodes' live bytes: its share of the heap's goal in proportion to its live bytes, at
 * least heap_min / nnodes, at most its node limit limit_n (bytes, 0: none) less headroom (bit n
 * of *capped then), and what capped nodes cannot hold given to the others in proportion to
 * their shares. A node's trigger is as far from its live bytes toward its goal as the heap's
 * trigger is from live toward goal. */
void nsp__pacer_node_goals(const struct nsp_pacer_params *p, int64_t goal, int64_t live,
                           unsigned nnodes, const int64_t *live_n, const int64_t *limit_n,
                           int64_t *goal_n, uint64_t *capped);
int64_t nsp__pacer_node_trigger(int64_t goal, int64_t trigger, int64_t live, int64_t goal_n,
                                int64_t live_n);
/* The reservation budget for a trigger and live heap: kappa * (trigger - live), at least 0;
 * INT64_MAX (none) when nothing is paced. */
int64_t nsp__pacer_reserve_budget(double kappa, int64_t trigger, int64_t live);
/* The fewest bytes to allocate between two cycles. */
int64_t nsp__pacer_min_between(int64_t goal, int64_t live);

extern _Atomic int64_t nsp__pacer_trigger; /* INT64_MAX when nothing is paced */
/* 1: a sync cycle is due; 2: at the heap's goal, wait for the running cycle or run the due one;
 * 3 + n: the same at node n's own goal (per-node back-pressure) */
extern __thread int nsp__cycle_due;

/* Reads the options; called once by nsp__init. Exits with a message on a malformed one. */
void nsp__pacer_init(void);
/* The ledger saw the heap reach total, at or past the trigger (nsp__pacer_trigger, ledger.h):
 * the ledger's hook nsp__ledger_crossed, installed by nsp__pacer_init. */
void nsp__pacer_crossed(int64_t total);
/* The ledger saw node's heapLive reach hl, at or past the node's trigger. */
void nsp__pacer_node_crossed(unsigned node, int64_t hl);
/* After every slow-path allocation (a refill, a large object), holding no lock: a synchronous
 * cycle that came due runs here, and the pacer is polled (nsp__pacer_poll). */
static inline void nsp__pacer_after_alloc(void)
{
    extern void nsp__pacer_run_due(void);
    extern void nsp__pacer_poll(void);
    if (__builtin_expect(nsp__cycle_due, 0))
        nsp__pacer_run_due();
    nsp__pacer_poll();
}
/* Starts the pacer thread if the process is paced or traced and has none (at the first slow
 * path; again in a forked child that is paced); without a thread, does the housekeeping once
 * its tick has passed. */
void nsp__pacer_poll(void);
/* Tests: one look of idle release at every cache at time now (ns), with idle time idle_ns, as
 * housekeeping looks. Returns 1, or 0 (nothing done) while housekeeping runs elsewhere. The test
 * owns the clock: run it with NSP_IDLE_RELEASE_MS=0, so that no other look moves the tables. */
int nsp__pacer_test_release_idle(int64_t now, int64_t idle_ns);
/* fork: the pacer's own locks are taken first and last around the allocator's (model before
 * every allocator lock, trace after: it is taken inside them), so that the child finds them free;
 * the child has no pacer thread until it polls while paced. */
void nsp__pacer_fork_prepare_first(void);
void nsp__pacer_fork_prepare_last(void);
void nsp__pacer_fork_release(void);
void nsp__pacer_forked_child(void);
/* nsp_pacer_set_collector and nsp_pacer_cycle once the allocator is ready: the public ones (init.c)
 * initialise it first, so that the pacer does not depend on init.c. */
void nsp__pacer_set_collector(nsp_collector_fn fn, void *arg);
void nsp__pacer_cycle(void);
/* nsp_pacer_set_percent and nsp_pacer_set_memory_limit once the allocator is ready (the public
 * ones in init.c initialise it first): -1 with EINVAL for a value out of range. */
int nsp__pacer_set_percent(double percent);
int nsp__pacer_set_memory_limit(int64_t bytes);
/* nsp_pacer_release_all's cycle (the public one, in trim.c beside nsp_trim, trims after it):
 * bytes its scavenging handed back. */
size_t nsp__pacer_release_cycle(void);

#endif /* NSP_HOST_PACER_H */
