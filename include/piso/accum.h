/* piso/accum.h — accumulator-aware quantization (AXE, arXiv 2409.17092; algorithms.md §8).
 *
 * Integer weights q (codes) times integer inputs x ∈ [μ_min, μ_max] (μ_min ≤ 0 ≤ μ_max, from the
 * activation quantizer) are summed in a signed P-bit accumulator, one tile of T consecutive input
 * columns at a time (T = the whole row for a single-stage accumulator); tile outputs are summed in a
 * wider accumulator. With p = Σ_{q_i>0} q_i and n = Σ_{q_i<0} q_i over a tile, the largest and the
 * smallest value the tile's dot product (and every partial sum of it, in any order) can take over all
 * admissible inputs are
 *     μ_max·p + μ_min·n   and   μ_min·p + μ_max·n,
 * so the tile never overflows iff worst = max(μ_max·p + μ_min·n, −(μ_min·p + μ_max·n)) ≤ A = 2^(P−1)−1.
 *
 * What uses this: the error-correcting rounders (GPTQ, Qronos, sr, GPFQ; not beam) apply the AXE step
 * to every column (soft threshold, clamp to the code limits of its tile, round; ec_engine.c), and the
 * PiSO scale methods become constrained: the exact sweep restricted to the scales whose RTN codes
 * satisfy the limits (piso_sweep.c). RTN with PiSO scales is therefore feasible by construction; RTN
 * with absmax/mse-grid scales uses the AXE step like the others. */
#ifndef PISO_ACCUM_H
#define PISO_ACCUM_H

#include "piso/quant.h"

struct piso_accum {
    int bits;               /* P, the signed accumulator width (2..62) */
    int tile;               /* T: columns per tile (0: the whole row; with groups: the group size) */
    int64_t in_min, in_max; /* the integer input range, in_min ≤ 0 ≤ in_max, in_max > 0 */
    int no_threshold;       /* skip the ℓ1 soft threshold of the AXE step (clamp only) */
};

/* The range of N-bit integer inputs: signed −2^(N−1)..2^(N−1)−1, unsigned 0..2^N−1. */
int piso_accum_input_range(int bits, int is_signed, int64_t *in_min, int64_t *in_max);
/* A = 2^(P−1) − 1 */
int64_t piso_accum_max(const struct piso_accum *a);
/* The worst-case accumulator magnitude of a tile with code sums p ≥ 0, n ≤ 0 (closed form above). */
int64_t piso_accum_worst(const struct piso_accum *a, int64_t p, int64_t n);
/* The integer codes the next weight of a tile with sums (p, n) may take so that the tile stays
 * within A: lo ≤ 0 ≤ hi when (p, n) is itself feasible. */
void piso_accum_code_limits(const struct piso_accum *a, int64_t p, int64_t n, int64_t *lo, int64_t *hi);
/* Duchi et al.'s threshold θ of the Euclidean projection of v ≥ 0 (n entries) onto the ℓ1 ball of
 * the given radius: Σ max(v_i − θ, 0) = radius, or 0 when Σ v ≤ radius (Michelot's fixed-point
 * iteration, exact, no sort and no memory; fp64). */
double piso_l1_ball_threshold(const double *v, int n, double radius);
/* The ℓ1 radius of a zero-centred tile: (2^P − 2)/(μ_max − μ_min) (algorithms.md §8). */
double piso_accum_l1_radius(const struct piso_accum *a);

/* Checks the options against a layer before any work: P in 2..62, a valid input range, an integer grid
 * without hardware blocks, T dividing D (T = group when group-wise), and P large enough for a single
 * code of ±1 (else no non-zero weight fits). `layer` names the layer in the messages. The effective
 * tile (D when a->tile is 0; the group when grouped and a->tile is 0) goes into *tile_out. */
int piso_accum_validate(const struct piso_accum *a, int64_t D, int group, const struct piso_grid *g,
                        const char *layer, int *tile_out);

/* The checker: for every row and tile of the integer codes [N, D] (tiles of `tile` consecutive
 * columns, 0: the whole row), the worst-case accumulator magnitude by the closed form. */
struct piso_accum_report {
    int64_t worst;       /* max over rows and tiles */
    int64_t limit;       /* A */
    int64_t violations;  /* (row, tile) pairs with worst > A */
    int64_t worst_row, worst_tile;
    int64_t n_tiles;     /* tiles per row */
    int64_t max_l1;      /* max over rows and tiles of p − n (the tile's ℓ1 norm) */
};
void piso_accum_check(const int16_t *codes, int64_t N, int64_t D, int tile, const struct piso_accum *a,
                      struct piso_accum_report *rep);

/* ---- constrained scales -------------------------------------------------------------------- */
/* The smallest scale s > 0 at which RTN codes round(w/s) of w[n] satisfy the limits of every tile
 * (tile_of[i] = the tile of entry i in 0..n_tiles−1; NULL: i / a->tile, or one tile when a->tile is 0
 * or ≥ n): the scales that do form an interval [s_min, ∞), because the code sums only grow as s
 * shrinks. Returns a scale just above the breakpoint where the first violation appears (with the
 * sweep's margin, so the fp32 scale rounds every entry as the interval does), or 0 when every scale
 * is feasible. sign −1: the same for negative scales (returns the positive magnitude). NaN when out of
 * memory. */
double piso_accum_min_scale(const float *w, int n, const struct piso_grid *g, const struct piso_accum *a,
                            const int *tile_of, int n_tiles, double sign);
/* absmax subject to the guarantee: max(absmax, the smallest feasible positive scale). */
float piso_scale_absmax_accum(const float *w, int n, const struct piso_grid *g, const struct piso_accum *a,
                              const int *tile_of, int n_tiles);
/* The exact PiSO sweeps (piso_solve_scale_dense/diag) restricted to the scales whose RTN codes
 * satisfy the limits of every tile: feasibility is tracked per event (each changes one code sum by
 * one grid step) and the sweep stops at the first violation. Never worse than the constrained
 * absmax on E; when no interval beats q = 0 it returns the constrained absmax. a NULL: unconstrained. */
float piso_solve_scale_dense_accum(const float *w, int n, const float *H, int ldh, const double *u,
                                   const struct piso_grid *g, int allow_negative, double *E_out,
                                   const struct piso_accum *a, const int *tile_of, int n_tiles);
float piso_solve_scale_diag_accum(const float *w, int n, const float *hdiag, const double *u,
                                  const struct piso_grid *g, int allow_negative, double *E_out,
                                  const struct piso_accum *a, const int *tile_of, int n_tiles);

#endif
