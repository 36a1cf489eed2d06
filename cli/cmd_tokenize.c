/* piso tokenize --tokenizer PATH (--text STR | --file F) [--bos] [--no-special] [--decode] [--json]
 * Prints the token ids ({"ids": [...]} with --json); --decode also decodes them back. */
#include "cli.h"
#include "piso/tokenizer.h"

#include <stdlib.h>
#include <string.h>

static const char USAGE[] =
    "usage: piso tokenize --tokenizer PATH (--text STR | --file F) [--bos] [--no-special] [--decode]\n"
    "                     [--json] [--quiet]\n"
    "  PATH: a tokenizer.json, a model directory, a llama2.c tokenizer.bin or a GGUF file\n"
    "  --bos         prepend the BOS token\n"
    "  --no-special  do not turn control-token text (e.g. <|endoftext|>) into its id (llama.cpp's default)\n"
    "  --decode      also print the decoded text (JSON field \"text\")\n";

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p == '\n') fputs("\\n", f);
        else if (*p == '\r') fputs("\\r", f);
        else if (*p == '\t') fputs("\\t", f);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

int cmd_tokenize(int argc, char **argv) {
    const char *tok_path = NULL, *text = NULL, *file = NULL;
    int bos = 0, json = 0, decode = 0, no_special = 0;
    for (int i = 0; i < argc; i++) {
        if (cli_opt(argc, argv, &i, "--tokenizer", &tok_path) || cli_opt(argc, argv, &i, "--text", &text) ||
            cli_opt(argc, argv, &i, "--file", &file))
            continue;
        if (cli_flag(argc, argv, &i, "--bos")) { bos = 1; continue; }
        if (cli_flag(argc, argv, &i, "--json")) { json = 1; continue; }
        if (cli_flag(argc, argv, &i, "--decode")) { decode = 1; continue; }
        if (cli_flag(argc, argv, &i, "--no-special")) { no_special = 1; continue; }
        if (cli_flag(argc, argv, &i, "--quiet")) { piso_set_quiet(1); continue; }
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(USAGE, stdout);
            return 0;
        }
        return cli_usage_error("tokenize", "unknown argument '%s'\n%s", argv[i], USAGE);
    }
    if (!tok_path) return cli_usage_error("tokenize", "--tokenizer is required\n%s", USAGE);
    if (!text == !file) return cli_usage_error("tokenize", "give exactly one of --text and --file\n%s", USAGE);
    char *buf = NULL;
    size_t len = 0;
    if (file) {
        if (piso_read_file(file, &buf, &len) != 0) return cli_fail("tokenize", piso_last_error());
    } else {
        buf = strdup(text);
        len = strlen(text);
    }
    struct piso_tokenizer *t;
    if (piso_tokenizer_load(tok_path, &t) != 0) {
        free(buf);
        return cli_fail("tokenize", piso_last_error());
    }
    if (no_special) piso_tokenizer_set_parse_special(t, 0);
    int *ids, n;
    double t0 = piso_time();
    if (piso_tokenize(t, buf, len, bos, &ids, &n) != 0) {
        free(buf);
        piso_tokenizer_free(t);
        return cli_fail("tokenize", piso_last_error());
    }
    double dt = piso_time() - t0;
    piso_log("tokenize: %zu bytes -> %d tokens in %.3f s\n", len, n, dt);
    char *dec = decode ? piso_detokenize(t, ids, n, 1) : NULL;
    if (json) {
        printf("{\"ids\": [");
        for (int i = 0; i < n; i++) printf(i ? ", %d" : "%d", ids[i]);
        printf("], \"n_tokens\": %d, \"seconds\": %.6f", n, dt);
        if (dec) {
            printf(", \"text\": ");
            json_string(stdout, dec);
        }
        printf("}\n");
    } else {
        for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
        if (dec) printf("%s\n", dec);
    }
    free(dec);
    free(ids);
    free(buf);
    piso_tokenizer_free(t);
    return 0;
}
