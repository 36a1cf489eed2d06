/* GGUF export for llama.cpp (architectures "llama", "qwen2", "qwen3" from the schema's architecture
 * table): metadata with the types llama.cpp's loader checks (u32 hyperparameters, f32 eps), the
 * tokenizer (SPM "llama" or byte-level BPE "gpt2"), the schema's tensors in ggml order (W[out][in]
 * as ne = [in, out]), q/k rows in the RoPE row order of the architecture (adjacent pairs for llama,
 * rotate-half for the NEOX qwen2/qwen3), norms and biases F32, and the block types with llama.cpp's
 * fallbacks. */
#include "piso/gguf_export.h"
#include "piso/block_scales.h"
#include "piso/ggml_quants.h"
#include "piso/gguf.h"
#include "piso/gguf_write.h"
#include "piso/imatrix.h"
#include "piso/model.h"
#include "piso/schema.h"
#include "piso/tokenizer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int piso_gguf_type_for_row(int type, int64_t ne0) { return piso_ggml_type_for_row(type, ne0); }

static const struct {
    const char *name;
    int ftype, base;
} mixtures[] = {{"Q2_K", 10, GGML_T_Q2_K},   {"Q3_K_S", 11, GGML_T_Q3_K}, {"Q3_K_M", 12, GGML_T_Q3_K},
                {"Q4_K_M", 15, GGML_T_Q4_K}, {"Q5_K_M", 17, GGML_T_Q5_K}};

int piso_gguf_mixture_from_name(const char *name, int *ftype, int *base_type) {
    for (size_t i = 0; i < sizeof mixtures / sizeof mixtures[0]; i++)
        if (!strcasecmp(name, mixtures[i].name)) {
            *ftype = mixtures[i].ftype, *base_type = mixtures[i].base;
            return 0;
        }
    return -1;
}

/* llama-quantize's choice (llama_tensor_get_type for a dense llama model), written from its rules:
 * use_more_bits = the first and last eighth of the layers and every third in between. */
static int use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

int piso_gguf_mixture_type(int ftype, int base, int role, int l, int n, int n_gqa, int64_t ne0, int tied) {
    if (role == PISO_TR_OUTPUT || (role == PISO_TR_TOK_EMBD && tied)) {
        if (ne0 % piso_ggml_traits(base)->blck_size != 0) return GGML_T_Q8_0;
        return base != GGML_T_Q8_0 ? GGML_T_Q6_K : base;
    }
    switch (role) {
    case PISO_TR_WV:
        if (ftype == 10) return n_gqa >= 4 ? GGML_T_Q4_K : GGML_T_Q3_K;
        if (ftype == 12) return l < 2 ? GGML_T_Q5_K : GGML_T_Q4_K;
        if ((ftype == 15 || ftype == 17) && use_more_bits(l, n)) return GGML_T_Q6_K;
        return base;
    case PISO_TR_DOWN:
        if (ftype == 10) return GGML_T_Q3_K;
        if (ftype == 12) return l < n / 16 ? GGML_T_Q5_K : GGML_T_Q4_K;
        if ((ftype == 15 || ftype == 17) && use_more_bits(l, n)) return GGML_T_Q6_K;
        return base;
    case PISO_TR_WO:
        if (ftype == 10) return GGML_T_Q3_K;
        if (ftype == 12) return GGML_T_Q4_K;
        return base;
    default: return base;
    }
}

int piso_gguf_file_type(int type) {
    const struct piso_ggml_traits *tr = piso_ggml_traits(type);
    return tr ? tr->file_type : -1;
}

struct exporter {
    struct piso_gguf_writer *w;
    const struct piso_gguf_export_opts *o;
    struct piso_gguf_export_stats *st;
};

/* Adds a 1-D F32 tensor (norms, biases, rope factors); the data outlives the writer (the model's),
 * or the writer takes it (owned: a malloc'd copy). */
static int add_vec(struct exporter *x, const char *name, const float *v, int64_t n, int owned) {
    x->st->counts[GGML_T_F32]++;
    x->st->n_tensors++;
    return piso_gguf_add_tensor(x->w, name, 1, &n, GGML_T_F32, (void *)v, sizeof(float) * (size_t)n, owned);
}

/* The importance of weight `name` [., D] from the imatrix into *imat (malloc'd; NULL when there is
 * no imatrix or no entry: quantized without importance, as llama.cpp does). */
static int weight_importance(const struct piso_gguf_export_opts *o, const char *name, int64_t D, float **imat) {
    *imat = NULL;
    if (!o->imatrix) return 0;
    if (!(*imat = malloc(sizeof(float) * (size_t)D))) return piso_errorf("%s: out of memory", name);
    int r = piso_imatrix_get(o->imatrix, name, D, *imat);
    if (r != 0) free(*imat), *imat = NULL;
    return r < 0 ? -1 : 0;
}

/* Quantizes W [N, D] into buf (block type t, the row fallback already applied; N · row size
 * bytes) with the scales the options ask for; *imat receives the importance used (malloc'd or
 * NULL), *tscale NVFP4's tensor scale. */
static int quantize_block_weight(const struct piso_gguf_export_opts *o, const char *name, int t, const float *W,
                                 int64_t N, int64_t D, void *buf, int tensor_scale_ok, float *tscale, float **imat) {
    if (weight_importance(o, name, D, imat)) return -1;
    /* NVFP4: no GPTQ path (its 64-blocks have no engine rounder); the imatrix from the same
     * calibration still weighs the exact scales */
    const float *H = o->scale == PISO_GGUF_SCALE_PISO && t != GGML_T_NVFP4 ? piso_calib_hessian_for(o->hessians, name, D)
                                                                          : NULL;
    size_t done;
    if (t == GGML_T_NVFP4 && o->scale == PISO_GGUF_SCALE_PISO)
        done = piso_nvfp4_quantize_tensor(W, buf, N, D, *imat, tensor_scale_ok, tscale);
    else if (H) done = piso_ggml_quantize_gptq(t, W, buf, N, D, H);
    else if (o->scale == PISO_GGUF_SCALE_REF) done = piso_ggml_quantize_ref(t, W, buf, N, D, *imat);
    else done = piso_ggml_quantize_piso_ex(t, W, buf, N, D, *imat, o->blend);
    if (done != piso_ggml_row_size(t, D) * (size_t)N) {
        free(*imat), *imat = NULL;
        return piso_error_context("quantizing %s", name);
    }
    return 0;
}

int piso_gguf_weight_roundtrip(const struct piso_gguf_export_opts *o, const char *name, const float *W, int64_t N,
                               int64_t D, int type, int tensor_scale_ok, float *out) {
    const int t = piso_gguf_type_for_row(type, D);
    const size_t rs = piso_ggml_row_size(t, D);
    void *buf = malloc(rs * (size_t)N + 1);
    float *imat = NULL, tscale = 1.0f;
    if (!buf) return piso_errorf("%s: out of memory", name);
    int rc = 0;
    if (!piso_ggml_is_block_type(t)) piso_ggml_traits(t)->from_float(W, buf, N * D);
    else rc = quantize_block_weight(o, name, t, W, N, D, buf, tensor_scale_ok, &tscale, &imat);
    for (int64_t r = 0; !rc && r < N; r++) {
        if (piso_ggml_is_block_type(t)) piso_ggml_dequantize_row(t, (const uint8_t *)buf + r * rs, out + r * D, D);
        else piso_ggml_traits(t)->to_float((const uint8_t *)buf + r * rs, out + r * D, D);
        for (int64_t j = 0; j < D; j++) out[r * D + j] *= tscale;
    }
    free(buf), free(imat);
    return rc;
}

/* Converts/quantizes W [N, D] (row-major, rows of D inputs) into `type` and adds it. */
static int add_weight(struct exporter *x, const char *name, const float *W, int64_t N, int64_t D, int type,
                      int tensor_scale_ok) {
    const int t = piso_gguf_type_for_row(type, D);
    float tscale = 1.0f; /* NVFP4: the per-tensor scale (NAME.scale) */
    if (t != type) {
        if (x->st->n_fallback < PISO_GGUF_MAX_FALLBACKS) {
            snprintf(x->st->fallbacks[x->st->n_fallback].name, sizeof x->st->fallbacks[0].name, "%s", name);
            x->st->fallbacks[x->st->n_fallback].ne0 = D;
            x->st->fallbacks[x->st->n_fallback].want = type;
            x->st->fallbacks[x->st->n_fallback].got = t;
        }
        x->st->n_fallback++;
    }
    const size_t nbytes = piso_ggml_row_size(t, D) * (size_t)N;
    void *buf = malloc(nbytes ? nbytes : 1);
    float *imat = NULL;
    if (!buf) return piso_errorf("%s: out of memory (%zu bytes)", name, nbytes);
    if (!piso_ggml_is_block_type(t)) {
        piso_ggml_traits(t)->from_float(W, buf, N * D);
    } else {
        if (quantize_block_weight(x->o, name, t, W, N, D, buf, tensor_scale_ok, &tscale, &imat)) {
            free(buf);
            return -1;
        }
        /* the objective the scales minimise, Σ_rows Σ_j h_j (w − ŵ)² (h = 1 without an imatrix),
         * summed over the block weights (blk.*) */
        double obj = 0;
        int64_t nonfinite = 0;
        const size_t rs = piso_ggml_row_size(t, D);
#pragma omp parallel for reduction(+ : obj, nonfinite) schedule(static)
        for (int64_t r = 0; r < N; r++) {
            float *y = malloc(sizeof(float) * (size_t)D);
            double e = 0;
            if (y) {
                piso_ggml_dequantize_row(t, (const uint8_t *)buf + r * rs, y, D);
                for (int64_t j = 0; j < D; j++) nonfinite += !isfinite(y[j]);
                for (int64_t j = 0; j < D; j++) {
                    const double d = (double)W[r * D + j] - (double)y[j] * tscale;
                    e += (imat ? imat[j] : 1.0) * d * d;
                }
            }
            free(y);
            obj += e;
        }
        if (!strncmp(name, "blk.", 4)) x->st->objective += obj;
        free(imat);
        if (nonfinite) { /* e.g. llama.cpp's rule on weights beyond the fp16 range of the scales */
            free(buf);
            return piso_errorf("%s: %lld values would be stored with a non-finite (NaN/Inf) %s scale: weights too large for "
                               "the type's scales", name, (long long)nonfinite, piso_ggml_traits(t)->name);
        }
    }
    x->st->counts[t]++;
    x->st->n_tensors++;
    int64_t ne[2] = {D, N};
    int rc = piso_gguf_add_tensor(x->w, name, 2, ne, t, buf, nbytes, 1);
    if (!rc && tscale != 1.0f) {
        /* llama.cpp's per-tensor scale of NVFP4 weights: "blk.N.attn_q.scale" for "blk.N.attn_q.weight" */
        char sn[128];
        const size_t len = strlen(name);
        float *sv = malloc(sizeof(float));
        if (!sv || len < 7 || strcmp(name + len - 7, ".weight") || len + 1 > sizeof sn) {
            free(sv);
            return piso_errorf("%s: cannot name its NVFP4 scale tensor", name);
        }
        snprintf(sn, sizeof sn, "%.*s.scale", (int)(len - 7), name);
        *sv = tscale;
        rc = add_vec(x, sn, sv, 1, 1);
    }
    return rc;
}

/* Tokenizer keys. A vocabulary shorter than the embedding (padded HF checkpoints) is padded with
 * "[PAD<i>]" tokens of type UNUSED, as convert_hf_to_gguf.py does. */
static int write_tokenizer(struct piso_gguf_writer *w, const struct piso_tokenizer_vocab *v, int n_vocab_model) {
    if (!v) return piso_gguf_set_str(w, "tokenizer.ggml.model", "no_vocab");
    if (v->n_vocab > n_vocab_model)
        return piso_errorf("tokenizer has %d tokens, more than the model's %d embedding rows", v->n_vocab, n_vocab_model);
    const int n = n_vocab_model;
    char **pieces = calloc((size_t)n, sizeof(char *));
    float *scores = calloc((size_t)n, sizeof(float));
    int32_t *ty = calloc((size_t)n, sizeof(int32_t));
    int rc = pieces && scores && ty ? 0 : piso_errorf("out of memory");
    for (int i = 0; i < n && !rc; i++) {
        if (i < v->n_vocab) {
            pieces[i] = v->pieces[i];
            scores[i] = v->scores ? v->scores[i] : 0.0f;
            ty[i] = v->types ? v->types[i] : 1;
        } else {
            char pad[32];
            snprintf(pad, sizeof pad, "[PAD%d]", i);
            if (!(pieces[i] = strdup(pad))) rc = piso_errorf("out of memory");
            ty[i] = 5; /* unused */
        }
    }
    if (!rc) rc = piso_gguf_set_str(w, "tokenizer.ggml.model", v->kind == PISO_TOK_SPM ? "llama" : "gpt2");
    if (!rc && v->kind == PISO_TOK_BYTE_BPE) rc = piso_gguf_set_str(w, "tokenizer.ggml.pre", v->pre[0] ? v->pre : "default");
    if (!rc) rc = piso_gguf_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)pieces, (uint64_t)n);
    if (!rc && v->scores) rc = piso_gguf_set_arr_f32(w, "tokenizer.ggml.scores", scores, (uint64_t)n);
    if (!rc) rc = piso_gguf_set_arr_i32(w, "tokenizer.ggml.token_type", ty, (uint64_t)n);
    if (!rc && v->kind == PISO_TOK_BYTE_BPE) {
        if (!v->merges || v->n_merges <= 0) rc = piso_errorf("byte-level BPE tokenizer without merges");
        else rc = piso_gguf_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)v->merges, (uint64_t)v->n_merges);
    }
    if (!rc && v->bos_id >= 0) rc = piso_gguf_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)v->bos_id);
    if (!rc && v->eos_id >= 0) rc = piso_gguf_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)v->eos_id);
    if (!rc && v->unk_id >= 0) rc = piso_gguf_set_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)v->unk_id);
    if (!rc && v->pad_id >= 0) rc = piso_gguf_set_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)v->pad_id);
    if (!rc) rc = piso_gguf_set_bool(w, "tokenizer.ggml.add_bos_token", v->add_bos);
    if (!rc) rc = piso_gguf_set_bool(w, "tokenizer.ggml.add_eos_token", 0);
    for (int i = v->n_vocab; pieces && i < n; i++) free(pieces[i]);
    free(pieces), free(scores), free(ty);
    return rc;
}

/* Llama-3 rope scaling as llama.cpp stores it: per-frequency divisors in rope_freqs.weight. */
static float *llama3_rope_factors(const struct piso_config *c) {
    const int half = c->head_dim / 2;
    float *f = malloc(sizeof(float) * (size_t)half);
    if (!f) return NULL;
    const double lo_wl = c->rope_orig_ctx / c->rope_low_freq_factor, hi_wl = c->rope_orig_ctx / c->rope_high_freq_factor;
    for (int i = 0; i < half; i++) {
        double freq = 1.0 / pow(c->rope_theta, 2.0 * i / c->head_dim), wl = 2 * M_PI / freq;
        if (wl < hi_wl) f[i] = 1.0f;
        else if (wl > lo_wl) f[i] = c->rope_factor;
        else {
            double smooth = (c->rope_orig_ctx / wl - c->rope_low_freq_factor) / (c->rope_high_freq_factor - c->rope_low_freq_factor);
            f[i] = (float)(1.0 / ((1 - smooth) / c->rope_factor + smooth));
        }
    }
    return f;
}

/* Writes the <arch>.* hyperparameters, the u32s and f32s llama.cpp's loader reads. */
static int write_hparams(struct piso_gguf_writer *w, const char *arch, const struct piso_config *c) {
    const struct {
        const char *key;
        uint32_t value;
    } u32s[] = {
        {"context_length", (uint32_t)c->max_seq_len},
        {"embedding_length", (uint32_t)c->dim},
        {"block_count", (uint32_t)c->n_layers},
        {"feed_forward_length", (uint32_t)c->hidden_dim},
        {"attention.head_count", (uint32_t)c->n_heads},
        {"attention.head_count_kv", (uint32_t)c->n_kv_heads},
        {"rope.dimension_count", (uint32_t)c->head_dim},
        /* explicit: Qwen3's head size is not dim / n_heads */
        {"attention.key_length", (uint32_t)c->head_dim},
        {"attention.value_length", (uint32_t)c->head_dim},
    };
    char key[96];
    int rc = 0;
    for (size_t i = 0; i < sizeof u32s / sizeof u32s[0] && !rc; i++) {
        snprintf(key, sizeof key, "%s.%s", arch, u32s[i].key);
        rc = piso_gguf_set_u32(w, key, u32s[i].value);
    }
    snprintf(key, sizeof key, "%s.rope.freq_base", arch);
    if (!rc) rc = piso_gguf_set_f32(w, key, c->rope_theta > 0 ? c->rope_theta : 10000.0f);
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", arch);
    if (!rc) rc = piso_gguf_set_f32(w, key, c->norm_eps);
    snprintf(key, sizeof key, "%s.vocab_size", arch);
    if (!rc) rc = piso_gguf_set_u32(w, key, (uint32_t)c->vocab_size);
    return rc;
}

/* Whether llama.cpp's architecture can hold this model; an error names what it lacks. */
static int check_arch(const struct piso_arch_info *a, const struct piso_config *c, const char *path) {
    if (c->has_qk_norm && !a->qk_norm)
        return piso_errorf("%s: GGUF architecture %s has no q/k norms; this %s model has them (use arch qwen3)", path,
                           a->gguf, c->arch);
    if (c->rope_llama3 && strcmp(a->gguf, "llama") != 0)
        return piso_errorf("%s: Llama-3 rope_scaling is stored (rope_freqs) only by GGUF architecture llama, not %s",
                           path, a->gguf);
    if (!strcmp(a->gguf, "qwen2") && (int64_t)c->n_heads * c->head_dim != c->dim)
        return piso_errorf("%s: GGUF architecture qwen2 needs n_heads * head_dim (%d * %d) == dim (%d); use qwen3", path,
                           c->n_heads, c->head_dim, c->dim);
    return 0;
}

int piso_gguf_export(const struct piso_model *m, const struct piso_tokenizer_vocab *vocab,
                     const struct piso_gguf_export_opts *o, const char *path, struct piso_gguf_export_stats *st_out) {
    const struct piso_config *c = &m->cfg;
    struct piso_gguf_export_stats st_local;
    struct piso_gguf_export_stats *st = st_out ? st_out : &st_local;
    memset(st, 0, sizeof *st);
    const double t0 = piso_time();
    const struct piso_arch_info *arch = piso_arch_for_gguf(c);
    if (check_arch(arch, c, path)) return -1;
    if (m->online.down_block || m->online.o_heads)
        return piso_errorf("GGUF export to %s: the model carries online rotations (%s%s%s), which llama.cpp cannot run; "
                           "GGUF accepts fused rotations only",
                           path, m->online.down_block ? "down_proj input" : "",
                           m->online.down_block && m->online.o_heads ? ", " : "", m->online.o_heads ? "o_proj input" : "");
    const struct piso_ggml_traits *tr = piso_ggml_traits(o->type);
    if (!tr || !tr->to_float || !tr->from_float)
        return piso_errorf("GGUF export: type %s is not supported (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, MXFP4, NVFP4)",
                           tr ? tr->name : "?");
    const int quantized = piso_ggml_is_block_type(o->type);
    const int out_type = o->output_type >= 0 ? o->output_type : quantized ? GGML_T_Q6_K : o->type;
    if (o->imatrix) { /* an importance matrix that matches no weight is the wrong file */
        int hits = 0;
        for (int s = 0, l; s < piso_schema_steps(c) && !hits; s++) {
            const struct piso_tensor_info *t = piso_schema_step(c, s, &l);
            char nm[96];
            piso_schema_name(t, PISO_NAME_GGUF, l, nm, sizeof nm);
            hits += piso_imatrix_find(o->imatrix, nm) != NULL;
        }
        if (!hits)
            return piso_errorf("GGUF export: none of the imatrix's %d entries (e.g. '%s') names a weight of this model "
                               "(e.g. blk.0.attn_q.weight): an imatrix of another model?",
                               o->imatrix->n, o->imatrix->n > 0 ? o->imatrix->e[0].name : "");
    }

    struct piso_gguf_writer *w = piso_gguf_writer_new();
    if (!w) return piso_errorf("out of memory");
    struct exporter x = {w, o, st};
    float *rope_f = NULL;
    int rc = 0;
    const int ftype = o->mixture ? o->mixture : piso_gguf_file_type(o->type);
    if (!rc) rc = piso_gguf_set_str(w, "general.architecture", arch->gguf);
    if (!rc) rc = piso_gguf_set_str(w, "general.name", o->name ? o->name : "piso export");
    if (!rc && ftype >= 0) rc = piso_gguf_set_u32(w, "general.file_type", (uint32_t)ftype);
    if (!rc) rc = piso_gguf_set_u32(w, "general.quantization_version", 2);
    if (!rc) rc = write_hparams(w, arch->gguf, c);
    if (!rc) rc = write_tokenizer(w, vocab, c->vocab_size);
    if (!rc && o->imatrix) rc = piso_gguf_set_u32(w, "quantize.imatrix.entries_count", (uint32_t)o->imatrix->n);
    if (!rc && o->imatrix) rc = piso_gguf_set_u32(w, "quantize.imatrix.chunks_count", (uint32_t)o->imatrix->chunk_count);
    if (!rc && quantized) rc = piso_gguf_set_str(w, "piso.scales", o->scale == PISO_GGUF_SCALE_REF ? "llamacpp-ref" : "piso");

    struct piso_progress pr;
    piso_progress_begin(&pr, "export", "layers", c->n_layers);
    /* the schema's tensors in file order; q/k rows (and their biases, q/k norms) in the row order
     * of the architecture's RoPE */
    for (int s = 0, l; s < piso_schema_steps(c) && !rc; s++) {
        const struct piso_tensor_info *t = piso_schema_step(c, s, &l);
        const float *data = piso_schema_data(m, t, l);
        const int64_t rows = piso_schema_dim(c, t->rows), cols = piso_schema_dim(c, t->cols);
        if (t->role == PISO_TR_ROPE_FREQS && !data && c->rope_llama3) {
            data = rope_f = llama3_rope_factors(c);
            if (!data) rc = piso_errorf("out of memory");
        }
        if (!data || rc) continue;
        char nm[96];
        piso_schema_name(t, PISO_NAME_GGUF, l, nm, sizeof nm);
        float *reordered = NULL;
        const int heads = piso_schema_rope_heads(c, t);
        if (heads && c->rope_style != arch->gguf_rope) {
            if (!(reordered = malloc(sizeof(float) * (size_t)piso_schema_numel(c, t)))) {
                rc = piso_errorf("%s: out of memory", nm);
                break;
            }
            piso_rope_reorder(data, reordered, heads, c->head_dim, cols ? cols : 1, arch->gguf_rope);
            data = reordered;
        }
        if (!cols) {
            rc = add_vec(&x, nm, data, rows, reordered != NULL); /* the writer frees a reordered copy */
            reordered = NULL;
        } else {
            /* token embeddings: with tied embeddings this tensor is also the output projection */
            const int is_out = t->role == PISO_TR_OUTPUT || (t->role == PISO_TR_TOK_EMBD && c->tied_embeddings);
            int type = is_out ? out_type : o->type;
            if (o->mixture && !(is_out && o->output_type >= 0)) /* llama-quantize's per-tensor choice */
                type = piso_gguf_mixture_type(o->mixture, o->type, t->role, l, c->n_layers, c->n_heads / c->n_kv_heads,
                                              cols, c->tied_embeddings);
            if (o->linear_types && t->linear >= 0) type = o->linear_types[l * PISO_LIN_COUNT + t->linear]; /* mixed precision */
            /* NVFP4 tensor scales only where llama.cpp applies them: the linear weights (not the
             * embedding lookup, so not a tied output either) */
            rc = add_weight(&x, nm, data, rows, cols, type, t->role != PISO_TR_TOK_EMBD);
        }
        free(reordered);
        if (t->role == PISO_TR_DOWN) piso_progress_update(&pr, l + 1);
    }
    if (!rc) rc = piso_gguf_writer_write(w, path);
    if (!rc) {
        struct piso_mmap f;
        if (piso_mmap_open(&f, path) == 0) st->file_bytes = f.size, piso_mmap_close(&f);
    } else {
        piso_error_context("exporting %s", path);
    }
    st->seconds = piso_time() - t0;
    piso_gguf_writer_free(w);
    free(rope_f);
    return rc;
}
