/*
 * host/secure.h — the hardened mode (NSP_SECURE=1, issue 10 "Deliver 2"), in the manner of
 * mimalloc's secure build: what it adds to a small object's life, and what it costs.
 *
 *   canary     the last 8 bytes of every slot (classes below 32 KiB) hold key ^ address, written
 *              when the slot is handed out and checked at free: an overflow off the object's end
 *              is reported there (NSP_ERR_CANARY). Requests are rounded to the class of n + 8
 *              (the lookup tables are built that way), and malloc_usable_size excludes the canary.
 *   poison     a freed slot is filled with NSP_SECURE_POISON (so are fresh spans), and checked
 *              when it is handed out again: a write after free is reported there
 *              (NSP_ERR_WRITE_AFTER_FREE). Slots up to NSP_SECURE_POISON_WHOLE (1 KiB: classes
 *              of requests up to 1016 B) are poisoned and checked whole, so any write after free
 *              into them is detected. Larger slots (1152 B .. 32 KiB) are poisoned and checked
 *              only in their first and last NSP_SECURE_POISON_EDGE (512) bytes: a write after
 *              free there is detected (object headers, first fields, and the canary's end), one
 *              into the middle is NOT; nor is a read after free anywhere (the poison only shows
 *              it as 0xdf bytes where it lies). Why: poisoning and checking a 16 KiB slot whole
 *              was 32 KiB of memory traffic per malloc+free pair, and every fresh span's pages
 *              faulted in at its set-up; with the edges, a fresh span of 32 KiB slots leaves
 *              half its pages untouched. The check ORs a range's words together, 16 bytes
 *              at a time without a branch per word, and finds a broken slot, not the word.
 *   order      a span hands its free slots out in random order (a random word, then its first free
 *              slot from a random bit on), so neighbours and the next reuse are not predictable.
 *   guard      a large object gets one more page, PROT_NONE, after its end: an overflow faults.
 *
 * Where the default mode pays: nothing on the allocation fast path (in secure mode a span's cursor
 * stays empty — alloc_cache 0, freeindex NSP_SECURE_NO_CURSOR — so every allocation takes the slow
 * path, whose one branch on nsp__secure leads here); one predictable branch on nsp__secure in
 * free; one in the span's rewind and set-up.
 * nsp__secure and nsp__secure_key are set once by nsp__secure_init, before the first allocation.
 */
#ifndef NSP_HOST_SECURE_H
#define NSP_HOST_SECURE_H

#include <stdint.h>

#include "sizeclass.h"
#include "types.h"

#define NSP_SECURE_POISON 0xdfdfdfdfdfdfdfdfULL
#define NSP_SECURE_CANARY 8u           /* bytes at the end of each slot */
#define NSP_SECURE_NO_CURSOR UINT32_MAX /* freeindex of a span in secure mode */
#define NSP_SECURE_POISON_WHOLE 1024u  /* slots up to this size are poisoned whole */
#define NSP_SECURE_POISON_EDGE 512u    /* larger ones: their first and last this many bytes */

extern int nsp__secure;
extern uint64_t nsp__secure_key;

/* Reads NSP_SECURE; when on, draws the key and rebuilds the class lookup for n + 8 bytes. */
void nsp__secure_init(void);

/* Whether objects of class cls carry a canary (every class but the largest: no class holds
 * 32 KiB + 8, so its objects may fill their slot). */
static inline int nsp__secure_has_canary(unsigned cls)
{
    return cls + 1 < NSP_NUM_CLASSES;
}

/* The span's next slot, chosen at random, its poison checked and its canary written (owner
 * only), or NULL when every slot is allocated. */
void *nsp__secure_next_free(struct nsp_span *s);
/* Fills a fresh span's slots with poison. */
void nsp__secure_init_span(struct nsp_span *s);
/* Checks the canary of the object p at slot idx of s and poisons it, before a free (any thread).
 * An object that is not allocated is left alone: the free that follows reports it. */
void nsp__secure_free(struct nsp_span *s, uint32_t idx, void *p);
/* Makes the last page of large span s inaccessible (on) or accessible again (before it is freed). */
void nsp__secure_guard(struct nsp_span *s, int on);
/* Bytes of an object of class cls the program may use. */
uint32_t nsp__secure_usable(unsigned cls, uint32_t elemsize);

#endif /* NSP_HOST_SECURE_H */
