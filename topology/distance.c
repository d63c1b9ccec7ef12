/*
 * topology/distance.c — the node distance matrix and the spill order.
 *
 * Owns: dist[a][b] and by_dist[node] of topology.h.
 *
 * Source, in order of preference:
 *   1. the topology's own NUMA latency matrix (HWLOC_DISTANCES_KIND_MEANS_LATENCY: ACPI SLIT on a
 *      real machine, a NUMALatency matrix in an XML file), taken as given;
 *   2. otherwise the hop model: dist(a, a) = 10; for a != b, dist = 10 * (1 + max(1, h)) where h
 *      is the number of tree edges between the objects the two nodes are attached to. Two nodes
 *      of one package ([numa] [numa]) are 20 apart, nodes under sibling groups of one package 30,
 *      nodes in different packages 50. Synthetic topologies and single-node VMs have no matrix.
 * Invariants: dist[a][a] is the row minimum; by_dist[node][0] == node; ties go to the lower index,
 * so the spill order is deterministic.
 */
#include "topology.h"

#include "hwloc_lib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned obj_depth(hwloc_obj_t o)
{
    unsigned d = 0;
    for (; o->parent; o = o->parent)
        d++;
    return d;
}

/* hwloc_get_common_ancestor_obj is header-inline and calls nothing of the library (hwloc_lib.h). */
static unsigned tree_hops(hwloc_topology_t hw, hwloc_obj_t a, hwloc_obj_t b)
{
    hwloc_obj_t common = hwloc_get_common_ancestor_obj(hw, a, b);
    unsigned dc = obj_depth(common);
    return (obj_depth(a) - dc) + (obj_depth(b) - dc);
}

static int from_hwloc(struct nsp_topo *t, const struct nsp__hwloc *h, hwloc_topology_t hw)
{
    struct hwloc_distances_s *d = NULL;
    unsigned nr = 1;
    if (h->distances_get_by_type(hw, HWLOC_OBJ_NUMANODE, &nr, &d,
                                 HWLOC_DISTANCES_KIND_MEANS_LATENCY, 0) < 0 || nr == 0)
        return 0;
    int ok = d->nbobjs == t->nnodes;
    for (unsigned i = 0; ok && i < d->nbobjs; i++)
        for (unsigned j = 0; j < d->nbobjs; j++) {
            unsigned a = d->objs[i]->logical_index, b = d->objs[j]->logical_index;
            uint64_t v = d->values[i * d->nbobjs + j];
            if (a >= t->nnodes || b >= t->nnodes || v == 0 || v > UINT32_MAX - 1) {
                ok = 0; /* a partial or nonsensical matrix: use the hop model instead */
                break;
            }
            t->dist[a * t->nnodes + b] = (unsigned)v;
        }
    h->distances_release(hw, d);
    return ok;
}

static void from_hops(struct nsp_topo *t, const struct nsp__hwloc *h, hwloc_topology_t hw)
{
    for (unsigned a = 0; a < t->nnodes; a++) {
        hwloc_obj_t na = nsp__hwloc_obj(h, hw, HWLOC_OBJ_NUMANODE, a);
        for (unsigned b = 0; b < t->nnodes; b++) {
            hwloc_obj_t nb = nsp__hwloc_obj(h, hw, HWLOC_OBJ_NUMANODE, b);
            unsigned hops = a == b ? 0 : tree_hops(hw, na->parent, nb->parent);
            t->dist[a * t->nnodes + b] = a == b ? 10 : 10 * (1 + (hops ? hops : 1));
        }
    }
}

/* Orders row (the nodes) by distance from node `from`, itself first, ties by index. Insertion
 * sort: node counts are small and it needs no context pointer that qsort cannot carry. */
static void sort_by_distance(const struct nsp_topo *t, unsigned from, unsigned *row)
{
    const unsigned *d = t->dist + (size_t)from * t->nnodes;
    for (unsigned i = 1; i < t->nnodes; i++) {
        unsigned x = row[i], j = i;
        while (j > 0) {
            unsigned y = row[j - 1];
            int before = x == from || (y != from && (d[x] < d[y] || (d[x] == d[y] && x < y)));
            if (!before)
                break;
            row[j] = y;
            j--;
        }
        row[j] = x;
    }
}

int nsp__topo_build_distances(struct nsp_topo *t, const struct nsp__hwloc *h, hwloc_topology_t hw,
                              char *err, size_t errlen)
{
    size_t n2 = (size_t)t->nnodes * t->nnodes;
    t->dist = calloc(n2, sizeof *t->dist);
    t->by_dist = calloc(n2, sizeof *t->by_dist);
    if (!t->dist || !t->by_dist) {
        snprintf(err, errlen, "topology \"%s\": out of memory building distances", t->spec);
        return -1;
    }
    if (from_hwloc(t, h, hw)) {
        t->dist_source = NSP_DIST_HWLOC;
    } else {
        t->dist_source = NSP_DIST_HOPS;
        from_hops(t, h, hw);
    }
    for (unsigned a = 0; a < t->nnodes; a++) {
        unsigned *row = t->by_dist + (size_t)a * t->nnodes;
        for (unsigned b = 0; b < t->nnodes; b++)
            row[b] = b;
        sort_by_distance(t, a, row);
    }
    return 0;
}

nsp_distance_source_t nsp_topo_distance_source(const nsp_topo_t *t) { return t->dist_source; }

unsigned nsp_topo_distance(const nsp_topo_t *t, unsigned a, unsigned b)
{
    if (a >= t->nnodes || b >= t->nnodes)
        return UINT32_MAX;
    return t->dist[a * t->nnodes + b];
}

const unsigned *nsp_topo_nodes_by_distance(const nsp_topo_t *t, unsigned node)
{
    return node < t->nnodes ? t->by_dist + (size_t)node * t->nnodes : NULL;
}
