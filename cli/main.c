/* piso — command-line entry point: dispatches to cli/cmd_*.c. */
#include "cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    int (*run)(int, char **);
    const char *help;
} commands[] = {
    {"quantize", cmd_quantize, "quantize a whole model (HF directory or GGUF output) with calibration"},
    {"layer", cmd_layer, "solve one layer problem (weight + hessian) with a scale method"},
    {"perplexity", cmd_perplexity, "perplexity of a model on a text file (llama.cpp protocol)"},
    {"tokenize", cmd_tokenize, "tokenize text with a model's tokenizer"},
    {"generate", cmd_generate, "greedy generation from a prompt"},
    {"imatrix", cmd_imatrix, "compute a llama.cpp importance matrix"},
};

static void usage(FILE *out) {
    fprintf(out, "usage: piso <command> [options]   (piso <command> --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-11s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 2, argv + 2);
    fprintf(stderr, "piso: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}

int cli_flag(int argc, char **argv, int *i, const char *name) {
    (void)argc;
    return strcmp(argv[*i], name) == 0;
}

int cli_opt(int argc, char **argv, int *i, const char *name, const char **value) {
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0) return 0;
    if (argv[*i][n] == '=') {
        *value = argv[*i] + n + 1;
        return 1;
    }
    if (argv[*i][n] != 0) return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "piso: option %s needs a value\n", name);
        exit(2);
    }
    *value = argv[++*i];
    return 1;
}

int cli_opt_int(int argc, char **argv, int *i, const char *name, long *value) {
    const char *v;
    if (!cli_opt(argc, argv, i, name, &v)) return 0;
    char *end;
    *value = strtol(v, &end, 10);
    if (*v == 0 || *end != 0) {
        fprintf(stderr, "piso: option %s needs an integer, got '%s'\n", name, v);
        exit(2);
    }
    return 1;
}

int cli_fail(const char *cmd, const char *message) {
    fprintf(stderr, "piso %s: error: %s\n", cmd, message);
    return 1;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "piso %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return 2;
}
