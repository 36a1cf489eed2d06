/* Channel permutations balanced for block rotations (MixQuant / PeRQ, algorithms.md §7) and the
 * calibration activations they are computed from. */
#include "transform_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct ranked {
    double score;
    int idx;
};

/* descending score, ties by ascending channel index (deterministic) */
static int by_score_desc(const void *a, const void *b) {
    const struct ranked *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->idx - y->idx;
}

/* order[0..n) = channels by decreasing mean |x| (use_max = 0) or max |x| (use_max = 1) */
static int rank_channels(const float *X, int64_t ntok, int n, int use_max, int *order) {
    struct ranked *r = calloc((size_t)n, sizeof *r);
    if (!r) return piso_errorf("permutation: out of memory");
    for (int j = 0; j < n; j++) r[j].idx = j;
    for (int64_t t = 0; t < ntok; t++)
        for (int j = 0; j < n; j++) {
            double v = fabs((double)X[t * n + j]);
            r[j].score = use_max ? fmax(r[j].score, v) : r[j].score + v;
        }
    if (!use_max)
        for (int j = 0; j < n; j++) r[j].score /= (double)(ntok > 0 ? ntok : 1);
    qsort(r, (size_t)n, sizeof *r, by_score_desc);
    for (int j = 0; j < n; j++) order[j] = r[j].idx;
    free(r);
    return 0;
}

/* MassDiff, the published steps: seed each block with one of the nb top channels, then give each
 * next channel (by decreasing mean |x|) to the open block k minimising mean_t(mass[t,k] + |x_tj|),
 * where mass[t,k] is the block's per-token ℓ1 mass so far. */
static int massdiff(const float *X, int64_t ntok, int n, int b, int *perm) {
    int nb = n / b;
    int *order = malloc((size_t)n * sizeof *order), *fill = calloc((size_t)nb, sizeof *fill);
    double *mass = calloc((size_t)ntok * nb, sizeof *mass); /* [ntok, nb] */
    if (!order || !fill || !mass || rank_channels(X, ntok, n, 0, order)) {
        free(order), free(fill), free(mass);
        return piso_errorf("massdiff: out of memory (%lld tokens x %d blocks)", (long long)ntok, nb);
    }
    for (int r = 0; r < n; r++) {
        int j = order[r], best = r < nb ? r : -1;
        if (best < 0) {
            double best_cost = INFINITY;
            for (int k = 0; k < nb; k++) {
                if (fill[k] == b) continue; /* full: +inf */
                double s = 0;
                for (int64_t t = 0; t < ntok; t++) s += mass[t * nb + k] + fabs((double)X[t * n + j]);
                s /= (double)ntok;
                if (s < best_cost) best_cost = s, best = k;
            }
        }
        for (int64_t t = 0; t < ntok; t++) mass[t * nb + best] += fabs((double)X[t * n + j]);
        perm[best * b + fill[best]++] = j;
    }
    free(order), free(fill), free(mass);
    return 0;
}

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int piso_permutation(enum piso_permute_mode mode, const float *X, int64_t ntok, int n, int b, uint64_t seed, int *perm) {
    if (b <= 0 || n % b) return piso_errorf("permutation: block %d does not divide the dimension %d", b, n);
    if (mode != PISO_PERMUTE_RANDOM && (ntok <= 0 || !X))
        return piso_errorf("permutation %s needs calibration activations", piso_permute_mode_name(mode));
    switch (mode) {
    case PISO_PERMUTE_NONE:
        for (int i = 0; i < n; i++) perm[i] = i;
        return 0;
    case PISO_PERMUTE_MASSDIFF: return massdiff(X, ntok, n, b, perm);
    case PISO_PERMUTE_ABSMAX: return rank_channels(X, ntok, n, 1, perm);
    case PISO_PERMUTE_ZIGZAG: {
        int nb = n / b, *order = malloc((size_t)n * sizeof *order), *fill = calloc((size_t)nb, sizeof *fill);
        if (!order || !fill || rank_channels(X, ntok, n, 1, order)) {
            free(order), free(fill);
            return piso_errorf("zigzag: out of memory");
        }
        for (int r = 0; r < n; r++) { /* snake: 0, 1, …, nb−1, nb−1, …, 0, 0, 1, … */
            int pos = r % nb, k = (r / nb) % 2 ? nb - 1 - pos : pos;
            perm[k * b + fill[k]++] = order[r];
        }
        free(order), free(fill);
        return 0;
    }
    case PISO_PERMUTE_RANDOM: {
        uint64_t s = seed;
        for (int i = 0; i < n; i++) perm[i] = i;
        for (int i = n - 1; i > 0; i--) {
            int j = (int)(splitmix64(&s) % (uint64_t)(i + 1)), t = perm[i];
            perm[i] = perm[j], perm[j] = t;
        }
        return 0;
    }
    }
    return piso_errorf("permutation: unknown mode %d", (int)mode);
}

int piso_tr_collect(const struct piso_model *m, const int *tokens, int nwin, int seqlen, int64_t max_tokens,
                    struct piso_tr_acts *a) {
    const struct piso_config *c = &m->cfg;
    int D = c->dim, F = c->hidden_dim, L = c->n_layers;
    memset(a, 0, sizeof *a);
    int use = nwin;
    if ((int64_t)use * seqlen > max_tokens) use = (int)(max_tokens / seqlen > 0 ? max_tokens / seqlen : 1);
    int64_t T = (int64_t)use * seqlen;
    a->ntok = T;
    a->resid = malloc((size_t)T * 2 * L * D * sizeof *a->resid); /* [2·L·T, D]: attn_in, ffn_in of every layer */
    a->ffn = malloc((size_t)L * T * F * sizeof *a->ffn);         /* [L][T, F] */
    float *x = malloc((size_t)seqlen * D * sizeof *x);
    if (!a->resid || !a->ffn || !x) {
        free(x);
        piso_tr_acts_free(a);
        return piso_errorf("permutation calibration: out of memory for %lld tokens", (long long)T);
    }
    for (int w = 0; w < use; w++) {
        piso_embed(m, tokens + (size_t)w * seqlen, seqlen, x);
        for (int l = 0; l < L; l++) {
            int64_t row = (int64_t)w * seqlen;
            struct piso_block_taps taps = {
                .attn_in = a->resid + ((size_t)(2 * l) * T + row) * D,
                .ffn_in = a->resid + ((size_t)(2 * l + 1) * T + row) * D,
                .down_in = a->ffn + ((size_t)l * T + row) * F,
            };
            if (piso_block_forward(m, l, x, seqlen, &taps)) {
                free(x);
                piso_tr_acts_free(a);
                return -1;
            }
        }
    }
    free(x);
    return 0;
}

void piso_tr_acts_free(struct piso_tr_acts *a) {
    free(a->resid), free(a->ffn);
    memset(a, 0, sizeof *a);
}
