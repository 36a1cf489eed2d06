/* piso_quantize_layer: one scale per output channel or per group, chosen by a scale method, then
 * round-to-nearest. Rows are independent and run in parallel (OpenMP, dynamic schedule); every
 * sum is taken in a fixed order inside one row, so the result does not depend on the threads. */
#include "piso/quant.h"
#include "quant/quant_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

struct layer_ctx {
    const struct piso_layer_problem *p;
    const struct piso_quant_opts *o;
    int64_t gs, ng;
    float *hdiag;     /* [D] */
    int64_t *order;   /* [ng] group order (piso-seq: descending Σ H_ii) */
};

/* dst[i] = Σ_j M[i, j]·x[j] for i in [0, n), M with leading dimension ld (fp64 sums). */
static void matvec_d(const float *M, int64_t ld, const float *x, int64_t n, int64_t m, double *dst) {
    for (int64_t i = 0; i < n; i++) dst[i] = piso_dot_fd(M + i * ld, x, m);
}

/* One row: scales for every group, then RTN into dequant/codes. Returns the row objective. */
static double quantize_row(const struct layer_ctx *c, int64_t row, float *scales, float *dq,
                           int16_t *codes) {
    const struct piso_layer_problem *p = c->p;
    const struct piso_quant_opts *o = c->o;
    const struct piso_grid *g = &o->grid;
    int64_t D = p->D, gs = c->gs;
    const float *w = p->W + row * D;
    const float *Gm = p->G ? p->G : p->H;
    int seq = o->method == PISO_SCALE_PISO_SEQ && c->ng > 1;
    int need_u = p->G || ((o->method == PISO_SCALE_PISO || o->method == PISO_SCALE_PISO_SEQ) && (seq || c->ng == 1));
    double *ufull = NULL; /* G·w, when the method or the objective needs it */
    double *ug = malloc(sizeof(double) * (size_t)D);
    if (need_u) {
        ufull = malloc(sizeof(double) * (size_t)D);
        matvec_d(Gm, D, w, D, D, ufull);
    }
    double *Hv = NULL;
    float *v = NULL;
    if (seq) { /* v = current weights (finished groups hold s·q), Hv = H·v kept up to date */
        Hv = malloc(sizeof(double) * (size_t)D);
        v = malloc(sizeof(float) * (size_t)D);
        memcpy(v, w, sizeof(float) * (size_t)D);
        matvec_d(p->H, D, w, D, D, Hv);
    }
    for (int64_t k = 0; k < c->ng; k++) {
        int64_t gi = c->order[k], j0 = gi * gs;
        const float *wg = w + j0;
        const float *Hgg = p->H + j0 * D + j0;
        float s;
        switch (o->method) {
        case PISO_SCALE_ABSMAX: s = piso_scale_absmax(wg, (int)gs, g); break;
        case PISO_SCALE_MSE_GRID: s = piso_scale_mse_grid(wg, (int)gs, g); break;
        case PISO_SCALE_PISO_DATAFREE:
            s = piso_solve_scale_diag(wg, (int)gs, NULL, NULL, g, o->allow_negative, NULL);
            break;
        case PISO_SCALE_PISO_DIAG: {
            /* diagonal model of both matrices: u_i = G_ii·w_i (§2.3) */
            for (int64_t i = 0; i < gs; i++) ug[i] = (double)Gm[(j0 + i) * D + j0 + i] * wg[i];
            s = piso_solve_scale_diag(wg, (int)gs, c->hdiag + j0, ug, g, o->allow_negative, NULL);
            break;
        }
        case PISO_SCALE_PISO_SEQ:
            if (seq) {
                /* §2.8: target seen by group g = (G·w)_g − H_{g,¬g}·v_{¬g} */
                for (int64_t i = 0; i < gs; i++) {
                    const float *Hi = p->H + (j0 + i) * D + j0;
                    double own = 0;
                    for (int64_t j = 0; j < gs; j++) own += (double)Hi[j] * v[j0 + j];
                    ug[i] = ufull[j0 + i] - (Hv[j0 + i] - own);
                }
                s = piso_solve_scale_dense(wg, (int)gs, Hgg, (int)D, ug, g, o->allow_negative, NULL);
                break;
            }
            /* channel-wise piso-seq is piso */
            __attribute__((fallthrough));
        default: /* PISO_SCALE_PISO */
            if (c->ng == 1) memcpy(ug, ufull, sizeof(double) * (size_t)D);
            else matvec_d(Gm + j0 * D + j0, D, wg, gs, gs, ug); /* independent: u_g = G_gg·w_g */
            s = piso_solve_scale_dense(wg, (int)gs, Hgg, (int)D, ug, g, o->allow_negative, NULL);
            break;
        }
        scales[gi] = s;
        for (int64_t i = 0; i < gs; i++) {
            int idx;
            float qv = piso_grid_round(g, wg[i] / s, &idx);
            dq[j0 + i] = s * qv;
            codes[j0 + i] = (int16_t)(g->is_int ? (int)qv : idx);
        }
        if (seq) {
            for (int64_t j = 0; j < gs; j++) {
                double d = (double)dq[j0 + j] - v[j0 + j];
                v[j0 + j] = dq[j0 + j];
                if (d == 0) continue;
                const float *Hj = p->H + (j0 + j) * D; /* column j0+j = row (H symmetric) */
                for (int64_t i = 0; i < D; i++) Hv[i] += Hj[i] * d;
            }
        }
    }
    /* row objective over the full H: (w−ŵ)ᵀH(w−ŵ), or ŵᵀHŵ − 2ŵᵀGw with a cross term */
    double obj = 0;
    if (p->G) {
        matvec_d(p->H, D, dq, D, D, ug);
        for (int64_t i = 0; i < D; i++) obj += (double)dq[i] * (ug[i] - 2.0 * ufull[i]);
    } else {
        float *e = v ? v : malloc(sizeof(float) * (size_t)D);
        for (int64_t i = 0; i < D; i++) e[i] = w[i] - dq[i];
        matvec_d(p->H, D, e, D, D, ug);
        for (int64_t i = 0; i < D; i++) obj += (double)e[i] * ug[i];
        if (!v) free(e);
    }
    free(ufull);
    free(ug);
    free(Hv);
    free(v);
    return obj;
}

static int cmp_group(const void *a, const void *b, void *arg) {
    const double *imp = arg;
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    if (imp[x] != imp[y]) return imp[x] > imp[y] ? -1 : 1;
    return (x > y) - (x < y);
}

int piso_quantize_layer(const struct piso_layer_problem *p, const struct piso_quant_opts *opts,
                        struct piso_layer_result *r) {
    memset(r, 0, sizeof *r);
    if (!p || !p->W || !p->H || p->N <= 0 || p->D <= 0)
        return piso_errorf("quantize layer: empty problem (need W [N, D] and H [D, D])");
    if (p->D > 0x7fffffff) return piso_errorf("quantize layer: D = %lld too large", (long long)p->D);
    if (opts->grid.n < 2 || piso_grid_zero_index(&opts->grid) < 0)
        return piso_errorf("quantize layer: the grid must have at least 2 values including 0");
    if (opts->method < 0 || opts->method >= PISO_SCALE_COUNT)
        return piso_errorf("quantize layer: unknown scale method %d", (int)opts->method);
    int64_t D = p->D, N = p->N;
    int64_t gs = opts->group > 0 ? opts->group : D;
    if (opts->group < 0 || D % gs != 0)
        return piso_errorf("quantize layer: group size %d does not divide D = %lld", opts->group,
                           (long long)D);
    struct layer_ctx c = {.p = p, .o = opts, .gs = gs, .ng = D / gs};
    c.hdiag = malloc(sizeof(float) * (size_t)D);
    c.order = malloc(sizeof(int64_t) * (size_t)c.ng);
    double *imp = calloc((size_t)c.ng, sizeof(double));
    for (int64_t i = 0; i < D; i++) {
        c.hdiag[i] = p->H[i * D + i];
        imp[i / gs] += c.hdiag[i];
    }
    for (int64_t k = 0; k < c.ng; k++) c.order[k] = k;
    if (opts->method == PISO_SCALE_PISO_SEQ)
        qsort_r(c.order, (size_t)c.ng, sizeof(int64_t), cmp_group, imp);
    free(imp);

    r->N = N;
    r->D = D;
    r->n_groups = c.ng;
    r->scales = malloc(sizeof(float) * (size_t)(N * c.ng));
    r->dequant = malloc(sizeof(float) * (size_t)(N * D));
    r->codes = malloc(sizeof(int16_t) * (size_t)(N * D));
    r->row_objective = malloc(sizeof(double) * (size_t)N);
    r->constant_dropped = p->G != NULL;
    if (!r->scales || !r->dequant || !r->codes || !r->row_objective) {
        free(c.hdiag);
        free(c.order);
        piso_layer_result_free(r);
        return piso_errorf("quantize layer: out of memory for N = %lld, D = %lld", (long long)N,
                           (long long)D);
    }
    struct piso_progress prog;
    piso_progress_begin(&prog, piso_scale_method_name(opts->method), "rows", N);
    int64_t done = 0;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t row = 0; row < N; row++) {
        r->row_objective[row] = quantize_row(&c, row, r->scales + row * c.ng, r->dequant + row * D,
                                             r->codes + row * D);
        int64_t d;
#pragma omp atomic capture
        d = ++done;
#ifdef _OPENMP
        if (omp_get_thread_num() == 0)
#endif
            if (d < N) piso_progress_update(&prog, d);
    }
    piso_progress_update(&prog, N);
    double total = 0;
    for (int64_t row = 0; row < N; row++) total += r->row_objective[row];
    r->objective = total;
    free(c.hdiag);
    free(c.order);
    return 0;
}

void piso_layer_result_free(struct piso_layer_result *r) {
    if (!r) return;
    free(r->scales);
    free(r->dequant);
    free(r->codes);
    free(r->row_objective);
    memset(r, 0, sizeof *r);
}
