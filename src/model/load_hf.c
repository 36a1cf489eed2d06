/* Hugging Face model directories: config.json + model.safetensors, or shards listed in
 * model.safetensors.index.json. Llama (incl. Llama-3 rope_scaling), Mistral, Qwen2 (q/k/v bias),
 * Qwen3 (q/k RMSNorm); tied embeddings. F32 tensors are used in place from the copy-on-write
 * mapping, F16/BF16 are converted once into owned buffers. RoPE is HF rotate-half. */
#include "model/model_internal.h"
#include "piso/schema.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct hf_ctx {
    const char *dir;
    char *config_path;
    cJSON *cfg;
    struct piso_ckpt_info ckpt; /* quantization_config (GPTQ, compressed-tensors) */
};

/* Reads an integer field; `def` < 0 means required. */
static int cfg_int(struct hf_ctx *h, const char *key, int def, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(h->cfg, key);
    if (!v || cJSON_IsNull(v)) {
        if (def < 0) return piso_errorf("%s: missing field \"%s\"", h->config_path, key);
        *out = def;
        return 0;
    }
    /* range first: casting an out-of-range double to int is undefined */
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble <= 1e9) ||
        v->valuedouble != (double)(int)v->valuedouble)
        return piso_errorf("%s: field \"%s\" must be a non-negative integer (at most 1e9)", h->config_path, key);
    *out = (int)v->valuedouble;
    return 0;
}

static int num_field(const char *path, const cJSON *obj, const char *key, double def, int required, float *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return piso_errorf("%s: missing field \"%s\"", path, key);
        *out = (float)def;
        return 0;
    }
    if (!cJSON_IsNumber(v)) return piso_errorf("%s: field \"%s\" must be a number", path, key);
    *out = (float)v->valuedouble;
    return 0;
}

static int parse_config(struct hf_ctx *h, struct piso_config *c) {
    memset(c, 0, sizeof *c);
    c->source = PISO_SRC_HF;
    c->rope_style = PISO_ROPE_HALF;
    const cJSON *archs = cJSON_GetObjectItemCaseSensitive(h->cfg, "architectures");
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(h->cfg, "model_type");
    const char *arch = NULL;
    if (cJSON_IsArray(archs) && cJSON_IsString(cJSON_GetArrayItem(archs, 0)))
        arch = cJSON_GetArrayItem(archs, 0)->valuestring;
    const struct piso_arch_info *ai = NULL;
    for (int i = 0; i < piso_n_archs; i++) {
        if ((arch && !strcmp(arch, piso_archs[i].hf_class)) ||
            (!arch && cJSON_IsString(mt) && !strcmp(mt->valuestring, piso_archs[i].name)))
            ai = &piso_archs[i];
    }
    if (!ai) {
        char supported[256] = "";
        for (int i = 0; i < piso_n_archs; i++)
            snprintf(supported + strlen(supported), sizeof supported - strlen(supported), "%s%s", i ? ", " : "",
                     piso_archs[i].hf_class);
        return piso_errorf("%s: unsupported architecture \"%s\" (field \"architectures\"; supported: %s)",
                           h->config_path, arch ? arch : cJSON_IsString(mt) ? mt->valuestring : "(missing)", supported);
    }
    snprintf(c->arch, sizeof c->arch, "%s", ai->name);
    if (cfg_int(h, "hidden_size", -1, &c->dim) || cfg_int(h, "intermediate_size", -1, &c->hidden_dim) ||
        cfg_int(h, "num_hidden_layers", -1, &c->n_layers) || cfg_int(h, "num_attention_heads", -1, &c->n_heads) ||
        cfg_int(h, "num_key_value_heads", c->n_heads, &c->n_kv_heads) ||
        cfg_int(h, "vocab_size", -1, &c->vocab_size) || cfg_int(h, "max_position_embeddings", 2048, &c->max_seq_len))
        return -1;
    if (c->n_heads <= 0) return piso_errorf("%s: field \"num_attention_heads\" must be positive", h->config_path);
    if (cfg_int(h, "head_dim", c->dim / c->n_heads, &c->head_dim)) return -1;
    if (num_field(h->config_path, h->cfg, "rms_norm_eps", 1e-6, 0, &c->norm_eps) ||
        num_field(h->config_path, h->cfg, "rope_theta", 10000.0, 0, &c->rope_theta))
        return -1;
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(h->cfg, "hidden_act");
    if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "silu") != 0))
        return piso_errorf("%s: field \"hidden_act\": only \"silu\" is supported", h->config_path);
    const cJSON *sw = cJSON_GetObjectItemCaseSensitive(h->cfg, "sliding_window");
    const cJSON *usw = cJSON_GetObjectItemCaseSensitive(h->cfg, "use_sliding_window");
    if (cJSON_IsNumber(sw) && !cJSON_IsFalse(usw))
        piso_log("%s: note: sliding_window %g is not applied (exact for windows up to that many tokens)\n",
                 h->config_path, sw->valuedouble);
    const cJSON *mb = cJSON_GetObjectItemCaseSensitive(h->cfg, "mlp_bias");
    if (cJSON_IsTrue(mb)) return piso_errorf("%s: field \"mlp_bias\": MLP biases are not supported", h->config_path);
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(h->cfg, "rope_scaling");
    if (rs && !cJSON_IsNull(rs)) {
        const cJSON *rt = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
        if (!rt) rt = cJSON_GetObjectItemCaseSensitive(rs, "type");
        const char *type = cJSON_IsString(rt) ? rt->valuestring : "(missing)";
        if (strcmp(type, "default") != 0) {
            if (strcmp(type, "llama3") != 0)
                return piso_errorf("%s: field \"rope_scaling\": rope_type \"%s\" is not supported (only llama3)",
                                   h->config_path, type);
            c->rope_llama3 = 1;
            float orig;
            if (num_field(h->config_path, rs, "factor", 0, 1, &c->rope_factor) ||
                num_field(h->config_path, rs, "low_freq_factor", 0, 1, &c->rope_low_freq_factor) ||
                num_field(h->config_path, rs, "high_freq_factor", 0, 1, &c->rope_high_freq_factor) ||
                num_field(h->config_path, rs, "original_max_position_embeddings", 0, 1, &orig))
                return piso_error_context("rope_scaling");
            if (!(orig >= 1 && orig <= 1e9))
                return piso_errorf("%s: rope_scaling: original_max_position_embeddings %g is out of range", h->config_path,
                                   (double)orig);
            c->rope_orig_ctx = (int)orig;
        }
    }
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(h->cfg, "tie_word_embeddings");
    c->tied_embeddings = cJSON_IsTrue(tie);
    c->has_qkv_bias = ai->qkv_bias;
    c->has_qk_norm = ai->qk_norm;
    return piso_config_validate(c, h->config_path);
}

static int cmp_name_pos(const void *a, const void *b) {
    const struct name_pos { const char *s; int i; } *x = a, *y = b;
    int c = strcmp(x->s, y->s);
    return c ? c : (x->i > y->i) - (x->i < y->i);
}

/* Drops repeated names, keeping each one's first place; O(n log n) (an index names a shard once
 * per tensor: tens of thousands of repeats). Returns the new count. */
static int unique_names(char **v, int n) {
    struct name_pos { const char *s; int i; } *np = malloc(sizeof *np * (size_t)(n ? n : 1));
    unsigned char *keep = calloc((size_t)(n ? n : 1), 1);
    if (!np || !keep) { /* fall back to the quadratic scan */
        free(np), free(keep);
        int k = 0;
        for (int i = 0; i < n; i++) {
            int seen = 0;
            for (int j = 0; j < k && !seen; j++) seen = !strcmp(v[j], v[i]);
            if (!seen) v[k++] = v[i];
        }
        return k;
    }
    for (int i = 0; i < n; i++) np[i].s = v[i], np[i].i = i;
    qsort(np, (size_t)n, sizeof *np, cmp_name_pos);
    for (int i = 0; i < n; i++)
        if (i == 0 || strcmp(np[i].s, np[i - 1].s) != 0) keep[np[i].i] = 1;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (keep[i]) v[k++] = v[i];
    free(np), free(keep);
    return k;
}

/* Opens model.safetensors or every shard named in model.safetensors.index.json. */
static int open_shards(struct piso_model *m, const char *dir) {
    struct piso_model_storage *s = m->storage;
    char *single = piso_path_join(dir, "model.safetensors");
    if (piso_file_exists(single)) {
        s->st = calloc(1, sizeof *s->st);
        int rc = piso_st_open(&s->st[0], single);
        free(single);
        if (rc == 0) s->n_st = 1;
        return rc;
    }
    free(single);
    char *index_path = piso_path_join(dir, "model.safetensors.index.json"), *text;
    if (!piso_file_exists(index_path)) {
        piso_errorf("%s: no model.safetensors or model.safetensors.index.json", dir);
        free(index_path);
        return -1;
    }
    if (piso_read_file_max(index_path, &text, NULL, PISO_JSON_LIMIT) != 0) {
        free(index_path);
        return -1;
    }
    cJSON *idx = cJSON_Parse(text);
    free(text);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(idx, "weight_map");
    if (!cJSON_IsObject(wm)) {
        cJSON_Delete(idx);
        piso_errorf("%s: missing object \"weight_map\"", index_path);
        free(index_path);
        return -1;
    }
    int n = cJSON_GetArraySize(wm), rc = 0;
    char **files = calloc((size_t)n + 1, sizeof *files);
    int n_files = 0;
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!cJSON_IsString(e) || strchr(e->valuestring, '/') || !strcmp(e->valuestring, "..")) {
            rc = piso_errorf("%s: weight_map entry \"%s\" is not a file name", index_path, e->string);
            break;
        }
        files[n_files++] = e->valuestring;
    }
    n_files = rc == 0 ? unique_names(files, n_files) : 0;
    s->st = calloc((size_t)n_files + 1, sizeof *s->st);
    for (int i = 0; rc == 0 && i < n_files; i++) {
        char *p = piso_path_join(dir, files[i]);
        rc = piso_st_open(&s->st[i], p);
        free(p);
        if (rc == 0) s->n_st++;
    }
    free(files);
    cJSON_Delete(idx);
    free(index_path);
    return rc;
}

const struct piso_st_tensor *piso_hf_find_tensor(struct piso_model *m, const char *name, int *file) {
    for (int i = 0; i < m->storage->n_st; i++) {
        const struct piso_st_tensor *t = piso_st_find(&m->storage->st[i], name);
        if (t) {
            *file = i;
            return t;
        }
    }
    return NULL;
}

/* The tensor `name` as fp32 [rows, cols] (cols == 0: 1-D [rows]); NULL with an error if missing
 * or misshapen (optional: NULL without error when absent). */
static char lazy_mark; /* stands for a validated tensor left in the file (lazy loads) */

static float *get_weight(struct piso_model *m, const char *name, int64_t rows, int64_t cols, int optional, int convert) {
    int fi = 0;
    const struct piso_st_tensor *t = piso_hf_find_tensor(m, name, &fi);
    if (!t) {
        if (!optional) piso_errorf("%s: tensor '%s' not found", m->path, name);
        return NULL;
    }
    const char *file = m->storage->st[fi].map.path;
    int ndim = cols ? 2 : 1;
    if (t->ndim != ndim || t->shape[0] != rows || (cols && t->shape[1] != cols)) {
        char got[64];
        if (t->ndim == 2) snprintf(got, sizeof got, "[%lld, %lld]", (long long)t->shape[0], (long long)t->shape[1]);
        else if (t->ndim == 1) snprintf(got, sizeof got, "[%lld]", (long long)t->shape[0]);
        else snprintf(got, sizeof got, "%d dims", t->ndim);
        if (cols) piso_errorf("%s: tensor '%s': shape %s, expected [%lld, %lld]", file, name, got, (long long)rows, (long long)cols);
        else piso_errorf("%s: tensor '%s': shape %s, expected [%lld]", file, name, got, (long long)rows);
        return NULL;
    }
    if (t->dtype != PISO_DTYPE_F32 && t->dtype != PISO_DTYPE_F16 && t->dtype != PISO_DTYPE_BF16) {
        piso_errorf("%s: tensor '%s': dtype %s is not supported (F32, F16, BF16)", file, name, piso_dtype_name(t->dtype));
        return NULL;
    }
    if (!convert) return (float *)(void *)&lazy_mark;
    if (t->dtype == PISO_DTYPE_F32 && ((uintptr_t)t->data % sizeof(float)) == 0)
        return (float *)(uintptr_t)t->data; /* copy-on-write mapping */
    float *dst = piso_model_own(m, (size_t)t->numel);
    if (!dst) {
        piso_errorf("%s: tensor '%s': out of memory", file, name);
        return NULL;
    }
    if (piso_st_read_f32(&m->storage->st[fi], t, dst, (size_t)t->numel) != 0) return NULL;
    return dst;
}

/* Every tensor of the schema that HF stores. q/k/v biases and q/k norms are required when the
 * architecture has them, and picked up (setting the config flag) when present otherwise. */
static int load_weights(struct piso_model *m, const struct piso_ckpt_info *q, int lazy) {
    struct piso_config *c = &m->cfg;
    char name[160];
    int fi;
    for (int s = 0, l; s < piso_schema_steps(c); s++) {
        const struct piso_tensor_info *t = piso_schema_step(c, s, &l);
        if (piso_schema_name(t, PISO_NAME_HF, l, name, sizeof name) != 0) continue;
        /* tie_word_embeddings wins over a stored lm_head (transformers ties them on load); without it
         * a checkpoint that omits lm_head is tied too */
        if (t->role == PISO_TR_OUTPUT && c->tied_embeddings) continue;
        const int optional = t->presence == PISO_PRESENT_UNTIED || !piso_schema_present(c, t);
        if (q->format && t->linear >= 0 && lazy)
            return piso_errorf("%s: a packed (quantized) checkpoint is not read lazily (use --no-stream)", m->path);
        if (q->format && t->linear >= 0) { /* packed layers of a GPTQ / compressed-tensors checkpoint */
            char prefix[160];
            int packed = 0;
            snprintf(prefix, sizeof prefix, "%.*s", (int)(strlen(name) - strlen(".weight")), name);
            float *p = piso_ckpt_load_linear(m, q, prefix, piso_schema_dim(c, t->rows), piso_schema_dim(c, t->cols), &packed);
            if (packed && !p) return -1;
            if (p) {
                *piso_schema_slot(m, t, l) = p;
                continue;
            }
        }
        const int keep_in_file = lazy && (l >= 0 || t->role == PISO_TR_TOK_EMBD || t->role == PISO_TR_OUTPUT);
        float *p = get_weight(m, name, piso_schema_dim(c, t->rows), piso_schema_dim(c, t->cols), optional, !keep_in_file);
        if (!p && (!optional || piso_hf_find_tensor(m, name, &fi))) return -1; /* missing or misshapen */
        *piso_schema_slot(m, t, l) = p;
    }
    c->tied_embeddings = m->output == NULL;
    if (!m->output) m->output = m->tok_embd;
    for (int l = 0; l < c->n_layers; l++) {
        const struct piso_layer_weights *w = &m->layers[l];
        snprintf(name, sizeof name, "model.layers.%d.self_attn.o_proj.bias", l);
        if (piso_hf_find_tensor(m, name, &fi)) return piso_errorf("%s: tensor '%s': output-projection biases are not supported", m->path, name);
        if (!!w->bq != !!w->bk || !!w->bq != !!w->bv)
            return piso_errorf("%s: layer %d: q/k/v biases must all be present or all absent", m->path, l);
        if (!!w->q_norm != !!w->k_norm)
            return piso_errorf("%s: layer %d: q_norm and k_norm must both be present or absent", m->path, l);
        if (w->bq) c->has_qkv_bias = 1;
        if (w->q_norm) c->has_qk_norm = 1;
    }
    /* a file describes itself consistently: no layer past num_hidden_layers */
    for (int i = 0; i < m->storage->n_st; i++)
        for (int k = 0; k < m->storage->st[i].n_tensors; k++) {
            const char *tn = m->storage->st[i].tensors[k].name;
            long layer;
            int used = 0;
            if (sscanf(tn, "model.layers.%ld.%n", &layer, &used) == 1 && used > 0 && layer >= c->n_layers)
                return piso_errorf("%s: tensor '%s' is in layer %ld, but config.json says num_hidden_layers = %d",
                                   m->storage->st[i].map.path, tn, layer, c->n_layers);
        }
    const struct piso_st_tensor *t0 = piso_st_find(&m->storage->st[0], "model.embed_tokens.weight");
    fi = 0;
    if (!t0) t0 = piso_hf_find_tensor(m, "model.embed_tokens.weight", &fi);
    c->dtype = t0 ? t0->dtype : PISO_DTYPE_F32;
    if (lazy) { /* the marks become NULL: acquire and the row lookups read the file */
        for (int s = 0, l; s < piso_schema_steps(c); s++) {
            const struct piso_tensor_info *t = piso_schema_step(c, s, &l); /* sets l: not in the same call */
            float **slot = piso_schema_slot(m, t, l);
            if (*slot == (float *)(void *)&lazy_mark) *slot = NULL;
        }
        m->storage->lazy = 1;
        m->storage->acquired = calloc((size_t)c->n_layers, 1);
        if (!m->storage->acquired) return piso_errorf("%s: out of memory", m->path);
    }
    return 0;
}

const struct piso_st_tensor *piso_lazy_source(struct piso_model *m, const struct piso_tensor_info *t, int layer, int *file) {
    char name[160];
    if (piso_schema_name(t, PISO_NAME_HF, layer, name, sizeof name) != 0) return NULL;
    return piso_hf_find_tensor(m, name, file);
}

/* piso runs every model in llama.cpp's adjacent-pair RoPE layout, so one model gives bit-identical
 * results whichever file it came from (HF twin vs llama2.c vs GGUF). HF stores q/k rows (and their
 * biases and q/k norms) in rotate-half order: reorder them once here. The exporters write HF order
 * back. The mapping is copy-on-write, so the file is never touched. */
int piso_model_rope_rows_to_adjacent(struct piso_model *m) {
    const struct piso_config *c = &m->cfg;
    for (int s = 0, l; s < piso_schema_steps(c); s++) {
        const struct piso_tensor_info *t = piso_schema_step(c, s, &l);
        float *p = *piso_schema_slot(m, t, l);
        const int64_t cols = piso_schema_dim(c, t->cols);
        if (t->rope && p &&
            piso_rope_reorder_inplace(p, piso_schema_rope_heads(c, t), c->head_dim, cols ? cols : 1, PISO_ROPE_ADJACENT))
            return -1;
    }
    m->cfg.rope_style = PISO_ROPE_ADJACENT;
    return 0;
}

int piso_load_hf(const char *dir, int lazy, struct piso_model **out) {
    struct hf_ctx h = {dir, piso_path_join(dir, "config.json"), NULL, {0, 0, 0, 0}};
    char *text;
    if (access(h.config_path, F_OK) != 0) {
        piso_errorf("%s: not a model directory (no config.json)", dir);
        free(h.config_path);
        return -1;
    }
    if (piso_read_file_max(h.config_path, &text, NULL, PISO_JSON_LIMIT) != 0) {
        free(h.config_path);
        return -1;
    }
    h.cfg = cJSON_Parse(text);
    free(text);
    struct piso_config c;
    int rc = 0;
    if (!cJSON_IsObject(h.cfg)) rc = piso_errorf("%s: not a JSON object", h.config_path);
    if (rc == 0) rc = parse_config(&h, &c);
    if (rc == 0) rc = piso_ckpt_parse_config(h.cfg, h.config_path, &h.ckpt);
    cJSON_Delete(h.cfg);
    free(h.config_path);
    if (rc != 0) return -1;
    struct piso_model *m = piso_model_new(&c, dir);
    if (!m) return -1;
    if (open_shards(m, dir) != 0 || load_weights(m, &h.ckpt, lazy) != 0 || piso_model_rope_rows_to_adjacent(m) != 0) {
        piso_model_free(m);
        return -1;
    }
    *out = m;
    return 0;
}

int piso_model_can_stream(const char *path) {
    if (!piso_is_dir(path)) return 0;
    char *cfg_path = piso_path_join(path, "config.json"), *tj = piso_path_join(path, "transform.json"), *text = NULL;
    int ok = cfg_path && tj && piso_file_exists(cfg_path) && !piso_file_exists(tj) &&
             piso_read_file_max(cfg_path, &text, NULL, PISO_JSON_LIMIT) == 0;
    cJSON *j = ok ? cJSON_Parse(text) : NULL;
    ok = ok && cJSON_IsObject(j) && !cJSON_GetObjectItemCaseSensitive(j, "quantization_config");
    cJSON_Delete(j);
    free(cfg_path), free(tj), free(text);
    return ok;
}
