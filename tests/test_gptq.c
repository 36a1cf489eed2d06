/* GPTQ and Qronos against naive references written here from their definitions:
 *  - GPTQ: quantize column i, then re-fit all later columns by least squares on the Schur
 *    complement, v_J = w_J − H_JJ⁻¹ H_JF (q_F − w_F), solved by Gaussian elimination each step;
 *  - Qronos (λ = 0): error correction of column t by least squares against Xw with explicit data
 *    matrices, then diffusion by least squares over the later columns (normal equations from X̃);
 *  - GPTQ's accumulated loss Σ e² equals (w − q)ᵀ(H + λI)(w − q);
 *  - RTN with PiSO never has a larger per-row objective than absmax (also with a ragged group). */
#include "harness.h"
#include "piso/solve.h"

#include <stdint.h>

static uint64_t rng = 88172645463325252ull;
static double urand(void) { /* xorshift64 in [0, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static double nrand(void) { return sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand()); }

/* Nearest value of the int grid lo..hi times s; writes the integer code. */
static double qint(double v, double s, int lo, int hi, int *code) {
    double q = nearbyint(v / s);
    if (q < lo) q = lo;
    if (q > hi) q = hi;
    *code = (int)q;
    return q * s;
}

#define MAXD 8
#define T_TOK 40

/* Random data X, X̃ [T, D] (X̃ = X + noise·E), W [N, D]; H = X̃ᵀX̃, G = X̃ᵀX. */
static void make_case(int N, int D, double noise, double *X, double *Xq, float *W, float *H, float *G) {
    for (int t = 0; t < T_TOK; t++) {
        double common = nrand();
        for (int j = 0; j < D; j++) {
            X[t * D + j] = nrand() * (1 + j % 3) + 0.5 * common;
            Xq[t * D + j] = X[t * D + j] + noise * nrand();
        }
    }
    for (int i = 0; i < N * D; i++) W[i] = (float)nrand();
    for (int a = 0; a < D; a++)
        for (int b = 0; b < D; b++) {
            double h = 0, g = 0;
            for (int t = 0; t < T_TOK; t++) h += Xq[t * D + a] * Xq[t * D + b], g += Xq[t * D + a] * X[t * D + b];
            H[a * D + b] = (float)h, G[a * D + b] = (float)g;
        }
}

/* Naive GPTQ of one row in column order perm with fixed scales per column. */
static void gptq_ref(int D, const float *w, const float *H, double lambda, const int *perm, const double *scale,
                     int lo, int hi, double *out, int *codes) {
    double v[MAXD], A[MAXD * MAXD], b[MAXD];
    int fixed[MAXD] = {0};
    for (int j = 0; j < D; j++) v[j] = w[j];
    for (int step = 0; step < D; step++) {
        int i = perm[step];
        v[i] = qint(v[i], scale[i], lo, hi, &codes[i]);
        fixed[i] = 1;
        int J[MAXD], nj = 0;
        for (int j = 0; j < D; j++)
            if (!fixed[j]) J[nj++] = j;
        if (!nj) break;
        /* v_J = w_J − Hd_JJ⁻¹ Hd_JF (v_F − w_F) */
        for (int a = 0; a < nj; a++) {
            double s = 0;
            for (int f = 0; f < D; f++)
                if (fixed[f]) s += ((double)H[J[a] * D + f] + (J[a] == f ? lambda : 0)) * (v[f] - w[f]);
            b[a] = s;
            for (int c = 0; c < nj; c++) A[a * nj + c] = H[J[a] * D + J[c]] + (a == c ? lambda : 0);
        }
        test_gauss_solve(A, b, nj);
        for (int a = 0; a < nj; a++) v[J[a]] = w[J[a]] - b[a];
    }
    for (int j = 0; j < D; j++) out[j] = v[j];
}

/* Naive Qronos (λ = 0) of one row from the data matrices, columns in natural order. */
static void qronos_ref(int D, const float *w, const double *X, const double *Xq, const double *scale, int lo, int hi,
                       double *out, int *codes) {
    double v[MAXD], y[T_TOK], A[MAXD * MAXD], b[MAXD];
    for (int j = 0; j < D; j++) v[j] = w[j];
    for (int t = 0; t < T_TOK; t++) {
        y[t] = 0;
        for (int j = 0; j < D; j++) y[t] += X[t * D + j] * w[j];
    }
    for (int c = 0; c < D; c++) {
        /* error correction: z = argmin ‖y − Σ_{j≠c} x̃_j v_j − x̃_c z‖² */
        double num = 0, den = 0;
        for (int t = 0; t < T_TOK; t++) {
            double r = y[t];
            for (int j = 0; j < D; j++)
                if (j != c) r -= Xq[t * D + j] * v[j];
            num += Xq[t * D + c] * r, den += Xq[t * D + c] * Xq[t * D + c];
        }
        v[c] = qint(num / den, scale[c], lo, hi, &codes[c]);
        int nj = D - c - 1;
        if (!nj) break;
        /* diffusion: v_{>c} = argmin ‖y − X̃_{≤c} q − X̃_{>c} v‖² */
        for (int a = 0; a < nj; a++) {
            double s = 0;
            for (int t = 0; t < T_TOK; t++) {
                double r = y[t];
                for (int j = 0; j <= c; j++) r -= Xq[t * D + j] * v[j];
                s += Xq[t * D + c + 1 + a] * r;
            }
            b[a] = s;
            for (int e = 0; e < nj; e++) {
                double h = 0;
                for (int t = 0; t < T_TOK; t++) h += Xq[t * D + c + 1 + a] * Xq[t * D + c + 1 + e];
                A[a * nj + e] = h;
            }
        }
        test_gauss_solve(A, b, nj);
        for (int a = 0; a < nj; a++) v[c + 1 + a] = b[a];
    }
    for (int j = 0; j < D; j++) out[j] = v[j];
}

static int cmp_desc_diag_D;
static const float *cmp_desc_diag_H;
static int by_diag_desc(const void *a, const void *b) {
    int i = *(const int *)a, j = *(const int *)b, D = cmp_desc_diag_D;
    float x = cmp_desc_diag_H[i * D + i], y = cmp_desc_diag_H[j * D + j];
    if (x != y) return x > y ? -1 : 1;
    return i - j;
}

static void test_gptq_against_reference(void) {
    int cases = 0, code_mismatch = 0;
    for (int trial = 0; trial < 24; trial++) {
        int N = 3, D = 4 + trial % 5, group = (trial % 3 == 2) ? 3 : 0, act = trial % 2;
        double X[T_TOK * MAXD], Xq[T_TOK * MAXD];
        float W[3 * MAXD], H[MAXD * MAXD], G[MAXD * MAXD];
        make_case(N, D, 0.0, X, Xq, W, H, G);
        struct piso_ec_opts o;
        piso_ec_opts_default(&o);
        piso_grid_init(&o.q.grid, trial % 4 < 2 ? "int3" : "int4", 0);
        o.q.group = group, o.act_order = act, o.damp = (trial % 4 == 3) ? 0.0 : 0.01;
        o.interleave = PISO_INTERLEAVE_LAYER, o.block_size = 2; /* small blocks exercise the GEMM */
        struct piso_ec_problem p = {N, D, W, H, NULL, NULL};
        struct piso_layer_result r;
        struct piso_ec_stats st;
        int rc = piso_gptq_layer(&p, &o, &r, &st);
        CHECK(rc == 0, "gptq failed: %s", piso_last_error());
        if (rc) continue;
        double mean = 0;
        for (int j = 0; j < D; j++) mean += H[j * D + j];
        double lambda = o.damp * mean / D;
        CHECK_NEAR(st.lambda, lambda, 1e-9 * (1 + lambda), "damping λ = damp·mean(diag H)");
        /* column order as documented: act order by diag(H), groups contiguous */
        int perm[MAXD];
        for (int j = 0; j < D; j++) perm[j] = j;
        if (act && !group) {
            cmp_desc_diag_D = D, cmp_desc_diag_H = H;
            qsort(perm, (size_t)D, sizeof(int), by_diag_desc);
        } else if (act) {
            /* groups by Σ diag desc, columns in a group by diag desc */
            int ng = (D + group - 1) / group, gorder[MAXD], k = 0;
            double gsum[MAXD];
            for (int g = 0; g < ng; g++) {
                gsum[g] = 0, gorder[g] = g;
                for (int c = g * group; c < D && c < g * group + group; c++) gsum[g] += H[c * D + c];
            }
            for (int a = 0; a < ng; a++)
                for (int b = a + 1; b < ng; b++)
                    if (gsum[gorder[b]] > gsum[gorder[a]]) {
                        int t = gorder[a];
                        gorder[a] = gorder[b], gorder[b] = t;
                    }
            for (int a = 0; a < ng; a++) {
                int g = gorder[a], c0 = g * group, len = c0 + group <= D ? group : D - c0;
                for (int c = 0; c < len; c++) perm[k + c] = c0 + c;
                cmp_desc_diag_D = D, cmp_desc_diag_H = H;
                qsort(perm + k, (size_t)len, sizeof(int), by_diag_desc);
                k += len;
            }
        }
        int lo = (int)o.q.grid.v[0], hi = (int)o.q.grid.v[o.q.grid.n - 1];
        double total = 0;
        for (int i = 0; i < N; i++) {
            double scale[MAXD], ref[MAXD];
            int codes[MAXD];
            int ng = group ? (D + group - 1) / group : 1;
            CHECK(r.n_groups == ng, "n_groups %lld vs %d", (long long)r.n_groups, ng);
            for (int j = 0; j < D; j++) scale[j] = r.scales[i * ng + (group ? j / group : 0)];
            gptq_ref(D, W + i * D, H, lambda, perm, scale, lo, hi, ref, codes);
            for (int j = 0; j < D; j++) {
                code_mismatch += codes[j] != r.codes[i * D + j];
                CHECK(fabs(ref[j] - r.dequant[i * D + j]) <= 1e-4 * (1 + fabs(ref[j])),
                      "trial %d row %d col %d: gptq %g vs reference %g", trial, i, j, r.dequant[i * D + j], ref[j]);
            }
            /* loss identity with the damped H */
            double d[MAXD], l = 0;
            for (int j = 0; j < D; j++) d[j] = (double)W[i * D + j] - r.dequant[i * D + j];
            for (int a = 0; a < D; a++)
                for (int b = 0; b < D; b++) l += d[a] * ((double)H[a * D + b] + (a == b ? lambda : 0)) * d[b];
            total += l;
        }
        CHECK(fabs(st.loss - total) <= 1e-4 * (1 + total), "trial %d: Σe² = %.9g vs (w−q)ᵀ(H+λI)(w−q) = %.9g", trial,
              st.loss, total);
        cases++;
        piso_layer_result_free(&r);
    }
    CHECK(code_mismatch == 0, "%d codes differ from the reference GPTQ", code_mismatch);
    CHECK(cases == 24, "cases run %d", cases);
}

static void test_qronos_against_reference(void) {
    int mismatch = 0;
    for (int trial = 0; trial < 16; trial++) {
        int N = 3, D = 3 + trial % 6, act = trial % 4 >= 2;
        double noise = trial % 2 ? 0.3 : 0.0; /* X̃ = X and X̃ ≠ X */
        double X[T_TOK * MAXD], Xq[T_TOK * MAXD];
        float W[3 * MAXD], H[MAXD * MAXD], G[MAXD * MAXD];
        make_case(N, D, noise, X, Xq, W, H, G);
        struct piso_ec_opts o;
        piso_ec_opts_default(&o);
        piso_grid_init(&o.q.grid, trial % 8 < 4 ? "int3" : "int4", 0);
        o.damp = 0.0, o.interleave = PISO_INTERLEAVE_LAYER, o.block_size = 2, o.act_order = act;
        struct piso_ec_problem p = {N, D, W, H, G, NULL};
        struct piso_layer_result r;
        int rc = piso_qronos_layer(&p, &o, &r, NULL);
        CHECK(rc == 0, "qronos failed: %s", piso_last_error());
        if (rc) continue;
        /* act order: the reference runs on the data with columns permuted by diag(H) descending */
        int perm[MAXD];
        for (int j = 0; j < D; j++) perm[j] = j;
        if (act) {
            cmp_desc_diag_D = D, cmp_desc_diag_H = H;
            qsort(perm, (size_t)D, sizeof(int), by_diag_desc);
        }
        double Xp[T_TOK * MAXD], Xqp[T_TOK * MAXD];
        for (int t = 0; t < T_TOK; t++)
            for (int j = 0; j < D; j++) Xp[t * D + j] = X[t * D + perm[j]], Xqp[t * D + j] = Xq[t * D + perm[j]];
        int lo = (int)o.q.grid.v[0], hi = (int)o.q.grid.v[o.q.grid.n - 1];
        for (int i = 0; i < N; i++) {
            double scale[MAXD], ref[MAXD];
            float wp[MAXD];
            int codes[MAXD];
            for (int j = 0; j < D; j++) scale[j] = r.scales[i], wp[j] = W[i * D + perm[j]];
            qronos_ref(D, wp, Xp, Xqp, scale, lo, hi, ref, codes);
            for (int j = 0; j < D; j++) {
                mismatch += codes[j] != r.codes[i * D + perm[j]];
                CHECK(fabs(ref[j] - r.dequant[i * D + perm[j]]) <= 1e-4 * (1 + fabs(ref[j])),
                      "trial %d row %d col %d: qronos %g vs reference %g", trial, i, perm[j], r.dequant[i * D + perm[j]],
                      ref[j]);
            }
        }
        piso_layer_result_free(&r);
    }
    CHECK(mismatch == 0, "%d codes differ from the reference Qronos", mismatch);
}

/* RTN: PiSO's objective per row is never above absmax's (channel-wise, group, ragged group). */
static void test_rtn_piso_not_worse(void) {
    for (int trial = 0; trial < 6; trial++) {
        int N = 3, D = 7, group = trial % 3 == 0 ? 0 : (trial % 3 == 1 ? 7 : 3);
        double X[T_TOK * MAXD], Xq[T_TOK * MAXD];
        float W[3 * MAXD], H[MAXD * MAXD], G[MAXD * MAXD];
        make_case(N, D, 0.2, X, Xq, W, H, G);
        struct piso_quant_opts qo = {0};
        piso_grid_init(&qo.grid, "int3", 0);
        qo.group = group, qo.allow_negative = 1;
        struct piso_layer_problem lp = {N, D, W, H, G, NULL, 0};
        struct piso_layer_result ra, rp;
        qo.method = PISO_SCALE_ABSMAX;
        CHECK(piso_rtn_layer(&lp, &qo, &ra) == 0, "absmax: %s", piso_last_error());
        qo.method = PISO_SCALE_PISO;
        CHECK(piso_rtn_layer(&lp, &qo, &rp) == 0, "piso: %s", piso_last_error());
        int ng = group ? (D + group - 1) / group : 1;
        CHECK(rp.n_groups == ng, "ragged groups: %lld vs %d", (long long)rp.n_groups, ng);
        for (int i = 0; i < N; i++) {
            double ea = 0, ep = 0;
            if (!group) { /* channel-wise: ‖Xw − X̃ŵ‖² evaluated from the data */
                for (int t = 0; t < T_TOK; t++) {
                    double y = 0, ya = 0, yp = 0;
                    for (int j = 0; j < D; j++) {
                        y += X[t * D + j] * W[i * D + j];
                        ya += Xq[t * D + j] * ra.dequant[i * D + j];
                        yp += Xq[t * D + j] * rp.dequant[i * D + j];
                    }
                    ea += (y - ya) * (y - ya), ep += (y - yp) * (y - yp);
                }
            } else { /* groups are solved independently: Σ_g ŵ_gᵀH_ggŵ_g − 2ŵ_gᵀG_gg w_g */
                for (int a = 0; a < D; a++)
                    for (int b = 0; b < D; b++) {
                        if (a / group != b / group) continue;
                        double qa = ra.dequant[i * D + a], qp = rp.dequant[i * D + a];
                        ea += qa * H[a * D + b] * ra.dequant[i * D + b] - 2 * qa * G[a * D + b] * W[i * D + b];
                        ep += qp * H[a * D + b] * rp.dequant[i * D + b] - 2 * qp * G[a * D + b] * W[i * D + b];
                    }
            }
            CHECK(ep <= ea + 1e-5 * fabs(ea) + 1e-6, "trial %d row %d: piso %g > absmax %g", trial, i, ep, ea);
        }
        piso_layer_result_free(&ra), piso_layer_result_free(&rp);
    }
}

/* PiSO interleaved per group solves each group's scale with target (Gw)_g − H_{g,¬g}v_{¬g} on the
 * current weights. Two cases where that has a closed form: one group (channel-wise) at column 0 is
 * the layer-level solve; with H block-diagonal across groups nothing diffuses between groups and
 * the target is G_gg w_g, i.e. independent per-group PiSO on the original weights. */
static void test_group_interleave(void) {
    for (int trial = 0; trial < 8; trial++) {
        int N = 3, D = 8, group = trial < 4 ? 0 : 4;
        double X[T_TOK * MAXD], Xq[T_TOK * MAXD];
        float W[3 * MAXD], H[MAXD * MAXD], G[MAXD * MAXD];
        make_case(N, D, 0.0, X, Xq, W, H, G);
        if (group)
            for (int a = 0; a < D; a++)
                for (int b = 0; b < D; b++)
                    if (a / group != b / group) H[a * D + b] = 0; /* still PSD: a direct sum of Gram blocks */
        struct piso_ec_opts o;
        piso_ec_opts_default(&o);
        piso_grid_init(&o.q.grid, trial % 2 ? "int3" : "int4", 0);
        o.q.method = PISO_SCALE_PISO, o.q.group = group, o.act_order = trial % 4 >= 2;
        struct piso_ec_problem p = {N, D, W, H, NULL, NULL};
        struct piso_layer_result rl, rg;
        o.interleave = PISO_INTERLEAVE_LAYER;
        int ok = piso_gptq_layer(&p, &o, &rl, NULL) == 0;
        o.interleave = PISO_INTERLEAVE_GROUP;
        ok &= piso_gptq_layer(&p, &o, &rg, NULL) == 0;
        CHECK(ok, "trial %d: %s", trial, piso_last_error());
        if (!ok) continue;
        for (int64_t i = 0; i < N * rl.n_groups; i++)
            CHECK(fabs(rl.scales[i] - rg.scales[i]) <= 1e-4 * fabs(rl.scales[i]), "trial %d scale %lld: layer %g vs group %g",
                  trial, (long long)i, rl.scales[i], rg.scales[i]);
        piso_layer_result_free(&rl), piso_layer_result_free(&rg);
    }
}

/* A wide layer (D ≥ 512: the one-Cholesky inverse factor and the triangular objective): GPTQ's
 * loss Σe² equals (w − q)ᵀ(H + λI)(w − q) in fp64, and the layer objective equals dᵀHd per row,
 * both recomputed here by brute force. */
static void test_gptq_wide(void) {
    const int N = 5, D = 600, T = 700;
    float *X = malloc(sizeof(float) * T * D), *H = malloc(sizeof(float) * D * D), *W = malloc(sizeof(float) * N * D);
    for (int t = 0; t < T; t++) {
        double common = nrand();
        for (int j = 0; j < D; j++) X[t * D + j] = (float)(nrand() * (1 + j % 7) + 0.8 * common);
    }
    for (int a = 0; a < D; a++)
        for (int b = 0; b <= a; b++) {
            double h = 0;
            for (int t = 0; t < T; t++) h += (double)X[t * D + a] * X[t * D + b];
            H[a * D + b] = H[b * D + a] = (float)h;
        }
    for (int i = 0; i < N * D; i++) W[i] = (float)nrand();
    for (int cfg = 0; cfg < 2; cfg++) {
    struct piso_ec_opts o;
    piso_ec_opts_default(&o);
    piso_grid_init(&o.q.grid, "int4", 0);
    if (cfg == 1) /* groups solved on the current weights at each group start, act order, 2 batches a group */
        o.q.group = 200, o.q.method = PISO_SCALE_PISO, o.interleave = PISO_INTERLEAVE_GROUP, o.act_order = 1,
        o.block_size = 128;
    struct piso_ec_problem p = {N, D, W, H, NULL, NULL};
    struct piso_layer_result r;
    struct piso_ec_stats st;
    CHECK(piso_gptq_layer(&p, &o, &r, &st) == 0, "wide gptq: %s", piso_last_error());
    double loss = 0, worst = 0;
    for (int i = 0; i < N; i++) {
        double obj = 0, mag = 0;
        for (int a = 0; a < D; a++) {
            double da = (double)W[i * D + a] - r.dequant[i * D + a];
            for (int b = 0; b < D; b++) {
                double db = (double)W[i * D + b] - r.dequant[i * D + b], h = (double)H[a * D + b] * da * db;
                obj += h, mag += fabs(h);
                loss += a == b ? h + st.lambda * da * db : h;
            }
        }
        worst = fmax(worst, fabs(r.row_objective[i] - obj) / mag);
    }
    CHECK(fabs(st.loss - loss) <= 1e-3 * loss, "wide %d: Σe² = %.9g vs (w−q)ᵀ(H+λI)(w−q) = %.9g", cfg, st.loss, loss);
    CHECK(worst <= 1e-5, "wide %d: layer objective vs brute force dᵀHd: relative error %g", cfg, worst);
    piso_layer_result_free(&r);
    }
    free(X), free(H), free(W);
}

/* Wide Qronos (D ≥ 512: the UL factor, the re-fit by triangular solves, the left-looking sweep from
 * column 1): its loss Σe² equals (v − q)ᵀ(H + λI)[1:,1:](v − q) over columns 1.., with v the re-fit
 * (H + λI)[1:,1:]⁻¹ (H[1:,:]w + λw₁ − H[1:,0]q₀) solved here by Gaussian elimination in fp64. */
static void test_qronos_wide(void) {
    const int N = 3, D = 560, T = 650, D1 = D - 1;
    float *X = malloc(sizeof(float) * T * D), *H = malloc(sizeof(float) * D * D), *W = malloc(sizeof(float) * N * D);
    double *A = malloc(sizeof(double) * D1 * D1), *b = malloc(sizeof(double) * D1);
    for (int t = 0; t < T; t++) {
        double common = nrand();
        for (int j = 0; j < D; j++) X[t * D + j] = (float)(nrand() * (1 + j % 5) + 0.6 * common);
    }
    for (int a = 0; a < D; a++)
        for (int c = 0; c <= a; c++) {
            double h = 0;
            for (int t = 0; t < T; t++) h += (double)X[t * D + a] * X[t * D + c];
            H[a * D + c] = H[c * D + a] = (float)h;
        }
    for (int i = 0; i < N * D; i++) W[i] = (float)nrand();
    for (int cfg = 0; cfg < 2; cfg++) {
        struct piso_ec_opts o;
        piso_ec_opts_default(&o);
        piso_grid_init(&o.q.grid, "int4", 0);
        if (cfg == 1) o.q.group = 200, o.q.method = PISO_SCALE_PISO, o.interleave = PISO_INTERLEAVE_GROUP;
        struct piso_ec_problem p = {N, D, W, H, NULL, NULL};
        struct piso_layer_result r;
        struct piso_ec_stats st;
        CHECK(piso_qronos_layer(&p, &o, &r, &st) == 0, "wide qronos: %s", piso_last_error());
        double loss = 0, lam = st.lambda;
        for (int i = 0; i < N; i++) {
            const float *w = W + i * D;
            double q0 = r.dequant[i * D];
            for (int a = 0; a < D1; a++) {
                double t = 0;
                for (int j = 0; j < D; j++) t += (double)H[(a + 1) * D + j] * w[j];
                b[a] = t + lam * w[a + 1] - q0 * H[(a + 1) * D];
                for (int c = 0; c < D1; c++) A[a * D1 + c] = H[(a + 1) * D + c + 1] + (a == c ? lam : 0);
            }
            test_gauss_solve(A, b, D1); /* b ← v */
            for (int a = 0; a < D1; a++) {
                double da = b[a] - r.dequant[i * D + a + 1];
                for (int c = 0; c < D1; c++)
                    loss += da * ((double)H[(a + 1) * D + c + 1] + (a == c ? lam : 0)) * (b[c] - r.dequant[i * D + c + 1]);
            }
        }
        CHECK(fabs(st.loss - loss) <= 2e-3 * loss, "wide qronos %d: Σe² = %.9g vs (v−q)ᵀ(H+λI)(v−q) = %.9g", cfg,
              st.loss, loss);
        piso_layer_result_free(&r);
    }
    free(X), free(H), free(W), free(A), free(b);
}

int main(void) {
    piso_set_quiet(1); /* the layer solvers' progress lines */
    test_gptq_wide();
    test_qronos_wide();
    test_gptq_against_reference();
    test_qronos_against_reference();
    test_rtn_piso_not_worse();
    test_group_interleave();
    return test_finish();
}
