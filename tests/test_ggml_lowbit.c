/* Q2_K, Q3_K, MXFP4, NVFP4: hand-packed blocks dequantized against the formulas of
 * llamacpp-formats.md §2 and ggml-common.h (worked out here byte by byte), pack/unpack round trips,
 * and, against real llama.cpp's own library (libggml-base.so of node-llama-cpp, loaded with dlopen),
 * the reference quantizers byte for byte (with and without an imatrix) and the dequantizers bit for
 * bit. Without the library that part is skipped, except under CI=true where it is a failure. */
#include "harness.h"
#include "piso/ggml_quants.h"
#include "piso/gguf.h"

#include <dlfcn.h>
#include <stdint.h>
#include <unistd.h>

static uint32_t rng = 2024;
static float frand(void) { /* uniform in [-1, 1) */
    rng = rng * 1664525u + 1013904223u;
    return (float)((rng >> 8) & 0xffffff) / 8388608.0f - 1.0f;
}
static unsigned urand(unsigned n) {
    frand();
    return (rng >> 9) % n;
}

/* E2M1 doubled, as in ggml-common.h's kvalues_mxfp4 (written out again here on purpose). */
static const float E2M1x2[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

static void test_hand_q2_K(void) {
    /* d = 0.5, dmin = 0.25; scales[j] = j (low nibble) | (15 - j) << 4; every plane byte of column l
     * holds q = l % 4 in all four 2-bit fields, so element e has q = (e % 32) % 4 = e % 4. */
    uint8_t b[84];
    for (int j = 0; j < 16; j++) b[j] = (uint8_t)(j | (15 - j) << 4);
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            int q = l % 4;
            b[16 + 32 * h + l] = (uint8_t)(q | q << 2 | q << 4 | q << 6);
        }
    b[80] = 0x00, b[81] = 0x38, b[82] = 0x00, b[83] = 0x34;
    float y[256];
    piso_ggml_dequantize_row(GGML_T_Q2_K, b, y, 256);
    int bad = 0;
    for (int e = 0; e < 256; e++) {
        int j = e / 16;
        bad += y[e] != 0.5f * (float)j * (float)(e % 4) - 0.25f * (float)(15 - j);
    }
    CHECK(bad == 0, "Q2_K hand block: %d wrong", bad);
}

static void test_hand_q3_K(void) {
    /* hmask bytes 0x55: elements with e / 32 even get the high bit. Plane bytes of column l: q = l % 4.
     * scales bytes 0-7 = 0x21: low nibble 1 (sub-blocks 0-7), high nibble 2 (8-15); bytes 8-11 = 0xE4
     * = 11 10 01 00b: sub-block j takes bits 2(j/4) of byte 8 + j%4, i.e. j/4. So s6 = 1 | (j/4)<<4 for
     * j < 8 and 2 | (j/4)<<4 for j >= 8: 1, 17, 34, 50 → signed scales -31, -15, 2, 18. d = 0.25. */
    uint8_t b[110];
    memset(b, 0x55, 32);
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            int q = l % 4;
            b[32 + 32 * h + l] = (uint8_t)(q | q << 2 | q << 4 | q << 6);
        }
    for (int i = 0; i < 8; i++) b[96 + i] = 0x21;
    for (int i = 8; i < 12; i++) b[96 + i] = 0xE4;
    b[108] = 0x00, b[109] = 0x34;
    const int sc[4] = {-31, -15, 2, 18};
    float y[256];
    piso_ggml_dequantize_row(GGML_T_Q3_K, b, y, 256);
    int bad = 0;
    for (int e = 0; e < 256; e++) {
        int q = (e % 4) | ((e / 32) % 2 == 0 ? 4 : 0);
        bad += y[e] != 0.25f * (float)sc[e / 64] * (float)(q - 4);
    }
    CHECK(bad == 0, "Q3_K hand block: %d wrong", bad);
}

static void test_hand_fp4(void) {
    /* MXFP4: e = 127 → scale 2^-1; byte j = j (element j) | (15 - j) << 4 (element j + 16) */
    uint8_t b[36];
    float y[64];
    b[0] = 127;
    for (int j = 0; j < 16; j++) b[1 + j] = (uint8_t)(j | (15 - j) << 4);
    piso_ggml_dequantize_row(GGML_T_MXFP4, b, y, 32);
    int bad = 0;
    for (int j = 0; j < 16; j++) bad += y[j] != 0.5f * E2M1x2[j], bad += y[j + 16] != 0.5f * E2M1x2[15 - j];
    CHECK(bad == 0, "MXFP4 hand block: %d wrong", bad);
    /* e = 0 and 1: the subnormal scales 2^-128, 2^-127; e = 254: 2^126 */
    CHECK(piso_e8m0_half(0) == ldexpf(1, -128) && piso_e8m0_half(1) == ldexpf(1, -127) && piso_e8m0_half(254) == ldexpf(1, 126),
          "E8M0 scales");

    /* NVFP4: UE4M3 bytes 0x38 (2^0 → ½), 0x3C (1.5 → 0.75), 0x01 (subnormal 2^-9 → 2^-10), 0x7F (NaN → 0);
     * sub-block s, byte j < 8: element j (low) | element j + 8 (high) = j | (15 - j) << 4 */
    b[0] = 0x38, b[1] = 0x3C, b[2] = 0x01, b[3] = 0x7F;
    for (int s = 0; s < 4; s++)
        for (int j = 0; j < 8; j++) b[4 + 8 * s + j] = (uint8_t)(j | (15 - j) << 4);
    piso_ggml_dequantize_row(GGML_T_NVFP4, b, y, 64);
    const float d[4] = {0.5f, 0.75f, ldexpf(1, -10), 0.0f};
    bad = 0;
    for (int s = 0; s < 4; s++)
        for (int j = 0; j < 8; j++) bad += y[16 * s + j] != d[s] * E2M1x2[j], bad += y[16 * s + 8 + j] != d[s] * E2M1x2[15 - j];
    CHECK(bad == 0, "NVFP4 hand block: %d wrong", bad);
    /* the encoder: exact values, round half up on the 4th mantissa bit, saturation, subnormals */
    CHECK(piso_fp32_to_ue4m3(1.0f) == 0x38 && piso_fp32_to_ue4m3(1.0625f) == 0x39 && piso_fp32_to_ue4m3(1.05f) == 0x38,
          "UE4M3 rounding");
    CHECK(piso_fp32_to_ue4m3(1000.0f) == 0x7E && piso_fp32_to_ue4m3(-1.0f) == 0 && piso_fp32_to_ue4m3(NAN) == 0, "UE4M3 limits");
    CHECK(piso_fp32_to_ue4m3(3.0f / 512) == 3 && piso_fp32_to_ue4m3(0.5f / 512) == 1 && piso_fp32_to_ue4m3(0.4f / 512) == 0,
          "UE4M3 subnormals");
    CHECK(piso_ue4m3_to_fp32(0x7E) == 224.0f && piso_ue4m3_to_fp32(0x08) == ldexpf(1, -7), "UE4M3 decode");
}

static void test_roundtrip(void) {
    const int t256[2] = {GGML_T_Q2_K, GGML_T_Q3_K};
    for (int k = 0; k < 2; k++) {
        int bad = 0;
        for (int rep = 0; rep < 30; rep++) {
            struct piso_blk256 a, c;
            memset(&a, 0, sizeof a);
            a.d = (uint16_t)(urand(20000) + 5000);
            if (t256[k] == GGML_T_Q2_K) {
                a.dmin = (uint16_t)(urand(20000) + 5000);
                for (int j = 0; j < 16; j++) a.sc16[j] = (uint8_t)urand(16), a.mn16[j] = (uint8_t)urand(16);
            } else {
                for (int j = 0; j < 16; j++) a.sc6[j] = (int8_t)((int)urand(64) - 32);
            }
            for (int i = 0; i < 256; i++) a.q[i] = (uint8_t)urand(t256[k] == GGML_T_Q2_K ? 4 : 8);
            uint8_t buf[110];
            piso_pack_blk256(t256[k], &a, buf);
            piso_unpack_blk256(t256[k], buf, &c);
            bad += memcmp(&a, &c, sizeof a) != 0;
        }
        CHECK(bad == 0, "type %d: %d super-blocks do not round-trip", t256[k], bad);
    }
    int bad = 0;
    for (int rep = 0; rep < 30; rep++) {
        struct piso_blk32 a, c;
        memset(&a, 0, sizeof a);
        a.d = (uint16_t)urand(255);
        for (int i = 0; i < 32; i++) a.q[i] = (int16_t)urand(16);
        uint8_t buf[17];
        piso_pack_blk32(GGML_T_MXFP4, &a, buf);
        piso_unpack_blk32(GGML_T_MXFP4, buf, &c);
        bad += memcmp(&a, &c, sizeof a) != 0;
        struct piso_blk64 u, v;
        for (int s = 0; s < 4; s++) u.d[s] = (uint8_t)urand(0x7F);
        for (int i = 0; i < 64; i++) u.q[i] = (uint8_t)urand(16);
        uint8_t b64[36];
        piso_pack_blk64(&u, b64);
        piso_unpack_blk64(b64, &v);
        bad += memcmp(&u, &v, sizeof u) != 0;
    }
    CHECK(bad == 0, "MXFP4/NVFP4: %d blocks do not round-trip", bad);
}

/* ---- against llama.cpp's library ------------------------------------------------------------ */

typedef size_t quantize_fn(const float *src, void *dst, int64_t nrow, int64_t n_per_row, const float *imatrix);
typedef void dequantize_fn(const void *src, float *dst, int64_t k);

static void *open_ggml(void) {
    char path[1024];
    const char *pre = getenv("PISO_LLAMACPP_PREFIX");
    snprintf(path, sizeof path, "%s/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-base.so",
             pre && *pre ? pre : PISO_SOURCE_DIR "/.tools/llamacpp");
    void *h = access(path, R_OK) == 0 ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
    if (!h) {
        if (test_in_ci()) {
            CHECK(0, "llama.cpp's libggml-base.so is required under CI=true (%s)", path);
        } else {
            fprintf(stderr, "SKIP (llama.cpp comparison): %s not found; run scripts/setup-llamacpp.sh\n", path);
        }
    }
    return h;
}

/* Test rows: uniform, heavy-tailed (a few large outliers), rows with all-zero and constant
 * sub-blocks, tiny and huge magnitudes (UE4M3 subnormals, saturation). */
static void make_rows(float *x, int nrow, int n) {
    for (int r = 0; r < nrow; r++) {
        float *xr = x + (size_t)r * n;
        const int kind = r % 6;
        const float mag = kind == 4 ? 1e-4f : kind == 5 ? 3e3f : 1.0f;
        for (int i = 0; i < n; i++) {
            float v = frand();
            if (kind == 1) { /* heavy tails: u / |v| clipped, like a Student t with one dof */
                float t = fabsf(frand()) + 0.02f;
                v = v / t * 0.1f;
            }
            xr[i] = v * mag;
        }
        if (kind == 2) {
            for (int i = 16; i < 48; i++) xr[i] = 0;         /* zero sub-blocks */
            for (int i = 64; i < 80; i++) xr[i] = 0.375f;    /* a constant positive sub-block */
            for (int i = 96; i < 112; i++) xr[i] = -0.375f;  /* and a negative one */
        }
    }
}

static void test_against_ggml(void) {
    void *h = open_ggml();
    if (!h) return;
    struct {
        int type;
        const char *q, *dq;
    } t[4] = {{GGML_T_Q2_K, "quantize_q2_K", "dequantize_row_q2_K"},
              {GGML_T_Q3_K, "quantize_q3_K", "dequantize_row_q3_K"},
              {GGML_T_MXFP4, "quantize_mxfp4", "dequantize_row_mxfp4"},
              {GGML_T_NVFP4, "quantize_nvfp4", "dequantize_row_nvfp4"}};
    const int nrow = 48, n = 512;
    float *x = malloc(sizeof(float) * nrow * n), *imat = malloc(sizeof(float) * n);
    float *ya = malloc(sizeof(float) * nrow * n), *yb = malloc(sizeof(float) * nrow * n);
    uint8_t *a = malloc((size_t)n * nrow), *b = malloc((size_t)n * nrow); /* ≥ 8 bits per weight */
    make_rows(x, nrow, n);
    for (int i = 0; i < n; i++) imat[i] = i % 37 == 0 ? 0.0f : (frand() + 1.2f) * (i % 5 == 0 ? 10.0f : 1.0f);
    for (int k = 0; k < 4; k++) {
        quantize_fn *q = (quantize_fn *)dlsym(h, t[k].q);
        dequantize_fn *dq = (dequantize_fn *)dlsym(h, t[k].dq);
        CHECK(q && dq, "libggml-base.so lacks %s / %s", t[k].q, t[k].dq);
        if (!q || !dq) continue;
        const size_t bytes = piso_ggml_row_size(t[k].type, n) * nrow;
        for (int im = 0; im < 2; im++) {
            memset(a, 0, bytes), memset(b, 0xAA, bytes);
            size_t na = piso_ggml_quantize_ref(t[k].type, x, a, nrow, n, im ? imat : NULL);
            size_t nb = q(x, b, nrow, n, im ? imat : NULL);
            CHECK(na == bytes && nb == bytes, "%s: sizes %zu %zu, expected %zu", t[k].q, na, nb, bytes);
            int diff_rows = 0;
            for (int r = 0; r < nrow; r++) {
                const size_t rs = bytes / nrow;
                diff_rows += memcmp(a + r * rs, b + r * rs, rs) != 0;
            }
            CHECK(diff_rows == 0, "%s imatrix %d: %d of %d rows differ from llama.cpp's bytes", t[k].q, im, diff_rows, nrow);
            printf("%-6s llamacpp-ref vs llama.cpp %s, imatrix %s: %d of %d rows byte-identical\n", piso_ggml_traits(t[k].type)->name,
                   t[k].q, im ? "yes" : "no", nrow - diff_rows, nrow);
            /* the dequantizers, bit for bit, on llama.cpp's bytes */
            piso_ggml_dequantize_row(t[k].type, b, ya, (int64_t)nrow * n);
            dq(b, yb, (int64_t)nrow * n);
            CHECK(memcmp(ya, yb, sizeof(float) * nrow * n) == 0, "%s: dequantized values differ", t[k].dq);
        }
        /* the dequantizers on random bytes (finite scales) */
        const size_t bytes1 = piso_ggml_row_size(t[k].type, n);
        for (size_t i = 0; i < bytes1; i++) a[i] = (uint8_t)urand(256);
        const int bb = piso_ggml_block_bytes(t[k].type);
        for (size_t blk = 0; blk < bytes1 / bb; blk++) {
            uint8_t *p = a + blk * bb;
            if (t[k].type == GGML_T_Q2_K) p[81] &= 0x3f, p[83] &= 0x3f; /* fp16 d, dmin below 2 */
            if (t[k].type == GGML_T_Q3_K) p[109] &= 0x3f;
        }
        piso_ggml_dequantize_row(t[k].type, a, ya, n);
        dq(a, yb, n);
        CHECK(memcmp(ya, yb, sizeof(float) * n) == 0, "%s: dequantized random bytes differ", t[k].dq);
    }
    free(x), free(imat), free(ya), free(yb), free(a), free(b);
    dlclose(h);
}

int main(void) {
    test_hand_q2_K();
    test_hand_q3_K();
    test_hand_fp4();
    test_roundtrip();
    test_against_ggml();
    return test_finish();
}
