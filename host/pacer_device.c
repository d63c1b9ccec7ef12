/*
 * host/pacer_device.c — device heaps as nodes of the pacer (DESIGN.md §4: "A device heap is one
 * node of the pacer").
 *
 * Owns: the table of device nodes (name, capacity, heapLive as last handed in, its peak, counts)
 * and the pacer's advice for each. device/ hands in the device ledger's total at its sync points
 * (the host cannot read device memory while a kernel runs on every platform); that is the node's
 * heapLive. A device has its own memory, so its node enters neither the host's goal nor its
 * trigger: its pacing is against its own capacity.
 *
 * Advice, from the last report: NSP_DEVICE_OK below 7/8 of the capacity; above it,
 * NSP_DEVICE_RECONCILE while the figure still holds the over-estimate of cached spans (a release
 * and a sweep give the exact one), NSP_DEVICE_FULL once it is reconciled (the heap is full).
 * There is no GROW: a device heap cannot grow in place (its handles are offsets into one buffer
 * whose metadata is laid out for its size), so the advice says what the program must act on.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "numaspan.h"

static struct {
    pthread_mutex_t lock;
    int used[NSP_PACER_MAX_DEVICES];
    nsp_pacer_device_t dev[NSP_PACER_MAX_DEVICES];
} D = {.lock = PTHREAD_MUTEX_INITIALIZER};

int nsp_pacer_device_attach(const char *name, int64_t capacity)
{
    if (!name || capacity <= 0)
        return -1;
    pthread_mutex_lock(&D.lock);
    int id = -1;
    for (int i = 0; i < NSP_PACER_MAX_DEVICES && id < 0; i++)
        if (!D.used[i])
            id = i;
    if (id >= 0) {
        D.used[id] = 1;
        memset(&D.dev[id], 0, sizeof D.dev[id]);
        snprintf(D.dev[id].name, sizeof D.dev[id].name, "%s", name);
        D.dev[id].capacity = capacity;
    }
    pthread_mutex_unlock(&D.lock);
    return id;
}

int nsp_pacer_device_report(int id, int64_t heap_live, int reconciled)
{
    if (id < 0 || id >= NSP_PACER_MAX_DEVICES)
        return -1;
    pthread_mutex_lock(&D.lock);
    int advice = -1;
    if (D.used[id]) {
        nsp_pacer_device_t *d = &D.dev[id];
        d->heap_live = heap_live;
        if (heap_live > d->peak_live)
            d->peak_live = heap_live;
        d->syncs++;
        d->reconciles += reconciled != 0;
        d->reconciled = reconciled != 0;
        advice = NSP_DEVICE_OK;
        if (heap_live >= d->capacity - d->capacity / 8)
            advice = reconciled ? NSP_DEVICE_FULL : NSP_DEVICE_RECONCILE;
        d->advice = advice;
    }
    pthread_mutex_unlock(&D.lock);
    return advice;
}

void nsp_pacer_device_detach(int id)
{
    if (id < 0 || id >= NSP_PACER_MAX_DEVICES)
        return;
    pthread_mutex_lock(&D.lock);
    D.used[id] = 0;
    pthread_mutex_unlock(&D.lock);
}

unsigned nsp_pacer_devices(nsp_pacer_device_t *out, unsigned max)
{
    unsigned n = 0;
    pthread_mutex_lock(&D.lock);
    for (int i = 0; i < NSP_PACER_MAX_DEVICES && n < max; i++)
        if (D.used[i]) {
            out[n] = D.dev[i];
            out[n++].id = i;
        }
    pthread_mutex_unlock(&D.lock);
    return n;
}
