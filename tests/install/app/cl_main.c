/* An outside OpenCL program on the installed device heap: one kernel allocates, writes and frees;
 * after a reconcile the heap's heapLive is 0. Prints "device ok", or "device skipped: ..." when
 * the machine has no OpenCL device (the build and link are what is tested then). */
#include <numaspan_cl.h>
#include <stdio.h>

static const char *src =
    "__kernel void k(__global nsp_dheap *h, __global uint *bad)\n"
    "{\n"
    "    nsp_dhandle p = nsp_dmalloc(h, 64);\n"
    "    if (!p) { atomic_inc(bad); return; }\n"
    "    __global uint *q = (__global uint *)nsp_dptr(h, p);\n"
    "    q[0] = (uint)get_global_id(0);\n"
    "    if (q[0] != (uint)get_global_id(0)) atomic_inc(bad);\n"
    "    nsp_dfree(h, p);\n"
    "}\n";

int main(void)
{
    cl_platform_id p;
    cl_device_id d;
    if (nsp_cl_pick_device(&p, &d) < 0) {
        printf("device skipped: %s\n", nsp_cl_error());
        return 0;
    }
    cl_int e;
    cl_context ctx = clCreateContext(NULL, 1, &d, NULL, NULL, &e);
    cl_command_queue q = clCreateCommandQueue(ctx, d, 0, &e);
    nsp_cl_heap_t *h = nsp_cl_heap_create(ctx, d, q, 16 << 20, NULL);
    cl_program prog = h ? nsp_cl_build(h, src, "") : NULL;
    if (!prog) {
        printf("device FAIL: %s\n", nsp_cl_error());
        return 1;
    }
    cl_kernel k = clCreateKernel(prog, "k", &e);
    cl_uint zero = 0, bad = 1;
    cl_mem mb = clCreateBuffer(ctx, CL_MEM_COPY_HOST_PTR, 4, &zero, &e);
    nsp_cl_bind(h, k, 0);
    clSetKernelArg(k, 1, sizeof mb, &mb);
    size_t n = 4096;
    clEnqueueNDRangeKernel(q, k, 1, NULL, &n, NULL, 0, NULL, NULL);
    clEnqueueReadBuffer(q, mb, CL_TRUE, 0, 4, &bad, 0, NULL, NULL);
    nsp_cl_stats_t st;
    if (nsp_cl_reconcile(h, q) < 0 || nsp_cl_stats(h, q, &st) < 0 || bad || st.heap_live != 0) {
        printf("device FAIL: bad %u, heapLive %lld, %s\n", bad, (long long)st.heap_live,
               nsp_cl_error());
        return 1;
    }
    printf("device ok\n");
    clReleaseMemObject(mb);
    clReleaseKernel(k);
    clReleaseProgram(prog);
    nsp_cl_heap_destroy(h);
    clReleaseCommandQueue(q);
    clReleaseContext(ctx);
    return 0;
}
