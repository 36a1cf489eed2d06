/* piso perplexity --model PATH [--tokenizer PATH] --text FILE [--ctx N] [--json] [--quiet]
 * llama.cpp's perplexity protocol (see piso/eval.h). */
#include "cli.h"
#include "piso/eval.h"

#include <stdlib.h>
#include <string.h>

static const char USAGE[] =
    "usage: piso perplexity --model PATH [--tokenizer PATH] --text FILE [--ctx N] [--json] [--quiet]\n"
    "  PATH: an HF model directory, a llama2.c .bin or a GGUF file\n"
    "  --ctx N   chunk length (default min(512, the model's context))\n"
    "  --json    print {\"ppl\", \"nll\", \"tokens\", \"chunks\", \"scored\", \"seconds\"} on stdout\n";

int cmd_perplexity(int argc, char **argv) {
    const char *model = NULL, *tok = NULL, *text = NULL;
    long ctx = 0;
    int json = 0;
    for (int i = 0; i < argc; i++) {
        if (cli_opt(argc, argv, &i, "--model", &model) || cli_opt(argc, argv, &i, "--tokenizer", &tok) ||
            cli_opt(argc, argv, &i, "--text", &text) || cli_opt_int(argc, argv, &i, "--ctx", &ctx))
            continue;
        if (cli_flag(argc, argv, &i, "--json")) { json = 1; continue; }
        if (cli_flag(argc, argv, &i, "--quiet")) { piso_set_quiet(1); continue; }
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(USAGE, stdout);
            return 0;
        }
        return cli_usage_error("perplexity", "unknown argument '%s'\n%s", argv[i], USAGE);
    }
    if (!model || !text) return cli_usage_error("perplexity", "--model and --text are required\n%s", USAGE);
    if (ctx < 0 || ctx > (1 << 20)) return cli_usage_error("perplexity", "--ctx %ld is out of range", ctx);
    char *buf;
    size_t len;
    if (piso_read_file(text, &buf, &len) != 0) return cli_fail("perplexity", piso_last_error());
    struct piso_model *m;
    if (piso_model_load(model, tok, &m) != 0) {
        free(buf);
        return cli_fail("perplexity", piso_last_error());
    }
    struct piso_ppl_result r;
    int rc = piso_perplexity(m, buf, len, (int)ctx, &r);
    free(buf);
    piso_model_free(m);
    if (rc != 0) return cli_fail("perplexity", piso_last_error());
    if (json)
        printf("{\"ppl\": %.6f, \"nll\": %.6f, \"tokens\": %d, \"chunks\": %d, \"scored\": %d, \"seconds\": %.3f}\n", r.ppl,
               r.nll, r.tokens, r.chunks, r.scored, r.seconds);
    else
        printf("perplexity: %.4f  (nll %.6f over %d scored tokens; %d tokens, %d chunks; %.2f s)\n", r.ppl, r.nll,
               r.scored, r.tokens, r.chunks, r.seconds);
    return 0;
}
