/* src/quant/ec_engine.h — the one error-correction engine of src/quant (GPTQ's column sweep), shared
 * by GPTQ (gptq.c), Qronos (qronos.c) and the GGUF block path (block_scales.c). Module interface of
 * src/quant; symbols carry the prefix piso_ec_.
 *
 * The engine runs in the permuted column order ("positions"; act order sorts groups by Σ diag(H)
 * and columns inside a group by diag(H), groups stay contiguous). piso_ec_sweep walks positions left
 * to right in lazy batches of at most B columns that never straddle a group start: each column of
 * the batch is rounded for all rows, its error e = (w − q)/R_ii is diffused into the rest of the
 * batch, and after the batch one GEMM applies the batch's errors to all later columns.
 *
 * How a rounder plugs in: a rounder decides what a column's quantized value is; the engine decides
 * where the error goes. Write one file with a `struct piso_ec_rounder` (its hooks and a context of
 * your own), a prologue that calls piso_ec_setup, the rounder's begin_layer, piso_ec_sweep with a
 * factor R from piso_la_damped_inverse_factor (or a shifted target / factor of your own), and
 * piso_ec_finish; then add one entry to the rounding table in gptq.c (name → layer function) and
 * its value to enum piso_rounding. The hooks:
 *  - begin_layer (optional): once, before anything is rounded (e.g. scales on the original weights);
 *  - begin_group (optional): when the sweep reaches group k (position order, k = 0..n_groups−1),
 *    after every earlier column's error has reached the group's columns and before any of them is
 *    rounded (PiSO per group, the GGUF block scale choice);
 *  - round_column: the quantized value of `value` at (row, pos), storing its code where the rounder
 *    keeps codes. Called concurrently for different rows, so it may only write row-owned state. */
#ifndef PISO_EC_ENGINE_H
#define PISO_EC_ENGINE_H

#include "piso/accum.h"
#include "piso/solve.h"

struct piso_ec_work {
    int64_t N, D;
    int group;               /* effective group size (D for channel-wise) */
    int n_groups;            /* ceil(D / group) */
    struct piso_ec_opts opts;
    const struct piso_ec_problem *p; /* the problem set up (unpermuted; lives while w does) */
    int *perm;               /* [D] position -> original column */
    int *col_group;          /* [D] position -> original group id */
    int desc_act;            /* groups are blocks of the permuted order (opts.desc_act_groups) */
    int *grp_start, *grp_len, *grp_id; /* [n_groups] group ranges in position order */
    float *Wo;               /* [N, D] original weights, permuted (dead columns zeroed if asked) */
    float *Wc;               /* [N, D] current (error-diffused, then quantized) weights */
    float *Hp;               /* [D, D] permuted undamped H */
    float *Gp;               /* [D, D] permuted G, or == Hp */
    float *S;                /* [N, n_groups] scales in original group order (grid rounder) */
    int16_t *Z;              /* [N, n_groups] zero points (opts.q.asym), else NULL */
    int16_t *codes;          /* [N, D] permuted (grid rounder) */
    double *row_loss;        /* [N] Σ e² per row */
    float *GmH;              /* [D, D] Gp − Hp (group targets; NULL until needed or when G = H) */
    float *dW;               /* [N, D] scratch: Wo − Wc */
    int dead;
    /* accumulator limits (opts.q.acc; piso/accum.h): the AXE step in the grid rounder */
    struct piso_accum acc;   /* a copy with the effective tile */
    int n_tiles;
    int *tile_of;            /* [D] position -> tile (original column / tile) */
    int *tile_start, *tile_pos; /* CSR: the positions of tile t are tile_pos[tile_start[t] .. tile_start[t+1]) */
    int64_t *acc_sums;       /* [N, n_tiles, 2] code sums p, n so far */
    double *acc_theta;       /* [N, n_tiles] soft thresholds (code units), NaN until first needed;
                              * NULL: no threshold */
};

struct piso_ec_rounder {
    const char *name;
    int (*begin_layer)(void *ctx, struct piso_ec_work *w);
    int (*begin_group)(void *ctx, struct piso_ec_work *w, int k);
    float (*round_column)(void *ctx, struct piso_ec_work *w, int64_t row, int pos, float value);
};

/* Column order, permuted copies of W, H, G and the buffers. zero_dead: weights of dead inputs
 * (H_ii ≤ 0) become 0 (GPTQ/Qronos: they can do nothing useful). */
int piso_ec_setup(struct piso_ec_work *w, const struct piso_ec_problem *p, const struct piso_ec_opts *o,
                  int zero_dead);
void piso_ec_free(struct piso_ec_work *w);
/* Lazy-batch sweep over positions first..D-1 with R [D-first, D-first] (row-major, upper, double):
 * (H + λI)⁻¹ restricted to those positions = RᵀR. Calls rd's begin_group on reaching a group's
 * first position (groups starting before `first` are the prologue's business). */
int piso_ec_sweep(struct piso_ec_work *w, const double *R, int first, const struct piso_ec_rounder *rd,
                  void *ctx);
/* The same sweep from M [D-first, D-first] upper with (H + λI) restricted to those positions =
 * M·Mᵀ (piso_la_damped_ul_factor: no inverse needed); the same results up to round-off. */
#define PISO_EC_UL_MIN 512 /* from this width on GPTQ and Qronos sweep on M */
int piso_ec_sweep_ul(struct piso_ec_work *w, const double *M, int first, const struct piso_ec_rounder *rd,
                     void *ctx);
/* Un-permutes into the result and computes its objective with the problem's undamped H, G. */
int piso_ec_finish(struct piso_ec_work *w, const struct piso_ec_problem *p, struct piso_layer_result *r);
int piso_ec_result_alloc(struct piso_layer_result *r, int64_t N, int64_t D, int64_t ng);

/* The rounder of GPTQ and Qronos: the grid of opts.q with one scale per (row, group) in w->S, the
 * scale method of opts.q, chosen before the sweep (interleave none/layer) or at each group's start
 * (interleave group); codes into w->codes. Context: NULL. */
extern const struct piso_ec_rounder piso_ec_grid_rounder;
/* Solves the scales of group k (position order) for all rows on the current weights. */
int piso_ec_group_scales(struct piso_ec_work *w, int k);

#endif
