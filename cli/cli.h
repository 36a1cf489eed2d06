/* cli/cli.h — the subcommands of the piso CLI and the small helpers they share. The CLI's own
 * non-static names carry the prefixes declared here: cmd_ (a subcommand) and cli_ (the rest). */
#ifndef PISO_CLI_H
#define PISO_CLI_H

#include "options.h"
#include "piso/common.h"

/* Each subcommand receives argv after the subcommand name; returns the process exit code. */
int cmd_layer(int argc, char **argv);      /* quantize one layer problem (issue: quantization core) */
int cmd_perplexity(int argc, char **argv); /* llama.cpp-protocol perplexity */
int cmd_tokenize(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_quantize(int argc, char **argv); /* whole model: HF directory or GGUF output */
int cmd_imatrix(int argc, char **argv);  /* llama.cpp-compatible importance matrix */
int cmd_transform(int argc, char **argv); /* rotations / permutations of a float model */
int cmd_eval(int argc, char **argv);     /* zero-shot benchmarks (HellaSwag) */

struct piso_model;
struct piso_tokenizer;
/* The tokenizer the loader attached to m (from --tokenizer, the model directory, the GGUF file or
 * the files beside a llama2.c checkpoint); NULL with an error message when there is none. */
const struct piso_tokenizer *cli_model_tokenizer(const struct piso_model *m);
/* Reads and tokenizes a whole text file as llama.cpp does (BOS first when the vocabulary adds one). */
int cli_tokenize_file(const struct piso_tokenizer *t, const char *path, int **ids, int *n);

/* Prints "piso <cmd>: error: <message>" to stderr and returns 1 (a failure that is not a usage error). */
int cli_fail(const char *cmd, const char *message);

#endif
