/*
 * host/options.c — the options table: every NSP_* environment variable, its default and meaning.
 *
 * Owns: the table and its public readers (nsp_option_*, nsp_options_print). Values are read from
 * the environment at each call (getenv allocates nothing); layers that need a parsed value on a
 * hot path parse it once at their initialisation.
 * Invariant: the table has exactly NSP_OPT__COUNT rows, in enum order (checked at compile time).
 */
#include "options.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
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
    [NSP_OPT_ON_ERROR] = {"NSP_ON_ERROR", "abort",
                          "what a bad free (not allocated, interior pointer, double free) does "
                          "after its message on stderr: abort, or warn (count and continue)"},
    [NSP_OPT_STATS] = {"NSP_STATS", "0",
                       "print the allocator's stats at exit: 1 on stderr (even if the program "
                       "closed it), or a file path to append them to"},
    [NSP_OPT_CACHE_MAX] = {"NSP_CACHE_MAX", "16M",
                           "bytes of spans one core cache may hold (K, M, G suffixes)"},
    [NSP_OPT_CACHE_TOTAL_MAX] = {"NSP_CACHE_TOTAL_MAX", "1G",
                                 "bytes of spans all core caches together may hold; past it, "
                                 "allocations come from the centrals without caching spans"},
    [NSP_OPT_ACCOUNTING] = {"NSP_ACCOUNTING", "over",
                            "heapLive accounting: over (a cached span is charged whole, "
                            "reconciled at release), under (charged at release only), exact "
                            "(every object, an oracle)"},
    [NSP_OPT_DELTA_BATCH] = {"NSP_DELTA_BATCH", "64K",
                             "negative heapLive changes collect per (cache, node) up to this "
                             "many bytes before they are applied"},
    [NSP_OPT_PACER] = {"NSP_PACER", "sync",
                       "cycle mode: sync (the allocation that crosses the trigger runs the cycle) "
                       "or concurrent (the pacer thread runs it while the program allocates)"},
    [NSP_OPT_PACE_PERCENT] = {"NSP_PACE_PERCENT", "100",
                              "goal = live * (1 + percent/100), like GOGC"},
    [NSP_OPT_HEAP_MIN] = {"NSP_HEAP_MIN", "auto",
                          "the smallest goal; auto: 4 MiB * percent/100"},
    [NSP_OPT_MEMORY_LIMIT] = {"NSP_MEMORY_LIMIT", "0",
                              "bytes the heap's goal must stay under (minus what numaspan holds "
                              "outside the heap and a headroom of max(3%, 1 MiB)); 0: none"},
    [NSP_OPT_NODE_LIMITS] = {"NSP_NODE_LIMITS", "",
                             "pages mapped per node, e.g. 0=2G,1=8G: a node at its limit sends "
                             "its cores' refills to the nearest node with room"},
    [NSP_OPT_IDLE_RELEASE_MS] = {"NSP_IDLE_RELEASE_MS", "1000",
                                 "a cache unused this long gives its spans back; 0: never"},
    [NSP_OPT_TRACE] = {"NSP_TRACE", "",
                       "a CSV file to append every pacer event to: "
                       "time_ns,node,heap_live,trigger,goal,limit,event"},
    [NSP_OPT_SECURE] = {"NSP_SECURE", "0",
                        "1: hardened mode: canaries checked at free, freed memory poisoned and "
                        "checked at reuse, random slot order, guard pages after large objects"},
    [NSP_OPT_MEMORY_LIMIT_HARD] = {"NSP_MEMORY_LIMIT_HARD", "0",
                                   "1: NSP_MEMORY_LIMIT is also a hard limit on the memory "
                                   "numaspan maps for user pages; an allocation that would map "
                                   "past it fails with ENOMEM (after a trim)"},
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

int nsp__parse_size(const char *text, size_t *out)
{
    if (!text || *text < '0' || *text > '9')
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno)
        return -1;
    unsigned shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    case 't': case 'T': shift = 40; end++; break;
    default: break;
    }
    if (*end == 'i' && shift) /* "Mi", "GiB" */
        end++;
    if ((*end == 'B' || *end == 'b') && end[1] == 0)
        end++;
    if (*end || (shift && v > (SIZE_MAX >> shift)))
        return -1;
    *out = (size_t)v << shift;
    return 0;
}

size_t nsp__option_size(nsp_option_id_t id)
{
    size_t v;
    const char *text = nsp__option(id);
    if (nsp__parse_size(text, &v) < 0) {
        char msg[256];
        int n = snprintf(msg, sizeof msg,
                         "numaspan: %s=\"%s\": not a size in bytes (e.g. 65536, 4M, 1G)\n",
                         table[id].name, text);
        if (n > 0)
            (void)!write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
        _exit(2);
    }
    return v;
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
