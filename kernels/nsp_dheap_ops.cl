/*
 * kernels/nsp_dheap_ops.cl — the heap's own kernels, launched by device/ between user kernels.
 *
 * Owns: release (every slot's cached span back to its central, reconciling its charge) and
 * sweep (every uncached span: claimed and freed objects applied, charge set to the live bytes,
 * empty spans back to the pool). After both, with no user kernel running, the stripes sum to
 * the live bytes exactly (DESIGN.md §5, "All modes").
 */

/* One work-item per (class, slot) word and per (class, slot) next word (a prepared span). */
__kernel void nsp_k_release(__global nsp_dheap *h)
{
    ulong i = get_global_id(0), n = (ulong)NSP_DNCLASSES * h->nslots;
    if (i >= 2ul * n)
        return;
    ulong j = i % n;
    uint ci = (uint)(j / h->nslots), s = (uint)(j % h->nslots);
    __global ulong *w = i < n ? nsp__slotw(h, ci, s) : nsp__nextw(h, ci, s);
    nsp__release_word(h, atom_xchg(w, NSP_DW_EMPTY), s);
}

/* One work-item per chunk. */
__kernel void nsp_k_sweep(__global nsp_dheap *h)
{
    ulong c = get_global_id(0);
    if (c == 0ul) { /* every out-of-memory mark off, as after a free (nsp__oom_clear): a mark
                     * of an earlier epoch must not stand again when another one is set */
        atom_and(&h->oom, ~NSP__OOM_MARKS);
        NSP_FENCE_AFTER_RMW();
        atom_inc(&h->epoch);
    }
    if (c >= min(NSP_V64(&h->next_chunk), h->nchunks))
        return;
    __global uint *stp = nsp__state(h, (uint)c);
    uint s = NSP_V32(stp), st = NSP_DST_STATE(s), cls = NSP_DST_CLASS(s);
    if ((st != NSP_DS_PARTIAL && st != NSP_DS_FULL) ||
        atomic_cmpxchg(stp, s, NSP_DST_MAKE(NSP_DS_BUSY, cls, 0u)) != s)
        return;
    NSP_ACQUIRE();
    if (st == NSP_DS_PARTIAL)
        nsp__unpublish(h, cls - NSP_DMIN_CLASS, (uint)c);
    uint stripe = (uint)(c & (h->nslots - 1ul));
    uint live = nsp__sweep(h, (uint)c, stripe);
    if (live == 0u)
        nsp__to_pool(h, (uint)c, stripe);
    else
        nsp__put_back(h, (uint)c, cls, live < NSP_DV(nsp__desc(h, (uint)c), nobj));
}
