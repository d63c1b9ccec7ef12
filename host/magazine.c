/*
 * host/magazine.c — the remote-free magazines' key and flush (magazine.h says what a magazine
 * holds and why the tag exists; cache.h and cache.c push, detach and attach them).
 */
#include "magazine.h"

#include <errno.h>
#include <string.h>

#include "central.h"
#include "os.h"
#include "pageheap.h"
#include "runtime.h"
#include "span.h"

uint64_t nsp__bin_key_top;

void nsp__magazine_init(void)
{
    /* the cache index rides in bits 48..62 of a tag: the key leaves them to it */
    nsp__magazine_key = nsp__os_random() & ~(0x7fffULL << 48);
    /* not 0 (a pointer's or a small integer's top bits) nor 0xffff (a small negative one's): a
     * program's usual first words are then never taken for links. Bit 15 the opposite of the
     * tag key's bit 63: a tag's top bits (that bit, then the cache index) never look like a
     * link's either, so the flush of a slab or magazine, whose objects all carry a tag, reads no
     * bin (nsp__cache_drop_listed) */
    uint64_t lo = 1 + nsp__os_random() % 0x7ffe; /* 1 .. 0x7ffe */
    uint64_t hi = (nsp__magazine_key >> 63) ? 0 : 0x8000;
    nsp__bin_key_top = (hi | lo) << 48;
}

/* The flush groups a magazine's objects by (span, bitmap word) in a small open-addressed table,
 * in one pass, instead of sorting them by address first. Measured on 60 random addresses, as
 * Larson's frees fill a magazine: the insertion sort it replaces took 1.0-1.3 us per flush (a
 * shell sort 2.0, a heap sort 2.2: their comparisons mispredict), ~17 ns per remote free, and was
 * the larger part of nsp__magazine_apply's samples at 8 threads on 2 cpus. A span looked up once
 * serves the objects after it while they fall in the same page (a producer's frees come in
 * order), and so does a group: an object of the previous object's (span, word) joins it without
 * a look-up, and the first NSP_MAG_LINEAR groups are searched in a row (a flush of a producer's
 * frees holds one to a few; the table's memset and probes were a fifth of the flush's samples
 * there). */
#define NSP_MAG_HASH_BITS 7
#define NSP_MAG_HASH (1u << NSP_MAG_HASH_BITS) /* at least twice NSP_MAG_SLOTS: short probes */
_Static_assert(NSP_MAG_HASH >= 2 * NSP_MAG_SLOTS && NSP_MAG_SLOTS < 255, "the table's size");

struct group {
    struct nsp_span *s;
    uint64_t mask; /* the bits of its objects in word w */
    uint32_t w;
};

/* The first of objs[0..n) that lies in g's span and word with its bit in bad. */
static uintptr_t first_of(const struct group *g, const uintptr_t *objs, unsigned n, uint64_t bad)
{
    uintptr_t lo = g->s->base, hi = lo + (uintptr_t)g->s->nelems * g->s->elemsize;
    for (unsigned i = 0; i < n; i++) {
        if (objs[i] < lo || objs[i] >= hi)
            continue;
        uint32_t idx = nsp__span_index(g->s, objs[i]);
        if (idx >> 6 == g->w && (bad >> (idx & 63) & 1))
            return objs[i];
    }
    return objs[n - 1];
}

/* The slot of (s, w) in the table: its group's, or the empty one where it goes. */
static unsigned hash_slot(const uint8_t *at, const struct group *g, const struct nsp_span *s,
                          uint32_t w)
{
    unsigned h = ((uint32_t)((uintptr_t)s >> 7) * 0x9e3779b1u + w * 0x85ebca6bu) >>
                 (32 - NSP_MAG_HASH_BITS);
    while (at[h] && (g[at[h] - 1].s != s || g[at[h] - 1].w != w))
        h = (h + 1) & (NSP_MAG_HASH - 1);
    return h;
}

/* The group of (s, w) among g[0..*ng), added when new. Few groups are searched in a row (a
 * producer's frees fill a magazine with a few runs of one word each); past NSP_MAG_LINEAR groups
 * the hash table takes over, filled then with the groups found so far. */
#define NSP_MAG_LINEAR 4
static struct group *group_of(struct group *g, unsigned *ng, uint8_t *at, struct nsp_span *s,
                              uint32_t w)
{
    if (*ng <= NSP_MAG_LINEAR) {
        for (unsigned k = 0; k < *ng; k++)
            if (g[k].s == s && g[k].w == w)
                return &g[k];
        if (*ng < NSP_MAG_LINEAR) {
            g[*ng] = (struct group){s, 0, w};
            return &g[(*ng)++];
        }
        /* the first group past the linear part: index the ones found so far */
        memset(at, 0, NSP_MAG_HASH);
        for (unsigned k = 0; k < *ng; k++)
            at[hash_slot(at, g, g[k].s, g[k].w)] = (uint8_t)(k + 1);
    }
    unsigned h = hash_slot(at, g, s, w);
    if (!at[h]) {
        g[*ng] = (struct group){s, 0, w};
        at[h] = (uint8_t)++*ng;
    }
    return &g[at[h] - 1];
}

/* objs[0..n), n <= NSP_MAG_SLOTS. */
static void apply_some(const uintptr_t *objs, unsigned n)
{
    struct group g[NSP_MAG_SLOTS];
    uint8_t at[NSP_MAG_HASH]; /* past NSP_MAG_LINEAR groups: 0 empty, else 1 + a group's index */
    unsigned ng = 0;
    struct nsp_span *s = NULL;
    struct group *e = NULL; /* the previous object's group: most objects share it */
    uintptr_t page = 0;     /* the previous object's page: its span's */
    for (unsigned i = 0; i < n; i++) {
        uintptr_t p = objs[i];
        /* every object passed the free's checks: an allocated object of a live span. The test
         * reads addresses only, so that the look-ups of random objects overlap their misses
         * (nsp__cache_drop_listed says what a test of the previous span's bounds cost) */
        if (p >> NSP_PAGE_SHIFT != page) {
            page = p >> NSP_PAGE_SHIFT;
            s = nsp__span_of((void *)p);
        }
        uint32_t idx = nsp__span_index(s, p), w = idx >> 6;
        uint64_t bit = 1ULL << (idx & 63);
        if (!e || e->s != s || e->w != w)
            e = group_of(g, &ng, at, s, w);
        if (e->mask & bit) /* listed twice: two frees of one object raced the tag */
            nsp__report_error(NSP_ERR_DOUBLE_FREE, "free", (void *)p);
        /* then the run of consecutive slots after p, in its span up to its last slot: a
         * producer's frees come in order, so a slab's take mostly holds one, and each of its
         * objects costs an add and a bit in a register instead of the page test, the index's
         * multiply and the group's mask in memory (pinned producer / consumer: the flush was a
         * quarter of the consumer's free). The word changes where the index crosses 64. */
        uint64_t mask = e->mask | bit;
        uint32_t last = s->nelems - 1;
        uintptr_t elemsize = s->elemsize;
        while (i + 1 < n && objs[i + 1] - p == elemsize && idx < last) {
            p = objs[++i];
            idx++;
            if (__builtin_expect((idx & 63) == 0, 0)) {
                e->mask = mask;
                e = group_of(g, &ng, at, s, idx >> 6);
                mask = e->mask;
            }
            bit = 1ULL << (idx & 63);
            if (__builtin_expect((mask & bit) != 0, 0))
                nsp__report_error(NSP_ERR_DOUBLE_FREE, "free", (void *)p);
            mask |= bit;
        }
        e->mask = mask;
        page = p >> NSP_PAGE_SHIFT; /* where the run ended: its span still */
    }
    /* the bits set, for stats (span.h): one add per run of groups of one node and class */
    _Atomic int64_t *run = NULL;
    int64_t run_bits = 0;
    for (unsigned k = 0; k < ng; k++) {
        struct group *e = &g[k];
        uint64_t alloc = __atomic_load_n(&e->s->alloc_bits[e->w], __ATOMIC_RELAXED);
        _Atomic int64_t *pending = nsp__span_freed_counter(e->s); /* before the OR (span.h) */
        uint64_t old = atomic_fetch_or(&e->s->freed_bits[e->w], e->mask & alloc);
        if (pending != run) {
            if (run_bits)
                nsp__span_count_freed(run, run_bits);
            run = pending;
            run_bits = 0;
        }
        /* inline (types.h): the libgcc call was 0.5-1.2% of all samples of producer/consumer at
         * 8 threads (perf), once per group of every flush */
        run_bits += nsp__popcount64(e->mask & alloc & ~old); /* what this OR set */
        /* freed since the tag's check (a racing double free): the bit was set already, or the
         * slot is free; the OR left such bits as they were */
        uint64_t bad = (old & e->mask & alloc) | (e->mask & ~alloc);
        if (bad)
            nsp__report_error(NSP_ERR_DOUBLE_FREE, "free", (void *)first_of(e, objs, n, bad));
        /* per group, after its OR (the FULL protocol's order, central.c): a span's second group
         * finds it dirty already, and only the first CAS of FULL -> PARTIAL wakes it */
        if (nsp__span_freed_remote(e->s))
            nsp__central_wake(e->s);
    }
    if (run_bits)
        nsp__span_count_freed(run, run_bits);
}

void nsp__magazine_apply(const uintptr_t *objs, unsigned n)
{
    int saved = errno;
    for (unsigned i = 0; i < n; i += NSP_MAG_SLOTS)
        apply_some(objs + i, n - i < NSP_MAG_SLOTS ? n - i : NSP_MAG_SLOTS);
    errno = saved;
}
