/* Calibration windows drawn from a text file (seeded, reproducible). */
#include "piso/pipeline.h"

#include <stdlib.h>
#include <string.h>

/* splitmix64: a small, well-mixed generator, the same on every platform. */
static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void piso_calib_free(struct piso_calib *c) {
    free(c->tokens);
    memset(c, 0, sizeof *c);
}

int piso_calib_load(const struct piso_tokenizer *tok, const char *path, int nsamples, int seqlen, int ctx,
                    uint64_t seed, struct piso_calib *c) {
    memset(c, 0, sizeof *c);
    if (!tok) return piso_errorf("calibration: the model has no tokenizer (pass --tokenizer)");
    char *text = NULL;
    size_t len = 0;
    if (piso_read_file(path, &text, &len)) return piso_error_context("calibration text %s", path);
    size_t nonspace = 0;
    for (size_t i = 0; i < len; i++) nonspace += !(text[i] == ' ' || text[i] == '\n' || text[i] == '\r' || text[i] == '\t');
    if (nonspace == 0) {
        free(text);
        return piso_errorf("calibration text %s is empty", path);
    }
    int *ids = NULL, n = 0;
    int rc = piso_tokenize(tok, text, len, 1, &ids, &n);
    free(text);
    if (rc) return piso_error_context("tokenizing calibration text %s", path);
    const int min_window = 16;
    if (seqlen <= 0) {
        seqlen = 2048;
        if (ctx > 0 && seqlen > ctx) seqlen = ctx;
        if (seqlen > n) seqlen = n;
        if (seqlen < min_window) {
            free(ids);
            return piso_errorf("calibration text %s has %d tokens, shorter than one window of %d tokens", path, n,
                               min_window);
        }
    } else {
        if (ctx > 0 && seqlen > ctx) {
            free(ids);
            return piso_errorf("--seqlen %d is longer than the model's context of %d tokens", seqlen, ctx);
        }
        if (seqlen > n) {
            free(ids);
            return piso_errorf("calibration text %s has %d tokens, shorter than one window of %d tokens (--seqlen)",
                               path, n, seqlen);
        }
    }
    if (nsamples <= 0) {
        nsamples = n / seqlen;
        if (nsamples > 128) nsamples = 128;
        if (nsamples < 1) nsamples = 1;
    }
    c->tokens = malloc(sizeof(int) * (size_t)nsamples * seqlen);
    if (!c->tokens) {
        free(ids);
        return piso_errorf("out of memory for %d calibration windows of %d tokens", nsamples, seqlen);
    }
    c->nsamples = nsamples, c->seqlen = seqlen, c->n_text_tokens = n;
    uint64_t state = seed;
    int disjoint = (int64_t)nsamples * seqlen <= n;
    int64_t slice = disjoint ? n / nsamples : 0;
    const struct piso_tokenizer_vocab *v = piso_tokenizer_vocab(tok);
    int bos = v ? v->bos_id : -1;
    for (int k = 0; k < nsamples; k++) {
        int64_t start;
        if (disjoint) start = k * slice + (int64_t)(splitmix64(&state) % (uint64_t)(slice - seqlen + 1));
        else start = (int64_t)(splitmix64(&state) % (uint64_t)(n - seqlen + 1));
        memcpy(c->tokens + (size_t)k * seqlen, ids + start, sizeof(int) * seqlen);
        if (bos >= 0) c->tokens[(size_t)k * seqlen] = bos; /* like llama.cpp's perplexity windows */
    }
    free(ids);
    return 0;
}
