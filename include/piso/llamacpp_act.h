/* piso/llamacpp_act.h — llama.cpp's CPU activation rounding, emulated in piso's forward pass.
 *
 * llama.cpp's CPU backend multiplies a quantized weight with an activation that it first converts
 * to the weight type's "vec_dot_type", then takes integer dot products per block. On a quantized
 * GGUF its logits therefore differ from a float evaluation of the same dequantized weights (Q8_0
 * stories260K: mean KLD 0.00130 in llama.cpp vs 0.00056 in float). With this emulation on, piso
 * rounds the input of every linear layer (and of the output head) exactly as llama.cpp converts it
 * for that layer's GGUF weight type, then multiplies in float: the products x̂_i·ŵ_i are the same
 * numbers, only the summation order differs.
 *
 *   weight type                                  vec_dot_type   activation rounding (per row)
 *   F32                                          F32            none
 *   F16 / BF16                                   F16 / BF16     to half / bfloat16, nearest even
 *   Q4_0 Q5_0 Q8_0 IQ4_NL MXFP4 (Q4_1 Q5_1: Q8_1) Q8_0         blocks of 32: d = amax/127 stored
 *                                                               as fp16, q = round_even(x·127/amax),
 *                                                               x̂ = fp16(d)·q (the x86 SIMD rule)
 *   Q2_K..Q6_K (the K-quants)                    Q8_K           blocks of 256: the element of
 *                                                               largest |x| is max, s = -127/max,
 *                                                               q = min(127, round_even(s·x)),
 *                                                               x̂ = (1/s)·q in fp32
 *
 * Q8_1 (Q4_1/Q5_1) rounds the codes as Q8_0; llama.cpp also stores fp16(d·Σq) for the weight's
 * minimum term, which piso takes exactly (a difference below fp16 rounding of one term). */
#ifndef PISO_LLAMACPP_ACT_H
#define PISO_LLAMACPP_ACT_H

#include <stdint.h>

struct piso_model;

/* Turns the emulation on for a model loaded from a GGUF file: records the ggml type of every
 * linear weight of the blocks and of the output head (token_embd when tied). An error names the
 * model when it is not a GGUF, or the tensor whose type has no known vec_dot_type. */
int piso_llamacpp_act_enable(struct piso_model *m);
/* The rows x [n, d] of a linear layer's input <- llama.cpp's rounding for a weight of ggml type
 * `weight_type` (enum piso_ggml_type), each row independently (rows run in parallel; the result
 * does not depend on the thread count). d is a multiple of the block size for every GGUF weight;
 * otherwise the last block is shorter. */
void piso_llamacpp_act_rows(int weight_type, float *x, int64_t n, int64_t d);
/* The name of the vec_dot_type llama.cpp converts activations to for `weight_type` ("q8_0",
 * "q8_K", "f16", "bf16", "f32"), NULL for a type piso does not know. */
const char *piso_llamacpp_vec_dot_name(int weight_type);

#endif
