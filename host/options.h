/*
 * host/options.h — the one table of numaspan's options (internal view).
 *
 * Every NSP_* environment variable is a row of the table in options.c: its name, default and
 * meaning. Code reads an option only through nsp__option(), never through getenv, so that
 * `numaspan config` lists exactly what the library reads.
 */
#ifndef NSP_HOST_OPTIONS_H
#define NSP_HOST_OPTIONS_H

#include <stddef.h>

typedef enum nsp_option_id {
    NSP_OPT_TOPOLOGY = 0,
    NSP_OPT_CACHE_GROUPING,
    NSP_OPT_ON_ERROR,
    NSP_OPT_STATS,
    NSP_OPT_CACHE_MAX,
    NSP_OPT_CACHE_TOTAL_MAX,
    NSP_OPT_ACCOUNTING,
    NSP_OPT_DELTA_BATCH,
    NSP_OPT_PACER,
    NSP_OPT_PACE_PERCENT,
    NSP_OPT_HEAP_MIN,
    NSP_OPT_MEMORY_LIMIT,
    NSP_OPT_NODE_LIMITS,
    NSP_OPT_IDLE_RELEASE_MS,
    NSP_OPT_TRACE,
    NSP_OPT_SECURE,
    NSP_OPT_MEMORY_LIMIT_HARD,
    NSP_OPT__COUNT
} nsp_option_id_t;

/* The option's value: the environment's if set and non-empty, else its default. Never NULL. */
const char *nsp__option(nsp_option_id_t id);

/* Parses a byte count with an optional K, M, G or T suffix (powers of 1024). Returns 0, or -1
 * if the text is not such a size. */
int nsp__parse_size(const char *text, size_t *out);

/* The option's value as a byte count; a malformed value stops the process with a message that
 * names the variable and its value (exit status 2). */
size_t nsp__option_size(nsp_option_id_t id);

#endif /* NSP_HOST_OPTIONS_H */
