/* Fusing orthogonal transforms into the weights of a Llama-family model.
 *
 * Residual stream x [D] → x·R for an orthogonal R (a rotation Qᵀ, or a permutation): every
 * consumer W [out, D] becomes W·R (its rows transform like x), every producer Wp [D, in] (wo,
 * w_down) becomes Rᵀ·Wp, the embeddings' rows become E·R and the head's rows W_out·R. RMSNorm
 * commutes with R only without its weight, so the norm weights are first folded into the
 * consumers' columns (attn_norm → q/k/v, ffn_norm → gate/up, out_norm → the head).
 * Per head on v/o: v's output rows of each kv head get Q_hd (and its bias), so every attention
 * head's output is rotated by Q_hd, which wo's input columns absorb.
 * FFN hidden channels: a permutation P of gate/up rows and down columns (silu(g)·u is
 * elementwise, so it commutes with P). */
#include "transform_internal.h"

#include <stdlib.h>
#include <string.h>

/* W [rows, cols]: column j *= s[j] */
static void scale_cols(float *W, int64_t rows, int cols, const float *s) {
    for (int64_t r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) W[r * cols + c] *= s[c];
}

static int all_ones(const float *w, int n) {
    for (int i = 0; i < n; i++)
        if (w[i] != 1.0f) return 0;
    return 1;
}

int piso_tr_fold_norms(struct piso_model *m, int *untied) {
    const struct piso_config *c = &m->cfg;
    int D = c->dim, F = c->hidden_dim, Hq = c->n_heads * c->head_dim, Hkv = c->n_kv_heads * c->head_dim;
    *untied = 0;
    for (int l = 0; l < c->n_layers; l++) {
        struct piso_layer_weights *w = &m->layers[l];
        scale_cols(w->wq, Hq, D, w->attn_norm);
        scale_cols(w->wk, Hkv, D, w->attn_norm);
        scale_cols(w->wv, Hkv, D, w->attn_norm);
        scale_cols(w->w_gate, F, D, w->ffn_norm);
        scale_cols(w->w_up, F, D, w->ffn_norm);
        for (int j = 0; j < D; j++) w->attn_norm[j] = w->ffn_norm[j] = 1.0f;
    }
    if (!all_ones(m->out_norm, D)) {
        if (m->output == m->tok_embd) { /* the head is about to differ from the embeddings */
            if (piso_model_untie(m)) return -1;
            *untied = 1;
        }
        scale_cols(m->output, c->vocab_size, D, m->out_norm);
        for (int j = 0; j < D; j++) m->out_norm[j] = 1.0f;
    }
    return 0;
}

int piso_tr_rotate_residual(struct piso_model *m, int block) {
    const struct piso_config *c = &m->cfg;
    int D = c->dim, F = c->hidden_dim, Hq = c->n_heads * c->head_dim, Hkv = c->n_kv_heads * c->head_dim;
    if (piso_rotate_rows(m->tok_embd, c->vocab_size, D, D, block, "residual rotation (embeddings)")) return -1;
    if (m->output != m->tok_embd && piso_rotate_rows(m->output, c->vocab_size, D, D, block, "residual rotation (head)"))
        return -1;
    for (int l = 0; l < c->n_layers; l++) {
        struct piso_layer_weights *w = &m->layers[l];
        if (piso_rotate_rows(w->wq, Hq, D, D, block, "residual rotation (q_proj)") ||
            piso_rotate_rows(w->wk, Hkv, D, D, block, "residual rotation (k_proj)") ||
            piso_rotate_rows(w->wv, Hkv, D, D, block, "residual rotation (v_proj)") ||
            piso_rotate_rows(w->w_gate, F, D, D, block, "residual rotation (gate_proj)") ||
            piso_rotate_rows(w->w_up, F, D, D, block, "residual rotation (up_proj)") ||
            piso_rotate_cols(w->wo, D, Hq, block, "residual rotation (o_proj)") ||
            piso_rotate_cols(w->w_down, D, F, block, "residual rotation (down_proj)"))
            return -1;
    }
    return 0;
}

int piso_tr_rotate_heads_vo(struct piso_model *m) {
    const struct piso_config *c = &m->cfg;
    int D = c->dim, hd = c->head_dim, Hq = c->n_heads * hd, Hkv = c->n_kv_heads * hd;
    for (int l = 0; l < c->n_layers; l++) {
        struct piso_layer_weights *w = &m->layers[l];
        if (piso_rotate_cols(w->wv, Hkv, D, hd, "per-head rotation (v_proj)") ||
            (w->bv && piso_rotate_cols(w->bv, Hkv, 1, hd, "per-head rotation (v_proj bias)")) ||
            piso_rotate_rows(w->wo, D, Hq, Hq, hd, "per-head rotation (o_proj)"))
            return -1;
    }
    return 0;
}

int piso_tr_rotate_heads_across(float *X, int64_t rows, int n_heads, int hd) {
    if (!piso_hadamard_supported(n_heads)) {
        piso_hadamard_apply(NULL, n_heads, 1); /* sets the message */
        return piso_error_context("o_proj input rotation across %d heads", n_heads);
    }
    for (int64_t r = 0; r < rows; r++)
        for (int j = 0; j < hd; j++) piso_hadamard_apply(X + r * n_heads * hd + j, n_heads, hd);
    return 0;
}

int piso_tr_online_weights(struct piso_model *m, int down_block, int o_heads) {
    const struct piso_config *c = &m->cfg;
    int D = c->dim, F = c->hidden_dim, hd = c->head_dim;
    for (int l = 0; l < c->n_layers; l++) {
        struct piso_layer_weights *w = &m->layers[l];
        if (down_block && piso_rotate_rows(w->w_down, D, F, F, down_block, "down_proj input rotation")) return -1;
        if (o_heads && piso_tr_rotate_heads_across(w->wo, D, c->n_heads, hd)) return -1;
    }
    return 0;
}

/* W [rows, cols]: columns gathered, W'[:, i] = W[:, perm[i]] */
static int gather_cols(float *W, int64_t rows, int cols, const int *perm) {
    float *t = malloc((size_t)cols * sizeof *t);
    if (!t) return piso_errorf("permutation: out of memory");
    for (int64_t r = 0; r < rows; r++) {
        float *row = W + r * cols;
        for (int i = 0; i < cols; i++) t[i] = row[perm[i]];
        memcpy(row, t, (size_t)cols * sizeof *t);
    }
    free(t);
    return 0;
}

/* W [rows, cols]: rows gathered, W'[i, :] = W[perm[i], :] */
static int gather_rows(float *W, int rows, int64_t cols, const int *perm) {
    float *t = malloc((size_t)rows * cols * sizeof *t);
    if (!t) return piso_errorf("permutation: out of memory");
    for (int i = 0; i < rows; i++) memcpy(t + (size_t)i * cols, W + (size_t)perm[i] * cols, (size_t)cols * sizeof *t);
    memcpy(W, t, (size_t)rows * cols * sizeof *t);
    free(t);
    return 0;
}

int piso_tr_permute_residual(struct piso_model *m, const int *perm) {
    const struct piso_config *c = &m->cfg;
    int D = c->dim, F = c->hidden_dim, Hq = c->n_heads * c->head_dim, Hkv = c->n_kv_heads * c->head_dim;
    if (gather_cols(m->tok_embd, c->vocab_size, D, perm)) return -1;
    if (m->output != m->tok_embd && gather_cols(m->output, c->vocab_size, D, perm)) return -1;
    for (int l = 0; l < c->n_layers; l++) {
        struct piso_layer_weights *w = &m->layers[l];
        if (gather_cols(w->wq, Hq, D, perm) || gather_cols(w->wk, Hkv, D, perm) || gather_cols(w->wv, Hkv, D, perm) ||
            gather_cols(w->w_gate, F, D, perm) || gather_cols(w->w_up, F, D, perm) || gather_rows(w->wo, D, Hq, perm) ||
            gather_rows(w->w_down, D, F, perm))
            return -1;
    }
    return 0;
}

int piso_tr_permute_ffn(struct piso_model *m, int layer, const int *perm) {
    const struct piso_config *c = &m->cfg;
    struct piso_layer_weights *w = &m->layers[layer];
    return gather_rows(w->w_gate, c->hidden_dim, c->dim, perm) || gather_rows(w->w_up, c->hidden_dim, c->dim, perm) ||
                   gather_cols(w->w_down, c->dim, c->hidden_dim, perm)
               ? -1
               : 0;
}
