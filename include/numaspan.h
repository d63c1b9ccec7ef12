/*
 * numaspan.h — the public host API of numaspan.
 *
 * This header owns the names an application sees: the topology handle (what machine the
 * allocator believes it runs on, real or synthetic), the options table (every NSP_* environment
 * variable), and, as later layers land, the allocation entry points. Everything here is safe to
 * call from any thread once the library is loaded. The topology and option calls take no
 * allocator lock. The allocation entry points, nsp_trim (malloc_trim) and nsp_pacer_cycle wait
 * for a thread that holds a central's or a page heap's lock while it runs or is runnable, as for
 * any mutex, but not for one that does not run (asleep in a signal handler, under a debugger):
 * after 2 ms for such a hold (once per hold, not per call) they go elsewhere (a span released
 * meanwhile, a new span, a fresh arena), leave work pending for the holder, or skip what is held
 * (README, "threads stopped mid-operation"). Only when the OS refuses that fresh arena does an
 * allocation wait for the page heap's holder. The stats and mallinfo2 read counters and take
 * no lock; the ledger recount, nsp_heap_check and fork take every lock and do wait.
 *
 * Index spaces, so that nobody mixes them up:
 *   - "cpu"   an OS cpu number, as sched_getcpu() returns and the kernel numbers CPUs (hwloc's
 *             os_index of a PU). May be sparse and interleaved (pu:2(indexes=numa:core)).
 *   - "cache" a dense index 0..ncaches-1 of the allocator's core caches, in hwloc logical order
 *             of the grouping objects (PU by default; core, L2 or L3 on request).
 *   - "node"  a dense index 0..nnodes-1 of NUMA nodes, in hwloc logical order. The OS number of
 *             a node (what mbind wants) is in nsp_node_info_t.os_index.
 */
#ifndef NUMASPAN_H
#define NUMASPAN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define NSP_API __attribute__((visibility("default")))
#else
#define NSP_API
#endif

#define NUMASPAN_VERSION_MAJOR 0
#define NUMASPAN_VERSION_MINOR 1
#define NUMASPAN_VERSION_PATCH 0
#define NUMASPAN_VERSION_STRING "0.1.0"

NSP_API const char *nsp_version(void);

/* ---------------------------------------------------------------------------------------------
 * Topology
 * ------------------------------------------------------------------------------------------- */

typedef struct nsp_topo nsp_topo_t;

/* What one core cache stands for. */
typedef enum nsp_grouping {
    NSP_GROUP_PU = 0, /* one cache per hardware thread (default) */
    NSP_GROUP_CORE,   /* one per core: its hardware threads share it */
    NSP_GROUP_L2,     /* one per L2 cache */
    NSP_GROUP_L3      /* one per L3 cache */
} nsp_grouping_t;

/* Where the node distance matrix came from. */
typedef enum nsp_distance_source {
    NSP_DIST_HWLOC = 0, /* the topology's own NUMA latency matrix (ACPI SLIT, or an XML file) */
    NSP_DIST_HOPS       /* none in the topology: numaspan's hop model over the hwloc tree */
} nsp_distance_source_t;

/*
 * Loads a topology. spec:
 *   NULL, "" or "real"       the machine this process runs on;
 *   "synthetic:<string>"     an hwloc synthetic description, e.g. "pack:2 numa:2 core:4 pu:1";
 *   "xml:<path>"             an hwloc XML export.
 * On failure returns NULL and writes into err (if errlen > 0) a message that names the input and
 * the problem. A malformed spec never falls back to the real machine.
 */
NSP_API nsp_topo_t *nsp_topo_load(const char *spec, nsp_grouping_t grouping, char *err,
                                  size_t errlen);
NSP_API void nsp_topo_destroy(nsp_topo_t *topo);

/* Parses "pu", "core", "l2", "l3". Returns 0, or -1 if the name is none of them. */
NSP_API int nsp_grouping_parse(const char *name, nsp_grouping_t *out);
NSP_API const char *nsp_grouping_name(nsp_grouping_t grouping);

NSP_API const char *nsp_topo_spec(const nsp_topo_t *topo);
NSP_API nsp_grouping_t nsp_topo_grouping(const nsp_topo_t *topo);
NSP_API unsigned nsp_topo_num_nodes(const nsp_topo_t *topo);
NSP_API unsigned nsp_topo_num_caches(const nsp_topo_t *topo);
NSP_API unsigned nsp_topo_num_pus(const nsp_topo_t *topo);
/* 1 when the topology describes this machine (binding is real), 0 otherwise. */
NSP_API int nsp_topo_is_thissystem(const nsp_topo_t *topo);
/* 1 when threads get virtual cores (least loaded or nsp_thread_bind_core) rather than their cpu. */
NSP_API int nsp_topo_uses_virtual_cores(const nsp_topo_t *topo);

typedef struct nsp_node_info {
    unsigned os_index;       /* the OS's number of this node (mbind, /sys) */
    uint64_t memory_bytes;   /* local memory of the node */
    unsigned ncaches;        /* core caches whose home is this node */
    const unsigned *caches;  /* their indexes, ascending; owned by the topology */
    unsigned npus;           /* PUs whose home is this node */
    const unsigned *pus_os;  /* their OS cpu numbers, ascending; owned by the topology */
} nsp_node_info_t;

/* Returns 0, or -1 with errno = EINVAL if node is out of range. */
NSP_API int nsp_topo_node_info(const nsp_topo_t *topo, unsigned node, nsp_node_info_t *out);

NSP_API nsp_distance_source_t nsp_topo_distance_source(const nsp_topo_t *topo);
/* Distance from node a to node b (10 = local, as ACPI SLIT). Out of range: UINT32_MAX. */
NSP_API unsigned nsp_topo_distance(const nsp_topo_t *topo, unsigned a, unsigned b);
/* The nodes ordered by distance from node (itself first, ties by index): nnodes entries owned
 * by the topology; the spill order. NULL if node is out of range. */
NSP_API const unsigned *nsp_topo_nodes_by_distance(const nsp_topo_t *topo, unsigned node);

/* The cache of an OS cpu number. A cpu the topology does not know (cgroup cpusets, CPUs brought
 * online later, or any number on a synthetic topology) maps to a valid cache, never out of range. */
NSP_API unsigned nsp_topo_cache_of_cpu(const nsp_topo_t *topo, unsigned cpu);
/* The home node of a cache. Out of range: UINT32_MAX. */
NSP_API unsigned nsp_topo_node_of_cache(const nsp_topo_t *topo, unsigned cache);
/* The cache of the calling thread: its cpu's on this system, its virtual core otherwise. */
NSP_API unsigned nsp_topo_current_cache(const nsp_topo_t *topo);

/*
 * Binding. On this system these apply the binding (mbind of memory the caller mapped, thread
 * pinning to the cache's cpus) and return 0 on success or -1 with errno. On a synthetic or XML
 * topology nothing is applied: the request is only recorded (counted) and 1 is returned, so that
 * callers can tell a placement decision from a placement.
 */
NSP_API int nsp_topo_bind_memory(nsp_topo_t *topo, void *addr, size_t len, unsigned node);
NSP_API int nsp_topo_bind_thread(nsp_topo_t *topo, unsigned cache);
/* How many bindings were recorded without being applied (synthetic/XML topologies). */
NSP_API uint64_t nsp_topo_bindings_recorded(const nsp_topo_t *topo);

/*
 * Virtual cores. A thread on a topology that uses virtual cores gets one on first use: the cache
 * with the fewest live threads (ties round robin). It gives it back when it exits, so thread churn
 * does not pile threads onto one cache; the main thread keeps its own. nsp_topo_thread_bind_core()
 * chooses one instead (on this system it also pins the thread to the cache's cpus); a bound thread
 * counts as live on its cache too. A thread holds virtual cores in at most 4 topologies at once.
 * Returns 0, 1 (recorded only, as above) or -1/EINVAL.
 */
NSP_API int nsp_topo_thread_bind_core(nsp_topo_t *topo, unsigned cache);

/* Writes the topology report (nodes, caches, memory, distances, binding) as text or JSON. */
NSP_API void nsp_topo_print(const nsp_topo_t *topo, FILE *out, int json);

/* ---------------------------------------------------------------------------------------------
 * The process topology: the one the allocator uses, loaded once from NSP_TOPOLOGY and
 * NSP_CACHE_GROUPING (the real machine by default).
 * ------------------------------------------------------------------------------------------- */

/* The process topology, loaded on first call. If NSP_TOPOLOGY is malformed the library reports it
 * on stderr and exits with status 2: an experiment must not silently run on the wrong machine.
 * NULL with errno ENOMEM if the OS refused the memory to load it; a later call loads again. */
NSP_API nsp_topo_t *nsp_topology(void);
/* Binds the calling thread to cache i of the process topology (see nsp_topo_thread_bind_core). */
NSP_API int nsp_thread_bind_core(unsigned cache);

/* ---------------------------------------------------------------------------------------------
 * Allocation. libnumaspan also exports the standard names (malloc, free, calloc, realloc,
 * posix_memalign, aligned_alloc, memalign, valloc, pvalloc, malloc_usable_size, reallocarray,
 * malloc_trim, mallinfo2), so linking it or preloading it replaces the system allocator.
 * ------------------------------------------------------------------------------------------- */

NSP_API void *nsp_malloc(size_t size);
NSP_API void nsp_free(void *ptr);
NSP_API void *nsp_calloc(size_t n, size_t size);
NSP_API void *nsp_realloc(void *ptr, size_t size);
NSP_API void *nsp_aligned_alloc(size_t alignment, size_t size);
NSP_API int nsp_posix_memalign(void **out, size_t alignment, size_t size);
NSP_API size_t nsp_malloc_usable_size(void *ptr);
/* size bytes on NUMA node `node` (an index of the process topology), or on the nearest node with
 * room when it has none (a spill, counted). NULL with errno EINVAL for a node out of range. */
NSP_API void *nsp_malloc_node(size_t size, unsigned node);
/* The node whose memory holds ptr, or -1 if numaspan does not own ptr. */
NSP_API int nsp_node_of(const void *ptr);
/* Returns memory numaspan holds but does not use to the OS: releases idle caches' spans, empty
 * spans, and free pages (madvise). Returns the bytes released. Best effort: a central or a page
 * heap whose lock is held by a thread that does not run is skipped after 2 ms, not waited for
 * (the next trim or cycle gets it); malloc_trim is this call. */
NSP_API size_t nsp_trim(void);

/* ---------------------------------------------------------------------------------------------
 * Stats. nsp_stats_get (and mallinfo2, nsp_stats_get_class_node, nsp_stats_print, NSP_STATS)
 * read counters that the allocator keeps where its state changes, and take no lock: no core
 * cache, central, page heap or ledger lock, no busy cpu interrupted, so a thread stopped holding
 * any lock never makes a reading wait. What a reading gets: each counter is read whole (never
 * torn) and is exact once no thread allocates or frees (a snapshot with the threads stopped is
 * exact); a snapshot taken while threads run may mix instants, its sums off by the operations in
 * flight (host/stats.c says which field comes from which counter). An object freed into a
 * per-cpu slab (a free on a cpu whose cache does not hold the object's span) counts as freed,
 * by a remote free, though no span has it back yet; a malloc that takes it again counts as a
 * malloc. So does an object freed onto a cached span's remote-free list (a free on another cpu),
 * from the free on, though its span counts it allocated until its owner's sweep (nsp_pacer_get's
 * live bytes, the ledger's, include it until then, as a remote free's bit not yet swept).
 * So at rest mallocs - local_frees - remote_frees = the small objects in use.
 * ------------------------------------------------------------------------------------------- */

#define NSP_STATS_MAX_NODES 64
#define NSP_STATS_MAX_CLASSES 80

typedef struct nsp_class_stats {
    uint32_t size;            /* object size of the class */
    uint64_t objects_in_use;  /* allocated and not freed (frees not yet swept included) */
    uint64_t bytes_in_use;    /* objects_in_use * size */
    uint64_t spans_cached, spans_partial, spans_full;
    uint64_t refills;         /* spans handed to caches */
    uint64_t releases;        /* spans taken back from caches */
    uint64_t mallocs;         /* objects handed out */
} nsp_class_stats_t;

typedef struct nsp_node_stats {
    uint64_t bytes_in_use, objects_in_use; /* small and large objects on this node */
    uint64_t large_objects, large_bytes;   /* of which large (page-granular) and huge objects */
    uint64_t pages_mapped, pages_free, pages_scavenged;
    uint64_t spans_cached, spans_partial, spans_full;
    uint64_t refills, releases;
    uint64_t remote_frees;    /* frees by non-owners: swept in, pending, or into a slab */
    uint64_t sweeps;
    uint64_t spills_out;      /* spans this node's cores took from other nodes */
    uint64_t spills_in;       /* spans other nodes' cores took from this node */
} nsp_node_stats_t;

typedef struct nsp_stats {
    unsigned nnodes, ncaches, nclasses;
    int rseq;                 /* 1 if core caches are taken with restartable sequences */
    uint64_t bytes_in_use, objects_in_use;
    uint64_t mallocs;         /* small objects handed out by caches (bins, slabs), centrals */
    uint64_t local_frees;     /* frees applied directly by the owning cache */
    uint64_t remote_frees;    /* frees by non-owners (into a slab, a magazine or a span) */
    uint64_t large_allocs, large_frees;
    uint64_t cached_bytes;    /* the caches' reservations: one charge window per cached span
                               * (the class's span bytes, or 64 KiB for a grown span of a class
                               * up to 1 KiB: docs/host-rounds.md, "Spans of 256 KiB") */
    uint64_t central_allocs;  /* objects handed out by centrals directly (try-lock failed) */
    uint64_t not_owned_frees, interior_frees, double_frees; /* bad frees caught */
    uint64_t list_searches;   /* frees that searched a span's remote-free list for their object
                               * (an object still tagged as listed: a double free, or a free
                               * the tag sent the slow way; host/free.c, xfree_holds) */
    uint64_t bootstrap_bytes; /* handed out before the allocator was initialised */
    uint64_t metadata_bytes;  /* metadata mapped (descriptors, bitmaps, page maps, caches,
                               * centrals, tables): an upper bound on what is resident */
    nsp_node_stats_t node[NSP_STATS_MAX_NODES];
    nsp_class_stats_t cls[NSP_STATS_MAX_CLASSES]; /* [1..nclasses-1]; 0 unused */
} nsp_stats_t;

/* Fills out. Returns 0, or -1 if the allocator is not initialised. */
NSP_API int nsp_stats_get(nsp_stats_t *out);
/* One class on one node. Returns 0, or -1 (EINVAL) if either is out of range. */
NSP_API int nsp_stats_get_class_node(unsigned node, unsigned cls, nsp_class_stats_t *out);
/* Writes the stats as text (json = 0) or JSON. */
NSP_API void nsp_stats_print(FILE *out, int json);
/* The size class table: size, span pages, objects per span. Returns 0, or -1 out of range. */
NSP_API int nsp_size_class(unsigned cls, uint32_t *size, uint32_t *span_pages, uint32_t *nelems);

/* ---------------------------------------------------------------------------------------------
 * The ledger and the pacer (DESIGN.md §5-6). heapLive[n] is the pacer's pessimistic view of the
 * bytes allocated on node n; see host/ledger.h for the rule and host/pacer.h for the model.
 * ------------------------------------------------------------------------------------------- */

/* Runs in a cycle, holding no allocator lock: it may free (and allocate) through numaspan. */
typedef void (*nsp_collector_fn)(void *arg);
/* Registers the collector (NULL: none). With a collector the pacer runs cycles at its trigger,
 * and the process gets the pacer thread if it had none (a plain process has none; README). */
NSP_API void nsp_pacer_set_collector(nsp_collector_fn fn, void *arg);
/* Forces a cycle now: collector, sweepgen += 2, caches released, uncached spans swept, live
 * measured, goal and trigger set, scavenging. Returns when it is done (or at once if another
 * cycle is running). */
NSP_API void nsp_pacer_cycle(void);
/* Run-time setters, as NSP_PACE_PERCENT and NSP_MEMORY_LIMIT at start: the goal and trigger are
 * recomputed at once from the last live heap. percent: 1..100000, or NSP_PACE_OFF for pacing by
 * the memory limit alone (Go's GOGC=off); bytes: 0 (no limit) or at least 4 MiB. Return 0, or
 * -1 with errno EINVAL for a value out of range. */
#define NSP_PACE_OFF 0.0
NSP_API int nsp_pacer_set_percent(double percent);
NSP_API int nsp_pacer_set_memory_limit(int64_t bytes);
/* Releases everything it can, now: a forced cycle, then every cache's spans, the empty spans and
 * every free page handed back to the OS (nsp_trim; Go's debug.FreeOSMemory). Returns the bytes
 * handed back. */
NSP_API size_t nsp_pacer_release_all(void);

typedef struct nsp_pacer_info {
    unsigned nnodes;
    int accounting;          /* 0 over, 1 under, 2 exact */
    int concurrent;          /* cycle mode */
    int paced;               /* cycles run at the trigger (a limit or a collector) */
    int64_t heap_live[NSP_STATS_MAX_NODES];  /* the ledger's heapLive per node */
    int64_t pending[NSP_STATS_MAX_NODES];    /* negative changes batched in caches, not applied */
    uint64_t total_alloc_bytes[NSP_STATS_MAX_NODES], total_alloc_objects[NSP_STATS_MAX_NODES];
    uint64_t total_free_bytes[NSP_STATS_MAX_NODES], total_free_objects[NSP_STATS_MAX_NODES];
    int64_t node_limit_bytes[NSP_STATS_MAX_NODES];
    int64_t pages_mapped[NSP_STATS_MAX_NODES];
    int64_t heap_live_total;
    int64_t live, goal, trigger, runway, memory_limit; /* trigger -1: nothing to pace */
    uint32_t sweepgen;
    uint64_t cycles, forced_cycles, caches_released, idle_releases, busy_caches;
    uint64_t bytes_scavenged, pause_ns_total, pause_ns_max, spills;
    /* Read without taking any cache (host/cache.h, "lock-free reading"): */
    int64_t live_now;        /* the live bytes now: heapLive + pending - unspent */
    int64_t unspent;         /* the caches' unspent reservation: charged, not allocated */
    int64_t cached_bytes;    /* the caches' reservations, a charge window per cached span (C) */
    int64_t allocated_bytes; /* bytes ever allocated (monotonic) */
    int64_t reserve_budget;  /* what caches may hold in `over` while paced; -1: no bound */
    uint64_t unconfirmed;    /* trigger crossings not confirmed by the live bytes */
    uint64_t debug_checks;   /* NSP_DEBUG=1: ledger checks run at cycles (all agreed) */
    uint64_t backpressure_waits, backpressure_ns; /* allocations that waited for a cycle */
    uint64_t backpressure_helps; /* cycles run by an allocation at the goal (concurrent mode) */
    uint64_t cpu_limited;    /* crossings held back because cycles took half the time */
    int64_t outside;         /* with a memory limit: what numaspan retains beyond the live bytes
                              * (free pages not handed back, free slots, tail waste, and its
                              * metadata), at the last cycle; the goal is at most limit -
                              * outside - headroom */
    uint64_t cycle_cpu_ns;   /* CPU time cycles took (their threads' clocks; the limiter's
                              * measure), beside pause_ns_total, their wall time */
    int scavenge_paced;      /* 1: the pacer thread hands pages back at its rate (about 1% of a
                              * CPU); 0: frees and slow paths do, at once */
    int64_t scavenge_goal;   /* what the scavenger last aimed to retain (-1: not yet) */
    uint64_t scavenge_cpu_ns; /* CPU time the paced scavenger spent */
    /* Per-node pacing (host/pacer.h): each node's goal (its share of the heap's, at most its node
     * limit less headroom), its trigger and its live bytes at the last cycle; -1: not paced per
     * node (one node, or nothing paced). */
    int64_t node_goal[NSP_STATS_MAX_NODES], node_trigger[NSP_STATS_MAX_NODES];
    int64_t node_live[NSP_STATS_MAX_NODES];
    uint64_t node_cycles;    /* cycles a node's crossing of its own trigger started */
    uint64_t node_spills;    /* crossings that sent a full node's refills to another node */
    uint64_t nodes_spilling; /* bit n: node n's refills go to the nearest node with room */
    int64_t reserve_floor;   /* the budget's floor in force: twice one span of each class
                              * refilled since the last cycle (a thread's set in the cache it runs
                              * on and the one it left); below the trigger caches may hold
                              * max(reserve_budget, reserve_floor) */
    int64_t metadata;        /* bytes of metadata mapped now (descriptors, bitmaps, page maps,
                              * caches, centrals, tables): part of `outside` with a limit */
} nsp_pacer_info_t;

/* Fills out. Returns 0, or -1 if the allocator is not initialised. */
NSP_API int nsp_pacer_get(nsp_pacer_info_t *out);
/* The debug recount: with every cache, central and page heap locked, sums the charges of every
 * span per node and compares with heapLive + pending. Returns 0 when they agree; otherwise -1,
 * with the first node that disagrees and both sums. */
NSP_API int nsp_ledger_recount(unsigned *node, int64_t *ledger, int64_t *charges);
/* Validates every structure of the host heap (each cache, central and page heap, and every span
 * they hold: host/check.h) with every lock taken. Returns 0, or -1 with a sentence in why[0..len)
 * naming the first broken invariant and where. For tests and debugging; NSP_DEBUG runs it too. */
NSP_API int nsp_heap_check(char *why, size_t len);

/* Device heaps as pacer nodes (host/pacer_device.c). The device heap's host side (numaspan_cl.h)
 * attaches one node per heap and hands in its ledger's total (heapLive) at each sync. A device
 * node is paced against its own capacity; it is not part of the host's goal or trigger. */
#define NSP_PACER_MAX_DEVICES 8
/* Advice: OK; RECONCILE (the figure holds cached spans' over-estimate: nsp_cl_reconcile makes it
 * exact); FULL (exact and above 7/8: free, or make a larger heap; a device heap cannot grow in
 * place, since its handles are offsets into one buffer whose metadata is laid out for its size). */
enum { NSP_DEVICE_OK = 0, NSP_DEVICE_RECONCILE = 1, NSP_DEVICE_FULL = 2 };

typedef struct nsp_pacer_device {
    int id;
    char name[64];
    int64_t capacity;   /* bytes the heap's pool holds */
    int64_t heap_live;  /* the device ledger's heapLive at the last sync */
    int64_t peak_live;
    uint64_t syncs, reconciles;
    int reconciled;     /* the last report followed a release and a sweep (exact) */
    int advice;         /* NSP_DEVICE_*: from the last report */
} nsp_pacer_device_t;

/* A new device node: its id (0..NSP_PACER_MAX_DEVICES-1), or -1 (table full, bad argument). */
NSP_API int nsp_pacer_device_attach(const char *name, int64_t capacity);
/* Hands in the node's heapLive (reconciled: right after a release and a sweep). Returns the
 * advice, NSP_DEVICE_OK below 7/8 of the capacity, else RECONCILE (not reconciled) or FULL;
 * -1 for an unknown id. */
NSP_API int nsp_pacer_device_report(int id, int64_t heap_live, int reconciled);
NSP_API void nsp_pacer_device_detach(int id);
/* Copies up to max attached device nodes into out; returns how many. */
NSP_API unsigned nsp_pacer_devices(nsp_pacer_device_t *out, unsigned max);

/* ---------------------------------------------------------------------------------------------
 * Options: one table of every NSP_* environment variable.
 * ------------------------------------------------------------------------------------------- */

typedef struct nsp_option_info {
    const char *name;    /* environment variable, e.g. "NSP_TOPOLOGY" */
    const char *def;     /* default value as text */
    const char *value;   /* current value: the environment's, else the default */
    const char *help;    /* what it means */
    int from_env;        /* 1 if the environment sets it */
} nsp_option_info_t;

NSP_API unsigned nsp_option_count(void);
/* Fills out for option i (0..count-1). Returns 0, or -1 if i is out of range. */
NSP_API int nsp_option_get(unsigned i, nsp_option_info_t *out);
/* Looks an option up by name. Returns 0, or -1 if no option has that name. */
NSP_API int nsp_option_find(const char *name, nsp_option_info_t *out);
/* Writes the options table as text or JSON. */
NSP_API void nsp_options_print(FILE *out, int json);

#ifdef __cplusplus
}
#endif

#endif /* NUMASPAN_H */
