/*
 * tests/helper_memory.c — memory that comes back, address space, sizes and the malloc contracts
 * glibc documents, as a process sees them (issue 10, failures 3 to 6). One case per run, named
 * by argv[1]; exit 0 when the case holds, 1 with a message naming what did not, 77 (skipped) with
 * the reason when this machine cannot show it.
 *
 * Built twice (tests/CMakeLists.txt): linked with numaspan, and as helper_memory_glibc against
 * the system allocator, so that the contract cases (`contracts`, `absurd`) are shown to be
 * glibc's own behaviour and not numaspan's idea of it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "host/types.h"

static int failures;
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

static int skip(const char *why)
{
    printf("skipped: %s\n", why);
    return 77;
}

/* Reads a whole /proc file into buf without allocating. */
static size_t slurp(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY);
    size_t n = 0;
    ssize_t r;
    if (fd < 0)
        return 0;
    while (n + 1 < cap && (r = read(fd, buf + n, cap - 1 - n)) > 0)
        n += (size_t)r;
    close(fd);
    buf[n] = 0;
    return n;
}

/* A "Name:   123 kB" field of /proc/self/status (or /proc/meminfo), in bytes. */
static uint64_t status_kb(const char *file, const char *name)
{
    static char buf[16384];
    slurp(file, buf, sizeof buf);
    const char *p = strstr(buf, name);
    return p ? strtoull(p + strlen(name), NULL, 10) * 1024 : 0;
}

/* ---- failure 4: address space before the first arena --------------------------------------- */

/* Bytes of anonymous mappings (no file behind them: bss, the bootstrap region, tables), read
 * before main allocates anything. */
static int addrspace(void)
{
    static char buf[1 << 16];
    slurp("/proc/self/maps", buf, sizeof buf);
    uint64_t anon = 0;
    for (char *line = buf; *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = 0;
        unsigned long lo, hi;
        int path = 0;
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &lo, &hi, &path) >= 2) {
            const char *name = line + path;
            if (path == 0 || *name == 0)
                anon += hi - lo;
        }
        line = nl ? nl + 1 : line + strlen(line);
    }
    printf("anonymous=%llu\n", (unsigned long long)anon);
    return 0;
}

/* ---- failure 3: memory that comes back ------------------------------------------------------ */

/* Under an address-space limit, 64-byte objects until malloc refuses, all freed: every other
 * size must then be served from the pages they gave back. */
static int as_reuse(void)
{
    uint64_t vm = status_kb("/proc/self/status", "VmSize:");
    struct rlimit rl = {vm + (160u << 20), vm + (160u << 20)};
    CHECK(setrlimit(RLIMIT_AS, &rl) == 0, "setrlimit: %s", strerror(errno));
    void **head = NULL;
    size_t n = 0;
    for (void **p; (p = malloc(64)); n++) {
        *p = head;
        head = p;
    }
    CHECK(n > (64u << 20) / 64, "only %zu objects of 64 B before the limit", n);
    while (head) {
        void **next = *head;
        free(head);
        head = next;
    }
    size_t sizes[] = {100000, 20000, 1 << 20, 3000, 8 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        errno = 0;
        void *q = malloc(sizes[i]);
        CHECK(q, "malloc(%zu) after %zu B of 64 B objects were freed: %s", sizes[i], n * 64,
              strerror(errno));
        if (q)
            memset(q, 1, sizes[i]);
    }
    return failures != 0;
}

/* 96 MiB allocated and freed at each of four sizes in turn: the peak RSS must stay near one
 * size's worth, not grow by each. */
static int four_sizes(void)
{
    const size_t total = (size_t)96 << 20, sizes[] = {64, 1024, 16384, 200000};
    uint64_t before = status_kb("/proc/self/status", "VmRSS:");
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        void **head = NULL;
        for (size_t got = 0; got < total; got += sizes[i]) {
            void **p = malloc(sizes[i]);
            CHECK(p, "malloc(%zu)", sizes[i]);
            if (!p)
                return 1;
            memset(p, 0x5a, sizes[i]);
            *p = head;
            head = p;
        }
        while (head) {
            void **next = *head;
            free(head);
            head = next;
        }
    }
    uint64_t peak = status_kb("/proc/self/status", "VmHWM:");
    printf("peak_rss_growth=%llu MiB\n", (unsigned long long)((peak - before) >> 20));
    CHECK(peak - before < total * 8 / 5, "peak RSS grew by %llu MiB for 96 MiB live at a time",
          (unsigned long long)((peak - before) >> 20));
    return failures != 0;
}

/* 192 MiB of 1 MiB blocks freed with no pacer running: the free pages go back to the OS. */
static int scavenge(void)
{
    enum { N = 192 };
    static void *blocks[N];
    uint64_t before = status_kb("/proc/self/status", "VmRSS:");
    for (int i = 0; i < N; i++) {
        blocks[i] = malloc((size_t)1 << 20);
        CHECK(blocks[i], "block %d", i);
        if (!blocks[i])
            return 1;
        memset(blocks[i], 1, (size_t)1 << 20);
    }
    for (int i = 0; i < N; i++)
        free(blocks[i]);
    uint64_t after = status_kb("/proc/self/status", "VmRSS:");
    printf("rss_after_free=%llu MiB\n", (unsigned long long)((after - before) >> 20));
    CHECK(after - before < ((uint64_t)100 << 20), "RSS %llu MiB above the start after 192 MiB "
          "were freed", (unsigned long long)((after - before) >> 20));
    return failures != 0;
}

/* ---- failure 5: sizes ----------------------------------------------------------------------- */

/* Requests no machine here could back fail as glibc's do, unless the system overcommits all. */
static int absurd(void)
{
    char mode[8] = "";
    slurp("/proc/sys/vm/overcommit_memory", mode, sizeof mode);
    if (mode[0] == '1')
        return skip("vm.overcommit_memory=1: the system grants any mapping");
    uint64_t ram = status_kb("/proc/meminfo", "MemTotal:") + status_kb("/proc/meminfo", "SwapTotal:");
    size_t sizes[] = {(size_t)(ram * 4), (size_t)1 << 40, (size_t)64 << 40};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        errno = 0;
        void *p = malloc(sizes[i]);
        CHECK(!p && errno == ENOMEM, "malloc(%zu) on a machine of %llu B: %p, errno %d", sizes[i],
              (unsigned long long)ram, p, errno);
        free(p);
    }
    errno = 0;
    void *c = calloc((size_t)1 << 20, (size_t)1 << 20);
    CHECK(!c && errno == ENOMEM, "calloc(2^20, 2^20): %p, errno %d", c, errno);
    free(c);
    void *r = malloc(100);
    errno = 0;
    CHECK(!realloc(r, (size_t)64 << 40) && errno == ENOMEM, "realloc to 64 TiB");
    free(r);
    return failures != 0;
}

/* Page counts of large spans are 64 bits: a 32 TiB object has 2^32 pages. */
static int pages64(void)
{
    struct nsp_span s;
    volatile size_t bytes = (size_t)32 << 40; /* not a constant: the test, not the compiler */
    s.npages = bytes >> NSP_PAGE_SHIFT;
    CHECK(((size_t)s.npages << NSP_PAGE_SHIFT) == (size_t)32 << 40, "npages keeps %llu",
          (unsigned long long)s.npages);
    char mode[8] = "";
    slurp("/proc/sys/vm/overcommit_memory", mode, sizeof mode);
    if (mode[0] != '1') {
        printf("skipped the 40 TiB malloc: vm.overcommit_memory is not 1\n");
        return failures != 0;
    }
    size_t big = (size_t)40 << 40;
    void *p = malloc(big);
    if (p) {
        CHECK(malloc_usable_size(p) >= big, "usable %zu", malloc_usable_size(p));
        free(p);
    }
    return failures != 0;
}

/* NSP_MEMORY_LIMIT=256M NSP_MEMORY_LIMIT_HARD=1 (set by the test): mapped memory stays under
 * it, the allocation that would pass it gets ENOMEM, and what was freed is used again. */
static int hard_limit(void)
{
    errno = 0;
    void *p = malloc((size_t)300 << 20);
    CHECK(!p && errno == ENOMEM, "malloc(300 MiB) under a 256 MiB hard limit: %p", p);
    free(p);
    enum { N = 64 };
    void *blocks[N];
    size_t n = 0;
    while (n < N && (blocks[n] = malloc((size_t)6 << 20)))
        memset(blocks[n++], 1, 4096);
    CHECK(n < N && errno == ENOMEM, "%zu blocks of 6 MiB under a 256 MiB hard limit", n);
    CHECK(n * 6 >= 128, "only %zu MiB before the limit", n * 6);
    for (size_t i = 0; i < n; i++)
        free(blocks[i]);
    void **head = NULL; /* small objects reuse the pages the large ones gave back */
    size_t objs = 0;
    for (void **q; objs < (128u << 20) / 256 && (q = malloc(256)); objs++) {
        *q = head;
        head = q;
    }
    CHECK(objs == (128u << 20) / 256, "128 MiB of 256 B objects after the large frees: %zu", objs);
    while (head) {
        void **next = *head;
        free(head);
        head = next;
    }
    p = malloc((size_t)20 << 20); /* the pages the small objects gave back */
    CHECK(p, "malloc(20 MiB) after everything was freed");
    free(p);
    return failures != 0;
}

/* ---- failure 6: glibc's contracts ----------------------------------------------------------- */

static int aligned_to(const void *p, size_t a)
{
    return p && (uintptr_t)p % a == 0;
}

static int contracts(void)
{
    void *p;
    /* size 0 at any alignment: a unique pointer that free takes */
    for (size_t a = 16; a <= ((size_t)4 << 20); a *= 2) {
        p = NULL;
        CHECK(posix_memalign(&p, a, 0) == 0 && aligned_to(p, a), "posix_memalign(%zu, 0): %p", a, p);
        free(p);
        p = memalign(a, 0);
        CHECK(aligned_to(p, a), "memalign(%zu, 0): %p", a, p);
        free(p);
    }
    /* memalign rounds an alignment that is not a power of two up to the next one; 0 is malloc */
    struct { size_t align, want; } round[] = {{24, 32}, {48, 64}, {3000, 4096}, {0, 16}, {1, 16},
                                              {100000, 131072}};
    for (size_t i = 0; i < sizeof round / sizeof round[0]; i++) {
        p = memalign(round[i].align, 100);
        CHECK(aligned_to(p, round[i].want), "memalign(%zu, 100): %p", round[i].align, p);
        if (p)
            memset(p, 1, 100);
        free(p);
    }
    errno = 0;
    p = memalign(SIZE_MAX / 2 + 2, 1);
    CHECK(!p && errno == EINVAL, "memalign(SIZE_MAX / 2 + 2, 1): %p, errno %d", p, errno);
    /* errno untouched by every call that succeeds */
    size_t sizes[] = {0, 1, 64, 5000, 40000, 300000, (size_t)40 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        errno = EDOM;
        p = malloc(sizes[i]);
        CHECK(p && errno == EDOM, "malloc(%zu) changed errno to %d", sizes[i], errno);
        p = realloc(p, sizes[i] * 2 + 1);
        CHECK(p && errno == EDOM, "realloc to %zu changed errno to %d", sizes[i] * 2 + 1, errno);
        free(p);
        p = calloc(1, sizes[i]);
        CHECK(p && errno == EDOM, "calloc(1, %zu) changed errno to %d", sizes[i], errno);
        free(p);
        p = memalign(4096, sizes[i]);
        CHECK(p && errno == EDOM, "memalign(4096, %zu) changed errno to %d", sizes[i], errno);
        free(p);
    }
    return failures != 0;
}

/* numaspan's API where the helper is linked with it (absent from helper_memory_glibc) */
extern void *nsp_malloc_node(size_t n, unsigned node) __attribute__((weak));

/* errno after allocations that succeed by spilling (run on 2 nodes with node limits). */
static int errno_spill(void)
{
    enum { N = 48 };
    void *blocks[N];
    for (int i = 0; i < N; i++) { /* 192 MiB of 4 MiB blocks over nodes limited to 128 MiB */
        errno = EDOM;
        blocks[i] = malloc((size_t)4 << 20);
        CHECK(blocks[i] && errno == EDOM, "block %d of 4 MiB: %p, errno %d", i, blocks[i], errno);
    }
    for (unsigned node = 0; nsp_malloc_node && node < 2; node++) /* one node is full: spills */
        for (int i = 0; i < 2000; i++) {
            errno = EDOM;
            void *p = nsp_malloc_node(4000, node);
            CHECK(p && errno == EDOM, "nsp_malloc_node(4000, %u) #%d: errno %d", node, i, errno);
            if (!p || errno != EDOM)
                break;
        }
    for (int i = 0; i < N; i++)
        free(blocks[i]);
    for (int i = 0; i < 10000; i++) { /* small objects too */
        errno = EDOM;
        void *p = malloc(4000);
        CHECK(p && errno == EDOM, "object %d of 4000 B: errno %d", i, errno);
        if (!p || errno != EDOM)
            break;
    }
    return failures != 0;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "";
    if (strcmp(cmd, "addrspace") == 0)
        return addrspace();
    if (strcmp(cmd, "as-reuse") == 0)
        return as_reuse();
    if (strcmp(cmd, "four-sizes") == 0)
        return four_sizes();
    if (strcmp(cmd, "scavenge") == 0)
        return scavenge();
    if (strcmp(cmd, "absurd") == 0)
        return absurd();
    if (strcmp(cmd, "pages64") == 0)
        return pages64();
    if (strcmp(cmd, "hard-limit") == 0)
        return hard_limit();
    if (strcmp(cmd, "contracts") == 0)
        return contracts();
    if (strcmp(cmd, "errno-spill") == 0)
        return errno_spill();
    fprintf(stderr, "helper_memory: unknown case \"%s\"\n", cmd);
    return 2;
}
