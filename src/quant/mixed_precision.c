/* Mixed precision: the multiple-choice knapsack over layers × formats (see piso/mixed.h). */
#include "piso/mixed.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int64_t gcd64(int64_t a, int64_t b) {
    while (b) {
        int64_t t = a % b;
        a = b, b = t;
    }
    return a;
}

static int check_instance(const struct piso_mckp *p) {
    if (p->n_items < 1 || p->n_choices < 1)
        return piso_errorf("mixed precision: %d layers × %d candidates (need at least one of each)", p->n_items,
                           p->n_choices);
    for (int64_t k = 0; k < (int64_t)p->n_items * p->n_choices; k++) {
        if (p->weight[k] < 0)
            return piso_errorf("mixed precision: layer %lld, candidate %lld has %lld bits (negative)",
                               (long long)(k / p->n_choices), (long long)(k % p->n_choices), (long long)p->weight[k]);
        if (!isfinite(p->cost[k]))
            return piso_errorf("mixed precision: layer %lld, candidate %lld has a non-finite cost",
                               (long long)(k / p->n_choices), (long long)(k % p->n_choices));
    }
    return 0;
}

static int64_t min_weight(const struct piso_mckp *p, int i) {
    const int64_t *w = p->weight + (int64_t)i * p->n_choices;
    int64_t m = w[0];
    for (int c = 1; c < p->n_choices; c++)
        if (w[c] < m) m = w[c];
    return m;
}

int64_t piso_mckp_weight(const struct piso_mckp *p, const int *choice) {
    int64_t s = 0;
    for (int i = 0; i < p->n_items; i++) s += p->weight[(int64_t)i * p->n_choices + choice[i]];
    return s;
}

double piso_mckp_cost(const struct piso_mckp *p, const int *choice) {
    double s = 0;
    for (int i = 0; i < p->n_items; i++) s += p->cost[(int64_t)i * p->n_choices + choice[i]];
    return s;
}

int piso_mckp_solve(const struct piso_mckp *p, int *choice, double *total_cost, int64_t *total_weight) {
    if (check_instance(p)) return -1;
    const int n = p->n_items, nc = p->n_choices;
    int64_t base = 0, g = 0;
    for (int i = 0; i < n; i++) {
        int64_t m = min_weight(p, i);
        base += m;
        for (int c = 0; c < nc; c++) g = gcd64(g, p->weight[(int64_t)i * nc + c] - m);
    }
    if (base > p->budget)
        return piso_errorf("mixed precision: the budget of %lld bits is below the lightest assignment (%lld bits)",
                           (long long)p->budget, (long long)base);
    if (g == 0) g = 1; /* every item has one weight: any choice fits */
    const int64_t cap = (p->budget - base) / g; /* budget in units of g above the minimum */
    if ((double)n * (double)(cap + 1) > (double)PISO_MCKP_MAX_CELLS)
        return piso_errorf("mixed precision: the knapsack table would have %lld layers × %lld budget steps (> %lld cells; "
                           "bit counts share only a factor %lld)",
                           (long long)n, (long long)(cap + 1), (long long)PISO_MCKP_MAX_CELLS, (long long)g);
    const size_t W = (size_t)cap + 1;
    /* best[u]: least cost of the items so far with Σ shifted weights ≤ u·g (monotone in u, so
     * "≤" needs no final scan); pick[i·W + u]: item i's choice in that optimum */
    double *best = malloc(sizeof(double) * W), *next = malloc(sizeof(double) * W);
    unsigned char *pick = malloc((size_t)n * W);
    int64_t *sw = malloc(sizeof(int64_t) * (size_t)nc);
    if (!best || !next || !pick || !sw || nc > 255) {
        free(best), free(next), free(pick), free(sw);
        return nc > 255 ? piso_errorf("mixed precision: %d candidates (at most 255)", nc)
                        : piso_errorf("mixed precision: out of memory for the knapsack table (%lld cells)",
                                      (long long)((int64_t)n * (int64_t)W));
    }
    for (size_t u = 0; u < W; u++) best[u] = 0;
    for (int i = 0; i < n; i++) {
        const int64_t m = min_weight(p, i);
        const double *cost = p->cost + (int64_t)i * nc;
        for (int c = 0; c < nc; c++) sw[c] = (p->weight[(int64_t)i * nc + c] - m) / g;
        unsigned char *pk = pick + (size_t)i * W;
        for (size_t u = 0; u < W; u++) {
            double b = INFINITY;
            int bc = 0;
            for (int c = 0; c < nc; c++) {
                if (sw[c] > (int64_t)u) continue;
                double v = best[u - (size_t)sw[c]] + cost[c];
                if (v < b) b = v, bc = c;
            }
            next[u] = b, pk[u] = (unsigned char)bc;
        }
        double *t = best;
        best = next, next = t;
    }
    size_t u = W - 1;
    for (int i = n - 1; i >= 0; i--) {
        int c = pick[(size_t)i * W + u];
        choice[i] = c;
        u -= (size_t)((p->weight[(int64_t)i * nc + c] - min_weight(p, i)) / g);
    }
    free(best), free(next), free(pick), free(sw);
    if (total_cost) *total_cost = piso_mckp_cost(p, choice);
    if (total_weight) *total_weight = piso_mckp_weight(p, choice);
    return 0;
}

int piso_mckp_uniform(const struct piso_mckp *p) {
    int best = -1;
    double bc = INFINITY;
    for (int c = 0; c < p->n_choices; c++) {
        int64_t w = 0;
        double s = 0;
        for (int i = 0; i < p->n_items; i++) w += p->weight[(int64_t)i * p->n_choices + c], s += p->cost[(int64_t)i * p->n_choices + c];
        if (w <= p->budget && (best < 0 || s < bc)) best = c, bc = s;
    }
    return best;
}

/* The lightest choice of item i strictly heavier than choice cur (equal weights: lower index), or -1. */
static int next_heavier(const struct piso_mckp *p, int i, int cur) {
    const int64_t *w = p->weight + (int64_t)i * p->n_choices;
    int best = -1;
    for (int c = 0; c < p->n_choices; c++)
        if (w[c] > w[cur] && (best < 0 || w[c] < w[best])) best = c;
    return best;
}

int piso_mckp_kl_greedy(const struct piso_mckp *p, const double *sensitivity, int *choice) {
    if (check_instance(p)) return -1;
    const int n = p->n_items, nc = p->n_choices;
    int *order = malloc(sizeof(int) * (size_t)n);
    if (!order) return piso_errorf("out of memory");
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        int lightest = 0;
        for (int c = 1; c < nc; c++)
            if (p->weight[(int64_t)i * nc + c] < p->weight[(int64_t)i * nc + lightest]) lightest = c;
        choice[i] = lightest, total += p->weight[(int64_t)i * nc + lightest], order[i] = i;
    }
    if (total > p->budget) {
        free(order);
        return piso_errorf("mixed precision: the budget of %lld bits is below the lightest assignment (%lld bits)",
                           (long long)p->budget, (long long)total);
    }
    /* insertion sort by decreasing sensitivity, ties by index (stable) */
    for (int a = 1; a < n; a++)
        for (int b = a; b > 0 && sensitivity[order[b]] > sensitivity[order[b - 1]]; b--) {
            int t = order[b];
            order[b] = order[b - 1], order[b - 1] = t;
        }
    for (int promoted = 1; promoted;) {
        promoted = 0;
        for (int k = 0; k < n; k++) {
            int i = order[k], c = next_heavier(p, i, choice[i]);
            if (c < 0) continue;
            int64_t d = p->weight[(int64_t)i * nc + c] - p->weight[(int64_t)i * nc + choice[i]];
            if (total + d > p->budget) continue;
            total += d, choice[i] = c, promoted = 1;
        }
    }
    free(order);
    return 0;
}

/* Average ranks (1-based) of x[n] into r[n]. idx: scratch [n]. */
static void ranks(int n, const double *x, double *r, int *idx) {
    for (int i = 0; i < n; i++) idx[i] = i;
    for (int a = 1; a < n; a++) /* insertion sort: n is small (layers × candidates) */
        for (int b = a; b > 0 && x[idx[b]] < x[idx[b - 1]]; b--) {
            int t = idx[b];
            idx[b] = idx[b - 1], idx[b - 1] = t;
        }
    for (int a = 0; a < n;) {
        int b = a;
        while (b + 1 < n && x[idx[b + 1]] == x[idx[a]]) b++;
        for (int k = a; k <= b; k++) r[idx[k]] = 0.5 * (a + b) + 1;
        a = b + 1;
    }
}

double piso_spearman(int n, const double *x, const double *y) {
    if (n < 2) return 0;
    double *rx = malloc(sizeof(double) * (size_t)n), *ry = malloc(sizeof(double) * (size_t)n);
    int *idx = malloc(sizeof(int) * (size_t)n);
    if (!rx || !ry || !idx) {
        free(rx), free(ry), free(idx);
        return NAN;
    }
    ranks(n, x, rx, idx), ranks(n, y, ry, idx);
    double mx = 0, my = 0, sxy = 0, sxx = 0, syy = 0;
    for (int i = 0; i < n; i++) mx += rx[i], my += ry[i];
    mx /= n, my /= n;
    for (int i = 0; i < n; i++)
        sxy += (rx[i] - mx) * (ry[i] - my), sxx += (rx[i] - mx) * (rx[i] - mx), syy += (ry[i] - my) * (ry[i] - my);
    free(rx), free(ry), free(idx);
    return sxx > 0 && syy > 0 ? sxy / sqrt(sxx * syy) : 0;
}
