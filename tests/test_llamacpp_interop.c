/* Proof that real llama.cpp runs piso's GGUF files: stories260K is exported to F32, Q8_0, Q4_0 and
 * Q4_K and IQ4_NL (piso scales), Q4_0 (llamacpp-ref scales), MXFP4 and NVFP4 (both scales), and a
 * random 256-wide model to Q2_K, Q3_K (both scales), MXFP4 and NVFP4; llama.cpp (npm node-llama-cpp, prebuilt CPU
 * build, installed by scripts/setup-llamacpp.sh) evaluates a token sequence from each file, and its
 * next-token log-probabilities must match piso's own evaluator on the same file: tightly for F32,
 * within quantization noise otherwise (llama.cpp rounds activations to Q8 for quantized matmuls
 * and to F16 for F16 weights). Without node or the package the test is skipped, except under
 * CI=true where that is a failure. */
#include "harness.h"
#include "piso/gguf_export.h"
#include "piso/model.h"
#include "piso/tokenizer.h"

#include <cjson/cJSON.h>
#include <unistd.h>

static const char *TEXT = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.";

static void have_llamacpp(char *script, size_t n) {
    snprintf(script, n, "%s/tests/llamacpp/logprobs.mjs", PISO_SOURCE_DIR);
    test_require_llamacpp();
}

/* piso's log-softmax rows for tokens[0..n) of the model in `path` into lp [n, V]. */
static int piso_logprobs(const char *path, const int *tokens, int n, double *lp, int *V) {
    struct piso_model *m;
    if (piso_model_load(path, NULL, &m)) return -1;
    *V = m->cfg.vocab_size;
    float *logits = malloc(sizeof(float) * (size_t)n * (size_t)*V);
    int rc = piso_forward(m, tokens, n, 0, logits);
    for (int i = 0; i < n && !rc; i++) {
        const float *z = logits + (size_t)i * *V;
        double mx = -1e300, s = 0;
        for (int j = 0; j < *V; j++) mx = fmax(mx, z[j]);
        for (int j = 0; j < *V; j++) s += exp(z[j] - mx);
        for (int j = 0; j < *V; j++) lp[(size_t)i * *V + j] = z[j] - mx - log(s);
    }
    free(logits);
    piso_model_free(m);
    return rc;
}

struct tcase {
    const char *type, *scale;
    double tol_max_next, tol_mean_next; /* |Δ log p(next token)|: max, mean */
    double tol_max_all;                 /* |Δ| over the whole vocabulary (F32 only) */
    int top_slack;                      /* positions where the top-1 token may differ (0: 2) */
};

/* Byte-level BPE export: a tiny random model carrying the Llama-3 vocabulary (tokens, types, merges,
 * pre-tokenizer name) is written by piso; llama.cpp must load it and tokenize like tokenizer.json. */
static void test_bpe_vocab(const char *dir) {
    struct piso_tokenizer *tok;
    if (piso_tokenizer_load(test_data("tokenizers/llama3/tokenizer.json"), &tok)) {
        CHECK(0, "llama3 tokenizer: %s", piso_last_error());
        return;
    }
    const struct piso_tokenizer_vocab *v = piso_tokenizer_vocab(tok);
    struct piso_config cfg = {.arch = "llama", .dim = 8, .hidden_dim = 16, .n_layers = 1, .n_heads = 2, .n_kv_heads = 1,
                              .head_dim = 4, .vocab_size = v->n_vocab, .max_seq_len = 64, .norm_eps = 1e-5f,
                              .rope_theta = 500000.0f, .tied_embeddings = 1};
    struct piso_model *m;
    CHECK(piso_model_alloc(&cfg, &m) == 0, "alloc: %s", piso_last_error());
    for (size_t i = 0; i < (size_t)v->n_vocab * 8; i++) m->tok_embd[i] = (float)((i * 7919) % 13) * 0.01f;
    m->out_norm[0] = m->layers[0].attn_norm[0] = m->layers[0].ffn_norm[0] = 1;
    char path[512];
    snprintf(path, sizeof path, "%s/bpe.gguf", dir);
    struct piso_gguf_export_opts o = {.type = 0 /* F32 */, .output_type = -1};
    CHECK(piso_gguf_export(m, v, &o, path, NULL) == 0, "export: %s", piso_last_error());
    piso_model_free(m);
    const char *text = "Hello world! It's 2024, naïve café: 3.14159 <|begin_of_text|>x";
    int *ids = NULL, n = 0;
    CHECK(piso_tokenize(tok, text, strlen(text), 0, &ids, &n) == 0, "tokenize");
    char cmd[2048], *out = NULL;
    char quoted[512] = "'"; /* single-quoted for the shell; ' becomes '\'' */
    for (const char *c = text; *c; c++) strcat(quoted, *c == '\'' ? "'\\''" : (char[2]){*c, 0});
    strcat(quoted, "'");
    snprintf(cmd, sizeof cmd, "node %s/tests/llamacpp/tokenize.mjs %s %s", PISO_SOURCE_DIR, path, quoted);
    int st = test_run(cmd, &out);
    CHECK(st == 0, "llama.cpp could not load the BPE export (exit %d)", st);
    cJSON *js = st == 0 ? cJSON_Parse(out) : NULL;
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(js, "ids");
    int same = cJSON_IsArray(arr) && cJSON_GetArraySize(arr) == n;
    for (int i = 0; same && i < n; i++) same = cJSON_GetArrayItem(arr, i)->valueint == ids[i];
    CHECK(same, "llama.cpp tokenizes the BPE export differently from tokenizer.json: %s", out ? out : "");
    printf("BPE (Llama-3 vocabulary) export: llama.cpp tokenization %s piso's (%d tokens)\n", same ? "equals" : "differs from", n);
    cJSON_Delete(js);
    free(out);
    free(ids);
    piso_tokenizer_free(tok);
}

/* Exports `model` (a checkpoint or GGUF file) in tc's type and scales, evaluates the tokens in
 * llama.cpp and in piso, and checks the next-token log-probabilities against the case's tolerances. */
static void compare_case(const char *script, const char *dir, const char *model, const char *tokp, const int *ids, int n,
                         const char *list, const struct tcase *tc, const char *tag) {
    char path[512], cmd[8192];
    snprintf(path, sizeof path, "%s/%s%s-%s.gguf", dir, tag, tc->type, tc->scale);
    snprintf(cmd, sizeof cmd, "%s quantize --model %s %s%s --out %s --type %s --scale %s --quiet", PISO_BIN, model,
             tokp ? "--tokenizer " : "", tokp ? tokp : "", path, tc->type, tc->scale);
    CHECK(test_run(cmd, NULL) == 0, "export %s", cmd);
    snprintf(cmd, sizeof cmd, "node %s %s %s", script, path, list);
    char *out = NULL;
    int st = test_run(cmd, &out);
    CHECK(st == 0, "llama.cpp failed on %s (exit %d)", path, st);
    cJSON *js = st == 0 ? cJSON_Parse(out) : NULL;
    free(out);
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(js, "logprobs");
    CHECK(cJSON_IsArray(rows) && cJSON_GetArraySize(rows) == n, "%s: llama.cpp output", path);
    if (!cJSON_IsArray(rows) || cJSON_GetArraySize(rows) != n) {
        cJSON_Delete(js);
        return;
    }
    int V = 0;
    double *lp = malloc(sizeof(double) * (size_t)n * 4096);
    CHECK(piso_logprobs(path, ids, n, lp, &V) == 0, "piso on %s: %s", path, piso_last_error());
    double max_next = 0, sum_next = 0, max_all = 0;
    int top_agree = 0;
    for (int i = 0; i < n; i++) {
        const cJSON *row = cJSON_GetArrayItem(rows, i);
        CHECK(cJSON_GetArraySize(row) == V, "row %d has %d entries, vocab %d", i, cJSON_GetArraySize(row), V);
        int am_l = 0, am_p = 0;
        for (int j = 0; j < V && j < cJSON_GetArraySize(row); j++) {
            double l = cJSON_GetArrayItem(row, j)->valuedouble, p = lp[(size_t)i * V + j];
            max_all = fmax(max_all, fabs(l - p));
            if (l > cJSON_GetArrayItem(row, am_l)->valuedouble) am_l = j;
            if (p > lp[(size_t)i * V + am_p]) am_p = j;
        }
        top_agree += am_l == am_p;
        if (i + 1 < n) {
            double d = fabs(cJSON_GetArrayItem(row, ids[i + 1])->valuedouble - lp[(size_t)i * V + ids[i + 1]]);
            max_next = fmax(max_next, d);
            sum_next += d;
        }
    }
    double mean_next = sum_next / (n - 1);
    printf("%-9s %-6s %-13s max|dlogp(next)| %.2e  mean %.2e  max over vocab %.2e  top-1 agree %d/%d\n", tag[0] ? tag : "stories",
           tc->type, tc->scale, max_next, mean_next, max_all, top_agree, n);
    CHECK(max_next <= tc->tol_max_next, "%s%s %s: max |dlogp| %g > %g", tag, tc->type, tc->scale, max_next, tc->tol_max_next);
    CHECK(mean_next <= tc->tol_mean_next, "%s%s %s: mean |dlogp| %g > %g", tag, tc->type, tc->scale, mean_next, tc->tol_mean_next);
    if (tc->tol_max_all > 0) CHECK(max_all <= tc->tol_max_all, "%s: max over vocab %g", tc->type, max_all);
    const int slack = tc->top_slack ? tc->top_slack : 2;
    CHECK(top_agree >= n - slack, "%s%s %s: top-1 agrees on %d of %d", tag, tc->type, tc->scale, top_agree, n);
    free(lp);
    cJSON_Delete(js);
}

/* A random model whose rows are whole 256-blocks (dim 256, FFN 512, stories260K's 512-token
 * vocabulary): the K-quants and NVFP4 are stored as such, not in a fallback type. Written as F32
 * GGUF by piso, then exported from that file. */
static int write_wide_model(const char *dir, const char *tokp, char *path, size_t np) {
    struct piso_tokenizer *tok;
    if (piso_tokenizer_load(tokp, &tok)) return -1;
    const struct piso_tokenizer_vocab *v = piso_tokenizer_vocab(tok);
    struct piso_config cfg = {.arch = "llama", .dim = 256, .hidden_dim = 512, .n_layers = 2, .n_heads = 4, .n_kv_heads = 4,
                              .head_dim = 64, .vocab_size = v->n_vocab, .max_seq_len = 256, .norm_eps = 1e-5f,
                              .rope_theta = 10000.0f, .tied_embeddings = 0};
    struct piso_model *m;
    if (piso_model_alloc(&cfg, &m)) {
        piso_tokenizer_free(tok);
        return -1;
    }
    uint32_t r = 4242;
#define RND() ((r = r * 1664525u + 1013904223u), (float)((r >> 8) & 0xffffff) / 8388608.0f - 1.0f)
    const int D = cfg.dim, F = cfg.hidden_dim, V = cfg.vocab_size;
    for (int i = 0; i < V * D; i++) m->tok_embd[i] = RND(), m->output[i] = RND() * 0.15f;
    for (int i = 0; i < D; i++) m->out_norm[i] = 1.0f;
    for (int l = 0; l < cfg.n_layers; l++) {
        struct piso_layer_weights *L = &m->layers[l];
        const float a = 1.7f / sqrtf((float)D), b = 1.7f / sqrtf((float)F);
        for (int i = 0; i < D; i++) L->attn_norm[i] = L->ffn_norm[i] = 1.0f;
        for (int i = 0; i < D * D; i++) L->wq[i] = RND() * a, L->wk[i] = RND() * a, L->wv[i] = RND() * a, L->wo[i] = RND() * a;
        for (int i = 0; i < F * D; i++) L->w_gate[i] = RND() * a, L->w_up[i] = RND() * a, L->w_down[i] = RND() * b;
    }
#undef RND
    snprintf(path, np, "%s/wide-f32.gguf", dir);
    struct piso_gguf_export_opts o = {.type = 0 /* F32 */, .output_type = -1};
    int rc = piso_gguf_export(m, v, &o, path, NULL);
    piso_model_free(m);
    piso_tokenizer_free(tok);
    return rc;
}

int main(void) {
    char script[1024];
    const char *model = test_data("models/stories260K/stories260K.bin");
    const char *tokp = test_data("models/stories260K/tok512.bin");
    have_llamacpp(script, sizeof script);

    struct piso_tokenizer *tok;
    CHECK(piso_tokenizer_load(tokp, &tok) == 0, "tokenizer: %s", piso_last_error());
    int *ids = NULL, n = 0;
    CHECK(piso_tokenize(tok, TEXT, strlen(TEXT), 1, &ids, &n) == 0 && n > 10, "tokenize");
    piso_tokenizer_free(tok);
    char list[4096] = {0};
    for (int i = 0; i < n; i++) snprintf(list + strlen(list), sizeof list - strlen(list), "%s%d", i ? "," : "", ids[i]);

    char dir[] = "/tmp/piso_interop_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    const struct tcase cases[] = {
        /* F32 with llama.cpp's KV cache in F32: only summation order differs */
        {"F32", "piso", 1e-4, 1e-5, 2e-4, 0},
        /* quantized: llama.cpp rounds activations (measured: max ~0.02-0.045, mean ~0.003-0.005);
         * a wrong block layout would be off by nats */
        {"Q8_0", "piso", 0.1, 0.015, 0, 0},
        {"Q4_0", "piso", 0.1, 0.015, 0, 0},
        {"Q4_0", "llamacpp-ref", 0.1, 0.015, 0, 0},
        {"Q4_K", "piso", 0.1, 0.015, 0, 0},
        {"IQ4_NL", "piso", 0.1, 0.015, 0, 0},
        /* FP4 on stories260K's 64-wide rows (ffn_down, 172 wide, falls back to F16); NVFP4 with
         * piso's scales carries per-tensor scales (NAME.scale) that llama.cpp multiplies in */
        {"MXFP4", "piso", 0.1, 0.015, 0, 0},
        {"MXFP4", "llamacpp-ref", 0.1, 0.015, 0, 0},
        {"NVFP4", "piso", 0.1, 0.015, 0, 0},
        {"NVFP4", "llamacpp-ref", 0.1, 0.015, 0, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) compare_case(script, dir, model, tokp, ids, n, list, &cases[c], "");

    /* the 256-wide random model: Q2_K, Q3_K (stored as such), NVFP4 with tensor scales on every
     * linear weight, MXFP4 */
    char wide[512];
    CHECK(write_wide_model(dir, tokp, wide, sizeof wide) == 0, "wide model: %s", piso_last_error());
    /* random weights give flat next-token distributions: llama.cpp's 8-bit activations (Q8_K for
     * the K-quants) move log-probs by ~0.02 on average and swap near-tied top tokens (measured:
     * max 0.05-0.085, mean 0.014-0.026, top-1 28-31 of 32); a wrong layout or a missing tensor
     * scale moves them by whole nats */
    const struct tcase wcases[] = {
        {"F32", "piso", 1e-3, 1e-4, 2e-3, 0},
        {"Q2_K", "piso", 0.2, 0.05, 0, 6},
        {"Q2_K", "llamacpp-ref", 0.2, 0.05, 0, 6},
        {"Q3_K", "piso", 0.2, 0.05, 0, 6},
        {"Q3_K", "llamacpp-ref", 0.2, 0.05, 0, 6},
        {"MXFP4", "piso", 0.2, 0.05, 0, 6},
        {"NVFP4", "piso", 0.2, 0.05, 0, 6},
    };
    for (size_t c = 0; c < sizeof wcases / sizeof wcases[0]; c++) compare_case(script, dir, wide, NULL, ids, n, list, &wcases[c], "wide-");

    free(ids);
    test_bpe_vocab(dir);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
    return test_finish();
}
