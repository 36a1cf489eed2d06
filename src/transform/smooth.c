/* SmoothQuant-style smoothing fused into producer and consumer weights (piso/smooth.h). */
#include "piso/smooth.h"
#include "piso/schema.h"

#include <math.h>
#include <stdlib.h>

#define SMOOTH_EPS 1e-5

/* The producer of a block input, divided by s: a norm weight [n] (stride 0) or the rows of
 * up_proj [n, D] (each row a channel). */
struct producer {
    float *w;
    int64_t row_len; /* 1 for a norm weight, D for up_proj rows */
};

static struct producer producer_of(const struct piso_model *m, int layer, enum piso_block_input in) {
    const struct piso_layer_weights *w = &m->layers[layer];
    if (in == PISO_IN_ATTN) return (struct producer){w->attn_norm, 1};
    if (in == PISO_IN_FFN) return (struct producer){w->ffn_norm, 1};
    return (struct producer){w->w_up, m->cfg.dim}; /* PISO_IN_DOWN */
}

int piso_smooth_scales(const struct piso_model *m, int layer, enum piso_block_input in,
                       const struct piso_act_channel_stats *st, const struct piso_smooth_opts *o, double *s) {
    int64_t n = piso_schema_input_width(&m->cfg, in);
    if (st->width != n)
        return piso_errorf("smooth: statistics of layer %d have %lld channels, the model %lld", layer,
                           (long long)st->width, (long long)n);
    if (o->use_quantile && !st->quantile) return piso_errorf("smooth: the statistics carry no quantiles");
    const float *a = o->use_quantile ? st->quantile : st->absmax;
    double *wmax = calloc((size_t)n, sizeof *wmax);
    if (!wmax) return piso_errorf("smooth: out of memory");
    for (int k = 0; k < PISO_LIN_COUNT; k++) { /* max |W[:, j]| over every consumer of this input */
        const struct piso_tensor_info *t = piso_schema_linear((enum piso_linear)k);
        if (t->input != (int)in) continue;
        const float *W = piso_schema_data(m, t, layer);
        int64_t rows = piso_schema_dim(&m->cfg, t->rows);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < n; j++) wmax[j] = fmax(wmax[j], fabs((double)W[r * n + j]));
    }
    for (int64_t j = 0; j < n; j++) {
        double aj = a[j], wj = wmax[j];
        s[j] = aj <= SMOOTH_EPS || wj <= SMOOTH_EPS ? 1.0 : fmax(pow(aj, o->alpha) / pow(wj, 1.0 - o->alpha), SMOOTH_EPS);
    }
    free(wmax);
    return 0;
}

/* X/s at the producer, W·diag(s) at every consumer. */
static void apply_scales(struct piso_model *m, int layer, enum piso_block_input in, const double *s) {
    int64_t n = piso_schema_input_width(&m->cfg, in);
    struct producer p = producer_of(m, layer, in);
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < p.row_len; i++) p.w[j * p.row_len + i] = (float)((double)p.w[j * p.row_len + i] / s[j]);
    for (int k = 0; k < PISO_LIN_COUNT; k++) {
        const struct piso_tensor_info *t = piso_schema_linear((enum piso_linear)k);
        if (t->input != (int)in) continue;
        float *W = *piso_schema_slot(m, t, layer);
        int64_t rows = piso_schema_dim(&m->cfg, t->rows);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < n; j++) W[r * n + j] = (float)((double)W[r * n + j] * s[j]);
    }
}

int piso_transform_smooth(struct piso_model *m, const struct piso_act_stats *st, const struct piso_smooth_opts *o) {
    if (!(o->alpha >= 0 && o->alpha <= 1)) return piso_errorf("smooth: alpha %g must be in [0, 1]", o->alpha);
    if (st->n_layers != m->cfg.n_layers)
        return piso_errorf("smooth: statistics for %d layers, the model has %d", st->n_layers, m->cfg.n_layers);
    int sites = o->sites ? o->sites : PISO_SMOOTH_ALL;
    int64_t wmax = m->cfg.dim > m->cfg.hidden_dim ? m->cfg.dim : m->cfg.hidden_dim;
    double *s = malloc(sizeof(double) * (size_t)wmax);
    if (!s) return piso_errorf("smooth: out of memory");
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int in = 0; in < PISO_IN_COUNT; in++) {
            if (!(sites >> in & 1) || in == PISO_IN_O) continue;
            if (piso_smooth_scales(m, l, (enum piso_block_input)in, piso_act_stats_site(st, l, (enum piso_block_input)in),
                                   o, s)) {
                free(s);
                return piso_error_context("smoothing layer %d", l);
            }
            apply_scales(m, l, (enum piso_block_input)in, s);
        }
    free(s);
    return 0;
}
