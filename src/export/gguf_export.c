/* GGUF export for llama.cpp (architectures "llama", "qwen2", "qwen3" from the schema's architecture
 * table): metadata with the types llama.cpp's loader checks (u32 hyperparameters, f32 eps), the
 * tokenizer (SPM "llama" or byte-level BPE "gpt2"), the schema's tensors in ggml order (W[out][in]
 * as ne = [in, out]), q/k rows in the RoPE row order of the architecture (adjacent pairs for llama,
 * rotate-half for the NEOX qwen2/qwen3), norms and biases F32, and the block types with llama.cpp's
 * fallbacks. */
#include "piso/gguf_export.h"
#include "piso/pipeline.h"
#include "piso/block_scales.h"
#include "piso/ggml_quants.h"
#include "piso/gguf.h"
#include "piso/gguf_write.h"
#include "piso/imatrix.h"
#include "piso/model.h"
#include "piso/schema.h"
#include "piso/tokenizer.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
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

/* Records weight `name` stored in type got instead of want (its row length). */
static void note_fallback(struct piso_gguf_export_stats *st, const char *name, int64_t D, int want, int got) {
    if (st->n_fallback < PISO_GGUF_MAX_FALLBACKS) {
        snprintf(st->fallbacks[st->n_fallback].name, sizeof st->fallbacks[0].name, "%s", name);
        st->fallbacks[st->n_fallback].ne0 = D;
        st->fallbacks[st->n_fallback].want = want;
        st->fallbacks[st->n_fallback].got = got;
    }
    st->n_fallback++;
}

/* Converts/quantizes W [N, D] into buf (type t, the row fallback applied: N row sizes); block
 * weights (blk.*) add their objective to st. *tscale: NVFP4's tensor scale (1 otherwise). Rows
 * are independent, so a tensor may be converted in panels of rows (the embeddings, streamed). */
static int quantize_weight(const struct piso_gguf_export_opts *o, struct piso_gguf_export_stats *st, const char *name,
                           const float *W, int64_t N, int64_t D, int t, int tensor_scale_ok, void *buf, float *tscale) {
    float *imat = NULL;
    *tscale = 1.0f;
    if (!piso_ggml_is_block_type(t)) {
        piso_ggml_traits(t)->from_float(W, buf, N * D);
        return 0;
    }
    if (quantize_block_weight(o, name, t, W, N, D, buf, tensor_scale_ok, tscale, &imat)) return -1;
    /* the objective the scales minimise, Σ_rows Σ_j h_j (w − ŵ)² (h = 1 without an imatrix),
     * summed over the block weights (blk.*) */
    double obj = 0;
    int64_t nonfinite = 0;
    const size_t rs = piso_ggml_row_size(t, D);
    const float ts = *tscale;
#pragma omp parallel for reduction(+ : obj, nonfinite) schedule(static)
    for (int64_t r = 0; r < N; r++) {
        float *y = malloc(sizeof(float) * (size_t)D);
        double e = 0;
        if (y) {
            piso_ggml_dequantize_row(t, (const uint8_t *)buf + r * rs, y, D);
            for (int64_t j = 0; j < D; j++) nonfinite += !isfinite(y[j]);
            for (int64_t j = 0; j < D; j++) {
                const double d = (double)W[r * D + j] - (double)y[j] * ts;
                e += (imat ? imat[j] : 1.0) * d * d;
            }
        }
        free(y);
        obj += e;
    }
    if (!strncmp(name, "blk.", 4)) st->objective += obj;
    free(imat);
    if (nonfinite) /* e.g. llama.cpp's rule on weights beyond the fp16 range of the scales */
        return piso_errorf("%s: %lld values would be stored with a non-finite (NaN/Inf) %s scale: weights too large for "
                           "the type's scales", name, (long long)nonfinite, piso_ggml_traits(t)->name);
    return 0;
}

/* Converts/quantizes W [N, D] (row-major, rows of D inputs) into `type` and adds it. */
static int add_weight(struct exporter *x, const char *name, const float *W, int64_t N, int64_t D, int type,
                      int tensor_scale_ok) {
    const int t = piso_gguf_type_for_row(type, D);
    float tscale = 1.0f; /* NVFP4: the per-tensor scale (NAME.scale) */
    if (t != type) note_fallback(x->st, name, D, type, t);
    const size_t nbytes = piso_ggml_row_size(t, D) * (size_t)N;
    void *buf = malloc(nbytes ? nbytes : 1);
    if (!buf) return piso_errorf("%s: out of memory (%zu bytes)", name, nbytes);
    if (quantize_weight(x->o, x->st, name, W, N, D, t, tensor_scale_ok, buf, &tscale)) {
        free(buf);
        return -1;
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

/* The checks before any work: llama.cpp can hold the model, the type is supported, the imatrix
 * is this model's. *arch: the architecture the file is written as. */
static int export_check(const struct piso_model *m, const struct piso_gguf_export_opts *o, const char *path,
                        const struct piso_arch_info **arch_out) {
    const struct piso_config *c = &m->cfg;
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
    *arch_out = arch;
    return 0;
}

/* Every key/value pair of the file, in file order. */
static int write_metadata(struct piso_gguf_writer *w, const struct piso_arch_info *arch, const struct piso_config *c,
                          const struct piso_tokenizer_vocab *vocab, const struct piso_gguf_export_opts *o) {
    const int quantized = piso_ggml_is_block_type(o->type);
    const int ftype = o->mixture ? o->mixture : piso_gguf_file_type(o->type);
    int rc = piso_gguf_set_str(w, "general.architecture", arch->gguf);
    if (!rc) rc = piso_gguf_set_str(w, "general.name", o->name ? o->name : "piso export");
    if (!rc && ftype >= 0) rc = piso_gguf_set_u32(w, "general.file_type", (uint32_t)ftype);
    if (!rc) rc = piso_gguf_set_u32(w, "general.quantization_version", 2);
    if (!rc) rc = write_hparams(w, arch->gguf, c);
    if (!rc) rc = write_tokenizer(w, vocab, c->vocab_size);
    if (!rc && o->imatrix) rc = piso_gguf_set_u32(w, "quantize.imatrix.entries_count", (uint32_t)o->imatrix->n);
    if (!rc && o->imatrix) rc = piso_gguf_set_u32(w, "quantize.imatrix.chunks_count", (uint32_t)o->imatrix->chunk_count);
    if (!rc && quantized) rc = piso_gguf_set_str(w, "piso.scales", o->scale == PISO_GGUF_SCALE_REF ? "llamacpp-ref" : "piso");
    return rc;
}

/* The type of 2-D tensor t of layer l (cols inputs), before the row fallback. */
static int weight_type(const struct piso_config *c, const struct piso_gguf_export_opts *o,
                       const struct piso_tensor_info *t, int l, int64_t cols) {
    const int out_type = o->output_type >= 0 ? o->output_type : piso_ggml_is_block_type(o->type) ? GGML_T_Q6_K : o->type;
    /* token embeddings: with tied embeddings this tensor is also the output projection */
    const int is_out = t->role == PISO_TR_OUTPUT || (t->role == PISO_TR_TOK_EMBD && c->tied_embeddings);
    int type = is_out ? out_type : o->type;
    if (o->mixture && !(is_out && o->output_type >= 0)) /* llama-quantize's per-tensor choice */
        type = piso_gguf_mixture_type(o->mixture, o->type, t->role, l, c->n_layers, c->n_heads / c->n_kv_heads, cols,
                                      c->tied_embeddings);
    if (o->linear_types && t->linear >= 0) type = o->linear_types[l * PISO_LIN_COUNT + t->linear]; /* mixed precision */
    return type;
}

/* Tensor t's data in the file's row order: q/k rows (and their biases, q/k norms) in the row order
 * of the architecture's RoPE. *copy: a malloc'd reordered copy to free, or NULL. */
static int file_order(const struct piso_config *c, const struct piso_arch_info *arch, const struct piso_tensor_info *t,
                      const char *name, const float **data, float **copy) {
    *copy = NULL;
    const int heads = piso_schema_rope_heads(c, t);
    if (!heads || c->rope_style == arch->gguf_rope) return 0;
    if (!(*copy = malloc(sizeof(float) * (size_t)piso_schema_numel(c, t)))) return piso_errorf("%s: out of memory", name);
    const int64_t cols = piso_schema_dim(c, t->cols);
    piso_rope_reorder(*data, *copy, heads, c->head_dim, cols ? cols : 1, arch->gguf_rope);
    *data = *copy;
    return 0;
}

int piso_gguf_export(const struct piso_model *m, const struct piso_tokenizer_vocab *vocab,
                     const struct piso_gguf_export_opts *o, const char *path, struct piso_gguf_export_stats *st_out) {
    const struct piso_config *c = &m->cfg;
    struct piso_gguf_export_stats st_local;
    struct piso_gguf_export_stats *st = st_out ? st_out : &st_local;
    memset(st, 0, sizeof *st);
    const double t0 = piso_time();
    const struct piso_arch_info *arch = NULL;
    if (export_check(m, o, path, &arch)) return -1;

    struct piso_gguf_writer *w = piso_gguf_writer_new();
    if (!w) return piso_errorf("out of memory");
    struct exporter x = {w, o, st};
    float *rope_f = NULL;
    int rc = write_metadata(w, arch, c, vocab, o);

    struct piso_progress pr;
    piso_progress_begin(&pr, "export", "layers", c->n_layers);
    /* the schema's tensors in file order */
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
        if ((rc = file_order(c, arch, t, nm, &data, &reordered))) break;
        if (!cols) {
            rc = add_vec(&x, nm, data, rows, reordered != NULL); /* the writer frees a reordered copy */
            reordered = NULL;
        } else {
            /* NVFP4 tensor scales only where llama.cpp applies them: the linear weights (not the
             * embedding lookup, so not a tied output either) */
            rc = add_weight(&x, nm, data, rows, cols, weight_type(c, o, t, l, cols), t->role != PISO_TR_TOK_EMBD);
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

/* ---- streamed export ------------------------------------------------------------------------- */

/* One tensor of the file: where it goes and what it holds. */
struct planned_tensor {
    char name[96];
    const struct piso_tensor_info *t;
    int layer;          /* -1: a global tensor */
    int type;           /* as stored (after the row fallback) */
    int64_t rows, cols; /* cols 0: a 1-D F32 tensor of rows values */
    uint64_t offset;    /* absolute, in the file */
    size_t nbytes;
    int written;
};

struct piso_gguf_stream {
    struct piso_outfile f;
    struct piso_gguf_export_opts o;
    const struct piso_arch_info *arch;
    struct piso_config cfg;
    struct planned_tensor *p;
    int64_t n_p;
    uint64_t file_size;
    int next_block;
    struct piso_gguf_export_stats st;
    struct piso_progress pr;
    double t0;
};

void piso_gguf_stream_abort(struct piso_gguf_stream *s) {
    if (!s) return;
    piso_outfile_abort(&s->f);
    free(s->p), free(s);
}

/* Writes n bytes at the tensor's offset, then its padding (zeros) up to the alignment. */
static int write_at(struct piso_gguf_stream *s, struct planned_tensor *p, const void *data, size_t off, size_t n) {
    static const uint8_t zeros[32] = {0};
    if (fseeko(s->f.f, (off_t)(p->offset + off), SEEK_SET) != 0) return piso_errorf("%s: seek: %s", s->f.tmp_path, strerror(errno));
    if (piso_outfile_write(&s->f, data, n)) return -1;
    if (off + n == p->nbytes && p->nbytes % 32) return piso_outfile_write(&s->f, zeros, 32 - p->nbytes % 32);
    return 0;
}

int piso_gguf_stream_begin(const struct piso_model *m, const struct piso_tokenizer_vocab *vocab,
                           const struct piso_gguf_export_opts *o, const char *path, struct piso_gguf_stream **out) {
    const struct piso_config *c = &m->cfg;
    *out = NULL;
    struct piso_gguf_stream *s = calloc(1, sizeof *s);
    struct piso_gguf_writer *w = piso_gguf_writer_new();
    struct piso_buf h = {0};
    uint64_t *offsets = NULL;
    int rc = -1;
    if (!s || !w) {
        piso_errorf("out of memory");
        goto done;
    }
    s->t0 = piso_time();
    s->o = *o, s->cfg = *c;
    if (export_check(m, o, path, &s->arch)) goto done;
    if (o->linear_types) {
        piso_errorf("GGUF export to %s: mixed precision is not streamed", path);
        goto done;
    }
    if (write_metadata(w, s->arch, c, vocab, o)) goto done;
    if (!(s->p = calloc((size_t)piso_schema_steps(c), sizeof *s->p))) {
        piso_errorf("out of memory");
        goto done;
    }
    /* every tensor's name, shape and type from the config and the options, in file order, as the
     * eager export adds them */
    for (int st = 0, l; st < piso_schema_steps(c); st++) {
        const struct piso_tensor_info *t = piso_schema_step(c, st, &l);
        const int present = t->role == PISO_TR_ROPE_FREQS ? piso_schema_data(m, t, l) != NULL || c->rope_llama3
                                                          : piso_schema_present(c, t);
        if (!present) continue;
        struct planned_tensor *p = &s->p[s->n_p];
        piso_schema_name(t, PISO_NAME_GGUF, l, p->name, sizeof p->name);
        p->t = t, p->layer = l;
        p->rows = piso_schema_dim(c, t->rows), p->cols = piso_schema_dim(c, t->cols);
        if (!p->cols) {
            p->type = GGML_T_F32;
        } else {
            const int want = weight_type(c, o, t, l, p->cols);
            p->type = piso_gguf_type_for_row(want, p->cols);
            if (p->type != want) note_fallback(&s->st, p->name, p->cols, want, p->type);
            /* NVFP4's tensor scale (NAME.scale) exists only when it is not 1: known after quantizing */
            if (p->type == GGML_T_NVFP4 && t->role != PISO_TR_TOK_EMBD) {
                piso_errorf("GGUF export to %s: %s in NVFP4 is not streamed (its tensor scale is known only after "
                            "quantizing; use --no-stream)", path, p->name);
                goto done;
            }
        }
        int64_t ne[2] = {p->cols ? p->cols : p->rows, p->rows};
        p->nbytes = piso_ggml_row_size(p->type, ne[0]) * (size_t)(p->cols ? p->rows : 1);
        if (piso_gguf_add_tensor(w, p->name, p->cols ? 2 : 1, ne, p->type, NULL, p->nbytes, 0)) goto done;
        s->st.counts[p->type]++;
        s->st.n_tensors++;
        s->n_p++;
    }
    if (!(offsets = malloc(sizeof(uint64_t) * (size_t)(s->n_p ? s->n_p : 1)))) {
        piso_errorf("out of memory");
        goto done;
    }
    if (piso_gguf_writer_layout(w, &h, offsets, &s->file_size)) goto done;
    for (int64_t i = 0; i < s->n_p; i++) s->p[i].offset = offsets[i];
    /* the header, padded: the temporary file next to the output */
    if (piso_outfile_open(&s->f, path)) goto done;
    static const uint8_t zeros[32] = {0};
    if (piso_outfile_write(&s->f, h.data, h.len) ||
        (h.len % 32 && piso_outfile_write(&s->f, zeros, 32 - h.len % 32))) {
        piso_outfile_abort(&s->f);
        goto done;
    }
    piso_progress_begin(&s->pr, "export", "layers", c->n_layers);
    rc = 0;
done:
    piso_buf_free(&h);
    free(offsets);
    piso_gguf_writer_free(w);
    if (rc) {
        piso_error_context("exporting %s", path);
        if (s) free(s->p);
        free(s);
    } else {
        *out = s;
    }
    return rc;
}

/* Writes planned tensor p from data (its rows, or the whole 1-D tensor, in piso's row order). */
static int stream_tensor(struct piso_gguf_stream *s, struct planned_tensor *p, const float *data) {
    float *reordered = NULL;
    int rc = file_order(&s->cfg, s->arch, p->t, p->name, &data, &reordered);
    if (!rc && !p->cols) {
        rc = write_at(s, p, data, 0, p->nbytes);
    } else if (!rc) {
        void *buf = malloc(p->nbytes ? p->nbytes : 1);
        float tscale;
        if (!buf) rc = piso_errorf("%s: out of memory (%zu bytes)", p->name, p->nbytes);
        if (!rc) rc = quantize_weight(&s->o, &s->st, p->name, data, p->rows, p->cols, p->type, 1, buf, &tscale);
        if (!rc) rc = write_at(s, p, buf, 0, p->nbytes);
        free(buf);
    }
    free(reordered);
    p->written = !rc;
    return rc;
}

int piso_gguf_stream_block(struct piso_gguf_stream *s, const struct piso_model *m, int l,
                           const struct piso_imatrix *imatrix, const struct piso_calib_hessians *hessians) {
    if (l != s->next_block || l >= s->cfg.n_layers)
        return piso_errorf("%s: block %d written out of order (expected %d)", s->f.path, l, s->next_block);
    s->o.imatrix = imatrix ? imatrix : s->o.imatrix;
    s->o.hessians = hessians ? hessians : s->o.hessians;
    for (int64_t i = 0; i < s->n_p; i++) {
        struct planned_tensor *p = &s->p[i];
        if (p->layer != l) continue;
        const float *data = piso_schema_data(m, p->t, l);
        if (!data) return piso_errorf("%s: %s: block %d's weights are not loaded", s->f.path, p->name, l);
        if (stream_tensor(s, p, data)) return piso_error_context("exporting %s", s->f.path);
    }
    piso_progress_update(&s->pr, l + 1);
    s->next_block = l + 1;
    return 0;
}

/* The embeddings or the output head, in panels of rows converted from the model (lazy: from its
 * file), so that the whole matrix is never held in F32. */
static int stream_rows(struct piso_gguf_stream *s, const struct piso_model *m, struct planned_tensor *p) {
    const int64_t panel = 4096, D = p->cols;
    const size_t rs = piso_ggml_row_size(p->type, D);
    float *W = malloc(sizeof(float) * (size_t)(panel * D));
    void *buf = malloc(rs * (size_t)panel);
    int rc = W && buf ? 0 : piso_errorf("%s: out of memory", p->name);
    for (int64_t r = 0; r < p->rows && !rc; r += panel) {
        const int64_t n = p->rows - r < panel ? p->rows - r : panel;
        float tscale;
        rc = piso_model_rows(m, p->t->role == PISO_TR_OUTPUT, r, n, W);
        if (!rc) rc = quantize_weight(&s->o, &s->st, p->name, W, n, D, p->type, p->t->role != PISO_TR_TOK_EMBD, buf, &tscale);
        if (!rc) rc = write_at(s, p, buf, rs * (size_t)r, rs * (size_t)n);
        piso_model_drop_file_pages(m); /* the panel's source pages (lazy models) need not stay resident */
    }
    free(W), free(buf);
    p->written = !rc;
    return rc;
}

int piso_gguf_stream_finish(struct piso_gguf_stream *s, const struct piso_model *m, struct piso_gguf_export_stats *st) {
    int rc = 0;
    if (s->next_block != s->cfg.n_layers)
        rc = piso_errorf("%s: %d of %d blocks written", s->f.path, s->next_block, s->cfg.n_layers);
    for (int64_t i = 0; i < s->n_p && !rc; i++) {
        struct planned_tensor *p = &s->p[i];
        if (p->written) continue;
        if (p->layer >= 0) {
            rc = piso_errorf("%s: %s was not written", s->f.path, p->name);
        } else if (p->cols) {
            rc = stream_rows(s, m, p);
        } else {
            const float *data = piso_schema_data(m, p->t, -1);
            float *rope_f = NULL;
            if (!data && p->t->role == PISO_TR_ROPE_FREQS) data = rope_f = llama3_rope_factors(&s->cfg);
            rc = data ? stream_tensor(s, p, data) : piso_errorf("%s: %s: no data", s->f.path, p->name);
            free(rope_f);
        }
    }
    if (rc) {
        piso_error_context("exporting %s", s->f.path);
        piso_gguf_stream_abort(s);
        return -1;
    }
    s->st.file_bytes = s->file_size;
    s->st.seconds = piso_time() - s->t0;
    if (st) *st = s->st;
    rc = piso_outfile_commit(&s->f);
    free(s->p), free(s);
    return rc;
}

/* ---- memory, up front ----------------------------------------------------------------------- */
void piso_gguf_memory_estimate(const struct piso_config *cfg, int streaming, int64_t n_chunk, int64_t n_ctx,
                               int hessians, struct piso_gguf_memory *m) {
    memset(m, 0, sizeof *m);
    struct piso_pipeline_memory pm; /* its model / block sizes: one F32 copy, one F32 block */
    piso_pipeline_memory_estimate(cfg, 1, 1, streaming, NULL, &pm);
    const double D = cfg->dim, Hq = (double)cfg->n_heads * cfg->head_dim, F = cfg->hidden_dim;
    double dmax = D > Hq ? D : Hq;
    dmax = dmax > F ? dmax : F;
    m->streaming = streaming;
    m->weights = streaming ? pm.block : pm.model;
    if (n_chunk > 0) {
        const double taps = 4.0 * (double)n_ctx * (2 * D + Hq + F);
        m->calib = 4.0 * (double)(streaming ? n_chunk : 1) * (double)n_ctx * D + taps;
        if (hessians) {
            const double sq = 2 * D * D + Hq * Hq + F * F; /* one block's four inputs */
            m->hessians = (streaming ? sq * (8.0 + 4.0) : cfg->n_layers * sq * (8.0 + 4.0)) + 4.0 * dmax * dmax;
            m->solver = 8.0 * dmax * dmax;
        }
    }
    m->total = m->weights + m->calib + m->hessians + m->solver;
}

int piso_gguf_memory_check(const struct piso_config *cfg, int streaming, int64_t n_chunk, int64_t n_ctx, int hessians) {
    struct piso_gguf_memory m;
    piso_gguf_memory_estimate(cfg, streaming, n_chunk, n_ctx, hessians, &m);
    double avail = piso_mem_available();
    if (avail < 0 || m.total <= avail) return 0;
    return piso_errorf("not enough memory: this run needs about %.3g GB (%s %.3g GB, calibration streams %.3g GB for "
                       "%lld chunks of %lld tokens, Hessians %.3g GB%s, solver %.3g GB) but %.3g GB are available; "
                       "use fewer chunks (--chunks)%s or a machine with more memory",
                       m.total / 1e9, streaming ? "one F32 block" : "F32 weights", m.weights / 1e9, m.calib / 1e9,
                       (long long)n_chunk, (long long)n_ctx, m.hessians / 1e9,
                       streaming ? ", one block at a time" : ", every block's",
                       m.solver / 1e9, avail / 1e9,
                       streaming ? "" : ", streaming (drop --no-stream; an HF source)");
}
