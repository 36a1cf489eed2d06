/* The simulated integer matmul with a narrow accumulator (piso/accum_sim.h): loading the codes of a
 * piso output directory, the checker on them, and the integer linear layer of the forward pass. */
#include "piso/accum_sim.h"
#include "piso/act_quant.h"
#include "piso/pipeline.h"
#include "piso/safetensors.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void piso_accum_sim_free(struct piso_accum_sim *s) {
    if (s->lin)
        for (int i = 0; i < s->n_layers * PISO_LIN_COUNT; i++) free(s->lin[i].codes), free(s->lin[i].scales);
    free(s->lin);
    memset(s, 0, sizeof *s);
}

/* quantization.json's "group" (0: one scale per row) */
static int read_group(const char *dir, int *group) {
    char *path = piso_path_join(dir, "quantization.json"), *text = NULL;
    size_t len;
    int rc = path ? piso_read_file_max(path, &text, &len, 64u << 20) : piso_errorf("out of memory");
    cJSON *root = rc ? NULL : cJSON_ParseWithLength(text, len);
    const cJSON *g = root ? cJSON_GetObjectItemCaseSensitive(root, "group") : NULL;
    if (!rc && !cJSON_IsNumber(g)) rc = piso_errorf("%s: no numeric field \"group\" (not a piso output directory?)", path);
    if (!rc) *group = (int)g->valuedouble;
    cJSON_Delete(root), free(text), free(path);
    return rc;
}

/* One layer's codes and scales from the file, in the model's row order, checked against its weights. */
static int load_linear(struct piso_int_linear *L, const struct piso_st_file *f, const char *file,
                       const struct piso_model *m, int layer, enum piso_linear k, int group) {
    const struct piso_tensor_info *t = piso_schema_linear(k);
    const struct piso_config *c = &m->cfg;
    int64_t N = piso_schema_dim(c, t->rows), D = piso_schema_dim(c, t->cols);
    int gs = group > 0 && group < D ? group : (int)D;
    int64_t ng = (D + gs - 1) / gs;
    char base[96], name[128];
    piso_linear_hf_name(layer, k, base, sizeof base);
    snprintf(name, sizeof name, "%s.codes", base);
    const struct piso_st_tensor *tc = piso_st_find(f, name);
    snprintf(name, sizeof name, "%s.scales", base);
    const struct piso_st_tensor *ts = piso_st_find(f, name);
    if (!tc || !ts) return piso_errorf("%s: no %s.codes / %s.scales", file, base, base);
    if (tc->ndim != 2 || tc->shape[0] != N || tc->shape[1] != D || ts->ndim != 2 || ts->shape[0] != N ||
        ts->shape[1] != ng || (tc->dtype != PISO_DTYPE_I8 && tc->dtype != PISO_DTYPE_I16))
        return piso_errorf("%s: %s.codes must be I8/I16 [%lld, %lld] and .scales F32 [%lld, %lld]", file, base,
                           (long long)N, (long long)D, (long long)N, (long long)ng);
    float *cf = malloc(sizeof(float) * N * D), *tmp = malloc(sizeof(float) * N * (D > ng ? D : ng));
    L->codes = malloc(sizeof(int16_t) * N * D), L->scales = malloc(sizeof(float) * N * ng);
    if (!cf || !tmp || !L->codes || !L->scales) {
        free(cf), free(tmp);
        return piso_errorf("out of memory for the codes of %s", base);
    }
    L->N = N, L->D = D, L->n_groups = ng, L->group = gs;
    for (int64_t i = 0; i < N * D; i++)
        cf[i] = tc->dtype == PISO_DTYPE_I8 ? ((const int8_t *)tc->data)[i] : ((const int16_t *)tc->data)[i];
    int rc = piso_st_read_f32(f, ts, L->scales, (size_t)(N * ng));
    int heads = c->rope_style == PISO_ROPE_ADJACENT ? piso_schema_rope_heads(c, t) : 0;
    if (!rc && heads) { /* the file holds HF rotate-half rows; the model runs adjacent pairs */
        piso_rope_reorder(cf, tmp, heads, c->head_dim, D, PISO_ROPE_ADJACENT), memcpy(cf, tmp, sizeof(float) * N * D);
        piso_rope_reorder(L->scales, tmp, heads, c->head_dim, ng, PISO_ROPE_ADJACENT);
        memcpy(L->scales, tmp, sizeof(float) * N * ng);
    }
    const float *W = rc ? NULL : *piso_schema_slot((struct piso_model *)m, t, layer);
    for (int64_t r = 0; !rc && r < N; r++)
        for (int64_t j = 0; j < D; j++) {
            float s = L->scales[r * ng + j / gs], w = W[r * D + j];
            L->codes[r * D + j] = (int16_t)cf[r * D + j];
            /* the weights are scale·code in the model's dtype (exact in F32, rounded in F16/BF16) */
            if (!(fabsf(w - s * cf[r * D + j]) <= 4e-3f * fabsf(s * cf[r * D + j]) + 1e-30f)) {
                rc = piso_errorf("%s: %s row %lld column %lld: weight %g is not scale %g * code %g", file, base,
                                 (long long)r, (long long)j, w, s, cf[r * D + j]);
                break;
            }
        }
    free(cf), free(tmp);
    return rc;
}

int piso_accum_sim_load(struct piso_accum_sim *s, const struct piso_model *m, const char *dir, int bits, int tile,
                        int saturate) {
    memset(s, 0, sizeof *s);
    const struct piso_act_format *act = &m->act.act;
    int mn, mx;
    if (act->kind == PISO_ACT_NONE || piso_act_code_range(act, &mn, &mx))
        return piso_errorf("--simulate-accumulator needs integer activations (--act-format int8, int4, ...; the "
                           "model has %s)", act->kind == PISO_ACT_NONE ? "none" : act->name);
    if (bits < 2 || bits > 64) return piso_errorf("--simulate-accumulator %d: must lie in 2..64", bits);
    int group;
    if (read_group(dir, &group)) return -1;
    s->bits = bits, s->tile = tile, s->saturate = saturate, s->n_layers = m->cfg.n_layers;
    s->lin = calloc((size_t)s->n_layers * PISO_LIN_COUNT, sizeof *s->lin);
    char *file = piso_path_join(dir, "quantization.safetensors");
    struct piso_st_file f;
    int rc = !s->lin || !file ? piso_errorf("out of memory") : piso_st_open(&f, file), opened = !rc;
    for (int l = 0; !rc && l < s->n_layers; l++)
        for (int k = 0; !rc && k < PISO_LIN_COUNT; k++) {
            struct piso_int_linear *L = &s->lin[l * PISO_LIN_COUNT + k];
            rc = load_linear(L, &f, file, m, l, (enum piso_linear)k, group);
            if (rc) break;
            /* a tile inside one weight group and one activation group, dividing the row */
            int T = tile > 0 ? tile : L->group;
            char base[96];
            piso_linear_hf_name(l, (enum piso_linear)k, base, sizeof base);
            if (L->group % T || (act->group > 0 && act->group % T) || (L->D % T && T != L->group))
                rc = piso_errorf("--simulate-tile %d: must divide the row (%lld) of %s, its weight group (%d) and the "
                                 "activation group (%d)", T, (long long)L->D, base, L->group, act->group);
        }
    if (opened) piso_st_close(&f);
    free(file);
    if (rc) piso_accum_sim_free(s);
    return rc;
}

void piso_accum_sim_check(const struct piso_accum_sim *s, const struct piso_accum *a, struct piso_accum_report *total) {
    memset(total, 0, sizeof *total);
    total->limit = piso_accum_max(a);
    for (int i = 0; i < s->n_layers * PISO_LIN_COUNT; i++) {
        const struct piso_int_linear *L = &s->lin[i];
        struct piso_accum_report rep;
        piso_accum_check(L->codes, L->N, L->D, s->tile > 0 ? s->tile : L->group, a, &rep);
        total->violations += rep.violations, total->n_tiles += rep.n_tiles * L->N;
        if (rep.worst > total->worst) total->worst = rep.worst, total->worst_row = rep.worst_row, total->worst_tile = i;
        if (rep.max_l1 > total->max_l1) total->max_l1 = rep.max_l1;
    }
}

/* the P-bit value of v: wrapped (two's complement) */
static int64_t wrap_bits(int64_t v, int P) {
    if (P >= 64) return v;
    uint64_t m = (uint64_t)1 << P, u = (uint64_t)v & (m - 1);
    return u >= m / 2 ? (int64_t)(u - m) : (int64_t)u;
}

void piso_accum_sim_linear(struct piso_accum_sim *s, const struct piso_int_linear *L,
                           const struct piso_act_format *act, const float *x, float *y, int n, float beta) {
    const int64_t N = L->N, D = L->D;
    const int T = s->tile > 0 ? s->tile : L->group;
    const int64_t hi = s->bits >= 64 ? INT64_MAX : ((int64_t)1 << (s->bits - 1)) - 1, lo = -hi - 1;
    const int64_t na = piso_act_groups(act, D);
    int64_t tiles = 0, over = 0;
#pragma omp parallel reduction(+ : tiles, over)
    {
        int32_t *codes = malloc(sizeof(int32_t) * D), *zp = malloc(sizeof(int32_t) * na);
        float *as = malloc(sizeof(float) * na);
#pragma omp for schedule(static)
        for (int i = 0; i < n; i++) {
            if (!codes || !zp || !as) continue; /* out of memory: the rows stay as they are */
            piso_act_quantize_row_codes(act, x + (int64_t)i * D, D, codes, as, zp);
            const int64_t ag = act->group > 0 ? act->group : D;
            for (int64_t o = 0; o < N; o++) {
                const int16_t *q = L->codes + o * D;
                double out = 0;
                for (int64_t t0 = 0; t0 < D; t0 += T) {
                    int64_t t1 = t0 + T < D ? t0 + T : D, acc = 0, exact = 0, qsum = 0;
                    for (int64_t j = t0; j < t1; j++) exact += (int64_t)q[j] * codes[j], qsum += q[j];
                    if (s->saturate) /* clamped after every addition, in column order */
                        for (int64_t j = t0; j < t1; j++) {
                            int64_t v = acc + (int64_t)q[j] * codes[j];
                            acc = v > hi ? hi : v < lo ? lo : v;
                        }
                    else /* two's complement: the wrapped sum is the exact sum modulo 2^P */
                        acc = wrap_bits(exact, s->bits);
                    tiles++, over += exact > hi || exact < lo;
                    int64_t g = t0 / ag < na ? t0 / ag : na - 1;
                    /* the zero-point term and the scales, wide */
                    double v = (double)(acc - (int64_t)zp[g] * qsum);
                    out += (double)L->scales[o * L->n_groups + t0 / L->group] * (double)as[g] * v;
                }
                float *yo = y + (int64_t)i * N + o;
                *yo = beta != 0.0f ? beta * *yo + (float)out : (float)out;
            }
        }
        free(codes), free(zp), free(as);
    }
#pragma omp atomic
    s->tiles += tiles;
#pragma omp atomic
    s->overflowed += over;
}
