/*
 * device/error.c — the last error of this thread's numaspan_cl call, and OpenCL's error names.
 *
 * Owns: one heap-allocated message per thread (build logs can be long), replaced by each failure.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static __thread char *msg;
static __thread size_t cap;

static void reserve(size_t n)
{
    if (n <= cap)
        return;
    char *m = realloc(msg, n);
    if (!m)
        return;
    if (!msg)
        m[0] = '\0';
    msg = m;
    cap = n;
}

int nsp__cl_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    reserve((size_t)(n > 0 ? n : 0) + 1);
    if (cap) {
        va_start(ap, fmt);
        vsnprintf(msg, cap, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void nsp__cl_fail_append(const char *text)
{
    size_t have = msg ? strlen(msg) : 0;
    reserve(have + strlen(text) + 1);
    if (cap > have + strlen(text))
        strcpy(msg + have, text);
}

const char *nsp_cl_error(void)
{
    return msg ? msg : "";
}

const char *nsp__cl_errname(cl_int err)
{
    switch (err) {
#define E(x) case x: return #x;
    E(CL_SUCCESS) E(CL_DEVICE_NOT_FOUND) E(CL_DEVICE_NOT_AVAILABLE) E(CL_COMPILER_NOT_AVAILABLE)
    E(CL_MEM_OBJECT_ALLOCATION_FAILURE) E(CL_OUT_OF_RESOURCES) E(CL_OUT_OF_HOST_MEMORY)
    E(CL_BUILD_PROGRAM_FAILURE) E(CL_INVALID_VALUE) E(CL_INVALID_DEVICE) E(CL_INVALID_CONTEXT)
    E(CL_INVALID_COMMAND_QUEUE) E(CL_INVALID_MEM_OBJECT) E(CL_INVALID_PROGRAM)
    E(CL_INVALID_PROGRAM_EXECUTABLE) E(CL_INVALID_KERNEL_NAME) E(CL_INVALID_KERNEL)
    E(CL_INVALID_ARG_INDEX) E(CL_INVALID_ARG_VALUE) E(CL_INVALID_ARG_SIZE)
    E(CL_INVALID_KERNEL_ARGS) E(CL_INVALID_WORK_DIMENSION) E(CL_INVALID_WORK_GROUP_SIZE)
    E(CL_INVALID_WORK_ITEM_SIZE) E(CL_INVALID_GLOBAL_OFFSET) E(CL_INVALID_BUFFER_SIZE)
    E(CL_INVALID_BUILD_OPTIONS) E(CL_INVALID_OPERATION) E(CL_INVALID_PLATFORM)
    case -1001: return "CL_PLATFORM_NOT_FOUND_KHR (no ICD registered)";
#undef E
    default: return "an OpenCL error";
    }
}
