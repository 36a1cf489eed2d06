/* GPTQ and compressed-tensors ("pack-quantized") checkpoints, dequantized on load: W[o, i] =
 * scale[o, g(i)]·(c[o, i] − z[o, g(i)]) in fp32 (layouts: piso/checkpoint.h). Every packed tensor
 * is checked for dtype and shape, and errors name it. */
#include "model/model_internal.h"
#include "piso/checkpoint.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int bits_ok(int b) { return b == 2 || b == 3 || b == 4 || b == 8; }

static int get_int(const cJSON *obj, const char *key, const char *where, const char *path, int def, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) {
        if (def == -999) return piso_errorf("%s: %s: missing field \"%s\"", path, where, key);
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != (double)(int)v->valuedouble || v->valuedouble < -1 || v->valuedouble > 1 << 20)
        return piso_errorf("%s: %s: field \"%s\" must be an integer", path, where, key);
    *out = (int)v->valuedouble;
    return 0;
}

static int get_bool(const cJSON *obj, const char *key, int def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : def;
}

int piso_ckpt_parse_config(const void *cfg_json, const char *path, struct piso_ckpt_info *q) {
    memset(q, 0, sizeof *q);
    const cJSON *qc = cJSON_GetObjectItemCaseSensitive((const cJSON *)cfg_json, "quantization_config");
    if (!qc || cJSON_IsNull(qc)) return 0;
    const char *where = "quantization_config";
    const cJSON *qm = cJSON_GetObjectItemCaseSensitive(qc, "quant_method");
    if (!cJSON_IsObject(qc) || !cJSON_IsString(qm))
        return piso_errorf("%s: %s: missing string field \"quant_method\"", path, where);
    if (!strcmp(qm->valuestring, "gptq")) {
        const cJSON *cf = cJSON_GetObjectItemCaseSensitive(qc, "checkpoint_format");
        if (cJSON_IsString(cf) && strcmp(cf->valuestring, "gptq") != 0)
            return piso_errorf("%s: %s: checkpoint_format \"%s\" is not supported (only \"gptq\", the v1 layout)", path,
                               where, cf->valuestring);
        q->format = PISO_CKPT_GPTQ;
        if (get_int(qc, "bits", where, path, -999, &q->bits) || get_int(qc, "group_size", where, path, -1, &q->group))
            return -1;
        q->sym = get_bool(qc, "sym", 1);
    } else if (!strcmp(qm->valuestring, "compressed-tensors")) {
        const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(qc, "format");
        if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "pack-quantized") != 0)
            return piso_errorf("%s: %s: format \"%s\" is not supported (only \"pack-quantized\")", path, where,
                               cJSON_IsString(fmt) ? fmt->valuestring : "(missing)");
        const cJSON *cg = cJSON_GetObjectItemCaseSensitive(qc, "config_groups");
        if (!cJSON_IsObject(cg) || cJSON_GetArraySize(cg) != 1)
            return piso_errorf("%s: %s: field \"config_groups\" must hold exactly one scheme", path, where);
        const cJSON *wt = cJSON_GetObjectItemCaseSensitive(cg->child, "weights");
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(wt, "type");
        const cJSON *strat = cJSON_GetObjectItemCaseSensitive(wt, "strategy");
        where = "quantization_config.config_groups.weights";
        if (!cJSON_IsObject(wt)) return piso_errorf("%s: %s: missing", path, where);
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "int") != 0)
            return piso_errorf("%s: %s: type must be \"int\"", path, where);
        q->format = PISO_CKPT_COMPRESSED;
        if (get_int(wt, "num_bits", where, path, -999, &q->bits) || get_int(wt, "group_size", where, path, 0, &q->group))
            return -1;
        q->sym = get_bool(wt, "symmetric", 1);
        if (!cJSON_IsString(strat) || (strcmp(strat->valuestring, "channel") && strcmp(strat->valuestring, "group")))
            return piso_errorf("%s: %s: strategy must be \"channel\" or \"group\"", path, where);
        if (!strcmp(strat->valuestring, "channel")) q->group = 0;
        else if (q->group <= 0) return piso_errorf("%s: %s: strategy \"group\" needs a positive group_size", path, where);
    } else {
        return piso_errorf("%s: %s: quant_method \"%s\" is not supported (gptq, compressed-tensors)", path, where,
                           qm->valuestring);
    }
    if (!bits_ok(q->bits)) return piso_errorf("%s: %s: %d bits are not supported (2, 3, 4, 8)", path, where, q->bits);
    if (q->group < 0) q->group = 0; /* GPTQ's −1: per channel */
    return 0;
}

/* One packed tensor: found, of dtype I32 (or the float types for scales), ndim and shape checked. */
struct packed {
    const struct piso_st_tensor *t;
    const char *file;
    char name[192];
};

static int find(struct piso_model *m, const char *prefix, const char *suffix, struct packed *p, int required) {
    int fi = 0;
    snprintf(p->name, sizeof p->name, "%s.%s", prefix, suffix);
    p->t = piso_hf_find_tensor(m, p->name, &fi);
    p->file = p->t ? m->storage->st[fi].map.path : m->path;
    if (!p->t && required) return piso_errorf("%s: tensor '%s' not found (packed layer %s)", m->path, p->name, prefix);
    return 0;
}

static int check(const struct packed *p, int is_int, int ndim, int64_t d0, int64_t d1) {
    const struct piso_st_tensor *t = p->t;
    if (is_int && t->dtype != PISO_DTYPE_I32)
        return piso_errorf("%s: tensor '%s': dtype %s, expected I32", p->file, p->name, piso_dtype_name(t->dtype));
    if (!is_int && t->dtype != PISO_DTYPE_F16 && t->dtype != PISO_DTYPE_BF16 && t->dtype != PISO_DTYPE_F32)
        return piso_errorf("%s: tensor '%s': dtype %s, expected F16, BF16 or F32", p->file, p->name,
                           piso_dtype_name(t->dtype));
    if (t->ndim != ndim || t->shape[0] != d0 || (ndim == 2 && t->shape[1] != d1)) {
        char got[64] = "";
        for (int k = 0; k < t->ndim && k < 4; k++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", k ? ", " : "", (long long)t->shape[k]);
        if (ndim == 2)
            return piso_errorf("%s: tensor '%s': shape [%s], expected [%lld, %lld]", p->file, p->name, got, (long long)d0,
                               (long long)d1);
        return piso_errorf("%s: tensor '%s': shape [%s], expected [%lld]", p->file, p->name, got, (long long)d0);
    }
    return 0;
}

static uint32_t *words_of(const struct packed *p) { /* aligned copy of an I32 tensor */
    uint32_t *w = malloc(p->t->nbytes + 4);
    if (w) memcpy(w, p->t->data, p->t->nbytes);
    else piso_errorf("%s: tensor '%s': out of memory", p->file, p->name);
    return w;
}

static float *floats_of(struct piso_model *m, const struct packed *p) {
    float *f = malloc(sizeof(float) * (size_t)(p->t->numel + 1));
    if (!f) {
        piso_errorf("%s: tensor '%s': out of memory", p->file, p->name);
        return NULL;
    }
    for (int i = 0; i < m->storage->n_st; i++)
        if (!strcmp(m->storage->st[i].map.path, p->file)) {
            if (piso_st_read_f32(&m->storage->st[i], p->t, f, (size_t)p->t->numel) != 0) break;
            for (int64_t k = 0; k < p->t->numel; k++)
                if (!isfinite(f[k])) {
                    piso_errorf("%s: tensor '%s': entry %lld is not finite", p->file, p->name, (long long)k);
                    free(f);
                    return NULL;
                }
            return f;
        }
    free(f);
    return NULL;
}

/* The group of each input: g_idx if stored (values checked), else i / group. */
static int32_t *group_index(const struct packed *gp, int64_t D, int group, int64_t ng) {
    int32_t *g = malloc(sizeof(int32_t) * (size_t)D);
    if (!g) return piso_errorf("out of memory"), NULL;
    if (gp->t) {
        memcpy(g, gp->t->data, sizeof(int32_t) * (size_t)D);
        for (int64_t i = 0; i < D; i++)
            if (g[i] < 0 || g[i] >= ng) {
                piso_errorf("%s: tensor '%s': entry %lld is %d, outside the %lld groups", gp->file, gp->name, (long long)i,
                            g[i], (long long)ng);
                free(g);
                return NULL;
            }
        return g;
    }
    for (int64_t i = 0; i < D; i++) g[i] = (int32_t)(group > 0 ? i / group : 0);
    return g;
}

float *piso_ckpt_load_linear(struct piso_model *m, const struct piso_ckpt_info *q, const char *prefix, int64_t rows,
                             int64_t cols, int *packed) {
    const int64_t N = rows, D = cols;
    const int b = q->bits, per = 32 / b, half = 1 << (b - 1);
    const int gptq = q->format == PISO_CKPT_GPTQ;
    struct packed qw, sc, qz, gi, shp;
    *packed = 0;
    if (find(m, prefix, gptq ? "qweight" : "weight_packed", &qw, 0) || !qw.t) return NULL;
    *packed = 1;
    int dense_too = 0;
    struct packed dw;
    if (find(m, prefix, "weight", &dw, 0) == 0 && dw.t) dense_too = 1;
    if (dense_too) {
        piso_errorf("%s: layer %s has both a dense 'weight' and packed tensors", m->path, prefix);
        return NULL;
    }
    if (find(m, prefix, gptq ? "scales" : "weight_scale", &sc, 1)) return NULL;
    if (find(m, prefix, gptq ? "g_idx" : "weight_g_idx", &gi, 0)) return NULL;
    if (sc.t->ndim != 2) {
        piso_errorf("%s: tensor '%s': %d dimensions, expected 2", sc.file, sc.name, sc.t->ndim);
        return NULL;
    }
    const int64_t ng = gptq ? sc.t->shape[0] : sc.t->shape[1];
    const int64_t gexp = q->group > 0 ? (D + q->group - 1) / q->group : 1;
    if (ng < 1 || ng > D) {
        piso_errorf("%s: tensor '%s': %lld groups for %lld inputs", sc.file, sc.name, (long long)ng, (long long)D);
        return NULL;
    }
    if (ng != gexp) { /* with g_idx too: desc_act keeps ceil(in / group) groups */
        piso_errorf("%s: tensor '%s': %lld groups, expected %lld (in = %lld, group_size %d)", sc.file, sc.name,
                    (long long)ng, (long long)gexp, (long long)D, q->group);
        return NULL;
    }
    if (gptq) {
        if ((D * b) % 32 || (N * b) % 32) {
            piso_errorf("%s: packed layer %s [%lld, %lld]: GPTQ needs in and out to fill whole int32 words at %d bits",
                        qw.file, prefix, (long long)N, (long long)D, b);
            return NULL;
        }
        if (check(&qw, 1, 2, D * b / 32, N) || check(&sc, 0, 2, ng, N)) return NULL;
        if (find(m, prefix, "qzeros", &qz, 1) || check(&qz, 1, 2, ng, N * b / 32)) return NULL;
    } else {
        if (check(&qw, 1, 2, N, (D + per - 1) / per) || check(&sc, 0, 2, N, ng)) return NULL;
        if (find(m, prefix, "weight_shape", &shp, 1)) return NULL;
        int64_t sh[2] = {0, 0};
        if (shp.t->ndim != 1 || shp.t->shape[0] != 2 || (shp.t->dtype != PISO_DTYPE_I64 && shp.t->dtype != PISO_DTYPE_I32)) {
            piso_errorf("%s: tensor '%s': expected 2 integers (I64 or I32)", shp.file, shp.name);
            return NULL;
        }
        for (int k = 0; k < 2; k++) {
            if (shp.t->dtype == PISO_DTYPE_I64) memcpy(&sh[k], (const char *)shp.t->data + 8 * k, 8);
            else {
                int32_t v;
                memcpy(&v, (const char *)shp.t->data + 4 * k, 4);
                sh[k] = v;
            }
        }
        if (sh[0] != N || sh[1] != D) {
            piso_errorf("%s: tensor '%s': [%lld, %lld], but the model needs [%lld, %lld]", shp.file, shp.name,
                        (long long)sh[0], (long long)sh[1], (long long)N, (long long)D);
            return NULL;
        }
        qz.t = NULL;
        if (!q->sym && (find(m, prefix, "weight_zero_point", &qz, 1) || check(&qz, 1, 2, (N + per - 1) / per, ng)))
            return NULL;
    }
    if (gi.t && check(&gi, 1, 1, D, 0)) return NULL;
    float *W = piso_model_own(m, (size_t)(N * D)), *s = floats_of(m, &sc);
    uint32_t *w = words_of(&qw), *z = qz.t ? words_of(&qz) : NULL;
    int32_t *g = group_index(&gi, D, q->group, ng);
    if (!W || !s || !w || (qz.t && !z) || !g) {
        if (!W) piso_errorf("%s: layer %s: out of memory", m->path, prefix);
        free(s), free(w), free(z), free(g);
        return NULL;
    }
    for (int64_t o = 0; o < N; o++)
        for (int64_t i = 0; i < D; i++) {
            const int64_t k = g[i];
            int c, zp;
            if (gptq) {
                c = piso_unpack_stream(w + o, i, b, N);
                zp = piso_unpack_stream(z + k * (N * b / 32), o, b, 1) + 1; /* v1: zero − 1 stored */
            } else {
                c = piso_unpack_words(w + o * ((D + per - 1) / per), i, b, 1);
                zp = z ? piso_unpack_words(z + k, o, b, ng) : half;
            }
            const float sv = gptq ? s[k * N + o] : s[o * ng + k];
            W[o * D + i] = sv * (float)(c - zp);
        }
    free(s), free(w), free(z), free(g);
    return W;
}
