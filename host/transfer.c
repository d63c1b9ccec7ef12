/*
 * host/transfer.c — the central's lock-free front (see transfer.h for what it owns and why a
 * slot's exchange needs no ABA guard).
 */
#include "transfer.h"

#include "magazine.h"
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

/* The link word of object p in a chain: its second (the first holds the transfer's tag). */
static inline uint64_t *link_of(uintptr_t p)
{
    return (uint64_t *)p + 1;
}

/* Writes p's tag and its link to next: p waits in a chain from now on. */
static inline void list(uintptr_t p, uintptr_t next)
{
    *(uint64_t *)p = nsp__magazine_tag((const void *)p, NSP_MAG_TRANSFER);
    *link_of(p) = (uint64_t)next ^ nsp__transfer_key;
}

/* Whether p's first word is still the transfer's tag (transfer.h: a bin's push, the program or
 * anything that wrote p while it waited has changed it). */
static inline int tagged(uintptr_t p)
{
    return nsp__magazine_tagged((const void *)p) == NSP_MAG_TRANSFER;
}

/* p's next object, quietly; *ok = 0 when p's tag or link was overwritten while it waited. */
static uintptr_t peek_next(uintptr_t p, unsigned cls, int *ok)
{
    uintptr_t v = (uintptr_t)(*link_of(p) ^ nsp__transfer_key);
    *ok = tagged(p) && link_ok(v, cls);
    return *ok ? v : 0;
}

/* p's next object; *ok = 0 (reported) when p's tag or link was overwritten while it waited. */
static uintptr_t next_of(uintptr_t p, unsigned cls, int *ok)
{
    uintptr_t v = peek_next(p, cls, ok);
    if (__builtin_expect(!*ok, 0)) {
        /* overwritten while it waited: a write after free (a second free is refused, transfer.h):
         * what follows is lost, not aliased */
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
        /* the program's now: it must not look listed (its tag), nor keep a link */
        *(uint64_t *)p = 0;
        *link_of(p) = 0;
        return (void *)p;
    }
    return NULL;
}

int nsp__transfer_put(struct nsp_transfer *t, void **objs, unsigned n)
{
    if (!n)
        return 0;
    for (unsigned i = 0; i < n; i++)
        list((uintptr_t)objs[i], i + 1 < n ? (uintptr_t)objs[i + 1] : 0);
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
        list(last, all);
        all = p;
    }
    return all;
}

int nsp__transfer_lists(const void *p)
{
    return tagged((uintptr_t)p);
}

/* Walks chain `first`, held by the caller, as nsp__transfer_take_all does: an object written
 * while it waited is reported and dropped with what follows it (leaked, never written nor handed
 * out). Returns the chain's first object (0 when that one was written) and its last in *last;
 * *found = 1 when p is one of those kept. */
static uintptr_t own_chain(uintptr_t first, unsigned cls, const void *p, uintptr_t *last,
                           int *found)
{
    uintptr_t prev = 0, q = first, next;
    int ok;
    *found = 0;
    for (; (next = next_of(q, cls, &ok)); prev = q, q = next)
        *found |= q == (uintptr_t)p;
    if (ok) {
        *found |= q == (uintptr_t)p;
    } else {
        if (!prev)
            return 0;
        list(prev, 0);
        q = prev;
    }
    *last = q;
    return first;
}

/* Puts chain `first` (held by the caller, `last` its last object) back into t from slot i on: a
 * chain put meanwhile into every slot is taken out and appended to ours, so the put lands. */
static void put_back(struct nsp_transfer *t, uintptr_t first, uintptr_t last, unsigned cls,
                     unsigned i)
{
    while (put_chain(t, first, i) != 0) {
        uintptr_t more = atomic_exchange_explicit(&t->slot[i].v, 0, memory_order_acquire), end;
        int found;
        if (more && (more = own_chain(more, cls, NULL, &end, &found))) {
            list(last, more);
            last = end;
        }
    }
}

int nsp__transfer_holds(struct nsp_transfer *t, unsigned cls, const void *p)
{
    for (unsigned i = 0; i < NSP_TRANSFER_SLOTS; i++) {
        if (!atomic_load_explicit(&t->slot[i].v, memory_order_relaxed))
            continue;
        /* the chain is ours while we walk it (the exchange): nobody changes a link under us */
        uintptr_t first = atomic_exchange_explicit(&t->slot[i].v, 0, memory_order_acquire), last;
        int found;
        if (!first || !(first = own_chain(first, cls, p, &last, &found)))
            continue;
        put_back(t, first, last, cls, i);
        if (found)
            return 1;
    }
    return 0;
}
