/* The exact PiSO sweep (shared/docs/algorithms.md §2.2–2.6): every interval between consecutive
 * breakpoints of round-to-nearest is visited in order of decreasing scale, q changes by one grid
 * step per event, and a = qᵀu, b = qᵀHq are updated incrementally; on each interval the convex
 * parabola E(s) = b·s² − 2a·s is minimised over the (slightly shrunk) interval.
 *
 * Dense H costs O(n) per event (the h = H·q entries the events need, built tile by tile so the
 * panel of H in use stays in cache; see sweep_dense). Diagonal H costs O(1) per event. Negative scales are a second positive sweep on (−w, −u) (§2.2 fact 5). */
#include "piso/accum.h"
#include "piso/quant.h"
#include "quant/quant_internal.h"
#include "quant/sweep_internal.h"

#if defined(__AVX__)
#include <immintrin.h>
#endif
#include <math.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#else
static int omp_get_thread_num(void) { return 0; }
#endif

/* Candidates stay this far (relative) inside their interval, so that rounding the fp32 scale and
 * the fp32 division w/s cannot move any entry across a midpoint (each is ~6e-8 relative). */
#define SWEEP_MARGIN 2.5e-7
/* Columns of h per pass (see sweep_dense): eight vector accumulators, so 128 with AVX-512's 32
 * registers and 64 with AVX2's 16 (eight 16-wide vectors would take all sixteen ymm registers and
 * spill). The width changes no result: each column sums the same events in the same order. */
#ifdef __AVX512F__
#define SWEEP_VW 16
#else
#define SWEEP_VW 8
#endif
#define SWEEP_TILE (8 * SWEEP_VW)


/* Sorts the events by s ascending (s > 0, so the IEEE bits order like the values): an LSD radix
 * sort on the upper 32 bits of the key (sign, exponent, 20 mantissa bits; 8-bit digits for short
 * lists, 16-bit for long ones, skipping passes where every key shares the digit), then an
 * insertion sort on the full key, which only has to reorder keys within 2^-20 of each other.
 * Both are stable, so the order is deterministic. */
static void sort_events(struct sweep_event *ev, struct sweep_event *tmp, int64_t T) {
    int dig = T < 65536 ? 8 : 16, nb = 1 << dig;
    uint32_t small[256];
    uint32_t *count = dig == 8 ? small : malloc(sizeof(uint32_t) * (size_t)nb);
    if (!count) { /* out of memory: 8-bit digits (the same stable order, a few more passes) */
        dig = 8, nb = 256;
        count = small;
    }
    struct sweep_event *src = ev, *dst = tmp;
    for (int shift = 32; shift < 64; shift += dig) {
        memset(count, 0, sizeof(uint32_t) * (size_t)nb);
        for (int64_t t = 0; t < T; t++) {
            uint64_t k;
            memcpy(&k, &src[t].s, 8);
            count[(k >> shift) & (uint64_t)(nb - 1)]++;
        }
        uint64_t k0;
        memcpy(&k0, &src[0].s, 8);
        if (count[(k0 >> shift) & (uint64_t)(nb - 1)] == (uint32_t)T) continue; /* all share this digit */
        uint32_t sum = 0;
        for (int b = 0; b < nb; b++) {
            uint32_t c = count[b];
            count[b] = sum;
            sum += c;
        }
        for (int64_t t = 0; t < T; t++) {
            uint64_t k;
            memcpy(&k, &src[t].s, 8);
            dst[count[(k >> shift) & (uint64_t)(nb - 1)]++] = src[t];
        }
        struct sweep_event *x = src;
        src = dst;
        dst = x;
    }
    if (src != ev) memcpy(ev, src, sizeof *ev * (size_t)T);
    if (count != small) free(count);
    for (int64_t t = 1; t < T; t++) {
        if (!(ev[t].s < ev[t - 1].s)) continue;
        struct sweep_event e = ev[t];
        int64_t u = t;
        for (; u > 0 && e.s < ev[u - 1].s; u--) ev[u] = ev[u - 1];
        ev[u] = e;
    }
}

/* Events of the positive-scale sweep for sign·w, unsorted: returns their number. */
static int64_t events_unsorted(const float *w, int n, double sign, const struct piso_grid *g, struct sweep_event *ev) {
    int z = piso_grid_zero_index(g);
    double inv_mu[PISO_GRID_MAX];
    float step[PISO_GRID_MAX];
    for (int k = 0; k + 1 < g->n; k++) {
        inv_mu[k] = 2.0 / ((double)g->v[k] + (double)g->v[k + 1]);
        step[k] = g->v[k + 1] - g->v[k];
    }
    int64_t T = 0;
    for (int i = 0; i < n; i++) {
        double x = sign * (double)w[i];
        if (x > 0) {
            for (int k = z; k + 1 < g->n; k++) ev[T++] = (struct sweep_event){x * inv_mu[k], i, step[k]};
        } else if (x < 0) {
            for (int k = z - 1; k >= 0; k--) ev[T++] = (struct sweep_event){x * inv_mu[k], i, -step[k]};
        }
    }
    return T;
}

/* Events of the positive-scale sweep for sign·w: returns their number (sorted ascending). */
int64_t piso_sweep_build_events(const float *w, int n, double sign, const struct piso_grid *g,
                            struct sweep_event *ev, struct sweep_event *tmp) {
    int64_t T = events_unsorted(w, n, sign, g, ev);
    if (T > 1) sort_events(ev, tmp, T);
    return T;
}

/* The positive-scale events of w with, for each entry w_i > 0, a probe (δ = 0) at the breakpoint
 * where the negative-scale sweep would take it one step past the grid's largest value: the same
 * key as piso_sweep_build_events(w, −1) computes for it. Sorted ascending (ties in input order). */
int64_t piso_sweep_build_events_paired(const float *w, int n, const struct piso_grid *g, struct sweep_event *ev,
                                       struct sweep_event *tmp) {
    int64_t T = events_unsorted(w, n, 1.0, g, ev);
    double inv0 = 2.0 / ((double)g->v[0] + (double)g->v[1]);
    for (int i = 0; i < n; i++)
        if (w[i] > 0) ev[T++] = (struct sweep_event){(-1.0 * (double)w[i]) * inv0, i, 0.0f};
    if (T > 1) sort_events(ev, tmp, T);
    return T;
}

int64_t piso_sweep_max_events(int n, const struct piso_grid *g) {
    int z = piso_grid_zero_index(g);
    int up = g->n - 1 - z, down = z;
    return (int64_t)n * (up > down ? up : down);
}

/* Accumulator limits (piso/accum.h): the number of events, in processing order (decreasing s), that
 * can be applied before the first one that breaks the limits of its tile. Every event moves one code
 * one step away from 0, so it adds δ to the tile's p (δ > 0) or n (δ < 0), and the sums only grow:
 * once a tile is infeasible, every smaller scale is. -1 when out of memory. */
static int64_t feasible_events(const struct sweep_event *ev, int64_t T, int n, const struct piso_accum *a,
                               const int *tile_of, int n_tiles) {
    if (!a) return T;
    int T_len = a->tile > 0 && a->tile < n ? a->tile : n;
    if (!tile_of) n_tiles = (n + T_len - 1) / T_len;
    int64_t *sums = calloc((size_t)(2 * (n_tiles > 0 ? n_tiles : 1)), sizeof(int64_t));
    if (!sums) return -1;
    const int64_t A = piso_accum_max(a);
    int64_t c = 0;
    for (; c < T; c++) {
        const struct sweep_event *e = &ev[T - 1 - c];
        int t = tile_of ? tile_of[e->i] : e->i / T_len;
        int64_t *p = sums + 2 * t, *q = p + 1;
        if (e->delta > 0) *p += (int64_t)lrintf(e->delta);
        else *q += (int64_t)lrintf(e->delta);
        if (piso_accum_worst(a, *p, *q) > A) break;
    }
    free(sums);
    return c;
}

double piso_accum_min_scale(const float *w, int n, const struct piso_grid *g, const struct piso_accum *a,
                            const int *tile_of, int n_tiles, double sign) {
    int64_t Tmax = piso_sweep_max_events(n, g);
    struct sweep_event *ev = malloc(sizeof *ev * (size_t)(Tmax > 0 ? Tmax : 1));
    struct sweep_event *tmp = malloc(sizeof *tmp * (size_t)(Tmax > 0 ? Tmax : 1));
    double s = NAN;
    if (ev && tmp) {
        int64_t T = piso_sweep_build_events(w, n, sign, g, ev, tmp);
        int64_t c = feasible_events(ev, T, n, a, tile_of, n_tiles);
        /* just above the breakpoint of the first violation: its events are not applied there */
        if (c >= 0) s = c < T ? ev[T - 1 - c].s * (1 + 2 * SWEEP_MARGIN) : 0;
    }
    free(ev), free(tmp);
    return s;
}

static void add_pending(struct sweep_best *best, double c) {
    for (int k = 0; k < best->n_pending; k++)
        if (best->pending[k] == c) return;
    if (best->n_pending < SWEEP_PENDING) best->pending[best->n_pending++] = c;
    else best->overflow = 1;
}

/* Representable scales only: E is a convex parabola on the interval, so the best representable
 * scale in it is one of the two neighbours of its (clamped) vertex: O(log |scales|) per interval.
 * A neighbour within the margin of an end of the interval sits on a rounding breakpoint, where
 * the levels depend on the tie rule: it is left to an exact evaluation. */
static void consider_set(double a, double b, double s_lo, double s_hi, struct sweep_best *best) {
    double v = a / b, c[2];
    if (v < s_lo) v = s_lo;
    if (v > s_hi) v = s_hi;
    piso_grid_scale_bracket(best->g, v, &c[0], &c[1]);
    for (int k = 0; k < 2; k++) {
        const double x = c[k];
        if (!(x > 0) || !isfinite(x) || x < s_lo * (1 - SWEEP_MARGIN) || x > s_hi * (1 + SWEEP_MARGIN)) continue;
        if (x <= s_lo * (1 + SWEEP_MARGIN) || x >= s_hi * (1 - SWEEP_MARGIN)) {
            add_pending(best, x);
            continue;
        }
        const double E = x * (b * x - 2 * a);
        if (E < best->E) best->E = E, best->s = x;
    }
}

/* Minimises b·s² − 2a·s over the interval (s_lo, s_hi) shrunk by the margin. */
void piso_sweep_consider(double a, double b, double s_lo, double s_hi, struct sweep_best *best) {
    if (!(b > 0)) return; /* q ≠ 0 but X̃q = 0: E = 0 here, never better than q = 0 */
    if (best->g && best->g->scale_set) {
        consider_set(a, b, s_lo, s_hi, best);
        return;
    }
    double lo = s_lo > 0 ? s_lo * (1 + SWEEP_MARGIN) : s_hi * 1e-12;
    double hi = s_hi * (1 - SWEEP_MARGIN);
    if (lo > hi) lo = hi = 0.5 * (s_lo + s_hi);
    double s = a / b;
    if (s < lo) s = lo;
    if (s > hi) s = hi;
    double E = s * (b * s - 2 * a);
    if (E < best->E) {
        best->E = E;
        best->s = s;
    }
}

/* Dense sweep. b needs, at each event c, h_i = (H·q)_i for the event's own entry i just before
 * the event, i.e. hval[c] = Σ_{c' < c} δ_c'·H[i_c, i_c']. Keeping all of h = H·q current costs a
 * full row of H per event, and for large n those rows stream from memory (n²·|grid|/2 floats per
 * sweep). Instead h is built one tile of SWEEP_TILE columns at a time: for a tile, every event
 * adds δ·H[i_c, tile] to a register-resident accumulator, and an event whose entry lies in the
 * tile reads its hval first. The panel H[:, tile] stays in cache across the whole event stream, so
 * H leaves memory once per sweep; the work is the same O(T·n). Then one sequential pass over the
 * events updates a, b (fp64) and evaluates every interval. */
typedef float vtile __attribute__((vector_size(SWEEP_VW * 4)));

/* One full tile of NV vectors (NV·SWEEP_VW columns) starting at j0; events in processing order.
 * Always inlined with a constant NV and fully unrolled, so the accumulators stay in registers (the
 * only variable index, the event's own column, reads a stack copy). */
/* P: column j0 of the panel, rows ldh apart (H + j0, or a packed copy). */
/* PAIR: a second vector h2 = H·x follows the steps dl2 of x in the same pass (hval2[c] = h2[i_c]
 * before step c), for the pruned sweep's paired signs (piso_prune.c). */
static inline __attribute__((always_inline)) void tile_pass_vec(const int NV, const int PAIR, const int32_t *idx,
                                                               const float *dl, int64_t T, const float *P, int ldh,
                                                               int j0, const float *h0, float *hval, float *h_out,
                                                               const float *dl2, float *h2, float *hval2) {
    enum { V = SWEEP_VW, VB = SWEEP_VW * 4 };
    const int W = NV * V;
    vtile a[8] = {{0}}, a2[8] = {{0}};
    if (h0) { /* a walk that starts from a known h = H·q (the pruned sweep's windows) */
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) memcpy(&a[v], h0 + j0 + v * V, VB);
    }
    if (PAIR) {
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) memcpy(&a2[v], h2 + j0 + v * V, VB);
    }
    for (int64_t c = 0; c < T; c++) {
        int i = idx[c];
        unsigned k = (unsigned)(i - j0);
        if (k < (unsigned)W) {
            float t[SWEEP_TILE];
#pragma GCC unroll 8
            for (int v = 0; v < NV; v++) memcpy(t + v * V, &a[v], VB);
            hval[c] = t[k];
            if (PAIR) {
#pragma GCC unroll 8
                for (int v = 0; v < NV; v++) memcpy(t + v * V, &a2[v], VB);
                hval2[c] = t[k];
            }
        }
        const float *row = P + (int64_t)i * ldh;
        float d = dl[c];
        if (c + 8 < T) { /* rows come in random order: fetch a later event's row early */
            const float *rn = P + (int64_t)idx[c + 8] * ldh;
            for (int j = 0; j < W; j += 16) __builtin_prefetch(rn + j);
        }
        if (!PAIR || dl2[c] == 0) {
#pragma GCC unroll 8
            for (int v = 0; v < NV; v++) { /* memcpy loads: rows need not be aligned */
                vtile r;
                memcpy(&r, row + v * V, VB);
                a[v] += d * r;
            }
        } else {
            float d2 = dl2[c];
#pragma GCC unroll 8
            for (int v = 0; v < NV; v++) {
                vtile r;
                memcpy(&r, row + v * V, VB);
                a[v] += d * r;
                a2[v] += d2 * r;
            }
        }
    }
    if (h_out) {
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) memcpy(h_out + j0 + v * V, &a[v], VB);
    }
    if (PAIR) {
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) memcpy(h2 + j0 + v * V, &a2[v], VB);
    }
}

static void tile_pass_full(const int32_t *idx, const float *dl, int64_t T, const float *P, int ldh, int j0,
                           const float *h0, float *hval, float *h_out) {
    tile_pass_vec(8, 0, idx, dl, T, P, ldh, j0, h0, hval, h_out, NULL, NULL, NULL);
}
static void tile_pass_4(const int32_t *idx, const float *dl, int64_t T, const float *P, int ldh, int j0,
                        const float *h0, float *hval, float *h_out) {
    tile_pass_vec(4, 0, idx, dl, T, P, ldh, j0, h0, hval, h_out, NULL, NULL, NULL);
}
static void tile_pass_2(const int32_t *idx, const float *dl, int64_t T, const float *P, int ldh, int j0,
                        const float *h0, float *hval, float *h_out) {
    tile_pass_vec(2, 0, idx, dl, T, P, ldh, j0, h0, hval, h_out, NULL, NULL, NULL);
}
/* with the second vector (8 vectors only with AVX-512's 32 registers: see piso_sweep_hvals_runs) */
static void tile_pass_full_pair(const struct sweep_run *x, const float *P, int ldh, int j0) {
    tile_pass_vec(8, 1, x->idx, x->dl, x->len, P, ldh, j0, x->h, x->hval, x->h, x->dl2, x->h2, x->hval2);
}
static void tile_pass_4_pair(const struct sweep_run *x, const float *P, int ldh, int j0) {
    tile_pass_vec(4, 1, x->idx, x->dl, x->len, P, ldh, j0, x->h, x->hval, x->h, x->dl2, x->h2, x->hval2);
}
static void tile_pass_2_pair(const struct sweep_run *x, const float *P, int ldh, int j0) {
    tile_pass_vec(2, 1, x->idx, x->dl, x->len, P, ldh, j0, x->h, x->hval, x->h, x->dl2, x->h2, x->hval2);
}

/* A tile of any width w <= SWEEP_TILE (the tail, or small vectors such as groups); dl2 (NULL: none)
 * as in tile_pass_vec. */
static void tile_pass_any(const int32_t *idx, const float *dl, int64_t T, const float *P, int ldh, int j0,
                          int w, const float *h0, float *hval, float *h_out, const float *dl2, float *h2,
                          float *hval2) {
    float acc[SWEEP_TILE] = {0}, acc2[SWEEP_TILE] = {0};
    if (h0) memcpy(acc, h0 + j0, sizeof(float) * (size_t)w);
    if (dl2) memcpy(acc2, h2 + j0, sizeof(float) * (size_t)w);
    for (int64_t c = 0; c < T; c++) {
        int i = idx[c];
        unsigned k = (unsigned)(i - j0);
        if (k < (unsigned)w) {
            hval[c] = acc[k];
            if (dl2) hval2[c] = acc2[k];
        }
        const float *row = P + (int64_t)i * ldh;
        float d = dl[c];
        for (int j = 0; j < w; j++) acc[j] += d * row[j];
        if (dl2 && dl2[c] != 0) {
            float d2 = dl2[c];
            for (int j = 0; j < w; j++) acc2[j] += d2 * row[j];
        }
    }
    if (h_out) memcpy(h_out + j0, acc, sizeof(float) * (size_t)w);
    if (dl2) memcpy(h2 + j0, acc2, sizeof(float) * (size_t)w);
}

void piso_sweep_hvals(const int32_t *idx, const float *dl, int64_t T, const float *H, int ldh, int n,
                      const float *h0, float *hval, float *h_out) {
    int j0 = 0;
    for (; j0 + SWEEP_TILE <= n; j0 += SWEEP_TILE) tile_pass_full(idx, dl, T, H + j0, ldh, j0, h0, hval, h_out);
    if (j0 < n) tile_pass_any(idx, dl, T, H + j0, ldh, j0, n - j0, h0, hval, h_out, NULL, NULL, NULL);
}

/* Several walks over the same H: the tile loop is outside the walk loop, so each panel H[:, tile]
 * is read once from memory for all of them instead of once per walk, and the two threads take
 * different tiles. With a workspace the panel is first copied to contiguous rows: H's rows are a
 * power of two apart, so in place a panel's rows map onto a few cache sets and most of it is evicted
 * before it is used again. Every value is computed exactly as piso_sweep_hvals computes it. */
/* Vectors per panel column group: the widest tile (8, 4 or 2 vectors) whose packed panel, n rows,
 * fits in half the core's L2 cache. Every event reads one random row of the panel, so a panel that
 * spills to L3 makes the walk wait on memory (at n = 8192 with AVX-512, 4 MiB panels ran at half the
 * rate of 1 MiB ones); narrower tiles mean more passes over the event lists, so no narrower than
 * needed. The width changes no result. */
static int panel_vectors(int n) {
    static long l2 = -1;
    if (l2 < 0) {
        long v = -1;
#ifdef _SC_LEVEL2_CACHE_SIZE
        v = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
        l2 = v > 0 ? v : 1L << 20; /* unknown: assume 1 MiB */
    }
    int nv = 8;
    while (nv > 2 && (long)n * nv * SWEEP_VW * (long)sizeof(float) > l2 / 2) nv /= 2;
    return nv;
}

size_t piso_sweep_runs_workspace(int n) { return (size_t)n * SWEEP_TILE; }

size_t piso_sweep_packed_floats(int n) { return (size_t)n * (size_t)n; }

/* Columns j0 … j0 + w − 1 of H [n, n] into pk as n contiguous rows of w floats. */
static void panel_copy(const float *H, int ldh, int n, int j0, int w, float *pk) {
    for (int i = 0; i < n; i++) memcpy(pk + (size_t)i * w, H + (int64_t)i * ldh + j0, sizeof(float) * (size_t)w);
}

/* Panel t (columns j0 = t·TW …) at out + j0·n, its n rows w floats apart: the layout the walks read
 * when piso_sweep_hvals_runs gets it, so H is copied once per layer instead of once per pass. */
void piso_sweep_pack(const float *H, int ldh, int n, float *out) {
    const int TW = panel_vectors(n) * SWEEP_VW, ntiles = (n + TW - 1) / TW;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < ntiles; t++) {
        int j0 = t * TW, w = n - j0 < TW ? n - j0 : TW;
        panel_copy(H, ldh, n, j0, w, out + (size_t)j0 * n);
    }
}

/* Brings a packed panel into this core's cache in one sequential read before a walk hits its rows
 * in random order (the hardware prefetcher streams sequential lines; random ones each wait). */
static void panel_warm(const float *P, size_t nfloats) {
    for (size_t j = 0; j < nfloats; j += 16) __builtin_prefetch(P + j, 0, 2);
}

void piso_sweep_hvals_runs(const struct sweep_run *runs, int nruns, const float *H, int ldh, int n,
                           const float *packed, float *work, int nwork) {
    const int nv = panel_vectors(n), TW = nv * SWEEP_VW;
    const int pair = nruns > 0 && runs[0].dl2 != NULL;
    int ntiles = (n + TW - 1) / TW;
    int64_t steps = 0;
    for (int r = 0; r < nruns; r++) steps += runs[r].len > 0 ? runs[r].len : 0;
    if (steps < n) work = NULL, packed = NULL; /* the copy (n panel rows) would cost more than it saves */
#pragma omp parallel for schedule(dynamic, 1)
    for (int t = 0; t < ntiles; t++) {
        int j0 = t * TW, w = n - j0 < TW ? n - j0 : TW;
        int me = omp_get_thread_num();
        const float *P = H + j0;
        int ldp = ldh;
        if (packed) {
            P = packed + (size_t)j0 * n, ldp = w;
            panel_warm(P, (size_t)n * w);
        } else if (work && me < nwork) {
            float *pk = work + (size_t)me * piso_sweep_runs_workspace(n);
            panel_copy(H, ldh, n, j0, w, pk);
            P = pk, ldp = w;
        }
        for (int r = 0; r < nruns; r++) {
            const struct sweep_run *x = &runs[r];
            if (x->len <= 0) continue;
            if (pair) {
                /* without AVX-512, 8 + 8 accumulators would not fit the 16 registers: two half tiles */
                if (w == TW && nv == 8 && SWEEP_VW == 16) tile_pass_full_pair(x, P, ldp, j0);
                else if (w == TW && nv == 8) tile_pass_4_pair(x, P, ldp, j0), tile_pass_4_pair(x, P + 4 * SWEEP_VW, ldp, j0 + 4 * SWEEP_VW);
                else if (w == TW && nv == 4) tile_pass_4_pair(x, P, ldp, j0);
                else if (w == TW && nv == 2) tile_pass_2_pair(x, P, ldp, j0);
                else tile_pass_any(x->idx, x->dl, x->len, P, ldp, j0, w, x->h, x->hval, x->h, x->dl2, x->h2, x->hval2);
            } else if (w == TW && nv == 8) tile_pass_full(x->idx, x->dl, x->len, P, ldp, j0, x->h, x->hval, x->h);
            else if (w == TW && nv == 4) tile_pass_4(x->idx, x->dl, x->len, P, ldp, j0, x->h, x->hval, x->h);
            else if (w == TW && nv == 2) tile_pass_2(x->idx, x->dl, x->len, P, ldp, j0, x->h, x->hval, x->h);
            else tile_pass_any(x->idx, x->dl, x->len, P, ldp, j0, w, x->h, x->hval, x->h, NULL, NULL, NULL);
        }
    }
}

/* ---- the X̃ form (see sweep_internal.h) ------------------------------------------------------ */
/* Tokens per tile: 32 (two 16-wide vectors with AVX-512, four 8-wide with AVX2), so a panel (n rows of
 * 32 floats) is 1 MiB at n = 8192, as H's panels are. */
#define XTILE 32
#define XTILE_NV (XTILE / SWEEP_VW)

int piso_sweep_xrows(int t) { return (t + XTILE - 1) / XTILE * XTILE; }

size_t piso_sweep_xpacked_floats(int t, int n) { return (size_t)piso_sweep_xrows(t) * (size_t)n; }

/* Tile k (tokens k·XTILE …) at out + k·XTILE·n: n rows of XTILE floats, row i = X̃[tokens, i]
 * (zeros past t). */
void piso_sweep_pack_x(const float *X, int64_t ldx, int t, int n, float *out) {
    const int ntiles = piso_sweep_xrows(t) / XTILE;
#pragma omp parallel for schedule(static)
    for (int k = 0; k < ntiles; k++) {
        float *P = out + (size_t)k * XTILE * n;
        for (int j = 0; j < XTILE; j++) {
            const int tok = k * XTILE + j;
            if (tok < t) {
                const float *x = X + (int64_t)tok * ldx;
                for (int i = 0; i < n; i++) P[(size_t)i * XTILE + j] = x[i];
            } else
                for (int i = 0; i < n; i++) P[(size_t)i * XTILE + j] = 0;
        }
    }
}

/* Horizontal sums of p (and p2) in a fixed order. */
static inline float vsum(const vtile *pp) {
    const vtile p = *pp;
#if defined(__AVX__)
#if SWEEP_VW == 16
    __m512 z;
    memcpy(&z, &p, sizeof z);
    __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(z), 1));
    __m256 y = _mm256_add_ps(_mm512_castps512_ps256(z), hi);
#else
    __m256 y;
    memcpy(&y, &p, sizeof y);
#endif
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(y), _mm256_extractf128_ps(y, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    return _mm_cvtss_f32(_mm_add_ss(x, _mm_movehdup_ps(x)));
#else
    float t[SWEEP_VW];
    memcpy(t, &p, sizeof t);
    for (int k = 0; k < 4; k++) t[k] += t[k + 4];
    return (t[0] + t[2]) + (t[1] + t[3]);
#endif
}
static inline void vsum2(const vtile *pp, const vtile *pp2, float *s, float *s2) {
    const vtile p = *pp, p2 = *pp2;
#if SWEEP_VW == 16
    __m512 a, b;
    memcpy(&a, &p, sizeof a), memcpy(&b, &p2, sizeof b);
    /* 128-bit chunks: [a0 + a2, a1 + a3, b0 + b2, b1 + b3], then each pair summed */
    __m512 c = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
    c = _mm512_add_ps(c, _mm512_shuffle_f32x4(c, c, 0xB1));
    c = _mm512_add_ps(c, _mm512_permute_ps(c, 0x4E));
    c = _mm512_add_ps(c, _mm512_permute_ps(c, 0xB1));
    *s = _mm512_cvtss_f32(c), *s2 = _mm_cvtss_f32(_mm512_extractf32x4_ps(c, 2));
#else
    *s = vsum(&p), *s2 = vsum(&p2);
#endif
}

/* One tile of tokens j0 … j0 + XTILE − 1 for one walk: the tile's part of each event's dot product
 * X̃_iᵀ·v (v before the step; added to hval in tile order, the first tile sets it), then v += δ·X̃_i. */
static inline __attribute__((always_inline)) void xtile_pass(const int PAIR, const struct sweep_run *x,
                                                            const float *P, int j0, int first) {
    enum { V = SWEEP_VW, VB = SWEEP_VW * 4, NV = XTILE_NV };
    vtile a[NV], a2[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) {
        memcpy(&a[v], x->h + j0 + v * V, VB);
        if (PAIR) memcpy(&a2[v], x->h2 + j0 + v * V, VB);
    }
    const int32_t *idx = x->idx;
    const float *dl = x->dl, *dl2 = x->dl2;
    float *hval = x->hval, *hval2 = x->hval2;
    const int64_t T = x->len;
    for (int64_t c = 0; c < T; c++) {
        const float *row = P + (int64_t)idx[c] * XTILE;
        if (c + 8 < T) {
            const float *rn = P + (int64_t)idx[c + 8] * XTILE;
            __builtin_prefetch(rn), __builtin_prefetch(rn + 16);
        }
        vtile r[NV], p = {0}, p2 = {0};
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            memcpy(&r[v], row + v * V, VB);
            p += r[v] * a[v];
            if (PAIR) p2 += r[v] * a2[v];
        }
        if (PAIR) {
            float sp, sp2;
            vsum2(&p, &p2, &sp, &sp2);
            hval[c] = first ? sp : hval[c] + sp;
            hval2[c] = first ? sp2 : hval2[c] + sp2;
        } else {
            const float sp = vsum(&p);
            hval[c] = first ? sp : hval[c] + sp;
        }
        const float d = dl[c];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) a[v] += d * r[v];
        if (PAIR && dl2[c] != 0) {
            const float d2 = dl2[c];
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) a2[v] += d2 * r[v];
        }
    }
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) {
        memcpy(x->h + j0 + v * V, &a[v], VB);
        if (PAIR) memcpy(x->h2 + j0 + v * V, &a2[v], VB);
    }
}
static void xtile_pass_single(const struct sweep_run *x, const float *P, int j0, int first) {
    xtile_pass(0, x, P, j0, first);
}
static void xtile_pass_pair(const struct sweep_run *x, const float *P, int j0, int first) {
    xtile_pass(1, x, P, j0, first);
}

/* Each thread owns whole walks (a contiguous share of the steps) and takes every tile in order, so a
 * walk's sums never depend on the thread count; each thread reads all of X̃ once per call. */
void piso_sweep_xvals_runs(const struct sweep_run *runs, int nruns, const float *xpacked, int t, int n) {
    const int ntiles = piso_sweep_xrows(t) / XTILE;
    const int pair = nruns > 0 && runs[0].dl2 != NULL;
    int64_t steps = 0;
    for (int r = 0; r < nruns; r++) steps += runs[r].len > 0 ? runs[r].len : 0;
#pragma omp parallel
    {
        int me = omp_get_thread_num(), nt = 1;
#ifdef _OPENMP
        nt = omp_get_num_threads();
#endif
        /* walks [r0, r1): those whose first step falls in this thread's share of all steps */
        int r0 = 0, r1 = 0;
        int64_t acc = 0;
        for (int r = 0; r < nruns; r++) {
            int64_t who = steps > 0 ? acc * nt / steps : 0;
            if (who < me) r0 = r + 1;
            if (who <= me) r1 = r + 1;
            acc += runs[r].len > 0 ? runs[r].len : 0;
        }
        for (int k = 0; k < ntiles && r0 < r1; k++) {
            const float *P = xpacked + (size_t)k * XTILE * n;
            panel_warm(P, (size_t)n * XTILE);
            for (int r = r0; r < r1; r++) {
                if (runs[r].len <= 0) continue;
                if (pair) xtile_pass_pair(&runs[r], P, k * XTILE, k == 0);
                else xtile_pass_single(&runs[r], P, k * XTILE, k == 0);
            }
        }
    }
}

/* Only the first T_feas events (processing order) are applied (accumulator limits; T otherwise). */
static void sweep_dense(const struct sweep_event *ev, int64_t T, int64_t T_feas, const float *H, int ldh, int n,
                        const double *u, double sign, int32_t *idx, float *dl, float *hval,
                        struct sweep_best *best) {
    for (int64_t c = 0; c < T_feas; c++) { /* processing order: decreasing s */
        idx[c] = ev[T - 1 - c].i;
        dl[c] = ev[T - 1 - c].delta;
    }
    piso_sweep_hvals(idx, dl, T_feas, H, ldh, n, NULL, hval, NULL);
    double a = 0, b = 0;
    for (int64_t c = 0; c < T_feas; c++) {
        int i = idx[c];
        double d = dl[c];
        b += 2.0 * d * hval[c] + d * d * H[(int64_t)i * ldh + i];
        a += d * sign * u[i];
        double s_hi = ev[T - 1 - c].s;
        if (c == T - 1) piso_sweep_consider(a, b, 0, s_hi, best);
        else if (ev[T - 2 - c].s != s_hi) piso_sweep_consider(a, b, ev[T - 2 - c].s, s_hi, best);
    }
}

static void sweep_diag(const struct sweep_event *ev, int64_t T, int64_t T_feas, const float *hdiag, const double *u,
                       const float *w, double sign, float *q, struct sweep_best *best) {
    (void)w;
    double a = 0, b = 0;
    for (int64_t t = T - 1; t >= T - T_feas; t--) {
        const struct sweep_event *e = &ev[t];
        int i = e->i;
        double d = e->delta, hii = hdiag ? hdiag[i] : 1.0;
        b += hii * (2.0 * q[i] * d + d * d);
        q[i] += e->delta;
        a += d * sign * u[i];
        if (t == 0) piso_sweep_consider(a, b, 0, e->s, best);
        else if (ev[t - 1].s != e->s) piso_sweep_consider(a, b, ev[t - 1].s, e->s, best);
    }
}

double piso_objective_dense(const float *w, int n, const float *H, int ldh, const double *u,
                            const struct piso_grid *g, float s) {
    float *q = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (!q) return NAN; /* out of memory */
    for (int i = 0; i < n; i++) q[i] = piso_grid_round(g, w[i] / s, NULL);
    double a = 0, b = 0;
    for (int i = 0; i < n; i++) {
        if (q[i] == 0) continue;
        const float *Hi = H + (int64_t)i * ldh;
        b += q[i] * piso_dot_fd(Hi, q, n);
        a += q[i] * (u ? u[i] : piso_dot_fd(Hi, w, n));
    }
    free(q);
    return (double)s * s * b - 2.0 * s * a;
}

static double objective_diag(const float *w, int n, const float *hdiag, const double *u,
                             const struct piso_grid *g, float s) {
    double a = 0, b = 0;
    for (int i = 0; i < n; i++) {
        double q = piso_grid_round(g, w[i] / s, NULL);
        double hii = hdiag ? hdiag[i] : 1.0;
        b += hii * q * q;
        a += q * (u ? u[i] : hii * w[i]);
    }
    return (double)s * s * b - 2.0 * s * a;
}

/* Shared driver: one or two positive sweeps, the exact recomputation at the fp32 scale, and the
 * fallback when nothing beats q = 0. */
static float solve(const float *w, int n, const float *H, int ldh, const float *hdiag,
                   const double *u, const struct piso_grid *g, int allow_negative, double *E_out,
                   const struct piso_accum *acc, const int *tile_of, int n_tiles) {
    int64_t Tmax = piso_sweep_max_events(n, g);
    struct sweep_event *ev = malloc(sizeof *ev * (size_t)(Tmax > 0 ? Tmax : 1));
    struct sweep_event *tmp = malloc(sizeof *tmp * (size_t)(Tmax > 0 ? Tmax : 1));
    float *scratch = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    int32_t *idx = H ? malloc(sizeof(int32_t) * (size_t)(Tmax > 0 ? Tmax : 1)) : NULL;
    float *dl = H ? malloc(sizeof(float) * (size_t)(Tmax > 0 ? Tmax : 1)) : NULL;
    float *hval = H ? malloc(sizeof(float) * (size_t)(Tmax > 0 ? Tmax : 1)) : NULL;
    double *udiag = NULL;
    if (!H && !u) udiag = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    if (!ev || !tmp || !scratch || (H && (!idx || !dl || !hval)) || (!H && !u && !udiag)) {
        /* out of memory: NaN, which no solution can be (the callers report it) */
        free(ev), free(tmp), free(scratch), free(udiag), free(idx), free(dl), free(hval);
        if (E_out) *E_out = NAN;
        return NAN;
    }
    if (udiag) {
        for (int i = 0; i < n; i++) udiag[i] = (hdiag ? hdiag[i] : 1.0) * w[i];
        u = udiag;
    }
    int nsign = (allow_negative && !g->symmetric) ? 2 : 1;
    float s_best = 0;
    double E_best = INFINITY;
    int oom = 0;
    if (g->scale_set) nsign = 1; /* hardware scales are positive */
    for (int k = 0; k < nsign; k++) {
        double sign = k == 0 ? 1.0 : -1.0;
        struct sweep_best best = {0, INFINITY, g, 0, {0}, 0};
        int64_t T = piso_sweep_build_events(w, n, sign, g, ev, tmp);
        if (T == 0) continue;
        int64_t T_feas = feasible_events(ev, T, n, acc, tile_of, n_tiles);
        if (T_feas < 0) {
            oom = 1;
            break;
        }
        if (H) {
            sweep_dense(ev, T, T_feas, H, ldh, n, u, sign, idx, dl, hval, &best);
        } else {
            memset(scratch, 0, sizeof(float) * (size_t)n);
            sweep_diag(ev, T, T_feas, hdiag, u, w, sign, scratch, &best);
        }
        if (g->scale_set) {
            /* the scales on breakpoints, exactly (all of them if there were too many) */
            const int all = best.overflow, cnt = all ? piso_grid_scale_count(g) : best.n_pending;
            for (int p = 0; p < cnt; p++) {
                const float c = (float)(all ? piso_grid_scale_at(g, p) : best.pending[p]);
                if (!(c > 0) || !isfinite(c)) continue;
                const double E = H ? piso_objective_dense(w, n, H, ldh, u, g, c) : objective_diag(w, n, hdiag, u, g, c);
                if (isnan(E)) oom = 1;
                if (E < best.E) best.E = E, best.s = c;
            }
        }
        if (!(best.E < 0)) continue;
        float s = (float)(sign * best.s);
        if (s == 0 || !isfinite(s)) continue;
        /* the exact E at the fp32 scale costs one more pass over H: only when asked for. (The
         * margin keeps fp32 rounding of s inside the interval, so the swept E is that E up to
         * the rounding of the incremental sums.) */
        double E = !E_out ? best.E
                 : H      ? piso_objective_dense(w, n, H, ldh, u, g, s)
                          : objective_diag(w, n, hdiag, u, g, s);
        if (isnan(E)) oom = 1;
        if (E < E_best) {
            E_best = E;
            s_best = s;
        }
    }
    if (!(E_best < 0)) {
        /* nothing improves on q = 0 (all-zero w, dead inputs, a <= 0 everywhere) */
        s_best = acc ? piso_scale_absmax_accum(w, n, g, acc, tile_of, n_tiles) : piso_scale_absmax(w, n, g);
        if (isnan(s_best)) oom = 1;
        else if (E_out)
            E_best = H ? piso_objective_dense(w, n, H, ldh, u, g, s_best) : objective_diag(w, n, hdiag, u, g, s_best);
        if (isnan(E_best)) oom = 1;
    }
    if (oom) s_best = NAN, E_best = NAN;
    if (E_out) *E_out = E_best;
    free(ev);
    free(tmp);
    free(scratch);
    free(udiag);
    free(idx);
    free(dl);
    free(hval);
    return s_best;
}

float piso_solve_scale_dense(const float *w, int n, const float *H, int ldh, const double *u,
                             const struct piso_grid *g, int allow_negative, double *E_out) {
    return piso_solve_scale_dense_accum(w, n, H, ldh, u, g, allow_negative, E_out, NULL, NULL, 0);
}

float piso_solve_scale_diag(const float *w, int n, const float *hdiag, const double *u,
                            const struct piso_grid *g, int allow_negative, double *E_out) {
    return solve(w, n, NULL, 0, hdiag, u, g, allow_negative, E_out, NULL, NULL, 0);
}

float piso_solve_scale_dense_accum(const float *w, int n, const float *H, int ldh, const double *u,
                                   const struct piso_grid *g, int allow_negative, double *E_out,
                                   const struct piso_accum *a, const int *tile_of, int n_tiles) {
    double *uh = NULL;
    if (!u) { /* u = H·w */
        uh = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
        if (!uh) {
            if (E_out) *E_out = NAN;
            return NAN; /* out of memory */
        }
        for (int i = 0; i < n; i++) uh[i] = piso_dot_fd(H + (int64_t)i * ldh, w, n);
        u = uh;
    }
    float s = solve(w, n, H, ldh, NULL, u, g, allow_negative, E_out, a, tile_of, n_tiles);
    free(uh);
    return s;
}

float piso_solve_scale_diag_accum(const float *w, int n, const float *hdiag, const double *u,
                                  const struct piso_grid *g, int allow_negative, double *E_out,
                                  const struct piso_accum *a, const int *tile_of, int n_tiles) {
    return solve(w, n, NULL, 0, hdiag, u, g, allow_negative, E_out, a, tile_of, n_tiles);
}

float piso_scale_absmax_accum(const float *w, int n, const struct piso_grid *g, const struct piso_accum *a,
                              const int *tile_of, int n_tiles) {
    float s = piso_scale_absmax(w, n, g);
    if (!a) return s;
    double m = piso_accum_min_scale(w, n, g, a, tile_of, n_tiles, 1.0);
    if (isnan(m)) return NAN;
    return m > s ? (float)m : s;
}
