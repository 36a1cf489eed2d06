/* Cholesky, SPD inverse, the damped inverse factor of the error-correcting solvers, power iteration.
 *
 * Blocked and parallel, bit-identical for any thread count by construction: the matrix is cut into
 * fixed LA_TILE × LA_TILE tiles, every tile of a step is computed by one single-threaded BLAS/LAPACK
 * call on one thread, steps follow each other in a fixed order. OpenBLAS's own threading (which
 * changes results with the thread count) is never used. */
#include "piso/common.h"
#include "piso/linalg.h"

#include "linalg/linalg_internal.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Right-looking blocked upper Cholesky of A [n, n] (leading dimension n), in place, upper triangle
 * only. Per diagonal block k: factor it (LAPACK, one thread), solve the panel to its right in
 * column chunks in parallel, subtract the panel's outer product from the trailing upper triangle in
 * parallel (row tiles × column chunks; SYRK on diagonal tiles, GEMM elsewhere). */
static int64_t la_cholesky_blocked(double *A, int64_t n) {
    for (int64_t k0 = 0; k0 < n; k0 += LA_TILE) {
        int64_t kb = la_min(LA_TILE, n - k0), c0 = k0 + kb, rest = n - c0;
        double *Ukk = A + k0 * n + k0;
        /* row-major upper = column-major lower of the same memory */
        int pin = la_pin_begin();
        lapack_int info = LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'L', (lapack_int)kb, Ukk, (lapack_int)n);
        la_pin_end(pin);
        if (info != 0) return info > 0 ? k0 + (int64_t)info : k0 + 1;
        if (rest == 0) break;
        int64_t t = la_ntiles(rest), wide = la_ntiles_wide(rest);
        int par = (double)rest * rest * kb > LA_PAR_MIN_WORK;
#pragma omp parallel for schedule(dynamic, 1) if (par)
        for (int64_t tj = 0; tj < wide; tj++) { /* panel: U_kkᵀ · X = A[k, chunk tj] */
            int64_t j0 = c0 + tj * LA_WIDE, w = la_min(LA_WIDE, n - j0);
            int p = la_pin_begin();
            cblas_dtrsm(CblasRowMajor, CblasLeft, CblasUpper, CblasTrans, CblasNonUnit, (int)kb, (int)w, 1.0, Ukk,
                        (int)n, A + k0 * n + j0, (int)n);
            la_pin_end(p);
        }
        const double *P = A + k0 * n; /* the solved panel rows [kb, n] */
#pragma omp parallel for schedule(dynamic, 1) if (par)
        for (int64_t b = 0; b < t * wide; b++) {
            /* trailing update, row tile ti × the LA_WIDE columns chunk tc of its upper part: wide
             * GEMMs pack the panel less often than square tiles would */
            int64_t ti = b / wide, i0 = c0 + ti * LA_TILE, j0 = i0 + (b % wide) * LA_WIDE;
            if (j0 >= n) continue;
            int64_t h = la_min(LA_TILE, n - i0), w = la_min(LA_WIDE, n - j0);
            int p = la_pin_begin();
            if (j0 == i0) /* the diagonal tile's upper triangle by SYRK, the rest of the chunk by GEMM */
                cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)h, (int)kb, -1.0, P + i0, (int)n, 1.0,
                            A + i0 * n + i0, (int)n);
            int64_t g0 = j0 == i0 ? i0 + h : j0, gw = j0 + w - g0;
            if (gw > 0)
                cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)h, (int)gw, (int)kb, -1.0, P + i0, (int)n,
                            P + g0, (int)n, 1.0, A + i0 * n + g0, (int)n);
            la_pin_end(p);
        }
    }
    return 0;
}

int64_t piso_la_cholesky_upper(double *A, int64_t n) {
    int64_t info = la_cholesky_blocked(A, n);
    if (info != 0) return info;
#pragma omp parallel for schedule(static) if ((double)n * n > LA_PAR_MIN_WORK / 16)
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < i; j++) A[i * n + j] = 0;
    return 0;
}

/* V = U⁻¹ for the upper Cholesky factor U in A's upper triangle, column tiles J in parallel:
 * V[0:j1, J] by one triangular solve U·X = E_J that reads only U's upper triangle. V is stored
 * transposed (L = Vᵀ) in A's strict lower triangle, its diagonal tiles also as clean
 * lower-triangular copies in `diag` [tiles · LA_TILE², the diagonal only there]. Returns −1 when
 * out of memory. */
static int la_upper_inverse_to_lower(double *A, int64_t n, double *diag) {
    int64_t t = la_ntiles(n);
    int oom = 0, par = (double)n * n * n > LA_PAR_MIN_WORK;
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int64_t q = 0; q < t; q++) {
        int64_t tj = t - 1 - q; /* largest solves first */
        int64_t j0 = tj * LA_TILE, w = la_min(LA_TILE, n - j0), j1 = j0 + w;
        double *X = calloc((size_t)(j1 * w), sizeof(double)), *Dg = diag + tj * LA_TILE * LA_TILE;
        if (!X) {
#pragma omp atomic write
            oom = 1;
            continue;
        }
        for (int64_t c = 0; c < w; c++) X[(j0 + c) * w + c] = 1.0;
        int p = la_pin_begin();
        cblas_dtrsm(CblasRowMajor, CblasLeft, CblasUpper, CblasNoTrans, CblasNonUnit, (int)j1, (int)w, 1.0, A,
                    (int)n, X, (int)w);
        la_pin_end(p);
        for (int64_t c = 0; c < w; c++) {
            for (int64_t r = 0; r < j0 + c; r++) A[(j0 + c) * n + r] = X[r * w + c]; /* L[j, r] = V[r, j] */
            for (int64_t r = 0; r < w; r++) Dg[c * LA_TILE + r] = r <= c ? X[(j0 + r) * w + c] : 0.0;
        }
        free(X);
    }
    return oom ? -1 : 0;
}

int piso_la_inverse_diag_from_factor(double *A, int64_t n, double *d) {
    int64_t t = la_ntiles(n);
    double *diag = malloc(sizeof(double) * (size_t)(t * LA_TILE * LA_TILE));
    if (!diag) return -1;
    int rc = la_upper_inverse_to_lower(A, n, diag);
    free(diag);
    if (rc) return -1;
    /* d_r = V_rr² + Σ_{j > r} V_rj², V_rj = A[j, r] (the strict lower triangle), each sum in
     * increasing j whatever the thread: rows of A are read in chunks of r */
#pragma omp parallel for schedule(dynamic, 1) if ((double)n * n > LA_PAR_MIN_WORK / 16)
    for (int64_t c = 0; c < t; c++) {
        int64_t r0 = c * LA_TILE, r1 = la_min(n, r0 + LA_TILE);
        for (int64_t r = r0; r < r1; r++) d[r] = 1.0 / (A[r * n + r] * A[r * n + r]);
        for (int64_t j = r0 + 1; j < n; j++) {
            const double *row = A + j * n;
            for (int64_t r = r0; r < la_min(j, r1); r++) d[r] += row[r] * row[r];
        }
    }
    return 0;
}

/* A⁻¹ = V·Vᵀ with V = U⁻¹ (A = UᵀU). Phase 1: la_upper_inverse_to_lower. Phase 2, upper tiles
 * (I ≤ J) in parallel: A⁻¹[I, J] = Σ_{K ≥ J} L[K, I]ᵀ L[K, J] (tile K = J from the clean copy,
 * K > J one GEMM), written over U, which is no longer needed; then mirrored. */
int64_t piso_la_spd_inverse(double *A, int64_t n) {
    int64_t info = la_cholesky_blocked(A, n);
    if (info != 0) return info;
    int64_t t = la_ntiles(n);
    double *diag = malloc(sizeof(double) * (size_t)(t * LA_TILE * LA_TILE));
    if (!diag) return -1;
    int par = (double)n * n * n > LA_PAR_MIN_WORK;
    if (la_upper_inverse_to_lower(A, n, diag)) {
        free(diag);
        return -1;
    }
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int64_t b = 0; b < t * (t + 1) / 2; b++) {
        int64_t ti, tj;
        la_upper_tile(b, t, &ti, &tj);
        int64_t i0 = ti * LA_TILE, j0 = tj * LA_TILE;
        int64_t h = la_min(LA_TILE, n - i0), w = la_min(LA_TILE, n - j0), below = j0 + w;
        const double *Lji = ti == tj ? diag + ti * LA_TILE * LA_TILE : A + j0 * n + i0;
        int ldji = ti == tj ? LA_TILE : (int)n;
        int p = la_pin_begin();
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)h, (int)w, (int)w, 1.0, Lji, ldji,
                    diag + tj * LA_TILE * LA_TILE, LA_TILE, 0.0, A + i0 * n + j0, (int)n);
        if (below < n)
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)h, (int)w, (int)(n - below), 1.0,
                        A + below * n + i0, (int)n, A + below * n + j0, (int)n, 1.0, A + i0 * n + j0, (int)n);
        la_pin_end(p);
    }
    free(diag);
#pragma omp parallel for schedule(static) if ((double)n * n > LA_PAR_MIN_WORK / 16)
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < i; j++) A[i * n + j] = A[j * n + i];
    return 0;
}

/* J·A·J (J the reversal permutation) of a row-major n × n buffer is the buffer reversed. */
static void la_reverse(double *A, int64_t len) {
    for (int64_t i = 0, j = len - 1; i < j; i++, j--) {
        double x = A[i];
        A[i] = A[j], A[j] = x;
    }
}

/* One Cholesky of the reversed matrix instead of Cholesky + inverse + Cholesky of the inverse:
 * J·A·J = UᵀU gives A⁻¹ = J·U⁻¹·U⁻ᵀ·J = RᵀR with R = J·U⁻ᵀ·J, upper with a positive diagonal, so
 * R is the upper Cholesky factor of A⁻¹. U⁻¹ comes from la_upper_inverse_to_lower (transposed in
 * the strict lower triangle), so R is that lower triangle reversed once more. */
static int64_t la_inverse_factor_of_reversed(double *A, int64_t n) {
    int64_t info = la_cholesky_blocked(A, n);
    if (info != 0) return info;
    int64_t t = la_ntiles(n);
    double *diag = malloc(sizeof(double) * (size_t)(t * LA_TILE * LA_TILE));
    if (!diag) return -1;
    if (la_upper_inverse_to_lower(A, n, diag)) {
        free(diag);
        return -1;
    }
#pragma omp parallel for schedule(static) if ((double)n * n > LA_PAR_MIN_WORK / 16)
    for (int64_t i = 0; i < n; i++) { /* Vᵀ: diagonal from the clean copies, strict upper (U) cleared */
        A[i * n + i] = diag[(i / LA_TILE) * LA_TILE * LA_TILE + (i % LA_TILE) * (LA_TILE + 1)];
        for (int64_t j = i + 1; j < n; j++) A[i * n + j] = 0;
    }
    free(diag);
    la_reverse(A, n * n);
    return 0;
}

int64_t piso_la_inverse_factor(double *A, int64_t n) {
    la_reverse(A, n * n);
    return la_inverse_factor_of_reversed(A, n);
}

/* J·A·J = UᵀU gives A = (J·Uᵀ·J)(J·U·J) = M·Mᵀ with M = J·Uᵀ·J upper: U transposed, reversed. */
static int64_t la_ul_factor_of_reversed(double *A, int64_t n) {
    int64_t info = la_cholesky_blocked(A, n);
    if (info != 0) return info;
#pragma omp parallel for schedule(static) if ((double)n * n > LA_PAR_MIN_WORK / 16)
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < i; j++) A[i * n + j] = A[j * n + i], A[j * n + i] = 0;
    la_reverse(A, n * n);
    return 0;
}

int64_t piso_la_ul_factor(double *A, int64_t n) {
    la_reverse(A, n * n);
    return la_ul_factor_of_reversed(A, n);
}

/* y = A·v, LA_POWER_ROWS rows at a time so that each v[j] is loaded once for all of them and the
 * rows' sums (each in column order, as one row alone would sum) run as independent chains. */
#define LA_POWER_ROWS 8
static void la_matvec_f32_f64(const float *A, int64_t n, const double *v, double *y) {
    int64_t nb = (n + LA_POWER_ROWS - 1) / LA_POWER_ROWS;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nb; b++) {
        int64_t i0 = b * LA_POWER_ROWS, h = la_min(LA_POWER_ROWS, n - i0);
        if (h < LA_POWER_ROWS) {
            for (int64_t i = i0; i < i0 + h; i++) {
                double s = 0;
                for (int64_t j = 0; j < n; j++) s += (double)A[i * n + j] * v[j];
                y[i] = s;
            }
            continue;
        }
        double s[LA_POWER_ROWS] = {0};
        const float *a = A + i0 * n;
        for (int64_t j = 0; j < n; j++) {
            double vj = v[j];
            for (int r = 0; r < LA_POWER_ROWS; r++) s[r] += (double)a[r * n + j] * vj;
        }
        for (int r = 0; r < LA_POWER_ROWS; r++) y[i0 + r] = s[r];
    }
}

double piso_la_power_iteration(const float *A, int64_t n, int iters) {
    double *v = malloc(sizeof(double) * (size_t)n), *y = malloc(sizeof(double) * (size_t)n);
    double sig = 0;
    if (!v || !y) goto done;
    for (int64_t i = 0; i < n; i++) v[i] = 1.0 / sqrt((double)n);
    for (int it = 0; it < iters; it++) {
        double nrm = 0;
        la_matvec_f32_f64(A, n, v, y);
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

/* The damping and retries of piso_la_damped_inverse_factor; ul: M with H + λI = M·Mᵀ instead. */
static int la_damped_factor(const float *H, int64_t n, int64_t ldh, const struct piso_la_damping *damp,
                            const char *what, double *R, double *inv, int ul, struct piso_la_damped *out) {
    struct piso_la_damped d = {0};
    for (int64_t a = 0; a < n; a++) d.dead += !(H[a * ldh + a] > 0);
    if (damp->ref == PISO_LA_DAMP_MEAN_DIAG) {
        for (int64_t a = 0; a < n; a++) d.ref += H[a * ldh + a] > 0 ? H[a * ldh + a] : 1.0;
        d.ref = n > 0 ? d.ref / (double)n : 1.0;
    } else if (damp->ref == PISO_LA_DAMP_GIVEN) {
        d.ref = damp->ref_value > 0 ? damp->ref_value : 1.0;
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
    /* large n without the inverse: the one-Cholesky factor, on H + λI copied in reversed order */
    const int fast = ul || (!inv && n >= LA_FAST_FACTOR_MIN);
    for (;; d.retries++) {
        for (int64_t a = 0; a < n; a++)
            for (int64_t b = 0; b < n; b++) R[fast ? (n - a) * n - 1 - b : a * n + b] = H[a * ldh + b];
        for (int64_t a = 0; a < n; a++) {
            if (!(R[a * n + a] > 0)) R[a * n + a] = 1.0; /* dead input (the diagonal reverses onto itself) */
            R[a * n + a] += d.lambda;
        }
        int64_t info;
        if (fast) {
            info = ul ? la_ul_factor_of_reversed(R, n) : la_inverse_factor_of_reversed(R, n);
            if (info == 0) break;
        } else if ((info = piso_la_spd_inverse(R, n)) == 0) {
            if (inv) memcpy(inv, R, sizeof(double) * (size_t)(n * n));
            info = piso_la_cholesky_upper(R, n);
            if (info == 0) break;
        }
        if (info < 0) return piso_errorf("%s: out of memory inverting a [%lld, %lld] matrix", what, (long long)n, (long long)n);
        if (d.retries >= damp->max_retries)
            return piso_errorf("%s: H + λI is not positive definite even with λ = %g", what, d.lambda);
        d.lambda = d.lambda > 0 ? d.lambda * 10 : 1e-6 * d.ref;
    }
    if (out) *out = d;
    return 0;
}

int piso_la_damped_inverse_factor(const float *H, int64_t n, int64_t ldh, const struct piso_la_damping *damp,
                                  const char *what, double *R, double *inv, struct piso_la_damped *out) {
    return la_damped_factor(H, n, ldh, damp, what, R, inv, 0, out);
}

int piso_la_damped_ul_factor(const float *H, int64_t n, int64_t ldh, const struct piso_la_damping *damp,
                             const char *what, double *M, struct piso_la_damped *out) {
    return la_damped_factor(H, n, ldh, damp, what, M, NULL, 1, out);
}

/* The factor as piso computed it before src/linalg was blocked: LAPACK dpotrf + dpotri + dpotrf
 * with OpenBLAS on one thread. Kept only as the reference that bench_linalg times against. */
int64_t piso_la_reference_inverse_factor_1t(double *A, int64_t n) {
    int pin = la_pin_begin();
    lapack_int info = LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'L', (lapack_int)n, A, (lapack_int)n);
    if (info == 0) info = LAPACKE_dpotri_work(LAPACK_COL_MAJOR, 'L', (lapack_int)n, A, (lapack_int)n);
    if (info == 0)
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < i; j++) A[i * n + j] = A[j * n + i];
    if (info == 0) info = LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'L', (lapack_int)n, A, (lapack_int)n);
    la_pin_end(pin);
    return info > 0 ? (int64_t)info : info < 0 ? -1 : 0;
}
