/* llama.cpp block formats: bit-exact packing/unpacking, dequantization, and llama.cpp's reference
 * scale rules (the `llamacpp-ref` baseline), written from shared/docs/llamacpp-formats.md §2-§3. */
#include "piso/ggml_quants.h"
#include "piso/gguf.h"
#include "formats/ggml_blocks.h"

#include <math.h>
#include <string.h>

#define GROUP_MAX_EPS 1e-15f

const int8_t piso_iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
const int8_t piso_mxfp4_values[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

/* 2^(e-128): the E8M0 scale with the ½ of the doubled E2M1 table folded in. e < 2 gives fp32
 * subnormals (2^-128, 2^-127), written as bits as ggml does. */
float piso_e8m0_half(uint8_t e) {
    const uint32_t bits = e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* UE4M3 (4 exponent bits, bias 7, 3 mantissa bits, no sign) times ½; 0 and 0x7F (NaN) decode to 0. */
float piso_ue4m3_to_fp32(uint8_t c) {
    if (c == 0 || c == 0x7F) return 0.0f;
    const int e = (c >> 3) & 15, m = c & 7;
    const float raw = e == 0 ? ldexpf((float)m, -9) : ldexpf(1.0f + (float)m / 8.0f, e - 7);
    return raw * 0.5f;
}

/* llama.cpp's encoder: the fp32 mantissa's top 3 bits rounded half up on the 4th, subnormals as
 * (int)(x·512 + ½), inputs above 448 clamped, codes saturating at 0x7E; x ≤ 0 or NaN → 0. */
uint8_t piso_fp32_to_ue4m3(float x) {
    if (!(x > 0.0f)) return 0;
    if (x > 448.0f) x = 448.0f;
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    int e = (int)((bits >> 23) & 0xFF) - 127 + 7;
    if (e <= 0) {
        int m = (int)(x * 512.0f + 0.5f);
        return (uint8_t)(m > 7 ? 7 : m < 1 ? 0 : m);
    }
    if (e >= 15) return 0x7E;
    int m = (int)((bits >> 20) & 7) + (int)((bits >> 19) & 1);
    if (m > 7) {
        m = 0;
        if (++e >= 15) return 0x7E;
    }
    return (uint8_t)(e << 3 | m);
}

/* Index of the E2M1 value nearest x for scale d (first index wins a tie, as ggml's best_index_mxfp4). */
static int mxfp4_index(float x, float d) {
    int best = 0;
    float err = fabsf((float)piso_mxfp4_values[0] * d - x);
    for (int i = 1; i < 16; i++) {
        const float e = fabsf((float)piso_mxfp4_values[i] * d - x);
        if (e < err) err = e, best = i;
    }
    return best;
}

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

/* MXFP4: the E8M0 byte, then 16 bytes in the nibble layout. */
void piso_ggml_pack_mxfp4(const void *blk, void *dst) {
    const struct piso_blk32 *b = blk;
    uint8_t *p = dst;
    p[0] = (uint8_t)b->d;
    for (int j = 0; j < 16; j++) p[1 + j] = (uint8_t)((b->q[j] & 15) | (b->q[j + 16] & 15) << 4);
}

void piso_ggml_unpack_mxfp4(const void *src, void *blk) {
    const uint8_t *p = src;
    struct piso_blk32 *b = blk;
    b->d = p[0], b->m = 0;
    for (int j = 0; j < 16; j++) b->q[j] = (int16_t)(p[1 + j] & 15), b->q[j + 16] = (int16_t)(p[1 + j] >> 4);
}

/* NVFP4: four UE4M3 bytes, then per sub-block s 8 bytes: element j (low) | element j+8 (high). */
void piso_pack_blk64(const struct piso_blk64 *b, void *dst) {
    uint8_t *p = dst;
    memcpy(p, b->d, 4);
    for (int s = 0; s < 4; s++)
        for (int j = 0; j < 8; j++) p[4 + 8 * s + j] = (uint8_t)((b->q[16 * s + j] & 15) | (b->q[16 * s + 8 + j] & 15) << 4);
}

void piso_unpack_blk64(const void *src, struct piso_blk64 *b) {
    const uint8_t *p = src;
    memcpy(b->d, p, 4);
    for (int s = 0; s < 4; s++)
        for (int j = 0; j < 8; j++) b->q[16 * s + j] = p[4 + 8 * s + j] & 15, b->q[16 * s + 8 + j] = p[4 + 8 * s + j] >> 4;
}

void piso_ggml_pack_nvfp4(const void *blk, void *dst) { piso_pack_blk64(blk, dst); }
void piso_ggml_unpack_nvfp4(const void *src, void *blk) { piso_unpack_blk64(src, blk); }

void piso_blk64_to_float(const struct piso_blk64 *b, float *y) {
    for (int s = 0; s < 4; s++) {
        const float d = piso_ue4m3_to_fp32(b->d[s]);
        for (int j = 0; j < 16; j++) y[16 * s + j] = (float)piso_mxfp4_values[b->q[16 * s + j] & 15] * d;
    }
}

/* Values of a decoded 32-block, with fp32 arithmetic as ggml does. */
static void blk32_values(const struct piso_ggml_traits *tr, const struct piso_blk32 *b, float *y) {
    if (tr->scale_kind == PISO_SCALE_E8M0) {
        const float d = piso_e8m0_half((uint8_t)b->d);
        for (int i = 0; i < 32; i++) y[i] = (float)tr->level_values[b->q[i] & 15] * d;
        return;
    }
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

/* An unpacked 256-element block, zeroed (fields a format does not use stay 0). */
static struct piso_blk256 *blk256_clear(void *blk) { return memset(blk, 0, sizeof(struct piso_blk256)); }

void piso_ggml_unpack_q6_K(const void *src, void *blk) {
    const uint8_t *p = src;
    struct piso_blk256 *b = blk256_clear(blk);
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

/* Q2_K/Q3_K 2-bit planes: for half h and l < 32, byte 32h+l holds elements 128h+l, +32, +64, +96
 * in bits 0-1, 2-3, 4-5, 6-7. */
static void pack_planes2(const uint8_t *q, uint8_t *qs) {
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            const uint8_t *e = q + 128 * h + l;
            qs[32 * h + l] = (uint8_t)((e[0] & 3) | (e[32] & 3) << 2 | (e[64] & 3) << 4 | (e[96] & 3) << 6);
        }
}

static void unpack_planes2(const uint8_t *qs, uint8_t *q) {
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++)
            for (int k = 0; k < 4; k++) q[128 * h + 32 * k + l] = (qs[32 * h + l] >> (2 * k)) & 3;
}

/* Q2_K: scales[j] = scale (low nibble) | min (high nibble) of sub-block j, the planes, d, dmin. */
void piso_ggml_pack_q2_K(const void *blk, void *dst) {
    const struct piso_blk256 *b = blk;
    uint8_t *p = dst;
    for (int j = 0; j < 16; j++) p[offsetof(struct piso_block_q2_K, scales) + j] = (uint8_t)((b->sc16[j] & 15) | (b->mn16[j] & 15) << 4);
    pack_planes2(b->q, p + offsetof(struct piso_block_q2_K, qs));
    put16(p + offsetof(struct piso_block_q2_K, d), b->d);
    put16(p + offsetof(struct piso_block_q2_K, dmin), b->dmin);
}

void piso_ggml_unpack_q2_K(const void *src, void *blk) {
    const uint8_t *p = src;
    struct piso_blk256 *b = blk256_clear(blk);
    for (int j = 0; j < 16; j++) {
        const uint8_t v = p[offsetof(struct piso_block_q2_K, scales) + j];
        b->sc16[j] = v & 15, b->mn16[j] = v >> 4;
    }
    unpack_planes2(p + offsetof(struct piso_block_q2_K, qs), b->q);
    b->d = get16(p + offsetof(struct piso_block_q2_K, d));
    b->dmin = get16(p + offsetof(struct piso_block_q2_K, dmin));
}

/* Q3_K: the high bit of element e in hmask[e % 32] at bit e / 32; the low two bits in the planes;
 * the 6-bit scales s6 = sc6 + 32: low nibbles in bytes 0-7 (sub-blocks 0-7 low, 8-15 high nibble),
 * the top two bits of sub-block j in byte 8 + j % 4 at bits 2·(j / 4). */
void piso_ggml_pack_q3_K(const void *blk, void *dst) {
    const struct piso_blk256 *b = blk;
    uint8_t *p = dst;
    uint8_t *hm = p + offsetof(struct piso_block_q3_K, hmask), *sc = p + offsetof(struct piso_block_q3_K, scales);
    uint8_t low[256];
    memset(hm, 0, 32);
    for (int e = 0; e < 256; e++) {
        hm[e % 32] |= (uint8_t)(((b->q[e] >> 2) & 1) << (e / 32));
        low[e] = b->q[e] & 3;
    }
    pack_planes2(low, p + offsetof(struct piso_block_q3_K, qs));
    memset(sc, 0, 12);
    for (int j = 0; j < 16; j++) {
        const int s6 = (b->sc6[j] + 32) & 63;
        sc[j % 8] |= (uint8_t)((s6 & 15) << (j < 8 ? 0 : 4));
        sc[8 + j % 4] |= (uint8_t)((s6 >> 4) << (2 * (j / 4)));
    }
    put16(p + offsetof(struct piso_block_q3_K, d), b->d);
}

void piso_ggml_unpack_q3_K(const void *src, void *blk) {
    const uint8_t *p = src;
    struct piso_blk256 *b = blk256_clear(blk);
    const uint8_t *hm = p + offsetof(struct piso_block_q3_K, hmask), *sc = p + offsetof(struct piso_block_q3_K, scales);
    unpack_planes2(p + offsetof(struct piso_block_q3_K, qs), b->q);
    for (int e = 0; e < 256; e++) b->q[e] |= (uint8_t)(((hm[e % 32] >> (e / 32)) & 1) << 2);
    for (int j = 0; j < 16; j++) {
        const int lo = j < 8 ? sc[j] & 15 : sc[j - 8] >> 4, hi = (sc[8 + j % 4] >> (2 * (j / 4))) & 3;
        b->sc6[j] = (int8_t)((lo | hi << 4) - 32);
    }
    b->d = get16(p + offsetof(struct piso_block_q3_K, d));
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
    if (tr->sub_size == 16) { /* Q2_K */
        for (int j = 0; j < 16; j++) {
            const float d1 = d * (float)b->sc16[j], m1 = dmin * (float)b->mn16[j];
            for (int l = 0; l < 16; l++) y[16 * j + l] = d1 * (float)b->q[16 * j + l] - m1;
        }
        return;
    }
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
        if (be == PISO_QK_NVFP4) {
            struct piso_blk64 b;
            piso_unpack_blk64(p, &b);
            piso_blk64_to_float(&b, dst + i * be);
        } else if (be == PISO_QK) {
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

/* The element of largest magnitude, with its sign (the first one on ties), or 0. */
static float signed_absmax(int n, const float *x) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) amax = ax, max = x[i];
    }
    return max;
}

/* Symmetric levels [-nmax, nmax-1] stored +nmax; 19 candidate inverse scales around -nmax/max. */
static float make_qx_quants(int n, int nmax, const float *x, uint8_t *L, int rmse_type, const float *qw) {
    float max = signed_absmax(n, x);
    if (fabsf(max) < GROUP_MAX_EPS) {
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
    if (max < GROUP_MAX_EPS) {
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
    struct piso_blk256 *b = blk256_clear(blk);
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

/* Q3_K's reference search (make_q3_quants with do_rmse): RTN at -nmax/max, then up to five passes
 * of coordinate descent on the levels with weights x², each element re-rounded against the
 * least-squares scale of the others. L receives levels + nmax (0 for an all-zero block). */
static float make_q3_quants(int n, int nmax, const float *x, int8_t *L) {
    float max = signed_absmax(n, x);
    if (fabsf(max) < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    const float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)l;
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int itry = 0; itry < 5; ++itry) {
        int n_changed = 0;
        for (int i = 0; i < n; i++) {
            float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * L[i];
            if (slx > 0) {
                float sl2 = suml2 - w * L[i] * L[i];
                int new_l = clampi(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
                if (new_l != L[i]) {
                    slx += w * x[i] * new_l;
                    sl2 += w * new_l * new_l;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        ++n_changed;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < n; i++) L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* Requantizes a Q2_K/Q3_K super-block by RTN against the final fp16 scales; sub-blocks whose scale
 * is zero keep the levels of the search (as llama.cpp). L: codes (Q2_K 0..3, Q3_K level + 4). */
static void requant_k16(const float *x, struct piso_blk256 *b, int q3, uint8_t *L) {
    const float d = h2f(b->d), dmin = h2f(b->dmin);
    for (int j = 0; j < 16; j++) {
        if (q3) {
            const float dd = d * (float)b->sc6[j];
            if (!dd) continue;
            for (int l = 0; l < 16; l++) L[16 * j + l] = (uint8_t)(clampi(nearest_int(x[16 * j + l] / dd), -4, 3) + 4);
        } else {
            const float dd = d * (float)b->sc16[j];
            if (!dd) continue;
            const float dm = dmin * (float)b->mn16[j];
            for (int l = 0; l < 16; l++) L[16 * j + l] = (uint8_t)clampi(nearest_int((x[16 * j + l] + dm) / dd), 0, 3);
        }
    }
    memcpy(b->q, L, 256);
}

/* Q2_K: 16 sub-blocks of 16 with levels 0..3 and a min. Without an imatrix make_qkx2_quants with
 * weights |x| and the absolute error (use_mad), 4-bit scales and mins by rounding against their
 * maxima; with one make_qkx3_quants with h·sqrt(σ² + x²) (σ² the super-block's mean square) and
 * the 4-bit scales and mins by make_qp_quants weighted by each sub-block's total weight. */
static void ref_q2_K(const struct piso_ggml_traits *tr, const float *x, const float *qw, float sigma2_row, void *blk) {
    (void)tr, (void)sigma2_row;
    struct piso_blk256 *b = blk256_clear(blk);
    uint8_t L[256], Laux[16], bytes[16];
    float w[16], scales[16], mins[16], sw[16];
    if (qw) {
        float sumx2 = 0;
        for (int j = 0; j < 256; j++) sumx2 += x[j] * x[j];
        const float sigma2 = sumx2 / 256;
        for (int j = 0; j < 16; j++) {
            sw[j] = 0;
            for (int l = 0; l < 16; l++) w[l] = qw[16 * j + l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
            for (int l = 0; l < 16; l++) sw[j] += w[l];
            scales[j] = make_qkx_quants(16, 3, x + 16 * j, w, L + 16 * j, &mins[j], Laux, -0.9f, 0.05f, 36, 0);
        }
        uint8_t Ls[16], Lm[16];
        const float dm = make_qp_quants(16, 15, scales, Ls, sw), mm = make_qp_quants(16, 15, mins, Lm, sw);
        b->d = f2h(dm), b->dmin = f2h(mm);
        for (int j = 0; j < 16; j++) bytes[j] = (uint8_t)(Ls[j] | Lm[j] << 4);
    } else {
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < 16; j++) {
            for (int l = 0; l < 16; l++) w[l] = fabsf(x[16 * j + l]);
            scales[j] = make_qkx_quants(16, 3, x + 16 * j, w, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, 1);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        memset(bytes, 0, sizeof bytes);
        if (max_scale > 0) {
            const float iscale = 15.f / max_scale;
            for (int j = 0; j < 16; j++) bytes[j] = (uint8_t)nearest_int(iscale * scales[j]);
            b->d = f2h(max_scale / 15.f);
        }
        if (max_min > 0) {
            const float iscale = 15.f / max_min;
            for (int j = 0; j < 16; j++) bytes[j] |= (uint8_t)(nearest_int(iscale * mins[j]) << 4);
            b->dmin = f2h(max_min / 15.f);
        }
    }
    for (int j = 0; j < 16; j++) b->sc16[j] = bytes[j] & 15, b->mn16[j] = bytes[j] >> 4;
    requant_k16(x, b, 0, L);
}

/* Q3_K: 16 sub-blocks of 16 with levels -4..3. Without an imatrix make_q3_quants and the 6-bit
 * signed scales by rounding against -32/max; with one make_qx_quants with h·sqrt(σ² + x²) (σ²
 * twice the super-block's mean square) and the scales by make_qx_quants(16, 32) weighted by each
 * sub-block's total weight. */
static void ref_q3_K(const struct piso_ggml_traits *tr, const float *x, const float *qw, float sigma2_row, void *blk) {
    (void)tr, (void)sigma2_row;
    struct piso_blk256 *b = blk256_clear(blk);
    uint8_t L[256];
    float scales[16];
    if (qw) {
        float sumx2 = 0, w[16], sw[16];
        for (int j = 0; j < 256; j++) sumx2 += x[j] * x[j];
        const float sigma2 = 2 * sumx2 / 256;
        for (int j = 0; j < 16; j++) {
            for (int l = 0; l < 16; l++) w[l] = qw[16 * j + l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
            float sumw = 0;
            for (int l = 0; l < 16; l++) sumw += w[l];
            sw[j] = sumw;
            scales[j] = make_qx_quants(16, 4, x + 16 * j, L + 16 * j, 1, w);
        }
        uint8_t Ls[16];
        const float d_block = make_qx_quants(16, 32, scales, Ls, 1, sw);
        for (int j = 0; j < 16; j++) b->sc6[j] = (int8_t)((Ls[j] & 63) - 32);
        b->d = f2h(d_block);
    } else {
        int8_t L8[256];
        float max_scale = 0, amax = 0;
        for (int j = 0; j < 16; j++) {
            scales[j] = make_q3_quants(16, 4, x + 16 * j, L8 + 16 * j);
            if (fabsf(scales[j]) > amax) amax = fabsf(scales[j]), max_scale = scales[j];
        }
        for (int i = 0; i < 256; i++) L[i] = (uint8_t)L8[i];
        for (int j = 0; j < 16; j++) b->sc6[j] = -32; /* stored 0 */
        if (max_scale != 0.0f) {
            const float iscale = -32.f / max_scale;
            for (int j = 0; j < 16; j++) b->sc6[j] = (int8_t)clampi((int8_t)nearest_int(iscale * scales[j]), -32, 31);
            b->d = f2h(1 / iscale);
        }
    }
    requant_k16(x, b, 1, L);
}

/* MXFP4 (quantize_row_mxfp4_ref; llama.cpp ignores the imatrix): e = floor(log2 amax) − 2 + 127,
 * then the nearest E2M1 value of every element. */
static void ref_mxfp4(const struct piso_ggml_traits *tr, const float *x, const float *qw, float sigma2, void *blk) {
    (void)tr, (void)qw, (void)sigma2;
    struct piso_blk32 *b = blk;
    memset(b, 0, sizeof *b);
    float amax = 0;
    for (int j = 0; j < 32; j++)
        if (amax < fabsf(x[j])) amax = fabsf(x[j]);
    const uint8_t e = amax > 0.0f ? (uint8_t)(int)(floorf(log2f(amax)) - 2 + 127) : 0;
    const float d = piso_e8m0_half(e);
    b->d = e;
    for (int j = 0; j < 32; j++) b->q[j] = (int16_t)mxfp4_index(x[j], d);
}

/* NVFP4 (quantize_row_nvfp4_ref; the imatrix is ignored): per 16 elements the UE4M3 code of
 * amax/6, then the nearest E2M1 value of every element. */
static void ref_nvfp4(const struct piso_ggml_traits *tr, const float *x, const float *qw, float sigma2, void *blk) {
    (void)tr, (void)qw, (void)sigma2;
    struct piso_blk64 *b = blk;
    for (int s = 0; s < 4; s++) {
        const float *xb = x + 16 * s;
        float amax = 0;
        for (int j = 0; j < 16; j++)
            if (amax < fabsf(xb[j])) amax = fabsf(xb[j]);
        b->d[s] = piso_fp32_to_ue4m3(amax / 6.0f);
        const float d = piso_ue4m3_to_fp32(b->d[s]);
        for (int j = 0; j < 16; j++) b->q[16 * s + j] = (uint8_t)mxfp4_index(xb[j], d);
    }
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
        struct piso_blk64 b64;
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
ROW_ENTRY_POINTS(q2_K, GGML_T_Q2_K, ref_q2_K)
ROW_ENTRY_POINTS(q3_K, GGML_T_Q3_K, ref_q3_K)
ROW_ENTRY_POINTS(mxfp4, GGML_T_MXFP4, ref_mxfp4)
ROW_ENTRY_POINTS(nvfp4, GGML_T_NVFP4, ref_nvfp4)
#undef ROW_ENTRY_POINTS
