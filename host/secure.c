/*
 * host/secure.c — the hardened mode's slot operations (see secure.h for what it adds and costs).
 *
 * Owns: the mode flag, the process's canary key, and the per-thread generator that picks slots.
 * Canary of the object at address a: nsp__secure_key ^ a (so one leaked canary tells nothing of
 * another). A freed slot is poison throughout its poisoned ranges (secure.h: the whole slot up to
 * NSP_SECURE_POISON_WHOLE, else its two edges), canary included: checks read those ranges only.
 */
#include "secure.h"

#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "options.h"
#include "os.h"
#include "runtime.h"
#include "sizeclass.h"
#include "span.h"

int nsp__secure;
uint64_t nsp__secure_key;
static __thread uint64_t rng_state;

void nsp__secure_init(void)
{
    static const char *const off_on[] = {"0", "1"};
    if (nsp__option_choice(NSP_OPT_SECURE, off_on, 2) == 0) /* refuses others, naming them */
        return;
    nsp__secure_key = nsp__os_random() | 1;
    nsp__sizeclass_lookup(NSP_SECURE_CANARY);
    nsp__secure = 1;
}

static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    if (!x) /* a thread's first draw: seeded from the key and the thread's own address */
        x = nsp__secure_key ^ ((uintptr_t)&rng_state * 0x9e3779b97f4a7c15ULL);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x ? x : 1;
}

static uint64_t canary_of(uintptr_t a)
{
    return nsp__secure_key ^ a;
}

static uint64_t *canary_at(const struct nsp_span *s, uintptr_t a)
{
    return (uint64_t *)(a + s->elemsize - NSP_SECURE_CANARY);
}

/* Two words at once: GCC and Clang's vector extension, SSE2 or NEON, baseline on both. */
typedef uint64_t nsp__v2 __attribute__((vector_size(16)));

/* Whether the n words at w all hold poison. No branch
 * per word: 16-byte loads, four per 64-byte line, OR-ed together, so that a cold slot's lines are
 * requested together rather than one compare at a time. */
static int poison_intact(const uint64_t *w, uint32_t n)
{
    const nsp__v2 poison = {NSP_SECURE_POISON, NSP_SECURE_POISON};
    nsp__v2 acc = {0, 0}, x, y, z, t;
    uint32_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&x, w + i, 16), memcpy(&y, w + i + 2, 16);
        memcpy(&z, w + i + 4, 16), memcpy(&t, w + i + 6, 16);
        acc |= (x ^ poison) | (y ^ poison) | (z ^ poison) | (t ^ poison);
    }
    for (; i + 2 <= n; i += 2) {
        memcpy(&x, w + i, 16);
        acc |= x ^ poison;
    }
    if (i < n) /* an 8-byte slot (class 1, which the n + 8 lookup never picks) */
        acc[0] |= w[i] ^ NSP_SECURE_POISON;
    return (acc[0] | acc[1]) == 0;
}

/* The poisoned ranges of a slot of `size` bytes at a (secure.h): the whole slot up to
 * NSP_SECURE_POISON_WHOLE, else its first and last NSP_SECURE_POISON_EDGE bytes. */
static int slot_poison_intact(uintptr_t a, uint32_t size)
{
    if (size <= NSP_SECURE_POISON_WHOLE)
        return poison_intact((const uint64_t *)a, size / 8);
    return poison_intact((const uint64_t *)a, NSP_SECURE_POISON_EDGE / 8) &&
           poison_intact((const uint64_t *)(a + size - NSP_SECURE_POISON_EDGE),
                         NSP_SECURE_POISON_EDGE / 8);
}

static void slot_poison(uintptr_t a, uint32_t size)
{
    if (size <= NSP_SECURE_POISON_WHOLE) {
        memset((void *)a, 0xdf, size);
        return;
    }
    memset((void *)a, 0xdf, NSP_SECURE_POISON_EDGE);
    memset((void *)(a + size - NSP_SECURE_POISON_EDGE), 0xdf, NSP_SECURE_POISON_EDGE);
}

void nsp__secure_init_span(struct nsp_span *s)
{
    if (s->elemsize <= NSP_SECURE_POISON_WHOLE) { /* every byte poisoned: one pass */
        memset((void *)s->base, 0xdf, (size_t)s->nelems * s->elemsize);
        return;
    }
    /* only the edges: a fresh span's middle pages stay untouched (no fault, no RSS) */
    for (uint32_t i = 0; i < s->nelems; i++)
        slot_poison(s->base + (uintptr_t)i * s->elemsize, s->elemsize);
}

void *nsp__secure_next_free(struct nsp_span *s)
{
    s->freeindex = NSP_SECURE_NO_CURSOR;
    s->alloc_cache = 0;
    if (s->alloc_count >= s->nelems)
        return NULL;
    uint32_t nw = nsp__span_nwords(s);
    uint64_t r = rnd();
    uint32_t w0 = (uint32_t)(((r >> 32) * nw) >> 32); /* a random word, without a divide */
    for (uint32_t i = 0; i < nw; i++) {
        uint32_t w = w0 + i < nw ? w0 + i : w0 + i - nw;
        uint64_t avail = ~s->alloc_bits[w];
        if (w == nw - 1 && (s->nelems & 63))
            avail &= (1ULL << (s->nelems & 63)) - 1;
        if (!avail)
            continue;
        /* the first free slot at or after a random bit, cyclically: O(1) */
        unsigned from = (unsigned)r & 63;
        uint64_t rot = from ? (avail >> from) | (avail << (64 - from)) : avail;
        unsigned bit = ((unsigned)__builtin_ctzll(rot) + from) & 63;
        uint32_t idx = w * 64 + bit;
        nsp__span_set_alloc_word(s, w, s->alloc_bits[w] | 1ULL << bit);
        s->alloc_count++;
        uintptr_t a = s->base + (uintptr_t)idx * s->elemsize;
        /* reported by the object it breaks; the slot is still handed out */
        if (!slot_poison_intact(a, s->elemsize))
            nsp__report_error(NSP_ERR_WRITE_AFTER_FREE, "malloc", (void *)a);
        if (nsp__secure_has_canary(s->sizeclass))
            *canary_at(s, a) = canary_of(a);
        return (void *)a;
    }
    return NULL;
}

void nsp__secure_free(struct nsp_span *s, uint32_t idx, void *p)
{
    if (!nsp__span_slot_live(s, idx))
        return;
    uintptr_t a = (uintptr_t)p;
    if (nsp__secure_has_canary(s->sizeclass) && *canary_at(s, a) != canary_of(a))
        nsp__report_error(NSP_ERR_CANARY, "free", p);
    slot_poison(a, s->elemsize);
}

void nsp__secure_guard(struct nsp_span *s, int on)
{
    /* a refusal (the process's limit of mappings) leaves the object without its guard: the
     * guard is a detector, and failing the allocation for it would be worse */
    void *page = (void *)(s->base + ((size_t)s->npages << NSP_PAGE_SHIFT) - NSP_PAGE_SIZE);
    (void)mprotect(page, NSP_PAGE_SIZE, on ? PROT_NONE : PROT_READ | PROT_WRITE);
}

uint32_t nsp__secure_usable(unsigned cls, uint32_t elemsize)
{
    return nsp__secure && nsp__secure_has_canary(cls) ? elemsize - NSP_SECURE_CANARY : elemsize;
}
