/* piso — command-line entry point: dispatches to cli/cmd_*.c. */
#include "cli.h"

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
    {"transform", cmd_transform, "rotate / permute a float model (Hadamard, MassDiff), no quantization"},
    {"eval", cmd_eval, "zero-shot benchmarks: eval hellaswag (llama-perplexity protocol)"},
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
        if (!strcmp(argv[1], commands[i].name)) {
            char prog[64];
            snprintf(prog, sizeof prog, "piso %s", commands[i].name);
            piso_interrupt_install(prog); /* SIGINT/SIGTERM remove temporary outputs */
            return commands[i].run(argc - 2, argv + 2);
        }
    fprintf(stderr, "piso: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}

int cli_fail(const char *cmd, const char *message) {
    fprintf(stderr, "piso %s: error: %s\n", cmd, message);
    return 1;
}
