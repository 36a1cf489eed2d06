/* piso quantize — whole-model quantization. GGUF output (--type, or --out *.gguf) is handled by
 * cmd_quantize_gguf (llama.cpp block formats); everything else writes a Hugging Face directory. */
#include "cli.h"
#include "piso/eval.h"
#include "piso/pipeline.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static int wants_gguf(int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--type") || !strncmp(argv[i], "--type=", 7)) return 1;
        const char *out = NULL;
        if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[i + 1];
        if (!strncmp(argv[i], "--out=", 6)) out = argv[i] + 6;
        if (out) {
            size_t n = strlen(out);
            if (n > 5 && !strcmp(out + n - 5, ".gguf")) return 1;
        }
    }
    return 0;
}

static const char *const usage =
    "usage: piso quantize --model PATH [--tokenizer PATH] --calib FILE --format int2..int8|fp4_e2m1|...\n"
    "         [--narrow] [--group G] [--rounding rtn|gptq|qronos]\n"
    "         [--scale absmax|mse-grid|piso-datafree|piso-diag|piso|piso-seq]\n"
    "         [--interleave none|layer|group] [--objective x-x|xq-xq|x-xq] [--act-order] [--damp F]\n"
    "         [--nsamples N] [--seqlen L] [--seed S] --out DIR [--eval TEXT] [--ctx N] [--json] [--quiet]\n"
    "  (--calib may be left out for RTN with a data-free scale: absmax, mse-grid, piso-datafree)\n";

struct q_args {
    const char *model, *tokenizer, *calib, *format, *out, *eval;
    const char *rounding, *scale, *interleave, *objective;
    long group, nsamples, seqlen, seed, ctx;
    double damp;
    int narrow, act_order, json, quiet;
};

static int parse(int argc, char **argv, struct q_args *a) {
    memset(a, 0, sizeof *a);
    a->damp = -1, a->seed = 0, a->rounding = "gptq", a->scale = "piso";
    for (int i = 0; i < argc; i++) {
        const char *v = NULL;
        if (cli_opt(argc, argv, &i, "--model", &a->model) || cli_opt(argc, argv, &i, "--tokenizer", &a->tokenizer) ||
            cli_opt(argc, argv, &i, "--calib", &a->calib) || cli_opt(argc, argv, &i, "--format", &a->format) ||
            cli_opt(argc, argv, &i, "--out", &a->out) || cli_opt(argc, argv, &i, "--eval", &a->eval) ||
            cli_opt(argc, argv, &i, "--rounding", &a->rounding) || cli_opt(argc, argv, &i, "--scale", &a->scale) ||
            cli_opt(argc, argv, &i, "--interleave", &a->interleave) ||
            cli_opt(argc, argv, &i, "--objective", &a->objective) ||
            cli_opt_int(argc, argv, &i, "--group", &a->group) || cli_opt_int(argc, argv, &i, "--nsamples", &a->nsamples) ||
            cli_opt_int(argc, argv, &i, "--seqlen", &a->seqlen) || cli_opt_int(argc, argv, &i, "--seed", &a->seed) ||
            cli_opt_int(argc, argv, &i, "--ctx", &a->ctx))
            continue;
        if (cli_opt(argc, argv, &i, "--damp", &v)) {
            char *end;
            a->damp = strtod(v, &end);
            if (*end || a->damp < 0) return cli_usage_error("quantize", "--damp needs a number >= 0, got '%s'", v);
            continue;
        }
        if (cli_flag(argc, argv, &i, "--narrow")) a->narrow = 1;
        else if (cli_flag(argc, argv, &i, "--act-order")) a->act_order = 1;
        else if (cli_flag(argc, argv, &i, "--json")) a->json = 1;
        else if (cli_flag(argc, argv, &i, "--quiet")) a->quiet = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(usage, stdout);
            return -2;
        } else
            return cli_usage_error("quantize", "unknown argument '%s'\n%s", argv[i], usage);
    }
    return 0;
}

/* quantization.json: everything needed to interpret the codes (no timings, so that outputs are
 * byte-identical across runs and thread counts). */
static char *quantization_json(const struct q_args *a, const struct piso_pipeline_opts *po,
                               const struct piso_calib *cal, const struct piso_pipeline_result *res,
                               const struct piso_model *m, double ppl_before, double ppl_after) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "quantizer", "piso");
    cJSON_AddStringToObject(j, "format", po->ec.q.grid.name);
    cJSON_AddBoolToObject(j, "narrow", a->narrow);
    cJSON *gv = cJSON_AddArrayToObject(j, "grid");
    for (int i = 0; i < po->ec.q.grid.n; i++) cJSON_AddItemToArray(gv, cJSON_CreateNumber(po->ec.q.grid.v[i]));
    cJSON_AddStringToObject(j, "codes",
                            po->ec.q.grid.is_int ? "integer grid value: weight = scale * code"
                                                 : "index into grid: weight = scale * grid[code]");
    cJSON_AddNumberToObject(j, "group", (double)a->group);
    cJSON_AddStringToObject(j, "rounding", piso_rounding_name(po->rounding));
    cJSON_AddStringToObject(j, "scale", piso_scale_method_name(po->ec.q.method));
    cJSON_AddStringToObject(j, "interleave", piso_interleave_name(po->ec.interleave));
    cJSON_AddStringToObject(j, "objective", piso_objective_name(po->objective));
    cJSON_AddBoolToObject(j, "act_order", po->ec.act_order);
    if (po->ec.damp >= 0) cJSON_AddNumberToObject(j, "damp", po->ec.damp);
    else cJSON_AddNumberToObject(j, "damp", po->rounding == PISO_ROUND_QRONOS ? 1e-6 : 0.01);
    cJSON_AddStringToObject(j, "damp_meaning", po->rounding == PISO_ROUND_QRONOS ? "lambda = damp * sigma_max(H)"
                                                                                : "lambda = damp * mean(diag H)");
    if (cal) {
        cJSON *c = cJSON_AddObjectToObject(j, "calibration");
        cJSON_AddStringToObject(c, "file", a->calib);
        cJSON_AddNumberToObject(c, "nsamples", cal->nsamples);
        cJSON_AddNumberToObject(c, "seqlen", cal->seqlen);
        cJSON_AddNumberToObject(c, "seed", (double)a->seed);
        cJSON_AddNumberToObject(c, "text_tokens", cal->n_text_tokens);
    }
    cJSON_AddStringToObject(j, "source", a->model);
    cJSON_AddStringToObject(j, "weights", "model.safetensors holds the dequantized weights (scale * code)");
    cJSON_AddStringToObject(j, "tensors", "quantization.safetensors");
    cJSON_AddStringToObject(j, "not_quantized", "embed_tokens, lm_head, norms");
    if (ppl_before > 0) {
        cJSON *p = cJSON_AddObjectToObject(j, "perplexity");
        cJSON_AddStringToObject(p, "text", a->eval);
        cJSON_AddNumberToObject(p, "before", ppl_before);
        cJSON_AddNumberToObject(p, "after", ppl_after);
    }
    cJSON *L = cJSON_AddObjectToObject(j, "layers");
    char nm[160];
    for (int i = 0; i < res->n_layers; i++) {
        const struct piso_layer_report *r = &res->layers[i];
        cJSON *o = cJSON_AddObjectToObject(L, r->name);
        double shape[2] = {(double)r->N, (double)r->D};
        cJSON_AddItemToObject(o, "shape", cJSON_CreateDoubleArray(shape, 2));
        cJSON_AddNumberToObject(o, "group", r->group);
        if (r->last_group != r->group) cJSON_AddNumberToObject(o, "last_group", r->last_group);
        cJSON_AddNumberToObject(o, "n_groups", (double)r->n_groups);
        snprintf(nm, sizeof nm, "%s.scales", r->name);
        cJSON_AddStringToObject(o, "scales", nm);
        snprintf(nm, sizeof nm, "%s.codes", r->name);
        cJSON_AddStringToObject(o, "codes", nm);
        cJSON_AddNumberToObject(o, "rel_err", r->rel_err);
        cJSON_AddNumberToObject(o, "rel_err_absmax_rtn", r->rel_err_absmax);
    }
    (void)m;
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    return s;
}

static double eval_ppl(const struct piso_model *m, const char *text, size_t len, int ctx) {
    struct piso_ppl_result r;
    if (piso_perplexity(m, text, len, ctx, &r)) return -1;
    return r.ppl;
}

int cmd_quantize(int argc, char **argv) {
    if (wants_gguf(argc, argv)) return cmd_quantize_gguf(argc, argv);
    struct q_args a;
    int prc = parse(argc, argv, &a);
    if (prc == -2) return 0;
    if (prc) return prc;
    if (!a.model) return cli_usage_error("quantize", "--model is required\n%s", usage);
    if (!a.out) return cli_usage_error("quantize", "--out is required\n%s", usage);
    if (!a.format) return cli_usage_error("quantize", "--format is required (e.g. int4)\n%s", usage);
    if (a.quiet) piso_set_quiet(1);

    struct piso_pipeline_opts po;
    memset(&po, 0, sizeof po);
    piso_ec_opts_default(&po.ec);
    char msg[512];
    if (piso_grid_init(&po.ec.q.grid, a.format, a.narrow)) {
        snprintf(msg, sizeof msg, "unsupported --format '%s' (%s)", a.format, piso_last_error());
        return cli_fail("quantize", msg);
    }
    if (piso_rounding_from_name(a.rounding, &po.rounding))
        return cli_usage_error("quantize", "unknown --rounding '%s' (rtn, gptq, qronos)", a.rounding);
    if (piso_scale_method_from_name(a.scale, &po.ec.q.method))
        return cli_usage_error("quantize", "unknown --scale '%s' (absmax, mse-grid, piso-datafree, piso-diag, piso, piso-seq)",
                               a.scale);
    if (a.group < 0 || a.group > 1 << 20) return cli_usage_error("quantize", "--group must be >= 0");
    po.ec.q.group = (int)a.group;
    po.ec.q.allow_negative = 1;
    po.ec.act_order = a.act_order;
    po.ec.damp = a.damp;
    po.ec.interleave = a.group > 0 ? PISO_INTERLEAVE_GROUP : PISO_INTERLEAVE_LAYER;
    if (a.interleave && piso_interleave_from_name(a.interleave, &po.ec.interleave))
        return cli_usage_error("quantize", "unknown --interleave '%s' (none, layer, group)", a.interleave);
    po.objective = po.rounding == PISO_ROUND_GPTQ ? PISO_OBJ_XQ_XQ : PISO_OBJ_X_XQ;
    if (a.objective && piso_objective_from_name(a.objective, &po.objective))
        return cli_usage_error("quantize", "unknown --objective '%s' (x-x, xq-xq, x-xq)", a.objective);
    int data_free = po.rounding == PISO_ROUND_RTN &&
                    (po.ec.q.method == PISO_SCALE_ABSMAX || po.ec.q.method == PISO_SCALE_MSE_GRID ||
                     po.ec.q.method == PISO_SCALE_PISO_DATAFREE);
    if (!a.calib && !data_free)
        return cli_usage_error("quantize", "--calib FILE is required for %s with --scale %s", a.rounding, a.scale);
    if (a.nsamples < 0 || a.seqlen < 0) return cli_usage_error("quantize", "--nsamples and --seqlen must be > 0");

    struct piso_model *mq = NULL, *mf = NULL;
    struct piso_calib cal;
    memset(&cal, 0, sizeof cal);
    struct piso_pipeline_result res;
    memset(&res, 0, sizeof res);
    char *eval_text = NULL, *qjson = NULL, *tokjson = NULL, *srcdir = NULL;
    size_t eval_len = 0;
    int rc = 1;
    double ppl_before = -1, ppl_after = -1, t0 = piso_time();
    if (piso_hf_export_check(a.out)) goto fail; /* before any long work */
    if (a.eval && piso_read_file(a.eval, &eval_text, &eval_len)) goto fail;
    if (piso_model_load(a.model, a.tokenizer, &mq)) goto fail;
    if (!mq->tok) {
        piso_errorf("model %s carries no tokenizer (pass --tokenizer)", a.model);
        goto fail;
    }
    if (a.calib && piso_calib_load(mq->tok, a.calib, (int)a.nsamples, (int)a.seqlen, mq->cfg.max_seq_len,
                                   (uint64_t)a.seed, &cal))
        goto fail;
    if (piso_model_load(a.model, a.tokenizer, &mf) || piso_model_make_writable(mq)) goto fail;
    int ctx = a.ctx > 0 ? (int)a.ctx : 0; /* 0: the evaluator's default, min(512, model context) */
    if (eval_text) {
        ppl_before = eval_ppl(mf, eval_text, eval_len, ctx);
        if (ppl_before < 0) goto fail;
        piso_log("perplexity before: %.4f\n", ppl_before);
    }
    if (a.calib) {
        piso_log("calibration: %d windows of %d tokens from %s (%d tokens)\n", cal.nsamples, cal.seqlen, a.calib,
                 cal.n_text_tokens);
        if (piso_quantize_model(mq, mf, &cal, &po, &res)) goto fail;
    } else {
        /* Data-free RTN: the same pipeline with one BOS-only window (statistics unused). */
        cal.nsamples = 1, cal.seqlen = 1;
        cal.tokens = malloc(sizeof(int));
        const struct piso_tokenizer_vocab *v = piso_tokenizer_vocab(mq->tok);
        cal.tokens[0] = v && v->bos_id >= 0 ? v->bos_id : 0;
        if (piso_quantize_model(mq, mf, &cal, &po, &res)) goto fail;
    }
    if (eval_text) {
        ppl_after = eval_ppl(mq, eval_text, eval_len, ctx);
        if (ppl_after < 0) goto fail;
        piso_log("perplexity after: %.4f\n", ppl_after);
    }
    qjson = quantization_json(&a, &po, a.calib ? &cal : NULL, &res, mq, ppl_before, ppl_after);
    /* tokenizer.json: the given one, or the HF source's, else generated */
    if (a.tokenizer) {
        size_t n = strlen(a.tokenizer);
        if (n >= 14 && !strcmp(a.tokenizer + n - 14, "tokenizer.json")) tokjson = strdup(a.tokenizer);
        else if (piso_is_dir(a.tokenizer)) tokjson = piso_path_join(a.tokenizer, "tokenizer.json");
    } else if (piso_is_dir(a.model)) {
        tokjson = piso_path_join(a.model, "tokenizer.json");
        srcdir = strdup(a.model);
    }
    if (tokjson && !piso_file_exists(tokjson)) free(tokjson), tokjson = NULL;
    struct piso_hf_export_opts eo = {tokjson, srcdir, qjson, &res};
    if (piso_hf_export(mq, a.out, &eo)) goto fail;
    double secs = piso_time() - t0;
    piso_log("wrote %s (%.1fs)\n", a.out, secs);
    if (a.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", a.model);
        cJSON_AddStringToObject(j, "out", a.out);
        cJSON_AddStringToObject(j, "format", po.ec.q.grid.name);
        cJSON_AddNumberToObject(j, "group", (double)a.group);
        cJSON_AddStringToObject(j, "rounding", piso_rounding_name(po.rounding));
        cJSON_AddStringToObject(j, "scale", piso_scale_method_name(po.ec.q.method));
        cJSON_AddStringToObject(j, "interleave", piso_interleave_name(po.ec.interleave));
        cJSON_AddStringToObject(j, "objective", piso_objective_name(po.objective));
        cJSON_AddBoolToObject(j, "act_order", po.ec.act_order);
        /* without --calib (data-free RTN) the per-layer errors are measured on a single BOS token */
        cJSON_AddBoolToObject(j, "calibrated", a.calib != NULL);
        cJSON_AddNumberToObject(j, "nsamples", a.calib ? cal.nsamples : 0);
        cJSON_AddNumberToObject(j, "seqlen", a.calib ? cal.seqlen : 0);
        if (ppl_before > 0) {
            cJSON_AddNumberToObject(j, "perplexity_before", ppl_before);
            cJSON_AddNumberToObject(j, "perplexity_after", ppl_after);
        }
        cJSON_AddNumberToObject(j, "seconds_quantize", res.seconds);
        cJSON_AddNumberToObject(j, "seconds", secs);
        cJSON *L = cJSON_AddArrayToObject(j, "layers");
        for (int i = 0; i < res.n_layers; i++) {
            const struct piso_layer_report *r = &res.layers[i];
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "name", r->name);
            cJSON_AddNumberToObject(o, "rows", (double)r->N);
            cJSON_AddNumberToObject(o, "cols", (double)r->D);
            cJSON_AddNumberToObject(o, "group", r->group);
            if (r->last_group != r->group) cJSON_AddNumberToObject(o, "last_group", r->last_group);
            cJSON_AddNumberToObject(o, "rel_err", r->rel_err);
            cJSON_AddNumberToObject(o, "rel_err_absmax_rtn", r->rel_err_absmax);
            cJSON_AddNumberToObject(o, "objective", r->objective);
            cJSON_AddNumberToObject(o, "seconds", r->seconds);
            cJSON_AddItemToArray(L, o);
        }
        char *s = cJSON_PrintUnformatted(j);
        printf("%s\n", s);
        free(s);
        cJSON_Delete(j);
    }
    rc = 0;
fail:
    if (rc) cli_fail("quantize", piso_last_error());
    piso_pipeline_result_free(&res);
    piso_calib_free(&cal);
    piso_model_free(mq), piso_model_free(mf);
    free(eval_text), free(qjson), free(tokjson), free(srcdir);
    return rc;
}
