/* piso/schema.h — the one description of a model's tensors, and of the architectures.
 *
 * Every loader (HF, GGUF, llama2.c), both exporters, the calibration pipeline and the imatrix walk
 * these tables instead of writing the tensor list out themselves. A row of piso_schema[] says, for
 * one weight: its role, HF and GGUF names, llama2.c position, shape from the config, whether its
 * rows follow the RoPE pairing (and for which head count), when it exists (always, tied output,
 * q/k/v bias, q/k norm), whether it is a quantizable linear layer and which block input it reads.
 * The architecture table maps piso's arch names to HF classes, GGUF architectures and the RoPE row
 * order each GGUF architecture expects. */
#ifndef PISO_SCHEMA_H
#define PISO_SCHEMA_H

#include "piso/model.h"

/* Roles, in file order: the global tensors written before the blocks, the tensors of one block,
 * the global tensors written after the blocks. */
enum piso_tensor_role {
    PISO_TR_TOK_EMBD = 0,
    PISO_TR_ROPE_FREQS, /* GGUF only: Llama-3 RoPE frequency divisors */
    PISO_TR_ATTN_NORM,  /* first tensor of a block */
    PISO_TR_WQ,
    PISO_TR_WK,
    PISO_TR_WV,
    PISO_TR_BQ,
    PISO_TR_BK,
    PISO_TR_BV,
    PISO_TR_Q_NORM,
    PISO_TR_K_NORM,
    PISO_TR_WO,
    PISO_TR_FFN_NORM,
    PISO_TR_GATE,
    PISO_TR_UP,
    PISO_TR_DOWN, /* last tensor of a block */
    PISO_TR_OUT_NORM,
    PISO_TR_OUTPUT,
    PISO_TR_COUNT
};
#define PISO_TR_FIRST_BLOCK PISO_TR_ATTN_NORM
#define PISO_TR_N_BLOCK (PISO_TR_DOWN - PISO_TR_ATTN_NORM + 1)

/* Sizes a shape is made of, read from the config. */
enum piso_dim {
    PISO_DIM_NONE = 0, /* no second dimension: a 1-D tensor */
    PISO_DIM_MODEL,    /* dim */
    PISO_DIM_FFN,      /* hidden_dim */
    PISO_DIM_VOCAB,    /* vocab_size */
    PISO_DIM_Q,        /* n_heads * head_dim */
    PISO_DIM_KV,       /* n_kv_heads * head_dim */
    PISO_DIM_HEAD,     /* head_dim */
    PISO_DIM_HALF_HEAD /* head_dim / 2 */
};

/* Which rows carry RoPE pairs: the tensor is reordered between rotate-half and adjacent pairs
 * over this many heads of head_dim rows. */
enum piso_rope_rows { PISO_ROPE_ROWS_NONE = 0, PISO_ROPE_ROWS_Q, PISO_ROPE_ROWS_KV, PISO_ROPE_ROWS_ONE };

/* When a tensor exists. */
enum piso_presence {
    PISO_PRESENT_ALWAYS = 0,
    PISO_PRESENT_UNTIED,   /* output head: absent when tied to the embeddings */
    PISO_PRESENT_QKV_BIAS, /* cfg.has_qkv_bias (Qwen2) */
    PISO_PRESENT_QK_NORM,  /* cfg.has_qk_norm (Qwen3) */
    PISO_PRESENT_FILE      /* only when a file carries it (rope_freqs) */
};

/* Linear layers of a block in data-flow order (the order the pipeline quantizes them). */
enum piso_linear { PISO_LIN_Q = 0, PISO_LIN_K, PISO_LIN_V, PISO_LIN_O, PISO_LIN_GATE, PISO_LIN_UP, PISO_LIN_DOWN,
                   PISO_LIN_COUNT };

/* The four distinct inputs of a block's linear layers (fields of struct piso_block_taps). */
enum piso_block_input { PISO_IN_ATTN = 0, PISO_IN_O, PISO_IN_FFN, PISO_IN_DOWN, PISO_IN_COUNT };

struct piso_tensor_info {
    enum piso_tensor_role role;
    int per_layer;             /* 1: one per block */
    const char *label;         /* for messages: "q_proj", "token embeddings" */
    const char *hf;            /* HF name, after "model.layers.N." for block tensors; NULL: not in HF */
    const char *gguf;          /* GGUF name, after "blk.N." for block tensors */
    int llama2c;               /* position in the llama2.c checkpoint; -1: not stored there */
    enum piso_dim rows, cols;  /* W[rows][cols] (PyTorch layout; ggml ne = [cols, rows]) */
    enum piso_rope_rows rope;
    enum piso_presence presence;
    int linear;                /* enum piso_linear, -1: not a quantizable linear layer */
    int input;                 /* enum piso_block_input of the linear, -1 */
    size_t offset;             /* of the float * in struct piso_layer_weights (per_layer) or piso_model */
};

/* Indexed by role. */
extern const struct piso_tensor_info piso_schema[PISO_TR_COUNT];

int64_t piso_schema_dim(const struct piso_config *c, enum piso_dim d); /* 0 for PISO_DIM_NONE */
/* Number of floats of the tensor (rows * cols, or rows when 1-D). */
int64_t piso_schema_numel(const struct piso_config *c, const struct piso_tensor_info *t);
/* Whether the config says the tensor exists (PISO_PRESENT_FILE: never). */
int piso_schema_present(const struct piso_config *c, const struct piso_tensor_info *t);
/* Heads the tensor's rows are reordered over for RoPE (0: none). */
int piso_schema_rope_heads(const struct piso_config *c, const struct piso_tensor_info *t);

enum piso_name_style { PISO_NAME_HF = 0, PISO_NAME_GGUF };
/* Full name of the tensor in block `layer` (ignored for globals); -1 when that format has none. */
int piso_schema_name(const struct piso_tensor_info *t, enum piso_name_style style, int layer, char *buf, size_t n);

/* The model's pointer to the tensor (the field itself, for loaders to fill). */
float **piso_schema_slot(struct piso_model *m, const struct piso_tensor_info *t, int layer);
/* The tensor's data, NULL when the model has none (the output head of a tied model is NULL). */
const float *piso_schema_data(const struct piso_model *m, const struct piso_tensor_info *t, int layer);

/* File order: step 0 .. piso_schema_steps(c)-1 visits the globals before the blocks, every block's
 * tensors for layer 0..n_layers-1, then the globals after the blocks. Returns the tensor of a step
 * and its layer (-1 for globals). Absent tensors are visited too: callers check presence. */
int piso_schema_steps(const struct piso_config *c);
const struct piso_tensor_info *piso_schema_step(const struct piso_config *c, int step, int *layer);

const struct piso_tensor_info *piso_schema_linear(enum piso_linear k);
/* Width of a block input: dim, n_heads*head_dim or hidden_dim. */
int64_t piso_schema_input_width(const struct piso_config *c, enum piso_block_input in);
/* The field of the taps that captures a block input. */
float **piso_block_tap(struct piso_block_taps *t, enum piso_block_input in);

/* Reorders RoPE rows [heads * head_dim, cols] from src into dst (distinct buffers). to_style
 * PISO_ROPE_ADJACENT: src pairs (j, j + hd/2) per head (HF rotate-half, GGUF NEOX) become rows
 * (2j, 2j+1); PISO_ROPE_HALF: the inverse. */
void piso_rope_reorder(const float *src, float *dst, int heads, int head_dim, int64_t cols,
                       enum piso_rope_style to_style);
/* The same in place (one head of scratch). */
int piso_rope_reorder_inplace(float *rows, int heads, int head_dim, int64_t cols, enum piso_rope_style to_style);

/* ---- architectures ---------------------------------------------------------------------------- */
struct piso_arch_info {
    const char *name;                /* piso_config.arch */
    const char *hf_class;            /* config.json "architectures" */
    const char *gguf;                /* general.architecture */
    enum piso_rope_style gguf_rope;  /* q/k row order llama.cpp expects for that architecture */
    int qkv_bias, qk_norm;           /* the architecture has q/k/v biases, q/k RMSNorm */
};
extern const struct piso_arch_info piso_archs[];
extern const int piso_n_archs;
/* By piso name; NULL when unknown. */
const struct piso_arch_info *piso_arch_by_name(const char *name);
/* The architecture a GGUF export of this config is written as (unknown arch names: llama). */
const struct piso_arch_info *piso_arch_for_gguf(const struct piso_config *c);
/* By GGUF general.architecture (the first arch writing it); NULL when unsupported. */
const struct piso_arch_info *piso_arch_by_gguf(const char *gguf);

#endif
