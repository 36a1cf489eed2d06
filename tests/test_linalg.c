/* src/linalg against independent references: GEMM/SYRK/Gram against a naive fp64 triple loop,
 * Cholesky and inverse against the defining identities (UᵀU = A, A⁻¹A = I), the damped factor
 * against RᵀR(H + λI) = I and a hand-worked retry count, power iteration against closed forms, and
 * every function bit-identical for 1 and 2 threads on shapes that span several tiles. */
#include "harness.h"
#include "piso/common.h"
#include "piso/linalg.h"

#include <omp.h>
#include <stdint.h>

static uint64_t rng_state = 88172645463325252ull;
static double urand(void) { /* xorshift64, uniform in [-1, 1) */
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / (double)(1ull << 52) - 1.0;
}
static float *frand(int64_t n) {
    float *x = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) x[i] = (float)urand();
    return x;
}
static double *drand(int64_t n) {
    double *x = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) x[i] = urand();
    return x;
}

/* op(X)[i, k] of a row-major X with leading dimension ld */
static double at(const void *X, int is_double, int trans, int64_t ld, int64_t i, int64_t k) {
    int64_t idx = trans ? k * ld + i : i * ld + k;
    return is_double ? ((const double *)X)[idx] : ((const float *)X)[idx];
}

/* max over C of |C − ref| / (|alpha|·Σ|a||b| + |beta·C0| + tiny): the error relative to the
 * magnitude the sum passes through */
static double gemm_rel_err(int dbl, int ta, int tb, int64_t M, int64_t N, int64_t K, double alpha, const void *A,
                           int64_t lda, const void *B, int64_t ldb, double beta, const void *C0, const void *C,
                           int64_t ldc) {
    double worst = 0;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0, mag = 0;
            for (int64_t k = 0; k < K; k++) {
                double p = at(A, dbl, ta, lda, i, k) * at(B, dbl, tb, ldb, k, j);
                s += p, mag += fabs(p);
            }
            double c0 = beta != 0 ? at(C0, dbl, 0, ldc, i, j) : 0;
            double ref = alpha * s + beta * c0, got = at(C, dbl, 0, ldc, i, j);
            double e = fabs(got - ref) / (fabs(alpha) * mag + fabs(beta * c0) + 1e-300);
            if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
        }
    return worst;
}

static const int64_t shapes[][3] = {{1, 1, 1}, {7, 1, 300}, {1, 257, 7}, {257, 300, 65}, {300, 7, 257}, {520, 600, 80}};

static void test_gemm(void) {
    for (int dbl = 0; dbl < 2; dbl++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
                    for (int zero_beta = 0; zero_beta < 2; zero_beta++) {
                        int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                        int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
                        int64_t na = (ta ? K : M) * lda, nb = (tb ? N : K) * ldb, nc = M * ldc;
                        double alpha = 0.75, beta = zero_beta ? 0.0 : -0.5;
                        size_t es = dbl ? sizeof(double) : sizeof(float);
                        void *A = dbl ? (void *)drand(na) : (void *)frand(na);
                        void *B = dbl ? (void *)drand(nb) : (void *)frand(nb);
                        void *C0 = dbl ? (void *)drand(nc) : (void *)frand(nc);
                        if (zero_beta) /* beta = 0 must ignore C, NaN included */
                            for (int64_t i = 0; i < nc; i++) {
                                if (dbl) ((double *)C0)[i] = NAN;
                                else ((float *)C0)[i] = NAN;
                            }
                        void *C = malloc(es * (size_t)nc);
                        memcpy(C, C0, es * (size_t)nc);
                        if (dbl) piso_la_dgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
                        else piso_la_sgemm(ta, tb, M, N, K, (float)alpha, A, lda, B, ldb, (float)beta, C, ldc);
                        double e = gemm_rel_err(dbl, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C0, C, ldc);
                        double tol = (dbl ? 2.3e-16 : 1.2e-7) * (double)(K + 2);
                        CHECK(e <= tol, "%cgemm ta=%d tb=%d %lldx%lldx%lld beta=%g: rel err %g > %g", dbl ? 'd' : 's',
                              ta, tb, (long long)M, (long long)N, (long long)K, beta, e, tol);
                        /* the padding between rows of C is untouched */
                        int pad_ok = 1;
                        for (int64_t i = 0; i < M; i++)
                            for (int64_t j = N; j < ldc; j++)
                                pad_ok &= !memcmp((char *)C + es * (size_t)(i * ldc + j),
                                                  (char *)C0 + es * (size_t)(i * ldc + j), es);
                        CHECK(pad_ok, "gemm wrote outside [M, N] of C");
                        free(A), free(B), free(C0), free(C);
                    }
}

static void test_syrk_gram(void) {
    static const int64_t sz[][2] = {{1, 1}, {7, 300}, {300, 7}, {600, 90}};
    for (size_t s = 0; s < sizeof sz / sizeof sz[0]; s++)
        for (int dbl = 0; dbl < 2; dbl++) {
            int64_t n = sz[s][0], k = sz[s][1], lda = n + 3, ldc = n + 1;
            size_t es = dbl ? sizeof(double) : sizeof(float);
            void *A = dbl ? (void *)drand(k * lda) : (void *)frand(k * lda);
            void *C0 = dbl ? (void *)drand(n * ldc) : (void *)frand(n * ldc), *C = malloc(es * (size_t)(n * ldc));
            for (int64_t i = 0; i < n; i++) /* a symmetric start for beta ≠ 0 */
                for (int64_t j = 0; j < i; j++)
                    memcpy((char *)C0 + es * (size_t)(i * ldc + j), (char *)C0 + es * (size_t)(j * ldc + i), es);
            memcpy(C, C0, es * (size_t)(n * ldc));
            if (dbl) piso_la_dsyrk_t(n, k, 0.5, A, lda, 2.0, C, ldc);
            else piso_la_ssyrk_t(n, k, 0.5f, A, lda, 2.0f, C, ldc);
            double e = gemm_rel_err(dbl, 1, 0, n, n, k, 0.5, A, lda, A, lda, 2.0, C0, C, ldc);
            double tol = (dbl ? 2.3e-16 : 1.2e-7) * (double)(k + 2);
            CHECK(e <= tol, "%csyrk n=%lld k=%lld rel err %g", dbl ? 'd' : 's', (long long)n, (long long)k, e);
            int sym = 1;
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < i; j++)
                    sym &= !memcmp((char *)C + es * (size_t)(i * ldc + j), (char *)C + es * (size_t)(j * ldc + i), es);
            CHECK(sym, "syrk result is not exactly symmetric (n=%lld)", (long long)n);
            free(A), free(C0), free(C);
        }
    /* Gram over 3 windows, cross (A ≠ B) and symmetric (B == A), against an fp64 sum of all rows */
    int64_t n = 270, m = 300, t = 50, W = 3;
    float *A = frand(W * t * n), *B = frand(W * t * m), *scratch = malloc(sizeof(float) * (size_t)(n * m));
    double *G = calloc((size_t)(n * m), sizeof(double)), *S = calloc((size_t)(n * n), sizeof(double));
    for (int64_t w = 0; w < W; w++) {
        piso_la_gram_add(G, A + w * t * n, B + w * t * m, t, n, m, scratch);
        piso_la_gram_add(S, A + w * t * n, A + w * t * n, t, n, n, scratch);
    }
    double eg = 0, es = 0;
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < m; j++) {
            double s = 0, mag = 0;
            for (int64_t r = 0; r < W * t; r++) s += (double)A[r * n + i] * B[r * m + j], mag += fabs((double)A[r * n + i] * B[r * m + j]);
            eg = fmax(eg, fabs(G[i * m + j] - s) / mag);
        }
        for (int64_t j = 0; j < n; j++) {
            double s = 0, mag = 0;
            for (int64_t r = 0; r < W * t; r++) s += (double)A[r * n + i] * A[r * n + j], mag += fabs((double)A[r * n + i] * A[r * n + j]);
            es = fmax(es, fabs(S[i * n + j] - s) / mag);
        }
    }
    CHECK(eg <= 1.2e-7 * (t + 2), "gram cross rel err %g", eg);
    CHECK(es <= 1.2e-7 * (t + 2), "gram symmetric rel err %g", es);
    free(A), free(B), free(scratch), free(G), free(S);
    /* from 512 inputs on the symmetric product is a SYRK: same accuracy, exactly symmetric */
    n = 530, t = 40, W = 2;
    A = frand(W * t * n), scratch = malloc(sizeof(float) * (size_t)(n * n));
    S = calloc((size_t)(n * n), sizeof(double));
    for (int64_t w = 0; w < W; w++) piso_la_gram_add(S, A + w * t * n, A + w * t * n, t, n, n, scratch);
    es = 0;
    int sym = 1;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0, mag = 0;
            for (int64_t r = 0; r < W * t; r++) s += (double)A[r * n + i] * A[r * n + j], mag += fabs((double)A[r * n + i] * A[r * n + j]);
            es = fmax(es, fabs(S[i * n + j] - s) / mag);
            sym &= S[i * n + j] == S[j * n + i];
        }
    CHECK(es <= 1.2e-7 * (t + 2) && sym, "gram symmetric n=%lld: rel err %g, symmetric %d", (long long)n, es, sym);
    free(A), free(scratch), free(S);
}

/* piso_la_gram_add_panels against piso_la_gram_add (checked above against fp64 sums): the same
 * bits, for the SYRK (n ≥ 512), small symmetric and cross products, panels of one tile, of a size
 * rounded up to whole tiles, and of the whole matrix, over three windows; and against the fp64 sum. */
static void test_gram_panels(void) {
    const int64_t shapes[][2] = {{530, 530}, {270, 270}, {530, 300}, {300, 530}};
    const int64_t panels[] = {1, 300, 100000};
    const int64_t t = 40, W = 3;
    for (size_t sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++) {
        int64_t n = shapes[sh][0], m = shapes[sh][1];
        int sym = n == m;
        float *A = frand(W * t * n), *B = sym ? A : frand(W * t * m), *scratch = malloc(sizeof(float) * (size_t)(n * m));
        double *ref = calloc((size_t)(n * m), sizeof(double));
        for (int64_t w = 0; w < W; w++) piso_la_gram_add(ref, A + w * t * n, B + w * t * m, t, n, m, scratch);
        for (size_t pi = 0; pi < sizeof panels / sizeof panels[0]; pi++) {
            double *acc = calloc((size_t)(n * m), sizeof(double));
            for (int64_t w = 0; w < W; w++)
                piso_la_gram_add_panels(acc, A + w * t * n, B + w * t * m, t, n, m, panels[pi], scratch);
            CHECK(!memcmp(acc, ref, sizeof(double) * (size_t)(n * m)), "gram panels %lld×%lld, panel %lld: bits differ",
                  (long long)n, (long long)m, (long long)panels[pi]);
            double e = 0;
            for (int64_t i = 0; i < n; i += 7)
                for (int64_t j = 0; j < m; j += 5) {
                    double s = 0, mag = 0;
                    for (int64_t r = 0; r < W * t; r++) {
                        double pr = (double)A[r * n + i] * B[r * m + j];
                        s += pr, mag += fabs(pr);
                    }
                    e = fmax(e, fabs(acc[i * m + j] - s) / mag);
                }
            CHECK(e <= 1.2e-7 * (t + 2), "gram panels %lld×%lld rel err %g", (long long)n, (long long)m, e);
            free(acc);
        }
        if (!sym) free(B);
        free(A), free(scratch), free(ref);
    }
}

/* A random SPD matrix: XᵀX/k + I/2 for X [k, n] */
static double *spd(int64_t n) {
    int64_t k = n + 8;
    double *X = drand(k * n), *A = malloc(sizeof(double) * (size_t)(n * n));
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) A[i * n + j] = 0;
    for (int64_t r = 0; r < k; r++)
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++) A[i * n + j] += X[r * n + i] * X[r * n + j] / (double)k;
    for (int64_t i = 0; i < n; i++) A[i * n + i] += 0.5;
    free(X);
    return A;
}

static void test_cholesky_inverse(void) {
    static const int64_t sizes[] = {1, 2, 63, 64, 65, 256, 257, 300, 700};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int64_t n = sizes[s];
        double *A = spd(n), *U = malloc(sizeof(double) * (size_t)(n * n)), *V = malloc(sizeof(double) * (size_t)(n * n));
        memcpy(U, A, sizeof(double) * (size_t)(n * n));
        for (int64_t i = 0; i < n; i++) /* only the upper triangle may be read */
            for (int64_t j = 0; j < i; j++) U[i * n + j] = NAN;
        CHECK(piso_la_cholesky_upper(U, n) == 0, "cholesky n=%lld failed", (long long)n);
        double err = 0, nrm = 0;
        int lower_zero = 1;
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++) {
                if (j < i) lower_zero &= U[i * n + j] == 0;
                double s = 0;
                for (int64_t k = 0; k <= (i < j ? i : j); k++) s += U[k * n + i] * U[k * n + j];
                err += (s - A[i * n + j]) * (s - A[i * n + j]), nrm += A[i * n + j] * A[i * n + j];
            }
        CHECK(lower_zero, "cholesky n=%lld: strict lower triangle not zero", (long long)n);
        CHECK(sqrt(err / nrm) <= 1e-14 * sqrt((double)n) + 1e-15, "cholesky n=%lld: |UᵀU − A|/|A| = %g", (long long)n,
              sqrt(err / nrm));
        memcpy(V, A, sizeof(double) * (size_t)(n * n));
        CHECK(piso_la_spd_inverse(V, n) == 0, "inverse n=%lld failed", (long long)n);
        double worst = 0;
        int sym = 1;
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++) {
                double s = 0;
                for (int64_t k = 0; k < n; k++) s += V[i * n + k] * A[k * n + j];
                worst = fmax(worst, fabs(s - (i == j)));
                sym &= V[i * n + j] == V[j * n + i];
            }
        CHECK(worst <= 1e-11, "inverse n=%lld: max |A⁻¹A − I| = %g", (long long)n, worst);
        CHECK(sym, "inverse n=%lld not exactly symmetric", (long long)n);
        free(A), free(U), free(V);
    }
    /* not positive definite: a negative pivot at column k (0-based) is reported as k + 1 */
    static const int64_t bad[] = {0, 5, 300, 599};
    for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
        int64_t n = 600, k = bad[b];
        double *A = spd(n);
        A[k * n + k] = -1.0;
        double *B = malloc(sizeof(double) * (size_t)(n * n));
        memcpy(B, A, sizeof(double) * (size_t)(n * n));
        int64_t c = piso_la_cholesky_upper(A, n), ci = piso_la_spd_inverse(B, n);
        CHECK(c == k + 1, "non-PD at column %lld: cholesky returned %lld", (long long)k, (long long)c);
        CHECK(ci == k + 1, "non-PD at column %lld: inverse returned %lld", (long long)k, (long long)ci);
        free(A), free(B);
    }
}

/* diag(A⁻¹) from the Cholesky factor against the diagonal of the whole inverse (piso_la_spd_inverse,
 * itself checked against A⁻¹A = I above); the factor in the upper triangle stays; 1 and 2 threads
 * give the same bits. */
static void test_inverse_diag(void) {
    static const int64_t sizes[] = {1, 2, 255, 257, 300, 700};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int64_t n = sizes[s];
        double *A = spd(n), *U = malloc(sizeof(double) * (size_t)(n * n)), *V = malloc(sizeof(double) * (size_t)(n * n));
        double *W = malloc(sizeof(double) * (size_t)(n * n)), *d1 = malloc(sizeof(double) * (size_t)n);
        double *d2 = malloc(sizeof(double) * (size_t)n);
        memcpy(U, A, sizeof(double) * (size_t)(n * n));
        memcpy(V, A, sizeof(double) * (size_t)(n * n));
        CHECK(piso_la_cholesky_upper(U, n) == 0 && piso_la_spd_inverse(V, n) == 0, "n=%lld: factor", (long long)n);
        memcpy(W, U, sizeof(double) * (size_t)(n * n));
        omp_set_num_threads(1);
        CHECK(piso_la_inverse_diag_from_factor(U, n, d1) == 0, "n=%lld: inverse diagonal", (long long)n);
        omp_set_num_threads(2);
        memcpy(A, W, sizeof(double) * (size_t)(n * n));
        CHECK(piso_la_inverse_diag_from_factor(A, n, d2) == 0, "n=%lld: inverse diagonal, 2 threads", (long long)n);
        double worst = 0;
        int upper_kept = 1;
        for (int64_t i = 0; i < n; i++) {
            worst = fmax(worst, fabs(d1[i] - V[i * n + i]) / V[i * n + i]);
            for (int64_t j = i; j < n; j++) upper_kept &= U[i * n + j] == W[i * n + j];
        }
        CHECK(worst <= 1e-12, "n=%lld: diag(A⁻¹) from the factor vs the inverse: %g (relative)", (long long)n, worst);
        CHECK(upper_kept, "n=%lld: the factor was changed", (long long)n);
        CHECK(!memcmp(d1, d2, sizeof(double) * (size_t)n), "n=%lld: 1 and 2 threads differ", (long long)n);
        free(A), free(U), free(V), free(W), free(d1), free(d2);
    }
}

/* max |RᵀR·(H' + λI) − I| and max |inv·(H' + λI) − I|, H' = H with dead diagonals set to 1 */
static void check_factor(const float *H, int64_t n, const double *R, const double *inv, double lambda, double tol,
                         const char *what) {
    double *M = malloc(sizeof(double) * (size_t)(n * n)), *Q = calloc((size_t)(n * n), sizeof(double));
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++)
            M[i * n + j] = i == j ? (H[i * n + i] > 0 ? H[i * n + i] : 1.0) + lambda : H[i * n + j];
    for (int64_t k = 0; k < n; k++) /* Q = RᵀR */
        for (int64_t i = k; i < n; i++)
            for (int64_t j = k; j < n; j++) Q[i * n + j] += R[k * n + i] * R[k * n + j];
    double e1 = 0, e2 = 0;
    int lower_zero = 1;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double s1 = 0, s2 = 0;
            for (int64_t k = 0; k < n; k++) s1 += Q[i * n + k] * M[k * n + j], s2 += inv[i * n + k] * M[k * n + j];
            e1 = fmax(e1, fabs(s1 - (i == j))), e2 = fmax(e2, fabs(s2 - (i == j)));
            if (j < i) lower_zero &= R[i * n + j] == 0;
        }
    CHECK(e1 <= tol, "%s: max |RᵀR(H + λI) − I| = %g", what, e1);
    CHECK(e2 <= tol, "%s: max |inv·(H + λI) − I| = %g", what, e2);
    CHECK(lower_zero, "%s: R not upper triangular", what);
    free(M), free(Q);
}

static void test_damped(void) {
    int64_t n = 300, t = 120; /* H = XᵀX of rank t < n: singular, needs the damping */
    float *X = frand(t * n), *H = calloc((size_t)(n * n), sizeof(float));
    for (int64_t r = 0; r < t; r++)
        for (int64_t i = 0; i < n; i++) X[r * n + i] *= (i % 37 == 5) ? 0.0f : 1.0f; /* dead inputs */
    double sum_diag = 0;
    int64_t dead = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0;
            for (int64_t r = 0; r < t; r++) s += (double)X[r * n + i] * X[r * n + j];
            H[i * n + j] = (float)s;
        }
    for (int64_t i = 0; i < n; i++) sum_diag += H[i * n + i] > 0 ? H[i * n + i] : 1.0, dead += !(H[i * n + i] > 0);
    double *R = malloc(sizeof(double) * (size_t)(n * n)), *inv = malloc(sizeof(double) * (size_t)(n * n));
    struct piso_la_damping dp = {PISO_LA_DAMP_MEAN_DIAG, 0.01, 5, 0};
    struct piso_la_damped d;
    CHECK(piso_la_damped_inverse_factor(H, n, n, &dp, "H", R, inv, &d) == 0, "damped: %s", piso_last_error());
    CHECK(d.dead == dead && dead == 8, "dead inputs %lld (expected %lld = 8)", (long long)d.dead, (long long)dead);
    CHECK_NEAR(d.ref, sum_diag / n, 1e-12 * sum_diag / n, "mean diag");
    CHECK(d.retries == 0 && d.lambda == 0.01 * d.ref, "singular H: retries %d λ %g", d.retries, d.lambda);
    check_factor(H, n, R, inv, d.lambda, 1e-8, "damped singular H");

    /* indefinite: 2×2 blocks [[1, 3], [3, 1]] (eigenvalues 4 and −2). Mean diag 1, λ = 0.01, then
     * ×10: 0.1, 1 (all still indefinite), 10 (PD): three retries. */
    int64_t m = 260;
    float *Hi = calloc((size_t)(m * m), sizeof(float));
    for (int64_t i = 0; i < m; i += 2) Hi[i * m + i] = Hi[(i + 1) * m + i + 1] = 1, Hi[i * m + i + 1] = Hi[(i + 1) * m + i] = 3;
    double *Ri = malloc(sizeof(double) * (size_t)(m * m)), *invi = malloc(sizeof(double) * (size_t)(m * m));
    CHECK(piso_la_damped_inverse_factor(Hi, m, m, &dp, "Hi", Ri, invi, &d) == 0, "indefinite: %s", piso_last_error());
    CHECK(d.retries == 3 && fabs(d.lambda - 10.0) < 1e-12 && d.ref == 1.0, "indefinite: retries %d λ %g ref %g",
          d.retries, d.lambda, d.ref);
    check_factor(Hi, m, Ri, invi, d.lambda, 1e-12, "damped indefinite H");
    struct piso_la_damping few = {PISO_LA_DAMP_MEAN_DIAG, 0.01, 2, 0};
    CHECK(piso_la_damped_inverse_factor(Hi, m, m, &few, "layer 3 wq", Ri, NULL, &d) == -1, "2 retries must fail");
    CHECK(strstr(piso_last_error(), "layer 3 wq") != NULL, "error names the matrix: %s", piso_last_error());

    /* σ_max reference with a strided H: diag(4, 1, 1, ...) has σ_max = 4 */
    int64_t k = 70, ld = 75;
    float *Hs = calloc((size_t)(k * ld), sizeof(float));
    for (int64_t i = 0; i < k; i++) Hs[i * ld + i] = i == 0 ? 4.0f : 1.0f;
    struct piso_la_damping sp = {PISO_LA_DAMP_SIGMA_MAX, 0.1, 3, 0};
    double *Rs = malloc(sizeof(double) * (size_t)(k * k));
    CHECK(piso_la_damped_inverse_factor(Hs, k, ld, &sp, "Hs", Rs, NULL, &d) == 0, "sigma: %s", piso_last_error());
    CHECK(fabs(d.ref - 4.0) < 1e-6 && d.lambda == 0.1 * d.ref && d.dead == 0, "σ_max ref %g", d.ref);
    for (int64_t i = 0; i < k; i++) /* diagonal: R = diag(1/sqrt(h + λ)) */
        CHECK_NEAR(Rs[i * k + i], 1.0 / sqrt((i == 0 ? 4.0 : 1.0) + d.lambda), 1e-14, "diag factor");
    free(X), free(H), free(R), free(inv), free(Hi), free(Ri), free(invi), free(Hs), free(Rs);
}

/* The one-Cholesky factor against the old path (Cholesky, inverse, Cholesky of the inverse) and
 * against its defining identity RᵀR·A = I; shapes below, at and across tile boundaries. */
static void test_inverse_factor(void) {
    static const int64_t sizes[] = {1, 2, 255, 256, 257, 513, 700, 1030};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int64_t n = sizes[s];
        double *A = spd(n), *R = malloc(sizeof(double) * (size_t)(n * n)), *Ro = malloc(sizeof(double) * (size_t)(n * n));
        memcpy(R, A, sizeof(double) * (size_t)(n * n));
        memcpy(Ro, A, sizeof(double) * (size_t)(n * n));
        CHECK(piso_la_inverse_factor(R, n) == 0, "inverse factor n=%lld failed", (long long)n);
        CHECK(piso_la_spd_inverse(Ro, n) == 0 && piso_la_cholesky_upper(Ro, n) == 0, "old factor n=%lld", (long long)n);
        double diff = 0, mag = 0;
        int lower_zero = 1, pos_diag = 1;
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++) {
                diff = fmax(diff, fabs(R[i * n + j] - Ro[i * n + j])), mag = fmax(mag, fabs(Ro[i * n + j]));
                if (j < i) lower_zero &= R[i * n + j] == 0;
            }
        for (int64_t i = 0; i < n; i++) pos_diag &= R[i * n + i] > 0;
        CHECK(lower_zero && pos_diag, "inverse factor n=%lld: not upper with a positive diagonal", (long long)n);
        CHECK(diff <= 1e-13 * mag, "inverse factor n=%lld: max |R − R_old| = %g (max |R_old| %g)", (long long)n, diff, mag);
        if (n <= 513) { /* RᵀR·A = I, brute force */
            double *Q = calloc((size_t)(n * n), sizeof(double)), worst = 0;
            for (int64_t k = 0; k < n; k++)
                for (int64_t i = k; i < n; i++)
                    for (int64_t j = k; j < n; j++) Q[i * n + j] += R[k * n + i] * R[k * n + j];
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < n; j++) {
                    double t = 0;
                    for (int64_t k = 0; k < n; k++) t += (k < i ? Q[k * n + i] : Q[i * n + k]) * A[k * n + j];
                    worst = fmax(worst, fabs(t - (i == j)));
                }
            CHECK(worst <= 1e-11, "inverse factor n=%lld: max |RᵀR·A − I| = %g", (long long)n, worst);
            free(Q);
        }
        free(A), free(R), free(Ro);
    }
    /* not positive definite anywhere in the matrix: reported (the position is in reversed order) */
    static const int64_t bad[] = {0, 300, 599};
    for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
        int64_t n = 600, k = bad[b];
        double *A = spd(n);
        A[k * n + k] = -1.0;
        CHECK(piso_la_inverse_factor(A, n) > 0, "non-PD at column %lld not reported", (long long)k);
        free(A);
    }
    /* the damped factor from n = 512 on without inv takes this path: same R as with inv */
    int64_t n = 600;
    double *S = spd(n), *R1 = malloc(sizeof(double) * (size_t)(n * n)), *R2 = malloc(sizeof(double) * (size_t)(n * n));
    double *inv = malloc(sizeof(double) * (size_t)(n * n));
    float *H = malloc(sizeof(float) * (size_t)(n * n));
    for (int64_t i = 0; i < n * n; i++) H[i] = (float)S[i];
    H[7 * n + 7] = 0; /* a dead input */
    struct piso_la_damping dp = {PISO_LA_DAMP_MEAN_DIAG, 0.01, 3, 0};
    struct piso_la_damped d1, d2;
    CHECK(piso_la_damped_inverse_factor(H, n, n, &dp, "H", R1, NULL, &d1) == 0, "damped fast: %s", piso_last_error());
    CHECK(piso_la_damped_inverse_factor(H, n, n, &dp, "H", R2, inv, &d2) == 0, "damped old: %s", piso_last_error());
    double diff = 0, mag = 0;
    for (int64_t i = 0; i < n * n; i++) diff = fmax(diff, fabs(R1[i] - R2[i])), mag = fmax(mag, fabs(R2[i]));
    CHECK(d1.lambda == d2.lambda && d1.dead == 1 && diff <= 1e-13 * mag, "damped fast vs old: λ %g/%g, max diff %g",
          d1.lambda, d2.lambda, diff);
    check_factor(H, n, R1, inv, d1.lambda, 1e-9, "damped, one-Cholesky path");
    free(S), free(R1), free(R2), free(inv), free(H);
}

/* The UL factor: M upper with a positive diagonal and M·Mᵀ = A, brute force. */
static void test_ul_factor(void) {
    static const int64_t sizes[] = {1, 2, 255, 257, 530};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int64_t n = sizes[s];
        double *A = spd(n), *M = malloc(sizeof(double) * (size_t)(n * n)), worst = 0, mag = 0;
        memcpy(M, A, sizeof(double) * (size_t)(n * n));
        CHECK(piso_la_ul_factor(M, n) == 0, "ul factor n=%lld failed", (long long)n);
        int shape = 1;
        for (int64_t i = 0; i < n; i++) {
            shape &= M[i * n + i] > 0;
            for (int64_t j = 0; j < i; j++) shape &= M[i * n + j] == 0;
        }
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++) {
                double t = 0; /* (M·Mᵀ)[i, j] = Σ_{k ≥ max(i, j)} M_ik M_jk */
                for (int64_t k = i > j ? i : j; k < n; k++) t += M[i * n + k] * M[j * n + k];
                worst = fmax(worst, fabs(t - A[i * n + j])), mag = fmax(mag, fabs(A[i * n + j]));
            }
        CHECK(shape, "ul factor n=%lld: not upper with a positive diagonal", (long long)n);
        CHECK(worst <= 1e-13 * mag * sqrt((double)n), "ul factor n=%lld: max |M·Mᵀ − A| = %g", (long long)n, worst);
        free(A), free(M);
    }
}

static void test_trmm(void) {
    int64_t m = 300, k = 520, ld = 530;
    double *U = drand(k * k), *B = drand(m * ld), *C = malloc(sizeof(double) * (size_t)(m * ld));
    for (int64_t i = 0; i < k; i++)
        for (int64_t j = 0; j < i; j++) U[i * k + j] = NAN; /* the strict lower triangle is never read */
    for (int trans = 0; trans < 2; trans++) {
        memcpy(C, B, sizeof(double) * (size_t)(m * ld));
        piso_la_trmm_right_upper(U, k, trans, C, m, ld);
        double worst = 0;
        for (int64_t r = 0; r < m; r++) {
            for (int64_t j = 0; j < k; j++) {
                double t = 0, mag = 0; /* (B·op(U))[r, j] */
                for (int64_t i = 0; i < k; i++) {
                    int64_t a = trans ? j : i, b = trans ? i : j;
                    if (a > b) continue;
                    t += B[r * ld + i] * U[a * k + b], mag += fabs(B[r * ld + i] * U[a * k + b]);
                }
                worst = fmax(worst, fabs(C[r * ld + j] - t) / (mag + 1e-300));
            }
            for (int64_t j = k; j < ld; j++) worst = fmax(worst, C[r * ld + j] != B[r * ld + j]);
        }
        CHECK(worst <= 1e-14, "trmm trans=%d: max relative error %g", trans, worst);
    }
    free(U), free(B), free(C);
}

/* power iteration, sums in column order per row: bit-identical to a plain row-by-row loop */
static void test_power_rows(void) {
    int64_t n = 700; /* not a multiple of the rows handled together */
    double *S = spd(n);
    float *A = malloc(sizeof(float) * (size_t)(n * n));
    for (int64_t i = 0; i < n * n; i++) A[i] = (float)S[i];
    double *v = malloc(sizeof(double) * (size_t)n), *y = malloc(sizeof(double) * (size_t)n), sig = 0;
    for (int64_t i = 0; i < n; i++) v[i] = 1.0 / sqrt((double)n);
    for (int it = 0; it < 7; it++) {
        double nrm = 0;
        for (int64_t i = 0; i < n; i++) {
            double s = 0;
            for (int64_t j = 0; j < n; j++) s += (double)A[i * n + j] * v[j];
            y[i] = s;
        }
        for (int64_t i = 0; i < n; i++) nrm += y[i] * y[i];
        sig = nrm = sqrt(nrm);
        for (int64_t i = 0; i < n; i++) v[i] = y[i] / nrm;
    }
    CHECK(piso_la_power_iteration(A, n, 7) == sig, "power iteration differs from the row-by-row loop");
    free(S), free(A), free(v), free(y);
}

static void test_power_iteration(void) {
    /* diag(10, 1, ..., 1) from the normalised ones vector: after k steps the estimate is
     * sqrt(10^2k + n − 1) / sqrt(10^2(k−1) + n − 1) */
    int64_t n = 50;
    float *A = calloc((size_t)(n * n), sizeof(float));
    for (int64_t i = 0; i < n; i++) A[i * n + i] = i == 7 ? 10.0f : 1.0f;
    for (int k = 1; k <= 4; k++) {
        double want = sqrt(pow(10, 2 * k) + n - 1) / sqrt(pow(10, 2 * (k - 1)) + n - 1);
        CHECK_NEAR(piso_la_power_iteration(A, n, k), want, 1e-12 * want, "diag power iteration");
    }
    /* rank one u·uᵀ: one step gives |u|·(Σu)/√n, the second σ = |u|² */
    double uu = 0, su = 0;
    for (int64_t i = 0; i < n; i++) uu += (double)(i + 1) * (i + 1), su += (double)(i + 1);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) A[i * n + j] = (float)((i + 1) * (j + 1));
    CHECK_NEAR(piso_la_power_iteration(A, n, 1), sqrt(uu) * su / sqrt((double)n), 1e-12 * uu, "rank-one, 1 step");
    CHECK_NEAR(piso_la_power_iteration(A, n, 2), uu, 1e-12 * uu, "rank-one, 2 steps");
    memset(A, 0, sizeof(float) * (size_t)(n * n));
    CHECK(piso_la_power_iteration(A, n, 5) == 0, "zero matrix");
    free(A);
}

/* every function, on shapes spanning several tiles, into one byte buffer */
struct outputs {
    float *sg, *ss;
    double *dg, *ds, *gram, *gramp, *chol, *inv, *R, *Rinv, *Rfast, *fac, *tm, *ul;
    double sigma;
};
static void run_all(struct outputs *o, int threads) {
    omp_set_num_threads(threads);
    int64_t M = 530, N = 610, K = 300, n = 700;
    rng_state = 12345;
    float *A = frand(M * K), *B = frand(N * K);
    double *Ad = drand(M * K), *Bd = drand(K * N);
    o->sg = calloc((size_t)(M * N), sizeof(float));
    o->ss = calloc((size_t)(M * M), sizeof(float));
    o->dg = calloc((size_t)(M * N), sizeof(double));
    o->ds = calloc((size_t)(K * K), sizeof(double));
    piso_la_sgemm(0, 1, M, N, K, 1.0f, A, K, B, K, 0.0f, o->sg, N);
    piso_la_ssyrk_t(K, M, 1.0f, A, K, 0.0f, o->ss, K);
    piso_la_dgemm(0, 0, M, N, K, 1.0, Ad, K, Bd, N, 0.0, o->dg, N);
    piso_la_dsyrk_t(K, M, 1.0, Ad, K, 0.0, o->ds, K);
    o->gram = calloc((size_t)(K * K), sizeof(double));
    float *scratch = malloc(sizeof(float) * (size_t)(K * K));
    for (int w = 0; w < 2; w++) piso_la_gram_add(o->gram, A + w * 265 * K, A + w * 265 * K, 265, K, K, scratch);
    { /* the SYRK gram by bands of rows (B read as two windows [150, 610]): the whole one's bits */
        const int64_t nb = 610, t = 150;
        double *whole = calloc((size_t)(nb * nb), sizeof(double));
        float *sc = malloc(sizeof(float) * (size_t)(nb * nb));
        o->gramp = calloc((size_t)(nb * nb), sizeof(double));
        for (int w = 0; w < 2; w++) {
            piso_la_gram_add(whole, B + w * t * nb, B + w * t * nb, t, nb, nb, sc);
            piso_la_gram_add_panels(o->gramp, B + w * t * nb, B + w * t * nb, t, nb, nb, 256, sc);
        }
        CHECK(!memcmp(whole, o->gramp, sizeof(double) * (size_t)(nb * nb)), "gram by bands differs (%d threads)", threads);
        free(whole), free(sc);
    }
    o->chol = spd(n);
    o->inv = malloc(sizeof(double) * (size_t)(n * n));
    memcpy(o->inv, o->chol, sizeof(double) * (size_t)(n * n));
    piso_la_cholesky_upper(o->chol, n);
    piso_la_spd_inverse(o->inv, n);
    float *H = malloc(sizeof(float) * (size_t)(n * n));
    double *S = spd(n);
    for (int64_t i = 0; i < n * n; i++) H[i] = (float)S[i];
    o->R = malloc(sizeof(double) * (size_t)(n * n));
    o->Rinv = malloc(sizeof(double) * (size_t)(n * n));
    struct piso_la_damping sp = {PISO_LA_DAMP_SIGMA_MAX, 0.01, 3, 0};
    piso_la_damped_inverse_factor(H, n, n, &sp, "H", o->R, o->Rinv, NULL);
    o->sigma = piso_la_power_iteration(H, n, 30);
    o->Rfast = malloc(sizeof(double) * (size_t)(n * n));
    piso_la_damped_inverse_factor(H, n, n, &sp, "H", o->Rfast, NULL, NULL);
    o->fac = spd(n);
    piso_la_inverse_factor(o->fac, n);
    o->ul = spd(n);
    piso_la_ul_factor(o->ul, n);
    o->tm = drand(M * n);
    piso_la_trmm_right_upper(o->fac, n, 1, o->tm, M, n);
    piso_la_trmm_right_upper(o->fac, n, 0, o->tm, M, n);
    free(A), free(B), free(Ad), free(Bd), free(scratch), free(H), free(S);
}

static void test_threads(void) {
    struct outputs a, b;
    run_all(&a, 1);
    run_all(&b, 2);
    size_t M = 530, N = 610, K = 300, n = 700;
    CHECK(!memcmp(a.sg, b.sg, sizeof(float) * M * N), "sgemm differs between 1 and 2 threads");
    CHECK(!memcmp(a.ss, b.ss, sizeof(float) * K * K), "ssyrk differs between 1 and 2 threads");
    CHECK(!memcmp(a.dg, b.dg, sizeof(double) * M * N), "dgemm differs between 1 and 2 threads");
    CHECK(!memcmp(a.ds, b.ds, sizeof(double) * K * K), "dsyrk differs between 1 and 2 threads");
    CHECK(!memcmp(a.gram, b.gram, sizeof(double) * K * K), "gram differs between 1 and 2 threads");
    CHECK(!memcmp(a.gramp, b.gramp, sizeof(double) * 610 * 610), "gram by bands differs between 1 and 2 threads");
    CHECK(!memcmp(a.chol, b.chol, sizeof(double) * n * n), "cholesky differs between 1 and 2 threads");
    CHECK(!memcmp(a.inv, b.inv, sizeof(double) * n * n), "inverse differs between 1 and 2 threads");
    CHECK(!memcmp(a.R, b.R, sizeof(double) * n * n), "damped factor differs between 1 and 2 threads");
    CHECK(!memcmp(a.Rinv, b.Rinv, sizeof(double) * n * n), "damped inverse differs between 1 and 2 threads");
    CHECK(a.sigma == b.sigma, "power iteration differs between 1 and 2 threads");
    CHECK(!memcmp(a.Rfast, b.Rfast, sizeof(double) * n * n), "damped factor (one Cholesky) differs between 1 and 2 threads");
    CHECK(!memcmp(a.fac, b.fac, sizeof(double) * n * n), "inverse factor differs between 1 and 2 threads");
    CHECK(!memcmp(a.tm, b.tm, sizeof(double) * M * n), "trmm differs between 1 and 2 threads");
    CHECK(!memcmp(a.ul, b.ul, sizeof(double) * n * n), "ul factor differs between 1 and 2 threads");
    struct outputs *o[2] = {&a, &b};
    for (int i = 0; i < 2; i++) {
        free(o[i]->sg), free(o[i]->ss), free(o[i]->dg), free(o[i]->ds), free(o[i]->gram), free(o[i]->gramp);
        free(o[i]->chol), free(o[i]->inv), free(o[i]->R), free(o[i]->Rinv), free(o[i]->Rfast), free(o[i]->fac);
        free(o[i]->tm), free(o[i]->ul);
    }
}

int main(void) {
    test_gemm();
    test_syrk_gram();
    test_gram_panels();
    test_cholesky_inverse();
    test_inverse_diag();
    test_damped();
    test_power_iteration();
    test_inverse_factor();
    test_ul_factor();
    test_trmm();
    test_power_rows();
    test_threads();
    return test_finish();
}
