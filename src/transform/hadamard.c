/* Hadamard matrices of every size 2^k·K of the table in piso/transform.h, and the fast
 * Walsh–Hadamard transform (FWHT) that multiplies by them in O(n·(k + K)).
 *
 * H_n = H_{2^k} ⊗ H_K: for x viewed as [2^k, K] (x[a·K + b]), first every K-slice is multiplied by
 * the K×K base matrix, then butterflies run across the 2^k slices. The base matrices are built
 * here from their constructions (no stored matrices): Paley I for q ≡ 3 (mod 4) prime, Paley II for
 * q ≡ 1 (mod 4) prime power (GF(25) for 52), and the Goethals–Seidel array for
 * 156 = 4·39 and 172 = 4·43 from four circulant ±1 sequences (gs_sequences below). */
#include "piso/linalg.h"
#include "piso/transform.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- finite fields of prime or prime-square order (Paley constructions) --------------------- */

/* GF(q) for q = p (prime) or q = p² (as a + b·t with t² = r, r a non-square mod p). Elements are
 * coded e = a + p·b. */
struct gf {
    int q, p, r;
};

static int gf_add(const struct gf *f, int x, int y) {
    int p = f->p;
    return (x % p + y % p) % p + p * ((x / p + y / p) % p);
}
static int gf_neg(const struct gf *f, int x) {
    int p = f->p;
    return (p - x % p) % p + p * ((p - x / p) % p);
}
static int gf_mul(const struct gf *f, int x, int y) {
    int p = f->p, a = x % p, b = x / p, c = y % p, d = y / p;
    return (a * c + f->r * b * d) % p + p * ((a * d + b * c) % p);
}

/* chi[e] = quadratic character of element e: 0 at 0, +1 on non-zero squares, −1 otherwise. */
static void gf_chi(const struct gf *f, int *chi) {
    for (int e = 0; e < f->q; e++) chi[e] = -1;
    chi[0] = 0;
    for (int e = 1; e < f->q; e++) chi[gf_mul(f, e, e)] = 1;
}

/* Jacobsthal matrix Q[i][j] = chi(j − i) over GF(q), q×q. */
static void jacobsthal(const struct gf *f, int *Q) {
    int q = f->q, *chi = malloc((size_t)q * sizeof *chi);
    gf_chi(f, chi);
    for (int i = 0; i < q; i++)
        for (int j = 0; j < q; j++) Q[i * q + j] = chi[gf_add(f, j, gf_neg(f, i))];
    free(chi);
}

/* Paley I, n = q + 1 (q ≡ 3 mod 4 prime): H = I + S, S = [[0, 1ᵀ], [−1, Q]] (skew). */
static void paley1(int q, int8_t *H) {
    struct gf f = {q, q, 0};
    int n = q + 1, *Q = malloc((size_t)q * q * sizeof *Q);
    jacobsthal(&f, Q);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            int s = i == 0 ? (j == 0 ? 0 : 1) : j == 0 ? -1 : Q[(i - 1) * q + (j - 1)];
            H[i * n + j] = (int8_t)(s + (i == j));
        }
    free(Q);
}

/* Paley II, n = 2(q + 1) (q ≡ 1 mod 4): the symmetric conference matrix C = [[0, 1ᵀ], [1, Q]] with
 * every 0 replaced by [[1, −1], [−1, −1]] and every ±1 by ±[[1, 1], [1, −1]]. */
static void paley2(int q, int p, int r, int8_t *H) {
    struct gf f = {q, p, r};
    int m = q + 1, n = 2 * m, *Q = malloc((size_t)q * q * sizeof *Q);
    jacobsthal(&f, Q);
    static const int zero[2][2] = {{1, -1}, {-1, -1}}, one[2][2] = {{1, 1}, {1, -1}};
    for (int i = 0; i < m; i++)
        for (int j = 0; j < m; j++) {
            int c = i == 0 ? (j == 0 ? 0 : 1) : j == 0 ? 1 : Q[(i - 1) * q + (j - 1)];
            for (int u = 0; u < 2; u++)
                for (int v = 0; v < 2; v++)
                    H[(2 * i + u) * n + 2 * j + v] = (int8_t)(c == 0 ? zero[u][v] : c * one[u][v]);
        }
    free(Q);
}

/* ---- Goethals–Seidel: four circulant ±1 matrices A, B, C, D of order m with
 * AAᵀ + BBᵀ + CCᵀ + DDᵀ = 4m·I (their periodic autocorrelations sum to zero at every shift ≠ 0). */
#include "gs_sequences.h"

/* H = [[A, BR, CR, DR], [−BR, A, DᵀR, −CᵀR], [−CR, −DᵀR, A, BᵀR], [−DR, CᵀR, −BᵀR, A]], R the
 * back-diagonal identity; circulant X[i][j] = x[(j − i) mod m]. */
static void goethals_seidel(int m, const char *const rows[4], int8_t *H) {
    int n = 4 * m;
    /* block[bi][bj] = (sign, sequence, transposed, times R) */
    static const int blk[4][4][4] = {
        {{1, 0, 0, 0}, {1, 1, 0, 1}, {1, 2, 0, 1}, {1, 3, 0, 1}},
        {{-1, 1, 0, 1}, {1, 0, 0, 0}, {1, 3, 1, 1}, {-1, 2, 1, 1}},
        {{-1, 2, 0, 1}, {-1, 3, 1, 1}, {1, 0, 0, 0}, {1, 1, 1, 1}},
        {{-1, 3, 0, 1}, {1, 2, 1, 1}, {-1, 1, 1, 1}, {1, 0, 0, 0}},
    };
    for (int bi = 0; bi < 4; bi++)
        for (int bj = 0; bj < 4; bj++) {
            const int *b = blk[bi][bj];
            const char *x = rows[b[1]];
            for (int i = 0; i < m; i++)
                for (int j = 0; j < m; j++) {
                    int jj = b[3] ? m - 1 - j : j;      /* (X·R)[i][j] = X[i][m−1−j] */
                    int d = b[2] ? i - jj : jj - i;     /* Xᵀ[i][j] = X[j][i] */
                    d = ((d % m) + m) % m;
                    H[(bi * m + i) * n + bj * m + j] = (int8_t)(b[0] * (x[d] == '+' ? 1 : -1));
                }
        }
}

/* ---- the base table --------------------------------------------------------------------- */
/* 40 = 2·20 is covered by the Sylvester factor (n = 2^k·20) */
static const int base_sizes[] = {1, 12, 20, 28, 36, 52, 60, 108, 140, 152, 156, 172};
enum { N_BASE = sizeof base_sizes / sizeof base_sizes[0] };
static int8_t *base_cache[N_BASE];

static void build_base(int K, int8_t *H) {
    switch (K) {
    case 1: H[0] = 1; break;
    case 28: paley2(13, 13, 0, H); break;
    case 36: paley2(17, 17, 0, H); break;
    case 52: paley2(25, 5, 2, H); break; /* GF(25) = GF(5)[t]/(t² − 2) */
    case 156: goethals_seidel(39, piso_gs_39, H); break;
    case 172: goethals_seidel(43, piso_gs_43, H); break;
    default: paley1(K - 1, H); break; /* 12, 20, 60, 108, 140, 152 */
    }
}

/* The K×K base matrix (built once; the table is small). */
static const int8_t *base_matrix(int K) {
    for (int i = 0; i < N_BASE; i++)
        if (base_sizes[i] == K) {
            int8_t *h;
#pragma omp critical(piso_hadamard_base)
            {
                if (!base_cache[i]) {
                    int8_t *b = malloc((size_t)K * K);
                    if (b) build_base(K, b);
                    base_cache[i] = b;
                }
                h = base_cache[i];
            }
            return h;
        }
    return NULL;
}

int piso_hadamard_base(int n) {
    if (n < 1) return 0;
    for (int i = 0; i < N_BASE; i++) {
        int K = base_sizes[i];
        if (n % K) continue;
        int r = n / K;
        if ((r & (r - 1)) == 0) return K;
    }
    return 0;
}

int piso_hadamard_supported(int n) { return piso_hadamard_base(n) != 0; }

static int unsupported(int n) {
    return piso_errorf("no Hadamard matrix of size %d (supported: 2^k * K, K in 1, 12, 20, 28, 36, 40, 52, 60, 108, "
                       "140, 152, 156, 172)",
                       n);
}

int piso_hadamard_matrix(int n, int8_t *H) {
    int K = piso_hadamard_base(n);
    if (!K) return unsupported(n);
    const int8_t *B = base_matrix(K);
    if (!B) return piso_errorf("hadamard: out of memory");
    /* Sylvester H_{2^k}[a][a'] = (−1)^popcount(a & a'), Kronecker with B */
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            int a = i / K, a2 = j / K, s = __builtin_popcount((unsigned)(a & a2)) & 1;
            H[(size_t)i * n + j] = (int8_t)(s ? -B[(i % K) * K + j % K] : B[(i % K) * K + j % K]);
        }
    return 0;
}

/* x ← (H_{2^k} ⊗ I_K)·x · scale: butterflies across the P = 2^k slices of K, then the scale (1: none). */
static void sylvester_part(float *x, int P, int K, ptrdiff_t stride, float scale) {
    for (int h = 1; h < P; h *= 2)
        for (int a = 0; a < P; a += 2 * h)
            for (int j = a; j < a + h; j++)
                for (int b = 0; b < K; b++) {
                    float *u = x + ((ptrdiff_t)j * K + b) * stride, *v = u + (ptrdiff_t)h * K * stride;
                    float p = *u, q = *v;
                    *u = p + q;
                    *v = p - q;
                }
    if (scale != 1.0f)
        for (int i = 0; i < P * K; i++) x[i * stride] *= scale;
}

int piso_hadamard_apply(float *x, int n, ptrdiff_t stride) {
    int K = piso_hadamard_base(n);
    if (!K) return unsupported(n);
    int P = n / K;
    if (K > 1) { /* every K-slice ← H_K · slice */
        const int8_t *B = base_matrix(K);
        double t[172]; /* the largest base */
        if (!B) return piso_errorf("hadamard: out of memory");
        for (int a = 0; a < P; a++) {
            float *s = x + (ptrdiff_t)a * K * stride;
            for (int b = 0; b < K; b++) {
                double acc = 0;
                const int8_t *row = B + (size_t)b * K;
                for (int c = 0; c < K; c++) acc += row[c] * (double)s[c * stride];
                t[b] = acc;
            }
            for (int b = 0; b < K; b++) s[b * stride] = (float)t[b];
        }
    }
    sylvester_part(x, P, K, stride, (float)(1.0 / sqrt((double)n)));
    return 0;
}

/* Below this many elements a parallel region costs more than the rotation (results are the same). */
#define PAR_MIN_ELEMS (1 << 18)

static int check_block(int n, int block, const char *what) {
    if (block <= 0 || n % block)
        return piso_errorf("%s: rotation block %d does not divide the dimension %d", what, block, n);
    if (!piso_hadamard_supported(block)) {
        unsupported(block);
        return piso_error_context("%s", what);
    }
    return 0;
}

int piso_rotate_rows(float *X, int64_t rows, int cols, ptrdiff_t ld, int block, const char *what) {
    if (check_block(cols, block, what)) return -1;
    int K = piso_hadamard_base(block), P = block / K, failed = 0;
    if (K > 1 && ld == cols && rows * cols >= 4096) {
        /* contiguous rows: every K-slice of the matrix is one row of a [rows·cols/K, K] matrix, so the
         * base part is one GEMM with H_Kᵀ (piso_la_sgemm's fixed tiles: any thread count, same bits) */
        const int8_t *B = base_matrix(K);
        float *Bf = malloc((size_t)K * K * sizeof *Bf), *Y = malloc((size_t)rows * cols * sizeof *Y);
        if (!B || !Bf || !Y) {
            free(Bf), free(Y);
            return piso_errorf("%s: out of memory for the rotation of %lld x %d", what, (long long)rows, cols);
        }
        for (int i = 0; i < K * K; i++) Bf[i] = B[i];
        /* the normalization 1/√block rides on the GEMM's alpha */
        piso_la_sgemm(0, 1, rows * cols / K, K, K, (float)(1.0 / sqrt((double)block)), X, K, Bf, K, 0.0f, Y, K);
        memcpy(X, Y, (size_t)rows * cols * sizeof *X);
        free(Bf), free(Y);
        if (P > 1) {
#pragma omp parallel for schedule(static) if (rows * cols > PAR_MIN_ELEMS)
            for (int64_t r = 0; r < rows; r++)
                for (int c = 0; c < cols; c += block) sylvester_part(X + r * ld + c, P, K, 1, 1.0f);
        }
        return 0;
    }
#pragma omp parallel for schedule(static) reduction(| : failed) if (rows * cols > PAR_MIN_ELEMS)
    for (int64_t r = 0; r < rows; r++)
        for (int c = 0; c < cols; c += block) failed |= piso_hadamard_apply(X + r * ld + c, block, 1) != 0;
    return failed ? piso_error_context("%s", what) : 0;
}

int piso_rotate_cols(float *X, int rows, int64_t cols, int block, const char *what) {
    if (check_block(rows, block, what)) return -1;
    int failed = 0;
#pragma omp parallel for schedule(static) reduction(| : failed) if (rows * cols > PAR_MIN_ELEMS)
    for (int64_t c = 0; c < cols; c++)
        for (int r = 0; r < rows; r += block)
            failed |= piso_hadamard_apply(X + (int64_t)r * cols + c, block, (ptrdiff_t)cols) != 0;
    return failed ? piso_error_context("%s", what) : 0;
}
