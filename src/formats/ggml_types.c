/* ggml tensor types: one traits row per type id (block size, bytes per block, row converters).
 * Block layouts: shared/docs/llamacpp-formats.md §2. Converters read their input with memcpy
 * because GGUF data may sit at any byte offset (general.alignment can be 1). */
#include "piso/ggml_quants.h"
#include "piso/gguf.h"
#include "formats/ggml_blocks.h"

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

/* Designated initializers indexed by type id; ids not listed stay zeroed (= unknown). Bytes per
 * block are the block structs' sizes, which ggml_blocks.h checks against llama.cpp's. Fallbacks are
 * llama.cpp's (llama_tensor_get_type): K-quants to the 32-block type of about the same size, every
 * block type finally to F16. File types are LLAMA_FTYPE_MOSTLY_* (Q4_K/Q5_K: the _M mixes). */
#define FLOAT_TYPE(nm, bytes, ftype, dt, conv)                                                                \
    {.name = nm, .blck_size = 1, .type_size = bytes, .fallback = GGML_T_NONE, .file_type = ftype, .dtype = dt, \
     .to_float = conv##_to_float, .from_float = conv##_from_float}
#define UNSUPPORTED_TYPE(nm, blck, block) \
    {.name = nm, .blck_size = blck, .type_size = sizeof(struct block), .fallback = GGML_T_F16, .file_type = -1}
#define BLOCK_FUNCS(t, packer)                                                                             \
    .to_float = piso_ggml_dequantize_row_##t, .from_float = piso_ggml_from_float_##t,                       \
    .quantize_ref = piso_ggml_quantize_row_##t##_ref, .pack = piso_ggml_pack_##packer, .unpack = piso_ggml_unpack_##packer

static const struct piso_ggml_traits ggml_traits[GGML_T_COUNT] = {
    [GGML_T_F32] = FLOAT_TYPE("f32", 4, 0, PISO_DTYPE_F32, f32),
    [GGML_T_F16] = FLOAT_TYPE("f16", 2, 1, PISO_DTYPE_F16, f16),
    [GGML_T_BF16] = FLOAT_TYPE("bf16", 2, 32, PISO_DTYPE_BF16, bf16),
    [GGML_T_Q8_0] = {.name = "q8_0", .blck_size = PISO_QK, .type_size = sizeof(struct piso_block_q8_0),
                     .fallback = GGML_T_F16, .file_type = 7, .level_min = -127, .level_max = 127, .code_zero = 0,
                     .sub_size = PISO_QK, .grid = "int8", .imatrix_rule = PISO_IMAT_UNUSED, BLOCK_FUNCS(q8_0, q8_0)},
    [GGML_T_Q4_0] = {.name = "q4_0", .blck_size = PISO_QK, .type_size = sizeof(struct piso_block_q4_0),
                     .fallback = GGML_T_F16, .file_type = 2, .level_min = -8, .level_max = 7, .code_zero = 8,
                     .sub_size = PISO_QK, .grid = "int4", .imatrix_rule = PISO_IMAT_ROW_SIGMA, BLOCK_FUNCS(q4_0, q4_0)},
    [GGML_T_Q4_1] = {.name = "q4_1", .blck_size = PISO_QK, .type_size = sizeof(struct piso_block_q4_1),
                     .fallback = GGML_T_F16, .file_type = 3, .level_min = 0, .level_max = 15, .has_min = 1,
                     .sub_size = PISO_QK, .imatrix_rule = PISO_IMAT_ROW_SIGMA, BLOCK_FUNCS(q4_1, q4_1)},
    [GGML_T_Q5_0] = {.name = "q5_0", .blck_size = PISO_QK, .type_size = sizeof(struct piso_block_q5_0),
                     .fallback = GGML_T_F16, .file_type = 8, .level_min = -16, .level_max = 15, .code_zero = 16,
                     .sub_size = PISO_QK, .grid = "int5", .imatrix_rule = PISO_IMAT_ROW_SIGMA, BLOCK_FUNCS(q5_0, q5_0)},
    [GGML_T_Q5_1] = {.name = "q5_1", .blck_size = PISO_QK, .type_size = sizeof(struct piso_block_q5_1),
                     .fallback = GGML_T_F16, .file_type = 9, .level_min = 0, .level_max = 31, .has_min = 1,
                     .sub_size = PISO_QK, .imatrix_rule = PISO_IMAT_ROW_SIGMA, BLOCK_FUNCS(q5_1, q5_1)},
    [GGML_T_IQ4_NL] = {.name = "iq4_nl", .blck_size = PISO_QK, .type_size = sizeof(struct piso_block_iq4_nl),
                       .fallback = GGML_T_F16, .file_type = 25, .level_min = 0, .level_max = 15,
                       .level_values = piso_iq4nl_values, .sub_size = PISO_QK, .imatrix_rule = PISO_IMAT_BLOCK_SIGMA,
                       BLOCK_FUNCS(iq4_nl, q4_0)},
    [GGML_T_Q4_K] = {.name = "q4_K", .blck_size = PISO_QK_K, .type_size = sizeof(struct piso_block_q4_K),
                     .fallback = GGML_T_Q5_0, .file_type = 15, .level_min = 0, .level_max = 15, .has_min = 1,
                     .sub_size = 32, .imatrix_rule = PISO_IMAT_BLOCK_SIGMA, BLOCK_FUNCS(q4_K, q4_K)},
    [GGML_T_Q5_K] = {.name = "q5_K", .blck_size = PISO_QK_K, .type_size = sizeof(struct piso_block_q5_K),
                     .fallback = GGML_T_Q5_1, .file_type = 17, .level_min = 0, .level_max = 31, .has_min = 1,
                     .sub_size = 32, .imatrix_rule = PISO_IMAT_BLOCK_SIGMA, BLOCK_FUNCS(q5_K, q5_K)},
    [GGML_T_Q6_K] = {.name = "q6_K", .blck_size = PISO_QK_K, .type_size = sizeof(struct piso_block_q6_K),
                     .fallback = GGML_T_Q8_0, .file_type = 18, .level_min = -32, .level_max = 31, .code_zero = 32,
                     .sub_size = 16, .imatrix_rule = PISO_IMAT_H, BLOCK_FUNCS(q6_K, q6_K)},
    /* Q2_K/Q3_K fall back to Q4_0 (the bundled llama.cpp's tensor_type_fallback; older versions
     * used IQ4_NL); file types MOSTLY_Q2_K and MOSTLY_Q3_K_M */
    [GGML_T_Q2_K] = {.name = "q2_K", .blck_size = PISO_QK_K, .type_size = sizeof(struct piso_block_q2_K),
                     .fallback = GGML_T_Q4_0, .file_type = 10, .level_min = 0, .level_max = 3, .has_min = 1,
                     .sub_size = 16, .imatrix_rule = PISO_IMAT_SUPER_SIGMA1, BLOCK_FUNCS(q2_K, q2_K)},
    [GGML_T_Q3_K] = {.name = "q3_K", .blck_size = PISO_QK_K, .type_size = sizeof(struct piso_block_q3_K),
                     .fallback = GGML_T_Q4_0, .file_type = 12, .level_min = -4, .level_max = 3, .code_zero = 4,
                     .sub_size = 16, .imatrix_rule = PISO_IMAT_BLOCK_SIGMA, BLOCK_FUNCS(q3_K, q3_K)},
    /* FP4 with a power-of-two (MXFP4, MOSTLY_MXFP4_MOE) or UE4M3 (NVFP4, MOSTLY_NVFP4) scale; llama.cpp's
     * rules ignore the imatrix. NVFP4 rows of 32 but not 64 fall back to MXFP4 (piso's choice:
     * llama-quantize cannot write NVFP4). */
    [GGML_T_MXFP4] = {.name = "mxfp4", .blck_size = PISO_QK, .type_size = sizeof(struct piso_block_mxfp4),
                      .fallback = GGML_T_F16, .file_type = 38, .level_min = 0, .level_max = 15,
                      .level_values = piso_mxfp4_values, .sub_size = PISO_QK, .imatrix_rule = PISO_IMAT_UNUSED,
                      .scale_kind = PISO_SCALE_E8M0, BLOCK_FUNCS(mxfp4, mxfp4)},
    [GGML_T_NVFP4] = {.name = "nvfp4", .blck_size = PISO_QK_NVFP4, .type_size = sizeof(struct piso_block_nvfp4),
                      .fallback = GGML_T_MXFP4, .file_type = 39, .level_min = 0, .level_max = 15,
                      .level_values = piso_mxfp4_values, .sub_size = 16, .imatrix_rule = PISO_IMAT_UNUSED,
                      .scale_kind = PISO_SCALE_UE4M3, BLOCK_FUNCS(nvfp4, nvfp4)},
    /* known to the reader (sizes), not converted */
    [GGML_T_Q8_1] = UNSUPPORTED_TYPE("q8_1", PISO_QK, piso_block_q8_1),
    [GGML_T_Q8_K] = UNSUPPORTED_TYPE("q8_K", PISO_QK_K, piso_block_q8_K),
};
#undef FLOAT_TYPE
#undef UNSUPPORTED_TYPE
#undef BLOCK_FUNCS

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

int piso_ggml_type_for_row(int type, int64_t ne0) {
    const struct piso_ggml_traits *tr = piso_ggml_traits(type);
    while (tr && ne0 % tr->blck_size != 0 && tr->fallback != GGML_T_NONE) tr = piso_ggml_traits(type = tr->fallback);
    return type;
}

int piso_ggml_is_block_type(int type) {
    const struct piso_ggml_traits *tr = piso_ggml_traits(type);
    return tr && tr->pack;
}

int piso_ggml_block_elems(int type) {
    const struct piso_ggml_traits *tr = piso_ggml_traits(type);
    return tr ? tr->blck_size : 0;
}

int piso_ggml_block_bytes(int type) {
    const struct piso_ggml_traits *tr = piso_ggml_traits(type);
    return tr ? tr->type_size : 0;
}
