/* piso/linalg.h — all dense linear algebra of piso (src/linalg/): GEMM and SYRK in fp32 and fp64,
 * the Gram statistics of calibration windows, Cholesky, SPD inverse, the damped inverse factor that
 * the error-correcting solvers need, and power iteration.
 *
 * Conventions: matrices are row-major with an explicit leading dimension (elements between the
 * starts of two rows). Every function may run on all OpenMP threads and its result is
 * bit-identical for any thread count: work is split into tiles that depend only on the shapes, each
 * tile is computed by one thread in a fixed order, and reductions run in a fixed order. No file
 * outside src/linalg/ calls cblas or LAPACKE.
 */
#ifndef PISO_LINALG_H
#define PISO_LINALG_H

#include <stdint.h>

/* ---- GEMM / SYRK ------------------------------------------------------------------------------ */
/* C[M, N] = alpha · op(A) · op(B) + beta · C, op(X) = X or Xᵀ (trans_a / trans_b non-zero).
 * op(A) is [M, K], op(B) is [K, N]. beta = 0 ignores C's previous content (NaN included). */
void piso_la_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                   int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
void piso_la_dgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double *A,
                   int64_t lda, const double *B, int64_t ldb, double beta, double *C, int64_t ldc);

/* The same product as one single-threaded BLAS call on the calling thread, for callers that already
 * give each thread its own products (e.g. one attention head per thread); also bit-identical for any
 * thread count. */
void piso_la_sgemm_1t(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                      int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* C[n, n] = alpha · AᵀA + beta · C for A [k, n]; both triangles of C are written (symmetric). */
void piso_la_ssyrk_t(int64_t n, int64_t k, float alpha, const float *A, int64_t lda, float beta, float *C,
                     int64_t ldc);
void piso_la_dsyrk_t(int64_t n, int64_t k, double alpha, const double *A, int64_t lda, double beta, double *C,
                     int64_t ldc);

/* ---- Gram statistics over calibration windows ------------------------------------------------- */
/* acc[n, m] += Aᵀ B for one window A [t, n], B [t, m] (B == A, same pointer and shape: the symmetric
 * XᵀX). The window's products are one fp32 GEMM; they are added to the fp64 accumulator, so a long
 * calibration set sums in fp64 while each window costs fp32 speed. Windows add in call order.
 * B == A with n ≥ 512: the window's product by SYRK (upper tiles, mirrored: exactly symmetric).
 * scratch: [n, m] floats (the caller keeps it to avoid one allocation per window). */
void piso_la_gram_add(double *acc, const float *A, const float *B, int64_t t, int64_t n, int64_t m,
                      float *scratch);
/* The same bits as piso_la_gram_add through a scratch of panel_rows × m floats instead of n × m
 * (panel_rows rounded up to whole tiles): the product is made and added a band of rows at a time. */
void piso_la_gram_add_panels(double *acc, const float *A, const float *B, int64_t t, int64_t n, int64_t m,
                             int64_t panel_rows, float *scratch);

/* ---- factorizations --------------------------------------------------------------------------- */
/* In-place upper Cholesky A = UᵀU of the symmetric A [n, n] (only the upper triangle is read; the
 * strict lower triangle is set to 0). Returns 0, or the 1-based column at which A is not positive
 * definite (A is then unspecified). */
int64_t piso_la_cholesky_upper(double *A, int64_t n);

/* In place: A [n, n] symmetric positive definite → A⁻¹ (full, symmetric). Returns 0 or as above, or
 * −1 when out of memory (A is then unspecified). */
int64_t piso_la_spd_inverse(double *A, int64_t n);

/* d [n] ← diag(A⁻¹) for A = UᵀU, U upper in A's upper triangle (piso_la_cholesky_upper), which is
 * kept; A's strict lower triangle is overwritten (it receives U⁻¹ transposed). n³/3 flops (U⁻¹),
 * n³/3 fewer than the whole inverse. Returns 0, or −1 when out of memory. */
int piso_la_inverse_diag_from_factor(double *A, int64_t n, double *d);

/* In place: A [n, n] symmetric positive definite → R upper with A⁻¹ = RᵀR (R is the upper
 * Cholesky factor of A⁻¹; strict lower triangle 0), by one Cholesky of the reversed A and one
 * triangular inversion (2n³/3 flops instead of 4n³/3). Returns 0, a positive value when A is not
 * positive definite (A is then unspecified), or −1 when out of memory. */
int64_t piso_la_inverse_factor(double *A, int64_t n);

/* In place: A [n, n] symmetric positive definite → M upper with A = M·Mᵀ (the "UL" factor: one
 * Cholesky of the reversed A, M = J·Uᵀ·J; strict lower triangle 0). M⁻¹ is the upper Cholesky factor
 * of A⁻¹ up to the transposition (A⁻¹ = M⁻ᵀM⁻¹), so the error-correcting sweep can run on M
 * without any inverse (n³/3 flops). Returns as piso_la_inverse_factor. */
int64_t piso_la_ul_factor(double *A, int64_t n);

/* x ← U⁻¹x (trans = 0) or U⁻ᵀx (trans ≠ 0) for U [n, n] upper triangular (ld = n). */
void piso_la_trsv_upper(const double *U, int64_t n, int trans, double *x);
/* B ← B·U⁻¹ for B [m, k] (leading dimension ldb) and U [k, k] upper triangular (ld = k). */
void piso_la_trsm_right_upper(const double *U, int64_t k, double *B, int64_t m, int64_t ldb);
/* B ← B·U⁻¹ (trans = 0) or B·U⁻ᵀ (trans ≠ 0), same shapes. */
void piso_la_trsm_right_upper_op(const double *U, int64_t k, int trans, double *B, int64_t m, int64_t ldb);
/* B ← B·U (trans = 0) or B·Uᵀ (trans ≠ 0) for B [m, k] (leading dimension ldb) and U [k, k] upper
 * triangular (ld = k). */
void piso_la_trmm_right_upper(const double *U, int64_t k, int trans, double *B, int64_t m, int64_t ldb);
/* fp32: B ← B·U for U [k, k] upper (leading dimension ldu; the strict lower triangle is not read). */
void piso_la_strmm_right_upper(const float *U, int64_t k, int64_t ldu, float *B, int64_t m, int64_t ldb);

/* How much damping λ to add to H's diagonal before factoring it. */
enum piso_la_damp_ref {
    PISO_LA_DAMP_MEAN_DIAG = 0, /* λ = factor · mean(diag H), dead inputs counted as 1 (GPTQ) */
    PISO_LA_DAMP_SIGMA_MAX,     /* λ = factor · σ_max(H) by power iteration */
    PISO_LA_DAMP_GIVEN,         /* λ = factor · ref_value, a reference the caller computed (Qronos:
                                 * σ_max of the whole H while it factors the block H[1:,1:]) */
};
struct piso_la_damping {
    enum piso_la_damp_ref ref;
    double factor;   /* ≥ 0 */
    int max_retries; /* λ ×10 (or 1e-6·ref when λ = 0) after each failed factorization */
    double ref_value; /* PISO_LA_DAMP_GIVEN only: the reference (> 0) */
};
struct piso_la_damped {
    double lambda;    /* λ actually used */
    double ref;       /* mean diag or σ_max that λ is relative to */
    int retries;      /* how often λ was raised ×10 */
    int64_t dead;     /* inputs with H_ii ≤ 0 (their diagonal is set to 1 before damping) */
};

/* The factor that GPTQ needs: R [n, n] upper with (H + λI)⁻¹ = RᵀR, for H [n, n] fp32 (ldh ≥ n; the
 * leading n×n block is used), dead inputs (H_ii ≤ 0) set to 1 on the diagonal before λ is added.
 * inv (optional, [n, n]): receives the full (H + λI)⁻¹. R and inv are fp64 and dense (strict lower
 * triangle of R zero). Without inv, from n = 512 on, R comes from piso_la_inverse_factor (the same
 * factor up to round-off, half the work). Returns 0, or −1 (with piso_errorf naming `what`) when even the last retry
 * fails or memory runs out. */
int piso_la_damped_inverse_factor(const float *H, int64_t n, int64_t ldh, const struct piso_la_damping *damp,
                                  const char *what, double *R, double *inv, struct piso_la_damped *out);

/* The same damping, retries and errors, giving M [n, n] upper with H + λI = M·Mᵀ
 * (piso_la_ul_factor) for sweeps that need no inverse. */
int piso_la_damped_ul_factor(const float *H, int64_t n, int64_t ldh, const struct piso_la_damping *damp,
                             const char *what, double *M, struct piso_la_damped *out);

/* Largest eigenvalue of the symmetric PSD A [n, n] (ld = n) by `iters` power iterations from the
 * normalised all-ones vector (deterministic); 0 for a zero matrix. */
double piso_la_power_iteration(const float *A, int64_t n, int iters);

/* Benchmark reference only (bench/bench_linalg.c): the same factor as piso_la_cholesky_upper of
 * piso_la_spd_inverse(A) (upper, strict lower left unspecified), by plain LAPACK on one thread. */
int64_t piso_la_reference_inverse_factor_1t(double *A, int64_t n);

#endif
