/*
 * host/os.c — OS primitives (see os.h). mmap and munmap allocate nothing, so they are safe at
 * any point, bootstrap included.
 */
#include "os.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>

static _Atomic int fail_next;

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

void *nsp__os_map(size_t len, size_t align)
{
    if (injected_failure()) {
        errno = ENOMEM;
        return NULL;
    }
    /* Over-map by the alignment, then trim both ends: the kernel gives no aligned mmap. */
    size_t span = len + (align > 4096 ? align : 0);
    if (span < len) {
        errno = ENOMEM;
        return NULL;
    }
    char *raw = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    if (span == len)
        return raw;
    uintptr_t a = ((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1);
    size_t head = a - (uintptr_t)raw, tail = span - head - len;
    if (head)
        munmap(raw, head);
    if (tail)
        munmap((char *)a + len, tail);
    return (void *)a;
}

void nsp__os_unmap(void *p, size_t len)
{
    munmap(p, len);
}

int nsp__os_release(void *p, size_t len)
{
    return madvise(p, len, MADV_DONTNEED);
}
