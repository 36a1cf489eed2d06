/* KL divergence to a base model with llama-perplexity's file layout and statistics (piso/kld.h).
 * The float/double mix below is deliberate: it is the arithmetic llama-perplexity uses, so the
 * printed statistics agree digit for digit on the same logits. */
#include "piso/kld.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define KLD_MAGIC "_logits_"
#define KLD_HEADER_BYTES (8 + 3 * 4)

const char *const piso_kld_pct_names[PISO_KLD_NPCT] = {"Maximum", "99.9%  ", "99.0%  ", "95.0%  ", "90.0%  ", "Median ",
                                                       "10.0%  ", " 5.0%  ", " 1.0%  ", " 0.1%  ", "Minimum"};
const char *const piso_dp_pct_names[PISO_DP_NPCT] = {"Maximum", "99.9%  ", "99.0%  ", "95.0%  ", "90.0%  ",
                                                     "75.0%  ", "Median ", "25.0%  ", "10.0%  ", " 5.0%  ",
                                                     " 1.0%  ", " 0.1%  ", "Minimum"};
/* fractions of the percentiles above; -1 marks the median (mean of the two middle values) */
static const float kld_fracs[PISO_KLD_NPCT] = {1, 0.999f, 0.990f, 0.950f, 0.900f, -1, 0.100f, 0.050f, 0.010f, 0.001f, 0};
static const float dp_fracs[PISO_DP_NPCT] = {1,      0.999f, 0.990f, 0.950f, 0.900f, 0.750f, -1,
                                             0.250f, 0.100f, 0.050f, 0.010f, 0.001f, 0};

int piso_kld_row_len(int n_vocab) { return 2 * ((n_vocab + 1) / 2) + 4; }

/* max and min of logits [n] */
static void logit_range(const float *logits, int n, float *mx, float *mn) {
    *mx = *mn = logits[0];
    for (int i = 1; i < n; i++) {
        *mx = logits[i] > *mx ? logits[i] : *mx;
        *mn = logits[i] < *mn ? logits[i] : *mn;
    }
}

/* log Σ exp(l - mx): expf terms summed in double, the log rounded to float */
static float log_sum_exp(const float *logits, int n, float mx) {
    double s = 0;
    for (int i = 0; i < n; i++) s += expf(logits[i] - mx);
    return (float)log(s);
}

double piso_kld_encode_row(const float *logits, int n_vocab, int target, uint16_t *row) {
    float mx, mn;
    logit_range(logits, n_vocab, &mx, &mn);
    mn = mn > mx - 16 ? mn : mx - 16; /* log-probs more than 16 below the top share the lowest code */
    const float lse = log_sum_exp(logits, n_vocab, mx);
    const float min_log_prob = mn - mx - lse;
    const float scale = (mx - mn) / 65535.f;
    memcpy(row, &scale, sizeof scale);
    memcpy(row + 2, &min_log_prob, sizeof min_log_prob);
    uint16_t *code = row + 4;
    memset(code, 0, (size_t)(piso_kld_row_len(n_vocab) - 4) * sizeof *code);
    if (scale != 0) {
        const float inv = 1 / scale;
        for (int i = 0; i < n_vocab; i++)
            code[i] = logits[i] > mn ? (uint16_t)lrintf(inv * (logits[i] - mn)) : 0; /* nearest, ties to even */
    }
    const float nll = mx + lse - logits[target];
    return nll;
}

int piso_kld_acc_init(struct piso_kld_acc *a, int64_t capacity) {
    memset(a, 0, sizeof *a);
    a->cap = capacity;
    a->kld_values = malloc(sizeof(float) * (size_t)(capacity > 0 ? capacity : 1));
    a->p_diff_values = malloc(sizeof(float) * (size_t)(capacity > 0 ? capacity : 1));
    if (!a->kld_values || !a->p_diff_values) {
        piso_kld_acc_free(a);
        return piso_errorf("KL divergence: out of memory for %lld positions", (long long)capacity);
    }
    return 0;
}

void piso_kld_acc_free(struct piso_kld_acc *a) {
    free(a->kld_values);
    free(a->p_diff_values);
    a->kld_values = a->p_diff_values = NULL;
}

int piso_kld_acc_add(struct piso_kld_acc *a, const float *logits, const uint16_t *base_row, int n_vocab,
                     int target) {
    if (a->count >= a->cap) return piso_errorf("KL divergence: more positions than the %lld expected", (long long)a->cap);
    float mx = logits[0];
    int imax = 0;
    for (int i = 1; i < n_vocab; i++)
        if (logits[i] > mx) mx = logits[i], imax = i;
    const float lse = log_sum_exp(logits, n_vocab, mx);
    float scale, min_log_prob;
    memcpy(&scale, base_row, sizeof scale);
    memcpy(&min_log_prob, base_row + 2, sizeof min_log_prob);
    const uint16_t *code = base_row + 4;

    const float nll = mx + lse - logits[target];
    const float nll_base = -(scale * code[target] + min_log_prob);
    a->sum_nll += nll;
    a->sum_nll2 += nll * nll; /* float products, as llama-perplexity */
    a->sum_nll_base += nll_base;
    a->sum_nll_base2 += nll_base * nll_base;
    a->sum_nll_nll_base += nll * nll_base;

    const float log_norm = mx + lse; /* log q_i = logits[i] - log_norm */
    double kld = 0;
    int imax_base = 0;
    float lp_base_max = 0;
    for (int i = 0; i < n_vocab; i++) {
        const float lp_base = scale * code[i] + min_log_prob;
        if (i == 0 || lp_base > lp_base_max) lp_base_max = lp_base, imax_base = i;
        if (lp_base > -16.f) kld += expf(lp_base) * (lp_base - logits[i] + log_norm);
    }
    a->sum_kld += kld;
    a->sum_kld2 += kld * kld;
    a->n_same_top += imax == imax_base;

    const float p_diff = expf(-nll) - expf(-nll_base);
    const double p_diff2 = p_diff * p_diff;
    a->sum_p_diff += p_diff;
    a->sum_p_diff2 += p_diff2;
    a->sum_p_diff4 += p_diff2 * p_diff2;
    a->max_p_diff = fabsf(p_diff) > a->max_p_diff ? fabsf(p_diff) : a->max_p_diff;
    a->kld_values[a->count] = (float)kld;
    a->p_diff_values[a->count] = p_diff;
    a->count++;
    return 0;
}

/* mean of x and its standard error from Σx, Σx² (0 when there are 10 values or fewer) */
static void mean_unc(double sum, double sum2, int64_t n, double *mean, double *unc) {
    *mean = *unc = 0;
    if (n < 1) return;
    *mean = sum / n;
    double var = sum2 / n - *mean * *mean;
    *unc = var > 0 && n > 10 ? sqrt(var / (n - 1)) : 0;
}

static double covariance(double sa, double sb, double sab, int64_t n) {
    if (n < 10) return 0;
    return (sab / n - (sa / n) * (sb / n)) / (n - 1);
}

static int cmp_float(const void *x, const void *y) {
    float a = *(const float *)x, b = *(const float *)y;
    return (a > b) - (a < b);
}

/* sorted v [n]: linear interpolation at fraction·(n-1), in float; fraction -1: the median */
static float percentile(const float *v, int64_t n, float fraction) {
    if (fraction < 0) return n % 2 == 0 ? 0.5f * (v[n / 2] + v[n / 2 - 1]) : v[n / 2];
    if (fraction <= 0) return v[0];
    if (fraction >= 1) return v[n - 1];
    float p = fraction * (float)(n - 1);
    int64_t ip = (int64_t)p;
    p -= (float)ip;
    return (1 - p) * v[ip] + p * v[ip + 1 < n ? ip + 1 : n - 1];
}

void piso_kld_acc_finish(struct piso_kld_acc *a, struct piso_kld_result *r) {
    const int64_t n = a->count;
    r->count = n;
    double lq, lq_unc, lb, lb_unc;
    mean_unc(a->sum_nll, a->sum_nll2, n, &lq, &lq_unc);
    mean_unc(a->sum_nll_base, a->sum_nll_base2, n, &lb, &lb_unc);
    r->ppl = exp(lq);
    r->ppl_unc = r->ppl * lq_unc;
    r->ppl_base = exp(lb);
    r->ppl_base_unc = r->ppl_base * lb_unc;
    const double cov = covariance(a->sum_nll, a->sum_nll_base, a->sum_nll_nll_base, n);
    r->cor_ln_ppl = lq_unc > 0 && lb_unc > 0 ? cov / (lq_unc * lb_unc) : 0;
    r->ln_ratio = lq - lb;
    double v = lq_unc * lq_unc + lb_unc * lb_unc - 2.0 * cov;
    r->ln_ratio_unc = v > 0 ? sqrt(v) : 0;
    r->ratio = exp(r->ln_ratio);
    r->ratio_unc = r->ratio * r->ln_ratio_unc;
    r->diff = r->ppl - r->ppl_base;
    v = r->ppl_unc * r->ppl_unc + r->ppl_base_unc * r->ppl_base_unc - 2.0 * r->ppl * r->ppl_base * cov;
    r->diff_unc = v > 0 ? sqrt(v) : 0;
    mean_unc(a->sum_kld, a->sum_kld2, n, &r->kld, &r->kld_unc);
    mean_unc(a->sum_p_diff, a->sum_p_diff2, n, &r->dp_mean, &r->dp_mean_unc);
    double mse, mse_unc;
    mean_unc(a->sum_p_diff2, a->sum_p_diff4, n, &mse, &mse_unc);
    r->dp_rms = sqrt(mse);
    r->dp_rms_unc = r->dp_rms > 0 ? 0.5 / r->dp_rms * mse_unc : 0;
    r->same_top = n > 0 ? (double)a->n_same_top / n : 0;
    r->same_top_unc = n > 1 ? sqrt(r->same_top * (1 - r->same_top) / (n - 1)) : 0;
    if (n > 0) {
        qsort(a->kld_values, (size_t)n, sizeof(float), cmp_float);
        qsort(a->p_diff_values, (size_t)n, sizeof(float), cmp_float);
    }
    for (int i = 0; i < PISO_KLD_NPCT; i++) r->kld_pct[i] = n > 0 ? percentile(a->kld_values, n, kld_fracs[i]) : 0;
    for (int i = 0; i < PISO_DP_NPCT; i++) r->dp_pct[i] = n > 0 ? percentile(a->p_diff_values, n, dp_fracs[i]) : 0;
}

void piso_kld_print(const struct piso_kld_result *r, FILE *out) {
    fprintf(out, "====== Perplexity statistics ======\n");
    fprintf(out, "Mean PPL(Q)                   : %10.6f ± %10.6f\n", r->ppl, r->ppl_unc);
    fprintf(out, "Mean PPL(base)                : %10.6f ± %10.6f\n", r->ppl_base, r->ppl_base_unc);
    fprintf(out, "Cor(ln(PPL(Q)), ln(PPL(base))): %6.2f%%\n", 100.0 * r->cor_ln_ppl);
    fprintf(out, "Mean ln(PPL(Q)/PPL(base))     : %10.6f ± %10.6f\n", r->ln_ratio, r->ln_ratio_unc);
    fprintf(out, "Mean PPL(Q)/PPL(base)         : %10.6f ± %10.6f\n", r->ratio, r->ratio_unc);
    fprintf(out, "Mean PPL(Q)-PPL(base)         : %10.6f ± %10.6f\n", r->diff, r->diff_unc);
    fprintf(out, "\n====== KL divergence statistics ======\n");
    fprintf(out, "Mean    KLD: %10.6f ± %10.6f\n", r->kld, r->kld_unc);
    for (int i = 0; i < PISO_KLD_NPCT; i++) fprintf(out, "%s KLD: %10.6f\n", piso_kld_pct_names[i], r->kld_pct[i]);
    fprintf(out, "\n====== Token probability statistics ======\n");
    fprintf(out, "Mean    Δp: %6.3f ± %5.3f %%\n", 100.0 * r->dp_mean, 100.0 * r->dp_mean_unc);
    for (int i = 0; i < PISO_DP_NPCT; i++) fprintf(out, "%s Δp: %6.3f%%\n", piso_dp_pct_names[i], 100.0 * r->dp_pct[i]);
    fprintf(out, "RMS Δp    : %6.3f ± %5.3f %%\n", 100.0 * r->dp_rms, 100.0 * r->dp_rms_unc);
    fprintf(out, "Same top p: %6.3f ± %5.3f %%\n", 100.0 * r->same_top, 100.0 * r->same_top_unc);
}

/* ---- the base file ------------------------------------------------------------------------ */

static int32_t read_i32(const unsigned char *p) {
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    int32_t v;
    memcpy(&v, &u, sizeof v);
    return v;
}

void piso_kld_base_close(struct piso_kld_base *b) {
    if (b->f) fclose(b->f);
    free(b->path);
    free(b->tokens);
    memset(b, 0, sizeof *b);
}

int piso_kld_base_open(const char *path, struct piso_kld_base *b) {
    memset(b, 0, sizeof *b);
    b->f = fopen(path, "rb");
    if (!b->f) return piso_errorf("%s: cannot open the KL base file: %s", path, strerror(errno));
    b->path = strdup(path);
    unsigned char h[KLD_HEADER_BYTES];
    int rc = 0;
    if (!b->path) {
        rc = piso_errorf("%s: out of memory", path);
    } else if (fread(h, 1, sizeof h, b->f) != sizeof h || memcmp(h, KLD_MAGIC, 8) != 0) {
        rc = piso_errorf("%s: not a KL base file (no \"_logits_\" header as written by --kl-base or "
                         "llama-perplexity --kl-divergence-base)", path);
    } else {
        int32_t ctx = read_i32(h + 8), vocab = read_i32(h + 12), chunks = read_i32(h + 16);
        if (ctx < 4 || ctx > (1 << 20) || vocab < 1 || vocab > (1 << 24) || chunks < 1 || chunks > (1 << 24))
            rc = piso_errorf("%s: bad KL base header (n_ctx %d, n_vocab %d, n_chunk %d)", path, ctx, vocab, chunks);
        b->ctx = ctx, b->vocab = vocab, b->chunks = chunks;
    }
    if (rc == 0) { /* the size must be exactly header + tokens + rows */
        /* header fields up to 2^24 chunks x 2^20 ctx x 2^24 vocab: the byte count can exceed int64,
         * so it is formed with overflow checks (such a header is refused, not wrapped) */
        const int64_t rows = (int64_t)b->chunks * (b->ctx - 1 - b->ctx / 2);
        int64_t row_bytes, all_rows, want = 0;
        const int too_big = __builtin_mul_overflow((int64_t)piso_kld_row_len(b->vocab), (int64_t)2, &row_bytes) ||
                            __builtin_mul_overflow(rows, row_bytes, &all_rows) ||
                            __builtin_add_overflow(all_rows, KLD_HEADER_BYTES + (int64_t)b->chunks * b->ctx * 4, &want);
        if (too_big) {
            rc = piso_errorf("%s: bad KL base header (n_ctx %d, n_vocab %d, n_chunk %d): the file it describes would "
                             "exceed 2^63 bytes", path, b->ctx, b->vocab, b->chunks);
        } else if (fseeko(b->f, 0, SEEK_END) != 0) {
            rc = piso_errorf("%s: cannot seek: %s", path, strerror(errno));
        } else {
            const int64_t have = ftello(b->f);
            if (have != want)
                rc = piso_errorf("%s: KL base file has %lld bytes, its header (n_ctx %d, n_vocab %d, %d chunks) "
                                 "needs %lld: truncated or not a base file", path, (long long)have, b->ctx, b->vocab,
                                 b->chunks, (long long)want);
        }
    }
    if (rc == 0) {
        const size_t n = (size_t)b->chunks * (size_t)b->ctx;
        b->tokens = malloc(n * sizeof *b->tokens);
        unsigned char *raw = malloc(n * 4);
        if (!b->tokens || !raw)
            rc = piso_errorf("%s: out of memory for %zu tokens", path, n);
        else if (fseeko(b->f, KLD_HEADER_BYTES, SEEK_SET) != 0 || fread(raw, 4, n, b->f) != n)
            rc = piso_errorf("%s: cannot read the tokens", path);
        for (size_t i = 0; rc == 0 && i < n; i++) {
            b->tokens[i] = read_i32(raw + 4 * i);
            if (b->tokens[i] < 0 || b->tokens[i] >= b->vocab)
                rc = piso_errorf("%s: token %zu is %d, outside the vocabulary of %d", path, i, b->tokens[i], b->vocab);
        }
        free(raw);
    }
    if (rc) piso_kld_base_close(b);
    return rc;
}

/* ---- writing and comparing over the perplexity chunks ---------------------------------- */

struct write_state {
    struct piso_outfile *out;
    int ctx, V;
    uint16_t *rows; /* [ctx - 1 - ctx/2, row_len] */
};

static int write_chunk(void *user, int chunk, const int *ids, const float *logits) {
    struct write_state *w = user;
    const int first = w->ctx / 2, n = w->ctx - 1 - first, len = piso_kld_row_len(w->V);
    for (int j = 0; j < n; j++)
        piso_kld_encode_row(logits + (size_t)j * w->V, w->V, ids[first + j + 1], w->rows + (size_t)j * len);
    if (piso_outfile_write(w->out, w->rows, (size_t)n * len * sizeof *w->rows))
        return piso_error_context("writing chunk %d", chunk);
    return 0;
}

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

int piso_kld_write_base(const struct piso_model *m, const int *ids, int n_ids, int bos_id, int ctx,
                        const char *path, struct piso_ppl_result *r) {
    if (ctx <= 0) ctx = m->cfg.max_seq_len > 0 && m->cfg.max_seq_len < 512 ? m->cfg.max_seq_len : 512;
    const int V = m->cfg.vocab_size, chunks = ctx >= 4 ? n_ids / ctx : 0;
    if (chunks < 1) return piso_perplexity_ids(m, ids, n_ids, bos_id, ctx, r); /* its error message */
    struct piso_outfile out;
    if (piso_outfile_open(&out, path)) return -1;
    const size_t head = KLD_HEADER_BYTES + (size_t)chunks * ctx * 4;
    unsigned char *h = malloc(head);
    struct write_state w = {&out, ctx, V, malloc((size_t)(ctx - 1 - ctx / 2) * piso_kld_row_len(V) * sizeof(uint16_t))};
    int rc = 0;
    if (!h || !w.rows) {
        rc = piso_errorf("%s: out of memory", path);
    } else {
        memcpy(h, KLD_MAGIC, 8);
        put_u32(h + 8, (uint32_t)ctx);
        put_u32(h + 12, (uint32_t)V);
        put_u32(h + 16, (uint32_t)chunks);
        for (size_t i = 0; i < (size_t)chunks * ctx; i++) put_u32(h + KLD_HEADER_BYTES + 4 * i, (uint32_t)ids[i]);
        rc = piso_outfile_write(&out, h, head);
    }
    if (rc == 0) rc = piso_perplexity_ids_each(m, ids, n_ids, bos_id, ctx, write_chunk, &w, r);
    free(h);
    free(w.rows);
    if (rc == 0) return piso_outfile_commit(&out) ? piso_error_context("%s", path) : 0;
    piso_outfile_abort(&out);
    return -1;
}

struct compare_state {
    const struct piso_kld_base *b;
    struct piso_kld_acc acc;
    uint16_t *rows;
};

static int compare_chunk(void *user, int chunk, const int *ids, const float *logits) {
    struct compare_state *s = user;
    const struct piso_kld_base *b = s->b;
    const int first = b->ctx / 2, n = b->ctx - 1 - first, len = piso_kld_row_len(b->vocab);
    if (fread(s->rows, sizeof *s->rows, (size_t)n * len, b->f) != (size_t)n * len)
        return piso_errorf("%s: cannot read the log-probs of chunk %d", b->path, chunk);
    for (int j = 0; j < n; j++) {
        const uint16_t *row = s->rows + (size_t)j * len;
        float scale, min_log_prob;
        memcpy(&scale, row, sizeof scale);
        memcpy(&min_log_prob, row + 2, sizeof min_log_prob);
        if (!isfinite(scale) || scale < 0 || !isfinite(min_log_prob) || min_log_prob > 0)
            return piso_errorf("%s: chunk %d, position %d: bad row (scale %g, min log-prob %g)", b->path, chunk,
                               first + j, scale, min_log_prob);
        if (piso_kld_acc_add(&s->acc, logits + (size_t)j * b->vocab, row, b->vocab, ids[first + j + 1])) return -1;
    }
    return 0;
}

int piso_kld_compare(const struct piso_model *m, const struct piso_kld_base *b, const int *ids, int n_ids,
                     int bos_id, int ctx, struct piso_kld_result *r) {
    memset(r, 0, sizeof *r);
    if (b->vocab != m->cfg.vocab_size)
        return piso_errorf("%s: the base model has a vocabulary of %d tokens, %s has %d: not the same model family",
                           b->path, b->vocab, m->path ? m->path : "this model", m->cfg.vocab_size);
    if (ctx > 0 && ctx != b->ctx)
        return piso_errorf("%s: the base was computed with --ctx %d, not %d (leave --ctx out to use the file's)",
                           b->path, b->ctx, ctx);
    if (ids) {
        const int64_t need = (int64_t)b->chunks * b->ctx;
        if (n_ids < need)
            return piso_errorf("%s: the base holds %d chunks of %d tokens (%lld), the text has only %d tokens: "
                               "another text", b->path, b->chunks, b->ctx, (long long)need, n_ids);
        for (int64_t i = 0; i < need; i++)
            if (ids[i] != b->tokens[i])
                return piso_errorf("%s: token %lld of the text is %d, the base has %d: another text or tokenizer",
                                   b->path, (long long)i, ids[i], b->tokens[i]);
    }
    struct compare_state s = {.b = b};
    const int64_t n = (int64_t)b->chunks * (b->ctx - 1 - b->ctx / 2);
    if (piso_kld_acc_init(&s.acc, n)) return -1;
    s.rows = malloc((size_t)(b->ctx - 1 - b->ctx / 2) * piso_kld_row_len(b->vocab) * sizeof *s.rows);
    int rc = s.rows ? 0 : piso_errorf("%s: out of memory", b->path);
    if (rc == 0 && fseeko(b->f, KLD_HEADER_BYTES + (off_t)b->chunks * b->ctx * 4, SEEK_SET) != 0)
        rc = piso_errorf("%s: cannot seek to the log-probs", b->path);
    struct piso_ppl_result pr;
    if (rc == 0) rc = piso_perplexity_ids_each(m, b->tokens, b->chunks * b->ctx, bos_id, b->ctx, compare_chunk, &s, &pr);
    if (rc == 0) {
        piso_kld_acc_finish(&s.acc, r);
        r->ctx = b->ctx;
        r->vocab = b->vocab;
        r->chunks = b->chunks;
    }
    free(s.rows);
    piso_kld_acc_free(&s.acc);
    return rc;
}
