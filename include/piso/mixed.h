/* piso/mixed.h — mixed precision under a bit budget: one format per layer, chosen as the exact
 * optimum of a multiple-choice knapsack.
 *
 * Items are the linear layers, choices the candidate formats. Choosing candidate c for item i costs
 * weight[i, c] bits (the bits the file stores: codes plus scales, an integer) and adds cost[i, c]
 * to the predicted loss. The assignment minimises Σ_i cost[i, c_i] subject to Σ_i weight[i, c_i]
 * ≤ budget. */
#ifndef PISO_MIXED_H
#define PISO_MIXED_H

#include "piso/common.h"

struct piso_mckp {
    int n_items, n_choices;
    const int64_t *weight; /* [n_items, n_choices] bits, >= 0 */
    const double *cost;    /* [n_items, n_choices] predicted loss, finite */
    int64_t budget;        /* bits */
};

/* Largest dynamic-programming table piso_mckp_solve accepts (cells of one byte each). */
#define PISO_MCKP_MAX_CELLS ((int64_t)1 << 29)

/* The exact optimum by dynamic programming over the budget. Exact because the weights are integers:
 * each item's weights are shifted by their minimum (the budget by the sum of the minima) and divided
 * by the gcd g of all shifted weights, which maps Σ w ≤ B onto Σ w/g ≤ floor(B'/g) without loss.
 * Table: n_items × (floor(B'/g) + 1) bytes for the choices (backtracking) plus two fp64 rows.
 * Ties between equal costs go to the lower choice index. choice [n_items] receives the assignment;
 * total_cost / total_weight (may be NULL) its sums (cost summed in item order).
 * Errors (message names the numbers): no assignment fits the budget, negative weights, non-finite
 * costs, a table larger than PISO_MCKP_MAX_CELLS. */
int piso_mckp_solve(const struct piso_mckp *p, int *choice, double *total_cost, int64_t *total_weight);

/* Uniform baseline: the one choice c used for every item with Σ_i weight[i, c] ≤ budget and the
 * least Σ_i cost[i, c]. Returns c, or -1 (no message) when no uniform choice fits. */
int piso_mckp_uniform(const struct piso_mckp *p);

/* KL-greedy baseline (dMX's layer selection): every item starts at its lightest choice; items are
 * visited in decreasing `sensitivity` (e.g. the measured KL divergence of quantizing that layer
 * alone at the lowest format; ties by index), and each is promoted to its next heavier choice (the
 * lightest choice heavier than the current one; equal weights: the lower index) while the total
 * stays within the budget. Passes repeat until no item can be promoted. choice [n_items]. Returns
 * -1 with a message when even the lightest assignment does not fit. */
int piso_mckp_kl_greedy(const struct piso_mckp *p, const double *sensitivity, int *choice);

/* Σ_i weight[i, choice_i] and Σ_i cost[i, choice_i] (item order). */
int64_t piso_mckp_weight(const struct piso_mckp *p, const int *choice);
double piso_mckp_cost(const struct piso_mckp *p, const int *choice);

/* Spearman's rank correlation of x[n], y[n] (average ranks for ties); 0 when either is constant
 * or n < 2, NaN when out of memory. */
double piso_spearman(int n, const double *x, const double *y);

/* ---- sensitivity: KL divergence of a model's next-token distribution to a reference ---------
 * Windows of L tokens (tokens [n_windows, L]); the scored positions are first .. L-2 of each
 * window (first = 0: every position of a calibration window; first = L/2 with the chunks of
 * piso_kl_text_windows: llama.cpp's perplexity/KL protocol). */
struct piso_model;
struct piso_kl_ref {
    const struct piso_model *ref;
    const int *tokens;
    int n_windows, L, first;
    float *logp; /* [n_windows, L - 1 - first, vocab] the reference's log-softmax, or NULL when it
                    would take more than 1 GiB (then recomputed per window) */
};
int piso_kl_ref_init(struct piso_kl_ref *r, const struct piso_model *ref, const int *tokens, int n_windows, int L,
                     int first);
void piso_kl_ref_free(struct piso_kl_ref *r);
/* Mean over the scored positions of KL(P_ref ‖ P_m) in nats (fp64 sums, max-subtracted
 * log-softmax); m must have the reference's vocabulary. Errors: non-finite logits. */
int piso_kl_measure(const struct piso_kl_ref *r, const struct piso_model *m, double *kl);
/* The evaluation chunks of llama.cpp's perplexity protocol for a text: tokenized with BOS, cut
 * into floor(n / ctx) chunks whose first token is replaced by BOS; *tokens [n_chunks, ctx]
 * (malloc'd). ctx <= 0: min(512, the model's context). */
int piso_kl_text_windows(const struct piso_model *m, const char *text, size_t len, int *ctx, int **tokens,
                         int *n_chunks);

#endif
