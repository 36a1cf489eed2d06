/* Perplexity with llama.cpp's protocol: the reference numbers of the issue (stories260K on the
 * TinyStories sample at N = 512: 1883 tokens, 3 chunks, 765 scored, ppl 8.438) from both model
 * layouts and through the CLI; the protocol re-derived here from full-window logits; errors.
 * Also the generate CLI against the published greedy sample. */
#include "harness.h"
#include "piso/eval.h"

static void test_reference_numbers(void) {
    const char *txt = test_data("data/tinystories/tinystories_sample.cs336.txt");
    const char *paths[2] = {test_data("models/stories260K/stories260K.bin"), test_data("models/stories260K-hf")};
    char *text;
    size_t len;
    if (piso_read_file(txt, &text, &len) != 0) {
        CHECK(0, "read %s", txt);
        return;
    }
    piso_set_quiet(1);
    for (int k = 0; k < 2; k++) {
        struct piso_model *m;
        if (piso_model_load(paths[k], NULL, &m) != 0) {
            CHECK(0, "load %s: %s", paths[k], piso_last_error());
            continue;
        }
        CHECK(m->tok != NULL, "%s: tokenizer picked up", paths[k]);
        struct piso_ppl_result r;
        int rc = piso_perplexity(m, text, len, 0, &r);
        CHECK(rc == 0, "%s: %s", paths[k], piso_last_error());
        if (rc == 0) {
            CHECK(r.tokens == 1883 && r.chunks == 3 && r.scored == 765, "%s: tokens %d chunks %d scored %d", paths[k],
                  r.tokens, r.chunks, r.scored);
            CHECK_NEAR(r.ppl, 8.438, 5e-4, "stories260K ppl at N=512");
            CHECK_NEAR(r.nll, log(r.ppl), 1e-12, "nll = log ppl");
        }
        /* the protocol, re-derived: for each chunk, BOS at position 0, full-window logits, positions
         * N/2..N-2 predict the next original token */
        if (k == 0 && rc == 0) {
            int *ids, n;
            piso_tokenize(m->tok, text, len, 1, &ids, &n);
            int N = 128, V = m->cfg.vocab_size, chunks = n / N;
            float *lg = malloc((size_t)N * V * sizeof *lg);
            double sum = 0;
            int count = 0;
            for (int c = 0; c < chunks; c++) {
                int w[128];
                memcpy(w, ids + c * N, sizeof w);
                w[0] = 1;
                piso_forward(m, w, N, 0, lg);
                for (int j = N / 2; j < N - 1; j++) {
                    const float *l = lg + (size_t)j * V;
                    double mx = -1e30, z = 0;
                    for (int v = 0; v < V; v++) mx = fmax(mx, l[v]);
                    for (int v = 0; v < V; v++) z += exp(l[v] - mx);
                    sum += mx + log(z) - l[ids[c * N + j + 1]];
                    count++;
                }
            }
            struct piso_ppl_result r2;
            CHECK(piso_perplexity(m, text, len, N, &r2) == 0, "ctx 128");
            CHECK(r2.chunks == chunks && r2.scored == count && count == chunks * 63, "ctx 128 counts %d %d", r2.scored,
                  count);
            CHECK_NEAR(r2.nll, sum / count, 1e-5, "ctx 128 nll vs re-derived");
            free(lg);
            free(ids);
        }
        /* errors */
        struct piso_ppl_result r3;
        CHECK(piso_perplexity(m, "", 0, 0, &r3) != 0 && strstr(piso_last_error(), "empty"), "empty text");
        CHECK(piso_perplexity(m, "Once upon a time", 16, 0, &r3) != 0 && strstr(piso_last_error(), "fewer than one chunk"),
              "short text: %s", piso_last_error());
        CHECK(piso_perplexity(m, text, len, 2, &r3) != 0, "ctx 2");
        piso_model_free(m);
    }
    piso_set_quiet(0);
    free(text);
}

static void test_cli(void) {
    const char *txt = test_data("data/tinystories/tinystories_sample.cs336.txt");
    const char *bin = test_data("models/stories260K/stories260K.bin");
    char cmd[2048], *out = NULL;
    snprintf(cmd, sizeof cmd, "%s perplexity --model %s --text %s --json --quiet", PISO_BIN, bin, txt);
    int rc = test_run(cmd, &out);
    CHECK(rc == 0, "perplexity CLI exit %d", rc);
    double ppl = 0;
    int tokens = 0, chunks = 0, scored = 0;
    const char *p;
    if ((p = strstr(out, "\"ppl\": "))) ppl = atof(p + 7);
    if ((p = strstr(out, "\"tokens\": "))) tokens = atoi(p + 10);
    if ((p = strstr(out, "\"chunks\": "))) chunks = atoi(p + 10);
    if ((p = strstr(out, "\"scored\": "))) scored = atoi(p + 10);
    CHECK(strstr(out, "\"nll\"") && strstr(out, "\"seconds\""), "json keys: %s", out);
    CHECK_NEAR(ppl, 8.438, 5e-4, "CLI ppl");
    CHECK(tokens == 1883 && chunks == 3 && scored == 765, "CLI counts: %s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "%s perplexity --model /nonexistent --text %s 2>&1", PISO_BIN, txt);
    rc = test_run(cmd, &out);
    CHECK(rc == 1 && strstr(out, "piso perplexity: error:") && strstr(out, "/nonexistent"), "missing model: %s", out);
    free(out);

    /* generate: the published greedy sample continues "Once upon a time" */
    const char *md = test_data("models/stories260K/stories260K.md");
    char *doc;
    if (piso_read_file(md, &doc, NULL) != 0) return;
    const char *start = strstr(doc, "-t 0.0\n"), *end = start ? strstr(start, "\n```") : NULL;
    CHECK(start && end, "sample in %s", md);
    if (start && end) {
        start += 7;
        snprintf(cmd, sizeof cmd, "%s generate --model %s --prompt 'Once upon a time' -n 256 --quiet", PISO_BIN, bin);
        rc = test_run(cmd, &out);
        CHECK(rc == 0 && strncmp(out, start, (size_t)(end - start)) == 0, "generate CLI:\n%s", out);
        free(out);
    }
    free(doc);
}

int main(void) {
    test_reference_numbers();
    test_cli();
    return test_finish();
}
