/* Internal helpers of the quantization core (not part of the public API). */
#ifndef PISO_QUANT_INTERNAL_H
#define PISO_QUANT_INTERNAL_H

#include <stdint.h>

/* Σ a[j]·b[j] over fp32 inputs with fp64 products and sums, in a fixed order (vectorised by
 * hand, so the result never depends on threads or compiler reassociation). */
double piso_dot_fd(const float *a, const float *b, int64_t n);

#endif
