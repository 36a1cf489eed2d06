/* Mixed precision: the knapsack against brute-force enumeration on many small random instances,
 * the uniform and KL-greedy baselines against their definitions, Spearman against its closed form. */
#include "harness.h"
#include "piso/mixed.h"

#include <stdint.h>

static uint64_t rng = 0x1234abcdULL;
static uint64_t next_u64(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}
static int rand_int(int lo, int hi) { return lo + (int)(next_u64() % (uint64_t)(hi - lo + 1)); }
static double rand_unit(void) { return (double)(next_u64() >> 11) / 9007199254740992.0; }

/* Enumerates every assignment: the least cost within the budget (INFINITY when none fits). */
static double brute_force(const struct piso_mckp *p) {
    int n = p->n_items, nc = p->n_choices, ch[8] = {0};
    double best = INFINITY;
    for (;;) {
        int64_t w = 0;
        double c = 0;
        for (int i = 0; i < n; i++) w += p->weight[i * nc + ch[i]], c += p->cost[i * nc + ch[i]];
        if (w <= p->budget && c < best) best = c;
        int i = 0;
        while (i < n && ++ch[i] == nc) ch[i++] = 0;
        if (i == n) break;
    }
    return best;
}

static void test_random_instances(void) {
    int n_solved = 0, n_infeasible = 0;
    for (int trial = 0; trial < 3000; trial++) {
        int n = rand_int(1, 7), nc = rand_int(1, 4);
        int64_t weight[32];
        double cost[32];
        /* weights: sometimes all multiples of a large factor (exercises the gcd reduction), sometimes
         * small coprime numbers, sometimes equal weights across choices */
        int64_t unit = trial % 3 == 0 ? 4096 : trial % 3 == 1 ? 1 : 96;
        int64_t wmin = 0, wmax = 0;
        for (int i = 0; i < n; i++) {
            int64_t lo = INT64_MAX, hi = 0;
            for (int c = 0; c < nc; c++) {
                weight[i * nc + c] = unit * rand_int(0, 12) + (trial % 5 == 0 ? rand_int(0, 2) : 0);
                cost[i * nc + c] = trial % 7 == 0 ? (double)rand_int(0, 3) : rand_unit() * 10; /* ties too */
                if (weight[i * nc + c] < lo) lo = weight[i * nc + c];
                if (weight[i * nc + c] > hi) hi = weight[i * nc + c];
            }
            wmin += lo, wmax += hi;
        }
        int64_t budget = wmin - unit + (int64_t)(rand_unit() * (double)(wmax - wmin + 2 * unit));
        struct piso_mckp p = {n, nc, weight, cost, budget};
        double bf = brute_force(&p);
        int choice[8];
        double tc;
        int64_t tw;
        int rc = piso_mckp_solve(&p, choice, &tc, &tw);
        if (isinf(bf)) {
            CHECK(rc != 0, "trial %d: infeasible budget %lld (lightest %lld) accepted", trial, (long long)budget,
                  (long long)wmin);
            CHECK(rc != 0 && strstr(piso_last_error(), "below the lightest"), "trial %d: message '%s'", trial,
                  piso_last_error());
            n_infeasible++;
            continue;
        }
        CHECK(rc == 0, "trial %d: %s", trial, piso_last_error());
        if (rc) continue;
        n_solved++;
        CHECK(tw <= budget, "trial %d: %lld bits > budget %lld", trial, (long long)tw, (long long)budget);
        CHECK(tw == piso_mckp_weight(&p, choice), "trial %d: reported weight", trial);
        CHECK(fabs(tc - bf) <= 1e-9 * (1 + fabs(bf)), "trial %d: DP cost %.12g vs brute force %.12g", trial, tc, bf);
        /* baselines: never better than the optimum, within the budget when they exist */
        int u = piso_mckp_uniform(&p);
        double ubest = INFINITY;
        for (int c = 0; c < nc; c++) {
            int64_t w = 0;
            double s = 0;
            for (int i = 0; i < n; i++) w += weight[i * nc + c], s += cost[i * nc + c];
            if (w <= budget && s < ubest) ubest = s;
        }
        CHECK((u < 0) == isinf(ubest), "trial %d: uniform exists %d vs %d", trial, u >= 0, !isinf(ubest));
        if (u >= 0) {
            double s = 0;
            for (int i = 0; i < n; i++) s += cost[i * nc + u];
            CHECK(s == ubest, "trial %d: uniform cost %.12g vs best %.12g", trial, s, ubest);
            CHECK(s >= tc - 1e-9 * (1 + fabs(tc)), "trial %d: uniform beats the optimum", trial);
        }
        double sens[8];
        for (int i = 0; i < n; i++) sens[i] = rand_unit();
        int g[8];
        CHECK(piso_mckp_kl_greedy(&p, sens, g) == 0, "trial %d: greedy failed: %s", trial, piso_last_error());
        CHECK(piso_mckp_weight(&p, g) <= budget, "trial %d: greedy over budget", trial);
        CHECK(piso_mckp_cost(&p, g) >= tc - 1e-9 * (1 + fabs(tc)), "trial %d: greedy beats the optimum", trial);
    }
    CHECK(n_solved > 2000 && n_infeasible > 50, "instance mix: %d solved, %d infeasible", n_solved, n_infeasible);
}

/* Greedy on a hand-made instance: 3 layers, choices {2 bits, 4 bits} as weights {2, 4}; budget 8
 * allows one promotion; it must go to the most sensitive layer even when another gains more. */
static void test_greedy_order(void) {
    int64_t w[6] = {2, 4, 2, 4, 2, 4};
    double cost[6] = {10, 0, 50, 0, 9, 8};
    double sens[3] = {0.1, 0.2, 0.9};
    struct piso_mckp p = {3, 2, w, cost, 8};
    int g[3], o[3];
    CHECK(piso_mckp_kl_greedy(&p, sens, g) == 0, "greedy");
    CHECK(g[0] == 0 && g[1] == 0 && g[2] == 1, "greedy promoted %d %d %d (want layer 2)", g[0], g[1], g[2]);
    CHECK(piso_mckp_solve(&p, o, NULL, NULL) == 0, "solve");
    CHECK(o[0] == 0 && o[1] == 1 && o[2] == 0, "optimum %d %d %d (want layer 1)", o[0], o[1], o[2]);
}

static void test_spearman(void) {
    /* no ties: rho = 1 − 6 Σ d² / (n (n² − 1)) */
    double x[6] = {1.5, 0.2, 3.3, 9.0, -1.0, 4.4}, y[6] = {10, 30, 20, 60, 0, 40};
    /* ranks x: 3 2 4 6 1 5; y: 2 4 3 6 1 5; d² = 1 4 1 0 0 0 = 6 */
    CHECK_NEAR(piso_spearman(6, x, y), 1 - 6.0 * 6 / (6 * 35), 1e-12, "spearman closed form");
    double yr[6];
    for (int i = 0; i < 6; i++) yr[i] = -x[i];
    CHECK_NEAR(piso_spearman(6, x, yr), -1, 1e-12, "reversed");
    /* ties: x ranks 1.5 1.5 3, y ranks 1 2 3 → Pearson of (−0.5,−0.5,1) and (−1,0,1) = 1.5/sqrt(1.5·2) */
    double xt[3] = {1, 1, 2}, yt[3] = {5, 6, 7};
    CHECK_NEAR(piso_spearman(3, xt, yt), 1.5 / sqrt(3.0), 1e-12, "ties");
    CHECK(piso_spearman(3, xt, xt + 0) == 1.0 || fabs(piso_spearman(3, xt, xt) - 1) < 1e-12, "self");
}

static void test_errors(void) {
    int64_t w[2] = {5, 7};
    double c[2] = {1, NAN};
    int ch[2];
    struct piso_mckp p = {1, 2, w, c, 10};
    CHECK(piso_mckp_solve(&p, ch, NULL, NULL) != 0 && strstr(piso_last_error(), "non-finite"), "NaN cost: %s",
          piso_last_error());
    double c2[2] = {1, 0};
    struct piso_mckp q = {1, 2, w, c2, 4};
    CHECK(piso_mckp_solve(&q, ch, NULL, NULL) != 0 && strstr(piso_last_error(), "4 bits") &&
              strstr(piso_last_error(), "5 bits"),
          "budget message names both numbers: %s", piso_last_error());
    /* a table too large: coprime weights over a huge budget */
    int64_t wb[2] = {0, (int64_t)1 << 40};
    int64_t wb2[4] = {0, 1, 0, ((int64_t)1 << 40) + 1};
    double cb[4] = {1, 0, 1, 0};
    struct piso_mckp r = {2, 2, wb2, cb, (int64_t)1 << 41};
    (void)wb;
    CHECK(piso_mckp_solve(&r, ch, NULL, NULL) != 0 && strstr(piso_last_error(), "cells"), "big table: %s",
          piso_last_error());
}

int main(void) {
    test_random_instances();
    test_greedy_order();
    test_spearman();
    test_errors();
    return test_finish();
}
