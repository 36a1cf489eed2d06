/* GPTQ (algorithms.md §3) with the scale methods of quant.h, interleaving PiSO per layer or per
 * group (§2.9): a thin prologue over the engine (ec_engine.h) with the grid rounder; also the rounding
 * table, the layer objective and RTN with a ragged last group. */
#include "piso/solve.h"
#include "piso/linalg.h"
#include "quant/ec_engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- names ---------------------------------------------------------------------------------- */
/* The error-correcting roundings, one entry each (name → layer function; RTN has none here, the
 * pipeline runs it directly). A new rounder: its file, its enum value, one line here. */
static const struct {
    const char *name;
    piso_ec_layer_fn layer;
} rounding_table[PISO_ROUND_COUNT] = {
    [PISO_ROUND_RTN] = {"rtn", NULL},
    [PISO_ROUND_GPTQ] = {"gptq", piso_gptq_layer},
    [PISO_ROUND_QRONOS] = {"qronos", piso_qronos_layer},
    [PISO_ROUND_SR] = {"sr", piso_sr_layer},
    [PISO_ROUND_BEAM] = {"beam", piso_beam_layer},
    [PISO_ROUND_GPFQ] = {"gpfq", piso_gpfq_layer},
};
static const char *const interleave_names[] = {"none", "layer", "group"};

int piso_rounding_from_name(const char *name, enum piso_rounding *out) {
    for (int i = 0; i < PISO_ROUND_COUNT; i++)
        if (!strcmp(name, rounding_table[i].name)) return *out = (enum piso_rounding)i, 0;
    return -1;
}
const char *piso_rounding_name(enum piso_rounding r) {
    return (unsigned)r < PISO_ROUND_COUNT ? rounding_table[r].name : "?";
}
piso_ec_layer_fn piso_rounding_layer(enum piso_rounding r) {
    return (unsigned)r < PISO_ROUND_COUNT ? rounding_table[r].layer : NULL;
}
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
    o->alpha = PISO_ALPHA_DEFAULT;
    o->beam_k = 4;
    o->beam_b = 2;
}

int piso_ec_opts_check(const struct piso_ec_opts *o, enum piso_rounding r) {
    if (o->q.asym && r != PISO_ROUND_RTN && r != PISO_ROUND_GPTQ && r != PISO_ROUND_QRONOS)
        return piso_errorf("--asym: zero points are supported with --rounding rtn, gptq and qronos (not %s)",
                           piso_rounding_name(r));
    if (r == PISO_ROUND_SR || r == PISO_ROUND_BEAM || r == PISO_ROUND_GPFQ)
        if (!(o->alpha >= 0 && o->alpha <= 1))
            return piso_errorf("--alpha %g: must lie in [0, 1] (0 symmetric, 1 fully asymmetric)", o->alpha);
    if (r == PISO_ROUND_BEAM) {
        if (o->beam_k < 1) return piso_errorf("--beam %d: the beam width K must be at least 1", o->beam_k);
        if (o->beam_b < 2) return piso_errorf("--candidates %d: at least 2 grid values per column", o->beam_b);
    }
    return 0;
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
    /* Wide layers without G: aᵀHa = Σ_j a_j (2 (a·U)_j − H_jj a_j) with U H's upper triangle, one
     * triangular product at half a GEMM's work. Narrower: T = A·H (H symmetric), whose bits the
     * small models' objectives were computed with. */
    const int tri = !G && D >= 512;
    if (tri) {
        memcpy(T, A, sizeof(float) * N * D);
        piso_la_strmm_right_upper(H, D, D, T, N, D);
    } else
        piso_la_sgemm(0, 0, (int)N, (int)D, (int)D, 1.0f, A, (int)D, H, (int)D, 0.0f, T, (int)D);
    if (G) /* P = W·Gᵀ: P[r, j] = (G w_r)_j */
        piso_la_sgemm(0, 1, (int)N, (int)D, (int)D, 1.0f, W, (int)D, G,
                    (int)D, 0.0f, P, (int)D);
    double total = 0;
    for (int64_t r = 0; r < N; r++) {
        double s = 0;
        for (int64_t j = 0; j < D; j++) {
            double a = A[r * D + j];
            s += tri ? a * (2.0 * T[r * D + j] - (double)H[j * D + j] * a) : a * T[r * D + j];
            if (G) s -= 2.0 * a * P[r * D + j];
        }
        if (row_obj) row_obj[r] = s;
        total += s;
    }
    free(A), free(T), free(P);
    return total;
}

/* ---- RTN with a ragged last group ------------------------------------------------------------ */

static float *sub_block(const float *A, int64_t ld, int64_t r0, int64_t nr, int64_t c0, int64_t nc) {
    float *B = malloc(sizeof(float) * nr * nc);
    if (!B) return NULL;
    for (int64_t i = 0; i < nr; i++) memcpy(B + i * nc, A + (r0 + i) * ld + c0, sizeof(float) * nc);
    return B;
}

int piso_rtn_layer(const struct piso_layer_problem *p, const struct piso_quant_opts *opts,
                   struct piso_layer_result *r) {
    struct piso_quant_opts hw;
    if (opts->grid.block) {
        /* MX / NVFP4: blocks are the groups (a shorter last one is zero-padded); NVFP4's tensor
         * scale is chosen once for the whole tensor */
        hw = *opts;
        hw.group = opts->grid.block;
        if (opts->grid.scale_set == PISO_SSET_UE4M3 && opts->grid.scale_mult == 1.0f) {
            const int df = opts->method == PISO_SCALE_MSE_GRID || opts->method == PISO_SCALE_PISO_DATAFREE || !p->H;
            float *hd = df ? NULL : malloc(sizeof(float) * (size_t)p->D);
            if (!df && !hd) return piso_errorf("out of memory");
            for (int64_t i = 0; hd && i < p->D; i++) hd[i] = p->H[i * p->D + i] > 0 ? p->H[i * p->D + i] : 0;
            hw.grid.scale_mult = opts->method == PISO_SCALE_ABSMAX ? piso_grid_recipe_tensor_scale(p->W, p->N * p->D)
                                                                   : piso_nvfp4_tensor_scale(p->W, p->N, p->D, hd, &opts->grid);
            free(hd);
            if (isnan(hw.grid.scale_mult)) return piso_errorf("out of memory (NVFP4 tensor scale)");
        }
        opts = &hw;
    }
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
    struct piso_layer_problem p1 = {N, D1, W1, H1, G1, NULL, 0}, p2 = {N, D2, W2, H2, G2, NULL, 0};
    struct piso_quant_opts o2 = *opts;
    o2.group = (int)D2;
    if (piso_quantize_layer(&p1, opts, &r1) || piso_quantize_layer(&p2, &o2, &r2)) goto done;
    if (piso_ec_result_alloc(r, N, D, n1 + 1)) goto done;
    if (opts->asym && !(r->zeros = malloc(sizeof(int16_t) * N * (n1 + 1)))) {
        piso_layer_result_free(r);
        piso_errorf("out of memory");
        goto done;
    }
    for (int64_t i = 0; i < N; i++) {
        memcpy(r->scales + i * (n1 + 1), r1.scales + i * n1, sizeof(float) * n1);
        r->scales[i * (n1 + 1) + n1] = r2.scales[i];
        if (r->zeros) {
            memcpy(r->zeros + i * (n1 + 1), r1.zeros + i * n1, sizeof(int16_t) * n1);
            r->zeros[i * (n1 + 1) + n1] = r2.zeros[i];
        }
        memcpy(r->dequant + i * D, r1.dequant + i * D1, sizeof(float) * D1);
        memcpy(r->dequant + i * D + D1, r2.dequant + i * D2, sizeof(float) * D2);
        memcpy(r->codes + i * D, r1.codes + i * D1, sizeof(int16_t) * D1);
        memcpy(r->codes + i * D + D1, r2.codes + i * D2, sizeof(int16_t) * D2);
    }
    r->constant_dropped = p->G != NULL;
    r->tensor_scale = opts->grid.scale_set == PISO_SSET_UE4M3 ? opts->grid.scale_mult : 0;
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
    if (isnan(r->objective)) { /* out of memory for the objective's products */
        piso_layer_result_free(r);
        piso_errorf("out of memory for the objective of a [%lld, %lld] layer", (long long)N, (long long)D);
        goto done;
    }
    rc = 0;
done:
    piso_layer_result_free(&r1), piso_layer_result_free(&r2);
    free(W1), free(W2), free(H1), free(H2), free(G1), free(G2);
    return rc;
}

/* ---- GPTQ ----------------------------------------------------------------------------------- */
int piso_gptq_layer(const struct piso_ec_problem *p, const struct piso_ec_opts *o,
                    struct piso_layer_result *r, struct piso_ec_stats *st) {
    struct piso_ec_work w;
    if (piso_ec_setup(&w, p, o, 1)) return -1;
    int64_t D = w.D;
    double *R = malloc(sizeof(double) * D * D);
    int rc = -1;
    if (!R) {
        piso_errorf("out of memory for GPTQ's [%lld, %lld] Hessian", (long long)D, (long long)D);
        goto done;
    }
    const struct piso_la_damping damp = {PISO_LA_DAMP_MEAN_DIAG, o->damp >= 0 ? o->damp : 0.01, 8, 0};
    struct piso_la_damped dd;
    const struct piso_ec_rounder *rd = &piso_ec_grid_rounder;
    /* wide layers: the sweep on H + λI = M·Mᵀ, one Cholesky and no inverse; narrower ones keep the
     * inverse factor, whose bits the small models' results were computed with */
    const int ul = D >= PISO_EC_UL_MIN;
    if (ul ? piso_la_damped_ul_factor(w.Hp, D, D, &damp, "GPTQ", R, &dd)
           : piso_la_damped_inverse_factor(w.Hp, D, D, &damp, "GPTQ", R, NULL, &dd))
        goto done;
    if (rd->begin_layer(NULL, &w) || (ul ? piso_ec_sweep_ul(&w, R, 0, rd, NULL) : piso_ec_sweep(&w, R, 0, rd, NULL)) ||
        piso_ec_finish(&w, p, r))
        goto done;
    if (st) {
        st->loss = 0;
        for (int64_t i = 0; i < w.N; i++) st->loss += w.row_loss[i];
        st->lambda = dd.lambda, st->dead_columns = w.dead;
    }
    rc = 0;
done:
    free(R), piso_ec_free(&w);
    return rc;
}
