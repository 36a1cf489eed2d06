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

/* The tile (r0, c0) of op(A)·op(B): where its rows of op(A) and columns of op(B) start. */
#define LA_A_ROWS(A, lda, trans_a, r0) ((trans_a) ? (A) + (r0) : (A) + (r0) * (lda))
#define LA_B_COLS(B, ldb, trans_b, c0) ((trans_b) ? (B) + (c0) * (ldb) : (B) + (c0))

void piso_la_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                   int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    int64_t tr = la_ntiles(M), tc = la_ntiles(N);
#pragma omp parallel for schedule(dynamic, 1) if ((double)M * N * K > LA_PAR_MIN_WORK)
    for (int64_t b = 0; b < tr * tc; b++) {
        int64_t r0 = (b / tc) * LA_TILE, c0 = (b % tc) * LA_TILE;
        int64_t m = la_min(LA_TILE, M - r0), n = la_min(LA_TILE, N - c0);
        int pin = la_pin_begin();
        cblas_sgemm(CblasRowMajor, la_trans(trans_a), la_trans(trans_b), (int)m, (int)n, (int)K, alpha,
                    LA_A_ROWS(A, lda, trans_a, r0), (int)lda, LA_B_COLS(B, ldb, trans_b, c0), (int)ldb, beta,
                    C + r0 * ldc + c0, (int)ldc);
        la_pin_end(pin);
    }
}

void piso_la_dgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double *A,
                   int64_t lda, const double *B, int64_t ldb, double beta, double *C, int64_t ldc) {
    int64_t tr = la_ntiles(M), tc = la_ntiles(N);
#pragma omp parallel for schedule(dynamic, 1) if ((double)M * N * K > LA_PAR_MIN_WORK)
    for (int64_t b = 0; b < tr * tc; b++) {
        int64_t r0 = (b / tc) * LA_TILE, c0 = (b % tc) * LA_TILE;
        int64_t m = la_min(LA_TILE, M - r0), n = la_min(LA_TILE, N - c0);
        int pin = la_pin_begin();
        cblas_dgemm(CblasRowMajor, la_trans(trans_a), la_trans(trans_b), (int)m, (int)n, (int)K, alpha,
                    LA_A_ROWS(A, lda, trans_a, r0), (int)lda, LA_B_COLS(B, ldb, trans_b, c0), (int)ldb, beta,
                    C + r0 * ldc + c0, (int)ldc);
        la_pin_end(pin);
    }
}

/* Copies the upper triangle of C [n, n] into the lower one, in parallel over rows. */
static void la_mirror_s(float *C, int64_t n, int64_t ldc) {
#pragma omp parallel for schedule(static) if ((double)n * n > LA_PAR_MIN_WORK / 16)
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < i; j++) C[i * ldc + j] = C[j * ldc + i];
}
static void la_mirror_d(double *C, int64_t n, int64_t ldc) {
#pragma omp parallel for schedule(static) if ((double)n * n > LA_PAR_MIN_WORK / 16)
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < i; j++) C[i * ldc + j] = C[j * ldc + i];
}

/* Only the tiles on and above the diagonal are computed (as GEMM tiles: the same per-element sums
 * as piso_la_?gemm(1, 0, ...) on AᵀA), then mirrored, so C is exactly symmetric. */
void piso_la_ssyrk_t(int64_t n, int64_t k, float alpha, const float *A, int64_t lda, float beta, float *C,
                     int64_t ldc) {
    int64_t t = la_ntiles(n);
#pragma omp parallel for schedule(dynamic, 1) if ((double)n * n * k / 2 > LA_PAR_MIN_WORK)
    for (int64_t b = 0; b < t * (t + 1) / 2; b++) {
        int64_t ti, tj;
        la_upper_tile(b, t, &ti, &tj);
        int64_t r0 = ti * LA_TILE, c0 = tj * LA_TILE, m = la_min(LA_TILE, n - r0), w = la_min(LA_TILE, n - c0);
        int pin = la_pin_begin();
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)m, (int)w, (int)k, alpha, A + r0, (int)lda,
                    A + c0, (int)lda, beta, C + r0 * ldc + c0, (int)ldc);
        la_pin_end(pin);
    }
    la_mirror_s(C, n, ldc);
}

void piso_la_dsyrk_t(int64_t n, int64_t k, double alpha, const double *A, int64_t lda, double beta, double *C,
                     int64_t ldc) {
    int64_t t = la_ntiles(n);
#pragma omp parallel for schedule(dynamic, 1) if ((double)n * n * k / 2 > LA_PAR_MIN_WORK)
    for (int64_t b = 0; b < t * (t + 1) / 2; b++) {
        int64_t ti, tj;
        la_upper_tile(b, t, &ti, &tj);
        int64_t r0 = ti * LA_TILE, c0 = tj * LA_TILE, m = la_min(LA_TILE, n - r0), w = la_min(LA_TILE, n - c0);
        int pin = la_pin_begin();
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)m, (int)w, (int)k, alpha, A + r0, (int)lda,
                    A + c0, (int)lda, beta, C + r0 * ldc + c0, (int)ldc);
        la_pin_end(pin);
    }
    la_mirror_d(C, n, ldc);
}

void piso_la_gram_add(double *acc, const float *A, const float *B, int64_t t, int64_t n, int64_t m,
                      float *scratch) {
    if (A == B && n == m) piso_la_ssyrk_t(n, t, 1.0f, A, n, 0.0f, scratch, n);
    else piso_la_sgemm(1, 0, n, m, t, 1.0f, A, n, B, m, 0.0f, scratch, m);
#pragma omp parallel for schedule(static) if ((double)n * m > LA_PAR_MIN_WORK / 16)
    for (int64_t i = 0; i < n * m; i++) acc[i] += scratch[i];
}
