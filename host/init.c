/*
 * host/init.c — the allocator's life in the process: initialisation, fork, and the public entry
 * points that initialise on first use.
 *
 * Owns: the process topology (loaded once from NSP_TOPOLOGY and NSP_CACHE_GROUPING) and the
 * atfork handlers. It sits on top of host/'s layers and only orchestrates: it calls each layer's
 * init and fork hooks, and fills runtime.h's tables, which runtime.c owns so that the layers
 * below read them without depending on this file (DESIGN.md §2: no dependency points back up).
 * For the same reason a public entry point of a lower layer that must initialise the allocator
 * first (nsp_pacer_set_collector, nsp_pacer_cycle, the pacer's setters) is a wrapper here around
 * that layer's internal function: the pacer never calls nsp__init.
 *
 * Initialisation runs on first use (and, at the latest, from a constructor before main). It
 * loads the topology through hwloc, which calls malloc hundreds of times: those calls, and any
 * other thread's while initialisation runs, are served from the bootstrap region (runtime.c) — a
 * bump allocator over a few chunks mapped as needed, needing nothing. free() recognises bootstrap
 * memory by its address and leaves it alone; realloc() copies out of it. The topology's load
 * dlopens hwloc (topology/hwloc_lib.h), so it waits for the constructor when the first call came
 * before libc was initialised (a preinit malloc): see libc_may_be_uninitialised.
 * Invariant: nsp__ready is published (release) only after every table of runtime.h is set.
 *
 * A malformed option stops the process with a message naming it: an experiment that silently
 * ran on the real machine instead of the topology it asked for would be wrong. The OS refusing
 * memory during initialisation is not a malformed option: initialisation then fails softly (the
 * bootstrap region serves, or NULL with ENOMEM) and is tried again later (nsp__init).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"
#include "central.h"
#include "check.h"
#include "ledger.h"
#include "numaspan.h"
#include "options.h"
#include "pacer.h"
#include "pageheap.h"
#include "runtime.h"
#include "secure.h"
#include "sizeclass.h"

/* ---- the process topology --------------------------------------------------------------------- */

/* Loaded once, under topo_lock, and published with release order. A load that failed because the
 * OS refused memory (the bootstrap region could not grow while hwloc built the topology) is not
 * the spec's fault: nsp_topology() returns NULL with ENOMEM and a later call loads again. Any
 * other failure is a malformed option and stops the process with its message. */
static pthread_mutex_t topo_lock = PTHREAD_MUTEX_INITIALIZER;
static nsp_topo_t *_Atomic process_topo;

static void die(const char *msg)
{
    (void)!write(2, msg, strlen(msg));
    _exit(2);
}

static nsp_topo_t *load_process_topology(void)
{
    char err[512], msg[640];
    nsp_grouping_t g;
    const char *gname = nsp__option(NSP_OPT_CACHE_GROUPING);
    if (nsp_grouping_parse(gname, &g) < 0) {
        snprintf(msg, sizeof msg, "numaspan: NSP_CACHE_GROUPING=\"%s\": not one of pu, core, l2, l3\n",
                 gname);
        die(msg);
    }
    unsigned long refused = atomic_load(&nsp__boot_refusals);
    nsp_topo_t *t = nsp_topo_load(nsp__option(NSP_OPT_TOPOLOGY), g, err, sizeof err);
    if (!t && atomic_load(&nsp__boot_refusals) == refused) {
        snprintf(msg, sizeof msg, "numaspan: NSP_TOPOLOGY: %s\n", err);
        die(msg);
    }
    /* NULL here: the OS refused memory meanwhile (perhaps to another thread: then a malformed
     * spec is only reported at the next attempt, which is no worse than now) */
    return t;
}

nsp_topo_t *nsp_topology(void)
{
    nsp_topo_t *t = atomic_load_explicit(&process_topo, memory_order_acquire);
    if (t)
        return t;
    pthread_mutex_lock(&topo_lock);
    t = atomic_load_explicit(&process_topo, memory_order_relaxed);
    if (!t && (t = load_process_topology()))
        atomic_store_explicit(&process_topo, t, memory_order_release);
    pthread_mutex_unlock(&topo_lock);
    if (!t)
        errno = ENOMEM;
    return t;
}

int nsp_thread_bind_core(unsigned cache)
{
    return nsp_topo_thread_bind_core(nsp_topology(), cache);
}

const char *nsp_version(void)
{
    return NUMASPAN_VERSION_STRING;
}

/* ---- fork ------------------------------------------------------------------------------------- */

/* Lock order: caches, centrals, page heaps, the ledger's node locks (as everywhere), then the
 * bootstrap region's flag (a leaf). The child has only the forking thread, which holds every
 * lock, so unlocking leaves every structure consistent. */
static void fork_prepare(void)
{
    nsp__pacer_fork_prepare_first();
    /* a cache whose cpu cannot be fenced is left out: the child retires it if it was held */
    nsp__cache_lock_all();
    for (unsigned n = 0; n < nsp__nnodes; n++)
        for (unsigned k = 0; k < NSP_NUM_CLASSES; k++)
            nsp__central_lock(nsp__central(n, k));
    /* still (pageheap.h): no cut made without the lock is half done in the child, whose
     * cutter is gone, nor counted in flight there for its checkers to wait on */
    for (unsigned n = 0; n < nsp__nnodes; n++)
        nsp__pageheap_lock_still(n);
    nsp__ledger_lock_all(); /* no ledger change is half made in the child */
    nsp__pacer_fork_prepare_last();
    nsp__boot_fork_prepare(); /* a leaf: last */
}

static void fork_release_child(void);

static void fork_release_locks(int child)
{
    nsp__boot_fork_release();
    nsp__pacer_fork_release();
    if (child)
        nsp__ledger_forked_child();
    else
        nsp__ledger_unlock_all();
    for (unsigned n = nsp__nnodes; n-- > 0;)
        nsp__pageheap_unlock_still(n);
    for (unsigned n = nsp__nnodes; n-- > 0;)
        for (unsigned k = NSP_NUM_CLASSES; k-- > 0;)
            nsp__central_unlock(nsp__central(n, k));
    nsp__cache_unlock_all();
}

static void fork_release(void)
{
    fork_release_locks(0);
}

static void fork_release_child(void)
{
    nsp__cache_forked_child();
    nsp__hold_forked_child(); /* before any hold: the child's thread id is its own */
    fork_release_locks(1);
    nsp__pacer_forked_child(); /* no pacer thread in the child: one starts only if it is paced */
}

/* ---- initialisation --------------------------------------------------------------------------- */

/* Initialisation may fail only because the OS refused memory (the topology's load, the centrals,
 * the cache table): an allocator must not end a process for a transient ENOMEM. Meanwhile every
 * call is served from the bootstrap region (NULL and ENOMEM once that cannot grow), and
 * initialisation is tried again, resuming at the step that failed: at the first call after a
 * failure, then after 2, 4, ... calls, at most INIT_RETRY_MAX apart, so that a process the OS keeps
 * refusing does not pay an attempt on every malloc. */
enum { STEP_OPTIONS = 1, STEP_TOPOLOGY = 2, STEP_CENTRALS = 4, STEP_CACHES = 8 };
#define INIT_RETRY_MAX ((uint64_t)1 << 16)
static _Atomic int init_state; /* 0 not begun (or failed, waiting to retry), 1 running, 2 done */
static int init_steps;         /* STEP_* done; written by the one thread that runs init */
static unsigned init_failures;
static _Atomic uint64_t init_calls, init_retry_at; /* calls seen while not ready; next attempt */
static __thread int in_init;

/* Whether libc may not be initialised yet: the first attempt found environ NULL (a sanitizer
 * runtime's malloc from the program's preinit functions, before any library's constructor), and
 * the constructor below has not run. The topology is not loaded then: its load dlopens hwloc,
 * and a dlopen at that point runs libc's initialisation itself, with the environment it has then
 * (none, or the array of the variables topology.c sets), and libc never runs it again, so the
 * program would see an empty environment for its whole life. Until the constructor, allocations
 * are served from the bootstrap region, as hwloc's are. */
static int started_before_environ;
static _Atomic int constructor_ran;

static int libc_may_be_uninitialised(void)
{
    return started_before_environ && !atomic_load(&constructor_ran);
}

/* The attempt failed (the OS refused memory): schedule the next one. */
static int init_failed(void)
{
    uint64_t wait = init_failures < 16 ? (uint64_t)1 << init_failures : INIT_RETRY_MAX;
    init_failures++;
    atomic_store(&init_retry_at, atomic_load(&init_calls) + wait);
    atomic_store(&init_state, 0);
    in_init = 0;
    errno = ENOMEM;
    return 0;
}

int nsp__init(void)
{
    if (atomic_load_explicit(&nsp__ready, memory_order_acquire))
        return 1;
    if (in_init)
        return 0;
    if (atomic_fetch_add(&init_calls, 1) < atomic_load(&init_retry_at))
        return 0; /* a failed attempt was too recent */
    int zero = 0;
    if (!atomic_compare_exchange_strong(&init_state, &zero, 1))
        return atomic_load_explicit(&nsp__ready, memory_order_acquire);
    in_init = 1;
    if (!(init_steps & STEP_OPTIONS)) {
        started_before_environ = environ == NULL;
        nsp__sizeclass_init();
        nsp__secure_init(); /* before any allocation: it sets the class lookup */
        static const char *const on_error[] = {"abort", "warn"};
        nsp__on_error = nsp__option_choice(NSP_OPT_ON_ERROR, on_error, 2) == 0
                            ? NSP_ON_ERROR_ABORT
                            : NSP_ON_ERROR_WARN;
        nsp__cache_max = nsp__option_size(NSP_OPT_CACHE_MAX);
        nsp__cache_total_max = nsp__option_size(NSP_OPT_CACHE_TOTAL_MAX);
        init_steps |= STEP_OPTIONS;
    }
    if (!(init_steps & STEP_TOPOLOGY)) {
        if (libc_may_be_uninitialised()) {
            /* not a failure: no back-off, the next call (at the latest the constructor's)
             * tries again */
            atomic_store(&init_state, 0);
            in_init = 0;
            return 0;
        }
        nsp_topo_t *t = nsp_topology();
        if (!t)
            return init_failed();
        nsp__topo = t;
        nsp__nnodes = nsp_topo_num_nodes(nsp__topo);
        nsp__ncaches = nsp_topo_num_caches(nsp__topo);
        if (nsp__nnodes > NSP_MAX_NODES) {
            /* named as the topology's other errors are: the variable, the spec, the problem */
            char msg[640];
            snprintf(msg, sizeof msg,
                     "numaspan: NSP_TOPOLOGY: topology \"%s\": %u NUMA nodes, more than numaspan "
                     "supports (%u)\n",
                     nsp_topo_spec(nsp__topo), nsp__nnodes, (unsigned)NSP_MAX_NODES);
            die(msg);
        }
        nsp__pageheap_init(nsp__nnodes);
        init_steps |= STEP_TOPOLOGY;
    }
    /* each of these maps its table or nothing (-1), so a step is retried whole */
    if (!(init_steps & STEP_CENTRALS)) {
        if (nsp__central_init(nsp__nnodes) < 0)
            return init_failed();
        init_steps |= STEP_CENTRALS;
    }
    if (!(init_steps & STEP_CACHES)) {
        if (nsp__cache_init() < 0)
            return init_failed();
        init_steps |= STEP_CACHES;
    }
    nsp__check_init(); /* the debug level, before the pacer's cycles may check */
    nsp__pacer_init();
    pthread_atfork(fork_prepare, fork_release, fork_release_child);
    nsp__stats_init();
    /* hwloc's load freed nearly all it took from the bootstrap region: those pages go back */
    nsp__boot_trim();
    atomic_store(&init_state, 2);
    atomic_store_explicit(&nsp__ready, 1, memory_order_release);
    in_init = 0;
    return 1;
}

/* ---- public entry points that initialise first ------------------------------------------------ */

void nsp_pacer_set_collector(nsp_collector_fn fn, void *arg)
{
    if (!atomic_load_explicit(&nsp__ready, memory_order_acquire))
        nsp__init();
    nsp__pacer_set_collector(fn, arg);
}

void nsp_pacer_cycle(void)
{
    if (!atomic_load_explicit(&nsp__ready, memory_order_acquire) && !nsp__init())
        return;
    nsp__pacer_cycle();
}

int nsp_pacer_set_percent(double percent)
{
    if (!atomic_load_explicit(&nsp__ready, memory_order_acquire) && !nsp__init()) {
        errno = EAGAIN;
        return -1;
    }
    return nsp__pacer_set_percent(percent);
}

int nsp_pacer_set_memory_limit(int64_t bytes)
{
    if (!atomic_load_explicit(&nsp__ready, memory_order_acquire) && !nsp__init()) {
        errno = EAGAIN;
        return -1;
    }
    return nsp__pacer_set_memory_limit(bytes);
}

__attribute__((constructor)) static void nsp__init_before_main(void)
{
    atomic_store(&constructor_ran, 1); /* libc, which this library needs, is initialised */
    /* first: a mistyped name is named even when a value beside it is then refused */
    nsp__options_check_names();
    nsp__init();
    /* environ is set by now: options read before it (a sanitizer runtime's first malloc) were
     * taken from /proc/self/environ, or are reported here if that could not be read */
    nsp__options_check_late();
}
