/*
 * host/pageheap.c — per-node page heaps (see pageheap.h for what it owns and its invariants).
 *
 * An arena is 64 MiB of user pages aligned to 64 MiB, bound to its node when the topology is this
 * machine, plus a separate metadata mapping: the arena struct, the page map, one span descriptor
 * per page (a span's descriptor is the one of its first page) and the two bitmaps, 16 words per
 * page each. When the OS refuses 64 MiB (RLIMIT_AS), an arena may be shorter: a power of two down
 * to NSP_ARENA_MIN_SIZE at the start of its 64 MiB slot, with nsp__arena_pages(ar) pages; nothing
 * here or in its readers assumes NSP_ARENA_PAGES pages per arena. Metadata is mapped NORESERVE
 * and touched only as spans use it; user pages are not (os.h): the system's overcommit policy
 * judges them.
 *
 * The hard limit (NSP_MEMORY_LIMIT with NSP_MEMORY_LIMIT_HARD=1) bounds mapped_bytes, the user
 * pages of every node's arenas and huge mappings: a mapping that would pass it is refused like
 * an OS refusal, and the entry points trim and retry before they return ENOMEM (alloc.h).
 */
#include "pageheap.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "options.h"
#include "os.h"
#include "runtime.h"

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

static void set_table(struct nsp_arena *ar, int present)
{
    struct nsp_arena *value = present ? (struct nsp_arena *)((uintptr_t)ar | (uintptr_t)ar->huge) : NULL;
    for (uintptr_t a = ar->base; a < ar->base + ar->size; a += NSP_ARENA_SIZE)
        __atomic_store_n(&nsp__arena_table[a >> NSP_ARENA_SHIFT], value, __ATOMIC_RELEASE);
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
    h->pages_free += r->npages;
    if (r->scavenged)
        h->pages_scavenged += r->npages;
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
    h->pages_free -= r->npages;
    if (r->scavenged)
        h->pages_scavenged -= r->npages;
}

/* Makes pages [start, start+n) of ar a FREE run (descriptor of start), mapping its ends. */
static struct nsp_span *run_make(struct nsp_arena *ar, uint32_t start, uint32_t n,
                                 uint32_t needzero, uint32_t scavenged)
{
    struct nsp_span *r = &ar->spans[start];
    memset(r, 0, sizeof *r);
    r->arena = ar;
    r->node = (uint16_t)ar->node;
    r->start_page = start;
    r->npages = n;
    r->base = ar->base + ((uintptr_t)start << NSP_PAGE_SHIFT);
    r->needzero = needzero;
    r->scavenged = scavenged;
    atomic_store_explicit(&r->state, NSP_SPAN_FREE, memory_order_relaxed);
    ar->pagemap[start] = r;
    ar->pagemap[start + n - 1] = r;
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
 * the descriptors and bitmaps are sized to the arena's pages. */
static struct nsp_arena *arena_map(unsigned node, size_t size)
{
    size_t pages = size >> NSP_PAGE_SHIFT, words = pages * NSP_BITMAP_WORDS_PER_PAGE;
    _Static_assert(sizeof(struct nsp_arena) <= NSP_ARENA_HDR, "page map follows the header");
    size_t meta = NSP_ARENA_HDR +
                  NSP_ARENA_PAGES * sizeof(struct nsp_span *) +
                  pages * sizeof(struct nsp_span) + 2 * words * sizeof(uint64_t);
    meta = round_up(meta, 4096);
    if (nsp__mapped_add(size) < 0)
        return NULL;
    char *m = nsp__os_map(meta, 4096);
    /* aligned to the slot, not to its size: the page map is indexed by the page in the slot */
    void *base = m ? nsp__os_map_user(size, NSP_ARENA_SIZE) : NULL;
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
    ar->spans = (struct nsp_span *)p;
    p += pages * sizeof(struct nsp_span);
    ar->alloc_bits = (uint64_t *)p;
    p += words * sizeof(uint64_t);
    ar->freed_bits = (_Atomic uint64_t *)p;
    ar->base = (uintptr_t)base;
    ar->size = size;
    ar->node = node;
    ar->meta_size = meta;
    return ar;
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
        (int64_t)(h->pages_mapped + NSP_ARENA_PAGES) > nsp__node_limit_pages[node])
        return NULL;
    size_t least = NSP_ARENA_MIN_SIZE;
    while (least < NSP_ARENA_SIZE && (least >> NSP_PAGE_SHIFT) < need)
        least *= 2;
    struct nsp_arena *ar = NULL;
    for (size_t size = NSP_ARENA_SIZE; !ar && size >= least; size /= 2)
        ar = arena_map(node, size);
    if (!ar)
        return NULL;
    uint32_t pages = nsp__arena_pages(ar);
    /* The kernel is told where the pages belong; on a synthetic topology this is only recorded. */
    nsp_topo_bind_memory(nsp__topo, (void *)ar->base, ar->size, node);
    nsp_topo_bind_memory(nsp__topo, ar, ar->meta_size, node);
    ar->next = h->arenas;
    h->arenas = ar;
    h->pages_mapped += pages;
    h->arenas_mapped++;
    set_table(ar, 1);
    run_insert(h, run_make(ar, 0, pages, 0, 0));
    return ar;
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
    pthread_mutex_lock(&h->lock);
    long off;
    struct nsp_span *r = run_find(h, npages, align_pages, &off);
    if (!r) {
        if (!grow) {
            pthread_mutex_unlock(&h->lock);
            return NULL;
        }
        if (!arena_new(node, npages + align_pages - 1) ||
            !(r = run_find(h, npages, align_pages, &off))) {
            h->os_refusals++;
            pthread_mutex_unlock(&h->lock);
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
    struct nsp_span *sp = &ar->spans[s];
    memset(sp, 0, sizeof *sp);
    sp->arena = ar;
    sp->node = (uint16_t)node;
    sp->start_page = s;
    sp->npages = n;
    sp->base = ar->base + ((uintptr_t)s << NSP_PAGE_SHIFT);
    sp->needzero = needzero;
    sp->alloc_bits = ar->alloc_bits + (size_t)s * NSP_BITMAP_WORDS_PER_PAGE;
    sp->freed_bits = ar->freed_bits + (size_t)s * NSP_BITMAP_WORDS_PER_PAGE;
    /* Not FREE before the lock is dropped: a neighbour freed meanwhile must not take these
     * pages into its run. */
    atomic_store_explicit(&sp->state, NSP_SPAN_TAKEN, memory_order_relaxed);
    for (uint32_t p = s; p < s + n; p++)
        ar->pagemap[p] = sp;
    pthread_mutex_unlock(&h->lock);
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

/* Scavenging without a pacer thread (a plain program runs no cycles, DESIGN.md §6; with the
 * thread, it hands pages back at its own rate and this rule is off): when the free pages
 * a node keeps resident pass max(64 MiB, a quarter of what it maps), a free hands back the
 * excess down to half that bound. Not lower: pages handed back and needed again cost a fault
 * each, so only a heap that shrank a lot (a phase ended) pays it (glibc trims far sooner).
 * Heap lock held; returns the bytes to scavenge once the lock is dropped (0: none). */
static size_t retained_excess(const struct nsp_pageheap *h)
{
    uint64_t resident = (h->pages_free - h->pages_scavenged) << NSP_PAGE_SHIFT;
    uint64_t bound = (h->pages_mapped << NSP_PAGE_SHIFT) / 4;
    if (bound < ((uint64_t)64 << 20))
        bound = (uint64_t)64 << 20;
    return resident > bound ? (size_t)(resident - bound / 2) : 0;
}

void nsp__pageheap_free(struct nsp_span *s)
{
    struct nsp_arena *ar = s->arena;
    struct nsp_pageheap *h = &nsp__pageheaps[ar->node];
    pthread_mutex_lock(&h->lock);
    uint32_t start = s->start_page, n = (uint32_t)s->npages, needzero = 1, scav = 0;
    desc_kill(s);
    /* pages inside a free run map to nothing (pageheap.h); run_make maps the ends again */
    memset(&ar->pagemap[start], 0, n * sizeof(struct nsp_span *));
    if (start > 0) {
        struct nsp_span *l = nsp__pagemap_span(nsp__pagemap_entry(ar, start - 1));
        if (l && l->npages && atomic_load_explicit(&l->state, memory_order_relaxed) ==
                                  NSP_SPAN_FREE && l->start_page + l->npages == start) {
            run_remove(h, l);
            ar->pagemap[start - 1] = NULL;
            start = l->start_page;
            n += (uint32_t)l->npages;
            desc_kill(l);
        }
    }
    if (start + n < nsp__arena_pages(ar)) {
        struct nsp_span *r = nsp__pagemap_span(nsp__pagemap_entry(ar, start + n));
        if (r && r->npages && atomic_load_explicit(&r->state, memory_order_relaxed) ==
                                  NSP_SPAN_FREE && r->start_page == start + n) {
            run_remove(h, r);
            ar->pagemap[start + n] = NULL;
            n += (uint32_t)r->npages;
            desc_kill(r);
        }
    }
    run_insert(h, run_make(ar, start, n, needzero, scav));
    size_t excess = atomic_load_explicit(&nsp__scavenge_paced, memory_order_relaxed)
                        ? 0 : retained_excess(h);
    pthread_mutex_unlock(&h->lock);
    if (excess)
        nsp__pageheap_scavenge_upto(h->node, excess);
}

int nsp__pageheap_grow(struct nsp_span *s, size_t npages)
{
    struct nsp_arena *ar = s->arena;
    struct nsp_pageheap *h = &nsp__pageheaps[ar->node];
    uint32_t end = s->start_page + (uint32_t)s->npages;
    if (npages <= s->npages || (size_t)s->start_page + npages > nsp__arena_pages(ar))
        return -1;
    uint32_t need = (uint32_t)(npages - s->npages);
    pthread_mutex_lock(&h->lock);
    struct nsp_span *r =
        end < nsp__arena_pages(ar) ? nsp__pagemap_span(nsp__pagemap_entry(ar, end)) : NULL;
    if (!r || !r->npages || atomic_load_explicit(&r->state, memory_order_relaxed) != NSP_SPAN_FREE ||
        r->start_page != end || r->npages < need) {
        pthread_mutex_unlock(&h->lock);
        return -1;
    }
    run_remove(h, r);
    uint32_t rn = (uint32_t)r->npages, needzero = r->needzero, scav = r->scavenged;
    desc_kill(r);
    if (rn > need)
        run_insert(h, run_make(ar, end + need, rn - need, needzero, scav));
    for (uint32_t p = end; p < end + need; p++)
        ar->pagemap[p] = s;
    s->npages = npages;
    s->elemsize = (uint32_t)(npages << NSP_PAGE_SHIFT);
    pthread_mutex_unlock(&h->lock);
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
    pthread_mutex_lock(&h->lock);
    /* longest runs first (list 0), so that few calls hand back much */
    for (unsigned i = 0; i < NSP_FREE_LISTS && released < want; i++) {
        unsigned k = i ? NSP_FREE_LISTS - i : 0;
        for (struct nsp_span *r = h->free_runs[k]; r && released < want; r = r->next) {
            if (r->scavenged || nsp__os_release((void *)r->base, (size_t)r->npages << NSP_PAGE_SHIFT))
                continue;
            r->scavenged = 1;
            r->needzero = 0;
            released += (size_t)r->npages << NSP_PAGE_SHIFT;
        }
    }
    /* published once for the whole hand-back: stats read it without this lock (stats.c), and a
     * reading should see a hand-back done or not yet, as it did when it took the lock */
    h->pages_scavenged += released >> NSP_PAGE_SHIFT;
    pthread_mutex_unlock(&h->lock);
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
        (int64_t)((nsp__pageheaps[node].pages_mapped + (len >> NSP_PAGE_SHIFT))) >
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
    void *base = m ? nsp__os_map_user(len, align > NSP_ARENA_SIZE ? align : NSP_ARENA_SIZE) : NULL;
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
    struct nsp_pageheap *h = &nsp__pageheaps[node];
    pthread_mutex_lock(&h->lock);
    h->pages_mapped += len >> NSP_PAGE_SHIFT;
    pthread_mutex_unlock(&h->lock);
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
    if (moved == MAP_FAILED) {
        /* Move the pages into an aligned reservation: no copy, and arena_table's 64 MiB slots
         * stay this object's alone. */
        void *to = nsp__os_map(len, NSP_ARENA_SIZE);
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
    struct nsp_pageheap *h = &nsp__pageheaps[ar->node];
    pthread_mutex_lock(&h->lock);
    h->pages_mapped = h->pages_mapped - (old >> NSP_PAGE_SHIFT) + (len >> NSP_PAGE_SHIFT);
    pthread_mutex_unlock(&h->lock);
    return 0;
}

void nsp__huge_free(struct nsp_span *s)
{
    struct nsp_arena *ar = s->arena;
    struct nsp_pageheap *h = &nsp__pageheaps[ar->node];
    atomic_store_explicit(&s->state, NSP_SPAN_FREE, memory_order_relaxed);
    set_table(ar, 0);
    pthread_mutex_lock(&h->lock);
    h->pages_mapped -= ar->size >> NSP_PAGE_SHIFT;
    pthread_mutex_unlock(&h->lock);
    nsp__mapped_sub(ar->size);
    nsp__os_unmap((void *)ar->base, ar->size);
    nsp__os_unmap_meta(ar, ar->meta_size);
}
