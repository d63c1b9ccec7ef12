/*
 * host/cache.c — core caches: set-up, the foreign lock, the bins' detach/fold/attach, and the
 * slow paths (see cache.h for the bins' protocol and its invariant).
 *
 * Caches are laid out on their home node (bound when the topology is this machine). Which
 * caches may use rseq is decided once: glibc registered rseq for the thread (__rseq_size > 0),
 * the kernel accepted the MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ registration (without it
 * a foreign taker could not fence), the topology is this machine, and the cache has exactly one
 * cpu. Every other cache is taken with compare-and-swap.
 */
#include "cache.h"

#include <errno.h>
#include <linux/membarrier.h>
#include <sched.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "central.h"
#include "ledger.h"
#include "os.h"
#include "pageheap.h"
#include "span.h"

struct nsp_cache *nsp__caches;
struct nsp_span nsp__empty_span;
_Atomic size_t nsp__cached_total;
int nsp__rseq_enabled;
ptrdiff_t nsp__rseq_off;
_Atomic uint64_t nsp__cache_fences;
int nsp__virtual;
__thread struct nsp_cache *nsp__tc;
__thread struct nsp_cache *nsp__tb;

static long membarrier(int cmd, unsigned flags, int cpu)
{
    return syscall(SYS_membarrier, cmd, flags, cpu);
}

static int rseq_available(void)
{
#ifdef NSP_RSEQ_LOCKS
    if (__rseq_size == 0 || nsp_topo_uses_virtual_cores(nsp__topo))
        return 0;
    return membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ, 0, 0) == 0;
#else
    return 0;
#endif
}

static uint64_t now_seed(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int nsp__cache_init(void)
{
    unsigned n = nsp__ncaches;
    size_t len = ((size_t)n * sizeof(struct nsp_cache) + 4095) & ~(size_t)4095;
    nsp__caches = nsp__os_map(len, 4096);
    if (!nsp__caches)
        return -1;
#ifdef NSP_RSEQ_LOCKS
    nsp__rseq_off = __rseq_offset; /* before any cache is handed out (cache.h) */
#endif
    nsp__rseq_enabled = rseq_available();
    nsp__magazine_init();
    nsp__virtual = nsp_topo_uses_virtual_cores(nsp__topo);
    const struct nsp_topo *t = nsp__topo;
    for (unsigned i = 0; i < n; i++) {
        struct nsp_cache *c = &nsp__caches[i];
        c->index = i;
        c->node = nsp_topo_node_of_cache(nsp__topo, i);
        c->rseq_cpu = -1;
        c->mag.cpu = -1;
        /* (its slabs are left as mapped, zero: on = 0 and cap = 0, so every sequence misses;
         * only a one-cpu rseq cache's are set up, each at its class's first span, and the pages
         * of the others, most of a cache's bytes, stay unbacked: slab.h, "Set-up") */
        for (unsigned k = 0; k < NSP_NUM_CLASSES; k++)
            c->bins[k].cpu = -1;
        c->flush_gen = atomic_load(&nsp__sweepgen);
        /* a different key sequence per cache and process (detection, not secrecy: NSP_SECURE
         * is the hardened mode) */
        c->key_state = (uint64_t)(uintptr_t)c ^ ((uint64_t)getpid() << 32) ^
                       now_seed();
        for (unsigned k = 0; k < NSP_NUM_CLASSES; k++)
            c->spans[k] = &nsp__empty_span;
    }
    if (nsp__rseq_enabled) {
        /* a cache with exactly one cpu is that cpu's */
        unsigned *ncpu = (unsigned *)nsp__os_map(((size_t)n * sizeof(unsigned) + 4095) & ~4095UL, 4096);
        if (ncpu) {
            for (unsigned cpu = 0; cpu < t->cpu_table_len; cpu++)
                if (nsp__topo_cpu_is_pu(t, cpu))
                    ncpu[t->cpu_to_cache[cpu]]++;
            for (unsigned cpu = 0; cpu < t->cpu_table_len; cpu++)
                if (nsp__topo_cpu_is_pu(t, cpu) && ncpu[t->cpu_to_cache[cpu]] == 1) {
                    nsp__caches[t->cpu_to_cache[cpu]].rseq_cpu = (int32_t)cpu;
                    for (unsigned k = 0; k < NSP_NUM_CLASSES; k++)
                        nsp__caches[t->cpu_to_cache[cpu]].bins[k].cpu = (int32_t)cpu;
                    /* NSP_SECURE keeps its own slot order and checks: no bins there */
                    nsp__caches[t->cpu_to_cache[cpu]].bins_on = !nsp__secure;
                    /* the remote-free magazine goes with the bins (used through nsp__tb) */
                    nsp__caches[t->cpu_to_cache[cpu]].mag.cpu = (int64_t)cpu;
                    atomic_store_explicit(&nsp__caches[t->cpu_to_cache[cpu]].mag.on,
                                          !nsp__secure, memory_order_relaxed);
                    /* the slabs (slab.h) are set up class by class, at each class's first span
                     * (nsp__cache_slab_set_up): 24 KiB a cache, most of it for classes the cpu
                     * never allocates, left unbacked */
                }
            nsp__os_unmap_meta(ncpu, ((size_t)n * sizeof(unsigned) + 4095) & ~4095UL);
        }
    }
    for (unsigned i = 0; i < n; i++)
        nsp_topo_bind_memory(nsp__topo, &nsp__caches[i], sizeof(struct nsp_cache),
                             nsp__caches[i].node);
    return 0;
}

/* ---- the thread's lock ------------------------------------------------------------------------ */

/* A preempted lock holder (issue 11, Larson at 32 threads). A thread holds its cache's lock for
 * about a microsecond per take, but one preempted inside a take keeps it until the scheduler runs
 * it again: with 16 threads on a cpu, 10-300 ms. Meanwhile every bin of that cpu that empties
 * stays empty (refills need the lock), so the cpu's other threads serve each such malloc from the
 * slab, then the node's transfer. Measured (rdtsc from take to release, Larson at 32 threads on
 * 2 cpus, 0.5 s cpu-clock runs): 30-45k takes per run, of which 1-8 lasted over 1 ms and held
 * the cache 1.2-44x longer than all the others together; 0.3-1.4 million mallocs found it busy.
 * So a thread that finds its cache held NSP_BUSY_YIELD times without taking it here in between
 * (at ~1 us per take, a holder that is running is seldom seen that often) yields its cpu: the
 * holder, runnable on the same cpu, gets it back within a few yields. Measured: the busy mallocs
 * fell to 2-12 thousand per run, the long holds' cycles ~20x (medians). It costs nothing when the
 * cache is not held, and one syscall per NSP_BUSY_YIELD busy takes when it is (a foreign taker on
 * another cpu included: that one is short). The count is reset only by a take made here, not
 * by the inline one (cache.h): a thread that meets a busy cache rarely may yield once after
 * NSP_BUSY_YIELD such meetings, a syscall and no more; the inline take stays one sequence. */
#ifdef NSP_RSEQ_LOCKS /* without rseq every take waits in the lock: no busy take to count */
#define NSP_BUSY_YIELD 64
static __thread unsigned busy_streak; /* takes here that found the thread's cache held */
#endif

struct nsp_cache *nsp__cache_acquire_slow(void)
{
    const struct nsp_topo *t = nsp__topo;
    if (t->virtual_cores) {
        struct nsp_cache *c = &nsp__caches[nsp__topo_current_cache(t)];
        return nsp__cache_cas_lock(c) ? c : NULL;
    }
    for (int attempt = 0; attempt < 3; attempt++) {
        unsigned cpu = (unsigned)nsp__cpu_now();
        unsigned i = cpu < t->cpu_table_len ? t->cpu_to_cache[cpu] : cpu % t->ncaches;
        struct nsp_cache *c = &nsp__caches[i];
#ifdef NSP_RSEQ_LOCKS
        if (c->rseq_cpu == (int32_t)cpu) {
            nsp__tc = c;
            /* the `exact` ledger charges every object: it keeps the locked path (set after
             * nsp__cache_init, so read here) */
            nsp__tb = c->bins_on && !nsp__ledger_exact() ? c : NULL;
            int r = nsp__rseq_trylock(&c->lock, (int)cpu);
            if (r > 0) {
                busy_streak = 0;
                return c;
            }
            if (r == 0 && atomic_load_explicit(&c->lock, memory_order_relaxed)) {
                /* held: the caller goes to the slab or the central. Held that often in a row,
                 * the holder is most likely preempted on this cpu: give it the cpu (below) */
                if (++busy_streak >= NSP_BUSY_YIELD) {
                    busy_streak = 0;
                    sched_yield();
                }
                return NULL;
            }
            continue;        /* aborted or migrated: look again */
        }
#endif
        if (c->rseq_cpu < 0)
            return nsp__cache_cas_lock(c) ? c : NULL;
        return NULL; /* a cpu the table does not know, mapped onto another cpu's rseq cache */
    }
    return NULL;
}

/* ---- the foreign lock ------------------------------------------------------------------------- */

/* Foreign takers (pacer cycle, idle release, trim, stats, recount, fork) are serialised by this
 * mutex from their CAS to their re-check. Without it: taker A CASes 0 -> 2; an rseq sequence that
 * read 0 before that commits 1 over it, runs and releases (0); taker B CASes 0 -> 2; A's re-check
 * then reads B's 2 and both believe they own the cache (one cache flushed twice: central lists and
 * the ledger corrupted). With the mutex, only an rseq taker can change the word during A's window,
 * and an rseq taker never writes 2. The mutex is not held while a foreign taker owns the cache;
 * nsp__cache_lock_all holds it throughout (fork's child then finds it held by its one thread, and
 * fork_release unlocks it there). */
static pthread_mutex_t foreign_mutex = PTHREAD_MUTEX_INITIALIZER;

_Atomic int nsp__test_fence_fail;
void (*_Atomic nsp__test_foreign_window)(struct nsp_cache *c);
void (*_Atomic nsp__test_detach_window)(struct nsp_cache *c);

/* Makes every rseq sequence on cpu that read the lock word before now restart: 0 on success,
 * -1 when no way worked (then nothing may rely on the fence). In order:
 *   - membarrier(PRIVATE_EXPEDITED_RSEQ) on that cpu (an offline cpu is fenced by definition:
 *     the kernel answers 0, since nothing of ours runs there);
 *   - the same for the whole process (kernels before 5.10 refuse MEMBARRIER_CMD_FLAG_CPU with
 *     EINVAL): every cpu running one of our threads restarts its sequence, that one included;
 *   - running this thread on that cpu: a thread switched out of the cpu mid-sequence restarts it.
 * What fails them all: a seccomp filter on membarrier installed after the registration, with a
 * cpuset that forbids the cpu. A caller that must take the cache then gives up (lock_all). */
static int fence_cpu(int cpu)
{
    atomic_fetch_add_explicit(&nsp__cache_fences, 1, memory_order_relaxed);
    int fail = atomic_load_explicit(&nsp__test_fence_fail, memory_order_relaxed);
    if (fail == 1 || fail == 2) /* one fence only; 3 stays until the test resets it */
        fail = atomic_exchange_explicit(&nsp__test_fence_fail, 0, memory_order_relaxed);
    if (!fail &&
        (membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, MEMBARRIER_CMD_FLAG_CPU, cpu) == 0 ||
         membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, 0, 0) == 0))
        return 0;
    cpu_set_t old, one;
    if (fail > 1 || sched_getaffinity(0, sizeof old, &old) != 0)
        return -1;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    int ok = sched_setaffinity(0, sizeof one, &one) == 0 && sched_getcpu() == cpu;
    (void)sched_setaffinity(0, sizeof old, &old);
    return ok ? 0 : -1;
}

/* Every foreign taker's CAS of the lock word, counted (cache.h: foreign_takes). */
static int foreign_cas(struct nsp_cache *c)
{
    atomic_fetch_add_explicit(&c->foreign_takes, 1, memory_order_relaxed);
    return nsp__cache_cas_lock(c);
}

/* The take itself, foreign_mutex held: 1 taken, 0 busy (held by someone), -1 when the cpu could
 * not be fenced (the word is then given back: nothing half-taken is left). */
static int take_foreign(struct nsp_cache *c)
{
    if (!foreign_cas(c))
        return 0;
    if (c->rseq_cpu < 0)
        return 1;
    void (*window)(struct nsp_cache *) = atomic_load_explicit(&nsp__test_foreign_window,
                                                              memory_order_relaxed);
    if (window)
        window(c);
    /* Restart any rseq taker on that cpu that read 0 before our CAS; one that committed 1 in
     * between overwrote our 2, and then the cache is its. */
    if (fence_cpu(c->rseq_cpu) != 0) {
        /* Unfenced, a sequence that read 0 may still commit: we cannot own the cache. Give the
         * word back only if it is still ours (an rseq taker that overwrote it owns it now). */
        uint32_t two = 2;
        atomic_compare_exchange_strong(&c->lock, &two, 0);
        return -1;
    }
    return atomic_load(&c->lock) == 2;
}

/* ---- the bins: detach, fold, attach (cache.h) ---------------------------------------------------- */

#ifdef NSP_RSEQ_LOCKS
/* The owner's detach: a sequence on cpu whose commit stores 0 into *word (a bin's key, a
 * magazine's `on`). Once it commits, every other sequence on that cpu has either committed or
 * will restart and read 0. Returns 1 when detached, 0 if the thread is not on cpu, -1 if
 * aborted. */
static int word_clear_rseq(_Atomic uint64_t *word, int cpu)
{
    struct rseq *rs = (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
    int r;
    __asm__ __volatile__(
        NSP_RSEQ_CS_DESCRIPTOR
        "leaq 3b(%%rip), %%rax\n\t"
        "movq %%rax, %[rseq_cs]\n\t"
        "1:\n\t"
        "cmpl %[cpu], %[cpu_id]\n\t"
        "jnz 5f\n\t"
        "movq $0, %[key]\n\t"
        "2:\n\t"
        "movl $1, %[r]\n\t"
        "jmp 7f\n\t"
        NSP_RSEQ_ABORT_SIGNATURE
        "movl $-1, %[r]\n\t"
        "jmp 7f\n\t"
        ".popsection\n\t"
        "5:\n\t"
        "xorl %[r], %[r]\n\t"
        "7:\n\t"
        : [r] "=&r"(r), [rseq_cs] "=m"(rs->rseq_cs), [key] "=m"(*word)
        : [cpu] "r"(cpu), [cpu_id] "m"(rs->cpu_id)
        : "memory", "cc", "rax");
    return r;
}

#endif

/* The bin's seq (cache.h), written by the lock holder alone: a seqlock's writer side, with plain
 * stores. Measured: the four locked adds it took per slow path (fold, then fill) were 86% of
 * bin_fold's time and most of bin_fill's at 8 threads on 2 cpus (Larson, perf annotate). One
 * writer needs no read-modify-write; the release fence orders the odd value before the fields
 * that follow (on x86-64 a compiler barrier: stores are not reordered with stores), and the
 * even value is stored with release after them, which is all bin_reading's acquire pair needs. */
static inline void seq_begin(struct nsp_bin *b)
{
#ifdef __SANITIZE_THREAD__
    /* ThreadSanitizer does not model fences (gcc refuses them there): the read-modify-write's
     * acquire keeps the fields' stores after it. TSan builds have no bins (cache.h), so this
     * costs nothing that is measured. */
    atomic_fetch_add_explicit(&b->seq, 1, memory_order_acq_rel);
#else
    atomic_store_explicit(&b->seq, atomic_load_explicit(&b->seq, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
#endif
}

static inline void seq_end(struct nsp_bin *b)
{
    atomic_store_explicit(&b->seq, atomic_load_explicit(&b->seq, memory_order_relaxed) + 1,
                          memory_order_release);
}

/* Folds detached bin cls back into its span: each listed object's link replaced by the free tag
 * and its alloc bit cleared (span.h: the invariant the bins' push relies on; the list is
 * walked with its saved key, every link checked: inside the span, at an object's start, and its
 * alloc bit still set — a list that loops or holds an object twice fails the last test), the
 * pops added to the span's count of allocations, and the local frees the bin took to its frees.
 * A corrupt link is reported, naming the object it was read from; the objects after it stay
 * allocated (leaked, never handed out twice). Lock held, key == 0. */
static void bin_fold(struct nsp_cache *c, unsigned cls)
{
    struct nsp_bin *b = &c->bins[cls];
    uint64_t w = b->word;
    if (!w && !b->carved)
        return;
    seq_begin(b); /* odd: lock-free readers leave the bin out (cache.h) */
    struct nsp_span *s = c->spans[cls];
    uint64_t key = b->saved_key;
    uint32_t pops = (uint32_t)(w & NSP_BIN_POPS), n = 0;
    uintptr_t p = (uintptr_t)(w >> 16);
    if (s == &nsp__empty_span || s->base != b->base) {
        p = 0; /* cannot happen: a bin is attached only to its class's cached span */
        nsp__report_error(NSP_ERR_FREE_LIST, "malloc", (void *)b->base);
    }
    uintptr_t prev = 0;
    uint32_t lowest = UINT32_MAX; /* the lowest slot folded: the cursor moves down to it */
    while (p) {
        uint32_t idx = nsp__span_index(s, p);
        uint64_t bit = 1ULL << (idx & 63);
        if (idx == UINT32_MAX || !(s->alloc_bits[idx >> 6] & bit)) {
            /* the link that led here was overwritten, or p is listed twice: name the object
             * whose link it is (the head's is the bin's word, which nothing else writes) */
            nsp__report_error(NSP_ERR_FREE_LIST, "malloc", (void *)(prev ? prev : p));
            break;
        }
        uint64_t next = *(const uint64_t *)p ^ key;
        nsp__span_tag_free((void *)p); /* free in its span now: its tag (span.h) */
        nsp__span_set_alloc_word(s, idx >> 6, s->alloc_bits[idx >> 6] & ~bit);
        nsp__span_cursor_add(s, idx >> 6, bit); /* past the cursor in its word (span.h) */
        lowest = idx < lowest ? idx : lowest;
        n++;
        prev = p;
        p = (uintptr_t)next;
    }
    if (s != &nsp__empty_span) {
        s->alloc_count -= n;
        if (n)
            nsp__span_cursor_down(s, lowest); /* first fit (span.h) */
        s->nmalloc += pops;
        /* listed = carved - pops + pushes */
        int64_t pushes = (int64_t)n + pops - b->carved;
        s->nfree += pushes > 0 ? (uint32_t)pushes : 0;
        nsp__cache_counts_check(s); /* a span cached for good: its counts must not wrap */
    }
    b->word = 0;
    b->carved = 0;
    b->credit = 0;
    b->seen = 0;
    seq_end(b);
}

/* An object that should carry the tag naming its magazine's or slab's cache and does not, met by
 * fn (the flush's "free", the slab's pop's "malloc"): another tag (a remote free's: it was applied
 * already, by the flush of another copy of it or the direct way) or a link of a bin is a second
 * free; any other word, the program's, was written while the object waited, or after a copy of
 * it was handed out (the two cannot be told apart: the free list's message names both). */
static void report_untagged(const char *fn, uintptr_t p, uint64_t word)
{
    int saved = errno;
    nsp__report_error(nsp__magazine_tagged((const void *)p) >= 0 || nsp__may_be_link(word)
                          ? NSP_ERR_DOUBLE_FREE
                          : NSP_ERR_FREE_LIST,
                      fn, (void *)p);
    errno = saved;
}

void nsp__slab_refuse(void *p)
{
    uint64_t word = __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED);
    report_untagged("malloc", (uintptr_t)p, word);
}

unsigned nsp__cache_drop_listed(uintptr_t *objs, unsigned n, uint32_t ci)
{
#ifdef NSP_RSEQ_LOCKS
    /* nsp__bin_lists for each object, with the span and its bin looked up once per run of
     * objects in one span (a magazine or slab take holds a producer's frees in address order):
     * the same hint, read racily either way (cache.h) */
    unsigned kept = 0;
    for (unsigned i = 0; i < n; i++) {
        uintptr_t p = objs[i];
        /* the tag naming ci, as its free wrote it: no link of any bin (magazine.h: the keys'
         * top bits), so kept with no look-up of its span or bin (the bin's line is one the
         * owner's every pop writes). It is replaced by the direct remote free's tag before the
         * apply sets its freed bit: a copy of it still in a slab (a second free past a write
         * after free, which the push cannot tell from a live object's free) is then refused at
         * its pop (nsp__slab_alloc) instead of handed out with its freed bit set */
        uint64_t word = __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED);
        if (__builtin_expect(word == nsp__magazine_tag((const void *)p, ci), 1)) {
            __atomic_store_n((uint64_t *)p, nsp__magazine_tag((const void *)p, NSP_MAG_NONE),
                             __ATOMIC_RELAXED);
            objs[kept++] = p;
            continue;
        }
        /* written since its free: by a bin's push (a local second free: the bin lists it now),
         * by another free's tag, by the program, or by the malloc that a copy of it left by.
         * None is applied: its alloc bit is set, and the apply would mark it freed under
         * whoever holds it now (a bin, or the program) */
        report_untagged("free", p, word);
    }
    return kept;
#else
    (void)objs; /* no bins, and no magazine fills */
    (void)ci;
    return n;
#endif
}

void nsp__cache_slab_set_up(struct nsp_cache *c, unsigned cls)
{
    uint64_t bit = 1ULL << (cls % 64);
    if (c->slabs_set[cls / 64] & bit)
        return;
    /* atomic: stats and the idle look read it without the lock */
    __atomic_store_n(&c->slabs_set[cls / 64], c->slabs_set[cls / 64] | bit, __ATOMIC_RELAXED);
    uint64_t cap = nsp__slab_cap(nsp__classes[cls].size);
    if (!cap || nsp__secure)
        return; /* no slab: left as mapped (cap 0, detached), its page unwritten */
    struct nsp_slab *m = &c->slabs[cls];
    /* detached and cap 0 until here: every path reads cap (acquire) before its sequence, so one
     * that sees this cap reads this cpu (slab.h, "Set-up") */
    m->cpu = c->rseq_cpu;
    __atomic_store_n(&m->cap, cap, __ATOMIC_RELEASE);
    atomic_store_explicit(&m->on, 1, memory_order_release);
}

/* Whether c's slab of class k is set up and attached: the look of every loop that detaches or
 * drains the slabs, which reads no slab that was not set up (its page stays unmapped:
 * nsp__cache_slab_is_set). */
static int slab_attached(const struct nsp_cache *c, unsigned k)
{
    return nsp__cache_slab_is_set(c, k) &&
           atomic_load_explicit(&c->slabs[k].on, memory_order_relaxed) != 0;
}

/* Applies detached magazine of c (magazine.h) and attaches it again, empty. Lock held, on == 0
 * and fenced: nobody else reads or writes it. */
static void mag_drain(struct nsp_cache *c)
{
    struct nsp_magazine *m = &c->mag;
    unsigned n = (unsigned)m->count;
    if (n) {
        nsp__magazine_apply(m->slot, nsp__cache_drop_listed(m->slot, n, c->index));
        m->flushes += n;
    }
    m->count = 0;
    atomic_store_explicit(&m->on, 1, memory_order_release);
}

/* Applies detached slab cls of c (slab.h) as remote frees, adds its pops to its node's totals
 * (each a free and a malloc that no span counted), and attaches it again, empty. Lock held,
 * on == 0 and fenced: nobody else reads or writes it. */
static void slab_drain(struct nsp_cache *c, unsigned cls)
{
    struct nsp_slab *m = &c->slabs[cls];
    unsigned n = (unsigned)(m->word & NSP_SLAB_COUNT);
    uint64_t pops = m->word >> 8;
    if (n)
        nsp__magazine_apply(m->slot, nsp__cache_drop_listed(m->slot, n, c->index));
    if (pops) {
        __atomic_store_n(&m->popped, m->popped + pops, __ATOMIC_RELAXED); /* stats read it */
        struct nsp_ledger_node *l = &nsp__ledger[c->node];
        uint64_t bytes = pops * nsp__classes[cls].size;
        atomic_fetch_add_explicit(&l->alloc_objects, pops, memory_order_relaxed);
        atomic_fetch_add_explicit(&l->alloc_bytes, bytes, memory_order_relaxed);
        atomic_fetch_add_explicit(&l->free_objects, pops, memory_order_relaxed);
        atomic_fetch_add_explicit(&l->free_bytes, bytes, memory_order_relaxed);
    }
    m->word = 0;
    atomic_store_explicit(&m->on, 1, memory_order_release);
}

/* The owner's drain of every slab that holds anything (its flush after a cycle, which a foreign
 * take did not do): each detached by a sequence on its cpu, or, off the cpu, all by stores and
 * one fence. Returns 0, or -1 if the cpu could not be fenced (then they stay attached). Lock
 * held. */
static int slabs_flush(struct nsp_cache *c)
{
    unsigned want[NSP_NUM_CLASSES], n = 0;
    for (unsigned k = 1; k < NSP_NUM_CLASSES; k++)
        if (slab_attached(c, k) && __atomic_load_n(&c->slabs[k].word, __ATOMIC_RELAXED))
            want[n++] = k;
    if (!n)
        return 0;
    int r = 0;
#ifdef NSP_RSEQ_LOCKS
    for (unsigned i = 0; i < n; i++) {
        while ((r = word_clear_rseq(&c->slabs[want[i]].on, c->rseq_cpu)) < 0)
            ;
        if (r == 0) { /* moved off the cpu: the others by stores and a fence */
            for (unsigned j = 0; j < i; j++)
                slab_drain(c, want[j]);
            memmove(want, want + i, (n - i) * sizeof want[0]);
            n -= i;
            break;
        }
    }
#endif
    if (r == 0) {
        for (unsigned i = 0; i < n; i++)
            atomic_store_explicit(&c->slabs[want[i]].on, 0, memory_order_relaxed);
        if (fence_cpu(c->rseq_cpu) != 0) {
            for (unsigned i = 0; i < n; i++)
                atomic_store_explicit(&c->slabs[want[i]].on, 1, memory_order_release);
            return -1;
        }
    }
    for (unsigned i = 0; i < n; i++)
        slab_drain(c, want[i]);
    return 0;
}

unsigned nsp__cache_take_slab_rseq(struct nsp_cache *c, unsigned cls, uintptr_t *out)
{
#ifdef NSP_RSEQ_LOCKS
    struct nsp_slab *m = &c->slabs[cls];
    for (;;) {
        uint64_t n;
        /* on m's cpu and attached: copy the top half, slot[count - n .. count) with n = count / 2,
         * out, then commit count - n. A restart rewrites only `out`, the caller's; the slots read
         * are below count, which no other sequence of the cpu rewrites before its own commit
         * (cache.h: a push writes past count); a foreign detach restarts this one or finds it
         * committed (the objects then the caller's). */
        __asm__ __volatile__(
            NSP_RSEQ_ENTER_ATTACHED("5f") /* on the slab's cpu, attached */
            "movq (%[m]), %%rax\n\t"
            "movzbl %%al, %%ecx\n\t" /* count */
            "movq %%rcx, %[n]\n\t"
            "shrq $1, %[n]\n\t" /* n = count / 2 */
            "jz 5f\n\t"
            "subq %[n], %%rcx\n\t" /* the first slot taken */
            "movq %[out], %%rdx\n\t"
            "8:\n\t"
            "movq 32(%[m],%%rcx,8), %%rsi\n\t"
            "movq %%rsi, (%%rdx)\n\t"
            "addq $8, %%rdx\n\t"
            "incq %%rcx\n\t"
            "movzbl %%al, %%esi\n\t"
            "cmpq %%rsi, %%rcx\n\t"
            "jb 8b\n\t"
            "subq %[n], %%rax\n\t"
            "movq %%rax, (%[m])\n\t" /* the commit: the top half is ours */
            "2:\n\t"
            "jmp 7f\n\t"
            NSP_RSEQ_ABORT_SIGNATURE
            "movq $-1, %[n]\n\t"
            "jmp 7f\n\t"
            ".popsection\n\t"
            "5:\n\t"
            "xorl %k[n], %k[n]\n\t"
            "7:\n\t"
            : [n] "=&r"(n)
            : [rs] "r"(__rseq_offset), [m] "r"(m), [out] "r"(out)
            : "memory", "cc", "rax", "rcx", "rdx", "rsi");
        if (n != (uint64_t)-1)
            return (unsigned)n;
    }
#else
    (void)c;
    (void)cls;
    (void)out;
    return 0;
#endif
}

int nsp__cache_slab_holds(const struct nsp_cache *c, unsigned cls, uintptr_t p)
{
    if (!nsp__cache_slab_is_set(c, cls))
        return 0; /* empty, and not read: its page stays unmapped (nsp__cache_slab_is_set) */
    const struct nsp_slab *m = &c->slabs[cls];
    uint64_t n = __atomic_load_n(&m->word, __ATOMIC_ACQUIRE) & NSP_SLAB_COUNT;
    for (uint64_t i = 0; i < n && i < NSP_SLAB_MAX; i++)
        if (__atomic_load_n(&m->slot[i], __ATOMIC_RELAXED) == p)
            return 1;
    return 0;
}

/* Detaches c's magazine by the owner's sequence (or a store and a fence off its cpu): 0, or -1
 * if the cpu could not be fenced (left attached). Lock held. */
static int mag_detach(struct nsp_cache *c)
{
    struct nsp_magazine *m = &c->mag;
    int r = 0;
#ifdef NSP_RSEQ_LOCKS
    while ((r = word_clear_rseq(&m->on, c->rseq_cpu)) < 0)
        ;
#endif
    if (r == 0) { /* not on the cpu: store, then fence */
        atomic_store_explicit(&m->on, 0, memory_order_relaxed);
        if (fence_cpu(c->rseq_cpu) != 0) {
            atomic_store_explicit(&m->on, 1, memory_order_release);
            return -1;
        }
    }
    return 0;
}

unsigned nsp__cache_take_magazine(struct nsp_cache *c, uintptr_t *out)
{
    struct nsp_magazine *m = &c->mag;
    if (!atomic_load_explicit(&m->on, memory_order_relaxed) ||
        !__atomic_load_n(&m->count, __ATOMIC_RELAXED) || mag_detach(c) != 0)
        return 0;
    unsigned n = (unsigned)m->count;
    for (unsigned i = 0; i < n; i++)
        out[i] = m->slot[i];
    m->flushes += n;
    m->count = 0;
    atomic_store_explicit(&m->on, 1, memory_order_release);
    return n;
}

unsigned nsp__cache_take_magazine_rseq(struct nsp_cache *c, uintptr_t *out)
{
#ifdef NSP_RSEQ_LOCKS
    struct nsp_magazine *m = &c->mag;
    for (;;) {
        uint64_t n;
        /* on m's cpu and attached: copy slot[0..count) out, then commit count = 0. A restart
         * (preemption, migration, a signal, a foreign taker's fence after its store of on = 0)
         * rewrites only `out`, the caller's; a push on the cpu is another sequence, so the two
         * never interleave; a foreign taker's detach either restarts this one or finds it
         * committed (the objects then the caller's, the count 0). */
        __asm__ __volatile__(
            NSP_RSEQ_ENTER_ATTACHED("5f") /* on the magazine's cpu, attached */
            "movq (%[m]), %[n]\n\t"
            "testq %[n], %[n]\n\t" /* not empty */
            "jz 5f\n\t"
            "xorl %%ecx, %%ecx\n\t"
            "8:\n\t"
            "movq 32(%[m],%%rcx,8), %%rax\n\t"
            "movq %%rax, (%[out],%%rcx,8)\n\t"
            "incq %%rcx\n\t"
            "cmpq %[n], %%rcx\n\t"
            "jb 8b\n\t"
            "movq $0, (%[m])\n\t" /* the commit: the magazine is empty, its objects ours */
            "2:\n\t"
            "jmp 7f\n\t"
            NSP_RSEQ_ABORT_SIGNATURE
            "movq $-1, %[n]\n\t"
            "jmp 7f\n\t"
            ".popsection\n\t"
            "5:\n\t"
            "xorl %k[n], %k[n]\n\t"
            "7:\n\t"
            : [n] "=&r"(n)
            : [rs] "r"(__rseq_offset), [m] "r"(m), [out] "r"(out)
            : "memory", "cc", "rax", "rcx");
        if (n != (uint64_t)-1)
            return (unsigned)n;
    }
#else
    (void)c;
    (void)out;
    return 0;
#endif
}

int nsp__cache_flush_magazine(struct nsp_cache *c)
{
    struct nsp_magazine *m = &c->mag;
    if (!atomic_load_explicit(&m->on, memory_order_relaxed) ||
        !__atomic_load_n(&m->count, __ATOMIC_RELAXED))
        return 0;
    if (mag_detach(c) != 0)
        return -1;
    mag_drain(c);
    return 0;
}

/* Detaches every attached bin of c (key = 0 on each, then one fence of its cpu) and folds them.
 * c is held by a foreign taker. Returns 0, or -1 if the fence failed (the keys are put back:
 * nobody relied on them, and the cache is then not taken). */
static int bins_detach_all(struct nsp_cache *c)
{
    uint64_t keys[NSP_NUM_CLASSES];
    int any = 0;
    for (unsigned k = 1; k < NSP_NUM_CLASSES; k++) {
        keys[k] = atomic_load_explicit(&c->bins[k].key, memory_order_relaxed);
        if (keys[k]) {
            atomic_store_explicit(&c->bins[k].key, 0, memory_order_relaxed);
            any = 1;
        }
    }
    /* the magazine too: a cycle's take of the cache applies the remote frees it holds */
    uint64_t mag_on = atomic_load_explicit(&c->mag.on, memory_order_relaxed);
    if (mag_on) {
        atomic_store_explicit(&c->mag.on, 0, memory_order_relaxed);
        any = 1;
    }
    /* and the slabs: their objects are allocated from their spans' view until drained (slab.h) */
    uint8_t slab_on[NSP_NUM_CLASSES];
    for (unsigned k = 1; k < NSP_NUM_CLASSES; k++) {
        slab_on[k] = (uint8_t)slab_attached(c, k);
        if (slab_on[k]) {
            atomic_store_explicit(&c->slabs[k].on, 0, memory_order_relaxed);
            any = 1;
        }
    }
    void (*window)(struct nsp_cache *) = atomic_load_explicit(&nsp__test_detach_window,
                                                              memory_order_relaxed);
    if (any && window)
        window(c); /* tests: a sequence that read a key before the stores may commit here */
    if (any && fence_cpu(c->rseq_cpu) != 0) {
        for (unsigned k = 1; k < NSP_NUM_CLASSES; k++)
            if (keys[k])
                atomic_store_explicit(&c->bins[k].key, keys[k], memory_order_release);
        if (mag_on)
            atomic_store_explicit(&c->mag.on, mag_on, memory_order_release);
        for (unsigned k = 1; k < NSP_NUM_CLASSES; k++)
            if (slab_on[k])
                atomic_store_explicit(&c->slabs[k].on, 1, memory_order_release);
        return -1;
    }
    for (unsigned k = 1; k < NSP_NUM_CLASSES; k++)
        bin_fold(c, k);
    if (mag_on)
        mag_drain(c);
    for (unsigned k = 1; k < NSP_NUM_CLASSES; k++)
        if (slab_on[k])
            slab_drain(c, k);
    return 0;
}

int nsp__cache_settle(struct nsp_cache *c, unsigned cls)
{
    struct nsp_bin *b = &c->bins[cls];
    uint64_t key = atomic_load_explicit(&b->key, memory_order_relaxed);
    if (key) {
        int r = 0;
#ifdef NSP_RSEQ_LOCKS
        while ((r = word_clear_rseq(&b->key, c->rseq_cpu)) < 0)
            ;
#endif
        if (r == 0) { /* moved off the bin's cpu since taking the lock: store, then fence */
            atomic_store_explicit(&b->key, 0, memory_order_relaxed);
            if (fence_cpu(c->rseq_cpu) != 0) {
                atomic_store_explicit(&b->key, key, memory_order_release);
                return -1;
            }
        }
    }
    bin_fold(c, cls);
    return 0;
}

/* The next key: never 0 (0 means detached). splitmix64 in the low 48 bits; the top 16 are every
 * key's (nsp__bin_key_top, magazine.h: not 0), so that a free can tell a word that is no link
 * without reading the bin. */
static uint64_t next_key(struct nsp_cache *c)
{
    uint64_t z = (c->key_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    z = (z & ~NSP_BIN_KEY_TOP_MASK) | nsp__bin_key_top;
    return z ? z : 1;
}

/* Bytes of free slots one attach lists: a few KiB, so that RSS follows use (only listed objects'
 * first words are written), and at least a few objects so that large classes still pair up. */
#define NSP_BIN_CARVE_BYTES 4096
#define NSP_BIN_CARVE_MIN 4
/* What a bin may list: this many carves (cache.h, "Why the list is bounded"). Listed objects
 * count as allocated, so in `over` a span's unspent charge may pass the window its cache
 * reserves by the bound's bytes (32 KiB, W/2, for a class of 1 KiB or less) besides the cursor's
 * word, and no more however many objects the program frees locally. Why eight: the push
 * re-derives its credit out of line once per (bound - listed) pushes, and a push at the bound
 * goes to the locked free, which folds the whole list and attaches the bin again with a fresh
 * carve (nsp__cache_reattach). Measured A/B against main (bench_host, medians of 7-9 alternated runs,
 * this VM shared): 4 carves: pairs of 256 B 1.04x main's time, Larson at 2 threads 0.80x its
 * throughput; 8 carves: pairs of 16-256 B and loops within 1% of main, Larson 0.93x (peak RSS
 * 6.40 against 6.51 MB); 16 carves: Larson 0.97x, RSS 6.61 MB. */
#define NSP_BIN_LISTED_CARVES 8

static void sweep_before_fresh(struct nsp_cache *c, struct nsp_span *s);

/* Attaches settled bin cls to the cached span with its next free slots; with none, attached
 * empty only when `empty_ok` (the span is full and the slab serves: its local frees must still
 * push), else left detached. Lock held, key == 0. */
static void bin_attach(struct nsp_cache *c, unsigned cls, int empty_ok)
{
    struct nsp_span *s = c->spans[cls];
    struct nsp_bin *b = &c->bins[cls];
    if (s == &nsp__empty_span)
        return;
    uint32_t want = NSP_BIN_CARVE_BYTES / s->elemsize;
    if (want < NSP_BIN_CARVE_MIN)
        want = NSP_BIN_CARVE_MIN;
    uint64_t key = next_key(c);
    uintptr_t head = 0;
    uint64_t *prev = NULL;
    uint32_t n = 0;
    seq_begin(b); /* odd: the carve raises alloc_count before the list is seen */
    while (n < want) {
        sweep_before_fresh(c, s); /* a carve past the frontier takes remote frees in first */
        /* the cursor's word at once (span.h); a slot at a time only where the scan goes on.
         * Dirty: not past the frontier in the same step (the step after sweeps first) */
        uintptr_t got[64];
        uint32_t room = want - n < 64 ? want - n : 64;
        if (atomic_load_explicit(&s->dirty, memory_order_relaxed))
            room = nsp__span_room_below_frontier(s, room);
        uint32_t k = nsp__span_carve(s, room, got);
        if (!k && !(got[0] = (uintptr_t)nsp__span_next_free(s)))
            break;
        for (uint32_t i = 0, m = k ? k : 1; i < m; i++, n++) {
            if (prev)
                *prev = (uint64_t)got[i] ^ key;
            else
                head = got[i];
            prev = (uint64_t *)got[i];
        }
    }
    /* over: the carve raised alloc_count, and the list goes out when the key is stored below:
     * the charge covers it first (ledger.h) */
    nsp__ledger_cover(s, c->pending);
    b->full = !n;
    if (!n && !empty_ok) {
        seq_end(b);
        return;
    }
    if (n)
        *prev = key; /* the end: 0, encoded */
    b->word = (uint64_t)head << 16;
    __atomic_store_n(&b->base, s->base, __ATOMIC_RELAXED);
    /* the carved part (the frontier after this carve): a push of a slot past it misses, and
     * every free slot below it is tagged (span.h), so the push needs no bitmap (cache.h) */
    __atomic_store_n(&b->size, (uint64_t)s->frontier * s->elemsize, __ATOMIC_RELAXED);
    b->saved_key = key;
    b->carved = n;
    b->credit = (int32_t)(NSP_BIN_LISTED_CARVES * want - n); /* the list's bound, less carved */
    b->seen = 0;
    c->bin_fills++;
    atomic_store_explicit(&b->key, key, memory_order_release); /* attached */
    seq_end(b);
}

/* A refill: bin_attach, left detached when the span has no free slot. */
static void bin_fill(struct nsp_cache *c, unsigned cls)
{
    bin_attach(c, cls, 0);
}

int nsp__cache_bound_missed(const struct nsp_cache *c, unsigned cls)
{
    /* the push's take below 0 with the bin still attached: its out-of-line re-derivation missed
     * (the list at its bound, or the pops at NSP_BIN_POPS_FOLD). A racy read of the owner's
     * fields (another thread of the cpu may push meanwhile): a hint, never an object. */
    const struct nsp_bin *b = &c->bins[cls];
    return atomic_load_explicit(&b->key, memory_order_relaxed) != 0 &&
           __atomic_load_n(&b->credit, __ATOMIC_RELAXED) < 0;
}

void nsp__cache_reattach(struct nsp_cache *c, unsigned cls)
{
    /* only the thread's own bins (exact and NSP_SECURE have none), and not across a cycle: a
     * stale span goes back at the class's next malloc (nsp__cache_alloc_bin), as before */
    if (c->bins_on && nsp__tb == c && !atomic_load_explicit(&c->bins[cls].key,
                                                            memory_order_relaxed) &&
        c->flush_gen == atomic_load_explicit(&nsp__sweepgen, memory_order_relaxed))
        bin_attach(c, cls, 0);
}

/* ---- the foreign lock (continued) ------------------------------------------------------------- */

int nsp__cache_lock_foreign(struct nsp_cache *c)
{
    if (c->rseq_cpu < 0) /* CAS takers only: the CAS alone decides */
        return foreign_cas(c);
    /* A try-lock, as the cache's own is: a foreign taker never blocks (one that runs inside an
     * allocation could otherwise wait on nsp__cache_lock_all, which waits on its cache). */
    if (pthread_mutex_trylock(&foreign_mutex) != 0)
        return 0;
    int r = take_foreign(c) > 0;
    if (r && bins_detach_all(c) != 0) {
        nsp__cache_unlock(c);
        r = 0;
    }
    pthread_mutex_unlock(&foreign_mutex);
    return r;
}

/* Fences that fail in a row before lock_all leaves a cache out. A fence fails for good (a seccomp
 * filter, a cpuset: fence_cpu), not by bad luck, so a few tries only cover a cpu being hotplugged
 * between two of them; a busy cache (its lock held) is waited for as long as it takes. */
#define NSP_LOCK_ALL_FENCE_TRIES 4

/* Says once per process that a cache was left out, naming its cpu. Allocates nothing. */
static void report_left_out(const struct nsp_cache *c)
{
    static _Atomic int said;
    if (atomic_exchange(&said, 1))
        return;
    char msg[240];
    int n = snprintf(msg, sizeof msg,
                     "numaspan: cache %u: cpu %d cannot be fenced (membarrier and a move onto the "
                     "cpu both refused); it is left out when every cache is taken (fork, the "
                     "recount)\n",
                     c->index, (int)c->rseq_cpu);
    if (n > 0)
        (void)!write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
}

unsigned nsp__cache_lock_all(void)
{
    pthread_mutex_lock(&foreign_mutex);
    unsigned left = 0;
    for (unsigned i = 0; i < nsp__ncaches; i++) {
        struct nsp_cache *c = &nsp__caches[i];
        c->all_held = 0;
        if (atomic_load_explicit(&c->lock, memory_order_relaxed) == NSP_CACHE_RETIRED) {
            left++;
            continue;
        }
        for (int failures = 0;;) {
            int r = take_foreign(c);
            if (r > 0) {
                if (c->rseq_cpu < 0 || bins_detach_all(c) == 0) {
                    c->all_held = 1;
                    break;
                }
                nsp__cache_unlock(c);
                r = -1;
            }
            /* Unfenced, the cache cannot be owned (a sequence may still commit to it): left out,
             * as it was, and said so. Its owner goes on using it; the caller knows. */
            if (r < 0 && ++failures >= NSP_LOCK_ALL_FENCE_TRIES) {
                report_left_out(c);
                left++;
                break;
            }
            sched_yield();
        }
    }
    return left;
}

void nsp__cache_unlock_all(void)
{
    for (unsigned i = 0; i < nsp__ncaches; i++)
        if (nsp__caches[i].all_held) {
            nsp__caches[i].all_held = 0;
            nsp__cache_unlock(&nsp__caches[i]);
        }
    pthread_mutex_unlock(&foreign_mutex);
}

void nsp__cache_forked_child(void)
{
    for (unsigned i = 0; i < nsp__ncaches; i++) {
        struct nsp_cache *c = &nsp__caches[i];
        if (c->all_held || !atomic_load_explicit(&c->lock, memory_order_relaxed))
            continue;
        /* Left out by fork's lock_all and held at the fork by a thread the child does not have:
         * its fields may be half-changed and nobody will release it. Retired: never taken
         * again, its bins detached (the child's one thread runs no sequence: no fence needed),
         * its spans and their charges kept (an overestimate, never a loss). Its magazine too:
         * no taker will flush it again, so a remote free of this cpu goes the direct way (what
         * it holds already stays allocated: leaked, as the spans' charges are kept). */
        atomic_store_explicit(&c->lock, NSP_CACHE_RETIRED, memory_order_relaxed);
        for (unsigned k = 1; k < NSP_NUM_CLASSES; k++)
            atomic_store_explicit(&c->bins[k].key, 0, memory_order_relaxed);
        atomic_store_explicit(&c->mag.on, 0, memory_order_relaxed);
        for (unsigned k = 1; k < NSP_NUM_CLASSES; k++) /* and its slabs, likewise */
            if (slab_attached(c, k))
                atomic_store_explicit(&c->slabs[k].on, 0, memory_order_relaxed);
    }
    /* A bins' refill in flight at the fork (between its unlock and its re-take, no cache held:
     * nsp__cache_alloc_bin) reserved its span's bytes in the total, and its thread, which gives
     * them back or installs the span, is not in the child: the total is what the caches hold
     * (retired ones included, their spans kept). That refill's span itself stays CACHED by no
     * cache's spans[] in the child: leaked, as a retired cache's are. */
    size_t held = 0;
    for (unsigned i = 0; i < nsp__ncaches; i++)
        held += nsp__caches[i].held_bytes;
    atomic_store_explicit(&nsp__cached_total, held, memory_order_relaxed);
}

/* ---- slow paths ------------------------------------------------------------------------------- */

void nsp__cache_spill_counts(struct nsp_span *s)
{
    /* where the release books them (span_detach, nsp__ledger_release): the central's count of
     * its spans' cached mallocs and the node's totals */
    __atomic_fetch_add(&nsp__central(s->node, s->sizeclass)->cached_mallocs, s->nmalloc,
                       __ATOMIC_RELAXED);
    nsp__ledger_flush_counts(s);
}

/* What a cached span of class cls reserves: its charge window (sizeclass.h), not its span. In
 * `over` a cached span is charged at most a window ahead of what its cache handed out (ledger.h),
 * so the caps and the pacer's budget, which bound what caches hold charged and unallocated
 * (DESIGN.md §6), count a window per span whatever the span's size; for a class whose span did
 * not grow the window is the span. held_bytes, nsp__cached_total, make_room and the budget's
 * floor (nsp__ledger_reserve_room) all count this. */
static size_t reserved_bytes(unsigned cls)
{
    return nsp__class_window_bytes(cls);
}

/* The cache's half of a release: the span of class cls (its bin settled) taken out of spans[],
 * its charge reconciled (ledger.h). The central's half (uncacheSpan, which may wait for the
 * central's mutex) is the caller's, with the returned count of allocations. Lock held. */
static struct nsp_span *span_detach(struct nsp_cache *c, unsigned cls, uint32_t *mallocs)
{
    struct nsp_span *s = c->spans[cls];
    c->spans[cls] = &nsp__empty_span;
    c->bins[cls].full = 0; /* the next span starts with its own slots (slab.h) */
    c->held_bytes -= reserved_bytes(cls);
    atomic_fetch_sub_explicit(&nsp__cached_total, reserved_bytes(cls), memory_order_relaxed);
    c->releases++;
    *mallocs = s->nmalloc;
    nsp__ledger_release(s, c->pending);
    return s;
}

int nsp__cache_release(struct nsp_cache *c, unsigned cls)
{
    if (c->spans[cls] == &nsp__empty_span)
        return 0;
    if (nsp__cache_settle(c, cls) != 0) /* its bin's objects are the span's again first */
        return -1;
    uint32_t mallocs;
    struct nsp_span *s = span_detach(c, cls, &mallocs);
    nsp__central_uncache_span(s, mallocs);
    return 0;
}

void nsp__cache_release_all(struct nsp_cache *c)
{
    for (unsigned k = 1; k < NSP_NUM_CLASSES; k++)
        nsp__cache_release(c, k);
}

void nsp__cache_flush(struct nsp_cache *c, uint32_t sg)
{
    nsp__cache_flush_magazine(c); /* its remote frees first: the releases then count them */
    slabs_flush(c);               /* and its slabs' objects, likewise (slab.h) */
    nsp__cache_release_all(c);
    nsp__ledger_flush(c->pending);
    c->flush_gen = sg;
}

/* Keeps the cache under its cap before it takes `need` more bytes: releases the largest spans
 * of other classes first (they cost the most to hold and least often pay back). */
static void make_room(struct nsp_cache *c, unsigned cls, size_t need)
{
    while (c->held_bytes + need > nsp__cache_max) {
        unsigned victim = 0;
        for (unsigned k = 1; k < NSP_NUM_CLASSES; k++)
            if (k != cls && c->spans[k] != &nsp__empty_span &&
                (!victim || reserved_bytes(k) >= reserved_bytes(victim)))
                victim = k;
        if (!victim)
            return;
        if (nsp__cache_release(c, victim) != 0)
            return; /* unsettled (its cpu could not be fenced): over the cap for a while */
        c->cap_releases++;
    }
}

/* In-place sweep by the owning cache. */
static void sweep_in_place(struct nsp_cache *c, struct nsp_span *s)
{
    uint32_t doubles;
    uintptr_t first;
    uint32_t applied = nsp__span_sweep(s, &doubles, &first);
    c->swept_objects += applied;
    c->sweeps++;
    nsp__ledger_count(s, -(int64_t)applied); /* a cached span's charge waits for its release */
    if (doubles) {
        nsp__ledger_sweep_doubles(s, doubles, c->pending);
        atomic_fetch_add(&nsp__errors[NSP_ERR_DOUBLE_FREE], doubles - 1);
        nsp__report_error(NSP_ERR_DOUBLE_FREE, "free", (void *)first);
    }
}

/* An object from the cached span s, counted as the fast path counts it. a0: s->alloc_count before
 * the hand-out, which may also have kept back a slot found written over (span.h,
 * nsp__span_untagged: in nmalloc already): `exact` charges each slot the hand-out allocated. */
static void *counted(struct nsp_cache *c, struct nsp_span *s, uint32_t a0, void *p)
{
    if (p) {
        s->nmalloc++;
        nsp__cache_counts_check(s);
    }
    if (s->alloc_count != a0)
        nsp__ledger_exact_objects(s, (int64_t)(s->alloc_count - a0), c->pending);
    nsp__ledger_cover(s, c->pending); /* over: a new cursor word may pass the charge (ledger.h) */
    return p;
}

/* Sweeps s in place when remote frees dirtied it and its cursor would otherwise take a fresh
 * slot (nsp__span_next_is_fresh). Not when the cursor reaches the span's end: until swept, a
 * remote free's slot looks allocated, so the cursor ran on through fresh slots and every cached
 * span was touched to its end before one was reused (Larson at 2 threads, whose slab overflows
 * are remote frees: peak RSS 7.1 -> 6.3-6.6 MB, medians; tests/test_span_protocol.c). Not at
 * every refill either: while the cursor has slots ahead that were handed out before, no fresh
 * memory is at stake, and a sweep there took the lines of the freed and alloc words from the
 * cpu freeing into them once per refill (producer/consumer: the producer refilled every 64
 * objects, and each sweep cost both sides misses on those lines; sweeping before fresh slots
 * only, once a pass through the span: 1.1-1.3x, README). Lock held. */
static void sweep_before_fresh(struct nsp_cache *c, struct nsp_span *s)
{
    if (atomic_load_explicit(&s->dirty, memory_order_relaxed) && nsp__span_next_is_fresh(s))
        sweep_in_place(c, s);
}

/* An object of the cached span s: after a sweep before fresh slots (sweep_before_fresh), then
 * past its cursor (first fit: the slots swept come first), or, when nothing is, after a rewind
 * (local frees behind the cursor may have left room). NULL when s is really full. Lock held. */
static void *from_cached(struct nsp_cache *c, struct nsp_span *s)
{
    sweep_before_fresh(c, s);
    uint32_t a0 = s->alloc_count;
    void *p = nsp__span_alloc_fast(s);
    if ((p = counted(c, s, a0, p ? p : nsp__span_next_free(s))))
        return p;
    if (atomic_load_explicit(&s->dirty, memory_order_relaxed))
        sweep_in_place(c, s); /* remote frees that came meanwhile */
    if (s->alloc_count < s->nelems) {
        nsp__span_rewind(s);
        a0 = s->alloc_count;
        return counted(c, s, a0, nsp__span_next_free(s));
    }
    return NULL;
}

void *nsp__cache_alloc_slow(struct nsp_cache *c, unsigned cls)
{
    uint32_t sg = atomic_load_explicit(&nsp__sweepgen, memory_order_relaxed);
    if (c->flush_gen != sg) /* a cycle passed: stale spans go back before we allocate again */
        nsp__cache_flush(c, sg);
    struct nsp_span *s = c->spans[cls];
    void *p;
    if (s != &nsp__empty_span) {
        if ((p = from_cached(c, s)))
            return p;
        if (nsp__cache_release(c, cls) != 0)
            return nsp__central_alloc(c->node, cls);
    }
    size_t bytes = reserved_bytes(cls);
    size_t cached = atomic_load_explicit(&nsp__cached_total, memory_order_relaxed) + bytes;
    /* all caches together are at their cap, or at the pacer's reservation budget (a span
     * cached in `over` is charged a window ahead), at least one of each class in use (ledger.h):
     * the central serves the object, charged as it is */
    int64_t budget = atomic_load_explicit(&nsp__reserve_budget, memory_order_relaxed);
    if (budget != INT64_MAX)
        budget = nsp__ledger_reserve_room(cls, (int64_t)bytes, budget);
    if (cached > nsp__cache_total_max || (int64_t)cached > budget)
        return nsp__central_alloc(c->node, cls);
    make_room(c, cls, bytes);
    s = nsp__central_cache_span(c->node, cls, c->index);
    if (!s)
        return NULL;
    c->spans[cls] = s;
    c->held_bytes += bytes;
    atomic_fetch_add_explicit(&nsp__cached_total, bytes, memory_order_relaxed);
    c->refills++;
    nsp__ledger_flush(c->pending); /* negative changes are applied at the next refill */
    nsp__ledger_refill(s, c->pending);
    /* the first object as every later one: after remote frees that came since the central
     * swept s, when it would be a fresh slot (test_bins, a_refills_first_object_sweeps_...) */
    sweep_before_fresh(c, s);
    uint32_t a0 = s->alloc_count;
    return counted(c, s, a0, nsp__span_next_free(s));
}

_Atomic uint64_t nsp__cache_refill_lost;
void (*_Atomic nsp__test_refill_window)(struct nsp_cache *c);

/* Takes c's lock again after central work, by the sequence (cache.h): 1 if taken, 0 if it is
 * held or the thread is no longer on c's cpu (then it does not wait: the caller gives up). */
static int retake(struct nsp_cache *c)
{
#ifdef NSP_RSEQ_LOCKS
    int r;
    while ((r = nsp__rseq_trylock(&c->lock, c->rseq_cpu)) < 0)
        ;
    return r > 0;
#else
    (void)c;
    return 0;
#endif
}

void *nsp__cache_alloc_bin(struct nsp_cache *c, unsigned cls)
{
    if (nsp__cache_settle(c, cls) != 0) {
        nsp__cache_unlock(c);
        return NULL;
    }
    uint32_t sg = atomic_load_explicit(&nsp__sweepgen, memory_order_relaxed);
    if (c->flush_gen != sg) /* a cycle passed: stale spans go back before we allocate again */
        nsp__cache_flush(c, sg);
    struct nsp_span *old = c->spans[cls];
    uint32_t mallocs = 0;
    void *p;
    if (old == &nsp__empty_span) {
        old = NULL;
    } else {
        if ((p = from_cached(c, old))) {
            /* attached even when p was the span's last free slot (empty, full = 1, as below):
             * left detached, every free of the span's objects on this cpu went the locked way
             * until the owner's next malloc, and a consumer sharing the producer's cpu frees a
             * whole batch in that window (producer/consumer at 2 threads: 4,096 locked frees
             * per span used up, a third of all frees; docs/host-rounds.md, 24) */
            bin_attach(c, cls, 1);
            nsp__cache_unlock(c);
            return p;
        }
        /* full: objects freed on this cpu first (slab.h), before a span from the central. Not
         * before the cached span's own free slots: a span refilled from itself keeps the live
         * objects together (its bin then takes most frees: measured, Larson at 2 threads, a
         * slab popped first left 35-55% of frees missing the bin, against 4-17%, and ran at
         * half the speed) */
#ifdef NSP_RSEQ_LOCKS
        if ((p = nsp__slab_alloc(c, cls))) {
            bin_attach(c, cls, 1); /* empty, full = 1: the next mallocs pop the slab first */
            nsp__cache_unlock(c);
            return p;
        }
#endif
        old = span_detach(c, cls, &mallocs); /* full: the central's half comes after the lock */
    }
    /* The refill's bytes are reserved in the total now, so that two caches' refills in flight
     * cannot both pass the caps; given back if the span is not installed. */
    size_t bytes = reserved_bytes(cls);
    size_t cached = atomic_fetch_add_explicit(&nsp__cached_total, bytes, memory_order_relaxed) +
                    bytes;
    int64_t budget = atomic_load_explicit(&nsp__reserve_budget, memory_order_relaxed);
    /* below the trigger, at least two spans of each class in use (ledger.h) */
    if (budget != INT64_MAX)
        budget = nsp__ledger_reserve_room(cls, (int64_t)bytes, budget);
    int over = cached > nsp__cache_total_max || (int64_t)cached > budget;
    if (!over)
        make_room(c, cls, bytes);
    unsigned node = c->node, index = c->index;
    nsp__cache_unlock(c);
    /* No cache lock from here to the re-take: a preemption in the central or the page heap
     * (their mutexes, a sweep, mmap) no longer leaves the cpu's other threads a busy cache. The
     * spans in flight are CACHED by c but not in its spans[]: a free of their objects goes the
     * remote way (free.c re-checks spans[] under the lock), a foreign taker or a cycle does not
     * see them, and their charges are settled (the old one's at its detach, the new one's is
     * still the central's: the refill's charge is made at the install). */
    if (old)
        nsp__central_uncache_span(old, mallocs);
    if (over) {
        /* all caches together are at their cap, or at the pacer's reservation budget (a span
         * cached in `over` is charged a window ahead): the central serves the object, charged
         * as it is */
        atomic_fetch_sub_explicit(&nsp__cached_total, bytes, memory_order_relaxed);
        return nsp__central_alloc(node, cls);
    }
    struct nsp_span *s = nsp__central_cache_span_unheld(node, cls, index);
    if (!s) {
        atomic_fetch_sub_explicit(&nsp__cached_total, bytes, memory_order_relaxed);
        return NULL;
    }
    void (*window)(struct nsp_cache *) = atomic_load_explicit(&nsp__test_refill_window,
                                                              memory_order_relaxed);
    if (window)
        window(c); /* tests: the cache taken, or a cycle run, before the re-take */
    /* Installed only if nothing moved meanwhile: the cache is free on this cpu, no cycle began
     * since the detach (one that did released c's spans and expects none from before it), and
     * no other thread of the cpu installed a span of cls (its bin is then that span's). */
    int taken = retake(c);
    if (taken && atomic_load_explicit(&nsp__sweepgen, memory_order_relaxed) == sg &&
        c->flush_gen == sg && c->spans[cls] == &nsp__empty_span &&
        !atomic_load_explicit(&c->bins[cls].key, memory_order_relaxed)) {
        make_room(c, cls, bytes); /* other classes may have been refilled meanwhile */
        nsp__cache_slab_set_up(c, cls); /* at the class's first span here (slab.h) */
        c->spans[cls] = s;
        c->held_bytes += bytes;
        c->refills++;
        nsp__ledger_flush(c->pending); /* negative changes are applied at the next refill */
        nsp__ledger_refill(s, c->pending);
        /* a remote free may have landed on s since its central swept it (the window above):
         * swept in before the first object when that would be a fresh slot, as bin_fill's carve
         * does before each of its steps (test_bins, a_refills_first_object_sweeps_...) */
        sweep_before_fresh(c, s);
        uint32_t a0 = s->alloc_count;
        p = counted(c, s, a0, nsp__span_next_free(s));
        bin_fill(c, cls);
        nsp__cache_unlock(c);
        return p;
    }
    if (taken)
        nsp__cache_unlock(c);
    /* Not installed: the span goes back as it came (never charged as cached, no allocation
     * made from it), and the caller takes this object from the node's transfer. */
    atomic_fetch_add_explicit(&nsp__cache_refill_lost, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&nsp__cached_total, bytes, memory_order_relaxed);
    nsp__central_uncache_span(s, 0);
    return NULL;
}

/* ---- lock-free reading ----------------------------------------------------------------------- */

/* The owner's plain fields, read as the owner may be writing them (cache.h says why that is
 * enough). Not instrumented by ThreadSanitizer: these races are the design, not a bug. */
#define RACY(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

/* s's charge less the bytes of its live objects: `slots` allocated slots (alloc_count as read by
 * the caller) less remote frees not yet swept. s was c's span of class k when the caller read it,
 * but its descriptor may be handed back and its pages set up again while it is read, and then its
 * slot may describe another span or nothing (a dead one: pageheap.h). So no
 * pointer is taken from it: the freed bitmap is found from the descriptor's own
 * place in its arena and class k's geometry (where nsp__span_init_small puts it), which stays in
 * the arena's metadata whatever the slot holds now (nsp__cache_read then drops what it read of a
 * span let go meanwhile). A span caught between owners, or of an arena not linked yet, counts no
 * remote frees. */
__attribute__((no_sanitize("thread"))) static int64_t span_unspent(unsigned k,
                                                                   const struct nsp_span *s,
                                                                   int64_t slots)
{
    const struct nsp_sizeclass *kc = &nsp__classes[k];
    int64_t live = slots;
    const struct nsp_arena *ar;
    uint32_t start;
    if (atomic_load_explicit(&s->dirty, memory_order_relaxed) &&
        (ar = nsp__arena_of_desc(s, kc->npages, &start))) {
        uint32_t nw = (kc->nelems + 63) / 64;
        const _Atomic uint64_t *freed =
            (const _Atomic uint64_t *)nsp__span_bitmaps_at(ar, start) +
            nsp__span_freed_offset(nw);
        for (uint32_t w = 0; w < nw; w++)
            live -= nsp__popcount64(atomic_load_explicit(&freed[w], memory_order_relaxed));
    }
    return atomic_load_explicit(&s->charge, memory_order_relaxed) - live * (int64_t)kc->size;
}

/* One clean reading of bin b over span s (bin_reading). */
struct bin_look {
    int64_t slots;   /* s's alloc_count: allocated slots, the listed objects among them */
    int64_t listed;  /* objects in the bin's list */
    int64_t pops;    /* the bin's pops since its attach (allocations not yet in nmalloc) */
    int64_t carved;  /* objects the attach put in the list */
    int64_t nmalloc, nfree; /* s's counts, read in the same window */
};

/* Bin b's listed objects and pops, for a span s that its cache caches, read while the owner may
 * be popping and pushing: 1 with *l filled when no fold or fill ran meanwhile (seq even and
 * unchanged), 0 otherwise. Each link is checked to be an object of s before it is read (a span's
 * memory stays mapped), and the walk is bounded, so a list that changes under it costs accuracy,
 * never a fault; s's counts are read inside the same window. */
__attribute__((no_sanitize("thread"))) static int bin_reading(const struct nsp_bin *b,
                                                              const struct nsp_span *s,
                                                              struct bin_look *l)
{
    uint32_t q = atomic_load_explicit(&b->seq, memory_order_acquire);
    if (q & 1)
        return 0;
    l->slots = (int64_t)RACY(s->alloc_count);
    l->nmalloc = (int64_t)RACY(s->nmalloc);
    l->nfree = (int64_t)RACY(s->nfree);
    uint64_t w = RACY(b->word), key = RACY(b->saved_key);
    int64_t n = 0;
    l->pops = l->carved = 0;
    if (RACY(b->base) == s->base) {
        uint32_t nelems = RACY(s->nelems);
        for (uintptr_t p = (uintptr_t)(w >> 16); p && n < (int64_t)nelems; n++) {
            if (nsp__span_index(s, p) == UINT32_MAX)
                break;
            p = (uintptr_t)(RACY(*(const uint64_t *)p) ^ key);
        }
        l->pops = (int64_t)(w & NSP_BIN_POPS);
        l->carved = (int64_t)RACY(b->carved);
    }
    l->listed = n;
    atomic_thread_fence(memory_order_acquire);
    return atomic_load_explicit(&b->seq, memory_order_relaxed) == q;
}

__attribute__((no_sanitize("thread"))) int nsp__cache_span_counts(const struct nsp_span *s,
                                                                  struct nsp_cached_counts *out)
{
    uint32_t ci = RACY(s->cache);
    unsigned k = RACY(s->sizeclass);
    const struct nsp_cache *c = ci < nsp__ncaches ? &nsp__caches[ci] : NULL;
    if (c && c->bins_on && k < NSP_NUM_CLASSES && RACY(c->spans[k]) == s)
        for (int tries = 0; tries < 4; tries++) {
            struct bin_look l;
            if (!bin_reading(&c->bins[k], s, &l))
                continue;
            /* the fold's arithmetic (bin_fold): listed = carved - pops + pushes */
            int64_t pushes = l.listed + l.pops - l.carved;
            out->slots = l.slots - l.listed;
            out->mallocs = l.nmalloc + l.pops;
            out->frees = l.nfree + (pushes > 0 ? pushes : 0);
            return 1;
        }
    /* no bins, or none attached to s, or a reading that kept changing: the span's own counts
     * (a listed object then counts as allocated, the overestimate) */
    out->slots = (int64_t)RACY(s->alloc_count);
    out->mallocs = (int64_t)RACY(s->nmalloc);
    out->frees = (int64_t)RACY(s->nfree);
    return !(c && c->bins_on && k < NSP_NUM_CLASSES && RACY(c->spans[k]) == s);
}

__attribute__((no_sanitize("thread"))) void nsp__cache_read(const struct nsp_cache *c,
                                                            struct nsp_cache_reading *r)
{
    for (unsigned n = 0; n < nsp__nnodes; n++)
        r->pending += RACY(c->pending[n]);
    size_t held = RACY(c->held_bytes);
    r->held += (int64_t)held;
    if (!held)
        return;
    for (unsigned k = 1; k < NSP_NUM_CLASSES; k++) {
        struct nsp_span *s = RACY(c->spans[k]);
        if (s == &nsp__empty_span ||
            atomic_load_explicit(&s->state, memory_order_acquire) != NSP_SPAN_CACHED ||
            RACY(s->cache) != c->index)
            continue;
        /* the size from class k, as span_unspent's: s's words may be another span's by now */
        int64_t slots = 0, listed = 0, pops = 0, size = (int64_t)nsp__classes[k].size;
        /* a bin's listed objects hold their slots but are free, and its pops are allocations
         * (both read with the slot count they go with); without a clean reading the listed
         * objects count as live */
        struct bin_look l;
        if (c->bins_on && bin_reading(&c->bins[k], s, &l)) {
            slots = l.slots;
            listed = l.listed;
            pops = l.pops;
        } else {
            slots = (int64_t)RACY(s->alloc_count);
        }
        int64_t unspent = span_unspent(k, s, slots - listed);
        int64_t unflushed = ((int64_t)RACY(s->nmalloc) + pops) * size;
        /* read while s was still c's: a span is gone from c's slot before it is let go, and its
         * pages can be set up again (its descriptor's words another span's: span_unspent) */
        atomic_thread_fence(memory_order_acquire);
        if (RACY(c->spans[k]) != s)
            continue;
        r->unspent += unspent;
        r->unflushed += unflushed;
    }
}

__attribute__((no_sanitize("thread"))) uint64_t nsp__cache_fingerprint(const struct nsp_cache *c,
                                                                      size_t *held)
{
    uint64_t f = *held = RACY(c->held_bytes);
    uint64_t ops[4] = {RACY(c->refills), RACY(c->releases), RACY(c->bin_fills), RACY(c->sweeps)};
    for (unsigned i = 0; i < 4; i++)
        f = (f ^ ops[i]) * 0x100000001b3ULL;
    for (unsigned k = 1; k < NSP_NUM_CLASSES; k++) {
        const struct nsp_span *s = RACY(c->spans[k]);
        uint64_t h = (uint64_t)(uintptr_t)s;
        /* a span descriptor stays mapped (arenas are never unmapped), whoever owns it now */
        if (s != &nsp__empty_span)
            h ^= RACY(s->alloc_count) ^ (uint64_t)RACY(s->nmalloc) << 21 ^
                 (uint64_t)RACY(s->nfree) << 42;
        if (c->bins_on) /* a slab's word changes at every push and pop (its pops only grow) */
            h ^= (RACY(c->bins[k].word) ^
                  (nsp__cache_slab_is_set(c, k) ? RACY(c->slabs[k].word) << 1 : 0)) *
                 0x9e3779b97f4a7c15ULL;
        /* splitmix's mix: a change anywhere flips about half of f's bits */
        f = (f ^ h) * 0xbf58476d1ce4e5b9ULL;
        f ^= f >> 31;
    }
    return f;
}
