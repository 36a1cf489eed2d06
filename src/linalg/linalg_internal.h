/* Private to src/linalg: the fixed tiling and the single-threaded BLAS calls every tile is made of. */
#ifndef PISO_LINALG_INTERNAL_H
#define PISO_LINALG_INTERNAL_H

#include <omp.h>
#include <stdint.h>

/* Tiles of every product and factorization: they depend only on the shapes, never on the thread
 * count, so each output element is computed by the same BLAS calls in the same order. 256 × 256
 * is the tiling forward.c has always used, so model outputs keep their bits. */
#define LA_TILE 256
/* From this width on, the damped inverse factor takes one Cholesky of the reversed matrix
 * (piso_la_inverse_factor); narrower layers keep Cholesky + inverse + Cholesky, whose bits the
 * small-model results were computed with. */
#define LA_FAST_FACTOR_MIN 512
/* From this width on, XᵀX of a calibration window is computed by SYRK (piso_la_gram_add). */
#define LA_GRAM_SYRK_MIN 512
/* Below this many multiply-adds a parallel region costs more than it saves (same results). */
#define LA_PAR_MIN_WORK ((double)(1 << 24))

/* OpenBLAS (OpenMP build) threads a call made outside an *active* parallel region with
 * omp_get_max_threads() threads, which changes results with the thread count; inside one it runs
 * on the calling thread. la_pin_begin/la_pin_end bracket every BLAS call of src/linalg so that it
 * always runs on the calling thread only. */
static inline int la_pin_begin(void) {
    if (omp_in_parallel()) return 0;
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    return saved;
}
static inline void la_pin_end(int saved) {
    if (saved) omp_set_num_threads(saved);
}

static inline int64_t la_min(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t la_ntiles(int64_t n) { return (n + LA_TILE - 1) / LA_TILE; }
/* Chunks of a factorization's trailing row tiles: wider, so each GEMM packs its panel less often. */
#define LA_WIDE (4 * LA_TILE)
static inline int64_t la_ntiles_wide(int64_t n) { return (n + LA_WIDE - 1) / LA_WIDE; }

/* The upper tiles (ti ≤ tj) of a t × t tiling, numbered row by row: tile b → (ti, tj). */
static inline void la_upper_tile(int64_t b, int64_t t, int64_t *ti, int64_t *tj) {
    int64_t i = 0;
    while (b >= t - i) b -= t - i, i++;
    *ti = i, *tj = i + b;
}

#endif
