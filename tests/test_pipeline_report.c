/* The pipeline's per-layer error report from the first calibration window (report_window0) on
 * stories260K:
 *  - with one window it equals the report from the full statistics (H, G, XᵀX), and the quantized
 *    codes do not depend on where the report comes from;
 *  - with two windows it equals ‖Xw − Xŵ‖² / ‖Xw‖² over window 0 recomputed here by brute force
 *    (block 0's q_proj, whose X̃ is X: the embeddings are float in both models);
 *    for Qronos (X–X̃: the float side runs over every window) and GPTQ (X̃–X̃ with the report from
 *    window 0: the float side runs over window 0 only);
 *  - the default (by width: all stories260K layers are narrower than 512) is the full report, bit
 *    for bit;
 *  - the quantized side's caches between stages (o_proj's and down_proj's inputs) change no bit of
 *    the codes, scales or reports against running the block's earlier part again. */
#include "harness.h"
#include "piso/model.h"
#include "piso/pipeline.h"
#include "piso/tokenizer.h"

struct run {
    struct piso_pipeline_result res;
    struct piso_model *m;
};

static int run_pipeline_budget(const char *model, const struct piso_model *mf, const struct piso_calib *cal,
                               enum piso_rounding rounding, int window0, double keep_budget, struct run *out) {
    struct piso_pipeline_opts po;
    memset(&po, 0, sizeof po);
    piso_ec_opts_default(&po.ec);
    piso_grid_init(&po.ec.q.grid, "int4", 0);
    po.rounding = rounding;
    po.objective = rounding == PISO_ROUND_GPTQ ? PISO_OBJ_XQ_XQ : PISO_OBJ_X_XQ;
    po.report_window0 = window0;
    po.keep_down_budget = keep_budget;
    out->m = NULL;
    memset(&out->res, 0, sizeof out->res);
    if (piso_model_load(model, NULL, &out->m) || piso_model_make_writable(out->m) ||
        piso_quantize_model(out->m, mf, cal, &po, &out->res)) {
        CHECK(0, "pipeline (%s, report_window0 %d): %s", piso_rounding_name(rounding), window0, piso_last_error());
        return -1;
    }
    return 0;
}
static int run_pipeline(const char *model, const struct piso_model *mf, const struct piso_calib *cal,
                        enum piso_rounding rounding, int window0, struct run *out) {
    return run_pipeline_budget(model, mf, cal, rounding, window0, 0, out);
}
static void run_free(struct run *r) {
    piso_pipeline_result_free(&r->res);
    piso_model_free(r->m);
}

static int same_codes(const struct run *a, const struct run *b) {
    if (a->res.n_layers != b->res.n_layers) return 0;
    for (int i = 0; i < a->res.n_layers; i++) {
        const struct piso_layer_report *x = &a->res.layers[i], *y = &b->res.layers[i];
        if (x->N != y->N || x->D != y->D || memcmp(x->codes, y->codes, sizeof(int16_t) * (size_t)(x->N * x->D)) ||
            memcmp(x->scales, y->scales, sizeof(float) * (size_t)(x->N * x->n_groups)))
            return 0;
    }
    return 1;
}

static void test_one_window(const char *model, const struct piso_model *mf, const struct piso_calib *cal) {
    static const enum piso_rounding rr[] = {PISO_ROUND_GPTQ, PISO_ROUND_QRONOS};
    for (int k = 0; k < 2; k++) {
        struct run w0, full, dflt;
        if (run_pipeline(model, mf, cal, rr[k], 1, &w0) || run_pipeline(model, mf, cal, rr[k], -1, &full) ||
            run_pipeline(model, mf, cal, rr[k], 0, &dflt))
            return;
        const char *name = piso_rounding_name(rr[k]);
        CHECK(same_codes(&w0, &full) && same_codes(&w0, &dflt), "%s: codes depend on the report", name);
        double worst = 0;
        for (int i = 0; i < w0.res.n_layers && i < full.res.n_layers; i++) {
            const struct piso_layer_report *a = &w0.res.layers[i], *b = &full.res.layers[i], *c = &dflt.res.layers[i];
            worst = fmax(worst, fabs(a->rel_err - b->rel_err) / b->rel_err);
            worst = fmax(worst, fabs(a->rel_err_absmax - b->rel_err_absmax) / b->rel_err_absmax);
            CHECK(c->rel_err == b->rel_err && c->rel_err_absmax == b->rel_err_absmax,
                  "%s %s: the default report is not the full one", name, b->name);
        }
        CHECK(worst <= 1e-3, "%s, one window: report from window 0 vs full statistics differ by %g (relative)", name,
              worst);
        run_free(&w0), run_free(&full), run_free(&dflt);
    }
}

static void test_two_windows(const char *model, const struct piso_model *mf, const struct piso_calib *cal,
                             enum piso_rounding rounding) {
    struct run w0, full;
    if (run_pipeline(model, mf, cal, rounding, 1, &w0) || run_pipeline(model, mf, cal, rounding, -1, &full))
        return;
    CHECK(same_codes(&w0, &full), "two windows, %s: codes depend on the report", piso_rounding_name(rounding));
    /* brute force over window 0: block 0's q_proj input, float model */
    int64_t D = mf->cfg.dim, N = D, L = cal->seqlen;
    float *x = malloc(sizeof(float) * L * D), *X = malloc(sizeof(float) * L * D);
    struct piso_block_taps taps = {X, NULL, NULL, NULL};
    piso_embed(mf, cal->tokens, (int)L, x);
    CHECK(piso_block_forward(mf, 0, x, (int)L, &taps) == 0, "float block");
    const float *Wf = mf->layers[0].wq, *Wq = w0.m->layers[0].wq;
    double num = 0, den = 0;
    for (int64_t t = 0; t < L; t++)
        for (int64_t r = 0; r < N; r++) {
            double y = 0, yq = 0;
            for (int64_t j = 0; j < D; j++) y += (double)X[t * D + j] * Wf[r * D + j], yq += (double)X[t * D + j] * Wq[r * D + j];
            num += (y - yq) * (y - yq), den += y * y;
        }
    const struct piso_layer_report *q = &w0.res.layers[0];
    CHECK(strstr(q->name, "layers.0.self_attn.q_proj") != NULL, "first report is %s", q->name);
    CHECK(fabs(q->rel_err - num / den) <= 1e-4 * (num / den), "%s: window-0 report %.8g, brute force %.8g",
          piso_rounding_name(rounding), q->rel_err, num / den);
    /* an estimate of the full report, not far from it on this model */
    for (int i = 0; i < w0.res.n_layers && i < full.res.n_layers; i++) {
        double a = w0.res.layers[i].rel_err, b = full.res.layers[i].rel_err;
        CHECK(a > 0.3 * b && a < 3 * b, "%s: window-0 estimate %g vs full %g", full.res.layers[i].name, a, b);
    }
    free(x), free(X);
    run_free(&w0), run_free(&full);
}

/* 1 byte: no cache fits, so every stage runs the block from its start on a copy of the stream. */
static void test_keep_paths(const char *model, const struct piso_model *mf, const struct piso_calib *cal) {
    static const enum piso_rounding rr[] = {PISO_ROUND_GPTQ, PISO_ROUND_QRONOS};
    for (int k = 0; k < 2; k++) {
        struct run kept, rerun;
        if (run_pipeline_budget(model, mf, cal, rr[k], 1, 0, &kept) ||
            run_pipeline_budget(model, mf, cal, rr[k], 1, 1, &rerun))
            return;
        CHECK(same_codes(&kept, &rerun), "%s: the stage caches change the codes", piso_rounding_name(rr[k]));
        for (int i = 0; i < kept.res.n_layers && i < rerun.res.n_layers; i++)
            CHECK(kept.res.layers[i].rel_err == rerun.res.layers[i].rel_err &&
                      kept.res.layers[i].objective == rerun.res.layers[i].objective,
                  "%s %s: the stage caches change the report", piso_rounding_name(rr[k]), kept.res.layers[i].name);
        run_free(&kept), run_free(&rerun);
    }
}

int main(void) {
    const char *model = test_data("models/stories260K/stories260K.bin");
    const char *calib_text = test_data("data/tinystories/TinyStories-valid.small30KB.txt");
    piso_set_quiet(1);
    struct piso_model *mf = NULL;
    if (piso_model_load(model, NULL, &mf)) {
        CHECK(0, "load: %s", piso_last_error());
        return test_finish();
    }
    struct piso_calib one, two;
    CHECK(piso_calib_load(mf->tok, calib_text, 1, 128, mf->cfg.max_seq_len, 7, &one) == 0, "calib: %s",
          piso_last_error());
    CHECK(piso_calib_load(mf->tok, calib_text, 2, 128, mf->cfg.max_seq_len, 7, &two) == 0, "calib: %s",
          piso_last_error());
    test_one_window(model, mf, &one);
    test_two_windows(model, mf, &two, PISO_ROUND_QRONOS);
    test_two_windows(model, mf, &two, PISO_ROUND_GPTQ);
    test_keep_paths(model, mf, &two);
    piso_calib_free(&one), piso_calib_free(&two);
    piso_model_free(mf);
    return test_finish();
}
