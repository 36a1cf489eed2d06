/* The accumulator options and the checker's report (cli/accum.h). */
#include "accum.h"
#include "cli.h"
#include "piso/act_quant.h"
#include "piso/model.h"
#include "piso/pipeline.h"
#include "piso/schema.h"

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

int cli_accum_from_act(int64_t bits, int64_t tile, int no_threshold, const struct piso_act_format *act,
                       const struct piso_config *cfg, int group, const struct piso_grid *g, struct piso_accum *a) {
    memset(a, 0, sizeof *a);
    int mn, mx;
    if (act->kind == PISO_ACT_NONE || piso_act_code_range(act, &mn, &mx))
        return piso_errorf("--accumulator-bits needs integer activations (--act-format int8, int4, int8-asym, ...; "
                           "not %s)", act->kind == PISO_ACT_NONE ? "none" : act->name);
    a->bits = (int)bits, a->tile = (int)tile, a->no_threshold = no_threshold, a->in_min = mn, a->in_max = mx;
    /* one activation scale per tile: the integer partial sums of a tile share it */
    if (act->group > 0 && (tile <= 0 || act->group % tile))
        return piso_errorf("--accumulator-tile %lld: must divide the activation group of %d (%s), so that every tile "
                           "has one activation scale", (long long)tile, act->group, act->name);
    for (int k = 0; k < PISO_LIN_COUNT; k++) {
        const struct piso_tensor_info *t = piso_schema_linear((enum piso_linear)k);
        char name[96];
        piso_linear_hf_name(0, (enum piso_linear)k, name, sizeof name);
        if (piso_accum_validate(a, piso_schema_dim(cfg, t->cols), group, g, name, NULL)) return -1;
    }
    return 0;
}

void cli_accum_check_result(const struct piso_pipeline_result *res, const struct piso_accum *a, int group,
                            const struct piso_grid *g, struct piso_accum_report *total) {
    memset(total, 0, sizeof *total);
    total->limit = piso_accum_max(a);
    for (int i = 0; i < res->n_layers; i++) {
        const struct piso_layer_report *r = &res->layers[i];
        int T = (int)r->D;
        if (piso_accum_validate(a, r->D, group, g, r->name, &T)) T = (int)r->D; /* validated before the work */
        struct piso_accum_report rep;
        piso_accum_check(r->codes, r->N, r->D, T, a, &rep);
        total->violations += rep.violations;
        if (rep.worst > total->worst) total->worst = rep.worst, total->worst_row = rep.worst_row, total->worst_tile = rep.worst_tile;
        if (rep.max_l1 > total->max_l1) total->max_l1 = rep.max_l1;
        total->n_tiles += rep.n_tiles;
    }
}
