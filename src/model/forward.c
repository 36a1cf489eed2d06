/* Forward pass: batched causal prefill of one window (positions 0..n-1), Llama family.
 *
 * All projections are row-major GEMMs Y[n, out] = X[n, in] · W[out, in]^T through piso_la_sgemm
 * (fixed tiles); attention runs one head per OpenMP iteration. Every BLAS call is
 * single-threaded and the same for any thread count, so results do not depend on it. Norm
 * statistics and softmax sums accumulate in double. Generation reuses the same block code with a
 * KV cache (block_forward_at). */
#include "piso/accum_sim.h"
#include "piso/linalg.h"
#include "piso/llamacpp_act.h"
#include "piso/model.h"
#include "piso/schema.h"
#include "piso/transform.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* Y[n, out] (+)= X[n, in] · W[out, in]^T: piso_la_sgemm's fixed tiles make it bit-identical for any
 * thread count, and a small product (generation, tiny M) runs serially without a parallel region. */
static void linear(const float *X, const float *W, float *Y, int n, int in, int out, float beta) {
    piso_la_sgemm(0, 1, n, out, in, 1.0f, X, in, W, in, beta, Y, out);
}

/* linear() on the input as llama.cpp's CPU matmul sees it for a weight of ggml type weight_type
 * (piso/llamacpp_act.h): X [n, in] is rounded in a copy, shared inputs (q/k/v) stay untouched. */
static void llamacpp_linear(int weight_type, const float *X, const float *W, float *Y, int n, int in, int out,
                            float beta) {
    float *xq = malloc((size_t)n * in * sizeof *xq);
    if (!xq) { /* out of memory: one row at a time */
        for (int i = 0; n > 1 && i < n; i++)
            llamacpp_linear(weight_type, X + (size_t)i * in, W, Y + (size_t)i * out, 1, in, out, beta);
        if (n == 1) linear(X, W, Y, n, in, out, beta);
        return;
    }
    memcpy(xq, X, (size_t)n * in * sizeof *xq);
    piso_llamacpp_act_rows(weight_type, xq, n, in);
    linear(xq, W, Y, n, in, out, beta);
    free(xq);
}

/* A linear layer k of block `layer`: the float product, or the simulated integer matmul with a
 * narrow accumulator when the model carries one (piso/accum_sim.h). W NULL: a lazy model's linear
 * converted from its file for this product (piso_model_set_linears_on_demand). */
static int block_linear(const struct piso_model *m, int layer, enum piso_linear k, const float *X, const float *W,
                        float *Y, int n, int in, int out, float beta) {
    struct piso_accum_sim *s = m->accum_sim;
    if (s && layer < s->n_layers && s->lin[layer * PISO_LIN_COUNT + k].codes) {
        piso_accum_sim_linear(s, &s->lin[layer * PISO_LIN_COUNT + k], &m->act.act, X, Y, n, beta);
        return 0;
    }
    float *owned = NULL;
    if (!W && !(W = piso_model_linear_f32(m, layer, (int)k, &owned))) return -1;
    if (m->llamacpp_weight_types)
        llamacpp_linear(m->llamacpp_weight_types[layer * PISO_LIN_COUNT + k], X, W, Y, n, in, out, beta);
    else
        linear(X, W, Y, n, in, out, beta);
    free(owned);
    return 0;
}

/* Below this many multiply-adds (or elements, for the cheap loops) a parallel region costs more
 * than it saves; running serially does not change any result. */
#define PAR_MIN_WORK (1 << 24)
#define PAR_MIN_ELEMS (1 << 18)

/* y[n, d] = x / rms(x) * w, row by row */
static void rmsnorm_rows(const float *x, const float *w, float *y, int n, int d, float eps) {
#pragma omp parallel for schedule(static) if ((size_t)n * d > PAR_MIN_ELEMS)
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * d;
        float *yi = y + (size_t)i * d;
        double ss = 0;
        for (int j = 0; j < d; j++) ss += (double)xi[j] * xi[j];
        float r = (float)(1.0 / sqrt(ss / d + eps));
        for (int j = 0; j < d; j++) yi[j] = xi[j] * r * w[j];
    }
}

/* RoPE inverse frequencies [head_dim/2]: theta^(-2j/hd), then Llama-3 scaling (HF
 * _compute_llama3_parameters) or GGUF rope_freqs divisors. */
static void rope_inv_freq(const struct piso_model *m, double *inv) {
    const struct piso_config *c = &m->cfg;
    int half = c->head_dim / 2;
    for (int j = 0; j < half; j++) {
        inv[j] = pow((double)c->rope_theta, -2.0 * j / c->head_dim);
        if (c->rope_llama3) {
            double lo_wl = c->rope_orig_ctx / (double)c->rope_low_freq_factor;
            double hi_wl = c->rope_orig_ctx / (double)c->rope_high_freq_factor;
            double wl = 2 * M_PI / inv[j];
            if (wl > lo_wl) {
                inv[j] /= c->rope_factor;
            } else if (wl >= hi_wl) {
                double s = (c->rope_orig_ctx / wl - c->rope_low_freq_factor) /
                           (c->rope_high_freq_factor - c->rope_low_freq_factor);
                inv[j] = (1 - s) * inv[j] / c->rope_factor + s * inv[j];
            }
        }
        if (m->rope_freq_factors) inv[j] /= m->rope_freq_factors[j];
    }
}

/* Rotates every head of x [n, n_heads*hd] at positions pos0..pos0+n-1. ADJACENT pairs (2j, 2j+1);
 * HALF pairs (j, j + hd/2); pair j turns by pos * inv[j]. */
static void rope_apply(float *x, int n, int pos0, int n_heads, int hd, enum piso_rope_style style, const double *inv) {
    int half = hd / 2;
#pragma omp parallel for schedule(static) if ((size_t)n * n_heads * hd > PAR_MIN_ELEMS)
    for (int i = 0; i < n; i++) {
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (size_t)i * n_heads * hd + (size_t)h * hd;
            for (int j = 0; j < half; j++) {
                double a = (double)(pos0 + i) * inv[j];
                float c = (float)cos(a), s = (float)sin(a);
                int p0 = style == PISO_ROPE_ADJACENT ? 2 * j : j;
                int p1 = style == PISO_ROPE_ADJACENT ? 2 * j + 1 : j + half;
                float x0 = v[p0], x1 = v[p1];
                v[p0] = x0 * c - x1 * s;
                v[p1] = x0 * s + x1 * c;
            }
        }
    }
}

static void add_bias(float *y, const float *b, int n, int d) {
    if (!b) return;
#pragma omp parallel for schedule(static) if ((size_t)n * d > PAR_MIN_ELEMS)
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) y[(size_t)i * d + j] += b[j];
}

/* Qwen3: RMSNorm over each head's head_dim values, before RoPE. */
static void head_norm(float *x, const float *w, int n, int n_heads, int hd, float eps) {
    if (w) rmsnorm_rows(x, w, x, n * n_heads, hd, eps);
}

/* Causal attention of n queries at positions pos0.. over T = pos0 + n keys: out [n, Hq] from
 * q [n, Hq], k, v [T, Hkv]; query head h reads kv head h / (n_heads / n_kv_heads). */
static int attention(const struct piso_config *c, const float *q, const float *k, const float *v, float *out, int n,
                     int pos0) {
    int hd = c->head_dim, Hq = c->n_heads * hd, Hkv = c->n_kv_heads * hd, group = c->n_heads / c->n_kv_heads;
    int T = pos0 + n;
    float scale = (float)(1.0 / sqrt((double)hd));
    int failed = 0;
#pragma omp parallel if ((double)n * T * Hq > PAR_MIN_WORK)
    {
        float *S = malloc((size_t)n * T * sizeof *S); /* [n, T] scores, then probabilities */
        if (!S) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int h = 0; h < c->n_heads; h++) {
            if (!S) continue;
            const float *qh = q + (size_t)h * hd, *kh = k + (size_t)(h / group) * hd, *vh = v + (size_t)(h / group) * hd;
            piso_la_sgemm_1t(0, 1, n, T, hd, scale, qh, Hq, kh, Hkv, 0.0f, S, T);
            for (int i = 0; i < n; i++) {
                float *s = S + (size_t)i * T;
                int last = pos0 + i; /* keys 0..last are visible */
                float mx = s[0];
                for (int j = 1; j <= last; j++) mx = s[j] > mx ? s[j] : mx;
                double sum = 0;
                for (int j = 0; j <= last; j++) {
                    s[j] = expf(s[j] - mx);
                    sum += s[j];
                }
                float inv = (float)(1.0 / sum);
                for (int j = 0; j <= last; j++) s[j] *= inv;
                for (int j = last + 1; j < T; j++) s[j] = 0.0f;
            }
            piso_la_sgemm_1t(0, 0, n, hd, T, 1.0f, S, T, vh, Hkv, 0.0f, out + (size_t)h * hd, Hq);
        }
        free(S);
    }
    return failed ? piso_errorf("attention: out of memory for a %d x %d score matrix", n, T) : 0;
}

/* Each row of x [n, n_heads·hd] ← (Q_nh ⊗ I_hd)·row: a normalized Hadamard across the heads. */
static int online_rotate_heads(float *x, int n, int n_heads, int hd) {
    int failed = 0;
#pragma omp parallel for schedule(static) reduction(| : failed) if ((size_t)n * n_heads * hd > PAR_MIN_ELEMS)
    for (int i = 0; i < n; i++)
        for (int j = 0; j < hd; j++) failed |= piso_hadamard_apply(x + (size_t)i * n_heads * hd + j, n_heads, hd) != 0;
    return failed ? piso_error_context("o_proj input rotation") : 0;
}

/* The input x [n, d] of a linear layer as the runtime feeds it: quantized in place by the model's
 * activation format (m->act). An online rotation of this input goes before this call. */
static void quantize_linear_input(const struct piso_model *m, float *x, int n, int d) {
    piso_act_quantize_rows(&m->act.act, x, n, d);
}

/* New keys or values [n, Hkv] as the KV cache stores them (m->act.kv). */
static void quantize_kv_rows(const struct piso_model *m, float *kv, int n, int Hkv) {
    piso_act_quantize_rows(&m->act.kv, kv, n, Hkv);
}

void piso_embed(const struct piso_model *m, const int *tokens, int n, float *x) {
    int D = m->cfg.dim;
    if (!m->tok_embd) { /* a lazy model (piso_model_load_lazy): the rows are converted from the file */
        for (int i = 0; i < n; i++) (void)piso_model_rows(m, 0, tokens[i], 1, x + (size_t)i * D);
        return;
    }
    for (int i = 0; i < n; i++) memcpy(x + (size_t)i * D, m->tok_embd + (size_t)tokens[i] * D, (size_t)D * sizeof *x);
}

/* One decoder block for n new positions pos0..pos0+n-1. kc, vc [pos0 + n, Hkv] hold the keys
 * and values of the earlier positions; this call writes rows pos0.. of them. */
/* stop < PISO_IN_COUNT: return right after tap `stop` is captured (x then holds the residual stream
 * as far as the block got: unchanged before the attention output, after it for ffn_in/down_in).
 * ffn_only: x already holds the residual stream after the attention output (a block stopped at
 * PISO_IN_FFN or PISO_IN_DOWN, or piso_block_o_residual); the block goes on from its FFN norm. */
static int block_forward_at(const struct piso_model *m, int layer, float *x, int n, int pos0, float *kc, float *vc,
                            struct piso_block_taps *taps, enum piso_block_input stop, int ffn_only) {
    const struct piso_config *c = &m->cfg;
    const struct piso_layer_weights *w = &m->layers[layer];
    int D = c->dim, F = c->hidden_dim, hd = c->head_dim;
    int Hq = c->n_heads * hd, Hkv = c->n_kv_heads * hd;
    size_t N = (size_t)n;
    float *buf = malloc((N * D + 2 * N * Hq + 2 * N * F) * sizeof *buf);
    double *inv = malloc((size_t)(hd / 2) * sizeof *inv);
    if (!buf || !inv) {
        free(buf);
        free(inv);
        return piso_errorf("block_forward: out of memory (window of %d tokens)", n);
    }
    float *xn = buf;                    /* [n, D] */
    float *q = xn + N * D;              /* [n, Hq] */
    float *att = q + N * Hq;            /* [n, Hq] */
    float *g = att + N * Hq;            /* [n, F] */
    float *u = g + N * F;               /* [n, F] */
    float *k = kc ? kc + (size_t)pos0 * Hkv : NULL; /* [n, Hkv] new rows of the cache (none: FFN only) */
    float *v = vc ? vc + (size_t)pos0 * Hkv : NULL;

    int rc = 0;
    if (ffn_only) goto ffn;
    /* attention */
    rmsnorm_rows(x, w->attn_norm, xn, n, D, c->norm_eps);
    quantize_linear_input(m, xn, n, D);
    if (taps && taps->attn_in) memcpy(taps->attn_in, xn, N * D * sizeof *xn);
    if (stop == PISO_IN_ATTN) goto out;
    if ((rc = block_linear(m, layer, PISO_LIN_Q, xn, w->wq, q, n, D, Hq, 0.0f)) ||
        (rc = block_linear(m, layer, PISO_LIN_K, xn, w->wk, k, n, D, Hkv, 0.0f)) ||
        (rc = block_linear(m, layer, PISO_LIN_V, xn, w->wv, v, n, D, Hkv, 0.0f)))
        goto out;
    add_bias(q, w->bq, n, Hq);
    add_bias(k, w->bk, n, Hkv);
    add_bias(v, w->bv, n, Hkv);
    head_norm(q, w->q_norm, n, c->n_heads, hd, c->norm_eps);
    head_norm(k, w->k_norm, n, c->n_kv_heads, hd, c->norm_eps);
    rope_inv_freq(m, inv);
    rope_apply(q, n, pos0, c->n_heads, hd, c->rope_style, inv);
    rope_apply(k, n, pos0, c->n_kv_heads, hd, c->rope_style, inv);
    quantize_kv_rows(m, k, n, Hkv);
    quantize_kv_rows(m, v, n, Hkv);
    rc = attention(c, q, kc, vc, att, n, pos0);
    if (rc == 0 && m->online.o_heads) /* online rotation of o_proj's input across the heads */
        rc = online_rotate_heads(att, n, c->n_heads, hd);
    if (rc == 0) {
        quantize_linear_input(m, att, n, Hq);
        if (taps && taps->o_in) memcpy(taps->o_in, att, N * Hq * sizeof *att);
        if (stop == PISO_IN_O) goto out;
        if ((rc = block_linear(m, layer, PISO_LIN_O, att, w->wo, x, n, Hq, D, 1.0f))) goto out; /* x += att · wo^T */
    }
    if (rc == 0) {
    ffn: /* SwiGLU feed-forward */
        rmsnorm_rows(x, w->ffn_norm, xn, n, D, c->norm_eps);
        quantize_linear_input(m, xn, n, D);
        if (taps && taps->ffn_in) memcpy(taps->ffn_in, xn, N * D * sizeof *xn);
        if (stop == PISO_IN_FFN) goto out;
        if ((rc = block_linear(m, layer, PISO_LIN_GATE, xn, w->w_gate, g, n, D, F, 0.0f)) ||
            (rc = block_linear(m, layer, PISO_LIN_UP, xn, w->w_up, u, n, D, F, 0.0f)))
            goto out;
#pragma omp parallel for schedule(static) if ((size_t)n * F > PAR_MIN_ELEMS)
        for (int i = 0; i < n; i++) /* by rows: the same code runs on a row for any thread count */
            for (int j = 0; j < F; j++) {
                size_t e = (size_t)i * F + j;
                g[e] = g[e] / (1.0f + expf(-g[e])) * u[e];
            }
        if (m->online.down_block) /* online rotation of down_proj's input */
            rc = piso_rotate_rows(g, n, F, F, m->online.down_block, "down_proj input rotation");
    }
    if (rc == 0) {
        quantize_linear_input(m, g, n, F);
        if (taps && taps->down_in) memcpy(taps->down_in, g, N * F * sizeof *g);
        if (stop == PISO_IN_DOWN) goto out;
        rc = block_linear(m, layer, PISO_LIN_DOWN, g, w->w_down, x, n, F, D, 1.0f);
    }
out:
    free(buf);
    free(inv);
    return rc;
}

int piso_block_forward(const struct piso_model *m, int layer, float *x, int n, struct piso_block_taps *taps) {
    if (layer < 0 || layer >= m->cfg.n_layers) return piso_errorf("block_forward: layer %d out of range", layer);
    if (n <= 0) return piso_errorf("block_forward: empty window");
    size_t Hkv = (size_t)m->cfg.n_kv_heads * m->cfg.head_dim;
    float *kv = malloc(2 * (size_t)n * Hkv * sizeof *kv);
    if (!kv) return piso_errorf("block_forward: out of memory (window of %d tokens)", n);
    int rc = block_forward_at(m, layer, x, n, 0, kv, kv + (size_t)n * Hkv, taps, PISO_IN_COUNT, 0);
    free(kv);
    return rc;
}

int piso_block_forward_until(const struct piso_model *m, int layer, float *x, int n, struct piso_block_taps *taps,
                             int stop) {
    if (layer < 0 || layer >= m->cfg.n_layers) return piso_errorf("block_forward: layer %d out of range", layer);
    if (n <= 0) return piso_errorf("block_forward: empty window");
    size_t Hkv = (size_t)m->cfg.n_kv_heads * m->cfg.head_dim;
    float *kv = malloc(2 * (size_t)n * Hkv * sizeof *kv);
    if (!kv) return piso_errorf("block_forward: out of memory (window of %d tokens)", n);
    int rc = block_forward_at(m, layer, x, n, 0, kv, kv + (size_t)n * Hkv, taps, (enum piso_block_input)stop, 0);
    free(kv);
    return rc;
}

int piso_block_ffn_until(const struct piso_model *m, int layer, float *x, int n, struct piso_block_taps *taps,
                         int stop) {
    if (layer < 0 || layer >= m->cfg.n_layers) return piso_errorf("block_forward: layer %d out of range", layer);
    if (n <= 0) return piso_errorf("block_forward: empty window");
    if (stop < PISO_IN_FFN) return piso_errorf("block_forward: the FFN part has no tap %d", stop);
    return block_forward_at(m, layer, x, n, 0, NULL, NULL, taps, (enum piso_block_input)stop, 1);
}

int piso_block_o_residual(const struct piso_model *m, int layer, float *x, const float *o_in, int n) {
    const struct piso_config *c = &m->cfg;
    return block_linear(m, layer, PISO_LIN_O, o_in, m->layers[layer].wo, x, n, c->n_heads * c->head_dim, c->dim, 1.0f);
}

int piso_block_down_residual(const struct piso_model *m, int layer, float *x, const float *down_in, int n) {
    return block_linear(m, layer, PISO_LIN_DOWN, down_in, m->layers[layer].w_down, x, n, m->cfg.hidden_dim, m->cfg.dim, 1.0f);
}

void piso_head(const struct piso_model *m, const float *x, int n, float *logits) {
    int D = m->cfg.dim;
    float *xn = malloc((size_t)n * D * sizeof *xn);
    if (!xn) { /* out of memory: one row at a time, and zeros if even that fails */
        if (n == 1) memset(logits, 0, (size_t)m->cfg.vocab_size * sizeof *logits);
        for (int i = 0; n > 1 && i < n; i++) piso_head(m, x + (size_t)i * D, 1, logits + (size_t)i * m->cfg.vocab_size);
        return;
    }
    rmsnorm_rows(x, m->out_norm, xn, n, D, m->cfg.norm_eps);
    if (m->llamacpp_weight_types)
        piso_llamacpp_act_rows(m->llamacpp_weight_types[(size_t)m->cfg.n_layers * PISO_LIN_COUNT], xn, n, D);
    linear(xn, m->output, logits, n, D, m->cfg.vocab_size, 0.0f);
    free(xn);
}

int piso_forward(const struct piso_model *m, const int *tokens, int n, int first, float *logits) {
    if (n <= 0 || first < 0 || first >= n)
        return piso_errorf("forward: need 0 <= first < n (first %d, n %d)", first, n);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->cfg.vocab_size)
            return piso_errorf("forward: token id %d at position %d is outside the vocabulary (size %d)", tokens[i], i,
                               m->cfg.vocab_size);
    float *x = malloc((size_t)n * m->cfg.dim * sizeof *x);
    if (!x) return piso_errorf("forward: out of memory (window of %d tokens)", n);
    piso_embed(m, tokens, n, x);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        if (piso_block_forward(m, l, x, n, NULL) != 0) {
            free(x);
            return -1;
        }
    }
    piso_head(m, x + (size_t)first * m->cfg.dim, n - first, logits);
    free(x);
    return 0;
}

int piso_generate_greedy(const struct piso_model *m, int *tokens, int n, int n_new, int stop_id) {
    const struct piso_config *c = &m->cfg;
    if (n <= 0) return piso_errorf("generate: the prompt has no tokens (add BOS)");
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return piso_errorf("generate: prompt token %d at position %d is outside the vocabulary", tokens[i], i);
    if (c->max_seq_len > 0 && n > c->max_seq_len)
        return piso_errorf("generate: the prompt has %d tokens, more than the model's context of %d", n, c->max_seq_len);
    if (n_new < 0) n_new = 0;
    if (c->max_seq_len > 0 && n_new > c->max_seq_len - n) n_new = c->max_seq_len - n; /* capped at the context */
    int T = n + n_new, D = c->dim, rc = 0;
    size_t Hkv = (size_t)c->n_kv_heads * c->head_dim, per_layer = (size_t)T * Hkv;
    float *cache = malloc(2 * (size_t)c->n_layers * per_layer * sizeof *cache); /* [L][2][T, Hkv] */
    float *x = malloc((size_t)n * D * sizeof *x), *logits = malloc((size_t)c->vocab_size * sizeof *logits);
    if (!cache || !x || !logits) rc = piso_errorf("generate: out of memory for %d positions", T);
    /* prefill the prompt, then one position per step; the head reads only the last row */
    int pos0 = 0, len = n;
    while (rc == 0) {
        int cur = len - pos0;
        piso_embed(m, tokens + pos0, cur, x);
        for (int l = 0; l < c->n_layers && rc == 0; l++) {
            float *kc = cache + 2 * (size_t)l * per_layer;
            rc = block_forward_at(m, l, x, cur, pos0, kc, kc + per_layer, NULL, PISO_IN_COUNT, 0);
        }
        if (rc != 0 || len >= T) break;
        piso_head(m, x + (size_t)(cur - 1) * D, 1, logits);
        int best = 0;
        for (int j = 1; j < c->vocab_size; j++)
            if (logits[j] > logits[best]) best = j;
        if (best == stop_id) break;
        tokens[len] = best;
        pos0 = len++;
    }
    free(cache);
    free(x);
    free(logits);
    return rc == 0 ? len : -1;
}
