/*
 * host/options.h — the one table of numaspan's options (internal view).
 *
 * Every NSP_* environment variable is a row of the table in options.c: its name, default and
 * meaning. Code reads an option only through nsp__option(), never through getenv, so that
 * `numaspan config` lists exactly what the library reads.
 */
#ifndef NSP_HOST_OPTIONS_H
#define NSP_HOST_OPTIONS_H

typedef enum nsp_option_id {
    NSP_OPT_TOPOLOGY = 0,
    NSP_OPT_CACHE_GROUPING,
    NSP_OPT__COUNT
} nsp_option_id_t;

/* The option's value: the environment's if set and non-empty, else its default. Never NULL. */
const char *nsp__option(nsp_option_id_t id);

#endif /* NSP_HOST_OPTIONS_H */
