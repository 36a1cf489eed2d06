/* GPTQ (algorithms.md §3) with the scale methods of quant.h, interleaving PiSO per layer or per
 * group (§2.9), plus the machinery shared with Qronos: column order, lazy-batch sweep, result. */
#include "piso/solve.h"
#include "quant/ec_internal.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- names ---------------------------------------------------------------------------------- */
static const char *const rounding_names[] = {"rtn", "gptq", "qronos"};
static const char *const interleave_names[] = {"none", "layer", "group"};

int piso_rounding_from_name(const char *name, enum piso_rounding *out) {
    for (int i = 0; i < 3; i++)
        if (!strcmp(name, rounding_names[i])) return *out = (enum piso_rounding)i, 0;
    return -1;
}
const char *piso_rounding_name(enum piso_rounding r) { return (unsigned)r < 3 ? rounding_names[r] : "?"; }
int piso_interleave_from_name(const char *name, enum piso_interleave *out) {
    for (int i = 0; i < 3; i++)
        if (!strcmp(name, interleave_names[i])) return *out = (enum piso_interleave)i, 0;
    return -1;
}
const char *piso_interleave_name(enum piso_interleave i) {
    return (unsigned)i < 3 ? interleave_names[i] : "?";
}

void piso_ec_opts_default(struct piso_ec_opts *o) {
    memset(o, 0, sizeof *o);
    o->q.method = PISO_SCALE_ABSMAX;
    o->q.allow_negative = 1;
    o->interleave = PISO_INTERLEAVE_LAYER;
    o->damp = -1;
    o->block_size = 128;
}

/* ---- deterministic BLAS ------------------------------------------------------------------------ */
#define EC_COL_BLOCK 256
void ec_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
              int ldb, float beta, float *C, int ldc) {
    int nb = (N + EC_COL_BLOCK - 1) / EC_COL_BLOCK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int b = 0; b < nb; b++) {
        int j0 = b * EC_COL_BLOCK, n = N - j0 < EC_COL_BLOCK ? N - j0 : EC_COL_BLOCK;
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, M, n, K,
                    alpha, A, lda, transB ? B + (size_t)j0 * ldb : B + j0, ldb, beta, C + j0, ldc);
    }
}
void ec_dgemm(int transA, int transB, int M, int N, int K, double alpha, const double *A, int lda, const double *B,
              int ldb, double beta, double *C, int ldc) {
    int nb = (N + EC_COL_BLOCK - 1) / EC_COL_BLOCK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int b = 0; b < nb; b++) {
        int j0 = b * EC_COL_BLOCK, n = N - j0 < EC_COL_BLOCK ? N - j0 : EC_COL_BLOCK;
        cblas_dgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, M, n, K,
                    alpha, A, lda, transB ? B + (size_t)j0 * ldb : B + j0, ldb, beta, C + j0, ldc);
    }
}

/* ---- objective ------------------------------------------------------------------------------ */
double piso_layer_objective(int64_t N, int64_t D, const float *W, const float *Wq, const float *H,
                            const float *G, double *row_obj) {
    /* With G: ŵᵀHŵ − 2ŵᵀ(Gw); else dᵀHd with d = w − ŵ. Products in fp32 GEMMs, dots in fp64. */
    float *A = malloc(sizeof(float) * N * D), *T = malloc(sizeof(float) * N * D);
    float *P = G ? malloc(sizeof(float) * N * D) : NULL;
    if (!A || !T || (G && !P)) {
        free(A), free(T), free(P);
        return NAN;
    }
    for (int64_t i = 0; i < N * D; i++) A[i] = G ? Wq[i] : W[i] - Wq[i];
    /* T = A·H (H symmetric) */
    ec_sgemm(0, 0, (int)N, (int)D, (int)D, 1.0f, A, (int)D, H,
                (int)D, 0.0f, T, (int)D);
    if (G) /* P = W·Gᵀ: P[r, j] = (G w_r)_j */
        ec_sgemm(0, 1, (int)N, (int)D, (int)D, 1.0f, W, (int)D, G,
                    (int)D, 0.0f, P, (int)D);
    double total = 0;
    for (int64_t r = 0; r < N; r++) {
        double s = 0;
        for (int64_t j = 0; j < D; j++) {
            double a = A[r * D + j];
            s += a * T[r * D + j];
            if (G) s -= 2.0 * a * P[r * D + j];
        }
        if (row_obj) row_obj[r] = s;
        total += s;
    }
    free(A), free(T), free(P);
    return total;
}

/* ---- RTN with a ragged last group ------------------------------------------------------------ */
static int result_alloc(struct piso_layer_result *r, int64_t N, int64_t D, int64_t ng) {
    memset(r, 0, sizeof *r);
    r->N = N, r->D = D, r->n_groups = ng;
    r->scales = malloc(sizeof(float) * N * ng);
    r->dequant = malloc(sizeof(float) * N * D);
    r->codes = malloc(sizeof(int16_t) * N * D);
    r->row_objective = calloc((size_t)N, sizeof(double));
    if (!r->scales || !r->dequant || !r->codes || !r->row_objective) {
        piso_layer_result_free(r);
        return piso_errorf("out of memory for a [%lld, %lld] layer result", (long long)N, (long long)D);
    }
    return 0;
}

static float *sub_block(const float *A, int64_t ld, int64_t r0, int64_t nr, int64_t c0, int64_t nc) {
    float *B = malloc(sizeof(float) * nr * nc);
    if (!B) return NULL;
    for (int64_t i = 0; i < nr; i++) memcpy(B + i * nc, A + (r0 + i) * ld + c0, sizeof(float) * nc);
    return B;
}

int piso_rtn_layer(const struct piso_layer_problem *p, const struct piso_quant_opts *opts,
                   struct piso_layer_result *r) {
    int64_t N = p->N, D = p->D, g = opts->group;
    if (g <= 0 || D % g == 0 || g > D) {
        struct piso_quant_opts o = *opts;
        if (g > D) o.group = 0;
        return piso_quantize_layer(p, &o, r);
    }
    int64_t D1 = D - D % g, D2 = D % g, n1 = D1 / g;
    struct piso_layer_result r1, r2;
    memset(&r1, 0, sizeof r1), memset(&r2, 0, sizeof r2);
    int rc = -1;
    float *W1 = sub_block(p->W, D, 0, N, 0, D1), *W2 = sub_block(p->W, D, 0, N, D1, D2);
    float *H1 = p->H ? sub_block(p->H, D, 0, D1, 0, D1) : NULL, *H2 = p->H ? sub_block(p->H, D, D1, D2, D1, D2) : NULL;
    float *G1 = p->G ? sub_block(p->G, D, 0, D1, 0, D1) : NULL, *G2 = p->G ? sub_block(p->G, D, D1, D2, D1, D2) : NULL;
    if (!W1 || !W2 || (p->H && (!H1 || !H2)) || (p->G && (!G1 || !G2))) {
        piso_errorf("out of memory splitting a ragged group");
        goto done;
    }
    struct piso_layer_problem p1 = {N, D1, W1, H1, G1}, p2 = {N, D2, W2, H2, G2};
    struct piso_quant_opts o2 = *opts;
    o2.group = (int)D2;
    if (piso_quantize_layer(&p1, opts, &r1) || piso_quantize_layer(&p2, &o2, &r2)) goto done;
    if (result_alloc(r, N, D, n1 + 1)) goto done;
    for (int64_t i = 0; i < N; i++) {
        memcpy(r->scales + i * (n1 + 1), r1.scales + i * n1, sizeof(float) * n1);
        r->scales[i * (n1 + 1) + n1] = r2.scales[i];
        memcpy(r->dequant + i * D, r1.dequant + i * D1, sizeof(float) * D1);
        memcpy(r->dequant + i * D + D1, r2.dequant + i * D2, sizeof(float) * D2);
        memcpy(r->codes + i * D, r1.codes + i * D1, sizeof(int16_t) * D1);
        memcpy(r->codes + i * D + D1, r2.codes + i * D2, sizeof(int16_t) * D2);
    }
    r->constant_dropped = p->G != NULL;
    if (p->H) r->objective = piso_layer_objective(N, D, p->W, r->dequant, p->H, p->G, r->row_objective);
    else { /* data-free: H = I */
        double tot = 0;
        for (int64_t i = 0; i < N; i++) {
            double s = 0;
            for (int64_t j = 0; j < D; j++) {
                double d = (double)p->W[i * D + j] - r->dequant[i * D + j];
                s += d * d;
            }
            r->row_objective[i] = s, tot += s;
        }
        r->objective = tot;
    }
    rc = 0;
done:
    piso_layer_result_free(&r1), piso_layer_result_free(&r2);
    free(W1), free(W2), free(H1), free(H2), free(G1), free(G2);
    return rc;
}

/* ---- setup ---------------------------------------------------------------------------------- */
struct key_idx {
    double key;
    int idx;
};
static int by_key_desc(const void *a, const void *b) {
    const struct key_idx *x = a, *y = b;
    if (x->key != y->key) return x->key > y->key ? -1 : 1;
    return x->idx - y->idx; /* stable: ties keep the original order */
}

void ec_free(struct ec_work *w) {
    free(w->perm), free(w->col_group), free(w->grp_start), free(w->grp_len), free(w->grp_id);
    free(w->Wo), free(w->Wc), free(w->Hp);
    if (w->Gp != w->Hp) free(w->Gp);
    free(w->S), free(w->codes), free(w->row_loss), free(w->GmH), free(w->dW);
    memset(w, 0, sizeof *w);
}

static void permute_square(const float *A, int64_t D, const int *perm, float *out) {
    for (int64_t a = 0; a < D; a++)
        for (int64_t b = 0; b < D; b++) out[a * D + b] = A[(int64_t)perm[a] * D + perm[b]];
}

int ec_setup(struct ec_work *w, const struct piso_ec_problem *p, const struct piso_ec_opts *o) {
    memset(w, 0, sizeof *w);
    int64_t N = p->N, D = p->D;
    if (N <= 0 || D <= 0 || !p->W || !p->H) return piso_errorf("error correction: empty layer problem");
    w->N = N, w->D = D, w->opts = *o;
    w->group = (o->q.group > 0 && o->q.group < D) ? o->q.group : (int)D;
    w->n_groups = (int)((D + w->group - 1) / w->group);
    int ng = w->n_groups;
    w->perm = malloc(sizeof(int) * D), w->col_group = malloc(sizeof(int) * D);
    w->grp_start = malloc(sizeof(int) * ng), w->grp_len = malloc(sizeof(int) * ng), w->grp_id = malloc(sizeof(int) * ng);
    w->Wo = malloc(sizeof(float) * N * D), w->Wc = malloc(sizeof(float) * N * D);
    w->Hp = malloc(sizeof(float) * D * D);
    w->Gp = p->G ? malloc(sizeof(float) * D * D) : w->Hp;
    w->S = malloc(sizeof(float) * N * ng), w->codes = malloc(sizeof(int16_t) * N * D);
    w->row_loss = calloc((size_t)N, sizeof(double));
    struct key_idx *k = malloc(sizeof *k * (size_t)(D > ng ? D : ng));
    if (!w->perm || !w->col_group || !w->grp_start || !w->grp_len || !w->grp_id || !w->Wo || !w->Wc ||
        !w->Hp || !w->Gp || !w->S || !w->codes || !w->row_loss || !k) {
        free(k), ec_free(w);
        return piso_errorf("out of memory for error correction of a [%lld, %lld] layer", (long long)N, (long long)D);
    }
    /* Column order: groups by Σ diag(H) descending, columns inside a group by diag(H) descending
     * (act order); identity otherwise. */
    int gs = w->group;
    for (int gi = 0; gi < ng; gi++) {
        double s = 0;
        for (int c = gi * gs; c < gi * gs + gs && c < D; c++) s += p->H[(int64_t)c * D + c];
        k[gi].key = o->act_order ? s : 0, k[gi].idx = gi;
    }
    qsort(k, (size_t)ng, sizeof *k, by_key_desc);
    int pos = 0;
    struct key_idx *kc = malloc(sizeof *kc * (size_t)gs);
    if (!kc) {
        free(k), ec_free(w);
        return piso_errorf("out of memory");
    }
    for (int t = 0; t < ng; t++) {
        int gi = k[t].idx, c0 = gi * gs, len = (int)((c0 + gs <= D) ? gs : D - c0);
        w->grp_start[t] = pos, w->grp_len[t] = len, w->grp_id[t] = gi;
        for (int j = 0; j < len; j++)
            kc[j].key = o->act_order ? p->H[(int64_t)(c0 + j) * D + c0 + j] : 0, kc[j].idx = c0 + j;
        qsort(kc, (size_t)len, sizeof *kc, by_key_desc);
        for (int j = 0; j < len; j++) w->perm[pos] = kc[j].idx, w->col_group[pos] = gi, pos++;
    }
    free(kc), free(k);

    permute_square(p->H, D, w->perm, w->Hp);
    if (p->G) permute_square(p->G, D, w->perm, w->Gp);
    for (int64_t a = 0; a < D; a++)
        if (!(w->Hp[a * D + a] > 0)) w->dead++;
    for (int64_t r = 0; r < N; r++)
        for (int64_t a = 0; a < D; a++) {
            float v = p->W[r * D + w->perm[a]];
            if (!(w->Hp[a * D + a] > 0)) v = 0; /* dead input: the weight can do nothing useful */
            w->Wo[r * D + a] = v;
        }
    memcpy(w->Wc, w->Wo, sizeof(float) * N * D);

    enum piso_scale_method m = o->q.method;
    int data_free = m == PISO_SCALE_ABSMAX || m == PISO_SCALE_MSE_GRID || m == PISO_SCALE_PISO_DATAFREE;
    if (o->interleave != PISO_INTERLEAVE_GROUP && data_free) {
        /* Data-free scales on the original weights need no statistics: solve them directly. */
        for (int k = 0; k < ng; k++) ec_group_scales(w, k);
    } else if (o->interleave != PISO_INTERLEAVE_GROUP) {
        /* Scales fixed before error correction, on the original weights (dead columns zeroed). */
        float *Wz = malloc(sizeof(float) * N * D);
        if (!Wz) return ec_free(w), piso_errorf("out of memory");
        for (int64_t r = 0; r < N; r++)
            for (int64_t a = 0; a < D; a++) Wz[r * D + w->perm[a]] = w->Wo[r * D + a];
        struct piso_layer_problem lp = {N, D, Wz, p->H, p->G};
        if (o->interleave == PISO_INTERLEAVE_NONE && p->H_scale) lp.H = p->H_scale, lp.G = NULL;
        struct piso_quant_opts qo = o->q;
        qo.group = w->group >= D ? 0 : w->group;
        struct piso_layer_result rr;
        int rc = piso_rtn_layer(&lp, &qo, &rr);
        free(Wz);
        if (rc) return ec_free(w), -1;
        memcpy(w->S, rr.scales, sizeof(float) * N * ng);
        piso_layer_result_free(&rr);
    }
    return 0;
}

/* ---- per-group scales on the current weights ----------------------------------------------- */
void ec_group_scales(struct ec_work *w, int k) {
    int64_t N = w->N, D = w->D;
    int c0 = w->grp_start[k], L = w->grp_len[k], gid = w->grp_id[k];
    enum piso_scale_method m = w->opts.q.method;
    const struct piso_grid *grid = &w->opts.q.grid;
    int an = w->opts.q.allow_negative;
    int need_u = m == PISO_SCALE_PISO || m == PISO_SCALE_PISO_SEQ || m == PISO_SCALE_PISO_DIAG;
    float *U = NULL;
    if (need_u) {
        /* u_g = (G w_orig)_g − H_{g,:} v + H_{g,g} v_g for all rows at once [N, L], written as
         * (G − H)_{g,:} w_orig + H_{g,:} (w_orig − v) + H_{g,g} v_g so that the GEMMs multiply
         * small operands instead of subtracting two large products in fp32. */
        U = malloc(sizeof(float) * N * L);
        if (!w->dW) w->dW = malloc(sizeof(float) * N * D);
        if (w->Gp != w->Hp && !w->GmH && (w->GmH = malloc(sizeof(float) * D * D)))
            for (int64_t i = 0; i < D * D; i++) w->GmH[i] = w->Gp[i] - w->Hp[i];
        if (!U || !w->dW || (w->Gp != w->Hp && !w->GmH)) {
            free(U), U = NULL;
            need_u = 0, m = PISO_SCALE_ABSMAX; /* degrade rather than fail mid-sweep */
        } else {
            for (int64_t i = 0; i < N * D; i++) w->dW[i] = w->Wo[i] - w->Wc[i];
            ec_sgemm(0, 1, (int)N, L, (int)D, 1.0f, w->dW, (int)D, w->Hp + (int64_t)c0 * D, (int)D, 0.0f, U, L);
            if (w->GmH)
                ec_sgemm(0, 1, (int)N, L, (int)D, 1.0f, w->Wo, (int)D, w->GmH + (int64_t)c0 * D, (int)D, 1.0f, U, L);
        }
    }
#pragma omp parallel for schedule(dynamic, 8)
    for (int64_t r = 0; r < N; r++) {
        const float *v = w->Wc + r * D + c0;
        double *ud = NULL;
        float hd_local[256];
        float *hd = NULL;
        float s;
        if (need_u) {
            ud = malloc(sizeof(double) * L);
            for (int i = 0; i < L; i++) {
                double acc = U[r * L + i];
                const float *h = w->Hp + (int64_t)(c0 + i) * D + c0;
                for (int j = 0; j < L; j++) acc += (double)h[j] * v[j];
                ud[i] = acc;
            }
        }
        switch (m) {
        case PISO_SCALE_MSE_GRID: s = piso_scale_mse_grid(v, L, grid); break;
        case PISO_SCALE_PISO_DATAFREE: s = piso_solve_scale_diag(v, L, NULL, NULL, grid, an, NULL); break;
        case PISO_SCALE_PISO_DIAG:
            hd = L <= 256 ? hd_local : malloc(sizeof(float) * L);
            for (int i = 0; i < L; i++) hd[i] = w->Hp[(int64_t)(c0 + i) * D + c0 + i];
            s = piso_solve_scale_diag(v, L, hd, ud, grid, an, NULL);
            if (hd != hd_local) free(hd);
            break;
        case PISO_SCALE_PISO:
        case PISO_SCALE_PISO_SEQ:
            s = piso_solve_scale_dense(v, L, w->Hp + (int64_t)c0 * D + c0, (int)D, ud, grid, an, NULL);
            break;
        default: s = piso_scale_absmax(v, L, grid); break;
        }
        free(ud);
        w->S[r * w->n_groups + gid] = s;
    }
    free(U);
}

float ec_quantize(struct ec_work *w, int64_t r, int pos) {
    float s = w->S[r * w->n_groups + w->col_group[pos]];
    int idx = 0;
    float gv = piso_grid_round(&w->opts.q.grid, w->Wc[r * w->D + pos] / s, &idx);
    w->codes[r * w->D + pos] = (int16_t)(w->opts.q.grid.is_int ? (int)lrintf(gv) : idx);
    return s * gv;
}

/* ---- the sweep ------------------------------------------------------------------------------ */
int ec_sweep(struct ec_work *w, const double *R, int first) {
    int64_t N = w->N, D = w->D, Dr = D - first;
    if (Dr <= 0) return 0;
    int B = w->opts.block_size > 0 ? w->opts.block_size : 128;
    float *Rf = malloc(sizeof(float) * Dr * Dr), *E = malloc(sizeof(float) * N * B);
    if (!Rf || !E) {
        free(Rf), free(E);
        return piso_errorf("out of memory for the GPTQ sweep");
    }
    for (int64_t i = 0; i < Dr * Dr; i++) Rf[i] = (float)R[i];
    int per_group = w->opts.interleave == PISO_INTERLEAVE_GROUP;
    /* Block boundaries at every group start (so trailing updates are complete when a group's
     * scale is solved), at most B wide. */
    for (int k = 0; k < w->n_groups; k++) {
        int gs = w->grp_start[k], ge = gs + w->grp_len[k];
        if (ge <= first) continue;
        if (per_group && gs >= first) ec_group_scales(w, k);
        for (int i1 = gs > first ? gs : first; i1 < ge; i1 += B) {
            int i2 = i1 + B < ge ? i1 + B : ge, bl = i2 - i1;
#pragma omp parallel for schedule(static)
            for (int64_t r = 0; r < N; r++) {
                float *wr = w->Wc + r * D;
                double loss = 0;
                for (int i = i1; i < i2; i++) {
                    const float *Ri = Rf + (int64_t)(i - first) * Dr - first;
                    float q = ec_quantize(w, r, i);
                    float e = (wr[i] - q) / Ri[i];
                    loss += (double)e * e;
                    wr[i] = q;
                    for (int j = i + 1; j < i2; j++) wr[j] -= e * Ri[j];
                    E[r * B + (i - i1)] = e;
                }
                w->row_loss[r] += loss;
            }
            if (i2 < D) /* W[:, i2:] -= E_block · R[i1:i2, i2:] */
                ec_sgemm(0, 0, (int)N, (int)(D - i2), bl, -1.0f, E, B,
                            Rf + (int64_t)(i1 - first) * Dr + (i2 - first), (int)Dr, 1.0f, w->Wc + i2, (int)D);
        }
    }
    free(Rf), free(E);
    return 0;
}

/* LAPACK with OpenBLAS pinned to one thread: its threaded kernels change results with the thread
 * count. */
static int chol_inverse_upper_1t(double *A, int n, double *inv, double *R);
int ec_chol_inverse_upper(double *A, int n, double *inv, double *R) {
    int saved = openblas_get_num_threads();
    openblas_set_num_threads(1);
    int rc = chol_inverse_upper_1t(A, n, inv, R);
    openblas_set_num_threads(saved);
    return rc;
}
static int chol_inverse_upper_1t(double *A, int n, double *inv, double *R) {
    if (LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', n, A, n) != 0) return -1;
    if (LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'L', n, A, n) != 0) return -1;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) A[(int64_t)i * n + j] = A[(int64_t)j * n + i];
    if (inv) memcpy(inv, A, sizeof(double) * n * n);
    if (LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', n, A, n) != 0) return -1;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++) A[(int64_t)i * n + j] = 0;
    memcpy(R, A, sizeof(double) * n * n);
    return 0;
}

int ec_finish(struct ec_work *w, const struct piso_ec_problem *p, struct piso_layer_result *r) {
    int64_t N = w->N, D = w->D;
    if (result_alloc(r, N, D, w->n_groups)) return -1;
    memcpy(r->scales, w->S, sizeof(float) * N * w->n_groups);
    for (int64_t i = 0; i < N; i++)
        for (int64_t a = 0; a < D; a++) {
            r->dequant[i * D + w->perm[a]] = w->Wc[i * D + a];
            r->codes[i * D + w->perm[a]] = w->codes[i * D + a];
        }
    r->constant_dropped = p->G != NULL;
    r->objective = piso_layer_objective(N, D, p->W, r->dequant, p->H, p->G, r->row_objective);
    return 0;
}

/* ---- GPTQ ----------------------------------------------------------------------------------- */
int piso_gptq_layer(const struct piso_ec_problem *p, const struct piso_ec_opts *o,
                    struct piso_layer_result *r, struct piso_ec_stats *st) {
    struct ec_work w;
    if (ec_setup(&w, p, o)) return -1;
    int64_t D = w.D;
    double *Hd = malloc(sizeof(double) * D * D), *R = malloc(sizeof(double) * D * D);
    int rc = -1;
    if (!Hd || !R) {
        piso_errorf("out of memory for GPTQ's [%lld, %lld] Hessian", (long long)D, (long long)D);
        goto done;
    }
    double mean = 0;
    for (int64_t a = 0; a < D; a++) mean += w.Hp[a * D + a] > 0 ? w.Hp[a * D + a] : 1.0;
    mean /= (double)D;
    double lambda = (o->damp >= 0 ? o->damp : 0.01) * mean;
    for (int attempt = 0;; attempt++) {
        for (int64_t i = 0; i < D * D; i++) Hd[i] = w.Hp[i];
        for (int64_t a = 0; a < D; a++) {
            if (!(Hd[a * D + a] > 0)) Hd[a * D + a] = 1.0; /* dead input */
            Hd[a * D + a] += lambda;
        }
        if (ec_chol_inverse_upper(Hd, (int)D, NULL, R) == 0) break;
        if (attempt >= 8) {
            piso_errorf("GPTQ: H + λI is not positive definite even with λ = %g", lambda);
            goto done;
        }
        lambda = lambda > 0 ? lambda * 10 : 1e-6 * mean;
    }
    if (ec_sweep(&w, R, 0) || ec_finish(&w, p, r)) goto done;
    if (st) {
        st->loss = 0;
        for (int64_t i = 0; i < w.N; i++) st->loss += w.row_loss[i];
        st->lambda = lambda, st->dead_columns = w.dead;
    }
    rc = 0;
done:
    free(Hd), free(R), ec_free(&w);
    return rc;
}
