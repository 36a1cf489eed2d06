/* Triangular solves and products with an upper factor U (from piso_la_cholesky_upper), bit-identical
 * for any thread count: a vector solve is one single-threaded BLAS call; a matrix solve or product
 * splits the rows of the right-hand side into fixed chunks (rows are independent), each one BLAS call on one thread. */
#include "piso/linalg.h"

#include "linalg/linalg_internal.h"

#include <cblas.h>

void piso_la_trsv_upper(const double *U, int64_t n, int trans, double *x) {
    int pin = la_pin_begin();
    cblas_dtrsv(CblasRowMajor, CblasUpper, trans ? CblasTrans : CblasNoTrans, CblasNonUnit, (int)n, U, (int)n, x, 1);
    la_pin_end(pin);
}

void piso_la_trsm_right_upper(const double *U, int64_t k, double *B, int64_t m, int64_t ldb) {
    piso_la_trsm_right_upper_op(U, k, 0, B, m, ldb);
}

/* B [m, k] (row stride ldb) ← B·op(U)⁻¹ (solve) or B·op(U) (product), in fixed row chunks. */
static void right_upper_chunks(int solve, const double *U, int64_t k, int trans, double *B, int64_t m, int64_t ldb) {
    int64_t chunks = (m + LA_TILE - 1) / LA_TILE;
#pragma omp parallel for schedule(dynamic, 1) if ((double)m * k * k > LA_PAR_MIN_WORK)
    for (int64_t c = 0; c < chunks; c++) {
        int64_t r0 = c * LA_TILE, h = la_min(LA_TILE, m - r0);
        int pin = la_pin_begin();
        (solve ? cblas_dtrsm : cblas_dtrmm)(CblasRowMajor, CblasRight, CblasUpper, trans ? CblasTrans : CblasNoTrans,
                                            CblasNonUnit, (int)h, (int)k, 1.0, U, (int)k, B + r0 * ldb, (int)ldb);
        la_pin_end(pin);
    }
}

void piso_la_trsm_right_upper_op(const double *U, int64_t k, int trans, double *B, int64_t m, int64_t ldb) {
    right_upper_chunks(1, U, k, trans, B, m, ldb);
}

void piso_la_trmm_right_upper(const double *U, int64_t k, int trans, double *B, int64_t m, int64_t ldb) {
    right_upper_chunks(0, U, k, trans, B, m, ldb);
}

void piso_la_strmm_right_upper(const float *U, int64_t k, int64_t ldu, float *B, int64_t m, int64_t ldb) {
    int64_t chunks = (m + LA_TILE - 1) / LA_TILE;
#pragma omp parallel for schedule(dynamic, 1) if ((double)m * k * k > LA_PAR_MIN_WORK)
    for (int64_t c = 0; c < chunks; c++) {
        int64_t r0 = c * LA_TILE, h = la_min(LA_TILE, m - r0);
        int pin = la_pin_begin();
        cblas_strmm(CblasRowMajor, CblasRight, CblasUpper, CblasNoTrans, CblasNonUnit, (int)h, (int)k, 1.0f, U,
                    (int)ldu, B + r0 * ldb, (int)ldb);
        la_pin_end(pin);
    }
}
