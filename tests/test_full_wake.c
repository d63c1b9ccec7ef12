/*
 * tests/test_full_wake.c — a remote free that pushes onto the empty remote-free list of a span its
 * central holds as FULL wakes the span (FULL -> PARTIAL, into the partial list), so that its
 * object is handed out again; as a deterministic interleaving of the two threads.
 *
 * The path (host/free.c, nsp__free_classed -> nsp__span_xfree_push_begin -> classed_pushed): a
 * free on another cpu of an object of a span some cache holds reads the span CACHED and pushes the
 * object onto the span's list (span.h). Between that read and the push's CAS the owner may give
 * the span back full; its central then holds it as FULL (central.c, make_full: the list empty,
 * `dirty` clear). The push onto the empty list marks the span dirty, reads it FULL and wakes it
 * (nsp__central_wake). Without the wake the span stays in the full list, which no refill looks at,
 * with a free slot nobody will hand out until a trim or a reclaim sweeps it: the FULL protocol's
 * stranded free (central.c's file header). Only a stress run met that window before.
 *
 * How the window is held open: the test write-protects the page of the object's first word, so
 * that the freer's store of the list's tag (push_begin's first write, after every check and before
 * the CAS) faults; its SIGSEGV handler waits there while the test's thread, the span's owner, gives
 * the span back full (its next malloc finds no free slot), then lifts the protection and returns,
 * and the store, the CAS and the wake run as they would have.
 *
 * Needs bins (the real machine, rseq) and a second cpu for the freer; NSP_IDLE_RELEASE_MS=0
 * (CTest), so that only the test moves its spans. Skipped elsewhere, saying why.
 */
#define _GNU_SOURCE
#include <check.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "host/cache.h"
#include "host/central.h"
#include "host/pageheap.h"
#include "host/sizeclass.h"
#include "host/span.h"
#include "check_main.h"
#include "numaspan.h"

#ifdef NSP_RSEQ_LOCKS

#define SZ 3000 /* 3 KiB objects: 32 a span of several pages (a remote-free list); nothing else
                 * here uses the class */
#define MAXO 256

static unsigned cls;
static int other = -1;

/* Pins the thread to its cpu and finds another it may run on. 0 (the reason printed) when the case
 * cannot run here. */
static int ready(const char *name)
{
    cpu_set_t all, one;
    if (sched_getaffinity(0, sizeof all, &all) != 0)
        CPU_ZERO(&all);
    int cpu = sched_getcpu();
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0) {
        fprintf(stderr, "%s: skipped: cannot pin the thread to its cpu\n", name);
        return 0;
    }
    cls = nsp__size_to_class(SZ);
    void *p = malloc(SZ);
    int ours = nsp__span_of(p) != NULL;
    free(p);
    if (!ours) {
        fprintf(stderr, "%s: skipped: malloc here is not numaspan's (valgrind's or another "
                        "tool's replaced it)\n", name);
        return 0;
    }
    if (!nsp__tb) {
        fprintf(stderr, "%s: skipped: no bins here (no rseq, virtual cores, NSP_SECURE or exact): "
                        "the free never reads a span CACHED by another cpu's bin\n", name);
        return 0;
    }
    other = -1;
    for (int i = 0; i < CPU_SETSIZE && other < 0; i++)
        if (i != cpu && CPU_ISSET(i, &all))
            other = i;
    if (other < 0) {
        fprintf(stderr, "%s: skipped: one cpu (the remote free needs another)\n", name);
        return 0;
    }
    return 1;
}

/* ---- the freer, held inside its free ----------------------------------------------------------- */

static char *held_page;           /* the page of the object's first word, made read-only */
static size_t page_len;
static _Atomic int faulted, go;   /* the freer is in its handler; the owner is done */

static void sleep_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* The freer's store into held_page: wait (at most 30 s: the owner's thread failed else) for the
 * owner, then lift the protection; the store runs again on return. A fault elsewhere is not the
 * test's: the default action, at the next fault. */
static void on_fault(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    char *a = si->si_addr;
    if (a < held_page || a >= held_page + page_len) {
        signal(sig, SIG_DFL);
        return;
    }
    atomic_store(&faulted, 1);
    for (int ms = 0; !atomic_load(&go) && ms < 30000; ms++)
        sleep_ms(1);
    mprotect(held_page, page_len, PROT_READ | PROT_WRITE);
}

/* On the other cpu: a malloc there (the thread's cache and bins), then the free of p. */
static void *free_there(void *p)
{
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(other, &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0)
        return (void *)1;
    free(malloc(SZ));
    free(p);
    return NULL;
}

static uint32_t state(struct nsp_span *s)
{
    return atomic_load(&s->state);
}

START_TEST(a_push_onto_the_empty_list_of_a_full_span_wakes_it)
{
    const char *name = "a_push_onto_the_empty_list_of_a_full_span_wakes_it";
    if (!ready(name))
        return;
    /* Every slot of the span the bin holds, all ours: allocate until the bin's span is one the
     * program alone filled (the first may hold others' objects). */
    static uintptr_t o[MAXO];
    unsigned n = 0;
    struct nsp_span *s = NULL;
    while (!s) {
        ck_assert_msg(n < MAXO, "no span of the class filled by the test alone in %u objects", n);
        uintptr_t q = (uintptr_t)malloc(SZ);
        ck_assert_uint_ne(q, 0);
        memset((void *)q, 0x5a, SZ); /* the program's data: no tag, no link */
        o[n++] = q;
        struct nsp_span *t = nsp__span_of((void *)q);
        unsigned mine = 0;
        for (unsigned i = 0; i < n; i++)
            mine += nsp__span_of((void *)o[i]) == t;
        if (t == nsp__tb->spans[cls] && mine == t->nelems && t->alloc_count == t->nelems)
            s = t;
    }
    ck_assert_msg(nsp__span_has_xfree(s), "a span of %lu pages, %u B objects: no list",
                  (unsigned long)s->npages,
                  s->elemsize);
    ck_assert_uint_eq(state(s), NSP_SPAN_CACHED);
    ck_assert_uint_eq(nsp__span_xfree_first(s), 0);
    uintptr_t p = o[n - 1];
    struct nsp_central *c = nsp__central(s->node, cls);
    uint64_t wakes = __atomic_load_n(&c->wakes, __ATOMIC_RELAXED);

    page_len = (size_t)sysconf(_SC_PAGESIZE);
    held_page = (char *)(p & ~(uintptr_t)(page_len - 1));
    struct sigaction sa = {.sa_sigaction = on_fault, .sa_flags = SA_SIGINFO}, old;
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(sigaction(SIGSEGV, &sa, &old), 0);
    atomic_store(&faulted, 0);
    atomic_store(&go, 0);
    ck_assert_int_eq(mprotect(held_page, page_len, PROT_READ), 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, free_there, (void *)p), 0);
    for (int ms = 0; !atomic_load(&faulted) && ms < 30000; ms++)
        sleep_ms(1);
    /* the freer read s CACHED by our cache and is inside the push, before its CAS */
    ck_assert_msg(atomic_load(&faulted), "the free on cpu %d never wrote the object (30 s)",
                  other);

    /* the owner gives s back full: its next malloc finds no free slot in it */
    uintptr_t x = (uintptr_t)malloc(SZ);
    ck_assert_uint_ne(x, 0);
    ck_assert_ptr_ne(nsp__tb->spans[cls], s);
    ck_assert_msg(state(s) == NSP_SPAN_FULL && s->list == NSP_LIST_FULL,
                  "the span given back with every slot allocated is not FULL in its central "
                  "(state %u, list %u): the case is moot", state(s), (unsigned)s->list);
    ck_assert_uint_eq(nsp__span_xfree_first(s), 0);

    atomic_store(&go, 1);
    void *rc;
    ck_assert_int_eq(pthread_join(t, &rc), 0);
    ck_assert_int_eq(sigaction(SIGSEGV, &old, NULL), 0);
    ck_assert_ptr_null(rc);

    ck_assert_msg(nsp__span_xfree_first(s) == p,
                  "the free did not push the object onto the span's list (head %#lx)",
                  (unsigned long)nsp__span_xfree_first(s));
    ck_assert_msg(state(s) == NSP_SPAN_PARTIAL && s->list == NSP_LIST_PARTIAL,
                  "the push onto the empty list of a FULL span did not wake it (state %u, list "
                  "%u): its free slot is stranded in the full list",
                  state(s), (unsigned)s->list);
    ck_assert_uint_eq(__atomic_load_n(&c->wakes, __ATOMIC_RELAXED), wakes + 1);

    /* allocatable again: the central sweeps it and hands out its one free slot, the object */
    enum { MAXG = 64 };
    uintptr_t got[MAXG];
    unsigned ng = 0;
    int again = 0;
    while (!again && ng < MAXG) {
        uintptr_t q = (uintptr_t)nsp_malloc_node(SZ, s->node);
        ck_assert_uint_ne(q, 0);
        if (q == p)
            again = 1;
        else
            got[ng++] = q;
    }
    ck_assert_msg(again, "the woken span's free slot %#lx was not handed out in %u allocations",
                  (unsigned long)p, ng);
    for (unsigned i = 0; i < ng; i++)
        free((void *)got[i]);
    free((void *)x);
    for (unsigned i = 0; i < n; i++)
        free((void *)o[i]); /* p among them: handed out again */
}
END_TEST

#endif /* NSP_RSEQ_LOCKS */

START_TEST(bins_are_built_here)
{
#ifndef NSP_RSEQ_LOCKS
    fprintf(stderr, "test_full_wake: skipped: this build has no rseq sequences (TSan, not x86-64, "
                    "or no rseq in glibc): no bins, so no free reads a span CACHED by another "
                    "cpu's bin and pushes onto its list\n");
#endif
}
END_TEST

int main(void)
{
    Suite *s = suite_create("full_wake");
    TCase *tc = tcase_create("wake");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, bins_are_built_here);
#ifdef NSP_RSEQ_LOCKS
    tcase_add_test(tc, a_push_onto_the_empty_list_of_a_full_span_wakes_it);
#endif
    suite_add_tcase(s, tc);
    return nsp_run_suite(s);
}
