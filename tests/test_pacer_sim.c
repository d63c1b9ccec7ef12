/*
 * tests/test_pacer_sim.c — the pacer's model driven by simulated cycles, in the allocation
 * shapes of Go's runtime/mgcpacer_test.go.
 *
 * A simulated cycle: the heap grows at the program's allocation rate until it reaches the
 * trigger; the cycle then runs for a time proportional to the live heap (the collector walks
 * it), while the program keeps allocating (concurrent mode); its peak is the trigger plus what
 * was allocated meanwhile. At the end the live heap is whatever the shape says, and the pacer
 * computes the next goal and trigger from it and from the runway (bytes allocated during recent
 * cycles), with the same functions the running pacer uses (host/pacer.c).
 *
 * Checks, once settled: peak heap / goal within 0.95..1.05; the trigger within its bounds; the
 * trigger stable from cycle to cycle; with a memory limit that binds, the goal exactly
 * limit - outside - headroom; a live heap above the limit handled without a cycle storm; and
 * the reservation term of `over` (what caches hold charged but unallocated): the storm the old
 * design had, and none with the reservation budget and the confirmed crossing.
 */
#include <check.h>

#include "check_main.h"
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "host/ledger.h"
#include "host/pacer.h"

#define MiB ((int64_t)1 << 20)
#define GiB ((int64_t)1 << 30)

struct shape {
    const char *name;
    double percent;
    int64_t heap_min;
    int64_t memory_limit;
    int cycles;
    int64_t (*live)(int cycle, uint64_t *rng);   /* live heap at the end of a cycle */
    double (*rate)(int cycle, uint64_t *rng);    /* bytes allocated per unit time */
    double scan;                                 /* live bytes the collector walks per unit time */
};

struct outcome {
    double peak_goal[512];
    int64_t goal[512], trigger[512], live[512], lo[512], hi[512];
    int n;
};

static double unit(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (double)(*s >> 11) / (double)(1ULL << 53);
}

static void simulate(const struct shape *sh, struct outcome *o)
{
    struct nsp_pacer_params p = {.concurrent = 1,
                                 .percent = sh->percent,
                                 .heap_min = sh->heap_min,
                                 .memory_limit = sh->memory_limit,
                                 .outside = 0};
    uint64_t rng = 0x5eed;
    int64_t live = sh->live(0, &rng);
    int64_t goal = nsp__pacer_goal(&p, live), runway = 0;
    int64_t trigger = nsp__pacer_trigger_for(&p, live, goal, runway);
    o->n = sh->cycles;
    for (int i = 0; i < sh->cycles; i++) {
        double rate = sh->rate(i, &rng);
        double duration = (double)live / sh->scan; /* collector work grows with the live heap */
        int64_t during = (int64_t)(rate * duration);
        o->peak_goal[i] = (double)(trigger + during) / (double)goal;
        o->goal[i] = goal;
        o->trigger[i] = trigger;
        o->live[i] = live;
        int64_t span = goal - live;
        o->lo[i] = live + span / 64 * 45;
        o->hi[i] = live + span / 64 * 61;
        if (goal > 4 * MiB && goal - 4 * MiB > o->hi[i])
            o->hi[i] = goal - 4 * MiB;
        /* the cycle ends: new live heap, new goal and trigger (as pacer.c's cycle does) */
        live = sh->live(i + 1, &rng);
        runway = runway ? (runway + during) / 2 : during;
        goal = nsp__pacer_goal(&p, live);
        trigger = nsp__pacer_trigger_for(&p, live, goal, runway);
    }
}

/* Peak/goal within [lo, hi] for every cycle from `from` on. */
static void check_goal_ratio(const struct shape *sh, const struct outcome *o, int from,
                             double lo, double hi)
{
    for (int i = from; i < o->n; i++)
        ck_assert_msg(o->peak_goal[i] >= lo && o->peak_goal[i] <= hi,
                      "%s: cycle %d: peak/goal %.3f outside %.2f..%.2f (live %lld goal %lld "
                      "trigger %lld)",
                      sh->name, i, o->peak_goal[i], lo, hi, (long long)o->live[i],
                      (long long)o->goal[i], (long long)o->trigger[i]);
}

static void check_trigger_bounds(const struct shape *sh, const struct outcome *o)
{
    for (int i = 0; i < o->n; i++) {
        if (o->goal[i] <= o->live[i])
            continue; /* a limit below the live heap: the storm check covers it */
        int64_t floor = o->live[i] + nsp__pacer_min_between(o->goal[i], o->live[i]);
        int64_t lo = o->lo[i] > floor ? o->lo[i] : floor, hi = o->hi[i] > floor ? o->hi[i] : floor;
        ck_assert_msg(o->trigger[i] >= lo && o->trigger[i] <= hi,
                      "%s: cycle %d: trigger %lld outside [%lld, %lld]", sh->name, i,
                      (long long)o->trigger[i], (long long)lo, (long long)hi);
    }
}

/* The trigger's relative change from one cycle to the next stays under tol once settled. */
static void check_stable(const struct shape *sh, const struct outcome *o, int from, double tol)
{
    for (int i = from + 1; i < o->n; i++) {
        double d = fabs((double)(o->trigger[i] - o->trigger[i - 1])) / (double)o->trigger[i - 1];
        ck_assert_msg(d <= tol, "%s: cycle %d: trigger moved %.1f%%", sh->name, i, 100 * d);
    }
}

/* ---- shapes ------------------------------------------------------------------------------------ */

static int64_t live_steady(int c, uint64_t *r) { (void)c; (void)r; return 256 * MiB; }
static int64_t live_step(int c, uint64_t *r) { (void)r; return c < 50 ? 128 * MiB : 256 * MiB; }
static int64_t live_heavy_step(int c, uint64_t *r) { (void)r; return c < 50 ? 64 * MiB : 640 * MiB; }
static int64_t live_osc(int c, uint64_t *r)
{
    (void)r;
    return (int64_t)(256 * MiB * (1.0 + 0.2 * sin(c * 0.3)));
}
static int64_t live_small(int c, uint64_t *r) { (void)c; (void)r; return 1 * MiB; }
static int64_t live_medium(int c, uint64_t *r) { (void)c; (void)r; return 32 * MiB; }
static int64_t live_large(int c, uint64_t *r) { (void)c; (void)r; return 4 * GiB; }
static int64_t live_jump(int c, uint64_t *r) { (void)r; return c < 40 ? 64 * MiB : 1 * GiB; }
static int64_t live_near_limit(int c, uint64_t *r) { (void)c; (void)r; return 400 * MiB; }
static int64_t live_over_limit(int c, uint64_t *r) { (void)c; (void)r; return 600 * MiB; }

static double rate_steady(int c, uint64_t *r) { (void)c; (void)r; return 100.0; }
static double rate_slow(int c, uint64_t *r) { (void)c; (void)r; return 1.0; }
static double rate_jitter(int c, uint64_t *r) { (void)c; return 100.0 * (0.95 + 0.1 * unit(r)); }
static double rate_heavy_jitter(int c, uint64_t *r) { (void)c; return 100.0 * (0.8 + 0.4 * unit(r)); }

/* scan: live bytes walked per unit time; with rate 100 the cycle allocates live * 100 / scan */
static const struct shape shapes[] = {
    {"steady", 100, 4 * MiB, 0, 100, live_steady, rate_steady, 500},
    {"step", 100, 4 * MiB, 0, 150, live_step, rate_steady, 500},
    {"heavy step", 100, 4 * MiB, 0, 150, live_heavy_step, rate_steady, 500},
    {"oscillating", 100, 4 * MiB, 0, 150, live_osc, rate_steady, 500},
    {"jittery", 100, 4 * MiB, 0, 150, live_steady, rate_jitter, 500},
    {"heavy jitter", 100, 4 * MiB, 0, 150, live_steady, rate_heavy_jitter, 500},
    {"small heap, slow allocation", 100, 4 * MiB, 0, 100, live_small, rate_slow, 500},
    {"medium heap, slow allocation", 100, 4 * MiB, 0, 100, live_medium, rate_slow, 500},
    {"large heap, slow allocation", 100, 4 * MiB, 0, 100, live_large, rate_slow, 500},
    {"high percent, heap jump", 1000, 40 * MiB, 0, 100, live_jump, rate_steady, 500},
};

START_TEST(shapes_settle_on_the_goal)
{
    const struct shape *sh = &shapes[_i];
    static struct outcome o;
    simulate(sh, &o);
    check_trigger_bounds(sh, &o);
    int settled = 10;
    if (sh->live == live_step || sh->live == live_heavy_step)
        settled = 60; /* after the step, as Go's test does */
    if (sh->live == live_jump)
        settled = 50;
    check_goal_ratio(sh, &o, settled, 0.95, 1.05);
    if (sh->rate == rate_steady || sh->rate == rate_slow)
        check_stable(sh, &o, settled, sh->live == live_osc ? 0.25 : 0.01);
}
END_TEST

START_TEST(memory_limit_steady_and_held)
{
    int64_t limit = 512 * MiB;
    struct shape sh = {"limit steady", 100, 4 * MiB, limit, 100, live_near_limit, rate_steady, 2000};
    static struct outcome o;
    simulate(&sh, &o);
    struct nsp_pacer_params p = {.concurrent = 1, .percent = 100, .heap_min = 4 * MiB,
                                 .memory_limit = limit};
    int64_t cap = limit - nsp__pacer_headroom(limit);
    ck_assert_int_eq(nsp__pacer_headroom(limit), limit / 100 * 3); /* 3% > 1 MiB here */
    ck_assert_int_eq(nsp__pacer_headroom(10 * MiB), MiB);          /* 1 MiB > 3% here */
    for (int i = 10; i < o.n; i++) {
        ck_assert_int_eq(o.goal[i], cap); /* the limit binds: goal = limit - headroom exactly */
        ck_assert_msg(o.trigger[i] + (int64_t)(100.0 * o.live[i] / 2000) <= limit,
                      "limit held: peak %lld over %lld", (long long)o.trigger[i], (long long)limit);
    }
    check_goal_ratio(&sh, &o, 10, 0.95, 1.05);
    /* and with what numaspan holds outside the heap */
    p.outside = 8 * MiB;
    ck_assert_int_eq(nsp__pacer_goal(&p, 400 * MiB), cap - 8 * MiB);
}
END_TEST

START_TEST(memory_limit_exceeded_without_storm)
{
    int64_t limit = 512 * MiB;
    struct nsp_pacer_params p = {.concurrent = 1, .percent = 100, .heap_min = 4 * MiB,
                                 .memory_limit = limit};
    int64_t live = live_over_limit(0, NULL); /* 600 MiB live: above the limit */
    int64_t goal = nsp__pacer_goal(&p, live);
    ck_assert_int_lt(goal, live);
    /* the next cycle still waits for a minimum of allocation: no back-to-back cycles */
    int64_t trigger = nsp__pacer_trigger_for(&p, live, goal, 0);
    ck_assert_int_ge(trigger - live, 256 << 10);
    /* sync mode too */
    p.concurrent = 0;
    ck_assert_int_ge(nsp__pacer_trigger_for(&p, live, goal, 0) - live, 256 << 10);
}
END_TEST

/* NSP_PACE_PERCENT=off: the goal is the memory limit's alone; without a limit nothing is paced. */
START_TEST(percent_off_paces_by_the_limit_alone)
{
    struct nsp_pacer_params p = {.concurrent = 1, .percent = 0, .heap_min = 0,
                                 .memory_limit = 512 * MiB};
    int64_t cap = 512 * MiB - nsp__pacer_headroom(512 * MiB);
    for (int64_t live = MiB; live < 400 * MiB; live *= 4) {
        ck_assert_int_eq(nsp__pacer_goal(&p, live), cap);
        int64_t t = nsp__pacer_trigger_for(&p, live, cap, 0);
        ck_assert_int_gt(t, live);
        ck_assert_int_le(t, cap);
    }
    p.memory_limit = 0;
    ck_assert_int_eq(nsp__pacer_goal(&p, 8 * MiB), INT64_MAX);
    ck_assert_int_eq(nsp__pacer_trigger_for(&p, 8 * MiB, INT64_MAX, 0), INT64_MAX);
}
END_TEST

START_TEST(sync_trigger_is_the_goal)
{
    struct nsp_pacer_params p = {.concurrent = 0, .percent = 100, .heap_min = 4 * MiB};
    for (int64_t live = 8 * MiB; live < 8 * GiB; live *= 3) {
        int64_t goal = nsp__pacer_goal(&p, live);
        ck_assert_int_eq(goal, 2 * live);
        ck_assert_int_eq(nsp__pacer_trigger_for(&p, live, goal, live / 2), goal);
    }
    ck_assert_int_eq(nsp__pacer_goal(&p, 1 * MiB), 4 * MiB); /* the minimum heap */
    p.percent = 50;
    ck_assert_int_eq(nsp__pacer_goal(&p, 100 * MiB), 150 * MiB);
}
END_TEST

/* ---- the reservation term (issue 12) ---------------------------------------------------------
 *
 * In `over` heapLive = allocated + R, where R is what caches hold charged but not allocated.
 * Each cycle releases every cache; the refills that follow charge whole spans again, R growing
 * at rho bytes per byte allocated (the bench: a visit of 64 allocations, 16 KiB, charges five
 * 64 KiB spans) up to the cached capacity C. The program allocates garbage at a steady rate;
 * each cycle collects it (allocated falls back to the live heap).
 *   exact      a cycle starts when allocated reaches the trigger;
 *   old over   when heapLive does (R unbounded up to C): a storm, (1 + rho) x exact's cycles;
 *   budget     R is capped at B = kappa (trigger - live): at most 1/(1 - kappa) x, and a cycle
 *              starts at most kappa of the way early;
 *   confirmed  the budget, and a crossing starts a cycle only once allocated is at the trigger.
 */
enum design { EXACT, OLD_OVER, BUDGET, CONFIRMED };

struct reserve_run {
    int cycles;
    double early_max; /* (trigger - allocated at the start) / (trigger - live) */
};

static struct reserve_run run_reserve(enum design d, int64_t live, int64_t cap, double rho,
                                      double kappa, int64_t total)
{
    struct nsp_pacer_params p = {.concurrent = 1, .percent = 100, .heap_min = 64 << 10};
    int64_t goal = nsp__pacer_goal(&p, live), trigger = nsp__pacer_trigger_for(&p, live, goal, 0);
    int64_t allocated = live, since = 0, step = 4096;
    struct reserve_run r = {0, 0};
    for (int64_t done = 0; done < total; done += step) {
        allocated += step;
        since += step;
        int64_t reserve = (int64_t)(rho * (double)since);
        if (reserve > cap)
            reserve = cap;
        int64_t budget = nsp__pacer_reserve_budget(kappa, trigger, live); /* the pacer's */
        if ((d == BUDGET || d == CONFIRMED) && reserve > budget)
            reserve = budget;
        int64_t heap_live = allocated + reserve;
        int start = d == EXACT ? allocated >= trigger
                    : d == CONFIRMED ? heap_live >= trigger && allocated >= trigger
                                     : heap_live >= trigger;
        if (!start)
            continue;
        double early = (double)(trigger - allocated) / (double)(trigger - live);
        if (early > r.early_max)
            r.early_max = early;
        r.cycles++;
        allocated = live; /* the garbage collected; the caches released */
        since = 0;
    }
    return r;
}

START_TEST(reservation_term_predicts_the_storm_and_its_end)
{
    const double kappa = 0.25, rho = 20;
    const int64_t live = 8 * MiB, total = 24 * 8 * MiB;
    static const int64_t caps[] = {640 << 10, 10 * MiB, 160 * MiB}; /* 2, 32, 512 caches */
    for (int i = 0; i < 3; i++) {
        struct reserve_run ex = run_reserve(EXACT, live, caps[i], rho, kappa, total);
        struct reserve_run old = run_reserve(OLD_OVER, live, caps[i], rho, kappa, total);
        struct reserve_run bud = run_reserve(BUDGET, live, caps[i], rho, kappa, total);
        struct reserve_run conf = run_reserve(CONFIRMED, live, caps[i], rho, kappa, total);
        ck_assert_int_gt(ex.cycles, 10);
        double r_old = (double)old.cycles / ex.cycles, r_bud = (double)bud.cycles / ex.cycles;
        /* the old design storms once C is a good part of the way to the trigger */
        if (caps[i] >= 10 * MiB)
            ck_assert_msg(r_old >= 5, "C %lld: old over %.2fx exact's cycles, no storm predicted",
                          (long long)caps[i], r_old);
        /* the budget: at most 1/(1 - kappa) x exact's cycles and kappa early, whatever C */
        ck_assert_msg(r_bud <= 1.0 / (1.0 - kappa) + 0.05, "C %lld: budget %.2fx exact's cycles",
                      (long long)caps[i], r_bud);
        ck_assert_msg(bud.early_max <= kappa + 0.01, "C %lld: a cycle started %.2f early",
                      (long long)caps[i], bud.early_max);
        /* confirmed: exact's cycles, never early */
        ck_assert_int_eq(conf.cycles, ex.cycles);
        ck_assert(conf.early_max <= 0);
    }
    /* the budget as the pacer computes it: none when nothing is paced, never negative */
    ck_assert_int_eq(nsp__pacer_reserve_budget(kappa, INT64_MAX, live), INT64_MAX);
    ck_assert_int_eq(nsp__pacer_reserve_budget(kappa, live - 1, live), 0);
    ck_assert_int_eq(nsp__pacer_reserve_budget(kappa, live + 4 * MiB, live), MiB);
}
END_TEST

/* Per-node goals (pacer.h): shares of the heap's goal by live bytes that add up to it; a node
 * limit caps a node and its excess goes to the others; a node's trigger is as far toward its
 * goal as the heap's trigger is toward the heap's. */
START_TEST(node_goals_share_the_heap_goal)
{
    struct nsp_pacer_params p = {.concurrent = 1, .percent = 100, .heap_min = 4 * MiB};
    int64_t live_n[3] = {30 * MiB, 10 * MiB, 0}, none[3] = {0, 0, 0}, goal_n[3];
    uint64_t capped;
    int64_t live = 40 * MiB, goal = nsp__pacer_goal(&p, live);
    nsp__pacer_node_goals(&p, goal, live, 3, live_n, none, goal_n, &capped);
    ck_assert_uint_eq(capped, 0);
    ck_assert_int_eq(goal_n[0], 60 * MiB);
    ck_assert_int_eq(goal_n[1], 20 * MiB);
    ck_assert_int_eq(goal_n[2], 4 * MiB / 3); /* nothing live: its share of the minimum */
    /* node 0 limited to 48 MiB: capped at the limit less headroom, node 1 takes the rest */
    int64_t limits[3] = {48 * MiB, 0, 0};
    nsp__pacer_node_goals(&p, goal, live, 3, live_n, limits, goal_n, &capped);
    ck_assert_uint_eq(capped, 1);
    ck_assert_int_eq(goal_n[0], 48 * MiB - nsp__pacer_headroom(48 * MiB));
    ck_assert_int_ge(goal_n[0] + goal_n[1] + goal_n[2], goal);
    ck_assert_int_gt(goal_n[1], 2 * goal_n[2]); /* in proportion to the shares */
    /* the trigger: the heap's fraction of the way, per node */
    int64_t trigger = live + (goal - live) * 3 / 4;
    ck_assert_int_eq(nsp__pacer_node_trigger(goal, trigger, live, 20 * MiB, 10 * MiB),
                     10 * MiB + 10 * MiB * 3 / 4);
    ck_assert_int_eq(nsp__pacer_node_trigger(goal, INT64_MAX, live, 20 * MiB, 10 * MiB),
                     INT64_MAX);
    /* percent off, no memory limit: nothing to share, a node limit still caps */
    p.percent = 0;
    nsp__pacer_node_goals(&p, INT64_MAX, live, 3, live_n, limits, goal_n, &capped);
    ck_assert_int_eq(goal_n[1], INT64_MAX);
    ck_assert_int_eq(goal_n[0], 48 * MiB - nsp__pacer_headroom(48 * MiB));
}
END_TEST

/* The reservation budget's floor (ledger.h): one span of each class refilled since the last
 * cycle, counted once per class; it holds while the refill leaves heapLive under the trigger,
 * and past it the budget B alone (with the floor there too, a crossing the live bytes did not
 * confirm waited for a refill that never came, and cycles started up to F late). */
START_TEST(reserve_floor_counts_classes_and_stops_at_the_trigger)
{
    const int64_t span = 64 << 10, budget = 2 * span;
    nsp__ledger_reserve_reset();
    atomic_store(&nsp__heap_live_total, 1 * MiB);
    atomic_store(&nsp__pacer_notify, 4 * MiB);
    ck_assert_int_eq(nsp__ledger_reserve_room(1, span, budget), budget); /* 2F = 2 spans = B */
    ck_assert_int_eq(nsp__ledger_reserve_room(1, span, budget), budget); /* counted once */
    for (unsigned k = 2; k <= 5; k++)
        nsp__ledger_reserve_room(k, span, budget);
    ck_assert_int_eq(atomic_load(&nsp__reserve_floor), 5 * span);
    ck_assert_int_eq(nsp__ledger_reserve_floor(), 10 * span); /* twice: two caches' sets */
    ck_assert_int_eq(nsp__ledger_reserve_room(3, span, budget), 10 * span); /* 2F > B: 2F */
    atomic_store(&nsp__heap_live_total, 4 * MiB - span); /* this span's charge reaches it */
    ck_assert_int_eq(nsp__ledger_reserve_room(3, span, budget), budget);
    atomic_store(&nsp__pacer_notify, INT64_MAX);
    nsp__ledger_reserve_reset(); /* a cycle: classes counted afresh */
    ck_assert_int_eq(atomic_load(&nsp__reserve_floor), 0);
    ck_assert_int_eq(nsp__ledger_reserve_room(3, span, budget), budget);
    ck_assert_int_eq(atomic_load(&nsp__reserve_floor), span);
    atomic_store(&nsp__heap_live_total, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("pacer simulation");
    TCase *tc = tcase_create("shapes");
    tcase_add_loop_test(tc, shapes_settle_on_the_goal, 0, (int)(sizeof shapes / sizeof shapes[0]));
    tcase_add_test(tc, memory_limit_steady_and_held);
    tcase_add_test(tc, memory_limit_exceeded_without_storm);
    tcase_add_test(tc, sync_trigger_is_the_goal);
    tcase_add_test(tc, percent_off_paces_by_the_limit_alone);
    tcase_add_test(tc, reservation_term_predicts_the_storm_and_its_end);
    tcase_add_test(tc, node_goals_share_the_heap_goal);
    tcase_add_test(tc, reserve_floor_counts_classes_and_stops_at_the_trigger);
    suite_add_tcase(s, tc);
    return nsp_run_suite(s);
}
