/* formats/ggml_blocks.h — private to src/formats: the ggml block layouts as structs (for sizes and
 * field offsets; data is read and written byte-wise, since GGUF data may sit at any byte offset)
 * and the per-type entry points that the traits table (ggml_types.c) points at.
 * Layouts: shared/docs/llamacpp-formats.md §2 (llama.cpp's ggml-common.h). */
#ifndef PISO_FORMATS_GGML_BLOCKS_H
#define PISO_FORMATS_GGML_BLOCKS_H

#include "piso/ggml_quants.h"

#include <stddef.h>

/* fp16 fields are raw IEEE half bits. */
struct piso_block_q8_0 { uint16_t d; int8_t qs[PISO_QK]; };
struct piso_block_q8_1 { uint16_t d, s; int8_t qs[PISO_QK]; };
struct piso_block_q4_0 { uint16_t d; uint8_t qs[PISO_QK / 2]; };
struct piso_block_q4_1 { uint16_t d, m; uint8_t qs[PISO_QK / 2]; };
struct piso_block_q5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[PISO_QK / 2]; };
struct piso_block_q5_1 { uint16_t d, m; uint8_t qh[4]; uint8_t qs[PISO_QK / 2]; };
struct piso_block_iq4_nl { uint16_t d; uint8_t qs[PISO_QK / 2]; };
struct piso_block_mxfp4 { uint8_t e; uint8_t qs[PISO_QK / 2]; };
struct piso_block_nvfp4 { uint8_t d[PISO_QK_NVFP4 / 16]; uint8_t qs[PISO_QK_NVFP4 / 2]; };
struct piso_block_q2_K { uint8_t scales[PISO_QK_K / 16]; uint8_t qs[PISO_QK_K / 4]; uint16_t d, dmin; };
struct piso_block_q3_K { uint8_t hmask[PISO_QK_K / 8]; uint8_t qs[PISO_QK_K / 4]; uint8_t scales[12]; uint16_t d; };
struct piso_block_q4_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[PISO_QK_K / 2]; };
struct piso_block_q5_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[PISO_QK_K / 8]; uint8_t qs[PISO_QK_K / 2]; };
struct piso_block_q6_K { uint8_t ql[PISO_QK_K / 2]; uint8_t qh[PISO_QK_K / 4]; int8_t scales[PISO_QK_K / 16]; uint16_t d; };
struct piso_block_q8_K { float d; int8_t qs[PISO_QK_K]; int16_t bsums[PISO_QK_K / 16]; };

/* Bytes per block as llama.cpp (gguf-py GGML_QUANT_SIZES) has them: the structs carry no padding. */
_Static_assert(sizeof(struct piso_block_q8_0) == 34, "block_q8_0 size");
_Static_assert(sizeof(struct piso_block_q8_1) == 36, "block_q8_1 size");
_Static_assert(sizeof(struct piso_block_q4_0) == 18, "block_q4_0 size");
_Static_assert(sizeof(struct piso_block_q4_1) == 20, "block_q4_1 size");
_Static_assert(sizeof(struct piso_block_q5_0) == 22, "block_q5_0 size");
_Static_assert(sizeof(struct piso_block_q5_1) == 24, "block_q5_1 size");
_Static_assert(sizeof(struct piso_block_iq4_nl) == 18, "block_iq4_nl size");
_Static_assert(sizeof(struct piso_block_mxfp4) == 17, "block_mxfp4 size");
_Static_assert(sizeof(struct piso_block_nvfp4) == 36, "block_nvfp4 size");
_Static_assert(sizeof(struct piso_block_q2_K) == 84, "block_q2_K size");
_Static_assert(sizeof(struct piso_block_q3_K) == 110, "block_q3_K size");
_Static_assert(sizeof(struct piso_block_q4_K) == 144, "block_q4_K size");
_Static_assert(sizeof(struct piso_block_q5_K) == 176, "block_q5_K size");
_Static_assert(sizeof(struct piso_block_q6_K) == 210, "block_q6_K size");
_Static_assert(sizeof(struct piso_block_q8_K) == 292, "block_q8_K size");
/* The decoded blocks hold one code per element of a block. */
_Static_assert(sizeof(((struct piso_blk32 *)0)->q) / sizeof(int16_t) == PISO_QK, "piso_blk32 codes");
_Static_assert(sizeof(((struct piso_blk256 *)0)->q) == PISO_QK_K, "piso_blk256 codes");
_Static_assert(sizeof(((struct piso_blk64 *)0)->q) == PISO_QK_NVFP4, "piso_blk64 codes");

/* Entry points per block type. pack/unpack: one decoded block (struct piso_blk32 for 32-blocks,
 * struct piso_blk256 for the K-quants) <-> its bytes. dequantize_row: k values (a multiple of the
 * block size). quantize_row_ref: llama.cpp's rule for one row of k values, importance-weighted when
 * imatrix ([k]) is given. from_float: the same without an imatrix (ggml's from_float). IQ4_NL
 * packs as Q4_0. NVFP4's decoded block is struct piso_blk64; MXFP4's a piso_blk32 (d = E8M0 byte). */
void piso_ggml_dequantize_row_q8_0(const void *src, float *dst, int64_t k);
void piso_ggml_quantize_row_q8_0_ref(const float *x, void *dst, int64_t k, const float *imatrix);
void piso_ggml_from_float_q8_0(const float *x, void *dst, int64_t k);
void piso_ggml_dequantize_row_q4_0(const void *src, float *dst, int64_t k);
void piso_ggml_quantize_row_q4_0_ref(const float *x, void *dst, int64_t k, const float *imatrix);
void piso_ggml_from_float_q4_0(const float *x, void *dst, int64_t k);
void piso_ggml_dequantize_row_q4_1(const void *src, float *dst, int64_t k);
void piso_ggml_quantize_row_q4_1_ref(const float *x, void *dst, int64_t k, const float *imatrix);
void piso_ggml_from_float_q4_1(const float *x, void *dst, int64_t k);
void piso_ggml_dequantize_row_q5_0(const void *src, float *dst, int64_t k);
void piso_ggml_quantize_row_q5_0_ref(const float *x, void *dst, int64_t k, const float *imatrix);
void piso_ggml_from_float_q5_0(const float *x, void *dst, int64_t k);
void piso_ggml_dequantize_row_q5_1(const void *src, float *dst, int64_t k);
void piso_ggml_quantize_row_q5_1_ref(const float *x, void *dst, int64_t k, const float *imatrix);
void piso_ggml_from_float_q5_1(const float *x, void *dst, int64_t k);
void piso_ggml_dequantize_row_iq4_nl(const void *src, float *dst, int64_t k);
void piso_ggml_quantize_row_iq4_nl_ref(const float *x, void *dst, int64_t k, const float *imatrix);
void piso_ggml_from_float_iq4_nl(const float *x, void *dst, int64_t k);
void piso_ggml_dequantize_row_q4_K(const void *src, float *dst, int64_t k);
void piso_ggml_quantize_row_q4_K_ref(const float *x, void *dst, int64_t k, const float *imatrix);
void piso_ggml_from_float_q4_K(const float *x, void *dst, int64_t k);
void piso_ggml_dequantize_row_q5_K(const void *src, float *dst, int64_t k);
void piso_ggml_quantize_row_q5_K_ref(const float *x, void *dst, int64_t k, const float *imatrix);
void piso_ggml_from_float_q5_K(const float *x, void *dst, int64_t k);
void piso_ggml_dequantize_row_q6_K(const void *src, float *dst, int64_t k);
void piso_ggml_dequantize_row_q2_K(const void *src, float *dst, int64_t k);
void piso_ggml_quantize_row_q2_K_ref(const float *x, void *dst, int64_t k, const float *imatrix);
void piso_ggml_from_float_q2_K(const float *x, void *dst, int64_t k);
void piso_ggml_dequantize_row_q3_K(const void *src, float *dst, int64_t k);
void piso_ggml_quantize_row_q3_K_ref(const float *x, void *dst, int64_t k, const float *imatrix);
void piso_ggml_from_float_q3_K(const float *x, void *dst, int64_t k);
void piso_ggml_dequantize_row_mxfp4(const void *src, float *dst, int64_t k);
void piso_ggml_quantize_row_mxfp4_ref(const float *x, void *dst, int64_t k, const float *imatrix);
void piso_ggml_from_float_mxfp4(const float *x, void *dst, int64_t k);
void piso_ggml_dequantize_row_nvfp4(const void *src, float *dst, int64_t k);
void piso_ggml_quantize_row_nvfp4_ref(const float *x, void *dst, int64_t k, const float *imatrix);
void piso_ggml_from_float_nvfp4(const float *x, void *dst, int64_t k);
void piso_ggml_quantize_row_q6_K_ref(const float *x, void *dst, int64_t k, const float *imatrix);
void piso_ggml_from_float_q6_K(const float *x, void *dst, int64_t k);

void piso_ggml_pack_q8_0(const void *blk, void *dst);
void piso_ggml_unpack_q8_0(const void *src, void *blk);
void piso_ggml_pack_q4_0(const void *blk, void *dst);
void piso_ggml_unpack_q4_0(const void *src, void *blk);
void piso_ggml_pack_q4_1(const void *blk, void *dst);
void piso_ggml_unpack_q4_1(const void *src, void *blk);
void piso_ggml_pack_q5_0(const void *blk, void *dst);
void piso_ggml_unpack_q5_0(const void *src, void *blk);
void piso_ggml_pack_q5_1(const void *blk, void *dst);
void piso_ggml_unpack_q5_1(const void *src, void *blk);
void piso_ggml_pack_q4_K(const void *blk, void *dst);
void piso_ggml_unpack_q4_K(const void *src, void *blk);
void piso_ggml_pack_q5_K(const void *blk, void *dst);
void piso_ggml_unpack_q5_K(const void *src, void *blk);
void piso_ggml_pack_q6_K(const void *blk, void *dst);
void piso_ggml_unpack_q6_K(const void *src, void *blk);
void piso_ggml_pack_q2_K(const void *blk, void *dst);
void piso_ggml_unpack_q2_K(const void *src, void *blk);
void piso_ggml_pack_q3_K(const void *blk, void *dst);
void piso_ggml_unpack_q3_K(const void *src, void *blk);
void piso_ggml_pack_mxfp4(const void *blk, void *dst);
void piso_ggml_unpack_mxfp4(const void *src, void *blk);
void piso_ggml_pack_nvfp4(const void *blk, void *dst);
void piso_ggml_unpack_nvfp4(const void *src, void *blk);

#endif
