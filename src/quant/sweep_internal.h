/* Internals of the exact PiSO sweep (piso_sweep.c) shared with its pruned variant (piso_prune.c). */
#ifndef PISO_SWEEP_INTERNAL_H
#define PISO_SWEEP_INTERNAL_H

#include "piso/quant.h"

#include <stdint.h>

struct sweep_event {
    double s;    /* breakpoint: q[i] takes one step away from 0 when the scale drops below s */
    int32_t i;   /* entry */
    float delta; /* the step (signed) */
};

#define SWEEP_PENDING 64
struct sweep_best {
    double s, E;
    const struct piso_grid *g;     /* scale_set: only representable scales are candidates */
    int n_pending;                 /* representable scales on (or within the margin of) a */
    double pending[SWEEP_PENDING]; /* breakpoint: evaluated exactly by the caller */
    int overflow;                  /* more than SWEEP_PENDING of them: evaluate every scale */
};

/* Upper bound on the events of one sign's sweep for n entries. */
int64_t piso_sweep_max_events(int n, const struct piso_grid *g);
/* Events of the positive-scale sweep for sign·w, sorted by s ascending (the sweep processes them
 * from the end); tmp: scratch of the same size. Returns their number. */
int64_t piso_sweep_build_events(const float *w, int n, double sign, const struct piso_grid *g,
                                struct sweep_event *ev, struct sweep_event *tmp);
/* For a grid that is symmetric but for one extra value below (int-k: −2^(k−1) … 2^(k−1) − 1):
 * the events of the positive sign and, for every w_i > 0, a probe event (δ = 0) at w_i/m, where
 * m = (v[n−1] − v[0])/2 (the only breakpoints of the negative sign that the positive one lacks).
 * ev, tmp: room for piso_sweep_max_events. Returns their number, sorted ascending. */
int64_t piso_sweep_build_events_paired(const float *w, int n, const struct piso_grid *g, struct sweep_event *ev,
                                       struct sweep_event *tmp);
/* Minimises b·s² − 2a·s over the interval (s_lo, s_hi) shrunk by the sweep's margin into best. */
void piso_sweep_consider(double a, double b, double s_lo, double s_hi, struct sweep_best *best);
/* For a walk of T steps (entry idx[c], step dl[c]) starting from q with h0 = H·q (NULL: q = 0):
 * hval[c] = (H·q)[idx[c]] just before step c; h_out (optional, may equal h0): H·q after the walk.
 * H [n, n] with leading dimension ldh. O(T·n), tiled. */
void piso_sweep_hvals(const int32_t *idx, const float *dl, int64_t T, const float *H, int ldh, int n,
                      const float *h0, float *hval, float *h_out);
/* One walk of piso_sweep_hvals_runs: h [n] holds H·q at the start (in) and after the walk (out). */
struct sweep_run {
    const int32_t *idx;
    const float *dl;
    int64_t len;
    float *h, *hval;
    /* optional (all runs of a call, or none): a second vector h2 = H·x [n] (in and out) whose x
     * moves by dl2[c] at step c; hval2[c] = h2[idx[c]] before the step */
    const float *dl2;
    float *h2, *hval2;
};
/* piso_sweep_hvals for several walks at once (the same values), sharing the passes over H's columns.
 * packed (may be NULL): H laid out by piso_sweep_pack, read instead of H. Otherwise work (may be
 * NULL): nwork thread slots of piso_sweep_runs_workspace(n) floats, for panels packed per pass. */
void piso_sweep_hvals_runs(const struct sweep_run *runs, int nruns, const float *H, int ldh, int n,
                           const float *packed, float *work, int nwork);
/* H [n, n] (leading dimension ldh) copied panel by panel into out [piso_sweep_packed_floats(n)]. */
size_t piso_sweep_packed_floats(int n);
void piso_sweep_pack(const float *H, int ldh, int n, float *out);
size_t piso_sweep_runs_workspace(int n);

/* The X̃ form, for H = X̃ᵀX̃ with fewer tokens t than inputs n: a walk keeps v = X̃·q [t] instead of
 * h = H·q [n], and hval[c] = (X̃ᵀv)_i = (H·q)_i for the event's entry i before its step, so an event
 * reads t floats of X̃ instead of n of H. The runs' h (and h2) hold v (and X̃·x) padded to
 * piso_sweep_xrows(t) with zeros; xpacked: X̃ laid out by piso_sweep_pack_x. The same values as
 * piso_sweep_hvals_runs up to round-off (the dot products are summed tile by tile in a fixed
 * order, so they do not depend on the threads). */
int piso_sweep_xrows(int t);
size_t piso_sweep_xpacked_floats(int t, int n);
void piso_sweep_pack_x(const float *X, int64_t ldx, int t, int n, float *out);
void piso_sweep_xvals_runs(const struct sweep_run *runs, int nruns, const float *xpacked, int t, int n);

#endif
