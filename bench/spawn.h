/*
 * bench/spawn.h — runs one benchmark process and collects what it prints: the drivers run every
 * measurement in a fresh process, so that each allocator (or each accounting mode) starts clean.
 */
#ifndef NSP_BENCH_SPAWN_H
#define NSP_BENCH_SPAWN_H

#include <stddef.h>

/* Runs exe with argv (NULL-terminated), in the environment changed by env: each entry
 * "NAME=value" sets, "NAME" unsets (NULL-terminated). Its standard output goes into out
 * (NUL-terminated, cut at outlen - 1). Returns 0 if it exited with status 0, -1 otherwise. */
int nsp_bench_spawn(const char *exe, char *const argv[], const char *const env[], char *out,
                    size_t outlen);

#endif
