/* piso tokenize --tokenizer PATH (--text STR | --file F) [--bos] [--no-special] [--decode] [--json]
 * Prints the token ids ({"ids": [...]} with --json); --decode also decodes them back. */
#include "cli.h"
#include "piso/json_out.h"
#include "piso/tokenizer.h"

#include <stdlib.h>
#include <string.h>

struct tokenize_args {
    struct cli_common common;
    const char *tokenizer, *text, *file;
    int bos, no_special, decode;
};

static const struct cli_option tokenize_options[] = {
    {"--tokenizer", NULL, CLI_STRING, offsetof(struct tokenize_args, tokenizer), .arg = "PATH",
     .help = "a tokenizer.json, a model directory, a llama2.c tokenizer.bin or a GGUF file", .required = 1},
    {"--text", NULL, CLI_STRING, offsetof(struct tokenize_args, text), .arg = "STR", .help = "the text to tokenize"},
    {"--file", NULL, CLI_STRING, offsetof(struct tokenize_args, file), .arg = "FILE", .help = "or a file to tokenize"},
    {"--bos", NULL, CLI_FLAG, offsetof(struct tokenize_args, bos), .help = "prepend the BOS token"},
    {"--no-special", NULL, CLI_FLAG, offsetof(struct tokenize_args, no_special),
     .help = "do not turn control-token text (e.g. <|endoftext|>) into its id (llama.cpp's default)"},
    {"--decode", NULL, CLI_FLAG, offsetof(struct tokenize_args, decode),
     .help = "also print the decoded text (JSON field \"text\")"},
    {0},
};

static const struct cli_section tokenize_sections[] = {{NULL, NULL, tokenize_options}, {0}};

static const struct cli_command tokenize_command = {
    .name = "tokenize",
    .summary = "Print the token ids of a text (give exactly one of --text and --file).",
    .usage = "--tokenizer PATH (--text STR | --file FILE) [options]",
    .notes = "--json prints {\"ids\", \"n_tokens\", \"seconds\"} (and \"text\" with --decode).\n",
    .sections = tokenize_sections,
};

int cmd_tokenize(int argc, char **argv) {
    struct tokenize_args a = {0};
    int prc = cli_parse(&tokenize_command, CLI_ALL_SECTIONS, argc, argv, &a.common);
    if (prc != CLI_CONTINUE) return prc;
    if (!a.text == !a.file) return cli_usage_error("tokenize", "give exactly one of --text and --file");
    char *buf = NULL;
    size_t len = 0;
    if (a.file) {
        if (piso_read_file(a.file, &buf, &len) != 0) return cli_fail("tokenize", piso_last_error());
    } else {
        buf = strdup(a.text);
        len = strlen(a.text);
        if (!buf) return cli_fail("tokenize", "out of memory");
    }
    struct piso_tokenizer *t;
    if (piso_tokenizer_load(a.tokenizer, &t) != 0) {
        free(buf);
        return cli_fail("tokenize", piso_last_error());
    }
    if (a.no_special) piso_tokenizer_set_parse_special(t, 0);
    int *ids, n;
    double t0 = piso_time();
    if (piso_tokenize(t, buf, len, a.bos, &ids, &n) != 0) {
        free(buf);
        piso_tokenizer_free(t);
        return cli_fail("tokenize", piso_last_error());
    }
    double dt = piso_time() - t0;
    piso_log("tokenize: %zu bytes -> %d tokens in %.3f s\n", len, n, dt);
    char *dec = a.decode ? piso_detokenize(t, ids, n, 1) : NULL;
    int rc = 0;
    if (a.common.json) {
        struct piso_json w;
        piso_json_begin(&w, PISO_JSON_SPACED);
        piso_json_array_begin(&w, "ids");
        for (int i = 0; i < n; i++) piso_json_int(&w, NULL, ids[i]);
        piso_json_array_end(&w);
        piso_json_int(&w, "n_tokens", n);
        piso_json_fixed(&w, "seconds", dt, 6);
        if (dec) piso_json_string(&w, "text", dec);
        if (piso_json_print(&w, stdout)) rc = cli_fail("tokenize", piso_last_error());
    } else {
        for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
        if (dec) printf("%s\n", dec);
    }
    free(dec);
    free(ids);
    free(buf);
    piso_tokenizer_free(t);
    return rc;
}
