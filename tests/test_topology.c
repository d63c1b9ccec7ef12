/*
 * tests/test_topology.c — the topology layer: loading, tables, distances, binding, virtual cores.
 *
 * Tables are checked against hwloc itself, loaded independently in the test, so that a mix-up of
 * logical and OS indexes (pu:2(indexes=numa:core)) cannot hide behind a matching mistake.
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <hwloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_main.h"
#include "numaspan.h"

#ifndef NSP_FIXTURES
#error "NSP_FIXTURES must name tests/fixtures"
#endif

static nsp_topo_t *load_ok(const char *spec, nsp_grouping_t g)
{
    char err[512] = "";
    nsp_topo_t *t = nsp_topo_load(spec, g, err, sizeof err);
    ck_assert_msg(t != NULL, "loading %s failed: %s", spec, err);
    return t;
}

/* Loads spec and returns the error message (and asserts that loading failed). */
static const char *load_fail(const char *spec, nsp_grouping_t g)
{
    static char err[512];
    err[0] = 0;
    nsp_topo_t *t = nsp_topo_load(spec, g, err, sizeof err);
    ck_assert_msg(t == NULL, "%s loaded but must be refused", spec);
    ck_assert_msg(err[0] != 0, "%s: no error message", spec);
    return err;
}

/* For every PU of an independently loaded hwloc topology, the cache of its OS number contains
 * it and the cache's home node is the PU's first local node. Returns how many PUs have
 * os_index != logical_index (so callers can insist the case is exercised). */
static unsigned check_tables_against_hwloc(nsp_topo_t *t, const char *synthetic)
{
    hwloc_topology_t hw;
    ck_assert_int_eq(hwloc_topology_init(&hw), 0);
    ck_assert_int_eq(hwloc_topology_set_synthetic(hw, synthetic), 0);
    ck_assert_int_eq(hwloc_topology_load(hw), 0);
    unsigned mixed = 0;
    int npu = hwloc_get_nbobjs_by_type(hw, HWLOC_OBJ_PU);
    ck_assert_uint_eq(nsp_topo_num_pus(t), (unsigned)npu);
    for (int i = 0; i < npu; i++) {
        hwloc_obj_t pu = hwloc_get_obj_by_type(hw, HWLOC_OBJ_PU, (unsigned)i);
        if (pu->os_index != pu->logical_index)
            mixed++;
        unsigned c = nsp_topo_cache_of_cpu(t, pu->os_index);
        ck_assert_uint_lt(c, nsp_topo_num_caches(t));
        /* first local node in logical order */
        hwloc_obj_t node = hwloc_get_next_obj_by_type(hw, HWLOC_OBJ_NUMANODE, NULL);
        while (node && !hwloc_bitmap_isset(pu->nodeset, (int)node->os_index))
            node = hwloc_get_next_obj_by_type(hw, HWLOC_OBJ_NUMANODE, node);
        ck_assert_ptr_nonnull(node);
        ck_assert_uint_eq(nsp_topo_node_of_cache(t, c), node->logical_index);
        /* the node's cpu list names this PU by its OS number */
        nsp_node_info_t info;
        ck_assert_int_eq(nsp_topo_node_info(t, node->logical_index, &info), 0);
        ck_assert_uint_eq(info.os_index, node->os_index);
        int found = 0;
        for (unsigned k = 0; k < info.npus; k++)
            found |= info.pus_os[k] == pu->os_index;
        ck_assert_msg(found, "PU P#%u missing from node %u's cpus", pu->os_index,
                      node->logical_index);
    }
    hwloc_topology_destroy(hw);
    return mixed;
}

START_TEST(synthetic_four_nodes)
{
    nsp_topo_t *t = load_ok("synthetic:pack:2 numa:2 core:4 pu:1", NSP_GROUP_PU);
    ck_assert_uint_eq(nsp_topo_num_nodes(t), 4);
    ck_assert_uint_eq(nsp_topo_num_caches(t), 16);
    ck_assert_int_eq(nsp_topo_is_thissystem(t), 0);
    ck_assert_int_eq(nsp_topo_uses_virtual_cores(t), 1);
    for (unsigned n = 0; n < 4; n++) {
        nsp_node_info_t info;
        ck_assert_int_eq(nsp_topo_node_info(t, n, &info), 0);
        ck_assert_uint_eq(info.ncaches, 4);
        ck_assert_uint_eq(info.memory_bytes, 1ULL << 30); /* hwloc's synthetic default */
        for (unsigned k = 0; k < info.ncaches; k++)
            ck_assert_uint_eq(nsp_topo_node_of_cache(t, info.caches[k]), n);
    }
    /* hop model: same package 30, other package 50, a node first in its own spill order */
    ck_assert_int_eq(nsp_topo_distance_source(t), NSP_DIST_HOPS);
    ck_assert_uint_eq(nsp_topo_distance(t, 0, 0), 10);
    ck_assert_uint_eq(nsp_topo_distance(t, 0, 1), 30);
    ck_assert_uint_eq(nsp_topo_distance(t, 0, 2), 50);
    ck_assert_uint_eq(nsp_topo_distance(t, 2, 3), 30);
    const unsigned *order = nsp_topo_nodes_by_distance(t, 2);
    ck_assert_uint_eq(order[0], 2);
    ck_assert_uint_eq(order[1], 3);
    ck_assert_uint_eq(order[2], 0);
    ck_assert_uint_eq(order[3], 1);
    check_tables_against_hwloc(t, "pack:2 numa:2 core:4 pu:1");
    nsp_topo_destroy(t);
}
END_TEST

START_TEST(interleaved_os_indexes)
{
    const char *desc = "pack:2 numa:2 core:2 pu:2(indexes=numa:core)";
    char spec[128];
    snprintf(spec, sizeof spec, "synthetic:%s", desc);
    nsp_topo_t *t = load_ok(spec, NSP_GROUP_PU);
    ck_assert_uint_eq(nsp_topo_num_caches(t), 16);
    unsigned mixed = check_tables_against_hwloc(t, desc);
    ck_assert_msg(mixed > 0, "the fixture must number PUs differently from their logical order");
    nsp_topo_destroy(t);

    /* core grouping: the two PUs of a core (OS numbers far apart) share one cache */
    t = load_ok(spec, NSP_GROUP_CORE);
    ck_assert_uint_eq(nsp_topo_num_caches(t), 8);
    check_tables_against_hwloc(t, desc);
    nsp_node_info_t info;
    ck_assert_int_eq(nsp_topo_node_info(t, 0, &info), 0);
    ck_assert_uint_eq(info.npus, 4);
    ck_assert_uint_eq(info.ncaches, 2);
    nsp_topo_destroy(t);
}
END_TEST

START_TEST(two_nodes_per_package)
{
    /* HBM + DDR shape: every PU has two local nodes; the first in logical order is its home. */
    nsp_topo_t *t = load_ok("synthetic:pack:2 [numa] [numa] core:4 pu:2", NSP_GROUP_PU);
    ck_assert_uint_eq(nsp_topo_num_nodes(t), 4);
    ck_assert_uint_eq(nsp_topo_num_caches(t), 16);
    nsp_node_info_t n0, n1, n2, n3;
    nsp_topo_node_info(t, 0, &n0);
    nsp_topo_node_info(t, 1, &n1);
    nsp_topo_node_info(t, 2, &n2);
    nsp_topo_node_info(t, 3, &n3);
    ck_assert_uint_eq(n0.ncaches, 8);
    ck_assert_uint_eq(n1.ncaches, 0);
    ck_assert_uint_eq(n2.ncaches, 8);
    ck_assert_uint_eq(n3.ncaches, 0);
    /* the second node of a package is the nearest other node: spill goes there first */
    ck_assert_uint_eq(nsp_topo_distance(t, 0, 1), 20);
    ck_assert_uint_lt(nsp_topo_distance(t, 0, 1), nsp_topo_distance(t, 0, 2));
    ck_assert_uint_eq(nsp_topo_nodes_by_distance(t, 0)[1], 1);
    ck_assert_uint_eq(nsp_topo_nodes_by_distance(t, 2)[1], 3);
    check_tables_against_hwloc(t, "pack:2 [numa] [numa] core:4 pu:2");
    nsp_topo_destroy(t);
}
END_TEST

START_TEST(xml_with_latency_matrix)
{
    nsp_topo_t *t = load_ok("xml:" NSP_FIXTURES "/numalatency-4node.xml", NSP_GROUP_PU);
    static const unsigned want[4][4] = {
        {10, 21, 31, 17}, {21, 10, 17, 31}, {31, 17, 10, 21}, {17, 31, 21, 10}};
    ck_assert_int_eq(nsp_topo_distance_source(t), NSP_DIST_HWLOC);
    ck_assert_uint_eq(nsp_topo_num_nodes(t), 4);
    ck_assert_uint_eq(nsp_topo_num_caches(t), 8);
    ck_assert_int_eq(nsp_topo_is_thissystem(t), 0);
    for (unsigned a = 0; a < 4; a++)
        for (unsigned b = 0; b < 4; b++)
            ck_assert_uint_eq(nsp_topo_distance(t, a, b), want[a][b]);
    /* the matrix, not the tree, orders the spill: 0 -> 3 -> 1 -> 2 */
    const unsigned *o = nsp_topo_nodes_by_distance(t, 0);
    ck_assert_uint_eq(o[0], 0);
    ck_assert_uint_eq(o[1], 3);
    ck_assert_uint_eq(o[2], 1);
    ck_assert_uint_eq(o[3], 2);
    nsp_topo_destroy(t);
}
END_TEST

START_TEST(malformed_inputs_are_named)
{
    const char *e = load_fail("synthetic:pack:2 numa:oops", NSP_GROUP_PU);
    ck_assert_msg(strstr(e, "pack:2 numa:oops") != NULL, "message must name the string: %s", e);
    e = load_fail("synthetic:", NSP_GROUP_PU);
    ck_assert_msg(strstr(e, "empty") != NULL, "%s", e);
    e = load_fail("bogus:thing", NSP_GROUP_PU);
    ck_assert_msg(strstr(e, "bogus:thing") != NULL && strstr(e, "unknown kind"), "%s", e);
    e = load_fail("xml:/nonexistent/numaspan.xml", NSP_GROUP_PU);
    ck_assert_msg(strstr(e, "/nonexistent/numaspan.xml") && strstr(e, "No such file"), "%s", e);
    e = load_fail("xml:" NSP_FIXTURES, NSP_GROUP_PU);
    ck_assert_msg(strstr(e, "not a regular file") != NULL, "%s", e);
    e = load_fail("xml:" NSP_FIXTURES "/corrupt.xml", NSP_GROUP_PU);
    ck_assert_msg(strstr(e, "corrupt.xml") != NULL, "%s", e);
    e = load_fail("synthetic:pack:2 numa:2 core:4 pu:1", (nsp_grouping_t)42);
    ck_assert_msg(strstr(e, "grouping") != NULL, "%s", e);
    /* a grouping level the topology lacks is refused, not silently replaced */
    e = load_fail("synthetic:pack:2 numa:2 core:4 pu:1", NSP_GROUP_L3);
    ck_assert_msg(strstr(e, "l3") != NULL, "%s", e);
}
END_TEST

START_TEST(grouping_levels)
{
    nsp_grouping_t g;
    ck_assert_int_eq(nsp_grouping_parse("L2", &g), 0);
    ck_assert_int_eq(g, NSP_GROUP_L2);
    ck_assert_int_eq(nsp_grouping_parse("socket", &g), -1);
    nsp_topo_t *t = load_ok("synthetic:pack:1 numa:2 l3:1 l2:2 core:2 pu:2", NSP_GROUP_L3);
    ck_assert_uint_eq(nsp_topo_num_caches(t), 2);
    nsp_topo_destroy(t);
    t = load_ok("synthetic:pack:1 numa:2 l3:1 l2:2 core:2 pu:2", NSP_GROUP_L2);
    ck_assert_uint_eq(nsp_topo_num_caches(t), 4);
    ck_assert_uint_eq(nsp_topo_node_of_cache(t, 3), 1);
    nsp_topo_destroy(t);
}
END_TEST

/* A core grouping of the real machine where the OS's backend finds no core (a Linux without its
 * sysfs topology nor /proc/cpuinfo core ids; HWLOC_COMPONENTS=no_os,x86 plays it: no_os gives the
 * PUs alone, x86 the rest from cpuid): the load leaves hwloc's x86 backend out for PU and core
 * grouping (topology.c, load_tables), and must then load again with it, not refuse the grouping
 * (a preloading process dies at its first malloc). hwloc itself, with the same components, says
 * how many cores there are; where it finds none (not x86, or no binding), skipped. */
START_TEST(core_grouping_falls_back_to_x86)
{
    setenv("HWLOC_COMPONENTS", "no_os,x86", 1); /* this test's process only (Check forks) */
    hwloc_topology_t hw;
    ck_assert_int_eq(hwloc_topology_init(&hw), 0);
    ck_assert_int_eq(hwloc_topology_load(hw), 0);
    int cores = hwloc_get_nbobjs_by_type(hw, HWLOC_OBJ_CORE);
    hwloc_topology_destroy(hw);
    if (cores <= 0) {
        unsetenv("HWLOC_COMPONENTS");
        fprintf(stderr, "core_grouping_falls_back_to_x86: skipped: hwloc's x86 backend finds no "
                        "core here (not x86, or no binding)\n");
        return;
    }
    char err[512] = "";
    nsp_topo_t *t = nsp_topo_load("real", NSP_GROUP_CORE, err, sizeof err);
    unsetenv("HWLOC_COMPONENTS");
    ck_assert_msg(t != NULL, "core grouping with no core from the OS's backend: %s", err);
    ck_assert_uint_eq(nsp_topo_num_caches(t), (unsigned)cores);
    nsp_topo_destroy(t);
}
END_TEST

START_TEST(out_of_range_lookups)
{
    nsp_topo_t *t = load_ok("synthetic:pack:2 numa:2 core:4 pu:1", NSP_GROUP_PU);
    /* cpus the table does not know (cgroups, hot-plug) still map to a valid cache */
    unsigned probes[] = {16, 17, 63, 64, 1000, 4095, 1u << 20, UINT32_MAX};
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++)
        ck_assert_uint_lt(nsp_topo_cache_of_cpu(t, probes[i]), 16);
    ck_assert_uint_eq(nsp_topo_node_of_cache(t, 16), UINT32_MAX);
    ck_assert_uint_eq(nsp_topo_distance(t, 0, 4), UINT32_MAX);
    ck_assert_ptr_null(nsp_topo_nodes_by_distance(t, 4));
    nsp_node_info_t info;
    errno = 0;
    ck_assert_int_eq(nsp_topo_node_info(t, 4, &info), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(nsp_topo_thread_bind_core(t, 16), -1);
    nsp_topo_destroy(t);
}
END_TEST

START_TEST(binding_is_recorded_on_synthetic)
{
    nsp_topo_t *t = load_ok("synthetic:pack:2 numa:2 core:4 pu:1", NSP_GROUP_PU);
    char buf[8192];
    ck_assert_uint_eq(nsp_topo_bindings_recorded(t), 0);
    ck_assert_int_eq(nsp_topo_bind_memory(t, buf, sizeof buf, 3), 1);
    ck_assert_int_eq(nsp_topo_bind_thread(t, 5), 1);
    ck_assert_uint_eq(nsp_topo_bindings_recorded(t), 2);
    ck_assert_int_eq(nsp_topo_bind_memory(t, buf, sizeof buf, 4), -1);
    nsp_topo_destroy(t);
}
END_TEST

START_TEST(real_machine)
{
    nsp_topo_t *t = load_ok("real", NSP_GROUP_PU);
    ck_assert_int_eq(nsp_topo_is_thissystem(t), 1);
    ck_assert_int_eq(nsp_topo_uses_virtual_cores(t), 0);
    ck_assert_uint_ge(nsp_topo_num_caches(t), 1);
    int cpu = sched_getcpu();
    ck_assert_int_ge(cpu, 0);
    ck_assert_uint_lt(nsp_topo_current_cache(t), nsp_topo_num_caches(t));

    /* pinning to cache 0 puts the thread on one of its cpus */
    ck_assert_int_eq(nsp_topo_bind_thread(t, 0), 0);
    ck_assert_uint_eq(nsp_topo_cache_of_cpu(t, (unsigned)sched_getcpu()), 0);
    ck_assert_uint_eq(nsp_topo_current_cache(t), 0);

    /* mbind of memory we mapped is applied for real */
    size_t len = 1 << 20;
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(p, MAP_FAILED);
    int rc = nsp_topo_bind_memory(t, p, len, 0);
    ck_assert_msg(rc == 0, "mbind failed: %s", strerror(errno));
    ck_assert_uint_eq(nsp_topo_bindings_recorded(t), 0);
    munmap(p, len);
    nsp_topo_destroy(t);
}
END_TEST

/* 1,000 threads on an 8-node x 16-core synthetic machine, all alive together: each gets a valid
 * virtual core and keeps it, a thread that asks for a core gets exactly that one, and the others
 * go to the least-loaded cores, so that with every thread counted (the 100 bound ones first, then
 * the 900 that draw) no core has more than one thread more than another. */
#define NTHREADS 1000
static nsp_topo_t *vt;
static unsigned got[NTHREADS];
static pthread_mutex_t vmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t vcv = PTHREAD_COND_INITIALIZER;
static unsigned vready;  /* threads that have their core */
static int vrelease;     /* all may exit */

static void *vthread(void *arg)
{
    unsigned i = (unsigned)(uintptr_t)arg;
    if (i % 10 == 0) {
        unsigned want = (i * 7) % 128;
        ck_assert_int_eq(nsp_topo_thread_bind_core(vt, want), 1);
        got[i] = nsp_topo_current_cache(vt) == want ? want : UINT32_MAX;
    } else {
        got[i] = nsp_topo_current_cache(vt);
        /* stable: a thread keeps its virtual core */
        if (nsp_topo_current_cache(vt) != got[i])
            got[i] = UINT32_MAX;
    }
    pthread_mutex_lock(&vmu);
    vready++;
    pthread_cond_broadcast(&vcv);
    while (!vrelease)
        pthread_cond_wait(&vcv, &vmu);
    pthread_mutex_unlock(&vmu);
    return NULL;
}

static void vwait_ready(unsigned n)
{
    pthread_mutex_lock(&vmu);
    while (vready < n)
        pthread_cond_wait(&vcv, &vmu);
    pthread_mutex_unlock(&vmu);
}

START_TEST(thousand_threads_virtual_cores)
{
    vt = load_ok("synthetic:pack:8 numa:1 core:16 pu:1", NSP_GROUP_PU);
    ck_assert_uint_eq(nsp_topo_num_caches(vt), 128);
    ck_assert_uint_eq(nsp_topo_num_nodes(vt), 8);
    pthread_t th[NTHREADS];
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    /* the bound threads first: the ones that draw must then fill around them */
    for (unsigned i = 0; i < NTHREADS; i += 10)
        ck_assert_int_eq(pthread_create(&th[i], &attr, vthread, (void *)(uintptr_t)i), 0);
    vwait_ready(NTHREADS / 10);
    for (unsigned i = 0; i < NTHREADS; i++)
        if (i % 10 != 0)
            ck_assert_int_eq(pthread_create(&th[i], &attr, vthread, (void *)(uintptr_t)i), 0);
    vwait_ready(NTHREADS);
    pthread_mutex_lock(&vmu);
    vrelease = 1;
    pthread_cond_broadcast(&vcv);
    pthread_mutex_unlock(&vmu);
    for (unsigned i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    unsigned count[128] = {0};
    for (unsigned i = 0; i < NTHREADS; i++) {
        ck_assert_msg(got[i] < 128, "thread %u got no valid or stable core", i);
        if (i % 10 == 0)
            ck_assert_uint_eq(got[i], (i * 7) % 128);
        count[got[i]]++;
    }
    /* 1,000 live threads over 128 cores: every core has 7 or 8 (the bound ones put at most 2 on
     * a core before the others draw) */
    unsigned lo = NTHREADS, hi = 0;
    for (unsigned c = 0; c < 128; c++) {
        lo = count[c] < lo ? count[c] : lo;
        hi = count[c] > hi ? count[c] : hi;
    }
    ck_assert_msg(hi - lo <= 1, "live threads uneven: %u..%u per core", lo, hi);
    nsp_topo_destroy(vt);
}
END_TEST

/* Thread churn on 16 virtual cores (DESIGN.md §3; issue 11, Deliver 4): 4 threads live throughout
 * (2 drawn, 2 bound with nsp_topo_thread_bind_core) while 400 short threads are created and end,
 * at most 4 of them alive at a time, living for varied times. At most 8 threads are ever alive on
 * 16 cores, so if exited threads give their cores back and new ones take the least-loaded, no two
 * live threads ever share a core. Round robin without handing back puts the 17th thread onto the
 * first one's core. A thread counts as alive here from its draw until just before it returns,
 * inside the span in which the topology counts it (until its exit destructor). */
#define CHURN_CORES 16
#define CHURN_LONG 4
#define CHURN_RING 4
#define CHURN_THREADS 400
static nsp_topo_t *ct;
static pthread_mutex_t cmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ccv = PTHREAD_COND_INITIALIZER;
static unsigned occupied[CHURN_CORES];
static unsigned shared_core = UINT32_MAX, shared_by, unstable, clong_ready;
static int cstop;

static unsigned churn_enter(void)
{
    unsigned c = nsp_topo_current_cache(ct);
    pthread_mutex_lock(&cmu);
    if (c >= CHURN_CORES || ++occupied[c] > 1) {
        shared_core = c;
        shared_by = c < CHURN_CORES ? occupied[c] : 0;
    }
    pthread_mutex_unlock(&cmu);
    return c;
}

static void churn_leave(unsigned c)
{
    pthread_mutex_lock(&cmu);
    if (nsp_topo_current_cache(ct) != c)
        unstable++;
    if (c < CHURN_CORES)
        occupied[c]--;
    pthread_mutex_unlock(&cmu);
}

static void *churn_long(void *arg)
{
    unsigned bind = (unsigned)(uintptr_t)arg;
    if (bind != UINT32_MAX)
        ck_assert_int_eq(nsp_topo_thread_bind_core(ct, bind), 1);
    unsigned c = churn_enter();
    pthread_mutex_lock(&cmu);
    clong_ready++;
    pthread_cond_broadcast(&ccv);
    while (!cstop)
        pthread_cond_wait(&ccv, &cmu);
    pthread_mutex_unlock(&cmu);
    churn_leave(c);
    return NULL;
}

static void *churn_short(void *arg)
{
    unsigned c = churn_enter();
    for (unsigned k = (unsigned)(uintptr_t)arg % 7; k > 0; k--) {
        sched_yield();
        ck_assert_uint_eq(nsp_topo_current_cache(ct), c);
    }
    churn_leave(c);
    return NULL;
}

START_TEST(thread_churn_gives_cores_back)
{
    ct = load_ok("synthetic:pack:2 numa:1 core:8 pu:1", NSP_GROUP_PU);
    ck_assert_uint_eq(nsp_topo_num_caches(ct), CHURN_CORES);
    const unsigned longarg[CHURN_LONG] = {UINT32_MAX, 5, UINT32_MAX, 13};
    pthread_t lt[CHURN_LONG], ring[CHURN_RING];
    for (unsigned i = 0; i < CHURN_LONG; i++) {
        ck_assert_int_eq(pthread_create(&lt[i], NULL, churn_long, (void *)(uintptr_t)longarg[i]),
                         0);
        /* one at a time, so that a drawn one never races a bound one for its core */
        pthread_mutex_lock(&cmu);
        while (clong_ready < i + 1)
            pthread_cond_wait(&ccv, &cmu);
        pthread_mutex_unlock(&cmu);
    }
    /* pseudo-random lifetimes: threads end out of their creation order */
    unsigned seed = 12345;
    for (unsigned i = 0; i < CHURN_THREADS; i++) {
        unsigned r = i % CHURN_RING;
        if (i >= CHURN_RING) /* joined: its exit destructor has run */
            pthread_join(ring[r], NULL);
        seed = seed * 1103515245u + 12345u;
        ck_assert_int_eq(pthread_create(&ring[r], NULL, churn_short, (void *)(uintptr_t)(seed >> 16)),
                         0);
    }
    for (unsigned r = 0; r < CHURN_RING; r++)
        pthread_join(ring[r], NULL);
    pthread_mutex_lock(&cmu);
    cstop = 1;
    pthread_cond_broadcast(&ccv);
    pthread_mutex_unlock(&cmu);
    for (unsigned i = 0; i < CHURN_LONG; i++)
        pthread_join(lt[i], NULL);
    ck_assert_msg(shared_core == UINT32_MAX,
                  "at most %u live threads on %u virtual cores, but core %u had %u of them",
                  CHURN_LONG + CHURN_RING, CHURN_CORES, shared_core, shared_by);
    ck_assert_msg(unstable == 0, "%u threads changed virtual core while alive", unstable);
    nsp_topo_destroy(ct);
}
END_TEST

/* fork: the child has only the forking thread, so the parent's other threads must not count
 * there. The parent binds 3 threads to core 0 of 4 and forks while they live; in the child 4 new
 * threads, alive together, must get the 4 cores, one each. Counting the parent's threads would
 * leave core 0 empty and put two on another. The child reports by exit status (no Check there). */
static nsp_topo_t *ft;
static pthread_barrier_t fbar;
static unsigned fgot[4];

static void *fork_parent_thread(void *arg)
{
    (void)arg;
    nsp_topo_thread_bind_core(ft, 0);
    pthread_barrier_wait(&fbar); /* bound */
    pthread_barrier_wait(&fbar); /* forked */
    return NULL;
}

static void *fork_child_thread(void *arg)
{
    fgot[(uintptr_t)arg] = nsp_topo_current_cache(ft);
    pthread_barrier_wait(&fbar); /* all four drew while all four live */
    return NULL;
}

START_TEST(fork_child_counts_only_its_threads)
{
#if defined(__SANITIZE_THREAD__)
    /* TSan cannot start threads in the child of a multi-threaded fork (it exits 66) */
    fprintf(stderr, "fork_child_counts_only_its_threads: skipped: ThreadSanitizer build\n");
    return;
#endif
    ft = load_ok("synthetic:pack:1 numa:1 core:4 pu:1", NSP_GROUP_PU);
    pthread_t pt[3];
    pthread_barrier_init(&fbar, NULL, 4);
    for (uintptr_t i = 0; i < 3; i++)
        ck_assert_int_eq(pthread_create(&pt[i], NULL, fork_parent_thread, (void *)i), 0);
    pthread_barrier_wait(&fbar);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* the parent's barrier has waiters that do not exist here: a fresh one */
        pthread_barrier_init(&fbar, NULL, 4);
        pthread_t ct4[4];
        for (uintptr_t i = 0; i < 4; i++)
            if (pthread_create(&ct4[i], NULL, fork_child_thread, (void *)i) != 0)
                _exit(3);
        for (unsigned i = 0; i < 4; i++)
            pthread_join(ct4[i], NULL);
        unsigned seen = 0;
        for (unsigned i = 0; i < 4; i++)
            seen |= fgot[i] < 4 ? 1u << fgot[i] : 0;
        _exit(seen == 0xf ? 0 : 10 + (int)seen);
    }
    pthread_barrier_wait(&fbar);
    for (unsigned i = 0; i < 3; i++)
        pthread_join(pt[i], NULL);
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status), "the child did not exit normally (status %d)", status);
    ck_assert_msg(WEXITSTATUS(status) == 0,
                  "in the child, 4 live threads on 4 virtual cores did not get one core each "
                  "(exit %d: cores taken, as a bit mask, + 10)",
                  WEXITSTATUS(status));
    pthread_barrier_destroy(&fbar);
    nsp_topo_destroy(ft);
}
END_TEST

START_TEST(report_text_and_json)
{
    nsp_topo_t *t = load_ok("synthetic:pack:2 numa:2 core:4 pu:1", NSP_GROUP_PU);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    nsp_topo_print(t, f, 1);
    fclose(f);
    ck_assert_ptr_nonnull(strstr(buf, "\"thissystem\": false"));
    ck_assert_ptr_nonnull(strstr(buf, "\"distance_source\": \"hops\""));
    ck_assert_ptr_nonnull(strstr(buf, "\"caches\": [12, 13, 14, 15]"));
    ck_assert_ptr_nonnull(strstr(buf, "[50, 50, 30, 10]"));
    free(buf);
    f = open_memstream(&buf, &len);
    nsp_topo_print(t, f, 0);
    fclose(f);
    ck_assert_ptr_nonnull(strstr(buf, "nodes:      4"));
    ck_assert_ptr_nonnull(strstr(buf, "recorded, not applied"));
    free(buf);
    nsp_topo_destroy(t);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("topology");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, synthetic_four_nodes);
    tcase_add_test(tc, interleaved_os_indexes);
    tcase_add_test(tc, two_nodes_per_package);
    tcase_add_test(tc, xml_with_latency_matrix);
    tcase_add_test(tc, malformed_inputs_are_named);
    tcase_add_test(tc, grouping_levels);
    tcase_add_test(tc, core_grouping_falls_back_to_x86);
    tcase_add_test(tc, out_of_range_lookups);
    tcase_add_test(tc, binding_is_recorded_on_synthetic);
    tcase_add_test(tc, real_machine);
    tcase_add_test(tc, thousand_threads_virtual_cores);
    tcase_add_test(tc, thread_churn_gives_cores_back);
    tcase_add_test(tc, fork_child_counts_only_its_threads);
    tcase_add_test(tc, report_text_and_json);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return nsp_run_suite(suite());
}
