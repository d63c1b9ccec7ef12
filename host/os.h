/*
 * host/os.h — the only place the host allocator asks the OS for memory.
 *
 * Owns: mapping and unmapping, aligned reservations, handing pages back (madvise), and the test
 * hook that makes the next mappings fail, so that tests can show an OS refusal ends as NULL and
 * ENOMEM with the allocator still usable.
 */
#ifndef NSP_HOST_OS_H
#define NSP_HOST_OS_H

#include <stddef.h>

/* Maps len bytes (a multiple of the OS page) aligned to align (a power of two, >= OS page),
 * zero-filled, lazily backed. NULL if the OS refuses (or the test hook says so). */
void *nsp__os_map(size_t len, size_t align);
void nsp__os_unmap(void *p, size_t len);
/* Hands pages back to the OS; their contents become zero. Returns 0 or -1. */
int nsp__os_release(void *p, size_t len);

/* Test hook: the next n calls of nsp__os_map fail. */
void nsp__test_os_fail_next(int n);

#endif /* NSP_HOST_OS_H */
