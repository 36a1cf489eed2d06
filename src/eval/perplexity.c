/* Perplexity, llama.cpp protocol (tools/perplexity/perplexity.cpp `perplexity`). */
#include "piso/eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* -log softmax(logits)[target]: max subtraction, expf terms summed in double (as llama.cpp). */
static double token_nll(const float *logits, int V, int target) {
    float mx = logits[0];
    for (int j = 1; j < V; j++) mx = logits[j] > mx ? logits[j] : mx;
    double sum = 0;
    for (int j = 0; j < V; j++) sum += expf(logits[j] - mx);
    return -((double)logits[target] - mx - log(sum));
}

int piso_perplexity_ids(const struct piso_model *m, const int *ids, int n_ids, int bos_id, int ctx,
                        struct piso_ppl_result *r) {
    return piso_perplexity_ids_each(m, ids, n_ids, bos_id, ctx, NULL, NULL, r);
}

int piso_perplexity_ids_each(const struct piso_model *m, const int *ids, int n_ids, int bos_id, int ctx,
                             piso_ppl_chunk_fn each, void *user, struct piso_ppl_result *r) {
    memset(r, 0, sizeof *r);
    double t0 = piso_time();
    if (ctx <= 0) ctx = m->cfg.max_seq_len > 0 && m->cfg.max_seq_len < 512 ? m->cfg.max_seq_len : 512;
    if (ctx < 4) return piso_errorf("perplexity: context %d is too small (need at least 4)", ctx);
    if (bos_id < 0 || bos_id >= m->cfg.vocab_size)
        return piso_errorf("perplexity: the tokenizer has no BOS token in the model's vocabulary");
    int chunks = n_ids / ctx, first = ctx / 2, V = m->cfg.vocab_size;
    if (chunks < 1)
        return piso_errorf("perplexity: the text has %d tokens, fewer than one chunk of %d (use a longer text or a "
                           "smaller --ctx)", n_ids, ctx);
    int *chunk = malloc((size_t)ctx * sizeof *chunk);
    float *logits = malloc((size_t)(ctx - first) * V * sizeof *logits);
    if (!chunk || !logits) {
        free(chunk);
        free(logits);
        return piso_errorf("perplexity: out of memory for a %d x %d logit window", ctx - first, V);
    }
    struct piso_progress pr;
    piso_progress_begin(&pr, "perplexity", "tokens", (int64_t)chunks * ctx);
    piso_progress_update(&pr, 0);
    double nll = 0;
    int count = 0, rc = 0;
    for (int c = 0; c < chunks && rc == 0; c++) {
        memcpy(chunk, ids + (size_t)c * ctx, (size_t)ctx * sizeof *chunk);
        chunk[0] = bos_id; /* replaced, not prepended */
        rc = piso_forward(m, chunk, ctx, first, logits);
        int64_t bad = rc == 0 ? piso_find_nonfinite(logits, (size_t)(ctx - first) * V) : -1;
        if (bad >= 0)
            rc = piso_errorf("chunk %d: the model's logits are not finite (%g at position %lld, token %lld): weights "
                             "too large or broken", c, (double)logits[bad], (long long)(first + bad / V),
                             (long long)(bad % V));
        for (int j = first; rc == 0 && j <= ctx - 2; j++) {
            nll += token_nll(logits + (size_t)(j - first) * V, V, ids[(size_t)c * ctx + j + 1]);
            count++;
        }
        if (rc == 0 && each) rc = each(user, c, ids + (size_t)c * ctx, logits);
        piso_progress_update(&pr, (int64_t)(c + 1) * ctx);
    }
    free(chunk);
    free(logits);
    if (rc != 0) return piso_error_context("perplexity");
    r->nll = nll / count;
    r->ppl = exp(r->nll);
    if (!isfinite(r->nll) || !isfinite(r->ppl))
        return piso_errorf("perplexity: the result is not finite (mean NLL %g): the model's outputs are broken",
                           r->nll);
    r->tokens = n_ids;
    r->chunks = chunks;
    r->scored = count;
    r->seconds = piso_time() - t0;
    return 0;
}

int piso_perplexity_tokenize(const struct piso_model *m, const char *text, size_t len, int **ids, int *n) {
    *ids = NULL;
    *n = 0;
    if (!m->tok) return piso_errorf("perplexity: %s has no tokenizer (pass one)", m->path);
    if (len == 0) return piso_errorf("perplexity: the text is empty");
    /* llama.cpp tokenizes the corpus with parse_special = false: text such as <|endoftext|> stays
     * text. The flag is restored to the tokenizer default afterwards. */
    piso_tokenizer_set_parse_special(m->tok, 0);
    int trc = piso_tokenize(m->tok, text, len, 1, ids, n);
    piso_tokenizer_set_parse_special(m->tok, 1);
    if (trc != 0) return piso_error_context("perplexity: tokenizing");
    if (*n > 0 && (*ids)[0] != piso_tokenizer_vocab(m->tok)->bos_id)
        piso_log("perplexity: note: the tokenizer did not put BOS first\n");
    return 0;
}

int piso_perplexity(const struct piso_model *m, const char *text, size_t len, int ctx, struct piso_ppl_result *r) {
    memset(r, 0, sizeof *r);
    double t0 = piso_time();
    int *ids = NULL, n = 0;
    if (piso_perplexity_tokenize(m, text, len, &ids, &n)) return -1;
    int rc = piso_perplexity_ids(m, ids, n, piso_tokenizer_vocab(m->tok)->bos_id, ctx, r);
    free(ids);
    if (rc == 0) r->seconds = piso_time() - t0;
    return rc;
}
