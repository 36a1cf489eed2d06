/* Streamed GGUF export: `piso quantize --out FILE.gguf` on an HF source streams by default (one
 * block in F32, the header computed up front and each block's tensors written at their offsets);
 * the file must be byte-identical to the eager path's (--no-stream) with calibration (PiSO scales
 * from the Hessians, llama.cpp's reference scales weighted by the imatrix), a llama-quantize
 * mixture, an --imatrix file, and data-free. The library stream on allocated models whose
 * embeddings and head span several row panels (vocab 4200, untied head, Llama-3 rope factors;
 * Qwen2 biases, NEOX q/k row order, tied) must equal piso_gguf_export too. A failure part-way (a
 * NaN in block 1, after block 0 was written) leaves no file, and so do an abort and an early
 * finish. */
#include "stream_fixtures.h"
#include "piso/gguf.h"
#include "piso/gguf_export.h"
#include "piso/pipeline.h"
#include "piso/model.h"
#include "piso/schema.h"

#include <unistd.h>

static int same_files(const char *a, const char *b, const char *what) {
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int rx = piso_read_file(a, &x, &nx), ry = piso_read_file(b, &y, &ny);
    CHECK(rx == 0 && ry == 0, "%s: a file is missing", what);
    int same = !rx && !ry && nx == ny && !memcmp(x, y, nx);
    CHECK(rx || ry || same, "%s: the files differ (%zu vs %zu bytes)", what, nx, ny);
    free(x), free(y);
    return same;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float rnd(void) { /* xorshift, symmetric in (-1, 1) */
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (float)((double)(rng_state >> 11) / 9007199254740992.0 * 2 - 1);
}

/* Every weight of m random (norms near 1). */
static void fill(struct piso_model *m) {
    const struct piso_config *c = &m->cfg;
    for (int s = 0, l; s < piso_schema_steps(c); s++) {
        const struct piso_tensor_info *t = piso_schema_step(c, s, &l);
        float *p = (float *)piso_schema_data(m, t, l);
        if (!p || t->role == PISO_TR_ROPE_FREQS) continue;
        const int64_t n = piso_schema_numel(c, t);
        for (int64_t i = 0; i < n; i++) p[i] = piso_schema_dim(c, t->cols) ? 0.05f * rnd() : 1 + 0.1f * rnd();
    }
}

/* The library stream against piso_gguf_export on an allocated model. */
static void library_case(const char *what, const struct piso_config *cfg, const struct piso_gguf_export_opts *o,
                         const char *root) {
    struct piso_model *m = NULL;
    char a[400], b[400];
    snprintf(a, sizeof a, "%s/lib_streamed.gguf", root), snprintf(b, sizeof b, "%s/lib_eager.gguf", root);
    CHECK(piso_model_alloc(cfg, &m) == 0, "%s: alloc: %s", what, piso_last_error());
    if (!m) return;
    fill(m);
    struct piso_gguf_export_stats se, ss;
    CHECK(piso_gguf_export(m, NULL, o, b, &se) == 0, "%s: eager: %s", what, piso_last_error());
    struct piso_gguf_stream *s = NULL;
    int rc = piso_gguf_stream_begin(m, NULL, o, a, &s);
    for (int l = 0; !rc && l < cfg->n_layers; l++) rc = piso_gguf_stream_block(s, m, l, NULL, NULL);
    if (rc) piso_gguf_stream_abort(s);
    else rc = piso_gguf_stream_finish(s, m, &ss);
    CHECK(rc == 0, "%s: streamed: %s", what, piso_last_error());
    if (!rc && same_files(a, b, what)) {
        CHECK(ss.n_tensors == se.n_tensors && ss.n_fallback == se.n_fallback && ss.file_bytes == se.file_bytes &&
                  !memcmp(ss.counts, se.counts, sizeof se.counts),
              "%s: the stream's statistics differ", what);
        CHECK(ss.objective == se.objective, "%s: objective %.17g vs %.17g", what, ss.objective, se.objective);
    }
    unlink(a), unlink(b);
    piso_model_free(m);
}

static float *poison_up(struct piso_model *m) { return &m->layers[1].w_up[7]; }

int main(void) {
    const char *hf = test_data("models/stories260K-hf");
    const char *calib = test_data("data/tinystories/TinyStories-valid.small30KB.txt");
    char root[256], cmd[4096], a[300], b[300], imat[300];
    snprintf(root, sizeof root, "/tmp/piso_test_stream_gguf_%d", (int)getpid());
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", root, root);
    CHECK(system(cmd) == 0, "mkdir %s", root);
    snprintf(a, sizeof a, "%s/streamed.gguf", root), snprintf(b, sizeof b, "%s/eager.gguf", root);
    snprintf(imat, sizeof imat, "%s/imatrix.gguf", root);
    snprintf(cmd, sizeof cmd, "%s imatrix --model %s --calib %s --ctx 64 --out %s --quiet", PISO_BIN, hf, calib, imat);
    CHECK(test_run(cmd, NULL) == 0, "piso imatrix");
    const char *runs[][2] = {
        {"Q4_K, calibrated (PiSO scales with Hessians)", "--type Q4_K --calib C --ctx 64"},
        {"Q4_K_M mixture, calibrated, 3 chunks", "--type Q4_K_M --calib C --ctx 48 --chunks 3"},
        {"Q3_K, llama.cpp reference scales weighted by the calibration imatrix", "--type Q3_K --scale llamacpp-ref --calib C --ctx 64"},
        {"Q5_K_M mixture, --imatrix file, blend", "--type Q5_K_M --imatrix I --weighting blend"},
        {"Q6_K data-free, Q8_0 output", "--type Q6_K --output-type Q8_0"},
        {"F16 data-free", "--type F16"},
    };
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        char opts[1024];
        const char *cp = strstr(runs[r][1], "--calib C"), *ip = strstr(runs[r][1], "--imatrix I");
        if (cp) snprintf(opts, sizeof opts, "%.*s--calib %s%s", (int)(cp - runs[r][1]), runs[r][1], calib, cp + 9);
        else if (ip) snprintf(opts, sizeof opts, "%.*s--imatrix %s%s", (int)(ip - runs[r][1]), runs[r][1], imat, ip + 11);
        else snprintf(opts, sizeof opts, "%s", runs[r][1]);
        char *log = NULL;
        snprintf(cmd, sizeof cmd, "rm -f '%s' '%s' && %s quantize --model %s %s --out %s 2>&1 >/dev/null", a, b, PISO_BIN,
                 hf, opts, a);
        CHECK(test_run(cmd, &log) == 0, "%s: streamed run: %s", runs[r][0], log ? log : "");
        CHECK(log && strstr(log, "streaming"), "%s: the HF source must stream by default", runs[r][0]);
        free(log);
        snprintf(cmd, sizeof cmd, "%s quantize --model %s %s --out %s --no-stream --quiet 2>/dev/null", PISO_BIN, hf, opts, b);
        CHECK(test_run(cmd, &log) == 0, "%s: eager run", runs[r][0]);
        CHECK(log && !strstr(log, "streaming"), "%s: --no-stream must not stream", runs[r][0]);
        free(log);
        same_files(a, b, runs[r][0]);
    }
    piso_set_quiet(1);
    /* the library, on models with several row panels of embeddings and head (4096 rows each) */
    struct piso_config llama = {.arch = "llama", .dim = 256, .hidden_dim = 512, .n_layers = 1, .n_heads = 4,
                                .n_kv_heads = 2, .head_dim = 64, .vocab_size = 4200, .max_seq_len = 256,
                                .norm_eps = 1e-5f, .rope_theta = 500000, .rope_style = PISO_ROPE_ADJACENT,
                                .rope_llama3 = 1, .rope_factor = 32, .rope_low_freq_factor = 1,
                                .rope_high_freq_factor = 4, .rope_orig_ctx = 8192};
    struct piso_config qwen = llama;
    snprintf(qwen.arch, sizeof qwen.arch, "qwen2");
    qwen.rope_llama3 = 0, qwen.has_qkv_bias = 1, qwen.tied_embeddings = 1, qwen.vocab_size = 4099;
    struct piso_gguf_export_opts q4 = {.type = GGML_T_Q4_K, .output_type = -1};
    struct piso_gguf_export_opts q3m = {.type = GGML_T_Q3_K, .output_type = -1, .mixture = 12, .scale = PISO_GGUF_SCALE_REF};
    struct piso_gguf_export_opts q80 = {.type = GGML_T_Q8_0, .output_type = GGML_T_Q4_0};
    library_case("llama, untied, rope factors, Q4_K", &llama, &q4, root);
    library_case("llama, Q3_K_M reference scales", &llama, &q3m, root);
    library_case("qwen2, tied, biases, Q8_0 with a Q4_0 head", &qwen, &q80, root);

    /* a NaN in block 1: refused after block 0 was written; nothing may remain */
    char poisoned[300];
    snprintf(poisoned, sizeof poisoned, "%s/poisoned", root);
    write_poisoned_copy(hf, poisoned, poison_up);
    snprintf(cmd, sizeof cmd, "rm -f '%s' '%s'", a, b);
    CHECK(system(cmd) == 0, "cleanup");
    const int before = count_entries(root);
    for (int withcal = 0; withcal < 2; withcal++) {
        snprintf(cmd, sizeof cmd, "%s quantize --model %s %s%s --type Q4_K --out %s --quiet 2>&1", PISO_BIN, poisoned,
                 withcal ? "--ctx 64 --calib " : "", withcal ? calib : "", a);
        test_expect_refusal(withcal ? "NaN in block 1, calibrated" : "NaN in block 1", cmd, 1, "quantize:", "non-finite", a);
        CHECK(count_entries(root) == before, "%s: a temporary file remains (%d entries, %d before)", root,
              count_entries(root), before);
    }
    /* an output directory that does not exist: refused before any work */
    snprintf(cmd, sizeof cmd, "%s quantize --model %s --type Q4_K --out %s/missing/x.gguf --quiet 2>&1", PISO_BIN, hf, root);
    test_expect_refusal("missing directory", cmd, -1, "quantize:", "missing", a);
    /* library: a stream begun and aborted, or finished early, leaves nothing */
    struct piso_gguf_stream *s = NULL;
    struct piso_model *z = NULL;
    struct piso_gguf_export_opts o = {.type = GGML_T_Q4_K, .output_type = -1};
    CHECK(piso_model_load_lazy(hf, NULL, &z) == 0, "lazy load");
    if (z) {
        CHECK(piso_gguf_stream_begin(z, NULL, &o, a, &s) == 0, "begin: %s", piso_last_error());
        CHECK(count_entries(root) == before + 1, "begin creates the temporary file");
        piso_gguf_stream_abort(s);
        CHECK(count_entries(root) == before && access(a, F_OK) != 0, "abort leaves nothing");
        CHECK(piso_gguf_stream_begin(z, NULL, &o, a, &s) == 0, "begin again");
        CHECK(piso_gguf_stream_finish(s, z, NULL) != 0 && strstr(piso_last_error(), "blocks written"), "early finish: %s",
              piso_last_error());
        CHECK(count_entries(root) == before && access(a, F_OK) != 0, "a failed finish leaves nothing");
        struct piso_gguf_export_opts nv = {.type = GGML_T_NVFP4, .output_type = -1};
        CHECK(piso_gguf_stream_begin(z, NULL, &nv, a, &s) != 0 && strstr(piso_last_error(), "NVFP4"),
              "NVFP4 is refused: %s", piso_last_error());
        CHECK(count_entries(root) == before, "a refused begin leaves nothing");
    }
    piso_model_free(z);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    CHECK(system(cmd) == 0, "cleanup");
    return test_finish();
}
