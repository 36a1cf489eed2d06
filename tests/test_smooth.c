/* Activation statistics and SmoothQuant smoothing (piso/act_stats.h, piso/smooth.h):
 * (1) the selection quantile equals the nearest-rank value of a full sort (qsort), ties and
 *     P = 1 included; (2) the log-histogram sketch stays within its documented bound
 *     |estimate − q| ≤ α·q of the sorted quantile on heavy-tailed data with zeros;
 * (3) the statistics the collector reports equal max/mean/quantile recomputed here from the
 *     captured inputs; (4) smoothing leaves the float model's logits unchanged to fp32 round-off on
 *     random models with GQA, q/k/v biases and q/k norms, and on stories260K, and it does what
 *     SmoothQuant says: with α = 1/2 and max statistics each smoothed channel ends with equal
 *     activation and weight ranges, max|X'_j| = max|W'_:j| = sqrt(a_j·w_j); (5) `piso transform
 *     --smooth` (alone and before a Hadamard rotation) writes a model with the original perplexity;
 *     (6) bad input. */
#include "harness.h"
#include "piso/smooth.h"

#include <cjson/cJSON.h>
#include <unistd.h>

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static double urand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static float nrand(void) { return (float)((urand() + urand() + urand() - 1.5) * 2.0); }

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* the nearest-rank P-quantile from a full sort: the ceil(P·n)-th smallest */
static float sorted_quantile(const float *v, int64_t n, double p) {
    float *c = malloc(sizeof(float) * (size_t)n);
    memcpy(c, v, sizeof(float) * (size_t)n);
    qsort(c, (size_t)n, sizeof(float), cmp_float);
    int64_t k = (int64_t)ceil(p * (double)n);
    if (k < 1) k = 1;
    float q = c[k - 1];
    free(c);
    return q;
}

static void test_select(void) {
    const int64_t sizes[] = {1, 2, 3, 10, 101, 1000, 4097};
    const double ps[] = {1e-6, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0};
    int bad = 0, total = 0;
    for (size_t a = 0; a < sizeof sizes / sizeof sizes[0]; a++)
        for (int kind = 0; kind < 3; kind++) {
            int64_t n = sizes[a];
            float *v = malloc(sizeof(float) * (size_t)n), *w = malloc(sizeof(float) * (size_t)n);
            for (int64_t i = 0; i < n; i++) /* distinct, many ties, sorted descending */
                v[i] = kind == 0 ? (float)urand() : kind == 1 ? (float)(int)(urand() * 5) : (float)(n - i);
            for (size_t b = 0; b < sizeof ps / sizeof ps[0]; b++) {
                memcpy(w, v, sizeof(float) * (size_t)n);
                float got = piso_quantile_select(w, n, ps[b]), want = sorted_quantile(v, n, ps[b]);
                total++;
                if (got != want) {
                    bad++;
                    fprintf(stderr, "n %lld kind %d p %g: %g vs sorted %g\n", (long long)n, kind, ps[b], got, want);
                }
            }
            free(v), free(w);
        }
    CHECK(bad == 0, "%d of %d selections differ from the sorted quantile", bad, total);
    CHECK(piso_quantile_check(0, "q") != 0 && piso_quantile_check(1.5, "q") != 0 && piso_quantile_check(-1, "q") != 0 &&
              piso_quantile_check(1, "q") == 0 && piso_quantile_check(1e-9, "q") == 0,
          "quantile range (0, 1]");
}

static void test_sketch(void) {
    enum { W = 5, N = 20000 };
    const double alphas[] = {0.01, 0.05};
    for (int ai = 0; ai < 2; ai++) {
        struct piso_abs_sketch s;
        CHECK(piso_abs_sketch_init(&s, W, alphas[ai]) == 0, "sketch init");
        float *x = malloc(sizeof(float) * W * N), *col = malloc(sizeof(float) * N);
        for (int t = 0; t < N; t++)
            for (int j = 0; j < W; j++) { /* log-normal of growing spread, 5 % zeros, one outlier channel */
                double z = nrand() * (0.5 + j);
                float v = (float)(exp(z) * (j == 4 && t % 997 == 0 ? 1e4 : 1.0));
                x[t * W + j] = urand() < 0.05 ? 0.0f : (urand() < 0.5 ? -v : v);
            }
        /* added in uneven pieces, as windows would be */
        piso_abs_sketch_add(&s, x, 7000);
        piso_abs_sketch_add(&s, x + 7000 * W, N - 7000);
        const double ps[] = {0.01, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0};
        double worst = 0;
        for (size_t b = 0; b < sizeof ps / sizeof ps[0]; b++) {
            float est[W];
            piso_abs_sketch_quantiles(&s, ps[b], est);
            for (int j = 0; j < W; j++) {
                for (int t = 0; t < N; t++) col[t] = fabsf(x[t * W + j]);
                float q = sorted_quantile(col, N, ps[b]);
                double rel = q > 0 ? fabs((double)est[j] - q) / q : fabs((double)est[j]);
                worst = fmax(worst, rel);
                CHECK(rel <= alphas[ai] * (1 + 1e-6), "alpha %g, p %g, channel %d: estimate %.8g vs %.8g (rel %.3g)",
                      alphas[ai], ps[b], j, est[j], q, rel);
                if (ps[b] == 1.0) CHECK(est[j] == q, "p = 1 is the exact max: %.8g vs %.8g", est[j], q);
            }
        }
        /* the bound is not vacuous: some estimate is off by a fair part of it */
        CHECK(worst > 0.2 * alphas[ai], "alpha %g: worst relative error %.3g", alphas[ai], worst);
        free(x), free(col);
        piso_abs_sketch_free(&s);
    }
    struct piso_abs_sketch s;
    CHECK(piso_abs_sketch_init(&s, 1, 0.6) != 0, "alpha 0.6 refused");
}

/* ---- random models -------------------------------------------------------------------------- */
static void fill(float *p, size_t n, float scale, float offset) {
    for (size_t i = 0; i < n; i++) p[i] = offset + scale * nrand();
}

static struct piso_model *random_model(int dim, int hidden, int heads, int kv_heads, int hd, int bias, int qk_norm) {
    struct piso_config c = {0};
    snprintf(c.arch, sizeof c.arch, "llama");
    c.dim = dim, c.hidden_dim = hidden, c.n_layers = 2, c.n_heads = heads, c.n_kv_heads = kv_heads, c.head_dim = hd;
    c.vocab_size = 41, c.max_seq_len = 64, c.norm_eps = 1e-5f, c.rope_theta = 10000.0f, c.rope_style = PISO_ROPE_HALF;
    c.has_qkv_bias = bias, c.has_qk_norm = qk_norm;
    struct piso_model *m;
    if (piso_model_alloc(&c, &m)) return NULL;
    int Hq = heads * hd, Hkv = kv_heads * hd;
    fill(m->tok_embd, (size_t)41 * dim, 0.5f, 0), fill(m->output, (size_t)41 * dim, 0.3f, 0);
    fill(m->out_norm, dim, 0.1f, 1);
    for (int l = 0; l < 2; l++) {
        struct piso_layer_weights *w = &m->layers[l];
        fill(w->attn_norm, dim, 0.5f, 1), fill(w->ffn_norm, dim, 0.5f, 1);
        w->attn_norm[3] = 8, w->ffn_norm[5] = -6; /* outlier channels, as real models have */
        fill(w->wq, (size_t)Hq * dim, 0.3f, 0), fill(w->wk, (size_t)Hkv * dim, 0.3f, 0), fill(w->wv, (size_t)Hkv * dim, 0.3f, 0);
        fill(w->wo, (size_t)dim * Hq, 0.2f, 0);
        fill(w->w_gate, (size_t)hidden * dim, 0.3f, 0), fill(w->w_up, (size_t)hidden * dim, 0.3f, 0);
        fill(w->w_down, (size_t)dim * hidden, 0.2f, 0);
        if (bias) fill(w->bq, Hq, 0.2f, 0), fill(w->bk, Hkv, 0.2f, 0), fill(w->bv, Hkv, 0.2f, 0);
        if (qk_norm) fill(w->q_norm, hd, 0.2f, 1), fill(w->k_norm, hd, 0.2f, 1);
    }
    return m;
}

static struct piso_calib random_windows(int nsamples, int seqlen, int vocab) {
    struct piso_calib c = {nsamples, seqlen, malloc(sizeof(int) * (size_t)(nsamples * seqlen)), nsamples * seqlen};
    for (int i = 0; i < nsamples * seqlen; i++) c.tokens[i] = (int)(urand() * vocab);
    return c;
}

static double max_abs_diff(const float *a, const float *b, size_t n, double *scale) {
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i])), s = fmax(s, fabs((double)a[i]));
    if (scale) *scale = s;
    return d;
}

/* The statistics against max/mean/sorted quantile of the captured inputs. */
static void check_stats(struct piso_model *m, const struct piso_calib *c) {
    struct piso_act_stats_opts o = {.quantile = 0.9, .keep_tokens = 5};
    struct piso_act_stats st, sk;
    if (piso_act_stats_collect(m, c, &o, &st)) {
        CHECK(0, "collect: %s", piso_last_error());
        return;
    }
    o.method = PISO_QUANTILE_SKETCH, o.sketch_alpha = 0.02;
    CHECK(piso_act_stats_collect(m, c, &o, &sk) == 0, "collect sketch: %s", piso_last_error());
    int D = m->cfg.dim, L = c->seqlen, T = c->nsamples * L;
    int64_t widths[4] = {D, (int64_t)m->cfg.n_heads * m->cfg.head_dim, D, m->cfg.hidden_dim};
    float *X = malloc(sizeof(float) * T * D), *tap[4];
    for (int in = 0; in < 4; in++) tap[in] = malloc(sizeof(float) * T * widths[in]);
    for (int w = 0; w < c->nsamples; w++) piso_embed(m, c->tokens + w * L, L, X + w * L * D);
    int bad = 0;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        for (int w = 0; w < c->nsamples; w++) {
            struct piso_block_taps t = {tap[0] + w * L * widths[0], tap[1] + w * L * widths[1], tap[2] + w * L * widths[2],
                                        tap[3] + w * L * widths[3]};
            piso_block_forward(m, l, X + w * L * D, L, &t);
        }
        for (int in = 0; in < 4; in++) {
            const struct piso_act_channel_stats *cs = piso_act_stats_site(&st, l, (enum piso_block_input)in);
            const struct piso_act_channel_stats *ks = piso_act_stats_site(&sk, l, (enum piso_block_input)in);
            int64_t W = widths[in];
            float *col = malloc(sizeof(float) * T);
            for (int64_t j = 0; j < W; j++) {
                double mx = 0, sum = 0;
                for (int t = 0; t < T; t++) col[t] = fabsf(tap[in][t * W + j]), mx = fmax(mx, col[t]), sum += col[t];
                float q = sorted_quantile(col, T, 0.9);
                bad += cs->absmax[j] != (float)mx || fabs(cs->absmean[j] - sum / T) > 1e-12 * (1 + sum / T) ||
                       cs->quantile[j] != q || fabs((double)ks->quantile[j] - q) > 0.02 * (1 + 1e-6) * q ||
                       ks->absmax[j] != (float)mx;
                for (int k = 0; k < 5; k++) bad += cs->abs_tokens[k * W + j] != col[(int)((double)k * T / 5)];
            }
            free(col);
        }
    }
    CHECK(bad == 0, "%d statistics differ from the recomputed ones", bad);
    for (int in = 0; in < 4; in++) free(tap[in]);
    free(X);
    piso_act_stats_free(&st), piso_act_stats_free(&sk);
}

/* Smoothing with statistic `quantile` (0: max) keeps the logits; returns the max relative change. */
static void check_smooth_invariance(struct piso_model *m, const struct piso_calib *c, double alpha, double quantile,
                                    const char *what, double tol) {
    int n = c->seqlen, V = m->cfg.vocab_size;
    float *before = malloc(sizeof(float) * n * V), *after = malloc(sizeof(float) * n * V);
    CHECK(piso_forward(m, c->tokens, n, 0, before) == 0, "forward");
    struct piso_act_stats_opts o = {.quantile = quantile};
    struct piso_act_stats st;
    CHECK(piso_act_stats_collect(m, c, &o, &st) == 0, "%s: collect: %s", what, piso_last_error());
    float *norm0 = malloc(sizeof(float) * m->cfg.dim);
    memcpy(norm0, m->layers[0].attn_norm, sizeof(float) * m->cfg.dim);
    struct piso_smooth_opts so = {.alpha = alpha, .use_quantile = quantile > 0};
    CHECK(piso_transform_smooth(m, &st, &so) == 0, "%s: smooth: %s", what, piso_last_error());
    double scale, moved = max_abs_diff(norm0, m->layers[0].attn_norm, m->cfg.dim, NULL);
    CHECK(moved > 1e-3, "%s: smoothing changed nothing", what);
    CHECK(piso_forward(m, c->tokens, n, 0, after) == 0, "forward");
    double d = max_abs_diff(before, after, (size_t)n * V, &scale);
    CHECK(d <= tol * fmax(1, scale), "%s: logits moved by %.3g (scale %.3g)", what, d, scale);
    piso_act_stats_free(&st);
    free(before), free(after), free(norm0);
}

/* α = 1/2 with max statistics, one input smoothed: afterwards max|X'_j| = max|W'_:j| (both
 * sqrt(a_j·w_j)). (With every input smoothed, the down_proj scales then divide up_proj's rows and
 * move the gate/up column ranges again.) */
static void check_balanced(struct piso_model *m, const struct piso_calib *c, int site) {
    struct piso_act_stats_opts o = {0};
    struct piso_act_stats st, st2;
    CHECK(piso_act_stats_collect(m, c, &o, &st) == 0, "collect");
    struct piso_smooth_opts so = {.alpha = 0.5, .sites = 1 << site};
    CHECK(piso_transform_smooth(m, &st, &so) == 0, "smooth");
    CHECK(piso_act_stats_collect(m, c, &o, &st2) == 0, "collect after");
    int checked = 0, bad = 0;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const enum piso_block_input ins[] = {(enum piso_block_input)site};
        for (int k = 0; k < 1; k++) {
            const struct piso_act_channel_stats *a0 = piso_act_stats_site(&st, l, ins[k]);
            const struct piso_act_channel_stats *a1 = piso_act_stats_site(&st2, l, ins[k]);
            for (int64_t j = 0; j < a1->width; j++) {
                double wmax = 0; /* max |W'_:j| over the consumers, after smoothing */
                for (int li = 0; li < PISO_LIN_COUNT; li++) {
                    const struct piso_tensor_info *t = piso_schema_linear((enum piso_linear)li);
                    if (t->input != (int)ins[k]) continue;
                    const float *Wc = piso_schema_data(m, t, l);
                    for (int64_t r = 0; r < piso_schema_dim(&m->cfg, t->rows); r++)
                        wmax = fmax(wmax, fabs(Wc[r * a1->width + j]));
                }
                if (a0->absmax[j] <= 1e-5) continue;
                checked++;
                if (fabs(a1->absmax[j] - wmax) > 1e-4 * wmax) {
                    if (bad++ < 5)
                        fprintf(stderr, "layer %d input %d channel %lld: max|X'| %.8g vs max|W'| %.8g\n", l, ins[k],
                                (long long)j, a1->absmax[j], wmax);
                }
            }
        }
    }
    CHECK(checked >= 40 && bad == 0, "input %d: %d of %d channels are not balanced", site, bad, checked);
    piso_act_stats_free(&st), piso_act_stats_free(&st2);
}

static void test_random_models(void) {
    static const int cases[][7] = {
        /* dim, hidden, heads, kv_heads, head_dim, bias, qk_norm */
        {32, 48, 4, 2, 8, 0, 0},
        {32, 40, 4, 1, 8, 1, 0},
        {24, 36, 6, 2, 8, 1, 1},
    };
    for (int k = 0; k < 3; k++) {
        const int *p = cases[k];
        char what[64];
        snprintf(what, sizeof what, "random model %d (kv %d, bias %d, qk norm %d)", k, p[3], p[5], p[6]);
        struct piso_model *m = random_model(p[0], p[1], p[2], p[3], p[4], p[5], p[6]);
        struct piso_calib c = random_windows(3, 17, 41);
        if (!m) {
            CHECK(0, "alloc");
            continue;
        }
        if (k == 0) check_stats(m, &c);
        check_smooth_invariance(m, &c, 0.5, 0, what, 1e-4);
        check_smooth_invariance(m, &c, 0.8, 0.99, what, 1e-4);
        piso_model_free(m);
        const int sites[] = {PISO_IN_ATTN, PISO_IN_FFN, PISO_IN_DOWN};
        for (int si = 0; si < 3; si++) {
            m = random_model(p[0], p[1], p[2], p[3], p[4], p[5], p[6]);
            check_balanced(m, &c, sites[si]);
            piso_model_free(m);
        }
        free(c.tokens);
    }
}

static double json_num(const char *text, const char *key) {
    const char *b = text ? strchr(text, '{') : NULL;
    cJSON *j = b ? cJSON_Parse(b) : NULL;
    double v = j ? cJSON_GetNumberValue(cJSON_GetObjectItem(j, key)) : NAN;
    cJSON_Delete(j);
    return v;
}

static void test_stories(void) {
    const char *path = test_data("models/stories260K/stories260K.bin");
    const char *calib = test_data("data/tinystories/TinyStories-valid.small30KB.txt");
    struct piso_model *m;
    if (piso_model_load(path, NULL, &m) || piso_model_make_writable(m)) {
        CHECK(0, "load: %s", piso_last_error());
        return;
    }
    struct piso_calib c;
    CHECK(piso_calib_load(m->tok, calib, 4, 128, m->cfg.max_seq_len, 3, &c) == 0, "calib");
    check_smooth_invariance(m, &c, 0.5, 0.999, "stories260K", 1e-4);
    /* the exact path refuses when one block's inputs do not fit its limit, and says how much */
    struct piso_act_stats_opts o = {.quantile = 0.99, .max_exact_bytes = 1000};
    struct piso_act_stats st;
    CHECK(piso_act_stats_collect(m, &c, &o, &st) != 0 && strstr(piso_last_error(), "sketch") &&
              strstr(piso_last_error(), "GiB"),
          "memory limit: %s", piso_last_error());
    o.quantile = 1.5;
    CHECK(piso_act_stats_collect(m, &c, &o, &st) != 0 && strstr(piso_last_error(), "(0, 1]"), "quantile 1.5");
    piso_calib_free(&c);
    piso_model_free(m);
    /* the CLI: bad quantiles are clear errors and nothing is written */
    char dir[] = "/tmp/piso_test_smooth_XXXXXX", out[300], cmd[2000];
    if (!mkdtemp(dir)) return;
    snprintf(out, sizeof out, "%s/out", dir);
    const char *cases[][2] = {{"--smooth 0.5 --smooth-quantile 0", "(0, 1]"},
                              {"--smooth 0.5 --smooth-quantile 1.5", "--smooth-quantile"},
                              {"--smooth-quantile 0.9", "--smooth"},
                              {"--smooth 1.5", "--smooth"}};
    for (int k = 0; k < 4; k++) {
        snprintf(cmd, sizeof cmd, "%s quantize --model %s --calib %s --format int4 --rounding rtn %s --out %s 2>&1",
                 PISO_BIN, path, calib, cases[k][0], out);
        test_expect_refusal(cases[k][0], cmd, -1, NULL, cases[k][1], out);
        snprintf(cmd, sizeof cmd, "rm -rf %s", out);
        test_run(cmd, NULL);
    }
    /* piso transform --smooth alone and before a Hadamard rotation (SmoothRot): the written float
     * model has the original's perplexity, and reloading it gives the same number */
    const char *evaltext = test_data("data/tinystories/tinystories_sample.cs336.txt");
    const char *variants[] = {"--smooth 0.5 --smooth-quantile 0.999", "--smooth 0.6 --rotate had"};
    for (int k = 0; k < 2; k++) {
        snprintf(cmd, sizeof cmd,
                 "%s transform --model %s --calib %s --nsamples 4 --seqlen 128 %s --out %s --eval %s --json --quiet",
                 PISO_BIN, path, calib, variants[k], out, evaltext);
        char *o2 = NULL;
        CHECK(test_run(cmd, &o2) == 0, "transform %s: %s", variants[k], o2 ? o2 : "");
        double before = json_num(o2, "perplexity_before"), after = json_num(o2, "perplexity_after");
        CHECK(before > 8 && fabs(after - before) <= 1e-4 * before, "transform %s: perplexity %.8g -> %.8g", variants[k],
              before, after);
        CHECK(o2 && strstr(o2, "\"smooth\""), "transform --json records the smoothing");
        free(o2);
        snprintf(cmd, sizeof cmd, "%s perplexity --model %s --text %s --json --quiet", PISO_BIN, out, evaltext);
        o2 = NULL;
        CHECK(test_run(cmd, &o2) == 0, "perplexity of the transformed model");
        double reload = json_num(o2, "ppl");
        CHECK(fabs(reload - before) <= 1e-4 * before, "transform %s reloaded: %.8g vs %.8g", variants[k], reload, before);
        free(o2);
        snprintf(cmd, sizeof cmd, "rm -rf %s", out);
        test_run(cmd, NULL);
    }
    rmdir(dir);
}

int main(void) {
    piso_set_quiet(1);
    test_select();
    test_sketch();
    test_random_models();
    test_stories();
    return test_finish();
}
