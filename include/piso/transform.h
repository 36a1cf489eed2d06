/* piso/transform.h — orthogonal transforms of a model that leave its float function unchanged:
 * Hadamard rotations (fast Walsh–Hadamard transform for every size 2^k·K of the table below),
 * channel permutations (MassDiff, zigzag, absmax, random) and their fusion into the weights.
 *
 * Conventions: a normalized Hadamard matrix Q = H/√n (H ±1, HHᵀ = nI, so Q is orthogonal).
 * "Rotating a vector" x means x ← Q·x; a row-major batch X [m, n] is rotated row by row, X ← X·Qᵀ.
 * A block rotation with block b applies Q_b to each of the n/b consecutive slices. */
#ifndef PISO_TRANSFORM_H
#define PISO_TRANSFORM_H

#include "piso/model.h"

#include <stddef.h>
#include <stdint.h>

/* ---- Hadamard matrices and the FWHT ---------------------------------------------------------
 * Supported sizes n = 2^k·K, K ∈ {1, 12, 20, 28, 36, 40, 52, 60, 108, 140, 152, 156, 172}; H_n =
 * H_{2^k} ⊗ H_K (Sylvester ⊗ base). Base matrices: Paley I (12, 20, 60, 108, 140, 152), Paley II
 * (28, 36, 52 over GF(25)), 40 = H_2 ⊗ H_20, Goethals–Seidel arrays of four circulants (156, 172). */

/* 1 when a Hadamard matrix of size n is available (n ≥ 1), else 0. */
int piso_hadamard_supported(int n);
/* The base size K of n (n = 2^k·K with the smallest K of the table), or 0 when unsupported. */
int piso_hadamard_base(int n);
/* The explicit ±1 matrix H_n [n, n] (row-major), built as a Kronecker product of the base matrix;
 * the FWHT computes H_n·x / √n. Error naming n when unsupported. */
int piso_hadamard_matrix(int n, int8_t *H);
/* x[0], x[stride], …, x[(n-1)·stride] ← Q_n·x (normalized: orthogonal). Error when unsupported. */
int piso_hadamard_apply(float *x, int n, ptrdiff_t stride);
/* Every row of X [rows, cols] (leading dimension ld ≥ cols) ← block-diagonal Q_block applied to
 * the row (block divides cols; block == cols: full). Errors name `what` and the sizes. */
int piso_rotate_rows(float *X, int64_t rows, int cols, ptrdiff_t ld, int block, const char *what);
/* Every column of X [rows, cols] (row-major) ← block-diagonal Q_block applied to the column
 * (block divides rows): X ← diag(Q_b, …)·X. */
int piso_rotate_cols(float *X, int rows, int64_t cols, int block, const char *what);

/* ---- model transforms --------------------------------------------------------------------- */
enum piso_rotate_mode { PISO_ROTATE_NONE = 0, PISO_ROTATE_HAD, PISO_ROTATE_BLOCK };
enum piso_permute_mode { PISO_PERMUTE_NONE = 0, PISO_PERMUTE_MASSDIFF, PISO_PERMUTE_ZIGZAG, PISO_PERMUTE_ABSMAX,
                         PISO_PERMUTE_RANDOM };
int piso_rotate_mode_from_name(const char *name, enum piso_rotate_mode *out);
int piso_permute_mode_from_name(const char *name, enum piso_permute_mode *out);
const char *piso_rotate_mode_name(enum piso_rotate_mode m);
const char *piso_permute_mode_name(enum piso_permute_mode m);

struct piso_transform_opts {
    enum piso_rotate_mode rotate;
    int block;                      /* PISO_ROTATE_BLOCK: block size (divides dim) */
    int online;                     /* also the online rotations (down_proj input, o_proj input) */
    enum piso_permute_mode permute; /* before the block rotation; needs calibration tokens */
    uint64_t seed;                  /* --permute random */
};

/* Permutation of n channels into blocks of b (b divides n) from per-token activations
 * X [ntok, n]: perm[i] = the channel that goes to position i. MassDiff as in MixQuant §7:
 * channels by decreasing mean |x|, block k seeded with the k-th, then each next channel into the
 * open block whose per-token ℓ1 mass plus this channel's has the least mean. zigzag: by max |x|
 * descending, snake order over the blocks; absmax: by max |x| descending; random: seeded shuffle. */
int piso_permutation(enum piso_permute_mode mode, const float *X, int64_t ntok, int n, int b, uint64_t seed, int *perm);

/* What a transform did (kept so that a second copy of the model can get exactly the same one, and
 * for the record in the output directory). */
struct piso_transform_plan {
    struct piso_transform_opts opts;
    int resid_block;        /* residual stream rotation block (dim: full), 0 = none */
    int head_block;         /* per-head v/o rotation (head_dim), 0 = none */
    int *resid_perm;        /* [dim] or NULL */
    int **ffn_perm;         /* [n_layers][hidden_dim] or NULL */
    int untied;             /* the output head was untied from the embeddings */
};
void piso_transform_plan_free(struct piso_transform_plan *p);

/* Applies the transform to m in place (weights must be writable): folds the RMSNorm weights into
 * their consumers (attn_norm → q/k/v, ffn_norm → gate/up, the final norm → the output head,
 * untying a tied head when the norm is not all ones), permutes (calibrated on the float model's
 * linear inputs over the windows tokens [nwin, seqlen]; may be NULL without --permute), rotates
 * the residual stream, v/o per head, and sets m->online for the online rotations. plan (may be
 * NULL) receives what was done. */
int piso_transform_model(struct piso_model *m, const struct piso_transform_opts *o, const int *tokens, int nwin,
                         int seqlen, struct piso_transform_plan *plan);
/* Applies a plan computed by piso_transform_model on another copy of the same model. */
int piso_transform_apply_plan(struct piso_model *m, const struct piso_transform_plan *plan);

/* transform.json, the record written beside a transformed model: the plan's options and fused
 * parts, and m's online rotations ("online": {"down_proj_input": {"hadamard_block": B},
 * "o_proj_input": {"hadamard_across_heads": n_heads}}); malloc'd text. */
char *piso_transform_json(const struct piso_model *m, const struct piso_transform_plan *p);
/* Reads transform.json in an HF model directory (when present) into m->online. */
int piso_online_load(struct piso_model *m, const char *dir);

#endif
