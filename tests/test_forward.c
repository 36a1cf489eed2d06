/* Forward pass: (1) the batched BLAS prefill against a naive single-token reference written here
 * (plain loops, KV cache, double accumulation) on tiny random models covering GQA, q/k/v bias,
 * q/k RMSNorm with head_dim != dim/heads, Llama-3 rope scaling, GGUF rope_freqs and both RoPE
 * layouts, including the captured linear-layer inputs (taps); (2) the two shared layouts of
 * stories260K give the same logits; (3) thread-count independence; (4) greedy decoding of
 * stories260K reproduces the sample published with the model. */
#include "harness.h"
#include "piso/model.h"

#include <omp.h>

/* ---- deterministic random numbers ---------------------------------------------------------- */
static uint64_t rng = 88172645463325252ull;
static double urand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static float nrand(void) { return (float)((urand() + urand() + urand() - 1.5) * 2.0); }

/* ---- the reference: one token at a time ----------------------------------------------------- */
static void ref_rmsnorm(const float *x, const float *w, float *y, int d, float eps) {
    double ss = 0;
    for (int i = 0; i < d; i++) ss += (double)x[i] * x[i];
    double r = 1.0 / sqrt(ss / d + eps);
    for (int i = 0; i < d; i++) y[i] = (float)(x[i] * r * w[i]);
}

static void ref_matvec(const float *W, const float *x, float *y, int out, int in) {
    for (int o = 0; o < out; o++) {
        double s = 0;
        for (int i = 0; i < in; i++) s += (double)W[(size_t)o * in + i] * x[i];
        y[o] = (float)s;
    }
}

/* frequency of RoPE pair j, written from the definitions (HF rope_init_fn "llama3"; GGUF
 * rope_freqs divides it) */
static double ref_freq(const struct piso_model *m, int j) {
    const struct piso_config *c = &m->cfg;
    double f = 1.0 / pow(c->rope_theta, (double)(2 * j) / c->head_dim);
    if (c->rope_llama3) {
        double wavelen = 2 * M_PI / f;
        double low_wavelen = c->rope_orig_ctx / c->rope_low_freq_factor;
        double high_wavelen = c->rope_orig_ctx / c->rope_high_freq_factor;
        if (wavelen < high_wavelen) {
            /* high frequency: unchanged */
        } else if (wavelen > low_wavelen) {
            f = f / c->rope_factor;
        } else {
            double smooth = (c->rope_orig_ctx / wavelen - c->rope_low_freq_factor) /
                            (c->rope_high_freq_factor - c->rope_low_freq_factor);
            f = (1 - smooth) * (f / c->rope_factor) + smooth * f;
        }
    }
    if (m->rope_freq_factors) f /= m->rope_freq_factors[j];
    return f;
}

static void ref_rope(const struct piso_model *m, float *v, int pos) {
    int hd = m->cfg.head_dim;
    if (m->cfg.rope_style == PISO_ROPE_ADJACENT) {
        for (int i = 0; i < hd; i += 2) { /* llama2.c run.c */
            double a = pos * ref_freq(m, i / 2);
            float v0 = v[i], v1 = v[i + 1];
            v[i] = (float)(v0 * cos(a) - v1 * sin(a));
            v[i + 1] = (float)(v0 * sin(a) + v1 * cos(a));
        }
    } else { /* HF: x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1] */
        float tmp[1024];
        for (int i = 0; i < hd; i++) {
            int j = i % (hd / 2);
            double a = pos * ref_freq(m, j);
            float rot = i < hd / 2 ? -v[i + hd / 2] : v[i - hd / 2];
            tmp[i] = (float)(v[i] * cos(a) + rot * sin(a));
        }
        memcpy(v, tmp, (size_t)hd * sizeof *v);
    }
}

/* Activation quantization in the reference (ref_act_quant = 1): symmetric int8 with one scale per
 * token on every linear input, per token and KV head on the keys and values, written here from the
 * definition (s = max|x| / 127, x/s rounded half to even). The runtime gets the same formats. */
static int ref_act_quant;
static void ref_int8(float *x, int d) {
    if (!ref_act_quant) return;
    float amax = 0;
    for (int i = 0; i < d; i++) amax = fmaxf(amax, fabsf(x[i]));
    float s = amax / 127.0f;
    for (int i = 0; i < d; i++) x[i] = s > 0 ? s * nearbyintf(x[i] / s) : 0.0f;
}

/* logits [n, V]; taps (if non-NULL) [L][n, in] for attn_in, o_in, ffn_in, down_in */
static void ref_forward(const struct piso_model *m, const int *tok, int n, float *logits, float **tap_attn,
                        float **tap_o, float **tap_ffn, float **tap_down) {
    const struct piso_config *c = &m->cfg;
    int D = c->dim, F = c->hidden_dim, hd = c->head_dim, V = c->vocab_size, L = c->n_layers;
    int Hq = c->n_heads * hd, Hkv = c->n_kv_heads * hd;
    float *kc = calloc((size_t)L * n * Hkv, 4), *vc = calloc((size_t)L * n * Hkv, 4);
    float *x = malloc(D * 4), *xb = malloc(D * 4), *q = malloc(Hq * 4), *att = malloc(Hq * 4), *tmp = malloc(D * 4);
    float *h1 = malloc(F * 4), *h3 = malloc(F * 4), *a = malloc((size_t)n * 4);
    for (int pos = 0; pos < n; pos++) {
        memcpy(x, m->tok_embd + (size_t)tok[pos] * D, D * 4);
        for (int l = 0; l < L; l++) {
            const struct piso_layer_weights *w = &m->layers[l];
            float *k = kc + ((size_t)l * n + pos) * Hkv, *v = vc + ((size_t)l * n + pos) * Hkv;
            ref_rmsnorm(x, w->attn_norm, xb, D, c->norm_eps);
            ref_int8(xb, D);
            if (tap_attn) memcpy(tap_attn[l] + (size_t)pos * D, xb, D * 4);
            ref_matvec(w->wq, xb, q, Hq, D);
            ref_matvec(w->wk, xb, k, Hkv, D);
            ref_matvec(w->wv, xb, v, Hkv, D);
            for (int i = 0; w->bq && i < Hq; i++) q[i] += w->bq[i];
            for (int i = 0; w->bk && i < Hkv; i++) k[i] += w->bk[i], v[i] += w->bv[i];
            for (int h = 0; h < c->n_heads; h++) {
                if (w->q_norm) ref_rmsnorm(q + h * hd, w->q_norm, q + h * hd, hd, c->norm_eps);
                ref_rope(m, q + h * hd, pos);
            }
            for (int h = 0; h < c->n_kv_heads; h++) {
                if (w->k_norm) ref_rmsnorm(k + h * hd, w->k_norm, k + h * hd, hd, c->norm_eps);
                ref_rope(m, k + h * hd, pos);
                ref_int8(k + h * hd, hd);
                ref_int8(v + h * hd, hd);
            }
            for (int h = 0; h < c->n_heads; h++) {
                int kvh = h / (c->n_heads / c->n_kv_heads);
                double mx = -1e300, sum = 0;
                for (int t = 0; t <= pos; t++) {
                    const float *kt = kc + ((size_t)l * n + t) * Hkv + kvh * hd;
                    double s = 0;
                    for (int i = 0; i < hd; i++) s += (double)q[h * hd + i] * kt[i];
                    a[t] = (float)(s / sqrt(hd));
                    if (a[t] > mx) mx = a[t];
                }
                for (int t = 0; t <= pos; t++) sum += exp(a[t] - mx);
                for (int i = 0; i < hd; i++) {
                    double o = 0;
                    for (int t = 0; t <= pos; t++) o += exp(a[t] - mx) / sum * vc[((size_t)l * n + t) * Hkv + kvh * hd + i];
                    att[h * hd + i] = (float)o;
                }
            }
            ref_int8(att, Hq);
            if (tap_o) memcpy(tap_o[l] + (size_t)pos * Hq, att, Hq * 4);
            ref_matvec(w->wo, att, tmp, D, Hq);
            for (int i = 0; i < D; i++) x[i] += tmp[i];
            ref_rmsnorm(x, w->ffn_norm, xb, D, c->norm_eps);
            ref_int8(xb, D);
            if (tap_ffn) memcpy(tap_ffn[l] + (size_t)pos * D, xb, D * 4);
            ref_matvec(w->w_gate, xb, h1, F, D);
            ref_matvec(w->w_up, xb, h3, F, D);
            for (int i = 0; i < F; i++) h1[i] = (float)(h1[i] / (1 + exp(-h1[i])) * h3[i]);
            ref_int8(h1, F);
            if (tap_down) memcpy(tap_down[l] + (size_t)pos * F, h1, F * 4);
            ref_matvec(w->w_down, h1, tmp, D, F);
            for (int i = 0; i < D; i++) x[i] += tmp[i];
        }
        ref_rmsnorm(x, m->out_norm, xb, D, c->norm_eps);
        ref_matvec(m->output, xb, logits + (size_t)pos * V, V, D);
    }
    free(kc), free(vc), free(x), free(xb), free(q), free(att), free(tmp), free(h1), free(h3), free(a);
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double d = 0;
    for (size_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

static void fill(float *p, size_t n, float scale, float offset) {
    for (size_t i = 0; i < n; i++) p[i] = offset + scale * nrand();
}

struct tiny_case {
    const char *name;
    int dim, hidden, heads, kv_heads, head_dim, tied, bias, qk_norm, llama3, freq_factors;
    enum piso_rope_style style;
};

static void run_case(const struct tiny_case *tc) {
    struct piso_config c = {0};
    snprintf(c.arch, sizeof c.arch, "llama");
    c.dim = tc->dim, c.hidden_dim = tc->hidden, c.n_layers = 2, c.n_heads = tc->heads, c.n_kv_heads = tc->kv_heads;
    c.head_dim = tc->head_dim, c.vocab_size = 37, c.max_seq_len = 64, c.norm_eps = 1e-5f, c.rope_theta = 10000.0f;
    c.rope_style = tc->style, c.tied_embeddings = tc->tied, c.has_qkv_bias = tc->bias, c.has_qk_norm = tc->qk_norm;
    if (tc->llama3) c.rope_llama3 = 1, c.rope_factor = 8, c.rope_low_freq_factor = 1, c.rope_high_freq_factor = 4, c.rope_orig_ctx = 64;
    struct piso_model *m;
    if (piso_model_alloc(&c, &m) != 0) {
        CHECK(0, "%s: alloc: %s", tc->name, piso_last_error());
        return;
    }
    if (ref_act_quant) CHECK(piso_act_quant_init(&m->act, &c, "int8", 0, "int8") == 0, "act: %s", piso_last_error());
    int D = c.dim, F = c.hidden_dim, hd = c.head_dim, Hq = c.n_heads * hd, Hkv = c.n_kv_heads * hd, V = c.vocab_size;
    fill(m->tok_embd, (size_t)V * D, 0.5f, 0);
    if (!tc->tied) fill(m->output, (size_t)V * D, 0.3f, 0);
    fill(m->out_norm, D, 0.1f, 1);
    float freq_factors[64];
    if (tc->freq_factors) {
        for (int j = 0; j < hd / 2; j++) freq_factors[j] = 1.0f + (float)j * 1.5f;
        m->rope_freq_factors = freq_factors;
    }
    for (int l = 0; l < c.n_layers; l++) {
        struct piso_layer_weights *w = &m->layers[l];
        fill(w->attn_norm, D, 0.1f, 1), fill(w->ffn_norm, D, 0.1f, 1);
        fill(w->wq, (size_t)Hq * D, 0.4f, 0), fill(w->wk, (size_t)Hkv * D, 0.4f, 0), fill(w->wv, (size_t)Hkv * D, 0.3f, 0);
        fill(w->wo, (size_t)D * Hq, 0.2f, 0);
        fill(w->w_gate, (size_t)F * D, 0.3f, 0), fill(w->w_up, (size_t)F * D, 0.3f, 0), fill(w->w_down, (size_t)D * F, 0.2f, 0);
        if (w->bq) fill(w->bq, Hq, 0.2f, 0), fill(w->bk, Hkv, 0.2f, 0), fill(w->bv, Hkv, 0.2f, 0);
        if (w->q_norm) fill(w->q_norm, hd, 0.2f, 1), fill(w->k_norm, hd, 0.2f, 1);
    }
    enum { N = 11 };
    int tok[N];
    for (int i = 0; i < N; i++) tok[i] = (int)(urand() * V);
    float *ref = malloc((size_t)N * V * 4), *got = malloc((size_t)N * V * 4);
    float *ta[2], *to[2], *tf[2], *tdn[2];
    for (int l = 0; l < 2; l++)
        ta[l] = malloc((size_t)N * D * 4), to[l] = malloc((size_t)N * Hq * 4), tf[l] = malloc((size_t)N * D * 4),
        tdn[l] = malloc((size_t)N * F * 4);
    ref_forward(m, tok, N, ref, ta, to, tf, tdn);
    CHECK(piso_forward(m, tok, N, 0, got) == 0, "%s: forward: %s", tc->name, piso_last_error());
    double scale = 0;
    for (int i = 0; i < N * V; i++) scale = fmax(scale, fabs(ref[i]));
    double d = max_abs_diff(ref, got, (size_t)N * V);
    CHECK(d < 1e-4 * fmax(1, scale), "%s: logits differ from the reference by %g (scale %g)", tc->name, d, scale);
    CHECK(scale > 0.1, "%s: degenerate logits", tc->name);
    /* suffix logits: first = 6 */
    CHECK(piso_forward(m, tok, N, 6, got) == 0, "forward first");
    d = max_abs_diff(ref + 6 * V, got, (size_t)(N - 6) * V);
    CHECK(d < 1e-4 * fmax(1, scale), "%s: suffix logits differ by %g", tc->name, d);
    /* taps: the inputs of every linear layer */
    float *x = malloc((size_t)N * D * 4), *ga = malloc((size_t)N * D * 4), *go = malloc((size_t)N * Hq * 4),
          *gf = malloc((size_t)N * D * 4), *gd = malloc((size_t)N * F * 4);
    piso_embed(m, tok, N, x);
    for (int l = 0; l < 2; l++) {
        struct piso_block_taps taps = {ga, go, gf, gd};
        CHECK(piso_block_forward(m, l, x, N, &taps) == 0, "block");
        CHECK(max_abs_diff(ga, ta[l], (size_t)N * D) < 1e-4, "%s: layer %d attn_in tap", tc->name, l);
        CHECK(max_abs_diff(go, to[l], (size_t)N * Hq) < 1e-4, "%s: layer %d o_in tap", tc->name, l);
        CHECK(max_abs_diff(gf, tf[l], (size_t)N * D) < 1e-4, "%s: layer %d ffn_in tap", tc->name, l);
        CHECK(max_abs_diff(gd, tdn[l], (size_t)N * F) < 1e-4, "%s: layer %d down_in tap", tc->name, l);
    }
    /* bad token ids are an error, not a crash */
    int bad[2] = {1, V};
    CHECK(piso_forward(m, bad, 2, 0, got) != 0 && strstr(piso_last_error(), "vocabulary"), "bad token id");
    for (int l = 0; l < 2; l++) free(ta[l]), free(to[l]), free(tf[l]), free(tdn[l]);
    free(x), free(ga), free(go), free(gf), free(gd), free(ref), free(got);
    m->rope_freq_factors = NULL;
    piso_model_free(m);
}

static void test_reference(void) {
    static const struct tiny_case cases[] = {
        {"gqa-adjacent-tied", 32, 48, 4, 2, 8, 1, 0, 0, 0, 0, PISO_ROPE_ADJACENT},
        {"mha-half-bias", 32, 40, 4, 4, 8, 0, 1, 0, 0, 0, PISO_ROPE_HALF},
        {"qk-norm-headdim12", 32, 48, 4, 1, 12, 0, 0, 1, 0, 0, PISO_ROPE_HALF},
        {"llama3-rope-half", 32, 48, 4, 2, 8, 0, 0, 0, 1, 0, PISO_ROPE_HALF},
        {"llama3-rope-adjacent", 32, 48, 4, 2, 8, 1, 0, 0, 1, 0, PISO_ROPE_ADJACENT},
        {"gguf-rope-freqs", 32, 48, 4, 2, 8, 0, 0, 0, 0, 1, PISO_ROPE_ADJACENT},
        {"everything", 24, 36, 6, 2, 8, 1, 1, 1, 1, 0, PISO_ROPE_HALF},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i]);
    /* the same with int8 activations and KV cache (the reference quantizes where the runtime does) */
    ref_act_quant = 1;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i]);
    ref_act_quant = 0;
}

/* ---- stories260K ---------------------------------------------------------------------------- */
static void test_two_layouts(void) {
    const char *bin = test_data("models/stories260K/stories260K.bin"), *hf = test_data("models/stories260K-hf");
    struct piso_model *a, *b;
    if (piso_model_load(bin, NULL, &a) != 0) {
        CHECK(0, "load llama2.c: %s", piso_last_error());
        return;
    }
    if (piso_model_load(hf, NULL, &b) != 0) {
        CHECK(0, "load HF: %s", piso_last_error());
        piso_model_free(a);
        return;
    }
    /* the HF loader reorders q/k rows to adjacent pairs, so both run the same arithmetic */
    CHECK(a->cfg.rope_style == PISO_ROPE_ADJACENT && b->cfg.rope_style == PISO_ROPE_ADJACENT, "rope styles");
    CHECK(a->cfg.n_kv_heads == 4 && b->cfg.n_kv_heads == 4 && a->cfg.vocab_size == 512 && a->cfg.tied_embeddings &&
              b->cfg.tied_embeddings, "configs");
    enum { N = 200 };
    int tok[N];
    tok[0] = 1;
    for (int i = 1; i < N; i++) tok[i] = 3 + (int)(urand() * 509);
    float *la = malloc((size_t)N * 512 * 4), *lb = malloc((size_t)N * 512 * 4);
    CHECK(piso_forward(a, tok, N, 0, la) == 0 && piso_forward(b, tok, N, 0, lb) == 0, "forward");
    double d = max_abs_diff(la, lb, (size_t)N * 512);
    CHECK(d == 0, "stories260K llama2.c vs HF logits differ by %g (must be bit-identical)", d);
    /* the batched pass equals the reference on the real model too */
    float *lr = malloc((size_t)N * 512 * 4);
    ref_forward(a, tok, 40, lr, NULL, NULL, NULL, NULL);
    d = max_abs_diff(la, lr, (size_t)40 * 512);
    CHECK(d < 1e-4, "stories260K batched vs reference: %g", d);
    free(la), free(lb), free(lr);
    piso_model_free(a);
    piso_model_free(b);
}

/* Thread-count independence: bit-identical logits with 1, 2 and 3 threads on a model large enough
 * that the GEMM blocks and the attention heads really run in parallel. */
static void test_threads(void) {
    struct piso_config c = {0};
    snprintf(c.arch, sizeof c.arch, "llama");
    c.dim = 256, c.hidden_dim = 512, c.n_layers = 2, c.n_heads = 8, c.n_kv_heads = 4, c.head_dim = 32;
    c.vocab_size = 300, c.max_seq_len = 512, c.norm_eps = 1e-5f, c.rope_theta = 10000.0f, c.rope_style = PISO_ROPE_HALF;
    struct piso_model *m;
    if (piso_model_alloc(&c, &m) != 0) {
        CHECK(0, "alloc: %s", piso_last_error());
        return;
    }
    fill(m->tok_embd, 300 * 256, 0.5f, 0), fill(m->output, 300 * 256, 0.1f, 0), fill(m->out_norm, 256, 0.1f, 1);
    for (int l = 0; l < 2; l++) {
        struct piso_layer_weights *w = &m->layers[l];
        fill(w->attn_norm, 256, 0.1f, 1), fill(w->ffn_norm, 256, 0.1f, 1);
        fill(w->wq, 256 * 256, 0.06f, 0), fill(w->wk, 128 * 256, 0.06f, 0), fill(w->wv, 128 * 256, 0.06f, 0);
        fill(w->wo, 256 * 256, 0.06f, 0), fill(w->w_gate, 512 * 256, 0.06f, 0), fill(w->w_up, 512 * 256, 0.06f, 0);
        fill(w->w_down, 256 * 512, 0.04f, 0);
    }
    enum { N = 300 };
    int tok[N];
    for (int i = 0; i < N; i++) tok[i] = (int)(urand() * 300);
    float *l1 = malloc((size_t)N * 300 * 4), *l2 = malloc((size_t)N * 300 * 4);
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    CHECK(piso_forward(m, tok, N, 0, l1) == 0, "forward 1 thread");
    for (int t = 2; t <= 3; t++) {
        omp_set_num_threads(t);
        CHECK(piso_forward(m, tok, N, 0, l2) == 0, "forward %d threads", t);
        CHECK(memcmp(l1, l2, (size_t)N * 300 * 4) == 0, "logits with %d threads differ from 1 thread (max %g)", t,
              max_abs_diff(l1, l2, (size_t)N * 300));
    }
    omp_set_num_threads(nt);
    free(l1), free(l2);
    piso_model_free(m);
}

/* llama2.c tokenizer.bin decoding (run.c decode): enough to print the greedy sample */
static char *decode_tok512(const char *path, const int *ids, int n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    int max_len;
    char **pieces = calloc(512, sizeof *pieces);
    int ok = fread(&max_len, 4, 1, f) == 1;
    for (int i = 0; ok && i < 512; i++) {
        float score;
        int len;
        ok = fread(&score, 4, 1, f) == 1 && fread(&len, 4, 1, f) == 1 && len >= 0 && len < 64;
        if (!ok) break;
        pieces[i] = calloc((size_t)len + 1, 1);
        ok = fread(pieces[i], 1, (size_t)len, f) == (size_t)len;
    }
    fclose(f);
    size_t cap = 1 << 16, k = 0;
    char *out = calloc(cap, 1);
    for (int i = 1; ok && i < n; i++) {
        const char *p = pieces[ids[i]];
        if (ids[i - 1] == 1 && p[0] == ' ') p++; /* run.c strips the space after BOS */
        unsigned byte;
        char one[2] = {0};
        if (sscanf(p, "<0x%02X>", &byte) == 1) one[0] = (char)byte, p = one;
        size_t l = strlen(p);
        if (k + l + 1 < cap) memcpy(out + k, p, l), k += l;
    }
    for (int i = 0; i < 512; i++) free(pieces[i]);
    free(pieces);
    return out;
}

static void test_greedy_sample(void) {
    const char *bin = test_data("models/stories260K/stories260K.bin");
    const char *tokp = test_data("models/stories260K/tok512.bin"), *md = test_data("models/stories260K/stories260K.md");
    char *doc;
    if (piso_read_file(md, &doc, NULL) != 0) return;
    /* the published sample: the block after the "-t 0.0" command line */
    const char *start = strstr(doc, "-t 0.0\n");
    CHECK(start != NULL, "sample not found in %s", md);
    if (!start) {
        free(doc);
        return;
    }
    start += strlen("-t 0.0\n");
    const char *end = strstr(start, "\n```");
    char *expect = strndup(start, (size_t)(end - start));
    struct piso_model *m;
    if (piso_model_load(bin, NULL, &m) != 0) {
        CHECK(0, "load: %s", piso_last_error());
        free(doc), free(expect);
        return;
    }
    /* run.c: 256 steps from BOS, each printing one sampled token; stops if BOS is sampled */
    int tok[300] = {1};
    int n = piso_generate_greedy(m, tok, 1, 256, 1);
    CHECK(n > 1, "generate: %s", piso_last_error());
    char *text = decode_tok512(tokp, tok, n);
    CHECK(text && strncmp(text, expect, strlen(expect)) == 0, "greedy sample differs:\n--- got\n%s\n--- published\n%s",
          text ? text : "(null)", expect);
    free(text), free(expect), free(doc);
    piso_model_free(m);
}

int main(void) {
    test_reference();
    test_two_layouts();
    test_threads();
    test_greedy_sample();
    return test_finish();
}
