/* Activation quantization (piso/act_quant.h): (1) every format against values worked out by hand
 * (int sym/asym per token with round-half-even, e4m3/e2m1 per token, MX blocks with power-of-two
 * scales, saturation and a short last block, --act-group); (2) the integer codes reproduce the
 * fake-quantized row and stay in the documented range; (3) bad names and groups are errors;
 * (4) on stories260K: a quantized output directory records its activation format and `piso
 * perplexity` on it equals the quantize run's own number; --calib-act-quant really calibrates on
 * quantized inputs (the layer error the pipeline reports equals ‖Xw − X̃ŵ‖²/‖Xw‖² recomputed here
 * with X̃ = a per-token int4 quantizer written in this file). */
#include "harness.h"
#include "piso/act_quant.h"
#include "piso/pipeline.h"

#include <cjson/cJSON.h>
#include <unistd.h>

static void expect_row(const char *fmt, int group, const float *x, const float *want, int d) {
    struct piso_act_format f;
    if (piso_act_format_init(&f, fmt, group)) {
        CHECK(0, "%s: %s", fmt, piso_last_error());
        return;
    }
    float y[128];
    memcpy(y, x, sizeof(float) * (size_t)d);
    piso_act_quantize_rows(&f, y, 1, d);
    for (int i = 0; i < d; i++)
        CHECK(y[i] == want[i], "%s (group %d) element %d: %.9g -> %.9g, want %.9g", fmt, group, i, x[i], y[i], want[i]);
}

static void test_closed_forms(void) {
    /* int4: max|x| = 7 gives s = 1; -2.5 and 3.5 are ties (to even: -2, 4) */
    const float a[] = {7, -2.5f, 0.4f, 3.5f, -7, 1.5f};
    const float a4[] = {7, -2, 0, 4, -7, 2};
    expect_row("int4", 0, a, a4, 6);
    /* int8: s = 127/127; -63.5 -> -64 (even), 0.5 -> 0 */
    const float b[] = {127, -63.5f, 0.5f, 1.49f};
    const float b8[] = {127, -64, 0, 1};
    expect_row("int8", 0, b, b8, 4);
    /* the same row doubled: s = 2, every value doubles */
    const float b2[] = {254, -127, 1, 2.98f}, b28[] = {254, -128, 0, 2};
    expect_row("int8", 0, b2, b28, 4);
    /* int4-asym: range [-3, 12], s = 15/15 = 1, z = 3: codes 0, 15, round(1.5)+3 = 5, 3 */
    const float c[] = {-3, 12, 1.5f, 0.2f}, c4[] = {-3, 12, 2, 0};
    expect_row("int4-asym", 0, c, c4, 4);
    /* positive row: the range starts at 0 (z = 0), 0.5 -> 0 */
    const float c2[] = {0.5f, 15, 7.5f}, c24[] = {0, 15, 8};
    expect_row("int4-asym", 0, c2, c24, 3);
    /* e4m3 per token: max 448 -> s = 1; 17 ties 16/18 -> 16 (even mantissa), -100 ties -96/-104 -> -96,
     * 0.001 -> the smallest subnormal 2^-9 */
    const float d[] = {448, 17, -100, 0.001f}, d8[] = {448, 16, -96, 0.001953125f};
    expect_row("e4m3", 0, d, d8, 4);
    /* max 896 -> s = 2: 34/2 = 17 -> 16 -> 32 */
    const float d2[] = {896, 34}, d28[] = {896, 32};
    expect_row("e4m3", 0, d2, d28, 2);
    /* e2m1: max 6 -> s = 1; 2.5 -> 2, -0.75 -> -1 (code 2 is even), 0.2 -> 0, 5 -> 4 */
    const float e[] = {6, 2.5f, -0.75f, 0.2f, 5}, e1[] = {6, 2, -1, 0, 4};
    expect_row("e2m1", 0, e, e1, 5);
    /* --act-group 2 with int4: groups [7, 1] (s = 1) and [0.875, -0.3125] (s = 0.125: -2.5 -> -2) */
    const float g[] = {7, 1, 0.875f, -0.3125f}, g4[] = {7, 1, 0.875f, -0.25f};
    expect_row("int4", 2, g, g4, 4);
    /* a zero row stays zero */
    const float z[] = {0, 0, 0}, zz[] = {0, 0, 0};
    expect_row("int8-asym", 0, z, zz, 3);
    expect_row("e2m1", 0, z, zz, 3);
    expect_row("mxfp4", 0, z, zz, 3);

    /* MX, width 70: blocks [0, 32), [32, 64) and a short one [64, 70) */
    float x[70] = {0}, w[70] = {0};
    /* mxfp4 block 0: max 5 -> 2^(2 - 2) = 1: 5 -> 4 (tie, even), 2.5 -> 2, -0.75 -> -1, 0.2 -> 0 */
    x[0] = 5, x[1] = 2.5f, x[2] = -0.75f, x[3] = 0.2f;
    w[0] = 4, w[1] = 2, w[2] = -1, w[3] = 0;
    /* block 1: max 12 -> 2^(3 - 2) = 2: 12 -> 6·2, 7 -> 3.5 ties 3/4 -> 4 -> 8 */
    x[32] = 12, x[33] = 7;
    w[32] = 12, w[33] = 8;
    /* block 2 (6 wide): max 7.9 -> 2^(2 - 2) = 1, saturates at 6; 1.25 ties 1/1.5 -> 1 */
    x[64] = 7.9f, x[65] = 1.25f;
    w[64] = 6, w[65] = 1;
    expect_row("mxfp4", 0, x, w, 70);
    /* mxint8: max 255 -> 2^(7 - 6) = 2: 255/2 = 127.5 -> 128, saturates at 127 -> 254; 100.5 -> 50.25 -> 50 */
    float y[32] = {255, 100.5f, -3}, yw[32] = {254, 100, -4};
    expect_row("mxint8", 0, y, yw, 32);
    /* mxfp8_e4m3: max 448 -> 2^(8 - 8) = 1; 17 -> 16 */
    float u[32] = {448, 17}, uw[32] = {448, 16};
    expect_row("mxfp8_e4m3", 0, u, uw, 32);

    /* several rows at once: each row has its own scale (rows in parallel, same result) */
    enum { R = 300, W = 64 };
    float *m = malloc(sizeof(float) * R * W), *one = malloc(sizeof(float) * W);
    for (int i = 0; i < R * W; i++) m[i] = (float)sin(0.37 * i) * (float)(1 + i / W);
    struct piso_act_format f;
    piso_act_format_init(&f, "int4", 0);
    float *copy = malloc(sizeof(float) * R * W);
    memcpy(copy, m, sizeof(float) * R * W);
    piso_act_quantize_rows(&f, m, R, W);
    int same = 1;
    for (int r = 0; r < R; r++) {
        memcpy(one, copy + r * W, sizeof(float) * W);
        piso_act_quantize_rows(&f, one, 1, W);
        same &= memcmp(one, m + r * W, sizeof(float) * W) == 0;
    }
    CHECK(same, "quantizing %d rows at once differs from one row at a time", R);
    free(m), free(one), free(copy);
}

static void test_codes(void) {
    const char *fmts[] = {"int8", "int4", "int8-asym", "int4-asym", "int4", "mxint8"};
    const int groups[] = {0, 0, 0, 0, 16, 0};
    float x[80];
    for (int i = 0; i < 80; i++) x[i] = (float)(sin(1.3 * i) * (1 + (i % 7)) + (i == 5 ? 9 : 0));
    for (int k = 0; k < 6; k++) {
        struct piso_act_format f;
        CHECK(piso_act_format_init(&f, fmts[k], groups[k]) == 0, "%s", fmts[k]);
        int lo, hi;
        CHECK(piso_act_code_range(&f, &lo, &hi) == 0, "%s range", fmts[k]);
        int64_t ng = piso_act_groups(&f, 80);
        int32_t codes[80], zp[8];
        float sc[8], y[80];
        CHECK(ng == (groups[k] ? 5 : f.kind == PISO_ACT_MX ? 3 : 1), "%s: %lld groups", fmts[k], (long long)ng);
        CHECK(piso_act_quantize_row_codes(&f, x, 80, codes, sc, zp) == 0, "%s codes", fmts[k]);
        memcpy(y, x, sizeof y);
        piso_act_quantize_rows(&f, y, 1, 80);
        int ok = 1, in_range = 1, reach = 0;
        int64_t G = f.group > 0 ? f.group : 80;
        for (int i = 0; i < 80; i++) {
            int g = (int)(i / G);
            ok &= sc[g] * (float)(codes[i] - zp[g]) == y[i];
            in_range &= codes[i] >= lo && codes[i] <= hi;
            reach |= codes[i] == hi || codes[i] == lo;
        }
        CHECK(ok, "%s: scale * (code - zero) differs from the fake-quantized row", fmts[k]);
        /* the per-token max reaches the end of the range (MX's floor(log2) scale need not) */
        CHECK(in_range && (reach || f.kind == PISO_ACT_MX), "%s: codes outside [%d, %d] or the range is never reached", fmts[k], lo, hi);
    }
    struct piso_act_format f;
    int lo, hi;
    piso_act_format_init(&f, "int8", 0), piso_act_code_range(&f, &lo, &hi);
    CHECK(lo == -127 && hi == 127, "int8 range %d..%d", lo, hi);
    piso_act_format_init(&f, "int4-asym", 0), piso_act_code_range(&f, &lo, &hi);
    CHECK(lo == 0 && hi == 15, "int4-asym range %d..%d", lo, hi);
    piso_act_format_init(&f, "mxint8", 0), piso_act_code_range(&f, &lo, &hi);
    CHECK(lo == -128 && hi == 127, "mxint8 range %d..%d", lo, hi);
    piso_act_format_init(&f, "e4m3", 0);
    CHECK(piso_act_code_range(&f, &lo, &hi) != 0, "e4m3 has no integer codes");
}

static void test_errors(void) {
    struct piso_act_format f;
    CHECK(piso_act_format_init(&f, "int9", 0) != 0 && strstr(piso_last_error(), "int9"), "int9: %s", piso_last_error());
    CHECK(piso_act_format_init(&f, "fp16", 0) != 0 && strstr(piso_last_error(), "one of"), "fp16");
    CHECK(piso_act_format_init(&f, "int4-sym", 0) != 0, "int4-sym");
    CHECK(piso_act_format_init(&f, "nvfp4", 0) != 0, "nvfp4");
    CHECK(piso_act_format_init(&f, "mxfp4", 16) != 0 && strstr(piso_last_error(), "32"), "mxfp4 group 16");
    struct piso_config c = {.dim = 64, .hidden_dim = 172, .n_heads = 8, .n_kv_heads = 4, .head_dim = 8};
    struct piso_act_quant q;
    CHECK(piso_act_quant_init(&q, &c, "int4", 32, NULL) != 0 && strstr(piso_last_error(), "172") &&
              strstr(piso_last_error(), "down_proj"),
          "group 32 on a 172-wide down_proj input: %s", piso_last_error());
    CHECK(piso_act_quant_init(&q, &c, "int4", 4, "int8") == 0 && q.act.group == 4 && q.kv.group == 8,
          "group 4 divides 64 and 172; KV per head: %s", piso_last_error());
    CHECK(piso_act_quant_init(&q, &c, NULL, 4, NULL) != 0, "a group without a format");
    CHECK(piso_act_quant_init(&q, &c, "mxfp4", 0, NULL) == 0 && q.act.group == 32, "mxfp4 on 172: short last block");
}

/* ---- stories260K ------------------------------------------------------------------------------ */
static char tmpdir[256];

static double json_num(const char *text, const char *key) {
    const char *b = text ? strchr(text, '{') : NULL;
    cJSON *j = b ? cJSON_Parse(b) : NULL;
    double v = j ? cJSON_GetNumberValue(cJSON_GetObjectItem(j, key)) : NAN;
    cJSON_Delete(j);
    return v;
}

static void test_reload(const char *model, const char *evaltext) {
    char out[400], cmd[2000], *o = NULL;
    snprintf(out, sizeof out, "%s/w4a8", tmpdir);
    snprintf(cmd, sizeof cmd,
             "%s quantize --model %s --format int4 --rounding rtn --scale absmax --act-format int8-asym --kv-format "
             "e4m3 --out %s --eval %s --json --quiet",
             PISO_BIN, model, out, evaltext);
    CHECK(test_run(cmd, &o) == 0, "quantize with --act-format: %s", o ? o : "");
    double after = json_num(o, "perplexity_after"), before = json_num(o, "perplexity_before");
    free(o);
    /* perplexity on the output applies the recorded formats: the same number */
    snprintf(cmd, sizeof cmd, "%s perplexity --model %s --text %s --json --quiet", PISO_BIN, out, evaltext);
    o = NULL;
    CHECK(test_run(cmd, &o) == 0, "perplexity on the output: %s", o ? o : "");
    double reload = json_num(o, "ppl");
    CHECK(fabs(reload - after) <= 1e-5 * after, "reloaded %.8g vs quantize's %.8g", reload, after);
    CHECK(o && strstr(o, "\"int8-asym\"") && strstr(o, "\"e4m3\""), "perplexity reports the formats: %s", o ? o : "");
    free(o);
    /* explicitly none: the weights alone give a different number */
    snprintf(cmd, sizeof cmd, "%s perplexity --model %s --text %s --act-format none --kv-format none --json --quiet",
             PISO_BIN, out, evaltext);
    o = NULL;
    CHECK(test_run(cmd, &o) == 0, "perplexity --act-format none");
    double weights_only = json_num(o, "ppl");
    CHECK(weights_only != after && weights_only > before, "weights only %.8g vs with activations %.8g", weights_only,
          after);
    free(o);
    /* a damaged record is an error naming the file and the field, not a silent float run */
    char qj[500];
    snprintf(qj, sizeof qj, "%s/quantization.json", out);
    FILE *f = fopen(qj, "w");
    if (f) fputs("{\"activations\": {\"format\": \"int9\", \"group\": 0}}", f), fclose(f);
    snprintf(cmd, sizeof cmd, "%s perplexity --model %s --text %s --quiet 2>&1", PISO_BIN, out, evaltext);
    o = NULL;
    int rc = test_run(cmd, &o);
    CHECK(rc == 1 && o && strstr(o, "quantization.json") && strstr(o, "activations") && strstr(o, "int9"),
          "damaged quantization.json: rc %d, %s", rc, o ? o : "");
    free(o);
    /* direct: float weights with quantized activations differ from the float model */
    snprintf(cmd, sizeof cmd, "%s perplexity --model %s --text %s --act-format int4 --json --quiet", PISO_BIN, model,
             evaltext);
    o = NULL;
    CHECK(test_run(cmd, &o) == 0, "perplexity --act-format int4");
    double a4 = json_num(o, "ppl");
    CHECK(a4 > before * 1.05, "A4 on the float model: %.6g vs float %.6g", a4, before);
    free(o);
    /* bad input: clear errors, nothing written */
    char bad[400];
    snprintf(bad, sizeof bad, "%s/bad", tmpdir);
    const char *cases[][2] = {{"--act-format int9", "--act-format"},
                              {"--act-format int4 --act-group 32", "172"},
                              {"--act-group 4", "--act-group"},
                              {"--kv-format fp16", "--kv-format"}};
    for (int k = 0; k < 4; k++) {
        snprintf(cmd, sizeof cmd, "%s quantize --model %s --format int4 --rounding rtn --scale absmax %s --out %s 2>&1",
                 PISO_BIN, model, cases[k][0], bad);
        test_expect_refusal(cases[k][0], cmd, -1, NULL, cases[k][1], bad);
    }
}

/* The reference quantizer of this test: symmetric int4, one scale per row (x/s rounded half to even). */
static void ref_int4_rows(float *x, int n, int d) {
    for (int i = 0; i < n; i++) {
        float *r = x + (size_t)i * d, amax = 0;
        for (int j = 0; j < d; j++) amax = fmaxf(amax, fabsf(r[j]));
        float s = amax / 7.0f;
        for (int j = 0; j < d; j++) r[j] = s > 0 ? s * nearbyintf(r[j] / s) : 0.0f;
    }
}

/* ‖Xw − X̃ŵ‖² / ‖Xw‖² over all rows of W [N, D] (fp64). */
static double rel_err(const float *X, const float *Xt, int T, int D, const float *W, const float *Wq, int N) {
    double num = 0, den = 0;
    for (int t = 0; t < T; t++)
        for (int o = 0; o < N; o++) {
            double y = 0, yq = 0;
            for (int j = 0; j < D; j++)
                y += (double)X[(size_t)t * D + j] * W[(size_t)o * D + j],
                    yq += (double)Xt[(size_t)t * D + j] * Wq[(size_t)o * D + j];
            num += (y - yq) * (y - yq), den += y * y;
        }
    return num / den;
}

static void test_calib_act_quant(const char *model, const char *calib_text) {
    struct piso_model *mf = NULL, *mq = NULL;
    if (piso_model_load(model, NULL, &mf) || piso_model_load(model, NULL, &mq) || piso_model_make_writable(mq)) {
        CHECK(0, "load: %s", piso_last_error());
        piso_model_free(mf), piso_model_free(mq);
        return;
    }
    struct piso_calib cal;
    CHECK(piso_calib_load(mf->tok, calib_text, 2, 64, mf->cfg.max_seq_len, 7, &cal) == 0, "calib: %s",
          piso_last_error());
    int D = mf->cfg.dim, T = cal.nsamples * cal.seqlen, N = D; /* q_proj [64, 64] */
    /* X: the float input of block 0's q/k/v (the embeddings are float in both models) */
    float *X = malloc(sizeof(float) * T * D), *Xt = malloc(sizeof(float) * T * D), *r = malloc(sizeof(float) * cal.seqlen * D);
    for (int w = 0; w < cal.nsamples; w++) {
        struct piso_block_taps taps = {X + (size_t)w * cal.seqlen * D, NULL, NULL, NULL};
        piso_embed(mf, cal.tokens + w * cal.seqlen, cal.seqlen, r);
        CHECK(piso_block_forward(mf, 0, r, cal.seqlen, &taps) == 0, "float block");
    }
    float *Wf = malloc(sizeof(float) * N * D);
    memcpy(Wf, mf->layers[0].wq, sizeof(float) * N * D);
    struct piso_pipeline_opts po;
    memset(&po, 0, sizeof po);
    piso_ec_opts_default(&po.ec);
    piso_grid_init(&po.ec.q.grid, "int4", 0);
    po.ec.q.method = PISO_SCALE_PISO, po.ec.q.allow_negative = 1;
    po.rounding = PISO_ROUND_RTN, po.objective = PISO_OBJ_X_XQ;
    for (int with = 0; with < 2; with++) {
        struct piso_model *m2 = NULL;
        if (piso_model_load(model, NULL, &m2) || piso_model_make_writable(m2)) break;
        if (with) CHECK(piso_act_quant_init(&m2->act, &m2->cfg, "int4", 0, NULL) == 0, "act init");
        struct piso_pipeline_result res;
        CHECK(piso_quantize_model(m2, mf, &cal, &po, &res) == 0, "pipeline: %s", piso_last_error());
        memcpy(Xt, X, sizeof(float) * T * D);
        if (with) ref_int4_rows(Xt, T, D);
        double want = rel_err(X, Xt, T, D, Wf, m2->layers[0].wq, N);
        double got = res.n_layers > 0 ? res.layers[0].rel_err : NAN;
        CHECK(res.n_layers > 0 && strstr(res.layers[0].name, "layers.0.self_attn.q_proj"), "first report");
        CHECK(fabs(got - want) <= 1e-3 * want, "%s: q_proj rel. error %.8g, recomputed %.8g",
              with ? "--calib-act-quant" : "float inputs", got, want);
        if (with) { /* X̃ really differs: the error with quantized inputs is much larger */
            double plain = rel_err(X, X, T, D, Wf, m2->layers[0].wq, N);
            CHECK(want > 1.5 * plain, "quantized inputs should add error: %.6g vs %.6g", want, plain);
        }
        piso_pipeline_result_free(&res);
        piso_model_free(m2);
    }
    free(X), free(Xt), free(r), free(Wf);
    piso_calib_free(&cal);
    piso_model_free(mf), piso_model_free(mq);
}

/* Greedy generation (KV cache, one new row at a time) with quantized activations and KV cache picks
 * the argmax of the batched prefill's logits at every step: the cache holds exactly the per-token
 * quantized keys and values the prefill computes. */
static void test_generate_kv(const char *model) {
    struct piso_model *m = NULL;
    if (piso_model_load(model, NULL, &m)) {
        CHECK(0, "load: %s", piso_last_error());
        return;
    }
    CHECK(piso_act_quant_init(&m->act, &m->cfg, "int8", 0, "int4-asym") == 0, "act init: %s", piso_last_error());
    enum { P = 4, NEW = 24 };
    int toks[P + NEW] = {1, 403, 407, 261}, V = m->cfg.vocab_size;
    int n = piso_generate_greedy(m, toks, P, NEW, -1);
    CHECK(n == P + NEW, "generated %d", n);
    float *logits = malloc(sizeof(float) * (size_t)(P + NEW) * V);
    CHECK(piso_forward(m, toks, n, 0, logits) == 0, "forward");
    int agree = 0;
    for (int i = P; i < n; i++) {
        const float *l = logits + (size_t)(i - 1) * V;
        int best = 0;
        for (int j = 1; j < V; j++) best = l[j] > l[best] ? j : best;
        agree += best == toks[i];
    }
    CHECK(agree == n - P, "%d of %d generated tokens are the prefill's argmax", agree, n - P);
    /* and the KV format matters: without it the continuation's logits differ */
    float *plain = malloc(sizeof(float) * (size_t)(P + NEW) * V);
    m->act.kv = (struct piso_act_format){0};
    CHECK(piso_forward(m, toks, n, 0, plain) == 0, "forward");
    double d = 0;
    for (size_t i = 0; i < (size_t)n * V; i++) d = fmax(d, fabs(plain[i] - logits[i]));
    CHECK(d > 1e-3, "int4-asym KV cache changes the logits (max diff %g)", d);
    free(logits), free(plain);
    piso_model_free(m);
}

int main(void) {
    test_closed_forms();
    test_codes();
    test_errors();
    const char *model = test_data("models/stories260K/stories260K.bin");
    const char *evaltext = test_data("data/tinystories/tinystories_sample.cs336.txt");
    const char *calib_text = test_data("data/tinystories/TinyStories-valid.small30KB.txt");
    snprintf(tmpdir, sizeof tmpdir, "/tmp/piso_test_act_quant_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        CHECK(0, "mkdtemp");
        return test_finish();
    }
    piso_set_quiet(1);
    test_reload(model, evaltext);
    test_calib_act_quant(model, calib_text);
    test_generate_kv(model);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    CHECK(test_run(cmd, NULL) == 0, "cleanup");
    return test_finish();
}
