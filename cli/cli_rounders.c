/* The options of the sr / beam / gpfq roundings (cli/rounders.h). */
#include "rounders.h"
#include "cli.h"

#include <stdio.h>

int cli_rounding_uses_alpha(enum piso_rounding r) {
    return r == PISO_ROUND_SR || r == PISO_ROUND_BEAM || r == PISO_ROUND_GPFQ;
}

int cli_rounders_apply(const char *cmd, enum piso_rounding r, double alpha, int alpha_sample, int64_t beam,
                       int64_t candidates, struct piso_ec_opts *o) {
    const char *name = piso_rounding_name(r);
    if (!cli_rounding_uses_alpha(r) && (alpha >= 0 || alpha_sample))
        return cli_usage_error(cmd, "option %s: only for --rounding sr, beam or gpfq (not %s)",
                               alpha >= 0 ? "--alpha" : "--alpha-sample", name);
    if (alpha >= 0 && alpha_sample)
        return cli_usage_error(cmd, "option --alpha-sample: draws alpha per layer; do not give --alpha too");
    if (r != PISO_ROUND_BEAM && (beam || candidates))
        return cli_usage_error(cmd, "option %s: only for --rounding beam (not %s)", beam ? "--beam" : "--candidates",
                               name);
    if (alpha >= 0) o->alpha = alpha;
    if (beam) o->beam_k = (int)beam;
    if (candidates) o->beam_b = (int)candidates;
    if (piso_ec_opts_check(o, r)) return cli_usage_error(cmd, "%s", piso_last_error());
    return 0;
}

void cli_rounders_json(struct piso_json *w, enum piso_rounding r, const struct piso_ec_opts *o, int alpha_sample) {
    if (!cli_rounding_uses_alpha(r)) return;
    if (alpha_sample) piso_json_string(w, "alpha_sample", "uniform(0, 1) per layer, seeded by --seed");
    else piso_json_number(w, "alpha", o->alpha);
    if (r == PISO_ROUND_BEAM) {
        piso_json_number(w, "beam", o->beam_k);
        piso_json_number(w, "candidates", o->beam_b);
    }
}
