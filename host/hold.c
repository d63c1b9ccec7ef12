/*
 * host/hold.c — the slow path of a stuck-aware mutex (hold.h owns the rules): spin a little,
 * then a timed wait, then call the hold stuck.
 */
#include "hold.h"
#include "os.h"

#include <errno.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

_Atomic uint64_t nsp__holds_stuck;
__thread int nsp__hold_tid;

int nsp__hold_tid_slow(void)
{
    return nsp__hold_tid = (int)syscall(SYS_gettid);
}

_Atomic uint32_t nsp__hold_waiting[NSP_HOLD_WAITING_SLOTS];
_Atomic int nsp__test_hold_misread;
void (*_Atomic nsp__test_hold_reading)(int tid);

void nsp__hold_forked_child(void)
{
    nsp__hold_tid = 0; /* the child's thread has an id of its own */
    /* the parent's other threads, waiting at the fork, are not in the child */
    for (unsigned i = 0; i < NSP_HOLD_WAITING_SLOTS; i++)
        atomic_store_explicit(&nsp__hold_waiting[i], 0, memory_order_relaxed);
}

/* The calling thread's slot of nsp__hold_waiting. */
static _Atomic uint32_t *waiting_slot(void)
{
    return &nsp__hold_waiting[(unsigned)nsp__hold_self() % NSP_HOLD_WAITING_SLOTS];
}

void nsp__hold_wait_always(pthread_mutex_t *m)
{
    _Atomic uint32_t *w = waiting_slot();
    atomic_fetch_add_explicit(w, NSP_HOLD_WAIT_ENTER, memory_order_relaxed);
    pthread_mutex_lock(m);
    atomic_fetch_add_explicit(w, NSP_HOLD_WAIT_LEAVE, memory_order_relaxed);
}

/* What /proc/self/task/TID/stat says of thread tid of this process, read without allocating
 * (this runs inside malloc): HOLDER_RUNS when it is runnable (R: on a cpu or waiting for one) or
 * in an uninterruptible wait (D: a page fault, an mmap), so that it will let go without anyone's
 * help; HOLDER_STOPPED when it sleeps (S: a signal handler's sleep, a futex), is stopped (T, t)
 * or is gone; HOLDER_UNKNOWN when the state cannot be read: no procfs (a container, a chroot),
 * no file descriptor left (EMFILE, ENFILE), a sandbox that denies it. Unknown is not stopped: a
 * process without /proc would call every holder preempted for 2 ms stuck, and take the
 * fallbacks under ordinary load (hold.h: 2.6 GB of RSS). */
enum { HOLDER_STOPPED, HOLDER_RUNS, HOLDER_UNKNOWN };

/* What /proc/self/task/TID/syscall says of the thread whose /proc/self/task/TID directory is
 * path[0, at) (its number first): IN_FUTEX when it sleeps in the futex system call, as a mutex's
 * waiter does; IN_NONE ("running") when it is runnable at that instant, on a cpu or waiting for
 * one; IN_OTHER when it sleeps elsewhere: a signal handler that interrupted its wait (nanosleep,
 * pause), which is a stop however the thread came there; or when the file cannot be read. */
enum { IN_OTHER, IN_FUTEX, IN_NONE };

static int holder_syscall(char *path, int at)
{
    char buf[32];
    memcpy(path + at, "/syscall", 9);
    if (nsp__os_read_small(path, buf, sizeof buf) <= 0)
        return IN_OTHER;
    if (strncmp(buf, "running", 7) == 0)
        return IN_NONE;
    if (buf[0] < '0' || buf[0] > '9')
        return IN_OTHER; /* -1: blocked in no system call */
    long nr = 0;
    for (const char *c = buf; *c >= '0' && *c <= '9'; c++)
        nr = nr * 10 + (*c - '0');
#ifdef SYS_futex_time64
    if (nr == SYS_futex_time64)
        return IN_FUTEX;
#endif
    return nr == SYS_futex ? IN_FUTEX : IN_OTHER;
}

static int holder_state(int tid)
{
    int misread = atomic_load_explicit(&nsp__test_hold_misread, memory_order_relaxed);
    if (misread > 0 && atomic_compare_exchange_strong(&nsp__test_hold_misread, &misread, misread - 1))
        return HOLDER_STOPPED; /* the test hook (hold.h) */
    char path[48] = "/proc/self/task/", digits[12], buf[256];
    int nd = 0, at = (int)strlen(path), tid0 = tid;
    if (tid <= 0)
        return HOLDER_UNKNOWN;
    for (; tid; tid /= 10)
        digits[nd++] = (char)('0' + tid % 10);
    while (nd)
        path[at++] = digits[--nd];
    memcpy(path + at, "/stat", 6);
    /* the holder's slot before any read: a change by the last read says it ran meanwhile */
    _Atomic uint32_t *w = &nsp__hold_waiting[(unsigned)tid0 % NSP_HOLD_WAITING_SLOTS];
    uint32_t w0 = atomic_load_explicit(w, memory_order_relaxed);
    long n = nsp__os_read_small(path, buf, sizeof buf); /* errno kept: free() keeps it */
    if (n == -ENOENT) {
        /* gone: its task is missing while this thread's own is there (access needs no fd) */
        int saved = errno;
        int gone = access("/proc/self/task", F_OK) == 0;
        errno = saved;
        return gone ? HOLDER_STOPPED : HOLDER_UNKNOWN;
    }
    if (n <= 0)
        return HOLDER_UNKNOWN;
    char *p = strrchr(buf, ')'); /* "tid (comm) S ...": comm may hold anything, even ')' */
    if (!p || p[1] != ' ')
        return HOLDER_UNKNOWN;
    if (p[2] == 'R' || p[2] == 'D')
        return HOLDER_RUNS;
    if (p[2] != 'S')
        return HOLDER_STOPPED; /* stopped (T, t), or a zombie */
    void (*hook)(int) = atomic_load_explicit(&nsp__test_hold_reading, memory_order_relaxed);
    if (hook)
        hook(tid0); /* the test hook (hold.h) */
    /* Asleep at the stat's instant. The stat, the syscall file and the slot are read at three
     * instants, and a holder that itself waits in nsp__hold_lock leaves its futex at each of
     * its timed waits' ends, often right then: two waits of NSP_HOLD_WAIT_NS begun together
     * end together, wait after wait (test_no_wait: the reads of a waiter and of the holder it
     * read fell 12 us apart every 2.08 ms, and two readings in a row saw "asleep", then not in
     * the futex). A holder that moved between the reads ran: it is runnable ("running") or
     * its slot changed. Only a holder that stayed asleep through all of them is judged by
     * where it sleeps: in the futex of one of these waits, which ends by its own rule (hold.h),
     * or elsewhere (a signal handler's sleep): stopped. */
    int sys = holder_syscall(path, at);
    uint32_t w1 = atomic_load_explicit(w, memory_order_relaxed);
    if (sys == IN_NONE || w1 != w0)
        return HOLDER_RUNS;
    if (sys == IN_FUTEX && (w1 & NSP_HOLD_WAIT_COUNT))
        return HOLDER_RUNS;
    return HOLDER_STOPPED;
}

/* Waits of NSP_HOLD_WAIT_NS on one hold whose holder's state cannot be read before the hold is
 * called stuck all the same (100 ms): longer than a preempted thread stays off its cpu on a
 * loaded machine (tens of ms, hold.h), far shorter than a thread stopped for seconds. */
#define NSP_HOLD_BLIND_WAITS 50

/* Tries at a held mutex before the timed wait, a pause between two: a holder running on another
 * cpu lets go within them, and the waiter then never sleeps. */
#define NSP_HOLD_SPINS 64

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* A deadline NSP_HOLD_WAIT_NS from now, on CLOCK_REALTIME: pthread_mutex_timedlock's clock
 * (ThreadSanitizer knows timedlock, not clocklock); a clock step only lengthens or shortens one
 * wait. */
static struct timespec deadline(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t t = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + NSP_HOLD_WAIT_NS;
    ts.tv_sec = t / 1000000000;
    ts.tv_nsec = t % 1000000000;
    return ts;
}

/* Whether hold v is one a waiter called stuck. Hold 0 never is: `stuck` is 0 for "none yet",
 * and `holds` is 0 too while a mutex's first taker has not yet counted its hold, a running
 * taker that every waiter would otherwise have taken for a known stuck one. */
static int known_stuck(struct nsp_hold *h, uint64_t v)
{
    return v != 0 && atomic_load_explicit(&h->stuck, memory_order_relaxed) == v;
}

int nsp__hold_lock(pthread_mutex_t *m, struct nsp_hold *h)
{
    if (nsp__hold_trylock(m, h) == 0)
        return 0;
    uint64_t seen = atomic_load_explicit(&h->holds, memory_order_relaxed);
    if (known_stuck(h, seen))
        return nsp__hold_trylock(m, h); /* a known stuck hold, unless it ended just now */
    for (int i = 0; i < NSP_HOLD_SPINS; i++) {
        cpu_relax();
        if (nsp__hold_trylock(m, h) == 0)
            return 0;
    }
    /* Each timed wait watches one hold. A hold that ended meanwhile (the mutex went to another
     * waiter) is contention, and the next is watched afresh; one still there after a whole wait
     * is stuck only if its holder does not run (file header): a preempted holder is waited for,
     * as a mutex always did. */
    int blind = 0;   /* waits on this hold with its holder's state unreadable */
    int stopped = 0; /* consecutive waits on this hold that ended with its holder not running */
    _Atomic uint32_t *w = waiting_slot(); /* asleep in the timed waits: hold.h */
    for (;;) {
        struct timespec ts = deadline();
        atomic_fetch_add_explicit(w, NSP_HOLD_WAIT_ENTER, memory_order_relaxed);
        int r = pthread_mutex_timedlock(m, &ts);
        atomic_fetch_add_explicit(w, NSP_HOLD_WAIT_LEAVE, memory_order_relaxed);
        if (r == 0) {
            nsp__hold_begin(h);
            return 0;
        }
        /* acquire: the id read below is this hold's taker's or later (nsp__hold_begin) */
        uint64_t now = atomic_load_explicit(&h->holds, memory_order_acquire);
        if (now != seen) {
            if (known_stuck(h, now))
                return -1; /* another waiter called the new hold stuck */
            seen = now;
            blind = stopped = 0;
            continue;
        }
        /* tid 0: changing hands (let go, the next taker's hold not yet counted), a holder not
         * to be read either: waited for as one whose state is unknown, since a taker stopped
         * right there must be called stuck some time too */
        int tid = atomic_load_explicit(&h->tid, memory_order_relaxed);
        int st = tid ? holder_state(tid) : HOLDER_UNKNOWN;
        if (st == HOLDER_STOPPED && ++stopped < NSP_HOLD_STOPPED_READS)
            continue; /* read again at the next wait's end (hold.h: one reading can be wrong) */
        if (st == HOLDER_RUNS) {
            stopped = 0;
            continue;
        }
        if (st == HOLDER_UNKNOWN && ++blind < NSP_HOLD_BLIND_WAITS)
            continue;
        /* the state read was of the holder of this hold only if it still holds it: one that let
         * go meanwhile (and sleeps elsewhere) says nothing of the mutex's next taker */
        if (atomic_load_explicit(&h->holds, memory_order_acquire) != seen ||
            atomic_load_explicit(&h->tid, memory_order_relaxed) != tid)
            continue;
        atomic_store_explicit(&h->stuck, seen, memory_order_relaxed);
        atomic_fetch_add_explicit(&nsp__holds_stuck, 1, memory_order_relaxed);
        return -1;
    }
}
