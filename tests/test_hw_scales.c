/* Hardware block formats on the dense path (--format mxfp4 ... nvfp4): the exact PiSO sweep
 * restricted to representable scales (every power of two for MX, every UE4M3 value times the
 * tensor scale for NVFP4) against exhaustive evaluation of the objective at every representable
 * scale, with dense H, diagonal H and a cross target; the OCP / NVIDIA absmax recipes worked out
 * by hand; the NVFP4 tensor scale never worse than the recipe's on its objective. */
#include "harness.h"
#include "piso/quant.h"
#include "piso/solve.h"

#include <float.h>
#include <stdint.h>

static uint32_t rng = 99;
static float frand(void) {
    rng = rng * 1664525u + 1013904223u;
    return (float)((rng >> 8) & 0xffffff) / 8388608.0f - 1.0f;
}

static const char *const FORMATS[] = {"mxfp4", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp8_e4m3", "mxfp8_e5m2", "mxint8", "nvfp4"};

/* H = XᵀX (+ a little ridge) for 3n random tokens with uneven channel scales. */
static void make_h(float *H, int n) {
    float X[96 * 32], cs[32];
    for (int j = 0; j < n; j++) cs[j] = 0.3f + 2.0f * fabsf(frand());
    for (int t = 0; t < 3 * n; t++)
        for (int j = 0; j < n; j++) X[t * n + j] = cs[j] * frand();
    for (int a = 0; a < n; a++)
        for (int b = 0; b < n; b++) {
            double s = a == b ? 1e-3 : 0;
            for (int t = 0; t < 3 * n; t++) s += (double)X[t * n + a] * X[t * n + b];
            H[a * n + b] = (float)s;
        }
}

static int representable(const struct piso_grid *g, float s) {
    double lo, hi;
    piso_grid_scale_bracket(g, s, &lo, &hi);
    /* (NVFP4: code value × tensor scale, rounded once to fp32) */
    return fabs(lo - s) <= 1e-7 * s || fabs(hi - s) <= 1e-7 * s;
}

static void test_exhaustive(void) {
    for (size_t f = 0; f < sizeof FORMATS / sizeof FORMATS[0]; f++) {
        int bad = 0, bad_repr = 0, cases = 0;
        for (int rep = 0; rep < 40; rep++) {
            struct piso_grid g;
            CHECK(piso_grid_init(&g, FORMATS[f], 0) == 0, "%s: %s", FORMATS[f], piso_last_error());
            const int n = g.block;
            if (g.scale_set == PISO_SSET_UE4M3) g.scale_mult = rep % 2 ? 1.0f : 0.0173f;
            float w[32], H[32 * 32], hd[32];
            const float mag = ldexpf(1.0f, rep % 12 - 8);
            for (int i = 0; i < n; i++) w[i] = frand() * mag;
            if (rep % 4 == 0) /* weights on power-of-two rounding midpoints: scales on breakpoints */
                for (int i = 0; i < n; i++) w[i] = ldexpf((float)(i % 7) + 0.5f, rep % 5 - 4) * (i % 2 ? -1.0f : 1.0f);
            make_h(H, n);
            for (int i = 0; i < n; i++) hd[i] = H[i * n + i];
            double u[32]; /* a cross target: u = G·w with G a perturbed H */
            for (int i = 0; i < n; i++) {
                double s = 0;
                for (int j = 0; j < n; j++) s += (double)H[i * n + j] * (1.0 + 0.1 * (i == j)) * w[j];
                u[i] = s;
            }
            for (int kind = 0; kind < 3; kind++) {
                double E;
                float s;
                if (kind == 0) s = piso_solve_scale_dense(w, n, H, n, NULL, &g, 0, &E);
                else if (kind == 1) s = piso_solve_scale_dense(w, n, H, n, u, &g, 0, &E);
                else s = piso_solve_scale_diag(w, n, hd, NULL, &g, 0, &E);
                double best = DBL_MAX;
                for (int k = 0; k < piso_grid_scale_count(&g); k++) {
                    const float c = (float)piso_grid_scale_at(&g, k);
                    if (!(c > 0) || !isfinite(c)) continue;
                    double e;
                    if (kind == 2) {
                        e = 0;
                        for (int i = 0; i < n; i++) {
                            const double q = piso_grid_round(&g, w[i] / c, NULL), r = (double)w[i] - (double)c * q;
                            e += hd[i] * (r * r - (double)w[i] * w[i]); /* constant dropped as E does */
                        }
                    } else {
                        e = piso_objective_dense(w, n, H, n, kind ? u : NULL, &g, c);
                    }
                    if (e < best) best = e;
                }
                bad += E > best + 1e-9 * fabs(best) + 1e-30;
                bad_repr += !representable(&g, s);
                cases++;
            }
        }
        CHECK(bad == 0, "%s: %d of %d solves miss the exhaustive optimum over representable scales", FORMATS[f], bad, cases);
        CHECK(bad_repr == 0, "%s: %d scales not representable", FORMATS[f], bad_repr);
        printf("%-11s %d solves (dense, dense + cross target, diagonal) equal the exhaustive optimum\n", FORMATS[f], cases);
    }
}

static void test_recipes(void) {
    struct piso_grid g;
    float w[32] = {0};
    /* OCP MX: 2^(floor(log2 amax) − emax), emax = 2 (e2m1, e2m3), 4 (e3m2), 8 (e4m3), 15 (e5m2), 6 (int8) */
    w[5] = 5.0f; /* floor(log2 5) = 2 */
    piso_grid_init(&g, "mxfp4", 0);
    CHECK(piso_scale_absmax(w, 32, &g) == 1.0f && g.emax == 2, "mxfp4 recipe");
    piso_grid_init(&g, "mxfp6_e3m2", 0);
    CHECK(piso_scale_absmax(w, 32, &g) == 0.25f && g.emax == 4, "mxfp6_e3m2 recipe");
    piso_grid_init(&g, "mxfp8_e4m3", 0);
    CHECK(piso_scale_absmax(w, 32, &g) == 1.0f / 64 && g.emax == 8, "mxfp8_e4m3 recipe");
    piso_grid_init(&g, "mxfp8_e5m2", 0);
    CHECK(g.emax == 15 && piso_scale_absmax(w, 32, &g) == ldexpf(1, -13), "mxfp8_e5m2 recipe");
    piso_grid_init(&g, "mxint8", 0);
    CHECK(g.emax == 6 && piso_scale_absmax(w, 32, &g) == ldexpf(1, -4) && g.is_int && g.v[0] == -128, "mxint8 recipe");
    w[5] = 0.3f; /* floor(log2 0.3) = -2 */
    piso_grid_init(&g, "mxfp4", 0);
    CHECK(piso_scale_absmax(w, 32, &g) == ldexpf(1, -4), "mxfp4 recipe, 0.3");
    /* NVFP4: E4M3-RNE(amax/(6·mult))·mult: amax 6 → 1; 6·1.0625 → 1.0625 is the midpoint of 1 and
     * 1.125: ties to the even code (1.0 = 0x38); 6·1.07 → 1.125 */
    piso_grid_init(&g, "nvfp4", 0);
    w[5] = 6.0f;
    CHECK(piso_scale_absmax(w, 16, &g) == 1.0f, "nvfp4 recipe 1");
    w[5] = 6.0f * 1.0625f;
    CHECK(piso_scale_absmax(w, 16, &g) == 1.0f, "nvfp4 recipe tie to even");
    w[5] = 6.0f * 1.07f;
    CHECK(piso_scale_absmax(w, 16, &g) == 1.125f, "nvfp4 recipe 1.125");
    g.scale_mult = 0.5f;
    w[5] = 6.0f;
    CHECK(piso_scale_absmax(w, 16, &g) == 1.0f, "nvfp4 recipe with a tensor scale: E4M3(2)·0.5");
    w[5] = 6.0f * 1000;
    CHECK(piso_scale_absmax(w, 16, &g) == 224.0f, "nvfp4 recipe saturates at 448·mult");
}

static void test_tensor_scale(void) {
    const int N = 8, D = 64;
    float W[8 * 64], hd[64];
    for (int i = 0; i < N * D; i++) W[i] = frand() * 0.05f * (i % 13 == 0 ? 6.0f : 1.0f);
    for (int i = 0; i < D; i++) hd[i] = 0.5f + fabsf(frand());
    struct piso_grid g;
    piso_grid_init(&g, "nvfp4", 0);
    const float s = piso_nvfp4_tensor_scale(W, N, D, hd, &g), s0 = piso_grid_recipe_tensor_scale(W, N * D);
    /* the diag objective Σ h (w − ŵ)² with exact group scales at s vs the recipe (s0, absmax groups) */
    double e_piso = 0, e_rec = 0;
    struct piso_grid gp = g, gr = g;
    gp.scale_mult = s, gr.scale_mult = s0;
    for (int r = 0; r < N; r++)
        for (int j0 = 0; j0 < D; j0 += 16) {
            const float *w = W + r * D + j0;
            const float sp = piso_solve_scale_diag(w, 16, hd + j0, NULL, &gp, 0, NULL), sr = piso_scale_absmax(w, 16, &gr);
            for (int i = 0; i < 16; i++) {
                const double a = w[i] - sp * piso_grid_round(&g, w[i] / sp, NULL), b = w[i] - sr * piso_grid_round(&g, w[i] / sr, NULL);
                e_piso += hd[j0 + i] * a * a, e_rec += hd[j0 + i] * b * b;
            }
        }
    CHECK(e_piso <= e_rec, "NVFP4 tensor scale %g: objective %g above the recipe's %g (s0 %g)", s, e_piso, e_rec, s0);
    printf("NVFP4 tensor scale %.4g (recipe %.4g): diag objective %.4g vs recipe %.4g (ratio %.3f)\n", s, s0, e_piso, e_rec,
           e_piso / e_rec);
}

static void test_layer(void) {
    /* piso_quantize_layer with MX: the group is the block; other group sizes are refused */
    const int N = 4, D = 64;
    float W[4 * 64], H[64 * 64];
    for (int i = 0; i < N * D; i++) W[i] = frand();
    for (int a = 0; a < D; a++)
        for (int b = 0; b < D; b++) H[a * D + b] = a == b ? 1.0f + (float)(a % 3) : 0.0f;
    struct piso_layer_problem p = {N, D, W, H, NULL, NULL, 0};
    struct piso_quant_opts o = {.method = PISO_SCALE_PISO};
    piso_grid_init(&o.grid, "mxfp4", 0);
    struct piso_layer_result r;
    CHECK(piso_quantize_layer(&p, &o, &r) == 0 && r.n_groups == 2, "mxfp4 layer: %s", piso_last_error());
    int bad = 0;
    for (int k = 0; k < N * 2; k++) bad += !representable(&o.grid, r.scales[k]);
    CHECK(bad == 0, "mxfp4 layer: %d scales are not powers of two", bad);
    piso_layer_result_free(&r);
    o.group = 16;
    CHECK(piso_quantize_layer(&p, &o, &r) != 0 && strstr(piso_last_error(), "blocks of 32"), "group 16 refused for mxfp4");
    piso_grid_init(&o.grid, "nvfp4", 0);
    o.group = 0;
    CHECK(piso_quantize_layer(&p, &o, &r) == 0 && r.n_groups == 4 && r.tensor_scale > 0, "nvfp4 layer");
    piso_layer_result_free(&r);
    /* a ragged layer (D = 40: blocks 16, 16 and a last one of 8) through the RTN entry point: one
     * tensor scale for the whole tensor, every block scale a UE4M3 value times it */
    float W2[4 * 40], H2[40 * 40];
    for (int i = 0; i < 4 * 40; i++) W2[i] = frand() * 0.03f;
    for (int a = 0; a < 40; a++)
        for (int b = 0; b < 40; b++) H2[a * 40 + b] = a == b ? 1.0f : 0.0f;
    struct piso_layer_problem p2 = {4, 40, W2, H2, NULL, NULL, 0};
    CHECK(piso_rtn_layer(&p2, &o, &r) == 0 && r.n_groups == 3 && r.tensor_scale > 0, "nvfp4 ragged layer: %s", piso_last_error());
    int off_grid = 0;
    struct piso_grid gt = o.grid;
    gt.scale_mult = r.tensor_scale;
    for (int k = 0; k < 4 * 3 && r.scales; k++) off_grid += !representable(&gt, r.scales[k]);
    CHECK(off_grid == 0, "nvfp4 ragged layer: %d block scales are not UE4M3 x the tensor scale %g", off_grid, r.tensor_scale);
    piso_layer_result_free(&r);
}

int main(void) {
    test_exhaustive();
    test_recipes();
    test_tensor_scale();
    test_layer();
    return test_finish();
}
