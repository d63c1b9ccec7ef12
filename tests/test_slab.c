/*
 * tests/test_slab.c — the per-cpu object slabs (host/slab.h): frees of other spans' objects kept
 * on their cpu, popped by mallocs, drained by every foreign take.
 *
 * Deterministic steps on the real machine (rseq: the slabs go with the bins), one thread per step
 * pinned to a cpu and joined, so that the order is the test's (test_magazine.c's method):
 *   - a free on cpu b of an object whose span cpu a caches waits in b's slab (tagged with b,
 *     still allocated from its span's view) until b is taken, which applies it once;
 *   - a full slab gives its top half back to the spans and takes the free;
 *   - a second free of an object waiting in a slab is reported at that second free, naming the
 *     pointer, whether it comes from the slab's cpu or from the span's, also when the slab's cache
 *     cannot be taken then (every fence refused), and after a cycle drained the slab;
 *   - the push, the pop and the take, modelled step by step on the real slab with a foreign
 *     detach (a cycle's take, which drains it) before each step and after the commit: every
 *     object ends exactly once in the slab, in the caller's hands, or freed;
 *   - the real sequences: off the slab's cpu or detached they miss, on it they push, pop and take
 *     in stack order; a slab not set up is not popped on its cpu (cpu 0's, whose number its
 *     mapped cpu word holds, included) whatever else a racing pop could read of it;
 *   - a cycle while objects wait in slabs: the ledger's recount agrees with the charges;
 *   - a class above 2 KiB (32 objects a span) keeps its other spans' frees in the slab, and the
 *     mallocs after its bin's span is full again get them back;
 *   - an interior pointer of another span's object is reported, and no slab keeps it;
 *   - a second free past a write after free over a waiting object's tag (on the slab's cpu, with
 *     its copies popped or split by a take; or into the span's bin): the object leaves once,
 *     live, and the other copy is reported;
 *   - a live object whose first word carries the bins' keys' top bits (no link, or a link of its
 *     span) is freed once, unreported, by the slow way.
 * Elsewhere (virtual cores, no rseq, TSan, NSP_SECURE, exact) every case skips visibly. The
 * content-checked cross-cpu stress that runs through the slabs is test_magazine's
 * objects_handed_across_cpus_stay_intact and test_host_stress.
 *
 * Calls nsp_malloc/nsp_free by name: under a sanitizer the process's malloc is the sanitizer's.
 */
#define _GNU_SOURCE
#include <check.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "host/cache.h"
#include "host/check.h"
#include "host/ledger.h"
#include "host/pageheap.h"
#include "host/runtime.h"
#include "host/span.h"
#include "check_main.h"
#include "two_cpus.h"
#include "numaspan.h"

#define SZ 200 /* a class with a slab */
#define NOBJ 10

static int cpu_a = -1, cpu_b = -1;
static unsigned cls_sz;

static uint64_t errors(enum nsp_error_kind k)
{
    return atomic_load(&nsp__errors[k]);
}

static struct nsp_cache *cache_of(int cpu)
{
    return &nsp__caches[nsp__topo->cpu_to_cache[cpu]];
}

/* Two cpus and the slabs on: 1, else 0 with the reason printed. */
static int ready(const char *name)
{
    nsp_free(nsp_malloc(SZ));
    nsp__on_error = NSP_ON_ERROR_WARN; /* count the double frees these tests commit */
    if (!nsp_test_two_cpus(name, &cpu_a, &cpu_b))
        return 0;
    nsp_free(nsp_malloc(SZ));
    cls_sz = nsp__size_to_class(SZ);
    if (nsp__tb && cache_of(cpu_a)->bins_on && cache_of(cpu_b)->bins_on) {
        /* a slab is set up at its class's first span (slab.h): every class's here, on both
         * cpus, so that each case finds the slabs of the classes it uses */
        for (int i = 0; i < 2; i++) {
            struct nsp_cache *c = cache_of(i ? cpu_b : cpu_a);
            ck_assert_int_eq(nsp__cache_lock_foreign(c), 1);
            for (unsigned k = 1; k < NSP_NUM_CLASSES; k++)
                nsp__cache_slab_set_up(c, k);
            nsp__cache_unlock(c);
        }
    }
    if (!nsp__tb || !cache_of(cpu_a)->bins_on || !cache_of(cpu_b)->bins_on ||
        !cache_of(cpu_b)->slabs[cls_sz].cap) {
        fprintf(stderr, "%s: skipped: no slabs here (no rseq, virtual cores, NSP_SECURE or "
                        "exact)\n", name);
        return 0;
    }
    return 1;
}

struct step {
    int cpu;
    void (*fn)(void *);
    void *arg;
    int ran;
};

static void *step_main(void *arg)
{
    struct step *st = arg;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(st->cpu, &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0 || sched_getcpu() != st->cpu)
        return NULL;
    /* the thread's cache (nsp__tb) is set by its first slow path: a malloc of another class,
     * freed locally, so that the step's first free already finds its cpu's slab */
    nsp_free(nsp_malloc(24));
    st->fn(st->arg);
    st->ran = 1;
    return NULL;
}

static void on_cpu(int cpu, void (*fn)(void *), void *arg)
{
    struct step st = {cpu, fn, arg, 0};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, step_main, &st), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_msg(st.ran, "could not run a step on cpu %d", cpu);
}

struct objs {
    void *v[72]; /* NSP_SLAB_MAX + 1 at most, and 64 for the reuse checks */
    unsigned n;
    size_t size;
    int keep; /* malloc_objs: the cache keeps their span (else it lets it go) */
};

static void malloc_objs(void *arg)
{
    struct objs *o = arg;
    for (unsigned i = 0; i < o->n; i++) {
        o->v[i] = nsp_malloc(o->size);
        memset(o->v[i], 0x5a, o->size);
    }
    /* then this cpu's cache lets their span go (to its central): a free on another cpu of an
     * object of a span a cache still holds goes onto that span's remote-free list (span.h), not
     * into the freeing cpu's slab, which these cases are about */
    struct nsp_cache *c = o->keep ? NULL : nsp__cache_acquire(); /* NULL: busy (held by the case) */
    if (c) {
        unsigned k = nsp__size_to_class(o->size);
        if (c->spans[k] != &nsp__empty_span)
            ck_assert_int_eq(nsp__cache_release(c, k), 0);
        nsp__cache_unlock(c);
    }
}

static void free_objs(void *arg)
{
    struct objs *o = arg;
    for (unsigned i = 0; i < o->n; i++)
        nsp_free(o->v[i]);
}

static void free_one(void *arg)
{
    nsp_free(*(void **)arg);
}

/* Takes cache c as a cycle does (which drains its slabs) and gives it back. */
static void take(struct nsp_cache *c)
{
    ck_assert_int_eq(nsp__cache_lock_foreign(c), 1);
    nsp__cache_unlock(c);
}

static int live(const void *p)
{
    struct nsp_span *s = nsp__span_of(p); /* NULL: its span emptied and gone, so not live */
    return s && nsp__span_slot_live(s, nsp__span_index(s, (uintptr_t)p));
}

static unsigned slab_count(const struct nsp_cache *c, unsigned cls)
{
    return (unsigned)(c->slabs[cls].word & NSP_SLAB_COUNT);
}

/* o->n objects of SZ allocated on cpu a (a caches their span) and freed on cpu b, where they wait
 * in b's slab, emptied first. Returns b. */
static struct nsp_cache *waiting_in_b(struct objs *o, unsigned n)
{
    struct nsp_cache *b = cache_of(cpu_b);
    take(b);
    o->n = n;
    o->size = SZ;
    on_cpu(cpu_a, malloc_objs, o);
    on_cpu(cpu_b, free_objs, o);
    return b;
}

/* Runs fn on cpu `cpu` with stderr sent to a file, and says whether what it wrote names p. */
static int stderr_names(int cpu, void (*fn)(void *), void *arg, const void *p)
{
    char path[] = "/tmp/nsp_test_slab_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    on_cpu(cpu, fn, arg);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char buf[4096] = {0}, want[64];
    ssize_t got = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    unlink(path);
    snprintf(want, sizeof want, "%p", p);
    return got > 0 && strstr(buf, want) && strstr(buf, "double free");
}

/* The refill that hands out a span's last free slot (from the cached span, no slot left for the
 * carve) attaches the bin empty, `full` set, so that the span's objects freed on this cpu push
 * into it; left detached, each such free went the locked way until the cpu's next malloc (a
 * consumer sharing its producer's cpu: a third of producer/consumer's frees at 2 threads). Class
 * 1,152 B: 56 objects a span, a refill hands out 1 + a carve of 4, so the 12th refill of a fresh
 * span takes its last slot at the refill itself. */
#define SZ_LAST 1100
struct last_slot {
    void *v[200];
    int pushed, attached, popped_back, reached;
};

static void use_up_a_span_then_free_one(void *arg)
{
    struct last_slot *o = arg;
    unsigned cls = nsp__size_to_class(SZ_LAST);
    struct nsp_cache *c = nsp__tb;
    struct nsp_bin *b = &c->bins[cls];
    for (unsigned i = 0; i < 200 && !o->reached; i++) {
        o->v[i] = nsp_malloc(SZ_LAST);
        memset(o->v[i], 0x5a, SZ_LAST);
        struct nsp_span *s = nsp__span_of(o->v[i]);
        /* the span handed out whole and the bin's list empty: the last malloc was a refill */
        if (c->spans[cls] == s && s->alloc_count == s->nelems && !(b->word >> 16)) {
            o->reached = 1;
            o->attached = atomic_load(&b->key) != 0;
            void *p = o->v[i];
            nsp_free(p);
            o->pushed = (uintptr_t)(b->word >> 16) == (uintptr_t)p;
            o->v[i] = nsp_malloc(SZ_LAST);
            o->popped_back = o->v[i] == p;
        }
    }
    for (unsigned i = 0; i < 200 && o->v[i]; i++)
        nsp_free(o->v[i]);
}

START_TEST(a_refill_that_takes_a_spans_last_slot_keeps_its_bin_for_local_frees)
{
    if (!ready("a_refill_that_takes_a_spans_last_slot_keeps_its_bin_for_local_frees"))
        return;
    struct last_slot o;
    memset(&o, 0, sizeof o);
    on_cpu(cpu_a, use_up_a_span_then_free_one, &o);
    ck_assert_msg(o.reached, "no span of class 1,152 B was handed out whole in 200 mallocs");
    ck_assert_msg(o.attached, "the bin was left detached on its used-up span");
    ck_assert_msg(o.pushed, "the local free did not go into the bin");
    ck_assert_msg(o.popped_back, "the next malloc did not pop the freed object back");
}
END_TEST

START_TEST(a_free_of_another_spans_object_waits_in_the_slab_until_a_take)
{
    if (!ready("a_free_of_another_spans_object_waits_in_the_slab_until_a_take"))
        return;
    static struct objs o;
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE);
    struct nsp_cache *b = waiting_in_b(&o, 1);
    void *p = o.v[0];
    unsigned count = slab_count(b, cls_sz);
    int held = nsp__cache_slab_holds(b, cls_sz, (uintptr_t)p), live_then = live(p);
    int64_t tag = nsp__magazine_tagged(p);
    uint64_t in_mag = b->mag.count;
    take(b);
    ck_assert_uint_eq(count, 1);
    ck_assert_int_eq(held, 1);
    ck_assert_uint_eq(in_mag, 0); /* the slab, not the magazine */
    ck_assert_int_eq(live_then, 1); /* allocated from its span's view while it waits */
    ck_assert_int_eq(tag, (int64_t)b->index);
    ck_assert_uint_eq(slab_count(b, cls_sz), 0);
    ck_assert_int_eq(live(p), 0); /* the take applied it, once */
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before);
}
END_TEST

static struct objs full;

/* A full slab (of a 2000-byte class: a few objects) takes one more free by giving its top half
 * back to the spans: those applied at once, the rest and the new free waiting. */
START_TEST(a_full_slab_gives_its_top_half_back_and_takes_the_free)
{
    if (!ready("a_full_slab_gives_its_top_half_back_and_takes_the_free"))
        return;
    struct nsp_cache *b = cache_of(cpu_b);
    unsigned cls = nsp__size_to_class(2000);
    unsigned cap = (unsigned)b->slabs[cls].cap;
    ck_assert_uint_ge(cap, NSP_SLAB_MIN);
    take(b);
    full.n = cap + 1;
    full.size = 2000;
    on_cpu(cpu_a, malloc_objs, &full);
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE);
    on_cpu(cpu_b, free_objs, &full);
    unsigned count = slab_count(b, cls), applied = 0, waiting = 0;
    for (unsigned i = 0; i < cap + 1; i++) {
        applied += !live(full.v[i]);
        waiting += nsp__cache_slab_holds(b, cls, (uintptr_t)full.v[i]);
    }
    int last_waits = nsp__cache_slab_holds(b, cls, (uintptr_t)full.v[cap]);
    take(b);
    unsigned after = 0;
    for (unsigned i = 0; i < cap + 1; i++)
        after += !live(full.v[i]);
    ck_assert_uint_eq(count, cap - cap / 2 + 1);
    ck_assert_uint_eq(applied, cap / 2);
    ck_assert_uint_eq(waiting, cap - cap / 2 + 1);
    ck_assert_int_eq(last_waits, 1);
    ck_assert_uint_eq(after, cap + 1); /* every one freed, once */
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before);
}
END_TEST

START_TEST(a_double_free_of_an_object_in_a_slab_is_reported_naming_it)
{
    if (!ready("a_double_free_of_an_object_in_a_slab_is_reported_naming_it"))
        return;
    static struct objs o;
    /* from the slab's own cpu: the tag sends it to the slow path, which takes b (draining the
     * slab) and asks the bits */
    struct nsp_cache *b = waiting_in_b(&o, 2);
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE);
    int named_b = stderr_names(cpu_b, free_one, &o.v[0], o.v[0]);
    uint64_t at_b = errors(NSP_ERR_DOUBLE_FREE);
    /* from the span's cpu (a local free: its bin's push refuses the tag) */
    int named_a = stderr_names(cpu_a, free_one, &o.v[1], o.v[1]);
    uint64_t at_a = errors(NSP_ERR_DOUBLE_FREE);
    take(b);
    take(cache_of(cpu_a));
    ck_assert_int_eq(named_b, 1);
    ck_assert_uint_eq(at_b, before + 1);
    ck_assert_int_eq(named_a, 1);
    ck_assert_uint_eq(at_a, before + 2);
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before + 2); /* once each */
    ck_assert_int_eq(live(o.v[0]), 0);
    ck_assert_int_eq(live(o.v[1]), 0);
    /* neither is handed out twice afterwards */
    static struct objs again;
    again.n = 64;
    again.size = SZ;
    on_cpu(cpu_a, malloc_objs, &again);
    unsigned seen0 = 0, seen1 = 0;
    for (unsigned i = 0; i < again.n; i++)
        seen0 += again.v[i] == o.v[0], seen1 += again.v[i] == o.v[1];
    on_cpu(cpu_a, free_objs, &again);
    ck_assert_uint_le(seen0, 1);
    ck_assert_uint_le(seen1, 1);
}
END_TEST

/* The same when the slab's cache cannot be taken at the second free (every fence refused): the
 * slow path reads the slab instead, and must not let the bits (which say allocated) decide. */
START_TEST(a_double_free_is_reported_when_the_slab_cannot_be_drained)
{
    if (!ready("a_double_free_is_reported_when_the_slab_cannot_be_drained"))
        return;
    static struct objs o;
    struct nsp_cache *b = waiting_in_b(&o, 1);
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE);
    atomic_store(&nsp__test_fence_fail, 3);
    on_cpu(cpu_a, free_one, &o.v[0]);
    atomic_store(&nsp__test_fence_fail, 0);
    uint64_t at_second = errors(NSP_ERR_DOUBLE_FREE);
    int live_then = live(o.v[0]);
    take(cache_of(cpu_a));
    take(b);
    ck_assert_uint_eq(at_second, before + 1);
    ck_assert_int_eq(live_then, 1); /* still b's slab's to apply */
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before + 1);
    ck_assert_int_eq(live(o.v[0]), 0);
}
END_TEST

/* A cycle drains the slabs (its take of each cache): a free of an object that waited there, after
 * the cycle, is a double free (its freed bit, or its slot swept free), reported naming it. */
START_TEST(a_free_of_a_slab_held_object_after_a_cycle_is_reported)
{
    if (!ready("a_free_of_a_slab_held_object_after_a_cycle_is_reported"))
        return;
    static struct objs o;
    /* a live neighbour keeps the span (cached by a, the main thread's cpu) from going back to
     * the page heap at the cycle: the second free then meets its span, not unowned memory */
    void *keep = nsp_malloc(SZ);
    struct nsp_cache *b = waiting_in_b(&o, 1);
    unsigned count = slab_count(b, cls_sz);
    int same_span = nsp__span_of(keep) == nsp__span_of(o.v[0]);
    nsp_pacer_cycle();
    unsigned after_cycle = slab_count(b, cls_sz);
    int live_after_cycle = live(o.v[0]);
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE);
    int named = stderr_names(cpu_b, free_one, &o.v[0], o.v[0]);
    nsp_free(keep);
    ck_assert_int_eq(same_span, 1);
    ck_assert_uint_eq(count, 1);
    ck_assert_uint_eq(after_cycle, 0);
    ck_assert_int_eq(live_after_cycle, 0);
    ck_assert_int_eq(named, 1);
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before + 1);
}
END_TEST

/* ---- the sequences as a deterministic interleaving (test_magazine.c's method) ---------------- */

/* A sequence cannot be stopped half-way, so a foreign detach at each of its steps is played with
 * a model of it on the real slab, under the kernel's rules: a sequence on a cpu that a fence
 * reaches restarts from its first step; one that committed before the fence holds its result.
 * Steps: 0 cpu and on; 1 the count (and room); 2 the slot(s) written or read; 3 the commit. */
enum { M_RUNNING, M_DONE, M_MISS };
enum { OP_PUSH, OP_POP, OP_TAKE };
#define MODEL_STEPS 4

struct model {
    int op, step, result;
    uint64_t w, n;
    uintptr_t p;                   /* push: the object; pop: the one read */
    uintptr_t out[NSP_SLAB_MAX];   /* take */
};

static void model_step(struct nsp_slab *m, struct model *x)
{
    if (x->result != M_RUNNING)
        return;
    switch (x->step++) {
    case 0:
        if (sched_getcpu() != (int)m->cpu || !atomic_load(&m->on))
            x->result = M_MISS;
        break;
    case 1:
        x->w = m->word;
        x->n = x->w & NSP_SLAB_COUNT;
        if ((x->op == OP_PUSH && x->n >= m->cap) || (x->op == OP_POP && !x->n) ||
            (x->op == OP_TAKE && x->n < 2))
            x->result = M_MISS;
        break;
    case 2:
        if (x->op == OP_PUSH)
            m->slot[x->n] = x->p; /* past count: a restart rewrites it */
        else if (x->op == OP_POP)
            x->p = m->slot[x->n - 1];
        else
            memcpy(x->out, &m->slot[x->n - x->n / 2], x->n / 2 * sizeof x->out[0]);
        break;
    case 3:
        m->word = x->op == OP_PUSH  ? x->w + 1
                  : x->op == OP_POP ? x->w + NSP_SLAB_POP - 1
                                    : x->w - x->n / 2;
        x->result = M_DONE;
        break;
    }
}

struct model_case {
    int op, k, taken;
    struct model x;
    unsigned left; /* the slab's count at the end */
};

/* On cpu b: the model runs k steps, a foreign taker takes b (detach, fence, drain, attach; its
 * fence restarts the model unless it committed), and the model runs to its end. */
static void model_detached(void *arg)
{
    struct model_case *mc = arg;
    struct nsp_cache *b = cache_of(cpu_b);
    struct nsp_slab *m = &b->slabs[cls_sz];
    for (int i = 0; i < mc->k; i++)
        model_step(m, &mc->x);
    mc->taken = nsp__cache_lock_foreign(b);
    if (mc->taken)
        nsp__cache_unlock(b);
    if (mc->x.result != M_DONE) { /* restarted by the fence */
        uintptr_t p = mc->x.op == OP_PUSH ? mc->x.p : 0;
        mc->x = (struct model){.op = mc->x.op, .p = p};
    }
    while (mc->x.result == M_RUNNING)
        model_step(m, &mc->x);
    mc->left = (unsigned)(m->word & NSP_SLAB_COUNT);
}

START_TEST(the_sequences_match_their_model_and_a_detach_at_every_step_loses_nothing)
{
    if (!ready("the_sequences_match_their_model_and_a_detach_at_every_step_loses_nothing"))
        return;
    struct nsp_cache *b = cache_of(cpu_b);
    static struct objs o, extra;
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE);
    for (int op = OP_PUSH; op <= OP_TAKE; op++)
        for (int k = 0; k <= MODEL_STEPS; k++) {
            waiting_in_b(&o, NOBJ); /* NOBJ objects waiting in b's slab */
            ck_assert_uint_eq(slab_count(b, cls_sz), NOBJ);
            struct model_case mc = {.op = op, .k = k, .x = {.op = op}};
            if (op == OP_PUSH) { /* one more object, tagged as free_to_slab tags it */
                extra.n = 1;
                extra.size = SZ;
                on_cpu(cpu_a, malloc_objs, &extra);
                mc.x.p = (uintptr_t)extra.v[0];
                *(uint64_t *)extra.v[0] = nsp__magazine_tag(extra.v[0], b->index);
            }
            on_cpu(cpu_b, model_detached, &mc);
            ck_assert_int_eq(mc.taken, 1);
            /* committed before the detach (k == MODEL_STEPS): the drain took the other NOBJ
             * (and a pushed object); otherwise the restarted model ran on the empty slab */
            int committed_first = k == MODEL_STEPS;
            if (op == OP_PUSH) {
                ck_assert_int_eq(mc.x.result, M_DONE);
                ck_assert_uint_eq(mc.left, committed_first ? 0 : 1);
            } else if (op == OP_POP) {
                ck_assert_int_eq(mc.x.result, committed_first ? M_DONE : M_MISS);
                ck_assert_uint_eq(mc.left, 0);
                if (committed_first) { /* the top one, popped: the caller's, allocated */
                    ck_assert_ptr_eq((void *)mc.x.p, o.v[NOBJ - 1]);
                    ck_assert_int_eq(live((void *)mc.x.p), 1);
                }
            } else {
                ck_assert_int_eq(mc.x.result, committed_first ? M_DONE : M_MISS);
                ck_assert_uint_eq(mc.left, 0);
                if (committed_first) { /* the top half, the caller's to apply */
                    for (unsigned i = 0; i < NOBJ / 2; i++)
                        ck_assert_ptr_eq((void *)mc.x.out[i], o.v[NOBJ - NOBJ / 2 + i]);
                    nsp__magazine_apply(mc.x.out, NOBJ / 2);
                }
            }
            take(b); /* what the model left in the slab */
            for (unsigned i = 0; i < NOBJ; i++) {
                int kept = op == OP_POP && committed_first && i == NOBJ - 1;
                ck_assert_msg(live(o.v[i]) == kept, "op %d, detach before step %d: object %u %s",
                              op, k, i, kept ? "popped but freed" : "not freed");
            }
            if (op == OP_PUSH)
                ck_assert_int_eq(live(extra.v[0]), 0);
            if (op == OP_POP && committed_first) {
                *(uint64_t *)mc.x.p = 0; /* what nsp__slab_alloc does for its caller */
                nsp_free((void *)mc.x.p);
                take(cache_of(cpu_a)); /* into a's bin, then folded into its span */
                ck_assert_int_eq(live((void *)mc.x.p), 0);
            }
            ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before);
        }
}
END_TEST

/* ---- the real sequences ----------------------------------------------------------------------- */

struct real {
    void *popped[NOBJ + 1];
    uintptr_t out[NSP_SLAB_MAX];
    unsigned taken, npop;
    int pushed;
    void *p;
};

#ifdef NSP_RSEQ_LOCKS
static void real_pop_all(void *arg)
{
    struct real *r = arg;
    struct nsp_cache *b = cache_of(cpu_b);
    r->npop = 0;
    void *p;
    while (r->npop <= NOBJ && (p = nsp__slab_alloc(b, cls_sz)))
        r->popped[r->npop++] = p;
}

static void real_take(void *arg)
{
    struct real *r = arg;
    r->taken = nsp__cache_take_slab_rseq(cache_of(cpu_b), cls_sz, r->out);
}

static void real_push(void *arg)
{
    struct real *r = arg;
    int x;
    /* tagged first, as every free into a slab does (free.c): a drain applies only objects that
     * carry their slab's tag */
    *(uint64_t *)r->p = nsp__magazine_tag(r->p, cache_of(cpu_b)->index);
    while ((x = nsp__slab_push(&cache_of(cpu_b)->slabs[cls_sz], r->p)) == 2)
        ;
    r->pushed = x == 0;
}
#else
/* no rseq here (TSan builds): ready() skips every case; these only keep the file compiling */
static void real_pop_all(void *arg)
{
    (void)arg;
}

static void real_take(void *arg)
{
    (void)arg;
}

static void real_push(void *arg)
{
    (void)arg;
}
#endif

START_TEST(the_real_sequences_push_pop_and_take_in_stack_order)
{
    if (!ready("the_real_sequences_push_pop_and_take_in_stack_order"))
        return;
    struct nsp_cache *b = cache_of(cpu_b);
    static struct objs o;
    static struct real r;
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE);
    waiting_in_b(&o, NOBJ);
    /* off b's cpu every sequence misses */
    on_cpu(cpu_a, real_take, &r);
    unsigned off_take = r.taken;
    on_cpu(cpu_a, real_pop_all, &r);
    unsigned off_pop = r.npop;
    /* detached, on b's cpu too */
    atomic_store(&b->slabs[cls_sz].on, 0);
    on_cpu(cpu_b, real_take, &r);
    unsigned detached_take = r.taken;
    atomic_store(&b->slabs[cls_sz].on, 1);
    unsigned count = slab_count(b, cls_sz);
    /* on it: the take hands out the top half in push order */
    on_cpu(cpu_b, real_take, &r);
    unsigned taken = r.taken, after_take = slab_count(b, cls_sz);
    int order = 1;
    for (unsigned i = 0; i < taken; i++)
        order &= r.out[i] == (uintptr_t)o.v[NOBJ - NOBJ / 2 + i];
    nsp__magazine_apply(r.out, taken);
    /* the pops give the rest back in reverse push order, and count as mallocs + frees at the
     * drain (the slab word's pops) */
    on_cpu(cpu_b, real_pop_all, &r);
    unsigned npop = r.npop;
    int pop_order = 1, tags_gone = 1, pops_live = 1;
    for (unsigned i = 0; i < npop; i++) {
        pop_order &= r.popped[i] == o.v[NOBJ / 2 - 1 - i];
        tags_gone &= *(uint64_t *)r.popped[i] == 0;
        pops_live &= live(r.popped[i]);
    }
    uint64_t pops = b->slabs[cls_sz].word >> 8;
    /* and a push puts one back */
    r.p = r.popped[0];
    on_cpu(cpu_b, real_push, &r);
    int pushed = r.pushed;
    unsigned after_push = slab_count(b, cls_sz);
    uint64_t allocs0 = atomic_load(&nsp__ledger[b->node].alloc_objects);
    uint64_t frees0 = atomic_load(&nsp__ledger[b->node].free_objects);
    take(b); /* the drain adds the pops to the node's totals: a malloc and a free each */
    uint64_t allocs1 = atomic_load(&nsp__ledger[b->node].alloc_objects);
    uint64_t frees1 = atomic_load(&nsp__ledger[b->node].free_objects);
    for (unsigned i = 1; i < npop; i++)
        nsp_free(r.popped[i]);
    take(cache_of(cpu_a)); /* those went into a's bin: folded into their span */
    ck_assert_uint_eq(off_take, 0);
    ck_assert_uint_eq(off_pop, 0);
    ck_assert_uint_eq(detached_take, 0);
    ck_assert_uint_eq(count, NOBJ);
    ck_assert_uint_eq(taken, NOBJ / 2);
    ck_assert_uint_eq(after_take, NOBJ - NOBJ / 2);
    ck_assert_int_eq(order, 1);
    ck_assert_uint_eq(npop, NOBJ - NOBJ / 2);
    ck_assert_int_eq(pop_order, 1);
    ck_assert_int_eq(tags_gone, 1);
    ck_assert_int_eq(pops_live, 1);
    ck_assert_uint_eq(pops, npop);
    ck_assert_uint_ge(allocs1 - allocs0, pops);
    ck_assert_uint_ge(frees1 - frees0, pops);
    ck_assert_int_eq(pushed, 1);
    ck_assert_uint_eq(after_push, 1);
    ck_assert_int_eq(live(r.popped[0]), 0); /* the push's object, drained by the take */
    for (unsigned i = 0; i < NOBJ; i++)
        ck_assert_int_eq(live(o.v[i]), 0);
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before);
}
END_TEST

/* A slab not set up (slab.h, "Set-up": as mapped, zero) is not popped, on any cpu. Its mapped cpu
 * word is 0, cpu 0's number, so what keeps a pop out is nsp__slab_alloc's look at cap (0) before
 * the sequence, the look that also orders the sequence's read of cpu after a set-up. The step on
 * each cpu meets the slab as a racing pop could if it read `on` after a set-up and cpu before it
 * (cpu 0, cap 0, on 1, a count) and must miss, the word as it was. The control: the raw pop on
 * cpu 0 takes from that state (only the look keeps it out there). Made and undone by the step on
 * the cpu, holding the cache's lock, so that no drain applies the stand-in objects. */
struct unset {
    int cpu, ran;
    uintptr_t got, raw;
    uint64_t word;
};

#ifdef NSP_RSEQ_LOCKS
static void unset_pop(void *arg)
{
    struct unset *u = arg;
    static uint64_t stand_in[2]; /* never handed out: the pop's tag check would refuse them */
    struct nsp_cache *c = cache_of(u->cpu);
    struct nsp_slab *m = &c->slabs[cls_sz];
    ck_assert_int_eq(nsp__cache_lock_foreign(c), 1); /* its slabs drained: empty, attached */
    int64_t cpu = m->cpu;
    uint64_t cap = m->cap;
    m->cpu = 0;
    m->cap = 0;
    m->slot[0] = (uintptr_t)&stand_in[0];
    m->slot[1] = (uintptr_t)&stand_in[1];
    m->word = 2;
    atomic_store(&m->on, 1);
    u->got = (uintptr_t)nsp__slab_alloc(c, cls_sz);
    u->word = m->word;
    uintptr_t p;
    while ((p = (uintptr_t)nsp__slab_pop(m)) == 1)
        ;
    u->raw = p;
    m->word = 0; /* as the drain left it */
    m->cpu = cpu;
    m->cap = cap;
    nsp__cache_unlock(c);
    u->ran = sched_getcpu() == u->cpu;
}
#else
static void unset_pop(void *arg)
{
    (void)arg;
}
#endif

START_TEST(a_slab_never_set_up_is_not_popped_on_any_cpu)
{
    if (!ready("a_slab_never_set_up_is_not_popped_on_any_cpu"))
        return;
    if (cpu_a != 0 && cpu_b != 0)
        fprintf(stderr, "a_slab_never_set_up_is_not_popped_on_any_cpu: cpu 0 is not this "
                        "process's: run on cpus %d and %d only\n", cpu_a, cpu_b);
    uint64_t refused = errors(NSP_ERR_FREE_LIST) + errors(NSP_ERR_DOUBLE_FREE);
    for (int i = 0; i < 2; i++) {
        static struct unset u;
        memset(&u, 0, sizeof u);
        u.cpu = i ? cpu_b : cpu_a;
        on_cpu(u.cpu, unset_pop, &u);
        ck_assert_int_eq(u.ran, 1);
        ck_assert_msg(u.got == 0 && u.word == 2,
                      "cpu %d: a malloc popped a slab not set up (%#lx, word %llu)", u.cpu,
                      (unsigned long)u.got, (unsigned long long)u.word);
        if (u.cpu == 0)
            ck_assert_msg(u.raw != 0, "cpu 0: the raw pop missed too: the case shows nothing");
    }
    /* (a stand-in popped would have been refused, reported as one of these) */
    ck_assert_uint_eq(errors(NSP_ERR_FREE_LIST) + errors(NSP_ERR_DOUBLE_FREE), refused);
}
END_TEST

/* A cycle while objects wait in slabs: it drains them, and the ledger's recount agrees. */
START_TEST(a_cycle_drains_the_slabs_and_the_ledger_holds)
{
    if (!ready("a_cycle_drains_the_slabs_and_the_ledger_holds"))
        return;
    static struct objs o;
    struct nsp_cache *b = waiting_in_b(&o, NOBJ);
    unsigned waiting = slab_count(b, cls_sz);
    nsp_pacer_cycle();
    unsigned after_cycle = slab_count(b, cls_sz);
    unsigned node;
    int64_t ledger, charges;
    int rc = nsp__ledger_recount(1, &node, &ledger, &charges);
    unsigned freed = 0;
    for (unsigned i = 0; i < NOBJ; i++)
        freed += nsp__span_of(o.v[i]) == NULL || !live(o.v[i]);
    ck_assert_uint_eq(waiting, NOBJ);
    ck_assert_uint_eq(after_cycle, 0);
    ck_assert_msg(rc == 0, "recount: node %u heapLive + pending %lld != charges %lld", node,
                  (long long)ledger, (long long)charges);
    ck_assert_uint_eq(freed, NOBJ);
}
END_TEST

/* Stats read no cache (stats.c), so they must count what waits in a slab themselves: its objects
 * are free (the program freed them, though their spans say allocated) and its pops are mallocs
 * (handed out by no span and no central), before the slab is drained and after. At rest every
 * field is exact (stats.c): class SZ's counts here move by this test's objects only. */
START_TEST(stats_at_rest_count_a_slabs_objects_as_free_and_its_pops_as_mallocs)
{
    if (!ready("stats_at_rest_count_a_slabs_objects_as_free_and_its_pops_as_mallocs"))
        return;
    static struct objs o, q;
    struct nsp_cache *b = cache_of(cpu_b);
    nsp_stats_t s0, s1, s2, s3; /* class SZ's counts only: others move with the steps' threads */
    /* b held from here to the pops: its mallocs then find it busy and pop its slab (alloc.c) */
    ck_assert_int_eq(nsp__cache_lock_foreign(b), 1);
    ck_assert_int_eq(nsp_stats_get(&s0), 0);
    o.n = NOBJ;
    o.size = SZ;
    on_cpu(cpu_a, malloc_objs, &o);
    on_cpu(cpu_b, free_objs, &o);
    unsigned waiting = slab_count(b, cls_sz);
    ck_assert_int_eq(nsp_stats_get(&s1), 0);
    q.n = NOBJ / 2;
    q.size = SZ;
    on_cpu(cpu_b, malloc_objs, &q);
    unsigned left = slab_count(b, cls_sz);
    ck_assert_int_eq(nsp_stats_get(&s2), 0);
    nsp__cache_unlock(b);
    take(b); /* drains the slab: its pops go to the totals, its objects are remote frees */
    ck_assert_int_eq(nsp_stats_get(&s3), 0);
    for (unsigned i = 0; i < q.n; i++)
        nsp_free(q.v[i]);
    ck_assert_uint_eq(waiting, NOBJ);
    ck_assert_uint_eq(left, NOBJ - NOBJ / 2); /* the mallocs were the slab's pops */
    const nsp_class_stats_t *c0 = &s0.cls[cls_sz], *c1 = &s1.cls[cls_sz], *c2 = &s2.cls[cls_sz],
                            *c3 = &s3.cls[cls_sz];
    ck_assert_msg(c1->objects_in_use == c0->objects_in_use,
                  "%u objects freed into a slab still count as in use: %llu, before them %llu",
                  waiting, (unsigned long long)c1->objects_in_use,
                  (unsigned long long)c0->objects_in_use);
    ck_assert_uint_eq(c1->bytes_in_use, c0->bytes_in_use);
    ck_assert_uint_eq(c1->mallocs - c0->mallocs, NOBJ);
    ck_assert_uint_eq(c2->objects_in_use - c0->objects_in_use, NOBJ / 2);
    ck_assert_msg(c2->mallocs - c0->mallocs == NOBJ + NOBJ / 2,
                  "%u mallocs and %u slab pops counted as %llu mallocs", NOBJ, NOBJ / 2,
                  (unsigned long long)(c2->mallocs - c0->mallocs));
    ck_assert_uint_eq(c3->objects_in_use - c0->objects_in_use, NOBJ / 2);
    ck_assert_msg(c3->mallocs - c0->mallocs == NOBJ + NOBJ / 2,
                  "after the drain, %u mallocs and %u slab pops counted as %llu mallocs", NOBJ,
                  NOBJ / 2, (unsigned long long)(c3->mallocs - c0->mallocs));
}
END_TEST

/* The pages wholly inside cache c's slabs, asked of the kernel (mincore): into *pages, and those
 * backed into *resident. unused_only: only the pages that hold no slab set up (slab.h, "Set-up"),
 * from class 1's slab on (class 0 has none). */
static void count_slab_pages(const struct nsp_cache *c, int unused_only, unsigned *pages,
                             unsigned *resident)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), base = (uintptr_t)&c->slabs[0];
    uintptr_t first = (uintptr_t)&c->slabs[unused_only ? 1 : 0];
    uintptr_t end = (uintptr_t)&c->slabs[NSP_NUM_CLASSES];
    for (uintptr_t lo = (first + page - 1) & ~(page - 1); lo + page <= end; lo += page) {
        /* the classes whose slabs share this page */
        unsigned k0 = (unsigned)((lo - base) / sizeof(struct nsp_slab));
        unsigned k1 = (unsigned)((lo + page - 1 - base) / sizeof(struct nsp_slab));
        int used = 0;
        for (unsigned k = k0; unused_only && k <= k1 && k < NSP_NUM_CLASSES; k++)
            used |= nsp__cache_slab_is_set(c, k);
        if (used)
            continue;
        unsigned char v;
        ck_assert_int_eq(mincore((void *)lo, (size_t)page, &v), 0);
        *resident += v & 1;
        (*pages)++;
    }
}

/* A cache without slabs (virtual cores, grouping, no rseq: cache.c gives slabs to one-cpu rseq
 * caches only) never uses them, so their pages, most of a cache's bytes, must stay unbacked
 * (slab.h): nothing may write there, not even at init. Pages wholly inside the slabs are asked
 * of the kernel (mincore). Runs under a synthetic topology of virtual cores too (CMakeLists). */
START_TEST(the_slab_pages_of_a_cache_without_slabs_stay_unbacked)
{
    nsp_free(nsp_malloc(SZ));
    unsigned caches = 0, pages = 0, resident = 0;
    for (unsigned i = 0; i < nsp__ncaches; i++) {
        struct nsp_cache *c = &nsp__caches[i];
        if (c->rseq_cpu >= 0)
            continue; /* slabs here: the classes that have one are used */
        caches++;
        count_slab_pages(c, 0, &pages, &resident);
    }
    if (!caches) {
        fprintf(stderr, "the_slab_pages_of_a_cache_without_slabs_stay_unbacked: skipped: every "
                        "cache here has slabs (test_slab_virtual runs it on virtual cores)\n");
        return;
    }
    ck_assert_uint_gt(pages, 0);
    ck_assert_msg(resident == 0, "%u of the %u pages of the slabs of %u caches without slabs are "
                  "backed", resident, pages, caches);
}
END_TEST

/* A cache with slabs sets each up at its class's first span (slab.h, "Set-up"), so the slab
 * pages of the classes it never used stay unbacked: nothing writes there at init, nor at the other
 * classes' set-ups. Every page wholly inside the slabs of classes not set up is asked of the
 * kernel (mincore), in every cache with slabs: the main thread used one class, the others none. */
START_TEST(the_slab_pages_of_the_classes_a_cache_never_used_stay_unbacked)
{
    nsp_free(nsp_malloc(SZ));
    unsigned caches = 0, pages = 0, resident = 0;
    for (unsigned i = 0; i < nsp__ncaches; i++) {
        struct nsp_cache *c = &nsp__caches[i];
        if (!c->bins_on)
            continue; /* no slabs: the case above */
        caches++;
        count_slab_pages(c, 1, &pages, &resident);
    }
    if (!pages) {
        fprintf(stderr, "the_slab_pages_of_the_classes_a_cache_never_used_stay_unbacked: skipped: "
                        "%s\n", caches ? "every slab page here holds a used class's slab"
                                        : "no cache here has slabs (no rseq, virtual cores, "
                                          "NSP_SECURE)");
        return;
    }
    ck_assert_msg(resident == 0, "%u of the %u slab pages of classes no cache used are backed",
                  resident, pages);
}
END_TEST

/* A class above 2 KiB has a slab too (slab.h: its spans hold 32 objects, so a program with more
 * live objects of it than a span's frees mostly other spans' objects): on one cpu, the frees of
 * a full span's objects wait in the slab, and once the bin's span is full again the mallocs pop
 * them back instead of refilling from the central. */
#define BIG 8000
#define NBIG 200
START_TEST(a_big_class_keeps_its_other_spans_frees_for_the_next_mallocs)
{
    if (!ready("a_big_class_keeps_its_other_spans_frees_for_the_next_mallocs"))
        return;
    unsigned cls = nsp__size_to_class(BIG);
    struct nsp_cache *a = cache_of(cpu_a); /* the main thread's (ready pins it to cpu a) */
    ck_assert_uint_eq(a->slabs[cls].cap, NSP_SLAB_BIG);
    static void *v[NBIG], *more[NBIG];
    unsigned n = 0, nmore = 0;
    /* two spans' worth: the last object's span is the one the bin holds */
    uint32_t size, pages, nelems;
    ck_assert_int_eq(nsp_size_class(cls, &size, &pages, &nelems), 0);
    ck_assert_uint_le(2 * nelems + NSP_SLAB_BIG, NBIG);
    for (; n < 2 * nelems; n++)
        v[n] = nsp_malloc(BIG);
    struct nsp_span *cached = nsp__span_of(v[n - 1]);
    take(a); /* its slabs empty: what waits below is this test's */
    void *freed[NSP_SLAB_BIG];
    unsigned nfreed = 0;
    for (unsigned i = 0; i < n && nfreed < NSP_SLAB_BIG; i++)
        if (nsp__span_of(v[i]) != cached) {
            freed[nfreed++] = v[i];
            nsp_free(v[i]);
            v[i] = NULL;
        }
    unsigned waiting = slab_count(a, cls);
    /* the cached span's free slots, then what the slab kept */
    void *p;
    while (nmore < NBIG && nsp__span_of(p = nsp_malloc(BIG)) == cached)
        more[nmore++] = p;
    unsigned back = 0;
    for (unsigned k = 0;; k++) {
        for (unsigned j = 0; j < nfreed; j++)
            back += p == freed[j];
        more[nmore++] = p;
        if (k + 1 == nfreed || nmore == NBIG)
            break;
        p = nsp_malloc(BIG);
    }
    int on_a = sched_getcpu() == cpu_a;
    for (unsigned i = 0; i < n; i++)
        nsp_free(v[i]);
    for (unsigned i = 0; i < nmore; i++)
        nsp_free(more[i]);
    ck_assert_msg(on_a, "the thread left cpu %d", cpu_a);
    ck_assert_uint_eq(nfreed, NSP_SLAB_BIG);
    ck_assert_uint_eq(waiting, NSP_SLAB_BIG);
    ck_assert_uint_eq(back, NSP_SLAB_BIG);
}
END_TEST

/* An interior pointer of an object of cpu a's span, freed on cpu b: its bin refuses it, and the
 * remote free's path (free.c, nsp__free_classed, which works from p's page map entry) reports it as
 * an interior pointer; b's slab does not take it and the object stays allocated. Its real free then
 * waits in the slab as any other. */
static void free_interior(void *arg)
{
    nsp_free((char *)*(void **)arg + 8);
}

START_TEST(an_interior_pointer_of_another_spans_object_is_reported_and_not_kept)
{
    if (!ready("an_interior_pointer_of_another_spans_object_is_reported_and_not_kept"))
        return;
    static struct objs o;
    struct nsp_cache *b = cache_of(cpu_b);
    take(b);
    o.n = 1;
    o.size = SZ;
    on_cpu(cpu_a, malloc_objs, &o);
    uint64_t interior = errors(NSP_ERR_INTERIOR), doubles = errors(NSP_ERR_DOUBLE_FREE);
    on_cpu(cpu_b, free_interior, &o.v[0]);
    ck_assert_uint_eq(errors(NSP_ERR_INTERIOR), interior + 1);
    ck_assert_uint_eq(slab_count(b, cls_sz), 0);
    ck_assert_int_eq(live(o.v[0]), 1);
    on_cpu(cpu_b, free_objs, &o);
    ck_assert_uint_eq(slab_count(b, cls_sz), 1);
    take(b);
    ck_assert_int_eq(live(o.v[0]), 0);
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), doubles);
    ck_assert_uint_eq(errors(NSP_ERR_INTERIOR), interior + 1);
}
END_TEST

/* ---- a second free past a tag written over, on the slab's own cpu ---------------------------- */

/* An object waiting in b's slab whose tag the program wrote over (a write after free), freed
 * again on b: nothing tells that free from a live object's (its bits say allocated, as a slab's
 * objects' do, and its first word is the program's), so it enters the slab a second time. The
 * slab must then hand it out once at most: its pop finds the tag the first pop took away, and
 * reports it naming the pointer (slab.h, "What may leave"). */
struct twice {
    void *p;
    void *popped[NSP_SLAB_MAX + 1];
    unsigned npop;
    void *more[NSP_SLAB_MAX + 1]; /* other objects of a's span, freed on b around p */
    unsigned nbefore, nafter;
};

static void pop_all_of_b(struct twice *t)
{
    t->npop = 0;
#ifdef NSP_RSEQ_LOCKS /* (else ready() skips every case) */
    void *q;
    while (t->npop <= NSP_SLAB_MAX && (q = nsp__slab_alloc(cache_of(cpu_b), cls_sz)))
        t->popped[t->npop++] = q;
#endif
}

/* What cache.h's bins' helpers say, where there are bins (else ready() skips every case). */
static int bin_lists(const void *p)
{
#ifdef NSP_RSEQ_LOCKS
    return nsp__bin_lists(nsp__span_of(p), p);
#else
    (void)p;
    return 0;
#endif
}

static uint64_t bin_key_of(const struct nsp_span *s)
{
#ifdef NSP_RSEQ_LOCKS
    uint64_t size;
    return nsp__bin_listing_key(s, &size);
#else
    (void)s;
    return 0;
#endif
}

static void scribble_free_and_pop(void *arg)
{
    struct twice *t = arg;
    *(volatile uint64_t *)t->p = 0x4242424242424242ULL;
    nsp_free(t->p);
    pop_all_of_b(t);
}

/* Every popped object live (alloc bit set, freed bit clear), p among them once at most; then
 * each freed once (on cpu a: the span's bin). */
static void free_popped(void *arg)
{
    struct twice *t = arg;
    for (unsigned i = 0; i < t->npop; i++) {
        unsigned k = 0;
        while (k < i && t->popped[k] != t->popped[i])
            k++;
        if (k == i)
            nsp_free(t->popped[i]);
    }
}

static unsigned times_popped(const struct twice *t, const void *p)
{
    unsigned n = 0;
    for (unsigned i = 0; i < t->npop; i++)
        n += t->popped[i] == p;
    return n;
}

static unsigned popped_not_live(const struct twice *t)
{
    unsigned n = 0;
    for (unsigned i = 0; i < t->npop; i++)
        n += !live(t->popped[i]);
    return n;
}

static uint64_t reports(void)
{
    return errors(NSP_ERR_DOUBLE_FREE) + errors(NSP_ERR_FREE_LIST) +
           errors(NSP_ERR_WRITE_AFTER_FREE);
}

START_TEST(a_double_free_past_a_clobbered_slab_tag_is_not_handed_out_twice)
{
    if (!ready("a_double_free_past_a_clobbered_slab_tag_is_not_handed_out_twice"))
        return;
    static struct objs o;
    static struct twice t;
    struct nsp_cache *b = waiting_in_b(&o, 1);
    t.p = o.v[0];
    uint64_t before = reports();
    on_cpu(cpu_b, scribble_free_and_pop, &t);
    unsigned seen = times_popped(&t, t.p), not_live = popped_not_live(&t);
    uint64_t reported = reports() - before;
    on_cpu(cpu_a, free_popped, &t);
    take(b);
    take(cache_of(cpu_a));
    ck_assert_uint_le(seen, 1);
    ck_assert_uint_eq(not_live, 0);
    ck_assert_uint_eq(reported, 1);
}
END_TEST

/* The same with the two copies apart, the upper one given back by the take of a full slab (its
 * freed bit set: the flush's remote free) and the lower one popped afterwards: a malloc must not
 * get an object whose freed bit is set (the sweep would free it under its new owner), so the
 * flush leaves the objects it applies with a tag that is not the slab's. */
static void free_around_a_clobber(void *arg)
{
    struct twice *t = arg;
    nsp_free(t->p);
    for (unsigned i = 0; i < t->nbefore; i++)
        nsp_free(t->more[i]);
    *(volatile uint64_t *)t->p = 0x4242424242424242ULL;
    nsp_free(t->p);
    for (unsigned i = 0; i < t->nafter; i++)
        nsp_free(t->more[t->nbefore + i]); /* the last finds the slab full: its top half goes */
    pop_all_of_b(t);
}

START_TEST(a_double_free_split_by_a_slab_take_is_not_handed_out_twice)
{
    if (!ready("a_double_free_split_by_a_slab_take_is_not_handed_out_twice"))
        return;
    struct nsp_cache *b = cache_of(cpu_b);
    unsigned cap = (unsigned)b->slabs[cls_sz].cap;
    ck_assert_uint_ge(cap, 4);
    static struct objs o;
    static struct twice t;
    take(b);
    o.n = cap + 1;
    o.size = SZ;
    on_cpu(cpu_a, malloc_objs, &o);
    /* p at the bottom, cap/2 - 1 others, p again at cap/2 (the bottom of the take's top half),
     * then others up to a full slab and one more */
    t.p = o.v[0];
    t.nbefore = cap / 2 - 1;
    t.nafter = cap - cap / 2;
    for (unsigned i = 0; i < t.nbefore + t.nafter; i++)
        t.more[i] = o.v[1 + i];
    uint64_t before = reports();
    on_cpu(cpu_b, free_around_a_clobber, &t);
    unsigned seen = times_popped(&t, t.p), not_live = popped_not_live(&t);
    uint64_t reported = reports() - before;
    on_cpu(cpu_a, free_popped, &t);
    take(b);
    take(cache_of(cpu_a));
    ck_assert_uint_ge(t.npop, cap / 2);
    ck_assert_uint_le(seen, 1);
    ck_assert_uint_eq(not_live, 0);
    ck_assert_uint_eq(reported, 1);
}
END_TEST

/* The same with the second free on the span's cpu: its bin's push finds no tag and lists the
 * object (test_magazine's a_double_free_past_a_clobbered_tag_is_reported_at_the_flush is the
 * magazine's case). b's pop must not hand it out as well (the bin will): its first word is a
 * link, not b's tag. */
static void scribble_one(void *arg)
{
    *(volatile uint64_t *)((struct twice *)arg)->p = 0x4242424242424242ULL;
}

static void free_p(void *arg)
{
    nsp_free(((struct twice *)arg)->p);
}

static void pop_all(void *arg)
{
    pop_all_of_b(arg);
}

START_TEST(a_slab_object_listed_in_a_bin_is_not_popped)
{
    if (!ready("a_slab_object_listed_in_a_bin_is_not_popped"))
        return;
    static struct objs o;
    static struct twice t;
    struct nsp_cache *b = waiting_in_b(&o, 1);
    t.p = o.v[0];
    on_cpu(cpu_b, scribble_one, &t);
    /* a takes p's span back from its central (malloc_objs let it go), so that its bin holds it */
    static struct objs r;
    r.n = 1;
    r.size = SZ;
    r.keep = 1;
    on_cpu(cpu_a, malloc_objs, &r);
    if (nsp__span_of(r.v[0]) != nsp__span_of(t.p)) {
        fprintf(stderr, "a_slab_object_listed_in_a_bin_is_not_popped: skipped: cpu a's refill took "
                        "another span than p's\n");
        on_cpu(cpu_a, free_objs, &r);
        take(b);
        return;
    }
    on_cpu(cpu_a, free_p, &t); /* into a's bin */
    int listed = bin_lists(t.p);
    uint64_t before = reports();
    on_cpu(cpu_b, pop_all, &t);
    unsigned seen = times_popped(&t, t.p);
    uint64_t reported = reports() - before;
    on_cpu(cpu_a, free_popped, &t);
    on_cpu(cpu_a, free_objs, &r);
    take(b);
    take(cache_of(cpu_a));
    ck_assert_int_eq(listed, 1);
    ck_assert_uint_eq(seen, 0);
    ck_assert_uint_eq(reported, 1);
    ck_assert_int_eq(live(t.p), 0); /* the bin's fold freed it once */
}
END_TEST

/* A live object's first word is the program's: one that carries the bins' keys' top bits
 * (magazine.h, nsp__may_be_link) only sends its free the slow way, which reads the bin; it is
 * neither reported nor lost, whether the rest decodes to no link (the slab takes it) or, by the
 * chance a preempted push leaves, to a link of its span (the bins are folded and the bits asked:
 * it goes the magazine's way). Each is freed once at b's take. */
struct looks {
    void *p[2];
    uint64_t word[2];
};

static void set_words_and_free(void *arg)
{
    struct looks *l = arg;
    for (unsigned i = 0; i < 2; i++) {
        *(volatile uint64_t *)l->p[i] = l->word[i];
        nsp_free(l->p[i]);
    }
}

START_TEST(a_live_object_whose_word_looks_like_a_link_is_freed_once)
{
    if (!ready("a_live_object_whose_word_looks_like_a_link_is_freed_once"))
        return;
    static struct objs o;
    static struct looks l;
    struct nsp_cache *b = cache_of(cpu_b);
    take(b);
    o.n = 3;
    o.size = SZ;
    o.keep = 1; /* a's bin keeps their span: the links below are its */
    on_cpu(cpu_a, malloc_objs, &o);
    struct nsp_span *s = nsp__span_of(o.v[0]);
    uint64_t key = bin_key_of(s);
    int same_span = nsp__span_of(o.v[1]) == s && nsp__span_of(o.v[2]) == s;
    l.p[0] = o.v[0];
    l.word[0] = nsp__bin_key_top | 0x0000123456789abcULL; /* the top bits, no link */
    l.p[1] = o.v[1];
    l.word[1] = (uint64_t)(uintptr_t)o.v[2] ^ key; /* a link of its span */
    uint64_t before = reports();
    on_cpu(cpu_b, set_words_and_free, &l);
    uint64_t at_free = reports() - before;
    unsigned in_slab = nsp__cache_slab_holds(b, cls_sz, (uintptr_t)l.p[0]) +
                       nsp__cache_slab_holds(b, cls_sz, (uintptr_t)l.p[1]);
    take(b);
    int live0 = live(l.p[0]), live1 = live(l.p[1]), live2 = live(o.v[2]);
    nsp_free(o.v[2]);
    ck_assert_msg(key != 0 && same_span, "cpu a's bin holds the objects' span");
    ck_assert(nsp__may_be_link(l.word[0]) && nsp__may_be_link(l.word[1]));
    ck_assert_uint_eq(at_free, 0);
    ck_assert_uint_eq(in_slab, 1); /* the first; the second looked listed */
    ck_assert_int_eq(live0, 0);
    ck_assert_int_eq(live1, 0);
    ck_assert_int_eq(live2, 1);
    ck_assert_uint_eq(reports() - before, 0);
}
END_TEST

static Suite *slab_suite(void)
{
    Suite *s = suite_create("slab");
    TCase *tc = tcase_create("slab");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, a_free_of_another_spans_object_waits_in_the_slab_until_a_take);
    tcase_add_test(tc, a_full_slab_gives_its_top_half_back_and_takes_the_free);
    tcase_add_test(tc, a_double_free_of_an_object_in_a_slab_is_reported_naming_it);
    tcase_add_test(tc, a_double_free_is_reported_when_the_slab_cannot_be_drained);
    tcase_add_test(tc, a_free_of_a_slab_held_object_after_a_cycle_is_reported);
    tcase_add_test(tc, the_sequences_match_their_model_and_a_detach_at_every_step_loses_nothing);
    tcase_add_test(tc, the_real_sequences_push_pop_and_take_in_stack_order);
    tcase_add_test(tc, a_slab_never_set_up_is_not_popped_on_any_cpu);
    tcase_add_test(tc, a_cycle_drains_the_slabs_and_the_ledger_holds);
    tcase_add_test(tc, stats_at_rest_count_a_slabs_objects_as_free_and_its_pops_as_mallocs);
    tcase_add_test(tc, the_slab_pages_of_a_cache_without_slabs_stay_unbacked);
    tcase_add_test(tc, the_slab_pages_of_the_classes_a_cache_never_used_stay_unbacked);
    tcase_add_test(tc, a_big_class_keeps_its_other_spans_frees_for_the_next_mallocs);
    tcase_add_test(tc, an_interior_pointer_of_another_spans_object_is_reported_and_not_kept);
    tcase_add_test(tc, a_double_free_past_a_clobbered_slab_tag_is_not_handed_out_twice);
    tcase_add_test(tc, a_double_free_split_by_a_slab_take_is_not_handed_out_twice);
    tcase_add_test(tc, a_slab_object_listed_in_a_bin_is_not_popped);
    tcase_add_test(tc, a_live_object_whose_word_looks_like_a_link_is_freed_once);
    tcase_add_test(tc, a_refill_that_takes_a_spans_last_slot_keeps_its_bin_for_local_frees);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return nsp_run_suite(slab_suite());
}
