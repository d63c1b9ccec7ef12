/*
 * host/os.h — the only place the host allocator asks the OS for memory.
 *
 * Owns: mapping and unmapping, aligned reservations, handing pages back (madvise), the random
 * bits every key is drawn from, and the test hook that makes the next mappings fail, so that
 * tests can show an OS refusal ends as NULL and ENOMEM with the allocator still usable.
 *
 * Two kinds of mapping, because they answer to the system differently:
 *   metadata (nsp__os_map)       MAP_NORESERVE: page maps, descriptors and bitmaps sized for a
 *                                whole arena but touched only as spans use them;
 *   user pages (nsp__os_map_user) no MAP_NORESERVE, so that the system's overcommit policy judges
 *                                them: a request no machine could back (malloc of 64 TiB) is
 *                                refused as glibc's would be, instead of succeeding and faulting.
 * An aligned mapping never maps twice its size to find the alignment (under RLIMIT_AS that
 * transient doubling is what fails first): it tries where the last aligned mapping ended, then
 * the aligned addresses around where the kernel puts it, and only then over-maps and trims.
 */
#ifndef NSP_HOST_OS_H
#define NSP_HOST_OS_H

#include <stddef.h>
#include <stdint.h>

/* Maps len bytes (a multiple of the OS page) aligned to align (a power of two, >= OS page),
 * zero-filled, lazily backed, MAP_NORESERVE, never in transparent huge pages (os.c): for
 * metadata. NULL if the OS refuses (or the test hook says so). */
void *nsp__os_map(size_t len, size_t align);
/* The same for user pages: committed under the system's overcommit policy. */
void *nsp__os_map_user(size_t len, size_t align);
void nsp__os_unmap(void *p, size_t len);
/* Unmaps metadata that nsp__os_map mapped (and stops counting it). */
void nsp__os_unmap_meta(void *p, size_t len);
/* Bytes of metadata mapped now: every nsp__os_map less nsp__os_unmap_meta. What numaspan holds
 * beyond user pages (descriptors, bitmaps, page maps, caches, centrals with their transfer and
 * magazine structures, the pacer's tables); counted where it is mapped, so it is an upper bound
 * on what is resident (an arena's descriptors are mapped whole and touched as spans use them). */
extern _Atomic long long nsp__os_meta_bytes;
/* A metadata reservation (nsp__os_map) that now holds user pages (a huge object moved into it
 * with mremap): no longer counted as metadata. */
void nsp__os_meta_became_user(size_t len);
/* Hands pages back to the OS; their contents become zero. Returns 0 or -1. */
int nsp__os_release(void *p, size_t len);

/* 64 random bits for a key (the secure mode's, the transfer links', the magazine tags'):
 * getrandom, or where it fails (no entropy yet, a filter refusing it) the clock mixed with a stack
 * address, which still detects corruption but is no secret. */
uint64_t nsp__os_random(void);

/* Reads at most len - 1 bytes of a small file (a /proc entry) into buf and ends them with a NUL,
 * with plain system calls: no allocation (callers run inside malloc) and errno kept. Returns the
 * bytes read, or -errno when the file cannot be opened or read. */
long nsp__os_read_small(const char *path, char *buf, unsigned long len);

/* Test hook: the next n calls of nsp__os_map / nsp__os_map_user fail. */
void nsp__test_os_fail_next(int n);

#endif /* NSP_HOST_OS_H */
