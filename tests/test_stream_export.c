/* Streamed export: `piso quantize` on an HF source streams by default (one block in F32, written
 * block by block through spill files); its output directory must be byte-identical to the eager
 * path's (--no-stream) for dense, GPTQ and compressed-tensors output, with act-order g_idx and
 * asymmetric codes, and for data-free RTN. A failure part-way (a NaN in block 1, after block 0
 * was written) leaves nothing: no output, no temporary directory, no spill file. The library
 * calls: a stream begun and aborted leaves nothing either. */
#include "stream_fixtures.h"
#include "piso/pipeline.h"

#include <unistd.h>

static const char *const files[] = {"config.json", "model.safetensors", "quantization.json", "quantization.safetensors",
                                    "tokenizer.json", "tokenizer_config.json", "generation_config.json"};

static void same_dirs(const char *a, const char *b, const char *what) {
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char pa[600], pb[600];
        snprintf(pa, sizeof pa, "%s/%s", a, files[i]), snprintf(pb, sizeof pb, "%s/%s", b, files[i]);
        char *x = NULL, *y = NULL;
        size_t nx = 0, ny = 0;
        int rx = piso_read_file(pa, &x, &nx), ry = piso_read_file(pb, &y, &ny);
        CHECK(rx == 0 && ry == 0, "%s: %s missing", what, files[i]);
        CHECK(rx || ry || (nx == ny && !memcmp(x, y, nx)), "%s: %s differs (%zu vs %zu bytes)", what, files[i], nx, ny);
        free(x), free(y);
    }
}

static float *poison_gate(struct piso_model *m) { return &m->layers[1].w_gate[5]; }

int main(void) {
    const char *hf = test_data("models/stories260K-hf");
    const char *calib = test_data("data/tinystories/TinyStories-valid.small30KB.txt");
    char root[256], cmd[4096], a[300], b[300];
    snprintf(root, sizeof root, "/tmp/piso_test_stream_%d", (int)getpid());
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", root, root);
    CHECK(system(cmd) == 0, "mkdir %s", root);
    snprintf(a, sizeof a, "%s/streamed", root), snprintf(b, sizeof b, "%s/eager", root);
    const char *runs[][2] = {
        {"dense int4 g32 gptq", "--calib C --format int4 --group 32 --rounding gptq --scale piso"},
        {"gptq checkpoint, act-order", "--calib C --format int4 --group 32 --rounding gptq --act-order --out-format gptq"},
        {"compressed-tensors, asym", "--calib C --format int4 --group 32 --rounding rtn --scale piso --asym "
                                     "--out-format compressed-tensors"},
        {"data-free RTN int3 channel-wise", "--format int3 --rounding rtn --scale mse-grid"},
    };
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        char opts[1024];
        const char *cp = strstr(runs[r][1], "--calib C");
        if (cp) snprintf(opts, sizeof opts, "--calib %s --nsamples 4 --seqlen 64%s", calib, cp + strlen("--calib C"));
        else snprintf(opts, sizeof opts, "%s", runs[r][1]);
        char *log = NULL;
        snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s' && %s quantize --model %s %s --out %s 2>&1 >/dev/null", a, b, PISO_BIN,
                 hf, opts, a);
        CHECK(test_run(cmd, &log) == 0, "%s: streamed run: %s", runs[r][0], log ? log : "");
        CHECK(log && strstr(log, "streaming"), "%s: the HF source must stream by default", runs[r][0]);
        free(log);
        snprintf(cmd, sizeof cmd, "%s quantize --model %s %s --out %s --no-stream --quiet >/dev/null", PISO_BIN, hf, opts, b);
        CHECK(test_run(cmd, NULL) == 0, "%s: eager run", runs[r][0]);
        same_dirs(a, b, runs[r][0]);
    }
    /* a NaN in block 1: refused after block 0 was spilled; nothing may remain */
    char poisoned[300], path[600];
    snprintf(poisoned, sizeof poisoned, "%s/poisoned", root);
    write_poisoned_copy(hf, poisoned, poison_gate);
    snprintf(path, sizeof path, "%s/tokenizer.json", hf);
    struct piso_hf_export_opts o = {.tokenizer_json = path, .source_dir = hf};
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", a, b);
    CHECK(system(cmd) == 0, "cleanup");
    snprintf(cmd, sizeof cmd, "%s quantize --model %s --calib %s --nsamples 2 --seqlen 32 --format int4 --out %s --quiet 2>&1",
             PISO_BIN, poisoned, calib, a);
    test_expect_refusal("NaN in block 1", cmd, 1, "quantize:", "non-finite", a);
    CHECK(count_entries(root) == 1, "%s: only the poisoned model may remain (%d entries)", root, count_entries(root));
    /* library: begin, one block of nothing quantized is not needed to abort */
    struct piso_hf_stream *s = NULL;
    struct piso_model *z = NULL;
    CHECK(piso_model_load_lazy(hf, NULL, &z) == 0, "lazy load");
    if (z) {
        struct piso_hf_export_opts so = {0};
        CHECK(piso_hf_stream_begin(z, a, &so, &s) == 0, "begin: %s", piso_last_error());
        CHECK(count_entries(root) == 2, "begin creates the temporary directory");
        piso_hf_stream_abort(s);
        CHECK(count_entries(root) == 1 && access(a, F_OK) != 0, "abort leaves nothing");
        /* finishing before every block was written is an error and leaves nothing */
        CHECK(piso_hf_stream_begin(z, a, &so, &s) == 0, "begin again");
        CHECK(piso_hf_stream_finish(s, z, &o) != 0 && strstr(piso_last_error(), "blocks written"), "early finish: %s",
              piso_last_error());
        CHECK(count_entries(root) == 1 && access(a, F_OK) != 0, "a failed finish leaves nothing");
    }
    piso_model_free(z);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    CHECK(system(cmd) == 0, "cleanup");
    return test_finish();
}
