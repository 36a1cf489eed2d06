/* Hugging Face directory export: config.json, model.safetensors, tokenizer files and the
 * quantization record, written into a temporary sibling directory and renamed into place. */
#include "export/export_internal.h"
#include "piso/pipeline.h"
#include "piso/safetensors.h"
#include "piso/schema.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- small file helpers ------------------------------------------------------------------- */
static int write_text(const char *dir, const char *name, const char *text) {
    char *path = piso_path_join(dir, name);
    FILE *f = path ? fopen(path, "wb") : NULL;
    int rc = 0;
    if (!f || fwrite(text, 1, strlen(text), f) != strlen(text)) rc = piso_errorf("cannot write %s: %s", path ? path : name, strerror(errno));
    if (f && fclose(f) != 0 && !rc) rc = piso_errorf("cannot write %s: %s", path, strerror(errno));
    free(path);
    return rc;
}

static int copy_file(const char *src, const char *dir, const char *name) {
    char *buf = NULL;
    size_t n = 0;
    if (piso_read_file(src, &buf, &n)) return -1;
    char *path = piso_path_join(dir, name);
    FILE *f = fopen(path, "wb");
    int rc = 0;
    if (!f || fwrite(buf, 1, n, f) != n) rc = piso_errorf("cannot write %s: %s", path, strerror(errno));
    if (f && fclose(f) != 0 && !rc) rc = piso_errorf("cannot write %s: %s", path, strerror(errno));
    free(path), free(buf);
    return rc;
}

/* Removes a directory of plain files (our own outputs). */
static int remove_flat_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = piso_path_join(dir, e->d_name);
        if (p) unlink(p);
        free(p);
    }
    closedir(d);
    return rmdir(dir);
}

static cJSON *num_f(float v) { /* print a float with the digits it has, not the double's */
    char b[48];
    snprintf(b, sizeof b, "%.8g", (double)v);
    if (!strpbrk(b, ".eEn")) strcat(b, ".0");
    return cJSON_CreateRaw(b);
}

/* ---- tokenizer.json for an SPM vocabulary ----------------------------------------------- */
struct piece_id {
    const char *s;
    int id;
};
static int by_piece(const void *a, const void *b) {
    const struct piece_id *x = a, *y = b;
    int c = strcmp(x->s, y->s);
    return c ? c : x->id - y->id;
}
struct score_id {
    float score;
    int id;
};
static int by_score_desc(const void *a, const void *b) {
    const struct score_id *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->id - y->id;
}
struct merge {
    int l, r, split;
};
static int by_lr(const void *a, const void *b) {
    const struct merge *x = a, *y = b;
    return x->l != y->l ? x->l - y->l : x->r - y->r;
}

static int is_special(const struct piso_tokenizer_vocab *v, int i) {
    return i == v->bos_id || i == v->eos_id || i == v->unk_id || (v->types && (v->types[i] == 2 || v->types[i] == 3));
}

/* The HF spelling of piece i: spaces as U+2581; control tokens without llama2.c's newlines. */
static char *hf_piece(const struct piso_tokenizer_vocab *v, int i) {
    const char *p = v->pieces[i];
    if (is_special(v, i)) {
        if (i == v->bos_id) return strdup("<s>");
        if (i == v->eos_id) return strdup("</s>");
        if (i == v->unk_id) return strdup("<unk>");
        while (*p == '\n' || *p == ' ') p++;
        char *s = strdup(p);
        if (!s) return NULL;
        size_t n = strlen(s);
        while (n && (s[n - 1] == '\n' || s[n - 1] == ' ')) s[--n] = 0;
        return s;
    }
    size_t n = strlen(p), k = 0;
    char *s = malloc(3 * n + 1);
    if (!s) return NULL;
    for (size_t j = 0; j < n; j++) {
        if (p[j] == ' ') s[k++] = (char)0xE2, s[k++] = (char)0x96, s[k++] = (char)0x81;
        else s[k++] = p[j];
    }
    s[k] = 0;
    return s;
}

char *piso_spm_tokenizer_json(const struct piso_tokenizer_vocab *v) {
    int V = v->n_vocab;
    char **names = calloc((size_t)V, sizeof(char *));
    struct piece_id *sorted = malloc(sizeof *sorted * (size_t)V);
    struct score_id *order = malloc(sizeof *order * (size_t)V);
    if (!names || !sorted || !order) {
        free(names), free(sorted), free(order);
        return NULL;
    }
    int oom = 0;
    for (int i = 0; i < V; i++) names[i] = hf_piece(v, i), sorted[i].s = names[i], sorted[i].id = i, oom |= !names[i];
    if (oom) {
        for (int i = 0; i < V; i++) free(names[i]);
        free(names), free(sorted), free(order);
        return NULL;
    }
    qsort(sorted, (size_t)V, sizeof *sorted, by_piece);

    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    for (int i = 0; i < V; i++) {
        if (!is_special(v, i)) continue;
        cJSON *t = cJSON_CreateObject();
        cJSON_AddNumberToObject(t, "id", i);
        cJSON_AddStringToObject(t, "content", names[i]);
        cJSON_AddBoolToObject(t, "single_word", 0);
        cJSON_AddBoolToObject(t, "lstrip", 0);
        cJSON_AddBoolToObject(t, "rstrip", 0);
        cJSON_AddBoolToObject(t, "normalized", 0);
        cJSON_AddBoolToObject(t, "special", 1);
        cJSON_AddItemToArray(added, t);
    }
    cJSON *norm = cJSON_AddObjectToObject(root, "normalizer");
    cJSON_AddStringToObject(norm, "type", "Sequence");
    cJSON *nl = cJSON_AddArrayToObject(norm, "normalizers");
    cJSON *n1 = cJSON_CreateObject();
    cJSON_AddStringToObject(n1, "type", "Prepend");
    cJSON_AddStringToObject(n1, "prepend", "\xE2\x96\x81");
    cJSON_AddItemToArray(nl, n1);
    cJSON *n2 = cJSON_CreateObject();
    cJSON_AddStringToObject(n2, "type", "Replace");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(n2, "pattern"), "String", " ");
    cJSON_AddStringToObject(n2, "content", "\xE2\x96\x81");
    cJSON_AddItemToArray(nl, n2);
    cJSON_AddNullToObject(root, "pre_tokenizer");
    if (v->add_bos && v->bos_id >= 0) {
        const char *bos = names[v->bos_id];
        cJSON *pp = cJSON_AddObjectToObject(root, "post_processor");
        cJSON_AddStringToObject(pp, "type", "TemplateProcessing");
        for (int pair = 0; pair < 2; pair++) {
            cJSON *arr = cJSON_AddArrayToObject(pp, pair ? "pair" : "single");
            for (int part = 0; part < (pair ? 2 : 1); part++) {
                cJSON *sp = cJSON_CreateObject(), *spi = cJSON_AddObjectToObject(sp, "SpecialToken");
                cJSON_AddStringToObject(spi, "id", bos);
                cJSON_AddNumberToObject(spi, "type_id", part);
                cJSON_AddItemToArray(arr, sp);
                cJSON *sq = cJSON_CreateObject(), *sqi = cJSON_AddObjectToObject(sq, "Sequence");
                cJSON_AddStringToObject(sqi, "id", part ? "B" : "A");
                cJSON_AddNumberToObject(sqi, "type_id", part);
                cJSON_AddItemToArray(arr, sq);
            }
        }
        cJSON *st = cJSON_AddObjectToObject(pp, "special_tokens"), *b = cJSON_AddObjectToObject(st, bos);
        cJSON_AddStringToObject(b, "id", bos);
        cJSON_AddItemToObject(b, "ids", cJSON_CreateIntArray(&v->bos_id, 1));
        cJSON_AddItemToObject(b, "tokens", cJSON_CreateStringArray(&bos, 1));
    } else {
        cJSON_AddNullToObject(root, "post_processor");
    }
    cJSON *dec = cJSON_AddObjectToObject(root, "decoder");
    cJSON_AddStringToObject(dec, "type", "Sequence");
    cJSON *dl = cJSON_AddArrayToObject(dec, "decoders");
    cJSON *d1 = cJSON_CreateObject();
    cJSON_AddStringToObject(d1, "type", "Replace");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(d1, "pattern"), "String", "\xE2\x96\x81");
    cJSON_AddStringToObject(d1, "content", " ");
    cJSON_AddItemToArray(dl, d1);
    cJSON *d2 = cJSON_CreateObject();
    cJSON_AddStringToObject(d2, "type", "ByteFallback");
    cJSON_AddItemToArray(dl, d2);
    cJSON *d3 = cJSON_CreateObject();
    cJSON_AddStringToObject(d3, "type", "Fuse");
    cJSON_AddItemToArray(dl, d3);
    cJSON *d4 = cJSON_CreateObject();
    cJSON_AddStringToObject(d4, "type", "Strip");
    cJSON_AddStringToObject(d4, "content", " ");
    cJSON_AddNumberToObject(d4, "start", 1);
    cJSON_AddNumberToObject(d4, "stop", 0);
    cJSON_AddItemToArray(dl, d4);

    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddStringToObject(model, "unk_token", v->unk_id >= 0 ? names[v->unk_id] : "<unk>");
    cJSON_AddNullToObject(model, "continuing_subword_prefix");
    cJSON_AddNullToObject(model, "end_of_word_suffix");
    cJSON_AddBoolToObject(model, "fuse_unk", 1);
    cJSON_AddBoolToObject(model, "byte_fallback", 1);
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    for (int i = 0; i < V; i++) cJSON_AddItemToObject(vocab, names[i], cJSON_CreateNumber(i));
    /* Merges: every split of a normal piece into two vocabulary pieces, pieces by descending
     * score, splits of one piece by (id of left, id of right). */
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    int no = 0;
    for (int i = 0; i < V; i++)
        if (!is_special(v, i) && !(v->types && v->types[i] == 6)) order[no].score = v->scores[i], order[no++].id = i;
    qsort(order, (size_t)no, sizeof *order, by_score_desc);
    for (int t = 0; t < no; t++) {
        const char *s = names[order[t].id];
        size_t n = strlen(s);
        struct merge *ms = malloc(sizeof *ms * (n + 1));
        int nm = 0;
        char *buf = malloc(n + 1);
        if (!ms || !buf) {
            free(ms), free(buf);
            oom = 1;
            break;
        }
        for (size_t k = 1; k < n; k++) {
            if (((unsigned char)s[k] & 0xC0) == 0x80) continue; /* split only between characters */
            memcpy(buf, s, k), buf[k] = 0;
            struct piece_id key = {buf, -1}, *l = NULL, *r = NULL;
            /* lower bound on the string (ids of duplicates: the smallest) */
            size_t lo = 0, hi = (size_t)V;
            while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                if (strcmp(sorted[mid].s, key.s) < 0) lo = mid + 1;
                else hi = mid;
            }
            if (lo < (size_t)V && !strcmp(sorted[lo].s, buf)) l = &sorted[lo];
            key.s = s + k, lo = 0, hi = (size_t)V;
            while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                if (strcmp(sorted[mid].s, key.s) < 0) lo = mid + 1;
                else hi = mid;
            }
            if (lo < (size_t)V && !strcmp(sorted[lo].s, s + k)) r = &sorted[lo];
            if (l && r) ms[nm].l = l->id, ms[nm].r = r->id, ms[nm++].split = (int)k;
        }
        qsort(ms, (size_t)nm, sizeof *ms, by_lr);
        for (int j = 0; j < nm; j++) {
            char *m = malloc(n + 2);
            if (!m) {
                oom = 1;
                break;
            }
            memcpy(m, s, (size_t)ms[j].split), m[ms[j].split] = ' ';
            strcpy(m + ms[j].split + 1, s + ms[j].split);
            cJSON_AddItemToArray(merges, cJSON_CreateString(m));
            free(m);
        }
        free(ms), free(buf);
    }
    char *out = oom ? NULL : cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    for (int i = 0; i < V; i++) free(names[i]);
    free(names), free(sorted), free(order);
    return out;
}

/* ---- config.json ----------------------------------------------------------------------- */
/* The layer report of linear k in block `layer`, or NULL. */
static const struct piso_layer_report *find_report(const struct piso_pipeline_result *res, int layer, int k) {
    for (int i = 0; res && i < res->n_layers; i++)
        if (res->layers[i].layer == layer && (int)res->layers[i].kind == k) return &res->layers[i];
    return NULL;
}

static int report_packs(const struct piso_hf_export_opts *o, const struct piso_layer_report *r) {
    return r && o && o->ckpt != PISO_CKPT_DENSE && piso_ckpt_layer_packs(o->ckpt, o->bits, r->group, r->N, r->D);
}

/* quantization_config: the layers that stay dense and the packed module names of a block */
static cJSON *quantization_config(const struct piso_hf_export_opts *o) {
    const struct piso_pipeline_result *res = o->res;
    const char **skipped = calloc((size_t)(res->n_layers + 1), sizeof(char *));
    const char *in_block[PISO_LIN_COUNT];
    int ns = 0, nb = 0, desc_act = 0;
    if (!skipped) return NULL;
    for (int i = 0; i < res->n_layers; i++) {
        const struct piso_layer_report *r = &res->layers[i];
        if (r->g_idx && report_packs(o, r)) desc_act = 1; /* groups follow the act order */
        if (!report_packs(o, r)) {
            skipped[ns++] = r->name;
        } else if (r->layer == 0) {
            const char *p = strchr(r->name + strlen("model.layers."), '.'); /* "self_attn.q_proj" */
            if (p) in_block[nb++] = p + 1;
        }
    }
    cJSON *q = piso_ckpt_config_json(o->ckpt, o->bits, o->group, o->asym, o->act_order, desc_act, skipped, ns, in_block, nb);
    free(skipped);
    return q;
}

static char *config_json(const struct piso_model *m, const struct piso_hf_export_opts *o) {
    const struct piso_config *c = &m->cfg;
    const char *arch = c->arch[0] ? c->arch : "llama", *cls = "LlamaForCausalLM";
    const struct piso_arch_info *ai = piso_arch_by_name(arch);
    if (ai) cls = ai->hf_class;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddItemToObject(j, "architectures", cJSON_CreateStringArray(&cls, 1));
    cJSON_AddStringToObject(j, "model_type", arch);
    cJSON_AddNumberToObject(j, "hidden_size", c->dim);
    cJSON_AddNumberToObject(j, "intermediate_size", c->hidden_dim);
    cJSON_AddNumberToObject(j, "num_hidden_layers", c->n_layers);
    cJSON_AddNumberToObject(j, "num_attention_heads", c->n_heads);
    cJSON_AddNumberToObject(j, "num_key_value_heads", c->n_kv_heads);
    cJSON_AddNumberToObject(j, "head_dim", c->head_dim);
    cJSON_AddNumberToObject(j, "vocab_size", c->vocab_size);
    cJSON_AddNumberToObject(j, "max_position_embeddings", c->max_seq_len);
    cJSON_AddItemToObject(j, "rms_norm_eps", num_f(c->norm_eps));
    cJSON_AddItemToObject(j, "rope_theta", num_f(c->rope_theta));
    cJSON_AddStringToObject(j, "hidden_act", "silu");
    cJSON_AddBoolToObject(j, "tie_word_embeddings", c->tied_embeddings);
    const struct piso_tokenizer_vocab *v = m->tok ? piso_tokenizer_vocab(m->tok) : NULL;
    if (v && v->bos_id >= 0) cJSON_AddNumberToObject(j, "bos_token_id", v->bos_id);
    if (v && v->eos_id >= 0) cJSON_AddNumberToObject(j, "eos_token_id", v->eos_id);
    cJSON_AddStringToObject(j, "torch_dtype", c->dtype == PISO_DTYPE_BF16 ? "bfloat16"
                                              : c->dtype == PISO_DTYPE_F16 ? "float16" : "float32");
    cJSON_AddBoolToObject(j, "attention_bias", c->has_qkv_bias);
    cJSON_AddBoolToObject(j, "mlp_bias", 0);
    if (c->rope_llama3) {
        cJSON *rs = cJSON_AddObjectToObject(j, "rope_scaling");
        cJSON_AddStringToObject(rs, "rope_type", "llama3");
        cJSON_AddItemToObject(rs, "factor", num_f(c->rope_factor));
        cJSON_AddItemToObject(rs, "low_freq_factor", num_f(c->rope_low_freq_factor));
        cJSON_AddItemToObject(rs, "high_freq_factor", num_f(c->rope_high_freq_factor));
        cJSON_AddNumberToObject(rs, "original_max_position_embeddings", c->rope_orig_ctx);
    } else {
        cJSON_AddNullToObject(j, "rope_scaling");
    }
    if (o && o->ckpt != PISO_CKPT_DENSE && o->res) {
        cJSON *q = quantization_config(o);
        if (!q) {
            cJSON_Delete(j);
            return NULL;
        }
        cJSON_AddItemToObject(j, "quantization_config", q);
    }
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    return s;
}

/* ---- weights ------------------------------------------------------------------------------ */
struct st_ctx {
    struct piso_st_writer *w;
    enum piso_dtype dtype;
};

/* Adds one tensor [rows, cols] (ndim 1: [cols]); rope_heads > 0 writes its rows in HF's
 * rotate-half order. */
static int add_tensor(struct st_ctx *c, const char *name, const float *data, int64_t rows, int64_t cols, int ndim,
                      int rope_heads, int hd) {
    int64_t shape[2] = {rows, cols}, n = rows * cols;
    float *perm = NULL;
    if (rope_heads) {
        perm = malloc(sizeof(float) * n);
        if (!perm) return piso_errorf("out of memory");
        piso_rope_reorder(data, perm, rope_heads, hd, ndim == 1 ? 1 : cols, PISO_ROPE_HALF);
        data = perm;
    }
    if (c->dtype == PISO_DTYPE_F32) {
        piso_st_writer_add_copy(c->w, name, PISO_DTYPE_F32, ndim, ndim == 1 ? &shape[1] : shape, data);
    } else {
        uint16_t *h = malloc(sizeof(uint16_t) * n);
        if (!h) return free(perm), piso_errorf("out of memory");
        for (int64_t i = 0; i < n; i++)
            h[i] = c->dtype == PISO_DTYPE_BF16 ? piso_fp32_to_bf16(data[i]) : piso_fp32_to_fp16(data[i]);
        piso_st_writer_add_copy(c->w, name, c->dtype, ndim, ndim == 1 ? &shape[1] : shape, h);
        free(h);
    }
    free(perm);
    return 0;
}

struct hf_rows;
static int hf_rows_get(const struct piso_model *m, const struct piso_layer_report *r, struct hf_rows *h);
static void hf_rows_free(struct hf_rows *h);
static int add_packed(struct piso_st_writer *w, const struct piso_model *m, const struct piso_hf_export_opts *o,
                      const struct piso_layer_report *r);

/* The embeddings or the untied output head of a lazy model, converted a chunk of rows at a time
 * into a spilling writer (the same values add_tensor would write from an F32 copy). */
static int add_rows_tensor(struct st_ctx *c, const char *name, const struct piso_model *m, int output, int64_t rows,
                           int64_t cols) {
    const int64_t chunk = 4096, shape[2] = {rows, cols};
    if (piso_st_writer_add_begin(c->w, name, c->dtype, 2, shape)) return -1;
    float *f = malloc(sizeof(float) * (size_t)(chunk * cols));
    uint16_t *h = c->dtype == PISO_DTYPE_F32 ? NULL : malloc(sizeof(uint16_t) * (size_t)(chunk * cols));
    int rc = !f || (c->dtype != PISO_DTYPE_F32 && !h) ? piso_errorf("%s: out of memory", name) : 0;
    for (int64_t r = 0; r < rows && !rc; r += chunk) {
        const int64_t n = (rows - r < chunk ? rows - r : chunk) * cols;
        if ((rc = piso_model_rows(m, output, r, n / cols, f))) break;
        if (!h) {
            rc = piso_st_writer_append(c->w, f, sizeof(float) * (size_t)n);
            continue;
        }
        for (int64_t i = 0; i < n; i++)
            h[i] = c->dtype == PISO_DTYPE_BF16 ? piso_fp32_to_bf16(f[i]) : piso_fp32_to_fp16(f[i]);
        rc = piso_st_writer_append(c->w, h, sizeof(uint16_t) * (size_t)n);
    }
    free(f), free(h);
    piso_model_drop_file_pages(m); /* the rows were read through the mapping: 0.5–1 GB */
    return rc;
}

static enum piso_dtype weights_dtype(const struct piso_config *c) {
    return c->dtype == PISO_DTYPE_BF16 || c->dtype == PISO_DTYPE_F16 ? c->dtype : PISO_DTYPE_F32;
}

/* One schema step of model.safetensors; the eager and the streamed export both go through it, so
 * their bytes agree. res: the layer reports (packed checkpoints), or NULL. */
static int add_weight_step(struct st_ctx *sc, const struct piso_model *m, const struct piso_hf_export_opts *o,
                           const struct piso_pipeline_result *res, int step) {
    const struct piso_config *c = &m->cfg;
    int l;
    const struct piso_tensor_info *t = piso_schema_step(c, step, &l);
    const float *data = piso_schema_data(m, t, l);
    char name[128];
    if (piso_schema_name(t, PISO_NAME_HF, l, name, sizeof name) != 0) return 0;
    const int in_file = !data && piso_model_is_lazy(m) &&
                        (t->role == PISO_TR_TOK_EMBD || (t->role == PISO_TR_OUTPUT && !c->tied_embeddings));
    if (!data && !in_file) return 0;
    const int64_t rows = piso_schema_dim(c, t->rows), cols = piso_schema_dim(c, t->cols);
    if (in_file) return add_rows_tensor(sc, name, m, t->role == PISO_TR_OUTPUT, rows, cols);
    const struct piso_layer_report *r = t->linear >= 0 ? find_report(res, l, t->linear) : NULL;
    if (report_packs(o, r)) return add_packed(sc->w, m, o, r); /* GPTQ / compressed-tensors tensors instead */
    return add_tensor(sc, name, data, cols ? rows : 1, cols ? cols : rows, cols ? 2 : 1,
                      c->rope_style == PISO_ROPE_ADJACENT ? piso_schema_rope_heads(c, t) : 0, c->head_dim);
}

static int write_weights(const struct piso_model *m, const char *dir, const struct piso_hf_export_opts *o) {
    const struct piso_config *c = &m->cfg;
    struct st_ctx sc = {piso_st_writer_new(), weights_dtype(c)};
    int rc = 0;
    for (int s = 0; s < piso_schema_steps(c) && !rc; s++) rc = add_weight_step(&sc, m, o, o ? o->res : NULL, s);
    if (!rc) {
        piso_st_writer_meta(sc.w, "format", "pt");
        char *path = piso_path_join(dir, "model.safetensors");
        rc = piso_st_writer_write(sc.w, path);
        free(path);
    }
    piso_st_writer_free(sc.w);
    return rc;
}

/* HF row order (q/k permuted like their weights) copies of a layer's scales [N, ng], codes [N, D]
 * and zero points [N, ng] (NULL when symmetric). */
struct hf_rows {
    float *scales;
    int16_t *codes, *zeros;
};
static void hf_rows_free(struct hf_rows *h) { free(h->scales), free(h->codes), free(h->zeros); }

static int permute_rows_i16(const int16_t *src, int16_t *dst, int64_t N, int64_t cols, int heads, int hd) {
    float *a = calloc((size_t)(N * cols + 1), sizeof(float)), *b = calloc((size_t)(N * cols + 1), sizeof(float));
    if (!a || !b) return free(a), free(b), -1;
    for (int64_t k = 0; k < N * cols; k++) a[k] = src[k];
    piso_rope_reorder(a, b, heads, hd, cols, PISO_ROPE_HALF);
    for (int64_t k = 0; k < N * cols; k++) dst[k] = (int16_t)b[k];
    free(a), free(b);
    return 0;
}

static int hf_rows_get(const struct piso_model *m, const struct piso_layer_report *r, struct hf_rows *h) {
    const struct piso_config *c = &m->cfg;
    const int heads = c->rope_style == PISO_ROPE_ADJACENT ? piso_schema_rope_heads(c, piso_schema_linear(r->kind)) : 0;
    const int64_t ng = r->n_groups, N = r->N, D = r->D;
    h->scales = malloc(sizeof(float) * N * ng), h->codes = malloc(sizeof(int16_t) * N * D);
    h->zeros = r->zeros ? malloc(sizeof(int16_t) * N * ng) : NULL;
    if (!h->scales || !h->codes || (r->zeros && !h->zeros)) return hf_rows_free(h), piso_errorf("out of memory");
    if (!heads) {
        memcpy(h->scales, r->scales, sizeof(float) * N * ng), memcpy(h->codes, r->codes, sizeof(int16_t) * N * D);
        if (r->zeros) memcpy(h->zeros, r->zeros, sizeof(int16_t) * N * ng);
        return 0;
    }
    piso_rope_reorder(r->scales, h->scales, heads, c->head_dim, ng, PISO_ROPE_HALF);
    if (permute_rows_i16(r->codes, h->codes, N, D, heads, c->head_dim) ||
        (r->zeros && permute_rows_i16(r->zeros, h->zeros, N, ng, heads, c->head_dim)))
        return hf_rows_free(h), piso_errorf("out of memory");
    return 0;
}

static int add_packed(struct piso_st_writer *w, const struct piso_model *m, const struct piso_hf_export_opts *o,
                      const struct piso_layer_report *r) {
    struct hf_rows h;
    if (hf_rows_get(m, r, &h)) return -1;
    int rc = piso_ckpt_add_layer(w, o->ckpt, r->name, o->bits, r->group, r->N, r->D, r->n_groups, h.scales, h.codes,
                                 h.zeros, r->g_idx);
    hf_rows_free(&h);
    return rc;
}

/* Scales and codes (and zero points) in HF row order. */
static int add_quant_report(struct piso_st_writer *w, const struct piso_model *m, const struct piso_layer_report *r) {
    int rc = 0;
    char name[160];
    {
        int64_t ng = r->n_groups, N = r->N, D = r->D;
        struct hf_rows h;
        if ((rc = hf_rows_get(m, r, &h))) return rc;
        int8_t *c8 = malloc((size_t)(N * D));
        if (!c8) {
            hf_rows_free(&h);
            return piso_errorf("out of memory");
        }
        int fits8 = 1;
        for (int64_t k = 0; k < N * D; k++) fits8 &= h.codes[k] >= -128 && h.codes[k] <= 127;
        int64_t ss[2] = {N, ng}, cs[2] = {N, D};
        snprintf(name, sizeof name, "%s.scales", r->name);
        piso_st_writer_add_copy(w, name, PISO_DTYPE_F32, 2, ss, h.scales);
        snprintf(name, sizeof name, "%s.codes", r->name);
        if (fits8) {
            for (int64_t k = 0; k < N * D; k++) c8[k] = (int8_t)h.codes[k];
            piso_st_writer_add_copy(w, name, PISO_DTYPE_I8, 2, cs, c8);
        } else {
            piso_st_writer_add_copy(w, name, PISO_DTYPE_I16, 2, cs, h.codes);
        }
        if (h.zeros) {
            snprintf(name, sizeof name, "%s.zeros", r->name);
            piso_st_writer_add_copy(w, name, PISO_DTYPE_I16, 2, ss, h.zeros);
        }
        if (r->g_idx) { /* groups follow the act order: the group of each input */
            int64_t gs1[1] = {D};
            snprintf(name, sizeof name, "%s.g_idx", r->name);
            piso_st_writer_add_copy(w, name, PISO_DTYPE_I32, 1, gs1, r->g_idx);
        }
        free(c8);
        hf_rows_free(&h);
    }
    return rc;
}

static int write_quant_tensors(const struct piso_model *m, const struct piso_pipeline_result *res, const char *dir) {
    struct piso_st_writer *w = piso_st_writer_new();
    int rc = 0;
    for (int i = 0; i < res->n_layers && !rc; i++) rc = add_quant_report(w, m, &res->layers[i]);
    if (!rc) {
        char *path = piso_path_join(dir, "quantization.safetensors");
        rc = piso_st_writer_write(w, path);
        free(path);
    }
    piso_st_writer_free(w);
    return rc;
}

/* ---- the directory -------------------------------------------------------------------------- */
/* Everything but the tensor files. */
static int fill_dir_text(const struct piso_model *m, const char *tmp, const struct piso_hf_export_opts *o) {
    char *cfg = config_json(m, o);
    int rc = cfg ? write_text(tmp, "config.json", cfg) : piso_errorf("cannot build config.json");
    free(cfg);
    if (rc) return -1;
    /* tokenizer.json: the source's, or generated from the SPM vocabulary */
    if (o->tokenizer_json) {
        if (copy_file(o->tokenizer_json, tmp, "tokenizer.json")) return -1;
    } else {
        const struct piso_tokenizer_vocab *v = m->tok ? piso_tokenizer_vocab(m->tok) : NULL;
        if (!v) return piso_errorf("the model has no tokenizer to write into tokenizer.json (pass --tokenizer)");
        if (v->kind != PISO_TOK_SPM)
            return piso_errorf("writing tokenizer.json for a byte-level BPE vocabulary without a source "
                               "tokenizer.json is not supported (pass --tokenizer path/to/tokenizer.json)");
        char *tj = piso_spm_tokenizer_json(v);
        rc = tj ? write_text(tmp, "tokenizer.json", tj) : piso_errorf("cannot build tokenizer.json: out of memory");
        free(tj);
        if (rc) return -1;
    }
    const char *extra[] = {"tokenizer_config.json", "generation_config.json", "special_tokens_map.json"};
    for (int i = 0; i < 3; i++) {
        char *src = o->source_dir ? piso_path_join(o->source_dir, extra[i]) : NULL;
        if (src && piso_file_exists(src)) rc = copy_file(src, tmp, extra[i]);
        free(src);
        if (rc) return -1;
    }
    char *tc = piso_path_join(tmp, "tokenizer_config.json");
    int have_tc = piso_file_exists(tc);
    free(tc);
    const struct piso_tokenizer_vocab *v = m->tok ? piso_tokenizer_vocab(m->tok) : NULL;
    if (!have_tc && v && v->kind == PISO_TOK_SPM) {
        char buf[512];
        snprintf(buf, sizeof buf,
                 "{\n  \"add_bos_token\": %s,\n  \"add_eos_token\": false,\n  \"bos_token\": \"<s>\",\n"
                 "  \"eos_token\": \"</s>\",\n  \"unk_token\": \"<unk>\",\n  \"model_max_length\": %d,\n"
                 "  \"tokenizer_class\": \"LlamaTokenizer\",\n  \"clean_up_tokenization_spaces\": false,\n"
                 "  \"legacy\": true\n}\n",
                 v->add_bos ? "true" : "false", m->cfg.max_seq_len);
        if (write_text(tmp, "tokenizer_config.json", buf)) return -1;
    }
    if (o->quantization_json && write_text(tmp, "quantization.json", o->quantization_json)) return -1;
    if (o->transform_json && write_text(tmp, "transform.json", o->transform_json)) return -1;
    return 0;
}

static int fill_dir(const struct piso_model *m, const char *tmp, const struct piso_hf_export_opts *o) {
    if (fill_dir_text(m, tmp, o) || write_weights(m, tmp, o)) return -1;
    if (o->res && write_quant_tensors(m, o->res, tmp)) return -1;
    return 0;
}

int piso_hf_export_check(const char *dir) {
    if (piso_output_check(dir, 1)) return -1;
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return piso_errorf("output %s exists and is not a directory", dir);
        char *cfg = piso_path_join(dir, "config.json");
        int is_model = piso_file_exists(cfg);
        free(cfg);
        DIR *d = opendir(dir);
        int empty = 1;
        struct dirent *e;
        while (d && (e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = 0;
        if (d) closedir(d);
        if (!is_model && !empty)
            return piso_errorf("output directory %s exists and is not a model directory; not replacing it", dir);
        return 0;
    }
    /* the parent must exist: the directory is built beside it and renamed */
    char *parent = strdup(dir), *slash = parent ? strrchr(parent, '/') : NULL;
    if (!parent) return piso_errorf("%s: out of memory", dir);
    int rc = 0;
    if (slash && slash != parent) {
        *slash = 0;
        if (!piso_is_dir(parent)) rc = piso_errorf("cannot write %s: %s is not a directory", dir, parent);
    }
    free(parent);
    return rc;
}

/* The temporary sibling of dir the output is built in (removed by an interrupt). */
static int make_tmp_dir(const char *dir, char **tmp_out, int *tmp_id) {
    size_t n = strlen(dir) + 64;
    char *tmp = malloc(n);
    *tmp_out = NULL, *tmp_id = -1;
    if (!tmp) return piso_errorf("%s: out of memory", dir);
    snprintf(tmp, n, "%s.piso-tmp-%d", dir, (int)getpid());
    remove_flat_dir(tmp);
    if (mkdir(tmp, 0755) != 0) {
        piso_errorf("cannot create %s: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    *tmp_id = piso_cleanup_add(tmp, 1);
    *tmp_out = tmp;
    return 0;
}

/* Renames the finished tmp into dir (an existing model directory is replaced whole, or kept);
 * removes tmp on failure. */
static int commit_dir(const char *dir, const char *tmp, int tmp_id) {
    struct stat st;
    int exists = stat(dir, &st) == 0, old_id = -1, rc = -1;
    size_t n = strlen(dir) + 64;
    char *old = malloc(n);
    if (!old) {
        piso_errorf("%s: out of memory", dir);
        remove_flat_dir(tmp);
        piso_cleanup_remove(tmp_id);
        return -1;
    }
    snprintf(old, n, "%s.piso-old-%d", dir, (int)getpid());
    piso_commit_begin(); /* the renames run to the end: an existing model is replaced whole or kept */
    if (exists && rename(dir, old) != 0) {
        piso_errorf("cannot move the old %s aside: %s", dir, strerror(errno));
        remove_flat_dir(tmp);
        piso_cleanup_remove(tmp_id);
        piso_commit_end();
        goto done;
    }
    if (rename(tmp, dir) != 0) {
        piso_errorf("cannot rename %s to %s: %s", tmp, dir, strerror(errno));
        if (exists) rename(old, dir);
        remove_flat_dir(tmp);
        piso_cleanup_remove(tmp_id);
        piso_commit_end();
        goto done;
    }
    piso_cleanup_remove(tmp_id);
    if (exists) old_id = piso_cleanup_add(old, 1);
    piso_commit_end();
    if (exists) remove_flat_dir(old);
    piso_cleanup_remove(old_id);
    rc = 0;
done:
    free(old);
    return rc;
}

int piso_hf_export(const struct piso_model *m, const char *dir, const struct piso_hf_export_opts *o) {
    if (piso_hf_export_check(dir)) return -1;
    char *tmp;
    int tmp_id;
    if (make_tmp_dir(dir, &tmp, &tmp_id)) return -1;
    if (fill_dir(m, tmp, o)) {
        piso_error_context("writing %s", dir);
        remove_flat_dir(tmp);
        piso_cleanup_remove(tmp_id);
        free(tmp);
        return -1;
    }
    int rc = commit_dir(dir, tmp, tmp_id);
    free(tmp);
    return rc;
}

/* ---- streamed export ------------------------------------------------------------------------ */
struct piso_hf_stream {
    char *dir, *tmp;
    int tmp_id;
    struct st_ctx weights;       /* model.safetensors, spilling */
    struct piso_st_writer *quant; /* quantization.safetensors, spilling */
    struct piso_hf_export_opts o; /* packing options (res comes with each block) */
    int next_step, next_block;   /* schema steps and blocks written so far */
};

void piso_hf_stream_abort(struct piso_hf_stream *s) {
    if (!s) return;
    piso_st_writer_free(s->weights.w), piso_st_writer_free(s->quant);
    if (s->tmp) {
        remove_flat_dir(s->tmp);
        piso_cleanup_remove(s->tmp_id);
    }
    free(s->dir), free(s->tmp), free(s);
}

/* Adds the schema steps up to (not including) `end`. */
static int stream_steps(struct piso_hf_stream *s, const struct piso_model *m, const struct piso_pipeline_result *res,
                        int end) {
    for (; s->next_step < end; s->next_step++)
        if (add_weight_step(&s->weights, m, &s->o, res, s->next_step)) return -1;
    return 0;
}

int piso_hf_stream_begin(const struct piso_model *m, const char *dir, const struct piso_hf_export_opts *o,
                         struct piso_hf_stream **out) {
    *out = NULL;
    if (piso_hf_export_check(dir)) return -1;
    struct piso_hf_stream *s = calloc(1, sizeof *s);
    if (!s || !(s->dir = strdup(dir))) {
        free(s);
        return piso_errorf("%s: out of memory", dir);
    }
    s->o = *o;
    s->weights.dtype = weights_dtype(&m->cfg);
    if (make_tmp_dir(dir, &s->tmp, &s->tmp_id)) {
        piso_hf_stream_abort(s);
        return -1;
    }
    char *wp = piso_path_join(s->tmp, "model.safetensors.spill"), *qp = piso_path_join(s->tmp, "quantization.safetensors.spill");
    s->weights.w = piso_st_writer_new(), s->quant = piso_st_writer_new();
    int rc = !wp || !qp || piso_st_writer_spill(s->weights.w, wp) || piso_st_writer_spill(s->quant, qp) ||
             stream_steps(s, m, NULL, PISO_TR_FIRST_BLOCK); /* the globals before the blocks */
    free(wp), free(qp);
    if (rc) {
        piso_error_context("writing %s", dir);
        piso_hf_stream_abort(s);
        return -1;
    }
    *out = s;
    return 0;
}

int piso_hf_stream_block(int block, struct piso_model *mq, struct piso_pipeline_result *res, void *stream) {
    struct piso_hf_stream *s = stream;
    if (block != s->next_block) return piso_errorf("streamed export: block %d arrived, %d expected", block, s->next_block);
    int rc = stream_steps(s, mq, res, PISO_TR_FIRST_BLOCK + (block + 1) * PISO_TR_N_BLOCK);
    for (int i = 0; i < res->n_layers && !rc; i++) {
        struct piso_layer_report *r = &res->layers[i];
        if (r->layer != block) continue;
        rc = add_quant_report(s->quant, mq, r);
        /* written: the codes [N, D] no longer need memory (scales, zero points and g_idx are small and
         * the records read whether they exist) */
        free(r->codes);
        r->codes = NULL;
    }
    s->next_block++;
    return rc ? piso_error_context("writing block %d of %s", block, s->dir) : 0;
}

int piso_hf_stream_finish(struct piso_hf_stream *s, const struct piso_model *m, const struct piso_hf_export_opts *o) {
    int rc = 0;
    if (s->next_block != m->cfg.n_layers)
        rc = piso_errorf("streamed export: %d of %d blocks written", s->next_block, m->cfg.n_layers);
    if (!rc) rc = stream_steps(s, m, o->res, piso_schema_steps(&m->cfg)); /* the globals after the blocks */
    if (!rc) {
        piso_st_writer_meta(s->weights.w, "format", "pt");
        char *path = piso_path_join(s->tmp, "model.safetensors");
        rc = path ? piso_st_writer_write(s->weights.w, path) : -1;
        free(path);
    }
    if (!rc && o->res) {
        char *path = piso_path_join(s->tmp, "quantization.safetensors");
        rc = path ? piso_st_writer_write(s->quant, path) : -1;
        free(path);
    }
    if (!rc) rc = fill_dir_text(m, s->tmp, o);
    if (rc) {
        piso_error_context("writing %s", s->dir);
        piso_hf_stream_abort(s);
        return -1;
    }
    piso_st_writer_free(s->weights.w), piso_st_writer_free(s->quant); /* removes the spill files */
    s->weights.w = NULL, s->quant = NULL;
    rc = commit_dir(s->dir, s->tmp, s->tmp_id);
    free(s->tmp), s->tmp = NULL; /* committed or removed */
    piso_hf_stream_abort(s);
    return rc;
}
