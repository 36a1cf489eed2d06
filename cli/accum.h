/* cli/accum.h — the accumulator options (AXE, piso/accum.h) of `piso layer` (--accumulator-bits,
 * --accumulator-tile, --input-bits, --input-signed, --no-soft-threshold) and the checker's report.
 * The command's argument struct has the fields `int64_t acc_bits, acc_tile` (0: not given) and
 * `int no_soft_threshold`; with CLI_OPTIONS_ACCUM also `int64_t input_bits`, `int input_signed`. */
#ifndef PISO_CLI_ACCUM_H
#define PISO_CLI_ACCUM_H

#include "options.h"
#include "piso/accum.h"
#include "piso/json_out.h"

/* The options of every command that quantizes with accumulator limits. */
#define CLI_OPTIONS_ACCUM_LIMITS(type) \
    {"--accumulator-bits", NULL, CLI_INT, offsetof(type, acc_bits), .arg = "P", \
     .help = "integer weights whose dot products with the integer inputs never\n" \
             "overflow a signed P-bit accumulator (AXE); ends with the checker", \
     .imin = 2, .imax = 62}, \
    {"--accumulator-tile", NULL, CLI_INT, offsetof(type, acc_tile), .arg = "T", \
     .help = "the guarantee per tile of T inputs, tiles summed wider (must divide\nthe row; = --group when grouped)", \
     .imin = 1, .imax = 1 << 30}, \
    {"--no-soft-threshold", NULL, CLI_FLAG, offsetof(type, no_soft_threshold), \
     .help = "AXE step without the l1 soft threshold (clamp only)"}
/* piso layer: the integer inputs are given as a range */
#define CLI_OPTIONS_ACCUM(type) \
    CLI_OPTIONS_ACCUM_LIMITS(type), \
    {"--input-bits", NULL, CLI_INT, offsetof(type, input_bits), .arg = "N", \
     .help = "the integer inputs: N bits, unsigned 0..2^N-1 unless --input-signed", .imin = 1, .imax = 30}, \
    {"--input-signed", NULL, CLI_FLAG, offsetof(type, input_signed), \
     .help = "signed integer inputs -2^(N-1)..2^(N-1)-1"}

/* Fills *a from the options (a->bits = 0 when --accumulator-bits is not given); a usage error (exit 2,
 * returned) when a companion option comes without it or it comes without integer inputs. */
int cli_accum_apply(const char *cmd, int64_t bits, int64_t tile, int64_t input_bits, int input_signed,
                    int no_threshold, struct piso_accum *a);
struct piso_pipeline_result;
struct piso_act_format;
struct piso_config;
/* Whole models: the input range from the activation format (integer codes, each tile inside one
 * activation scale group) and the options checked against every linear input width (errors name
 * the layer); -1 with the error in piso_last_error. group: --group. */
int cli_accum_from_act(int64_t bits, int64_t tile, int no_threshold, const struct piso_act_format *act,
                       const struct piso_config *cfg, int group, const struct piso_grid *g, struct piso_accum *a);
/* The checker over every layer of a pipeline result (each with its effective tile); the report
 * aggregates: the largest worst case, the sum of the violations. */
void cli_accum_check_result(const struct piso_pipeline_result *res, const struct piso_accum *a, int group,
                            const struct piso_grid *g, struct piso_accum_report *total);
/* The checker's report as the object "accumulator". */
void cli_accum_json(struct piso_json *w, const struct piso_accum *a, int tile, const struct piso_accum_report *rep);

#endif
