/* GPTQ and compressed-tensors checkpoints (piso/checkpoint.h): option checks, the packed tensors of
 * one linear layer, and the quantization_config of config.json. */
#include "export/export_internal.h"
#include "piso/checkpoint.h"

#include <stdlib.h>
#include <string.h>

static const char *const format_names[] = {"hf", "gptq", "compressed-tensors"};

int piso_ckpt_format_from_name(const char *name, enum piso_ckpt_format *out) {
    for (int i = 0; i < 3; i++)
        if (name && !strcmp(name, format_names[i])) {
            *out = (enum piso_ckpt_format)i;
            return 0;
        }
    return piso_errorf("unknown checkpoint format '%s' (hf, gptq, compressed-tensors)", name ? name : "(null)");
}

const char *piso_ckpt_format_name(enum piso_ckpt_format f) {
    return f >= 0 && f <= PISO_CKPT_COMPRESSED ? format_names[f] : "?";
}

int piso_ckpt_check(enum piso_ckpt_format f, const struct piso_grid *g, int group, int asym) {
    if (f == PISO_CKPT_DENSE) return 0;
    const char *fn = piso_ckpt_format_name(f);
    if (!g->is_int || g->block)
        return piso_errorf("option --out-format %s: stores integer codes with one scale per group; --format %s "
                           "(a minifloat or hardware block grid) cannot be written in it (use int2, int3, int4 or int8)",
                           fn, g->name);
    if (g->bits != 2 && g->bits != 3 && g->bits != 4 && g->bits != 8)
        return piso_errorf("option --out-format %s: %d-bit codes are not supported (bits 2, 3, 4, 8)", fn, g->bits);
    if (asym && g->narrow)
        return piso_errorf("option --narrow: not with --asym (the zero point already chooses the range)");
    if (group != 0 && group % 32 != 0)
        return piso_errorf("option --group %d: --out-format %s needs 0 (one scale per output channel) or a multiple "
                           "of 32 (the group sizes the GPTQ/compressed-tensors kernels accept)", group, fn);
    return 0;
}

int piso_ckpt_layer_packs(enum piso_ckpt_format f, int bits, int group, int64_t N, int64_t D) {
    if (f == PISO_CKPT_DENSE) return 0;
    if (group > 0 && group < D && D % group) return 0;
    if (f == PISO_CKPT_GPTQ) return (D * bits) % 32 == 0 && (N * bits) % 32 == 0;
    return 1;
}

static int add_i32(struct piso_st_writer *w, const char *prefix, const char *suffix, int ndim, const int64_t *shape,
                   const uint32_t *data) {
    char name[192];
    snprintf(name, sizeof name, "%s.%s", prefix, suffix);
    piso_st_writer_add_copy(w, name, PISO_DTYPE_I32, ndim, shape, data);
    return 0;
}

int piso_ckpt_add_layer(struct piso_st_writer *w, enum piso_ckpt_format f, const char *prefix, int bits, int group,
                        int64_t N, int64_t D, int64_t ng, const float *scales, const int16_t *codes,
                        const int16_t *zeros, const int32_t *g_idx) {
    if (N <= 0 || D <= 0 || ng <= 0 || bits < 2 || bits > 8)
        return piso_errorf("%s: empty layer or bits %d out of range", prefix, bits);
    const int half = 1 << (bits - 1), per = 32 / bits;
    const int64_t gs = group > 0 && group < D ? group : D;
    if ((D + gs - 1) / gs != ng) return piso_errorf("%s: %lld groups for D = %lld and group %lld", prefix, (long long)ng, (long long)D, (long long)gs);
    /* unsigned codes c = q + z, i.e. [D, N] column streams for GPTQ, [N, D] rows for compressed-tensors */
    uint8_t *c = malloc((size_t)(N * D)), *zc = malloc((size_t)(N * ng));
    uint16_t *s16 = malloc(sizeof(uint16_t) * (size_t)(N * ng));
    const int64_t wrows = f == PISO_CKPT_GPTQ ? D * bits / 32 : N, wcols = f == PISO_CKPT_GPTQ ? N : (D + per - 1) / per;
    const int64_t zrows = f == PISO_CKPT_GPTQ ? ng : (N + per - 1) / per, zcols = f == PISO_CKPT_GPTQ ? N * bits / 32 : ng;
    uint32_t *qw = calloc((size_t)(wrows * wcols), sizeof(uint32_t)), *qz = calloc((size_t)(zrows * zcols), sizeof(uint32_t));
    int32_t *gidx = malloc(sizeof(int32_t) * (size_t)D);
    int rc = 0;
    if (!c || !zc || !s16 || !qw || !qz || !gidx) {
        rc = piso_errorf("%s: out of memory for the packed tensors", prefix);
        goto done;
    }
    for (int64_t i = 0; i < D; i++) {
        gidx[i] = g_idx ? g_idx[i] : (int32_t)(i / gs);
        if (gidx[i] < 0 || gidx[i] >= ng) {
            rc = piso_errorf("%s: g_idx[%lld] = %d is not a group of %lld", prefix, (long long)i, gidx[i], (long long)ng);
            goto done;
        }
    }
    for (int64_t o = 0; o < N; o++) {
        for (int64_t g = 0; g < ng; g++) {
            zc[o * ng + g] = (uint8_t)(zeros ? zeros[o * ng + g] : half);
            s16[o * ng + g] = piso_fp32_to_fp16(scales[o * ng + g]);
        }
        for (int64_t i = 0; i < D; i++) {
            const int z = zc[o * ng + gidx[i]], v = codes[o * D + i] + z;
            if (v < 0 || v >= 2 * half) {
                rc = piso_errorf("%s: code %d at [%lld, %lld] does not fit %d bits with zero point %d", prefix,
                                 codes[o * D + i], (long long)o, (long long)i, bits, z);
                goto done;
            }
            c[o * D + i] = (uint8_t)v;
        }
    }
    if (f == PISO_CKPT_GPTQ) {
        uint8_t *zm1 = malloc((size_t)N + 1);
        uint16_t *sT = malloc(sizeof(uint16_t) * (size_t)(N * ng));
        if (!zm1 || !sT) {
            free(zm1), free(sT);
            rc = piso_errorf("%s: out of memory", prefix);
            goto done;
        }
        for (int64_t o = 0; o < N; o++) piso_pack_stream(c + o * D, D, bits, qw + o, N); /* column o of qweight */
        for (int64_t g = 0; g < ng; g++) {
            for (int64_t o = 0; o < N; o++) zm1[o] = (uint8_t)(zc[o * ng + g] - 1); /* v1: zero − 1 */
            piso_pack_stream(zm1, N, bits, qz + g * zcols, 1);
            for (int64_t o = 0; o < N; o++) sT[g * N + o] = s16[o * ng + g];
        }
        int64_t sw[2] = {wrows, wcols}, sz[2] = {zrows, zcols}, ss[2] = {ng, N}, sg[1] = {D};
        char name[192];
        add_i32(w, prefix, "qweight", 2, sw, qw);
        add_i32(w, prefix, "qzeros", 2, sz, qz);
        snprintf(name, sizeof name, "%s.scales", prefix);
        piso_st_writer_add_copy(w, name, PISO_DTYPE_F16, 2, ss, sT);
        add_i32(w, prefix, "g_idx", 1, sg, (const uint32_t *)gidx);
        free(zm1), free(sT);
    } else {
        for (int64_t o = 0; o < N; o++) piso_pack_words(c + o * D, D, bits, qw + o * wcols, 1);
        int64_t sw[2] = {wrows, wcols}, ss[2] = {N, ng}, sh[1] = {2};
        int64_t shape[2] = {N, D};
        char name[192];
        add_i32(w, prefix, "weight_packed", 2, sw, qw);
        snprintf(name, sizeof name, "%s.weight_scale", prefix);
        piso_st_writer_add_copy(w, name, PISO_DTYPE_F16, 2, ss, s16);
        snprintf(name, sizeof name, "%s.weight_shape", prefix);
        piso_st_writer_add_copy(w, name, PISO_DTYPE_I64, 1, sh, shape);
        if (g_idx) { /* actorder "group": the group of each input */
            int64_t sg[1] = {D};
            add_i32(w, prefix, "weight_g_idx", 1, sg, (const uint32_t *)gidx);
        }
        if (zeros) { /* packed along the output dimension, one column per group */
            uint8_t *zg = malloc((size_t)N + 1);
            if (!zg) {
                rc = piso_errorf("%s: out of memory", prefix);
                goto done;
            }
            for (int64_t g = 0; g < ng; g++) {
                for (int64_t o = 0; o < N; o++) zg[o] = zc[o * ng + g];
                piso_pack_words(zg, N, bits, qz + g, ng);
            }
            free(zg);
            int64_t sz[2] = {zrows, zcols};
            add_i32(w, prefix, "weight_zero_point", 2, sz, qz);
        }
    }
done:
    free(c), free(zc), free(s16), free(qw), free(qz), free(gidx);
    return rc;
}

cJSON *piso_ckpt_config_json(enum piso_ckpt_format f, int bits, int group, int asym, int act_order, int desc_act,
                             const char *const *skipped, int n_skipped, const char *const *in_block, int n_in_block) {
    cJSON *q = cJSON_CreateObject();
    if (f == PISO_CKPT_GPTQ) {
        cJSON_AddStringToObject(q, "quant_method", "gptq");
        cJSON_AddStringToObject(q, "checkpoint_format", "gptq");
        cJSON_AddNumberToObject(q, "bits", bits);
        cJSON_AddNumberToObject(q, "group_size", group > 0 ? group : -1);
        /* desc_act: groups follow the act order (g_idx); else contiguous, g_idx[i] = i / group */
        cJSON_AddBoolToObject(q, "desc_act", desc_act);
        cJSON_AddBoolToObject(q, "static_groups", act_order && !desc_act);
        cJSON_AddBoolToObject(q, "sym", !asym);
        cJSON_AddBoolToObject(q, "true_sequential", 1);
        cJSON_AddStringToObject(q, "quantizer", "piso");
        if (n_skipped) {
            /* GPTQModel/vLLM: "-:" + regex excludes a module; optimum/transformers: the modules of a
             * block that are quantized */
            cJSON *dyn = cJSON_AddObjectToObject(q, "dynamic");
            char re[256];
            for (int i = 0; i < n_skipped; i++) {
                size_t k = 0;
                re[k++] = '-', re[k++] = ':';
                for (const char *p = skipped[i]; *p && k + 3 < sizeof re; p++) {
                    if (*p == '.') re[k++] = '\\';
                    re[k++] = *p;
                }
                re[k] = 0;
                cJSON_AddItemToObject(dyn, re, cJSON_CreateObject());
            }
            cJSON *mb = cJSON_AddArrayToObject(q, "modules_in_block_to_quantize");
            cJSON_AddItemToArray(mb, cJSON_CreateStringArray(in_block, n_in_block));
        }
    } else {
        cJSON_AddStringToObject(q, "quant_method", "compressed-tensors");
        cJSON_AddStringToObject(q, "format", "pack-quantized");
        cJSON_AddStringToObject(q, "quantization_status", "compressed");
        cJSON *cg = cJSON_AddObjectToObject(cJSON_AddObjectToObject(q, "config_groups"), "group_0");
        const char *lin = "Linear";
        cJSON_AddItemToObject(cg, "targets", cJSON_CreateStringArray(&lin, 1));
        cJSON *wt = cJSON_AddObjectToObject(cg, "weights");
        cJSON_AddNumberToObject(wt, "num_bits", bits);
        cJSON_AddStringToObject(wt, "type", "int");
        cJSON_AddBoolToObject(wt, "symmetric", !asym);
        cJSON_AddStringToObject(wt, "strategy", group > 0 ? "group" : "channel");
        if (group > 0) cJSON_AddNumberToObject(wt, "group_size", group);
        else cJSON_AddNullToObject(wt, "group_size");
        cJSON_AddBoolToObject(wt, "dynamic", 0);
        /* "group": groups follow the act order (weight_g_idx); "weight": order used, groups contiguous */
        if (act_order) cJSON_AddStringToObject(wt, "actorder", desc_act ? "group" : "weight");
        else cJSON_AddNullToObject(wt, "actorder");
        cJSON_AddNullToObject(cg, "input_activations");
        cJSON_AddNullToObject(cg, "output_activations");
        cJSON_AddStringToObject(cg, "format", "pack-quantized");
        cJSON *ig = cJSON_AddArrayToObject(q, "ignore");
        cJSON_AddItemToArray(ig, cJSON_CreateString("lm_head"));
        for (int i = 0; i < n_skipped; i++) cJSON_AddItemToArray(ig, cJSON_CreateString(skipped[i]));
        cJSON_AddNullToObject(q, "kv_cache_scheme");
    }
    return q;
}
