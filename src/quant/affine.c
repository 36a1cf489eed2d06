/* Affine (asymmetric) integer quantization, w ≈ s·(c − z): the grid of each zero point, min-max,
 * and the exact (s, z) optimum as one PiSO sweep per zero point (see piso/quant.h). */
#include "piso/quant.h"
#include "quant/quant_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void piso_grid_affine(int bits, int z, struct piso_grid *out) {
    memset(out, 0, sizeof *out);
    const int maxq = (1 << bits) - 1;
    snprintf(out->name, sizeof out->name, "uint%d-z%d", bits, z);
    for (int c = 0; c <= maxq; c++) out->v[out->n++] = (float)(c - z);
    out->is_int = 1, out->bits = bits;
}

float piso_affine_round(float x, int z, int maxq) {
    float r = nearbyintf(x); /* half to even, as piso_grid_round */
    if (!(r >= (float)-z)) r = (float)-z; /* NaN goes to the low end */
    if (r > (float)(maxq - z)) r = (float)(maxq - z);
    return r + 0.0f; /* −0 → +0: s·q is then bit-identical to the checkpoint's s·(c − z) */
}

float piso_scale_to_fp16(float s) {
    float h = piso_fp16_to_fp32(piso_fp32_to_fp16(fabsf(s)));
    h = h > 0 ? (isfinite(h) ? h : 65504.0f) : 5.9604645e-8f;
    return s < 0 ? -h : h; /* negative scales (asymmetric grids) keep their sign */
}

/* The other fp16 neighbour of s: h = fp16(s) is the nearest; this is one fp16 step from h toward
 * s (h itself when s is an fp16 value). Same sign as s. */
static float fp16_other_neighbour(float s, float h) {
    const float a = fabsf(s), ha = fabsf(h);
    if (a == ha) return h;
    uint16_t bits = piso_fp32_to_fp16(ha);
    bits = (uint16_t)(ha < a ? bits + 1 : bits - 1);
    float o = piso_fp16_to_fp32(bits);
    if (!(o > 0) || !isfinite(o)) return h;
    return s < 0 ? -o : o;
}

float piso_scale_fp16_best(const float *w, int n, const float *H, int ldh, const float *hdiag, const double *u,
                           const struct piso_grid *g, float s) {
    const float h = piso_scale_to_fp16(s), o = fp16_other_neighbour(s, h);
    if (o == h) return h;
    double E[2];
    for (int k = 0; k < 2; k++) {
        const float c = k ? o : h;
        if (H) {
            E[k] = piso_objective_dense(w, n, H, ldh, u, g, c);
            continue;
        }
        double a = 0, b = 0;
        for (int i = 0; i < n; i++) {
            const double q = piso_grid_round(g, w[i] / c, NULL), hii = hdiag ? hdiag[i] : 1.0;
            b += hii * q * q;
            a += q * (u ? u[i] : hii * w[i]);
        }
        E[k] = (double)c * c * b - 2.0 * c * a;
    }
    return E[1] < E[0] ? o : h; /* NaN (out of memory) keeps the nearest */
}

/* min-max of the range [lo, hi] (lo ≤ 0 ≤ hi) */
static float minmax_range(double lo, double hi, int maxq, int zmin, int *zero) {
    if (!(hi - lo > 0)) lo = -1, hi = 1; /* all zero: any scale, GPTQ's convention */
    float s = (float)((hi - lo) / maxq);
    if (!(s > 0) || !isfinite(s)) s = 1.0f / (float)maxq;
    double zf = nearbyint(-lo / s);
    int z = zf < zmin ? zmin : zf > maxq ? maxq : (int)zf;
    *zero = z;
    return s;
}

float piso_affine_minmax(const float *w, int n, int bits, int zmin, int *zero) {
    double lo = 0, hi = 0;
    for (int i = 0; i < n; i++) lo = fmin(lo, w[i]), hi = fmax(hi, w[i]);
    return minmax_range(lo, hi, (1 << bits) - 1, zmin, zero);
}

struct affine_problem {
    const float *w;
    int n, ldh, maxq;
    const float *H;      /* dense block or NULL */
    const float *hdiag;  /* diagonal or NULL (identity) when H is NULL */
    const double *u;     /* target, never NULL here */
    float *q;            /* scratch [n] */
};

/* E(s, z) = s²·qᵀHq − 2s·qᵀu with q the affine codes of zero point z (fp64 sums). */
static double affine_objective(const struct affine_problem *p, int z, float s) {
    double a = 0, b = 0;
    for (int i = 0; i < p->n; i++) p->q[i] = piso_affine_round(p->w[i] / s, z, p->maxq);
    for (int i = 0; i < p->n; i++) {
        const double qi = p->q[i];
        if (qi == 0) continue;
        a += qi * p->u[i];
        if (p->H) b += qi * piso_dot_fd(p->H + (int64_t)i * p->ldh, p->q, p->n);
        else b += (p->hdiag ? p->hdiag[i] : 1.0) * qi * qi;
    }
    return (double)s * s * b - 2.0 * s * a;
}

/* data-free shrink search (the symmetric mse-grid's twin): ‖w − ŵ‖², k/20 of the min-max range */
static float affine_mse_grid(const struct affine_problem *p, int zmin, int fp16, int *zero) {
    double lo = 0, hi = 0;
    for (int i = 0; i < p->n; i++) lo = fmin(lo, p->w[i]), hi = fmax(hi, p->w[i]);
    float best_s = 1;
    double best_e = INFINITY;
    for (int k = 20; k >= 1; k--) {
        int z;
        float s = minmax_range(lo * k / 20.0, hi * k / 20.0, p->maxq, zmin, &z);
        if (fp16) s = piso_scale_to_fp16(s);
        double e = 0;
        for (int i = 0; i < p->n; i++) {
            double r = (double)p->w[i] - (double)s * piso_affine_round(p->w[i] / s, z, p->maxq);
            e += r * r;
        }
        if (e < best_e) best_e = e, best_s = s, *zero = z;
    }
    return best_s;
}

float piso_solve_affine(const float *w, int n, const float *H, int ldh, const float *hdiag, const double *u,
                        enum piso_scale_method m, int bits, int zmin, int fp16, int *zero, double *E_out) {
    const int maxq = (1 << bits) - 1;
    if (zmin < 0) zmin = 0;
    if (zmin > maxq) zmin = maxq;
    const int dense = m == PISO_SCALE_PISO || m == PISO_SCALE_PISO_SEQ;
    if (!dense) H = NULL;
    if (m != PISO_SCALE_PISO_DIAG) hdiag = NULL;
    struct affine_problem p = {w, n, ldh, maxq, H, hdiag, u, malloc(sizeof(float) * (size_t)(n > 0 ? n : 1))};
    double *uown = NULL;
    if (!u) { /* u = H·w (identity or diagonal: h_i·w_i) */
        uown = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
        if (uown)
            for (int i = 0; i < n; i++)
                uown[i] = H ? piso_dot_fd(H + (int64_t)i * ldh, w, n) : (hdiag ? hdiag[i] : 1.0) * w[i];
        p.u = uown;
    }
    if (!p.q || !p.u) {
        free(p.q), free(uown);
        if (E_out) *E_out = NAN;
        return NAN;
    }
    int z_best;
    float s_best = piso_affine_minmax(w, n, bits, zmin, &z_best);
    if (fp16) s_best = piso_scale_to_fp16(s_best);
    if (m == PISO_SCALE_MSE_GRID) s_best = affine_mse_grid(&p, zmin, fp16, &z_best);
    double E_best = affine_objective(&p, z_best, s_best);
    const int exact = dense || m == PISO_SCALE_PISO_DIAG || m == PISO_SCALE_PISO_DATAFREE;
    int oom = 0, z_lo = zmin, z_hi = maxq;
    if (bits > PISO_AFFINE_ALL_ZEROS_BITS) { /* 2^bits sweeps are too many: a window around min-max's zero */
        z_lo = z_best - PISO_AFFINE_ZERO_WINDOW < zmin ? zmin : z_best - PISO_AFFINE_ZERO_WINDOW;
        z_hi = z_best + PISO_AFFINE_ZERO_WINDOW > maxq ? maxq : z_best + PISO_AFFINE_ZERO_WINDOW;
    }
    for (int z = z_lo; exact && z <= z_hi && !oom; z++) {
        struct piso_grid gz;
        piso_grid_affine(bits, z, &gz);
        float s = dense ? piso_solve_scale_dense(w, n, H, ldh, p.u, &gz, 0, NULL)
                        : piso_solve_scale_diag(w, n, hdiag, p.u, &gz, 0, NULL);
        if (isnan(s)) {
            oom = 1;
            break;
        }
        if (!(s > 0) || !isfinite(s)) continue;
        if (fp16) { /* the better of the two fp16 neighbours: the optimum often sits at a breakpoint */
            const float h = piso_scale_to_fp16(s), o = fp16_other_neighbour(s, h);
            const double Eh = affine_objective(&p, z, h), Eo = affine_objective(&p, z, o);
            if (Eh < E_best) E_best = Eh, s_best = h, z_best = z;
            if (Eo < E_best) E_best = Eo, s_best = o, z_best = z;
            continue;
        }
        double E = affine_objective(&p, z, s);
        if (E < E_best) E_best = E, s_best = s, z_best = z;
    }
    free(p.q), free(uown);
    if (oom) {
        if (E_out) *E_out = NAN;
        return NAN;
    }
    *zero = z_best;
    if (E_out) *E_out = E_best;
    return s_best;
}
