/* Cholesky, SPD inverse, the damped inverse factor of the error-correcting solvers, power iteration.
 * First version: LAPACK pinned to one thread (its threaded kernels change results with the thread
 * count); the redesign's linalg engineer replaces it with a blocked parallel factorization. */
#include "piso/common.h"
#include "piso/linalg.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int64_t piso_la_cholesky_upper(double *A, int64_t n) {
    int saved = openblas_get_num_threads();
    openblas_set_num_threads(1);
    lapack_int info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', (lapack_int)n, A, (lapack_int)n);
    openblas_set_num_threads(saved);
    if (info != 0) return info > 0 ? (int64_t)info : 1;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < i; j++) A[i * n + j] = 0;
    return 0;
}

int64_t piso_la_spd_inverse(double *A, int64_t n) {
    int saved = openblas_get_num_threads();
    openblas_set_num_threads(1);
    lapack_int info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', (lapack_int)n, A, (lapack_int)n);
    if (info == 0) info = LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'L', (lapack_int)n, A, (lapack_int)n);
    openblas_set_num_threads(saved);
    if (info != 0) return info > 0 ? (int64_t)info : 1;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i + 1; j < n; j++) A[i * n + j] = A[j * n + i];
    return 0;
}

double piso_la_power_iteration(const float *A, int64_t n, int iters) {
    double *v = malloc(sizeof(double) * (size_t)n), *y = malloc(sizeof(double) * (size_t)n);
    double sig = 0;
    if (!v || !y) goto done;
    for (int64_t i = 0; i < n; i++) v[i] = 1.0 / sqrt((double)n);
    for (int it = 0; it < iters; it++) {
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

int piso_la_damped_inverse_factor(const float *H, int64_t n, int64_t ldh, const struct piso_la_damping *damp,
                                  const char *what, double *R, double *inv, struct piso_la_damped *out) {
    struct piso_la_damped d = {0};
    for (int64_t a = 0; a < n; a++) d.dead += !(H[a * ldh + a] > 0);
    if (damp->ref == PISO_LA_DAMP_MEAN_DIAG) {
        for (int64_t a = 0; a < n; a++) d.ref += H[a * ldh + a] > 0 ? H[a * ldh + a] : 1.0;
        d.ref = n > 0 ? d.ref / (double)n : 1.0;
    } else {
        /* σ_max of the leading block; a copy when it is strided */
        float *Hc = ldh == n ? NULL : malloc(sizeof(float) * (size_t)(n * n));
        if (ldh != n && !Hc) return piso_errorf("%s: out of memory for a [%lld, %lld] matrix", what, (long long)n, (long long)n);
        if (Hc)
            for (int64_t a = 0; a < n; a++) memcpy(Hc + a * n, H + a * ldh, sizeof(float) * (size_t)n);
        d.ref = piso_la_power_iteration(Hc ? Hc : H, n, 30);
        free(Hc);
        if (!(d.ref > 0)) d.ref = 1.0; /* all inputs dead */
    }
    d.lambda = damp->factor * d.ref;
    for (;; d.retries++) {
        for (int64_t a = 0; a < n; a++)
            for (int64_t b = 0; b < n; b++) R[a * n + b] = H[a * ldh + b];
        for (int64_t a = 0; a < n; a++) {
            if (!(R[a * n + a] > 0)) R[a * n + a] = 1.0; /* dead input */
            R[a * n + a] += d.lambda;
        }
        if (piso_la_spd_inverse(R, n) == 0) {
            if (inv) memcpy(inv, R, sizeof(double) * (size_t)(n * n));
            if (piso_la_cholesky_upper(R, n) == 0) break;
        }
        if (d.retries >= damp->max_retries)
            return piso_errorf("%s: H + λI is not positive definite even with λ = %g", what, d.lambda);
        d.lambda = d.lambda > 0 ? d.lambda * 10 : 1e-6 * d.ref;
    }
    if (out) *out = d;
    return 0;
}
