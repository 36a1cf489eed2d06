/* piso/act_quant.h — activation quantization in the runtime (fake quantization).
 *
 * The forward pass quantizes and dequantizes in place the input of every linear layer (q/k/v share
 * one quantized input, then o, gate/up share one, then down) and, optionally, the keys and values
 * as they are stored in the KV cache. Scales are dynamic: computed from each row (token) or group
 * at run time, never calibrated. Formats (the names `--act-format` / `--kv-format` take):
 *
 *   intN       (N = 2..8) symmetric integer per token: s = max|x| / (2^(N-1) - 1),
 *              q = clamp(round(x/s), -(2^(N-1) - 1), 2^(N-1) - 1), x̂ = s·q  (int8: -127..127)
 *   intN-asym  asymmetric integer per token with a zero point: the range [min(0, min x),
 *              max(0, max x)] (zero stays exact), s = (hi - lo) / (2^N - 1), z = round(-lo/s),
 *              q = clamp(round(x/s) + z, 0, 2^N - 1), x̂ = s·(q - z)  (int8-asym: codes 0..255)
 *   e4m3, e2m1 (also e2m3, e3m2, e5m2; fp8_/fp4_ prefixes accepted) minifloat per token:
 *              s = max|x| / max finite (448 for e4m3, 6 for e2m1), x̂ = s·round_grid(x/s)
 *   mxint8, mxfp8_e4m3, mxfp8_e5m2, mxfp6_e2m3, mxfp6_e3m2, mxfp4: OCP MX blocks of 32 consecutive
 *              elements with the power-of-two scale 2^(floor(log2 max|x_block|) − emax_elem)
 *              (piso_grid_recipe_scale), elements rounded to the grid with saturation; a row whose
 *              width is not a multiple of 32 ends with a shorter block (the same as zero padding)
 *   none       no quantization
 *
 * Rounding is to nearest, ties to even, as piso_grid_round does. A row (or group) of zeros stays
 * zero. With group G > 0 (`--act-group G`) every G consecutive elements of a row get their own
 * dynamic scale instead of one per token (integer and minifloat formats; MX has its blocks of 32).
 * The keys and values use one scale per token and KV head (group = head_dim), MX its blocks. */
#ifndef PISO_ACT_QUANT_H
#define PISO_ACT_QUANT_H

#include "piso/quant.h"

enum piso_act_kind {
    PISO_ACT_NONE = 0,
    PISO_ACT_INT,      /* symmetric integer, codes -(2^(N-1)-1)..2^(N-1)-1 */
    PISO_ACT_INT_ASYM, /* asymmetric integer with a zero point, codes 0..2^N-1 */
    PISO_ACT_FLOAT,    /* minifloat with a free fp32 scale per row/group */
    PISO_ACT_MX,       /* OCP MX: blocks of 32 with a power-of-two scale */
};

struct piso_act_format {
    char name[24];         /* canonical name: "int8", "int4-asym", "e4m3", "mxfp4", "none" */
    enum piso_act_kind kind;
    int bits;              /* integer formats: N */
    int group;             /* elements per dynamic scale: 0 = the whole row (per token); MX: 32 */
    struct piso_grid grid; /* FLOAT and MX: the element grid (MX: power-of-two scale set) */
};

/* Parses a format name (see above) with a group size (0: per token; MX accepts 0 or 32). Unknown
 * names and bad groups are errors that list the accepted names. */
int piso_act_format_init(struct piso_act_format *f, const char *name, int group);
/* Checks that f can quantize rows of `width` elements: an explicit group must divide it. `what`
 * names the input in the message ("--act-group 32: the input of down_proj (172 wide)"). */
int piso_act_format_check(const struct piso_act_format *f, int64_t width, const char *what);
/* Number of scales per row of width d (1 per token; d/group; MX: ceil(d/32)). */
int64_t piso_act_groups(const struct piso_act_format *f, int64_t d);
/* x [n, d] <- dequant(quant(x)), each row independently (rows run in parallel; the result does
 * not depend on the thread count). No-op for PISO_ACT_NONE. */
void piso_act_quantize_rows(const struct piso_act_format *f, float *x, int64_t n, int64_t d);

/* ---- integer codes (for a simulated integer matmul, accumulator bounds) ------------------ */
/* The range of the integer codes [mu_min, mu_max] of an integer format: intN −(2^(N−1)−1)..
 * 2^(N−1)−1, intN-asym 0..2^N−1 (before subtracting the zero point), mxint8 −128..127. Returns
 * -1 with an error for float formats and none. */
int piso_act_code_range(const struct piso_act_format *f, int *mu_min, int *mu_max);
/* One row x[d] of an integer format: codes[d] and, per group g (piso_act_groups), scales[g] and
 * zero_points[g] (0 for symmetric formats; may be NULL for them) such that
 * x̂_i = scales[g]·(codes[i] − zero_points[g]) is exactly what piso_act_quantize_rows writes.
 * A group of zeros has scale 0 and codes = zero point. Returns -1 for non-integer formats. */
int piso_act_quantize_row_codes(const struct piso_act_format *f, const float *x, int64_t d, int32_t *codes,
                                float *scales, int32_t *zero_points);

/* ---- the runtime spec a model carries (struct piso_model.act) ---------------------------- */
struct piso_act_quant {
    struct piso_act_format act; /* the input of every linear layer */
    struct piso_act_format kv;  /* keys (after RoPE) and values as the KV cache stores them */
};

struct piso_config;
/* Sets the spec for a model of this config: act_format/kv_format may be NULL or "none"; the act
 * group must divide every linear input width (dim, n_heads·head_dim, hidden_dim) and the KV
 * formats quantize per token and KV head. Errors name the option and the dimension. */
int piso_act_quant_init(struct piso_act_quant *q, const struct piso_config *cfg, const char *act_format,
                        int act_group, const char *kv_format);
/* Whether any quantization is set. */
int piso_act_quant_active(const struct piso_act_quant *q);
/* Reads the "activations" object of an output directory's quantization.json (written by
 * piso_act_quant_json): {"format": F, "group": G, "kv_format": K}. A file without that object
 * leaves q disabled; a malformed one is an error naming the file and field. */
int piso_act_quant_load_json(const char *path, const struct piso_config *cfg, struct piso_act_quant *q);
struct piso_json;
/* Writes the "activations" object (format, group, kv_format; with explain a line saying what they
 * mean) into an open JSON object. */
void piso_act_quant_json(struct piso_json *w, const struct piso_act_quant *q, int explain);

#endif
