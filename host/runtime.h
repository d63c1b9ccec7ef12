/*
 * host/runtime.h — process-wide state of the host allocator, set once at initialisation.
 *
 * Owns nothing mutable after init: the process topology and its shape, and the options the hot
 * paths read (parsed once); besides them the bootstrap region and the count of bad frees.
 * Defined in runtime.c, the bottom of host/, so that every layer may read them; written by
 * nsp__init (init.c) before `nsp__ready` is published with release order; every reader checks
 * nsp__ready (acquire) first or runs after it.
 */
#ifndef NSP_HOST_RUNTIME_H
#define NSP_HOST_RUNTIME_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "numaspan.h"

enum nsp_on_error { NSP_ON_ERROR_ABORT = 0, NSP_ON_ERROR_WARN };

extern nsp_topo_t *nsp__topo;
extern unsigned nsp__nnodes;
extern unsigned nsp__ncaches;
extern _Atomic int nsp__ready;
extern int nsp__on_error;
extern size_t nsp__cache_max;       /* bytes of spans one cache may hold (their reservations:
                                     * a charge window each, cache.c) */
extern size_t nsp__cache_total_max; /* the same for all caches together */
extern int nsp__debug;              /* NSP_DEBUG, 0 to 3 (check.h; defined and read in check.c) */

/* Initialises the allocator if nobody has. Returns 1 when ready, 0 when the caller must use the
 * bootstrap path (initialisation is in progress, by this thread or another, or an attempt failed
 * because the OS refused memory: init.c retries it at a later call). */
int nsp__init(void);

/* The bootstrap region (runtime.c): memory handed out before the allocator is ready. */
void *nsp__boot_alloc(size_t n, size_t align);
int nsp__boot_owns(const void *p);
size_t nsp__boot_size(const void *p);
/* A free of bootstrap memory (boot_owns is true of p): the block is never reused, but the pages
 * nothing live is on any more go back to the OS (runtime.c). */
void nsp__boot_free(void *p);
/* At the end of initialisation: hands back the pages that nothing live is on, and from then on
 * every free hands back its pages as they empty (init.c). */
void nsp__boot_trim(void);
size_t nsp__boot_bytes(void);
/* fork (init.c): the bootstrap flag is taken last before a fork and let go in both processes
 * after it, so that a child never inherits it held by a thread it does not have (a free that
 * emptied a page holds it across its madvise). */
void nsp__boot_fork_prepare(void);
void nsp__boot_fork_release(void);
/* Test hook (NULL otherwise): called under the flag before a free hands an emptied page back. */
extern void (*_Atomic nsp__test_boot_release_window)(void);
/* Bootstrap chunks the OS refused: init.c tells a topology load that failed for want of memory
 * (retried later) from a malformed option. */
extern _Atomic unsigned long nsp__boot_refusals;

enum nsp_error_kind {
    NSP_ERR_NOT_OWNED = 0, /* free of an address no span owns */
    NSP_ERR_INTERIOR,      /* free of an address inside an object, not at its start */
    NSP_ERR_DOUBLE_FREE,   /* free of an object that is not allocated */
    NSP_ERR_CANARY,        /* NSP_SECURE: the canary after an object was overwritten */
    NSP_ERR_WRITE_AFTER_FREE, /* a free slot written while free: NSP_SECURE's poison, or (every
                               * other mode) its free tag, found at its hand-out or before its
                               * span's pages go back (span.h) */
    NSP_ERR_FREE_LIST,     /* a bin's free-list link was overwritten, or an object listed twice */
    NSP_ERR__COUNT
};
extern _Atomic uint64_t nsp__errors[NSP_ERR__COUNT];

/* Prepares the NSP_STATS report at exit (stats.c); called once by nsp__init. */
void nsp__stats_init(void);

/* Reports a bad free of addr by function fn: a message on stderr naming the address and the
 * problem, then abort (default), or count and continue (NSP_ON_ERROR=warn). Allocates nothing. */
void nsp__report_error(enum nsp_error_kind kind, const char *fn, const void *addr);

#endif /* NSP_HOST_RUNTIME_H */
