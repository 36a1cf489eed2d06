/* fp32 × fp32 → fp64 dot product: 16 lanes of fp64 accumulators, summed in a fixed order. */
#include "quant/quant_internal.h"

#include <string.h>

typedef float v8f __attribute__((vector_size(32)));
typedef double v8d __attribute__((vector_size(64)));

static inline v8d load8(const float *p) {
    v8f v;
    memcpy(&v, p, sizeof v);
    return __builtin_convertvector(v, v8d);
}

double piso_dot_fd(const float *a, const float *b, int64_t n) {
    v8d s0 = {0}, s1 = {0};
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        s0 += load8(a + j) * load8(b + j);
        s1 += load8(a + j + 8) * load8(b + j + 8);
    }
    v8d s = s0 + s1;
    double acc = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
    for (; j < n; j++) acc += (double)a[j] * b[j];
    return acc;
}
