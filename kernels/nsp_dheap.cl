/*
 * kernels/nsp_dheap.cl — the device heap's allocator, OpenCL C 1.2 (2.0+ where the device's
 * fences are device-scope ones; DESIGN.md §4).
 *
 * Owns: nsp_dmalloc / nsp_dfree (per work-item, usable in divergent code), nsp_dmalloc_group
 * (work-group collective), nsp_dptr, nsp_dcalloc / nsp_dmalloc_aligned / nsp_drealloc /
 * nsp_dusable (built on the first two, no state of their own), and the layers under them: slot words (claims), refill and
 * release of spans, centrals (bitmaps), the page pool (one carve counter, then a scan of freed
 * chunks), sweeping, the out-of-memory search, the ledger's charges. The buffer layout and the
 * encodings are in numaspan_geometry.h, which device/ prepends to this text.
 *
 * Invariants
 * - No spin locks, no linked stacks: ownership of a span moves by compare-and-swap of its chunk
 *   state word (BUSY = one work-item owns it); sets of spans are bitmaps. Every loop is bounded:
 *   a claim retries NSP_ATTEMPTS times (waiting at most NSP_SPIN reads for a refill, then trying
 *   the next slot); past that bound the work-item takes its object straight from a span of the
 *   central (NSP_DC_FORCED), so a null handle means the whole heap was searched
 *   (NSP_DC_NULL_OOM).
 * - A claim is one atom_add on the slot word (span | navail | gen | cursor): it names the span it
 *   landed in. Exactly one claim of an incarnation sees cursor == navail: it refills the slot and
 *   releases the old span (or, when an eighth of it was freed while cached, sweeps it in place
 *   and installs it again: nsp__refill_in_place; and when the centrals have no span for it, so
 *   does a sixteenth rather than carve a fresh one); claims past navail wait for it. Every add
 *   follows a read that found cursor <= navail (nsp__room), so the cursor never carries into
 *   the generation. On NVIDIA the lanes of a warp that claim on the same slot word combine
 *   into one atom_add (match.any + shfl, inline PTX), and those of it past navail wait for the
 *   lane that refills at a warp barrier, not polling the word (nsp__warp_roles). On a CPU device
 *   a claim prefetches the next object of its span for writing (NSP_PREFETCH_OBJECT).
 * - A cached span's free entries are the snapshot avail[g & 1] / prefix[g & 1] of its install;
 *   the objects claimed from it are applied to alloc at its next sweep (`claimed`). Only the
 *   incarnation after next rewrites that snapshot, and only once every claimant of this one has
 *   read its entry (readers / read_done; until then the span waits in its central), so no claim
 *   loses its object. A claimant still checks gen after reading (NSP_DC_LOST, a tripwire).
 * - Free is one atom_or on the span's freed bitmap (after a read of the chunk state that finds
 *   the class). A bit found already set is a double free. A free into a FULL span moves it to
 *   PARTIAL and publishes it in its central. The release that makes a span FULL re-reads the
 *   freed bitmap after a fence, and a free re-reads the state after its atom_or and a fence:
 *   one of the two sees the other, so no free is stranded in a FULL span.
 * - Ledger (DESIGN.md §5): charge events are refill, release and sweep (and every malloc/free in
 *   the exact mode), each `stripe[slot] += new - desc.charge; desc.charge = new`; large objects
 *   are charged their run when allocated and 0 when freed. The heap's heapLive is the sum of the
 *   stripes; after a release of every slot and a sweep it equals the live bytes exactly.
 * - Cross-work-group publication goes through NSP_RELEASE and every ownership transfer is
 *   followed by NSP_ACQUIRE before the descriptor is read (device-scope fences: membar.gl on
 *   NVIDIA, atomic_work_item_fence with memory_scope_device on OpenCL C 2.0+). Shared metadata,
 *   descriptors included, is read through atomics or volatile loads, never plain loads.
 * - Chunk states: NEW (never carved: its carver's from the add to next_chunk on), FREE
 *   (in the pool, counted in free_chunks: the only state a pool scan takes), CACHED, PARTIAL,
 *   FULL, BUSY, LARGE, LTAIL, STAIL (numaspan_geometry.h).
 * - A span of class k is nsp_dspan_chunks(k) contiguous chunks holding nsp_dspan_nobj(k) >= 512
 *   objects: its head chunk carries the state that changes (CACHED, PARTIAL, FULL, BUSY) and the
 *   descriptor; its tails are STAIL from its first install until it goes back to the pool, and
 *   name their distance to the head, which frees and nsp_dusable follow. Spans and large runs
 *   are carved by one atom_add of their chunk count on next_chunk; an add that passes the pool's
 *   end gives the chunks it got to the pool. A pool scan takes a run of FREE chunks.
 * - Out of memory: a search's failure is final (the out-of-memory mark of its class, or of runs
 *   at least as long as its own: nulls at once for that kind, and no other, until a free) only
 *   if it met no BUSY span, nothing was held between places (h->holding) and nothing arrived
 *   behind its scans but its own releases (h->moves); a free that lands behind a scan sees
 *   the search counted in h->oom and makes its verdict stale (nsp__watch). One work-item at a
 *   time sweeps the whole heap (h->reclaimer, a try-lock); the others take at most one span
 *   from each other class's centrals (an empty one of their chunk count:
 *   nsp__from_other_centrals, so a reclaimer preempted mid-sweep strands no memory) and wait,
 *   bounded, for its verdict. Once its class's mark stands, a claim that finds its slot being
 *   refilled returns the null at once (no wait out of its bound, no forced search). The sweep
 *   stays inside the failing launch:
 *   OpenCL 1.2 (NVIDIA's) has no device-side enqueue, so "reclaim as its own kernel" is the
 *   host's nsp_cl_sweep between launches.
 * - Next words: per (class, slot), a span prepared before the slot's current one runs out (built
 *   with -DNSP_PREFETCH only; nsp__prefetch). The slot's refill installs it first; the searches
 *   take other slots' prepared spans before their cached ones, the out-of-memory flush releases
 *   them, and so does nsp_k_release. A prepared span is CACHED, held by no slot word.
 * - Centrals: per class, ncentrals bitmaps of chunks and one summary word with a bit per central
 *   (nsp__summary): "anything PARTIAL in this class?" is one read, and no counter is shared by
 *   all of a class's publishes and takes.
 */
#pragma OPENCL EXTENSION cl_khr_int64_base_atomics : enable
#pragma OPENCL EXTENSION cl_khr_int64_extended_atomics : enable

typedef struct nsp_dheap_hdr nsp_dheap;
typedef ulong nsp_dhandle;

/* The ordering shim (DESIGN.md §4), at device scope. OpenCL C 1.2's mem_fence promises nothing
 * across work-groups, so device/ picks one of two known fences and builds with its define; any
 * other build is refused here.
 * - NSP_RELEASE(): before a span, chunk or word is published to other work-groups (state or
 *   slot word stored after the descriptor writes).
 * - NSP_ACQUIRE(): after one is taken (a CAS to BUSY, a take from a central, a slot word
 *   exchanged out of its slot, a claim that reads a snapshot), before its descriptor is read.
 * - NSP_ACQ_REL(): both (a claimant's snapshot loads, before it counts its read done).
 * - NSP_FENCE(): a full fence, for the store-then-load pairs (a release storing FULL then reading
 *   the freed bitmap, a search counting itself in h->oom then scanning), where neither of the
 *   above does.
 * - NSP_FENCE_AFTER_RMW(): the same right after an atomic read-modify-write.
 * With NSP_FENCE_MEMBAR (NVIDIA, whose OpenCL C 1.2 compiler accepts inline PTX) every one is
 * membar.gl, the GPU-wide fence (the mem_fence beside it keeps the compiler from moving accesses
 * across it). With NSP_FENCE_DEVICE_SCOPE (OpenCL C 2.0+, e.g. POCL built -cl-std=CL3.0) they
 * are atomic_work_item_fence with memory_scope_device and release, acquire, seq_cst order.
 * NSP_TSO (device/ sets it for CPU devices on x86-64, POCL's): x86 is TSO and a locked RMW is a
 * full barrier, so after one a compiler fence (acq_rel: no instruction) suffices; release and
 * acquire fences cost no instruction there either, and only NSP_FENCE is an mfence. */
#if defined(NSP_FENCE_MEMBAR)
#define NSP_FENCE()                                                                            \
    do {                                                                                       \
        mem_fence(CLK_GLOBAL_MEM_FENCE);                                                       \
        asm volatile("membar.gl;" ::: "memory");                                               \
    } while (0)
#define NSP_RELEASE() NSP_FENCE()
#define NSP_ACQUIRE() NSP_FENCE()
#define NSP_ACQ_REL() NSP_FENCE()
#define NSP_FENCE_AFTER_RMW() NSP_FENCE()
#elif defined(NSP_FENCE_DEVICE_SCOPE) && defined(__OPENCL_C_VERSION__) && __OPENCL_C_VERSION__ >= 200
#define NSP__FENCE_ORDER(o) atomic_work_item_fence(CLK_GLOBAL_MEM_FENCE, o, memory_scope_device)
#define NSP_FENCE() NSP__FENCE_ORDER(memory_order_seq_cst)
#define NSP_RELEASE() NSP__FENCE_ORDER(memory_order_release)
#define NSP_ACQUIRE() NSP__FENCE_ORDER(memory_order_acquire)
#define NSP_ACQ_REL() NSP__FENCE_ORDER(memory_order_acq_rel)
#ifdef NSP_TSO
#define NSP_FENCE_AFTER_RMW() NSP__FENCE_ORDER(memory_order_acq_rel)
#else
#define NSP_FENCE_AFTER_RMW() NSP_FENCE()
#endif
#else
#error "numaspan device heap: no cross-work-group fence (build with -DNSP_FENCE_MEMBAR on NVIDIA, or -cl-std=CL2.0+ and -DNSP_FENCE_DEVICE_SCOPE)"
#endif

/* The next object of a slot's span, fetched for writing when a claim hands out this one (CPU
 * devices on x86-64 only: NSP_TSO). On a CPU every claim is a locked RMW, which waits for the
 * store buffer to drain: the caller's first store into the object it got (a line missed in the
 * cache: mixed sizes put each object on a line and often a page of its own) was paid for by the
 * next claim. perf on POCL put 77% of the mixed 16-4096 B case's malloc kernel on the slot
 * word's lock xadd; with the next object's line already owned it is 2-3x faster (issue 13).
 * A GPU's atomics do not wait for earlier stores, so it gets nothing there.
 * NSP_NO_OBJECT_PREFETCH turns it off (to measure it). */
#if defined(NSP_TSO) && !defined(NSP_NO_OBJECT_PREFETCH)
#define NSP_PREFETCH_OBJECT(p) __asm__ __volatile__("prefetchw (%0)" : : "r"(p))
#else
#define NSP_PREFETCH_OBJECT(p) ((void)(p))
#endif

#define NSP_V64(p) (*(volatile __global ulong *)(p))
#define NSP_V32(p) (*(volatile __global uint *)(p))
/* A descriptor field, read with a volatile load: after an ownership change a plain ld.global may
 * return another SM's stale L1 line (DESIGN.md §4, "never plain loads"). */
#define NSP_DV(d, f) NSP_V32(&(d)->f)

/* Test hooks: tests/test_device.c builds with -DNSP_TEST_HOOKS and defines nsp_test_hook, which
 * then runs at the marked points (another work-item's step, injected between two of ours). */
#ifdef NSP_TEST_HOOKS
void nsp_test_hook(__global struct nsp_dheap_hdr *h, uint where);
#define NSP_TEST_HOOK(h, where) nsp_test_hook(h, where)
#else
#define NSP_TEST_HOOK(h, where) ((void)0)
#endif

#ifndef NSP_SPIN
#define NSP_SPIN 2048u     /* reads of a slot word while another work-item refills it */
#endif
#ifndef NSP_SEARCHES
#define NSP_SEARCHES 16u   /* searches of the heap by one refill while others hold its memory */
#endif
#ifndef NSP_INPLACE_SHIFT
#define NSP_INPLACE_SHIFT 4u /* a refill that finds no central span sweeps its own in place when
                                nobj >> this many of its objects were freed (nsp__refill) */
#endif
#ifndef NSP_ATTEMPTS
#define NSP_ATTEMPTS 8u    /* claims before a work-item refills its slot itself */
#endif

/* ---- layout ------------------------------------------------------------------------------- */

static inline __global uchar *nsp__b(__global nsp_dheap *h) { return (__global uchar *)h; }
static inline __global ulong *nsp__slotw(__global nsp_dheap *h, uint ci, uint s)
{
    return (__global ulong *)(nsp__b(h) + h->off_slots) + (ulong)ci * h->nslots + s;
}
/* The (class, slot)'s next word: a span prepared before the slot's current one runs out. */
static inline __global ulong *nsp__nextw(__global nsp_dheap *h, uint ci, uint s)
{
    return nsp__slotw(h, ci, s) + (ulong)NSP_DNCLASSES * h->nslots;
}
static inline __global long *nsp__stripe(__global nsp_dheap *h, uint s)
{
    return (__global long *)(nsp__b(h) + h->off_stripes) + s;
}
/* The class's summary word (at off_partial): bit j set when central j may hold a PARTIAL span. */
static inline __global ulong *nsp__summary(__global nsp_dheap *h, uint ci)
{
    return (__global ulong *)(nsp__b(h) + h->off_partial) + ci;
}
static inline __global uint *nsp__state(__global nsp_dheap *h, uint c)
{
    return (__global uint *)(nsp__b(h) + h->off_state) + c;
}
static inline __global struct nsp_ddesc *nsp__desc(__global nsp_dheap *h, uint c)
{
    return (__global struct nsp_ddesc *)(nsp__b(h) + h->off_desc) + c;
}
static inline __global ulong *nsp__cbits(__global nsp_dheap *h, uint ci, uint central)
{
    return (__global ulong *)(nsp__b(h) + h->off_central) +
           ((ulong)ci * h->ncentrals + central) * h->cwords;
}
static inline ulong nsp__chunk_off(__global nsp_dheap *h, uint c)
{
    return h->off_pool + ((ulong)c << NSP_DCHUNK_SHIFT);
}
static inline void nsp__count(__global nsp_dheap *h, uint i) { atom_inc(&h->counter[i]); }

/* A handle as a pointer, valid in this kernel launch (the buffer may move between launches). */
static inline __global void *nsp_dptr(__global nsp_dheap *h, nsp_dhandle p)
{
    return (__global void *)(nsp__b(h) + p);
}

/* The slot of the calling work-group: every work-item of a group uses the same slot. On NVIDIA
 * it is the group's SM (%smid: a group runs on one SM), so a class has one slot per SM, and the
 * groups sharing a slot are the ones running beside each other, not every nslots-th group of the
 * launch (device/ sizes nslots to the compute units). Elsewhere OpenCL does not say which compute
 * unit runs a group: the group id stands in. */
static inline uint nsp__slot_of_group(__global nsp_dheap *h)
{
#if defined(NSP_FENCE_MEMBAR) && !defined(NSP_NO_SMID_SLOT)
    uint sm;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
    return sm & ((uint)h->nslots - 1u);
#else
    ulong g = get_group_id(0) +
              get_num_groups(0) * (get_group_id(1) + get_num_groups(1) * get_group_id(2));
    return (uint)(g & (h->nslots - 1u));
#endif
}

/* Per class (index ci = class - NSP_DMIN_CLASS): objects per span (nsp_dspan_nobj) and
 * ceil(2^40 / class size), so that the index of an object from its offset in a span (< 4 MiB) is
 * a multiply and a shift, exact for every offset below 2^22 (the error stays below 2^-18, under
 * the 1/size between two fractions of a quotient): DESIGN.md §3's "a multiply by a reciprocal,
 * not a divide", here on every malloc and free. tests/test_device.c checks both against
 * numaspan_geometry.h on the device. */
__constant ushort nsp__nobj_tab[NSP_DNCLASSES] = {
    4096u, 2048u, 1365u, 1024u, 819u, 682u, 585u, 512u, 910u, 819u, 744u, 682u, 630u, 585u, 546u,
    512u, 682u, 614u, 558u, 512u, 630u, 585u, 546u, 512u, 568u, 512u, 558u, 512u, 551u, 512u,
    546u, 512u, 512u, 512u, 512u, 512u, 512u, 512u, 512u, 512u, 512u, 512u, 512u, 512u, 512u,
    512u, 512u, 512u, 512u, 512u, 512u, 512u, 512u, 512u, 512u, 512u};
__constant ulong nsp__recip_tab[NSP_DNCLASSES] = {
    0x1000000000ul, 0x800000000ul, 0x555555556ul, 0x400000000ul, 0x333333334ul, 0x2aaaaaaabul,
    0x24924924aul, 0x200000000ul, 0x1c71c71c8ul, 0x19999999aul, 0x1745d1746ul, 0x155555556ul,
    0x13b13b13cul, 0x124924925ul, 0x111111112ul, 0x100000000ul, 0xe38e38e4ul, 0xcccccccdul,
    0xba2e8ba3ul, 0xaaaaaaabul, 0x9d89d89eul, 0x92492493ul, 0x88888889ul, 0x80000000ul,
    0x71c71c72ul, 0x66666667ul, 0x5d1745d2ul, 0x55555556ul, 0x4ec4ec4ful, 0x4924924aul,
    0x44444445ul, 0x40000000ul, 0x38e38e39ul, 0x33333334ul, 0x2e8ba2e9ul, 0x2aaaaaabul,
    0x27627628ul, 0x24924925ul, 0x22222223ul, 0x20000000ul, 0x1c71c71dul, 0x1999999aul,
    0x1745d175ul, 0x15555556ul, 0x13b13b14ul, 0x12492493ul, 0x11111112ul, 0x10000000ul,
    0xe38e38ful, 0xccccccdul, 0xba2e8bbul, 0xaaaaaabul, 0x9d89d8aul, 0x924924aul, 0x8888889ul,
    0x8000000ul};
static inline uint nsp__nobj(uint cls) { return nsp__nobj_tab[cls - NSP_DMIN_CLASS]; }
static inline uint nsp__index(uint off, uint cls)
{
    return (uint)(((ulong)off * nsp__recip_tab[cls - NSP_DMIN_CLASS]) >> 40);
}

/* ---- bits ----------------------------------------------------------------------------------- */

static inline ulong nsp__valid(uint nobj, uint w)
{
    uint lo = w * 64u;
    if (lo + 64u <= nobj)
        return ~0ul;
    if (lo >= nobj)
        return 0ul;
    return (1ul << (nobj - lo)) - 1ul;
}
static inline uint nsp__nwords(uint nobj) { return (nobj + 63u) / 64u; }
static inline uint nsp__ctz(ulong x) { return 63u - (uint)clz(x & (0ul - x)); }
static inline uint nsp__pop(ulong x) { return (uint)popcount(x); }

/* Position of the k-th (0-based) set bit of x, which has more than k set bits. */
static inline uint nsp__select(ulong x, uint k)
{
    uint pos = 0u, c = nsp__pop(x & 0xFFFFFFFFul);
    if (k >= c) { k -= c; x >>= 32; pos = 32u; }
    c = nsp__pop(x & 0xFFFFul);
    if (k >= c) { k -= c; x >>= 16; pos += 16u; }
    c = nsp__pop(x & 0xFFul);
    if (k >= c) { k -= c; x >>= 8; pos += 8u; }
    for (uint i = 0; i < 8u; i++, x >>= 1, pos++) {
        if (x & 1ul) {
            if (k == 0u)
                return pos;
            k--;
        }
    }
    return pos;
}
/* The lowest k set bits of x (k <= popcount(x)). */
static inline ulong nsp__lowest(ulong x, uint k)
{
    if (k == 0u)
        return 0ul;
    if (k >= nsp__pop(x))
        return x;
    return x & ((1ul << nsp__select(x, k)) - 1ul);
}

/* ---- ledger --------------------------------------------------------------------------------- */

static inline void nsp__charge(__global nsp_dheap *h, __global struct nsp_ddesc *d, long charge,
                               uint stripe)
{
    long old = atom_xchg((volatile __global long *)&d->charge, charge);
    if (charge != old)
        atom_add(nsp__stripe(h, stripe), charge - old);
}

/* ---- centrals (per class: ncentrals bitmaps of chunks) --------------------------------------- */

/* Memory arrived where a search may already have looked without seeing it held: a word leaving
 * the hold (installed in a slot, or released to its central; nsp__unhold), a free that made a
 * FULL span PARTIAL, a large object's chunks back in the pool. A search that fails across such
 * an arrival by another work-item is not final (nsp__search). Arrivals from BUSY need no mark:
 * a scan that passed the span while it was BUSY counted it. */
static inline void nsp__moved(__global nsp_dheap *h) { atom_inc(&h->moves); }
/* The end of a hold (h->holding: a word taken by a search or out of its slot). */
static inline void nsp__unhold(__global nsp_dheap *h)
{
    nsp__moved(h);
    atom_dec(&h->holding);
}

/* A class's centrals are summed up in one word (nsp__summary): "has the class a PARTIAL span?"
 * is one read, and no counter is shared by every publish and take of the class (the single
 * `partial` counter was: every central's traffic met on it). A set bit is a hint (the central's
 * bits may all be gone); a central with a set bit always has its summary bit set or a clearer
 * about to set it again: publish sets the central's bit, then reads the summary; a clearer clears
 * the summary bit, then reads the central's words (both fenced: one of the two sees the other). */
static inline void nsp__publish(__global nsp_dheap *h, uint ci, uint c)
{
    uint nc = (uint)h->ncentrals, b = c / nc, j = c & (nc - 1u);
    ulong bit = 1ul << (b & 63u), m = 1ul << j;
    atom_or(nsp__cbits(h, ci, j) + b / 64u, bit);
    NSP_FENCE_AFTER_RMW();
    __global ulong *sum = nsp__summary(h, ci);
    if (!(NSP_V64(sum) & m))
        atom_or(sum, m);
}
static inline void nsp__unpublish(__global nsp_dheap *h, uint ci, uint c)
{
    uint nc = (uint)h->ncentrals, b = c / nc;
    atom_and(nsp__cbits(h, ci, c & (nc - 1u)) + b / 64u, ~(1ul << (b & 63u)));
}
/* Central j of class ci was found empty: its summary bit goes, unless a publish came meanwhile. */
static void nsp__summary_clear(__global nsp_dheap *h, uint ci, uint j)
{
    __global ulong *sum = nsp__summary(h, ci), *bits = nsp__cbits(h, ci, j);
    atom_and(sum, ~(1ul << j));
    NSP_FENCE_AFTER_RMW();
    for (uint w = 0; w < (uint)h->cwords; w++)
        if (NSP_V64(bits + w) != 0ul) {
            atom_or(sum, 1ul << j);
            return;
        }
}

/* Takes a PARTIAL span of class ci out of a central (BUSY, owned by the caller), or returns
 * NSP_DSPAN_NONE. Bits are hints: a bit whose chunk is no longer PARTIAL is dropped. */
static uint nsp__take_partial(__global nsp_dheap *h, uint ci, uint hint)
{
    ulong sum = NSP_V64(nsp__summary(h, ci));
    if (sum == 0ul)
        return (uint)NSP_DSPAN_NONE;
    uint nc = (uint)h->ncentrals, cw = (uint)h->cwords, cls = ci + NSP_DMIN_CLASS;
    uint want = NSP_DST_MAKE(NSP_DS_PARTIAL, cls, 0u);
    for (uint jj = 0; jj < nc; jj++) {
        uint j = (hint + jj) & (nc - 1u);
        if (!((sum >> j) & 1ul))
            continue;
        __global ulong *bits = nsp__cbits(h, ci, j);
        uint seen = 0u;
        for (uint ww = 0; ww < cw; ww++) {
            uint wi = (hint / nc + ww) % cw;
            ulong word = NSP_V64(bits + wi);
            seen |= word != 0ul;
            for (uint tries = 0; word != 0ul && tries < 64u; tries++) {
                uint b = nsp__ctz(word);
                ulong bit = 1ul << b;
                ulong old = atom_and(bits + wi, ~bit);
                word = old & ~bit;
                if (!(old & bit))
                    continue;
                uint c = (wi * 64u + b) * nc + j;
                if (c < h->nchunks &&
                    atomic_cmpxchg(nsp__state(h, c), want, NSP_DST_MAKE(NSP_DS_BUSY, cls, 0u)) ==
                        want) {
                    NSP_ACQUIRE(); /* the previous owner's descriptor writes */
                    return c;
                }
            }
        }
        if (!seen)
            nsp__summary_clear(h, ci, j);
    }
    return (uint)NSP_DSPAN_NONE;
}

/* ---- spans ------------------------------------------------------------------------------------ */

/* Applies what the last incarnation claimed and every freed bit to alloc; sets the charge to the
 * live bytes. The caller owns the span (BUSY). Returns the live objects. */
static uint nsp__sweep(__global nsp_dheap *h, uint c, uint stripe)
{
    __global struct nsp_ddesc *d = nsp__desc(h, c);
    uint nobj = NSP_DV(d, nobj), claimed = NSP_DV(d, claimed), dense = NSP_DV(d, dense);
    uint par = NSP_DV(d, gen) & 1u, live = 0u, bad = 0u;
    for (uint w = 0; w < nsp__nwords(nobj); w++) {
        ulong valid = nsp__valid(nobj, w), a = NSP_V64(&d->alloc[w]);
        if (claimed) {
            if (dense) {
                uint lo = w * 64u, k = claimed > lo ? min(claimed - lo, 64u) : 0u;
                a |= (k == 64u ? ~0ul : (1ul << k) - 1ul) & valid;
            } else {
                uint pre = *(volatile __global ushort *)&d->prefix[par][w];
                a |= nsp__lowest(NSP_V64(&d->avail[par][w]), claimed > pre ? claimed - pre : 0u);
            }
        }
        ulong f = atom_xchg(&d->freed[w], 0ul);
        bad += nsp__pop(f & ~a);
        a &= ~f;
        d->alloc[w] = a;
        live += nsp__pop(a);
    }
    d->claimed = 0u;
    d->dense = 0u;
    if (bad)
        atom_add(&h->counter[NSP_DC_BAD_FREES], (ulong)bad);
    nsp__count(h, NSP_DC_SWEEPS);
    nsp__charge(h, d, (long)live * nsp_geom_class_size(NSP_DV(d, cls)), stripe);
    return live;
}

/* Makes an owned (BUSY) span PARTIAL (published) or FULL. A FULL span re-reads its freed bitmap
 * after the state is visible, so that a concurrent free that saw it BUSY is not stranded. */
static void nsp__put_back(__global nsp_dheap *h, uint c, uint cls, int has_free)
{
    __global uint *st = nsp__state(h, c);
    uint ci = cls - NSP_DMIN_CLASS;
    NSP_RELEASE();
    if (has_free) {
        atomic_xchg(st, NSP_DST_MAKE(NSP_DS_PARTIAL, cls, 0u));
        nsp__publish(h, ci, c);
        return;
    }
    uint full = NSP_DST_MAKE(NSP_DS_FULL, cls, 0u);
    atomic_xchg(st, full);
    NSP_FENCE();
    __global struct nsp_ddesc *d = nsp__desc(h, c);
    for (uint w = 0; w < nsp__nwords(NSP_DV(d, nobj)); w++) {
        if (NSP_V64(&d->freed[w]) != 0ul) {
            if (atomic_cmpxchg(st, full, NSP_DST_MAKE(NSP_DS_PARTIAL, cls, 0u)) == full)
                nsp__publish(h, ci, c);
            return;
        }
    }
}

/* Returns an owned span to the pool, head and tails (its bitmaps are clear: alloc by a sweep
 * that found it empty, or never written). Its tails are the chunks after it in state STAIL at
 * their distance from it: they follow their head, so no other span's tail can be there. */
static void nsp__to_pool(__global nsp_dheap *h, uint c, uint stripe)
{
    __global struct nsp_ddesc *d = nsp__desc(h, c);
    nsp__charge(h, d, 0l, stripe);
    uint n = 1u;
    while (c + n < h->nchunks) {
        uint s = NSP_V32(nsp__state(h, c + n)); /* one load: state and run from the same word */
        if (NSP_DST_STATE(s) != NSP_DS_STAIL || NSP_DST_RUN(s) != n)
            break;
        n++;
    }
    NSP_RELEASE();
    for (uint i = n; i-- > 0u;) /* the head last: a free that reads a tail then the head */
        atomic_xchg(nsp__state(h, c + i), NSP_DST_MAKE(NSP_DS_FREE, 0u, 0u));
    atom_add(&h->free_chunks, (ulong)n);
}

/* Prepares an owned span of class cls for a slot and returns its slot word (cursor 0), or
 * NSP_DW_EMPTY, having put the span back, when it has no free entry or its next snapshot buffer
 * still has a claimant reading it. fresh: the chunk came from the pool (no object
 * allocated; a chunk that was in use before has its freed bits cleared here). */
static ulong nsp__prepare(__global nsp_dheap *h, uint c, uint cls, int fresh, int reused, uint stripe)
{
    __global struct nsp_ddesc *d = nsp__desc(h, c);
    uint size = nsp_geom_class_size(cls), nobj = nsp_dspan_nobj(cls), navail;
    if (fresh) {
        /* the tails name their head (a free or nsp_dusable of an object in them finds it) */
        for (uint i = 1u; i < nsp_dspan_chunks(cls); i++)
            atomic_xchg(nsp__state(h, c + i), NSP_DST_MAKE(NSP_DS_STAIL, cls, i));
        if (reused)
            for (uint w = 0; w < NSP_DWORDS; w++) {
                atom_xchg(&d->freed[w], 0ul);
                d->alloc[w] = 0ul;
            }
        d->cls = cls;
        d->nobj = nobj;
        d->claimed = 0u;
        for (uint b = 0; b < 2u; b++) /* an empty span has no claimant left in any snapshot */
            d->readers[b] = d->read_done[b] = 0u;
        navail = nobj;
    } else {
        navail = 0u;
        for (uint w = 0; w < nsp__nwords(nobj); w++)
            navail += nsp__pop(~NSP_V64(&d->alloc[w]) & nsp__valid(nobj, w));
        uint par = (NSP_DV(d, gen) + 1u) & 1u;
        if (navail != 0u && navail != nobj &&
            NSP_V32(&d->read_done[par]) != NSP_DV(d, readers[par])) {
            /* a claimant of the incarnation that used this buffer has not read its entry yet:
             * rewriting it would lose that claimant's object, so the span waits in its central */
            nsp__count(h, NSP_DC_SNAP_WAITS);
            nsp__put_back(h, c, cls, 1);
            nsp__moved(h); /* memory exists: the search that met it must not call itself final */
            return NSP_DW_EMPTY;
        }
        if (navail != 0u && navail != nobj) { /* a new snapshot, in the other buffer */
            NSP_ACQUIRE(); /* the claimants' reads are over before the buffer changes */
            atomic_inc(&d->gen);
            d->readers[par] = 0u;
            atomic_xchg(&d->read_done[par], 0u);
            uint acc = 0u;
            /* the new gen is visible before any word of the buffer changes: a claimant of
             * incarnation gen - 1 that reads a rewritten word then sees gen moved by 2 */
            NSP_RELEASE();
            for (uint w = 0; w < nsp__nwords(nobj); w++) {
                ulong fr = ~NSP_V64(&d->alloc[w]) & nsp__valid(nobj, w);
                d->avail[par][w] = fr;
                d->prefix[par][w] = (ushort)acc;
                acc += nsp__pop(fr);
            }
        }
    }
    if (navail == 0u) {
        nsp__put_back(h, c, cls, 0);
        return NSP_DW_EMPTY;
    }
    d->navail = navail;
    d->dense = navail == nobj;
    long live = (long)(nobj - navail) * size;
    nsp__charge(h, d, h->acct == 0ul ? (long)nsp_dspan_chunks(cls) << NSP_DCHUNK_SHIFT : live, stripe);
    nsp__count(h, NSP_DC_REFILLS);
    NSP_RELEASE();
    atomic_xchg(nsp__state(h, c), NSP_DST_MAKE(NSP_DS_CACHED, cls, 0u));
    NSP_RELEASE();
    return NSP_DW_MAKE(c, navail, atomic_add(&d->gen, 0u), 0u);
}

/* The objects freed into a span since its last sweep (its freed bitmap, read now). */
static uint nsp__nfreed(__global struct nsp_ddesc *d, uint nobj)
{
    uint nf = 0u;
    for (uint i = 0; i < nsp__nwords(nobj); i++)
        nf += nsp__pop(NSP_V64(&d->freed[i]));
    return nf;
}

/* Releases the span a slot word named (the caller took the word out of its slot): records what
 * was claimed, charges the live bytes (the freed bitmap read now: the sweep makes it exact),
 * and puts it back PARTIAL or FULL. */
static uint nsp__retire_word(__global nsp_dheap *h, ulong w, uint stripe, int *has_free);
static void nsp__release_word(__global nsp_dheap *h, ulong w, uint stripe)
{
    int has_free;
    uint c = nsp__retire_word(h, w, stripe, &has_free);
    if (c != (uint)NSP_DSPAN_NONE)
        nsp__put_back(h, c, NSP_DV(nsp__desc(h, c), cls), has_free);
}

/* The bookkeeping of a release, up to the span owned (BUSY) by the caller: returns its chunk
 * (NSP_DSPAN_NONE for the empty word) and whether it has a free object. */
static uint nsp__retire_word(__global nsp_dheap *h, ulong w, uint stripe, int *has_free)
{
    uint c = NSP_DW_SPAN(w);
    if (c == (uint)NSP_DSPAN_NONE)
        return c;
    NSP_ACQUIRE(); /* the word was exchanged out of its slot: the span is the caller's now */
    __global struct nsp_ddesc *d = nsp__desc(h, c);
    uint navail = NSP_DW_NAVAIL(w), claimed = min(NSP_DW_CUR(w), navail);
    uint nobj = NSP_DV(d, nobj), cls = NSP_DV(d, cls), nf = nsp__nfreed(d, nobj);
    d->claimed = claimed;
    if (navail != nobj) /* its claimants read snapshot gen & 1: each counts itself in read_done */
        d->readers[NSP_DW_GEN(w) & 1u] = claimed;
    uint held = nobj - navail + claimed;
    uint live = held > nf ? held - nf : 0u;
    nsp__charge(h, d, (long)live * nsp_geom_class_size(cls), stripe);
    nsp__count(h, NSP_DC_RELEASES);
    atomic_xchg(nsp__state(h, c), NSP_DST_MAKE(NSP_DS_BUSY, cls, 0u));
    *has_free = claimed < navail || nf > 0u;
    return c;
}

/* ---- the page pool ----------------------------------------------------------------------------- */

/* k chunks never used, from the carve counter, owned (BUSY; the first's state is the head's);
 * or NSP_DSPAN_NONE. One atom_add, whatever k (a bounded CAS loop on next_chunk made multi-chunk
 * spans lose under contention, docs/device-h200/rejected-multichunk-spans.txt). The chunks are
 * NEW from the add to the exchange, and no scan takes a NEW chunk. An add that passes the end of
 * the pool owns the chunks it got inside it: they go to the pool, where a shorter span or run
 * takes them. */
static uint nsp__carve(__global nsp_dheap *h, uint k)
{
    if (NSP_V64(&h->next_chunk) + k > h->nchunks)
        return (uint)NSP_DSPAN_NONE;
    NSP_TEST_HOOK(h, 2u); /* between the room check and the add */
    ulong c = atom_add(&h->next_chunk, (ulong)k);
    if (c + k <= h->nchunks) {
        for (uint i = 0; i < k; i++)
            atomic_xchg(nsp__state(h, (uint)c + i), NSP_DST_MAKE(NSP_DS_BUSY, 0u, 0u));
        NSP_ACQUIRE();
        return (uint)c;
    }
    if (c < h->nchunks) {
        uint n = (uint)(h->nchunks - c);
        for (uint i = 0; i < n; i++)
            atomic_xchg(nsp__state(h, (uint)c + i), NSP_DST_MAKE(NSP_DS_FREE, 0u, 0u));
        atom_add(&h->free_chunks, (ulong)n);
        nsp__moved(h); /* memory a search may have passed */
    }
    return (uint)NSP_DSPAN_NONE;
}

/* Takes chunks c .. c+r-1, each in state `from`, as state `to`; all or none. */
static int nsp__own_run(__global nsp_dheap *h, uint c, uint r, uint from, uint to)
{
    for (uint i = 0; i < r; i++) {
        if (atomic_cmpxchg(nsp__state(h, c + i), from, to) != from) {
            for (uint j = 0; j < i; j++)
                atomic_xchg(nsp__state(h, c + j), from);
            return 0;
        }
    }
    return 1;
}

/* k consecutive chunks returned to the pool, owned (BUSY); or NSP_DSPAN_NONE. One pass at
 * most (a run does not wrap around the pool's end). */
static uint nsp__scan_free(__global nsp_dheap *h, uint k, uint hint)
{
    if ((long)NSP_V64(&h->free_chunks) < (long)k) /* a hint: races may leave it off a little */
        return (uint)NSP_DSPAN_NONE;
    uint n = (uint)min(NSP_V64(&h->next_chunk), h->nchunks), run = 0u;
    for (uint i = 0; i < n; i++) {
        uint c = (hint + i) % n;
        if (c == 0u)
            run = 0u;
        run = NSP_V32(nsp__state(h, c)) == NSP_DS_FREE ? run + 1u : 0u;
        if (run == k) {
            uint first = c + 1u - k;
            if (nsp__own_run(h, first, k, NSP_DS_FREE, NSP_DST_MAKE(NSP_DS_BUSY, 0u, 0u))) {
                NSP_ACQUIRE(); /* their last owners' writes (nsp__prepare clears the bitmaps) */
                atom_sub(&h->free_chunks, (ulong)k);
                return first;
            }
            run = 0u;
        }
    }
    return (uint)NSP_DSPAN_NONE;
}

/* The out-of-memory search: sweeps uncached spans of every class (one pass). want == 0: every
 * empty one goes back to the pool. Otherwise the first empty one, or one of class `want` with a
 * free object, is returned owned (BUSY) and *fresh says which; the others are put back. *busy
 * counts the spans it found held by another work-item (a failed search is then not final). */
static uint nsp__reclaim(__global nsp_dheap *h, uint want, uint hint, uint stripe, int *fresh,
                         uint *busy)
{
    uint n = (uint)min(NSP_V64(&h->next_chunk), h->nchunks);
    for (uint i = 0; i < n; i++) {
        uint c = (hint + i) % n;
        uint s = NSP_V32(nsp__state(h, c)), st = NSP_DST_STATE(s), cls = NSP_DST_CLASS(s);
        *busy += st == NSP_DS_BUSY;
        if (want && s == NSP_DS_FREE && nsp_dspan_chunks(want) == 1u) { /* NEW: their carver's */
            if (atomic_cmpxchg(nsp__state(h, c), s, NSP_DST_MAKE(NSP_DS_BUSY, 0u, 0u)) == s) {
                NSP_ACQUIRE();
                atom_dec(&h->free_chunks);
                *fresh = 1;
                return c;
            }
            continue;
        }
        if ((st != NSP_DS_PARTIAL && st != NSP_DS_FULL) ||
            atomic_cmpxchg(nsp__state(h, c), s, NSP_DST_MAKE(NSP_DS_BUSY, cls, 0u)) != s)
            continue;
        NSP_ACQUIRE();
        nsp__count(h, NSP_DC_RECLAIMS);
        if (st == NSP_DS_PARTIAL)
            nsp__unpublish(h, cls - NSP_DMIN_CLASS, c);
        uint live = nsp__sweep(h, c, stripe), nobj = NSP_DV(nsp__desc(h, c), nobj);
        if (live == 0u && want && nsp_dspan_chunks(cls) == nsp_dspan_chunks(want)) {
            *fresh = 1;
            return c;
        }
        if (live == 0u) {
            nsp__to_pool(h, c, stripe);
            continue;
        }
        if (cls == want && live < nobj) {
            *fresh = 0;
            return c;
        }
        nsp__put_back(h, c, cls, live < nobj);
    }
    return (uint)NSP_DSPAN_NONE;
}

/* One reclaimer at a time: the out-of-memory sweep of the whole heap is a try-lock (never waited
 * on without bound). Concurrent failing work-items each sweeping every span kept the others'
 * spans BUSY, so no failure was ever final and each ran NSP_SEARCHES whole-heap sweeps (seconds
 * to say "full"); now the others wait for the one sweep's verdict (nsp__get_span). */
static inline int nsp__reclaim_begin(__global nsp_dheap *h)
{
    if (NSP_V64(&h->reclaimer) != 0ul || atom_cmpxchg(&h->reclaimer, 0ul, 1ul) != 0ul)
        return 0;
    NSP_ACQUIRE();
    return 1;
}
static inline void nsp__reclaim_end(__global nsp_dheap *h)
{
    NSP_RELEASE();
    atom_xchg(&h->reclaimer, 0ul);
}

/* The out-of-memory marks say what a final failure failed to find: an object of class ci
 * (h->oom_mark[ci]: 1 + the epoch), or a run of r chunks (h->oom_mark[NSP_DNCLASSES]: 1 + the
 * epoch, shifted past the run length). Only that kind is a null at once while the mark stands:
 * a class without room says nothing of another class's centrals (a mark for the whole heap made
 * one oversized large request, or one class, a null for every class whose slot needed a refill,
 * until the next free). A mark stands while its epoch is the heap's and h->oom has its
 * NSP__OOM_MARKS bit; the next free clears the bit and advances the epoch (nsp__oom_clear), and
 * so does nsp_k_sweep.
 * h->oom's low bits count the searches in their out-of-memory stage (nsp__watch): a free reads
 * h->oom after its atom_or, behind a fence, and one that sees a count advances the epoch too.
 * A search counts itself, behind a fence, before the scans its verdict rests on, so a free that
 * lands behind a scan (which then did not see it) sees the count: with a free that read no mark
 * yet and advanced nothing, the verdict stood, and the class was a null at once, its freed
 * object in a central, until another free. */
#define NSP__OOM_MARKS (1ul << 63)
static inline int nsp__oom_known(__global nsp_dheap *h, uint ci)
{
    if (!(NSP_V64(&h->oom) & NSP__OOM_MARKS))
        return 0;
    ulong m = NSP_V64(&h->oom_mark[ci]);
    return m != 0ul && m - 1ul == NSP_V64(&h->epoch);
}
/* Whether a run of r chunks is known not to be found: one as long or shorter was not. */
static inline int nsp__oom_known_run(__global nsp_dheap *h, uint r)
{
    if (!(NSP_V64(&h->oom) & NSP__OOM_MARKS))
        return 0;
    ulong m = NSP_V64(&h->oom_mark[NSP_DNCLASSES]);
    return m != 0ul && (m >> 20) - 1ul == (NSP_V64(&h->epoch) & (~0ul >> 20)) &&
           r >= (uint)(m & 0xFFFFFul);
}
/* Sets mark `kind` (a class index, or NSP_DNCLASSES) to `mark`, of a search that began at
 * epoch0 (a free since has made it stale already), then the bit that says marks may stand. */
static inline void nsp__oom_set(__global nsp_dheap *h, uint kind, ulong mark)
{
    atom_xchg(&h->oom_mark[kind], mark);
    NSP_FENCE(); /* the epoch read at the search's start, and the mark, before the bit */
    atom_or(&h->oom, NSP__OOM_MARKS);
}
/* A search enters its out-of-memory stage: counted in h->oom (once, *watching), behind a fence,
 * before its scans. nsp__unwatch ends it, after its verdict. */
static inline void nsp__watch(__global nsp_dheap *h, uint *watching)
{
    if (*watching)
        return;
    *watching = 1u;
    atom_inc(&h->oom);
    NSP_FENCE_AFTER_RMW();
}
static inline void nsp__unwatch(__global nsp_dheap *h, uint watching)
{
    if (!watching)
        return;
    NSP_FENCE(); /* the mark set before the count drops: a free that sees neither is later */
    atom_dec(&h->oom);
}
/* Called by every free, after its atom_or (or the state store of a large run) and a fence:
 * memory may be available again. Clears the bit, then advances the epoch (in that order: a
 * search that reads the new epoch sets its bit after this clear). */
static inline void nsp__oom_clear(__global nsp_dheap *h)
{
    ulong o = NSP_V64(&h->oom);
    if (o != 0ul) {
        if (o & NSP__OOM_MARKS)
            atom_and(&h->oom, ~NSP__OOM_MARKS);
        NSP_FENCE_AFTER_RMW();
        atom_inc(&h->epoch);
    }
}

/* Takes slot word *w out of its slot (EMPTY in its place) if it still holds v, a word read with
 * its cursor at most navail: then no claim of that incarnation drew its refill, and the span is
 * the taker's alone (held: h->holding, until installed or released). An exchange, as before,
 * could take a word whose cursor had passed navail since the read, and release its span while
 * the claim that drew the refill swept the same span in place (nsp__refill_in_place) and
 * installed it again: cached in a slot and PARTIAL in its central at once, its objects handed
 * out twice. A compare that fails because claims moved the cursor is tried again on the new
 * word while its cursor is still short of navail (a few times: the steal that an exchange never
 * missed should not turn into a null while another slot's claims run); *v is the word taken. */
static int nsp__take_word(__global nsp_dheap *h, __global ulong *w, ulong *v)
{
    for (uint t = 0; t < 4u; t++) {
        if (t > 0u) {
            *v = NSP_V64(w);
            if (NSP_DW_SPAN(*v) == (uint)NSP_DSPAN_NONE || NSP_DW_CUR(*v) > NSP_DW_NAVAIL(*v))
                return 0; /* emptied, or its refill drawn: its refiller's */
        }
        atom_inc(&h->holding); /* before it leaves the slot: never unseen between two places */
        if (atom_cmpxchg(w, *v, NSP_DW_EMPTY) == *v) {
            NSP_ACQUIRE(); /* the span is the caller's now */
            return 1;
        }
        atom_dec(&h->holding); /* nothing moved */
    }
    return 0;
}

/* Empties the slots of every other class (their spans go back to their centrals, where the
 * out-of-memory sweep finds the empty ones): when the pool is exhausted, spans cached for
 * other sizes are the heap's last reserve. A word being refilled (cursor past navail: some
 * work-item drew cursor == navail) is left to its refiller; a word at exactly navail has none
 * yet, and would keep its span forever. */
static uint nsp__flush_other_classes(__global nsp_dheap *h, uint ci, uint *busy)
{
    uint released = 0u;
    uint n = (uint)h->nslots;
    for (uint k = 0; k < NSP_DNCLASSES; k++) {
        if (k == ci)
            continue;
        for (uint s = 0; s < 2u * n; s++) { /* the slot words, then the prepared next words */
            __global ulong *w = s < n ? nsp__slotw(h, k, s) : nsp__nextw(h, k, s - n);
            ulong v = NSP_V64(w);
            if (NSP_DW_SPAN(v) == (uint)NSP_DSPAN_NONE || NSP_DW_CUR(v) > NSP_DW_NAVAIL(v))
                continue;
            NSP_TEST_HOOK(h, 4u); /* between the read and the take */
            if (!nsp__take_word(h, w, &v)) { /* in use or being refilled: the failure not final */
                (*busy)++;
                continue;
            }
            nsp__release_word(h, v, s & (n - 1u));
            nsp__unhold(h);
            released++;
        }
    }
    return released; /* the caller's own arrivals (nsp__search) */
}

/* A span of class cls with a free entry for slot `slot`: its slot word (the cursor at its first
 * free entry), or NSP_DW_EMPTY when the heap has none. Order: the class's centrals, the carve
 * counter, chunks returned to the pool, the cached spans of this class's other slots (the word
 * moves, cursor and all), then the out-of-memory search: other classes' slots emptied and every
 * span swept. The search fails for good (and later refills fail at once, until a free) only when
 * it met no span that another work-item held. */
/* nsp__prepare for the search: the span counts as held (h->holding) from before it leaves BUSY
 * until the caller installs or releases its word (nsp__landed). */
static ulong nsp__prepare_held(__global nsp_dheap *h, uint c, uint cls, int fresh, int reused,
                               uint slot)
{
    atom_inc(&h->holding);
    ulong w = nsp__prepare(h, c, cls, fresh, reused, slot);
    if (w == NSP_DW_EMPTY) /* put back from BUSY: no arrival to mark */
        atom_dec(&h->holding);
    return w;
}

/* The span prepared in (class ci, slot)'s next word, taken out (held, as nsp__get_span's words
 * are, until its taker installs or releases it), or NSP_DW_EMPTY. */
static ulong nsp__take_next(__global nsp_dheap *h, uint ci, uint slot)
{
    __global ulong *nx = nsp__nextw(h, ci, slot);
    if (NSP_V64(nx) == NSP_DW_EMPTY)
        return NSP_DW_EMPTY;
    atom_inc(&h->holding); /* before it leaves the word: never unseen between two places */
    ulong x = atom_xchg(nx, NSP_DW_EMPTY);
    if (x == NSP_DW_EMPTY)
        atom_dec(&h->holding); /* another taker's: nothing moved */
    else
        NSP_ACQUIRE(); /* its preparer's descriptor writes */
    return x;
}

/* The claim that leaves a quarter of a dense span's entries (nsp__prefetch_due) prepares the
 * slot's next span, so the claim at the end installs it without a search and the claims that
 * wait on that refill wait for an exchange, not for a sweep or a carve. Dense spans only: a
 * fresh span running out is a class growing, where the next span is sure to be wanted; in a
 * steady state (spans reused with a few free entries) a prepared span is one more span cached
 * per slot. Only the
 * cheap places: a central's span or the carve counter; never the out-of-memory search, so a
 * prepared span never takes the last memory from a slot that needs it now (and the searches
 * take prepared spans). */
#ifdef NSP_PREFETCH
/* Whether the claim at cursor cur of word w is that one. */
static inline int nsp__prefetch_due(ulong w, uint cur, uint nobj)
{
    return NSP_DW_NAVAIL(w) == nobj && cur == nobj - nobj / 4u;
}
#else
/* Off unless a program is built with -DNSP_PREFETCH (nsp_cl_build's options reach the library):
 * on POCL it costs fragmentation (a span prepared per growing slot and class: range/live 2.2 ->
 * 2.8) and cannot gain (a group's work-items run one after another on one thread, so none waits
 * on a refill), and no GPU has measured it yet (`bench_device --prefetch`). */
static inline int nsp__prefetch_due(ulong w, uint cur, uint nobj)
{
    (void)w; /* a constant 0: no compare on the claim path of a build without it */
    (void)cur;
    (void)nobj;
    return 0;
}
#endif
static void nsp__prefetch(__global nsp_dheap *h, uint cls, uint slot)
{
    uint ci = cls - NSP_DMIN_CLASS;
    __global ulong *nx = nsp__nextw(h, ci, slot);
    if (NSP_V64(nx) != NSP_DW_EMPTY || nsp__oom_known(h, ci))
        return;
    ulong w = NSP_DW_EMPTY;
    uint c = nsp__take_partial(h, ci, slot * 7u);
    if (c != (uint)NSP_DSPAN_NONE) {
        nsp__count(h, NSP_DC_REUSED);
        uint live = nsp__sweep(h, c, slot);
        w = nsp__prepare_held(h, c, cls, live == 0u, live == 0u, slot);
    } else {
        c = nsp__carve(h, nsp_dspan_chunks(cls));
        if (c != (uint)NSP_DSPAN_NONE) {
            nsp__count(h, NSP_DC_FRESH);
            w = nsp__prepare_held(h, c, cls, 1, 0, slot);
        }
    }
    if (w == NSP_DW_EMPTY)
        return;
    ulong old = atom_xchg(nx, w);
    nsp__unhold(h); /* arrived in the next word: a search that passed it is not final */
    if (old != NSP_DW_EMPTY) { /* another prefetcher's, after a refill took the one before */
        atom_inc(&h->holding);
        nsp__release_word(h, old, slot);
        nsp__unhold(h);
    }
}

/* A PARTIAL span of class cls from its centrals (up to 4 tries), swept and prepared for slot
 * `slot`: its word, held (nsp__prepare_held), or NSP_DW_EMPTY. */
static ulong nsp__from_central(__global nsp_dheap *h, uint cls, uint slot)
{
    for (uint t = 0; t < 4u; t++) {
        uint c = nsp__take_partial(h, cls - NSP_DMIN_CLASS, slot * 7u + t);
        if (c == (uint)NSP_DSPAN_NONE)
            break;
        nsp__count(h, NSP_DC_REUSED);
        uint live = nsp__sweep(h, c, slot);
        ulong w = nsp__prepare_held(h, c, cls, live == 0u, live == 0u, slot);
        if (w != NSP_DW_EMPTY)
            return w;
    }
    return NSP_DW_EMPTY;
}

/* While another work-item holds the reclaimer token: an empty span of another class of the same
 * chunk count, taken from its central (where the flush of other classes put it), swept, and
 * returned owned (BUSY) for class cls (*fresh = 1); a span that is not empty goes back. Without
 * it, the memory the flush had just released to the centrals was reachable only through the
 * token's sweep, and a reclaimer preempted mid-sweep (a loaded POCL host: a worker thread off
 * its CPU for a time slice) left every other failing search waiting its NSP_SEARCHES rounds out
 * and returning a null with that memory free (many_work_items_many_slots: 1 run in ~70 failed at
 * load 15; 0 in 300 with this). One take from each class's centrals at most: not a second
 * sweep of the heap (one_reclaimer_at_a_time). */
static uint nsp__from_other_centrals(__global nsp_dheap *h, uint cls, uint slot, int *fresh)
{
    uint chunks = nsp_dspan_chunks(cls);
    for (uint k = NSP_DMIN_CLASS; k <= NSP_DMAX_CLASS; k++) {
        if (k == cls || nsp_dspan_chunks(k) != chunks)
            continue;
        uint c = nsp__take_partial(h, k - NSP_DMIN_CLASS, slot * 7u);
        if (c == (uint)NSP_DSPAN_NONE)
            continue;
        nsp__count(h, NSP_DC_REUSED); /* a take from a central, not the token's sweep */
        uint live = nsp__sweep(h, c, slot);
        if (live == 0u) {
            *fresh = 1;
            return c;
        }
        /* not empty: back (from BUSY: a search that met it meanwhile counted it busy); the
         * class's other spans are the token's sweep to find */
        nsp__put_back(h, c, k, live < NSP_DV(nsp__desc(h, c), nobj));
    }
    return (uint)NSP_DSPAN_NONE;
}

static ulong nsp__search_watched(__global nsp_dheap *h, uint cls, uint slot, uint *busy,
                                 uint *watching)
{
    uint ci = cls - NSP_DMIN_CLASS;
    ulong moves0 = NSP_V64(&h->moves), own = 0ul; /* own: arrivals this search made itself */
    for (uint round = 0; round < 2u; round++) {
        ulong cw = nsp__from_central(h, cls, slot);
        if (cw != NSP_DW_EMPTY)
            return cw;
        if (round == 0u) {
            uint c = nsp__carve(h, nsp_dspan_chunks(cls));
            if (c != (uint)NSP_DSPAN_NONE) {
                nsp__count(h, NSP_DC_FRESH);
                return nsp__prepare_held(h, c, cls, 1, 0, slot);
            }
            c = nsp__scan_free(h, nsp_dspan_chunks(cls), slot * 131u);
            if (c != (uint)NSP_DSPAN_NONE)
                return nsp__prepare_held(h, c, cls, 1, 1, slot);
            /* the out-of-memory stage: what follows rests on scans that a free may pass */
            nsp__watch(h, watching);
            /* a span prepared for a slot of this class (any, this one's included): whole */
            for (uint i = 0; i < h->nslots; i++) {
                ulong x = nsp__take_next(h, ci, (slot + i) & ((uint)h->nslots - 1u));
                if (x != NSP_DW_EMPTY) {
                    nsp__count(h, NSP_DC_STEALS);
                    return x;
                }
            }
            /* another slot's cached span of this class, taken whole; a used-up one that no claim
             * has come to refill (cursor == navail) goes back to its central, where frees into it
             * count again */
            for (uint i = 1; i < h->nslots; i++) {
                uint o = (slot + i) & ((uint)h->nslots - 1u);
                __global ulong *ow = nsp__slotw(h, ci, o);
                ulong v = NSP_V64(ow);
                if (NSP_DW_SPAN(v) == (uint)NSP_DSPAN_NONE || NSP_DW_CUR(v) > NSP_DW_NAVAIL(v))
                    continue;
                NSP_TEST_HOOK(h, 3u); /* between the read and the take */
                if (!nsp__take_word(h, ow, &v)) { /* in use or being refilled: try again later */
                    (*busy)++;
                    continue;
                }
                nsp__count(h, NSP_DC_STEALS);
                if (NSP_DW_CUR(v) < NSP_DW_NAVAIL(v))
                    return v;
                nsp__release_word(h, v, o); /* used up, and no claim drew its refill: ours */
                nsp__unhold(h);
                own++;
            }
            NSP_TEST_HOOK(h, 1u); /* after the steal scan */
            own += nsp__flush_other_classes(h, ci, busy);
        }
        int fresh = 0;
        uint c = (uint)NSP_DSPAN_NONE;
        if (nsp__reclaim_begin(h)) {
            c = nsp__reclaim(h, cls, slot * 257u, slot, &fresh, busy);
            nsp__reclaim_end(h);
        } else {
            (*busy)++; /* another work-item is sweeping the heap: not final, and not twice */
            c = nsp__from_other_centrals(h, cls, slot, &fresh);
        }
        if (c == (uint)NSP_DSPAN_NONE && nsp_dspan_chunks(cls) > 1u) {
            /* the sweep gave empty spans of other sizes back to the pool: a run of them */
            fresh = 1;
            c = nsp__scan_free(h, nsp_dspan_chunks(cls), slot * 131u);
        }
        if (c != (uint)NSP_DSPAN_NONE) {
            ulong w = nsp__prepare_held(h, c, cls, fresh, 1, slot);
            if (w != NSP_DW_EMPTY)
                return w;
        }
    }
    /* The scans are not one snapshot: memory that arrived behind them (a refill completing in a
     * slot already scanned, a span published in a central already searched) was missed. That
     * was the empty steal scan a rescan right after did not repeat (issue 13 item 6): refills
     * that completed between the steal scan and the reclaim scan. Every transit is BUSY or counted
     * in holding, and every arrival not from BUSY bumps moves (nsp__moved), so a failure with no
     * arrival but its own, no busy span and nothing held saw the whole heap. */
    if (NSP_V64(&h->moves) - moves0 != own)
        (*busy)++;
    return NSP_DW_EMPTY;
}
/* One search, counted in h->oom while in its out-of-memory stage. */
static ulong nsp__search(__global nsp_dheap *h, uint cls, uint slot, uint *busy)
{
    uint watching = 0u;
    ulong w = nsp__search_watched(h, cls, slot, busy, &watching);
    nsp__unwatch(h, watching);
    return w;
}

/* The search, with the bookkeeping that makes a failure final: a search that fails while no
 * span was busy, nothing arrived behind its scans (moves) and no word was held outside the slots
 * (h->holding: taken by a search or out of a slot, not yet installed or released) sets the
 * out-of-memory mark of its class, and later refills of the class fail at once until a free. A
 * word returned here stays held until the caller installs or releases it (nsp__landed). */
static ulong nsp__get_span(__global nsp_dheap *h, uint cls, uint slot)
{
    uint ci = cls - NSP_DMIN_CLASS;
    if (nsp__oom_known(h, ci))
        return NSP_DW_EMPTY;
    ulong epoch0 = NSP_V64(&h->epoch), w = NSP_DW_EMPTY;
    uint watching = 0u; /* counted in h->oom from the first search's out-of-memory stage on */
    /* While other work-items hold spans (busy, or words between slots) or memory arrives, the
     * memory exists and moves: search again, up to NSP_SEARCHES times. A quiet failure is final. */
    for (uint t = 0; t < NSP_SEARCHES; t++) {
        uint busy = 0u;
        w = nsp__search_watched(h, cls, slot, &busy, &watching);
        if (w != NSP_DW_EMPTY)
            break;
        NSP_TEST_HOOK(h, 5u); /* between a failed search and its verdict */
        if (busy == 0u && NSP_V64(&h->holding) == 0ul) {
            nsp__oom_set(h, ci, epoch0 + 1ul);
            break;
        }
        /* a sweep by another work-item is running: its verdict, not another sweep, is what
         * this one needs (bounded: then search again) */
        for (uint spins = 0; spins < NSP_SPIN * 16u && NSP_V64(&h->reclaimer) != 0ul &&
                             !nsp__oom_known(h, ci);
             spins++)
            ;
        if (nsp__oom_known(h, ci))
            break;
    }
    nsp__unwatch(h, watching);
    return w;
}
/* A word held since nsp__get_span arrived: installed in a slot, or released to its central. */
static inline void nsp__landed(__global nsp_dheap *h) { nsp__unhold(h); }

/* ---- claims ------------------------------------------------------------------------------------ */

enum { NSP__GOT = 0, NSP__REFILL = 1, NSP__WAIT = 2, NSP__LOST = 3 };

/* The exact mode's charge of one object of span c, as it is handed out or freed. */
static inline void nsp__exact(__global nsp_dheap *h, uint c, long bytes, uint slot)
{
    atom_add((volatile __global long *)&nsp__desc(h, c)->charge, bytes);
    atom_add(nsp__stripe(h, slot), bytes);
}

/* What a claim at cursor `cur` of the slot word w gives; an object it gives is charged here in
 * the exact mode (every caller hands it out). */
static int nsp__claim(__global nsp_dheap *h, ulong w, uint cur, uint size, uint nobj,
                      uint slot, nsp_dhandle *out)
{
    uint navail = NSP_DW_NAVAIL(w);
    if (cur > navail)
        return NSP__WAIT;
    if (cur == navail)
        return NSP__REFILL;
    uint c = NSP_DW_SPAN(w);
    if (navail == nobj) { /* dense: entry i is object i */
        *out = nsp__chunk_off(h, c) + (ulong)cur * size;
        if (cur + 1u < navail)
            NSP_PREFETCH_OBJECT(nsp__b(h) + *out + size);
        if (h->acct == 2ul)
            nsp__exact(h, c, (long)size, slot);
        return NSP__GOT;
    }
    /* acquire: the snapshot was written before the refiller published the word we drew */
    NSP_ACQUIRE();
    __global struct nsp_ddesc *d = nsp__desc(h, c);
    uint par = NSP_DW_GEN(w) & 1u;
    volatile __global ushort *prefix = d->prefix[par];
    uint lo = 0u, hi = nsp__nwords(nobj);
    while (hi - lo > 1u) {
        uint mid = (lo + hi) / 2u;
        if (prefix[mid] <= cur)
            lo = mid;
        else
            hi = mid;
    }
    ulong fr = NSP_V64(&d->avail[par][lo]);
    uint k = cur - prefix[lo];
    uint idx = lo * 64u + nsp__select(fr, k);
    /* The snapshot's reads are over before they are counted done: the incarnation after next
     * rewrites this buffer only once every claimant of this one has counted (nsp__prepare), so
     * a claim can no longer lose its object. The gen check stays as a tripwire (NSP_DC_LOST). */
    NSP_ACQ_REL(); /* the snapshot's loads before the re-read of gen and the count */
    int lost = ((NSP_V32(&d->gen) - NSP_DW_GEN(w)) & 0x1FFu) > 1u || k >= nsp__pop(fr);
    atomic_inc(&d->read_done[par]);
    if (lost) {
        nsp__count(h, NSP_DC_LOST);
        return NSP__LOST;
    }
    *out = nsp__chunk_off(h, c) + (ulong)idx * size;
    if (idx + 1u < nobj) /* free entries cluster in a reused span: its neighbour, likely next */
        NSP_PREFETCH_OBJECT(nsp__b(h) + *out + size);
    if (h->acct == 2ul)
        nsp__exact(h, c, (long)size, slot);
    return NSP__GOT;
}

/* The refill's first choice: the slot's own span, swept in place and installed again, when at
 * least an eighth of its objects were freed while it was cached (a sixteenth when the centrals
 * have no span; nsp__refill counts the frees). Without it a slot that ran out
 * always took another span from the central and sent its own there, so each (class, slot) kept
 * one span more in circulation than its live objects need: the fragmentation case (16-256 B,
 * half freed and reallocated each round) carved 2.2x its live bytes, 3 spans per class for what
 * 2 hold (issue 13's target: 1.5). The eighth keeps a refill worth >= 64 claims (>= 512 objects
 * per span). w is the word the caller drew (cursor == navail: it is the refiller, and no one else
 * takes a word whose cursor passed navail: the searches take one only by a compare-and-swap of
 * the word they read, nsp__take_word; so the span is its own to release); returns whether
 * it was released (the caller must then not release w's span again) and, in *nw, the new word
 * (held, as nsp__get_span's) or NSP_DW_EMPTY when it was put back to its central instead. */
static int nsp__refill_in_place(__global nsp_dheap *h, ulong w, uint cls, uint slot, ulong *nw)
{
    *nw = NSP_DW_EMPTY;
    if (NSP_DW_SPAN(w) == (uint)NSP_DSPAN_NONE)
        return 0;
    int has_free;
    uint c = nsp__retire_word(h, w, slot, &has_free); /* BUSY: as if released and taken back */
    uint live = nsp__sweep(h, c, slot);
    *nw = nsp__prepare_held(h, c, cls, live == 0u, live == 0u, slot);
    return 1;
}

/* The claim at cursor == navail (or a work-item past the retry bound): installs a span with a
 * free entry (the first of which is the caller's, found before the word is published) and
 * releases whatever the slot held. w: the word whose cursor the caller drew at navail. Returns
 * the caller's object, or 0 when the heap has none. */
static nsp_dhandle nsp__refill(__global nsp_dheap *h, __global ulong *sw, ulong w, uint cls,
                               uint slot, uint size, uint nobj)
{
    for (uint t = 0; t < 4u; t++) {
        /* the span prepared for this slot, else the slot's own swept in place, else a search */
        ulong nw = t == 0u ? nsp__take_next(h, cls - NSP_DMIN_CLASS, slot) : NSP_DW_EMPTY;
        int retired = 0;
        /* the own span's frees since its install, counted once (none in a growing class) */
        uint nf = nw == NSP_DW_EMPTY && t == 0u && NSP_DW_SPAN(w) != (uint)NSP_DSPAN_NONE
                      ? nsp__nfreed(nsp__desc(h, NSP_DW_SPAN(w)), nobj)
                      : 0u;
        if (nf >= nobj / 8u) {
            retired = nsp__refill_in_place(h, w, cls, slot, &nw);
        } else if (nf >= max(nobj >> NSP_INPLACE_SHIFT, 1u)) {
            /* Before carving: a central's span, else the own span again for fewer frees (a
             * sixteenth: a refill still worth >= 32 claims). The search carves when the
             * centrals are empty, and with two slots they often are while each slot's own span
             * has frees: the other slot just took the one central span. Each such carve
             * stays (a span with live objects never goes back to the pool): the fragmentation
             * case crept from 54 chunks after its first round to 64 after 100, and stops at
             * 61 with this (issue 13). Not any free at all: a span installed again for a few
             * entries makes a refill every few claims. */
            nw = nsp__from_central(h, cls, slot);
            if (nw == NSP_DW_EMPTY)
                retired = nsp__refill_in_place(h, w, cls, slot, &nw);
        }
        if (nw == NSP_DW_EMPTY)
            nw = nsp__get_span(h, cls, slot);
        nsp_dhandle r = 0ul;
        int got = NSP__WAIT;
        if (nw != NSP_DW_EMPTY)
            got = nsp__claim(h, nw, NSP_DW_CUR(nw), size, nobj, slot, &r);
        atom_inc(&h->holding); /* the old word, between its slot and its central: held */
        ulong old = atom_xchg(sw, nw == NSP_DW_EMPTY ? nw : nw + 1ul);
        if (!retired) /* else its span was released by nsp__refill_in_place */
            nsp__release_word(h, old, slot);
        nsp__unhold(h);
        if (nw == NSP_DW_EMPTY)
            break;
        nsp__landed(h);
        if (got == NSP__GOT)
            return r;
    }
    nsp__count(h, NSP_DC_NULL_OOM);
    return 0ul;
}

/* Whether a claim may add to slot word w: only while its cursor has not passed navail (cursor ==
 * navail: the next claim draws the refill). Past navail a refill is in progress and a claim
 * waits without adding: blind retries carried the 20-bit cursor into the generation. With the
 * check, every add follows a read that saw cursor <= navail <= 4096, so the cursor stays below
 * 4096 + the work-items resident on the device at once (each has at most one add in flight; a
 * group's add counts its members), well inside 2^20 on the GPUs of PLATFORM.md. A word returned
 * without an add has cursor > navail, which nsp__claim reads as "wait". */
static inline int nsp__room(ulong w) { return NSP_DW_CUR(w) <= NSP_DW_NAVAIL(w); }

/* The warp shim: on NVIDIA, the lanes of a warp that claim on the same slot word make one
 * atom_add for all of them (what CUDA's compiler does for uniform atomics; NVIDIA's OpenCL
 * compiler does not). Elsewhere each work-item makes its own. */
#if defined(NSP_FENCE_MEMBAR) && !defined(NSP_NO_WARP_CLAIM)
#define NSP__WARP_CLAIM 1
static inline ulong nsp__claim_word(__global ulong *sw, uint key, uint *rank, uint *peers_out)
{
    uint active, peers, lt, lo, hi;
    asm volatile("activemask.b32 %0;" : "=r"(active));
    asm volatile("match.any.sync.b32 %0, %1, %2;" : "=r"(peers) : "r"(key), "r"(active));
    asm volatile("mov.u32 %0, %%lanemask_lt;" : "=r"(lt));
    uint leader = 31u - clz(peers & (0u - peers));
    *peers_out = peers;
    *rank = popcount(peers & lt);
    ulong w = 0ul;
    if (*rank == 0u) {
        w = NSP_V64(sw);
        if (nsp__room(w))
            w = atom_add(sw, (ulong)popcount(peers));
    }
    asm volatile("shfl.sync.idx.b32 %0, %1, %2, 0x1f, %3;"
                 : "=r"(lo) : "r"((uint)w), "r"(leader), "r"(peers));
    asm volatile("shfl.sync.idx.b32 %0, %1, %2, 0x1f, %3;"
                 : "=r"(hi) : "r"((uint)(w >> 32)), "r"(leader), "r"(peers));
    return ((ulong)hi << 32) | lo;
}
#else
static inline ulong nsp__claim_word(__global ulong *sw, uint key, uint *rank, uint *peers_out)
{
    *rank = 0u;
    *peers_out = 0u * key;
    ulong w = NSP_V64(sw);
    return nsp__room(w) ? atom_add(sw, 1ul) : w;
}
#endif

/* Waiting on the warp (issue 13, Deliver 4): the lanes of a warp whose combined claim fell past
 * navail, while a lane of the same claim drew navail and refills, wait for that lane at a warp
 * barrier (bar.warp.sync over the refiller and its waiters) instead of polling the slot word in
 * global memory; the refiller joins the barrier once its refill is installed, and the waiters
 * then claim again (combined). The barrier orders memory among its lanes (PTX ISA), so they see
 * the new word. No deadlock: the refiller waits on no lane. nsp__warp_roles's ballot runs over
 * the claim's peers, which all reach it (every peer returns from nsp__claim to it).
 * Only on NVIDIA (inline PTX, Volta+: lanes of a warp progress independently). OpenCL's
 * sub-group functions (cl_khr_subgroups) must be reached by every work-item of the sub-group
 * in uniform control flow, which nsp_dmalloc (usable in divergent code) cannot promise: devices
 * with sub-groups poll as elsewhere (their non-uniform extensions would do; none here offers
 * them: POCL 3.1 has no sub-groups, the H200's OpenCL neither). NSP_NO_WARP_WAIT turns it off. */
#if defined(NSP__WARP_CLAIM) && !defined(NSP_NO_WARP_WAIT)
static inline void nsp__warp_roles(uint peers, int got, uint *waiters, uint *refiller)
{
    uint wb, rb;
    asm volatile("{ .reg .pred p; setp.eq.u32 p, %1, 2; vote.sync.ballot.b32 %0, p, %2; }"
                 : "=r"(wb) : "r"((uint)got), "r"(peers));
    asm volatile("{ .reg .pred p; setp.eq.u32 p, %1, 1; vote.sync.ballot.b32 %0, p, %2; }"
                 : "=r"(rb) : "r"((uint)got), "r"(peers));
    *waiters = wb;
    *refiller = rb;
}
static inline void nsp__warp_sync(uint mask)
{
    asm volatile("bar.warp.sync %0;" : : "r"(mask) : "memory");
}
#else
static inline void nsp__warp_roles(uint peers, int got, uint *waiters, uint *refiller)
{
    *waiters = 0u * peers;
    *refiller = 0u * (uint)got;
}
static inline void nsp__warp_sync(uint mask) { (void)mask; }
#endif

/* Claims on slot `slot` of class cls until one gives an object; past the bound, takes one
 * directly from a central span (a null then means the heap is exhausted). */
static nsp_dhandle nsp__alloc_small(__global nsp_dheap *h, uint cls, uint slot)
{
    uint ci = cls - NSP_DMIN_CLASS, size = nsp_geom_class_size(cls), nobj = nsp__nobj(cls);
    uint mask = (uint)h->nslots - 1u;
    for (uint attempt = 0; attempt < NSP_ATTEMPTS; attempt++) {
        __global ulong *sw = nsp__slotw(h, ci, slot);
        uint rank = 0u, peers = 0u, waiters = 0u, refiller = 0u;
        /* combined on every attempt: the lanes that retry together (after the same refill, on the
         * same slot) are the ones that hammered the word one add each */
        ulong w = nsp__claim_word(sw, ci * (mask + 1u) + slot, &rank, &peers);
        nsp_dhandle r = 0ul;
        int got = nsp__claim(h, w, NSP_DW_CUR(w) + rank, size, nobj, slot, &r);
        nsp__warp_roles(peers, got, &waiters, &refiller);
        if (got == NSP__GOT) {
            if (nsp__prefetch_due(w, NSP_DW_CUR(w) + rank, nobj))
                nsp__prefetch(h, cls, slot);
            return r;
        }
        if (got == NSP__REFILL) {
            r = nsp__refill(h, sw, w, cls, slot, size, nobj);
            if (waiters) /* the lanes of this claim past navail wait on this one */
                nsp__warp_sync(waiters | refiller);
            return r;
        }
        if (got == NSP__LOST)
            continue;
        if (refiller) { /* a lane of this claim refills the word: wait on it, not on memory */
            nsp__warp_sync(waiters | refiller);
            continue;
        }
        /* wait for the refill; a class known full (its out-of-memory mark) ends the wait: the
         * refill will install nothing, and the null is the answer at once */
        uint spins = 0u;
        while (spins < NSP_SPIN && (NSP_V64(sw) >> 20) == (w >> 20) &&
               ((spins & 63u) != 63u || !nsp__oom_known(h, ci)))
            spins++;
        if (nsp__oom_known(h, ci))
            break;
        if (spins == NSP_SPIN)
            slot = (slot + 1u) & mask;
    }
    if (nsp__oom_known(h, ci)) { /* no search: it would fail at once, and count a forced refill */
        nsp__count(h, NSP_DC_NULL_OOM);
        return 0ul;
    }
    /* past the bound: one object straight from a span of the central (or the pool), which goes
     * back at once; the slots, which others are refilling, are left alone */
    nsp__count(h, NSP_DC_FORCED);
    for (uint t = 0; t < 4u; t++) {
        ulong nw = nsp__get_span(h, cls, slot);
        if (nw == NSP_DW_EMPTY)
            break;
        nsp_dhandle r = 0ul;
        int got = nsp__claim(h, nw, NSP_DW_CUR(nw), size, nobj, slot, &r);
        nsp__release_word(h, nw + 1ul, slot);
        nsp__landed(h);
        if (got == NSP__GOT)
            return r;
    }
    nsp__count(h, NSP_DC_NULL_OOM);
    return 0ul;
}

/* ---- large objects: runs of chunks ------------------------------------------------------------ */

/* A run of r chunks for a large object, owned: the carve counter's (one atom_add), else the
 * pool's; the chunks after the first become LTAIL. */
static uint nsp__find_run(__global nsp_dheap *h, uint r, uint hint)
{
    uint c = nsp__carve(h, r);
    if (c == (uint)NSP_DSPAN_NONE)
        c = nsp__scan_free(h, r, hint);
    if (c != (uint)NSP_DSPAN_NONE)
        for (uint i = 1u; i < r; i++)
            atomic_xchg(nsp__state(h, c + i), NSP_DST_MAKE(NSP_DS_LTAIL, 0u, 0u));
    return c;
}

static nsp_dhandle nsp__alloc_large(__global nsp_dheap *h, ulong size, uint slot)
{
    ulong r = (size + NSP_DCHUNK - 1u) >> NSP_DCHUNK_SHIFT;
    if (r > NSP_DMAX_RUN || r > h->nchunks) {
        nsp__count(h, NSP_DC_NULL_OOM);
        return 0ul;
    }
    uint c = nsp__find_run(h, (uint)r, slot * 977u);
    if (c == (uint)NSP_DSPAN_NONE && !nsp__oom_known_run(h, (uint)r)) {
        ulong epoch0 = NSP_V64(&h->epoch), moves0 = NSP_V64(&h->moves), own;
        int fresh;
        uint busy = 0u, watching = 0u;
        nsp__watch(h, &watching);
        own = nsp__flush_other_classes(h, NSP_DNCLASSES, &busy);
        if (nsp__reclaim_begin(h)) {
            nsp__reclaim(h, 0u, 0u, slot, &fresh, &busy); /* empty spans back to the pool */
            nsp__reclaim_end(h);
        } else {
            busy++;
        }
        c = nsp__find_run(h, (uint)r, 0u);
        if (c == (uint)NSP_DSPAN_NONE && busy == 0u && NSP_V64(&h->holding) == 0ul &&
            NSP_V64(&h->moves) - moves0 == own)
            nsp__oom_set(h, NSP_DNCLASSES, (epoch0 + 1ul) << 20 | r);
        nsp__unwatch(h, watching);
    }
    if (c == (uint)NSP_DSPAN_NONE) {
        nsp__count(h, NSP_DC_NULL_OOM);
        return 0ul;
    }
    atom_add(nsp__stripe(h, slot), (long)(r << NSP_DCHUNK_SHIFT));
    nsp__count(h, NSP_DC_LARGE_ALLOCS);
    NSP_RELEASE();
    atomic_xchg(nsp__state(h, c), NSP_DST_MAKE(NSP_DS_LARGE, 0u, (uint)r));
    return nsp__chunk_off(h, c);
}

/* ---- the entry points ---------------------------------------------------------------------------- */

static inline void nsp__bad_free(__global nsp_dheap *h, nsp_dhandle p)
{
    nsp__count(h, NSP_DC_BAD_FREES);
    atom_cmpxchg(&h->counter[NSP_DC_FIRST_BAD], 0ul, p + 1ul);
}

/* size bytes (at least 1; 0 is taken as 1), or the null handle 0. Any work-item, any control
 * flow. Small objects are aligned to 16 bytes, large ones to 64 KiB. */
static nsp_dhandle nsp_dmalloc(__global nsp_dheap *h, ulong size)
{
    uint slot = nsp__slot_of_group(h);
    if (size > NSP_DMAX_SMALL)
        return nsp__alloc_large(h, size, slot);
    uint cls = nsp_geom_size_to_class(size < 16ul ? 16u : (uint)size);
    return nsp__alloc_small(h, cls, slot);
}

/* The free of a small object of chunk c at offset off, after the read of its chunk state s that
 * found its class. */
static void nsp__free_small(__global nsp_dheap *h, nsp_dhandle p, uint c, uint off, uint s)
{
    uint st = NSP_DST_STATE(s), cls = NSP_DST_CLASS(s);
    if (st == NSP_DS_NEW || st == NSP_DS_FREE || st == NSP_DS_LTAIL || st == NSP_DS_STAIL ||
        cls < NSP_DMIN_CLASS ||
        cls > NSP_DMAX_CLASS) {
        nsp__bad_free(h, p);
        return;
    }
    uint size = nsp_geom_class_size(cls), idx = nsp__index(off, cls);
    if (idx * size != off || idx >= nsp__nobj(cls)) { /* interior, or in the tail waste */
        nsp__bad_free(h, p);
        return;
    }
    __global struct nsp_ddesc *d = nsp__desc(h, c);
    __global uint *stp = nsp__state(h, c);
    ulong bit = 1ul << (idx & 63u);
    if (atom_or(&d->freed[idx >> 6], bit) & bit) {
        nsp__bad_free(h, p);
        return;
    }
    if (h->acct == 2ul)
        nsp__exact(h, c, -(long)size, nsp__slot_of_group(h));
    /* The state is read again after the atom_or, behind a fence: a release that stores FULL and
     * then (fenced) re-reads the freed bitmap, and this free, form a store-buffering pair, so at
     * least one of the two sees the other and the span cannot stay FULL with this bit set. */
    NSP_FENCE_AFTER_RMW();
    s = NSP_V32(stp);
    if (NSP_DST_STATE(s) == NSP_DS_FULL &&
        atomic_cmpxchg(stp, s, NSP_DST_MAKE(NSP_DS_PARTIAL, cls, 0u)) == s) {
        nsp__publish(h, cls - NSP_DMIN_CLASS, c);
        nsp__moved(h);
    }
    nsp__oom_clear(h);
}

/* Frees a handle from nsp_dmalloc (0 is ignored). A handle the heap did not hand out is counted
 * (NSP_DC_BAD_FREES, the first in NSP_DC_FIRST_BAD) and changes nothing. A second free of a
 * handle is caught the same way only while the first free's bit is still in the freed bitmap,
 * i.e. until the span's next sweep; after that the object may have been handed out again, and a
 * second free then frees its new owner's object (no allocator without per-object tags can tell).
 * A free synchronizes with the malloc that hands the object out next (C11 7.22.3): the caller's
 * accesses to it are done, GPU-wide, before its bit (or a large run's states) can be seen, so
 * no store of the old owner lands after the new owner's (the sweep that reads the bit, the
 * install and the claim after it are ordered: NSP_RELEASE / the slot word / the claim).
 * Without the release, the caller's plain stores and the relaxed atom_or are unordered on a
 * GPU (PTX: no release pattern). NSP_NO_FREE_RELEASE leaves it out (to measure its cost). */
static void nsp_dfree(__global nsp_dheap *h, nsp_dhandle p)
{
    if (p == 0ul)
        return;
#ifndef NSP_NO_FREE_RELEASE
    NSP_RELEASE(); /* the caller's accesses to the object, before the heap can hand it out again */
#endif
    if (p < h->off_pool || p >= h->off_pool + (h->nchunks << NSP_DCHUNK_SHIFT)) {
        nsp__bad_free(h, p);
        return;
    }
    ulong rel = p - h->off_pool;
    uint c = (uint)(rel >> NSP_DCHUNK_SHIFT), off = (uint)(rel & (NSP_DCHUNK - 1u));
    __global uint *stp = nsp__state(h, c);
    uint s = NSP_V32(stp);
    if (NSP_DST_STATE(s) == NSP_DS_STAIL) { /* in a multi-chunk span: its head has the bitmaps */
        c -= NSP_DST_RUN(s);
        off += NSP_DST_RUN(s) << NSP_DCHUNK_SHIFT;
        nsp__free_small(h, p, c, off, NSP_V32(nsp__state(h, c)));
        return;
    }
    if (NSP_DST_STATE(s) != NSP_DS_LARGE) {
        nsp__free_small(h, p, c, off, s);
        return;
    }
    if (off != 0u || atomic_cmpxchg(stp, s, NSP_DST_MAKE(NSP_DS_BUSY, 0u, 0u)) != s) {
        nsp__bad_free(h, p);
        return;
    }
    uint r = NSP_DST_RUN(s);
    for (uint i = 1; i < r; i++)
        atomic_xchg(nsp__state(h, c + i), NSP_DS_FREE);
    atom_add(nsp__stripe(h, nsp__slot_of_group(h)), -(long)((ulong)r << NSP_DCHUNK_SHIFT));
    nsp__count(h, NSP_DC_LARGE_FREES);
    NSP_RELEASE();
    atomic_xchg(stp, NSP_DS_FREE);
    atom_add(&h->free_chunks, (ulong)r);
    nsp__moved(h);
    NSP_FENCE_AFTER_RMW(); /* the chunks and moves stored before h->oom is read (nsp__oom_clear) */
    nsp__oom_clear(h);
}

/* The work-group collective allocation: every work-item of the group calls it (uniform control
 * flow), with the same size; those with want != 0 get an object (or 0). One claim on the slot
 * word serves the whole group; the work-item whose claim falls at the span's end refills it
 * before the others fall back to single claims. scratch: one nsp_dgroup in local memory. */
typedef struct nsp_dgroup {
    ulong word;
    uint count;
    uint pad;
} nsp_dgroup;

static nsp_dhandle nsp_dmalloc_group(__global nsp_dheap *h, ulong size, int want,
                                     __local nsp_dgroup *g)
{
    uint lid = (uint)(get_local_id(0) +
                      get_local_size(0) * (get_local_id(1) + get_local_size(1) * get_local_id(2)));
    if (lid == 0u)
        g->count = 0u;
    barrier(CLK_LOCAL_MEM_FENCE);
    uint rank = want ? atomic_inc(&g->count) : 0u;
    barrier(CLK_LOCAL_MEM_FENCE);
    uint slot = nsp__slot_of_group(h);
    uint small = size <= NSP_DMAX_SMALL;
    uint cls = nsp_geom_size_to_class(size < 16ul ? 16u : (small ? (uint)size : 16u));
    uint ci = cls - NSP_DMIN_CLASS, sz = nsp_geom_class_size(cls), nobj = nsp__nobj(cls);
    __global ulong *sw = nsp__slotw(h, ci, slot);
    if (lid == 0u) {
        ulong v = small && g->count ? NSP_V64(sw) : 0ul;
        g->word = small && g->count && nsp__room(v) ? atom_add(sw, (ulong)g->count) : v;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    ulong w = g->word;
    nsp_dhandle r = 0ul;
    int got = NSP__WAIT;
    if (want && small) {
        got = nsp__claim(h, w, NSP_DW_CUR(w) + rank, sz, nobj, slot, &r);
        if (got == NSP__REFILL)
            r = nsp__refill(h, sw, w, cls, slot, sz, nobj);
        else if (got == NSP__GOT && nsp__prefetch_due(w, NSP_DW_CUR(w) + rank, nobj))
            nsp__prefetch(h, cls, slot);
    }
    barrier(CLK_GLOBAL_MEM_FENCE);
    if (want && (!small || got == NSP__WAIT || got == NSP__LOST))
        r = small ? nsp__alloc_small(h, cls, slot) : nsp__alloc_large(h, size, slot);
    return r;
}

/* ---- the rest of what a GPU programmer expects: usable size, zeroed, aligned, realloc --------- */

/* A request no heap can serve (nsp_dcalloc overflowing, an alignment nsp_dmalloc_aligned does
 * not give): a null, counted, and named by nsp_cl_sync. */
static inline nsp_dhandle nsp__bad_request(__global nsp_dheap *h)
{
    nsp__count(h, NSP_DC_BAD_REQUESTS);
    return 0ul;
}

/* The bytes usable at handle p: its class's size (small), or its run of chunks (large); 0 for
 * the null handle and for a handle the heap cannot have handed out (outside the pool, not at an
 * object's start, in a chunk that holds no object). It reads one state word: it does not tell a
 * live object from a freed one (a cached span's claims reach its bitmaps only at its sweep). */
static ulong nsp_dusable(__global nsp_dheap *h, nsp_dhandle p)
{
    if (p < h->off_pool || p >= h->off_pool + (h->nchunks << NSP_DCHUNK_SHIFT))
        return 0ul;
    ulong rel = p - h->off_pool;
    uint c = (uint)(rel >> NSP_DCHUNK_SHIFT), off = (uint)(rel & (NSP_DCHUNK - 1u));
    uint s = NSP_V32(nsp__state(h, c)), st = NSP_DST_STATE(s), cls = NSP_DST_CLASS(s);
    if (st == NSP_DS_STAIL) { /* a tail of a multi-chunk span: the object's offset in the span */
        off += NSP_DST_RUN(s) << NSP_DCHUNK_SHIFT;
        s = NSP_V32(nsp__state(h, c - NSP_DST_RUN(s)));
        st = NSP_DST_STATE(s);
        if (NSP_DST_CLASS(s) != cls)
            return 0ul;
    }
    if (st == NSP_DS_LARGE)
        return off == 0u ? (ulong)NSP_DST_RUN(s) << NSP_DCHUNK_SHIFT : 0ul;
    if ((st != NSP_DS_CACHED && st != NSP_DS_PARTIAL && st != NSP_DS_FULL && st != NSP_DS_BUSY) ||
        cls < NSP_DMIN_CLASS || cls > NSP_DMAX_CLASS)
        return 0ul;
    uint size = nsp_geom_class_size(cls), idx = nsp__index(off, cls);
    return idx * size == off && idx < nsp__nobj(cls) ? (ulong)size : 0ul;
}

/* Zeroes the first `bytes` of object p (rounded up to 8: every object is a multiple of 16). */
static void nsp__zero(__global nsp_dheap *h, nsp_dhandle p, ulong bytes)
{
    __global ulong *q = (__global ulong *)nsp_dptr(h, p);
    for (ulong i = 0; i < (bytes + 7ul) / 8ul; i++)
        q[i] = 0ul;
}

/* n objects of `size` bytes, zeroed (the pool is not: a chunk may have held other objects), or
 * 0: out of memory, or n * size overflowing (a bad request). */
static nsp_dhandle nsp_dcalloc(__global nsp_dheap *h, ulong n, ulong size)
{
    if (size != 0ul && n > ~0ul / size)
        return nsp__bad_request(h);
    ulong bytes = n * size;
    nsp_dhandle p = nsp_dmalloc(h, bytes);
    if (p)
        nsp__zero(h, p, bytes);
    return p;
}

/* size bytes at a handle that is a multiple of `align` (a power of two up to NSP_DMAX_ALIGN,
 * 4 KiB; anything else is a bad request: 0), freed with nsp_dfree like any other. No header and
 * no over-allocation to carve an aligned start: the object comes from the first class whose
 * size is a multiple of align (every object of such a class is aligned, the pool starting on a
 * 4 KiB boundary), or from a run of chunks. The pointer (nsp_dptr) is aligned as much as the
 * buffer's own address, at least CL_DEVICE_MEM_BASE_ADDR_ALIGN. */
static nsp_dhandle nsp_dmalloc_aligned(__global nsp_dheap *h, ulong align, ulong size)
{
    if (align == 0ul || (align & (align - 1ul)) || align > NSP_DMAX_ALIGN)
        return nsp__bad_request(h);
    if (align <= 16ul)
        return nsp_dmalloc(h, size);
    ulong n = ((size ? size : 1ul) + align - 1ul) & ~(align - 1ul);
    uint slot = nsp__slot_of_group(h);
    if (n <= NSP_DMAX_SMALL) /* ends at the 8 KiB class at the latest */
        for (uint cls = nsp_geom_size_to_class((uint)n); cls <= NSP_DMAX_CLASS; cls++)
            if (nsp_geom_class_size(cls) % (uint)align == 0u)
                return nsp__alloc_small(h, cls, slot);
    return nsp__alloc_large(h, n, slot);
}

/* Resizes object p to `size` bytes, as C's realloc: p == 0 is nsp_dmalloc(size); size == 0 frees
 * p and returns 0 (glibc's choice); a size that still fits p's usable size and uses more than half
 * of it keeps p; otherwise a new object gets the old contents (up to the smaller size) and p is
 * freed. Out of memory: 0, and p is left as it was. A handle the heap did not hand out: 0, counted
 * as a bad free (nsp_cl_sync names it). */
static nsp_dhandle nsp_drealloc(__global nsp_dheap *h, nsp_dhandle p, ulong size)
{
    if (p == 0ul)
        return nsp_dmalloc(h, size);
    ulong have = nsp_dusable(h, p);
    if (have == 0ul) {
        nsp__bad_free(h, p);
        return 0ul;
    }
    if (size == 0ul) {
        nsp_dfree(h, p);
        return 0ul;
    }
    if (size <= have && (have <= 16ul || size > have / 2ul))
        return p;
    nsp_dhandle q = nsp_dmalloc(h, size);
    if (q == 0ul)
        return 0ul;
    __global const ulong *from = (__global const ulong *)nsp_dptr(h, p);
    __global ulong *to = (__global ulong *)nsp_dptr(h, q);
    ulong words = ((size < have ? size : have) + 7ul) / 8ul;
    for (ulong i = 0; i < words; i++)
        to[i] = from[i];
    nsp_dfree(h, p); /* its release: the old object's reads are done before another reuses it */
    return q;
}
