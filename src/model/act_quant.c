/* Activation quantization in the runtime (see piso/act_quant.h): dynamic per-token / per-group
 * integer and minifloat quantizers and OCP MX blocks, the spec a model carries, and its record in
 * quantization.json. */
#include "piso/act_quant.h"
#include "piso/json_out.h"
#include "piso/model.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MX_BLOCK 32

static const char *const accepted_names =
    "none, int2..int8, int2-asym..int8-asym, e4m3, e2m1, e2m3, e3m2, e5m2, mxint8, mxfp8_e4m3, mxfp8_e5m2, "
    "mxfp6_e2m3, mxfp6_e3m2, mxfp4";

int piso_act_format_init(struct piso_act_format *f, const char *name, int group) {
    memset(f, 0, sizeof *f);
    if (!name || !*name || !strcmp(name, "none")) {
        snprintf(f->name, sizeof f->name, "none");
        return 0;
    }
    if (group < 0) return piso_errorf("activation format %s: group %d must be >= 0", name, group);
    if (!strncmp(name, "int", 3)) {
        char *end;
        long b = strtol(name + 3, &end, 10);
        int asym = !strcmp(end, "-asym");
        if (end == name + 3 || (*end && !asym) || b < 2 || b > 8)
            return piso_errorf("unknown activation format '%s' (one of: %s)", name, accepted_names);
        f->kind = asym ? PISO_ACT_INT_ASYM : PISO_ACT_INT;
        f->bits = (int)b;
        f->group = group;
        snprintf(f->name, sizeof f->name, "int%ld%s", b, asym ? "-asym" : "");
        return 0;
    }
    if (!strcmp(name, "nvfp4"))
        return piso_errorf("activation format 'nvfp4' is not supported (its per-tensor scale is not dynamic); "
                           "one of: %s", accepted_names);
    if (piso_grid_init(&f->grid, name, 0))
        return piso_errorf("unknown activation format '%s' (one of: %s)", name, accepted_names);
    if (f->grid.scale_set == PISO_SSET_POW2) {
        if (group != 0 && group != MX_BLOCK)
            return piso_errorf("activation format %s has blocks of %d: group %d is not possible (leave it at 0)",
                               name, MX_BLOCK, group);
        f->kind = PISO_ACT_MX;
        f->group = MX_BLOCK;
    } else {
        f->kind = PISO_ACT_FLOAT;
        f->group = group;
    }
    snprintf(f->name, sizeof f->name, "%s", f->grid.name);
    return 0;
}

int piso_act_format_check(const struct piso_act_format *f, int64_t width, const char *what) {
    if (f->kind == PISO_ACT_NONE || f->kind == PISO_ACT_MX || f->group == 0) return 0;
    if (width % f->group)
        return piso_errorf("%s: activation group %d does not divide the width %lld (%s)", what, f->group,
                           (long long)width, f->name);
    return 0;
}

int64_t piso_act_groups(const struct piso_act_format *f, int64_t d) {
    if (f->group <= 0 || f->group >= d) return 1;
    return (d + f->group - 1) / f->group;
}

/* The largest code magnitude of a symmetric integer format, 2^(N-1) - 1. */
static int int_qmax(int bits) { return (1 << (bits - 1)) - 1; }

/* Scale and zero point of one group x[n] of an integer format (x̂ = s·(q − z)); s = 0 for a group
 * of zeros. */
static void int_group_params(const struct piso_act_format *f, const float *x, int64_t n, float *scale,
                             int32_t *zero) {
    if (f->kind == PISO_ACT_INT) {
        float amax = 0;
        for (int64_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
        *scale = amax / (float)int_qmax(f->bits), *zero = 0;
        return;
    }
    /* asymmetric: the range always contains 0, so a zero input stays exactly zero */
    float lo = 0, hi = 0;
    for (int64_t i = 0; i < n; i++) lo = fminf(lo, x[i]), hi = fmaxf(hi, x[i]);
    const int qmax = (1 << f->bits) - 1;
    float s = (hi - lo) / (float)qmax;
    *scale = s;
    *zero = s > 0 ? (int32_t)fminf(fmaxf(nearbyintf(-lo / s), 0.0f), (float)qmax) : 0;
}

/* The code of one element: round(x/s) (+ z), clamped to the format's range. */
static int32_t int_code(const struct piso_act_format *f, float x, float s, int32_t z) {
    float lo = f->kind == PISO_ACT_INT ? (float)-int_qmax(f->bits) : 0.0f;
    float hi = f->kind == PISO_ACT_INT ? (float)int_qmax(f->bits) : (float)((1 << f->bits) - 1);
    float r = (s > 0 ? nearbyintf(x / s) : 0.0f) + (float)z;
    return (int32_t)fminf(fmaxf(r, lo), hi);
}

/* The scale of one group of a minifloat (free scale: max|x| / max finite) or MX format (power of
 * two); 0 for a group of zeros. */
static float grid_group_scale(const struct piso_act_format *f, const float *x, int64_t n) {
    float amax = 0;
    for (int64_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
    if (!(amax > 0)) return 0.0f;
    return f->kind == PISO_ACT_MX ? piso_grid_recipe_scale(&f->grid, amax) : amax / piso_grid_maxabs(&f->grid);
}

/* The group size a row of width d is cut into (the whole row when group is 0 or wider). */
static int64_t group_width(const struct piso_act_format *f, int64_t d) {
    return f->group > 0 && f->group < d ? f->group : d;
}

/* One row x[d] in place, group by group. */
static void quantize_row(const struct piso_act_format *f, float *x, int64_t d) {
    const int64_t G = group_width(f, d);
    for (int64_t j0 = 0; j0 < d; j0 += G) {
        const int64_t n = d - j0 < G ? d - j0 : G;
        float *xg = x + j0;
        if (f->kind == PISO_ACT_INT || f->kind == PISO_ACT_INT_ASYM) {
            float s;
            int32_t z;
            int_group_params(f, xg, n, &s, &z);
            for (int64_t i = 0; i < n; i++) xg[i] = s * (float)(int_code(f, xg[i], s, z) - z);
        } else {
            float s = grid_group_scale(f, xg, n);
            for (int64_t i = 0; i < n; i++) xg[i] = s > 0 ? s * piso_grid_round(&f->grid, xg[i] / s, NULL) : 0.0f;
        }
    }
}

void piso_act_quantize_rows(const struct piso_act_format *f, float *x, int64_t n, int64_t d) {
    if (f->kind == PISO_ACT_NONE || n <= 0 || d <= 0) return;
#pragma omp parallel for schedule(static) if (n * d > (1 << 16))
    for (int64_t i = 0; i < n; i++) quantize_row(f, x + i * d, d);
}

int piso_act_code_range(const struct piso_act_format *f, int *mu_min, int *mu_max) {
    switch (f->kind) {
    case PISO_ACT_INT: *mu_min = -int_qmax(f->bits), *mu_max = int_qmax(f->bits); return 0;
    case PISO_ACT_INT_ASYM: *mu_min = 0, *mu_max = (1 << f->bits) - 1; return 0;
    case PISO_ACT_MX:
        if (f->grid.is_int) {
            *mu_min = (int)f->grid.v[0], *mu_max = (int)f->grid.v[f->grid.n - 1];
            return 0;
        }
        break;
    default: break;
    }
    return piso_errorf("activation format %s has no integer codes", f->name);
}

int piso_act_quantize_row_codes(const struct piso_act_format *f, const float *x, int64_t d, int32_t *codes,
                                float *scales, int32_t *zero_points) {
    int mu_min, mu_max;
    if (piso_act_code_range(f, &mu_min, &mu_max)) return -1;
    const int64_t G = group_width(f, d);
    for (int64_t j0 = 0, g = 0; j0 < d; j0 += G, g++) {
        const int64_t n = d - j0 < G ? d - j0 : G;
        const float *xg = x + j0;
        float s;
        int32_t z = 0;
        if (f->kind == PISO_ACT_MX) { /* mxint8: power-of-two scale, the grid's integer value */
            s = grid_group_scale(f, xg, n);
            for (int64_t i = 0; i < n; i++) codes[j0 + i] = s > 0 ? (int32_t)piso_grid_round(&f->grid, xg[i] / s, NULL) : 0;
        } else {
            int_group_params(f, xg, n, &s, &z);
            for (int64_t i = 0; i < n; i++) codes[j0 + i] = int_code(f, xg[i], s, z);
        }
        scales[g] = s;
        if (zero_points) zero_points[g] = z;
        else if (z != 0) return piso_errorf("activation format %s needs zero points", f->name);
    }
    return 0;
}

/* ---- the spec a model carries ------------------------------------------------------------- */

int piso_act_quant_active(const struct piso_act_quant *q) {
    return q->act.kind != PISO_ACT_NONE || q->kv.kind != PISO_ACT_NONE;
}

int piso_act_quant_init(struct piso_act_quant *q, const struct piso_config *cfg, const char *act_format,
                        int act_group, const char *kv_format) {
    memset(q, 0, sizeof *q);
    if (piso_act_format_init(&q->act, act_format, act_group))
        return piso_error_context("--act-format %s", act_format ? act_format : "none");
    if (act_group > 0 && q->act.kind == PISO_ACT_NONE)
        return piso_errorf("--act-group %d: needs an --act-format", act_group);
    const struct {
        const char *label;
        int64_t width;
    } inputs[] = {{"the input of q/k/v_proj and gate/up_proj (hidden size)", cfg->dim},
                  {"the input of o_proj (n_heads x head_dim)", (int64_t)cfg->n_heads * cfg->head_dim},
                  {"the input of down_proj (intermediate size)", cfg->hidden_dim}};
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++)
        if (piso_act_format_check(&q->act, inputs[i].width, "--act-group")) {
            piso_error_context("%s", inputs[i].label);
            memset(q, 0, sizeof *q);
            return -1;
        }
    /* keys and values: one scale per token and KV head (MX: its blocks of 32 along the row) */
    if (piso_act_format_init(&q->kv, kv_format, 0)) {
        piso_error_context("--kv-format %s", kv_format);
        memset(q, 0, sizeof *q);
        return -1;
    }
    if (q->kv.kind != PISO_ACT_NONE && q->kv.kind != PISO_ACT_MX) q->kv.group = cfg->head_dim;
    return 0;
}

void piso_act_quant_json(struct piso_json *w, const struct piso_act_quant *q, int explain) {
    piso_json_object_begin(w, "activations");
    piso_json_string(w, "format", q->act.name[0] ? q->act.name : "none");
    piso_json_int(w, "group", q->act.kind == PISO_ACT_MX ? 0 : q->act.group);
    piso_json_string(w, "kv_format", q->kv.name[0] ? q->kv.name : "none");
    if (explain)
        piso_json_string(w, "meaning",
                     "dynamic fake quantization applied by the runtime at the input of every linear layer "
                     "(group 0: one scale per token) and to the keys/values of the KV cache (one scale per "
                     "token and KV head; MX: blocks of 32)");
    piso_json_object_end(w);
}

int piso_act_quant_load_json(const char *path, const struct piso_config *cfg, struct piso_act_quant *q) {
    memset(q, 0, sizeof *q);
    char *text;
    size_t len;
    if (piso_read_file_max(path, &text, &len, 64u << 20)) return -1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return piso_errorf("%s: not valid JSON", path);
    int rc = 0;
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, "activations");
    if (a) {
        const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(a, "format");
        const cJSON *grp = cJSON_GetObjectItemCaseSensitive(a, "group");
        const cJSON *kv = cJSON_GetObjectItemCaseSensitive(a, "kv_format");
        if (!cJSON_IsObject(a))
            rc = piso_errorf("%s: field \"activations\" must be an object", path);
        else if (!cJSON_IsString(fmt))
            rc = piso_errorf("%s: field \"activations.format\" must be a string", path);
        else if (grp && !(cJSON_IsNumber(grp) && grp->valuedouble >= 0 && grp->valuedouble <= (1 << 20) &&
                          grp->valuedouble == (double)(int)grp->valuedouble))
            rc = piso_errorf("%s: field \"activations.group\" must be an integer in 0..%d", path, 1 << 20);
        else if (kv && !cJSON_IsString(kv))
            rc = piso_errorf("%s: field \"activations.kv_format\" must be a string", path);
        else if (piso_act_quant_init(q, cfg, fmt->valuestring, grp ? (int)grp->valuedouble : 0,
                                     kv ? kv->valuestring : NULL))
            rc = piso_error_context("%s: field \"activations\"", path);
    }
    cJSON_Delete(root);
    return rc;
}
