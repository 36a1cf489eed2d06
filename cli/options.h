/* cli/options.h — the one option parser of the piso CLI.
 *
 * Each subcommand declares its options in static tables: name, optional alias, kind of value,
 * where the value goes in the command's argument struct, its default and help. The parser fills
 * the struct, checks every value (numbers completely, in range and finite; choices against their
 * list), and generates usage and --help from the same tables. Every command also gets --json,
 * --quiet and -h/--help; its argument struct therefore starts with `struct cli_common common;`.
 *
 * A usage error prints "piso <cmd>: error: option --X: <what is wrong>" on stderr and exits 2;
 * --help prints to stdout and exits 0. */
#ifndef PISO_CLI_OPTIONS_H
#define PISO_CLI_OPTIONS_H

#include <stddef.h>
#include <stdint.h>

enum cli_kind {
    CLI_FLAG,   /* no value; stores int 1 */
    CLI_STRING, /* stores const char * (points into argv or at the default) */
    CLI_INT,    /* stores int64_t in [imin, imax] */
    CLI_DOUBLE, /* stores a finite double in [dmin, dmax] */
    CLI_CHOICE, /* stores const char *, one of choices[] */
    CLI_HELP,   /* -h/--help (the parser's own) */
};

struct cli_option {
    const char *name;  /* "--ctx" (or a short-only name such as "-n") */
    const char *alias; /* "-o", or NULL */
    enum cli_kind kind;
    size_t offset;    /* of the value in the command's argument struct */
    const char *arg;  /* what the value is, for help: "PATH", "N" (choices show their list) */
    const char *help; /* may hold '\n' for more lines */
    const char *def;  /* default, parsed like a given value (help shows it); NULL: none */
    int required;
    int64_t imin, imax;
    double dmin, dmax;
    const char *const *choices; /* NULL-terminated */
};

/* A group of options under a title in --help. A command parses with a set of active sections;
 * an option of an inactive one is refused as "only for <title> (<when>)". */
struct cli_section {
    const char *title;                /* NULL: the command's main options */
    const char *when;                 /* when the section applies, e.g. "with --type T or --out FILE.gguf" */
    const struct cli_option *options; /* ends with an entry whose name is NULL */
};

struct cli_command {
    const char *name;    /* "perplexity" */
    const char *summary; /* one line: what the command does */
    const char *usage;   /* the synopsis after "piso <name> "; NULL: generated from the required options */
    const char *notes;   /* printed after the options; may be NULL */
    const struct cli_section *sections; /* ends with an entry whose options are NULL */
};

/* The model and tokenizer options of the commands that load a model (same words everywhere). */
#define CLI_OPTION_MODEL(type) \
    {"--model", NULL, CLI_STRING, offsetof(type, model), .arg = "PATH", \
     .help = "an HF model directory, a llama2.c .bin or a GGUF file", .required = 1}
/* GGUF models: llama.cpp's activation rounding in the forward pass (piso/llamacpp_act.h); the
 * struct needs an int llamacpp_activations. */
#define CLI_OPTION_LLAMACPP_ACTIVATIONS(type) \
    {"--llamacpp-activations", NULL, CLI_FLAG, offsetof(type, llamacpp_activations), \
     .help = "GGUF models: round each linear layer's input as llama.cpp's CPU matmul does for\n" \
             "that weight's type (Q8_0 blocks for Q4_0/Q8_0/..., Q8_K for K-quants, f16 for F16),\n" \
             "so that the numbers match llama.cpp's on quantized GGUF files"}
#define CLI_OPTION_TOKENIZER(type) \
    {"--tokenizer", NULL, CLI_STRING, offsetof(type, tokenizer), .arg = "PATH", \
     .help = "the tokenizer, when it is not in or beside the model"}

/* The options every command has. */
struct cli_common {
    int json, quiet;
};

#define CLI_ALL_SECTIONS (~0u)
#define CLI_CONTINUE (-1)

/* Parses argv (after the command name) into args, the first member of the command's argument
 * struct; only sections whose bit is set in active are accepted. Defaults are applied first.
 * Applies --quiet. Returns CLI_CONTINUE, or the exit code to return now (0 after --help, 2 after
 * a usage error, which it has printed). */
int cli_parse(const struct cli_command *cmd, unsigned active, int argc, char **argv, struct cli_common *args);

/* Prints --help for every section to stdout. */
void cli_print_help(const struct cli_command *cmd);

/* The value given to option name ("--out VALUE" or "--out=VALUE"; the last one wins), or NULL;
 * for a command that must look at one option to decide which sections apply. */
const char *cli_peek(int argc, char **argv, const char *name);

/* Prints "piso <cmd>: error: <message>" and a pointer to --help on stderr; returns 2. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
