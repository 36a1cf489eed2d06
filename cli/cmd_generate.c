/* piso generate --model PATH --prompt STR [-n 64] [--tokenizer PATH] [--json] [--quiet]
 * Greedy decoding (argmax each step, KV cache), to see a model work. */
#include "cli.h"
#include "piso/model.h"

#include <stdlib.h>
#include <string.h>

static const char USAGE[] =
    "usage: piso generate --model PATH --prompt STR [-n 64] [--tokenizer PATH] [--json] [--quiet]\n"
    "  greedy decoding of up to -n new tokens after BOS + prompt; stops at EOS\n";

static void json_string(const char *s) {
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') printf("\\%c", *p);
        else if (*p == '\n') fputs("\\n", stdout);
        else if (*p < 0x20) printf("\\u%04x", *p);
        else putchar(*p);
    }
    putchar('"');
}

int cmd_generate(int argc, char **argv) {
    const char *model = NULL, *tok = NULL, *prompt = NULL;
    long n_new = 64;
    int json = 0;
    for (int i = 0; i < argc; i++) {
        if (cli_opt(argc, argv, &i, "--model", &model) || cli_opt(argc, argv, &i, "--tokenizer", &tok) ||
            cli_opt(argc, argv, &i, "--prompt", &prompt) || cli_opt_int(argc, argv, &i, "-n", &n_new))
            continue;
        if (cli_flag(argc, argv, &i, "--json")) { json = 1; continue; }
        if (cli_flag(argc, argv, &i, "--quiet")) { piso_set_quiet(1); continue; }
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(USAGE, stdout);
            return 0;
        }
        return cli_usage_error("generate", "unknown argument '%s'\n%s", argv[i], USAGE);
    }
    if (!model || !prompt) return cli_usage_error("generate", "--model and --prompt are required\n%s", USAGE);
    if (n_new < 0 || n_new > 1000000) return cli_usage_error("generate", "-n %ld is out of range", n_new);
    struct piso_model *m;
    if (piso_model_load(model, tok, &m) != 0) return cli_fail("generate", piso_last_error());
    if (!m->tok) {
        piso_model_free(m);
        return cli_fail("generate", "the model has no tokenizer (pass --tokenizer)");
    }
    const struct piso_tokenizer_vocab *v = piso_tokenizer_vocab(m->tok);
    int *ids, n;
    if (piso_tokenize(m->tok, prompt, strlen(prompt), v->bos_id >= 0, &ids, &n) != 0 || n == 0) {
        piso_model_free(m);
        return cli_fail("generate", n == 0 ? "the prompt gave no tokens and the tokenizer has no BOS" : piso_last_error());
    }
    int *all = realloc(ids, (size_t)(n + n_new) * sizeof *all);
    double t0 = piso_time();
    /* llama2.c stops when BOS comes back; other models at EOS */
    int stop = m->cfg.source == PISO_SRC_LLAMA2C ? v->bos_id : v->eos_id;
    int total = piso_generate_greedy(m, all, n, (int)n_new, stop);
    double dt = piso_time() - t0;
    if (total < 0) {
        free(all);
        piso_model_free(m);
        return cli_fail("generate", piso_last_error());
    }
    char *text = piso_detokenize(m->tok, all, total, 1);
    piso_log("generate: %d prompt + %d new tokens in %.2f s (%.1f tokens/s)\n", n, total - n, dt,
             dt > 0 ? (total - n) / dt : 0.0);
    if (json) {
        printf("{\"text\": ");
        json_string(text ? text : "");
        printf(", \"prompt_tokens\": %d, \"new_tokens\": %d, \"seconds\": %.3f}\n", n, total - n, dt);
    } else {
        printf("%s\n", text ? text : "");
    }
    free(text);
    free(all);
    piso_model_free(m);
    return 0;
}
