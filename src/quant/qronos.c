/* Qronos (algorithms.md §4) in its cheap form: an exact least-squares correction of the first
 * column against the float target X w, a ridge least-squares re-fit of the remaining columns, then
 * GPTQ-style error diffusion with the downdated inverse of H + λI. */
#include "piso/solve.h"
#include "quant/ec_internal.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Largest eigenvalue of the symmetric PSD matrix A [n, n] by 30 power iterations from the
 * all-ones vector (deterministic). */
static double sigma_max(const float *A, int64_t n) {
    double *v = malloc(sizeof(double) * n), *y = malloc(sizeof(double) * n);
    double sig = 0;
    if (!v || !y) goto done;
    for (int64_t i = 0; i < n; i++) v[i] = 1.0 / sqrt((double)n);
    for (int it = 0; it < 30; it++) {
        double nrm = 0;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++) {
            double s = 0;
            for (int64_t j = 0; j < n; j++) s += (double)A[i * n + j] * v[j];
            y[i] = s;
        }
        for (int64_t i = 0; i < n; i++) nrm += y[i] * y[i]; /* serial: fixed order */
        nrm = sqrt(nrm);
        sig = nrm;
        if (!(nrm > 0)) break;
        for (int64_t i = 0; i < n; i++) v[i] = y[i] / nrm;
    }
done:
    free(v), free(y);
    return sig;
}

int piso_qronos_layer(const struct piso_ec_problem *p, const struct piso_ec_opts *o,
                      struct piso_layer_result *r, struct piso_ec_stats *st) {
    struct ec_work w;
    if (ec_setup(&w, p, o)) return -1;
    int64_t N = w.N, D = w.D, D1 = D - 1;
    double *Hd = malloc(sizeof(double) * D * D);
    double *R = malloc(sizeof(double) * D * D);
    double *iH1 = D1 > 0 ? malloc(sizeof(double) * D1 * D1) : NULL;
    double *rhs = D1 > 0 ? malloc(sizeof(double) * N * D1) : NULL, *v1 = D1 > 0 ? malloc(sizeof(double) * N * D1) : NULL;
    float *T = D1 > 0 ? malloc(sizeof(float) * N * D1) : NULL;
    int rc = -1;
    if (!Hd || !R || (D1 > 0 && (!iH1 || !rhs || !v1 || !T))) {
        piso_errorf("out of memory for Qronos on a [%lld, %lld] layer", (long long)N, (long long)D);
        goto done;
    }
    double smax = sigma_max(w.Hp, D);
    if (!(smax > 0)) smax = 1.0; /* all inputs dead */
    double lambda = (o->damp >= 0 ? o->damp : 1e-6) * smax;
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
    if (o->interleave == PISO_INTERLEAVE_GROUP) ec_group_scales(&w, 0);
    for (int64_t i = 0; i < N; i++) w.Wc[i * D] = ec_quantize(&w, i, 0);

    if (D1 > 0) {
        /* (H + λI)[1:,1:]⁻¹ (the downdated inverse) and its upper Cholesky factor R₁ for GPTQ. */
        for (int attempt = 0;; attempt++) {
            for (int64_t a = 0; a < D1; a++)
                for (int64_t b = 0; b < D1; b++) Hd[a * D1 + b] = w.Hp[(a + 1) * D + b + 1];
            for (int64_t a = 0; a < D1; a++) {
                if (!(Hd[a * D1 + a] > 0)) Hd[a * D1 + a] = 1.0; /* dead input */
                Hd[a * D1 + a] += lambda;
            }
            if (ec_chol_inverse_upper(Hd, (int)D1, iH1, R) == 0) break;
            if (attempt >= 8) {
                piso_errorf("Qronos: H + λI is not positive definite even with λ = %g", lambda);
                goto done;
            }
            lambda = lambda > 0 ? lambda * 10 : 1e-6 * smax;
        }
        /* Re-fit the rest: v₁ = argmin ‖Xw − x̃₀q₀ − X̃₁v‖² + λ‖v − w₁‖²
         *                    = (H + λI)[1:,1:]⁻¹ (G[1:,:] w + λ w₁ − H[1:,0] q₀). */
        ec_sgemm(0, 1, (int)N, (int)D1, (int)D, 1.0f, w.Wo, (int)D,
                    w.Gp + D, (int)D, 0.0f, T, (int)D1);
        for (int64_t i = 0; i < N; i++) {
            double q0 = w.Wc[i * D];
            for (int64_t a = 0; a < D1; a++)
                rhs[i * D1 + a] = (double)T[i * D1 + a] + lambda * w.Wo[i * D + a + 1] - q0 * w.Hp[(a + 1) * D];
        }
        ec_dgemm(0, 0, (int)N, (int)D1, (int)D1, 1.0, rhs, (int)D1, iH1,
                    (int)D1, 0.0, v1, (int)D1);
        for (int64_t i = 0; i < N; i++)
            for (int64_t a = 0; a < D1; a++) w.Wc[i * D + a + 1] = (float)v1[i * D1 + a];
        /* Then GPTQ on columns 1.. with R₁. */
        if (ec_sweep(&w, R, 1)) goto done;
    }
    if (ec_finish(&w, p, r)) goto done;
    if (st) {
        st->loss = 0;
        for (int64_t i = 0; i < N; i++) st->loss += w.row_loss[i];
        st->lambda = lambda, st->dead_columns = w.dead;
    }
    rc = 0;
done:
    free(Hd), free(R), free(iH1), free(rhs), free(v1), free(T), ec_free(&w);
    return rc;
}
