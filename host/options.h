/*
 * host/options.h — the one table of numaspan's options (internal view).
 *
 * Every NSP_* environment variable the libraries read is a row of the table in options.c: its
 * name, default and meaning. Host code reads an option only through nsp__option(), the device
 * layer (libnumaspan_cl: NSP_CL_DEVICE) through the public nsp_option_find, never through getenv,
 * so that `numaspan config` lists exactly what they read. The NSP_ variables of the project's own
 * tools, benchmarks and tests are listed beside the table; any other one set is named at start as
 * not an option (nsp__options_check_names).
 */
#ifndef NSP_HOST_OPTIONS_H
#define NSP_HOST_OPTIONS_H

#include <stddef.h>
#include <stdint.h>

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
    NSP_OPT_PACE_RESERVE,
    NSP_OPT_DEBUG,
    NSP_OPT_SMALL_SPAN,
    NSP_OPT_CL_DEVICE,
    NSP_OPT__COUNT
} nsp_option_id_t;

/* The option's value: the environment's if set and non-empty, else its default. Never NULL. */
const char *nsp__option(nsp_option_id_t id);

/* Whether text is the keyword word in any case (ASCII only: a locale's case rules must not
 * change what an option means). Every keyword of every option is matched so (off, auto,
 * stderr, the choices); file paths and descriptions never are. */
int nsp__keyword_is(const char *text, const char *word);

/* Parses a byte count with an optional K, M, G or T suffix (powers of 1024), any case (4M,
 * 4m, 4MiB, 4MIB). Returns 0, or -1 if the text is not such a size. */
int nsp__parse_size(const char *text, size_t *out);

/* Stops the process (exit status 2) with "numaspan: NAME="value": why". */
_Noreturn void nsp__option_reject(nsp_option_id_t id, const char *why);

/* Typed readers: each returns the option's value parsed, or rejects it (nsp__option_reject).
 * A byte count (K, M, G, T suffixes), at most INT64_MAX. */
size_t nsp__option_size(nsp_option_id_t id);
/* One of n keywords, in any case (nsp__keyword_is): returns its index. */
unsigned nsp__option_choice(nsp_option_id_t id, const char *const *choices, unsigned n);
/* A decimal integer in [lo, hi]; want says what is expected, for the message. */
int64_t nsp__option_int(nsp_option_id_t id, int64_t lo, int64_t hi, const char *want);
/* A plain decimal number (no nan, inf, hex or blanks) in [lo, hi]. */
double nsp__option_number(nsp_option_id_t id, double lo, double hi, const char *want);

/* Called from the constructor, once libc has set environ and before anything else: names on
 * stderr each NSP_ variable set that is neither an option nor one of the project's own (its tools,
 * benchmarks, tests), with the option it is closest to, and goes on. No allocation. */
void nsp__options_check_names(void);

/* Called from the constructor, once libc has set environ: if options had to be read before it
 * and /proc/self/environ could not stand in, says which NSP_ variables went unseen. */
void nsp__options_check_late(void);

#endif /* NSP_HOST_OPTIONS_H */
