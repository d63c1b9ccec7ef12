/* tests/test_xfree_stress.c — a stress of the per-span remote-free list (host/span.h,
 * nsp__span_xfree): producers allocate and fill objects of classes whose spans have lists,
 * consumers (on the other cpu, as the scheduler puts them) check each object's contents and free
 * it (the list's push), while a foreign thread runs cycles, trims and stats (and, from the
 * environment, NSP_IDLE_RELEASE_MS an idle release and NSP_DEBUG the validators). A wrong
 * content is an object handed out twice or written while listed: it aborts with the object's
 * address. Calls numaspan by its nsp_* names, so that it runs beside a
 * sanitizer's malloc as tests/test_host_stress.c does.
 * The ring between them is short (16), so that most objects are freed while their span is still
 * the one their producer's cache holds: the list's case. No double frees here: in a concurrent
 * run any second free may free an object handed out again in between (the list's doubles are
 * test_bin_free's deterministic cases). A TSan build has no bins, so no list: run it under ASan.
 * usage: test_xfree_stress PRODUCERS CONSUMERS OBJECTS_PER_PRODUCER */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "numaspan.h"

#define RING 16
struct ring {
    pthread_mutex_t mu;
    unsigned head, tail;
    void *slot[RING];
};
static struct ring *rings;
static unsigned nprod, ncons;
static unsigned long per;
static atomic_uint producers_left;
static atomic_int stop;
static const size_t sizes[] = {16, 24, 48, 112, 256, 1000, 3000};

static uint64_t pattern(const void *p, size_t i)
{
    return (uintptr_t)p * 0x9e3779b97f4a7c15ULL + i;
}

static void fill(uint64_t *o, size_t sz)
{
    o[0] = sz;
    for (size_t i = 1; i < sz / 8; i++)
        o[i] = pattern(o, i);
}

static void check(const uint64_t *o)
{
    size_t sz = o[0];
    int ok = 0;
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++)
        ok |= sz == sizes[k];
    for (size_t i = 1; ok && i < sz / 8; i++)
        ok = o[i] == pattern(o, i);
    if (!ok) {
        fprintf(stderr,
                "test_xfree_stress: object %p: contents wrong (handed out twice, or written "
                "while free)\n",
                (const void *)o);
        abort();
    }
}

static int put(struct ring *r, void *p)
{
    pthread_mutex_lock(&r->mu);
    int ok = r->head - r->tail < RING;
    if (ok)
        r->slot[r->head++ % RING] = p;
    pthread_mutex_unlock(&r->mu);
    return ok;
}

static void *get(struct ring *r)
{
    void *p = NULL;
    pthread_mutex_lock(&r->mu);
    if (r->head != r->tail)
        p = r->slot[r->tail++ % RING];
    pthread_mutex_unlock(&r->mu);
    return p;
}

static void *producer(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    uint64_t x = id * 2654435761u + 1;
    void *keep[64] = {0};
    for (unsigned long n = 0; n < per; n++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size_t sz = sizes[x % (sizeof sizes / sizeof *sizes)];
        uint64_t *o = nsp_malloc(sz);
        if (!o)
            abort();
        fill(o, sz);
        if ((x >> 8) % 8 == 0) { /* some stay here a while, freed locally */
            unsigned k = (x >> 16) % 64;
            if (keep[k]) {
                check(keep[k]);
                nsp_free(keep[k]);
            }
            keep[k] = o;
            continue;
        }
        struct ring *r = &rings[(id + n) % ncons];
        while (!put(r, o))
            sched_yield();
    }
    for (unsigned k = 0; k < 64; k++)
        if (keep[k]) {
            check(keep[k]);
            nsp_free(keep[k]);
        }
    atomic_fetch_sub(&producers_left, 1);
    return NULL;
}

static void *consumer(void *arg)
{
    struct ring *r = &rings[(uintptr_t)arg];
    for (;;) {
        void *p = get(r);
        if (!p) {
            if (!atomic_load(&producers_left) && !(p = get(r)))
                return NULL;
            if (!p) {
                sched_yield();
                continue;
            }
        }
        check(p);
        nsp_free(p);
    }
}

static void *foreign(void *arg)
{
    (void)arg;
    for (unsigned i = 0; !atomic_load(&stop); i++) {
        nsp_stats_t st;
        switch (i % 3) {
        case 0: nsp_pacer_cycle(); break;
        case 1: nsp_trim(); break;
        default: nsp_stats_get(&st); break;
        }
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    nprod = argc > 1 ? (unsigned)atoi(argv[1]) : 4;
    ncons = argc > 2 ? (unsigned)atoi(argv[2]) : 4;
    per = argc > 3 ? strtoul(argv[3], NULL, 10) : 200000;
    rings = calloc(ncons, sizeof *rings);
    for (unsigned i = 0; i < ncons; i++)
        pthread_mutex_init(&rings[i].mu, NULL);
    atomic_store(&producers_left, nprod);
    if (!nprod || !ncons || nprod + ncons > 256) {
        fprintf(stderr, "usage: test_xfree_stress PRODUCERS CONSUMERS OBJECTS (at most 256 "
                        "threads)\n");
        return 2;
    }
    pthread_t t[256], f;
    pthread_create(&f, NULL, foreign, NULL);
    for (unsigned i = 0; i < ncons; i++)
        pthread_create(&t[i], NULL, consumer, (void *)(uintptr_t)i);
    for (unsigned i = 0; i < nprod; i++)
        pthread_create(&t[ncons + i], NULL, producer, (void *)(uintptr_t)i);
    for (unsigned i = 0; i < ncons + nprod; i++)
        pthread_join(t[i], NULL);
    atomic_store(&stop, 1);
    pthread_join(f, NULL);
    nsp_pacer_cycle();
    nsp_stats_t st;
    nsp_stats_get(&st);
    printf("test_xfree_stress: %u producers, %u consumers, %lu objects each: ok\n", nprod, ncons,
           per);
    free(rings);
    return 0;
}
