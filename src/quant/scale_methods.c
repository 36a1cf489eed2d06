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
    if (!(m > 0)) return 1.0f;
    float s = m / piso_grid_maxabs(g);
    return (s > 0 && isfinite(s)) ? s : 1.0f;
}

float piso_scale_mse_grid(const float *w, int n, const struct piso_grid *g) {
    float s_max = piso_scale_absmax(w, n, g);
    float best_s = s_max;
    double best_e = INFINITY;
    for (int k = 1; k <= 20; k++) {
        float s = s_max * (float)k / 20.0f;
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
