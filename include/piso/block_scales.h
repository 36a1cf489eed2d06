/* piso/block_scales.h — exact optimal scales for llama.cpp's block formats.
 *
 * Objective of one block: E = Σ_i w_i (x_i − x̂_i)², x̂ the dequantized block as llama.cpp computes
 * it, w_i the importance of input column i (an imatrix entry; 1 without one). */
#ifndef PISO_BLOCK_SCALES_H
#define PISO_BLOCK_SCALES_H

#include "piso/common.h"

/* Exact minimiser over (d, L) of Σ w_i (x_i − d·L_i)² with integer L_i ∈ [lo, hi] (lo ≤ 0 < hi), by
 * the breakpoint sweep over s = 1/d (both signs when allow_negative), followed by the exact search
 * over fp16 values of d: every fp16 d whose RTN levels could beat the best found is evaluated.
 * Outputs: *d16 the fp16 bits of the stored scale, L[n] the RTN levels for it, *E16 its objective,
 * *E_real the objective of the real-valued optimum (a lower bound on *E16). Returns 0, or -1 if n is
 * out of range (1..256). Weights all zero are treated as all one. */
int piso_block_sweep(const float *x, const float *w, int n, int lo, int hi, int allow_negative,
                     uint16_t *d16, int *L, double *E16, double *E_real);

/* The same for a sorted table of levels t[nv] (IQ4_NL: piso_iq4nl_values); L receives table indices. */
int piso_block_sweep_table(const float *x, const float *w, int n, const int8_t *t, int nv, int allow_negative,
                           uint16_t *d16, int *L, double *E16, double *E_real);

/* Weighted error of a packed block against x (n = block size), for comparisons and tests. */
double piso_block_error(int type, const void *blk, const float *x, const float *w);

/* Quantizes rows with piso's exact scales. weights: [n_per_row] column importances (NULL: all one).
 * For the symmetric formats (Q8_0, Q4_0, Q5_0, IQ4_NL) the result is exact on the fp16 grid; for Q4_1/Q5_1
 * the scale is exact given the min (alternating refits of the min); for K-quants the sub-block
 * scales and mins come from the exact sweep, the super-block scales from the same sweep on the
 * sub-block scales, and each block is kept only if it beats llama.cpp's rule (with the same
 * importance) on the weighted objective. Returns the bytes written. */
size_t piso_ggml_quantize_piso(int type, const float *x, void *dst, int64_t nrows, int64_t n_per_row,
                               const float *weights);
/* blend: weigh each element by h·sqrt(σ² + x²) instead of h, llama.cpp's empirical imatrix
 * weighting (σ² = the row's mean square for 32-blocks, twice the super-block's for Q4_K/Q5_K;
 * Q6_K keeps h, as llama.cpp). The objective, and the safety net against llama.cpp's block, then use
 * those weights. */
size_t piso_ggml_quantize_piso_ex(int type, const float *x, void *dst, int64_t nrows, int64_t n_per_row,
                                  const float *weights, int blend);

/* FP4 scale searches over every representable scale (exhaustive up to the scales that are provably
 * dominated: those giving all zeros beyond the smallest of them, and those saturating every element
 * below the largest of them). Elements round to the nearest E2M1 value. MXFP4: the E8M0 exponent of
 * a block of n elements; NVFP4: the UE4M3 code (0..0x7E) of a sub-block, with the tensor scale
 * tscale multiplied in (x ≈ kvalue·ue4m3(c)·tscale). Weights w[n] > 0 count (zero: ignored).
 * Return the number of scales evaluated. */
int piso_mxfp4_best_exponent(const float *x, const float *w, int n, uint8_t *e, double *E);
int piso_nvfp4_best_code(const float *x, const float *w, int n, float tscale, uint8_t *c, double *E);

/* NVFP4 tensor with piso's scales: every sub-block's UE4M3 code exact (above) for the tensor scale
 * s; with tensor_scale, s is the best (on Σ w (x − x̂)²) of 1 (llama.cpp's, no scale tensor), the
 * NVIDIA recipe s0 = max|x|/(6·448), and s0·2^(i/32), i = 1..7 — never worse than either recipe.
 * *scale_out = s (written by the GGUF exporter as NAME.scale, which llama.cpp multiplies into the
 * matmul output). Returns the bytes written (0 on error). */
size_t piso_nvfp4_quantize_tensor(const float *x, void *dst, int64_t nrows, int64_t n_per_row, const float *weights,
                                  int tensor_scale, float *scale_out);

/* Dense calibration, GPTQ-interleaved: each row of W [N, D] is quantized block by block, left to
 * right; a block's scales are chosen on the error-updated weights (Q8_0/Q4_0/Q5_0: the exact sweep
 * with the dense block H_gg, fp16-rounded; other types: the exact diagonal method with diag(H)),
 * then its elements are rounded one at a time against those scales with GPTQ's error feedback
 * through the upper Cholesky factor of (H + λI)⁻¹ (λ = 1% of the mean diagonal, dead inputs counted
 * as 1 and given H_ii = 1; ×10 until it factors): the engine's lazy-batch sweep (src/quant/ec_engine.h)
 * with the block rounding as its rounder. H [D, D] symmetric PSD. Returns the bytes written, 0 on failure (with a message). */
size_t piso_ggml_quantize_gptq(int type, const float *W, void *dst, int64_t N, int64_t D, const float *H);

#endif
