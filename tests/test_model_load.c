/* Model loaders: stories260K re-exported here into the other formats the loaders accept (HF BF16
 * and F16, sharded safetensors with an index, GGUF F32 / F16 / Q8_0 with the tokenizer in
 * tokenizer.ggml.*) gives the logits of the original with the same rounding applied to its
 * weights (Q8_0 rounding computed here from the block definition); copy-on-write in place edits;
 * malformed inputs give errors naming the file and field. */
#include "harness.h"
#include "piso/eval.h"
#include "piso/gguf.h"
#include "piso/safetensors.h"

#include <unistd.h>

static char tmpdir[256];

static char *tmp(const char *name) { return piso_path_join(tmpdir, name); }

static void write_text(const char *path, const char *s) {
    FILE *f = fopen(path, "wb");
    fputs(s, f);
    fclose(f);
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double d = 0;
    for (size_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

static int tokens[64];
static void logits_of(const struct piso_model *m, float *out) { CHECK(piso_forward(m, tokens, 64, 0, out) == 0, "forward: %s", piso_last_error()); }

/* Every weight of m with its HF name, rows and cols (cols 0: 1-D). */
struct named {
    char name[96];
    float *data;
    int64_t rows, cols;
};
/* HF's q/k row order from piso's adjacent-pair order (HF's conversion script: row h*hd + i*hd/2 + j
 * of the checkpoint is the model's row h*hd + 2j + i), written here from that definition. */
static void adjacent_to_half(const float *src, float *dst, int heads, int hd, int64_t cols) {
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < hd / 2; j++)
                memcpy(dst + ((size_t)h * hd + (size_t)i * hd / 2 + j) * (size_t)cols,
                       src + ((size_t)h * hd + 2 * (size_t)j + i) * (size_t)cols, sizeof(float) * (size_t)cols);
}

static int hf_names(struct piso_model *m, struct named *out) {
    const struct piso_config *c = &m->cfg;
    int64_t D = c->dim, F = c->hidden_dim, V = c->vocab_size, Hq = (int64_t)c->n_heads * c->head_dim,
            Hkv = (int64_t)c->n_kv_heads * c->head_dim;
    int k = 0;
#define ADD(p, r, cc, ...) (snprintf(out[k].name, 96, __VA_ARGS__), out[k].data = (p), out[k].rows = (r), out[k].cols = (cc), k++)
    ADD(m->tok_embd, V, D, "model.embed_tokens.weight");
    ADD(m->out_norm, D, 0, "model.norm.weight");
    for (int l = 0; l < c->n_layers; l++) {
        struct piso_layer_weights *w = &m->layers[l];
        ADD(w->attn_norm, D, 0, "model.layers.%d.input_layernorm.weight", l);
        ADD(w->wq, Hq, D, "model.layers.%d.self_attn.q_proj.weight", l);
        ADD(w->wk, Hkv, D, "model.layers.%d.self_attn.k_proj.weight", l);
        ADD(w->wv, Hkv, D, "model.layers.%d.self_attn.v_proj.weight", l);
        ADD(w->wo, D, Hq, "model.layers.%d.self_attn.o_proj.weight", l);
        ADD(w->ffn_norm, D, 0, "model.layers.%d.post_attention_layernorm.weight", l);
        ADD(w->w_gate, F, D, "model.layers.%d.mlp.gate_proj.weight", l);
        ADD(w->w_up, F, D, "model.layers.%d.mlp.up_proj.weight", l);
        ADD(w->w_down, D, F, "model.layers.%d.mlp.down_proj.weight", l);
    }
#undef ADD
    return k;
}

/* Writes the weights (dtype F32/F16/BF16) into `files` shards round-robin, plus an index when
 * sharded; rounds m's own weights the same way so the expected logits can be computed. */
static void export_hf(struct piso_model *m, const char *dir, enum piso_dtype dt, int files) {
    struct named t[64];
    int n = hf_names(m, t);
    struct piso_st_writer *w[2] = {piso_st_writer_new(), piso_st_writer_new()};
    char *index = malloc(65536);
    int k = snprintf(index, 65536, "{\"metadata\": {}, \"weight_map\": {");
    for (int i = 0; i < n; i++) {
        size_t numel = (size_t)t[i].rows * (size_t)(t[i].cols ? t[i].cols : 1);
        int64_t shape[2] = {t[i].rows, t[i].cols};
        int f = i % files;
        /* the loaded model runs in adjacent-pair order; the checkpoint stores q/k in HF order */
        const char *nm = t[i].name;
        int heads = m->cfg.rope_style != PISO_ROPE_ADJACENT ? 0
                    : strstr(nm, "q_proj.weight")          ? m->cfg.n_heads
                    : strstr(nm, "k_proj.weight")          ? m->cfg.n_kv_heads
                                                            : 0;
        float *hf_order = NULL;
        if (heads) {
            hf_order = malloc(numel * sizeof(float));
            adjacent_to_half(t[i].data, hf_order, heads, m->cfg.head_dim, t[i].cols);
        }
        if (dt == PISO_DTYPE_F32) {
            piso_st_writer_add_copy(w[f], t[i].name, dt, t[i].cols ? 2 : 1, shape, hf_order ? hf_order : t[i].data);
        } else {
            uint16_t *h = malloc(numel * 2);
            for (size_t j = 0; j < numel; j++) {
                h[j] = dt == PISO_DTYPE_F16 ? piso_fp32_to_fp16(t[i].data[j]) : piso_fp32_to_bf16(t[i].data[j]);
                t[i].data[j] = dt == PISO_DTYPE_F16 ? piso_fp16_to_fp32(h[j]) : piso_bf16_to_fp32(h[j]);
            }
            if (heads) { /* rounding is elementwise: round in model order, store in HF order */
                uint16_t *hh = malloc(numel * 2);
                for (int hd = m->cfg.head_dim, r = 0; r < heads * hd; r++) {
                    int hh_row = r / hd * hd + (r % hd % 2) * hd / 2 + (r % hd) / 2;
                    memcpy(hh + (size_t)hh_row * (size_t)t[i].cols, h + (size_t)r * (size_t)t[i].cols,
                           2 * (size_t)t[i].cols);
                }
                free(h);
                h = hh;
            }
            piso_st_writer_add_copy(w[f], t[i].name, dt, t[i].cols ? 2 : 1, shape, h);
            free(h);
        }
        free(hf_order);
        k += snprintf(index + k, 65536 - (size_t)k, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"", i ? ", " : "",
                      t[i].name, f + 1);
    }
    snprintf(index + k, 65536 - (size_t)k, "}}");
    piso_mkdir_p(dir);
    for (int f = 0; f < files; f++) {
        char name[64];
        if (files == 1) snprintf(name, sizeof name, "model.safetensors");
        else snprintf(name, sizeof name, "model-0000%d-of-00002.safetensors", f + 1);
        char *p = piso_path_join(dir, name);
        CHECK(piso_st_writer_write(w[f], p) == 0, "write %s: %s", p, piso_last_error());
        free(p);
    }
    if (files > 1) {
        char *p = piso_path_join(dir, "model.safetensors.index.json");
        write_text(p, index);
        free(p);
    }
    char *p = piso_path_join(dir, "config.json");
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": %d, \"intermediate_size\": %d, "
             "\"num_hidden_layers\": %d, \"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"vocab_size\": %d, "
             "\"max_position_embeddings\": 512, \"rms_norm_eps\": 1e-05, \"tie_word_embeddings\": true}",
             m->cfg.dim, m->cfg.hidden_dim, m->cfg.n_layers, m->cfg.n_heads, m->cfg.n_kv_heads, m->cfg.vocab_size);
    write_text(p, cfg);
    free(p);
    piso_st_writer_free(w[0]);
    piso_st_writer_free(w[1]);
    free(index);
}

static void test_hf_variants(void) {
    const char *hf = test_data("models/stories260K-hf");
    struct piso_model *ref, *m;
    if (piso_model_load(hf, NULL, &ref) != 0) {
        CHECK(0, "load: %s", piso_last_error());
        return;
    }
    float *want = malloc(64 * 512 * 4), *got = malloc(64 * 512 * 4);
    /* sharded F32: identical logits */
    char *dir = tmp("sharded");
    export_hf(ref, dir, PISO_DTYPE_F32, 2);
    logits_of(ref, want);
    if (piso_model_load(dir, NULL, &m) == 0) {
        CHECK(m->storage && m->cfg.tied_embeddings && m->tok == NULL, "sharded config (no tokenizer there)");
        logits_of(m, got);
        CHECK(max_abs_diff(want, got, 64 * 512) == 0, "sharded logits differ: %g", max_abs_diff(want, got, 64 * 512));
        piso_model_free(m);
    } else {
        CHECK(0, "load sharded: %s", piso_last_error());
    }
    free(dir);
    /* BF16 then F16 (each rounds ref's weights in place: copy-on-write, the file stays intact) */
    CHECK(piso_model_make_writable(ref) == 0, "make_writable");
    enum piso_dtype dts[2] = {PISO_DTYPE_BF16, PISO_DTYPE_F16};
    for (int k = 0; k < 2; k++) {
        char *d = tmp(k ? "f16" : "bf16");
        export_hf(ref, d, dts[k], 1);
        logits_of(ref, want);
        if (piso_model_load(d, NULL, &m) == 0) {
            CHECK(m->cfg.dtype == dts[k], "dtype recorded");
            logits_of(m, got);
            CHECK(max_abs_diff(want, got, 64 * 512) < 1e-5, "%s logits differ by %g", piso_dtype_name(dts[k]),
                  max_abs_diff(want, got, 64 * 512));
            piso_model_free(m);
        } else {
            CHECK(0, "load %s: %s", d, piso_last_error());
        }
        free(d);
    }
    /* in-place edit of a mapped F32 weight: private to the process */
    float orig = ref->layers[0].wq[0];
    ref->layers[0].wq[0] = 1234.5f;
    struct piso_model *again;
    if (piso_model_load(hf, NULL, &again) == 0) {
        CHECK(again->layers[0].wq[0] != 1234.5f, "the edit reached the file");
        piso_model_free(again);
    }
    (void)orig;
    free(want), free(got);
    piso_model_free(ref);
}

/* ---- HF architectures: config.json parsing and tensor names, against the model built in memory */
static uint64_t rng = 0x2545F4914F6CDD1Dull;
static float frand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 - 0.5);
}
static void fill(float *p, size_t n, float scale, float offset) {
    for (size_t i = 0; i < n; i++) p[i] = offset + scale * frand();
}

struct arch_case {
    const char *cls, *extra; /* extra config.json fields */
    struct piso_config cfg;
};

static void test_hf_archs(void) {
    static const struct arch_case cases[] = {
        {"Qwen2ForCausalLM", "\"rope_theta\": 1000000.0, \"rms_norm_eps\": 1e-06, \"tie_word_embeddings\": false",
         {.dim = 32, .hidden_dim = 40, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .head_dim = 8, .vocab_size = 50,
          .norm_eps = 1e-6f, .rope_theta = 1e6f, .has_qkv_bias = 1}},
        {"Qwen3ForCausalLM", "\"head_dim\": 12, \"rms_norm_eps\": 1e-06, \"tie_word_embeddings\": true",
         {.dim = 32, .hidden_dim = 40, .n_layers = 2, .n_heads = 4, .n_kv_heads = 1, .head_dim = 12, .vocab_size = 50,
          .norm_eps = 1e-6f, .rope_theta = 10000.0f, .has_qk_norm = 1, .tied_embeddings = 1}},
        {"LlamaForCausalLM",
         "\"rope_theta\": 500000.0, \"rms_norm_eps\": 1e-05, \"rope_scaling\": {\"rope_type\": \"llama3\", "
         "\"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
         "\"original_max_position_embeddings\": 64}",
         {.dim = 32, .hidden_dim = 48, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .head_dim = 8, .vocab_size = 50,
          .norm_eps = 1e-5f, .rope_theta = 5e5f, .rope_llama3 = 1, .rope_factor = 8, .rope_low_freq_factor = 1,
          .rope_high_freq_factor = 4, .rope_orig_ctx = 64}},
        {"MistralForCausalLM", "\"rope_theta\": 1000000.0, \"rms_norm_eps\": 1e-05",
         {.dim = 32, .hidden_dim = 48, .n_layers = 1, .n_heads = 4, .n_kv_heads = 1, .head_dim = 8, .vocab_size = 50,
          .norm_eps = 1e-5f, .rope_theta = 1e6f}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        struct piso_config c = cases[k].cfg;
        snprintf(c.arch, sizeof c.arch, "llama");
        c.rope_style = PISO_ROPE_HALF, c.max_seq_len = 128;
        struct piso_model *m, *got;
        if (piso_model_alloc(&c, &m) != 0) {
            CHECK(0, "alloc: %s", piso_last_error());
            continue;
        }
        /* random weights, then every tensor under its HF name */
        int64_t D = c.dim, F = c.hidden_dim, V = c.vocab_size, hd = c.head_dim, Hq = c.n_heads * hd, Hkv = c.n_kv_heads * hd;
        struct named t[64];
        int n = hf_names(m, t);
        for (int i = 0; i < n; i++) fill(t[i].data, (size_t)t[i].rows * (size_t)(t[i].cols ? t[i].cols : 1), 0.3f, t[i].cols ? 0 : 1);
#define ADD(p, r, cc, ...) (snprintf(t[n].name, 96, __VA_ARGS__), t[n].data = (p), t[n].rows = (r), t[n].cols = (cc), \
                            fill(p, (size_t)(r) * (size_t)((cc) ? (cc) : 1), 0.3f, (cc) ? 0 : 1), n++)
        if (!c.tied_embeddings) ADD(m->output, V, D, "lm_head.weight");
        for (int l = 0; l < c.n_layers; l++) {
            struct piso_layer_weights *w = &m->layers[l];
            if (w->bq) {
                ADD(w->bq, Hq, 0, "model.layers.%d.self_attn.q_proj.bias", l);
                ADD(w->bk, Hkv, 0, "model.layers.%d.self_attn.k_proj.bias", l);
                ADD(w->bv, Hkv, 0, "model.layers.%d.self_attn.v_proj.bias", l);
            }
            if (w->q_norm) {
                ADD(w->q_norm, hd, 0, "model.layers.%d.self_attn.q_norm.weight", l);
                ADD(w->k_norm, hd, 0, "model.layers.%d.self_attn.k_norm.weight", l);
            }
        }
#undef ADD
        (void)F;
        struct piso_st_writer *w = piso_st_writer_new();
        for (int i = 0; i < n; i++) {
            int64_t shape[2] = {t[i].rows, t[i].cols};
            piso_st_writer_add(w, t[i].name, PISO_DTYPE_F32, t[i].cols ? 2 : 1, shape, t[i].data);
        }
        char sub[32];
        snprintf(sub, sizeof sub, "arch%zu", k);
        char *dir = tmp(sub), *stp = piso_path_join(dir, "model.safetensors"), *cp = piso_path_join(dir, "config.json");
        piso_mkdir_p(dir);
        piso_st_writer_write(w, stp);
        piso_st_writer_free(w);
        char cfg[2048];
        snprintf(cfg, sizeof cfg,
                 "{\"architectures\": [\"%s\"], \"hidden_size\": %d, \"intermediate_size\": %d, "
                 "\"num_hidden_layers\": %d, \"num_attention_heads\": %d, \"num_key_value_heads\": %d, "
                 "\"vocab_size\": %d, \"max_position_embeddings\": 128, \"hidden_act\": \"silu\", %s}",
                 cases[k].cls, c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, cases[k].extra);
        write_text(cp, cfg);
        if (piso_model_load(dir, NULL, &got) == 0) {
            const struct piso_config *g = &got->cfg;
            CHECK(g->head_dim == c.head_dim && g->n_kv_heads == c.n_kv_heads && g->has_qkv_bias == c.has_qkv_bias &&
                      g->has_qk_norm == c.has_qk_norm && g->tied_embeddings == c.tied_embeddings &&
                      g->rope_llama3 == c.rope_llama3 && g->rope_theta == c.rope_theta && g->norm_eps == c.norm_eps &&
                      g->rope_style == PISO_ROPE_ADJACENT,
                  "%s: parsed config (q/k rows reordered to adjacent pairs)", cases[k].cls);
            /* the loader's reorder is exact: its q/k rows are m's rotate-half rows in adjacent order */
            float *back = malloc(sizeof(float) * (size_t)(Hq * D));
            adjacent_to_half(got->layers[0].wq, back, c.n_heads, c.head_dim, D);
            CHECK(memcmp(back, m->layers[0].wq, sizeof(float) * (size_t)(Hq * D)) == 0, "%s: q rows", cases[k].cls);
            adjacent_to_half(got->layers[0].wk, back, c.n_kv_heads, c.head_dim, D);
            CHECK(memcmp(back, m->layers[0].wk, sizeof(float) * (size_t)(Hkv * D)) == 0, "%s: k rows", cases[k].cls);
            if (c.has_qkv_bias) {
                adjacent_to_half(got->layers[0].bq, back, c.n_heads, c.head_dim, 1);
                CHECK(memcmp(back, m->layers[0].bq, sizeof(float) * (size_t)Hq) == 0, "%s: q bias", cases[k].cls);
            }
            if (c.has_qk_norm) {
                adjacent_to_half(got->layers[0].k_norm, back, 1, c.head_dim, 1);
                CHECK(memcmp(back, m->layers[0].k_norm, sizeof(float) * (size_t)hd) == 0, "%s: k norm", cases[k].cls);
            }
            free(back);
            CHECK(g->rope_factor == c.rope_factor && g->rope_orig_ctx == c.rope_orig_ctx, "%s: rope scaling", cases[k].cls);
            int tk[20];
            for (int i = 0; i < 20; i++) tk[i] = (i * 7 + 3) % c.vocab_size;
            float *a = malloc(20 * (size_t)V * 4), *b = malloc(20 * (size_t)V * 4);
            CHECK(piso_forward(m, tk, 20, 0, a) == 0 && piso_forward(got, tk, 20, 0, b) == 0, "forward");
            /* same model, the other RoPE pairing: equal up to the order of float operations */
            CHECK(max_abs_diff(a, b, 20 * (size_t)V) < 1e-5, "%s: logits of the loaded model differ by %g", cases[k].cls,
                  max_abs_diff(a, b, 20 * (size_t)V));
            free(a), free(b);
            piso_model_free(got);
        } else {
            CHECK(0, "%s: load: %s", cases[k].cls, piso_last_error());
        }
        free(dir), free(stp), free(cp);
        piso_model_free(m);
    }
}

/* ---- GGUF ------------------------------------------------------------------------------------ */
struct buf {
    uint8_t *p;
    size_t n, cap;
};
static void put(struct buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) b->p = realloc(b->p, b->cap = (b->n + n) * 2 + 64);
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_u32(struct buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(struct buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(struct buf *b, const char *s) { put_u64(b, strlen(s)), put(b, s, strlen(s)); }
static void kv_u32(struct buf *b, const char *k, uint32_t v) { put_str(b, k), put_u32(b, 4), put_u32(b, v); }
static void kv_f32(struct buf *b, const char *k, float v) { put_str(b, k), put_u32(b, 6), put(b, &v, 4); }
static void kv_str(struct buf *b, const char *k, const char *v) { put_str(b, k), put_u32(b, 8), put_str(b, v); }

/* Q8_0 from its definition: per 32 values d = amax / 127 (stored fp16), q = round(x / d). Returns
 * the block bytes and replaces x by its dequantized values. */
static void q8_0_row(float *x, int64_t k, uint8_t *out) {
    for (int64_t b = 0; b < k / 32; b++) {
        float *v = x + b * 32, amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(v[j]));
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        uint16_t h = piso_fp32_to_fp16(d);
        memcpy(out + b * 34, &h, 2);
        float dd = piso_fp16_to_fp32(h);
        for (int j = 0; j < 32; j++) {
            int q = (int)roundf(v[j] * id);
            q = q > 127 ? 127 : q < -127 ? -127 : q;
            out[b * 34 + 2 + j] = (uint8_t)(int8_t)q;
            v[j] = dd * (float)q;
        }
    }
}

/* A llama GGUF of m (adjacent RoPE layout: a llama2.c model maps 1:1). quant: 0 F32, 1 F16
 * matrices, 2 Q8_0 matrices (F16 where a row is not whole blocks), 3 BF16 matrices. Rounds m's weights the same way. arch overrides the architecture. */
static void export_gguf(struct piso_model *m, const char *path, int quant, const char *arch) {
    const struct piso_config *c = &m->cfg;
    int64_t D = c->dim, F = c->hidden_dim, V = c->vocab_size, Hq = (int64_t)c->n_heads * c->head_dim,
            Hkv = (int64_t)c->n_kv_heads * c->head_dim;
    struct {
        char name[64];
        float *data;
        int64_t ne0, ne1;
    } t[64];
    int n = 0;
#define T(p, a, b, ...) (snprintf(t[n].name, 64, __VA_ARGS__), t[n].data = (p), t[n].ne0 = (a), t[n].ne1 = (b), n++)
    T(m->tok_embd, D, V, "token_embd.weight");
    T(m->out_norm, D, 0, "output_norm.weight");
    for (int l = 0; l < c->n_layers; l++) {
        struct piso_layer_weights *w = &m->layers[l];
        T(w->attn_norm, D, 0, "blk.%d.attn_norm.weight", l);
        T(w->wq, D, Hq, "blk.%d.attn_q.weight", l);
        T(w->wk, D, Hkv, "blk.%d.attn_k.weight", l);
        T(w->wv, D, Hkv, "blk.%d.attn_v.weight", l);
        T(w->wo, Hq, D, "blk.%d.attn_output.weight", l);
        T(w->ffn_norm, D, 0, "blk.%d.ffn_norm.weight", l);
        T(w->w_gate, D, F, "blk.%d.ffn_gate.weight", l);
        T(w->w_up, D, F, "blk.%d.ffn_up.weight", l);
        T(w->w_down, F, D, "blk.%d.ffn_down.weight", l);
    }
#undef T
    const struct piso_tokenizer_vocab *v = m->tok ? piso_tokenizer_vocab(m->tok) : NULL;
    struct buf b = {0};
    put(&b, "GGUF", 4), put_u32(&b, 3), put_u64(&b, (uint64_t)n), put_u64(&b, v ? 15 : 10);
    kv_str(&b, "general.architecture", arch);
    kv_u32(&b, "llama.embedding_length", (uint32_t)D), kv_u32(&b, "llama.block_count", (uint32_t)c->n_layers);
    kv_u32(&b, "llama.feed_forward_length", (uint32_t)F), kv_u32(&b, "llama.attention.head_count", (uint32_t)c->n_heads);
    kv_u32(&b, "llama.attention.head_count_kv", (uint32_t)c->n_kv_heads);
    kv_u32(&b, "llama.context_length", (uint32_t)c->max_seq_len);
    kv_f32(&b, "llama.attention.layer_norm_rms_epsilon", 1e-5f), kv_f32(&b, "llama.rope.freq_base", 10000.0f);
    kv_u32(&b, "llama.rope.dimension_count", (uint32_t)c->head_dim);
    if (v) {
        kv_str(&b, "tokenizer.ggml.model", "llama");
        put_str(&b, "tokenizer.ggml.tokens"), put_u32(&b, 9), put_u32(&b, 8), put_u64(&b, (uint64_t)v->n_vocab);
        for (int i = 0; i < v->n_vocab; i++) put_str(&b, v->pieces[i]);
        put_str(&b, "tokenizer.ggml.scores"), put_u32(&b, 9), put_u32(&b, 6), put_u64(&b, (uint64_t)v->n_vocab);
        put(&b, v->scores, (size_t)v->n_vocab * 4);
        put_str(&b, "tokenizer.ggml.token_type"), put_u32(&b, 9), put_u32(&b, 5), put_u64(&b, (uint64_t)v->n_vocab);
        put(&b, v->types, (size_t)v->n_vocab * 4);
        kv_u32(&b, "tokenizer.ggml.bos_token_id", (uint32_t)v->bos_id);
    }
    int types[64];
    uint64_t off = 0, offs[64];
    for (int i = 0; i < n; i++) {
        /* like llama-quantize: rows that are not whole Q8_0 blocks fall back to F16 */
        types[i] = !t[i].ne1 || quant == 0 ? GGML_T_F32
                   : quant == 3                  ? GGML_T_BF16
                   : quant == 1 || t[i].ne0 % 32 ? GGML_T_F16
                                                 : GGML_T_Q8_0;
        put_str(&b, t[i].name);
        put_u32(&b, t[i].ne1 ? 2 : 1), put_u64(&b, (uint64_t)t[i].ne0);
        if (t[i].ne1) put_u64(&b, (uint64_t)t[i].ne1);
        put_u32(&b, (uint32_t)types[i]), put_u64(&b, off);
        offs[i] = off;
        off += (piso_ggml_row_size(types[i], t[i].ne0) * (size_t)(t[i].ne1 ? t[i].ne1 : 1) + 31) / 32 * 32;
    }
    while (b.n % 32) put(&b, "", 1);
    size_t base = b.n;
    for (int i = 0; i < n; i++) {
        while (b.n < base + offs[i]) put(&b, "", 1);
        int64_t rows = t[i].ne1 ? t[i].ne1 : 1;
        for (int64_t r = 0; r < rows; r++) {
            float *x = t[i].data + r * t[i].ne0;
            if (types[i] == GGML_T_F32) {
                put(&b, x, (size_t)t[i].ne0 * 4);
            } else if (types[i] == GGML_T_BF16) {
                for (int64_t j = 0; j < t[i].ne0; j++) {
                    uint16_t h = piso_fp32_to_bf16(x[j]);
                    x[j] = piso_bf16_to_fp32(h);
                    put(&b, &h, 2);
                }
            } else if (types[i] == GGML_T_F16) {
                for (int64_t j = 0; j < t[i].ne0; j++) {
                    uint16_t h = piso_fp32_to_fp16(x[j]);
                    x[j] = piso_fp16_to_fp32(h);
                    put(&b, &h, 2);
                }
            } else {
                uint8_t blk[34 * 64];
                q8_0_row(x, t[i].ne0, blk);
                put(&b, blk, (size_t)(t[i].ne0 / 32) * 34);
            }
        }
    }
    FILE *f = fopen(path, "wb");
    fwrite(b.p, 1, b.n, f);
    fclose(f);
    free(b.p);
}

static void test_gguf(void) {
    const char *bin = test_data("models/stories260K/stories260K.bin");
    const char *txt = test_data("data/tinystories/tinystories_sample.cs336.txt");
    struct piso_model *ref, *m;
    if (piso_model_load(bin, NULL, &ref) != 0) {
        CHECK(0, "load: %s", piso_last_error());
        return;
    }
    CHECK(ref->tok != NULL, "tok512.bin picked up beside the checkpoint");
    float *want = malloc(64 * 512 * 4), *got = malloc(64 * 512 * 4);
    static const char *names[4] = {"f32.gguf", "f16.gguf", "q8_0.gguf", "bf16.gguf"};
    for (int q = 0; q < 4; q++) { /* each step rounds ref further: F32 -> F16 -> Q8_0 -> BF16 */
        char *p = tmp(names[q]);
        export_gguf(ref, p, q, "llama");
        logits_of(ref, want);
        if (piso_model_load(p, NULL, &m) == 0) {
            CHECK(m->cfg.rope_style == PISO_ROPE_ADJACENT && m->cfg.tied_embeddings && m->cfg.n_kv_heads == 4, "gguf cfg");
            logits_of(m, got);
            double d = max_abs_diff(want, got, 64 * 512);
            CHECK(q == 0 ? d == 0 : d < 1e-5, "%s logits differ by %g", names[q], d);
            if (q == 0) {
                CHECK(m->tok != NULL, "tokenizer from tokenizer.ggml.*: %s", piso_last_error());
                char *text;
                size_t len;
                struct piso_ppl_result r;
                piso_set_quiet(1);
                if (m->tok && piso_read_file(txt, &text, &len) == 0) {
                    CHECK(piso_perplexity(m, text, len, 512, &r) == 0, "gguf ppl: %s", piso_last_error());
                    CHECK(r.tokens == 1883 && r.scored == 765, "gguf ppl counts %d %d", r.tokens, r.scored);
                    CHECK_NEAR(r.ppl, 8.438, 5e-4, "GGUF F32 stories260K ppl");
                    free(text);
                }
                piso_set_quiet(0);
            }
            piso_model_free(m);
        } else {
            CHECK(0, "load %s: %s", p, piso_last_error());
        }
        free(p);
    }
    char *p = tmp("gpt2.gguf");
    export_gguf(ref, p, 0, "gpt2");
    CHECK(piso_model_load(p, NULL, &m) != 0 && strstr(piso_last_error(), "general.architecture") &&
              strstr(piso_last_error(), p), "unsupported architecture: %s", piso_last_error());
    free(p);
    free(want), free(got);
    piso_model_free(ref);
}

static void expect_load_error(const char *path, const char *want1, const char *want2, const char *what);

/* ---- llama2.c with a separate classifier (negative vocab_size in the header) ------------------ */
static void test_llama2c_unshared(void) {
    const char *bin = test_data("models/stories260K/stories260K.bin");
    char *data;
    size_t len;
    struct piso_model *ref, *m;
    if (piso_read_file(bin, &data, &len) != 0 || piso_model_load(bin, NULL, &ref) != 0) {
        CHECK(0, "load: %s", piso_last_error());
        return;
    }
    /* header vocab -> -512, and wcls = 0.5 * embeddings appended after freq_cis */
    int32_t v = -512;
    memcpy(data + 20, &v, 4);
    float *wcls = malloc(512 * 64 * 4);
    for (int i = 0; i < 512 * 64; i++) wcls[i] = 0.5f * ref->tok_embd[i];
    char *p = tmp("unshared.bin");
    FILE *f = fopen(p, "wb");
    fwrite(data, 1, len, f);
    fwrite(wcls, 4, 512 * 64, f);
    fclose(f);
    if (piso_model_load(p, NULL, &m) == 0) {
        CHECK(!m->cfg.tied_embeddings && m->output != m->tok_embd && m->cfg.vocab_size == 512, "unshared config");
        float *want = malloc(64 * 512 * 4), *got = malloc(64 * 512 * 4);
        float *keep = ref->output;
        ref->output = wcls;
        logits_of(ref, want);
        ref->output = keep;
        logits_of(m, got);
        CHECK(max_abs_diff(want, got, 64 * 512) == 0, "unshared classifier logits differ");
        free(want), free(got);
        piso_model_free(m);
    } else {
        CHECK(0, "load unshared: %s", piso_last_error());
    }
    /* the same header without the classifier bytes is truncated */
    f = fopen(p, "wb");
    fwrite(data, 1, len, f);
    fclose(f);
    expect_load_error(p, "truncated", p, "unshared without wcls");
    unlink(p);
    free(p), free(wcls), free(data);
    piso_model_free(ref);
}

/* ---- malformed inputs ------------------------------------------------------------------------ */
static void expect_load_error(const char *path, const char *want1, const char *want2, const char *what) {
    struct piso_model *m = NULL;
    int rc = piso_model_load(path, NULL, &m);
    CHECK(rc != 0, "%s: accepted", what);
    if (rc == 0) piso_model_free(m);
    else CHECK(strstr(piso_last_error(), want1) && strstr(piso_last_error(), want2), "%s: message '%s' lacks '%s' / '%s'",
               what, piso_last_error(), want1, want2);
}

static void test_errors(void) {
    const char *bin = test_data("models/stories260K/stories260K.bin");
    char *d = tmp("bad"), *cfg = tmp("bad/config.json");
    piso_mkdir_p(d);
    write_text(cfg, "{\"architectures\": [\"GPT2LMHeadModel\"], \"hidden_size\": 64}");
    expect_load_error(d, "architectures", "config.json", "unknown architecture");
    write_text(cfg, "{\"architectures\": [\"LlamaForCausalLM\"], \"intermediate_size\": 172}");
    expect_load_error(d, "hidden_size", "config.json", "missing field");
    write_text(cfg, "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, \"intermediate_size\": 172, "
                    "\"num_hidden_layers\": 1, \"num_attention_heads\": 8, \"vocab_size\": 512, "
                    "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}}");
    expect_load_error(d, "rope_scaling", "yarn", "unsupported rope scaling");
    write_text(cfg, "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, \"intermediate_size\": 172, "
                    "\"num_hidden_layers\": 1, \"num_attention_heads\": 8, \"num_key_value_heads\": 3, \"vocab_size\": 512}");
    expect_load_error(d, "n_kv_heads", "config.json", "heads not divisible");
    /* a valid config whose q_proj has the wrong shape */
    write_text(cfg, "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 8, \"intermediate_size\": 16, "
                    "\"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"vocab_size\": 4}");
    struct piso_st_writer *w = piso_st_writer_new();
    float z[256] = {0};
    int64_t s_emb[2] = {4, 8}, s_n[1] = {8}, s_q[2] = {8, 7};
    piso_st_writer_add(w, "model.embed_tokens.weight", PISO_DTYPE_F32, 2, s_emb, z);
    piso_st_writer_add(w, "model.norm.weight", PISO_DTYPE_F32, 1, s_n, z);
    piso_st_writer_add(w, "model.layers.0.input_layernorm.weight", PISO_DTYPE_F32, 1, s_n, z);
    piso_st_writer_add(w, "model.layers.0.self_attn.q_proj.weight", PISO_DTYPE_F32, 2, s_q, z);
    char *st = tmp("bad/model.safetensors");
    piso_st_writer_write(w, st);
    piso_st_writer_free(w);
    expect_load_error(d, "q_proj.weight", "expected [8, 8]", "wrong shape");
    /* llama2.c: truncated, and a header that is not one */
    char *data;
    size_t len;
    if (piso_read_file(bin, &data, &len) == 0) {
        char *tb = tmp("trunc.bin");
        FILE *f = fopen(tb, "wb");
        fwrite(data, 1, len / 2, f);
        fclose(f);
        expect_load_error(tb, "truncated", tb, "truncated llama2.c");
        f = fopen(tb, "wb");
        fwrite("hello world, not a model at all", 1, 31, f);
        fclose(f);
        expect_load_error(tb, "llama2.c", tb, "garbage file");
        unlink(tb);
        free(tb);
        free(data);
    }
    expect_load_error("/nonexistent/model", "/nonexistent/model", "cannot open", "missing path");
    unlink(st), unlink(cfg), rmdir(d);
    free(st), free(cfg), free(d);
}

static void rm_tree(void) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/piso_test_model_load_%d", (int)getpid());
    piso_mkdir_p(tmpdir);
    for (int i = 0; i < 64; i++) tokens[i] = i ? 3 + (i * 131) % 509 : 1;
    test_hf_variants();
    test_hf_archs();
    test_gguf();
    test_llama2c_unshared();
    test_errors();
    rm_tree();
    return test_finish();
}
