/* cli/smooth_opts.h — the smoothing options (--smooth, --smooth-quantile, --smooth-stats,
 * --smooth-sketch-error), declared once for `piso quantize` and `piso transform`. The command's
 * argument struct has the fields `double smooth, smooth_quantile, smooth_sketch_error;
 * const char *smooth_stats;`, with smooth = -1 and smooth_quantile = NAN before parsing (not given). */
#ifndef PISO_CLI_SMOOTH_OPTS_H
#define PISO_CLI_SMOOTH_OPTS_H

#include "options.h"
#include "piso/pipeline.h"

extern const char *const cli_smooth_stats_choices[];

#define CLI_OPTIONS_SMOOTH(type) \
    {"--smooth", NULL, CLI_DOUBLE, offsetof(type, smooth), .arg = "ALPHA", \
     .help = "SmoothQuant: s_j = a_j^ALPHA / w_j^(1-ALPHA) per input channel of q/k/v,\n" \
             "gate/up and down (a_j = max|x_j| over --calib), fused into the norms and\n" \
             "up_proj; before any rotation", \
     .dmin = 0, .dmax = 1}, \
    {"--smooth-quantile", NULL, CLI_DOUBLE, offsetof(type, smooth_quantile), .arg = "P", \
     .help = "--smooth: a_j = the P-quantile of |x_j| over the calibration tokens\n" \
             "(P in (0, 1]; default: the max)", .dmin = -1e300, .dmax = 1e300}, \
    {"--smooth-stats", NULL, CLI_CHOICE, offsetof(type, smooth_stats), \
     .help = "--smooth-quantile: exact (keeps one block's inputs) or sketch\n" \
             "(log histogram, relative error <= --smooth-sketch-error)", \
     .def = "exact", .choices = cli_smooth_stats_choices}, \
    {"--smooth-sketch-error", NULL, CLI_DOUBLE, offsetof(type, smooth_sketch_error), .arg = "A", \
     .help = "--smooth-stats sketch: relative error bound of the quantiles", .def = "0.01", .dmin = 1e-6, \
     .dmax = 0.49}

struct cli_smooth {
    double alpha, quantile, sketch_error; /* alpha < 0: no smoothing; quantile 0: the max */
    const char *stats;
};

/* Checks the values (usage errors, exit 2, returned; 0 when fine): a quantile outside (0, 1], a
 * quantile without --smooth, smoothing without calibration text. Turns a quantile not given into 0. */
int cli_smooth_check(const char *cmd, struct cli_smooth *s, int has_calib);
/* Smooths each model of ms[n] (writable) with statistics of the float model mf over the windows c;
 * mf may be one of ms. */
int cli_smooth_models(const struct cli_smooth *s, const struct piso_calib *c, const struct piso_model *mf,
                      struct piso_model **ms, int n);
/* Records the smoothing as the object "smooth" in an open JSON object. */
struct piso_json;
void cli_smooth_json(struct piso_json *w, const struct cli_smooth *s);

#endif
