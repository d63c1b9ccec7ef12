/*
 * tests/helper_process.c — a program for tests/test_process.sh: it reports what the library made
 * of its environment (the process topology, options) and can misuse the allocator on request.
 *   helper_process topo          spec, grouping, nodes, and the cache after binding to core 9
 *   helper_process bad-free      frees a stack address, then an interior pointer, then twice
 *   helper_process stats         allocates, frees, prints nsp_stats as JSON
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "numaspan.h"

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "topo";
    if (strcmp(cmd, "topo") == 0) {
        nsp_topo_t *t = nsp_topology();
        int rc = nsp_thread_bind_core(9);
        printf("spec=%s grouping=%s nodes=%u bind=%d cache=%u\n", nsp_topo_spec(t),
               nsp_grouping_name(nsp_topo_grouping(t)), nsp_topo_num_nodes(t), rc,
               nsp_topo_current_cache(t));
        return 0;
    }
    if (strcmp(cmd, "bad-free") == 0) {
        int local;
        char *p = malloc(64);
        char *big = malloc(100000);
        free(&local);
        free(p + 8);
        free(big + 4096);
        free(p);
        free(p);
        free(big);
        free(big);
        nsp_stats_t st;
        nsp_stats_get(&st);
        /* frees of freed small objects are caught now (local) or at the next sweep (remote) */
        printf("not_owned=%llu interior=%llu double=%llu\n",
               (unsigned long long)st.not_owned_frees, (unsigned long long)st.interior_frees,
               (unsigned long long)st.double_frees);
        return 0;
    }
    if (strcmp(cmd, "stats") == 0) {
        void *keep[100];
        for (int i = 0; i < 100; i++)
            keep[i] = malloc(48);
        for (int i = 0; i < 50; i++)
            free(keep[i]);
        nsp_stats_print(stdout, 1);
        return 0;
    }
    fprintf(stderr, "helper_process: unknown command %s\n", cmd);
    return 2;
}
