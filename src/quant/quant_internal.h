/* Internal helpers of the quantization core (not part of the public API). */
#ifndef PISO_QUANT_INTERNAL_H
#define PISO_QUANT_INTERNAL_H

#include <stdint.h>

/* Σ a[j]·b[j] over fp32 inputs with fp64 products and sums, in a fixed order (vectorised by
 * hand, so the result never depends on threads or compiler reassociation). */
double piso_dot_fd(const float *a, const float *b, int64_t n);
/* y[j] += a·x[j] (fp64 y, fp32 x), vectorised by hand; element-wise, so order-free. */
void piso_axpy_fd(double *y, const float *x, double a, int64_t n);

#endif
