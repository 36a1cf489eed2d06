/* piso transform --model M [--rotate had|block --rotate-block B] [--permute P] [--smooth A
 * [--smooth-quantile P]] [--calib TXT] --out DIR
 * Writes the transformed float model (no quantization) as a Hugging Face directory with
 * transform.json (the online rotations a reload runs); its perplexity equals the original's. */
#include "cli.h"
#include "piso/eval.h"
#include "piso/json_out.h"
#include "piso/pipeline.h"
#include "smooth_opts.h"
#include "transform_opts.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct transform_args {
    struct cli_common common;
    const char *model, *tokenizer, *calib, *out, *eval;
    const char *rotate, *permute;
    int64_t rotate_block, nsamples, seqlen, seed, ctx;
    int no_online;
    double smooth, smooth_quantile, smooth_sketch_error; /* cli/smooth_opts.h */
    const char *smooth_stats;
};

#define ARG(field) offsetof(struct transform_args, field)

static const struct cli_option transform_options[] = {
    CLI_OPTION_MODEL(struct transform_args),
    CLI_OPTION_TOKENIZER(struct transform_args),
    {"--out", NULL, CLI_STRING, ARG(out), .arg = "DIR", .help = "the output Hugging Face directory", .required = 1},
    CLI_OPTIONS_TRANSFORM(struct transform_args),
    CLI_OPTIONS_SMOOTH(struct transform_args),
    {"--calib", NULL, CLI_STRING, ARG(calib), .arg = "FILE", .help = "calibration text (for --permute, --smooth)"},
    {"--nsamples", NULL, CLI_INT, ARG(nsamples), .arg = "N", .help = "calibration windows; 0: the default",
     .imin = 0, .imax = 1 << 20},
    {"--seqlen", NULL, CLI_INT, ARG(seqlen), .arg = "L", .help = "tokens per window; 0: the default", .imin = 0,
     .imax = 1 << 20},
    {"--seed", NULL, CLI_INT, ARG(seed), .arg = "S", .help = "seed of the windows and of --permute random",
     .imin = INT64_MIN, .imax = INT64_MAX},
    {"--eval", NULL, CLI_STRING, ARG(eval), .arg = "TEXT", .help = "a text file: perplexity before and after"},
    {"--ctx", NULL, CLI_INT, ARG(ctx), .arg = "N", .help = "--eval chunk length; 0: min(512, the model's context)",
     .imin = 0, .imax = 1 << 20},
    {0},
};

static const struct cli_section transform_sections[] = {{NULL, NULL, transform_options}, {0}};

static const struct cli_command transform_command = {
    .name = "transform",
    .summary = "Rotate / permute a model without quantizing it: a Hugging Face directory whose float\n"
               "function is the original's (online rotations recorded in transform.json).",
    .notes = "--json prints {\"out\", \"rotate\", \"permute\", \"online\", \"untied\", \"perplexity_before\",\n"
             "\"perplexity_after\", \"seconds\"}.\n",
    .sections = transform_sections,
};

static double eval_ppl(const struct piso_model *m, const char *text, size_t len, int ctx) {
    struct piso_ppl_result r;
    return piso_perplexity(m, text, len, ctx, &r) ? -1 : r.ppl;
}

int cmd_transform(int argc, char **argv) {
    struct transform_args a = {.smooth = -1, .smooth_quantile = NAN};
    int prc = cli_parse(&transform_command, CLI_ALL_SECTIONS, argc, argv, &a.common);
    if (prc != CLI_CONTINUE) return prc;
    struct piso_transform_opts to;
    int trc = cli_transform_opts("transform", a.rotate, a.rotate_block, a.permute, a.no_online, a.seed,
                                 a.calib != NULL, 0, &to);
    if (trc) return trc;
    struct cli_smooth sm = {a.smooth, a.smooth_quantile, a.smooth_sketch_error, a.smooth_stats};
    trc = cli_smooth_check("transform", &sm, a.calib != NULL);
    if (trc) return trc;
    if (!cli_transform_wanted(&to) && sm.alpha < 0)
        return cli_usage_error("transform", "option --rotate / --permute / --smooth: nothing to do (give one of them)");

    struct piso_model *m = NULL;
    struct piso_calib cal;
    memset(&cal, 0, sizeof cal);
    struct piso_transform_plan plan;
    memset(&plan, 0, sizeof plan);
    char *eval_text = NULL, *tjson = NULL, *tokjson = NULL, *srcdir = NULL;
    size_t eval_len = 0;
    double t0 = piso_time(), before = -1, after = -1;
    int rc = 1, ctx = (int)a.ctx;
    if (piso_hf_export_check(a.out)) goto fail;
    if (a.eval && piso_read_file(a.eval, &eval_text, &eval_len)) goto fail;
    if (a.eval && eval_len == 0) {
        piso_errorf("--eval %s: the text is empty", a.eval);
        goto fail;
    }
    if (piso_model_load(a.model, a.tokenizer, &m) || piso_model_make_writable(m)) goto fail;
    if (a.calib) {
        if (!m->tok) {
            piso_errorf("model %s carries no tokenizer (pass --tokenizer)", a.model);
            goto fail;
        }
        if (piso_calib_load(m->tok, a.calib, (int)a.nsamples, (int)a.seqlen, m->cfg.max_seq_len, (uint64_t)a.seed,
                            &cal))
            goto fail;
    }
    if (eval_text && (before = eval_ppl(m, eval_text, eval_len, ctx)) < 0) goto fail;
    if (sm.alpha >= 0 && cli_smooth_models(&sm, &cal, m, &m, 1)) goto fail; /* SmoothRot: smoothing first */
    if (cli_transform_wanted(&to) && piso_transform_model(m, &to, cal.tokens, cal.nsamples, cal.seqlen, &plan))
        goto fail;
    if (eval_text && (after = eval_ppl(m, eval_text, eval_len, ctx)) < 0) goto fail;
    if (before > 0) piso_log("perplexity: before %.6f, after %.6f\n", before, after);
    if (cli_transform_wanted(&to) && !(tjson = piso_transform_json(m, &plan))) goto fail; /* smoothing alone: none */
    if (piso_is_dir(a.model)) {
        tokjson = piso_path_join(a.model, "tokenizer.json");
        srcdir = strdup(a.model);
        if (!piso_file_exists(tokjson)) free(tokjson), tokjson = NULL;
    }
    struct piso_hf_export_opts eo = {.tokenizer_json = tokjson, .source_dir = srcdir, .transform_json = tjson};
    if (piso_hf_export(m, a.out, &eo)) goto fail;
    if (plan.untied) piso_log("transform: the output head was untied from the embeddings (the final norm differs)\n");
    piso_log("wrote %s (%.1fs)\n", a.out, piso_time() - t0);
    if (a.common.json) {
        struct piso_json w;
        piso_json_begin(&w, PISO_JSON_SPACED);
        piso_json_string(&w, "out", a.out);
        piso_json_string(&w, "rotate", a.rotate);
        if (a.rotate_block) piso_json_int(&w, "rotate_block", a.rotate_block);
        piso_json_string(&w, "permute", a.permute);
        piso_json_int(&w, "online_down_block", m->online.down_block);
        piso_json_int(&w, "online_o_heads", m->online.o_heads);
        piso_json_bool(&w, "untied", plan.untied);
        if (sm.alpha >= 0) cli_smooth_json(&w, &sm);
        if (before > 0) {
            piso_json_fixed(&w, "perplexity_before", before, 6);
            piso_json_fixed(&w, "perplexity_after", after, 6);
        }
        piso_json_fixed(&w, "seconds", piso_time() - t0, 3);
        if (piso_json_print(&w, stdout)) goto fail;
    }
    rc = 0;
fail:
    if (rc) cli_fail("transform", piso_last_error());
    piso_transform_plan_free(&plan);
    piso_calib_free(&cal);
    piso_model_free(m);
    free(eval_text), free(tjson), free(tokjson), free(srcdir);
    return rc;
}
