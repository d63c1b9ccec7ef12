/*
 * tests/test_magazine.c — the per-core remote-free magazines (host/magazine.h) and their flush.
 *
 * Deterministic steps on the real machine (rseq: the magazines go with the bins), one thread per
 * step pinned to a cpu and joined, so that the order is the test's:
 *   - a free from another cpu waits in that cpu's magazine (tagged, still allocated) until the
 *     cache is taken, which applies it (one freed bit);
 *   - a second free of an object waiting in a magazine is reported at that second free, naming
 *     it, and the object is freed once (remote then remote, remote then local), also when the
 *     magazine cannot be flushed then (every fence refused);
 *   - fork's child: a retired cache's magazine takes no remote free (nobody would flush it);
 *   - a second free past a tag written over (into a bin) is reported at the flush, not applied;
 *   - a flush of objects in no order (two classes shuffled, one listed twice) frees each once;
 *   - a flush in address order (runs of one bitmap word, more groups than the flush searches in
 *     a row, repeats near and far) frees each once; so does a run of consecutive slots across a
 *     word's end and a span's; an object listed in a bin inside a run of its span is dropped from
 *     the flush and reported;
 *   - flushes on two cpus count their pending remote frees on lines of their own (span.h's
 *     stripes), and the sum stays exact when a third thread sweeps them;
 *   - a full magazine is emptied by the freeing thread while its cache's lock is held;
 *   - the take sequence, modelled, with a foreign detach at each of its steps: each free once;
 *   - the real take, interrupted by signals from another cpu (its abort path): each free once;
 *   - a cycle while frees wait in magazines: the cycle flushes them, the ledger's recount agrees
 *     with the charges, and heapLive + pending comes back to what it was once all is freed;
 * and a stress: threads on every cpu hand objects (a pattern written in each) to threads on other
 * cpus, which check the pattern and free them, while the main thread runs cycles and reads stats;
 * at the end every object is intact, no error was counted, the heap validates and the ledger's
 * recount agrees. Elsewhere (virtual cores, no rseq, TSan) the deterministic cases skip visibly;
 * the stress runs on the direct path.
 *
 * Calls nsp_malloc/nsp_free by name: under a sanitizer the process's malloc is the sanitizer's,
 * and these tests are about numaspan's.
 */
#define _GNU_SOURCE
#include <check.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "host/cache.h"
#include "host/check.h"
#include "host/ledger.h"
#include "host/pageheap.h"
#include "host/runtime.h"
#include "host/sizeclass.h"
#include "host/span.h"
#include "check_main.h"
#include "two_cpus.h"
#include "numaspan.h"

#define SZ 200

static int cpu_a = -1, cpu_b = -1;

static uint64_t errors(enum nsp_error_kind k)
{
    return atomic_load(&nsp__errors[k]);
}

/* Two cpus and the magazines on: 1, else 0 with the reason printed. */
static int ready(const char *name)
{
    nsp_free(nsp_malloc(SZ));
    nsp__on_error = NSP_ON_ERROR_WARN; /* count the double frees these tests commit */
    if (!nsp_test_two_cpus(name, &cpu_a, &cpu_b))
        return 0;
    nsp_free(nsp_malloc(SZ)); /* nsp__tb: cpu a's cache */
    if (!nsp__tb || !nsp__caches[nsp__topo->cpu_to_cache[cpu_a]].bins_on ||
        !nsp__caches[nsp__topo->cpu_to_cache[cpu_b]].bins_on) {
        fprintf(stderr, "%s: skipped: no magazines here (no rseq, virtual cores, NSP_SECURE or "
                        "exact)\n", name);
        return 0;
    }
    /* On one node a remote free of a small object goes into its cpu's slab (host/slab.h), not
     * the magazine: these cases are the magazine's, so every slab is left without room (taken
     * first, which drains them; each test runs in a child of its own). test_slab.c has theirs. */
    for (unsigned i = 0; i < nsp__ncaches; i++) {
        ck_assert_int_eq(nsp__cache_lock_foreign(&nsp__caches[i]), 1);
        for (unsigned k = 1; k < NSP_NUM_CLASSES; k++)
            nsp__caches[i].slabs[k].cap = 0;
        /* and counted as set up, so that no class's first span sets its slab up later */
        memset(nsp__caches[i].slabs_set, 0xff, sizeof nsp__caches[i].slabs_set);
        nsp__cache_unlock(&nsp__caches[i]);
    }
    return 1;
}

static struct nsp_cache *cache_of(int cpu)
{
    return &nsp__caches[nsp__topo->cpu_to_cache[cpu]];
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
    st->fn(st->arg);
    st->ran = 1;
    return NULL;
}

/* Runs fn(arg) on a thread pinned to cpu, and waits for it. */
static void on_cpu(int cpu, void (*fn)(void *), void *arg)
{
    struct step st = {cpu, fn, arg, 0};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, step_main, &st), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_msg(st.ran, "could not run a step on cpu %d", cpu);
}

static void do_malloc(void *arg)
{
    *(void **)arg = nsp_malloc(SZ);
    memset(*(void **)arg, 0x5a, SZ);
}

static void do_free(void *arg)
{
    nsp_free(*(void **)arg);
}

/* Takes cache c the way a cycle does (which flushes its magazine) and gives it back. */
static void take(struct nsp_cache *c)
{
    ck_assert_int_eq(nsp__cache_lock_foreign(c), 1);
    nsp__cache_unlock(c);
}

static int waits_in(const struct nsp_cache *c, const void *p)
{
    for (uint64_t i = 0; i < c->mag.count; i++)
        if (c->mag.slot[i] == (uintptr_t)p)
            return 1;
    return 0;
}

static int live(const void *p)
{
    struct nsp_span *s = nsp__span_of(p);
    return nsp__span_slot_live(s, nsp__span_index(s, (uintptr_t)p));
}

/* Allocates *p on cpu a (whose cache then holds its span) and frees it on cpu b, where it waits in
 * b's magazine, emptied first; *before is the count of double frees before that free. Returns b. */
static struct nsp_cache *waiting_in_b(void **p, uint64_t *before)
{
    struct nsp_cache *b = cache_of(cpu_b);
    take(b);
    on_cpu(cpu_a, do_malloc, p);
    *before = errors(NSP_ERR_DOUBLE_FREE);
    on_cpu(cpu_b, do_free, p);
    return b;
}

START_TEST(a_remote_free_waits_until_the_cache_is_taken)
{
    if (!ready("a_remote_free_waits_until_the_cache_is_taken"))
        return;
    void *p;
    uint64_t before;
    struct nsp_cache *b = waiting_in_b(&p, &before);
    int waiting = waits_in(b, p), live_then = live(p);
    int64_t tag = nsp__magazine_tagged(p);
    take(b);
    int still = waits_in(b, p);
    ck_assert_int_eq(waiting, 1);
    ck_assert_int_eq(live_then, 1); /* from its span's view, not freed yet */
    ck_assert_int_eq(tag, (int64_t)b->index);
    ck_assert_int_eq(still, 0);
    ck_assert_int_eq(live(p), 0); /* the flush applied it: freed once */
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before);
}
END_TEST

START_TEST(a_double_free_through_a_magazine_is_reported_at_once)
{
    if (!ready("a_double_free_through_a_magazine_is_reported_at_once"))
        return;
    void *p;
    uint64_t before;
    struct nsp_cache *b = waiting_in_b(&p, &before);
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before);
    on_cpu(cpu_b, do_free, &p); /* the second free: the magazine flushed, the bit answers */
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before + 1);
    take(b);
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before + 1); /* and once only */
    ck_assert_int_eq(live(p), 0);
}
END_TEST

START_TEST(a_local_free_after_a_remote_one_in_a_magazine_is_reported)
{
    if (!ready("a_local_free_after_a_remote_one_in_a_magazine_is_reported"))
        return;
    void *p;
    uint64_t before;
    struct nsp_cache *b = waiting_in_b(&p, &before);
    on_cpu(cpu_a, do_free, &p); /* the push refuses the tag; the locked path flushes b */
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before + 1);
    ck_assert_int_eq(waits_in(b, p), 0);
    take(cache_of(cpu_a));
    take(b);
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before + 1);
    ck_assert_int_eq(live(p), 0);
    /* not listed in a's bin either: the next allocations there never give it out twice */
    void *q[64];
    int seen = 0;
    for (int i = 0; i < 64; i++) {
        on_cpu(cpu_a, do_malloc, &q[i]);
        seen += q[i] == p;
    }
    for (int i = 0; i < 64; i++)
        on_cpu(cpu_a, do_free, &q[i]);
    ck_assert_int_le(seen, 1);
}
END_TEST

/* The same when the magazine cannot be flushed at the second free (its cache busy, or its cpu
 * unfenceable: every fence refused here): the free must not be decided by the bits alone, which
 * still say allocated. Before, the locked local free freed p into its span while it waited in
 * b's magazine: no report, p handed out again, and b's flush then freed that live object. */
START_TEST(a_double_free_is_reported_when_the_magazine_cannot_be_flushed)
{
    if (!ready("a_double_free_is_reported_when_the_magazine_cannot_be_flushed"))
        return;
    void *p;
    uint64_t before;
    struct nsp_cache *b = waiting_in_b(&p, &before);
    atomic_store(&nsp__test_fence_fail, 3); /* b cannot be taken from outside */
    on_cpu(cpu_a, do_free, &p);
    atomic_store(&nsp__test_fence_fail, 0);
    uint64_t at_second = errors(NSP_ERR_DOUBLE_FREE);
    int live_then = live(p);
    take(cache_of(cpu_a));
    take(b);
    ck_assert_uint_eq(at_second, before + 1);
    ck_assert_int_eq(live_then, 1); /* still b's to apply */
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before + 1);
    ck_assert_int_eq(live(p), 0);
}
END_TEST

/* fork's child retires a cache that lock_all left out and that was held at the fork (cache.c,
 * nsp__cache_forked_child): never taken again, so its magazine can never be flushed either. A
 * remote free by the child's thread on that cpu must go the direct way, not wait there forever
 * (leaked, its span never empty, and its second free found only by reading the magazine). The
 * child retires cache b as its fork handler would (held by a thread it does not have). */
START_TEST(a_retired_cache_takes_no_remote_free)
{
    if (!ready("a_retired_cache_takes_no_remote_free"))
        return;
    pid_t pid = fork();
    if (pid == 0) {
        struct nsp_cache *b = cache_of(cpu_b);
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu_b, &one);
        if (sched_setaffinity(0, sizeof one, &one) != 0 || sched_getcpu() != cpu_b)
            _exit(2);
        atomic_store(&b->lock, 1); /* held at the fork by a thread the child does not have */
        b->all_held = 0;
        nsp__cache_forked_child();
        if (atomic_load(&b->lock) != NSP_CACHE_RETIRED)
            _exit(3);
        nsp_free(nsp_malloc(SZ)); /* the thread's caches are now cpu b's: nsp__tb is b */
        void *p = nsp_malloc(SZ); /* from the central: b cannot be taken */
        if (!p)
            _exit(4);
        nsp_free(p); /* a remote free: its span is no cache's */
        _exit(live(p) ? 5 : 0);
    }
    ck_assert_int_gt(pid, 0);
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "the child: status %#x (exit 5: the free waits in the retired magazine)",
                  status);
}
END_TEST

/* A write after free over the tag, then a local free: the bin's push finds no tag and takes the
 * object, which also waits in b's magazine (before the magazines, the remote free's freed bit
 * made that push miss and the locked path report it). b's flush must report it and leave it to
 * the bin: setting its freed bit would have the sweep free it while the bin hands it out. */
static void scribble(void *arg)
{
    *(volatile uint64_t *)*(void **)arg = 0x4242424242424242ULL;
}

/* A free by a thread that has its bins already (a new thread's first free takes the lock). */
static void warm_free(void *arg)
{
    nsp_free(nsp_malloc(SZ));
    nsp_free(*(void **)arg);
}

START_TEST(a_double_free_past_a_clobbered_tag_is_reported_at_the_flush)
{
    if (!ready("a_double_free_past_a_clobbered_tag_is_reported_at_the_flush"))
        return;
    void *p;
    uint64_t before;
    struct nsp_cache *b = waiting_in_b(&p, &before);
    on_cpu(cpu_b, scribble, &p); /* the tag written over */
    on_cpu(cpu_a, warm_free, &p); /* into a's bin */
#ifdef NSP_RSEQ_LOCKS
    int in_bin = nsp__bin_lists(nsp__span_of(p), p);
#else
    int in_bin = 0; /* not reached: without bins (a TSan build) ready() skips the case */
#endif
    take(b);
    uint64_t at_flush = errors(NSP_ERR_DOUBLE_FREE);
    struct nsp_span *s = nsp__span_of(p);
    uint32_t idx = nsp__span_index(s, (uintptr_t)p);
    uint64_t freed = (atomic_load(&s->freed_bits[idx >> 6]) >> (idx & 63)) & 1;
    ck_assert_int_eq(in_bin, 1);
    ck_assert_uint_eq(at_flush, before + 1);
    ck_assert_uint_eq(freed, 0); /* the bin's, not marked freed behind its back */
    take(cache_of(cpu_a));
    ck_assert_int_eq(live(p), 0); /* the fold freed it once */
}
END_TEST

#define NCYCLE 40

static void free_all(void *arg)
{
    void **v = arg;
    for (int i = 0; i < NCYCLE; i++)
        nsp_free(v[i]);
}

static void malloc_all(void *arg)
{
    void **v = arg;
    for (int i = 0; i < NCYCLE; i++)
        v[i] = nsp_malloc(SZ + (size_t)i * 24);
}

/* The calling cpu's cache lets the span of class SZ go (to its central), as after the cases'
 * mallocs on cpu a: a free on another cpu of an object of a span a cache still holds goes onto
 * that span's remote-free list (span.h), not into the freeing cpu's magazine, which these cases
 * are about. */
static void let_go(void)
{
    struct nsp_cache *c = nsp__cache_acquire();
    ck_assert_ptr_nonnull(c);
    unsigned k = nsp__size_to_class(SZ);
    if (c->spans[k] != &nsp__empty_span)
        ck_assert_int_eq(nsp__cache_release(c, k), 0);
    nsp__cache_unlock(c);
}

#define NFULL (NSP_MAG_SLOTS + 1)

static void malloc_full(void *arg)
{
    void **v = arg;
    for (int i = 0; i < NFULL; i++)
        v[i] = nsp_malloc(SZ);
    let_go();
}

static void *warm_held; /* free_full's first object, freed by its case once it has counted */

static void free_full(void *arg)
{
    void **v = arg;
    /* the thread's cache (nsp__tb), so that its frees use b's magazine; kept, since b is held
     * and its free could go to the magazine too */
    warm_held = nsp_malloc(48);
    for (int i = 0; i < NFULL; i++)
        nsp_free(v[i]);
}

/* A full magazine is emptied by the freeing thread itself, with no lock (cache.c,
 * nsp__cache_take_magazine_rseq), while its cache's lock is held as a preempted holder holds it
 * (lock word 1, an rseq take on that cpu). The free past the full magazine applies the sixty
 * waiting frees and waits there itself. Before, it needed the lock: it went the direct way (its
 * freed bit at once), and so did every remote free of that cpu until the holder ran again. */
START_TEST(a_full_magazine_is_emptied_while_its_cache_is_held)
{
    if (!ready("a_full_magazine_is_emptied_while_its_cache_is_held"))
        return;
    static void *v[NFULL];
    struct nsp_cache *b = cache_of(cpu_b);
    take(b);
    on_cpu(cpu_a, malloc_full, v);
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE);
    atomic_store(&b->lock, 1); /* held, by a thread preempted on cpu b */
    on_cpu(cpu_b, free_full, v);
    uint64_t count = b->mag.count;
    int last_waits = waits_in(b, v[NFULL - 1]), last_live = live(v[NFULL - 1]);
    int applied = 0;
    for (int i = 0; i < NFULL - 1; i++)
        applied += !live(v[i]);
    atomic_store(&b->lock, 0);
    take(b);
    nsp_free(warm_held);
    ck_assert_uint_eq(count, 1);
    ck_assert_int_eq(last_waits, 1);
    ck_assert_int_eq(last_live, 1); /* waiting: allocated from its span's view */
    ck_assert_int_eq(applied, NFULL - 1);
    ck_assert_int_eq(live(v[NFULL - 1]), 0); /* the cache's take applied it, once */
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before);
}
END_TEST

/* ---- the take as a deterministic interleaving (test_bins.c's method) -------------------------- */

/* The take sequence (nsp__cache_take_magazine_rseq) cannot be stopped half-way, so a foreign
 * detach at each of its steps is played with a model of it on the real magazine, under the
 * kernel's rules: a sequence on a cpu that a fence reaches restarts from its first step; one that
 * committed before the fence holds its objects. */
enum { T_RUNNING, T_DONE, T_MISS };
#define TAKE_STEPS 4 /* cpu and on, count, copy, commit */
#define NTAKE 10

struct take_model {
    int step, result;
    uint64_t n;
    uintptr_t out[NSP_MAG_SLOTS];
};

static void take_step(struct nsp_cache *c, struct take_model *m)
{
    struct nsp_magazine *g = &c->mag;
    if (m->result != T_RUNNING)
        return;
    switch (m->step++) {
    case 0:
        if (sched_getcpu() != (int)g->cpu || !atomic_load(&g->on))
            m->result = T_MISS;
        break;
    case 1:
        if (!(m->n = g->count))
            m->result = T_MISS;
        break;
    case 2:
        memcpy(m->out, g->slot, m->n * sizeof m->out[0]);
        break;
    case 3:
        g->count = 0;
        m->result = T_DONE;
        break;
    }
}

struct take_case {
    int k;                   /* steps run before the detach */
    int result;              /* the model's, at the end */
    uint64_t n, left;        /* what it took; the magazine's count at the end */
    unsigned real_n, real_off; /* the real take: on its cpu, and off it */
    int taken;               /* the foreign take succeeded */
    uintptr_t real_out[NSP_MAG_SLOTS];
};

static void free_ntake(void *arg)
{
    void **v = arg;
    nsp_free(nsp_malloc(48)); /* the thread's cache (nsp__tb): its frees then use b's magazine */
    for (int i = 0; i < NTAKE; i++)
        nsp_free(v[i]);
}

static void malloc_ntake(void *arg)
{
    void **v = arg;
    for (int i = 0; i < NTAKE; i++)
        v[i] = nsp_malloc(SZ);
    let_go();
}

/* On cpu b: the model runs k steps, a foreign taker detaches, flushes and re-attaches the
 * magazine (its fence restarts the model unless it committed), and the model runs to its end;
 * what a committed take holds is applied, as free_to_magazine applies it. */
static void take_detached(void *arg)
{
    struct take_case *tc = arg;
    struct nsp_cache *b = cache_of(cpu_b);
    struct take_model m = {0};
    for (int i = 0; i < tc->k; i++)
        take_step(b, &m);
    /* no Check assertion on this thread until the end: one allocates and frees (its messages),
     * and a free here would land in b's magazine */
    tc->taken = nsp__cache_lock_foreign(b);
    if (tc->taken)
        nsp__cache_unlock(b);
    if (m.result != T_DONE)
        m = (struct take_model){0}; /* restarted by the fence */
    while (m.result == T_RUNNING)
        take_step(b, &m);
    if (m.result == T_DONE)
        nsp__magazine_apply(m.out, (unsigned)m.n);
    tc->result = m.result;
    tc->n = m.n;
    tc->left = b->mag.count;
}

static void real_take_on_b(void *arg)
{
    struct take_case *tc = arg;
    tc->real_n = nsp__cache_take_magazine_rseq(cache_of(cpu_b), tc->real_out);
}

static void real_take_off_b(void *arg)
{
    struct take_case *tc = arg;
    tc->real_off = nsp__cache_take_magazine_rseq(cache_of(cpu_b), tc->real_out);
}

START_TEST(the_take_matches_its_model_and_a_detach_at_every_step_frees_once)
{
    if (!ready("the_take_matches_its_model_and_a_detach_at_every_step_frees_once"))
        return;
    struct nsp_cache *b = cache_of(cpu_b);
    static void *v[NTAKE];
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE);
    /* the real take: off its cpu it misses, on it it takes the magazine in push order */
    take(b);
    on_cpu(cpu_a, malloc_ntake, v);
    on_cpu(cpu_b, free_ntake, v);
    struct take_case real = {0};
    on_cpu(cpu_a, real_take_off_b, &real);
    ck_assert_uint_eq(real.real_off, 0);
    ck_assert_uint_eq(b->mag.count, NTAKE);
    atomic_store(&b->mag.on, 0); /* detached, as a foreign taker leaves it before its drain */
    on_cpu(cpu_b, real_take_on_b, &real);
    atomic_store(&b->mag.on, 1);
    ck_assert_uint_eq(real.real_n, 0);
    ck_assert_uint_eq(b->mag.count, NTAKE);
    on_cpu(cpu_b, real_take_on_b, &real);
    ck_assert_uint_eq(real.real_n, NTAKE);
    ck_assert_uint_eq(b->mag.count, 0);
    for (int i = 0; i < NTAKE; i++)
        ck_assert_ptr_eq((void *)real.real_out[i], v[i]);
    nsp__magazine_apply(real.real_out, real.real_n);
    for (int i = 0; i < NTAKE; i++)
        ck_assert_int_eq(live(v[i]), 0);
    /* a foreign detach before each step of the model, and after its commit */
    for (int k = 0; k <= TAKE_STEPS; k++) {
        take(b);
        on_cpu(cpu_a, malloc_ntake, v);
        on_cpu(cpu_b, free_ntake, v);
        ck_assert_uint_eq(b->mag.count, NTAKE);
        struct take_case tc = {.k = k};
        on_cpu(cpu_b, take_detached, &tc);
        ck_assert_int_eq(tc.taken, 1);
        ck_assert_msg(tc.result == (k == TAKE_STEPS ? T_DONE : T_MISS), "detach before step %d: the model %s", k, tc.result == T_DONE ? "committed" : "missed");
        ck_assert_uint_eq(tc.n, k == TAKE_STEPS ? NTAKE : 0);
        ck_assert_uint_eq(tc.left, 0);
        for (int i = 0; i < NTAKE; i++)
            ck_assert_msg(!live(v[i]), "detach before step %d: object %d not freed", k, i);
        ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before);
    }
}
END_TEST

/* ---- the take restarted by signals (its abort path, for real) ------------------------------ */

/* Signals sent from cpu a at a thread on cpu b that fills b's magazine and empties it with the
 * take sequence, over and over: a signal that lands inside the take's critical section makes the
 * kernel move it to the abort label (the handler then sees that address, in __rseq_failure), and
 * the take must start again from scratch. Each take must hand back the NSIG_OBJS objects in push
 * order and leave the count 0; the objects are pushed again (not applied: they stay allocated)
 * and applied once at the end, so a take that returned after an abort with the count not
 * committed (objects taken twice) or with a partial copy (objects lost) fails here (red, 4 runs
 * of 4, with the abort path's `n = -1` removed). Bounded in rounds and time; a run in which no
 * signal landed inside the sequence says so (a loaded machine), and still checks every take. */
#define NSIG_OBJS NSP_MAG_SLOTS
#define NSIG_ROUNDS 200000 /* bounds: this many rounds, NSIG_SECONDS, or NSIG_ABORTS seen */
#define NSIG_SECONDS 1
#define NSIG_ABORTS 4

/* weak: a build without rseq (TSan) has no such section, and its ready() skips the case */
extern const char __start___rseq_failure[] __attribute__((weak));
extern const char __stop___rseq_failure[] __attribute__((weak));

static volatile sig_atomic_t in_take;
static _Atomic uint64_t signals_seen, aborts_in_take;

static void count_abort(int sig, siginfo_t *si, void *ucv)
{
    (void)sig;
    (void)si;
    const ucontext_t *uc = ucv;
    const char *ip = (const char *)uc->uc_mcontext.gregs[REG_RIP];
    atomic_fetch_add_explicit(&signals_seen, 1, memory_order_relaxed);
    if (in_take && ip >= __start___rseq_failure && ip < __stop___rseq_failure)
        atomic_fetch_add_explicit(&aborts_in_take, 1, memory_order_relaxed);
}

struct sig_case {
    void **v;
    pthread_t target;
    _Atomic int ready, done;
    unsigned rounds, bad_n, bad_order, bad_count;
    uintptr_t out[NSP_MAG_SLOTS];
};

static void takes_under_signals(void *arg)
{
    struct sig_case *sc = arg;
    nsp_free(nsp_malloc(48)); /* the thread's cache (nsp__tb): its frees then use b's magazine */
    struct nsp_cache *b = cache_of(cpu_b);
    sc->target = pthread_self();
    atomic_store(&sc->ready, 1);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned r = 0; r < NSIG_ROUNDS && atomic_load(&aborts_in_take) < NSIG_ABORTS; r++) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec >= NSIG_SECONDS)
            break;
        for (int i = 0; i < NSIG_OBJS; i++) {
            *(volatile uint64_t *)sc->v[i] = 0; /* no tag left: a plain remote free */
            nsp_free(sc->v[i]);
        }
        in_take = 1;
        unsigned n = nsp__cache_take_magazine_rseq(b, sc->out);
        in_take = 0;
        sc->bad_n += n != NSIG_OBJS;
        sc->bad_count += b->mag.count != 0;
        for (unsigned i = 0; i < n && i < NSIG_OBJS; i++)
            sc->bad_order += sc->out[i] != (uintptr_t)sc->v[i];
        sc->rounds++;
        if (n != NSIG_OBJS || b->mag.count)
            break;
    }
    atomic_store(&sc->done, 1);
}

static void *send_signals(void *arg)
{
    struct sig_case *sc = arg;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu_a, &one);
    sched_setaffinity(0, sizeof one, &one);
    while (!atomic_load(&sc->ready))
        sched_yield();
    while (!atomic_load(&sc->done))
        pthread_kill(sc->target, SIGUSR1);
    return NULL;
}

static void malloc_sig(void *arg)
{
    void **v = arg;
    for (int i = 0; i < NSIG_OBJS; i++)
        v[i] = nsp_malloc(SZ);
    let_go();
}

START_TEST(the_take_restarted_by_signals_takes_each_object_once)
{
    if (!ready("the_take_restarted_by_signals_takes_each_object_once"))
        return;
    static void *v[NSIG_OBJS];
    static struct sig_case sc;
    struct nsp_cache *b = cache_of(cpu_b);
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE);
    struct sigaction sa = {0}, old;
    sa.sa_sigaction = count_abort;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(sigaction(SIGUSR1, &sa, &old), 0);
    take(b);
    on_cpu(cpu_a, malloc_sig, v);
    sc = (struct sig_case){.v = v};
    /* the sender and the main thread block SIGUSR1: only the target takes it */
    sigset_t usr1, prev;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, &prev);
    pthread_t sender;
    ck_assert_int_eq(pthread_create(&sender, NULL, send_signals, &sc), 0);
    pthread_sigmask(SIG_SETMASK, &prev, NULL);
    on_cpu(cpu_b, takes_under_signals, &sc);
    atomic_store(&sc.done, 1);
    pthread_join(sender, NULL);
    sigaction(SIGUSR1, &old, NULL);
    if (sc.bad_n == 0)
        nsp__magazine_apply(sc.out, NSIG_OBJS); /* the last take's objects, applied once */
    take(b);
    fprintf(stderr, "the_take_restarted_by_signals_takes_each_object_once: %u rounds, %llu "
            "signals, %llu inside the take's sequence\n", sc.rounds,
            (unsigned long long)signals_seen, (unsigned long long)aborts_in_take);
    ck_assert_msg(sc.bad_n == 0 && sc.bad_count == 0 && sc.bad_order == 0,
                  "round %u: takes with another count %u, leaving the magazine non-empty %u, "
                  "objects out of order %u", sc.rounds, sc.bad_n, sc.bad_count, sc.bad_order);
    if (!aborts_in_take)
        fprintf(stderr, "the_take_restarted_by_signals_takes_each_object_once: no signal landed "
                        "inside the take's sequence this time (a loaded machine): its abort path "
                        "went untested\n");
    for (int i = 0; i < NSIG_OBJS; i++)
        ck_assert_msg(!live(v[i]), "object %d not freed", i);
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before);
}
END_TEST

/* The flush's grouping (magazine.c) on a magazine in no order at all, as Larson's random frees
 * fill one: objects of two classes shuffled, one of them listed twice. Every object is freed once
 * (its freed bit) and the repeat is reported once. Runs on every build: the apply needs no
 * magazine, only allocated objects. */
START_TEST(a_flush_in_any_order_frees_each_object_once)
{
    nsp_free(nsp_malloc(SZ));
    nsp__on_error = NSP_ON_ERROR_WARN;
    enum { N = 59, POOL = 300, STRIDE = 10 };
    static void *pool[2][POOL]; /* every tenth object goes in: several bitmap words per span */
    for (unsigned i = 0; i < POOL; i++)
        pool[0][i] = nsp_malloc(48), pool[1][i] = nsp_malloc(SZ);
    if (!nsp__span_of(pool[0][0]) || !nsp__span_of(pool[1][0])) {
        /* under valgrind, nsp_malloc (the code malloc aliases) is replaced by valgrind's */
        fprintf(stderr, "a_flush_in_any_order_frees_each_object_once: skipped: the objects are "
                        "not in numaspan's spans (its malloc replaced: valgrind?)\n");
        return;
    }
    uintptr_t objs[N + 1];
    for (unsigned i = 0; i < N; i++)
        objs[i] = (uintptr_t)pool[i % 2][i / 2 * STRIDE];
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    for (unsigned i = N - 1; i > 0; i--) { /* Fisher-Yates, xorshift: the same order each run */
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        unsigned j = (unsigned)(seed % (i + 1));
        uintptr_t t = objs[i];
        objs[i] = objs[j];
        objs[j] = t;
    }
    uintptr_t twice = objs[N / 2];
    objs[N] = twice;
    uintptr_t copy[N + 1];
    memcpy(copy, objs, sizeof copy);
    /* tagged as a magazine's push tags them: whoever sets a freed bit tags the object first, so
     * that the slot carries its free tag once swept (host/span.h; the heap check asserts it) */
    for (unsigned i = 0; i < N; i++)
        *(uint64_t *)objs[i] = nsp__magazine_tag((void *)objs[i], NSP_MAG_NONE);
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE);
    nsp__magazine_apply(objs, N + 1);
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before + 1);
    for (unsigned i = 0; i <= N; i++) /* the array is the caller's, as it gave it */
        ck_assert_msg(objs[i] == copy[i], "object %u moved", i);
    for (unsigned i = 0; i < N; i++) {
        struct nsp_span *sp = nsp__span_of((void *)copy[i]);
        uint32_t idx = nsp__span_index(sp, copy[i]);
        ck_assert_msg(atomic_load(&sp->freed_bits[idx >> 6]) >> (idx & 63) & 1,
                      "object %u not freed by the flush", i);
    }
    for (unsigned k = 0; k < 2; k++) /* the rest of the pool, freed as usual */
        for (unsigned j = 0; j < POOL; j++)
            if (j % STRIDE || j / STRIDE * 2 + k >= N)
                nsp_free(pool[k][j]);
    nsp_pacer_cycle(); /* sweeps them: freed once, the heap consistent */
    char why[256];
    ck_assert_msg(nsp_heap_check(why, sizeof why) == 0, "heap check: %s", why);
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before + 1);
}
END_TEST

static int cmp_ptr(const void *x, const void *y)
{
    uintptr_t a = *(const uintptr_t *)x, b = *(const uintptr_t *)y;
    return a < b ? -1 : a > b;
}

/* A flush of objects in address order, as a producer's frees fill a magazine: runs of one
 * (span, bitmap word) each, more groups than the flush searches in a row (magazine.c moves to its
 * table past NSP_MAG_LINEAR groups), and repeats of a group from before that move, next to their
 * first and far from it. Every object is freed once, each repeat reported once. */
START_TEST(a_flush_in_address_order_frees_each_object_once)
{
    nsp_free(nsp_malloc(SZ));
    nsp__on_error = NSP_ON_ERROR_WARN;
    enum { POOL = 1200, N = 56 };
    static void *pool[POOL];
    for (unsigned i = 0; i < POOL; i++)
        pool[i] = nsp_malloc(16);
    if (!nsp__span_of(pool[0])) {
        fprintf(stderr, "a_flush_in_address_order_frees_each_object_once: skipped: the objects "
                        "are not in numaspan's spans (its malloc replaced: valgrind?)\n");
        return;
    }
    /* sorted by address: 4 objects from each of 13 bitmap words (a 16 B span's word is 1 KiB) */
    qsort(pool, POOL, sizeof pool[0], cmp_ptr);
    uintptr_t objs[N + 4];
    unsigned n = 0;
    for (unsigned i = 0; i < POOL && n < N - 4; i += 64) { /* a word's 64 objects apart */
        if (i + 3 >= POOL)
            break;
        for (unsigned j = 0; j < 4; j++)
            objs[n++] = (uintptr_t)pool[i + j * 7];
    }
    uintptr_t first = objs[0], near = objs[n - 1];
    objs[n++] = near;  /* next to its first */
    objs[n++] = first; /* a group of the linear part, after the table took over */
    uintptr_t copy[N + 4];
    memcpy(copy, objs, n * sizeof objs[0]);
    /* tagged as a magazine's push tags them (see a_flush_in_any_order_frees_each_object_once) */
    for (unsigned i = 0; i < n - 2; i++)
        *(uint64_t *)objs[i] = nsp__magazine_tag((void *)objs[i], NSP_MAG_NONE);
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE);
    nsp__magazine_apply(objs, n);
    uint64_t reported = errors(NSP_ERR_DOUBLE_FREE) - before;
    unsigned not_freed = 0, groups = 0;
    for (unsigned i = 0; i < n; i++) {
        struct nsp_span *sp = nsp__span_of((void *)copy[i]);
        uint32_t idx = nsp__span_index(sp, copy[i]);
        not_freed += !(atomic_load(&sp->freed_bits[idx >> 6]) >> (idx & 63) & 1);
        if (i && i < n - 2) {
            struct nsp_span *pp = nsp__span_of((void *)copy[i - 1]);
            groups += pp != sp || nsp__span_index(pp, copy[i - 1]) >> 6 != idx >> 6;
        }
    }
    for (unsigned i = 0; i < POOL; i++) {
        int in = 0;
        for (unsigned j = 0; j < n && !in; j++)
            in = copy[j] == (uintptr_t)pool[i];
        if (!in)
            nsp_free(pool[i]);
    }
    nsp_pacer_cycle(); /* sweeps them: freed once, the heap consistent */
    char why[256];
    int heap = nsp_heap_check(why, sizeof why);
    ck_assert_uint_ge(groups + 1, 10); /* past the linear part */
    ck_assert_uint_eq(reported, 2);
    ck_assert_uint_eq(not_freed, 0);
    ck_assert_msg(heap == 0, "heap check: %s", why);
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before + 2);
}
END_TEST

/* A flush of consecutive slots, as a producer's frees in order fill a slab's take: the flush
 * steps from one slot to the next without the page map or the index's multiply (magazine.c),
 * so the run is taken across a bitmap word's end and, where two spans of the class lie end to end
 * (a 16 B span has no tail), across a span's end into the next span, where the step must not
 * go on. Every object is freed once, in its own span, and a repeat of the last is reported. */
START_TEST(a_flush_of_consecutive_slots_across_words_and_spans_frees_each_once)
{
    nsp_free(nsp_malloc(SZ));
    nsp__on_error = NSP_ON_ERROR_WARN;
    enum { POOL = 9000, N = 48 };
    static void *pool[POOL];
    for (unsigned i = 0; i < POOL; i++)
        pool[i] = nsp_malloc(16);
    if (!nsp__span_of(pool[0])) {
        fprintf(stderr, "a_flush_of_consecutive_slots_across_words_and_spans_frees_each_once: "
                        "skipped: the objects are not in numaspan's spans (its malloc replaced: "
                        "valgrind?)\n");
        return;
    }
    qsort(pool, POOL, sizeof pool[0], cmp_ptr);
    /* the window: N consecutive slots around two spans end to end, else around a word's end */
    unsigned at = 0;
    int across_spans = 0;
    for (unsigned i = N / 2; i + N / 2 < POOL && !across_spans; i++) {
        uintptr_t a = (uintptr_t)pool[i - 1], b = (uintptr_t)pool[i];
        if (b == a + 16 && nsp__span_of(pool[i - 1]) != nsp__span_of(pool[i]))
            at = i, across_spans = 1;
        else if (!at && b == a + 16 && nsp__span_index(nsp__span_of(pool[i]), b) % 64 == 0)
            at = i;
    }
    ck_assert_msg(at, "no run of consecutive slots around a word's end in %d objects", POOL);
    unsigned lo = at - N / 2;
    for (unsigned i = lo + 1; i < lo + N; i++)
        ck_assert_msg((uintptr_t)pool[i] == (uintptr_t)pool[i - 1] + 16, "the window is no run");
    uintptr_t objs[N + 1], copy[N + 1];
    for (unsigned i = 0; i < N; i++) {
        objs[i] = (uintptr_t)pool[lo + i];
        *(uint64_t *)objs[i] = nsp__magazine_tag((void *)objs[i], NSP_MAG_NONE);
    }
    objs[N] = objs[N - 1]; /* a racing second free of the last: reported at the flush */
    memcpy(copy, objs, sizeof objs);
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE);
    nsp__magazine_apply(objs, N + 1);
    uint64_t reported = errors(NSP_ERR_DOUBLE_FREE) - before;
    unsigned not_freed = 0;
    for (unsigned i = 0; i < N; i++) {
        struct nsp_span *sp = nsp__span_of((void *)copy[i]);
        uint32_t idx = nsp__span_index(sp, copy[i]);
        not_freed += !(atomic_load(&sp->freed_bits[idx >> 6]) >> (idx & 63) & 1);
    }
    for (unsigned i = 0; i < POOL; i++)
        if (i < lo || i >= lo + N)
            nsp_free(pool[i]);
    nsp_pacer_cycle(); /* sweeps them: freed once, the heap consistent */
    char why[256];
    int heap = nsp_heap_check(why, sizeof why);
    if (!across_spans)
        fprintf(stderr, "a_flush_of_consecutive_slots_across_words_and_spans_frees_each_once: no "
                        "two spans end to end here: the run crossed a word's end only\n");
    ck_assert_uint_eq(not_freed, 0);
    ck_assert_uint_eq(reported, 1);
    ck_assert_msg(heap == 0, "heap check: %s", why);
}
END_TEST

/* Objects listed in a bin are dropped from a flush (reported), whatever their place in a run of
 * objects of one span: the flush reads the bin once per run (cache.c, nsp__cache_drop_listed). */
START_TEST(a_listed_object_inside_a_run_is_dropped_from_the_flush)
{
    if (!ready("a_listed_object_inside_a_run_is_dropped_from_the_flush"))
        return;
    /* on cpu a, the main thread's: its bin holds their span */
    void *p[6], *other = nsp_malloc(48), *spare[64];
    unsigned np = 0, ns = 0;
    p[np++] = nsp_malloc(SZ);
    while (np < 6 && ns < 64) { /* six of one span (a refill may start another: kept aside) */
        void *q = nsp_malloc(SZ);
        if (nsp__span_of(q) == nsp__span_of(p[0]))
            p[np++] = q;
        else
            spare[ns++] = q;
    }
    nsp_free(p[3]); /* pushed into a's bin: listed */
#ifdef NSP_RSEQ_LOCKS
    int listed = nsp__bin_lists(nsp__span_of(p[3]), p[3]);
#else
    int listed = 0; /* not reached: without bins (a TSan build) ready() skips the case */
#endif
    int one_span = 1;
    for (unsigned i = 1; i < 6; i++)
        one_span &= nsp__span_of(p[i]) == nsp__span_of(p[0]);
    uintptr_t objs[7] = {(uintptr_t)p[0], (uintptr_t)p[1], (uintptr_t)p[3], (uintptr_t)p[2],
                         (uintptr_t)other, (uintptr_t)p[4], (uintptr_t)p[5]};
    uintptr_t want[6] = {(uintptr_t)p[0], (uintptr_t)p[1], (uintptr_t)p[2], (uintptr_t)other,
                         (uintptr_t)p[4], (uintptr_t)p[5]};
    /* the others tagged as a magazine of cache 0 holds them (their frees' tag) */
    for (unsigned i = 0; i < 6; i++)
        *(uint64_t *)want[i] = nsp__magazine_tag((void *)want[i], 0);
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE);
    unsigned kept = nsp__cache_drop_listed(objs, 7, 0);
    uint64_t reported = errors(NSP_ERR_DOUBLE_FREE) - before;
    int same = kept == 6 && memcmp(objs, want, sizeof want) == 0;
    for (unsigned i = 0; i < 6; i++)
        *(uint64_t *)want[i] = 0; /* live again: the program's */
    for (unsigned i = 0; i < 6; i++)
        if (i != 3)
            nsp_free(p[i]);
    for (unsigned i = 0; i < ns; i++)
        nsp_free(spare[i]);
    nsp_free(other);
    ck_assert_int_eq(one_span, 1);
    ck_assert_int_eq(listed, 1);
    ck_assert_uint_eq(reported, 1);
    ck_assert_msg(same, "kept %u, not the others in their order", kept);
}
END_TEST

/* The pending remote frees' count (span.h): a flush on one cpu adds on a line no flush of another
 * cpu adds on (one counter for every cpu made each flush wait for the other cpu's line: 10-30% of
 * producer/consumer at 8 and 32 threads on 2 cpus), and the stripes' sum stays exact when the
 * objects are swept on another cpu than the one that flushed them. */
struct flush_here {
    void *p[32];
    _Atomic int64_t *counter;
};

static void flush_here(void *arg)
{
    struct flush_here *f = arg;
    uintptr_t objs[32];
    for (unsigned i = 0; i < 32; i++) { /* tagged as a magazine's push tags them */
        objs[i] = (uintptr_t)f->p[i];
        *(uint64_t *)objs[i] = nsp__magazine_tag(f->p[i], NSP_MAG_NONE);
    }
    f->counter = nsp__span_freed_counter(nsp__span_of(f->p[0]));
    nsp__magazine_apply(objs, 32);
}

START_TEST(flushes_on_two_cpus_count_on_lines_of_their_own)
{
    nsp_free(nsp_malloc(SZ));
    cpu_set_t all;
    int a = -1, b = -1;
    if (sched_getaffinity(0, sizeof all, &all) == 0)
        for (int i = 0; i < CPU_SETSIZE; i++)
            if (CPU_ISSET(i, &all)) {
                if (a < 0)
                    a = i;
                else if (b < 0 && i % NSP_FREED_STRIPES != a % NSP_FREED_STRIPES)
                    b = i;
            }
    if (b < 0) {
        fprintf(stderr, "flushes_on_two_cpus_count_on_lines_of_their_own: skipped: fewer than "
                        "two cpus of different stripes\n");
        return;
    }
    static struct flush_here f[2];
    for (unsigned k = 0; k < 2; k++)
        for (unsigned i = 0; i < 32; i++)
            f[k].p[i] = nsp_malloc(SZ);
    if (!nsp__span_of(f[0].p[0])) {
        fprintf(stderr, "flushes_on_two_cpus_count_on_lines_of_their_own: skipped: the objects "
                        "are not in numaspan's spans (its malloc replaced: valgrind?)\n");
        return;
    }
    struct nsp_span *s = nsp__span_of(f[0].p[0]);
    unsigned node = s->node, cls = s->sizeclass;
    int64_t before = nsp__span_freed_pending(node, cls);
    on_cpu(a, flush_here, &f[0]);
    on_cpu(b, flush_here, &f[1]);
    int64_t flushed = nsp__span_freed_pending(node, cls) - before;
    nsp_pacer_cycle(); /* sweeps them here, on a third thread's cpu */
    int64_t after = nsp__span_freed_pending(node, cls);
    char why[256];
    int heap = nsp_heap_check(why, sizeof why);
    ck_assert_msg((uintptr_t)f[0].counter / NSP_CACHE_LINE !=
                      (uintptr_t)f[1].counter / NSP_CACHE_LINE,
                  "cpus %d and %d count on one line (%p, %p)", a, b, (void *)f[0].counter,
                  (void *)f[1].counter);
    ck_assert_int_eq(flushed, 64);
    ck_assert_int_le(after, before);
    ck_assert_msg(heap == 0, "heap check: %s", why);
}
END_TEST

START_TEST(a_cycle_flushes_the_magazines_and_the_ledger_holds)
{
    if (!ready("a_cycle_flushes_the_magazines_and_the_ledger_holds"))
        return;
    /* Check's successful asserts allocate: values are read first, asserted at the end */
    static void *v[NCYCLE];
    /* a thread's first creation allocates what glibc keeps for the next (its dtv): done first */
    on_cpu(cpu_a, malloc_all, v);
    on_cpu(cpu_b, free_all, v);
    nsp_pacer_cycle();
    nsp_pacer_info_t pi;
    nsp_pacer_get(&pi);
    int64_t before = pi.heap_live[0] + pi.pending[0];
    on_cpu(cpu_a, malloc_all, v);
    on_cpu(cpu_b, free_all, v); /* all remote: into b's magazine */
    uint64_t waiting = cache_of(cpu_b)->mag.count;
    nsp_pacer_cycle();
    uint64_t after_cycle = cache_of(cpu_b)->mag.count;
    unsigned node;
    int64_t ledger, charges;
    int rc = nsp__ledger_recount(1, &node, &ledger, &charges);
    int freed = 0;
    for (int i = 0; i < NCYCLE; i++)
        freed += nsp__span_of(v[i]) == NULL || !live(v[i]);
    nsp_pacer_cycle();
    nsp_pacer_get(&pi);
    int64_t after = pi.heap_live[0] + pi.pending[0];
    ck_assert_uint_ge(waiting, 1);
    ck_assert_uint_eq(after_cycle, 0);
    ck_assert_msg(rc == 0, "recount: node %u heapLive + pending %lld != charges %lld", node,
                  (long long)ledger, (long long)charges);
    ck_assert_int_eq(freed, NCYCLE);
    ck_assert_int_eq(after, before);
}
END_TEST

/* ---- stress: objects handed across cpus, patterns checked ---------------------------------- */

#define STRESS_THREADS 8
#define RING 256
#define STRESS_OPS 60000

struct ring {
    _Atomic uint64_t head, tail;
    void *slot[RING];
};
static struct ring rings[STRESS_THREADS];
static _Atomic int bad_objects, stress_done;

static size_t size_of(uint64_t k)
{
    return 8 + (k * 2654435761u) % 1200;
}

static void fill(void *p, size_t n, uint64_t k)
{
    memcpy(p, &k, sizeof k);
    memset((char *)p + 8, (int)(k & 0xff), n - 8);
}

static int intact(const void *p, size_t n, uint64_t k)
{
    uint64_t got;
    memcpy(&got, p, sizeof got);
    if (got != k)
        return 0;
    for (size_t i = 8; i < n; i++)
        if (((const unsigned char *)p)[i] != (unsigned char)(k & 0xff))
            return 0;
    return 1;
}

/* Thread i produces into ring i and consumes ring (i + 1) % n: every object it frees was
 * allocated by another thread (on another cpu half of the time), so frees are remote. */
static void *stress_thread(void *arg)
{
    unsigned i = (unsigned)(uintptr_t)arg;
    struct ring *out = &rings[i], *in = &rings[(i + 1) % STRESS_THREADS];
    uint64_t made = 0, taken = 0;
    while (made < STRESS_OPS || taken < STRESS_OPS) {
        if (made < STRESS_OPS &&
            made - atomic_load_explicit(&out->tail, memory_order_acquire) < RING) {
            uint64_t k = ((uint64_t)i << 32) | made;
            size_t n = size_of(k);
            void *p = nsp_malloc(n);
            if (!p) {
                atomic_fetch_add(&bad_objects, 1);
                break;
            }
            fill(p, n, k);
            out->slot[made % RING] = p;
            atomic_store_explicit(&out->head, ++made, memory_order_release);
        }
        if (taken < atomic_load_explicit(&in->head, memory_order_acquire)) {
            uint64_t k = ((uint64_t)((i + 1) % STRESS_THREADS) << 32) | taken;
            void *p = in->slot[taken % RING];
            if (!intact(p, size_of(k), k))
                atomic_fetch_add(&bad_objects, 1);
            nsp_free(p);
            atomic_store_explicit(&in->tail, ++taken, memory_order_release);
        } else if (made >= STRESS_OPS) {
            sched_yield();
        }
    }
    atomic_fetch_add(&stress_done, 1);
    return NULL;
}

START_TEST(objects_handed_across_cpus_stay_intact)
{
    nsp_free(nsp_malloc(1));
    uint64_t dbl = errors(NSP_ERR_DOUBLE_FREE), fl = errors(NSP_ERR_FREE_LIST);
    pthread_t t[STRESS_THREADS];
    for (unsigned i = 0; i < STRESS_THREADS; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, stress_thread, (void *)(uintptr_t)i), 0);
    /* foreign takers meanwhile: cycles (which flush the magazines) and stats */
    unsigned cycles = 0;
    while (atomic_load(&stress_done) < STRESS_THREADS) {
        nsp_pacer_cycle();
        nsp_stats_t st;
        nsp_stats_get(&st);
        cycles++;
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    for (unsigned i = 0; i < STRESS_THREADS; i++)
        pthread_join(t[i], NULL);
    nsp_pacer_cycle();
    char why[256];
    int heap = nsp_heap_check(why, sizeof why);
    unsigned node;
    int64_t ledger, charges;
    int rc = nsp__ledger_recount(1, &node, &ledger, &charges);
    ck_assert_int_eq(atomic_load(&bad_objects), 0);
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), dbl);
    ck_assert_uint_eq(errors(NSP_ERR_FREE_LIST), fl);
    ck_assert_msg(heap == 0, "heap check: %s", why);
    ck_assert_msg(rc == 0, "recount: node %u heapLive + pending %lld != charges %lld", node,
                  (long long)ledger, (long long)charges);
    ck_assert_uint_ge(cycles, 1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("magazine");
    TCase *tc = tcase_create("magazine");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, a_remote_free_waits_until_the_cache_is_taken);
    tcase_add_test(tc, a_double_free_through_a_magazine_is_reported_at_once);
    tcase_add_test(tc, a_local_free_after_a_remote_one_in_a_magazine_is_reported);
    tcase_add_test(tc, a_double_free_is_reported_when_the_magazine_cannot_be_flushed);
    tcase_add_test(tc, a_retired_cache_takes_no_remote_free);
    tcase_add_test(tc, a_double_free_past_a_clobbered_tag_is_reported_at_the_flush);
    tcase_add_test(tc, a_flush_in_any_order_frees_each_object_once);
    tcase_add_test(tc, a_flush_in_address_order_frees_each_object_once);
    tcase_add_test(tc, a_flush_of_consecutive_slots_across_words_and_spans_frees_each_once);
    tcase_add_test(tc, a_listed_object_inside_a_run_is_dropped_from_the_flush);
    tcase_add_test(tc, flushes_on_two_cpus_count_on_lines_of_their_own);
    tcase_add_test(tc, a_full_magazine_is_emptied_while_its_cache_is_held);
    tcase_add_test(tc, the_take_matches_its_model_and_a_detach_at_every_step_frees_once);
    tcase_add_test(tc, the_take_restarted_by_signals_takes_each_object_once);
    tcase_add_test(tc, a_cycle_flushes_the_magazines_and_the_ledger_holds);
    tcase_add_test(tc, objects_handed_across_cpus_stay_intact);
    suite_add_tcase(s, tc);
    return nsp_run_suite(s);
}
