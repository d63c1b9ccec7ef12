/*
 * host/pacer.c — the pacer (see pacer.h for the model and what it owns).
 *
 * A cycle runs at most once at a time (a flag taken by CAS). Synchronous cycles run in the
 * allocating thread once it has dropped every lock (nsp__pacer_after_alloc); concurrent ones on
 * the pacer thread while the program goes on allocating. The pacer thread also releases idle
 * caches and scavenges, whatever the mode. Every decision is counted, and with NSP_TRACE written
 * as a CSV line: time_ns,node,heap_live,trigger,goal,limit,event (node -1: the total; every node
 * also at each cycle's start and end, and every 10 ms as "sample").
 */
#include "pacer.h"

#include <errno.h>
#include <fcntl.h>
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
#include "ledger.h"
#include "options.h"
#include "os.h"
#include "pageheap.h"
#include "runtime.h"

#define MiB ((int64_t)1 << 20)

_Atomic int64_t nsp__pacer_trigger = INT64_MAX;
int64_t nsp__node_limit_pages[NSP_MAX_NODES];
__thread int nsp__cycle_due;

/* ---- the model -------------------------------------------------------------------------------- */

int64_t nsp__pacer_headroom(int64_t limit)
{
    int64_t h = limit / 100 * 3;
    return h > MiB ? h : MiB;
}

int64_t nsp__pacer_goal(const struct nsp_pacer_params *p, int64_t live)
{
    int64_t goal = (int64_t)((double)live * (1.0 + p->percent / 100.0));
    if (goal < p->heap_min)
        goal = p->heap_min;
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

/* ---- state ------------------------------------------------------------------------------------ */

static struct {
    struct nsp_pacer_params params;
    int paced;                 /* a limit, node limits or a collector: cycles run */
    nsp_collector_fn collector;
    void *collector_arg;
    _Atomic int running;       /* a cycle is in progress */
    pthread_mutex_t model_lock;
    int64_t live, goal, runway;
    int64_t idle_ns;           /* NSP_IDLE_RELEASE_MS */
    /* counters */
    _Atomic uint64_t cycles, forced, triggered, caches_released, idle_releases, busy_caches;
    _Atomic uint64_t bytes_scavenged, pause_ns_total, pause_ns_max, spills;
    /* thread */
    _Atomic uint32_t wake;
    _Atomic int thread_started;
    /* trace */
    int trace_fd;
    pthread_mutex_t trace_lock;
} P = {.model_lock = PTHREAD_MUTEX_INITIALIZER, .trace_lock = PTHREAD_MUTEX_INITIALIZER,
       .trace_fd = -1};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t heap_total(void)
{
    return atomic_load_explicit(&nsp__heap_live_total, memory_order_relaxed);
}

/* One CSV line (no allocation: a stack buffer and write). node -1: the whole heap. */
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
                     (long long)P.goal, (long long)P.params.memory_limit, event);
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

void nsp__pacer_event(const char *event, unsigned node)
{
    if (strcmp(event, "spill") == 0)
        atomic_fetch_add_explicit(&P.spills, 1, memory_order_relaxed);
    trace(event, (int)node);
}

/* ---- options ---------------------------------------------------------------------------------- */

static void bad_option(const char *name, const char *value, const char *want)
{
    char msg[512];
    int n = snprintf(msg, sizeof msg, "numaspan: %s=\"%s\": %s\n", name, value, want);
    if (n > 0)
        (void)!write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
    _exit(2);
}

/* "0=2G,1=8G": a page limit per node index of the process topology. */
static void parse_node_limits(const char *text)
{
    const char *p = text;
    while (*p) {
        char *end;
        unsigned long node = strtoul(p, &end, 10);
        if (end == p || *end != '=' || node >= nsp__nnodes)
            bad_option("NSP_NODE_LIMITS", text,
                       "expected NODE=SIZE[,NODE=SIZE...] with nodes of this topology, e.g. 0=2G,1=8G");
        char sz[64];
        const char *v = end + 1;
        size_t len = strcspn(v, ",");
        if (len == 0 || len >= sizeof sz)
            bad_option("NSP_NODE_LIMITS", text, "a node's size is missing or too long");
        memcpy(sz, v, len);
        sz[len] = 0;
        size_t bytes;
        if (nsp__parse_size(sz, &bytes) < 0)
            bad_option("NSP_NODE_LIMITS", text, "a node's size is not a size (e.g. 512M, 2G)");
        nsp__node_limit_pages[node] = (int64_t)(bytes >> NSP_PAGE_SHIFT);
        p = v + len;
        if (*p == ',')
            p++;
    }
}

void nsp__pacer_init(void)
{
    const char *acct = nsp__option(NSP_OPT_ACCOUNTING);
    if (strcmp(acct, "over") == 0)
        nsp__accounting = NSP_ACCT_OVER;
    else if (strcmp(acct, "under") == 0)
        nsp__accounting = NSP_ACCT_UNDER;
    else if (strcmp(acct, "exact") == 0)
        nsp__accounting = NSP_ACCT_EXACT;
    else
        bad_option("NSP_ACCOUNTING", acct, "expected over, under or exact");
    const char *mode = nsp__option(NSP_OPT_PACER);
    if (strcmp(mode, "sync") == 0)
        P.params.concurrent = 0;
    else if (strcmp(mode, "concurrent") == 0)
        P.params.concurrent = 1;
    else
        bad_option("NSP_PACER", mode, "expected sync or concurrent");
    const char *pct = nsp__option(NSP_OPT_PACE_PERCENT);
    char *end;
    P.params.percent = strtod(pct, &end);
    if (end == pct || *end || P.params.percent <= 0 || P.params.percent > 100000)
        bad_option("NSP_PACE_PERCENT", pct, "expected a number above 0 (100: the heap may double)");
    size_t v;
    const char *hm = nsp__option(NSP_OPT_HEAP_MIN);
    if (strcmp(hm, "auto") == 0)
        P.params.heap_min = (int64_t)(4.0 * MiB * P.params.percent / 100.0);
    else if (nsp__parse_size(hm, &v) == 0)
        P.params.heap_min = (int64_t)v;
    else
        bad_option("NSP_HEAP_MIN", hm, "expected auto or a size (e.g. 1M)");
    P.params.memory_limit = (int64_t)nsp__option_size(NSP_OPT_MEMORY_LIMIT);
    nsp__delta_batch = (int64_t)nsp__option_size(NSP_OPT_DELTA_BATCH);
    parse_node_limits(nsp__option(NSP_OPT_NODE_LIMITS));
    const char *idle = nsp__option(NSP_OPT_IDLE_RELEASE_MS);
    long ms = strtol(idle, &end, 10);
    if (end == idle || *end || ms < 0)
        bad_option("NSP_IDLE_RELEASE_MS", idle, "expected milliseconds (0: never)");
    P.idle_ns = ms * 1000000;
    const char *tr = nsp__option(NSP_OPT_TRACE);
    if (*tr && strcmp(tr, "0") != 0) {
        P.trace_fd = open(tr, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (P.trace_fd < 0)
            bad_option("NSP_TRACE", tr, strerror(errno));
        static const char header[] = "time_ns,node,heap_live,trigger,goal,limit,event\n";
        if (lseek(P.trace_fd, 0, SEEK_END) == 0)
            (void)!write(P.trace_fd, header, sizeof header - 1);
    }
    int limited = P.params.memory_limit > 0;
    for (unsigned n = 0; n < nsp__nnodes; n++)
        limited |= nsp__node_limit_pages[n] > 0;
    P.paced = limited;
    P.goal = nsp__pacer_goal(&P.params, 0);
    if (P.paced)
        atomic_store(&nsp__pacer_trigger, nsp__pacer_trigger_for(&P.params, 0, P.goal, 0));
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

/* Hands free pages back until what numaspan retains is within 10% over the goal and under 95%
 * of the memory limit. */
static void scavenge(int64_t goal)
{
    int64_t retained = 0;
    for (unsigned n = 0; n < nsp__nnodes; n++) {
        struct nsp_pageheap *h = &nsp__pageheaps[n];
        pthread_mutex_lock(&h->lock);
        retained += (int64_t)(h->pages_mapped - h->pages_scavenged) << NSP_PAGE_SHIFT;
        pthread_mutex_unlock(&h->lock);
    }
    int64_t target = goal + goal / 10;
    if (P.params.memory_limit > 0 && target > P.params.memory_limit / 100 * 95)
        target = P.params.memory_limit / 100 * 95;
    int64_t excess = retained - target;
    for (unsigned n = 0; n < nsp__nnodes && excess > 0; n++) {
        size_t got = nsp__pageheap_scavenge_upto(n, (size_t)excess);
        if (got) {
            atomic_fetch_add_explicit(&P.bytes_scavenged, got, memory_order_relaxed);
            trace("scavenge", (int)n);
        }
        excess -= (int64_t)got;
    }
}

/* The live heap at the end of a cycle: the sum of the charges, less what the charges of spans
 * held by caches say beyond their allocated slots, once those spans are swept. In a concurrent
 * cycle the program refills caches while the cycle runs: in `over` each refill charges a whole
 * span, and the collector's frees land in spans caches hold; without this the measured live
 * heap, and the goal, would grow with the caches' capacity and feed on themselves. */
static int64_t measure_live(void)
{
    int64_t live = heap_total();
    for (unsigned i = 0; i < nsp__ncaches; i++) {
        struct nsp_cache *c = &nsp__caches[i];
        if (!nsp__cache_lock_foreign(c))
            continue; /* busy: counted as charged */
        for (unsigned n = 0; n < nsp__nnodes; n++)
            live += c->pending[n];
        live -= nsp__cache_sweep_measure(c);
        nsp__cache_unlock(c);
    }
    return live;
}

static void cycle(int forced)
{
    int idle = 0;
    if (!atomic_compare_exchange_strong(&P.running, &idle, 1))
        return; /* one at a time: the running one will do */
    int64_t t0 = now_ns();
    int64_t charged0 = atomic_load(&nsp__charged_total);
    trace(forced ? "cycle_forced" : "cycle_start", -1);
    trace_nodes("cycle_start");
    if (P.collector)
        P.collector(P.collector_arg); /* holds no allocator lock: it frees through numaspan */
    uint32_t sg = atomic_fetch_add(&nsp__sweepgen, 2) + 2;
    release_caches(sg);
    for (unsigned n = 0; n < nsp__nnodes; n++)
        nsp__central_trim(n); /* sweep uncached spans; empty ones back to the page heap */
    int64_t live = measure_live();
    int64_t runway = atomic_load(&nsp__charged_total) - charged0;
    pthread_mutex_lock(&P.model_lock);
    /* runway: bytes charged while recent cycles ran, smoothed over cycles */
    P.runway = P.runway ? (P.runway + runway) / 2 : runway;
    P.live = live;
    P.goal = nsp__pacer_goal(&P.params, live);
    if (P.paced || P.collector)
        atomic_store(&nsp__pacer_trigger,
                     nsp__pacer_trigger_for(&P.params, live, P.goal, P.runway));
    int64_t goal = P.goal;
    pthread_mutex_unlock(&P.model_lock);
    scavenge(goal);
    int64_t pause = now_ns() - t0;
    atomic_fetch_add(&P.cycles, 1);
    atomic_fetch_add(forced ? &P.forced : &P.triggered, 1);
    atomic_fetch_add(&P.pause_ns_total, (uint64_t)pause);
    uint64_t max = atomic_load(&P.pause_ns_max);
    while ((uint64_t)pause > max && !atomic_compare_exchange_weak(&P.pause_ns_max, &max, (uint64_t)pause))
        ;
    trace_nodes("cycle_end");
    trace("cycle_end", -1);
    atomic_store(&P.running, 0);
}

/* A crossing is a hint: the trigger may have moved since (a cycle that ended meanwhile set a new
 * one). Without this check a crossing seen during a cycle, against the old trigger, would start
 * the next cycle at once, and cycles would run back to back. */
static int still_due(void)
{
    return heap_total() >= atomic_load_explicit(&nsp__pacer_trigger, memory_order_relaxed);
}

void nsp__pacer_run_due(void)
{
    nsp__cycle_due = 0;
    if (still_due())
        cycle(0);
}

static long futex(_Atomic uint32_t *addr, int op, uint32_t val, const struct timespec *ts)
{
    return syscall(SYS_futex, addr, op, val, ts, NULL, 0);
}

void nsp__pacer_crossed(int64_t total)
{
    (void)total;
    if (!P.paced && !P.collector)
        return;
    if (!P.params.concurrent) {
        nsp__cycle_due = 1; /* run by this thread once it holds no lock */
        return;
    }
    if (!atomic_exchange(&P.wake, 1))
        futex(&P.wake, FUTEX_WAKE_PRIVATE, 1, NULL);
}

/* ---- the pacer thread: concurrent cycles, idle caches, scavenging ------------------------------ */

static uint64_t *idle_seen;   /* per cache: its fingerprint at the last look */
static int64_t *idle_since;   /* per cache: when it was last seen to change */

/* What the cache's owner changes as it allocates and frees (read under the cache's lock). */
static uint64_t fingerprint(const struct nsp_cache *c)
{
    uint64_t f = c->held_bytes;
    for (unsigned k = 1; k < NSP_NUM_CLASSES; k++) {
        const struct nsp_span *s = c->spans[k];
        if (s != &nsp__empty_span)
            f = f * 31 + s->freeindex * 7 + s->alloc_count;
    }
    return f;
}

/* A cache whose fingerprint has not changed for NSP_IDLE_RELEASE_MS gives its spans back. The
 * fingerprint is read holding the cache (a busy cache is not idle: skipped), so the owner's
 * fields are never read while it writes them. */
static void release_idle(int64_t now)
{
    if (!P.idle_ns || !idle_seen)
        return;
    uint32_t sg = atomic_load(&nsp__sweepgen);
    for (unsigned i = 0; i < nsp__ncaches; i++) {
        struct nsp_cache *c = &nsp__caches[i];
        if (!nsp__cache_lock_foreign(c)) {
            idle_since[i] = now;
            continue;
        }
        uint64_t f = fingerprint(c);
        if (f != idle_seen[i] || !c->held_bytes) {
            idle_seen[i] = f;
            idle_since[i] = now;
        } else if (now - idle_since[i] >= P.idle_ns) {
            nsp__cache_flush(c, sg);
            idle_seen[i] = fingerprint(c);
            atomic_fetch_add(&P.idle_releases, 1);
            trace("idle_release", (int)c->node);
        }
        nsp__cache_unlock(c);
    }
}

static void *pacer_main(void *arg)
{
    (void)arg;
    int64_t tick = P.idle_ns ? P.idle_ns / 2 : 100000000;
    if (tick > 100000000)
        tick = 100000000;
    if (P.trace_fd >= 0 && tick > 10000000)
        tick = 10000000; /* a trace samples every node every 10 ms */
    for (;;) {
        struct timespec ts = {tick / 1000000000, tick % 1000000000};
        if (!atomic_load(&P.wake))
            futex(&P.wake, FUTEX_WAIT_PRIVATE, 0, &ts);
        if (atomic_exchange(&P.wake, 0) && still_due())
            cycle(0);
        int64_t now = now_ns();
        trace_nodes("sample");
        release_idle(now);
        pthread_mutex_lock(&P.model_lock);
        int64_t goal = nsp__pacer_goal(&P.params, heap_total());
        if (goal < P.goal)
            goal = P.goal;
        pthread_mutex_unlock(&P.model_lock);
        if (!atomic_load(&P.running))
            scavenge(goal);
    }
    return NULL;
}

void nsp__pacer_start(void)
{
    int no = 0;
    /* called on every slow path: a plain load first, the CAS only the first time */
    if (atomic_load_explicit(&P.thread_started, memory_order_relaxed) ||
        !atomic_compare_exchange_strong(&P.thread_started, &no, 1))
        return;
    if (!idle_seen) {
        size_t len = ((size_t)nsp__ncaches * 16 + 4095) & ~(size_t)4095;
        char *m = nsp__os_map(len, 4096);
        if (m) {
            idle_since = (int64_t *)m;
            idle_seen = (uint64_t *)(m + (size_t)nsp__ncaches * 8);
        }
    }
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 << 10);
    if (pthread_create(&t, &attr, pacer_main, NULL) != 0)
        atomic_store(&P.thread_started, 0);
    pthread_attr_destroy(&attr);
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
    atomic_store(&P.thread_started, 0);
    atomic_store(&P.running, 0);
    atomic_store(&P.wake, 0);
}

/* ---- public ----------------------------------------------------------------------------------- */

void nsp_pacer_set_collector(nsp_collector_fn fn, void *arg)
{
    if (!atomic_load_explicit(&nsp__ready, memory_order_acquire))
        nsp__init();
    pthread_mutex_lock(&P.model_lock);
    P.collector_arg = arg;
    P.collector = fn;
    int64_t trigger = fn || P.paced ? nsp__pacer_trigger_for(&P.params, P.live, P.goal, P.runway)
                                    : INT64_MAX;
    atomic_store(&nsp__pacer_trigger, trigger);
    pthread_mutex_unlock(&P.model_lock);
}

void nsp_pacer_cycle(void)
{
    if (!atomic_load_explicit(&nsp__ready, memory_order_acquire) && !nsp__init())
        return;
    cycle(1);
}

int nsp_pacer_get(nsp_pacer_info_t *out)
{
    memset(out, 0, sizeof *out);
    if (!atomic_load_explicit(&nsp__ready, memory_order_acquire))
        return -1;
    out->nnodes = nsp__nnodes;
    out->accounting = nsp__accounting;
    out->concurrent = P.params.concurrent;
    out->paced = P.paced || P.collector;
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
        pthread_mutex_lock(&nsp__pageheaps[n].lock);
        out->pages_mapped[n] = (int64_t)nsp__pageheaps[n].pages_mapped;
        pthread_mutex_unlock(&nsp__pageheaps[n].lock);
    }
    out->heap_live_total = heap_total();
    pthread_mutex_lock(&P.model_lock);
    out->live = P.live;
    out->goal = P.goal;
    out->runway = P.runway;
    pthread_mutex_unlock(&P.model_lock);
    int64_t t = atomic_load(&nsp__pacer_trigger);
    out->trigger = t == INT64_MAX ? -1 : t;
    out->memory_limit = P.params.memory_limit;
    out->sweepgen = atomic_load(&nsp__sweepgen);
    out->cycles = atomic_load(&P.cycles);
    out->forced_cycles = atomic_load(&P.forced);
    out->caches_released = atomic_load(&P.caches_released);
    out->idle_releases = atomic_load(&P.idle_releases);
    out->busy_caches = atomic_load(&P.busy_caches);
    out->bytes_scavenged = atomic_load(&P.bytes_scavenged);
    out->pause_ns_total = atomic_load(&P.pause_ns_total);
    out->pause_ns_max = atomic_load(&P.pause_ns_max);
    out->spills = atomic_load(&P.spills);
    return 0;
}
