/*
 * host/hold.h — stuck holds: a mutex's waiters tell a holder that is merely busy from one that
 * does not run (preempted for long, or stopped in a signal handler), and wait for the first only
 * (issue 11, "slow paths that never queue behind a preempted thread").
 *
 * Owns: nothing but the two words of a struct nsp_hold, kept beside the mutex it describes (a
 * central's, a node page heap's).
 *
 * Invariants:
 *   - `holds` counts the mutex's acquisitions: every taker bumps it right after it gets the mutex
 *     (nsp__hold_begin), so a value names one hold;
 *   - `stuck` is the value of a hold some waiter waited NSP_HOLD_STOPPED_READS times
 *     NSP_HOLD_WAIT_NS for without seeing the mutex change hands, and whose holder (`tid`) was
 *     not runnable at the end of each of those waits: asleep or stopped (a signal handler, a
 *     debugger), /proc/self/task/TID/stat says (0: none yet). One reading is not enough: a
 *     holder that itself waits for another of these locks leaves its futex for a few
 *     microseconds at each of its own timed waits' ends, and a reading that saw it asleep
 *     (stat) and then not in the futex (syscall) would call a holder that waits on a runner
 *     stuck (test_no_wait, one run in 15 at load 4). Nor is a reading one instant: it reads the
 *     holder's waiting slot, its stat, its syscall file and the slot again, and a holder seen to
 *     move between them (woken: "running", or its slot changed) ran (hold.c). While `holds`
 *     still equals it, that hold is stuck, and
 *     every later waiter goes elsewhere at once (the caller's fallback: a pending list, a fresh
 *     span, a skip) instead of waiting again; the next acquisition makes a new value and so ends
 *     it. The wait is paid once per stuck hold, not once per operation.
 * Ordinary contention (a holder running on the other cpu, a hold that changes hands while one
 * waits) and a holder that is runnable but preempted (64 threads on 2 cpus leave one off its cpu
 * for tens of ms) are waited for as a plain mutex would: nothing takes a fallback for it, so nothing the
 * fallbacks make (fresh spans, arenas) grows under load. Everything here is a hint for choosing
 * between waiting and a fallback that is always correct: a stale read costs at most one wait or
 * one fallback too many.
 * A holder's id is forgotten at its unlock (nsp__hold_unlock), and the state read counts only if
 * the same hold and holder are still there after it: the id of a thread that let go (and sleeps
 * elsewhere) is never taken for the next taker's, who has the mutex but has not yet counted.
 * A holder whose state cannot be read (no procfs, no file descriptor left; or no id, a hold
 * changing hands) is waited for NSP_HOLD_BLIND_WAITS times NSP_HOLD_WAIT_NS (100 ms, hold.c)
 * before its hold is called stuck: long enough for a preempted holder, short against a stopped
 * one.
 * Why the holder's state and not the wait alone: with 64 threads on 2 cpus, calling every hold
 * stuck after 2 ms made 200+ stuck holds per test_host_stress run, each sending every other
 * thread to fresh spans and arenas (3,000 arenas, 2.6 GB of RSS against main's 250 MB); a
 * preempted holder runs again, and waiting for it is what a mutex costs there anyway.
 */
#ifndef NSP_HOST_HOLD_H
#define NSP_HOST_HOLD_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

struct nsp_hold {
    _Atomic uint64_t holds; /* acquisitions of the mutex so far (written by its holder only) */
    _Atomic uint64_t stuck; /* the hold judged stuck, or 0 */
    _Atomic int tid;        /* the holder's thread id (Linux), written with `holds`; 0 from
                               its unlock (nsp__hold_unlock) until the next taker's count */
};

/* The calling thread's id, cached (0 until its first hold; a fork child's thread forgets it:
 * nsp__hold_forked_child). */
extern __thread int nsp__hold_tid;
int nsp__hold_tid_slow(void);
void nsp__hold_forked_child(void);

/* The calling thread's id (nsp__hold_tid, read once it is cached). */
static inline int nsp__hold_self(void)
{
    int tid = nsp__hold_tid;
    return tid ? tid : nsp__hold_tid_slow();
}

/* How long a waiter waits for one hold before it calls it stuck: far longer than any hold of a
 * central or a page heap by a thread that runs (microseconds; an arena's mmap and mbind a few
 * hundred), about a time slice of a thread preempted on a loaded machine, and far shorter than a
 * thread stopped for seconds. */
#define NSP_HOLD_WAIT_NS ((int64_t)2 * 1000 * 1000)
/* Consecutive waits, each ending with the holder read not runnable, before a hold is stuck. */
#define NSP_HOLD_STOPPED_READS 2
/* Test hook: the next n readings of a holder's state say "stopped", whatever it does. */
extern _Atomic int nsp__test_hold_misread;

/* The mutex was just taken: a new hold. The count with release after the id: a waiter that reads
 * the new count with acquire then reads this id (or a later one), never the id of the thread
 * that let go before us, which an aarch64 or POWER cpu could otherwise show it (two relaxed
 * stores, two relaxed loads: both pairs may be reordered there; x86-64 orders both). */
static inline void nsp__hold_begin(struct nsp_hold *h)
{
    atomic_store_explicit(&h->tid, nsp__hold_self(), memory_order_relaxed);
    atomic_store_explicit(&h->holds, atomic_load_explicit(&h->holds, memory_order_relaxed) + 1,
                          memory_order_release);
}

/* Lets go of a hold: its holder's id is forgotten first, so that a waiter never reads the id of
 * a thread that let go (and may sleep elsewhere) as the holder of the mutex's next taker, who
 * has not yet counted its hold (hold.c). */
static inline void nsp__hold_unlock(pthread_mutex_t *m, struct nsp_hold *h)
{
    atomic_store_explicit(&h->tid, 0, memory_order_relaxed); /* before the unlock's release */
    pthread_mutex_unlock(m);
}

/* pthread_mutex_trylock, counted as a hold when it succeeds: 0 when taken. */
static inline int nsp__hold_trylock(pthread_mutex_t *m, struct nsp_hold *h)
{
    if (pthread_mutex_trylock(m) != 0)
        return -1;
    nsp__hold_begin(h);
    return 0;
}

/* Threads asleep waiting for a mutex in nsp__hold_lock or nsp__hold_lock_always, by thread id
 * modulo NSP_HOLD_WAITING_SLOTS (a count: two threads may share a slot). A holder asleep there
 * (its slot counted, and in the futex system call: /proc/self/task/TID/syscall) waits for another
 * hold, which its own rule ends (that holder runs and lets go, or it is stuck and the wait gives
 * up): its waiters wait for it as for a holder that runs. One asleep elsewhere with its slot
 * counted (a signal handler that interrupted its wait) is stopped. A collision only takes a
 * stopped holder asleep in a futex for a waiting one: a wait more, never a wrong fallback.
 * A slot's low 16 bits count its waiters; the bits above count the waits that ended, so that
 * every wait's start and end changes the word and a reader sees that a holder entered or left a
 * wait while it read the holder's state (hold.c: it ran then). */
#define NSP_HOLD_WAITING_SLOTS 4096
#define NSP_HOLD_WAIT_COUNT 0xffffu
#define NSP_HOLD_WAIT_ENTER 1u
#define NSP_HOLD_WAIT_LEAVE 0xffffu /* + 0x10000 - 1: one wait less, one more ended */
extern _Atomic uint32_t nsp__hold_waiting[NSP_HOLD_WAITING_SLOTS];
/* Test hook: called by a reading of an asleep holder's state between its stat and the rest. */
extern void (*_Atomic nsp__test_hold_reading)(int tid);

/* The threads counted asleep in these waits in thread tid's slot. */
static inline unsigned nsp__hold_waiters(int tid)
{
    return atomic_load_explicit(&nsp__hold_waiting[(unsigned)tid % NSP_HOLD_WAITING_SLOTS],
                                memory_order_relaxed) & NSP_HOLD_WAIT_COUNT;
}
void nsp__hold_wait_always(pthread_mutex_t *m);

/* pthread_mutex_lock, counted as a hold (who must have the mutex: fork, the validators). */
static inline void nsp__hold_lock_always(pthread_mutex_t *m, struct nsp_hold *h)
{
    if (pthread_mutex_trylock(m) != 0)
        nsp__hold_wait_always(m);
    nsp__hold_begin(h);
}

/* The mutex, unless its holder is stuck (file header): 0 when taken, -1 when the caller is to
 * go elsewhere. Waits NSP_HOLD_WAIT_NS for a hold not yet called stuck; no wait for one that is. */
int nsp__hold_lock(pthread_mutex_t *m, struct nsp_hold *h);

/* Holds judged stuck, for the tests and stats: how often a waiter gave up on a holder. */
extern _Atomic uint64_t nsp__holds_stuck;

#endif /* NSP_HOST_HOLD_H */
