/*
 * host/init.c — the process's view of the machine: the topology the allocator places by.
 *
 * Owns: the process topology, loaded once (pthread_once) from NSP_TOPOLOGY and NSP_CACHE_GROUPING.
 * Invariant: once nsp_topology() has returned, the topology never changes for the life of the
 * process; a malformed option stops the process with a message naming it, because an experiment
 * that silently ran on the real machine instead of the topology it asked for would be wrong.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "numaspan.h"
#include "options.h"

static pthread_once_t topo_once = PTHREAD_ONCE_INIT;
static nsp_topo_t *process_topo;

static void load_process_topology(void)
{
    char err[512];
    nsp_grouping_t g;
    const char *gname = nsp__option(NSP_OPT_CACHE_GROUPING);
    if (nsp_grouping_parse(gname, &g) < 0) {
        fprintf(stderr, "numaspan: NSP_CACHE_GROUPING=\"%s\": not one of pu, core, l2, l3\n",
                gname);
        exit(2);
    }
    process_topo = nsp_topo_load(nsp__option(NSP_OPT_TOPOLOGY), g, err, sizeof err);
    if (!process_topo) {
        fprintf(stderr, "numaspan: NSP_TOPOLOGY: %s\n", err);
        exit(2);
    }
}

nsp_topo_t *nsp_topology(void)
{
    pthread_once(&topo_once, load_process_topology);
    return process_topo;
}

int nsp_thread_bind_core(unsigned cache)
{
    return nsp_topo_thread_bind_core(nsp_topology(), cache);
}

const char *nsp_version(void)
{
    return NUMASPAN_VERSION_STRING;
}
