/*
 * tests/test_host_units.c — the host allocator layer by layer: size classes, the page heap and
 * its page map, one span's bitmaps, then the malloc API's contracts (errors, alignment, realloc,
 * errno, OS refusal) and process life (threads that exit, fork).
 *
 * Links the static library so that internal layers can be driven directly; the test process's
 * own allocations (Check's included) go through numaspan too. Run twice by CTest: on the real
 * machine and on a synthetic 4-node topology (NSP_TOPOLOGY).
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "host/alloc.h"
#include "host/cache.h"
#include "host/central.h"
#include "host/os.h"
#include "host/pageheap.h"
#include "host/runtime.h"
#include "host/sizeclass.h"
#include "host/span.h"
#include "check_main.h"
#include "numaspan.h"

static void ready(void)
{
    free(malloc(1)); /* initialises the allocator */
    ck_assert_int_eq(atomic_load(&nsp__ready), 1);
}

/* ---- size classes ------------------------------------------------------------------------------ */

START_TEST(classes_bound_waste)
{
    ready();
    for (unsigned k = 1; k < NSP_NUM_CLASSES; k++) {
        const struct nsp_sizeclass *c = &nsp__classes[k];
        size_t bytes = (size_t)c->npages * NSP_PAGE_SIZE;
        ck_assert_msg(k == 1 || c->size % 16 == 0, "class %u (%u B) not 16-aligned", k, c->size);
        ck_assert_uint_gt(c->size, nsp__classes[k - 1].size);
        ck_assert_uint_ge(c->nelems, c->size > 16384 ? 16 : 32);
        ck_assert_uint_ge(bytes, 64 * 1024);
        ck_assert_uint_le(c->nelems, c->npages * 1024); /* fits the span's bitmap */
        ck_assert_msg(bytes % c->size <= bytes / 16, "class %u tail waste over 1/16", c->size);
        if (c->size > 128)
            ck_assert_msg((double)(c->size - nsp__classes[k - 1].size - 1) / c->size < 0.125,
                          "class %u rounding waste over 12.5%%", c->size);
    }
    ck_assert_uint_eq(nsp__classes[NSP_NUM_CLASSES - 1].size, NSP_MAX_SMALL);
    for (unsigned a = 16; a <= NSP_MAX_SMALL; a *= 2) { /* powers of two are classes */
        unsigned k = nsp__size_to_class(a);
        ck_assert_uint_eq(nsp__classes[k].size, a);
    }
}
END_TEST

START_TEST(class_lookup_is_tightest)
{
    ready();
    ck_assert_uint_eq(nsp__size_to_class(0), nsp__size_to_class(1)); /* malloc(0): alloc.h */
    for (size_t n = 1; n <= NSP_MAX_SMALL; n++) {
        unsigned k = nsp__size_to_class(n);
        ck_assert_uint_ge(nsp__classes[k].size, n);
        ck_assert_msg(k == 1 || nsp__classes[k - 1].size < n, "%zu B: class %u not the smallest", n,
                      nsp__classes[k].size);
        /* the shared rule (numaspan_geometry.h, also compiled into the device heap) agrees */
        ck_assert_uint_eq(nsp_geom_size_to_class((uint32_t)n), k);
    }
}
END_TEST

START_TEST(reciprocal_index_is_exact)
{
    ready();
    for (unsigned k = 1; k < NSP_NUM_CLASSES; k++) {
        struct nsp_span s = {.base = 1 << 20,
                             .elemsize = nsp__classes[k].size,
                             .nelems = nsp__classes[k].nelems,
                             .divmul = nsp__classes[k].divmul};
        for (uint32_t i = 0; i < s.nelems; i++) {
            uintptr_t p = s.base + (uintptr_t)i * s.elemsize;
            ck_assert_uint_eq(nsp__span_index(&s, p), i);
            if (s.elemsize > 8) /* an interior pointer is no slot */
                ck_assert_uint_eq(nsp__span_index(&s, p + 8), UINT32_MAX);
        }
        ck_assert_uint_eq(nsp__span_index(&s, s.base + (uintptr_t)s.nelems * s.elemsize),
                          UINT32_MAX);
    }
}
END_TEST

/* The local free's push checks a slot's start with each class's divisibility constant
 * (sizeclass.h, nsp__class_push): one that says yes too often would let the push list an interior
 * pointer (handed out again, overlapping its object); one that says no too often would not show
 * as a wrong free (the push misses, the locked path frees it), only as the class's local frees
 * going slow. So the test is checked against the remainder at every offset of every class's
 * span, and at the largest offsets a span may ever have (below 2^32, sizeclass.h). */
START_TEST(push_table_matches_classes)
{
    ready();
    for (unsigned k = 1; k < NSP_NUM_CLASSES; k++) {
        uint32_t size = nsp__classes[k].size;
        uint64_t mul = nsp__class_push_mul(k), bytes = nsp__class_span_bytes(k);
        ck_assert_msg(mul == nsp__class_divisor_mul(size),
                      "class %u (%u B): the push table holds %#llx", k, size,
                      (unsigned long long)mul);
        for (uint64_t n = 0; n < bytes; n++)
            if (nsp__class_slot_start(mul, n) != (n % size == 0))
                ck_abort_msg("class %u (%u B): offset %llu taken as %s", k, size,
                             (unsigned long long)n,
                             n % size ? "a slot's start" : "inside a slot");
        for (uint64_t n = UINT32_MAX - 3 * (uint64_t)size; n <= UINT32_MAX; n++)
            if (nsp__class_slot_start(mul, n) != (n % size == 0))
                ck_abort_msg("class %u (%u B): offset %llu taken as %s", k, size,
                             (unsigned long long)n,
                             n % size ? "a slot's start" : "inside a slot");
    }
}
END_TEST

/* ---- page heap ---------------------------------------------------------------------------------- */

START_TEST(page_runs_coalesce_and_are_reused)
{
    ready();
    struct nsp_pageheap *h = &nsp__pageheaps[0];
    struct nsp_span *a = nsp__pageheap_alloc(0, 3, 1);
    struct nsp_span *b = nsp__pageheap_alloc(0, 5, 1);
    struct nsp_span *c = nsp__pageheap_alloc(0, 7, 1);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_nonnull(c);
    for (struct nsp_span *s = a; s; s = s == a ? b : s == b ? c : NULL)
        atomic_store(&s->state, NSP_SPAN_LARGE);
    ck_assert_ptr_eq(a->arena, b->arena);
    ck_assert_uint_eq(b->base, a->base + 3 * NSP_PAGE_SIZE); /* carved one after another */
    ck_assert_uint_eq(c->base, b->base + 5 * NSP_PAGE_SIZE);
    /* every page of a live span maps to it, interior addresses included */
    for (uintptr_t p = b->base; p < b->base + 5 * NSP_PAGE_SIZE; p += 4096)
        ck_assert_ptr_eq(nsp__span_of((void *)(p + 8)), b);
    uintptr_t abase = a->base, bbase = b->base;
    uint64_t free0 = h->pages_free;
    nsp__pageheap_free(b);
    ck_assert_uint_eq(h->pages_free, free0 + 5);
    for (uintptr_t p = bbase; p < bbase + 5 * NSP_PAGE_SIZE; p += NSP_PAGE_SIZE)
        ck_assert_ptr_null(nsp__span_of((void *)p)); /* free pages are nobody's */
    nsp__pageheap_free(a); /* coalesces with b's run */
    struct nsp_span *run = a->arena->pagemap[a->start_page];
    ck_assert_uint_eq(atomic_load(&run->state), NSP_SPAN_FREE);
    ck_assert_uint_eq(run->npages, 8);
    /* a request that fits the coalesced run reuses it, and its pages need zeroing */
    struct nsp_span *d = nsp__pageheap_alloc(0, 8, 1);
    ck_assert_uint_eq(d->base, abase);
    ck_assert_uint_eq(d->needzero, 1);
    (void)bbase;
    atomic_store(&d->state, NSP_SPAN_LARGE);
    nsp__pageheap_free(d);
    nsp__pageheap_free(c);
}
END_TEST

START_TEST(page_runs_aligned)
{
    ready();
    for (size_t align = 2; align <= 1024; align *= 4) {
        struct nsp_span *pad = nsp__pageheap_alloc(0, 1, 1); /* misalign the next free page */
        struct nsp_span *s = nsp__pageheap_alloc(0, 3, align);
        ck_assert_ptr_nonnull(s);
        ck_assert_uint_eq(s->base % (align * NSP_PAGE_SIZE), 0);
        atomic_store(&s->state, NSP_SPAN_LARGE);
        atomic_store(&pad->state, NSP_SPAN_LARGE);
        nsp__pageheap_free(s);
        nsp__pageheap_free(pad);
    }
}
END_TEST

/* When the OS refuses a 64 MiB arena (`ulimit -v 65536` leaves room for 32 MiB), a shorter one
 * at the start of its 64 MiB slot serves instead: runs, coalescing and growth stop at its end,
 * addresses past it in the slot are nobody's, and the stats and the ledger's recount walk only
 * its pages (they walked NSP_ARENA_PAGES descriptors, past its metadata). */
#define HELD_MAX 16384
static struct nsp_span *held[HELD_MAX];

START_TEST(short_arena_when_a_full_one_is_refused)
{
    ready();
    struct nsp_pageheap *h = &nsp__pageheaps[0];
    unsigned nheld = 0; /* node 0's free runs, all taken, so that the next run needs an arena */
    for (size_t n = NSP_ARENA_PAGES; n >= 1 && nheld < HELD_MAX;) {
        struct nsp_span *r = nsp__pageheap_alloc_free(0, n, 1);
        if (!r) {
            n /= 2;
            continue;
        }
        atomic_store(&r->state, NSP_SPAN_LARGE);
        held[nheld++] = r;
    }
    ck_assert_uint_lt(nheld, HELD_MAX);
    ck_assert_uint_eq(h->pages_free, 0);
    uint64_t mapped0 = h->pages_mapped;
    /* the 64 MiB and 32 MiB arenas' metadata mappings are refused: a 16 MiB arena serves */
    nsp__test_os_fail_next(2);
    struct nsp_span *s = nsp__pageheap_alloc(0, 3, 1);
    nsp__test_os_fail_next(0);
    ck_assert_ptr_nonnull(s);
    atomic_store(&s->state, NSP_SPAN_LARGE);
    struct nsp_arena *ar = s->arena;
    size_t pages = ((size_t)16 << 20) / NSP_PAGE_SIZE;
    ck_assert_uint_eq(ar->size, (size_t)16 << 20);
    ck_assert_uint_eq(nsp__arena_pages(ar), pages);
    ck_assert_uint_eq(ar->base % NSP_ARENA_SIZE, 0); /* the start of its slot */
    ck_assert_uint_eq(s->base, ar->base);
    ck_assert_uint_eq(h->pages_mapped, mapped0 + pages);
    ck_assert_uint_eq(h->pages_free, pages - 3);
    ck_assert_ptr_eq(nsp__span_of((void *)(ar->base + 8)), s);
    ck_assert_ptr_null(nsp__span_of((void *)(ar->base + ar->size + 8))); /* past it: nobody's */
    /* the rest of the arena, as one run, and no growth past its end */
    struct nsp_span *rest = nsp__pageheap_alloc_free(0, pages - 3, 1);
    ck_assert_ptr_nonnull(rest);
    ck_assert_uint_eq(rest->base + rest->npages * NSP_PAGE_SIZE, ar->base + ar->size);
    atomic_store(&rest->state, NSP_SPAN_LARGE);
    ck_assert_int_eq(nsp__pageheap_grow(rest, rest->npages + 1), -1);
    ck_assert_ptr_null(nsp__pageheap_alloc_free(0, 1, 1));
    /* the walks of the stats and of the recount stop at the arena's last page */
    nsp_stats_t st;
    ck_assert_int_eq(nsp_stats_get(&st), 0);
    ck_assert_uint_eq(st.node[0].pages_mapped, mapped0 + pages);
    ck_assert_uint_eq(st.node[0].pages_free, 0);
    unsigned bad_node;
    int64_t ledger, charges;
    ck_assert_int_eq(nsp_ledger_recount(&bad_node, &ledger, &charges), 0);
    /* freed, the two coalesce into one run of the whole arena, which serves again */
    nsp__pageheap_free(rest);
    nsp__pageheap_free(s);
    struct nsp_span *run = ar->pagemap[0];
    ck_assert_uint_eq(atomic_load(&run->state), NSP_SPAN_FREE);
    ck_assert_uint_eq(run->npages, pages);
    ck_assert_ptr_eq(ar->pagemap[pages - 1], run);
    struct nsp_span *again = nsp__pageheap_alloc_free(0, pages, 1);
    ck_assert_ptr_nonnull(again);
    ck_assert_uint_eq(again->base, ar->base);
    atomic_store(&again->state, NSP_SPAN_LARGE);
    nsp__pageheap_free(again);
    while (nheld)
        nsp__pageheap_free(held[--nheld]);
}
END_TEST

/* ---- one span ----------------------------------------------------------------------------------- */

static struct nsp_span *test_span(unsigned cls)
{
    struct nsp_span *s = nsp__pageheap_alloc(0, nsp__classes[cls].npages, 1);
    ck_assert_ptr_nonnull(s);
    nsp__span_init_small(s, cls);
    atomic_store(&s->state, NSP_SPAN_SWEEPING); /* owned by the test */
    return s;
}

/* Gives a test_span back to the page heap, as a central does, whatever the case left in it (free
 * slots with no tag, a FULL state no central lists): left in the heap, the validators of a later
 * case in the same process (CK_FORK=no, tests/valgrind.sh) read it as a live span and fail. */
static void test_span_done(struct nsp_span *s)
{
    atomic_store(&s->state, NSP_SPAN_TAKEN);
    nsp__pageheap_free(s);
}

/* The page map's entries carry a small span's class on every page, and the class map's bytes the
 * same (pageheap.h): the bins' free finds its bin from the byte alone, without the entry or the
 * span's descriptor (alloc.h). Pages given back and taken again as a large span carry none, and
 * the lookup of the span ignores the class. */
START_TEST(page_map_carries_the_small_class)
{
    ready();
    unsigned cls = 0;
    for (unsigned k = 1; k < NSP_NUM_CLASSES && !cls; k++)
        if (nsp__classes[k].npages >= 2)
            cls = k;
    ck_assert_uint_ne(cls, 0);
    struct nsp_span *s = test_span(cls);
    uint64_t npages = s->npages;
    uintptr_t base = s->base;
    for (uint64_t i = 0; i < npages; i++) {
        void *a = (void *)(base + i * NSP_PAGE_SIZE + 8);
        ck_assert_uint_eq(nsp__page_class(a), cls);
        ck_assert_uint_eq(nsp__page_class_wrapped(a), cls); /* the class map's byte */
        ck_assert_ptr_eq(nsp__span_of(a), s);
    }
    char why[256];
    ck_assert_msg(nsp_heap_check(why, sizeof why) == 0, "%s", why);
    atomic_store(&s->state, NSP_SPAN_TAKEN); /* back to the page heap, as a central does */
    nsp__pageheap_free(s);
    for (uint64_t i = 0; i < npages; i++) {
        ck_assert_uint_eq(nsp__page_class((void *)(base + i * NSP_PAGE_SIZE)), 0);
        ck_assert_uint_eq(nsp__page_class_wrapped((void *)(base + i * NSP_PAGE_SIZE)), 0);
    }
    ck_assert_msg(nsp_heap_check(why, sizeof why) == 0, "%s", why); /* and every other page's */
    struct nsp_span *l = nsp__pageheap_alloc(0, npages, 1);
    ck_assert_ptr_nonnull(l);
    atomic_store(&l->state, NSP_SPAN_LARGE);
    for (uint64_t i = 0; i < npages; i++) {
        void *a = (void *)(l->base + i * NSP_PAGE_SIZE);
        ck_assert_uint_eq(nsp__page_class(a), 0);
        ck_assert_uint_eq(nsp__page_class_wrapped(a), 0);
        ck_assert_ptr_eq(nsp__span_of(a), l);
    }
    nsp__pageheap_free(l);
}
END_TEST

START_TEST(span_cursor_and_local_free)
{
    ready();
    unsigned cls = nsp__size_to_class(48);
    struct nsp_span *s = test_span(cls);
    uint32_t n = s->nelems;
    void **p = malloc(n * sizeof *p);
    for (uint32_t i = 0; i < n; i++) {
        p[i] = nsp__span_alloc_fast(s);
        if (!p[i])
            p[i] = nsp__span_next_free(s);
        ck_assert_ptr_eq(p[i], (void *)(s->base + (uintptr_t)i * s->elemsize));
    }
    ck_assert_ptr_null(nsp__span_next_free(s));
    ck_assert_uint_eq(s->alloc_count, n);
    /* the last allocation given back is handed out again at once (LIFO) */
    ck_assert_int_eq(nsp__span_free_local(s, n - 1), 0);
    ck_assert_ptr_eq(nsp__span_alloc_fast(s), p[n - 1]);
    /* a slot behind the cursor is found again first fit, lowest first (RSS stays packed) */
    ck_assert_int_eq(nsp__span_free_local(s, 9), 0);
    ck_assert_int_eq(nsp__span_free_local(s, 7), 0);
    ck_assert_int_eq(nsp__span_free_local(s, 7), -1); /* double free caught */
    ck_assert_ptr_eq(nsp__span_next_free(s), p[7]);
    ck_assert_ptr_eq(nsp__span_next_free(s), p[9]);
    ck_assert_ptr_null(nsp__span_next_free(s)); /* full: nothing behind or ahead */
    ck_assert_uint_eq(s->alloc_count, n);
    /* freed remotely first, then by the owner: caught, the slot stays allocated (the sweep
     * gives it back once; the other way a reuse before the sweep would be freed live) */
    ck_assert_int_eq(nsp__span_free_remote(s, 11), 0);
    ck_assert_int_eq(nsp__span_free_local(s, 11), -1);
    ck_assert_uint_eq(s->alloc_count, n);
    ck_assert_ptr_null(nsp__span_next_free(s));
    free(p);
    test_span_done(s);
}
END_TEST

START_TEST(span_remote_free_and_sweep)
{
    ready();
    unsigned cls = nsp__size_to_class(16);
    struct nsp_span *s = test_span(cls);
    for (int i = 0; i < 100; i++)
        ck_assert_ptr_nonnull(nsp__span_next_free(s));
    uint32_t doubles;
    uintptr_t first;
    ck_assert_int_eq(nsp__span_free_remote(s, 3), 0);
    ck_assert_int_eq(nsp__span_free_remote(s, 64), 0);
    ck_assert_int_eq(nsp__span_free_remote(s, 3), -1); /* twice before a sweep */
    ck_assert_uint_eq(atomic_load(&s->dirty), 1);
    ck_assert_uint_eq(s->alloc_count, 100); /* nothing applied yet */
    ck_assert_uint_eq(nsp__span_sweep(s, &doubles, &first), 2);
    ck_assert_uint_eq(doubles, 0);
    ck_assert_uint_eq(s->alloc_count, 98);
    ck_assert_uint_eq(atomic_load(&s->dirty), 0);
    /* applied exactly once: a second sweep finds nothing */
    ck_assert_uint_eq(nsp__span_sweep(s, &doubles, &first), 0);
    /* a remote free of a slot that is not allocated is caught at once, by its alloc bit, and
     * leaves nothing for the sweep to apply */
    ck_assert_int_eq(nsp__span_free_remote(s, 500), -1);
    ck_assert_uint_eq(atomic_load(&s->freed_bits[500 >> 6]), 0);
    /* a freed bit the check cannot stop (a free racing the owner's own free of the slot) is
     * reported by the sweep, and not applied */
    atomic_fetch_or(&s->freed_bits[500 >> 6], 1ULL << (500 & 63));
    atomic_store(&s->dirty, 1);
    ck_assert_uint_eq(nsp__span_sweep(s, &doubles, &first), 0);
    ck_assert_uint_eq(doubles, 1);
    ck_assert_uint_eq(first, s->base + 500 * 16);
    /* a remote free that finds the span FULL says so (the caller wakes it) */
    atomic_store(&s->state, NSP_SPAN_FULL);
    ck_assert_int_eq(nsp__span_free_remote(s, 10), 1);
    test_span_done(s);
}
END_TEST

/* ---- the malloc API's contracts ----------------------------------------------------------------- */

START_TEST(sizes_that_overflow)
{
    errno = 0;
    ck_assert_ptr_null(calloc(SIZE_MAX / 2, 3));
    ck_assert_int_eq(errno, ENOMEM);
    errno = 0;
    ck_assert_ptr_null(malloc(SIZE_MAX));
    ck_assert_int_eq(errno, ENOMEM);
    errno = 0;
    ck_assert_ptr_null(malloc(PTRDIFF_MAX + (size_t)1));
    ck_assert_int_eq(errno, ENOMEM);
    errno = 0;
    ck_assert_ptr_null(reallocarray(NULL, SIZE_MAX / 4, 8));
    ck_assert_int_eq(errno, ENOMEM);
    void *p = malloc(10);
    errno = 0;
    ck_assert_ptr_null(realloc(p, SIZE_MAX - 4096));
    ck_assert_int_eq(errno, ENOMEM);
    free(p); /* the old block stays valid */
}
END_TEST

START_TEST(alignments)
{
    void *p;
    errno = 0;
    ck_assert_ptr_null(aligned_alloc(24, 64));
    ck_assert_int_eq(errno, EINVAL);
    p = memalign(48, 64); /* glibc's memalign rounds up to a power of two (test_memory.sh) */
    ck_assert_uint_eq((uintptr_t)p % 64, 0);
    free(p);
    ck_assert_int_eq(posix_memalign(&p, 4, 64), EINVAL);  /* not a multiple of sizeof(void *) */
    ck_assert_int_eq(posix_memalign(&p, 24, 64), EINVAL); /* not a power of two */
    ck_assert_int_eq(posix_memalign(&p, 64, SIZE_MAX / 2), ENOMEM);
    size_t sizes[] = {1, 24, 100, 4000, 40000, 300000};
    for (size_t a = 8; a <= ((size_t)4 << 20); a *= 2)
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            ck_assert_int_eq(posix_memalign(&p, a, sizes[i]), 0);
            ck_assert_msg((uintptr_t)p % a == 0, "%zu B at alignment %zu: %p", sizes[i], a, p);
            ck_assert_uint_ge(malloc_usable_size(p), sizes[i]);
            memset(p, 0xab, sizes[i]);
            free(p);
            p = aligned_alloc(a, sizes[i]);
            ck_assert_uint_eq((uintptr_t)p % a, 0);
            free(p);
        }
    p = valloc(100);
    ck_assert_uint_eq((uintptr_t)p % 4096, 0);
    free(p);
    p = pvalloc(100);
    ck_assert_uint_eq((uintptr_t)p % 4096, 0);
    ck_assert_uint_ge(malloc_usable_size(p), 4096);
    free(p);
}
END_TEST

/* The bytes realloc must keep, sampled: the first 4 KiB, then every byte whose offset is a
 * multiple of 4093 (a stride that walks across page offsets). */
static int kept(const unsigned char *p, size_t n, int check)
{
    for (size_t j = 0; j < n; j = j < 4096 ? j + 1 : (j / 4093 + 1) * 4093) {
        unsigned char want = (unsigned char)(j * 7 + 1);
        if (check && p[j] != want)
            return 0;
        if (!check)
            ((unsigned char *)p)[j] = want;
    }
    return 1;
}

START_TEST(realloc_keeps_contents)
{
    size_t steps[] = {1, 15, 16, 100, 1000, 5000, 40000, 100000, 200000, 3 << 20, 40 << 20,
                      (size_t)100 << 20, (size_t)300 << 20, (size_t)70 << 20, 50, 0};
    unsigned char *p = NULL;
    size_t have = 0;
    for (size_t i = 0; steps[i]; i++) {
        p = realloc(p, steps[i]);
        ck_assert_ptr_nonnull(p);
        size_t keep = have < steps[i] ? have : steps[i];
        ck_assert_msg(kept(p, keep, 1), "contents lost at step %zu (%zu -> %zu B)", i, have,
                      steps[i]);
        kept(p, steps[i], 0);
        have = steps[i];
        ck_assert_uint_ge(malloc_usable_size(p), steps[i]);
    }
    ck_assert_ptr_null(realloc(p, 0)); /* frees, as glibc does */
}
END_TEST

START_TEST(calloc_zeroes_reused_memory)
{
    size_t sizes[] = {8, 100, 5000, 100000, 1 << 20};
    for (int round = 0; round < 3; round++)
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            unsigned char *p = malloc(sizes[i]);
            memset(p, 0xff, sizes[i]);
            free(p);
            p = calloc(1, sizes[i]);
            /* one assertion, on the first byte that is not 0: in fork mode each Check assertion
             * records its place with the runner, and one per byte (3.3 million) took 4 s of cpu,
             * past the case's 60 s when a loaded machine gave it a twentieth of a cpu */
            size_t j = 0;
            while (j < sizes[i] && p[j] == 0)
                j++;
            ck_assert_msg(j == sizes[i], "calloc(%zu) byte %zu is %u", sizes[i], j, p[j]);
            free(p);
        }
}
END_TEST

START_TEST(free_keeps_errno_and_zero_size)
{
    void *a = malloc(0), *b = malloc(0);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_ne(a, b);
    void *big = malloc(1 << 20);
    errno = 12345;
    free(a);
    free(b);
    free(big);
    free(NULL);
    ck_assert_int_eq(errno, 12345);
}
END_TEST

START_TEST(malloc_node_places)
{
    unsigned nn = nsp_topo_num_nodes(nsp_topology());
    for (unsigned n = 0; n < nn; n++) {
        void *s = nsp_malloc_node(100, n), *l = nsp_malloc_node(200000, n);
        ck_assert_int_eq(nsp_node_of(s), (int)n);
        ck_assert_int_eq(nsp_node_of(l), (int)n);
        free(s);
        free(l);
    }
    errno = 0;
    ck_assert_ptr_null(nsp_malloc_node(100, nn));
    ck_assert_int_eq(errno, EINVAL);
    int local;
    ck_assert_int_eq(nsp_node_of(&local), -1);
}
END_TEST

/* A node whose memory runs out sends its refills to the nearest node with room, by distance. */
START_TEST(spill_to_nearest_node)
{
    nsp_topo_t *t = nsp_topology();
    unsigned nn = nsp_topo_num_nodes(t);
    if (nn < 2) {
        fprintf(stderr, "spill_to_nearest_node: skipped: one NUMA node, nowhere to spill\n");
        return;
    }
    unsigned from = nn - 1, to = nsp_topo_nodes_by_distance(t, from)[1];
    nsp_stats_t st;
    ck_assert_int_eq(nsp_stats_get(&st), 0);
    if (st.node[from].pages_mapped) {
        /* its free pages and spans serve the objects without a new arena */
        fprintf(stderr, "spill_to_nearest_node: skipped: node %u has pages already (an earlier "
                        "case in this process: CK_FORK=no): nothing would spill\n", from);
        return;
    }
    nsp__test_nodes_without_memory = 1ULL << from;
    uint64_t out0 = st.node[from].spills_out, in0 = st.node[to].spills_in;
    void *s = nsp_malloc_node(64, from), *l = nsp_malloc_node(300000, from);
    ck_assert_int_eq(nsp_node_of(s), (int)to);
    ck_assert_int_eq(nsp_node_of(l), (int)to);
    nsp_stats_get(&st);
    ck_assert_uint_eq(st.node[from].spills_out, out0 + 2);
    ck_assert_uint_eq(st.node[to].spills_in, in0 + 2);
    nsp__test_nodes_without_memory = 0;
    free(s);
    free(l);
}
END_TEST

static void *malloc_in_thread(void *arg)
{
    (void)arg;
    return malloc(1000);
}

/* On this machine, pages of an object asked for on node n are on node n: the kernel says so
 * (move_pages with no target reports where each page is). */
START_TEST(real_placement)
{
    nsp_topo_t *t = nsp_topology();
    if (!nsp_topo_is_thissystem(t)) {
        fprintf(stderr, "real_placement: skipped: synthetic topology, binding is only recorded\n");
        return;
    }
    for (unsigned n = 0; n < nsp_topo_num_nodes(t); n++) {
        nsp_node_info_t info;
        nsp_topo_node_info(t, n, &info);
        size_t len = 4 << 20;
        char *p = nsp_malloc_node(len, n);
        ck_assert_ptr_nonnull(p);
        memset(p, 1, len);
        void *pages[16];
        int status[16];
        for (int i = 0; i < 16; i++)
            pages[i] = p + (size_t)i * (len / 16);
        long rc = syscall(SYS_move_pages, 0, 16UL, pages, NULL, status, 0);
        if (rc < 0 && errno == ENOSYS) {
            fprintf(stderr, "real_placement: skipped: move_pages not available here\n");
            free(p);
            return;
        }
        ck_assert_int_eq(rc, 0);
        for (int i = 0; i < 16; i++)
            ck_assert_msg(status[i] == (int)info.os_index, "page %d of node %u's object is on %d", i,
                          n, status[i]);
        free(p);
    }
}
END_TEST

/* Memory handed out before the allocator was ready (hwloc's, during the topology load) is
 * recognised when freed or reallocated later: no error, contents kept. */
START_TEST(bootstrap_memory_is_recognised)
{
    ready();
    char *b = nsp__boot_alloc(100, 16);
    ck_assert_ptr_nonnull(b);
    ck_assert(nsp__boot_owns(b));
    memset(b, 7, 100);
    ck_assert_uint_eq(malloc_usable_size(b), 100);
    char *r = realloc(b, 5000);
    ck_assert_ptr_nonnull(r);
    ck_assert(!nsp__boot_owns(r));
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(r[i], 7);
    free(r);
    char *b2 = nsp__boot_alloc(64, 64);
    ck_assert_uint_eq((uintptr_t)b2 % 64, 0);
    free(b2);
    nsp_stats_t st;
    nsp_stats_get(&st);
    ck_assert_uint_eq(st.not_owned_frees, 0);
    ck_assert_uint_gt(st.bootstrap_bytes, 0); /* hwloc's load went through it */
}
END_TEST

/* Resident 4 KiB pages of [p, p + len) (mincore). */
static size_t resident_pages(const void *p, size_t len)
{
    uintptr_t lo = (uintptr_t)p & ~(uintptr_t)4095, hi = ((uintptr_t)p + len + 4095) & ~(uintptr_t)4095;
    unsigned char v[256];
    ck_assert_uint_le((hi - lo) / 4096, sizeof v);
    ck_assert_int_eq(mincore((void *)lo, hi - lo, v), 0);
    size_t n = 0;
    for (size_t i = 0; i < (hi - lo) / 4096; i++)
        n += v[i] & 1;
    return n;
}

/* Bootstrap blocks are never reused, but the pages that nothing live is on go back to the OS
 * when their blocks are freed (issue 11: hwloc's load frees all but ~13 KiB of the ~290 KiB it
 * takes, and those pages stayed resident for the process's life). A block still live keeps its
 * page and its contents, and a second free of a block changes nothing. */
START_TEST(bootstrap_pages_go_back)
{
    ready();
    char *keep = nsp__boot_alloc(100, 16);
    char *big = nsp__boot_alloc(64 << 10, 16);
    char *twice = nsp__boot_alloc(100, 16); /* on keep's page */
    ck_assert_ptr_nonnull(keep);
    ck_assert_ptr_nonnull(big);
    ck_assert_ptr_nonnull(twice);
    memset(keep, 5, 100);
    memset(big, 6, 64 << 10);
    memset(twice, 7, 100);
    ck_assert_uint_ge(resident_pages(big, 64 << 10), 16);
    free(big);
    /* its interior pages (every one but those it may share with a neighbour's) are gone */
    ck_assert_uint_le(resident_pages(big, 64 << 10), 2);
    free(twice);
    free(twice); /* a second free: keep's page must stay (its count is not lowered twice) */
    /* keep's pages: one, or two where what the topology's load took before left it across a
     * page boundary (twice then shares the second) */
    size_t keep_pages = ((uintptr_t)keep + 99) / 4096 - (uintptr_t)keep / 4096 + 1;
    ck_assert_uint_eq(resident_pages(keep, 100), keep_pages);
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(keep[i], 5);
    ck_assert_uint_eq(malloc_usable_size(keep), 100);
    free(keep);
    nsp_stats_t st;
    nsp_stats_get(&st);
    ck_assert_uint_eq(st.not_owned_frees, 0);
}
END_TEST

/* A fork while another thread hands an emptied bootstrap page back (it holds the region's flag
 * across its madvise): the child must not inherit the flag held by a thread it does not have.
 * The hook keeps the freeing thread inside its window for 100 ms, and the main thread forks as
 * soon as it is there; the child then takes the flag (a bootstrap allocation). Before fork took
 * the flag, the child spun on it for ever (killed by its alarm here). */
static _Atomic int boot_in_window;
static void boot_window_sleeps(void)
{
    if (atomic_fetch_add(&boot_in_window, 1) == 0) {
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
    }
}
static void *free_boot_block(void *p)
{
    free(p);
    return NULL;
}
START_TEST(fork_while_a_bootstrap_page_goes_back)
{
    ready();
    char *big = nsp__boot_alloc(64 << 10, 16);
    ck_assert_ptr_nonnull(big);
    memset(big, 6, 64 << 10);
    atomic_store(&boot_in_window, 0);
    atomic_store(&nsp__test_boot_release_window, boot_window_sleeps);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, free_boot_block, big), 0);
    while (atomic_load(&boot_in_window) == 0)
        sched_yield();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        signal(SIGALRM, SIG_DFL); /* Check's handler would kill the test's whole group */
        alarm(5);
        char *p = nsp__boot_alloc(100, 16);
        _exit(p ? 0 : 2);
    }
    pthread_join(t, NULL);
    atomic_store(&nsp__test_boot_release_window, NULL);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "the child could not take the bootstrap flag: %s %d",
                  WIFSIGNALED(status) ? "killed by signal" : "exit status",
                  WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
}
END_TEST

/* The VmFlags line of the mapping that holds p (/proc/self/smaps), into buf; 0 if found. */
static int vmflags_of(const void *p, char *buf, size_t len)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    ck_assert_ptr_nonnull(f);
    char line[512];
    int in = 0, found = -1;
    while (found < 0 && fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char c;
        if (sscanf(line, "%lx-%lx %c", &lo, &hi, &c) == 3 && strchr(line, '-') < strchr(line, ' '))
            in = (uintptr_t)p >= lo && (uintptr_t)p < hi;
        else if (in && strncmp(line, "VmFlags:", 8) == 0) {
            snprintf(buf, len, "%s", line);
            found = 0;
        }
    }
    fclose(f);
    return found;
}

/* Metadata is never backed by transparent huge pages (os.c): it is touched a few lines at a
 * time, and under THP "always" one arena's descriptors and bitmaps took 2 MiB resident instead
 * of tens of KiB (issue 11). The kernel's word for it is the "nh" flag of the mapping. */
START_TEST(metadata_never_huge)
{
    ready();
    if (access("/sys/kernel/mm/transparent_hugepage/enabled", F_OK) != 0) {
        fprintf(stderr, "metadata_never_huge: skipped: this kernel has no transparent huge pages\n");
        return;
    }
    char flags[512];
    size_t len = (size_t)4 << 20;
    char *m = nsp__os_map(len, (size_t)2 << 20);
    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(vmflags_of(m, flags, sizeof flags), 0);
    ck_assert_msg(strstr(flags, " nh"), "nsp__os_map's mapping may be huge: %s", flags);
    nsp__os_unmap_meta(m, len);
    /* and an arena's own metadata (its struct starts the mapping) */
    struct nsp_arena *ar = NULL;
    for (unsigned n = 0; !ar && n < nsp__nnodes; n++)
        ar = __atomic_load_n(&nsp__pageheaps[n].arenas, __ATOMIC_ACQUIRE);
    ck_assert_ptr_nonnull(ar); /* ready()'s malloc mapped one */
    ck_assert_int_eq(vmflags_of(ar, flags, sizeof flags), 0);
    ck_assert_msg(strstr(flags, " nh"), "an arena's metadata may be huge: %s", flags);
}
END_TEST

/* A second free of an object that a remote-free list held (its first word keeps the list's tag,
 * NSP_MAG_XFREE, after the sweep: span.h) searches the list of the span its page map entry named
 * (free.c, xfree_holds; realloc asks the same way, nsp__slot_live). Racing the span's release, the
 * search may come after the span was swept empty, given back and its pages cut again; the list's
 * head word, in the span's second page's descriptor, is then whatever that descriptor holds now:
 * for a span cut from the page after the old span's first, its first descriptor's alloc_cache,
 * the owner's cursor word. The search must write nothing there (the exchange that took the list
 * stored the old span's seal into it: the owner then handed out, a second time, the allocated
 * slots among the seal's bits) and report nothing (the head read back named no slot: "free list
 * corrupt" for an address nobody freed). Here live span b's previous page's descriptor plays the
 * old span's, as such a search reads it, and a buffer carrying the tag plays the object. */
START_TEST(a_late_second_free_takes_no_live_span_s_cursor)
{
    ready();
#ifndef NSP_RSEQ_LOCKS
    fprintf(stderr, "a_late_second_free_takes_no_live_span_s_cursor: skipped: no remote-free "
                    "lists in this build (no rseq, or ThreadSanitizer: free.c)\n");
#else
    /* a live small span that does not start its arena: a descriptor lies before it */
    void *objs[NSP_NUM_CLASSES] = {0};
    struct nsp_span *b = NULL;
    for (unsigned k = 1; k < NSP_NUM_CLASSES && !b; k++) {
        objs[k] = malloc(nsp__classes[k].size);
        ck_assert_ptr_nonnull(objs[k]);
        struct nsp_span *s = nsp__span_of(objs[k]);
        if (s && s->start_page >= 1)
            b = s;
    }
    ck_assert_ptr_nonnull(b);
    unsigned k32 = nsp__size_to_class(32);
    struct nsp_span *old = b - 1, saved;
    memcpy(&saved, old, sizeof saved);
    /* the stale descriptor as the search reads it: a span of 32 B objects over two pages or more
     * (it has a list, nsp__span_has_xfree) whose first page is the one before b's; its bitmaps
     * any words (here zeros: nsp__slot_live reads them after the search) */
    static uint64_t bits[64];
    old->npages = 2;
    old->base = b->base - NSP_PAGE_SIZE;
    old->sizeclass = (uint8_t)k32;
    old->elemsize = nsp__classes[k32].size;
    old->nelems = (uint32_t)(2 * NSP_PAGE_SIZE / old->elemsize);
    old->divmul = nsp__classes[k32].divmul;
    old->alloc_bits = bits;
    old->freed_bits = (_Atomic uint64_t *)bits + 32;
    ck_assert_ptr_eq(nsp__span_xfree(old), (_Atomic uintptr_t *)&b->alloc_cache);
    static uint64_t obj[4];
    obj[0] = nsp__magazine_tag(obj, NSP_MAG_XFREE);
    uint64_t cursor = b->alloc_cache, corrupt = atomic_load(&nsp__errors[NSP_ERR_FREE_LIST]);
    int on_error = nsp__on_error;
    nsp__on_error = NSP_ON_ERROR_WARN; /* a report must not abort before the checks */
    int live = nsp__slot_live(old, 0, obj);
    nsp__on_error = on_error;
    uint64_t now = b->alloc_cache;
    b->alloc_cache = cursor;
    memcpy(old, &saved, sizeof saved);
    ck_assert_msg(now == cursor,
                  "a second free's search on a released span's descriptor rewrote live span b's "
                  "cursor word: %#llx -> %#llx", (unsigned long long)cursor,
                  (unsigned long long)now);
    ck_assert_msg(atomic_load(&nsp__errors[NSP_ERR_FREE_LIST]) == corrupt,
                  "the search reported a corrupt list it never had");
    ck_assert_int_eq(live, 0);
    for (unsigned k = 1; k < NSP_NUM_CLASSES; k++)
        free(objs[k]);
    char why[256];
    ck_assert_msg(nsp_heap_check(why, sizeof why) == 0, "heap check: %s", why);
#endif
}
END_TEST

/* A small span's two bitmaps lie side by side at its first page's place (types.h), the freed one
 * in the next 128-byte pair of lines past the alloc words (span.h, nsp__span_freed_offset), so
 * that a span whose pair fits in 256 bytes (up to 16 words a bitmap: every class from 256 B)
 * touches one 4 KiB page of bitmaps, and the others as few as their bytes take, not a page of
 * each (with two arrays, a 256 KiB span cost 12 KiB of resident metadata: its descriptor's page
 * and a page of each bitmap; Larson at 2 threads holds ~68 such spans); and so that the owner's
 * alloc words and the remote freers' ORs never share a line or a prefetched pair. Not in the span's
 * interior descriptors: a_late_remote_free_writes_no_live_span_s_bitmaps says why. */
START_TEST(span_bitmaps_share_a_page)
{
    ready();
    void *objs[NSP_NUM_CLASSES] = {0};
    for (unsigned k = 1; k < NSP_NUM_CLASSES; k++) {
        objs[k] = malloc(nsp__classes[k].size);
        ck_assert_ptr_nonnull(objs[k]);
        struct nsp_span *s = nsp__span_of(objs[k]);
        ck_assert_ptr_nonnull(s);
        ck_assert_uint_eq(s->sizeclass, k);
        uintptr_t a = (uintptr_t)s->alloc_bits, f = (uintptr_t)s->freed_bits;
        uint32_t nw = nsp__span_nwords(s);
        ck_assert_ptr_eq(s->alloc_bits, nsp__span_bitmaps_at(s->arena, s->start_page));
        ck_assert_uint_eq(a & 255, 0);
        /* right past the alloc words, in a pair of lines of its own */
        ck_assert_msg(f == a + (uintptr_t)((nw + 15) & ~15u) * 8,
                      "class %u (%u B, %u words a bitmap): alloc bits at %p, freed bits at %p, "
                      "not in the next pair of lines", k, nsp__classes[k].size, nw, (void *)a,
                      (void *)f);
        ck_assert_uint_gt(f >> 7, (a + (uintptr_t)nw * 8 - 1) >> 7);
        /* inside the span's bitmap area (32 words a page) */
        ck_assert_uint_le(f + (uintptr_t)nw * 8, a + s->npages * 2 * NSP_BITMAP_WORDS_PER_PAGE * 8);
        /* a pair of up to 256 bytes in one page of metadata */
        if (nw <= 16)
            ck_assert_msg((a >> 12) == ((f + (uintptr_t)nw * 8 - 1) >> 12),
                          "class %u (%u B, %u words a bitmap): alloc bits at %p, freed bits at %p: "
                          "two pages of metadata", k, nsp__classes[k].size, nw, (void *)a,
                          (void *)f);
    }
    for (unsigned k = 1; k < NSP_NUM_CLASSES; k++)
        free(objs[k]);
}
END_TEST

/* A reader that takes no cache (the pacer's nsp__cache_read) may hold a span its cache has let
 * go meanwhile and read the descriptor once the pages are another span's: the slot then describes
 * another span or nothing (a dead one, its words stale: pageheap.h), and any pointer read from it
 * may lead anywhere. Here the reader's stale span is the descriptor of live span b's third page,
 * an interior one that describes nothing, written as such a slot may read: CACHED by cache 0,
 * dirty, nelems 1, freed_bits ~0. The reading must not follow that pointer (it faulted when the
 * reading took it: 4045e4c). */
START_TEST(cache_read_of_a_reused_descriptor)
{
    ready();
    void *p = malloc(32);
    struct nsp_span *b = nsp__span_of(p);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_ge(b->npages, 3);
    struct nsp_span *stale = b + 2, saved;
    memcpy(&saved, stale, sizeof saved);
    atomic_store(&stale->state, NSP_SPAN_CACHED);
    stale->cache = 0;
    stale->nelems = 1;
    stale->freed_bits = (_Atomic uint64_t *)~(uintptr_t)0;
    atomic_store(&stale->dirty, 1);
    /* the reader's view: a cache (index 0, no bins) whose class slot still names that span */
    static struct nsp_cache c;
    memset(&c, 0, sizeof c);
    for (unsigned k = 0; k < NSP_NUM_CLASSES; k++)
        c.spans[k] = &nsp__empty_span;
    c.spans[b->sizeclass] = stale;
    c.held_bytes = 1;
    struct nsp_cache_reading r = {0};
    nsp__cache_read(&c, &r);
    memcpy(stale, &saved, sizeof saved);
    free(p);
    char why[256];
    ck_assert_msg(nsp_heap_check(why, sizeof why) == 0, "heap check: %s", why);
}
END_TEST

/* The stats' walk of the caches' spans (stats.c, cached_spans) takes no cache either: the owner
 * may let a span go while it is read (the slot then names another span or none), and from then
 * its central or next owner counts it. The walk reads the slot again once it has read the span
 * and drops it if it is gone, as nsp__cache_read does; without that the span counts twice (or its
 * descriptor's words, another span's by then, count). The window, replayed: the slot names a copy
 * of the cache's span in a page the test made unreadable; the walk's first read of it faults, and
 * the handler, playing the owner, empties the slot and lets the read go on. */
static char *walked_page;
static size_t walked_len;
static struct nsp_span **walked_slot;
static _Atomic int walked_faults;
static _Atomic pid_t walker;

static void on_walked_read(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    char *a = si->si_addr;
    if (a < walked_page || a >= walked_page + walked_len) {
        signal(sig, SIG_DFL); /* not the test's: the default action, at the next fault */
        return;
    }
    if ((pid_t)syscall(SYS_gettid) != atomic_load(&walker)) {
        /* another thread (the pacer's) read the slot meanwhile: it waits for the walk's fault */
        for (int ms = 0; !atomic_load(&walked_faults) && ms < 30000; ms++)
            usleep(1000);
        return;
    }
    atomic_fetch_add(&walked_faults, 1);
    __atomic_store_n(walked_slot, &nsp__empty_span, __ATOMIC_RELEASE);
    mprotect(walked_page, walked_len, PROT_READ | PROT_WRITE);
}

START_TEST(stats_drop_a_span_that_left_its_cache_while_read)
{
    ready();
    void *p = malloc(32);
    struct nsp_span *s = nsp__span_of(p);
    ck_assert_ptr_nonnull(s);
    if (atomic_load(&s->state) != NSP_SPAN_CACHED) {
        fprintf(stderr, "stats_drop_a_span_that_left_its_cache_while_read: skipped: the object's "
                        "span is not cached here (state %u)\n", (unsigned)atomic_load(&s->state));
        free(p);
        return;
    }
    unsigned k = s->sizeclass, n = s->node;
    struct nsp_cache *c = &nsp__caches[s->cache];
    ck_assert_ptr_eq(c->spans[k], s);
    ck_assert_uint_ne(c->held_bytes, 0);
    walked_len = (size_t)sysconf(_SC_PAGESIZE);
    walked_page =
        mmap(NULL, walked_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(walked_page, MAP_FAILED);
    struct nsp_span *copy = (struct nsp_span *)walked_page;
    memcpy(copy, s, sizeof *copy); /* CACHED by c, on node n, class k */
    walked_slot = &c->spans[k];
    atomic_store(&walked_faults, 0);
    atomic_store(&walker, (pid_t)syscall(SYS_gettid));
    struct sigaction sa = {.sa_sigaction = on_walked_read, .sa_flags = SA_SIGINFO}, old;
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(sigaction(SIGSEGV, &sa, &old), 0);

    /* nothing allocates until the slot is s again (a passing ck_assert may): results kept */
    nsp_class_stats_t held, gone, raced;
    int rc = nsp_stats_get_class_node(n, k, &held);
    c->spans[k] = &nsp__empty_span; /* the reading once the span has gone */
    rc |= nsp_stats_get_class_node(n, k, &gone);
    c->spans[k] = copy; /* the reading that began before it went */
    rc |= mprotect(walked_page, walked_len, PROT_NONE);
    rc |= nsp_stats_get_class_node(n, k, &raced);
    int faults = atomic_load(&walked_faults);
    c->spans[k] = s;
    rc |= sigaction(SIGSEGV, &old, NULL);
    munmap(walked_page, walked_len);
    free(p);

    ck_assert_int_eq(rc, 0);
    /* the reading counts a span the slot keeps (the case is not moot) */
    ck_assert_uint_eq(held.spans_cached, gone.spans_cached + 1);
    ck_assert_msg(faults == 1, "the walk read the span %d times, not once: the window was not "
                               "replayed", faults);
    ck_assert_msg(raced.spans_cached == gone.spans_cached &&
                      raced.objects_in_use == gone.objects_in_use,
                  "a span that left its cache while the stats read it was counted: %" PRIu64
                  " spans cached, %" PRIu64 " objects in use (%" PRIu64 " and %" PRIu64
                  " once it has gone)", raced.spans_cached, raced.objects_in_use,
                  gone.spans_cached, gone.objects_in_use);
}
END_TEST

/* A remote free's last steps come after its OR (nsp__span_freed_remote: the look at `dirty`, its
 * exchange when clean, the look at state, and for FULL nsp__central_wake's CAS). By then the
 * span may have been swept, found empty, given back and its pages cut again into another span
 * (span.h: the freer finds its stripe counter before the OR for that reason): a freer preempted
 * between its OR and those steps finds its old first descriptor anywhere in the new span's run.
 * They must then write nothing the new span holds: a 1 stored in one of its freed words is a
 * remote free nobody made (its sweep frees a live object, handed out twice), in an alloc word a
 * slot nobody allocated. Each interior descriptor of live span b plays that stale descriptor here,
 * as such a freer would reach it; b's bitmap words must not change. */
START_TEST(a_late_remote_free_writes_no_live_span_s_bitmaps)
{
    ready();
    void *p = malloc(32);
    struct nsp_span *b = nsp__span_of(p);
    ck_assert_ptr_nonnull(b);
    uint32_t nw = nsp__span_nwords(b), words = nsp__span_freed_offset(nw) + nw;
    uint32_t n = (uint32_t)b->npages;
    static uint64_t bits[4096];
    static struct nsp_span descs[1024];
    ck_assert_uint_le(words, 4096);
    ck_assert_uint_le(n, 1024);
    memcpy(bits, b->alloc_bits, words * sizeof bits[0]);
    memcpy(descs, b, n * sizeof descs[0]);
    unsigned woken = 0;
    for (uint32_t i = 1; i < n; i++) /* the late steps, on a descriptor the pages no longer use */
        woken += (unsigned)nsp__span_freed_remote(b + i);
    uint32_t changed = UINT32_MAX;
    for (uint32_t w = 0; w < words && changed == UINT32_MAX; w++)
        if (b->alloc_bits[w] != bits[w])
            changed = w;
    uint64_t now = changed == UINT32_MAX ? 0 : b->alloc_bits[changed];
    /* as it was (the interior descriptors' words included), whatever the check says */
    memcpy(b + 1, descs + 1, (n - 1) * sizeof descs[0]);
    memcpy(b->alloc_bits, bits, words * sizeof bits[0]);
    ck_assert_msg(changed == UINT32_MAX,
                  "a late remote free's steps on a descriptor of b's pages changed b's bitmap "
                  "word %u (%s word %u): %#llx -> %#llx", changed,
                  changed < nsp__span_freed_offset(nw) ? "alloc" : "freed",
                  changed < nsp__span_freed_offset(nw) ? changed
                                                       : changed - nsp__span_freed_offset(nw),
                  (unsigned long long)bits[changed], (unsigned long long)now);
    ck_assert_uint_eq(woken, 0);
    free(p);
    char why[256];
    ck_assert_msg(nsp_heap_check(why, sizeof why) == 0, "heap check: %s", why);
}
END_TEST

/* Large objects (6 MiB) into blocks[] until the arenas already mapped are full and a new one is
 * refused (the caller made the OS, or the table's reach, refuse it): their count, below max, with
 * errno ENOMEM. */
static int fill_until_refused(void **blocks, int max)
{
    int n = 0;
    while (n < max && (blocks[n] = malloc((size_t)6 << 20)))
        n++;
    ck_assert_int_lt(n, max);
    ck_assert_int_eq(errno, ENOMEM);
    return n;
}

START_TEST(os_refusal_is_enomem_and_recoverable)
{
    ready();
    /* a huge object always needs a fresh mapping */
    nsp__test_os_fail_next(1000);
    errno = 0;
    ck_assert_ptr_null(malloc((size_t)100 << 20));
    ck_assert_int_eq(errno, ENOMEM);
    void *blocks[64];
    int n = fill_until_refused(blocks, 64);
    nsp__test_os_fail_next(0);
    /* usable again, and no lock was left held: another thread allocates too */
    void *p = malloc((size_t)100 << 20);
    ck_assert_ptr_nonnull(p);
    memset(p, 1, 4096);
    free(p);
    for (int i = 0; i < n; i++)
        free(blocks[i]);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, malloc_in_thread, NULL), 0);
    void *r;
    pthread_join(t, &r);
    ck_assert_ptr_nonnull(r);
    free(r);
}
END_TEST

/* A mapping the arena table cannot cover (past 2^NSP_ADDR_BITS: an aarch64 kernel maps user pages
 * just below 2^48) is refused as an OS refusal is (pageheap.c, table_covers): its set_table would
 * write past the table, and no lookup would find its objects. This kernel never maps past the
 * table, so the test lowers the table's end below every mapping: a huge object, new arenas and a
 * huge object's growth are then refused (ENOMEM, the object kept), and all work again after. */
START_TEST(a_mapping_past_the_arena_tables_reach_is_refused)
{
    ready();
    char *h = malloc((size_t)100 << 20); /* a huge object, mapped within reach */
    ck_assert_ptr_nonnull(h);
    memset(h, 7, 4096);
    __atomic_store_n(&nsp__test_addr_end, (uintptr_t)4096, __ATOMIC_RELAXED);
    errno = 0;
    ck_assert_ptr_null(malloc((size_t)100 << 20));
    ck_assert_int_eq(errno, ENOMEM);
    errno = 0;
    ck_assert_ptr_null(realloc(h, (size_t)200 << 20)); /* grown in place or moved: past reach */
    ck_assert_int_eq(errno, ENOMEM);
    ck_assert_int_eq(h[4095], 7);
    void *blocks[64];
    int n = fill_until_refused(blocks, 64);
    __atomic_store_n(&nsp__test_addr_end, (uintptr_t)0, __ATOMIC_RELAXED);
    char *g = realloc(h, (size_t)200 << 20);
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(g[4095], 7);
    free(g);
    for (int i = 0; i < n; i++)
        free(blocks[i]);
    void *p = malloc((size_t)100 << 20);
    ck_assert_ptr_nonnull(p);
    free(p);
}
END_TEST

/* ---- process life -------------------------------------------------------------------------------- */

#define EXIT_THREADS 64
#define EXIT_OBJECTS 500
static void *leftovers[EXIT_THREADS][EXIT_OBJECTS];

static void *allocate_and_exit(void *arg)
{
    unsigned t = (unsigned)(uintptr_t)arg;
    for (unsigned i = 0; i < EXIT_OBJECTS; i++)
        leftovers[t][i] = malloc(16 + (i * 37) % 3000);
    for (unsigned i = 0; i < EXIT_OBJECTS; i += 2) { /* frees half, leaves half alive */
        free(leftovers[t][i]);
        leftovers[t][i] = NULL;
    }
    return NULL;
}

START_TEST(threads_exit_without_leaks)
{
    ready();
    nsp_trim();
    nsp_stats_t before, after;
    nsp_stats_get(&before);
    for (int round = 0; round < 4; round++) {
        pthread_t th[EXIT_THREADS];
        for (unsigned t = 0; t < EXIT_THREADS; t++)
            pthread_create(&th[t], NULL, allocate_and_exit, (void *)(uintptr_t)t);
        for (unsigned t = 0; t < EXIT_THREADS; t++)
            pthread_join(th[t], NULL);
        /* the threads are gone; what they left is freed from here (remote frees) */
        for (unsigned t = 0; t < EXIT_THREADS; t++)
            for (unsigned i = 0; i < EXIT_OBJECTS; i++)
                free(leftovers[t][i]);
    }
    nsp_trim();
    nsp_stats_get(&after);
    ck_assert_msg(after.objects_in_use <= before.objects_in_use + 8,
                  "objects in use grew from %lu to %lu", (unsigned long)before.objects_in_use,
                  (unsigned long)after.objects_in_use);
    uint64_t mapped_before = 0, mapped_after = 0;
    for (unsigned n = 0; n < after.nnodes; n++) {
        mapped_before += before.node[n].pages_mapped;
        mapped_after += after.node[n].pages_mapped;
    }
    ck_assert_uint_le(mapped_after, mapped_before + NSP_ARENA_PAGES * after.nnodes);
}
END_TEST

static _Atomic int churn_stop;

static void *churn(void *arg)
{
    (void)arg;
    void *keep[64] = {0};
    for (unsigned i = 0; !atomic_load(&churn_stop); i++) {
        free(keep[i % 64]);
        keep[i % 64] = malloc(8 + (i * 131) % 70000);
    }
    for (int i = 0; i < 64; i++)
        free(keep[i]);
    return NULL;
}

START_TEST(fork_while_threads_allocate)
{
    pthread_t th[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&th[i], NULL, churn, NULL);
    for (int round = 0; round < 20; round++) {
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            /* the child has one thread and every lock free: allocate and free at will */
            void *p[1000];
            for (int i = 0; i < 1000; i++)
                p[i] = malloc(8 + (i * 53) % 50000);
            for (int i = 0; i < 1000; i++)
                free(p[i]);
            _exit(p[0] && p[999] ? 0 : 1);
        }
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d failed", round);
    }
    atomic_store(&churn_stop, 1);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
}
END_TEST

START_TEST(mallinfo2_and_trim)
{
    void *p[100];
    /* what earlier cases left in use (CK_FORK=no runs them all in this process) */
    size_t before = mallinfo2().uordblks;
    for (int i = 0; i < 100; i++)
        p[i] = malloc(100000);
    struct mallinfo2 mi = mallinfo2();
    ck_assert_uint_ge(mi.uordblks, 100 * 100000);
    ck_assert_uint_ge(mi.arena, mi.uordblks);
    for (int i = 0; i < 100; i++)
        free(p[i]);
    ck_assert_int_eq(malloc_trim(0), 1); /* the freed pages go back to the OS */
    mi = mallinfo2();
    ck_assert_uint_lt(mi.uordblks, before + 100 * 100000);
}
END_TEST

/* ---- a huge realloc's mremap and the arena table (issue 10, failure 8) ------------------------- */

static void *landed;

static void map_in_the_gap(void)
{
    atomic_store(&nsp__test_huge_given_up, NULL);
    landed = malloc((size_t)40 << 20); /* a huge object: a 64 MiB mapping of its own */
}

/* A shrink in place gives the tail up; a mapping made at that moment may receive it. Its table
 * slots must survive the end of the resize (they were wiped when the resize cleared the old
 * range's slots after mremap, and the new object's free then aborted as "not allocated"). */
START_TEST(huge_shrink_spares_a_mapping_in_the_given_up_range)
{
    ready();
    int overlapped = 0;
    for (int attempt = 0; attempt < 16 && !overlapped; attempt++) {
        char *p = malloc((size_t)192 << 20);
        ck_assert_ptr_nonnull(p);
        atomic_store(&nsp__test_huge_given_up, map_in_the_gap);
        char *q = realloc(p, (size_t)40 << 20);
        atomic_store(&nsp__test_huge_given_up, NULL);
        ck_assert_ptr_eq(q, p); /* shrunk in place */
        ck_assert_ptr_nonnull(landed);
        char *l = landed;
        overlapped = l >= p + ((size_t)64 << 20) && l < p + ((size_t)192 << 20);
        if (overlapped) {
            ck_assert_msg(nsp__span_of(l) != NULL,
                          "the object mapped in the given-up range lost its arena-table slots");
            ck_assert_uint_ge(malloc_usable_size(l), (size_t)40 << 20);
        }
        free(l);
        free(q);
    }
    if (!overlapped)
        fprintf(stderr, "huge_shrink_spares_a_mapping_in_the_given_up_range: skipped: the kernel "
                        "never placed the new mapping in the given-up range\n");
}
END_TEST

/* ---- foreign takers of a cache (issue 10, failure 8) ------------------------------------------ */

static struct nsp_cache *fc;
static _Atomic int f_go, f_done, f_other, f_window;

static void *other_foreign_taker(void *arg)
{
    (void)arg;
    while (!atomic_load(&f_go))
        sched_yield();
    atomic_store(&f_other, nsp__cache_lock_foreign(fc));
    atomic_store(&f_done, 1);
    return NULL;
}

/* Runs between our CAS and our fence: an rseq taker that read 0 before the CAS commits 1 over
 * our 2, runs, releases; then a second foreign taker tries the cache. */
static void rseq_commits_in_the_window(struct nsp_cache *c)
{
    if (atomic_exchange(&f_window, 1))
        return; /* the second taker's own window: nothing happens in it */
    atomic_store(&c->lock, 1);
    atomic_store(&c->lock, 0);
    atomic_store(&f_go, 1);
    while (!atomic_load(&f_done))
        sched_yield();
}

/* Makes cache 0 an rseq cache of the cpu this thread runs on, as far as foreign takers go
 * (they fence that cpu); returns its own rseq cpu, for restore_cache0. */
static int32_t as_rseq_cache0(void)
{
    ready();
    fc = &nsp__caches[0];
    int32_t saved = fc->rseq_cpu;
    ck_assert_uint_eq(atomic_load(&fc->lock), 0);
    fc->rseq_cpu = sched_getcpu();
    return saved;
}

static void restore_cache0(int32_t saved)
{
    fc->rseq_cpu = saved;
}

START_TEST(foreign_takers_are_serialised)
{
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, other_foreign_taker, NULL), 0);
    int32_t saved = as_rseq_cache0();
    atomic_store(&nsp__test_foreign_window, rseq_commits_in_the_window);
    int mine = nsp__cache_lock_foreign(fc);
    atomic_store(&nsp__test_foreign_window, NULL);
    pthread_join(t, NULL);
    int other = atomic_load(&f_other);
    restore_cache0(saved);
    ck_assert_msg(!(mine && other), "two foreign takers both believe they own cache 0");
    ck_assert_uint_eq(atomic_load(&fc->lock), mine || other ? 2 : 0);
    if (mine || other)
        nsp__cache_unlock(fc);
}
END_TEST

START_TEST(foreign_take_fails_when_the_fence_fails)
{
    int32_t saved = as_rseq_cache0();
    /* membarrier refused and no fallback: a sequence that read 0 may still commit, so the take
     * fails and gives the word back */
    atomic_store(&nsp__test_fence_fail, 2);
    int got = nsp__cache_lock_foreign(fc);
    uint32_t word = atomic_load(&fc->lock);
    /* membarrier refused: running on that cpu fences it instead */
    atomic_store(&nsp__test_fence_fail, 1);
    int fallback = nsp__cache_lock_foreign(fc);
    uint32_t word2 = atomic_load(&fc->lock);
    if (fallback)
        nsp__cache_unlock(fc);
    restore_cache0(saved);
    ck_assert_int_eq(got, 0);
    ck_assert_uint_eq(word, 0);
    ck_assert_int_eq(fallback, 1);
    ck_assert_uint_eq(word2, 2);
}
END_TEST

/* ---- the validators (host/check.c) ------------------------------------------------------------ */

/* nsp_heap_check fails, naming `what`, while one field is off by one; then passes again. */
#define EXPECT_CAUGHT(field, what)                                                                \
    do {                                                                                          \
        char why_[512];                                                                           \
        (field)++;                                                                                \
        int rc_ = nsp_heap_check(why_, sizeof why_);                                              \
        (field)--;                                                                                \
        ck_assert_msg(rc_ == -1 && strstr(why_, what), "%s off by one: rc %d, \"%s\"", #field,     \
                      rc_, why_);                                                                 \
    } while (0)

START_TEST(validators_pass_a_live_heap_and_name_a_broken_invariant)
{
    ready();
    enum { N = 3000 };
    static void *p[N];
    for (unsigned i = 0; i < N; i++)
        p[i] = malloc(i % 3 == 0 ? 48 : i % 3 == 1 ? 5000 : 100000 + i);
    for (unsigned i = 0; i < N; i += 2) /* holes everywhere: partial spans, free runs */
        free(p[i]);
    nsp_pacer_cycle(); /* caches released: spans in the centrals' lists */
    void *q = malloc(64); /* and a cached one */
    char why[512];
    ck_assert_msg(nsp_heap_check(why, sizeof why) == 0, "a live heap fails: %s", why);

    /* a span: its count against its bitmap, its page map */
    struct nsp_span *s = nsp__span_of(q);
    ck_assert_uint_eq(atomic_load(&s->state), NSP_SPAN_CACHED);
    EXPECT_CAUGHT(s->alloc_count, "alloc_count");
    struct nsp_span *large = nsp__span_of(p[5]);
    ck_assert_uint_eq(atomic_load(&large->state), NSP_SPAN_LARGE);
    struct nsp_span **pm = &large->arena->pagemap[large->start_page + 1];
    *pm = NULL;
    ck_assert_int_eq(nsp_heap_check(why, sizeof why), -1);
    ck_assert_msg(strstr(why, "maps to"), "a page map hole: \"%s\"", why);
    *pm = large;
    /* the cache that holds it */
    EXPECT_CAUGHT(nsp__caches[s->cache].held_bytes, "held_bytes");
    /* a central's lists */
    struct nsp_span *w = nsp__span_of(p[1]); /* 5000 B: released to its central by the cycle */
    struct nsp_central *c = nsp__central(w->node, w->sizeclass);
    EXPECT_CAUGHT(c->npartial, "npartial");
    EXPECT_CAUGHT(c->partial_tail, "its tail");
    /* a page heap's free runs */
    EXPECT_CAUGHT(nsp__pageheaps[s->node].pages_free, "pages_free");
    ck_assert_msg(nsp_heap_check(why, sizeof why) == 0, "restored heap fails: %s", why);

    /* TAKEN (fresh from the page heap, not set up yet) and SWEEPING (a central's set-up span)
     * mean different things: the first is only placed, the second must have a class */
    struct nsp_span *t = nsp__pageheap_alloc(0, 2, 1);
    ck_assert_uint_eq(atomic_load(&t->state), NSP_SPAN_TAKEN);
    ck_assert_msg(nsp_heap_check(why, sizeof why) == 0, "a TAKEN span fails: %s", why);
    atomic_store(&t->state, NSP_SPAN_SWEEPING);
    ck_assert_int_eq(nsp_heap_check(why, sizeof why), -1);
    ck_assert_msg(strstr(why, "SWEEPING") && strstr(why, "no small class"), "\"%s\"", why);
    atomic_store(&t->state, NSP_SPAN_LARGE);
    nsp__pageheap_free(t);
    free(q);
    for (unsigned i = 1; i < N; i += 2)
        free(p[i]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("host units");
    TCase *tc = tcase_create("layers");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, classes_bound_waste);
    tcase_add_test(tc, class_lookup_is_tightest);
    tcase_add_test(tc, reciprocal_index_is_exact);
    tcase_add_test(tc, push_table_matches_classes);
    tcase_add_test(tc, page_runs_coalesce_and_are_reused);
    tcase_add_test(tc, page_runs_aligned);
    tcase_add_test(tc, page_map_carries_the_small_class);
    tcase_add_test(tc, short_arena_when_a_full_one_is_refused);
    tcase_add_test(tc, span_cursor_and_local_free);
    tcase_add_test(tc, span_remote_free_and_sweep);
    tcase_add_test(tc, validators_pass_a_live_heap_and_name_a_broken_invariant);
    suite_add_tcase(s, tc);
    tc = tcase_create("api");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, sizes_that_overflow);
    tcase_add_test(tc, alignments);
    tcase_add_test(tc, realloc_keeps_contents);
    tcase_add_test(tc, calloc_zeroes_reused_memory);
    tcase_add_test(tc, free_keeps_errno_and_zero_size);
    tcase_add_test(tc, malloc_node_places);
    tcase_add_test(tc, spill_to_nearest_node);
    tcase_add_test(tc, os_refusal_is_enomem_and_recoverable);
    tcase_add_test(tc, a_mapping_past_the_arena_tables_reach_is_refused);
    tcase_add_test(tc, real_placement);
    tcase_add_test(tc, bootstrap_memory_is_recognised);
    tcase_add_test(tc, bootstrap_pages_go_back);
    tcase_add_test(tc, metadata_never_huge);
    tcase_add_test(tc, span_bitmaps_share_a_page);
    tcase_add_test(tc, cache_read_of_a_reused_descriptor);
    tcase_add_test(tc, stats_drop_a_span_that_left_its_cache_while_read);
    tcase_add_test(tc, a_late_remote_free_writes_no_live_span_s_bitmaps);
    tcase_add_test(tc, a_late_second_free_takes_no_live_span_s_cursor);
    tcase_add_test(tc, mallinfo2_and_trim);
    tcase_add_test(tc, huge_shrink_spares_a_mapping_in_the_given_up_range);
    suite_add_tcase(s, tc);
    tc = tcase_create("process");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, threads_exit_without_leaks);
    tcase_add_test(tc, fork_while_threads_allocate);
    tcase_add_test(tc, fork_while_a_bootstrap_page_goes_back);
    tcase_add_test(tc, foreign_takers_are_serialised);
    tcase_add_test(tc, foreign_take_fails_when_the_fence_fails);
    suite_add_tcase(s, tc);
    return nsp_run_suite(s);
}
