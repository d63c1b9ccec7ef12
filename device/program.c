/*
 * device/program.c — building programs with the device library.
 *
 * Owns: nsp_cl_build and the builds of the heap's own kernels. The library's text (the geometry
 * header and kernels/nsp_dheap.cl, embedded at build time: an #include would not resolve after
 * install) is prepended to every program, followed by a #line directive so that the build log's
 * line numbers are the user's own.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Compilers that ignore #line (NVIDIA's reports "<kernel>:LINE:COL") get their line numbers
 * turned into the user's: "NAME:LINE:COL", LINE counted from the user's first line. */
static char *name_lines(const char *log, const char *name)
{
    unsigned lib_lines = 0;
    for (const char *p = nsp__cl_src_lib; *p; p++)
        lib_lines += *p == '\n';
    unsigned skip = lib_lines + 2; /* the library, then the #line directive's own line */
    const char *tag = "<kernel>:";
    size_t n = strlen(log), out_cap = n * 2 + 64, o = 0;
    char *out = malloc(out_cap);
    if (!out)
        return NULL;
    for (const char *p = log; *p;) {
        const char *hit = strstr(p, tag);
        if (!hit) {
            size_t rest = strlen(p);
            if (o + rest + 1 > out_cap)
                break;
            memcpy(out + o, p, rest);
            o += rest;
            break;
        }
        size_t pre = (size_t)(hit - p);
        if (o + pre + strlen(name) + 24 > out_cap)
            break;
        memcpy(out + o, p, pre);
        o += pre;
        char *end;
        unsigned long line = strtoul(hit + strlen(tag), &end, 10);
        if (end != hit + strlen(tag) && line > skip)
            o += (size_t)snprintf(out + o, out_cap - o, "%s:%lu", name, line - skip);
        else if (end != hit + strlen(tag))
            o += (size_t)snprintf(out + o, out_cap - o, "numaspan device library:%lu", line);
        else
            o += (size_t)snprintf(out + o, out_cap - o, "%s", tag);
        p = end;
    }
    out[o] = '\0';
    return out;
}

cl_program nsp__cl_build_with(nsp_cl_heap_t *h, const char *src, const char *src_name,
                              const char *options)
{
    if (!src) {
        nsp__cl_fail("nsp_cl_build: the kernel source is NULL");
        return NULL;
    }
    char line[160];
    snprintf(line, sizeof line, "\n#line 1 \"%s\"\n", src_name);
    const char *parts[3] = {nsp__cl_src_lib, line, src};
    cl_int err;
    cl_program p = clCreateProgramWithSource(h->ctx, 3, parts, NULL, &err);
    if (!p) {
        nsp__cl_fail("nsp_cl_build: clCreateProgramWithSource failed (%s)", nsp__cl_errname(err));
        return NULL;
    }
    size_t ol = strlen(h->options) + (options ? strlen(options) : 0) + 2;
    char *opts = malloc(ol);
    if (!opts) {
        clReleaseProgram(p);
        nsp__cl_fail("nsp_cl_build: out of host memory");
        return NULL;
    }
    snprintf(opts, ol, "%s %s", h->options, options ? options : "");
    err = clBuildProgram(p, 1, &h->dev, opts, NULL, NULL);
    if (err != CL_SUCCESS) {
        size_t n = 0;
        clGetProgramBuildInfo(p, h->dev, CL_PROGRAM_BUILD_LOG, 0, NULL, &n);
        char *log = malloc(n + 1);
        if (log) {
            log[0] = '\0';
            clGetProgramBuildInfo(p, h->dev, CL_PROGRAM_BUILD_LOG, n, log, NULL);
            log[n] = '\0';
        }
        nsp__cl_fail("nsp_cl_build: %s does not build for %s (%s, options \"%s\"); build log:\n",
                     src_name, h->devname, nsp__cl_errname(err), opts);
        char *named = log ? name_lines(log, src_name) : NULL;
        nsp__cl_fail_append(named ? named : log && log[0] ? log : "(the compiler gave no log)");
        free(named);
        free(log);
        free(opts);
        clReleaseProgram(p);
        return NULL;
    }
    free(opts);
    return p;
}

cl_program nsp_cl_build(nsp_cl_heap_t *h, const char *source, const char *options)
{
    if (!h) {
        nsp__cl_fail("nsp_cl_build: the heap is NULL");
        return NULL;
    }
    return nsp__cl_build_with(h, source, "user kernel", options);
}

const char *nsp_cl_library_source(void)
{
    return nsp__cl_src_lib;
}

const char *nsp_cl_build_options(nsp_cl_heap_t *h)
{
    return h ? h->options : "";
}
