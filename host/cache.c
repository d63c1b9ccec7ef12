/*
 * host/cache.c — core caches: set-up, the foreign lock, and the slow paths (see cache.h).
 *
 * Caches are laid out on their home node (bound when the topology is this machine). Which
 * caches may use rseq is decided once: glibc registered rseq for the thread (__rseq_size > 0),
 * the kernel accepted the MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ registration (without it
 * a foreign taker could not fence), the topology is this machine, and the cache has exactly one
 * cpu. Every other cache is taken with compare-and-swap.
 */
#include "cache.h"

#include <linux/membarrier.h>
#include <sched.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "central.h"
#include "ledger.h"
#include "os.h"
#include "span.h"

struct nsp_cache *nsp__caches;
struct nsp_span nsp__empty_span;
_Atomic size_t nsp__cached_total;
int nsp__rseq_enabled;
int nsp__virtual;
__thread struct nsp_cache *nsp__tc;

static long membarrier(int cmd, unsigned flags, int cpu)
{
    return syscall(SYS_membarrier, cmd, flags, cpu);
}

static int rseq_available(void)
{
#ifdef NSP_RSEQ_LOCKS
    if (__rseq_size == 0 || nsp_topo_uses_virtual_cores(nsp__topo))
        return 0;
    return membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ, 0, 0) == 0;
#else
    return 0;
#endif
}

int nsp__cache_init(void)
{
    unsigned n = nsp__ncaches;
    size_t len = ((size_t)n * sizeof(struct nsp_cache) + 4095) & ~(size_t)4095;
    nsp__caches = nsp__os_map(len, 4096);
    if (!nsp__caches)
        return -1;
    nsp__rseq_enabled = rseq_available();
    nsp__virtual = nsp_topo_uses_virtual_cores(nsp__topo);
    const struct nsp_topo *t = nsp__topo;
    for (unsigned i = 0; i < n; i++) {
        struct nsp_cache *c = &nsp__caches[i];
        c->index = i;
        c->node = nsp_topo_node_of_cache(nsp__topo, i);
        c->rseq_cpu = -1;
        c->flush_gen = atomic_load(&nsp__sweepgen);
        for (unsigned k = 0; k < NSP_NUM_CLASSES; k++)
            c->spans[k] = &nsp__empty_span;
    }
    if (nsp__rseq_enabled) {
        /* a cache with exactly one cpu is that cpu's */
        unsigned *ncpu = (unsigned *)nsp__os_map(((size_t)n * sizeof(unsigned) + 4095) & ~4095UL, 4096);
        if (ncpu) {
            for (unsigned cpu = 0; cpu < t->cpu_table_len; cpu++)
                if (hwloc_get_pu_obj_by_os_index(t->hw, cpu))
                    ncpu[t->cpu_to_cache[cpu]]++;
            for (unsigned cpu = 0; cpu < t->cpu_table_len; cpu++)
                if (hwloc_get_pu_obj_by_os_index(t->hw, cpu) && ncpu[t->cpu_to_cache[cpu]] == 1)
                    nsp__caches[t->cpu_to_cache[cpu]].rseq_cpu = (int32_t)cpu;
            nsp__os_unmap(ncpu, ((size_t)n * sizeof(unsigned) + 4095) & ~4095UL);
        }
    }
    for (unsigned i = 0; i < n; i++)
        nsp_topo_bind_memory(nsp__topo, &nsp__caches[i], sizeof(struct nsp_cache),
                             nsp__caches[i].node);
    return 0;
}

/* ---- the thread's lock ------------------------------------------------------------------------ */

struct nsp_cache *nsp__cache_acquire_slow(void)
{
    const struct nsp_topo *t = nsp__topo;
    if (t->virtual_cores) {
        struct nsp_cache *c = &nsp__caches[nsp__topo_current_cache(t)];
        return nsp__cache_cas_lock(c) ? c : NULL;
    }
    for (int attempt = 0; attempt < 3; attempt++) {
        unsigned cpu = (unsigned)nsp__cpu_now();
        unsigned i = cpu < t->cpu_table_len ? t->cpu_to_cache[cpu] : cpu % t->ncaches;
        struct nsp_cache *c = &nsp__caches[i];
#ifdef NSP_RSEQ_LOCKS
        if (c->rseq_cpu == (int32_t)cpu) {
            nsp__tc = c;
            int r = nsp__rseq_trylock(&c->lock, (int)cpu);
            if (r > 0)
                return c;
            if (r == 0 && atomic_load_explicit(&c->lock, memory_order_relaxed))
                return NULL; /* held: the caller goes to the central */
            continue;        /* aborted or migrated: look again */
        }
#endif
        if (c->rseq_cpu < 0)
            return nsp__cache_cas_lock(c) ? c : NULL;
        return NULL; /* a cpu the table does not know, mapped onto another cpu's rseq cache */
    }
    return NULL;
}

/* ---- the foreign lock ------------------------------------------------------------------------- */

/* Foreign takers (pacer cycle, idle release, trim, stats, recount, fork) are serialised by this
 * mutex from their CAS to their re-check. Without it: taker A CASes 0 -> 2; an rseq sequence that
 * read 0 before that commits 1 over it, runs and releases (0); taker B CASes 0 -> 2; A's re-check
 * then reads B's 2 and both believe they own the cache (one cache flushed twice: central lists and
 * the ledger corrupted). With the mutex, only an rseq taker can change the word during A's window,
 * and an rseq taker never writes 2. The mutex is not held while a foreign taker owns the cache;
 * nsp__cache_lock_all holds it throughout (fork's child then finds it held by its one thread, and
 * fork_release unlocks it there). */
static pthread_mutex_t foreign_mutex = PTHREAD_MUTEX_INITIALIZER;

_Atomic int nsp__test_fence_fail;
void (*_Atomic nsp__test_foreign_window)(struct nsp_cache *c);

/* Makes every rseq sequence on cpu that read the lock word before now restart: 0 on success.
 * membarrier(PRIVATE_EXPEDITED_RSEQ) does it; if the kernel refuses (a seccomp filter, an
 * unregistered mm after some exotic clone, EINVAL for an offlined cpu), running this thread on
 * that cpu does the same, since a thread switched out of the cpu mid-sequence restarts it. */
static int fence_cpu(int cpu)
{
    int fail = atomic_exchange_explicit(&nsp__test_fence_fail, 0, memory_order_relaxed);
    if (!fail &&
        membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, MEMBARRIER_CMD_FLAG_CPU, cpu) == 0)
        return 0;
    cpu_set_t old, one;
    if (fail > 1 || sched_getaffinity(0, sizeof old, &old) != 0)
        return -1;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    int ok = sched_setaffinity(0, sizeof one, &one) == 0 && sched_getcpu() == cpu;
    (void)sched_setaffinity(0, sizeof old, &old);
    return ok ? 0 : -1;
}

/* The take itself, foreign_mutex held. */
static int take_foreign(struct nsp_cache *c)
{
    if (!nsp__cache_cas_lock(c))
        return 0;
    if (c->rseq_cpu < 0)
        return 1;
    void (*window)(struct nsp_cache *) = atomic_load_explicit(&nsp__test_foreign_window,
                                                              memory_order_relaxed);
    if (window)
        window(c);
    /* Restart any rseq taker on that cpu that read 0 before our CAS; one that committed 1 in
     * between overwrote our 2, and then the cache is its. */
    if (fence_cpu(c->rseq_cpu) != 0) {
        /* Unfenced, a sequence that read 0 may still commit: we cannot own the cache. Give the
         * word back only if it is still ours (an rseq taker that overwrote it owns it now). */
        uint32_t two = 2;
        atomic_compare_exchange_strong(&c->lock, &two, 0);
        return 0;
    }
    return atomic_load(&c->lock) == 2;
}

int nsp__cache_lock_foreign(struct nsp_cache *c)
{
    if (c->rseq_cpu < 0) /* CAS takers only: the CAS alone decides */
        return nsp__cache_cas_lock(c);
    /* A try-lock, as the cache's own is: a foreign taker never blocks (one that runs inside an
     * allocation could otherwise wait on nsp__cache_lock_all, which waits on its cache). */
    if (pthread_mutex_trylock(&foreign_mutex) != 0)
        return 0;
    int r = take_foreign(c);
    pthread_mutex_unlock(&foreign_mutex);
    return r;
}

void nsp__cache_lock_all(void)
{
    pthread_mutex_lock(&foreign_mutex);
    for (unsigned i = 0; i < nsp__ncaches; i++)
        while (!take_foreign(&nsp__caches[i]))
            sched_yield();
}

void nsp__cache_unlock_all(void)
{
    for (unsigned i = 0; i < nsp__ncaches; i++)
        nsp__cache_unlock(&nsp__caches[i]);
    pthread_mutex_unlock(&foreign_mutex);
}

/* ---- slow paths ------------------------------------------------------------------------------- */

static size_t span_bytes(unsigned cls)
{
    return (size_t)nsp__classes[cls].npages << NSP_PAGE_SHIFT;
}

void nsp__cache_release(struct nsp_cache *c, unsigned cls)
{
    struct nsp_span *s = c->spans[cls];
    if (s == &nsp__empty_span)
        return;
    c->spans[cls] = &nsp__empty_span;
    c->held_bytes -= span_bytes(cls);
    atomic_fetch_sub_explicit(&nsp__cached_total, span_bytes(cls), memory_order_relaxed);
    c->releases++;
    uint32_t mallocs = s->nmalloc;
    nsp__ledger_release(s, c->pending);
    nsp__central_uncache_span(s, mallocs);
}

void nsp__cache_release_all(struct nsp_cache *c)
{
    for (unsigned k = 1; k < NSP_NUM_CLASSES; k++)
        nsp__cache_release(c, k);
}

void nsp__cache_flush(struct nsp_cache *c, uint32_t sg)
{
    nsp__cache_release_all(c);
    nsp__ledger_flush(c->pending);
    c->flush_gen = sg;
}

/* Keeps the cache under its cap before it takes `need` more bytes: releases the largest spans
 * of other classes first (they cost the most to hold and least often pay back). */
static void make_room(struct nsp_cache *c, unsigned cls, size_t need)
{
    while (c->held_bytes + need > nsp__cache_max) {
        unsigned victim = 0;
        for (unsigned k = 1; k < NSP_NUM_CLASSES; k++)
            if (k != cls && c->spans[k] != &nsp__empty_span &&
                (!victim || span_bytes(k) >= span_bytes(victim)))
                victim = k;
        if (!victim)
            return;
        c->cap_releases++;
        nsp__cache_release(c, victim);
    }
}

/* In-place sweep by the owning cache. */
static void sweep_in_place(struct nsp_cache *c, struct nsp_span *s)
{
    uint32_t doubles;
    uintptr_t first;
    uint32_t applied = nsp__span_sweep(s, &doubles, &first);
    c->swept_objects += applied;
    c->sweeps++;
    nsp__ledger_count(s, -(int64_t)applied); /* a cached span's charge waits for its release */
    if (doubles) {
        nsp__ledger_sweep_doubles(s, doubles, c->pending);
        atomic_fetch_add(&nsp__errors[NSP_ERR_DOUBLE_FREE], doubles - 1);
        nsp__report_error(NSP_ERR_DOUBLE_FREE, "free", (void *)first);
    }
}

/* An object from the cached span s, counted as the fast path counts it. */
static void *counted(struct nsp_cache *c, struct nsp_span *s, void *p)
{
    (void)c;
    if (p) {
        s->nmalloc++;
        nsp__ledger_exact_objects(s, 1, c->pending);
    }
    return p;
}

void *nsp__cache_alloc_slow(struct nsp_cache *c, unsigned cls)
{
    uint32_t sg = atomic_load_explicit(&nsp__sweepgen, memory_order_relaxed);
    if (c->flush_gen != sg) /* a cycle passed: stale spans go back before we allocate again */
        nsp__cache_flush(c, sg);
    struct nsp_span *s = c->spans[cls];
    void *p;
    if (s != &nsp__empty_span) {
        if ((p = nsp__span_alloc_fast(s)) || (p = nsp__span_next_free(s)))
            return counted(c, s, p);
        /* Nothing past the cursor. Remote frees and local frees behind it may have left room:
         * sweep, rewind, and only release the span when it is really full. */
        if (atomic_load_explicit(&s->dirty, memory_order_relaxed))
            sweep_in_place(c, s);
        if (s->alloc_count < s->nelems) {
            nsp__span_rewind(s);
            if ((p = nsp__span_next_free(s)))
                return counted(c, s, p);
        }
        nsp__cache_release(c, cls);
    }
    size_t bytes = span_bytes(cls);
    size_t cached = atomic_load_explicit(&nsp__cached_total, memory_order_relaxed) + bytes;
    /* all caches together are at their cap, or at the pacer's reservation budget (a span
     * cached in `over` is charged whole): the central serves the object, charged as it is */
    if (cached > nsp__cache_total_max ||
        (int64_t)cached > atomic_load_explicit(&nsp__reserve_budget, memory_order_relaxed))
        return nsp__central_alloc(c->node, cls);
    make_room(c, cls, bytes);
    s = nsp__central_cache_span(c->node, cls, c->index);
    if (!s)
        return NULL;
    c->spans[cls] = s;
    c->held_bytes += bytes;
    atomic_fetch_add_explicit(&nsp__cached_total, bytes, memory_order_relaxed);
    c->refills++;
    nsp__ledger_flush(c->pending); /* negative changes are applied at the next refill */
    nsp__ledger_refill(s, c->pending);
    return counted(c, s, nsp__span_next_free(s));
}

/* ---- lock-free reading ----------------------------------------------------------------------- */

/* The owner's plain fields, read as the owner may be writing them (cache.h says why that is
 * enough). Not instrumented by ThreadSanitizer: these races are the design, not a bug. */
#define RACY(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

__attribute__((no_sanitize("thread"))) static int64_t span_unspent(const struct nsp_span *s)
{
    int64_t live = (int64_t)RACY(s->alloc_count);
    if (atomic_load_explicit(&s->dirty, memory_order_relaxed)) {
        uint32_t nw = (RACY(s->nelems) + 63) / 64;
        for (uint32_t w = 0; w < nw; w++)
            live -= __builtin_popcountll(
                atomic_load_explicit(&s->freed_bits[w], memory_order_relaxed));
    }
    return atomic_load_explicit(&s->charge, memory_order_relaxed) -
           live * (int64_t)RACY(s->elemsize);
}

__attribute__((no_sanitize("thread"))) void nsp__cache_read(const struct nsp_cache *c,
                                                            struct nsp_cache_reading *r)
{
    for (unsigned n = 0; n < nsp__nnodes; n++)
        r->pending += RACY(c->pending[n]);
    size_t held = RACY(c->held_bytes);
    r->held += (int64_t)held;
    if (!held)
        return;
    for (unsigned k = 1; k < NSP_NUM_CLASSES; k++) {
        struct nsp_span *s = RACY(c->spans[k]);
        if (s == &nsp__empty_span ||
            atomic_load_explicit(&s->state, memory_order_acquire) != NSP_SPAN_CACHED ||
            RACY(s->cache) != c->index)
            continue;
        r->unspent += span_unspent(s);
        r->unflushed += (int64_t)RACY(s->nmalloc) * (int64_t)RACY(s->elemsize);
    }
}
