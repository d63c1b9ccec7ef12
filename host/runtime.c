/*
 * host/runtime.c — the state of runtime.h: the process-wide tables every layer reads, the
 * bootstrap region, and the report of bad frees.
 *
 * This file sits at the bottom of host/ (it uses only os.c): every layer may read the tables and
 * report an error without depending on init.c, which sits on top and only orchestrates. init.c
 * writes the tables once (nsp__init) and publishes nsp__ready (release) after the last of them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "os.h"
#include "runtime.h"

nsp_topo_t *nsp__topo;
unsigned nsp__nnodes;
unsigned nsp__ncaches;
_Atomic int nsp__ready;
int nsp__on_error;
size_t nsp__cache_max;
size_t nsp__cache_total_max;
_Atomic uint64_t nsp__errors[NSP_ERR__COUNT];

/* ---- bootstrap -------------------------------------------------------------------------------- */

/* The region is a few chunks mapped as needed, the first small (hwloc's load takes a few hundred
 * KiB), each next twice the last: a process pays for the bootstrap it uses, not for a 64 MiB
 * reservation (under RLIMIT_AS that reservation alone stopped small programs from starting).
 * Chunks are never unmapped, so boot_owns stays true of every pointer handed out. A bump
 * allocator under a spin flag: it serves only while initialisation runs, and it allocates nothing.
 *
 * Blocks are never reused, but their pages go back to the OS once nothing live is on them (issue
 * 11, peak RSS): hwloc's load takes about 290 KiB here and frees all but about 13 KiB of it before
 * initialisation ends, and those pages stayed resident for the life of the process (150 KiB of
 * the 1.5 MiB numaspan added to a small program's peak RSS). Each chunk ends with a count per OS page
 * of the live blocks that overlap it (the block's size header included): an allocation raises
 * the counts under the flag and a free (nsp__boot_free) lowers them. At the end of initialisation
 * nsp__boot_trim hands back every run of pages whose count is 0, in a few calls (not one per
 * page while hwloc loads: the OS is asked nothing more during initialisation than before);
 * from then on the free that brings a page's count to 0 hands the page back (madvise) under the
 * flag after reading the count again, so that no allocation can place a block on a page being
 * handed back. A page's free part (past the cursor, below the top) may be handed back and later
 * written by the next block: it then faults in as zeros. Big blocks (BOOT_BIG: hwloc's file
 * buffers, 8 to 64 KiB) are placed from the chunk's top down, apart from the small objects a
 * topology keeps, so that their pages go back whole: measured, the region's resident pages after
 * initialisation went from 152 KiB to 108 KiB with the counts alone, to 40 KiB with both.
 * The header's top bit marks a freed block, so that a second free of it changes no count; a
 * header that reads 0 is on a page already handed back, and its free is ignored the same way
 * (a double free of a bootstrap block after its page was reused is the program's bug, as any
 * double free is). */
#define BOOT_FIRST ((size_t)1 << 20)
#define BOOT_CHUNKS 8 /* 1 + 2 + ... + 128 MiB: far more than any initialisation takes */
#define BOOT_HEADER 16
#define BOOT_PAGE ((size_t)4096) /* what madvise hands back; the OS page of every Linux/x86-64 */
#define BOOT_FREED ((size_t)1 << 63) /* in a block's size header: freed */
#define BOOT_BIG ((size_t)2048) /* blocks from here on are placed from the chunk's top down */

struct boot_chunk {
    char *_Atomic base;
    size_t size;              /* bytes for blocks; the page counts follow them */
    size_t mapped;            /* bytes mapped: size and the counts' pages */
    _Atomic uint16_t *counts; /* per page of the blocks' bytes: live blocks on it */
};
static struct boot_chunk boot_chunks[BOOT_CHUNKS];
static _Atomic unsigned boot_nchunks; /* published after the chunk's base and size */
/* In the last chunk, under boot_lock: blocks below BOOT_BIG go up from boot_cursor, the others
 * down from boot_top; [boot_cursor, boot_top) is free. */
static size_t boot_cursor, boot_top;
static _Atomic size_t boot_used;
static _Atomic int boot_releasing; /* 0 until nsp__boot_trim: frees only count (see above) */
static atomic_flag boot_lock = ATOMIC_FLAG_INIT;
_Atomic unsigned long nsp__boot_refusals;

int nsp__boot_owns(const void *p)
{
    unsigned n = atomic_load_explicit(&boot_nchunks, memory_order_acquire);
    for (unsigned i = 0; i < n; i++) {
        const char *b = atomic_load_explicit(&boot_chunks[i].base, memory_order_relaxed);
        if ((const char *)p >= b && (const char *)p < b + boot_chunks[i].size)
            return 1;
    }
    return 0;
}

size_t nsp__boot_size(const void *p)
{
    return *(const size_t *)((const char *)p - sizeof(size_t)) & ~BOOT_FREED;
}

/* The chunk that holds p (boot_owns is true of p). */
static struct boot_chunk *boot_chunk_of(const void *p)
{
    unsigned n = atomic_load_explicit(&boot_nchunks, memory_order_acquire);
    for (unsigned i = 0; i < n; i++) {
        const char *b = atomic_load_explicit(&boot_chunks[i].base, memory_order_relaxed);
        if ((const char *)p >= b && (const char *)p < b + boot_chunks[i].size)
            return &boot_chunks[i];
    }
    return NULL;
}

/* The pages of chunk c that the block at p of n bytes (its header included) overlaps: [*lo, *hi). */
static void boot_pages(const struct boot_chunk *c, const char *p, size_t n, size_t *lo, size_t *hi)
{
    size_t from = (size_t)(p - sizeof(size_t) - c->base), to = (size_t)(p - c->base) + n;
    *lo = from / BOOT_PAGE;
    *hi = (to + BOOT_PAGE - 1) / BOOT_PAGE;
}

void nsp__boot_free(void *p)
{
    struct boot_chunk *c = boot_chunk_of(p);
    _Atomic size_t *hdr = (_Atomic size_t *)((char *)p - sizeof(size_t));
    size_t n = atomic_fetch_or_explicit(hdr, BOOT_FREED, memory_order_relaxed);
    if (!c || n == 0 || (n & BOOT_FREED))
        return; /* freed already (see above): nothing more to give back */
    size_t lo, hi;
    boot_pages(c, p, n, &lo, &hi);
    for (size_t i = lo; i < hi; i++) {
        /* seq_cst, with boot_releasing's: either this free sees it set, or the trim sees 0 */
        if (atomic_fetch_sub(&c->counts[i], 1) != 1 || !atomic_load(&boot_releasing))
            continue;
        while (atomic_flag_test_and_set_explicit(&boot_lock, memory_order_acquire))
            ;
        void (*window)(void) = atomic_load_explicit(&nsp__test_boot_release_window,
                                                    memory_order_relaxed);
        if (window)
            window();
        if (atomic_load_explicit(&c->counts[i], memory_order_relaxed) == 0)
            (void)nsp__os_release(c->base + i * BOOT_PAGE, BOOT_PAGE);
        atomic_flag_clear_explicit(&boot_lock, memory_order_release);
    }
}

void nsp__boot_trim(void)
{
    atomic_store(&boot_releasing, 1);
    while (atomic_flag_test_and_set_explicit(&boot_lock, memory_order_acquire))
        ;
    unsigned n = atomic_load_explicit(&boot_nchunks, memory_order_acquire);
    for (unsigned k = 0; k < n; k++) {
        struct boot_chunk *c = &boot_chunks[k];
        size_t pages = c->size / BOOT_PAGE;
        for (size_t i = 0; i < pages;) { /* each run of pages nothing live is on, at once */
            size_t j = i;
            while (j < pages && atomic_load(&c->counts[j]) == 0)
                j++;
            if (j > i)
                (void)nsp__os_release(c->base + i * BOOT_PAGE, (j - i) * BOOT_PAGE);
            i = j + 1;
        }
    }
    atomic_flag_clear_explicit(&boot_lock, memory_order_release);
}

void (*_Atomic nsp__test_boot_release_window)(void);

/* The flag is a leaf (its holders take nothing else, and hold it for a bump or one madvise), so
 * fork takes it after every other lock and lets it go first. */
void nsp__boot_fork_prepare(void)
{
    while (atomic_flag_test_and_set_explicit(&boot_lock, memory_order_acquire))
        ;
}

void nsp__boot_fork_release(void)
{
    atomic_flag_clear_explicit(&boot_lock, memory_order_release);
}

size_t nsp__boot_bytes(void)
{
    return atomic_load_explicit(&boot_used, memory_order_relaxed);
}

/* Where a block of n bytes aligned to align (with the header before it) goes in the free part
 * [cursor, top) of a chunk, or SIZE_MAX if it does not fit: small blocks at the bottom, big ones
 * (BOOT_BIG) at the top (see above). */
static size_t boot_fit(size_t cursor, size_t top, size_t n, size_t align)
{
    if (n < BOOT_BIG) {
        size_t start = (cursor + BOOT_HEADER + align - 1) & ~(align - 1);
        return start <= top && n <= top - start ? start : SIZE_MAX;
    }
    if (n > top)
        return SIZE_MAX;
    size_t start = (top - n) & ~(align - 1);
    return start >= cursor + BOOT_HEADER ? start : SIZE_MAX;
}

/* The bytes for blocks in a chunk of `mapped` bytes: what its page counts leave (they are touched
 * only as far as blocks reach). */
static size_t boot_room(size_t mapped)
{
    size_t counts = mapped / BOOT_PAGE * sizeof(uint16_t);
    return mapped - ((counts + BOOT_PAGE - 1) & ~(BOOT_PAGE - 1));
}

void *nsp__boot_alloc(size_t n, size_t align)
{
    if (align < BOOT_HEADER)
        align = BOOT_HEADER;
    if (n > ((size_t)1 << 40) || align > ((size_t)1 << 30)) {
        errno = ENOMEM;
        return NULL;
    }
    while (atomic_flag_test_and_set_explicit(&boot_lock, memory_order_acquire))
        ;
    unsigned k = atomic_load_explicit(&boot_nchunks, memory_order_relaxed);
    size_t start = k ? boot_fit(boot_cursor, boot_top, n, align) : SIZE_MAX;
    if (start == SIZE_MAX) { /* a new chunk, twice the last, or as large as this request needs */
        size_t size = k ? boot_chunks[k - 1].mapped * 2 : BOOT_FIRST;
        while (boot_fit(0, boot_room(size), n, align) == SIZE_MAX)
            size *= 2;
        char *b = k < BOOT_CHUNKS ? nsp__os_map_user(size, 4096) : NULL;
        if (!b) {
            atomic_fetch_add(&nsp__boot_refusals, 1);
            atomic_flag_clear_explicit(&boot_lock, memory_order_release);
            errno = ENOMEM;
            return NULL;
        }
        atomic_store_explicit(&boot_chunks[k].base, b, memory_order_relaxed);
        boot_chunks[k].size = boot_room(size);
        boot_chunks[k].mapped = size;
        boot_chunks[k].counts = (_Atomic uint16_t *)(b + boot_room(size));
        atomic_store_explicit(&boot_nchunks, ++k, memory_order_release);
        boot_cursor = 0;
        boot_top = boot_chunks[k - 1].size;
        start = boot_fit(boot_cursor, boot_top, n, align);
    }
    struct boot_chunk *c = &boot_chunks[k - 1];
    char *b = atomic_load_explicit(&c->base, memory_order_relaxed);
    size_t lo, hi;
    boot_pages(c, b + start, n, &lo, &hi);
    for (size_t i = lo; i < hi; i++) /* under the flag: no page of this block is handed back */
        atomic_fetch_add_explicit(&c->counts[i], 1, memory_order_relaxed);
    if (n < BOOT_BIG)
        boot_cursor = start + n;
    else
        boot_top = start - BOOT_HEADER; /* its header's slot, and 8 bytes spare */
    atomic_fetch_add_explicit(&boot_used, n, memory_order_relaxed);
    atomic_flag_clear_explicit(&boot_lock, memory_order_release);
    *(size_t *)(b + start - sizeof(size_t)) = n;
    return b + start;
}

/* ---- bad frees -------------------------------------------------------------------------------- */

void nsp__report_error(enum nsp_error_kind kind, const char *fn, const void *addr)
{
    static const char *const what[NSP_ERR__COUNT] = {
        [NSP_ERR_NOT_OWNED] = "pointer not allocated by numaspan, or already freed",
        [NSP_ERR_INTERIOR] = "pointer inside an object, not at its start",
        [NSP_ERR_DOUBLE_FREE] = "double free: the object is not allocated",
        [NSP_ERR_CANARY] = "heap overflow: the canary after the object was overwritten",
        [NSP_ERR_WRITE_AFTER_FREE] = "write after free: the slot was written while it was free",
        [NSP_ERR_FREE_LIST] = ("free list corrupt: the freed object's link was overwritten (a "
                               "write after free) or the object was freed twice"),
    };
    atomic_fetch_add(&nsp__errors[kind], 1);
    int saved = errno; /* free() keeps errno (POSIX.1-2024): a failed write to stderr must not show */
    char msg[256];
    int n = snprintf(msg, sizeof msg, "numaspan: %s(%p): %s%s\n", fn, addr, what[kind],
                     nsp__on_error == NSP_ON_ERROR_ABORT
                         ? "; aborting (NSP_ON_ERROR=warn counts and continues)"
                         : "");
    if (n > 0)
        (void)!write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
    if (nsp__on_error == NSP_ON_ERROR_ABORT)
        abort();
    errno = saved;
}
