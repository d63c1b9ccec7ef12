/*
 * tests/fault/fault_inject.c — an LD_PRELOAD interposer that makes the OS refuse numaspan.
 *
 * It interposes mmap, mremap, madvise and syscall (numaspan calls mbind through syscall(SYS_mbind))
 * and counts the calls whose caller is libnumaspan itself (the return address lies in its
 * mapping): hwloc's, libc's and the program's own calls pass untouched and uncounted, so call N
 * names the same call site in every run of a deterministic program. Set by the environment of the
 * test (these are the test tool's variables, not numaspan options):
 *   FAULTINJ_AT=N        the Nth counted call fails (ENOMEM; EIO for madvise and mbind);
 *   FAULTINJ_INIT=1      count from the start of the process, numaspan's initialisation
 *                        included; otherwise counting starts when the program calls
 *                        faultinj_arm() (fault_prog does, first thing in main);
 *   FAULTINJ_MODE=from   ... and every counted call after it (default "once": only the Nth);
 *   FAULTINJ_COUNT=path  at exit, writes the number of counted calls there (a count run);
 *   FAULTINJ_TRACE=1     names every counted call on stderr.
 * Every injected failure is announced on stderr ("faultinj: call N: mmap(...) fails"), so a
 * crash after it names its cause.
 *
 * The real calls are made as raw system calls (x86-64 only; elsewhere the interposer refuses to
 * load and the test reports a skip): looking the libc functions up with dlsym would call malloc,
 * which is numaspan, which maps memory, which is this file.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <link.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#if !defined(__x86_64__)
#error "tests/fault/fault_inject.c: raw system calls are written for x86-64 only"
#endif

static long raw6(long n, long a1, long a2, long a3, long a4, long a5, long a6)
{
    long ret;
    register long r10 __asm__("r10") = a4;
    register long r8 __asm__("r8") = a5;
    register long r9 __asm__("r9") = a6;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

/* A raw result as libc returns it: -1 (or MAP_FAILED) with errno set. */
static long result(long r)
{
    if (r < 0 && r > -4096) {
        errno = (int)-r;
        return -1;
    }
    return r;
}

/* ---- which calls are numaspan's --------------------------------------------------------------- */

static uintptr_t lib_lo, lib_hi; /* libnumaspan's mapped range; 0,0 until found */

static int find_lib(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    (void)arg;
    if (!info->dlpi_name || !strstr(info->dlpi_name, "libnumaspan.so"))
        return 0;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD)
            continue;
        uintptr_t a = info->dlpi_addr + ph->p_vaddr;
        if (a < lo)
            lo = a;
        if (a + ph->p_memsz > hi)
            hi = a + ph->p_memsz;
    }
    lib_lo = lo;
    lib_hi = hi;
    return 1;
}

static int from_numaspan(const void *ret)
{
    if (!lib_hi)
        dl_iterate_phdr(find_lib, NULL);
    return (uintptr_t)ret >= lib_lo && (uintptr_t)ret < lib_hi;
}

/* ---- counting and failing --------------------------------------------------------------------- */

static _Atomic long calls;
static _Atomic int armed = -1; /* -1: not decided yet (FAULTINJ_INIT read at the first call) */

/* Called by the program (found with dlsym) once numaspan's initialisation is behind it. */
__attribute__((visibility("default"))) void faultinj_arm(void)
{
    atomic_store(&armed, 1);
}

static long env_long(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : 0;
}

static void say(const char *msg)
{
    (void)!write(2, msg, strlen(msg));
}

/* Counts a call of numaspan's; 1 if it must fail. */
static int inject(const void *ret, const char *what, long a, long b)
{
    if (!from_numaspan(ret))
        return 0;
    int a0 = atomic_load(&armed);
    if (a0 < 0) {
        const char *init = getenv("FAULTINJ_INIT");
        int want = init && !strcmp(init, "1");
        atomic_compare_exchange_strong(&armed, &a0, want);
        a0 = atomic_load(&armed);
    }
    if (!a0)
        return 0;
    long n = atomic_fetch_add(&calls, 1) + 1;
    if (env_long("FAULTINJ_TRACE") == 1) {
        char msg[160];
        snprintf(msg, sizeof msg, "faultinj: call %ld: %s(%#lx, %ld)\n", n, what,
                 (unsigned long)a, b);
        say(msg);
    }
    long at = env_long("FAULTINJ_AT");
    if (at <= 0)
        return 0;
    const char *mode = getenv("FAULTINJ_MODE");
    int from = mode && !strcmp(mode, "from");
    if (n == at || (from && n > at)) {
        char msg[160];
        snprintf(msg, sizeof msg, "faultinj: call %ld: %s(%#lx, %ld) fails\n", n, what,
                 (unsigned long)a, b);
        say(msg);
        return 1;
    }
    return 0;
}

__attribute__((destructor)) static void write_count(void)
{
    const char *path = getenv("FAULTINJ_COUNT");
    if (!path || !*path)
        return;
    FILE *f = fopen(path, "w");
    if (!f)
        return;
    fprintf(f, "%ld\n", atomic_load(&calls));
    fclose(f);
}

/* ---- the interposed calls --------------------------------------------------------------------- */

#define RET __builtin_return_address(0)

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (inject(RET, "mmap", (long)addr, (long)len)) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    return (void *)result(raw6(SYS_mmap, (long)addr, (long)len, prot, flags, fd, off));
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
    __attribute__((alias("mmap")));

void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...)
{
    void *to = NULL;
    if (flags & MREMAP_FIXED) {
        va_list ap;
        va_start(ap, flags);
        to = va_arg(ap, void *);
        va_end(ap);
    }
    if (inject(RET, "mremap", (long)old, (long)new_len)) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    return (void *)result(raw6(SYS_mremap, (long)old, (long)old_len, (long)new_len, flags,
                               (long)to, 0));
}

int madvise(void *addr, size_t len, int advice)
{
    if (inject(RET, "madvise", (long)addr, (long)len)) {
        errno = EIO;
        return -1;
    }
    return (int)result(raw6(SYS_madvise, (long)addr, (long)len, advice, 0, 0, 0));
}

long syscall(long n, ...)
{
    va_list ap;
    long a[6];
    va_start(ap, n);
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    if (n == SYS_mbind && inject(RET, "mbind", a[0], a[1])) {
        errno = EIO;
        return -1;
    }
    return result(raw6(n, a[0], a[1], a[2], a[3], a[4], a[5]));
}
