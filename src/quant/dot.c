/* fp32 → fp64 kernels: a dot product with 16 lanes of fp64 accumulators summed in a fixed order,
 * and an axpy. */
#include "quant/quant_internal.h"

#include <string.h>

typedef float v8f __attribute__((vector_size(32)));
typedef double v8d __attribute__((vector_size(64)));

double piso_dot_fd(const float *a, const float *b, int64_t n) {
    v8d s0 = {0}, s1 = {0};
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        v8f a0, b0, a1, b1; /* memcpy loads: no alignment assumed */
        memcpy(&a0, a + j, 32);
        memcpy(&b0, b + j, 32);
        memcpy(&a1, a + j + 8, 32);
        memcpy(&b1, b + j + 8, 32);
        s0 += __builtin_convertvector(a0, v8d) * __builtin_convertvector(b0, v8d);
        s1 += __builtin_convertvector(a1, v8d) * __builtin_convertvector(b1, v8d);
    }
    v8d s = s0 + s1;
    double acc = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
    for (; j < n; j++) acc += (double)a[j] * b[j];
    return acc;
}

void piso_axpy_fd(double *y, const float *x, double a, int64_t n) {
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        v8f xv;
        v8d yv;
        memcpy(&xv, x + j, 32);
        memcpy(&yv, y + j, 64);
        yv += a * __builtin_convertvector(xv, v8d);
        memcpy(y + j, &yv, 64);
    }
    for (; j < n; j++) y[j] += a * x[j];
}
