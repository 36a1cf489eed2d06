/* sr, beam and gpfq (src/quant/rounders.c) against references written here:
 *  - beam with K ≥ B^D and B = the whole grid equals an exhaustive enumeration of every code vector
 *    (D ≤ 8) for (w̃ − q)ᵀH_λ(w̃ − q), with w̃ = H_λ⁻¹(H + α(G − H))w solved here in fp64 (Gaussian
 *    elimination) and the scales the solver reported (channel- and group-wise, act order);
 *  - beam with K = 1 gives sr's codes (groups, act order, PiSO per group and per layer);
 *  - sr with α = 0 and no damping gives GPTQ's codes;
 *  - the reported cost equals (w̃ − q)ᵀH_λ(w̃ − q) recomputed in fp64 from the written codes/scales;
 *  - beam's cost is never above sr's, row by row, for the same α;
 *  - gpfq equals a naive GPFQ run on the data matrices X̃, X (residual of the past columns only);
 *  - bad options (K < 1, B < 2, α outside [0, 1]) fail before any work, in the library and the CLI,
 *    and the CLI writes nothing. */
#include "harness.h"
#include "piso/pipeline.h"
#include "piso/solve.h"

#include <stdint.h>
#include <sys/stat.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static uint64_t rng = 0x1234567887654321ull;
static double urand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static double nrand(void) { return sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand()); }

/* A layer from data: X̃ [T, D] correlated with unequal column scales, X = X̃ + noise (the float
 * inputs), H = X̃ᵀX̃/T, G = X̃ᵀX/T, W [N, D]. */
struct layer {
    int64_t N, D, T;
    double *Xq, *Xf;
    float *W, *H, *G;
};
static void make_layer(struct layer *l, int64_t N, int64_t D, int64_t T, double noise) {
    l->N = N, l->D = D, l->T = T;
    l->Xq = malloc(sizeof(double) * T * D), l->Xf = malloc(sizeof(double) * T * D);
    l->W = malloc(sizeof(float) * N * D), l->H = malloc(sizeof(float) * D * D), l->G = malloc(sizeof(float) * D * D);
    for (int64_t t = 0; t < T; t++) {
        double common = nrand();
        for (int64_t j = 0; j < D; j++) {
            double x = (0.3 + (double)(j % 5) / 3) * (nrand() + 0.6 * common);
            l->Xq[t * D + j] = x;
            l->Xf[t * D + j] = x + noise * nrand();
        }
    }
    for (int64_t a = 0; a < D; a++)
        for (int64_t b = 0; b < D; b++) {
            double h = 0, g = 0;
            for (int64_t t = 0; t < T; t++) h += l->Xq[t * D + a] * l->Xq[t * D + b], g += l->Xq[t * D + a] * l->Xf[t * D + b];
            l->H[a * D + b] = (float)(h / (double)T), l->G[a * D + b] = (float)(g / (double)T);
        }
    for (int64_t i = 0; i < N * D; i++) l->W[i] = (float)(0.1 * nrand());
}
static void free_layer(struct layer *l) { free(l->Xq), free(l->Xf), free(l->W), free(l->H), free(l->G); }

/* λ = damp·mean(diag H) (GPTQ's rule, no dead inputs here); Hl = H + λI [D, D] fp64; Wt [N, D] the
 * shifted target, from H_λ w̃ = (H + α(G − H))w by Gaussian elimination with partial pivoting. */
static double shifted_target(const struct layer *l, double alpha, double damp, double *Hl, double *Wt) {
    int64_t D = l->D;
    double mean = 0;
    for (int64_t a = 0; a < D; a++) mean += l->H[a * D + a];
    double lam = damp * mean / (double)D;
    double *A = malloc(sizeof(double) * D * D), *b = malloc(sizeof(double) * D);
    for (int64_t a = 0; a < D; a++)
        for (int64_t c = 0; c < D; c++) Hl[a * D + c] = l->H[a * D + c] + (a == c ? lam : 0);
    for (int64_t r = 0; r < l->N; r++) {
        memcpy(A, Hl, sizeof(double) * D * D);
        for (int64_t a = 0; a < D; a++) {
            double s = 0;
            for (int64_t c = 0; c < D; c++)
                s += ((1 - alpha) * l->H[a * D + c] + alpha * l->G[a * D + c]) * l->W[r * D + c];
            b[a] = s;
        }
        test_gauss_solve(A, b, (int)D);
        memcpy(Wt + r * D, b, sizeof(double) * D);
    }
    free(A), free(b);
    return lam;
}

static double quad_cost(const double *wt, const double *q, const double *Hl, int64_t D) {
    double s = 0;
    for (int64_t a = 0; a < D; a++)
        for (int64_t b = 0; b < D; b++) s += (wt[a] - q[a]) * Hl[a * D + b] * (wt[b] - q[b]);
    return s;
}

/* q of row r from the written codes and scales (integer grids: code = grid value) */
static void row_q(const struct piso_layer_result *r, int64_t row, int group, double *q) {
    for (int64_t c = 0; c < r->D; c++) q[c] = (double)r->scales[row * r->n_groups + c / group] * r->codes[row * r->D + c];
}

static void opts_for(struct piso_ec_opts *o, const char *fmt, int group, int act, double alpha) {
    piso_ec_opts_default(o);
    piso_grid_init(&o->q.grid, fmt, 0);
    o->q.group = group, o->act_order = act, o->alpha = alpha;
    o->interleave = PISO_INTERLEAVE_LAYER;
}

/* beam (K ≥ grid^D, B = grid) vs every code vector, the solver's scales held */
static void test_exhaustive(void) {
    const struct {
        const char *fmt;
        int D, group, act;
        double alpha;
        enum piso_scale_method m;
    } cases[] = {
        {"int2", 6, 0, 0, 0.5, PISO_SCALE_ABSMAX}, {"int2", 6, 3, 1, 1.0, PISO_SCALE_PISO},
        {"int3", 4, 0, 1, 0.25, PISO_SCALE_PISO},  {"int2", 8, 4, 1, 0.0, PISO_SCALE_ABSMAX},
        {"e2m1", 3, 0, 0, 0.75, PISO_SCALE_PISO},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        struct layer l;
        int64_t N = 3, D = cases[ci].D;
        make_layer(&l, N, D, 4 * D, 0.3);
        struct piso_ec_opts o;
        opts_for(&o, cases[ci].fmt, cases[ci].group, cases[ci].act, cases[ci].alpha);
        o.q.method = cases[ci].m;
        int L = o.q.grid.n, group = cases[ci].group ? cases[ci].group : (int)D;
        int64_t total = 1;
        for (int k = 0; k < D; k++) total *= L;
        o.beam_k = (int)total, o.beam_b = L;
        struct piso_ec_problem p = {N, D, l.W, l.H, l.G, NULL};
        struct piso_layer_result r;
        struct piso_ec_stats st;
        if (piso_beam_layer(&p, &o, &r, &st)) {
            CHECK(0, "case %zu: beam failed: %s", ci, piso_last_error());
            free_layer(&l);
            continue;
        }
        double *Hl = malloc(sizeof(double) * D * D), *Wt = malloc(sizeof(double) * N * D);
        double *q = malloc(sizeof(double) * D), *qb = malloc(sizeof(double) * D);
        double lam = shifted_target(&l, cases[ci].alpha, 0.01, Hl, Wt);
        CHECK(fabs(st.lambda - lam) <= 1e-9 * lam, "case %zu: lambda %g vs %g", ci, st.lambda, lam);
        double best_sum = 0;
        int code_mism = 0;
        for (int64_t i = 0; i < N; i++) {
            double best = INFINITY;
            int64_t best_idx = -1;
            for (int64_t idx = 0; idx < total; idx++) {
                int64_t z = idx;
                for (int64_t c = 0; c < D; c++, z /= L)
                    q[c] = (double)r.scales[i * r.n_groups + c / group] * o.q.grid.v[z % L];
                double e = quad_cost(Wt + i * D, q, Hl, D);
                if (e < best) best = e, best_idx = idx;
            }
            best_sum += best;
            int64_t z = best_idx;
            for (int64_t c = 0; c < D; c++, z /= L) {
                float gv = o.q.grid.v[z % L];
                int code = o.q.grid.is_int ? (int)gv : (int)(z % L);
                code_mism += r.codes[i * D + c] != code;
            }
        }
        CHECK(code_mism == 0, "case %zu (%s D=%lld g=%d act=%d alpha=%g): %d codes differ from the exhaustive optimum", ci,
              cases[ci].fmt, (long long)D, cases[ci].group, cases[ci].act, cases[ci].alpha, code_mism);
        CHECK(fabs(st.cost - best_sum) <= 1e-5 * fabs(best_sum) + 1e-9,
              "case %zu: beam cost %.9g vs exhaustive optimum %.9g", ci, st.cost, best_sum);
        piso_layer_result_free(&r);
        free(Hl), free(Wt), free(q), free(qb), free_layer(&l);
    }
}

/* K = 1 equals sr; beam(K) ≤ sr row by row; the cost recomputed from the codes */
static void test_sr_beam(void) {
    struct layer l;
    const int64_t N = 16, D = 64;
    make_layer(&l, N, D, 3 * D, 0.3);
    const struct {
        int group, act;
        enum piso_interleave il;
        enum piso_scale_method m;
        double alpha;
        const char *fmt;
    } cases[] = {
        {0, 1, PISO_INTERLEAVE_LAYER, PISO_SCALE_PISO, 0.5, "int3"},
        {16, 1, PISO_INTERLEAVE_GROUP, PISO_SCALE_PISO, 0.25, "int2"},
        {16, 0, PISO_INTERLEAVE_LAYER, PISO_SCALE_ABSMAX, 1.0, "int4"},
        {32, 1, PISO_INTERLEAVE_GROUP, PISO_SCALE_MSE_GRID, 0.0, "e2m1"},
    };
    double *Hl = malloc(sizeof(double) * D * D), *Wt = malloc(sizeof(double) * N * D), *q = malloc(sizeof(double) * D);
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        struct piso_ec_opts o;
        opts_for(&o, cases[ci].fmt, cases[ci].group, cases[ci].act, cases[ci].alpha);
        o.interleave = cases[ci].il, o.q.method = cases[ci].m, o.block_size = 24; /* batches straddle nothing */
        struct piso_ec_problem p = {N, D, l.W, l.H, l.G, NULL};
        struct piso_layer_result rs, r1, r4;
        struct piso_ec_stats ss, s1, s4;
        o.beam_k = 1;
        int ok = !piso_sr_layer(&p, &o, &rs, &ss) && !piso_beam_layer(&p, &o, &r1, &s1);
        o.beam_k = 4, o.beam_b = 3;
        ok = ok && !piso_beam_layer(&p, &o, &r4, &s4);
        if (!ok) {
            CHECK(0, "case %zu: %s", ci, piso_last_error());
            continue;
        }
        int64_t mism = 0;
        for (int64_t k = 0; k < N * D; k++) mism += rs.codes[k] != r1.codes[k];
        CHECK(mism == 0, "case %zu: beam K=1 differs from sr in %lld codes", ci, (long long)mism);
        CHECK(fabs(ss.cost - s1.cost) <= 1e-6 * ss.cost, "case %zu: K=1 cost %.9g vs sr %.9g", ci, s1.cost, ss.cost);
        shifted_target(&l, cases[ci].alpha, 0.01, Hl, Wt);
        int group = cases[ci].group ? cases[ci].group : (int)D;
        const struct piso_layer_result *rr[3] = {&rs, &r1, &r4};
        const double costs[3] = {ss.cost, s1.cost, s4.cost};
        double row_sr[16], row_beam[16];
        for (int m = 0; m < 3; m++) {
            double sum = 0, max_dq = 0;
            for (int64_t i = 0; i < N; i++) {
                if (o.q.grid.is_int) row_q(rr[m], i, group, q);
                else
                    for (int64_t c = 0; c < D; c++)
                        q[c] = (double)rr[m]->scales[i * rr[m]->n_groups + c / group] * o.q.grid.v[rr[m]->codes[i * D + c]];
                for (int64_t c = 0; c < D; c++) {
                    double dq = fabs(q[c] - rr[m]->dequant[i * D + c]);
                    if (dq > max_dq) max_dq = dq;
                }
                double e = quad_cost(Wt + i * D, q, Hl, D);
                if (m == 0) row_sr[i] = e;
                if (m == 2) row_beam[i] = e;
                sum += e;
            }
            CHECK(max_dq <= 1e-6, "case %zu method %d: dequant differs from scale·code by %g", ci, m, max_dq);
            CHECK(fabs(costs[m] - sum) <= 2e-5 * sum, "case %zu method %d: reported cost %.9g, recomputed %.9g", ci, m,
                  costs[m], sum);
        }
        int worse = 0;
        for (int64_t i = 0; i < N; i++) worse += row_beam[i] > row_sr[i] * (1 + 1e-6);
        CHECK(worse == 0, "case %zu: beam K=4 above sr in %d rows", ci, worse);
        CHECK(s4.cost <= ss.cost * (1 + 1e-7), "case %zu: beam %.9g above sr %.9g", ci, s4.cost, ss.cost);
        piso_layer_result_free(&rs), piso_layer_result_free(&r1), piso_layer_result_free(&r4);
    }
    free(Hl), free(Wt), free(q), free_layer(&l);
}

/* sr, α = 0, no damping == GPTQ with no damping */
static void test_sr_is_gptq(void) {
    struct layer l;
    const int64_t N = 12, D = 48;
    make_layer(&l, N, D, 4 * D, 0.3);
    for (int c = 0; c < 4; c++) {
        struct piso_ec_opts o;
        opts_for(&o, c & 1 ? "int3" : "int4", c & 2 ? 16 : 0, c & 1, 0.0);
        o.damp = 0;
        o.q.method = c & 2 ? PISO_SCALE_PISO : PISO_SCALE_ABSMAX;
        o.interleave = c & 2 ? PISO_INTERLEAVE_GROUP : PISO_INTERLEAVE_LAYER;
        /* GPTQ's objective has no G; with α = 0 sr's has none either */
        struct piso_ec_problem pg = {N, D, l.W, l.H, NULL, NULL}, ps = {N, D, l.W, l.H, c & 2 ? l.G : NULL, NULL};
        struct piso_layer_result rg, rs;
        struct piso_ec_stats sg, ss;
        if (piso_gptq_layer(&pg, &o, &rg, &sg) || piso_sr_layer(&ps, &o, &rs, &ss)) {
            CHECK(0, "case %d: %s", c, piso_last_error());
            continue;
        }
        int64_t mism = 0;
        for (int64_t k = 0; k < N * D; k++) mism += rg.codes[k] != rs.codes[k];
        CHECK(mism == 0, "case %d: sr (alpha 0, damp 0) differs from GPTQ in %lld codes", c, (long long)mism);
        CHECK(ss.lambda == 0 && sg.lambda == 0, "case %d: damping %g / %g", c, ss.lambda, sg.lambda);
        CHECK(fabs(ss.cost - sg.loss) <= 1e-9 * sg.loss, "case %d: cost %.12g vs GPTQ loss %.12g", c, ss.cost, sg.loss);
        piso_layer_result_free(&rg), piso_layer_result_free(&rs);
    }
    free_layer(&l);
}

/* GPFQ from the data matrices: u = Σ_{j<t}(x_α,j w_j − x̃_j q_j); v_t = <x̃_t, u + x_α,t w_t>/‖x̃_t‖² */
static void test_gpfq(void) {
    struct layer l;
    const int64_t N = 10, D = 40, T = 160;
    make_layer(&l, N, D, T, 0.4);
    double *u = malloc(sizeof(double) * T);
    int *perm = malloc(sizeof(int) * D);
    for (int c = 0; c < 4; c++) {
        double alpha = c & 1 ? 1.0 : 0.4;
        int act = c >= 2;
        struct piso_ec_opts o;
        opts_for(&o, "int3", 0, act, alpha);
        o.q.method = c == 3 ? PISO_SCALE_PISO : PISO_SCALE_ABSMAX, o.block_size = 16;
        struct piso_ec_problem p = {N, D, l.W, l.H, l.G, NULL};
        struct piso_layer_result r;
        struct piso_ec_stats st;
        if (piso_gpfq_layer(&p, &o, &r, &st)) {
            CHECK(0, "gpfq: %s", piso_last_error());
            continue;
        }
        for (int a = 0; a < D; a++) perm[a] = a;
        if (act) /* diag(H) descending, stable */
            for (int a = 1; a < D; a++) {
                int x = perm[a], z = a;
                while (z > 0 && l.H[perm[z - 1] * D + perm[z - 1]] < l.H[x * D + x]) perm[z] = perm[z - 1], z--;
                perm[z] = x;
            }
        int64_t mism = 0;
        for (int64_t i = 0; i < N; i++) {
            memset(u, 0, sizeof(double) * T);
            float s = r.scales[i];
            for (int a = 0; a < D; a++) {
                int t = perm[a];
                double w = l.W[i * D + t], num = 0, den = 0;
                for (int64_t k = 0; k < T; k++) {
                    double xq = l.Xq[k * D + t], xa = xq + alpha * (l.Xf[k * D + t] - xq);
                    u[k] += xa * w;
                    num += xq * u[k], den += xq * xq;
                }
                float gv = piso_grid_round(&o.q.grid, (float)(num / den) / s, NULL);
                double qv = (double)s * gv;
                for (int64_t k = 0; k < T; k++) u[k] -= l.Xq[k * D + t] * qv;
                mism += r.codes[i * D + t] != (int16_t)lrintf(gv);
            }
        }
        CHECK(mism == 0, "gpfq alpha %g act %d: %lld of %lld codes differ from the data-matrix reference", alpha, act,
              (long long)mism, (long long)(N * D));
        piso_layer_result_free(&r);
    }
    free(u), free(perm), free_layer(&l);
}

static void test_bad_options(void) {
    struct layer l;
    make_layer(&l, 2, 8, 32, 0.1);
    struct piso_ec_problem p = {2, 8, l.W, l.H, l.G, NULL};
    struct piso_layer_result r;
    struct piso_ec_opts o;
    opts_for(&o, "int3", 0, 0, 0.5);
    o.beam_k = 0;
    CHECK(piso_beam_layer(&p, &o, &r, NULL) != 0 && strstr(piso_last_error(), "--beam"), "K = 0: %s", piso_last_error());
    o.beam_k = 4, o.beam_b = 1;
    CHECK(piso_beam_layer(&p, &o, &r, NULL) != 0 && strstr(piso_last_error(), "--candidates"), "B = 1: %s",
          piso_last_error());
    o.beam_b = 2, o.alpha = 1.5;
    CHECK(piso_sr_layer(&p, &o, &r, NULL) != 0 && strstr(piso_last_error(), "--alpha"), "alpha 1.5: %s",
          piso_last_error());
    o.alpha = -0.1;
    CHECK(piso_gpfq_layer(&p, &o, &r, NULL) != 0 && strstr(piso_last_error(), "--alpha"), "alpha -0.1: %s",
          piso_last_error());
    free_layer(&l);

    /* the CLI: usage errors (exit 2) naming the option, nothing written; the model and text do not
     * exist, so an error about them would mean work had started before the options were checked */
    const char *model = "/nonexistent/model.bin", *calib = "/nonexistent/calib.txt";
    char cmd[2048];
    const char *out = "/tmp/piso_test_rounders_out";
    const struct {
        const char *args, *expect;
    } cli[] = {
        {"--rounding beam --beam 0", "--beam"},
        {"--rounding beam --candidates 1", "--candidates"},
        {"--rounding sr --alpha 1.5", "--alpha"},
        {"--rounding gpfq --alpha -0.5", "--alpha"},
        {"--rounding gptq --alpha 0.5", "--alpha"},
        {"--rounding sr --beam 4", "--beam"},
        {"--rounding beam --alpha 0.5 --alpha-sample", "--alpha-sample"},
    };
    for (size_t i = 0; i < sizeof cli / sizeof cli[0]; i++) {
        snprintf(cmd, sizeof cmd, "%s quantize --model %s --calib %s --format int3 %s --out %s --quiet 2>/tmp/piso_test_rounders_err",
                 PISO_BIN, model, calib, cli[i].args, out);
        int st = system(cmd);
        char err[1024] = {0};
        FILE *f = fopen("/tmp/piso_test_rounders_err", "r");
        if (f) {
            size_t n = fread(err, 1, sizeof err - 1, f);
            err[n] = 0;
            fclose(f);
        }
        struct stat sb;
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2, "quantize %s: exit %d", cli[i].args, WEXITSTATUS(st));
        CHECK(strstr(err, cli[i].expect) && strstr(err, "piso quantize: error:"), "quantize %s: message '%s'",
              cli[i].args, err);
        CHECK(stat(out, &sb) != 0, "quantize %s: wrote %s", cli[i].args, out);
    }
    /* beam without calibration data */
    snprintf(cmd, sizeof cmd, "%s quantize --model %s --format int3 --rounding beam --out %s --quiet 2>/tmp/piso_test_rounders_err",
             PISO_BIN, model, out);
    int st = system(cmd);
    struct stat sb;
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2, "beam without --calib: exit %d", WEXITSTATUS(st));
    CHECK(stat(out, &sb) != 0, "beam without --calib wrote %s", out);
    remove("/tmp/piso_test_rounders_err");
}

/* --alpha-sample: U(0, 1) per (seed, block, layer), reproducible; mean and spread of many draws */
static void test_alpha_sample(void) {
    double sum = 0, sum2 = 0, lo = 1, hi = 0;
    int n = 0, same = 0;
    for (uint64_t seed = 0; seed < 50; seed++)
        for (int b = 0; b < 8; b++)
            for (int k = 0; k < PISO_LIN_COUNT; k++) {
                double a = piso_alpha_sample(seed, b, (enum piso_linear)k);
                same += a == piso_alpha_sample(seed, b, (enum piso_linear)k);
                sum += a, sum2 += a * a, n++;
                if (a < lo) lo = a;
                if (a > hi) hi = a;
            }
    double mean = sum / n, var = sum2 / n - mean * mean;
    CHECK(same == n && lo >= 0 && hi < 1, "draws in [0, 1) and reproducible (%g..%g)", lo, hi);
    CHECK(fabs(mean - 0.5) < 0.03 && fabs(var - 1.0 / 12) < 0.01, "U(0,1): mean %g var %g over %d draws", mean, var, n);
    CHECK(piso_alpha_sample(1, 0, (enum piso_linear)0) != piso_alpha_sample(2, 0, (enum piso_linear)0) &&
              piso_alpha_sample(1, 0, (enum piso_linear)0) != piso_alpha_sample(1, 1, (enum piso_linear)0),
          "the seed and the layer change the draw");
}

/* the outputs do not depend on the number of threads (tiles and GEMM blocks depend on shapes only) */
static void test_threads(void) {
#ifdef _OPENMP
    struct layer l;
    const int64_t N = 40, D = 96;
    make_layer(&l, N, D, 2 * D, 0.3);
    struct piso_ec_problem p = {N, D, l.W, l.H, l.G, NULL};
    const piso_ec_layer_fn fn[3] = {piso_sr_layer, piso_beam_layer, piso_gpfq_layer};
    for (int m = 0; m < 3; m++) {
        struct piso_ec_opts o;
        opts_for(&o, "int3", 32, 1, 0.5);
        o.q.method = PISO_SCALE_PISO, o.interleave = PISO_INTERLEAVE_GROUP, o.beam_k = 3;
        struct piso_layer_result r1, r4;
        int nt = omp_get_max_threads();
        omp_set_num_threads(1);
        int rc = fn[m](&p, &o, &r1, NULL);
        omp_set_num_threads(4);
        rc |= fn[m](&p, &o, &r4, NULL);
        omp_set_num_threads(nt);
        if (rc) {
            CHECK(0, "threads: %s", piso_last_error());
            continue;
        }
        CHECK(!memcmp(r1.dequant, r4.dequant, sizeof(float) * N * D) && !memcmp(r1.codes, r4.codes, sizeof(int16_t) * N * D),
              "rounder %d: 1 and 4 threads give different results", m);
        piso_layer_result_free(&r1), piso_layer_result_free(&r4);
    }
    free_layer(&l);
#endif
}

int main(void) {
    piso_set_quiet(1);
    test_exhaustive();
    test_sr_beam();
    test_sr_is_gptq();
    test_gpfq();
    test_bad_options();
    test_alpha_sample();
    test_threads();
    return test_finish();
}
