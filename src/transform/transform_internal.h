/* Private pieces of src/transform: the weight-fusion steps (rotate.c) and the calibration
 * activations of the permutations (permute.c), used by the driver (transform.c). */
#ifndef PISO_TRANSFORM_INTERNAL_H
#define PISO_TRANSFORM_INTERNAL_H

#include "piso/transform.h"

/* Folds attn_norm/ffn_norm into q/k/v and gate/up columns and out_norm into the head (untied first
 * when tied and the norm is not all ones: *untied = 1); the norms become all ones. */
int piso_tr_fold_norms(struct piso_model *m, int *untied);
/* Residual stream x → x·Qᵀ with Q block-diagonal of block (dim: full); norms must be folded. */
int piso_tr_rotate_residual(struct piso_model *m, int block);
/* v's output rows (and bias) per kv head by Q_hd, wo's input columns per head by Q_hd. */
int piso_tr_rotate_heads_vo(struct piso_model *m);
/* Each row of X [rows, n_heads·hd] ← (Q_nh ⊗ I_hd)·row: a Hadamard across the heads. */
int piso_tr_rotate_heads_across(float *X, int64_t rows, int n_heads, int hd);
/* The weight side of the online rotations: w_down's input columns (block down_block, 0 = none),
 * wo's input columns across the heads (o_heads ≠ 0). */
int piso_tr_online_weights(struct piso_model *m, int down_block, int o_heads);
/* Residual channels permuted: x'[i] = x[perm[i]]; norms must be folded. */
int piso_tr_permute_residual(struct piso_model *m, const int *perm);
/* FFN hidden channels of one layer permuted: gate/up rows and down columns. */
int piso_tr_permute_ffn(struct piso_model *m, int layer, const int *perm);

/* Linear-layer inputs of the model over calibration windows. */
struct piso_tr_acts {
    int64_t ntok;  /* tokens per layer (windows used · seqlen) */
    float *resid;  /* [2·n_layers·ntok, dim]: attn_in and ffn_in of every layer */
    float *ffn;    /* [n_layers][ntok, hidden_dim]: down_proj inputs */
};
/* Runs the windows tokens [nwin, seqlen] (at most max_tokens tokens of them) through m. */
int piso_tr_collect(const struct piso_model *m, const int *tokens, int nwin, int seqlen, int64_t max_tokens,
                    struct piso_tr_acts *a);
void piso_tr_acts_free(struct piso_tr_acts *a);

#endif
