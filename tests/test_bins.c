/*
 * tests/test_bins.c — the restartable bins of host/cache.h as a deterministic interleaving, and
 * the errors they must catch.
 *
 * A restartable sequence cannot be stopped half-way (a preemption or a signal restarts it), so the
 * interleavings are played with a model of each sequence, step by step, on the real bin: the steps
 * are the asm's (read the key, read the word, read the link, check it, commit), in the same order,
 * with the same encoding. The rules the model obeys are the kernel's: a sequence preempted on its
 * cpu, or on the cpu a fence reaches, restarts from its first step; one that commits before the
 * fence is seen by the fold after it. Between any two steps the test lets another thread of the
 * cpu pop or push (the real nsp__bin_pop / nsp__bin_push), or a foreign taker detach the bin (the
 * real nsp__cache_lock_foreign, with the hook between its stores of key = 0 and its fence), and
 * then checks what must hold: no object handed out twice, none lost, and after the fold the span's
 * bitmap and count exact (alloc bit set exactly for the objects the program holds).
 *
 * Needs bins: the real machine with rseq (the test pins itself to its cpu). Elsewhere (virtual
 * cores, no rseq, valgrind, TSan builds) each case says it is skipped, and why. Run it with
 * NSP_IDLE_RELEASE_MS=0 (CTest does): the pacer's idle release would detach the bins mid-case.
 */
#define _GNU_SOURCE
#include <check.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <ucontext.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "host/cache.h"
#include "host/pageheap.h"
#include "host/runtime.h"
#include "host/span.h"
#include "host/transfer.h"
#include "check_main.h"
#include "numaspan.h"

#ifdef NSP_RSEQ_LOCKS

#define SZ 20000 /* a class nothing else in the process uses: its spans hold only our objects */
#define SZ_MANY 2000 /* many objects per span: the error cases keep their span cached */
#define SZ_FIRST 22000 /* a class of its own (22 KiB, 23 a span): a_refills_first_object_... needs
                        * a span that holds only its objects, and under CK_FORK=no (every case in
                        * one process) the cases before it leave objects of SZ's class behind */
#define MAXL 64

static unsigned cls;
static int cpu;

/* Pins the thread to its cpu and makes sure its bin of class cls is attached with a few objects.
 * Returns 0 when the bins are off here (the reason printed). */
static int ready(const char *name)
{
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(sched_getcpu(), &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0) {
        fprintf(stderr, "%s: skipped: cannot pin the thread to its cpu\n", name);
        return 0;
    }
    cls = nsp__size_to_class(SZ);
    free(malloc(SZ));
    if (!nsp__tb) {
        fprintf(stderr, "%s: skipped: no bins here (no rseq, virtual cores, NSP_SECURE or exact)\n",
                name);
        return 0;
    }
    cpu = nsp__tb->rseq_cpu;
    nsp__on_error = NSP_ON_ERROR_WARN; /* count the errors these tests commit */
    return 1;
}

/* A cpu of the set other than self, or -1 when there is none. */
static int cpu_other_than(const cpu_set_t *set, int self)
{
    for (int i = 0; i < CPU_SETSIZE; i++)
        if (i != self && CPU_ISSET(i, set))
            return i;
    return -1;
}

static struct nsp_bin *bin(void)
{
    return &nsp__tb->bins[cls];
}

static struct nsp_span *span(void)
{
    return nsp__tb->spans[cls];
}

/* The bin's list, head first (a plain walk: nothing else runs). */
static unsigned list(uintptr_t *out)
{
    struct nsp_bin *b = bin();
    uint64_t key = atomic_load(&b->key);
    unsigned n = 0;
    for (uintptr_t p = (uintptr_t)(b->word >> 16); p && n < MAXL; n++) {
        out[n] = p;
        p = (uintptr_t)(*(uint64_t *)p ^ key);
    }
    return n;
}

/* Makes the bin attached with at least 3 listed objects (a malloc that misses attaches it). */
static void attach(void)
{
    uintptr_t l[MAXL];
    for (int i = 0; i < 4 && (!atomic_load(&bin()->key) || list(l) < 3); i++) {
        void *p = malloc(SZ);
        free(p);
    }
    ck_assert_uint_ne(atomic_load(&bin()->key), 0);
    ck_assert_uint_ge(list(l), 3);
}

static int alloc_bit(uintptr_t p)
{
    struct nsp_span *s = nsp__span_of((void *)p);
    uint32_t idx = nsp__span_index(s, p);
    return (int)((s->alloc_bits[idx >> 6] >> (idx & 63)) & 1);
}

/* The real push of object p, as free does it (its class from the page map). */
static int push(void *p)
{
    unsigned k = nsp__page_class(p);
    ck_assert_uint_eq(k, cls);
    int r;
    while ((r = nsp__bin_push(bin(), p, nsp__class_push_mul(k))) == 2)
        ;
    return r;
}

/* What a malloc does with a popped object: its link is the program's now. */
static void *take(uintptr_t p)
{
    *(uint64_t *)p = 0;
    return (void *)p;
}

/* ---- the model of a sequence ------------------------------------------------------------------- */

enum { RUNNING, DONE, MISS };

struct seq {
    int push; /* 0: pop, 1: push of obj */
    int step, result;
    uint64_t key, w;
    uintptr_t head, next, obj;
};

#define POP_STEPS 5  /* key, word, link, check, commit */
#define PUSH_STEPS 6 /* key, bound, first word, word, link write, commit */

static void step(struct seq *m)
{
    struct nsp_bin *b = bin();
    if (m->result != RUNNING)
        return;
    int k = m->step++;
    if (!m->push) {
        switch (k) {
        case 0:
            if (cpu != sched_getcpu() || !(m->key = atomic_load(&b->key)))
                m->result = MISS;
            break;
        case 1:
            m->w = b->word;
            m->head = (uintptr_t)(m->w >> 16);
            if (!m->head)
                m->result = MISS;
            break;
        case 2:
            m->next = (uintptr_t)(*(uint64_t *)m->head ^ m->key);
            break;
        case 3:
            if (m->next && m->next - b->base >= b->size)
                m->result = MISS;
            break;
        case 4:
            b->word = ((uint64_t)m->next << 16) | ((m->w & NSP_BIN_POPS) + 1);
            m->result = DONE;
            break;
        }
    } else {
        struct nsp_span *s = nsp__span_of((void *)m->obj);
        switch (k) {
        case 0:
            if (cpu != sched_getcpu() || !(m->key = atomic_load(&b->key)))
                m->result = MISS;
            break;
        case 1: /* in the bin's span, below its frontier (the bound), at a slot's start */
            if (b->base != s->base || m->obj - b->base >= b->size ||
                nsp__span_index(s, m->obj) == UINT32_MAX)
                m->result = MISS;
            break;
        case 2: { /* the first word: no tag (free, waiting), no link of the span (listed) */
            uint64_t link = *(uint64_t *)m->obj ^ m->key;
            if (nsp__magazine_tagged((void *)m->obj) >= 0 || !link || link - s->base < b->size)
                m->result = MISS;
            break;
        }
        case 3: { /* the word, and the list's bound: credit - 1; below 0, re-derived from the
                   * pops since the bin last looked (cache.h, the push's second sequence) */
            m->w = b->word;
            if (--b->credit >= 0)
                break;
            int32_t pops = (int32_t)(m->w & NSP_BIN_POPS);
            int32_t credit = b->credit + pops - (int32_t)b->seen;
            if ((uint32_t)pops >= NSP_BIN_POPS_FOLD || credit < 0) {
                m->result = MISS;
                break;
            }
            b->credit = credit;
            b->seen = (uint32_t)pops;
            break;
        }
        case 4:
            *(uint64_t *)m->obj = (m->w >> 16) ^ m->key;
            break;
        case 5:
            b->word = ((uint64_t)m->obj << 16) | (m->w & NSP_BIN_POPS);
            m->result = DONE;
            break;
        }
    }
}

static void run_to_end(struct seq *m)
{
    while (m->result == RUNNING)
        step(m);
}

/* The model agrees with the asm: from equal states, equal results (the test's premise). */
START_TEST(model_matches_the_sequences)
{
    if (!ready("model_matches_the_sequences"))
        return;
    attach();
    uintptr_t l[MAXL];
    list(l);
    uint64_t w0 = bin()->word;
    struct seq m = {0};
    run_to_end(&m);
    uint64_t w_model = bin()->word;
    bin()->word = w0; /* undo, and let the real pop do the same */
    void *p = nsp__bin_pop(bin());
    ck_assert_int_eq(m.result, DONE);
    ck_assert_ptr_eq((void *)m.head, p);
    ck_assert_uint_eq(bin()->word, w_model);
    take((uintptr_t)p);
    uint64_t w1 = bin()->word;
    struct seq u = {.push = 1, .obj = (uintptr_t)p};
    run_to_end(&u);
    uint64_t wu = bin()->word, link = *(uint64_t *)p;
    bin()->word = w1;
    *(uint64_t *)p = 0; /* as before the model's push */
    ck_assert_int_eq(push(p), 0);
    ck_assert_int_eq(u.result, DONE);
    ck_assert_uint_eq(bin()->word, wu);
    ck_assert_uint_eq(*(uint64_t *)p, link);
}
END_TEST

/* A pop preempted after each of its steps, while another thread of the cpu pops: the preempted one
 * restarts and gets the next object. Had it gone on with what it read, from the word on it would
 * hand out the same object a second time: the restart is what makes it safe. */
START_TEST(pop_preempted_at_every_step)
{
    if (!ready("pop_preempted_at_every_step"))
        return;
    for (int k = 0; k < POP_STEPS; k++) {
        attach();
        uintptr_t l[MAXL];
        unsigned n = list(l);
        struct seq m = {0};
        for (int i = 0; i < k; i++)
            step(&m);
        ck_assert_int_eq(m.result, RUNNING);
        void *a = nsp__bin_pop(bin()); /* the other thread */
        ck_assert_ptr_eq(a, (void *)l[0]);
        if (k >= 2) /* had it gone on, it would commit the word it read: a's second hand-out */
            ck_assert_ptr_eq((void *)m.head, a);
        m = (struct seq){0}; /* preempted: restarts */
        run_to_end(&m);
        ck_assert_int_eq(m.result, DONE);
        ck_assert_ptr_eq((void *)m.head, (void *)l[1]);
        ck_assert_ptr_ne((void *)m.head, a);
        uintptr_t after[MAXL];
        ck_assert_uint_eq(list(after), n - 2);
        free(take((uintptr_t)a));
        free(take(m.head));
    }
}
END_TEST

/* A push preempted after each of its steps, while another thread of the cpu pops or pushes: the
 * restarted push lands on top of what the other left, and nothing is lost (preempted after its
 * link write, it goes to the locked path instead: see below). */
START_TEST(push_preempted_at_every_step)
{
    if (!ready("push_preempted_at_every_step"))
        return;
    for (int other = 0; other < 2; other++)
        for (int k = 0; k < PUSH_STEPS; k++) {
            attach();
            uintptr_t p = (uintptr_t)take((uintptr_t)nsp__bin_pop(bin()));
            uintptr_t q = (uintptr_t)take((uintptr_t)nsp__bin_pop(bin()));
            uintptr_t l[MAXL];
            unsigned n = list(l);
            struct seq m = {.push = 1, .obj = p};
            for (int i = 0; i < k; i++)
                step(&m);
            ck_assert_int_eq(m.result, RUNNING);
            void *a = NULL;
            if (other == 0)
                a = take((uintptr_t)nsp__bin_pop(bin()));
            else
                ck_assert_int_eq(push((void *)q), 0);
            m = (struct seq){.push = 1, .obj = p}; /* preempted: restarts */
            run_to_end(&m);
            if (k == PUSH_STEPS - 1) {
                /* preempted after writing p's link: the restart finds a link of the span in p's
                 * first word, so it misses, and the locked path frees p exactly (the bin folded)
                 * — slower, never wrong */
                ck_assert_int_eq(m.result, MISS);
                uint64_t before = atomic_load(&nsp__errors[NSP_ERR_DOUBLE_FREE]);
                free((void *)p);
                ck_assert_uint_eq(atomic_load(&nsp__errors[NSP_ERR_DOUBLE_FREE]), before);
                ck_assert_int_eq(alloc_bit(p), 0);
                ck_assert_uint_eq(atomic_load(&bin()->key), 0);
                if (a)
                    free(a);
                free((void *)q);
                continue;
            }
            ck_assert_int_eq(m.result, DONE);
            uintptr_t after[MAXL];
            unsigned na = list(after);
            ck_assert_uint_eq(after[0], p);
            if (other == 0) {
                ck_assert_ptr_eq(a, (void *)l[0]);
                ck_assert_uint_eq(na, n); /* one popped, one pushed */
                ck_assert_uint_eq(after[1], l[1]);
                free(a);
                free((void *)q);
            } else {
                ck_assert_uint_eq(na, n + 2);
                ck_assert_uint_eq(after[1], q);
                ck_assert_uint_eq(after[2], l[0]);
            }
        }
}
END_TEST

/* ---- a foreign detach at every step ------------------------------------------------------------ */

static struct seq *window_seq;
static int window_commits; /* 1: the sequence runs to its end before the fence reaches its cpu */

static void detach_window(struct nsp_cache *c)
{
    (void)c;
    ck_assert_uint_eq(atomic_load(&bin()->key), 0); /* the stores came first */
    if (window_commits)
        run_to_end(window_seq);
}

/* One case: the model sequence m has done k steps when a foreign taker detaches the bin; it either
 * commits before the fence or is restarted by it. Afterwards (the fold done) every object the test
 * holds has its alloc bit set, every other one of the span not, and alloc_count counts exactly
 * the held ones. held/nheld: objects the test holds before; m's object is added when it got one. */
static void detach_case(struct seq *m, int k, int commits, uintptr_t *held, unsigned nheld)
{
    uintptr_t l[MAXL];
    unsigned n = list(l);
    for (int i = 0; i < k; i++)
        step(m);
    ck_assert_int_eq(m->result, RUNNING);
    window_seq = m;
    window_commits = commits;
    atomic_store(&nsp__test_detach_window, detach_window);
    int taken = nsp__cache_lock_foreign(nsp__tb);
    atomic_store(&nsp__test_detach_window, NULL);
    ck_assert_int_eq(taken, 1);
    if (!commits) {
        ck_assert_int_eq(m->result, RUNNING); /* the fence restarted it: it begins again, ... */
        *m = (struct seq){.push = m->push, .obj = m->obj};
    }
    struct nsp_span *s = span();
    ck_assert_uint_eq(bin()->word, 0);
    ck_assert_uint_eq(atomic_load(&bin()->key), 0);
    if (!m->push && m->result == DONE)
        held[nheld++] = m->head;
    if (m->push && m->result == DONE) { /* pushed before the fence: folded as freed */
        for (unsigned i = 0; i < nheld; i++)
            if (held[i] == m->obj)
                held[i] = held[--nheld];
    }
    for (unsigned i = 0; i < n; i++) {
        int h = 0;
        for (unsigned j = 0; j < nheld; j++)
            h |= held[j] == l[i];
        ck_assert_int_eq(alloc_bit(l[i]), h);
    }
    for (unsigned j = 0; j < nheld; j++)
        ck_assert_int_eq(alloc_bit(held[j]), 1);
    ck_assert_uint_eq(s->alloc_count, nheld);
    nsp__cache_unlock(nsp__tb);
    if (!commits) {
        run_to_end(m); /* ... and reads key 0: a miss, the slow path's to do */
        ck_assert_int_eq(m->result, MISS);
    }
    for (unsigned j = 0; j < nheld; j++)
        free((void *)held[j]);
}

START_TEST(pop_detached_at_every_step)
{
    if (!ready("pop_detached_at_every_step"))
        return;
    for (int commits = 0; commits < 2; commits++)
        for (int k = 0; k < POP_STEPS; k++) {
            attach();
            struct seq m = {0};
            uintptr_t held[MAXL];
            detach_case(&m, k, commits, held, 0);
            if (commits)
                /* one that had read the key commits its pop; one that had not (k == 0) starts
                 * after the stores, reads 0 and misses */
                ck_assert_int_eq(m.result, k == 0 ? MISS : DONE);
        }
}
END_TEST

START_TEST(push_detached_at_every_step)
{
    if (!ready("push_detached_at_every_step"))
        return;
    for (int commits = 0; commits < 2; commits++)
        for (int k = 0; k < PUSH_STEPS; k++) {
            attach();
            uintptr_t held[MAXL];
            held[0] = (uintptr_t)take((uintptr_t)nsp__bin_pop(bin()));
            struct seq m = {.push = 1, .obj = held[0]};
            /* copies: detach_case frees what is still held at its end */
            detach_case(&m, k, commits, held, 1);
            if (commits)
                ck_assert_int_eq(m.result, k == 0 ? MISS : DONE);
        }
}
END_TEST

/* ---- errors the bins catch --------------------------------------------------------------------- */

static uint64_t errors(enum nsp_error_kind k)
{
    return atomic_load(&nsp__errors[k]);
}

/* A second free of an object sitting in the bin's list: its first word decodes to a link of the
 * span, so the free goes to the locked path, which folds the bin and finds the bit clear. */
START_TEST(local_double_free_in_the_list_is_caught)
{
    if (!ready("local_double_free_in_the_list_is_caught"))
        return;
    attach();
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE);
    void *p = malloc(SZ);
    free(p);
    free(p);
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before + 1);
    void *a = malloc(SZ), *b = malloc(SZ);
    ck_assert_ptr_ne(a, b); /* handed out once */
    free(a);
    free(b);
}
END_TEST

/* A thread on another cpu frees the object that sits in our bin's list (a cross-thread double
 * free after a local one). A listed object keeps its alloc bit, so the remote freer's alloc-bit
 * check alone passes it: its freed bit would then wait for a sweep while the bin hands the object
 * out again, and that sweep would free the live object (issue 10, failure 2, come back with the
 * bins). The remote freer must refuse it, and leave no freed bit behind. */
struct remote_free {
    cpu_set_t set;
    void *p;
};

static void *free_on_other_cpu(void *arg)
{
    struct remote_free *r = arg;
    if (sched_setaffinity(0, sizeof r->set, &r->set) != 0)
        return (void *)1;
    free(r->p);
    return NULL;
}

/* ready(), and a cpu other than the test's among those the thread could run on before ready()
 * pinned it; -1 when the test is skipped (the reason printed). */
static int ready_with_another_cpu(const char *name)
{
    cpu_set_t all;
    ck_assert_int_eq(sched_getaffinity(0, sizeof all, &all), 0);
    if (!ready(name))
        return -1;
    int other = cpu_other_than(&all, cpu);
    if (other < 0)
        fprintf(stderr, "%s: skipped: one cpu\n", name);
    return other;
}

/* Frees p from a thread pinned to cpu other, and waits for it. */
static void free_on_cpu(int other, void *p)
{
    struct remote_free arg = {.p = p};
    CPU_ZERO(&arg.set);
    CPU_SET(other, &arg.set);
    pthread_t t;
    void *rc;
    ck_assert_int_eq(pthread_create(&t, NULL, free_on_other_cpu, &arg), 0);
    ck_assert_int_eq(pthread_join(t, &rc), 0);
    ck_assert_ptr_null(rc);
}

START_TEST(remote_double_free_of_a_listed_object_is_caught)
{
    int other = ready_with_another_cpu("remote_double_free_of_a_listed_object_is_caught");
    if (other < 0)
        return;
    attach();
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE);
    void *p = malloc(SZ);
    free(p); /* pushed: listed, alloc bit still set */
    uintptr_t l[MAXL];
    unsigned n = list(l);
    ck_assert_uint_ge(n, 1);
    ck_assert_uint_eq(l[0], (uintptr_t)p);
    free_on_cpu(other, p);
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before + 1);
    struct nsp_span *s = span();
    uint32_t idx = nsp__span_index(s, (uintptr_t)p);
    /* no freed bit waits for p: once handed out again, a sweep would free it live */
    ck_assert_uint_eq((atomic_load(&s->freed_bits[idx >> 6]) >> (idx & 63)) & 1, 0);
}
END_TEST

/* Every key carries the bins' top 16 bits (magazine.h, nsp__bin_key_top: neither 0 nor 0xffff),
 * so every listed object's first word does too, and a remote free that sees other top bits may
 * skip reading the bin (free.c, slab_takes): were a key drawn without them, a listed object's
 * second free from another cpu would go into that cpu's slab unreported
 * (remote_double_free_of_a_listed_object_is_caught goes red). Pointers and small integers, the
 * usual first words of live objects, and tags never look like links. */
START_TEST(every_listed_word_carries_the_keys_top_bits)
{
    if (!ready("every_listed_word_carries_the_keys_top_bits"))
        return;
    attach();
    ck_assert_uint_ne(nsp__bin_key_top, 0);
    ck_assert_uint_ne(nsp__bin_key_top, NSP_BIN_KEY_TOP_MASK);
    ck_assert_uint_eq(nsp__bin_key_top & ~NSP_BIN_KEY_TOP_MASK, 0);
    uint64_t key = atomic_load(&bin()->key);
    ck_assert_uint_eq(key & NSP_BIN_KEY_TOP_MASK, nsp__bin_key_top);
    uintptr_t l[MAXL];
    unsigned n = list(l);
    ck_assert_uint_ge(n, 2);
    for (unsigned i = 0; i < n; i++)
        ck_assert_msg(nsp__may_be_link(*(uint64_t *)l[i]), "listed object %u's word is no link", i);
    ck_assert_int_eq(nsp__may_be_link(0), 0);
    ck_assert_int_eq(nsp__may_be_link(1), 0);
    ck_assert_int_eq(nsp__may_be_link((uint64_t)(uintptr_t)l[0]), 0);
    ck_assert_int_eq(nsp__may_be_link((uint64_t)-1), 0);
    /* nor do tags (their top bit is the tag key's, the keys' top bit the other one): a flush of
     * tagged objects reads no bin (nsp__cache_drop_listed) */
    ck_assert_uint_ne(nsp__bin_key_top >> 63, nsp__magazine_key >> 63);
    for (uint32_t ci = 0; ci < nsp__ncaches; ci++)
        ck_assert_int_eq(nsp__may_be_link(nsp__magazine_tag((void *)l[0], ci)), 0);
    ck_assert_int_eq(nsp__may_be_link(nsp__magazine_tag((void *)l[0], NSP_MAG_NONE)), 0);
    ck_assert_int_eq(nsp__may_be_link(nsp__magazine_tag((void *)l[0], NSP_MAG_TRANSFER)), 0);
}
END_TEST

/* A push preempted after it wrote the object's link and before its commit restarts, finds its own
 * link (it decodes into the span) and misses; if the thread has moved to another cpu meanwhile,
 * the free goes the remote way with that link in the object. That free is valid: it must free the
 * object, not report a double free (the object is not listed). */
START_TEST(remote_free_after_an_aborted_push_is_valid)
{
    int other = ready_with_another_cpu("remote_free_after_an_aborted_push_is_valid");
    if (other < 0)
        return;
    attach();
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE);
    void *p = malloc(SZ);
    struct nsp_bin *b = bin();
    /* what the push wrote before it was preempted: the current head, encoded */
    *(uint64_t *)p = (b->word >> 16) ^ atomic_load(&b->key);
    free_on_cpu(other, p);
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before);
    /* the free may wait in the other cpu's remote-free magazine (magazine.h): a foreign take of
     * that cache applies it, as a cycle's does */
    struct nsp_cache *oc = &nsp__caches[nsp__topo->cpu_to_cache[other]];
    ck_assert_int_eq(nsp__cache_lock_foreign(oc), 1);
    nsp__cache_unlock(oc);
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before);
    struct nsp_span *s = nsp__span_of(p);
    uint32_t idx = nsp__span_index(s, (uintptr_t)p);
    ck_assert_int_eq(nsp__span_slot_live(s, idx), 0); /* freed */
}
END_TEST

/* p, freed once from another cpu, freed again here: reported, and not listed in the bin (the sweep
 * gives it back once). */
static void second_free_is_caught(void *p, uint64_t before)
{
    free(p);
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before + 1);
    uintptr_t l[MAXL];
    unsigned n = list(l);
    for (unsigned i = 0; i < n; i++)
        ck_assert_uint_ne(l[i], (uintptr_t)p);
}

/* The other order: a thread on another cpu frees the object first (its freed bit set, waiting for
 * a sweep), then its owner's thread frees it again. The push must not take it: listed, then handed
 * out again, it would be a live object with a freed bit, and the sweep would free it. */
START_TEST(local_double_free_after_a_remote_free_is_caught)
{
    int other = ready_with_another_cpu("local_double_free_after_a_remote_free_is_caught");
    if (other < 0)
        return;
    attach();
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE);
    void *p = malloc(SZ);
    free_on_cpu(other, p);
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before); /* the first free is valid */
    second_free_is_caught(p, before);
}
END_TEST

/* The same with a remote free that goes the direct way (one atomic OR, no magazine: the freeing
 * thread has none, as on a cpu without an rseq cache of its own). The push reads no freed bitmap
 * (host/cache.h): what refuses it is the remote free's tag in the object's first word
 * (magazine.h, NSP_MAG_NONE), written before the freed bit. */
START_TEST(local_double_free_after_a_direct_remote_free_is_caught)
{
    int other = ready_with_another_cpu("local_double_free_after_a_direct_remote_free_is_caught");
    if (other < 0)
        return;
    attach();
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE);
    void *p = malloc(SZ);
    struct nsp_cache *oc = &nsp__caches[nsp__topo->cpu_to_cache[other]];
    /* the freeing thread gets no bins and no magazine there (as on a cpu without an rseq cache
     * of its own): bins_on cleared while we hold that cache, so nobody else reads it meanwhile */
    ck_assert_int_eq(nsp__cache_lock_foreign(oc), 1);
    oc->bins_on = 0;
    free_on_cpu(other, p);
    oc->bins_on = 1;
    nsp__cache_unlock(oc);
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before); /* the first free is valid */
    struct nsp_span *s = span();
    uint32_t idx = nsp__span_index(s, (uintptr_t)p);
    /* the direct way: its freed bit waits for a sweep (a magazine would not have set it yet) */
    ck_assert_uint_eq((atomic_load(&s->freed_bits[idx >> 6]) >> (idx & 63)) & 1, 1);
    second_free_is_caught(p, before);
}
END_TEST

/* A free of a slot that is not allocated while the bin holds its span, one freed and folded back
 * (a foreign taker came between): its first word is the free tag (host/span.h), so the push
 * refuses it and the locked path reports it at the free, reading the bits. */
START_TEST(free_of_a_slot_not_allocated_is_caught)
{
    if (!ready("free_of_a_slot_not_allocated_is_caught"))
        return;
    cls = nsp__size_to_class(SZ_MANY);
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE);
    void *keep = malloc(SZ_MANY);
    void *x = malloc(SZ_MANY);
    /* p above 8 other slots freed with it: an attach lists the span's lowest free slots (first
     * fit, host/span.h: 4 at 2000 B), so p stays free in its span while the bin holds it */
    void *o[9], *p = NULL;
    for (unsigned i = 0; i < 9; i++) {
        o[i] = malloc(SZ_MANY);
        p = (uintptr_t)o[i] > (uintptr_t)p ? o[i] : p;
    }
    struct nsp_span *s = span();
    for (unsigned i = 0; i < 9; i++) {
        ck_assert_ptr_eq(nsp__span_of(o[i]), s);
        free(o[i]);
    }
    ck_assert_int_eq(nsp__cache_lock_foreign(nsp__tb), 1); /* detach and fold: p's bit clear */
    nsp__cache_unlock(nsp__tb);
    ck_assert_int_eq(alloc_bit((uintptr_t)p), 0);
    free(x); /* the bin attached again (x is live: a valid free, pushed or not) */
    void *y = malloc(SZ_MANY);
    ck_assert_uint_ne(atomic_load(&bin()->key), 0);
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before);
    if (y == p) { /* handed out again: fold it back once more */
        free(y);
        y = NULL;
        ck_assert_int_eq(nsp__cache_lock_foreign(nsp__tb), 1);
        nsp__cache_unlock(nsp__tb);
        free(malloc(SZ_MANY)); /* attached again */
    }
    uintptr_t l[MAXL];
    unsigned n = list(l);
    for (unsigned j = 0; j < n; j++)
        ck_assert_uint_ne(l[j], (uintptr_t)p);
    if (alloc_bit((uintptr_t)p)) { /* carved into the list or handed out: nothing to test */
        fprintf(stderr, "free_of_a_slot_not_allocated_is_caught: p was handed out again\n");
    } else {
        ck_assert_int_ge(nsp__magazine_tagged(p), 0); /* what refuses the push */
        free(p);
        ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before + 1);
        ck_assert_int_eq(alloc_bit((uintptr_t)p), 0);
    }
    void *a = malloc(SZ_MANY), *b = malloc(SZ_MANY);
    ck_assert_ptr_ne(a, b);
    free(a);
    free(b);
    if (y)
        free(y);
    free(keep);
}
END_TEST

/* A free of a slot never handed out (at or past its span's frontier: its memory is the pages'
 * old contents, here zero) while the bin holds its span: nothing in the object says free, so the
 * bin's bound (the frontier at the attach) refuses the push, and the locked path reports it. */
START_TEST(free_of_a_slot_never_handed_out_is_caught)
{
    if (!ready("free_of_a_slot_never_handed_out_is_caught"))
        return;
    cls = nsp__size_to_class(SZ_MANY);
    void *x = malloc(SZ_MANY); /* the bin attached */
    struct nsp_span *s = span();
    ck_assert_uint_ne(atomic_load(&bin()->key), 0);
    ck_assert_uint_lt(s->frontier, s->nelems);
    uintptr_t y = s->base + (uintptr_t)s->frontier * s->elemsize; /* the first never handed out */
    ck_assert_int_eq(alloc_bit(y), 0);
    memset((void *)y, 0, sizeof(uint64_t)); /* as fresh pages hold: no tag, no link */
    ck_assert_uint_eq(push((void *)y), 1); /* refused by the bound */
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE);
    free((void *)y);
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE), before + 1);
    ck_assert_int_eq(alloc_bit(y), 0);
    void *a = malloc(SZ_MANY), *b = malloc(SZ_MANY);
    ck_assert_ptr_ne(a, b);
    free(a);
    free(b);
    free(x);
}
END_TEST

/* A free slot whose tag the program wrote over, then freed again: the one case the object cannot
 * tell (host/cache.h). The push takes it and the next malloc pops it (q), its alloc bit clear: the
 * span's count leaves it out. It must be reported, and q's memory never handed out to another
 * owner while the program holds it: not by the span's bitmap (the hand-out checks the tag), and
 * not by the page heap once the span's other objects are freed and a trim gives empty spans back
 * (the span is kept: nsp__span_keep_held). What it gives up against the alloc bit: the report
 * comes there, not at the second free. (rnobit's test_bin_free found the page heap's way.) */
START_TEST(double_free_after_a_write_after_free_hands_nothing_out_twice)
{
    if (!ready("double_free_after_a_write_after_free_hands_nothing_out_twice"))
        return;
    cls = nsp__size_to_class(SZ_MANY);
    /* p above 8 other slots freed with it: the attach below lists the span's lowest free slots
     * (first fit, host/span.h: 4 at 2000 B), so a lower p would be met by the carve's tag check
     * (reported there) before the second free this test is about */
    void *o[9], *p = NULL;
    for (unsigned i = 0; i < 9; i++) {
        o[i] = malloc(SZ_MANY);
        p = (uintptr_t)o[i] > (uintptr_t)p ? o[i] : p;
    }
    for (unsigned i = 0; i < 9; i++) {
        ck_assert_ptr_eq(nsp__span_of(o[i]), nsp__span_of(p));
        free(o[i]);
    }
    ck_assert_int_eq(nsp__cache_lock_foreign(nsp__tb), 1); /* folded: free, tagged */
    nsp__cache_unlock(nsp__tb);
    ck_assert_int_eq(alloc_bit((uintptr_t)p), 0);
    ((volatile uint64_t *)p)[0] = 0; /* written after free */
    void *x = malloc(SZ_MANY); /* the bin attached again */
    ck_assert_uint_ne(atomic_load(&bin()->key), 0);
    uint64_t before = errors(NSP_ERR_WRITE_AFTER_FREE) + errors(NSP_ERR_FREE_LIST) +
                      errors(NSP_ERR_DOUBLE_FREE);
    free(p); /* the second free: the push takes it (p lies below the bound, its word no tag) */
    void *q = malloc(SZ_MANY); /* the program's from here on */
    memset(q, 0x71, SZ_MANY);
    free(x);
    nsp_trim(); /* caches released, empty spans' pages back to the page heap */
    struct nsp_span *t = nsp__span_of(q);
    ck_assert_msg(t && atomic_load(&t->state) != NSP_SPAN_FREE && t->sizeclass == cls &&
                      nsp__span_slot_live(t, nsp__span_index(t, (uintptr_t)q)),
                  "%p, held by the program, is free in its span or its span was freed", q);
    enum { MAXN = 1024 };
    static void *got[MAXN];
    for (unsigned i = 0; i < MAXN; i++) { /* the class's next objects, on whatever pages */
        got[i] = malloc(SZ_MANY);
        ck_assert_msg((uintptr_t)got[i] >= (uintptr_t)q + SZ_MANY ||
                          (uintptr_t)q >= (uintptr_t)got[i] + SZ_MANY,
                      "%p handed out again while the program holds it (%p)", q, got[i]);
    }
    uint64_t after = errors(NSP_ERR_WRITE_AFTER_FREE) + errors(NSP_ERR_FREE_LIST) +
                     errors(NSP_ERR_DOUBLE_FREE);
    ck_assert_uint_ge(after, before + 1); /* reported, by the time it could go twice */
    for (unsigned i = 0; i < MAXN; i++)
        free(got[i]);
    free(q); /* kept allocated: a valid free */
}
END_TEST

/* A write into a free object's link: the pop refuses the link (it does not decode into the span),
 * the slow path's fold reports the object, and nothing is handed out twice. */
START_TEST(stray_write_into_a_free_object_is_caught)
{
    if (!ready("stray_write_into_a_free_object_is_caught"))
        return;
    attach();
    uint64_t before = errors(NSP_ERR_FREE_LIST);
    void *q = malloc(SZ);
    void *p = malloc(SZ);
    free(p); /* p heads the list */
    ((volatile uint64_t *)p)[0] = 0x4141414141414141ULL; /* written after free */
    void *r = malloc(SZ);
    uint64_t reported = errors(NSP_ERR_FREE_LIST);
    ck_assert_uint_eq(reported, before + 1);
    ck_assert_ptr_nonnull(r);
    ck_assert_ptr_ne(r, q);
    void *s = malloc(SZ);
    ck_assert_ptr_ne(r, s);
    free(q);
    free(r);
    free(s);
}
END_TEST

/* The free tag (host/span.h): every slot free in its span below the carve frontier carries a
 * remote free's tag in its first word, whichever path freed it: a push then a fold (a foreign
 * take), and the locked local free (a live object whose first word looks like a link of the span
 * misses the push and goes there). The heap check asserts it for every span. */
START_TEST(free_slots_below_the_frontier_carry_the_tag)
{
    if (!ready("free_slots_below_the_frontier_carry_the_tag"))
        return;
    cls = nsp__size_to_class(SZ_MANY);
    enum { N = 6 };
    void *p[N];
    for (int i = 0; i < N; i++)
        p[i] = malloc(SZ_MANY);
    struct nsp_span *s = span();
    for (int i = 0; i < N; i++)
        ck_assert_ptr_eq(nsp__span_of(p[i]), s);
    for (int i = 0; i < 3; i++)
        free(p[i]); /* pushed: listed */
    struct nsp_bin *b = bin();
    /* p[3]'s first word decodes to the list's head: the push misses, the locked path frees it */
    *(uint64_t *)p[3] = (b->word >> 16) ^ atomic_load(&b->key);
    free(p[3]);
    ck_assert_int_eq(alloc_bit((uintptr_t)p[3]), 0);
    ck_assert_int_eq(nsp__cache_lock_foreign(nsp__tb), 1); /* detach and fold */
    nsp__cache_unlock(nsp__tb);
    for (int i = 0; i < 4; i++) {
        uint32_t idx = nsp__span_index(s, (uintptr_t)p[i]);
        ck_assert_msg(idx < s->frontier, "slot %u at or past the frontier %u", idx, s->frontier);
        if (!alloc_bit((uintptr_t)p[i])) /* (not handed out again meanwhile) */
            ck_assert_msg(nsp__magazine_tagged(p[i]) >= 0,
                          "object %d (%p), free in its span, has no tag: %#llx", i, p[i],
                          (unsigned long long)*(uint64_t *)p[i]);
    }
    char why[256] = "";
    ck_assert_msg(nsp_heap_check(why, sizeof why) == 0, "heap check: %s", why);
    for (int i = 4; i < N; i++)
        free(p[i]);
    ck_assert_msg(nsp_heap_check(why, sizeof why) == 0, "heap check: %s", why);
}
END_TEST

/* A slot free below the frontier whose tag was written over (a write after free) is not handed out
 * again: the hand-out reports it, naming it, and keeps it allocated (host/span.h). The heap check
 * sees the write first. */
START_TEST(a_free_slot_written_over_is_not_handed_out)
{
    if (!ready("a_free_slot_written_over_is_not_handed_out"))
        return;
    cls = nsp__size_to_class(SZ_MANY);
    void *keep = malloc(SZ_MANY);
    void *p = malloc(SZ_MANY);
    struct nsp_span *s = span();
    free(p);
    ck_assert_int_eq(nsp__cache_lock_foreign(nsp__tb), 1); /* folded: free in its span, tagged */
    nsp__cache_unlock(nsp__tb);
    ck_assert_int_eq(alloc_bit((uintptr_t)p), 0);
    ((volatile uint64_t *)p)[0] = 0x4141414141414141ULL; /* written after free */
    char why[256] = "";
    ck_assert_int_ne(nsp_heap_check(why, sizeof why), 0);
    ck_assert_msg(strstr(why, "no free tag") != NULL, "heap check: %s", why);
    uint64_t before = errors(NSP_ERR_WRITE_AFTER_FREE);
    /* every free slot of the span is handed out (the carve goes lowest first): p never is */
    enum { MAXN = 4096 };
    static void *got[MAXN];
    unsigned n = 0;
    while (n < MAXN && alloc_bit((uintptr_t)p) == 0) {
        got[n] = malloc(SZ_MANY);
        ck_assert_ptr_ne(got[n], p);
        n++;
    }
    ck_assert_uint_lt(n, MAXN);
    ck_assert_uint_eq(errors(NSP_ERR_WRITE_AFTER_FREE), before + 1);
    ck_assert_ptr_eq(nsp__span_of(p), s);
    for (unsigned i = 0; i < n; i++)
        ck_assert_ptr_ne(got[i], p);
    for (unsigned i = 0; i < n; i++)
        free(got[i]);
    free(p); /* kept allocated: its free is a valid one */
    free(keep);
    ck_assert_msg(nsp_heap_check(why, sizeof why) == 0, "heap check: %s", why);
}
END_TEST

/* The pacer reads caches without taking them (nsp__cache_read): at rest that reading must be
 * exact with bins attached, that is equal to the reading after the bins are folded back. */
START_TEST(lock_free_reading_at_rest_sees_the_bins)
{
    if (!ready("lock_free_reading_at_rest_sees_the_bins"))
        return;
    attach();
    void *h[3];
    for (int i = 0; i < 3; i++)
        h[i] = malloc(SZ);
    free(h[1]); /* one pushed back: listed objects from a carve and from a local free */
    ck_assert_uint_ne(atomic_load(&bin()->key), 0);
    struct nsp_cache_reading before = {0}, after = {0};
    nsp__cache_read(nsp__tb, &before);
    ck_assert_int_eq(nsp__cache_lock_foreign(nsp__tb), 1); /* detach and fold every bin */
    nsp__cache_unlock(nsp__tb);
    nsp__cache_read(nsp__tb, &after);
    ck_assert_int_eq(before.unspent, after.unspent);
    ck_assert_int_eq(before.unflushed, after.unflushed);
    ck_assert_int_eq(before.held, after.held);
    ck_assert_int_eq(before.pending, after.pending);
    free(h[0]);
    free(h[2]);
}
END_TEST

/* A bin lists a few KiB of its span's free slots at a time (cache.c's carve), never the whole
 * span: only listed objects' first words are written, so RSS follows use (issue 11, Deliver 1). A
 * drained bin's next miss lists the next few KiB of the same span. */
#define SZ_LAZY 640 /* 4 KiB is 6 of them; a span holds 100 or more */
START_TEST(a_bin_lists_a_few_kib_at_a_time)
{
    if (!ready("a_bin_lists_a_few_kib_at_a_time"))
        return;
    cls = nsp__size_to_class(SZ_LAZY);
    void *keep[2 * MAXL];
    unsigned n = 0;
    keep[n++] = malloc(SZ_LAZY); /* the class's first malloc misses: the slow path attaches */
    struct nsp_bin *b = bin();
    struct nsp_span *s = span();
    ck_assert_uint_ne(atomic_load(&b->key), 0);
    uint32_t most = 4096 / s->elemsize > 4 ? 4096 / s->elemsize : 4;
    ck_assert_msg(s->nelems > 4 * most && most <= MAXL, "class of %u B: span of %u objects",
                  s->elemsize, s->nelems);
    for (int round = 0; round < 2; round++) {
        uint32_t carved = b->carved;
        ck_assert_msg(carved >= 1 && carved <= most,
                      "round %d: one attach listed %u objects of %u B, want 1 to %u (4 KiB)", round,
                      carved, s->elemsize, most);
        ck_assert_ptr_eq(span(), s); /* the same span, further on */
        for (uint32_t i = 0; i < carved; i++) /* drains the list: pops */
            keep[n++] = malloc(SZ_LAZY);
        ck_assert_uint_eq(b->word >> 16, 0); /* empty */
        keep[n++] = malloc(SZ_LAZY); /* a miss: the next few KiB */
    }
    for (unsigned i = 0; i < n; i++)
        free(keep[i]);
}
END_TEST

/* Local frees list at most a few carves (cache.h, "Why the list is bounded"): a push past the
 * bound misses, and the locked free that takes it folds the bin, so the span's allocated slots
 * (which count the listed ones) come down with the frees. Before the bound every local free was
 * listed: a span freed whole stayed allocated whole from the ledger's view (its charge stuck at
 * its fullest moment in `over`) and kept every freed object on the list. */
START_TEST(a_bin_lists_at_most_a_few_carves)
{
    if (!ready("a_bin_lists_at_most_a_few_carves"))
        return;
    cls = nsp__size_to_class(SZ_LAZY);
    enum { N = 90 };
    void *held[N];
    held[0] = malloc(SZ_LAZY);
    struct nsp_span *s = span();
    uint32_t most = 4096 / s->elemsize > 4 ? 4096 / s->elemsize : 4;
    unsigned n = 1;
    while (n < N && n + 1 < s->nelems && (held[n] = malloc(SZ_LAZY)) &&
           nsp__span_of(held[n]) == s)
        n++;
    ck_assert_msg(n == N, "class of %u B: only %u objects from one span of %u", s->elemsize, n,
                  s->nelems);
    ck_assert_uint_gt(N, 8 * most + 16); /* well past the bound */
    uint64_t before = errors(NSP_ERR_DOUBLE_FREE) + errors(NSP_ERR_FREE_LIST) +
                      errors(NSP_ERR_WRITE_AFTER_FREE);
    for (unsigned i = 0; i < N; i++) /* local frees: the bin's pushes while under the bound */
        free(held[i]);
    uint32_t slots = s->alloc_count; /* listed, since nothing is live */
    int same = span() == s;
    for (unsigned i = 0; i < N; i++) /* the list and the bitmap hand every slot out once */
        held[i] = malloc(SZ_LAZY);
    for (unsigned i = 0; i < N; i++)
        for (unsigned j = i + 1; j < N; j++)
            ck_assert_ptr_ne(held[i], held[j]);
    for (unsigned i = 0; i < N; i++)
        free(held[i]);
    ck_assert_int_eq(same, 1);
    ck_assert_msg(slots <= 8 * most,
                  "%u objects of %u B freed locally, %u still allocated from the span's view "
                  "(listed): the bin may list at most %u (8 carves)",
                  N, s->elemsize, slots, 8 * most);
    ck_assert_uint_eq(errors(NSP_ERR_DOUBLE_FREE) + errors(NSP_ERR_FREE_LIST) +
                          errors(NSP_ERR_WRITE_AFTER_FREE),
                      before); /* nothing the bound's fold took for an error */
}
END_TEST

/* An interior pointer of a live object of the span a bin holds: the push's slot test (one
 * multiply, sizeclass.h's nsp__class_slot_start) refuses it, and the locked path reports it; the
 * object stays live and its real free is taken. Classes of every kind: sizes that are powers of
 * two and sizes that are not, small and large, offsets near both ends of the object. A test
 * that said yes inside an object would push the pointer into the list, and a later malloc would
 * hand out memory overlapping the live object. */
START_TEST(a_local_free_of_an_interior_pointer_is_refused_and_reported)
{
    if (!ready("a_local_free_of_an_interior_pointer_is_refused_and_reported"))
        return;
    static const size_t sizes[] = {16, 48, 96, 640, 960, 1024, SZ_MANY, SZ};
    for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned k = nsp__size_to_class(sizes[i]);
        uint64_t e = nsp__classes[k].size;
        void *keep = malloc(sizes[i]), *p = malloc(sizes[i]);
        free(malloc(sizes[i])); /* a pair: the bin attached to the span p came from */
        struct nsp_span *s = nsp__span_of(p);
        ck_assert_msg(nsp__tb->spans[k] == s && atomic_load(&nsp__tb->bins[k].key),
                      "class of %llu B: no bin attached to the object's span",
                      (unsigned long long)e);
        const uint64_t offs[] = {8, 24, e / 2 & ~7ULL, e - 8};
        for (unsigned j = 0; j < 4; j++) {
            if (offs[j] == 0 || offs[j] >= e)
                continue; /* offsets inside the object only */
            uint64_t before = errors(NSP_ERR_INTERIOR);
            free((char *)p + offs[j]);
            ck_assert_msg(errors(NSP_ERR_INTERIOR) == before + 1,
                          "class of %llu B: a free at offset %llu of a live object was not "
                          "reported as an interior pointer", (unsigned long long)e,
                          (unsigned long long)offs[j]);
            ck_assert_int_eq(alloc_bit((uintptr_t)p), 1);
        }
        uint64_t before = errors(NSP_ERR_INTERIOR) + errors(NSP_ERR_DOUBLE_FREE);
        free(p);
        free(keep);
        ck_assert_uint_eq(errors(NSP_ERR_INTERIOR) + errors(NSP_ERR_DOUBLE_FREE), before);
    }
}
END_TEST

/* A push at the list's bound misses, and the locked free that takes it folds the bin (so the
 * cover lowers the charge). The bin must be attached again before that free returns: left
 * detached, every free of the class on this cpu went the locked way, and the next malloc the
 * slow one, until that malloc attached it (issue 11: Larson at 2 threads lost 6% to it). */
START_TEST(a_bound_miss_leaves_the_bin_attached)
{
    if (!ready("a_bound_miss_leaves_the_bin_attached"))
        return;
    cls = nsp__size_to_class(SZ_LAZY);
    enum { N = 90 };
    void *held[N];
    held[0] = malloc(SZ_LAZY);
    struct nsp_span *s = span();
    struct nsp_cache *c = nsp__tb;
    uint32_t most = 4096 / s->elemsize > 4 ? 4096 / s->elemsize : 4;
    unsigned n = 1;
    while (n < N && n + 1 < s->nelems && (held[n] = malloc(SZ_LAZY)) &&
           nsp__span_of(held[n]) == s)
        n++;
    ck_assert_msg(n == N, "class of %u B: only %u objects from one span of %u", s->elemsize, n,
                  s->nelems);
    ck_assert_uint_gt(N, 8 * most + 16); /* the frees pass the bound */
    for (unsigned i = 0; i < N; i++)
        free(held[i]);
    uint64_t key = atomic_load_explicit(&c->bins[cls].key, memory_order_relaxed);
    uint32_t slots = s->alloc_count;
    uint64_t fills = c->bin_fills;
    void *p = malloc(SZ_LAZY); /* a pop: the slow path would attach (bin_fills + 1) */
    uint64_t fills_after = c->bin_fills;
    int same = span() == s && nsp__span_of(p) == s;
    free(p);
    ck_assert_int_eq(same, 1);
    ck_assert_msg(key != 0, "%u local frees of %u B passed the bin's bound (%u): the bin was "
                  "left detached after the bound miss", N, s->elemsize, 8 * most);
    ck_assert_msg(fills_after == fills, "the malloc after a bound miss went the slow way");
    ck_assert_uint_le(slots, 8 * most); /* the bound holds with the bin attached again */
}
END_TEST

/* The pop has no check of its 16-bit count: pops are kept below NSP_BIN_POPS by the push's
 * re-derivation of its credit, which misses once pops reach NSP_BIN_POPS_FOLD, so that the slow
 * path folds them into the span's count (cache.h). A steady state of pairs far past 2^16 on one
 * bin must leave the span's count of allocations exact: a count that wrapped would lose 65536. */
START_TEST(pops_past_their_16_bits_are_counted)
{
    if (!ready("pops_past_their_16_bits_are_counted"))
        return;
    cls = nsp__size_to_class(SZ_LAZY);
    void *first = malloc(SZ_LAZY); /* attaches the bin */
    struct nsp_span *s = span();
    struct nsp_cache *c = nsp__tb;
    ck_assert_int_eq(nsp__cache_lock_foreign(c), 1); /* folds: the span's counts exact */
    nsp__cache_unlock(c);
    uint32_t before = s->nmalloc;
    enum { PAIRS = 150000 };
    unsigned other = 0;
    for (unsigned i = 0; i < PAIRS; i++) {
        void *p = malloc(SZ_LAZY);
        other += nsp__span_of(p) != s;
        free(p);
    }
    ck_assert_int_eq(nsp__cache_lock_foreign(c), 1);
    nsp__cache_unlock(c);
    uint32_t after = s->nmalloc;
    int same = span() == s;
    free(first);
    ck_assert_int_eq(same, 1);
    ck_assert_uint_eq(other, 0);
    ck_assert_msg(after - before == PAIRS, "%u pairs on one bin, %u allocations counted in its "
                  "span", (unsigned)PAIRS, after - before);
}
END_TEST

/* A fold's slots come before fresh ones (first fit, host/span.h: the fold moves the span's cursor
 * down to the lowest slot it gives back): the next attach lists a freed low slot, not the
 * fresh slots past the cursor. Before, the carve took the cursor's word first (fresh slots past
 * the frontier) and a folded slot waited for the cursor to pass the span's end: under churn
 * every cached span was touched to its end (Larson's peak RSS grew with the run, README). */
START_TEST(a_fold_gives_its_slots_back_before_fresh_ones)
{
    if (!ready("a_fold_gives_its_slots_back_before_fresh_ones"))
        return;
    cls = nsp__size_to_class(SZ_LAZY);
    enum { N = 140 }; /* past two words of the bitmap: the cursor in the third */
    static void *p[N];
    for (int i = 0; i < N; i++)
        p[i] = malloc(SZ_LAZY);
    struct nsp_span *s = span();
    for (int i = 0; i < N; i++)
        ck_assert_ptr_eq(nsp__span_of(p[i]), s);
    uint32_t low = UINT32_MAX;
    int lowest = 0;
    for (int i = 0; i < N; i++) {
        uint32_t idx = nsp__span_index(s, (uintptr_t)p[i]);
        if (idx < low)
            low = idx, lowest = i;
    }
    ck_assert_uint_lt(low, 64);
    ck_assert_uint_ge(s->frontier, 128);
    free(p[lowest]); /* pushed */
    ck_assert_int_eq(nsp__cache_lock_foreign(nsp__tb), 1); /* detach and fold: free in s */
    nsp__cache_unlock(nsp__tb);
    ck_assert_int_eq(alloc_bit((uintptr_t)p[lowest]), 0);
    void *q = malloc(SZ_LAZY); /* the attach: the lowest free slot first */
    ck_assert_ptr_eq(q, p[lowest]);
    p[lowest] = q;
    for (int i = 0; i < N; i++)
        free(p[i]);
}
END_TEST

/* The span of the n objects p (all of the bin's span, checked), and at[idx], the object of each
 * slot index below n, or -1. */
static struct nsp_span *map_slots(void *const *p, int n, int *at)
{
    struct nsp_span *s = span();
    for (int i = 0; i < n; i++)
        at[i] = -1;
    for (int i = 0; i < n; i++) {
        ck_assert_ptr_eq(nsp__span_of(p[i]), s);
        uint32_t idx = nsp__span_index(s, (uintptr_t)p[i]);
        if (idx < (uint32_t)n)
            at[idx] = i;
    }
    return s;
}

/* low freed on cpu other and applied (its freed bit set, the span dirty: the other cache taken,
 * which flushes its slab or magazine), then a and b freed here (pushed) and folded back into
 * the span by a take of our cache: the state both frontier cases start from. */
static void free_low_then_fold(int other, void *low, void *a, void *b)
{
    free_on_cpu(other, low);
    struct nsp_cache *oc = &nsp__caches[nsp__topo->cpu_to_cache[other]];
    ck_assert_int_eq(nsp__cache_lock_foreign(oc), 1);
    nsp__cache_unlock(oc);
    free(a);
    free(b);
    ck_assert_int_eq(nsp__cache_lock_foreign(nsp__tb), 1);
    nsp__cache_unlock(nsp__tb);
}

/* Whether the process has made a span of class cls yet (a cache's, or its centrals' partial or
 * full ones). The two carve cases below are built on the class's first span: a fresh process
 * (Check's fork) has none, but under CK_FORK=no the cases of SZ_LAZY above leave theirs, and the
 * carve cases skip there, saying so (in fork mode their assertions judge them). */
static int class_fresh(const char *name)
{
    nsp_class_stats_t cs;
    uint64_t spans = 0;
    for (unsigned n = 0; nsp_stats_get_class_node(n, cls, &cs) == 0; n++)
        spans += cs.spans_cached + cs.spans_partial + cs.spans_full;
    if (spans && !nsp_check_forks())
        fprintf(stderr, "%s: skipped: CK_FORK=no, and the cases before it left %lu span(s) of "
                        "class %u B\n", name, (unsigned long)spans, nsp__classes[cls].size);
    return !spans || nsp_check_forks();
}

/* A carve that runs from slots handed out before into fresh ones sweeps the span's remote frees
 * in first (cache.c, sweep_before_fresh, called at each step of bin_attach): the remote free of a
 * low slot is listed before any slot past the frontier. The refill itself does not sweep here (two
 * slots freed by a fold lie ahead of the cursor); without the carve's own check its fresh slots
 * came before the freed one, and the frontier moved on while a freed slot waited. */
START_TEST(a_carve_into_fresh_slots_sweeps_remote_frees_first)
{
    int other = ready_with_another_cpu("a_carve_into_fresh_slots_sweeps_remote_frees_first");
    if (other < 0)
        return;
    cls = nsp__size_to_class(SZ_LAZY);
    if (!class_fresh("a_carve_into_fresh_slots_sweeps_remote_frees_first"))
        return;
    enum { N = 140 };
    static void *p[N];
    for (int i = 0; i < N; i++)
        p[i] = malloc(SZ_LAZY);
    int at[N]; /* the object of each slot index below N, or -1 */
    struct nsp_span *s = map_slots(p, N, at);
    ck_assert_int_ge(at[5], 0);
    ck_assert_int_ge(at[100], 0);
    ck_assert_int_ge(at[101], 0);
    ck_assert_int_ge(at[102], 0); /* and allocated up to the frontier, so the carve runs past it */
    uint32_t front = s->frontier;
    ck_assert_uint_ge(front, 128);
    for (uint32_t k = 102; k < front; k++)
        ck_assert_int_eq(alloc_bit(s->base + (uintptr_t)k * s->elemsize), 1);
    void *low = p[at[5]];
    free_low_then_fold(other, low, p[at[100]], p[at[101]]); /* 100 and 101 free in s */
    ck_assert_int_eq(alloc_bit((uintptr_t)p[at[100]]), 0);
    ck_assert_int_eq(alloc_bit((uintptr_t)low), 1); /* not swept yet */
    void *q = malloc(SZ_LAZY); /* the refill: slot 100; the attach: 101, then the sweep, slot 5 */
    ck_assert_ptr_eq(q, p[at[100]]);
    uintptr_t l[MAXL];
    unsigned n = list(l), listed = 0;
    for (unsigned i = 0; i < n; i++)
        listed += l[i] == (uintptr_t)low;
    ck_assert_uint_eq(listed, 1);
    ck_assert_int_eq(alloc_bit((uintptr_t)low), 1); /* listed: allocated from the span's view */
    ck_assert_uint_eq(atomic_load(&s->freed_bits[0]), 0);
    p[at[100]] = q;
    p[at[5]] = malloc(SZ_LAZY); /* the slots freed above, taken again (the list's 101 and 5) */
    p[at[101]] = malloc(SZ_LAZY);
    for (int i = 0; i < N; i++)
        free(p[i]);
}
END_TEST

/* ... and so does a carve whose cursor's word runs from slots handed out before into fresh ones
 * within one word: the carve stops at the frontier, and the next step sweeps before it goes on
 * (cache.c, bin_attach). Here slots 130 and 131 are folded back with the frontier at 140, in
 * the same bitmap word: the refill takes 130 and the attach 131, and the rest of its list must
 * be slot 5 (freed remotely) before any slot past 140. Without the stop, one nsp__span_carve
 * took 131 and 140-144 at once, so the frontier moved on while slot 5's freed bit waited (and,
 * pass after pass, a producer's span was touched towards its end: the RSS the sweep guards). */
START_TEST(a_carve_stops_at_the_frontier_while_remote_frees_wait)
{
    int other = ready_with_another_cpu("a_carve_stops_at_the_frontier_while_remote_frees_wait");
    if (other < 0)
        return;
    cls = nsp__size_to_class(SZ_LAZY);
    if (!class_fresh("a_carve_stops_at_the_frontier_while_remote_frees_wait"))
        return;
    enum { N = 140 }; /* 20 refills of 1 + 6 (4 KiB of 640 B): the list empty, the frontier 140 */
    static void *p[N];
    for (int i = 0; i < N; i++)
        p[i] = malloc(SZ_LAZY);
    int at[N]; /* the object of each slot index below N, or -1 */
    struct nsp_span *s = map_slots(p, N, at);
    uint32_t front = s->frontier;
    if (front != N || at[5] < 0 || at[130] < 0 || at[131] < 0) {
        /* the carve's size or the class's first span differ from what this case was built on:
         * it says so rather than pass on another layout */
        ck_abort_msg("layout: frontier %u (want %d), slots 5/130/131 held: %d %d %d", front, N,
                     at[5] >= 0, at[130] >= 0, at[131] >= 0);
    }
    for (uint32_t k = 0; k < front; k++)
        ck_assert_int_eq(alloc_bit(s->base + (uintptr_t)k * s->elemsize), 1);
    void *low = p[at[5]];
    free_low_then_fold(other, low, p[at[130]], p[at[131]]); /* 130 and 131 free in s */
    ck_assert_int_eq(alloc_bit((uintptr_t)p[at[130]]), 0);
    ck_assert_int_eq(alloc_bit((uintptr_t)low), 1); /* not swept yet */
    ck_assert_uint_eq(s->frontier, front);
    void *q = malloc(SZ_LAZY); /* the refill: slot 130; the attach: 131, then the sweep, 5 */
    ck_assert_ptr_eq(q, p[at[130]]);
    uintptr_t l[MAXL];
    unsigned n = list(l), listed = 0, fresh_before = 0;
    for (unsigned i = 0; i < n && !listed; i++) {
        listed += l[i] == (uintptr_t)low;
        fresh_before += nsp__span_index(s, l[i]) >= front;
    }
    ck_assert_msg(listed == 1 && fresh_before == 0,
                  "slot 5 (freed remotely) %s, after %u fresh slots; frontier %u -> %u, %u freed "
                  "bits waiting", listed ? "listed" : "not listed", fresh_before, front,
                  s->frontier, (unsigned)__builtin_popcountll(atomic_load(&s->freed_bits[0])));
    ck_assert_uint_eq(atomic_load(&s->freed_bits[0]), 0);
    p[at[130]] = q;
    void *r[MAXL];
    for (unsigned i = 0; i < n; i++) /* the list's objects, taken back: 131, 5 and the rest */
        r[i] = malloc(SZ_LAZY);
    for (int i = 0; i < N; i++)
        if (i != at[5] && i != at[131])
            free(p[i]);
    for (unsigned i = 0; i < n; i++)
        free(r[i]);
}
END_TEST

/* ---- the refill without the lock (cache.c: nsp__cache_alloc_bin) ------------------------------- */

static struct nsp_cache *busy_cache; /* taken by the window below, given back by the test */
static int window_calls;

/* Between the refill's central work and its re-take: another thread takes the cache (here a
 * foreign taker, the test itself), so the re-take finds it busy. Once. */
static void take_cache_in_window(struct nsp_cache *c)
{
    window_calls++;
    atomic_store(&nsp__test_refill_window, NULL);
    if (nsp__cache_lock_foreign(c))
        busy_cache = c;
}

/* ... and so does a refill's first object (cache.c, nsp__cache_alloc_bin's install): a span
 * taken from the central was swept there, but a remote free may land on it before it is
 * installed (the window between the central's work and the re-take), and its first object was
 * handed out from the rewound cursor with no look at `dirty`: a fresh slot, the frontier moving
 * on while the freed slot waited. Here the class's one span holds the program's objects in every
 * slot below its frontier; a cycle sends it to its central, the next malloc takes it back, and
 * in the window one of its low objects is freed (the magazine applied: its freed bit set, the
 * span dirty). The malloc must return that object, not the slot at the frontier. */
static void *freed_in_window;

static void free_in_window(struct nsp_cache *c)
{
    window_calls++;
    atomic_store(&nsp__test_refill_window, NULL);
    free(freed_in_window); /* remote (the span is in no spans[]): into the cpu's magazine */
    ck_assert_int_eq(nsp__cache_lock_foreign(c), 1); /* the magazine applied: s dirty */
    nsp__cache_unlock(c);
}

START_TEST(a_refills_first_object_sweeps_remote_frees_first)
{
    if (!ready("a_refills_first_object_sweeps_remote_frees_first"))
        return;
    cls = nsp__size_to_class(SZ_FIRST); /* its class's first span: nothing else in it */
    free(malloc(SZ_FIRST));
    enum { N = 64 };
    static void *held[N];
    unsigned n = 0;
    uintptr_t l[MAXL];
    /* the span's objects until the bin's list is empty with at least 8 handed out: every slot
     * below the frontier is then the program's */
    do {
        held[n] = malloc(SZ_FIRST);
        ck_assert_ptr_nonnull(held[n]);
        n++;
    } while (n < N && (n < 8 || list(l) > 0));
    struct nsp_span *s = span();
    uint32_t front = s->frontier;
    if (list(l) != 0 || front != n || front + s->nelems / 8 > s->nelems) {
        /* the carve's size or the class's span differ from what this case was built on */
        ck_abort_msg("layout: %u objects, frontier %u of %u slots, %u listed", n, front,
                     s->nelems, list(l));
    }
    for (uint32_t k = 0; k < front; k++)
        ck_assert_int_eq(alloc_bit(s->base + (uintptr_t)k * s->elemsize), 1);
    void *low = NULL;
    for (unsigned i = 0; i < n; i++)
        if (nsp__span_index(s, (uintptr_t)held[i]) == 5)
            low = held[i];
    ck_assert_ptr_nonnull(low);
    nsp_pacer_cycle(); /* the cache's spans go back to their central at its next malloc */
    freed_in_window = low;
    window_calls = 0;
    atomic_store(&nsp__test_refill_window, free_in_window);
    void *q = malloc(SZ_FIRST);
    atomic_store(&nsp__test_refill_window, NULL);
    ck_assert_int_eq(window_calls, 1);
    if (span() != s) /* another span refilled: not the case this was built on */
        ck_abort_msg("layout: the refill took span %p, not %p", (void *)span(), (void *)s);
    ck_assert_msg(q == low, "the refill handed out slot %u (frontier %u -> %u) while slot 5 "
                  "(freed remotely) waited: %u freed bits", nsp__span_index(s, (uintptr_t)q),
                  front, s->frontier,
                  (unsigned)__builtin_popcountll(atomic_load(&s->freed_bits[0])));
    ck_assert_uint_eq(atomic_load(&s->freed_bits[0]), 0); /* (the attach then carves on) */
    for (unsigned i = 0; i < n; i++)
        if (held[i] != low)
            free(held[i]);
    free(q);
}
END_TEST

/* The same window, where a cycle runs instead (it takes and flushes the free cache): the re-take
 * succeeds, but a span taken before the cycle is not installed after it. */
static void cycle_in_window(struct nsp_cache *c)
{
    (void)c;
    window_calls++;
    atomic_store(&nsp__test_refill_window, NULL);
    nsp_pacer_cycle();
}

/* Allocates (at most max objects of SZ, written) until the cached span is full and a refill runs
 * window, once; returns how many it allocated. */
static unsigned malloc_until_window(void (*window)(struct nsp_cache *), void **held, unsigned max)
{
    unsigned n = 0;
    window_calls = 0;
    atomic_store(&nsp__test_refill_window, window);
    while (n < max && !window_calls) {
        held[n] = malloc(SZ);
        ck_assert_ptr_nonnull(held[n]);
        memset(held[n], 0x5a, SZ);
        n++;
    }
    atomic_store(&nsp__test_refill_window, NULL);
    ck_assert_int_eq(window_calls, 1);
    return n;
}

/* Objects of class cls in use and spans of cls cached, on every node, as the stats count them. */
static void class_counts(uint64_t *objects, uint64_t *cached)
{
    nsp_class_stats_t cs;
    unsigned n = 0;
    *objects = *cached = 0;
    for (; nsp_stats_get_class_node(n, cls, &cs) == 0; n++) { /* -1 past the last node */
        *objects += cs.objects_in_use;
        *cached += cs.spans_cached;
    }
    ck_assert_uint_gt(n, 0);
}

/* A refill whose re-take finds the cache busy: the new span is not installed and not lost (back
 * in its central, not left CACHED with no cache holding it), the malloc is served all the same
 * (by the node's transfer), and after the transfer is given back the counts are exact: the
 * objects the program holds, one span cached, the ledger equal to the sum of the charges.
 * The objects are counted from what the class held before the case, at rest (0 in a fresh
 * process; under CK_FORK=no the cases before it may have left some). */
static void refill_window_case(const char *name, void (*window)(struct nsp_cache *))
{
    if (!ready(name))
        return;
    uint64_t before, cached;
    nsp_trim(); /* at rest: the magazines applied, the caches folded */
    class_counts(&before, &cached);
    if (nsp_check_forks()) /* a fresh process: what the counts were checked against before */
        ck_assert_uint_eq(before, 0);
    attach();
    enum { N = 64 };
    void *held[N];
    uint64_t lost = atomic_load(&nsp__cache_refill_lost);
    busy_cache = NULL;
    unsigned n = malloc_until_window(window, held, N);
    if (window == take_cache_in_window) {
        ck_assert_ptr_nonnull(busy_cache); /* taken in the window: the re-take found it busy */
        nsp__cache_unlock(busy_cache);
    }
    uint64_t lost_now = atomic_load(&nsp__cache_refill_lost);
    ck_assert_uint_eq(lost_now, lost + 1); /* built, not installed */
    for (unsigned i = 0; i + 1 < n; i++)
        ck_assert_ptr_ne(held[i], held[n - 1]); /* served once */
    nsp_trim(); /* the transfer's waiting objects go back, the caches are folded */
    uint64_t objects;
    class_counts(&objects, &cached);
    ck_assert_uint_eq(objects, before + n);
    ck_assert_uint_eq(cached, 0); /* trimmed: none cached, the lost refill's span included */
    char why[256] = "";
    ck_assert_msg(nsp_heap_check(why, sizeof why) == 0, "heap check: %s", why);
    unsigned bad;
    int64_t ledger, charges;
    ck_assert_int_eq(nsp_ledger_recount(&bad, &ledger, &charges), 0);
    for (unsigned i = 0; i < n; i++)
        free(held[i]);
    nsp_trim(); /* the remote frees waiting in the magazine are applied */
    class_counts(&objects, &cached);
    ck_assert_uint_eq(objects, before);
}

/* The same window, where the thread is moved to another cpu (as the scheduler may do there): the
 * re-take by the sequence is bound to the cache's cpu, so it fails, and the span is not installed
 * into a cache the thread no longer runs on (a cas there would race that cpu's sequences). */
static int other_cpu = -1;

static void migrate_in_window(struct nsp_cache *c)
{
    window_calls++;
    atomic_store(&nsp__test_refill_window, NULL);
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(other_cpu, &one);
    ck_assert_int_eq(sched_setaffinity(0, sizeof one, &one), 0);
    ck_assert_int_ne(sched_getcpu(), c->rseq_cpu);
}

START_TEST(refill_busy_at_the_retake_loses_no_span)
{
    refill_window_case("refill_busy_at_the_retake_loses_no_span", take_cache_in_window);
}
END_TEST

START_TEST(refill_after_a_migration_is_not_installed)
{
    cpu_set_t allowed;
    ck_assert_int_eq(sched_getaffinity(0, sizeof allowed, &allowed), 0);
    other_cpu = cpu_other_than(&allowed, sched_getcpu());
    if (other_cpu < 0) {
        fprintf(stderr, "refill_after_a_migration_is_not_installed: skipped: one cpu allowed, "
                        "nowhere to move the thread\n");
        return;
    }
    refill_window_case("refill_after_a_migration_is_not_installed", migrate_in_window);
    sched_setaffinity(0, sizeof allowed, &allowed);
}
END_TEST

START_TEST(refill_across_a_cycle_is_not_installed)
{
    refill_window_case("refill_across_a_cycle_is_not_installed", cycle_in_window);
}
END_TEST


/* Bytes the caches hold, summed (each cache's held_bytes): what nsp__cached_total must read when
 * no refill is in flight. */
static size_t held_sum(void)
{
    size_t held = 0;
    for (unsigned i = 0; i < nsp__ncaches; i++)
        held += nsp__caches[i].held_bytes;
    return held;
}

static pid_t window_child;

/* The refill's window, where another thread of the program forks: the child has no refilling
 * thread, so nobody there will ever install the reserved span or give its reservation back. The
 * child checks, before anything else runs there, that the total reads what its caches hold. */
static void fork_in_window(struct nsp_cache *c)
{
    (void)c;
    window_calls++;
    atomic_store(&nsp__test_refill_window, NULL);
    pid_t pid = fork();
    if (pid == 0) {
        size_t total = atomic_load(&nsp__cached_total), held = held_sum();
        if (total != held)
            fprintf(stderr, "child: nsp__cached_total %zu, the caches hold %zu\n", total, held);
        _exit(total == held ? 0 : 1);
    }
    window_child = pid;
}

/* fork while a refill is between its central work and its re-take: in the child the reservation
 * of that refill must not stay in nsp__cached_total for ever (it would count against the caches'
 * total cap and show in the stats' cached bytes as a span nobody caches); in the parent the refill
 * goes on and the total is exact at rest. */
START_TEST(fork_in_the_refill_window_leaves_the_child_total_exact)
{
    if (!ready("fork_in_the_refill_window_leaves_the_child_total_exact"))
        return;
    attach();
    enum { N = 64 };
    void *held[N];
    window_child = -1;
    unsigned n = malloc_until_window(fork_in_window, held, N);
    ck_assert_int_gt(window_child, 0);
    int status = 0;
    ck_assert_int_eq(waitpid(window_child, &status, 0), window_child);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "the child's nsp__cached_total is not what its caches hold (status %d)", status);
    ck_assert_uint_eq(atomic_load(&nsp__cached_total), held_sum()); /* the parent, at rest */
    for (unsigned i = 0; i < n; i++)
        free(held[i]);
}
END_TEST

#endif /* NSP_RSEQ_LOCKS */

START_TEST(bins_are_built_here)
{
#ifndef NSP_RSEQ_LOCKS
    fprintf(stderr, "test_bins: skipped: this build has no rseq sequences (TSan, not x86-64, or "
                    "no rseq in glibc): the locked path is covered by the other suites\n");
#endif
}
END_TEST

#ifdef NSP_RSEQ_LOCKS
/* The real sequences' aborts, not the model's: nsp_malloc's pop and nsp_free's push leave by asm
 * goto to the caller's own labels (244bcaa), and their outputs are valid on the fall-through only,
 * so an abort must retry and never use what the aborted pop had loaded. A thread mallocs and frees
 * objects of several classes, each filled with its own address and checked before its free,
 * while another thread sends it signals: a signal (or the preemption before it) that meets a
 * sequence aborts it, and the handler sees the abort handler's address (4 bytes of glibc's
 * signature before it, a jump back into nsp_malloc or nsp_free there). The case runs until each
 * fast path was seen aborted WANT times, bounded by a count of operations, never by time (short
 * of them it says so and passes). What it catches: an abort that hands out the head the aborted
 * pop loaded, or anything an abort leaves that gives an object twice (the fill check; seen red
 * with the pop's abort jumping to its commit's end). It does not see a push lost to an abort
 * (a leak, not an overlap). */
static _Atomic unsigned long aborts_malloc, aborts_free;
static _Atomic int storm_on;

/* Whether the jump at ip goes into fn: the nearer of nsp_malloc's and nsp_free's starts below its
 * target (the two lie side by side, a window from one would take in the other). */
static int jumps_into(const unsigned char *ip, void (*fn)(void))
{
    if (ip[0] != 0xe9)
        return 0;
    int32_t rel;
    memcpy(&rel, ip + 1, 4);
    uintptr_t to = (uintptr_t)(ip + 5 + rel), f = (uintptr_t)fn;
    uintptr_t m = (uintptr_t)(void (*)(void))nsp_malloc, fr = (uintptr_t)(void (*)(void))nsp_free;
    uintptr_t other = f == m ? fr : m;
    return to >= f && to - f < 512 && !(other > f && to >= other);
}

static void on_storm_signal(int sig, siginfo_t *si, void *ctx)
{
    (void)sig;
    (void)si;
    const ucontext_t *uc = ctx;
    const unsigned char *ip = (const unsigned char *)uc->uc_mcontext.gregs[REG_RIP];
    uint32_t sig4;
    memcpy(&sig4, ip - 4, 4);
    if (sig4 != 0x53053053)
        return;
    if (jumps_into(ip, (void (*)(void))nsp_malloc))
        atomic_fetch_add(&aborts_malloc, 1);
    else if (jumps_into(ip, (void (*)(void))nsp_free))
        atomic_fetch_add(&aborts_free, 1);
}

static void *storm(void *arg)
{
    pthread_t target = *(pthread_t *)arg;
    cpu_set_t all; /* not the pinned thread's cpu only: a signal then meets it running */
    CPU_ZERO(&all);
    for (int i = 0; i < CPU_SETSIZE; i++)
        CPU_SET(i, &all);
    sched_setaffinity(0, sizeof all, &all);
    while (atomic_load(&storm_on)) {
        pthread_kill(target, SIGUSR2);
        for (volatile int i = 0; i < 20000; i++)
            ;
    }
    return NULL;
}

START_TEST(aborted_fast_paths_retry_and_hand_nothing_out_twice)
{
    if (!ready("aborted_fast_paths_retry_and_hand_nothing_out_twice"))
        return;
#if defined(__SANITIZE_ADDRESS__)
    fprintf(stderr, "aborted_fast_paths_retry_and_hand_nothing_out_twice: skipped: ASan's "
            "instrumentation slows every operation past the suite's timeout (the plain build runs "
            "it)\n");
    return;
#endif
    struct sigaction sa = {0}, old;
    sa.sa_sigaction = on_storm_signal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(sigaction(SIGUSR2, &sa, &old), 0);
    enum { LIVE = 512, WANT = 20 };
    static const size_t sizes[] = {16, 48, 256, 1024};
    static uint64_t *live[LIVE];
    static size_t lsize[LIVE];
    pthread_t self = pthread_self(), t;
    atomic_store(&storm_on, 1);
    ck_assert_int_eq(pthread_create(&t, NULL, storm, &self), 0);
    unsigned long op = 0, rnd = 88172645463325252ULL, bad = 0, nulls = 0;
    const unsigned long most = 8000000;
    for (; op < most && (atomic_load(&aborts_malloc) < WANT || atomic_load(&aborts_free) < WANT);
         op++) {
        rnd ^= rnd << 13, rnd ^= rnd >> 7, rnd ^= rnd << 17;
        unsigned i = rnd % LIVE;
        if (live[i]) {
            for (size_t w = 0; w < lsize[i] / 8; w++)
                bad += live[i][w] != (uint64_t)(uintptr_t)live[i];
            nsp_free(live[i]);
        }
        size_t n = sizes[(rnd >> 20) % (sizeof sizes / sizeof sizes[0])];
        /* no Check assertion in the loop: in fork mode each records its place with the runner,
         * and one per operation (8 million when the storm's aborts come slowly, as on a loaded
         * machine) was 20 s of cpu, past the case's 100 s timeout there */
        uint64_t *p = nsp_malloc(n);
        live[i] = p;
        lsize[i] = n;
        if (!p) {
            nulls++;
            break;
        }
        for (size_t w = 0; w < n / 8; w++)
            p[w] = (uint64_t)(uintptr_t)p;
        if (bad)
            break;
    }
    atomic_store(&storm_on, 0);
    pthread_join(t, NULL);
    sigaction(SIGUSR2, &old, NULL);
    ck_assert_msg(nulls == 0, "nsp_malloc returned NULL after %lu operations", op);
    for (unsigned i = 0; i < LIVE; i++)
        if (live[i]) {
            for (size_t w = 0; w < lsize[i] / 8; w++)
                bad += live[i][w] != (uint64_t)(uintptr_t)live[i];
            nsp_free(live[i]);
            live[i] = NULL;
        }
    ck_assert_msg(bad == 0, "%lu words of live objects overwritten after %lu operations (%lu "
                  "malloc and %lu free aborts): an object handed out twice", bad, op,
                  atomic_load(&aborts_malloc), atomic_load(&aborts_free));
    if (atomic_load(&aborts_malloc) < WANT || atomic_load(&aborts_free) < WANT)
        fprintf(stderr, "aborted_fast_paths_retry_and_hand_nothing_out_twice: skipped: only %lu "
                "malloc and %lu free aborts seen in %lu operations\n",
                atomic_load(&aborts_malloc), atomic_load(&aborts_free), op);
    else
        fprintf(stderr, "aborted_fast_paths: %lu malloc and %lu free aborts in %lu operations\n",
                atomic_load(&aborts_malloc), atomic_load(&aborts_free), op);
}
END_TEST
#endif /* NSP_RSEQ_LOCKS */

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
    Suite *s = suite_create("bins");
    TCase *tc = tcase_create("protocol");
    if (sched_getaffinity(0, sizeof suite_cpus, &suite_cpus) == 0)
        tcase_add_checked_fixture(tc, NULL, unpin);
    /* a bound for a hang, not Check's 4 s default: cases with threads on other cpus ran
     * past it beside a loaded ctest -j2 (test_bins' remote free, in its pthread_join) */
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, bins_are_built_here);
#ifdef NSP_RSEQ_LOCKS
    tcase_add_test(tc, model_matches_the_sequences);
    tcase_add_test(tc, pop_preempted_at_every_step);
    tcase_add_test(tc, push_preempted_at_every_step);
    tcase_add_test(tc, pop_detached_at_every_step);
    tcase_add_test(tc, push_detached_at_every_step);
    tcase_add_test(tc, local_double_free_in_the_list_is_caught);
    tcase_add_test(tc, remote_double_free_of_a_listed_object_is_caught);
    tcase_add_test(tc, every_listed_word_carries_the_keys_top_bits);
    tcase_add_test(tc, remote_free_after_an_aborted_push_is_valid);
    tcase_add_test(tc, local_double_free_after_a_remote_free_is_caught);
    tcase_add_test(tc, local_double_free_after_a_direct_remote_free_is_caught);
    tcase_add_test(tc, free_of_a_slot_not_allocated_is_caught);
    tcase_add_test(tc, free_of_a_slot_never_handed_out_is_caught);
    tcase_add_test(tc, double_free_after_a_write_after_free_hands_nothing_out_twice);
    tcase_add_test(tc, stray_write_into_a_free_object_is_caught);
    tcase_add_test(tc, free_slots_below_the_frontier_carry_the_tag);
    tcase_add_test(tc, a_free_slot_written_over_is_not_handed_out);
    tcase_add_test(tc, lock_free_reading_at_rest_sees_the_bins);
    tcase_add_test(tc, a_bin_lists_a_few_kib_at_a_time);
    tcase_add_test(tc, a_bin_lists_at_most_a_few_carves);
    tcase_add_test(tc, a_local_free_of_an_interior_pointer_is_refused_and_reported);
    tcase_add_test(tc, a_bound_miss_leaves_the_bin_attached);
    tcase_add_test(tc, pops_past_their_16_bits_are_counted);
    tcase_add_test(tc, a_fold_gives_its_slots_back_before_fresh_ones);
    tcase_add_test(tc, a_carve_into_fresh_slots_sweeps_remote_frees_first);
    tcase_add_test(tc, a_carve_stops_at_the_frontier_while_remote_frees_wait);
    tcase_add_test(tc, a_refills_first_object_sweeps_remote_frees_first);
    tcase_add_test(tc, refill_busy_at_the_retake_loses_no_span);
    tcase_add_test(tc, refill_across_a_cycle_is_not_installed);
    tcase_add_test(tc, refill_after_a_migration_is_not_installed);
    tcase_add_test(tc, fork_in_the_refill_window_leaves_the_child_total_exact);
#endif
    suite_add_tcase(s, tc);
#ifdef NSP_RSEQ_LOCKS
    /* by count of operations, not time: Check's 4 s would cut it short on a loaded machine */
    TCase *ta = tcase_create("aborts");
    tcase_set_timeout(ta, 100);
    tcase_add_test(ta, aborted_fast_paths_retry_and_hand_nothing_out_twice);
    suite_add_tcase(s, ta);
#endif
    return nsp_run_suite(s);
}
