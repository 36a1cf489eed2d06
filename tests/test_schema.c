/* The tensor schema: its shapes for one concrete config of each architecture against hand-written
 * expectations, and Qwen2-style (q/k/v biases, GQA) and Qwen3-style (q/k norms, head_dim !=
 * dim/n_heads) random models through GGUF: exported F32 and Q8_0, loaded back by piso (F32: the
 * logits of the in-memory model exactly), and run in real llama.cpp (when node-llama-cpp is
 * installed) with next-token log-probs equal to piso's on the same file. */
#include "harness.h"
#include "piso/gguf.h"
#include "piso/gguf_export.h"
#include "piso/schema.h"
#include "piso/tokenizer.h"

#include <cjson/cJSON.h>
#include <unistd.h>

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float frand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 - 0.5);
}

/* dim 64, hidden 96, 4 heads, 2 kv heads, head_dim 24 (qwen3) or 16, vocab 512 */
static struct piso_config config_for(const char *arch) {
    struct piso_config c = {.dim = 64, .hidden_dim = 96, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .head_dim = 16,
                            .vocab_size = 512, .max_seq_len = 128, .norm_eps = 1e-6f, .rope_theta = 10000.0f};
    snprintf(c.arch, sizeof c.arch, "%s", arch);
    if (!strcmp(arch, "qwen2")) c.has_qkv_bias = 1;
    if (!strcmp(arch, "qwen3")) c.has_qk_norm = 1, c.head_dim = 24, c.tied_embeddings = 1;
    return c;
}

static void test_table(void) {
    const char *archs[3] = {"llama", "qwen2", "qwen3"};
    for (int a = 0; a < 3; a++) {
        struct piso_config c = config_for(archs[a]);
        const int hq = a == 2 ? 96 : 64, hkv = a == 2 ? 48 : 32, hd = a == 2 ? 24 : 16;
        /* role: rows, cols (0: 1-D), present */
        const int64_t want[PISO_TR_COUNT][3] = {
            [PISO_TR_TOK_EMBD] = {512, 64, 1}, [PISO_TR_ROPE_FREQS] = {hd / 2, 0, 0},
            [PISO_TR_ATTN_NORM] = {64, 0, 1},  [PISO_TR_WQ] = {hq, 64, 1},
            [PISO_TR_WK] = {hkv, 64, 1},       [PISO_TR_WV] = {hkv, 64, 1},
            [PISO_TR_BQ] = {hq, 0, a == 1},    [PISO_TR_BK] = {hkv, 0, a == 1},
            [PISO_TR_BV] = {hkv, 0, a == 1},   [PISO_TR_Q_NORM] = {hd, 0, a == 2},
            [PISO_TR_K_NORM] = {hd, 0, a == 2}, [PISO_TR_WO] = {64, hq, 1},
            [PISO_TR_FFN_NORM] = {64, 0, 1},   [PISO_TR_GATE] = {96, 64, 1},
            [PISO_TR_UP] = {96, 64, 1},        [PISO_TR_DOWN] = {64, 96, 1},
            [PISO_TR_OUT_NORM] = {64, 0, 1},   [PISO_TR_OUTPUT] = {512, 64, a != 2},
        };
        for (int r = 0; r < PISO_TR_COUNT; r++) {
            const struct piso_tensor_info *t = &piso_schema[r];
            CHECK((int)t->role == r, "row %d holds role %d", r, (int)t->role);
            CHECK(piso_schema_dim(&c, t->rows) == want[r][0] && piso_schema_dim(&c, t->cols) == want[r][1] &&
                      piso_schema_present(&c, t) == want[r][2],
                  "%s %s: [%lld, %lld] present %d", archs[a], t->label, (long long)piso_schema_dim(&c, t->rows),
                  (long long)piso_schema_dim(&c, t->cols), piso_schema_present(&c, t));
        }
        /* file order: 2 globals, 2 blocks of 14, 2 globals */
        int l, steps = piso_schema_steps(&c);
        CHECK(steps == 2 + 2 * 14 + 2, "%s: %d steps", archs[a], steps);
        CHECK(piso_schema_step(&c, 0, &l)->role == PISO_TR_TOK_EMBD && l == -1, "step 0");
        CHECK(piso_schema_step(&c, 2 + 14 + 1, &l)->role == PISO_TR_WQ && l == 1, "step 17 is blk.1 q");
        CHECK(piso_schema_step(&c, steps - 1, &l)->role == PISO_TR_OUTPUT && l == -1, "last step");
        const struct piso_arch_info *ai = piso_arch_for_gguf(&c);
        CHECK(!strcmp(ai->gguf, archs[a]) && ai->gguf_rope == (a ? PISO_ROPE_HALF : PISO_ROPE_ADJACENT), "%s arch", archs[a]);
    }
    char nm[96];
    piso_schema_name(&piso_schema[PISO_TR_Q_NORM], PISO_NAME_GGUF, 3, nm, sizeof nm);
    CHECK(!strcmp(nm, "blk.3.attn_q_norm.weight"), "gguf name %s", nm);
    piso_schema_name(&piso_schema[PISO_TR_BK], PISO_NAME_HF, 1, nm, sizeof nm);
    CHECK(!strcmp(nm, "model.layers.1.self_attn.k_proj.bias"), "hf name %s", nm);
    /* RoPE reorder, one head of 4 rows: adjacent rows (a0 a1 b0 b1) are rotate-half (a0 b0 a1 b1) */
    const float adj[4] = {10, 11, 20, 21}, half[4] = {10, 20, 11, 21};
    float out[4];
    piso_rope_reorder(adj, out, 1, 4, 1, PISO_ROPE_HALF);
    CHECK(!memcmp(out, half, sizeof out), "adjacent -> half");
    piso_rope_reorder(half, out, 1, 4, 1, PISO_ROPE_ADJACENT);
    CHECK(!memcmp(out, adj, sizeof out), "half -> adjacent");
}

static int have_llamacpp(void) {
    char pkg[1024];
    const char *pre = getenv("PISO_LLAMACPP_PREFIX");
    snprintf(pkg, sizeof pkg, "%s/node_modules/node-llama-cpp/package.json", pre && *pre ? pre : PISO_SOURCE_DIR "/.tools/llamacpp");
    return test_run("node --version >/dev/null 2>&1", NULL) == 0 && access(pkg, R_OK) == 0;
}

static void log_softmax(const float *z, int V, double *lp) {
    double mx = -1e300, s = 0;
    for (int j = 0; j < V; j++) mx = fmax(mx, z[j]);
    for (int j = 0; j < V; j++) s += exp(z[j] - mx);
    for (int j = 0; j < V; j++) lp[j] = z[j] - mx - log(s);
}

static void test_gguf_arch(const char *arch, const struct piso_tokenizer_vocab *v, const char *dir, int llamacpp) {
    struct piso_config c = config_for(arch);
    struct piso_model *m;
    if (piso_model_alloc(&c, &m)) {
        CHECK(0, "alloc %s: %s", arch, piso_last_error());
        return;
    }
    for (int s = 0, l; s < piso_schema_steps(&c); s++) {
        const struct piso_tensor_info *t = piso_schema_step(&c, s, &l);
        float *p = (float *)(uintptr_t)piso_schema_data(m, t, l);
        const int64_t n = piso_schema_numel(&c, t), cols = piso_schema_dim(&c, t->cols);
        for (int64_t i = 0; p && i < n; i++) p[i] = cols ? 0.5f * frand() : (t->role >= PISO_TR_BQ && t->role <= PISO_TR_BV ? 0.3f * frand() : 1.0f + 0.3f * frand());
    }
    enum { N = 24 };
    int tokens[N];
    for (int i = 0; i < N; i++) tokens[i] = i ? 3 + (i * 37) % 500 : 1;
    const int V = c.vocab_size;
    float *ref = malloc(sizeof(float) * N * V), *got = malloc(sizeof(float) * N * V);
    CHECK(piso_forward(m, tokens, N, 0, ref) == 0, "forward %s", arch);
    const char *types[2] = {"F32", "Q8_0"};
    const int tids[2] = {GGML_T_F32, GGML_T_Q8_0};
    for (int k = 0; k < 2; k++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s-%s.gguf", dir, arch, types[k]);
        struct piso_gguf_export_opts o = {.type = tids[k], .output_type = -1};
        if (piso_gguf_export(m, v, &o, path, NULL)) {
            CHECK(0, "export %s: %s", path, piso_last_error());
            continue;
        }
        struct piso_gguf g;
        if (piso_gguf_open(&g, path) == 0) {
            char *a = piso_gguf_get_str(&g, "general.architecture");
            char key[64];
            uint32_t kl = 0;
            snprintf(key, sizeof key, "%s.attention.key_length", arch);
            CHECK(a && !strcmp(a, arch) && piso_gguf_get_u32(&g, key, &kl) == 0 && kl == (uint32_t)c.head_dim,
                  "%s: architecture %s, key_length %u", path, a ? a : "?", kl);
            CHECK(!strcmp(arch, "qwen2") == (piso_gguf_find_tensor(&g, "blk.1.attn_v.bias") != NULL), "%s: biases", path);
            CHECK(!strcmp(arch, "qwen3") == (piso_gguf_find_tensor(&g, "blk.1.attn_k_norm.weight") != NULL), "%s: q/k norms", path);
            /* NEOX row order in the file: blk.0.attn_q row 1 is the model's row 2 (pair 1, first half) */
            const struct piso_gguf_tensor *tq = piso_gguf_find_tensor(&g, "blk.0.attn_q.weight");
            if (k == 0 && tq) CHECK(!memcmp((const float *)tq->data + 64, m->layers[0].wq + 2 * 64, 64 * sizeof(float)), "%s: q rows rotate-half", path);
            free(a);
            piso_gguf_close(&g);
        }
        struct piso_model *b;
        if (piso_model_load(path, NULL, &b)) {
            CHECK(0, "load %s: %s", path, piso_last_error());
            continue;
        }
        CHECK(!strcmp(b->cfg.arch, arch) && b->cfg.head_dim == c.head_dim && b->cfg.has_qkv_bias == c.has_qkv_bias &&
                  b->cfg.has_qk_norm == c.has_qk_norm && b->cfg.tied_embeddings == c.tied_embeddings,
              "%s: loaded config", path);
        CHECK(piso_forward(b, tokens, N, 0, got) == 0, "forward %s", path);
        double d = 0;
        for (int i = 0; i < N * V; i++) d = fmax(d, fabs((double)got[i] - ref[i]));
        if (k == 0) CHECK(d == 0, "%s: logits differ from the in-memory model by %g", path, d);
        else CHECK(d < 0.25, "%s: Q8_0 logits differ by %g (Q8_0 rounding: ~0.09 measured)", path, d);
        printf("%s %s: piso reload max |dlogit| %.3g\n", arch, types[k], d);
        if (llamacpp) {
            char cmd[4096], list[1024] = "", *out = NULL;
            for (int i = 0; i < N; i++) snprintf(list + strlen(list), sizeof list - strlen(list), "%s%d", i ? "," : "", tokens[i]);
            snprintf(cmd, sizeof cmd, "node %s/tests/llamacpp/logprobs.mjs %s %s", PISO_SOURCE_DIR, path, list);
            int st = test_run(cmd, &out);
            CHECK(st == 0, "llama.cpp failed on %s (exit %d)", path, st);
            cJSON *js = st == 0 ? cJSON_Parse(out) : NULL;
            const cJSON *rows = cJSON_GetObjectItemCaseSensitive(js, "logprobs");
            CHECK(cJSON_IsArray(rows) && cJSON_GetArraySize(rows) == N, "%s: llama.cpp output", path);
            double max_next = 0, lp[512];
            for (int i = 0; cJSON_IsArray(rows) && i + 1 < N && i < cJSON_GetArraySize(rows); i++) {
                log_softmax(got + (size_t)i * V, V, lp);
                const double l = cJSON_GetArrayItem(cJSON_GetArrayItem(rows, i), tokens[i + 1])->valuedouble;
                max_next = fmax(max_next, fabs(l - lp[tokens[i + 1]]));
            }
            printf("%s %s: llama.cpp vs piso max |dlogp(next)| %.3g\n", arch, types[k], max_next);
            /* F32: summation order only; Q8_0: llama.cpp rounds activations to Q8 */
            CHECK(max_next <= (k == 0 ? 1e-4 : 0.1), "%s: llama.cpp log-probs differ by %g", path, max_next);
            cJSON_Delete(js);
            free(out);
        }
        piso_model_free(b);
    }
    free(ref), free(got);
    piso_model_free(m);
}

int main(void) {
    test_table();
    struct piso_tokenizer *tok;
    CHECK(piso_tokenizer_load(test_data("models/stories260K/tok512.bin"), &tok) == 0, "tokenizer: %s", piso_last_error());
    char dir[] = "/tmp/piso_schema_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    int llamacpp = have_llamacpp();
    if (!llamacpp) fprintf(stderr, "note: node-llama-cpp not installed: llama.cpp checks skipped\n");
    test_gguf_arch("qwen2", piso_tokenizer_vocab(tok), dir, llamacpp);
    test_gguf_arch("qwen3", piso_tokenizer_vocab(tok), dir, llamacpp);
    piso_tokenizer_free(tok);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
    return test_finish();
}
