/*
 * topology/bind.c — which cache a thread uses, and binding of memory and threads.
 *
 * Owns: the per-thread virtual core (a ticket drawn round robin on first use, or the cache the
 * thread asked for), the current-cache lookup, and the binding calls.
 *
 * Invariants:
 *   - nsp_topo_current_cache() always returns an index < ncaches;
 *   - on this system the cache comes from sched_getcpu() (about 2 ns with glibc's rseq area) and
 *     the table; elsewhere from the thread's virtual core;
 *   - binding is applied only when the topology is this system. hwloc's binding hooks on a
 *     synthetic or XML topology succeed and do nothing, so they are never asked: the request is
 *     counted as recorded and the caller told (return 1).
 * mbind goes through the raw system call: libnuma and hwloc's area binding allocate, and the
 * allocator binds arenas from inside its page heap.
 */
#include "topology.h"

#include <errno.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NSP_MPOL_PREFERRED 1

/* The thread's virtual core: its ticket (-1 until drawn or bound), and the cache it reduces to in
 * the last topology asked (topology.h). */
static __thread int vcore_ticket = -1;
__thread struct nsp__vcore_tls nsp__vcore;
static _Atomic unsigned vcore_next;

unsigned nsp__vcore_slow(const struct nsp_topo *t)
{
    if (vcore_ticket < 0)
        vcore_ticket =
            (int)(atomic_fetch_add_explicit(&vcore_next, 1, memory_order_relaxed) & INT32_MAX);
    nsp__vcore.cache = (unsigned)vcore_ticket % t->ncaches;
    nsp__vcore.topo = t;
    return nsp__vcore.cache;
}

unsigned nsp_topo_current_cache(const nsp_topo_t *t)
{
    return nsp__topo_current_cache(t);
}

int nsp_topo_bind_memory(nsp_topo_t *t, void *addr, size_t len, unsigned node)
{
    if (node >= t->nnodes || !addr || len == 0) {
        errno = EINVAL;
        return -1;
    }
    if (!t->thissystem) {
        atomic_fetch_add_explicit(&t->bindings_recorded, 1, memory_order_relaxed);
        return 1;
    }
    /* Preferred, not strict: when the node's memory runs out the kernel places the page elsewhere
     * instead of killing the process. The allocator keeps its own per-node page limits (spill);
     * this only tells the kernel where a page should be. */
    unsigned long mask[16];
    unsigned os = t->node_os[node];
    if (os >= sizeof mask * 8) {
        errno = EINVAL;
        return -1;
    }
    memset(mask, 0, sizeof mask);
    mask[os / (8 * sizeof(unsigned long))] |= 1UL << (os % (8 * sizeof(unsigned long)));
    if (syscall(SYS_mbind, addr, len, NSP_MPOL_PREFERRED, mask, (unsigned long)os + 2, 0UL) < 0)
        return -1;
    return 0;
}

int nsp_topo_bind_thread(nsp_topo_t *t, unsigned cache)
{
    if (cache >= t->ncaches) {
        errno = EINVAL;
        return -1;
    }
    if (!t->thissystem) {
        atomic_fetch_add_explicit(&t->bindings_recorded, 1, memory_order_relaxed);
        return 1;
    }
    return hwloc_set_cpubind(t->hw, t->cache_obj[cache]->cpuset, HWLOC_CPUBIND_THREAD) < 0 ? -1
                                                                                             : 0;
}

int nsp_topo_thread_bind_core(nsp_topo_t *t, unsigned cache)
{
    if (cache >= t->ncaches) {
        errno = EINVAL;
        return -1;
    }
    int rc = nsp_topo_bind_thread(t, cache);
    if (rc >= 0) {
        vcore_ticket = (int)cache;
        nsp__vcore.topo = t;
        nsp__vcore.cache = cache;
    }
    return rc;
}

uint64_t nsp_topo_bindings_recorded(const nsp_topo_t *t)
{
    return atomic_load_explicit(&t->bindings_recorded, memory_order_relaxed);
}
