/* GEMM, SYRK and Gram accumulation, bit-identical for any thread count.
 *
 * C is split into fixed LA_TILE × LA_TILE tiles (rows × columns); each tile is one single-threaded
 * BLAS call, and a parallel loop hands whole tiles to threads. The same calls happen for any thread
 * count, and a tile's elements sum over K inside one call, so results are bit-identical. Small
 * products run the same tiles on the calling thread without a parallel region. */
#include "piso/linalg.h"

#include "linalg/linalg_internal.h"

#include <cblas.h>

static CBLAS_TRANSPOSE la_trans(int t) { return t ? CblasTrans : CblasNoTrans; }

/* One tile: a single-threaded BLAS call, fp32 or fp64 (the pointers point at the tile's start). */
static void la_gemm_tile(int dbl, int trans_a, int trans_b, int64_t m, int64_t n, int64_t K, double alpha,
                         const void *A, int64_t lda, const void *B, int64_t ldb, double beta, void *C, int64_t ldc) {
    int pin = la_pin_begin();
    if (dbl)
        cblas_dgemm(CblasRowMajor, la_trans(trans_a), la_trans(trans_b), (int)m, (int)n, (int)K, alpha, A, (int)lda,
                    B, (int)ldb, beta, C, (int)ldc);
    else
        cblas_sgemm(CblasRowMajor, la_trans(trans_a), la_trans(trans_b), (int)m, (int)n, (int)K, (float)alpha, A,
                    (int)lda, B, (int)ldb, (float)beta, C, (int)ldc);
    la_pin_end(pin);
}

/* C = alpha·op(A)·op(B) + beta·C in LA_TILE × LA_TILE tiles of C; upper_only: only the tiles on and
 * above the diagonal (M = N). es: bytes per element (4 or 8). */
static void la_gemm_tiled(size_t es, int upper_only, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                          double alpha, const void *A, int64_t lda, const void *B, int64_t ldb, double beta, void *C,
                          int64_t ldc) {
    int64_t tr = la_ntiles(M), tc = la_ntiles(N), nt = upper_only ? tr * (tr + 1) / 2 : tr * tc;
    double work = (double)M * N * K / (upper_only ? 2 : 1);
#pragma omp parallel for schedule(dynamic, 1) if (work > LA_PAR_MIN_WORK)
    for (int64_t b = 0; b < nt; b++) {
        int64_t ti = b / tc, tj = b % tc;
        if (upper_only) la_upper_tile(b, tr, &ti, &tj);
        int64_t r0 = ti * LA_TILE, c0 = tj * LA_TILE;
        const char *a = (const char *)A + es * (size_t)(trans_a ? r0 : r0 * lda);
        const char *bt = (const char *)B + es * (size_t)(trans_b ? c0 * ldb : c0);
        la_gemm_tile(es == 8, trans_a, trans_b, la_min(LA_TILE, M - r0), la_min(LA_TILE, N - c0), K, alpha, a, lda,
                     bt, ldb, beta, (char *)C + es * (size_t)(r0 * ldc + c0), ldc);
    }
}

void piso_la_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                   int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    la_gemm_tiled(sizeof *C, 0, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void piso_la_sgemm_1t(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                      int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    la_gemm_tile(0, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void piso_la_dgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double *A,
                   int64_t lda, const double *B, int64_t ldb, double beta, double *C, int64_t ldc) {
    la_gemm_tiled(sizeof *C, 0, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* Only the tiles on and above the diagonal are computed (as GEMM tiles of AᵀA), then the upper
 * triangle is copied into the lower one, so C is exactly symmetric. */
static void la_syrk_t(size_t es, int64_t n, int64_t k, double alpha, const void *A, int64_t lda, double beta,
                      void *C, int64_t ldc) {
    la_gemm_tiled(es, 1, 1, 0, n, n, k, alpha, A, lda, A, lda, beta, C, ldc);
    double *cd = C;
    float *cs = C;
#pragma omp parallel for schedule(static) if ((double)n * n > LA_PAR_MIN_WORK / 16)
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < i; j++) {
            if (es == 8) cd[i * ldc + j] = cd[j * ldc + i];
            else cs[i * ldc + j] = cs[j * ldc + i];
        }
}

void piso_la_ssyrk_t(int64_t n, int64_t k, float alpha, const float *A, int64_t lda, float beta, float *C,
                     int64_t ldc) {
    la_syrk_t(sizeof *C, n, k, alpha, A, lda, beta, C, ldc);
}

void piso_la_dsyrk_t(int64_t n, int64_t k, double alpha, const double *A, int64_t lda, double beta, double *C,
                     int64_t ldc) {
    la_syrk_t(sizeof *C, n, k, alpha, A, lda, beta, C, ldc);
}

void piso_la_gram_add(double *acc, const float *A, const float *B, int64_t t, int64_t n, int64_t m,
                      float *scratch) {
    /* XᵀX (B == A) from LA_GRAM_SYRK_MIN inputs on: the upper tiles only, mirrored (half the work).
     * Narrower, a full GEMM: BLAS does not give Aᵀ·A exactly symmetric, so the mirrored lower
     * triangle would move the bits of the small models' Hessians computed before. */
    if (B == A && n == m && n >= LA_GRAM_SYRK_MIN) la_syrk_t(sizeof *scratch, n, t, 1.0, A, n, 0.0, scratch, n);
    else piso_la_sgemm(1, 0, n, m, t, 1.0f, A, n, B, m, 0.0f, scratch, m);
#pragma omp parallel for schedule(static) if ((double)n * m > LA_PAR_MIN_WORK / 16)
    for (int64_t i = 0; i < n * m; i++) acc[i] += scratch[i];
}

void piso_la_gram_add_panels(double *acc, const float *A, const float *B, int64_t t, int64_t n, int64_t m,
                             int64_t panel_rows, float *scratch) {
    const int syrk = B == A && n == m && n >= LA_GRAM_SYRK_MIN;
    const int64_t P = la_ntiles(panel_rows < LA_TILE ? LA_TILE : panel_rows) * LA_TILE, tc = la_ntiles(m);
    for (int64_t p0 = 0; p0 < n; p0 += P) {
        const int64_t rows = la_min(P, n - p0), tr = la_ntiles(rows);
        /* the tiles piso_la_gram_add computes in these rows (SYRK: those on and above the diagonal),
         * each the same single-threaded BLAS call, so the same bits */
#pragma omp parallel for schedule(dynamic, 1) if ((double)rows * m * t > LA_PAR_MIN_WORK)
        for (int64_t b = 0; b < tr * tc; b++) {
            const int64_t r0 = p0 + b / tc * LA_TILE, c0 = b % tc * LA_TILE;
            if (syrk && c0 + LA_TILE <= r0) continue; /* below the diagonal: mirrored from above */
            la_gemm_tile(0, 1, 0, la_min(LA_TILE, n - r0), la_min(LA_TILE, m - c0), t, 1.0, A + r0, n, B + c0, m, 0.0,
                         scratch + (r0 - p0) * m + c0, m);
        }
        if (!syrk) {
#pragma omp parallel for schedule(static) if ((double)rows * m > LA_PAR_MIN_WORK / 16)
            for (int64_t i = 0; i < rows * m; i++) acc[p0 * m + i] += scratch[i];
            continue;
        }
        /* SYRK: acc[i][j] and, mirrored, acc[j][i] gain the upper value (j ≥ i): as
         * piso_la_gram_add, whose window product is made exactly symmetric before it is added */
#pragma omp parallel for schedule(static) if ((double)rows * m > LA_PAR_MIN_WORK / 16)
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = p0 + i; j < m; j++) acc[(p0 + i) * m + j] += scratch[i * m + j];
#pragma omp parallel for schedule(static) if ((double)rows * m > LA_PAR_MIN_WORK / 16)
        for (int64_t j = p0 + 1; j < m; j++)
            for (int64_t i = 0; i < rows && p0 + i < j; i++) acc[j * m + p0 + i] += scratch[i * m + j];
    }
}
