/* piso/smooth.h — SmoothQuant-style smoothing fused into the weights (algorithms.md §10).
 *
 * For a linear input X [tokens, n] read by consumer weights W_c [*, n] and produced through a
 * per-channel producer (an RMSNorm weight, or the rows of up_proj for the down_proj input), every
 * channel j gets a scale
 *     s_j = a_j^α / w_j^(1−α),  a_j = max_t |X_tj| (or the P-quantile of |X_·j|),
 *     w_j = max |W_c[:, j]| over all consumers,
 * and the model computes the same function with X/s and W_c·diag(s): the producer is divided by s
 * (attn_norm / ffn_norm weight, up_proj rows) and the consumers' columns multiplied by s (q/k/v
 * share one s, gate/up share one). A channel whose a_j or w_j is ≤ 1e-5 keeps s_j = 1 (as Brevitas
 * does); s_j is clamped to ≥ 1e-5. The o_proj input is not smoothed (its producer, v_proj, is shared
 * across the query heads of a KV group). The float model's logits stay the same up to fp32 round-off. */
#ifndef PISO_SMOOTH_H
#define PISO_SMOOTH_H

#include "piso/act_stats.h"

enum { PISO_SMOOTH_ATTN = 1 << PISO_IN_ATTN, PISO_SMOOTH_FFN = 1 << PISO_IN_FFN, PISO_SMOOTH_DOWN = 1 << PISO_IN_DOWN,
       PISO_SMOOTH_ALL = PISO_SMOOTH_ATTN | PISO_SMOOTH_FFN | PISO_SMOOTH_DOWN };

struct piso_smooth_opts {
    double alpha;      /* migration strength α ∈ [0, 1] (SmoothQuant's default 0.5) */
    int use_quantile;  /* a_j = the statistics' P-quantile instead of the max */
    int sites;         /* PISO_SMOOTH_* bits; 0: all three */
};

/* The scales s [n] of one block input from its statistics and the model's current consumer weights. */
int piso_smooth_scales(const struct piso_model *m, int layer, enum piso_block_input in,
                       const struct piso_act_channel_stats *st, const struct piso_smooth_opts *o, double *s);
/* Smooths every block of m (writable weights) in place with statistics collected from the same
 * (unsmoothed) model. Errors: α outside [0, 1], quantiles asked but not collected, mismatched sizes. */
int piso_transform_smooth(struct piso_model *m, const struct piso_act_stats *st, const struct piso_smooth_opts *o);

#endif
