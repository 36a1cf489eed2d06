/* cli/transform_opts.h — the options of the model transforms (--rotate, --rotate-block, --permute,
 * --no-online), declared once for `piso transform` and `piso quantize`. The command's argument
 * struct has the fields `const char *rotate, *permute; int64_t rotate_block; int no_online;`. */
#ifndef PISO_CLI_TRANSFORM_OPTS_H
#define PISO_CLI_TRANSFORM_OPTS_H

#include "options.h"
#include "piso/transform.h"

extern const char *const cli_rotate_choices[];
extern const char *const cli_permute_choices[];

#define CLI_OPTIONS_TRANSFORM(type) \
    {"--rotate", NULL, CLI_CHOICE, offsetof(type, rotate), \
     .help = "Hadamard rotation fused into the weights (norms folded): had = full\n" \
             "residual stream, block = blocks of --rotate-block; both also rotate\n" \
             "v/o per head, and the down_proj and o_proj inputs online", \
     .def = "none", .choices = cli_rotate_choices}, \
    {"--rotate-block", NULL, CLI_INT, offsetof(type, rotate_block), .arg = "B", \
     .help = "--rotate block: block size (divides the hidden size; 2^k * K)", .imin = 1, .imax = 1 << 20}, \
    {"--permute", NULL, CLI_CHOICE, offsetof(type, permute), \
     .help = "channel permutation before the block rotation, calibrated on the\n" \
             "activations (--calib): massdiff balances the blocks' l1 mass", \
     .def = "none", .choices = cli_permute_choices}, \
    {"--no-online", NULL, CLI_FLAG, offsetof(type, no_online), \
     .help = "fused rotations only: no online rotation of the down_proj and\no_proj inputs (required for GGUF output)"}

/* Checks the transform options (usage errors, exit 2, returned; 0 when fine) and fills o.
 * has_calib: calibration text was given; gguf: the output is GGUF (online rotations refused). */
int cli_transform_opts(const char *cmd, const char *rotate, int64_t block, const char *permute, int no_online,
                       int64_t seed, int has_calib, int gguf, struct piso_transform_opts *o);
/* 1 when o asks for any transform. */
int cli_transform_wanted(const struct piso_transform_opts *o);

#endif
