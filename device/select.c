/*
 * device/select.c — choosing the OpenCL device (PLATFORM.md: never assume platform 0).
 *
 * Owns: nsp_cl_pick_device. NSP_CL_DEVICE (an option of the table, read through nsp_option_find)
 * names a platform or device by substring; without it a GPU is preferred over other kinds, in
 * platform order.
 */
#include <ctype.h>
#include <string.h>

#include "internal.h"
#include "numaspan.h"

#define MAX_PLATFORMS 16
#define MAX_DEVICES 64

void nsp__cl_describe(cl_device_id dev, char *buf, size_t len)
{
    char pname[128] = "?", dname[128] = "?";
    cl_platform_id p;
    if (clGetDeviceInfo(dev, CL_DEVICE_PLATFORM, sizeof p, &p, NULL) == CL_SUCCESS)
        clGetPlatformInfo(p, CL_PLATFORM_NAME, sizeof pname, pname, NULL);
    clGetDeviceInfo(dev, CL_DEVICE_NAME, sizeof dname, dname, NULL);
    pname[sizeof pname - 1] = dname[sizeof dname - 1] = '\0';
    snprintf(buf, len, "%s / %s", pname, dname);
}

static int contains_ci(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++) {
        size_t i = 0;
        while (i < n && hay[i] && tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i]))
            i++;
        if (i == n)
            return 1;
    }
    return n == 0;
}

int nsp_cl_pick_device(cl_platform_id *platform, cl_device_id *device)
{
    cl_platform_id plats[MAX_PLATFORMS];
    cl_uint np = 0;
    cl_int err = clGetPlatformIDs(MAX_PLATFORMS, plats, &np);
    if (err != CL_SUCCESS || np == 0)
        return nsp__cl_fail("nsp_cl_pick_device: no OpenCL platform (%s); is an ICD (e.g. "
                            "pocl-opencl-icd) installed?",
                            err == CL_SUCCESS ? "none listed" : nsp__cl_errname(err));
    nsp_option_info_t opt; /* the options table's (host/options.c): `numaspan config` shows it */
    const char *want = nsp_option_find("NSP_CL_DEVICE", &opt) == 0 && *opt.value ? opt.value : NULL;
    cl_device_id best = NULL, any = NULL;
    cl_platform_id best_p = NULL, any_p = NULL;
    char listing[2048] = "";
    for (cl_uint i = 0; i < np && i < MAX_PLATFORMS; i++) {
        cl_device_id devs[MAX_DEVICES];
        cl_uint nd = 0;
        if (clGetDeviceIDs(plats[i], CL_DEVICE_TYPE_ALL, MAX_DEVICES, devs, &nd) != CL_SUCCESS)
            continue;
        for (cl_uint j = 0; j < nd && j < MAX_DEVICES; j++) {
            char desc[300];
            nsp__cl_describe(devs[j], desc, sizeof desc);
            size_t l = strlen(listing);
            snprintf(listing + l, sizeof listing - l, "%s\"%s\"", l ? ", " : "", desc);
            if (want) {
                if (!best && contains_ci(desc, want)) {
                    best = devs[j];
                    best_p = plats[i];
                }
                continue;
            }
            cl_device_type t = 0;
            clGetDeviceInfo(devs[j], CL_DEVICE_TYPE, sizeof t, &t, NULL);
            if (!best && (t & CL_DEVICE_TYPE_GPU)) {
                best = devs[j];
                best_p = plats[i];
            }
            if (!any) {
                any = devs[j];
                any_p = plats[i];
            }
        }
    }
    if (!best && !want) {
        best = any;
        best_p = any_p;
    }
    if (!best)
        return want ? nsp__cl_fail("nsp_cl_pick_device: NSP_CL_DEVICE=\"%s\" matches no OpenCL "
                                   "device; the devices are: %s",
                                   want, listing[0] ? listing : "(none)")
                    : nsp__cl_fail("nsp_cl_pick_device: the OpenCL platforms list no device");
    if (platform)
        *platform = best_p;
    if (device)
        *device = best;
    return 0;
}
