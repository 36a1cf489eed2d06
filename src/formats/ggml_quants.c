/* llama.cpp block formats: bit-exact packing/unpacking, dequantization, and llama.cpp's reference
 * scale rules (the `llamacpp-ref` baseline), written from shared/docs/llamacpp-formats.md §2-§3. */
#include "piso/ggml_quants.h"
#include "piso/gguf.h"
#include "formats/ggml_blocks.h"

#include <math.h>
#include <string.h>

#define GROUP_MAX_EPS 1e-15f

const int8_t piso_iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

/* Index of the table value nearest to v (ties to the upper one), as ggml's best_index_int8. */
int piso_iq4nl_index(float v) {
    const int8_t *t = piso_iq4nl_values;
    if (v <= t[0]) return 0;
    if (v >= t[15]) return 15;
    int lo = 0, hi = 15;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (v < t[mid]) hi = mid;
        else lo = mid;
    }
    return v - t[hi - 1] < t[hi] - v ? hi - 1 : hi;
}

/* ggml's nearest_int rounds half to even (the 1.5*2^23 trick); lrintf does the same. */
static inline int nearest_int(float f) { return (int)lrintf(f); }
static inline float h2f(uint16_t h) { return piso_fp16_to_fp32(h); }
static inline uint16_t f2h(float f) { return piso_fp32_to_fp16(f); }
static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* ---- legacy 32-blocks ------------------------------------------------------------------------ */

/* Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL: fp16 d at 0, then at the given offsets (0: absent) fp16 m and the
 * 32 fifth bits, and 16 bytes of nibbles: byte j = element j (low) | element j+16 (high). */
static void pack_nibbles32(const struct piso_blk32 *b, uint8_t *p, size_t at_m, size_t at_qh, size_t at_qs) {
    put16(p, b->d);
    if (at_m) put16(p + at_m, b->m);
    if (at_qh) {
        uint32_t qh = 0;
        for (int i = 0; i < 32; i++) qh |= (uint32_t)((b->q[i] >> 4) & 1) << i;
        for (int k = 0; k < 4; k++) p[at_qh + k] = (uint8_t)(qh >> (8 * k));
    }
    for (int j = 0; j < 16; j++) p[at_qs + j] = (uint8_t)((b->q[j] & 15) | (b->q[j + 16] & 15) << 4);
}

static void unpack_nibbles32(const uint8_t *p, struct piso_blk32 *b, size_t at_m, size_t at_qh, size_t at_qs) {
    b->d = get16(p);
    b->m = at_m ? get16(p + at_m) : 0;
    uint32_t qh = 0;
    if (at_qh) {
        const uint8_t *h = p + at_qh;
        qh = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24;
    }
    const uint8_t *qs = p + at_qs;
    for (int j = 0; j < 16; j++) {
        b->q[j] = (int16_t)((qs[j] & 15) | ((qh >> j) & 1) << 4);
        b->q[j + 16] = (int16_t)((qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4);
    }
}

void piso_ggml_pack_q8_0(const void *blk, void *dst) {
    const struct piso_blk32 *b = blk;
    uint8_t *p = dst;
    put16(p, b->d);
    for (int i = 0; i < 32; i++) p[offsetof(struct piso_block_q8_0, qs) + i] = (uint8_t)(int8_t)b->q[i];
}

void piso_ggml_unpack_q8_0(const void *src, void *blk) {
    const uint8_t *p = src;
    struct piso_blk32 *b = blk;
    b->d = get16(p);
    b->m = 0;
    for (int i = 0; i < 32; i++) b->q[i] = (int8_t)p[offsetof(struct piso_block_q8_0, qs) + i];
}

#define NIBBLES32_PACKERS(t, at_m, at_qh)                                                                      \
    void piso_ggml_pack_##t(const void *blk, void *dst) {                                                       \
        pack_nibbles32(blk, dst, at_m, at_qh, offsetof(struct piso_block_##t, qs));                              \
    }                                                                                                            \
    void piso_ggml_unpack_##t(const void *src, void *blk) {                                                     \
        unpack_nibbles32(src, blk, at_m, at_qh, offsetof(struct piso_block_##t, qs));                            \
    }
NIBBLES32_PACKERS(q4_0, 0, 0)
NIBBLES32_PACKERS(q4_1, offsetof(struct piso_block_q4_1, m), 0)
NIBBLES32_PACKERS(q5_0, 0, offsetof(struct piso_block_q5_0, qh))
NIBBLES32_PACKERS(q5_1, offsetof(struct piso_block_q5_1, m), offsetof(struct piso_block_q5_1, qh))
#undef NIBBLES32_PACKERS

/* Values of a decoded 32-block, with fp32 arithmetic as ggml does. */
static void blk32_values(const struct piso_ggml_traits *tr, const struct piso_blk32 *b, float *y) {
    const float d = h2f(b->d), m = h2f(b->m);
    if (tr->level_values)
        for (int i = 0; i < 32; i++) y[i] = d * (float)tr->level_values[b->q[i] & 15]; /* 4-bit index */
    else if (tr->has_min)
        for (int i = 0; i < 32; i++) y[i] = (float)b->q[i] * d + m;
    else
        for (int i = 0; i < 32; i++) y[i] = (float)(b->q[i] - tr->code_zero) * d;
}

void piso_pack_blk32(int type, const struct piso_blk32 *b, void *dst) { piso_ggml_traits(type)->pack(b, dst); }
void piso_unpack_blk32(int type, const void *src, struct piso_blk32 *b) { piso_ggml_traits(type)->unpack(src, b); }
void piso_blk32_to_float(int type, const struct piso_blk32 *b, float *y) { blk32_values(piso_ggml_traits(type), b, y); }

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

/* Q4_K/Q5_K share d, dmin and the scales at the start; at_qh (0: absent) holds Q5_K's fifth bits.
 * Nibbles: chunk c of 64 elements, byte l = element 64c+l (low) | element 64c+32+l (high). */
static void pack_k4(const struct piso_blk256 *b, uint8_t *p, size_t at_qh, size_t at_qs) {
    put16(p, b->d);
    put16(p + offsetof(struct piso_block_q4_K, dmin), b->dmin);
    pack_scales_k4(b->sc, b->mn, p + offsetof(struct piso_block_q4_K, scales));
    uint8_t *qs = p + at_qs;
    if (at_qh) {
        uint8_t *qh = p + at_qh;
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

static void unpack_k4(const uint8_t *p, struct piso_blk256 *b, size_t at_qh, size_t at_qs) {
    memset(b, 0, sizeof *b);
    b->d = get16(p);
    b->dmin = get16(p + offsetof(struct piso_block_q4_K, dmin));
    unpack_scales_k4(p + offsetof(struct piso_block_q4_K, scales), b->sc, b->mn);
    const uint8_t *qs = p + at_qs, *qh = at_qh ? p + at_qh : NULL;
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            b->q[64 * c + l] = (uint8_t)((qs[32 * c + l] & 15) | (qh ? ((qh[l] >> (2 * c)) & 1) << 4 : 0));
            b->q[64 * c + 32 + l] = (uint8_t)((qs[32 * c + l] >> 4) | (qh ? ((qh[l] >> (2 * c + 1)) & 1) << 4 : 0));
        }
}

_Static_assert(offsetof(struct piso_block_q4_K, scales) == offsetof(struct piso_block_q5_K, scales) &&
                   offsetof(struct piso_block_q4_K, dmin) == offsetof(struct piso_block_q5_K, dmin),
               "Q4_K and Q5_K share the scale fields");

void piso_ggml_pack_q4_K(const void *blk, void *dst) { pack_k4(blk, dst, 0, offsetof(struct piso_block_q4_K, qs)); }
void piso_ggml_unpack_q4_K(const void *src, void *blk) { unpack_k4(src, blk, 0, offsetof(struct piso_block_q4_K, qs)); }
void piso_ggml_pack_q5_K(const void *blk, void *dst) {
    pack_k4(blk, dst, offsetof(struct piso_block_q5_K, qh), offsetof(struct piso_block_q5_K, qs));
}
void piso_ggml_unpack_q5_K(const void *src, void *blk) {
    unpack_k4(src, blk, offsetof(struct piso_block_q5_K, qh), offsetof(struct piso_block_q5_K, qs));
}

/* Q6_K: low nibbles in ql, high 2 bits in qh, per half of 128 elements (llama.cpp's interleave). */
void piso_ggml_pack_q6_K(const void *blk, void *dst) {
    const struct piso_blk256 *b = blk;
    uint8_t *p = dst;
    uint8_t *ql = p + offsetof(struct piso_block_q6_K, ql), *qh = p + offsetof(struct piso_block_q6_K, qh);
    uint8_t *sc = p + offsetof(struct piso_block_q6_K, scales);
    memset(p, 0, offsetof(struct piso_block_q6_K, scales));
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            const uint8_t *q = b->q + 128 * h;
            uint8_t *L = ql + 64 * h, *H = qh + 32 * h;
            L[l] = (uint8_t)((q[l] & 15) | (q[l + 64] & 15) << 4);
            L[l + 32] = (uint8_t)((q[l + 32] & 15) | (q[l + 96] & 15) << 4);
            H[l] = (uint8_t)((q[l] >> 4) | (q[l + 32] >> 4) << 2 | (q[l + 64] >> 4) << 4 | (q[l + 96] >> 4) << 6);
        }
    for (int j = 0; j < 16; j++) sc[j] = (uint8_t)b->sc6[j];
    put16(p + offsetof(struct piso_block_q6_K, d), b->d);
}

void piso_ggml_unpack_q6_K(const void *src, void *blk) {
    const uint8_t *p = src;
    struct piso_blk256 *b = blk;
    memset(b, 0, sizeof *b);
    const uint8_t *ql = p + offsetof(struct piso_block_q6_K, ql), *qh = p + offsetof(struct piso_block_q6_K, qh);
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            const uint8_t *L = ql + 64 * h, *H = qh + 32 * h;
            uint8_t *q = b->q + 128 * h;
            q[l] = (uint8_t)((L[l] & 15) | ((H[l] >> 0) & 3) << 4);
            q[l + 32] = (uint8_t)((L[l + 32] & 15) | ((H[l] >> 2) & 3) << 4);
            q[l + 64] = (uint8_t)((L[l] >> 4) | ((H[l] >> 4) & 3) << 4);
            q[l + 96] = (uint8_t)((L[l + 32] >> 4) | ((H[l] >> 6) & 3) << 4);
        }
    for (int j = 0; j < 16; j++) b->sc6[j] = (int8_t)p[offsetof(struct piso_block_q6_K, scales) + j];
    b->d = get16(p + offsetof(struct piso_block_q6_K, d));
}

/* Values of a decoded super-block: x = d·sc·q − dmin·mn per sub-block (has_min), else
 * x = d·sc6·(q − code_zero) per sub-block. */
static void blk256_values(const struct piso_ggml_traits *tr, const struct piso_blk256 *b, float *y) {
    const float d = h2f(b->d);
    if (!tr->has_min) {
        for (int i = 0; i < 256; i++) y[i] = d * (float)b->sc6[i / tr->sub_size] * (float)((int)b->q[i] - tr->code_zero);
        return;
    }
    const float dmin = h2f(b->dmin);
    for (int j = 0; j < 8; j++) {
        const float d1 = d * (float)b->sc[j], m1 = dmin * (float)b->mn[j];
        for (int l = 0; l < 32; l++) y[32 * j + l] = d1 * (float)b->q[32 * j + l] - m1;
    }
}

void piso_pack_blk256(int type, const struct piso_blk256 *b, void *dst) { piso_ggml_traits(type)->pack(b, dst); }
void piso_unpack_blk256(int type, const void *src, struct piso_blk256 *b) { piso_ggml_traits(type)->unpack(src, b); }
void piso_blk256_to_float(int type, const struct piso_blk256 *b, float *y) { blk256_values(piso_ggml_traits(type), b, y); }

void piso_ggml_dequantize_row(int type, const void *src, float *dst, int64_t k) {
    const struct piso_ggml_traits *tr = piso_ggml_traits(type);
    const int be = tr->blck_size, bb = tr->type_size;
    const uint8_t *p = src;
    for (int64_t i = 0; i < k / be; i++, p += bb) {
        if (be == PISO_QK) {
            struct piso_blk32 b;
            tr->unpack(p, &b);
            blk32_values(tr, &b, dst + i * be);
        } else {
            struct piso_blk256 b;
            tr->unpack(p, &b);
            blk256_values(tr, &b, dst + i * be);
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

/* One block of llama.cpp's rule: x the block, qw its imatrix entries (NULL: none), sigma2 the
 * row's mean square (PISO_IMAT_ROW_SIGMA types), blk the decoded block to fill. */
typedef void block_ref_fn(const struct piso_ggml_traits *tr, const float *x, const float *qw, float sigma2, void *blk);

/* Q8_0: d = amax/127, q = round(x/d); llama.cpp ignores the imatrix. */
static void ref_q8_0(const struct piso_ggml_traits *tr, const float *x, const float *qw, float sigma2, void *blk) {
    (void)tr, (void)qw, (void)sigma2;
    struct piso_blk32 *b = blk;
    memset(b, 0, sizeof *b);
    float amax = 0;
    for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[i]));
    const float d = amax / 127, id = d ? 1.0f / d : 0.0f;
    b->d = f2h(d);
    for (int i = 0; i < 32; i++) b->q[i] = (int16_t)roundf(x[i] * id);
}

/* IQ4_NL (quantize_iq4_nl, the default path): 16 candidate scales around max/±127 with the weights
 * x² (or h·sqrt(σ² + x²), σ² = 2·mean square of the block), then levels for the fp32 scale. */
static void ref_iq4_nl(const struct piso_ggml_traits *tr, const float *x, const float *qw, float sigma2_row, void *blk) {
    (void)sigma2_row;
    struct piso_blk32 *b = blk;
    memset(b, 0, sizeof *b);
    const int8_t *v = tr->level_values;
    float w[32], sigma2 = 0;
    for (int j = 0; j < 32; j++) sigma2 += x[j] * x[j];
    sigma2 *= 2.f / 32;
    for (int j = 0; j < 32; j++) w[j] = qw ? qw[j] * sqrtf(sigma2 + x[j] * x[j]) : x[j] * x[j];
    float amax = 0, max = 0;
    for (int j = 0; j < 32; j++)
        if (fabsf(x[j]) > amax) amax = fabsf(x[j]), max = x[j];
    float d = 0;
    if (amax >= GROUP_MAX_EPS) {
        d = -max / v[0];
        float id = 1 / d, sumqx = 0, sumq2 = 0;
        for (int j = 0; j < 32; j++) {
            float q = v[piso_iq4nl_index(id * x[j])];
            sumqx += w[j] * q * x[j];
            sumq2 += w[j] * q * q;
        }
        d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
        float best = d * sumqx;
        for (int itry = -7; itry <= 7; ++itry) {
            id = (itry + v[0]) / max;
            sumqx = sumq2 = 0;
            for (int j = 0; j < 32; j++) {
                float q = v[piso_iq4nl_index(id * x[j])];
                sumqx += w[j] * q * x[j];
                sumq2 += w[j] * q * q;
            }
            if (sumq2 > 0 && sumqx * sumqx > best * sumq2) d = sumqx / sumq2, best = d * sumqx;
        }
    }
    b->d = f2h(d);
    const float id = d ? 1 / d : 0;
    for (int j = 0; j < 32; j++) b->q[j] = (int16_t)piso_iq4nl_index(id * x[j]);
}

/* Importance of the legacy rules: h·sqrt(σ² + x²). */
static void legacy_weights(const float *x, const float *qw, float sigma2, float *w) {
    for (int i = 0; i < 32; i++) w[i] = qw[i] * sqrtf(sigma2 + x[i] * x[i]);
}

/* Q4_0, Q5_0: levels [-nmax/2, nmax/2 - 1], nmax = the number of levels. */
static void ref_sym(const struct piso_ggml_traits *tr, const float *x, const float *qw, float sigma2, void *blk) {
    struct piso_blk32 *b = blk;
    memset(b, 0, sizeof *b);
    const int nmax = tr->level_max - tr->level_min + 1;
    if (qw) {
        uint8_t L[32];
        float w[32];
        legacy_weights(x, qw, sigma2, w);
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
}

/* Q4_1, Q5_1: levels [0, nmax - 1] and a min, nmax = the number of levels. */
static void ref_affine(const struct piso_ggml_traits *tr, const float *x, const float *qw, float sigma2, void *blk) {
    struct piso_blk32 *b = blk;
    memset(b, 0, sizeof *b);
    const int nmax = tr->level_max - tr->level_min + 1;
    if (qw) {
        uint8_t L[32], Laux[32];
        float w[32], min;
        legacy_weights(x, qw, sigma2, w);
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

/* Q6_K: 16 sub-blocks of 16, each by make_qx_quants, then the 8-bit sub-scales against d. */
static void ref_q6_K(const struct piso_ggml_traits *tr, const float *x, const float *qw, float sigma2, void *blk) {
    (void)tr, (void)sigma2;
    struct piso_blk256 *b = blk;
    memset(b, 0, sizeof *b);
    uint8_t L[256];
    float scales[16];
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
        for (int ii = 0; ii < 16; ii++) L[16 * j + ii] = (uint8_t)(clampi(nearest_int(x[16 * j + ii] / d), -32, 31) + 32);
    }
    memcpy(b->q, L, 256);
}

/* Q4_K/Q5_K: 8 sub-blocks by make_qkx2_quants (the search rmin, rdelta, nstep without an imatrix)
 * or make_qkx3_quants (with one), then 6-bit sub-scales and mins against the fp16 d and dmin. */
static void ref_k4(const struct piso_ggml_traits *tr, const float *x, const float *qw, struct piso_blk256 *b,
                   float rmin, float rdelta, int nstep) {
    memset(b, 0, sizeof *b);
    const int nmax = tr->level_max;
    uint8_t L[256], Laux[32];
    float w[32], sw[8], scales[8], mins[8];
    float sum_x2 = 0;
    for (int i = 0; i < 256; i++) sum_x2 += x[i] * x[i];
    const float sigma2 = 2 * sum_x2 / 256;
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
            scales[j] = make_qkx_quants(32, nmax, xj, w, L + 32 * j, &mins[j], Laux, rmin, rdelta, nstep, 0);
        }
        max_scale = fmaxf(max_scale, scales[j]);
        max_min = fmaxf(max_min, mins[j]);
    }
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

static void ref_q4_K(const struct piso_ggml_traits *tr, const float *x, const float *qw, float sigma2, void *blk) {
    (void)sigma2;
    ref_k4(tr, x, qw, blk, -1.f, 0.1f, 20);
}

static void ref_q5_K(const struct piso_ggml_traits *tr, const float *x, const float *qw, float sigma2, void *blk) {
    (void)sigma2;
    ref_k4(tr, x, qw, blk, -0.5f, 0.1f, 15);
}

/* One row of n values (a multiple of the block size) by the block rule, packed. */
static void quantize_row_ref(int type, block_ref_fn *quantize_block, const float *x, void *dst, int64_t n,
                             const float *imatrix) {
    const struct piso_ggml_traits *tr = piso_ggml_traits(type);
    const int be = tr->blck_size, bb = tr->type_size;
    if (tr->imatrix_rule == PISO_IMAT_UNUSED) imatrix = NULL;
    float sigma2 = 0; /* the row's mean square, for the legacy imatrix weights */
    if (imatrix && tr->imatrix_rule == PISO_IMAT_ROW_SIGMA) {
        float s = 0; /* fp32 in order, as llama.cpp sums it: the baseline stays bit-exact */
        for (int64_t i = 0; i < n; i++) s += x[i] * x[i];
        sigma2 = s / (float)n;
    }
    union {
        struct piso_blk32 b32;
        struct piso_blk256 b256;
    } blk;
    for (int64_t ib = 0; ib < n / be; ib++) {
        quantize_block(tr, x + ib * be, imatrix ? imatrix + ib * be : NULL, sigma2, &blk);
        tr->pack(&blk, (uint8_t *)dst + ib * bb);
    }
}

size_t piso_ggml_quantize_ref(int type, const float *x, void *dst, int64_t nrows, int64_t n_per_row,
                              const float *imatrix) {
    const struct piso_ggml_traits *tr = piso_ggml_traits(type);
    const size_t row_bytes = piso_ggml_row_size(type, n_per_row);
#pragma omp parallel for schedule(dynamic, 4)
    for (int64_t r = 0; r < nrows; r++)
        tr->quantize_ref(x + r * n_per_row, (uint8_t *)dst + (size_t)r * row_bytes, n_per_row, imatrix);
    return (size_t)nrows * row_bytes;
}

/* ---- the traits table's entry points, per block type ----------------------------------------- */
#define ROW_ENTRY_POINTS(t, TYPE, quantize_block)                                                              \
    void piso_ggml_dequantize_row_##t(const void *src, float *dst, int64_t k) {                                 \
        piso_ggml_dequantize_row(TYPE, src, dst, k);                                                             \
    }                                                                                                            \
    void piso_ggml_quantize_row_##t##_ref(const float *x, void *dst, int64_t k, const float *imatrix) {         \
        quantize_row_ref(TYPE, quantize_block, x, dst, k, imatrix);                                              \
    }                                                                                                            \
    void piso_ggml_from_float_##t(const float *x, void *dst, int64_t k) { quantize_row_ref(TYPE, quantize_block, x, dst, k, NULL); }
ROW_ENTRY_POINTS(q8_0, GGML_T_Q8_0, ref_q8_0)
ROW_ENTRY_POINTS(q4_0, GGML_T_Q4_0, ref_sym)
ROW_ENTRY_POINTS(q4_1, GGML_T_Q4_1, ref_affine)
ROW_ENTRY_POINTS(q5_0, GGML_T_Q5_0, ref_sym)
ROW_ENTRY_POINTS(q5_1, GGML_T_Q5_1, ref_affine)
ROW_ENTRY_POINTS(iq4_nl, GGML_T_IQ4_NL, ref_iq4_nl)
ROW_ENTRY_POINTS(q4_K, GGML_T_Q4_K, ref_q4_K)
ROW_ENTRY_POINTS(q5_K, GGML_T_Q5_K, ref_q5_K)
ROW_ENTRY_POINTS(q6_K, GGML_T_Q6_K, ref_q6_K)
#undef ROW_ENTRY_POINTS
