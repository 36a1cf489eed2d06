/* The pruned channel-wise PiSO (piso_solve_scales_rows) against the full exact sweep
 * (piso_solve_scale_dense, itself checked against brute force in test_piso_sweep.c), on rows shaped
 * like real LLM layers: heavy-tailed weights (Student-t, 3 degrees of freedom), H = XᵀX from
 * tokens whose input channels have a spread of scales, a few "massive activation" channels and a
 * shared low-rank component, D = 512..2048, int4 and int3, both signs (one walk for both: the
 * negative sign's codes are the positive sign's plus 1 on the entries past the grid's symmetric
 * part), and a made-up uneven grid whose signs have their own walks:
 *  - same optimum: the exact fp64 objective at both scales agrees to round-off, and both scales
 *    give the same integer codes (the same interval of the sweep);
 *  - the result is bit-identical for 1 and 2 threads (the rows' window walks run together, in
 *    rounds of one batched pass over H; 70 rows in batches of 3: a partial last batch, and
 *    batches with more windows than are walked at once);
 *  - pruning actually happens (most intervals skipped), so the test exercises the windows;
 *  - a target u ≠ H·w (GPTQ's x–x̃ objective), an H from fewer tokens than inputs (singular: the
 *    bound has no floor) and a dead input channel (the fast path falls back to the full sweep)
 *    give the full sweep's answer too. */
#include "harness.h"
#include "piso/linalg.h"
#include "piso/quant.h"
#include "piso/solve.h"

#include <omp.h>

static uint64_t rng = 0x1234567887654321ull;
static double urand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
}
static double nrand(void) { return sqrt(-2 * log(urand())) * cos(6.283185307179586 * urand()); }
static double student_t3(void) {
    double c = 0;
    for (int i = 0; i < 3; i++) {
        double z = nrand();
        c += z * z;
    }
    return nrand() / sqrt(c / 3);
}

/* H = XᵀX for T tokens [D]: channel scales in [0.3, 1.3], every 61st channel ×6, channels 3 and
 * D/2 ×40 (massive activations), plus two shared directions. dead ≥ 0: that channel is zero. */
/* H = XᵀX/T; Xs (optional): X/√T [T, D], whose Gram is H up to round-off. */
static float *make_hessian_x(int D, int T, int dead, float **Xs) {
    float *X = malloc(sizeof(float) * (size_t)T * D), *H = malloc(sizeof(float) * (size_t)D * D);
    float *chs = malloc(sizeof(float) * D), *dir = malloc(sizeof(float) * 2 * D);
    for (int j = 0; j < D; j++) {
        chs[j] = (float)(0.3 + urand()) * (j % 61 == 7 ? 6.0f : 1.0f) * (j == 3 || j == D / 2 ? 40.0f : 1.0f);
        dir[j] = (float)nrand(), dir[D + j] = (float)nrand();
    }
    for (int t = 0; t < T; t++) {
        double c1 = nrand(), c2 = 0.5 * nrand();
        for (int j = 0; j < D; j++)
            X[(size_t)t * D + j] = j == dead ? 0.0f : chs[j] * (float)(nrand() + 0.8 * c1 * dir[j] + c2 * dir[D + j]);
    }
    piso_la_ssyrk_t(D, T, 1.0f / T, X, D, 0.0f, H, D);
    if (Xs) {
        const float r = (float)(1.0 / sqrt((double)T));
        for (int64_t i = 0; i < (int64_t)T * D; i++) X[i] *= r;
        *Xs = X, X = NULL;
    }
    free(X), free(chs), free(dir);
    return H;
}
static float *make_hessian(int D, int T, int dead) { return make_hessian_x(D, T, dead, NULL); }

/* q = round(w/s) equal for every entry */
static int same_codes(const float *w, int n, float s1, float s2, const struct piso_grid *g) {
    for (int i = 0; i < n; i++)
        if (piso_grid_round(g, w[i] / s1, NULL) != piso_grid_round(g, w[i] / s2, NULL)) return 0;
    return 1;
}

/* The pruned scales s against the full sweep's: the same optimum up to round-off, and the same
 * interval unless on a near-tie. Returns the number of rows in the same interval. */
static int check_vs_full(const float *W, int N, int D, const float *H, const double *U, const struct piso_grid *g,
                         const float *s_full, const float *s, const char *what, double *worst) {
    int same = 0;
    for (int r = 0; r < N; r++) {
        const float *w = W + (int64_t)r * D;
        double Ef = piso_objective_dense(w, D, H, D, U + (int64_t)r * D, g, s_full[r]);
        double Ep = piso_objective_dense(w, D, H, D, U + (int64_t)r * D, g, s[r]);
        double rel = (Ep - Ef) / fabs(Ef);
        if (rel > *worst) *worst = rel;
        CHECK(rel <= 1e-6, "%s D = %d row %d: pruned E %.12g vs full %.12g", what, D, r, Ep, Ef);
        int same_iv = (s[r] > 0) == (s_full[r] > 0) && same_codes(w, D, s[r], s_full[r], g);
        same += same_iv;
        /* another interval only on a near-tie within the fp32 round-off of the sweeps' sums */
        CHECK(same_iv || fabs(rel) <= 1e-7, "%s D = %d row %d: different interval, E %.12g vs %.12g", what, D, r, Ep, Ef);
    }
    return same;
}


static void run_case(int D, int N, const char *fmt, int cross, int dead, int tokens) {
    struct piso_grid g;
    if (!strcmp(fmt, "uneven")) { /* asymmetric, but not int-k's one extra value: the two signs' own lists */
        static const float v[] = {-4, -2, -1, 0, 1, 2, 3};
        memset(&g, 0, sizeof g);
        strcpy(g.name, "uneven");
        g.n = 7;
        memcpy(g.v, v, sizeof v);
        g.scale_mult = 1;
    } else
        piso_grid_init(&g, fmt, 0);
    const char *tm = getenv("PISO_PRUNE_TOKENS"); /* experiments: tokens per input (default 4) */
    int T = tokens ? tokens : tm ? (int)(atof(tm) * D) : 4 * D;
    float *X = NULL; /* with fewer tokens than inputs: X̃ too, for the X̃ form's walks */
    float *H = make_hessian_x(D, T, dead, T < D ? &X : NULL);
    float *W = malloc(sizeof(float) * (size_t)N * D);
    for (int64_t i = 0; i < (int64_t)N * D; i++) W[i] = (float)(0.02 * student_t3());
    double *U = malloc(sizeof(double) * (size_t)N * D), *HW = malloc(sizeof(double) * (size_t)N * D);
    for (int r = 0; r < N; r++)
        for (int i = 0; i < D; i++) {
            double hw = 0;
            for (int j = 0; j < D; j++) hw += (double)H[(int64_t)i * D + j] * W[(int64_t)r * D + j];
            HW[(int64_t)r * D + i] = hw;
            /* x–x̃: u = G·w with G = H + a small perturbation of the diagonal */
            U[(int64_t)r * D + i] = cross ? hw * (1 + 0.05 * sin(i)) : hw;
        }
    float *s_full = malloc(sizeof(float) * N), *s1 = malloc(sizeof(float) * N), *s2 = malloc(sizeof(float) * N);
    piso_prune_configure(1, 0);
    struct piso_prune_stats st;
    CHECK(piso_solve_scales_rows(W, D, N, D, H, D, U, D, HW, D, &g, 1, s_full, 1, &st) == 0, "full");
    CHECK(st.rows_full == N, "mode 1 sweeps every row in full");
    const char *rk = getenv("PISO_PRUNE_RANK"); /* experiments: the minorant's rank */
    piso_prune_configure(2, rk ? atoi(rk) : 0);
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    CHECK(piso_solve_scales_rows(W, D, N, D, H, D, U, D, HW, D, &g, 1, s1, 1, &st) == 0, "pruned, 1 thread");
    omp_set_num_threads(2);
    CHECK(piso_solve_scales_rows(W, D, N, D, H, D, U, D, HW, D, &g, 1, s2, 1, &st) == 0, "pruned, 2 threads");
    /* H's panels packed by each pass instead of once: another memory layout, the same bits */
    size_t limit = piso_prune_pack_limit(0);
    float *s3 = malloc(sizeof(float) * N);
    CHECK(piso_solve_scales_rows(W, D, N, D, H, D, U, D, HW, D, &g, 1, s3, 1, &st) == 0, "pruned, panels per pass");
    piso_prune_pack_limit(limit);
    omp_set_num_threads(saved);
    piso_prune_configure(0, 0);
    CHECK(!memcmp(s1, s2, sizeof(float) * N), "D = %d: bit-identical for 1 and 2 threads", D);
    CHECK(!memcmp(s2, s3, sizeof(float) * N), "D = %d: bit-identical with H packed once or per pass", D);
    free(s3);
    double worst = 0;
    int same = check_vs_full(W, N, D, H, U, &g, s_full, s1, "H form", &worst);
    if (same < N) printf("D = %d: %d of %d rows on a near-tie in another interval\n", D, N - same, N);
    if (X) { /* the X̃ form: walks read X̃'s columns (T floats) instead of H's; 1 and 2 threads */
        struct piso_prune_stats sx;
        float *x1 = malloc(sizeof(float) * N), *x2 = malloc(sizeof(float) * N);
        piso_prune_configure(2, rk ? atoi(rk) : 0);
        omp_set_num_threads(1);
        CHECK(piso_solve_scales_rows_x(W, D, N, D, X, T, D, H, D, U, D, HW, D, &g, 1, x1, 1, &sx) == 0, "X form, 1 thread");
        omp_set_num_threads(2);
        CHECK(piso_solve_scales_rows_x(W, D, N, D, X, T, D, H, D, U, D, HW, D, &g, 1, x2, 1, &sx) == 0, "X form, 2 threads");
        omp_set_num_threads(saved);
        piso_prune_configure(0, 0);
        CHECK(sx.rows_x == N && sx.rows_full == 0, "D = %d, %d tokens: the X form was used (%lld of %d rows)", D, T,
              (long long)sx.rows_x, N);
        CHECK(!memcmp(x1, x2, sizeof(float) * N), "D = %d: X form bit-identical for 1 and 2 threads", D);
        int same_x = check_vs_full(W, N, D, H, U, &g, s_full, x1, "X form", &worst);
        printf("D = %4d, %d tokens, X form: %d of %d rows in the full sweep's interval, %.1f%% pruned\n", D, T, same_x, N,
               100.0 * (1.0 - (double)sx.swept / (double)sx.intervals));
        /* through the layer API (RTN, u = H·w): X̃ in the problem reaches the sweep */
        if (!cross) {
            struct piso_quant_opts qo = {0};
            qo.grid = g, qo.method = PISO_SCALE_PISO, qo.allow_negative = 1;
            struct piso_layer_problem lx = {N, D, W, H, NULL, X, T};
            struct piso_layer_result rx;
            piso_prune_stats_take(&sx);
            CHECK(piso_quantize_layer(&lx, &qo, &rx) == 0, "RTN layer with X̃");
            piso_prune_stats_take(&sx);
            CHECK(sx.rows_x == N, "the RTN layer's sweep read X̃ (%lld of %d rows)", (long long)sx.rows_x, N);
            check_vs_full(W, N, D, H, U, &g, s_full, rx.scales, "RTN layer, X form", &worst);
            /* its objective (fp64 products through X̃) against the same layer's through H */
            struct piso_layer_problem lh = {N, D, W, H, NULL, NULL, 0};
            struct piso_layer_result rh;
            CHECK(piso_quantize_layer(&lh, &qo, &rh) == 0, "RTN layer without X̃");
            CHECK(fabs(rx.objective - rh.objective) <= 1e-4 * fabs(rh.objective),
                  "D = %d: objective through X̃ %.10g, through H %.10g", D, rx.objective, rh.objective);
            piso_layer_result_free(&rh);
            piso_layer_result_free(&rx);
            /* an X̃ whose Gram is not H (here 4·H) is noticed on the diagonal and not used */
            float *X2 = malloc(sizeof(float) * (size_t)T * D);
            for (int64_t i = 0; i < (int64_t)T * D; i++) X2[i] = 2 * X[i];
            piso_prune_configure(2, 0);
            CHECK(piso_solve_scales_rows_x(W, D, N, D, X2, T, D, H, D, U, D, HW, D, &g, 1, x2, 1, &sx) == 0, "wrong X̃");
            piso_prune_configure(0, 0);
            CHECK(sx.rows_x == 0, "an X̃ that is not H's factor is not read (%lld rows)", (long long)sx.rows_x);
            CHECK(!memcmp(x2, s1, sizeof(float) * N), "without it: the H form's scales");
            free(X2);
        }
        free(x1), free(x2);
    }
    if (dead >= 0) {
        CHECK(st.rows_full == N, "dead input channel: full sweep (rows_full %lld)", (long long)st.rows_full);
    } else {
        double pruned = 1.0 - (double)st.swept / (double)st.intervals;
        printf("D = %4d %s%s: %lld intervals, %.1f%% pruned, %lld windows (rank %d, floor %.3f, minorant %.2f s), worst rel. dE %.2e\n",
               D, fmt, cross ? " x-xq" : "", (long long)st.intervals, 100 * pruned, (long long)st.windows, st.rank, st.floor,
               st.seconds_minorant, worst);
        CHECK(st.rows_full == 0, "pruned path used");
        CHECK(st.rounds > 0, "the windows were walked in batched passes over H");
        if (N > 64) CHECK(st.windows > 0, "windows beyond the anchors' were walked (%lld)", (long long)st.windows);
        if (!tokens) CHECK(pruned > 0.5, "D = %d: only %.1f%% of the intervals pruned", D, 100 * pruned);
    }
    free(H), free(X), free(W), free(U), free(HW), free(s_full), free(s1), free(s2);
}

/* The callers: RTN (piso_quantize_layer, with G ≠ H: the x–x̃ objective) and GPTQ (channel-wise
 * PiSO scales inside the engine) give the same layer with pruning (auto) as with the full sweep. */
static void run_layers(int D, int N) {
    float *H = make_hessian(D, 4 * D, -1), *G = malloc(sizeof(float) * (size_t)D * D);
    float *W = malloc(sizeof(float) * (size_t)N * D);
    for (int64_t i = 0; i < (int64_t)D * D; i++) G[i] = H[i] * (float)(0.97 + 0.02 * cos((double)(i % 7)));
    for (int64_t i = 0; i < (int64_t)N * D; i++) W[i] = (float)(0.02 * student_t3());
    struct piso_quant_opts qo = {0};
    piso_grid_init(&qo.grid, "int4", 0);
    qo.method = PISO_SCALE_PISO, qo.group = 0, qo.allow_negative = 1;
    struct piso_layer_problem lp = {N, D, W, H, G, NULL, 0};
    struct piso_layer_result a, b;
    piso_prune_configure(1, 0);
    CHECK(piso_quantize_layer(&lp, &qo, &a) == 0, "rtn full");
    piso_prune_configure(0, 0);
    struct piso_prune_stats st;
    piso_prune_stats_take(&st);
    CHECK(piso_quantize_layer(&lp, &qo, &b) == 0, "rtn pruned");
    piso_prune_stats_take(&st);
    CHECK(st.rows == N && st.rows_full == 0, "RTN layer went through the pruned path (%lld rows, %lld full)",
          (long long)st.rows, (long long)st.rows_full);
    CHECK(!memcmp(a.dequant, b.dequant, sizeof(float) * (size_t)N * D), "RTN x-xq layer: same weights");
    piso_layer_result_free(&a), piso_layer_result_free(&b);
    struct piso_ec_opts eo;
    piso_ec_opts_default(&eo);
    eo.q = qo;
    eo.interleave = PISO_INTERLEAVE_LAYER;
    struct piso_ec_problem ep = {N, D, W, H, NULL, NULL};
    piso_prune_configure(1, 0);
    CHECK(piso_gptq_layer(&ep, &eo, &a, NULL) == 0, "gptq full");
    piso_prune_configure(0, 0);
    piso_prune_stats_take(&st);
    CHECK(piso_gptq_layer(&ep, &eo, &b, NULL) == 0, "gptq pruned");
    piso_prune_stats_take(&st);
    CHECK(st.rows == N && st.rows_full == 0, "GPTQ went through the pruned path");
    for (int r = 0; r < N; r++)
        if (a.scales[r] != b.scales[r]) {
            double Ea = piso_objective_dense(W + (int64_t)r * D, D, H, D, NULL, &qo.grid, a.scales[r]);
            double Eb = piso_objective_dense(W + (int64_t)r * D, D, H, D, NULL, &qo.grid, b.scales[r]);
            printf("row %d: full %.9g (E %.12g) pruned %.9g (E %.12g)\n", r, a.scales[r], Ea, b.scales[r], Eb);
        }
    CHECK(!memcmp(a.scales, b.scales, sizeof(float) * (size_t)N), "GPTQ + PiSO channel-wise: same scales");
    CHECK(!memcmp(a.dequant, b.dequant, sizeof(float) * (size_t)N * D), "GPTQ + PiSO channel-wise: same weights");
    /* GPTQ fixes its channel-wise scales on the original weights without the RTN layer around
     * them: they are the RTN layer's scales (a second code path) bit for bit */
    struct piso_layer_problem lh = {N, D, W, H, NULL, NULL, 0};
    struct piso_layer_result c;
    CHECK(piso_quantize_layer(&lh, &qo, &c) == 0, "rtn, u = H·w");
    CHECK(!memcmp(c.scales, b.scales, sizeof(float) * (size_t)N), "GPTQ's channel scales are the RTN layer's");
    struct piso_layer_result d; /* without the row objectives: the same weights, no objective */
    qo.no_objective = 1;
    CHECK(piso_quantize_layer(&lh, &qo, &d) == 0, "rtn, no objective");
    qo.no_objective = 0;
    CHECK(!memcmp(c.dequant, d.dequant, sizeof(float) * (size_t)N * D) && isnan(d.objective) && !isnan(c.objective),
          "no_objective: the same weights, objective NaN (%g, with it %g)", d.objective, c.objective);
    piso_layer_result_free(&d);
    piso_layer_result_free(&a), piso_layer_result_free(&b), piso_layer_result_free(&c);
    free(H), free(G), free(W);
}

int main(void) {
    const char *big = getenv("PISO_PRUNE_BIG");
    run_case(512, 24, "int4", 0, -1, 0);
    run_case(1024, 16, "int4", 1, -1, 0);
    run_case(768, 12, "int3", 0, -1, 0);
    run_case(2048, big ? 32 : 8, "int4", 0, -1, 0);
    run_case(512, 6, "int4", 0, 100, 0);
    /* fewer tokens than inputs: H is singular, no floor (top-k part only), still exact */
    run_case(768, 8, "int4", 0, -1, 384);
    run_case(4096, 3, "int4", 1, -1, 1024); /* the same at 4096 inputs (a numerically singular factor's pivots) */
    run_layers(512, 16);
    /* more rows than one batch (3 here): the rows' walks advance together, a partial last batch,
     * and more windows than a batch walks at once */
    int batch = piso_prune_batch_rows(3);
    run_case(512, 70, "int4", 1, -1, 0);
    piso_prune_batch_rows(batch);
    /* a grid that is not int-k: the negative sign has its own event list (and skips its intervals
     * that mirror the positive sign's) */
    run_case(512, 12, "uneven", 0, -1, 0);
    /* the X̃ form with a token count that is not a multiple of its 32-token tiles, a non-paired
     * grid, and rows in batches of 3 */
    run_case(640, 10, "int4", 1, -1, 200);
    run_case(512, 8, "uneven", 0, -1, 100);
    batch = piso_prune_batch_rows(3);
    run_case(512, 20, "int3", 0, -1, 250);
    piso_prune_batch_rows(batch);
    return test_finish();
}
