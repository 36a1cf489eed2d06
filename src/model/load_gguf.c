/* GGUF models, architectures "llama", "qwen2" and "qwen3" (shared/docs/llamacpp-formats.md §1.5):
 * hyperparameters from <arch>.* keys, tensors by the schema's GGUF names (token_embd, output_norm,
 * output (optional: tied), blk.N.*, q/k/v biases and q/k norms). ggml ne is [in, out], i.e. exactly
 * our row-major W[out][in]. F32 tensors are used in place; other types are converted to fp32 once.
 * llama keeps q/k in the Meta layout (adjacent RoPE pairs); qwen2/qwen3 (NEOX RoPE) in rotate-half
 * order, which is reordered here. */
#include "model/model_internal.h"
#include "piso/schema.h"

#include <stdlib.h>
#include <math.h>
#include <string.h>

static int get_u32_default(const struct piso_gguf *g, const char *key, uint32_t def, uint32_t *out) {
    if (!piso_gguf_find(g, key)) {
        *out = def;
        return 0;
    }
    return piso_gguf_get_u32(g, key, out);
}

/* "<arch>.<key>" */
static const char *arch_key(char *buf, size_t n, const char *arch, const char *key) {
    snprintf(buf, n, "%s.%s", arch, key);
    return buf;
}

static int gguf_config(const struct piso_gguf *g, struct piso_config *c) {
    memset(c, 0, sizeof *c);
    const char *path = g->map.path;
    char *arch = piso_gguf_get_str(g, "general.architecture");
    if (!arch) return -1;
    const struct piso_arch_info *ai = piso_arch_by_gguf(arch);
    if (!ai) {
        char supported[128] = "";
        for (int i = 0; i < piso_n_archs; i++)
            if (piso_arch_by_gguf(piso_archs[i].gguf) == &piso_archs[i])
                snprintf(supported + strlen(supported), sizeof supported - strlen(supported), "%s\"%s\"",
                         supported[0] ? ", " : "", piso_archs[i].gguf);
        piso_errorf("%s: general.architecture = \"%s\" is not supported (%s)", path, arch, supported);
        free(arch);
        return -1;
    }
    free(arch);
    const char *A = ai->gguf;
    char k[96];
    snprintf(c->arch, sizeof c->arch, "%s", ai->name);
    uint32_t dim, ff, nl, nh, nkv, ctx, rot = 0, hd, vd;
    if (piso_gguf_get_u32(g, arch_key(k, sizeof k, A, "embedding_length"), &dim) ||
        piso_gguf_get_u32(g, arch_key(k, sizeof k, A, "block_count"), &nl) ||
        piso_gguf_get_u32(g, arch_key(k, sizeof k, A, "feed_forward_length"), &ff) ||
        piso_gguf_get_u32(g, arch_key(k, sizeof k, A, "attention.head_count"), &nh) ||
        piso_gguf_get_f32(g, arch_key(k, sizeof k, A, "attention.layer_norm_rms_epsilon"), &c->norm_eps) ||
        get_u32_default(g, arch_key(k, sizeof k, A, "context_length"), 2048, &ctx))
        return -1;
    if (get_u32_default(g, arch_key(k, sizeof k, A, "attention.head_count_kv"), nh, &nkv)) return -1;
    if (piso_gguf_find(g, arch_key(k, sizeof k, A, "rope.freq_base"))) {
        if (piso_gguf_get_f32(g, k, &c->rope_theta)) return -1;
    } else {
        c->rope_theta = 10000.0f;
    }
    if (dim > (1u << 20) || ff > (1u << 22) || nl > 4096 || nh == 0 || nh > 4096 || nkv > 4096 || ctx > (1u << 24))
        return piso_errorf("%s: implausible %s.* hyperparameters (embedding %u, ff %u, blocks %u, heads %u/%u)", path, A,
                           dim, ff, nl, nh, nkv);
    c->dim = (int)dim;
    c->hidden_dim = (int)ff;
    c->n_layers = (int)nl;
    c->n_heads = (int)nh;
    c->n_kv_heads = (int)nkv;
    c->max_seq_len = (int)ctx;
    /* head size: attention.key_length when given (Qwen3 sets it apart from dim / heads) */
    if (!piso_gguf_find(g, arch_key(k, sizeof k, A, "attention.key_length")) && c->dim % c->n_heads)
        return piso_errorf("%s: %s.embedding_length %d is not a multiple of %s.attention.head_count %d", path, A, c->dim,
                           A, c->n_heads);
    if (get_u32_default(g, k, (uint32_t)(c->dim / c->n_heads), &hd)) return -1;
    if (hd == 0 || hd > 8192) return piso_errorf("%s: %s = %u is out of range", path, k, hd);
    c->head_dim = (int)hd;
    if (get_u32_default(g, arch_key(k, sizeof k, A, "attention.value_length"), hd, &vd)) return -1;
    if (vd != hd)
        return piso_errorf("%s: %s = %u differs from the key length %u (not supported)", path, k, vd, hd);
    if (get_u32_default(g, arch_key(k, sizeof k, A, "rope.dimension_count"), (uint32_t)c->head_dim, &rot)) return -1;
    if ((int)rot != c->head_dim)
        return piso_errorf("%s: %s = %u differs from the head size %d (partial RoPE is not "
                           "supported)", path, k, rot, c->head_dim);
    const struct piso_gguf_tensor *emb = piso_gguf_find_tensor(g, "token_embd.weight");
    if (!emb) return piso_errorf("%s: tensor 'token_embd.weight' not found", path);
    c->vocab_size = (int)(emb->ne[1] < (1 << 24) ? emb->ne[1] : 0);
    c->rope_style = ai->gguf_rope; /* the file's row order; the loader reorders to adjacent pairs */
    c->has_qkv_bias = ai->qkv_bias;
    c->has_qk_norm = ai->qk_norm;
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
    float *dst = piso_model_own(m, (size_t)(ne0 * (ne1 ? ne1 : 1)));
    if (!dst) {
        piso_errorf("%s: tensor '%s': out of memory", g->map.path, name);
        return NULL;
    }
    piso_gguf_tensor_to_f32(g, t, dst);
    /* a NaN/Inf block scale (fp16 d, E8M0 255 is a finite 2^127 in ggml) poisons every value of its
     * block: refuse it, as llama.cpp's --check-tensors does */
    for (int64_t i = 0; i < ne0 * (ne1 ? ne1 : 1); i++)
        if (!isfinite(dst[i])) {
            piso_errorf("%s: tensor '%s' (%s): non-finite value at element %lld (row %lld, block %lld): a NaN/Inf scale?",
                        g->map.path, name, tr->name, (long long)i, (long long)(i / ne0), (long long)((i % ne0) / tr->blck_size));
            return NULL;
        }
    /* NVFP4 weights may carry llama.cpp's per-tensor scale "NAME.scale" (F32, one value) */
    const size_t len = strlen(name);
    if (t->type == GGML_T_NVFP4 && len > 7 && !strcmp(name + len - 7, ".weight")) {
        char sn[160];
        snprintf(sn, sizeof sn, "%.*s.scale", (int)(len - 7), name);
        const struct piso_gguf_tensor *st = piso_gguf_find_tensor(g, sn);
        if (st) {
            float s;
            if (st->type != GGML_T_F32 || st->ne[0] * st->ne[1] * st->ne[2] * st->ne[3] != 1) {
                piso_errorf("%s: tensor '%s': expected one F32 value", g->map.path, sn);
                return NULL;
            }
            memcpy(&s, st->data, sizeof s);
            if (!isfinite(s)) {
                piso_errorf("%s: tensor '%s': non-finite scale %g", g->map.path, sn, (double)s);
                return NULL;
            }
            for (int64_t i = 0; i < ne0 * (ne1 ? ne1 : 1); i++) dst[i] *= s;
        }
    }
    return dst;
}

int piso_load_gguf(const char *path, struct piso_model **out) {
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
    for (int64_t i = 0; i < g->n_tensors; i++) { /* the file describes itself consistently */
        long blk;
        int used = 0;
        if (sscanf(g->tensors[i].name, "blk.%ld.%n", &blk, &used) == 1 && used > 0 && (blk < 0 || blk >= c.n_layers)) {
            piso_errorf("%s: tensor '%s' is in block %ld, but %s.block_count = %d", path, g->tensors[i].name, blk,
                        c.arch, c.n_layers);
            piso_gguf_close(g);
            free(g);
            return -1;
        }
    }
    struct piso_model *m = piso_model_new(&c, path);
    if (!m) {
        piso_gguf_close(g);
        free(g);
        return -1;
    }
    m->storage->gguf = g;
    struct piso_config *mc = &m->cfg;
    char name[96];
    /* every tensor of the schema; the output head, rope_freqs, biases (llama.cpp reads them in any
     * architecture) and q/k norms not required by the architecture are optional */
    for (int s = 0, l; s < piso_schema_steps(mc); s++) {
        const struct piso_tensor_info *t = piso_schema_step(mc, s, &l);
        piso_schema_name(t, PISO_NAME_GGUF, l, name, sizeof name);
        const int optional = t->presence == PISO_PRESENT_UNTIED || t->presence == PISO_PRESENT_QKV_BIAS ||
                             !piso_schema_present(mc, t);
        const int64_t rows = piso_schema_dim(mc, t->rows), cols = piso_schema_dim(mc, t->cols);
        float *p = gguf_weight(m, name, cols ? cols : rows, cols ? rows : 0, optional); /* ne = [cols, rows] */
        if (!p && (!optional || piso_gguf_find_tensor(g, name))) goto fail; /* missing or misshapen */
        *piso_schema_slot(m, t, l) = p;
    }
    mc->tied_embeddings = m->output == NULL;
    if (!m->output) m->output = m->tok_embd;
    mc->has_qkv_bias = mc->has_qk_norm = 0;
    for (int l = 0; l < mc->n_layers; l++) {
        const struct piso_layer_weights *w = &m->layers[l];
        if (!!w->bq != !!w->bk || !!w->bq != !!w->bv) {
            piso_errorf("%s: block %d: attn_q/k/v biases must all be present or all absent", path, l);
            goto fail;
        }
        if (!!w->q_norm != !!w->k_norm) {
            piso_errorf("%s: block %d: attn_q_norm and attn_k_norm must both be present or absent", path, l);
            goto fail;
        }
        mc->has_qkv_bias |= w->bq != NULL;
        mc->has_qk_norm |= w->q_norm != NULL;
    }
    /* NEOX architectures (qwen2, qwen3) store q/k rows rotate-half, as HF does */
    if (mc->rope_style == PISO_ROPE_HALF && piso_model_rope_rows_to_adjacent(m) != 0) goto fail;
    *out = m;
    return 0;
fail:
    piso_model_free(m);
    return -1;
}
