/*
 * tests/fuzz/fuzz_api.c — the fuzz driver over numaspan's whole allocation API.
 *
 * An input is a byte string read as a sequence of 4-byte operations (operation, slot, size) on a
 * table of 64 slots shared by 2-4 threads: malloc, calloc, realloc, reallocarray, free,
 * posix_memalign, aligned_alloc, memalign, valloc, pvalloc, malloc_usable_size, nsp_malloc_node,
 * nsp_node_of, malloc_trim, nsp_trim, nsp_pacer_cycle and nsp_stats_get. A slot is taken by CAS
 * (its pointer swapped for BUSY), so whichever thread runs the next operation on it frees or
 * reallocates what another thread allocated: cross-thread frees come from the schedule itself.
 *
 * Content stamps: every object is filled, over its whole usable size (sampled above 64 KiB), with
 * a pattern drawn from a seed that no other object has, and checked at every free, realloc and
 * check operation. An object handed out twice, overlapping another, or scribbled on by the
 * allocator fails loudly, naming the slot, the entry point that made it and the first bad byte.
 * The allocator's own error counters (bad frees it caught) must not move: this driver never
 * misuses the API, so any report is a false one.
 *
 * One source, two builds:
 *   - the plain seeded driver (every build, CTest): random inputs from a printed seed, for a
 *     bounded time or count; `fuzz_api --seed S --skip I --iterations 1` replays input I, and a
 *     file argument replays a saved input (a libFuzzer crash file included);
 *   - a libFuzzer target (clang, -DNSP_LIBFUZZER; `tests/sanitize.sh libfuzzer`), under ASan and
 *     UBSan; its crash files replay in the plain driver too: `fuzz_api crash-<sha>`.
 *
 * Which malloc: the driver links the *shared* libnumaspan and calls numaspan by its nsp_* names
 * and, for the standard-only entry points (memalign, valloc, pvalloc, reallocarray, malloc_trim),
 * through dlsym on libnumaspan's own handle, checked to resolve inside libnumaspan. In a plain
 * build the process's malloc is numaspan anyway. Under a sanitizer the runtime's malloc comes
 * first in the search order and stays the process's malloc (libFuzzer's, hwloc's and libc's
 * allocations go to ASan, which checks them, and ASan's own interceptors such as strdup never
 * hand ASan memory to numaspan's free), while every call this driver makes still reaches
 * numaspan. Linking numaspan's objects statically instead would replace the sanitizer's malloc
 * with numaspan's inside the sanitizer's own process: the runtime's interceptors and numaspan
 * would then free each other's memory.
 *
 * Beyond the stamps, each call's contract is checked: alignment, usable size, calloc's zeroes,
 * errno kept by free and untouched by a successful allocation, glibc's memalign (an alignment that
 * is no power of two rounded up), zero sizes at any alignment, realloc to 0 freeing.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "numaspan.h"

#define NSLOTS 64
#define MAX_THREADS 4
#define OP_BYTES 4
#define BUSY ((unsigned char *)1)

/* ---- the entry points that exist only under their standard names ------------------------------ */

static struct {
    void *(*reallocarray)(void *, size_t, size_t);
    void *(*memalign)(size_t, size_t);
    void *(*valloc)(size_t);
    void *(*pvalloc)(size_t);
    int (*malloc_trim)(size_t);
} api;

/* ---- failure ------------------------------------------------------------------------------------ */

#ifndef NSP_LIBFUZZER
static uint64_t run_seed;      /* the plain driver's seed and input number, for the replay line */
static uint64_t run_iteration;
#endif

static void __attribute__((noreturn, format(printf, 1, 2))) fail(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
#ifdef NSP_LIBFUZZER
    fprintf(stderr, "fuzz_api: FAIL: %s\n", msg);
#else
    fprintf(stderr, "fuzz_api: FAIL: %s\n  replay: fuzz_api --seed %" PRIu64 " --skip %" PRIu64
            " --iterations 1\n", msg, run_seed, run_iteration);
#endif
    abort();
}

static void resolve_api(void)
{
    Dl_info self;
    if (!dladdr((void *)nsp_malloc, &self) || !self.dli_fname)
        fail("dladdr(nsp_malloc) failed: cannot find libnumaspan");
    void *h = dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD);
    if (!h)
        fail("dlopen(%s, RTLD_NOLOAD): %s (the driver must link the shared libnumaspan)",
             self.dli_fname, dlerror());
    const char *names[] = {"reallocarray", "memalign", "valloc", "pvalloc", "malloc_trim"};
    void **slots[] = {(void **)&api.reallocarray, (void **)&api.memalign, (void **)&api.valloc,
                      (void **)&api.pvalloc, (void **)&api.malloc_trim};
    for (unsigned i = 0; i < sizeof names / sizeof *names; i++) {
        void *f = dlsym(h, names[i]);
        Dl_info at;
        if (!f || !dladdr(f, &at) || at.dli_fbase != self.dli_fbase)
            fail("%s does not resolve inside %s: the driver would test another allocator",
                 names[i], self.dli_fname);
        *slots[i] = f;
    }
}

/* ---- content stamps ----------------------------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

static inline unsigned char stamp_byte(uint64_t h, size_t j)
{
    return (unsigned char)((h >> ((j & 7) * 8)) ^ (j >> 3) ^ (j >> 11));
}

#define STAMP_FULL (64 * 1024) /* above: sampled, so 32 MiB objects stay cheap */

/* Calls fn on each stamped byte range of an n-byte object: all of it up to STAMP_FULL, else the
 * first and last 4 KiB and 64 bytes of every 64 KiB. */
#define FOR_STAMPED(n, body)                                                                       \
    do {                                                                                           \
        size_t n_ = (n);                                                                           \
        if (n_ <= STAMP_FULL) {                                                                    \
            size_t lo = 0, hi = n_;                                                                \
            body;                                                                                  \
        } else {                                                                                   \
            for (size_t b_ = 0; b_ < n_; b_ += 65536) {                                            \
                size_t lo = b_, hi = b_ + (b_ == 0 ? 4096 : 64);                                   \
                body;                                                                              \
            }                                                                                      \
            {                                                                                      \
                size_t lo = n_ - 4096, hi = n_;                                                    \
                body;                                                                              \
            }                                                                                      \
        }                                                                                          \
    } while (0)

static void stamp(unsigned char *p, size_t n, uint64_t seed)
{
    uint64_t h = mix64(seed);
    FOR_STAMPED(n, for (size_t j = lo; j < hi; j++) p[j] = stamp_byte(h, j));
}

/* ---- the slot table ----------------------------------------------------------------------------- */

enum how { BY_MALLOC, BY_CALLOC, BY_REALLOC, BY_REALLOCARRAY, BY_POSIX_MEMALIGN, BY_ALIGNED_ALLOC,
           BY_MEMALIGN, BY_VALLOC, BY_PVALLOC, BY_MALLOC_NODE };
static const char *how_name[] = {"malloc", "calloc", "realloc", "reallocarray", "posix_memalign",
                                 "aligned_alloc", "memalign", "valloc", "pvalloc",
                                 "nsp_malloc_node"};

/* A slot's fields belong to whoever swapped its pointer for BUSY; the swap back publishes them. */
struct slot {
    _Atomic(unsigned char *) p; /* the object, NULL, or BUSY while a thread holds the slot */
    unsigned char *obj;         /* the object, for its holder */
    size_t n, usable;   /* requested and usable size */
    uint64_t seed;
    enum how how;
    size_t align;
};

static struct slot slots[NSLOTS];
static _Atomic uint64_t next_seed = 1;
static unsigned nnodes;
static uint64_t errors_at_start;

static void check(const struct slot *s, unsigned i, const char *when)
{
    size_t u = nsp_malloc_usable_size(s->obj);
    if (u != s->usable)
        fail("slot %u (%zu B from %s, %p): malloc_usable_size changed from %zu to %zu at %s", i,
             s->n, how_name[s->how], (void *)s->obj, s->usable, u, when);
    uint64_t h = mix64(s->seed);
    const unsigned char *p = s->obj;
    FOR_STAMPED(s->usable, for (size_t j = lo; j < hi; j++) if (p[j] != stamp_byte(h, j))
        fail("slot %u (%zu B usable %zu from %s, %p): byte %zu is %#x, stamped %#x, at %s: the "
             "object was overwritten or handed out twice", i, s->n, s->usable, how_name[s->how],
             (void *)p, j, p[j], stamp_byte(h, j), when));
}

static int take(unsigned i, unsigned char **cur)
{
    *cur = atomic_load_explicit(&slots[i].p, memory_order_acquire);
    if (*cur == BUSY)
        return 0;
    return atomic_compare_exchange_strong_explicit(&slots[i].p, cur, BUSY, memory_order_acquire,
                                                   memory_order_relaxed);
}

static void put(unsigned i, unsigned char *p)
{
    atomic_store_explicit(&slots[i].p, p, memory_order_release);
}

static void release_object(struct slot *s, unsigned i, const char *when)
{
    check(s, i, when);
    int e = errno = 4242;
    nsp_free(s->obj);
    if (errno != e)
        fail("free of slot %u (%zu B from %s) changed errno to %d", i, s->n, how_name[s->how],
             errno);
    s->obj = NULL;
}

/* A fresh object in s: checks what every entry point promises, then stamps it. */
static void adopt(struct slot *s, unsigned i, unsigned char *p, size_t n, enum how how,
                  size_t align)
{
    size_t u = nsp_malloc_usable_size(p);
    if (u < n)
        fail("%s(%zu) gave %p with malloc_usable_size %zu", how_name[how], n, (void *)p, u);
    /* without an alignment asked for: 16, but the 8-byte class is only 8-aligned */
    size_t need = align ? align : n <= 8 ? 8 : 16;
    if ((uintptr_t)p % need)
        fail("%s(%zu, align %zu) gave %p: not %zu-aligned", how_name[how], n, align, (void *)p,
             need);
    int node = nsp_node_of(p);
    if (node < 0 || (unsigned)node >= nnodes)
        fail("%s(%zu) gave %p, which nsp_node_of places on node %d of %u", how_name[how], n,
             (void *)p, node, nnodes);
    s->obj = p;
    s->n = n;
    s->usable = u;
    s->how = how;
    s->align = align;
    s->seed = atomic_fetch_add_explicit(&next_seed, 1, memory_order_relaxed);
    stamp(p, u, s->seed);
    (void)i;
}

/* ---- decoding an operation ---------------------------------------------------------------------- */

/* Mostly small, some medium and large, rarely huge (>= 32 MiB, a mapping of its own). */
static size_t decode_size(unsigned v)
{
    unsigned t = v >> 13, low = v & 0x1fff;
    switch (t) {
    case 0: case 1: case 2: return low & 0x1ff;          /* 0 .. 511 B */
    case 3: case 4: return low;                           /* .. 8 KiB */
    case 5: return (size_t)low * 5;                       /* .. 40 KiB: the small/large border */
    case 6: return (size_t)low * 64;                      /* .. 512 KiB */
    default:
        if ((low & 0xff) == 0)
            return ((size_t)32 << 20) + ((size_t)(low >> 8) << 12); /* huge */
        return (size_t)low * 256;                         /* .. 2 MiB */
    }
}

static size_t decode_align(unsigned v)
{
    return (size_t)8 << (v % 14); /* 8 B .. 64 KiB */
}

static void expect_null(void *p, int err, const char *what)
{
    if (p)
        fail("%s returned %p, expected NULL", what, p);
    if (errno != err)
        fail("%s returned NULL with errno %d, expected %d", what, errno, err);
}

/* An allocation into slot i (free what it holds first). A NULL from an entry point is a failure:
 * the sizes here are far below what this machine can map. */
static void op_alloc(unsigned op, unsigned i, unsigned v, const uint8_t *b)
{
    unsigned char *cur;
    if (!take(i, &cur))
        return;
    struct slot *s = &slots[i];
    if (cur)
        release_object(s, i, "free before reuse");
    size_t n = decode_size(v), align = 0;
    unsigned char *p = NULL;
    enum how how;
    int saved = errno = 777;
    switch (op) {
    case 0: case 1: case 2: case 3: case 4: case 5:
        how = BY_MALLOC;
        p = nsp_malloc(n);
        break;
    case 6: case 7: {
        how = BY_CALLOC;
        size_t k = 1 + b[0] % 4; /* n split into k elements where it divides */
        if (n % k)
            k = 1;
        p = nsp_calloc(k, n / k);
        if (p) {
            FOR_STAMPED(n, for (size_t j = lo; j < hi; j++) if (p[j])
                fail("calloc(%zu, %zu) gave %p whose byte %zu is %#x, not 0", k, n / k,
                     (void *)p, j, p[j]));
        }
        break;
    }
    case 19: {
        how = BY_POSIX_MEMALIGN;
        align = decode_align(b[0]);
        void *q = NULL;
        int r = nsp_posix_memalign(&q, align, n);
        if (r)
            fail("posix_memalign(%zu, %zu) returned %d", align, n, r);
        p = q;
        break;
    }
    case 20:
        how = BY_ALIGNED_ALLOC;
        align = decode_align(b[0]);
        p = nsp_aligned_alloc(align, n);
        break;
    case 21:
        how = BY_MEMALIGN;
        align = decode_align(b[0]);
        if (b[0] & 0x80) {
            /* glibc rounds an alignment that is not a power of two up to the next one */
            size_t a = align + 8 * (b[0] & 7);
            p = api.memalign(a, n);
            while (align < a)
                align <<= 1;
            break;
        }
        p = api.memalign(align, n);
        break;
    case 22:
        how = BY_VALLOC;
        align = 4096;
        p = api.valloc(n);
        break;
    case 23:
        how = BY_PVALLOC;
        align = 4096;
        p = api.pvalloc(n);
        if (p && nsp_malloc_usable_size(p) < ((n + 4095) & ~(size_t)4095))
            fail("pvalloc(%zu) gave %zu usable bytes, less than the page-rounded size", n,
                 nsp_malloc_usable_size(p));
        break;
    default: { /* 25 */
        how = BY_MALLOC_NODE;
        unsigned node = b[0] % (nnodes + 1);
        p = nsp_malloc_node(n, node);
        if (node == nnodes) { /* out of range */
            expect_null(p, EINVAL, "nsp_malloc_node(node out of range)");
            put(i, NULL);
            return;
        }
        break;
    }
    }
    if (!p)
        fail("%s(%zu, align %zu) returned NULL (errno %d)", how_name[how], n, align, errno);
    if (errno != saved)
        fail("%s(%zu) succeeded but changed errno to %d", how_name[how], n, errno);
    adopt(s, i, p, n, how, align);
    put(i, p);
}

static void op_realloc(unsigned op, unsigned i, unsigned v, const uint8_t *b)
{
    unsigned char *cur;
    if (!take(i, &cur))
        return;
    struct slot *s = &slots[i];
    size_t n = decode_size(v);
    if (!cur) {
        unsigned char *p = op == 11 ? api.reallocarray(NULL, 1, n) : nsp_realloc(NULL, n);
        if (!p)
            fail("realloc(NULL, %zu) returned NULL", n);
        adopt(s, i, p, n, op == 11 ? BY_REALLOCARRAY : BY_REALLOC, 0);
        put(i, p);
        return;
    }
    check(s, i, "realloc");
    if (op == 28 || n == 0) { /* realloc to 0 frees (and returns NULL), as glibc does */
        void *r = op == 11 ? api.reallocarray(cur, 1 + b[0] % 4, 0) : nsp_realloc(cur, 0);
        if (r)
            fail("%s(%p, 0) returned %p, expected NULL (freed)", op == 11 ? "reallocarray" : "realloc",
                 (void *)cur, r);
        s->obj = NULL;
        put(i, NULL);
        return;
    }
    size_t keep = s->n < n ? s->n : n;
    uint64_t old_seed = s->seed;
    size_t old_usable = s->usable;
    unsigned char *p;
    if (op == 11) {
        size_t k = 1 + b[0] % 4;
        if (n % k)
            k = 1;
        p = api.reallocarray(cur, k, n / k);
    } else {
        p = nsp_realloc(cur, n);
    }
    if (!p)
        fail("realloc(%p, %zu) returned NULL", (void *)cur, n);
    uint64_t h = mix64(old_seed);
    /* the old object's stamped bytes that the new size keeps */
    FOR_STAMPED(old_usable, for (size_t j = lo; j < hi && j < keep; j++) if (p[j] != stamp_byte(h, j))
        fail("realloc of slot %u from %zu to %zu B (%p -> %p): byte %zu is %#x, was %#x", i,
             s->n, n, (void *)cur, (void *)p, j, p[j], stamp_byte(h, j)));
    adopt(s, i, p, n, op == 11 ? BY_REALLOCARRAY : BY_REALLOC, 0);
    put(i, p);
}

static void op_slot(unsigned op, unsigned i)
{
    unsigned char *cur;
    if (!take(i, &cur))
        return;
    struct slot *s = &slots[i];
    if (!cur) {
        put(i, NULL);
        return;
    }
    switch (op) {
    case 24: /* check in place, then write the whole usable size again */
        check(s, i, "malloc_usable_size");
        s->seed = atomic_fetch_add_explicit(&next_seed, 1, memory_order_relaxed);
        stamp(cur, s->usable, s->seed);
        put(i, cur);
        return;
    case 26:
        check(s, i, "check");
        put(i, cur);
        return;
    case 27: {
        int node = nsp_node_of(cur + s->n / 2);
        if (node < 0 || (unsigned)node >= nnodes)
            fail("nsp_node_of(inside slot %u) = %d of %u nodes", i, node, nnodes);
        put(i, cur);
        return;
    }
    default: /* free */
        release_object(s, i, "free");
        put(i, NULL);
    }
}

static void op_global(unsigned op, unsigned v)
{
    switch (op) {
    case 29: {
        nsp_stats_t st;
        if (nsp_stats_get(&st) != 0)
            fail("nsp_stats_get returned -1 with the allocator running");
        if (st.nnodes != nnodes)
            fail("nsp_stats_get: %u nodes, the topology has %u", st.nnodes, nnodes);
        break;
    }
    case 30:
        if (v & 1)
            api.malloc_trim(0);
        else
            nsp_trim();
        break;
    default: /* 31 */
        nsp_pacer_cycle();
    }
}

static void run_op(const uint8_t *b)
{
    unsigned op = b[0] % 32, i = b[1] % NSLOTS, v = b[2] | (unsigned)b[3] << 8;
    /* global operations are rare: only for some slot bytes, else an allocation */
    if (op >= 29 && b[1] >= 16)
        op = b[1] & 7;
    if (op <= 7 || (op >= 19 && op <= 23) || op == 25)
        op_alloc(op, i, v, b + 1);
    else if (op <= 11 || op == 28)
        op_realloc(op, i, v, b + 1);
    else if (op <= 18 || op == 24 || op == 26 || op == 27)
        op_slot(op, i);
    else
        op_global(op, v);
}

/* ---- one input ---------------------------------------------------------------------------------- */

struct worker {
    pthread_t tid;
    const uint8_t *ops;
    size_t nops;
    unsigned first, stride;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (size_t k = w->first; k < w->nops; k += w->stride)
        run_op(w->ops + k * OP_BYTES);
    return NULL;
}

static uint64_t errors_now(void)
{
    nsp_stats_t st;
    if (nsp_stats_get(&st) != 0)
        return 0;
    return st.not_owned_frees + st.interior_frees + st.double_frees;
}

/* The alignment contracts, swept once before any input: the fuzzed sizes reach a small size
 * with a small alignment only by chance (memalign(16, 5) once came back 8-aligned: a class-8
 * slot, 16-aligned or not by its index). Everything is held until the end, so that consecutive
 * slots are handed out rather than one slot again and again. */
static void check_alignment_contracts(void)
{
    static const size_t sizes[] = {0, 1, 5, 8, 9, 16, 17, 100, 5000, 40000};
    static const char *names[] = {"memalign", "aligned_alloc", "posix_memalign"};
    enum { NS = sizeof sizes / sizeof *sizes, NA = 14, REP = 4 };
    static void *held[NA * NS * REP * 3];
    unsigned nheld = 0;
    for (unsigned r = 0; r < REP; r++) {
        for (size_t a = 1; a <= 8192; a <<= 1) {
            for (unsigned k = 0; k < NS; k++) {
                size_t n = sizes[k];
                for (unsigned i = 0; i < 3; i++) {
                    void *p = NULL;
                    if (i == 0)
                        p = api.memalign(a, n);
                    else if (i == 1)
                        p = nsp_aligned_alloc(a, n);
                    else if (a < sizeof(void *))
                        continue;
                    else if (nsp_posix_memalign(&p, a, n))
                        p = NULL;
                    if (!p)
                        fail("%s(%zu, %zu) failed (errno %d)", names[i], a, n, errno);
                    if ((uintptr_t)p % a)
                        fail("%s(%zu, %zu) gave %p: not %zu-aligned", names[i], a, n, p, a);
                    held[nheld++] = p;
                }
            }
        }
    }
    while (nheld)
        nsp_free(held[--nheld]);
}

static void setup(void)
{
    static int done;
    if (done)
        return;
    done = 1;
    resolve_api();
    nsp_free(nsp_malloc(1)); /* initialises the allocator */
    check_alignment_contracts();
    nnodes = nsp_topo_num_nodes(nsp_topology());
    errors_at_start = errors_now();
}

/* Runs one input: byte 0 picks 2-4 threads, the rest is operations dealt round robin. Every slot
 * is checked and freed at the end, so inputs are independent. */
static void run_input(const uint8_t *data, size_t len)
{
    setup();
    if (len < 1)
        return;
    unsigned nthreads = 2 + data[0] % 3;
    struct worker w[MAX_THREADS];
    size_t nops = (len - 1) / OP_BYTES;
    for (unsigned t = 0; t < nthreads; t++) {
        w[t] = (struct worker){.ops = data + 1, .nops = nops, .first = t, .stride = nthreads};
        int r = pthread_create(&w[t].tid, NULL, worker_main, &w[t]);
        if (r)
            fail("pthread_create: %s", strerror(r));
    }
    for (unsigned t = 0; t < nthreads; t++)
        pthread_join(w[t].tid, NULL);
    for (unsigned i = 0; i < NSLOTS; i++) {
        unsigned char *cur = atomic_load(&slots[i].p);
        if (cur) {
            release_object(&slots[i], i, "the end of the input");
            atomic_store(&slots[i].p, NULL);
        }
    }
    uint64_t e = errors_now();
    if (e != errors_at_start)
        fail("numaspan reported %" PRIu64 " bad frees that this driver never made",
             e - errors_at_start);
}

#ifdef NSP_LIBFUZZER

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    run_input(data, len);
    return 0;
}

#else

static uint64_t rng(uint64_t *s)
{
    *s += 0x9e3779b97f4a7c15ULL;
    return mix64(*s);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "fuzz_api: cannot open input file \"%s\": %s\n", path, strerror(errno));
        return 2;
    }
    static uint8_t buf[1 << 20];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    run_input(buf, len);
    printf("fuzz_api: %s: %zu operations passed\n", path, len / OP_BYTES);
    return 0;
}

static int parse_u64(const char *opt, const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = s ? strtoull(s, &end, 0) : 0;
    if (!s || errno || end == s || *end || s[0] == '-') {
        fprintf(stderr, "fuzz_api: %s \"%s\": not a non-negative integer\n", opt, s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    uint64_t seed = 0, iterations = UINT64_MAX, seconds = 10, skip = 0, max_ops = 2048;
    int have_seed = 0;
    for (int a = 1; a < argc; a++) {
        const char *o = argv[a];
        uint64_t *dst = !strcmp(o, "--seed") ? &seed : !strcmp(o, "--iterations") ? &iterations
                      : !strcmp(o, "--seconds") ? &seconds : !strcmp(o, "--skip") ? &skip
                      : !strcmp(o, "--max-ops") ? &max_ops : NULL;
        if (dst) {
            if (parse_u64(o, a + 1 < argc ? argv[++a] : NULL, dst) < 0)
                return 2;
            have_seed |= dst == &seed;
        } else if (o[0] == '-') {
            fprintf(stderr, "fuzz_api: unknown option \"%s\"\nusage: fuzz_api [--seed S] "
                    "[--iterations N] [--seconds T] [--skip I] [--max-ops K] "
                    "[input files...]\n", o);
            return 2;
        } else {
            int r = replay_file(o);
            if (r || a == argc - 1)
                return r;
        }
    }
    if (max_ops < 1 || max_ops > 100000) {
        fprintf(stderr, "fuzz_api: --max-ops %" PRIu64 ": must be 1..100000\n", max_ops);
        return 2;
    }
    if (!have_seed)
        seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    run_seed = seed;
    printf("fuzz_api: seed %" PRIu64 " (replay: fuzz_api --seed %" PRIu64 ")\n", seed, seed);
    fflush(stdout);
    uint8_t *buf = malloc(1 + max_ops * OP_BYTES);
    if (!buf)
        return 2;
    double end = now_s() + (double)seconds;
    uint64_t done = 0, ops = 0;
    for (uint64_t it = 0; it - skip < iterations || it < skip; it++) {
        /* input `it` depends on (seed, it) only, so --skip replays it without the ones before */
        uint64_t s = seed ^ mix64(it + 1);
        size_t len = 1 + OP_BYTES * (1 + rng(&s) % max_ops);
        for (size_t k = 0; k < len; k++)
            buf[k] = (uint8_t)rng(&s);
        if (it < skip)
            continue;
        run_iteration = it;
        run_input(buf, len);
        done++;
        ops += (len - 1) / OP_BYTES;
        if (now_s() >= end)
            break;
    }
    free(buf);
    printf("fuzz_api: %" PRIu64 " inputs, %" PRIu64 " operations passed (seed %" PRIu64 ")\n",
           done, ops, seed);
    return 0;
}

#endif
