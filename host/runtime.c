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
 * allocator under a spin flag: it serves only while initialisation runs, and it allocates nothing. */
#define BOOT_FIRST ((size_t)1 << 20)
#define BOOT_CHUNKS 8 /* 1 + 2 + ... + 128 MiB: far more than any initialisation takes */
#define BOOT_HEADER 16

struct boot_chunk {
    char *_Atomic base;
    size_t size;
};
static struct boot_chunk boot_chunks[BOOT_CHUNKS];
static _Atomic unsigned boot_nchunks; /* published after the chunk's base and size */
static size_t boot_cursor;            /* in the last chunk; under boot_lock */
static _Atomic size_t boot_used;
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
    return *(const size_t *)((const char *)p - sizeof(size_t));
}

size_t nsp__boot_bytes(void)
{
    return atomic_load_explicit(&boot_used, memory_order_relaxed);
}

/* Offset in a chunk of `size` bytes, from cursor, of n bytes aligned to align (with the header
 * before them), or SIZE_MAX if they do not fit. */
static size_t boot_fit(size_t cursor, size_t size, size_t n, size_t align)
{
    size_t start = (cursor + BOOT_HEADER + align - 1) & ~(align - 1);
    return start <= size && n <= size - start ? start : SIZE_MAX;
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
    size_t start = k ? boot_fit(boot_cursor, boot_chunks[k - 1].size, n, align) : SIZE_MAX;
    if (start == SIZE_MAX) { /* a new chunk, twice the last, or as large as this request needs */
        size_t size = k ? boot_chunks[k - 1].size * 2 : BOOT_FIRST;
        while (boot_fit(0, size, n, align) == SIZE_MAX)
            size *= 2;
        char *b = k < BOOT_CHUNKS ? nsp__os_map_user(size, 4096) : NULL;
        if (!b) {
            atomic_fetch_add(&nsp__boot_refusals, 1);
            atomic_flag_clear_explicit(&boot_lock, memory_order_release);
            errno = ENOMEM;
            return NULL;
        }
        atomic_store_explicit(&boot_chunks[k].base, b, memory_order_relaxed);
        boot_chunks[k].size = size;
        atomic_store_explicit(&boot_nchunks, ++k, memory_order_release);
        start = boot_fit(0, size, n, align);
    }
    char *b = atomic_load_explicit(&boot_chunks[k - 1].base, memory_order_relaxed);
    boot_cursor = start + n;
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
    char msg[256];
    int n = snprintf(msg, sizeof msg, "numaspan: %s(%p): %s%s\n", fn, addr, what[kind],
                     nsp__on_error == NSP_ON_ERROR_ABORT
                         ? "; aborting (NSP_ON_ERROR=warn counts and continues)"
                         : "");
    if (n > 0)
        (void)!write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
    if (nsp__on_error == NSP_ON_ERROR_ABORT)
        abort();
}
