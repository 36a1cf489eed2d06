/* llama.cpp's activation rounding (piso/llamacpp_act.h): (1) each vec_dot_type against values
 * worked out by hand (Q8_0 with its fp16 scale and ties to even, Q8_K with the signed maximum,
 * f16/bf16 ties to even, F32 untouched); (2) random rows against a reference written here from
 * ggml's block layout (integer codes and scales, then x̂ = d·q), every value equal; (3) the model
 * wiring: an F32 GGUF gives bit-identical logits with the emulation on, a Q8_0 GGUF gives other
 * logits, and a model that is not a GGUF is refused with its name. */
#include "harness.h"
#include "piso/gguf.h"
#include "piso/gguf_export.h"
#include "piso/llamacpp_act.h"
#include "piso/model.h"

#include <math.h>
#include <unistd.h>

static void expect_rows(int type, const float *x, const float *want, int d) {
    float y[512];
    memcpy(y, x, sizeof(float) * (size_t)d);
    piso_llamacpp_act_rows(type, y, 1, d);
    for (int i = 0; i < d; i++)
        CHECK(y[i] == want[i], "%s element %d: %.9g -> %.9g, want %.9g", piso_llamacpp_vec_dot_name(type), i, x[i], y[i],
              want[i]);
}

static void test_closed_forms(void) {
    CHECK(!strcmp(piso_llamacpp_vec_dot_name(GGML_T_Q4_0), "q8_0") && !strcmp(piso_llamacpp_vec_dot_name(GGML_T_Q4_K), "q8_K") &&
              !strcmp(piso_llamacpp_vec_dot_name(GGML_T_Q6_K), "q8_K") && !strcmp(piso_llamacpp_vec_dot_name(GGML_T_F16), "f16") &&
              piso_llamacpp_vec_dot_name(GGML_T_NVFP4) == NULL,
          "vec_dot types");
    /* Q8_0: amax 127 gives d = 1 (exact in fp16), codes round to even: 63.5 -> 64, -1.5 -> -2,
     * 0.5 -> 0, 2.5 -> 2; the second block (amax 254, d = 2): 3 -> 1.5·... = round(1.5) = 2 -> 4 */
    float x[64] = {127, 63.5f, -1.5f, 0.5f, 2.5f, -126.6f}, w[64] = {127, 64, -2, 0, 2, -127};
    x[32] = -254, x[33] = 3, x[34] = 1, x[35] = 5;
    w[32] = -254, w[33] = 4, w[34] = 0, w[35] = 4;
    expect_rows(GGML_T_Q8_0, x, w, 64);
    expect_rows(GGML_T_Q4_0, x, w, 64); /* the same conversion for Q4_0 weights */
    /* the fp16 scale: amax 1 gives d = 1/127, stored as fp16 0x2008 = 0.0078773...; x̂ = fp16(d)·q */
    float y[32] = {1, 0.5f}, yw[32];
    const float d16 = piso_fp16_to_fp32(piso_fp32_to_fp16(1.0f / 127.0f));
    CHECK(d16 != 1.0f / 127.0f, "1/127 is not a half");
    memset(yw, 0, sizeof yw);
    yw[0] = d16 * 127, yw[1] = d16 * 64; /* 0.5·127 = 63.5 -> 64 (even) */
    expect_rows(GGML_T_Q8_0, y, yw, 32);
    /* Q8_K: one block of 256, max = -254 (the signed value of largest magnitude), s = 127/254 = 0.5,
     * d = 1/s = 2: 3 -> round(1.5) = 2 -> 4, 1 -> round(0.5) = 0, 5 -> round(2.5) = 2 -> 4, 254 -> 127 */
    float k[256] = {-254, 3, 1, 5, 254, -7}, kw[256] = {-254, 4, 0, 4, 254, -8};
    expect_rows(GGML_T_Q4_K, k, kw, 256);
    /* f16: 1 + 2^-11 is halfway between 1 and 1 + 2^-10 (to even: 1), 1 + 3·2^-11 -> 1 + 2^-9 */
    const float h[3] = {1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, 65504.0f}, hw[3] = {1.0f, 1.0f + 0x1p-9f, 65504.0f};
    expect_rows(GGML_T_F16, h, hw, 3);
    /* bf16: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 (to even: 1), 1 + 3·2^-8 -> 1 + 2^-6 */
    const float b[2] = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f}, bw[2] = {1.0f, 1.0f + 0x1p-6f};
    expect_rows(GGML_T_BF16, b, bw, 2);
    /* F32 weights: the activation stays as it is; a block of zeros stays zero */
    const float f[3] = {0.1f, -3e-5f, 7}, z[32] = {0};
    expect_rows(GGML_T_F32, f, f, 3);
    expect_rows(GGML_T_Q8_0, z, z, 32);
    expect_rows(GGML_T_Q6_K, k + 6, k + 6, 32); /* zeros in a (short) Q8_K block */
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float nrand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 - 0.5) * 8.0f;
}

/* ggml's block layouts, written from the format description: block_q8_0 {fp16 d; int8 qs[32]} with
 * d = amax/127 and qs = round_even(x·127/amax); block_q8_K {float d; int8 qs[256]} with
 * s = -127/max (max: the first element of largest |x|), qs = min(127, round_even(s·x)), d = 1/s. */
static void reference_rows(int type, const float *x, float *out, int n, int d) {
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * d;
        float *o = out + (size_t)r * d;
        const int B = type == GGML_T_Q8_0 ? 32 : 256;
        for (int j0 = 0; j0 < d; j0 += B) {
            int8_t qs[256];
            float scale;
            if (type == GGML_T_Q8_0) {
                float amax = 0;
                for (int i = 0; i < B; i++) amax = fabsf(xr[j0 + i]) > amax ? fabsf(xr[j0 + i]) : amax;
                uint16_t d16 = piso_fp32_to_fp16(amax / 127.0f);
                float inv = amax != 0 ? 127.0f / amax : 0.0f;
                for (int i = 0; i < B; i++) qs[i] = (int8_t)lrintf(xr[j0 + i] * inv);
                scale = piso_fp16_to_fp32(d16);
            } else {
                float mx = 0;
                for (int i = 0; i < B; i++) mx = fabsf(xr[j0 + i]) > fabsf(mx) ? xr[j0 + i] : mx;
                float is = mx != 0 ? -127.0f / mx : 0.0f;
                for (int i = 0; i < B; i++) {
                    long v = lrintf(is * xr[j0 + i]);
                    qs[i] = (int8_t)(v > 127 ? 127 : v);
                }
                scale = mx != 0 ? 1.0f / is : 0.0f;
            }
            for (int i = 0; i < B; i++) o[j0 + i] = scale * (float)qs[i];
        }
    }
}

static void test_random_rows(void) {
    enum { N = 7, D = 512 };
    static float x[N * D], y[N * D], want[N * D];
    const int types[] = {GGML_T_Q8_0, GGML_T_Q4_K};
    for (int t = 0; t < 2; t++) {
        for (int i = 0; i < N * D; i++) x[i] = nrand() * (i % 97 == 0 ? 30.0f : 1.0f);
        memcpy(y, x, sizeof x);
        piso_llamacpp_act_rows(types[t], y, N, D);
        reference_rows(types[t] == GGML_T_Q8_0 ? GGML_T_Q8_0 : GGML_T_Q8_K, x, want, N, D);
        int bad = 0;
        for (int i = 0; i < N * D; i++) bad += y[i] != want[i];
        CHECK(bad == 0, "%s: %d of %d values differ from the block reference", piso_llamacpp_vec_dot_name(types[t]), bad, N * D);
    }
}

/* A tiny model exported as GGUF of `type`, loaded back. */
static struct piso_model *tiny_gguf(const char *dir, int type) {
    struct piso_config c = {0};
    snprintf(c.arch, sizeof c.arch, "llama");
    c.dim = 64, c.hidden_dim = 96, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2, c.head_dim = 16;
    c.vocab_size = 40, c.max_seq_len = 32, c.norm_eps = 1e-5f, c.rope_theta = 10000.0f, c.tied_embeddings = 1;
    struct piso_model *m = NULL, *g = NULL;
    if (piso_model_alloc(&c, &m) != 0) return NULL;
    const int D = c.dim, F = c.hidden_dim, Hq = c.n_heads * c.head_dim, Hkv = c.n_kv_heads * c.head_dim;
    for (int i = 0; i < c.vocab_size * D; i++) m->tok_embd[i] = nrand() * 0.2f;
    for (int i = 0; i < D; i++) m->out_norm[i] = 1.0f;
    for (int l = 0; l < c.n_layers; l++) {
        struct piso_layer_weights *w = &m->layers[l];
        for (int i = 0; i < D; i++) w->attn_norm[i] = w->ffn_norm[i] = 1.0f;
        float *mats[] = {w->wq, w->wk, w->wv, w->wo, w->w_gate, w->w_up, w->w_down};
        const int64_t sizes[] = {(int64_t)Hq * D, (int64_t)Hkv * D, (int64_t)Hkv * D, (int64_t)D * Hq, (int64_t)F * D, (int64_t)F * D, (int64_t)D * F};
        for (int k = 0; k < 7; k++)
            for (int64_t i = 0; i < sizes[k]; i++) mats[k][i] = nrand() * 0.1f;
    }
    char path[600];
    snprintf(path, sizeof path, "%s/tiny-%d.gguf", dir, type);
    struct piso_gguf_export_opts o = {.type = type, .output_type = type, .scale = PISO_GGUF_SCALE_REF};
    if (piso_gguf_export(m, NULL, &o, path, NULL) != 0 || piso_model_load(path, NULL, &g) != 0) {
        CHECK(0, "export/load type %d: %s", type, piso_last_error());
        g = NULL;
    }
    piso_model_free(m);
    return g;
}

static void test_wiring(const char *dir) {
    const int tokens[12] = {1, 5, 9, 30, 2, 2, 17, 39, 0, 11, 23, 8}, n = 12, V = 40;
    float a[12 * 40], b[12 * 40];
    struct piso_model *f32 = tiny_gguf(dir, GGML_T_F32), *q8 = tiny_gguf(dir, GGML_T_Q8_0);
    if (f32) {
        CHECK(piso_forward(f32, tokens, n, 0, a) == 0, "forward: %s", piso_last_error());
        CHECK(piso_llamacpp_act_enable(f32) == 0, "enable on F32: %s", piso_last_error());
        CHECK(piso_forward(f32, tokens, n, 0, b) == 0, "forward: %s", piso_last_error());
        CHECK(memcmp(a, b, sizeof a) == 0, "F32 GGUF: the emulation changes nothing");
    }
    if (q8) {
        CHECK(piso_forward(q8, tokens, n, 0, a) == 0, "forward: %s", piso_last_error());
        CHECK(piso_llamacpp_act_enable(q8) == 0, "enable on Q8_0: %s", piso_last_error());
        CHECK(piso_forward(q8, tokens, n, 0, b) == 0, "forward: %s", piso_last_error());
        double diff = 0, norm = 0;
        for (int i = 0; i < n * V; i++) diff += fabs((double)a[i] - b[i]), norm += fabs((double)a[i]);
        /* 8-bit activations: a relative change of the order of 1/127, never zero, never huge */
        CHECK(diff > 1e-4 * norm && diff < 0.1 * norm, "Q8_0 GGUF: logits change by %.3g of their size", diff / norm);
    }
    piso_model_free(f32);
    piso_model_free(q8);
    /* not a GGUF: refused, naming the model */
    struct piso_config c = {0};
    snprintf(c.arch, sizeof c.arch, "llama");
    c.dim = 32, c.hidden_dim = 32, c.n_layers = 1, c.n_heads = 2, c.n_kv_heads = 2, c.head_dim = 16, c.vocab_size = 8;
    c.max_seq_len = 8, c.norm_eps = 1e-5f, c.rope_theta = 10000.0f;
    struct piso_model *m;
    if (piso_model_alloc(&c, &m) == 0) {
        CHECK(piso_llamacpp_act_enable(m) != 0 && strstr(piso_last_error(), "needs a GGUF model"),
              "a model not from a GGUF is refused: %s", piso_last_error());
        CHECK(m->llamacpp_weight_types == NULL, "nothing enabled");
        piso_model_free(m);
    }
}

int main(void) {
    test_closed_forms();
    test_random_rows();
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/piso_test_llamacpp_act_XXXXXX");
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp");
        return test_finish();
    }
    piso_set_quiet(1);
    test_wiring(dir);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(test_run(cmd, NULL) == 0, "cleanup");
    return test_finish();
}
