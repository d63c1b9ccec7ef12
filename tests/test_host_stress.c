/*
 * tests/test_host_stress.c — many threads, random sizes from 1 B to 1 MiB, frees on other
 * threads than the allocating one, and every block's contents checked before it is freed.
 *
 * Each block is filled with a pattern derived from its address and size, so a block handed out
 * twice, overlapping another, or scribbled on by the allocator shows up as a mismatch naming the
 * block. Threads pass blocks to each other through a shared exchange; whoever takes one frees it.
 * Run by CTest on the real machine and on a synthetic 4-node machine with 16 virtual cores.
 * It calls nsp_malloc/nsp_free by name, so that a sanitizer build (whose runtime takes over
 * malloc itself) still drives numaspan: run it under TSan with few operations.
 * With "foreign", four more threads take the core caches from outside while the workers run
 * (issue 10, failure 8): malloc_trim and forced pacer cycles, stats, the ledger's recount and the
 * heap's validators (both take every cache at once), in a loop; the ledger must recount exactly
 * and the heap validate at the end.
 * usage: test_host_stress [threads] [operations per thread] [foreign]
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "numaspan.h"

struct rec {
    unsigned char *p;
    size_t n;
};

#define LOCAL 256
#define SHARED 1024
static _Atomic(struct rec *) shared[SHARED];
static _Atomic unsigned long mismatches, blocks_checked, cross_frees;

static uint64_t rng(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Mostly small, some medium, a few up to 1 MiB: the shape of real programs. */
static size_t draw_size(uint64_t *s)
{
    uint64_t r = rng(s);
    unsigned pick = r % 100;
    if (pick < 80)
        return 1 + (r >> 8) % 256;
    if (pick < 97)
        return 257 + (r >> 8) % 32768;
    return 32769 + (r >> 8) % (1 << 20);
}

static unsigned char pattern(const unsigned char *p, size_t n, size_t i)
{
    uintptr_t a = (uintptr_t)p;
    return (unsigned char)((a >> 4) ^ (a >> 12) ^ n ^ (i * 0x9d));
}

/* Visits the bytes that carry the pattern: all of a small block; the first and last 256 bytes
 * and one byte per 4 KiB page of a big one (so 1 MiB blocks stay cheap). Returns the first
 * mismatching offset when checking, or SIZE_MAX. */
static size_t visit(struct rec *r, int check)
{
    size_t n = r->n, head = n < 512 ? n : 256;
    for (size_t i = 0; i < n;) {
        if (check && r->p[i] != pattern(r->p, n, i))
            return i;
        if (!check)
            r->p[i] = pattern(r->p, n, i);
        if (i + 1 < head || i + 1 >= n - 256 || n < 512)
            i++;
        else if (((i + 4096) & ~(size_t)4095) < n - 256)
            i = (i + 4096) & ~(size_t)4095;
        else
            i = n - 256;
    }
    return SIZE_MAX;
}

static void fill(struct rec *r)
{
    visit(r, 0);
}

static void check_and_free(struct rec *r)
{
    size_t i = visit(r, 1);
    if (i != SIZE_MAX && atomic_fetch_add(&mismatches, 1) < 10)
        fprintf(stderr, "block %p (%zu B): byte %zu is %u, want %u\n", (void *)r->p, r->n, i,
                r->p[i], pattern(r->p, r->n, i));
    atomic_fetch_add_explicit(&blocks_checked, 1, memory_order_relaxed);
    nsp_free(r->p);
    nsp_free(r);
}

static struct rec *make(uint64_t *s)
{
    struct rec *r = nsp_malloc(sizeof *r);
    if (!r)
        return NULL;
    r->n = draw_size(s);
    r->p = nsp_malloc(r->n);
    if (!r->p) {
        nsp_free(r);
        return NULL;
    }
    fill(r);
    return r;
}

static unsigned long ops_per_thread = 200000;
static _Atomic int workers_done;
static _Atomic unsigned long foreign_takes;

/* Foreign takers of the caches, until the workers are done. */
static void *foreign(void *arg)
{
    unsigned kind = (unsigned)(uintptr_t)arg;
    if (kind == 3)
        nsp_free(nsp_malloc(1)); /* the validators say "not initialised" before the first use */
    while (!atomic_load(&workers_done)) {
        nsp_stats_t st;
        nsp_class_stats_t cs;
        unsigned node;
        int64_t ledger, charges;
        switch (kind) {
        case 0:
            nsp_trim();
            nsp_pacer_cycle();
            break;
        case 1:
            nsp_stats_get(&st);
            nsp_stats_get_class_node(0, 3, &cs);
            break;
        case 2: /* its verdict mid-run may see a large object between its two steps */
            (void)nsp_ledger_recount(&node, &ledger, &charges);
            break;
        default: { /* the validators hold at every instant they can take the whole heap */
            char why[512];
            if (nsp_heap_check(why, sizeof why) != 0) {
                fprintf(stderr, "FAIL: heap check during the run: %s\n", why);
                abort();
            }
            break;
        }
        }
        atomic_fetch_add_explicit(&foreign_takes, 1, memory_order_relaxed);
    }
    return NULL;
}

static void *worker(void *arg)
{
    uint64_t seed = 0x9e3779b97f4a7c15ULL * ((uintptr_t)arg + 1);
    struct rec *local[LOCAL] = {0};
    for (unsigned long op = 0; op < ops_per_thread; op++) {
        uint64_t r = rng(&seed);
        unsigned i = (r >> 16) % LOCAL;
        switch (r % 10) {
        case 0: case 1: case 2: case 3: /* replace */
            if (local[i])
                check_and_free(local[i]);
            local[i] = make(&seed);
            break;
        case 4: case 5: case 6: case 7: /* free */
            if (local[i]) {
                check_and_free(local[i]);
                local[i] = NULL;
            }
            break;
        default: { /* hand a block to whoever takes this shared slot next */
            unsigned j = (r >> 32) % SHARED;
            struct rec *got = atomic_exchange(&shared[j], local[i]);
            local[i] = got;
            if (got)
                atomic_fetch_add_explicit(&cross_frees, 1, memory_order_relaxed);
            break;
        }
        }
    }
    for (unsigned i = 0; i < LOCAL; i++)
        if (local[i])
            check_and_free(local[i]);
    return NULL;
}

int main(int argc, char **argv)
{
    unsigned threads = argc > 1 ? (unsigned)atoi(argv[1]) : 8;
    if (argc > 2)
        ops_per_thread = strtoul(argv[2], NULL, 10);
    unsigned nforeign = argc > 3 && strcmp(argv[3], "foreign") == 0 ? 4 : 0;
    pthread_t fth[4];
    for (unsigned f = 0; f < nforeign; f++)
        pthread_create(&fth[f], NULL, foreign, (void *)(uintptr_t)f);
    nsp_free(nsp_malloc(1));
    nsp_stats_t before, after;
    nsp_stats_get(&before);
    for (int round = 0; round < 2; round++) { /* threads of the second round reuse the caches */
        pthread_t th[256];
        for (unsigned t = 0; t < threads && t < 256; t++)
            pthread_create(&th[t], NULL, worker, (void *)(uintptr_t)(t + round * 1000));
        for (unsigned t = 0; t < threads && t < 256; t++)
            pthread_join(th[t], NULL);
    }
    atomic_store(&workers_done, 1);
    for (unsigned f = 0; f < nforeign; f++)
        pthread_join(fth[f], NULL);
    for (unsigned j = 0; j < SHARED; j++) {
        struct rec *r = atomic_exchange(&shared[j], NULL);
        if (r)
            check_and_free(r);
    }
    nsp_trim();
    nsp_stats_get(&after);
    int bad = 0;
    if (mismatches) {
        fprintf(stderr, "FAIL: %lu blocks with wrong contents\n", (unsigned long)mismatches);
        bad = 1;
    }
    if (after.double_frees + after.interior_frees + after.not_owned_frees) {
        fprintf(stderr, "FAIL: the allocator saw bad frees the program never made\n");
        bad = 1;
    }
    unsigned node;
    int64_t ledger, charges;
    if (nsp_ledger_recount(&node, &ledger, &charges) != 0) {
        fprintf(stderr, "FAIL: node %u: heapLive says %lld B, the spans' charges %lld B\n", node,
                (long long)ledger, (long long)charges);
        bad = 1;
    }
    char why[512];
    if (nsp_heap_check(why, sizeof why) != 0) {
        fprintf(stderr, "FAIL: heap check at the end: %s\n", why);
        bad = 1;
    }
    if (nforeign && !atomic_load(&foreign_takes)) {
        fprintf(stderr, "FAIL: the foreign takers never ran\n");
        bad = 1;
    }
    /* everything the workers made was freed: objects in use back to where they were */
    if (after.objects_in_use > before.objects_in_use + 16) {
        fprintf(stderr, "FAIL: %lu objects in use after, %lu before\n",
                (unsigned long)after.objects_in_use, (unsigned long)before.objects_in_use);
        bad = 1;
    }
    printf("%s: %u threads x %lu ops x 2 rounds on %s: %lu blocks checked, %lu handed across "
           "threads, %lu remote frees, %lu spills, %lu foreign takes, rseq %s\n",
           bad ? "FAIL" : "ok", threads, ops_per_thread, nsp_topo_spec(nsp_topology()),
           (unsigned long)blocks_checked, (unsigned long)cross_frees,
           (unsigned long)after.remote_frees, (unsigned long)after.node[0].spills_out,
           (unsigned long)foreign_takes, after.rseq ? "on" : "off");
    printf("%d passed, %d failed\n", !bad, bad);
    return bad;
}
