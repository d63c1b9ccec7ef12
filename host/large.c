/*
 * host/large.c — large objects: requests above 32 KiB (NSP_MAX_SMALL) or aligned beyond a page.
 *
 * Owns the life of a large span: one object per span, sizeclass 0, elemsize its whole pages.
 * Large: a page-granular span of the node's page heap (central.h); huge (>= 32 MiB, or more
 * pages than an arena holds): a mapping of its own (pageheap.h). The state word says who has it:
 * LARGE while the program owns the object; the one free that turns LARGE into TAKEN by CAS
 * frees it, so a second free (or a free racing it) sees TAKEN and is reported as a double free.
 * NSP_SECURE: the last page is a guard (secure.h), outside the object, laid at allocation and
 * lifted before the pages go back. Every allocation and free is counted per node
 * (nsp__large_allocs/frees, ledger.h) and charged to the ledger whole.
 */
#include <errno.h>
#include <stdint.h>

#include "alloc.h"
#include "central.h"
#include "ledger.h"
#include "pacer.h"
#include "pageheap.h"
#include "runtime.h"
#include "secure.h"
#include "span.h"

unsigned nsp__current_node(void)
{
    unsigned i = nsp__topo_current_cache(nsp__topo);
    return nsp__topo->cache_node[i];
}

static struct nsp_span *large_span(size_t n, size_t align, unsigned node)
{
    size_t npages = (n + NSP_PAGE_SIZE - 1) >> NSP_PAGE_SHIFT;
    size_t align_pages = align > NSP_PAGE_SIZE ? align >> NSP_PAGE_SHIFT : 1;
    if (n >= NSP_HUGE_MIN || npages + align_pages - 1 > NSP_ARENA_PAGES)
        return nsp__huge_alloc(node, n, align);
    return nsp__central_pages(node, npages, align_pages);
}

void *nsp__alloc_large_on(size_t n, size_t align, unsigned node)
{
    if (n > PTRDIFF_MAX || align > ((size_t)1 << 40))
        return nsp__enomem();
    if (n == 0) /* a zero-size request at a large alignment: one page, a unique pointer */
        n = 1;
    int saved = errno;
    size_t guard = nsp__secure ? NSP_PAGE_SIZE : 0; /* secure.h: a page after the object */
    n += guard;
    struct nsp_span *s = large_span(n, align, node);
    if (!s) {
        nsp_trim();
        s = large_span(n, align, node);
    }
    if (!s)
        return nsp__enomem();
    s->sizeclass = 0;
    s->elemsize = (uint32_t)((size_t)s->npages << NSP_PAGE_SHIFT);
    s->nelems = 1;
    if (guard)
        nsp__secure_guard(s, 1);
    atomic_store_explicit(&s->state, NSP_SPAN_LARGE, memory_order_release);
    atomic_fetch_add_explicit(&nsp__large_allocs[s->node], 1, memory_order_relaxed);
    nsp__ledger_large(s, 1);
    nsp__pacer_after_alloc();
    return nsp__outcome((void *)s->base, saved);
}

/* A large malloc, out of line: its retry and accounting would otherwise make every malloc save
 * registers it does not use. */
__attribute__((noinline)) void *nsp__alloc_large(size_t n)
{
    return nsp__alloc_large_on(n, NSP_PAGE_SIZE, nsp__current_node());
}

__attribute__((noinline)) void nsp__free_large(struct nsp_span *s, void *p)
{
    if ((uintptr_t)p != s->base) {
        nsp__report_error(NSP_ERR_INTERIOR, "free", p);
        return;
    }
    uint32_t large = NSP_SPAN_LARGE;
    if (!atomic_compare_exchange_strong(&s->state, &large, NSP_SPAN_TAKEN)) { /* being freed */
        nsp__report_error(NSP_ERR_DOUBLE_FREE, "free", p);
        return;
    }
    int saved = errno;
    if (unlikely(nsp__secure))
        nsp__secure_guard(s, 0);
    atomic_fetch_add_explicit(&nsp__large_frees[s->node], 1, memory_order_relaxed);
    nsp__ledger_large(s, 0);
    if (s->arena->huge)
        nsp__huge_free(s);
    else
        nsp__pageheap_free(s);
    errno = saved;
}

/* nsp__huge_resize within the hard limit on mapped memory (pageheap.h): growth is counted first
 * and refused past the limit (realloc then tries a fresh allocation, which trims); a shrink is
 * uncounted once done. */
int nsp__huge_resize_counted(struct nsp_span *s, size_t n)
{
    size_t old = s->arena->size, len = (n + NSP_ARENA_SIZE - 1) & ~(NSP_ARENA_SIZE - 1);
    if (len < n)
        return -1;
    if (len > old && nsp__mapped_add(len - old) < 0)
        return -1;
    if (nsp__huge_resize(s, n) < 0) {
        if (len > old)
            nsp__mapped_sub(len - old);
        return -1;
    }
    if (len < old)
        nsp__mapped_sub(old - len);
    return 0;
}
