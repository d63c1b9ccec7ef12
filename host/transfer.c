/*
 * host/transfer.c — the central's lock-free front (see transfer.h for what it owns and why a
 * slot's exchange needs no ABA guard).
 */
#include "transfer.h"

#include "os.h"
#include "pageheap.h"
#include "runtime.h"
#include "sizeclass.h"
#include "span.h"
#include "topology/topology.h"

uint64_t nsp__transfer_key;

void nsp__transfer_init(void)
{
    /* top bit set: a pointer or a small integer never decodes to an address (transfer.h) */
    nsp__transfer_key = nsp__os_random() | (1ULL << 63);
}

unsigned nsp__transfer_batch(unsigned cls)
{
    unsigned n = NSP_TRANSFER_BATCH_BYTES / nsp__classes[cls].size;
    return n < NSP_TRANSFER_BATCH_MIN ? NSP_TRANSFER_BATCH_MIN
         : n > NSP_TRANSFER_BATCH_MAX ? NSP_TRANSFER_BATCH_MAX
                                      : n;
}

/* Whether link value v (decoded) may be followed: the end, or an object of class cls. */
static int link_ok(uintptr_t v, unsigned cls)
{
    if (!v)
        return 1;
    const struct nsp_span *s = nsp__span_of((const void *)v);
    return s && s->sizeclass == cls && nsp__span_index(s, v) != UINT32_MAX;
}

/* p's next object; *ok = 0 (reported) when p's link was overwritten while it waited. */
static uintptr_t next_of(uintptr_t p, unsigned cls, int *ok)
{
    uintptr_t v = (uintptr_t)(*(const uint64_t *)p ^ nsp__transfer_key);
    *ok = link_ok(v, cls);
    if (__builtin_expect(!*ok, 0)) {
        /* overwritten while it waited: a write after free, or a second free that pushed it into
         * a bin (whose link it now holds): what follows is lost, not aliased */
        nsp__report_error(NSP_ERR_FREE_LIST, "malloc", (void *)p);
        return 0;
    }
    return v;
}

uintptr_t nsp__transfer_next(uintptr_t p, unsigned cls)
{
    int ok;
    return next_of(p, cls, &ok);
}

int nsp__transfer_follow(uintptr_t p, unsigned cls, uintptr_t *next)
{
    int ok;
    *next = next_of(p, cls, &ok);
    return ok ? 0 : -1;
}

/* The slot a thread tries first: its cpu's, so that threads of different cpus take and put on
 * different slots (one line still, but rarely the same word's exchange twice at once). */
static unsigned first_slot(void)
{
    return (unsigned)nsp__cpu_now() % NSP_TRANSFER_SLOTS;
}

/* Puts chain `first` into an empty slot, from slot i0 on: 0, or -1 when every slot is full. */
static int put_chain(struct nsp_transfer *t, uintptr_t first, unsigned i0)
{
    for (unsigned j = 0; j < NSP_TRANSFER_SLOTS; j++) {
        unsigned i = (i0 + j) % NSP_TRANSFER_SLOTS;
        uintptr_t zero = 0;
        if (atomic_load_explicit(&t->slot[i].v, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_strong_explicit(&t->slot[i].v, &zero, first,
                                                    memory_order_release, memory_order_relaxed))
            return 0;
    }
    return -1;
}

void *nsp__transfer_take(struct nsp_transfer *t, unsigned cls, uintptr_t *spill)
{
    *spill = 0;
    unsigned i0 = first_slot();
    for (unsigned j = 0; j < NSP_TRANSFER_SLOTS; j++) {
        unsigned i = (i0 + j) % NSP_TRANSFER_SLOTS;
        if (!atomic_load_explicit(&t->slot[i].v, memory_order_relaxed))
            continue;
        /* acquire: the links were written by the putter before its release */
        uintptr_t p = atomic_exchange_explicit(&t->slot[i].v, 0, memory_order_acquire);
        if (!p)
            continue;
        int ok;
        uintptr_t rest = next_of(p, cls, &ok);
        if (!ok) /* p itself was written meanwhile: it may be in a bin too, never hand it out */
            continue;
        if (rest && put_chain(t, rest, i) != 0)
            *spill = rest;
        *(uint64_t *)p = 0; /* the program's now: it must not look listed */
        return (void *)p;
    }
    return NULL;
}

int nsp__transfer_put(struct nsp_transfer *t, void **objs, unsigned n)
{
    if (!n)
        return 0;
    for (unsigned i = 0; i < n; i++)
        *(uint64_t *)objs[i] = (uint64_t)(i + 1 < n ? (uintptr_t)objs[i + 1] : 0) ^
                               nsp__transfer_key;
    return put_chain(t, (uintptr_t)objs[0], first_slot());
}

uintptr_t nsp__transfer_take_all(struct nsp_transfer *t, unsigned cls)
{
    uintptr_t all = 0;
    for (unsigned i = 0; i < NSP_TRANSFER_SLOTS; i++) {
        uintptr_t p = atomic_exchange_explicit(&t->slot[i].v, 0, memory_order_acquire);
        if (!p)
            continue;
        /* append what we hold after this chain's last good object: one whose link was
         * overwritten while it waited may be listed in a bin now (transfer.h), so it is neither
         * written nor kept, and what follows it is dropped with it (leaked, not handed out) */
        uintptr_t prev = 0, last = p, next;
        int ok;
        while ((next = next_of(last, cls, &ok))) {
            prev = last;
            last = next;
        }
        if (!ok) {
            if (!prev)
                continue; /* the chain's first object: the whole chain is dropped */
            last = prev;
        }
        *(uint64_t *)last = (uint64_t)all ^ nsp__transfer_key;
        all = p;
    }
    return all;
}

int nsp__transfer_lists(const struct nsp_span *s, const void *p)
{
    uintptr_t v = (uintptr_t)(__atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED) ^
                              nsp__transfer_key);
    if (v >> NSP_ADDR_BITS) /* almost every live object's word: not a link */
        return 0;
    return v == 0 || link_ok(v, s->sizeclass);
}
