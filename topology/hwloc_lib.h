/*
 * topology/hwloc_lib.h — hwloc, loaded only while a topology is being read (internal to topology/).
 *
 * Owns: the table of the hwloc functions topology/ calls, filled by dlsym from a dlopen of
 * libhwloc (NSP_HWLOC_SONAME) for the length of one nsp_topo_load, and closed again before it
 * returns.
 *
 * Why: libnumaspan.so once had libhwloc as DT_NEEDED, so every process that preloads numaspan kept
 * libhwloc, libudev and libm mapped, ~0.8 MiB of resident pages (issue 11, "Peak RSS" in the
 * README), although the allocator needs hwloc only to read the topology once. Now the tables of
 * topology.h hold everything used afterwards (the cpus of each cache for binding, which cpus
 * exist), and the library is closed: when nothing else in the process uses it the loader unmaps
 * it and its dependencies.
 *
 * Invariants:
 *   - only topology.c and distance.c include this header, and only between nsp__hwloc_open and
 *     nsp__hwloc_close: no hwloc pointer (object, bitmap, topology) outlives the load;
 *   - only hwloc's header-inline functions that call no library symbol may be used directly
 *     (hwloc_get_common_ancestor_obj); every exported one goes through the table, so the library
 *     links without libhwloc (test_no_hwloc_needed checks the DT_NEEDED list);
 *   - each load opens its own handle (the loader counts references): concurrent loads are safe;
 *   - the header's major API version must be the library's (struct hwloc_obj's layout).
 * Called from inside the allocator's initialisation: dlopen and dlsym allocate, which the
 * bootstrap region serves (host/init.c), as it serves hwloc's own ~550 allocations.
 */
#ifndef NSP_TOPOLOGY_HWLOC_LIB_H
#define NSP_TOPOLOGY_HWLOC_LIB_H

#include <hwloc.h>
#include <stddef.h>

/* Each entry has the type of hwloc's own declaration (__typeof__ evaluates nothing: no symbol is
 * referenced, the library is not linked). */
struct nsp__hwloc {
    void *dl;
    __typeof__(&hwloc_get_api_version) get_api_version;
    __typeof__(&hwloc_topology_init) topology_init;
    __typeof__(&hwloc_topology_set_io_types_filter) topology_set_io_types_filter;
    __typeof__(&hwloc_topology_set_cache_types_filter) topology_set_cache_types_filter;
    __typeof__(&hwloc_topology_set_flags) topology_set_flags;
    __typeof__(&hwloc_topology_set_synthetic) topology_set_synthetic;
    __typeof__(&hwloc_topology_set_xml) topology_set_xml;
    __typeof__(&hwloc_topology_load) topology_load;
    __typeof__(&hwloc_topology_is_thissystem) topology_is_thissystem;
    __typeof__(&hwloc_topology_destroy) topology_destroy;
    __typeof__(&hwloc_get_type_depth) get_type_depth;
    __typeof__(&hwloc_get_nbobjs_by_depth) get_nbobjs_by_depth;
    __typeof__(&hwloc_get_obj_by_depth) get_obj_by_depth;
    __typeof__(&hwloc_bitmap_iszero) bitmap_iszero;
    __typeof__(&hwloc_bitmap_isset) bitmap_isset;
    __typeof__(&hwloc_distances_get_by_type) distances_get_by_type;
    __typeof__(&hwloc_distances_release) distances_release;
    /* optional (hwloc 2.1 on): NULL when the library has none, and then not called */
#if HWLOC_API_VERSION >= 0x00020100
    __typeof__(&hwloc_topology_set_components) topology_set_components;
#else
    void *topology_set_components;
#endif
};

/* Opens libhwloc and fills h. Returns 0, or -1 with err naming the library and what failed
 * (not found, a symbol missing, another major API version). spec names the topology asked for. */
int nsp__hwloc_open(struct nsp__hwloc *h, const char *spec, char *err, size_t errlen);
/* Drops this load's reference (the library is unmapped when it was the last). */
void nsp__hwloc_close(struct nsp__hwloc *h);
/* Tests only: the library's file name to open instead of NSP_HWLOC_SONAME (NULL: back to it). */
void nsp__hwloc_set_soname(const char *soname);

/* hwloc's header-inline lookups, through the table (the inline ones call library symbols). */
int nsp__hwloc_nbobjs(const struct nsp__hwloc *h, hwloc_topology_t hw, hwloc_obj_type_t type);
hwloc_obj_t nsp__hwloc_obj(const struct nsp__hwloc *h, hwloc_topology_t hw, hwloc_obj_type_t type,
                           unsigned idx);

/* Distances (distance.c): fills dist, dist_source and by_dist from hw. Returns 0 or -1. */
struct nsp_topo;
int nsp__topo_build_distances(struct nsp_topo *topo, const struct nsp__hwloc *h,
                              hwloc_topology_t hw, char *err, size_t errlen);

#endif /* NSP_TOPOLOGY_HWLOC_LIB_H */
