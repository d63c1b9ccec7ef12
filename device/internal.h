/*
 * device/internal.h — the device heap's host side, shared by its files.
 *
 * Layers: error.c (the thread's last error, OpenCL error names), select.c (device choice),
 * program.c (the embedded kernels and the builds), heap.c (create, bind, sync into the pacer,
 * release, sweep, stats, destroy). They use host/ only through the pacer's public interface and
 * the options table's (nsp_option_find: NSP_CL_DEVICE).
 */
#ifndef NSP_DEVICE_INTERNAL_H
#define NSP_DEVICE_INTERNAL_H

#include "numaspan_cl.h"
#include "numaspan_geometry.h"

struct nsp_cl_heap {
    cl_context ctx;
    cl_device_id dev;
    cl_mem buf;
    cl_program ops;             /* the heap's own kernels */
    cl_kernel krelease, ksweep;
    struct nsp_dheap_hdr hdr;   /* the layout, as written at creation */
    int node;                   /* the pacer's device node, or -1 */
    int fence_shim;             /* the ordering shim: NSP_CL_FENCE_MEMBAR or _DEVICE_SCOPE */
    uint64_t bad_seen;          /* bad frees already reported */
    uint64_t bad_req_seen;      /* bad requests already reported */
    nsp_cl_counters_t at_sync;  /* the counters at the last sync (zero at creation and reset) */
    char options[256];          /* build options for this device */
    char name[128], devname[128];
};

/* Sets this thread's error (printf-style); returns -1. */
int nsp__cl_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Appends text to this thread's error. */
void nsp__cl_fail_append(const char *text);
const char *nsp__cl_errname(cl_int err);

/* The embedded sources (written by cmake/embed.cmake at build time). */
extern const char nsp__cl_src_lib[];   /* numaspan_geometry.h + kernels/nsp_dheap.cl */
extern const char nsp__cl_src_ops[];   /* kernels/nsp_dheap_ops.cl */

/* Builds lib + src for h's device; NULL on failure with the build log in the error. */
cl_program nsp__cl_build_with(nsp_cl_heap_t *h, const char *src, const char *src_name,
                              const char *options);
/* The device's name and its platform's, as "platform / device". */
void nsp__cl_describe(cl_device_id dev, char *buf, size_t len);

#endif /* NSP_DEVICE_INTERNAL_H */
