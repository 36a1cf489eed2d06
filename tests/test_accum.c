/* Accumulator-aware quantization (AXE, piso/accum.h) against independent references:
 *  - the closed-form worst case and the code limits of the next weight against enumerating every
 *    input vector at the corners of the range (2^D of them) on small rows;
 *  - the ℓ1-ball threshold against Duchi's sort-based formula and the defining equation;
 *  - the guarantee on random layers for P = 8..24, signed and unsigned inputs, per row and per tile,
 *    for RTN (absmax, PiSO), GPTQ, Qronos, sr and GPFQ: every (row, tile) checked by a direct
 *    computation here (and by piso_accum_check); the checker flags unconstrained layers that overflow;
 *  - constrained PiSO against a brute-force scan (fine grid of scales + every breakpoint ×(1±1e-4)),
 *    feasibility of each scanned scale decided here by the corner enumeration's closed form: never
 *    beaten, never infeasible, never worse than the constrained absmax scale;
 *  - bad options: P too small for any non-zero weight, a tile that does not divide the row. */
#include "harness.h"
#include "piso/accum.h"
#include "piso/solve.h"

#include <stdint.h>

static double urand(void) { return (double)rand() / RAND_MAX; }
static double nrand(void) {
    double a = urand() * 0.999999 + 1e-6, b = urand();
    return sqrt(-2 * log(a)) * cos(6.283185307179586 * b);
}

/* max over x ∈ {μ_min, μ_max}^n of |Σ q_i x_i| (a linear function attains its extremes on corners) */
static int64_t corner_worst(const int64_t *q, int n, int64_t mn, int64_t mx) {
    int64_t worst = 0;
    for (uint32_t m = 0; m < (1u << n); m++) {
        int64_t acc = 0;
        for (int i = 0; i < n; i++) acc += q[i] * ((m >> i) & 1 ? mx : mn);
        if (acc > worst) worst = acc;
        if (-acc > worst) worst = -acc;
    }
    return worst;
}

static void test_limits_vs_corners(void) {
    srand(11);
    int bad_worst = 0, bad_limits = 0, cases = 0;
    for (int it = 0; it < 400; it++) {
        struct piso_accum a = {0};
        int sgn = it & 1, nb = 2 + rand() % 5;
        piso_accum_input_range(nb, sgn, &a.in_min, &a.in_max);
        a.bits = 6 + rand() % 8;
        int n = 1 + rand() % 6;
        int64_t q[8], p = 0, ng = 0;
        for (int i = 0; i < n; i++) {
            q[i] = rand() % 9 - 4;
            if (q[i] > 0) p += q[i];
            else ng += q[i];
        }
        int64_t w = corner_worst(q, n, a.in_min, a.in_max);
        if (piso_accum_worst(&a, p, ng) != w) bad_worst++;
        const int64_t A = piso_accum_max(&a);
        if (w > A) continue; /* the limits are for a feasible tile */
        int64_t lo, hi;
        piso_accum_code_limits(&a, p, ng, &lo, &hi);
        /* every candidate code c: feasible (by enumeration) ⇔ lo ≤ c ≤ hi */
        for (int64_t c = -300; c <= 300; c++) {
            q[n] = c;
            int ok = corner_worst(q, n + 1, a.in_min, a.in_max) <= A;
            if (ok != (c >= lo && c <= hi)) bad_limits++;
        }
        cases++;
        CHECK(lo <= 0 && hi >= 0, "limits [%lld, %lld] exclude 0", (long long)lo, (long long)hi);
    }
    CHECK(bad_worst == 0, "%d closed-form worst cases differ from the corner enumeration", bad_worst);
    CHECK(bad_limits == 0, "%d code limits differ from the enumeration", bad_limits);
    CHECK(cases > 100, "only %d feasible cases", cases);
}

/* Duchi et al.: u sorted descending, ρ = max{j : u_j > (Σ_{k≤j} u_k − z)/j}, θ = (Σ_{k≤ρ} u_k − z)/ρ */
static int cmp_desc(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a < b) - (a > b);
}
static double duchi(const double *v, int n, double z) {
    double u[64], cum = 0, sum = 0, theta = 0;
    for (int i = 0; i < n; i++) u[i] = v[i], sum += v[i];
    if (sum <= z) return 0;
    qsort(u, (size_t)n, sizeof(double), cmp_desc);
    for (int j = 0; j < n; j++) {
        cum += u[j];
        if (u[j] > (cum - z) / (j + 1)) theta = (cum - z) / (j + 1);
    }
    return theta;
}

static void test_l1_threshold(void) {
    srand(5);
    for (int it = 0; it < 300; it++) {
        int n = 1 + rand() % 64;
        double v[64], tot = 0;
        for (int i = 0; i < n; i++) v[i] = fabs(nrand()) * (rand() % 4 == 0 ? 5 : 1);
        if (it % 5 == 0) v[rand() % n] = v[0]; /* ties */
        for (int i = 0; i < n; i++) tot += v[i];
        double z = tot * urand() * 1.2;
        double th = piso_l1_ball_threshold(v, n, z), ref = duchi(v, n, z);
        CHECK_NEAR(th, ref, 1e-9 * (1 + ref), "threshold vs Duchi");
        if (tot > z) { /* Σ max(v − θ, 0) = z */
            double s = 0;
            for (int i = 0; i < n; i++) s += fmax(v[i] - th, 0);
            CHECK_NEAR(s, z, 1e-9 * (1 + z), "projection lies on the ball");
        } else {
            CHECK(th == 0, "inside the ball: theta %g", th);
        }
    }
}

/* a random layer problem: H = X̃ᵀX̃/T, G = X̃ᵀX/T (X = X̃ + noise) */
static void random_layer(int N, int D, float *W, float *H, float *G) {
    int T = 2 * D + 16;
    double *X = malloc(sizeof(double) * T * D), *Y = malloc(sizeof(double) * T * D);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < D; i++) X[t * D + i] = nrand() * (i % 5 == 0 ? 3 : 1), Y[t * D + i] = X[t * D + i] + 0.2 * nrand();
    for (int i = 0; i < D; i++)
        for (int j = 0; j < D; j++) {
            double h = 0, g = 0;
            for (int t = 0; t < T; t++) h += X[t * D + i] * X[t * D + j], g += X[t * D + i] * Y[t * D + j];
            H[i * D + j] = (float)(h / T), G[i * D + j] = (float)(g / T);
        }
    for (int k = 0; k < N * D; k++) W[k] = (float)(nrand() * 0.05 + (k % 13 == 0 ? 0.05 : 0));
    free(X), free(Y);
}

/* independent check of a result: every (row, tile) with the closed form (tested above) */
static int64_t violations(const int16_t *codes, int N, int D, int T, const struct piso_accum *a) {
    int64_t bad = 0;
    for (int r = 0; r < N; r++)
        for (int t0 = 0; t0 < D; t0 += T) {
            int64_t p = 0, n = 0;
            for (int j = t0; j < t0 + T; j++) {
                int q = codes[r * D + j];
                if (q > 0) p += q;
                else n += q;
            }
            if (piso_accum_worst(a, p, n) > piso_accum_max(a)) bad++;
        }
    return bad;
}

static void test_guarantee(void) {
    enum { N = 12, D = 64 };
    static float W[N * D], H[D * D], G[D * D];
    srand(21);
    random_layer(N, D, W, H, G);
    struct piso_quant_opts q0 = {.allow_negative = 1};
    piso_grid_init(&q0.grid, "int4", 0);
    int runs = 0, overflowing_free = 0;
    for (int P = 8; P <= 24; P += 2)
        for (int sgn = 0; sgn <= 1; sgn++)
            for (int tile = 0; tile <= 16; tile += 16)
                for (int grouped = 0; grouped <= (tile ? 1 : 0); grouped++) {
                    struct piso_accum a = {.bits = P, .tile = tile};
                    piso_accum_input_range(4, sgn, &a.in_min, &a.in_max);
                    int T = tile ? tile : D;
                    /* the unconstrained absmax RTN codes: the checker must see their overflow at small P */
                    struct piso_layer_problem lp = {N, D, W, H, G, NULL, 0};
                    struct piso_quant_opts qf = q0;
                    qf.group = grouped ? tile : 0;
                    struct piso_layer_result rf;
                    if (piso_quantize_layer(&lp, &qf, &rf) == 0) {
                        struct piso_accum_report rep;
                        piso_accum_check(rf.codes, N, D, T, &a, &rep);
                        CHECK(rep.violations == violations(rf.codes, N, D, T, &a), "checker count P=%d", P);
                        if (rep.violations) overflowing_free++;
                        piso_layer_result_free(&rf);
                    }
                    for (int method = 0; method < 7; method++) {
                        struct piso_quant_opts q = q0;
                        q.group = grouped ? tile : 0;
                        q.acc = &a;
                        q.method = (method % 2) ? PISO_SCALE_PISO : PISO_SCALE_ABSMAX;
                        struct piso_layer_result r;
                        int rc;
                        const char *name;
                        if (method < 2) {
                            name = "rtn";
                            rc = piso_quantize_layer(&lp, &q, &r);
                        } else {
                            static const enum piso_rounding rs[] = {PISO_ROUND_GPTQ, PISO_ROUND_QRONOS, PISO_ROUND_GPFQ,
                                                                   PISO_ROUND_SR, PISO_ROUND_GPTQ};
                            struct piso_ec_opts o;
                            piso_ec_opts_default(&o);
                            o.q = q;
                            o.act_order = method >= 4;
                            o.interleave = (grouped || method == 6) ? PISO_INTERLEAVE_GROUP : PISO_INTERLEAVE_LAYER;
                            struct piso_ec_problem ep = {N, D, W, H, G, NULL};
                            struct piso_ec_stats st;
                            name = piso_rounding_name(rs[method - 2]);
                            rc = piso_rounding_layer(rs[method - 2])(&ep, &o, &r, &st);
                        }
                        CHECK(rc == 0, "%s P=%d: %s", name, P, piso_last_error());
                        if (rc) continue;
                        struct piso_accum_report rep;
                        piso_accum_check(r.codes, N, D, T, &a, &rep);
                        int64_t v = violations(r.codes, N, D, T, &a);
                        CHECK(v == 0 && rep.violations == 0 && rep.worst <= rep.limit,
                              "%s %s P=%d %s tile %d group %d: %lld violations (worst %lld > %lld)", name,
                              method % 2 ? "piso" : "absmax", P, sgn ? "signed" : "unsigned", tile, grouped,
                              (long long)v, (long long)rep.worst, (long long)rep.limit);
                        int nz = 0;
                        for (int k = 0; k < N * D; k++) nz += r.codes[k] != 0;
                        if (P >= 16) CHECK(nz > 0, "%s P=%d: every code zero", name, P);
                        for (int k = 0; k < N * D; k++) {
                            int64_t gidx = k / D * r.n_groups + (k % D) / (D / r.n_groups);
                            if (r.dequant[k] != r.scales[gidx] * r.codes[k]) {
                                CHECK(0, "%s: dequant %g != scale %g * code %d", name, r.dequant[k], r.scales[gidx],
                                      r.codes[k]);
                                break;
                            }
                        }
                        runs++;
                        piso_layer_result_free(&r);
                    }
                }
    CHECK(runs == 9 * 2 * 3 * 7, "runs %d", runs);
    CHECK(overflowing_free > 5, "the unconstrained layers never overflow (%d): the test is vacuous", overflowing_free);
}

/* ---- constrained PiSO vs brute force ---------------------------------------------------------- */
static double nearest(const struct piso_grid *g, double x) {
    double best = g->v[0];
    for (int k = 1; k < g->n; k++)
        if (fabs(g->v[k] - x) < fabs(best - x)) best = g->v[k];
    return best;
}

/* E(s) (fp64) and whether the codes at s fit (tile_of: the tile of entry i) */
static double energy(const double *w, int n, const double *H, const double *u, const struct piso_grid *g, double s,
                     const struct piso_accum *a, const int *tile_of, int n_tiles, int *feasible) {
    double q[64], A = 0, B = 0;
    int64_t p[64] = {0}, m[64] = {0};
    for (int i = 0; i < n; i++) {
        q[i] = nearest(g, w[i] / s);
        if (q[i] > 0) p[tile_of[i]] += (int64_t)q[i];
        else m[tile_of[i]] += (int64_t)q[i];
    }
    *feasible = 1;
    for (int t = 0; t < n_tiles; t++)
        if (piso_accum_worst(a, p[t], m[t]) > piso_accum_max(a)) *feasible = 0;
    for (int i = 0; i < n; i++) {
        A += q[i] * u[i];
        for (int j = 0; j < n; j++) B += q[i] * H[i * n + j] * q[j];
    }
    return s * s * B - 2 * s * A;
}

static void test_constrained_piso(void) {
    enum { n = 32 };
    static float Wf[4 * n], Hf[n * n], Gf[n * n];
    double w[n], H[n * n], u[n];
    int tile_of[n];
    srand(99);
    int cases = 0, bound = 0;
    for (int it = 0; it < 24; it++) {
        random_layer(1, n, Wf, Hf, Gf);
        for (int i = 0; i < n; i++) w[i] = Wf[i];
        for (int i = 0; i < n * n; i++) H[i] = Hf[i];
        for (int i = 0; i < n; i++) {
            u[i] = 0;
            for (int j = 0; j < n; j++) u[i] += (double)Gf[i * n + j] * w[j];
        }
        struct piso_grid g;
        piso_grid_init(&g, it % 3 == 0 ? "int3" : "int4", 0);
        struct piso_accum a = {.bits = 7 + it % 6};
        piso_accum_input_range(3 + it % 3, it % 2, &a.in_min, &a.in_max);
        int n_tiles = it % 4 == 0 ? 1 : 4;
        for (int i = 0; i < n; i++) tile_of[i] = n_tiles == 1 ? 0 : rand() % n_tiles; /* any tile layout */
        if (n_tiles > 1) a.tile = 1;  /* ignored: tile_of is given */
        for (int neg = 0; neg <= 1; neg++) {
            double E;
            float s = piso_solve_scale_dense_accum(Wf, n, Hf, n, u, &g, neg, &E, &a, tile_of, n_tiles);
            int feas;
            double Es = energy(w, n, H, u, &g, s, &a, tile_of, n_tiles, &feas);
            CHECK(feas, "constrained piso returned an infeasible scale %g (P=%d)", s, a.bits);
            CHECK(isfinite(s) && s != 0, "scale %g", s);
            CHECK(fabs(E - Es) <= 1e-9 * fabs(Es) + 1e-12, "reported E %.12g vs %.12g", E, Es);
            /* the constrained absmax */
            float sa = piso_scale_absmax_accum(Wf, n, &g, &a, tile_of, n_tiles);
            int fa;
            double Ea = energy(w, n, H, u, &g, sa, &a, tile_of, n_tiles, &fa);
            CHECK(fa, "constrained absmax %g infeasible", sa);
            CHECK(Es <= Ea + 1e-9 * fabs(Ea) + 1e-12, "piso %.12g worse than constrained absmax %.12g", Es, Ea);
            if (sa > piso_scale_absmax(Wf, n, &g)) bound++;
            /* brute force over feasible scales */
            double best = 0, wmax = 0; /* q = 0 */
            for (int i = 0; i < n; i++) wmax = fmax(wmax, fabs(w[i]));
            double smax = 4 * wmax / piso_grid_maxabs(&g);
            for (int sg = 1; sg >= (neg && !g.symmetric ? -1 : 1); sg -= 2) {
                for (int k = 1; k <= 4000; k++) {
                    double e = energy(w, n, H, u, &g, sg * smax * k / 4000, &a, tile_of, n_tiles, &feas);
                    if (feas) best = fmin(best, e);
                }
                for (int i = 0; i < n; i++)
                    for (int k = 0; k + 1 < g.n; k++) {
                        double b = w[i] / (0.5 * ((double)g.v[k] + g.v[k + 1]));
                        if (!(b * sg > 0)) continue;
                        for (int e3 = -1; e3 <= 1; e3++) {
                            double e = energy(w, n, H, u, &g, b * (1 + 1e-4 * e3), &a, tile_of, n_tiles, &feas);
                            if (feas) best = fmin(best, e);
                        }
                    }
            }
            if (best < 0) CHECK(Es <= best + 1e-6 * fabs(best) + 1e-12, "constrained piso %.12g > brute force %.12g (P=%d)", Es, best, a.bits);
            cases++;
        }
    }
    CHECK(cases == 48, "cases %d", cases);
    CHECK(bound > 5, "the limits never raised the absmax scale (%d): the test is vacuous", bound);
}

static void test_bad_options(void) {
    struct piso_grid g;
    piso_grid_init(&g, "int4", 0);
    struct piso_accum a = {.bits = 8};
    piso_accum_input_range(8, 1, &a.in_min, &a.in_max); /* ±1 × (−128) = 128 > 127 */
    CHECK(piso_accum_validate(&a, 64, 0, &g, "blk.0.q", NULL) != 0, "P = 8 with int8 inputs accepted");
    CHECK(strstr(piso_last_error(), "blk.0.q") && strstr(piso_last_error(), "too small"), "message: %s", piso_last_error());
    a.bits = 9;
    int T = -1;
    CHECK(piso_accum_validate(&a, 64, 0, &g, "x", &T) == 0 && T == 64, "P = 9 refused or tile %d", T);
    a.tile = 24;
    CHECK(piso_accum_validate(&a, 64, 0, &g, "blk.3.down", NULL) != 0, "tile 24 of 64 accepted");
    CHECK(strstr(piso_last_error(), "does not divide") && strstr(piso_last_error(), "blk.3.down"), "message: %s",
          piso_last_error());
    a.tile = 16;
    CHECK(piso_accum_validate(&a, 64, 32, &g, "x", NULL) != 0, "tile 16 with group 32 accepted");
    a.tile = 0;
    CHECK(piso_accum_validate(&a, 64, 32, &g, "x", &T) == 0 && T == 32, "group as tile: %d", T);
    struct piso_grid f;
    piso_grid_init(&f, "e2m1", 0);
    CHECK(piso_accum_validate(&a, 64, 0, &f, "x", NULL) != 0, "a float grid accepted");
}

int main(void) {
    piso_set_quiet(1);
    test_limits_vs_corners();
    test_l1_threshold();
    test_guarantee();
    test_constrained_piso();
    test_bad_options();
    return test_finish();
}
