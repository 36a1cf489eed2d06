/* cli/act_quant.h — the activation quantization options (--act-format, --act-group, --kv-format),
 * declared once for `piso quantize`, `piso perplexity` and `piso generate`. The command's argument
 * struct has the fields `const char *act_format, *kv_format` (NULL: not given) and
 * `int64_t act_group`. */
#ifndef PISO_CLI_ACT_QUANT_H
#define PISO_CLI_ACT_QUANT_H

#include "options.h"

struct piso_model;

#define CLI_OPTIONS_ACT_QUANT(type) \
    {"--act-format", NULL, CLI_STRING, offsetof(type, act_format), .arg = "FMT", \
     .help = "quantize the input of every linear layer (dynamic scales): int4, int8\n" \
             "(symmetric per token), int4-asym, int8-asym (zero point), e4m3, e2m1\n" \
             "(minifloat per token), mxint8, mxfp8_e4m3, mxfp4 (blocks of 32, power-\n" \
             "of-two scale); none. Overrides what an output directory records"}, \
    {"--act-group", NULL, CLI_INT, offsetof(type, act_group), .arg = "G", \
     .help = "--act-format: one dynamic scale per G inputs of a token (G must divide\n" \
             "every linear input width); 0: one per token", .imin = 0, .imax = 1 << 20}, \
    {"--kv-format", NULL, CLI_STRING, offsetof(type, kv_format), .arg = "FMT", \
     .help = "quantize the keys and values of the KV cache (same formats; one scale\n" \
             "per token and KV head, MX: blocks of 32)"}

/* Checks the format names before any work: a usage error (returned, 2) names the option; 0 when
 * fine. */
int cli_act_quant_check(const char *cmd, const char *act_format, int64_t act_group, const char *kv_format);
/* Sets m->act when any of the options was given (replacing what the model recorded); errors
 * (a group that does not divide a width) are left in piso_last_error and return -1. */
int cli_act_quant_apply(struct piso_model *m, const char *act_format, int64_t act_group, const char *kv_format);

#endif
