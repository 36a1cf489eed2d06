/* Layer problem files for `piso layer`: weight + hessian (+ cross), or weight + inputs
 * (+ inputs_float) from which H = X̃ᵀX̃ and G = X̃ᵀX are built; validated on load. */
#include "piso/linalg.h"
#include "piso/quant.h"
#include "piso/safetensors.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* PSD test: Cholesky of H + PSD_JITTER·max(diag H)·I. Wide enough for the rounding noise of a
 * fp32-accumulated XᵀX (its smallest eigenvalues may come out slightly negative), far too small
 * to hide a genuinely indefinite matrix. */
#define PSD_JITTER 1e-4
/* Symmetry: |H_ij − H_ji| <= SYM_TOL·sqrt(H_ii·H_jj) (+ the same relative to max diag). */
#define SYM_TOL 1e-4

int piso_check_hessian(const float *H, int64_t D, const char *what) {
    double dmax = 0;
    for (int64_t i = 0; i < D; i++) {
        double d = H[i * D + i];
        if (!isfinite(d)) return piso_errorf("%s: non-finite diagonal entry [%lld, %lld]", what, (long long)i, (long long)i);
        if (d < 0)
            return piso_errorf("%s: negative diagonal entry [%lld, %lld] = %g (a Hessian X^T X is PSD)",
                               what, (long long)i, (long long)i, d);
        if (d > dmax) dmax = d;
    }
    for (int64_t i = 0; i < D; i++)
        for (int64_t j = i + 1; j < D; j++) {
            double x = H[i * D + j], y = H[j * D + i];
            double tol = SYM_TOL * (sqrt((double)H[i * D + i] * H[j * D + j]) + 1e-3 * dmax);
            if (!(fabs(x - y) <= tol))
                return piso_errorf("%s: not symmetric: [%lld, %lld] = %g but [%lld, %lld] = %g", what,
                                   (long long)i, (long long)j, x, (long long)j, (long long)i, y);
        }
    double *A = malloc(sizeof(double) * (size_t)(D * D));
    if (!A) return piso_errorf("%s: out of memory for the PSD check (D = %lld)", what, (long long)D);
    double jitter = dmax > 0 ? PSD_JITTER * dmax : 1.0;
    for (int64_t i = 0; i < D; i++)
        for (int64_t j = 0; j < D; j++)
            A[i * D + j] = 0.5 * ((double)H[i * D + j] + H[j * D + i]) + (i == j ? jitter : 0.0);
    int64_t info = piso_la_cholesky_upper(A, D);
    free(A);
    if (info > 0)
        return piso_errorf("%s: not positive semidefinite (Cholesky of H + %g*max(diag)*I fails at "
                           "column %d)", what, PSD_JITTER, (int)info - 1);
    return 0;
}

/* Loads a 2-D float tensor and checks its shape (rows < 0: any number of rows). */
static float *load_2d(const struct piso_st_file *f, const char *name, int64_t rows, int64_t cols,
                      int64_t *rows_out) {
    const struct piso_st_tensor *t = piso_st_find(f, name);
    if (t && t->ndim != 2) {
        piso_errorf("%s: tensor '%s' has %d dims, expected 2", f->map.path, name, t->ndim);
        return NULL;
    }
    if (t && ((rows >= 0 && t->shape[0] != rows) || t->shape[1] != cols)) {
        char want[64];
        if (rows >= 0) snprintf(want, sizeof want, "[%lld, %lld]", (long long)rows, (long long)cols);
        else snprintf(want, sizeof want, "[T, %lld]", (long long)cols);
        const char *why = (t->shape[1] == cols && rows >= 0 && rows != cols) ? "T = the rows of 'inputs'"
                                                                               : "D = the columns of 'weight'";
        piso_errorf("%s: tensor '%s' has shape [%lld, %lld], expected %s (%s)", f->map.path, name,
                    (long long)t->shape[0], (long long)t->shape[1], want, why);
        return NULL;
    }
    if (t && t->numel == 0) {
        piso_errorf("%s: tensor '%s' is empty", f->map.path, name);
        return NULL;
    }
    int64_t shape[2] = {0, 0};
    float *x = piso_st_load_f32(f, name, 2, shape);
    if (x && rows_out) *rows_out = shape[0];
    return x;
}

/* H = X̃ᵀX̃ and G = X̃ᵀX (X may be NULL: no G) for X̃, X [T, D]; fp64 BLAS when it fits. */
static void build_from_inputs(const float *Xt, const float *X, int64_t T, int64_t D, float *H, float *G) {
    if (T * D <= ((int64_t)1 << 26)) {
        double *A = malloc(sizeof(double) * (size_t)(T * D));
        double *C = malloc(sizeof(double) * (size_t)(D * D));
        for (int64_t k = 0; k < T * D; k++) A[k] = Xt[k];
        piso_la_dsyrk_t(D, T, 1.0, A, D, 0.0, C, D);
        for (int64_t k = 0; k < D * D; k++) H[k] = (float)C[k];
        if (X) {
            double *B = malloc(sizeof(double) * (size_t)(T * D));
            for (int64_t k = 0; k < T * D; k++) B[k] = X[k];
            piso_la_dgemm(1, 0, D, D, T, 1.0, A, D, B, D, 0.0, C, D);
            for (int64_t k = 0; k < D * D; k++) G[k] = (float)C[k];
            free(B);
        }
        free(A);
        free(C);
    } else {
        piso_la_ssyrk_t(D, T, 1.0f, Xt, D, 0.0f, H, D);
        if (X) piso_la_sgemm(1, 0, D, D, T, 1.0f, Xt, D, X, D, 0.0f, G, D);
    }
}

int piso_problem_load(const char *path, struct piso_problem *p) {
    memset(p, 0, sizeof *p);
    struct piso_st_file f;
    if (piso_st_open(&f, path) != 0) return -1;
    float *Xt = NULL, *X = NULL;
    int64_t shape[2] = {0, 0};
    const struct piso_st_tensor *tw = piso_st_find(&f, "weight");
    if (!tw) {
        piso_errorf("%s: no tensor named 'weight' (expected F32 [N, D])", path);
        goto fail;
    }
    if (tw->ndim != 2 || tw->numel == 0) {
        piso_errorf("%s: tensor 'weight' must be a non-empty [N, D] matrix (has %d dims, %lld values)",
                    path, tw->ndim, (long long)tw->numel);
        goto fail;
    }
    if (!(p->W = piso_st_load_f32(&f, "weight", 2, shape))) goto fail;
    p->N = shape[0];
    p->D = shape[1];
    int64_t D = p->D;
    int has_h = piso_st_find(&f, "hessian") != NULL, has_x = piso_st_find(&f, "inputs") != NULL;
    if (has_h == has_x) {
        piso_errorf("%s: needs exactly one of 'hessian' [D, D] or 'inputs' [T, D] (found %s)", path,
                    has_h ? "both" : "neither");
        goto fail;
    }
    if (has_h) {
        if (!(p->H = load_2d(&f, "hessian", D, D, NULL))) goto fail;
        if (piso_st_find(&f, "cross") && !(p->G = load_2d(&f, "cross", D, D, NULL))) goto fail;
        if (piso_st_find(&f, "inputs_float")) {
            piso_errorf("%s: 'inputs_float' given with 'hessian' (use 'cross' for G)", path);
            goto fail;
        }
    } else {
        int64_t T = 0, T2 = 0;
        if (!(Xt = load_2d(&f, "inputs", -1, D, &T))) goto fail;
        if (piso_st_find(&f, "inputs_float")) {
            if (!(X = load_2d(&f, "inputs_float", T, D, &T2))) goto fail;
        }
        if (piso_st_find(&f, "cross")) {
            piso_errorf("%s: 'cross' given with 'inputs' (use 'inputs_float' for X)", path);
            goto fail;
        }
        p->H = malloc(sizeof(float) * (size_t)(D * D));
        if (X) p->G = malloc(sizeof(float) * (size_t)(D * D));
        if (!p->H || (X && !p->G)) {
            piso_errorf("%s: out of memory for H [%lld, %lld]", path, (long long)D, (long long)D);
            goto fail;
        }
        build_from_inputs(Xt, X, T, D, p->H, p->G);
    }
    char what[1100];
    snprintf(what, sizeof what, "%s: tensor '%s'", path, has_h ? "hessian" : "inputs (H = X^T X)");
    if (piso_check_hessian(p->H, D, what) != 0) goto fail;
    /* symmetrize exactly: the sweep reads rows of H as columns */
    for (int64_t i = 0; i < D; i++)
        for (int64_t j = i + 1; j < D; j++) {
            float m = 0.5f * (p->H[i * D + j] + p->H[j * D + i]);
            p->H[i * D + j] = p->H[j * D + i] = m;
        }
    free(Xt);
    free(X);
    piso_st_close(&f);
    return 0;
fail:
    free(Xt);
    free(X);
    piso_st_close(&f);
    piso_problem_free(p);
    return -1;
}

void piso_problem_free(struct piso_problem *p) {
    if (!p) return;
    free(p->W);
    free(p->H);
    free(p->G);
    memset(p, 0, sizeof *p);
}
