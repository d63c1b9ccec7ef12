/*
 * bench/bench_device.c — the device heap's benchmarks (`numaspan bench device`), each case next
 * to three bump kernels on the same device (../shared/BENCHMARKS.md, device cases 1-6 and 9,
 * and the steady state), plus the ordering shim's litmus test and the PTX check for a GPU run.
 *
 *   bench_device [--quick] [--json] [--reps R] [--max-n N] [--heap-mib M] [--slots S]
 *                [--only CASE,..] [--json-out FILE] [--prefetch] [--cl-options OPTS]
 *                                          (--prefetch: the library built -DNSP_PREFETCH, next
 *                                          spans prepared before the current ones run out;
 *                                          --cl-options: more options for the build of the
 *                                          library and the cases, e.g. -DNSP_NO_OBJECT_PREFETCH)
 *   bench_device --litmus [--iters I]      cross-work-group message passing, with/without shim
 *   bench_device --ptx FILE                writes the device binary (PTX on NVIDIA) and counts
 *                                          the 64-bit atomic add, membar.gl and the warp's
 *                                          ballots, shuffles and barriers in it
 * Times are event-profiled kernel times (CL_QUEUE_PROFILING_ENABLE), median of R runs, each run
 * of a case taking the baselines and the heap in turn. The heap is reset before each run (each
 * malloc kernel meets an empty heap), except in the steady case, which times rounds of
 * interleaved frees and mallocs on a heap never reset, beside the same work on a fresh heap.
 *
 * Baselines (issue 13: a baseline must be the strongest one, or the heap looks faster than it
 * is): `bump` is one atom_add per work-item of a size the compiler cannot prove uniform (NVIDIA
 * then does not combine a warp's atomics: kept, labelled unaggregated, and under its old JSON
 * key bump_ms); `warp` makes one atomic per warp (ballot + popc + shfl, and a shuffle scan for
 * mixed sizes, in inline PTX on NVIDIA; sub-group scan + broadcast where the device has
 * cl_khr_subgroups; local aggregation per 32 work-items elsewhere); `group` one per work-group.
 * A row's ratio is against the fastest of the three. Every baseline's first run in a row is
 * checked (disjoint ranges, one for each work-item that asked), so a broken baseline stops the
 * run instead of flattering the heap. Each row carries the heap's counters for its last run
 * (refills, forced, lost, null_oom, steals, reclaims), read with nsp_cl_counters (the header
 * only: nsp_cl_stats would copy every descriptor, ~620 MB for a 16 GiB heap).
 * Device: nsp_cl_pick_device (NSP_CL_DEVICE); exit 77 when there is none. Public API only.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "numaspan.h"
#include "numaspan_cl.h"
#include "numaspan_geometry.h" /* NSP_DCHUNK */

static const char *SRC =
    "static inline uint hash2(uint i, uint round)\n"
    "{\n"
    "    uint x = i * 2654435761u ^ round * 2246822519u; x ^= x >> 15; x *= 2246822519u;\n"
    "    x ^= x >> 13;\n"
    "    return x;\n"
    "}\n"
    "static inline uint bsize(uint i, uint lo, uint hi)\n"
    "{\n"
    "    if (lo == hi) return lo;\n"
    "    return lo + hash2(i, 0u) % (hi - lo + 1u);\n"
    "}\n"
    /* who allocates in a launch, the same rule for the heap and the baselines: mode 0 every
     * work-item below n, 1 work-item 0 of each group, 2 the half a round's coin picks (steady) */
    "static inline uint wants(uint i, uint n, uint mode, uint round)\n"
    "{\n"
    "    if (i >= n) return 0u;\n"
    "    if (mode == 1u) return get_local_id(0) == 0u;\n"
    "    if (mode == 2u) return (hash2(i, round + 1u) >> 7) & 1u;\n"
    "    return 1u;\n"
    "}\n"
    "static inline uint wsize(uint i, uint lo, uint hi, uint mode, uint round)\n"
    "{\n"
    "    return bsize(mode == 2u ? i ^ hash2(round, 7u) : i, lo, hi);\n"
    "}\n"
    "__kernel void k_malloc(__global nsp_dheap *h, uint n, uint lo, uint hi, uint mode,\n"
    "                       __global ulong *out, __global uint *nulls)\n"
    "{\n"
    "    uint i = (uint)get_global_id(0);\n"
    "    if (!wants(i, n, mode, 0u)) return;\n"
    "    nsp_dhandle p = nsp_dmalloc(h, bsize(i, lo, hi));\n"
    "    out[i] = p;\n"
    "    if (p) *(__global ulong *)nsp_dptr(h, p) = i; else atomic_inc(nulls);\n"
    "}\n"
    "__kernel void k_group(__global nsp_dheap *h, uint n, uint size, __global ulong *out,\n"
    "                      __global uint *nulls)\n"
    "{\n"
    "    __local nsp_dgroup g;\n"
    "    uint i = (uint)get_global_id(0);\n"
    "    nsp_dhandle p = nsp_dmalloc_group(h, size, i < n, &g);\n"
    "    if (i >= n) return;\n"
    "    out[i] = p;\n"
    "    if (p) *(__global ulong *)nsp_dptr(h, p) = i; else atomic_inc(nulls);\n"
    "}\n"
    "__kernel void k_free(__global nsp_dheap *h, uint n, __global const ulong *hs)\n"
    "{\n"
    "    uint i = (uint)get_global_id(0);\n"
    "    if (i < n) nsp_dfree(h, hs[i]);\n"
    "}\n"
    /* the steady state: the work-items a round picks free the object they hold (if any) and
     * allocate a new one of a new size, all in one launch, so frees and mallocs interleave in
     * spans that are partly used; nothing resets the heap between rounds */
    "__kernel void k_steady(__global nsp_dheap *h, uint n, uint lo, uint hi, uint round,\n"
    "                       __global ulong *hs, __global uint *nulls)\n"
    "{\n"
    "    uint i = (uint)get_global_id(0);\n"
    "    if (!wants(i, n, 2u, round)) return;\n"
    "    nsp_dfree(h, hs[i]);\n"
    "    nsp_dhandle p = nsp_dmalloc(h, wsize(i, lo, hi, 2u, round));\n"
    "    hs[i] = p;\n"
    "    if (p) *(__global ulong *)nsp_dptr(h, p) = i; else atomic_inc(nulls);\n"
    "}\n"
    /* ---- the baselines: bump allocators over a plain pool, each writing the same word into
     * its allocation as the heap's kernels do ---- */
    "static inline void bump_done(__global uchar *pool, ulong cap, ulong p, uint s, uint i,\n"
    "                             __global ulong *out, __global uint *nulls)\n"
    "{\n"
    "    if (p + s <= cap) { *(__global ulong *)(pool + p) = i; out[i] = p + 1; }\n"
    "    else { out[i] = 0; atomic_inc(nulls); }\n"
    "}\n"
    /* the unaggregated bump: one atom_add per work-item of a size the compiler cannot prove
     * uniform; NVIDIA's OpenCL compiler then does not combine a warp's atomics (0.78 ms for
     * 2^20 x 16 B on the H200 against 0.032 ms for a uniform one): kept, labelled, as history */
    "__kernel void k_bump(__global ulong *ctr, __global uchar *pool, ulong cap, uint n, uint lo,\n"
    "                     uint hi, uint mode, uint round, __global ulong *out,\n"
    "                     __global uint *nulls)\n"
    "{\n"
    "    uint i = (uint)get_global_id(0);\n"
    "    if (!wants(i, n, mode, round)) return;\n"
    "    uint s = (wsize(i, lo, hi, mode, round) + 15u) & ~15u;\n"
    "    bump_done(pool, cap, atom_add(ctr, (ulong)s), s, i, out, nulls);\n"
    "}\n"
    /* Work-group-local aggregation: the work-items of each run of `lanes` (32: a warp's worth;
     * the group size: one atomic per group) add their sizes into a local counter, one of them
     * takes the run's total from the global counter, and each adds its offset. Every work-item
     * of the group must call it (barriers). */
    "static inline ulong bump_local(__global ulong *ctr, uint s, uint lanes,\n"
    "                               __local uint *cnt, __local ulong *base)\n"
    "{\n"
    "    uint lid = (uint)get_local_id(0), b = lid / lanes;\n"
    "    if (lid % lanes == 0u) cnt[b] = 0u;\n"
    "    barrier(CLK_LOCAL_MEM_FENCE);\n"
    "    uint ex = s ? atomic_add(&cnt[b], s) : 0u;\n"
    "    barrier(CLK_LOCAL_MEM_FENCE);\n"
    "    if (lid % lanes == 0u) base[b] = cnt[b] ? atom_add(ctr, (ulong)cnt[b]) : 0ul;\n"
    "    barrier(CLK_LOCAL_MEM_FENCE);\n"
    "    return base[b] + ex;\n"
    "}\n"
    /* The warp/sub-group-aggregated bump, the strongest per-work-item baseline: one atomic per
     * warp. On NVIDIA (the heap's own test for inline PTX): a ballot + popcount + shuffle for
     * a uniform size, a shuffle scan for mixed sizes. Where the device has sub-groups: their
     * scan and broadcast. Elsewhere: local aggregation per 32 lanes. All lanes call it with
     * s = 0 for those that do not allocate (usize: the uniform size, 0 when sizes differ). */
    "#if defined(cl_nv_pragma_unroll) && defined(NSP_FENCE_MEMBAR)\n"
    "#define NSP_BENCH_WARP 1\n"
    "static inline ulong bump_warp(__global ulong *ctr, uint s, uint usize,\n"
    "                              __local uint *cnt, __local ulong *base)\n"
    "{\n"
    "    uint active = 0xffffffffu, lane, lt, ex, total, src, lo32, hi32;\n"
    /* every lane of every warp gets here (no return before the call), so the .sync operations
     * can name the whole warp: they then wait for lanes that have not reconverged, where
     * activemask would leave them out; a group that is not whole warps cannot promise that */
    "    if (get_local_size(0) & 31u)\n"
    "        return s ? atom_add(ctr, (ulong)s) : 0ul;\n"
    "    asm volatile(\"mov.u32 %0, %%laneid;\" : \"=r\"(lane));\n"
    "    if (usize) {\n"
    "        uint b;\n"
    "        asm volatile(\"{ .reg .pred p; setp.ne.u32 p, %1, 0; vote.sync.ballot.b32 %0, p, %2; }\"\n"
    "                     : \"=r\"(b) : \"r\"(s), \"r\"(active));\n"
    "        if (!b) return 0ul;\n"
    "        asm volatile(\"mov.u32 %0, %%lanemask_lt;\" : \"=r\"(lt));\n"
    "        ex = popcount(b & lt) * usize;\n"
    "        total = popcount(b) * usize;\n"
    "        src = 31u - clz(b & (0u - b));\n"
    "    } else {\n"
    "        uint x = s, y;\n"
    "        for (uint d = 1u; d < 32u; d <<= 1) {\n"
    "            asm volatile(\"shfl.sync.up.b32 %0, %1, %2, 0, %3;\"\n"
    "                         : \"=r\"(y) : \"r\"(x), \"r\"(d), \"r\"(active));\n"
    "            if (lane >= d) x += y;\n"
    "        }\n"
    "        ex = x - s;\n"
    "        src = 31u;\n"
    "        asm volatile(\"shfl.sync.idx.b32 %0, %1, %2, 0x1f, %3;\"\n"
    "                     : \"=r\"(total) : \"r\"(x), \"r\"(src), \"r\"(active));\n"
    "        if (!total) return 0ul;\n"
    "    }\n"
    "    ulong w = 0ul;\n"
    "    if (lane == src) w = atom_add(ctr, (ulong)total);\n"
    "    asm volatile(\"shfl.sync.idx.b32 %0, %1, %2, 0x1f, %3;\"\n"
    "                 : \"=r\"(lo32) : \"r\"((uint)w), \"r\"(src), \"r\"(active));\n"
    "    asm volatile(\"shfl.sync.idx.b32 %0, %1, %2, 0x1f, %3;\"\n"
    "                 : \"=r\"(hi32) : \"r\"((uint)(w >> 32)), \"r\"(src), \"r\"(active));\n"
    "    return (((ulong)hi32 << 32) | lo32) + ex;\n"
    "}\n"
    "#elif defined(cl_khr_subgroups)\n"
    "#pragma OPENCL EXTENSION cl_khr_subgroups : enable\n"
    "#define NSP_BENCH_WARP 2\n"
    "static inline ulong bump_warp(__global ulong *ctr, uint s, uint usize,\n"
    "                              __local uint *cnt, __local ulong *base)\n"
    "{\n"
    "    uint ex = sub_group_scan_exclusive_add(s), total = sub_group_reduce_add(s);\n"
    "    ulong w = 0ul;\n"
    "    if (get_sub_group_local_id() == 0u && total) w = atom_add(ctr, (ulong)total);\n"
    "    return sub_group_broadcast(w, 0u) + ex;\n"
    "}\n"
    "#else\n"
    "#define NSP_BENCH_WARP 3\n"
    "static inline ulong bump_warp(__global ulong *ctr, uint s, uint usize,\n"
    "                              __local uint *cnt, __local ulong *base)\n"
    "{\n"
    "    return bump_local(ctr, s, 32u, cnt, base);\n"
    "}\n"
    "#endif\n"
    "__kernel void k_variant(__global uint *v) { v[0] = NSP_BENCH_WARP; }\n"
    /* two kernels, not one with a flag: a barrier under a condition (even a uniform one) is
     * what some compilers handle worst */
    "#define BUMP_AGG(name, call)                                                      \\\n"
    "__kernel void name(__global ulong *ctr, __global uchar *pool, ulong cap, uint n,  \\\n"
    "                   uint lo, uint hi, uint mode, uint round,                        \\\n"
    "                   __global ulong *out, __global uint *nulls)                      \\\n"
    "{                                                                                  \\\n"
    "    __local uint cnt[32];                                                          \\\n"
    "    __local ulong base[32];                                                        \\\n"
    "    uint i = (uint)get_global_id(0), w = wants(i, n, mode, round);                 \\\n"
    "    uint s = w ? (wsize(i, lo, hi, mode, round) + 15u) & ~15u : 0u;                \\\n"
    "    uint usize = lo == hi ? (lo + 15u) & ~15u : 0u;                                \\\n"
    "    ulong p = call;                                                                \\\n"
    "    if (w) bump_done(pool, cap, p, s, i, out, nulls);                              \\\n"
    "}\n"
    "BUMP_AGG(k_bump_warp, bump_warp(ctr, s, usize, cnt, base))\n"
    "BUMP_AGG(k_bump_group, bump_local(ctr, s, (uint)get_local_size(0), cnt, base))\n"
    "__kernel void k_fill(__global nsp_dheap *h, uint size, uint max_each, __global ulong *got)\n"
    "{\n"
    "    ulong n = 0;\n"
    "    for (uint k = 0; k < max_each; k++) {\n"
    "        nsp_dhandle p = nsp_dmalloc(h, size);\n"
    "        if (!p) break;\n"
    "        *(__global ulong *)nsp_dptr(h, p) = k;\n"
    "        n += size;\n"
    "    }\n"
    "    atom_add(got, n);\n"
    "}\n"
    "__kernel void k_frag(__global nsp_dheap *h, uint n, uint round, __global ulong *hs,\n"
    "                     __global uint *sz)\n"
    "{\n"
    "    uint i = (uint)get_global_id(0);\n"
    "    if (i >= n) return;\n"
    "    uint x = (i * 2654435761u) ^ (round * 2246822519u); x ^= x >> 13; x *= 3266489917u;\n"
    "    x ^= x >> 16;\n"
    "    nsp_dhandle p = hs[i];\n"
    "    if (p && (x & 1u)) { nsp_dfree(h, p); p = 0; }\n"
    "    if (!p) { uint s = 16u + (x >> 8) % 241u; p = nsp_dmalloc(h, s); sz[i] = p ? s : 0u; }\n"
    "    hs[i] = p;\n"
    "}\n"
    /* cross-work-group message passing: even groups write data then flag, odd groups read flag
     * then data; data older than its flag is a failure of the ordering */
    "__kernel void k_mp(__global uint *data, __global uint *flag, __global uint *fails,\n"
    "                   uint iters, uint fenced)\n"
    "{\n"
    "    if (get_local_id(0) != 0) return;\n"
    "    uint g = (uint)get_group_id(0), pair = g / 2u;\n"
    "    volatile __global uint *d = data + pair * 32u, *f = flag + pair * 32u;\n"
    "    if ((g & 1u) == 0u) {\n"
    "        for (uint it = 1; it <= iters; it++) {\n"
    "            *d = it;\n"
    "            if (fenced) NSP_FENCE();\n"
    "            *f = it;\n"
    "        }\n"
    "    } else {\n"
    "        uint bad = 0;\n"
    "        for (uint it = 0; it < iters * 2u; it++) {\n"
    "            uint fv = *f;\n"
    "            if (fenced) NSP_FENCE();\n"
    "            uint dv = *d;\n"
    "            if (dv < fv) bad++;\n"
    "        }\n"
    "        if (bad) atomic_add(fails, bad);\n"
    "    }\n"
    "}\n";

static cl_context ctx;
static cl_device_id dev;
static cl_command_queue q;
static cl_program prog;
static nsp_cl_heap_t *heap;
static int json, reps = 5, quick, is_gpu;
static int prefetch; /* --prefetch: the heap's library built with -DNSP_PREFETCH */
static int frag_detail; /* --frag-detail: where the fragmentation case's chunks are, per class */
static const char *cl_options = ""; /* --cl-options: more build options (e.g. -DNSP_NO_...) */
static int failures; /* baselines that failed their check: the exit status is 1 */
static size_t wg = 256;

static void die(const char *what, const char *why)
{
    fprintf(stderr, "bench_device: %s: %s\n", what, why);
    exit(1);
}
#define CK(call)                                                                              \
    do {                                                                                      \
        cl_int e_ = (call);                                                                   \
        if (e_ != CL_SUCCESS) {                                                               \
            fprintf(stderr, "bench_device: %s failed (%d) at line %d\n", #call, e_, __LINE__); \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

static double wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmpd);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static cl_mem buf(size_t bytes)
{
    cl_int err;
    cl_mem m = clCreateBuffer(ctx, CL_MEM_READ_WRITE, bytes ? bytes : 8, NULL, &err);
    if (!m)
        die("clCreateBuffer", "out of device memory");
    return m;
}
static void zero(cl_mem m, size_t bytes)
{
    static const cl_uint z = 0;
    CK(clEnqueueFillBuffer(q, m, &z, 4, 0, bytes, 0, NULL, NULL));
}

/* Launches k over n work-items (rounded up to the group size); returns its time in ms. */
static double run(cl_kernel k, size_t n)
{
    size_t local = wg, global = (n + local - 1) / local * local;
    cl_event ev;
    CK(clEnqueueNDRangeKernel(q, k, 1, NULL, &global, &local, 0, NULL, &ev));
    CK(clWaitForEvents(1, &ev));
    cl_ulong t0, t1;
    CK(clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_START, sizeof t0, &t0, NULL));
    CK(clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL));
    clReleaseEvent(ev);
    return (t1 - t0) * 1e-6;
}

static cl_kernel kern(const char *name)
{
    cl_int err;
    cl_kernel k = clCreateKernel(prog, name, &err);
    if (!k)
        die(name, "clCreateKernel failed");
    return k;
}

#define ARG(k, i, v) CK(clSetKernelArg(k, i, sizeof(v), &(v)))

/* The heap's counters that explain a row (refills, objects forced from a central past the retry
 * bound, claims lost to a rebuilt span, nulls after a whole-heap search, steals, reclaims),
 * over the row's last run (steady: its last round): read through nsp_cl_counters, as deltas. */
struct ctrs {
    unsigned long long refills, forced, lost, null_oom, steals, reclaims;
};

/* One row. Times are medians in ms. bump_ms is the unaggregated bump, kept under its old key
 * so that committed runs stay comparable; warp_ms and group_ms are the aggregated bumps. A
 * row's ratio is taken against the fastest of the three, the strongest baseline (0: the case has
 * no baseline). */
struct row {
    const char *cas;
    unsigned n;
    unsigned lo, hi;
    double malloc_ms, free_ms, bump_ms, warp_ms, group_ms;
    double fresh_malloc_ms, fresh_free_ms; /* steady: the same work on a fresh heap */
    double usable;   /* percent, or -1 */
    unsigned long long nulls;
    double extra;    /* case-specific (fragmentation ratio, init ms, steady / fresh, oom: ms to the
                        null on the full heap) */
    struct ctrs c;
};
static struct row rows[512];
static int nrows;
static int first_json = 1;

static FILE *jout; /* --json-out: the rows as JSON beside the table */
static int first_jout = 1;

/* The strongest baseline of a row: the fastest of the three bumps measured beside it (on NVIDIA
 * an aggregated one; on a CPU device the unaggregated one can win), its time and its name
 * ("" and 0 when the case has none). */
static double best_baseline(const struct row *r, const char **name)
{
    const double t[3] = {r->bump_ms, r->warp_ms, r->group_ms};
    static const char *names[3] = {"bump", "bump-warp", "bump-group"};
    double best = 0;
    *name = "";
    for (int j = 0; j < 3; j++)
        if (t[j] > 0 && (best == 0 || t[j] < best)) {
            best = t[j];
            *name = names[j];
        }
    return best;
}

static void json_row(FILE *f, int *first, const struct row *r, double aps, double ratio)
{
    const char *bname;
    double best = best_baseline(r, &bname);
    fprintf(f, "%s{\"case\": \"%s\", \"n\": %u, \"size_lo\": %u, \"size_hi\": %u, "
               "\"malloc_ms\": %.6f, \"free_ms\": %.6f, \"bump_ms\": %.6f, \"allocs_per_s\": %.4g, "
               "\"ratio_to_bump\": %.3f, \"bump_warp_ms\": %.6f, \"bump_group_ms\": %.6f, "
               "\"baseline\": \"%s\", \"baseline_ms\": %.6f, \"ratio_to_baseline\": %.3f, "
               "\"fresh_malloc_ms\": %.6f, \"fresh_free_ms\": %.6f, "
               "\"usable_pct\": %.2f, \"spurious_nulls\": %llu, \"extra\": %.4f, "
               "\"refills\": %llu, \"forced_refills\": %llu, \"lost\": %llu, \"null_oom\": %llu, "
               "\"steals\": %llu, \"reclaims\": %llu}",
            *first ? "" : ",\n", r->cas, r->n, r->lo, r->hi, r->malloc_ms, r->free_ms, r->bump_ms,
            aps, ratio, r->warp_ms, r->group_ms, bname, best,
            best > 0 ? r->malloc_ms / best : 0, r->fresh_malloc_ms, r->fresh_free_ms, r->usable,
            r->nulls, r->extra, r->c.refills, r->c.forced, r->c.lost, r->c.null_oom, r->c.steals,
            r->c.reclaims);
    *first = 0;
}

static void emit(const struct row *r)
{
    double aps = r->malloc_ms > 0 ? r->n / (r->malloc_ms * 1e-3) : 0;
    double ratio = r->bump_ms > 0 ? r->malloc_ms / r->bump_ms : 0;
    if (jout)
        json_row(jout, &first_jout, r, aps, ratio);
    if (json) {
        json_row(stdout, &first_json, r, aps, ratio);
    } else {
        char sz[32], use[16] = "-", x[16] = "-";
        if (r->lo == r->hi)
            snprintf(sz, sizeof sz, "%u", r->lo);
        else
            snprintf(sz, sizeof sz, "%u-%u", r->lo, r->hi);
        if (r->usable >= 0)
            snprintf(use, sizeof use, "%.1f", r->usable);
        const char *bname;
        double best = best_baseline(r, &bname);
        if (best > 0)
            snprintf(x, sizeof x, "%.2f%c", r->malloc_ms / best, bname[4] ? bname[5] : 'b');
        printf("%-14s %8u %10s %9.4f %9.4f %9.4f %9.4f %9.4f %8s %7s %6llu %8llu %7llu %5llu",
               r->cas, r->n, sz, r->malloc_ms, r->free_ms, r->bump_ms, r->warp_ms, r->group_ms, x,
               use, r->nulls, r->c.refills, r->c.forced, r->c.lost);
        if (r->extra)
            printf("  %.3f", r->extra);
        printf("\n");
    }
    fflush(stdout);
}

static nsp_cl_stats_t stats(void)
{
    nsp_cl_stats_t st;
    if (nsp_cl_stats(heap, q, &st) < 0)
        die("nsp_cl_stats", nsp_cl_error());
    return st;
}

/* The heap's counters: the header and the stripes only, cheap at any heap size. */
static nsp_cl_counters_t counters(nsp_cl_heap_t *h)
{
    nsp_cl_counters_t c;
    if (nsp_cl_counters(h, q, &c, NULL) < 0)
        die("nsp_cl_counters", nsp_cl_error());
    return c;
}

static struct ctrs ctrs_since(const nsp_cl_counters_t *a, const nsp_cl_counters_t *b)
{
    return (struct ctrs){(unsigned long long)(b->refills - a->refills),
                         (unsigned long long)(b->forced_refills - a->forced_refills),
                         (unsigned long long)(b->lost - a->lost),
                         (unsigned long long)(b->null_oom - a->null_oom),
                         (unsigned long long)(b->steals - a->steals),
                         (unsigned long long)(b->reclaims - a->reclaims)};
}

/* ---- the baselines ------------------------------------------------------------------------ */

/* The kernels' size and participation rules, on the host, to check what a baseline handed out. */
static uint32_t hash2(uint32_t i, uint32_t round)
{
    uint32_t x = i * 2654435761u ^ round * 2246822519u;
    x ^= x >> 15;
    x *= 2246822519u;
    return x ^ (x >> 13);
}
static uint32_t bsize(uint32_t i, uint32_t lo, uint32_t hi)
{
    return lo == hi ? lo : lo + hash2(i, 0) % (hi - lo + 1u);
}
static int wants(uint32_t i, uint32_t n, uint32_t mode, uint32_t round)
{
    if (i >= n)
        return 0;
    if (mode == 1)
        return i % wg == 0;
    if (mode == 2)
        return (hash2(i, round + 1u) >> 7) & 1u;
    return 1;
}
static uint32_t wsize(uint32_t i, uint32_t lo, uint32_t hi, uint32_t mode, uint32_t round)
{
    return bsize(mode == 2 ? i ^ hash2(round, 7u) : i, lo, hi);
}

struct span_ {
    uint64_t lo, hi;
};
static int cmpspan(const void *a, const void *b)
{
    const struct span_ *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* A baseline that hands out overlapping ranges, or none to a work-item that asked, would make
 * every ratio a lie: its first run of each row is checked (handles are offset + 1). A failure is
 * said, the baseline left out of the row (time 0) and the run's exit status made 1, but the run
 * goes on: on a GPU lent for minutes, one wrong baseline must not cost the other numbers. */
static int check_baseline(const char *name, cl_mem hs, unsigned n, unsigned lo, unsigned hi,
                           unsigned mode, unsigned round)
{
    uint64_t *h = malloc((size_t)n * 8);
    struct span_ *s = malloc((size_t)n * sizeof *s);
    if (!h || !s)
        die(name, "out of host memory for the baseline's check");
    CK(clEnqueueReadBuffer(q, hs, CL_TRUE, 0, (size_t)n * 8, h, 0, NULL, NULL));
    size_t k = 0;
    int rc = 0;
    for (unsigned i = 0; i < n && rc == 0; i++) {
        if (!wants(i, n, mode, round))
            continue;
        if (!h[i]) {
            fprintf(stderr, "bench_device: %s: work-item %u got no allocation\n", name, i);
            rc = -1;
            break;
        }
        s[k++] = (struct span_){h[i] - 1, h[i] - 1 + ((wsize(i, lo, hi, mode, round) + 15) & ~15u)};
    }
    qsort(s, k, sizeof *s, cmpspan);
    for (size_t j = 1; j < k && rc == 0; j++)
        if (s[j].lo < s[j - 1].hi) {
            fprintf(stderr, "bench_device: %s handed out overlapping ranges [%llu, %llu) and "
                            "[%llu, %llu) (%u work-items, sizes %u-%u)\n", name,
                    (unsigned long long)s[j - 1].lo, (unsigned long long)s[j - 1].hi,
                    (unsigned long long)s[j].lo, (unsigned long long)s[j].hi, n, lo, hi);
            rc = -1;
        }
    free(h);
    free(s);
    if (rc < 0) {
        fprintf(stderr, "bench_device: %s is left out of this row\n", name);
        failures++;
    }
    return rc;
}

/* The three bump kernels over one pool, for one shape of launch (mode and round as the kernels
 * read them); `run_bumps` times each once, checking them on the first call. */
struct bumps {
    cl_kernel k[3]; /* unaggregated, warp-aggregated, group-aggregated */
    cl_mem ctr, pool, hs, nulls;
    unsigned n, lo, hi, mode;
    int checked, bad[3];
};
static const char *bump_names[3] = {"k_bump", "k_bump_warp", "k_bump_group"};

static void bumps_init(struct bumps *b, unsigned n, unsigned lo, unsigned hi, unsigned mode,
                       cl_mem hs, cl_mem nulls)
{
    unsigned long long want = (unsigned long long)n * ((hi + 15) & ~15u);
    size_t cap = nsp_cl_capacity(heap);
    size_t pool_bytes = want + (1 << 20) < cap ? want + (1 << 20) : cap;
    *b = (struct bumps){.ctr = buf(8), .pool = buf(pool_bytes), .hs = hs, .nulls = nulls, .n = n,
                        .lo = lo, .hi = hi, .mode = mode};
    cl_ulong capb = pool_bytes;
    cl_uint un = n, ulo = lo, uhi = hi, um = mode;
    for (int j = 0; j < 3; j++) {
        cl_kernel k = b->k[j] = kern(bump_names[j]);
        ARG(k, 0, b->ctr); ARG(k, 1, b->pool); ARG(k, 2, capb); ARG(k, 3, un); ARG(k, 4, ulo);
        ARG(k, 5, uhi); ARG(k, 6, um); ARG(k, 8, hs); ARG(k, 9, nulls);
    }
}

static void run_bumps(struct bumps *b, unsigned round, double t[3])
{
    cl_uint r = round;
    for (int j = 0; j < 3; j++) {
        t[j] = 0;
        if (b->bad[j])
            continue;
        ARG(b->k[j], 7, r);
        zero(b->ctr, 8);
        if (!b->checked)
            zero(b->hs, (size_t)b->n * 8);
        t[j] = run(b->k[j], b->n);
        if (!b->checked && check_baseline(bump_names[j], b->hs, b->n, b->lo, b->hi, b->mode,
                                          round) < 0) {
            b->bad[j] = 1;
            t[j] = 0;
        }
    }
    b->checked = 1;
}

static void bumps_done(struct bumps *b)
{
    for (int j = 0; j < 3; j++)
        clReleaseKernel(b->k[j]);
    clReleaseMemObject(b->ctr);
    clReleaseMemObject(b->pool);
}

/* ---- the cases ----------------------------------------------------------------------------- */

/* Cases 1-4: n allocations of sizes [lo, hi] (mode 1: one per group), malloc then free, beside
 * the three bumps (A B C D A B C D ...); median over reps, the heap reset before each. */
static void alloc_case(const char *name, unsigned n, unsigned lo, unsigned hi, unsigned mode,
                       int group_entry)
{
    cl_kernel km = kern(group_entry ? "k_group" : "k_malloc"), kf = kern("k_free");
    cl_mem hs = buf((size_t)n * 8), nulls = buf(4);
    cl_uint un = n, ulo = lo, uhi = hi, um = mode;
    cl_mem hb = nsp_cl_buffer(heap);
    if (group_entry) {
        ARG(km, 0, hb); ARG(km, 1, un); ARG(km, 2, ulo); ARG(km, 3, hs); ARG(km, 4, nulls);
    } else {
        ARG(km, 0, hb); ARG(km, 1, un); ARG(km, 2, ulo); ARG(km, 3, uhi); ARG(km, 4, um);
        ARG(km, 5, hs); ARG(km, 6, nulls);
    }
    ARG(kf, 0, hb); ARG(kf, 1, un); ARG(kf, 2, hs);
    struct bumps b;
    bumps_init(&b, n, lo, hi, mode, hs, nulls);
    double tm[64], tf[64], tb[3][64];
    unsigned long long nn = 0;
    nsp_cl_counters_t s0 = {0}, s1 = {0};
    for (int r = 0; r < reps; r++) {
        double t[3];
        run_bumps(&b, 0, t);
        for (int j = 0; j < 3; j++)
            tb[j][r] = t[j];
        if (nsp_cl_heap_reset(heap, q) < 0)
            die("nsp_cl_heap_reset", nsp_cl_error());
        zero(hs, (size_t)n * 8);
        zero(nulls, 4);
        if (r == reps - 1)
            s0 = counters(heap);
        tm[r] = run(km, n);
        cl_uint got = 0;
        CK(clEnqueueReadBuffer(q, nulls, CL_TRUE, 0, 4, &got, 0, NULL, NULL));
        nn += got;
        tf[r] = run(kf, n);
    }
    s1 = counters(heap);
    struct row *row = &rows[nrows++];
    *row = (struct row){name, mode == 1 ? (n + (unsigned)wg - 1) / (unsigned)wg : n, lo, hi,
                        median(tm, reps), median(tf, reps), median(tb[0], reps),
                        median(tb[1], reps), median(tb[2], reps), 0, 0, -1,
                        nn / (unsigned long long)reps, 0, ctrs_since(&s0, &s1)};
    if (s1.bad_frees)
        die(name, "the free kernel made bad frees");
    emit(row);
    bumps_done(&b);
    clReleaseKernel(km);
    clReleaseKernel(kf);
    clReleaseMemObject(hs);
    clReleaseMemObject(nulls);
}

/* Two live handles alike: the heap handed one object out twice. */
static void check_distinct(const char *name, cl_mem hs, unsigned n)
{
    uint64_t *h = malloc((size_t)n * 8);
    struct span_ *s = malloc((size_t)n * sizeof *s);
    if (!h || !s)
        die(name, "out of host memory for the check");
    CK(clEnqueueReadBuffer(q, hs, CL_TRUE, 0, (size_t)n * 8, h, 0, NULL, NULL));
    size_t k = 0;
    for (unsigned i = 0; i < n; i++)
        if (h[i])
            s[k++] = (struct span_){h[i], i};
    qsort(s, k, sizeof *s, cmpspan);
    for (size_t j = 1; j < k; j++)
        if (s[j].lo == s[j - 1].lo) {
            fprintf(stderr, "bench_device: %s: handle 0x%llx held by work-items %llu and %llu\n",
                    name, (unsigned long long)s[j].lo, (unsigned long long)s[j - 1].hi,
                    (unsigned long long)s[j].hi);
            exit(1);
        }
    free(h);
    free(s);
}

/* The steady state: n work-items each hold an object; every round the half that a coin picks
 * frees its object and allocates one of a new size in [lo, hi], in one launch (frees and mallocs
 * interleave), and nothing resets the heap: claims meet partly used spans and the centrals'
 * scans. Timed after `warm` rounds. Fresh: the same launches on a reset heap, where the picked
 * work-items hold nothing and only allocate, then a free kernel of what they got: the same
 * mallocs and frees as a steady round, on an empty heap. Beside both, the bumps of the same
 * allocations. Afterwards the live handles must be distinct. */
static void steady_case(unsigned n, unsigned lo, unsigned hi, unsigned warm)
{
    cl_kernel ks = kern("k_steady"), kf = kern("k_free");
    cl_mem hs = buf((size_t)n * 8), nulls = buf(4), hb = nsp_cl_buffer(heap);
    cl_uint un = n, ulo = lo, uhi = hi;
    ARG(ks, 0, hb); ARG(ks, 1, un); ARG(ks, 2, ulo); ARG(ks, 3, uhi); ARG(ks, 5, hs);
    ARG(ks, 6, nulls);
    ARG(kf, 0, hb); ARG(kf, 1, un); ARG(kf, 2, hs);
    struct bumps b;
    bumps_init(&b, n, lo, hi, 2, hs, nulls);
    double tfm[64], tff[64], ts[64], tb[3][64];
    for (int r = 0; r < reps; r++) {
        cl_uint round = warm + (cl_uint)r;
        double t[3];
        run_bumps(&b, round, t);
        for (int j = 0; j < 3; j++)
            tb[j][r] = t[j];
        if (nsp_cl_heap_reset(heap, q) < 0)
            die("nsp_cl_heap_reset", nsp_cl_error());
        zero(hs, (size_t)n * 8);
        ARG(ks, 4, round);
        tfm[r] = run(ks, n);
        tff[r] = run(kf, n);
    }
    if (nsp_cl_heap_reset(heap, q) < 0)
        die("nsp_cl_heap_reset", nsp_cl_error());
    zero(hs, (size_t)n * 8);
    zero(nulls, 4);
    nsp_cl_counters_t s0 = {0}, s1 = {0};
    for (cl_uint round = 0; round < warm + (cl_uint)reps; round++) {
        if (round == warm) /* nulls of the warm-up are the fill's, not the steady state's */
            zero(nulls, 4);
        if (round == warm + (cl_uint)reps - 1)
            s0 = counters(heap);
        ARG(ks, 4, round);
        double t = run(ks, n);
        if (round >= warm)
            ts[round - warm] = t;
    }
    s1 = counters(heap);
    cl_uint got = 0;
    CK(clEnqueueReadBuffer(q, nulls, CL_TRUE, 0, 4, &got, 0, NULL, NULL));
    check_distinct("steady", hs, n);
    if (s1.bad_frees)
        die("steady", "the steady rounds made bad frees");
    double steady = median(ts, reps), fm = median(tfm, reps), ff = median(tff, reps);
    struct row *row = &rows[nrows++];
    *row = (struct row){"steady", n, lo, hi, steady, 0, median(tb[0], reps), median(tb[1], reps),
                        median(tb[2], reps), fm, ff, -1, got / (unsigned long long)reps,
                        fm + ff > 0 ? steady / (fm + ff) : 0, ctrs_since(&s0, &s1)};
    emit(row);
    if (!json)
        printf("%-14s a round (the picked half frees and mallocs, after %u rounds, no reset): "
               "%.4f ms; on a fresh heap malloc %.4f + free %.4f ms; steady / fresh %.2f\n", "",
               warm, steady, fm, ff, row->extra);
    bumps_done(&b);
    clReleaseKernel(ks);
    clReleaseKernel(kf);
    clReleaseMemObject(hs);
    clReleaseMemObject(nulls);
}

/* Case 6: allocate without freeing until failure, in a heap of its own; the share usable, and
 * then the time to the null itself (issue 13's target: <= 50 ms): the same launch again on the
 * full heap, every work-item asking once more (none may get anything: the heap was full). */
static void oom_case(unsigned size, size_t heap_bytes)
{
    nsp_cl_heap_opts_t o = {.accounting = -1, .name = "oom heap"};
    nsp_cl_heap_t *h = nsp_cl_heap_create(ctx, dev, q, heap_bytes, &o);
    if (!h)
        die("oom heap", nsp_cl_error());
    cl_kernel k = kern("k_fill");
    size_t cap = nsp_cl_capacity(h);
    unsigned n = is_gpu ? 1u << 16 : 1u << 12;
    cl_uint each = (cl_uint)(2 * cap / size / n + 1), usz = size;
    cl_mem got = buf(8), hb = nsp_cl_buffer(h);
    double t[64], tn[64], use = 0;
    unsigned long long spurious = 0, allocs = 0;
    struct ctrs c = {0};
    for (int r = 0; r < reps; r++) {
        if (nsp_cl_heap_reset(h, q) < 0)
            die("reset", nsp_cl_error());
        zero(got, 8);
        ARG(k, 0, hb); ARG(k, 1, usz); ARG(k, 2, each); ARG(k, 3, got);
        t[r] = run(k, n);
        cl_ulong g = 0;
        CK(clEnqueueReadBuffer(q, got, CL_TRUE, 0, 8, &g, 0, NULL, NULL));
        use = 100.0 * (double)g / (double)cap;
        allocs = g / size;
        cl_uint once = 1;
        zero(got, 8);
        ARG(k, 2, once);
        tn[r] = run(k, n);
        ARG(k, 2, each);
        CK(clEnqueueReadBuffer(q, got, CL_TRUE, 0, 8, &g, 0, NULL, NULL));
        if (g)
            fprintf(stderr, "bench_device: oom %u B: the full heap still gave %llu bytes\n", size,
                    (unsigned long long)g);
        nsp_cl_counters_t st = counters(h);
        spurious = (unsigned long long)st.lost;
        nsp_cl_counters_t fresh = {0}; /* the reset zeroed the counters */
        c = ctrs_since(&fresh, &st);
    }
    struct row *row = &rows[nrows++];
    *row = (struct row){.cas = "oom", .n = (unsigned)allocs, .lo = size, .hi = size,
                        .malloc_ms = median(t, reps), .usable = use, .nulls = spurious,
                        .extra = median(tn, reps), .c = c};
    emit(row);
    if (!json)
        printf("%-14s heap %zu MiB of %u B objects: filled in %.3f ms (%.1f%% usable, %llu lost); "
               "then %u work-items asking once more got their null in %.3f ms\n", "",
               heap_bytes >> 20, size, row->malloc_ms, use, spurious, n, row->extra);
    clReleaseKernel(k);
    clReleaseMemObject(got);
    nsp_cl_heap_destroy(h);
}

/* --frag-detail: where the chunks held at the end of the fragmentation case go, per class (read
 * from the heap buffer through the layout of numaspan_geometry.h, before any release or sweep):
 * chunks of CACHED / PARTIAL / FULL spans; live objects and their requested bytes (hs, sz) and
 * class-rounded bytes; free objects in cached spans (unclaimed entries plus freed bits), in
 * PARTIAL and FULL spans (free bits plus freed bits), and the uncached spans with no live object
 * (empty, not back in the pool). */
static void frag_report(const uint64_t *hs, const uint32_t *sz, unsigned n)
{
    cl_mem b = nsp_cl_buffer(heap);
    struct nsp_dheap_hdr H;
    CK(clEnqueueReadBuffer(q, b, CL_TRUE, 0, sizeof H, &H, 0, NULL, NULL));
    uint64_t carved = H.next_chunk < H.nchunks ? H.next_chunk : H.nchunks;
    size_t nsw = (size_t)NSP_DNCLASSES * H.nslots;
    uint64_t *sw = malloc(nsw * 8);
    uint32_t *st = malloc(carved * 4 + 4);
    struct nsp_ddesc *d = malloc(carved * sizeof *d + sizeof *d);
    CK(clEnqueueReadBuffer(q, b, CL_TRUE, H.off_slots, nsw * 8, sw, 0, NULL, NULL));
    if (carved) {
        CK(clEnqueueReadBuffer(q, b, CL_TRUE, H.off_state, carved * 4, st, 0, NULL, NULL));
        CK(clEnqueueReadBuffer(q, b, CL_TRUE, H.off_desc, carved * sizeof *d, d, 0, NULL, NULL));
    }
    struct { uint64_t ch[3], live, req, cls, fc, fp, ff, empty; } k[NSP_DNCLASSES], t = {0};
    memset(k, 0, sizeof k);
    for (unsigned i = 0; i < n; i++)
        if (hs[i]) {
            unsigned ci = nsp_geom_size_to_class(sz[i] < 16 ? 16 : sz[i]) - NSP_DMIN_CLASS;
            k[ci].live++;
            k[ci].req += sz[i];
            k[ci].cls += nsp_geom_class_size(ci + NSP_DMIN_CLASS);
        }
    for (size_t i = 0; i < nsw; i++) { /* unclaimed entries of cached spans */
        uint32_t c = NSP_DW_SPAN(sw[i]), na = NSP_DW_NAVAIL(sw[i]), cur = NSP_DW_CUR(sw[i]);
        if (c < carved)
            k[i / H.nslots].fc += cur < na ? na - cur : 0;
    }
    uint64_t freec = 0;
    for (uint64_t c = 0; c < carved; c++) {
        uint32_t s = st[c], kind = NSP_DST_STATE(s), cls = NSP_DST_CLASS(s);
        if (kind == NSP_DS_FREE) {
            freec++;
            continue;
        }
        if ((kind != NSP_DS_CACHED && kind != NSP_DS_PARTIAL && kind != NSP_DS_FULL) ||
            cls < NSP_DMIN_CLASS || cls > NSP_DMAX_CLASS)
            continue;
        unsigned ci = cls - NSP_DMIN_CLASS, nobj = nsp_dspan_nobj(cls), a = 0, f = 0;
        for (unsigned w = 0; w < NSP_DWORDS; w++) {
            a += (unsigned)__builtin_popcountll(d[c].alloc[w]);
            f += (unsigned)__builtin_popcountll(d[c].freed[w]);
        }
        unsigned idx = kind == NSP_DS_CACHED ? 0 : kind == NSP_DS_PARTIAL ? 1 : 2;
        k[ci].ch[idx] += nsp_dspan_chunks(cls);
        if (kind == NSP_DS_CACHED)
            k[ci].fc += f; /* freed while cached (its unclaimed entries counted above) */
        else {
            uint64_t fr = nobj - a - d[c].claimed + f; /* claimed: applied at its next sweep */
            *(kind == NSP_DS_PARTIAL ? &k[ci].fp : &k[ci].ff) += fr;
            k[ci].empty += fr == nobj ? nsp_dspan_chunks(cls) : 0;
        }
    }
    printf("frag-detail: chunks carved %llu, free in the pool %llu; per class: chunks of cached / "
           "partial / full spans, live objects, requested KiB, class-rounded KiB, free objects in "
           "cached / partial / full spans, chunks of empty uncached spans, held KiB / requested\n",
           (unsigned long long)carved, (unsigned long long)freec);
    for (unsigned ci = 0; ci < NSP_DNCLASSES; ci++) {
        uint64_t held = k[ci].ch[0] + k[ci].ch[1] + k[ci].ch[2];
        if (!held && !k[ci].live)
            continue;
        printf("  %5u B  %3llu / %3llu / %3llu  live %6llu  req %8.1f  cls %8.1f  free %5llu / "
               "%5llu / %5llu  empty %3llu  %.2f\n",
               nsp_geom_class_size(ci + NSP_DMIN_CLASS), (unsigned long long)k[ci].ch[0],
               (unsigned long long)k[ci].ch[1], (unsigned long long)k[ci].ch[2],
               (unsigned long long)k[ci].live, k[ci].req / 1024.0, k[ci].cls / 1024.0,
               (unsigned long long)k[ci].fc, (unsigned long long)k[ci].fp,
               (unsigned long long)k[ci].ff, (unsigned long long)k[ci].empty,
               k[ci].req ? (double)held * NSP_DCHUNK / k[ci].req : 0);
        for (int j = 0; j < 3; j++)
            t.ch[j] += k[ci].ch[j];
        t.live += k[ci].live, t.req += k[ci].req, t.cls += k[ci].cls, t.fc += k[ci].fc;
        t.fp += k[ci].fp, t.ff += k[ci].ff, t.empty += k[ci].empty;
    }
    uint64_t held = t.ch[0] + t.ch[1] + t.ch[2];
    printf("  total  %3llu / %3llu / %3llu  live %6llu  req %8.1f  cls %8.1f  free %5llu / %5llu / "
           "%5llu  empty %3llu  %.3f (class rounding %.3f)\n",
           (unsigned long long)t.ch[0], (unsigned long long)t.ch[1], (unsigned long long)t.ch[2],
           (unsigned long long)t.live, t.req / 1024.0, t.cls / 1024.0, (unsigned long long)t.fc,
           (unsigned long long)t.fp, (unsigned long long)t.ff, (unsigned long long)t.empty,
           t.req ? (double)held * NSP_DCHUNK / t.req : 0, t.req ? (double)t.cls / t.req : 0);
    free(sw);
    free(st);
    free(d);
}

/* Case 5: 100 rounds, each freeing a random half of n live objects of 16-256 B and allocating
 * again; the address range the live objects span over their bytes (1.0 is ideal). */
static void frag_case(unsigned n, unsigned rounds)
{
    if (nsp_cl_heap_reset(heap, q) < 0)
        die("reset", nsp_cl_error());
    cl_kernel k = kern("k_frag");
    cl_mem hs = buf((size_t)n * 8), sz = buf((size_t)n * 4), hb = nsp_cl_buffer(heap);
    zero(hs, (size_t)n * 8);
    zero(sz, (size_t)n * 4);
    uint64_t *h = malloc((size_t)n * 8);
    uint32_t *s = malloc((size_t)n * 4);
    cl_uint un = n;
    double worst = 0, last = 0, total_ms = 0;
    uint64_t last_live = 0;
    unsigned long long nulls = 0;
    nsp_cl_counters_t s0 = {0}, s1 = {0};
    for (cl_uint r = 0; r < rounds; r++) {
        if (r == rounds - 1)
            s0 = counters(heap);
        ARG(k, 0, hb); ARG(k, 1, un); ARG(k, 2, r); ARG(k, 3, hs); ARG(k, 4, sz);
        total_ms += run(k, n);
        CK(clEnqueueReadBuffer(q, hs, CL_TRUE, 0, (size_t)n * 8, h, 0, NULL, NULL));
        CK(clEnqueueReadBuffer(q, sz, CL_TRUE, 0, (size_t)n * 4, s, 0, NULL, NULL));
        uint64_t lo = UINT64_MAX, hi = 0, live = 0;
        for (unsigned i = 0; i < n; i++) {
            if (!h[i]) {
                nulls++;
                continue;
            }
            live += s[i];
            lo = h[i] < lo ? h[i] : lo;
            hi = h[i] + s[i] > hi ? h[i] + s[i] : hi;
        }
        last = live ? (double)(hi - lo) / live : 0;
        last_live = live;
        worst = last > worst ? last : worst;
    }
    if (frag_detail && !json)
        frag_report(h, s, n);
    s1 = counters(heap);
    struct row *row = &rows[nrows++];
    *row = (struct row){.cas = "fragmentation", .n = n, .lo = 16, .hi = 256,
                        .malloc_ms = total_ms / rounds, .usable = -1, .nulls = nulls,
                        .extra = worst, .c = ctrs_since(&s0, &s1)};
    emit(row);
    /* the chunks held (carved and not back in the pool) over the live bytes: what the heap
     * takes from the device for them, whatever their addresses */
    size_t held = nsp_cl_capacity(heap) - (size_t)s1.chunks_free * NSP_DCHUNK;
    if (!json)
        printf("%-14s range spanned / live bytes after %u rounds: %.3f (worst %.3f); chunks held / "
               "live bytes %.3f\n", "", rounds, last, worst,
               last_live ? (double)held / (double)last_live : 0);
    free(h);
    free(s);
    clReleaseKernel(k);
    clReleaseMemObject(hs);
    clReleaseMemObject(sz);
}

/* Case 9: initialisation: creating a heap (its programs are cached after the first) and
 * resetting it, wall time, median. */
static void init_case(size_t bytes)
{
    double tc[64], tr[64];
    for (int r = 0; r < reps; r++) {
        double t0 = wall();
        nsp_cl_heap_t *h = nsp_cl_heap_create(ctx, dev, q, bytes, NULL);
        double t1 = wall();
        if (!h)
            die("init heap", nsp_cl_error());
        nsp_cl_heap_reset(h, q);
        double t2 = wall();
        nsp_cl_heap_destroy(h);
        tc[r] = (t1 - t0) * 1e3;
        tr[r] = (t2 - t1) * 1e3;
    }
    struct row *row = &rows[nrows++];
    *row = (struct row){.cas = "init", .n = (unsigned)(bytes >> 20), .malloc_ms = median(tr, reps),
                        .usable = -1, .extra = median(tc, reps)};
    if (json) {
        emit(row);
    } else {
        printf("%-14s heap %zu MiB: reset %.3f ms, create (programs cached) %.3f ms\n", "init",
               bytes >> 20, median(tr, reps), median(tc, reps));
    }
}

static int litmus(unsigned iters)
{
    cl_kernel k = kern("k_mp");
    cl_uint cus = 1;
    clGetDeviceInfo(dev, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cus, &cus, NULL);
    unsigned pairs = cus * 4;
    cl_mem data = buf((size_t)pairs * 128), flag = buf((size_t)pairs * 128), fails = buf(4);
    cl_uint it = iters;
    unsigned result[2];
    for (cl_uint fenced = 0; fenced < 2; fenced++) {
        zero(data, (size_t)pairs * 128);
        zero(flag, (size_t)pairs * 128);
        zero(fails, 4);
        ARG(k, 0, data); ARG(k, 1, flag); ARG(k, 2, fails); ARG(k, 3, it); ARG(k, 4, fenced);
        size_t saved = wg;
        wg = 32;
        run(k, (size_t)pairs * 2 * 32);
        wg = saved;
        CK(clEnqueueReadBuffer(q, fails, CL_TRUE, 0, 4, &result[fenced], 0, NULL, NULL));
    }
    nsp_cl_stats_t st = stats();
    printf("litmus (message passing across work-groups, %u pairs x %u iterations, %s):\n"
           "  without the shim's fence: %u failures (allowed by the model; seen or not)\n"
           "  with NSP_FENCE (%s):     %u failures\n",
           pairs, iters, st.device, result[0], nsp_cl_fence_name(st.fence_shim),
           result[1]);
    clReleaseKernel(k);
    clReleaseMemObject(data);
    clReleaseMemObject(flag);
    clReleaseMemObject(fails);
    return result[1] == 0 ? 0 : 1;
}

/* How often `needle` occurs in `text`. */
static unsigned count_of(const char *text, const char *needle)
{
    unsigned n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

static int ptx(const char *path)
{
    size_t size = 0;
    CK(clGetProgramInfo(prog, CL_PROGRAM_BINARY_SIZES, sizeof size, &size, NULL));
    unsigned char *bin = malloc(size + 1);
    unsigned char *bins[1] = {bin};
    CK(clGetProgramInfo(prog, CL_PROGRAM_BINARIES, sizeof bins, bins, NULL));
    bin[size] = 0;
    FILE *f = fopen(path, "w");
    if (!f)
        die(path, "cannot write");
    fwrite(bin, 1, size, f);
    fclose(f);
    int is_ptx = strstr((char *)bin, ".version") && strstr((char *)bin, ".target");
    const char *text = (const char *)bin;
    unsigned add64 = count_of(text, "atom.global.add.u64"), membar = count_of(text, "membar.gl");
    unsigned ballot = count_of(text, "vote.sync.ballot"), scan = count_of(text, "shfl.sync.up");
    unsigned warpbar = count_of(text, "bar.warp.sync");
    printf("device binary: %zu bytes written to %s; %s\n", size, path,
           is_ptx ? "PTX" : "not PTX text (no PTX check on this device)");
    if (is_ptx) {
        printf("  atom.global.add.u64 (the slot word's combined claim and others): %u\n", add64);
        printf("  membar.gl (the ordering shim): %u\n", membar);
        printf("  vote.sync.ballot / shfl.sync.up (the warp-aggregated bump's ballot and scan): "
               "%u / %u\n", ballot, scan);
        printf("  bar.warp.sync (lanes waiting on their warp's refiller, not polling): %u\n",
               warpbar);
    }
    free(bin);
    return is_ptx && (!add64 || !membar || !ballot || !scan || !warpbar) ? 1 : 0;
}

static void json_head(FILE *f, const nsp_cl_stats_t *st, size_t heap_mib, const char *warp)
{
    fprintf(f, "{\"device\": \"%s\", \"gpu\": %s, \"heap_mib\": %zu, \"reps\": %d, "
               "\"slots\": %u, \"prefetch\": %s, \"warp_bump\": \"%s\", \"rows\": [\n", st->device,
            is_gpu ? "true" : "false", heap_mib, reps, st->slots, prefetch ? "true" : "false", warp);
}

/* Which warp-aggregated bump the device compiled (the kernel says, from its own macros). */
static const char *warp_variant(void)
{
    cl_kernel k = kern("k_variant");
    cl_mem v = buf(4);
    cl_uint got = 0;
    ARG(k, 0, v);
    run(k, 1);
    CK(clEnqueueReadBuffer(q, v, CL_TRUE, 0, 4, &got, 0, NULL, NULL));
    clReleaseKernel(k);
    clReleaseMemObject(v);
    return got == 1   ? "ballot + popc + shfl, inline PTX"
           : got == 2 ? "sub-group scan + broadcast, cl_khr_subgroups"
                      : "no warp primitives here: local aggregation per 32 work-items";
}

int main(int argc, char **argv)
{
    unsigned max_n = 0, iters = 100000, slots = 0;
    size_t heap_mib = 0;
    const char *only = NULL, *ptx_path = NULL;
    int do_litmus = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = 1;
        else if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else if (strcmp(argv[i], "--litmus") == 0)
            do_litmus = 1;
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--max-n") == 0 && i + 1 < argc)
            max_n = (unsigned)atoi(argv[++i]);
        else if (strcmp(argv[i], "--iters") == 0 && i + 1 < argc)
            iters = (unsigned)atoi(argv[++i]);
        else if (strcmp(argv[i], "--slots") == 0 && i + 1 < argc)
            slots = (unsigned)atoi(argv[++i]);
        else if (strcmp(argv[i], "--heap-mib") == 0 && i + 1 < argc)
            heap_mib = (size_t)atol(argv[++i]);
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            only = argv[++i];
        else if (strcmp(argv[i], "--prefetch") == 0)
            prefetch = 1;
        else if (strcmp(argv[i], "--frag-detail") == 0)
            frag_detail = 1;
        else if (strcmp(argv[i], "--cl-options") == 0 && i + 1 < argc)
            cl_options = argv[++i];
        else if (strcmp(argv[i], "--ptx") == 0 && i + 1 < argc)
            ptx_path = argv[++i];
        else if (strcmp(argv[i], "--json-out") == 0 && i + 1 < argc) {
            if (!(jout = fopen(argv[++i], "w")))
                die(argv[i], "cannot write");
        }
        else {
            fprintf(stderr, "usage: bench_device [--quick] [--json] [--reps R] [--max-n N] "
                            "[--heap-mib M] [--slots S] "
                            "[--only one,group,mixed,steady,scaling,frag,oom,init] "
                            "[--prefetch] [--frag-detail] [--cl-options OPTS] [--litmus [--iters I]] [--ptx FILE] "
                            "[--json-out FILE]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > 64)
        die("--reps", "expected 1..64");
    cl_platform_id plat;
    if (nsp_cl_pick_device(&plat, &dev) < 0) { /* 77: the tests' "skipped" */
        fprintf(stderr, "bench_device: no OpenCL device: %s\n", nsp_cl_error());
        return 77;
    }
    cl_device_type type = 0;
    clGetDeviceInfo(dev, CL_DEVICE_TYPE, sizeof type, &type, NULL);
    is_gpu = (type & CL_DEVICE_TYPE_GPU) != 0;
    cl_int err;
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)plat, 0};
    ctx = clCreateContext(props, 1, &dev, NULL, NULL, &err);
    if (!ctx)
        die("clCreateContext", "failed");
    q = clCreateCommandQueue(ctx, dev, CL_QUEUE_PROFILING_ENABLE, &err);
    if (!q)
        die("clCreateCommandQueue", "failed");
    size_t maxwg = 256;
    clGetDeviceInfo(dev, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof maxwg, &maxwg, NULL);
    wg = maxwg < 256 ? maxwg : 256;
    cl_ulong maxalloc = 0;
    clGetDeviceInfo(dev, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof maxalloc, &maxalloc, NULL);
    if (!max_n)
        max_n = is_gpu ? (quick ? 1u << 18 : 1u << 20) : (quick ? 1u << 14 : 1u << 16);
    if (!heap_mib)
        heap_mib = is_gpu ? 16384 : (quick ? 256 : 1024);
    if (maxalloc && (heap_mib << 20) > maxalloc)
        heap_mib = maxalloc >> 20;
    nsp_cl_heap_opts_t o = {.slots = slots, .accounting = -1, .name = "bench heap"};
    heap = nsp_cl_heap_create(ctx, dev, q, heap_mib << 20, &o);
    if (!heap)
        die("heap", nsp_cl_error());
    char opts[512];
    snprintf(opts, sizeof opts, "%s %s", prefetch ? "-DNSP_PREFETCH" : "", cl_options);
    prog = nsp_cl_build(heap, SRC, opts);
    if (!prog)
        die("build", nsp_cl_error());
    nsp_cl_stats_t st = stats();
    const char *warp = warp_variant();
    if (do_litmus || ptx_path) {
        int rc = 0;
        if (ptx_path)
            rc |= ptx(ptx_path);
        if (do_litmus)
            rc |= litmus(iters);
        return rc;
    }
    if (json)
        json_head(stdout, &st, heap_mib, warp);
    if (jout)
        json_head(jout, &st, heap_mib, warp);
    if (!json) {
        printf("device heap benchmarks on %s (%s), heap %zu MiB, %u slots x %u centrals per class, "
               "groups of %zu, median of %d event-profiled runs%s\n",
               st.device, is_gpu ? "GPU" : "CPU", heap_mib, st.slots, st.centrals, wg, reps,
               prefetch ? ", next spans prepared (-DNSP_PREFETCH)" : "");
        printf("baselines beside each case, run in turn with it: bump = one atom_add per "
               "work-item of a size not provably uniform (unaggregated); warp = one atomic per "
               "warp (%s); group = one atomic per work-group (local aggregation). x best: malloc "
               "over the fastest of bump (b), warp (w) and group (g). refills/forced/lost: the heap's "
               "counters in the last run\n", warp);
        printf("%-14s %8s %10s %9s %9s %9s %9s %9s %8s %7s %6s %8s %7s %5s\n", "case", "n",
               "size B", "malloc ms", "free ms", "bump ms", "warp ms", "group ms", "x best",
               "usable%", "nulls", "refills", "forced", "lost");
    }
#define WANT(c) (!only || strstr(only, c))
    unsigned ns[3] = {10000, 100000, 1u << 20};
    unsigned sizes[5] = {16, 64, 512, 4096, 8192};
    if (WANT("one"))
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 5; b++) {
                unsigned n = ns[a] > max_n ? max_n : ns[a];
                if ((unsigned long long)n * sizes[b] * 2 > (heap_mib << 20))
                    continue;
                if (a > 0 && ns[a - 1] >= n)
                    continue;
                alloc_case("one-size", n, sizes[b], sizes[b], 0, 0);
            }
    if (WANT("group")) {
        unsigned n = max_n;
        for (int b = 0; b < 5; b++)
            alloc_case("one-per-group", n, sizes[b], sizes[b], 1, 0);
        alloc_case("group-entry", n, 16, 16, 0, 1);
        alloc_case("group-entry", n, 64, 64, 0, 1);
    }
    if (WANT("mixed")) {
        alloc_case("mixed", max_n, 16, 64, 0, 0);
        alloc_case("mixed", max_n, 16, 4096, 0, 0);
    }
    if (WANT("steady"))
        for (int b = 0; b < 2; b++) {
            unsigned hi = b ? 4096 : 256;
            if ((unsigned long long)max_n * hi * 2 <= (heap_mib << 20))
                steady_case(max_n, 16, hi, quick ? 8 : 24);
        }
    if (WANT("scaling"))
        for (int b = 0; b < 4; b++) {
            unsigned s = b == 3 ? 8192 : sizes[b];
            for (unsigned n = 1; n <= max_n; n *= quick ? 16 : 4)
                if ((unsigned long long)n * s * 2 <= (heap_mib << 20))
                    alloc_case("scaling", n, s, s, 0, 0);
        }
    if (WANT("frag"))
        frag_case(max_n / 4 ? max_n / 4 : 1, quick ? 20 : 100);
    if (WANT("oom"))
        for (int b = 0; b < 3; b++)
            oom_case(b == 0 ? 16 : b == 1 ? 256 : 4096, (size_t)256 << 20); /* the target's size */
    if (WANT("init"))
        init_case(heap_mib << 20);
    if (json)
        printf("\n]}\n");
    if (jout) {
        fprintf(jout, "\n]}\n");
        fclose(jout);
    }
    nsp_cl_heap_destroy(heap);
    clReleaseProgram(prog);
    clReleaseCommandQueue(q);
    clReleaseContext(ctx);
    return failures ? 1 : 0;
}
