/* piso/act_stats.h — per-channel statistics of the linear-layer inputs over calibration windows.
 *
 * The model runs block by block over the calibration windows (piso/pipeline.h); at each of a
 * block's four linear inputs (enum piso_block_input: q/k/v, o, gate/up, down) every channel j gets
 * max_t |x_tj|, mean_t |x_tj| and, when asked, the P-quantile of |x_·j| over all calibration tokens,
 * and optionally |x| of a token subsample. Used by SmoothQuant-style smoothing (piso/smooth.h) and
 * by permutations (MassDiff needs mean |x| and a token subsample).
 *
 * Quantile: the nearest-rank definition, the k-th smallest of the n values with k = ceil(P·n)
 * (P = 1: the max). Two ways to get it:
 *  - exact: one block's inputs of every calibration token are kept ([tokens, width] floats per
 *    input; the call refuses with a message when that exceeds max_exact_bytes), then a selection
 *    per channel;
 *  - sketch: a fixed-bin logarithmic histogram per channel (DDSketch-style): bin i holds the values
 *    in (γ^(i−1), γ^i] with γ = (1+α)/(1−α), and the estimate is the bin's 2γ^i/(γ+1) (clamped to the
 *    channel's exact max; P = 1 returns the exact max). Guarantee: |estimate − q| ≤ α·q for the
 *    exact nearest-rank quantile q when 2^−40 ≤ q ≤ 2^40 (bins are found with an fp32 log, so a
 *    value within ~1e-7 relative of a bin edge may count in the next bin: α + 1e-6 in the test);
 *    values below 2^−40 count as 0 (absolute error < 2^−40). Memory:
 *    width · (1 + 80·ln 2 / ln γ) counts of 4 bytes per input (α = 0.01: 2,774 bins, 11 KB per
 *    channel), independent of the number of tokens. */
#ifndef PISO_ACT_STATS_H
#define PISO_ACT_STATS_H

#include "piso/pipeline.h"

enum piso_quantile_method { PISO_QUANTILE_EXACT = 0, PISO_QUANTILE_SKETCH };

struct piso_act_stats_opts {
    double quantile;                  /* P in (0, 1]: also the P-quantile of |x| per channel; 0: none */
    enum piso_quantile_method method;
    double sketch_alpha;              /* sketch: the relative error bound α in (0, 0.5); 0: 0.01 */
    double max_exact_bytes;           /* exact: refuse above this per block; 0: 4 GiB */
    int keep_tokens;                  /* also keep |x| of this many evenly spaced tokens; 0: none */
};

struct piso_act_channel_stats { /* one linear input of one block */
    int64_t width;
    float *absmax;      /* [width] max_t |x_tj| */
    double *absmean;    /* [width] mean_t |x_tj| */
    float *quantile;    /* [width] P-quantile of |x_·j|, or NULL */
    float *abs_tokens;  /* [kept, width] |x| of tokens floor(k·ntok/kept), or NULL */
    int kept;
};

struct piso_act_stats {
    int n_layers;
    int64_t ntok;       /* calibration tokens */
    double quantile;    /* P, or 0 */
    enum piso_quantile_method method;
    double sketch_alpha;
    struct piso_act_channel_stats *site; /* [n_layers · PISO_IN_COUNT]: site[layer·4 + input] */
};

/* Runs m (as it is, including its m->act) over the windows of c, block by block. Errors: a bad
 * quantile or α, the exact path's memory limit (naming the bytes it would need), out of memory. */
int piso_act_stats_collect(const struct piso_model *m, const struct piso_calib *c, const struct piso_act_stats_opts *o,
                           struct piso_act_stats *out);
void piso_act_stats_free(struct piso_act_stats *s);
/* The statistics of one linear input. */
const struct piso_act_channel_stats *piso_act_stats_site(const struct piso_act_stats *s, int layer,
                                                         enum piso_block_input in);

/* Checks P ∈ (0, 1]; the message names `what` (e.g. "--smooth-quantile"). */
int piso_quantile_check(double p, const char *what);
/* The nearest-rank P-quantile of v[n] (n ≥ 1) by selection; reorders v. */
float piso_quantile_select(float *v, int64_t n, double p);

/* ---- the streaming sketch of |x| per channel ------------------------------------------------ */
struct piso_abs_sketch {
    int64_t width;
    double alpha, gamma, log_gamma;
    int n_bins;          /* bins 1..n_bins-1 for (γ^(i−1+lo), γ^(i+lo)]; bin 0: |x| < 2^−40 */
    int lo;              /* exponent of the first value bin */
    uint32_t *counts;    /* [width, n_bins] */
    float *max;          /* [width] exact max |x| */
    int64_t n;           /* values added per channel */
};
int piso_abs_sketch_init(struct piso_abs_sketch *s, int64_t width, double alpha);
/* Adds the |x| of rows x [n, width]. */
void piso_abs_sketch_add(struct piso_abs_sketch *s, const float *x, int64_t n);
/* out [width]: the estimated P-quantile of every channel (0 when nothing was added). */
void piso_abs_sketch_quantiles(const struct piso_abs_sketch *s, double p, float *out);
void piso_abs_sketch_free(struct piso_abs_sketch *s);

#endif
