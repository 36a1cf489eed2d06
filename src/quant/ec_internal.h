/* src/quant/ec_internal.h — shared machinery of the error-correcting solvers (gptq.c, qronos.c).
 * Everything runs in the permuted column order ("positions"); groups stay contiguous there. */
#ifndef PISO_EC_INTERNAL_H
#define PISO_EC_INTERNAL_H

#include "piso/solve.h"

struct ec_work {
    int64_t N, D;
    int group;               /* effective group size (D for channel-wise) */
    int n_groups;            /* ceil(D / group) */
    struct piso_ec_opts opts;
    int *perm;               /* [D] position -> original column */
    int *col_group;          /* [D] position -> original group id */
    int *grp_start, *grp_len, *grp_id; /* [n_groups] group ranges in position order */
    float *Wo;               /* [N, D] original weights, permuted, dead columns zeroed */
    float *Wc;               /* [N, D] current (error-diffused, then quantized) weights */
    float *Hp;               /* [D, D] permuted undamped H */
    float *Gp;               /* [D, D] permuted G, or == Hp */
    float *S;                /* [N, n_groups] scales in original group order */
    int16_t *codes;          /* [N, D] permuted */
    double *row_loss;        /* [N] Σ e² per row */
    float *GmH;              /* [D, D] Gp − Hp (group targets; NULL until needed or when G = H) */
    float *dW;               /* [N, D] scratch: Wo − Wc */
    int dead;
};

int ec_setup(struct ec_work *w, const struct piso_ec_problem *p, const struct piso_ec_opts *o);
void ec_free(struct ec_work *w);
/* Solves the scales of group k (position order) for all rows on the current weights. */
void ec_group_scales(struct ec_work *w, int k);
/* Quantizes Wc[r, pos] with its group's scale: writes the code and returns the value. */
float ec_quantize(struct ec_work *w, int64_t r, int pos);
/* Lazy-batch GPTQ over positions first..D-1 with R [D-first, D-first] (row-major, upper, double):
 * (H + λI)⁻¹ restricted to those positions = RᵀR. Solves group scales on reaching a group's first
 * position when interleaving per group. */
int ec_sweep(struct ec_work *w, const double *R, int first);
/* Un-permutes into the result and computes its objective with the problem's undamped H, G. */
int ec_finish(struct ec_work *w, const struct piso_ec_problem *p, struct piso_layer_result *r);
/* Upper Cholesky factor R of A⁻¹ (A [n, n] double, destroyed), A⁻¹ = RᵀR. If inv is not NULL it
 * receives the full symmetric A⁻¹ first. Returns -1 when A is not positive definite. */
int ec_chol_inverse_upper(double *A, int n, double *inv, double *R);

/* Deterministic BLAS: OpenBLAS's own threading changes results with the thread count, so these
 * split C's columns into fixed blocks, each one single-threaded call inside an OpenMP loop (the
 * same calls for any thread count). Row-major only. */
void ec_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
              int ldb, float beta, float *C, int ldc);
void ec_dgemm(int transA, int transB, int M, int N, int K, double alpha, const double *A, int lda, const double *B,
              int ldb, double beta, double *C, int ldc);

#endif
