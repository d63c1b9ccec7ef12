/*
 * tests/test_bin_free.c — a second free must miss the bins' push, whichever way the slot became
 * free; and a live object that only looks free must be freed, once, without a report.
 *
 * The bins' push (host/cache.h, nsp__bin_push) is the one free that decides inside a restartable
 * sequence, from what it can read there, that a slot is allocated. Whatever it reads, every way a
 * slot of the bin's span can be free and not listed must answer "not allocated" there, so that a
 * second free of it goes to the locked path, which reports it naming the pointer. Pushed instead,
 * the slot would be listed while it is free: handed out by the bin, and again by a later carve
 * (its alloc bit clear), to two owners. The ways a slot becomes free and unlisted while its span
 * is, or comes back, under a bin:
 *   - a push, then the bin folded (a foreign take): the slot keeps a link encoded with the key of
 *     an attachment that is gone;
 *   - a slot the bin was given (carved) and never handed out, folded back the same way;
 *   - the locked local free (the push missed: the bin detached), which writes nothing into the
 *     object: its first word is the program's data;
 *   - a remote free through the other cpu's magazine, or the direct way (one atomic OR), applied
 *     by a sweep: the object holds a remote free's tag;
 *   - all of the above across a cycle: the span released to its central, swept there and cached
 *     again, the bin attached to it with a new key;
 *   - a slot never handed out since the span was set up, past the carve: in a fresh span, and in
 *     a span whose pages held another class's objects before (what is there is old data).
 * Each case also drains the span and checks that no object is handed out twice: the error count
 * alone would not show a push that took a free slot quietly.
 *
 * The other side: a live object whose first word the program set, by chance, to what a free slot
 * holds (an encoded link or end of the bin's list, a remote free's tag naming a magazine, no cache
 * or the transfer) must miss the push too, and then be freed by the locked path without a report.
 *
 * Needs bins (the real machine, rseq); a second cpu for the remote frees. Each case says when it is
 * skipped, and why. NSP_IDLE_RELEASE_MS=0 (CTest): only the test detaches the bins.
 */
#define _GNU_SOURCE
#include <check.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/cache.h"
#include "host/check.h"
#include "host/ledger.h"
#include "host/magazine.h"
#include "host/pageheap.h"
#include "host/runtime.h"
#include "host/sizeclass.h"
#include "host/span.h"
#include "host/transfer.h"
#include "check_main.h"
#include "numaspan.h"

#ifdef NSP_RSEQ_LOCKS

#define SZ 3000 /* 3 KiB objects: 32 a span, 4 listed per attach; nothing else uses the class */
/* Classes of their own, shaped as SZ's (32 a span, 4 listed per attach), for the cases that need
 * a span of nothing but their objects: under CK_FORK=no (every case in one process) the cases
 * before them leave objects of SZ's class, and its spans are no longer fresh. */
#define SZ_NEVER 3300 /* free_of_a_slot_never_handed_out_is_reported: 3.25 KiB */
#define SZ_WAF 3500   /* a_double_free_after_a_write_after_free_is_reported: 3.5 KiB */
#define NOBJ 20   /* objects the cases take from one fresh span */
#define MAXL 128

static unsigned cls;
static int cpu, other = -1;

/* Pins the thread to its cpu, notes another cpu it could run on (-1: none), and makes sure the
 * thread has bins. Returns 0 when the bins are off here (the reason printed). */
static int ready(const char *name, size_t sz)
{
    cpu_set_t all, one;
    if (sched_getaffinity(0, sizeof all, &all) != 0)
        CPU_ZERO(&all);
    CPU_ZERO(&one);
    CPU_SET(sched_getcpu(), &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0) {
        fprintf(stderr, "%s: skipped: cannot pin the thread to its cpu\n", name);
        return 0;
    }
    cls = nsp__size_to_class(sz);
    free(malloc(sz));
    if (!nsp__tb) {
        fprintf(stderr, "%s: skipped: no bins here (no rseq, virtual cores, NSP_SECURE or exact)\n",
                name);
        return 0;
    }
    cpu = nsp__tb->rseq_cpu;
    other = -1;
    for (int i = 0; i < CPU_SETSIZE && other < 0; i++)
        if (i != cpu && CPU_ISSET(i, &all))
            other = i;
    nsp__on_error = NSP_ON_ERROR_WARN; /* count the errors these tests commit */
    return 1;
}

static struct nsp_bin *bin(void)
{
    return &nsp__tb->bins[cls];
}

static struct nsp_span *span(void)
{
    return nsp__tb->spans[cls];
}

static uint64_t errors(enum nsp_error_kind k)
{
    return atomic_load(&nsp__errors[k]);
}

static uint64_t all_errors(void)
{
    uint64_t n = 0;
    for (int k = 0; k < NSP_ERR__COUNT; k++)
        n += atomic_load(&nsp__errors[k]);
    return n;
}

/* The bin's list, head first (a plain walk: nothing else runs on the cpu), up to a link that does
 * not decode into the bin's span (as the pop stops there). */
static unsigned list(uintptr_t *out)
{
    struct nsp_bin *b = bin();
    uint64_t key = atomic_load(&b->key);
    unsigned n = 0;
    for (uintptr_t p = key ? (uintptr_t)(b->word >> 16) : 0; p && n < MAXL; n++) {
        out[n] = p;
        p = (uintptr_t)(*(uint64_t *)p ^ key);
        if (p - b->base >= b->size)
            break;
    }
    return n;
}

static int listed(uintptr_t p)
{
    uintptr_t l[MAXL];
    unsigned n = list(l);
    for (unsigned i = 0; i < n; i++)
        if (l[i] == p)
            return 1;
    return 0;
}

static uint32_t index_of(uintptr_t p)
{
    struct nsp_span *s = nsp__span_of((void *)p);
    return nsp__span_index(s, p);
}

static int alloc_bit(uintptr_t p)
{
    struct nsp_span *s = nsp__span_of((void *)p);
    uint32_t idx = nsp__span_index(s, p);
    ck_assert_msg(idx != UINT32_MAX, "%#lx is not a slot's start", (unsigned long)p);
    return (int)((__atomic_load_n(&s->alloc_bits[idx >> 6], __ATOMIC_RELAXED) >> (idx & 63)) & 1);
}

/* Takes c from this thread as a foreign taker does (a cycle, trim, stats): every bin of c
 * detached and folded, its magazine and slabs applied. */
static void take_and_give_back(struct nsp_cache *c)
{
    ck_assert_int_eq(nsp__cache_lock_foreign(c), 1);
    nsp__cache_unlock(c);
}

/* ---- frees on another cpu -------------------------------------------------------------------- */

/* The thread on the other cpu: it takes its bins and magazine (a first malloc there), then frees
 * p as any free there does. */
static void *free_there(void *p)
{
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(other, &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0)
        return (void *)1;
    free(malloc(SZ)); /* the thread's bins and magazine, so that the free below is its push */
    free(p);
    return NULL;
}

static struct nsp_cache *other_cache(void)
{
    return &nsp__caches[nsp__topo->cpu_to_cache[other]];
}

/* Frees p from a thread on the other cpu: into that cpu's magazine, or, direct, one atomic OR on
 * its span's freed bitmap (as a cpu without an rseq cache of its own frees: that cache's bins_on
 * cleared while the test holds it, so that nobody else reads it meanwhile). */
static void free_on_other_cpu(void *p, int direct)
{
    struct nsp_cache *oc = other_cache();
    if (direct) {
        ck_assert_int_eq(nsp__cache_lock_foreign(oc), 1);
        oc->bins_on = 0;
    }
    pthread_t t;
    void *rc;
    ck_assert_int_eq(pthread_create(&t, NULL, free_there, p), 0);
    ck_assert_int_eq(pthread_join(t, &rc), 0);
    ck_assert_ptr_null(rc);
    if (direct) {
        oc->bins_on = 1;
        nsp__cache_unlock(oc);
    }
}

/* ---- the second free and the drain ----------------------------------------------------------- */

/* Makes the bin attached again after a locked free detached it (settled): a malloc that misses
 * attaches it, and the free of what it got pushes that back. */
static void reattach(void)
{
    if (atomic_load(&bin()->key))
        return;
    free(malloc(nsp__classes[cls].size));
    ck_assert_uint_ne(atomic_load(&bin()->key), 0);
}

/* The second free of v, free and not listed while the bin is attached to its span: reported, and
 * v not listed afterwards. */
static void second_free_is_reported(uintptr_t v, const char *how)
{
    reattach();
    ck_assert_msg(atomic_load(&bin()->key) != 0 && bin()->base == nsp__span_of((void *)v)->base,
                  "%s: the bin is not attached to the span of %#lx", how, (unsigned long)v);
    ck_assert_msg(!alloc_bit(v) || nsp__magazine_tagged((void *)v) >= 0,
                  "%s: %#lx is allocated before its second free", how, (unsigned long)v);
    ck_assert_msg(!listed(v), "%s: %#lx is listed before its second free (the case is moot)", how,
                  (unsigned long)v);
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE);
    free((void *)v);
    ck_assert_msg(errors(NSP_ERR_DOUBLE_FREE) == before + 1,
                  "%s: the second free of %#lx was not reported (%lu reports)", how,
                  (unsigned long)v, (unsigned long)(errors(NSP_ERR_DOUBLE_FREE) - before));
    ck_assert_msg(!listed(v), "%s: the second free of %#lx was pushed into the bin", how,
                  (unsigned long)v);
}

/* Allocates every slot the span s has left (and a few more) and checks that no object is handed
 * out twice, nor one the program holds (held[0..nheld)). Frees what it took. */
static void drain_hands_out_each_once(struct nsp_span *s, const uintptr_t *held, unsigned nheld)
{
    enum { MAXD = 256 };
    static uintptr_t got[MAXD];
    unsigned n = s->nelems + 8 < MAXD ? s->nelems + 8 : MAXD;
    size_t sz = s->elemsize;
    for (unsigned i = 0; i < n; i++) {
        got[i] = (uintptr_t)malloc(sz);
        ck_assert_uint_ne(got[i], 0);
        for (unsigned j = 0; j < nheld; j++)
            ck_assert_msg(got[i] != held[j], "malloc handed out %#lx, which the program holds",
                          (unsigned long)got[i]);
        for (unsigned j = 0; j < i; j++)
            ck_assert_msg(got[i] != got[j], "malloc handed out %#lx twice",
                          (unsigned long)got[i]);
        memset((void *)got[i], 0x77, sz); /* the program's data, over any link or tag */
    }
    for (unsigned i = 0; i < n; i++)
        free((void *)got[i]);
}

/* ---- every way a slot becomes free, then its second free ------------------------------------- */

/* How many times p is on s's remote-free list (span.h; a plain walk: nobody frees meanwhile). */
static unsigned xfree_count(struct nsp_span *s, uintptr_t p)
{
    unsigned n = 0, steps = 0;
    uintptr_t l = nsp__span_xfree_first(s);
    for (; l && steps <= s->nelems; steps++) {
        n += l == p;
        l = ((const uint64_t *)l)[1] ^ nsp__magazine_key;
    }
    return n;
}

enum { V_PUSHED, V_CARVED, V_LOCKED, V_MAGAZINE, V_DIRECT, NV };
static const char *const vname[NV] = {"pushed, then folded", "carved, never handed out, folded",
                                      "freed by the locked path",
                                      "freed remotely into its span's list",
                                      "freed remotely the direct way"};

static int by_index(const void *a, const void *b)
{
    uint32_t x = index_of(*(const uintptr_t *)a), y = index_of(*(const uintptr_t *)b);
    return x < y ? -1 : x > y;
}

/* Takes NOBJ objects of one span (fresh: nothing else uses the class), frees the lowest ten
 * (fillers, so that a carve from slot 0 after a rewind lists them and not the victims), then the
 * victims each its own way, keeps the rest. `cycle`: then a cycle releases the span, and the next
 * malloc caches it again (swept by its central, the bin attached anew). Then each victim's second
 * free, and a drain. */
static void victims_case(const char *name, int cycle, unsigned which)
{
    if (!ready(name, SZ))
        return;
    if (other < 0) {
        fprintf(stderr, "%s: skipped: one cpu (the remote frees need another)\n", name);
        return;
    }
    uintptr_t o[NOBJ];
    for (unsigned i = 0; i < NOBJ; i++) {
        o[i] = (uintptr_t)malloc(SZ);
        memset((void *)o[i], 0x5a, SZ); /* the program's data */
    }
    struct nsp_span *s = nsp__span_of((void *)o[0]);
    ck_assert_msg(s->nelems >= NOBJ + 8, "class of %u B: %u objects a span", s->elemsize,
                  s->nelems);
    for (unsigned i = 0; i < NOBJ; i++)
        ck_assert_msg(nsp__span_of((void *)o[i]) == s, "object %u of another span", i);
    qsort(o, NOBJ, sizeof o[0], by_index);
    uintptr_t v[NV];
    v[V_PUSHED] = o[12];
    v[V_LOCKED] = o[13];
    v[V_MAGAZINE] = o[14];
    v[V_DIRECT] = o[15];
    /* a slot the bin lists that the program never had: its carve (one more malloc, held, when
     * the last one emptied the list) */
    uintptr_t more[4];
    unsigned nmore = 0;
    v[V_CARVED] = 0;
    while (!v[V_CARVED]) {
        uintptr_t l[MAXL];
        unsigned nl = list(l);
        for (unsigned i = 0; i < nl && !v[V_CARVED]; i++)
            if (index_of(l[i]) > index_of(o[NOBJ - 1]))
                v[V_CARVED] = l[i];
        if (!v[V_CARVED]) {
            ck_assert_msg(nmore < 4, "the bin lists no slot past the program's objects");
            more[nmore++] = (uintptr_t)malloc(SZ);
        }
    }
    for (unsigned i = 0; i < 10; i++)
        free((void *)o[i]); /* fillers: pushed */
    free((void *)v[V_PUSHED]);
    ck_assert(listed(v[V_PUSHED]));
    take_and_give_back(nsp__tb); /* folded: the pushed and carved slots free, unlisted */
    ck_assert_uint_eq(atomic_load(&bin()->key), 0);
    free((void *)v[V_LOCKED]); /* the bin detached: the push misses, the locked path frees it */
    ck_assert_int_eq(alloc_bit(v[V_LOCKED]), 0);
    /* a span another cpu caches: its remote-free list (span.h), not the other cpu's slab */
    free_on_other_cpu((void *)v[V_MAGAZINE], 0);
    ck_assert_int_eq(nsp__magazine_tagged((void *)v[V_MAGAZINE]), NSP_MAG_XFREE);
    free_on_other_cpu((void *)v[V_DIRECT], 1);
    ck_assert_int_eq(nsp__magazine_tagged((void *)v[V_DIRECT]), NSP_MAG_NONE);
    uintptr_t held[NOBJ + 8];
    unsigned nheld = 0;
    for (unsigned i = 10; i < NOBJ; i++)
        if (i < 12 || i > 15)
            held[nheld++] = o[i];
    for (unsigned i = 0; i < nmore; i++)
        held[nheld++] = more[i];
    if (cycle) {
        nsp_pacer_cycle(); /* the magazines flushed, every cache released */
        take_and_give_back(nsp__tb);
        take_and_give_back(other_cache());
    }
    uintptr_t x = (uintptr_t)malloc(SZ); /* the bin attached again: a new key */
    held[nheld++] = x;
    ck_assert_msg(span() == s, "%s: the class's span did not come back to the cache", name);
    if (cycle)
        for (unsigned i = 0; i < NV; i++)
            ck_assert_msg(!alloc_bit(v[i]), "%s: %s %#lx still allocated after the cycle", name,
                          vname[i], (unsigned long)v[i]);
    /* one victim's second free a case: each locked report detaches the bin, and the attach
     * that follows carves the next slots, which would soon reach the other victims */
    second_free_is_reported(v[which], vname[which]);
    take_and_give_back(nsp__tb);
    take_and_give_back(other_cache()); /* the magazine's first free applied, if it still waits */
    for (unsigned i = 0; i < NV; i++) {
        struct nsp_span *t = nsp__span_of((void *)v[i]);
        /* (the listed one stays allocated until its owner's sweep takes the list: listed once) */
        ck_assert_msg(!nsp__span_slot_live(t, index_of(v[i])) ||
                          (i == V_MAGAZINE && xfree_count(t, v[i]) == 1),
                      "%s: %#lx live after both frees", vname[i], (unsigned long)v[i]);
    }
    drain_hands_out_each_once(s, held, nheld);
    for (unsigned i = 0; i < nheld; i++)
        free((void *)held[i]);
}

START_TEST(second_free_in_place_is_reported)
{
    victims_case("second_free_in_place_is_reported", 0, (unsigned)_i);
}
END_TEST

START_TEST(second_free_after_a_cycle_is_reported)
{
    victims_case("second_free_after_a_cycle_is_reported", 1, (unsigned)_i);
}
END_TEST

/* A slot of a fresh span past what the bin was ever given: never handed out, its first word as
 * the OS left it (0), or as a page's previous use left it (written here: old data). */
START_TEST(free_of_a_slot_never_handed_out_is_reported)
{
    if (!ready("free_of_a_slot_never_handed_out_is_reported", SZ_NEVER))
        return;
    uintptr_t x = (uintptr_t)malloc(SZ_NEVER);
    struct nsp_span *s = span();
    ck_assert_ptr_eq(nsp__span_of((void *)x), s);
    ck_assert_uint_ne(atomic_load(&bin()->key), 0);
    uintptr_t far = s->base + (uintptr_t)(s->nelems - 1) * s->elemsize;
    uintptr_t mid = s->base + (uintptr_t)(s->nelems / 2) * s->elemsize;
    *(volatile uint64_t *)mid = 0x5a5a5a5a5a5a5a5aULL; /* what a page's previous use left */
    second_free_is_reported(far, "the last slot, never handed out");
    second_free_is_reported(mid, "a middle slot, never handed out, old data");
    uintptr_t held[1] = {x};
    drain_hands_out_each_once(s, held, 1);
    free((void *)x);
}
END_TEST

/* A span whose pages held objects of another class: a stale pointer to an object of that class
 * (freed, its span emptied and given back to the page heap) that is now the start of a slot the
 * new span has not handed out. Its first word is what the old class left there. */
/* two classes with spans of the same pages (256 KiB, host/sizeclass.h; 64 KiB with
 * NSP_SMALL_SPAN=64K), the new one's size twice the old's */
#define SZ_OLD 512
#define SZ_NEW 1024
START_TEST(free_into_a_reused_span_is_reported)
{
    if (!ready("free_into_a_reused_span_is_reported", SZ_OLD))
        return;
    unsigned ko = nsp__size_to_class(SZ_OLD), kn = nsp__size_to_class(SZ_NEW);
    ck_assert_uint_eq(nsp__classes[ko].size, SZ_OLD);
    ck_assert_uint_eq(nsp__classes[kn].size, SZ_NEW);
    ck_assert_uint_eq(nsp__classes[ko].npages, nsp__classes[kn].npages);
    enum { MAXO = 1024 };
    uintptr_t o[MAXO];
    unsigned n = 0;
    struct nsp_span *s = NULL;
    /* every slot of one span of the old class, each freed: the span empty */
    for (; n < MAXO; n++) {
        o[n] = (uintptr_t)malloc(SZ_OLD);
        memset((void *)o[n], 0x5a, SZ_OLD);
        if (!s && index_of(o[n]) == 0)
            s = nsp__span_of((void *)o[n]);
        if (s && nsp__span_of((void *)o[n]) == s && index_of(o[n]) == s->nelems - 1)
            break;
    }
    ck_assert_msg(s && n < MAXO, "no whole span of %u B objects in %u mallocs", SZ_OLD, MAXO);
    /* the old class's last slot but one: at an even index, the start of a new-class slot */
    uintptr_t base = s->base, stale = base + (uintptr_t)(s->nelems - 2) * SZ_OLD;
    ck_assert_uint_eq((stale - base) % SZ_NEW, 0);
    for (unsigned i = 0; i <= n; i++)
        free((void *)o[i]);
    nsp_trim(); /* the caches released, the empty span back to the page heap */
    cls = kn;
    uintptr_t y = 0;
    enum { MAXN = 4096 };
    static uintptr_t keep[MAXN];
    unsigned nk = 0;
    for (; nk < MAXN; nk++) {
        keep[nk] = (uintptr_t)malloc(SZ_NEW);
        struct nsp_span *t = nsp__span_of((void *)keep[nk]);
        if (t->base == base && t->sizeclass == kn) {
            y = keep[nk++];
            break;
        }
    }
    if (!y) {
        fprintf(stderr, "free_into_a_reused_span_is_reported: skipped: the page heap did not "
                        "reuse the old span's pages for the new class in %u spans\n",
                (unsigned)(MAXN / nsp__classes[kn].nelems));
    } else {
        ck_assert_ptr_eq(span(), nsp__span_of((void *)y));
        ck_assert_uint_lt(index_of(y) + 8, index_of(stale)); /* far past the carve */
        second_free_is_reported(stale, "a stale pointer into a reused span, never handed out");
        drain_hands_out_each_once(span(), keep, nk);
    }
    for (unsigned i = 0; i < nk; i++)
        free((void *)keep[i]);
}
END_TEST

/* ---- a free slot written over, then freed again ---------------------------------------------- */

/* The program writes into a free slot (a write after free: here the slot's first word, as a
 * "next = NULL" after free does), then frees it again. Whatever the slot held that said "free" is
 * gone, so only the alloc bit can refuse the push. Pushed, the slot is listed with its alloc bit
 * clear: the next malloc pops it (q), and the span's count no longer includes it, so once the
 * program frees the span's other objects the span is empty from its central's view and its pages
 * would go back to the page heap while q is live: the next span set up there would hand q's
 * memory out to a second owner. q's memory must not be handed out again while the program holds
 * it, and the double free must be reported: at the free, or at the latest before its span's
 * pages could go (host/span.h, nsp__span_keep_held). */
START_TEST(a_double_free_after_a_write_after_free_is_reported)
{
    if (!ready("a_double_free_after_a_write_after_free_is_reported", SZ_WAF))
        return;
    /* p above 8 other slots freed with it: the attach below lists the span's lowest free slots
     * (first fit, host/span.h: 4 at 3.5 KiB), so a lower p would be met by the carve's tag check
     * (reported there: a case of its own) before the second free this test is about */
    enum { PAD = 8 };
    uintptr_t o[PAD + 1], p = 0;
    for (unsigned i = 0; i <= PAD; i++) {
        o[i] = (uintptr_t)malloc(SZ_WAF);
        p = o[i] > p ? o[i] : p;
    }
    struct nsp_span *s = span();
    for (unsigned i = 0; i <= PAD; i++) {
        ck_assert_ptr_eq(nsp__span_of((void *)o[i]), s);
        free((void *)o[i]); /* pushed */
    }
    take_and_give_back(nsp__tb); /* folded: p free in its span */
    ck_assert_int_eq(alloc_bit(p), 0);
    *(volatile uint64_t *)p = 0; /* written after free */
    uintptr_t x = (uintptr_t)malloc(SZ_WAF); /* the bin attached again */
    ck_assert_uint_ne(atomic_load(&bin()->key), 0);
    ck_assert_msg(x != p && !listed(p), "p handed out or listed again: the case is moot");
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE), any = all_errors();
    free((void *)p); /* the second free */
    uint64_t reported = errors(NSP_ERR_DOUBLE_FREE) - before;
    uintptr_t q = (uintptr_t)malloc(SZ_WAF); /* the program's object, live from here on */
    memset((void *)q, 0x71, SZ_WAF);
    free((void *)x);
    nsp_trim(); /* the caches released, empty spans back to the page heap */
    /* q must still be allocated in a live span: else its pages are the page heap's to give */
    struct nsp_span *t = nsp__span_of((void *)q);
    int live = t && atomic_load(&t->state) != NSP_SPAN_FREE && t->sizeclass == cls &&
               nsp__span_slot_live(t, index_of(q));
    /* and what the page heap does with them: the class's next spans (at 3 KiB it reused those
     * pages for the 7th) */
    enum { MAXR = 512 };
    static uintptr_t r[MAXR];
    unsigned n = 0, overlap = MAXR;
    for (; n < MAXR && overlap == MAXR; n++) {
        r[n] = (uintptr_t)malloc(SZ_WAF);
        if (r[n] < q + SZ_WAF && q < r[n] + SZ_WAF)
            overlap = n;
    }
    for (unsigned i = 0; i < n; i++)
        free((void *)r[i]);
    ck_assert_msg(live && overlap == MAXR,
                  "%#lx, held by the program, is %s (handed out again: %s); the double free of "
                  "%#lx before it was reported %lu times (errors of any kind since: %lu)",
                  (unsigned long)q, live ? "allocated" : "free in its span or its span freed",
                  overlap < MAXR ? "yes" : "not seen", (unsigned long)p, (unsigned long)reported,
                  (unsigned long)(all_errors() - any));
    /* reported: at the free where the push refuses it (the alloc bit, before the bitmap-free
     * push), else at the latest where its span would have been given back (span.h) */
    ck_assert_msg(reported == 1 || all_errors() - any >= 1,
                  "the double free of %#lx was not reported, at the free or since",
                  (unsigned long)p);
    free((void *)q);
}
END_TEST

/* ---- what a kept slot costs the books -------------------------------------------------------- */

/* At rest: the live bytes the pacer reads (heapLive + pending - the caches' unspent
 * reservations; an uncached span is charged its allocated slots, in every mode) are the bytes in
 * use, and the stats' counters agree with a walk of the spans. Returns 0, or the first
 * disagreement in why. */
static int books_balance(char *why, size_t len)
{
    if (nsp__stats_is_valid(nsp_stats_get, why, len) != 0)
        return -1;
    nsp_pacer_info_t pi;
    nsp_stats_t st;
    ck_assert_int_eq(nsp_pacer_get(&pi), 0);
    ck_assert_int_eq(nsp_stats_get(&st), 0);
    if (pi.live_now != (int64_t)st.bytes_in_use) {
        snprintf(why, len, "the pacer's live bytes %lld, the bytes in use %llu",
                 (long long)pi.live_now, (unsigned long long)st.bytes_in_use);
        return -1;
    }
    return 0;
}

/* A free slot the program wrote over, in a span that then empties: the empty span's check
 * (nsp__span_keep_held) reports it and keeps it allocated, so that the span stays. From then on it
 * is an allocated slot like any other: counted in the stats and charged to heapLive (in `exact`,
 * as each allocation is). Else the books drift by the slot for as long as the span lives, and a
 * debug build's stats validator fails on a heap that is at rest. Runs with or without bins. */
START_TEST(a_slot_kept_by_the_empty_span_check_is_counted_and_charged)
{
    nsp__on_error = NSP_ON_ERROR_WARN;
    enum { N = 40 }; /* more than a span's 32 */
    void *o[N];
    for (int i = 0; i < N; i++)
        o[i] = malloc(SZ);
    void *p = o[3];
    struct nsp_span *s = nsp__span_of(p);
    free(p);
    nsp_trim(); /* p free in its span, tagged (folded, or swept) */
    char why[512] = "";
    ck_assert_msg(books_balance(why, sizeof why) == 0, "before: %s", why);
    ck_assert_int_eq(nsp__span_slot_live(s, nsp__span_index(s, (uintptr_t)p)), 0);
    *(volatile uint64_t *)p = 0; /* written after free */
    uint64_t before = errors(NSP_ERR_WRITE_AFTER_FREE);
    for (int i = 0; i < N; i++)
        if (i != 3)
            free(o[i]);
    nsp_trim(); /* p's span empty: checked before its pages go */
    ck_assert_uint_eq(errors(NSP_ERR_WRITE_AFTER_FREE), before + 1);
    ck_assert_ptr_eq(nsp__span_of(p), s);
    ck_assert_int_eq(nsp__span_slot_live(s, nsp__span_index(s, (uintptr_t)p)), 1); /* kept */
    ck_assert_msg(books_balance(why, sizeof why) == 0, "with the kept slot: %s", why);
}
END_TEST

/* A slot freed and written over, then met by hand_out's hand-outs on its span's node: reported
 * once, kept allocated (never handed out), and booked as an allocation from then on. */
static void kept_by_hand_outs(void *(*hand_out)(unsigned node))
{
    nsp__on_error = NSP_ON_ERROR_WARN;
    enum { N = 40 };
    void *o[N];
    for (int i = 0; i < N; i++)
        o[i] = malloc(SZ);
    void *p = o[3];
    struct nsp_span *s = nsp__span_of(p);
    free(p);
    nsp_trim(); /* p free in its span, tagged; the span its central's */
    char why[512] = "";
    ck_assert_msg(books_balance(why, sizeof why) == 0, "before: %s", why);
    *(volatile uint64_t *)p = 0; /* written after free */
    uint64_t before = errors(NSP_ERR_WRITE_AFTER_FREE);
    enum { MAXQ = 64 };
    void *q[MAXQ];
    unsigned nq = 0;
    while (nq < MAXQ && errors(NSP_ERR_WRITE_AFTER_FREE) == before) {
        q[nq] = hand_out(s->node);
        ck_assert_ptr_nonnull(q[nq]);
        ck_assert_ptr_ne(q[nq], p);
        nq++;
    }
    ck_assert_uint_eq(errors(NSP_ERR_WRITE_AFTER_FREE), before + 1);
    ck_assert_int_eq(nsp__span_slot_live(s, nsp__span_index(s, (uintptr_t)p)), 1); /* kept */
    nsp_trim();
    ck_assert_msg(books_balance(why, sizeof why) == 0, "with the kept slot: %s", why);
    for (unsigned i = 0; i < nq; i++)
        free(q[i]);
    for (int i = 0; i < N; i++)
        if (i != 3)
            free(o[i]);
}

/* The central's own hand-out: nsp_malloc_node takes one object under its mutex, and its check
 * (nsp__span_untagged) reports the slot and hands out the next one. */
static void *central_hand_out(unsigned node)
{
    return nsp_malloc_node(SZ, node);
}
START_TEST(a_slot_kept_by_a_central_hand_out_is_counted_and_charged)
{
    kept_by_hand_outs(central_hand_out);
}
END_TEST

/* A cache's hand-out (its carve into a bin, or, without bins, its locked malloc): the cache
 * refills from the central with the span that holds p (in `exact` each object is charged as it is
 * handed out: the kept one too). */
static void *cache_hand_out(unsigned node)
{
    (void)node;
    return malloc(SZ);
}
START_TEST(a_slot_kept_by_a_cache_hand_out_is_counted_and_charged)
{
    kept_by_hand_outs(cache_hand_out);
}
END_TEST

/* ---- a live object that looks free ----------------------------------------------------------- */

#define NLOOKS 6
/* A live object whose first word is what a free slot would hold: the push must miss (a listed or
 * remotely freed slot looks so), and the locked path must free it, once, without a report. */
START_TEST(a_live_object_that_looks_free_is_freed_once)
{
    if (!ready("a_live_object_that_looks_free_is_freed_once", SZ))
        return;
    int look = _i;
    uintptr_t keep = (uintptr_t)malloc(SZ); /* the span stays cached */
    uintptr_t p = (uintptr_t)malloc(SZ);
    struct nsp_bin *b = bin();
    reattach();
    if (!(b->word >> 16))
        free(malloc(SZ)); /* a head: a push gives the bin one */
    ck_assert_msg(atomic_load(&b->key) && (b->word >> 16), "look %d: no attached bin", look);
    uint64_t key = atomic_load(&b->key), head = b->word >> 16, v = 0;
    const char *what = "";
    switch (look) {
    case 0:
        v = head ^ key, what = "the bin's head, encoded";
        break;
    case 1:
        v = key, what = "the end of the bin's list, encoded";
        break;
    case 2:
        v = nsp__magazine_tag((void *)p, nsp__tb->index), what = "its own cache's tag";
        break;
    case 3:
        v = nsp__magazine_tag((void *)p, NSP_MAG_NONE), what = "a direct remote free's tag";
        break;
    case 4:
        v = nsp__magazine_tag((void *)p, NSP_MAG_TRANSFER), what = "the transfer's tag";
        break;
    case 5:
        v = (uint64_t)span()->base ^ key, what = "the span's first slot, encoded";
        break;
    }
    *(volatile uint64_t *)p = v;
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE) + errors(NSP_ERR_FREE_LIST) +
                      errors(NSP_ERR_NOT_OWNED) + errors(NSP_ERR_INTERIOR);
    free((void *)p);
    uint64_t after = errors(NSP_ERR_DOUBLE_FREE) + errors(NSP_ERR_FREE_LIST) +
                     errors(NSP_ERR_NOT_OWNED) + errors(NSP_ERR_INTERIOR);
    ck_assert_msg(after == before, "a live object holding %s: its free was reported", what);
    ck_assert_msg(!alloc_bit(p) || listed(p), "a live object holding %s: not freed", what);
    uintptr_t held[1] = {keep};
    drain_hands_out_each_once(span(), held, 1);
    free((void *)keep);
}
END_TEST

/* free's fast path finds the class without testing p's top bits: the arena table's index wraps
 * (pageheap.h, nsp__page_class_wrapped), so a pointer at or above 2^47 whose low bits are those
 * of a live object of the bin's span gets that span's class, and only the push's bound
 * (p - base < size, cache.h) keeps it out of the bin. Such frees must be reported as not ours and
 * change nothing: the object stays live and unlisted, and is freed once afterwards. Without the
 * bound the push would read the pointer's first word (a fault above user space); without the
 * wrap the look-up would read past the arena table. */
START_TEST(a_pointer_above_the_address_space_is_not_ours)
{
    if (!ready("a_pointer_above_the_address_space_is_not_ours", SZ))
        return;
    uintptr_t keep = (uintptr_t)malloc(SZ); /* the span stays cached */
    uintptr_t p = (uintptr_t)malloc(SZ);
    reattach();
    ck_assert_msg(bin()->base == nsp__span_of((void *)p)->base, "the bin holds another span");
    const uintptr_t high[] = {p + (1ULL << 47), p | (1ULL << 63), p + (7ULL << 47)};
    uint64_t before = errors(NSP_ERR_NOT_OWNED), all = all_errors();
    for (unsigned i = 0; i < sizeof high / sizeof high[0]; i++) {
        ck_assert_uint_eq(nsp__page_class_wrapped((void *)high[i]), cls); /* the wrap, as said */
        free((void *)high[i]);
        ck_assert_msg(errors(NSP_ERR_NOT_OWNED) == before + i + 1,
                      "free(%#lx): not reported as not ours", (unsigned long)high[i]);
    }
    ck_assert_uint_eq(all_errors(), all + 3);
    ck_assert_msg(alloc_bit(p) && !listed(p), "the live object's state changed");
    free((void *)p);
    ck_assert_uint_eq(all_errors(), all + 3);
    uintptr_t held[1] = {keep};
    drain_hands_out_each_once(span(), held, 1);
    free((void *)keep);
}
END_TEST

/* ---- the span's remote-free list ------------------------------------------------------------- */

/* The set-up of the remote-free list's cases: NOBJ objects of one fresh span of class SZ into
 * o (each filled with `fill` unless it is negative: the program's data over any tag), and their
 * span; NULL, with the reason printed, where the case cannot run (no bins, or one cpu: the
 * remote frees need another). */
static struct nsp_span *list_case(const char *name, uintptr_t o[NOBJ], int fill)
{
    if (!ready(name, SZ))
        return NULL;
    if (other < 0) {
        fprintf(stderr, "%s: skipped: one cpu (the remote frees need another)\n", name);
        return NULL;
    }
    for (unsigned i = 0; i < NOBJ; i++) {
        o[i] = (uintptr_t)malloc(SZ);
        if (fill >= 0)
            memset((void *)o[i], fill, SZ);
    }
    struct nsp_span *s = nsp__span_of((void *)o[0]);
    ck_assert_ptr_eq(span(), s);
    return s;
}

/* Drains s (drain_hands_out_each_once) with every object of o held but those in the mask
 * `freed` (freed by the case: each may come back, once; an object the case lost, freed once
 * already, stays held: it must not come back). */
static void drain_list_case(struct nsp_span *s, const uintptr_t o[NOBJ], uint32_t freed)
{
    uintptr_t held[NOBJ];
    unsigned nheld = 0;
    for (unsigned i = 0; i < NOBJ; i++)
        if (!(freed >> i & 1))
            held[nheld++] = o[i];
    drain_hands_out_each_once(s, held, nheld);
}

/* Frees the objects of o the program still holds: all but those in the mask not_held. */
static void free_list_case(const uintptr_t o[NOBJ], uint32_t not_held)
{
    for (unsigned i = 0; i < NOBJ; i++)
        if (!(not_held >> i & 1))
            free((void *)o[i]);
}

/* A free on another cpu of an object of the span this cpu's cache holds goes onto that span's
 * remote-free list (span.h): one CAS, the object tagged NSP_MAG_XFREE, its alloc bit still set
 * until the owner's sweep. A second free of it, on either cpu, must be reported at that free
 * (the tag sends it to the slow path, which searches the list), leave it listed once, and the
 * sweep must then hand it out once. */
static void listed_twice_case(const char *name, int second_there)
{
    uintptr_t o[NOBJ];
    struct nsp_span *s = list_case(name, o, 0x5a);
    if (!s)
        return;
    ck_assert(nsp__span_has_xfree(s));
    uintptr_t v = o[NOBJ / 2];
    free_on_other_cpu((void *)v, 0);
    ck_assert_int_eq(nsp__magazine_tagged((void *)v), NSP_MAG_XFREE);
    ck_assert_int_eq(alloc_bit(v), 1);
    ck_assert_uint_eq(xfree_count(s, v), 1);
    ck_assert_uint_ne(atomic_load(&s->dirty), 0);
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE), searches = atomic_load(&nsp__xfree_searches);
    if (second_there)
        free_on_other_cpu((void *)v, 0);
    else
        free((void *)v);
    ck_assert_msg(errors(NSP_ERR_DOUBLE_FREE) == before + 1,
                  "%s: the second free of a listed object was not reported", name);
    ck_assert_msg(atomic_load(&nsp__xfree_searches) == searches + 1,
                  "%s: the search of the list was not counted (stats' list_searches)", name);
    ck_assert_msg(xfree_count(s, v) == 1, "%s: listed %u times after its second free", name,
                  xfree_count(s, v));
    drain_list_case(s, o, 1u << NOBJ / 2); /* sweeps the list: v comes back once */
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before + 1);
    free_list_case(o, 1u << NOBJ / 2);
}

START_TEST(a_second_local_free_of_a_listed_object_is_reported)
{
    listed_twice_case("a_second_local_free_of_a_listed_object_is_reported", 0);
}
END_TEST

START_TEST(a_second_remote_free_of_a_listed_object_is_reported)
{
    listed_twice_case("a_second_remote_free_of_a_listed_object_is_reported", 1);
}
END_TEST

/* A listed object's link written over (a write after free into its second word): the owner's
 * sweep stops at it and reports it, naming the object, instead of following the stray pointer;
 * the object and what lay behind it stay allocated (leaked), never handed out twice.
 * With second_free, a second free of the listed head comes first: its search (free.c,
 * xfree_holds) takes the list, stops at the bad link and puts the list back with its tail linked
 * anew, over the bad link. The overwrite must still be reported (it was not: the search relinked
 * over the evidence and the sweep found a clean list; o[10] leaked unreported). */
static void overwritten_link_case(const char *name, int second_free)
{
    uintptr_t o[NOBJ];
    struct nsp_span *s = list_case(name, o, 0x5a);
    if (!s)
        return;
    free_on_other_cpu((void *)o[10], 0);
    free_on_other_cpu((void *)o[11], 0); /* the head; its link names o[10] */
    ck_assert_uint_eq(nsp__span_xfree_first(s), o[11]);
    ((volatile uint64_t *)o[11])[1] = 0x5a5a5a5a5a5a5a5aULL; /* the write after free */
    uint64_t before = errors(NSP_ERR_FREE_LIST), dbl = errors(NSP_ERR_DOUBLE_FREE);
    if (second_free) {
        free((void *)o[11]); /* the second free: its search walks the list */
        ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), dbl + 1);
    }
    /* o[10], leaked behind the broken link, stays held: it must not come back either */
    drain_list_case(s, o, 1u << 11);
    ck_assert_msg(errors(NSP_ERR_FREE_LIST) == before + 1,
                  "%s: the overwritten link was not reported (%lu reports)", name,
                  (unsigned long)(errors(NSP_ERR_FREE_LIST) - before));
    free_list_case(o, 1u << 10 | 1u << 11);
}

START_TEST(a_listed_objects_overwritten_link_is_reported_at_the_sweep)
{
    overwritten_link_case("a_listed_objects_overwritten_link_is_reported_at_the_sweep", 0);
}
END_TEST

START_TEST(an_overwritten_link_found_by_a_second_free_is_reported)
{
    overwritten_link_case("an_overwritten_link_found_by_a_second_free_is_reported", 1);
}
END_TEST

/* The list's head itself names no slot of the span (a push that landed after the span it
 * meant was released and its pages set up again: a racing double free, span.h): the search of a
 * second free must report it and drop the list, not write a link through it (it wrote one at
 * address 8: a crash). The object listed under the bad head is then no one's: its second free,
 * not found listed, frees it, once. */
START_TEST(a_head_that_is_no_slot_is_reported_by_a_second_free)
{
    uintptr_t o[NOBJ];
    struct nsp_span *s = list_case("a_head_that_is_no_slot_is_reported_by_a_second_free", o, -1);
    if (!s)
        return;
    free_on_other_cpu((void *)o[11], 0);
    atomic_store(nsp__span_xfree(s), (o[11] + 8) ^ nsp__span_xfree_seal(s)); /* no slot's start */
    uint64_t before = errors(NSP_ERR_FREE_LIST);
    free((void *)o[11]); /* its search takes the list */
    ck_assert_msg(errors(NSP_ERR_FREE_LIST) == before + 1,
                  "the bad head was not reported (%lu reports)",
                  (unsigned long)(errors(NSP_ERR_FREE_LIST) - before));
    ck_assert_uint_eq(nsp__span_xfree_first(s), 0);
    /* o[11]: dropped with the list, then freed by its second free: it comes back once */
    drain_list_case(s, o, 1u << 11);
    free_list_case(o, 1u << 11);
}
END_TEST

/* The head word is no longer the span's (its pages released and set up again, the second page's
 * descriptor now another span's, whose cursor word is 0 or anything else: a late push of a
 * double free racing the release, span.h): the push must refuse and leave that word alone, and
 * the free go the other way (the object freed once, its first word as it was). Red without the
 * seal check: the CAS wrote the object over the word. */
START_TEST(a_push_onto_a_head_word_no_longer_the_spans_is_refused)
{
    uintptr_t o[NOBJ];
    struct nsp_span *s =
        list_case("a_push_onto_a_head_word_no_longer_the_spans_is_refused", o, -1);
    if (!s)
        return;
    const uintptr_t words[] = {0, 0x00ff00ff00ff00ffULL, ~(uintptr_t)0};
    for (unsigned k = 0; k < 3; k++) {
        unsigned i = 11 + k;
        memset((void *)o[i], 0x5a, SZ);
        atomic_store(nsp__span_xfree(s), words[k]); /* what a reused descriptor holds */
        free_on_other_cpu((void *)o[i], 0);
        ck_assert_msg(atomic_load(nsp__span_xfree(s)) == words[k],
                      "a push wrote %#lx over a head word that was not the span's (%#lx)",
                      (unsigned long)atomic_load(nsp__span_xfree(s)), (unsigned long)words[k]);
        ck_assert_msg(nsp__magazine_tagged((void *)o[i]) != NSP_MAG_XFREE,
                      "a refused push left its object tagged as listed");
    }
    nsp__span_xfree_init(s); /* the span's own again */
    drain_list_case(s, o, 7u << 11); /* 11..13 were freed the other way: each comes back once */
    free_list_case(o, 7u << 11);
}
END_TEST

/* The same refused push when the freeing cpu's slab refuses the object too (its class without a
 * slab there: cap 0), so that it goes the whole way (nsp__free_small): that way reads p's first
 * word, which the refusal must have put back (free.c, classed_pushed). Left as the list's tag, it
 * sends the free to the list's search, whose exchange writes over the head word that is no longer
 * the span's. Red with the put-back left out; the case above stays green then (the slab writes
 * its own tag over the list's). */
static void set_slab_cap(struct nsp_cache *c, uint64_t cap)
{
    ck_assert_int_eq(nsp__cache_lock_foreign(c), 1);
    c->slabs[cls].cap = cap;
    nsp__cache_unlock(c);
}

START_TEST(a_refused_push_that_the_slab_refuses_too_goes_on_as_it_was)
{
    uintptr_t o[NOBJ];
    struct nsp_span *s =
        list_case("a_refused_push_that_the_slab_refuses_too_goes_on_as_it_was", o, -1);
    if (!s)
        return;
    struct nsp_cache *oc = other_cache();
    uint64_t cap = oc->slabs[cls].cap;
    const uintptr_t words[] = {0, 0x00ff00ff00ff00ffULL};
    for (unsigned k = 0; k < 2; k++) {
        unsigned i = 11 + k;
        memset((void *)o[i], 0x5a, SZ);
        atomic_store(nsp__span_xfree(s), words[k]);
        set_slab_cap(oc, 0); /* the cache taken meanwhile, as test_magazine.c does */
        free_on_other_cpu((void *)o[i], 0);
        set_slab_cap(oc, cap);
        ck_assert_msg(atomic_load(nsp__span_xfree(s)) == words[k],
                      "the free wrote %#lx over a head word that was not the span's (%#lx)",
                      (unsigned long)atomic_load(nsp__span_xfree(s)), (unsigned long)words[k]);
    }
    nsp__span_xfree_init(s);
    drain_list_case(s, o, 3u << 11); /* 11 and 12 were freed the whole way: each comes back once */
    free_list_case(o, 3u << 11);
}
END_TEST

/* The owner's sweep of cached span s, as sweep_in_place (cache.c) makes it: the cache taken (its
 * bins folded), the sweep, its count into the ledger's. Returns the doubles it found. */
static uint32_t sweep_owned_here(struct nsp_span *s)
{
    ck_assert_int_eq(nsp__cache_lock_foreign(nsp__tb), 1);
    uint32_t doubles;
    uintptr_t first;
    uint32_t applied = nsp__span_sweep(s, &doubles, &first);
    nsp__tb->swept_objects += applied;
    nsp__tb->sweeps++;
    nsp__ledger_count(s, -(int64_t)applied);
    nsp__cache_unlock(nsp__tb);
    return doubles;
}

/* One sweep takes a listed object (o[15]) and a freed bit (o[3]): the cursor must come down to the
 * lower of the two, o[3] (span.h, nsp__span_cursor_down: every slot below the cursor allocated).
 * The list's slots were applied first and the bitmap's lowest then ignored: o[3] sat free below the
 * cursor while fresh slots were handed out above it. */
START_TEST(a_sweep_of_a_list_and_bits_moves_the_cursor_to_the_lowest)
{
    uintptr_t o[NOBJ];
    struct nsp_span *s =
        list_case("a_sweep_of_a_list_and_bits_moves_the_cursor_to_the_lowest", o, -1);
    if (!s)
        return;
    free_on_other_cpu((void *)o[15], 0);
    ck_assert_int_eq(nsp__magazine_tagged((void *)o[15]), NSP_MAG_XFREE);
    free_on_other_cpu((void *)o[3], 1);
    ck_assert_int_eq(nsp__magazine_tagged((void *)o[3]), NSP_MAG_NONE);
    ck_assert_uint_eq(sweep_owned_here(s), 0);
    ck_assert_int_eq(alloc_bit(o[3]), 0);
    ck_assert_int_eq(alloc_bit(o[15]), 0);
    ck_assert_msg(s->freeindex <= index_of(o[3]),
                  "the sweep left the cursor at slot %u, above the free slot %u", s->freeindex,
                  index_of(o[3]));
    free_list_case(o, 1u << 3 | 1u << 15);
}
END_TEST

/* Two frees of one object that race (both pass the push's checks before either tags it) list it
 * twice: the sweep reports the double once and hands the object out once; the objects listed
 * before the first push are lost behind the second one's link (left allocated: never handed out).
 * The remote frees pending (nsp__freed_pending, what stats subtract and the check compares with
 * the freed bitmaps) count freed bits only: a listed object was never in them, so the list's
 * double must not come off them (it did: -1 for every racing double free, stats' objects in use
 * one too high for good and nsp__check_at's stats check failing). */
START_TEST(a_racing_double_free_on_the_list_is_reported_once_and_counted_right)
{
    uintptr_t o[NOBJ];
    struct nsp_span *s =
        list_case("a_racing_double_free_on_the_list_is_reported_once_and_counted_right", o, -1);
    if (!s)
        return;
    free_on_other_cpu((void *)o[4], 0);  /* listed before: lost behind the second push */
    free_on_other_cpu((void *)o[12], 0); /* the first free */
    ck_assert_uint_eq(nsp__span_xfree_first(s), o[12]);
    /* the racing second free, past its checks (the first word it read is restored only when
     * the push is refused) */
    nsp__span_xfree_push(s, (void *)o[12], 0x5a5a5a5a5a5a5a5aULL);
    ck_assert_uint_eq(xfree_count(s, o[12]) >= 2, 1);
    int64_t pending = nsp__span_freed_pending(s->node, s->sizeclass);
    ck_assert_uint_eq(sweep_owned_here(s), 1); /* (cache.c's sweep_in_place reports it) */
    ck_assert_int_eq(alloc_bit(o[12]), 0);
    ck_assert_int_eq(alloc_bit(o[4]), 1);
    ck_assert_msg(nsp__span_freed_pending(s->node, s->sizeclass) == pending,
                  "remote frees pending went %lld -> %lld: the list's double came off them",
                  (long long)pending, (long long)nsp__span_freed_pending(s->node, s->sizeclass));
    drain_list_case(s, o, 1u << 12);
    free_list_case(o, 1u << 12 | 1u << 4); /* o[4]: freed once already, leaked by the race */
}
END_TEST

/* The sweep's walk of a list (span.c, xfree_apply) takes each link as the slot just below the last
 * one's, and checks the loaded link only against that guess, and it clears a run's alloc bits in
 * one store per bitmap word. A list of runs: slots 10..130 pushed in order (so listed from 130
 * down: three bitmap words, two word changes), slot 70 left out (the link from 71 names 69, not
 * the guess 70), and slot 180 pushed first (the link from 10 jumps up to it). Every listed slot
 * must come out free, every other one stay allocated, the cursor come down to slot 10 and the
 * counts move by what was listed. Red with the word's store left out at a word change, with the
 * guess taken without its check (70 freed), or with the run's index not following the guess. */
#define SZ_RUN 1000 /* a class of 1 KiB: 256 slots a span, four bitmap words */
#define NRUN 200

/* NRUN objects of SZ_RUN from one span, indexed by slot (o[i] is slot i); NULL if they are not
 * slots 0..NRUN-1 of one span (then the case cannot be built: said, and skipped). */
static struct nsp_span *run_case(const char *name, uintptr_t *o)
{
    if (!ready(name, SZ_RUN))
        return NULL;
    struct nsp_span *s = NULL;
    for (unsigned i = 0; i < NRUN; i++)
        o[i] = 0;
    for (unsigned i = 0; i < NRUN; i++) {
        uintptr_t p = (uintptr_t)malloc(SZ_RUN);
        ck_assert_uint_ne(p, 0);
        memset((void *)p, 0x5a, SZ_RUN);
        if (!s)
            s = nsp__span_of((void *)p);
        uint32_t idx = nsp__span_index(s, p);
        if (nsp__span_of((void *)p) != s || idx >= NRUN || o[idx]) {
            fprintf(stderr, "%s: skipped: the class's objects do not come from one fresh span\n",
                    name);
            return NULL;
        }
        o[idx] = p;
    }
    ck_assert_ptr_eq(span(), s);
    ck_assert_uint_ge(s->nelems, NRUN);
    return s;
}

START_TEST(a_sweep_of_a_list_of_runs_frees_exactly_the_listed_slots)
{
    static uintptr_t o[NRUN];
    struct nsp_span *s = run_case("a_sweep_of_a_list_of_runs_frees_exactly_the_listed_slots", o);
    if (!s)
        return;
    unsigned pushed = 0;
    ck_assert_int_ge(nsp__span_xfree_push(s, (void *)o[180], *(uint64_t *)o[180]), 0);
    pushed++;
    for (unsigned i = 10; i <= 130; i++)
        if (i != 70) {
            ck_assert_int_ge(nsp__span_xfree_push(s, (void *)o[i], *(uint64_t *)o[i]), 0);
            pushed++;
        }
    uint32_t count = s->alloc_count;
    uint64_t swept = nsp__tb->swept_objects;
    ck_assert_uint_eq(sweep_owned_here(s), 0);
    for (unsigned i = 0; i < NRUN; i++) {
        int listed_here = i == 180 || (i >= 10 && i <= 130 && i != 70);
        ck_assert_msg(alloc_bit(o[i]) == !listed_here, "slot %u: alloc bit %d after the sweep", i,
                      alloc_bit(o[i]));
    }
    ck_assert_uint_eq(count - s->alloc_count, pushed);
    ck_assert_uint_eq(nsp__tb->swept_objects - swept, pushed);
    ck_assert_msg(s->freeindex <= 10, "the sweep left the cursor at slot %u, above slot 10",
                  s->freeindex);
    ck_assert_uint_eq(nsp__span_xfree_first(s), 0);
    for (unsigned i = 0; i < NRUN; i++)
        if (alloc_bit(o[i]))
            free((void *)o[i]);
}
END_TEST

/* A racing double free inside a run: slots 20..40 pushed in order, then slot 30 again (a second
 * free past the push's checks), so the list runs 30, 40, 39, .. 31, 30, 40, .. (a cycle). The
 * walk meets 30 a second time while its word is still in the walk's register (its alloc bit
 * cleared there, not yet stored): it must report the double once and stop, having freed 30..40
 * once each, and leave 20..29 allocated (lost behind the second push's link, never handed out).
 * Red when the walk checks the bit as read from the bitmap only. */
START_TEST(a_double_inside_a_run_of_the_list_is_caught_by_the_walk)
{
    static uintptr_t o[NRUN];
    struct nsp_span *s = run_case("a_double_inside_a_run_of_the_list_is_caught_by_the_walk", o);
    if (!s)
        return;
    for (unsigned i = 20; i <= 40; i++)
        ck_assert_int_ge(nsp__span_xfree_push(s, (void *)o[i], *(uint64_t *)o[i]), 0);
    ck_assert_int_ge(nsp__span_xfree_push(s, (void *)o[30], 0x5a5a5a5a5a5a5a5aULL), 0);
    uint32_t count = s->alloc_count;
    ck_assert_uint_eq(sweep_owned_here(s), 1);
    ck_assert_uint_eq(count - s->alloc_count, 11);
    for (unsigned i = 0; i < NRUN; i++)
        ck_assert_msg(alloc_bit(o[i]) == !(i >= 30 && i <= 40), "slot %u: alloc bit %d", i,
                      alloc_bit(o[i]));
    drain_hands_out_each_once(s, &o[20], 10); /* 30..40 come back once each, 20..29 never */
    for (unsigned i = 0; i < NRUN; i++)
        if (!(i >= 20 && i <= 40))
            free((void *)o[i]);
}
END_TEST

/* A listed object is freed from the program's view at its push, though its span counts it
 * allocated until its owner sweeps (which an owner that stops allocating may not do before its
 * idle release): the stats count it as a remote free, not in use, from the push on (stats.c walks
 * the cached spans' lists), and still agree with a walk of the spans (nsp__stats_is_valid: in use
 * per class, and mallocs - local - remote frees = in use); the sweep then leaves the class's in
 * use as it was. (The totals move with the test harness's own mallocs and frees: the class's in
 * use, which nothing else touches, is what the case compares.) */
START_TEST(a_listed_object_counts_as_freed_in_the_stats)
{
    uintptr_t o[NOBJ];
    struct nsp_span *s = list_case("a_listed_object_counts_as_freed_in_the_stats", o, 0x5a);
    if (!s)
        return;
    uintptr_t v = o[NOBJ / 2];
    nsp_stats_t st0, st1, st2;
    char why[512] = "";
    ck_assert_int_eq(nsp_stats_get(&st0), 0);
    free_on_other_cpu((void *)v, 0); /* (and there a malloc and a free of its own) */
    ck_assert_uint_eq(xfree_count(s, v), 1);
    ck_assert_int_eq(alloc_bit(v), 1);
    ck_assert_int_eq(nsp_stats_get(&st1), 0);
    ck_assert_msg(st1.cls[cls].objects_in_use + 1 == st0.cls[cls].objects_in_use,
                  "a listed object counts as in use: %lu objects of the class before its free, "
                  "%lu after",
                  (unsigned long)st0.cls[cls].objects_in_use,
                  (unsigned long)st1.cls[cls].objects_in_use);
    ck_assert_msg(nsp__stats_is_valid(nsp_stats_get, why, sizeof why) == 0, "listed: %s", why);
    ck_assert_uint_eq(sweep_owned_here(s), 0);
    ck_assert_int_eq(alloc_bit(v), 0);
    ck_assert_int_eq(nsp_stats_get(&st2), 0);
    ck_assert_uint_eq(st2.cls[cls].objects_in_use, st1.cls[cls].objects_in_use);
    ck_assert_msg(nsp__stats_is_valid(nsp_stats_get, why, sizeof why) == 0, "swept: %s", why);
    drain_list_case(s, o, 1u << NOBJ / 2);
    free_list_case(o, 1u << NOBJ / 2);
}
END_TEST

/* A listed object's tag (NSP_MAG_XFREE) is still in its first word after the sweep applies the
 * list (the sweep writes nothing: span.h). Handed out again and freed before the program writes
 * that word, the object must not look listed: a free of it must not search the list (free.c,
 * xfree_holds: the whole list taken, searched and pushed back, at every such free), and must not
 * be reported. So every hand-out clears the first word. The ways the tag reaches a hand-out: the
 * bin's miss (its span swept by its owner and still cached: the slow path's own object, from the
 * cursor, alloc.c), and nsp_malloc_node (the span released by a trim, swept by its central, and
 * handed out from there, api.c). (A bin's carve writes a link over the tag and the pop clears
 * that: the other cases here see a pop that leaves the link.) Then a free on the other cpu, the
 * way the list was filled, and the drain: the object comes back once. */
enum { H_MISS, H_NODE, NHOW };
static const char *const hname[NHOW] = {"the bin's miss", "nsp_malloc_node"};

START_TEST(a_swept_listed_object_handed_out_again_is_freed_without_a_search)
{
    unsigned how = (unsigned)_i;
    uintptr_t o[NOBJ];
    struct nsp_span *s =
        list_case("a_swept_listed_object_handed_out_again_is_freed_without_a_search", o, 0x5a);
    if (!s)
        return;
    qsort(o, NOBJ, sizeof o[0], by_index);
    uintptr_t v = o[NOBJ / 2];
    free_on_other_cpu((void *)v, 0);
    ck_assert_int_eq(nsp__magazine_tagged((void *)v), NSP_MAG_XFREE);
    if (how == H_NODE)
        nsp_trim(); /* released: the central sweeps it */
    else
        ck_assert_uint_eq(sweep_owned_here(s), 0);
    ck_assert_int_eq(alloc_bit(v), 0);
    ck_assert_msg(nsp__magazine_tagged((void *)v) == NSP_MAG_XFREE,
                  "%s: the sweep rewrote the tag: the case is moot", hname[how]);
    enum { MAXG = 64 };
    uintptr_t got[MAXG];
    unsigned ng = 0;
    int again = 0;
    while (!again && ng < MAXG) {
        uintptr_t q = (uintptr_t)(how == H_NODE ? nsp_malloc_node(SZ, s->node) : malloc(SZ));
        ck_assert_uint_ne(q, 0);
        if (q == v)
            again = 1;
        else
            got[ng++] = q;
    }
    ck_assert_msg(again, "%s: %#lx was not handed out again", hname[how], (unsigned long)v);
    ck_assert_msg(how != H_MISS || ng == 0, "%s: v came after %u others", hname[how], ng);
    uint64_t searches = atomic_load(&nsp__xfree_searches), dbl = errors(NSP_ERR_DOUBLE_FREE);
    free_on_other_cpu((void *)v, 0); /* never written since it came back */
    ck_assert_msg(atomic_load(&nsp__xfree_searches) == searches,
                  "%s: the free of an object handed out again searched the remote-free list "
                  "(%lu searches)",
                  hname[how], (unsigned long)(atomic_load(&nsp__xfree_searches) - searches));
    ck_assert_msg(errors(NSP_ERR_DOUBLE_FREE) == dbl, "%s: its free was reported", hname[how]);
    nsp_stats_t st;
    ck_assert_int_eq(nsp_stats_get(&st), 0);
    ck_assert_uint_eq(st.list_searches, atomic_load(&nsp__xfree_searches));
    for (unsigned i = 0; i < ng; i++)
        free((void *)got[i]);
    drain_list_case(s, o, 1u << NOBJ / 2);
    free_list_case(o, 1u << NOBJ / 2);
}
END_TEST

/* The thread on the other cpu frees objs[0..n) (each onto its span's remote-free list: a span our
 * cache holds). */
struct free_batch {
    uintptr_t *objs;
    unsigned n;
};
static void *free_batch_there(void *arg)
{
    const struct free_batch *b = arg;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(other, &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0)
        return (void *)1;
    for (unsigned i = 0; i < b->n; i++)
        free((void *)b->objs[i]);
    return NULL;
}

/* A foreign take's fold must not raise what a cached span can hand out past its charge (ledger.h:
 * charge >= covered, `over`). The fold moves the cursor down to the lowest slot it frees and loads
 * that word whole, which raises covered by nothing only while the cached word holds every free
 * slot of the cursor's word past the cursor (types.h). A sweep of remote frees past the cursor in
 * its word left them out of it (span.h, nsp__span_cursor_add): covered fell by them, a cover
 * lowered the charge to match, and the fold's load took them back with no cover after it (the
 * foreign taker hands out nothing): nsp_heap_check found such a span in a fork child. Played here
 * on one span of 960 B objects (256 KiB, a window of 64 KiB: ledger.h's step is half of it): the
 * cursor inside word 1 with a few free slots cached, 38 frees past it in that word and 80 above
 * swept (118 slots: the charge is lowered), the bin attached from the cached slots, an object of
 * word 1 below the cursor pushed, then a foreign take. */
START_TEST(a_foreign_fold_leaves_a_cached_span_charged_for_what_it_can_hand_out)
{
    if (!ready("a_foreign_fold_leaves_a_cached_span_charged_for_what_it_can_hand_out", 960))
        return;
    if (other < 0) {
        fprintf(stderr, "a_foreign_fold_...: skipped: one cpu (the remote frees need another)\n");
        return;
    }
    if (nsp__accounting != NSP_ACCT_OVER) {
        fprintf(stderr, "a_foreign_fold_...: skipped: the cover is `over`'s (ledger.h)\n");
        return;
    }
    enum { N = 210 };
    static uintptr_t o[N];
    for (unsigned i = 0; i < N; i++)
        o[i] = (uintptr_t)malloc(960);
    qsort(o, N, sizeof o[0], by_index);
    struct nsp_span *s = nsp__span_of((void *)o[0]);
    if (s != span() || index_of(o[0]) != 0 || index_of(o[N - 1]) != N - 1) {
        fprintf(stderr, "a_foreign_fold_...: skipped: the class's objects are not one fresh span "
                        "here (something else allocates 960 B)\n");
        for (unsigned i = 0; i < N; i++)
            free((void *)o[i]);
        return;
    }
    ck_assert_uint_ge(s->nelems, N);
    /* the cursor at slot 76 with 76..80 free and cached: the bin detached (a foreign take), then
     * five locked local frees, highest first (each moves the cursor down to it) */
    take_and_give_back(nsp__tb);
    for (unsigned i = 80; i >= 76; i--)
        free((void *)o[i]);
    ck_assert_uint_eq(s->freeindex, 76);
    /* remote frees: 90..127 (word 1, past the cursor) and 130..209, swept by the owner */
    uintptr_t far[N];
    unsigned nf = 0;
    for (unsigned i = 90; i < N; i++)
        if (i < 128 || i >= 130)
            far[nf++] = o[i];
    struct free_batch b = {far, nf};
    pthread_t t;
    void *rc;
    ck_assert_int_eq(pthread_create(&t, NULL, free_batch_there, &b), 0);
    ck_assert_int_eq(pthread_join(t, &rc), 0);
    ck_assert_ptr_null(rc);
    ck_assert_uint_eq(sweep_owned_here(s), 0);
    ck_assert_int_eq(alloc_bit(o[100]), 0);
    /* the owner's next steps, as its slow path makes them: the cover (a lowering, 118 slots
     * fewer), then the bin attached again, carving from the cached word */
    ck_assert_int_eq(nsp__cache_lock_foreign(nsp__tb), 1);
    nsp__ledger_cover(s, nsp__tb->pending);
    nsp__cache_reattach(nsp__tb, cls);
    nsp__cache_unlock(nsp__tb);
    ck_assert_uint_ne(atomic_load(&bin()->key), 0);
    free((void *)o[70]); /* pushed: word 1, below the cursor */
    ck_assert(listed(o[70]));
    /* a foreign take: the fold, and nothing handed out after it */
    ck_assert_int_eq(nsp__cache_lock_foreign(nsp__tb), 1);
    int64_t charge = atomic_load(&s->charge), covered = nsp__ledger_covered(s);
    uint32_t fi = s->freeindex;
    nsp__cache_unlock(nsp__tb);
    ck_assert_msg(charge >= covered,
                  "after a foreign take's fold the span is charged %lld B, less than the %lld B it "
                  "can hand out (cursor %u)", (long long)charge, (long long)covered, fi);
    char why[256];
    ck_assert_msg(nsp_heap_check(why, sizeof why) == 0, "heap check: %s", why);
    for (unsigned i = 0; i < N; i++)
        if ((i < 76 || i > 80) && (i < 90 || (i >= 128 && i < 130)))
            free((void *)o[i]);
}
END_TEST

#endif /* NSP_RSEQ_LOCKS */

START_TEST(bins_are_built_here)
{
#ifndef NSP_RSEQ_LOCKS
    fprintf(stderr, "test_bin_free: skipped: this build has no rseq sequences (TSan, not x86-64, "
                    "or no rseq in glibc): no bins' push to keep a second free out of\n");
#endif
}
END_TEST

/* The cpus the suite started with. ready() pins the thread to one cpu; under CK_FORK=no (every
 * case in this one process) that pin stayed for the cases after it, which then skipped as if the
 * machine had one cpu. Each case's teardown gives the thread its cpus back. */
static cpu_set_t suite_cpus;

static void unpin(void)
{
    sched_setaffinity(0, sizeof suite_cpus, &suite_cpus);
}

int main(void)
{
    Suite *s = suite_create("bin_free");
    TCase *tc = tcase_create("second free");
    if (sched_getaffinity(0, sizeof suite_cpus, &suite_cpus) == 0)
        tcase_add_checked_fixture(tc, NULL, unpin);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, bins_are_built_here);
#ifdef NSP_RSEQ_LOCKS
    tcase_add_loop_test(tc, second_free_in_place_is_reported, 0, NV);
    tcase_add_loop_test(tc, second_free_after_a_cycle_is_reported, 0, NV);
    tcase_add_test(tc, free_of_a_slot_never_handed_out_is_reported);
    tcase_add_test(tc, free_into_a_reused_span_is_reported);
    tcase_add_test(tc, a_double_free_after_a_write_after_free_is_reported);
    tcase_add_test(tc, a_slot_kept_by_the_empty_span_check_is_counted_and_charged);
    tcase_add_test(tc, a_slot_kept_by_a_central_hand_out_is_counted_and_charged);
    tcase_add_test(tc, a_slot_kept_by_a_cache_hand_out_is_counted_and_charged);
    tcase_add_loop_test(tc, a_live_object_that_looks_free_is_freed_once, 0, NLOOKS);
    tcase_add_test(tc, a_pointer_above_the_address_space_is_not_ours);
    tcase_add_test(tc, a_second_local_free_of_a_listed_object_is_reported);
    tcase_add_test(tc, a_second_remote_free_of_a_listed_object_is_reported);
    tcase_add_test(tc, a_listed_objects_overwritten_link_is_reported_at_the_sweep);
    tcase_add_test(tc, an_overwritten_link_found_by_a_second_free_is_reported);
    tcase_add_test(tc, a_head_that_is_no_slot_is_reported_by_a_second_free);
    tcase_add_test(tc, a_push_onto_a_head_word_no_longer_the_spans_is_refused);
    tcase_add_test(tc, a_refused_push_that_the_slab_refuses_too_goes_on_as_it_was);
    tcase_add_test(tc, a_sweep_of_a_list_and_bits_moves_the_cursor_to_the_lowest);
    tcase_add_test(tc, a_racing_double_free_on_the_list_is_reported_once_and_counted_right);
    tcase_add_test(tc, a_sweep_of_a_list_of_runs_frees_exactly_the_listed_slots);
    tcase_add_test(tc, a_double_inside_a_run_of_the_list_is_caught_by_the_walk);
    tcase_add_test(tc, a_listed_object_counts_as_freed_in_the_stats);
    tcase_add_loop_test(tc, a_swept_listed_object_handed_out_again_is_freed_without_a_search, 0,
                        NHOW);
    tcase_add_test(tc, a_foreign_fold_leaves_a_cached_span_charged_for_what_it_can_hand_out);
#endif
    suite_add_tcase(s, tc);
    return nsp_run_suite(s);
}
