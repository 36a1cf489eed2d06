/* The error-correction engine (ec_engine.h): column order, the lazy-batch sweep parameterised by a
 * rounder, the result; and the grid rounder of GPTQ and Qronos. */
#include "quant/ec_engine.h"
#include "piso/linalg.h"
#include "quant/quant_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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

void piso_ec_free(struct piso_ec_work *w) {
    free(w->perm), free(w->col_group), free(w->grp_start), free(w->grp_len), free(w->grp_id);
    free(w->Wo), free(w->Wc), free(w->Hp);
    if (w->Gp != w->Hp) free(w->Gp);
    free(w->S), free(w->Z), free(w->codes), free(w->row_loss), free(w->GmH), free(w->dW);
    free(w->tile_of), free(w->tile_start), free(w->tile_pos), free(w->acc_sums), free(w->acc_theta);
    memset(w, 0, sizeof *w);
}

static void permute_square(const float *A, int64_t D, const int *perm, float *out) {
    for (int64_t a = 0; a < D; a++)
        for (int64_t b = 0; b < D; b++) out[a * D + b] = A[(int64_t)perm[a] * D + perm[b]];
}

/* The AXE state: tiles of the original columns, their positions, per-row code sums, and the soft
 * thresholds when the scales do not satisfy the limits by themselves (absmax, mse-grid; the PiSO
 * methods sweep only feasible scales). */
static int accum_setup(struct piso_ec_work *w) {
    int64_t N = w->N, D = w->D;
    int T;
    if (piso_accum_validate(w->opts.q.acc, D, w->group < D ? w->group : 0, &w->opts.q.grid, "(error correction)", &T)) {
        piso_ec_free(w);
        return -1;
    }
    w->acc = *w->opts.q.acc;
    w->acc.tile = T;
    w->opts.q.acc = &w->acc;
    w->n_tiles = (int)((D + T - 1) / T); /* the last one shorter with a shorter last group */
    enum piso_scale_method m = w->opts.q.method;
    int thresholded = !w->acc.no_threshold && (m == PISO_SCALE_ABSMAX || m == PISO_SCALE_MSE_GRID);
    w->tile_of = malloc(sizeof(int) * D), w->tile_pos = malloc(sizeof(int) * D);
    w->tile_start = calloc((size_t)w->n_tiles + 1, sizeof(int));
    w->acc_sums = calloc((size_t)(N * w->n_tiles * 2), sizeof(int64_t));
    if (thresholded) w->acc_theta = malloc(sizeof(double) * N * w->n_tiles);
    if (!w->tile_of || !w->tile_pos || !w->tile_start || !w->acc_sums || (thresholded && !w->acc_theta)) {
        piso_ec_free(w);
        return piso_errorf("out of memory for the accumulator limits of a [%lld, %lld] layer", (long long)N,
                           (long long)D);
    }
    for (int64_t a = 0; a < D; a++) w->tile_of[a] = w->perm[a] / T, w->tile_start[w->tile_of[a] + 1]++;
    for (int t = 0; t < w->n_tiles; t++) w->tile_start[t + 1] += w->tile_start[t];
    int *fill = w->tile_pos; /* positions in increasing order within each tile */
    for (int t = 0; t < w->n_tiles; t++)
        for (int64_t a = 0, k = w->tile_start[t]; a < D; a++)
            if (w->tile_of[a] == t) fill[k++] = (int)a;
    for (int64_t i = 0; thresholded && i < N * w->n_tiles; i++) w->acc_theta[i] = NAN;
    return 0;
}

int piso_ec_setup(struct piso_ec_work *w, const struct piso_ec_problem *p, const struct piso_ec_opts *o,
                  int zero_dead) {
    memset(w, 0, sizeof *w);
    int64_t N = p->N, D = p->D;
    if (N <= 0 || D <= 0 || !p->W || !p->H) return piso_errorf("error correction: empty layer problem");
    w->N = N, w->D = D, w->opts = *o, w->p = p;
    if (o->q.grid.block) {
        /* MX / NVFP4: the format's block is the group (a shorter last block is a zero-padded one) */
        if (o->q.group != 0 && o->q.group != o->q.grid.block)
            return piso_errorf("%s has blocks of %d (group %d given)", o->q.grid.name, o->q.grid.block, o->q.group);
        w->opts.q.group = o->q.grid.block;
        if (o->q.grid.scale_set == PISO_SSET_UE4M3 && o->q.grid.scale_mult == 1.0f) {
            /* NVFP4's tensor scale, once per layer from the original weights and diag(H) */
            float *hd = malloc(sizeof(float) * (size_t)D);
            if (!hd) return piso_errorf("out of memory");
            for (int64_t i = 0; i < D; i++) hd[i] = p->H[i * D + i] > 0 ? p->H[i * D + i] : 0;
            const int df = o->q.method == PISO_SCALE_ABSMAX || o->q.method == PISO_SCALE_MSE_GRID ||
                           o->q.method == PISO_SCALE_PISO_DATAFREE;
            w->opts.q.grid.scale_mult = o->q.method == PISO_SCALE_ABSMAX ? piso_grid_recipe_tensor_scale(p->W, N * D)
                                        : piso_nvfp4_tensor_scale(p->W, N, D, df ? NULL : hd, &o->q.grid);
            free(hd);
            if (isnan(w->opts.q.grid.scale_mult)) return piso_errorf("out of memory (NVFP4 tensor scale)");
        }
        o = &w->opts;
    }
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
    if (o->q.asym) w->Z = calloc((size_t)(N * ng), sizeof(int16_t));
    struct key_idx *k = malloc(sizeof *k * (size_t)(D > ng ? D : ng));
    if (!w->perm || !w->col_group || !w->grp_start || !w->grp_len || !w->grp_id || !w->Wo || !w->Wc ||
        !w->Hp || !w->Gp || !w->S || !w->codes || !w->row_loss || !k || (o->q.asym && !w->Z)) {
        free(k), piso_ec_free(w);
        return piso_errorf("out of memory for error correction of a [%lld, %lld] layer", (long long)N, (long long)D);
    }
    int gs = w->group;
    w->desc_act = o->act_order && o->desc_act_groups && ng > 1;
    if (w->desc_act) {
        /* GPTQ desc_act: every column by diag(H) descending (ties by index), group t = positions
         * t·gs .. t·gs + gs − 1 of that order, so an input's group is its position / gs. */
        for (int64_t c = 0; c < D; c++) k[c].key = p->H[c * D + c], k[c].idx = (int)c;
        qsort(k, (size_t)D, sizeof *k, by_key_desc);
        for (int64_t a = 0; a < D; a++) w->perm[a] = k[a].idx, w->col_group[a] = (int)(a / gs);
        for (int t = 0; t < ng; t++)
            w->grp_start[t] = t * gs, w->grp_len[t] = (int)((t + 1) * (int64_t)gs <= D ? gs : D - (int64_t)t * gs),
            w->grp_id[t] = t;
        free(k);
        goto permuted;
    }
    /* Column order: groups by Σ diag(H) descending, columns inside a group by diag(H) descending
     * (act order); identity otherwise. */
    for (int gi = 0; gi < ng; gi++) {
        double s = 0;
        for (int c = gi * gs; c < gi * gs + gs && c < D; c++) s += p->H[(int64_t)c * D + c];
        k[gi].key = o->act_order ? s : 0, k[gi].idx = gi;
    }
    qsort(k, (size_t)ng, sizeof *k, by_key_desc);
    int pos = 0;
    struct key_idx *kc = malloc(sizeof *kc * (size_t)gs);
    if (!kc) {
        free(k), piso_ec_free(w);
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
permuted:
    permute_square(p->H, D, w->perm, w->Hp);
    if (p->G) permute_square(p->G, D, w->perm, w->Gp);
    for (int64_t a = 0; a < D; a++)
        if (!(w->Hp[a * D + a] > 0)) w->dead++;
    for (int64_t r = 0; r < N; r++)
        for (int64_t a = 0; a < D; a++) {
            float v = p->W[r * D + w->perm[a]];
            if (zero_dead && !(w->Hp[a * D + a] > 0)) v = 0; /* dead input: the weight can do nothing useful */
            w->Wo[r * D + a] = v;
        }
    memcpy(w->Wc, w->Wo, sizeof(float) * N * D);
    return o->q.acc ? accum_setup(w) : 0;
}

/* ---- the grid rounder (GPTQ, Qronos) ---------------------------------------------------------- */
/* Scales fixed before error correction (interleave none/layer). */
static int grid_begin_layer(void *ctx, struct piso_ec_work *w) {
    (void)ctx;
    const struct piso_ec_opts *o = &w->opts;
    int64_t N = w->N, D = w->D;
    int ng = w->n_groups;
    enum piso_scale_method m = o->q.method;
    int data_free = m == PISO_SCALE_ABSMAX || m == PISO_SCALE_MSE_GRID || m == PISO_SCALE_PISO_DATAFREE;
    if (o->interleave != PISO_INTERLEAVE_GROUP && data_free) {
        /* Data-free scales on the original weights need no statistics: solve them directly. */
        for (int k = 0; k < ng; k++)
            if (piso_ec_group_scales(w, k)) return -1;
    } else if (o->interleave != PISO_INTERLEAVE_GROUP) {
        /* Scales fixed before error correction, on the original weights (dead columns zeroed). */
        float *Wz = malloc(sizeof(float) * N * D), *Hs = NULL;
        if (!Wz) return piso_errorf("out of memory");
        struct piso_layer_problem lp = {N, D, Wz, w->p->H, w->p->G, NULL, 0};
        if (w->desc_act) { /* groups are blocks of the permuted order: solve them there */
            memcpy(Wz, w->Wo, sizeof(float) * N * D);
            lp.H = w->Hp, lp.G = w->p->G ? w->Gp : NULL;
        } else {
            for (int64_t r = 0; r < N; r++)
                for (int64_t a = 0; a < D; a++) Wz[r * D + w->perm[a]] = w->Wo[r * D + a];
        }
        if (o->interleave == PISO_INTERLEAVE_NONE && w->p->H_scale) {
            lp.H = w->p->H_scale, lp.G = NULL;
            if (w->desc_act) {
                if (!(Hs = malloc(sizeof(float) * D * D))) return free(Wz), piso_errorf("out of memory");
                permute_square(w->p->H_scale, D, w->perm, Hs);
                lp.H = Hs;
            }
        }
        struct piso_quant_opts qo = o->q;
        qo.group = w->group >= D ? 0 : w->group;
        /* channel-wise PiSO: the scales alone (the RTN layer's dequantization and fp64 objectives
         * would be thrown away) */
        int rc = ng == 1 && !w->Z ? piso_layer_channel_scales(&lp, &qo, w->S) : 1;
        if (rc <= 0) {
            free(Wz), free(Hs);
            return rc;
        }
        struct piso_layer_result rr;
        rc = piso_rtn_layer(&lp, &qo, &rr);
        free(Wz), free(Hs);
        if (rc) return -1;
        memcpy(w->S, rr.scales, sizeof(float) * N * ng);
        if (w->Z) memcpy(w->Z, rr.zeros, sizeof(int16_t) * N * ng);
        piso_layer_result_free(&rr);
    }
    return 0;
}

/* ---- per-group scales on the current weights ----------------------------------------------- */
/* A long group (channel-wise on a wide layer): all rows together through the pruned exact sweep.
 * u = U + H_gg·v and H_gg·v for every row as one fp64 GEMM (the per-row fp64 dot products would
 * stream H_gg from memory once per row). */
static int group_scales_pruned(struct piso_ec_work *w, int gid, int c0, int L, const float *U) {
    int64_t N = w->N, D = w->D;
    double *Hd = malloc(sizeof(double) * (size_t)L * L), *V = malloc(sizeof(double) * (size_t)N * L);
    double *HV = malloc(sizeof(double) * (size_t)N * L), *Ud = malloc(sizeof(double) * (size_t)N * L);
    float *Vf = malloc(sizeof(float) * (size_t)N * L), *S = malloc(sizeof(float) * (size_t)N);
    int rc = -1;
    if (!Hd || !V || !HV || !Ud || !Vf || !S) {
        piso_errorf("out of memory for the scales of a [%lld, %d] group", (long long)N, L);
        goto out;
    }
    for (int64_t i = 0; i < L; i++)
        for (int64_t j = 0; j < L; j++) Hd[i * L + j] = w->Hp[(c0 + i) * D + c0 + j];
    for (int64_t r = 0; r < N; r++)
        for (int64_t j = 0; j < L; j++) Vf[r * L + j] = w->Wc[r * D + c0 + j], V[r * L + j] = Vf[r * L + j];
    piso_la_dgemm(0, 1, N, L, L, 1.0, V, L, Hd, L, 0.0, HV, L); /* rows of V·H_ggᵀ = (H_gg·v)ᵀ */
    for (int64_t t = 0; t < N * L; t++) Ud[t] = (double)U[t] + HV[t];
    if (piso_solve_scales_rows(Vf, L, N, L, w->Hp + (int64_t)c0 * D + c0, (int)D, Ud, L, HV, L, &w->opts.q.grid,
                               w->opts.q.allow_negative, S, 1, NULL))
        goto out;
    for (int64_t r = 0; r < N; r++) w->S[r * w->n_groups + gid] = S[r];
    rc = 0;
out:
    free(Hd), free(V), free(HV), free(Ud), free(Vf), free(S);
    return rc;
}

int piso_ec_group_scales(struct piso_ec_work *w, int k) {
    int64_t N = w->N, D = w->D;
    int c0 = w->grp_start[k], L = w->grp_len[k], gid = w->grp_id[k];
    enum piso_scale_method m = w->opts.q.method;
    const struct piso_grid *grid = &w->opts.q.grid;
    int an = w->opts.q.allow_negative;
    const struct piso_quant_opts *qo = &w->opts.q;
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
            free(U);
            return piso_errorf("out of memory for the group targets (N = %lld, group of %d)", (long long)N, L);
        } else {
            for (int64_t i = 0; i < N * D; i++) w->dW[i] = w->Wo[i] - w->Wc[i];
            piso_la_sgemm(0, 1, (int)N, L, (int)D, 1.0f, w->dW, (int)D, w->Hp + (int64_t)c0 * D, (int)D, 0.0f, U, L);
            if (w->GmH)
                piso_la_sgemm(0, 1, (int)N, L, (int)D, 1.0f, w->Wo, (int)D, w->GmH + (int64_t)c0 * D, (int)D, 1.0f, U, L);
        }
    }
    /* long groups through the pruned sweep; accumulator limits, zero points and fp16 scales keep the
     * per-row solvers below */
    if ((m == PISO_SCALE_PISO || m == PISO_SCALE_PISO_SEQ) && L >= PISO_PRUNE_MIN_N && !grid->scale_set &&
        !w->opts.q.acc && !w->opts.q.asym && !w->opts.q.scale_fp16) {
        int rc = group_scales_pruned(w, gid, c0, L, U);
        free(U);
        return rc;
    }
    int failed = 0; /* a thread out of memory: the others skip their rows */
#pragma omp parallel for schedule(dynamic, 8)
    for (int64_t r = 0; r < N; r++) {
        const float *v = w->Wc + r * D + c0;
        double *ud = NULL;
        float hd_local[256];
        float *hd = NULL;
        float s = NAN; /* set by the solver below */
        int f;
#pragma omp atomic read
        f = failed;
        if (f) continue;
        if (need_u) {
            ud = malloc(sizeof(double) * L);
            if (!ud) {
#pragma omp atomic write
                failed = 1;
                continue;
            }
            for (int i = 0; i < L; i++) {
                double acc = U[r * L + i];
                const float *h = w->Hp + (int64_t)(c0 + i) * D + c0;
                for (int j = 0; j < L; j++) acc += (double)h[j] * v[j];
                ud[i] = acc;
            }
        }
        /* accumulator limits: the PiSO methods sweep only feasible scales of this group's tiles
         * (never together with --asym or fp16 scales: the CLI refuses those combinations) */
        const struct piso_accum *acc = w->opts.q.acc;
        const int *tof = acc ? w->tile_of + c0 : NULL;
        int zero = 0;
        const float *hdz = NULL; /* asym: the diagonal for piso-diag */
        if (qo->asym && m == PISO_SCALE_PISO_DIAG) {
            hd = L <= 256 ? hd_local : malloc(sizeof(float) * L);
            for (int i = 0; hd && i < L; i++) hd[i] = w->Hp[(int64_t)(c0 + i) * D + c0 + i];
            hdz = hd;
        }
        if (qo->asym)
            s = (m == PISO_SCALE_PISO_DIAG && !hdz) ? NAN
                : piso_solve_affine(v, L, w->Hp + (int64_t)c0 * D + c0, (int)D, hdz, ud, m, grid->bits, qo->zero_min,
                                    qo->scale_fp16, &zero, NULL);
        if (hdz && hd != hd_local) free(hd);
        if (qo->asym) goto solved;
        switch (m) {
        case PISO_SCALE_MSE_GRID: s = piso_scale_mse_grid(v, L, grid); break;
        case PISO_SCALE_PISO_DATAFREE:
            s = piso_solve_scale_diag_accum(v, L, NULL, NULL, grid, an, NULL, acc, tof, w->n_tiles);
            if (qo->scale_fp16 && !isnan(s)) s = piso_scale_fp16_best(v, L, NULL, 0, NULL, NULL, grid, s);
            break;
        case PISO_SCALE_PISO_DIAG:
            hd = L <= 256 ? hd_local : malloc(sizeof(float) * L);
            if (!hd) {
                s = NAN;
                break;
            }
            for (int i = 0; i < L; i++) hd[i] = w->Hp[(int64_t)(c0 + i) * D + c0 + i];
            s = piso_solve_scale_diag_accum(v, L, hd, ud, grid, an, NULL, acc, tof, w->n_tiles);
            if (qo->scale_fp16 && !isnan(s)) s = piso_scale_fp16_best(v, L, NULL, 0, hd, ud, grid, s);
            if (hd != hd_local) free(hd);
            break;
        case PISO_SCALE_PISO:
        case PISO_SCALE_PISO_SEQ:
            s = piso_solve_scale_dense_accum(v, L, w->Hp + (int64_t)c0 * D + c0, (int)D, ud, grid, an, NULL, acc,
                                             tof, w->n_tiles);
            if (qo->scale_fp16 && !isnan(s))
                s = piso_scale_fp16_best(v, L, w->Hp + (int64_t)c0 * D + c0, (int)D, NULL, ud, grid, s);
            break;
        default: s = piso_scale_absmax(v, L, grid); break;
        }
        if (qo->scale_fp16 && !isnan(s)) s = piso_scale_to_fp16(s); /* idempotent after the exact ones */
    solved:
        free(ud);
        if (isnan(s)) { /* out of memory in the solver */
#pragma omp atomic write
            failed = 1;
            continue;
        }
        w->S[r * w->n_groups + gid] = s;
        if (w->Z) w->Z[r * w->n_groups + gid] = (int16_t)zero;
    }
    free(U);
    if (failed) return piso_errorf("out of memory for the group scales (N = %lld, group of %d)", (long long)N, L);
    return 0;
}

/* The AXE step: the tile's soft threshold (from the original weights of the tile at this scale,
 * computed when the row first reaches the tile), the clamp to its code limits, the sums. */
static float accum_round(struct piso_ec_work *w, int64_t r, int pos, float value, float s) {
    int t = w->tile_of[pos];
    double theta = 0;
    if (w->acc_theta) {
        double *th = w->acc_theta + r * w->n_tiles + t;
        if (isnan(*th)) {
            int k0 = w->tile_start[t];
            *th = piso_axe_theta(w->Wo + r * w->D, w->tile_pos + k0, w->tile_start[t + 1] - k0, s,
                                 piso_accum_l1_radius(&w->acc));
        }
        theta = *th;
    }
    int64_t *sums = w->acc_sums + (r * w->n_tiles + t) * 2;
    int q = piso_axe_code(&w->acc, &w->opts.q.grid, sums, sums + 1, theta, value / s);
    w->codes[r * w->D + pos] = (int16_t)q;
    return s * (float)q;
}

static float grid_round_column(void *ctx, struct piso_ec_work *w, int64_t r, int pos, float value) {
    (void)ctx;
    float s = w->S[r * w->n_groups + w->col_group[pos]];
    if (w->acc_sums) return accum_round(w, r, pos, value, s);
    int idx = 0;
    float gv = w->Z ? piso_affine_round(value / s, w->Z[r * w->n_groups + w->col_group[pos]], (1 << w->opts.q.grid.bits) - 1)
                    : piso_grid_round(&w->opts.q.grid, value / s, &idx);
    w->codes[r * w->D + pos] = (int16_t)(w->opts.q.grid.is_int ? (int)lrintf(gv) : idx);
    return s * gv;
}

static int grid_begin_group(void *ctx, struct piso_ec_work *w, int k) {
    (void)ctx;
    if (w->opts.interleave == PISO_INTERLEAVE_GROUP) return piso_ec_group_scales(w, k);
    return 0;
}

const struct piso_ec_rounder piso_ec_grid_rounder = {"grid", grid_begin_layer, grid_begin_group, grid_round_column};

/* ---- the sweep ------------------------------------------------------------------------------ */
int piso_ec_sweep(struct piso_ec_work *w, const double *R, int first, const struct piso_ec_rounder *rd,
                  void *ctx) {
    int64_t N = w->N, D = w->D, Dr = D - first;
    if (Dr <= 0) return 0;
    int B = w->opts.block_size > 0 ? w->opts.block_size : 128;
    float *Rf = malloc(sizeof(float) * Dr * Dr), *E = malloc(sizeof(float) * N * B);
    if (!Rf || !E) {
        free(Rf), free(E);
        return piso_errorf("out of memory for the GPTQ sweep");
    }
    for (int64_t i = 0; i < Dr * Dr; i++) Rf[i] = (float)R[i];
    /* Block boundaries at every group start (so trailing updates are complete when a group's
     * scale is solved), at most B wide. */
    for (int k = 0; k < w->n_groups; k++) {
        int gs = w->grp_start[k], ge = gs + w->grp_len[k];
        if (ge <= first) continue;
        if (gs >= first && rd->begin_group && rd->begin_group(ctx, w, k)) {
            free(Rf), free(E);
            return -1;
        }
        for (int i1 = gs > first ? gs : first; i1 < ge; i1 += B) {
            int i2 = i1 + B < ge ? i1 + B : ge, bl = i2 - i1;
#pragma omp parallel for schedule(static)
            for (int64_t r = 0; r < N; r++) {
                float *wr = w->Wc + r * D;
                double loss = 0;
                for (int i = i1; i < i2; i++) {
                    const float *Ri = Rf + (int64_t)(i - first) * Dr - first;
                    float q = rd->round_column(ctx, w, r, i, wr[i]);
                    float e = (wr[i] - q) / Ri[i];
                    loss += (double)e * e;
                    wr[i] = q;
                    for (int j = i + 1; j < i2; j++) wr[j] -= e * Ri[j];
                    E[r * B + (i - i1)] = e;
                }
                w->row_loss[r] += loss;
            }
            if (i2 < D) /* W[:, i2:] -= E_block · R[i1:i2, i2:] */
                piso_la_sgemm(0, 0, (int)N, (int)(D - i2), bl, -1.0f, E, B,
                            Rf + (int64_t)(i1 - first) * Dr + (i2 - first), (int)Dr, 1.0f, w->Wc + i2, (int)D);
        }
    }
    free(Rf), free(E);
    return 0;
}

/* The same sweep from M (H + λI = M·Mᵀ, M = R⁻¹), left-looking: with d = w₀ − q (initial weights
 * minus quantized), GPTQ's (W₀ − Q) = E·R gives E = (W₀ − Q)·M, so column i's current value is
 * w₀ᵢ + Σ_{k<i} d_k·M_ki / M_ii and its error e_i = (value − q_i)·M_ii. Before each batch (and
 * at each group start, so that begin_group sees current values) one GEMM adds the columns rounded
 * so far; inside the batch each rounded column updates the later ones as in piso_ec_sweep. */
int piso_ec_sweep_ul(struct piso_ec_work *w, const double *M, int first, const struct piso_ec_rounder *rd,
                     void *ctx) {
    int64_t N = w->N, D = w->D, Dr = D - first;
    if (Dr <= 0) return 0;
    int B = w->opts.block_size > 0 ? w->opts.block_size : 128;
    float *Mf = malloc(sizeof(float) * Dr * Dr), *W0 = malloc(sizeof(float) * N * Dr);
    float *Dv = malloc(sizeof(float) * N * Dr), *Md = malloc(sizeof(float) * Dr);
    if (!Mf || !W0 || !Dv || !Md) {
        free(Mf), free(W0), free(Dv), free(Md);
        return piso_errorf("out of memory for the GPTQ sweep");
    }
    double *Mdd = malloc(sizeof(double) * Dr); /* the diagonal read once, not once per row (strided) */
    if (!Mdd) {
        free(Mf), free(W0), free(Dv), free(Md);
        return piso_errorf("out of memory for the GPTQ sweep");
    }
    for (int64_t i = 0; i < Dr; i++) Mdd[i] = M[i * Dr + i], Md[i] = (float)Mdd[i];
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < Dr; k++) { /* Mf[k, i] = M_ki / M_ii above the diagonal */
        float *mf = Mf + k * Dr;
        const double *mk = M + k * Dr;
        for (int64_t i = 0; i <= k; i++) mf[i] = 0.0f;
        for (int64_t i = k + 1; i < Dr; i++) mf[i] = (float)(mk[i] / Mdd[i]);
    }
    free(Mdd);
    for (int64_t r = 0; r < N; r++) memcpy(W0 + r * Dr, w->Wc + r * D + first, sizeof(float) * Dr);
    int rc = 0;
    for (int k = 0; k < w->n_groups && !rc; k++) {
        int gs = w->grp_start[k], ge = gs + w->grp_len[k];
        if (ge <= first) continue;
        int s0 = gs > first ? gs : first;
        /* W[:, s0:ge] += D[:, :s0] · M'[:s0, s0:ge]: the group's current values */
        if (s0 > first)
            piso_la_sgemm(0, 0, N, ge - s0, s0 - first, 1.0f, Dv, Dr, Mf + (s0 - first), Dr, 1.0f, w->Wc + s0, D);
        if (gs >= first && rd->begin_group && rd->begin_group(ctx, w, k)) {
            rc = -1;
            break;
        }
        for (int i1 = s0; i1 < ge; i1 += B) {
            int i2 = i1 + B < ge ? i1 + B : ge;
            if (i1 > s0) /* the group's earlier batches, on this batch */
                piso_la_sgemm(0, 0, N, i2 - i1, i1 - s0, 1.0f, Dv + (s0 - first), Dr,
                              Mf + (int64_t)(s0 - first) * Dr + (i1 - first), Dr, 1.0f, w->Wc + i1, D);
#pragma omp parallel for schedule(static)
            for (int64_t r = 0; r < N; r++) {
                float *wr = w->Wc + r * D, *dr = Dv + r * Dr - first;
                const float *w0 = W0 + r * Dr - first;
                double loss = 0;
                for (int i = i1; i < i2; i++) {
                    const float *Mi = Mf + (int64_t)(i - first) * Dr - first;
                    float q = rd->round_column(ctx, w, r, i, wr[i]);
                    float e = (wr[i] - q) * Md[i - first], d = w0[i] - q;
                    loss += (double)e * e;
                    wr[i] = q, dr[i] = d;
                    for (int j = i + 1; j < i2; j++) wr[j] += d * Mi[j];
                }
                w->row_loss[r] += loss;
            }
        }
    }
    free(Mf), free(W0), free(Dv), free(Md);
    return rc;
}

int piso_ec_result_alloc(struct piso_layer_result *r, int64_t N, int64_t D, int64_t ng) {
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

int piso_ec_finish(struct piso_ec_work *w, const struct piso_ec_problem *p, struct piso_layer_result *r) {
    int64_t N = w->N, D = w->D;
    if (piso_ec_result_alloc(r, N, D, w->n_groups)) return -1;
    memcpy(r->scales, w->S, sizeof(float) * N * w->n_groups);
    if (w->Z) {
        r->zeros = malloc(sizeof(int16_t) * N * w->n_groups);
        if (!r->zeros) {
            piso_layer_result_free(r);
            return piso_errorf("out of memory for the zero points of a [%lld, %lld] layer", (long long)N, (long long)D);
        }
        memcpy(r->zeros, w->Z, sizeof(int16_t) * N * w->n_groups);
    }
    if (w->desc_act) {
        if (!(r->g_idx = malloc(sizeof(int32_t) * D))) {
            piso_layer_result_free(r);
            return piso_errorf("out of memory for the g_idx of a [%lld, %lld] layer", (long long)N, (long long)D);
        }
        for (int64_t a = 0; a < D; a++) r->g_idx[w->perm[a]] = w->col_group[a];
    }
    r->tensor_scale = w->opts.q.grid.scale_set == PISO_SSET_UE4M3 ? w->opts.q.grid.scale_mult : 0;
    for (int64_t i = 0; i < N; i++)
        for (int64_t a = 0; a < D; a++) {
            r->dequant[i * D + w->perm[a]] = w->Wc[i * D + a];
            r->codes[i * D + w->perm[a]] = w->codes[i * D + a];
        }
    r->constant_dropped = p->G != NULL;
    r->objective = piso_layer_objective(N, D, p->W, r->dequant, p->H, p->G, r->row_objective);
    if (isnan(r->objective)) { /* out of memory for the objective's products */
        piso_layer_result_free(r);
        return piso_errorf("out of memory for the objective of a [%lld, %lld] layer", (long long)N, (long long)D);
    }
    return 0;
}

