/* piso/quant.h — the quantization core: grids, scale methods, the exact PiSO sweep.
 *
 * A scale s (the "step") maps a weight w to s·q with q = nearest grid value to w/s.
 * Objective for one vector (a channel or a group): E(s) = s²·qᵀHq − 2s·qᵀu, u = G·w
 * (u = H·w when no cross term). See shared/docs/algorithms.md §2.
 */
#ifndef PISO_QUANT_H
#define PISO_QUANT_H

#include "piso/common.h"

#define PISO_GRID_MAX 256

struct piso_accum;

/* A sorted set of representable values containing 0 (unscaled alphabet). */
struct piso_grid {
    char name[16];       /* "int4", "int4n" (narrow), "e2m1", "e4m3", ... */
    int n;               /* number of values */
    float v[PISO_GRID_MAX];
    int is_int, bits, narrow;
    int symmetric;       /* v == -v (then negative scales are never needed) */
    /* Hardware block formats restrict the scales (MX: algorithms.md §9.2, NVFP4: §9.3): */
    int scale_set;       /* PISO_SSET_ANY, PISO_SSET_POW2 (E8M0: 2^-127..2^127) or PISO_SSET_UE4M3
                            (the positive FP8 E4M3 values 2^-9..448, times scale_mult) */
    float scale_mult;    /* NVFP4: the per-tensor FP32 scale (1 until chosen) */
    int block;           /* the format's block size along the input (MX 32, NVFP4 16; 0: free) */
    int emax;            /* MX: floor(log2 of the largest grid value), the OCP recipe's emax_elem */
};
enum { PISO_SSET_ANY = 0, PISO_SSET_POW2, PISO_SSET_UE4M3 };

/* format: int2..int8, fp4_e2m1 (alias e2m1), e2m3, e3m2, e4m3 (OCP, max 448), e5m2 (OCP, no inf/NaN);
 * the hardware block formats mxfp4, mxfp6_e2m3, mxfp6_e3m2, mxfp8_e4m3, mxfp8_e5m2, mxint8 (OCP MX:
 * blocks of 32 with a power-of-two scale; mxint8's grid is int8, its implicit 2^-6 folded into the
 * power-of-two scale) and nvfp4 (e2m1, blocks of 16, UE4M3 scales times a per-tensor FP32 scale).
 * narrow: symmetric integer range -(2^(b-1)-1)..2^(b-1)-1 (ignored for floats and MX). */
int piso_grid_init(struct piso_grid *g, const char *format, int narrow);
/* Representable scales (scale_set): the largest ≤ s and the smallest ≥ s (0 / INFINITY where there
 * is none); every scale when scale_set is PISO_SSET_ANY. */
void piso_grid_scale_bracket(const struct piso_grid *g, double s, double *below, double *above);
/* The k-th representable scale in increasing order, k < piso_grid_scale_count(g) (0 for ANY). */
int piso_grid_scale_count(const struct piso_grid *g);
double piso_grid_scale_at(const struct piso_grid *g, int k);
/* The recipe scale of a block with max|w| = amax (OCP MX: 2^(floor(log2 amax) − emax); NVFP4:
 * E4M3-RNE(amax/(6·mult))·mult, saturating at 448; free scales: amax/max|grid|); 1 for amax = 0. */
float piso_grid_recipe_scale(const struct piso_grid *g, float amax);
/* Nearest grid value to x, clamped to the range; ties go to the even code (round-half-even for
 * integers, even mantissa for minifloats). Writes its index into g->v when index != NULL. */
float piso_grid_round(const struct piso_grid *g, float x, int *index);
int piso_grid_zero_index(const struct piso_grid *g); /* index of 0 in g->v */
float piso_grid_maxabs(const struct piso_grid *g);   /* max |v| (8 for int4, 7 for int4 narrow) */

enum piso_scale_method {
    PISO_SCALE_ABSMAX = 0,
    PISO_SCALE_MSE_GRID,      /* data-free 20-point threshold search */
    PISO_SCALE_PISO_DATAFREE, /* exact with H = I */
    PISO_SCALE_PISO_DIAG,     /* exact with diag(H) */
    PISO_SCALE_PISO,          /* exact with dense H (groups: block H_gg, independent) */
    PISO_SCALE_PISO_SEQ,      /* sequential group-wise with the cross-group target (§2.8) */
    PISO_SCALE_COUNT
};
int piso_scale_method_from_name(const char *name, enum piso_scale_method *out);
const char *piso_scale_method_name(enum piso_scale_method m);

/* ---- one vector ---------------------------------------------------------------------------- */
/* Exact minimiser of E(s) for w[n] with a dense symmetric H (row-major, leading dimension ldh,
 * so a diagonal block of a larger matrix can be passed) and target u[n] (fp64; NULL: u = H·w).
 * Sweeps both signs when the grid is asymmetric and allow_negative is set. Never returns 0 or
 * NaN: when no scale improves on q = 0 (all-zero w, dead inputs) it returns the absmax scale (or
 * 1 for an all-zero vector). E_out (optional) receives E at the returned scale, recomputed
 * exactly in fp64 (one more pass over H; pass NULL to skip it). Cost O(n²·|grid|). The one
 * exception to "never NaN": out of memory for its scratch, it returns NaN (and *E_out = NaN), so
 * that callers inside parallel loops can report the failure. */
float piso_solve_scale_dense(const float *w, int n, const float *H, int ldh, const double *u,
                             const struct piso_grid *g, int allow_negative, double *E_out);
/* Same with a diagonal H (hdiag[n]; NULL means identity, i.e. data-free). u may be NULL, then
 * u_i = hdiag_i·w_i. */
float piso_solve_scale_diag(const float *w, int n, const float *hdiag, const double *u,
                            const struct piso_grid *g, int allow_negative, double *E_out);
/* NVFP4's per-tensor scale for W [N, D] (groups of 16): the best of 1, the NVIDIA recipe
 * s0 = max|W|/(6·448) and s0·2^(i/32), i = 1..7 (offsets inside one E4M3 grid step), each scored by
 * Σ over groups of the exact diag(H)-weighted optimum over every UE4M3 group scale (hdiag NULL:
 * identity). On that objective the result is never worse than the recipe (s0 with absmax group
 * scales). Returns 1 for grids without UE4M3 scales, NaN when out of memory. */
/* NVFP4's recipe tensor scale max|W|/(6·448) (1 for an all-zero tensor). */
float piso_grid_recipe_tensor_scale(const float *W, int64_t n);
float piso_nvfp4_tensor_scale(const float *W, int64_t N, int64_t D, const float *hdiag, const struct piso_grid *g);
/* absmax: max|w| / max|grid| (1 for an all-zero vector); the OCP/NVIDIA recipe for MX/NVFP4. */
float piso_scale_absmax(const float *w, int n, const struct piso_grid *g);
/* mse-grid: the best of the 20 scales (k/20)·absmax, k = 1..20, for ||w − s·q(w; s)||². */
float piso_scale_mse_grid(const float *w, int n, const struct piso_grid *g);
/* E(s) = s²·qᵀHq − 2s·qᵀu at a given scale, q = round(w/s) as piso_grid_round does (fp64 sums).
 * H dense with leading dimension ldh; u may be NULL (then u = H·w). NaN when out of memory. */
double piso_objective_dense(const float *w, int n, const float *H, int ldh, const double *u,
                            const struct piso_grid *g, float s);

/* Channel-wise PiSO for N rows sharing one H (piso_prune.c): the same optimum as
 * piso_solve_scale_dense row by row (up to fp round-off on near-ties), much faster for large n:
 * intervals whose lower bound (from a certified PSD minorant M ⪯ H of rank k plus a diagonal
 * floor) cannot beat the best exact value found are skipped; the rest is swept exactly.
 * W [N, n] (row stride ldw); U [N, n] targets (stride ldu; NULL: u = H·w); HW [N, n] = rows of H·w
 * in fp64 when the caller has them (NULL: computed). Scales go to scales[r·scale_stride]. Falls back
 * to the full sweep when n < PISO_PRUNE_MIN_N, for grids with a scale set, or when H is not
 * certified positive definite. Returns 0, or −1 when out of memory (piso_last_error). */
#define PISO_PRUNE_MIN_N 512
struct piso_prune_stats {
    int64_t rows, rows_full;  /* rows solved; of them swept in full (no pruning) */
    int64_t rows_x;           /* rows whose walks read X̃ [t, n] instead of H (piso_solve_scales_rows_x) */
    int64_t intervals, swept; /* intervals of the pruned rows' sweeps (both signs), evaluated exactly */
    int64_t needed;           /* of them, with a bound below the optimum (+ slack): the least any window choice sweeps */
    int rank;                 /* k of the minorant */
    double floor;             /* its floor μ relative to diag(H) */
    double seconds_minorant;  /* building it */
    double seconds_bound;     /* events and bounds of every interval */
    double seconds_gemm;      /* H·q at the anchors and window starts */
    double seconds_walk;      /* the exact sweeps of the anchors' windows */
    double seconds_windows;   /* the exact sweeps of the other windows */
    int64_t windows;          /* windows beyond the anchors' (each one restart) */
    int64_t rounds;           /* batched passes over H (piso_sweep_hvals_runs), all batches of rows */
};
int piso_solve_scales_rows(const float *W, int64_t ldw, int64_t N, int n, const float *H, int ldh, const double *U,
                           int64_t ldu, const double *HW, int64_t ldhw, const struct piso_grid *g,
                           int allow_negative, float *scales, int64_t scale_stride, struct piso_prune_stats *st);
/* The same with H = X̃ᵀX̃ given also as X̃ [T, n] (row stride ldx; NULL: none): with fewer tokens than
 * inputs (T padded to 32 at most n/2) the pruned sweep's walks read X̃'s columns (T floats per
 * event) instead of H's (n), a few times faster; the result is the same up to fp32 round-off of
 * the sums (X̃ must be the one whose Gram is H: nothing checks it). */
int piso_solve_scales_rows_x(const float *W, int64_t ldw, int64_t N, int n, const float *X, int64_t T, int64_t ldx,
                             const float *H, int ldh, const double *U, int64_t ldu, const double *HW, int64_t ldhw,
                             const struct piso_grid *g, int allow_negative, float *scales, int64_t scale_stride,
                             struct piso_prune_stats *st);
/* Tests and benchmarks: mode 0 = automatic, 1 = never prune, 2 = prune whenever n ≥ 8; rank 0 =
 * piso_prune_default_rank(n). Process-wide; not thread-safe against running solvers. */
void piso_prune_configure(int mode, int rank);
/* Tests and benchmarks: the largest H (bytes) the pruned sweep copies once per call into the
 * panel layout its walks read (default PISO_PRUNE_PACK_MAX); above it each pass over H packs its
 * own panels. The layout changes no result. Returns the previous limit. */
#define PISO_PRUNE_PACK_MAX ((size_t)1 << 30)
size_t piso_prune_pack_limit(size_t bytes);
/* Tests and benchmarks: rows solved together (their walks share each pass over H, and their other
 * windows are walked up to this many at a time); default 128, 0 restores it. The GEMMs' shapes
 * change with it, so results can differ in round-off. Returns the previous value. */
int piso_prune_batch_rows(int rows);
/* The statistics of every piso_solve_scales_rows call since the last take (summed; rank and floor
 * of the last call), then reset. For benchmarks; call it from one thread. */
void piso_prune_stats_take(struct piso_prune_stats *out);
int piso_prune_default_rank(int n);

/* Group-interleaved GPTQ/Qronos (algorithms.md §2.9) needs one group's scale from the current
 * (error-diffused) weights w_g, the block H_gg of the full Hessian and a target u_g:
 *     s_g = piso_solve_scale_dense(w + j0, g, H + j0*ldh + j0, ldh, u_g, grid, 1, NULL);
 * with u_g = G_gg·w_g for the independent variant, or the §2.8 cross-group target
 * u_g = (G·w_orig)_g − H_{g,¬g}·v_{¬g}. The caller then rounds w_g/s_g with piso_grid_round. */

/* ---- affine (asymmetric) integer quantization ------------------------------------------------ */
/* w ≈ s·(c − z), c ∈ [0, maxq], maxq = 2^bits − 1, z an integer in [zmin, maxq]. For a fixed z the
 * codes q = c − z = clamp(round(w/s), −z, maxq − z) are RTN onto the integer grid −z..maxq−z, which
 * contains 0, so E(s) is again piecewise with finitely many breakpoints: the exact optimum over
 * (s, z) is one PiSO sweep per zero point (positive scales; a negative scale with z is the positive
 * one with maxq − z), keeping the best. */
/* The nearest fp16 value of a scale, its magnitude kept in 2^-24 .. 65504 (never 0 or inf). */
float piso_scale_to_fp16(float s);
/* Of the two fp16 values around s (s rounded to nearest, and the next one on the other side of s)
 * the one with the lower objective E on grid g (H dense with ldh, else hdiag or identity; u NULL:
 * H·w / hdiag·w). PiSO's optimum often lies at a rounding breakpoint, where plain rounding to fp16
 * lands on the wrong side half of the time. */
float piso_scale_fp16_best(const float *w, int n, const float *H, int ldh, const float *hdiag, const double *u,
                           const struct piso_grid *g, float s);
/* The grid of zero point z: the integers −z..maxq−z (is_int, not symmetric). */
void piso_grid_affine(int bits, int z, struct piso_grid *out);
/* RTN onto the grid of zero point z: clamp(round-half-even(x), −z, maxq − z). */
float piso_affine_round(float x, int z, int maxq);
/* The GPTQ min-max rule: lo = min(w, 0), hi = max(w, 0), s = (hi − lo)/maxq, z = round(−lo/s)
 * clamped to [zmin, maxq] (s = 1 / maxq when w = 0). */
float piso_affine_minmax(const float *w, int n, int bits, int zmin, int *zero);
/* Best (s, z) of one vector for scale method m:
 *  absmax → min-max; mse-grid → min-max of the range shrunk by k/20, k = 1..20, best ‖w − ŵ‖²;
 *  piso-datafree → exact with H = I; piso-diag → exact with hdiag[n] and target u (NULL: hdiag·w);
 *  piso, piso-seq → exact with the dense block H (leading dimension ldh) and target u (NULL: H·w).
 * The exact methods also evaluate min-max, so they are never worse than it on their objective.
 * fp16: candidate scales are rounded to fp16 before they are compared (the stored scale). Returns
 * s > 0 and *zero; E_out (optional) the objective E = s²·qᵀHq − 2s·qᵀu at the result. NaN when out
 * of memory. Cost: (maxq + 2 − zmin) sweeps for up to PISO_AFFINE_ALL_ZEROS_BITS bits, where the
 * result is the exact optimum over every (s, z); that is every integer grid piso has (int2..int8):
 * 8 bits costs 257 sweeps per row, ~20x a window of min-max's zero ± PISO_AFFINE_ZERO_WINDOW, which
 * bench/bench_affine_zeros measured missing the optimum on up to 12% of rows (+13.7% error, worst).
 * Wider grids (none today) would sweep only that window. */
#define PISO_AFFINE_ALL_ZEROS_BITS 8
#define PISO_AFFINE_ZERO_WINDOW 8
float piso_solve_affine(const float *w, int n, const float *H, int ldh, const float *hdiag, const double *u,
                        enum piso_scale_method m, int bits, int zmin, int fp16, int *zero, double *E_out);

/* ---- a whole layer ------------------------------------------------------------------------- */
/* W [N, D] row-major; H [D, D] symmetric PSD; G [D, D] optional (NULL: G = H). */
struct piso_layer_problem {
    int64_t N, D;
    const float *W, *H, *G;
    /* optional: X̃ [T, D] (rows contiguous) whose Gram X̃ᵀX̃ is H. With fewer tokens than inputs the
     * channel-wise PiSO sweep reads X̃ instead of H (piso_solve_scales_rows_x); NULL: H only */
    const float *X;
    int64_t T;
};

struct piso_quant_opts {
    struct piso_grid grid;
    int group;               /* 0 = one scale per output channel, else group size along D */
    enum piso_scale_method method;
    int allow_negative;      /* default 1: try negative scales on asymmetric grids */
    /* accumulator limits (piso/accum.h; NULL: none): the PiSO methods sweep only the scales whose
     * codes satisfy them, the others round with the AXE step (soft threshold, clamp) */
    const struct piso_accum *acc;
    int asym;                /* affine: w ≈ s·(c − z) with codes c ∈ [0, 2^bits − 1] and an integer zero
                              * point z per (row, group) (integer grids only, see piso_solve_affine) */
    int zero_min;            /* asym: the smallest zero point allowed (GPTQ v1 stores z − 1: 1) */
    int scale_fp16;          /* round every scale to fp16 before the codes are rounded (checkpoints
                              * that store fp16 scales reload exactly) */
    int no_objective;        /* piso_quantize_layer: skip the row objectives (an fp64 N·D² product;
                              * they are NaN then), for callers that measure the error otherwise */
};

struct piso_layer_result {
    int64_t N, D, n_groups;  /* n_groups = D / group (1 for channel-wise) */
    float *scales;           /* [N, n_groups] */
    float *dequant;          /* [N, D] = scale · grid value */
    int16_t *codes;          /* [N, D] the integer value for int grids, the grid index for floats;
                              * asym: q = c − z (so dequant = scale·q as for symmetric grids) */
    int16_t *zeros;          /* [N, n_groups] asym zero points z (NULL for symmetric quantization) */
    int32_t *g_idx;          /* [D] the group of each input when groups follow an act order
                              * (GPTQ desc_act); NULL: input i is in group i / group */
    double *row_objective;   /* [N] objective of each row */
    double objective;        /* Σ rows; with G: Σ (ŵᵀHŵ − 2ŵᵀGw), else Σ (w−ŵ)ᵀH(w−ŵ) */
    int constant_dropped;    /* 1 when G was given */
    float tensor_scale;      /* NVFP4: the per-tensor scale (included in scales); 0 otherwise */
};

/* Chooses the scales with opts->method and rounds to nearest (RTN). Rows run in parallel; the
 * result does not depend on the thread count. H must be symmetric (rows are read as columns).
 * Per group: piso uses H_gg and u_g = G_gg·w_g; piso-diag uses diag(H) and u_i = G_ii·w_i;
 * piso-seq orders groups by descending Σ_{i∈g} H_ii (the same order for every row) and uses the
 * target (G·w)_g − H_{g,¬g}·v_{¬g} (v: quantized groups so far, w elsewhere). The products G·W
 * and the row objectives go through fp64 GEMMs: memory ≈ 8·D² (+ 8·D² with G) + 8·N·D bytes
 * besides the result. Returns -1 with a message for a group that does not divide D. */
int piso_quantize_layer(const struct piso_layer_problem *p, const struct piso_quant_opts *opts,
                        struct piso_layer_result *r);
void piso_layer_result_free(struct piso_layer_result *r);

/* ---- problem files (piso layer --problem) -------------------------------------------------- */
/* A loaded problem owns its arrays. The file holds F32 `weight` [N, D] and either `hessian`
 * [D, D] (+ optional `cross` [D, D] = G) or `inputs` [T, D] = X̃ (+ optional `inputs_float`
 * [T, D] = X), from which H = X̃ᵀX̃ and G = X̃ᵀX are built. Validation: shapes, finite values,
 * symmetric H with non-negative diagonal, and PSD via a Cholesky factorisation of
 * H + 1e-4·max(diag H)·I (so singular PSD matrices and fp32 rounding noise pass). */
struct piso_problem {
    int64_t N, D;
    float *W;  /* [N, D] */
    float *H;  /* [D, D] */
    float *G;  /* [D, D] or NULL */
};
int piso_problem_load(const char *path, struct piso_problem *p);
/* Validates H (symmetric, diag >= 0, PSD as above); `what` names it in messages. */
int piso_check_hessian(const float *H, int64_t D, const char *what);
void piso_problem_free(struct piso_problem *p);

#endif
