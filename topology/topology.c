/*
 * topology/topology.c — loading a topology and building its tables.
 *
 * Owns: nsp_topo_load/destroy and the tables of topology.h (cpu -> cache -> node, per-node cores
 * and memory, each cache's cpus). Distances are built in distance.c, binding and virtual cores
 * live in bind.c. hwloc is opened at the start of a load and closed at its end (hwloc_lib.h):
 * everything used later is copied into the tables first.
 *
 * Rules decided here, each written where it is applied:
 *   - a spec that does not parse or a file that does not load is an error naming the input; hwloc
 *     quietly loads the real machine when set_synthetic/set_xml fail, so every return is checked;
 *   - keywords (real, synthetic:, xml:, the groupings) are taken in any case, as every option's
 *     are (host/options.h); what follows a kind (an hwloc description, a path) is hwloc's or the
 *     file system's and keeps its case;
 *   - caches are the grouping objects (PU, core, L2, L3) in hwloc logical order;
 *   - a cache's home node is the first NUMA node local to its first PU (logical order);
 *   - threads use virtual cores unless the topology is this system.
 */
#include "topology.h"

#include "hwloc_lib.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int nsp__keyword_match(const char *text, const char *word, int whole)
{
    for (; *word; text++, word++) {
        char a = *text >= 'A' && *text <= 'Z' ? (char)(*text - 'A' + 'a') : *text;
        char b = *word >= 'A' && *word <= 'Z' ? (char)(*word - 'A' + 'a') : *word;
        if (a != b)
            return 0;
    }
    return !whole || *text == 0;
}

int nsp_grouping_parse(const char *name, nsp_grouping_t *out)
{
    static const struct { const char *name; nsp_grouping_t g; } names[] = {
        {"pu", NSP_GROUP_PU}, {"core", NSP_GROUP_CORE}, {"l2", NSP_GROUP_L2}, {"l3", NSP_GROUP_L3},
    };
    for (size_t i = 0; name && i < sizeof names / sizeof names[0]; i++) {
        if (nsp__keyword_match(name, names[i].name, 1)) {
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
 * libxml2, ICU and libstdc++ (2 MB of RSS in every process), an HPC build's CUDA, NVML, RSMI and
 * Level Zero plugins pull their runtimes, and the allocator needs none of them, nor PCI (hwloc's
 * built-in XML parser reads its own exports). So the plugin directory is not even looked at: an
 * empty HWLOC_PLUGINS_PATH names no directory (every start skips its listing and a stat of each
 * plugin, and no plugin of any name is opened), unless the user chose a path; then the blacklist
 * keeps the ones named here out, unless the user chose a blacklist too. The environment is
 * restored afterwards, so that nothing else sees the change.
 */
static int topology_init(const struct nsp__hwloc *h, hwloc_topology_t *hw)
{
    static const char path[] = "HWLOC_PLUGINS_PATH", black[] = "HWLOC_PLUGINS_BLACKLIST";
    int our_path = getenv(path) == NULL, our_black = getenv(black) == NULL;
    if (our_path)
        setenv(path, "", 0);
    if (our_black)
        setenv(black, "hwloc_opencl,hwloc_gl,hwloc_pci,hwloc_xml_libxml", 0);
    int rc = h->topology_init(hw);
    if (our_black)
        unsetenv(black);
    if (our_path)
        unsetenv(path);
    return rc;
}

/* Configures the hwloc object for spec. Returns 0, or -1 with err naming the input. */
static int topology_configure(const struct nsp__hwloc *h, hwloc_topology_t hw, const char *spec,
                              char *err, size_t errlen)
{
    if (!spec || !*spec || nsp__keyword_match(spec, "real", 1))
        return 0;
    if (nsp__keyword_match(spec, "synthetic:", 0)) {
        const char *desc = spec + 10;
        if (!*desc) {
            nsp__topo_err(err, errlen, "topology \"%s\": empty synthetic description", spec);
            return -1;
        }
        if (h->topology_set_synthetic(hw, desc) < 0) {
            nsp__topo_err(err, errlen,
                    "topology \"%s\": hwloc cannot parse the synthetic description \"%s\" "
                    "(expected e.g. \"pack:2 numa:2 core:4 pu:1\")",
                    spec, desc);
            return -1;
        }
        return 0;
    }
    if (nsp__keyword_match(spec, "xml:", 0)) {
        const char *path = spec + 4;
        struct stat st;
        if (!*path) {
            nsp__topo_err(err, errlen, "topology \"%s\": empty XML path", spec);
            return -1;
        }
        if (stat(path, &st) < 0) {
            nsp__topo_err(err, errlen, "topology \"%s\": cannot read XML file \"%s\": %s", spec, path,
                    strerror(errno));
            return -1;
        }
        if (!S_ISREG(st.st_mode)) {
            nsp__topo_err(err, errlen, "topology \"%s\": \"%s\" is not a regular file", spec, path);
            return -1;
        }
        if (h->topology_set_xml(hw, path) < 0) {
            nsp__topo_err(err, errlen, "topology \"%s\": hwloc cannot use \"%s\" as an XML topology: %s",
                    spec, path, strerror(errno));
            return -1;
        }
        return 0;
    }
    nsp__topo_err(err, errlen,
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

static void bit_set(unsigned long *mask, unsigned bit)
{
    mask[bit / (8 * sizeof *mask)] |= 1UL << (bit % (8 * sizeof *mask));
}

/* The next PU after prev (NULL: the first) in logical order whose OS number is in set: hwloc's
 * inline hwloc_get_next_obj_inside_cpuset_by_type for PUs, whose cpuset is their own number. */
static hwloc_obj_t next_pu_in(const struct nsp__hwloc *h, hwloc_topology_t hw,
                              hwloc_const_cpuset_t set, hwloc_obj_t prev)
{
    for (hwloc_obj_t pu = prev ? prev->next_cousin : nsp__hwloc_obj(h, hw, HWLOC_OBJ_PU, 0); pu;
         pu = pu->next_cousin)
        if (h->bitmap_isset(set, pu->os_index))
            return pu;
    return NULL;
}

static int build_tables(struct nsp_topo *t, const struct nsp__hwloc *h, hwloc_topology_t hw,
                        char *err, size_t errlen)
{
    int npu = nsp__hwloc_nbobjs(h, hw, HWLOC_OBJ_PU);
    int nnode = nsp__hwloc_nbobjs(h, hw, HWLOC_OBJ_NUMANODE);
    hwloc_obj_type_t gtype = grouping_type(t->grouping);
    int ngroup = nsp__hwloc_nbobjs(h, hw, gtype);
    if (npu <= 0 || nnode <= 0) {
        nsp__topo_err(err, errlen, "topology \"%s\": has %d PUs and %d NUMA nodes", t->spec, npu, nnode);
        return -1;
    }
    if (ngroup <= 0) {
        nsp__topo_err(err, errlen, "topology \"%s\": cache grouping \"%s\" names no object in it",
                t->spec, nsp_grouping_name(t->grouping));
        return -1;
    }
    t->npus = (unsigned)npu;
    t->nnodes = (unsigned)nnode;

    unsigned maxos = 0;
    for (int i = 0; i < npu; i++) {
        hwloc_obj_t pu = nsp__hwloc_obj(h, hw, HWLOC_OBJ_PU, (unsigned)i);
        if (pu->os_index > maxos)
            maxos = pu->os_index;
    }
    t->cpu_table_len = maxos + 1;
    t->cpu_words = (unsigned)((t->cpu_table_len + 8 * sizeof(unsigned long) - 1) /
                              (8 * sizeof(unsigned long)));
    hwloc_obj_t *group = xcalloc((size_t)ngroup, sizeof *group); /* each cache's object */
    t->cpu_to_cache = xcalloc(t->cpu_table_len, sizeof *t->cpu_to_cache);
    t->cache_node = xcalloc((size_t)ngroup, sizeof *t->cache_node);
    t->cache_cpus = xcalloc((size_t)ngroup * t->cpu_words, sizeof *t->cache_cpus);
    t->pu_present = xcalloc(t->cpu_words, sizeof *t->pu_present);
    t->node_os = xcalloc(t->nnodes, sizeof *t->node_os);
    t->node_mem = xcalloc(t->nnodes, sizeof *t->node_mem);
    t->node_ncaches = xcalloc(t->nnodes, sizeof *t->node_ncaches);
    t->node_caches = xcalloc(t->nnodes, sizeof *t->node_caches);
    t->node_npus = xcalloc(t->nnodes, sizeof *t->node_npus);
    t->node_pus = xcalloc(t->nnodes, sizeof *t->node_pus);
    if (!group || !t->cpu_to_cache || !t->cache_node || !t->cache_cpus || !t->pu_present ||
        !t->node_os || !t->node_mem || !t->node_ncaches || !t->node_caches || !t->node_npus ||
        !t->node_pus)
        goto oom;
    for (unsigned i = 0; i < t->cpu_table_len; i++)
        t->cpu_to_cache[i] = UINT32_MAX;
    for (int i = 0; i < npu; i++)
        bit_set(t->pu_present, nsp__hwloc_obj(h, hw, HWLOC_OBJ_PU, (unsigned)i)->os_index);

    for (unsigned n = 0; n < t->nnodes; n++) {
        hwloc_obj_t node = nsp__hwloc_obj(h, hw, HWLOC_OBJ_NUMANODE, n);
        t->node_os[n] = node->os_index;
        t->node_mem[n] = node->attr ? node->attr->numanode.local_memory : 0;
    }

    /* Caches: grouping objects in logical order. A PU outside every grouping object (an L3
     * grouping on a machine where some PUs have none) would have no cache: refuse it. */
    unsigned ncache = 0;
    for (int g = 0; g < ngroup; g++) {
        hwloc_obj_t obj = nsp__hwloc_obj(h, hw, gtype, (unsigned)g);
        if (!obj->cpuset || h->bitmap_iszero(obj->cpuset))
            continue;
        hwloc_obj_t first_pu = next_pu_in(h, hw, obj->cpuset, NULL);
        if (!first_pu)
            continue;
        group[ncache] = obj;
        t->cache_node[ncache] = pu_home_node(first_pu);
        ncache++;
    }
    t->ncaches = ncache;
    /* A cache's cpus, for binding, are its object's PUs (its cpuset, as hwloc_set_cpubind was
     * given it): kept as a cpu_set_t's bits, since hwloc is closed once the load is over. */
    for (unsigned c = 0; c < ncache; c++) {
        hwloc_obj_t pu = NULL;
        while ((pu = next_pu_in(h, hw, group[c]->cpuset, pu))) {
            bit_set(t->cache_cpus + (size_t)c * t->cpu_words, pu->os_index);
            if (t->cpu_to_cache[pu->os_index] == UINT32_MAX)
                t->cpu_to_cache[pu->os_index] = c;
        }
    }
    free(group);
    group = NULL;
    for (int i = 0; i < npu; i++) {
        hwloc_obj_t pu = nsp__hwloc_obj(h, hw, HWLOC_OBJ_PU, (unsigned)i);
        if (t->cpu_to_cache[pu->os_index] == UINT32_MAX) {
            nsp__topo_err(err, errlen,
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
        if (t->cpu_to_cache[cpu] == UINT32_MAX && !nsp__topo_cpu_is_pu(t, cpu))
            t->cpu_to_cache[cpu] = cpu % ncache;

    /* Per node: caches and PUs whose home it is, ascending (PUs by OS number). */
    unsigned *pu_node = xcalloc(t->cpu_table_len, sizeof *pu_node);
    if (!pu_node)
        goto oom;
    for (int i = 0; i < npu; i++) {
        hwloc_obj_t pu = nsp__hwloc_obj(h, hw, HWLOC_OBJ_PU, (unsigned)i);
        pu_node[pu->os_index] = pu_home_node(pu);
        t->node_npus[pu_node[pu->os_index]]++;
    }
    for (unsigned c = 0; c < ncache; c++)
        t->node_ncaches[t->cache_node[c]]++;
    for (unsigned n = 0; n < t->nnodes; n++) {
        t->node_caches[n] = xcalloc(t->node_ncaches[n], sizeof(unsigned));
        t->node_pus[n] = xcalloc(t->node_npus[n], sizeof(unsigned));
        if (!t->node_caches[n] || !t->node_pus[n]) {
            free(pu_node);
            goto oom;
        }
        t->node_ncaches[n] = 0;
        t->node_npus[n] = 0;
    }
    for (unsigned c = 0; c < ncache; c++) {
        unsigned n = t->cache_node[c];
        t->node_caches[n][t->node_ncaches[n]++] = c;
    }
    for (unsigned cpu = 0; cpu < t->cpu_table_len; cpu++) {
        if (nsp__topo_cpu_is_pu(t, cpu)) {
            unsigned n = pu_node[cpu];
            t->node_pus[n][t->node_npus[n]++] = cpu;
        }
    }
    free(pu_node);
    return 0;
oom:
    free(group);
    nsp__topo_err(err, errlen, "topology \"%s\": out of memory building tables", t->spec);
    return -1;
}

/* Reads the topology into t's tables with an open hwloc. Returns 0, or -1 with err set. */
static int load_tables(struct nsp_topo *t, const struct nsp__hwloc *h, const char *spec, char *err,
                       size_t errlen)
{
#if HWLOC_API_VERSION >= 0x00020100
    /* hwloc's x86 backend reads cpuid to annotate what Linux's sysfs gives (vendor and model
     * strings, and caches where sysfs lists none): only an L2 or L3 grouping could need it.
     * Left out for PU and core grouping, the load runs less of libc, whose text pages stay
     * mapped in every process that preloads numaspan (on this VM one 64 KiB fault-around
     * window of libc's text less resident in every run of an empty program: issue 11, "Peak
     * RSS"). Synthetic and XML topologies never use it. Where the OS's backend finds no core
     * (no sysfs topology nor /proc/cpuinfo core ids: HWLOC_COMPONENTS=no_os,x86 plays it), the
     * x86 backend is what finds them: a core grouping that names no object is loaded again with
     * it (else every preloading process died at its first malloc: test_topology,
     * core_grouping_falls_back_to_x86). */
    int leave_x86_out = h->topology_set_components &&
                        (t->grouping == NSP_GROUP_PU || t->grouping == NSP_GROUP_CORE);
#else
    int leave_x86_out = 0;
#endif
    for (;;) {
        hwloc_topology_t hw;
        if (topology_init(h, &hw) < 0) {
            nsp__topo_err(err, errlen, "topology \"%s\": hwloc initialisation failed", t->spec);
            return -1;
        }
        int rc = -1;
        /* Only CPUs, caches and memory matter to the allocator. */
        h->topology_set_io_types_filter(hw, HWLOC_TYPE_FILTER_KEEP_NONE);
        /* Caches are kept only to group by them (l2, l3). Filtered out, the Linux backend reads
         * each cache's level and type but not its size, line and set files: on this VM 11 opens
         * a PU fewer at every process's start (22 of 115 in a preloaded /bin/true). */
        if (t->grouping == NSP_GROUP_PU || t->grouping == NSP_GROUP_CORE)
            h->topology_set_cache_types_filter(hw, HWLOC_TYPE_FILTER_KEEP_NONE);
#if HWLOC_API_VERSION >= 0x00020800
        /* Nor memory attributes (each node's access files) nor CPU kinds (each PU's cpufreq
         * and capacity files): nothing here reads them. Flags a 2.x library before 2.8 would
         * refuse (EINVAL) are asked of 2.8 on only; the distances are kept (placement). */
        if (h->get_api_version() >= 0x00020800)
            h->topology_set_flags(hw, HWLOC_TOPOLOGY_FLAG_NO_MEMATTRS |
                                          HWLOC_TOPOLOGY_FLAG_NO_CPUKINDS);
#endif
#if HWLOC_API_VERSION >= 0x00020100
        if (leave_x86_out)
            h->topology_set_components(hw, HWLOC_TOPOLOGY_COMPONENTS_FLAG_BLACKLIST, "x86");
#endif
        if (topology_configure(h, hw, spec, err, errlen) < 0)
            goto out;
        if (h->topology_load(hw) < 0) {
            nsp__topo_err(err, errlen, "topology \"%s\": hwloc cannot load it: %s", t->spec,
                    strerror(errno));
            goto out;
        }
        if (leave_x86_out && nsp__hwloc_nbobjs(h, hw, grouping_type(t->grouping)) <= 0) {
            h->topology_destroy(hw); /* no core without it (above): again, with it */
            leave_x86_out = 0;
            continue;
        }
        t->thissystem = h->topology_is_thissystem(hw);
        if (build_tables(t, h, hw, err, errlen) < 0 ||
            nsp__topo_build_distances(t, h, hw, err, errlen) < 0)
            goto out;
        rc = 0;
    out:
        h->topology_destroy(hw);
        return rc;
    }
}

nsp_topo_t *nsp_topo_load(const char *spec, nsp_grouping_t grouping, char *err, size_t errlen)
{
    nsp__topo_err(err, errlen, "%s", "");
    if ((unsigned)grouping > NSP_GROUP_L3) {
        nsp__topo_err(err, errlen, "cache grouping %d: not one of pu, core, l2, l3", (int)grouping);
        return NULL;
    }
    struct nsp_topo *t = calloc(1, sizeof *t);
    if (!t) {
        nsp__topo_err(err, errlen, "topology: out of memory");
        return NULL;
    }
    t->spec = strdup(spec && *spec ? spec : "real");
    t->grouping = grouping;
    if (!t->spec) {
        nsp__topo_err(err, errlen, "topology: out of memory");
        nsp_topo_destroy(t);
        return NULL;
    }
    struct nsp__hwloc h;
    if (nsp__hwloc_open(&h, t->spec, err, errlen) < 0) {
        nsp_topo_destroy(t);
        return NULL;
    }
    int rc = load_tables(t, &h, spec, err, errlen);
    /* Nothing of hwloc is referenced from here on: the last user in the process unmaps it,
     * with libudev and libm (docs/host-rounds.md, "Peak RSS"). */
    nsp__hwloc_close(&h);
    if (rc < 0) {
        nsp_topo_destroy(t);
        return NULL;
    }
    /* On a topology that is not this machine an OS cpu number names nothing in it, so threads
     * are spread over its caches instead (DESIGN.md §3, virtual cores). */
    t->virtual_cores = !t->thissystem;
    if (t->virtual_cores && !(t->vtab = nsp__vcore_table_new(t->ncaches))) {
        nsp__topo_err(err, errlen, "topology \"%s\": out of memory", t->spec);
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
    free(t->cache_cpus);
    free(t->pu_present);
    free(t->cache_node);
    free(t->cpu_to_cache);
    free(t->dist);
    free(t->by_dist);
    nsp__vcore_table_put(t->vtab); /* threads still holding a virtual core keep it alive */
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
