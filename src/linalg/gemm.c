/* GEMM and SYRK, bit-identical for any thread count.
 *
 * OpenBLAS's own threading changes results with the thread count, so C is split into fixed blocks of
 * LA_COL_BLOCK columns, each one single-threaded BLAS call inside an OpenMP loop: the same calls
 * happen for any thread count. (First version: the redesign's linalg engineer tunes the tiling.) */
#include "piso/linalg.h"

#include <cblas.h>
#include <omp.h>

#define LA_COL_BLOCK 256

void piso_la_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                   int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    int64_t nb = (N + LA_COL_BLOCK - 1) / LA_COL_BLOCK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t b = 0; b < nb; b++) {
        int64_t j0 = b * LA_COL_BLOCK, n = N - j0 < LA_COL_BLOCK ? N - j0 : LA_COL_BLOCK;
        cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                    (int)M, (int)n, (int)K, alpha, A, (int)lda, trans_b ? B + j0 * ldb : B + j0, (int)ldb, beta,
                    C + j0, (int)ldc);
    }
}

void piso_la_dgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double *A,
                   int64_t lda, const double *B, int64_t ldb, double beta, double *C, int64_t ldc) {
    int64_t nb = (N + LA_COL_BLOCK - 1) / LA_COL_BLOCK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t b = 0; b < nb; b++) {
        int64_t j0 = b * LA_COL_BLOCK, n = N - j0 < LA_COL_BLOCK ? N - j0 : LA_COL_BLOCK;
        cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                    (int)M, (int)n, (int)K, alpha, A, (int)lda, trans_b ? B + j0 * ldb : B + j0, (int)ldb, beta,
                    C + j0, (int)ldc);
    }
}

void piso_la_ssyrk_t(int64_t n, int64_t k, float alpha, const float *A, int64_t lda, float beta, float *C,
                     int64_t ldc) {
    piso_la_sgemm(1, 0, n, n, k, alpha, A, lda, A, lda, beta, C, ldc);
    for (int64_t i = 0; i < n; i++) /* exact symmetry: mirror the upper triangle */
        for (int64_t j = i + 1; j < n; j++) C[j * ldc + i] = C[i * ldc + j];
}

void piso_la_dsyrk_t(int64_t n, int64_t k, double alpha, const double *A, int64_t lda, double beta, double *C,
                     int64_t ldc) {
    piso_la_dgemm(1, 0, n, n, k, alpha, A, lda, A, lda, beta, C, ldc);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i + 1; j < n; j++) C[j * ldc + i] = C[i * ldc + j];
}

void piso_la_gram_add(double *acc, const float *A, const float *B, int64_t t, int64_t n, int64_t m,
                      float *scratch) {
    piso_la_sgemm(1, 0, n, m, t, 1.0f, A, n, B, m, 0.0f, scratch, m);
    for (int64_t i = 0; i < n * m; i++) acc[i] += scratch[i];
}
