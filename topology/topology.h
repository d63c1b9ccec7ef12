/*
 * topology/topology.h — the machine as the allocator sees it (internal).
 *
 * Owns: the flat tables built once, at load, from a topology hwloc read (hwloc itself is loaded
 * for the load only and closed before it returns: hwloc_lib.h):
 *   cpu_to_cache[os cpu]   -> cache index           (size cpu_table_len; holes map by fallback)
 *   cache_cpus[cache]      -> the cache's OS cpus, as a cpu_set_t's bits (binding)
 *   pu_present             -> which OS cpu numbers are PUs of the topology
 *   cache_node[cache]      -> home node index
 *   node_*[node]           -> OS index, memory, caches, PUs
 *   dist[a * nnodes + b]   -> distance (10 = local), hwloc's matrix or the hop model
 *   by_dist[node * nnodes] -> nodes ordered by distance from node (spill order)
 *
 * Invariants: after nsp_topo_load returns, every table is immutable (readable without locks from
 * any thread); every entry of cpu_to_cache and cache_node is in range; every cache has exactly one
 * home node; a PU with several local nodes ([numa] [numa] packages) has as home the first of them
 * in hwloc logical order, and reaches the others by spill, nearest first.
 *
 * Nothing here knows the allocator: the layers above use these tables, never hwloc (no hwloc type
 * appears in this header). hwloc calls malloc ~550 times while loading, and dlopen allocates too,
 * so callers of nsp_topo_load must not hold an allocator lock.
 */
#ifndef NSP_TOPOLOGY_H
#define NSP_TOPOLOGY_H

#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "numaspan.h"

#if defined(__has_include)
#if __has_include(<sys/rseq.h>)
#include <sys/rseq.h>
#define NSP_HAVE_RSEQ 1
#endif
#endif

struct nsp_topo {
    char *spec;                 /* as given, "real" for the machine */
    nsp_grouping_t grouping;
    int thissystem;             /* binding is real */
    int virtual_cores;          /* threads get virtual cores instead of their cpu's cache */

    unsigned nnodes;
    unsigned ncaches;
    unsigned npus;

    unsigned cpu_table_len;     /* max OS cpu index + 1 */
    uint32_t *cpu_to_cache;     /* [cpu_table_len]; an OS index that names no PU: cpu % ncaches */
    uint32_t *cache_node;       /* [ncaches] */
    unsigned cpu_words;         /* unsigned longs per cpu mask: covers cpu_table_len bits */
    unsigned long *cache_cpus;  /* [ncaches * cpu_words] each cache's OS cpus (cpu_set_t bits) */
    unsigned long *pu_present;  /* [cpu_words] OS cpu numbers that are PUs of the topology */

    unsigned *node_os;          /* [nnodes] */
    uint64_t *node_mem;         /* [nnodes] */
    unsigned *node_ncaches;     /* [nnodes] */
    unsigned **node_caches;     /* [nnodes][node_ncaches[n]] */
    unsigned *node_npus;        /* [nnodes] */
    unsigned **node_pus;        /* [nnodes][node_npus[n]], OS cpu numbers */

    nsp_distance_source_t dist_source;
    unsigned *dist;             /* [nnodes * nnodes] */
    unsigned *by_dist;          /* [nnodes * nnodes] */

    _Atomic uint64_t bindings_recorded;
    struct nsp__vcore_table *vtab; /* live threads per virtual core (bind.c); NULL on this system */
};

/*
 * The calling thread's cache, inline for the allocator's fast path.
 *
 * On this system: the cpu number the kernel keeps in the thread's rseq area (glibc 2.35+
 * registers it and exports its offset), read with one plain load, then the table. That is
 * sched_getcpu() without the call; where glibc did not register rseq (GLIBC_TUNABLES
 * glibc.pthread.rseq=0, old kernels) sched_getcpu() is the fallback. Holes in cpu_to_cache were
 * filled at load, so one bounds check covers every cpu number.
 * Elsewhere: the thread's virtual core (bind.c), drawn least-loaded once per topology, counted in
 * the topology's table and given back at thread exit.
 */
struct nsp__vcore_table;
struct nsp__vcore_tls {
    const struct nsp_topo *topo;         /* the topology asked last */
    const struct nsp__vcore_table *tab;  /* its table: compared only, tells a reused address */
    unsigned cache;
};
extern __thread struct nsp__vcore_tls nsp__vcore;
unsigned nsp__vcore_slow(const struct nsp_topo *topo);
/* The live-thread table of a virtual topology (bind.c): created by nsp_topo_load with one
 * reference, dropped by nsp_topo_destroy; threads holding a virtual core hold one more each. */
struct nsp__vcore_table *nsp__vcore_table_new(unsigned ncaches);
void nsp__vcore_table_put(struct nsp__vcore_table *tab);
/* Whether text is word (whole) or starts with it (!whole), in any case. ASCII only: a locale's
 * case rules (Turkish dotless i) must not change what a spec or an option means. The one
 * keyword match of the tree: topology.c's specs and groupings, host/options.c's values. */
int nsp__keyword_match(const char *text, const char *word, int whole);
/* Writes a formatted error message into err (nothing when err is NULL or errlen 0): the one way
 * topology.c and hwloc_lib.c name the input and the problem. Inline here, not in topology.c,
 * so that hwloc_lib.c (the layer below it) calls nothing above itself. */
static inline __attribute__((format(printf, 3, 4))) void nsp__topo_err(char *err, size_t errlen,
                                                                       const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static inline int nsp__cpu_now(void)
{
#if defined(__x86_64__) && defined(NSP_HAVE_RSEQ)
    if (__builtin_expect(__rseq_size > 0, 1)) {
        const struct rseq *rs =
            (const struct rseq *)((const char *)__builtin_thread_pointer() + __rseq_offset);
        int cpu = (int)__atomic_load_n(&rs->cpu_id, __ATOMIC_RELAXED);
        if (__builtin_expect(cpu >= 0, 1))
            return cpu;
    }
#endif
    int cpu = sched_getcpu();
    return cpu < 0 ? 0 : cpu;
}

static inline unsigned nsp__topo_current_cache(const struct nsp_topo *t)
{
    if (t->virtual_cores) {
        if (__builtin_expect(nsp__vcore.topo == t && nsp__vcore.tab == t->vtab &&
                                 nsp__vcore.cache < t->ncaches, 1))
            return nsp__vcore.cache;
        return nsp__vcore_slow(t);
    }
    unsigned cpu = (unsigned)nsp__cpu_now();
    return cpu < t->cpu_table_len ? t->cpu_to_cache[cpu] : cpu % t->ncaches;
}

/* Whether OS cpu number cpu is a PU of the topology (not a hole of sparse numbering). */
static inline int nsp__topo_cpu_is_pu(const struct nsp_topo *t, unsigned cpu)
{
    const unsigned bits = 8 * sizeof(unsigned long);
    return cpu < t->cpu_table_len && (t->pu_present[cpu / bits] >> (cpu % bits)) & 1;
}

/* Writes s as a JSON string literal (topology/report.c). */
void nsp__json_str(FILE *out, const char *s);

#endif /* NSP_TOPOLOGY_H */
