/* cli/rounders.h — the options of the sr / beam / gpfq roundings (--alpha, --alpha-sample, --beam,
 * --candidates), declared once for `piso quantize` and `piso layer`. The command's argument struct
 * has the fields `double alpha` (< 0: not given), `int alpha_sample`, `int64_t beam, candidates`
 * (0: not given). */
#ifndef PISO_CLI_ROUNDERS_H
#define PISO_CLI_ROUNDERS_H

#include "options.h"
#include "piso/json_out.h"
#include "piso/solve.h"

#define CLI_OPTIONS_ROUNDERS(type) \
    {"--alpha", NULL, CLI_DOUBLE, offsetof(type, alpha), .arg = "A", \
     .help = "sr/beam/gpfq: target X_a = Xq + A (X - Xq); 0 symmetric, 1 fully\n" \
             "asymmetric (default 0.5)", \
     .dmin = 0, .dmax = 1}, \
    {"--alpha-sample", NULL, CLI_FLAG, offsetof(type, alpha_sample), \
     .help = "sr/beam/gpfq: draw alpha per layer from U(0, 1), seeded by --seed"}, \
    {"--beam", NULL, CLI_INT, offsetof(type, beam), .arg = "K", \
     .help = "beam: partial assignments kept per row (default 4)", .imin = 1, .imax = 1 << 16}, \
    {"--candidates", NULL, CLI_INT, offsetof(type, candidates), .arg = "B", \
     .help = "beam: nearest grid values tried per column (default 2; >= the\ngrid size: the whole grid)", \
     .imin = 2, .imax = 1 << 16}

int cli_rounding_uses_alpha(enum piso_rounding r);
/* Puts the given values into o (defaults where not given) and checks them: a usage error (exit 2,
 * returned) names an option that the rounding does not use or a value out of range; 0 when fine. */
int cli_rounders_apply(const char *cmd, enum piso_rounding r, double alpha, int alpha_sample, int64_t beam,
                       int64_t candidates, struct piso_ec_opts *o);
/* "alpha" (or "alpha_sample"), "beam", "candidates" for the roundings that use them. */
void cli_rounders_json(struct piso_json *w, enum piso_rounding r, const struct piso_ec_opts *o, int alpha_sample);

#endif
