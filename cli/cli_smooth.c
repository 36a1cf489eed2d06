/* The smoothing options shared by `piso quantize` and `piso transform` (cli/smooth_opts.h). */
#include "cli.h"
#include "piso/json_out.h"
#include "piso/smooth.h"
#include "smooth_opts.h"

#include <math.h>
#include <string.h>

const char *const cli_smooth_stats_choices[] = {"exact", "sketch", NULL};

int cli_smooth_check(const char *cmd, struct cli_smooth *s, int has_calib) {
    int given = !isnan(s->quantile);
    if (given && s->alpha < 0) return cli_usage_error(cmd, "option --smooth-quantile: needs --smooth ALPHA");
    if (given && piso_quantile_check(s->quantile, "option --smooth-quantile"))
        return cli_usage_error(cmd, "%s", piso_last_error());
    if (s->alpha >= 0 && !has_calib) return cli_usage_error(cmd, "option --smooth: needs --calib");
    if (!given) s->quantile = 0;
    return 0;
}

int cli_smooth_models(const struct cli_smooth *s, const struct piso_calib *c, const struct piso_model *mf,
                      struct piso_model **ms, int n) {
    struct piso_act_stats_opts so = {.quantile = s->quantile,
                                     .method = strcmp(s->stats, "sketch") ? PISO_QUANTILE_EXACT : PISO_QUANTILE_SKETCH,
                                     .sketch_alpha = s->sketch_error};
    struct piso_smooth_opts sm = {.alpha = s->alpha, .use_quantile = s->quantile > 0};
    struct piso_act_stats st;
    if (piso_act_stats_collect(mf, c, &so, &st)) return -1;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) rc = piso_model_make_writable(ms[i]) || piso_transform_smooth(ms[i], &st, &sm);
    if (rc == 0)
        piso_log("smoothing: alpha %g, a_j = %s of |x_j| over %lld calibration tokens\n", s->alpha,
                 s->quantile > 0 ? "a quantile" : "the max", (long long)st.ntok);
    piso_act_stats_free(&st);
    return rc ? -1 : 0;
}

void cli_smooth_json(struct piso_json *w, const struct cli_smooth *s) {
    piso_json_object_begin(w, "smooth");
    piso_json_number(w, "alpha", s->alpha);
    piso_json_string(w, "statistic", s->quantile > 0 ? "quantile" : "max");
    if (s->quantile > 0) {
        piso_json_number(w, "quantile", s->quantile);
        piso_json_string(w, "quantile_method", s->stats);
        if (!strcmp(s->stats, "sketch")) piso_json_number(w, "sketch_error", s->sketch_error);
    }
    piso_json_string(w, "fused", "input_layernorm, post_attention_layernorm and up_proj rows divided by s; "
                                 "q/k/v, gate/up and down_proj columns multiplied by s");
    piso_json_object_end(w);
}
