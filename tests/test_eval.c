/* KL divergence (piso/kld.h) and HellaSwag (piso/hellaswag.h) without llama.cpp:
 *  - std::mt19937: the C++ standard's published value (10000th output of the default seed is
 *    4123659995) and the first outputs for seed 1 from a C++ program compiled with g++;
 *  - the HellaSwag task draw against that C++ program (std::uniform_int_distribution + erase);
 *  - the task file's errors (line count, gold index) name the file and line;
 *  - HellaSwag scores against a second code path: each ending's log-likelihood from one forward
 *    over the whole sequence, log-softmax in double, tokens from context + " " + ending;
 *  - the compact log-prob rows against the exact log-softmax, the KLD statistics against a
 *    brute-force double computation from the decoded rows (mean, top-1 agreement, percentiles by
 *    their definition);
 *  - the CLI: a base written and compared with the same model gives KLD ~ 0 and 100% top-1; a base
 *    from another text, context or vocabulary, or a truncated one, is refused with a message, and
 *    a failed --kl-base write leaves no file.
 * The comparison with llama.cpp's own numbers is in test_llamacpp_evals (slow). */
#include "eval_ref.h"
#include "harness.h"
#include "piso/eval.h"
#include "piso/hellaswag.h"
#include "piso/kld.h"
#include "piso/tokenizer.h"

#include <stdint.h>
#include <unistd.h>

static void test_mt19937(const char *ref) {
    struct piso_mt19937 g;
    piso_mt19937_seed(&g, 5489u); /* std::mt19937's default seed */
    uint32_t v = 0;
    for (int i = 0; i < 10000; i++) v = piso_mt19937_u32(&g);
    CHECK(v == 4123659995u, "mt19937 10000th output %u, the standard says 4123659995", v);

    static long long want[2000];
    int n = eval_ref_numbers(ref, "--raw 1 2000", want, 2000);
    CHECK(n == 2000, "C++ reference printed %d numbers", n);
    piso_mt19937_seed(&g, 1);
    int same = 0;
    for (int i = 0; i < n; i++) same += piso_mt19937_u32(&g) == (uint32_t)want[i];
    CHECK(same == n, "mt19937(1): %d of %d outputs equal std::mt19937's", same, n);
}

static void check_draw(const char *ref, int total, int n) {
    static long long want[12000];
    static int got[12000];
    char args[64];
    snprintf(args, sizeof args, "%d %d", total, n);
    int k = eval_ref_numbers(ref, args, want, 12000);
    CHECK(k == n, "C++ draw %s printed %d indices", args, k);
    CHECK(piso_hellaswag_select(total, n, 0, got) == 0, "select: %s", piso_last_error());
    int same = 0;
    for (int i = 0; i < k; i++) same += got[i] == want[i];
    CHECK(same == n, "draw of %d from %d: %d indices equal the C++ reference", n, total, same);
}

static void test_draw(const char *ref) {
    check_draw(ref, 10042, 10042); /* the whole validation set, every remaining-list size */
    check_draw(ref, 10042, 400);
    for (int total = 1; total <= 9; total++) check_draw(ref, total, total);
    int first[5];
    CHECK(piso_hellaswag_select(10042, 5, 1, first) == 0 && first[0] == 0 && first[4] == 4, "--first: 0..4");
    CHECK(piso_hellaswag_select(3, 4, 0, first) != 0, "drawing 4 of 3 tasks is an error");
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void test_task_file(const char *dir) {
    char path[512];
    struct piso_hellaswag_set s;
    snprintf(path, sizeof path, "%s/bad.txt", dir);
    write_text(path, "ctx\n1\na\nb\nc\n");
    CHECK(piso_hellaswag_load(path, &s) != 0 && strstr(piso_last_error(), "5 lines") &&
              strstr(piso_last_error(), "bad.txt"),
          "5 lines: %s", piso_last_error());
    write_text(path, "ctx\n1\na\nb\nc\nd\nctx2\nfour\na\nb\nc\nd\n");
    CHECK(piso_hellaswag_load(path, &s) != 0 && strstr(piso_last_error(), "line 8"), "gold 'four': %s", piso_last_error());
    write_text(path, "ctx\n4\na\nb\nc\nd\n");
    CHECK(piso_hellaswag_load(path, &s) != 0 && strstr(piso_last_error(), "line 2"), "gold 4: %s", piso_last_error());
    write_text(path, "c1\n 2\ne0\ne1\ne2\ne3\nc2\n0\nf0\nf1\nf2\nf3"); /* no final newline */
    CHECK(piso_hellaswag_load(path, &s) == 0 && s.n == 2 && s.tasks[0].gold == 2 && !strcmp(s.tasks[1].ending[3], "f3") &&
              s.tasks[1].line == 7,
          "two tasks: %s", piso_last_error());
    piso_hellaswag_free(&s);
    char cmd[1024], *out = NULL;
    write_text(path, "ctx\n9\na\nb\nc\nd\n");
    snprintf(cmd, sizeof cmd, "%s eval hellaswag --model /nonexistent --tasks %s 2>&1", PISO_BIN, path);
    CHECK(test_run(cmd, &out) == 1 && strstr(out, "line 2"), "CLI on a bad gold index: %s", out ? out : "");
    free(out);
}

/* log-likelihood of tokens[from..n) given the earlier ones, per token, by a full forward from 0 */
static double ref_ending(const struct piso_model *m, const int *ids, int n, int from) {
    const int V = m->cfg.vocab_size;
    float *lg = malloc(sizeof(float) * (size_t)n * V);
    CHECK(piso_forward(m, ids, n, 0, lg) == 0, "forward: %s", piso_last_error());
    double sum = 0;
    for (int j = from; j < n; j++) {
        const float *z = lg + (size_t)(j - 1) * V;
        double mx = z[0], s = 0;
        for (int i = 1; i < V; i++) mx = fmax(mx, z[i]);
        for (int i = 0; i < V; i++) s += exp(z[i] - mx);
        sum += z[ids[j]] - mx - log(s);
    }
    free(lg);
    return sum / (n - from);
}

static void test_hellaswag_scores(void) {
    struct piso_model *m;
    CHECK(piso_model_load(test_data("models/stories260K/stories260K.bin"), NULL, &m) == 0, "load: %s", piso_last_error());
    struct piso_hellaswag_set s;
    CHECK(piso_hellaswag_load(test_data("data/hellaswag/hellaswag_val_full.txt"), &s) == 0, "tasks: %s", piso_last_error());
    CHECK(s.n == 10042, "the validation file has %d tasks, not 10042", s.n);
    enum { N = 6 };
    int order[N] = {0, 1, 2, 3, 4, 5};
    struct piso_hellaswag_task_score ts[N];
    struct piso_hellaswag_result r;
    CHECK(piso_hellaswag_score(m, &s, order, N, 0, ts, &r) == 0, "score: %s", piso_last_error());
    double worst = 0;
    int correct = 0;
    for (int t = 0; t < N; t++) {
        int *ids[4], n[4], best = 0;
        double lp[4];
        for (int e = 0; e < 4; e++) {
            char text[4096];
            snprintf(text, sizeof text, "%s %s", s.tasks[t].context, s.tasks[t].ending[e]);
            piso_tokenizer_set_parse_special(m->tok, 0);
            CHECK(piso_tokenize(m->tok, text, strlen(text), 1, &ids[e], &n[e]) == 0, "tokenize");
            piso_tokenizer_set_parse_special(m->tok, 1);
        }
        int cp = 0; /* the shared prefix, recomputed here */
        while (cp < n[0] && cp < n[1] && cp < n[2] && cp < n[3] && ids[1][cp] == ids[0][cp] && ids[2][cp] == ids[0][cp] &&
               ids[3][cp] == ids[0][cp])
            cp++;
        CHECK(cp == ts[t].prefix, "task %d: prefix %d vs %d", t, cp, ts[t].prefix);
        for (int e = 0; e < 4; e++) {
            lp[e] = ref_ending(m, ids[e], n[e], cp);
            worst = fmax(worst, fabs(lp[e] - ts[t].logprob[e]));
            if (lp[e] > lp[best]) best = e;
            free(ids[e]);
        }
        correct += best == s.tasks[t].gold;
        CHECK(best == ts[t].pred, "task %d: reference picks %d, piso %d", t, best, ts[t].pred);
    }
    printf("hellaswag: %d tasks, max |Δ mean log-prob| vs full-sequence double reference %.2e\n", N, worst);
    CHECK(worst < 2e-5, "mean log-probs differ by %g", worst);
    CHECK(r.correct == correct && fabs(r.acc_norm - 100.0 * correct / N) < 1e-12, "acc %d vs %d", r.correct, correct);
    /* Wilson score interval in its textbook form: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n) */
    const double z = 1.959963984540054, p = (double)correct / N;
    const double c = (p + z * z / (2 * N)) / (1 + z * z / N), h = z * sqrt(p * (1 - p) / N + z * z / (4.0 * N * N)) / (1 + z * z / N);
    CHECK_NEAR(r.ci_lo, 100 * (c - h), 1e-9, "Wilson lower bound");
    CHECK_NEAR(r.ci_hi, 100 * (c + h), 1e-9, "Wilson upper bound");
    piso_hellaswag_free(&s);
    piso_model_free(m);
}

static uint32_t rng_state = 12345;
static float rnd(void) { /* uniform in [-1, 1) */
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((rng_state >> 8) & 0xffffff) / 8388608.0f - 1.0f;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void test_kld_math(void) {
    enum { V = 301, P = 400 }; /* odd vocabulary: rows are padded to an even count */
    const int len = piso_kld_row_len(V);
    CHECK(len == 306, "row length %d for %d tokens (llama.cpp: 2*ceil(V/2) + 4 = 306)", len, V);
    float *base = malloc(sizeof(float) * V * P), *q = malloc(sizeof(float) * V * P);
    uint16_t *rows = malloc(sizeof(uint16_t) * (size_t)len * P);
    int targets[P];
    double worst_code = 0;
    for (int p = 0; p < P; p++) {
        const float spread = 2 + 10 * (p % 5); /* some rows reach the 16-nat clamp */
        for (int i = 0; i < V; i++) base[p * V + i] = spread * rnd(), q[p * V + i] = base[p * V + i] + 0.3f * rnd();
        targets[p] = (p * 37) % V;
        const double nll = piso_kld_encode_row(base + p * V, V, targets[p], rows + (size_t)p * len);
        double mx = -1e30, s = 0;
        for (int i = 0; i < V; i++) mx = fmax(mx, base[p * V + i]);
        for (int i = 0; i < V; i++) s += exp(base[p * V + i] - mx);
        float scale, minlp;
        memcpy(&scale, rows + (size_t)p * len, 4);
        memcpy(&minlp, rows + (size_t)p * len + 2, 4);
        for (int i = 0; i < V; i++) {
            const double exact = base[p * V + i] - mx - log(s);
            if (exact < minlp) continue; /* clamped */
            const double dec = scale * rows[(size_t)p * len + 4 + i] + minlp;
            worst_code = fmax(worst_code, fabs(dec - exact) / scale);
        }
        CHECK_NEAR(nll, -(base[p * V + targets[p]] - mx - log(s)), 1e-5, "encoded row's nll");
    }
    /* rounding to the nearest code is half a step; llama.cpp's float arithmetic adds a little */
    CHECK(worst_code < 0.6, "decoded log-probs off by %.3f code steps", worst_code);

    struct piso_kld_acc acc;
    CHECK(piso_kld_acc_init(&acc, P) == 0, "acc");
    for (int p = 0; p < P; p++) CHECK(piso_kld_acc_add(&acc, q + p * V, rows + (size_t)p * len, V, targets[p]) == 0, "add");
    CHECK(piso_kld_acc_add(&acc, q, rows, V, 0) != 0, "a position past the capacity is refused");
    struct piso_kld_result r;
    piso_kld_acc_finish(&acc, &r);
    /* brute force in double from the decoded base rows */
    double *kl = malloc(sizeof(double) * P), sum = 0, sum2 = 0;
    int same = 0;
    for (int p = 0; p < P; p++) {
        const uint16_t *row = rows + (size_t)p * len;
        float scale, minlp;
        memcpy(&scale, row, 4);
        memcpy(&minlp, row + 2, 4);
        double mx = -1e30, s = 0, k = 0, bmax = -1e30;
        int aq = 0, ab = 0;
        for (int i = 0; i < V; i++) mx = fmax(mx, q[p * V + i]);
        for (int i = 0; i < V; i++) s += exp(q[p * V + i] - mx);
        for (int i = 0; i < V; i++) {
            const double lb = (double)scale * row[4 + i] + minlp, lq = q[p * V + i] - mx - log(s);
            if (lb > -16) k += exp(lb) * (lb - lq);
            if (lb > bmax) bmax = lb, ab = i;
            if (q[p * V + i] > q[p * V + aq]) aq = i;
        }
        kl[p] = k, sum += k, sum2 += k * k, same += aq == ab;
    }
    qsort(kl, P, sizeof *kl, cmp_double);
    const double mean = sum / P, unc = sqrt((sum2 / P - mean * mean) / (P - 1));
    /* piso sums float terms as llama-perplexity does (log-probs up to 16 nats, float rounding
     * ~1e-6 each); a wrong formula would be off by far more than this relative 5e-4 */
    CHECK_NEAR(r.kld, mean, 5e-4 * mean, "mean KLD");
    CHECK_NEAR(r.kld_unc, unc, 5e-3 * unc, "KLD uncertainty");
    CHECK(r.same_top == (double)same / P, "top-1 agreement %g vs %d/%d", r.same_top, same, P);
    CHECK_NEAR(r.kld_pct[0], kl[P - 1], 5e-4 * kl[P - 1], "maximum KLD");
    CHECK_NEAR(r.kld_pct[10], kl[0], 5e-4 * kl[0] + 1e-7, "minimum KLD");
    CHECK_NEAR(r.kld_pct[5], 0.5 * (kl[P / 2 - 1] + kl[P / 2]), 5e-4 * kl[P / 2], "median KLD");
    const double x = 0.9 * (P - 1), f = x - floor(x); /* 90th percentile: interpolation at 0.9·(n-1) */
    CHECK_NEAR(r.kld_pct[4], (1 - f) * kl[(int)x] + f * kl[(int)x + 1], 5e-4 * kl[(int)x], "90% KLD");
    printf("KLD math: mean %.6f ± %.6f, top-1 %.3f, max %.4f\n", r.kld, r.kld_unc, r.same_top, r.kld_pct[0]);
    piso_kld_acc_free(&acc);
    free(kl);
    free(base);
    free(q);
    free(rows);
}

static void test_kld_cli(const char *dir) {
    const char *model = test_data("models/stories260K/stories260K.bin");
    const char *text = test_data("data/tinystories/tinystories_sample.cs336.txt");
    char base[512], cmd[4096], *out = NULL;
    snprintf(base, sizeof base, "%s/base.kld", dir);
    snprintf(cmd, sizeof cmd, "%s perplexity --model %s --text %s --kl-base %s --quiet --json", PISO_BIN, model, text, base);
    CHECK(test_run(cmd, &out) == 0 && strstr(out, "\"ppl\""), "write base: %s", out ? out : "");
    free(out);
    snprintf(cmd, sizeof cmd, "%s perplexity --model %s --kl-base %s --kl-divergence --quiet --json", PISO_BIN, model, base);
    CHECK(test_run(cmd, &out) == 0, "compare with itself");
    const char *k = out ? strstr(out, "\"kld\": ") : NULL, *t = out ? strstr(out, "\"same_top\": ") : NULL;
    CHECK(k && fabs(atof(k + 7)) < 1e-4 && t && atof(t + 12) == 1.0, "self-comparison: %s", out ? out : "");
    free(out);

    /* another context, another text, another vocabulary, a truncated file */
    struct {
        const char *args, *want;
    } bad[] = {
        {"--ctx 256", "--ctx 512"},
        {"--text " PISO_SOURCE_DIR "/README.md", "another text"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(cmd, sizeof cmd, "%s perplexity --model %s --kl-base %s --kl-divergence %s 2>&1", PISO_BIN, model, base,
                 bad[i].args);
        CHECK(test_run(cmd, &out) == 1 && strstr(out, bad[i].want), "%s: %s", bad[i].args, out ? out : "");
        free(out);
    }
    char other[512];
    snprintf(other, sizeof other, "%s/other.kld", dir);
    { /* a well-formed base of a 300-token vocabulary: 1 chunk of 8 tokens, 3 scored rows */
        FILE *f = fopen(other, "wb");
        const int32_t head[3] = {8, 300, 1}, toks[8] = {1, 5, 6, 7, 8, 9, 10, 11};
        uint16_t row[304] = {0};
        fwrite("_logits_", 1, 8, f);
        fwrite(head, 4, 3, f);
        fwrite(toks, 4, 8, f);
        for (int i = 0; i < 3; i++) fwrite(row, 2, 304, f);
        fclose(f);
    }
    snprintf(cmd, sizeof cmd, "%s perplexity --model %s --kl-base %s --kl-divergence 2>&1", PISO_BIN, model, other);
    CHECK(test_run(cmd, &out) == 1 && strstr(out, "vocabulary of 300"), "other vocabulary: %s", out ? out : "");
    free(out);
    snprintf(cmd, sizeof cmd, "head -c 1000 %s > %s", base, other);
    CHECK(test_run(cmd, NULL) == 0, "truncate");
    snprintf(cmd, sizeof cmd, "%s perplexity --model %s --kl-base %s --kl-divergence 2>&1", PISO_BIN, model, other);
    CHECK(test_run(cmd, &out) == 1 && strstr(out, "truncated"), "truncated: %s", out ? out : "");
    free(out);
    snprintf(cmd, sizeof cmd, "%s perplexity --model %s --kl-base %s --kl-divergence 2>&1", PISO_BIN, model, text);
    CHECK(test_run(cmd, &out) == 1 && strstr(out, "_logits_"), "not a base file: %s", out ? out : "");
    free(out);
    /* a failed write leaves nothing: a text shorter than one chunk */
    char tiny[512], never[512];
    snprintf(tiny, sizeof tiny, "%s/tiny.txt", dir);
    snprintf(never, sizeof never, "%s/never.kld", dir);
    write_text(tiny, "Once upon a time.");
    snprintf(cmd, sizeof cmd, "%s perplexity --model %s --text %s --kl-base %s 2>&1", PISO_BIN, model, tiny, never);
    CHECK(test_run(cmd, &out) == 1 && access(never, F_OK) != 0, "short text: %s", out ? out : "");
    free(out);
}

int main(void) {
    char dir[] = "/tmp/piso_eval_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    test_kld_math();
    test_task_file(dir);
    char ref[600];
    eval_ref_build_draw(dir, ref, sizeof ref);
    test_mt19937(ref);
    test_draw(ref);
    test_hellaswag_scores();
    test_kld_cli(dir);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
    return test_finish();
}
