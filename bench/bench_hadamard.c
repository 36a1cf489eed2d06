/* Online rotation cost: rotating a batch of activation rows [T, n] by the normalized Hadamard
 * matrix with piso's FWHT (piso_rotate_rows) vs multiplying by the explicit dense n×n matrix
 * (piso_la_sgemm), for the sizes of real models' FFN and hidden widths. Prints both times and
 * their ratio (measured in the same run) and the largest difference of the results.
 *
 *   build/bench_hadamard [--tokens T] [--reps R] */
#include "piso/linalg.h"
#include "piso/transform.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float frand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 - 0.5);
}

int main(int argc, char **argv) {
    int T = 512, reps = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--tokens")) T = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
    }
    /* stories260K FFN, Llama-3.2-1B hidden / FFN, Llama-2-7B FFN, Qwen2.5 FFN sizes */
    static const int sizes[] = {172, 2048, 8192, 11008, 4864};
    printf("rotating %d rows: FWHT (piso_rotate_rows) vs dense H (piso_la_sgemm); best of %d\n", T, reps);
    printf("%8s %6s %12s %12s %8s %10s\n", "n", "base", "fwht_s", "dense_s", "ratio", "max_diff");
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int n = sizes[s];
        if (!piso_hadamard_supported(n)) {
            printf("%8d unsupported\n", n);
            continue;
        }
        float *X = malloc((size_t)T * n * sizeof *X), *Y = malloc((size_t)T * n * sizeof *Y);
        float *Z = malloc((size_t)T * n * sizeof *Z), *Hf = malloc((size_t)n * n * sizeof *Hf);
        int8_t *H = malloc((size_t)n * n);
        if (!X || !Y || !Z || !Hf || !H || piso_hadamard_matrix(n, H)) return 1;
        for (size_t i = 0; i < (size_t)n * n; i++) Hf[i] = (float)(H[i] / sqrt((double)n));
        for (size_t i = 0; i < (size_t)T * n; i++) X[i] = frand();
        double best_f = 1e30, best_d = 1e30;
        for (int r = 0; r < reps; r++) {
            memcpy(Y, X, (size_t)T * n * sizeof *Y);
            double t = piso_time();
            piso_rotate_rows(Y, T, n, n, n, "bench");
            best_f = fmin(best_f, piso_time() - t);
            t = piso_time();
            piso_la_sgemm(0, 1, T, n, n, 1.0f, X, n, Hf, n, 0.0f, Z, n);
            best_d = fmin(best_d, piso_time() - t);
        }
        double diff = 0;
        for (size_t i = 0; i < (size_t)T * n; i++) diff = fmax(diff, fabs(Y[i] - Z[i]));
        printf("%8d %6d %12.5f %12.5f %8.2f %10.2e\n", n, piso_hadamard_base(n), best_f, best_d, best_d / best_f,
               diff);
        free(X), free(Y), free(Z), free(Hf), free(H);
    }
    return 0;
}
