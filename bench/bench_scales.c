/* bench_scales — time every scale method on a D×D layer (default 4096) with a realistic H:
 * X [T, D] = Z·M (Z Gaussian, M = I + Gaussian mixing / sqrt(D)) with a few outlier channels ×20,
 * H = XᵀX (ssyrk). Each time is printed as a ratio to one D³ sgemm measured in the same run.
 * The dense exact methods cost O(D²·|grid|) per row: they are timed on a subset of rows and
 * extrapolated to all rows (the table says which). Objectives are Σ over the first R rows
 * (the same rows for every method), so methods compare on equal footing.
 *
 * usage: bench_scales [D] [rows-for-slow-methods] [T] [only-this-method] */
#include "piso/linalg.h"
#include "piso/quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 88172645463325252ull;
static double urand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static float nrand(void) {
    double a = urand() * 0.999999 + 1e-7, b = urand();
    return (float)(sqrt(-2 * log(a)) * cos(6.283185307179586 * b));
}

int main(int argc, char **argv) {
    int D = argc > 1 ? atoi(argv[1]) : 4096;
    int R = argc > 2 ? atoi(argv[2]) : 64;
    int T = argc > 3 ? atoi(argv[3]) : D;
    const char *only = argc > 4 ? argv[4] : NULL;
    int N = D;
    if (D < 64 || R < 1 || R > N || T < 1) {
        fprintf(stderr, "usage: bench_scales [D >= 64] [rows 1..D] [T]\n");
        return 2;
    }
    piso_set_quiet(1);
    size_t DD = (size_t)D * D;
    float *Z = malloc(sizeof(float) * (size_t)T * D), *M = malloc(sizeof(float) * DD);
    float *X = malloc(sizeof(float) * (size_t)T * D), *H = malloc(sizeof(float) * DD);
    float *W = malloc(sizeof(float) * (size_t)N * D);
    for (size_t k = 0; k < (size_t)T * D; k++) Z[k] = nrand();
    for (size_t k = 0; k < DD; k++) M[k] = nrand() / sqrtf((float)D);
    for (int i = 0; i < D; i++) M[(size_t)i * D + i] += 1.0f;
    for (size_t k = 0; k < (size_t)N * D; k++) W[k] = 0.02f * nrand() * (urand() < 0.01 ? 4.0f : 1.0f);

    /* reference: one D³ sgemm (after a warm-up, which also produces X when T == D) */
    piso_la_sgemm(0, 0, T, D, D, 1.0f, Z, D, M, D, 0.0f, X, D);
    /* the best of three, so that a busy machine disturbs the reference as little as possible */
    float *C = malloc(sizeof(float) * DD);
    double t_gemm = INFINITY;
    for (int k = 0; k < 3; k++) {
        double t0 = piso_time();
        piso_la_sgemm(0, 0, D, D, D, 1.0f, M, D, M, D, 0.0f, C, D);
        double t = piso_time() - t0;
        if (t < t_gemm) t_gemm = t;
    }
    free(C);
    for (int t = 0; t < T; t++)
        for (int j = 0; j < 8; j++) X[(size_t)t * D + (size_t)j * (D / 8) + 3] *= 20.0f; /* outliers */
    piso_la_ssyrk_t(D, T, 1.0f / (float)T, X, D, 0.0f, H, D);
    for (int i = 0; i < D; i++)
        for (int j = i + 1; j < D; j++) H[(size_t)j * D + i] = H[(size_t)i * D + j];
    free(Z);
    free(M);
    free(X);

    printf("bench_scales: layer %d x %d, H = X^T X with T = %d correlated inputs (8 outlier channels x20), "
           "%d threads\n", N, D, T, piso_num_threads());
    printf("reference: sgemm %d^3 = %.3f s (%.1f GFLOP/s, best of 3)\n", D, t_gemm, 2.0 * D * (double)D * D / t_gemm / 1e9);
    printf("slow methods timed on the first %d rows and extrapolated to %d rows (marked *)\n\n", R, N);
    printf("| format | group | method | rows timed | seconds (for %d rows) | x sgemm | objective (first %d rows) |\n", N, R);
    printf("|---|---|---|---|---|---|---|\n");

    const char *formats[] = {"int4", "int2"};
    struct {
        enum piso_scale_method m;
        int group, slow;
    } runs[] = {
        {PISO_SCALE_ABSMAX, 0, 0},       {PISO_SCALE_MSE_GRID, 0, 0}, {PISO_SCALE_PISO_DATAFREE, 0, 0},
        {PISO_SCALE_PISO_DIAG, 0, 0},    {PISO_SCALE_PISO, 0, 1},     {PISO_SCALE_ABSMAX, 128, 0},
        {PISO_SCALE_PISO_DIAG, 128, 0},  {PISO_SCALE_PISO, 128, 0},   {PISO_SCALE_PISO_SEQ, 128, 0},
        {PISO_SCALE_PISO, 32, 0},        {PISO_SCALE_PISO_SEQ, 32, 0},
    };
    for (int f = 0; f < 2; f++)
        for (size_t k = 0; k < sizeof runs / sizeof *runs; k++) {
            struct piso_quant_opts o = {.group = runs[k].group, .method = runs[k].m, .allow_negative = 1};
            if (only && strcmp(only, piso_scale_method_name(o.method)) != 0) continue;
            piso_grid_init(&o.grid, formats[f], 0);
            int rows = runs[k].slow ? R : N;
            struct piso_layer_problem p = {.N = rows, .D = D, .W = W, .H = H, .G = NULL};
            struct piso_layer_result r;
            double ts = piso_time();
            if (piso_quantize_layer(&p, &o, &r) != 0) {
                fprintf(stderr, "bench_scales: %s\n", piso_last_error());
                return 1;
            }
            double el = piso_time() - ts, full = el * (double)N / rows;
            double obj = 0;
            for (int i = 0; i < R; i++) obj += r.row_objective[i];
            printf("| %s | %s%d | %s | %d | %.3f%s | %.2f | %.6g |\n", formats[f], runs[k].group ? "" : "row ",
                   runs[k].group ? runs[k].group : D, piso_scale_method_name(o.method), rows, full,
                   runs[k].slow ? "*" : "", full / t_gemm, obj);
            fflush(stdout);
            piso_layer_result_free(&r);
        }
    free(H);
    free(W);
    return 0;
}
