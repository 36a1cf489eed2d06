/* llama.cpp block formats: bit-exact packing/unpacking, dequantization, and llama.cpp's reference
 * scale rules (the `llamacpp-ref` baseline), written from shared/docs/llamacpp-formats.md §2-§3. */
#include "piso/ggml_quants.h"
#include "piso/gguf.h"

#include <math.h>
#include <string.h>

#define GROUP_MAX_EPS 1e-15f

/* ggml's nearest_int rounds half to even (the 1.5*2^23 trick); lrintf does the same. */
static inline int nearest_int(float f) { return (int)lrintf(f); }
static inline float h2f(uint16_t h) { return piso_fp16_to_fp32(h); }
static inline uint16_t f2h(float f) { return piso_fp32_to_fp16(f); }
static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

int piso_ggml_is_block_type(int t) {
    switch (t) {
    case GGML_T_Q8_0: case GGML_T_Q4_0: case GGML_T_Q4_1: case GGML_T_Q5_0: case GGML_T_Q5_1:
    case GGML_T_Q4_K: case GGML_T_Q5_K: case GGML_T_Q6_K:
        return 1;
    default:
        return 0;
    }
}

int piso_ggml_block_elems(int t) {
    return (t == GGML_T_Q4_K || t == GGML_T_Q5_K || t == GGML_T_Q6_K) ? PISO_QK_K : PISO_QK;
}

int piso_ggml_block_bytes(int t) {
    switch (t) {
    case GGML_T_Q8_0: return 34;
    case GGML_T_Q4_0: return 18;
    case GGML_T_Q4_1: return 20;
    case GGML_T_Q5_0: return 22;
    case GGML_T_Q5_1: return 24;
    case GGML_T_Q4_K: return 144;
    case GGML_T_Q5_K: return 176;
    case GGML_T_Q6_K: return 210;
    default: return 0;
    }
}

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* ---- legacy 32-blocks ------------------------------------------------------------------------ */

void piso_pack_blk32(int type, const struct piso_blk32 *b, void *dst) {
    uint8_t *p = dst;
    put16(p, b->d);
    p += 2;
    if (type == GGML_T_Q8_0) {
        for (int i = 0; i < 32; i++) p[i] = (uint8_t)(int8_t)b->q[i];
        return;
    }
    if (type == GGML_T_Q4_1 || type == GGML_T_Q5_1) {
        put16(p, b->m);
        p += 2;
    }
    if (type == GGML_T_Q5_0 || type == GGML_T_Q5_1) {
        uint32_t qh = 0;
        for (int i = 0; i < 32; i++) qh |= (uint32_t)((b->q[i] >> 4) & 1) << i;
        for (int k = 0; k < 4; k++) p[k] = (uint8_t)(qh >> (8 * k));
        p += 4;
    }
    /* nibble layout: byte j = element j (low) | element j+16 (high) */
    for (int j = 0; j < 16; j++) p[j] = (uint8_t)((b->q[j] & 15) | (b->q[j + 16] & 15) << 4);
}

void piso_unpack_blk32(int type, const void *src, struct piso_blk32 *b) {
    const uint8_t *p = src;
    b->d = get16(p);
    b->m = 0;
    p += 2;
    if (type == GGML_T_Q8_0) {
        for (int i = 0; i < 32; i++) b->q[i] = (int8_t)p[i];
        return;
    }
    if (type == GGML_T_Q4_1 || type == GGML_T_Q5_1) {
        b->m = get16(p);
        p += 2;
    }
    uint32_t qh = 0;
    if (type == GGML_T_Q5_0 || type == GGML_T_Q5_1) {
        qh = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        p += 4;
    }
    for (int j = 0; j < 16; j++) {
        b->q[j] = (int16_t)((p[j] & 15) | ((qh >> j) & 1) << 4);
        b->q[j + 16] = (int16_t)((p[j] >> 4) | ((qh >> (j + 16)) & 1) << 4);
    }
}

void piso_blk32_to_float(int type, const struct piso_blk32 *b, float *y) {
    const float d = h2f(b->d), m = h2f(b->m);
    for (int i = 0; i < 32; i++) {
        switch (type) {
        case GGML_T_Q8_0: y[i] = (float)b->q[i] * d; break;
        case GGML_T_Q4_0: y[i] = (float)(b->q[i] - 8) * d; break;
        case GGML_T_Q5_0: y[i] = (float)(b->q[i] - 16) * d; break;
        default: y[i] = (float)b->q[i] * d + m; break; /* Q4_1, Q5_1 */
        }
    }
}

/* ---- K-quant 256-blocks ---------------------------------------------------------------------- */

/* 6-bit scales and mins of Q4_K/Q5_K in 12 bytes (inverse of get_scale_min_k4). */
static void pack_scales_k4(const uint8_t *sc, const uint8_t *mn, uint8_t *q) {
    for (int j = 0; j < 4; j++) {
        q[j] = (uint8_t)((sc[j] & 63) | (sc[j + 4] >> 4) << 6);
        q[j + 4] = (uint8_t)((mn[j] & 63) | (mn[j + 4] >> 4) << 6);
        q[j + 8] = (uint8_t)((sc[j + 4] & 15) | (mn[j + 4] & 15) << 4);
    }
}

static void unpack_scales_k4(const uint8_t *q, uint8_t *sc, uint8_t *mn) {
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            sc[j] = q[j] & 63;
            mn[j] = q[j + 4] & 63;
        } else {
            sc[j] = (uint8_t)((q[j + 4] & 15) | (q[j - 4] >> 6) << 4);
            mn[j] = (uint8_t)((q[j + 4] >> 4) | (q[j] >> 6) << 4);
        }
    }
}

void piso_pack_blk256(int type, const struct piso_blk256 *b, void *dst) {
    uint8_t *p = dst;
    if (type == GGML_T_Q6_K) {
        uint8_t *ql = p, *qh = p + 128;
        int8_t *sc = (int8_t *)(p + 192);
        memset(p, 0, 192);
        for (int h = 0; h < 2; h++)
            for (int l = 0; l < 32; l++) {
                const uint8_t *q = b->q + 128 * h;
                uint8_t *L = ql + 64 * h, *H = qh + 32 * h;
                L[l] = (uint8_t)((q[l] & 15) | (q[l + 64] & 15) << 4);
                L[l + 32] = (uint8_t)((q[l + 32] & 15) | (q[l + 96] & 15) << 4);
                H[l] = (uint8_t)((q[l] >> 4) | (q[l + 32] >> 4) << 2 | (q[l + 64] >> 4) << 4 | (q[l + 96] >> 4) << 6);
            }
        for (int j = 0; j < 16; j++) sc[j] = b->sc6[j];
        put16(p + 208, b->d);
        return;
    }
    put16(p, b->d);
    put16(p + 2, b->dmin);
    pack_scales_k4(b->sc, b->mn, p + 4);
    uint8_t *qs = p + 16;
    if (type == GGML_T_Q5_K) {
        uint8_t *qh = p + 16;
        qs = p + 48;
        memset(qh, 0, 32);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) {
                qh[l] |= (uint8_t)(((b->q[64 * c + l] >> 4) & 1) << (2 * c));
                qh[l] |= (uint8_t)(((b->q[64 * c + 32 + l] >> 4) & 1) << (2 * c + 1));
            }
    }
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++)
            qs[32 * c + l] = (uint8_t)((b->q[64 * c + l] & 15) | (b->q[64 * c + 32 + l] & 15) << 4);
}

void piso_unpack_blk256(int type, const void *src, struct piso_blk256 *b) {
    const uint8_t *p = src;
    memset(b, 0, sizeof *b);
    if (type == GGML_T_Q6_K) {
        const uint8_t *ql = p, *qh = p + 128;
        for (int h = 0; h < 2; h++)
            for (int l = 0; l < 32; l++) {
                const uint8_t *L = ql + 64 * h, *H = qh + 32 * h;
                uint8_t *q = b->q + 128 * h;
                q[l] = (uint8_t)((L[l] & 15) | ((H[l] >> 0) & 3) << 4);
                q[l + 32] = (uint8_t)((L[l + 32] & 15) | ((H[l] >> 2) & 3) << 4);
                q[l + 64] = (uint8_t)((L[l] >> 4) | ((H[l] >> 4) & 3) << 4);
                q[l + 96] = (uint8_t)((L[l + 32] >> 4) | ((H[l] >> 6) & 3) << 4);
            }
        for (int j = 0; j < 16; j++) b->sc6[j] = (int8_t)p[192 + j];
        b->d = get16(p + 208);
        return;
    }
    b->d = get16(p);
    b->dmin = get16(p + 2);
    unpack_scales_k4(p + 4, b->sc, b->mn);
    const uint8_t *qs = p + 16, *qh = NULL;
    if (type == GGML_T_Q5_K) {
        qh = p + 16;
        qs = p + 48;
    }
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            b->q[64 * c + l] = (uint8_t)((qs[32 * c + l] & 15) | (qh ? ((qh[l] >> (2 * c)) & 1) << 4 : 0));
            b->q[64 * c + 32 + l] = (uint8_t)((qs[32 * c + l] >> 4) | (qh ? ((qh[l] >> (2 * c + 1)) & 1) << 4 : 0));
        }
}

void piso_blk256_to_float(int type, const struct piso_blk256 *b, float *y) {
    const float d = h2f(b->d);
    if (type == GGML_T_Q6_K) {
        for (int i = 0; i < 256; i++) y[i] = d * (float)b->sc6[i / 16] * (float)((int)b->q[i] - 32);
        return;
    }
    const float dmin = h2f(b->dmin);
    for (int j = 0; j < 8; j++) {
        const float d1 = d * (float)b->sc[j], m1 = dmin * (float)b->mn[j];
        for (int l = 0; l < 32; l++) y[32 * j + l] = d1 * (float)b->q[32 * j + l] - m1;
    }
}

void piso_ggml_dequantize_row(int type, const void *src, float *dst, int64_t k) {
    const int be = piso_ggml_block_elems(type), bb = piso_ggml_block_bytes(type);
    const uint8_t *p = src;
    for (int64_t i = 0; i < k / be; i++, p += bb) {
        if (be == PISO_QK) {
            struct piso_blk32 b;
            piso_unpack_blk32(type, p, &b);
            piso_blk32_to_float(type, &b, dst + i * be);
        } else {
            struct piso_blk256 b;
            piso_unpack_blk256(type, p, &b);
            piso_blk256_to_float(type, &b, dst + i * be);
        }
    }
}

/* ---- llama.cpp's search helpers (§3.3), rewritten from their description ---------------------- */

/* Symmetric levels [-nmax, nmax-1] stored +nmax; 19 candidate inverse scales around -nmax/max. */
static float make_qx_quants(int n, int nmax, const float *x, uint8_t *L, int rmse_type, const float *qw) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) amax = ax, max = x[i];
    }
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0;
    }
    float iscale = -nmax / max;
    if (rmse_type == 0) {
        for (int i = 0; i < n; i++) L[i] = (uint8_t)(nmax + clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1));
        return 1 / iscale;
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (uint8_t)(l + nmax);
        float w = qw ? qw[i] : x[i] * x[i]; /* rmse_type 1 */
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
            float w = qw ? qw[i] : x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) L[i] = (uint8_t)(nmax + clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Affine levels [0, nmax] with min <= 0: nstep+2 candidate inverse scales, each with a weighted
 * 2x2 least-squares refit (make_qkx2_quants; make_qkx3_quants is the same with other constants). */
static float make_qkx_quants(int n, int nmax, const float *x, const float *w, uint8_t *L, float *the_min,
                             uint8_t *Laux, float rmin, float rdelta, int nstep, int use_mad) {
    float min = x[0], max = x[0], sum_w = w[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min), scale = 1 / iscale, best_error = 0;
    for (int i = 0; i < n; i++) {
        int l = clampi(nearest_int(iscale * (x[i] - min)), 0, nmax);
        L[i] = (uint8_t)l;
        float diff = scale * L[i] + min - x[i];
        best_error += w[i] * (use_mad ? fabsf(diff) : diff * diff);
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = clampi(nearest_int(iscale * (x[i] - min)), 0, nmax);
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                cur_error += w[i] * (use_mad ? fabsf(diff) : diff * diff);
            }
            if (cur_error < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* Unsigned levels [0, nmax] for positive vectors (the K-quant sub-block scales and mins). */
static float make_qp_quants(int n, int nmax, const float *x, uint8_t *L, const float *w) {
    float max = 0;
    for (int i = 0; i < n; i++) max = fmaxf(max, x[i]);
    if (!max) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = nmax / max;
    for (int i = 0; i < n; i++) L[i] = (uint8_t)nearest_int(iscale * x[i]);
    float scale = 1 / iscale, best_mse = 0;
    for (int i = 0; i < n; i++) {
        float diff = x[i] - scale * L[i];
        best_mse += w[i] * diff * diff;
    }
    for (int is = -4; is <= 4; ++is) {
        if (is == 0) continue;
        float iscale_is = (0.1f * is + nmax) / max, scale_is = 1 / iscale_is, mse = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale_is * x[i]);
            if (l > nmax) l = nmax;
            float diff = x[i] - scale_is * l;
            mse += w[i] * diff * diff;
        }
        if (mse < best_mse) best_mse = mse, iscale = iscale_is;
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * x[i]);
        L[i] = (uint8_t)(l > nmax ? nmax : l);
        sumlx += w[i] * x[i] * L[i];
        suml2 += w[i] * L[i] * L[i];
    }
    for (int itry = 0; itry < 5; ++itry) {
        int n_changed = 0;
        for (int i = 0; i < n; i++) {
            float slx = sumlx - w[i] * x[i] * L[i], sl2 = suml2 - w[i] * L[i] * L[i];
            if (slx > 0 && sl2 > 0) {
                int new_l = nearest_int(x[i] * sl2 / slx);
                if (new_l > nmax) new_l = nmax;
                if (new_l != L[i]) {
                    slx += w[i] * x[i] * new_l;
                    sl2 += w[i] * new_l * new_l;
                    if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (uint8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        ++n_changed;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    return suml2 > 0 ? sumlx / suml2 : 0.f;
}

/* ---- reference quantizers, one block or super-block at a time -------------------------------- */

static void ref_blk32(int type, const float *x, const float *qw, float sigma2, struct piso_blk32 *b) {
    memset(b, 0, sizeof *b);
    if (type == GGML_T_Q8_0) { /* d = amax/127, q = round(x/d); the imatrix is ignored */
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[i]));
        const float d = amax / 127, id = d ? 1.0f / d : 0.0f;
        b->d = f2h(d);
        for (int i = 0; i < 32; i++) b->q[i] = (int16_t)roundf(x[i] * id);
        return;
    }
    const int sym = (type == GGML_T_Q4_0 || type == GGML_T_Q5_0);
    const int nmax = (type == GGML_T_Q4_0 || type == GGML_T_Q4_1) ? 16 : 32; /* number of levels */
    uint8_t L[32], Laux[32];
    float w[32];
    if (qw)
        for (int i = 0; i < 32; i++) w[i] = qw[i] * sqrtf(sigma2 + x[i] * x[i]);
    if (sym) {
        if (qw) {
            float d = make_qx_quants(32, nmax / 2, x, L, 1, w);
            b->d = f2h(d);
            for (int i = 0; i < 32; i++) b->q[i] = L[i];
            return;
        }
        /* ref: the element with the largest |x| lands on -nmax/2 */
        float amax = 0, max = 0;
        for (int i = 0; i < 32; i++)
            if (fabsf(x[i]) > amax) amax = fabsf(x[i]), max = x[i];
        const float d = max / -(float)(nmax / 2), id = d ? 1.0f / d : 0.0f;
        b->d = f2h(d);
        for (int i = 0; i < 32; i++) {
            int q = (int8_t)(x[i] * id + (float)(nmax / 2) + 0.5f);
            b->q[i] = (int16_t)(q > nmax - 1 ? nmax - 1 : q);
        }
        return;
    }
    if (qw) {
        float min;
        float d = make_qkx_quants(32, nmax - 1, x, w, L, &min, Laux, -0.9f, 0.05f, 36, 0);
        b->d = f2h(d);
        b->m = f2h(-min);
        for (int i = 0; i < 32; i++) b->q[i] = L[i];
        return;
    }
    float min = x[0], max = x[0];
    for (int i = 1; i < 32; i++) min = fminf(min, x[i]), max = fmaxf(max, x[i]);
    const float d = (max - min) / (float)(nmax - 1), id = d ? 1.0f / d : 0.0f;
    b->d = f2h(d);
    b->m = f2h(min);
    for (int i = 0; i < 32; i++) {
        int q = (int8_t)((x[i] - min) * id + 0.5f);
        b->q[i] = (int16_t)(q > nmax - 1 ? nmax - 1 : q);
    }
}

/* Requantizes every element by RTN against the final fp16 d*sc and dmin*m (as llama.cpp does). */
static void requant_k4(const float *x, int nmax, struct piso_blk256 *b) {
    const float d = h2f(b->d), dmin = h2f(b->dmin);
    for (int j = 0; j < 8; j++) {
        const float dd = d * b->sc[j];
        if (!dd) {
            memset(b->q + 32 * j, 0, 32);
            continue;
        }
        const float dm = dmin * b->mn[j];
        for (int l = 0; l < 32; l++) b->q[32 * j + l] = (uint8_t)clampi(nearest_int((x[32 * j + l] + dm) / dd), 0, nmax);
    }
}

static void ref_blk256(int type, const float *x, const float *qw, struct piso_blk256 *b) {
    memset(b, 0, sizeof *b);
    uint8_t L[256], Laux[32];
    float w[32], sw[8], scales[16], mins[8];
    if (type == GGML_T_Q6_K) {
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < 16; ib++) {
            scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, 1, qw ? qw + 16 * ib : NULL);
            if (fabsf(scales[ib]) > max_abs_scale) max_abs_scale = fabsf(scales[ib]), max_scale = scales[ib];
        }
        if (max_abs_scale < GROUP_MAX_EPS) {
            for (int i = 0; i < 256; i++) b->q[i] = 32;
            return;
        }
        const float iscale = -128.f / max_scale;
        b->d = f2h(1 / iscale);
        for (int ib = 0; ib < 16; ib++) {
            int l = nearest_int(iscale * scales[ib]);
            b->sc6[ib] = (int8_t)(l > 127 ? 127 : l);
        }
        for (int j = 0; j < 16; j++) {
            const float d = h2f(b->d) * b->sc6[j];
            if (!d) continue;
            for (int ii = 0; ii < 16; ii++)
                L[16 * j + ii] = (uint8_t)(clampi(nearest_int(x[16 * j + ii] / d), -32, 31) + 32);
        }
        memcpy(b->q, L, 256);
        return;
    }
    const int nmax = type == GGML_T_Q4_K ? 15 : 31;
    float sum_x2 = 0;
    for (int i = 0; i < 256; i++) sum_x2 += x[i] * x[i];
    const float sigma2 = 2 * sum_x2 / 256, av_all = sqrtf(sigma2);
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        const float *xj = x + 32 * j;
        if (qw) {
            sw[j] = 0;
            for (int l = 0; l < 32; l++) {
                w[l] = qw[32 * j + l] * sqrtf(sigma2 + xj[l] * xj[l]);
                sw[j] += w[l];
            }
            scales[j] = make_qkx_quants(32, nmax, xj, w, L + 32 * j, &mins[j], Laux, -0.9f, 0.05f, 36, 0);
        } else {
            float s2 = 0;
            for (int l = 0; l < 32; l++) s2 += xj[l] * xj[l];
            const float av_x = sqrtf(s2 / 32);
            for (int l = 0; l < 32; l++) w[l] = av_x + fabsf(xj[l]);
            scales[j] = type == GGML_T_Q4_K
                            ? make_qkx_quants(32, 15, xj, w, L + 32 * j, &mins[j], Laux, -1.f, 0.1f, 20, 0)
                            : make_qkx_quants(32, 31, xj, w, L + 32 * j, &mins[j], Laux, -0.5f, 0.1f, 15, 0);
        }
        max_scale = fmaxf(max_scale, scales[j]);
        max_min = fmaxf(max_min, mins[j]);
    }
    (void)av_all;
    if (qw) {
        uint8_t Ls[8], Lm[8];
        const float d_block = make_qp_quants(8, 63, scales, Ls, sw);
        const float m_block = make_qp_quants(8, 63, mins, Lm, sw);
        for (int j = 0; j < 8; j++) b->sc[j] = Ls[j] > 63 ? 63 : Ls[j], b->mn[j] = Lm[j] > 63 ? 63 : Lm[j];
        b->d = f2h(d_block);
        b->dmin = f2h(m_block);
    } else {
        const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
        const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
        for (int j = 0; j < 8; j++) {
            int ls = nearest_int(inv_scale * scales[j]), lm = nearest_int(inv_min * mins[j]);
            b->sc[j] = (uint8_t)(ls > 63 ? 63 : ls);
            b->mn[j] = (uint8_t)(lm > 63 ? 63 : lm);
        }
        b->d = f2h(max_scale / 63.f);
        b->dmin = f2h(max_min / 63.f);
    }
    requant_k4(x, nmax, b);
}

size_t piso_ggml_quantize_ref(int type, const float *x, void *dst, int64_t nrows, int64_t n_per_row,
                              const float *imatrix) {
    const int be = piso_ggml_block_elems(type), bb = piso_ggml_block_bytes(type);
    const int64_t nb = n_per_row / be;
    if (type == GGML_T_Q8_0) imatrix = NULL;
#pragma omp parallel for schedule(dynamic, 4)
    for (int64_t r = 0; r < nrows; r++) {
        const float *xr = x + r * n_per_row;
        uint8_t *out = (uint8_t *)dst + r * nb * bb;
        float sigma2 = 0; /* legacy imatrix weights blend with the row's mean square */
        if (imatrix && be == PISO_QK) {
            float s = 0; /* fp32 in order, as llama.cpp sums it: the baseline stays bit-exact */
            for (int64_t i = 0; i < n_per_row; i++) s += xr[i] * xr[i];
            sigma2 = s / (float)n_per_row;
        }
        for (int64_t ib = 0; ib < nb; ib++) {
            const float *qw = imatrix ? imatrix + ib * be : NULL;
            if (be == PISO_QK) {
                struct piso_blk32 b;
                ref_blk32(type, xr + ib * be, qw, sigma2, &b);
                piso_pack_blk32(type, &b, out + ib * bb);
            } else {
                struct piso_blk256 b;
                ref_blk256(type, xr + ib * be, qw, &b);
                piso_pack_blk256(type, &b, out + ib * bb);
            }
        }
    }
    return (size_t)(nrows * nb * bb);
}

/* ---- traits-table converters ----------------------------------------------------------------- */
void piso_ggml_q8_0_to_float(const void *src, float *dst, int64_t k) { piso_ggml_dequantize_row(GGML_T_Q8_0, src, dst, k); }
void piso_ggml_q8_0_from_float(const float *src, void *dst, int64_t k) { piso_ggml_quantize_ref(GGML_T_Q8_0, src, dst, 1, k, NULL); }
void piso_ggml_q4_0_to_float(const void *src, float *dst, int64_t k) { piso_ggml_dequantize_row(GGML_T_Q4_0, src, dst, k); }
void piso_ggml_q4_0_from_float(const float *src, void *dst, int64_t k) { piso_ggml_quantize_ref(GGML_T_Q4_0, src, dst, 1, k, NULL); }
void piso_ggml_q4_1_to_float(const void *src, float *dst, int64_t k) { piso_ggml_dequantize_row(GGML_T_Q4_1, src, dst, k); }
void piso_ggml_q4_1_from_float(const float *src, void *dst, int64_t k) { piso_ggml_quantize_ref(GGML_T_Q4_1, src, dst, 1, k, NULL); }
void piso_ggml_q5_0_to_float(const void *src, float *dst, int64_t k) { piso_ggml_dequantize_row(GGML_T_Q5_0, src, dst, k); }
void piso_ggml_q5_0_from_float(const float *src, void *dst, int64_t k) { piso_ggml_quantize_ref(GGML_T_Q5_0, src, dst, 1, k, NULL); }
void piso_ggml_q5_1_to_float(const void *src, float *dst, int64_t k) { piso_ggml_dequantize_row(GGML_T_Q5_1, src, dst, k); }
void piso_ggml_q5_1_from_float(const float *src, void *dst, int64_t k) { piso_ggml_quantize_ref(GGML_T_Q5_1, src, dst, 1, k, NULL); }
void piso_ggml_q4_k_to_float(const void *src, float *dst, int64_t k) { piso_ggml_dequantize_row(GGML_T_Q4_K, src, dst, k); }
void piso_ggml_q4_k_from_float(const float *src, void *dst, int64_t k) { piso_ggml_quantize_ref(GGML_T_Q4_K, src, dst, 1, k, NULL); }
void piso_ggml_q5_k_to_float(const void *src, float *dst, int64_t k) { piso_ggml_dequantize_row(GGML_T_Q5_K, src, dst, k); }
void piso_ggml_q5_k_from_float(const float *src, void *dst, int64_t k) { piso_ggml_quantize_ref(GGML_T_Q5_K, src, dst, 1, k, NULL); }
void piso_ggml_q6_k_to_float(const void *src, float *dst, int64_t k) { piso_ggml_dequantize_row(GGML_T_Q6_K, src, dst, k); }
void piso_ggml_q6_k_from_float(const float *src, void *dst, int64_t k) { piso_ggml_quantize_ref(GGML_T_Q6_K, src, dst, 1, k, NULL); }
