/* Hadamard matrices and the FWHT (src/transform/hadamard.c).
 *
 * References: for every base size K of the table and sizes 2^k·K, the explicit ±1 matrix must
 * satisfy H·Hᵀ = n·I (checked in exact integer arithmetic), its Sylvester factor must equal the
 * closed form (−1)^popcount(a & a') written here, and the FWHT of random vectors must equal the
 * matrix–vector product H·x/√n computed here in double. Block/row/column rotations are checked
 * against the same product, and unsupported sizes / non-dividing blocks must be refused. */
#include "harness.h"
#include "piso/transform.h"

#include <stdint.h>

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double urand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0 * 2 - 1;
}

/* H·Hᵀ = n·I exactly; entries ±1 */
static int orthogonal(const int8_t *H, int n) {
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < n; j++) {
            if (H[(size_t)i * n + j] != 1 && H[(size_t)i * n + j] != -1) return 0;
        }
        for (int j = i; j < n; j++) {
            long s = 0;
            for (int c = 0; c < n; c++) s += H[(size_t)i * n + c] * H[(size_t)j * n + c];
            if (s != (i == j ? n : 0)) return 0;
        }
    }
    return 1;
}

static void check_size(int n) {
    int8_t *H = malloc((size_t)n * n);
    float *x = malloc((size_t)n * 3 * sizeof *x);
    double *ref = malloc((size_t)n * sizeof *ref);
    CHECK(piso_hadamard_matrix(n, H) == 0, "matrix %d: %s", n, piso_last_error());
    CHECK(orthogonal(H, n), "H H^T != %d I", n);
    /* the Sylvester factor: H[aK + b][a'K + b'] = (−1)^popcount(a&a') · H[b][b'] */
    int K = piso_hadamard_base(n), ok = 1;
    for (int i = 0; i < n && ok; i++)
        for (int j = 0; j < n; j++) {
            int s = __builtin_popcount((unsigned)((i / K) & (j / K))) & 1 ? -1 : 1;
            if (H[(size_t)i * n + j] != s * H[(size_t)(i % K) * n + j % K]) ok = 0;
        }
    CHECK(ok, "size %d is not Sylvester(2^k) x H_%d", n, K);
    /* FWHT (stride 3, to exercise strided access) vs H·x/√n */
    for (int i = 0; i < 3 * n; i++) x[i] = (float)urand();
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < n; j++) s += H[(size_t)i * n + j] * (double)x[3 * j + 1];
        ref[i] = s / sqrt((double)n);
    }
    CHECK(piso_hadamard_apply(x + 1, n, 3) == 0, "apply %d", n);
    double err = 0;
    for (int i = 0; i < n; i++) err = fmax(err, fabs(x[3 * i + 1] - ref[i]));
    CHECK(err < 2e-5, "FWHT vs matrix at n=%d: max error %g", n, err);
    free(H), free(x), free(ref);
}

int main(void) {
    static const int bases[] = {1, 12, 20, 28, 36, 40, 52, 60, 108, 140, 152, 156, 172};
    for (size_t i = 0; i < sizeof bases / sizeof bases[0]; i++) {
        int K = bases[i];
        CHECK(piso_hadamard_supported(K), "size %d", K);
        for (int p = 1; p <= 4; p *= 2) check_size(K * p);
    }
    check_size(64), check_size(512); /* powers of two */
    /* unsupported sizes: not a multiple of 4 (odd, 2·odd) and 4·odd without a table entry */
    static const int bad[] = {3, 6, 7, 10, 44, 68, 92, 100, 0, -4};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        float v[100] = {0};
        CHECK(!piso_hadamard_supported(bad[i]), "size %d should be unsupported", bad[i]);
        if (bad[i] > 0) {
            CHECK(piso_hadamard_apply(v, bad[i], 1) != 0, "apply %d", bad[i]);
            CHECK(strstr(piso_last_error(), "no Hadamard matrix of size") != NULL, "message: %s", piso_last_error());
        }
    }

    /* block rotation of rows and of columns vs the block-diagonal product */
    {
        enum { R = 5, C = 48, B = 12 };
        int8_t Hb[B * B];
        piso_hadamard_matrix(B, Hb);
        float X[R * C], Y[R * C], Z[C * R];
        for (int i = 0; i < R * C; i++) X[i] = Y[i] = (float)urand();
        for (int r = 0; r < R; r++)
            for (int c = 0; c < C; c++) Z[c * R + r] = X[r * C + c]; /* Z = Xᵀ [C, R] */
        CHECK(piso_rotate_rows(Y, R, C, C, B, "test rows") == 0, "rotate rows");
        CHECK(piso_rotate_cols(Z, C, R, B, "test cols") == 0, "rotate cols");
        double e1 = 0, e2 = 0;
        for (int r = 0; r < R; r++)
            for (int c = 0; c < C; c++) {
                int b0 = c / B * B;
                double s = 0;
                for (int j = 0; j < B; j++) s += Hb[(c - b0) * B + j] * (double)X[r * C + b0 + j];
                s /= sqrt((double)B);
                e1 = fmax(e1, fabs(Y[r * C + c] - s));
                e2 = fmax(e2, fabs(Z[c * R + r] - s));
            }
        CHECK(e1 < 1e-5 && e2 < 1e-5, "block rotation: rows %g, cols %g", e1, e2);
        CHECK(piso_rotate_rows(Y, R, C, C, 32, "layer x") != 0, "32 does not divide 48");
        CHECK(strstr(piso_last_error(), "layer x: rotation block 32 does not divide the dimension 48") != NULL, "msg: %s",
              piso_last_error());
        CHECK(piso_rotate_rows(Y, R, C, C, 24, "layer y") == 0, "24 = 2*12 divides 48");
        CHECK(piso_rotate_rows(Y, R, 42, 42, 6, "layer z") != 0, "6 is not a Hadamard size");
        CHECK(strstr(piso_last_error(), "no Hadamard matrix of size 6") != NULL, "msg: %s", piso_last_error());
    }
    /* large contiguous rows take the GEMM path for the base part: same result as vector by vector */
    {
        enum { R = 64, C = 344 };
        float *A = malloc(R * C * sizeof *A), *Bv = malloc(R * C * sizeof *Bv);
        for (int i = 0; i < R * C; i++) A[i] = Bv[i] = (float)urand();
        CHECK(piso_rotate_rows(A, R, C, C, 172, "gemm path") == 0, "gemm path");
        for (int r = 0; r < R; r++)
            for (int c = 0; c < C; c += 172) piso_hadamard_apply(Bv + r * C + c, 172, 1);
        double e = 0;
        for (int i = 0; i < R * C; i++) e = fmax(e, fabs(A[i] - Bv[i]));
        CHECK(e < 1e-5, "GEMM path vs vector path: %g", e);
        free(A), free(Bv);
    }
    return test_finish();
}
