/*
 * topology/bind.c — which cache a thread uses, and binding of memory and threads.
 *
 * Owns: the per-thread virtual core (the least-loaded cache on first use, or the cache the thread
 * asked for), the live-thread count of every virtual core, the current-cache lookup, and the
 * binding calls.
 *
 * Invariants:
 *   - nsp_topo_current_cache() always returns an index < ncaches;
 *   - on this system the cache comes from sched_getcpu() (about 2 ns with glibc's rseq area) and
 *     the table; elsewhere from the thread's virtual core;
 *   - a virtual topology's table (struct nsp__vcore_table) counts, per cache, the live threads
 *     holding it as their virtual core: a thread adds 1 when it draws or binds, and takes it back
 *     when it exits (a pthread key destructor), binds elsewhere, or lets go of the topology;
 *   - after fork the child's tables count only the forking thread (the others do not exist there):
 *     every table is on one list, and the atfork child handler recounts them from its slots;
 *   - a thread holds at most NSP_VCORE_SLOTS topologies' virtual cores at once (one slot each,
 *     oldest let go first), and each slot holds a reference on its table, so a table outlives
 *     nsp_topo_destroy until the last thread holding it lets go;
 *   - binding is applied only when the topology is this system (sched_setaffinity with the cache's
 *     cpus, the mask copied from hwloc at load). hwloc's binding hooks on a
 *     synthetic or XML topology succeed and do nothing, so they are never asked: the request is
 *     counted as recorded and the caller told (return 1).
 * mbind goes through the raw system call: libnuma and hwloc's area binding allocate, and the
 * allocator binds arenas from inside its page heap.
 *
 * Thread exit (PLATFORM.md): the destructor runs once per round in which the key is set, and other
 * keys' destructors may malloc after it. So after it has run the thread is "exiting": it keeps
 * answering its last cache, and a thread that has no virtual core yet gets the least-loaded one
 * without being counted or setting the key again (nothing would give it back). The main thread
 * never runs destructors: it holds its virtual core until the process ends, which is right, since
 * it is live until then.
 */
#include "topology.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NSP_MPOL_PREFERRED 1
#define NSP_VCORE_SLOTS 4

/* Live threads per virtual core of one topology. refs: the topology's own (dropped by
 * nsp_topo_destroy) plus one per thread slot holding it. cursor: where the next search for the
 * least-loaded core starts, so that ties go round robin. */
struct nsp__vcore_table {
    struct nsp__vcore_table *next, *prev; /* all tables, under vcore_tables_mu (for fork) */
    _Atomic unsigned refs;
    unsigned n;
    _Atomic unsigned cursor;
    _Atomic uint32_t live[];
};

struct vcore_slot {
    struct nsp__vcore_table *tab; /* NULL: free */
    unsigned cache;
};

__thread struct nsp__vcore_tls nsp__vcore;
static __thread struct vcore_slot vcore_slots[NSP_VCORE_SLOTS];
static __thread int vcore_exiting;  /* the destructor has run: nothing more is counted */
static __thread int vcore_key_set;  /* the destructor is armed for this thread */

/* Every table, so that fork's child can recount them. Never held across a malloc or free, so that
 * taking it in fork's prepare cannot wait on an allocator lock. */
static pthread_mutex_t vcore_tables_mu = PTHREAD_MUTEX_INITIALIZER;
static struct nsp__vcore_table vcore_tables = {.next = &vcore_tables, .prev = &vcore_tables};
static pthread_once_t vcore_fork_once = PTHREAD_ONCE_INIT;

static pthread_key_t vcore_key;
static int vcore_key_ok;
static pthread_once_t vcore_key_once = PTHREAD_ONCE_INIT;

static void vcore_fork_prepare(void) { pthread_mutex_lock(&vcore_tables_mu); }
static void vcore_fork_parent(void) { pthread_mutex_unlock(&vcore_tables_mu); }

/* The child has one thread: a table's live threads are the slots of this one. The other threads'
 * references are not dropped (a table of a topology destroyed in the child stays allocated: a
 * few bytes, and freeing here could meet an allocator lock not yet reset). */
static void vcore_fork_child(void)
{
    for (struct nsp__vcore_table *tab = vcore_tables.next; tab != &vcore_tables; tab = tab->next)
        for (unsigned c = 0; c < tab->n; c++)
            atomic_store_explicit(&tab->live[c], 0, memory_order_relaxed);
    for (unsigned i = 0; i < NSP_VCORE_SLOTS; i++)
        if (vcore_slots[i].tab)
            atomic_fetch_add_explicit(&vcore_slots[i].tab->live[vcore_slots[i].cache], 1,
                                      memory_order_relaxed);
    pthread_mutex_unlock(&vcore_tables_mu);
}

/* pthread_atfork may allocate: registered here, from nsp_topo_load, never from the allocator's
 * paths (a topology load already allocates, before any allocator lock is taken). */
static void vcore_fork_register(void)
{
    pthread_atfork(vcore_fork_prepare, vcore_fork_parent, vcore_fork_child);
}

struct nsp__vcore_table *nsp__vcore_table_new(unsigned ncaches)
{
    pthread_once(&vcore_fork_once, vcore_fork_register);
    struct nsp__vcore_table *tab =
        calloc(1, sizeof *tab + (size_t)ncaches * sizeof tab->live[0]);
    if (!tab)
        return NULL;
    atomic_init(&tab->refs, 1);
    tab->n = ncaches;
    pthread_mutex_lock(&vcore_tables_mu);
    tab->next = vcore_tables.next;
    tab->prev = &vcore_tables;
    tab->next->prev = tab;
    vcore_tables.next = tab;
    pthread_mutex_unlock(&vcore_tables_mu);
    return tab;
}

void nsp__vcore_table_put(struct nsp__vcore_table *tab)
{
    if (!tab || atomic_fetch_sub_explicit(&tab->refs, 1, memory_order_acq_rel) != 1)
        return;
    pthread_mutex_lock(&vcore_tables_mu);
    tab->prev->next = tab->next;
    tab->next->prev = tab->prev;
    pthread_mutex_unlock(&vcore_tables_mu);
    free(tab);
}

/* The least-loaded core, counted (count = 1) or not. The count is taken by CAS from the load seen
 * at the search, so two threads starting together cannot both take the same idle core: the loser
 * searches again. While no thread exits, every pick is a global minimum, so live threads never
 * differ by more than one between cores. */
static unsigned vcore_pick(struct nsp__vcore_table *tab, int count)
{
    for (;;) {
        unsigned start = atomic_fetch_add_explicit(&tab->cursor, 1, memory_order_relaxed) % tab->n;
        unsigned best = start;
        uint32_t best_load = UINT32_MAX;
        for (unsigned k = 0; k < tab->n && best_load > 0; k++) {
            unsigned c = (start + k) % tab->n;
            uint32_t load = atomic_load_explicit(&tab->live[c], memory_order_relaxed);
            if (load < best_load) {
                best = c;
                best_load = load;
            }
        }
        if (!count || atomic_compare_exchange_weak_explicit(&tab->live[best], &best_load,
                                                            best_load + 1, memory_order_relaxed,
                                                            memory_order_relaxed))
            return best;
    }
}

static void slot_release(struct vcore_slot *s)
{
    if (!s->tab)
        return;
    struct nsp__vcore_table *tab = s->tab;
    atomic_fetch_sub_explicit(&tab->live[s->cache], 1, memory_order_relaxed);
    s->tab = NULL;
    nsp__vcore_table_put(tab);
}

static void vcore_thread_exit(void *unused)
{
    (void)unused;
    /* nsp__vcore is left as it is, so that a later destructor's malloc stays on this cache. It
     * is only ever compared, never followed: a table freed here (its topology destroyed) could be
     * mistaken for a new one at the same address only by this dying thread, and the answer is
     * still bounded by the check in nsp__topo_current_cache. */
    vcore_exiting = 1;
    for (unsigned i = 0; i < NSP_VCORE_SLOTS; i++)
        slot_release(&vcore_slots[i]);
}

static void vcore_key_create(void)
{
    vcore_key_ok = pthread_key_create(&vcore_key, vcore_thread_exit) == 0;
}

/* Arms the destructor. pthread_once and pthread_key_create do not allocate; pthread_setspecific
 * on a high key does (calloc): the caller has set nsp__vcore already, so that malloc finds its
 * cache at once instead of coming back here. Without a key (PTHREAD_KEYS_MAX reached) the thread
 * is counted and never given back: the spread then degrades to round robin, nothing breaks. */
static void vcore_arm_exit(void)
{
    if (vcore_key_set)
        return;
    vcore_key_set = 1;
    pthread_once(&vcore_key_once, vcore_key_create);
    if (vcore_key_ok)
        pthread_setspecific(vcore_key, (void *)1);
}

/* The thread's slot for tab, or a free one (the oldest let go when all are taken). */
static struct vcore_slot *slot_for(struct nsp__vcore_table *tab, int *found)
{
    for (unsigned i = 0; i < NSP_VCORE_SLOTS; i++)
        if (vcore_slots[i].tab == tab) {
            *found = 1;
            return &vcore_slots[i];
        }
    *found = 0;
    for (unsigned i = 0; i < NSP_VCORE_SLOTS; i++)
        if (!vcore_slots[i].tab)
            return &vcore_slots[i];
    slot_release(&vcore_slots[0]);
    memmove(&vcore_slots[0], &vcore_slots[1], sizeof vcore_slots - sizeof vcore_slots[0]);
    vcore_slots[NSP_VCORE_SLOTS - 1].tab = NULL;
    return &vcore_slots[NSP_VCORE_SLOTS - 1];
}

/* Makes cache the thread's virtual core of t: counted in a slot unless the thread is exiting
 * (cache == UINT32_MAX: the least-loaded one). */
static unsigned vcore_take(const struct nsp_topo *t, unsigned cache)
{
    struct nsp__vcore_table *tab = t->vtab;
    if (!tab || vcore_exiting) {
        if (cache == UINT32_MAX)
            cache = tab ? vcore_pick(tab, 0) : 0;
    } else {
        int found;
        struct vcore_slot *s = slot_for(tab, &found);
        if (found && (cache == UINT32_MAX || cache == s->cache)) {
            cache = s->cache;
        } else {
            if (cache == UINT32_MAX)
                cache = vcore_pick(tab, 1);
            else
                atomic_fetch_add_explicit(&tab->live[cache], 1, memory_order_relaxed);
            if (found)
                atomic_fetch_sub_explicit(&tab->live[s->cache], 1, memory_order_relaxed);
            else
                atomic_fetch_add_explicit(&tab->refs, 1, memory_order_relaxed);
            s->tab = tab;
            s->cache = cache;
        }
    }
    nsp__vcore.tab = tab;
    nsp__vcore.cache = cache;
    nsp__vcore.topo = t;
    if (tab && !vcore_exiting)
        vcore_arm_exit();
    return cache;
}

unsigned nsp__vcore_slow(const struct nsp_topo *t)
{
    return vcore_take(t, UINT32_MAX);
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
    /* The calling thread onto its cache's cpus: what hwloc_set_cpubind(HWLOC_CPUBIND_THREAD)
     * does on Linux, from the mask copied at load (hwloc is not loaded any more). */
    return sched_setaffinity(0, (size_t)t->cpu_words * sizeof(unsigned long),
                             (const cpu_set_t *)(t->cache_cpus + (size_t)cache * t->cpu_words)) < 0
               ? -1
               : 0;
}

int nsp_topo_thread_bind_core(nsp_topo_t *t, unsigned cache)
{
    if (cache >= t->ncaches) {
        errno = EINVAL;
        return -1;
    }
    int rc = nsp_topo_bind_thread(t, cache);
    if (rc >= 0 && t->virtual_cores)
        vcore_take(t, cache);
    return rc;
}

uint64_t nsp_topo_bindings_recorded(const nsp_topo_t *t)
{
    return atomic_load_explicit(&t->bindings_recorded, memory_order_relaxed);
}
