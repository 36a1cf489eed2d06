/* GGUF export of stories260K: metadata types as llama.cpp's loader checks them, the HF q/k
 * permutation undone (the HF export must carry the same bytes as the llama2.c export, whose Meta
 * layout is already GGUF's), fallback types, norms F32, the file reloaded by piso, and refusals. */
#include "harness.h"
#include "piso/gguf.h"
#include "piso/gguf_export.h"
#include "piso/model.h"
#include "piso/tokenizer.h"

#include <unistd.h>

static void check_kv_type(const struct piso_gguf *g, const char *key, enum piso_gguf_vtype t) {
    const struct piso_gguf_kv *kv = piso_gguf_find(g, key);
    CHECK(kv && kv->type == t, "%s: %s", key, kv ? "wrong type" : "missing");
}

int main(void) {
    const char *bin = test_data("models/stories260K/stories260K.bin");
    const char *tok = test_data("models/stories260K/tok512.bin");
    const char *hf = test_data("models/stories260K-hf");
    char dir[] = "/tmp/piso_export_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char a[512], b[512], c[512], cmd[2048];
    snprintf(a, sizeof a, "%s/l2c.gguf", dir);
    snprintf(b, sizeof b, "%s/hf.gguf", dir);
    snprintf(c, sizeof c, "%s/q4k.gguf", dir);
    snprintf(cmd, sizeof cmd, "%s quantize --model %s --tokenizer %s --out %s --type F32 --quiet", PISO_BIN, bin, tok, a);
    CHECK(test_run(cmd, NULL) == 0, "%s", cmd);
    snprintf(cmd, sizeof cmd, "%s quantize --model %s --out %s --type F32 --quiet", PISO_BIN, hf, b);
    CHECK(test_run(cmd, NULL) == 0, "%s", cmd);
    snprintf(cmd, sizeof cmd, "%s quantize --model %s --tokenizer %s --out %s --type Q4_K --quiet", PISO_BIN, bin, tok, c);
    CHECK(test_run(cmd, NULL) == 0, "%s", cmd);

    struct piso_gguf ga, gb, gc;
    CHECK(piso_gguf_open(&ga, a) == 0, "open %s: %s", a, piso_last_error());
    CHECK(piso_gguf_open(&gb, b) == 0, "open %s: %s", b, piso_last_error());
    CHECK(piso_gguf_open(&gc, c) == 0, "open %s: %s", c, piso_last_error());

    /* llama.cpp's strict key types (llamacpp-formats.md §1.5) */
    const char *u32keys[] = {"general.quantization_version", "llama.context_length", "llama.embedding_length",
                             "llama.block_count", "llama.feed_forward_length", "llama.attention.head_count",
                             "llama.attention.head_count_kv", "llama.rope.dimension_count", "tokenizer.ggml.bos_token_id",
                             "tokenizer.ggml.eos_token_id"};
    for (size_t i = 0; i < sizeof u32keys / sizeof *u32keys; i++) check_kv_type(&ga, u32keys[i], GGUF_VT_UINT32);
    check_kv_type(&ga, "llama.attention.layer_norm_rms_epsilon", GGUF_VT_FLOAT32);
    check_kv_type(&ga, "llama.rope.freq_base", GGUF_VT_FLOAT32);
    check_kv_type(&ga, "general.architecture", GGUF_VT_STRING);
    uint32_t v;
    CHECK(piso_gguf_get_u32(&ga, "llama.embedding_length", &v) == 0 && v == 64, "n_embd");
    CHECK(piso_gguf_get_u32(&ga, "llama.feed_forward_length", &v) == 0 && v == 172, "n_ff");
    CHECK(piso_gguf_get_u32(&ga, "llama.attention.head_count_kv", &v) == 0 && v == 4, "n_head_kv");
    CHECK(piso_gguf_get_u32(&ga, "tokenizer.ggml.bos_token_id", &v) == 0 && v == 1, "bos");
    char *model = piso_gguf_get_str(&ga, "tokenizer.ggml.model");
    CHECK(model && !strcmp(model, "llama"), "tokenizer model %s", model ? model : "(none)");
    free(model);
    const struct piso_gguf_kv *toks = piso_gguf_find(&ga, "tokenizer.ggml.tokens");
    CHECK(toks && toks->arr_n == 512, "512 tokens");
    if (toks) {
        char *t3 = piso_gguf_arr_str(toks, 3);
        CHECK(t3 && !strcmp(t3, "<0x00>"), "byte token 3 is <0x00>: %s", t3 ? t3 : "?");
        free(t3);
    }
    check_kv_type(&ga, "tokenizer.ggml.scores", GGUF_VT_ARRAY);
    check_kv_type(&ga, "tokenizer.ggml.token_type", GGUF_VT_ARRAY);

    /* HF (rotate-half q/k rows) and llama2.c (adjacent pairs) give byte-identical GGUF weights */
    int same = 0, compared = 0;
    for (int64_t i = 0; i < ga.n_tensors; i++) {
        const struct piso_gguf_tensor *ta = &ga.tensors[i], *tb = piso_gguf_find_tensor(&gb, ta->name);
        CHECK(tb != NULL, "HF export lacks %s", ta->name);
        if (!tb) continue;
        compared++;
        same += ta->nbytes == tb->nbytes && !memcmp(ta->data, tb->data, ta->nbytes);
        if (!(ta->nbytes == tb->nbytes && !memcmp(ta->data, tb->data, ta->nbytes))) fprintf(stderr, "differs: %s\n", ta->name);
    }
    CHECK(compared == 47 && same == compared, "%d of %d tensors identical", same, compared);

    /* Q4_K on dim 64 / hidden 172: rows of 64 fall back to Q5_0, rows of 172 (ffn_down) to F16,
     * the tied embedding/output gets Q6_K -> Q8_0, norms stay F32 */
    const struct { const char *name; int type; } want[] = {
        {"blk.0.attn_q.weight", GGML_T_Q5_0}, {"blk.4.ffn_up.weight", GGML_T_Q5_0},
        {"blk.2.attn_output.weight", GGML_T_Q5_0}, {"blk.0.ffn_down.weight", GGML_T_F16},
        {"token_embd.weight", GGML_T_Q8_0}, {"blk.0.attn_norm.weight", GGML_T_F32}, {"output_norm.weight", GGML_T_F32}};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        const struct piso_gguf_tensor *t = piso_gguf_find_tensor(&gc, want[i].name);
        CHECK(t && t->type == want[i].type, "%s: type %d, want %d", want[i].name, t ? t->type : -1, want[i].type);
    }
    CHECK(piso_gguf_get_u32(&gc, "general.file_type", &v) == 0 && v == 15, "file_type Q4_K_M");
    piso_gguf_close(&ga);
    piso_gguf_close(&gb);
    piso_gguf_close(&gc);

    /* piso reloads its Q4_K file; logits stay close to the F32 model's */
    struct piso_model *mf, *mq;
    CHECK(piso_model_load(a, NULL, &mf) == 0, "load %s: %s", a, piso_last_error());
    CHECK(piso_model_load(c, NULL, &mq) == 0, "load %s: %s", c, piso_last_error());
    int ids[8] = {1, 403, 407, 261, 378, 429, 300, 290};
    float la[8 * 512], lq[8 * 512];
    CHECK(piso_forward(mf, ids, 8, 0, la) == 0 && piso_forward(mq, ids, 8, 0, lq) == 0, "forward");
    double mean = 0;
    int top_same = 0;
    for (int i = 0; i < 8 * 512; i++) mean += fabs(la[i] - lq[i]) / (8 * 512);
    for (int p = 0; p < 8; p++) {
        int af = 0, aq = 0;
        for (int j = 0; j < 512; j++) {
            if (la[p * 512 + j] > la[p * 512 + af]) af = j;
            if (lq[p * 512 + j] > lq[p * 512 + aq]) aq = j;
        }
        top_same += af == aq;
    }
    CHECK(mean > 0 && mean < 0.5, "Q4_K logits differ from F32 by %g on average", mean);
    CHECK(top_same >= 7, "Q4_K top-1 agrees with F32 at %d of 8 positions", top_same);
    piso_model_free(mf);
    piso_model_free(mq);

    /* an embedding with more rows than tokens (padded checkpoints): the vocabulary is padded */
    {
        struct piso_tokenizer *tk;
        CHECK(piso_tokenizer_load(tok, &tk) == 0, "tokenizer");
        struct piso_config cfg = {.arch = "llama", .dim = 32, .hidden_dim = 64, .n_layers = 1, .n_heads = 2,
                                  .n_kv_heads = 2, .head_dim = 16, .vocab_size = 520, .max_seq_len = 64,
                                  .norm_eps = 1e-5f, .rope_theta = 10000.0f, .tied_embeddings = 1};
        struct piso_model *pm;
        CHECK(piso_model_alloc(&cfg, &pm) == 0, "alloc: %s", piso_last_error());
        char pp[512];
        snprintf(pp, sizeof pp, "%s/padded.gguf", dir);
        struct piso_gguf_export_opts o = {.type = GGML_T_Q8_0, .output_type = -1};
        CHECK(piso_gguf_export(pm, piso_tokenizer_vocab(tk), &o, pp, NULL) == 0, "export: %s", piso_last_error());
        struct piso_gguf gp;
        CHECK(piso_gguf_open(&gp, pp) == 0, "open padded");
        const struct piso_gguf_kv *tk2 = piso_gguf_find(&gp, "tokenizer.ggml.tokens");
        const struct piso_gguf_kv *ty = piso_gguf_find(&gp, "tokenizer.ggml.token_type");
        CHECK(tk2 && tk2->arr_n == 520 && ty && ty->arr_n == 520, "520 tokens");
        if (tk2 && ty && tk2->arr_n == 520) {
            char *p515 = piso_gguf_arr_str(tk2, 515);
            int32_t t515;
            memcpy(&t515, ty->arr_data + 4 * 515, 4);
            CHECK(p515 && !strcmp(p515, "[PAD515]") && t515 == 5, "padding token %s type %d", p515 ? p515 : "?", t515);
            free(p515);
        }
        piso_gguf_close(&gp);
        piso_model_free(pm);
        piso_tokenizer_free(tk);
    }

    /* refusals: an unsupported type, and no partial file */
    char bad[512];
    snprintf(bad, sizeof bad, "%s/bad.gguf", dir);
    snprintf(cmd, sizeof cmd, "%s quantize --model %s --out %s --type Q8_K --quiet 2>/dev/null", PISO_BIN, bin, bad);
    CHECK(test_run(cmd, NULL) == 1, "Q8_K (no writer) refused");
    CHECK(!piso_file_exists(bad), "no file after a refusal");
    snprintf(cmd, sizeof cmd, "%s quantize --model %s --out %s --type Q4_0 --scale best --quiet 2>/dev/null", PISO_BIN, bin, bad);
    CHECK(test_run(cmd, NULL) == 2, "bad --scale is a usage error");
    snprintf(cmd, sizeof cmd, "%s quantize --model %s --out %s --type Q6_K --mix --quiet 2>/dev/null", PISO_BIN, bin, bad);
    CHECK(test_run(cmd, NULL) == 2, "--mix without a llama-quantize mixture for the type is a usage error");
    snprintf(cmd, sizeof cmd, "%s quantize --model %s --out %s --type Q2_K_XL --quiet 2>/dev/null", PISO_BIN, bin, bad);
    CHECK(test_run(cmd, NULL) == 2 && !piso_file_exists(bad), "a type llama.cpp does not know is a usage error");

    /* fallbacks reported per tensor: Q2_K on 64-wide rows → Q4_0, ffn_down (172 columns) → F16 */
    char *js = NULL;
    snprintf(cmd, sizeof cmd, "%s quantize --model %s --out %s/q2k.gguf --type Q2_K --scale llamacpp-ref --quiet --json", PISO_BIN, bin, dir);
    CHECK(test_run(cmd, &js) == 0 && js, "%s", cmd);
    CHECK(js && strstr(js, "\"tensor\": \"blk.0.attn_q.weight\", \"columns\": 64, \"type\": \"q2_K\", \"stored\": \"q4_0\"") &&
              strstr(js, "\"tensor\": \"blk.0.ffn_down.weight\", \"columns\": 172, \"type\": \"q2_K\", \"stored\": \"f16\""),
          "per-tensor fallbacks in the JSON: %s", js ? js : "");
    free(js);

    /* weights beyond the fp16 range of llama.cpp's Q4_0 scale (d = max/8 > 65504): refused by name,
     * no file left behind; piso's scales stay finite (the sweep only keeps finite fp16 values) */
    {
        struct piso_model *mh;
        CHECK(piso_model_load(bin, tok, &mh) == 0 && piso_model_make_writable(mh) == 0, "load: %s", piso_last_error());
        mh->layers[0].wq[5] = 1e6f;
        char huge[512];
        snprintf(huge, sizeof huge, "%s/huge.gguf", dir);
        struct piso_gguf_export_opts oh = {.type = GGML_T_Q4_0, .output_type = -1, .scale = PISO_GGUF_SCALE_REF};
        CHECK(piso_gguf_export(mh, NULL, &oh, huge, NULL) != 0 && strstr(piso_last_error(), "blk.0.attn_q.weight") &&
                  strstr(piso_last_error(), "non-finite") && !piso_file_exists(huge),
              "an Inf scale refused at export: %s", piso_last_error());
        oh.scale = PISO_GGUF_SCALE_PISO;
        CHECK(piso_gguf_export(mh, NULL, &oh, huge, NULL) == 0, "piso scales stay finite: %s", piso_last_error());
        piso_model_free(mh);
    }

    /* a non-finite block scale: one Q8_0 block's fp16 d set to +Inf is refused by name */
    char inf[512];
    snprintf(inf, sizeof inf, "%s/inf.gguf", dir);
    snprintf(cmd, sizeof cmd, "%s quantize --model %s --tokenizer %s --out %s --type Q8_0 --quiet", PISO_BIN, bin, tok, inf);
    CHECK(test_run(cmd, NULL) == 0, "%s", cmd);
    struct piso_gguf gi;
    long off = -1;
    if (piso_gguf_open(&gi, inf) == 0) {
        const struct piso_gguf_tensor *t = piso_gguf_find_tensor(&gi, "blk.1.attn_k.weight");
        if (t && t->type == GGML_T_Q8_0) off = (long)((const uint8_t *)t->data - gi.map.data) + 34 * 3; /* block 3 */
        piso_gguf_close(&gi);
    }
    CHECK(off > 0, "found blk.1.attn_k.weight in Q8_0");
    FILE *f = off > 0 ? fopen(inf, "r+b") : NULL;
    if (f) {
        const uint8_t inf16[2] = {0x00, 0x7c};
        fseek(f, off, SEEK_SET), fwrite(inf16, 1, 2, f), fclose(f);
        struct piso_model *mi = NULL;
        CHECK(piso_model_load(inf, NULL, &mi) != 0 && strstr(piso_last_error(), "blk.1.attn_k.weight") &&
                  strstr(piso_last_error(), "non-finite"),
              "an Inf scale is refused by name: %s", piso_last_error());
        piso_model_free(mi);
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
    return test_finish();
}
