/* piso perplexity --model PATH [--tokenizer PATH] --text FILE [--ctx N] [--json] [--quiet]
 * llama.cpp's perplexity protocol (see piso/eval.h). */
#include "act_quant.h"
#include "cli.h"
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
};

static const struct cli_option ppl_options[] = {
    CLI_OPTION_MODEL(struct ppl_args),
    CLI_OPTION_TOKENIZER(struct ppl_args),
    {"--text", NULL, CLI_STRING, offsetof(struct ppl_args, text), .arg = "FILE", .help = "the text to score",
     .required = 1},
    {"--ctx", NULL, CLI_INT, offsetof(struct ppl_args, ctx), .arg = "N",
     .help = "chunk length; 0: min(512, the model's context)", .imin = 0, .imax = 1 << 20},
    CLI_OPTIONS_ACT_QUANT(struct ppl_args),
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
    if (piso_act_quant_active(&m->act))
        piso_log("perplexity: activations %s (group %d), KV cache %s\n", m->act.act.name[0] ? m->act.act.name : "none",
                 m->act.act.group, m->act.kv.name[0] ? m->act.kv.name : "none");
    struct piso_ppl_result r;
    int rc = piso_perplexity(m, buf, len, (int)a.ctx, &r);
    free(buf);
    if (rc != 0) {
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
        rc = piso_json_print(&w, stdout);
    } else {
        printf("perplexity: %.4f  (nll %.6f over %d scored tokens; %d tokens, %d chunks; %.2f s)\n", r.ppl, r.nll,
               r.scored, r.tokens, r.chunks, r.seconds);
    }
    piso_model_free(m);
    return rc ? cli_fail("perplexity", piso_last_error()) : 0;
}
