/*
 * tests/ledger_now.h — the ledger's total as a test reads it: heapLive of every node plus the
 * caches' pending negative changes (ledger.h: that sum is the sum of the span charges), through
 * the public nsp_pacer_get, which takes no cache.
 */
#ifndef NSP_TESTS_LEDGER_NOW_H
#define NSP_TESTS_LEDGER_NOW_H

#include <stdint.h>

#include "numaspan.h"

static inline int64_t ledger_now(void)
{
    nsp_pacer_info_t pi;
    nsp_pacer_get(&pi);
    int64_t v = pi.heap_live_total;
    for (unsigned n = 0; n < pi.nnodes; n++)
        v += pi.pending[n];
    return v;
}

#endif
