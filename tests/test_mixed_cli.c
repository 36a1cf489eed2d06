/* piso quantize --target-bits B --formats ...: on both stories260K checkpoints (llama2.c and HF)
 *  - the achieved average bits, recounted here from quantization.json's shapes, groups and formats,
 *    are at most the target, for the optimum and for both baselines;
 *  - the reloaded output directory gives the reported perplexity and KL divergence (an in-process
 *    evaluation of the files on disk against the CLI's in-memory numbers);
 *  - a target below the lightest or above the heaviest assignment is an error naming both numbers
 *    (computed here from the model's shapes), and nothing is written. */
#include "harness.h"
#include "piso/eval.h"
#include "piso/gguf.h"
#include "piso/mixed.h"
#include "piso/model.h"
#include "piso/schema.h"
#include "piso/tokenizer.h"

#include <cjson/cJSON.h>
#include <unistd.h>

static char *read_text(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) free(b), b = NULL;
    if (b) b[n] = 0;
    fclose(f);
    if (len) *len = (size_t)n;
    return b;
}

static double num(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItem(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* Bits of an integer format stored channel-wise or in groups with FP32 scales, counted from the
 * layer's shape: N·D·b + N·ceil(D/g)·32. */
static double int_bits(const char *format, double N, double D, double group) {
    int b = atoi(format + 3);
    double g = group > 0 && group < D ? group : D;
    return N * D * b + N * ceil(D / g) * 32;
}

/* Σ over the linear layers of int_bits for one format, divided by the weights. */
static double uniform_bits(const struct piso_config *c, int b) {
    double bits = 0, n = 0;
    char f[8];
    snprintf(f, sizeof f, "int%d", b);
    for (int l = 0; l < c->n_layers; l++)
        for (int k = 0; k < PISO_LIN_COUNT; k++) {
            const struct piso_tensor_info *t = piso_schema_linear((enum piso_linear)k);
            double N = (double)piso_schema_dim(c, t->rows), D = (double)piso_schema_dim(c, t->cols);
            bits += int_bits(f, N, D, 0), n += N * D;
        }
    return bits / n;
}

static void run_model(const char *model, const char *calib, const char *evaltext, const char *tag) {
    char out[256], cmd[2048];
    snprintf(out, sizeof out, "/tmp/piso_test_mixed_%d_%s", (int)getpid(), tag);
    const double target = 3.0;
    snprintf(cmd, sizeof cmd,
             "rm -rf %s && %s quantize --model %s --calib %s --formats int2,int3,int4g32,int4 --target-bits %g "
             "--rounding rtn --scale piso --nsamples 4 --seqlen 128 --sensitivity-windows 2 --out %s --eval %s --json "
             "--quiet",
             out, PISO_BIN, model, calib, target, out, evaltext);
    char *stdout_text = NULL;
    int rc = test_run(cmd, &stdout_text);
    CHECK(rc == 0, "%s: mixed run failed (%d)", tag, rc);
    cJSON *j = cJSON_Parse(stdout_text ? stdout_text : "");
    free(stdout_text);
    CHECK(j != NULL, "%s: --json output does not parse", tag);
    if (rc || !j) {
        cJSON_Delete(j);
        return;
    }
    const cJSON *mp = cJSON_GetObjectItem(j, "mixed_precision");
    const cJSON *as = cJSON_GetObjectItem(mp, "assignments");
    const char *names[3] = {"optimal", "uniform", "kl-greedy"};
    double pred[3];
    for (int k = 0; k < 3; k++) {
        const cJSON *a = cJSON_GetObjectItem(as, names[k]);
        pred[k] = num(a, "predicted_loss");
        CHECK(num(a, "bits_per_weight") <= target, "%s: %s at %.6f bits > target %g", tag, names[k],
              num(a, "bits_per_weight"), target);
    }
    CHECK(pred[0] <= pred[1] && pred[0] <= pred[2], "%s: optimum %.6g above a baseline (%.6g, %.6g)", tag, pred[0],
          pred[1], pred[2]);

    /* recount the bits from quantization.json's per-layer shapes, groups and formats */
    char qpath[512];
    snprintf(qpath, sizeof qpath, "%s/quantization.json", out);
    char *qtext = read_text(qpath, NULL);
    cJSON *q = cJSON_Parse(qtext ? qtext : "");
    free(qtext);
    CHECK(q != NULL, "%s: quantization.json", tag);
    const cJSON *layers = cJSON_GetObjectItem(q, "layers"), *L;
    double bits = 0, weights = 0;
    int n_layers = 0, n_formats[4] = {0};
    cJSON_ArrayForEach(L, layers) {
        const cJSON *shape = cJSON_GetObjectItem(L, "shape");
        const char *f = cJSON_GetStringValue(cJSON_GetObjectItem(L, "format"));
        double N = cJSON_GetArrayItem(shape, 0)->valuedouble, D = cJSON_GetArrayItem(shape, 1)->valuedouble;
        double g = f && strchr(f, 'g') ? atof(strchr(f, 'g') + 1) : 0;
        CHECK(f && !strncmp(f, "int", 3), "%s: layer %s format %s", tag, L->string, f ? f : "(none)");
        if (!f) continue;
        double b = int_bits(f, N, D, g);
        CHECK(b == num(L, "bits"), "%s: %s (%s): %.0f bits recounted, %.0f recorded", tag, L->string, f, b,
              num(L, "bits"));
        CHECK(num(L, "group") == (g < D ? g : 0), "%s: %s group %g for %s", tag, L->string, num(L, "group"), f);
        bits += b, weights += N * D, n_layers++;
        n_formats[!strcmp(f, "int2") ? 0 : !strcmp(f, "int3") ? 1 : !strcmp(f, "int4g32") ? 2 : 3]++;
    }
    CHECK(n_layers == 35, "%s: %d layers in quantization.json", tag, n_layers);
    CHECK(bits / weights <= target, "%s: recounted %.6f bits per weight > %g", tag, bits / weights, target);
    CHECK(fabs(bits / weights - num(cJSON_GetObjectItem(as, "optimal"), "bits_per_weight")) < 1e-12,
          "%s: recounted %.8f vs reported %.8f", tag, bits / weights, num(cJSON_GetObjectItem(as, "optimal"), "bits_per_weight"));
    CHECK((n_formats[0] > 0) + (n_formats[1] > 0) + (n_formats[2] > 0) + (n_formats[3] > 0) >= 2,
          "%s: a mixed assignment uses at least two formats (%d %d %d %d)", tag, n_formats[0], n_formats[1],
          n_formats[2], n_formats[3]);
    cJSON_Delete(q);

    /* the same run on one thread writes the same codes, scales and weights (so the same assignment) */
    if (!strcmp(tag, "llama2c")) {
        char cmd1[2300];
        snprintf(cmd1, sizeof cmd1,
                 "rm -rf %s_1 && OMP_NUM_THREADS=1 %s quantize --model %s --calib %s --formats int2,int3,int4g32,int4 "
                 "--target-bits %g --rounding rtn --scale piso --nsamples 4 --seqlen 128 --sensitivity-windows 2 --out %s_1 "
                 "--quiet && cmp %s/quantization.safetensors %s_1/quantization.safetensors && cmp %s/model.safetensors "
                 "%s_1/model.safetensors && rm -rf %s_1",
                 out, PISO_BIN, model, calib, target, out, out, out, out, out, out);
        CHECK(test_run(cmd1, NULL) == 0, "%s: one thread gives different files", tag);
    }

    /* reload: the directory on disk gives the reported perplexity and KL divergence */
    struct piso_model *mq = NULL, *mf = NULL;
    size_t len = 0;
    char *text = read_text(evaltext, &len);
    CHECK(text && piso_model_load(out, NULL, &mq) == 0 && piso_model_load(model, NULL, &mf) == 0, "%s: reload: %s",
          tag, piso_last_error());
    if (text && mq && mf) {
        struct piso_ppl_result r;
        CHECK(piso_perplexity(mq, text, len, 0, &r) == 0, "perplexity");
        const double reported = num(j, "perplexity_after");
        CHECK(fabs(r.ppl - reported) <= 1e-4 * reported, "%s: reloaded perplexity %.8g vs reported %.8g", tag, r.ppl,
              reported);
        int ctx = 0, *tokens = NULL, n_chunks = 0;
        struct piso_kl_ref kr;
        double kl = -1;
        CHECK(piso_kl_text_windows(mf, text, len, &ctx, &tokens, &n_chunks) == 0 &&
                  piso_kl_ref_init(&kr, mf, tokens, n_chunks, ctx, ctx / 2) == 0 && piso_kl_measure(&kr, mq, &kl) == 0,
              "%s: KL: %s", tag, piso_last_error());
        const double kl_rep = num(mp, "kld_after");
        CHECK(fabs(kl - kl_rep) <= 1e-4 * kl_rep + 1e-9, "%s: reloaded KL %.8g vs reported %.8g", tag, kl, kl_rep);
        CHECK(kl > 0, "%s: KL of a quantized model %.3g", tag, kl);
        piso_kl_ref_free(&kr);
        free(tokens);

        /* the out-of-range targets, with the bounds computed from the shapes */
        const double lo = uniform_bits(&mf->cfg, 2), hi = uniform_bits(&mf->cfg, 8);
        char *err = NULL, num_lo[32], num_hi[32], out2[300];
        snprintf(num_lo, sizeof num_lo, "%.4f", lo), snprintf(num_hi, sizeof num_hi, "%.4f", hi);
        snprintf(out2, sizeof out2, "%s_bad", out);
        const struct {
            double target;
            const char *formats, *bound, *words;
        } bad[2] = {{1.75, "int2,int4", num_lo, "below the smallest"}, {8.75, "int3,int8", num_hi, "above the largest"}};
        for (int b = 0; b < 2; b++) {
            snprintf(cmd, sizeof cmd,
                     "%s quantize --model %s --calib %s --formats %s --target-bits %g --out %s 2>&1 >/dev/null", PISO_BIN,
                     model, calib, bad[b].formats, bad[b].target, out2);
            rc = test_run(cmd, &err);
            char tnum[16];
            snprintf(tnum, sizeof tnum, "%g", bad[b].target);
            CHECK(rc == 1 && err && strstr(err, bad[b].words) && strstr(err, bad[b].bound) && strstr(err, tnum),
                  "%s: target %g: rc %d, message '%s' (want '%s', %s and %s)", tag, bad[b].target, rc, err ? err : "",
                  bad[b].words, tnum, bad[b].bound);
            CHECK(access(out2, F_OK) != 0, "%s: %s written after an error", tag, out2);
            free(err), err = NULL;
        }
    }
    piso_model_free(mq), piso_model_free(mf);
    free(text);
    cJSON_Delete(j);
    snprintf(cmd, sizeof cmd, "rm -rf %s", out);
    test_run(cmd, NULL);
}

static void usage_errors(void) {
    const char *cases[][2] = {
        {"--formats int2,int4 --out /tmp/x", "--target-bits"},
        {"--target-bits 3 --out /tmp/x", "--formats"},
        {"--format int3 --formats int2,int4 --target-bits 3 --out /tmp/x", "--format"},
        {"--formats int2,int4 --target-bits 3 --group 32 --out /tmp/x", "--group"},
        {"--format int3 --baseline uniform --out /tmp/x", "--baseline"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char cmd[1024], *err = NULL;
        snprintf(cmd, sizeof cmd, "%s quantize --model m --calib c %s 2>&1 >/dev/null", PISO_BIN, cases[i][0]);
        int rc = test_run(cmd, &err);
        CHECK(rc == 2 && err && strstr(err, cases[i][1]), "'%s': rc %d, '%s'", cases[i][0], rc, err ? err : "");
        free(err);
    }
}

/* GGUF: the blk.* linear weights of the written file, recounted from its tensor table (bytes as
 * stored), average at most the target and carry the types the JSON reports; out-of-range targets
 * name the bound computed here from the shapes (rows of 64: Q4_0 = 4.5 bits; 172: F16, as no
 * 32-block divides them). */
static void run_gguf(const char *model, const char *calib) {
    char out[256], cmd[2048], *text = NULL;
    snprintf(out, sizeof out, "/tmp/piso_test_mixed_%d.gguf", (int)getpid());
    const double target = 8.0;
    snprintf(cmd, sizeof cmd,
             "%s quantize --model %s --calib %s --ctx 128 --chunks 4 --sensitivity-windows 2 --types Q4_0,Q5_0,Q8_0,Q4_K "
             "--target-bpw %g --out %s --json --quiet",
             PISO_BIN, model, calib, target, out);
    int rc = test_run(cmd, &text);
    cJSON *j = cJSON_Parse(text ? text : "");
    free(text);
    CHECK(rc == 0 && j, "gguf mixed run: rc %d", rc);
    struct piso_gguf g;
    if (rc == 0 && j && piso_gguf_open(&g, out) == 0) {
        const cJSON *layers = cJSON_GetObjectItem(j, "layers"), *L;
        double bits = 0, weights = 0, bits_lo = 0, bits_hi = 0;
        int n = 0;
        cJSON_ArrayForEach(L, layers) {
            const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(L, "name"));
            const struct piso_gguf_tensor *t = name ? piso_gguf_find_tensor(&g, name) : NULL;
            CHECK(t != NULL, "tensor %s not in the file", name ? name : "?");
            if (!t) continue;
            const char *stored = cJSON_GetStringValue(cJSON_GetObjectItem(L, "stored"));
            CHECK(stored && !strcmp(stored, piso_ggml_traits(t->type)->name), "%s: stored %s, file %s", name,
                  stored ? stored : "?", piso_ggml_traits(t->type)->name);
            const double numel = (double)t->ne[0] * (double)t->ne[1];
            CHECK((double)t->nbytes * 8 == num(L, "bits"), "%s: %zu bytes, %g bits reported", name, t->nbytes, num(L, "bits"));
            bits += (double)t->nbytes * 8, weights += numel, n++;
            bits_lo += numel * (t->ne[0] % 32 ? 16 : 4.5), bits_hi += numel * (t->ne[0] % 32 ? 16 : 8.5);
        }
        CHECK(n == 35, "%d linear weights in the JSON", n);
        CHECK(bits / weights <= target, "GGUF: %.6f bits per weight in the file > %g", bits / weights, target);
        piso_gguf_close(&g);
        char num_lo[32], num_hi[32];
        snprintf(num_lo, sizeof num_lo, "%.4f", bits_lo / weights), snprintf(num_hi, sizeof num_hi, "%.4f", bits_hi / weights);
        const struct {
            double target;
            const char *bound, *words;
        } bad[2] = {{6.5, num_lo, "below the smallest"}, {10.5, num_hi, "above the largest"}};
        for (int b = 0; b < 2; b++) {
            char *err = NULL, bad_out[300];
            snprintf(bad_out, sizeof bad_out, "%s.bad.gguf", out);
            snprintf(cmd, sizeof cmd,
                     "%s quantize --model %s --calib %s --types Q4_0,Q5_0,Q8_0 --target-bpw %g --out %s 2>&1 >/dev/null",
                     PISO_BIN, model, calib, bad[b].target, bad_out);
            rc = test_run(cmd, &err);
            CHECK(rc == 1 && err && strstr(err, bad[b].words) && strstr(err, bad[b].bound), "GGUF target %g: rc %d, '%s' (want %s)",
                  bad[b].target, rc, err ? err : "", bad[b].bound);
            CHECK(access(bad_out, F_OK) != 0, "%s written after an error", bad_out);
            free(err);
        }
    }
    cJSON_Delete(j);
    unlink(out);
}

int main(void) {
    piso_set_quiet(1);
    usage_errors();
    const char *calib = test_data("data/tinystories/TinyStories-valid.small30KB.txt");
    const char *evaltext = test_data("data/tinystories/tinystories_sample.cs336.txt");
    run_model(test_data("models/stories260K/stories260K.bin"), calib, evaltext, "llama2c");
    run_model(test_data("models/stories260K-hf"), calib, evaltext, "hf");
    run_gguf(test_data("models/stories260K/stories260K.bin"), calib);
    return test_finish();
}
