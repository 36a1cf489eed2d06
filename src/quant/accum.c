/* Accumulator limits (piso/accum.h, algorithms.md §8): the closed-form worst case of a tile, the code
 * limits of the next weight, the ℓ1-ball threshold, option checks and the checker. The constrained
 * sweeps live in piso_sweep.c, the AXE step in ec_engine.c. */
#include "piso/accum.h"
#include "quant/quant_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int piso_accum_input_range(int bits, int is_signed, int64_t *in_min, int64_t *in_max) {
    if (bits < 1 || bits > 30) return piso_errorf("--input-bits %d: must lie in 1..30", bits);
    if (is_signed && bits < 2) return piso_errorf("--input-bits %d: signed inputs need at least 2 bits", bits);
    if (is_signed) *in_min = -((int64_t)1 << (bits - 1)), *in_max = ((int64_t)1 << (bits - 1)) - 1;
    else *in_min = 0, *in_max = ((int64_t)1 << bits) - 1;
    return 0;
}

int64_t piso_accum_max(const struct piso_accum *a) { return ((int64_t)1 << (a->bits - 1)) - 1; }

int64_t piso_accum_worst(const struct piso_accum *a, int64_t p, int64_t n) {
    int64_t hi = a->in_max * p + a->in_min * n;    /* the largest value over the inputs */
    int64_t lo = a->in_min * p + a->in_max * n;    /* the smallest */
    return hi > -lo ? hi : -lo;
}

/* floor(x / d) and ceil(x / d) for d > 0 */
static int64_t floor_div(int64_t x, int64_t d) { return x >= 0 ? x / d : -((-x + d - 1) / d); }
static int64_t ceil_div(int64_t x, int64_t d) { return -floor_div(-x, d); }

void piso_accum_code_limits(const struct piso_accum *a, int64_t p, int64_t n, int64_t *lo, int64_t *hi) {
    const int64_t A = piso_accum_max(a), mx = a->in_max, mn = a->in_min;
    /* q > 0 raises p: μ_max(p + q) + μ_min·n ≤ A, and −(μ_min(p + q) + μ_max·n) ≤ A (μ_min < 0) */
    int64_t h = floor_div(A - (mx * p + mn * n), mx);
    if (mn < 0) {
        int64_t h2 = floor_div(A + mn * p + mx * n, -mn);
        if (h2 < h) h = h2;
    }
    /* q < 0 lowers n: μ_max·p + μ_min(n + q) ≤ A (μ_min < 0), and −(μ_min·p + μ_max(n + q)) ≤ A */
    int64_t l = ceil_div(-A - (mn * p + mx * n), mx);
    if (mn < 0) {
        int64_t l2 = -floor_div(A - (mx * p + mn * n), -mn);
        if (l2 > l) l = l2;
    }
    *lo = l, *hi = h;
}

/* Michelot's fixed point: θ_{k+1} = (Σ_{v_i > θ_k} v_i − radius) / #{v_i > θ_k}, from θ_0 = (Σ v − radius)/n,
 * rises monotonically to the threshold and stops in at most n passes; no sort, no memory. get(i)
 * reads entry i. */
#define L1_THRESHOLD(n, radius, get)                                                                     \
    do {                                                                                                  \
        double tot_ = 0;                                                                                  \
        for (int i = 0; i < (n); i++) tot_ += (get);                                                      \
        if (tot_ <= (radius)) return 0;                                                                   \
        double th_ = (tot_ - (radius)) / (n);                                                             \
        for (int it_ = 0; it_ <= (n); it_++) {                                                           \
            double sum_ = 0;                                                                              \
            int cnt_ = 0;                                                                                 \
            for (int i = 0; i < (n); i++) {                                                               \
                double x_ = (get);                                                                        \
                if (x_ > th_) sum_ += x_, cnt_++;                                                         \
            }                                                                                             \
            double nt_ = cnt_ ? (sum_ - (radius)) / cnt_ : th_;                                           \
            if (!(nt_ > th_)) break;                                                                      \
            th_ = nt_;                                                                                    \
        }                                                                                                 \
        return th_ > 0 ? th_ : 0;                                                                         \
    } while (0)

double piso_l1_ball_threshold(const double *v, int n, double radius) { L1_THRESHOLD(n, radius, v[i]); }

double piso_axe_theta(const float *w, const int *idx, int n, float s, double radius) {
    double m = 0;
    for (int i = 0; i < n; i++) m += (double)w[idx ? idx[i] : i] / s;
    m = n > 0 ? m / n : 0;
    L1_THRESHOLD(n, radius, fabs((double)w[idx ? idx[i] : i] / s - m));
}

int piso_axe_code(const struct piso_accum *a, const struct piso_grid *g, int64_t *p, int64_t *n, double theta,
                  float x) {
    if (theta > 0) x = x > 0 ? fmaxf(x - (float)theta, 0.0f) : -fmaxf(-x - (float)theta, 0.0f);
    int64_t q = (int64_t)lrintf(piso_grid_round(g, x, NULL)), lo, hi;
    piso_accum_code_limits(a, *p, *n, &lo, &hi);
    if (q > hi) q = hi;
    if (q < lo) q = lo;
    if (q > 0) *p += q;
    else *n += q;
    return (int)q;
}

double piso_accum_l1_radius(const struct piso_accum *a) {
    return (ldexp(1.0, a->bits) - 2.0) / (double)(a->in_max - a->in_min);
}

int piso_accum_validate(const struct piso_accum *a, int64_t D, int group, const struct piso_grid *g,
                        const char *layer, int *tile_out) {
    if (a->bits < 2 || a->bits > 62)
        return piso_errorf("--accumulator-bits %d: must lie in 2..62", a->bits);
    if (!(a->in_min <= 0 && a->in_max > 0))
        return piso_errorf("accumulator: integer input range [%lld, %lld] must contain 0 and a positive value",
                           (long long)a->in_min, (long long)a->in_max);
    if (!g->is_int || g->block)
        return piso_errorf("--accumulator-bits needs an integer weight format (int2..int8), not %s", g->name);
    const int grouped = group > 0 && group < D;
    int T = a->tile > 0 && a->tile < D ? a->tile : (grouped ? group : (int)D);
    if (a->tile > 0 && grouped && a->tile != group)
        return piso_errorf("--accumulator-tile %d: with --group %d the tile must be the group (layer %s)", a->tile,
                           group, layer);
    /* a shorter last tile only as the shorter last group of a grouped layer */
    if (D % T != 0 && !(grouped && T == group))
        return piso_errorf("--accumulator-tile %d does not divide the %lld inputs of layer %s", T, (long long)D,
                           layer);
    const int64_t single = piso_accum_worst(a, 1, 0) > piso_accum_worst(a, 0, -1) ? piso_accum_worst(a, 1, 0)
                                                                                 : piso_accum_worst(a, 0, -1);
    if (single > piso_accum_max(a))
        return piso_errorf("--accumulator-bits %d is too small for any non-zero weight of layer %s: one code of "
                           "+-1 times an input of [%lld, %lld] already exceeds %lld",
                           a->bits, layer, (long long)a->in_min, (long long)a->in_max, (long long)piso_accum_max(a));
    if (tile_out) *tile_out = T;
    return 0;
}

void piso_accum_check(const int16_t *codes, int64_t N, int64_t D, int tile, const struct piso_accum *a,
                      struct piso_accum_report *rep) {
    int64_t T = tile > 0 && tile < D ? tile : D;
    memset(rep, 0, sizeof *rep);
    rep->limit = piso_accum_max(a);
    rep->n_tiles = (D + T - 1) / T;
    rep->worst = -1;
    for (int64_t r = 0; r < N; r++)
        for (int64_t t = 0; t < rep->n_tiles; t++) {
            int64_t p = 0, n = 0;
            for (int64_t j = t * T; j < (t + 1) * T && j < D; j++) {
                int64_t q = codes[r * D + j];
                if (q > 0) p += q;
                else n += q;
            }
            int64_t worst = piso_accum_worst(a, p, n);
            if (worst > rep->limit) rep->violations++;
            if (worst > rep->worst) rep->worst = worst, rep->worst_row = r, rep->worst_tile = t;
            if (p - n > rep->max_l1) rep->max_l1 = p - n;
        }
    if (rep->worst < 0) rep->worst = 0;
}
