/* The error-correction engine (src/quant/ec_engine.c) against a naive, unbatched, textbook GPTQ
 * written here from the formula: for each column j in order, q = s·round(w_j/s),
 * e = (w_j − q)/R_jj, w_{j+1:} −= e·R_{j,j+1:}, with R the upper Cholesky factor of (H + λI)⁻¹
 * computed here in fp64 (Gauss–Jordan inverse, textbook Cholesky), rows updated in fp64.
 *  - GPTQ layers (int4, groups, act order on/off, and GPTQ's desc_act groups: group k = the k-th
 *    block of the act order, g_idx = position / group) for lazy-batch widths 1, 5, 32, 128: codes equal;
 *  - the GGUF block path (Q8_0, Q4_0): block scales chosen on the updated weights at each block's
 *    first column as documented in block_scales.h, then the same sweep: dequantized values equal.
 * The engine works in fp32 (weights, R) and its batches sum in another order, so a code could in
 * principle flip at a near-tie of w/s; the random layers here have none, and any flip would show
 * as a large mismatch (it changes the rest of the row), so the codes are asserted exactly. */
#include "harness.h"
#include "piso/block_scales.h"
#include "piso/ggml_quants.h"
#include "piso/gguf.h"
#include "piso/solve.h"

#include <stdint.h>

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static double urand(void) { /* xorshift64 in [0, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static double nrand(void) { return sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand()); }

/* W [N, D] random; H = XᵀX/T for X [T, D] with correlated columns and unequal scales. */
static void random_layer(int64_t N, int64_t D, float *W, float *H) {
    const int64_t T = 3 * D;
    double *X = malloc(sizeof(double) * T * D);
    for (int64_t t = 0; t < T; t++) {
        double common = nrand();
        for (int64_t j = 0; j < D; j++) X[t * D + j] = (0.3 + (double)(j % 7) / 5) * (nrand() + 0.5 * common);
    }
    for (int64_t a = 0; a < D; a++)
        for (int64_t b = 0; b < D; b++) {
            double s = 0;
            for (int64_t t = 0; t < T; t++) s += X[t * D + a] * X[t * D + b];
            H[a * D + b] = (float)(s / (double)T);
        }
    for (int64_t i = 0; i < N * D; i++) W[i] = (float)(0.1 * nrand());
    free(X);
}

/* R upper with (A)⁻¹ = RᵀR for A [n, n] SPD (destroyed): Gauss–Jordan inverse, then Cholesky. */
static void naive_inverse_factor(double *A, int64_t n, double *R) {
    double *I = calloc((size_t)(n * n), sizeof(double));
    for (int64_t i = 0; i < n; i++) I[i * n + i] = 1;
    for (int64_t c = 0; c < n; c++) { /* SPD: no pivoting needed */
        double p = A[c * n + c];
        for (int64_t k = 0; k < n; k++) A[c * n + k] /= p, I[c * n + k] /= p;
        for (int64_t r = 0; r < n; r++) {
            if (r == c) continue;
            double f = A[r * n + c];
            for (int64_t k = 0; k < n; k++) A[r * n + k] -= f * A[c * n + k], I[r * n + k] -= f * I[c * n + k];
        }
    }
    memset(R, 0, sizeof(double) * (size_t)(n * n));
    for (int64_t i = 0; i < n; i++) {
        double d = I[i * n + i];
        for (int64_t k = 0; k < i; k++) d -= R[k * n + i] * R[k * n + i];
        R[i * n + i] = sqrt(d);
        for (int64_t j = i + 1; j < n; j++) {
            double s = 0.5 * (I[i * n + j] + I[j * n + i]);
            for (int64_t k = 0; k < i; k++) s -= R[k * n + i] * R[k * n + j];
            R[i * n + j] = s / R[i * n + i];
        }
    }
    free(I);
}

/* Act order as documented in solve.h: groups by Σ diag(H) descending, columns inside a group by
 * diag(H) descending, ties in the original order (insertion sorts: stable). */
static void act_order(const float *H, int64_t D, int g, int on, int *perm) {
    int ng = (int)((D + g - 1) / g), *gord = malloc(sizeof(int) * ng), pos = 0;
    double *gs = malloc(sizeof(double) * ng);
    for (int k = 0; k < ng; k++) {
        gs[k] = 0;
        for (int64_t c = (int64_t)k * g; c < (int64_t)(k + 1) * g && c < D; c++) gs[k] += H[c * D + c];
        if (!on) gs[k] = 0;
        int i = k;
        while (i > 0 && gs[gord[i - 1]] < gs[k]) gord[i] = gord[i - 1], i--;
        gord[i] = k;
    }
    for (int t = 0; t < ng; t++) {
        int c0 = gord[t] * g, len = (int)(c0 + g <= D ? g : D - c0), start = pos;
        for (int j = 0; j < len; j++) {
            int c = c0 + j, i = pos++;
            while (on && i > start && H[(int64_t)perm[i - 1] * D + perm[i - 1]] < H[(int64_t)c * D + c]) perm[i] = perm[i - 1], i--;
            perm[i] = c;
        }
    }
    free(gord), free(gs);
}

/* GPTQ's desc_act order: every column by diag(H) descending, ties in the original order
 * (insertion sort: stable); group k is then positions k·g .. k·g + g − 1 of this order. */
static void desc_act_order(const float *H, int64_t D, int *perm) {
    for (int64_t c = 0; c < D; c++) {
        int64_t i = c;
        while (i > 0 && H[(int64_t)perm[i - 1] * D + perm[i - 1]] < H[c * D + c]) perm[i] = perm[i - 1], i--;
        perm[i] = (int)c;
    }
}

/* R of (H + λI)⁻¹ in the order perm, λ = 0.01·mean(diag H) (no dead inputs here). */
static void reference_factor(const float *H, int64_t D, const int *perm, double *R) {
    double *A = malloc(sizeof(double) * D * D), mean = 0;
    for (int64_t a = 0; a < D; a++) mean += H[a * D + a];
    mean /= (double)D;
    for (int64_t a = 0; a < D; a++)
        for (int64_t b = 0; b < D; b++) A[a * D + b] = H[(int64_t)perm[a] * D + perm[b]] + (a == b ? 0.01 * mean : 0);
    naive_inverse_factor(A, D, R);
    free(A);
}

static void test_gptq_codes(void) {
    const int64_t N = 24, D = 160;
    float *W = malloc(sizeof(float) * N * D), *H = malloc(sizeof(float) * D * D);
    double *R = malloc(sizeof(double) * D * D), *w = malloc(sizeof(double) * D);
    int *perm = malloc(sizeof(int) * D);
    random_layer(N, D, W, H);
    const int groups[] = {0, 32, 48}, blocks[] = {1, 5, 32, 128};
    for (int gi = 0; gi < 3; gi++)
        for (int ao = 0; ao < 3; ao++) { /* 0: natural order, 1: act order, 2: desc_act groups */
            int g = groups[gi] ? groups[gi] : (int)D, desc = ao == 2 && groups[gi];
            if (ao == 2 && !desc) continue;
            if (desc) desc_act_order(H, D, perm);
            else act_order(H, D, g, ao, perm);
            reference_factor(H, D, perm, R);
            for (int bi = 0; bi < 4; bi++) {
                struct piso_ec_opts o;
                piso_ec_opts_default(&o);
                piso_grid_init(&o.q.grid, "int4", 0);
                o.q.group = groups[gi], o.act_order = ao > 0, o.desc_act_groups = desc, o.block_size = blocks[bi];
                struct piso_ec_problem p = {N, D, W, H, NULL, NULL};
                struct piso_layer_result r;
                if (piso_gptq_layer(&p, &o, &r, NULL)) {
                    CHECK(0, "piso_gptq_layer failed");
                    continue;
                }
                int64_t mism = 0, bad_gidx = 0;
                double max_dv = 0;
                CHECK(!desc == !r.g_idx, "group %d act_order %d: g_idx %s", groups[gi], ao, r.g_idx ? "set" : "missing");
                for (int64_t a = 0; desc && r.g_idx && a < D; a++) bad_gidx += r.g_idx[perm[a]] != (int32_t)(a / g);
                CHECK(bad_gidx == 0, "group %d desc_act: %lld g_idx entries differ from position / group", groups[gi],
                      (long long)bad_gidx);
                for (int64_t i = 0; i < N; i++) {
                    for (int64_t c = 0; c < D; c++) w[c] = W[i * D + perm[c]];
                    for (int64_t a = 0; a < D; a++) {
                        int col = perm[a];
                        float s = r.scales[i * r.n_groups + (desc ? a : col) / g];
                        float gv = piso_grid_round(&o.q.grid, (float)w[a] / s, NULL);
                        double q = (double)s * gv, e = (w[a] - q) / R[a * D + a];
                        for (int64_t b = a + 1; b < D; b++) w[b] -= e * R[a * D + b];
                        mism += r.codes[i * D + col] != (int16_t)lrintf(gv);
                        double dv = fabs(r.dequant[i * D + col] - (float)q);
                        if (dv > max_dv) max_dv = dv;
                    }
                }
                CHECK(mism == 0, "group %d act_order %d block %d: %lld of %lld codes differ from the naive GPTQ",
                      groups[gi], ao, blocks[bi], (long long)mism, (long long)(N * D));
                CHECK(max_dv == 0, "group %d act_order %d block %d: dequantized values differ by %g", groups[gi], ao,
                      blocks[bi], max_dv);
                piso_layer_result_free(&r);
            }
        }
    free(W), free(H), free(R), free(w), free(perm);
}

/* The GGUF path: naive sweep with the block rounding of Q8_0 / Q4_0 (symmetric: x = d·l). */
static void test_gguf_block_path(void) {
    const int64_t N = 12, D = 128;
    float *W = malloc(sizeof(float) * N * D), *H = malloc(sizeof(float) * D * D), *hdiag = malloc(sizeof(float) * D);
    float *deq = malloc(sizeof(float) * N * D), *ref = malloc(sizeof(float) * N * D);
    double *R = malloc(sizeof(double) * D * D), *w = malloc(sizeof(double) * D);
    int *perm = malloc(sizeof(int) * D);
    uint8_t *q = malloc((size_t)(N * D * 2));
    random_layer(N, D, W, H);
    for (int64_t a = 0; a < D; a++) perm[a] = (int)a, hdiag[a] = H[a * D + a];
    reference_factor(H, D, perm, R);
    const int types[] = {GGML_T_Q8_0, GGML_T_Q4_0};
    for (int ti = 0; ti < 2; ti++) {
        const int t = types[ti], lo = t == GGML_T_Q8_0 ? -127 : -8, hi = t == GGML_T_Q8_0 ? 127 : 7;
        struct piso_grid grid;
        piso_grid_init(&grid, t == GGML_T_Q8_0 ? "int8" : "int4", t == GGML_T_Q8_0);
        size_t nb = piso_ggml_quantize_gptq(t, W, q, N, D, H);
        CHECK(nb == (size_t)(N * D / 32 * piso_ggml_block_bytes(t)), "%s: %zu bytes", (t == GGML_T_Q8_0 ? "Q8_0" : "Q4_0"), nb);
        piso_ggml_dequantize_row(t, q, deq, N * D);
        for (int64_t i = 0; i < N; i++) {
            for (int64_t c = 0; c < D; c++) w[c] = W[i * D + c];
            float d = 0;
            for (int64_t a = 0; a < D; a++) {
                if (a % 32 == 0) { /* the block's scale on the updated weights (block_scales.h) */
                    float wb[32];
                    uint8_t packed[64];
                    for (int k = 0; k < 32; k++) wb[k] = (float)w[a + k];
                    piso_ggml_quantize_piso(t, wb, packed, 1, 32, hdiag + a);
                    d = piso_fp16_to_fp32((uint16_t)(packed[0] | packed[1] << 8));
                    float s = piso_solve_scale_dense(wb, 32, H + a * D + a, (int)D, NULL, &grid, 1, NULL);
                    uint16_t h = piso_fp32_to_fp16(s);
                    if (isfinite(s) && s != 0 && (h & 0x7fff) && (h & 0x7fff) < 0x7c00) d = piso_fp16_to_fp32(h);
                }
                long l = d != 0.0f ? lrintf((float)w[a] / d) : 0;
                l = l < lo ? lo : l > hi ? hi : l;
                float qv = (float)l * d;
                ref[i * D + a] = qv;
                double e = (w[a] - qv) / R[a * D + a];
                for (int64_t b = a + 1; b < D; b++) w[b] -= e * R[a * D + b];
            }
        }
        int64_t mism = 0;
        for (int64_t k = 0; k < N * D; k++) mism += deq[k] != ref[k];
        CHECK(mism == 0, "%s: %lld of %lld values differ from the naive block GPTQ", (t == GGML_T_Q8_0 ? "Q8_0" : "Q4_0"),
              (long long)mism, (long long)(N * D));
    }
    free(W), free(H), free(hdiag), free(deq), free(ref), free(R), free(w), free(perm), free(q);
}

/* The rounding table: every name maps back to its value, and the error-correcting ones have a
 * layer function. */
static void test_rounding_table(void) {
    for (int r = 0; r < PISO_ROUND_COUNT; r++) {
        enum piso_rounding back;
        CHECK(piso_rounding_from_name(piso_rounding_name((enum piso_rounding)r), &back) == 0 && (int)back == r,
              "rounding %d", r);
        CHECK((piso_rounding_layer((enum piso_rounding)r) != NULL) == (r != PISO_ROUND_RTN), "layer fn of %d", r);
    }
    enum piso_rounding x;
    CHECK(piso_rounding_from_name("nope", &x) == -1, "unknown name");
    CHECK(piso_rounding_layer(PISO_ROUND_GPTQ) == piso_gptq_layer, "gptq entry");
}

int main(void) {
    piso_set_quiet(1);
    test_gptq_codes();
    test_gguf_block_path();
    test_rounding_table();
    return test_finish();
}
