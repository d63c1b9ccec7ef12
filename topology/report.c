/*
 * topology/report.c — the topology report, as text for people and JSON for scripts.
 *
 * Owns: nsp_topo_print. Reads only the immutable tables of topology.h. The JSON keys are a
 * contract with experiments/ and the tests: add keys, never rename them.
 */
#include "topology.h"

#include <inttypes.h>

/* Writes s as a JSON string literal (shared with the layers above: topology.h). */
void nsp__json_str(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

/* Writes a list of ascending numbers as ranges: "0-3,8,10-11". */
static void ranges(FILE *out, const unsigned *v, unsigned n)
{
    for (unsigned i = 0; i < n;) {
        unsigned j = i;
        while (j + 1 < n && v[j + 1] == v[j] + 1)
            j++;
        fprintf(out, "%s%u", i ? "," : "", v[i]);
        if (j > i)
            fprintf(out, "-%u", v[j]);
        i = j + 1;
    }
}

static void json_array(FILE *out, const unsigned *v, unsigned n)
{
    fputc('[', out);
    for (unsigned i = 0; i < n; i++)
        fprintf(out, "%s%u", i ? ", " : "", v[i]);
    fputc(']', out);
}

static const char *dist_source_name(nsp_distance_source_t s)
{
    return s == NSP_DIST_HWLOC ? "hwloc" : "hops";
}

static void print_json(const nsp_topo_t *t, FILE *out)
{
    fprintf(out, "{\n  \"spec\": ");
    nsp__json_str(out, t->spec);
    fprintf(out, ",\n  \"grouping\": \"%s\",\n", nsp_grouping_name(t->grouping));
    fprintf(out, "  \"thissystem\": %s,\n  \"binding\": \"%s\",\n", t->thissystem ? "true" : "false",
            t->thissystem ? "applied" : "recorded");
    fprintf(out, "  \"virtual_cores\": %s,\n", t->virtual_cores ? "true" : "false");
    fprintf(out, "  \"pus\": %u,\n  \"caches\": %u,\n  \"nodes\": [\n", t->npus, t->ncaches);
    for (unsigned n = 0; n < t->nnodes; n++) {
        fprintf(out, "    {\"index\": %u, \"os_index\": %u, \"memory_bytes\": %" PRIu64 ", ", n,
                t->node_os[n], t->node_mem[n]);
        fprintf(out, "\"caches\": ");
        json_array(out, t->node_caches[n], t->node_ncaches[n]);
        fprintf(out, ", \"cpus\": ");
        json_array(out, t->node_pus[n], t->node_npus[n]);
        fprintf(out, "}%s\n", n + 1 < t->nnodes ? "," : "");
    }
    fprintf(out, "  ],\n  \"distance_source\": \"%s\",\n  \"distances\": [\n",
            dist_source_name(t->dist_source));
    for (unsigned a = 0; a < t->nnodes; a++) {
        fprintf(out, "    ");
        json_array(out, t->dist + (size_t)a * t->nnodes, t->nnodes);
        fprintf(out, "%s\n", a + 1 < t->nnodes ? "," : "");
    }
    fprintf(out, "  ]\n}\n");
}

static void print_text(const nsp_topo_t *t, FILE *out)
{
    fprintf(out, "topology:   %s\n", t->spec);
    fprintf(out, "binding:    %s\n",
            t->thissystem ? "real (this system: memory mbind and thread pinning are applied)"
                          : "recorded, not applied (not this system)");
    fprintf(out, "threads:    %s\n",
            t->virtual_cores ? "virtual cores (least loaded, or nsp_thread_bind_core)"
                             : "the cache of the cpu they run on (sched_getcpu)");
    fprintf(out, "caches:     %u (one per %s), %u PUs\n", t->ncaches,
            nsp_grouping_name(t->grouping), t->npus);
    fprintf(out, "nodes:      %u\n", t->nnodes);
    for (unsigned n = 0; n < t->nnodes; n++) {
        fprintf(out, "  node %u (OS #%u): %8.2f MiB, %u caches [", n, t->node_os[n],
                (double)t->node_mem[n] / (1024.0 * 1024.0), t->node_ncaches[n]);
        ranges(out, t->node_caches[n], t->node_ncaches[n]);
        fprintf(out, "], cpus [");
        ranges(out, t->node_pus[n], t->node_npus[n]);
        fprintf(out, "]\n");
    }
    fprintf(out, "distances:  %s\n",
            t->dist_source == NSP_DIST_HWLOC
                ? "from the topology (NUMA latency matrix)"
                : "hop model (no matrix in the topology): 10 local, 10*(1+hops) otherwise");
    fprintf(out, "      ");
    for (unsigned b = 0; b < t->nnodes; b++)
        fprintf(out, "%5u", b);
    fputc('\n', out);
    for (unsigned a = 0; a < t->nnodes; a++) {
        fprintf(out, "  %3u ", a);
        for (unsigned b = 0; b < t->nnodes; b++)
            fprintf(out, "%5u", t->dist[(size_t)a * t->nnodes + b]);
        fputc('\n', out);
    }
}

void nsp_topo_print(const nsp_topo_t *t, FILE *out, int json)
{
    if (json)
        print_json(t, out);
    else
        print_text(t, out);
}
