/*
 * tests/test_span_carve.c — a bin's carve of the cursor's word at once (nsp__span_carve, span.h)
 * against the slot-at-a-time hand-out it replaces (nsp__span_alloc_fast), on spans built here in
 * plain memory (no topology, no cache: the function is the owner's, on fields alone).
 *
 *   - for random bitmaps, cursors, frontiers and rooms, the carve hands out exactly the slots, in
 *     the order, that as many calls of nsp__span_alloc_fast hand out (up to the word's end), and
 *     leaves every field of the span (cursor, cached word, alloc word, count, frontier) as they do;
 *   - a free slot below the frontier whose tag was written over (a write after free) is reported
 *     naming it, kept allocated and counted as an allocation, and is not handed out; the slots
 *     around it are;
 *   - no slot past the span's last one is handed out, whatever the cached word says past it;
 *   - the cursor's cached word stays exact through the owner's frees into the bitmap (a local
 *     free, a sweep) and its hand-outs: no free slot below the cursor, covered never raised by a
 *     free.
 */
#define _GNU_SOURCE
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "host/magazine.h"
#include "host/runtime.h"
#include "host/span.h"
#include "check_main.h"

#define ELEM 64u
#define MAXN 256u

static _Alignas(64) unsigned char mem[2][MAXN * ELEM];
static uint64_t alloc_bits[2][MAXN / 64];
static _Atomic uint64_t freed_bits[2][MAXN / 64];

/* Span k over mem[k]: nelems slots, alloc bitmap from `alloc`, the cursor at fi with its word
 * cached as nsp__span_next_free leaves it, every free slot below `front` tagged. */
static struct nsp_span *build(unsigned k, uint32_t nelems, const uint64_t *alloc, uint32_t fi,
                              uint16_t front)
{
    static struct nsp_span spans[2];
    struct nsp_span *s = &spans[k];
    memset(s, 0, sizeof *s);
    s->base = (uintptr_t)mem[k];
    s->elemsize = ELEM;
    s->nelems = nelems;
    s->alloc_bits = alloc_bits[k];
    s->freed_bits = freed_bits[k];
    s->frontier = front;
    s->freeindex = fi;
    uint32_t count = 0;
    for (uint32_t w = 0; w < MAXN / 64; w++) {
        alloc_bits[k][w] = alloc[w];
        count += (uint32_t)__builtin_popcountll(alloc[w]);
    }
    s->alloc_count = count;
    uint64_t avail = ~alloc[fi >> 6] & (~0ULL << (fi & 63));
    if ((fi >> 6) == (nelems - 1) / 64 && (nelems & 63))
        avail &= (1ULL << (nelems & 63)) - 1;
    s->alloc_cache = avail >> (fi & 63);
    memset(mem[k], 0x5a, sizeof mem[k]);
    for (uint32_t i = 0; i < front; i++)
        if (!(alloc[i >> 6] >> (i & 63) & 1)) {
            void *p = mem[k] + (size_t)i * ELEM;
            *(uint64_t *)p = nsp__magazine_tag(p, 3);
        }
    return s;
}

static void same_fields(const struct nsp_span *a, const struct nsp_span *b)
{
    ck_assert_uint_eq(a->alloc_cache, b->alloc_cache);
    ck_assert_uint_eq(a->freeindex, b->freeindex);
    ck_assert_uint_eq(a->alloc_count, b->alloc_count);
    ck_assert_uint_eq(a->frontier, b->frontier);
    ck_assert_uint_eq(a->nmalloc, b->nmalloc);
    for (uint32_t w = 0; w < MAXN / 64; w++)
        ck_assert_uint_eq(a->alloc_bits[w], b->alloc_bits[w]);
}

START_TEST(a_carve_hands_out_what_the_slot_at_a_time_path_does)
{
    srand(11);
    for (int round = 0; round < 4000; round++) {
        uint32_t nelems = 65 + (uint32_t)rand() % (MAXN - 65);
        uint64_t alloc[MAXN / 64] = {0};
        for (uint32_t w = 0; w < MAXN / 64; w++)
            alloc[w] = ((uint64_t)rand() << 33 ^ (uint64_t)rand() << 11 ^ (uint64_t)rand()) &
                       ((uint64_t)rand() << 40 | (uint64_t)rand());
        uint32_t fi = (uint32_t)rand() % nelems;
        uint16_t front = (uint16_t)((uint32_t)rand() % (nelems + 1));
        uint32_t room = 1 + (uint32_t)rand() % 70;
        struct nsp_span *a = build(0, nelems, alloc, fi, front);
        struct nsp_span *b = build(1, nelems, alloc, fi, front);
        uintptr_t got[64];
        uint32_t n = nsp__span_carve(a, room, got);
        uint32_t m = 0;
        void *p;
        while (m < room && (p = nsp__span_alloc_fast(b)) != NULL) {
            ck_assert_uint_lt(m, n);
            ck_assert_uint_eq(got[m] - a->base, (uintptr_t)p - b->base);
            m++;
        }
        ck_assert_uint_eq(n, m);
        same_fields(a, b);
    }
}
END_TEST

START_TEST(a_written_free_slot_is_reported_kept_and_not_handed_out)
{
    nsp__on_error = NSP_ON_ERROR_WARN;
    uint64_t alloc[MAXN / 64] = {0x0fULL, 0, 0, 0}; /* slots 0..3 live, 4.. free */
    struct nsp_span *s = build(0, 128, alloc, 4, 40); /* 4..39 handed out before, tagged */
    unsigned char *bad = mem[0] + 6 * ELEM;
    memset(bad, 0, 8); /* the program wrote slot 6 after freeing it */
    uint64_t before = atomic_load(&nsp__errors[NSP_ERR_WRITE_AFTER_FREE]);
    uintptr_t got[64];
    uint32_t n = nsp__span_carve(s, 5, got); /* slots 4..8: 6 is kept back */
    ck_assert_uint_eq(atomic_load(&nsp__errors[NSP_ERR_WRITE_AFTER_FREE]), before + 1);
    ck_assert_uint_eq(n, 4);
    uintptr_t want[] = {4, 5, 7, 8};
    for (unsigned i = 0; i < 4; i++)
        ck_assert_uint_eq(got[i], s->base + want[i] * ELEM);
    ck_assert_uint_eq(s->alloc_bits[0], 0x1ffULL); /* 6 stays allocated: never handed out again */
    ck_assert_uint_eq(s->alloc_count, 9);
    ck_assert_uint_eq(s->nmalloc, 1); /* counted as an allocation, as nsp__span_untagged does */
    ck_assert_uint_eq(s->freeindex, 9);
}
END_TEST

/* The cursor's invariants (types.h): every slot below freeindex allocated, and a loaded cached
 * word (not 0, or 0 with the cursor inside its word: used up) holding exactly the free slots of
 * the cursor's word from the cursor. */
static void cursor_exact(const struct nsp_span *s, const char *after, int round, int step)
{
    uint32_t fi = s->freeindex;
    for (uint32_t i = 0; i < fi && i < s->nelems; i++)
        ck_assert_msg(s->alloc_bits[i >> 6] >> (i & 63) & 1,
                      "round %d step %d, after %s: slot %u below the cursor (%u) is free", round,
                      step, after, i, fi);
    if (fi < s->nelems && (s->alloc_cache || (fi & 63))) {
        uint64_t avail = ~s->alloc_bits[fi >> 6] & (~0ULL << (fi & 63));
        if ((fi >> 6) == (s->nelems - 1) / 64 && (s->nelems & 63))
            avail &= (1ULL << (s->nelems & 63)) - 1;
        ck_assert_msg(s->alloc_cache == avail >> (fi & 63),
                      "round %d step %d, after %s: the cursor's cached word %#llx, its word's free "
                      "slots from the cursor (%u) %#llx", round, step, after,
                      (unsigned long long)s->alloc_cache, fi,
                      (unsigned long long)(avail >> (fi & 63)));
    }
}

/* The ledger's covered slots (ledger.h: allocated, and the cached word's free ones). */
static uint32_t covered(const struct nsp_span *s)
{
    return s->alloc_count + (uint32_t)__builtin_popcountll(s->alloc_cache);
}

/* Every way a slot is freed into the bitmap by its owner keeps the cursor's word exact: the
 * locked local free (nsp__span_free_local) and the sweep of remote frees (nsp__span_sweep: freed
 * bits, as a magazine's flush or a direct remote free sets them); a bin's fold (cache.c) uses the
 * same step (nsp__span_cursor_add). Before, a sweep or a fold that freed slots of the cursor's word
 * past the cursor left them out of its cached word: the hand-outs after it stepped over them (free
 * slots below the cursor), and a later move of the cursor down into that word loaded them at
 * once, raising the covered slots with no hand-out (after a foreign take's fold: the charge short
 * of them, as nsp_heap_check found in a fork child). So, for random spans and cursors: after each
 * free the invariants hold and covered did not rise; after each hand-out the invariants hold. */
START_TEST(the_cursor_s_word_stays_exact)
{
    nsp__on_error = NSP_ON_ERROR_WARN;
    srand(7);
    for (int round = 0; round < 3000; round++) {
        uint32_t nelems = 65 + (uint32_t)rand() % (MAXN - 65);
        uint64_t alloc[MAXN / 64] = {0};
        for (uint32_t w = 0; w < MAXN / 64; w++)
            alloc[w] = ~(((uint64_t)rand() << 33 ^ (uint64_t)rand() << 11 ^ (uint64_t)rand()) &
                         ((uint64_t)rand() << 40 | (uint64_t)rand()) &
                         ((uint64_t)rand() << 29 ^ (uint64_t)rand()));
        alloc[(nelems - 1) / 64] &= (nelems & 63) ? (1ULL << (nelems & 63)) - 1 : ~0ULL;
        for (uint32_t w = (nelems - 1) / 64 + 1; w < MAXN / 64; w++)
            alloc[w] = 0;
        /* a cursor with every slot below it allocated: the lowest free slot, or past it */
        uint32_t fi = 0;
        while (fi < nelems && (alloc[fi >> 6] >> (fi & 63) & 1))
            fi++;
        struct nsp_span *s = build(0, nelems, alloc, fi, (uint16_t)nelems);
        for (int step = 0; step < 24; step++) {
            uint32_t c0 = covered(s);
            int op = rand() % 3;
            if (op == 0) { /* remote frees of live slots, mostly in the cursor's word, swept */
                uint32_t w0 = (s->freeindex < nelems ? s->freeindex : nelems - 1) >> 6;
                for (int k = 0; k < 12; k++) {
                    uint32_t i = rand() % 4 ? w0 * 64 + (uint32_t)rand() % 64
                                            : (uint32_t)rand() % nelems;
                    if (i >= nelems || !(s->alloc_bits[i >> 6] >> (i & 63) & 1) ||
                        (atomic_load(&s->freed_bits[i >> 6]) >> (i & 63) & 1))
                        continue;
                    nsp__span_tag_free(mem[0] + (size_t)i * ELEM); /* the freer's tag */
                    atomic_fetch_or(&s->freed_bits[i >> 6], 1ULL << (i & 63));
                }
                atomic_store(&s->dirty, 1);
                uint32_t doubles;
                uintptr_t first;
                nsp__span_sweep(s, &doubles, &first);
                ck_assert_uint_eq(doubles, 0);
                cursor_exact(s, "a sweep", round, step);
                ck_assert_msg(covered(s) <= c0, "round %d step %d: a sweep raised covered %u -> %u",
                              round, step, c0, covered(s));
            } else if (op == 1) { /* a local free of a live slot */
                uint32_t i = (uint32_t)rand() % nelems;
                if (!(s->alloc_bits[i >> 6] >> (i & 63) & 1))
                    continue;
                ck_assert_int_eq(nsp__span_free_local(s, i), 0);
                cursor_exact(s, "a local free", round, step);
                ck_assert_msg(covered(s) <= c0,
                              "round %d step %d: a local free raised covered %u -> %u", round,
                              step, c0, covered(s));
            } else { /* a hand-out, as the locked path and the slow path make them */
                void *p = nsp__span_alloc_fast(s);
                if (!p)
                    p = nsp__span_next_free(s);
                cursor_exact(s, "a hand-out", round, step);
            }
        }
    }
}
END_TEST

START_TEST(no_slot_past_the_span_end)
{
    uint64_t alloc[MAXN / 64] = {0};
    struct nsp_span *s = build(0, 70, alloc, 64, 0);
    s->alloc_cache = ~0ULL; /* whatever the cached word says past slot 69 */
    uintptr_t got[64];
    uint32_t n = nsp__span_carve(s, 64, got);
    ck_assert_uint_eq(n, 6);
    ck_assert_uint_eq(got[5], s->base + 69 * ELEM);
    ck_assert_uint_eq(s->freeindex, 70);
    ck_assert_uint_eq(s->frontier, 70);
    ck_assert_uint_eq(nsp__span_carve(s, 64, got), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("span_carve");
    TCase *tc = tcase_create("carve");
    /* a bound for a hang, not Check's 4 s default: cases with threads on other cpus ran
     * past it beside a loaded ctest -j2 (test_bins' remote free, in its pthread_join) */
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, a_carve_hands_out_what_the_slot_at_a_time_path_does);
    tcase_add_test(tc, a_written_free_slot_is_reported_kept_and_not_handed_out);
    tcase_add_test(tc, no_slot_past_the_span_end);
    tcase_add_test(tc, the_cursor_s_word_stays_exact);
    suite_add_tcase(s, tc);
    return nsp_run_suite(s);
}
