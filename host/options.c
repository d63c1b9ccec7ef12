/*
 * host/options.c — the options table: every NSP_* environment variable, its default and meaning.
 *
 * Owns: the table, its public readers (nsp_option_*, nsp_options_print), the typed readers the
 * layers parse their options with (nsp__option_size, _choice, _int, _number), the early copy
 * of the environment, and the list of NSP_ variables that are not options (the project's own
 * tools' and tests'), beside the table: any other NSP_ variable set is named at start as not an
 * option, with the closest one (nsp__options_check_names). Values are read from the environment
 * at each call (getenv allocates nothing); layers that need a parsed value on a hot path parse
 * it once at their initialisation.
 * A value that is malformed, out of range or useless stops the process with a message naming
 * the variable, its value and what was expected (exit status 2): an experiment that silently ran
 * with a default instead of what it asked for would be wrong. Keywords (the choices, off, auto,
 * stderr, real, a size's suffix) are taken in any case, so that Exact, OFF and 4G mean what
 * exact, off and 4g do; paths and descriptions keep their case.
 *
 * The first malloc may come before libc has set `environ`: a sanitizer runtime (clang's
 * -fsanitize=undefined, =fuzzer) allocates from the program's preinit functions, which run
 * before any library's constructor. getenv then sees nothing, and every option would silently be
 * its default for the life of the process. So while environ is NULL the options are looked up in
 * the environment the process started with, /proc/self/environ, read with plain system calls
 * into static storage (no allocation: this runs inside malloc). Where that cannot be read, the
 * constructor reports every NSP_ variable that was set but could not be seen in time.
 * Invariant: the table has exactly NSP_OPT__COUNT rows, in enum order (checked at compile time).
 */
#include "options.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sched.h>
#include <stdatomic.h>
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
                          "what a bad free (not allocated, interior pointer, double free) or a "
                          "free slot found written while free does after its message on "
                          "stderr: abort, or warn (count and continue)"},
    [NSP_OPT_STATS] = {"NSP_STATS", "0",
                       "print the allocator's stats at exit: 1 on stderr (even if the program "
                       "closed it), or a file path to append them to (it must be writable at "
                       "start; a switch word such as true, on or 2 is refused: ./on for "
                       "a file of that name)"},
    [NSP_OPT_CACHE_MAX] = {"NSP_CACHE_MAX", "16M",
                           "bytes of spans one core cache may hold, counted as their charge "
                           "windows (K, M, G suffixes)"},
    [NSP_OPT_CACHE_TOTAL_MAX] = {"NSP_CACHE_TOTAL_MAX", "1G",
                                 "bytes all core caches together may reserve, one charge window per "
                                 "cached span; past it, "
                                 "allocations come from the centrals without caching spans"},
    [NSP_OPT_ACCOUNTING] = {"NSP_ACCOUNTING", "over",
                            "heapLive accounting: over (a cached span is charged ahead "
                            "of its allocations, a window at a time, reconciled at "
                            "release), under (charged at release only), exact (every "
                            "object, an oracle)"},
    [NSP_OPT_DELTA_BATCH] = {"NSP_DELTA_BATCH", "64K",
                             "negative heapLive changes collect per (cache, node) up to this "
                             "many bytes before they are applied"},
    [NSP_OPT_PACER] = {"NSP_PACER", "sync",
                       "cycle mode: sync (the allocation that crosses the trigger runs the cycle) "
                       "or concurrent (the pacer thread runs it while the program allocates)"},
    [NSP_OPT_PACE_PERCENT] = {"NSP_PACE_PERCENT", "100",
                              "goal = live * (1 + percent/100), like GOGC; 1 to 100000, or off: "
                              "paced by NSP_MEMORY_LIMIT alone (GOGC=off)"},
    [NSP_OPT_HEAP_MIN] = {"NSP_HEAP_MIN", "auto",
                          "the smallest goal; auto: 4 MiB * percent/100"},
    [NSP_OPT_MEMORY_LIMIT] = {"NSP_MEMORY_LIMIT", "0",
                              "bytes the heap's goal must stay under (minus what numaspan holds "
                              "outside the heap and a headroom of max(3%, 1 MiB)); 0: none, "
                              "else at least 4M"},
    [NSP_OPT_NODE_LIMITS] = {"NSP_NODE_LIMITS", "",
                             "pages mapped per node, e.g. 0=2G,1=8G: a node at its limit sends "
                             "its cores' refills to the nearest node with room; nodes map whole "
                             "64M arenas, so a node limited below one maps nothing (some node "
                             "must have room)"},
    [NSP_OPT_IDLE_RELEASE_MS] = {"NSP_IDLE_RELEASE_MS", "1000",
                                 "a cache unused this long gives its spans back; 0: never, at "
                                 "most 86400000 (a day)"},
    [NSP_OPT_TRACE] = {"NSP_TRACE", "",
                       "a CSV file to append every pacer event to: "
                       "time_ns,node,heap_live,trigger,goal,limit,event (./stderr for a file of that "
                       "name); or stderr: one line "
                       "per cycle (number, time, live -> peak -> live, goal, trigger, runway, "
                       "caches released/busy, pause, share of time in cycles)"},
    [NSP_OPT_SECURE] = {"NSP_SECURE", "0",
                        "1: hardened mode: canaries checked at free, freed memory poisoned and "
                        "checked at reuse (slots over 1 KiB: their first and last 512 B), "
                        "random slot order, guard pages after large objects"},
    [NSP_OPT_MEMORY_LIMIT_HARD] = {"NSP_MEMORY_LIMIT_HARD", "0",
                                   "1: NSP_MEMORY_LIMIT is also a hard limit on the memory "
                                   "numaspan maps for user pages; an allocation that would map "
                                   "past it fails with ENOMEM (after a trim)"},
    [NSP_OPT_PACE_RESERVE] = {"NSP_PACE_RESERVE", "0.25",
                              "kappa: with `over` accounting and something paced, caches may "
                              "hold spans whose windows add up to at most kappa * (trigger - "
                              "live) bytes (below the trigger at least two spans of each "
                              "class in use), so that a cycle starts at most that much early "
                              "(0..1)"},
    [NSP_OPT_DEBUG] = {"NSP_DEBUG", "0",
                       "debug level (host/check.h): 1 the ledger's recount at every cycle, 2 "
                       "also every layer's validators at every cycle and at exit, 3 also the "
                       "recount at exit; a failed check names what is broken and aborts"},
    [NSP_OPT_SMALL_SPAN] = {"NSP_SMALL_SPAN", "256K",
                            "bytes of a span of each size class up to 1 KiB, at least: 64K to "
                            "256K, a multiple of 8K (64K: every class's span is its charge "
                            "window, the table before spans grew); `over` charges a grown span "
                            "half a window (32 KiB for these classes) at a time whatever its "
                            "size (host/ledger.h)"},
    [NSP_OPT_CL_DEVICE] = {"NSP_CL_DEVICE", "",
                           "the OpenCL device the device heap's nsp_cl_pick_device chooses "
                           "(libnumaspan_cl): a part of its \"platform / device\" name, any "
                           "case, the first match over every platform; empty: the first GPU, "
                           "else the first device; a name nothing matches is an error that "
                           "lists the devices"},
};

_Static_assert(sizeof table / sizeof table[0] == NSP_OPT__COUNT,
               "one row per option, in enum order");

/* NSP_ variables that are not options of the libraries: read by numaspan's tools, benchmarks and
 * tests. A process that has them set is not told they are unknown
 * (nsp__options_check_names). tests/test_process.sh fails when the tree reads an NSP_ variable
 * (getenv, env_*, os.environ, a shell's ${NSP_...}) that is neither a row of the table nor here. */
static const char *const not_options[] = {
    "NSP_BENCH_LIB",          /* bench/bench_host.c: the allocator a child bench runs */
    "NSP_BENCH_TEST_LATE",    /* bench/bench_host.c: its tests' faults */
    "NSP_BENCH_TEST_LOSE",
    "NSP_BENCH_TEST_RESCUED",
    "NSP_BENCH_TEST_STARVE",
    "NSP_BENCH_TEST_ORDER",
    "NSP_BENCH_TEST_SLOW_LARSON",
    "NSP_STRESS_ITEMS",       /* tests/test_device.c, tools/gpu_check.sh: the stress's size */
    "NSP_STRESS_ROUNDS",
    "NSP_STRESS_HEAP_MIB",
    "NSP_LITMUS_PAIRS",       /* tests/test_device.c, tools/gpu_check.sh: the litmus's size */
    "NSP_LITMUS_ITERS",
    "NSP_REUSE_ITEMS",        /* tests/test_device.c, tools/gpu_check.sh: the reuse litmus's size */
    "NSP_REUSE_ROUNDS",
    "NSP_REAL_PENDING",       /* tests/real/run.sh: run the cases pending a fix */
    "NSP_BUILD",              /* experiments/exp.py: the build folder */
    "NSP_NEST",               /* tests/test_process.sh: a program's own variable, seen intact */
};

/* ---- the environment before libc sets environ ----------------------------------------------- */

extern char **environ;

static char early_env[16384];   /* the NSP_ entries of /proc/self/environ, each NUL-terminated */
static size_t early_len;
static _Atomic int early_state; /* 0 not read, 1 being read, 2 read, 3 could not be read */
static _Atomic int early_blind; /* an option was read with neither environ nor the copy */
static _Atomic int early_used;  /* the first option read found environ NULL */
static _Atomic int environ_set; /* the constructor ran: libc has set environ (libc is initialised
                                 * before the libraries that depend on it) */

/* Keeps the entries that start with "NSP_"; an entry too long for what is left is dropped. */
static void early_read(void)
{
    int fd = open("/proc/self/environ", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        atomic_store(&early_state, 3);
        return;
    }
    char buf[4096], head[4];
    size_t entry = 0, start = 0; /* characters into the current entry; where its copy starts */
    int keep = -1;               /* -1 undecided, 0 not ours or too long, 1 being copied */
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++) {
            char ch = buf[i];
            if (ch == 0) {
                if (keep == 1 && early_len < sizeof early_env)
                    early_env[early_len++] = 0;
                else
                    early_len = start;
                entry = 0, keep = -1, start = early_len;
                continue;
            }
            if (keep == 0)
                continue;
            if (entry < 4) {
                head[entry++] = ch;
                if (entry < 4)
                    continue;
                keep = memcmp(head, "NSP_", 4) == 0 && early_len + 5 < sizeof early_env;
                if (keep) {
                    memcpy(early_env + early_len, head, 4);
                    early_len += 4;
                }
                continue;
            }
            if (early_len + 1 < sizeof early_env) {
                early_env[early_len++] = ch;
            } else {
                keep = 0;
                early_len = start;
            }
        }
    }
    close(fd);
    atomic_store(&early_state, 2);
}

static const char *early_getenv(const char *name)
{
    int st = atomic_load(&early_state);
    if (st == 0) {
        int zero = 0;
        if (atomic_compare_exchange_strong(&early_state, &zero, 1))
            early_read();
    }
    while ((st = atomic_load(&early_state)) == 1)
        sched_yield(); /* another thread is reading it (rare: this is before main) */
    if (st != 2) {
        atomic_store(&early_blind, 1);
        return NULL;
    }
    size_t len = strlen(name);
    for (size_t i = 0; i < early_len; i += strlen(early_env + i) + 1)
        if (strncmp(early_env + i, name, len) == 0 && early_env[i + len] == '=')
            return early_env + i + len + 1;
    return NULL;
}

/* Once an option was read before environ was set, the copy answers until the constructor: in
 * between, environ may be non-NULL yet not the program's (a setenv while it is NULL, as the
 * topology's loader makes around hwloc's init, gives it a fresh array holding only that
 * variable, until libc's own initialisation sets the real one). */
static const char *env_get(const char *name)
{
    if (atomic_load_explicit(&environ_set, memory_order_relaxed))
        return getenv(name);
    if (!atomic_load_explicit(&early_used, memory_order_relaxed)) {
        if (environ)
            return getenv(name);
        atomic_store(&early_used, 1);
    }
    return early_getenv(name);
}

void nsp__options_check_late(void)
{
    atomic_store(&environ_set, 1);
    if (!atomic_load(&early_blind) || !environ)
        return;
    for (unsigned i = 0; i < NSP_OPT__COUNT; i++) {
        const char *v = getenv(table[i].name);
        if (!v || !*v || strcmp(v, table[i].def) == 0)
            continue;
        char msg[512];
        int n = snprintf(msg, sizeof msg,
                         "numaspan: %s=\"%s\": set, but numaspan started before the environment "
                         "was visible and /proc/self/environ could not be read: it runs with the "
                         "default (%s)\n", table[i].name, v, table[i].def);
        if (n > 0)
            (void)!write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
    }
}

/* ---- NSP_ variables that are not options ------------------------------------------------------ */

/*
 * A mistyped name (NSP_MEMORY_LIMT=1G) would otherwise do nothing, silently: the run goes on
 * without the limit it asked for. It is named on stderr, once per process, with the option it is
 * closest to, and the process goes on. Not refused, unlike a malformed value: numaspan is
 * preloaded into every process of a job (the shell, srun or mpirun, each tool of a pipeline), and
 * a stray variable, one meant for another numaspan version or for a site's own scripts, would
 * kill all of them before they could say anything; a malformed value is always meant for
 * numaspan and its experiment would be wrong. The cost is a line per process of a large job,
 * which is what the typo is worth: it is fixed by unsetting the variable.
 */

static char ascii_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

enum { NAME_CMP = 64 }; /* longest name part compared; option names are far shorter */

static int ascii_prefix_of(const char *a, size_t la, const char *b)
{
    for (size_t i = 0; i < la; i++)
        if (!b[i] || ascii_lower(a[i]) != ascii_lower(b[i]))
            return 0;
    return 1;
}

/* Levenshtein distance in any case between a[0..la) and b[0..lb), both at most NAME_CMP long. */
static unsigned edit_distance(const char *a, size_t la, const char *b, size_t lb)
{
    unsigned row[NAME_CMP + 1];
    for (size_t j = 0; j <= lb; j++)
        row[j] = (unsigned)j;
    for (size_t i = 1; i <= la; i++) {
        unsigned diag = row[0];
        row[0] = (unsigned)i;
        for (size_t j = 1; j <= lb; j++) {
            unsigned up = row[j], best = diag + (ascii_lower(a[i - 1]) != ascii_lower(b[j - 1]));
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            diag = up;
            row[j] = best;
        }
    }
    return row[lb];
}

/* The option closest to the unknown name (len characters; both past "NSP_"): within an edit
 * distance of 2, or one a prefix of the other, the nearest first, the table's order on a tie;
 * NULL if none. A prefix counts from 3 characters, so that NSP_P names nothing. */
static const char *closest_option(const char *name, size_t len)
{
    const char *best = NULL;
    unsigned best_d = ~0u;
    for (unsigned i = 0; i < NSP_OPT__COUNT; i++) {
        const char *opt = table[i].name + 4;
        size_t lo = strlen(opt);
        int prefix = (len >= 3 && ascii_prefix_of(name, len, opt)) ||
                     (lo >= 3 && lo < len && ascii_prefix_of(opt, lo, name));
        unsigned d = len <= NAME_CMP ? edit_distance(name, len, opt, lo) : ~0u;
        if ((d <= 2 || prefix) && d < best_d)
            best = table[i].name, best_d = d;
    }
    return best;
}

static int is_known(const char *entry, size_t len)
{
    for (unsigned i = 0; i < NSP_OPT__COUNT; i++)
        if (strncmp(table[i].name, entry, len) == 0 && table[i].name[len] == 0)
            return 1;
    for (size_t i = 0; i < sizeof not_options / sizeof not_options[0]; i++)
        if (strncmp(not_options[i], entry, len) == 0 && not_options[i][len] == 0)
            return 1;
    return 0;
}

void nsp__options_check_names(void)
{
    if (!environ)
        return;
    for (char **e = environ; *e; e++) {
        if (strncmp(*e, "NSP_", 4) != 0)
            continue;
        size_t len = strcspn(*e, "=");
        if (is_known(*e, len))
            continue;
        const char *near = closest_option(*e + 4, len - 4);
        char msg[320];
        int n = snprintf(msg, sizeof msg, "numaspan: %.*s is not a numaspan option%s%s%s; ignored\n",
                         (int)(len < 200 ? len : 200), *e, near ? " (" : "", near ? near : "",
                         near ? "?)" : "");
        if (n > 0)
            (void)!write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
    }
}

/* ---- values ----------------------------------------------------------------------------------- */

static const char *value_of(const struct option_row *row, int *from_env)
{
    const char *v = env_get(row->name);
    int set = v && *v;
    if (from_env)
        *from_env = set;
    return set ? v : row->def;
}

const char *nsp__option(nsp_option_id_t id)
{
    return value_of(&table[id], NULL);
}

int nsp__keyword_is(const char *text, const char *word)
{
    return nsp__keyword_match(text, word, 1); /* topology.h */
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
    if ((*end == 'i' || *end == 'I') && shift) /* "Mi", "GiB", "GIB" */
        end++;
    if ((*end == 'B' || *end == 'b') && end[1] == 0)
        end++;
    if (*end || (shift && v > (SIZE_MAX >> shift)))
        return -1;
    *out = (size_t)v << shift;
    return 0;
}

void nsp__option_reject(nsp_option_id_t id, const char *why)
{
    char msg[768];
    int n = snprintf(msg, sizeof msg, "numaspan: %s=\"%s\": %s\n", table[id].name,
                     nsp__option(id), why);
    if (n > 0)
        (void)!write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
    _exit(2);
}

size_t nsp__option_size(nsp_option_id_t id)
{
    size_t v;
    if (nsp__parse_size(nsp__option(id), &v) < 0)
        nsp__option_reject(id, "not a size in bytes (e.g. 65536, 4M, 1G)");
    if (v > (size_t)INT64_MAX) /* the pacer's arithmetic is signed 64-bit */
        nsp__option_reject(id, "too large: at most 8388607T (2^63 - 1 bytes)");
    return v;
}

unsigned nsp__option_choice(nsp_option_id_t id, const char *const *choices, unsigned n)
{
    const char *v = nsp__option(id);
    for (unsigned i = 0; i < n; i++)
        if (nsp__keyword_is(v, choices[i]))
            return i;
    char want[256] = "expected ";
    for (unsigned i = 0; i < n; i++) {
        size_t len = strlen(want);
        snprintf(want + len, sizeof want - len, "%s%s", choices[i],
                 i + 2 < n ? ", " : i + 2 == n ? " or " : "");
    }
    nsp__option_reject(id, want);
}

int64_t nsp__option_int(nsp_option_id_t id, int64_t lo, int64_t hi, const char *want)
{
    const char *v = nsp__option(id);
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    /* digits only: strtoll would also take leading blanks and signs */
    if (*v < '0' || *v > '9' || *end || errno || x < lo || x > hi)
        nsp__option_reject(id, want);
    return x;
}

double nsp__option_number(nsp_option_id_t id, double lo, double hi, const char *want)
{
    const char *v = nsp__option(id);
    char *end;
    double x = strtod(v, &end);
    /* a plain decimal number: strtod would also take blanks, signs, "nan", "inf" and hex */
    if (strspn(v, "0123456789.") != strlen(v) || end == v || *end || !isfinite(x) ||
        !(x >= lo && x <= hi))
        nsp__option_reject(id, want);
    return x;
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
