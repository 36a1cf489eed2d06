/* piso/kld.h — KL divergence of a model to a base model, as llama-perplexity's
 * --kl-divergence-base / --kl-divergence (tools/perplexity/perplexity.cpp).
 *
 * The base file has llama.cpp's layout, so files are interchangeable with llama-perplexity
 * (little-endian):
 *   "_logits_"                       8 bytes
 *   uint32 n_ctx, int32 n_vocab, int32 n_chunk
 *   int32 tokens[n_chunk * n_ctx]    the text's tokens as tokenized (BOS first), chunk by chunk,
 *                                    before each chunk's first token is replaced by BOS
 *   per chunk, per scored position j = n_ctx/2 .. n_ctx-2, one row of nv = 2*ceil(n_vocab/2) + 4
 *   uint16:  float scale, float min_log_prob (the first 4 uint16), then n_vocab codes with
 *            log p_base[i] = scale * code[i] + min_log_prob (log-probs below max - 16 clamp to
 *            the lowest code)
 * What makes a comparison valid is in the file: the vocabulary size, the context and the tokens
 * themselves (so another text or another tokenizer is detected token by token).
 *
 * Statistics (per scored position, then averaged): KLD = Σ_i p_base_i (log p_base_i − log q_i)
 * over the base's log-probs above −16, top-1 agreement, Δp = q(target) − p_base(target), and
 * ln PPL(Q) − ln PPL(base) with its covariance-corrected uncertainty; all with llama-perplexity's
 * float/double arithmetic, uncertainties and percentile interpolation. */
#ifndef PISO_KLD_H
#define PISO_KLD_H

#include "piso/eval.h"

#include <stdint.h>
#include <stdio.h>

/* Number of uint16 per stored row for a vocabulary of n_vocab. */
int piso_kld_row_len(int n_vocab);

/* Encodes one position's logits [n_vocab] as a base row (llama.cpp's compact log-probs) into
 * row [piso_kld_row_len(n_vocab)]; returns -log p(target) computed in float as llama.cpp. */
double piso_kld_encode_row(const float *logits, int n_vocab, int target, uint16_t *row);

/* Percentiles reported, highest first (as llama-perplexity prints them). */
#define PISO_KLD_NPCT 11 /* max, 99.9, 99, 95, 90, median, 10, 5, 1, 0.1, min */
#define PISO_DP_NPCT 13  /* max, 99.9, 99, 95, 90, 75, median, 25, 10, 5, 1, 0.1, min */
extern const char *const piso_kld_pct_names[PISO_KLD_NPCT];
extern const char *const piso_dp_pct_names[PISO_DP_NPCT];

struct piso_kld_result {
    int ctx, vocab, chunks;
    int64_t count; /* scored positions */
    double ppl, ppl_unc, ppl_base, ppl_base_unc;
    double cor_ln_ppl;               /* correlation of ln PPL(Q) and ln PPL(base) (fraction) */
    double ln_ratio, ln_ratio_unc;   /* mean ln(PPL(Q)/PPL(base)) */
    double ratio, ratio_unc;         /* PPL(Q)/PPL(base) */
    double diff, diff_unc;           /* PPL(Q) - PPL(base) */
    double kld, kld_unc;             /* mean KLD (nats) */
    double kld_pct[PISO_KLD_NPCT];
    double dp_mean, dp_mean_unc;     /* mean Δp (fraction, not %) */
    double dp_pct[PISO_DP_NPCT];
    double dp_rms, dp_rms_unc;
    double same_top, same_top_unc;   /* top-1 agreement (fraction) */
};

/* Accumulator for positions scored one by one (llama-perplexity's sums and per-position values). */
struct piso_kld_acc {
    double sum_nll, sum_nll2, sum_nll_base, sum_nll_base2, sum_nll_nll_base;
    double sum_kld, sum_kld2, sum_p_diff, sum_p_diff2, sum_p_diff4;
    float max_p_diff;
    int64_t n_same_top, count, cap;
    float *kld_values, *p_diff_values; /* [cap] */
};
int piso_kld_acc_init(struct piso_kld_acc *a, int64_t capacity);
void piso_kld_acc_free(struct piso_kld_acc *a);
/* Adds one position: the model's logits [n_vocab], the base row, the target token. Error when the
 * accumulator is full. */
int piso_kld_acc_add(struct piso_kld_acc *a, const float *logits, const uint16_t *base_row, int n_vocab,
                     int target);
/* The summary (sorts the value arrays in place). */
void piso_kld_acc_finish(struct piso_kld_acc *a, struct piso_kld_result *r);
/* Prints the summary in llama-perplexity's layout ("====== Perplexity statistics ======" ...). */
void piso_kld_print(const struct piso_kld_result *r, FILE *out);

/* A base file opened for comparison: header and tokens read and checked against the file size. */
struct piso_kld_base {
    FILE *f;
    char *path;
    int ctx, vocab, chunks;
    int *tokens; /* [chunks * ctx] */
};
int piso_kld_base_open(const char *path, struct piso_kld_base *b);
void piso_kld_base_close(struct piso_kld_base *b);

/* Perplexity of m on the tokens (as piso_perplexity_ids) that also writes the base file `path`
 * (temporary name + rename: nothing appears on error). */
int piso_kld_write_base(const struct piso_model *m, const int *ids, int n_ids, int bos_id, int ctx,
                        const char *path, struct piso_ppl_result *r);

/* Compares m against the open base: the base's tokens are evaluated with m (each chunk's first
 * token replaced by bos_id); ids (may be NULL) is the text as tokenized now and must start with
 * the base's tokens. Errors name the file and what does not match (vocabulary, context, tokens). */
int piso_kld_compare(const struct piso_model *m, const struct piso_kld_base *b, const int *ids, int n_ids,
                     int bos_id, int ctx, struct piso_kld_result *r);

#endif
