/* piso/solve.h — layer-level error-correcting rounding (GPTQ, Qronos) with the scale methods of
 * piso/quant.h, optionally interleaving the PiSO scale solve once per layer or once per group.
 *
 * Notation (shared/docs/algorithms.md §1.1): W [N, D] the float weights (one row per output
 * channel), X̃ the inputs seen by the quantized model, X those of the float model,
 * H = X̃ᵀX̃ [D, D], G = X̃ᵀX [D, D] (G_ij = Σ_t x̃_ti x_tj). The objective of a row w is
 * ‖Xw − X̃ŵ‖² = const − 2ŵᵀ(Gw) + ŵᵀHŵ; with G = H it is (w − ŵ)ᵀH(w − ŵ).
 *
 * Groups run along D with size `group`; when D is not a multiple of it, the last group is shorter
 * (D mod group columns). n_groups = ceil(D / group), 1 for channel-wise (group 0).
 */
#ifndef PISO_SOLVE_H
#define PISO_SOLVE_H

#include "piso/quant.h"

/* sr, beam, gpfq: src/quant/rounders.c (algorithms.md §5–6). */
enum piso_rounding {
    PISO_ROUND_RTN = 0,
    PISO_ROUND_GPTQ,
    PISO_ROUND_QRONOS,
    PISO_ROUND_SR,   /* successive rounding on the α-target (GPTQ's sweep on w̃ with H + λI) */
    PISO_ROUND_BEAM, /* the same objective, K best partial assignments per row */
    PISO_ROUND_GPFQ, /* greedy path following: each column fit to the past residual only */
    PISO_ROUND_COUNT
};

/* Where the scales are chosen relative to error correction (algorithms.md §2.9):
 *  NONE  — decoupled: before error correction, from the float model's statistics (H = G = XᵀX,
 *          the `H_scale` of the problem), on the original weights;
 *  LAYER — once per layer before error correction, on the original weights, with this layer's
 *          own H and G (earlier layers already quantized);
 *  GROUP — when error correction reaches a group's first column, on the current error-diffused
 *          weights, with target u_g = (G w)_g − H_{g,¬g} v_{¬g} (v = current weights): the exact
 *          minimiser of the layer objective in this group's scale with all other columns held. */
enum piso_interleave { PISO_INTERLEAVE_NONE = 0, PISO_INTERLEAVE_LAYER, PISO_INTERLEAVE_GROUP };

/* Names come from one table in src/quant/gptq.c (name → layer function). */
int piso_rounding_from_name(const char *name, enum piso_rounding *out);
const char *piso_rounding_name(enum piso_rounding r);
int piso_interleave_from_name(const char *name, enum piso_interleave *out);
const char *piso_interleave_name(enum piso_interleave i);

struct piso_ec_opts {
    struct piso_quant_opts q;      /* grid, group (0 = channel-wise), scale method, allow_negative */
    enum piso_interleave interleave;
    int act_order;                 /* columns by diag(H) descending; groups kept contiguous */
    int desc_act_groups;           /* with act_order and a group: group k = the k-th block of `group`
                                    * columns in the permuted order (GPTQ's desc_act); the result
                                    * carries g_idx. 0: contiguous groups ordered by Σ diag(H) */
    double damp;                   /* GPTQ: λ = damp·mean(diag H) (default 0.01);
                                    * Qronos: λ = damp·σ_max(H) (default 1e-6). < 0: default */
    int block_size;                /* lazy-batch width (0: 128); GROUP interleave uses the groups */
    /* sr, beam, gpfq (ignored by the others): */
    double alpha;                  /* α ∈ [0, 1]: target X_α = X̃ + α(X − X̃) (0 symmetric, 1 asymmetric);
                                    * default PISO_ALPHA_DEFAULT */
    int beam_k;                    /* beam: partial assignments kept per row (≥ 1; default 4) */
    int beam_b;                    /* beam: candidates per column, the B nearest grid values (≥ 2;
                                    * default 2; ≥ the grid size: the whole grid) */
};
#define PISO_ALPHA_DEFAULT 0.5
/* Checks the options a rounding uses (α in [0, 1], beam K ≥ 1, B ≥ 2); an error naming the option. */
int piso_ec_opts_check(const struct piso_ec_opts *o, enum piso_rounding r);
void piso_ec_opts_default(struct piso_ec_opts *o);

struct piso_ec_problem {
    int64_t N, D;
    const float *W;        /* [N, D] */
    const float *H;        /* [D, D] X̃ᵀX̃ */
    const float *G;        /* [D, D] X̃ᵀX, or NULL for G = H (GPTQ's X̃–X̃ objective) */
    const float *H_scale;  /* [D, D] XᵀX for INTERLEAVE_NONE, or NULL (then H, G are used) */
};

/* Extra outputs of the error-correcting solvers. */
struct piso_ec_stats {
    double loss;           /* GPTQ: Σ e_i² over rows and columns (= Σ_rows (w−ŵ)ᵀ(H+λI)(w−ŵ)) */
    double lambda;         /* damping actually used (raised ×10 when H + λI was not PD) */
    int dead_columns;      /* inputs with H_ii = 0 (their weights become 0) */
    double cost;           /* sr/beam: Σ_rows (w̃ − q)ᵀ(H + λI)(w̃ − q), the objective they minimise
                            * (= loss); gpfq: Σ_rows (q̂ᵀHq̂ − 2q̂ᵀG_α w) = ‖X_α w − X̃q̂‖² − ‖X_α w‖² */
    double alpha;          /* sr/beam/gpfq: the α used */
};

/* The result's objective is computed with the undamped H and G as in piso/quant.h. The result
 * has n_groups = ceil(D / group) scales per row; free it with piso_layer_result_free. */
int piso_gptq_layer(const struct piso_ec_problem *p, const struct piso_ec_opts *o,
                    struct piso_layer_result *r, struct piso_ec_stats *st);
int piso_qronos_layer(const struct piso_ec_problem *p, const struct piso_ec_opts *o,
                      struct piso_layer_result *r, struct piso_ec_stats *st);
/* Successive rounding (sr) and bounded beam search (beam) on the regularised asymmetric objective
 * (algorithms.md §6): with H_λ = H + λI (λ = damp·mean(diag H), GPTQ's rule, default 0.01) and the
 * shifted target w̃ = H_λ⁻¹(H + α(G − H))w (G = H when the problem has no G), both minimise
 * (w̃ − q)ᵀH_λ(w̃ − q) = ‖X_α w − X̃q‖² + λ‖q‖² + const over the codes q (scales as GPTQ chooses them,
 * on w̃ with H_λ). sr is GPTQ's sweep on w̃ (α = 0, λ = 0: exactly GPTQ); beam keeps the K lowest-cost
 * partial assignments per row, extending each by the B nearest grid values of its current value, and
 * returns the best (K ≥ B^D: the exact discrete optimum for fixed scales). Cost O(K·D²) per row.
 * gpfq (§5): column t (in the column order) is rounded from v_t = (Σ_{j≤t} G_α,tj w_j −
 * Σ_{j<t} H_tj q_j)/H_tt, G_α = H + α(G − H): the least-squares fit of column t to the residual of
 * the past columns only (α = 1: the original GPFQ on X–X̃). */
int piso_sr_layer(const struct piso_ec_problem *p, const struct piso_ec_opts *o, struct piso_layer_result *r,
                  struct piso_ec_stats *st);
int piso_beam_layer(const struct piso_ec_problem *p, const struct piso_ec_opts *o, struct piso_layer_result *r,
                    struct piso_ec_stats *st);
int piso_gpfq_layer(const struct piso_ec_problem *p, const struct piso_ec_opts *o, struct piso_layer_result *r,
                    struct piso_ec_stats *st);
typedef int (*piso_ec_layer_fn)(const struct piso_ec_problem *p, const struct piso_ec_opts *o,
                                struct piso_layer_result *r, struct piso_ec_stats *st);
/* The layer function of an error-correcting rounding (NULL for RTN or an unknown value). */
piso_ec_layer_fn piso_rounding_layer(enum piso_rounding r);

/* RTN with the scale method of opts, allowing a ragged last group (split into two calls of
 * piso_quantize_layer; groups are independent in every method except piso-seq, whose cross-group
 * target then stops at the split). */
int piso_rtn_layer(const struct piso_layer_problem *p, const struct piso_quant_opts *opts,
                   struct piso_layer_result *r);

/* Objective of ŵ (rows of Wq) for the problem's H, G (constant dropped when G is given), per row
 * into row_obj [N] (may be NULL); returns the sum. */
double piso_layer_objective(int64_t N, int64_t D, const float *W, const float *Wq, const float *H,
                            const float *G, double *row_obj);

#endif
