/* Exact block scales: the sweep against brute force (a dense scan over real d, and every finite
 * fp16 value of d), and piso's quantizer against llama.cpp's rule on the weighted objective. */
#include "harness.h"
#include "piso/block_scales.h"
#include "piso/ggml_quants.h"
#include "piso/gguf.h"

static uint32_t rng = 777;
static float frand(void) {
    rng = rng * 1664525u + 1013904223u;
    return (float)((rng >> 8) & 0xffffff) / 8388608.0f - 1.0f;
}
static float gauss(void) {
    float s = 0;
    for (int k = 0; k < 6; k++) s += frand();
    return s * 0.7f;
}

/* Σ w (x − d·clamp(round(x/d)))² evaluated independently in double for a real d */
static double brute_error(const float *x, const float *w, int n, int lo, int hi, double d) {
    double e = 0;
    for (int i = 0; i < n; i++) {
        double l = d != 0 ? nearbyint(x[i] / d) : 0;
        if (l < lo) l = lo;
        if (l > hi) l = hi;
        double r = x[i] - d * l;
        e += w[i] * r * r;
    }
    return e;
}

static void test_sweep_vs_brute(void) {
    const int levels[3][2] = {{-8, 7}, {-16, 15}, {-127, 127}};
    int worse_real = 0, worse16 = 0, n_cases = 0;
    for (int lv = 0; lv < 3; lv++)
        for (int rep = 0; rep < 6; rep++) {
            float x[32], w[32];
            float amax = 0;
            for (int i = 0; i < 32; i++) {
                x[i] = gauss() * (rep % 2 ? 0.02f : 1.0f);
                if (rep == 5 && i == 3) x[i] *= 8; /* an outlier */
                w[i] = expf(1.5f * gauss());
                amax = fmaxf(amax, fabsf(x[i]));
            }
            const int lo = levels[lv][0], hi = levels[lv][1];
            uint16_t d16;
            int L[32];
            double E16, Ereal;
            CHECK(piso_block_sweep(x, w, 32, lo, hi, 1, &d16, L, &E16, &Ereal) == 0, "sweep");
            /* dense real scan over d in ±[amax/(4 hi), 4 amax/hi] */
            double best_real = 1e300;
            for (int k = 0; k <= 20000; k++) {
                double d = (amax / (4.0 * hi)) * pow(16.0, k / 20000.0);
                best_real = fmin(best_real, fmin(brute_error(x, w, 32, lo, hi, d), brute_error(x, w, 32, lo, hi, -d)));
            }
            worse_real += Ereal > best_real * (1 + 1e-9);
            /* every finite fp16 d, both signs */
            double best16 = brute_error(x, w, 32, lo, hi, 0);
            for (int h = 1; h < 0x7c00; h++) {
                double d = piso_fp16_to_fp32((uint16_t)h);
                if (d < amax / (4.0 * hi) || d > 4 * amax) continue;
                best16 = fmin(best16, fmin(brute_error(x, w, 32, lo, hi, d), brute_error(x, w, 32, lo, hi, -d)));
            }
            worse16 += E16 > best16 * (1 + 1e-9);
            CHECK(E16 >= Ereal * (1 - 1e-9), "fp16 optimum below the real optimum");
            /* the returned levels are RTN for the returned d and give E16 */
            CHECK_NEAR(brute_error(x, w, 32, lo, hi, piso_fp16_to_fp32(d16)), E16, 1e-9 * (E16 + 1e-30), "E16 consistent");
            n_cases++;
        }
    CHECK(worse_real == 0, "%d of %d blocks: sweep lost to the dense real scan", worse_real, n_cases);
    CHECK(worse16 == 0, "%d of %d blocks: sweep lost to the exhaustive fp16 scan", worse16, n_cases);
}

static void test_edge_cases(void) {
    float x[32] = {0}, w[32] = {0};
    uint16_t d16 = 1;
    int L[32];
    double E16 = -1, Er = -1;
    CHECK(piso_block_sweep(x, w, 32, -8, 7, 1, &d16, L, &E16, &Er) == 0, "zero block");
    CHECK(E16 == 0 && Er == 0, "zero block error %g %g", E16, Er);
    for (int i = 0; i < 32; i++) x[i] = (float)(i - 16);
    /* all-zero weights: treated as plain SSE, so the scale is still sensible (not 0, not NaN) */
    CHECK(piso_block_sweep(x, w, 32, -8, 7, 1, &d16, L, &E16, &Er) == 0, "dead inputs");
    CHECK(d16 != 0 && isfinite(piso_fp16_to_fp32(d16)), "dead inputs scale %04x", d16);
    /* integers -16..15 fit Q5_0's levels exactly with d = ±1 */
    for (int i = 0; i < 32; i++) w[i] = 1;
    CHECK(piso_block_sweep(x, w, 32, -16, 15, 1, &d16, L, &E16, &Er) == 0 && E16 == 0, "exact fit E=%g", E16);
}

static double total_error(int type, const uint8_t *q, const float *x, const float *w, int nrows, int ncols) {
    const int be = piso_ggml_block_elems(type), bb = piso_ggml_block_bytes(type);
    double e = 0;
    for (int r = 0; r < nrows; r++)
        for (int b = 0; b < ncols / be; b++)
            e += piso_block_error(type, q + ((size_t)r * (ncols / be) + b) * bb, x + (size_t)r * ncols + b * be, w + b * be);
    return e;
}

static void test_piso_vs_ref(void) {
    enum { R = 4, C = 512 };
    static float x[R * C], w[C], ones[C];
    static uint8_t qa[R * C * 2], qb[R * C * 2];
    for (int i = 0; i < R * C; i++) x[i] = gauss() * 0.02f;
    for (int j = 0; j < C; j++) w[j] = expf(1.5f * gauss()), ones[j] = 1;
    const int ts[8] = {GGML_T_Q8_0, GGML_T_Q4_0, GGML_T_Q4_1, GGML_T_Q5_0, GGML_T_Q5_1, GGML_T_Q4_K, GGML_T_Q5_K, GGML_T_Q6_K};
    for (int k = 0; k < 8; k++) {
        /* with an importance: objective Σ h (Δw)² */
        piso_ggml_quantize_piso(ts[k], x, qa, R, C, w);
        piso_ggml_quantize_ref(ts[k], x, qb, R, C, w);
        double ep = total_error(ts[k], qa, x, w, R, C), er = total_error(ts[k], qb, x, w, R, C);
        CHECK(ep <= er, "type %d imatrix: piso %g > llamacpp-ref %g", ts[k], ep, er);
        printf("type %2d  weighted error  piso/ref = %.4f\n", ts[k], ep / er);
        /* without: plain SSE against the default path */
        piso_ggml_quantize_piso(ts[k], x, qa, R, C, NULL);
        piso_ggml_quantize_ref(ts[k], x, qb, R, C, NULL);
        ep = total_error(ts[k], qa, x, ones, R, C), er = total_error(ts[k], qb, x, ones, R, C);
        CHECK(ep <= er, "type %d: piso %g > llamacpp-ref %g", ts[k], ep, er);
        printf("type %2d  plain SSE       piso/ref = %.4f\n", ts[k], ep / er);
    }
}

/* Dense calibration: on correlated inputs, GPTQ-interleaved blocks give a smaller layer output
 * error tr((W−Ŵ) H (W−Ŵ)ᵀ) than the per-block exact diagonal method with diag(H). */
static void test_gptq(void) {
    enum { N = 8, D = 64, T = 256 };
    static float X[T * D], H[D * D], W[N * D], Y[N * D];
    static uint8_t q[N * D * 2];
    for (int t = 0; t < T; t++) {
        float common = gauss();
        for (int j = 0; j < D; j++) X[t * D + j] = 0.8f * common + 0.3f * gauss() * (1 + (j % 7));
    }
    for (int i = 0; i < D; i++)
        for (int j = 0; j < D; j++) {
            double s = 0;
            for (int t = 0; t < T; t++) s += (double)X[t * D + i] * X[t * D + j];
            H[i * D + j] = (float)(s / T);
        }
    float hd[D];
    for (int j = 0; j < D; j++) hd[j] = H[j * D + j];
    for (int i = 0; i < N * D; i++) W[i] = gauss() * 0.05f;
    const int ts[4] = {GGML_T_Q4_0, GGML_T_Q8_0, GGML_T_Q4_1, GGML_T_Q5_0};
    for (int k = 0; k < 4; k++) {
        double e[2];
        for (int v = 0; v < 2; v++) {
            size_t nb = v ? piso_ggml_quantize_gptq(ts[k], W, q, N, D, H) : piso_ggml_quantize_piso(ts[k], W, q, N, D, hd);
            CHECK(nb == (size_t)N * D / 32 * piso_ggml_block_bytes(ts[k]), "bytes %zu", nb);
            for (int r = 0; r < N; r++) piso_ggml_dequantize_row(ts[k], q + r * nb / N, Y + r * D, D);
            e[v] = 0;
            for (int r = 0; r < N; r++)
                for (int i = 0; i < D; i++)
                    for (int j = 0; j < D; j++)
                        e[v] += (double)(W[r * D + i] - Y[r * D + i]) * H[i * D + j] * (W[r * D + j] - Y[r * D + j]);
        }
        printf("type %2d  layer output error  gptq/diag = %.4f\n", ts[k], e[1] / e[0]);
        CHECK(e[1] < e[0], "type %d: GPTQ %g >= diagonal %g", ts[k], e[1], e[0]);
    }
}

/* --weighting blend: on the blended objective Σ h·sqrt(σ²+x²)·(Δx)² (σ² the row's mean square),
 * piso still never loses to llama.cpp's imatrix rule (which optimises that same weighting). */
static void test_blend(void) {
    enum { C = 256 };
    static float x[C], h[C], wb[C];
    static uint8_t qa[C * 2], qb[C * 2];
    double s2 = 0;
    for (int i = 0; i < C; i++) x[i] = gauss() * 0.03f, h[i] = expf(gauss()), s2 += (double)x[i] * x[i];
    s2 /= C;
    for (int i = 0; i < C; i++) wb[i] = h[i] * sqrtf((float)s2 + x[i] * x[i]);
    const int ts[4] = {GGML_T_Q4_0, GGML_T_Q5_0, GGML_T_Q4_1, GGML_T_Q5_1};
    for (int k = 0; k < 4; k++) {
        piso_ggml_quantize_piso_ex(ts[k], x, qa, 1, C, h, 1);
        piso_ggml_quantize_ref(ts[k], x, qb, 1, C, h);
        double ep = total_error(ts[k], qa, x, wb, 1, C), er = total_error(ts[k], qb, x, wb, 1, C);
        printf("type %2d  blended objective piso/ref = %.4f\n", ts[k], ep / er);
        CHECK(ep <= er, "type %d blend: piso %g > ref %g", ts[k], ep, er);
    }
}

int main(void) {
    test_blend();
    test_gptq();
    test_sweep_vs_brute();
    test_edge_cases();
    test_piso_vs_ref();
    return test_finish();
}
