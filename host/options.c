/*
 * host/options.c — the options table: every NSP_* environment variable, its default and meaning.
 *
 * Owns: the table and its public readers (nsp_option_*, nsp_options_print). Values are read from
 * the environment at each call (getenv allocates nothing); layers that need a parsed value on a
 * hot path parse it once at their initialisation.
 * Invariant: the table has exactly NSP_OPT__COUNT rows, in enum order (checked at compile time).
 */
#include "options.h"

#include <stdlib.h>
#include <string.h>

#include "numaspan.h"
#include "topology/topology.h"

struct option_row {
    const char *name;
    const char *def;
    const char *help;
};

static const struct option_row table[] = {
    [NSP_OPT_TOPOLOGY] = {"NSP_TOPOLOGY", "real",
                          "the topology the allocator places by: real (this machine), "
                          "synthetic:<hwloc string> or xml:<path>"},
    [NSP_OPT_CACHE_GROUPING] = {"NSP_CACHE_GROUPING", "pu",
                                "what one core cache stands for: pu (hardware thread), core, "
                                "l2 or l3"},
};

_Static_assert(sizeof table / sizeof table[0] == NSP_OPT__COUNT,
               "one row per option, in enum order");

static const char *value_of(const struct option_row *row, int *from_env)
{
    const char *v = getenv(row->name);
    int set = v && *v;
    if (from_env)
        *from_env = set;
    return set ? v : row->def;
}

const char *nsp__option(nsp_option_id_t id)
{
    return value_of(&table[id], NULL);
}

unsigned nsp_option_count(void)
{
    return NSP_OPT__COUNT;
}

int nsp_option_get(unsigned i, nsp_option_info_t *out)
{
    if (i >= NSP_OPT__COUNT)
        return -1;
    out->name = table[i].name;
    out->def = table[i].def;
    out->help = table[i].help;
    out->value = value_of(&table[i], &out->from_env);
    return 0;
}

int nsp_option_find(const char *name, nsp_option_info_t *out)
{
    for (unsigned i = 0; name && i < NSP_OPT__COUNT; i++)
        if (strcmp(table[i].name, name) == 0)
            return nsp_option_get(i, out);
    return -1;
}

void nsp_options_print(FILE *out, int json)
{
    nsp_option_info_t o;
    if (json)
        fprintf(out, "[\n");
    for (unsigned i = 0; i < NSP_OPT__COUNT; i++) {
        nsp_option_get(i, &o);
        if (json) {
            fprintf(out, "  {\"name\": ");
            nsp__json_str(out, o.name);
            fprintf(out, ", \"default\": ");
            nsp__json_str(out, o.def);
            fprintf(out, ", \"value\": ");
            nsp__json_str(out, o.value);
            fprintf(out, ", \"from_env\": %s, \"help\": ", o.from_env ? "true" : "false");
            nsp__json_str(out, o.help);
            fprintf(out, "}%s\n", i + 1 < NSP_OPT__COUNT ? "," : "");
        } else {
            fprintf(out, "%-22s %s%s\n    default: %s\n    %s\n", o.name, o.value,
                    o.from_env ? "  (from the environment)" : "  (default)", o.def, o.help);
        }
    }
    if (json)
        fprintf(out, "]\n");
}
