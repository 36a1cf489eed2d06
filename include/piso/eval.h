/* piso/eval.h — model evaluation: perplexity with llama.cpp's llama-perplexity protocol. */
#ifndef PISO_EVAL_H
#define PISO_EVAL_H

#include "piso/model.h"

struct piso_ppl_result {
    double ppl, nll;  /* exp(mean NLL) and the mean NLL (nats per scored token) */
    int tokens;       /* tokens of the whole text (with the leading BOS) */
    int chunks;       /* non-overlapping windows of ctx tokens (remainder dropped) */
    int scored;       /* predictions scored: chunks * (ctx - 1 - ctx/2) */
    double seconds;
};

/* Perplexity of m on text[len] (shared/docs/llamacpp-formats.md §5): tokenize the whole text
 * once with BOS first (control-token text is not parsed as special, as in llama.cpp); cut into chunks of ctx tokens; replace each chunk's first token by BOS;
 * score positions ctx/2 .. ctx-2 predicting the next token (log-softmax with max subtraction and
 * a double sum). ctx <= 0 means min(512, model context). Progress on stderr (piso_log).
 * Errors: no tokenizer, empty text, fewer tokens than one chunk, ctx < 4. */
int piso_perplexity(const struct piso_model *m, const char *text, size_t len, int ctx, struct piso_ppl_result *r);

/* The text as piso_perplexity tokenizes it: BOS first, control-token text not parsed. */
int piso_perplexity_tokenize(const struct piso_model *m, const char *text, size_t len, int **ids, int *n);

/* The same protocol on already tokenized text (ids[0] should be BOS); bos_id replaces each
 * chunk's first token. */
int piso_perplexity_ids(const struct piso_model *m, const int *ids, int n_ids, int bos_id, int ctx,
                        struct piso_ppl_result *r);

/* The same, handing each chunk to `each` (may be NULL) after it is scored: the chunk's tokens as
 * given (ids + chunk * ctx, before the BOS replacement) and its logits [ctx - ctx/2, vocab] for
 * positions ctx/2 .. ctx-1. A non-zero return stops with that error. */
typedef int (*piso_ppl_chunk_fn)(void *user, int chunk, const int *chunk_ids, const float *logits);
int piso_perplexity_ids_each(const struct piso_model *m, const int *ids, int n_ids, int bos_id, int ctx,
                             piso_ppl_chunk_fn each, void *user, struct piso_ppl_result *r);

#endif
