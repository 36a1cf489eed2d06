/* The block-by-block calibration pipeline (see piso/pipeline.h). */
#include "piso/linalg.h"
#include "piso/accum.h"
#include "piso/pipeline.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const objective_names[] = {"x-x", "xq-xq", "x-xq"};
int piso_objective_from_name(const char *name, enum piso_objective *out) {
    for (int i = 0; i < 3; i++)
        if (!strcmp(name, objective_names[i])) return *out = (enum piso_objective)i, 0;
    return -1;
}
const char *piso_objective_name(enum piso_objective o) { return (unsigned)o < 3 ? objective_names[o] : "?"; }

void piso_linear_hf_name(int layer, enum piso_linear k, char *buf, size_t n) {
    piso_schema_name(piso_schema_linear(k), PISO_NAME_HF, layer, buf, n);
    char *suffix = strstr(buf, ".weight");
    if (suffix) *suffix = 0;
}

void piso_pipeline_result_free(struct piso_pipeline_result *res) {
    for (int i = 0; i < res->n_layers; i++)
        free(res->layers[i].scales), free(res->layers[i].codes), free(res->layers[i].zeros), free(res->layers[i].g_idx);
    free(res->layers);
    memset(res, 0, sizeof *res);
}

/* The weight of linear k in a block, its shape [N, D]. */
static float *linear_weight(const struct piso_model *m, int layer, enum piso_linear k, int64_t *N, int64_t *D) {
    const struct piso_tensor_info *t = piso_schema_linear(k);
    *N = piso_schema_dim(&m->cfg, t->rows), *D = piso_schema_dim(&m->cfg, t->cols);
    return *piso_schema_slot((struct piso_model *)(uintptr_t)m, t, layer);
}

/* The four stages of a block in data-flow order are its four linear inputs (enum
 * piso_block_input): the tap a stage reads and the linears it feeds come from the schema. */
static void set_tap(struct piso_block_taps *t, enum piso_block_input s, float *buf) {
    memset(t, 0, sizeof *t);
    *piso_block_tap(t, s) = buf;
}

/* PISO_RSS_TRACE=1: resident memory (anonymous, file pages) and the peak so far (VmHWM) at each
 * step of a block on stderr, to find where a run's peak is; =2: the peak since the previous step. */
static void rss_trace(int block, const char *step) {
    static int on = -1;
    if (on < 0) on = getenv("PISO_RSS_TRACE") ? atoi(getenv("PISO_RSS_TRACE")) : 0;
    if (!on) return;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return;
    char line[256];
    double rss = -1, hwm = -1, anon = -1, file = -1;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "VmRSS:", 6)) rss = atof(line + 6) / 1024;
        if (!strncmp(line, "VmHWM:", 6)) hwm = atof(line + 6) / 1024;
        if (!strncmp(line, "RssAnon:", 8)) anon = atof(line + 8) / 1024;
        if (!strncmp(line, "RssFile:", 8)) file = atof(line + 8) / 1024;
    }
    fclose(f);
    fprintf(stderr, "rss: block %d, %-44s now %6.0f MB (anon %6.0f, file %6.0f), peak %6.0f MB\n", block, step, rss,
            anon, file, hwm);
    /* =2: the peak is per step (this resets the peak that wait4/getrusage would report) */
    if (on == 2 && (f = fopen("/proc/self/clear_refs", "w"))) fputs("5", f), fclose(f);
}

struct stats {
    int64_t D;
    double *H, *G, *F;   /* fp64 accumulators [D, D]: X̃ᵀX̃, X̃ᵀX, XᵀX; only those in needs, per stage */
    float *tmp;          /* [GRAM_PANEL_ROWS, D] a band of one window's product, while accumulating */
    unsigned needs;      /* STATS_* of this stage: the products accumulated */
    float *x0q, *x0f;    /* [seqlen, D] the first window's X̃ and X (window-0 report), or NULL */
};

/* A window's product is added a band of rows at a time (the same bits as whole): its fp32 scratch
 * is 2048 × D instead of D × D (0.12 GB instead of 0.82 GB at D = 14336). */
#define GRAM_PANEL_ROWS 2048
static void acc_product(struct stats *s, const float *A, const float *B, int n, double *acc) {
    /* acc += Aᵀ B for one window (A, B [n, D]) */
    piso_la_gram_add_panels(acc, A, B, n, s->D, s->D, GRAM_PANEL_ROWS, s->tmp);
}

/* The float taps of every stage over the float side's windows are cached up to this size. */
#define FLOAT_TAPS_MAX (2.0 * (1 << 30))

/* From this many inputs on, a layer's error report comes from the first window's outputs. */
#define REPORT_WINDOW0_MIN_INPUTS 512
static int report_from_window0(const struct piso_pipeline_opts *o, int64_t D) {
    if (o->n_cost > 0) return 0; /* the cost pass reports from XᵀX */
    return o->report_window0 > 0 || (o->report_window0 == 0 && D >= REPORT_WINDOW0_MIN_INPUTS);
}

/* The statistics a stage of width D must accumulate: what the solver's objective reads, XᵀX for
 * scales fixed on float inputs (interleave none), and H, G, XᵀX for the report unless it comes
 * from window 0. The cost pass (X̃ = X) reads XᵀX only. */
enum { STATS_H = 1u, STATS_G = 2u, STATS_F = 4u };
static unsigned stats_needs(const struct piso_pipeline_opts *o, int64_t D) {
    if (o->n_cost > 0) return STATS_F;
    unsigned n = o->objective == PISO_OBJ_X_X ? STATS_F : STATS_H;
    if (o->objective == PISO_OBJ_X_XQ) n |= STATS_G;
    if (o->rounding != PISO_ROUND_RTN && (o->layer_ec || o->ec.interleave == PISO_INTERLEAVE_NONE)) n |= STATS_F;
    if (!report_from_window0(o, D)) n |= STATS_H | STATS_G | STATS_F;
    return n;
}

/* Runs block `layer` of both models over every window, capturing the inputs of stage st, and
 * accumulates the statistics. Xq, Xf: residual streams [nsamples·seqlen, dim] (not modified). */
/* Float-model taps of one block for every window, when they fit the memory budget: the float
 * block then runs once per window instead of once per stage. [nsamples·seqlen, width of stage] */
struct float_taps {
    float *t[4];
};

/* What the quantized side keeps of a block between its stages, each [nsamples·seqlen, width] or
 * NULL (over budget), so that each part of the block runs once per window:
 *   o_in: the attention output (o_proj's input) of the quantized q/k/v, from the o stage on; the
 *         FFN stages then add o_proj's output to the stream (piso_block_o_residual) instead of
 *         running q/k/v and the attention again;
 *   down_in: down_proj's input. With it the quantized stream runs in place from the FFN stage on
 *         (Xq then holds the stream after the attention output) and, once down_proj is quantized,
 *         piso_block_down_residual completes the block (no second pass over the block). */
struct quant_keep {
    float *o_in, *down_in;
};

/* The quantized side of window w as far as stage st's input, captured in tap. */
static int quant_side_until(const struct piso_model *mq, int layer, enum piso_block_input st, float *Xq, float *rq,
                            const struct quant_keep *keep, int64_t w, int64_t L, float *tap) {
    const struct piso_config *cfg = &mq->cfg;
    const int64_t Dm = cfg->dim, Hq = (int64_t)cfg->n_heads * cfg->head_dim;
    const int in_place = keep->down_in && st >= PISO_IN_FFN;
    float *x = Xq + w * L * Dm;
    if (!in_place) x = memcpy(rq, x, sizeof(float) * L * Dm);
    struct piso_block_taps t;
    set_tap(&t, st, tap);
    if (st == PISO_IN_DOWN && in_place) /* the FFN stage left the stream after the attention output */
        return piso_block_ffn_until(mq, layer, x, (int)L, &t, st);
    if (st >= PISO_IN_FFN && keep->o_in) {
        if (piso_block_o_residual(mq, layer, x, keep->o_in + w * L * Hq, (int)L)) return -1;
        return piso_block_ffn_until(mq, layer, x, (int)L, &t, st);
    }
    return piso_block_forward_until(mq, layer, x, (int)L, &t, st);
}

/* The statistics of stage st over every window. The float side runs over the first float_windows
 * windows only (all, or the first when only the report reads it). */
static int stage_stats(const struct piso_model *mq, const struct piso_model *mf, int layer, enum piso_block_input st,
                       float *Xq, const float *Xf, const struct piso_calib *c, int float_windows, struct stats *s,
                       const struct float_taps *cache, const struct quant_keep *keep, struct piso_pipeline_timing *tm) {
    int64_t L = c->seqlen, Dm = mq->cfg.dim, D = s->D;
    float *rq = malloc(sizeof(float) * L * Dm), *rf = malloc(sizeof(float) * L * Dm);
    float *aq = malloc(sizeof(float) * L * D), *af = malloc(sizeof(float) * L * D);
    int rc = -1;
    if (!rq || !rf || !aq || !af) {
        piso_errorf("out of memory for one calibration window's activations");
        goto done;
    }
    /* only the products this stage reads, at its width */
    const size_t DD = (size_t)(D * D);
    s->tmp = piso_malloc_touched(sizeof(float) * (size_t)((D < GRAM_PANEL_ROWS ? D : GRAM_PANEL_ROWS) * D));
    if (s->needs & STATS_H) s->H = piso_malloc_touched(DD * sizeof(double));
    if (s->needs & STATS_G) s->G = piso_malloc_touched(DD * sizeof(double));
    if (s->needs & STATS_F) s->F = piso_malloc_touched(DD * sizeof(double));
    if (!s->tmp || (!s->H && (s->needs & STATS_H)) || (!s->G && (s->needs & STATS_G)) || (!s->F && (s->needs & STATS_F))) {
        piso_errorf("out of memory for the statistics of a %lld-wide layer input", (long long)D);
        goto done;
    }
    for (int w = 0; w < c->nsamples; w++) {
        struct piso_block_taps tf;
        float *tapq = aq;
        if (st == PISO_IN_O && keep->o_in) tapq = keep->o_in + w * L * D;
        if (st == PISO_IN_DOWN && keep->down_in) tapq = keep->down_in + w * L * D;
        set_tap(&tf, st, af);
        double t0 = piso_time();
        /* only as far as the stage's input: the rest of the block is not needed here */
        if (quant_side_until(mq, layer, st, Xq, rq, keep, w, L, tapq)) goto done;
        double t1 = piso_time();
        tm->quant_forward += t1 - t0;
        const float *xf = NULL; /* the float inputs, on the float side's windows only */
        if (w < float_windows && cache) xf = cache->t[st] + w * L * D;
        else if (w < float_windows) {
            memcpy(rf, Xf + w * L * Dm, sizeof(float) * L * Dm);
            if (piso_block_forward_until(mf, layer, rf, (int)L, &tf, st)) goto done;
            xf = af;
        }
        double t2 = piso_time();
        tm->float_forward += t2 - t1;
        if (!xf && (s->needs & (STATS_G | STATS_F))) { /* float_windows covers every window then */
            piso_errorf("internal error: stage %d needs the float inputs of window %d", (int)st, w);
            goto done;
        }
        if (s->needs & STATS_H) acc_product(s, tapq, tapq, (int)L, s->H);
        if (s->needs & STATS_G) acc_product(s, tapq, xf, (int)L, s->G);
        if (s->needs & STATS_F) acc_product(s, xf, xf, (int)L, s->F);
        if (w == 0 && s->x0q) {
            memcpy(s->x0q, tapq, sizeof(float) * L * D);
            memcpy(s->x0f, xf, sizeof(float) * L * D);
        }
        tm->statistics += piso_time() - t2;
    }
    rc = 0;
done:
    free(rq), free(rf), free(aq), free(af);
    free(s->tmp), s->tmp = NULL; /* not needed by the solves */
    return rc;
}

static void stats_free(struct stats *s) {
    free(s->H), free(s->G), free(s->F), free(s->tmp);
    s->H = s->G = s->F = NULL, s->tmp = NULL;
}

/* Σ_rows wᵀFw (the float output energy). */
static double output_energy(int64_t N, int64_t D, const float *W, const float *F) {
    float *Z = calloc((size_t)(N * D), sizeof(float));
    if (!Z) return NAN; /* out of memory: the caller reports it */
    double e = piso_layer_objective(N, D, W, Z, F, NULL, NULL);
    free(Z);
    return e;
}

double piso_alpha_sample(uint64_t seed, int layer, enum piso_linear k) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ull * (uint64_t)(1 + layer * PISO_LIN_COUNT + (int)k);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull; /* splitmix64 */
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0;
}

static int uses_alpha(enum piso_rounding r) {
    return r == PISO_ROUND_SR || r == PISO_ROUND_BEAM || r == PISO_ROUND_GPFQ;
}

/* Quantizes W (float weights [N, D]) with options eo on the statistics H, G, F into r. Xq (or NULL):
 * the quantized side's inputs of every window [T, D], whose Gram is H. */
static int solve_linear(int64_t N, int64_t D, const float *Wf, const float *H, const float *G, const float *F,
                        const float *Xq, int64_t T, const struct piso_pipeline_opts *o, const struct piso_ec_opts *eo,
                        const char *name, struct piso_layer_result *r) {
    const float *Ho = o->objective == PISO_OBJ_X_X ? F : H;
    const float *Go = o->objective == PISO_OBJ_X_XQ ? G : NULL;
    memset(r, 0, sizeof *r);
    int rc, was_quiet = piso_is_quiet();
    if (eo->q.acc && piso_accum_validate(eo->q.acc, D, eo->q.group, &eo->q.grid, name, NULL)) return -1;
    piso_set_quiet(1); /* one progress line per layer is ours; the solvers' per-row lines are noise here */
    if (o->rounding == PISO_ROUND_RTN) {
        struct piso_layer_problem lp = {N, D, Wf, Ho, Go, Ho == H ? Xq : NULL, T};
        rc = piso_rtn_layer(&lp, &eo->q, r);
    } else {
        struct piso_ec_problem ep = {N, D, Wf, Ho, Go, F};
        rc = piso_rounding_layer(o->rounding)(&ep, eo, r, NULL);
    }
    piso_set_quiet(was_quiet);
    return rc;
}

/* The cost pass: every candidate on this layer's float inputs; the weights stay float. */
static int cost_linear(const struct piso_model *mq, const float *Wf, int layer, enum piso_linear k, const float *F,
                       const struct piso_pipeline_opts *o, struct piso_layer_report *rep) {
    int64_t N, D;
    (void)linear_weight(mq, layer, k, &N, &D); /* the shape */
    double t0 = piso_time();
    const int64_t i = (int64_t)layer * PISO_LIN_COUNT + k;
    piso_linear_hf_name(layer, k, rep->name, sizeof rep->name);
    rep->layer = layer, rep->kind = k, rep->N = N, rep->D = D;
    for (int c = 0; c < o->n_cost; c++) {
        struct piso_ec_opts eo = o->cost_ec[c];
        if (o->alpha_sample && uses_alpha(o->rounding)) eo.alpha = piso_alpha_sample(o->alpha_seed, layer, k);
        struct piso_layer_result r;
        if (solve_linear(N, D, Wf, F, F, F, NULL, 0, o, &eo, rep->name, &r))
            return piso_error_context("quantizing %s [%lld, %lld] as candidate %s", rep->name, (long long)N,
                                      (long long)D, eo.q.grid.name);
        double e = piso_layer_objective(N, D, Wf, r.dequant, F, NULL, NULL);
        if (isnan(e)) {
            piso_layer_result_free(&r);
            return piso_errorf("out of memory for the output error of %s", rep->name);
        }
        o->cost[i * o->n_cost + c] = e > 0 ? e : 0;
        if (o->keep && (o->keep_mask >> c & 1u)) o->keep[i * o->n_cost + c] = r.dequant, r.dequant = NULL;
        piso_layer_result_free(&r);
    }
    rep->seconds = piso_time() - t0;
    return 0;
}

/* The error report from one window: ‖Xw − X̃ŵ‖² / ‖Xw‖² summed over rows, for the method (Wq) and
 * absmax RTN (Wa), with X, X̃ [T, D] the first window's inputs. Outputs in chunks of rows of W,
 * fp32 products, fp64 sums in a fixed order. */
static int report_window0(int64_t T, int64_t N, int64_t D, const float *X, const float *Xq, const float *Wf,
                          const float *Wq, const float *Wa, double *rel, double *rel_a) {
    const int64_t C = 1024;
    int64_t nc = N < C ? N : C;
    float *Y = malloc(sizeof(float) * T * nc), *Yq = malloc(sizeof(float) * T * nc), *Ya = malloc(sizeof(float) * T * nc);
    double *part = malloc(sizeof(double) * 3 * T);
    if (!Y || !Yq || !Ya || !part) {
        free(Y), free(Yq), free(Ya), free(part);
        return -1;
    }
    double energy = 0, em = 0, ea = 0;
    for (int64_t r0 = 0; r0 < N; r0 += C) {
        int64_t h = N - r0 < C ? N - r0 : C;
        piso_la_sgemm(0, 1, T, h, D, 1.0f, X, D, Wf + r0 * D, D, 0.0f, Y, h);
        piso_la_sgemm(0, 1, T, h, D, 1.0f, Xq, D, Wq + r0 * D, D, 0.0f, Yq, h);
        piso_la_sgemm(0, 1, T, h, D, 1.0f, Xq, D, Wa + r0 * D, D, 0.0f, Ya, h);
#pragma omp parallel for schedule(static)
        for (int64_t t = 0; t < T; t++) {
            double e = 0, m = 0, a = 0;
            for (int64_t j = 0; j < h; j++) {
                double y = Y[t * h + j], dm = y - Yq[t * h + j], da = y - Ya[t * h + j];
                e += y * y, m += dm * dm, a += da * da;
            }
            part[3 * t] = e, part[3 * t + 1] = m, part[3 * t + 2] = a;
        }
        for (int64_t t = 0; t < T; t++) energy += part[3 * t], em += part[3 * t + 1], ea += part[3 * t + 2];
    }
    *rel = energy > 0 ? em / energy : 0, *rel_a = energy > 0 ? ea / energy : 0;
    free(Y), free(Yq), free(Ya), free(part);
    return 0;
}

/* Wf: the float model's weights of linear k (piso_model_linear_f32). */
static int quantize_linear(struct piso_model *mq, const float *Wf, int layer, enum piso_linear k,
                           const float *H, const float *G, const float *F, const float *Xq, int64_t T,
                           const struct stats *s, int64_t seqlen, const struct piso_pipeline_opts *o,
                           struct piso_layer_report *rep) {
    if (o->n_cost > 0) return cost_linear(mq, Wf, layer, k, F, o, rep);
    int64_t N, D;
    float *W = linear_weight(mq, layer, k, &N, &D);
    double t0 = piso_time();
    struct piso_layer_result r, ra;
    memset(&ra, 0, sizeof ra);
    struct piso_ec_opts eo = o->layer_ec ? o->layer_ec[(int64_t)layer * PISO_LIN_COUNT + k] : o->ec;
    if (o->alpha_sample && uses_alpha(o->rounding)) eo.alpha = piso_alpha_sample(o->alpha_seed, layer, k);
    rep->alpha = uses_alpha(o->rounding) ? eo.alpha : 0;
    piso_linear_hf_name(layer, k, rep->name, sizeof rep->name);
    piso_prune_stats_take(&rep->sweep); /* what came before is not this layer's */
    int rc = solve_linear(N, D, Wf, H, G, F, Xq, T, o, &eo, rep->name, &r), was_quiet = piso_is_quiet();
    piso_prune_stats_take(&rep->sweep);
    if (rc) return piso_error_context("quantizing %s [%lld, %lld]", rep->name, (long long)N, (long long)D);
    rep->seconds = piso_time() - t0;
    /* report: true reconstruction error against the float model's outputs, and absmax RTN's */
    struct piso_quant_opts ao = eo.q;
    ao.method = PISO_SCALE_ABSMAX;
    ao.acc = NULL; /* the baseline is plain absmax RTN */
    const int window0 = report_from_window0(o, D);
    ao.no_objective = window0; /* only its weights are read then */
    /* absmax reads no statistics; its layer objective needs some Hessian (unused from window 0) */
    struct piso_layer_problem lpa = {N, D, Wf, H ? H : F, NULL, NULL, 0};
    piso_set_quiet(1);
    int rca = piso_rtn_layer(&lpa, &ao, &ra);
    piso_set_quiet(was_quiet);
    if (rca) {
        piso_layer_result_free(&r);
        return piso_error_context("absmax baseline of %s", rep->name);
    }
    double energy = 1, e_m = 0, e_a = 0;
    if (window0) {
        if (report_window0(seqlen, N, D, s->x0f, s->x0q, Wf, r.dequant, ra.dequant, &e_m, &e_a)) e_m = NAN;
    } else {
        energy = output_energy(N, D, Wf, F);
        e_m = energy + piso_layer_objective(N, D, Wf, r.dequant, H, G, NULL);
        e_a = energy + piso_layer_objective(N, D, Wf, ra.dequant, H, G, NULL);
    }
    if (isnan(e_m) || isnan(e_a)) { /* NaN only when out of memory for the products */
        piso_layer_result_free(&r), piso_layer_result_free(&ra);
        return piso_errorf("out of memory for the reconstruction error of %s [%lld, %lld]", rep->name, (long long)N,
                           (long long)D);
    }
    rep->layer = layer, rep->kind = k, rep->N = N, rep->D = D;
    rep->group = eo.q.group > 0 && eo.q.group < D ? eo.q.group : 0;
    rep->last_group = rep->group && D % rep->group ? (int)(D % rep->group) : rep->group;
    rep->n_groups = r.n_groups;
    rep->tensor_scale = r.tensor_scale;
    rep->rel_err = energy > 0 ? e_m / energy : 0;
    rep->rel_err_absmax = energy > 0 ? e_a / energy : 0;
    rep->objective = r.objective;
    char step[8 + sizeof rep->name];
    snprintf(step, sizeof step, "solved %s", rep->name);
    rss_trace(layer, step);
    memcpy(W, r.dequant, sizeof(float) * N * D);
    rep->scales = r.scales, rep->codes = r.codes, rep->zeros = r.zeros, rep->g_idx = r.g_idx;
    r.scales = NULL, r.codes = NULL, r.zeros = NULL, r.g_idx = NULL;
    piso_layer_result_free(&r), piso_layer_result_free(&ra);
    return 0;
}

/* n fp64 values → fp32 in the same buffer, returned as float *. Forward order is safe: float i
 * overwrites bytes [4i, 4i + 4) of double i/2, which has already been read. memcpy keeps it free of
 * aliasing rules. */
static float *f64_to_f32_in_place(double *buf, int64_t n) {
    unsigned char *bytes = (unsigned char *)buf;
    for (int64_t i = 0; i < n; i++) {
        double d;
        memcpy(&d, bytes + 8 * i, sizeof d);
        float f = (float)d;
        memcpy(bytes + 4 * i, &f, sizeof f);
    }
    return (float *)(void *)buf;
}

/* The fp32 statistics for the solvers, converted in the fp64 buffer, which is then shrunk to the
 * fp32 size (its upper half goes back to the system during the solves). NULL stays NULL. */
static float *stats_to_f32(double **buf, int64_t n) {
    if (!*buf) return NULL;
    float *f = f64_to_f32_in_place(*buf, n);
    void *p = realloc(f, sizeof(float) * (size_t)n);
    if (p) *buf = p;
    return (float *)(void *)*buf;
}

static double keep_down_limit(const struct piso_pipeline_opts *o) {
    return o->keep_down_budget > 0 ? o->keep_down_budget : 2.0 * (1 << 30);
}

/* Block `layer` over the first `windows` windows of the stream X. */
static int advance(const struct piso_model *m, int layer, float *X, const struct piso_calib *c, int windows) {
    int64_t L = c->seqlen, Dm = m->cfg.dim;
    for (int w = 0; w < windows; w++)
        if (piso_block_forward(m, layer, X + w * L * Dm, (int)L, NULL)) return -1;
    return 0;
}

/* The quantized stream through block `layer` once its linears are quantized, from what it kept. */
static int advance_quantized(const struct piso_model *mq, int layer, float *Xq, const struct piso_calib *c,
                             const struct quant_keep *keep) {
    const int64_t L = c->seqlen, Dm = mq->cfg.dim, F = mq->cfg.hidden_dim;
    const int64_t Hq = (int64_t)mq->cfg.n_heads * mq->cfg.head_dim;
    for (int w = 0; w < c->nsamples; w++) {
        float *x = Xq + (int64_t)w * L * Dm;
        int rc;
        if (keep->down_in) /* the stream stopped at down_proj's input: add its output */
            rc = piso_block_down_residual(mq, layer, x, keep->down_in + (int64_t)w * L * F, (int)L);
        else if (keep->o_in)
            rc = piso_block_o_residual(mq, layer, x, keep->o_in + (int64_t)w * L * Hq, (int)L) ||
                 piso_block_ffn_until(mq, layer, x, (int)L, NULL, PISO_IN_COUNT);
        else
            rc = piso_block_forward(mq, layer, x, (int)L, NULL);
        if (rc) return -1;
    }
    return 0;
}

/* The windows the float side runs over: all of them when a stage's statistics read the float
 * inputs (G = X̃ᵀX, F = XᵀX), else only the first, for the error report (an X̃–X̃ objective with
 * the report from window 0 needs nothing else of the float model). */
static int float_windows_needed(const struct piso_pipeline_opts *o, const struct piso_config *cfg, int nsamples) {
    for (int st = 0; st < PISO_IN_COUNT; st++)
        if (stats_needs(o, piso_schema_input_width(cfg, (enum piso_block_input)st)) & (STATS_G | STATS_F)) return nsamples;
    return nsamples < 1 ? nsamples : 1;
}

int piso_quantize_model(struct piso_model *mq, const struct piso_model *mf, const struct piso_calib *c,
                        const struct piso_pipeline_opts *o, struct piso_pipeline_result *res) {
    memset(res, 0, sizeof *res);
    if (piso_ec_opts_check(&o->ec, o->rounding)) return -1; /* before any work */
    for (int c = 0; c < o->n_cost; c++)
        if (piso_ec_opts_check(&o->cost_ec[c], o->rounding)) return -1;
    for (int64_t i = 0; o->layer_ec && i < (int64_t)mq->cfg.n_layers * PISO_LIN_COUNT; i++)
        if (piso_ec_opts_check(&o->layer_ec[i], o->rounding)) return -1;
    const struct piso_config *cfg = &mq->cfg;
    int nb = cfg->n_layers;
    int64_t Dm = cfg->dim, Hq = (int64_t)cfg->n_heads * cfg->head_dim, F = cfg->hidden_dim;
    int64_t ntok = (int64_t)c->nsamples * c->seqlen, Dmax = Dm;
    const int fwin = float_windows_needed(o, cfg, c->nsamples);
    const int64_t ntok_f = (int64_t)fwin * c->seqlen; /* tokens on the float side */
    if (Hq > Dmax) Dmax = Hq;
    if (F > Dmax) Dmax = F;
    /* the float side holds no F32 block: each linear is converted from the file where it is used
     * (the same values, so the same products), one at a time */
    piso_model_set_linears_on_demand((struct piso_model *)(uintptr_t)mf, mf != mq);
    double t0 = piso_time();
    res->layers = calloc((size_t)nb * PISO_LIN_COUNT, sizeof *res->layers);
    float *Xq = malloc(sizeof(float) * ntok * Dm), *Xf = malloc(sizeof(float) * (ntok_f > 0 ? ntok_f : 1) * Dm);
    struct stats s = {0, NULL, NULL, NULL, NULL, 0, NULL, NULL}; /* allocated per stage */
    int rc = -1;
    struct float_taps cache = {{NULL, NULL, NULL, NULL}}; /* before the first goto: freed at done */
    struct quant_keep keep = {NULL, NULL};
    if (!res->layers || !Xq || !Xf) {
        piso_errorf("out of memory for the calibration activations (%lld tokens × %lld)", (long long)ntok,
                    (long long)Dm);
        goto done;
    }
    if (report_from_window0(o, Dmax)) { /* the first window's inputs of a stage, for its report */
        s.x0q = malloc(sizeof(float) * c->seqlen * Dmax), s.x0f = malloc(sizeof(float) * c->seqlen * Dmax);
        if (!s.x0q || !s.x0f) {
            piso_errorf("out of memory for one calibration window's activations");
            goto done;
        }
    }
    for (int w = 0; w < c->nsamples; w++) piso_embed(mf, c->tokens + (size_t)w * c->seqlen, c->seqlen, Xq + w * c->seqlen * Dm);
    memcpy(Xf, Xq, sizeof(float) * ntok_f * Dm);
    piso_model_drop_file_pages(mf); /* the embedding rows read from a lazy model's file (≈ 0.4 GB at 8B) */
    rss_trace(-1, "embedded");
    int done_lin = 0, total_lin = nb * PISO_LIN_COUNT;
    /* Cache the float taps of a block up to FLOAT_TAPS_MAX (always for small models). */
    int64_t widths[PISO_IN_COUNT];
    for (int st = 0; st < PISO_IN_COUNT; st++) widths[st] = piso_schema_input_width(cfg, (enum piso_block_input)st);
    int use_cache = (double)ntok_f * (2 * Dm + Hq + F) * sizeof(float) <= FLOAT_TAPS_MAX;
    for (int st = 0; st < 4 && use_cache; st++)
        if (!(cache.t[st] = malloc(sizeof(float) * (ntok_f > 0 ? ntok_f : 1) * widths[st]))) use_cache = 0;
    /* The quantized side's caches (struct quant_keep), each when it takes at most the budget (and
     * can be had): otherwise the block's earlier part runs again for the later stages. */
    if ((double)ntok * F * sizeof(float) <= keep_down_limit(o)) keep.down_in = malloc(sizeof(float) * ntok * F);
    if ((double)ntok * Hq * sizeof(float) <= keep_down_limit(o)) keep.o_in = malloc(sizeof(float) * ntok * Hq);
    struct piso_pipeline_timing *tm = &res->timing;
    int n_full_float = 0;
    for (int b = 0; b < nb; b++) {
        /* lazy models: this block's weights as F32 (no-op otherwise); released below, or at done */
        if (piso_model_block_acquire(mq, b) || piso_model_block_acquire((struct piso_model *)(uintptr_t)mf, b)) goto done;
        rss_trace(b, "blocks acquired");
        double tf0 = piso_time(), t_block_start = tf0;
        if (use_cache) { /* one float pass: taps of every stage, and the float stream advances */
            for (int w = 0; w < fwin; w++) {
                int64_t off = (int64_t)w * c->seqlen;
                struct piso_block_taps t = {cache.t[0] + off * Dm, cache.t[1] + off * Hq, cache.t[2] + off * Dm,
                                            cache.t[3] + off * F};
                if (piso_block_forward(mf, b, Xf + off * Dm, c->seqlen, &t)) goto done;
            }
            tm->float_forward += piso_time() - tf0;
            tm->one_float_block += piso_time() - tf0, n_full_float++;
        }
        for (int st = 0; st < PISO_IN_COUNT; st++) {
            s.D = widths[st];
            s.needs = stats_needs(o, s.D);
            if (stage_stats(mq, mf, b, (enum piso_block_input)st, Xq, Xf, c, fwin, &s, use_cache ? &cache : NULL,
                            &keep, tm))
                goto done;
            rss_trace(b, st == 0 ? "statistics attn_in" : st == 1 ? "statistics o_in" : st == 2 ? "statistics ffn_in" : "statistics down_in");
            /* the solvers take fp32 statistics: converted inside the fp64 buffers (no second copy) */
            const float *Hs = stats_to_f32(&s.H, s.D * s.D), *Gs = stats_to_f32(&s.G, s.D * s.D);
            const float *Fs = stats_to_f32(&s.F, s.D * s.D);
            /* the quantized inputs of every window when kept (X̃, whose Gram is H): with fewer tokens
             * than inputs the channel-wise PiSO sweep reads them instead of H */
            const float *Xst = st == PISO_IN_DOWN ? keep.down_in : st == PISO_IN_O ? keep.o_in : NULL;
            for (int j = 0; j < PISO_LIN_COUNT; j++) {
                enum piso_linear k = (enum piso_linear)j;
                if (piso_schema_linear(k)->input != st) continue;
                struct piso_layer_report *rep = &res->layers[res->n_layers];
                double ts = piso_time();
                float *wf_owned = NULL; /* a lazy float model's linear, converted for this solve */
                const float *Wf = piso_model_linear_f32(mf, b, (int)k, &wf_owned);
                if (!Wf || quantize_linear(mq, Wf, b, k, Hs, Gs, Fs, Xst, ntok, &s, c->seqlen, o, rep)) {
                    free(wf_owned);
                    goto done;
                }
                free(wf_owned);
                tm->solves += piso_time() - ts;
                res->n_layers++, done_lin++;
                /* ETA: from whole blocks once one is done (a block's layers differ in cost, blocks
                 * do not), from the layers before that */
                double el = piso_time() - t0, eta;
                if (b > 0) eta = (t_block_start - t0) / b * (nb - b) - (piso_time() - t_block_start);
                else eta = el / done_lin * (total_lin - done_lin);
                if (eta < 0) eta = 0;
                if (o->n_cost > 0)
                    piso_log("costs: block %d/%d, layer %s, %d candidates, %.1fs, ETA %.1fs\n", b + 1, nb, rep->name,
                             o->n_cost, el, eta);
                else
                    piso_log("block %d/%d, layer %s, rel. error %.4g (absmax %.4g), %.1fs, ETA %.1fs\n", b + 1, nb,
                             rep->name, rep->rel_err, rep->rel_err_absmax, el, eta);
            }
            stats_free(&s); /* the next stage has its own width and needs */
        }
        if (b + 1 < nb && !use_cache) {
            double ta = piso_time();
            if (advance(mf, b, Xf, c, fwin)) goto done;
            tm->float_forward += piso_time() - ta;
            tm->one_float_block += piso_time() - ta, n_full_float++;
        }
        double ta = piso_time();
        if ((b + 1 < nb || keep.down_in) && advance_quantized(mq, b, Xq, c, &keep)) goto done;
        tm->quant_forward += piso_time() - ta;
        rss_trace(b, "streams advanced");
        if (o->block_done && o->block_done(b, mq, res, o->block_ctx)) goto done;
        rss_trace(b, "block written");
        piso_model_block_release(mq, b), piso_model_block_release((struct piso_model *)(uintptr_t)mf, b);
    }
    res->seconds = piso_time() - t0;
    if (n_full_float) {
        /* the unit is a float block over every window: measured over the float side's windows */
        tm->one_float_block /= n_full_float;
        if (fwin > 0) tm->one_float_block *= (double)c->nsamples / fwin;
        if (tm->one_float_block > 0) tm->block_forwards = (tm->float_forward + tm->quant_forward) / tm->one_float_block / nb;
    }
    rc = 0;
done:
    for (int st = 0; st < 4; st++) free(cache.t[st]);
    free(keep.o_in), free(keep.down_in);
    free(Xq), free(Xf);
    stats_free(&s);
    free(s.x0q), free(s.x0f);
    for (int b = 0; b < nb; b++) /* after a failure: what is still acquired (no-op otherwise) */
        piso_model_block_release(mq, b), piso_model_block_release((struct piso_model *)(uintptr_t)mf, b);
    if (rc) piso_pipeline_result_free(res);
    return rc;
}

double piso_pipeline_keep_down_budget(int streaming) {
    return streaming ? 1.0 * (1 << 30) : 2.0 * (1 << 30);
}

void piso_pipeline_memory_estimate(const struct piso_config *cfg, int nsamples, int seqlen, int streaming,
                                   const struct piso_pipeline_opts *o, struct piso_pipeline_memory *m) {
    memset(m, 0, sizeof *m);
    for (int st = 0; st < piso_schema_steps(cfg); st++) {
        int layer;
        const struct piso_tensor_info *t = piso_schema_step(cfg, st, &layer);
        if (!piso_schema_present(cfg, t)) continue;
        m->model += 4.0 * (double)piso_schema_numel(cfg, t);
        if (layer == 0) m->block += 4.0 * (double)piso_schema_numel(cfg, t);
    }
    double Dm = cfg->dim, Hq = (double)cfg->n_heads * cfg->head_dim, F = cfg->hidden_dim, D = Dm;
    if (Hq > D) D = Hq;
    if (F > D) D = F;
    double ntok = (double)nsamples * seqlen, lin = F * Dm > Hq * Dm ? F * Dm : Hq * Dm; /* the largest linear */
    /* the float stream covers the float side's windows (all of them when the options are not known) */
    double ntok_f = (double)(o ? float_windows_needed(o, cfg, nsamples) : nsamples) * seqlen;
    m->streams = 4.0 * (ntok + ntok_f) * Dm;
    /* fp64 products of the widest stage (the ones its solver and report read; all three when the
     * options are not known) and a band of one window's fp32 product; the solves then hold them
     * as fp32 */
    int n_products = 3;
    if (o) {
        unsigned needs = stats_needs(o, (int64_t)D);
        n_products = !!(needs & STATS_H) + !!(needs & STATS_G) + !!(needs & STATS_F);
    }
    m->statistics = D * D * n_products * 8.0 + 4.0 * (D < GRAM_PANEL_ROWS ? D : GRAM_PANEL_ROWS) * D;
    double taps = 4.0 * ntok_f * (2 * Dm + Hq + F), keep_down = 4.0 * ntok * F, keep_o = 4.0 * ntok * Hq;
    const double budget = piso_pipeline_keep_down_budget(streaming);
    m->caches = (taps <= FLOAT_TAPS_MAX ? taps : 0) + (keep_down <= budget ? keep_down : 0) +
                (keep_o <= budget ? keep_o : 0);
    /* the solver's own buffers for the largest linear: the method's and absmax's results (fp32
     * dequantized values and int16 codes each); RTN adds only PiSO's fp64 products (u = G·w, and
     * H·w beside it when G is read), the others a factor and inverse of H and permuted H/G */
    const int rtn = o && o->rounding == PISO_ROUND_RTN;
    const int piso_scales = !o || o->ec.q.method == PISO_SCALE_PISO || o->ec.q.method == PISO_SCALE_PISO_SEQ;
    m->solver = 2 * 6.0 * lin;
    if (rtn) {
        const int reads_g = o->objective == PISO_OBJ_X_XQ;
        m->solver += 8.0 * lin * ((reads_g || piso_scales) + (reads_g && piso_scales));
    }
    else m->solver += D * D * (2 * 8.0 + 3 * 4.0) + 2 * 4.0 * lin;
    /* channel-wise PiSO's pruned sweep copies H once into its panel layout (up to its limit) */
    if (piso_scales && (!o || o->ec.q.group <= 0) && 4.0 * D * D <= (double)PISO_PRUNE_PACK_MAX) m->solver += 4.0 * D * D;
    m->streaming = streaming;
    /* eager: two F32 copies of the whole model (quantized and float); streaming: one F32 block, and
     * the float side's linears one at a time (piso_model_set_linears_on_demand) */
    m->float_side = streaming ? 4.0 * lin : m->model;
    const double solving = D * D * n_products * 4.0 + m->solver; /* the statistics as fp32, the solver */
    m->total = (streaming ? m->block : m->model) + m->float_side + m->streams + m->caches +
               (solving > m->statistics ? solving : m->statistics);
}

double piso_mem_available(void) {
    const char *e = getenv("PISO_MEM_AVAILABLE_MB");
    if (e && *e) return atof(e) * 1e6;
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return -1;
    char line[256];
    double kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lf kB", &kb) == 1) break;
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

int piso_pipeline_memory_check(const struct piso_config *cfg, int nsamples, int seqlen, int streaming,
                               const struct piso_pipeline_opts *o, double already) {
    struct piso_pipeline_memory m;
    piso_pipeline_memory_estimate(cfg, nsamples, seqlen, streaming, o, &m);
    const long long tokens = (long long)nsamples * seqlen;
    double avail = piso_mem_available();
    if (avail < 0 || m.total <= avail + already) return 0;
    char weights[160];
    if (streaming)
        snprintf(weights, sizeof weights, "streaming: one F32 block %.3g GB and the float side's largest linear %.3g GB",
                 m.block / 1e9, m.float_side / 1e9);
    else
        snprintf(weights, sizeof weights, "two F32 copies of the weights 2 × %.3g GB", m.model / 1e9);
    return piso_errorf("not enough memory: this run needs about %.3g GB (%s, "
                       "residual streams %.3g GB for %lld calibration tokens, statistics %.3g GB while accumulated, "
                       "activation caches %.3g GB, solver %.3g GB beside the statistics as fp32) but %.3g GB are available%s; use fewer "
                       "calibration tokens "
                       "(--nsamples, --seqlen) or a machine with more memory",
                       m.total / 1e9, weights, m.streams / 1e9, tokens, m.statistics / 1e9,
                       m.caches / 1e9, m.solver / 1e9, (avail + already) / 1e9,
                       already > 0 ? " (the copy already loaded included)" : "");
}
