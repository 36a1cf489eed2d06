/* The accumulator options and the checker's report (cli/accum.h). */
#include "accum.h"
#include "cli.h"

#include <string.h>

int cli_accum_apply(const char *cmd, int64_t bits, int64_t tile, int64_t input_bits, int input_signed,
                    int no_threshold, struct piso_accum *a) {
    memset(a, 0, sizeof *a);
    if (!bits) {
        if (tile || input_bits || input_signed || no_threshold)
            return cli_usage_error(cmd, "option %s: only with --accumulator-bits",
                                   tile ? "--accumulator-tile" : input_bits ? "--input-bits"
                                                               : input_signed ? "--input-signed"
                                                                              : "--no-soft-threshold");
        return 0;
    }
    if (!input_bits)
        return cli_usage_error(cmd, "option --accumulator-bits: needs integer inputs (--input-bits N "
                                    "[--input-signed])");
    a->bits = (int)bits, a->tile = (int)tile, a->no_threshold = no_threshold;
    if (piso_accum_input_range((int)input_bits, input_signed, &a->in_min, &a->in_max))
        return cli_usage_error(cmd, "%s", piso_last_error());
    return 0;
}

void cli_accum_json(struct piso_json *w, const struct piso_accum *a, int tile, const struct piso_accum_report *rep) {
    piso_json_object_begin(w, "accumulator");
    piso_json_int(w, "bits", a->bits);
    piso_json_int(w, "tile", tile);
    piso_json_int(w, "input_min", a->in_min);
    piso_json_int(w, "input_max", a->in_max);
    piso_json_bool(w, "soft_threshold", !a->no_threshold);
    piso_json_int(w, "limit", rep->limit);
    piso_json_int(w, "worst", rep->worst);
    piso_json_int(w, "worst_row", rep->worst_row);
    piso_json_int(w, "worst_tile", rep->worst_tile);
    piso_json_int(w, "tiles_per_row", rep->n_tiles);
    piso_json_int(w, "max_l1", rep->max_l1);
    piso_json_int(w, "violations", rep->violations);
    piso_json_bool(w, "ok", rep->violations == 0);
    piso_json_object_end(w);
}
