/* The tensor schema and the architecture table (see piso/schema.h): the only place that lists a
 * decoder block's weights, and the only RoPE row reordering. */
#include "piso/schema.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define LW(field) offsetof(struct piso_layer_weights, field)
#define MW(field) offsetof(struct piso_model, field)

/* role, per_layer, label, HF name, GGUF name, llama2.c position, rows, cols, RoPE rows, presence,
 * linear, input, field */
const struct piso_tensor_info piso_schema[PISO_TR_COUNT] = {
    {PISO_TR_TOK_EMBD, 0, "token embeddings", "model.embed_tokens.weight", "token_embd.weight", 0, PISO_DIM_VOCAB,
     PISO_DIM_MODEL, PISO_ROPE_ROWS_NONE, PISO_PRESENT_ALWAYS, -1, -1, MW(tok_embd)},
    {PISO_TR_ROPE_FREQS, 0, "rope_freqs", NULL, "rope_freqs.weight", -1, PISO_DIM_HALF_HEAD, PISO_DIM_NONE,
     PISO_ROPE_ROWS_NONE, PISO_PRESENT_FILE, -1, -1, MW(rope_freq_factors)},
    {PISO_TR_ATTN_NORM, 1, "attn_norm", "input_layernorm.weight", "attn_norm.weight", 1, PISO_DIM_MODEL, PISO_DIM_NONE,
     PISO_ROPE_ROWS_NONE, PISO_PRESENT_ALWAYS, -1, -1, LW(attn_norm)},
    {PISO_TR_WQ, 1, "q_proj", "self_attn.q_proj.weight", "attn_q.weight", 2, PISO_DIM_Q, PISO_DIM_MODEL,
     PISO_ROPE_ROWS_Q, PISO_PRESENT_ALWAYS, PISO_LIN_Q, PISO_IN_ATTN, LW(wq)},
    {PISO_TR_WK, 1, "k_proj", "self_attn.k_proj.weight", "attn_k.weight", 3, PISO_DIM_KV, PISO_DIM_MODEL,
     PISO_ROPE_ROWS_KV, PISO_PRESENT_ALWAYS, PISO_LIN_K, PISO_IN_ATTN, LW(wk)},
    {PISO_TR_WV, 1, "v_proj", "self_attn.v_proj.weight", "attn_v.weight", 4, PISO_DIM_KV, PISO_DIM_MODEL,
     PISO_ROPE_ROWS_NONE, PISO_PRESENT_ALWAYS, PISO_LIN_V, PISO_IN_ATTN, LW(wv)},
    {PISO_TR_BQ, 1, "q_proj bias", "self_attn.q_proj.bias", "attn_q.bias", -1, PISO_DIM_Q, PISO_DIM_NONE,
     PISO_ROPE_ROWS_Q, PISO_PRESENT_QKV_BIAS, -1, -1, LW(bq)},
    {PISO_TR_BK, 1, "k_proj bias", "self_attn.k_proj.bias", "attn_k.bias", -1, PISO_DIM_KV, PISO_DIM_NONE,
     PISO_ROPE_ROWS_KV, PISO_PRESENT_QKV_BIAS, -1, -1, LW(bk)},
    {PISO_TR_BV, 1, "v_proj bias", "self_attn.v_proj.bias", "attn_v.bias", -1, PISO_DIM_KV, PISO_DIM_NONE,
     PISO_ROPE_ROWS_NONE, PISO_PRESENT_QKV_BIAS, -1, -1, LW(bv)},
    {PISO_TR_Q_NORM, 1, "q_norm", "self_attn.q_norm.weight", "attn_q_norm.weight", -1, PISO_DIM_HEAD, PISO_DIM_NONE,
     PISO_ROPE_ROWS_ONE, PISO_PRESENT_QK_NORM, -1, -1, LW(q_norm)},
    {PISO_TR_K_NORM, 1, "k_norm", "self_attn.k_norm.weight", "attn_k_norm.weight", -1, PISO_DIM_HEAD, PISO_DIM_NONE,
     PISO_ROPE_ROWS_ONE, PISO_PRESENT_QK_NORM, -1, -1, LW(k_norm)},
    {PISO_TR_WO, 1, "o_proj", "self_attn.o_proj.weight", "attn_output.weight", 5, PISO_DIM_MODEL, PISO_DIM_Q,
     PISO_ROPE_ROWS_NONE, PISO_PRESENT_ALWAYS, PISO_LIN_O, PISO_IN_O, LW(wo)},
    {PISO_TR_FFN_NORM, 1, "ffn_norm", "post_attention_layernorm.weight", "ffn_norm.weight", 6, PISO_DIM_MODEL,
     PISO_DIM_NONE, PISO_ROPE_ROWS_NONE, PISO_PRESENT_ALWAYS, -1, -1, LW(ffn_norm)},
    {PISO_TR_GATE, 1, "gate_proj", "mlp.gate_proj.weight", "ffn_gate.weight", 7, PISO_DIM_FFN, PISO_DIM_MODEL,
     PISO_ROPE_ROWS_NONE, PISO_PRESENT_ALWAYS, PISO_LIN_GATE, PISO_IN_FFN, LW(w_gate)},
    {PISO_TR_UP, 1, "up_proj", "mlp.up_proj.weight", "ffn_up.weight", 9, PISO_DIM_FFN, PISO_DIM_MODEL,
     PISO_ROPE_ROWS_NONE, PISO_PRESENT_ALWAYS, PISO_LIN_UP, PISO_IN_FFN, LW(w_up)},
    {PISO_TR_DOWN, 1, "down_proj", "mlp.down_proj.weight", "ffn_down.weight", 8, PISO_DIM_MODEL, PISO_DIM_FFN,
     PISO_ROPE_ROWS_NONE, PISO_PRESENT_ALWAYS, PISO_LIN_DOWN, PISO_IN_DOWN, LW(w_down)},
    {PISO_TR_OUT_NORM, 0, "final norm", "model.norm.weight", "output_norm.weight", 10, PISO_DIM_MODEL, PISO_DIM_NONE,
     PISO_ROPE_ROWS_NONE, PISO_PRESENT_ALWAYS, -1, -1, MW(out_norm)},
    {PISO_TR_OUTPUT, 0, "output head", "lm_head.weight", "output.weight", 11, PISO_DIM_VOCAB, PISO_DIM_MODEL,
     PISO_ROPE_ROWS_NONE, PISO_PRESENT_UNTIED, -1, -1, MW(output)},
};

/* The linear layers by enum piso_linear, and the width of each block input. */
static const enum piso_tensor_role linear_roles[PISO_LIN_COUNT] = {PISO_TR_WQ,   PISO_TR_WK, PISO_TR_WV,  PISO_TR_WO,
                                                                   PISO_TR_GATE, PISO_TR_UP, PISO_TR_DOWN};
static const enum piso_dim input_dims[PISO_IN_COUNT] = {PISO_DIM_MODEL, PISO_DIM_Q, PISO_DIM_MODEL, PISO_DIM_FFN};

int64_t piso_schema_dim(const struct piso_config *c, enum piso_dim d) {
    switch (d) {
    case PISO_DIM_MODEL: return c->dim;
    case PISO_DIM_FFN: return c->hidden_dim;
    case PISO_DIM_VOCAB: return c->vocab_size;
    case PISO_DIM_Q: return (int64_t)c->n_heads * c->head_dim;
    case PISO_DIM_KV: return (int64_t)c->n_kv_heads * c->head_dim;
    case PISO_DIM_HEAD: return c->head_dim;
    case PISO_DIM_HALF_HEAD: return c->head_dim / 2;
    default: return 0;
    }
}

int64_t piso_schema_numel(const struct piso_config *c, const struct piso_tensor_info *t) {
    const int64_t cols = piso_schema_dim(c, t->cols);
    return piso_schema_dim(c, t->rows) * (cols ? cols : 1);
}

int piso_schema_present(const struct piso_config *c, const struct piso_tensor_info *t) {
    switch (t->presence) {
    case PISO_PRESENT_ALWAYS: return 1;
    case PISO_PRESENT_UNTIED: return !c->tied_embeddings;
    case PISO_PRESENT_QKV_BIAS: return c->has_qkv_bias;
    case PISO_PRESENT_QK_NORM: return c->has_qk_norm;
    default: return 0;
    }
}

int piso_schema_rope_heads(const struct piso_config *c, const struct piso_tensor_info *t) {
    switch (t->rope) {
    case PISO_ROPE_ROWS_Q: return c->n_heads;
    case PISO_ROPE_ROWS_KV: return c->n_kv_heads;
    case PISO_ROPE_ROWS_ONE: return 1;
    default: return 0;
    }
}

int piso_schema_name(const struct piso_tensor_info *t, enum piso_name_style style, int layer, char *buf, size_t n) {
    const char *name = style == PISO_NAME_HF ? t->hf : t->gguf;
    if (!name) return -1;
    if (!t->per_layer) snprintf(buf, n, "%s", name);
    else if (style == PISO_NAME_HF) snprintf(buf, n, "model.layers.%d.%s", layer, name);
    else snprintf(buf, n, "blk.%d.%s", layer, name);
    return 0;
}

float **piso_schema_slot(struct piso_model *m, const struct piso_tensor_info *t, int layer) {
    char *base = t->per_layer ? (char *)&m->layers[layer] : (char *)m;
    return (float **)(void *)(base + t->offset);
}

const float *piso_schema_data(const struct piso_model *m, const struct piso_tensor_info *t, int layer) {
    const float *p = *piso_schema_slot((struct piso_model *)(uintptr_t)m, t, layer);
    if (t->role == PISO_TR_OUTPUT && (m->cfg.tied_embeddings || p == m->tok_embd)) return NULL;
    return p;
}

int piso_schema_steps(const struct piso_config *c) {
    return PISO_TR_COUNT - PISO_TR_N_BLOCK + c->n_layers * PISO_TR_N_BLOCK;
}

const struct piso_tensor_info *piso_schema_step(const struct piso_config *c, int step, int *layer) {
    const int before = PISO_TR_FIRST_BLOCK, blocks = c->n_layers * PISO_TR_N_BLOCK;
    *layer = -1;
    if (step < 0 || step >= piso_schema_steps(c)) return NULL;
    if (step < before) return &piso_schema[step];
    if (step < before + blocks) {
        *layer = (step - before) / PISO_TR_N_BLOCK;
        return &piso_schema[before + (step - before) % PISO_TR_N_BLOCK];
    }
    return &piso_schema[step - blocks + PISO_TR_N_BLOCK];
}

const struct piso_tensor_info *piso_schema_linear(enum piso_linear k) {
    return (unsigned)k < PISO_LIN_COUNT ? &piso_schema[linear_roles[k]] : NULL;
}

int64_t piso_schema_input_width(const struct piso_config *c, enum piso_block_input in) {
    return (unsigned)in < PISO_IN_COUNT ? piso_schema_dim(c, input_dims[in]) : 0;
}

float **piso_block_tap(struct piso_block_taps *t, enum piso_block_input in) {
    switch (in) {
    case PISO_IN_ATTN: return &t->attn_in;
    case PISO_IN_O: return &t->o_in;
    case PISO_IN_FFN: return &t->ffn_in;
    default: return &t->down_in;
    }
}

/* Row 2j + p of a head in adjacent order is row p*hd/2 + j in rotate-half order (p = 0, 1). */
void piso_rope_reorder(const float *src, float *dst, int heads, int head_dim, int64_t cols,
                       enum piso_rope_style to_style) {
    const int half = head_dim / 2;
    const size_t row = sizeof(float) * (size_t)cols;
    for (int h = 0; h < heads; h++)
        for (int j = 0; j < half; j++)
            for (int p = 0; p < 2; p++) {
                const size_t adj = (size_t)h * head_dim + 2 * (size_t)j + p, rot = (size_t)h * head_dim + (size_t)p * half + j;
                if (to_style == PISO_ROPE_ADJACENT) memcpy(dst + adj * (size_t)cols, src + rot * (size_t)cols, row);
                else memcpy(dst + rot * (size_t)cols, src + adj * (size_t)cols, row);
            }
}

int piso_rope_reorder_inplace(float *rows, int heads, int head_dim, int64_t cols, enum piso_rope_style to_style) {
    const size_t n = (size_t)head_dim * (size_t)cols;
    float *tmp = malloc(sizeof(float) * n);
    if (!tmp) return piso_errorf("out of memory reordering RoPE rows");
    for (int h = 0; h < heads; h++) {
        float *head = rows + (size_t)h * n;
        memcpy(tmp, head, sizeof(float) * n);
        piso_rope_reorder(tmp, head, 1, head_dim, cols, to_style);
    }
    free(tmp);
    return 0;
}

/* ---- architectures ---------------------------------------------------------------------------- */
/* llama.cpp runs qwen2/qwen3 with NEOX RoPE (pairs j, j + hd/2, as HF stores them) and llama with
 * adjacent pairs (convert_hf_to_gguf.py permutes llama's q/k). */
const struct piso_arch_info piso_archs[] = {
    {"llama", "LlamaForCausalLM", "llama", PISO_ROPE_ADJACENT, 0, 0},
    {"mistral", "MistralForCausalLM", "llama", PISO_ROPE_ADJACENT, 0, 0},
    {"qwen2", "Qwen2ForCausalLM", "qwen2", PISO_ROPE_HALF, 1, 0},
    {"qwen3", "Qwen3ForCausalLM", "qwen3", PISO_ROPE_HALF, 0, 1},
};
const int piso_n_archs = (int)(sizeof piso_archs / sizeof piso_archs[0]);

const struct piso_arch_info *piso_arch_by_name(const char *name) {
    for (int i = 0; name && i < piso_n_archs; i++)
        if (!strcmp(piso_archs[i].name, name)) return &piso_archs[i];
    return NULL;
}

const struct piso_arch_info *piso_arch_for_gguf(const struct piso_config *c) {
    const struct piso_arch_info *a = piso_arch_by_name(c->arch);
    return a ? a : &piso_archs[0];
}

const struct piso_arch_info *piso_arch_by_gguf(const char *gguf) {
    for (int i = 0; gguf && i < piso_n_archs; i++)
        if (!strcmp(piso_archs[i].gguf, gguf)) return &piso_archs[i];
    return NULL;
}
