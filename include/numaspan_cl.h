/*
 * numaspan_cl.h — the device heap's host API (DESIGN.md §4): a heap inside one OpenCL buffer
 * that kernels allocate from and free into. Library: libnumaspan_cl (links libnumaspan and
 * OpenCL; pkg-config numaspan_cl).
 *
 * Use:
 *   nsp_cl_pick_device(&platform, &device);            // NSP_CL_DEVICE, else a GPU, else any
 *   nsp_cl_heap_t *h = nsp_cl_heap_create(ctx, device, queue, 256 << 20, NULL);
 *   cl_program p = nsp_cl_build(h, my_source, "");     // my_source calls nsp_dmalloc & co.
 *   cl_kernel k = clCreateKernel(p, "my_kernel", &err);
 *   nsp_cl_bind(h, k, 0);                              // the heap is the kernel's argument 0
 *   clEnqueueNDRangeKernel(queue, k, ...);
 *   nsp_cl_sync(h, queue);                             // the ledger's heapLive -> the pacer
 *   nsp_cl_release(h, queue); nsp_cl_sweep(h, queue);  // reconcile: heapLive == live bytes
 *   nsp_cl_stats(h, queue, &st);
 *   nsp_cl_heap_destroy(h);
 *
 * In the kernel (OpenCL C 1.2; the declarations come with nsp_cl_build, nothing to #include):
 *   __kernel void my_kernel(__global nsp_dheap *heap, ...)
 *   nsp_dhandle p = nsp_dmalloc(heap, bytes);           // 0: out of memory
 *   __global int *q = (__global int *)nsp_dptr(heap, p); // valid during this launch
 *   nsp_dfree(heap, p);
 *   nsp_dhandle g = nsp_dmalloc_group(heap, bytes, want, &scratch); // all work-items call it;
 *                                                         // scratch: __local nsp_dgroup
 *   nsp_dhandle z = nsp_dcalloc(heap, n, size);          // zeroed; 0 also if n * size overflows
 *   nsp_dhandle a = nsp_dmalloc_aligned(heap, align, bytes); // align: a power of two <= 4096
 *                                                         // (NSP_DMAX_ALIGN); freed by nsp_dfree
 *   p = nsp_drealloc(heap, p, bytes);                    // C's realloc; size 0 frees (returns 0);
 *                                                         // out of memory: 0, old p still valid
 *   ulong n = nsp_dusable(heap, p);                      // class size or run bytes; 0: not a handle
 * A calloc overflowing or an alignment refused is a "bad request": a null, counted, and named by
 * the next nsp_cl_sync (which then returns -1, as for bad frees).
 * Handles are 64-bit offsets into the heap buffer, valid across launches (a buffer may move
 * between launches; a pointer may not be kept). Sizes up to 8 KiB come from size classes (16-byte
 * aligned objects), larger ones from runs of 64 KiB chunks.
 *
 * Errors: every call returns NULL / -1 on failure, and nsp_cl_error() then says what failed, with
 * the input named (the device, the size, the build log of a kernel that does not compile).
 */
#ifndef NUMASPAN_CL_H
#define NUMASPAN_CL_H

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NSP_CL_API __attribute__((visibility("default")))

typedef struct nsp_cl_heap nsp_cl_heap_t;

/* The last failure of a numaspan_cl call in this thread, as a sentence ("" if none). */
NSP_CL_API const char *nsp_cl_error(void);

/* Picks a device over every platform (never "platform 0"): with NSP_CL_DEVICE set, the first
 * device whose "platform name / device name" contains it (case-insensitive), else the first GPU,
 * else the first device of any kind. Returns 0, or -1 (no match: the error lists the devices). */
NSP_CL_API int nsp_cl_pick_device(cl_platform_id *platform, cl_device_id *device);

typedef struct nsp_cl_heap_opts {
    uint32_t slots;     /* slots per size class (a power of two); 0: one per compute unit (a
                           power of two at least the count), 2..1024, at most one per 4 chunks of
                           the pool. On NVIDIA a group's slot is its SM */
    uint32_t centrals;  /* centrals per size class (a power of two); 0: 4 */
    int accounting;     /* 0 over, 1 under, 2 exact; -1: NSP_ACCOUNTING (default over) */
    const char *name;   /* the heap's pacer node name; NULL: the device's name */
} nsp_cl_heap_opts_t;

/* A heap of `bytes` (header, metadata and pool together) in a new buffer on ctx, initialised on
 * queue (which must belong to device). Fails when the device lacks the int64 atomics or a fence
 * that orders memory across work-groups (NVIDIA's membar.gl, or OpenCL C 2.0+ device-scope
 * fences: the heap's programs are then built -cl-std=CL2.0+, user kernels included), the size is
 * below one chunk plus metadata or above the device's largest buffer, or OpenCL fails. */
NSP_CL_API nsp_cl_heap_t *nsp_cl_heap_create(cl_context ctx, cl_device_id device,
                                             cl_command_queue queue, size_t bytes,
                                             const nsp_cl_heap_opts_t *opts);
/* Empties the heap (every handle becomes invalid), as a freshly created one; the kernels of
 * queue before it must be done with it. */
NSP_CL_API int nsp_cl_heap_reset(nsp_cl_heap_t *h, cl_command_queue queue);
/* Builds `source` together with the device library for the heap's device. options are added to
 * the build's own. On a build failure: NULL, and the error holds the build log. */
NSP_CL_API cl_program nsp_cl_build(nsp_cl_heap_t *h, const char *source, const char *options);
/* Sets argument `arg` of kernel k to the heap. */
NSP_CL_API int nsp_cl_bind(nsp_cl_heap_t *h, cl_kernel k, cl_uint arg);
NSP_CL_API cl_mem nsp_cl_buffer(nsp_cl_heap_t *h);
/* How many bytes the pool holds (the heap's capacity) and how many chunks of 64 KiB. */
NSP_CL_API size_t nsp_cl_capacity(nsp_cl_heap_t *h);

/* After kernels on queue: reads the charge stripes (the device ledger) and hands their sum to
 * the pacer as the heap's node; the counters' baseline for nsp_cl_counters' since_sync. Returns
 * the pacer's advice: NSP_DEVICE_OK; NSP_DEVICE_RECONCILE (above 7/8 of the capacity with the
 * over-estimate of cached spans in it: nsp_cl_reconcile gives the exact figure); NSP_DEVICE_FULL
 * (above 7/8, exact: free, or move to a larger heap; a heap never grows in place, since handles
 * are offsets into its one buffer). Or -1: an OpenCL failure, or, since the last sync, frees of
 * handles the heap never handed out (the error names the first; the heap itself is intact) or
 * bad requests (numbers them). */
NSP_CL_API int nsp_cl_sync(nsp_cl_heap_t *h, cl_command_queue queue);
/* Releases every slot's cached span (the ledger reconciles its charge) — a kernel on queue. */
NSP_CL_API int nsp_cl_release(nsp_cl_heap_t *h, cl_command_queue queue);
/* Sweeps every uncached span: freed objects applied, charges exact, empty spans to the pool. */
NSP_CL_API int nsp_cl_sweep(nsp_cl_heap_t *h, cl_command_queue queue);
/* release + sweep + sync: afterwards the node's heapLive equals the live bytes. */
NSP_CL_API int nsp_cl_reconcile(nsp_cl_heap_t *h, cl_command_queue queue);

#define NSP_CL_NCLASSES 56 /* device size classes: 16 B .. 8 KiB */

typedef struct nsp_cl_class_stats {
    uint32_t size;
    uint64_t objects_in_use;          /* claimed and not freed */
    uint64_t spans_cached, spans_partial, spans_full;
} nsp_cl_class_stats_t;

typedef struct nsp_cl_stats {
    uint64_t capacity;                /* pool bytes */
    uint64_t chunks, chunks_carved, chunks_free, chunks_large;
    int64_t heap_live;                /* the device ledger: sum of the stripes */
    uint64_t bytes_in_use;            /* small objects (class size) + large runs, from bitmaps */
    uint64_t objects_in_use, large_objects, large_bytes;
    uint64_t slot_words;              /* slot words that hold a span (cached spans) */
    uint64_t refills, releases, fresh, reused, steals, reclaims, sweeps;
    uint64_t large_allocs, large_frees;
    uint64_t null_oom;                /* nulls returned, each after the whole heap was searched */
    uint64_t forced_refills;          /* objects taken from a central span past the retry bound */
    uint64_t bad_frees, lost;
    uint64_t bad_requests;            /* nulls for requests no heap can serve (nsp_dcalloc
                                         overflowing, an alignment nsp_dmalloc_aligned refuses) */
    uint64_t first_bad;               /* the first bad handle (valid when bad_frees > 0) */
    int accounting;
    uint32_t slots, centrals;
    int fence_shim;                   /* the ordering shim: NSP_CL_FENCE_MEMBAR (1: NVIDIA's
                                         membar.gl) or NSP_CL_FENCE_DEVICE_SCOPE (2: OpenCL C
                                         2.0+ device-scope fences) */
    char device[128];
    nsp_cl_class_stats_t cls[NSP_CL_NCLASSES];
} nsp_cl_stats_t;

/* The heap's counters, cheap to read: the header and the charge stripes only (a few KiB at any
 * heap size), where nsp_cl_stats copies every span descriptor (~2.4 KB per 64 KiB chunk). All
 * signed, since a difference of heap_live or chunks_free may be negative. */
typedef struct nsp_cl_counters {
    int64_t heap_live;                /* the device ledger: sum of the stripes */
    int64_t chunks_carved, chunks_free;
    int64_t refills, releases, fresh, reused, steals, reclaims, sweeps;
    int64_t large_allocs, large_frees;
    int64_t null_oom, forced_refills;
    int64_t bad_frees, bad_requests, lost, snap_waits;
} nsp_cl_counters_t;

/* Per-launch stats: after the kernels on queue, `now` (may be NULL) gets the counters, and
 * `since_sync` (may be NULL) what changed since the last nsp_cl_sync / nsp_cl_reconcile (or the
 * heap's creation or reset): field by field, now minus its value then. A program that syncs after
 * each launch reads what that launch did. */
NSP_CL_API int nsp_cl_counters(nsp_cl_heap_t *h, cl_command_queue queue, nsp_cl_counters_t *now,
                               nsp_cl_counters_t *since_sync);

/* Reads the heap's metadata after the kernels on queue; exact when no kernel runs. It copies
 * every carved chunk's descriptor (for the per-class figures): for counters use nsp_cl_counters. */
NSP_CL_API int nsp_cl_stats(nsp_cl_heap_t *h, cl_command_queue queue, nsp_cl_stats_t *out);
NSP_CL_API void nsp_cl_stats_print(FILE *out, const nsp_cl_stats_t *st, int json);
/* The ordering shim a heap was built with (nsp_cl_stats_t.fence_shim), and its name. */
#define NSP_CL_FENCE_MEMBAR 1
#define NSP_CL_FENCE_DEVICE_SCOPE 2
NSP_CL_API const char *nsp_cl_fence_name(int fence);
/* Detaches the pacer node and frees the buffer and programs. NULL is ignored. */
NSP_CL_API void nsp_cl_heap_destroy(nsp_cl_heap_t *h);

/* The device library's source as nsp_cl_build prepends it (geometry + allocator), and the
 * build options it uses for the heap's device; for tools that build their own programs. */
NSP_CL_API const char *nsp_cl_library_source(void);
NSP_CL_API const char *nsp_cl_build_options(nsp_cl_heap_t *h);

#ifdef __cplusplus
}
#endif

#endif /* NUMASPAN_CL_H */
