/*
 * host/os.c — OS primitives (see os.h). mmap and munmap allocate nothing, so they are safe at
 * any point, bootstrap included. errno is left as the failing mmap set it (ENOMEM, or what the
 * kernel said); the entry points decide what the caller sees.
 */
#include "os.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000 /* Linux 4.17; older kernels take it as a plain hint */
#endif

static _Atomic int fail_next;
_Atomic long long nsp__os_meta_bytes;

void nsp__test_os_fail_next(int n)
{
    atomic_store(&fail_next, n);
}

static int injected_failure(void)
{
    int n = atomic_load_explicit(&fail_next, memory_order_relaxed);
    while (n > 0) {
        if (atomic_compare_exchange_weak(&fail_next, &n, n - 1))
            return 1;
    }
    return 0;
}

static void *map_raw(void *at, size_t len, int flags)
{
    int fixed = at ? MAP_FIXED_NOREPLACE : 0;
    void *p = mmap(at, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | flags | fixed,
                   -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    if (at && p != at) { /* a kernel that took the address as a hint put it elsewhere */
        munmap(p, len);
        return NULL;
    }
    return p;
}

/* Where the next aligned reservation probably fits: right below the last one, since the kernel
 * hands out mmap addresses top-down. Only a hint: a wrong guess costs one failed mmap. */
static _Atomic uintptr_t next_aligned;

static void *remember(void *p, size_t len, size_t align)
{
    uintptr_t a = (uintptr_t)p, room = (len + align - 1) & ~(align - 1);
    atomic_store_explicit(&next_aligned, a > room ? a - room : 0, memory_order_relaxed);
    return p;
}

static void *map_aligned(size_t len, size_t align, int flags)
{
    uintptr_t mask = align - 1, hint = atomic_load_explicit(&next_aligned, memory_order_relaxed);
    void *p;
    if (hint && !(hint & mask) && (p = map_raw((void *)hint, len, flags)))
        return remember(p, len, align);
    if (!(p = map_raw(NULL, len, flags)))
        return NULL;
    if (!((uintptr_t)p & mask))
        return remember(p, len, align);
    /* The aligned addresses around where the kernel put it: below is usually free (top-down). */
    uintptr_t down = (uintptr_t)p & ~mask, up = down + align;
    munmap(p, len);
    if (down && (p = map_raw((void *)down, len, flags)))
        return remember(p, len, align);
    if (up > down && (p = map_raw((void *)up, len, flags)))
        return remember(p, len, align);
    /* Last resort: over-map by the alignment, then trim both ends. */
    size_t span = len + align;
    if (span < len) {
        errno = ENOMEM;
        return NULL;
    }
    char *raw = map_raw(NULL, span, flags);
    if (!raw)
        return NULL;
    uintptr_t a = ((uintptr_t)raw + mask) & ~mask;
    size_t head = a - (uintptr_t)raw, tail = span - head - len;
    if (head)
        munmap(raw, head);
    if (tail)
        munmap((char *)a + len, tail);
    return remember((void *)a, len, align);
}

static void *map(size_t len, size_t align, int flags)
{
    if (injected_failure()) {
        errno = ENOMEM;
        return NULL;
    }
    return align > 4096 ? map_aligned(len, align, flags) : map_raw(NULL, len, flags);
}

/* Metadata is touched sparsely (an arena's descriptors and bitmaps as spans use them), so a
 * transparent huge page there backs 2 MiB for a few lines: with THP "always" (RHEL's default;
 * emulated here with MADV_HUGEPAGE) one arena's 3 MiB of metadata went from 20-300 KiB resident
 * to 2 MiB, and a small program's peak RSS from 2.9 to 4.9 MiB (issue 11). So metadata is never
 * huge; user pages keep the system's policy. Best effort: a kernel without THP says EINVAL. */
static void not_huge(void *p, size_t len)
{
    int saved = errno;
    (void)madvise(p, len, MADV_NOHUGEPAGE);
    errno = saved;
}

void *nsp__os_map(size_t len, size_t align)
{
    void *p = map(len, align, MAP_NORESERVE);
    if (p) {
        not_huge(p, len);
        atomic_fetch_add_explicit(&nsp__os_meta_bytes, (long long)len, memory_order_relaxed);
    }
    return p;
}

void nsp__os_unmap_meta(void *p, size_t len)
{
    atomic_fetch_sub_explicit(&nsp__os_meta_bytes, (long long)len, memory_order_relaxed);
    munmap(p, len);
}

void nsp__os_meta_became_user(size_t len)
{
    atomic_fetch_sub_explicit(&nsp__os_meta_bytes, (long long)len, memory_order_relaxed);
}

void *nsp__os_map_user(size_t len, size_t align)
{
    return map(len, align, 0);
}

void nsp__os_unmap(void *p, size_t len)
{
    munmap(p, len);
}

int nsp__os_release(void *p, size_t len)
{
    return madvise(p, len, MADV_DONTNEED);
}

uint64_t nsp__os_random(void)
{
    uint64_t k = 0;
    if (getrandom(&k, sizeof k, GRND_NONBLOCK) != sizeof k) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        k = ((uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^ (uint64_t)ts.tv_sec) ^ (uintptr_t)&k;
    }
    return k;
}

long nsp__os_read_small(const char *path, char *buf, unsigned long len)
{
    int saved = errno;
    long n = -ENOENT;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        n = -errno;
    } else {
        n = read(fd, buf, len - 1);
        n = n < 0 ? -errno : n;
        close(fd);
        buf[n > 0 ? n : 0] = 0;
    }
    errno = saved;
    return n;
}
