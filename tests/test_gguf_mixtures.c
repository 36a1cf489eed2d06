/* llama-quantize's mixtures (Q2_K, Q3_K_S, Q3_K_M, Q4_K_M, Q5_K_M): piso's export against llama.cpp's
 * own quantizer (llama_model_quantize of node-llama-cpp's library, run by the llama_quantize helper)
 * on the same F32 file: every tensor must get the same type, and with --scale llamacpp-ref the same
 * bytes. Models: a random 16-layer, 256-wide one with grouped-query attention (4 query heads per KV
 * head), whose rows are whole K-quant blocks, and stories260K (64-wide: every K-quant falls back).
 * Without the library the test is skipped, except under CI=true where that is a failure. */
#include "harness.h"
#include "piso/gguf.h"
#include "piso/gguf_export.h"
#include "piso/model.h"
#include "piso/tokenizer.h"

#include <unistd.h>

static int write_model(const char *path, const char *tokp) {
    struct piso_tokenizer *tok;
    if (piso_tokenizer_load(tokp, &tok)) return -1;
    const struct piso_tokenizer_vocab *v = piso_tokenizer_vocab(tok);
    struct piso_config cfg = {.arch = "llama", .dim = 256, .hidden_dim = 512, .n_layers = 16, .n_heads = 4, .n_kv_heads = 1,
                              .head_dim = 64, .vocab_size = v->n_vocab, .max_seq_len = 128, .norm_eps = 1e-5f,
                              .rope_theta = 10000.0f, .tied_embeddings = 0};
    struct piso_model *m;
    if (piso_model_alloc(&cfg, &m)) {
        piso_tokenizer_free(tok);
        return -1;
    }
    uint32_t r = 7;
#define RND() ((r = r * 1664525u + 1013904223u), (float)((r >> 8) & 0xffffff) / 8388608.0f - 1.0f)
    const int D = cfg.dim, F = cfg.hidden_dim, V = cfg.vocab_size, Hkv = cfg.n_kv_heads * cfg.head_dim;
    for (int i = 0; i < V * D; i++) m->tok_embd[i] = RND(), m->output[i] = RND() * 0.1f;
    for (int i = 0; i < D; i++) m->out_norm[i] = 1.0f;
    for (int l = 0; l < cfg.n_layers; l++) {
        struct piso_layer_weights *L = &m->layers[l];
        for (int i = 0; i < D; i++) L->attn_norm[i] = L->ffn_norm[i] = 1.0f;
        for (int i = 0; i < D * D; i++) L->wq[i] = RND() * 0.1f, L->wo[i] = RND() * 0.1f;
        for (int i = 0; i < Hkv * D; i++) L->wk[i] = RND() * 0.1f, L->wv[i] = RND() * 0.1f;
        for (int i = 0; i < F * D; i++) L->w_gate[i] = RND() * 0.1f, L->w_up[i] = RND() * 0.1f, L->w_down[i] = RND() * 0.05f;
    }
#undef RND
    struct piso_gguf_export_opts o = {.type = 0 /* F32 */, .output_type = -1};
    int rc = piso_gguf_export(m, v, &o, path, NULL);
    piso_model_free(m);
    piso_tokenizer_free(tok);
    return rc;
}

static void compare(const char *src, const char *dir, const char *tag, const char *type, int mix, int ftype) {
    char a[512], b[512], cmd[2048];
    snprintf(a, sizeof a, "%s/%s-piso-%s.gguf", dir, tag, type);
    snprintf(b, sizeof b, "%s/%s-llama-%s.gguf", dir, tag, type);
    snprintf(cmd, sizeof cmd, "%s quantize --model %s --out %s --type %s%s --scale llamacpp-ref --quiet", PISO_BIN, src, a, type,
             mix ? " --mix" : "");
    CHECK(test_run(cmd, NULL) == 0, "%s", cmd);
    snprintf(cmd, sizeof cmd, "%s %s %s %d >/dev/null 2>&1", LLAMA_QUANTIZE_BIN, src, b, ftype);
    CHECK(test_run(cmd, NULL) == 0, "%s", cmd);
    struct piso_gguf ga, gb;
    if (piso_gguf_open(&ga, a) || piso_gguf_open(&gb, b)) {
        CHECK(0, "open: %s", piso_last_error());
        return;
    }
    int same_type = 0, same_bytes = 0, n = 0, quantized = 0;
    char counts[256] = "";
    int per_type[64] = {0};
    for (int64_t i = 0; i < gb.n_tensors; i++) {
        const struct piso_gguf_tensor *tb = &gb.tensors[i], *ta = piso_gguf_find_tensor(&ga, tb->name);
        n++;
        if (!ta) {
            CHECK(0, "%s %s: %s missing in piso's file", tag, type, tb->name);
            continue;
        }
        if (ta->type == tb->type) same_type++;
        else fprintf(stderr, "%s %s: %s is %s in piso's file, %s in llama.cpp's\n", tag, type, tb->name,
                     piso_ggml_traits(ta->type)->name, piso_ggml_traits(tb->type)->name);
        if (ta->type == tb->type && ta->nbytes == tb->nbytes && !memcmp(ta->data, tb->data, ta->nbytes)) same_bytes++;
        if (tb->n_dims == 2) quantized++, per_type[tb->type]++;
    }
    for (int t = 0; t < 64; t++)
        if (per_type[t])
            snprintf(counts + strlen(counts), sizeof counts - strlen(counts), "%s%s x%d", counts[0] ? ", " : "",
                     piso_ggml_traits(t)->name, per_type[t]);
    uint32_t fa = 0, fb = 0;
    piso_gguf_get_u32(&ga, "general.file_type", &fa), piso_gguf_get_u32(&gb, "general.file_type", &fb);
    CHECK(same_type == n && ga.n_tensors == gb.n_tensors, "%s %s: %d of %d tensor types equal", tag, type, same_type, n);
    CHECK(same_bytes == n, "%s %s: %d of %d tensors byte-identical", tag, type, same_bytes, n);
    CHECK(fa == fb && (int)fb == ftype, "%s %s: general.file_type %u vs %u", tag, type, fa, fb);
    printf("%-9s %-6s: %d/%d tensor types and %d/%d tensors' bytes equal to llama-quantize's (%s)\n", tag, type, same_type, n,
           same_bytes, n, counts);
    piso_gguf_close(&ga), piso_gguf_close(&gb);
}

int main(void) {
    const char *model = test_data("models/stories260K/stories260K.bin");
    const char *tokp = test_data("models/stories260K/tok512.bin");
    char probe[600];
    snprintf(probe, sizeof probe, "%s/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libllama.v0.5.0.so",
             getenv("PISO_LLAMACPP_PREFIX") && *getenv("PISO_LLAMACPP_PREFIX") ? getenv("PISO_LLAMACPP_PREFIX")
                                                                                   : PISO_SOURCE_DIR "/.tools/llamacpp");
    if (access(probe, R_OK) != 0) {
        if (test_in_ci()) {
            fprintf(stderr, "FAIL: %s missing (CI=true requires llama.cpp; run scripts/setup-llamacpp.sh)\n", probe);
            return 1;
        }
        fprintf(stderr, "SKIP: %s missing (run scripts/setup-llamacpp.sh)\n", probe);
        return 77;
    }
    char dir[] = "/tmp/piso_mix_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char wide[600], stories[600], cmd[2048];
    snprintf(wide, sizeof wide, "%s/wide.gguf", dir);
    snprintf(stories, sizeof stories, "%s/stories.gguf", dir);
    CHECK(write_model(wide, tokp) == 0, "wide model: %s", piso_last_error());
    snprintf(cmd, sizeof cmd, "%s quantize --model %s --tokenizer %s --out %s --type F32 --quiet", PISO_BIN, model, tokp, stories);
    CHECK(test_run(cmd, NULL) == 0, "%s", cmd);
    const struct {
        const char *type;
        int mix, ftype;
    } mixes[] = {{"Q2_K", 1, 10}, {"Q3_K_S", 0, 11}, {"Q3_K_M", 0, 12}, {"Q4_K_M", 0, 15}, {"Q5_K_M", 0, 17}};
    for (size_t i = 0; i < sizeof mixes / sizeof mixes[0]; i++) {
        compare(wide, dir, "wide-16L", mixes[i].type, mixes[i].mix, mixes[i].ftype);
        compare(stories, dir, "stories", mixes[i].type, mixes[i].mix, mixes[i].ftype);
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
    return test_finish();
}
