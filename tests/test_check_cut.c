/*
 * tests/test_check_cut.c — the heap's checkers (the ledger's recount, the page heap's validator)
 * never see a page-heap cut made without the lock half done (issue 11, the flake of
 * test_host_stress_foreign: "heapLive + pending 21056224 != sum of the charges 20925152", a
 * 128 KiB large object charged but not found by the recount's walk).
 *
 * A thread whose page heap's hold is stuck cuts its span without the lock (pageheap.c,
 * alloc_busy): from a fresh arena of its own, pushed pending for the next holder to link, or from
 * a run pushed pending. A checker holds that lock, so it is the holder such a thread finds stuck:
 * the recount, holding every page heap, sleeps in the ledger's rwlock until a large object's
 * change in flight ends, and a holder asleep outside the allocator's own waits reads as stopped
 * (hold.h). Each test here builds that moment deterministically with the existing hooks (the
 * ledger's, between the two steps of a change; nsp__test_busy_cut, between the steps of an
 * unlocked cut) and asserts what the checker must report: agreement, and a valid heap. The
 * same cut against fork's child (its cutter gone) and against a neighbour's free under the lock
 * (coalescing must not take a span being cut for a free run).
 *
 * Links the static library to reach the hooks; nothing here mallocs while a checker holds the
 * heap (a held cache would make the test's own thread wait for it).
 *
 * The cut under test is made by one thread planned for it (planned_cutter): set up before the
 * heap is held, it cuts when told, and the cut hooks park that thread only. Anything else that
 * allocates while a stuck holder has the heap may cut too, and by the failed runs' stacks and
 * addresses did: the test's own thread (pthread_create mallocs) cut the run freed for the cutter
 * and parked itself in the cutter's hook ("the checker never held node 0's page heap still"); a
 * central trim on the cutter's own malloc path (after a remote free or a cache giving a span
 * back, more often under load) and an idle release (NSP_IDLE_RELEASE_MS: any thread's slow path
 * flushes a cache that looked idle) pushed spans pending above that run, and the cut came from
 * one of them (coalesce_against_cut:
 * 7 of 150 runs beside `ctest -j2`, half of all runs at NSP_IDLE_RELEASE_MS=1). Hence the
 * planned cutter; coalesce_against_cut's cuts from the page heap itself (no central trim, no
 * housekeeping on its path), so that the run it freed stays the only pending span.
 */
#define _GNU_SOURCE
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "host/hold.h"
#include "host/ledger.h"
#include "host/pageheap.h"
#include "host/runtime.h"
#include "check_main.h"
#include "numaspan.h"

static void ready(void)
{
    free(malloc(1)); /* initialises the allocator */
    ck_assert_int_eq(atomic_load(&nsp__ready), 1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Waits (polling, allocating nothing) until *flag is set or `seconds` pass; 1 if it was set. */
static int wait_for(_Atomic int *flag, double seconds)
{
    double t0 = now_s();
    while (!atomic_load(flag) && now_s() - t0 < seconds)
        usleep(500);
    return atomic_load(flag);
}

/* Unlocked cuts that found a checker holding the heap and waited for its lock instead, all nodes
 * (pageheap.h): the sign that the cutter below is parked behind the checker for good. */
static uint64_t checker_waits(void)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < nsp__nnodes; i++)
        n += atomic_load(&nsp__pageheaps[i].busy_checked);
    return n;
}

static void heap_is_valid(void)
{
    char why[512];
    ck_assert_msg(nsp_heap_check(why, sizeof why) == 0, "the heap after the test: %s", why);
}

/* ---- a large object's ledger change stopped half made --------------------------------------- */

/* The changer: a large malloc stopped by the ledger's hook between its two steps, holding its
 * node's ledger lock shared, until changer_go. On node 0: the recount takes the nodes' ledger
 * locks in order, so it then waits at the first and holds none that the cutter's charge needs. */
static _Thread_local int is_changer;
static _Atomic int changer_in, changer_go;

static void stop_changer(void)
{
    if (!is_changer)
        return;
    atomic_store(&changer_in, 1);
    while (!atomic_load(&changer_go))
        usleep(1000);
}

static void *changer(void *arg)
{
    (void)arg;
    is_changer = 1;
    free(nsp_malloc_node(100000, 0));
    return NULL;
}

/* ---- the recount --------------------------------------------------------------------------- */

static _Atomic int recount_tid, recount_done, recount_rc;
static unsigned recount_node;
static int64_t recount_ledger, recount_charges;

static void *recounter(void *arg)
{
    (void)arg;
    atomic_store(&recount_tid, nsp__hold_self());
    int rc = nsp_ledger_recount(&recount_node, &recount_ledger, &recount_charges);
    atomic_store(&recount_rc, rc);
    atomic_store(&recount_done, 1);
    return NULL;
}

/* 1 when the recounter holds every node's page heap (it takes them before the ledger's locks). */
static int recounter_holds_page_heaps(void)
{
    int tid = atomic_load(&recount_tid);
    for (unsigned n = 0; n < nsp__nnodes; n++)
        if (!tid || atomic_load(&nsp__pageheaps[n].hold.tid) != tid)
            return 0;
    return 1;
}

/* ---- the cutter: a large malloc that finds the page heap's hold stuck ---------------------- */

#define CUT_BYTES ((size_t)128 << 10) /* the flake's gap: one 16-page large object */
static _Atomic int cutter_go, cutter_done;
static void *cut_obj;

static void *cutter(void *arg)
{
    (void)arg;
    free(malloc(24)); /* its thread's set-up (a virtual core, a cache) before the heap is held */
    while (!atomic_load(&cutter_go))
        usleep(500);
    cut_obj = nsp_malloc_node(CUT_BYTES, nsp__nnodes - 1);
    if (cut_obj)
        memset(cut_obj, 0x5a, CUT_BYTES);
    atomic_store(&cutter_done, 1);
    return NULL;
}

/* ---- the planned cutter (file comment) ------------------------------------------------------ */

static _Thread_local int is_cutter;
static _Atomic int cut_ready, cut_go;
static struct nsp_span *cut_span; /* CUT_FROM_HEAP: the span cut, given back by the test */
enum { CUT_BY_MALLOC, CUT_FROM_HEAP };

#define LEFT_BYTES ((size_t)64 << 10) /* 8 pages */

/* CUT_BY_MALLOC: a large malloc of CUT_BYTES on node 0. CUT_FROM_HEAP: LEFT_BYTES of node 0's
 * page heap itself, so that no central trim on a malloc's path pushes spans pending first. */
static void *planned_cutter(void *arg)
{
    int how = (int)(intptr_t)arg;
    is_cutter = 1;
    free(malloc(24)); /* its thread's set-up (a virtual core, a cache) before the heap is held */
    atomic_store(&cut_ready, 1);
    while (!atomic_load(&cut_go))
        usleep(500);
    size_t n = how == CUT_FROM_HEAP ? LEFT_BYTES : CUT_BYTES;
    if (how == CUT_FROM_HEAP) {
        cut_span = nsp__pageheap_alloc(0, LEFT_BYTES >> NSP_PAGE_SHIFT, 1);
        cut_obj = cut_span ? (void *)cut_span->base : NULL;
    } else {
        cut_obj = nsp_malloc_node(CUT_BYTES, 0);
    }
    if (cut_obj)
        memset(cut_obj, 0x5a, n);
    atomic_store(&cutter_done, 1);
    return NULL;
}

/* Starts the planned cutter and waits until it is set up: 0 when it could not be. */
static int start_cutter(pthread_t *t, int how)
{
    atomic_store(&cut_ready, 0);
    atomic_store(&cut_go, 0);
    atomic_store(&cutter_done, 0);
    cut_obj = NULL;
    cut_span = NULL;
    if (pthread_create(t, NULL, planned_cutter, (void *)(intptr_t)how) != 0)
        return 0;
    if (!wait_for(&cut_ready, 10)) {
        atomic_store(&cut_go, 1); /* cuts at once, unheld */
        pthread_join(*t, NULL);
        return 0;
    }
    return 1;
}

/* The recount holds every page heap and sleeps in the ledger's rwlock (a large object's change
 * is half made); a large malloc finds the page heap's hold stuck and cuts its span from a fresh
 * arena of its own, pending, then charges it (the rwlock prefers readers). Unfixed, the recount
 * then walked the linked arenas only, missed the charged span, and reported heapLive above the
 * charges by exactly that object (131072 B, as in CI). It must instead see a heap in which every
 * charge has its span: the cut waits for the recount, or the recount finds it. */
START_TEST(recount_against_unlocked_cut)
{
    ready();
    atomic_store(&changer_in, 0);
    atomic_store(&changer_go, 0);
    atomic_store(&recount_tid, 0);
    atomic_store(&recount_done, 0);
    atomic_store(&cutter_go, 0);
    atomic_store(&cutter_done, 0);
    pthread_t a, r, b;
    /* Check's asserts allocate (each records its place): none from here until every thread
     * is joined, since an allocation may wait for the recount, which waits for this thread */
    int created = pthread_create(&b, NULL, cutter, NULL) == 0;
    ck_assert(created);
    nsp__ledger_test_hook = stop_changer;
    created = pthread_create(&a, NULL, changer, NULL) == 0;
    /* the recount once the change is half made, so that it waits for it */
    int changer_stopped = created && wait_for(&changer_in, 10);
    created = created && pthread_create(&r, NULL, recounter, NULL) == 0;
    if (!created) {
        nsp__ledger_test_hook = NULL;
        atomic_store(&changer_go, 1);
        ck_abort_msg("pthread_create failed");
    }
    double t0 = now_s();
    while (changer_stopped && !recounter_holds_page_heaps() && !atomic_load(&recount_done) &&
           now_s() - t0 < 10)
        usleep(500);
    int held = recounter_holds_page_heaps() && !atomic_load(&recount_done);
    uint64_t waits0 = checker_waits();
    atomic_store(&cutter_go, 1);
    /* the cut ends, or waits for the checker (then it ends once the recount is done) */
    t0 = now_s();
    while (!atomic_load(&cutter_done) && checker_waits() == waits0 && now_s() - t0 < 10)
        usleep(500);
    atomic_store(&changer_go, 1);
    pthread_join(a, NULL);
    pthread_join(r, NULL);
    pthread_join(b, NULL);
    nsp__ledger_test_hook = NULL;
    ck_assert_msg(changer_stopped, "the large malloc never reached the ledger's test hook");
    ck_assert_msg(held, "the recount never held every page heap while the change was half made: "
                  "the moment under test was not built");
    ck_assert_ptr_nonnull(cut_obj);
    ck_assert_msg(atomic_load(&recount_rc) == 0,
                  "the recount (rc %d) met an unlocked cut: node %u: heapLive + pending %lld, the "
                  "spans' charges %lld (%lld B apart; the cut object is %zu B)",
                  atomic_load(&recount_rc), recount_node, (long long)recount_ledger,
                  (long long)recount_charges, (long long)(recount_ledger - recount_charges),
                  CUT_BYTES);
    for (size_t i = 0; i < CUT_BYTES; i += 4093)
        ck_assert_int_eq(((unsigned char *)cut_obj)[i], 0x5a);
    free(cut_obj);
    heap_is_valid();
    unsigned node;
    int64_t ledger, charges;
    ck_assert_int_eq(nsp_ledger_recount(&node, &ledger, &charges), 0);
}
END_TEST

/* ---- the page heap's validator against a run half cut ------------------------------------------ */

/* A holder of node 0's page heap that does not run (asleep outside any lock's wait: a thread
 * preempted or stopped there reads the same, hold.h), until holder_go. */
static _Atomic int holder_in, holder_go;

static void *still_holder(void *arg)
{
    (void)arg;
    nsp__hold_lock_always(&nsp__pageheaps[0].lock, &nsp__pageheaps[0].hold);
    atomic_store(&holder_in, 1);
    while (!atomic_load(&holder_go))
        usleep(1000);
    nsp__hold_unlock(&nsp__pageheaps[0].lock, &nsp__pageheaps[0].hold);
    return NULL;
}

/* The cut's hook: parks the cutter between its two descriptor writes until a checker holds the
 * heap still (or, unfixed, until the check is done: there is nothing else to wait for). */
static _Atomic int cut_in, check_done;

static void park_cut(unsigned node, int step)
{
    (void)node;
    if (step != NSP_TEST_CUT_HALF || !is_cutter)
        return;
    atomic_store(&cut_in, 1);
    double t0 = now_s();
    while (!atomic_load(&nsp__pageheaps[0].checkers) && !atomic_load(&check_done) &&
           now_s() - t0 < 10)
        usleep(500);
}

static int check_rc;
static char check_why[512];

static void *checker(void *arg)
{
    (void)arg;
    check_rc = nsp_heap_check(check_why, sizeof check_why);
    atomic_store(&check_done, 1);
    return NULL;
}

/* The moment of the two tests below: a large malloc behind a stuck holder cuts its span from a
 * run freed meanwhile (pending, in a linked arena) and is parked between writing the span's
 * descriptor and the rest's, so that the run's pages no longer tile; the holder lets go, and
 * `check` takes the heap. Unfixed, the checker walked that half-written tiling ("does not tile
 * the arena"; TSan: a race on the descriptors). It must see the cut whole: it waits for the
 * cut in flight, which ends. check sets check_rc and check_why. */
static void half_cut_then(void (*check)(void))
{
    ready();
    void *run = nsp_malloc_node(2 * CUT_BYTES, 0); /* freed below: the pending run to cut */
    ck_assert_ptr_nonnull(run);
    atomic_store(&holder_in, 0);
    atomic_store(&holder_go, 0);
    atomic_store(&cut_in, 0);
    atomic_store(&check_done, 0);
    check_rc = -2;
    strcpy(check_why, "(not checked)");
    pthread_t h, b;
    int created = start_cutter(&b, CUT_BY_MALLOC);
    ck_assert_msg(created, "the cutter thread could not be started");
    /* no Check assert (they allocate) from here until every thread is joined */
    created = pthread_create(&h, NULL, still_holder, NULL) == 0;
    if (!created)
        atomic_store(&cut_go, 1);
    ck_assert(created);
    wait_for(&holder_in, 10);
    free(run); /* the page heap is held: pushed pending */
    nsp__test_busy_cut = park_cut;
    atomic_store(&cut_go, 1); /* nothing else allocates until the cut is parked */
    int parked = wait_for(&cut_in, 10);
    atomic_store(&holder_go, 1);
    pthread_join(h, NULL);
    if (created)
        check();
    atomic_store(&check_done, 1);
    if (created)
        pthread_join(b, NULL);
    nsp__test_busy_cut = NULL;
    ck_assert_msg(created, "pthread_create failed");
    ck_assert_msg(parked, "the malloc behind the stuck holder never cut a pending run: the "
                  "moment under test was not built");
    ck_assert_ptr_nonnull(cut_obj);
    ck_assert_msg(check_rc == 0, "the heap's check, with a cut made without the lock half "
                  "done by another thread: %s", check_why);
    for (size_t i = 0; i < CUT_BYTES; i += 4093)
        ck_assert_int_eq(((unsigned char *)cut_obj)[i], 0x5a);
    free(cut_obj);
    heap_is_valid();
}

static void check_in_thread(void)
{
    pthread_t c;
    if (pthread_create(&c, NULL, checker, NULL) == 0)
        pthread_join(c, NULL);
}

/* fork's prepare handler takes every lock as the checkers do (init.c): the child, whose cutter
 * thread is gone, must find no cut half done. Its own validator says, through a pipe. */
static void check_in_child(void)
{
    int fd[2];
    if (pipe(fd) != 0)
        return;
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        char why[sizeof check_why];
        int rc = nsp_heap_check(why, sizeof why);
        if (rc != 0)
            (void)!write(fd[1], why, strlen(why));
        _exit(rc == 0 ? 0 : 1);
    }
    close(fd[1]);
    int status = 0, ended = 0;
    for (double t0 = now_s(); pid > 0 && !ended && now_s() - t0 < 20;)
        if (!(ended = waitpid(pid, &status, WNOHANG) == pid))
            usleep(1000);
    if (pid > 0 && !ended) { /* its check waits for a cut its parent's thread left in flight */
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        strcpy(check_why, "the forked child's check did not end in 20 s");
    } else if (ended && WIFEXITED(status)) {
        check_rc = WEXITSTATUS(status) == 0 ? 0 : -1;
        /* read once it ended: its why (under a pipe's buffer) is all there */
        ssize_t n = read(fd[0], check_why, sizeof check_why - 1);
        check_why[n > 0 ? n : 0] = 0;
    }
    close(fd[0]);
    if (check_rc != 0 && !check_why[0])
        strcpy(check_why, "the forked child did not check (fork failed, or it died)");
}

START_TEST(validator_against_half_cut)
{
    half_cut_then(check_in_thread);
}
END_TEST

START_TEST(fork_against_half_cut)
{
    half_cut_then(check_in_child);
}
END_TEST

/* ---- a neighbour's free against a cut in flight ------------------------------------------------ */

/* The cut's hook for it: parks the cutter once its span's descriptor is rewritten and before its
 * pages are mapped, until placed_go. */
static _Atomic int placed_in, placed_go;

static void park_placed(unsigned node, int step)
{
    (void)node;
    if (step != NSP_TEST_CUT_PLACED || !is_cutter)
        return;
    atomic_store(&placed_in, 1);
    double t0 = now_s();
    while (!atomic_load(&placed_go) && now_s() - t0 < 10)
        usleep(500);
}

/* Two large objects side by side, left then right; the right one freed behind a stuck holder
 * (pending); a page-heap allocation behind the same holder (the planned cutter's, CUT_FROM_HEAP:
 * the pending run stays the only one) cuts its span from that pending run and is parked
 * with the descriptor rewritten, its pages not yet mapped; the holder lets go and the left
 * object is freed, under the lock, coalescing with its free neighbours. The right neighbour is
 * the span being cut: TAKEN, never a run to take in. Unfixed, the rewrite went through FREE with
 * its new length in place, the free took the cut span's pages into its own run, and the cutter
 * then held pages the heap counted free ("does not tile", a free list broken). */
START_TEST(coalesce_against_cut)
{
    ready();
    void *left = NULL, *right = NULL, *aside[16];
    unsigned naside = 0;
    /* the page heap cuts a run from its start, so two large mallocs in a row are neighbours
     * unless an exact-size run lies elsewhere: those are kept aside until a pair is found */
    while (naside + 2 <= 16) {
        left = nsp_malloc_node(LEFT_BYTES, 0);
        right = nsp_malloc_node(CUT_BYTES, 0);
        ck_assert(left && right);
        if ((uintptr_t)right == (uintptr_t)left + LEFT_BYTES)
            break;
        aside[naside++] = left;
        aside[naside++] = right;
        left = right = NULL;
    }
    for (unsigned i = 0; i < naside; i++)
        free(aside[i]);
    ck_assert_msg(left, "no two large mallocs in a row were neighbours: the moment under test "
                  "cannot be built");
    atomic_store(&holder_in, 0);
    atomic_store(&holder_go, 0);
    atomic_store(&placed_in, 0);
    atomic_store(&placed_go, 0);
    pthread_t h, b;
    int created = start_cutter(&b, CUT_FROM_HEAP);
    ck_assert_msg(created, "the cutter thread could not be started");
    /* no Check assert (they allocate) from here until every thread is joined */
    created = pthread_create(&h, NULL, still_holder, NULL) == 0;
    if (!created)
        atomic_store(&cut_go, 1);
    ck_assert(created);
    wait_for(&holder_in, 10);
    free(right); /* the page heap is held: pushed pending */
    nsp__test_busy_cut = park_placed;
    atomic_store(&cut_go, 1); /* nothing else allocates until the cut is parked */
    int parked = wait_for(&placed_in, 10);
    atomic_store(&holder_go, 1);
    pthread_join(h, NULL);
    free(left); /* under the lock now: coalesces with its free neighbours */
    atomic_store(&placed_go, 1);
    if (created)
        pthread_join(b, NULL);
    nsp__test_busy_cut = NULL;
    ck_assert_msg(created, "pthread_create failed");
    ck_assert_msg(parked, "the malloc behind the stuck holder never cut the pending run: the "
                  "moment under test was not built");
    /* cut from the start of the run it was freed as, the only pending span (file comment) */
    ck_assert_msg(cut_obj == right, "the cut (%p) was not made from the run freed behind the "
                  "holder (%p): another span went pending meanwhile", cut_obj, right);
    char why[512];
    ck_assert_msg(nsp_heap_check(why, sizeof why) == 0, "a free coalescing beside a cut made "
                  "without the lock: %s", why);
    for (size_t i = 0; i < LEFT_BYTES; i += 4093)
        ck_assert_int_eq(((unsigned char *)cut_obj)[i], 0x5a);
    nsp__pageheap_free(cut_span);
    heap_is_valid();
}
END_TEST

/* ---- a checker against a cut whose thread is stopped ------------------------------------------- */

/* The cut's hook for it: the cutter stops half way (asleep, as in a signal handler: hold.h) until
 * stop_go. */
static _Atomic int stop_go, still_done, other_done;

static void park_stopped(unsigned node, int step)
{
    (void)node;
    if (step != NSP_TEST_CUT_HALF || !is_cutter)
        return;
    atomic_store(&cut_in, 1);
    double t0 = now_s();
    while (!atomic_load(&stop_go) && now_s() - t0 < 10)
        usleep(1000);
}

/* A checker of node 0's page heap alone (no cache, no central held): it waits for the cut. */
static void *still_taker(void *arg)
{
    (void)arg;
    nsp__pageheap_lock_still(0);
    nsp__pageheap_unlock_still(0);
    atomic_store(&still_done, 1);
    return NULL;
}

static struct nsp_span *other_span;
static double other_waited;

static void *other_allocator(void *arg)
{
    (void)arg;
    double t0 = now_s();
    other_span = nsp__pageheap_alloc(0, 16, 1);
    other_waited = now_s() - t0;
    atomic_store(&other_done, 1);
    return NULL;
}

/* A cut made without the lock, its thread stopped half way (README: a thread stopped inside a
 * slow path makes no malloc wait for it), and a checker that takes the page heap still and
 * waits for that cut. Another thread's page-heap allocation must not wait for the stopped
 * cutter through the checker: a holder that waits for a stopped thread is as stuck as that
 * thread. Found by review: the checker spins runnable (sched_yield), so hold.c reads it as a
 * running holder and the allocation waits until the cutter resumes. */
START_TEST(stopped_cut_against_checker)
{
    ready();
    void *run = nsp_malloc_node(2 * CUT_BYTES, 0); /* freed below: the pending run to cut */
    ck_assert_ptr_nonnull(run);
    atomic_store(&holder_in, 0);
    atomic_store(&holder_go, 0);
    atomic_store(&cut_in, 0);
    atomic_store(&stop_go, 0);
    atomic_store(&still_done, 0);
    atomic_store(&other_done, 0);
    other_span = NULL;
    pthread_t h, b, c, m;
    int made_b = start_cutter(&b, CUT_BY_MALLOC);
    ck_assert_msg(made_b, "the cutter thread could not be started");
    /* no Check assert (they allocate) from here until every thread is joined */
    int created = pthread_create(&h, NULL, still_holder, NULL) == 0;
    if (!created)
        atomic_store(&cut_go, 1);
    ck_assert(created);
    wait_for(&holder_in, 10);
    free(run); /* the page heap is held: pushed pending */
    nsp__test_busy_cut = park_stopped;
    atomic_store(&cut_go, 1); /* nothing else allocates until the cut is parked */
    int parked = wait_for(&cut_in, 10);
    atomic_store(&holder_go, 1);
    pthread_join(h, NULL);
    int made_c = parked && pthread_create(&c, NULL, still_taker, NULL) == 0;
    double t0 = now_s();
    while (made_c && !atomic_load(&nsp__pageheaps[0].checkers) && now_s() - t0 < 10)
        usleep(500);
    int checking = made_c && atomic_load(&nsp__pageheaps[0].checkers) != 0;
    int made_m = checking && pthread_create(&m, NULL, other_allocator, NULL) == 0;
    int other_ended = made_m && wait_for(&other_done, 3);
    atomic_store(&stop_go, 1);
    if (made_m)
        pthread_join(m, NULL);
    if (made_c)
        pthread_join(c, NULL);
    if (made_b)
        pthread_join(b, NULL);
    nsp__test_busy_cut = NULL;
    ck_assert_msg(made_b && parked, "the malloc behind the stuck holder never cut a pending "
                  "run: the moment under test was not built");
    ck_assert_msg(checking, "the checker never held node 0's page heap still");
    ck_assert_msg(made_m, "pthread_create failed");
    ck_assert_msg(other_ended, "a page-heap allocation waited %.1f s, until the stopped cutter "
                  "resumed, for a checker that waits for that cutter", other_waited);
    ck_assert_ptr_nonnull(other_span);
    nsp__pageheap_free(other_span);
    ck_assert_ptr_nonnull(cut_obj);
    free(cut_obj);
    heap_is_valid();
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("check_cut");
    TCase *tc = tcase_create("cut");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, recount_against_unlocked_cut);
    tcase_add_test(tc, validator_against_half_cut);
    tcase_add_test(tc, fork_against_half_cut);
    tcase_add_test(tc, coalesce_against_cut);
    tcase_add_test(tc, stopped_cut_against_checker);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return nsp_run_suite(suite());
}
