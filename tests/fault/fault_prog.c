/*
 * tests/fault/fault_prog.c — small programs that run numaspan under faults (tests/fault/run.sh).
 *
 * usage: fault_prog ops [recover]      every entry point once per size, from small to huge, then
 *                                      trim, a pacer cycle and stats; under fault_inject.so. Each
 *                                      NULL must come with ENOMEM, each object keeps its stamp,
 *                                      and a failed realloc leaves the old block intact. "recover":
 *                                      a second round after the fault, in which nothing may fail.
 *        fault_prog ulimit A B         under `ulimit -v`: allocates A-byte objects until NULL,
 *                                      frees them, then B-byte ones until NULL; the second round
 *                                      must get at least half the bytes of the first.
 *        fault_prog fork               forks from worker threads while the others allocate; each
 *                                      child allocates, checks and exits; none may hang or fail.
 *        fault_prog exit               allocates, then pthread_exit from main: the process must
 *                                      end (run.sh bounds it) with status 0, as without numaspan.
 *        fault_prog stop [strict]      stops worker threads mid-operation (a signal whose handler
 *                                      waits) while the main thread allocates, trims, runs pacer
 *                                      cycles and reads stats: no round may hang ("strict": nor
 *                                      wait for a stopped worker at all).
 * Exit 0: passed; 1: a check failed (the line says which); a crash is the allocator's.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "numaspan.h"

static void __attribute__((noreturn)) fail(const char *what)
{
    fprintf(stderr, "fault_prog: FAIL: %s\n", what);
    exit(1);
}

static char msg[512];
#define FAILF(...) (snprintf(msg, sizeof msg, __VA_ARGS__), fail(msg))

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- stamped objects -------------------------------------------------------------------------- */

struct obj {
    unsigned char *p;
    size_t n;
    unsigned char tag;
};

/* The stamped bytes: the first and last 256 and one per 4 KiB, so 80 MiB objects stay cheap.
 * next_j(j, n) is the stamped byte after j. */
static size_t next_j(size_t j, size_t n)
{
    if (j < 256 || j + 257 >= n)
        return j + 1;
    size_t k = (j + 4096) & ~(size_t)4095;
    return k + 256 < n ? k : n - 256;
}

static inline unsigned char stamp_of(const struct obj *o, size_t j)
{
    return (unsigned char)(o->tag ^ j ^ (j >> 12));
}

static void stamp(struct obj *o)
{
    for (size_t j = 0; j < o->n; j = next_j(j, o->n))
        o->p[j] = stamp_of(o, j);
}

static void verify(const struct obj *o, size_t upto, const char *when)
{
    size_t n = upto < o->n ? upto : o->n;
    for (size_t j = 0; j < n; j = next_j(j, o->n))
        if (o->p[j] != stamp_of(o, j))
            FAILF("%zu-byte object %p: byte %zu is %#x, stamped %#x, at %s", o->n, (void *)o->p,
                  j, o->p[j], stamp_of(o, j), when);
}

/* ---- ops: every entry point under an injected OS failure -------------------------------------- */

#define MAX_OBJS 4096
static struct obj objs[MAX_OBJS];
static unsigned nobjs;
static int must_succeed;

/* Takes the result of an allocation: NULL must carry ENOMEM (and is a failure in a recovery
 * round); an object is stamped and kept. */
static void keep(void *p, size_t n, const char *what)
{
    if (!p) {
        if (errno != ENOMEM)
            FAILF("%s(%zu) returned NULL with errno %d (%s), not ENOMEM", what, n, errno,
                  strerror(errno));
        if (must_succeed)
            FAILF("%s(%zu) failed after the fault had passed: the allocator did not recover", what,
                  n);
        return;
    }
    if (nobjs == MAX_OBJS)
        fail("too many objects");
    struct obj *o = &objs[nobjs++];
    *o = (struct obj){p, n, (unsigned char)(nobjs * 37)};
    stamp(o);
}

static void free_all(unsigned from)
{
    for (unsigned i = from; i < nobjs; i++) {
        verify(&objs[i], SIZE_MAX, "free");
        free(objs[i].p);
    }
    nobjs = from;
}

static void realloc_chain(void)
{
    static const size_t steps[] = {100, 50000, 3 << 20, 40 << 20, 80 << 20, 1000};
    struct obj o = {malloc(16), 16, 0x5a};
    if (!o.p) {
        keep(NULL, 16, "malloc");
        return;
    }
    stamp(&o);
    for (unsigned k = 0; k < sizeof steps / sizeof *steps; k++) {
        void *q = realloc(o.p, steps[k]);
        if (!q) {
            if (errno != ENOMEM)
                FAILF("realloc(%zu -> %zu) returned NULL with errno %d", o.n, steps[k], errno);
            if (must_succeed)
                FAILF("realloc(%zu -> %zu) failed after the fault had passed", o.n, steps[k]);
            verify(&o, SIZE_MAX, "a failed realloc (the old block must stay intact)");
            continue;
        }
        o.p = q;
        verify(&o, steps[k], "realloc");
        o.n = steps[k];
        stamp(&o);
    }
    verify(&o, SIZE_MAX, "the end of the realloc chain");
    free(o.p);
}

static void *thread_frees(void *arg)
{
    (void)arg;
    free_all(nobjs / 2); /* remote frees: the objects were allocated by the main thread */
    return NULL;
}

static void ops_round(void)
{
    static const size_t sizes[] = {0, 8, 24, 100, 1000, 5000, 20000, 32768, 40000, 300000,
                                   3 << 20, 40 << 20};
    unsigned start = nobjs;
    for (unsigned k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        size_t n = sizes[k];
        keep(malloc(n), n, "malloc");
        unsigned char *c = calloc(1, n);
        for (size_t j = 0; c && j < n; j += (j < 4096 ? 1 : 4093))
            if (c[j])
                FAILF("calloc(1, %zu): byte %zu is %#x", n, j, c[j]);
        keep(c, n, "calloc");
    }
    keep(memalign(4096, 10000), 10000, "memalign");
    void *pm = NULL;
    int r = posix_memalign(&pm, 65536, 100000);
    errno = r;
    keep(r ? NULL : pm, 100000, "posix_memalign");
    keep(aligned_alloc(1 << 21, 3 << 20), 3 << 20, "aligned_alloc");
    keep(valloc(5000), 5000, "valloc");
    keep(nsp_malloc_node(1000, 0), 1000, "nsp_malloc_node");
    keep(nsp_malloc_node(100000, 0), 100000, "nsp_malloc_node");
    realloc_chain();
    for (unsigned k = 0; k < 1500; k++) /* enough spans of two classes to refill several times */
        keep(malloc(k % 2 ? 64 : 20000), k % 2 ? 64 : 20000, "malloc");
    for (unsigned i = start; i < nobjs; i++)
        verify(&objs[i], SIZE_MAX, "the end of the round");
    pthread_t t;
    if (pthread_create(&t, NULL, thread_frees, NULL) == 0)
        pthread_join(t, NULL);
    malloc_trim(0);
    nsp_pacer_cycle();
    nsp_stats_t st;
    /* -1 means "not initialised": allowed after an injected failure stopped initialisation
     * (the allocator then serves from its bootstrap region), not once the fault has passed */
    if (nsp_stats_get(&st) != 0 && must_succeed)
        fail("nsp_stats_get returned -1 after the fault had passed: initialisation never "
             "completed");
    free_all(start);
    nsp_trim();
}

static int ops(int recover)
{
    /* numaspan initialised before main: the injected failures start here, unless the test asks
     * for initialisation too (FAULTINJ_INIT=1, fault_inject.c) */
    void (*arm)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "faultinj_arm");
    if (arm)
        arm();
    ops_round();
    if (recover) {
        must_succeed = 1;
        ops_round();
    }
    printf("fault_prog: ops passed\n");
    return 0;
}

/* ---- ulimit: allocate until NULL, free, allocate another size --------------------------------- */

/* Allocates n-byte objects until NULL, linked through their first word. Returns the bytes got. */
static size_t fill(size_t n, void **head)
{
    size_t total = 0;
    *head = NULL;
    for (;;) {
        void **p = malloc(n);
        if (!p) {
            if (errno != ENOMEM)
                FAILF("malloc(%zu) returned NULL with errno %d, not ENOMEM", n, errno);
            return total;
        }
        p[0] = *head;
        ((unsigned char *)p)[n - 1] = 0xa5;
        *head = p;
        total += n;
        if (total > ((size_t)64 << 30))
            fail("64 GiB allocated and no NULL: is `ulimit -v` set?");
    }
}

static void drain(void *head, size_t n)
{
    while (head) {
        void *next = *(void **)head;
        if (((unsigned char *)head)[n - 1] != 0xa5)
            FAILF("%zu-byte object %p lost its last byte", n, head);
        free(head);
        head = next;
    }
}

static int ulimit_case(size_t a, size_t b)
{
    if (a < 16 || b < 16)
        fail("ulimit: sizes must be >= 16 (objects are linked through their first word)");
    void *head;
    size_t t1 = fill(a, &head);
    drain(head, a);
    size_t t2 = fill(b, &head);
    drain(head, b);
    printf("fault_prog: ulimit: %zu MiB of %zu-byte objects, then %zu MiB of %zu-byte objects\n",
           t1 >> 20, a, t2 >> 20, b);
    if (t1 < ((size_t)4 << 20))
        FAILF("ulimit: only %zu KiB of %zu-byte objects before NULL", t1 >> 10, a);
    if (t2 < t1 / 2)
        FAILF("ulimit: after freeing %zu MiB of %zu-byte objects, only %zu MiB of %zu-byte ones "
              "could be allocated: freed memory was not reusable", t1 >> 20, a, t2 >> 20, b);
    return 0;
}

/* ---- fork from threads ------------------------------------------------------------------------ */

#define WORKERS 4
#define NFORKS 200
static _Atomic int stop_workers;
static _Atomic unsigned forks_done;

static void churn(unsigned seed, unsigned rounds)
{
    struct obj live[32] = {{0}};
    for (unsigned k = 0; k < rounds; k++) {
        unsigned i = (seed + k * 7) % 32;
        if (live[i].p) {
            verify(&live[i], SIZE_MAX, "churn");
            free(live[i].p);
        }
        /* half small (core caches, centrals), half large (the page heap and its lock) */
        size_t n = 1 + (seed * 2654435761u + k * 40503u) % (k % 2 ? 2000 : 300000);
        live[i] = (struct obj){malloc(n), n, (unsigned char)(k + seed)};
        if (!live[i].p)
            FAILF("malloc(%zu) failed in a worker", n);
        stamp(&live[i]);
    }
    for (unsigned i = 0; i < 32; i++)
        if (live[i].p) {
            verify(&live[i], SIZE_MAX, "churn end");
            free(live[i].p);
        }
}

static void *fork_worker(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    struct obj mine = {malloc(1000), 1000, (unsigned char)id};
    if (!mine.p)
        fail("malloc in a worker");
    stamp(&mine);
    for (unsigned k = 0; !atomic_load(&stop_workers); k++) {
        churn(id * 1000 + k, 50);
        if (k % 4 == id % 4 && atomic_load(&forks_done) < NFORKS) {
            pid_t pid = fork();
            if (pid < 0)
                FAILF("fork: %s", strerror(errno));
            if (pid == 0) {
                alarm(10); /* a child that hangs dies of SIGALRM and the parent says so */
                verify(&mine, SIZE_MAX, "the child, on an object of the parent");
                free(mine.p);
                churn(id, 300);
                malloc_trim(0);
                nsp_stats_t st;
                if (nsp_stats_get(&st) != 0)
                    fail("nsp_stats_get in a fork child");
                nsp_pacer_cycle();
                exit(0);
            }
            int status;
            if (waitpid(pid, &status, 0) < 0)
                FAILF("waitpid: %s", strerror(errno));
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                FAILF("a child forked from thread %u %s %d", id,
                      WIFSIGNALED(status) ? "died of signal" : "exited with",
                      WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
            atomic_fetch_add(&forks_done, 1);
        }
    }
    verify(&mine, SIZE_MAX, "the parent");
    free(mine.p);
    return NULL;
}

static int fork_case(void)
{
    pthread_t t[WORKERS];
    for (unsigned i = 0; i < WORKERS; i++)
        if (pthread_create(&t[i], NULL, fork_worker, (void *)(uintptr_t)i))
            fail("pthread_create");
    double end = now_s() + 30;
    while (atomic_load(&forks_done) < NFORKS && now_s() < end)
        usleep(10000);
    atomic_store(&stop_workers, 1);
    for (unsigned i = 0; i < WORKERS; i++)
        pthread_join(t[i], NULL);
    if (atomic_load(&forks_done) < NFORKS)
        FAILF("only %u forks in 30 s", atomic_load(&forks_done));
    printf("fault_prog: fork: %u children forked from threads, all passed\n",
           atomic_load(&forks_done));
    return 0;
}

/* ---- threads stopped mid-operation ------------------------------------------------------------ */

/* The stopped workers wait in their handler until the main thread has finished its round, or
 * until stop_ms have passed, wherever the signal found them: inside malloc or free, holding
 * whatever they held. Default: 300 ms, and a round must finish once the workers resume, with
 * every object intact. "strict": 2 s, and no round may wait at all: a stopped holder of a
 * central's or a page heap's mutex is waited for 2 ms once per hold and then gone around
 * (host/hold.h), and stats read counters. Before that, about 14 rounds of 100 waited: a worker
 * stopped inside a central or the page heap blocked the large objects' and the transfer refills'
 * mutexes, and malloc_trim, nsp_pacer_cycle and nsp_stats_get took the centrals or page heaps.
 * What the rounds control, so that a loaded machine does not fail them (the strict case failed 6
 * runs in 25 at `chrt -i 0` beside a busy loop on its one cpu, none of them blocked):
 *   - a round starts once every worker is in its handler, not after a guess of 1 ms: a worker
 *     the signal has not reached yet runs on, and a holder that runs is waited for (hold.h);
 *   - the handler sleeps in one sigtimedwait, woken by SIGUSR2 at the round's end, not in 1 ms
 *     naps: a napping handler is runnable at each nap's end and, on a loaded cpu, until it gets
 *     the cpu, which hold.c reads as a holder that runs;
 *   - a round's time is what the main thread spent on its cpu or asleep, not waiting for a cpu
 *     (/proc/thread-self/schedstat's run delay taken off the wall clock): the rounds that failed
 *     spent 1.5-2.2 s of their 1.6-2.3 s on the run queue and under 0.1 s asleep. */
static _Atomic unsigned round_no;    /* the round under way, from 1 */
static _Atomic unsigned released;    /* the last round whose workers were let go */
static _Atomic unsigned in_handler;  /* workers that entered their handler in this round */
static int stop_ms = 300;

static void stopped(int sig)
{
    (void)sig;
    int saved = errno;
    unsigned r = atomic_load(&round_no);
    atomic_fetch_add(&in_handler, 1);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    sigset_t go;
    sigemptyset(&go);
    sigaddset(&go, SIGUSR2); /* blocked in the workers: a wake sent early stays pending */
    while (atomic_load(&released) < r) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        long left_ns = stop_ms * 1000000L - ((t.tv_sec - t0.tv_sec) * 1000000000L +
                                             (t.tv_nsec - t0.tv_nsec));
        if (left_ns <= 0)
            break;
        struct timespec to = {left_ns / 1000000000L, left_ns % 1000000000L};
        sigtimedwait(&go, NULL, &to);
    }
    errno = saved;
}

/* Seconds the calling thread spent waiting for a cpu (runnable, not running) so far: the second
 * field of /proc/thread-self/schedstat; 0, and *known set to 0, where it cannot be read. */
static double run_delay_s(int *known)
{
    char buf[128];
    int fd = open("/proc/thread-self/schedstat", O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0)
        close(fd);
    const char *c = buf;
    unsigned long long delay_ns = 0;
    if (n > 0) {
        buf[n] = 0;
        while (*c >= '0' && *c <= '9') /* the time on the cpu */
            c++;
        c += *c == ' ';
    }
    if (n <= 0 || *c < '0' || *c > '9') {
        *known = 0;
        return 0;
    }
    for (; *c >= '0' && *c <= '9'; c++)
        delay_ns = delay_ns * 10 + (unsigned)(*c - '0');
    return delay_ns * 1e-9;
}

/* The watch on the main thread's rounds: a round that passes the slow mark while it runs (its
 * time, less its waits for a cpu, over 0.75 stop_ms) gets, once, the main thread's system call
 * (/proc/.../syscall: a futex's address, a nanosleep) and its stack (SIGPROF, whose handler
 * prints a backtrace), so that a round that waited says where, not only how long. Only a
 * report: the round is judged as before. */
static int main_tid;
static pthread_t main_thread;
static _Atomic double watch_t0, watch_q0; /* the round's start (wall), its run delay then; 0: none */
static _Atomic unsigned watch_round, watch_said;

static void print_stack(int sig)
{
    (void)sig;
    void *b[48];
    int n = backtrace(b, 48);
    static const char head[] = "fault_prog: stop: the main thread's stack:\n";
    (void)!write(2, head, sizeof head - 1);
    backtrace_symbols_fd(b, n, 2);
}

/* The run delay of thread tid so far (run_delay_s's field, for another thread of the process). */
static double run_delay_of(int tid)
{
    char path[64], buf[128];
    snprintf(path, sizeof path, "/proc/self/task/%d/schedstat", tid);
    int fd = open(path, O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0)
        close(fd);
    unsigned long long run, delay;
    if (n <= 0)
        return 0;
    buf[n] = 0;
    return sscanf(buf, "%llu %llu", &run, &delay) == 2 ? delay * 1e-9 : 0;
}

static void *watch(void *arg)
{
    (void)arg;
    for (;;) {
        usleep(20000);
        double t0 = atomic_load(&watch_t0);
        unsigned r = atomic_load(&watch_round);
        if (t0 == 0 || atomic_load(&watch_said) == r ||
            (now_s() - t0) - (run_delay_of(main_tid) - atomic_load(&watch_q0)) <= stop_ms * 0.75e-3)
            continue;
        atomic_store(&watch_said, r);
        char path[64], buf[160] = "";
        snprintf(path, sizeof path, "/proc/self/task/%d/syscall", main_tid);
        int fd = open(path, O_RDONLY);
        ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
        if (fd >= 0)
            close(fd);
        buf[n > 0 ? n : 0] = 0;
        fprintf(stderr, "fault_prog: stop: round %u still runs after %.2f s: the main thread's "
                "system call: %s", r - 1, stop_ms * 0.75e-3, n > 0 ? buf : "(unreadable)\n");
        pthread_kill(main_thread, SIGPROF);
    }
    return NULL;
}

static void *stop_worker(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    for (unsigned k = 0; !atomic_load(&stop_workers); k++)
        churn(id * 7919 + k, 100);
    return NULL;
}

static int stop_case(int strict)
{
    if (strict)
        stop_ms = 2000;
    double bound = stop_ms * 1e-3 * WORKERS + 1.0; /* every worker resumed, and then some */
    struct sigaction sa = {.sa_handler = stopped};
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t go;
    sigemptyset(&go);
    sigaddset(&go, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &go, NULL); /* the workers inherit it: their handlers wait for it */
    int known = 1;
    run_delay_s(&known);
    if (!known)
        printf("fault_prog: stop: no /proc/thread-self/schedstat: rounds are timed by the wall "
               "clock, time spent waiting for a cpu included\n");
    void *warm[1];
    backtrace(warm, 1); /* loads what backtrace needs now, not in the handler */
    signal(SIGPROF, print_stack);
    main_tid = (int)syscall(SYS_gettid);
    main_thread = pthread_self();
    pthread_t t[WORKERS], w;
    if (pthread_create(&w, NULL, watch, NULL))
        fail("pthread_create");
    pthread_detach(w);
    for (unsigned i = 0; i < WORKERS; i++)
        if (pthread_create(&t[i], NULL, stop_worker, (void *)(uintptr_t)i))
            fail("pthread_create");
    double worst = 0;
    unsigned slow = 0;
    for (unsigned round = 0; round < 100; round++) {
        atomic_store(&in_handler, 0);
        atomic_store(&round_no, round + 1);
        for (unsigned i = 0; i < WORKERS; i++) /* every worker stops, wherever it was */
            pthread_kill(t[i], SIGUSR1);
        /* the round starts once they all have (a hang guard only: each is a signal delivery) */
        for (double w0 = now_s(); atomic_load(&in_handler) < WORKERS; usleep(500))
            if (now_s() - w0 > 60)
                FAILF("round %u: %u of %d workers entered their handler in 60 s", round,
                      atomic_load(&in_handler), WORKERS);
        /* now_s, less the run delay: the time a round took had it had a cpu whenever it could
         * run (file comment) */
        double q0 = run_delay_s(&known), t0 = now_s() - q0;
        atomic_store(&watch_round, round + 1);
        atomic_store(&watch_q0, q0);
        atomic_store(&watch_t0, now_s());
        churn(round, 300);
        double t1 = now_s() - run_delay_s(&known);
        const char *what = "malloc and free";
        if (round % 4 == 0) {
            malloc_trim(0);
            double t2 = now_s() - run_delay_s(&known);
            nsp_pacer_cycle();
            double t3 = now_s() - run_delay_s(&known);
            nsp_stats_t st;
            if (nsp_stats_get(&st) != 0)
                fail("nsp_stats_get");
            double t4 = now_s() - run_delay_s(&known);
            double w = stop_ms * 0.75e-3;
            what = t2 - t1 > w ? "malloc_trim" : t3 - t2 > w ? "nsp_pacer_cycle"
                 : t4 - t3 > w ? "nsp_stats_get" : what;
        }
        double q1 = run_delay_s(&known), dt = now_s() - q1 - t0;
        atomic_store(&watch_t0, 0.0);
        if (dt > stop_ms * 0.75e-3)
            fprintf(stderr, "fault_prog: stop: round %u: %s waited %.2f s for a stopped worker "
                    "(and %.2f s for a cpu)\n", round, what, dt, q1 - q0);
        if (dt > bound)
            FAILF("round %u: %s took %.2f s, longer than every stopped worker's wait together: "
                  "it hangs", round, what, dt);
        atomic_store(&released, round + 1);
        for (unsigned i = 0; i < WORKERS; i++)
            pthread_kill(t[i], SIGUSR2);
        if (dt > worst)
            worst = dt;
        slow += dt > stop_ms * 0.75e-3;
        usleep(5000); /* the workers run again */
    }
    atomic_store(&stop_workers, 1);
    for (unsigned i = 0; i < WORKERS; i++)
        pthread_join(t[i], NULL);
    printf("fault_prog: stop: 100 rounds with every worker stopped mid-operation, slowest %.3f s "
           "(waits for a cpu left out), %u blocked on a stopped worker\n", worst, slow);
    if (slow && strict)
        FAILF("%u of 100 rounds waited (up to %.2f s) for a worker that was stopped: an operation "
              "of the main thread needed something a stopped thread held", slow, worst);
    return 0;
}

/* ---- pthread_exit from main ------------------------------------------------------------------ */

static void *short_worker(void *arg)
{
    (void)arg;
    churn(1, 1000);
    return NULL;
}

static int exit_case(void)
{
    free(malloc(64));
    churn(2, 1000); /* enough to start whatever numaspan starts on use */
    pthread_t t;
    if (pthread_create(&t, NULL, short_worker, NULL))
        fail("pthread_create");
    pthread_detach(t);
    /* the last thread to finish ends the process with status 0; a hidden thread of numaspan's
     * that keeps running would keep the process alive (issue 10 item 1) */
    pthread_exit(NULL);
}

int main(int argc, char **argv)
{
    const char *c = argc > 1 ? argv[1] : "";
    if (!strcmp(c, "exit"))
        return exit_case();
    if (!strcmp(c, "ops"))
        return ops(argc > 2 && !strcmp(argv[2], "recover"));
    if (!strcmp(c, "ulimit") && argc == 4)
        return ulimit_case(strtoull(argv[2], NULL, 0), strtoull(argv[3], NULL, 0));
    if (!strcmp(c, "fork"))
        return fork_case();
    if (!strcmp(c, "stop"))
        return stop_case(argc > 2 && !strcmp(argv[2], "strict"));
    fprintf(stderr, "usage: fault_prog ops [recover] | ulimit A B | fork | exit | stop [strict] (got \"%s\")\n", c);
    return 2;
}
