/* piso layer — solve one layer problem file with a scale method and report/write the result. */
#include "accum.h"
#include "cli.h"
#include "rounders.h"
#include "piso/json_out.h"
#include "piso/pipeline.h"
#include "piso/quant.h"
#include "piso/safetensors.h"

#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

struct layer_args {
    struct cli_common common;
    const char *problem, *format, *scale, *out, *rounding, *interleave;
    int64_t group, threads, seed;
    int narrow, no_negative, act_order;
    double damp;
    double alpha; /* < 0: not given */
    int64_t beam, candidates;
    int alpha_sample;
    int64_t acc_bits, acc_tile, input_bits;
    int input_signed, no_soft_threshold;
};

static const char *const layer_roundings[] = {"rtn", "gptq", "qronos", "sr", "beam", "gpfq", NULL};
static const char *const layer_interleaves[] = {"layer", "group", NULL};

static const char *const layer_scales[] = {"absmax",   "mse-grid", "piso-datafree", "piso-diag", "piso",
                                           "piso-seq", NULL};

static const struct cli_option layer_options[] = {
    {"--problem", NULL, CLI_STRING, offsetof(struct layer_args, problem), .arg = "P.safetensors",
     .help = "F32 'weight' [N, D] and 'hessian' [D, D] (+ 'cross' [D, D] = G), or\n"
             "'inputs' [T, D] (+ 'inputs_float' [T, D]): H = X~^T X~, G = X~^T X",
     .required = 1},
    {"--format", NULL, CLI_STRING, offsetof(struct layer_args, format), .arg = "FMT",
     .help = "int2..int8, e2m1, e2m3, e3m2, e4m3, e5m2; mxfp4, mxfp6_e2m3, mxfp6_e3m2,\nmxfp8_e4m3, mxfp8_e5m2, mxint8 (blocks of 32, power-of-two scales),\nnvfp4 (blocks of 16, UE4M3 scales x a tensor scale)", .required = 1},
    {"--group", NULL, CLI_INT, offsetof(struct layer_args, group), .arg = "G",
     .help = "group size along D (must divide D); 0: one scale per row", .imin = 0, .imax = 1 << 30},
    {"--scale", NULL, CLI_CHOICE, offsetof(struct layer_args, scale), .help = "scale method", .def = "piso",
     .choices = layer_scales},
    {"--narrow", NULL, CLI_FLAG, offsetof(struct layer_args, narrow), .help = "symmetric integer range (int4: -7..7)"},
    {"--no-negative", NULL, CLI_FLAG, offsetof(struct layer_args, no_negative),
     .help = "never use negative scales on asymmetric grids"},
    {"--out", NULL, CLI_STRING, offsetof(struct layer_args, out), .arg = "Q.safetensors",
     .help = "write dequant [N, D] F32, scales [N, D/g] F32, codes [N, D] (I8 for\n"
             "integer grids, U8 grid index for minifloats)"},
    {"--rounding", NULL, CLI_CHOICE, offsetof(struct layer_args, rounding),
     .help = "rtn, or error correction: gptq, qronos, sr (successive rounding on\n"
             "the alpha-target), beam (K-best beam search on it), gpfq",
     .def = "rtn", .choices = layer_roundings},
    CLI_OPTIONS_ROUNDERS(struct layer_args),
    {"--seed", NULL, CLI_INT, offsetof(struct layer_args, seed), .arg = "S", .help = "seed of --alpha-sample",
     .imin = INT64_MIN, .imax = INT64_MAX},
    {"--interleave", NULL, CLI_CHOICE, offsetof(struct layer_args, interleave),
     .help = "error correction: scales once per layer, or at each group's start\n(default: group with --group)",
     .choices = layer_interleaves},
    {"--act-order", NULL, CLI_FLAG, offsetof(struct layer_args, act_order),
     .help = "error correction: columns by decreasing Hessian diagonal"},
    {"--damp", NULL, CLI_DOUBLE, offsetof(struct layer_args, damp), .arg = "F",
     .help = "error correction: lambda = F * mean(diag H) (gptq/sr/beam, 0.01) or\nF * sigma_max(H) (qronos, 1e-6)",
     .dmin = 0, .dmax = 1e6},
    {"--threads", NULL, CLI_INT, offsetof(struct layer_args, threads), .arg = "N",
     .help = "OpenMP threads; 0: the default", .imin = 0, .imax = 1 << 16},
    {0},
};

static const struct cli_option layer_accum_options[] = {CLI_OPTIONS_ACCUM(struct layer_args), {0}};

static const struct cli_section layer_sections[] = {
    {NULL, NULL, layer_options},
    {"Accumulator-aware quantization (AXE)", "with --accumulator-bits", layer_accum_options},
    {0},
};

static const struct cli_command layer_command = {
    .name = "layer",
    .summary = "Solve one layer problem (weight + Hessian) with a scale method.",
    .sections = layer_sections,
};

static int write_result(const char *path, const struct piso_layer_result *r, const struct piso_quant_opts *o,
                        const char *format) {
    int64_t N = r->N, D = r->D;
    int64_t sh_nd[2] = {N, D}, sh_s[2] = {N, r->n_groups};
    struct piso_st_writer *w = piso_st_writer_new();
    piso_st_writer_add(w, "dequant", PISO_DTYPE_F32, 2, sh_nd, r->dequant);
    piso_st_writer_add(w, "scales", PISO_DTYPE_F32, 2, sh_s, r->scales);
    void *codes = malloc((size_t)(N * D));
    if (!codes) {
        piso_st_writer_free(w);
        return piso_errorf("%s: out of memory", path);
    }
    if (o->grid.is_int) {
        int8_t *c = codes;
        for (int64_t k = 0; k < N * D; k++) c[k] = (int8_t)r->codes[k];
    } else {
        uint8_t *c = codes;
        for (int64_t k = 0; k < N * D; k++) c[k] = (uint8_t)r->codes[k];
    }
    piso_st_writer_add(w, "codes", o->grid.is_int ? PISO_DTYPE_I8 : PISO_DTYPE_U8, 2, sh_nd, codes);
    char gbuf[32];
    snprintf(gbuf, sizeof gbuf, "%d", o->group);
    piso_st_writer_meta(w, "format", format);
    piso_st_writer_meta(w, "grid", o->grid.name);
    piso_st_writer_meta(w, "method", piso_scale_method_name(o->method));
    piso_st_writer_meta(w, "group", gbuf);
    int rc = piso_st_writer_write(w, path);
    piso_st_writer_free(w);
    free(codes);
    return rc;
}

struct ec_report {
    enum piso_rounding rounding;
    const struct piso_ec_opts *ec;
    const struct piso_ec_stats *st;
    int alpha_sample;
    const struct piso_accum *acc; /* NULL without --accumulator-bits */
    int acc_tile;
    const struct piso_accum_report *acc_rep;
};

static int print_json(const struct piso_layer_result *r, const struct piso_quant_opts *o, const char *format,
                      const char *problem, double seconds, double load_seconds, const struct ec_report *er) {
    struct piso_json w;
    piso_json_begin(&w, PISO_JSON_COMPACT);
    piso_json_string(&w, "problem", problem);
    piso_json_string(&w, "format", format);
    piso_json_string(&w, "grid", o->grid.name);
    piso_json_bool(&w, "narrow", o->grid.narrow);
    piso_json_int(&w, "group", o->grid.block ? o->grid.block : o->group);
    piso_json_string(&w, "method", piso_scale_method_name(o->method));
    if (r->tensor_scale > 0) piso_json_number(&w, "tensor_scale", r->tensor_scale);
    piso_json_string(&w, "rounding", piso_rounding_name(er->rounding));
    if (er->rounding != PISO_ROUND_RTN) {
        piso_json_string(&w, "interleave", piso_interleave_name(er->ec->interleave));
        piso_json_bool(&w, "act_order", er->ec->act_order);
        cli_rounders_json(&w, er->rounding, er->ec, 0);
        if (er->alpha_sample) piso_json_bool(&w, "alpha_sampled", 1);
        if (er->rounding != PISO_ROUND_GPFQ) piso_json_number(&w, "lambda", er->st->lambda);
        if (cli_rounding_uses_alpha(er->rounding)) piso_json_number(&w, "cost", er->st->cost);
        piso_json_int(&w, "dead_columns", er->st->dead_columns);
    }
    piso_json_int(&w, "N", r->N);
    piso_json_int(&w, "D", r->D);
    piso_json_int(&w, "n_groups", r->n_groups);
    piso_json_number(&w, "objective", r->objective);
    piso_json_bool(&w, "constant_dropped", r->constant_dropped);
    if (er->acc) cli_accum_json(&w, er->acc, er->acc_tile, er->acc_rep);
    piso_json_array_begin(&w, "rows");
    for (int64_t i = 0; i < r->N; i++) {
        piso_json_object_begin(&w, NULL);
        if (r->n_groups == 1) {
            piso_json_number(&w, "scale", r->scales[i]);
        } else {
            piso_json_array_begin(&w, "scales");
            for (int64_t k = 0; k < r->n_groups; k++) piso_json_number(&w, NULL, r->scales[i * r->n_groups + k]);
            piso_json_array_end(&w);
        }
        piso_json_number(&w, "objective", r->row_objective[i]);
        piso_json_object_end(&w);
    }
    piso_json_array_end(&w);
    piso_json_number(&w, "seconds", seconds);
    piso_json_number(&w, "load_seconds", load_seconds);
    piso_json_int(&w, "threads", piso_num_threads());
    return piso_json_print(&w, stdout);
}

int cmd_layer(int argc, char **argv) {
    struct layer_args a = {.damp = -1, .alpha = -1};
    int prc = cli_parse(&layer_command, CLI_ALL_SECTIONS, argc, argv, &a.common);
    if (prc != CLI_CONTINUE) return prc;
    const char *problem = a.problem, *format = a.format, *method = a.scale, *out = a.out;
    long group = (long)a.group;
#ifdef _OPENMP
    if (a.threads > 0) omp_set_num_threads((int)a.threads);
#endif
    struct piso_quant_opts opts = {.group = (int)group, .allow_negative = !a.no_negative};
    if (piso_grid_init(&opts.grid, format, a.narrow) != 0) return cli_fail("layer", piso_last_error());
    if (piso_scale_method_from_name(method, &opts.method) != 0) return cli_fail("layer", piso_last_error());
    enum piso_rounding rounding;
    if (piso_rounding_from_name(a.rounding, &rounding)) return cli_fail("layer", "internal error: unknown rounding");
    struct piso_ec_opts ec;
    struct piso_ec_stats st;
    memset(&st, 0, sizeof st);
    piso_ec_opts_default(&ec);
    ec.act_order = a.act_order, ec.damp = a.damp;
    ec.interleave = group > 0 ? PISO_INTERLEAVE_GROUP : PISO_INTERLEAVE_LAYER;
    if (a.interleave) piso_interleave_from_name(a.interleave, &ec.interleave);
    if (rounding == PISO_ROUND_RTN && (a.act_order || a.damp >= 0 || a.interleave))
        return cli_usage_error("layer", "option %s: only with an error-correcting --rounding (not rtn)",
                               a.act_order ? "--act-order" : a.damp >= 0 ? "--damp" : "--interleave");
    int urc = cli_rounders_apply("layer", rounding, a.alpha, a.alpha_sample, a.beam, a.candidates, &ec);
    if (urc) return urc;
    if (a.alpha_sample) ec.alpha = piso_alpha_sample((uint64_t)a.seed, 0, (enum piso_linear)0);
    struct piso_accum acc;
    int arc = cli_accum_apply("layer", a.acc_bits, a.acc_tile, a.input_bits, a.input_signed, a.no_soft_threshold, &acc);
    if (arc) return arc;
    if (acc.bits) opts.acc = &acc;

    if (out && piso_output_check(out, 0) != 0) return cli_fail("layer", piso_last_error()); /* before any work */
    double t0 = piso_time();
    struct piso_problem p;
    if (piso_problem_load(problem, &p) != 0) return cli_fail("layer", piso_last_error());
    double t1 = piso_time();
    if (group > 0 && p.D % group != 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "--group %ld does not divide D = %lld (the columns of 'weight' in %s)", group,
                 (long long)p.D, problem);
        piso_problem_free(&p); /* after the message: it reads p.D */
        return cli_fail("layer", msg);
    }
    int acc_tile = 0;
    if (opts.acc && piso_accum_validate(&acc, p.D, (int)group, &opts.grid, problem, &acc_tile)) {
        piso_problem_free(&p);
        return cli_fail("layer", piso_last_error());
    }
    piso_log("piso layer: %s: N = %lld, D = %lld, %s, %s, group %ld%s\n", problem, (long long)p.N, (long long)p.D,
             opts.grid.name, method, group, p.G ? ", cross term" : "");
    struct piso_layer_problem lp = {.N = p.N, .D = p.D, .W = p.W, .H = p.H, .G = p.G};
    struct piso_layer_result r;
    int fail;
    if (rounding == PISO_ROUND_RTN) {
        fail = piso_quantize_layer(&lp, &opts, &r) != 0;
    } else {
        struct piso_ec_problem ep = {p.N, p.D, p.W, p.H, p.G, NULL};
        ec.q = opts;
        fail = piso_rounding_layer(rounding)(&ep, &ec, &r, &st) != 0;
    }
    if (fail) {
        piso_problem_free(&p);
        return cli_fail("layer", piso_last_error());
    }
    double t2 = piso_time();
    int rc = 0;
    struct piso_accum_report acc_rep;
    memset(&acc_rep, 0, sizeof acc_rep);
    if (opts.acc) { /* the checker: every row and tile against 2^(P-1) - 1, before anything is written */
        piso_accum_check(r.codes, r.N, r.D, acc_tile, &acc, &acc_rep);
        piso_log("accumulator: worst case %lld of %lld (P = %d, tile %d, inputs [%lld, %lld]): %s\n",
                 (long long)acc_rep.worst, (long long)acc_rep.limit, acc.bits, acc_tile, (long long)acc.in_min,
                 (long long)acc.in_max, acc_rep.violations ? "OVERFLOW" : "ok");
        if (acc_rep.violations) {
            char msg[256];
            snprintf(msg, sizeof msg, "accumulator check failed: %lld (row, tile) pairs exceed %lld (row %lld, tile %lld: %lld)",
                     (long long)acc_rep.violations, (long long)acc_rep.limit, (long long)acc_rep.worst_row,
                     (long long)acc_rep.worst_tile, (long long)acc_rep.worst);
            rc = cli_fail("layer", msg);
        }
    }
    if (!rc && out && write_result(out, &r, &opts, format) != 0) rc = cli_fail("layer", piso_last_error());
    if (!rc) {
        if (a.common.json) {
            struct ec_report er = {rounding, &ec, &st, a.alpha_sample, opts.acc, acc_tile, &acc_rep};
            if (print_json(&r, &opts, format, problem, t2 - t1, t1 - t0, &er)) rc = cli_fail("layer", piso_last_error());
        } else {
            printf("objective %.10g%s\n", r.objective, r.constant_dropped ? " (constant dropped)" : "");
            if (rounding == PISO_ROUND_GPFQ)
                printf("gpfq, alpha %g: cost q^T H q - 2 q^T G_alpha w = %.10g\n", ec.alpha, st.cost);
            else if (cli_rounding_uses_alpha(rounding))
                printf("%s, alpha %g, lambda %g: cost (w~ - q)^T H_lambda (w~ - q) = %.10g\n", a.rounding, ec.alpha,
                       st.lambda, st.cost);
            if (opts.acc)
                printf("accumulator %d bits, tile %d: worst case %lld <= %lld, %lld violations\n", acc.bits, acc_tile,
                       (long long)acc_rep.worst, (long long)acc_rep.limit, (long long)acc_rep.violations);
            printf("rows %lld, groups per row %lld, %s, %s, %.3f s\n", (long long)r.N, (long long)r.n_groups,
                   opts.grid.name, method, t2 - t1);
            if (out) printf("wrote %s\n", out);
        }
    }
    piso_layer_result_free(&r);
    piso_problem_free(&p);
    return rc;
}
