/* piso_quantize_layer: one scale per output channel or per group, chosen by a scale method, then
 * round-to-nearest. Rows are independent and run in parallel (OpenMP, dynamic schedule); every
 * sum is taken in a fixed order inside one row, and the fp64 GEMMs (G·w for all rows, the row
 * objectives) split rows, not sums, across threads, so the result does not depend on them. */
#include "piso/accum.h"
#include "piso/linalg.h"
#include "piso/quant.h"
#include "quant/quant_internal.h"
#include "linalg/linalg_internal.h" /* LA_TILE: the panels follow the GEMM tiles */

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
    double *U;        /* [N, D] rows G·w (NULL when not needed) */
    double *HW;       /* [N, D] rows H·w (piso-seq only) */
    float *pre;       /* [N] channel-wise PiSO scales solved for all rows at once (or NULL) */
};

/* dst[i] = Σ_j M[i, j]·x[j] for i in [0, n), M with leading dimension ld (fp64 sums). */
static void matvec_d(const float *M, int64_t ld, const float *x, int64_t n, int64_t m, double *dst) {
    for (int64_t i = 0; i < n; i++) dst[i] = piso_dot_fd(M + i * ld, x, m);
}

/* The scale of group gi (columns j0..j0+gs) of one row. For piso-seq, v/Hv are that row's
 * current weights and H·v. Asym: *zero receives the zero point (0 otherwise). */
/* what the exact methods minimised, for choosing between the fp16 neighbours of their scale */
struct scale_objective {
    const float *H, *hdiag;
    int ldh, exact;
    const double *u;
};

static float group_scale_sym(const struct layer_ctx *c, int64_t row, int64_t j0, const float *v, const double *Hv,
                             double *ug, int *zero, struct scale_objective *so) {
    const struct piso_layer_problem *p = c->p;
    const struct piso_quant_opts *o = c->o;
    const struct piso_grid *g = &o->grid;
    int64_t D = p->D, gs = c->gs;
    const float *wg = p->W + row * D + j0;
    const float *Gm = p->G ? p->G : p->H;
    const float *Hgg = p->H + j0 * D + j0;
    const double *ufull = c->U ? c->U + row * D : NULL; /* G·w */
    const struct piso_accum *acc = o->acc; /* PiSO: feasible scales only (tiles: i / tile in the vector) */
    const int asym = o->asym, bits = g->bits, zmin = o->zero_min, f16 = o->scale_fp16;
    *zero = 0;
    switch (o->method) {
    case PISO_SCALE_ABSMAX:
        return asym ? piso_solve_affine(wg, (int)gs, NULL, 0, NULL, NULL, o->method, bits, zmin, f16, zero, NULL)
                    : piso_scale_absmax(wg, (int)gs, g);
    case PISO_SCALE_MSE_GRID:
        return asym ? piso_solve_affine(wg, (int)gs, NULL, 0, NULL, NULL, o->method, bits, zmin, f16, zero, NULL)
                    : piso_scale_mse_grid(wg, (int)gs, g);
    case PISO_SCALE_PISO_DATAFREE:
        so->exact = 1;
        return asym ? piso_solve_affine(wg, (int)gs, NULL, 0, NULL, NULL, o->method, bits, zmin, f16, zero, NULL)
                    : piso_solve_scale_diag_accum(wg, (int)gs, NULL, NULL, g, o->allow_negative, NULL, acc, NULL, 0);
    case PISO_SCALE_PISO_DIAG:
        /* diagonal model of both matrices: u_i = G_ii·w_i (§2.3) */
        for (int64_t i = 0; i < gs; i++) ug[i] = (double)Gm[(j0 + i) * D + j0 + i] * wg[i];
        *so = (struct scale_objective){NULL, c->hdiag + j0, 0, 1, ug};
        return asym ? piso_solve_affine(wg, (int)gs, NULL, 0, c->hdiag + j0, ug, o->method, bits, zmin, f16, zero, NULL)
                    : piso_solve_scale_diag_accum(wg, (int)gs, c->hdiag + j0, ug, g, o->allow_negative, NULL, acc,
                                                  NULL, 0);
    case PISO_SCALE_PISO_SEQ:
        if (c->ng > 1) {
            /* §2.8: target seen by group g = (G·w)_g − H_{g,¬g}·v_{¬g} = (G·w)_g − (H·v)_g + H_gg·v_g */
            for (int64_t i = 0; i < gs; i++)
                ug[i] = ufull[j0 + i] - (Hv[j0 + i] - piso_dot_fd(Hgg + i * D, v + j0, gs));
            *so = (struct scale_objective){Hgg, NULL, (int)D, 1, ug};
            return asym ? piso_solve_affine(wg, (int)gs, Hgg, (int)D, NULL, ug, o->method, bits, zmin, f16, zero, NULL)
                        : piso_solve_scale_dense_accum(wg, (int)gs, Hgg, (int)D, ug, g, o->allow_negative, NULL, acc,
                                                       NULL, 0);
        }
        /* channel-wise piso-seq is piso */
        __attribute__((fallthrough));
    default: /* PISO_SCALE_PISO */
        if (c->pre) return c->pre[row];
        if (c->ng == 1) memcpy(ug, ufull, sizeof(double) * (size_t)D);
        else matvec_d(Gm + j0 * D + j0, D, wg, gs, gs, ug); /* independent: u_g = G_gg·w_g */
        *so = (struct scale_objective){Hgg, NULL, (int)D, 1, ug};
        return asym ? piso_solve_affine(wg, (int)gs, Hgg, (int)D, NULL, ug, o->method, bits, zmin, f16, zero, NULL)
                    : piso_solve_scale_dense_accum(wg, (int)gs, Hgg, (int)D, ug, g, o->allow_negative, NULL, acc, NULL, 0);
    }
}

/* RTN under accumulator limits: the PiSO scales already satisfy them (the codes are only clamped,
 * which then changes nothing); absmax and mse-grid scales go through the AXE step per tile (soft
 * threshold unless disabled, clamp to the tile's code limits), columns in order. */
static void axe_round_group(const struct layer_ctx *c, const float *wg, float s, float *dq, int16_t *codes) {
    const struct piso_accum *a = c->o->acc;
    enum piso_scale_method m = c->o->method;
    int64_t gs = c->gs, T = a->tile > 0 && a->tile < gs ? a->tile : gs;
    int thresholded = !a->no_threshold && (m == PISO_SCALE_ABSMAX || m == PISO_SCALE_MSE_GRID);
    double radius = piso_accum_l1_radius(a);
    for (int64_t t0 = 0; t0 < gs; t0 += T) {
        int64_t p = 0, n = 0, len = t0 + T <= gs ? T : gs - t0;
        double theta = thresholded ? piso_axe_theta(wg + t0, NULL, (int)len, s, radius) : 0;
        for (int64_t i = t0; i < t0 + len; i++) {
            int q = piso_axe_code(a, &c->o->grid, &p, &n, theta, wg[i] / s);
            codes[i] = (int16_t)q;
            dq[i] = s * (float)q;
        }
    }
}

static float group_scale(const struct layer_ctx *c, int64_t row, int64_t j0, const float *v, const double *Hv,
                         double *ug, int *zero) {
    struct scale_objective so = {NULL, NULL, 0, 0, NULL};
    float s = group_scale_sym(c, row, j0, v, Hv, ug, zero, &so);
    if (!c->o->scale_fp16 || c->o->asym || isnan(s)) return s; /* affine: rounded inside */
    return so.exact ? piso_scale_fp16_best(c->p->W + row * c->p->D + j0, (int)c->gs, so.H, so.ldh, so.hdiag, so.u,
                                           &c->o->grid, s)
                    : piso_scale_to_fp16(s);
}

/* Rows r0..r1: scales for every group, then RTN into dequant/codes. Groups go in c->order and,
 * for piso-seq, the rows of the block advance together so that each row of H used to update H·v
 * is read once per block instead of once per row. Each row's arithmetic is the same whatever
 * block it lands in, so the result does not depend on the threads. */
#define SEQ_BLOCK 16
static int quantize_block(const struct layer_ctx *c, int64_t r0, int64_t r1, struct piso_layer_result *r) {
    const struct piso_layer_problem *p = c->p;
    const struct piso_grid *g = &c->o->grid;
    int64_t D = p->D, gs = c->gs, R = r1 - r0;
    int seq = c->o->method == PISO_SCALE_PISO_SEQ && c->ng > 1;
    double *ug = malloc(sizeof(double) * (size_t)D);
    double *Hv = NULL, *dv = NULL;
    float *v = NULL;
    int rc = 0;
    if (seq) { /* v = current weights (finished groups hold s·q), Hv = H·v kept up to date */
        Hv = malloc(sizeof(double) * (size_t)(R * D));
        v = malloc(sizeof(float) * (size_t)(R * D));
        dv = malloc(sizeof(double) * (size_t)(R * gs));
    }
    if (!ug || (seq && (!Hv || !v || !dv))) {
        rc = -1;
        goto out;
    }
    if (seq) {
        memcpy(v, p->W + r0 * D, sizeof(float) * (size_t)(R * D));
        memcpy(Hv, c->HW + r0 * D, sizeof(double) * (size_t)(R * D));
    }
    for (int64_t k = 0; k < c->ng; k++) {
        int64_t gi = c->order[k], j0 = gi * gs;
        for (int64_t row = r0; row < r1; row++) {
            int64_t b = row - r0;
            int z = 0;
            float s = group_scale(c, row, j0, seq ? v + b * D : NULL, seq ? Hv + b * D : NULL, ug, &z);
            if (isnan(s)) { /* the solver ran out of memory */
                rc = -1;
                goto out;
            }
            const float *wg = p->W + row * D + j0;
            float *dq = r->dequant + row * D + j0;
            int16_t *codes = r->codes + row * D + j0;
            r->scales[row * c->ng + gi] = s;
            if (r->zeros) r->zeros[row * c->ng + gi] = (int16_t)z;
            const int maxq = (1 << g->bits) - 1;
            if (c->o->acc) axe_round_group(c, wg, s, dq, codes); /* never with zero points (CLI refuses) */
            for (int64_t i = 0; !c->o->acc && i < gs; i++) {
                int idx = 0;
                float qv = r->zeros ? piso_affine_round(wg[i] / s, z, maxq) : piso_grid_round(g, wg[i] / s, &idx);
                dq[i] = s * qv;
                codes[i] = (int16_t)(g->is_int ? (int)qv : idx);
            }
            if (seq)
                for (int64_t i = 0; i < gs; i++) {
                    dv[b * gs + i] = (double)dq[i] - v[b * D + j0 + i];
                    v[b * D + j0 + i] = dq[i];
                }
        }
        /* Hv += H[:, j]·Δv_j for the group's columns (H symmetric: column = row), only where Hv
         * is still read: the groups not solved yet */
        if (seq)
            for (int64_t j = 0; j < gs; j++) {
                const float *Hj = p->H + (j0 + j) * D;
                for (int64_t b = 0; b < R; b++) {
                    double d = dv[b * gs + j];
                    if (d == 0) continue;
                    for (int64_t k2 = k + 1; k2 < c->ng; k2++) {
                        int64_t o2 = c->order[k2] * gs;
                        piso_axpy_fd(Hv + b * D + o2, Hj + o2, d, gs);
                    }
                }
            }
    }
out:
    free(ug);
    free(Hv);
    free(v);
    free(dv);
    return rc;
}

/* Rows r0..r1 of W (or W − Ŵ, Ŵ) as fp64 into dst [r1 − r0, D]. */
enum { ROWS_W, ROWS_ERR, ROWS_DQ };
static void rows_d(const float *W, const float *dq, int64_t D, int64_t r0, int64_t r1, int kind, double *dst) {
    for (int64_t k = 0; k < (r1 - r0) * D; k++) {
        double w = W[r0 * D + k], q = dq ? dq[r0 * D + k] : 0;
        dst[k] = kind == ROWS_W ? w : kind == ROWS_ERR ? w - q : q;
    }
}

#define ROW_BLOCK 256
/* The products below need H (or G) in fp64; a whole fp64 copy takes 8·D² bytes (1.6 GB each at
 * D = 14336, beside the pipeline's own statistics), so it is converted a panel of PANEL columns
 * (rows when transposed) at a time. PANEL is a multiple of the GEMM tile (LA_TILE), so every tile
 * of the product is the same BLAS call on the same values as with the whole matrix: the results
 * are bitwise the same. */
#define PANEL (4 * LA_TILE)
/* panel [D, pw] (columns j0.. of M [D, D]) or, transposed, [pw, D] (rows j0..), in fp64. */
static void panel_d(const float *M, int64_t D, int64_t j0, int64_t pw, int transpose, double *panel) {
    if (transpose)
        for (int64_t k = 0; k < pw * D; k++) panel[k] = M[j0 * D + k];
    else
        for (int64_t i = 0; i < D; i++)
            for (int64_t j = 0; j < pw; j++) panel[i * pw + j] = M[i * D + j0 + j];
}
/* out [rb, D] (row stride D) = buf [rb, D] · op(M) for fp32 M, through fp64 panels. */
static void times_panel(const double *buf, int64_t rb, int64_t D, const double *panel, int64_t j0, int64_t pw,
                        int transpose, double *out) {
    piso_la_dgemm(0, transpose, rb, pw, D, 1.0, buf, D, panel, transpose ? D : pw, 0.0, out + j0, D);
}

/* out [N, D] = rows of W times op(M) (fp64 GEMM in row blocks; M [D, D] fp32, converted by panels). */
static void rows_times(const float *W, int64_t N, int64_t D, const float *M, int transpose, double *out,
                       double *buf, double *panel) {
    for (int64_t j0 = 0; j0 < D; j0 += PANEL) {
        const int64_t pw = D - j0 < PANEL ? D - j0 : PANEL;
        panel_d(M, D, j0, pw, transpose, panel);
        for (int64_t r0 = 0; r0 < N; r0 += ROW_BLOCK) {
            int64_t r1 = r0 + ROW_BLOCK < N ? r0 + ROW_BLOCK : N;
            rows_d(W, NULL, D, r0, r1, ROWS_W, buf);
            times_panel(buf, r1 - r0, D, panel, j0, pw, transpose, out + r0 * D);
        }
    }
}

int piso_layer_channel_scales(const struct piso_layer_problem *p, const struct piso_quant_opts *opts, float *scales) {
    if (opts->group != 0 || opts->grid.block || opts->acc || opts->asym || opts->scale_fp16 || !p->H ||
        (opts->method != PISO_SCALE_PISO && opts->method != PISO_SCALE_PISO_SEQ))
        return 1;
    int64_t N = p->N, D = p->D, blk = (N < ROW_BLOCK ? N : ROW_BLOCK) * D;
    /* the same fp64 products as piso_quantize_layer: u = G·w (G = H when absent) and H·w */
    double *panel = malloc(sizeof(double) * (size_t)(D * (D < PANEL ? D : PANEL)));
    double *buf = malloc(sizeof(double) * (size_t)blk), *U = malloc(sizeof(double) * (size_t)(N * D));
    double *hw = p->G ? malloc(sizeof(double) * (size_t)(N * D)) : U;
    int rc = -1;
    if (!panel || !buf || !U || !hw) {
        piso_errorf("channel scales: out of memory for the fp64 products (N = %lld, D = %lld)", (long long)N, (long long)D);
        goto out;
    }
    rows_times(p->W, N, D, p->G ? p->G : p->H, 1, U, buf, panel);
    if (p->G) rows_times(p->W, N, D, p->H, 0, hw, buf, panel);
    rc = piso_solve_scales_rows_x(p->W, D, N, (int)D, p->X, p->T, D, p->H, (int)D, U, D, hw, D, &opts->grid,
                                  opts->allow_negative, scales, 1, NULL);
out:
    if (hw != U) free(hw);
    free(panel), free(buf), free(U);
    return rc;
}

/* The X̃ form of the products, when H = X̃ᵀX̃ with T < D tokens (piso_xform_usable): Xd = X̃ in fp64
 * [T, D]; a row block's product with H is (rows·X̃ᵀ)·X̃, 2·T·D instead of D² per row, and the
 * same up to round-off (more exact: H's own fp32 rounding is not in it). NULL: not used. */
static double *gram_factor_d(const struct piso_layer_problem *p) {
    if (!piso_xform_usable(p->X, p->T, p->D, (int)p->D, p->H, (int)p->D)) return NULL;
    double *Xd = malloc(sizeof(double) * (size_t)(p->T * p->D));
    for (int64_t k = 0; Xd && k < p->T * p->D; k++) Xd[k] = p->X[k];
    return Xd; /* NULL when out of memory: the D² products then */
}

/* out [N, D] = rows of W times H = X̃ᵀX̃ (Xd [T, D] fp64); P: scratch [ROW_BLOCK, T]. */
static void rows_times_gram(const float *W, int64_t N, int64_t D, const double *Xd, int64_t T, double *out,
                            double *buf, double *P) {
    for (int64_t r0 = 0; r0 < N; r0 += ROW_BLOCK) {
        int64_t rb = (r0 + ROW_BLOCK < N ? r0 + ROW_BLOCK : N) - r0;
        rows_d(W, NULL, D, r0, r0 + rb, ROWS_W, buf);
        piso_la_dgemm(0, 1, rb, T, D, 1.0, buf, D, Xd, D, 0.0, P, T);
        piso_la_dgemm(0, 0, rb, D, T, 1.0, P, T, Xd, D, 0.0, out + r0 * D, D);
    }
}

/* Row objectives: (w−ŵ)ᵀH(w−ŵ), or ŵᵀHŵ − 2ŵᵀ(Gw) with a cross term; fp64 GEMM in row blocks
 * (with Xd: eᵀHe = ‖X̃·e‖²). */
static void row_objectives(const struct piso_layer_problem *p, const float *dq, const double *U, double *obj,
                           double *buf, double *prod, double *panel, const double *Xd) {
    int64_t N = p->N, D = p->D;
    for (int64_t r0 = 0; r0 < N; r0 += ROW_BLOCK) {
        int64_t r1 = r0 + ROW_BLOCK < N ? r0 + ROW_BLOCK : N;
        rows_d(p->W, dq, D, r0, r1, p->G ? ROWS_DQ : ROWS_ERR, buf);
        if (Xd) {
            const int64_t T = p->T;
            piso_la_dgemm(0, 1, r1 - r0, T, D, 1.0, buf, D, Xd, D, 0.0, prod, T);
            for (int64_t r = r0; r < r1; r++) {
                const double *e = buf + (r - r0) * D, *xe = prod + (r - r0) * T;
                double acc = 0;
                for (int64_t t = 0; t < T; t++) acc += xe[t] * xe[t];
                if (p->G)
                    for (int64_t j = 0; j < D; j++) acc -= 2.0 * e[j] * U[r * D + j];
                obj[r] = acc;
            }
            continue;
        }
        for (int64_t j0 = 0; j0 < D; j0 += PANEL) {
            const int64_t pw = D - j0 < PANEL ? D - j0 : PANEL;
            panel_d(p->H, D, j0, pw, 0, panel);
            times_panel(buf, r1 - r0, D, panel, j0, pw, 0, prod);
        }
        for (int64_t r = r0; r < r1; r++) {
            const double *e = buf + (r - r0) * D, *he = prod + (r - r0) * D;
            double acc = 0;
            if (p->G)
                for (int64_t j = 0; j < D; j++) acc += e[j] * (he[j] - 2.0 * U[r * D + j]);
            else
                for (int64_t j = 0; j < D; j++) acc += e[j] * he[j];
            obj[r] = acc;
        }
    }
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
    if (opts->asym && (!opts->grid.is_int || opts->grid.block || opts->grid.bits < 1 || opts->grid.bits > 8))
        return piso_errorf("quantize layer: asymmetric (zero-point) quantization needs an integer grid of 1 to 8 "
                           "bits (%s given)", opts->grid.name);
    int64_t D = p->D, N = p->N;
    struct piso_quant_opts hw_opts;
    if (opts->grid.block) { /* MX / NVFP4: the format's block is the group */
        const int ragged = D < opts->grid.block && (opts->group == 0 || opts->group == D); /* one short, zero-padded block */
        if (opts->group != 0 && opts->group != opts->grid.block && !ragged)
            return piso_errorf("quantize layer: %s has blocks of %d (group %d given)", opts->grid.name, opts->grid.block, opts->group);
        if (D % opts->grid.block && !ragged)
            return piso_errorf("quantize layer: %s needs D to be a multiple of %d (D = %lld)", opts->grid.name,
                               opts->grid.block, (long long)D);
        hw_opts = *opts;
        hw_opts.group = ragged ? 0 : opts->grid.block;
        if (opts->grid.scale_set == PISO_SSET_UE4M3 && opts->grid.scale_mult == 1.0f) {
            float *hd = malloc(sizeof(float) * (size_t)D);
            if (!hd) return piso_errorf("quantize layer: out of memory");
            for (int64_t i = 0; i < D; i++) hd[i] = p->H[i * D + i] > 0 ? p->H[i * D + i] : 0;
            const int datafree = opts->method == PISO_SCALE_ABSMAX || opts->method == PISO_SCALE_MSE_GRID ||
                                 opts->method == PISO_SCALE_PISO_DATAFREE;
            hw_opts.grid.scale_mult = opts->method == PISO_SCALE_ABSMAX
                                          ? piso_grid_recipe_tensor_scale(p->W, N * D)
                                          : piso_nvfp4_tensor_scale(p->W, N, D, datafree ? NULL : hd, &opts->grid);
            free(hd);
            if (isnan(hw_opts.grid.scale_mult)) return piso_errorf("quantize layer: out of memory (NVFP4 tensor scale)");
        }
        opts = &hw_opts;
    }
    int64_t gs = opts->group > 0 ? opts->group : D;
    if (opts->group < 0 || D % gs != 0)
        return piso_errorf("quantize layer: group size %d does not divide D = %lld", opts->group,
                           (long long)D);
    if (opts->acc && piso_accum_validate(opts->acc, D, opts->group, &opts->grid, "(RTN)", NULL)) return -1;
    struct layer_ctx c = {.p = p, .o = opts, .gs = gs, .ng = D / gs};
    c.hdiag = malloc(sizeof(float) * (size_t)D);
    c.order = malloc(sizeof(int64_t) * (size_t)c.ng);
    double *imp = calloc((size_t)c.ng, sizeof(double));
    if (!c.hdiag || !c.order || !imp) {
        free(c.hdiag), free(c.order), free(imp);
        return piso_errorf("quantize layer: out of memory for D = %lld", (long long)D);
    }
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
    r->tensor_scale = opts->grid.scale_set == PISO_SSET_UE4M3 ? opts->grid.scale_mult : 0;
    r->scales = malloc(sizeof(float) * (size_t)(N * c.ng));
    r->dequant = malloc(sizeof(float) * (size_t)(N * D));
    r->codes = malloc(sizeof(int16_t) * (size_t)(N * D));
    r->row_objective = malloc(sizeof(double) * (size_t)N);
    if (opts->asym) r->zeros = malloc(sizeof(int16_t) * (size_t)(N * c.ng));
    r->constant_dropped = p->G != NULL;
    if (!r->scales || !r->dequant || !r->codes || !r->row_objective || (opts->asym && !r->zeros)) {
        free(c.hdiag);
        free(c.order);
        piso_layer_result_free(r);
        return piso_errorf("quantize layer: out of memory for N = %lld, D = %lld", (long long)N,
                           (long long)D);
    }
    /* the O(N·D²) products go through fp64 GEMMs in row blocks, outside the row loop */
    int64_t blk = (N < ROW_BLOCK ? N : ROW_BLOCK) * D;
    double *panel = malloc(sizeof(double) * (size_t)(D * (D < PANEL ? D : PANEL)));
    double *buf = malloc(sizeof(double) * (size_t)blk), *prod = malloc(sizeof(double) * (size_t)blk);
    int seq = opts->method == PISO_SCALE_PISO_SEQ && c.ng > 1;
    int need_u = p->G || ((opts->method == PISO_SCALE_PISO || opts->method == PISO_SCALE_PISO_SEQ) && (seq || c.ng == 1));
    if (need_u) c.U = malloc(sizeof(double) * (size_t)(N * D));
    if (seq) c.HW = malloc(sizeof(double) * (size_t)(N * D));
    if (!panel || !buf || !prod || (need_u && !c.U) || (seq && !c.HW)) {
        free(panel), free(buf), free(prod), free(c.U), free(c.HW), free(c.hdiag), free(c.order);
        piso_layer_result_free(r);
        return piso_errorf("quantize layer: out of memory for the fp64 products (D = %lld)", (long long)D);
    }
    double *Xd = gram_factor_d(p); /* H = X̃ᵀX̃ with few tokens: H's products through X̃ */
    if (need_u && !p->G && Xd) rows_times_gram(p->W, N, D, Xd, p->T, c.U, buf, prod);
    else if (need_u) rows_times(p->W, N, D, p->G ? p->G : p->H, 1, c.U, buf, panel); /* u = G·w: row of W·Gᵀ */
    if (seq && Xd) rows_times_gram(p->W, N, D, Xd, p->T, c.HW, buf, prod);
    else if (seq) rows_times(p->W, N, D, p->H, 0, c.HW, buf, panel); /* H symmetric: H·w = row of W·H */

    if (c.ng == 1 && !opts->acc && !opts->asym && !opts->scale_fp16 &&
        (opts->method == PISO_SCALE_PISO || opts->method == PISO_SCALE_PISO_SEQ)) {
        /* channel-wise: all rows share H, solved together (pruned exact sweep) */
        c.pre = malloc(sizeof(float) * (size_t)N);
        /* the bound needs H·w in fp64: u itself unless G ≠ H */
        double *hw = p->G ? malloc(sizeof(double) * (size_t)(N * D)) : c.U;
        if (hw && p->G && Xd) rows_times_gram(p->W, N, D, Xd, p->T, hw, buf, prod);
        else if (hw && p->G) rows_times(p->W, N, D, p->H, 0, hw, buf, panel);
        int bad = !c.pre || !hw ||
                  piso_solve_scales_rows_x(p->W, D, N, (int)D, p->X, p->T, D, p->H, (int)D, c.U, D, hw, D, &opts->grid,
                                           opts->allow_negative, c.pre, 1, NULL);
        if (hw != c.U) free(hw);
        if (bad) {
            if (!c.pre || !hw) piso_errorf("quantize layer: out of memory for the channel scales (N = %lld, D = %lld)",
                                           (long long)N, (long long)D);
            free(c.pre), free(panel), free(buf), free(prod), free(c.U), free(c.HW), free(c.hdiag), free(c.order), free(Xd);
            piso_layer_result_free(r);
            return -1; /* piso_solve_scales_rows said why */
        }
    }
    struct piso_progress prog;
    piso_progress_begin(&prog, piso_scale_method_name(opts->method), "rows", N);
    int64_t done = 0;
    int failed = 0; /* set by any thread that ran out of memory; the others stop taking blocks */
    int64_t bs = seq ? SEQ_BLOCK : 1, nblk = (N + bs - 1) / bs; /* blocks only help piso-seq */
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t bi = 0; bi < nblk; bi++) {
        int64_t r0 = bi * bs, r1 = r0 + bs < N ? r0 + bs : N;
        int f;
#pragma omp atomic read
        f = failed;
        if (f) continue;
        if (quantize_block(&c, r0, r1, r)) {
#pragma omp atomic write
            failed = 1;
            continue;
        }
        int64_t d;
#pragma omp atomic capture
        d = done += r1 - r0;
#ifdef _OPENMP
        if (omp_get_thread_num() == 0)
#endif
            if (d < N) piso_progress_update(&prog, d);
    }
    free(c.pre);
    if (failed) {
        free(panel), free(buf), free(prod), free(c.U), free(c.HW), free(c.hdiag), free(c.order), free(Xd);
        piso_layer_result_free(r);
        return piso_errorf("quantize layer: out of memory for the per-row scratch (N = %lld, D = %lld)",
                           (long long)N, (long long)D);
    }
    piso_progress_update(&prog, N);
    if (opts->no_objective)
        for (int64_t row = 0; row < N; row++) r->row_objective[row] = NAN;
    else
        row_objectives(p, r->dequant, c.U, r->row_objective, buf, prod, panel, Xd);
    free(panel), free(buf), free(prod), free(c.U), free(c.HW), free(Xd);
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
    free(r->zeros);
    free(r->g_idx);
    memset(r, 0, sizeof *r);
}
