/* piso perplexity --model PATH [--tokenizer PATH] --text FILE [--ctx N] [--json] [--quiet]
 *                 [--kl-base FILE [--kl-divergence]] [--llamacpp-activations]
 * [--act-format F --act-group G --kv-format F] [--simulate-accumulator P ...]
 * llama.cpp's perplexity protocol (see piso/eval.h); with --kl-base the float model's log-probs are
 * written (as llama-perplexity --kl-divergence-base), with --kl-divergence a model is compared with
 * them (piso/kld.h). */
#include "act_quant.h"
#include "cli.h"
#include "piso/accum_sim.h"
#include "piso/eval.h"
#include "piso/json_out.h"
#include "piso/kld.h"
#include "piso/llamacpp_act.h"

#include <stdlib.h>
#include <string.h>

struct ppl_args {
    struct cli_common common;
    const char *model, *tokenizer, *text, *kl_base;
    int64_t ctx;
    int kl_divergence;
    const char *act_format, *kv_format;
    int64_t act_group;
    int64_t sim_bits, sim_tile;
    int sim_saturate;
    int llamacpp_activations;
};

static const struct cli_option ppl_options[] = {
    CLI_OPTION_MODEL(struct ppl_args),
    CLI_OPTION_TOKENIZER(struct ppl_args),
    {"--text", NULL, CLI_STRING, offsetof(struct ppl_args, text), .arg = "FILE",
     .help = "the text to score (required, except with --kl-divergence: the base file holds the tokens)"},
    {"--ctx", NULL, CLI_INT, offsetof(struct ppl_args, ctx), .arg = "N",
     .help = "chunk length; 0: min(512, the model's context), or the base file's with --kl-divergence", .imin = 0,
     .imax = 1 << 20},
    {"--kl-base", NULL, CLI_STRING, offsetof(struct ppl_args, kl_base), .arg = "FILE",
     .help = "write this model's log-probs to FILE (llama-perplexity --kl-divergence-base layout);\n"
             "with --kl-divergence: read them and compare"},
    {"--kl-divergence", NULL, CLI_FLAG, offsetof(struct ppl_args, kl_divergence),
     .help = "compare with the --kl-base file: KL divergence, top-1 agreement, PPL ratio (as llama-perplexity)"},
    CLI_OPTION_LLAMACPP_ACTIVATIONS(struct ppl_args),
    CLI_OPTIONS_ACT_QUANT(struct ppl_args),
    {"--simulate-accumulator", NULL, CLI_INT, offsetof(struct ppl_args, sim_bits), .arg = "P",
     .help = "run the blocks' linear layers as integer weights x integer activations\n"
             "with a P-bit accumulator that wraps around (64: exact); needs a piso\n"
             "output directory with an integer --act-format", .imin = 2, .imax = 64},
    {"--simulate-tile", NULL, CLI_INT, offsetof(struct ppl_args, sim_tile), .arg = "T",
     .help = "--simulate-accumulator: one accumulator per tile of T inputs, tiles\nsummed wide (default: the weight group, or the row)",
     .imin = 1, .imax = 1 << 30},
    {"--simulate-saturate", NULL, CLI_FLAG, offsetof(struct ppl_args, sim_saturate),
     .help = "--simulate-accumulator: saturate at the P-bit range instead of wrapping"},
    {0},
};

static const struct cli_section ppl_sections[] = {{NULL, NULL, ppl_options}, {0}};

static const struct cli_command ppl_command = {
    .name = "perplexity",
    .summary = "Perplexity of a model on a text file, by llama.cpp's protocol; KL divergence to a base model.",
    .usage = "--model PATH --text FILE [--ctx N] [--kl-base FILE [--kl-divergence]] [--json]",
    .notes = "--json prints {\"ppl\", \"nll\", \"tokens\", \"chunks\", \"scored\", \"seconds\"}; with --kl-divergence\n"
             "{\"ppl\", \"ppl_base\", \"ln_ppl_ratio\", \"ppl_ratio\", \"kld\", \"same_top\", ... \"kld_percentiles\"},\n"
             "each value with its uncertainty (\"_unc\"), probabilities as fractions.\n"
             "The float model writes the base once:  piso perplexity --model F --text T --kl-base base.kld\n"
             "then each quantized model compares:    piso perplexity --model Q --kl-base base.kld --kl-divergence\n",
    .sections = ppl_sections,
};

static void json_pair(struct piso_json *w, const char *key, double v, double unc, int digits) {
    char k[64];
    piso_json_sig(w, key, v, digits);
    snprintf(k, sizeof k, "%s_unc", key);
    piso_json_sig(w, k, unc, digits);
}

static int print_kld(const struct piso_kld_result *r, double seconds, int json) {
    if (!json) {
        printf("KL divergence over %lld positions (%d chunks of %d tokens):\n\n", (long long)r->count, r->chunks, r->ctx);
        piso_kld_print(r, stdout);
        return 0;
    }
    struct piso_json w;
    piso_json_begin(&w, PISO_JSON_SPACED);
    json_pair(&w, "ppl", r->ppl, r->ppl_unc, 6);
    json_pair(&w, "ppl_base", r->ppl_base, r->ppl_base_unc, 6);
    piso_json_fixed(&w, "cor_ln_ppl", r->cor_ln_ppl, 6);
    json_pair(&w, "ln_ppl_ratio", r->ln_ratio, r->ln_ratio_unc, 6);
    json_pair(&w, "ppl_ratio", r->ratio, r->ratio_unc, 6);
    json_pair(&w, "ppl_diff", r->diff, r->diff_unc, 6);
    json_pair(&w, "kld", r->kld, r->kld_unc, 6);
    static const char *const kn[PISO_KLD_NPCT] = {"max", "99.9", "99", "95", "90", "median", "10", "5", "1", "0.1", "min"};
    static const char *const dn[PISO_DP_NPCT] = {"max", "99.9", "99", "95", "90", "75", "median",
                                                 "25",  "10",   "5",  "1",  "0.1", "min"};
    piso_json_object_begin(&w, "kld_percentiles");
    for (int i = 0; i < PISO_KLD_NPCT; i++) piso_json_fixed(&w, kn[i], r->kld_pct[i], 6);
    piso_json_object_end(&w);
    json_pair(&w, "dp_mean", r->dp_mean, r->dp_mean_unc, 6);
    piso_json_object_begin(&w, "dp_percentiles");
    for (int i = 0; i < PISO_DP_NPCT; i++) piso_json_fixed(&w, dn[i], r->dp_pct[i], 6);
    piso_json_object_end(&w);
    json_pair(&w, "dp_rms", r->dp_rms, r->dp_rms_unc, 6);
    json_pair(&w, "same_top", r->same_top, r->same_top_unc, 6);
    piso_json_int(&w, "count", r->count);
    piso_json_int(&w, "chunks", r->chunks);
    piso_json_int(&w, "ctx", r->ctx);
    piso_json_fixed(&w, "seconds", seconds, 3);
    return piso_json_print(&w, stdout);
}

static int run_kld(const struct ppl_args *a, struct piso_model *m) {
    struct piso_kld_base b;
    if (piso_kld_base_open(a->kl_base, &b)) return -1;
    double t0 = piso_time();
    int *ids = NULL, n = 0, rc = 0;
    if (a->text) {
        char *buf;
        size_t len;
        rc = piso_read_file(a->text, &buf, &len);
        if (rc == 0) {
            rc = piso_perplexity_tokenize(m, buf, len, &ids, &n);
            free(buf);
            if (rc) piso_error_context("%s", a->text);
        }
    }
    const struct piso_tokenizer *tok = rc == 0 ? cli_model_tokenizer(m) : NULL;
    if (rc == 0 && !tok) rc = -1;
    struct piso_kld_result r;
    if (rc == 0) rc = piso_kld_compare(m, &b, ids, n, piso_tokenizer_vocab(tok)->bos_id, (int)a->ctx, &r);
    free(ids);
    piso_kld_base_close(&b);
    if (rc == 0) rc = print_kld(&r, piso_time() - t0, a->common.json);
    return rc;
}

int cmd_perplexity(int argc, char **argv) {
    struct ppl_args a = {0};
    int prc = cli_parse(&ppl_command, CLI_ALL_SECTIONS, argc, argv, &a.common);
    if (prc != CLI_CONTINUE) return prc;
    prc = cli_act_quant_check("perplexity", a.act_format, a.act_group, a.kv_format);
    if (prc) return prc;
    if (a.kl_divergence && !a.kl_base)
        return cli_usage_error("perplexity", "option --kl-divergence: needs --kl-base FILE (the base model's log-probs)");
    if (!a.text && !a.kl_divergence) return cli_usage_error("perplexity", "option --text is required");
    if (!a.sim_bits && (a.sim_tile || a.sim_saturate))
        return cli_usage_error("perplexity", "option %s: only with --simulate-accumulator",
                               a.sim_tile ? "--simulate-tile" : "--simulate-saturate");
    if (a.kl_base && !a.kl_divergence && piso_output_check(a.kl_base, 0) != 0)
        return cli_fail("perplexity", piso_last_error());
    struct piso_model *m = NULL;
    if (piso_model_load(a.model, a.tokenizer, &m) != 0 ||
        cli_act_quant_apply(m, a.act_format, a.act_group, a.kv_format) != 0 ||
        (a.llamacpp_activations && piso_llamacpp_act_enable(m) != 0)) {
        piso_model_free(m);
        return cli_fail("perplexity", piso_last_error());
    }
    struct piso_accum_sim sim;
    struct piso_accum_report chk;
    memset(&sim, 0, sizeof sim), memset(&chk, 0, sizeof chk);
    if (a.sim_bits) {
        if (piso_accum_sim_load(&sim, m, a.model, (int)a.sim_bits, (int)a.sim_tile, a.sim_saturate)) {
            piso_model_free(m);
            return cli_fail("perplexity", piso_last_error());
        }
        m->accum_sim = &sim;
        if (a.sim_bits <= 62) { /* the checker on the written codes, for this accumulator */
            struct piso_accum acc = {.bits = (int)a.sim_bits, .tile = (int)a.sim_tile};
            int mn, mx;
            piso_act_code_range(&m->act.act, &mn, &mx);
            acc.in_min = mn, acc.in_max = mx;
            piso_accum_sim_check(&sim, &acc, &chk);
            piso_log("accumulator check (P = %lld): worst case %lld of %lld, %lld (row, tile) pairs over\n",
                     (long long)a.sim_bits, (long long)chk.worst, (long long)chk.limit, (long long)chk.violations);
        }
    }
    if (piso_act_quant_active(&m->act))
        piso_log("perplexity: activations %s (group %d), KV cache %s\n", m->act.act.name[0] ? m->act.act.name : "none",
                 m->act.act.group, m->act.kv.name[0] ? m->act.kv.name : "none");
    if (a.kl_divergence) {
        int rc = run_kld(&a, m);
        piso_accum_sim_free(&sim);
        piso_model_free(m);
        return rc ? cli_fail("perplexity", piso_last_error()) : 0;
    }
    char *buf;
    size_t len;
    if (piso_read_file(a.text, &buf, &len) != 0) {
        piso_accum_sim_free(&sim);
        piso_model_free(m);
        return cli_fail("perplexity", piso_last_error());
    }
    struct piso_ppl_result r;
    int *ids = NULL, n = 0;
    double t0 = piso_time();
    int rc = len == 0 ? piso_errorf("%s: the text is empty", a.text) : piso_perplexity_tokenize(m, buf, len, &ids, &n);
    free(buf);
    if (rc == 0) {
        const int bos = piso_tokenizer_vocab(cli_model_tokenizer(m))->bos_id;
        rc = a.kl_base ? piso_kld_write_base(m, ids, n, bos, (int)a.ctx, a.kl_base, &r)
                       : piso_perplexity_ids(m, ids, n, bos, (int)a.ctx, &r);
        r.seconds = piso_time() - t0;
    }
    free(ids);
    if (rc == 0 && a.common.json) {
        struct piso_json w;
        piso_json_begin(&w, PISO_JSON_SPACED);
        piso_json_fixed(&w, "ppl", r.ppl, 6);
        piso_json_fixed(&w, "nll", r.nll, 6);
        piso_json_int(&w, "tokens", r.tokens);
        piso_json_int(&w, "chunks", r.chunks);
        piso_json_int(&w, "scored", r.scored);
        piso_json_fixed(&w, "seconds", r.seconds, 3);
        if (a.kl_base) piso_json_string(&w, "kl_base", a.kl_base);
        if (piso_act_quant_active(&m->act)) piso_act_quant_json(&w, &m->act, 0);
        if (a.sim_bits) {
            piso_json_object_begin(&w, "accumulator_sim");
            piso_json_int(&w, "bits", a.sim_bits);
            piso_json_int(&w, "tile", a.sim_tile);
            piso_json_string(&w, "overflow", a.sim_saturate ? "saturate" : "wrap");
            piso_json_int(&w, "tile_sums", sim.tiles);
            piso_json_int(&w, "tile_sums_overflowed", sim.overflowed);
            if (a.sim_bits <= 62) {
                piso_json_int(&w, "check_worst", chk.worst);
                piso_json_int(&w, "check_limit", chk.limit);
                piso_json_int(&w, "check_violations", chk.violations);
            }
            piso_json_object_end(&w);
        }
        rc = piso_json_print(&w, stdout);
    } else if (rc == 0) {
        printf("perplexity: %.4f  (nll %.6f over %d scored tokens; %d tokens, %d chunks; %.2f s)\n", r.ppl, r.nll,
               r.scored, r.tokens, r.chunks, r.seconds);
        if (a.kl_base) printf("log-probs written to %s\n", a.kl_base);
        if (a.sim_bits)
            printf("accumulator %lld bits (%s): %lld of %lld tile sums overflowed\n", (long long)a.sim_bits,
                   a.sim_saturate ? "saturate" : "wrap", (long long)sim.overflowed, (long long)sim.tiles);
    }
    piso_accum_sim_free(&sim);
    piso_model_free(m);
    return rc ? cli_fail("perplexity", piso_last_error()) : 0;
}
