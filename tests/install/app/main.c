/* Links numaspan from an installed prefix and uses its API. Prints "nodes=N caches=C". */
#include <numaspan.h>
#include <stdio.h>

int main(void)
{
    char err[256];
    nsp_topo_t *t = nsp_topo_load("synthetic:pack:2 numa:2 core:4 pu:1", NSP_GROUP_PU, err,
                                  sizeof err);
    if (!t) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    printf("nodes=%u caches=%u version=%s\n", nsp_topo_num_nodes(t), nsp_topo_num_caches(t),
           nsp_version());
    nsp_topo_destroy(t);
    return 0;
}
