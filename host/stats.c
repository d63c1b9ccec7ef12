/*
 * host/stats.c — the allocator's stats: nsp_stats_get, nsp_stats_print, mallinfo2, NSP_STATS.
 *
 * Owns nothing: it reads the counters the layers keep where their state changes, and takes no
 * lock at all (no cache, no central, no page heap, no ledger lock; no foreign take, no fence), so
 * a thread stopped anywhere, holding anything, never makes a reading wait (tests/test_no_wait.c).
 * Each field and the counter it comes from:
 *   - objects_in_use (per node and class): the allocated slots of the spans the central owns
 *     (central.h, `objects`) plus those of the spans caches hold (read from the caches' span
 *     tables and bins, nsp__cache_span_counts: a bin's listed objects are free), less the freed
 *     bits not yet swept (span.h, nsp__freed_pending), the objects on the cached spans'
 *     remote-free lists (span.h, nsp__span_xfree_length: a walk of each list, no take) and the
 *     objects waiting in the caches' slabs (slab.h: freed, though their spans count them
 *     allocated; count_slabs); bytes_in_use is that times the size. Why the lists are walked:
 *     a listed object stays allocated from its span's view until its owner sweeps, which an
 *     owner that stops allocating may not do before its idle release; counted as in use, at
 *     the exit of `bench_host run prodcons` 97% of the objects NSP_STATS showed in use were
 *     listed (2772 of 2870 at 8 threads; 122 in use with the walk), and of mixed 92% at 2
 *     threads (1700 of 1838; 29 with the walk). A counter kept by the push would cost the
 *     remote free the atomic add the list saves it; the walk costs a reading one line per
 *     cached span of two pages or more and a load per listed object (a list holds at most its
 *     span's objects). A span the central owns has no list at rest but after a push that raced
 *     its release (its next sweep applies it): that list counts as in use until then;
 *   - spans_partial / spans_full: the central's list lengths; spans_cached: the spans the caches'
 *     tables hold, by the span's node;
 *   - mallocs, refills, releases, sweeps, remote frees swept: the centrals' and caches'
 *     counters (mallocs also the slabs' pops, drained or not: no span or central counts them);
 *     remote frees pending: nsp__freed_pending;
 *   - remote frees: swept, pending (nsp__freed_pending, and the cached spans' lists), and every
 *     free into a slab (waiting, popped or drained: count_slabs);
 *   - local frees: every free counted (the ledger's totals, the cached spans' frees not yet in
 *     them, the slabs' pops not yet drained and objects waiting, the remote frees pending and
 *     listed) less
 *     the large and the remote ones; at rest mallocs - local frees - remote frees = small
 *     objects in use;
 *   - large objects and bytes: the ledger's large counters (nsp__large_allocs/frees and
 *     nsp__large_bytes, huge objects included); pages mapped, free and scavenged: the page heap's;
 *   - cached_bytes, spills, bad frees, list searches (span.h, nsp__xfree_searches), bootstrap and
 *     metadata bytes: counters read once.
 * Consistency: every counter is a naturally aligned 64-bit word written by relaxed atomic
 * stores or read-modify-writes (the page heap's and the centrals' older counters by plain stores
 * under their locks, which do not tear on the 64-bit targets numaspan builds for), read once
 * with a relaxed load: no reading ever sees half a counter. With no thread allocating or freeing
 * every field is exact: check.c's nsp__stats_is_valid walks every span and asserts it
 * (tests/test_stats.c). While threads run, a reading mixes instants: each counter is one its
 * owner stored recently, so sums across them (objects in use, spans by state) are off by the
 * operations in flight during the reading (a span that changes hands while it is read may count
 * in both or neither owner), and a difference that comes out negative reads 0.
 * Nothing on the fast path pays for stats: the bins keep no counter for them.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"
#include "central.h"
#include "ledger.h"
#include "os.h"
#include "options.h"
#include "pageheap.h"
#include "runtime.h"
#include "sizeclass.h"
#include "span.h"

/* An owner's field, read as it may be writing it (see above). */
#define RACY(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

/* The spans caches hold on node n, from the caches' tables (no cache is taken): per class their
 * allocated slots (into cls[k].objects_in_use, less pending frees later), their mallocs not yet
 * flushed into the central's count, and their count; their local frees not yet in the ledger's
 * totals into *frees; the objects on their remote-free lists into listed[k] (span.h: freed,
 * though allocated from the span's view until its owner's sweep). A span read as it changes
 * hands is skipped or counted as the owner left it; one gone from the cache's slot by the end of
 * its reading is dropped (the slot is read again, as nsp__cache_read does). */
__attribute__((no_sanitize("thread"))) static void cached_spans(unsigned n,
                                                                nsp_class_stats_t *cls,
                                                                uint64_t *frees, uint64_t *listed)
{
    for (unsigned i = 0; i < nsp__ncaches; i++) {
        const struct nsp_cache *c = &nsp__caches[i];
        if (!RACY(c->held_bytes))
            continue;
        for (unsigned k = 1; k < NSP_NUM_CLASSES; k++) {
            const struct nsp_span *s = RACY(c->spans[k]);
            if (s == &nsp__empty_span || RACY(s->node) != n ||
                atomic_load_explicit(&s->state, memory_order_acquire) != NSP_SPAN_CACHED ||
                RACY(s->cache) != i)
                continue;
            struct nsp_cached_counts cc = {0};
            nsp__cache_span_counts(s, &cc);
            uint32_t xfree = nsp__span_xfree_length(s, k);
            /* read while s was still c's, or dropped: a span is gone from c's slot before it is
             * let go, and then its central or next owner counts it and its descriptor's words
             * may be another span's (cache.c, span_unspent) */
            atomic_thread_fence(memory_order_acquire);
            if (RACY(c->spans[k]) != s)
                continue;
            cls[k].objects_in_use += cc.slots > 0 ? (uint64_t)cc.slots : 0;
            cls[k].mallocs += cc.mallocs > 0 ? (uint64_t)cc.mallocs : 0;
            *frees += cc.frees > 0 ? (uint64_t)cc.frees : 0;
            listed[k] += xfree;
            cls[k].spans_cached++;
        }
    }
}

/* What waits in the slabs of node n's caches (slab.h), read from their words: per class the
 * objects there into held[k] (freed by the program, though their spans count them allocated:
 * not in use), and their pops into cls[k].mallocs (mallocs no span or central counted; those
 * drained so far too, `popped`). Pops not yet drained, and the objects waiting, are frees the
 * ledger does not have yet either: into *frees. Every free into a slab is a remote free (its
 * cpu's bin does not hold the object's span: before the slabs it went to the magazine), whether
 * it waits, was popped or was drained (then it is a pending or swept one, counted there): the
 * waiting ones and all pops into *remote. So no free changes kind when its slab is popped or
 * drained, and mallocs - local - remote frees stay the objects in use between drains too. */
__attribute__((no_sanitize("thread"))) static void count_slabs(unsigned n, nsp_class_stats_t *cls,
                                                               uint64_t *held, uint64_t *frees,
                                                               uint64_t *remote)
{
    for (unsigned i = 0; i < nsp__ncaches; i++) {
        const struct nsp_cache *c = &nsp__caches[i];
        if (c->node != n || !c->bins_on)
            continue;
        for (unsigned k = 1; k < NSP_NUM_CLASSES; k++) {
            const struct nsp_slab *m = &c->slabs[k];
            if (!nsp__cache_slab_is_set(c, k) || !RACY(m->cap))
                continue; /* not set up (not read: its page stays unmapped) or no slab */
            uint64_t w = RACY(m->word);
            uint64_t pops = (w >> 8) + RACY(m->popped);
            held[k] += w & NSP_SLAB_COUNT;
            cls[k].mallocs += pops;
            *frees += (w >> 8) + (w & NSP_SLAB_COUNT);
            *remote += pops + (w & NSP_SLAB_COUNT);
        }
    }
}

/* Node n's stats from counters; cls is indexed by class. */
__attribute__((no_sanitize("thread"))) static void node_stats(unsigned n, nsp_class_stats_t *cls,
                                                              nsp_node_stats_t *nd,
                                                              uint64_t *direct, uint64_t *frees)
{
    memset(cls, 0, NSP_STATS_MAX_CLASSES * sizeof *cls);
    memset(nd, 0, sizeof *nd);
    const struct nsp_pageheap *h = &nsp__pageheaps[n];
    nd->pages_mapped = RACY(h->pages_mapped);
    nd->pages_free = RACY(h->pages_free);
    nd->pages_scavenged = RACY(h->pages_scavenged);
    uint64_t held[NSP_NUM_CLASSES] = {0}, listed[NSP_NUM_CLASSES] = {0};
    cached_spans(n, cls, frees, listed);
    count_slabs(n, cls, held, frees, &nd->remote_frees);
    uint64_t la = atomic_load_explicit(&nsp__large_allocs[n], memory_order_relaxed);
    uint64_t lf = atomic_load_explicit(&nsp__large_frees[n], memory_order_relaxed);
    int64_t lb = atomic_load_explicit(&nsp__large_bytes[n], memory_order_relaxed);
    nd->large_objects = la > lf ? la - lf : 0;
    nd->large_bytes = lb > 0 ? (uint64_t)lb : 0;
    for (unsigned k = 1; k < NSP_NUM_CLASSES; k++) {
        struct nsp_central *c = nsp__central(n, k);
        nsp_class_stats_t *o = &cls[k];
        int64_t pending = nsp__span_freed_pending(n, k);
        int64_t live = (int64_t)(o->objects_in_use + RACY(c->objects)) - pending -
                       (int64_t)held[k] - (int64_t)listed[k];
        o->size = nsp__classes[k].size;
        o->objects_in_use = live > 0 ? (uint64_t)live : 0;
        o->bytes_in_use = o->objects_in_use * o->size;
        o->spans_partial = RACY(c->npartial);
        o->spans_full = RACY(c->nfull);
        o->refills = RACY(c->refills);
        o->releases = RACY(c->releases);
        uint64_t d = RACY(c->direct_allocs);
        o->mallocs += d + RACY(c->cached_mallocs);
        *direct += d;
        uint64_t unswept = (pending > 0 ? (uint64_t)pending : 0) + listed[k];
        nd->remote_frees += RACY(c->swept_objects) + unswept;
        /* a pending remote free (a freed bit not yet swept, or an object on a cached span's
         * remote-free list) is in no free count until its sweep adds it to the ledger's: counted
         * here once, as it is in remote_frees */
        *frees += unswept;
        nd->sweeps += RACY(c->sweeps);
        nd->spans_cached += o->spans_cached;
        nd->spans_partial += o->spans_partial;
        nd->spans_full += o->spans_full;
        nd->refills += o->refills;
        nd->releases += o->releases;
        nd->objects_in_use += o->objects_in_use;
        nd->bytes_in_use += o->bytes_in_use;
    }
    nd->objects_in_use += nd->large_objects;
    nd->bytes_in_use += nd->large_bytes;
    nd->spills_out = atomic_load_explicit(&nsp__spills_out[n], memory_order_relaxed);
    nd->spills_in = atomic_load_explicit(&nsp__spills_in[n], memory_order_relaxed);
}

int nsp_stats_get_class_node(unsigned node, unsigned cls, nsp_class_stats_t *out)
{
    if (!atomic_load_explicit(&nsp__ready, memory_order_acquire) || node >= nsp__nnodes ||
        cls == 0 || cls >= NSP_NUM_CLASSES) {
        errno = EINVAL;
        return -1;
    }
    nsp_class_stats_t all[NSP_STATS_MAX_CLASSES];
    nsp_node_stats_t nd;
    uint64_t direct = 0, frees = 0;
    node_stats(node, all, &nd, &direct, &frees);
    *out = all[cls];
    return 0;
}

static void stats_read(nsp_stats_t *out);

int nsp_stats_get(nsp_stats_t *out)
{
    memset(out, 0, sizeof *out);
    if (!atomic_load_explicit(&nsp__ready, memory_order_acquire))
        return -1;
    stats_read(out);
    return 0;
}

__attribute__((no_sanitize("thread"))) static void stats_read(nsp_stats_t *out)
{
    out->nnodes = nsp__nnodes;
    out->ncaches = nsp__ncaches;
    out->nclasses = NSP_NUM_CLASSES;
    out->rseq = nsp__rseq_enabled;
    nsp_class_stats_t cls[NSP_STATS_MAX_CLASSES];
    uint64_t frees = 0; /* frees not yet in the ledger's totals: cached spans' local ones, slab
                          * pops not drained and objects waiting there, remote ones pending */
    for (unsigned n = 0; n < nsp__nnodes; n++) {
        nsp_node_stats_t *nd = &out->node[n];
        node_stats(n, cls, nd, &out->central_allocs, &frees);
        for (unsigned k = 1; k < NSP_NUM_CLASSES; k++) {
            nsp_class_stats_t *o = &out->cls[k];
            o->size = nsp__classes[k].size;
            o->objects_in_use += cls[k].objects_in_use;
            o->bytes_in_use += cls[k].bytes_in_use;
            o->spans_cached += cls[k].spans_cached;
            o->spans_partial += cls[k].spans_partial;
            o->spans_full += cls[k].spans_full;
            o->refills += cls[k].refills;
            o->releases += cls[k].releases;
            o->mallocs += cls[k].mallocs;
        }
        out->bytes_in_use += nd->bytes_in_use;
        out->objects_in_use += nd->objects_in_use;
        out->remote_frees += nd->remote_frees;
        out->large_allocs += atomic_load_explicit(&nsp__large_allocs[n], memory_order_relaxed);
        out->large_frees += atomic_load_explicit(&nsp__large_frees[n], memory_order_relaxed);
    }
    for (unsigned n = 0; n < nsp__nnodes; n++)
        frees += atomic_load(&nsp__ledger[n].free_objects);
    for (unsigned i = 0; i < nsp__ncaches; i++) {
        const struct nsp_cache *c = &nsp__caches[i];
        uint64_t swept = RACY(c->swept_objects);
        out->node[c->node].remote_frees += swept;
        out->node[c->node].sweeps += RACY(c->sweeps);
        out->remote_frees += swept;
    }
    for (unsigned k = 1; k < NSP_NUM_CLASSES; k++)
        out->mallocs += out->cls[k].mallocs;
    /* frees applied by their owner: every free counted less the large ones and the remote ones
     * (swept or pending) */
    uint64_t other = out->large_frees + out->remote_frees;
    out->local_frees = frees > other ? frees - other : 0;
    out->cached_bytes = atomic_load_explicit(&nsp__cached_total, memory_order_relaxed);
    out->not_owned_frees = atomic_load(&nsp__errors[NSP_ERR_NOT_OWNED]);
    out->interior_frees = atomic_load(&nsp__errors[NSP_ERR_INTERIOR]);
    out->double_frees = atomic_load(&nsp__errors[NSP_ERR_DOUBLE_FREE]);
    out->list_searches = atomic_load_explicit(&nsp__xfree_searches, memory_order_relaxed);
    out->bootstrap_bytes = nsp__boot_bytes();
    out->metadata_bytes = (uint64_t)atomic_load_explicit(&nsp__os_meta_bytes, memory_order_relaxed);
}

int nsp_size_class(unsigned cls, uint32_t *size, uint32_t *span_pages, uint32_t *nelems)
{
    nsp__sizeclass_init();
    if (cls == 0 || cls >= NSP_NUM_CLASSES)
        return -1;
    *size = nsp__classes[cls].size;
    *span_pages = nsp__classes[cls].npages;
    *nelems = nsp__classes[cls].nelems;
    return 0;
}

/* ---- printing --------------------------------------------------------------------------------- */

#define MiB(x) ((double)(x) / (1024.0 * 1024.0))

static void print_text(FILE *out, const nsp_stats_t *st)
{
    fprintf(out, "numaspan stats: %u nodes, %u caches (%s), topology %s\n", st->nnodes,
            st->ncaches, st->rseq ? "rseq" : "try-lock", nsp_topo_spec(nsp__topo));
    fprintf(out, "  in use: %" PRIu64 " objects, %.2f MiB; cached spans %.2f MiB\n",
            st->objects_in_use, MiB(st->bytes_in_use), MiB(st->cached_bytes));
    fprintf(out, "  mallocs %" PRIu64 " (central direct %" PRIu64 "), local frees %" PRIu64
                 ", remote frees %" PRIu64 ", large %" PRIu64 "/%" PRIu64 "\n",
            st->mallocs, st->central_allocs, st->local_frees, st->remote_frees, st->large_allocs,
            st->large_frees);
    fprintf(out, "  bad frees: not owned %" PRIu64 ", interior %" PRIu64 ", double %" PRIu64
                 "; remote-free list searches %" PRIu64 "; bootstrap %" PRIu64
                 " B; metadata %.2f MiB\n",
            st->not_owned_frees, st->interior_frees, st->double_frees, st->list_searches,
            st->bootstrap_bytes, MiB(st->metadata_bytes));
    fprintf(out, "  %-4s %10s %10s %9s %9s %9s %7s %7s %7s %8s %8s %9s %7s %7s\n", "node",
            "in use MiB", "objects", "mapped", "free pg", "scav pg", "cached", "partial", "full",
            "refills", "releases", "remote fr", "spl out", "spl in");
    for (unsigned n = 0; n < st->nnodes; n++) {
        const nsp_node_stats_t *d = &st->node[n];
        fprintf(out,
                "  %-4u %10.2f %10" PRIu64 " %9" PRIu64 " %9" PRIu64 " %9" PRIu64 " %7" PRIu64
                " %7" PRIu64 " %7" PRIu64 " %8" PRIu64 " %8" PRIu64 " %9" PRIu64 " %7" PRIu64
                " %7" PRIu64 "\n",
                n, MiB(d->bytes_in_use), d->objects_in_use, d->pages_mapped, d->pages_free,
                d->pages_scavenged, d->spans_cached, d->spans_partial, d->spans_full, d->refills,
                d->releases, d->remote_frees, d->spills_out, d->spills_in);
    }
    fprintf(out, "  %-6s %10s %10s %7s %7s %7s %8s %8s %12s\n", "class", "objects", "in use MiB",
            "cached", "partial", "full", "refills", "releases", "mallocs");
    for (unsigned k = 1; k < st->nclasses; k++) {
        const nsp_class_stats_t *c = &st->cls[k];
        if (!c->mallocs && !c->objects_in_use && !c->spans_partial && !c->spans_full)
            continue;
        fprintf(out,
                "  %-6u %10" PRIu64 " %10.3f %7" PRIu64 " %7" PRIu64 " %7" PRIu64 " %8" PRIu64
                " %8" PRIu64 " %12" PRIu64 "\n",
                c->size, c->objects_in_use, MiB(c->bytes_in_use), c->spans_cached,
                c->spans_partial, c->spans_full, c->refills, c->releases, c->mallocs);
    }
    nsp_pacer_device_t dev[NSP_PACER_MAX_DEVICES];
    unsigned ndev = nsp_pacer_devices(dev, NSP_PACER_MAX_DEVICES);
    for (unsigned i = 0; i < ndev; i++)
        fprintf(out,
                "  device node %d (%s): heapLive %.2f MiB of %.2f MiB%s, peak %.2f MiB, %" PRIu64
                " syncs, advice %s\n",
                dev[i].id, dev[i].name, MiB((uint64_t)dev[i].heap_live),
                MiB((uint64_t)dev[i].capacity), dev[i].reconciled ? " (reconciled)" : "",
                MiB((uint64_t)dev[i].peak_live), dev[i].syncs,
                dev[i].advice == NSP_DEVICE_FULL        ? "full"
                : dev[i].advice == NSP_DEVICE_RECONCILE ? "reconcile"
                                                        : "ok");
}

static void print_json(FILE *out, const nsp_stats_t *st)
{
    fprintf(out,
            "{\"nnodes\": %u, \"ncaches\": %u, \"rseq\": %s, \"bytes_in_use\": %" PRIu64
            ", \"objects_in_use\": %" PRIu64 ", \"mallocs\": %" PRIu64
            ", \"central_allocs\": %" PRIu64 ", \"local_frees\": %" PRIu64
            ", \"remote_frees\": %" PRIu64 ", \"large_allocs\": %" PRIu64
            ", \"large_frees\": %" PRIu64 ", \"cached_bytes\": %" PRIu64
            ", \"not_owned_frees\": %" PRIu64 ", \"interior_frees\": %" PRIu64
            ", \"double_frees\": %" PRIu64 ", \"list_searches\": %" PRIu64
            ", \"bootstrap_bytes\": %" PRIu64
            ", \"metadata_bytes\": %" PRIu64 ", \"nodes\": [",
            st->nnodes, st->ncaches, st->rseq ? "true" : "false", st->bytes_in_use,
            st->objects_in_use, st->mallocs, st->central_allocs, st->local_frees,
            st->remote_frees, st->large_allocs, st->large_frees, st->cached_bytes,
            st->not_owned_frees, st->interior_frees, st->double_frees, st->list_searches,
            st->bootstrap_bytes, st->metadata_bytes);
    for (unsigned n = 0; n < st->nnodes; n++) {
        const nsp_node_stats_t *d = &st->node[n];
        fprintf(out,
                "%s{\"node\": %u, \"bytes_in_use\": %" PRIu64 ", \"objects_in_use\": %" PRIu64
                ", \"large_objects\": %" PRIu64 ", \"pages_mapped\": %" PRIu64
                ", \"pages_free\": %" PRIu64 ", \"spans_cached\": %" PRIu64
                ", \"spans_partial\": %" PRIu64 ", \"spans_full\": %" PRIu64
                ", \"refills\": %" PRIu64 ", \"releases\": %" PRIu64
                ", \"remote_frees\": %" PRIu64 ", \"sweeps\": %" PRIu64
                ", \"spills_out\": %" PRIu64 ", \"spills_in\": %" PRIu64 "}",
                n ? ", " : "", n, d->bytes_in_use, d->objects_in_use, d->large_objects,
                d->pages_mapped, d->pages_free, d->spans_cached, d->spans_partial, d->spans_full,
                d->refills, d->releases, d->remote_frees, d->sweeps, d->spills_out, d->spills_in);
    }
    fprintf(out, "], \"classes\": [");
    int first = 1;
    for (unsigned k = 1; k < st->nclasses; k++) {
        const nsp_class_stats_t *c = &st->cls[k];
        if (!c->mallocs && !c->objects_in_use)
            continue;
        fprintf(out,
                "%s{\"size\": %u, \"objects_in_use\": %" PRIu64 ", \"bytes_in_use\": %" PRIu64
                ", \"spans_cached\": %" PRIu64 ", \"spans_partial\": %" PRIu64
                ", \"spans_full\": %" PRIu64 ", \"refills\": %" PRIu64 ", \"releases\": %" PRIu64
                ", \"mallocs\": %" PRIu64 "}",
                first ? "" : ", ", c->size, c->objects_in_use, c->bytes_in_use, c->spans_cached,
                c->spans_partial, c->spans_full, c->refills, c->releases, c->mallocs);
        first = 0;
    }
    fprintf(out, "], \"devices\": [");
    nsp_pacer_device_t dev[NSP_PACER_MAX_DEVICES];
    unsigned ndev = nsp_pacer_devices(dev, NSP_PACER_MAX_DEVICES);
    for (unsigned i = 0; i < ndev; i++) {
        fprintf(out, "%s{\"id\": %d, \"name\": ", i ? ", " : "", dev[i].id);
        nsp__json_str(out, dev[i].name);
        fprintf(out,
                ", \"capacity\": %" PRId64 ", \"heap_live\": %" PRId64 ", \"peak_live\": %" PRId64
                ", \"syncs\": %" PRIu64 ", \"reconciled\": %s, \"advice\": %d}",
                dev[i].capacity, dev[i].heap_live, dev[i].peak_live, dev[i].syncs,
                dev[i].reconciled ? "true" : "false", dev[i].advice);
    }
    fprintf(out, "]}\n");
}

void nsp_stats_print(FILE *out, int json)
{
    nsp_stats_t st;
    if (nsp_stats_get(&st) < 0) {
        fprintf(out, json ? "{}\n" : "numaspan stats: allocator not initialised\n");
        return;
    }
    if (json)
        print_json(out, &st);
    else
        print_text(out, &st);
}

/* NSP_STATS: the stats at exit, on stderr or appended to a file. Programs such as coreutils
 * close stderr in an atexit handler, which runs before this destructor: so stderr is duplicated
 * (close-on-exec) when the allocator starts, and the stats go to the copy. A file that cannot be
 * opened for appending is refused at start, naming it, rather than found out at exit.
 * The block is put together in stats_buf and leaves in one write at fclose: on the file's
 * O_APPEND descriptor one write lands whole, so the blocks of processes that exit together
 * (make -j, a pipeline, all appending to one NSP_STATS file) never interleave. stdio's own
 * buffer (4 KiB) split a block of every class into pieces that did. A block larger than the
 * buffer (not met: about 100 bytes a class and a node) still goes out in pieces. The buffer
 * is in .bss: only the pages the block fills become resident, at exit. */
static int stats_fd = -1;
static char stats_buf[256 * 1024];

/* A value meant as a switch (true, yes, on, off, 2, ...) is not taken for a file name: it would
 * leave a file of that name in the working directory of every process run (and write nothing
 * for "off"). Such a file is still reached by a path with a slash (./on). */
static int stats_looks_like_switch(const char *v)
{
    static const char *const words[] = {"true", "false", "yes", "no", "on", "off", "y", "n"};
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        if (nsp__keyword_is(v, words[i]))
            return 1;
    return v[0] && strspn(v, "0123456789") == strlen(v);
}

void nsp__stats_init(void)
{
    const char *v = nsp__option(NSP_OPT_STATS);
    if (strcmp(v, "0") != 0 && strcmp(v, "1") != 0 && stats_looks_like_switch(v)) {
        char why[160];
        snprintf(why, sizeof why,
                 "expected 0, 1 (on stderr) or a file to append to (a file of this name: ./%.32s)",
                 v);
        nsp__option_reject(NSP_OPT_STATS, why);
    }
    if (strcmp(v, "1") == 0) {
        stats_fd = fcntl(2, F_DUPFD_CLOEXEC, 3);
    } else if (strcmp(v, "0") != 0) {
        int fd = open(v, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0)
            nsp__option_reject(NSP_OPT_STATS, strerror(errno));
        close(fd);
    }
}

__attribute__((destructor)) static void nsp__stats_at_exit(void)
{
    const char *v = nsp__option(NSP_OPT_STATS);
    if (strcmp(v, "0") == 0 || !atomic_load_explicit(&nsp__ready, memory_order_acquire))
        return;
    FILE *out = strcmp(v, "1") == 0 ? (stats_fd >= 0 ? fdopen(stats_fd, "w") : NULL)
                                    : fopen(v, "a");
    if (!out) {
        /* it could be opened at start: say why the stats are missing now */
        fprintf(stderr, "numaspan: NSP_STATS=\"%s\": cannot write the stats at exit: %s\n", v,
                strerror(errno));
        return;
    }
    setvbuf(out, stats_buf, _IOFBF, sizeof stats_buf);
    nsp_stats_print(out, 0);
    fclose(out);
}

__attribute__((visibility("default"))) struct mallinfo2 mallinfo2(void)
{
    struct mallinfo2 mi;
    memset(&mi, 0, sizeof mi);
    nsp_stats_t st;
    if (nsp_stats_get(&st) < 0)
        return mi;
    size_t mapped = 0, free_pages = 0;
    for (unsigned n = 0; n < st.nnodes; n++) {
        mapped += st.node[n].pages_mapped << NSP_PAGE_SHIFT;
        free_pages += st.node[n].pages_free << NSP_PAGE_SHIFT;
    }
    mi.arena = mapped;
    mi.uordblks = st.bytes_in_use;
    mi.fordblks = mapped > st.bytes_in_use ? mapped - st.bytes_in_use : 0;
    mi.fsmblks = st.cached_bytes;
    mi.keepcost = free_pages;
    return mi;
}
