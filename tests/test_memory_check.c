/* Up-front refusal (issue 16): when the run's memory estimate exceeds what is available, piso
 * quantize stops before any long work with the numbers, exit 1, and writes nothing. The available
 * memory is set through PISO_MEM_AVAILABLE_MB; the F32 weight size in the message is checked against
 * the checkpoint's own size (a llama2.c file is a 28-byte header plus its fp32 weights). */
#include "harness.h"
#include "piso/gguf_export.h"
#include "piso/pipeline.h"

#include <unistd.h>

/* Streaming holds one block and the float side's largest linear instead of the model (twice): the
 * estimate's terms and totals against sizes worked by hand for Llama-3.1-8B's shape, 16 × 2048
 * tokens, for RTN absmax (x-xq: H and G), GPTQ (xq-xq: H only) and unknown options (all three). */
static void streaming_estimate(void) {
    struct piso_config c = {.dim = 4096, .hidden_dim = 14336, .n_layers = 32, .n_heads = 32, .n_kv_heads = 8,
                            .head_dim = 128, .vocab_size = 128256, .tied_embeddings = 0};
    struct piso_pipeline_opts rtn = {.rounding = PISO_ROUND_RTN, .objective = PISO_OBJ_X_XQ};
    rtn.ec.q.method = PISO_SCALE_ABSMAX, rtn.ec.interleave = PISO_INTERLEAVE_LAYER;
    struct piso_pipeline_opts gptq = {.rounding = PISO_ROUND_GPTQ, .objective = PISO_OBJ_XQ_XQ};
    gptq.ec.q.method = PISO_SCALE_ABSMAX, gptq.ec.interleave = PISO_INTERLEAVE_LAYER;
    struct piso_pipeline_memory e, s, g, u;
    const int64_t tokens = 16 * 2048;
    piso_pipeline_memory_estimate(&c, 16, 2048, 0, &rtn, &e);
    piso_pipeline_memory_estimate(&c, 16, 2048, 1, &rtn, &s);
    piso_pipeline_memory_estimate(&c, 16, 2048, 1, &gptq, &g);
    piso_pipeline_memory_estimate(&c, 16, 2048, 1, NULL, &u);
    /* q, o: 4096²; k, v: 1024 × 4096; gate, up, down: 4096 × 14336; two norms of 4096 */
    const double block = 4.0 * (2.0 * 4096 * 4096 + 2.0 * 1024 * 4096 + 3.0 * 4096 * 14336 + 2 * 4096);
    const double model = 32 * block + 4.0 * (2.0 * 128256 * 4096 + 4096);
    const double linear = 4096.0 * 14336, DD = 14336.0 * 14336; /* the largest linear; down_proj's H */
    CHECK_NEAR(s.block, block, 0.5, "one F32 block");
    CHECK_NEAR(e.model, model, 0.5, "the F32 model");
    CHECK_NEAR(s.float_side, 4 * linear, 0.5, "streaming: the float side's largest linear");
    CHECK_NEAR(e.float_side, model, 0.5, "eager: the float model");
    CHECK_NEAR(s.streams, 2 * 4.0 * tokens * 4096, 0.5, "two residual streams");
    /* GPTQ's X̃–X̃ with the report from window 0 (every layer ≥ 512 inputs): the float stream holds
     * the first window only */
    CHECK_NEAR(g.streams, 4.0 * (tokens + 2048) * 4096, 0.5, "GPTQ: the quantized stream and one float window");
    /* the taps cache (3.5 GB) exceeds 2 GiB; the down_proj input cache (1.88 GB) fits the eager
     * budget (2 GiB), not the streaming one (1 GiB); o_proj's input cache (0.54 GB) fits both */
    const double keep_o = 4.0 * tokens * 4096;
    CHECK_NEAR(s.caches, keep_o, 0.5, "streaming: o_proj's input cache");
    CHECK_NEAR(e.caches, 4.0 * tokens * 14336 + keep_o, 0.5, "eager: the down_proj and o_proj input caches");
    /* GPTQ: the taps of one window (0.22 GB) fit */
    CHECK_NEAR(g.caches, 4.0 * 2048 * (3 * 4096 + 14336) + keep_o, 0.5, "GPTQ: one window's taps, o_proj's inputs");
    /* RTN absmax, x-xq: fp64 H and G and a band of 2048 rows of one window's fp32 product; solves:
     * two results (fp32 + int16) and the fp64 u = G·w of the objective, beside H and G as fp32 */
    const double band = 4.0 * 2048 * 14336;
    CHECK_NEAR(s.statistics, DD * 2 * 8 + band, 0.5, "RTN: fp64 H, G and a band of one window's product");
    CHECK_NEAR(s.solver, linear * (2 * 6 + 8), 0.5, "RTN absmax: results and u");
    /* statistics 3.41 GB > solving 2 × 0.822 + 1.17 GB */
    CHECK_NEAR(s.total, block + 4 * linear + 2 * 4.0 * tokens * 4096 + keep_o + DD * 16 + band, 1.0,
               "RTN streaming total");
    CHECK(fabs(s.total / 1e9 - 6.13) < 0.01, "RTN streaming total %.4g GB", s.total / 1e9);
    CHECK_NEAR(e.total - s.total, 2 * model - block - 4 * linear + 4.0 * tokens * 14336, 1.0,
               "eager − streaming: the rest of the two copies and the down_proj cache");
    /* GPTQ, xq-xq: H only; solves: factor and inverse (fp64), three fp32 D² buffers, two results
     * and two weight copies, beside H as fp32: larger than the accumulation */
    CHECK_NEAR(g.statistics, DD * 8 + band, 0.5, "GPTQ: fp64 H and a band of one window's product");
    CHECK_NEAR(g.solver, DD * (2 * 8 + 3 * 4) + linear * (2 * 6 + 2 * 4), 0.5, "GPTQ solver");
    CHECK_NEAR(g.total, block + 4 * linear + g.streams + g.caches + DD * 4 + g.solver, 1.0, "GPTQ streaming total");
    CHECK_NEAR(u.statistics, DD * 3 * 8 + band, 0.5, "unknown options: fp64 H, G, XᵀX");
    /* unknown options: the most any needs, here GPTQ's solver plus channel-wise PiSO's one-time
     * copy of H in its sweep's panel layout (0.82 GB, under its 1 GiB limit) */
    CHECK_NEAR(u.solver, g.solver + DD * 4, 0.5, "unknown options: solver");
    CHECK_NEAR(u.total, block + 4 * linear + 2 * 4.0 * tokens * 4096 + keep_o + DD * 3 * 4 + g.solver + DD * 4, 1.0,
               "unknown options");
    CHECK(s.total < g.total && g.total <= u.total && e.total > 64e9, "RTN %.3g GB, GPTQ %.3g GB, eager %.3g GB",
          s.total / 1e9, g.total / 1e9, e.total / 1e9);
}

/* GGUF output (piso quantize --out FILE.gguf) on Llama-3.1-8B's shape, 64 chunks of 512 tokens,
 * PiSO scales (dense Hessians): streaming holds one block, every chunk's residual stream and one
 * block's Hessians; eager the F32 model and every block's Hessians. Worked by hand. */
static void gguf_estimate(void) {
    struct piso_config c = {.dim = 4096, .hidden_dim = 14336, .n_layers = 32, .n_heads = 32, .n_kv_heads = 8,
                            .head_dim = 128, .vocab_size = 128256, .tied_embeddings = 0};
    const double block = 4.0 * (2.0 * 4096 * 4096 + 2.0 * 1024 * 4096 + 3.0 * 4096 * 14336 + 2 * 4096);
    const double model = 32 * block + 4.0 * (2.0 * 128256 * 4096 + 4096);
    const double taps = 4.0 * 512 * (3 * 4096 + 14336), sq = 3.0 * 4096 * 4096 + 14336.0 * 14336;
    struct piso_gguf_memory s, e, r;
    piso_gguf_memory_estimate(&c, 1, 64, 512, 1, &s);
    piso_gguf_memory_estimate(&c, 0, 64, 512, 1, &e);
    piso_gguf_memory_estimate(&c, 1, 64, 512, 0, &r);
    CHECK_NEAR(s.weights, block, 0.5, "GGUF streaming: one F32 block");
    CHECK_NEAR(e.weights, model, 0.5, "GGUF eager: the F32 model");
    CHECK_NEAR(s.calib, 4.0 * 64 * 512 * 4096 + taps, 0.5, "GGUF streaming: every chunk's residual stream and the taps");
    CHECK_NEAR(e.calib, 4.0 * 512 * 4096 + taps, 0.5, "GGUF eager: one chunk at a time");
    CHECK_NEAR(s.hessians, sq * 12 + 4.0 * 14336 * 14336, 0.5, "GGUF streaming: one block's Hessians, fp64 and fp32");
    CHECK_NEAR(e.hessians, 32 * sq * 12 + 4.0 * 14336 * 14336, 0.5, "GGUF eager: every block's Hessians");
    CHECK_NEAR(s.solver, 8.0 * 14336 * 14336, 0.5, "GGUF: the fp64 factor of down_proj's Hessian");
    CHECK_NEAR(r.hessians + r.solver, 0, 0.5, "GGUF llamacpp-ref scales: no Hessians");
    CHECK_NEAR(s.total, s.weights + s.calib + s.hessians + s.solver, 1.0, "GGUF streaming total");
    /* streaming: 0.87 + 1.12 + 3.26 + 1.64 GB; eager: 32.1 GB of weights and 86 GB of Hessians */
    CHECK(s.total < 8e9 && e.total > 100e9, "GGUF streaming %.3g GB, eager %.3g GB", s.total / 1e9, e.total / 1e9);
}

/* The GGUF refusal: exit 1, the numbers, no file. */
static void gguf_refusal(const char *calib) {
    const char *hf = test_data("models/stories260K-hf");
    char out[256], cmd[4096];
    snprintf(out, sizeof out, "/tmp/piso_test_memory_check_%d.gguf", (int)getpid());
    for (int eager = 0; eager < 2; eager++) {
        snprintf(cmd, sizeof cmd, "PISO_MEM_AVAILABLE_MB=1 %s quantize --model %s --calib %s --ctx 64 --type Q4_K%s --out %s --quiet 2>&1 >/dev/null",
                 PISO_BIN, hf, calib, eager ? " --no-stream" : "", out);
        char *msg = NULL;
        int rc = test_run(cmd, &msg);
        CHECK(rc == 1 && access(out, F_OK) != 0, "GGUF%s refusal: exit %d, nothing written", eager ? " eager" : "", rc);
        const char *p = msg ? strstr(msg, eager ? "(F32 weights " : "(one F32 block ") : NULL;
        CHECK(msg && strstr(msg, "not enough memory") && p && strstr(msg, "Hessians"), "GGUF message: %s", msg ? msg : "");
        free(msg);
    }
    snprintf(cmd, sizeof cmd, "PISO_MEM_AVAILABLE_MB=100000 %s quantize --model %s --calib %s --ctx 64 --type Q4_K --out %s --quiet >/dev/null 2>&1",
             PISO_BIN, hf, calib, out);
    CHECK(test_run(cmd, NULL) == 0 && access(out, F_OK) == 0, "GGUF with enough memory: written");
    unlink(out);
}

int main(void) {
    streaming_estimate();
    gguf_estimate();
    const char *model = test_data("models/stories260K/stories260K.bin");
    const char *calib = test_data("data/tinystories/TinyStories-valid.small30KB.txt");
    char out[256], cmd[4096];
    snprintf(out, sizeof out, "/tmp/piso_test_memory_check_%d", (int)getpid());
    snprintf(cmd, sizeof cmd,
             "PISO_MEM_AVAILABLE_MB=1 %s quantize --model %s --calib %s --format int4 --rounding rtn --scale piso "
             "--out %s --quiet 2>&1 >/dev/null",
             PISO_BIN, model, calib, out);
    char *msg = NULL;
    int rc = test_run(cmd, &msg);
    CHECK(rc == 1, "exit %d", rc);
    CHECK(msg && strstr(msg, "not enough memory"), "message: %s", msg ? msg : "");
    CHECK(access(out, F_OK) != 0, "%s must not exist", out);
    double total = 0, model_gb = 0, avail = 0;
    const char *p = msg ? strstr(msg, "needs about ") : NULL;
    if (p) sscanf(p, "needs about %lf GB (two F32 copies of the weights 2 × %lf GB", &total, &model_gb);
    const char *q = msg ? strstr(msg, "but ") : NULL;
    if (q) sscanf(q, "but %lf GB", &avail);
    struct stat st;
    stat(model, &st);
    double expect = (double)(st.st_size - 28) / 1e9; /* fp32 weights of the checkpoint */
    CHECK(model_gb > 0 && fabs(model_gb - expect) <= 0.01 + 0.05 * expect, "model %g GB vs file %g GB", model_gb, expect);
    CHECK(total > 2 * model_gb && avail > 0 && avail < total, "total %g GB, available %g GB", total, avail);
    free(msg);
    /* with enough memory the same run goes through */
    snprintf(cmd, sizeof cmd,
             "PISO_MEM_AVAILABLE_MB=100000 %s quantize --model %s --calib %s --format int4 --rounding rtn --scale piso "
             "--out %s --quiet >/dev/null 2>&1",
             PISO_BIN, model, calib, out);
    CHECK(test_run(cmd, NULL) == 0, "run with enough memory");
    CHECK(access(out, F_OK) == 0, "%s written", out);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
    CHECK(system(cmd) == 0, "cleanup");
    /* an HF source streams: the message counts one block twice, not the model */
    const char *hf = test_data("models/stories260K-hf");
    snprintf(cmd, sizeof cmd,
             "PISO_MEM_AVAILABLE_MB=1 %s quantize --model %s --calib %s --format int4 --rounding rtn --scale piso "
             "--out %s --quiet 2>&1 >/dev/null",
             PISO_BIN, hf, calib, out);
    msg = NULL;
    rc = test_run(cmd, &msg);
    CHECK(rc == 1 && access(out, F_OK) != 0, "streaming refusal: exit %d, nothing written", rc);
    double block_gb = 0;
    p = msg ? strstr(msg, "streaming: one F32 block ") : NULL;
    CHECK(p != NULL, "streaming message: %s", msg ? msg : "");
    if (p) sscanf(p, "streaming: one F32 block %lf GB", &block_gb);
    /* stories260K: 5 blocks of F32 in a 1 MB file with 512 × 64 embeddings and a 4848-byte header */
    double expect_block = (1044984.0 - 8 - 4848 - 4.0 * 512 * 64 - 4.0 * 64) / 5 / 1e9;
    CHECK(fabs(block_gb - expect_block) <= 0.05 * expect_block + 1e-6, "block %g GB vs %g GB", block_gb, expect_block);
    free(msg);
    gguf_refusal(calib);
    return test_finish();
}
