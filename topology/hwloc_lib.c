/*
 * topology/hwloc_lib.c — opening libhwloc for one topology load, and closing it (hwloc_lib.h).
 *
 * Owns: the dlopen handle and the function table of one load. A missing library, a missing
 * symbol or a library of another major API version is an error naming the library and the
 * problem, never a crash at the first call.
 */
#include "hwloc_lib.h"
#include "topology.h"

#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#ifndef NSP_HWLOC_SONAME
#define NSP_HWLOC_SONAME "libhwloc.so.15"
#endif

static const char *_Atomic soname_override;

void nsp__hwloc_set_soname(const char *soname)
{
    atomic_store(&soname_override, soname);
}


int nsp__hwloc_open(struct nsp__hwloc *h, const char *spec, char *err, size_t errlen)
{
    const char *so = atomic_load(&soname_override);
    if (!so)
        so = NSP_HWLOC_SONAME;
    memset(h, 0, sizeof *h);
    /* RTLD_LOCAL: nothing else in the process resolves against this copy; the plugins that
     * would need hwloc's symbols global are the ones topology.c keeps out. */
    h->dl = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    if (!h->dl) {
        const char *why = dlerror();
        nsp__topo_err(err, errlen,
                "topology \"%s\": numaspan reads topologies with hwloc 2.x, and %s cannot be "
                "loaded: %s (install hwloc's library, e.g. Debian's libhwloc15)",
                spec, so, why ? why : "unknown reason");
        return -1;
    }
    struct { const char *name; void **slot; } syms[] = {
#define NSP_SYM(f) {"hwloc_" #f, (void **)&h->f}
        NSP_SYM(get_api_version),      NSP_SYM(topology_init),
        NSP_SYM(topology_set_io_types_filter), NSP_SYM(topology_set_cache_types_filter),
        NSP_SYM(topology_set_flags),   NSP_SYM(topology_set_synthetic),
        NSP_SYM(topology_set_xml),     NSP_SYM(topology_load),
        NSP_SYM(topology_is_thissystem), NSP_SYM(topology_destroy),
        NSP_SYM(get_type_depth),       NSP_SYM(get_nbobjs_by_depth),
        NSP_SYM(get_obj_by_depth),     NSP_SYM(bitmap_iszero),
        NSP_SYM(bitmap_isset),         NSP_SYM(distances_get_by_type),
        NSP_SYM(distances_release),
#undef NSP_SYM
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        *syms[i].slot = dlsym(h->dl, syms[i].name);
        if (!*syms[i].slot) {
            nsp__topo_err(err, errlen, "topology \"%s\": %s has no symbol %s (not hwloc 2.x?)", spec,
                    so, syms[i].name);
            nsp__hwloc_close(h);
            return -1;
        }
    }
    /* optional: an older 2.x library has none (topology.c then leaves every backend on) */
    *(void **)&h->topology_set_components = dlsym(h->dl, "hwloc_topology_set_components");
    /* struct hwloc_obj and the filters are read through this build's header: the same major
     * version (hwloc keeps its ABI within one) or nothing. */
    unsigned v = h->get_api_version();
    if ((v >> 16) != (HWLOC_API_VERSION >> 16)) {
        nsp__topo_err(err, errlen,
                "topology \"%s\": %s has hwloc API version %#x, numaspan was built for %#x",
                spec, so, v, (unsigned)HWLOC_API_VERSION);
        nsp__hwloc_close(h);
        return -1;
    }
    return 0;
}

void nsp__hwloc_close(struct nsp__hwloc *h)
{
    if (h->dl)
        dlclose(h->dl);
    memset(h, 0, sizeof *h);
}

int nsp__hwloc_nbobjs(const struct nsp__hwloc *h, hwloc_topology_t hw, hwloc_obj_type_t type)
{
    int depth = h->get_type_depth(hw, type);
    if (depth == HWLOC_TYPE_DEPTH_UNKNOWN)
        return 0;
    if (depth == HWLOC_TYPE_DEPTH_MULTIPLE)
        return -1;
    return h->get_nbobjs_by_depth(hw, depth);
}

hwloc_obj_t nsp__hwloc_obj(const struct nsp__hwloc *h, hwloc_topology_t hw, hwloc_obj_type_t type,
                           unsigned idx)
{
    int depth = h->get_type_depth(hw, type);
    if (depth == HWLOC_TYPE_DEPTH_UNKNOWN || depth == HWLOC_TYPE_DEPTH_MULTIPLE)
        return NULL;
    return h->get_obj_by_depth(hw, depth, idx);
}
