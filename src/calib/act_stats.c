/* Per-channel statistics of the linear-layer inputs over calibration windows (piso/act_stats.h):
 * max |x|, mean |x|, the P-quantile of |x| (exact by selection, or a logarithmic sketch), a token
 * subsample of |x|. */
#include "piso/act_stats.h"
#include "piso/schema.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SKETCH_LOG2_MIN (-40) /* values below 2^-40 count as zero */
#define SKETCH_LOG2_MAX 40

int piso_quantile_check(double p, const char *what) {
    if (!(p > 0 && p <= 1)) return piso_errorf("%s: the quantile %g must be in (0, 1]", what, p);
    return 0;
}

/* k = ceil(p·n) in [1, n], as a 0-based index */
static int64_t nearest_rank_index(int64_t n, double p) {
    double k = ceil(p * (double)n);
    int64_t i = k < 1 ? 0 : k > (double)n ? n - 1 : (int64_t)k - 1;
    return i;
}

float piso_quantile_select(float *v, int64_t n, double p) {
    int64_t k = nearest_rank_index(n, p), lo = 0, hi = n - 1;
    /* Hoare-style quickselect with a median-of-three pivot: v[k] ends up the k-th smallest */
    while (hi > lo) {
        int64_t mid = lo + (hi - lo) / 2;
        float a = v[lo], b = v[mid], c = v[hi];
        float pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot) i++;
            while (v[j] > pivot) j--;
            if (i <= j) {
                float t = v[i];
                v[i] = v[j], v[j] = t;
                i++, j--;
            }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else break; /* j < k < i: v[k] equals the pivot */
    }
    return v[k];
}

/* ---- the sketch ------------------------------------------------------------------------------- */

int piso_abs_sketch_init(struct piso_abs_sketch *s, int64_t width, double alpha) {
    memset(s, 0, sizeof *s);
    if (!(alpha > 0 && alpha < 0.5)) return piso_errorf("quantile sketch: the relative error %g must be in (0, 0.5)", alpha);
    s->width = width, s->alpha = alpha;
    s->gamma = (1 + alpha) / (1 - alpha), s->log_gamma = log(s->gamma);
    s->lo = (int)ceil(SKETCH_LOG2_MIN * M_LN2 / s->log_gamma);
    int hi = (int)ceil(SKETCH_LOG2_MAX * M_LN2 / s->log_gamma);
    s->n_bins = hi - s->lo + 2;
    s->counts = calloc((size_t)width * (size_t)s->n_bins, sizeof *s->counts);
    s->max = calloc((size_t)width, sizeof *s->max);
    if (!s->counts || !s->max) {
        piso_abs_sketch_free(s);
        return piso_errorf("quantile sketch: out of memory for %lld channels x %d bins", (long long)width, s->n_bins);
    }
    return 0;
}

/* The bin of |x| = a: ceil(log_γ a) shifted by lo (fp32 log: a value within ~1e-7 of a bin edge may
 * land in the neighbouring bin, which moves the bound by that much). */
static int sketch_bin(const struct piso_abs_sketch *s, float a, float inv_log_gamma) {
    if (!(a >= 0x1p-40f)) return 0;
    int b = (int)ceilf(logf(a) * inv_log_gamma) - s->lo + 1;
    return b < 1 ? 1 : b >= s->n_bins ? s->n_bins - 1 : b;
}

void piso_abs_sketch_add(struct piso_abs_sketch *s, const float *x, int64_t n) {
    /* channels in strips of 64, one strip per iteration: each thread owns its channels' counts, so
     * the result is the same for any thread count, and reads rows contiguously */
    const float inv = (float)(1.0 / s->log_gamma);
    const int64_t strip = 64, nstrips = (s->width + strip - 1) / strip;
#pragma omp parallel for schedule(static) if (n * s->width > (1 << 18))
    for (int64_t sj = 0; sj < nstrips; sj++) {
        const int64_t j0 = sj * strip, j1 = j0 + strip < s->width ? j0 + strip : s->width;
        for (int64_t t = 0; t < n; t++) {
            const float *row = x + t * s->width;
            for (int64_t j = j0; j < j1; j++) {
                float a = fabsf(row[j]);
                s->counts[j * s->n_bins + sketch_bin(s, a, inv)]++;
                if (a > s->max[j]) s->max[j] = a;
            }
        }
    }
    s->n += n;
}

void piso_abs_sketch_quantiles(const struct piso_abs_sketch *s, double p, float *out) {
    if (s->n == 0) {
        memset(out, 0, sizeof(float) * (size_t)s->width);
        return;
    }
    int64_t k = nearest_rank_index(s->n, p) + 1; /* the k-th smallest */
    for (int64_t j = 0; j < s->width; j++) {
        if (k == s->n) { /* the max is kept exactly */
            out[j] = s->max[j];
            continue;
        }
        const uint32_t *c = s->counts + j * s->n_bins;
        int64_t cum = 0;
        int b = 0;
        while (b < s->n_bins - 1 && (cum += c[b]) < k) b++;
        double est = b == 0 ? 0.0 : 2.0 * exp((double)(b - 1 + s->lo) * s->log_gamma) / (s->gamma + 1.0);
        out[j] = (float)fmin(est, (double)s->max[j]);
    }
}

void piso_abs_sketch_free(struct piso_abs_sketch *s) {
    free(s->counts), free(s->max);
    memset(s, 0, sizeof *s);
}

/* ---- collection ------------------------------------------------------------------------------ */

void piso_act_stats_free(struct piso_act_stats *s) {
    if (s->site)
        for (int i = 0; i < s->n_layers * PISO_IN_COUNT; i++) {
            struct piso_act_channel_stats *c = &s->site[i];
            free(c->absmax), free(c->absmean), free(c->quantile), free(c->abs_tokens);
        }
    free(s->site);
    memset(s, 0, sizeof *s);
}

const struct piso_act_channel_stats *piso_act_stats_site(const struct piso_act_stats *s, int layer,
                                                         enum piso_block_input in) {
    return &s->site[layer * PISO_IN_COUNT + in];
}

/* One block's working memory: the taps of one window and, for exact quantiles, of every token. */
struct block_work {
    float *tap[PISO_IN_COUNT];      /* [L, width] one window */
    float *all[PISO_IN_COUNT];      /* [ntok, width] exact quantiles: every token (NULL otherwise) */
    struct piso_abs_sketch sk[PISO_IN_COUNT];
    double *sum[PISO_IN_COUNT];     /* [width] Σ |x| */
    float *column;                  /* [ntok] one channel, for the selection */
};

/* Folds one window's taps [L, width] at token offset t0 into site st. */
static void add_window(struct piso_act_channel_stats *cs, struct block_work *bw, int in, const float *x, int64_t L,
                       int64_t t0, int64_t ntok, const struct piso_act_stats_opts *o) {
    int64_t W = cs->width;
    for (int64_t t = 0; t < L; t++)
        for (int64_t j = 0; j < W; j++) {
            float a = fabsf(x[t * W + j]);
            if (a > cs->absmax[j]) cs->absmax[j] = a;
            bw->sum[in][j] += a;
        }
    if (bw->all[in]) memcpy(bw->all[in] + t0 * W, x, sizeof(float) * (size_t)(L * W));
    if (o->quantile > 0 && o->method == PISO_QUANTILE_SKETCH) piso_abs_sketch_add(&bw->sk[in], x, L);
    for (int k = 0; k < cs->kept; k++) { /* tokens floor(k·ntok/kept) that fall in this window */
        int64_t t = (int64_t)((double)k * (double)ntok / cs->kept);
        if (t < t0 || t >= t0 + L) continue;
        for (int64_t j = 0; j < W; j++) cs->abs_tokens[k * W + j] = fabsf(x[(t - t0) * W + j]);
    }
}

int piso_act_stats_collect(const struct piso_model *m, const struct piso_calib *c, const struct piso_act_stats_opts *o,
                           struct piso_act_stats *out) {
    memset(out, 0, sizeof *out);
    if (o->quantile != 0 && piso_quantile_check(o->quantile, "activation statistics")) return -1;
    double alpha = o->sketch_alpha > 0 ? o->sketch_alpha : 0.01;
    if (o->quantile > 0 && o->method == PISO_QUANTILE_SKETCH && !(alpha < 0.5))
        return piso_errorf("activation statistics: the sketch error %g must be in (0, 0.5)", alpha);
    const struct piso_config *cfg = &m->cfg;
    int64_t L = c->seqlen, ntok = (int64_t)c->nsamples * L, Dm = cfg->dim, widths[PISO_IN_COUNT], wsum = 0;
    for (int in = 0; in < PISO_IN_COUNT; in++) wsum += widths[in] = piso_schema_input_width(cfg, (enum piso_block_input)in);
    int exact = o->quantile > 0 && o->method == PISO_QUANTILE_EXACT;
    double need = exact ? (double)ntok * (double)wsum * sizeof(float) : 0;
    double limit = o->max_exact_bytes > 0 ? o->max_exact_bytes : 4.0 * (1 << 30);
    if (need > limit)
        return piso_errorf("exact activation quantiles need %.2f GiB for one block (%lld tokens x %lld channels), more "
                           "than the limit of %.2f GiB: use the sketch (--smooth-stats sketch) or fewer tokens",
                           need / (1 << 30), (long long)ntok, (long long)wsum, limit / (1 << 30));
    out->n_layers = cfg->n_layers, out->ntok = ntok, out->quantile = o->quantile;
    out->method = o->method, out->sketch_alpha = alpha;
    out->site = calloc((size_t)cfg->n_layers * PISO_IN_COUNT, sizeof *out->site);
    float *X = malloc(sizeof(float) * (size_t)(ntok * Dm));
    struct block_work bw;
    memset(&bw, 0, sizeof bw);
    int rc = -1, kept = o->keep_tokens > 0 ? (int)(o->keep_tokens < ntok ? o->keep_tokens : ntok) : 0;
    int oom = !out->site || !X;
    for (int in = 0; in < PISO_IN_COUNT && !oom; in++) {
        bw.tap[in] = malloc(sizeof(float) * (size_t)(L * widths[in]));
        bw.sum[in] = malloc(sizeof(double) * (size_t)widths[in]);
        if (exact) bw.all[in] = malloc(sizeof(float) * (size_t)(ntok * widths[in]));
        oom |= !bw.tap[in] || !bw.sum[in] || (exact && !bw.all[in]);
        if (!oom && o->quantile > 0 && !exact && piso_abs_sketch_init(&bw.sk[in], widths[in], alpha)) goto done;
    }
    if (exact && !oom) oom = !(bw.column = malloc(sizeof(float) * (size_t)ntok));
    for (int i = 0; i < cfg->n_layers * PISO_IN_COUNT && !oom; i++) {
        struct piso_act_channel_stats *cs = &out->site[i];
        int64_t W = cs->width = widths[i % PISO_IN_COUNT];
        cs->absmax = calloc((size_t)W, sizeof(float));
        cs->absmean = calloc((size_t)W, sizeof(double));
        if (o->quantile > 0) cs->quantile = calloc((size_t)W, sizeof(float));
        if (kept) cs->abs_tokens = calloc((size_t)(kept * W), sizeof(float)), cs->kept = kept;
        oom |= !cs->absmax || !cs->absmean || (o->quantile > 0 && !cs->quantile) || (kept && !cs->abs_tokens);
    }
    if (oom) {
        piso_errorf("activation statistics: out of memory (%lld tokens x %lld channels)", (long long)ntok,
                    (long long)wsum);
        goto done;
    }
    for (int w = 0; w < c->nsamples; w++) piso_embed(m, c->tokens + (size_t)w * L, (int)L, X + w * L * Dm);
    struct piso_progress pr;
    piso_progress_begin(&pr, "activation statistics", "blocks", cfg->n_layers);
    for (int b = 0; b < cfg->n_layers; b++) {
        for (int in = 0; in < PISO_IN_COUNT; in++) {
            memset(bw.sum[in], 0, sizeof(double) * (size_t)widths[in]);
            if (bw.sk[in].counts) {
                memset(bw.sk[in].counts, 0, sizeof(uint32_t) * (size_t)(widths[in] * bw.sk[in].n_bins));
                memset(bw.sk[in].max, 0, sizeof(float) * (size_t)widths[in]);
                bw.sk[in].n = 0;
            }
        }
        for (int w = 0; w < c->nsamples; w++) {
            struct piso_block_taps taps = {bw.tap[0], bw.tap[1], bw.tap[2], bw.tap[3]};
            if (piso_block_forward(m, b, X + w * L * Dm, (int)L, &taps)) goto done;
            for (int in = 0; in < PISO_IN_COUNT; in++)
                add_window(&out->site[b * PISO_IN_COUNT + in], &bw, in, bw.tap[in], L, w * L, ntok, o);
        }
        for (int in = 0; in < PISO_IN_COUNT; in++) {
            struct piso_act_channel_stats *cs = &out->site[b * PISO_IN_COUNT + in];
            int64_t W = widths[in];
            for (int64_t j = 0; j < W; j++) cs->absmean[j] = bw.sum[in][j] / (double)ntok;
            if (o->quantile > 0 && !exact) piso_abs_sketch_quantiles(&bw.sk[in], o->quantile, cs->quantile);
            for (int64_t j = 0; exact && j < W; j++) {
                for (int64_t t = 0; t < ntok; t++) bw.column[t] = fabsf(bw.all[in][t * W + j]);
                cs->quantile[j] = piso_quantile_select(bw.column, ntok, o->quantile);
            }
        }
        piso_progress_update(&pr, b + 1);
    }
    rc = 0;
done:
    for (int in = 0; in < PISO_IN_COUNT; in++)
        free(bw.tap[in]), free(bw.all[in]), free(bw.sum[in]), piso_abs_sketch_free(&bw.sk[in]);
    free(bw.column), free(X);
    if (rc) piso_act_stats_free(out);
    return rc;
}
