/* piso's scales for Q2_K, Q3_K, MXFP4, NVFP4:
 *  - the weighted block objective Σ w (x − x̂)² of `piso` ≤ that of `llamacpp-ref` (llama.cpp's rule
 *    with the same importance) on every block of uniform and heavy-tailed rows, with and without
 *    importances;
 *  - the FP4 scale searches against brute force over every representable scale (all 255 E8M0
 *    exponents; all 127 UE4M3 codes), each element rounded by trying all 16 E2M1 values;
 *  - the NVFP4 tensor scale: never worse than NVIDIA's recipe (s0 = amax/(6·448), sub-block codes
 *    of amax/(6·s0)) nor than llama.cpp's rule (no tensor scale). */
#include "harness.h"
#include "piso/block_scales.h"
#include "piso/ggml_quants.h"
#include "piso/gguf.h"

#include <float.h>
#include <stdint.h>

static uint32_t rng = 77;
static float frand(void) {
    rng = rng * 1664525u + 1013904223u;
    return (float)((rng >> 8) & 0xffffff) / 8388608.0f - 1.0f;
}

/* uniform (kind 0) or heavy-tailed (kind 1: ratio of uniforms, a Cauchy-like tail) */
static void fill(float *x, int n, int kind, float mag) {
    for (int i = 0; i < n; i++) {
        float v = frand();
        if (kind == 1) v = v / (fabsf(frand()) + 0.03f) * 0.1f;
        x[i] = v * mag;
    }
}

static void test_piso_vs_ref(void) {
    const int types[4] = {GGML_T_Q2_K, GGML_T_Q3_K, GGML_T_MXFP4, GGML_T_NVFP4};
    const int nrow = 24, n = 512;
    float *x = malloc(sizeof(float) * nrow * n), h[512], ones[512];
    uint8_t *a = malloc((size_t)nrow * n), *b = malloc((size_t)nrow * n);
    for (int i = 0; i < n; i++) h[i] = (frand() + 1.1f) * (i % 7 == 0 ? 20.0f : 1.0f), ones[i] = 1.0f;
    for (int k = 0; k < 4; k++) {
        const int t = types[k], be = piso_ggml_block_elems(t), bb = piso_ggml_block_bytes(t);
        for (int kind = 0; kind < 2; kind++)
            for (int im = 0; im < 2; im++) {
                for (int r = 0; r < nrow; r++) fill(x + r * n, n, kind, r % 3 == 0 ? 0.02f : 1.0f);
                const float *w = im ? h : NULL;
                piso_ggml_quantize_piso(t, x, a, nrow, n, w);
                piso_ggml_quantize_ref(t, x, b, nrow, n, w);
                int worse = 0, better = 0, nblk = 0;
                double ep = 0, er = 0;
                for (int r = 0; r < nrow; r++)
                    for (int ib = 0; ib < n / be; ib++) {
                        const size_t off = ((size_t)r * (n / be) + ib) * bb;
                        const float *xb = x + r * n + ib * be, *wb = (im ? h : ones) + ib * be;
                        const double e1 = piso_block_error(t, a + off, xb, wb), e2 = piso_block_error(t, b + off, xb, wb);
                        worse += e1 > e2 * (1 + 1e-12);
                        better += e1 < e2 * (1 - 1e-9);
                        ep += e1, er += e2, nblk++;
                    }
                CHECK(worse == 0, "%s kind %d imatrix %d: piso worse than llamacpp-ref on %d of %d blocks",
                      piso_ggml_traits(t)->name, kind, im, worse, nblk);
                printf("%-6s %-12s imatrix %-3s: piso < ref on %3d of %3d blocks, total objective piso/ref = %.4f\n",
                       piso_ggml_traits(t)->name, kind ? "heavy-tailed" : "uniform", im ? "yes" : "no", better, nblk, ep / er);
                CHECK(better > 0, "%s: piso never better than llamacpp-ref (%d blocks)", piso_ggml_traits(t)->name, nblk);
            }
    }
    free(x), free(a), free(b);
}

/* Brute-force error of a block for scale d: each element takes the best of the 16 values. */
static double brute_error(const float *x, const float *w, int n, float d) {
    double e = 0;
    for (int i = 0; i < n; i++) {
        double best = DBL_MAX;
        for (int k = 0; k < 16; k++) {
            const double r = (double)x[i] - (double)((float)piso_mxfp4_values[k] * d);
            if (r * r < best) best = r * r;
        }
        e += (double)w[i] * best;
    }
    return e;
}

static void test_exhaustive(void) {
    int bad_mx = 0, bad_nv = 0, n_mx = 0, n_nv = 0;
    long evals_mx = 0, evals_nv = 0;
    for (int rep = 0; rep < 300; rep++) {
        float x[32], w[32];
        const float mag = ldexpf(1.0f, rep % 40 - 20);
        fill(x, 32, rep % 2, mag);
        for (int i = 0; i < 32; i++) w[i] = rep % 3 ? frand() + 1.0f : 1.0f;
        if (rep % 5 == 0) x[3] = 0, x[7] = 0;
        if (rep % 11 == 0) w[0] = 0, x[0] = 1e3f * mag; /* an ignored outlier */
        /* MXFP4: every E8M0 exponent */
        uint8_t e;
        double E;
        evals_mx += piso_mxfp4_best_exponent(x, w, 32, &e, &E);
        double bf = DBL_MAX;
        for (int k = 0; k <= 254; k++) bf = fmin(bf, brute_error(x, w, 32, piso_e8m0_half((uint8_t)k)));
        bad_mx += fabs(E - bf) > 1e-12 * fmax(bf, 1e-300) || fabs(brute_error(x, w, 32, piso_e8m0_half(e)) - bf) > 1e-12 * bf;
        n_mx++;
        /* NVFP4: every UE4M3 code of a 16-element sub-block, with and without a tensor scale */
        for (int ts = 0; ts < 2; ts++) {
            const float s = ts ? 0.0371f * mag : 1.0f;
            uint8_t c;
            evals_nv += piso_nvfp4_best_code(x, w, 16, s, &c, &E);
            bf = DBL_MAX;
            for (int k = 0; k <= 0x7E; k++) bf = fmin(bf, brute_error(x, w, 16, piso_ue4m3_to_fp32((uint8_t)k) * s));
            bad_nv += fabs(E - bf) > 1e-12 * fmax(bf, 1e-300);
            n_nv++;
        }
    }
    CHECK(bad_mx == 0, "MXFP4: %d of %d blocks miss the exhaustive optimum", bad_mx, n_mx);
    CHECK(bad_nv == 0, "NVFP4: %d of %d sub-blocks miss the exhaustive optimum", bad_nv, n_nv);
    printf("exhaustive check: MXFP4 %d blocks (%.1f exponents evaluated of 255), NVFP4 %d sub-blocks (%.1f codes of 127)\n",
           n_mx, (double)evals_mx / n_mx, n_nv, (double)evals_nv / n_nv);
}

static void test_nvfp4_tensor_scale(void) {
    const int nrow = 16, n = 256;
    float *x = malloc(sizeof(float) * nrow * n), *y = malloc(sizeof(float) * nrow * n);
    uint8_t *q = malloc((size_t)nrow * n);
    for (int kind = 0; kind < 2; kind++) {
        fill(x, nrow * n, kind, 0.05f);
        float s;
        CHECK(piso_nvfp4_quantize_tensor(x, q, nrow, n, NULL, 1, &s) == (size_t)nrow * n / 64 * 36, "bytes");
        piso_ggml_dequantize_row(GGML_T_NVFP4, q, y, (int64_t)nrow * n);
        double e_piso = 0, e_ref = 0, e_rec = 0;
        for (int i = 0; i < nrow * n; i++) e_piso += pow((double)x[i] - (double)y[i] * s, 2);
        piso_ggml_quantize_ref(GGML_T_NVFP4, x, q, nrow, n, NULL);
        piso_ggml_dequantize_row(GGML_T_NVFP4, q, y, (int64_t)nrow * n);
        for (int i = 0; i < nrow * n; i++) e_ref += pow((double)x[i] - y[i], 2);
        /* NVIDIA's recipe, written out here: s0 = amax/(6·448), codes E4M3(amax_b/(6·s0)), nearest E2M1 */
        float amax = 0;
        for (int i = 0; i < nrow * n; i++) amax = fmaxf(amax, fabsf(x[i]));
        const float s0 = amax / (6.0f * 448.0f);
        for (int b = 0; b < nrow * n; b += 16) {
            float ab = 0;
            for (int i = 0; i < 16; i++) ab = fmaxf(ab, fabsf(x[b + i]));
            /* the code's raw value ≈ ab/(6·s0); ue4m3_to_fp32 includes the ½ of the doubled table */
            const float d = piso_ue4m3_to_fp32(piso_fp32_to_ue4m3(ab / (6.0f * s0))) * s0;
            float ones[16];
            for (int i = 0; i < 16; i++) ones[i] = 1.0f;
            e_rec += brute_error(x + b, ones, 16, d);
        }
        CHECK(e_piso <= e_ref * (1 + 1e-9) && e_piso <= e_rec * (1 + 1e-9), "NVFP4 tensor: piso %g, llamacpp-ref %g, recipe %g",
              e_piso, e_ref, e_rec);
        printf("NVFP4 %-12s tensor scale %.4g: squared error piso %.5g, llamacpp-ref %.5g (ratio %.3f), NVIDIA recipe %.5g (ratio %.3f)\n",
               kind ? "heavy-tailed" : "uniform", s, e_piso, e_ref, e_piso / e_ref, e_rec, e_piso / e_rec);
    }
    free(x), free(y), free(q);
}

int main(void) {
    test_piso_vs_ref();
    test_exhaustive();
    test_nvfp4_tensor_scale();
    return test_finish();
}
