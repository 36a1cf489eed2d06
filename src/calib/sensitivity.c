/* KL divergence of a model's next-token distributions to a reference model (see piso/mixed.h):
 * the sensitivity measurement of mixed precision and its evaluation. */
#include "piso/eval.h"
#include "piso/mixed.h"
#include "piso/model.h"
#include "piso/tokenizer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* logp[V] <- log softmax(logits[V]) (max subtraction, fp64 sum). */
static void log_softmax(const float *logits, int V, float *logp) {
    float mx = logits[0];
    for (int j = 1; j < V; j++) mx = logits[j] > mx ? logits[j] : mx;
    double sum = 0;
    for (int j = 0; j < V; j++) sum += exp((double)logits[j] - mx);
    const double lse = mx + log(sum);
    for (int j = 0; j < V; j++) logp[j] = (float)((double)logits[j] - lse);
}

/* Log-softmax of the scored positions of window w: logp [L - 1 - first, V]. */
static int window_logp(const struct piso_model *m, const struct piso_kl_ref *r, int w, float *logits, float *logp) {
    const int V = m->cfg.vocab_size, n = r->L - 1 - r->first;
    if (piso_forward(m, r->tokens + (size_t)w * r->L, r->L, r->first, logits)) return -1;
    int64_t bad = piso_find_nonfinite(logits, (size_t)n * V);
    if (bad >= 0) return piso_errorf("KL divergence: window %d: non-finite logits", w);
    for (int p = 0; p < n; p++) log_softmax(logits + (size_t)p * V, V, logp + (size_t)p * V);
    return 0;
}

int piso_kl_ref_init(struct piso_kl_ref *r, const struct piso_model *ref, const int *tokens, int n_windows, int L,
                     int first) {
    memset(r, 0, sizeof *r);
    if (n_windows < 1 || first < 0 || L - 1 - first < 1)
        return piso_errorf("KL divergence: %d windows of %d tokens from position %d score nothing", n_windows, L, first);
    r->ref = ref, r->tokens = tokens, r->n_windows = n_windows, r->L = L, r->first = first;
    const int V = ref->cfg.vocab_size, n = L - 1 - first;
    const double bytes = (double)n_windows * n * V * sizeof(float);
    if (bytes > (double)(1 << 30)) return 0; /* recomputed per window */
    float *logits = malloc(sizeof(float) * (size_t)(L - first) * V);
    r->logp = malloc((size_t)bytes);
    if (!logits || !r->logp) {
        free(logits), free(r->logp), r->logp = NULL;
        return piso_errorf("KL divergence: out of memory for the reference log-probabilities (%.0f MiB)", bytes / 1048576);
    }
    for (int w = 0; w < n_windows; w++)
        if (window_logp(ref, r, w, logits, r->logp + (size_t)w * n * V)) {
            free(logits), piso_kl_ref_free(r);
            return -1;
        }
    free(logits);
    return 0;
}

void piso_kl_ref_free(struct piso_kl_ref *r) {
    free(r->logp);
    r->logp = NULL;
}

int piso_kl_measure(const struct piso_kl_ref *r, const struct piso_model *m, double *kl) {
    const int V = m->cfg.vocab_size, n = r->L - 1 - r->first;
    if (V != r->ref->cfg.vocab_size)
        return piso_errorf("KL divergence: vocabularies differ (%d vs %d)", V, r->ref->cfg.vocab_size);
    float *logits = malloc(sizeof(float) * (size_t)(r->L - r->first) * V);
    float *lq = malloc(sizeof(float) * (size_t)n * V), *lp = r->logp ? NULL : malloc(sizeof(float) * (size_t)n * V);
    int rc = -1;
    double sum = 0;
    if (!logits || !lq || (!r->logp && !lp)) {
        piso_errorf("KL divergence: out of memory for a %d x %d logit window", n, V);
        goto done;
    }
    for (int w = 0; w < r->n_windows; w++) {
        if (window_logp(m, r, w, logits, lq)) goto done;
        const float *ref = r->logp ? r->logp + (size_t)w * n * V : lp;
        if (!r->logp && window_logp(r->ref, r, w, logits, lp)) goto done;
        for (int64_t k = 0; k < (int64_t)n * V; k++) {
            const double pl = ref[k];
            sum += exp(pl) * (pl - (double)lq[k]);
        }
    }
    *kl = sum / ((double)r->n_windows * n);
    if (*kl < 0) *kl = 0; /* rounding: KL is non-negative */
    rc = 0;
done:
    free(logits), free(lq), free(lp);
    return rc;
}

int piso_kl_text_windows(const struct piso_model *m, const char *text, size_t len, int *ctx, int **tokens,
                         int *n_chunks) {
    *tokens = NULL, *n_chunks = 0;
    if (*ctx <= 0) *ctx = m->cfg.max_seq_len > 0 && m->cfg.max_seq_len < 512 ? m->cfg.max_seq_len : 512;
    int *ids = NULL, n = 0;
    /* the text is tokenized as llama.cpp's perplexity tool does (piso_perplexity's own step) */
    if (piso_perplexity_tokenize(m, text, len, &ids, &n)) return piso_error_context("KL divergence");
    const int bos = piso_tokenizer_vocab(m->tok)->bos_id, chunks = n / *ctx;
    if (chunks < 1 || bos < 0) {
        free(ids);
        return piso_errorf("KL divergence: the text has %d tokens, fewer than one chunk of %d (or no BOS token)", n, *ctx);
    }
    for (int c = 0; c < chunks; c++) ids[(size_t)c * *ctx] = bos;
    *tokens = ids, *n_chunks = chunks;
    return 0;
}
