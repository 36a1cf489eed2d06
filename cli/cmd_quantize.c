/* piso quantize — whole-model quantization. GGUF output (--type, or --out *.gguf) is written by
 * cli_quantize_gguf (llama.cpp block formats); everything else writes a Hugging Face directory. */
#include "accum.h"
#include "act_quant.h"
#include "cli.h"
#include "quantize.h"
#include "mixed.h"
#include "piso/eval.h"
#include "piso/json_out.h"
#include "piso/pipeline.h"
#include "rounders.h"
#include "smooth_opts.h"
#include "transform_opts.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { SECTION_COMMON = 1u << 0, SECTION_HF = 1u << 1, SECTION_GGUF = 1u << 2, SECTION_MIXED = 1u << 3 };

#define ARG(field) offsetof(struct cli_quantize_args, field)

static const struct cli_option common_options[] = {
    CLI_OPTION_MODEL(struct cli_quantize_args),
    CLI_OPTION_TOKENIZER(struct cli_quantize_args),
    {"--out", NULL, CLI_STRING, ARG(out), .arg = "PATH",
     .help = "the output: a directory, or FILE.gguf for GGUF output", .required = 1},
    {"--calib", NULL, CLI_STRING, ARG(calib), .arg = "FILE", .help = "calibration text"},
    CLI_OPTIONS_TRANSFORM(struct cli_quantize_args),
    {"--no-stream", NULL, CLI_FLAG, ARG(no_stream),
     .help = "hold the whole model in F32 (twice) and write the output at the end;\n"
             "streaming (one block at a time) needs an HF source and is off with\n"
             "--eval, --rotate/--permute, --smooth, --accumulator-bits, --target-bits;\n"
             "GGUF: with --rotate/--permute, --target-bpw, NVFP4 weights"},
    {0},
};

static const char *const hf_roundings[] = {"rtn", "gptq", "qronos", "sr", "beam", "gpfq", NULL};
static const char *const hf_scales[] = {"absmax", "mse-grid", "piso-datafree", "piso-diag", "piso", "piso-seq", NULL};
static const char *const hf_interleaves[] = {"none", "layer", "group", NULL};
static const char *const hf_objectives[] = {"x-x", "xq-xq", "x-xq", NULL};
static const char *const hf_out_formats[] = {"hf", "gptq", "compressed-tensors", NULL};

static const struct cli_option hf_options[] = {
    {"--format", NULL, CLI_STRING, ARG(format), .arg = "FMT",
     .help = "int2..int8, fp4_e2m1, e2m1, e2m3, e3m2, e4m3, e5m2; hardware blocks with\nrepresentable scales: mxfp4, mxfp6_e2m3, mxfp6_e3m2, mxfp8_e4m3,\nmxfp8_e5m2, mxint8 (32, power of two), nvfp4 (16, UE4M3 x tensor scale)",
     .required = 0 /* or --formats: checked in cmd_quantize */},
    {"--narrow", NULL, CLI_FLAG, ARG(narrow), .help = "symmetric integer range (int4: -7..7)"},
    {"--asym", NULL, CLI_FLAG, ARG(asym),
     .help = "zero points: w = s*(c - z), c in 0..2^b-1, one integer z per scale\n(integer formats; rtn, gptq, qronos; piso scales: exact over (s, z))"},
    {"--out-format", NULL, CLI_CHOICE, ARG(out_format),
     .help = "hf: dense dequantized weights; gptq: a GPTQ checkpoint (vLLM,\ntransformers); compressed-tensors: pack-quantized (vLLM)",
     .def = "hf", .choices = hf_out_formats},
    {"--group", NULL, CLI_INT, ARG(group), .arg = "G", .help = "group size along the input; 0: one scale per row",
     .imin = 0, .imax = 1 << 20},
    {"--rounding", NULL, CLI_CHOICE, ARG(rounding),
     .help = "error correction; sr: successive rounding on the alpha-target,\n"
             "beam: K-best beam search on it, gpfq: greedy path following",
     .def = "gptq", .choices = hf_roundings},
    CLI_OPTIONS_ROUNDERS(struct cli_quantize_args),
    {"--scale", NULL, CLI_CHOICE, ARG(scale),
     .help = "scale method; --calib may be left out for rtn with a data-free\nscale (absmax, mse-grid, piso-datafree)",
     .def = "piso", .choices = hf_scales},
    {"--interleave", NULL, CLI_CHOICE, ARG(interleave),
     .help = "when scales are refit during error correction; default: group\nwith --group, else layer",
     .choices = hf_interleaves},
    {"--objective", NULL, CLI_CHOICE, ARG(objective),
     .help = "which inputs the layer error uses (float x, quantized xq);\ndefault: xq-xq for gptq, else x-xq",
     .choices = hf_objectives},
    {"--act-order", NULL, CLI_FLAG, ARG(act_order), .help = "quantize columns by decreasing Hessian diagonal"},
    {"--static-groups", NULL, CLI_FLAG, ARG(static_groups),
     .help = "gptq/compressed-tensors with --act-order: keep groups contiguous\n(desc_act false; default: "
             "groups follow the order, g_idx)"},
    {"--damp", NULL, CLI_DOUBLE, ARG(damp), .arg = "F",
     .help =
         "Hessian damping: lambda = F * mean(diag H) (gptq, default 0.01)\nor F * sigma_max(H) (qronos, default 1e-6)",
     .dmin = 0, .dmax = 1e6},
    {"--nsamples", NULL, CLI_INT, ARG(nsamples), .arg = "N", .help = "calibration windows; 0: the pipeline's default",
     .imin = 0, .imax = 1 << 20},
    {"--seqlen", NULL, CLI_INT, ARG(seqlen), .arg = "L", .help = "tokens per window; 0: the pipeline's default",
     .imin = 0, .imax = 1 << 20},
    {"--seed", NULL, CLI_INT, ARG(seed), .arg = "S", .help = "seed of the window sampling", .imin = INT64_MIN,
     .imax = INT64_MAX},
    {"--eval", NULL, CLI_STRING, ARG(eval), .arg = "TEXT", .help = "a text file: perplexity before and after"},
    {"--ctx", NULL, CLI_INT, ARG(ctx), .arg = "N", .help = "--eval chunk length; 0: min(512, the model's context)",
     .imin = 0, .imax = 1 << 20},
    CLI_OPTIONS_ACT_QUANT(struct cli_quantize_args),
    {"--calib-act-quant", NULL, CLI_FLAG, ARG(calib_act_quant),
     .help = "calibrate on the quantized model running with --act-format/--kv-format\n"
             "(X~ includes each layer's own input quantization)"},
    CLI_OPTIONS_ACCUM_LIMITS(struct cli_quantize_args),
    CLI_OPTIONS_SMOOTH(struct cli_quantize_args),
    {0},
};

static const char *const mixed_baselines[] = {"optimal", "uniform", "kl-greedy", NULL};
static const char *const mixed_sensitivities[] = {"kl", "output", NULL};
#define OPTION_MIXED_SENSITIVITY                                                                             \
    {"--sensitivity", NULL, CLI_CHOICE, ARG(sensitivity),                                                    \
     .help = "predicted loss (default kl): output error scaled to KL by a\none-layer probe, or the plain output error", \
     .choices = mixed_sensitivities}

static const struct cli_option mixed_options[] = {
    {"--target-bits", NULL, CLI_DOUBLE, ARG(target_bits), .arg = "B",
     .help = "mixed precision: one format per linear layer from --formats, average\n"
             "bits per weight (codes + scales) <= B, least predicted loss (exact)",
     .dmin = 0.01, .dmax = 64},
    {"--formats", NULL, CLI_STRING, ARG(formats), .arg = "F1,F2,...",
     .help = "the candidates, e.g. int2,int3,int4,int8,int3g32,mxfp4,nvfp4\n(a group as gN after the format)"},
    {"--baseline", NULL, CLI_CHOICE, ARG(baseline),
     .help = "which assignment to write (default optimal): the optimum, the best\nuniform candidate, or the KL-greedy layer selection "
             "(all three\nare reported)",
     .choices = mixed_baselines},
    OPTION_MIXED_SENSITIVITY,
    {"--sensitivity-windows", NULL, CLI_INT, ARG(sensitivity_windows), .arg = "N",
     .help = "calibration windows of the one-layer KL probes; 0: min(8, --nsamples)", .imin = 0, .imax = 1 << 20},
    {"--evaluate-baselines", NULL, CLI_FLAG, ARG(evaluate_baselines),
     .help = "with --eval: also quantize with the other assignments and report\ntheir perplexity and KL divergence (only the applied one is written)"},
    {"--sensitivity-check", NULL, CLI_FLAG, ARG(sensitivity_check),
     .help = "measure the KL of every single-layer change on --eval and report it\nbeside the prediction"},
    {0},
};

static const char *const gguf_scales[] = {"piso", "llamacpp-ref", NULL};
static const char *const gguf_weightings[] = {"raw", "blend", NULL};

static const char *const gguf_baselines[] = {"optimal", "uniform", "kl-greedy", "llamacpp", NULL};

static const struct cli_option gguf_options[] = {
    {"--target-bpw", NULL, CLI_DOUBLE, ARG(target_bpw), .arg = "B",
     .help = "mixed precision: one type per linear weight from --types, average\n"
             "bits per weight of the blk.* linear weights (as stored) <= B, least\npredicted loss (exact); needs --calib",
     .dmin = 0.01, .dmax = 64},
    {"--types", NULL, CLI_STRING, ARG(types), .arg = "T1,T2,...",
     .help = "the candidate types, e.g. Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0,Q4_0,Q5_0"},
    {"--baseline", NULL, CLI_CHOICE, ARG(baseline),
     .help = "which assignment to write (default optimal); llamacpp: the best\nllama-quantize mixture that fits",
     .choices = gguf_baselines},
    OPTION_MIXED_SENSITIVITY,
    {"--sensitivity-windows", NULL, CLI_INT, ARG(sensitivity_windows), .arg = "N",
     .help = "--calib chunks of the one-layer KL probes; 0: 8", .imin = 0, .imax = 1 << 20},
    {"--type", NULL, CLI_STRING, ARG(type), .arg = "T",
     .help = "ggml type of the weights: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1\nQ2_K Q3_K Q4_K Q5_K Q6_K IQ4_NL MXFP4 NVFP4; or a llama-quantize\nmixture: Q3_K_S Q3_K_M Q4_K_M Q5_K_M (and Q2_K with --mix)", .def = "Q8_0"},
    {"--mix", NULL, CLI_FLAG, ARG(mix),
     .help = "llama-quantize's per-tensor mixture for --type (Q2_K; Q3_K = Q3_K_M,\nQ4_K = Q4_K_M, Q5_K = Q5_K_M) instead of one type for every weight"},
    {"--output-type", NULL, CLI_STRING, ARG(output_type), .arg = "T",
     .help = "ggml type of output.weight; default: llama.cpp's rule"},
    {"--scale", NULL, CLI_CHOICE, ARG(scale), .help = "block scales: piso's exact ones, or llama.cpp's reference rule",
     .def = "piso", .choices = gguf_scales},
    {"--imatrix", NULL, CLI_STRING, ARG(imatrix), .arg = "FILE",
     .help = "weigh by this importance matrix (.gguf or .dat); not with --calib\n"
             "(which computes one, plus dense Hessians)"},
    {"--weighting", NULL, CLI_CHOICE, ARG(weighting),
     .help = "blend: piso scales weigh by h*sqrt(s2 + x^2) (llama.cpp's imatrix\nblend), not h", .def = "raw",
     .choices = gguf_weightings},
    {"--ctx", NULL, CLI_INT, ARG(ctx), .arg = "N", .help = "--calib chunk length", .def = "512", .imin = 16,
     .imax = 1 << 20},
    {"--chunks", NULL, CLI_INT, ARG(chunks), .arg = "N", .help = "--calib chunks to use; 0: all", .imin = 0,
     .imax = 1 << 30},
    {0},
};

static const struct cli_section quantize_sections[] = {
    {NULL, NULL, common_options},
    {"Hugging Face output", "the default", hf_options},
    {"GGUF output", "with --type T or --out FILE.gguf", gguf_options},
    {"Mixed precision (Hugging Face output)", "with --target-bits B --formats F1,F2,...", mixed_options},
    {0},
};

static const struct cli_command quantize_command = {
    .name = "quantize",
    .summary = "Quantize a whole model: a Hugging Face directory with piso's codes and scales (default),\n"
               "or a llama.cpp GGUF file in ggml block formats.",
    .usage = "--model PATH --out DIR --format FMT [--calib FILE] [options]\n"
             "       piso quantize --model PATH --out FILE.gguf [--type T] [--calib FILE | --imatrix FILE] [options]",
    .sections = quantize_sections,
};

/* quantization.json: everything needed to interpret the codes (no timings, so that outputs are
 * byte-identical across runs and thread counts). */
static char *quantization_json(const struct cli_quantize_args *a, const struct cli_smooth *sm,
                               const struct piso_pipeline_opts *po,
                               const struct piso_calib *cal, const struct piso_pipeline_result *res,
                               const struct piso_model *m, double ppl_before, double ppl_after,
                               const struct piso_accum_report *acc_rep, const struct cli_mixed *mx) {
    struct piso_json w;
    piso_json_begin(&w, PISO_JSON_PRETTY);
    piso_json_string(&w, "quantizer", "piso");
    piso_json_string(&w, "format", mx ? "mixed" : po->ec.q.grid.name);
    piso_json_bool(&w, "narrow", a->narrow);
    piso_json_bool(&w, "asym", a->asym);
    piso_json_string(&w, "out_format", a->out_format);
    if (!mx) {
        piso_json_array_begin(&w, "grid");
        for (int i = 0; i < po->ec.q.grid.n; i++) piso_json_number(&w, NULL, po->ec.q.grid.v[i]);
        piso_json_array_end(&w);
    }
    piso_json_string(&w, "codes",
                     mx ? "per layer: integer grid value (weight = scale * code) for int grids, else index into the "
                          "layer's grid (weight = scale * grid[code])"
                     : a->asym ? "integer c - z (zero point z in NAME.zeros): weight = scale * code"
                     : po->ec.q.grid.is_int ? "integer grid value: weight = scale * code"
                                            : "index into grid: weight = scale * grid[code]");
    piso_json_number(&w, "group", (double)a->group);
    piso_json_string(&w, "rounding", piso_rounding_name(po->rounding));
    piso_json_string(&w, "scale", piso_scale_method_name(po->ec.q.method));
    piso_json_string(&w, "interleave", piso_interleave_name(po->ec.interleave));
    piso_json_string(&w, "objective", piso_objective_name(po->objective));
    piso_json_bool(&w, "act_order", po->ec.act_order);
    cli_rounders_json(&w, po->rounding, &po->ec, po->alpha_sample);
    if (po->ec.damp >= 0)
        piso_json_number(&w, "damp", po->ec.damp);
    else
        piso_json_number(&w, "damp", po->rounding == PISO_ROUND_QRONOS ? 1e-6 : 0.01);
    piso_json_string(&w, "damp_meaning",
                     po->rounding == PISO_ROUND_QRONOS  ? "lambda = damp * sigma_max(H)"
                     : po->rounding == PISO_ROUND_GPFQ ? "not used (gpfq has no damping)"
                                                       : "lambda = damp * mean(diag H)");
    if (cal) {
        piso_json_object_begin(&w, "calibration");
        piso_json_string(&w, "file", a->calib);
        piso_json_number(&w, "nsamples", cal->nsamples);
        piso_json_number(&w, "seqlen", cal->seqlen);
        piso_json_number(&w, "seed", (double)a->seed);
        piso_json_number(&w, "text_tokens", cal->n_text_tokens);
        piso_json_object_end(&w);
    }
    if (piso_act_quant_active(&m->act)) {
        piso_act_quant_json(&w, &m->act, 1);
        piso_json_bool(&w, "calib_act_quant", a->calib_act_quant);
    }
    if (po->ec.q.acc) cli_accum_json(&w, po->ec.q.acc, (int)a->acc_tile, acc_rep);
    if (sm->alpha >= 0) cli_smooth_json(&w, sm);
    if (m->online.down_block || m->online.o_heads || strcmp(a->rotate, "none") || strcmp(a->permute, "none"))
        piso_json_string(&w, "transform", "transform.json: rotations/permutations applied before calibration");
    piso_json_string(&w, "source", a->model);
    piso_json_string(&w, "weights", strcmp(a->out_format, "hf")
                                        ? "model.safetensors holds the packed layers (config.json quantization_config) "
                                          "and the others dense"
                                        : "model.safetensors holds the dequantized weights (scale * code)");
    piso_json_string(&w, "tensors", "quantization.safetensors");
    piso_json_string(&w, "not_quantized", "embed_tokens, lm_head, norms");
    if (ppl_before > 0) {
        piso_json_object_begin(&w, "perplexity");
        piso_json_string(&w, "text", a->eval);
        piso_json_number(&w, "before", ppl_before);
        piso_json_number(&w, "after", ppl_after);
        piso_json_object_end(&w);
    }
    if (mx) cli_mixed_json(&w, mx);
    piso_json_object_begin(&w, "layers");
    char nm[160];
    for (int i = 0; i < res->n_layers; i++) {
        const struct piso_layer_report *r = &res->layers[i];
        piso_json_object_begin(&w, r->name);
        piso_json_array_begin(&w, "shape");
        piso_json_number(&w, NULL, (double)r->N);
        piso_json_number(&w, NULL, (double)r->D);
        piso_json_array_end(&w);
        piso_json_number(&w, "group", r->group);
        if (r->last_group != r->group) piso_json_number(&w, "last_group", r->last_group);
        if (r->tensor_scale > 0) piso_json_number(&w, "tensor_scale", r->tensor_scale);
        piso_json_number(&w, "n_groups", (double)r->n_groups);
        snprintf(nm, sizeof nm, "%s.scales", r->name);
        piso_json_string(&w, "scales", nm);
        snprintf(nm, sizeof nm, "%s.codes", r->name);
        piso_json_string(&w, "codes", nm);
        if (r->zeros) {
            snprintf(nm, sizeof nm, "%s.zeros", r->name);
            piso_json_string(&w, "zeros", nm);
        }
        if (r->g_idx) { /* groups follow the act order: input i is in group g_idx[i] */
            snprintf(nm, sizeof nm, "%s.g_idx", r->name);
            piso_json_string(&w, "g_idx", nm);
        }
        piso_json_number(&w, "rel_err", r->rel_err);
        piso_json_number(&w, "rel_err_absmax_rtn", r->rel_err_absmax);
        if (cli_rounding_uses_alpha(po->rounding)) piso_json_number(&w, "alpha", r->alpha);
        cli_mixed_layer_json(&w, mx, r);
        piso_json_object_end(&w);
    }
    piso_json_object_end(&w);
    return piso_json_finish(&w);
}

static double eval_ppl(const struct piso_model *m, const char *text, size_t len, int ctx) {
    struct piso_ppl_result r;
    if (piso_perplexity(m, text, len, ctx, &r)) return -1;
    return r.ppl;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = s ? strlen(s) : 0, k = strlen(suffix);
    return n > k && !strcmp(s + n - k, suffix);
}

int cmd_quantize(int argc, char **argv) {
    /* --type, or an output named *.gguf, asks for a GGUF file; otherwise a Hugging Face directory */
    int gguf = cli_peek(argc, argv, "--type") || ends_with(cli_peek(argc, argv, "--out"), ".gguf");
    struct cli_quantize_args a = {.damp = -1, .alpha = -1, .smooth = -1, .smooth_quantile = NAN};
    int prc = cli_parse(&quantize_command, SECTION_COMMON | (gguf ? SECTION_GGUF : SECTION_HF | SECTION_MIXED), argc,
                        argv, &a.common);
    if (prc != CLI_CONTINUE) return prc;
    struct piso_transform_opts to;
    int trc = cli_transform_opts("quantize", a.rotate, a.rotate_block, a.permute, a.no_online, a.seed, a.calib != NULL,
                                 gguf, &to);
    if (trc) return trc;
    if (gguf) return cli_quantize_gguf(&a);
    int mrc;
    struct cli_mixed mixed_state, *mx = cli_mixed_wanted(&a, &mrc) ? &mixed_state : NULL;
    if (mrc) return mrc;
    if (mx && (strcmp(a.out_format, "hf") || a.asym || a.acc_bits))
        return cli_usage_error("quantize", "option --target-bits: not with %s (per-layer formats are written as an HF "
                                           "directory with symmetric codes and no accumulator limits)",
                               a.asym ? "--asym" : a.acc_bits ? "--accumulator-bits" : "--out-format gptq|compressed-tensors");
    memset(&mixed_state, 0, sizeof mixed_state);

    struct piso_pipeline_opts po;
    memset(&po, 0, sizeof po);
    piso_ec_opts_default(&po.ec);
    char msg[512];
    /* mixed precision: each candidate gets its own grid (cli_mixed_prepare); int8 stands in here */
    if (piso_grid_init(&po.ec.q.grid, mx ? "int8" : a.format, a.narrow)) {
        snprintf(msg, sizeof msg, "unsupported --format '%s' (%s)", a.format, piso_last_error());
        return cli_fail("quantize", msg);
    }
    if (po.ec.q.grid.block && a.group != 0 && a.group != po.ec.q.grid.block)
        return cli_usage_error("quantize", "option --group: %s has blocks of %d (leave --group out)", po.ec.q.grid.name,
                               po.ec.q.grid.block);
    if (po.ec.q.grid.block) a.group = po.ec.q.grid.block; /* MX: 32, NVFP4: 16 */
    enum piso_ckpt_format ckpt = PISO_CKPT_DENSE;
    if (piso_ckpt_format_from_name(a.out_format, &ckpt) || piso_ckpt_check(ckpt, &po.ec.q.grid, (int)a.group, a.asym))
        return cli_usage_error("quantize", "%s", piso_last_error());
    if (a.asym && (!po.ec.q.grid.is_int || po.ec.q.grid.block))
        return cli_usage_error("quantize", "option --asym: needs an integer --format (int2..int8), not %s",
                               po.ec.q.grid.name);
    if (a.asym && a.narrow) return cli_usage_error("quantize", "option --narrow: not with --asym");
    po.ec.q.asym = a.asym;
    po.ec.q.zero_min = ckpt == PISO_CKPT_GPTQ ? 1 : 0; /* GPTQ v1 stores z - 1, so z = 0 cannot be written */
    po.ec.q.scale_fp16 = ckpt != PISO_CKPT_DENSE;   /* both checkpoints store fp16 scales */
    po.ec.q.group = (int)a.group;
    po.ec.q.allow_negative = 1;
    po.ec.act_order = a.act_order;
    /* checkpoints: groups follow the order through g_idx (GPTQ desc_act) unless --static-groups */
    if (a.static_groups && (ckpt == PISO_CKPT_DENSE || !a.act_order))
        return cli_usage_error("quantize", "option --static-groups: only with --act-order and --out-format gptq "
                                           "or compressed-tensors");
    po.ec.desc_act_groups = ckpt != PISO_CKPT_DENSE && !a.static_groups;
    po.ec.damp = a.damp;
    po.ec.interleave = a.group > 0 ? PISO_INTERLEAVE_GROUP : PISO_INTERLEAVE_LAYER;
    int unknown = piso_rounding_from_name(a.rounding, &po.rounding);
    po.objective = po.rounding == PISO_ROUND_GPTQ ? PISO_OBJ_XQ_XQ : PISO_OBJ_X_XQ;
    /* the option table lists only names the library knows, so none of these fails */
    unknown |= piso_scale_method_from_name(a.scale, &po.ec.q.method);
    if (a.interleave) unknown |= piso_interleave_from_name(a.interleave, &po.ec.interleave);
    if (a.objective) unknown |= piso_objective_from_name(a.objective, &po.objective);
    if (unknown) return cli_fail("quantize", "internal error: an option value the library does not know");
    if (piso_ec_opts_check(&po.ec, po.rounding)) return cli_usage_error("quantize", "%s", piso_last_error());
    int urc = cli_rounders_apply("quantize", po.rounding, a.alpha, a.alpha_sample, a.beam, a.candidates, &po.ec);
    if (urc) return urc;
    po.alpha_sample = a.alpha_sample, po.alpha_seed = (uint64_t)a.seed;
    int data_free = po.rounding == PISO_ROUND_RTN &&
                    (po.ec.q.method == PISO_SCALE_ABSMAX || po.ec.q.method == PISO_SCALE_MSE_GRID ||
                     po.ec.q.method == PISO_SCALE_PISO_DATAFREE);
    if (!a.calib && !data_free)
        return cli_usage_error("quantize", "option --calib: required for --rounding %s with --scale %s", a.rounding,
                               a.scale);
    urc = cli_act_quant_check("quantize", a.act_format, a.act_group, a.kv_format);
    if (urc) return urc;
    if (a.calib_act_quant && !a.act_format && !a.kv_format)
        return cli_usage_error("quantize", "option --calib-act-quant: needs --act-format or --kv-format");
    if (!a.acc_bits && (a.acc_tile || a.no_soft_threshold))
        return cli_usage_error("quantize", "option %s: only with --accumulator-bits",
                               a.acc_tile ? "--accumulator-tile" : "--no-soft-threshold");
    if (a.acc_bits && !a.act_format)
        return cli_usage_error("quantize", "option --accumulator-bits: needs integer activations (--act-format int8, "
                                           "int4, int8-asym, ...)");
    if (a.acc_bits && (a.asym || strcmp(a.out_format, "hf")))
        return cli_usage_error("quantize", "option --accumulator-bits: not with %s (the limits are enforced on symmetric "
                                           "codes with fp32 scales)",
                               a.asym ? "--asym" : "--out-format gptq|compressed-tensors");
    struct piso_accum acc;
    struct piso_accum_report acc_rep;
    memset(&acc_rep, 0, sizeof acc_rep);
    struct cli_smooth sm = {a.smooth, a.smooth_quantile, a.smooth_sketch_error, a.smooth_stats};
    urc = cli_smooth_check("quantize", &sm, a.calib != NULL);
    if (urc) return urc;

    struct piso_model *mq = NULL, *mf = NULL;
    struct piso_calib cal;
    memset(&cal, 0, sizeof cal);
    struct piso_pipeline_result res;
    memset(&res, 0, sizeof res);
    char *eval_text = NULL, *qjson = NULL, *tokjson = NULL, *srcdir = NULL, *tjson = NULL;
    struct piso_transform_plan plan;
    memset(&plan, 0, sizeof plan);
    size_t eval_len = 0;
    int rc = 1;
    double ppl_before = -1, ppl_after = -1, t0 = piso_time();
    struct piso_hf_stream *hf_stream = NULL;
    if (piso_hf_export_check(a.out)) goto fail; /* before any long work */
    if (a.eval && piso_read_file(a.eval, &eval_text, &eval_len)) goto fail;
    if (a.eval && eval_len == 0) {
        piso_errorf("--eval %s: the text is empty", a.eval);
        goto fail;
    }
    /* Streaming (one block in F32 at a time, written as it is done) whenever nothing needs the whole
     * model: an HF source (not a packed checkpoint, not a piso transform output), no evaluation,
     * transform, smoothing, accumulator limits or mixed precision. */
    const int stream = !a.no_stream && !a.eval && !cli_transform_wanted(&to) && sm.alpha < 0 && !a.acc_bits && !mx &&
                       piso_model_can_stream(a.model);
    piso_log("loading %s%s\n", a.model, stream ? " (streaming: one block at a time)" : "");
    if (stream ? piso_model_load_lazy(a.model, a.tokenizer, &mq) : piso_model_load(a.model, a.tokenizer, &mq)) goto fail;
    if (!mq->tok) {
        piso_errorf("model %s carries no tokenizer (pass --tokenizer)", a.model);
        goto fail;
    }
    if (mx && cli_mixed_prepare(&a, &po.ec, mq, mx)) goto fail; /* the bit range: before any long work */
    if (a.calib &&
        piso_calib_load(mq->tok, a.calib, (int)a.nsamples, (int)a.seqlen, mq->cfg.max_seq_len, (uint64_t)a.seed, &cal))
        goto fail;
    {
        /* before the second copy and any long work: refuse with the numbers when it cannot fit */
        struct piso_pipeline_memory mm;
        int nwin = a.calib ? cal.nsamples : 1, wlen = a.calib ? cal.seqlen : 1;
        piso_pipeline_memory_estimate(&mq->cfg, nwin, wlen, stream, &po, &mm);
        if (piso_pipeline_memory_check(&mq->cfg, nwin, wlen, stream, &po, stream ? 0 : mm.model)) goto fail;
    }
    if ((stream ? piso_model_load_lazy(a.model, a.tokenizer, &mf) : piso_model_load(a.model, a.tokenizer, &mf)) ||
        piso_model_make_writable(mq))
        goto fail;
    po.keep_down_budget = piso_pipeline_keep_down_budget(stream);
    if (stream) { /* the output directory is built while the blocks are quantized */
        struct piso_hf_export_opts so = {.ckpt = ckpt, .bits = po.ec.q.grid.bits, .group = (int)a.group,
                                         .asym = a.asym, .act_order = po.ec.act_order};
        if (piso_hf_stream_begin(mq, a.out, &so, &hf_stream)) goto fail;
        po.block_done = piso_hf_stream_block, po.block_ctx = hf_stream;
    }
    /* the float model runs unquantized (X); the quantized one with the activation formats, during
     * calibration only with --calib-act-quant */
    mf->act = (struct piso_act_quant){0};
    mq->act = (struct piso_act_quant){0};
    struct piso_act_quant aq;
    if (piso_act_quant_init(&aq, &mq->cfg, a.act_format, (int)a.act_group, a.kv_format)) goto fail;
    if (a.calib_act_quant) mq->act = aq;
    if (a.acc_bits) { /* before any long work: the input range, and every layer's width */
        if (cli_accum_from_act(a.acc_bits, a.acc_tile, a.no_soft_threshold, &aq.act, &mq->cfg, (int)a.group,
                               &po.ec.q.grid, &acc))
            goto fail;
        po.ec.q.acc = &acc;
    }
    struct piso_model *both[2] = {mf, mq};
    if (sm.alpha >= 0 && cli_smooth_models(&sm, &cal, mf, both, 2)) goto fail; /* before any rotation */
    int ctx = a.ctx > 0 ? (int)a.ctx : 0; /* 0: the evaluator's default, min(512, model context) */
    if (eval_text) {
        ppl_before = eval_ppl(mf, eval_text, eval_len, ctx);
        if (ppl_before < 0) goto fail;
        piso_log("perplexity before: %.4f\n", ppl_before);
    }
    if (cli_transform_wanted(&to)) { /* the same transform on both copies, before calibration */
        if (piso_transform_model(mf, &to, cal.tokens, cal.nsamples, cal.seqlen, &plan) ||
            piso_transform_apply_plan(mq, &plan))
            goto fail;
        tjson = piso_transform_json(mq, &plan);
        if (!tjson) goto fail;
        piso_log("transform: rotate %s, permute %s%s\n", a.rotate, a.permute,
                 mq->online.down_block || mq->online.o_heads ? ", online rotations on" : "");
    } else if (mq->online.down_block || mq->online.o_heads) {
        /* a source written by piso transform: its online rotations stay with the quantized model */
        char *src = piso_path_join(a.model, "transform.json");
        int bad = !src || piso_read_file_max(src, &tjson, NULL, 1 << 20);
        free(src);
        if (bad) goto fail;
    }
    if (a.calib) {
        piso_log("calibration: %d windows of %d tokens from %s (%d tokens)\n", cal.nsamples, cal.seqlen, a.calib,
                 cal.n_text_tokens);
        if (mx ? cli_mixed_run(&a, mq, mf, &cal, &po, eval_text, eval_len, mx, &res)
               : piso_quantize_model(mq, mf, &cal, &po, &res))
            goto fail;
    } else {
        /* Data-free RTN: the same pipeline with one BOS-only window (statistics unused). */
        cal.nsamples = 1, cal.seqlen = 1;
        cal.tokens = malloc(sizeof(int));
        const struct piso_tokenizer_vocab *v = piso_tokenizer_vocab(mq->tok);
        cal.tokens[0] = v && v->bos_id >= 0 ? v->bos_id : 0;
        if (piso_quantize_model(mq, mf, &cal, &po, &res)) goto fail;
    }
    mq->act = aq;
    if (po.ec.q.acc) { /* the checker: every row and tile of every layer, before anything is written */
        cli_accum_check_result(&res, &acc, (int)a.group, &po.ec.q.grid, &acc_rep);
        piso_log("accumulator: worst case %lld of %lld (P = %d): %s\n", (long long)acc_rep.worst,
                 (long long)acc_rep.limit, acc.bits, acc_rep.violations ? "OVERFLOW" : "ok");
        if (acc_rep.violations) {
            piso_errorf("accumulator check failed: %lld (row, tile) pairs exceed %lld", (long long)acc_rep.violations,
                        (long long)acc_rep.limit);
            goto fail;
        }
    }
    if (eval_text) {
        ppl_after = eval_ppl(mq, eval_text, eval_len, ctx);
        if (ppl_after < 0) goto fail;
        piso_log("perplexity after: %.4f\n", ppl_after);
    }
    int n_packed = 0;
    for (int i = 0; ckpt != PISO_CKPT_DENSE && i < res.n_layers; i++) {
        const struct piso_layer_report *r = &res.layers[i];
        if (piso_ckpt_layer_packs(ckpt, po.ec.q.grid.bits, r->group, r->N, r->D)) n_packed++;
        else piso_log("%s: %s [%lld, %lld] stays dense (%s)\n", a.out_format, r->name, (long long)r->N, (long long)r->D,
                      r->group > 0 && r->D % r->group ? "the group does not divide its input size"
                                                      : "in and out sizes do not fill whole int32 words");
    }
    if (ckpt != PISO_CKPT_DENSE)
        piso_log("%s: %d of %d linear layers packed\n", a.out_format, n_packed, res.n_layers);
    qjson = quantization_json(&a, &sm, &po, a.calib ? &cal : NULL, &res, mq, ppl_before, ppl_after, &acc_rep, mx);
    /* tokenizer.json: the given one, or the HF source's, else generated */
    if (a.tokenizer) {
        size_t n = strlen(a.tokenizer);
        if (n >= 14 && !strcmp(a.tokenizer + n - 14, "tokenizer.json"))
            tokjson = strdup(a.tokenizer);
        else if (piso_is_dir(a.tokenizer))
            tokjson = piso_path_join(a.tokenizer, "tokenizer.json");
    } else if (piso_is_dir(a.model)) {
        tokjson = piso_path_join(a.model, "tokenizer.json");
        srcdir = strdup(a.model);
    }
    if (tokjson && !piso_file_exists(tokjson)) free(tokjson), tokjson = NULL;
    struct piso_hf_export_opts eo = {.tokenizer_json = tokjson,
                                     .source_dir = srcdir,
                                     .quantization_json = qjson,
                                     .res = &res,
                                     .transform_json = tjson,
                                     .ckpt = ckpt,
                                     .bits = po.ec.q.grid.bits,
                                     .group = (int)a.group,
                                     .asym = a.asym,
                                     .act_order = po.ec.act_order};
    double t_export = piso_time();
    piso_log("export: writing %s (%.1fs so far)\n", a.out, t_export - t0);
    if (hf_stream) {
        struct piso_hf_stream *hs = hf_stream;
        hf_stream = NULL; /* finish frees it, whatever happens */
        if (piso_hf_stream_finish(hs, mq, &eo)) goto fail;
    } else if (piso_hf_export(mq, a.out, &eo))
        goto fail;
    t_export = piso_time() - t_export;
    double secs = piso_time() - t0;
    piso_log("wrote %s (%.1fs)\n", a.out, secs);
    if (a.common.json) {
        struct piso_json w;
        piso_json_begin(&w, PISO_JSON_COMPACT);
        piso_json_string(&w, "model", a.model);
        piso_json_string(&w, "out", a.out);
        piso_json_string(&w, "format", mx ? "mixed" : po.ec.q.grid.name);
        piso_json_number(&w, "group", (double)a.group);
        piso_json_bool(&w, "asym", a.asym);
        piso_json_string(&w, "out_format", a.out_format);
        if (ckpt != PISO_CKPT_DENSE) piso_json_number(&w, "packed_layers", n_packed);
        piso_json_string(&w, "rounding", piso_rounding_name(po.rounding));
        piso_json_string(&w, "scale", piso_scale_method_name(po.ec.q.method));
        piso_json_string(&w, "interleave", piso_interleave_name(po.ec.interleave));
        piso_json_string(&w, "objective", piso_objective_name(po.objective));
        piso_json_bool(&w, "act_order", po.ec.act_order);
        cli_rounders_json(&w, po.rounding, &po.ec, po.alpha_sample);
        if (piso_act_quant_active(&mq->act)) {
            piso_act_quant_json(&w, &mq->act, 0);
            piso_json_bool(&w, "calib_act_quant", a.calib_act_quant);
        }
        if (po.ec.q.acc) cli_accum_json(&w, &acc, (int)a.acc_tile, &acc_rep);
        /* without --calib (data-free RTN) the per-layer errors are measured on a single BOS token */
        piso_json_bool(&w, "calibrated", a.calib != NULL);
        if (cli_transform_wanted(&to)) {
            piso_json_string(&w, "rotate", a.rotate);
            if (a.rotate_block) piso_json_number(&w, "rotate_block", (double)a.rotate_block);
            piso_json_string(&w, "permute", a.permute);
            piso_json_bool(&w, "online_rotations", mq->online.down_block || mq->online.o_heads);
        }
        piso_json_number(&w, "nsamples", a.calib ? cal.nsamples : 0);
        piso_json_number(&w, "seqlen", a.calib ? cal.seqlen : 0);
        if (ppl_before > 0) {
            piso_json_number(&w, "perplexity_before", ppl_before);
            piso_json_number(&w, "perplexity_after", ppl_after);
        }
        piso_json_number(&w, "seconds_quantize", res.seconds);
        piso_json_number(&w, "seconds", secs);
        /* where the time went; "block_forwards": forward passes per block (float side included) in
         * units of one float block forward over the calibration tokens */
        const struct piso_pipeline_timing *tm = &res.timing;
        piso_json_object_begin(&w, "timing");
        piso_json_number(&w, "float_forward", tm->float_forward);
        piso_json_number(&w, "quantized_forward", tm->quant_forward);
        piso_json_number(&w, "statistics", tm->statistics);
        piso_json_number(&w, "solves", tm->solves);
        piso_json_number(&w, "export", t_export);
        piso_json_number(&w, "one_float_block", tm->one_float_block);
        piso_json_number(&w, "block_forwards", tm->block_forwards);
        piso_json_object_end(&w);
        piso_json_array_begin(&w, "layers");
        for (int i = 0; i < res.n_layers; i++) {
            const struct piso_layer_report *r = &res.layers[i];
            piso_json_object_begin(&w, NULL);
            piso_json_string(&w, "name", r->name);
            piso_json_number(&w, "rows", (double)r->N);
            piso_json_number(&w, "cols", (double)r->D);
            piso_json_number(&w, "group", r->group);
            if (r->last_group != r->group) piso_json_number(&w, "last_group", r->last_group);
            if (r->tensor_scale > 0) piso_json_number(&w, "tensor_scale", r->tensor_scale);
            piso_json_number(&w, "rel_err", r->rel_err);
            piso_json_number(&w, "rel_err_absmax_rtn", r->rel_err_absmax);
            piso_json_number(&w, "objective", r->objective);
            if (cli_rounding_uses_alpha(po.rounding)) piso_json_number(&w, "alpha", r->alpha);
            cli_mixed_layer_json(&w, mx, r);
            piso_json_number(&w, "seconds", r->seconds);
            if (r->sweep.rows > r->sweep.rows_full) { /* the pruned channel-wise PiSO sweep */
                const struct piso_prune_stats *ps = &r->sweep;
                piso_json_object_begin(&w, "sweep");
                piso_json_number(&w, "pruned", ps->intervals ? 1.0 - (double)ps->swept / (double)ps->intervals : 0);
                piso_json_string(&w, "reads", ps->rows_x ? "X" : "H");
                piso_json_number(&w, "seconds_minorant", ps->seconds_minorant);
                piso_json_number(&w, "seconds_bound", ps->seconds_bound);
                piso_json_number(&w, "seconds_gemm", ps->seconds_gemm);
                piso_json_number(&w, "seconds_walk", ps->seconds_walk + ps->seconds_windows);
                piso_json_object_end(&w);
            }
            piso_json_object_end(&w);
        }
        piso_json_array_end(&w);
        if (mx) cli_mixed_json(&w, mx);
        if (piso_json_print(&w, stdout)) goto fail;
    }
    rc = 0;
fail:
    if (rc) cli_fail("quantize", piso_last_error());
    piso_hf_stream_abort(hf_stream); /* a failure before the end: nothing is left */
    piso_pipeline_result_free(&res);
    if (mx) cli_mixed_free(mx);
    piso_calib_free(&cal);
    piso_model_free(mq), piso_model_free(mf);
    free(eval_text), free(qjson), free(tokjson), free(srcdir), free(tjson);
    piso_transform_plan_free(&plan);
    return rc;
}
