/* Channel-wise PiSO for all rows of a layer, exact, with the intervals that cannot win pruned.
 *
 * For a row w with target u, the sweep's objective on the interval where q = round(w/s) is fixed is
 * E(s) = s²·qᵀHq − 2s·qᵀu. With r = w − s·q and h_w = H·w it is also
 *     E(s) = rᵀHr − wᵀHw + 2s·qᵀ(h_w − u),
 * so any M ⪯ H (H − M positive semidefinite) gives the lower bound
 *     LB(s) = rᵀMr − wᵀHw + 2s·qᵀ(h_w − u) = (wᵀMw − wᵀHw) + s²·qᵀMq − 2s·qᵀ(u − h_w + M·w),
 * which is loose only by rᵀ(H − M)r, the rounding residual's energy outside M. We use
 *     M = (μ − ν)·P + Z·Zᵀ,   P = diag(1/(H⁻¹)_ii),   Z [n, k],
 * a floor μ·P certified by a Cholesky factorization of H − μ·P (P: each input's variance that
 * the others do not explain), plus the Nyström approximation of the rest (H − μP ⪰
 * Y·(ΩᵀY)⁻¹·Yᵀ for Y = (H − μP)·Ω and any Ω; ν is the small shift that keeps it stable). Along the sweep, qᵀMq changes by
 * O(k) per event (p = Zᵀq is kept up to date), so a first pass bounds every interval in O(T·k).
 *
 * Then per row: the interval with the lowest bound is the anchor; H·q there comes from one GEMM
 * (for a batch of rows), which gives its exact E. Every interval whose bound exceeds that E (plus a
 * small slack for fp round-off) is pruned; the surviving intervals form windows, swept exactly as
 * piso_sweep.c does (same tiled kernel, started from the known H·q instead of 0) — the anchor's
 * window in both directions from the anchor, other windows from a state whose H·q comes from a
 * second GEMM. Pruning is only a shortcut: every interval that could beat the best one is swept.
 *
 * Negative scales: for int-k grids one walk serves both signs (the negative sign's codes differ by
 * 1 on the few entries past the grid's symmetric part; see struct row_sign); other asymmetric grids
 * have one event list, bound pass and set of walks per sign.
 *
 * Determinism: the minorant is built with the fixed-tile linear algebra of src/linalg and a fixed
 * pseudo-random Ω; every row's arithmetic is independent of which thread runs it; GEMMs over a
 * batch of rows are split by tiles that depend only on the shapes. */
#include "piso/linalg.h"
#include "piso/quant.h"
#include "quant/quant_internal.h"
#include "quant/sweep_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#else
static int omp_get_thread_num(void) { return 0; }
#endif

/* Rows solved together: their anchor / window states share one GEMM and their walks share each
 * pass over H (one pass reads all of H: at n = 8192, 128 rows took 235 passes for 2048 rows
 * where 32 took 871, and the layer 39.6 s instead of 54.7). */
#define PRUNE_BATCH 128
#define PRUNE_MAX_WINDOWS 8  /* windows per row and sign beyond which they are merged into one */
#define PRUNE_SLACK 3e-5     /* relative to Σ H_ii·w_i² + |wᵀHw|: covers fp32 round-off of E */
/* H is copied panel by panel once per call (piso_sweep_pack) up to this size; above it, each pass
 * packs its panels again (at n = 8192, 849 passes spent a quarter of down_proj's time copying). */
static size_t prune_pack_max = PISO_PRUNE_PACK_MAX;

static int prune_mode = 0; /* 0 auto, 1 never prune (full sweep), 2 prune whenever possible */
static int prune_rank = 0; /* 0: default k */
static int prune_batch = PRUNE_BATCH;

int piso_prune_batch_rows(int rows) {
    int old = prune_batch;
    prune_batch = rows > 0 ? rows : PRUNE_BATCH;
    return old;
}

size_t piso_prune_pack_limit(size_t bytes) {
    size_t old = prune_pack_max;
    prune_pack_max = bytes;
    return old;
}

static struct piso_prune_stats prune_total; /* since the last piso_prune_stats_take */

void piso_prune_stats_take(struct piso_prune_stats *out) {
    *out = prune_total;
    memset(&prune_total, 0, sizeof prune_total);
}

static void stats_add(const struct piso_prune_stats *s) {
    prune_total.rows += s->rows, prune_total.rows_full += s->rows_full;
    prune_total.intervals += s->intervals, prune_total.swept += s->swept, prune_total.needed += s->needed;
    if (s->rank) prune_total.rank = s->rank, prune_total.floor = s->floor;
    prune_total.seconds_minorant += s->seconds_minorant;
    prune_total.seconds_bound += s->seconds_bound, prune_total.seconds_gemm += s->seconds_gemm;
    prune_total.seconds_walk += s->seconds_walk, prune_total.windows += s->windows;
    prune_total.rows_x += s->rows_x;
    prune_total.seconds_windows += s->seconds_windows, prune_total.rounds += s->rounds;
}

static void minorant_cache_clear(void);
void piso_prune_configure(int mode, int rank) {
    minorant_cache_clear();
    prune_mode = mode;
    prune_rank = rank;
}

int piso_prune_default_rank(int n) {
    int k = n / 16;
    if (k > 64) k = 64; /* more helps the bound a little and costs O(k) per event of every sweep */
    if (k < 16) k = 16;
    return (k + 7) / 8 * 8;
}

/* ---- the minorant --------------------------------------------------------------------------- */
struct minorant {
    int n, k;
    double mu;      /* floor relative to diag(H) */
    double *Z;      /* [n, k] */
    double *floor_; /* [n] (μ − ν)·H_ii */
    double *mdiag;  /* [n] M_ii */
};

static void minorant_free(struct minorant *m) {
    free(m->Z), free(m->floor_), free(m->mdiag);
    memset(m, 0, sizeof *m);
}

/* A = S·H·S − shift·I (symmetrised), S = diag(isd). */
static void scaled_copy(const float *H, int ldh, int n, const double *isd, double shift, double *A) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            A[(int64_t)i * n + j] =
                0.5 * ((double)H[(int64_t)i * ldh + j] + (double)H[(int64_t)j * ldh + i]) * isd[i] * isd[j] -
                (i == j ? shift : 0.0);
}

/* Orthonormal columns of X [n, k] in place (Cholesky QR, twice). Returns 0, or 1 when X is rank
 * deficient. */
static int orthonormalize(double *X, int n, int k, double *C) {
    for (int pass = 0; pass < 2; pass++) {
        piso_la_dgemm(1, 0, k, k, n, 1.0, X, k, X, k, 0.0, C, k);
        if (piso_la_cholesky_upper(C, k)) return 1;
        piso_la_trsm_right_upper(C, k, X, n, k);
    }
    return 0;
}

/* out [n, k] = A·V for A [n, n], or (T > 0) A = XsᵀXs given as Xs [T, n] (tmp [T, k]). */
static void minorant_apply(const double *A, int n, int k, int64_t T, double *tmp, const double *V, double *out) {
    if (T <= 0) {
        piso_la_dgemm(0, 0, n, k, n, 1.0, A, n, V, k, 0.0, out, k);
        return;
    }
    piso_la_dgemm(0, 0, T, k, n, 1.0, A, n, V, k, 0.0, tmp, k);
    piso_la_dgemm(1, 0, n, k, T, 1.0, A, n, tmp, k, 0.0, out, k);
}

/* Returns 0 with m built, 1 when H is not certified positive definite (the caller sweeps in full),
 * −1 out of memory. */
/* Xf (or NULL): X̃ [T, n] (row stride ldx) with H = X̃ᵀX̃ and T < n. H is then singular (rank ≤ T):
 * no floor to certify, and the Nyström part comes from X̃ (A·V = X̃ᵀ(X̃·V) in the scaled
 * coordinates, O(T·n·k)), never forming A: no O(n³) factorization, no n × n copy. */
static int minorant_build(const float *H, int ldh, int n, int k, struct minorant *m, const float *Xf, int64_t T,
                          int64_t ldx) {
    memset(m, 0, sizeof *m);
    m->n = n, m->k = k;
    double *isd = malloc(sizeof(double) * n);
    double *A = Xf ? malloc(sizeof(double) * (size_t)T * n) : malloc(sizeof(double) * (size_t)n * n);
    double *XV = Xf ? malloc(sizeof(double) * (size_t)T * k) : NULL;
    double *X = malloc(sizeof(double) * (size_t)n * k), *Y = malloc(sizeof(double) * (size_t)n * k);
    double *C = malloc(sizeof(double) * (size_t)k * k), *x = malloc(sizeof(double) * n), *y = malloc(sizeof(double) * n);
    m->Z = malloc(sizeof(double) * (size_t)n * k), m->floor_ = malloc(sizeof(double) * n);
    m->mdiag = malloc(sizeof(double) * n);
    int rc = -1;
    if (!isd || !A || !X || !Y || !C || !x || !y || !m->Z || !m->floor_ || !m->mdiag || (Xf && !XV)) goto out;
    rc = 1;
    for (int i = 0; i < n; i++) {
        double d = H[(int64_t)i * ldh + i];
        if (!(d > 0) || !isfinite(d)) goto out; /* dead input: H is singular (full sweep) */
        y[i] = 1.0 / sqrt(d);                   /* D^-½, D = diag(H) */
    }
    double mu = 0;
    if (Xf) { /* A = (X̃·D^-½)ᵀ(X̃·D^-½): its scaled X̃ in fp64 */
        for (int i = 0; i < n; i++) isd[i] = y[i];
        for (int64_t t = 0; t < T; t++)
            for (int i = 0; i < n; i++) A[t * n + i] = (double)Xf[t * ldx + i] * y[i];
        goto nystrom;
    }
    /* One Cholesky of D^-½·H·D^-½ + εI for the smallest ε = 10⁻⁶, 10⁻⁵, … ≤ 10⁻² that succeeds: it
     * certifies H ⪰ −ε·D, the floor when H is singular or nearly so (e.g. fewer calibration tokens
     * than inputs), where the bound then comes from the top-k part alone. */
    double eps = 1e-6;
    for (;; eps *= 10) {
        scaled_copy(H, ldh, n, y, -eps, A);
        if (piso_la_cholesky_upper(A, n) == 0) break;
        if (eps > 1.5e-3) goto out;
    }
    /* A pivot at the level of ε: H is numerically singular (λ_min(D^-½HD^-½) ≤ every pivot). */
    double pmin = INFINITY;
    for (int i = 0; i < n; i++) pmin = fmin(pmin, A[(int64_t)i * n + i] * A[(int64_t)i * n + i]);
    mu = -eps;
    int floor_d = pmin <= 10 * eps; /* the floor stays −ε·D */
    if (!floor_d) {
        /* The floor's shape P = diag(1/(H⁻¹)_ii), each input's variance that the others do not
         * explain (for activations with shared directions, the part that low rank cannot capture),
         * taken from (H + εD)⁻¹ = D^-½·(UᵀU)⁻¹·D^-½ (U the factor above). isd = P^-½. */
        if (piso_la_inverse_diag_from_factor(A, n, x)) {
            rc = -1;
            goto out;
        }
        double shift = 0; /* ε·max D_ii/P_ii: how much the ε above can raise λ_min in P's coordinates */
        for (int i = 0; i < n && !floor_d; i++) {
            double v = y[i] * y[i] * x[i];
            if (!(v > 0) || !isfinite(v)) floor_d = 1;
            else isd[i] = sqrt(v), shift = fmax(shift, eps * v * H[(int64_t)i * ldh + i]);
        }
        /* λ_min of P^-½(H + εD)P^-½ by power iteration on its inverse P^½·D^-½·U⁻¹U⁻ᵀ·D^-½·P^½ (two
         * triangular solves per step), less the shift: a candidate for H's floor */
        double theta = 0;
        for (int i = 0; i < n; i++) x[i] = 1.0 / sqrt((double)n);
        for (int it = 0; it < 24 && !floor_d; it++) {
            for (int i = 0; i < n; i++) X[i] = x[i] / isd[i] * y[i];
            piso_la_trsv_upper(A, n, 1, X);
            piso_la_trsv_upper(A, n, 0, X);
            double dot = 0, nrm = 0;
            for (int i = 0; i < n; i++) {
                X[i] *= y[i] / isd[i]; /* X: scratch of ≥ n doubles */
                dot += x[i] * X[i], nrm += X[i] * X[i];
            }
            theta = dot;
            nrm = sqrt(nrm);
            if (!(nrm > 0) || !isfinite(nrm)) break;
            for (int i = 0; i < n; i++) x[i] = X[i] / nrm;
        }
        /* certified by a Cholesky factorization of P^-½·H·P^-½ − μI; none: the floor −ε·D */
        mu = !floor_d && theta > 0 && isfinite(theta) ? 0.9 * (1.0 / theta - shift) : 0;
        for (int attempt = 0; mu > 0; attempt++) {
            scaled_copy(H, ldh, n, isd, mu, A);
            if (piso_la_cholesky_upper(A, n) == 0) break;
            mu = attempt < 3 ? mu * 0.7 : 0;
        }
        if (!(mu > 0)) floor_d = 1;
    }
    if (floor_d) {
        mu = -eps;
        for (int i = 0; i < n; i++) isd[i] = y[i];
    }
    /* Nyström of A = scaled H − μI with Ω = orthonormalised A·(pseudo-random signs) */
    scaled_copy(H, ldh, n, isd, mu, A);
nystrom:
    m->mu = mu;
    uint64_t st = 0x2545F4914F6CDD1Dull;
    for (int64_t t = 0; t < (int64_t)n * k; t++) {
        st ^= st << 13, st ^= st >> 7, st ^= st << 17;
        Y[t] = (st >> 63) ? 1.0 : -1.0;
    }
    minorant_apply(A, n, k, Xf ? T : 0, XV, Y, X);
    if (orthonormalize(X, n, k, C)) goto out;
    minorant_apply(A, n, k, Xf ? T : 0, XV, X, Y);
    double ny = 0;
    for (int64_t t = 0; t < (int64_t)n * k; t++) ny += Y[t] * Y[t];
    double nu = 2.2e-16 * sqrt((double)n) * sqrt(ny);
    for (int attempt = 0;; attempt++) {
        for (int64_t t = 0; t < (int64_t)n * k; t++) m->Z[t] = Y[t] + nu * X[t];
        piso_la_dgemm(1, 0, k, k, n, 1.0, X, k, m->Z, k, 0.0, C, k);
        for (int a = 0; a < k; a++)
            for (int b = a + 1; b < k; b++) C[a * k + b] = C[b * k + a] = 0.5 * (C[a * k + b] + C[b * k + a]);
        if (piso_la_cholesky_upper(C, k) == 0) break;
        if (attempt == 3) goto out;
        nu = nu > 0 ? nu * 100 : 1e-12;
    }
    piso_la_trsm_right_upper(C, k, m->Z, n, k); /* B = Y_ν·C⁻¹ᐟ²: B·Bᵀ = Y_ν·C⁻¹·Y_νᵀ */
    /* back to H's coordinates: H ⪰ P½·((μ − ν)I + B·Bᵀ)·P½ */
    for (int i = 0; i < n; i++) {
        double sd = 1.0 / isd[i], d = sd * sd, z2 = 0;
        for (int j = 0; j < k; j++) {
            m->Z[(int64_t)i * k + j] *= sd;
            z2 += m->Z[(int64_t)i * k + j] * m->Z[(int64_t)i * k + j];
        }
        m->floor_[i] = (mu - nu) * d;
        m->mdiag[i] = m->floor_[i] + z2;
    }
    rc = 0;
out:
    free(isd), free(A), free(XV), free(X), free(Y), free(C), free(x), free(y);
    if (rc) minorant_free(m);
    return rc;
}

/* The minorant of the last H (layers that share their input share H: q/k/v, gate/up), keyed by a
 * full copy of H (compared byte for byte, no hash to collide), for n ≤ MINORANT_CACHE_MAX_N. */
#define MINORANT_CACHE_MAX_N 4096
static struct {
    float *H; /* [n, n] */
    int n, k, rc;
    int users; /* calls using m now: it is replaced only when none does */
    struct minorant m;
} mcache;

static void minorant_cache_clear(void) { /* with no solver running (piso_prune_configure) */
    free(mcache.H);
    minorant_free(&mcache.m);
    memset(&mcache, 0, sizeof mcache);
}

static int minorant_cached(const float *H, int ldh, int n, int k) {
    if (!mcache.H || mcache.n != n || mcache.k != k) return 0;
    for (int i = 0; i < n; i++)
        if (memcmp(mcache.H + (int64_t)i * n, H + (int64_t)i * ldh, sizeof(float) * n)) return 0;
    return 1;
}

/* minorant_build through the cache: *m is the cache's (not to be freed) when *shared is set. */
static int minorant_get(const float *H, int ldh, int n, int k, struct minorant *m, int *shared, const float *Xf,
                        int64_t T, int64_t ldx) {
    *shared = 0;
    int rc;
    if (Xf) return minorant_build(H, ldh, n, k, m, Xf, T, ldx); /* not cached: the X̃ form is for one layer */
#pragma omp critical(piso_minorant_cache)
    {
        if (minorant_cached(H, ldh, n, k)) {
            rc = mcache.rc, *m = mcache.m, *shared = 1;
            mcache.users++;
        } else {
            rc = minorant_build(H, ldh, n, k, m, NULL, 0, 0);
            if (rc >= 0 && n <= MINORANT_CACHE_MAX_N && mcache.users == 0) {
                minorant_cache_clear();
                mcache.H = malloc(sizeof(float) * (size_t)n * n);
                if (mcache.H) { /* no room for the copy: simply not cached */
                    for (int i = 0; i < n; i++) memcpy(mcache.H + (int64_t)i * n, H + (int64_t)i * ldh, sizeof(float) * n);
                    mcache.n = n, mcache.k = k, mcache.rc = rc, mcache.m = *m, *shared = 1;
                    mcache.users = 1;
                }
            }
        }
    }
    return rc;
}

/* ---- per row -------------------------------------------------------------------------------- */
/* Σ z[j]·p[j] (k a multiple of 8) and p += d·z, in a fixed order: eight lanes, lane l summing
 * j ≡ l (mod 8) in increasing j, then ((0+4)+(1+5))+((2+6)+(3+7)). Written with vectors of the
 * machine's width (two 4-wide halves without AVX-512: an 8-wide generic vector is lowered through
 * memory there), which changes no result. */
typedef double v8d __attribute__((vector_size(64)));
typedef double v4d __attribute__((vector_size(32)));
static inline double dot_axpy(const double *z, double *p, double d, int k) {
#ifdef __AVX512F__
    v8d s = {0};
    for (int j = 0; j < k; j += 8) {
        v8d zv, pv;
        memcpy(&zv, z + j, 64), memcpy(&pv, p + j, 64);
        s += zv * pv;
        pv += d * zv;
        memcpy(p + j, &pv, 64);
    }
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
#else
    v4d lo = {0}, hi = {0};
    for (int j = 0; j < k; j += 8) {
        v4d z0, z1, p0, p1;
        memcpy(&z0, z + j, 32), memcpy(&z1, z + j + 4, 32), memcpy(&p0, p + j, 32), memcpy(&p1, p + j + 4, 32);
        lo += z0 * p0, hi += z1 * p1;
        p0 += d * z0, p1 += d * z1;
        memcpy(p + j, &p0, 32), memcpy(p + j + 4, &p1, 32);
    }
    return ((lo[0] + hi[0]) + (lo[1] + hi[1])) + ((lo[2] + hi[2]) + (lo[3] + hi[3]));
#endif
}

/* Σ z[j]·p[j] in dot_axpy's order. */
static inline double dot_k(const double *z, const double *p, int k) {
    v4d lo = {0}, hi = {0};
    for (int j = 0; j < k; j += 8) {
        v4d z0, z1, p0, p1;
        memcpy(&z0, z + j, 32), memcpy(&z1, z + j + 4, 32), memcpy(&p0, p + j, 32), memcpy(&p1, p + j + 4, 32);
        lo += z0 * p0, hi += z1 * p1;
    }
    return ((lo[0] + hi[0]) + (lo[1] + hi[1])) + ((lo[2] + hi[2]) + (lo[3] + hi[3]));
}
/* y += a·x (k a multiple of 8) */
static inline void axpy_k(double *y, const double *x, double a, int k) {
    for (int j = 0; j < k; j += 4) {
        v4d xv, yv;
        memcpy(&xv, x + j, 32), memcpy(&yv, y + j, 32);
        yv += a * xv;
        memcpy(y + j, &yv, 32);
    }
}

/* min of b·s² − 2a·s over [lo, hi] */
static double parabola_min(double a, double b, double lo, double hi) {
    if (b > 0) {
        double s = a / b;
        if (s < lo) s = lo;
        if (s > hi) s = hi;
        return s * (b * s - 2 * a);
    }
    double f0 = lo * (b * lo - 2 * a), f1 = hi * (b * hi - 2 * a);
    return f0 < f1 ? f0 : f1;
}

/* The events of one sign of a row, or of both in one list ("paired", for int-k grids: see
 * grid_paired). Paired, the list is the positive sign's events plus probes (δ = 0); an entry joins
 * the set S of entries past the grid's symmetric part at its last positive step when w_i < 0, at
 * its probe when w_i > 0. On every interval the negative sign's codes are then those of the
 * positive sign plus 1 on S (in the frame of w: q̂ = clamp(round(w/s), v₀ + 1 … −v₀)), so its
 * a and b follow from the positive sign's with O(1) work per event: a₁ = a + Σ_S u,
 * b₁ = b + 2·1_Sᵀ·H·q + 1_Sᵀ·H·1_S, with c_S = H·1_S kept up to date by the walk's pass over H
 * as a second vector that moves only when S changes (once per entry). One walk serves both signs. */
struct row_sign {
    struct sweep_event *ev; /* [T] ascending; processing index c ↔ ev[T − 1 − c] */
    double *lb;             /* [T] bound of interval c (INFINITY: empty interval); paired: of both signs */
    int64_t T;
    int paired;
    const float *w; /* paired: the row */
    double inv0;    /* paired: 2/(v₀ + v₁) (an entry w_i < 0 takes its last step at w_i·inv0) */
};

struct row_state {
    struct row_sign sg[2]; /* the event lists: one per sign, or one paired list */
    int nlist, nsign;      /* lists; signs (best[z] is sign z: scale sign[z]·s) */
    double sign[2];
    double slack;
    int anchor_list; /* the list of the anchor (−1: none) */
    int64_t anchor;
    struct sweep_best best[2];
    int64_t intervals, swept;
};

/* The exact state of a walk: a, b of the list's sign; paired, also Σ_S u, 1_Sᵀ·H·q and 1_Sᵀ·H·1_S
 * (c_S = H·1_S is the walk's second vector in piso_sweep_hvals_runs). */
struct walk_state {
    double a, b;
    double uS, gS, eHe;
};

struct window {
    int64_t row; /* in the batch */
    int sg;      /* the list */
    int64_t c0, c1; /* intervals c0..c1 (processing order); the walk starts after events 0..c0−1 */
    int64_t nS;           /* paired: |S| at the start (the walk's setup steps) */
    struct walk_state st; /* at the start */
    struct sweep_best best[2];
};

static inline double ev_s(const struct row_sign *rs, int64_t c) { return rs->ev[rs->T - 1 - c].s; }
static inline double ev_lo(const struct row_sign *rs, int64_t c) { return c == rs->T - 1 ? 0 : ev_s(rs, c + 1); }

/* Paired: the event moves an entry into S (its probe, or the last step of a w_i < 0). */
static inline int ev_grows(const struct row_sign *rs, const struct sweep_event *e) {
    return rs->paired && (e->delta == 0 || (e->delta < 0 && e->s == (double)rs->w[e->i] * rs->inv0));
}
/* Event c is a breakpoint of sign z (paired: probes are not the positive sign's, the last steps of
 * w_i < 0 not the negative sign's). */
static inline int ev_in(const struct row_sign *rs, int64_t c, int z) {
    if (!rs->paired) return 1;
    const struct sweep_event *e = &rs->ev[rs->T - 1 - c];
    return z == 0 ? e->delta != 0 : !(e->delta < 0 && ev_grows(rs, e));
}
/* The interval of sign z around interval c of the list: [sg_lo, sg_hi]. */
static double sg_hi(const struct row_sign *rs, int64_t c, int z) {
    while (c > 0 && !ev_in(rs, c, z)) c--;
    return ev_s(rs, c);
}
static double sg_lo(const struct row_sign *rs, int64_t c, int z) {
    for (c++; c < rs->T; c++)
        if (ev_in(rs, c, z)) return ev_s(rs, c);
    return 0;
}

/* The grids whose negative sign pairs with the positive one: v₁ … v_{n−1} symmetric, v₀ below. */
static int grid_paired(const struct piso_grid *g) {
    if (g->symmetric || g->n < 3 || !(g->v[0] < g->v[1]) || piso_grid_zero_index(g) < 1) return 0;
    for (int k = 1; k < g->n; k++)
        if (g->v[k] != -g->v[g->n - k]) return 0;
    return 1;
}

#ifdef __AVX512F__
/* k = 64 with AVX-512: a length-64 vector as eight registers, the arithmetic of dot_axpy */
struct r64 {
    v8d v[8];
};
static inline __attribute__((always_inline)) struct r64 r64_load(const double *z) {
    struct r64 r;
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) memcpy(&r.v[j], z + 8 * j, 64);
    return r;
}
static inline __attribute__((always_inline)) double r64_dot(const struct r64 *x, const struct r64 *y) {
    v8d s = {0};
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) s += x->v[j] * y->v[j];
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}
static inline __attribute__((always_inline)) void r64_axpy(struct r64 *y, double d, const struct r64 *x) {
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) y->v[j] += d * x->v[j];
}
/* Z's row for event c, and the row of event c + 8 fetched early (entries come in random order) */
static inline __attribute__((always_inline)) struct r64 r64_event_row(const struct row_sign *rs,
                                                                      const struct minorant *m, int64_t c) {
    if (c + 8 < rs->T) {
        const double *zn = m->Z + (int64_t)rs->ev[rs->T - 9 - c].i * 64;
        for (int j = 0; j < 64; j += 8) __builtin_prefetch(zn + j);
    }
    return r64_load(m->Z + (int64_t)rs->ev[rs->T - 1 - c].i * 64);
}
#endif

/* Interval c's bound of both signs (paired): a, b of the positive sign's state, a1, b1 of the
 * negative sign's, with M in place of H. */
static inline void paired_bound(struct row_sign *rs, int64_t c, double crow, double a, double b, double a1, double b1) {
    double hi = ev_s(rs, c), lo = ev_lo(rs, c);
    if (lo == hi) {
        rs->lb[c] = INFINITY;
        return;
    }
    double l0 = parabola_min(a, b, lo, hi), l1 = parabola_min(a1, b1, lo, hi);
    rs->lb[c] = crow + (l0 < l1 ? l0 : l1);
}

/* The bound of every interval of one sign (see the top of the file). q, p: scratch [n], [k]. */
static void bound_pass(struct row_sign *rs, const struct minorant *m, const double *v, double sign, double crow,
                       float *q, double *p) {
    int n = m->n, k = m->k;
    memset(q, 0, sizeof(float) * n);
    memset(p, 0, sizeof(double) * k);
    double a = 0, b = 0;
#ifdef __AVX512F__
    if (rs->paired && k == 64) { /* the loop below with Zᵀq and Zᵀ1_S in sixteen registers (its arithmetic) */
        struct r64 pq = {{{0}}}, pS = {{{0}}};
        double pSp = 0, fS = 0, mSS = 0, vS = 0;
        for (int64_t c = 0; c < rs->T; c++) {
            const struct sweep_event *e = &rs->ev[rs->T - 1 - c];
            int i = e->i;
            double d = e->delta;
            struct r64 z = r64_event_row(rs, m, c);
            if (d != 0) {
                double mq = m->floor_[i] * q[i] + r64_dot(&z, &pq);
                r64_axpy(&pq, d, &z);
                b += d * (2.0 * mq + d * m->mdiag[i]);
                q[i] += e->delta;
                a += d * v[i];
                pSp += d * r64_dot(&z, &pS);
            }
            if (ev_grows(rs, e)) {
                mSS += 2.0 * r64_dot(&z, &pS) + m->mdiag[i];
                r64_axpy(&pS, 1.0, &z);
                pSp += r64_dot(&z, &pq);
                fS += m->floor_[i] * q[i];
                vS += v[i];
            }
            paired_bound(rs, c, crow, a, b, a + vS, b + 2.0 * (fS + pSp) + mSS);
        }
        return;
    }
#endif
    if (rs->paired) { /* both signs: the negative one's a, b from S's sums (see struct row_sign) */
        double *pS = p + k; /* Zᵀ·1_S */
        memset(pS, 0, sizeof(double) * k);
        double pSp = 0, fS = 0, mSS = 0, vS = 0; /* (Zᵀ1_S)ᵀ(Zᵀq), Σ_S floor·q, 1_SᵀM1_S, Σ_S v */
        for (int64_t c = 0; c < rs->T; c++) {
            const struct sweep_event *e = &rs->ev[rs->T - 1 - c];
            int i = e->i;
            double d = e->delta;
            const double *z = m->Z + (int64_t)i * k;
            if (c + 8 < rs->T) {
                const double *zn = m->Z + (int64_t)rs->ev[rs->T - 9 - c].i * k;
                for (int j = 0; j < k; j += 8) __builtin_prefetch(zn + j);
            }
            if (d != 0) {
                double mq = m->floor_[i] * q[i] + dot_axpy(z, p, d, k);
                b += d * (2.0 * mq + d * m->mdiag[i]);
                q[i] += e->delta;
                a += d * v[i];
                pSp += d * dot_k(z, pS, k);
            }
            if (ev_grows(rs, e)) {
                mSS += 2.0 * dot_axpy(z, pS, 1.0, k) + m->mdiag[i];
                pSp += dot_k(z, p, k);
                fS += m->floor_[i] * q[i];
                vS += v[i];
            }
            paired_bound(rs, c, crow, a, b, a + vS, b + 2.0 * (fS + pSp) + mSS);
        }
        return;
    }
#ifdef __AVX512F__
    if (k == 64) { /* the default rank: p = Zᵀq stays in eight registers (dot_axpy's arithmetic) */
        struct r64 pq = {{{0}}};
        for (int64_t c = 0; c < rs->T; c++) {
            const struct sweep_event *e = &rs->ev[rs->T - 1 - c];
            int i = e->i;
            double d = e->delta;
            struct r64 z = r64_event_row(rs, m, c);
            double mq = m->floor_[i] * q[i] + r64_dot(&z, &pq);
            r64_axpy(&pq, d, &z);
            b += d * (2.0 * mq + d * m->mdiag[i]);
            q[i] += e->delta;
            a += d * sign * v[i];
            double hi = e->s, lo = ev_lo(rs, c);
            rs->lb[c] = lo == hi ? INFINITY : crow + parabola_min(a, b, lo, hi);
        }
        return;
    }
#endif
    for (int64_t c = 0; c < rs->T; c++) {
        const struct sweep_event *e = &rs->ev[rs->T - 1 - c];
        int i = e->i;
        double d = e->delta;
        if (c + 8 < rs->T) { /* the entries come in random order: fetch a later event's row of Z early */
            const double *zn = m->Z + (int64_t)rs->ev[rs->T - 9 - c].i * k;
            for (int j = 0; j < k; j += 8) __builtin_prefetch(zn + j);
        }
        double mq = m->floor_[i] * q[i] + dot_axpy(m->Z + (int64_t)i * k, p, d, k); /* (M·q)_i before the step */
        b += d * (2.0 * mq + d * m->mdiag[i]);
        q[i] += e->delta;
        a += d * sign * v[i];
        double hi = e->s, lo = ev_lo(rs, c);
        rs->lb[c] = lo == hi ? INFINITY : crow + parabola_min(a, b, lo, hi);
    }
}

/* The negative sign's leading intervals whose state is the exact negative of the positive sign's
 * (every event so far the same entry and breakpoint with the opposite step: for int4, until the
 * scale falls below max|w|/7.5, where an entry first reaches the grid's asymmetric end). Their E
 * equals the positive interval's, which the positive sign covers and which wins ties, so they are
 * marked as pruned (lb = ∞): often half of the negative sign's window. */
static void mirror_skip(const struct row_sign *pos, struct row_sign *neg) {
    int64_t T = pos->T < neg->T ? pos->T : neg->T;
    for (int64_t c = 0; c < T; c++) {
        const struct sweep_event *a = &pos->ev[pos->T - 1 - c], *b = &neg->ev[neg->T - 1 - c];
        if (a->i != b->i || a->s != b->s || a->delta != -b->delta) return;
        /* interval c spans [next breakpoint, a->s]: the same when the next events share it too */
        double lo_a = ev_lo(pos, c), lo_b = ev_lo(neg, c);
        if (lo_a != lo_b) return;
        neg->lb[c] = INFINITY;
    }
}

/* q after events 0..c−1 of one sign (c = 0: zero). */
static void state_at(const struct row_sign *rs, int64_t c, int n, float *q) {
    memset(q, 0, sizeof(float) * n);
    for (int64_t t = 0; t < c; t++) q[rs->ev[rs->T - 1 - t].i] += rs->ev[rs->T - 1 - t].delta;
}

/* Per-thread scratch. */
struct scratch {
    struct sweep_event *tmp;
    float *q;
    double *p, *v, *zw;
};

static void scratch_free(struct scratch *s) { free(s->tmp), free(s->q), free(s->p), free(s->v), free(s->zw); }

static int scratch_alloc(struct scratch *s, int n, int k, int64_t Tmax) {
    memset(s, 0, sizeof *s);
    s->tmp = malloc(sizeof *s->tmp * (size_t)Tmax);
    s->q = malloc(sizeof(float) * n), s->p = malloc(sizeof(double) * 2 * k); /* Zᵀq, Zᵀ1_S */
    s->v = malloc(sizeof(double) * n), s->zw = malloc(sizeof(double) * k);
    return s->tmp && s->q && s->p && s->v && s->zw ? 0 : -1;
}

/* Paired: S after events 0..c−1 of the list, as steps that move only the second vector (x = 1_S:
 * idx, dl = 0, dl2 = 1, iv = −1, nothing considered); the walk's h2 starts at 0. Returns |S|;
 * idx NULL: only counts. */
static int64_t setup_steps(const struct row_sign *rs, int64_t c, int32_t *idx, float *dl, float *dl2, int64_t *iv) {
    int64_t len = 0;
    for (int64_t t = 0; t < c; t++) {
        const struct sweep_event *e = &rs->ev[rs->T - 1 - t];
        if (!ev_grows(rs, e)) continue;
        if (idx) idx[len] = e->i, dl[len] = 0, dl2[len] = 1, iv[len] = -1;
        len++;
    }
    return len;
}

/* Considers interval c of the list with the walk state: its sign's, or both signs paired. */
static void consider_both(const struct row_sign *rs, int z, int64_t c, const struct walk_state *st,
                          struct sweep_best *best) {
    if (!rs->paired) {
        piso_sweep_consider(st->a, st->b, ev_lo(rs, c), ev_s(rs, c), &best[z]);
        return;
    }
    piso_sweep_consider(st->a, st->b, sg_lo(rs, c, 0), sg_hi(rs, c, 0), &best[0]);
    piso_sweep_consider(st->a + st->uS, st->b + 2.0 * st->gS + st->eHe, sg_lo(rs, c, 1), sg_hi(rs, c, 1), &best[1]);
}

/* The exact pass of a walk whose hval came from piso_sweep_hvals_runs: step t moves entry idx[t]
 * by dl[t] (a, b follow), then interval iv[t] (processing index; −1: none) is considered. Paired,
 * dl2[t] = +1 when i joins S after its step, −1 when it leaves S before it (a walk back), and
 * hval2[t] = (H·1_S)_i before the step. List z; best: by sign. */
static void walk_consider(const struct row_sign *rs, int z, const int32_t *idx, const float *dl, const float *dl2,
                          const int64_t *iv, const float *hval, const float *hval2, int64_t len, const double *hdiag,
                          const double *u, double sign, struct walk_state *st, struct sweep_best *best,
                          int64_t *swept) {
    for (int64_t t = 0; t < len; t++) {
        int i = idx[t];
        double d = dl[t], hv = hval[t], hii = hdiag[i];
        if (rs->paired) {
            double cs = hval2[t];
            if (dl2[t] < 0) { /* i leaves S before its step is undone */
                cs -= hii;
                st->eHe -= 2.0 * cs + hii;
                st->gS -= hv, st->uS -= u[i];
            }
            st->gS += d * cs;
            if (dl2[t] > 0) { /* i joins S after its step */
                st->gS += hv + d * hii;
                st->eHe += 2.0 * cs + hii;
                st->uS += u[i];
            }
        }
        st->b += 2.0 * d * hv + d * d * hii;
        st->a += d * sign * u[i];
        if (iv[t] >= 0 && ev_lo(rs, iv[t]) != ev_s(rs, iv[t])) {
            consider_both(rs, z, iv[t], st, best);
            (*swept)++;
        }
    }
}

static double threshold(const struct row_state *x) {
    double E = 0;
    for (int z = 0; z < x->nsign; z++)
        if (x->best[z].E < E) E = x->best[z].E;
    return E + x->slack;
}

/* One of the two walks out of a row's anchor: direction +1 (smaller scales) or −1 (back towards
 * larger ones). All rows' walkers advance together in rounds (one piso_sweep_hvals_runs pass per
 * round); a round takes a walker to the farthest interval within `gap` steps whose bound is below
 * the row's threshold, which follows the best value found so far (gaps shorter than that cost
 * less to walk through than a restart). */
struct walker {
    int64_t row;
    int sg, dir, live, setup; /* setup: paired, S still to be built (the first round) */
    int64_t c; /* the interval reached */
    struct walk_state st;
    float *h, *h2; /* [n] H·q at c; paired: H·1_S */
    int32_t *idx;
    float *dl, *hval, *dl2, *hval2;
    int64_t *iv, len; /* this round's steps */
};

static void walker_plan(struct row_state *x, struct walker *wk, int64_t gap) {
    struct row_sign *q = &x->sg[wk->sg];
    wk->len = 0;
    if (!wk->live) return;
    double theta = threshold(x);
    int dir = wk->dir;
    int64_t c = wk->c, ext = -1;
    for (int64_t t = c + dir; t >= 0 && t < q->T && (t - c) * dir <= gap; t += dir)
        if (q->lb[t] < theta) ext = t;
    int64_t len = 0;
    if (wk->setup) { /* S at the anchor first; the forward walker then considers the anchor's interval */
        len = setup_steps(q, c + 1, wk->idx, wk->dl, wk->dl2, wk->iv);
        if (len > 0 && dir > 0) wk->iv[len - 1] = c;
        wk->setup = 0;
    }
    if (ext < 0) {
        wk->live = 0;
        wk->len = len;
        return;
    }
    for (int64_t t = c; t != ext; t += dir, len++) {
        /* forward: apply event t + 1; back: undo event t */
        const struct sweep_event *e = &q->ev[q->T - 1 - (dir > 0 ? t + 1 : t)];
        wk->idx[len] = e->i, wk->dl[len] = dir > 0 ? e->delta : -e->delta, wk->iv[len] = t + dir;
        if (q->paired) wk->dl2[len] = ev_grows(q, e) ? (float)dir : 0.0f;
    }
    wk->len = len;
}

/* q = round(w/sp) and round(w/sn) (sp > 0 > sn) are exact negatives: ±s then give the same E. */
static int mirrored(const float *w, int n, const struct piso_grid *g, float sp, float sn) {
    for (int i = 0; i < n; i++)
        if (piso_grid_round(g, w[i] / sp, NULL) != -piso_grid_round(g, w[i] / sn, NULL)) return 0;
    return 1;
}

/* ---- the driver ----------------------------------------------------------------------------- */
struct batch {
    int n, k;
    const float *H;
    int ldh;
    const struct piso_grid *g;
    struct row_state *rs; /* [R] */
    float *Q, *HQ;        /* [R or windows, n] */
};

/* Adds the windows of surviving intervals (bound < theta) of one sign, skipping [skip0, skip1]. */
static int add_windows(const struct row_sign *rs, int64_t row, int sg, double theta, int64_t skip0, int64_t skip1,
                       int gap, struct window *out, int cap) {
    int nw = 0;
    int64_t c0 = -1, c1 = -1;
    for (int64_t c = 0; c <= rs->T; c++) {
        int live = c < rs->T && !(c >= skip0 && c <= skip1) && rs->lb[c] < theta;
        if (live && c0 >= 0 && c - c1 <= gap) {
            c1 = c;
            continue;
        }
        if ((live || c == rs->T) && c0 >= 0) {
            if (nw < cap) out[nw] = (struct window){.row = row, .sg = sg, .c0 = c0, .c1 = c1};
            nw++;
            c0 = -1;
        }
        if (live) c0 = c1 = c;
    }
    if (nw > cap) { /* too many: one window over all of them */
        int64_t first = out[0].c0, last = 0;
        for (int64_t c = rs->T - 1; c >= 0; c--)
            if (!(c >= skip0 && c <= skip1) && rs->lb[c] < theta) {
                last = c;
                break;
            }
        out[0] = (struct window){.row = row, .sg = sg, .c0 = first, .c1 = last};
        nw = 1;
    }
    return nw;
}

int piso_xform_usable(const float *X, int64_t T, int64_t ldx, int n, const float *H, int ldh) {
    if (!X || T <= 0 || T > n || (int64_t)piso_sweep_xrows((int)T) * 2 > n) return 0;
    double *d = calloc((size_t)n, sizeof(double)), scale = 0;
    if (!d) return 0;
    for (int64_t t = 0; t < T; t++)
        for (int i = 0; i < n; i++) d[i] += (double)X[t * ldx + i] * X[t * ldx + i];
    for (int i = 0; i < n; i++) scale += fabs((double)H[(int64_t)i * ldh + i]) / n;
    int ok = 1;
    for (int i = 0; i < n && ok; i++) ok = fabs(d[i] - (double)H[(int64_t)i * ldh + i]) <= 1e-4 * (fabs(d[i]) + scale);
    free(d);
    return ok;
}

/* The walks' starting vectors for the rows of Q [nq, n]: H·q into HQ [nq, n], or in the X̃ form X̃·q
 * into HQ [nq, tp] (zeros past t). */
struct walk_form {
    const float *H, *X; /* X NULL: H·q */
    int ldh, t, tp;
    int64_t ldx;
};

static void start_vectors(const struct walk_form *f, int64_t nq, int n, const float *Q, float *HQ) {
    if (!f->X) {
        piso_la_sgemm(0, 0, nq, n, n, 1.0f, Q, n, f->H, f->ldh, 0.0f, HQ, n);
        return;
    }
    piso_la_sgemm(0, 1, nq, f->t, n, 1.0f, Q, n, f->X, f->ldx, 0.0f, HQ, f->tp);
    for (int64_t r = 0; r < nq; r++)
        for (int j = f->t; j < f->tp; j++) HQ[r * f->tp + j] = 0;
}

/* qᵀHq from the start vector h0 of q: Σ q_i·(H·q)_i, or ‖X̃·q‖². */
static double start_qhq(const struct walk_form *f, int n, const float *q, const float *h0) {
    double b = 0;
    if (f->X)
        for (int j = 0; j < f->t; j++) b += (double)h0[j] * h0[j];
    else
        for (int i = 0; i < n; i++)
            if (q[i] != 0) b += (double)q[i] * h0[i];
    return b;
}

int piso_solve_scales_rows(const float *W, int64_t ldw, int64_t N, int n, const float *H, int ldh, const double *U,
                           int64_t ldu, const double *HW, int64_t ldhw, const struct piso_grid *g,
                           int allow_negative, float *scales, int64_t scale_stride, struct piso_prune_stats *st) {
    return piso_solve_scales_rows_x(W, ldw, N, n, NULL, 0, 0, H, ldh, U, ldu, HW, ldhw, g, allow_negative, scales,
                                    scale_stride, st);
}

int piso_solve_scales_rows_x(const float *W, int64_t ldw, int64_t N, int n, const float *X, int64_t T, int64_t ldx,
                             const float *H, int ldh, const double *U, int64_t ldu, const double *HW, int64_t ldhw,
                             const struct piso_grid *g, int allow_negative, float *scales, int64_t scale_stride,
                             struct piso_prune_stats *st) {
    struct piso_prune_stats stats = {0};
    stats.rows = N;
    int use = prune_mode == 2 ? n >= 8 : prune_mode == 0 && n >= PISO_PRUNE_MIN_N;
    if (g->scale_set || N <= 0) use = 0;
    struct minorant m = {0};
    int m_shared = 0;
    double t0 = piso_time();
    int k = prune_rank > 0 ? (prune_rank + 7) / 8 * 8 : piso_prune_default_rank(n);
    if (k > n) k = n / 8 * 8;
    if (use && k < 8) use = 0;
    /* the X̃ form when its walks read at most half the floats per event that H's would */
    struct walk_form form = {H, NULL, ldh, 0, 0, 0};
    if (use && piso_xform_usable(X, T, ldx, n, H, ldh))
        form.X = X, form.t = (int)T, form.tp = piso_sweep_xrows((int)T), form.ldx = ldx;
    if (use) {
        int r = minorant_get(H, ldh, n, k, &m, &m_shared, form.X, T, ldx);
        if (r < 0) return piso_errorf("PiSO pruning: out of memory for the minorant (n = %d, k = %d)", n, k);
        if (r > 0 && m_shared) { /* H not certified: nothing of the cache's to use */
#pragma omp critical(piso_minorant_cache)
            mcache.users--;
            m_shared = 0;
        }
        if (r > 0) use = 0;
    }
    stats.seconds_minorant = piso_time() - t0;
    if (!use) { /* every row swept in full */
        int failed = 0;
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t r = 0; r < N; r++) {
            float s = piso_solve_scale_dense(W + r * ldw, n, H, ldh, U ? U + r * ldu : NULL, g, allow_negative, NULL);
            if (isnan(s)) {
#pragma omp atomic write
                failed = 1;
            }
            scales[r * scale_stride] = s;
        }
        stats.rows_full = N;
        stats_add(&stats);
        if (st) *st = stats;
        if (failed) return piso_errorf("PiSO: out of memory for the sweep (n = %d)", n);
        return 0;
    }
    stats.rank = k, stats.floor = m.mu;
    if (form.X) stats.rows_x = N;
    const int hl = form.X ? form.tp : n; /* length of a walk's vectors */
    int nsign = allow_negative && !g->symmetric ? 2 : 1;
    int paired = nsign == 2 && grid_paired(g), nlist = paired ? 1 : nsign;
    int64_t Tmax = piso_sweep_max_events(n, g);
    if (Tmax < 1) Tmax = 1;
    int64_t R = N < prune_batch ? N : prune_batch;
    int nthr = piso_num_threads();
    int cap = PRUNE_MAX_WINDOWS;
    struct row_state *rs = calloc((size_t)R, sizeof *rs);
    struct scratch *scr = calloc((size_t)nthr, sizeof *scr);
    struct window *win = malloc(sizeof *win * (size_t)(R * 2 * cap));
    float *Q = malloc(sizeof(float) * (size_t)R * n), *HQ = malloc(sizeof(float) * (size_t)R * n); /* anchors, windows */
    double *hw_own = HW ? NULL : malloc(sizeof(double) * (size_t)R * n);
    double *u_own = U ? NULL : malloc(sizeof(double) * (size_t)R * n);
    double *hdiag = malloc(sizeof(double) * n); /* H's diagonal, read per event (a cache miss each in H) */
    for (int i = 0; hdiag && i < n; i++) hdiag[i] = H[(int64_t)i * ldh + i];
    int oom = !rs || !scr || !win || !Q || !HQ || !hdiag || (!HW && !hw_own) || (!U && !u_own);
    for (int64_t r = 0; r < R && !oom; r++)
        for (int s = 0; s < nlist && !oom; s++) {
            rs[r].sg[s].ev = malloc(sizeof(struct sweep_event) * (size_t)Tmax);
            rs[r].sg[s].lb = malloc(sizeof(double) * (size_t)Tmax);
            oom = !rs[r].sg[s].ev || !rs[r].sg[s].lb;
        }
    for (int t = 0; t < nthr && !oom; t++) oom = scratch_alloc(&scr[t], n, k, Tmax);
    int64_t gap_max = (n / 4 > 64 ? n / 4 : 64) + 1;
    struct walker *wks = oom ? NULL : calloc((size_t)(2 * R), sizeof *wks);
    struct sweep_run *runs = oom ? NULL : malloc(sizeof *runs * (size_t)(2 * R));
    /* H in the walks' panel layout, once; without it (too large, or no memory for it) each pass
     * packs its panels into per-thread slots */
    float *packed = NULL, *panels = NULL;
    if (!oom && form.X) { /* X̃'s tiles, which its walks read */
        packed = malloc(sizeof(float) * piso_sweep_xpacked_floats(form.t, n));
        if (packed) piso_sweep_pack_x(X, ldx, form.t, n, packed);
        oom = !packed;
    } else if (!oom) {
        packed = piso_sweep_packed_floats(n) * sizeof(float) <= prune_pack_max
                     ? malloc(sizeof(float) * piso_sweep_packed_floats(n))
                     : NULL;
        if (packed) piso_sweep_pack(H, ldh, n, packed);
        panels = packed ? NULL : malloc(sizeof(float) * piso_sweep_runs_workspace(n) * (size_t)nthr);
        oom = !packed && !panels;
    }
    oom = oom || !wks || !runs;
    if (paired) gap_max += n; /* the first round's setup steps (|S| ≤ n) */
    for (int64_t t = 0; t < 2 * R && !oom; t++) {
        wks[t].h = malloc(sizeof(float) * hl), wks[t].idx = malloc(sizeof(int32_t) * (size_t)gap_max);
        wks[t].dl = malloc(sizeof(float) * (size_t)gap_max), wks[t].hval = malloc(sizeof(float) * (size_t)gap_max);
        wks[t].iv = malloc(sizeof(int64_t) * (size_t)gap_max);
        oom = !wks[t].h || !wks[t].idx || !wks[t].dl || !wks[t].hval || !wks[t].iv;
        if (paired && !oom) {
            wks[t].h2 = malloc(sizeof(float) * hl), wks[t].dl2 = malloc(sizeof(float) * (size_t)gap_max);
            wks[t].hval2 = malloc(sizeof(float) * (size_t)gap_max);
            oom = !wks[t].h2 || !wks[t].dl2 || !wks[t].hval2;
        }
    }
    /* paired: the second vectors (H·1_S) of the windows' walks */
    float *win_h2 = paired && !oom ? malloc(sizeof(float) * (size_t)R * hl) : NULL;
    oom = oom || (paired && !win_h2);
    int32_t *pool_idx = NULL;
    float *pool_dl = NULL, *pool_hval = NULL, *pool_dl2 = NULL, *pool_hval2 = NULL;
    int64_t *pool_iv = NULL, pool_cap = 0; /* the windows' steps */
    int failed = oom;
    for (int64_t r0 = 0; r0 < N && !failed; r0 += R) {
        int64_t nb = N - r0 < R ? N - r0 : R;
        /* H·w for the batch when the caller has none: fp32 GEMM, then fp64 */
        if (!HW || !U) {
            piso_la_sgemm(0, 0, nb, n, n, 1.0f, W + r0 * ldw, ldw, H, ldh, 0.0f, HQ, n);
            for (int64_t t = 0; t < nb * n; t++) {
                if (hw_own) hw_own[t] = HQ[t];
                if (u_own) u_own[t] = HQ[t];
            }
        }
        double tp = piso_time();
        /* 1. bounds, anchors */
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t b = 0; b < nb; b++) {
            struct scratch *s = &scr[omp_get_thread_num()];
            struct row_state *x = &rs[b];
            const float *w = W + (r0 + b) * ldw;
            const double *u = U ? U + (r0 + b) * ldu : u_own + b * n;
            const double *hw = HW ? HW + (r0 + b) * ldhw : hw_own + b * n;
            /* M·w = floor ⊙ w + Z·(Zᵀw) */
            memset(s->zw, 0, sizeof(double) * k);
            for (int i = 0; i < n; i++) axpy_k(s->zw, m.Z + (int64_t)i * k, w[i], k);
            double wmw = 0, whw = 0, mag = 0;
            for (int i = 0; i < n; i++) {
                double mw = m.floor_[i] * w[i] + dot_k(m.Z + (int64_t)i * k, s->zw, k);
                s->v[i] = u[i] - hw[i] + mw;
                wmw += w[i] * mw, whw += w[i] * hw[i];
                mag += hdiag[i] * w[i] * w[i];
            }
            x->slack = PRUNE_SLACK * (mag + fabs(whw));
            x->nsign = nsign, x->nlist = nlist;
            x->anchor_list = -1;
            x->anchor = 0;
            x->intervals = x->swept = 0;
            double lbmin = INFINITY;
            for (int z = 0; z < nsign; z++) {
                x->sign[z] = z == 0 ? 1.0 : -1.0;
                x->best[z] = (struct sweep_best){0, INFINITY, g, 0, {0}, 0};
            }
            for (int sg = 0; sg < nlist; sg++) {
                struct row_sign *q = &x->sg[sg];
                q->paired = paired, q->w = w;
                q->inv0 = 2.0 / ((double)g->v[0] + (double)g->v[1]);
                q->T = paired ? piso_sweep_build_events_paired(w, n, g, q->ev, s->tmp)
                              : piso_sweep_build_events(w, n, x->sign[sg], g, q->ev, s->tmp);
                bound_pass(q, &m, s->v, x->sign[sg], wmw - whw, s->q, s->p);
                for (int64_t c = 0; c < q->T; c++) x->intervals += q->lb[c] < INFINITY;
                if (sg == 1) mirror_skip(&x->sg[0], q);
                for (int64_t c = 0; c < q->T; c++) {
                    if (q->lb[c] < lbmin) lbmin = q->lb[c], x->anchor_list = sg, x->anchor = c;
                }
            }
            if (x->anchor_list >= 0) state_at(&x->sg[x->anchor_list], x->anchor + 1, n, Q + b * n);
            else memset(Q + b * n, 0, sizeof(float) * n);
        }
        stats.seconds_bound += piso_time() - tp, tp = piso_time();
        /* 2. H·q (or X̃·q) at the anchors, each anchor's exact value */
        start_vectors(&form, nb, n, Q, HQ);
        stats.seconds_gemm += piso_time() - tp, tp = piso_time();
        int64_t gap = n / 4 > 64 ? n / 4 : 64;
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t b = 0; b < nb; b++) {
            struct row_state *x = &rs[b];
            struct walker *wk = &wks[2 * b];
            wk[0].live = wk[1].live = 0, wk[0].len = wk[1].len = 0;
            if (x->anchor_list < 0) continue;
            const double *u = U ? U + (r0 + b) * ldu : u_own + b * n;
            int sg = x->anchor_list;
            const float *qa = Q + b * n, *h0 = HQ + b * hl;
            double a = 0, bb = start_qhq(&form, n, qa, h0);
            for (int i = 0; i < n; i++)
                if (qa[i] != 0) a += (double)qa[i] * x->sign[sg] * u[i];
            /* paired: the negative sign once S is built (the forward walker's first steps), unless S
             * is empty here */
            struct walk_state st0 = {a, bb, 0, 0, 0};
            int64_t nS = paired ? setup_steps(&x->sg[sg], x->anchor + 1, NULL, NULL, NULL, NULL) : 0;
            if (nS == 0) consider_both(&x->sg[sg], sg, x->anchor, &st0, x->best);
            else piso_sweep_consider(a, bb, sg_lo(&x->sg[sg], x->anchor, 0), sg_hi(&x->sg[sg], x->anchor, 0), &x->best[0]);
            x->swept++;
            for (int z = 0; z < 2; z++) {
                wk[z].row = b, wk[z].sg = sg, wk[z].dir = z ? -1 : 1, wk[z].live = 1;
                wk[z].c = x->anchor, wk[z].st = st0, wk[z].setup = nS > 0;
                memcpy(wk[z].h, h0, sizeof(float) * hl);
                if (paired) memset(wk[z].h2, 0, sizeof(float) * hl);
            }
        }
        /* 3. the anchors' windows, all rows' walkers together in rounds */
        for (;;) {
#pragma omp parallel for schedule(dynamic, 1)
            for (int64_t b = 0; b < nb; b++)
                for (int z = 0; z < 2; z++) walker_plan(&rs[b], &wks[2 * b + z], gap);
            int nr = 0;
            for (int64_t t = 0; t < 2 * nb; t++)
                if (wks[t].len > 0)
                    runs[nr++] = (struct sweep_run){wks[t].idx, wks[t].dl,  wks[t].len, wks[t].h,
                                                    wks[t].hval, wks[t].dl2, wks[t].h2, wks[t].hval2};
            if (nr == 0) break;
            stats.rounds++;
            if (form.X) piso_sweep_xvals_runs(runs, nr, packed, form.t, n);
            else piso_sweep_hvals_runs(runs, nr, H, ldh, n, packed, panels, nthr);
#pragma omp parallel for schedule(dynamic, 1)
            for (int64_t b = 0; b < nb; b++) {
                struct row_state *x = &rs[b];
                const double *u = U ? U + (r0 + b) * ldu : u_own + b * n;
                for (int z = 0; z < 2; z++) { /* in a fixed order: both update the row's best */
                    struct walker *wk = &wks[2 * b + z];
                    if (wk->len <= 0) continue;
                    walk_consider(&x->sg[wk->sg], wk->sg, wk->idx, wk->dl, wk->dl2, wk->iv, wk->hval, wk->hval2,
                                  wk->len, hdiag, u, x->sign[wk->sg], &wk->st, x->best, &x->swept);
                    if (wk->iv[wk->len - 1] >= 0) wk->c = wk->iv[wk->len - 1];
                }
            }
        }
        /* what is left: windows of intervals that can still beat the best so far */
        int nwin = 0;
        for (int64_t b = 0; b < nb; b++) {
            struct row_state *x = &rs[b];
            if (x->anchor_list < 0) continue;
            int sg = x->anchor_list;
            double theta = threshold(x);
            int64_t lo = wks[2 * b + 1].c, hi = wks[2 * b].c;
            for (int z = 0; z < x->nlist; z++)
                nwin += add_windows(&x->sg[z], b, z, theta, z == sg ? lo : 1, z == sg ? hi : 0, (int)gap, win + nwin, cap);
        }
#pragma omp parallel for schedule(dynamic, 1)
        for (int t = 0; t < nwin; t++)
            win[t].nS = paired ? setup_steps(&rs[win[t].row].sg[win[t].sg], win[t].c0, NULL, NULL, NULL, NULL) : 0;
        stats.seconds_walk += piso_time() - tp, tp = piso_time();
        /* 4. the other windows, R at a time: H·q at their starts (one GEMM), then one pass for their walks */
        for (int w0 = 0; w0 < nwin && !failed; w0 += (int)R) {
            int nw = nwin - w0 < (int)R ? nwin - w0 : (int)R;
            struct window *wv = win + w0;
            int64_t wlen = 0;
            for (int t = 0; t < nw; t++) wlen += wv[t].nS + wv[t].c1 - wv[t].c0 + 1;
            if (wlen > pool_cap) {
                free(pool_idx), free(pool_dl), free(pool_hval), free(pool_iv), free(pool_dl2), free(pool_hval2);
                pool_cap = wlen;
                pool_idx = malloc(sizeof(int32_t) * (size_t)wlen), pool_dl = malloc(sizeof(float) * (size_t)wlen);
                pool_hval = malloc(sizeof(float) * (size_t)wlen), pool_iv = malloc(sizeof(int64_t) * (size_t)wlen);
                pool_dl2 = paired ? malloc(sizeof(float) * (size_t)wlen) : NULL;
                pool_hval2 = paired ? malloc(sizeof(float) * (size_t)wlen) : NULL;
                if (!pool_idx || !pool_dl || !pool_hval || !pool_iv || (paired && (!pool_dl2 || !pool_hval2))) {
                    failed = 1;
                    break;
                }
            }
            int64_t off = 0;
            for (int t = 0; t < nw; t++) {
                int64_t len = wv[t].nS + wv[t].c1 - wv[t].c0 + 1;
                runs[t] = (struct sweep_run){pool_idx + off, pool_dl + off, len, HQ + (int64_t)t * hl, pool_hval + off,
                                             NULL, NULL, NULL};
                if (paired) {
                    runs[t].dl2 = pool_dl2 + off, runs[t].hval2 = pool_hval2 + off;
                    runs[t].h2 = win_h2 + (int64_t)t * hl;
                    memset(runs[t].h2, 0, sizeof(float) * hl);
                }
                off += len;
            }
#pragma omp parallel for schedule(dynamic, 1)
            for (int t = 0; t < nw; t++) {
                const struct row_sign *q = &rs[wv[t].row].sg[wv[t].sg];
                state_at(q, wv[t].c0, n, Q + (int64_t)t * n);
                int32_t *idx = (int32_t *)runs[t].idx;
                float *dl = (float *)runs[t].dl, *dl2 = (float *)runs[t].dl2;
                int64_t *iv = pool_iv + (runs[t].idx - pool_idx), len = 0;
                if (paired) len = setup_steps(q, wv[t].c0, idx, dl, dl2, iv);
                for (int64_t c = wv[t].c0; c <= wv[t].c1; c++, len++) {
                    const struct sweep_event *e = &q->ev[q->T - 1 - c];
                    idx[len] = e->i, dl[len] = e->delta, iv[len] = c;
                    if (paired) dl2[len] = ev_grows(q, e) ? 1.0f : 0.0f;
                }
            }
            start_vectors(&form, nw, n, Q, HQ);
            stats.seconds_gemm += piso_time() - tp, tp = piso_time();
            stats.windows += nw;
            /* the exact values at the windows' starts, before their walks overwrite HQ */
#pragma omp parallel for schedule(dynamic, 1)
            for (int t = 0; t < nw; t++) {
                struct window *wd = &wv[t];
                struct row_state *x = &rs[wd->row];
                const double *u = U ? U + (r0 + wd->row) * ldu : u_own + wd->row * n;
                const float *qs = Q + (int64_t)t * n, *h0 = HQ + (int64_t)t * hl;
                double a = 0, bb = start_qhq(&form, n, qs, h0);
                for (int i = 0; i < n; i++)
                    if (qs[i] != 0) a += (double)qs[i] * x->sign[wd->sg] * u[i];
                wd->st = (struct walk_state){a, bb, 0, 0, 0}; /* paired: S from the walk's setup steps */
            }
            stats.rounds++;
            if (form.X) piso_sweep_xvals_runs(runs, nw, packed, form.t, n);
            else piso_sweep_hvals_runs(runs, nw, H, ldh, n, packed, panels, nthr);
#pragma omp parallel for schedule(dynamic, 1)
            for (int t = 0; t < nw; t++) {
                struct window *wd = &wv[t];
                struct row_state *x = &rs[wd->row];
                const double *u = U ? U + (r0 + wd->row) * ldu : u_own + wd->row * n;
                for (int z = 0; z < 2; z++) wd->best[z] = (struct sweep_best){0, INFINITY, g, 0, {0}, 0};
                int64_t sw = 0;
                walk_consider(&x->sg[wd->sg], wd->sg, runs[t].idx, runs[t].dl, runs[t].dl2,
                              pool_iv + (runs[t].idx - pool_idx), runs[t].hval, runs[t].hval2, runs[t].len, hdiag, u,
                              x->sign[wd->sg], &wd->st, wd->best, &sw);
                wd->c1 = sw; /* reused: intervals swept */
            }
            for (int t = 0; t < nw; t++) { /* fixed order */
                struct row_state *x = &rs[wv[t].row];
                for (int z = 0; z < x->nsign; z++) {
                    struct sweep_best *bs = &x->best[z];
                    if (wv[t].best[z].E < bs->E) bs->E = wv[t].best[z].E, bs->s = wv[t].best[z].s;
                }
                x->swept += wv[t].c1;
            }
        }
        stats.seconds_windows += piso_time() - tp;
        /* 5. the scale: the better sign, as piso_solve_scale_dense chooses it */
        for (int64_t b = 0; b < nb; b++) {
            struct row_state *x = &rs[b];
            float s_best = 0;
            double E_best = INFINITY;
            for (int z = 0; z < x->nsign && x->anchor_list >= 0; z++) {
                if (!(x->best[z].E < 0)) continue;
                float s = (float)(x->sign[z] * x->best[z].s);
                if (s == 0 || !isfinite(s)) continue;
                if (z == 1 && s_best != 0 && fabs(x->best[1].E - E_best) <= 1e-6 * fabs(E_best)) {
                    /* a near-tie of the signs: when no entry reaches the grid's asymmetric end, ±s
                     * give the same E exactly and the full sweep keeps +s; the two were evaluated
                     * along different paths here, so decide on the exact fp64 values */
                    const double *u = U ? U + (r0 + b) * ldu : NULL;
                    const float *w = W + (r0 + b) * ldw;
                    if (mirrored(w, n, g, s_best, s)) continue; /* the same E: O(n) to see it */
                    double Ep = piso_objective_dense(w, n, H, ldh, u, g, s_best);
                    double En = piso_objective_dense(w, n, H, ldh, u, g, s);
                    if (En < Ep) E_best = x->best[1].E, s_best = s;
                    continue;
                }
                if (x->best[z].E < E_best) E_best = x->best[z].E, s_best = s;
            }
            if (!(E_best < 0)) s_best = piso_scale_absmax(W + (r0 + b) * ldw, n, g);
            for (int z = 0; z < x->nlist && x->anchor_list >= 0; z++) /* what a perfect window choice would sweep */
                for (int64_t c = 0; c < x->sg[z].T; c++)
                    stats.needed += x->sg[z].lb[c] < (E_best < 0 ? E_best : 0) + x->slack;
            scales[(r0 + b) * scale_stride] = s_best;
            stats.intervals += x->intervals;
            stats.swept += x->swept;
        }
    }
    if (rs)
        for (int64_t r = 0; r < R; r++)
            for (int s = 0; s < 2; s++) free(rs[r].sg[s].ev), free(rs[r].sg[s].lb);
    if (scr)
        for (int t = 0; t < nthr; t++) scratch_free(&scr[t]);
    if (wks)
        for (int64_t t = 0; t < 2 * R; t++)
            free(wks[t].h), free(wks[t].idx), free(wks[t].dl), free(wks[t].hval), free(wks[t].iv), free(wks[t].h2),
                free(wks[t].dl2), free(wks[t].hval2);
    free(win_h2), free(pool_dl2), free(pool_hval2);
    free(wks), free(runs), free(panels), free(packed), free(pool_idx), free(pool_dl), free(pool_hval), free(pool_iv);
    free(rs), free(scr), free(win), free(Q), free(HQ), free(hw_own), free(u_own), free(hdiag);
    if (!m_shared) minorant_free(&m);
    else {
#pragma omp critical(piso_minorant_cache)
        mcache.users--;
    }
    stats_add(&stats);
    if (st) *st = stats;
    if (failed) return piso_errorf("PiSO pruning: out of memory for a batch of %lld rows (n = %d)", (long long)R, n);
    return 0;
}
