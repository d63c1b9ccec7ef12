/*
 * topology/topology.c — loading a topology and building its tables.
 *
 * Owns: nsp_topo_load/destroy and the tables of topology.h (cpu -> cache -> node, per-node cores
 * and memory). Distances are built in distance.c, binding and virtual cores live in bind.c.
 *
 * Rules decided here, each written where it is applied:
 *   - a spec that does not parse or a file that does not load is an error naming the input; hwloc
 *     quietly loads the real machine when set_synthetic/set_xml fail, so every return is checked;
 *   - caches are the grouping objects (PU, core, L2, L3) in hwloc logical order;
 *   - a cache's home node is the first NUMA node local to its first PU (logical order);
 *   - threads use virtual cores unless the topology is this system.
 */
#include "topology.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int nsp_grouping_parse(const char *name, nsp_grouping_t *out)
{
    static const struct { const char *name; nsp_grouping_t g; } names[] = {
        {"pu", NSP_GROUP_PU}, {"core", NSP_GROUP_CORE}, {"l2", NSP_GROUP_L2}, {"l3", NSP_GROUP_L3},
    };
    for (size_t i = 0; name && i < sizeof names / sizeof names[0]; i++) {
        if (strcasecmp(name, names[i].name) == 0) {
            *out = names[i].g;
            return 0;
        }
    }
    return -1;
}

const char *nsp_grouping_name(nsp_grouping_t g)
{
    switch (g) {
    case NSP_GROUP_PU: return "pu";
    case NSP_GROUP_CORE: return "core";
    case NSP_GROUP_L2: return "l2";
    case NSP_GROUP_L3: return "l3";
    }
    return "?";
}

/*
 * hwloc dlopens its plugins at the first topology init of the process. Its OpenCL and GL plugins
 * pull libOpenCL and libGL into every program that preloads numaspan, its libxml2 plugin pulls
 * libxml2, ICU and libstdc++ (2 MB of RSS in every process), and the allocator needs none of
 * them, nor PCI (hwloc's built-in XML parser reads its own exports): keep them out unless the
 * user chose a blacklist, then restore the environment so that nothing else sees the change.
 */
static int topology_init(hwloc_topology_t *hw)
{
    static const char var[] = "HWLOC_PLUGINS_BLACKLIST";
    int ours = getenv(var) == NULL;
    if (ours)
        setenv(var, "hwloc_opencl,hwloc_gl,hwloc_pci,hwloc_xml_libxml", 0);
    int rc = hwloc_topology_init(hw);
    if (ours)
        unsetenv(var);
    return rc;
}

/* Configures the hwloc object for spec. Returns 0, or -1 with err naming the input. */
static int topology_configure(hwloc_topology_t hw, const char *spec, char *err, size_t errlen)
{
    if (!spec || !*spec || strcmp(spec, "real") == 0)
        return 0;
    if (strncmp(spec, "synthetic:", 10) == 0) {
        const char *desc = spec + 10;
        if (!*desc) {
            set_err(err, errlen, "topology \"%s\": empty synthetic description", spec);
            return -1;
        }
        if (hwloc_topology_set_synthetic(hw, desc) < 0) {
            set_err(err, errlen,
                    "topology \"%s\": hwloc cannot parse the synthetic description \"%s\" "
                    "(expected e.g. \"pack:2 numa:2 core:4 pu:1\")",
                    spec, desc);
            return -1;
        }
        return 0;
    }
    if (strncmp(spec, "xml:", 4) == 0) {
        const char *path = spec + 4;
        struct stat st;
        if (!*path) {
            set_err(err, errlen, "topology \"%s\": empty XML path", spec);
            return -1;
        }
        if (stat(path, &st) < 0) {
            set_err(err, errlen, "topology \"%s\": cannot read XML file \"%s\": %s", spec, path,
                    strerror(errno));
            return -1;
        }
        if (!S_ISREG(st.st_mode)) {
            set_err(err, errlen, "topology \"%s\": \"%s\" is not a regular file", spec, path);
            return -1;
        }
        if (hwloc_topology_set_xml(hw, path) < 0) {
            set_err(err, errlen, "topology \"%s\": hwloc cannot use \"%s\" as an XML topology: %s",
                    spec, path, strerror(errno));
            return -1;
        }
        return 0;
    }
    set_err(err, errlen,
            "topology \"%s\": unknown kind (expected \"real\", \"synthetic:<hwloc string>\" or "
            "\"xml:<path>\")",
            spec);
    return -1;
}

static hwloc_obj_type_t grouping_type(nsp_grouping_t g)
{
    switch (g) {
    case NSP_GROUP_CORE: return HWLOC_OBJ_CORE;
    case NSP_GROUP_L2: return HWLOC_OBJ_L2CACHE;
    case NSP_GROUP_L3: return HWLOC_OBJ_L3CACHE;
    case NSP_GROUP_PU: break;
    }
    return HWLOC_OBJ_PU;
}

/* The home node of a PU: the first NUMA node local to it, in logical order (see file header). */
static unsigned pu_home_node(hwloc_obj_t pu)
{
    for (hwloc_obj_t o = pu; o; o = o->parent) {
        if (o->memory_arity > 0) {
            hwloc_obj_t m = o->memory_first_child;
            while (m && m->type != HWLOC_OBJ_NUMANODE)
                m = m->memory_first_child; /* memory-side caches sit above their nodes */
            if (m)
                return m->logical_index;
        }
    }
    return 0; /* a topology always has a node at the root; unreachable in practice */
}

static void *xcalloc(size_t n, size_t size)
{
    return calloc(n ? n : 1, size);
}

static int build_tables(struct nsp_topo *t, char *err, size_t errlen)
{
    hwloc_topology_t hw = t->hw;
    int npu = hwloc_get_nbobjs_by_type(hw, HWLOC_OBJ_PU);
    int nnode = hwloc_get_nbobjs_by_type(hw, HWLOC_OBJ_NUMANODE);
    hwloc_obj_type_t gtype = grouping_type(t->grouping);
    int ngroup = hwloc_get_nbobjs_by_type(hw, gtype);
    if (npu <= 0 || nnode <= 0) {
        set_err(err, errlen, "topology \"%s\": has %d PUs and %d NUMA nodes", t->spec, npu, nnode);
        return -1;
    }
    if (ngroup <= 0) {
        set_err(err, errlen, "topology \"%s\": cache grouping \"%s\" names no object in it",
                t->spec, nsp_grouping_name(t->grouping));
        return -1;
    }
    t->npus = (unsigned)npu;
    t->nnodes = (unsigned)nnode;

    unsigned maxos = 0;
    for (int i = 0; i < npu; i++) {
        hwloc_obj_t pu = hwloc_get_obj_by_type(hw, HWLOC_OBJ_PU, (unsigned)i);
        if (pu->os_index > maxos)
            maxos = pu->os_index;
    }
    t->cpu_table_len = maxos + 1;
    t->cpu_to_cache = xcalloc(t->cpu_table_len, sizeof *t->cpu_to_cache);
    t->cache_node = xcalloc((size_t)ngroup, sizeof *t->cache_node);
    t->cache_obj = xcalloc((size_t)ngroup, sizeof *t->cache_obj);
    t->node_os = xcalloc(t->nnodes, sizeof *t->node_os);
    t->node_mem = xcalloc(t->nnodes, sizeof *t->node_mem);
    t->node_ncaches = xcalloc(t->nnodes, sizeof *t->node_ncaches);
    t->node_caches = xcalloc(t->nnodes, sizeof *t->node_caches);
    t->node_npus = xcalloc(t->nnodes, sizeof *t->node_npus);
    t->node_pus = xcalloc(t->nnodes, sizeof *t->node_pus);
    if (!t->cpu_to_cache || !t->cache_node || !t->cache_obj || !t->node_os || !t->node_mem ||
        !t->node_ncaches || !t->node_caches || !t->node_npus || !t->node_pus)
        goto oom;
    for (unsigned i = 0; i < t->cpu_table_len; i++)
        t->cpu_to_cache[i] = UINT32_MAX;

    for (unsigned n = 0; n < t->nnodes; n++) {
        hwloc_obj_t node = hwloc_get_obj_by_type(hw, HWLOC_OBJ_NUMANODE, n);
        t->node_os[n] = node->os_index;
        t->node_mem[n] = node->attr ? node->attr->numanode.local_memory : 0;
    }

    /* Caches: grouping objects in logical order. A PU outside every grouping object (an L3
     * grouping on a machine where some PUs have none) would have no cache: refuse it. */
    unsigned ncache = 0;
    for (int g = 0; g < ngroup; g++) {
        hwloc_obj_t obj = hwloc_get_obj_by_type(hw, gtype, (unsigned)g);
        if (!obj->cpuset || hwloc_bitmap_iszero(obj->cpuset))
            continue;
        hwloc_obj_t first_pu = hwloc_get_next_obj_inside_cpuset_by_type(hw, obj->cpuset,
                                                                         HWLOC_OBJ_PU, NULL);
        if (!first_pu)
            continue;
        t->cache_obj[ncache] = obj;
        t->cache_node[ncache] = pu_home_node(first_pu);
        ncache++;
    }
    t->ncaches = ncache;
    for (unsigned c = 0; c < ncache; c++) {
        hwloc_obj_t pu = NULL;
        while ((pu = hwloc_get_next_obj_inside_cpuset_by_type(hw, t->cache_obj[c]->cpuset,
                                                              HWLOC_OBJ_PU, pu)))
            if (t->cpu_to_cache[pu->os_index] == UINT32_MAX)
                t->cpu_to_cache[pu->os_index] = c;
    }
    for (int i = 0; i < npu; i++) {
        hwloc_obj_t pu = hwloc_get_obj_by_type(hw, HWLOC_OBJ_PU, (unsigned)i);
        if (t->cpu_to_cache[pu->os_index] == UINT32_MAX) {
            set_err(err, errlen,
                    "topology \"%s\": PU P#%u belongs to no %s, so it would have no cache; "
                    "choose another cache grouping",
                    t->spec, pu->os_index, nsp_grouping_name(t->grouping));
            return -1;
        }
    }

    /* A cpu the table does not know (a hole in sparse OS numbering; numbers past the table are
     * handled at lookup) still gets a cache: spread such cpus over all caches rather than piling
     * them onto cache 0. */
    for (unsigned cpu = 0; cpu < t->cpu_table_len; cpu++)
        if (t->cpu_to_cache[cpu] == UINT32_MAX && !hwloc_get_pu_obj_by_os_index(hw, cpu))
            t->cpu_to_cache[cpu] = cpu % ncache;

    /* Per node: caches and PUs whose home it is, ascending. */
    for (unsigned c = 0; c < ncache; c++)
        t->node_ncaches[t->cache_node[c]]++;
    for (int i = 0; i < npu; i++) {
        hwloc_obj_t pu = hwloc_get_obj_by_type(hw, HWLOC_OBJ_PU, (unsigned)i);
        t->node_npus[pu_home_node(pu)]++;
    }
    for (unsigned n = 0; n < t->nnodes; n++) {
        t->node_caches[n] = xcalloc(t->node_ncaches[n], sizeof(unsigned));
        t->node_pus[n] = xcalloc(t->node_npus[n], sizeof(unsigned));
        if (!t->node_caches[n] || !t->node_pus[n])
            goto oom;
        t->node_ncaches[n] = 0;
        t->node_npus[n] = 0;
    }
    for (unsigned c = 0; c < ncache; c++) {
        unsigned n = t->cache_node[c];
        t->node_caches[n][t->node_ncaches[n]++] = c;
    }
    for (unsigned cpu = 0; cpu < t->cpu_table_len; cpu++) {
        hwloc_obj_t pu = hwloc_get_pu_obj_by_os_index(hw, cpu);
        if (pu) {
            unsigned n = pu_home_node(pu);
            t->node_pus[n][t->node_npus[n]++] = cpu;
        }
    }
    return 0;
oom:
    set_err(err, errlen, "topology \"%s\": out of memory building tables", t->spec);
    return -1;
}

nsp_topo_t *nsp_topo_load(const char *spec, nsp_grouping_t grouping, char *err, size_t errlen)
{
    set_err(err, errlen, "%s", "");
    if ((unsigned)grouping > NSP_GROUP_L3) {
        set_err(err, errlen, "cache grouping %d: not one of pu, core, l2, l3", (int)grouping);
        return NULL;
    }
    struct nsp_topo *t = calloc(1, sizeof *t);
    if (!t) {
        set_err(err, errlen, "topology: out of memory");
        return NULL;
    }
    t->spec = strdup(spec && *spec ? spec : "real");
    t->grouping = grouping;
    if (!t->spec || topology_init(&t->hw) < 0) {
        set_err(err, errlen, "topology \"%s\": hwloc initialisation failed", spec ? spec : "real");
        t->hw = NULL;
        nsp_topo_destroy(t);
        return NULL;
    }
    /* Only CPUs, caches and memory matter to the allocator. */
    hwloc_topology_set_io_types_filter(t->hw, HWLOC_TYPE_FILTER_KEEP_NONE);
    if (topology_configure(t->hw, spec, err, errlen) < 0) {
        nsp_topo_destroy(t);
        return NULL;
    }
    if (hwloc_topology_load(t->hw) < 0) {
        set_err(err, errlen, "topology \"%s\": hwloc cannot load it: %s", t->spec,
                strerror(errno));
        nsp_topo_destroy(t);
        return NULL;
    }
    t->thissystem = hwloc_topology_is_thissystem(t->hw);
    /* On a topology that is not this machine an OS cpu number names nothing in it, so threads
     * are spread over its caches instead (DESIGN.md §3, virtual cores). */
    t->virtual_cores = !t->thissystem;
    if (build_tables(t, err, errlen) < 0 || nsp__topo_build_distances(t, err, errlen) < 0) {
        nsp_topo_destroy(t);
        return NULL;
    }
    if (t->virtual_cores && !(t->vtab = nsp__vcore_table_new(t->ncaches))) {
        set_err(err, errlen, "topology \"%s\": out of memory", t->spec);
        nsp_topo_destroy(t);
        return NULL;
    }
    return t;
}

void nsp_topo_destroy(nsp_topo_t *t)
{
    if (!t)
        return;
    for (unsigned n = 0; n < t->nnodes; n++) {
        if (t->node_caches)
            free(t->node_caches[n]);
        if (t->node_pus)
            free(t->node_pus[n]);
    }
    free(t->node_caches);
    free(t->node_pus);
    free(t->node_ncaches);
    free(t->node_npus);
    free(t->node_mem);
    free(t->node_os);
    free(t->cache_obj);
    free(t->cache_node);
    free(t->cpu_to_cache);
    free(t->dist);
    free(t->by_dist);
    nsp__vcore_table_put(t->vtab); /* threads still holding a virtual core keep it alive */
    if (t->hw)
        hwloc_topology_destroy(t->hw);
    free(t->spec);
    free(t);
}

const char *nsp_topo_spec(const nsp_topo_t *t) { return t->spec; }
nsp_grouping_t nsp_topo_grouping(const nsp_topo_t *t) { return t->grouping; }
unsigned nsp_topo_num_nodes(const nsp_topo_t *t) { return t->nnodes; }
unsigned nsp_topo_num_caches(const nsp_topo_t *t) { return t->ncaches; }
unsigned nsp_topo_num_pus(const nsp_topo_t *t) { return t->npus; }
int nsp_topo_is_thissystem(const nsp_topo_t *t) { return t->thissystem; }
int nsp_topo_uses_virtual_cores(const nsp_topo_t *t) { return t->virtual_cores; }

int nsp_topo_node_info(const nsp_topo_t *t, unsigned node, nsp_node_info_t *out)
{
    if (node >= t->nnodes) {
        errno = EINVAL;
        return -1;
    }
    out->os_index = t->node_os[node];
    out->memory_bytes = t->node_mem[node];
    out->ncaches = t->node_ncaches[node];
    out->caches = t->node_caches[node];
    out->npus = t->node_npus[node];
    out->pus_os = t->node_pus[node];
    return 0;
}

unsigned nsp_topo_cache_of_cpu(const nsp_topo_t *t, unsigned cpu)
{
    return cpu < t->cpu_table_len ? t->cpu_to_cache[cpu] : cpu % t->ncaches;
}

unsigned nsp_topo_node_of_cache(const nsp_topo_t *t, unsigned cache)
{
    return cache < t->ncaches ? t->cache_node[cache] : UINT32_MAX;
}
