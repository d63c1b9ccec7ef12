/*
 * host/trim.c — nsp_trim and the pacer's release: what every allocation does before it returns
 * NULL (alloc.h, "Out of memory").
 *
 * Owns no state: it walks the layers below. A trim releases every cache it can take at once
 * (a busy cache is not idle: it is left alone, never waited for), gives the centrals' empty
 * spans back to their page heaps and hands free pages back to the OS. It takes no lock that an
 * allocation holds, so the allocation paths call it holding none (alloc.c, large.c).
 */
#include "alloc.h"
#include "cache.h"
#include "central.h"
#include "numaspan.h"
#include "pacer.h"
#include "pageheap.h"
#include "runtime.h"

NSP_EXPORT size_t nsp_trim(void)
{
    if (!atomic_load_explicit(&nsp__ready, memory_order_acquire))
        return 0;
    size_t released = 0;
    for (unsigned n = 0; n < nsp__nnodes; n++)
        nsp__central_drain(n); /* transfer batches back first: the releases then apply them */
    for (unsigned i = 0; i < nsp__ncaches; i++) {
        struct nsp_cache *c = &nsp__caches[i];
        if (nsp__cache_lock_foreign(c)) { /* a busy cache is not idle: leave it */
            nsp__cache_release_all(c);
            nsp__cache_unlock(c);
        }
    }
    for (unsigned n = 0; n < nsp__nnodes; n++) {
        nsp__central_trim(n);
        released += nsp__pageheap_scavenge(n);
    }
    return released;
}

/* Here rather than in pacer.c: it initialises the allocator and trims, both above the pacer. */
NSP_EXPORT size_t nsp_pacer_release_all(void)
{
    if (!atomic_load_explicit(&nsp__ready, memory_order_acquire) && !nsp__init())
        return 0;
    size_t scavenged = nsp__pacer_release_cycle();
    return nsp_trim() + scavenged;
}
