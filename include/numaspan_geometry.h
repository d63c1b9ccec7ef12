/*
 * numaspan_geometry.h — the one header of geometry shared by C (host) and OpenCL C (kernels/).
 *
 * Owns: the size-class rule (which sizes are classes, and the class of a request), used by the
 * host's tables (host/sizeclass.c) and by the device heap; the device heap's buffer layout
 * (header, slot words, charge stripes, chunk states, span descriptors, central bitmaps, pool);
 * the encodings of the slot word and the chunk state word.
 *
 * It is compiled as C11 by the host and as OpenCL C 1.2 inside every device program (device/
 * prepends its text to the kernels at build time, so no #include has to resolve on the device).
 * Keep it to macros, typedefs, plain structs and static inline functions of integers.
 *
 * Size classes (host and device alike): 8, 16, then multiples of 16 up to 128, then eight
 * classes per doubling (step 2^(e-3) above 2^e), up to 32 KiB on the host (class 73) and 8 KiB on
 * the device (classes 2..57: 16 B .. 8 KiB, 56 classes). Class 0 means "large".
 *
 * Device heap buffer (all offsets in bytes from the buffer's start; a handle is such an offset,
 * 0 is the null handle, since offset 0 holds the header):
 *
 *   header   struct nsp_dheap_hdr: layout, counters of rare events
 *   slots    ulong[2][NSP_DNCLASSES][nslots]: one slot word per (class, slot), then one *next*
 *            word per (class, slot): a span prepared before the slot's runs out (cursor 0, or
 *            NSP_DW_EMPTY), which the slot's refill installs without a search
 *   stripes  long[nslots]: the ledger's charge counters, striped by slot (heapLive = their sum)
 *   partial  ulong[NSP_DNCLASSES]: each class's summary word: bit j set when central j may hold
 *            a PARTIAL span (a hint; at most 64 centrals)
 *   state    uint[nchunks]: one chunk state word per pool chunk
 *   desc     struct nsp_ddesc[nchunks]: a span descriptor per chunk (bitmaps, cursor snapshot)
 *   central  ulong[NSP_DNCLASSES][ncentrals][cwords]: chunk c of class k sits in central
 *            c % ncentrals, bit c / ncentrals, while it is PARTIAL (bits are hints: the state is
 *            the truth)
 *   pool     nchunks chunks of NSP_DCHUNK bytes; a small span is a run of nsp_dspan_chunks, a
 *            large object a run
 *
 * Slot word (64 bits, high to low): span index (22) | navail (13) | gen (9) | claim cursor (20).
 *   An allocation is one atom_add(word, 1): the old word names the span *and* the claim, so a
 *   claim can never land in a span after the word was replaced. navail: the free entries handed
 *   to the slot at install; the incarnation is dense (entry i is object i) when navail equals the
 *   class's objects per span. gen: the low 9 bits of the span's descriptor gen at install (which
 *   snapshot buffer, gen & 1, the entries index). cursor < navail: entry `cursor` of the span's
 *   snapshot; cursor == navail: this work-item refills; cursor > navail: another one is
 *   refilling, and claims wait without adding (so the cursor stays far below 2^20 and never
 *   carries into gen). The empty word has span NSP_DSPAN_NONE and navail 0, so the first claim
 *   on an empty slot refills it.
 *
 * Chunk state word (32 bits): state (4) | class (8) | run length of a large object (20).
 */
#ifndef NUMASPAN_GEOMETRY_H
#define NUMASPAN_GEOMETRY_H

#ifdef __OPENCL_VERSION__
typedef ushort nsp_u16;
typedef uint nsp_u32;
typedef ulong nsp_u64;
typedef long nsp_i64;
#define NSP_GEOM_INLINE static inline
#define NSP_GEOM_CLZ32(x) ((nsp_u32)clz((nsp_u32)(x)))
#else
#include <stdint.h>
typedef uint16_t nsp_u16;
typedef uint32_t nsp_u32;
typedef uint64_t nsp_u64;
typedef int64_t nsp_i64;
#define NSP_GEOM_INLINE static inline
#define NSP_GEOM_CLZ32(x) ((nsp_u32)__builtin_clz((unsigned)(x)))
#endif

/* ---- size classes ------------------------------------------------------------------------- */

#define NSP_GEOM_NUM_CLASSES 74u  /* host classes 1..73, 0 = large */
#define NSP_GEOM_MAX_SMALL 32768u /* the host's largest class */

/* The object size of class k (1 <= k < NSP_GEOM_NUM_CLASSES). */
NSP_GEOM_INLINE nsp_u32 nsp_geom_class_size(nsp_u32 k)
{
    if (k <= 1u)
        return 8u;
    if (k <= 9u)
        return 16u * (k - 1u);
    nsp_u32 j = k - 10u, e = 7u + j / 8u;
    return (1u << e) + (j % 8u + 1u) * (1u << (e - 3u));
}

/* The class of a request of n bytes, 0 < n <= NSP_GEOM_MAX_SMALL. */
NSP_GEOM_INLINE nsp_u32 nsp_geom_size_to_class(nsp_u32 n)
{
    if (n <= 8u)
        return 1u;
    if (n <= 128u)
        return (n + 15u) / 16u + 1u;
    nsp_u32 e = 31u - NSP_GEOM_CLZ32(n - 1u);
    nsp_u32 step = 1u << (e - 3u); /* a shift, not a divide: this runs on every device malloc */
    return 9u + (e - 7u) * 8u + ((n - (1u << e) + step - 1u) >> (e - 3u));
}

/* ---- device heap -------------------------------------------------------------------------- */

#define NSP_DHEAP_MAGIC 0x6e73706468656170ul /* "nspdheap" */
#define NSP_DHEAP_VERSION 3u

#define NSP_DCHUNK_SHIFT 16u
#define NSP_DCHUNK (1u << NSP_DCHUNK_SHIFT) /* 64 KiB: a small span, a unit of a large run */
#define NSP_DMIN_CLASS 2u                   /* 16 B */
#define NSP_DMAX_CLASS 57u                  /* 8 KiB */
#define NSP_DNCLASSES (NSP_DMAX_CLASS - NSP_DMIN_CLASS + 1u)
#define NSP_DMAX_SMALL 8192u
#define NSP_DMAX_OBJS (NSP_DCHUNK / 16u)    /* 4096 */
#define NSP_DWORDS (NSP_DMAX_OBJS / 64u)    /* bitmap words per span */
#define NSP_DMAX_CHUNKS ((1u << 22) - 1u)   /* span index field (256 GiB); NONE excluded */
#define NSP_DSPAN_OBJS 512u                 /* objects per span, at least, in every class */

/* The chunks of a span of class k: one, or as many as NSP_DSPAN_OBJS objects need (2 for 144 B,
 * 32 for 4 KiB, 64 for 8 KiB). Constant objects per span: a span of 8 objects made every 8th
 * claim of the 8 KiB class a refill, and the waiting protocol, not the refill, was the cost. A
 * span's chunks are contiguous; the first (the head) holds its descriptor. */
NSP_GEOM_INLINE nsp_u32 nsp_dspan_chunks(nsp_u32 k)
{
    return (NSP_DSPAN_OBJS * nsp_geom_class_size(k) + NSP_DCHUNK - 1u) / NSP_DCHUNK;
}
/* The objects of a span of class k (NSP_DSPAN_OBJS .. NSP_DMAX_OBJS). */
NSP_GEOM_INLINE nsp_u32 nsp_dspan_nobj(nsp_u32 k)
{
    return nsp_dspan_chunks(k) * NSP_DCHUNK / nsp_geom_class_size(k);
}

/* slot word */
#define NSP_DSPAN_NONE 0x3FFFFFul
#define NSP_DW_SPAN(w) ((nsp_u32)((w) >> 42))
#define NSP_DW_NAVAIL(w) ((nsp_u32)(((w) >> 29) & 0x1FFFu))
#define NSP_DW_GEN(w) ((nsp_u32)(((w) >> 20) & 0x1FFu))
#define NSP_DW_CUR(w) ((nsp_u32)((w) & 0xFFFFFu))
#define NSP_DW_MAKE(span, navail, gen, cur)                                                     \
    (((nsp_u64)(span) << 42) | ((nsp_u64)(navail) << 29) | ((nsp_u64)((gen) & 0x1FFu) << 20) | \
     (nsp_u64)(cur))
#define NSP_DW_EMPTY (NSP_DSPAN_NONE << 42)

/* chunk state word */
enum nsp_dstate {
    NSP_DS_NEW = 0,     /* never carved: only the carve counter hands it out (the zeroed buffer) */
    NSP_DS_CACHED = 1,  /* a slot's span: only that slot's word hands out its entries */
    NSP_DS_PARTIAL = 2, /* in its class's central: has free objects */
    NSP_DS_FULL = 3,    /* in no central: no free object when it was released or swept */
    NSP_DS_BUSY = 4,    /* owned by one work-item that is sweeping, installing or freeing it */
    NSP_DS_LARGE = 5,   /* first chunk of a large object; run length in the word */
    NSP_DS_LTAIL = 6,   /* a following chunk of a large object */
    NSP_DS_FREE = 7,    /* returned to the pool, and counted in free_chunks: what pool scans take
                           (never a NEW chunk, which its carver owns from its increment on) */
    NSP_DS_STAIL = 8    /* a following chunk of a multi-chunk span, its class in the word and its
                           distance from the head in the run field; it follows its head's life */
};
#define NSP_DST_STATE(s) ((s) & 0xFu)
#define NSP_DST_CLASS(s) (((s) >> 4) & 0xFFu)
#define NSP_DST_RUN(s) ((s) >> 12)
#define NSP_DST_MAKE(state, cls, run) ((nsp_u32)(state) | ((nsp_u32)(cls) << 4) | ((nsp_u32)(run) << 12))
#define NSP_DMAX_RUN ((1u << 20) - 1u)

/* Counters of the header (each one ulong, updated with atom_inc; rare events only). */
enum nsp_dcounter {
    NSP_DC_REFILLS = 0,    /* spans installed into slots */
    NSP_DC_RELEASES,       /* spans taken out of slots */
    NSP_DC_FRESH,          /* spans carved from the pool counter */
    NSP_DC_REUSED,         /* spans taken from a central (partial) */
    NSP_DC_STEALS,         /* spans taken out of other slots when the pool was empty */
    NSP_DC_RECLAIMS,       /* spans swept by the out-of-memory scan */
    NSP_DC_LARGE_ALLOCS,
    NSP_DC_LARGE_FREES,
    NSP_DC_NULL_OOM,       /* nulls after the whole heap was searched */
    NSP_DC_FORCED,         /* objects taken straight from a central span past the retry bound
                              (so no null comes from waiting) */
    NSP_DC_BAD_FREES,      /* frees of handles the heap did not hand out (or twice) */
    NSP_DC_LOST,           /* claims whose snapshot was rebuilt under them: a tripwire, 0 since
                              installs wait for the buffer's readers (the object would leak) */
    NSP_DC_SWEEPS,         /* spans swept */
    NSP_DC_FIRST_BAD,      /* the first bad handle + 1 (0: none) */
    NSP_DC_SNAP_WAITS,     /* installs put off: a claimant had not yet read the snapshot buffer */
    NSP_DC_BAD_REQUESTS,   /* nulls for requests no heap can serve: nsp_dcalloc's count x size
                              overflowing, nsp_dmalloc_aligned's alignment not a power of two or
                              above NSP_DMAX_ALIGN (nsp_cl_sync reports them) */
    NSP_DC_COUNT
};
#define NSP_DC_SLOTS 16u /* header words for counters (NSP_DC_COUNT of them used) */
/* The largest alignment nsp_dmalloc_aligned gives: the pool starts on a 4 KiB boundary of the
 * buffer, so a chunk and every object whose class size is a multiple of the alignment are
 * aligned that much relative to the buffer's start. */
#define NSP_DMAX_ALIGN 4096u

struct nsp_dheap_hdr {
    nsp_u64 magic, version;
    nsp_u64 heap_bytes;  /* size of the buffer */
    nsp_u64 nchunks;     /* pool chunks */
    nsp_u64 nslots;      /* slots per class, a power of two */
    nsp_u64 ncentrals;   /* centrals per class, a power of two */
    nsp_u64 cwords;      /* bitmap words per (class, central) */
    nsp_u64 acct;        /* accounting: 0 over, 1 under, 2 exact */
    nsp_u64 off_slots, off_stripes, off_partial, off_state, off_desc, off_central, off_pool;
    nsp_u64 pad0[1];
    /* atomics (second line on) */
    nsp_u64 next_chunk;  /* the pool's carve counter (may pass nchunks: then the pool is carved) */
    nsp_u64 free_chunks; /* chunks in state FREE (exact once no kernel runs; NEW ones not counted) */
    nsp_u64 oom;         /* bit 63: out-of-memory marks may stand (oom_mark); low bits: searches
                            in their out-of-memory stage. A free that finds it nonzero clears
                            bit 63 and advances the epoch */
    nsp_u64 epoch;       /* advanced by a free that finds oom nonzero, and by nsp_k_sweep */
    nsp_u64 holding;     /* slot words taken by a search, or out of their slot, not yet installed
                            or released */
    nsp_u64 moves;       /* arrivals of memory a search may have passed (device heap's nsp__moved) */
    nsp_u64 reclaimer;   /* 1 while a work-item sweeps the whole heap (one at a time) */
    nsp_u64 pad1[1];     /* unused by the heap: tests/test_device.c takes it as a scratch word */
    nsp_u64 counter[NSP_DC_SLOTS];
    /* What a final failure was a failure of, valid while oom's bit 63 is set and the epoch has
     * not moved since the failed search began:
     * [ci] (class NSP_DMIN_CLASS + ci) 1 + its epoch; [NSP_DNCLASSES] (large runs)
     * (1 + its epoch) << 20 | the run length that found no room (longer ones find none either).
     * A class without room says nothing of another class's centrals, nor of shorter runs. */
    nsp_u64 oom_mark[NSP_DNCLASSES + 1u];
};

/* A span descriptor: one per chunk. Written only by the span's owner (BUSY), except `freed`
 * (any freer) and `charge` (atomics). A non-dense incarnation's claimants read avail[g & 1] and
 * prefix[g & 1], which only the incarnation after next (g + 2) rewrites, and only once every
 * claimant of g has read its entry (readers / read_done). */
struct nsp_ddesc {
    nsp_u64 alloc[NSP_DWORDS];     /* 1 = allocated (as of the last sweep; plus `claimed`) */
    nsp_u64 freed[NSP_DWORDS];     /* 1 = freed, not yet swept: set by one atom_or per free */
    nsp_u64 avail[2][NSP_DWORDS];  /* free objects when incarnation gen was installed, by gen & 1 */
    nsp_u16 prefix[2][NSP_DWORDS]; /* free objects in the words before each word, by gen & 1 */
    nsp_u32 gen;     /* advanced once per incarnation that uses avail/prefix (not dense) */
    nsp_u32 nobj;    /* objects of the class in one chunk */
    nsp_u32 navail;  /* free entries handed to the slot at install */
    nsp_u32 claimed; /* entries of the last incarnation that were claimed (applied at the sweep) */
    nsp_u32 dense;   /* the last incarnation was dense (entry i is object i) */
    nsp_u32 cls;
    nsp_i64 charge;  /* the ledger: bytes this span contributes to heapLive */
    /* Claimants of a non-dense incarnation read snapshot buffer gen & 1 after their claim:
     * readers[b], set at the incarnation's release, is how many claimed an entry of buffer b;
     * read_done[b] counts those whose read is over. The buffer is rewritten (by the incarnation
     * after next) only when the two agree, so no claimant loses its entry. */
    nsp_u32 readers[2], read_done[2];
    nsp_u64 pad[2];
};

/* The layout of a heap of `bytes` with the given slot and central counts: fills the header's
 * layout fields. Returns the pool's chunk count (0 if the buffer is too small for one chunk). */
NSP_GEOM_INLINE nsp_u64 nsp_dheap_layout(struct nsp_dheap_hdr *h, nsp_u64 bytes, nsp_u64 nslots,
                                         nsp_u64 ncentrals)
{
    nsp_u64 fixed = sizeof(struct nsp_dheap_hdr) + 2u * NSP_DNCLASSES * nslots * 8u +
                    nslots * 8u + NSP_DNCLASSES * 8u;
    /* per chunk: a state word, a descriptor, a central bit per class, the chunk */
    nsp_u64 per = 4u + sizeof(struct nsp_ddesc) + NSP_DNCLASSES / 8u + 1u + NSP_DCHUNK;
    nsp_u64 slack = 4u * 4096u + NSP_DNCLASSES * ncentrals * 8u;
    nsp_u64 n = bytes > fixed + slack ? (bytes - fixed - slack) / per : 0;
    if (n > NSP_DMAX_CHUNKS)
        n = NSP_DMAX_CHUNKS;
    for (; n > 0; n--) {
        nsp_u64 cw = ((n + ncentrals - 1u) / ncentrals + 63u) / 64u;
        nsp_u64 o = sizeof(struct nsp_dheap_hdr);
        h->off_slots = o;
        o += 2u * NSP_DNCLASSES * nslots * 8u; /* slot words, then next words */
        h->off_stripes = o;
        o += nslots * 8u;
        h->off_partial = o;
        o += NSP_DNCLASSES * 8u;
        h->off_state = o;
        o += n * 4u;
        o = (o + 63u) & ~(nsp_u64)63u;
        h->off_desc = o;
        o += n * sizeof(struct nsp_ddesc);
        h->off_central = o;
        o += NSP_DNCLASSES * ncentrals * cw * 8u;
        o = (o + 4095u) & ~(nsp_u64)4095u;
        h->off_pool = o;
        if (o + n * NSP_DCHUNK <= bytes) {
            h->heap_bytes = bytes;
            h->nchunks = n;
            h->nslots = nslots;
            h->ncentrals = ncentrals;
            h->cwords = cw;
            return n;
        }
    }
    return 0;
}

#endif /* NUMASPAN_GEOMETRY_H */
