/* piso/hellaswag.h — HellaSwag zero-shot accuracy with llama-perplexity's protocol
 * (llama-perplexity --hellaswag -f hellaswag_val_full.txt [--hellaswag-tasks N]).
 *
 * Task file: 6 lines per task — "activity_label: ctx" (the context), the gold ending's index 0..3,
 * then the 4 endings. Each ending s is scored on the tokens of context + " " + ending (BOS first
 * when the vocabulary adds one, control-token text not parsed): the log-probabilities of the tokens
 * after the prefix the 4 sequences share, summed and divided by their count (acc_norm: the
 * length-normalised log-likelihood); the task counts as correct when the gold ending has the
 * strictly largest value (the first one wins ties). The accuracy's 95% interval is the Wilson score
 * interval, as llama-perplexity prints it.
 *
 * Task selection (llama-perplexity): N tasks drawn from a std::mt19937 seeded 1, each by
 * std::uniform_int_distribution<size_t>(0, remaining - 1) (libstdc++ >= 11: Lemire's
 * multiply-shift with rejection), and the drawn task is removed from the list before the next
 * draw (so no task repeats); `first` takes tasks 0..N-1 instead. */
#ifndef PISO_HELLASWAG_H
#define PISO_HELLASWAG_H

#include "piso/model.h"

#include <stdint.h>

/* std::mt19937 (MT19937, 32-bit) */
struct piso_mt19937 {
    uint32_t state[624];
    int next;
};
void piso_mt19937_seed(struct piso_mt19937 *g, uint32_t seed);
uint32_t piso_mt19937_u32(struct piso_mt19937 *g);
/* std::uniform_int_distribution<size_t>(0, n - 1)(g) of libstdc++ (n in 1 .. 2^32). */
uint64_t piso_uniform_below(struct piso_mt19937 *g, uint64_t n);

/* order [n] <- the indices (0-based, into the n_total tasks) llama-perplexity scores, in order;
 * n <= n_total. */
int piso_hellaswag_select(int n_total, int n, int first, int *order);

struct piso_hellaswag_task {
    const char *context, *ending[4]; /* NUL-terminated lines inside the set's text */
    int gold;                        /* 0..3 */
    int line;                        /* 1-based line of the context in the file */
};

struct piso_hellaswag_set {
    char *text; /* the file, its newlines replaced by NULs */
    struct piso_hellaswag_task *tasks;
    int n;
};
/* Reads and checks a task file (line count a multiple of 6, gold index 0..3); errors name the
 * file and line. */
int piso_hellaswag_load(const char *path, struct piso_hellaswag_set *s);
void piso_hellaswag_free(struct piso_hellaswag_set *s);

struct piso_hellaswag_task_score {
    int task;            /* index into the set */
    int gold, pred;      /* the gold ending and the one with the largest normalised log-likelihood */
    int prefix;          /* tokens the 4 sequences share (BOS included) */
    int len[4];          /* tokens of each sequence */
    double logprob[4];   /* mean log-probability of each ending's tokens after the shared prefix */
};

struct piso_hellaswag_result {
    int tasks, correct;
    double acc_norm;       /* percent */
    double ci_lo, ci_hi;   /* 95% Wilson interval, percent */
    double seconds;
};

/* Scores tasks order[0..n) of s with m, each ending as its own sequence (llama-perplexity packs the
 * shared prefix and the 4 endings into one batch with per-ending sequence ids: the same
 * attention, so the same log-probabilities). ctx > 0 plays llama.cpp's n_ctx: a task whose shared
 * prefix plus the 4 endings' own tokens exceed it is an error, as in llama-perplexity; the score
 * itself does not depend on it (ctx <= 0: no such check). per_task [n] may be NULL. */
int piso_hellaswag_score(const struct piso_model *m, const struct piso_hellaswag_set *s, const int *order, int n,
                         int ctx, struct piso_hellaswag_task_score *per_task, struct piso_hellaswag_result *r);

#endif
