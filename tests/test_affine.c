/* Affine (zero-point) quantization and the checkpoint bit packing.
 *  - piso_solve_affine against brute force: for every zero point, every interval between the
 *    rounding breakpoints (codes constant there, the parabola's minimiser clamped to the interval)
 *    plus a fine log grid of scales, all evaluated directly; dense H with a cross target, diagonal
 *    and identity. It must reach the brute-force optimum and never lose to min-max.
 *  - The bit packers against closed forms: value k of a b-bit stream is bits b·k .. b·k+b−1 of the
 *    concatenated words; per-word packing puts value k in word k/(32/b) at bit b·(k mod 32/b). */
#include "harness.h"
#include "piso/checkpoint.h"
#include "piso/quant.h"

#include <stdint.h>

static uint64_t rng = 88172645463325252ull;
static double urand(void) { /* xorshift64, [0, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static double nrand(void) { return sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand()); }

/* E(s, z) directly: q_i = clamp(rint(w_i/s), −z, maxq − z) (ties to even), E = s²qᵀHq − 2s qᵀu */
static double energy(const float *w, int n, const double *H, const double *u, int z, int maxq, double s) {
    double q[16], a = 0, b = 0;
    for (int i = 0; i < n; i++) {
        double r = nearbyint((double)(float)(w[i] / (float)s));
        q[i] = r < -z ? -z : r > maxq - z ? maxq - z : r;
    }
    for (int i = 0; i < n; i++) {
        a += q[i] * u[i];
        for (int j = 0; j < n; j++) b += q[i] * H[i * n + j] * q[j];
    }
    return s * s * b - 2 * s * a;
}

static int cmp_d(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* The exact optimum over (s > 0, z ∈ [zmin, maxq]) by enumerating the intervals of every z. */
static double brute(const float *w, int n, const double *H, const double *u, int bits, int zmin) {
    const int maxq = (1 << bits) - 1;
    double best = 0; /* s → ∞: every code 0 */
    double bp[16 * 256 + 2];
    for (int z = zmin; z <= maxq; z++) {
        int nb = 0;
        for (int i = 0; i < n; i++)
            for (int k = -z; k < maxq - z; k++) { /* q steps between k and k+1 at w/s = k + 1/2 */
                double h = k + 0.5, s = w[i] / h;
                if (s > 0) bp[nb++] = s;
            }
        qsort(bp, (size_t)nb, sizeof *bp, cmp_d);
        for (int t = 0; t <= nb; t++) {
            double lo = t ? bp[t - 1] : 0, hi = t < nb ? bp[t] : 2 * (nb ? bp[nb - 1] : 1);
            if (!(hi > lo)) continue;
            double mid = t ? 0.5 * (lo + hi) : 0.5 * hi;
            double q[16], a = 0, b = 0;
            for (int i = 0; i < n; i++) {
                double r = nearbyint(w[i] / mid);
                q[i] = r < -z ? -z : r > maxq - z ? maxq - z : r;
            }
            for (int i = 0; i < n; i++) {
                a += q[i] * u[i];
                for (int j = 0; j < n; j++) b += q[i] * H[i * n + j] * q[j];
            }
            if (!(b > 0)) continue;
            double s = a / b;
            s = s < lo ? lo : s > hi ? hi : s;
            double E = s * s * b - 2 * s * a; /* the infimum over the closed interval */
            if (E < best) best = E;
        }
        for (int k = 0; k <= 2000; k++) { /* a fine grid, evaluated directly */
            double s = 1e-3 * pow(1e4, k / 2000.0);
            double E = energy(w, n, H, u, z, maxq, s);
            if (E < best) best = E;
        }
    }
    return best;
}

enum kind { DENSE, DIAG, IDENTITY };

static void test_vs_brute(enum kind kind) {
    int cases = 0, worse_than_minmax = 0;
    double worst_gap = 0;
    for (int rep = 0; rep < 60; rep++) {
        const int n = 3 + (int)(urand() * 5), bits = 2 + rep % 3, zmin = rep % 4 == 1 ? 1 : 0;
        const int maxq = (1 << bits) - 1;
        float w[16], Hf[256], hd[16];
        double H[256], u[16], A[256];
        const double shift = rep % 5 == 0 ? 0.8 : 0; /* one-signed rows: the zero point at an end */
        for (int i = 0; i < n; i++) w[i] = (float)(nrand() + shift);
        for (int i = 0; i < n * n; i++) A[i] = nrand();
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                double acc = 0;
                for (int k = 0; k < n; k++) acc += A[i * n + k] * A[j * n + k];
                H[i * n + j] = kind == DENSE ? (float)acc : 0;
            }
        for (int i = 0; i < n; i++) {
            if (kind == DIAG) H[i * n + i] = (float)(0.2 + urand());
            if (kind == IDENTITY) H[i * n + i] = 1;
            hd[i] = (float)H[i * n + i];
        }
        for (int i = 0; i < n * n; i++) Hf[i] = (float)H[i];
        /* target: u = G·w with G = H + a perturbation for the dense case (the X–X̃ cross term),
         * u_i = h_i·w_i otherwise (what the diagonal and data-free methods use) */
        for (int i = 0; i < n; i++) {
            u[i] = 0;
            for (int j = 0; j < n; j++) u[i] += (H[i * n + j] + (kind == DENSE ? 0.3 * A[j * n + i] : 0)) * w[j];
        }
        const enum piso_scale_method m = kind == DENSE ? PISO_SCALE_PISO : kind == DIAG ? PISO_SCALE_PISO_DIAG
                                                                                        : PISO_SCALE_PISO_DATAFREE;
        int z = -1;
        double E = NAN;
        float s = piso_solve_affine(w, n, kind == DENSE ? Hf : NULL, n, kind == DIAG ? hd : NULL, u, m, bits, zmin, 0,
                                    &z, &E);
        const double Eb = brute(w, n, H, u, bits, zmin);
        const double Ed = energy(w, n, H, u, z, maxq, s);
        int zm;
        float sm = piso_affine_minmax(w, n, bits, zmin, &zm);
        const double Em = energy(w, n, H, u, zm, maxq, sm);
        const double tol = 1e-5 * fabs(Eb) + 1e-9;
        CHECK(s > 0 && z >= zmin && z <= maxq, "case %d: s %g z %d", rep, (double)s, z);
        CHECK(fabs(E - Ed) <= tol, "case %d: reported E %.12g, direct %.12g", rep, E, Ed);
        CHECK(Ed <= Eb + tol, "case %d (n %d, %d bits, zmin %d): E %.12g above the brute-force optimum %.12g", rep, n,
              bits, zmin, Ed, Eb);
        CHECK(Ed >= Eb - tol, "case %d: E %.12g below the brute-force optimum %.12g (brute force incomplete)", rep, Ed, Eb);
        worse_than_minmax += Ed > Em;
        if (Ed - Eb > worst_gap) worst_gap = Ed - Eb;
        cases++;
    }
    CHECK(worse_than_minmax == 0, "%d of %d cases worse than min-max", worse_than_minmax, cases);
    printf("affine %s: %d cases, largest gap to brute force %.3g\n",
           kind == DENSE ? "dense" : kind == DIAG ? "diag" : "identity", cases, worst_gap);
}

/* Larger rows: never worse than min-max, and fp16 scales come back as fp16 values. */
static void test_minmax_and_fp16(void) {
    enum { N = 48 };
    float w[N], H[N * N];
    double A[N * N];
    for (int rep = 0; rep < 12; rep++) {
        const int bits = rep % 2 ? 3 : 4, maxq = (1 << bits) - 1;
        for (int i = 0; i < N; i++) w[i] = (float)(nrand() * (1 + (i % 7 == 0 ? 3 : 0)) + (rep % 3 == 0 ? 0.7 : 0));
        for (int i = 0; i < N * N; i++) A[i] = nrand();
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++) {
                double acc = 0;
                for (int k = 0; k < N; k++) acc += A[i * N + k] * A[j * N + k];
                H[i * N + j] = (float)acc;
            }
        int z, zm, z16;
        double E, E16;
        float s = piso_solve_affine(w, N, H, N, NULL, NULL, PISO_SCALE_PISO, bits, 0, 0, &z, &E);
        float s16 = piso_solve_affine(w, N, H, N, NULL, NULL, PISO_SCALE_PISO, bits, 1, 1, &z16, &E16);
        float sm = piso_affine_minmax(w, N, bits, 0, &zm);
        struct piso_grid gm;
        piso_grid_affine(bits, zm, &gm);
        double Em = piso_objective_dense(w, N, H, N, NULL, &gm, sm);
        CHECK(E <= Em, "rep %d: affine PiSO %.10g worse than min-max %.10g", rep, E, Em);
        CHECK(s16 == piso_fp16_to_fp32(piso_fp32_to_fp16(s16)), "rep %d: scale %.9g is not an fp16 value", rep,
              (double)s16);
        CHECK(z16 >= 1 && z16 <= maxq, "rep %d: zero point %d outside [1, %d]", rep, z16, maxq);
        (void)s;
    }
}

/* piso_scale_fp16_best: one of the two fp16 values around s, never worse than s rounded to nearest */
static void test_fp16_best(void) {
    enum { N = 24 };
    float w[N], H[N * N];
    double A[N * N];
    struct piso_grid g;
    piso_grid_init(&g, "int3", 0);
    int other = 0;
    for (int rep = 0; rep < 40; rep++) {
        for (int i = 0; i < N; i++) w[i] = (float)nrand();
        for (int i = 0; i < N * N; i++) A[i] = nrand();
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++) {
                double acc = 0;
                for (int k = 0; k < N; k++) acc += A[i * N + k] * A[j * N + k];
                H[i * N + j] = (float)acc;
            }
        const float s = piso_solve_scale_dense(w, N, H, N, NULL, &g, 1, NULL);
        const float near = piso_fp16_to_fp32(piso_fp32_to_fp16(s)), b = piso_scale_fp16_best(w, N, H, N, NULL, NULL, &g, s);
        const double Eb = piso_objective_dense(w, N, H, N, NULL, &g, b), En = piso_objective_dense(w, N, H, N, NULL, &g, near);
        /* the neighbours of s among fp16 values, found by scanning the fp16 bit patterns */
        float lo = -INFINITY, hi = INFINITY;
        for (unsigned k = 0; k < 0x7c00; k++) {
            float v = piso_fp16_to_fp32((uint16_t)k) * (s < 0 ? -1.0f : 1.0f);
            if (v <= s && v > lo) lo = v;
            if (v >= s && v < hi) hi = v;
        }
        CHECK(b == lo || b == hi, "rep %d: %.9g is neither fp16 neighbour of %.9g (%.9g, %.9g)", rep, (double)b, (double)s,
              (double)lo, (double)hi);
        CHECK(Eb <= En, "rep %d: E %.12g at %.9g above the nearest fp16's %.12g", rep, Eb, (double)b, En);
        other += b != near;
    }
    printf("fp16 scales: the farther neighbour was better in %d of 40 rows\n", other);
}

static void test_packing(void) {
    const int bits_list[] = {2, 3, 4, 8};
    for (int bi = 0; bi < 4; bi++) {
        const int b = bits_list[bi], n = 96; /* 96·b bits: whole words for every b */
        uint8_t v[96];
        uint32_t s[32] = {0}, p[64] = {0}, st[64] = {0};
        for (int k = 0; k < n; k++) v[k] = (uint8_t)(urand() * (1 << b));
        piso_pack_stream(v, n, b, s, 1);
        piso_pack_stream(v, n, b, st, 2); /* the same stream with words two apart */
        piso_pack_words(v, n, b, p, 1);
        int bad = 0, bad_words = 0, bad_stride = 0;
        for (int k = 0; k < n; k++) {
            unsigned x = 0, y;
            for (int t = 0; t < b; t++) {
                const int bit = b * k + t;
                x |= ((s[bit / 32] >> (bit % 32)) & 1u) << t;
            }
            bad += x != v[k] || piso_unpack_stream(s, k, b, 1) != v[k];
            const int per = 32 / b;
            y = (p[k / per] >> (b * (k % per))) & ((1u << b) - 1);
            bad_words += y != v[k] || piso_unpack_words(p, k, b, 1) != v[k];
            bad_stride += piso_unpack_stream(st, k, b, 2) != v[k];
        }
        for (int k = 0; k < 32; k++) bad_stride += st[2 * k] != s[k] || st[2 * k + 1] != 0;
        CHECK(bad == 0, "%d-bit stream: %d values differ from the closed form", b, bad);
        CHECK(bad_words == 0, "%d-bit per-word packing: %d values differ", b, bad_words);
        CHECK(bad_stride == 0, "%d-bit strided stream: %d mismatches", b, bad_stride);
    }
    /* 3-bit straddle, by hand: value 10 sits in bits 30..32, so word 1 bit 0 is its high bit */
    uint8_t v[32] = {0};
    v[10] = 5; /* 0b101 */
    uint32_t w[3] = {0};
    piso_pack_stream(v, 32, 3, w, 1);
    CHECK(w[0] == (1u << 30) && w[1] == 1u && w[2] == 0, "3-bit straddle: %08x %08x %08x", w[0], w[1], w[2]);
}

static void test_format_checks(void) {
    struct piso_grid g;
    piso_grid_init(&g, "e4m3", 0);
    CHECK(piso_ckpt_check(PISO_CKPT_GPTQ, &g, 0, 0) != 0 && strstr(piso_last_error(), "e4m3"), "e4m3 in GPTQ: %s",
          piso_last_error());
    piso_grid_init(&g, "mxfp4", 0);
    CHECK(piso_ckpt_check(PISO_CKPT_COMPRESSED, &g, 0, 0) != 0, "mxfp4 in compressed-tensors accepted");
    piso_grid_init(&g, "int5", 0);
    CHECK(piso_ckpt_check(PISO_CKPT_GPTQ, &g, 0, 0) != 0 && strstr(piso_last_error(), "5-bit"), "int5: %s",
          piso_last_error());
    piso_grid_init(&g, "int4", 0);
    CHECK(piso_ckpt_check(PISO_CKPT_GPTQ, &g, 16, 0) != 0 && strstr(piso_last_error(), "--group 16"), "group 16: %s",
          piso_last_error());
    CHECK(piso_ckpt_check(PISO_CKPT_GPTQ, &g, 64, 1) == 0, "int4 g64 asym refused: %s", piso_last_error());
    CHECK(piso_ckpt_check(PISO_CKPT_DENSE, &g, 16, 0) == 0, "the dense format refused group 16");
    /* which layers pack */
    CHECK(piso_ckpt_layer_packs(PISO_CKPT_GPTQ, 4, 0, 64, 64), "64x64 int4");
    CHECK(!piso_ckpt_layer_packs(PISO_CKPT_GPTQ, 4, 0, 64, 172), "in = 172 does not fill int32 words at 4 bits");
    CHECK(!piso_ckpt_layer_packs(PISO_CKPT_GPTQ, 4, 0, 172, 64), "out = 172: qzeros do not fill words");
    CHECK(piso_ckpt_layer_packs(PISO_CKPT_COMPRESSED, 4, 0, 172, 172), "compressed-tensors pads");
    CHECK(!piso_ckpt_layer_packs(PISO_CKPT_COMPRESSED, 4, 32, 64, 172), "a ragged last group");
}

int main(void) {
    test_vs_brute(DENSE);
    test_vs_brute(DIAG);
    test_vs_brute(IDENTITY);
    test_minmax_and_fp16();
    test_fp16_best();
    test_packing();
    test_format_checks();
    return test_finish();
}
