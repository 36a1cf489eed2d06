/* piso/checkpoint.h — deployable quantized checkpoints: GPTQ (AutoGPTQ/GPTQModel v1 layout, as
 * vLLM and transformers load it) and compressed-tensors "pack-quantized".
 *
 * A linear layer W [N = out, D = in] with scales s [N, groups], codes c ∈ [0, 2^b − 1] and zero
 * points z [N, groups] (symmetric: z = 2^(b−1)) dequantizes to W[o, i] = s[o, g(i)]·(c[o, i] − z[o, g(i)]).
 *  GPTQ: qweight int32 [D·b/32, N]: column o holds c[o, 0..D) as one little-endian bit stream, value
 *        i at bit b·i (3-bit values straddle words); qzeros int32 [groups, N·b/32]: row g holds
 *        z[0..N, g] − 1 the same way (the v1 convention), masked to b bits; scales fp16 [groups, N];
 *        g_idx int32 [D] (the group of each input). config.json: quantization_config {quant_method
 *        "gptq", checkpoint_format "gptq", bits, group_size (−1: per channel), desc_act, sym}.
 *  compressed-tensors: weight_packed int32 [N, ceil(D/p)], p = 32 / b (integer division: 3-bit puts
 *        10 values in a word), value j of a word at bit b·j, the unsigned code c = q + 2^(b−1);
 *        weight_scale [N, groups]; weight_zero_point int32 [ceil(N/p), groups] packed the same way
 *        along N (asym only; the unsigned zero point); weight_shape int64 [2] = {N, D}.
 *        quantization_config {quant_method "compressed-tensors", format "pack-quantized",
 *        config_groups.group_0 {targets ["Linear"], weights {num_bits, type "int", symmetric,
 *        strategy "channel"|"group", group_size}}, ignore [...]}.
 * Groups: without --act-order contiguous runs of `group` inputs (g_idx[i] = i / group, desc_act
 * false). With --act-order (error-correcting roundings) they follow the order, as GPTQ's desc_act:
 * inputs sorted by diag(H) descending, group k = the k-th block of `group` inputs of that order, so
 * g_idx[i] = position of i / group; the codes stay in input order; desc_act true (GPTQ), actorder
 * "group" + weight_g_idx int32 [D] (compressed-tensors). */
#ifndef PISO_CHECKPOINT_H
#define PISO_CHECKPOINT_H

#include "piso/quant.h"

enum piso_ckpt_format { PISO_CKPT_DENSE = 0, PISO_CKPT_GPTQ, PISO_CKPT_COMPRESSED };
int piso_ckpt_format_from_name(const char *name, enum piso_ckpt_format *out); /* hf, gptq, compressed-tensors */
const char *piso_ckpt_format_name(enum piso_ckpt_format f);

/* Can the format hold this grid and group? An error naming the option otherwise (minifloats and MX
 * formats, narrow grids with --asym, bits outside {2, 3, 4, 8}, groups that are not 0 or a multiple
 * of 32). */
int piso_ckpt_check(enum piso_ckpt_format f, const struct piso_grid *g, int group, int asym);
/* Does a [N, D] layer with this group pack (GPTQ: D·b and N·b multiples of 32; both: the group
 * divides D)? Layers that do not stay dense in model.safetensors and are listed as not quantized. */
int piso_ckpt_layer_packs(enum piso_ckpt_format f, int bits, int group, int64_t N, int64_t D);

/* Bit streams of b-bit unsigned values in uint32 words. Stream: value k at bit b·k, straddling
 * words (GPTQ); per word: p = 32/b values, value k in word k/p at bit b·(k mod p) (compressed-tensors).
 * `stride` is the distance between consecutive words (and values) of one stream. */
void piso_pack_stream(const uint8_t *v, int64_t n, int bits, uint32_t *words, int64_t stride);
uint8_t piso_unpack_stream(const uint32_t *words, int64_t k, int bits, int64_t stride);
void piso_pack_words(const uint8_t *v, int64_t n, int bits, uint32_t *words, int64_t stride);
uint8_t piso_unpack_words(const uint32_t *words, int64_t k, int bits, int64_t stride);

#endif
