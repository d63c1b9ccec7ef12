/*
 * host/pacer.c — the pacer (see pacer.h for the model and what it owns).
 *
 * A cycle runs at most once at a time (a flag taken by CAS). Synchronous cycles run in the
 * allocating thread once it has dropped every lock (nsp__pacer_after_alloc); concurrent ones on
 * the pacer thread while the program goes on allocating. Every decision is counted, and with
 * NSP_TRACE written as a CSV line: time_ns,node,heap_live,trigger,goal,limit,event (node -1: the
 * total; every node also at each cycle's start and end, and every 10 ms as "sample"); with
 * NSP_TRACE=stderr, one line per cycle instead (trace_cycle).
 *
 * The pacer thread exists only where something is paced (a memory limit, node limits, a
 * collector) or traced: a plain program that preloads numaspan keeps exactly its own threads, so
 * it can unshare(CLONE_NEWUSER), which a threaded process cannot, and a fork child gets a thread
 * only under the same rule, at its first slow path. Idle-cache release and scavenging
 * (housekeeping) then run on the thread when there is one, and otherwise in the allocating
 * thread at a slow path (a refill, a large allocation) at most once per tick, holding no lock:
 * a program that does not allocate gives nothing back until it allocates again, the price of
 * having no thread of ours in it (glibc too trims only inside free and malloc).
 *
 * The pacer thread never keeps the process alive: glibc ends the process when its count of
 * threads reaches zero, and the pacer thread is one of them, so a main that calls pthread_exit
 * would leave the process waiting on the pacer forever. At each tick the pacer thread asks the
 * kernel (/proc/self/stat: the thread count and the main thread's state) whether every other
 * thread has exited, and if so ends the process with exit(0), as glibc's last thread does. All
 * signals are blocked in it, so that the program's signals go to the program's threads.
 */
#include "pacer.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "central.h"
#include "check.h"
#include "ledger.h"
#include "options.h"
#include "os.h"
#include "pageheap.h"
#include "runtime.h"

#define MiB ((int64_t)1 << 20)

_Atomic int64_t nsp__pacer_trigger = INT64_MAX;
__thread int nsp__cycle_due;

/* ---- the model -------------------------------------------------------------------------------- */

int64_t nsp__pacer_headroom(int64_t limit)
{
    int64_t h = limit / 100 * 3;
    return h > MiB ? h : MiB;
}

int64_t nsp__pacer_goal(const struct nsp_pacer_params *p, int64_t live)
{
    int64_t goal = INT64_MAX; /* percent off: the memory limit alone (Go's GOGC=off) */
    if (p->percent > 0) {
        goal = (int64_t)((double)live * (1.0 + p->percent / 100.0));
        if (goal < p->heap_min)
            goal = p->heap_min;
    }
    if (p->memory_limit > 0) {
        int64_t cap = p->memory_limit - p->outside - nsp__pacer_headroom(p->memory_limit);
        if (goal > cap)
            goal = cap;
    }
    return goal;
}

int64_t nsp__pacer_min_between(int64_t goal, int64_t live)
{
    /* at least 1/16 of the way to the goal, and 256 KiB: a cycle must buy some allocation */
    int64_t m = goal > live ? (goal - live) / 16 : 0;
    return m > (256 << 10) ? m : (256 << 10);
}

int64_t nsp__pacer_trigger_for(const struct nsp_pacer_params *p, int64_t live, int64_t goal,
                               int64_t runway)
{
    if (goal == INT64_MAX)
        return INT64_MAX; /* percent off and no memory limit: nothing to pace by */
    int64_t trigger = goal;
    if (p->concurrent && goal > live) {
        int64_t span = goal - live;
        int64_t lo = live + span / 64 * 45, hi = live + span / 64 * 61;
        if (goal > 4 * MiB && goal - 4 * MiB > hi)
            hi = goal - 4 * MiB;
        trigger = goal - runway;
        if (trigger < lo)
            trigger = lo;
        if (trigger > hi)
            trigger = hi;
    }
    int64_t floor = live + nsp__pacer_min_between(goal, live);
    return trigger > floor ? trigger : floor;
}

/* B = kappa * (trigger - live): what caches may hold charged but unallocated. In `over` heapLive
 * exceeds the live bytes by at most that much, so a crossing of the trigger comes at most kappa
 * of the way from live to the trigger early, however many caches there are (with 512 caches and
 * no bound, each cycle's refills charged C = 160 MiB again at once: a cycle storm). */
int64_t nsp__pacer_reserve_budget(double kappa, int64_t trigger, int64_t live)
{
    if (trigger == INT64_MAX)
        return INT64_MAX;
    int64_t budget = (int64_t)(kappa * (double)(trigger - live));
    return budget > 0 ? budget : 0;
}

/* Per-node pacing (DESIGN.md §6, "per-node goals"): a node's goal is its share of the heap's, in
 * proportion to its live bytes at the last cycle (so that the nodes' goals add up to the heap's),
 * at least its share of the heap minimum (a node with nothing live may still allocate without a
 * cycle at once), and at most its node limit less the limit's headroom; what a node's limit
 * keeps it from holding of its share goes to the other nodes, in proportion to theirs (they take
 * its spilled refills). A node's program that allocates fast is held at its own goal rather
 * than using the room that the other nodes' live heaps give the heap's goal. */
void nsp__pacer_node_goals(const struct nsp_pacer_params *p, int64_t goal, int64_t live,
                           unsigned nnodes, const int64_t *live_n, const int64_t *limit_n,
                           int64_t *goal_n, uint64_t *capped)
{
    int64_t excess = 0, open = 0; /* what capped nodes give up; the others' goals */
    *capped = 0;
    for (unsigned n = 0; n < nnodes; n++) {
        int64_t g = INT64_MAX;
        if (goal != INT64_MAX) {
            g = live > 0 ? (int64_t)((double)goal * (double)(live_n[n] > 0 ? live_n[n] : 0) /
                                     (double)live)
                         : goal / (int64_t)nnodes;
            int64_t floor = p->heap_min / (int64_t)nnodes;
            if (g < floor)
                g = floor;
        }
        int64_t cap = limit_n[n] > 0 ? limit_n[n] - nsp__pacer_headroom(limit_n[n]) : INT64_MAX;
        if (g > cap) {
            if (g != INT64_MAX)
                excess += g - cap;
            g = cap;
            *capped |= 1ULL << n;
        } else if (g != INT64_MAX) {
            open += g;
        }
        goal_n[n] = g;
    }
    for (unsigned n = 0; n < nnodes && excess > 0 && open > 0; n++) {
        if (*capped >> n & 1 || goal_n[n] == INT64_MAX)
            continue;
        int64_t g = goal_n[n] + (int64_t)((double)excess * (double)goal_n[n] / (double)open);
        int64_t cap = limit_n[n] > 0 ? limit_n[n] - nsp__pacer_headroom(limit_n[n]) : INT64_MAX;
        goal_n[n] = g < cap ? g : cap;
    }
}

/* A node's trigger: the same fraction of the way from its live bytes to its goal as the heap's
 * trigger is from the heap's live bytes to the heap's goal. */
int64_t nsp__pacer_node_trigger(int64_t goal, int64_t trigger, int64_t live, int64_t goal_n,
                                int64_t live_n)
{
    if (goal_n == INT64_MAX || trigger == INT64_MAX)
        return INT64_MAX;
    if (goal_n <= live_n || goal <= live)
        return goal_n;
    double f = (double)(trigger - live) / (double)(goal - live);
    if (f > 1)
        f = 1;
    if (f < 0)
        f = 0;
    return live_n + (int64_t)(f * (double)(goal_n - live_n));
}

/* ---- state ------------------------------------------------------------------------------------ */

static struct {
    struct nsp_pacer_params params;
    int paced;                 /* a limit, node limits or a collector: cycles run */
    nsp_collector_fn collector;
    void *collector_arg;
    _Atomic int running;       /* a cycle is in progress */
    pthread_mutex_t model_lock;
    int64_t live, goal, runway;
    double kappa;              /* NSP_PACE_RESERVE: the reservation budget's share of the runway */
    int heap_min_auto;         /* NSP_HEAP_MIN=auto: it follows the percent */
    _Atomic int64_t end_allocated; /* bytes ever allocated, read at the last cycle's end */
    _Atomic int64_t min_between;   /* bytes to allocate after a cycle before the next may start */
    _Atomic int64_t last_confirm_ns;
    _Atomic uint64_t debug_checks; /* NSP_DEBUG's ledger checks that ran */
    _Atomic int64_t goal_now;      /* the goal in force while something is paced, else INT64_MAX */
    _Atomic int64_t level_base;    /* while a cycle runs: heapLive at its start - charged_total */
    _Atomic uint64_t waits, wait_ns; /* back-pressure: waits for a running cycle, their time */
    _Atomic uint64_t helps;          /* back-pressure: cycles run by an allocating thread */
    int64_t limiter_bucket, limiter_busy, limiter_total; /* the limiter (model lock) */
    _Atomic uint64_t cpu_limited;    /* crossings the time limiter held back */
    _Atomic uint64_t unconfirmed;  /* crossings of the trigger that the reading did not confirm */
    int64_t idle_ns;           /* NSP_IDLE_RELEASE_MS */
    /* counters */
    _Atomic uint64_t cycles, forced, triggered, caches_released, idle_releases, busy_caches;
    _Atomic uint64_t bytes_scavenged, pause_ns_total, pause_ns_max;
    _Atomic uint64_t cycle_cpu_ns;  /* CPU time of the cycles' threads in cycles (the limiter) */
    int64_t node_live[NSP_MAX_NODES]; /* per node: its live bytes at the last cycle's end */
    int64_t node_goal[NSP_MAX_NODES]; /* per node: its goal (INT64_MAX: not paced per node) */
    /* per node, read unlocked by back-pressure: the goal at which a node's refills wait for the
     * running cycle or run the due one (INT64_MAX: not paced per node, or capped: it spills) */
    _Atomic int64_t node_goal_now[NSP_MAX_NODES];
    int64_t node_goal_at_start;     /* the running cycle's: its node's goal (trace_cycle) */
    uint64_t node_capped;           /* nodes whose goal is their node limit's: they spill */
    _Atomic uint64_t node_cycles, node_spills; /* node crossings: cycles started, spills */
    int64_t last_goal;              /* the goal before the last cycle's (the scavenger's ratio) */
    _Atomic int scavenging;         /* a scavenge runs (its fields below are its own) */
    int64_t scavenge_credit, scavenge_last; /* ns of CPU it may spend; when it last looked */
    _Atomic int64_t scavenge_goal;  /* what it last aimed to retain */
    _Atomic uint64_t scavenge_cpu_ns; /* CPU time spent handing pages back at its rate */
    /* thread */
    _Atomic uint32_t wake;
    _Atomic int thread_started;
    int64_t tick_ns;           /* how often housekeeping runs (and the thread wakes) */
    _Atomic int64_t next_housekeeping; /* without the thread: when a slow path next does it */
    _Atomic int housekeeping;  /* without the thread: a slow path is doing it */
    /* trace */
    int trace_fd;
    int trace_cycles;          /* NSP_TRACE=stderr: one line per cycle (Go's gctrace=1) */
    int64_t start_ns;          /* when the pacer started: the CPU share of cycles */
    pthread_mutex_t trace_lock;
} P = {.model_lock = PTHREAD_MUTEX_INITIALIZER, .trace_lock = PTHREAD_MUTEX_INITIALIZER,
       .trace_fd = -1, .goal_now = INT64_MAX, .scavenge_goal = -1};

static void set_trigger(int64_t trigger);

/* Clock id in ns; -1 when the system has no such clock. */
static int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    if (clock_gettime(id, &ts) != 0)
        return -1;
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t now_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}

/* The calling thread's CPU time: what a cycle costs, for the limiter. A cycle runs in one
 * thread (the pacer thread, or the allocating thread of a synchronous one) from start to end,
 * so its thread's clock read at both ends is its CPU time, where the wall clock also counted
 * the time it waited for a lock, slept in a collector, or was not scheduled on a loaded
 * machine (the limiter then held back cycles that cost the program nothing). */
static int64_t thread_cpu_ns(void)
{
    int64_t t = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    return t >= 0 ? t : now_ns(); /* no per-thread clock: wall time, the old measure, errs safe */
}

/* The process's CPU time, all threads: what the limiter's bucket drains with. */
static int64_t process_cpu_ns(void)
{
    int64_t t = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
    return t >= 0 ? t : now_ns();
}

static int64_t heap_total(void)
{
    return atomic_load_explicit(&nsp__heap_live_total, memory_order_relaxed);
}

/* One CSV line (no allocation: a stack buffer and write). node -1: the whole heap. Called with
 * or without model_lock (a cycle's events, a crossing's spill, an idle release): the goal and the
 * limit are read as the hints the other unlocked readers take (relaxed loads; their writers store
 * them atomically under the lock). */
static void trace(const char *event, int node)
{
    if (P.trace_fd < 0)
        return;
    char line[256];
    int64_t hl = node < 0 ? heap_total()
                          : atomic_load_explicit(&nsp__ledger[node].heap_live, memory_order_relaxed);
    int64_t trig = atomic_load_explicit(&nsp__pacer_trigger, memory_order_relaxed);
    int n = snprintf(line, sizeof line, "%lld,%d,%lld,%lld,%lld,%lld,%s\n", (long long)now_ns(),
                     node, (long long)hl, (long long)(trig == INT64_MAX ? -1 : trig),
                     (long long)__atomic_load_n(&P.goal, __ATOMIC_RELAXED),
                     (long long)__atomic_load_n(&P.params.memory_limit, __ATOMIC_RELAXED), event);
    if (n > 0 && (size_t)n < sizeof line) {
        pthread_mutex_lock(&P.trace_lock);
        (void)!write(P.trace_fd, line, (size_t)n);
        pthread_mutex_unlock(&P.trace_lock);
    }
}

/* One line per node: heapLive per node over time, for the trace's readers. */
static void trace_nodes(const char *event)
{
    if (P.trace_fd < 0)
        return;
    for (unsigned n = 0; n < nsp__nnodes; n++)
        trace(event, (int)n);
}

/* The spills of all nodes: the page heap counts them (nsp__spills_out), the pacer reads them. */
static uint64_t spills_total(void)
{
    uint64_t t = 0;
    for (unsigned n = 0; n < nsp__nnodes; n++)
        t += atomic_load_explicit(&nsp__spills_out[n], memory_order_relaxed);
    return t;
}

/* One "spill" line per spill a node made since the last sample: the page heap only counts them
 * (it calls nothing above it), so the trace places a spill at the sample after it, within a tick
 * (10 ms when traced) of when it happened. Called by the pacer thread only. */
static void trace_spills(void)
{
    static uint64_t seen[NSP_MAX_NODES];
    if (P.trace_fd < 0)
        return;
    for (unsigned n = 0; n < nsp__nnodes; n++) {
        uint64_t now = atomic_load_explicit(&nsp__spills_out[n], memory_order_relaxed);
        for (; seen[n] < now; seen[n]++)
            trace("spill", (int)n);
    }
}

/* ---- options ---------------------------------------------------------------------------------- */

/* "0=2G,1=8G": a limit on the pages mapped per node index of the process topology. A node maps
 * whole arenas, so a limit below one arena means it maps nothing and its cores always spill:
 * an experiment's choice (test_ledger starves a node so) while some node has room, but limits
 * that leave no node with room would fail every allocation without a word, and are refused. */
static void parse_node_limits(void)
{
    const char *p = nsp__option(NSP_OPT_NODE_LIMITS);
    uint64_t given = 0;
    char why[256];
    while (*p) {
        char *end;
        errno = 0;
        unsigned long node = strtoul(p, &end, 10);
        if (*p < '0' || *p > '9' || errno || *end != '=' || node >= nsp__nnodes) {
            snprintf(why, sizeof why, "expected NODE=SIZE[,NODE=SIZE...] with nodes 0 to %u of "
                     "this topology, e.g. 0=2G,1=8G", nsp__nnodes - 1);
            nsp__option_reject(NSP_OPT_NODE_LIMITS, why);
        }
        if (given & (1ULL << node)) {
            snprintf(why, sizeof why, "node %lu is given twice", node);
            nsp__option_reject(NSP_OPT_NODE_LIMITS, why);
        }
        given |= 1ULL << node;
        char sz[64];
        const char *v = end + 1;
        size_t len = strcspn(v, ",");
        if (len == 0 || len >= sizeof sz)
            nsp__option_reject(NSP_OPT_NODE_LIMITS, "a node's size is missing or too long");
        memcpy(sz, v, len);
        sz[len] = 0;
        size_t bytes;
        if (nsp__parse_size(sz, &bytes) < 0 || bytes > (size_t)INT64_MAX)
            nsp__option_reject(NSP_OPT_NODE_LIMITS, "a node's size is not a size (e.g. 512M, 2G)");
        if (bytes == 0) {
            snprintf(why, sizeof why, "node %lu: a limit of 0 (leave the node out: no limit)", node);
            nsp__option_reject(NSP_OPT_NODE_LIMITS, why);
        }
        /* a limit under one page is still a limit (0 pages would mean none) */
        int64_t pages = (int64_t)(bytes >> NSP_PAGE_SHIFT);
        nsp__node_limit_pages[node] = pages ? pages : 1;
        p = v + len;
        if (*p == ',')
            p++;
    }
    for (unsigned n = 0; n < nsp__nnodes; n++)
        if (!nsp__node_limit_pages[n] || nsp__node_limit_pages[n] >= (int64_t)NSP_ARENA_PAGES)
            return;
    snprintf(why, sizeof why, "every node is limited below one arena (%zuM), so no node can map "
             "memory and every allocation would fail", NSP_ARENA_SIZE >> 20);
    nsp__option_reject(NSP_OPT_NODE_LIMITS, why);
}

void nsp__pacer_init(void)
{
    atomic_store(&nsp__ledger_crossed, nsp__pacer_crossed); /* before any trigger is set */
    atomic_store(&nsp__ledger_node_crossed, nsp__pacer_node_crossed);
    static const char *const accts[] = {"over", "under", "exact"};
    static const enum nsp_accounting acct_of[] = {NSP_ACCT_OVER, NSP_ACCT_UNDER, NSP_ACCT_EXACT};
    nsp__accounting = acct_of[nsp__option_choice(NSP_OPT_ACCOUNTING, accts, 3)];
    static const char *const modes[] = {"sync", "concurrent"};
    P.params.concurrent = (int)nsp__option_choice(NSP_OPT_PACER, modes, 2);
    if (nsp__keyword_is(nsp__option(NSP_OPT_PACE_PERCENT), "off"))
        P.params.percent = 0; /* limit-only pacing */
    else
        P.params.percent = nsp__option_number(NSP_OPT_PACE_PERCENT, 1, 100000,
                                              "expected a number from 1 to 100000 (100: the "
                                              "heap may double between cycles), or off");
    size_t v;
    P.heap_min_auto = nsp__keyword_is(nsp__option(NSP_OPT_HEAP_MIN), "auto");
    if (P.heap_min_auto)
        P.params.heap_min = (int64_t)(4.0 * MiB * P.params.percent / 100.0);
    else if (nsp__parse_size(nsp__option(NSP_OPT_HEAP_MIN), &v) == 0)
        P.params.heap_min = (int64_t)nsp__option_size(NSP_OPT_HEAP_MIN);
    else
        nsp__option_reject(NSP_OPT_HEAP_MIN, "expected auto or a size (e.g. 1M)");
    P.params.memory_limit = (int64_t)nsp__option_size(NSP_OPT_MEMORY_LIMIT);
    /* under 4 MiB the headroom, max(3%, 1 MiB), leaves no heap: every allocation a cycle */
    if (P.params.memory_limit > 0 && P.params.memory_limit < 4 * MiB)
        nsp__option_reject(NSP_OPT_MEMORY_LIMIT,
                           "below 4M the headroom of max(3%, 1M) leaves no heap (0: no limit)");
    P.kappa = nsp__option_number(NSP_OPT_PACE_RESERVE, 0, 1,
                                 "expected a number from 0 to 1 (e.g. 0.25)");
    nsp__delta_batch = (int64_t)nsp__option_size(NSP_OPT_DELTA_BATCH);
    parse_node_limits();
    /* bounded: milliseconds in nanoseconds must not overflow (a wrapped, negative idle time made
     * the pacer thread's timed wait fail at once, and the thread spin) */
    P.idle_ns = nsp__option_int(NSP_OPT_IDLE_RELEASE_MS, 0, 86400000,
                                "expected milliseconds from 0 (never) to 86400000 (a day)") *
                1000000;
    const char *tr = nsp__option(NSP_OPT_TRACE);
    P.start_ns = now_ns();
    P.limiter_total = process_cpu_ns();
    if (nsp__keyword_is(tr, "stderr")) { /* a file of that name: ./stderr */
        P.trace_cycles = 1;
    } else if (*tr && strcmp(tr, "0") != 0) {
        P.trace_fd = open(tr, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (P.trace_fd < 0)
            nsp__option_reject(NSP_OPT_TRACE, strerror(errno));
        static const char header[] = "time_ns,node,heap_live,trigger,goal,limit,event\n";
        if (lseek(P.trace_fd, 0, SEEK_END) == 0)
            (void)!write(P.trace_fd, header, sizeof header - 1);
    }
    /* housekeeping's tick: half the idle time, at most 100 ms (10 ms with a trace, which samples
     * every node that often), at least 5 ms (a tiny idle time must not make the thread spin) */
    int64_t tick = P.idle_ns ? P.idle_ns / 2 : 100000000;
    if (tick > 100000000)
        tick = 100000000;
    if (P.trace_fd >= 0 && tick > 10000000)
        tick = 10000000;
    P.tick_ns = tick < 5000000 ? 5000000 : tick;
    int limited = P.params.memory_limit > 0;
    for (unsigned n = 0; n < nsp__nnodes; n++)
        limited |= nsp__node_limit_pages[n] > 0;
    P.paced = limited;
    P.goal = nsp__pacer_goal(&P.params, 0);
    atomic_store(&P.min_between, nsp__pacer_min_between(P.goal, 0));
    if (P.paced)
        set_trigger(nsp__pacer_trigger_for(&P.params, 0, P.goal, 0));
}

/* ---- the cycle -------------------------------------------------------------------------------- */

/* Releases every cache that can be taken now; busy ones release their stale spans themselves at
 * their next allocation (they see flush_gen != sweepgen). */
static void release_caches(uint32_t sg)
{
    for (unsigned i = 0; i < nsp__ncaches; i++) {
        struct nsp_cache *c = &nsp__caches[i];
        if (!nsp__cache_lock_foreign(c)) {
            atomic_fetch_add_explicit(&P.busy_caches, 1, memory_order_relaxed);
            continue;
        }
        if (c->held_bytes)
            atomic_fetch_add_explicit(&P.caches_released, 1, memory_order_relaxed);
        nsp__cache_flush(c, sg);
        nsp__cache_unlock(c);
    }
}

/* Bytes of user pages numaspan holds from the OS: mapped and not handed back, in use or not;
 * and those in use (in spans, not free). */
static int64_t retained_bytes_in_use(int64_t *in_use)
{
    int64_t retained = 0, used = 0;
    for (unsigned n = 0; n < nsp__nnodes; n++) {
        /* the page heap's counters, read without its lock: a cycle never waits for a thread
         * preempted in the page heap (issue 11); each is exact at rest */
        struct nsp_pageheap *h = &nsp__pageheaps[n];
        uint64_t mapped = nsp__pageheap_counter(&h->pages_mapped);
        retained += (int64_t)(mapped - nsp__pageheap_counter(&h->pages_scavenged)) << NSP_PAGE_SHIFT;
        used += (int64_t)(mapped - nsp__pageheap_counter(&h->pages_free)) << NSP_PAGE_SHIFT;
    }
    if (in_use)
        *in_use = used;
    return retained;
}

static int64_t retained_bytes(void)
{
    return retained_bytes_in_use(NULL);
}

/* Bytes of metadata mapped (os.h): descriptors, bitmaps, page maps, caches, centrals, tables. */
static int64_t metadata_bytes(void)
{
    return (int64_t)atomic_load_explicit(&nsp__os_meta_bytes, memory_order_relaxed);
}

/* Scavenging: free pages handed back to the OS (madvise) until what numaspan retains is at its
 * target, and always under 95% of the memory limit.
 * With the pacer thread (paced), as Go's background scavenger: the target is
 *     retained <= heap in use x goal / last cycle's goal x 1.1
 * (the pages the heap will need if it grows to its goal, and 10% more), approached at a rate:
 * the scavenger spends at most NSP_SCAVENGE_SHARE of a CPU on it (its thread's clock), a credit
 * that grows with the wall time and is spent run by run, so that a program that frees a lot
 * does not pay for handing it all back at once, and pages it needs again soon are still there.
 * Near a memory limit (retained above 95% of it) the excess goes back at once, whatever the
 * rate: synchronously, as Go does when the heap would pass its limit.
 * Without the pacer thread nothing runs in the background: the page heap hands back a large
 * excess at the free that makes it (pageheap.c), and a slow path's housekeeping hands back what
 * passes 10% over the goal, at once. */
#define NSP_SCAVENGE_SHARE 100 /* 1/100 of a CPU, Go's background scavenger's */

static int64_t scavenge_target(int64_t in_use, int64_t goal, int64_t last_goal)
{
    double ratio = last_goal > 0 && goal != INT64_MAX && last_goal != INT64_MAX
                       ? (double)goal / (double)last_goal : 1.0;
    return (int64_t)((double)in_use * ratio * 1.1);
}

/* Hands back up to want bytes, node by node; counted and traced. */
static int64_t scavenge_some(int64_t want)
{
    int64_t got_all = 0;
    for (unsigned n = 0; n < nsp__nnodes && got_all < want; n++) {
        size_t got = nsp__pageheap_scavenge_upto(n, (size_t)(want - got_all));
        if (got) {
            atomic_fetch_add_explicit(&P.bytes_scavenged, got, memory_order_relaxed);
            trace("scavenge", (int)n);
        }
        got_all += (int64_t)got;
    }
    return got_all;
}

static void scavenge(int64_t goal)
{
    int no = 0;
    if (!atomic_compare_exchange_strong(&P.scavenging, &no, 1))
        return; /* the cycle's and the tick's: one at a time, the credit is theirs */
    int paced = atomic_load_explicit(&nsp__scavenge_paced, memory_order_relaxed);
    pthread_mutex_lock(&P.model_lock); /* the model's fields are written under it */
    int64_t model_goal = P.goal, last_goal = P.last_goal, limit = P.params.memory_limit;
    pthread_mutex_unlock(&P.model_lock);
    int64_t in_use, retained = retained_bytes_in_use(&in_use);
    /* goal + 10%, saturated: with nothing to pace by (percent off, no limit) the goal is
     * INT64_MAX, and the sum overflowed to a negative target that handed back every free page */
    int64_t target;
    if (paced)
        target = scavenge_target(in_use, model_goal, last_goal);
    else if (__builtin_add_overflow(goal, goal / 10, &target))
        target = INT64_MAX;
    int64_t cap = limit > 0 ? limit / 100 * 95 : INT64_MAX;
    if (target > cap)
        target = cap;
    atomic_store_explicit(&P.scavenge_goal, target, memory_order_relaxed);
    int64_t excess = retained - target;
    if (excess > 0 && (!paced || retained > cap)) {
        scavenge_some(excess); /* no thread to pace it, or near the limit: at once */
    } else if (excess > 0) {
        int64_t now = now_ns(), share_cap = P.tick_ns / NSP_SCAVENGE_SHARE;
        P.scavenge_credit += (now - P.scavenge_last) / NSP_SCAVENGE_SHARE;
        /* a tick's worth at most: time spent idle does not buy a burst later */
        if (P.scavenge_credit > share_cap)
            P.scavenge_credit = share_cap;
        P.scavenge_last = now;
        /* a run at a time (the page heap hands back whole runs): one may cost more than the
         * credit, the debt is paid by the next ticks */
        while (P.scavenge_credit > 0 && excess > 0) {
            int64_t t0 = thread_cpu_ns();
            int64_t got = scavenge_some(excess < (1 << 20) ? excess : (1 << 20));
            int64_t cpu = thread_cpu_ns() - t0;
            P.scavenge_credit -= cpu > 0 ? cpu : 1;
            atomic_fetch_add_explicit(&P.scavenge_cpu_ns, (uint64_t)(cpu > 0 ? cpu : 0),
                                      memory_order_relaxed);
            if (!got)
                break;
            excess -= got;
        }
    } else {
        P.scavenge_last = now_ns();
    }
    atomic_store_explicit(&P.scavenging, 0, memory_order_release);
}

/* The heap as the pacer reads it, without taking any cache (a measurement must not stop the
 * program, nor be defeated by a cache its owner holds): */
struct heap_reading {
    int64_t charged;   /* heapLive + pending: the sum of every span's charge */
    int64_t unspent;   /* the caches' unspent reservation (cache.h) */
    int64_t allocated; /* bytes ever allocated: the ledger's totals + what caches hold unflushed */
    int64_t held;      /* bytes of spans caches hold (C) */
    /* per node: heapLive + the caches' pending changes for it, and the unspent reservation of
     * the caches of the node (a cache's spans are its node's but for spills, which are rare
     * and only move a node's share of the reservation to a neighbour) */
    int64_t node_charged[NSP_MAX_NODES], node_unspent[NSP_MAX_NODES];
};

/* live = charged - unspent: the bytes of live objects, whatever the mode, busy caches included.
 * The caches are walked first and heapLive read last: a refill in between then adds a charge
 * whose reservation was not subtracted (the reading errs high, on the pacer's safe side), where
 * the other order subtracted reservations whose charges it had not read (low, even negative). */
/* Cache c's pending negative changes for node n, read as cache.c's lock-free reading reads the
 * owner's counters (a value the owner stored at some recent instant; it writes them plainly,
 * under its lock). Not instrumented by ThreadSanitizer: this race is the design, not a bug. */
__attribute__((no_sanitize("thread"))) static int64_t racy_pending(const struct nsp_cache *c,
                                                                  unsigned n)
{
    return __atomic_load_n(&c->pending[n], __ATOMIC_RELAXED);
}

static void read_heap(struct heap_reading *h)
{
    struct nsp_cache_reading r = {0};
    for (unsigned n = 0; n < nsp__nnodes; n++)
        h->node_charged[n] = h->node_unspent[n] = 0;
    for (unsigned i = 0; i < nsp__ncaches; i++) {
        const struct nsp_cache *c = &nsp__caches[i];
        int64_t before = r.unspent;
        nsp__cache_read(c, &r);
        h->node_unspent[c->node] += r.unspent - before;
        for (unsigned n = 0; n < nsp__nnodes; n++)
            h->node_charged[n] += racy_pending(c, n);
    }
    int64_t totals = 0;
    for (unsigned n = 0; n < nsp__nnodes; n++) {
        totals += (int64_t)atomic_load_explicit(&nsp__ledger[n].alloc_bytes, memory_order_relaxed);
        h->node_charged[n] += atomic_load_explicit(&nsp__ledger[n].heap_live, memory_order_relaxed);
    }
    h->charged = heap_total() + r.pending;
    h->unspent = r.unspent;
    h->allocated = totals + r.unflushed;
    h->held = r.held;
}

static int64_t live_of(const struct heap_reading *h)
{
    return h->charged - h->unspent;
}

/* Node n's live bytes in a reading: its charges less its caches' unspent reservation. */
static int64_t node_live_of(const struct heap_reading *h, unsigned n)
{
    int64_t v = h->node_charged[n] - h->node_unspent[n];
    return v > 0 ? v : 0;
}

/* NSP_DEBUG=1: the ledger's bookkeeping, checked at every cycle that finds every cache free
 * (every cache, central and page heap held for a moment). A disagreement is a bug in numaspan:
 * say where, and stop. */
static void check_ledger(void)
{
    unsigned node;
    int64_t ledger, charges;
    /* a cache its owner holds is not waited for (its owner may be waiting for this cycle) */
    int rc = nsp__ledger_recount(0, &node, &ledger, &charges);
    if (rc == 0)
        atomic_fetch_add_explicit(&P.debug_checks, 1, memory_order_relaxed);
    if (rc >= 0)
        return;
    char msg[256];
    int n = snprintf(msg, sizeof msg,
                     "numaspan: NSP_DEBUG: node %u: heapLive + pending %lld != sum of the charges "
                     "%lld; aborting\n",
                     node, (long long)ledger, (long long)charges);
    if (n > 0)
        (void)!write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
    abort();
}

/* Every node's goal and trigger for the heap's trigger (model lock held); the spills the last
 * ones decided end. Not paced per node (INT64_MAX): one node, or nothing paced.
 * The reservation budget stays the heap's (set_trigger): a node's crossing is confirmed against
 * its charges, which in `over` include what its spans hold in caches charged and unspent (at
 * most the budget), so a node's cycle may come that much early. Bounding the budget by the
 * smallest node's room instead kept caches nearly empty on small many-node heaps (four nodes
 * and a 4 MiB heap: under 200 KiB for every cache together); measured on test_pacer
 * node-pacing, `over` ran 82 cycles where `exact` ran 55. */
static void set_node_triggers(int64_t trigger)
{
    uint64_t capped = 0;
    int64_t limits[NSP_MAX_NODES];
    for (unsigned n = 0; n < nsp__nnodes; n++)
        limits[n] = nsp__node_limit_pages[n] << NSP_PAGE_SHIFT;
    int paced = trigger != INT64_MAX && nsp__nnodes > 1;
    if (paced)
        nsp__pacer_node_goals(&P.params, P.goal, P.live, nsp__nnodes, P.node_live, limits,
                              P.node_goal, &capped);
    for (unsigned n = 0; n < nsp__nnodes; n++) {
        if (!paced)
            P.node_goal[n] = INT64_MAX;
        atomic_store_explicit(&P.node_goal_now[n], capped >> n & 1 ? INT64_MAX : P.node_goal[n],
                              memory_order_relaxed);
        atomic_store(&nsp__node_notify[n],
                     paced ? nsp__pacer_node_trigger(P.goal, trigger, P.live, P.node_goal[n],
                                                     P.node_live[n])
                           : INT64_MAX);
    }
    __atomic_store_n(&P.node_capped, capped, __ATOMIC_RELAXED);
    atomic_store(&nsp__pacer_spilling, 0);
}

/* Publishes a new trigger, and with it the reservation budget (model lock held). */
static void set_trigger(int64_t trigger)
{
    atomic_store(&nsp__pacer_trigger, trigger);
    atomic_store(&P.goal_now, trigger == INT64_MAX ? INT64_MAX : P.goal);
    if (!atomic_load(&P.running))
        atomic_store(&nsp__pacer_notify, trigger);
    /* the reservation budget (nsp__pacer_reserve_budget); `under` and `exact` charge no
     * reservation: nothing to bound */
    set_node_triggers(trigger);
    int64_t budget = nsp__accounting == NSP_ACCT_OVER
                         ? nsp__pacer_reserve_budget(P.kappa, trigger, P.live)
                         : INT64_MAX;
    atomic_store_explicit(&nsp__reserve_budget, budget, memory_order_relaxed);
}

/* NSP_TRACE=stderr: the cycle in one line, as GODEBUG=gctrace=1 does: its number, when, the
 * live heap at the last cycle's end -> heapLive at this one's start (the peak a cycle sees) ->
 * the live heap now, the goal, trigger and runway it leaves, the caches it released and found
 * busy, its pause, and the share of the process's time spent in cycles so far. No allocation. */
static void trace_cycle(const struct heap_reading *start, int64_t live, int64_t goal,
                        int64_t pause, uint64_t released0, uint64_t busy0, int node,
                        int64_t node_hl)
{
    static int64_t last_live;
    const double mib = 1 << 20;
    int64_t now = now_ns(), trig = atomic_load(&nsp__pacer_trigger);
    double cpu = now > P.start_ns ? 100.0 * (double)atomic_load(&P.pause_ns_total) /
                                        (double)(now - P.start_ns)
                                  : 0;
    /* a cycle that a node's crossing of its own trigger started says so, with the node's
     * heapLive at the start and the goal the node had (per-node pacing, pacer.h) */
    char by[96] = "";
    if (node >= 0)
        snprintf(by, sizeof by, ", started by node %d at %.2f MiB (its goal %.2f MiB)", node,
                 (double)node_hl / mib, (double)P.node_goal_at_start / mib);
    char line[400];
    int n = snprintf(line, sizeof line,
                     "numaspan: cycle %llu @%.3fs: %.2f -> %.2f -> %.2f MiB, goal %.2f MiB, "
                     "trigger %.2f MiB, runway %.2f MiB, caches %llu released %llu busy, "
                     "pause %.3f ms, %.1f%% time in cycles, metadata %.2f MiB%s\n",
                     (unsigned long long)atomic_load(&P.cycles), (double)(now - P.start_ns) / 1e9,
                     (double)last_live / mib, (double)start->charged / mib, (double)live / mib,
                     (double)goal / mib, trig == INT64_MAX ? -1.0 : (double)trig / mib,
                     (double)P.runway / mib,
                     (unsigned long long)(atomic_load(&P.caches_released) - released0),
                     (unsigned long long)(atomic_load(&P.busy_caches) - busy0),
                     (double)pause / 1e6, cpu, (double)metadata_bytes() / mib, by);
    last_live = live;
    if (n > 0)
        (void)!write(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* Every node's live bytes at a cycle's end, read as the heap's are (without taking any cache):
 * counted as heapLive alone, a node's live bytes held the reservation its caches were given
 * again during the cycle, and a node's goal grew cycle after cycle by up to the budget
 * (measured on test_pacer node-pacing-threads: 8.5 -> 12.4 MiB with 4.3 MiB live). */
static void node_live_now(const struct heap_reading *h, int64_t *out)
{
    for (unsigned n = 0; n < nsp__nnodes; n++)
        out[n] = node_live_of(h, n);
}

/* node: the node whose crossing of its own trigger started the cycle, or -1 (the heap's
 * crossing, or forced). */
static void cycle(int forced, int node)
{
    int idle = 0;
    if (!atomic_compare_exchange_strong(&P.running, &idle, 1))
        return; /* one at a time: the running one will do */
    int64_t t0 = now_ns(), cpu0 = thread_cpu_ns();
    int64_t node_hl = node >= 0 ? atomic_load(&nsp__ledger[node].heap_live) : 0;
    if (node >= 0)
        P.node_goal_at_start = atomic_load_explicit(&P.node_goal_now[node], memory_order_relaxed);
    struct heap_reading start, end;
    read_heap(&start);
    /* Back-pressure's level while the cycle runs: heapLive at its start plus what is charged
     * since, frees not subtracted (as in Go, where nothing is freed during the mark). Counting
     * the collector's frees let `exact` allocate the freed room again during the cycle, and its
     * floating garbage doubled the goal at every cycle. */
    atomic_store(&P.level_base, heap_total() - atomic_load(&nsp__charged_total));
    if (P.params.concurrent)
        atomic_store(&nsp__pacer_notify, 0);
    trace(forced ? "cycle_forced" : "cycle_start", -1);
    trace_nodes("cycle_start");
    /* The collector and its argument as one registration: nsp__pacer_set_collector writes both
     * under model_lock, and a cycle may run on the pacer thread while the program registers.
     * Read unlocked (a plain pair of loads), a weakly ordered cpu could pair the new function
     * with the old argument (NULL at the first registration); and the function was loaded
     * twice, test and call, so a registration of NULL in between called NULL. */
    pthread_mutex_lock(&P.model_lock);
    nsp_collector_fn collector = P.collector;
    void *collector_arg = P.collector_arg;
    pthread_mutex_unlock(&P.model_lock);
    if (collector)
        collector(collector_arg); /* holds no allocator lock: it frees through numaspan */
    uint32_t sg = atomic_fetch_add(&nsp__sweepgen, 2) + 2;
    nsp__ledger_reserve_reset(); /* the budget's floor: the classes refilled from now on */
    uint64_t released0 = atomic_load(&P.caches_released), busy0 = atomic_load(&P.busy_caches);
    for (unsigned n = 0; n < nsp__nnodes; n++)
        nsp__central_drain(n); /* transfer batches back first: the releases then apply them */
    release_caches(sg);
    /* sweep uncached spans; empty ones back to the page heap. A central whose holder runs is
     * waited for; one whose hold is stuck (a thread stopped or preempted there, hold.h) holds the
     * cycle up NSP_HOLD_WAIT_NS at most, once per hold, and is skipped (central.h) */
    for (unsigned n = 0; n < nsp__nnodes; n++)
        nsp__central_trim(n);
    read_heap(&end);
    int64_t live = live_of(&end);
    /* runway: bytes allocated while the cycle ran, not bytes charged (a refill charges a whole
     * span's capacity, which says nothing of how fast the program allocates) */
    int64_t runway = end.allocated - start.allocated;
    if (runway < 0)
        runway = 0;
    pthread_mutex_lock(&P.model_lock);
    /* smoothed over cycles */
    P.runway = P.runway ? (P.runway + runway) / 2 : runway;
    P.live = live;
    node_live_now(&end, P.node_live);
    P.last_goal = P.goal;
    __atomic_store_n(&P.goal, nsp__pacer_goal(&P.params, live), __ATOMIC_RELAXED); /* trace */
    if (P.paced || P.collector)
        set_trigger(nsp__pacer_trigger_for(&P.params, live, P.goal, P.runway));
    /* the limit with the model it belongs to: a setter may rewrite it once the lock is let go */
    int64_t goal = P.goal, limit = P.params.memory_limit;
    atomic_store(&nsp__pacer_notify, atomic_load(&nsp__pacer_trigger));
    atomic_store(&P.min_between, nsp__pacer_min_between(goal, live));
    atomic_store(&P.end_allocated, end.allocated);
    pthread_mutex_unlock(&P.model_lock);
    if (nsp__debug)
        check_ledger(); /* heapLive = the sum of the charges + pending, every cycle */
    scavenge(goal);
    if (limit > 0) {
        /* A memory limit counts everything numaspan holds: what it retains beyond the live
         * bytes (free pages not yet handed back, the free slots of partial spans, tail waste)
         * is `outside` the heap and comes off the goal, measured once the scavenger has handed
         * back what it could (before, `outside` was never set, and the limit counted the live
         * objects alone), and so is its metadata, counted where it is mapped (os.h: an upper
         * bound on what is resident; before, the limit counted user pages alone). */
        int64_t outside = retained_bytes() + metadata_bytes() - live;
        pthread_mutex_lock(&P.model_lock);
        P.params.outside = outside > 0 ? outside : 0;
        __atomic_store_n(&P.goal, nsp__pacer_goal(&P.params, P.live), __ATOMIC_RELAXED);
        if (P.paced || P.collector)
            set_trigger(nsp__pacer_trigger_for(&P.params, P.live, P.goal, P.runway));
        atomic_store(&nsp__pacer_notify, atomic_load(&nsp__pacer_trigger));
        atomic_store(&P.min_between, nsp__pacer_min_between(P.goal, P.live));
        pthread_mutex_unlock(&P.model_lock);
    }
    int64_t pause = now_ns() - t0, cpu = thread_cpu_ns() - cpu0;
    atomic_fetch_add(&P.cycle_cpu_ns, (uint64_t)(cpu > 0 ? cpu : 0));
    atomic_fetch_add(&P.cycles, 1);
    atomic_fetch_add(forced ? &P.forced : &P.triggered, 1);
    atomic_fetch_add(&P.pause_ns_total, (uint64_t)pause);
    uint64_t max = atomic_load(&P.pause_ns_max);
    while ((uint64_t)pause > max && !atomic_compare_exchange_weak(&P.pause_ns_max, &max, (uint64_t)pause))
        ;
    trace_nodes("cycle_end");
    trace("cycle_end", -1);
    if (P.trace_cycles)
        trace_cycle(&start, live, goal, pause, released0, busy0, node, node_hl);
    nsp__check_at(2, "after a cycle"); /* NSP_DEBUG>=2: holding no lock, before the next cycle */
    atomic_store(&P.running, 0);
}

/* A crossing is a hint: the trigger may have moved since (a cycle that ended meanwhile set a new
 * one). Without this check a crossing seen during a cycle, against the old trigger, would start
 * the next cycle at once, and cycles would run back to back.
 *
 * And a crossing is confirmed before a cycle starts: heapLive + pending - the unspent
 * reservation (the live bytes, read without stopping anyone) must be at the trigger too, and
 * the program must have allocated the minimum between cycles since the last one ended, counted
 * in allocated bytes (a refill that charges capacity is not allocation). A crossing that is not
 * confirmed waits for the next one (the next refill past the trigger): a cycle starts at most
 * the reservation spent since the last reading late, and that is at most the budget. */
/* The limiter on time in cycles (Go's GC CPU limiter): a bucket that fills with the CPU time
 * cycles take (their thread's clock, thread_cpu_ns) and drains with the rest of the CPU time the
 * process gets (its clock), full at 100 ms. While it is full no cycle starts, so that cycles
 * take at most about half of the process's CPU even when the heap is at its memory limit and
 * every allocation is due one; the heap may then pass its goal, as in Go. Only with a memory
 * limit; forced cycles are not limited. Model lock held.
 * CPU, not wall time: by the wall clock a collector that sleeps or waits for a lock, or a cycle
 * descheduled on a loaded machine, filled the bucket and held back cycles that cost the program
 * nothing. The process's clock rather than the wall clock drains it, as Go's capacity is
 * GOMAXPROCS x wall: on a machine shared with others the process gets less than a CPU, and
 * cycles must take at most half of what it gets. A collector that hands its work to threads of
 * its own is not counted (only the cycle's thread is). */
#define LIMITER_CAP_NS 100000000
static int limiter_full(void)
{
    int64_t busy = (int64_t)atomic_load(&P.cycle_cpu_ns), total = process_cpu_ns();
    int64_t d_busy = busy - P.limiter_busy, d_total = total - P.limiter_total;
    P.limiter_bucket += d_busy - (d_total - d_busy);
    if (P.limiter_bucket < 0)
        P.limiter_bucket = 0;
    /* what a cycle adds past the cap is kept (up to a second cap): clamped at the cap, the
     * bucket let the next cycle start after a few microseconds between them */
    if (P.limiter_bucket > 2 * LIMITER_CAP_NS)
        P.limiter_bucket = 2 * LIMITER_CAP_NS;
    P.limiter_busy = busy;
    P.limiter_total = total;
    return P.limiter_bucket >= LIMITER_CAP_NS;
}

/* The first node whose heapLive is at its own trigger and that does not spill, + 1; 0: none. */
static unsigned node_over(void)
{
    uint64_t spilling = atomic_load_explicit(&nsp__pacer_spilling, memory_order_relaxed);
    for (unsigned n = 0; n < nsp__nnodes; n++)
        if (!(spilling >> n & 1) &&
            atomic_load_explicit(&nsp__ledger[n].heap_live, memory_order_relaxed) >=
                atomic_load_explicit(&nsp__node_notify[n], memory_order_relaxed))
            return n + 1;
    return 0;
}

/* 1: a cycle is due (*node: the node whose own crossing makes it due, or -1); 0: not due;
 * -1: maybe, but another thread read the heap less than 20 us ago. */
static int still_due(int *node)
{
    *node = -1;
    int64_t trigger = atomic_load_explicit(&nsp__pacer_trigger, memory_order_relaxed);
    unsigned by_node = 0; /* a node at its own trigger, + 1, with the heap under its own */
    if (heap_total() < trigger && !(by_node = node_over()))
        return 0;
    /* with a memory limit only: without one the percent paces, and the minimum between cycles
     * keeps them apart; a limit can make every allocation due a cycle */
    int full = 0;
    if (__atomic_load_n(&P.params.memory_limit, __ATOMIC_RELAXED) > 0) { /* a hint: the setter's */
        pthread_mutex_lock(&P.model_lock);
        full = limiter_full();
        pthread_mutex_unlock(&P.model_lock);
    }
    if (full) {
        atomic_fetch_add_explicit(&P.cpu_limited, 1, memory_order_relaxed);
        return 0;
    }
    /* a reading walks every cache: not more often than every 20 us, whoever asks */
    int64_t now = now_ns(), last = atomic_load_explicit(&P.last_confirm_ns, memory_order_relaxed);
    if (now - last < 20000 ||
        !atomic_compare_exchange_strong(&P.last_confirm_ns, &last, now))
        return -1;
    struct heap_reading h;
    read_heap(&h);
    /* a node's crossing is confirmed against its charges (heapLive + pending), which hold its
     * caches' unspent reservation: the heap's budget, not the node's, bounds that, so a node's
     * cycle may start up to the budget early (on test_pacer node-pacing `over` ran 82 cycles
     * where `exact` ran 55). Confirmed against its live bytes instead, as the heap's crossing
     * is, the node's heapLive stood at its goal plus the reservation: 1.4x its goal on
     * test_pacer node-pacing-threads, with back-pressure waiting at every refill. */
    int crossed = by_node ? h.node_charged[by_node - 1] >=
                                atomic_load_explicit(&nsp__node_notify[by_node - 1],
                                                     memory_order_relaxed)
                          : live_of(&h) >= trigger;
    if (crossed && h.allocated - atomic_load(&P.end_allocated) >= atomic_load(&P.min_between)) {
        if (by_node) {
            *node = (int)by_node - 1;
            atomic_fetch_add_explicit(&P.node_cycles, 1, memory_order_relaxed);
            trace("node_cycle", (int)by_node - 1); /* the node's crossing starts this cycle */
        }
        return 1;
    }
    atomic_fetch_add_explicit(&P.unconfirmed, 1, memory_order_relaxed);
    return 0;
}

/* Back-pressure: a thread whose allocation took heapLive to the goal, once it holds no lock,
 * waits for the running concurrent cycle (at most 20 ms, in 50 us naps: the cycle gets the CPU
 * the thread gives up), or, when none runs, helps: runs the due cycle itself. Measured on a
 * loaded machine: woken by a crossing, the pacer thread waited a scheduler slice (8-12 ms)
 * before it ran, and meanwhile the program allocated to 1.5-1.7x the goal. */
static int64_t cycle_level(void)
{
    return atomic_load_explicit(&P.level_base, memory_order_relaxed) +
           atomic_load_explicit(&nsp__charged_total, memory_order_relaxed);
}

/* Still at the goal while a cycle runs. For the heap (node -1): its level at its goal, a level
 * that never falls during a cycle, so a waiter stays until the cycle ends and sets a new goal.
 * For a node: until the cycle ends, likewise. The ledger keeps no per-node total of what was
 * charged since a cycle started, and the node's heapLive, frees included, is no level: it
 * falls during the cycle by the cycle's own work (the collector's frees, the releases that
 * reconcile the caches' charges), not by room the program made. Measured on test_pacer
 * node-pacing-threads, when a node's waiter went on as soon as its heapLive fell under the
 * goal: it allocated through the rest of the cycle, that was counted live at the cycle's end,
 * and node 0's goal grew 8.6 -> 12.4 -> 14.9 MiB in 1 run of 8-15; the next cycle measured
 * the live bytes again and set 8.8 MiB, with heapLive at 13.7 MiB. */
static int at_goal(int node)
{
    return node >= 0 || cycle_level() >= atomic_load(&P.goal_now);
}

static void wait_for_cycle(int node)
{
    int64_t t0 = now_ns(), t = t0;
    struct timespec nap = {0, 50000};
    while (atomic_load(&P.running) && at_goal(node) && t - t0 < 20000000) {
        nanosleep(&nap, NULL);
        t = now_ns();
    }
    atomic_fetch_add_explicit(&P.waits, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&P.wait_ns, (uint64_t)(t - t0), memory_order_relaxed);
}

void nsp__pacer_run_due(void)
{
    int due = nsp__cycle_due, node, d;
    nsp__cycle_due = 0;
    /* At a node's own goal (due >= 3), a thread that finds another reading the heap (-1) asks
     * again after a nap, for at most 20 ms, rather than allocating on: the other is likely
     * about to start the cycle (a node's crossing is confirmed against its charges, which
     * are at its goal here). Measured on test_pacer node-pacing-threads: without it the
     * second of two threads at node 0's goal went on, and node 0's goal grew from 8.6 to 14 MiB
     * in one run of six. Not at the heap's goal (due 2): there heapLive may be at the goal on
     * the caches' reservation alone while the live bytes are not at the trigger, every refill
     * comes here, and asking again defeated the 20 us spacing of readings (measured: `over`
     * at 512 caches read every cache at every refill, 180,000 times, 60x slower). */
    int64_t t0 = 0;
    for (;;) {
        if (due >= 2 && atomic_load(&P.running)) {
            wait_for_cycle(due >= 3 ? due - 3 : -1);
            return;
        }
        if ((d = still_due(&node)) >= 0 || due < 3)
            break;
        int64_t t = now_ns();
        if (!t0)
            t0 = t;
        else if (t - t0 >= 20000000)
            break;
        struct timespec nap = {0, 20000};
        nanosleep(&nap, NULL);
    }
    if (d > 0) {
        if (due >= 2) /* at the goal, the pacer thread not there yet: this thread helps */
            atomic_fetch_add_explicit(&P.helps, 1, memory_order_relaxed);
        cycle(0, node);
    }
}

enum { THREAD_NONE, THREAD_RUNNING, THREAD_FAILED }; /* P.thread_started */

static long futex(_Atomic uint32_t *addr, int op, uint32_t val, const struct timespec *ts)
{
    return syscall(SYS_futex, addr, op, val, ts, NULL, 0);
}

/* Whether cycles run (a limit or a collector): read without model_lock by the crossing hooks,
 * which the ledger calls from allocations. A hint: a registration racing a crossing is heard at
 * the next one. */
static int pacing(void)
{
    return __atomic_load_n(&P.paced, __ATOMIC_RELAXED) ||
           __atomic_load_n(&P.collector, __ATOMIC_RELAXED);
}

void nsp__pacer_crossed(int64_t total)
{
    if (!pacing())
        return;
    /* concurrent cycles need the pacer thread; a process that could not start it runs them
     * synchronously rather than never */
    if (!P.params.concurrent ||
        atomic_load_explicit(&P.thread_started, memory_order_relaxed) == THREAD_FAILED) {
        nsp__cycle_due = 1; /* run by this thread once it holds no lock */
        return;
    }
    if (atomic_load_explicit(&P.running, memory_order_relaxed)) {
        if (cycle_level() >= atomic_load_explicit(&P.goal_now, memory_order_relaxed))
            nsp__cycle_due = 2; /* at the goal during a cycle: wait for it, once unlocked */
        return;
    }
    if (total < atomic_load_explicit(&nsp__pacer_trigger, memory_order_relaxed))
        return; /* told of a change made while the last cycle ran */
    if (total >= atomic_load_explicit(&P.goal_now, memory_order_relaxed))
        nsp__cycle_due = 2; /* at the goal and no cycle runs: help, once unlocked */
    if (!atomic_exchange(&P.wake, 1))
        futex(&P.wake, FUTEX_WAKE_PRIVATE, 1, NULL);
}

/* Node `node`'s heapLive reached hl, at or past its own trigger, the heap under its own. A node
 * whose goal is its node limit's (it is full, not growing past its share) sends its refills to
 * the nearest node with room, if one has (pageheap.c, nsp__pageheap_alloc_near): a cycle would
 * not give it pages the rest of the machine has. Any other starts a cycle, as a crossing of the
 * heap's trigger does. The trace says which (node_spill, node_cycle).
 * Back-pressure per node (concurrent mode): a refill that takes the node to its own goal waits
 * for the running cycle or, when none runs, helps (runs the due one), as one at the heap's goal
 * does. Measured on test_pacer node-pacing-threads (two threads on node 0, a loaded 2-CPU
 * machine): without it the node's heapLive reached 2.4-3.1x its goal while the pacer thread
 * waited to be scheduled, and only 60% of samples were within 1.05x. */
static void node_backpressure(unsigned node, int64_t hl)
{
    if (P.params.concurrent && !nsp__cycle_due &&
        atomic_load_explicit(&P.thread_started, memory_order_relaxed) == THREAD_RUNNING &&
        hl >= atomic_load_explicit(&P.node_goal_now[node], memory_order_relaxed))
        nsp__cycle_due = 3 + (int)node; /* nsp__pacer_run_due, once unlocked */
}

void nsp__pacer_node_crossed(unsigned node, int64_t hl)
{
    if (!pacing())
        return;
    if (atomic_load_explicit(&P.running, memory_order_relaxed)) {
        node_backpressure(node, hl);
        return;
    }
    if (hl < atomic_load_explicit(&nsp__node_notify[node], memory_order_relaxed))
        return;
    if (heap_total() >= atomic_load_explicit(&nsp__pacer_notify, memory_order_relaxed)) {
        node_backpressure(node, hl); /* the heap's crossing, told first, starts the cycle */
        return;
    }
    uint64_t spilling = atomic_load_explicit(&nsp__pacer_spilling, memory_order_relaxed);
    if (spilling >> node & 1)
        return;
    if (__atomic_load_n(&P.node_capped, __ATOMIC_RELAXED) >> node & 1) {
        for (unsigned m = 0; m < nsp__nnodes; m++)
            if (m != node && !(spilling >> m & 1) &&
                atomic_load_explicit(&nsp__ledger[m].heap_live, memory_order_relaxed) <
                    atomic_load_explicit(&nsp__node_notify[m], memory_order_relaxed)) {
                if (!(atomic_fetch_or(&nsp__pacer_spilling, 1ULL << node) >> node & 1)) {
                    atomic_fetch_add_explicit(&P.node_spills, 1, memory_order_relaxed);
                    trace("node_spill", (int)node);
                }
                return;
            }
    }
    nsp__pacer_crossed(atomic_load_explicit(&nsp__pacer_trigger, memory_order_relaxed));
    node_backpressure(node, hl);
}

/* ---- housekeeping: idle caches and scavenging ------------------------------------------------- */

static uint64_t *idle_seen;   /* per cache: its fingerprint at the last look */
static int64_t *idle_since;   /* per cache: when it was last seen to change */

/* A cache whose fingerprint has not changed for idle_ns (NSP_IDLE_RELEASE_MS) gives its spans
 * back. The fingerprint is read without touching the cache (cache.h: no lock, no fence), so a
 * look at a busy cache costs its cpu nothing: only a cache that looks idle is taken (the foreign
 * take fences its cpu), and the tick never interrupts a busy cpu. Each call looks at `budget`
 * caches, going round. Without the pacer thread the looks are as often as slow paths come (at
 * most one per tick): a cache is released at the first look at least idle_ns after a look that
 * found it as it is now.
 * An owner that starts again between the look and the take loses its spans to the release and
 * refills: one take per idle period at most, where every look used to take every cache. */
static void release_idle(int64_t now, unsigned budget, int64_t idle_ns)
{
    static unsigned next; /* where the last look stopped (housekeeping is one thread at a time) */
    if (!idle_ns || !idle_seen)
        return;
    uint32_t sg = atomic_load(&nsp__sweepgen);
    if (budget > nsp__ncaches)
        budget = nsp__ncaches;
    for (unsigned j = 0; j < budget; j++) {
        unsigned i = next++ % nsp__ncaches;
        struct nsp_cache *c = &nsp__caches[i];
        size_t held;
        uint64_t f = nsp__cache_fingerprint(c, &held);
        if (f != idle_seen[i] || !held) {
            idle_seen[i] = f;
            idle_since[i] = now;
            continue;
        }
        if (now - idle_since[i] < idle_ns)
            continue;
        if (!nsp__cache_lock_foreign(c)) { /* taken meanwhile: not idle after all */
            idle_since[i] = now;
            continue;
        }
        nsp__cache_flush(c, sg);
        nsp__cache_unlock(c);
        idle_seen[i] = nsp__cache_fingerprint(c, &held);
        idle_since[i] = now;
        atomic_fetch_add(&P.idle_releases, 1);
        trace("idle_release", (int)c->node);
    }
}

/* The idle tables, mapped (not malloc'ed: this runs inside malloc) at the first look. */
static void idle_tables(void)
{
    if (idle_seen)
        return;
    size_t len = ((size_t)nsp__ncaches * 16 + 4095) & ~(size_t)4095;
    char *m = nsp__os_map(len, 4096);
    if (m) {
        idle_since = (int64_t *)m;
        idle_seen = (uint64_t *)(m + (size_t)nsp__ncaches * 8);
    }
}

/* Housekeeping is done by one thread at a time (the pacer thread, or the slow path whose turn it
 * is): the idle tables are its own. */
static int housekeeping_take(void)
{
    int no = 0;
    return atomic_compare_exchange_strong(&P.housekeeping, &no, 1);
}

/* budget: the caches looked at (a look reads a few lines of the cache; only an idle one is taken,
 * at the cost of a membarrier): all of them on the pacer thread, a slice per tick on a program's
 * slow path, so that no allocation pays for hundreds of caches at once. */
static void housekeep(int64_t now, unsigned budget)
{
    idle_tables();
    release_idle(now, budget, P.idle_ns);
    pthread_mutex_lock(&P.model_lock);
    int64_t goal = nsp__pacer_goal(&P.params, heap_total());
    if (goal < P.goal)
        goal = P.goal;
    pthread_mutex_unlock(&P.model_lock);
    if (!atomic_load(&P.running))
        scavenge(goal);
    atomic_store_explicit(&P.housekeeping, 0, memory_order_release);
}

int nsp__pacer_test_release_idle(int64_t now, int64_t idle_ns)
{
    if (!housekeeping_take())
        return 0;
    idle_tables();
    release_idle(now, nsp__ncaches, idle_ns);
    atomic_store_explicit(&P.housekeeping, 0, memory_order_release);
    return 1;
}

/* ---- the pacer thread: concurrent cycles, housekeeping, trace samples ------------------------- */

/* Something is paced or traced: the process gets the pacer thread. Read without model_lock by
 * every slow path's poll while a setter may write `paced` under it: atomic loads, as pacing()'s
 * (trace_fd is set once, at initialisation). */
static int wants_thread(void)
{
    return __atomic_load_n(&P.paced, __ATOMIC_RELAXED) || P.trace_fd >= 0 ||
           __atomic_load_n(&P.collector, __ATOMIC_RELAXED);
}

/* Every other thread of the process has exited: the pacer thread is all that keeps it alive.
 * The kernel counts a main thread that called pthread_exit, as a zombie, until the whole process
 * ends, so "alone" is one thread, or two with the main one a zombie. Reads /proc with plain
 * system calls (no allocation); without /proc it never says alone. */
static int alone_in_process(void)
{
    char buf[1024];
    if (nsp__os_read_small("/proc/self/stat", buf, sizeof buf) <= 0)
        return 0;
    /* pid (comm) state ... : comm may hold spaces and parentheses, the last ')' ends it */
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ' || !p[2])
        return 0;
    char main_state = p[2];
    p += 2;
    for (int field = 3; field < 20; field++) { /* num_threads is the 20th field */
        p = strchr(p, ' ');
        if (!p)
            return 0;
        p++;
    }
    long threads = strtol(p, NULL, 10);
    return threads == 1 || (threads == 2 && (main_state == 'Z' || main_state == 'X'));
}

static void *pacer_main(void *arg)
{
    (void)arg;
    for (;;) {
        struct timespec ts = {P.tick_ns / 1000000000, P.tick_ns % 1000000000};
        if (!atomic_load(&P.wake))
            futex(&P.wake, FUTEX_WAIT_PRIVATE, 0, &ts);
        if (alone_in_process())
            exit(0); /* what glibc's last thread does: atexit handlers, stdio flushed */
        int node;
        if (atomic_exchange(&P.wake, 0) && still_due(&node) > 0)
            cycle(0, node);
        int64_t now = now_ns();
        trace_nodes("sample");
        trace_spills();
        if (housekeeping_take())
            housekeep(now, nsp__ncaches);
    }
    return NULL;
}

static void start_thread(void)
{
    int none = THREAD_NONE;
    if (!atomic_compare_exchange_strong(&P.thread_started, &none, THREAD_RUNNING))
        return;
    /* the thread inherits the creator's mask: block everything, so that no signal the program
     * expects lands in a thread it does not know */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    /* small, yet room for the program's atexit handlers, which run here when it is the last */
    pthread_attr_setstacksize(&attr, 1 << 20);
    int rc = pthread_create(&t, &attr, pacer_main, NULL);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        atomic_store(&P.thread_started, THREAD_FAILED); /* housekeeping stays on slow paths */
    else
        atomic_store(&nsp__scavenge_paced, 1); /* frees leave it to the thread's rate */
}

void nsp__pacer_poll(void)
{
    int state = atomic_load_explicit(&P.thread_started, memory_order_relaxed);
    if (state == THREAD_RUNNING)
        return;
    if (state == THREAD_NONE && wants_thread()) {
        start_thread();
        return;
    }
    int64_t now = clock_ns(CLOCK_MONOTONIC_COARSE); /* a few ns: this is on every slow path */
    if (now < atomic_load_explicit(&P.next_housekeeping, memory_order_relaxed) ||
        !housekeeping_take())
        return;
    atomic_store_explicit(&P.next_housekeeping, now + P.tick_ns, memory_order_relaxed);
    housekeep(now_ns(), 32);
}

void nsp__pacer_fork_prepare_first(void)
{
    pthread_mutex_lock(&P.model_lock);
}

void nsp__pacer_fork_prepare_last(void)
{
    pthread_mutex_lock(&P.trace_lock);
}

void nsp__pacer_fork_release(void)
{
    pthread_mutex_unlock(&P.trace_lock);
    pthread_mutex_unlock(&P.model_lock);
}

void nsp__pacer_forked_child(void)
{
    /* threads do not survive fork: the child starts its own only if it is paced (poll) */
    atomic_store(&P.thread_started, THREAD_NONE);
    atomic_store(&P.running, 0);
    atomic_store(&P.wake, 0);
    atomic_store(&P.housekeeping, 0);
    atomic_store(&P.scavenging, 0);
    atomic_store(&nsp__scavenge_paced, 0);
}

/* ---- public ----------------------------------------------------------------------------------- */

void nsp__pacer_set_collector(nsp_collector_fn fn, void *arg)
{
    pthread_mutex_lock(&P.model_lock);
    P.collector_arg = arg;
    /* the crossing hooks read it unlocked, as a hint (pacing); a cycle reads it with its
     * argument under this lock */
    __atomic_store_n(&P.collector, fn, __ATOMIC_RELAXED);
    int64_t trigger = fn || P.paced ? nsp__pacer_trigger_for(&P.params, P.live, P.goal, P.runway)
                                    : INT64_MAX;
    set_trigger(trigger);
    pthread_mutex_unlock(&P.model_lock);
    if (fn && atomic_load(&P.thread_started) == THREAD_NONE)
        start_thread(); /* a collector is something to pace */
}

void nsp__pacer_cycle(void)
{
    cycle(1, -1);
}

/* After a change of the parameters (model lock held): what is paced, the goal for the last live
 * heap, and the trigger with its budget, as the last cycle would have set them. */
static void params_changed(void)
{
    int limited = P.params.memory_limit > 0;
    for (unsigned n = 0; n < nsp__nnodes; n++)
        limited |= nsp__node_limit_pages[n] > 0;
    __atomic_store_n(&P.paced, limited, __ATOMIC_RELAXED); /* read unlocked as a hint: pacing */
    __atomic_store_n(&P.goal, nsp__pacer_goal(&P.params, P.live), __ATOMIC_RELAXED); /* trace */
    int paced = P.paced || __atomic_load_n(&P.collector, __ATOMIC_RELAXED);
    set_trigger(paced ? nsp__pacer_trigger_for(&P.params, P.live, P.goal, P.runway) : INT64_MAX);
    atomic_store(&P.min_between, nsp__pacer_min_between(P.goal, P.live));
}

int nsp__pacer_set_percent(double percent)
{
    if (!(percent == NSP_PACE_OFF || (percent >= 1 && percent <= 100000))) {
        errno = EINVAL;
        return -1;
    }
    pthread_mutex_lock(&P.model_lock);
    P.params.percent = percent;
    if (P.heap_min_auto)
        P.params.heap_min = (int64_t)(4.0 * MiB * percent / 100.0);
    params_changed();
    pthread_mutex_unlock(&P.model_lock);
    return 0;
}

int nsp__pacer_set_memory_limit(int64_t bytes)
{
    /* the same bounds as NSP_MEMORY_LIMIT: under 4 MiB the headroom leaves no heap */
    if (bytes < 0 || (bytes > 0 && bytes < 4 * MiB)) {
        errno = EINVAL;
        return -1;
    }
    pthread_mutex_lock(&P.model_lock);
    /* atomic: read unlocked as a hint (still_due, trace); a cycle and nsp_pacer_get read it under
     * this lock */
    __atomic_store_n(&P.params.memory_limit, bytes, __ATOMIC_RELAXED);
    params_changed();
    pthread_mutex_unlock(&P.model_lock);
    if (bytes > 0 && atomic_load(&P.thread_started) == THREAD_NONE)
        start_thread(); /* a limit is something to pace */
    return 0;
}

size_t nsp__pacer_release_cycle(void)
{
    uint64_t before = atomic_load(&P.bytes_scavenged);
    cycle(1, -1); /* its scavenging counts too */
    return (size_t)(atomic_load(&P.bytes_scavenged) - before);
}

int nsp_pacer_get(nsp_pacer_info_t *out)
{
    memset(out, 0, sizeof *out);
    if (!atomic_load_explicit(&nsp__ready, memory_order_acquire))
        return -1;
    out->nnodes = nsp__nnodes;
    out->accounting = nsp__accounting;
    out->concurrent = P.params.concurrent;
    out->paced = pacing();
    for (unsigned n = 0; n < nsp__nnodes && n < NSP_STATS_MAX_NODES; n++) {
        struct nsp_ledger_node *l = &nsp__ledger[n];
        out->heap_live[n] = atomic_load(&l->heap_live);
        out->total_alloc_bytes[n] = atomic_load(&l->alloc_bytes);
        out->total_alloc_objects[n] = atomic_load(&l->alloc_objects);
        out->total_free_bytes[n] = atomic_load(&l->free_bytes);
        out->total_free_objects[n] = atomic_load(&l->free_objects);
        for (unsigned i = 0; i < nsp__ncaches; i++)
            out->pending[n] += __atomic_load_n(&nsp__caches[i].pending[n], __ATOMIC_RELAXED);
        out->node_limit_bytes[n] = nsp__node_limit_pages[n] << NSP_PAGE_SHIFT;
        out->pages_mapped[n] = (int64_t)nsp__pageheap_counter(&nsp__pageheaps[n].pages_mapped);
    }
    out->heap_live_total = heap_total();
    pthread_mutex_lock(&P.model_lock);
    out->live = P.live;
    out->goal = P.goal;
    out->runway = P.runway;
    pthread_mutex_unlock(&P.model_lock);
    int64_t t = atomic_load(&nsp__pacer_trigger);
    out->trigger = t == INT64_MAX ? -1 : t;
    pthread_mutex_lock(&P.model_lock);
    out->memory_limit = P.params.memory_limit; /* with its model, under the setter's lock */
    out->outside = P.params.outside;
    pthread_mutex_unlock(&P.model_lock);
    out->sweepgen = atomic_load(&nsp__sweepgen);
    out->cycles = atomic_load(&P.cycles);
    out->forced_cycles = atomic_load(&P.forced);
    out->caches_released = atomic_load(&P.caches_released);
    out->idle_releases = atomic_load(&P.idle_releases);
    out->busy_caches = atomic_load(&P.busy_caches);
    out->bytes_scavenged = atomic_load(&P.bytes_scavenged);
    out->pause_ns_total = atomic_load(&P.pause_ns_total);
    out->pause_ns_max = atomic_load(&P.pause_ns_max);
    out->spills = spills_total();
    /* read without taking any cache: a reader must not stop the program it measures */
    struct heap_reading h;
    read_heap(&h);
    out->live_now = live_of(&h);
    out->unspent = h.unspent;
    out->cached_bytes = h.held;
    out->allocated_bytes = h.allocated;
    out->reserve_budget = atomic_load(&nsp__reserve_budget);
    if (out->reserve_budget == INT64_MAX)
        out->reserve_budget = -1;
    out->reserve_floor = nsp__ledger_reserve_floor();
    out->metadata = metadata_bytes();
    out->unconfirmed = atomic_load(&P.unconfirmed);
    out->backpressure_waits = atomic_load(&P.waits);
    out->backpressure_ns = atomic_load(&P.wait_ns);
    out->backpressure_helps = atomic_load(&P.helps);
    out->cpu_limited = atomic_load(&P.cpu_limited);
    out->cycle_cpu_ns = atomic_load(&P.cycle_cpu_ns);
    pthread_mutex_lock(&P.model_lock);
    for (unsigned n = 0; n < nsp__nnodes && n < NSP_STATS_MAX_NODES; n++) {
        int64_t t = atomic_load(&nsp__node_notify[n]);
        out->node_goal[n] = P.node_goal[n] == INT64_MAX ? -1 : P.node_goal[n];
        out->node_trigger[n] = t == INT64_MAX ? -1 : t;
        out->node_live[n] = P.node_live[n];
    }
    pthread_mutex_unlock(&P.model_lock);
    out->node_cycles = atomic_load(&P.node_cycles);
    out->node_spills = atomic_load(&P.node_spills);
    out->nodes_spilling = atomic_load(&nsp__pacer_spilling);
    out->scavenge_cpu_ns = atomic_load(&P.scavenge_cpu_ns);
    out->scavenge_goal = atomic_load(&P.scavenge_goal);
    out->scavenge_paced = atomic_load(&nsp__scavenge_paced);
    out->debug_checks = atomic_load(&P.debug_checks);
    return 0;
}
