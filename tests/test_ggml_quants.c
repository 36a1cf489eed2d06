/* Block formats: hand-packed blocks dequantized against the formulas of llamacpp-formats.md §2
 * (worked out here byte by byte), pack/unpack round trips, and llama.cpp's reference rules where
 * they have a closed form (Q8_0, Q4_0, Q4_1). */
#include "harness.h"
#include "piso/ggml_quants.h"
#include "piso/gguf.h"

#include <stdint.h>

static uint32_t rng = 12345;
static float frand(void) { /* uniform in [-1, 1) */
    rng = rng * 1664525u + 1013904223u;
    return (float)((rng >> 8) & 0xffffff) / 8388608.0f - 1.0f;
}

/* fp16 constants written as bits: 0x3800 = 0.5, 0x3c00 = 1, 0x3400 = 0.25, 0x4000 = 2, 0xb800 = -0.5 */

static void test_sizes(void) {
    /* gguf-py GGML_QUANT_SIZES (block, bytes) */
    const int t[8] = {GGML_T_Q8_0, GGML_T_Q4_0, GGML_T_Q4_1, GGML_T_Q5_0, GGML_T_Q5_1, GGML_T_Q4_K, GGML_T_Q5_K, GGML_T_Q6_K};
    const int blk[8] = {32, 32, 32, 32, 32, 256, 256, 256}, bytes[8] = {34, 18, 20, 22, 24, 144, 176, 210};
    for (int i = 0; i < 8; i++) {
        CHECK(piso_ggml_block_elems(t[i]) == blk[i], "block size of type %d", t[i]);
        CHECK(piso_ggml_block_bytes(t[i]) == bytes[i], "bytes of type %d", t[i]);
    }
}

static void test_legacy_hand(void) {
    uint8_t b[34];
    float y[32];
    /* Q8_0: d = 0.5, q_i = i - 16 */
    b[0] = 0x00, b[1] = 0x38;
    for (int i = 0; i < 32; i++) b[2 + i] = (uint8_t)(int8_t)(i - 16);
    piso_ggml_dequantize_row(GGML_T_Q8_0, b, y, 32);
    int bad = 0;
    for (int i = 0; i < 32; i++) bad += y[i] != 0.5f * (i - 16);
    CHECK(bad == 0, "Q8_0 hand block: %d wrong", bad);

    /* Q4_0: d = 0.25; byte j = j (low nibble, element j) | (15-j) << 4 (element j+16) */
    b[0] = 0x00, b[1] = 0x34;
    for (int j = 0; j < 16; j++) b[2 + j] = (uint8_t)(j | (15 - j) << 4);
    piso_ggml_dequantize_row(GGML_T_Q4_0, b, y, 32);
    bad = 0;
    for (int j = 0; j < 16; j++) bad += y[j] != 0.25f * (j - 8), bad += y[j + 16] != 0.25f * (15 - j - 8);
    CHECK(bad == 0, "Q4_0 hand block: %d wrong", bad);

    /* Q4_1: d = 2, m = -0.5, same nibbles: x = 2q - 0.5 */
    b[0] = 0x00, b[1] = 0x40, b[2] = 0x00, b[3] = 0xb8;
    for (int j = 0; j < 16; j++) b[4 + j] = (uint8_t)(j | (15 - j) << 4);
    piso_ggml_dequantize_row(GGML_T_Q4_1, b, y, 32);
    bad = 0;
    for (int j = 0; j < 16; j++) bad += y[j] != 2.0f * j - 0.5f, bad += y[j + 16] != 2.0f * (15 - j) - 0.5f;
    CHECK(bad == 0, "Q4_1 hand block: %d wrong", bad);

    /* Q5_0: d = 1; qh = 0xF000000F little-endian: elements 0-3 and 28-31 get bit 4 */
    b[0] = 0x00, b[1] = 0x3c;
    b[2] = 0x0f, b[3] = 0x00, b[4] = 0x00, b[5] = 0xf0;
    for (int j = 0; j < 16; j++) b[6 + j] = (uint8_t)(j | (15 - j) << 4);
    piso_ggml_dequantize_row(GGML_T_Q5_0, b, y, 32);
    bad = 0;
    for (int i = 0; i < 32; i++) {
        int nib = i < 16 ? i : 15 - (i - 16);
        int hb = (i < 4 || i >= 28) ? 16 : 0;
        bad += y[i] != (float)(nib + hb - 16);
    }
    CHECK(bad == 0, "Q5_0 hand block: %d wrong", bad);

    /* Q5_1: d = 0.5, m = 1, qh = 0x00010000 (element 16 only) */
    b[0] = 0x00, b[1] = 0x38, b[2] = 0x00, b[3] = 0x3c;
    b[4] = 0x00, b[5] = 0x00, b[6] = 0x01, b[7] = 0x00;
    for (int j = 0; j < 16; j++) b[8 + j] = (uint8_t)(j | (15 - j) << 4);
    piso_ggml_dequantize_row(GGML_T_Q5_1, b, y, 32);
    bad = 0;
    for (int i = 0; i < 32; i++) {
        int q = (i < 16 ? i : 15 - (i - 16)) + (i == 16 ? 16 : 0);
        bad += y[i] != 0.5f * q + 1.0f;
    }
    CHECK(bad == 0, "Q5_1 hand block: %d wrong", bad);
}

static void test_k_hand(void) {
    uint8_t b[210];
    float y[256];
    /* Q4_K: d = 1, dmin = 0.5. Scale bytes chosen so that (get_scale_min_k4):
     *   j<4:  sc = q[j]&63 = j+1, m = q[j+4]&63 = 2j; bits 6-7 of q[j] / q[j+4] = 1 / 2
     *   j>=4: sc = (q[j+4]&15) | (q[j-4]>>6)<<4 = 3 | 16 = 19, m = (q[j+4]>>4) | (q[j]>>6)<<4 = 5 | 32 = 37 */
    memset(b, 0, sizeof b);
    b[0] = 0x00, b[1] = 0x3c, b[2] = 0x00, b[3] = 0x38;
    for (int j = 0; j < 4; j++) {
        b[4 + j] = (uint8_t)((j + 1) | 1 << 6);
        b[4 + j + 4] = (uint8_t)((2 * j) | 2 << 6);
        b[4 + j + 8] = (uint8_t)(3 | 5 << 4);
    }
    /* qs: chunk c, byte l: element 64c+l low nibble = (l+c)&15, element 64c+32+l high = (l*3)&15 */
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) b[16 + 32 * c + l] = (uint8_t)(((l + c) & 15) | ((l * 3) & 15) << 4);
    piso_ggml_dequantize_row(GGML_T_Q4_K, b, y, 256);
    int bad = 0;
    for (int e = 0; e < 256; e++) {
        int c = e / 64, r = e % 64, j = e / 32;
        int q = r < 32 ? ((r + c) & 15) : (((r - 32) * 3) & 15);
        int sc = j < 4 ? j + 1 : 19, m = j < 4 ? 2 * j : 37;
        bad += y[e] != 1.0f * sc * q - 0.5f * m;
    }
    CHECK(bad == 0, "Q4_K hand block: %d wrong", bad);

    /* Q5_K: same scales; qh[l] = 0x55 sets bit 2c for every c: high bit of element 64c+l */
    uint8_t b5[176];
    memcpy(b5, b, 16);
    for (int l = 0; l < 32; l++) b5[16 + l] = 0x55;
    memcpy(b5 + 48, b + 16, 128);
    piso_ggml_dequantize_row(GGML_T_Q5_K, b5, y, 256);
    bad = 0;
    for (int e = 0; e < 256; e++) {
        int c = e / 64, r = e % 64, j = e / 32;
        int q = r < 32 ? (((r + c) & 15) | 16) : (((r - 32) * 3) & 15);
        int sc = j < 4 ? j + 1 : 19, m = j < 4 ? 2 * j : 37;
        bad += y[e] != 1.0f * sc * q - 0.5f * m;
    }
    CHECK(bad == 0, "Q5_K hand block: %d wrong", bad);

    /* Q6_K: ql[l] = 0x21 (lo 1, hi 2), ql[l+32] = 0x43 for both halves; qh[l] = 0b11100100
     * → elements +0: 1|0<<4, +32: 3|1<<4, +64: 2|2<<4, +96: 4|3<<4; scales[s] = s - 8; d = 0.25 */
    memset(b, 0, sizeof b);
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            b[64 * h + l] = 0x21;
            b[64 * h + l + 32] = 0x43;
            b[128 + 32 * h + l] = 0xE4;
        }
    for (int s = 0; s < 16; s++) b[192 + s] = (uint8_t)(int8_t)(s - 8);
    b[208] = 0x00, b[209] = 0x34;
    piso_ggml_dequantize_row(GGML_T_Q6_K, b, y, 256);
    bad = 0;
    for (int e = 0; e < 256; e++) {
        int part = (e % 128) / 32;
        int q = part == 0 ? 1 : part == 1 ? 3 + 16 : part == 2 ? 2 + 32 : 4 + 48;
        bad += y[e] != 0.25f * (e / 16 - 8) * (q - 32);
    }
    CHECK(bad == 0, "Q6_K hand block: %d wrong", bad);
}

static void test_round_trips(void) {
    const int t32[5] = {GGML_T_Q8_0, GGML_T_Q4_0, GGML_T_Q4_1, GGML_T_Q5_0, GGML_T_Q5_1};
    for (int k = 0; k < 5; k++) {
        int bad = 0;
        for (int rep = 0; rep < 50; rep++) {
            struct piso_blk32 a, c;
            memset(&a, 0, sizeof a);
            a.d = (uint16_t)(rng >> 3 & 0x3fff);
            if (t32[k] == GGML_T_Q4_1 || t32[k] == GGML_T_Q5_1) a.m = (uint16_t)(rng >> 7 & 0xbfff);
            for (int i = 0; i < 32; i++) {
                frand();
                int range = t32[k] == GGML_T_Q8_0 ? 255 : (t32[k] == GGML_T_Q4_0 || t32[k] == GGML_T_Q4_1) ? 16 : 32;
                a.q[i] = (int16_t)((rng >> 9) % (unsigned)range) - (t32[k] == GGML_T_Q8_0 ? 127 : 0);
            }
            uint8_t buf[34];
            piso_pack_blk32(t32[k], &a, buf);
            piso_unpack_blk32(t32[k], buf, &c);
            bad += memcmp(&a, &c, sizeof a) != 0;
        }
        CHECK(bad == 0, "type %d: %d blocks do not round-trip", t32[k], bad);
    }
    const int t256[3] = {GGML_T_Q4_K, GGML_T_Q5_K, GGML_T_Q6_K};
    for (int k = 0; k < 3; k++) {
        int bad = 0;
        for (int rep = 0; rep < 20; rep++) {
            struct piso_blk256 a, c;
            memset(&a, 0, sizeof a);
            a.d = (uint16_t)(frand() * 1000 + 14000);
            int qmax = t256[k] == GGML_T_Q4_K ? 16 : t256[k] == GGML_T_Q5_K ? 32 : 64;
            if (t256[k] == GGML_T_Q6_K) {
                for (int j = 0; j < 16; j++) frand(), a.sc6[j] = (int8_t)((rng >> 9) & 255);
            } else {
                a.dmin = (uint16_t)(frand() * 1000 + 13000);
                for (int j = 0; j < 8; j++) frand(), a.sc[j] = (uint8_t)(rng >> 9 & 63), a.mn[j] = (uint8_t)(rng >> 17 & 63);
            }
            for (int i = 0; i < 256; i++) frand(), a.q[i] = (uint8_t)((rng >> 9) % (unsigned)qmax);
            uint8_t buf[210];
            piso_pack_blk256(t256[k], &a, buf);
            piso_unpack_blk256(t256[k], buf, &c);
            bad += memcmp(&a, &c, sizeof a) != 0;
        }
        CHECK(bad == 0, "type %d: %d super-blocks do not round-trip", t256[k], bad);
    }
}

static void test_reference_rules(void) {
    float x[64], y[64];
    for (int i = 0; i < 64; i++) x[i] = frand() * 0.1f;
    uint8_t buf[2 * 34];
    /* Q8_0: d = amax/127 (fp16), q = round(x*127/amax) */
    piso_ggml_quantize_ref(GGML_T_Q8_0, x, buf, 1, 64, NULL);
    for (int blk = 0; blk < 2; blk++) {
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[32 * blk + i]));
        uint16_t d = piso_fp32_to_fp16(amax / 127);
        CHECK(buf[34 * blk] == (d & 255) && buf[34 * blk + 1] == (d >> 8), "Q8_0 ref d");
        int bad = 0;
        for (int i = 0; i < 32; i++) bad += (int8_t)buf[34 * blk + 2 + i] != (int)roundf(x[32 * blk + i] / (amax / 127));
        CHECK(bad == 0, "Q8_0 ref codes: %d wrong", bad);
    }
    /* Q4_0: the largest-|x| element lands on code 0 (value -8 d), d = max/-8 */
    piso_ggml_quantize_ref(GGML_T_Q4_0, x, buf, 1, 64, NULL);
    piso_ggml_dequantize_row(GGML_T_Q4_0, buf, y, 64);
    for (int blk = 0; blk < 2; blk++) {
        int imax = 0;
        for (int i = 0; i < 32; i++)
            if (fabsf(x[32 * blk + i]) > fabsf(x[32 * blk + imax])) imax = i;
        float d = piso_fp16_to_fp32(piso_fp32_to_fp16(x[32 * blk + imax] / -8));
        CHECK_NEAR(y[32 * blk + imax], -8 * d, 0, "Q4_0 ref: extreme element on -8");
        double err = 0;
        for (int i = 0; i < 32; i++) err = fmax(err, fabs(x[32 * blk + i] - y[32 * blk + i]));
        /* RTN error <= d/2, except +8 clamped to +7: <= d */
        CHECK(err <= fabsf(d) * 1.01f + 1e-6, "Q4_0 ref max error %g > d = %g", err, fabsf(d));
    }
    /* Q4_1: m = min (fp16), d = (max-min)/15: the min element dequantizes to m */
    piso_ggml_quantize_ref(GGML_T_Q4_1, x, buf, 1, 64, NULL);
    piso_ggml_dequantize_row(GGML_T_Q4_1, buf, y, 64);
    float mn = x[0];
    for (int i = 0; i < 32; i++) mn = fminf(mn, x[i]);
    int imin = 0;
    for (int i = 0; i < 32; i++)
        if (x[i] == mn) imin = i;
    CHECK_NEAR(y[imin], piso_fp16_to_fp32(piso_fp32_to_fp16(mn)), 0, "Q4_1 ref: min element");
    /* every reference rule reconstructs within a few percent of the range */
    const int ts[8] = {GGML_T_Q8_0, GGML_T_Q4_0, GGML_T_Q4_1, GGML_T_Q5_0, GGML_T_Q5_1, GGML_T_Q4_K, GGML_T_Q5_K, GGML_T_Q6_K};
    const double tol[8] = {0.005, 0.07, 0.05, 0.035, 0.04, 0.08, 0.04, 0.02}; /* weighted fits may clip a light outlier */
    static float big[512], out[512];
    static uint8_t q[2 * 8 * 34];
    for (int i = 0; i < 512; i++) big[i] = frand();
    float imat[512];
    for (int i = 0; i < 512; i++) imat[i] = 0.5f + frand() * frand();
    for (int k = 0; k < 8; k++)
        for (int with_im = 0; with_im < 2; with_im++) {
            piso_ggml_quantize_ref(ts[k], big, q, 2, 256, with_im ? imat : NULL);
            piso_ggml_dequantize_row(ts[k], q, out, 256);
            piso_ggml_dequantize_row(ts[k], q + (size_t)piso_ggml_block_bytes(ts[k]) * (256 / piso_ggml_block_elems(ts[k])), out + 256, 256);
            double e = 0;
            for (int i = 0; i < 512; i++) e = fmax(e, fabs(big[i] - out[i]));
            CHECK(e < tol[k] * 2, "type %d imatrix %d: max error %g", ts[k], with_im, e);
        }
}

int main(void) {
    test_sizes();
    test_legacy_hand();
    test_k_hand();
    test_round_trips();
    test_reference_rules();
    return test_finish();
}
