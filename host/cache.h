/*
 * host/cache.h — core caches: one per core of the topology, one span per size class, and on the
 * real machine one restartable bin per size class in front of that span (DESIGN.md §3, "second
 * generation of the fast path").
 *
 * Owns: the caches, their lock word, their bins, their remote-free magazines and their object
 * slabs (slab.h).
 *
 * The bin (struct nsp_bin). An rseq cache (one cpu, rseq registered, not NSP_SECURE, not the
 * `exact` ledger) keeps, per class, an intrusive free list of objects of its cached span (the
 * span's objects only: a bin never holds another span's):
 *
 *   word   (head << 16) | pops. head: the first free object (0: empty); pops: pops since the bin
 *          was attached (below 2^16: past NSP_BIN_POPS_FOLD a push misses, and the slow path
 *          folds them into the span's count). The one word every sequence commits.
 *   key    the span's link key for this attachment; 0 = detached. Each free object's first word
 *          holds (next ^ key): a stray write or a second free of a listed object is caught when
 *          the link is decoded (mimalloc's encoded free lists).
 *   base, size   the carved part of the cached span, [base, base + size): size is the span's
 *          frontier in bytes at the attach (span.h), where a decoded link must point and where
 *          a pushed object must lie.
 *
 *   malloc = one restartable sequence: cpu, key != 0, head != 0, link decodes into the span,
 *            then the commit stores word = (next << 16) | pops + 1: the commit IS the pop.
 *   local free (the span is the one this bin holds) = one sequence that writes the object's
 *            link and commits word = (object << 16) | pops: the commit IS the push. It misses
 *            when the list is at its bound (credit, seen: a few times the carve, cache.c), so
 *            the free goes to the locked path, which folds the bin.
 *   No lock is held between sequences; a thread preempted anywhere on the fast path holds nothing.
 *
 * Why the list is bounded (issue 11): a listed object counts as allocated from its span's view,
 * so in `over` the span's charge cannot come down while it stays listed (ledger.h: covered counts
 * the listed objects), and only a slow path can lower it. Unbounded, local frees followed by a
 * steady state of malloc/free pairs kept a span's charge at its fullest moment (up to the span's
 * 4 windows against the one its cache reserves) and every freed object listed (RSS). Bounded,
 * what a bin lists is at most a few times its carve, as the cursor's word is at most 63 slots.
 *
 * Objects in a bin's list have their alloc bit set (from the span's view they are the cache's),
 * so remote freers and sweeps never touch them; the span's exact count is alloc_count minus the
 * list's length, and folding a bin (below) makes it so again before anything reads the span.
 *
 * The push's guard reads no bitmap (issue 11; mimalloc's local free reads none either). What it
 * relies on, for every slot of the bin's span below base + size (span.h, "the free tag"; the heap
 * check asserts it, check.c), whose first word then says which of these it is:
 *   live        the program's (alloc bit set, freed bit clear): anything the program wrote;
 *   listed      in this bin (alloc bit set): its link, next ^ key;
 *   waiting     in a magazine, a slab or a transfer (alloc bit set), or freed remotely with its
 *               freed bit waiting for a sweep: a remote free's tag (magazine.h);
 *   free        in its span (alloc bit clear): the free tag, written by whoever cleared the bit
 *               (this bin's fold, the locked local free; a sweep applies a bit whose setter
 *               tagged the object).
 * Slots at or past base + size were never handed out (the span's frontier) or were carved after
 * the attach: the bound refuses them. So "p below the bound, at a slot's start, its first word
 * neither a tag nor a link of this span" implies "p is live", and the push takes it; anything
 * else misses and the locked path decides by the bits (a live object whose data happens to
 * look like a tag or a link is freed there, not reported). The one thing no word can tell: a
 * free slot whose tag the program wrote over (a write after free) and then freed again. That
 * push is taken (and the slot may then be popped to the program with its alloc bit clear); the
 * slot is reported, naming it, and kept out of circulation where it is met next: its hand-out
 * from the bitmap (its tag checked, span.h), the bin's fold (its alloc bit clear), or before its
 * span's pages go back to the page heap (nsp__span_keep_held). Never handed out twice; but
 * reported there, not at the second free, as the alloc bit's read did.
 *
 * Who may change a bin: its cpu's sequences change `word` only while key != 0. Everything else
 * (attach, detach, fold) is done by the holder of the cache's lock. Invariant: key == 0 implies
 * that no sequence can commit to `word` any more, because whoever stored the 0 either did it as
 * the commit of a sequence on the bin's cpu (the owner's slow path), or fenced the cpu after the
 * store (membarrier PRIVATE_EXPEDITED_RSEQ: every sequence in flight there restarts and then
 * reads 0) before relying on it. Detaching is therefore "key = 0, then fence"; folding is then
 * a plain walk of a list nobody else touches: tag each object free and clear its alloc bit,
 * alloc_count -= n, pops go to the span's nmalloc. Attaching stores word, base, size (after its
 * carve), then key (release).
 * So cycles, idle release, trim, stats and every foreign taker reach the bins by detaching them
 * when they take the cache (nsp__cache_lock_foreign), and the owner's next sequence simply misses.
 * Neither the accounting mode nor sweepgen is read on the fast path: both are the slow path's.
 *
 * The remote-free magazine (magazine.h). A bins cache also collects the cross-core frees of the
 * threads on its cpu: a restartable push (nsp__mag_push) whose commit stores the count. It is
 * detached with the bins (`on` = 0 with the keys, one fence) by every foreign taker, which applies
 * it and attaches it again empty; the owner flushes it under its lock when it is full
 * (nsp__cache_flush_magazine) and at its next allocation after a cycle (nsp__cache_flush). A bin
 * push refuses an object whose first word is a magazine's tag, so that a free of an object waiting
 * in a magazine goes to the locked path, which has that magazine flushed and asks the bits.
 *
 * The slabs (slab.h). Per class, a bins cache also keeps free objects of other spans of its node,
 * freed by the threads on its cpu: restartable push, pop and take sequences whose commit stores
 * the slab's word. Detached, drained and attached with the magazine, by the same takers; a slab
 * object carries the magazine's tag naming this cache, so the tag's slow path covers both.
 *
 * The lock word (slow paths and foreign takers only; the bins' fast path never reads it):
 *
 *   lock == 0   free
 *   lock == 1   held by a thread that took it with a restartable sequence (rseq) on the cache's
 *               own cpu: the sequence checks the cpu and the lock and stores 1 as its commit, so
 *               a preemption or migration in between restarts it. No atomic instruction.
 *   lock == 2   held by a thread that took it with compare-and-swap: every taker of a cache with
 *               no single cpu (virtual cores, core/L2/L3 grouping, no rseq), and "foreign" takers
 *               of an rseq cache (the pacer, fork), which then fence the cache's cpu with
 *               membarrier(PRIVATE_EXPEDITED_RSEQ) — restarting any sequence that read 0 before
 *               the CAS — and own the cache only if the word still reads 2 afterwards. Foreign
 *               takers of rseq caches are serialised from CAS to re-check (cache.c), so that
 *               2 can only be their own; a fence that fails makes the take fail.
 *   lock == 3   retired (NSP_CACHE_RETIRED): in a fork child, a cache left out of fork's take
 *               of every cache and held at the fork by a thread the child does not have; never
 *               taken again (its threads go to the central).
 *   Release is a plain store of 0 (release order).
 *
 * Ordering (weakly ordered cpus). A CAS taker's acquire pairs with the release store of 0: the
 * cache's fields (and, without bins, the cached spans' bitmaps and counts) are handed from holder
 * to holder by the lock, on every architecture. The sequences run on their cpu alone and commit
 * with plain stores: one cpu sees its own stores in order and a context switch is a full barrier,
 * so the threads of one cpu need nothing more; a foreign taker fences the cpu (membarrier, a full
 * barrier there on every architecture) before it reads what they wrote, and an attach publishes
 * word, base and size by the key's release store. The readers of a sequence's commit on another
 * cpu without the lock (free.c's flush_magazine_of: the count with acquire, then the slots; the
 * stats' seqlock on a bin, cache.c) rely on that plain commit store being a release, which it is
 * on x86-64, the only architecture with bins (the #if below): a port of the sequences to aarch64
 * must commit with a store-release (stlr), or those readers read slots older than the count.
 *
 * Caches without bins (virtual cores, grouping, no rseq, TSan builds, NSP_SECURE, `exact`) keep
 * the first generation's path: malloc and local free under the try-lock, on the span's bitmap.
 * A try-lock that fails never spins: the caller goes to the central (DESIGN.md §3).
 * Invariants: spans[k] is &nsp__empty_span or a span CACHED by this cache with sizeclass k; an
 * attached bin k lists only free objects of spans[k]; held_bytes is the sum of their reservations
 * (a charge window each, sizeclass.h: what `over` charges a cached span ahead of its allocations,
 * ledger.h) and at most nsp__cache_max.
 */
#ifndef NSP_HOST_CACHE_H
#define NSP_HOST_CACHE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "magazine.h"
#include "runtime.h"
#include "slab.h"
#include "sizeclass.h"
#include "topology/topology.h"
#include "types.h"

/* One size class's restartable bin (see above). The sequences read key, word, base and size and
 * commit word; the rest is the lock holder's. One cache line: a pop touches one line, and a push
 * that line and the object's, never the span's descriptor nor its bitmaps (base and size are
 * the attached span's, copied at the attach). */
struct nsp_bin {
    uint64_t word;
    _Atomic uint64_t key;
    uintptr_t base;
    uint64_t size; /* the span's carved bytes at the attach: frontier * elemsize (span.h) */
    uint64_t saved_key; /* the key the list was encoded with, kept across a detach (lock holder) */
    uint32_t carved;    /* objects put in the list from the span since the attach (lock holder) */
    int32_t cpu;        /* the cache's rseq cpu, copied here so that a sequence reads one line */
    _Atomic uint32_t seq; /* odd while the lock holder folds or fills the bin (lock-free readers) */
    /* 1: the attached span had no free slot at the last miss, and the bin was attached to it
     * empty (so that its local frees still push): mallocs take the cpu's slab first, without
     * the lock, until it is empty (slab.h). Written by the lock holder, read racily by the
     * owner's malloc (a stale value costs one slab pop or one slow path, never an object). */
    uint32_t full;
    /* The list's bound (issue 11; see "Why the list is bounded" above). credit: pushes the bin
     * may still take before it looks at its pops again; each push takes one before its commit
     * (an aborted one too: the bound met early, never late). seen: the pops it last looked at.
     * Invariant: credit + (pops - seen) <= bound - listed, the pops being the word's. A push that
     * takes credit below 0 re-derives it, credit += pops - seen and seen = pops, in one store of
     * both (so a restart after it finds them consistent), and misses if it is still below 0 (the
     * list at its bound) or if pops reached NSP_BIN_POPS_FOLD. Set at the attach (credit =
     * bound - carved, seen = 0), zeroed by the fold; the sequences change them only on the
     * bin's cpu while key != 0, as they do the word. */
    int32_t credit;
    uint32_t seen;
} __attribute__((aligned(NSP_CACHE_LINE)));

/* The sequences' asm (nsp__bin_pop, nsp__bin_push) reads the bin at these offsets, written as
 * numbers there: a field added in front of them must fail here, not make every sequence miss. */
_Static_assert(offsetof(struct nsp_bin, word) == 0 && offsetof(struct nsp_bin, key) == 8 &&
                   offsetof(struct nsp_bin, base) == 16 && offsetof(struct nsp_bin, size) == 24 &&
                   offsetof(struct nsp_bin, cpu) == 44 && offsetof(struct nsp_bin, credit) == 56 &&
                   offsetof(struct nsp_bin, seen) == 60,
               "nsp__bin_pop/nsp__bin_push read word, key, base, size, cpu, credit and seen at 0, "
               "8, 16, 24, 44, 56 and 60");
_Static_assert(sizeof(struct nsp_bin) == NSP_CACHE_LINE, "a bin is one line: a pop reads one");

#define NSP_BIN_POPS 0xffffu
/* Pops at which a push's re-derivation misses, so that the slow path folds them into the span's
 * count: pops never reach NSP_BIN_POPS, and the pop needs no check of its own. Between two
 * re-derivations a bin takes at most bound + 1 pushes, and pops never pass carved + pushes, so
 * pops stay below NSP_BIN_POPS_FOLD + 3 bounds (cache.c: a bound is at most 4096 objects). */
#define NSP_BIN_POPS_FOLD 0x8000u

struct nsp_cache {
    _Atomic uint32_t lock;
    int32_t rseq_cpu;  /* the one cpu that takes this cache by rseq, or -1 */
    uint32_t index;
    uint32_t node;
    uint32_t bins_on;  /* 1: an rseq cache whose bins may be attached (set once at init) */
    uint64_t key_state; /* the bins' key generator (lock holder) */
    size_t held_bytes;
    uint32_t flush_gen; /* sweepgen when the cache last released its spans (ledger.h) */
    struct nsp_span *spans[NSP_NUM_CLASSES];
    /* counters, under lock */
    uint64_t refills, releases, cap_releases;
    uint64_t sweeps, swept_objects;
    uint64_t bin_fills;  /* bins attached by the slow path */
    int64_t pending[NSP_MAX_NODES]; /* negative heapLive changes not yet applied (ledger.h) */
    struct nsp_bin bins[NSP_NUM_CLASSES];
    /* Foreign takes, after the bins so that no line the owner writes is touched: each CAS of the
     * lock word by a foreign taker, taken or not (atomic: CAS caches' takers are not serialised),
     * read lock-free by tests and stats to show who interrupted a cache. */
    _Atomic uint64_t foreign_takes;
    uint32_t all_held; /* 1 while nsp__cache_lock_all holds it (foreign mutex held) */
    /* classes whose slab is set up (bit k of word k / 64): each at the first span of its class
     * the bins' path installs, by the lock holder (nsp__cache_slab_set_up; slab.h) */
    uint64_t slabs_set[(NSP_NUM_CLASSES + 63) / 64];

    /* remote frees by threads on this cache's cpu (magazine.h); attached with the bins */
    struct nsp_magazine mag;
    /* per class, free objects of any span of this cache's node (slab.h); attached with the bins.
     * Last: only the slabs of the classes a one-cpu rseq cache has used are ever written (each
     * set up at its class's first span, nsp__cache_slab_set_up; until then as mapped, zero:
     * detached, cap 0), so the pages of the others, and all of a cache's without slabs (virtual
     * cores, grouping, an idle cpu's), stay unbacked. */
    struct nsp_slab slabs[NSP_NUM_CLASSES];
} __attribute__((aligned(NSP_CACHE_LINE)));
/* What each path reads of its cache (issue 11, Deliver 5: "the fields every malloc touches on the
 * cache's first lines"): the bins' malloc and local free read one line, their bin, and nothing
 * of the header above (the thread finds its bin from nsp__tb, so lock, rseq_cpu and spans stay
 * untouched); the free reads no span descriptor besides (its class comes with the class map's
 * byte, pageheap.h; its slow paths read the span's first line, types.h). A cache without bins
 * (virtual cores, grouping, no rseq, NSP_SECURE, `exact`) reads its first line (lock, rseq_cpu,
 * index, bins_on, flush_gen) and the line of spans[cls]; the counters and pending[] behind them
 * are the slow path's. So the first line must hold the locked path's fields: */
_Static_assert(offsetof(struct nsp_cache, flush_gen) + sizeof(uint32_t) <= NSP_CACHE_LINE,
               "lock, rseq_cpu, index, bins_on and flush_gen on the cache's first line");

extern struct nsp_cache *nsp__caches;
extern struct nsp_span nsp__empty_span;  /* nelems 0: every allocation from it misses */
extern _Atomic size_t nsp__cached_total; /* reservations of the spans all caches hold (above) */
extern int nsp__rseq_enabled;
/* glibc's __rseq_offset, copied by nsp__cache_init before any cache exists: the sequences read
 * it rip-relative, one load, where glibc's is reached through the GOT, two (loops and pairs,
 * issue 11). Every sequence that reads it runs for a thread with a cache (nsp__tc, nsp__tb),
 * which it gets only after the copy; 0 before, never read then (%fs:8 is the TCB's). Declared
 * hidden (-fvisibility=hidden marks definitions only): a declaration without it is reached
 * through the GOT, which the linker relaxes to a lea before the load, an instruction more. */
extern __attribute__((visibility("hidden"))) ptrdiff_t nsp__rseq_off;
/* Fences of an rseq cache's cpu (membarrier, or a move onto the cpu), by foreign takers and by
 * owners that moved off their cpu: what a busy cpu pays for being reached from outside. */
extern _Atomic uint64_t nsp__cache_fences;

/* Returns 0, or -1 if the OS refused memory for the caches. */
int nsp__cache_init(void);
/* Sets up c's slab of class cls (slab.h) unless it was already: its cpu and capacity, then
 * attached (none for a class without one, nor under NSP_SECURE). c's lock held, c a bins' cache
 * (bins_on). Called at the class's first span the bins' path installs; tests call it for the
 * classes they use before that. */
void nsp__cache_slab_set_up(struct nsp_cache *c, unsigned cls);
/* Whether c's slab of class cls was set up. A slab that was not is detached and empty, and is
 * never written: the loops over every class's slab skip it, and the paths that look at any
 * class's slab (free.c's slab_takes, the busy cache's pop in alloc.c) read only its `cap` word,
 * which maps the kernel's shared zero page there, not counted in RSS (rrev2's review, session 24).
 * Racy readers (stats, the idle look) may miss one being set up: it is empty then. */
static inline int nsp__cache_slab_is_set(const struct nsp_cache *c, unsigned cls)
{
    return (int)((__atomic_load_n(&c->slabs_set[cls / 64], __ATOMIC_RELAXED) >> (cls % 64)) & 1);
}

/* ---- the lock --------------------------------------------------------------------------------- */

#if defined(__x86_64__) && defined(NSP_HAVE_RSEQ) && !defined(__SANITIZE_THREAD__)
/* Every sequence's descriptor, in the kernel's struct rseq_cs layout: version and flags, then the
 * start (label 1), the length up to the commit's end (label 2) and the abort handler (label 4); the
 * sequence stores the address of label 3 into the thread's rseq area. One text for every sequence,
 * so that the labels' meaning is the same in each. */
#define NSP_RSEQ_CS_DESCRIPTOR                                                                    \
    ".pushsection __rseq_cs, \"aw\"\n\t"                                                       \
    ".balign 32\n\t"                                                                            \
    "3:\n\t"                                                                                    \
    ".long 0x0, 0x0\n\t"                                                                        \
    ".quad 1f, (2f - 1f), 4f\n\t"                                                               \
    ".popsection\n\t"
/* The abort handler's label 4, preceded by the 4-byte signature glibc registered (the kernel
 * checks it before jumping there); the caller's text after it says where an abort goes. */
#define NSP_RSEQ_ABORT_SIGNATURE                                                                  \
    ".pushsection __rseq_failure, \"ax\"\n\t"                                                  \
    ".byte 0x0f, 0xb9, 0x3d\n\t"                                                                \
    ".long 0x53053053\n\t"                                                                      \
    "4:\n\t"
/* A sequence's entry, up to its first test: register the descriptor (scratch register r64, then
 * reused as r32 for the cpu id) and miss to label `miss` unless the thread runs on the cpu stored
 * at cpu_field (a memory operand). */
#define NSP_RSEQ_ENTER(r64, r32, cpu_field, miss)                                                 \
    NSP_RSEQ_CS_DESCRIPTOR                                                                      \
    "leaq 3b(%%rip), " r64 "\n\t"                                                                \
    "movq " r64 ", %%fs:8(%[rs])\n\t" /* rseq->rseq_cs */                                      \
    "1:\n\t"                                                                                    \
    "movl %%fs:4(%[rs]), " r32 "\n\t" /* rseq->cpu_id */                                       \
    "cmpl " r32 ", " cpu_field "\n\t"                                                           \
    "jnz " miss "\n\t"
/* The same for a magazine or a slab, the asm operand [m] (both keep their cpu at offset 16 and
 * `on` at 8: magazine.h, slab.h), then miss unless it is attached (on != 0). Scratch: rax. */
#define NSP_RSEQ_ENTER_ATTACHED(miss)                                                             \
    NSP_RSEQ_ENTER("%%rax", "%%eax", "16(%[m])", miss)                                          \
    "cmpq $0, 8(%[m])\n\t"                                                                      \
    "jz " miss "\n\t"
/*
 * Takes lock (0 -> 1) in a restartable sequence bound to cpu. Returns 1 if taken, 0 if the lock
 * was held or the thread is not on cpu, -1 if the sequence was aborted (preempted, migrated, or
 * a signal): try again. The 4 bytes before the abort label are the signature glibc registered.
 */
static inline int nsp__rseq_trylock(_Atomic uint32_t *lock, int cpu)
{
    struct rseq *rs = (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
    __asm__ __volatile__ goto(
        NSP_RSEQ_CS_DESCRIPTOR
        "leaq 3b(%%rip), %%rax\n\t"
        "movq %%rax, %[rseq_cs]\n\t"
        "1:\n\t"
        "cmpl %[cpu], %[cpu_id]\n\t"
        "jnz %l[fail]\n\t"
        "cmpl $0, %[lock]\n\t"
        "jnz %l[fail]\n\t"
        "movl $1, %[lock]\n\t"
        "2:\n\t"
        NSP_RSEQ_ABORT_SIGNATURE
        "jmp %l[abort]\n\t"
        ".popsection\n\t"
        :
        : [cpu] "r"(cpu), [cpu_id] "m"(rs->cpu_id), [rseq_cs] "m"(rs->rseq_cs), [lock] "m"(*lock)
        : "memory", "cc", "rax"
        : fail, abort);
    return 1;
fail:
    return 0;
abort:
    return -1;
}
#define NSP_RSEQ_LOCKS 1

/*
 * The pop: one restartable sequence on cpu whose commit stores the bin's new word. Returns the
 * object; NULL for a miss (not on cpu, bin detached or empty, or a link
 * that does not decode into the span — the slow path's fold reports that one); (void *)1 if the
 * sequence was aborted (preempted, migrated, a signal): try again. asm goto with outputs (valid
 * on the fall-through only, which is the only path that reads one): inlined, the miss and the
 * abort are jumps to the caller's own branches, with no result to test on the way (loops and
 * pairs, issue 11: the caller tested 1 and then 0 after every pop). rs: nsp__rseq_off, which a
 * fast path reads once before its retry loop (one load, not one per try: the asm's "memory"
 * clobber would make the compiler reload it); nsp__bin_pop reads it itself.
 */
static inline __attribute__((always_inline)) void *nsp__bin_pop_rs(struct nsp_bin *b, ptrdiff_t rs)
{
    uintptr_t p;
    uint64_t w, k, t;
    __asm__ goto(
        NSP_RSEQ_ENTER("%[t]", "%k[t]", "44(%[b])", "%l[miss]") /* on the bin's cpu */
        "movq 8(%[b]), %[k]\n\t" /* key: 0 = detached */
        "testq %[k], %[k]\n\t"
        "jz %l[miss]\n\t"
        "movq (%[b]), %[w]\n\t"
        "movq %[w], %[p]\n\t"
        "shrq $16, %[p]\n\t" /* head: 0 = empty */
        "jz %l[miss]\n\t"
        "movq (%[p]), %[t]\n\t"
        "xorq %[k], %[t]\n\t" /* next, decoded */
        "jz 6f\n\t"
        "movq %[t], %[k]\n\t"
        "subq 16(%[b]), %[k]\n\t"
        "cmpq 24(%[b]), %[k]\n\t" /* next - base < size, or the link was overwritten */
        "jae %l[miss]\n\t"
        "6:\n\t"
        "shlq $16, %[t]\n\t"
        "incw %w[w]\n\t"
        "movw %w[w], %w[t]\n\t" /* pops + 1 into the low 16 bits, which the shift cleared */
        "movq %[t], (%[b])\n\t" /* the commit: the pop */
        "2:\n\t"
        NSP_RSEQ_ABORT_SIGNATURE
        "jmp %l[abort]\n\t"
        ".popsection\n\t"
        : [p] "=&r"(p), [w] "=&r"(w), [k] "=&r"(k), [t] "=&r"(t)
        : [rs] "r"(rs), [b] "r"(b)
        : "memory", "cc"
        : miss, abort);
    /* the head was read through (its link), so it is neither 0 nor 1: said to the compiler, so
     * that the caller's tests of the results below fold away on this path */
    if (p <= 1)
        __builtin_unreachable();
    return (void *)p;
miss:
    return NULL;
abort:
    return (void *)1;
}

static inline __attribute__((always_inline)) void *nsp__bin_pop(struct nsp_bin *b)
{
    return nsp__bin_pop_rs(b, nsp__rseq_off);
}

/* The push's end, in both of its sequences: p's link (the old head in r11, encoded with the key
 * in r10), then the commit, the bin word's store of p over the pops (r11's low 16 bits, moved
 * into the low 16 bits of p << 16, which are 0). */
#define NSP_BIN_PUSH_COMMIT                                                                         \
    "movq %%r11, %%rax\n\t"                                                                     \
    "shrq $16, %%rax\n\t"                                                                       \
    "xorq %%r10, %%rax\n\t"                                                                     \
    "movq %%rax, (%[p])\n\t"                                                                    \
    "movq %[p], %%rax\n\t"                                                                      \
    "shlq $16, %%rax\n\t"                                                                       \
    "movw %%r11w, %%ax\n\t"                                                                     \
    "movq %%rax, (%[b])\n\t"

/*
 * The local free of object p, of the class whose bin b is (nsp__page_class_wrapped told it; mul
 * is that class's divisibility constant, sizeclass.h): one restartable sequence on the bin's cpu.
 * Inside it, after the key is read (see free_to_bin in alloc.h for why this order): p must lie in
 * the carved part of the bin's span, [base, base + size) with size the span's frontier in bytes
 * at the attach (the page map's class is a hint, for a p above the address space too; this is the
 * answer: the bin is attached only to a span its cache holds, spans do not overlap, and a slot
 * never handed out lies at or past the frontier), at the start
 * of a slot (an interior pointer misses and is reported by the locked path), p's first word must
 * not be a tag (span.h, magazine.h: free in its span — freed locally and folded, or swept —,
 * waiting in a magazine, a slab or a transfer, or its freed bit set and waiting for a sweep:
 * pushed, it would be handed out twice), and it must not decode to a link of this span (a listed
 * object's does); then it writes p's link (rewritten by a restart, so harmless) and commits the
 * bin's new word. Returns 0 when pushed, 1 for a miss (not on the cpu, bin detached or holding
 * another span, or p not plainly allocated: the locked path decides by the bits, and a live
 * object whose data merely looks like a tag or a link is freed there, not reported), 2 if the
 * sequence was aborted: try again. asm goto with its scratch in caller-saved registers: no
 * result to test and nothing for free() to save. rs: as nsp__bin_pop_rs's.
 *
 * What a local free reads, and why (Larson's random frees miss on each distinct line): the class
 * map's byte, the bin (hot) and the object, and nothing else — mimalloc's local free reads its page
 * header and the object. The span's descriptor is not read: the class comes with the class map's
 * byte (pageheap.h) and the span's geometry is the bin's copy. No bitmap is read: the object's own
 * first word (its line, which the push writes anyway) says whether it is free (the free tag) or
 * listed (a link), by the invariant above; the alloc bit's load, a likely miss, was 17% of
 * nsp_free's samples in Larson at 32 threads. What that gives up: a slot free in its span whose tag
 * was written over (a write after free) and that is then freed again is pushed; it is reported
 * later, and never handed out twice (above). Measured side by side (README, host tables).
 */
static inline __attribute__((always_inline)) int nsp__bin_push_rs(struct nsp_bin *b, void *p,
                                                                 uint64_t mul, ptrdiff_t rs)
{
    __asm__ __volatile__ goto(
        NSP_RSEQ_ENTER("%%rax", "%%eax", "44(%[b])", "%l[miss]") /* on the bin's cpu */
        "movq 8(%[b]), %%r10\n\t" /* key: 0 = detached */
        "testq %%r10, %%r10\n\t"
        "jz %l[miss]\n\t"
        "movq %[p], %%rax\n\t"
        "subq 16(%[b]), %%rax\n\t"
        "cmpq 24(%[b]), %%rax\n\t" /* p - base < size: p in the bin's span */
        "jae %l[miss]\n\t"
        "imulq %[mul], %%rax\n\t"
        "cmpq %[mul], %%rax\n\t" /* offset * mul < mul: offset % size == 0, a slot's start */
        "jae %l[miss]\n\t"
        "movq (%[p]), %%r11\n\t" /* p's first word, read once for both tests */
        "movq %%r11, %%rax\n\t"
        "xorq %[p], %%rax\n\t"
        "xorq %[mk], %%rax\n\t"
        "shlq $16, %%rax\n\t"
        "jz %l[miss]\n\t" /* p's first word is a tag: free in its span, in a magazine, a slab or
                             * a transfer, or its freed bit waiting for a sweep */
        "xorq %%r10, %%r11\n\t"
        "jz %l[miss]\n\t" /* p's first word is an encoded end of list */
        "subq 16(%[b]), %%r11\n\t"
        "cmpq 24(%[b]), %%r11\n\t"
        "jb %l[miss]\n\t" /* or an encoded link of this span: p may be listed */
        "movq (%[b]), %%r11\n\t"
        "decl 56(%[b])\n\t" /* credit - 1 (again after an abort: the bound met early, no more) */
        "js 10f\n\t" /* below 0: re-derived out of line (below) */
        NSP_BIN_PUSH_COMMIT
        "2:\n\t"
        NSP_RSEQ_ABORT_SIGNATURE
        "jmp %l[abort]\n\t"
        /* The credit's re-derivation (struct nsp_bin), and the push: a sequence of its own, out
         * of line (the push above pays only its take, and free stays a leaf), entered when the
         * push took the credit below 0, p's checks passed. Still on the bin's cpu and the same
         * attachment (the key the push read: a bin attached anew may hold another span), it
         * re-derives the credit from the pops since the bin last looked, credit += pops - seen,
         * seen = pops (one store), and pushes p as above, its commit the word's store; or it
         * misses when the list is at its bound (credit + pops - seen < 0, the push's take
         * counted) or when pops reached NSP_BIN_POPS_FOLD (the slow path folds them). The
         * store keeps credit + (pops - seen) as it was, so a restart after it finds the same
         * sum; a thread that moved off the cpu leaves its take behind (a bound met early until
         * the next fold). */
        ".pushsection __rseq_cs, \"aw\"\n\t"
        ".balign 32\n\t"
        "13:\n\t"
        ".long 0x0, 0x0\n\t"
        ".quad 11f, (12f - 11f), 14f\n\t"
        ".popsection\n\t"
        "10:\n\t"
        "leaq 13b(%%rip), %%rax\n\t"
        "movq %%rax, %%fs:8(%[rs])\n\t" /* rseq->rseq_cs */
        "11:\n\t"
        "movl %%fs:4(%[rs]), %%eax\n\t"
        "cmpl %%eax, 44(%[b])\n\t"
        "jnz %l[miss]\n\t" /* moved off the cpu */
        "cmpq %%r10, 8(%[b])\n\t"
        "jnz %l[miss]\n\t" /* detached, or attached anew: the locked path decides */
        "movzwl (%[b]), %%eax\n\t" /* pops */
        "cmpl %[fold], %%eax\n\t"
        "jae %l[miss]\n\t"
        "movl %%eax, %%r11d\n\t"
        "addl 56(%[b]), %%eax\n\t"
        "subl 60(%[b]), %%eax\n\t" /* credit + pops - seen: bound - listed - 1, or less */
        "js %l[miss]\n\t" /* the list at its bound */
        "shlq $32, %%r11\n\t"
        "orq %%rax, %%r11\n\t"
        "movq %%r11, 56(%[b])\n\t" /* credit, and seen = pops */
        "movq (%[b]), %%r11\n\t"
        NSP_BIN_PUSH_COMMIT
        "12:\n\t"
        "jmp %l[pushed]\n\t"
        ".byte 0x0f, 0xb9, 0x3d\n\t"
        ".long 0x53053053\n\t"
        "14:\n\t"
        "jmp 10b\n\t" /* aborted: again from its start */
        ".popsection\n\t"
        :
        : [rs] "r"(rs), [b] "r"(b), [p] "r"(p), [mul] "r"(mul),
          [mk] "m"(nsp__magazine_key), [fold] "i"(NSP_BIN_POPS_FOLD)
        : "memory", "cc", "rax", "r10", "r11"
        : miss, abort, pushed);
    return 0;
pushed:
    return 0;
miss:
    return 1;
abort:
    return 2;
}

static inline __attribute__((always_inline)) int nsp__bin_push(struct nsp_bin *b, void *p,
                                                              uint64_t mul)
{
    return nsp__bin_push_rs(b, p, mul, nsp__rseq_off);
}

/*
 * The push of object p into magazine m (magazine.h): one restartable sequence on m's cpu whose
 * commit stores count + 1, after p was written to the slot past count. Returns 0 when pushed, 1
 * for a miss (not on the cpu, detached, or full: the caller flushes or frees directly), 2 if the
 * sequence was aborted: try again.
 */
static inline int nsp__mag_push(struct nsp_magazine *m, void *p)
{
    __asm__ __volatile__ goto(
        NSP_RSEQ_ENTER_ATTACHED("%l[miss]") /* on the magazine's cpu, attached */
        "movq (%[m]), %%rax\n\t"
        "cmpq %[slots], %%rax\n\t" /* full */
        "jae %l[miss]\n\t"
        "movq %[p], 32(%[m],%%rax,8)\n\t"
        "incq %%rax\n\t"
        "movq %%rax, (%[m])\n\t" /* the commit: the push */
        "2:\n\t"
        NSP_RSEQ_ABORT_SIGNATURE
        "jmp %l[abort]\n\t"
        ".popsection\n\t"
        :
        : [rs] "r"(nsp__rseq_off), [m] "r"(m), [p] "r"(p), [slots] "i"(NSP_MAG_SLOTS)
        : "memory", "cc", "rax"
        : miss, abort);
    return 0;
miss:
    return 1;
abort:
    return 2;
}

/*
 * The slab's sequences (slab.h): each on the slab's cpu, its commit the store of the slab's word.
 * Return 0 when done, 1 for a miss (not on the cpu, detached, full or empty, or no slab for the
 * class), 2 if the sequence was aborted (preempted, migrated, a signal): try again.
 */
static inline __attribute__((always_inline)) int nsp__slab_push(struct nsp_slab *m, void *p)
{
    __asm__ __volatile__ goto(
        NSP_RSEQ_ENTER_ATTACHED("%l[miss]") /* on the slab's cpu, attached */
        "movq (%[m]), %%rax\n\t"
        "movzbl %%al, %%ecx\n\t" /* count */
        "cmpq 24(%[m]), %%rcx\n\t" /* full (or cap 0: no slab) */
        "jae %l[miss]\n\t"
        "movq %[p], 32(%[m],%%rcx,8)\n\t"
        "incq %%rax\n\t" /* count + 1: count < cap <= NSP_SLAB_MAX, no carry */
        "movq %%rax, (%[m])\n\t" /* the commit: the push */
        "2:\n\t"
        NSP_RSEQ_ABORT_SIGNATURE
        "jmp %l[abort]\n\t"
        ".popsection\n\t"
        :
        : [rs] "r"(nsp__rseq_off), [m] "r"(m), [p] "r"(p)
        : "memory", "cc", "rax", "rcx"
        : miss, abort);
    return 0;
miss:
    return 1;
abort:
    return 2;
}

/* The pop: the object on top, NULL for a miss, (void *)1 if aborted: try again. */
static inline __attribute__((always_inline)) void *nsp__slab_pop(struct nsp_slab *m)
{
    uintptr_t p;
    __asm__ __volatile__(
        NSP_RSEQ_ENTER_ATTACHED("5f") /* on the slab's cpu, attached */
        "movq (%[m]), %%rax\n\t"
        "movzbl %%al, %%ecx\n\t" /* count */
        "testl %%ecx, %%ecx\n\t"
        "jz 5f\n\t"
        "movq 24(%[m],%%rcx,8), %[p]\n\t" /* slot[count - 1] */
        "addq %[pop], %%rax\n\t" /* count - 1, pops + 1 */
        "movq %%rax, (%[m])\n\t" /* the commit: the pop */
        "2:\n\t"
        "jmp 7f\n\t"
        NSP_RSEQ_ABORT_SIGNATURE
        "movl $1, %k[p]\n\t"
        "jmp 7f\n\t"
        ".popsection\n\t"
        "5:\n\t"
        "xorl %k[p], %k[p]\n\t"
        "7:\n\t"
        : [p] "=&r"(p)
        : [rs] "r"(nsp__rseq_off), [m] "r"(m), [pop] "i"(NSP_SLAB_POP - 1)
        : "memory", "cc", "rax", "rcx");
    return (void *)p;
}

/* A popped object whose first word is not the tag naming its slab's cache (slab.h, "What may
 * leave"): reported naming it, and kept from the caller (cache.c). */
void nsp__slab_refuse(void *p);

/* An object from c's slab of class cls for a malloc, its tag gone (the program's object must not
 * look freed), or NULL when the slab misses (slab.h). It is allocated from its span's view
 * already: nothing else to count. Only an object that still carries c's tag leaves: one that lost
 * it was written while it waited, or waits there twice (a second free past a write after free,
 * which no check at the push can tell from a live object's) and was handed out or applied by its
 * other copy; either way it is reported and never handed out. */
static inline void *nsp__slab_alloc(struct nsp_cache *c, unsigned cls)
{
    void *p;
    /* not set up (cap 0): a miss, and the pop's read of cpu is ordered after a set-up (slab.h) */
    if (!__atomic_load_n(&c->slabs[cls].cap, __ATOMIC_ACQUIRE))
        return NULL;
    for (;;) {
        while (__builtin_expect((p = nsp__slab_pop(&c->slabs[cls])) == (void *)1, 0))
            ;
        if (!p)
            return NULL;
        if (__builtin_expect(__atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED) ==
                                 nsp__magazine_tag(p, c->index),
                             1))
            break;
        nsp__slab_refuse(p);
    }
    *(uint64_t *)p = 0;
    return p;
}

/*
 * Whether object p of span s looks listed in the bin of the cache that holds s: the bin is
 * attached to s and p's first word decodes with its key to the end of the list or to an object of
 * s (the push's own test). For a freer on another cpu, whose alloc-bit check cannot tell a listed
 * object (its bit stays set) from a live one: without this, a cross-thread free of an object
 * freed locally into the bin sets its freed bit, the bin hands it out again, and the sweep then
 * frees that live object. A hint, not an answer: a live object decodes so by chance, or because
 * a push of it was preempted after writing its link (a malloc zeroes a popped object's link);
 * the caller folds the bins and asks the alloc bit (free_remote in free.c). Read racily: a free
 * racing the push, or one while a foreign taker has the bin detached, is not caught, as no double
 * free racing the first is (span.h).
 */
/* What that test reads of the bin that may list objects of span s: its key, and its bound in
 * *size; 0 when no bin is attached to s (then none of s's objects is listed). A magazine's flush
 * reads it once per run of objects of s (nsp__cache_drop_listed): the bin's line is the one every
 * pop of its cpu commits to, so read once per object of a span still cached it was a line of the
 * other cpu's for each of them. */
static inline uint64_t nsp__bin_listing_key(const struct nsp_span *s, uint64_t *size)
{
    if (atomic_load_explicit(&s->state, memory_order_acquire) != NSP_SPAN_CACHED)
        return 0;
    uint32_t ci = __atomic_load_n(&s->cache, __ATOMIC_RELAXED);
    if (ci >= nsp__ncaches || !nsp__caches[ci].bins_on)
        return 0;
    const struct nsp_bin *b = &nsp__caches[ci].bins[s->sizeclass];
    uint64_t key = atomic_load_explicit(&b->key, memory_order_acquire);
    if (!key || __atomic_load_n(&b->base, __ATOMIC_RELAXED) != s->base)
        return 0;
    *size = __atomic_load_n(&b->size, __ATOMIC_RELAXED);
    return key;
}

static inline int nsp__bin_lists(const struct nsp_span *s, const void *p)
{
    uint64_t size, key = nsp__bin_listing_key(s, &size);
    if (!key)
        return 0;
    uint64_t next = __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED) ^ key;
    return next == 0 || next - s->base < size;
}
#endif

static inline int nsp__cache_cas_lock(struct nsp_cache *c)
{
    uint32_t zero = 0;
    return atomic_compare_exchange_strong_explicit(&c->lock, &zero, 2, memory_order_acquire,
                                                   memory_order_relaxed);
}

static inline void nsp__cache_unlock(struct nsp_cache *c)
{
    atomic_store_explicit(&c->lock, 0, memory_order_release);
}

/* The cache the thread last took by rseq (its cpu's), or NULL: lets the fast path skip the
 * cpu -> cache table while the thread stays on one cpu. */
extern __thread struct nsp_cache *nsp__tc;
/* The same cache when its bins are on (an rseq cache, not NSP_SECURE, not `exact`), else NULL:
 * the fast path's one test for "use the bins". Set with nsp__tc by the slow path. */
extern __thread struct nsp_cache *nsp__tb;
extern int nsp__virtual; /* copy of nsp__topo->virtual_cores, one load away */

/* The calling thread's cache, locked, or NULL if it cannot be taken at once (held by another
 * thread, or the thread runs on a cpu with no cache of its own). The slow part recomputes the
 * cache from the cpu and retries a sequence aborted by preemption or migration. */
struct nsp_cache *nsp__cache_acquire_slow(void);

static inline __attribute__((always_inline)) struct nsp_cache *nsp__cache_acquire(void)
{
    if (nsp__virtual) {
        if (__builtin_expect(nsp__vcore.topo == nsp__topo, 1)) {
            struct nsp_cache *c = &nsp__caches[nsp__vcore.cache];
            return nsp__cache_cas_lock(c) ? c : NULL;
        }
        return nsp__cache_acquire_slow();
    }
#ifdef NSP_RSEQ_LOCKS
    struct nsp_cache *c = nsp__tc;
    if (__builtin_expect(c != NULL, 1)) {
        const struct rseq *rs =
            (const struct rseq *)((const char *)__builtin_thread_pointer() + __rseq_offset);
        int cpu = (int)__atomic_load_n(&rs->cpu_id, __ATOMIC_RELAXED);
        if (__builtin_expect(cpu == c->rseq_cpu, 1) && nsp__rseq_trylock(&c->lock, cpu) > 0)
            return c;
    }
#endif
    return nsp__cache_acquire_slow();
}

/* The index of the cache the thread took last, or UINT32_MAX when it has none: a hint that lets
 * a free of an object whose span another cache holds skip taking the thread's own cache. */
static inline uint32_t nsp__cache_hint(void)
{
    if (nsp__virtual)
        return nsp__vcore.topo == nsp__topo ? nsp__vcore.cache : UINT32_MAX;
    return nsp__tc ? nsp__tc->index : UINT32_MAX;
}

/* The cache the calling thread maps to now, without taking it (a hint: the thread may move). */
static inline unsigned nsp__cache_index_now(void)
{
    return nsp__topo_current_cache(nsp__topo);
}

/* Takes cache c from any thread (pacer, fork, tests): 1 if taken, 0 if busy. A taken cache's bins
 * are detached and folded: its spans' bitmaps and counts are exact while it is held. */
int nsp__cache_lock_foreign(struct nsp_cache *c);
/* Test hooks of the foreign take (tests only; 0 and NULL otherwise). nsp__test_fence_fail: the
 * next fence fails as if membarrier had refused (1; the move onto the cpu still runs) or fails
 * outright (2); every fence fails outright until it is reset (3). nsp__test_foreign_window: called between a foreign taker's CAS and its fence, where an
 * rseq taker may commit. */
extern _Atomic int nsp__test_fence_fail;
extern void (*_Atomic nsp__test_foreign_window)(struct nsp_cache *c);
/* Test hook of the bins' detach: called between a foreign taker's stores of key = 0 and its fence
 * of the cpu, where a sequence that read a key before the stores may still commit. */
extern void (*_Atomic nsp__test_detach_window)(struct nsp_cache *c);
/* Takes every cache, waiting for each, bins detached and folded (fork's prepare handler, the
 * recount); and gives back those it took. Serialised with every foreign taker (its mutex is held
 * from lock to unlock). Bounded: a cache whose cpu cannot be fenced (fence_cpu, cache.c: every
 * way refused, a few times in a row) is left out as it was, not spun on, and said so on stderr
 * once; so is a retired one. Returns the number of caches left out (0: all held), which the
 * caller must not read or change as its own. */
unsigned nsp__cache_lock_all(void);
void nsp__cache_unlock_all(void);
/* fork's child, after its handlers: a cache that lock_all left out and that was held at the fork
 * (by a thread the child does not have) is retired: lock word NSP_CACHE_RETIRED, which no taker
 * takes and lock_all does not wait for, and its bins and magazine detached. Its spans stay
 * charged. */
void nsp__cache_forked_child(void);
#define NSP_CACHE_RETIRED 3u

/* ---- slow paths (lock held) ------------------------------------------------------------------- */

/* The bins' slow path: bin cls missed. Called with c's lock held, returns with it given back.
 * Detaches and folds the bin, takes one object from the cached span (sweep, rewind) and attaches
 * the bin again with the next few KiB of free slots. A full span is refilled without holding the
 * lock across the central and page-heap work: detach the old span (lock held), unlock, give it
 * back and take a new one from the central (which may wait for its mutex: nobody waits for us),
 * then re-take the lock by the sequence and install the new span only if the cache is free on
 * this cpu, no cycle began and no other thread installed one meanwhile; otherwise the new span
 * goes back to the central uncharged and NULL sends the caller to the node's transfer
 * (nsp__cache_refill_lost counts those). NULL also if no node has memory, or if the bin could
 * not be detached. */
void *nsp__cache_alloc_bin(struct nsp_cache *c, unsigned cls);
/* A push at the list's bound goes to the locked local free (free.c), whose fold lowers the
 * charge. nsp__cache_bound_missed (c held, before the settle): whether bin cls's push missed at
 * its bound. nsp__cache_reattach (c held, bin settled, the free done): attaches the bin again to
 * its span at once, with a fresh carve. Measured (issue 11): left detached, the class's frees on
 * this cpu went the locked way, and its next malloc the slow one, until that malloc attached it
 * (Larson at 2 threads: about 3 locked frees after a bound miss for every 4 bound misses). Only
 * after a bound miss: a free that missed for another reason (a link-like first word) leaves the
 * bin detached as before, its object free in the bitmap. */
int nsp__cache_bound_missed(const struct nsp_cache *c, unsigned cls);
void nsp__cache_reattach(struct nsp_cache *c, unsigned cls);
/* Refills built but not installed (the cache busy or moved at the re-take, a cycle, a race). */
extern _Atomic uint64_t nsp__cache_refill_lost;
/* Test hook: called in the bins' refill between the central work and the re-take, no lock held. */
extern void (*_Atomic nsp__test_refill_window)(struct nsp_cache *c);
/* Detaches bin cls and folds its list back into the span (see above): afterwards the span's
 * bitmap and counts are exact and the bin is empty. Returns 0, or -1 if the bin's cpu could not be
 * fenced (the bin is then left as it was). */
int nsp__cache_settle(struct nsp_cache *c, unsigned cls);

/* An object of class cls when the cached span has none past its cursor: sweep in place and
 * rewind, or release the span and refill from the central. NULL if no node has memory. */
void *nsp__cache_alloc_slow(struct nsp_cache *c, unsigned cls);
/* Gives span of class cls back to its central (its bin settled first). Returns 0, or -1 if the
 * bin could not be settled (the span stays). */
int nsp__cache_release(struct nsp_cache *c, unsigned cls);
/* Gives every span back (pacer's idle release, malloc_trim). */
void nsp__cache_release_all(struct nsp_cache *c);
/* ---- lock-free reading (any thread, the cache's lock not taken) ------------------------------ */

/* What a cache holds, for the pacer and stats, read without taking the cache: */
struct nsp_cache_reading {
    int64_t unspent;   /* its unspent reservation: over its cached spans, charge minus the bytes
                        * of objects live in them (allocated slots less remote frees not yet
                        * swept). over: the capacity charged but not allocated (>= 0); under:
                        * minus what was allocated since the refill; exact: 0 */
    int64_t pending;   /* its negative heapLive changes not yet applied, all nodes */
    int64_t unflushed; /* bytes allocated from its spans, not yet in the ledger's totals */
    int64_t held;      /* its spans' reservations (held_bytes: a charge window each) */
};
/* Adds cache c's reading to *r. The owner's counters are read racily with relaxed loads (the
 * owner writes them with plain stores under its lock, on the fast path, which must not pay for
 * this): each value is one the owner stored at some recent instant, so a reading is exact for a
 * cache at rest and off by the operations in flight otherwise. Spans are published by the cache
 * at refill and release (spans[k], their state CACHED by this cache); a span seen mid-release
 * counts 0 (an uncached span's charge is its allocated bytes). A bin's listed objects are free
 * though their alloc bits are set, and its pops are allocations not yet in nmalloc: both are read
 * from the bin (its list walked, each link checked before it is followed) when its seq shows no
 * fold or fill in between; otherwise the listed objects count as live (an overestimate). */
void nsp__cache_read(const struct nsp_cache *c, struct nsp_cache_reading *r);
/* A span that a cache caches, counted without taking the cache (stats): its allocated slots less
 * the objects listed in its bin (free, though their alloc bits are set), and its allocations and
 * local frees since the refill (the span's nmalloc and nfree plus the bin's pops and pushes, which
 * only a fold moves into them). Read as nsp__cache_read reads a bin: exact for a cache at rest,
 * within the operations in flight otherwise. Returns 1 for a clean reading, 0 when the bin kept
 * changing under it (then its listed objects count as allocated and its pops and pushes are
 * left out: off by at most the bin's objects). */
struct nsp_cached_counts {
    int64_t slots, mallocs, frees;
};
int nsp__cache_span_counts(const struct nsp_span *s, struct nsp_cached_counts *out);
/* The cache's operation fingerprint, read without touching the cache (no lock, no fence): what
 * idle release compares from one look to the next. It mixes the owner's slow-path counters
 * (refills, releases, bin fills, sweeps: plain stores under the lock, every slow path bumps one
 * or changes a span) with, per class, the cached span's pointer and counts (alloc_count, nmalloc,
 * nfree: what the locked path's malloc and free change) and the bin's word (which every pop and
 * push commits, and which never comes back to a value within one attachment: pops only grow
 * and a push heads the list with an object that was not in it). So any operation changes it, and
 * the fast path pays nothing: no field is written for it. Racy reads of fields written by the
 * owner: a value torn by an operation in flight only reads as "changed", the safe side.
 * *held gets the bytes of spans it holds, read in the same pass. */
uint64_t nsp__cache_fingerprint(const struct nsp_cache *c, size_t *held);

/* Detaches c's magazine, applies what it holds (remote frees, sorted by span) and attaches it
 * again empty. Lock held. Returns 0, or -1 if its cpu could not be fenced (left as it was). */
int nsp__cache_flush_magazine(struct nsp_cache *c);
/* The owner's flush when its magazine is full: detaches it, copies what it holds to out (at
 * least NSP_MAG_SLOTS), attaches it again empty and returns the count; the caller applies them
 * (nsp__magazine_apply) after giving the lock back, so that a sort and sixty atomic ORs are not
 * paid holding the cache (every other thread of the cpu would find it busy). Lock held. */
unsigned nsp__cache_take_magazine(struct nsp_cache *c, uintptr_t *out);
/* The same without the lock, by the thread on c's cpu whose push found the magazine full: one
 * restartable sequence copies the objects to out (at least NSP_MAG_SLOTS) and commits count = 0
 * (cache.c). Returns the count, 0 when it misses (not on the cpu, detached, empty): the caller
 * then takes the lock. Measured: a full magazine waited for the lock, which a preempted holder
 * keeps for its time slice, and meanwhile every remote free of the cpu went the direct way (one
 * atomic OR each): 71 and 270 per 1000 mallocs, Larson at 8 and 32 threads on 2 cpus. */
unsigned nsp__cache_take_magazine_rseq(struct nsp_cache *c, uintptr_t *out);
/* Before the objects of cache ci's magazine or slab are applied: keeps those whose first word is
 * still the tag naming ci (their free's), and gives each the direct remote free's tag instead
 * (NSP_MAG_NONE), so that another copy of it left in a slab is refused at its pop
 * (nsp__slab_alloc). Drops the others, reported naming them: written since their free (a bin
 * lists it: a local free whose push found no tag, written over after the first free; another
 * free's tag; the program's word; the malloc that a copy of it left a slab by). Their alloc bits
 * are set, so the apply would mark them freed under whoever holds them now, and a sweep would
 * then free those live objects. A tag is no link (magazine.h), so no bin is read. Returns how
 * many of objs[0..n) are kept, compacted at its front. */
unsigned nsp__cache_drop_listed(uintptr_t *objs, unsigned n, uint32_t ci);

/* The owner's take of a full slab, without the lock, by the thread on c's cpu whose push found it
 * full: one restartable sequence copies the top half of slab cls to out (at least
 * NSP_SLAB_MAX / 2 + 1 slots) and commits count - half. Returns the number taken, 0 when it misses
 * (not on the cpu, detached, fewer than two objects): the caller then frees the other way. The
 * caller applies them (nsp__magazine_apply, after nsp__cache_drop_listed) holding nothing. */
unsigned nsp__cache_take_slab_rseq(struct nsp_cache *c, unsigned cls, uintptr_t *out);
/* Whether p waits in slab cls of c, read racily (the count first: a push writes the slot before
 * it commits): a hint for a cache that could not be taken (free.c). */
int nsp__cache_slab_holds(const struct nsp_cache *c, unsigned cls, uintptr_t p);

/* Gives every span back, applies the pending ledger changes and records sweepgen sg: what a
 * cycle does to each cache, and a busy cache does to itself at its next allocation. */
void nsp__cache_flush(struct nsp_cache *c, uint32_t sg);

/* A cached span's owner counts (types.h: nmalloc, nfree, 32 bits each: the descriptor has no
 * room for more) are booked at its release; a span never released (malloc/free pairs on one
 * cpu, no pacer, never idle) counted on past 2^32 and wrapped, and its release then booked the
 * allocations and frees 2^32 short: the ledger's totals and the stats' mallocs lost 4 billion
 * objects (about 20 s of a tight pair on the bins' path). So every place that adds to them on a
 * cached span calls nsp__cache_counts_check after the add, which books both counts at once once
 * either reaches 2^31 (the central's cached_mallocs and the node's totals, where the release puts
 * them: the stats' sums do not move), then zeroes them; an add is at most a bin's pops and
 * pushes (2^16 + a span's slots), so nothing wraps before the check (tests/test_span_counts.c).
 * Owner only (the cache's lock). */
#define NSP_SPAN_COUNTS_SPILL (1u << 31)
void nsp__cache_spill_counts(struct nsp_span *s);
static inline void nsp__cache_counts_check(struct nsp_span *s)
{
    if (__builtin_expect(s->nmalloc >= NSP_SPAN_COUNTS_SPILL || s->nfree >= NSP_SPAN_COUNTS_SPILL,
                         0))
        nsp__cache_spill_counts(s);
}

#endif /* NSP_HOST_CACHE_H */
