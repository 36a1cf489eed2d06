/* Qronos (algorithms.md §4) in its cheap form: an exact least-squares correction of the first
 * column against the float target X w, a ridge least-squares re-fit of the remaining columns (two
 * triangular products with the factor R₁ of the inverse, (H + λI)[1:,1:]⁻¹ = R₁ᵀR₁), then
 * the engine's sweep (ec_engine.h, grid rounder) from column 1 with the downdated inverse of H + λI. */
#include "piso/solve.h"
#include "piso/linalg.h"
#include "quant/ec_engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int piso_qronos_layer(const struct piso_ec_problem *p, const struct piso_ec_opts *o,
                      struct piso_layer_result *r, struct piso_ec_stats *st) {
    struct piso_ec_work w;
    if (piso_ec_setup(&w, p, o, 1)) return -1;
    const struct piso_ec_rounder *rd = &piso_ec_grid_rounder;
    int64_t N = w.N, D = w.D, D1 = D - 1;
    double *R = D1 > 0 ? malloc(sizeof(double) * D1 * D1) : NULL;
    double *rhs = D1 > 0 ? malloc(sizeof(double) * N * D1) : NULL;
    float *T = D1 > 0 ? malloc(sizeof(float) * N * D1) : NULL;
    int rc = -1;
    if (D1 > 0 && (!R || !rhs || !T)) {
        piso_errorf("out of memory for Qronos on a [%lld, %lld] layer", (long long)N, (long long)D);
        goto done;
    }
    double smax = piso_la_power_iteration(w.Hp, D, 30);
    if (!(smax > 0)) smax = 1.0; /* all inputs dead */
    double lambda = (o->damp >= 0 ? o->damp : 1e-6) * smax;
    if (rd->begin_layer(NULL, &w)) goto done;
    /* Step 1: the least-squares value of column 0 given the other (float) columns,
     * w0' = ((G w)_0 − Σ_{j>0} H_0j v_j) / H_00, then quantize it. */
    const float *H0 = w.Hp, *G0 = w.Gp;
    for (int64_t i = 0; i < N; i++) {
        double t = 0;
        const float *wo = w.Wo + i * D, *wc = w.Wc + i * D;
        for (int64_t j = 0; j < D; j++) t += (double)G0[j] * wo[j];
        for (int64_t j = 1; j < D; j++) t -= (double)H0[j] * wc[j];
        w.Wc[i * D] = H0[0] > 0 ? (float)(t / H0[0]) : 0.0f;
    }
    if (rd->begin_group(NULL, &w, 0)) goto done;
    for (int64_t i = 0; i < N; i++) w.Wc[i * D] = rd->round_column(NULL, &w, i, 0, w.Wc[i * D]);

    if (D1 > 0) {
        /* (H + λI)[1:,1:]⁻¹ and its upper Cholesky factor R₁, λ relative to σ_max of the whole H */
        const struct piso_la_damping damp = {PISO_LA_DAMP_GIVEN, o->damp >= 0 ? o->damp : 1e-6, 8, smax};
        struct piso_la_damped dd;
        /* wide: M₁ with (H + λI)[1:,1:] = M₁M₁ᵀ (no inverse); else the inverse factor R₁ */
        const int ul = D1 >= PISO_EC_UL_MIN;
        if (ul ? piso_la_damped_ul_factor(w.Hp + D + 1, D1, D, &damp, "Qronos", R, &dd)
               : piso_la_damped_inverse_factor(w.Hp + D + 1, D1, D, &damp, "Qronos", R, NULL, &dd))
            goto done;
        lambda = dd.lambda;
        /* Re-fit the rest: v₁ = argmin ‖Xw − x̃₀q₀ − X̃₁v‖² + λ‖v − w₁‖²
         *                    = (H + λI)[1:,1:]⁻¹ (G[1:,:] w + λ w₁ − H[1:,0] q₀). */
        piso_la_sgemm(0, 1, N, D1, D, 1.0f, w.Wo, D, w.Gp + D, D, 0.0f, T, D1);
        for (int64_t i = 0; i < N; i++) {
            double q0 = w.Wc[i * D];
            for (int64_t a = 0; a < D1; a++)
                rhs[i * D1 + a] = (double)T[i * D1 + a] + lambda * w.Wo[i * D + a + 1] - q0 * w.Hp[(a + 1) * D];
        }
        /* rows of rhs times (H + λI)[1:,1:]⁻¹ = RᵀR = M⁻ᵀM⁻¹: two triangular products or solves */
        if (ul) {
            piso_la_trsm_right_upper_op(R, D1, 1, rhs, N, D1);
            piso_la_trsm_right_upper_op(R, D1, 0, rhs, N, D1);
        } else {
            piso_la_trmm_right_upper(R, D1, 1, rhs, N, D1);
            piso_la_trmm_right_upper(R, D1, 0, rhs, N, D1);
        }
        for (int64_t i = 0; i < N; i++)
            for (int64_t a = 0; a < D1; a++) w.Wc[i * D + a + 1] = (float)rhs[i * D1 + a];
        /* Then the engine on columns 1.. with R₁. */
        if (ul ? piso_ec_sweep_ul(&w, R, 1, rd, NULL) : piso_ec_sweep(&w, R, 1, rd, NULL)) goto done;
    }
    if (piso_ec_finish(&w, p, r)) goto done;
    if (st) {
        st->loss = 0;
        for (int64_t i = 0; i < N; i++) st->loss += w.row_loss[i];
        st->lambda = lambda, st->dead_columns = w.dead;
    }
    rc = 0;
done:
    free(R), free(rhs), free(T), piso_ec_free(&w);
    return rc;
}
