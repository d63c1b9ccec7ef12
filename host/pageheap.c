/*
 * host/pageheap.c — per-node page heaps (see pageheap.h for what it owns and its invariants).
 *
 * An arena is 64 MiB of user pages aligned to 64 MiB, bound to its node when the topology is this
 * machine, plus a separate metadata mapping: the arena struct, the page map, the class map (a byte
 * per page: pageheap.h), one span descriptor per page (a span's descriptor is the one of its first
 * page) and the two bitmaps, 16 words per page each. When the OS refuses 64 MiB (RLIMIT_AS), an
 * arena may be shorter: a power of two down to NSP_ARENA_MIN_SIZE at the start of its 64 MiB slot,
 * with nsp__arena_pages(ar) pages; nothing here or in its readers assumes NSP_ARENA_PAGES pages per
 * arena. Metadata is mapped NORESERVE and touched only as spans use it; user pages are not (os.h):
 * the system's overcommit policy judges them.
 *
 * The hard limit (NSP_MEMORY_LIMIT with NSP_MEMORY_LIMIT_HARD=1) bounds mapped_bytes, the user
 * pages of every node's arenas and huge mappings: a mapping that would pass it is refused like
 * an OS refusal, and the entry points trim and retry before they return ENOMEM (alloc.h).
 */
#include "pageheap.h"

#include <errno.h>
#include <sched.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "options.h"
#include "os.h"
#include "runtime.h"

/* A counter written under the heap's lock (or by atomic add, pages_mapped) and read without it
 * (nsp__pageheap_counter: stats, the pacer). */
#define COUNT(field, d) __atomic_store_n(&(field), (field) + (d), __ATOMIC_RELAXED)
#define COUNT_ATOMIC(field, d) __atomic_fetch_add(&(field), (d), __ATOMIC_RELAXED)

struct nsp_pageheap nsp__pageheaps[NSP_MAX_NODES];
struct nsp_arena *nsp__arena_table[NSP_ARENA_SLOTS];
_Atomic uint64_t nsp__mapped_bytes;
uint64_t nsp__mapped_limit;
int64_t nsp__node_limit_pages[NSP_MAX_NODES];

static void bad_hard_limit(const char *msg)
{
    (void)!write(2, msg, strlen(msg));
    _exit(2);
}

void nsp__pageheap_init(unsigned nnodes)
{
    for (unsigned n = 0; n < nnodes; n++) {
        pthread_mutex_init(&nsp__pageheaps[n].lock, NULL);
        nsp__pageheaps[n].node = n;
    }
    static const char *const off_on[] = {"0", "1"};
    if (nsp__option_choice(NSP_OPT_MEMORY_LIMIT_HARD, off_on, 2) == 1) {
        nsp__mapped_limit = nsp__option_size(NSP_OPT_MEMORY_LIMIT);
        if (!nsp__mapped_limit) /* a hard limit of nothing would be silently no limit */
            bad_hard_limit("numaspan: NSP_MEMORY_LIMIT_HARD=1 needs NSP_MEMORY_LIMIT (a size)\n");
    }
}

int nsp__mapped_add(size_t len)
{
    uint64_t old = atomic_fetch_add(&nsp__mapped_bytes, len);
    if (nsp__mapped_limit && old + len > nsp__mapped_limit) {
        atomic_fetch_sub(&nsp__mapped_bytes, len);
        return -1;
    }
    return 0;
}

void nsp__mapped_sub(size_t len)
{
    atomic_fetch_sub(&nsp__mapped_bytes, len);
}

static size_t round_up(size_t x, size_t a)
{
    return (x + a - 1) & ~(a - 1);
}

/* The arena table has a slot per 64 MiB of the NSP_ADDR_BITS user addresses (types.h), and every
 * lookup refuses an address past them (nsp__span_of, nsp__page_entry) or wraps it (the bins' free,
 * whose bound then refuses it). So a mapping that reached past them could never be looked up, and
 * its set_table would write past the table (an aarch64 kernel hands out addresses just below
 * 2^48 to every process): every mapping of user pages is checked here first and refused, as the
 * OS's refusal is, when it does not fit (table_covers). nsp__test_addr_end: tests lower the end
 * (0: 2^NSP_ADDR_BITS) to see a mapping refused on a machine whose kernel never maps past it. */
uintptr_t nsp__test_addr_end;

static int table_covers(uintptr_t base, size_t size)
{
    uintptr_t end = __atomic_load_n(&nsp__test_addr_end, __ATOMIC_RELAXED);
    if (!end)
        end = (uintptr_t)1 << NSP_ADDR_BITS;
    return size <= end && base <= end - size;
}

/* nsp__os_map_user, for pages the arena table must find: NULL when the OS refuses, or when the
 * mapping lies past the table's reach (given back). */
static void *map_user_in_table(size_t size, size_t align)
{
    void *base = nsp__os_map_user(size, align);
    if (base && !table_covers((uintptr_t)base, size)) {
        nsp__os_unmap(base, size);
        return NULL;
    }
    return base;
}

/* Sets (or clears) the slots of ar's 64 MiB ranges; ar lies within the table's reach (above). */
static void set_table(struct nsp_arena *ar, int present)
{
    struct nsp_arena *value = present ? (struct nsp_arena *)((uintptr_t)ar | (uintptr_t)ar->huge) : NULL;
    for (uintptr_t a = ar->base; a < ar->base + ar->size; a += NSP_ARENA_SIZE)
        __atomic_store_n(&nsp__arena_table[a >> NSP_ARENA_SHIFT], value, __ATOMIC_RELEASE);
}

const struct nsp_arena *nsp__arena_of_desc(const void *d, uint32_t npages, uint32_t *start)
{
    for (unsigned n = 0; n < nsp__nnodes; n++)
        for (const struct nsp_arena *ar = __atomic_load_n(&nsp__pageheaps[n].arenas,
                                                          __ATOMIC_ACQUIRE);
             ar; ar = ar->next)
            if ((const char *)d >= (const char *)ar->spans &&
                (const char *)d < (const char *)(ar->spans + nsp__arena_pages(ar))) {
                *start = (uint32_t)((const struct nsp_span *)d - ar->spans);
                return (uint64_t)*start + npages <= nsp__arena_pages(ar) ? ar : NULL;
            }
    return NULL;
}

/* ---- free runs ------------------------------------------------------------------------------ */

static unsigned list_of(size_t npages)
{
    return npages < NSP_FREE_LISTS ? (unsigned)npages : 0;
}

static void run_insert(struct nsp_pageheap *h, struct nsp_span *r)
{
    struct nsp_span **head = &h->free_runs[list_of(r->npages)];
    r->prev = NULL;
    r->next = *head;
    if (*head)
        (*head)->prev = r;
    *head = r;
    COUNT(h->pages_free, r->npages);
    if (r->scavenged)
        COUNT(h->pages_scavenged, r->npages);
}

static void run_remove(struct nsp_pageheap *h, struct nsp_span *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        h->free_runs[list_of(r->npages)] = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->next = r->prev = NULL;
    COUNT(h->pages_free, -r->npages);
    if (r->scavenged)
        COUNT(h->pages_scavenged, -r->npages);
}

/* The descriptor of pages [start, start + n) of ar in state `state`, cleared, with its place
 * filled in: what a free run (run_make) and a span cut from one (span_place) both start from.
 * The state is written first and the clearing leaves it alone: a cut without the lock
 * (alloc_busy) rewrites a pending span's descriptor while a holder of the lock may read it as a
 * neighbour (free_locked's coalescing, nsp__pageheap_grow), and it must read TAKEN throughout.
 * A memset of the whole descriptor passed through FREE with the new npages and start_page in
 * place: a neighbour's free then took the span's pages into its run (test_check_cut). */
static struct nsp_span *desc_at(struct nsp_arena *ar, uint32_t start, uint32_t n,
                                uint32_t state)
{
    struct nsp_span *d = &ar->spans[start];
    const size_t at = offsetof(struct nsp_span, state), past = at + sizeof d->state;
    atomic_store_explicit(&d->state, state, memory_order_relaxed);
    memset(d, 0, at);
    memset((char *)d + past, 0, sizeof *d - past);
    d->arena = ar;
    d->node = (uint8_t)ar->node;
    d->start_page = start;
    d->npages = n;
    d->base = ar->base + ((uintptr_t)start << NSP_PAGE_SHIFT);
    return d;
}

/* Makes pages [start, start+n) of ar a FREE run (descriptor of start), mapping its ends. */
static struct nsp_span *run_make(struct nsp_arena *ar, uint32_t start, uint32_t n,
                                 uint32_t needzero, uint32_t scavenged)
{
    struct nsp_span *r = desc_at(ar, start, n, NSP_SPAN_FREE);
    r->needzero = needzero;
    r->scavenged = scavenged;
    nsp__pagemap_publish(ar, start, r);
    nsp__pagemap_publish(ar, start + n - 1, r);
    return r;
}

/* A descriptor that stops describing anything (absorbed by a neighbour, or cut off a run). */
static void desc_kill(struct nsp_span *d)
{
    atomic_store_explicit(&d->state, NSP_SPAN_FREE, memory_order_relaxed);
    d->npages = 0;
}

uint64_t nsp__test_nodes_without_memory;

/* Maps an arena of size bytes (a power of two, NSP_ARENA_MIN_SIZE..NSP_ARENA_SIZE) at the start
 * of its 64 MiB slot; NULL if the OS or the hard limit refuses. The page map always has
 * NSP_ARENA_PAGES entries (64 KiB, zero past the arena's pages), so that nsp__span_of, which
 * indexes it by the address's page in the slot, finds NULL for an address past a short arena;
 * the class map likewise (8 KiB, 0 past them); the descriptors and bitmaps are sized to the
 * arena's pages, the bitmaps from a 4 KiB boundary (a span's pair of them then shares one page
 * whenever they fit in one from its place: types.h). */
static struct nsp_arena *arena_map(unsigned node, size_t size)
{
    size_t pages = size >> NSP_PAGE_SHIFT, words = pages * NSP_BITMAP_WORDS_PER_PAGE;
    _Static_assert(sizeof(struct nsp_arena) <= NSP_ARENA_HDR, "page map follows the header");
    size_t bits_at = round_up(NSP_ARENA_CLASSMAP + NSP_ARENA_PAGES +
                              pages * sizeof(struct nsp_span), 4096);
    size_t meta = bits_at + 2 * words * sizeof(uint64_t);
    meta = round_up(meta, 4096);
    if (nsp__mapped_add(size) < 0)
        return NULL;
    char *m = nsp__os_map(meta, 4096);
    /* aligned to the slot, not to its size: the page map is indexed by the page in the slot */
    void *base = m ? map_user_in_table(size, NSP_ARENA_SIZE) : NULL;
    if (!base) {
        if (m)
            nsp__os_unmap_meta(m, meta);
        nsp__mapped_sub(size);
        return NULL;
    }
    struct nsp_arena *ar = (struct nsp_arena *)m;
    char *p = m + NSP_ARENA_HDR;
    ar->pagemap = (struct nsp_span **)p;
    p += NSP_ARENA_PAGES * sizeof(struct nsp_span *);
    ar->classmap = (uint8_t *)p; /* at NSP_ARENA_CLASSMAP, where nsp__page_class_wrapped looks */
    p += NSP_ARENA_PAGES;
    ar->spans = (struct nsp_span *)p;
    ar->bitmaps = (uint64_t *)(m + bits_at); /* 2 * words: a span's two side by side (types.h) */
    ar->base = (uintptr_t)base;
    ar->size = size;
    ar->node = node;
    ar->meta_size = meta;
    /* The kernel is told where the pages belong; on a synthetic topology this is only recorded. */
    nsp_topo_bind_memory(nsp__topo, (void *)ar->base, ar->size, node);
    nsp_topo_bind_memory(nsp__topo, ar, ar->meta_size, node);
    return ar;
}

/* The smallest arena size (NSP_ARENA_MIN_SIZE doubled, at most NSP_ARENA_SIZE) with room for
 * need pages. */
static size_t arena_size_for(size_t need)
{
    size_t size = NSP_ARENA_MIN_SIZE;
    while (size < NSP_ARENA_SIZE && (size >> NSP_PAGE_SHIFT) < need)
        size *= 2;
    return size;
}

/* Lock held: ar becomes one of the node's arenas. `counted`: its pages are in pages_mapped
 * already (a fresh arena of a stuck hold counts from its mapping: alloc_busy), else counted now. */
static void arena_link(struct nsp_pageheap *h, struct nsp_arena *ar, int counted)
{
    ar->next = h->arenas;
    /* every walk of the list holds the lock (check.c: stats_walk, the validators, the recount);
     * release all the same, so that a walk without it would read the arena whole */
    __atomic_store_n(&h->arenas, ar, __ATOMIC_RELEASE);
    if (!counted)
        COUNT_ATOMIC(h->pages_mapped, nsp__arena_pages(ar));
    COUNT(h->arenas_mapped, 1);
}

/* A new arena on node with room for a run of need pages (need <= NSP_ARENA_PAGES). A full
 * 64 MiB arena is the normal case; when the OS (RLIMIT_AS, strict overcommit) or the hard limit
 * refuses one, halves the size down to the larger of NSP_ARENA_MIN_SIZE and what need takes:
 * under `ulimit -v 65536` the process has room for a 32 MiB arena, not a 64 MiB one. */
static struct nsp_arena *arena_new(unsigned node, size_t need)
{
    struct nsp_pageheap *h = &nsp__pageheaps[node];
    if (__atomic_load_n(&nsp__test_nodes_without_memory, __ATOMIC_RELAXED) & (1ULL << node))
        return NULL;
    /* a node at its page limit (NSP_NODE_LIMITS) maps no more: its refills spill */
    if (nsp__node_limit_pages[node] &&
        (int64_t)(nsp__pageheap_counter(&h->pages_mapped) + NSP_ARENA_PAGES) >
            nsp__node_limit_pages[node])
        return NULL;
    size_t least = arena_size_for(need);
    struct nsp_arena *ar = NULL;
    for (size_t size = NSP_ARENA_SIZE; !ar && size >= least; size /= 2)
        ar = arena_map(node, size);
    if (!ar)
        return NULL;
    uint32_t pages = nsp__arena_pages(ar);
    arena_link(h, ar, 0);
    set_table(ar, 1);
    run_insert(h, run_make(ar, 0, pages, 0, 0));
    return ar;
}

/* ---- the lock, and what waits for it (pageheap.h: nobody waits for a preempted holder) -------- */

static void free_locked(struct nsp_pageheap *h, struct nsp_span *s);

static void push_free(struct nsp_pageheap *h, struct nsp_span *s)
{
    struct nsp_span *old = atomic_load_explicit(&h->pending_frees, memory_order_relaxed);
    do
        s->next = old;
    while (!atomic_compare_exchange_weak_explicit(&h->pending_frees, &old, s,
                                                  memory_order_release, memory_order_relaxed));
}

static void push_arena(struct nsp_pageheap *h, struct nsp_arena *ar)
{
    struct nsp_arena *old = atomic_load_explicit(&h->pending_arenas, memory_order_relaxed);
    do
        ar->next = old;
    while (!atomic_compare_exchange_weak_explicit(&h->pending_arenas, &old, ar,
                                                  memory_order_release, memory_order_relaxed));
}

/* Lock held: links what was pushed pending. The frees are taken before the arenas: a fresh
 * arena is pushed before the rest of it is (alloc_busy), so any rest taken here has its arena
 * taken here too, or linked already, and is never a run of an arena the heap does not count. */
static void drain(struct nsp_pageheap *h)
{
    if (!atomic_load_explicit(&h->pending_frees, memory_order_relaxed) &&
        !atomic_load_explicit(&h->pending_arenas, memory_order_relaxed))
        return;
    struct nsp_span *s = atomic_exchange_explicit(&h->pending_frees, NULL, memory_order_acquire);
    struct nsp_arena *ar = atomic_exchange_explicit(&h->pending_arenas, NULL, memory_order_acquire);
    while (ar) {
        struct nsp_arena *next = ar->next;
        arena_link(h, ar, 1); /* counted when mapped (alloc_busy) */
        ar = next;
    }
    while (s) {
        struct nsp_span *next = s->next;
        s->next = NULL;
        free_locked(h, s);
        s = next;
    }
}

static void heap_lock(struct nsp_pageheap *h)
{
    nsp__hold_lock_always(&h->lock, &h->hold);
    drain(h);
}

/* The lock unless its holder is stuck (hold.h): a holder that runs is waited for, as a mutex's
 * always was; one preempted for long or stopped in a signal handler is waited for once per hold,
 * then never, and the caller goes elsewhere. 0 when taken (and drained). */
static int heap_trylock(struct nsp_pageheap *h)
{
    if (nsp__hold_lock(&h->lock, &h->hold) != 0)
        return -1;
    drain(h);
    return 0;
}

/* Unlocks; what was pushed meanwhile is linked now if nobody else holds the lock (else that
 * holder links it at its own unlock). */
static void heap_unlock(struct nsp_pageheap *h)
{
    for (;;) {
        nsp__hold_unlock(&h->lock, &h->hold);
        if (!atomic_load(&h->pending_frees) && !atomic_load(&h->pending_arenas))
            return;
        if (nsp__hold_trylock(&h->lock, &h->hold) != 0)
            return;
        drain(h);
    }
}

void nsp__pageheap_lock(unsigned node)
{
    heap_lock(&nsp__pageheaps[node]);
}

int nsp__pageheap_trylock(unsigned node)
{
    return heap_trylock(&nsp__pageheaps[node]);
}

void nsp__pageheap_unlock(unsigned node)
{
    heap_unlock(&nsp__pageheaps[node]);
}

/* ---- the heap's checkers against cuts made without the lock (pageheap.h) ------------------------
 *
 * A cut without the lock (alloc_busy) writes descriptors of a linked arena (a pending run it cuts)
 * and pushes a fresh arena that only the next holder links; its span is charged by its caller
 * afterwards. A checker that holds the lock must see neither a descriptor half written nor a
 * charged span in an arena it does not walk. So a cut counts itself in flight (busy_cuts) for its
 * whole body, and a checker, once it holds the lock, raises `checkers`, waits for the cuts in
 * flight to end and links what they pushed. A cut that finds a checker waits for the lock
 * instead, as when the OS refuses it a fresh arena: after the checker raised the flag no cut
 * starts, so the wait ends, and every span whose charge can land before the checker's reading
 * (the ledger's locks, taken after this) is in a linked arena, its descriptor whole.
 * The two sides are a store then a load each (the flag / the count), sequentially consistent,
 * so that at least one of them sees the other. Only the stuck-hold path pays it: an ordinary
 * allocation holds the lock and cuts under it. */

static int cut_begin(struct nsp_pageheap *h)
{
    atomic_fetch_add_explicit(&h->busy_cuts, 1, memory_order_seq_cst);
    if (!atomic_load_explicit(&h->checkers, memory_order_seq_cst))
        return 0;
    atomic_fetch_sub_explicit(&h->busy_cuts, 1, memory_order_release);
    atomic_fetch_add_explicit(&h->busy_checked, 1, memory_order_relaxed);
    return -1;
}

/* release: the checker's acquire of a zero count sees the cut's descriptors and pushes */
static void cut_end(struct nsp_pageheap *h)
{
    atomic_fetch_sub_explicit(&h->busy_cuts, 1, memory_order_release);
}

void (*_Atomic nsp__test_busy_cut)(unsigned node, int step);

void nsp__pageheap_lock_still(unsigned node)
{
    struct nsp_pageheap *h = &nsp__pageheaps[node];
    heap_lock(h);
    atomic_fetch_add_explicit(&h->checkers, 1, memory_order_seq_cst);
    /* A cut in flight waits for nothing the checker holds (mmap, mbind, lock-free pushes, a
     * trylock): it ends; but its thread may be stopped meanwhile (README: asleep in a signal
     * handler), for as long as that lasts. The lock is let go for the wait: a holder spinning
     * here reads as running (hold.c), and every allocation of the node would wait, through it,
     * for the stopped cutter (test_check_cut stopped_cut_against_checker). The flag stays up, so
     * no cut starts meanwhile (one that counts itself sees it and uncounts at once); an
     * allocation that finds the lock free takes it as usual. */
    while (atomic_load_explicit(&h->busy_cuts, memory_order_seq_cst)) {
        heap_unlock(h);
        while (atomic_load_explicit(&h->busy_cuts, memory_order_seq_cst))
            sched_yield();
        heap_lock(h);
    }
    drain(h);
}

void nsp__pageheap_unlock_still(unsigned node)
{
    struct nsp_pageheap *h = &nsp__pageheaps[node];
    atomic_fetch_sub_explicit(&h->checkers, 1, memory_order_release);
    heap_unlock(h);
}

/* Sets up the descriptor of pages [start, start + n) of ar as a TAKEN span; span_map then maps
 * its pages to it (every live span's do). Never FREE on the way (desc_at): while the lock may be
 * elsewhere, a neighbour freed meanwhile must not take these pages into its run. */
static struct nsp_span *span_place(struct nsp_arena *ar, uint32_t start, uint32_t n,
                                   uint32_t needzero)
{
    struct nsp_span *sp = desc_at(ar, start, n, NSP_SPAN_TAKEN);
    sp->needzero = (uint8_t)needzero;
    /* no bitmaps (desc_at's zero): a small span's are placed by nsp__span_init_small
     * (nsp__span_bitmaps_at), and a large one has none */
    return sp;
}

/* Release stores (pageheap.h, "Publication"): a holder of the lock reads these entries
 * (nsp__pagemap_entry) while a cut without it writes them, and then reads the descriptor they
 * name, which span_place has just rewritten. */
static struct nsp_span *span_map(struct nsp_span *sp)
{
    for (uint32_t p = sp->start_page; p < sp->start_page + sp->npages; p++)
        nsp__pagemap_publish(sp->arena, p, sp);
    return sp;
}

/* The span of pages [start, start + n) of ar, TAKEN, its pages mapping to it. The pages are the
 * caller's: a run it took out of the heap, or a pending span it took off the stack. */
static struct nsp_span *span_cut(struct nsp_arena *ar, uint32_t start, uint32_t n,
                                 uint32_t needzero)
{
    return span_map(span_place(ar, start, n, needzero));
}

/* A span of npages pages cut from what waits on the pending stack (frees, rests of fresh
 * arenas), or NULL. The whole stack is taken at once (an exchange: the spans are ours, no ABA),
 * the first that fits is cut and the rest of it and every other span pushed back. So a stuck
 * hold costs one fresh arena per NSP_ARENA_MIN_SIZE of new pages, not one per allocation: the
 * pages freed meanwhile and each fresh arena's rest are reused (a main thread's churn of large
 * objects under a stopped holder mapped 32,000 arenas, and then ran out of the kernel's maps). */
static struct nsp_span *take_pending(struct nsp_pageheap *h, size_t npages, size_t align_pages)
{
    struct nsp_span *s = atomic_exchange_explicit(&h->pending_frees, NULL, memory_order_acquire);
    struct nsp_span *got = NULL;
    int back = 0;
    while (s) {
        struct nsp_span *next = s->next;
        if (!got && s->npages >= npages && s->start_page % align_pages == 0) {
            struct nsp_arena *ar = s->arena;
            uint32_t start = s->start_page, total = (uint32_t)s->npages, n = (uint32_t)npages;
            uint32_t needzero = s->needzero;
            void (*hook)(unsigned, int) =
                atomic_load_explicit(&nsp__test_busy_cut, memory_order_relaxed);
            got = span_place(ar, start, n, needzero);
            if (hook) /* tests: its descriptor rewritten, its pages not yet mapped (pageheap.h) */
                hook(h->node, NSP_TEST_CUT_PLACED);
            span_map(got);
            if (hook) /* tests: the run half cut */
                hook(h->node, NSP_TEST_CUT_HALF);
            if (total > n)
                push_free(h, span_cut(ar, start + n, total - n, needzero));
        } else {
            push_free(h, s);
            back = 1;
        }
        s = next;
    }
    if (back && nsp__hold_trylock(&h->lock, &h->hold) == 0) { /* linked if the holder went */
        drain(h);
        heap_unlock(h);
    }
    return got;
}

/* A span of npages pages (align_pages: at most an arena) while node's lock is stuck (pageheap.h):
 * cut from the pending spans if one fits, else at the start of an arena of its own, the arena
 * and the rest of it going pending, for the next holder to link (and the next of us to cut).
 * The smallest arena that fits (2 MiB for a small class's span). NULL when the OS, a limit or a
 * test refuses it: the caller then waits for the lock. Counted in flight (alloc_busy). */
static struct nsp_span *cut_busy(struct nsp_pageheap *h, size_t npages, size_t align_pages)
{
    unsigned node = h->node;
    struct nsp_span *sp = take_pending(h, npages, align_pages);
    if (sp)
        return sp;
    size_t size = arena_size_for(npages + align_pages - 1);
    if (__atomic_load_n(&nsp__test_nodes_without_memory, __ATOMIC_RELAXED) & (1ULL << node))
        return NULL;
    /* The node limit's rule as arena_new applies it (room for a whole arena), so that a node the
     * limit keeps from growing does not grow by this path either. The pages count as mapped from
     * here, reserved by one atomic add, not when the next holder links the arena: a holder
     * stopped for seconds otherwise saw every fresh arena pass the same check, and the node map
     * past its limit without bound (test_no_wait node_limit_held: 20,992 pages against 16,384). */
    uint64_t reserve = size >> NSP_PAGE_SHIFT;
    uint64_t before = COUNT_ATOMIC(h->pages_mapped, reserve);
    struct nsp_arena *ar = NULL;
    if (!nsp__node_limit_pages[node] ||
        (int64_t)(before + NSP_ARENA_PAGES) <= nsp__node_limit_pages[node])
        ar = arena_map(node, size);
    if (!ar) {
        COUNT_ATOMIC(h->pages_mapped, -reserve);
        return NULL;
    }
    uint32_t pages = nsp__arena_pages(ar), n = (uint32_t)npages;
    /* the arena starts its 64 MiB slot: page 0 is aligned to any align_pages that fits. The
     * rest is set up before the arena is pushed, since the heap's walkers (stats, the
     * validators, the recount) see it from the arena's link on, which may come before the
     * rest's. */
    sp = span_cut(ar, 0, n, 0);
    struct nsp_span *r = n < pages ? span_cut(ar, n, pages - n, 0) : NULL;
    set_table(ar, 1);
    atomic_fetch_add_explicit(&h->busy_arenas, 1, memory_order_relaxed);
    push_arena(h, ar);
    if (r)
        push_free(h, r);
    /* linked now if the holder has gone meanwhile */
    if (nsp__hold_trylock(&h->lock, &h->hold) == 0) {
        drain(h);
        heap_unlock(h);
    }
    return sp;
}

/* cut_busy, unless a checker holds the heap (NULL: the caller waits for the lock, which the
 * checker lets go when its check is done), counted in flight for the checkers. */
static struct nsp_span *alloc_busy(unsigned node, size_t npages, size_t align_pages)
{
    struct nsp_pageheap *h = &nsp__pageheaps[node];
    if (cut_begin(h) != 0)
        return NULL;
    struct nsp_span *sp = cut_busy(h, npages, align_pages);
    cut_end(h);
    return sp;
}

/* First page offset inside run r at which an aligned span of n pages fits, or -1. */
static long fit(const struct nsp_span *r, size_t n, size_t align_pages)
{
    uintptr_t align = align_pages << NSP_PAGE_SHIFT;
    uintptr_t a = (r->base + align - 1) & ~(align - 1);
    size_t off = (a - r->base) >> NSP_PAGE_SHIFT;
    return off + n <= r->npages ? (long)off : -1;
}

/* Finds a run that fits: exact lists from n up, then the long list (best fit). */
static struct nsp_span *run_find(struct nsp_pageheap *h, size_t n, size_t align_pages, long *off)
{
    for (size_t k = n; k < NSP_FREE_LISTS; k++)
        for (struct nsp_span *r = h->free_runs[k]; r; r = r->next)
            if ((*off = fit(r, n, align_pages)) >= 0)
                return r;
    struct nsp_span *best = NULL;
    long best_off = -1;
    for (struct nsp_span *r = h->free_runs[0]; r; r = r->next) {
        long o = fit(r, n, align_pages);
        if (o >= 0 && (!best || r->npages < best->npages)) {
            best = r;
            best_off = o;
        }
    }
    *off = best_off;
    return best;
}

static struct nsp_span *alloc_on(unsigned node, size_t npages, size_t align_pages, int grow)
{
    struct nsp_pageheap *h = &nsp__pageheaps[node];
    if (npages == 0 || npages > NSP_ARENA_PAGES || align_pages == 0 ||
        npages + align_pages - 1 > NSP_ARENA_PAGES)
        return NULL;
    if (heap_trylock(h) != 0) {
        struct nsp_span *sp;
        if (!grow) /* free runs only: the caller has other places to look */
            return NULL;
        if ((sp = alloc_busy(node, npages, align_pages)))
            return sp;
        heap_lock(h);
    }
    long off;
    struct nsp_span *r = run_find(h, npages, align_pages, &off);
    if (!r) {
        if (!grow) {
            heap_unlock(h);
            return NULL;
        }
        if (!arena_new(node, npages + align_pages - 1) ||
            !(r = run_find(h, npages, align_pages, &off))) {
            COUNT(h->os_refusals, 1);
            heap_unlock(h);
            errno = ENOMEM;
            return NULL;
        }
    }
    run_remove(h, r);
    struct nsp_arena *ar = r->arena;
    uint32_t start = r->start_page, total = (uint32_t)r->npages;
    uint32_t needzero = r->needzero, scav = r->scavenged;
    uint32_t s = start + (uint32_t)off, n = (uint32_t)npages;
    if (s > start)
        run_insert(h, run_make(ar, start, s - start, needzero, scav));
    if (s + n < start + total)
        run_insert(h, run_make(ar, s + n, start + total - s - n, needzero, scav));
    struct nsp_span *sp = span_cut(ar, s, n, needzero);
    heap_unlock(h);
    return sp;
}

struct nsp_span *nsp__pageheap_alloc(unsigned node, size_t npages, size_t align_pages)
{
    return alloc_on(node, npages, align_pages, 1);
}

struct nsp_span *nsp__pageheap_alloc_free(unsigned node, size_t npages, size_t align_pages)
{
    return alloc_on(node, npages, align_pages, 0);
}

_Atomic uint64_t nsp__spills_out[NSP_MAX_NODES], nsp__spills_in[NSP_MAX_NODES];
_Atomic uint64_t nsp__pacer_spilling;

struct nsp_span *nsp__pageheap_alloc_near(unsigned node, size_t npages, size_t align_pages)
{
    /* a node the pacer sends away (full at its node limit, past its trigger: per-node pacing,
     * pacer.h) tries the nodes with room first, and its own pages last */
    uint64_t away = atomic_load_explicit(&nsp__pacer_spilling, memory_order_relaxed);
    struct nsp_span *s = away >> node & 1 ? NULL : nsp__pageheap_alloc(node, npages, align_pages);
    if (s || (npages > NSP_ARENA_PAGES && !(away >> node & 1)))
        return s;
    const unsigned *order = nsp_topo_nodes_by_distance(nsp__topo, node);
    for (unsigned i = 1; i < nsp__nnodes && npages <= NSP_ARENA_PAGES; i++) {
        if (away >> order[i] & 1)
            continue;
        s = nsp__pageheap_alloc(order[i], npages, align_pages);
        if (s) {
            atomic_fetch_add_explicit(&nsp__spills_out[node], 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&nsp__spills_in[order[i]], 1, memory_order_relaxed);
            return s;
        }
    }
    if (away >> node & 1 && (s = nsp__pageheap_alloc(node, npages, align_pages)))
        return s;
    errno = ENOMEM;
    return NULL;
}

_Atomic int nsp__scavenge_paced;
_Atomic uint64_t nsp__pageheap_busy_skips;

/* Scavenging without a pacer thread (a plain program runs no cycles, DESIGN.md §6; with the
 * thread, it hands pages back at its own rate and this rule is off): when the free pages
 * a node keeps resident pass max(64 MiB, a quarter of what it maps), a free hands back the
 * excess down to half that bound. Not lower: pages handed back and needed again cost a fault
 * each, so only a heap that shrank a lot (a phase ended) pays it (glibc trims far sooner).
 * Heap lock held; returns the bytes to scavenge once the lock is dropped (0: none). */
static size_t retained_excess(const struct nsp_pageheap *h)
{
    uint64_t resident = (h->pages_free - h->pages_scavenged) << NSP_PAGE_SHIFT;
    uint64_t bound = (nsp__pageheap_counter(&h->pages_mapped) << NSP_PAGE_SHIFT) / 4;
    if (bound < ((uint64_t)64 << 20))
        bound = (uint64_t)64 << 20;
    return resident > bound ? (size_t)(resident - bound / 2) : 0;
}

void nsp__pageheap_free(struct nsp_span *s)
{
    struct nsp_pageheap *h = &nsp__pageheaps[s->arena->node];
    if (nsp__hold_trylock(&h->lock, &h->hold) != 0) { /* never waited for: the holder links it */
        atomic_fetch_add_explicit(&h->busy_frees, 1, memory_order_relaxed);
        s->needzero = 1; /* its pages were used: whoever cuts it from the stack zeroes them */
        push_free(h, s);
        if (nsp__hold_trylock(&h->lock, &h->hold) != 0)
            return;
        drain(h); /* the holder went meanwhile: s is linked here, with whatever else waits */
    } else {
        drain(h);
        free_locked(h, s);
    }
    size_t excess = atomic_load_explicit(&nsp__scavenge_paced, memory_order_relaxed)
                        ? 0 : retained_excess(h);
    heap_unlock(h);
    if (excess)
        nsp__pageheap_scavenge_upto(h->node, excess);
}

/* Gives s's pages to the heap's free runs, coalescing (lock held). */
static void free_locked(struct nsp_pageheap *h, struct nsp_span *s)
{
    struct nsp_arena *ar = s->arena;
    uint32_t start = s->start_page, n = (uint32_t)s->npages, needzero = 1, scav = 0;
    desc_kill(s);
    /* pages inside a free run map to nothing (pageheap.h); run_make maps the ends again. Their
     * class bytes go with the entries (a free run's pages have class 0): the bins' free would
     * otherwise try a bin for an address in a free run or, later, a large span (a miss, and a
     * second look-up: correct, but slower) */
    memset(&ar->pagemap[start], 0, n * sizeof(struct nsp_span *));
    memset(&ar->classmap[start], 0, n);
    if (start > 0) {
        struct nsp_span *l = nsp__pagemap_span(nsp__pagemap_entry(ar, start - 1));
        /* the state first: a pending neighbour (TAKEN) may be cut meanwhile without the lock
         * (alloc_busy), its other fields rewritten; a FREE run's are written under it only */
        if (l && atomic_load_explicit(&l->state, memory_order_relaxed) == NSP_SPAN_FREE &&
            l->npages && l->start_page + l->npages == start) {
            run_remove(h, l);
            ar->pagemap[start - 1] = NULL; /* a run's end: its class byte is 0 already */
            start = l->start_page;
            n += (uint32_t)l->npages;
            desc_kill(l);
        }
    }
    if (start + n < nsp__arena_pages(ar)) {
        struct nsp_span *r = nsp__pagemap_span(nsp__pagemap_entry(ar, start + n));
        if (r && atomic_load_explicit(&r->state, memory_order_relaxed) == NSP_SPAN_FREE &&
            r->npages && r->start_page == start + n) {
            run_remove(h, r);
            ar->pagemap[start + n] = NULL; /* the same */
            n += (uint32_t)r->npages;
            desc_kill(r);
        }
    }
    run_insert(h, run_make(ar, start, n, needzero, scav));
}

int nsp__pageheap_grow(struct nsp_span *s, size_t npages)
{
    struct nsp_arena *ar = s->arena;
    struct nsp_pageheap *h = &nsp__pageheaps[ar->node];
    uint32_t end = s->start_page + (uint32_t)s->npages;
    if (npages <= s->npages || (size_t)s->start_page + npages > nsp__arena_pages(ar))
        return -1;
    uint32_t need = (uint32_t)(npages - s->npages);
    if (heap_trylock(h) != 0)
        return -1; /* busy: as if the run were missing (realloc moves the object instead) */
    struct nsp_span *r =
        end < nsp__arena_pages(ar) ? nsp__pagemap_span(nsp__pagemap_entry(ar, end)) : NULL;
    /* the state first, as free_locked reads a neighbour */
    if (!r || atomic_load_explicit(&r->state, memory_order_relaxed) != NSP_SPAN_FREE ||
        !r->npages || r->start_page != end || r->npages < need) {
        heap_unlock(h);
        return -1;
    }
    run_remove(h, r);
    uint32_t rn = (uint32_t)r->npages, needzero = r->needzero, scav = r->scavenged;
    desc_kill(r);
    if (rn > need)
        run_insert(h, run_make(ar, end + need, rn - need, needzero, scav));
    /* the descriptor whole before the pages that name it (pageheap.h, "Publication") */
    s->npages = npages;
    s->elemsize = (uint32_t)(npages << NSP_PAGE_SHIFT);
    for (uint32_t p = end; p < end + need; p++)
        nsp__pagemap_publish(ar, p, s);
    heap_unlock(h);
    return 0;
}

size_t nsp__pageheap_scavenge(unsigned node)
{
    return nsp__pageheap_scavenge_upto(node, SIZE_MAX);
}

size_t nsp__pageheap_scavenge_upto(unsigned node, size_t want)
{
    struct nsp_pageheap *h = &nsp__pageheaps[node];
    size_t released = 0;
    if (heap_trylock(h) != 0) { /* best effort: a busy heap is skipped (trim, the pacer) */
        atomic_fetch_add_explicit(&nsp__pageheap_busy_skips, 1, memory_order_relaxed);
        return 0;
    }
    /* longest runs first (list 0), so that few calls hand back much; counted once at the end,
     * so that a reader without the lock (stats) sees the whole hand-back or none of it */
    uint64_t pages = 0;
    for (unsigned i = 0; i < NSP_FREE_LISTS && released < want; i++) {
        unsigned k = i ? NSP_FREE_LISTS - i : 0;
        for (struct nsp_span *r = h->free_runs[k]; r && released < want; r = r->next) {
            if (r->scavenged || nsp__os_release((void *)r->base, (size_t)r->npages << NSP_PAGE_SHIFT))
                continue;
            r->scavenged = 1;
            r->needzero = 0;
            pages += r->npages;
            released += (size_t)r->npages << NSP_PAGE_SHIFT;
        }
    }
    /* published once for the whole hand-back: stats read it without this lock (stats.c), and a
     * reading should see a hand-back done or not yet, as it did when it took the lock */
    COUNT(h->pages_scavenged, pages);
    heap_unlock(h);
    return released;
}

/* ---- huge objects ----------------------------------------------------------------------------- */

struct nsp_span *nsp__huge_alloc(unsigned node, size_t size, size_t align)
{
    size_t len = round_up(size, NSP_ARENA_SIZE);
    if (len < size) {
        errno = ENOMEM;
        return NULL;
    }
    if (nsp__node_limit_pages[node] &&
        (int64_t)((nsp__pageheap_counter(&nsp__pageheaps[node].pages_mapped) +
                   (len >> NSP_PAGE_SHIFT))) >
            nsp__node_limit_pages[node]) {
        errno = ENOMEM; /* the node is at its limit (NSP_NODE_LIMITS) */
        return NULL;
    }
    size_t meta = round_up(sizeof(struct nsp_arena) + sizeof(struct nsp_span), 4096);
    if (nsp__mapped_add(len) < 0) {
        errno = ENOMEM;
        return NULL;
    }
    char *m = nsp__os_map(meta, 4096);
    void *base = m ? map_user_in_table(len, align > NSP_ARENA_SIZE ? align : NSP_ARENA_SIZE)
                   : NULL;
    if (!base) {
        if (m)
            nsp__os_unmap_meta(m, meta);
        nsp__mapped_sub(len);
        errno = ENOMEM;
        return NULL;
    }
    struct nsp_arena *ar = (struct nsp_arena *)m;
    ar->base = (uintptr_t)base;
    ar->size = len;
    ar->node = node;
    ar->huge = 1;
    ar->meta_size = meta;
    ar->spans = (struct nsp_span *)(m + round_up(sizeof *ar, 64));
    struct nsp_span *s = ar->spans;
    s->arena = ar;
    s->node = (uint16_t)node;
    s->base = ar->base;
    s->npages = len >> NSP_PAGE_SHIFT;
    nsp_topo_bind_memory(nsp__topo, base, len, node);
    COUNT_ATOMIC(nsp__pageheaps[node].pages_mapped, len >> NSP_PAGE_SHIFT); /* no lock: atomic */
    set_table(ar, 1);
    return s;
}

void (*_Atomic nsp__test_huge_given_up)(void);

int nsp__huge_resize(struct nsp_span *s, size_t size)
{
    struct nsp_arena *ar = s->arena;
    size_t len = round_up(size, NSP_ARENA_SIZE), old = ar->size;
    if (len < size)
        return -1;
    if (len == old)
        return 0;
    void *base = (void *)ar->base;
    /* The table's slots of the old range are cleared before mremap gives any of it up (the tail
     * of a shrink, or all of it in a move): once given up, a concurrent mapping may receive that
     * range and set its own slots, which clearing afterwards would wipe (its frees then abort).
     * Nobody else may use this object while it is resized, so its slots can be absent meanwhile;
     * a failed mremap gives up nothing, and the slots are set again. */
    set_table(ar, 0);
    void *moved = mremap(base, old, len, 0); /* in place: shrinking, or room after it */
    if (moved != MAP_FAILED && !table_covers((uintptr_t)moved, len)) {
        (void)mremap(base, len, old, 0); /* grown past the table's reach: back (a shrink) */
        moved = MAP_FAILED;
    }
    if (moved == MAP_FAILED) {
        /* Move the pages into an aligned reservation: no copy, and arena_table's 64 MiB slots
         * stay this object's alone; within the table's reach (map_user_in_table) */
        void *to = nsp__os_map(len, NSP_ARENA_SIZE);
        if (to && !table_covers((uintptr_t)to, len)) {
            nsp__os_unmap_meta(to, len);
            to = NULL;
        }
        if (to)
            moved = mremap(base, old, len, MREMAP_MAYMOVE | MREMAP_FIXED, to);
        if (moved == MAP_FAILED) {
            if (to)
                nsp__os_unmap_meta(to, len);
            set_table(ar, 1);
            return -1;
        }
        nsp__os_meta_became_user(len); /* the reservation holds the object's pages now */
    }
    void (*given_up)(void) = atomic_load_explicit(&nsp__test_huge_given_up, memory_order_relaxed);
    if (given_up) /* tests: another thread mapping memory just when the old range is free */
        given_up();
    ar->base = (uintptr_t)moved;
    ar->size = len;
    s->base = ar->base;
    s->npages = len >> NSP_PAGE_SHIFT;
    s->elemsize = (uint32_t)(len > UINT32_MAX ? 0 : len);
    set_table(ar, 1);
    COUNT_ATOMIC(nsp__pageheaps[ar->node].pages_mapped,
                 (len >> NSP_PAGE_SHIFT) - (old >> NSP_PAGE_SHIFT)); /* wraps down on a shrink */
    return 0;
}

void nsp__huge_free(struct nsp_span *s)
{
    struct nsp_arena *ar = s->arena;
    atomic_store_explicit(&s->state, NSP_SPAN_FREE, memory_order_relaxed);
    set_table(ar, 0);
    COUNT_ATOMIC(nsp__pageheaps[ar->node].pages_mapped, -(ar->size >> NSP_PAGE_SHIFT));
    nsp__mapped_sub(ar->size);
    nsp__os_unmap((void *)ar->base, ar->size);
    nsp__os_unmap_meta(ar, ar->meta_size);
}
