/* Successive rounding (sr), bounded beam search (beam) and GPFQ (gpfq): rounders on the
 * error-correction engine (ec_engine.h); algorithms.md §5–6, the formulas in piso/solve.h.
 *
 * sr and beam share one prologue (sr_prepare): the engine's setup (column order, permuted copies),
 * then the damped factor R of (H + λI)⁻¹ (GPTQ's damping rule) together with the full inverse, the
 * shifted target w̃ = w + H_λ⁻¹(α(G − H)w − λw) = H_λ⁻¹(H + α(G − H))w (written as a correction of
 * w, so α = 0 with λ = 0 leaves w bit for bit), and the work switched over to the problem
 * (w̃, H_λ, G = H_λ): the grid rounder's scale methods (per layer or per group) then solve for the
 * scales on that objective, and GPTQ's sweep on it is sr. beam replaces the sweep by its own per-row
 * search (beam_sweep) over the same factor; gpfq runs its own sweep with the past-only feedback
 * L_jt = H_tj/H_tt instead of R. All three finish through the engine (objective with the problem's
 * undamped H and G). */
#include "piso/solve.h"
#include "piso/linalg.h"
#include "quant/ec_engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* out[perm[a], perm[b]] = Ap[a, b] (position order → original order) */
static void unpermute_square(const float *Ap, int64_t D, const int *perm, float *out) {
    for (int64_t a = 0; a < D; a++)
        for (int64_t b = 0; b < D; b++) out[(int64_t)perm[a] * D + perm[b]] = Ap[a * D + b];
}
static void unpermute_rows(const float *Wp, int64_t N, int64_t D, const int *perm, float *out) {
    for (int64_t r = 0; r < N; r++)
        for (int64_t a = 0; a < D; a++) out[r * D + perm[a]] = Wp[r * D + a];
}

/* The problem the scale methods see when scales are chosen before the sweep (interleave none or
 * layer: the grid rounder's begin_layer reads w->p): unpermuted copies. */
struct derived {
    struct piso_ec_problem p;
    float *W, *H, *G;
};
static void derived_free(struct derived *d) { free(d->W), free(d->H), free(d->G), memset(d, 0, sizeof *d); }

static int needs_layer_problem(const struct piso_ec_opts *o) {
    enum piso_scale_method m = o->q.method;
    int data_free = m == PISO_SCALE_ABSMAX || m == PISO_SCALE_MSE_GRID || m == PISO_SCALE_PISO_DATAFREE;
    return o->interleave != PISO_INTERLEAVE_GROUP && !data_free;
}

/* ---- sr / beam prologue ------------------------------------------------------------------------ */
static int sr_prepare(struct piso_ec_work *w, const struct piso_ec_problem *p, const struct piso_ec_opts *o,
                      double **R_out, double *lambda, struct derived *dv) {
    memset(dv, 0, sizeof *dv);
    *R_out = NULL;
    if (piso_ec_opts_check(o, PISO_ROUND_SR)) return -1;
    if (piso_ec_setup(w, p, o, 1)) return -1;
    int64_t N = w->N, D = w->D;
    double *R = malloc(sizeof(double) * D * D), *inv = malloc(sizeof(double) * D * D);
    double *C = malloc(sizeof(double) * N * D), *T = malloc(sizeof(double) * N * D);
    float *GmH = NULL;
    int rc = -1;
    if (!R || !inv || !C || !T) {
        piso_errorf("out of memory for successive rounding of a [%lld, %lld] layer", (long long)N, (long long)D);
        goto done;
    }
    const struct piso_la_damping damp = {PISO_LA_DAMP_MEAN_DIAG, o->damp >= 0 ? o->damp : 0.01, 8, 0};
    struct piso_la_damped dd;
    if (piso_la_damped_inverse_factor(w->Hp, D, D, &damp, "successive rounding", R, inv, &dd)) goto done;
    double lam = dd.lambda, alpha = w->Gp != w->Hp ? o->alpha : 0;
    /* w̃ = w + H_λ⁻¹ c, c = α(G − H)w − λw (rows; H_λ⁻¹ symmetric) */
    if (alpha > 0 || lam > 0) {
        if (alpha > 0) {
            GmH = malloc(sizeof(float) * D * D);
            float *Cf = malloc(sizeof(float) * N * D);
            if (!GmH || !Cf) {
                free(Cf);
                piso_errorf("out of memory for the shifted target");
                goto done;
            }
            for (int64_t i = 0; i < D * D; i++) GmH[i] = w->Gp[i] - w->Hp[i];
            piso_la_sgemm(0, 1, N, D, D, (float)alpha, w->Wo, D, GmH, D, 0.0f, Cf, D);
            for (int64_t i = 0; i < N * D; i++) C[i] = (double)Cf[i] - lam * w->Wo[i];
            free(Cf);
        } else {
            for (int64_t i = 0; i < N * D; i++) C[i] = -lam * w->Wo[i];
        }
        piso_la_dgemm(0, 0, N, D, D, 1.0, C, D, inv, D, 0.0, T, D);
        for (int64_t i = 0; i < N * D; i++) w->Wo[i] = (float)((double)w->Wo[i] + T[i]);
        memcpy(w->Wc, w->Wo, sizeof(float) * N * D);
    }
    /* the work's H becomes H_λ (dead inputs 1 + λ, as in the factor), G = H_λ */
    for (int64_t a = 0; a < D; a++) {
        float *h = w->Hp + a * D + a;
        *h = *h > 0 ? (float)(*h + lam) : (float)(1.0 + lam);
    }
    if (w->Gp != w->Hp) free(w->Gp);
    w->Gp = w->Hp;
    if (needs_layer_problem(o)) {
        dv->W = malloc(sizeof(float) * N * D), dv->H = malloc(sizeof(float) * D * D);
        if (!dv->W || !dv->H) {
            piso_errorf("out of memory");
            goto done;
        }
        unpermute_rows(w->Wo, N, D, w->perm, dv->W);
        unpermute_square(w->Hp, D, w->perm, dv->H);
        dv->p = (struct piso_ec_problem){N, D, dv->W, dv->H, NULL, p->H_scale};
        w->p = &dv->p;
    }
    *lambda = lam;
    *R_out = R, R = NULL;
    rc = 0;
done:
    free(R), free(inv), free(C), free(T), free(GmH);
    if (rc) derived_free(dv), piso_ec_free(w);
    return rc;
}

static void fill_stats(struct piso_ec_stats *st, const struct piso_ec_work *w, double lambda, double alpha) {
    if (!st) return;
    st->loss = 0;
    for (int64_t i = 0; i < w->N; i++) st->loss += w->row_loss[i];
    st->cost = st->loss, st->lambda = lambda, st->dead_columns = w->dead, st->alpha = alpha;
}

/* sr and beam share everything but the sweep over the α-target: the shifted problem (w̃, H_λ), the
 * grid rounder's scales, finish and the statistics. beam == NULL: the engine's GPTQ sweep (sr). */
static int sr_family_layer(const struct piso_ec_problem *p, const struct piso_ec_opts *o, struct piso_layer_result *r,
                           struct piso_ec_stats *st, int (*beam)(struct piso_ec_work *w, const double *R)) {
    struct piso_ec_work w;
    struct derived dv;
    double *R, lambda;
    if (sr_prepare(&w, p, o, &R, &lambda, &dv)) return -1;
    const struct piso_ec_rounder *rd = &piso_ec_grid_rounder;
    int rc = -1;
    if (rd->begin_layer(NULL, &w) || (beam ? beam(&w, R) : piso_ec_sweep(&w, R, 0, rd, NULL)) ||
        piso_ec_finish(&w, p, r))
        goto done;
    fill_stats(st, &w, lambda, o->alpha);
    rc = 0;
done:
    free(R), derived_free(&dv), piso_ec_free(&w);
    return rc;
}

int piso_sr_layer(const struct piso_ec_problem *p, const struct piso_ec_opts *o, struct piso_layer_result *r,
                  struct piso_ec_stats *st) {
    return sr_family_layer(p, o, r, st, NULL);
}

/* ---- beam search --------------------------------------------------------------------------------
 * Rows are processed in tiles of T rows; each row has up to K states (partial assignments) in the
 * slots [t·K, t·K + n_t), kept sorted by cost. A state is its full current row (quantized values in
 * the columns already decided, error-diffused values after them), its codes, its scales (per group:
 * with interleave group each state gets its own, solved on its own weights), and its cost Σ e².
 * Inside a lazy batch [i1, i2) a state carries only the batch's columns, its errors E there and the
 * slot of its ancestor at the batch start; at the batch end each state's row is gathered from its
 * ancestor and W[:, i2:] −= E·R[i1:i2, i2:] is one GEMM for the tile (as the engine's sweep). */
struct cand {
    double cost;
    float q, e;
    int parent, rank, code, greedy;
};
static int cand_cmp(const void *a, const void *b) {
    const struct cand *x = a, *y = b;
    if (x->cost != y->cost) return x->cost < y->cost ? -1 : 1;
    if (x->parent != y->parent) return x->parent - y->parent;
    return x->rank - y->rank;
}

struct beam_tile {
    int T, K, SK, D, ng, bl_max;
    float *W, *Wn;           /* [SK, D] */
    int16_t *C, *Cn;         /* [SK, D] codes */
    float *S, *Sn;           /* [SK, ng] */
    double *cost, *cost2;    /* [SK] */
    float *Bw, *Bw2, *E, *E2; /* [SK, B] batch columns, batch errors */
    int16_t *Cb, *Cb2;       /* [SK, B] batch codes */
    int *anc, *anc2, *n;     /* [SK], [SK], [T] */
    int *greedy, *greedy2;   /* [SK]: 1 on the state that always took the nearest value (sr's path) */
    float *Wrep;             /* [SK, D] the row's target per slot (interleave group) */
    struct cand *cands;      /* [K·B] */
};

static void beam_tile_free(struct beam_tile *b) {
    free(b->W), free(b->Wn), free(b->C), free(b->Cn), free(b->S), free(b->Sn), free(b->cost), free(b->cost2);
    free(b->Bw), free(b->Bw2), free(b->E), free(b->E2), free(b->Cb), free(b->Cb2), free(b->anc), free(b->anc2);
    free(b->n), free(b->Wrep), free(b->cands), free(b->greedy), free(b->greedy2);
}

static int beam_tile_alloc(struct beam_tile *b, int T, int K, int D, int ng, int B, int ncand, int group_scales) {
    memset(b, 0, sizeof *b);
    b->T = T, b->K = K, b->SK = T * K, b->D = D, b->ng = ng, b->bl_max = B;
    size_t SK = (size_t)b->SK;
    b->W = malloc(sizeof(float) * SK * D), b->Wn = malloc(sizeof(float) * SK * D);
    b->C = malloc(sizeof(int16_t) * SK * D), b->Cn = malloc(sizeof(int16_t) * SK * D);
    b->S = malloc(sizeof(float) * SK * ng), b->Sn = malloc(sizeof(float) * SK * ng);
    b->cost = malloc(sizeof(double) * SK), b->cost2 = malloc(sizeof(double) * SK);
    b->Bw = malloc(sizeof(float) * SK * B), b->Bw2 = malloc(sizeof(float) * SK * B);
    b->E = malloc(sizeof(float) * SK * B), b->E2 = malloc(sizeof(float) * SK * B);
    b->Cb = calloc(SK * B, sizeof(int16_t)), b->Cb2 = calloc(SK * B, sizeof(int16_t));
    b->anc = malloc(sizeof(int) * SK), b->anc2 = malloc(sizeof(int) * SK), b->n = malloc(sizeof(int) * T);
    b->greedy = calloc(SK, sizeof(int)), b->greedy2 = calloc(SK, sizeof(int));
    b->Wrep = group_scales ? malloc(sizeof(float) * SK * D) : NULL;
    b->cands = malloc(sizeof(struct cand) * (size_t)K * ncand);
    if (!b->W || !b->Wn || !b->C || !b->Cn || !b->S || !b->Sn || !b->cost || !b->cost2 || !b->Bw || !b->Bw2 ||
        !b->E || !b->E2 || !b->Cb || !b->Cb2 || !b->anc || !b->anc2 || !b->n || !b->greedy || !b->greedy2 || (group_scales && !b->Wrep) ||
        !b->cands) {
        beam_tile_free(b);
        return -1;
    }
    return 0;
}

/* The B nearest grid indices to x, nearest first (the nearest as piso_grid_round picks it). */
static int nearest_indices(const struct piso_grid *g, float x, int B, int *idx) {
    int k0;
    piso_grid_round(g, x, &k0);
    int n = 0, lo = k0 - 1, hi = k0 + 1;
    idx[n++] = k0;
    while (n < B && (lo >= 0 || hi < g->n)) {
        if (hi >= g->n || (lo >= 0 && x - g->v[lo] <= g->v[hi] - x)) idx[n++] = lo--;
        else idx[n++] = hi++;
    }
    return n;
}

/* One tile of rows [r0, r0 + T). Rf: [D, D] float factor. */
static int beam_tile_run(struct piso_ec_work *w, const float *Rf, int64_t r0, int T, struct beam_tile *b) {
    const int D = (int)w->D, K = b->K, ng = w->n_groups, Bw = b->bl_max;
    const struct piso_grid *grid = &w->opts.q.grid;
    const int ncand = w->opts.beam_b < grid->n ? w->opts.beam_b : grid->n;
    const int group_scales = w->opts.interleave == PISO_INTERLEAVE_GROUP;
    const int SK = T * K;
    /* initial states: one per row, the target row; every slot holds a finite copy */
    for (int t = 0; t < T; t++) {
        b->n[t] = 1;
        for (int j = 0; j < K; j++) {
            int s = t * K + j;
            memcpy(b->W + (size_t)s * D, w->Wc + (r0 + t) * D, sizeof(float) * D);
            memset(b->C + (size_t)s * D, 0, sizeof(int16_t) * D);
            memcpy(b->S + (size_t)s * ng, w->S + (r0 + t) * ng, sizeof(float) * ng);
            if (b->Wrep) memcpy(b->Wrep + (size_t)s * D, w->Wo + (r0 + t) * D, sizeof(float) * D);
            b->cost[s] = 0;
            b->greedy[s] = j == 0;
        }
    }
    int idx[PISO_GRID_MAX];
    for (int k = 0; k < ng; k++) {
        int gs = w->grp_start[k], ge = gs + w->grp_len[k];
        if (group_scales) {
            /* each state's scales for group k, on its own current weights (the engine's group solve
             * on a view whose rows are the tile's states) */
            struct piso_ec_work v = *w;
            v.N = SK, v.Wo = b->Wrep, v.Wc = b->W, v.S = b->S, v.dW = NULL, v.GmH = NULL;
            piso_ec_group_scales(&v, k);
            free(v.dW);
        }
        for (int i1 = gs; i1 < ge; i1 += Bw) {
            int i2 = i1 + Bw < ge ? i1 + Bw : ge, bl = i2 - i1;
            for (int s = 0; s < SK; s++) {
                memcpy(b->Bw + (size_t)s * Bw, b->W + (size_t)s * D + i1, sizeof(float) * bl);
                memset(b->E + (size_t)s * Bw, 0, sizeof(float) * Bw);
                b->anc[s] = s;
            }
            for (int i = i1; i < i2; i++) {
                int c = i - i1, gid = w->col_group[i];
                const float *Ri = Rf + (int64_t)i * D;
                for (int t = 0; t < T; t++) {
                    int nc = 0, nt = b->n[t];
                    for (int j = 0; j < nt; j++) {
                        int s = t * K + j;
                        /* scales are gathered at batch ends: inside a batch a state's are its ancestor's */
                        float sc = b->S[(size_t)b->anc[s] * ng + gid], v = b->Bw[(size_t)s * Bw + c];
                        int m = nearest_indices(grid, v / sc, ncand, idx);
                        for (int q = 0; q < m; q++) {
                            struct cand *cd = &b->cands[nc++];
                            float gv = grid->v[idx[q]];
                            cd->q = sc * gv;
                            cd->e = (v - cd->q) / Ri[i];
                            cd->cost = b->cost[s] + (double)cd->e * cd->e;
                            cd->parent = j, cd->rank = q, cd->greedy = b->greedy[s] && q == 0;
                            cd->code = grid->is_int ? (int)lrintf(gv) : idx[q];
                        }
                    }
                    /* the K best (cost, then parent, then nearest first) */
                    int keep = nc < K ? nc : K;
                    if (nc > 64) {
                        qsort(b->cands, (size_t)nc, sizeof *b->cands, cand_cmp);
                    } else {
                        for (int a = 1; a < nc; a++) { /* insertion sort: stable on the key above */
                            struct cand x = b->cands[a];
                            int z = a;
                            while (z > 0 && cand_cmp(&b->cands[z - 1], &x) > 0) b->cands[z] = b->cands[z - 1], z--;
                            b->cands[z] = x;
                        }
                    }
                    /* sr's path always survives (so the result is never worse than sr's): when its
                     * child is not among the K best it replaces the K-th (costs stay ascending) */
                    int gk = 0;
                    for (int m = 0; m < keep && !gk; m++) gk = b->cands[m].greedy;
                    for (int m = keep; m < nc && !gk; m++)
                        if (b->cands[m].greedy) b->cands[keep - 1] = b->cands[m], gk = 1;
                    for (int m = 0; m < keep; m++) {
                        const struct cand *cd = &b->cands[m];
                        int s = t * K + m, ps = t * K + cd->parent;
                        float *bw = b->Bw2 + (size_t)s * Bw;
                        const float *pb = b->Bw + (size_t)ps * Bw;
                        memcpy(bw, pb, sizeof(float) * bl);
                        memcpy(b->E2 + (size_t)s * Bw, b->E + (size_t)ps * Bw, sizeof(float) * bl);
                        memcpy(b->Cb2 + (size_t)s * Bw, b->Cb + (size_t)ps * Bw, sizeof(int16_t) * c);
                        bw[c] = cd->q;
                        for (int j = c + 1; j < bl; j++) bw[j] -= cd->e * Ri[i1 + j];
                        b->E2[(size_t)s * Bw + c] = cd->e;
                        b->Cb2[(size_t)s * Bw + c] = (int16_t)cd->code;
                        b->anc2[s] = b->anc[ps];
                        b->cost2[s] = cd->cost;
                        b->greedy2[s] = cd->greedy;
                    }
                    b->n[t] = keep;
                }
                /* swap the batch buffers (slots beyond n[t] keep stale but finite contents) */
                for (int t = 0; t < T; t++)
                    for (int m = 0; m < b->n[t]; m++) {
                        int s = t * K + m;
                        b->anc[s] = b->anc2[s], b->cost[s] = b->cost2[s], b->greedy[s] = b->greedy2[s];
                    }
                float *tf;
                int16_t *ti;
                tf = b->Bw, b->Bw = b->Bw2, b->Bw2 = tf;
                tf = b->E, b->E = b->E2, b->E2 = tf;
                ti = b->Cb, b->Cb = b->Cb2, b->Cb2 = ti;
                /* slots not refilled this column must stay consistent with their old buffers */
                for (int t = 0; t < T; t++)
                    for (int m = b->n[t]; m < K; m++) {
                        int s = t * K + m;
                        memcpy(b->Bw + (size_t)s * Bw, b->Bw2 + (size_t)s * Bw, sizeof(float) * bl);
                        memcpy(b->E + (size_t)s * Bw, b->E2 + (size_t)s * Bw, sizeof(float) * bl);
                        memcpy(b->Cb + (size_t)s * Bw, b->Cb2 + (size_t)s * Bw, sizeof(int16_t) * bl);
                    }
            }
            /* batch end: gather every state's row from its ancestor, then the trailing update (the
             * decided columns of W are needed again only by the group scales' targets; without them
             * the final row is rebuilt from the codes) */
            for (int s = 0; s < SK; s++) {
                int a = b->anc[s], from = group_scales ? 0 : i1;
                memcpy(b->Wn + (size_t)s * D + from, b->W + (size_t)a * D + from, sizeof(float) * (D - from));
                memcpy(b->Wn + (size_t)s * D + i1, b->Bw + (size_t)s * Bw, sizeof(float) * bl);
                memcpy(b->Cn + (size_t)s * D, b->C + (size_t)a * D, sizeof(int16_t) * D);
                memcpy(b->Cn + (size_t)s * D + i1, b->Cb + (size_t)s * Bw, sizeof(int16_t) * bl);
                memcpy(b->Sn + (size_t)s * ng, b->S + (size_t)a * ng, sizeof(float) * ng);
            }
            if (i2 < D)
                piso_la_sgemm_1t(0, 0, SK, D - i2, bl, -1.0f, b->E, Bw, Rf + (int64_t)i1 * D + i2, D, 1.0f,
                                 b->Wn + i2, D);
            float *tf;
            int16_t *ti;
            tf = b->W, b->W = b->Wn, b->Wn = tf;
            ti = b->C, b->C = b->Cn, b->Cn = ti;
            tf = b->S, b->S = b->Sn, b->Sn = tf;
        }
    }
    /* the best state of each row is its slot 0 (kept sorted) */
    for (int t = 0; t < T; t++) {
        int s = t * K;
        int64_t r = r0 + t;
        if (group_scales) memcpy(w->Wc + r * D, b->W + (size_t)s * D, sizeof(float) * D);
        else /* the same products as the candidates' q = scale · grid value */
            for (int i = 0; i < D; i++) {
                int16_t cd = b->C[(size_t)s * D + i];
                float gv = grid->is_int ? (float)cd : grid->v[cd];
                w->Wc[r * D + i] = b->S[(size_t)s * ng + w->col_group[i]] * gv;
            }
        memcpy(w->codes + r * D, b->C + (size_t)s * D, sizeof(int16_t) * D);
        memcpy(w->S + r * ng, b->S + (size_t)s * ng, sizeof(float) * ng);
        w->row_loss[r] = b->cost[s];
    }
    return 0;
}

static int beam_sweep(struct piso_ec_work *w, const double *R) {
    int64_t N = w->N, D = w->D;
    /* lazy batches of at most 32 columns: every child copies its parent's batch columns */
    int K = w->opts.beam_k, B = w->opts.block_size > 0 ? w->opts.block_size : 128;
    if (B > 32) B = 32;
    if (B > D) B = (int)D;
    int ncand = w->opts.beam_b < w->opts.q.grid.n ? w->opts.beam_b : w->opts.q.grid.n;
    /* tiles of about 128 states: a GEMM-sized trailing update, and several tiles per thread */
    int T = K >= 128 ? 1 : 128 / K;
    if (T > N) T = (int)N;
    int64_t ntiles = (N + T - 1) / T;
    float *Rf = malloc(sizeof(float) * D * D);
    if (!Rf) return piso_errorf("out of memory for the beam search of a [%lld, %lld] layer", (long long)N, (long long)D);
    for (int64_t i = 0; i < D * D; i++) Rf[i] = (float)R[i];
    int failed = 0;
    /* group scales inside a tile need the G − H difference; the work's G is H here (sr_prepare) */
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t tt = 0; tt < ntiles; tt++) {
        int64_t r0 = tt * T;
        int nt = (int)(r0 + T <= N ? T : N - r0);
        struct beam_tile bt;
        if (beam_tile_alloc(&bt, nt, K, (int)D, w->n_groups, B, ncand, w->opts.interleave == PISO_INTERLEAVE_GROUP)) {
#pragma omp atomic write
            failed = 1;
            continue;
        }
        beam_tile_run(w, Rf, r0, nt, &bt);
        beam_tile_free(&bt);
    }
    free(Rf);
    if (failed)
        return piso_errorf("out of memory for the beam search states (K = %d, D = %lld)", K, (long long)D);
    return 0;
}

int piso_beam_layer(const struct piso_ec_problem *p, const struct piso_ec_opts *o, struct piso_layer_result *r,
                    struct piso_ec_stats *st) {
    if (piso_ec_opts_check(o, PISO_ROUND_BEAM)) return -1;
    if (o->q.acc)
        return piso_errorf("--accumulator-bits: beam search does not apply the accumulator limits (use gptq, "
                           "qronos, sr, gpfq or rtn)");
    return sr_family_layer(p, o, r, st, beam_sweep);
}

/* ---- GPFQ -------------------------------------------------------------------------------------- */
/* Group scales (interleave group) on the view "past columns quantized, the rest at the original
 * weights": the engine's target u_g = (G_α w)_g − H_{g,¬g} v_{¬g} is then the exact minimiser in the
 * group's scale with the past fixed and the future at its float values (GPFQ does not move them). */
static void gpfq_group_scales(struct piso_ec_work *w, int k, float *V) {
    int64_t N = w->N, D = w->D;
    int c0 = w->grp_start[k];
    for (int64_t r = 0; r < N; r++) {
        memcpy(V + r * D, w->Wc + r * D, sizeof(float) * c0);
        memcpy(V + r * D + c0, w->Wo + r * D + c0, sizeof(float) * (D - c0));
    }
    struct piso_ec_work v = *w;
    v.Wc = V;
    piso_ec_group_scales(&v, k);
    w->GmH = v.GmH, w->dW = v.dW; /* computed once, freed with the work */
}

int piso_gpfq_layer(const struct piso_ec_problem *p, const struct piso_ec_opts *o, struct piso_layer_result *r,
                    struct piso_ec_stats *st) {
    if (piso_ec_opts_check(o, PISO_ROUND_GPFQ)) return -1;
    struct piso_ec_work w;
    if (piso_ec_setup(&w, p, o, 1)) return -1;
    struct derived dv;
    memset(&dv, 0, sizeof dv);
    int64_t N = w.N, D = w.D;
    int B = o->block_size > 0 ? o->block_size : 128;
    float *L = malloc(sizeof(float) * D * D), *Q = malloc(sizeof(float) * N * B);
    float *V = o->interleave == PISO_INTERLEAVE_GROUP ? malloc(sizeof(float) * N * D) : NULL;
    const struct piso_ec_rounder *rd = &piso_ec_grid_rounder;
    int rc = -1;
    if (!L || !Q || (o->interleave == PISO_INTERLEAVE_GROUP && !V)) {
        piso_errorf("out of memory for GPFQ on a [%lld, %lld] layer", (long long)N, (long long)D);
        goto done;
    }
    /* G_α = H + α(G − H) in place of G */
    if (w.Gp != w.Hp)
        for (int64_t i = 0; i < D * D; i++) w.Gp[i] = w.Hp[i] + (float)o->alpha * (w.Gp[i] - w.Hp[i]);
    if (needs_layer_problem(o) && w.Gp != w.Hp) {
        if (!(dv.G = malloc(sizeof(float) * D * D))) {
            piso_errorf("out of memory");
            goto done;
        }
        unpermute_square(w.Gp, D, w.perm, dv.G);
        dv.p = (struct piso_ec_problem){N, D, p->W, p->H, dv.G, p->H_scale};
        w.p = &dv.p;
    }
    if (rd->begin_layer(NULL, &w)) goto done;
    /* start values v_t = Σ_{j≤t} G_α,tj w_j / H_tt: Wc = Wo · Lgᵀ, Lg = D_H⁻¹ tril(G_α) */
    for (int64_t t = 0; t < D; t++) {
        double h = w.Hp[t * D + t];
        for (int64_t j = 0; j < D; j++) L[t * D + j] = (j <= t && h > 0) ? (float)(w.Gp[t * D + j] / h) : 0.0f;
    }
    piso_la_sgemm(0, 1, N, D, D, 1.0f, w.Wo, D, L, D, 0.0f, w.Wc, D);
    /* feedback L[j, t] = H_tj / H_tt for t > j: v_t −= L[j, t]·q_j once q_j is chosen */
    for (int64_t j = 0; j < D; j++)
        for (int64_t t = 0; t < D; t++) {
            double h = w.Hp[t * D + t];
            L[j * D + t] = (t > j && h > 0) ? (float)(w.Hp[t * D + j] / h) : 0.0f;
        }
    for (int k = 0; k < w.n_groups; k++) {
        int gs = w.grp_start[k], ge = gs + w.grp_len[k];
        if (o->interleave == PISO_INTERLEAVE_GROUP) gpfq_group_scales(&w, k, V);
        for (int i1 = gs; i1 < ge; i1 += B) {
            int i2 = i1 + B < ge ? i1 + B : ge, bl = i2 - i1;
#pragma omp parallel for schedule(static)
            for (int64_t r = 0; r < N; r++) {
                float *wr = w.Wc + r * D;
                for (int i = i1; i < i2; i++) {
                    const float *Li = L + (int64_t)i * D;
                    float q = rd->round_column(NULL, &w, r, i, wr[i]);
                    wr[i] = q;
                    for (int j = i + 1; j < i2; j++) wr[j] -= q * Li[j];
                    Q[r * B + (i - i1)] = q;
                }
            }
            if (i2 < D)
                piso_la_sgemm(0, 0, N, D - i2, bl, -1.0f, Q, B, L + (int64_t)i1 * D + i2, D, 1.0f, w.Wc + i2, D);
        }
    }
    if (piso_ec_finish(&w, p, r)) goto done;
    if (st) {
        memset(st, 0, sizeof *st);
        st->dead_columns = w.dead, st->alpha = o->alpha;
        if (p->G) {
            float *Ga = dv.G;
            if (!Ga && (Ga = malloc(sizeof(float) * D * D))) unpermute_square(w.Gp, D, w.perm, Ga);
            st->cost = Ga ? piso_layer_objective(N, D, p->W, r->dequant, p->H, Ga, NULL) : NAN;
            if (Ga != dv.G) free(Ga);
        } else {
            st->cost = piso_layer_objective(N, D, p->W, r->dequant, p->H, p->H, NULL);
        }
        st->loss = st->cost;
    }
    rc = 0;
done:
    free(L), free(Q), free(V), derived_free(&dv), piso_ec_free(&w);
    return rc;
}
