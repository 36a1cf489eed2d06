/* ggml tensor types: one traits row per type id (block size, bytes per block, row converters).
 * Block layouts: shared/docs/llamacpp-formats.md §2. Converters read their input with memcpy
 * because GGUF data may sit at any byte offset (general.alignment can be 1). */
#include "piso/ggml_quants.h"
#include "piso/gguf.h"

#include <string.h>
#include <strings.h>

static void f32_to_float(const void *src, float *dst, int64_t k) { memcpy(dst, src, (size_t)k * sizeof(float)); }

static void f16_to_float(const void *src, float *dst, int64_t k) {
    const uint8_t *s = src;
    for (int64_t i = 0; i < k; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, 2);
        dst[i] = piso_fp16_to_fp32(h);
    }
}

static void bf16_to_float(const void *src, float *dst, int64_t k) {
    const uint8_t *s = src;
    for (int64_t i = 0; i < k; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, 2);
        dst[i] = piso_bf16_to_fp32(h);
    }
}

/* Q8_0 block: fp16 d, int8 qs[32]; x = d * q. */
static void q8_0_to_float(const void *src, float *dst, int64_t k) {
    const uint8_t *s = src;
    for (int64_t b = 0; b < k / 32; b++, s += 34) {
        uint16_t h;
        memcpy(&h, s, 2);
        float d = piso_fp16_to_fp32(h);
        for (int j = 0; j < 32; j++) dst[b * 32 + j] = d * (float)(int8_t)s[2 + j];
    }
}

static void f32_from_float(const float *src, void *dst, int64_t k) { memcpy(dst, src, (size_t)k * sizeof(float)); }

static void f16_from_float(const float *src, void *dst, int64_t k) {
    uint8_t *d = dst;
    for (int64_t i = 0; i < k; i++) {
        uint16_t h = piso_fp32_to_fp16(src[i]);
        memcpy(d + 2 * i, &h, 2);
    }
}

static void bf16_from_float(const float *src, void *dst, int64_t k) {
    uint8_t *d = dst;
    for (int64_t i = 0; i < k; i++) {
        uint16_t h = piso_fp32_to_bf16(src[i]);
        memcpy(d + 2 * i, &h, 2);
    }
}

/* Designated initializers indexed by type id; ids not listed stay zeroed (= unknown). Block
 * formats add their to_float / from_float here. */
static const struct piso_ggml_traits ggml_traits[GGML_T_COUNT] = {
    [GGML_T_F32] = {"f32", 1, 4, f32_to_float, f32_from_float},
    [GGML_T_F16] = {"f16", 1, 2, f16_to_float, f16_from_float},
    [GGML_T_BF16] = {"bf16", 1, 2, bf16_to_float, bf16_from_float},
    [GGML_T_Q4_0] = {"q4_0", 32, 18, piso_ggml_q4_0_to_float, piso_ggml_q4_0_from_float},
    [GGML_T_Q4_1] = {"q4_1", 32, 20, piso_ggml_q4_1_to_float, piso_ggml_q4_1_from_float},
    [GGML_T_Q5_0] = {"q5_0", 32, 22, piso_ggml_q5_0_to_float, piso_ggml_q5_0_from_float},
    [GGML_T_Q5_1] = {"q5_1", 32, 24, piso_ggml_q5_1_to_float, piso_ggml_q5_1_from_float},
    [GGML_T_Q8_0] = {"q8_0", 32, 34, q8_0_to_float, piso_ggml_q8_0_from_float},
    [GGML_T_Q8_1] = {"q8_1", 32, 36, NULL, NULL},
    [GGML_T_Q2_K] = {"q2_K", 256, 84, NULL, NULL},
    [GGML_T_Q3_K] = {"q3_K", 256, 110, NULL, NULL},
    [GGML_T_Q4_K] = {"q4_K", 256, 144, piso_ggml_q4_k_to_float, piso_ggml_q4_k_from_float},
    [GGML_T_Q5_K] = {"q5_K", 256, 176, piso_ggml_q5_k_to_float, piso_ggml_q5_k_from_float},
    [GGML_T_Q6_K] = {"q6_K", 256, 210, piso_ggml_q6_k_to_float, piso_ggml_q6_k_from_float},
    [GGML_T_Q8_K] = {"q8_K", 256, 292, NULL, NULL},
    [GGML_T_IQ4_NL] = {"iq4_nl", 32, 18, NULL, NULL},
    [GGML_T_MXFP4] = {"mxfp4", 32, 17, NULL, NULL},
};

const struct piso_ggml_traits *piso_ggml_traits(int type) {
    if (type < 0 || type >= GGML_T_COUNT || !ggml_traits[type].name) return NULL;
    return &ggml_traits[type];
}

int piso_ggml_type_from_name(const char *name, int *type) {
    for (int t = 0; t < GGML_T_COUNT; t++) {
        if (ggml_traits[t].name && strcasecmp(ggml_traits[t].name, name) == 0) {
            *type = t;
            return 0;
        }
    }
    return piso_errorf("unknown ggml type '%s'", name);
}

size_t piso_ggml_row_size(int type, int64_t ne0) {
    const struct piso_ggml_traits *tr = piso_ggml_traits(type);
    if (!tr || ne0 < 0) return 0;
    return (size_t)(ne0 / tr->blck_size) * (size_t)tr->type_size;
}
