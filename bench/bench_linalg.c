/* src/linalg throughput: the GPTQ inverse factor (SPD inverse, then upper Cholesky of it) at
 * n = 2048, 4096 (8192 with --big) against the old path (LAPACK on one thread) and against the
 * blocked code on one thread, and fp32/fp64 GEMM GFLOP/s on all threads vs one. Also checks that
 * all threads and one thread give the same bits.
 *
 *   build/bench_linalg [--big]
 */
#include "piso/common.h"
#include "piso/linalg.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static double urand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0 - 0.5;
}

/* a symmetric, diagonally dominant (so SPD) matrix */
static void make_spd(double *A, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        A[i * n + i] = (double)n;
        for (int64_t j = i + 1; j < n; j++) A[i * n + j] = A[j * n + i] = urand();
    }
}

static double factor_seconds(const double *H, double *A, int64_t n, int reference) {
    memcpy(A, H, sizeof(double) * (size_t)(n * n));
    double t = piso_time();
    int64_t rc = reference ? piso_la_reference_inverse_factor_1t(A, n)
                           : (piso_la_spd_inverse(A, n) ? -1 : piso_la_cholesky_upper(A, n));
    t = piso_time() - t;
    if (rc) fprintf(stderr, "factorization failed (%lld)\n", (long long)rc);
    return t;
}

static double gemm_gflops(int dbl, int64_t n, void *a, void *b, void *c) {
    double t = piso_time();
    if (dbl) piso_la_dgemm(0, 1, n, n, n, 1.0, a, n, b, n, 0.0, c, n);
    else piso_la_sgemm(0, 1, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    return 2.0 * n * n * n / (piso_time() - t) / 1e9;
}

int main(int argc, char **argv) {
    int big = argc > 1 && !strcmp(argv[1], "--big");
    int threads = omp_get_max_threads();
    __builtin_cpu_init();
    printf("ISA: avx2 %s, avx512f %s; %d threads\n", __builtin_cpu_supports("avx2") ? "yes" : "no",
           __builtin_cpu_supports("avx512f") ? "yes" : "no", threads);

    int64_t g = 2048;
    double *a = malloc(sizeof(double) * (size_t)(g * g)), *b = malloc(sizeof(double) * (size_t)(g * g));
    double *c = malloc(sizeof(double) * (size_t)(g * g));
    for (int64_t i = 0; i < g * g; i++) a[i] = urand(), b[i] = urand();
    for (int dbl = 0; dbl < 2; dbl++) {
        double all = gemm_gflops(dbl, g, a, b, c);
        omp_set_num_threads(1);
        double one = gemm_gflops(dbl, g, a, b, c);
        omp_set_num_threads(threads);
        printf("%cgemm %lld^3: %.1f GFLOP/s on %d threads, %.1f on 1 (x%.2f)\n", dbl ? 'd' : 's', (long long)g, all,
               threads, one, all / one);
    }
    free(a), free(b), free(c);

    int64_t sizes[] = {2048, 4096, 8192};
    for (int s = 0; s < (big ? 3 : 2); s++) {
        int64_t n = sizes[s];
        double *H = malloc(sizeof(double) * (size_t)(n * n)), *A = malloc(sizeof(double) * (size_t)(n * n));
        double *B = malloc(sizeof(double) * (size_t)(n * n));
        make_spd(H, n);
        double ref = factor_seconds(H, A, n, 1);
        double all = factor_seconds(H, A, n, 0);
        omp_set_num_threads(1);
        double one = factor_seconds(H, B, n, 0);
        omp_set_num_threads(threads);
        printf("inverse factor n=%lld: LAPACK 1 thread %.2f s, blocked 1 thread %.2f s, blocked %d threads %.2f s "
               "(x%.2f vs LAPACK, x%.2f vs 1 thread), bits %s\n",
               (long long)n, ref, one, threads, all, ref / all, one / all,
               memcmp(A, B, sizeof(double) * (size_t)(n * n)) ? "DIFFER" : "identical");
        free(H), free(A), free(B);
    }
    return 0;
}
