/*
 * host/ledger.c — the ledger's events (see ledger.h for the rule, the table and the invariants).
 *
 * The ledger reaches the pacer in one place, through hooks: a positive change that takes the
 * heap across nsp__pacer_notify calls nsp__ledger_crossed, and one that takes its node across
 * the node's nsp__node_notify calls nsp__ledger_node_crossed (per-node pacing; both may be
 * called for one change); the pacer installs both at
 * its init. The ledger does not call the pacer by name, so it stays below it (DESIGN.md §2).
 *
 * A change of a span's charge is two steps (the charge, then heapLive[node]), so whoever reads
 * both must not find one without the other: every event runs under a lock its reader takes
 * too — the acting cache's, the span's central's, or, for the events that hold neither (large
 * objects, exact mode's remote frees), the node's ledger lock below. fork and the debug recount
 * take all of them, so a child or a recount never sees a change half made. That is also why a
 * span's charge and heapLive are relaxed atomics on every cpu: whoever must see the two agree
 * reads them under those locks, whose acquire and release order the steps (stats and the
 * pacer's crossings read them racily, as estimates).
 *
 * The node's ledger lock is a reader-preferring rwlock, not a mutex: the events take it shared
 * (each change is two atomic steps, so changers need no exclusion among themselves) and only
 * fork and the recount take it exclusive. A thread preempted or stopped between the two steps
 * of a large object's change then holds up nobody's malloc or free, only a fork or a recount
 * (issue 11: a main thread's large malloc waited 2 s for a stopped worker's mutex here).
 * glibc's default rwlock prefers readers: a shared take never queues behind a waiting fork.
 */
#include "ledger.h"

#include "runtime.h"
#include "sizeclass.h"

struct nsp_ledger_node nsp__ledger[NSP_MAX_NODES];
_Atomic int64_t nsp__heap_live_total;
_Atomic int64_t nsp__charged_total;
_Atomic int64_t nsp__huge_charge[NSP_MAX_NODES];
int nsp__accounting;
int64_t nsp__delta_batch = 64 << 10;
_Atomic uint32_t nsp__sweepgen = 2;
_Atomic int64_t nsp__reserve_budget = INT64_MAX;
_Atomic int64_t nsp__reserve_floor;
/* bit k: class k refilled since the last cycle (its span counted in nsp__reserve_floor) */
static _Atomic uint64_t reserve_classes[(NSP_NUM_CLASSES + 63) / 64];
void (*nsp__ledger_test_hook)(void);
_Atomic int64_t nsp__pacer_notify = INT64_MAX;
void (*_Atomic nsp__ledger_crossed)(int64_t total);
_Atomic int64_t nsp__node_notify[NSP_MAX_NODES] = {[0 ... NSP_MAX_NODES - 1] = INT64_MAX};
void (*_Atomic nsp__ledger_node_crossed)(unsigned node, int64_t hl);

/* Leaf locks: held (shared) across the two steps of a change made outside any cache or central
 * lock; exclusive only for those who must see no change half made (file header). */
static pthread_rwlock_t node_lock[NSP_MAX_NODES] = {[0 ... NSP_MAX_NODES - 1] =
                                                        PTHREAD_RWLOCK_INITIALIZER};

void nsp__ledger_lock_all(void)
{
    for (unsigned n = 0; n < NSP_MAX_NODES; n++)
        pthread_rwlock_wrlock(&node_lock[n]);
}

void nsp__ledger_unlock_all(void)
{
    for (unsigned n = NSP_MAX_NODES; n-- > 0;)
        pthread_rwlock_unlock(&node_lock[n]);
}

void nsp__ledger_forked_child(void)
{
    /* an unlock here would be read as a reader's (the writer's id is the parent thread's) and
     * leave the lock held for good; the child's one thread held them all: nothing to keep */
    for (unsigned n = 0; n < NSP_MAX_NODES; n++)
        pthread_rwlock_init(&node_lock[n], NULL);
}
_Atomic uint64_t nsp__large_allocs[NSP_MAX_NODES], nsp__large_frees[NSP_MAX_NODES];
_Atomic int64_t nsp__large_bytes[NSP_MAX_NODES];

int64_t nsp__ledger_reserve_room(unsigned cls, int64_t bytes, int64_t budget)
{
    _Atomic uint64_t *w = &reserve_classes[cls / 64];
    uint64_t bit = 1ULL << (cls % 64);
    /* a class already noted costs one relaxed load; the first refill of a class since the
     * cycle adds its span once (the fetch_or decides which refill) */
    if (!(atomic_load_explicit(w, memory_order_relaxed) & bit) &&
        !(atomic_fetch_or_explicit(w, bit, memory_order_relaxed) & bit))
        atomic_fetch_add_explicit(&nsp__reserve_floor, bytes, memory_order_relaxed);
    /* The floor holds only while the span's charge leaves heapLive under the pacer's trigger
     * (nsp__pacer_notify). Past it, a crossing that the live bytes do not confirm waits for the
     * next positive change, and a cache living on a span charged whole makes none: with the
     * floor there too, cycles started up to F late (bench pacer, 2 caches, 1 MiB live: 95% of
     * peaks within 1.05x the goal instead of 100%). Under B alone, the objects come from the
     * central, charged as they go, and each is a crossing the pacer can confirm. */
    int64_t floor = nsp__ledger_reserve_floor();
    if (floor <= budget ||
        atomic_load_explicit(&nsp__heap_live_total, memory_order_relaxed) + bytes >=
            atomic_load_explicit(&nsp__pacer_notify, memory_order_relaxed))
        return budget;
    return floor;
}

int64_t nsp__ledger_reserve_floor(void)
{
    /* two caches' working sets: a thread that moved to another cpu's cache still has its spans
     * in the one it left until that cache goes idle (bench host's loops on 2 cpus, with F
     * alone: 1.4 million objects in 0.3 s served by the central in most runs, none when pinned) */
    return 2 * atomic_load_explicit(&nsp__reserve_floor, memory_order_relaxed);
}

void nsp__ledger_reserve_reset(void)
{
    /* the floor first: a refill between the two stores finds its bit set and adds nothing, so
     * F only ever misses a class until the next cycle, never counts one twice */
    atomic_store_explicit(&nsp__reserve_floor, 0, memory_order_relaxed);
    for (unsigned i = 0; i < sizeof reserve_classes / sizeof reserve_classes[0]; i++)
        atomic_store_explicit(&reserve_classes[i], 0, memory_order_relaxed);
}

static void apply(unsigned node, int64_t delta)
{
    int64_t hl =
        atomic_fetch_add_explicit(&nsp__ledger[node].heap_live, delta, memory_order_relaxed) + delta;
    int64_t total =
        atomic_fetch_add_explicit(&nsp__heap_live_total, delta, memory_order_relaxed) + delta;
    if (delta > 0) {
        atomic_fetch_add_explicit(&nsp__charged_total, delta, memory_order_relaxed);
        if (total >= atomic_load_explicit(&nsp__pacer_notify, memory_order_relaxed)) {
            void (*crossed)(int64_t) =
                atomic_load_explicit(&nsp__ledger_crossed, memory_order_relaxed);
            if (crossed)
                crossed(total);
        }
        /* the node at its own trigger (per-node pacing), whether or not the heap is: while a
         * concurrent cycle runs the pacer hears of every positive change of the heap, and a
         * node at its own goal must still be held there (its back-pressure); measured, with
         * the node told only when the heap was not, a node's program took its node to 1.7x
         * its goal during cycles */
        if (hl >= atomic_load_explicit(&nsp__node_notify[node], memory_order_relaxed)) {
            void (*node_crossed)(unsigned, int64_t) =
                atomic_load_explicit(&nsp__ledger_node_crossed, memory_order_relaxed);
            if (node_crossed)
                node_crossed(node, hl);
        }
    }
}

void nsp__ledger_delta(unsigned node, int64_t delta, int64_t *pending)
{
    if (delta >= 0 || !pending) {
        if (delta)
            apply(node, delta);
        return;
    }
    pending[node] += delta;
    if (pending[node] < -nsp__delta_batch) {
        apply(node, pending[node]);
        pending[node] = 0;
    }
}

void nsp__ledger_flush(int64_t *pending)
{
    for (unsigned n = 0; n < nsp__nnodes; n++)
        if (pending[n]) {
            apply(n, pending[n]);
            pending[n] = 0;
        }
}

void nsp__ledger_set(struct nsp_span *s, int64_t charge, int64_t *pending)
{
    int64_t old = atomic_exchange_explicit(&s->charge, charge, memory_order_relaxed);
    nsp__ledger_delta(s->node, charge - old, pending);
}

static int64_t allocated_bytes(const struct nsp_span *s)
{
    return (int64_t)s->alloc_count * s->elemsize;
}

_Atomic uint64_t nsp__ledger_raises, nsp__ledger_lowerings;

/* over's charge of a cached span (ledger.h's table): its bytes cut into steps from its start,
 * charged up to the end of the step its covered bytes fall in (the whole next step when they end
 * on a step's edge), and the whole span, tail waste included, once that reaches its end. The
 * step is W for a span that did not grow (W = span: always the whole span, the seed's charge)
 * and W/2 for one that did, so that a charge runs about W/4 ahead of what its cache can hand out
 * on average, as a span of W bytes charged whole did. Measured on test_pacer
 * node-pacing-threads (node 0 within 1.05x its goal in 95% of samples): steps of W, a whole
 * window ahead where the span of W bytes had only its free rest ahead, held it there in 68-79%
 * of samples (a window past the covered bytes: 46-88%); steps of W/2 or W/4 in every run. */
static int64_t window_charge(const struct nsp_span *s)
{
    int64_t span = (int64_t)s->npages << NSP_PAGE_SHIFT;
    int64_t step = (int64_t)nsp__class_window_bytes(s->sizeclass);
    if (step < span)
        step /= 2;
    int64_t charge = (nsp__ledger_covered(s) / step + 1) * step;
    return charge < span ? charge : span;
}

void nsp__ledger_recharge(struct nsp_span *s, int64_t *pending)
{
    int64_t charge = window_charge(s);
    /* a raise is a positive change, applied at once (nsp__ledger_delta), so heapLive never lags
     * the hand-out; a lowering waits in the cache's batch, which only makes the estimate larger */
    atomic_fetch_add_explicit(charge > atomic_load_explicit(&s->charge, memory_order_relaxed)
                                  ? &nsp__ledger_raises
                                  : &nsp__ledger_lowerings,
                              1, memory_order_relaxed);
    nsp__ledger_set(s, charge, pending);
}

void nsp__ledger_refill(struct nsp_span *s, int64_t *pending)
{
    s->sweepgen = atomic_load_explicit(&nsp__sweepgen, memory_order_relaxed) + 3;
    switch (nsp__accounting) {
    case NSP_ACCT_OVER:
        /* We pick an overestimate here because an underestimate leads the pacer to believe that
         * it is in better shape than it is (Go 1ebc983): the span's free slots count as allocated
         * a window at a time, ahead of the allocations (nsp__ledger_cover raises the charge
         * before the cache hands out past it), so allocations from it touch no shared counter;
         * a span that did not grow is charged whole, tail waste included, as the seed does. */
        nsp__ledger_set(s, window_charge(s), pending);
        break;
    case NSP_ACCT_UNDER:
        nsp__ledger_set(s, allocated_bytes(s), pending); /* frozen until the release */
        break;
    default:
        break; /* exact: the charge follows every object already */
    }
}

void nsp__ledger_release(struct nsp_span *s, int64_t *pending)
{
    nsp__ledger_flush_counts(s);
    /* Reconcile: the unused slots and the tail waste go back, local frees and in-place sweeps
     * made while cached are taken into account. Computed afresh from the span, so a span cached
     * before a cycle (stale) is reconciled as exactly as any other. */
    if (nsp__accounting != NSP_ACCT_EXACT)
        nsp__ledger_set(s, allocated_bytes(s), pending);
}

void nsp__ledger_sweep(struct nsp_span *s, int64_t *pending)
{
    if (nsp__accounting != NSP_ACCT_EXACT)
        nsp__ledger_set(s, allocated_bytes(s), pending);
}

/* nsp__ledger_set for a span no cache or central lock covers (large objects). */
static void set_unlocked(struct nsp_span *s, int64_t charge, int64_t huge_delta)
{
    pthread_rwlock_rdlock(&node_lock[s->node]);
    if (s->arena->huge)
        atomic_fetch_add_explicit(&nsp__huge_charge[s->node], huge_delta, memory_order_relaxed);
    int64_t old = atomic_exchange_explicit(&s->charge, charge, memory_order_relaxed);
    /* a large object's charge is its bytes in every mode: stats' large_bytes follows it */
    atomic_fetch_add_explicit(&nsp__large_bytes[s->node], charge - old, memory_order_relaxed);
    if (__builtin_expect(nsp__ledger_test_hook != NULL, 0))
        nsp__ledger_test_hook(); /* between the two steps: what a fork or a recount must not see */
    nsp__ledger_delta(s->node, charge - old, NULL);
    pthread_rwlock_unlock(&node_lock[s->node]);
}

void nsp__ledger_sweep_unlocked(struct nsp_span *s)
{
    if (nsp__accounting == NSP_ACCT_EXACT)
        return;
    /* set_unlocked's two steps, without its large_bytes: s holds small objects */
    pthread_rwlock_rdlock(&node_lock[s->node]);
    int64_t charge = allocated_bytes(s);
    int64_t old = atomic_exchange_explicit(&s->charge, charge, memory_order_relaxed);
    nsp__ledger_delta(s->node, charge - old, NULL);
    pthread_rwlock_unlock(&node_lock[s->node]);
}

void nsp__ledger_large(struct nsp_span *s, int allocated)
{
    struct nsp_ledger_node *l = &nsp__ledger[s->node];
    uint64_t bytes = (uint64_t)s->npages << NSP_PAGE_SHIFT;
    if (allocated) {
        atomic_fetch_add_explicit(&l->alloc_bytes, bytes, memory_order_relaxed);
        atomic_fetch_add_explicit(&l->alloc_objects, 1, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&l->free_bytes, bytes, memory_order_relaxed);
        atomic_fetch_add_explicit(&l->free_objects, 1, memory_order_relaxed);
    }
    int64_t charge = allocated ? (int64_t)bytes : 0;
    set_unlocked(s, charge, charge - atomic_load(&s->charge));
}

void nsp__ledger_large_resized(struct nsp_span *s)
{
    int64_t bytes = (int64_t)s->npages << NSP_PAGE_SHIFT;
    set_unlocked(s, bytes, bytes - atomic_load(&s->charge));
}

void nsp__ledger_count(struct nsp_span *s, int64_t n)
{
    struct nsp_ledger_node *l = &nsp__ledger[s->node];
    uint64_t k = (uint64_t)(n < 0 ? -n : n), bytes = k * s->elemsize;
    if (n > 0) {
        atomic_fetch_add_explicit(&l->alloc_bytes, bytes, memory_order_relaxed);
        atomic_fetch_add_explicit(&l->alloc_objects, k, memory_order_relaxed);
    } else if (n < 0) {
        atomic_fetch_add_explicit(&l->free_bytes, bytes, memory_order_relaxed);
        atomic_fetch_add_explicit(&l->free_objects, k, memory_order_relaxed);
    }
}

void nsp__ledger_exact_objects(struct nsp_span *s, int64_t n, int64_t *pending)
{
    if (nsp__accounting != NSP_ACCT_EXACT)
        return;
    int64_t bytes = n * (int64_t)s->elemsize;
    if (pending) { /* the acting cache's lock covers both steps */
        atomic_fetch_add_explicit(&s->charge, bytes, memory_order_relaxed);
        nsp__ledger_delta(s->node, bytes, pending);
        return;
    }
    /* a central (its lock held) or a remote free (no lock): the node's ledger lock */
    pthread_rwlock_rdlock(&node_lock[s->node]);
    atomic_fetch_add_explicit(&s->charge, bytes, memory_order_relaxed);
    nsp__ledger_delta(s->node, bytes, NULL);
    pthread_rwlock_unlock(&node_lock[s->node]);
}

void nsp__ledger_sweep_doubles(struct nsp_span *s, uint32_t doubles, int64_t *pending)
{
    /* Without this, a remote double free of a slot already swept drifts `exact` down by an
     * object each time: the free charged -elemsize, and the sweep applies nothing. */
    if (doubles)
        nsp__ledger_exact_objects(s, (int64_t)doubles, pending);
}

void nsp__ledger_flush_counts(struct nsp_span *s)
{
    struct nsp_ledger_node *l = &nsp__ledger[s->node];
    if (s->nmalloc) {
        atomic_fetch_add_explicit(&l->alloc_objects, s->nmalloc, memory_order_relaxed);
        atomic_fetch_add_explicit(&l->alloc_bytes, (uint64_t)s->nmalloc * s->elemsize,
                                  memory_order_relaxed);
        s->nmalloc = 0;
    }
    if (s->nfree) {
        atomic_fetch_add_explicit(&l->free_objects, s->nfree, memory_order_relaxed);
        atomic_fetch_add_explicit(&l->free_bytes, (uint64_t)s->nfree * s->elemsize,
                                  memory_order_relaxed);
        s->nfree = 0;
    }
}
