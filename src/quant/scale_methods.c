/* Data-free baselines (absmax, the 20-point mse grid search) and the scale method names. */
#include "piso/quant.h"

#include <math.h>
#include <string.h>

static const char *const method_names[PISO_SCALE_COUNT] = {
    "absmax", "mse-grid", "piso-datafree", "piso-diag", "piso", "piso-seq",
};

int piso_scale_method_from_name(const char *name, enum piso_scale_method *out) {
    for (int m = 0; m < PISO_SCALE_COUNT; m++)
        if (name && !strcmp(name, method_names[m])) {
            *out = (enum piso_scale_method)m;
            return 0;
        }
    return piso_errorf("unknown scale method '%s' (absmax, mse-grid, piso-datafree, piso-diag, piso, "
                       "piso-seq)", name ? name : "(null)");
}

const char *piso_scale_method_name(enum piso_scale_method m) {
    return (m >= 0 && m < PISO_SCALE_COUNT) ? method_names[m] : "?";
}

float piso_scale_absmax(const float *w, int n, const struct piso_grid *g) {
    float m = 0;
    for (int i = 0; i < n; i++) m = fmaxf(m, fabsf(w[i]));
    if (!(m > 0)) return g->scale_set ? piso_grid_recipe_scale(g, 0) : 1.0f;
    if (g->scale_set) return piso_grid_recipe_scale(g, m); /* the OCP / NVIDIA recipe */
    float s = m / piso_grid_maxabs(g);
    return (s > 0 && isfinite(s)) ? s : 1.0f;
}

float piso_scale_mse_grid(const float *w, int n, const struct piso_grid *g) {
    float s_max = piso_scale_absmax(w, n, g);
    float best_s = s_max;
    double best_e = INFINITY;
    for (int k = 1; k <= 20; k++) {
        float s = s_max * (float)k / 20.0f;
        if (g->scale_set) { /* the nearest representable scale */
            double lo, hi;
            piso_grid_scale_bracket(g, s, &lo, &hi);
            s = (float)(lo > 0 && (s - lo <= hi - s || !isfinite(hi)) ? lo : hi);
        }
        double e = 0;
        for (int i = 0; i < n; i++) {
            double r = (double)w[i] - (double)s * piso_grid_round(g, w[i] / s, NULL);
            e += r * r;
        }
        if (e < best_e) { /* strict: ties keep the smaller scale, deterministically */
            best_e = e;
            best_s = s;
        }
    }
    return best_s;
}

float piso_nvfp4_tensor_scale(const float *W, int64_t N, int64_t D, const float *hdiag, const struct piso_grid *g) {
    if (g->scale_set != PISO_SSET_UE4M3) return 1.0f;
    float amax = 0;
    for (int64_t i = 0; i < N * D; i++) amax = fmaxf(amax, fabsf(W[i]));
    const float s0 = amax / (6.0f * 448.0f);
    float best_s = 1.0f;
    double best = INFINITY;
    for (int i = -1; i < 8; i++) {
        const float s = i < 0 ? 1.0f : s0 * exp2f((float)i / 32.0f);
        if (!(s > 0) || !isfinite(s)) continue;
        struct piso_grid gs = *g;
        gs.scale_mult = s;
        double tot = 0;
        int oom = 0;
#pragma omp parallel for schedule(static) reduction(+ : tot) reduction(| : oom)
        for (int64_t r = 0; r < N; r++) {
            double e = 0;
            for (int64_t j0 = 0; j0 < D; j0 += 16) { /* a shorter last group counts as it is */
                const float *w = W + r * D + j0;
                const float *h = hdiag ? hdiag + j0 : NULL;
                double E;
                const float sg = piso_solve_scale_diag(w, (int)(D - j0 < 16 ? D - j0 : 16), h, NULL, &gs, 0, &E);
                if (isnan(sg)) oom = 1; /* out of memory */
                e += E;
            }
            tot += e;
        }
        if (oom) return NAN;
        if (tot < best) best = tot, best_s = s;
    }
    return best_s;
}

float piso_grid_recipe_tensor_scale(const float *W, int64_t n) {
    float amax = 0;
    for (int64_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(W[i]));
    const float s = amax / (6.0f * 448.0f);
    return s > 0 && isfinite(s) ? s : 1.0f;
}
