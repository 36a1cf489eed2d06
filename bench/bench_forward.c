/* Forward-pass throughput: a synthetic Llama-shaped model (hidden 2048, FFN 5632, 32 heads / 8 KV
 * heads, 2 layers, vocab 1024, random weights) prefilling a 512-token window, reported as GFLOP/s
 * and as a fraction of the piso_la_sgemm peak measured in the same run (2048^3, all threads).
 *
 *   build/bench_forward [--layers L] [--ctx N] [--ffn F] [--reps R]
 *
 * FLOPs counted are those of the GEMMs the forward pass executes: projections, the head, and the
 * full n x n attention score and value products (the causal mask halves the useful part). */
#include "piso/linalg.h"
#include "piso/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float frand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 - 0.5);
}
static void fill(float *p, size_t n, float scale, float offset) {
    for (size_t i = 0; i < n; i++) p[i] = offset + scale * frand();
}

/* seconds of one 2048^3 sgemm (fixed tiles on all threads) */
static double sgemm_seconds(const float *a, const float *b, float *c) {
    int n = 2048;
    double t = piso_time();
    piso_la_sgemm(0, 1, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    return piso_time() - t;
}

int main(int argc, char **argv) {
    int layers = 2, ctx = 512, ffn = 5632, reps = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--layers")) layers = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--ctx")) ctx = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--ffn")) ffn = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
    }
    struct piso_config c = {0};
    snprintf(c.arch, sizeof c.arch, "llama");
    c.dim = 2048, c.hidden_dim = ffn, c.n_layers = layers, c.n_heads = 32, c.n_kv_heads = 8, c.head_dim = 64;
    c.vocab_size = 1024, c.max_seq_len = ctx, c.norm_eps = 1e-5f, c.rope_theta = 10000.0f;
    c.rope_style = PISO_ROPE_HALF;
    struct piso_model *m;
    if (piso_model_alloc(&c, &m) != 0) {
        fprintf(stderr, "bench_forward: %s\n", piso_last_error());
        return 1;
    }
    size_t D = 2048, F = (size_t)ffn, Hq = 2048, Hkv = 512, V = 1024;
    fill(m->tok_embd, V * D, 1, 0), fill(m->output, V * D, 0.05f, 0), fill(m->out_norm, D, 0.1f, 1);
    for (int l = 0; l < layers; l++) {
        struct piso_layer_weights *w = &m->layers[l];
        fill(w->attn_norm, D, 0.1f, 1), fill(w->ffn_norm, D, 0.1f, 1);
        fill(w->wq, Hq * D, 0.04f, 0), fill(w->wk, Hkv * D, 0.04f, 0), fill(w->wv, Hkv * D, 0.04f, 0);
        fill(w->wo, D * Hq, 0.04f, 0), fill(w->w_gate, F * D, 0.04f, 0), fill(w->w_up, F * D, 0.04f, 0);
        fill(w->w_down, D * F, 0.02f, 0);
    }
    int *tok = malloc((size_t)ctx * sizeof *tok);
    for (int i = 0; i < ctx; i++) tok[i] = (int)((frand() + 0.5f) * (float)(V - 1));
    float *logits = malloc((size_t)ctx * V * sizeof *logits);

    double n = ctx;
    double per_layer = 2 * n * (D * Hq + 2 * D * Hkv + Hq * D + 3 * D * F) + 4 * n * n * 64 * 32;
    double flops = layers * per_layer + 2 * n * D * V;

    /* peak and forward alternate so both see the same machine load; best of reps each, after
     * one warm-up round */
    size_t nn = 2048 * 2048;
    float *a = malloc(nn * 4), *b = malloc(nn * 4), *cc = malloc(nn * 4);
    fill(a, nn, 1, 0), fill(b, nn, 1, 0);
    double best = 1e30, best_gemm = 1e30;
    for (int r = 0; r < reps + 1; r++) {
        double tg = sgemm_seconds(a, b, cc);
        double t = piso_time();
        if (piso_forward(m, tok, ctx, 0, logits) != 0) {
            fprintf(stderr, "bench_forward: %s\n", piso_last_error());
            return 1;
        }
        t = piso_time() - t;
        if (r > 0 && t < best) best = t;
        if (r > 0 && tg < best_gemm) best_gemm = tg;
    }
    free(a), free(b), free(cc);
    double peak = 2.0 * 2048 * 2048 * 2048.0 / best_gemm / 1e9;
    double gf = flops / best / 1e9;
    printf("forward: hidden 2048, ffn %d, %d layers, 32/8 heads, vocab 1024, ctx %d, %d threads\n", ffn, layers, ctx,
           piso_num_threads());
    printf("  forward  %.3f s  %.1f GFLOP  %.1f GFLOP/s  (%.0f tokens/s)\n", best, flops / 1e9, gf, n / best);
    printf("  sgemm peak (2048^3, all threads)  %.1f GFLOP/s\n", peak);
    printf("  fraction of peak  %.2f\n", gf / peak);
    free(tok), free(logits);
    piso_model_free(m);
    return 0;
}
