/*
 * bench/bench_device.c — the device heap's benchmarks (`numaspan bench device`), each case next
 * to a single-counter bump kernel on the same device (../shared/BENCHMARKS.md, device cases
 * 1-6 and 9), plus the ordering shim's litmus test and the PTX check for a GPU run.
 *
 *   bench_device [--quick] [--json] [--reps R] [--max-n N] [--heap-mib M] [--slots S]
 *                [--only CASE,..] [--json-out FILE]
 *   bench_device --litmus [--iters I]      cross-work-group message passing, with/without shim
 *   bench_device --ptx FILE                writes the device binary (PTX on NVIDIA) and counts
 *                                          the 64-bit atomic add and membar.gl in it
 * Times are event-profiled kernel times (CL_QUEUE_PROFILING_ENABLE), median of R runs; the heap
 * is reset before each run (so each malloc kernel meets an empty heap) and the bump counter
 * with it. Device: nsp_cl_pick_device (NSP_CL_DEVICE). Uses only the public API.
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

static const char *SRC =
    "static inline uint bsize(uint i, uint lo, uint hi)\n"
    "{\n"
    "    if (lo == hi) return lo;\n"
    "    uint x = i * 2654435761u; x ^= x >> 15; x *= 2246822519u; x ^= x >> 13;\n"
    "    return lo + x % (hi - lo + 1u);\n"
    "}\n"
    "__kernel void k_malloc(__global nsp_dheap *h, uint n, uint lo, uint hi, uint per_group,\n"
    "                       __global ulong *out, __global uint *nulls)\n"
    "{\n"
    "    uint i = (uint)get_global_id(0);\n"
    "    if (i >= n || (per_group && get_local_id(0) != 0)) return;\n"
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
    "__kernel void k_bump(__global ulong *ctr, __global uchar *pool, ulong cap, uint n, uint lo,\n"
    "                     uint hi, uint per_group, __global ulong *out, __global uint *nulls)\n"
    "{\n"
    "    uint i = (uint)get_global_id(0);\n"
    "    if (i >= n || (per_group && get_local_id(0) != 0)) return;\n"
    "    uint s = (bsize(i, lo, hi) + 15u) & ~15u;\n"
    "    ulong p = atom_add(ctr, (ulong)s);\n"
    "    if (p + s <= cap) { *(__global ulong *)(pool + p) = i; out[i] = p + 1; }\n"
    "    else { out[i] = 0; atomic_inc(nulls); }\n"
    "}\n"
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

struct row {
    const char *cas;
    unsigned n;
    unsigned lo, hi;
    double malloc_ms, free_ms, bump_ms;
    double usable;   /* percent, or -1 */
    unsigned long long nulls;
    double extra;    /* case-specific (fragmentation ratio, init ms) */
};
static struct row rows[512];
static int nrows;
static int first_json = 1;

static FILE *jout; /* --json-out: the rows as JSON beside the table */
static int first_jout = 1;

static void json_row(FILE *f, int *first, const struct row *r, double aps, double ratio)
{
    fprintf(f, "%s{\"case\": \"%s\", \"n\": %u, \"size_lo\": %u, \"size_hi\": %u, "
               "\"malloc_ms\": %.6f, \"free_ms\": %.6f, \"bump_ms\": %.6f, \"allocs_per_s\": %.4g, "
               "\"ratio_to_bump\": %.3f, \"usable_pct\": %.2f, \"spurious_nulls\": %llu, "
               "\"extra\": %.4f}",
            *first ? "" : ",\n", r->cas, r->n, r->lo, r->hi, r->malloc_ms, r->free_ms, r->bump_ms,
            aps, ratio, r->usable, r->nulls, r->extra);
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
        char sz[32];
        if (r->lo == r->hi)
            snprintf(sz, sizeof sz, "%u", r->lo);
        else
            snprintf(sz, sizeof sz, "%u-%u", r->lo, r->hi);
        char use[16] = "-";
        if (r->usable >= 0)
            snprintf(use, sizeof use, "%.1f", r->usable);
        printf("%-14s %8u %10s %10.4f %10.4f %10.4f %12.4g %8.2f %8s %8llu", r->cas, r->n, sz,
               r->malloc_ms, r->free_ms, r->bump_ms, aps, ratio, use, r->nulls);
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

/* Cases 1-4: n allocations of sizes [lo, hi] (one per group if per_group), malloc then free,
 * beside the bump kernel; median over reps, the heap reset before each. */
static void alloc_case(const char *name, unsigned n, unsigned lo, unsigned hi, int per_group,
                       int group_entry)
{
    cl_kernel km = kern(group_entry ? "k_group" : "k_malloc"), kf = kern("k_free"),
              kb = kern("k_bump");
    cl_mem hs = buf((size_t)n * 8), nulls = buf(4), ctr = buf(8);
    size_t cap = nsp_cl_capacity(heap);
    unsigned long long want = (unsigned long long)n * ((hi + 15) & ~15u);
    size_t pool_bytes = want + (1 << 20) < cap ? want + (1 << 20) : cap;
    cl_mem pool = buf(pool_bytes);
    cl_ulong capb = pool_bytes;
    cl_uint un = n, ulo = lo, uhi = hi, upg = per_group;
    cl_mem hb = nsp_cl_buffer(heap);
    if (group_entry) {
        ARG(km, 0, hb); ARG(km, 1, un); ARG(km, 2, ulo); ARG(km, 3, hs); ARG(km, 4, nulls);
    } else {
        ARG(km, 0, hb); ARG(km, 1, un); ARG(km, 2, ulo); ARG(km, 3, uhi); ARG(km, 4, upg);
        ARG(km, 5, hs); ARG(km, 6, nulls);
    }
    ARG(kf, 0, hb); ARG(kf, 1, un); ARG(kf, 2, hs);
    ARG(kb, 0, ctr); ARG(kb, 1, pool); ARG(kb, 2, capb); ARG(kb, 3, un); ARG(kb, 4, ulo);
    ARG(kb, 5, uhi); ARG(kb, 6, upg); ARG(kb, 7, hs); ARG(kb, 8, nulls);
    double tm[64], tf[64], tb[64];
    unsigned long long nn = 0;
    for (int r = 0; r < reps; r++) {
        /* alternate: bump, then heap */
        zero(ctr, 8);
        zero(nulls, 4);
        tb[r] = run(kb, n);
        if (nsp_cl_heap_reset(heap, q) < 0)
            die("nsp_cl_heap_reset", nsp_cl_error());
        zero(hs, (size_t)n * 8);
        zero(nulls, 4);
        tm[r] = run(km, n);
        cl_uint got = 0;
        CK(clEnqueueReadBuffer(q, nulls, CL_TRUE, 0, 4, &got, 0, NULL, NULL));
        nn += got;
        tf[r] = run(kf, n);
    }
    nsp_cl_stats_t st = stats();
    struct row *row = &rows[nrows++];
    *row = (struct row){name, per_group ? (n + (unsigned)wg - 1) / (unsigned)wg : n, lo, hi,
                        median(tm, reps), median(tf, reps), median(tb, reps), -1,
                        nn / (unsigned long long)reps, 0};
    if (st.bad_frees)
        die(name, "the free kernel made bad frees");
    emit(row);
    clReleaseKernel(km);
    clReleaseKernel(kf);
    clReleaseKernel(kb);
    clReleaseMemObject(hs);
    clReleaseMemObject(nulls);
    clReleaseMemObject(ctr);
    clReleaseMemObject(pool);
}

/* Case 6: allocate without freeing until failure, in a heap of its own; the share usable. */
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
    double t[64], use = 0;
    unsigned long long spurious = 0, allocs = 0;
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
        nsp_cl_stats_t st;
        if (nsp_cl_stats(h, q, &st) < 0)
            die("stats", nsp_cl_error());
        spurious = st.lost;
    }
    struct row *row = &rows[nrows++];
    *row = (struct row){"oom", (unsigned)allocs, size, size, median(t, reps), 0, 0, use, spurious,
                        0};
    emit(row);
    clReleaseKernel(k);
    clReleaseMemObject(got);
    nsp_cl_heap_destroy(h);
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
    unsigned long long nulls = 0;
    for (cl_uint r = 0; r < rounds; r++) {
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
        worst = last > worst ? last : worst;
    }
    struct row *row = &rows[nrows++];
    *row = (struct row){"fragmentation", n, 16, 256, total_ms / rounds, 0, 0, -1, nulls, worst};
    emit(row);
    if (!json)
        printf("%-14s range spanned / live bytes after %u rounds: %.3f (worst %.3f)\n", "", rounds,
               last, worst);
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
    *row = (struct row){"init", (unsigned)(bytes >> 20), 0, 0, median(tr, reps), 0, 0, -1, 0,
                        median(tc, reps)};
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
           pairs, iters, st.device, result[0], st.fence_shim ? "membar.gl" : "mem_fence",
           result[1]);
    clReleaseKernel(k);
    clReleaseMemObject(data);
    clReleaseMemObject(flag);
    clReleaseMemObject(fails);
    return result[1] == 0 ? 0 : 1;
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
    unsigned add64 = 0, membar = 0;
    for (char *p = (char *)bin; (p = strstr(p, "atom.global.add.u64")); p++)
        add64++;
    for (char *p = (char *)bin; (p = strstr(p, "membar.gl")); p++)
        membar++;
    printf("device binary: %zu bytes written to %s; %s\n", size, path,
           is_ptx ? "PTX" : "not PTX text (no PTX check on this device)");
    if (is_ptx) {
        printf("  atom.global.add.u64 (the slot word's combined claim and others): %u\n", add64);
        printf("  membar.gl (the ordering shim): %u\n", membar);
    }
    free(bin);
    return is_ptx && (!add64 || !membar) ? 1 : 0;
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
        else if (strcmp(argv[i], "--ptx") == 0 && i + 1 < argc)
            ptx_path = argv[++i];
        else if (strcmp(argv[i], "--json-out") == 0 && i + 1 < argc) {
            if (!(jout = fopen(argv[++i], "w")))
                die(argv[i], "cannot write");
        }
        else {
            fprintf(stderr, "usage: bench_device [--quick] [--json] [--reps R] [--max-n N] "
                            "[--heap-mib M] [--slots S] [--only one,group,mixed,scaling,frag,oom,init] "
                            "[--litmus [--iters I]] [--ptx FILE] [--json-out FILE]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > 64)
        die("--reps", "expected 1..64");
    cl_platform_id plat;
    if (nsp_cl_pick_device(&plat, &dev) < 0)
        die("no device", nsp_cl_error());
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
    prog = nsp_cl_build(heap, SRC, "");
    if (!prog)
        die("build", nsp_cl_error());
    nsp_cl_stats_t st = stats();
    if (do_litmus || ptx_path) {
        int rc = 0;
        if (ptx_path)
            rc |= ptx(ptx_path);
        if (do_litmus)
            rc |= litmus(iters);
        return rc;
    }
    if (json)
        printf("{\"device\": \"%s\", \"gpu\": %s, \"heap_mib\": %zu, \"reps\": %d, \"rows\": [\n",
               st.device, is_gpu ? "true" : "false", heap_mib, reps);
    if (jout)
        fprintf(jout, "{\"device\": \"%s\", \"gpu\": %s, \"heap_mib\": %zu, \"reps\": %d, "
                      "\"rows\": [\n", st.device, is_gpu ? "true" : "false", heap_mib, reps);
    if (!json) {
        printf("device heap benchmarks on %s (%s), heap %zu MiB, %u slots x %u centrals per class, "
               "groups of %zu, median of %d event-profiled runs\n",
               st.device, is_gpu ? "GPU" : "CPU", heap_mib, st.slots, st.centrals, wg, reps);
        printf("%-14s %8s %10s %10s %10s %10s %12s %8s %8s %8s\n", "case", "n", "size B",
               "malloc ms", "free ms", "bump ms", "allocs/s", "x bump", "usable%", "nulls");
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
            oom_case(b == 0 ? 16 : b == 1 ? 256 : 4096, (is_gpu ? 256u : 64u) << 20);
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
    return 0;
}
