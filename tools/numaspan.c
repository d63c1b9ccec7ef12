/*
 * tools/numaspan.c — the numaspan command-line tool.
 *
 * Owns: the subcommands and their argument parsing. Uses the public API only (numaspan.h).
 *   numaspan topo [--topology SPEC] [--grouping pu|core|l2|l3] [--json]
 *   numaspan config [--json]
 *   numaspan version
 * Exit status: 0 on success, 1 when the request fails (a topology that does not load), 2 on a
 * usage error. Every error message names the input it refers to.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
