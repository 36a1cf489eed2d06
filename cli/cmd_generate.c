/* piso generate --model PATH --prompt STR [-n 64] [--tokenizer PATH] [--json] [--quiet]
 * Greedy decoding (argmax each step, KV cache), to see a model work. */
#include "act_quant.h"
#include "cli.h"
#include "piso/json_out.h"
#include "piso/model.h"

#include <stdlib.h>
#include <string.h>

struct generate_args {
    struct cli_common common;
    const char *model, *tokenizer, *prompt;
    int64_t n_new;
    const char *act_format, *kv_format;
    int64_t act_group;
};

static const struct cli_option generate_options[] = {
    CLI_OPTION_MODEL(struct generate_args),
    {"--prompt", NULL, CLI_STRING, offsetof(struct generate_args, prompt), .arg = "STR", .help = "the text to continue",
     .required = 1},
    {"-n", NULL, CLI_INT, offsetof(struct generate_args, n_new), .arg = "N", .help = "new tokens at most", .def = "64",
     .imin = 0, .imax = 1000000},
    CLI_OPTION_TOKENIZER(struct generate_args),
    CLI_OPTIONS_ACT_QUANT(struct generate_args),
    {0},
};

static const struct cli_section generate_sections[] = {{NULL, NULL, generate_options}, {0}};

static const struct cli_command generate_command = {
    .name = "generate",
    .summary = "Greedy decoding of up to -n new tokens after BOS + prompt; stops at EOS.",
    .notes = "--json prints {\"text\", \"prompt_tokens\", \"new_tokens\", \"seconds\"}.\n",
    .sections = generate_sections,
};

int cmd_generate(int argc, char **argv) {
    struct generate_args a = {0};
    int prc = cli_parse(&generate_command, CLI_ALL_SECTIONS, argc, argv, &a.common);
    if (prc != CLI_CONTINUE) return prc;
    prc = cli_act_quant_check("generate", a.act_format, a.act_group, a.kv_format);
    if (prc) return prc;
    struct piso_model *m;
    if (piso_model_load(a.model, a.tokenizer, &m) != 0) return cli_fail("generate", piso_last_error());
    if (cli_act_quant_apply(m, a.act_format, a.act_group, a.kv_format) != 0) {
        piso_model_free(m);
        return cli_fail("generate", piso_last_error());
    }
    if (!m->tok) {
        piso_model_free(m);
        return cli_fail("generate", "the model has no tokenizer (pass --tokenizer)");
    }
    const struct piso_tokenizer_vocab *v = piso_tokenizer_vocab(m->tok);
    int *ids, n;
    if (piso_tokenize(m->tok, a.prompt, strlen(a.prompt), v->bos_id >= 0, &ids, &n) != 0 || n == 0) {
        piso_model_free(m);
        return cli_fail("generate",
                        n == 0 ? "the prompt gave no tokens and the tokenizer has no BOS" : piso_last_error());
    }
    int ctx = m->cfg.max_seq_len;
    if (ctx > 0 && n > ctx) {
        free(ids);
        piso_model_free(m);
        piso_errorf("the prompt is %d tokens, longer than the model's context of %d", n, ctx);
        return cli_fail("generate", piso_last_error());
    }
    if (ctx > 0 && a.n_new > ctx - n) {
        piso_log("generate: -n %lld capped at %d (the model's context is %d tokens, the prompt %d)\n",
                 (long long)a.n_new, ctx - n, ctx, n);
        a.n_new = ctx - n;
    }
    int *all = realloc(ids, (size_t)(n + a.n_new) * sizeof *all);
    if (!all) {
        free(ids);
        piso_model_free(m);
        return cli_fail("generate", "out of memory");
    }
    double t0 = piso_time();
    /* llama2.c stops when BOS comes back; other models at EOS */
    int stop = m->cfg.source == PISO_SRC_LLAMA2C ? v->bos_id : v->eos_id;
    int total = piso_generate_greedy(m, all, n, (int)a.n_new, stop);
    double dt = piso_time() - t0;
    if (total < 0) {
        free(all);
        piso_model_free(m);
        return cli_fail("generate", piso_last_error());
    }
    char *text = piso_detokenize(m->tok, all, total, 1);
    piso_log("generate: %d prompt + %d new tokens in %.2f s (%.1f tokens/s)\n", n, total - n, dt,
             dt > 0 ? (total - n) / dt : 0.0);
    int rc = 0;
    if (a.common.json) {
        struct piso_json w;
        piso_json_begin(&w, PISO_JSON_SPACED);
        piso_json_string(&w, "text", text ? text : "");
        piso_json_int(&w, "prompt_tokens", n);
        piso_json_int(&w, "new_tokens", total - n);
        piso_json_fixed(&w, "seconds", dt, 3);
        if (piso_json_print(&w, stdout)) rc = cli_fail("generate", piso_last_error());
    } else {
        printf("%s\n", text ? text : "");
    }
    free(text);
    free(all);
    piso_model_free(m);
    return rc;
}
