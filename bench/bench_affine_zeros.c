/* bench_affine_zeros — 8-bit affine PiSO: piso_solve_affine (exhaustive over the zero points since
 * PISO_AFFINE_ALL_ZEROS_BITS = 8; before, a window of PISO_AFFINE_ZERO_WINDOW zero points on either
 * side of min-max's, which this bench found missing the optimum) against this file's own sweep
 * over all 256 zero points, on random rows with a realistic dense H = XᵀX (correlated inputs).
 * Prints how many rows the window misses the exhaustive optimum on, the largest relative excess of
 * the reconstruction error ‖X(ŵ − w)‖² = E + wᵀHw, and the time of both (ratio in one run).
 *
 *   bench_affine_zeros [n [rows [tail]]]    (defaults 64 200 0; tail 1: Student-t(3) weights) */
#include "piso/quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static uint64_t rng = 88172645463325252ull;
static double urand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return ((rng >> 11) + 0.5) / 9007199254740992.0;
}
static double nrand(void) { return sqrt(-2 * log(urand())) * cos(6.283185307179586 * urand()); }
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* E(s, z) = s²·qᵀHq − 2s·qᵀu for the affine RTN codes (fp64, written here independently) */
static double objective(const float *w, int n, const float *H, const double *u, float s, int z) {
    double a = 0, b = 0;
    for (int i = 0; i < n; i++) {
        double qi = piso_affine_round(w[i] / s, z, 255);
        a += qi * u[i];
        for (int j = 0; j < n; j++) b += qi * H[(size_t)i * n + j] * piso_affine_round(w[j] / s, z, 255);
    }
    return (double)s * s * b - 2.0 * s * a;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 64, rows = argc > 2 ? atoi(argv[2]) : 200, tail = argc > 3 ? atoi(argv[3]) : 0;
    if (n < 2 || rows < 1) return fprintf(stderr, "usage: bench_affine_zeros [n [rows [tail]]]\n"), 2;
    const int T = 4 * n;
    float *X = malloc(sizeof(float) * (size_t)T * n), *H = calloc((size_t)n * n, sizeof(float));
    float *W = malloc(sizeof(float) * (size_t)rows * n);
    double *u = malloc(sizeof(double) * (size_t)n);
    if (!X || !H || !W || !u) return fprintf(stderr, "out of memory\n"), 1;
    for (int t = 0; t < T; t++) { /* correlated inputs: a shared factor plus noise, uneven channel scales */
        double f = nrand();
        for (int i = 0; i < n; i++) X[(size_t)t * n + i] = (float)((0.6 * f + nrand()) * (1 + 3.0 * (i % 7 == 0)));
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int t = 0; t < T; t++) s += (double)X[(size_t)t * n + i] * X[(size_t)t * n + j];
            H[(size_t)i * n + j] = (float)s;
        }
    for (int r = 0; r < rows * n; r++) {
        double v = nrand();
        if (tail) { /* Student-t with 3 degrees of freedom: heavy tails */
            double c = 0;
            for (int k = 0; k < 3; k++) {
                double g = nrand();
                c += g * g; /* chi-square with 3 degrees of freedom */
            }
            v /= sqrt(c / 3);
        }
        W[r] = (float)(0.02 * v + 0.005); /* a small offset: zero points away from the middle */
    }
    double t_win = 0, t_all = 0, worst = 0, sum_excess = 0;
    int missed = 0;
    for (int r = 0; r < rows; r++) {
        const float *w = W + (size_t)r * n;
        for (int i = 0; i < n; i++) {
            double s = 0;
            for (int j = 0; j < n; j++) s += (double)H[(size_t)i * n + j] * w[j];
            u[i] = s;
        }
        double wHw = 0;
        for (int i = 0; i < n; i++) wHw += u[i] * w[i];
        int zw;
        double t0 = now();
        float sw = piso_solve_affine(w, n, H, n, NULL, u, PISO_SCALE_PISO, 8, 0, 0, &zw, NULL);
        t_win += now() - t0;
        double Ew = objective(w, n, H, u, sw, zw), Ea = Ew;
        t0 = now();
        for (int z = 0; z <= 255; z++) { /* the exhaustive sweep: one exact scale sweep per zero point */
            struct piso_grid g;
            piso_grid_affine(8, z, &g);
            float s = piso_solve_scale_dense(w, n, H, n, u, &g, 0, NULL);
            if (!(s > 0) || !isfinite(s)) continue;
            double E = objective(w, n, H, u, s, z);
            if (E < Ea) Ea = E;
        }
        t_all += now() - t0;
        double excess = (Ew - Ea) / (Ea + wHw); /* relative excess of ‖X(ŵ − w)‖² */
        if (excess > 1e-12) missed++;
        if (excess > worst) worst = excess;
        sum_excess += excess;
    }
    printf("n %d, rows %d, weights %s: window missed the exhaustive optimum on %d rows (%.1f%%); "
           "relative excess of the reconstruction error: max %.3g, mean %.3g\n",
           n, rows, tail ? "Student-t(3)" : "Gaussian", missed, 100.0 * missed / rows, worst, sum_excess / rows);
    printf("time: window %.3f s, exhaustive %.3f s (x%.1f; the exhaustive time includes its own fp64 "
           "objective per zero point)\n", t_win, t_all, t_all / t_win);
    free(X), free(H), free(W), free(u);
    return 0;
}
