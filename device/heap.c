/*
 * device/heap.c — a device heap's life on the host: create, bind, sync into the pacer, release,
 * sweep, stats, destroy.
 *
 * Owns: struct nsp_cl_heap and its buffer. The buffer's layout is numaspan_geometry.h's; the host
 * writes it once (metadata zeroed, slot words empty, header) and afterwards only reads it, between
 * kernels: every change is made by the kernels of kernels/ (the heap's own release and sweep
 * included), so the host never races a kernel. The queue may be out of order: every command of
 * the heap's (its writes, reads and kernels) follows a barrier, so it comes after whatever the
 * program enqueued before (a user kernel still running would race the release, and a sync would
 * read counters it has not finished), and the writes of a creation or reset follow each other.
 *
 * The device ledger's total is the sum of the charge stripes; nsp_cl_sync hands it to the pacer
 * as the heap's node (host/pacer_device.c). After nsp_cl_release and nsp_cl_sweep with no user
 * kernel in between, it equals the bytes of the live objects (class sizes, large runs).
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "numaspan.h"

#define CHECK(call, what)                                                                     \
    do {                                                                                      \
        cl_int e_ = (call);                                                                   \
        if (e_ != CL_SUCCESS)                                                                 \
            return nsp__cl_fail("%s: %s failed (%s)", __func__, what, nsp__cl_errname(e_));   \
    } while (0)

static uint32_t pow2_at_least(uint32_t x)
{
    uint32_t p = 1;
    while (p < x)
        p <<= 1;
    return p;
}

static int has_ext(cl_device_id dev, const char *ext)
{
    size_t n = 0;
    if (clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, 0, NULL, &n) != CL_SUCCESS)
        return 0;
    char *s = malloc(n + 1);
    if (!s)
        return 0;
    clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, n, s, NULL);
    s[n] = '\0';
    int found = 0;
    size_t el = strlen(ext);
    for (char *p = strstr(s, ext); p && !found; p = strstr(p + 1, ext))
        found = (p[el] == ' ' || p[el] == '\0') && (p == s || p[-1] == ' ');
    free(s);
    return found;
}

static int build_ops(nsp_cl_heap_t *h)
{
    if (h->ops) { /* a second try, with another fence */
        clReleaseKernel(h->krelease);
        clReleaseKernel(h->ksweep);
        clReleaseProgram(h->ops);
        h->krelease = h->ksweep = NULL;
    }
    h->ops = nsp__cl_build_with(h, nsp__cl_src_ops, "kernels/nsp_dheap_ops.cl", "");
    if (!h->ops)
        return -1;
    cl_int err;
    h->krelease = clCreateKernel(h->ops, "nsp_k_release", &err);
    if (!h->krelease)
        return nsp__cl_fail("nsp_cl_heap_create: kernel nsp_k_release (%s)", nsp__cl_errname(err));
    h->ksweep = clCreateKernel(h->ops, "nsp_k_sweep", &err);
    if (!h->ksweep)
        return nsp__cl_fail("nsp_cl_heap_create: kernel nsp_k_sweep (%s)", nsp__cl_errname(err));
    return 0;
}

/* OpenCL 3.0 queries, spelled here because the library builds against the 1.2 API: a 1.2
 * runtime answers them with an error, which reads as "not offered". */
#define NSP__C_ALL_VERSIONS 0x1066   /* CL_DEVICE_OPENCL_C_ALL_VERSIONS */
#define NSP__FENCE_CAPS 0x1064       /* CL_DEVICE_ATOMIC_FENCE_CAPABILITIES */
#define NSP__CAP_SEQ_CST (1u << 2)   /* CL_DEVICE_ATOMIC_ORDER_SEQ_CST */
#define NSP__CAP_DEVICE (1u << 5)    /* CL_DEVICE_ATOMIC_SCOPE_DEVICE */
struct nsp__name_version {           /* cl_name_version */
    cl_uint version;                 /* major << 22 | minor << 12 | patch */
    char name[64];
};

/* The highest OpenCL C version dev compiles, as 10 * major + minor (12 for "OpenCL C 1.2"). */
static int c_version(cl_device_id dev)
{
    int best = 0;
    char v[128] = "";
    if (clGetDeviceInfo(dev, CL_DEVICE_OPENCL_C_VERSION, sizeof v, v, NULL) == CL_SUCCESS) {
        int maj = 0, min = 0;
        v[sizeof v - 1] = '\0';
        if (sscanf(v, "OpenCL C %d.%d", &maj, &min) == 2)
            best = maj * 10 + min;
    }
    /* an OpenCL 3.0 device reports 1.2 above and lists 3.0 here (POCL does) */
    size_t n = 0;
    if (clGetDeviceInfo(dev, NSP__C_ALL_VERSIONS, 0, NULL, &n) == CL_SUCCESS && n) {
        struct nsp__name_version *all = malloc(n);
        if (all && clGetDeviceInfo(dev, NSP__C_ALL_VERSIONS, n, all, NULL) == CL_SUCCESS)
            for (size_t i = 0; i < n / sizeof *all; i++) {
                int ver = (int)((all[i].version >> 22) * 10 + ((all[i].version >> 12) & 0x3FF));
                best = ver > best ? ver : best;
            }
        free(all);
    }
    return best;
}

/* Whether dev's OpenCL C 2.0+ offers fences at device scope: every 2.x device does; a 3.0 device
 * says so in CL_DEVICE_ATOMIC_FENCE_CAPABILITIES. */
static int device_scope_fences(cl_device_id dev, int cver)
{
    if (cver >= 20 && cver < 30)
        return 1;
    cl_bitfield caps = 0;
    if (cver >= 30 && clGetDeviceInfo(dev, NSP__FENCE_CAPS, sizeof caps, &caps, NULL) == CL_SUCCESS)
        return (caps & NSP__CAP_DEVICE) && (caps & NSP__CAP_SEQ_CST);
    return 0;
}

/* Chooses the ordering shim (kernels/nsp_dheap.cl, NSP_FENCE) and the build options: NVIDIA's
 * membar.gl where its compiler takes inline PTX, else OpenCL C 2.0+ device-scope fences; a device
 * with neither is refused, since OpenCL C 1.2's mem_fence does not order anything across
 * work-groups and the heap would hand objects out twice on a weakly ordered device. */
static int choose_fence(nsp_cl_heap_t *h)
{
    int cver = c_version(h->dev);
    if (has_ext(h->dev, "cl_nv_pragma_unroll")) {
        h->fence_shim = NSP_CL_FENCE_MEMBAR;
        snprintf(h->options, sizeof h->options, "-cl-std=CL1.2 -DNSP_FENCE_MEMBAR");
        if (build_ops(h) == 0)
            return 0;
        fprintf(stderr, "numaspan_cl: %s refuses the membar.gl fence: %s\n", h->devname,
                nsp_cl_error());
    }
    if (device_scope_fences(h->dev, cver)) {
        /* a CPU device runs on this host's cores: on x86-64 (TSO, a locked RMW is a full
         * barrier) the kernels may drop the fence after an RMW (NSP_TSO) */
        cl_device_type type = 0;
        clGetDeviceInfo(h->dev, CL_DEVICE_TYPE, sizeof type, &type, NULL);
        int tso = 0;
#if defined(__x86_64__)
        tso = (type & CL_DEVICE_TYPE_CPU) != 0;
#endif
        h->fence_shim = NSP_CL_FENCE_DEVICE_SCOPE;
        snprintf(h->options, sizeof h->options, "-cl-std=CL%d.%d -DNSP_FENCE_DEVICE_SCOPE%s",
                 cver / 10, cver % 10, tso ? " -DNSP_TSO" : "");
        return build_ops(h);
    }
    return nsp__cl_fail("nsp_cl_heap_create: %s offers no fence that orders memory across "
                        "work-groups (OpenCL C %d.%d without device-scope fences, and not NVIDIA's "
                        "membar.gl): the device heap refuses it rather than hand objects out twice",
                        h->devname, cver / 10, cver % 10);
}

static int accounting_from_env(void)
{
    nsp_option_info_t o;
    if (nsp_option_find("NSP_ACCOUNTING", &o) < 0)
        return 0;
    return strcmp(o.value, "under") == 0 ? 1 : strcmp(o.value, "exact") == 0 ? 2 : 0;
}

/* The words of the slots region: a slot word, then a next word, per (class, slot)
 * (numaspan_geometry.h's layout). */
static size_t slot_words(uint64_t nslots)
{
    return 2 * (size_t)NSP_DNCLASSES * nslots;
}

/* Orders the heap's next command after everything enqueued on q before it (an out-of-order
 * queue runs commands without a wait list in any order; an in-order queue needs nothing). */
static int after_queued(cl_command_queue q)
{
    CHECK(clEnqueueBarrierWithWaitList(q, 0, NULL, NULL), "clEnqueueBarrierWithWaitList");
    return 0;
}

/* Clears the metadata, then empties the slot words, then writes the header, each after the one
 * before (they overlap: the clear covers the others' bytes), and returns when all are done. */
static int init_buffer(nsp_cl_heap_t *h, cl_command_queue q)
{
    static const cl_ulong zero = 0, empty = NSP_DW_EMPTY;
    const struct nsp_dheap_hdr *d = &h->hdr;
    cl_event cleared = NULL, emptied = NULL;
    int rc = -1;
    cl_int e;
    if (after_queued(q) < 0)
        return -1;
    if ((e = clEnqueueFillBuffer(q, h->buf, &zero, sizeof zero, 0, d->off_pool, 0, NULL,
                                 &cleared)) != CL_SUCCESS)
        nsp__cl_fail("init_buffer: clearing the metadata (clEnqueueFillBuffer) failed (%s)",
                     nsp__cl_errname(e));
    else if ((e = clEnqueueFillBuffer(q, h->buf, &empty, sizeof empty, d->off_slots,
                                      slot_words(d->nslots) * 8, 1, &cleared, &emptied)) != CL_SUCCESS)
        nsp__cl_fail("init_buffer: emptying the slots (clEnqueueFillBuffer) failed (%s)",
                     nsp__cl_errname(e));
    else if ((e = clEnqueueWriteBuffer(q, h->buf, CL_TRUE, 0, sizeof *d, d, 1, &emptied, NULL)) !=
             CL_SUCCESS)
        nsp__cl_fail("init_buffer: writing the header (clEnqueueWriteBuffer) failed (%s)",
                     nsp__cl_errname(e));
    else
        rc = 0;
    if (emptied)
        clReleaseEvent(emptied);
    if (cleared)
        clReleaseEvent(cleared);
    return rc;
}

nsp_cl_heap_t *nsp_cl_heap_create(cl_context ctx, cl_device_id dev, cl_command_queue q,
                                  size_t bytes, const nsp_cl_heap_opts_t *opts)
{
    if (!ctx || !dev || !q) {
        nsp__cl_fail("nsp_cl_heap_create: context, device and queue are required");
        return NULL;
    }
    nsp_cl_heap_t *h = calloc(1, sizeof *h);
    if (!h) {
        nsp__cl_fail("nsp_cl_heap_create: out of host memory");
        return NULL;
    }
    h->ctx = ctx;
    h->dev = dev;
    h->node = -1;
    nsp__cl_describe(dev, h->devname, sizeof h->devname);
    clRetainContext(ctx);
    if (!has_ext(dev, "cl_khr_int64_base_atomics") || !has_ext(dev, "cl_khr_int64_extended_atomics")) {
        nsp__cl_fail("nsp_cl_heap_create: %s lacks cl_khr_int64_base_atomics / "
                     "cl_khr_int64_extended_atomics, which the device heap needs",
                     h->devname);
        goto fail;
    }
    cl_uint cus = 1;
    cl_ulong maxalloc = 0;
    clGetDeviceInfo(dev, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cus, &cus, NULL);
    clGetDeviceInfo(dev, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof maxalloc, &maxalloc, NULL);
    uint32_t slots = opts && opts->slots ? opts->slots : 0;
    if (!slots) {
        /* one per compute unit (the kernels key slots on the SM on NVIDIA), 2..1024: a class's
         * cached spans are the heap's fragmentation (1,024 slots x 56 classes each caching a span
         * held ~1 GiB against 36 MB live), and more slots than compute units only spread the
         * groups of one compute unit over several; but not past a quarter of the pool (a small
         * heap on a big GPU would otherwise sit in slots) */
        slots = pow2_at_least(cus);
        slots = slots < 2 ? 2 : slots > 1024 ? 1024 : slots;
        while (slots > 1 && slots > bytes / NSP_DCHUNK / 4)
            slots >>= 1;
    }
    uint32_t centrals = opts && opts->centrals ? opts->centrals : 4;
    if ((slots & (slots - 1)) || (centrals & (centrals - 1)) || slots > 65536 || centrals > 64) {
        nsp__cl_fail("nsp_cl_heap_create: slots (%u) and centrals (%u) must be powers of two "
                     "(at most 65536 and 64)", slots, centrals);
        goto fail;
    }
    if (maxalloc && bytes > maxalloc) {
        nsp__cl_fail("nsp_cl_heap_create: %zu bytes exceed the largest buffer %s allows "
                     "(CL_DEVICE_MAX_MEM_ALLOC_SIZE %llu)",
                     bytes, h->devname, (unsigned long long)maxalloc);
        goto fail;
    }
    if (!nsp_dheap_layout(&h->hdr, bytes, slots, centrals)) {
        nsp__cl_fail("nsp_cl_heap_create: %zu bytes hold no chunk of %u bytes with its metadata "
                     "(%u slots per class)", bytes, NSP_DCHUNK, slots);
        goto fail;
    }
    h->hdr.magic = NSP_DHEAP_MAGIC;
    h->hdr.version = NSP_DHEAP_VERSION;
    h->hdr.acct = (uint64_t)(opts && opts->accounting >= 0 && opts->accounting <= 2
                                 ? opts->accounting
                                 : accounting_from_env());
    cl_int err;
    h->buf = clCreateBuffer(ctx, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (!h->buf) {
        nsp__cl_fail("nsp_cl_heap_create: a buffer of %zu bytes on %s: %s", bytes, h->devname,
                     nsp__cl_errname(err));
        goto fail;
    }
    if (choose_fence(h) < 0)
        goto fail;
    if (init_buffer(h, q) < 0)
        goto fail;
    snprintf(h->name, sizeof h->name, "%s", opts && opts->name ? opts->name : h->devname);
    h->node = nsp_pacer_device_attach(h->name, (int64_t)(h->hdr.nchunks * NSP_DCHUNK));
    return h;
fail:
    nsp_cl_heap_destroy(h);
    return NULL;
}

int nsp_cl_heap_reset(nsp_cl_heap_t *h, cl_command_queue q)
{
    if (!h || !q)
        return nsp__cl_fail("nsp_cl_heap_reset: the heap and the queue are required");
    if (init_buffer(h, q) < 0)
        return -1;
    h->bad_seen = h->bad_req_seen = 0;
    memset(&h->at_sync, 0, sizeof h->at_sync);
    nsp_pacer_device_report(h->node, 0, 1);
    return 0;
}

int nsp_cl_bind(nsp_cl_heap_t *h, cl_kernel k, cl_uint arg)
{
    if (!h || !k)
        return nsp__cl_fail("nsp_cl_bind: the heap and the kernel are required");
    CHECK(clSetKernelArg(k, arg, sizeof(cl_mem), &h->buf), "clSetKernelArg of the heap");
    return 0;
}

cl_mem nsp_cl_buffer(nsp_cl_heap_t *h)
{
    return h ? h->buf : NULL;
}

size_t nsp_cl_capacity(nsp_cl_heap_t *h)
{
    return h ? (size_t)h->hdr.nchunks * NSP_DCHUNK : 0;
}

/* A blocking read (after what was enqueued before it: the caller's after_queued). */
static int read_region(nsp_cl_heap_t *h, cl_command_queue q, uint64_t off, size_t n, void *out)
{
    CHECK(clEnqueueReadBuffer(q, h->buf, CL_TRUE, off, n, out, 0, NULL, NULL),
          "reading the heap (clEnqueueReadBuffer)");
    return 0;
}

_Static_assert(NSP_DC_COUNT <= NSP_DC_SLOTS, "the header holds NSP_DC_SLOTS counters");

/* The counters as the header and the stripes hold them (the header read into *hdr too). */
static int read_counters(nsp_cl_heap_t *h, cl_command_queue q, struct nsp_dheap_hdr *hdr,
                         nsp_cl_counters_t *c)
{
    size_t n = h->hdr.nslots;
    if (after_queued(q) < 0)
        return -1;
    int64_t *stripes = malloc(n * sizeof *stripes);
    if (!stripes)
        return nsp__cl_fail("device heap \"%s\": out of host memory reading its counters", h->name);
    if (read_region(h, q, h->hdr.off_stripes, n * sizeof *stripes, stripes) < 0 ||
        read_region(h, q, 0, sizeof *hdr, hdr) < 0) {
        free(stripes);
        return -1;
    }
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < n; i++)
        c->heap_live += stripes[i];
    free(stripes);
    const uint64_t *C = hdr->counter;
    c->chunks_carved = (int64_t)(hdr->next_chunk < h->hdr.nchunks ? hdr->next_chunk : h->hdr.nchunks);
    c->chunks_free = (int64_t)hdr->free_chunks + (int64_t)h->hdr.nchunks - c->chunks_carved;
    c->refills = (int64_t)C[NSP_DC_REFILLS];
    c->releases = (int64_t)C[NSP_DC_RELEASES];
    c->fresh = (int64_t)C[NSP_DC_FRESH];
    c->reused = (int64_t)C[NSP_DC_REUSED];
    c->steals = (int64_t)C[NSP_DC_STEALS];
    c->reclaims = (int64_t)C[NSP_DC_RECLAIMS];
    c->sweeps = (int64_t)C[NSP_DC_SWEEPS];
    c->large_allocs = (int64_t)C[NSP_DC_LARGE_ALLOCS];
    c->large_frees = (int64_t)C[NSP_DC_LARGE_FREES];
    c->null_oom = (int64_t)C[NSP_DC_NULL_OOM];
    c->forced_refills = (int64_t)C[NSP_DC_FORCED];
    c->bad_frees = (int64_t)C[NSP_DC_BAD_FREES];
    c->bad_requests = (int64_t)C[NSP_DC_BAD_REQUESTS];
    c->lost = (int64_t)C[NSP_DC_LOST];
    c->snap_waits = (int64_t)C[NSP_DC_SNAP_WAITS];
    return 0;
}

int nsp_cl_counters(nsp_cl_heap_t *h, cl_command_queue q, nsp_cl_counters_t *now,
                    nsp_cl_counters_t *since_sync)
{
    if (!h || !q)
        return nsp__cl_fail("nsp_cl_counters: the heap and the queue are required");
    struct nsp_dheap_hdr hdr;
    nsp_cl_counters_t c;
    if (read_counters(h, q, &hdr, &c) < 0)
        return -1;
    if (now)
        *now = c;
    if (since_sync) {
        /* the struct is int64_t fields only: subtract field by field */
        const int64_t *a = (const int64_t *)&c, *b = (const int64_t *)&h->at_sync;
        int64_t *d = (int64_t *)since_sync;
        for (size_t i = 0; i < sizeof c / sizeof(int64_t); i++)
            d[i] = a[i] - b[i];
    }
    return 0;
}

static int sync_report(nsp_cl_heap_t *h, cl_command_queue q, int reconciled)
{
    if (!h || !q)
        return nsp__cl_fail("nsp_cl_sync: the heap and the queue are required");
    struct nsp_dheap_hdr hdr;
    nsp_cl_counters_t c;
    if (read_counters(h, q, &hdr, &c) < 0)
        return -1;
    h->at_sync = c;
    int advice = nsp_pacer_device_report(h->node, c.heap_live, reconciled);
    /* both kinds of misuse in one message: each sync reports what it saw */
    uint64_t bad = hdr.counter[NSP_DC_BAD_FREES], badreq = hdr.counter[NSP_DC_BAD_REQUESTS];
    int failed = 0;
    if (bad > h->bad_seen) {
        uint64_t first = hdr.counter[NSP_DC_FIRST_BAD];
        nsp__cl_fail("device heap \"%s\": %llu free(s) of handles it did not hand out, or freed "
                     "twice, since the last sync%s%llx; they changed nothing",
                     h->name, (unsigned long long)(bad - h->bad_seen),
                     first ? "; the first bad handle of the heap's life: 0x" : "",
                     (unsigned long long)(first ? first - 1 : 0));
        h->bad_seen = bad;
        failed = 1;
    }
    if (badreq > h->bad_req_seen) {
        char m[400];
        snprintf(m, sizeof m,
                 "%sdevice heap \"%s\": %llu request(s) no heap can serve since the last sync "
                 "(nsp_dcalloc with count x size above 2^64, or nsp_dmalloc_aligned with an "
                 "alignment that is not a power of two up to %u); each got the null handle",
                 failed ? "; and " : "", h->name,
                 (unsigned long long)(badreq - h->bad_req_seen), NSP_DMAX_ALIGN);
        if (!failed)
            nsp__cl_fail("%s", "");
        nsp__cl_fail_append(m);
        h->bad_req_seen = badreq;
        failed = 1;
    }
    if (failed)
        return -1;
    return advice < 0 ? 0 : advice;
}

int nsp_cl_sync(nsp_cl_heap_t *h, cl_command_queue q)
{
    return sync_report(h, q, 0);
}

static int run_ops(nsp_cl_heap_t *h, cl_command_queue q, cl_kernel k, size_t n, const char *what)
{
    if (!h || !q)
        return nsp__cl_fail("%s: the heap and the queue are required", what);
    CHECK(clSetKernelArg(k, 0, sizeof(cl_mem), &h->buf), "clSetKernelArg");
    if (after_queued(q) < 0) /* never beside a user kernel still running */
        return -1;
    size_t local = 64, global = (n + local - 1) / local * local;
    CHECK(clEnqueueNDRangeKernel(q, k, 1, NULL, &global, &local, 0, NULL, NULL),
          "launching the heap's kernel");
    CHECK(clFinish(q), "clFinish after the heap's kernel");
    return 0;
}

int nsp_cl_release(nsp_cl_heap_t *h, cl_command_queue q)
{
    return run_ops(h, q, h ? h->krelease : NULL, h ? slot_words(h->hdr.nslots) : 0,
                   "nsp_cl_release");
}

int nsp_cl_sweep(nsp_cl_heap_t *h, cl_command_queue q)
{
    return run_ops(h, q, h ? h->ksweep : NULL, h ? h->hdr.nchunks : 0, "nsp_cl_sweep");
}

int nsp_cl_reconcile(nsp_cl_heap_t *h, cl_command_queue q)
{
    if (nsp_cl_release(h, q) < 0 || nsp_cl_sweep(h, q) < 0)
        return -1;
    return sync_report(h, q, 1);
}

int nsp_cl_stats(nsp_cl_heap_t *h, cl_command_queue q, nsp_cl_stats_t *st)
{
    if (!h || !q || !st)
        return nsp__cl_fail("nsp_cl_stats: heap, queue and output are required");
    memset(st, 0, sizeof *st);
    const struct nsp_dheap_hdr *L = &h->hdr;
    struct nsp_dheap_hdr hdr;
    if (after_queued(q) < 0 || read_region(h, q, 0, sizeof hdr, &hdr) < 0)
        return -1;
    uint64_t carved = hdr.next_chunk < L->nchunks ? hdr.next_chunk : L->nchunks;
    size_t nslotw = slot_words(L->nslots);
    uint64_t *slots = malloc(nslotw * 8);
    int64_t *stripes = malloc(L->nslots * 8);
    uint32_t *state = malloc((carved ? carved : 1) * 4);
    struct nsp_ddesc *desc = malloc((carved ? carved : 1) * sizeof *desc);
    uint32_t *claimed = calloc(carved ? carved : 1, 4);
    int rc = -1;
    if (!slots || !stripes || !state || !desc || !claimed) {
        nsp__cl_fail("nsp_cl_stats: out of host memory");
        goto out;
    }
    if (read_region(h, q, L->off_slots, nslotw * 8, slots) < 0 ||
        read_region(h, q, L->off_stripes, L->nslots * 8, stripes) < 0 ||
        (carved && read_region(h, q, L->off_state, carved * 4, state) < 0) ||
        (carved && read_region(h, q, L->off_desc, carved * sizeof *desc, desc) < 0))
        goto out;
    for (size_t i = 0; i < L->nslots; i++)
        st->heap_live += stripes[i];
    for (size_t i = 0; i < nslotw; i++) {
        uint32_t c = NSP_DW_SPAN(slots[i]);
        if (c < carved) {
            uint32_t cur = NSP_DW_CUR(slots[i]), na = NSP_DW_NAVAIL(slots[i]);
            claimed[c] = cur < na ? cur : na;
            st->slot_words++;
        }
    }
    for (unsigned k = 0; k < NSP_CL_NCLASSES; k++)
        st->cls[k].size = nsp_geom_class_size(k + NSP_DMIN_CLASS);
    for (uint64_t c = 0; c < carved; c++) {
        uint32_t s = state[c], kind = NSP_DST_STATE(s), cls = NSP_DST_CLASS(s);
        if (kind == NSP_DS_FREE || kind == NSP_DS_NEW) {
            st->chunks_free++;
            continue;
        }
        if (kind == NSP_DS_LARGE) {
            st->large_objects++;
            st->large_bytes += (uint64_t)NSP_DST_RUN(s) * NSP_DCHUNK;
            st->chunks_large += NSP_DST_RUN(s);
            continue;
        }
        if (kind == NSP_DS_LTAIL || kind == NSP_DS_STAIL || cls < NSP_DMIN_CLASS ||
            cls > NSP_DMAX_CLASS)
            continue;
        const struct nsp_ddesc *d = &desc[c];
        int64_t n = kind == NSP_DS_CACHED ? claimed[c] : d->claimed;
        for (unsigned w = 0; w < NSP_DWORDS; w++)
            n += __builtin_popcountll(d->alloc[w]) - __builtin_popcountll(d->freed[w]);
        nsp_cl_class_stats_t *k = &st->cls[cls - NSP_DMIN_CLASS];
        k->objects_in_use += n > 0 ? (uint64_t)n : 0;
        k->spans_cached += kind == NSP_DS_CACHED;
        k->spans_partial += kind == NSP_DS_PARTIAL;
        k->spans_full += kind == NSP_DS_FULL;
    }
    for (unsigned k = 0; k < NSP_CL_NCLASSES; k++) {
        st->objects_in_use += st->cls[k].objects_in_use;
        st->bytes_in_use += st->cls[k].objects_in_use * st->cls[k].size;
    }
    st->objects_in_use += st->large_objects;
    st->bytes_in_use += st->large_bytes;
    st->capacity = L->nchunks * NSP_DCHUNK;
    st->chunks = L->nchunks;
    st->chunks_carved = carved;
    const uint64_t *C = hdr.counter;
    st->refills = C[NSP_DC_REFILLS];
    st->releases = C[NSP_DC_RELEASES];
    st->fresh = C[NSP_DC_FRESH];
    st->reused = C[NSP_DC_REUSED];
    st->steals = C[NSP_DC_STEALS];
    st->reclaims = C[NSP_DC_RECLAIMS];
    st->sweeps = C[NSP_DC_SWEEPS];
    st->large_allocs = C[NSP_DC_LARGE_ALLOCS];
    st->large_frees = C[NSP_DC_LARGE_FREES];
    st->null_oom = C[NSP_DC_NULL_OOM];
    st->forced_refills = C[NSP_DC_FORCED];
    st->bad_frees = C[NSP_DC_BAD_FREES];
    st->lost = C[NSP_DC_LOST];
    st->bad_requests = C[NSP_DC_BAD_REQUESTS];
    st->first_bad = C[NSP_DC_FIRST_BAD] ? C[NSP_DC_FIRST_BAD] - 1 : 0;
    st->accounting = (int)L->acct;
    st->slots = (uint32_t)L->nslots;
    st->centrals = (uint32_t)L->ncentrals;
    st->fence_shim = h->fence_shim;
    snprintf(st->device, sizeof st->device, "%s", h->devname);
    rc = 0;
out:
    free(slots);
    free(stripes);
    free(state);
    free(desc);
    free(claimed);
    return rc;
}

void nsp_cl_stats_print(FILE *out, const nsp_cl_stats_t *s, int json)
{
    static const char *acct[] = {"over", "under", "exact"};
    const char *a = s->accounting >= 0 && s->accounting <= 2 ? acct[s->accounting] : "?";
    if (json) {
        fprintf(out,
                "{\"device\": \"%s\", \"capacity\": %llu, \"chunks\": %llu, \"chunks_carved\": %llu, "
                "\"chunks_free\": %llu, \"heap_live\": %lld, \"bytes_in_use\": %llu, "
                "\"objects_in_use\": %llu, \"large_objects\": %llu, \"refills\": %llu, "
                "\"releases\": %llu, \"steals\": %llu, \"reclaims\": %llu, \"sweeps\": %llu, "
                "\"null_oom\": %llu, \"forced_refills\": %llu, \"bad_frees\": %llu, "
                "\"bad_requests\": %llu, \"lost\": %llu, "
                "\"accounting\": \"%s\", \"slots\": %u, \"centrals\": %u, \"fence_shim\": %s, "
                "\"fence\": \"%s\"}\n",
                s->device, (unsigned long long)s->capacity, (unsigned long long)s->chunks,
                (unsigned long long)s->chunks_carved, (unsigned long long)s->chunks_free,
                (long long)s->heap_live, (unsigned long long)s->bytes_in_use,
                (unsigned long long)s->objects_in_use, (unsigned long long)s->large_objects,
                (unsigned long long)s->refills, (unsigned long long)s->releases,
                (unsigned long long)s->steals, (unsigned long long)s->reclaims,
                (unsigned long long)s->sweeps, (unsigned long long)s->null_oom,
                (unsigned long long)s->forced_refills, (unsigned long long)s->bad_frees,
                (unsigned long long)s->bad_requests, (unsigned long long)s->lost, a, s->slots, s->centrals,
                s->fence_shim == NSP_CL_FENCE_MEMBAR ? "true" : "false",
                nsp_cl_fence_name(s->fence_shim));
        return;
    }
    fprintf(out, "device heap on %s: %.1f MiB pool (%llu chunks, %llu carved, %llu free), %u "
                 "slots x %u centrals per class, accounting %s, fence %s\n",
            s->device, s->capacity / 1048576.0, (unsigned long long)s->chunks,
            (unsigned long long)s->chunks_carved, (unsigned long long)s->chunks_free, s->slots,
            s->centrals, a, nsp_cl_fence_name(s->fence_shim));
    fprintf(out, "  heapLive %.3f MiB; in use %.3f MiB in %llu objects (%llu large)\n",
            s->heap_live / 1048576.0, s->bytes_in_use / 1048576.0,
            (unsigned long long)s->objects_in_use, (unsigned long long)s->large_objects);
    fprintf(out, "  slot words holding a span %llu\n", (unsigned long long)s->slot_words);
    fprintf(out, "  refills %llu (fresh %llu, reused %llu), releases %llu, steals %llu, reclaims "
                 "%llu, sweeps %llu, large %llu/%llu\n",
            (unsigned long long)s->refills, (unsigned long long)s->fresh,
            (unsigned long long)s->reused, (unsigned long long)s->releases,
            (unsigned long long)s->steals, (unsigned long long)s->reclaims,
            (unsigned long long)s->sweeps, (unsigned long long)s->large_allocs,
            (unsigned long long)s->large_frees);
    fprintf(out, "  nulls (heap exhausted) %llu; refills forced by the retry bound %llu; bad frees %llu; "
                 "bad requests %llu; lost claims %llu\n",
            (unsigned long long)s->null_oom, (unsigned long long)s->forced_refills,
            (unsigned long long)s->bad_frees, (unsigned long long)s->bad_requests,
            (unsigned long long)s->lost);
    for (unsigned k = 0; k < NSP_CL_NCLASSES; k++) {
        const nsp_cl_class_stats_t *c = &s->cls[k];
        if (c->objects_in_use || c->spans_cached || c->spans_partial || c->spans_full)
            fprintf(out, "  class %5u B: %llu objects, spans cached %llu partial %llu full %llu\n",
                    c->size, (unsigned long long)c->objects_in_use,
                    (unsigned long long)c->spans_cached, (unsigned long long)c->spans_partial,
                    (unsigned long long)c->spans_full);
    }
}

const char *nsp_cl_fence_name(int fence)
{
    return fence == NSP_CL_FENCE_MEMBAR         ? "membar.gl"
           : fence == NSP_CL_FENCE_DEVICE_SCOPE ? "device-scope atomic_work_item_fence"
                                                : "none";
}

void nsp_cl_heap_destroy(nsp_cl_heap_t *h)
{
    if (!h)
        return;
    if (h->node >= 0)
        nsp_pacer_device_detach(h->node);
    if (h->krelease)
        clReleaseKernel(h->krelease);
    if (h->ksweep)
        clReleaseKernel(h->ksweep);
    if (h->ops)
        clReleaseProgram(h->ops);
    if (h->buf)
        clReleaseMemObject(h->buf);
    clReleaseContext(h->ctx);
    free(h);
}
