/* piso/ggml_quants.h — llama.cpp (ggml) block formats: bit-exact packing, dequantization, and
 * llama.cpp's own scale rules (the `llamacpp-ref` baseline). Layouts: shared/docs/llamacpp-formats.md §2.
 *
 * Every block is described by its "decoded" fields (fp16 scales as raw bits, integer codes as
 * stored), so the exact scale search (block_scales.c) and the reference rules share one packer. */
#ifndef PISO_GGML_QUANTS_H
#define PISO_GGML_QUANTS_H

#include "piso/common.h"

#define PISO_QK 32    /* block size of the legacy formats */
#define PISO_QK_K 256 /* super-block size of the K-quants */

/* Decoded legacy block (Q8_0, Q4_0, Q5_0, Q4_1, Q5_1, IQ4_NL): x = d*(q - zero) (+ m for _1 types;
 * IQ4_NL: x = d*value[q]). q holds the stored code: Q8_0 signed -127..127, Q4_0/IQ4_NL 0..15,
 * Q5_0 0..31, Q4_1 0..15, Q5_1 0..31. */
struct piso_blk32 {
    uint16_t d, m; /* fp16 bits; m only for Q4_1/Q5_1 */
    int16_t q[PISO_QK];
};

/* Decoded K-quant super-block.
 * Q4_K/Q5_K: x = d*sc[j]*q - dmin*mn[j] for sub-block j (32 elements), sc/mn 0..63, q 0..15 / 0..31.
 * Q2_K:      x = d*sc16[j]*q - dmin*mn16[j] for sub-block j (16 elements), sc16/mn16 0..15, q 0..3.
 * Q6_K:      x = d*sc6[j]*(q - 32) for sub-block j (16 elements), sc6 -128..127, q 0..63.
 * Q3_K:      x = d*sc6[j]*(q - 4) for sub-block j (16 elements), sc6 -32..31 (stored +32), q 0..7. */
struct piso_blk256 {
    uint16_t d, dmin;
    uint8_t sc[8], mn[8];
    int8_t sc6[16];
    uint8_t sc16[16], mn16[16];
    uint8_t q[PISO_QK_K];
};

/* Decoded NVFP4 block (64 elements): x = kvalue[q]·ue4m3(d[s]) for sub-block s (16 elements), d the
 * UE4M3 code (0x00..0x7E; ggml's decode includes a factor ½), q the E2M1 index 0..15 into
 * piso_mxfp4_values. MXFP4 uses struct piso_blk32 with d = the E8M0 exponent byte (x = kvalue[q]·2^(d−128)). */
#define PISO_QK_NVFP4 64
struct piso_blk64 {
    uint8_t d[4];
    uint8_t q[PISO_QK_NVFP4];
};

/* E2M1 values doubled, as ggml's kvalues_mxfp4 (index bit 3 = sign). */
extern const int8_t piso_mxfp4_values[16];
/* E8M0 exponent byte → 2^(e−128) (ggml's GGML_E8M0_TO_FP32_HALF); UE4M3 code → value·½ (ggml's
 * ggml_ue4m3_to_fp32; 0x7F and 0 → 0) and llama.cpp's encoder (round half up, saturating at 0x7E). */
float piso_e8m0_half(uint8_t e);
float piso_ue4m3_to_fp32(uint8_t c);
uint8_t piso_fp32_to_ue4m3(float x);
void piso_pack_blk64(const struct piso_blk64 *b, void *dst);
void piso_unpack_blk64(const void *src, struct piso_blk64 *b);
void piso_blk64_to_float(const struct piso_blk64 *b, float *y);

/* Lookups in the traits table (gguf.h): whether a type has block converters (Q8_0, Q4_0, Q4_1,
 * Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, MXFP4, NVFP4), its elements and bytes per block
 * (0 for unknown ids). */
int piso_ggml_is_block_type(int type);
int piso_ggml_block_elems(int type);
int piso_ggml_block_bytes(int type);

/* Packing and unpacking of one block of a block type in the exact llama.cpp byte layout. */
void piso_pack_blk32(int type, const struct piso_blk32 *b, void *dst);
void piso_unpack_blk32(int type, const void *src, struct piso_blk32 *b);
void piso_pack_blk256(int type, const struct piso_blk256 *b, void *dst);
void piso_unpack_blk256(int type, const void *src, struct piso_blk256 *b);

/* Dequantizes one decoded block into y (32 or 256 floats), with fp32 arithmetic as ggml does. */
void piso_blk32_to_float(int type, const struct piso_blk32 *b, float *y);
void piso_blk256_to_float(int type, const struct piso_blk256 *b, float *y);

/* Dequantizes k values (a multiple of the block size) of a packed row (ggml to_float). */
void piso_ggml_dequantize_row(int type, const void *src, float *dst, int64_t k);

/* llama.cpp's scale rules (`llamacpp-ref`): with imatrix == NULL the default llama-quantize path
 * (quantize_row_*_ref); with an imatrix ([n_per_row], shared by the rows) the importance-weighted
 * path (make_qx_quants / make_qkx3_quants / make_qp_quants with w = h*sqrt(sigma2 + x^2)).
 * Q8_0 ignores the imatrix, as llama.cpp does. Returns the number of bytes written. */
size_t piso_ggml_quantize_ref(int type, const float *x, void *dst, int64_t nrows, int64_t n_per_row,
                              const float *imatrix);

/* IQ4_NL's non-uniform levels (x = d·value[q]) and the nearest-index rule (ties to the upper). */
extern const int8_t piso_iq4nl_values[16];
int piso_iq4nl_index(float v);

#endif
