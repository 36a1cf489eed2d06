/* Internal helpers of the quantization core (not part of the public API). */
#ifndef PISO_QUANT_INTERNAL_H
#define PISO_QUANT_INTERNAL_H

#include <stdint.h>

/* Σ a[j]·b[j] over fp32 inputs with fp64 products and sums, in a fixed order (vectorised by
 * hand, so the result never depends on threads or compiler reassociation). */
double piso_dot_fd(const float *a, const float *b, int64_t n);
/* y[j] += a·x[j] (fp64 y, fp32 x), vectorised by hand; element-wise, so order-free. */
void piso_axpy_fd(double *y, const float *x, double a, int64_t n);

/* The AXE step (algorithms.md §8) for one weight of a tile with code sums *p, *n: x = value/scale is
 * soft-thresholded by θ (code units; 0: none), rounded to the grid, clamped to the tile's code limits
 * (piso_accum_code_limits), and the sums updated; returns the integer code. */
struct piso_accum;
struct piso_grid;
int piso_axe_code(const struct piso_accum *a, const struct piso_grid *g, int64_t *p, int64_t *n, double theta,
                  float x);
/* The AXE soft threshold of one tile, in code units: the ℓ1-ball threshold (radius
 * piso_accum_l1_radius) of |w_i/s − mean(w/s)| over the entries w[idx[i]] (idx NULL: w[i]), i < n. */
double piso_axe_theta(const float *w, const int *idx, int n, float s, double radius);

/* Channel-wise PiSO scales of the N rows exactly as piso_quantize_layer chooses them (the same fp64
 * products, the pruned sweep), without quantizing the layer or computing its objectives. Returns 1
 * when opts are not channel-wise PiSO of that kind (groups, block formats, accumulator limits, zero
 * points, fp16 scales: use piso_quantize_layer), 0 done, −1 on error (piso_last_error). */
struct piso_layer_problem;
struct piso_quant_opts;
int piso_layer_channel_scales(const struct piso_layer_problem *p, const struct piso_quant_opts *opts, float *scales);

/* Whether X̃ [T, n] (row stride ldx; NULL: no) serves as H's factor H = X̃ᵀX̃ in the X̃ forms (of the
 * pruned sweep, piso_solve_scales_rows_x, and of the layer's fp64 products): T padded to 32 at most
 * n/2, and diag(X̃ᵀX̃) = diag(H) up to fp32 round-off (a cheap guard against a wrong X̃). */
int piso_xform_usable(const float *X, int64_t T, int64_t ldx, int n, const float *H, int ldh);

#endif
