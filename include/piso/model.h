/* piso/model.h — decoder-only transformer models (Llama family) and their forward pass.
 *
 * Weights are fp32 in the PyTorch layout W[out][in] (row-major, "y = W x"). Loaders map files
 * with mmap (copy-on-write): F32 tensors are used in place, F16/BF16/quantized ones are converted
 * once. Writing a weight (quantization) touches only that weight's pages. */
#ifndef PISO_MODEL_H
#define PISO_MODEL_H

#include "piso/act_quant.h"
#include "piso/common.h"
#include "piso/tokenizer.h"

enum piso_rope_style {
    PISO_ROPE_ADJACENT = 0, /* pairs (2j, 2j+1): llama2.c, GGUF/llama.cpp */
    PISO_ROPE_HALF,         /* pairs (j, j + head_dim/2): HF "rotate_half" */
};

enum piso_model_source { PISO_SRC_HF = 0, PISO_SRC_LLAMA2C, PISO_SRC_GGUF };

struct piso_config {
    char arch[32];          /* "llama", "mistral", "qwen2", "qwen3" */
    int dim;                /* hidden size */
    int hidden_dim;         /* FFN intermediate size */
    int n_layers, n_heads, n_kv_heads, head_dim;
    int vocab_size;
    int max_seq_len;        /* context the model was trained for */
    float norm_eps, rope_theta;
    enum piso_rope_style rope_style;
    int rope_llama3;        /* Llama-3 rope_scaling */
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_orig_ctx;
    int has_qkv_bias;       /* Qwen2 */
    int has_qk_norm;        /* Qwen3: RMSNorm on q and k per head */
    int tied_embeddings;    /* output == tok_embd */
    enum piso_dtype dtype;  /* storage dtype of the source weights (F32/F16/BF16) */
    enum piso_model_source source;
};

/* Shapes: D = dim, F = hidden_dim, Hq = n_heads*head_dim, Hkv = n_kv_heads*head_dim. */
struct piso_layer_weights {
    float *attn_norm;           /* [D] */
    float *wq, *wk, *wv;        /* [Hq, D], [Hkv, D], [Hkv, D] */
    float *bq, *bk, *bv;        /* [Hq], [Hkv], [Hkv] or NULL */
    float *q_norm, *k_norm;     /* [head_dim] or NULL */
    float *wo;                  /* [D, Hq] */
    float *ffn_norm;            /* [D] */
    float *w_gate, *w_up;       /* [F, D] (llama2.c w1, w3) */
    float *w_down;              /* [D, F] (llama2.c w2) */
};

struct piso_model_storage; /* loader-private: mappings and owned buffers */

/* Rotations the runtime applies to linear inputs because they cannot be merged into the weights
 * (see piso/transform.h; the weights hold the matching rotation). 0 = none. */
struct piso_online_rotations {
    int down_block;             /* w_down input [F]: normalized Hadamard on blocks of down_block (F: full) */
    int o_heads;                /* wo input [Hq]: normalized Hadamard of size n_heads across the heads
                                   (H_nh ⊗ I_hd), set to n_heads when on */
};

struct piso_model {
    struct piso_config cfg;
    float *tok_embd;            /* [vocab, D] */
    struct piso_layer_weights *layers; /* [n_layers] */
    float *out_norm;            /* [D] */
    float *output;              /* [vocab, D]; == tok_embd when tied */
    float *rope_freq_factors;   /* [head_dim/2] or NULL: GGUF rope_freqs.weight, divides each
                                   RoPE frequency (how llama.cpp stores Llama-3 scaling) */
    struct piso_tokenizer *tok; /* may be NULL when the model carries none */
    struct piso_online_rotations online; /* run by the forward pass; recorded in transform.json */
    char *path;
    struct piso_model_storage *storage;
    /* Activation quantization the forward pass applies (zeroed: none). Set by
     * piso_act_quant_init, or read from an output directory's quantization.json by the loader. */
    struct piso_act_quant act;
    /* A simulated integer matmul with a narrow accumulator for the linear layers of the blocks
     * (piso/accum_sim.h; NULL: the float path). Not owned. */
    struct piso_accum_sim *accum_sim;
    /* llama.cpp's CPU activation rounding (piso/llamacpp_act.h; NULL: off): the ggml type of every
     * linear weight [n_layers * PISO_LIN_COUNT], then the output head's. Owned. */
    int *llamacpp_weight_types;
};

/* path: an HF directory, a llama2.c .bin (tokenizer.bin/tok512.bin beside it is picked up) or a
 * .gguf file. tokenizer_path overrides the tokenizer (may be NULL). Errors name the file and field. */
int piso_model_load(const char *path, const char *tokenizer_path, struct piso_model **out);
void piso_model_free(struct piso_model *m);
/* The same for an HF directory, streaming: the shards stay mapped and every block weight, the
 * embeddings and the output head stay in their source dtype (F32/F16/BF16). A block's weights exist
 * as writable F32 only between piso_model_block_acquire and _release (NULL otherwise); embedding
 * rows are converted on lookup (piso_embed); the output head is never converted (piso_head and
 * piso_forward must not be used). Every tensor's shape and dtype, and every value's finiteness
 * (block weights: at acquire), are checked as piso_model_load checks them. Packed checkpoints and
 * other formats are refused (use piso_model_load). */
int piso_model_load_lazy(const char *path, const char *tokenizer_path, struct piso_model **out);
/* 1 when path is a model piso_model_load_lazy reads: an HF directory (config.json) of dense
 * weights (no quantization_config) without online rotations (no transform.json). */
int piso_model_can_stream(const char *path);
/* 1 for a model from piso_model_load_lazy. */
int piso_model_is_lazy(const struct piso_model *m);
/* Converts block b's weights to F32 (owned, writable; q/k rows in piso's RoPE order). No-op for
 * models not loaded lazily, and for a block already acquired. Errors name the file and tensor. */
int piso_model_block_acquire(struct piso_model *m, int b);
/* Frees block b's F32 weights (pointers back to NULL). No-op for models not loaded lazily. */
void piso_model_block_release(struct piso_model *m, int b);
/* Lazy models: acquire then converts only the norms and biases of a block; each linear weight is
 * converted from the file when it is used (piso_model_linear_f32) and freed after, so only one
 * linear at a time is held in F32 (for a model that is only read, e.g. the float side of
 * quantization). The values are the same. No-op for models not loaded lazily. */
void piso_model_set_linears_on_demand(struct piso_model *m, int on);
/* Linear k (enum piso_linear) of block `layer` as F32: the model's own weights when it holds them (*owned NULL), or,
 * for a lazy model whose linears are converted on demand, a conversion from the file into *owned
 * (the caller frees it). NULL with an error naming the file and tensor on failure. */
const float *piso_model_linear_f32(const struct piso_model *m, int layer, int k, float **owned);
/* Lazy models: forgets the pages of the files read so far (they stay cached by the kernel, but no
 * longer count in this process's memory); no-op otherwise. */
void piso_model_drop_file_pages(const struct piso_model *m);
/* Rows [row0, row0 + n) of the embeddings (or, with output set, of the output head; tied: the
 * embeddings) as F32, from the model's memory or its file. */
int piso_model_rows(const struct piso_model *m, int output, int64_t row0, int64_t n, float *dst);
/* Makes every weight of the model privately owned and writable (for in-place quantization).
 * Weights are copy-on-write mappings or owned buffers, so writing never touches the files.
 * Tied models keep output == tok_embd: writing one writes the other. */
int piso_model_make_writable(struct piso_model *m);
/* Gives the output head its own copy of the embeddings (tied models; no-op otherwise) and marks
 * the config untied, so that the two can be transformed differently. */
int piso_model_untie(struct piso_model *m);
/* A model with every weight allocated (zeroed, owned) for cfg: norms, biases (has_qkv_bias),
 * q/k norms (has_qk_norm); output aliases tok_embd when tied_embeddings. For tests, benchmarks
 * and converters. The config is validated (clear error on impossible shapes). */
int piso_model_alloc(const struct piso_config *cfg, struct piso_model **out);
/* Checks a config for consistency (positive sizes, heads divide, even head_dim); `what` names
 * the source in the message. */
int piso_config_validate(const struct piso_config *cfg, const char *what);

/* ---- forward pass ---------------------------------------------------------------------------
 * Batched causal prefill over one window of n tokens at positions 0..n-1 (no KV cache reuse). */

/* Inputs of the linear layers of one block, captured when non-NULL (each [n, in_features]), as the
 * linear layers see them: after the model's activation quantization (m->act). */
struct piso_block_taps {
    float *attn_in;   /* [n, D]  input of wq, wk, wv (after attn_norm) */
    float *o_in;      /* [n, Hq] input of wo (attention output) */
    float *ffn_in;    /* [n, D]  input of w_gate, w_up (after ffn_norm) */
    float *down_in;   /* [n, F]  input of w_down (silu(gate) * up) */
};

/* x [n, D] <- embeddings of tokens[n] (ids must be in [0, vocab); piso_forward checks them). */
void piso_embed(const struct piso_model *m, const int *tokens, int n, float *x);
/* Runs decoder block `layer` on the residual stream x [n, D] in place; fills taps if given. */
int piso_block_forward(const struct piso_model *m, int layer, float *x, int n, struct piso_block_taps *taps);
/* The same, stopping right after tap `stop` (an enum piso_block_input of piso/schema.h) is captured (the calibration pipeline needs a stage's
 * input, not the rest of the block): x then holds the residual stream as far as the block got
 * (after the attention output for PISO_IN_FFN and PISO_IN_DOWN). The captured values are bitwise
 * those of piso_block_forward. */
int piso_block_forward_until(const struct piso_model *m, int layer, float *x, int n, struct piso_block_taps *taps,
                             int stop);
/* x [n, D] += o_in [n, Hq] · w_oᵀ: the attention output added to the residual stream, from the
 * o_in tap of piso_block_forward_until(…, PISO_IN_O), bitwise as piso_block_forward would. */
int piso_block_o_residual(const struct piso_model *m, int layer, float *x, const float *o_in, int n);
/* The rest of a block from its FFN norm, x [n, D] holding the residual stream after the attention
 * output (piso_block_o_residual, or a block stopped at PISO_IN_FFN/PISO_IN_DOWN), stopping after tap
 * `stop` (PISO_IN_FFN or PISO_IN_DOWN; PISO_IN_COUNT: the whole block). The same bits as one
 * piso_block_forward. */
int piso_block_ffn_until(const struct piso_model *m, int layer, float *x, int n, struct piso_block_taps *taps,
                         int stop);
/* x [n, D] += down_in [n, F] · w_downᵀ: completes a block stopped at PISO_IN_DOWN, bitwise as
 * piso_block_forward would have. −1 only when a lazy model's weight cannot be read. */
int piso_block_down_residual(const struct piso_model *m, int layer, float *x, const float *down_in, int n);
/* logits [n, vocab] <- output(out_norm(x)) for the n rows of x [n, D]. */
void piso_head(const struct piso_model *m, const float *x, int n, float *logits);
/* Whole model: logits for positions first..n-1 into logits [n - first, vocab]. Token ids are
 * checked against the vocabulary (error, no crash). */
int piso_forward(const struct piso_model *m, const int *tokens, int n, int first, float *logits);
/* Greedy decoding: appends up to n_new argmax tokens to tokens[0..n) (capacity n + n_new),
 * stopping early when the argmax equals stop_id (not appended; stop_id < 0 never stops). Returns the
 * new length, or -1 with an error. The sequence never grows past the model's context (max_seq_len):
 * n_new is capped there, and a prompt longer than the context is an error. */
int piso_generate_greedy(const struct piso_model *m, int *tokens, int n, int n_new, int stop_id);

#endif
