/* piso perplexity --model PATH [--tokenizer PATH] --text FILE [--ctx N] [--json] [--quiet]
 * llama.cpp's perplexity protocol (see piso/eval.h). */
#include "act_quant.h"
#include "cli.h"
#include "piso/accum_sim.h"
#include "piso/eval.h"
#include "piso/json_out.h"

#include <stdlib.h>
#include <string.h>

struct ppl_args {
    struct cli_common common;
    const char *model, *tokenizer, *text;
    int64_t ctx;
    const char *act_format, *kv_format;
    int64_t act_group;
    int64_t sim_bits, sim_tile;
    int sim_saturate;
};

static const struct cli_option ppl_options[] = {
    CLI_OPTION_MODEL(struct ppl_args),
    CLI_OPTION_TOKENIZER(struct ppl_args),
    {"--text", NULL, CLI_STRING, offsetof(struct ppl_args, text), .arg = "FILE", .help = "the text to score",
     .required = 1},
    {"--ctx", NULL, CLI_INT, offsetof(struct ppl_args, ctx), .arg = "N",
     .help = "chunk length; 0: min(512, the model's context)", .imin = 0, .imax = 1 << 20},
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
    .summary = "Perplexity of a model on a text file, by llama.cpp's protocol.",
    .notes = "--json prints {\"ppl\", \"nll\", \"tokens\", \"chunks\", \"scored\", \"seconds\"}.\n",
    .sections = ppl_sections,
};

int cmd_perplexity(int argc, char **argv) {
    struct ppl_args a = {0};
    int prc = cli_parse(&ppl_command, CLI_ALL_SECTIONS, argc, argv, &a.common);
    if (prc != CLI_CONTINUE) return prc;
    prc = cli_act_quant_check("perplexity", a.act_format, a.act_group, a.kv_format);
    if (prc) return prc;
    char *buf;
    size_t len;
    if (piso_read_file(a.text, &buf, &len) != 0) return cli_fail("perplexity", piso_last_error());
    if (len == 0) {
        free(buf);
        piso_errorf("%s: the text is empty", a.text);
        return cli_fail("perplexity", piso_last_error());
    }
    struct piso_model *m;
    if (piso_model_load(a.model, a.tokenizer, &m) != 0 ||
        cli_act_quant_apply(m, a.act_format, a.act_group, a.kv_format) != 0) {
        free(buf);
        piso_model_free(m);
        return cli_fail("perplexity", piso_last_error());
    }
    struct piso_accum_sim sim;
    struct piso_accum_report chk;
    memset(&sim, 0, sizeof sim), memset(&chk, 0, sizeof chk);
    if (!a.sim_bits && (a.sim_tile || a.sim_saturate)) {
        free(buf), piso_model_free(m);
        return cli_usage_error("perplexity", "option %s: only with --simulate-accumulator",
                               a.sim_tile ? "--simulate-tile" : "--simulate-saturate");
    }
    if (a.sim_bits) {
        if (piso_accum_sim_load(&sim, m, a.model, (int)a.sim_bits, (int)a.sim_tile, a.sim_saturate)) {
            free(buf), piso_model_free(m);
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
    struct piso_ppl_result r;
    int rc = piso_perplexity(m, buf, len, (int)a.ctx, &r);
    free(buf);
    if (rc != 0) {
        piso_accum_sim_free(&sim);
        piso_model_free(m);
        return cli_fail("perplexity", piso_last_error());
    }
    if (a.common.json) {
        struct piso_json w;
        piso_json_begin(&w, PISO_JSON_SPACED);
        piso_json_fixed(&w, "ppl", r.ppl, 6);
        piso_json_fixed(&w, "nll", r.nll, 6);
        piso_json_int(&w, "tokens", r.tokens);
        piso_json_int(&w, "chunks", r.chunks);
        piso_json_int(&w, "scored", r.scored);
        piso_json_fixed(&w, "seconds", r.seconds, 3);
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
    } else {
        printf("perplexity: %.4f  (nll %.6f over %d scored tokens; %d tokens, %d chunks; %.2f s)\n", r.ppl, r.nll,
               r.scored, r.tokens, r.chunks, r.seconds);
        if (a.sim_bits)
            printf("accumulator %lld bits (%s): %lld of %lld tile sums overflowed\n", (long long)a.sim_bits,
                   a.sim_saturate ? "saturate" : "wrap", (long long)sim.overflowed, (long long)sim.tiles);
    }
    piso_accum_sim_free(&sim);
    piso_model_free(m);
    return rc ? cli_fail("perplexity", piso_last_error()) : 0;
}
