/* bench_lowbit — layer output error of the llama.cpp block types on one synthetic Llama-3.2-1B-shaped
 * decoder block (hidden 2048, intermediate 8192, 32 query / 8 KV heads of 64): q, k, v, o, gate, up
 * [·, 2048] and down [2048, 8192]. For each type, piso's scales against llama.cpp's rule
 * (`llamacpp-ref`) at the same type (equal bits per weight): without importance, with the imatrix
 * (h = diag H / T, what llama-imatrix stores), and piso with dense calibration (GPTQ through
 * H = XᵀX/T; not for NVFP4, whose 64-blocks have no engine rounder).
 *
 * Error of a layer: Σ_r (w_r − ŵ_r)ᵀ H (w_r − ŵ_r) / Σ_r w_rᵀ H w_r over the sampled rows (rows are
 * independent for every method, GPTQ included: its error feedback stays inside a row), summed over
 * the seven layers before dividing. Statistics: per input, H = diag(c)(I + AAᵀ/8)diag(c)/… built
 * from heavy-tailed channel scales c (a few outlier channels) and a rank-8 shared component A,
 * the structure of LLM activations; weights: heavy-tailed rows (Student-t-like) with a per-row
 * scale. Everything is seeded: the numbers are reproducible.
 *
 * usage: bench_lowbit [--rows R] [--scale-down K] [--types LIST] [--no-gptq] */
#include "piso/block_scales.h"
#include "piso/ggml_quants.h"
#include "piso/gguf.h"
#include "piso/linalg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x243F6A8885A308D3ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 4503599627370496.0 - 1.0);
}

/* H = diag(c) (I + A Aᵀ / 8) diag(c), A [D, 8]: PSD, correlated, channel scales c heavy-tailed. */
static float *synth_h(int64_t D) {
    float *H = malloc(sizeof(float) * (size_t)(D * D)), *A = malloc(sizeof(float) * (size_t)(D * 8)), *c = malloc(sizeof(float) * (size_t)D);
    for (int64_t j = 0; j < D; j++) {
        float u = fabsf(frand()) + 0.05f;
        c[j] = 0.3f + 0.2f / u * (j % 61 == 0 ? 6.0f : 1.0f); /* ratio-of-uniforms tail, outlier channels */
        for (int k = 0; k < 8; k++) A[j * 8 + k] = frand();
    }
    for (int64_t a = 0; a < D; a++)
        for (int64_t b = 0; b < D; b++) {
            float s = a == b ? 1.0f : 0.0f;
            for (int k = 0; k < 8; k++) s += A[a * 8 + k] * A[b * 8 + k] / 8.0f;
            H[a * D + b] = c[a] * c[b] * s;
        }
    free(A), free(c);
    return H;
}

static float *synth_w(int64_t N, int64_t D) {
    float *W = malloc(sizeof(float) * (size_t)(N * D));
    for (int64_t r = 0; r < N; r++) {
        const float rs = 0.01f + 0.02f * fabsf(frand());
        for (int64_t j = 0; j < D; j++) {
            float v = frand() / (fabsf(frand()) + 0.15f) * 0.15f; /* heavy tails */
            W[r * D + j] = rs * v;
        }
    }
    return W;
}

/* Σ_r Δ_rᵀ H Δ_r through one GEMM (fp32, summed in fp64). */
static double quad(const float *Dl, int64_t N, int64_t D, const float *H) {
    float *P = malloc(sizeof(float) * (size_t)(N * D));
    piso_la_sgemm(0, 0, N, D, D, 1.0f, Dl, D, H, D, 0.0f, P, D);
    double s = 0;
    for (int64_t i = 0; i < N * D; i++) s += (double)P[i] * Dl[i];
    free(P);
    return s;
}

enum { M_REF, M_REF_IM, M_PISO, M_PISO_IM, M_PISO_GPTQ, M_COUNT };
static const char *const mname[M_COUNT] = {"llamacpp-ref", "llamacpp-ref+imatrix", "piso", "piso+imatrix", "piso+calib(GPTQ)"};

int main(int argc, char **argv) {
    int rows = 32, K = 1, gptq = 1;
    char types_arg[256] = "Q2_K,Q3_K,Q4_K,MXFP4,NVFP4";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rows") && i + 1 < argc) rows = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--scale-down") && i + 1 < argc) K = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--types") && i + 1 < argc) snprintf(types_arg, sizeof types_arg, "%s", argv[++i]);
        else if (!strcmp(argv[i], "--no-gptq")) gptq = 0;
        else {
            fprintf(stderr, "usage: bench_lowbit [--rows R] [--scale-down K] [--types Q2_K,Q3_K,...] [--no-gptq]\n");
            return 2;
        }
    }
    if (K < 1) K = 1;
    setvbuf(stdout, NULL, _IOLBF, 0);
    piso_set_quiet(1);
    const int64_t Dm = 2048 / K, F = 8192 / K, Hkv = 512 / K;
    struct {
        const char *name;
        int64_t N, D;
        int in; /* which statistics: 0 attention input, 1 o input, 2 FFN input, 3 down input */
    } lin[7] = {{"q", Dm, Dm, 0}, {"k", Hkv, Dm, 0}, {"v", Hkv, Dm, 0}, {"o", Dm, Dm, 1},
                {"gate", F, Dm, 2}, {"up", F, Dm, 2}, {"down", Dm, F, 3}};
    printf("synthetic Llama-3.2-1B block / %d (hidden %lld, intermediate %lld), %d sampled rows per layer, %d threads\n", K,
           (long long)Dm, (long long)F, rows, piso_num_threads());
    float *H[4] = {synth_h(Dm), synth_h(Dm), synth_h(Dm), synth_h(F)};
    float *W[7];
    for (int l = 0; l < 7; l++) W[l] = synth_w(rows, lin[l].D);

    printf("| type | bpw | llamacpp-ref | llamacpp-ref+imatrix | piso | piso+imatrix | piso+calib(GPTQ) |\n|---|---:|---:|---:|---:|---:|---:|\n");
    char *save = NULL;
    for (char *tn = strtok_r(types_arg, ",", &save); tn; tn = strtok_r(NULL, ",", &save)) {
        int type;
        if (piso_ggml_type_from_name(tn, &type) || !piso_ggml_is_block_type(type)) {
            fprintf(stderr, "bench_lowbit: %s is not a block type\n", tn);
            return 1;
        }
        double num[M_COUNT] = {0}, den = 0, secs[M_COUNT] = {0};
        for (int l = 0; l < 7; l++) {
            const int64_t N = rows, D = lin[l].D;
            const float *Hl = H[lin[l].in];
            float *h = malloc(sizeof(float) * (size_t)D), *y = malloc(sizeof(float) * (size_t)(N * D));
            uint8_t *q = malloc(piso_ggml_row_size(type, D) * (size_t)N);
            for (int64_t j = 0; j < D; j++) h[j] = Hl[j * D + j];
            den += quad(W[l], N, D, Hl);
            for (int m = 0; m < M_COUNT; m++) {
                if (m == M_PISO_GPTQ && (!gptq || type == GGML_T_NVFP4)) continue;
                double t0 = piso_time();
                float ts = 1.0f;
                size_t done;
                switch (m) {
                case M_REF: done = piso_ggml_quantize_ref(type, W[l], q, N, D, NULL); break;
                case M_REF_IM: done = piso_ggml_quantize_ref(type, W[l], q, N, D, h); break;
                case M_PISO:
                case M_PISO_IM:
                    done = type == GGML_T_NVFP4 ? piso_nvfp4_quantize_tensor(W[l], q, N, D, m == M_PISO_IM ? h : NULL, 1, &ts)
                                                : piso_ggml_quantize_piso(type, W[l], q, N, D, m == M_PISO_IM ? h : NULL);
                    break;
                default: done = piso_ggml_quantize_gptq(type, W[l], q, N, D, Hl); break;
                }
                secs[m] += piso_time() - t0;
                if (!done) {
                    fprintf(stderr, "bench_lowbit: %s %s: %s\n", tn, mname[m], piso_last_error());
                    return 1;
                }
                piso_ggml_dequantize_row(type, q, y, N * D);
                for (int64_t i = 0; i < N * D; i++) y[i] = W[l][i] - y[i] * ts;
                num[m] += quad(y, N, D, Hl);
            }
            free(h), free(y), free(q);
        }
        const double bpw = 8.0 * piso_ggml_block_bytes(type) / piso_ggml_block_elems(type);
        printf("| %s | %.4g |", piso_ggml_traits(type)->name, bpw);
        for (int m = 0; m < M_COUNT; m++) {
            if (num[m] == 0) printf(" – |");
            else printf(" %.5f |", num[m] / den);
        }
        printf("\n");
        fprintf(stderr, "%s seconds:", tn);
        for (int m = 0; m < M_COUNT; m++) fprintf(stderr, " %s %.1f", mname[m], secs[m]);
        fprintf(stderr, "\n");
    }
    for (int k = 0; k < 4; k++) free(H[k]);
    for (int l = 0; l < 7; l++) free(W[l]);
    return 0;
}
