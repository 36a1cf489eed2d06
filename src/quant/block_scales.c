/* Exact optimal block scales for llama.cpp's block formats (issue: GGUF export).
 *
 * The core is the breakpoint sweep (shared/docs/llamacpp-formats.md §3.5): for a fixed d the best
 * integer levels are RTN(x/d), so as s = 1/d grows each L_i steps by ±1 at s = (k − ½)/|x_i|.
 * Sweeping the sorted events keeps S1 = Σ w x L and S2 = Σ w L²; each interval's best error is
 * Σ w x² − S1²/S2. Then the fp16 grid: inside an interval E(d) = E*(L) + S2·(d − S1/S2)², so the
 * best stored d of that interval is the fp16 value nearest S1/S2 clamped to the interval; intervals
 * are visited by increasing E*(L) until none can beat the best stored d found. */
#include "piso/block_scales.h"
#include "piso/ggml_quants.h"
#include "piso/gguf.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static inline int nearest_int(float f) { return (int)lrintf(f); }
static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }
static inline float h2f(uint16_t h) { return piso_fp16_to_fp32(h); }
static inline uint16_t f2h(float f) { return piso_fp32_to_fp16(f); }

struct interval {
    double Estar, S1, S2, s_a, s_b; /* levels constant for s in (s_a, s_b) */
    int sign;
};

/* Set by a sweep of this thread that ran out of memory: the block quantizers below ignore the
 * sweeps' return values, so piso_ggml_quantize_piso_ex reads this flag after each row. */
static _Thread_local int blk_oom;

static int cmp_interval(const void *a, const void *b) {
    double x = ((const struct interval *)a)->Estar, y = ((const struct interval *)b)->Estar;
    return x < y ? -1 : x > y ? 1 : 0;
}

/* Weighted error of levels RTN(x/d) for a given (float) d; fills L when given. */
static double rtn_error(const float *x, const float *w, int n, int lo, int hi, float d, int *L) {
    double e = 0;
    for (int i = 0; i < n; i++) {
        int l = d != 0.0f ? clampi(nearest_int(x[i] / d), lo, hi) : 0;
        if (L) L[i] = l;
        double r = (double)x[i] - (double)((float)l * d);
        e += (double)w[i] * r * r;
    }
    return e;
}

/* The importance weights of a block: w_in, or all ones when absent or all zero (a dead block
 * still gets a sensible scale). Sets *Sxx = Σ w x². buf holds n <= 256 floats. */
static const float *block_weights(const float *x, const float *w_in, int n, float *buf, double *Sxx) {
    const float *w = w_in;
    double wsum = 0;
    for (int i = 0; i < n && w; i++) wsum += w[i];
    if (!w || wsum <= 0) {
        for (int i = 0; i < n; i++) buf[i] = 1.0f;
        w = buf;
    }
    double sxx = 0;
    for (int i = 0; i < n; i++) sxx += (double)w[i] * x[i] * x[i];
    *Sxx = sxx;
    return w;
}

/* The sweep. want16: also search the fp16 grid. Outputs the real optimum d (d_real, E_real) and,
 * with want16, the best fp16 d (d16, E16). Returns -1 on allocation failure. */
/* Min-heap of the next event of each element, keyed by s: the events of one element come in order
 * (k − ½)/|x|, so a k-way merge replaces sorting all n·K events. */
struct hnode {
    double s;
    int i, k;
};
static void heap_down(struct hnode *h, int n, int j) {
    for (;;) {
        int c = 2 * j + 1;
        if (c >= n) return;
        if (c + 1 < n && (h[c + 1].s < h[c].s || (h[c + 1].s == h[c].s && h[c + 1].i < h[c].i))) c++;
        if (h[j].s < h[c].s || (h[j].s == h[c].s && h[j].i < h[c].i)) return;
        struct hnode t = h[j];
        h[j] = h[c], h[c] = t, j = c;
    }
}

/* Best fp16 d of interval I (the fp16 values nearest S1/S2 clamped into it), updating best. */
static void interval_fp16(const struct interval *I, const float *x, const float *w, int n, int lo, int hi,
                          double *best, uint16_t *best_h) {
    const double dL = I->S1 / I->S2, d_lo = 1.0 / I->s_b, d_hi = 1.0 / I->s_a;
    const double t = dL < d_lo ? d_lo : dL > d_hi ? d_hi : dL;
    const int h = f2h((float)t);
    for (int hh = h - 1; hh <= h + 1; hh++) {
        if (hh < 1 || hh > 0x7bff) continue;
        const uint16_t bits = (uint16_t)(hh | (I->sign < 0 ? 0x8000 : 0));
        const double e = rtn_error(x, w, n, lo, hi, h2f(bits), NULL);
        if (e < *best) *best = e, *best_h = bits;
    }
}

/* The sweep. want16: also search the fp16 grid. Outputs the real optimum d (d_real, E_real) and,
 * with want16, the best fp16 d (d16, E16). Returns -1 on allocation failure. */
static int sweep(const float *x, const float *w_in, int n, int lo, int hi, int allow_neg, int want16,
                 double *d_real, double *E_real, uint16_t *d16, double *E16) {
    float wbuf[256];
    double Sxx;
    const float *w = block_weights(x, w_in, n, wbuf, &Sxx);
    const int per = hi > -lo ? hi : -lo;
    struct interval *iv = malloc(sizeof *iv * ((size_t)n * (size_t)per * 2 + 2));
    if (!iv) {
        blk_oom = 1;
        return piso_errorf("block sweep: out of memory");
    }
    int n_iv = 0, best_iv = -1;
    *d_real = 0, *E_real = Sxx;
    for (int sign = 1; sign >= -1; sign -= 2) {
        if (sign < 0 && !allow_neg) break;
        struct hnode heap[256];
        int nh = 0, kmax[256];
        for (int i = 0; i < n; i++) {
            const double xs = sign * (double)x[i];
            kmax[i] = (xs == 0 || w[i] == 0) ? 0 : xs > 0 ? hi : -lo;
            if (kmax[i]) heap[nh++] = (struct hnode){0.5 / fabs(xs), i, 1};
        }
        for (int j = nh / 2 - 1; j >= 0; j--) heap_down(heap, nh, j);
        double S1 = 0, S2 = 0;
        int Lc[256] = {0};
        while (nh > 0) {
            const double s = heap[0].s;
            while (nh > 0 && heap[0].s == s) {
                const int i = heap[0].i, dl = sign * x[i] > 0 ? 1 : -1;
                S1 += (double)w[i] * sign * x[i] * dl;
                S2 += (double)w[i] * (2.0 * Lc[i] * dl + 1.0);
                Lc[i] += dl;
                if (heap[0].k < kmax[i]) {
                    heap[0].k++;
                    heap[0].s = (heap[0].k - 0.5) / fabs((double)x[i]);
                } else {
                    heap[0] = heap[--nh];
                }
                heap_down(heap, nh, 0);
            }
            if (S2 <= 0 || S1 <= 0) continue;
            const double Estar = Sxx - S1 * S1 / S2;
            iv[n_iv] = (struct interval){Estar, S1, S2, s, nh > 0 ? heap[0].s : INFINITY, sign};
            if (Estar < *E_real) *E_real = Estar, *d_real = sign * S1 / S2, best_iv = n_iv;
            n_iv++;
        }
    }
    if (*E_real < 0) *E_real = 0;
    if (want16) {
        uint16_t best_h = 0;
        double best = Sxx; /* d = 0 */
        /* a first bound from the best real interval, then only intervals that could beat it */
        if (best_iv >= 0) interval_fp16(&iv[best_iv], x, w, n, lo, hi, &best, &best_h);
        int m = 0;
        for (int k = 0; k < n_iv; k++)
            if (iv[k].Estar < best * (1 - 1e-12)) iv[m++] = iv[k];
        qsort(iv, (size_t)m, sizeof *iv, cmp_interval);
        for (int k = 0; k < m && iv[k].Estar < best * (1 - 1e-12); k++) interval_fp16(&iv[k], x, w, n, lo, hi, &best, &best_h);
        *d16 = best_h;
        *E16 = best;
    }
    free(iv);
    return 0;
}

int piso_block_sweep(const float *x, const float *w, int n, int lo, int hi, int allow_negative,
                     uint16_t *d16, int *L, double *E16, double *E_real) {
    if (n < 1 || n > 256 || lo > 0 || hi <= 0) return piso_errorf("block sweep: bad size %d or levels [%d, %d]", n, lo, hi);
    double dr, Er, E;
    uint16_t h;
    if (sweep(x, w, n, lo, hi, allow_negative, 1, &dr, &Er, &h, &E)) return -1;
    if (d16) *d16 = h;
    if (E16) *E16 = E;
    if (E_real) *E_real = Er;
    if (L) {
        float ones[256];
        double ws = 0;
        for (int i = 0; i < n && w; i++) ws += w[i];
        if (!w || ws <= 0) {
            for (int i = 0; i < n; i++) ones[i] = 1;
            w = ones;
        }
        rtn_error(x, w, n, lo, hi, h2f(h), L);
    }
    return 0;
}

/* ---- non-uniform levels (IQ4_NL) ---------------------------------------------------------- */

/* Nearest table index to v (ties to the upper), for a sorted table t[nv]. */
static int table_index(const int8_t *t, int nv, double v) {
    if (v <= t[0]) return 0;
    if (v >= t[nv - 1]) return nv - 1;
    int lo = 0, hi = nv - 1;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (v < t[mid]) hi = mid;
        else lo = mid;
    }
    return v - t[hi - 1] < t[hi] - v ? hi - 1 : hi;
}

static double table_error(const float *x, const float *w, int n, const int8_t *t, int nv, float d, int *L) {
    double e = 0;
    for (int i = 0; i < n; i++) {
        int l = d != 0.0f ? table_index(t, nv, (double)x[i] / d) : table_index(t, nv, 0);
        double r = (double)x[i] - (double)(d * (float)t[l]);
        /* near a midpoint, the fp32 products decide: keep the neighbour with the smaller residual */
        for (int k = l - 1; k <= l + 1; k += 2) {
            if (k < 0 || k >= nv) continue;
            const double rk = (double)x[i] - (double)(d * (float)t[k]);
            if (fabs(rk) < fabs(r)) r = rk, l = k;
        }
        if (L) L[i] = l;
        e += (double)w[i] * r * r;
    }
    return e;
}

/* The same sweep for a sorted level table: as s = 1/d grows, element i walks from the level nearest
 * 0 towards the end of its sign, crossing the midpoints μ_k at s = μ_k / x_i. */
int piso_block_sweep_table(const float *x, const float *w_in, int n, const int8_t *t, int nv, int allow_neg,
                           uint16_t *d16, int *L, double *E16, double *E_real) {
    if (n < 1 || n > 256 || nv < 2 || nv > 64) return piso_errorf("block sweep: bad size %d or table of %d", n, nv);
    float wbuf[256];
    double Sxx;
    const float *w = block_weights(x, w_in, n, wbuf, &Sxx);
    const int i0 = table_index(t, nv, 0.0);
    struct interval *iv = malloc(sizeof *iv * ((size_t)n * (size_t)nv * 2 + 4));
    if (!iv) {
        blk_oom = 1;
        return piso_errorf("block sweep: out of memory");
    }
    int n_iv = 0, best_iv = -1;
    double Er = Sxx;
    for (int sign = 1; sign >= -1; sign -= 2) {
        if (sign < 0 && !allow_neg) break;
        struct hnode heap[256];
        int nh = 0, cur[256];
        double S1 = 0, S2 = 0;
        for (int i = 0; i < n; i++) {
            const double xs = sign * (double)x[i];
            cur[i] = i0;
            S1 += (double)w[i] * xs * t[i0];
            S2 += (double)w[i] * t[i0] * t[i0];
            if (w[i] == 0 || xs == 0) continue;
            /* next midpoint in the walking direction */
            if (xs > 0 && i0 < nv - 1) heap[nh++] = (struct hnode){0.5 * (t[i0] + t[i0 + 1]) / xs, i, i0 + 1};
            if (xs < 0 && i0 > 0) heap[nh++] = (struct hnode){0.5 * (t[i0 - 1] + t[i0]) / xs, i, i0 - 1};
        }
        for (int j = nh / 2 - 1; j >= 0; j--) heap_down(heap, nh, j);
        double s_prev = 0;
        for (;;) {
            if (S2 > 0 && S1 > 0) {
                const double Estar = Sxx - S1 * S1 / S2;
                iv[n_iv] = (struct interval){Estar, S1, S2, s_prev, nh > 0 ? heap[0].s : INFINITY, sign};
                if (Estar < Er) Er = Estar, best_iv = n_iv;
                n_iv++;
            }
            if (nh == 0) break;
            const double s = heap[0].s;
            while (nh > 0 && heap[0].s == s) {
                const int i = heap[0].i, to = heap[0].k, from = cur[i];
                const double xs = sign * (double)x[i];
                S1 += (double)w[i] * xs * (t[to] - t[from]);
                S2 += (double)w[i] * ((double)t[to] * t[to] - (double)t[from] * t[from]);
                cur[i] = to;
                if (xs > 0 && to < nv - 1) heap[0] = (struct hnode){0.5 * (t[to] + t[to + 1]) / xs, i, to + 1};
                else if (xs < 0 && to > 0) heap[0] = (struct hnode){0.5 * (t[to - 1] + t[to]) / xs, i, to - 1};
                else heap[0] = heap[--nh];
                heap_down(heap, nh, 0);
            }
            s_prev = s;
        }
    }
    if (E_real) *E_real = Er < 0 ? 0 : Er;
    /* fp16 stage: as for the integer levels, with the table's RTN */
    uint16_t best_h = 0;
    double best = table_error(x, w, n, t, nv, 0.0f, NULL);
    int m = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            m = 0;
            for (int k = 0; k < n_iv; k++)
                if (iv[k].Estar < best * (1 - 1e-12)) iv[m++] = iv[k];
            qsort(iv, (size_t)m, sizeof *iv, cmp_interval);
        }
        for (int k = pass ? 0 : best_iv; pass ? k < m : (k >= 0 && k == best_iv); k++) {
            const struct interval *I = &iv[k];
            if (pass && I->Estar >= best * (1 - 1e-12)) break;
            const double dL = I->S1 / I->S2, d_lo = 1.0 / I->s_b, d_hi = I->s_a > 0 ? 1.0 / I->s_a : INFINITY;
            const double tt = dL < d_lo ? d_lo : dL > d_hi ? d_hi : dL;
            const int h = f2h((float)tt);
            for (int hh = h - 1; hh <= h + 1; hh++) {
                if (hh < 1 || hh > 0x7bff) continue;
                const uint16_t bits = (uint16_t)(hh | (I->sign < 0 ? 0x8000 : 0));
                const double e = table_error(x, w, n, t, nv, h2f(bits), NULL);
                if (e < best) best = e, best_h = bits;
            }
            if (!pass) break;
        }
    }
    free(iv);
    if (d16) *d16 = best_h;
    if (E16) *E16 = best;
    if (L) table_error(x, w, n, t, nv, h2f(best_h), L);
    return 0;
}

/* ---- block error ----------------------------------------------------------------------------- */

double piso_block_error(int type, const void *blk, const float *x, const float *w) {
    float y[256];
    const int n = piso_ggml_block_elems(type);
    piso_ggml_dequantize_row(type, blk, y, n);
    double e = 0;
    for (int i = 0; i < n; i++) {
        double r = (double)x[i] - y[i];
        e += (w ? (double)w[i] : 1.0) * r * r;
    }
    return e;
}

/* ---- affine blocks: x ≈ a·L + m, L ∈ [0, nmax] ------------------------------------------------ */

/* Error of the affine block with RTN levels for (a, m) as ggml dequantizes (q*a + m). */
static double affine_error(const float *x, const float *w, int n, int nmax, float a, float m, uint8_t *L) {
    double e = 0;
    for (int i = 0; i < n; i++) {
        int l = a != 0.0f ? clampi(nearest_int((x[i] - m) / a), 0, nmax) : 0;
        if (L) L[i] = (uint8_t)l;
        double r = (double)x[i] - (double)((float)l * a + m);
        e += (double)w[i] * r * r;
    }
    return e;
}

/* Alternates the exact sweep for a given m with the least-squares refit of (a, m) for the levels
 * found; the error never increases. fp16: a and m are kept on the fp16 grid. m_nonpos: m ≤ 0
 * (K-quants store −dmin·mn). Starts from m = min(x) and from m0 (if finite). */
static double affine_fit(const float *x, const float *w, int n, int nmax, int fp16, int m_nonpos, float m0,
                         float *a_out, float *m_out) {
    float mn = x[0];
    for (int i = 1; i < n; i++) mn = fminf(mn, x[i]);
    float starts[2] = {m_nonpos ? fminf(mn, 0) : mn, m0};
    double best = DBL_MAX;
    float best_a = 0, best_m = starts[0];
    for (int st = 0; st < 2; st++) {
        float m = starts[st];
        if (!isfinite(m) || (st == 1 && m == starts[0])) continue;
        if (fp16) m = h2f(f2h(m));
        for (int it = 0; it < 4; it++) {
            float y[256];
            for (int i = 0; i < n; i++) y[i] = x[i] - m;
            double dr, Er, E16;
            uint16_t h;
            if (sweep(y, w, n, 0, nmax, 0, fp16, &dr, &Er, &h, &E16)) return DBL_MAX;
            float a = fp16 ? h2f(h) : (float)dr;
            uint8_t L[256];
            double e = affine_error(x, w, n, nmax, a, m, L);
            if (e < best) best = e, best_a = a, best_m = m;
            /* refit (a, m) for these levels: weighted 2x2 least squares */
            double sw = 0, sl = 0, sl2 = 0, sx = 0, slx = 0;
            for (int i = 0; i < n; i++) {
                sw += w[i], sl += w[i] * L[i], sl2 += (double)w[i] * L[i] * L[i];
                sx += (double)w[i] * x[i], slx += (double)w[i] * L[i] * x[i];
            }
            const double D = sw * sl2 - sl * sl;
            if (!(D > 0)) break;
            double a2 = (sw * slx - sx * sl) / D, m2 = (sl2 * sx - sl * slx) / D;
            if (m_nonpos && m2 > 0) m2 = 0, a2 = sl2 > 0 ? slx / sl2 : a2;
            float mf = fp16 ? h2f(f2h((float)m2)) : (float)m2;
            float af = fp16 ? h2f(f2h((float)a2)) : (float)a2;
            e = affine_error(x, w, n, nmax, af, mf, NULL);
            if (e < best) best = e, best_a = af, best_m = mf;
            if (mf == m) break;
            m = mf;
        }
    }
    *a_out = best_a;
    *m_out = best_m;
    return best;
}

/* ---- per-format block quantizers ------------------------------------------------------------- */

static void piso_blk32(int type, const float *x, const float *w, struct piso_blk32 *b) {
    const struct piso_ggml_traits *tr = piso_ggml_traits(type);
    memset(b, 0, sizeof *b);
    if (tr->level_values) {
        int L[32];
        piso_block_sweep_table(x, w, 32, tr->level_values, tr->level_max + 1, 1, &b->d, L, NULL, NULL);
        for (int i = 0; i < 32; i++) b->q[i] = (int16_t)L[i];
        return;
    }
    if (tr->has_min) {
        const int nmax = tr->level_max;
        float a, m;
        affine_fit(x, w, 32, nmax, 1, 0, NAN, &a, &m);
        uint8_t L[32];
        affine_error(x, w, 32, nmax, a, m, L);
        b->d = f2h(a), b->m = f2h(m);
        for (int i = 0; i < 32; i++) b->q[i] = L[i];
        return;
    }
    const int lo = tr->level_min, hi = tr->level_max, zero = tr->code_zero;
    int L[32];
    /* Q8_0's levels are symmetric: the negative scales give the same errors */
    piso_block_sweep(x, w, 32, lo, hi, lo != -hi, &b->d, L, NULL, NULL);
    for (int i = 0; i < 32; i++) b->q[i] = (int16_t)(L[i] + zero);
}

/* Sub-block error for fixed integer scale/min and the fp16 super scales (Q2_K, Q4_K, Q5_K). */
static double kmin_sub_error(const float *x, const float *w, int n, int nmax, float d, float dmin, int sc, int mn) {
    const float dd = d * (float)sc, dm = dmin * (float)mn;
    double e = 0;
    for (int l = 0; l < n; l++) {
        int q = dd != 0.0f ? clampi(nearest_int((x[l] + dm) / dd), 0, nmax) : 0;
        double r = (double)x[l] - (double)(dd * (float)q - dm);
        e += (double)w[l] * r * r;
    }
    return e;
}

/* K-quants with a min (Q4_K/Q5_K: 8 sub-blocks of 32, 6-bit scales and mins; Q2_K: 16 of 16, 4-bit):
 * each sub-block's real (scale, min) from the alternating exact sweep; the fp16 super-scales from
 * the exact sweep over the sub-block scales (weighted by each sub-block's Σ w L², resp. Σ w); then
 * ±1 ulp of both super-scales with every sub-block's integer (scale, min) searched ±2 around their
 * rounding, with full re-rounding of the elements. */
static void piso_blk_kmin(int type, const float *x, const float *w, struct piso_blk256 *b, const struct piso_blk256 *seed) {
    const struct piso_ggml_traits *tr = piso_ggml_traits(type);
    const int nmax = tr->level_max, sub = tr->sub_size, nsub = 256 / sub, smax = sub == 16 ? 15 : 63;
    float scale[16], mins[16], v[16], u[16];
    for (int j = 0; j < nsub; j++) {
        float a, m;
        affine_fit(x + sub * j, w + sub * j, sub, nmax, 0, 1, NAN, &a, &m);
        uint8_t L[32];
        affine_error(x + sub * j, w + sub * j, sub, nmax, a, m, L);
        scale[j] = a, mins[j] = -m;
        v[j] = u[j] = 0;
        for (int l = 0; l < sub; l++) v[j] += w[sub * j + l] * L[l] * L[l], u[j] += w[sub * j + l];
    }
    int Ls[16], Lm[16];
    uint16_t d16, m16;
    piso_block_sweep(scale, v, nsub, 0, smax, 0, &d16, Ls, NULL, NULL);
    piso_block_sweep(mins, u, nsub, 0, smax, 0, &m16, Lm, NULL, NULL);
    double best = DBL_MAX;
    memset(b, 0, sizeof *b);
    uint8_t *bsc = sub == 16 ? b->sc16 : b->sc, *bmn = sub == 16 ? b->mn16 : b->mn;
    /* centres: the swept super-scales, and (Q2_K) those of llama.cpp's block for the same input */
    const int ncent = seed ? 2 : 1;
    for (int ce = 0; ce < ncent; ce++)
    for (int dd = -1; dd <= 1; dd++)
        for (int dm = -1; dm <= 1; dm++) {
            const int hd = (ce ? (seed->d & 0x7fff) : d16) + dd, hm = (ce ? (seed->dmin & 0x7fff) : m16) + dm;
            if (hd < 0 || hd > 0x7bff || hm < 0 || hm > 0x7bff) continue;
            const float d = h2f((uint16_t)hd), dmin = h2f((uint16_t)hm);
            double tot = 0;
            uint8_t sc[16], mn[16];
            for (int j = 0; j < nsub && tot < best; j++) {
                /* around the rounding of the sub-block's own optimum, or around the seed's choice */
                const int s0 = ce ? seed->sc16[j] : d > 0 ? clampi(nearest_int(scale[j] / d), 0, smax) : 0;
                const int m0 = ce ? seed->mn16[j] : dmin > 0 ? clampi(nearest_int(mins[j] / dmin), 0, smax) : 0;
                double bj = DBL_MAX;
                for (int s = clampi(s0 - 2, 0, smax); s <= clampi(s0 + 2, 0, smax); s++)
                    for (int m = clampi(m0 - 2, 0, smax); m <= clampi(m0 + 2, 0, smax); m++) {
                        double e = kmin_sub_error(x + sub * j, w + sub * j, sub, nmax, d, dmin, s, m);
                        if (e < bj) bj = e, sc[j] = (uint8_t)s, mn[j] = (uint8_t)m;
                    }
                tot += bj;
            }
            if (tot < best) {
                best = tot;
                b->d = (uint16_t)hd, b->dmin = (uint16_t)hm;
                memcpy(bsc, sc, (size_t)nsub), memcpy(bmn, mn, (size_t)nsub);
            }
        }
    const float d = h2f(b->d), dmin = h2f(b->dmin);
    for (int j = 0; j < nsub; j++) {
        const float D = d * (float)bsc[j], M = dmin * (float)bmn[j];
        for (int l = 0; l < sub; l++)
            b->q[sub * j + l] = (uint8_t)(D != 0.0f ? clampi(nearest_int((x[sub * j + l] + M) / D), 0, nmax) : 0);
    }
}

/* Symmetric K-quants (Q6_K: levels -32..31, 8-bit sub-scales; Q3_K: levels -4..3, 6-bit sub-scales
 * -32..31), 16 sub-blocks of 16: each sub-block's real optimum scale by the exact sweep (both signs),
 * the fp16 super-scale by the exact sweep over those scales (weighted by Σ w L²), then ±1 ulp of it
 * with each integer sub-scale searched ±2 around its rounding, with full re-rounding. */
static void piso_blk_ksym(int type, const float *x, const float *w, struct piso_blk256 *b, const struct piso_blk256 *seed) {
    const struct piso_ggml_traits *tr = piso_ggml_traits(type);
    const int lo = tr->level_min, hi = tr->level_max, zero = tr->code_zero;
    const int slo = type == GGML_T_Q3_K ? -32 : -128, shi = type == GGML_T_Q3_K ? 31 : 127;
    float scale[16], v[16];
    for (int j = 0; j < 16; j++) {
        double dr, Er, E16;
        uint16_t h;
        sweep(x + 16 * j, w + 16 * j, 16, lo, hi, 1, 0, &dr, &Er, &h, &E16);
        scale[j] = (float)dr;
        int L[16];
        rtn_error(x + 16 * j, w + 16 * j, 16, lo, hi, scale[j], L);
        v[j] = 0;
        for (int l = 0; l < 16; l++) v[j] += w[16 * j + l] * (float)(L[l] * L[l]);
    }
    uint16_t d16;
    int Ls[16];
    piso_block_sweep(scale, v, 16, slo, shi, 1, &d16, Ls, NULL, NULL);
    double best = DBL_MAX;
    memset(b, 0, sizeof *b);
    /* centres: the swept super-scale, and (Q3_K) that of llama.cpp's block for the same input */
    for (int ce = 0; ce < (seed ? 2 : 1); ce++)
    for (int dd = -1; dd <= 1; dd++) {
        const uint16_t c16 = ce ? seed->d : d16;
        const int mag = (c16 & 0x7fff) + dd;
        if (mag < 0 || mag > 0x7bff) continue;
        const uint16_t hd = (uint16_t)((c16 & 0x8000) | mag);
        const float d = h2f(hd);
        double tot = 0;
        int8_t sc[16];
        for (int j = 0; j < 16; j++) {
            const int s0 = ce ? seed->sc6[j] : d != 0.0f ? clampi(nearest_int(scale[j] / d), slo, shi) : 0;
            double bj = DBL_MAX;
            for (int s = clampi(s0 - 2, slo, shi); s <= clampi(s0 + 2, slo, shi); s++) {
                double e = rtn_error(x + 16 * j, w + 16 * j, 16, lo, hi, d * (float)s, NULL);
                if (e < bj) bj = e, sc[j] = (int8_t)s;
            }
            tot += bj;
        }
        if (tot < best) best = tot, b->d = hd, memcpy(b->sc6, sc, 16);
    }
    const float d = h2f(b->d);
    for (int j = 0; j < 16; j++) {
        int L[16];
        rtn_error(x + 16 * j, w + 16 * j, 16, lo, hi, d * (float)b->sc6[j], L);
        for (int l = 0; l < 16; l++) b->q[16 * j + l] = (uint8_t)(L[l] + zero);
    }
}

/* ---- FP4 blocks: E2M1 elements with a power-of-two (MXFP4) or UE4M3 (NVFP4) scale ---------- */

/* Nearest E2M1 index of v = x/d among the doubled magnitudes 0,1,2,3,4,6,8,12 (midpoints 0.5, 1.5,
 * 2.5, 3.5, 5, 7, 10), sign in bit 3; -0 is stored as index 0. */
static int e2m1_index(float v) {
    static const float mid[7] = {0.5f, 1.5f, 2.5f, 3.5f, 5.0f, 7.0f, 10.0f};
    const float a = fabsf(v);
    int k = 0;
    while (k < 7 && a > mid[k]) k++;
    return k && v < 0 ? k | 8 : k;
}

/* Weighted error of a block of n elements for scale d (levels kvalue·d, exact in fp32 for the
 * 3-bit-mantissa scales of both formats); codes into q when given. */
static double fp4_error(const float *x, const float *w, int n, float d, uint8_t *q) {
    double e = 0;
    for (int i = 0; i < n; i++) {
        const int k = d > 0.0f ? e2m1_index(x[i] / d) : 0;
        const double r = (double)x[i] - (double)((float)piso_mxfp4_values[k] * d);
        if (q) q[i] = (uint8_t)k;
        e += (double)w[i] * r * r;
    }
    return e;
}

/* The range of scales that can matter for a block: d with 0.5·d ≥ max|x| give all zeros (one
 * of them suffices: the smallest), d with 12·d ≤ min|x| (over x ≠ 0) saturate every element and the
 * error falls as d grows (the largest suffices); every representable d in between is evaluated. */
static void fp4_bounds(const float *x, const float *w, int n, float *amax, float *amin) {
    float mx = 0, mn = INFINITY;
    for (int i = 0; i < n; i++) {
        if (w[i] <= 0) continue;
        const float a = fabsf(x[i]);
        if (a > mx) mx = a;
        if (a > 0 && a < mn) mn = a;
    }
    *amax = mx, *amin = mn;
}

int piso_mxfp4_best_exponent(const float *x, const float *w, int n, uint8_t *e_out, double *E_out) {
    float amax, amin;
    fp4_bounds(x, w, n, &amax, &amin);
    int e_lo = 0, e_hi = 254;
    while (e_hi > 0 && 0.5f * piso_e8m0_half((uint8_t)(e_hi - 1)) >= amax) e_hi--;
    while (e_lo < e_hi && 12.0f * piso_e8m0_half((uint8_t)(e_lo + 1)) <= amin) e_lo++;
    double best = DBL_MAX;
    int be = e_hi;
    for (int e = e_hi; e >= e_lo; e--) {
        const double err = fp4_error(x, w, n, piso_e8m0_half((uint8_t)e), NULL);
        if (err < best) best = err, be = e;
    }
    *e_out = (uint8_t)be;
    if (E_out) *E_out = best;
    return e_hi - e_lo + 1;
}

int piso_nvfp4_best_code(const float *x, const float *w, int n, float tscale, uint8_t *c_out, double *E_out) {
    float amax, amin;
    fp4_bounds(x, w, n, &amax, &amin);
    int c_lo = 0, c_hi = 0x7E;
    while (c_hi > 1 && 0.5f * piso_ue4m3_to_fp32((uint8_t)(c_hi - 1)) * tscale >= amax) c_hi--;
    while (c_lo < c_hi && 12.0f * piso_ue4m3_to_fp32((uint8_t)(c_lo + 1)) * tscale <= amin) c_lo++;
    double best = fp4_error(x, w, n, 0.0f, NULL); /* code 0: all zeros */
    int bc = 0;
    for (int c = c_lo; c <= c_hi; c++) {
        const double err = fp4_error(x, w, n, piso_ue4m3_to_fp32((uint8_t)c) * tscale, NULL);
        if (err < best) best = err, bc = c;
    }
    *c_out = (uint8_t)bc;
    if (E_out) *E_out = best;
    return c_hi - c_lo + 1;
}

static void piso_blk_mxfp4(const float *x, const float *w, struct piso_blk32 *b) {
    uint8_t e, q[32];
    piso_mxfp4_best_exponent(x, w, 32, &e, NULL);
    fp4_error(x, w, 32, piso_e8m0_half(e), q);
    b->d = e, b->m = 0;
    for (int i = 0; i < 32; i++) b->q[i] = q[i];
}

static double piso_blk_nvfp4(const float *x, const float *w, float tscale, struct piso_blk64 *b) {
    double tot = 0;
    for (int s = 0; s < 4; s++) {
        double E;
        piso_nvfp4_best_code(x + 16 * s, w + 16 * s, 16, tscale, &b->d[s], &E);
        fp4_error(x + 16 * s, w + 16 * s, 16, piso_ue4m3_to_fp32(b->d[s]) * tscale, b->q + 16 * s);
        tot += E;
    }
    return tot;
}

size_t piso_ggml_quantize_piso(int type, const float *x, void *dst, int64_t nrows, int64_t n_per_row,
                               const float *weights) {
    return piso_ggml_quantize_piso_ex(type, x, dst, nrows, n_per_row, weights, 0);
}

size_t piso_ggml_quantize_piso_ex(int type, const float *x, void *dst, int64_t nrows, int64_t n_per_row,
                                  const float *weights, int blend) {
    const int be = piso_ggml_block_elems(type), bb = piso_ggml_block_bytes(type);
    const int64_t nb = n_per_row / be;
    float *ones = NULL;
    if (!weights) {
        ones = malloc(sizeof(float) * (size_t)n_per_row);
        if (!ones) {
            piso_errorf("block quantizer: out of memory for a row of %lld", (long long)n_per_row);
            return 0;
        }
        for (int64_t i = 0; i < n_per_row; i++) ones[i] = 1.0f;
    }
    const float *wt = weights ? weights : ones;
    int failed = 0; /* a block sweep ran out of memory (blk_oom of its thread) */
#pragma omp parallel for schedule(dynamic, 1) reduction(| : failed)
    for (int64_t r = 0; r < nrows; r++) {
        if (failed) continue;
        blk_oom = 0;
        const float *xr = x + r * n_per_row;
        uint8_t *out = (uint8_t *)dst + r * nb * bb;
        uint8_t ref[256]; /* one block of llama.cpp's rule with the same importance */
        float wblk[256];
        for (int64_t ib = 0; ib < nb; ib++) {
            const float *xb = xr + ib * be, *wb = wt + ib * be;
            double ws = 0;
            for (int i = 0; i < be; i++) ws += wb[i];
            for (int i = 0; i < be; i++) wblk[i] = ws > 0 ? wb[i] : 1.0f; /* dead inputs: plain SSE */
            if (blend && weights && piso_ggml_traits(type)->imatrix_rule != PISO_IMAT_H) {
                /* llama.cpp's empirical weights h·sqrt(σ² + x²): σ² the row's mean square (32-blocks)
                 * or twice the super-block's (K-quants) */
                const enum piso_ggml_imatrix_rule rule = piso_ggml_traits(type)->imatrix_rule;
                double s2 = 0;
                const float *xs = be == PISO_QK ? xr : xb;
                const int64_t ns = be == PISO_QK ? n_per_row : be;
                for (int64_t i = 0; i < ns; i++) s2 += (double)xs[i] * xs[i];
                const float sigma2 = (float)(s2 / (double)ns) * (be == PISO_QK || rule == PISO_IMAT_SUPER_SIGMA1 ? 1.0f : 2.0f);
                for (int i = 0; i < be; i++) wblk[i] *= sqrtf(sigma2 + xb[i] * xb[i]);
            }
            if (type == GGML_T_NVFP4) {
                struct piso_blk64 b;
                piso_blk_nvfp4(xb, wblk, 1.0f, &b);
                piso_pack_blk64(&b, out + ib * bb);
            } else if (type == GGML_T_MXFP4) {
                struct piso_blk32 b;
                piso_blk_mxfp4(xb, wblk, &b);
                piso_pack_blk32(type, &b, out + ib * bb);
            } else if (be == PISO_QK) {
                struct piso_blk32 b;
                piso_blk32(type, xb, wblk, &b);
                piso_pack_blk32(type, &b, out + ib * bb);
            } else {
                /* Q2_K, Q3_K: llama.cpp's block also seeds the super-scale search */
                struct piso_blk256 b, seed;
                const int seeded = type == GGML_T_Q2_K || type == GGML_T_Q3_K;
                if (seeded) {
                    piso_ggml_quantize_ref(type, xb, ref, 1, be, weights ? wb : NULL);
                    piso_unpack_blk256(type, ref, &seed);
                }
                if (!piso_ggml_traits(type)->has_min) piso_blk_ksym(type, xb, wblk, &b, seeded ? &seed : NULL);
                else piso_blk_kmin(type, xb, wblk, &b, seeded ? &seed : NULL);
                piso_pack_blk256(type, &b, out + ib * bb);
            }
            /* keep llama.cpp's block where it is better on this objective (rare; K-quants) */
            piso_ggml_quantize_ref(type, xb, ref, 1, be, weights ? wb : NULL);
            if (piso_block_error(type, ref, xb, wblk) < piso_block_error(type, out + ib * bb, xb, wblk))
                memcpy(out + ib * bb, ref, (size_t)bb);
        }
        if (blk_oom) failed = 1;
    }
    free(ones);
    if (failed) {
        piso_errorf("block quantizer: out of memory for the scale sweeps");
        return 0;
    }
    return (size_t)(nrows * nb * bb);
}

/* ---- dense calibration: GPTQ interleave ------------------------------------------------------ */

#include "piso/linalg.h"
#include "piso/quant.h"
#include "quant/ec_engine.h"

/* Rounds element idx of a block against its fixed scales; returns the dequantized value and
 * stores the code in the block. */
static float round_elem32(int type, struct piso_blk32 *b, int idx, float w) {
    const struct piso_ggml_traits *tr = piso_ggml_traits(type);
    if (tr->scale_kind == PISO_SCALE_E8M0) { /* MXFP4 */
        const float d = piso_e8m0_half((uint8_t)b->d);
        const int k = e2m1_index(w / d);
        b->q[idx] = (int16_t)k;
        return (float)piso_mxfp4_values[k] * d;
    }
    const float d = h2f(b->d);
    if (tr->has_min) {
        const int nmax = tr->level_max;
        const float m = h2f(b->m);
        const int q = d != 0.0f ? clampi(nearest_int((w - m) / d), 0, nmax) : 0;
        b->q[idx] = (int16_t)q;
        return (float)q * d + m;
    }
    if (tr->level_values) {
        const int q = table_index(tr->level_values, tr->level_max + 1, d != 0.0f ? (double)w / d : 0.0);
        b->q[idx] = (int16_t)q;
        return d * (float)tr->level_values[q];
    }
    const int lo = tr->level_min, hi = tr->level_max, zero = tr->code_zero;
    const int l = d != 0.0f ? clampi(nearest_int(w / d), lo, hi) : 0;
    b->q[idx] = (int16_t)(l + zero);
    return (float)l * d;
}

static float round_elem256(int type, struct piso_blk256 *b, int idx, float w) {
    const struct piso_ggml_traits *tr = piso_ggml_traits(type);
    const float d = h2f(b->d);
    if (!tr->has_min) { /* Q6_K, Q3_K */
        const float D = d * (float)b->sc6[idx / 16];
        const int l = D != 0.0f ? clampi(nearest_int(w / D), tr->level_min, tr->level_max) : 0;
        b->q[idx] = (uint8_t)(l + tr->code_zero);
        return D * (float)l;
    }
    const int nmax = tr->level_max, j = idx / tr->sub_size;
    const float D = d * (float)(tr->sub_size == 16 ? b->sc16[j] : b->sc[j]);
    const float M = h2f(b->dmin) * (float)(tr->sub_size == 16 ? b->mn16[j] : b->mn[j]);
    const int q = D != 0.0f ? clampi(nearest_int((w + M) / D), 0, nmax) : 0;
    b->q[idx] = (uint8_t)q;
    return D * (float)q - M;
}

/* The GGUF block rounder of the engine (ec_engine.h): one decoded block per (row, block); a
 * block's scales are chosen when the sweep reaches its first column, on the error-updated weights. */
struct gguf_rounder {
    int type, be, sym;
    int64_t nb;               /* blocks per row */
    struct piso_grid grid;    /* sym: the block's integer levels */
    const float *H;           /* [D, D] */
    float *hdiag;             /* [D] max(H_ii, 0): the importances of the block scale choice */
    struct piso_blk32 *b32;   /* [N, nb] when be = 32 */
    struct piso_blk256 *b256; /* [N, nb] when be = 256 */
};

static int gguf_begin_group(void *ctx, struct piso_ec_work *w, int k) {
    const struct gguf_rounder *g = ctx;
    const int64_t D = w->D, j0 = w->grp_start[k], ib = w->grp_id[k]; /* no act order: position = column */
    int failed = 0; /* the exact solver ran out of memory */
#pragma omp parallel for schedule(dynamic, 1) reduction(| : failed)
    for (int64_t r = 0; r < w->N; r++) {
        const float *wb = w->Wc + r * D + j0;
        uint8_t packed[256];
        if (!piso_ggml_quantize_piso(g->type, wb, packed, 1, g->be, g->hdiag + j0)) {
            failed = 1; /* out of memory */
            continue;
        }
        if (g->be != PISO_QK) {
            piso_unpack_blk256(g->type, packed, &g->b256[r * g->nb + ib]);
            continue;
        }
        struct piso_blk32 *b = &g->b32[r * g->nb + ib];
        piso_unpack_blk32(g->type, packed, b);
        if (g->sym) { /* the exact scale for the dense block H_gg */
            double E;
            float s = piso_solve_scale_dense(wb, g->be, g->H + j0 * D + j0, (int)D, NULL, &g->grid, 1, &E);
            if (isnan(s)) {
                failed = 1;
                continue;
            }
            uint16_t h = f2h(s);
            if (isfinite(s) && s != 0 && (h & 0x7fff) && (h & 0x7fff) < 0x7c00) b->d = h;
        }
    }
    if (failed) return piso_errorf("GPTQ block scales: out of memory");
    return 0;
}

static float gguf_round_column(void *ctx, struct piso_ec_work *w, int64_t r, int pos, float value) {
    const struct gguf_rounder *g = ctx;
    const int ib = w->col_group[pos], i = w->perm[pos] - ib * g->be;
    return g->be == PISO_QK ? round_elem32(g->type, &g->b32[r * g->nb + ib], i, value)
                            : round_elem256(g->type, &g->b256[r * g->nb + ib], i, value);
}

static const struct piso_ec_rounder gguf_rounder = {"gguf-block", NULL, gguf_begin_group, gguf_round_column};

size_t piso_ggml_quantize_gptq(int type, const float *W, void *dst, int64_t N, int64_t D, const float *H) {
    const int be = piso_ggml_block_elems(type), bb = piso_ggml_block_bytes(type);
    struct gguf_rounder g;
    memset(&g, 0, sizeof g);
    g.type = type, g.be = be, g.nb = D / be;
    const struct piso_ggml_traits *tr = piso_ggml_traits(type);
    g.sym = tr->grid != NULL; /* symmetric integer levels: the dense exact solver applies */
    if (g.sym) piso_grid_init(&g.grid, tr->grid, tr->level_min == -tr->level_max);
    g.H = H;
    struct piso_ec_opts o;
    piso_ec_opts_default(&o);
    o.q.group = be;
    const struct piso_ec_problem p = {N, D, W, H, NULL, NULL};
    struct piso_ec_work w;
    if (piso_ec_setup(&w, &p, &o, 0)) return 0;
    double *R = malloc(sizeof(double) * (size_t)(D * D));
    g.hdiag = malloc(sizeof(float) * (size_t)D);
    if (be == PISO_QK) g.b32 = malloc(sizeof *g.b32 * (size_t)(N * g.nb));
    else g.b256 = malloc(sizeof *g.b256 * (size_t)(N * g.nb));
    size_t done = 0;
    if (!R || !g.hdiag || (!g.b32 && !g.b256)) {
        piso_errorf("GPTQ: out of memory for a [%lld, %lld] tensor", (long long)N, (long long)D);
        goto out;
    }
    for (int64_t i = 0; i < D; i++) g.hdiag[i] = H[i * D + i] > 0 ? H[i * D + i] : 0;
    /* λ = 1% of the mean diagonal (dead inputs counted as 1), ×10 until H + λI factors */
    const struct piso_la_damping damp = {PISO_LA_DAMP_MEAN_DIAG, 0.01, 8, 0};
    if (piso_la_damped_inverse_factor(w.Hp, D, D, &damp, "GPTQ: the calibration Hessian", R, NULL, NULL)) goto out;
    if (piso_ec_sweep(&w, R, 0, &gguf_rounder, &g)) goto out;
    for (int64_t r = 0; r < N; r++)
        for (int64_t ib = 0; ib < g.nb; ib++) {
            uint8_t *out = (uint8_t *)dst + (r * g.nb + ib) * bb;
            if (be == PISO_QK) piso_pack_blk32(type, &g.b32[r * g.nb + ib], out);
            else piso_pack_blk256(type, &g.b256[r * g.nb + ib], out);
        }
    done = (size_t)(N * g.nb * bb);
out:
    free(R), free(g.hdiag), free(g.b32), free(g.b256), piso_ec_free(&w);
    return done;
}

/* ---- NVFP4 with a per-tensor scale ------------------------------------------------------------ */

/* Σ over the tensor of the exact sub-block optimum for tensor scale s (the blocks into dst when given). */
static double nvfp4_tensor_error(const float *x, void *dst, int64_t nrows, int64_t n, const float *w, float s) {
    const int64_t nb = n / PISO_QK_NVFP4;
    double tot = 0;
#pragma omp parallel for schedule(dynamic, 4) reduction(+ : tot)
    for (int64_t r = 0; r < nrows; r++) {
        double e = 0;
        for (int64_t ib = 0; ib < nb; ib++) {
            struct piso_blk64 b;
            e += piso_blk_nvfp4(x + r * n + ib * PISO_QK_NVFP4, w + ib * PISO_QK_NVFP4, s, &b);
            if (dst) piso_pack_blk64(&b, (uint8_t *)dst + (r * nb + ib) * 36);
        }
        tot += e;
    }
    return tot;
}

size_t piso_nvfp4_quantize_tensor(const float *x, void *dst, int64_t nrows, int64_t n_per_row, const float *weights,
                                  int tensor_scale, float *scale_out) {
    if (n_per_row % PISO_QK_NVFP4) {
        piso_errorf("NVFP4: row of %lld values is not a multiple of 64", (long long)n_per_row);
        return 0;
    }
    float *w = malloc(sizeof(float) * (size_t)n_per_row);
    if (!w) return 0;
    /* importances per column (all one without them; a dead block gets plain squared error) */
    for (int64_t i = 0; i < n_per_row; i++) w[i] = weights ? weights[i] : 1.0f;
    for (int64_t b = 0; b < n_per_row; b += PISO_QK_NVFP4) {
        double ws = 0;
        for (int i = 0; i < PISO_QK_NVFP4; i++) ws += w[b + i];
        if (!(ws > 0))
            for (int i = 0; i < PISO_QK_NVFP4; i++) w[b + i] = 1.0f;
    }
    float best_s = 1.0f;
    if (tensor_scale) {
        float amax = 0;
        for (int64_t i = 0; i < nrows * n_per_row; i++) amax = fmaxf(amax, fabsf(x[i]));
        double best = nvfp4_tensor_error(x, NULL, nrows, n_per_row, w, 1.0f);
        /* the recipe's s0 = amax/(6·448) and 7 offsets inside one UE4M3 grid step (the grid repeats
         * every octave, so these cover the alignments of the sub-block scales) */
        const float s0 = amax / (6.0f * 448.0f);
        for (int i = 0; i < 8 && s0 > 0 && isfinite(s0); i++) {
            const float s = s0 * exp2f((float)i / 32.0f);
            const double e = nvfp4_tensor_error(x, NULL, nrows, n_per_row, w, s);
            if (e < best) best = e, best_s = s;
        }
    }
    nvfp4_tensor_error(x, dst, nrows, n_per_row, w, best_s);
    free(w);
    if (scale_out) *scale_out = best_s;
    return (size_t)(nrows * (n_per_row / PISO_QK_NVFP4) * 36);
}
