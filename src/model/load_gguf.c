/* GGUF models, architecture "llama" (shared/docs/llamacpp-formats.md §1.5): hyperparameters from
 * llama.* keys, tensors token_embd / output_norm / output (optional: tied) / blk.N.*. ggml ne is
 * [in, out], i.e. exactly our row-major W[out][in]. F32 tensors are used in place; other types
 * are converted to fp32 once. q/k are in the Meta layout: RoPE on adjacent pairs. */
#include "model/model_internal.h"

#include <stdlib.h>
#include <string.h>

static int get_u32_default(const struct piso_gguf *g, const char *key, uint32_t def, uint32_t *out) {
    if (!piso_gguf_find(g, key)) {
        *out = def;
        return 0;
    }
    return piso_gguf_get_u32(g, key, out);
}

static int gguf_config(const struct piso_gguf *g, struct piso_config *c) {
    memset(c, 0, sizeof *c);
    const char *path = g->map.path;
    char *arch = piso_gguf_get_str(g, "general.architecture");
    if (!arch) return -1;
    if (strcmp(arch, "llama") != 0) {
        piso_errorf("%s: general.architecture = \"%s\" is not supported (only \"llama\")", path, arch);
        free(arch);
        return -1;
    }
    free(arch);
    snprintf(c->arch, sizeof c->arch, "llama");
    uint32_t dim, ff, nl, nh, nkv, ctx, rot = 0;
    if (piso_gguf_get_u32(g, "llama.embedding_length", &dim) || piso_gguf_get_u32(g, "llama.block_count", &nl) ||
        piso_gguf_get_u32(g, "llama.feed_forward_length", &ff) ||
        piso_gguf_get_u32(g, "llama.attention.head_count", &nh) ||
        piso_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &c->norm_eps) ||
        get_u32_default(g, "llama.context_length", 2048, &ctx))
        return -1;
    if (get_u32_default(g, "llama.attention.head_count_kv", nh, &nkv)) return -1;
    if (piso_gguf_find(g, "llama.rope.freq_base")) {
        if (piso_gguf_get_f32(g, "llama.rope.freq_base", &c->rope_theta)) return -1;
    } else {
        c->rope_theta = 10000.0f;
    }
    if (dim > (1u << 20) || ff > (1u << 22) || nl > 4096 || nh == 0 || nh > 4096 || nkv > 4096 || ctx > (1u << 24))
        return piso_errorf("%s: implausible llama.* hyperparameters (embedding %u, ff %u, blocks %u, heads %u/%u)", path,
                           dim, ff, nl, nh, nkv);
    c->dim = (int)dim;
    c->hidden_dim = (int)ff;
    c->n_layers = (int)nl;
    c->n_heads = (int)nh;
    c->n_kv_heads = (int)nkv;
    c->max_seq_len = (int)ctx;
    c->head_dim = c->dim / c->n_heads;
    if (c->dim % c->n_heads) return piso_errorf("%s: llama.embedding_length %d is not a multiple of llama.attention.head_count %d", path, c->dim, c->n_heads);
    if (get_u32_default(g, "llama.rope.dimension_count", (uint32_t)c->head_dim, &rot)) return -1;
    if ((int)rot != c->head_dim)
        return piso_errorf("%s: llama.rope.dimension_count = %u differs from the head size %d (partial RoPE is not "
                           "supported)", path, rot, c->head_dim);
    const struct piso_gguf_tensor *emb = piso_gguf_find_tensor(g, "token_embd.weight");
    if (!emb) return piso_errorf("%s: tensor 'token_embd.weight' not found", path);
    c->vocab_size = (int)(emb->ne[1] < (1 << 24) ? emb->ne[1] : 0);
    c->rope_style = PISO_ROPE_ADJACENT;
    c->source = PISO_SRC_GGUF;
    c->dtype = piso_ggml_traits(emb->type)->dtype; /* a known type: checked at open */
    return piso_config_validate(c, path);
}

/* Tensor `name` with ggml ne = [ne0, ne1] (ne1 == 0: 1-D [ne0]) as fp32. */
static float *gguf_weight(struct piso_model *m, const char *name, int64_t ne0, int64_t ne1, int optional) {
    const struct piso_gguf *g = m->storage->gguf;
    const struct piso_gguf_tensor *t = piso_gguf_find_tensor(g, name);
    if (!t) {
        if (!optional) piso_errorf("%s: tensor '%s' not found", g->map.path, name);
        return NULL;
    }
    int nd = ne1 ? 2 : 1;
    if (t->n_dims != nd || t->ne[0] != ne0 || (ne1 && t->ne[1] != ne1)) {
        piso_errorf("%s: tensor '%s': %d dims ne = [%lld, %lld], expected [%lld, %lld]", g->map.path, name, t->n_dims,
                    (long long)t->ne[0], (long long)t->ne[1], (long long)ne0, (long long)(ne1 ? ne1 : 1));
        return NULL;
    }
    if (t->type == GGML_T_F32 && (uintptr_t)t->data % sizeof(float) == 0) return (float *)(uintptr_t)t->data;
    const struct piso_ggml_traits *tr = piso_ggml_traits(t->type);
    if (!tr || !tr->to_float) {
        piso_errorf("%s: tensor '%s': type %s cannot be converted to f32", g->map.path, name, tr ? tr->name : "?");
        return NULL;
    }
    float *dst = model_own(m, (size_t)(ne0 * (ne1 ? ne1 : 1)));
    if (!dst) {
        piso_errorf("%s: tensor '%s': out of memory", g->map.path, name);
        return NULL;
    }
    piso_gguf_tensor_to_f32(g, t, dst);
    return dst;
}

int load_gguf(const char *path, struct piso_model **out) {
    struct piso_gguf *g = calloc(1, sizeof *g);
    if (piso_gguf_open(g, path) != 0) {
        free(g);
        return -1;
    }
    struct piso_config c;
    if (gguf_config(g, &c) != 0) {
        piso_gguf_close(g);
        free(g);
        return -1;
    }
    struct piso_model *m = model_new(&c, path);
    m->storage->gguf = g;
    int64_t D = c.dim, F = c.hidden_dim, V = c.vocab_size, hd = c.head_dim;
    int64_t Hq = (int64_t)c.n_heads * hd, Hkv = (int64_t)c.n_kv_heads * hd;
    char name[96];
#define W(dst, ne0, ne1, opt, ...)                                                                     \
    do {                                                                                           \
        snprintf(name, sizeof name, __VA_ARGS__);                                                  \
        dst = gguf_weight(m, name, ne0, ne1, opt);                                                 \
        if (!dst && (!(opt) || piso_gguf_find_tensor(g, name))) goto fail;                         \
    } while (0)
    W(m->tok_embd, D, V, 0, "token_embd.weight");
    W(m->out_norm, D, 0, 0, "output_norm.weight");
    W(m->output, D, V, 1, "output.weight");
    m->cfg.tied_embeddings = m->output == NULL;
    if (!m->output) m->output = m->tok_embd;
    W(m->rope_freq_factors, hd / 2, 0, 1, "rope_freqs.weight");
    for (int l = 0; l < c.n_layers; l++) {
        struct piso_layer_weights *w = &m->layers[l];
        W(w->attn_norm, D, 0, 0, "blk.%d.attn_norm.weight", l);
        W(w->wq, D, Hq, 0, "blk.%d.attn_q.weight", l);
        W(w->wk, D, Hkv, 0, "blk.%d.attn_k.weight", l);
        W(w->wv, D, Hkv, 0, "blk.%d.attn_v.weight", l);
        W(w->wo, Hq, D, 0, "blk.%d.attn_output.weight", l);
        W(w->ffn_norm, D, 0, 0, "blk.%d.ffn_norm.weight", l);
        W(w->w_gate, D, F, 0, "blk.%d.ffn_gate.weight", l);
        W(w->w_up, D, F, 0, "blk.%d.ffn_up.weight", l);
        W(w->w_down, F, D, 0, "blk.%d.ffn_down.weight", l);
    }
#undef W
    *out = m;
    return 0;
fail:
    piso_model_free(m);
    return -1;
}
