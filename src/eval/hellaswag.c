/* HellaSwag with llama-perplexity's protocol (piso/hellaswag.h): task file, task selection and
 * acc_norm scoring. The float/double mix in the scoring is llama-perplexity's, so near-ties break
 * the same way. */
#include "piso/hellaswag.h"
#include "piso/tokenizer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- std::mt19937 and libstdc++'s uniform_int_distribution ------------------------------ */

void piso_mt19937_seed(struct piso_mt19937 *g, uint32_t seed) {
    g->state[0] = seed;
    for (uint32_t i = 1; i < 624; i++) g->state[i] = 1812433253u * (g->state[i - 1] ^ (g->state[i - 1] >> 30)) + i;
    g->next = 624; /* the first draw regenerates the whole state */
}

uint32_t piso_mt19937_u32(struct piso_mt19937 *g) {
    if (g->next >= 624) {
        for (int i = 0; i < 624; i++) {
            const uint32_t y = (g->state[i] & 0x80000000u) | (g->state[(i + 1) % 624] & 0x7fffffffu);
            g->state[i] = g->state[(i + 397) % 624] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
        }
        g->next = 0;
    }
    uint32_t y = g->state[g->next++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    return y ^ (y >> 18);
}

/* The generator yields exactly 32 bits and size_t is wider, so libstdc++ (>= 11) downscales with
 * Lemire's method: the high half of the 64-bit product draw·n, redrawing while the low half falls
 * below 2^32 mod n. n = 2^32 (the whole range) returns the draw itself. */
uint64_t piso_uniform_below(struct piso_mt19937 *g, uint64_t n) {
    if (n > UINT32_MAX) return piso_mt19937_u32(g);
    const uint32_t range = (uint32_t)n;
    uint64_t product = (uint64_t)piso_mt19937_u32(g) * range;
    uint32_t low = (uint32_t)product;
    if (low < range) {
        const uint32_t threshold = (uint32_t)(-range) % range;
        while (low < threshold) {
            product = (uint64_t)piso_mt19937_u32(g) * range;
            low = (uint32_t)product;
        }
    }
    return product >> 32;
}

int piso_hellaswag_select(int n_total, int n, int first, int *order) {
    if (n_total < 1 || n < 0 || n > n_total)
        return piso_errorf("hellaswag: cannot select %d of %d tasks", n, n_total);
    if (first) {
        for (int i = 0; i < n; i++) order[i] = i;
        return 0;
    }
    int *left = malloc(sizeof *left * (size_t)n_total); /* tasks not drawn yet, in file order */
    if (!left) return piso_errorf("hellaswag: out of memory for %d tasks", n_total);
    for (int i = 0; i < n_total; i++) left[i] = i;
    struct piso_mt19937 g;
    piso_mt19937_seed(&g, 1);
    for (int i = 0, remaining = n_total; i < n; i++, remaining--) {
        const int k = (int)piso_uniform_below(&g, (uint64_t)remaining);
        order[i] = left[k];
        memmove(left + k, left + k + 1, sizeof *left * (size_t)(remaining - k - 1));
    }
    free(left);
    return 0;
}

/* ---- the task file ------------------------------------------------------------------------ */

void piso_hellaswag_free(struct piso_hellaswag_set *s) {
    free(s->text);
    free(s->tasks);
    memset(s, 0, sizeof *s);
}

/* std::stoi's reading of the gold line: optional blanks and sign, then digits (the rest ignored) */
static int parse_gold(const char *line, int *gold) {
    const char *p = line;
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\v' || *p == '\f') p++;
    int neg = *p == '-';
    if (*p == '-' || *p == '+') p++;
    if (*p < '0' || *p > '9') return -1;
    long v = 0;
    while (*p >= '0' && *p <= '9' && v < 1000) v = v * 10 + (*p++ - '0');
    *gold = (int)(neg ? -v : v);
    return 0;
}

int piso_hellaswag_load(const char *path, struct piso_hellaswag_set *s) {
    memset(s, 0, sizeof *s);
    size_t len;
    if (piso_read_file(path, &s->text, &len)) return -1;
    /* lines as std::getline splits them: a last line without '\n' counts, a final '\n' ends one */
    size_t n_lines = 0;
    for (size_t i = 0; i < len; i++) n_lines += s->text[i] == '\n';
    if (len > 0 && s->text[len - 1] != '\n') n_lines++;
    if (n_lines == 0 || n_lines % 6 != 0) {
        piso_hellaswag_free(s);
        return piso_errorf("%s: %zu lines, not a positive multiple of 6 (a HellaSwag task is a context, the gold "
                           "ending's index and 4 endings)", path, n_lines);
    }
    if (n_lines / 6 > INT32_MAX) {
        piso_hellaswag_free(s);
        return piso_errorf("%s: too many tasks", path);
    }
    s->n = (int)(n_lines / 6);
    s->tasks = calloc((size_t)s->n, sizeof *s->tasks);
    if (!s->tasks) {
        piso_hellaswag_free(s);
        return piso_errorf("%s: out of memory for %d tasks", path, (int)(n_lines / 6));
    }
    char *p = s->text;
    for (size_t l = 0; l < n_lines; l++) {
        char *line = p, *nl = strchr(p, '\n');
        if (nl) *nl = 0, p = nl + 1;
        else p = line + strlen(line);
        struct piso_hellaswag_task *t = &s->tasks[l / 6];
        switch (l % 6) {
        case 0: t->context = line, t->line = (int)l + 1; break;
        case 1:
            if (parse_gold(line, &t->gold) || t->gold < 0 || t->gold > 3) {
                int at = (int)l + 1;
                piso_hellaswag_free(s);
                return piso_errorf("%s: line %d: the gold ending must be 0, 1, 2 or 3", path, at);
            }
            break;
        default: t->ending[l % 6 - 2] = line; break;
        }
    }
    return 0;
}

/* ---- scoring ------------------------------------------------------------------------------ */

/* log p(target) from logits [V]: expf terms summed in float, as llama-perplexity's compute_logprobs */
static float token_logprob(const float *logits, int V, int target) {
    float mx = logits[0];
    for (int j = 1; j < V; j++) mx = logits[j] > mx ? logits[j] : mx;
    float sum = 0.f;
    for (int j = 0; j < V; j++) sum += expf(logits[j] - mx);
    return logits[target] - mx - logf(sum);
}

/* p(target) from logits [V]: the softmax llama-perplexity applies to the prefix's last position
 * (float terms, double sum, each probability rounded to float) */
static float token_prob(const float *logits, int V, int target) {
    float mx = logits[0];
    for (int j = 1; j < V; j++) mx = logits[j] > mx ? logits[j] : mx;
    double sum = 0;
    for (int j = 0; j < V; j++) sum += expf(logits[j] - mx);
    return (float)(expf(logits[target] - mx) / sum);
}

struct task_tokens {
    int *ids[4], n[4], prefix, required;
};

static void task_tokens_free(struct task_tokens *t) {
    for (int s = 0; s < 4; s++) free(t->ids[s]);
}

static int tokenize_task(const struct piso_model *m, const struct piso_hellaswag_task *task, struct task_tokens *tt) {
    memset(tt, 0, sizeof *tt);
    const int add_bos = piso_tokenizer_vocab(m->tok)->add_bos;
    for (int s = 0; s < 4; s++) {
        const size_t lc = strlen(task->context), le = strlen(task->ending[s]);
        char *text = malloc(lc + le + 2);
        if (!text) return piso_errorf("out of memory");
        memcpy(text, task->context, lc);
        text[lc] = ' ';
        memcpy(text + lc + 1, task->ending[s], le + 1);
        piso_tokenizer_set_parse_special(m->tok, 0); /* llama.cpp: parse_special = false */
        int rc = piso_tokenize(m->tok, text, lc + le + 1, add_bos, &tt->ids[s], &tt->n[s]);
        piso_tokenizer_set_parse_special(m->tok, 1);
        free(text);
        if (rc) return -1;
    }
    int cp = 0;
    while (cp < tt->n[0] && cp < tt->n[1] && cp < tt->n[2] && cp < tt->n[3] && tt->ids[0][cp] == tt->ids[1][cp] &&
           tt->ids[0][cp] == tt->ids[2][cp] && tt->ids[0][cp] == tt->ids[3][cp])
        cp++;
    tt->prefix = cp;
    tt->required = cp;
    for (int s = 0; s < 4; s++) {
        if (tt->n[s] <= cp)
            return piso_errorf("ending %d adds no token after the %d tokens the endings share", s, cp);
        tt->required += tt->n[s] - cp;
    }
    if (cp < 1) return piso_errorf("the endings share no token (no BOS and different first tokens)");
    return 0;
}

/* Normalised log-likelihoods of the 4 endings; logits is scratch [max_len, V]. */
static int score_task(const struct piso_model *m, const struct task_tokens *tt, float *logits, double logprob[4]) {
    const int V = m->cfg.vocab_size, cp = tt->prefix;
    float first_row_prob[4];
    for (int s = 0; s < 4; s++) {
        /* positions cp-1 .. n-2 predict the ending's tokens cp .. n-1 */
        if (piso_forward(m, tt->ids[s], tt->n[s] - 1, cp - 1, logits)) return -1;
        int64_t bad = piso_find_nonfinite(logits, (size_t)(tt->n[s] - cp) * V);
        if (bad >= 0) return piso_errorf("the model's logits are not finite (position %lld)", (long long)(cp - 1 + bad / V));
        if (s == 0) /* the prefix's last position is shared: llama.cpp evaluates it once */
            for (int e = 0; e < 4; e++) first_row_prob[e] = token_prob(logits, V, tt->ids[e][cp]);
        double lp = logf(first_row_prob[s]);
        int count = 1;
        for (int j = cp; j < tt->n[s] - 1; j++, count++)
            lp += token_logprob(logits + (size_t)(j - cp + 1) * V, V, tt->ids[s][j + 1]);
        logprob[s] = lp / count;
    }
    return 0;
}

int piso_hellaswag_score(const struct piso_model *m, const struct piso_hellaswag_set *s, const int *order, int n,
                         int ctx, struct piso_hellaswag_task_score *per_task, struct piso_hellaswag_result *r) {
    memset(r, 0, sizeof *r);
    const double t0 = piso_time();
    if (!m->tok) return piso_errorf("hellaswag: %s has no tokenizer (pass one)", m->path);
    if (n < 1) return piso_errorf("hellaswag: no tasks to score");
    int cap = 512; /* logit rows: grown to the longest sequence */
    float *logits = malloc(sizeof *logits * (size_t)cap * (size_t)m->cfg.vocab_size);
    if (!logits) return piso_errorf("hellaswag: out of memory for %d x %d logits", cap, m->cfg.vocab_size);
    struct piso_progress pr;
    piso_progress_begin(&pr, "hellaswag", "tasks", n);
    piso_progress_update(&pr, 0);
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const struct piso_hellaswag_task *task = &s->tasks[order[i]];
        struct task_tokens tt;
        double lp[4];
        rc = tokenize_task(m, task, &tt);
        if (rc == 0 && ctx > 0 && tt.required > ctx)
            rc = piso_errorf("needs %d tokens (the shared prefix and the 4 endings' own tokens), more than the context "
                             "of %d (--ctx; llama-perplexity refuses it as well)", tt.required, ctx);
        for (int e = 0; rc == 0 && e < 4; e++)
            if (tt.n[e] > cap) {
                float *grown = realloc(logits, sizeof *logits * (size_t)tt.n[e] * (size_t)m->cfg.vocab_size);
                if (!grown) rc = piso_errorf("out of memory for %d x %d logits", tt.n[e], m->cfg.vocab_size);
                else logits = grown, cap = tt.n[e];
            }
        if (rc == 0) rc = score_task(m, &tt, logits, lp);
        if (rc) {
            piso_error_context("hellaswag: task %d (line %d)", order[i], task->line);
            task_tokens_free(&tt);
            break;
        }
        int pred = 0;
        for (int e = 1; e < 4; e++)
            if (lp[e] > lp[pred]) pred = e;
        r->correct += pred == task->gold;
        if (per_task) {
            struct piso_hellaswag_task_score *ts = &per_task[i];
            ts->task = order[i], ts->gold = task->gold, ts->pred = pred, ts->prefix = tt.prefix;
            for (int e = 0; e < 4; e++) ts->len[e] = tt.n[e], ts->logprob[e] = lp[e];
        }
        task_tokens_free(&tt);
        piso_progress_update(&pr, i + 1);
    }
    free(logits);
    if (rc) return rc;
    /* accuracy in percent with the Wilson score interval (z for 95%) */
    const double za = 1.95996398454, N = n, f = (double)r->correct / N;
    const double z = za * za / N, half = z * sqrt(N * (4.0 * f * (1 - f) + z)) / (za + za);
    r->tasks = n;
    r->acc_norm = 100.0 * f;
    r->ci_lo = 100.0 * (f + z * 0.5 - half) / (1.0 + z);
    r->ci_hi = 100.0 * (f + z * 0.5 + half) / (1.0 + z);
    r->seconds = piso_time() - t0;
    return 0;
}
