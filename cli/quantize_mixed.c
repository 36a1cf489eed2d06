/* Mixed precision under a bit budget for `piso quantize` (see cli/mixed.h).
 *
 * Costs. Pass 1 quantizes every linear with every candidate on the float model's inputs (the
 * pipeline's cost pass: X̃ = X, so a layer's cost does not depend on the formats chosen upstream)
 * and records e(l, c) = Σ_rows (w − ŵ)ᵀH(w − ŵ), H = XᵀX, the output error the quantizer itself
 * minimises. Sensitivity: for each layer alone, quantized with the lightest candidate c₀ (the
 * largest perturbation, so the best signal), the KL divergence of the model's next-token
 * distributions to the float model's on the calibration windows, s(l). The predicted loss is
 * cost(l, c) = s(l) · e(l, c) / e(l, c₀): the layer's output error converted to KL nats with a
 * per-layer factor (a second-order model: the KL of a small change is quadratic in the output
 * error, with a layer-dependent curvature that the probe measures). Summed over layers it predicts
 * the KL of the whole model. Pass 2 quantizes block by block with the chosen formats, each layer
 * on the inputs of the already quantized blocks, as a uniform run does. */
#include "cli.h"
#include "mixed.h"
#include "piso/eval.h"
#include "piso/gguf.h"
#include "piso/gguf_export.h"
#include "piso/imatrix.h"
#include "piso/solve.h"
#include "piso/schema.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const assignment_names[CLI_MIXED_N] = {"optimal", "uniform", "kl-greedy", "llamacpp"};

int cli_mixed_wanted(const struct cli_quantize_args *a, int *rc) {
    *rc = 0;
    const int mixed = a->formats || a->target_bits > 0;
    if (!mixed) {
        if (a->baseline || a->sensitivity_check || a->sensitivity || a->sensitivity_windows)
            *rc = cli_usage_error("quantize", "option %s: only with --target-bits and --formats",
                                  a->baseline ? "--baseline" : a->sensitivity ? "--sensitivity"
                                  : a->sensitivity_windows ? "--sensitivity-windows" : "--sensitivity-check");
        else if (!a->format)
            *rc = cli_usage_error("quantize", "option --format: required (or --target-bits B with --formats F1,F2,...)");
        return 0;
    }
    if (!a->formats || !(a->target_bits > 0))
        *rc = cli_usage_error("quantize", "option %s: required with %s", a->formats ? "--target-bits" : "--formats",
                              a->formats ? "--formats" : "--target-bits");
    else if (a->format)
        *rc = cli_usage_error("quantize", "option --format: not with --formats (one format, or candidates per layer)");
    else if (a->group)
        *rc = cli_usage_error("quantize", "option --group: not with --formats (give the group in each candidate: int3g32)");
    else if (!a->calib)
        *rc = cli_usage_error("quantize", "option --calib: required with --target-bits (the costs are measured on it)");
    else if (a->sensitivity_check && !a->eval)
        *rc = cli_usage_error("quantize", "option --sensitivity-check: needs --eval TEXT (the held-out text it measures on)");
    return 1;
}

/* "int3g32" → grid int3, group 32; "int4" → channel-wise; MX/NVFP4 → their blocks. */
static int parse_candidate(const char *spec, int narrow, const struct piso_ec_opts *base, const char *interleave,
                           struct piso_ec_opts *o) {
    char fmt[32];
    long group = 0;
    snprintf(fmt, sizeof fmt, "%s", spec);
    char *g = strrchr(fmt, 'g');
    if (g && g[1] >= '0' && g[1] <= '9' && g > fmt) {
        char *end;
        group = strtol(g + 1, &end, 10);
        if (*end || group < 1 || group > (1 << 20))
            return piso_errorf("--formats: candidate '%s': the group after 'g' must be a number in 1..%d", spec, 1 << 20);
        *g = 0;
    }
    *o = *base;
    if (piso_grid_init(&o->q.grid, fmt, narrow)) return piso_error_context("--formats: candidate '%s'", spec);
    if (o->q.grid.block && group && group != o->q.grid.block)
        return piso_errorf("--formats: candidate '%s': %s has blocks of %d (leave the group out)", spec, o->q.grid.name,
                           o->q.grid.block);
    if (o->q.grid.block) group = o->q.grid.block;
    o->q.group = (int)group;
    o->interleave = group > 0 ? PISO_INTERLEAVE_GROUP : PISO_INTERLEAVE_LAYER;
    if (interleave && piso_interleave_from_name(interleave, &o->interleave))
        return piso_errorf("--interleave %s: unknown", interleave);
    return 0;
}

/* Bits a layer [N, D] takes in candidate o as piso stores it: N·D codes of grid.bits, one scale per
 * row and group (FP32 for free scales; 8 bits for the E8M0 / UE4M3 scales of MX and NVFP4, whose
 * representable set is 256 values), and NVFP4's FP32 tensor scale. */
static int64_t layer_bits(int64_t N, int64_t D, const struct piso_ec_opts *o) {
    const int64_t group = o->q.group > 0 && o->q.group < D ? o->q.group : D;
    const int64_t n_groups = (D + group - 1) / group;
    const int64_t scale_bits = o->q.grid.scale_set == PISO_SSET_ANY ? 32 : 8;
    return N * D * o->q.grid.bits + N * n_groups * scale_bits + (o->q.grid.scale_set == PISO_SSET_UE4M3 ? 32 : 0);
}

static int64_t layer_scale_bits(const struct piso_ec_opts *o) { return o->q.grid.scale_set == PISO_SSET_ANY ? 32 : 8; }

/* The target against the lightest and heaviest assignments (bits per weight, as stored). */
static int check_target(struct cli_mixed *x, const char *opt, const char *list) {
    int64_t lo = 0, hi = 0;
    for (int i = 0; i < x->n_lin; i++) {
        const int64_t *b = x->bits + (int64_t)i * x->n_cand;
        int64_t mn = b[0], mx = b[0];
        for (int c = 1; c < x->n_cand; c++) mn = b[c] < mn ? b[c] : mn, mx = b[c] > mx ? b[c] : mx;
        lo += mn, hi += mx;
    }
    const double lo_b = (double)lo / (double)x->n_params, hi_b = (double)hi / (double)x->n_params;
    if (x->target < lo_b)
        return piso_errorf("%s %g is below the smallest candidate: every layer at its lightest of {%s} takes "
                           "%.4f bits per weight (as stored, scales included)", opt, x->target, list, lo_b);
    if (x->target > hi_b)
        return piso_errorf("%s %g is above the largest candidate: every layer at its heaviest of {%s} takes "
                           "%.4f bits per weight (as stored, scales included); add a larger format or quantize uniformly",
                           opt, x->target, list, hi_b);
    return 0;
}

/* The lightest candidate over the whole model: the sensitivity probe. */
static void pick_probe(struct cli_mixed *x) {
    int64_t best = INT64_MAX;
    for (int c = 0; c < x->n_cand; c++) {
        int64_t s = 0;
        for (int i = 0; i < x->n_lin; i++) s += x->bits[(int64_t)i * x->n_cand + c];
        if (s < best) best = s, x->ref = c;
    }
}

/* Resets x for a target and splits the comma-separated candidate list into x->spec / x->n_cand. */
static int begin_candidates(struct cli_mixed *x, double target, const char *list, const char *opt) {
    memset(x, 0, sizeof *x);
    x->target = target, x->kld_after = -1, x->spearman = NAN;
    for (int k = 0; k < CLI_MIXED_N; k++) x->eval_kl[k] = x->eval_ppl[k] = -1;
    int n = 1;
    for (const char *p = list; *p; p++) n += *p == ',';
    if (n > 255) return piso_errorf("%s: %d candidates (at most 255)", opt, n);
    if (!(x->spec = calloc((size_t)n, sizeof *x->spec))) return piso_errorf("out of memory");
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof x->spec[0])
            return piso_errorf("%s '%s': an empty or too long candidate (a comma-separated list)", opt, list);
        memcpy(x->spec[x->n_cand++], p, len);
        p += len + (p[len] == ',');
    }
    return 0;
}

int cli_mixed_prepare(const struct cli_quantize_args *a, const struct piso_ec_opts *base, const struct piso_model *m,
                      struct cli_mixed *x) {
    if (begin_candidates(x, a->target_bits, a->formats, "--formats")) return -1;
    if (!(x->cand = calloc((size_t)x->n_cand, sizeof *x->cand))) return piso_errorf("out of memory");
    for (int c = 0; c < x->n_cand; c++)
        if (parse_candidate(x->spec[c], a->narrow, base, a->interleave, &x->cand[c])) return -1;
    x->n_lin = m->cfg.n_layers * PISO_LIN_COUNT;
    x->bits = calloc((size_t)x->n_lin * x->n_cand, sizeof *x->bits);
    if (!x->bits) return piso_errorf("out of memory");
    for (int c = 0; c < x->n_cand; c++) {
        for (int i = 0; i < x->n_lin; i++) {
            const struct piso_tensor_info *t = piso_schema_linear((enum piso_linear)(i % PISO_LIN_COUNT));
            const int64_t N = piso_schema_dim(&m->cfg, t->rows), D = piso_schema_dim(&m->cfg, t->cols);
            x->bits[(int64_t)i * x->n_cand + c] = layer_bits(N, D, &x->cand[c]);
            if (c == 0) x->n_params += N * D;
        }
    }
    pick_probe(x);
    return check_target(x, "--target-bits", a->formats);
}

/* The weight slot of linear i = block · PISO_LIN_COUNT + kind. */
static float *lin_weight(const struct piso_model *m, int i, int64_t *numel) {
    const struct piso_tensor_info *t = piso_schema_linear((enum piso_linear)(i % PISO_LIN_COUNT));
    *numel = piso_schema_dim(&m->cfg, t->rows) * piso_schema_dim(&m->cfg, t->cols);
    return *piso_schema_slot((struct piso_model *)(uintptr_t)m, t, i / PISO_LIN_COUNT);
}

/* KL of mq with layer i replaced by wq (then restored from mf). */
static int single_layer_kl(struct piso_model *mq, const struct piso_model *mf, int i, const float *wq,
                           const struct piso_kl_ref *kr, double *kl) {
    int64_t n;
    float *w = lin_weight(mq, i, &n);
    const float *wf = lin_weight(mf, i, &n);
    memcpy(w, wq, sizeof(float) * (size_t)n);
    int rc = piso_kl_measure(kr, mq, kl);
    memcpy(w, wf, sizeof(float) * (size_t)n);
    return rc;
}

static void layer_name(int i, char *buf, size_t n) {
    piso_linear_hf_name(i / PISO_LIN_COUNT, (enum piso_linear)(i % PISO_LIN_COUNT), buf, n);
}

/* err, cost [n_lin, n_cand], sens [n_lin] and the optimal/uniform/KL-greedy choices; -1 when out of memory. */
static int alloc_tables(struct cli_mixed *x) {
    const size_t nn = (size_t)x->n_lin * (size_t)x->n_cand;
    x->err = calloc(nn, sizeof *x->err), x->cost = calloc(nn, sizeof *x->cost);
    x->sens = calloc((size_t)x->n_lin, sizeof *x->sens);
    for (int k = 0; k < CLI_MIXED_LLAMACPP; k++) x->choice[k] = malloc(sizeof(int) * (size_t)x->n_lin);
    return x->err && x->cost && x->sens && x->choice[0] && x->choice[1] && x->choice[2] ? 0 : -1;
}

/* cost = sens / err[probe] · err ("kl", the default), or the plain output error ("output"). */
static void set_costs(struct cli_mixed *x, const char *sensitivity) {
    const int by_kl = !sensitivity || !strcmp(sensitivity, "kl");
    x->plain_error = !by_kl;
    for (int i = 0; i < x->n_lin; i++) {
        const double *e = x->err + (int64_t)i * x->n_cand, f = e[x->ref] > 0 ? x->sens[i] / e[x->ref] : 0;
        for (int c = 0; c < x->n_cand; c++) x->cost[(int64_t)i * x->n_cand + c] = by_kl ? f * e[c] : e[c];
    }
}

/* The assignments (optimum, uniform, KL-greedy; llama.cpp's mixtures are set by the GGUF path)
 * and the one --baseline applies. choice[] must be allocated ([n_lin] each). */
static int assign(struct cli_mixed *x, const char *baseline, const char *opt, const char *list) {
    const int n = x->n_lin;
    struct piso_mckp p = {n, x->n_cand, x->bits, x->cost, (int64_t)floor(x->target * (double)x->n_params)};
    if (piso_mckp_solve(&p, x->choice[CLI_MIXED_OPTIMAL], NULL, NULL)) return -1;
    int u = piso_mckp_uniform(&p);
    if (u >= 0)
        for (int i = 0; i < n; i++) x->choice[CLI_MIXED_UNIFORM][i] = u;
    else
        free(x->choice[CLI_MIXED_UNIFORM]), x->choice[CLI_MIXED_UNIFORM] = NULL;
    if (piso_mckp_kl_greedy(&p, x->sens, x->choice[CLI_MIXED_KL_GREEDY])) return -1;
    x->applied = CLI_MIXED_OPTIMAL;
    for (int k = 0; baseline && k < CLI_MIXED_N; k++)
        if (!strcmp(baseline, assignment_names[k])) x->applied = k;
    if (!x->choice[x->applied])
        return piso_errorf("--baseline %s: no %s of {%s} fits %s %g", baseline,
                           x->applied == CLI_MIXED_UNIFORM ? "single candidate" : "llama.cpp mixture made", list, opt,
                           x->target);
    for (int k = 0; k < CLI_MIXED_N; k++)
        if (x->choice[k]) {
            const double bits = (double)piso_mckp_weight(&p, x->choice[k]) / (double)x->n_params;
            piso_log("assignment %s%s%s: %.4f bits per weight, predicted loss %.5g%s\n", assignment_names[k],
                     k == CLI_MIXED_LLAMACPP ? " " : "", k == CLI_MIXED_LLAMACPP ? x->mixture : "", bits,
                     piso_mckp_cost(&p, x->choice[k]), k == x->applied ? " (applied)" : "");
        }
    return 0;
}

int cli_mixed_run(const struct cli_quantize_args *a, struct piso_model *mq, const struct piso_model *mf,
                  const struct piso_calib *cal, struct piso_pipeline_opts *po, const char *eval_text, size_t eval_len,
                  struct cli_mixed *x, struct piso_pipeline_result *res) {
    const int n = x->n_lin, nc = x->n_cand;
    const int64_t nn = (int64_t)n * nc;
    int rc = -1, *eval_tokens = NULL, n_eval = 0, ctx = a->ctx > 0 ? (int)a->ctx : 0;
    float **keep = calloc((size_t)nn, sizeof *keep);
    struct piso_kl_ref kr, ke;
    memset(&kr, 0, sizeof kr), memset(&ke, 0, sizeof ke);
    struct piso_pipeline_result costs;
    memset(&costs, 0, sizeof costs);
    x->layer_ec = calloc((size_t)n, sizeof *x->layer_ec);
    if (alloc_tables(x) || !keep || !x->layer_ec) {
        piso_errorf("out of memory for the mixed-precision tables");
        goto done;
    }
    if (eval_text && piso_kl_text_windows(mf, eval_text, eval_len, &ctx, &eval_tokens, &n_eval)) goto done;
    /* pass 1: every candidate on float inputs */
    struct piso_pipeline_opts pc = *po;
    pc.n_cost = nc, pc.cost_ec = x->cand, pc.cost = x->err, pc.keep = keep;
    pc.keep_mask = a->sensitivity_check ? ~0u : 1u << x->ref;
    if (nc > 32 && a->sensitivity_check) {
        piso_errorf("--sensitivity-check: at most 32 candidates (%d given)", nc);
        goto done;
    }
    piso_log("mixed precision: costs of %d candidates for %d layers (float inputs)\n", nc, n);
    if (piso_quantize_model(mq, mf, cal, &pc, &costs)) goto done;
    /* sensitivities: one layer at a time at the lightest candidate, KL on the calibration windows */
    int n_probe = a->sensitivity_windows > 0 ? (int)a->sensitivity_windows : 8;
    if (n_probe > cal->nsamples) n_probe = cal->nsamples;
    x->probe_windows = n_probe;
    if (piso_kl_ref_init(&kr, mf, cal->tokens, n_probe, cal->seqlen, 0)) goto done;
    for (int i = 0; i < n; i++) {
        if (single_layer_kl(mq, mf, i, keep[(int64_t)i * nc + x->ref], &kr, &x->sens[i])) goto done;
        char nm[96];
        layer_name(i, nm, sizeof nm);
        piso_log("sensitivity %d/%d: %s at %s: KL %.4g nats\n", i + 1, n, nm, x->spec[x->ref], x->sens[i]);
    }
    set_costs(x, a->sensitivity);
    if (a->sensitivity_check) { /* measured KL of every single-layer change on the held-out text */
        if (!(x->measured = calloc((size_t)nn, sizeof *x->measured))) {
            piso_errorf("out of memory");
            goto done;
        }
        if (piso_kl_ref_init(&ke, mf, eval_tokens, n_eval, ctx, ctx / 2)) goto done;
        for (int64_t k = 0; k < nn; k++)
            if (single_layer_kl(mq, mf, (int)(k / nc), keep[k], &ke, &x->measured[k])) goto done;
        x->spearman = piso_spearman((int)nn, x->cost, x->measured);
        piso_log("sensitivity check: Spearman rank correlation of predicted and measured KL over %lld single-layer "
                 "changes: %.4f\n", (long long)nn, x->spearman);
    }
    if (assign(x, a->baseline, "--target-bits", a->formats)) goto done;
    /* pass 2: block by block with the chosen formats; the other assignments first (evaluated,
     * then discarded: --evaluate-baselines), the applied one last (it stays in mq) */
    if (eval_tokens && !ke.tokens && piso_kl_ref_init(&ke, mf, eval_tokens, n_eval, ctx, ctx / 2)) goto done;
    for (int k = 0; k < CLI_MIXED_N; k++) x->eval_kl[k] = x->eval_ppl[k] = -1;
    for (int step = 0; step < CLI_MIXED_N; step++) {
        const int k = (x->applied + 1 + step) % CLI_MIXED_N; /* ends with the applied one */
        if (!x->choice[k] || (k != x->applied && !(a->evaluate_baselines && eval_tokens))) continue;
        for (int i = 0; i < n; i++) {
            int64_t nw;
            float *w = lin_weight(mq, i, &nw);
            memcpy(w, lin_weight(mf, i, &nw), sizeof(float) * (size_t)nw); /* float again */
            x->layer_ec[i] = x->cand[x->choice[k][i]];
        }
        po->layer_ec = x->layer_ec;
        piso_pipeline_result_free(res);
        piso_log("mixed precision: quantizing with the %s assignment\n", assignment_names[k]);
        if (piso_quantize_model(mq, mf, cal, po, res)) goto done;
        if (eval_tokens) {
            struct piso_ppl_result pr;
            if (piso_kl_measure(&ke, mq, &x->eval_kl[k]) || piso_perplexity(mq, eval_text, eval_len, ctx, &pr)) goto done;
            x->eval_ppl[k] = pr.ppl;
            piso_log("%s: KL divergence to the float model on --eval %.6f nats, perplexity %.4f\n", assignment_names[k],
                     x->eval_kl[k], pr.ppl);
        }
    }
    x->kld_after = x->eval_kl[x->applied];
    rc = 0;
done:
    for (int64_t k = 0; keep && k < nn; k++) free(keep[k]);
    free(keep), free(eval_tokens);
    piso_kl_ref_free(&kr), piso_kl_ref_free(&ke);
    piso_pipeline_result_free(&costs);
    return rc;
}

static void assignment_json(struct piso_json *w, const struct cli_mixed *x, int k) {
    struct piso_mckp p = {x->n_lin, x->n_cand, x->bits, x->cost, 0};
    piso_json_object_begin(w, assignment_names[k]);
    if (k == CLI_MIXED_LLAMACPP) piso_json_string(w, "mixture", x->mixture);
    piso_json_number(w, "bits_per_weight", (double)piso_mckp_weight(&p, x->choice[k]) / (double)x->n_params);
    piso_json_int(w, "bits", piso_mckp_weight(&p, x->choice[k]));
    piso_json_number(w, "predicted_loss", piso_mckp_cost(&p, x->choice[k]));
    if (x->eval_kl[k] >= 0) piso_json_number(w, "kld", x->eval_kl[k]);
    if (x->eval_ppl[k] >= 0) piso_json_number(w, "perplexity", x->eval_ppl[k]);
    piso_json_array_begin(w, "formats");
    for (int i = 0; i < x->n_lin; i++) piso_json_string(w, NULL, x->spec[x->choice[k][i]]);
    piso_json_array_end(w);
    piso_json_object_end(w);
}

void cli_mixed_json(struct piso_json *w, const struct cli_mixed *x) {
    piso_json_object_begin(w, "mixed_precision");
    piso_json_number(w, "target_bits", x->target);
    piso_json_int(w, "weights", x->n_params);
    piso_json_string(w, "applied", assignment_names[x->applied]);
    piso_json_array_begin(w, "candidates");
    for (int c = 0; c < x->n_cand; c++) piso_json_string(w, NULL, x->spec[c]);
    piso_json_array_end(w);
    piso_json_string(w, "sensitivity_probe", x->spec[x->ref]);
    piso_json_int(w, "sensitivity_windows", x->probe_windows);
    piso_json_string(w, "bits_counted", "codes (grid bits) + one scale per row and group (FP32; MX/NVFP4: 8) + NVFP4 tensor scale (FP32)");
    piso_json_string(w, "predicted_loss",
                     x->plain_error ? "sum over layers of e(layer, format) = sum_rows (w - w_hat)^T H (w - w_hat) on float inputs"
                                    : "sum over layers of KL(float || layer alone at the probe) * e(layer, format) / e(layer, probe), "
                                      "e = sum_rows (w - w_hat)^T H (w - w_hat) on float inputs");
    piso_json_object_begin(w, "assignments");
    for (int k = 0; k < CLI_MIXED_N; k++)
        if (x->choice[k]) assignment_json(w, x, k);
        else if (k != CLI_MIXED_LLAMACPP || x->types) piso_json_null(w, assignment_names[k]);
    piso_json_object_end(w);
    if (x->kld_after >= 0) piso_json_number(w, "kld_after", x->kld_after);
    if (x->measured) {
        piso_json_object_begin(w, "sensitivity_check");
        piso_json_number(w, "spearman", x->spearman);
        /* across layers for each format: the ranking the knapsack relies on within a format */
        piso_json_object_begin(w, "spearman_per_format");
        double *pc = malloc(sizeof(double) * (size_t)x->n_lin), *mc = malloc(sizeof(double) * (size_t)x->n_lin);
        for (int c = 0; pc && mc && c < x->n_cand; c++) {
            for (int i = 0; i < x->n_lin; i++)
                pc[i] = x->cost[(int64_t)i * x->n_cand + c], mc[i] = x->measured[(int64_t)i * x->n_cand + c];
            piso_json_number(w, x->spec[c], piso_spearman(x->n_lin, pc, mc));
        }
        free(pc), free(mc);
        piso_json_object_end(w);
        piso_json_array_begin(w, "pairs");
        for (int64_t k = 0; k < (int64_t)x->n_lin * x->n_cand; k++) {
            char nm[96];
            layer_name((int)(k / x->n_cand), nm, sizeof nm);
            piso_json_object_begin(w, NULL);
            piso_json_string(w, "layer", nm);
            piso_json_string(w, "format", x->spec[k % x->n_cand]);
            piso_json_number(w, "predicted_kl", x->cost[k]);
            piso_json_number(w, "measured_kl", x->measured[k]);
            piso_json_object_end(w);
        }
        piso_json_array_end(w);
        piso_json_object_end(w);
    }
    piso_json_object_end(w);
}

void cli_mixed_layer_json(struct piso_json *w, const struct cli_mixed *x, const struct piso_layer_report *r) {
    if (!x || !x->layer_ec) return;
    const int64_t i = (int64_t)r->layer * PISO_LIN_COUNT + r->kind, k = i * x->n_cand + x->choice[x->applied][i];
    const struct piso_ec_opts *o = &x->cand[x->choice[x->applied][i]];
    piso_json_string(w, "format", x->spec[x->choice[x->applied][i]]);
    piso_json_string(w, "grid_name", o->q.grid.name);
    piso_json_array_begin(w, "grid");
    for (int j = 0; j < o->q.grid.n; j++) piso_json_number(w, NULL, o->q.grid.v[j]);
    piso_json_array_end(w);
    piso_json_int(w, "bits", x->bits[k]);
    piso_json_number(w, "bits_per_weight", (double)x->bits[k] / (double)(r->N * r->D));
    piso_json_int(w, "scale_bits", layer_scale_bits(o));
    piso_json_number(w, "predicted_cost", x->cost[k]);
    piso_json_number(w, "output_error_float_inputs", x->err[k]);
    piso_json_number(w, "sensitivity_kl", x->sens[i]);
}

void cli_mixed_free(struct cli_mixed *x) {
    free(x->cand), free(x->types), free(x->spec), free(x->bits), free(x->err), free(x->sens), free(x->cost), free(x->measured);
    for (int k = 0; k < CLI_MIXED_N; k++) free(x->choice[k]);
    free(x->layer_ec), free(x->linear_types);
    memset(x, 0, sizeof *x);
}

/* ---- GGUF: --target-bpw B --types T1,T2,... ------------------------------------------------- */

/* Σ_rows (w − ŵ)ᵀH(w − ŵ) with the layer's calibration Hessian; Σ h_j (w − ŵ)² with the imatrix
 * when there are no Hessians; else the plain squared error. */
static int gguf_error(const struct piso_gguf_export_opts *o, const char *name, const float *W, const float *Wq,
                      int64_t N, int64_t D, double *err) {
    const float *H = piso_calib_hessian_for(o->hessians, name, D);
    if (H) {
        *err = piso_layer_objective(N, D, W, Wq, H, NULL, NULL);
        return isnan(*err) ? piso_errorf("%s: out of memory for its output error", name) : 0;
    }
    float *h = o->imatrix ? malloc(sizeof(float) * (size_t)D) : NULL;
    if (o->imatrix && !h) return piso_errorf("%s: out of memory", name);
    int r = h ? piso_imatrix_get(o->imatrix, name, D, h) : 1;
    if (r < 0) {
        free(h);
        return -1;
    }
    double e = 0;
    for (int64_t k = 0; k < N * D; k++) {
        const double d = (double)W[k] - Wq[k];
        e += (r == 0 ? h[k % D] : 1.0) * d * d;
    }
    free(h);
    *err = e;
    return 0;
}

static void gguf_name(int i, char *buf, size_t n) {
    piso_schema_name(piso_schema_linear((enum piso_linear)(i % PISO_LIN_COUNT)), PISO_NAME_GGUF, i / PISO_LIN_COUNT,
                     buf, n);
}

/* llama-quantize's mixtures as assignments over the candidates (when every type they pick, after
 * the row fallback, is stored like some candidate); the best one within the budget becomes the
 * llamacpp assignment. */
static void gguf_mixtures(const struct piso_model *m, struct cli_mixed *x) {
    static const char *const names[] = {"Q2_K", "Q3_K_S", "Q3_K_M", "Q4_K_M", "Q5_K_M"};
    const struct piso_config *cfg = &m->cfg;
    struct piso_mckp p = {x->n_lin, x->n_cand, x->bits, x->cost, (int64_t)floor(x->target * (double)x->n_params)};
    int *ch = malloc(sizeof(int) * (size_t)x->n_lin);
    double best = INFINITY;
    for (int f = 0; ch && f < 5; f++) {
        int ftype, base, ok = 1;
        piso_gguf_mixture_from_name(names[f], &ftype, &base);
        for (int i = 0; i < x->n_lin && ok; i++) {
            const struct piso_tensor_info *t = piso_schema_linear((enum piso_linear)(i % PISO_LIN_COUNT));
            const int64_t D = piso_schema_dim(cfg, t->cols);
            const int mt = piso_gguf_type_for_row(
                piso_gguf_mixture_type(ftype, base, t->role, i / PISO_LIN_COUNT, cfg->n_layers,
                                       cfg->n_heads / cfg->n_kv_heads, D, cfg->tied_embeddings), D);
            ch[i] = -1;
            for (int c = 0; c < x->n_cand && ch[i] < 0; c++)
                if (piso_gguf_type_for_row(x->types[c], D) == mt) ch[i] = c;
            ok = ch[i] >= 0;
        }
        x->mix_bpw[f] = x->mix_cost[f] = -1;
        if (!ok) continue;
        x->mix_bpw[f] = (double)piso_mckp_weight(&p, ch) / (double)x->n_params, x->mix_cost[f] = piso_mckp_cost(&p, ch);
        if (piso_mckp_weight(&p, ch) <= p.budget && x->mix_cost[f] < best) {
            best = x->mix_cost[f];
            snprintf(x->mixture, sizeof x->mixture, "%s", names[f]);
            if (!x->choice[CLI_MIXED_LLAMACPP]) x->choice[CLI_MIXED_LLAMACPP] = malloc(sizeof(int) * (size_t)x->n_lin);
            if (x->choice[CLI_MIXED_LLAMACPP]) memcpy(x->choice[CLI_MIXED_LLAMACPP], ch, sizeof(int) * (size_t)x->n_lin);
        }
    }
    free(ch);
}

int cli_gguf_mixed_prepare(const struct cli_quantize_args *a, const struct piso_model *m, struct cli_mixed *x) {
    if (begin_candidates(x, a->target_bpw, a->types, "--types")) return -1;
    if (!(x->types = calloc((size_t)x->n_cand, sizeof *x->types))) return piso_errorf("out of memory");
    for (int c = 0; c < x->n_cand; c++)
        if (piso_ggml_type_from_name(x->spec[c], &x->types[c]) || !piso_ggml_traits(x->types[c])->from_float)
            return piso_errorf("--types: unknown or unsupported type '%s'", x->spec[c]);
    const struct piso_config *cfg = &m->cfg;
    const int nl = x->n_lin = cfg->n_layers * PISO_LIN_COUNT, nc = x->n_cand;
    const int64_t nn = (int64_t)nl * nc;
    x->bits = calloc((size_t)nn, sizeof *x->bits);
    if (!x->bits) return piso_errorf("out of memory");
    for (int i = 0; i < nl; i++) {
        const struct piso_tensor_info *t = piso_schema_linear((enum piso_linear)(i % PISO_LIN_COUNT));
        const int64_t N = piso_schema_dim(cfg, t->rows), D = piso_schema_dim(cfg, t->cols);
        for (int c = 0; c < nc; c++)
            x->bits[(int64_t)i * nc + c] = N * (int64_t)piso_ggml_row_size(piso_gguf_type_for_row(x->types[c], D), D) * 8;
        x->n_params += N * D;
    }
    pick_probe(x);
    return check_target(x, "--target-bpw", a->types);
}

int cli_gguf_mixed(const struct cli_quantize_args *a, const struct piso_model *m, const int *ids, int n_ids, int bos,
                   struct piso_gguf_export_opts *o, struct cli_mixed *x) {
    const struct piso_config *cfg = &m->cfg;
    const int nl = x->n_lin, nc = x->n_cand;
    int rc = -1, ctx = (int)a->ctx, nwin = n_ids / ctx, *win = NULL;
    struct piso_model *mq = NULL;
    float **keep = calloc((size_t)nl, sizeof *keep), *deq = NULL;
    struct piso_kl_ref kr;
    memset(&kr, 0, sizeof kr);
    x->linear_types = calloc((size_t)nl, sizeof *x->linear_types);
    if (alloc_tables(x) || !keep || !x->linear_types) {
        piso_errorf("out of memory for the mixed-precision tables");
        goto done;
    }
    if (nwin < 1) {
        piso_errorf("--calib %s: %d tokens, fewer than one chunk of --ctx %d for the sensitivity probes", a->calib, n_ids,
                    ctx);
        goto done;
    }
    /* costs: every candidate type, stored and read back as the export would */
    piso_log("mixed precision: costs of %d types for %d weights\n", nc, nl);
    for (int i = 0; i < nl; i++) {
        int64_t numel;
        const float *W = lin_weight(m, i, &numel);
        const struct piso_tensor_info *t = piso_schema_linear((enum piso_linear)(i % PISO_LIN_COUNT));
        const int64_t N = piso_schema_dim(cfg, t->rows), D = piso_schema_dim(cfg, t->cols);
        char nm[96];
        gguf_name(i, nm, sizeof nm);
        for (int c = 0; c < nc; c++) {
            if (!deq && !(deq = malloc(sizeof(float) * (size_t)numel))) {
                piso_errorf("out of memory");
                goto done;
            }
            if (piso_gguf_weight_roundtrip(o, nm, W, N, D, x->types[c], 1, deq) ||
                gguf_error(o, nm, W, deq, N, D, &x->err[(int64_t)i * nc + c]))
                goto done;
            if (c == x->ref) keep[i] = deq, deq = NULL;
        }
        free(deq), deq = NULL;
    }
    /* sensitivities: one weight at a time at the lightest type, KL on --calib chunks */
    if (piso_model_load(a->model, a->tokenizer, &mq) || piso_model_make_writable(mq)) goto done;
    if (a->sensitivity_windows > 0 && a->sensitivity_windows < nwin) nwin = (int)a->sensitivity_windows;
    else if (a->sensitivity_windows == 0 && nwin > 8) nwin = 8;
    x->probe_windows = nwin;
    if (!(win = malloc(sizeof(int) * (size_t)nwin * ctx))) {
        piso_errorf("out of memory");
        goto done;
    }
    memcpy(win, ids, sizeof(int) * (size_t)nwin * ctx);
    for (int w = 0; w < nwin; w++) win[(size_t)w * ctx] = bos; /* llama.cpp's chunks: BOS first */
    if (piso_kl_ref_init(&kr, m, win, nwin, ctx, 0)) goto done;
    for (int i = 0; i < nl; i++) {
        if (single_layer_kl(mq, m, i, keep[i], &kr, &x->sens[i])) goto done;
        char nm[96];
        gguf_name(i, nm, sizeof nm);
        piso_log("sensitivity %d/%d: %s at %s: KL %.4g nats\n", i + 1, nl, nm, x->spec[x->ref], x->sens[i]);
    }
    set_costs(x, a->sensitivity);
    gguf_mixtures(m, x);
    if (assign(x, a->baseline, "--target-bpw", a->types)) goto done;
    for (int i = 0; i < nl; i++) x->linear_types[i] = x->types[x->choice[x->applied][i]];
    o->linear_types = x->linear_types;
    rc = 0;
done:
    for (int i = 0; keep && i < nl; i++) free(keep[i]);
    free(keep), free(deq), free(win);
    piso_kl_ref_free(&kr);
    piso_model_free(mq);
    return rc;
}

void cli_gguf_mixed_json(struct piso_json *w, const struct cli_mixed *x, const struct piso_model *m) {
    cli_mixed_json(w, x);
    static const char *const names[] = {"Q2_K", "Q3_K_S", "Q3_K_M", "Q4_K_M", "Q5_K_M"};
    piso_json_object_begin(w, "llamacpp_mixtures"); /* over the same weights; null: a type not among --types */
    for (int f = 0; f < 5; f++) {
        if (x->mix_bpw[f] < 0) {
            piso_json_null(w, names[f]);
            continue;
        }
        piso_json_object_begin(w, names[f]);
        piso_json_number(w, "bits_per_weight", x->mix_bpw[f]);
        piso_json_number(w, "predicted_loss", x->mix_cost[f]);
        piso_json_object_end(w);
    }
    piso_json_object_end(w);
    piso_json_array_begin(w, "layers");
    for (int i = 0; i < x->n_lin; i++) {
        const int c = x->choice[x->applied][i];
        const int64_t k = (int64_t)i * x->n_cand + c;
        const struct piso_tensor_info *t = piso_schema_linear((enum piso_linear)(i % PISO_LIN_COUNT));
        const int64_t D = piso_schema_dim(&m->cfg, t->cols), N = piso_schema_dim(&m->cfg, t->rows);
        char nm[96];
        gguf_name(i, nm, sizeof nm);
        piso_json_object_begin(w, NULL);
        piso_json_string(w, "name", nm);
        piso_json_string(w, "type", x->spec[c]);
        piso_json_string(w, "stored", piso_ggml_traits(piso_gguf_type_for_row(x->types[c], D))->name);
        piso_json_int(w, "bits", x->bits[k]);
        piso_json_number(w, "bits_per_weight", (double)x->bits[k] / (double)(N * D));
        piso_json_number(w, "predicted_cost", x->cost[k]);
        piso_json_number(w, "output_error", x->err[k]);
        piso_json_number(w, "sensitivity_kl", x->sens[i]);
        piso_json_object_end(w);
    }
    piso_json_array_end(w);
}
