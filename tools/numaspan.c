/*
 * tools/numaspan.c — the numaspan command-line tool.
 *
 * Owns: the subcommands and their argument parsing. Uses the public API only (numaspan.h).
 *   numaspan topo [--topology SPEC] [--grouping pu|core|l2|l3] [--json]
 *   numaspan config [--json]
 *   numaspan run [--topology SPEC] [--grouping G] [--stats] [--on-error abort|warn] -- CMD ARGS
 *   numaspan classes [--json]
 *   numaspan version
 * Exit status: 0 on success, 1 when the request fails (a topology that does not load), 2 on a
 * usage error. Every error message names the input it refers to.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "numaspan.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: numaspan <command> [options]\n"
            "\n"
            "commands:\n"
            "  topo [--topology SPEC] [--grouping G] [--json]\n"
            "      nodes, their cores and memory, the distance matrix, whether binding is real.\n"
            "      SPEC: real | synthetic:<hwloc string> | xml:<path> (default: $NSP_TOPOLOGY)\n"
            "      G: pu | core | l2 | l3 (default: $NSP_CACHE_GROUPING)\n"
            "  config [--json]\n"
            "      every NSP_* environment variable: meaning, default, current value.\n"
            "  run [--topology SPEC] [--grouping G] [--stats] [--on-error abort|warn] -- CMD ARGS\n"
            "      runs CMD with numaspan preloaded (LD_PRELOAD) and these options set.\n"
            "  bench host [--quick] [--threads N[,N..]] [--reps R] [--json] [--only W,..]\n"
            "             [--allocators A,..] [--cpu-clock] [--seed S]\n"
            "      host workloads under glibc, jemalloc, mimalloc, tcmalloc and numaspan, side by\n"
            "      side, each round in a shuffled order (the seed printed; --seed repeats it):\n"
            "      medians, ratios to glibc, paired ratios per round, peak RSS. --allocators may\n"
            "      also name numaspan-vcores and numaspan-exact (its caches without bins).\n"
            "  bench pacer [--quick] [--reps R] [--json] [--threads T] [--caches N,..] [--live SIZE,..]\n"
            "              [--percent P,..] [--heap-min SIZE,..] [--kappa K]\n"
            "      the accounting experiment: peak heap under over, under and exact against the\n"
            "      caches' free capacity over the live heap (golang/go#53738 on numaspan).\n"
            "  bench device [--quick] [--json] [--reps R] [--max-n N] [--heap-mib M] [--slots S]\n"
            "               [--only C,..] [--json-out FILE] [--litmus] [--ptx FILE]\n"
            "      the device heap on the OpenCL device (NSP_CL_DEVICE) beside three bump\n"
            "      kernels (unaggregated, warp- and work-group-aggregated), steady state too.\n"
            "  classes [--json]\n"
            "      the size classes: object size, span pages, objects per span, worst waste.\n"
            "  version\n"
            "      the library version.\n");
}

/* Returns the value following a flag, or exits with a usage error naming the flag. */
static const char *flag_value(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) {
        fprintf(stderr, "numaspan: %s needs a value\n", argv[*i]);
        exit(2);
    }
    return argv[++*i];
}

static int cmd_topo(int argc, char **argv)
{
    nsp_option_info_t o;
    nsp_option_find("NSP_TOPOLOGY", &o);
    const char *spec = o.value;
    nsp_option_find("NSP_CACHE_GROUPING", &o);
    const char *gname = o.value;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else if (strcmp(argv[i], "--topology") == 0)
            spec = flag_value(argc, argv, &i);
        else if (strncmp(argv[i], "--topology=", 11) == 0)
            spec = argv[i] + 11;
        else if (strcmp(argv[i], "--grouping") == 0)
            gname = flag_value(argc, argv, &i);
        else if (strncmp(argv[i], "--grouping=", 11) == 0)
            gname = argv[i] + 11;
        else {
            fprintf(stderr, "numaspan topo: unknown argument \"%s\"\n", argv[i]);
            return 2;
        }
    }
    nsp_grouping_t g;
    if (nsp_grouping_parse(gname, &g) < 0) {
        fprintf(stderr, "numaspan topo: grouping \"%s\": not one of pu, core, l2, l3\n", gname);
        return 2;
    }
    char err[512];
    nsp_topo_t *t = nsp_topo_load(spec, g, err, sizeof err);
    if (!t) {
        fprintf(stderr, "numaspan topo: %s\n", err);
        return 1;
    }
    nsp_topo_print(t, stdout, json);
    nsp_topo_destroy(t);
    return 0;
}

static int cmd_config(int argc, char **argv)
{
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else {
            fprintf(stderr, "numaspan config: unknown argument \"%s\"\n", argv[i]);
            return 2;
        }
    }
    nsp_options_print(stdout, json);
    return 0;
}

/* The path of the libnumaspan.so this tool runs with: what `run` preloads. */
static const char *library_path(void)
{
    Dl_info info;
    if (!dladdr((void *)nsp_malloc, &info) || !info.dli_fname || !strstr(info.dli_fname, ".so"))
        return NULL;
    return info.dli_fname;
}

static int cmd_run(int argc, char **argv)
{
    int i = 1;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        } else if (strcmp(argv[i], "--topology") == 0) {
            setenv("NSP_TOPOLOGY", flag_value(argc, argv, &i), 1);
        } else if (strcmp(argv[i], "--grouping") == 0) {
            setenv("NSP_CACHE_GROUPING", flag_value(argc, argv, &i), 1);
        } else if (strcmp(argv[i], "--on-error") == 0) {
            setenv("NSP_ON_ERROR", flag_value(argc, argv, &i), 1);
        } else if (strcmp(argv[i], "--stats") == 0) {
            setenv("NSP_STATS", "1", 1);
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "numaspan run: unknown option \"%s\" (the command follows --)\n",
                    argv[i]);
            return 2;
        } else {
            break;
        }
    }
    if (i >= argc) {
        fprintf(stderr, "numaspan run: no command given (numaspan run [options] -- CMD ARGS)\n");
        return 2;
    }
    const char *lib = library_path();
    if (!lib) {
        fprintf(stderr, "numaspan run: cannot find the path of libnumaspan.so to preload\n");
        return 1;
    }
    const char *old = getenv("LD_PRELOAD");
    size_t len = strlen(lib) + (old ? strlen(old) + 1 : 0) + 1;
    char *preload = malloc(len);
    if (!preload)
        return 1;
    snprintf(preload, len, "%s%s%s", lib, old && *old ? ":" : "", old ? old : "");
    setenv("LD_PRELOAD", preload, 1);
    execvp(argv[i], argv + i);
    fprintf(stderr, "numaspan run: cannot run \"%s\": %s\n", argv[i], strerror(errno));
    return 127;
}

/* Finds a benchmark program: beside the tool in a build tree (bench/NAME), or installed
 * (../libexec/numaspan/NAME). */
static int find_bench(const char *name, char *out, size_t len)
{
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return -1;
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (!slash)
        return -1;
    *slash = 0;
    const char *where[] = {"%s/bench/%s", "%s/../libexec/numaspan/%s"};
    for (size_t i = 0; i < sizeof where / sizeof where[0]; i++) {
        int n = snprintf(out, len, where[i], self, name);
        if (n > 0 && (size_t)n < len && access(out, X_OK) == 0)
            return 0;
    }
    return -1;
}

static int cmd_bench(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "host") != 0 && strcmp(argv[1], "pacer") != 0 &&
                     strcmp(argv[1], "device") != 0)) {
        fprintf(stderr, "numaspan bench: expected host, pacer or device (numaspan bench "
                        "host|pacer|device [options])\n");
        return 2;
    }
    int host = strcmp(argv[1], "host") == 0;
    const char *name = host ? "bench_host" : strcmp(argv[1], "pacer") == 0 ? "bench_pacer"
                                                                           : "bench_device";
    char prog[4096];
    if (find_bench(name, prog, sizeof prog) < 0) {
        fprintf(stderr, "numaspan bench: %s not found beside the tool\n", name);
        return 1;
    }
    const char *lib = host ? library_path() : NULL;
    char **args = calloc((size_t)argc + 4, sizeof *args);
    int k = 0;
    args[k++] = prog;
    for (int i = 2; i < argc; i++)
        args[k++] = argv[i];
    if (lib) {
        args[k++] = "--lib";
        args[k++] = (char *)lib;
    }
    execv(prog, args);
    fprintf(stderr, "numaspan bench: cannot run %s: %s\n", prog, strerror(errno));
    return 127;
}

static int cmd_classes(int argc, char **argv)
{
    int json = argc > 1 && strcmp(argv[1], "--json") == 0;
    uint32_t size, pages, n, prev = 0;
    double worst_round = 0, worst_tail = 0;
    if (json)
        printf("[");
    else
        printf("%5s %8s %6s %8s %11s %10s\n", "class", "size", "pages", "objects", "round waste",
               "tail waste");
    for (unsigned k = 1; nsp_size_class(k, &size, &pages, &n) == 0; k++) {
        /* worst rounding: a request of prev+1 bytes gets size bytes */
        double round = (double)(size - prev - 1) / size;
        double tail = (double)(((size_t)pages * 8192) % size) / ((double)pages * 8192);
        if (size > 128 && round > worst_round)
            worst_round = round;
        if (tail > worst_tail)
            worst_tail = tail;
        if (json)
            printf("%s{\"class\": %u, \"size\": %u, \"span_pages\": %u, \"objects\": %u, "
                   "\"round_waste\": %.4f, \"tail_waste\": %.4f}",
                   k > 1 ? ", " : "", k, size, pages, n, round, tail);
        else
            printf("%5u %8u %6u %8u %10.1f%% %9.2f%%\n", k, size, pages, n, 100 * round,
                   100 * tail);
        prev = size;
    }
    if (json)
        printf("]\n");
    else
        printf("worst rounding waste above 128 B: %.1f%%; worst tail waste: %.2f%%\n",
               100 * worst_round, 100 * worst_tail);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "topo") == 0)
        return cmd_topo(argc - 1, argv + 1);
    if (strcmp(cmd, "config") == 0)
        return cmd_config(argc - 1, argv + 1);
    if (strcmp(cmd, "run") == 0)
        return cmd_run(argc - 1, argv + 1);
    if (strcmp(cmd, "bench") == 0)
        return cmd_bench(argc - 1, argv + 1);
    if (strcmp(cmd, "classes") == 0)
        return cmd_classes(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("numaspan %s\n", nsp_version());
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "numaspan: unknown command \"%s\"\n", cmd);
    usage(stderr);
    return 2;
}
