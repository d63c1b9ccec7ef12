/*
 * host/cache.h — core caches: one per core of the topology, one span per size class.
 *
 * Owns: the caches and their lock word. A thread finds its cache from its cpu (or virtual core)
 * and may touch it only holding its lock:
 *
 *   lock == 0   free
 *   lock == 1   held by a thread that took it with a restartable sequence (rseq) on the cache's
 *               own cpu: the sequence checks the cpu and the lock and stores 1 as its commit, so
 *               a preemption or migration in between restarts it. No atomic instruction: this is
 *               the fast path's critical section on the real machine.
 *   lock == 2   held by a thread that took it with compare-and-swap: every taker of a cache with
 *               no single cpu (virtual cores, core/L2/L3 grouping, no rseq), and "foreign" takers
 *               of an rseq cache (the pacer, fork), which then fence the cache's cpu with
 *               membarrier(PRIVATE_EXPEDITED_RSEQ) — restarting any sequence that read 0 before
 *               the CAS — and own the cache only if the word still reads 2 afterwards. Foreign
 *               takers of rseq caches are serialised from CAS to re-check (cache.c), so that
 *               2 can only be their own; a fence that fails makes the take fail.
 *   Release is a plain store of 0 (release order).
 *
 * A try-lock that fails never spins: the caller goes to the central (DESIGN.md §3).
 * Invariants: spans[k] is &nsp__empty_span or a span CACHED by this cache with sizeclass k;
 * held_bytes is the sum of their span bytes and at most nsp__cache_max.
 */
#ifndef NSP_HOST_CACHE_H
#define NSP_HOST_CACHE_H

#include <stdatomic.h>
#include <stdint.h>

#include "runtime.h"
#include "sizeclass.h"
#include "topology/topology.h"
#include "types.h"

struct nsp_cache {
    _Atomic uint32_t lock;
    int32_t rseq_cpu;  /* the one cpu that takes this cache by rseq, or -1 */
    uint32_t index;
    uint32_t node;
    size_t held_bytes;
    uint32_t flush_gen; /* sweepgen when the cache last released its spans (ledger.h) */
    struct nsp_span *spans[NSP_NUM_CLASSES];
    /* counters, under lock */
    uint64_t refills, releases, cap_releases;
    uint64_t sweeps, swept_objects;
    int64_t pending[NSP_MAX_NODES]; /* negative heapLive changes not yet applied (ledger.h) */
} __attribute__((aligned(NSP_CACHE_LINE)));

extern struct nsp_cache *nsp__caches;
extern struct nsp_span nsp__empty_span;  /* nelems 0: every allocation from it misses */
extern _Atomic size_t nsp__cached_total; /* bytes of spans held by all caches */
extern int nsp__rseq_enabled;

/* Returns 0, or -1 if the OS refused memory for the caches. */
int nsp__cache_init(void);

/* ---- the lock --------------------------------------------------------------------------------- */

#if defined(__x86_64__) && defined(NSP_HAVE_RSEQ) && !defined(__SANITIZE_THREAD__)
/*
 * Takes lock (0 -> 1) in a restartable sequence bound to cpu. Returns 1 if taken, 0 if the lock
 * was held or the thread is not on cpu, -1 if the sequence was aborted (preempted, migrated, or
 * a signal): try again. The 4 bytes before the abort label are the signature glibc registered.
 */
static inline int nsp__rseq_trylock(_Atomic uint32_t *lock, int cpu)
{
    struct rseq *rs = (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
    __asm__ __volatile__ goto(
        ".pushsection __rseq_cs, \"aw\"\n\t"
        ".balign 32\n\t"
        "3:\n\t"
        ".long 0x0, 0x0\n\t"
        ".quad 1f, (2f - 1f), 4f\n\t"
        ".popsection\n\t"
        "leaq 3b(%%rip), %%rax\n\t"
        "movq %%rax, %[rseq_cs]\n\t"
        "1:\n\t"
        "cmpl %[cpu], %[cpu_id]\n\t"
        "jnz %l[fail]\n\t"
        "cmpl $0, %[lock]\n\t"
        "jnz %l[fail]\n\t"
        "movl $1, %[lock]\n\t"
        "2:\n\t"
        ".pushsection __rseq_failure, \"ax\"\n\t"
        ".byte 0x0f, 0xb9, 0x3d\n\t"
        ".long 0x53053053\n\t"
        "4:\n\t"
        "jmp %l[abort]\n\t"
        ".popsection\n\t"
        :
        : [cpu] "r"(cpu), [cpu_id] "m"(rs->cpu_id), [rseq_cs] "m"(rs->rseq_cs), [lock] "m"(*lock)
        : "memory", "cc", "rax"
        : fail, abort);
    return 1;
fail:
    return 0;
abort:
    return -1;
}
#define NSP_RSEQ_LOCKS 1
#endif

static inline int nsp__cache_cas_lock(struct nsp_cache *c)
{
    uint32_t zero = 0;
    return atomic_compare_exchange_strong_explicit(&c->lock, &zero, 2, memory_order_acquire,
                                                   memory_order_relaxed);
}

static inline void nsp__cache_unlock(struct nsp_cache *c)
{
    atomic_store_explicit(&c->lock, 0, memory_order_release);
}

/* The cache the thread last took by rseq (its cpu's), or NULL: lets the fast path skip the
 * cpu -> cache table while the thread stays on one cpu. */
extern __thread struct nsp_cache *nsp__tc;
extern int nsp__virtual; /* copy of nsp__topo->virtual_cores, one load away */

/* The calling thread's cache, locked, or NULL if it cannot be taken at once (held by another
 * thread, or the thread runs on a cpu with no cache of its own). The slow part recomputes the
 * cache from the cpu and retries a sequence aborted by preemption or migration. */
struct nsp_cache *nsp__cache_acquire_slow(void);

static inline __attribute__((always_inline)) struct nsp_cache *nsp__cache_acquire(void)
{
    if (nsp__virtual) {
        if (__builtin_expect(nsp__vcore.topo == nsp__topo, 1)) {
            struct nsp_cache *c = &nsp__caches[nsp__vcore.cache];
            return nsp__cache_cas_lock(c) ? c : NULL;
        }
        return nsp__cache_acquire_slow();
    }
#ifdef NSP_RSEQ_LOCKS
    struct nsp_cache *c = nsp__tc;
    if (__builtin_expect(c != NULL, 1)) {
        const struct rseq *rs =
            (const struct rseq *)((const char *)__builtin_thread_pointer() + __rseq_offset);
        int cpu = (int)__atomic_load_n(&rs->cpu_id, __ATOMIC_RELAXED);
        if (__builtin_expect(cpu == c->rseq_cpu, 1) && nsp__rseq_trylock(&c->lock, cpu) > 0)
            return c;
    }
#endif
    return nsp__cache_acquire_slow();
}

/* The index of the cache the thread took last, or UINT32_MAX when it has none: a hint that lets
 * a free of an object whose span another cache holds skip taking the thread's own cache. */
static inline uint32_t nsp__cache_hint(void)
{
    if (nsp__virtual)
        return nsp__vcore.topo == nsp__topo ? nsp__vcore.cache : UINT32_MAX;
    return nsp__tc ? nsp__tc->index : UINT32_MAX;
}

/* The cache the calling thread maps to now, without taking it (a hint: the thread may move). */
static inline unsigned nsp__cache_index_now(void)
{
    return nsp__topo_current_cache(nsp__topo);
}

/* Takes cache c from any thread (pacer, fork, tests): 1 if taken, 0 if busy. */
int nsp__cache_lock_foreign(struct nsp_cache *c);
/* Test hooks of the foreign take (tests only; 0 and NULL otherwise). nsp__test_fence_fail: the
 * next fence fails as if membarrier had refused (1; its fallback still runs) or fails outright
 * (2). nsp__test_foreign_window: called between a foreign taker's CAS and its fence, where an
 * rseq taker may commit. */
extern _Atomic int nsp__test_fence_fail;
extern void (*_Atomic nsp__test_foreign_window)(struct nsp_cache *c);
/* Takes every cache, waiting for each (fork's prepare handler); and gives them back. */
void nsp__cache_lock_all(void);
void nsp__cache_unlock_all(void);

/* ---- slow paths (lock held) ------------------------------------------------------------------- */

/* An object of class cls when the cached span has none past its cursor: sweep in place and
 * rewind, or release the span and refill from the central. NULL if no node has memory. */
void *nsp__cache_alloc_slow(struct nsp_cache *c, unsigned cls);
/* Gives span of class cls back to its central. */
void nsp__cache_release(struct nsp_cache *c, unsigned cls);
/* Gives every span back (pacer's idle release, malloc_trim). */
void nsp__cache_release_all(struct nsp_cache *c);
/* ---- lock-free reading (any thread, the cache's lock not taken) ------------------------------ */

/* What a cache holds, for the pacer and stats, read without taking the cache: */
struct nsp_cache_reading {
    int64_t unspent;   /* its unspent reservation: over its cached spans, charge minus the bytes
                        * of objects live in them (allocated slots less remote frees not yet
                        * swept). over: the capacity charged but not allocated (>= 0); under:
                        * minus what was allocated since the refill; exact: 0 */
    int64_t pending;   /* its negative heapLive changes not yet applied, all nodes */
    int64_t unflushed; /* bytes allocated from its spans, not yet in the ledger's totals */
    int64_t held;      /* bytes of the spans it holds */
};
/* Adds cache c's reading to *r. The owner's counters are read racily with relaxed loads (the
 * owner writes them with plain stores under its lock, on the fast path, which must not pay for
 * this): each value is one the owner stored at some recent instant, so a reading is exact for a
 * cache at rest and off by the operations in flight otherwise. Spans are published by the cache
 * at refill and release (spans[k], their state CACHED by this cache); a span seen mid-release
 * counts 0 (an uncached span's charge is its allocated bytes). */
void nsp__cache_read(const struct nsp_cache *c, struct nsp_cache_reading *r);
/* Gives every span back, applies the pending ledger changes and records sweepgen sg: what a
 * cycle does to each cache, and a busy cache does to itself at its next allocation. */
void nsp__cache_flush(struct nsp_cache *c, uint32_t sg);

#endif /* NSP_HOST_CACHE_H */
