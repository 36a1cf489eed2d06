/* bench_block — seconds of the layer solvers for one synthetic Llama-3.2-1B-shaped decoder block
 * (hidden 2048, intermediate 8192, 32 heads, 8 KV heads, head_dim 64): q,k,v,o,gate,up [·, 2048]
 * and down [2048, 8192], for GPTQ+absmax against GPTQ+PiSO, printed as a ratio measured in one run.
 *
 * What is timed: the solvers only (scale choice + error correction). The calibration statistics
 * (H = X̃ᵀX̃ from nsamples × seqlen tokens) are identical for both methods and are computed once
 * up front (their time is printed separately). Because the dense per-channel PiSO sweep is
 * O(D²·|grid|) per row, "piso-channel" times the scale solve on a subset of rows and extrapolates
 * linearly to all rows (rows are independent), then adds the GPTQ sweep time with those scales;
 * "piso-group" runs GPTQ with PiSO interleaved per group (g = --group) on every row.
 *
 * --rounders: instead, the rounders of rounders.c against GPTQ on the same layers (absmax scales,
 * channel-wise, the x–x̃ problem with G = X̃ᵀX ≠ H so that the α-target is computed): GPTQ, sr, beam
 * K = 4 and K = 16 (B = 2), gpfq; seconds per layer and ratios to GPTQ for the block.
 *
 * "gptq+piso-ch": GPTQ with channel-wise PiSO scales on every row through the pruned exact sweep
 * (piso_prune.c), the pipeline's path; "pruned" is the share of the sweep's intervals it skipped,
 * "minor." the seconds spent building the minorant. --no-baseline skips the extrapolated full-sweep
 * column ("piso-ch(ext)", today's cost before pruning).
 *
 * --gptq-only: only GPTQ+absmax and Qronos+absmax per layer (wall and CPU seconds, a hash of the codes
 * to compare runs with 1 and 2 threads, the objective), and the damped factors alone at both widths.
 *
 * usage: bench_block [--tokens T] [--scale-down K] [--rows-sample R] [--group G] [--format int4] [--rounders]
 *                    [--no-baseline] [--rank K] [--gptq-only] [--layer NAME] [--no-group]
 *   --layer NAME times one layer (q k v o gate up down); --no-group skips the PiSO ⊙ group column.
 *   --scale-down K divides every dimension by K (quick runs); --tokens defaults to 16·2048. */
#include "piso/linalg.h"
#include "piso/solve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 4503599627370496.0 - 1.0);
}

/* H = XᵀX for T synthetic tokens with a per-channel scale spread (heavy-tailed like LLM
 * activations) and a shared low-rank component, accumulated in chunks of 2048 tokens. */
static float *synth_hessian(int D, int T) {
    float *H = calloc((size_t)D * D, sizeof(float)), *X = malloc(sizeof(float) * 2048 * (size_t)D);
    float *chs = malloc(sizeof(float) * D);
    for (int j = 0; j < D; j++) chs[j] = 0.2f + (j % 97 == 0 ? 8.0f : 1.0f) * (0.5f + 0.5f * frand());
    for (int t0 = 0; t0 < T; t0 += 2048) {
        int n = T - t0 < 2048 ? T - t0 : 2048;
        for (int t = 0; t < n; t++) {
            float c1 = frand(), c2 = frand();
            for (int j = 0; j < D; j++) X[(size_t)t * D + j] = chs[j] * (frand() + 0.7f * c1 * (j & 1 ? 1 : -1) + 0.3f * c2);
        }
        piso_la_ssyrk_t(D, n, 1.0f, X, D, 1.0f, H, D); /* both triangles */
    }
    free(X), free(chs);
    return H;
}

static float *synth_weights(int64_t N, int64_t D) {
    float *W = malloc(sizeof(float) * N * D);
    for (int64_t i = 0; i < N * D; i++) W[i] = 0.02f * frand() * (i % 131 == 0 ? 4.0f : 1.0f);
    return W;
}

struct lin_shape {
    const char *name;
    int64_t N, D;
};

/* G = X̃ᵀX for X = X̃ + noise is H + (noise cross terms); a stand-in with the same cost: G = 0.98·H
 * plus a small symmetric perturbation. */
static float *synth_cross(const float *H, int64_t D) {
    float *G = malloc(sizeof(float) * D * D);
    for (int64_t a = 0; a < D; a++)
        for (int64_t b = 0; b < D; b++) G[a * D + b] = 0.98f * H[a * D + b] + 0.001f * frand() * H[a * D + a];
    return G;
}

static int bench_rounders(const struct lin_shape *lin, int64_t Dm, const float *H_D, const float *H_F,
                          struct piso_ec_opts *o) {
    static const struct {
        const char *name;
        enum piso_rounding r;
        int k;
    } m[] = {{"gptq", PISO_ROUND_GPTQ, 0}, {"sr", PISO_ROUND_SR, 0}, {"beam4", PISO_ROUND_BEAM, 4},
             {"beam16", PISO_ROUND_BEAM, 16}, {"gpfq", PISO_ROUND_GPFQ, 0}};
    enum { NM = 5 };
    double tot[NM] = {0};
    int64_t F = lin[4].D == Dm ? lin[4].N : lin[4].D;
    float *G_D = synth_cross(H_D, Dm), *G_F = synth_cross(H_F, F);
    o->q.method = PISO_SCALE_ABSMAX, o->q.group = 0, o->interleave = PISO_INTERLEAVE_LAYER;
    printf("ISA: avx2 %s, avx512f %s\n", __builtin_cpu_supports("avx2") ? "yes" : "no",
           __builtin_cpu_supports("avx512f") ? "yes" : "no");
    printf("%-5s %6s %6s |", "layer", "rows", "cols");
    for (int j = 0; j < NM; j++) printf(" %9s", m[j].name);
    printf("   (seconds; absmax, channel-wise, x-xq problem, alpha 0.5, B = 2)\n");
    for (int l = 0; l < 7; l++) {
        int64_t N = lin[l].N, D = lin[l].D;
        float *W = synth_weights(N, D);
        struct piso_ec_problem p = {N, D, W, D == Dm ? H_D : H_F, D == Dm ? G_D : G_F, NULL};
        printf("%-5s %6lld %6lld |", lin[l].name, (long long)N, (long long)D);
        for (int j = 0; j < NM; j++) {
            struct piso_layer_result r;
            o->beam_k = m[j].k ? m[j].k : 4;
            double a = piso_time();
            if (piso_rounding_layer(m[j].r)(&p, o, &r, NULL)) {
                fprintf(stderr, "bench_block: %s\n", piso_last_error());
                return 1;
            }
            double t = piso_time() - a;
            piso_layer_result_free(&r);
            tot[j] += t;
            printf(" %8.2fs", t);
        }
        printf("\n");
        free(W);
    }
    printf("block:");
    for (int j = 0; j < NM; j++) printf(" %s %.2f s (%.2fx GPTQ)%s", m[j].name, tot[j], tot[j] / tot[0], j + 1 < NM ? ";" : "\n");
    free(G_D), free(G_F);
    return 0;
}

static double cpu_seconds(void) { /* all threads of the process */
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t codes_hash(const int16_t *c, int64_t n) { /* FNV-1a over the codes */
    uint64_t h = 1469598103934665603ull;
    for (int64_t i = 0; i < n; i++) h = (h ^ (uint16_t)c[i]) * 1099511628211ull;
    return h;
}

/* --gptq-only: GPTQ and Qronos (absmax, channel-wise) per layer, and the factor alone per width. */
static int bench_gptq_only(const struct lin_shape *lin, int64_t Dm, const float *H_D, const float *H_F,
                           struct piso_ec_opts *o) {
    o->q.method = PISO_SCALE_ABSMAX, o->q.group = 0, o->interleave = PISO_INTERLEAVE_LAYER;
    const struct piso_la_damping damp = {PISO_LA_DAMP_MEAN_DIAG, 0.01, 8, 0};
    for (int w = 0; w < 2; w++) {
        int64_t D = w ? lin[6].D : Dm;
        double *R = malloc(sizeof(double) * (size_t)(D * D));
        double a = piso_time(), c = cpu_seconds();
        if (!R || piso_la_damped_inverse_factor(w ? H_F : H_D, D, D, &damp, "bench", R, NULL, NULL)) {
            fprintf(stderr, "bench_block: %s\n", piso_last_error());
            return 1;
        }
        printf("factor n = %lld: inverse factor %.2f s wall, %.2f s CPU", (long long)D, piso_time() - a, cpu_seconds() - c);
        a = piso_time(), c = cpu_seconds();
        if (piso_la_damped_ul_factor(w ? H_F : H_D, D, D, &damp, "bench", R, NULL)) {
            fprintf(stderr, "bench_block: %s\n", piso_last_error());
            return 1;
        }
        printf("; UL factor (GPTQ from 512 inputs) %.2f s wall, %.2f s CPU\n", piso_time() - a, cpu_seconds() - c);
        free(R);
    }
    static const struct {
        const char *name;
        enum piso_rounding r;
    } m[2] = {{"gptq", PISO_ROUND_GPTQ}, {"qronos", PISO_ROUND_QRONOS}};
    double wall[2] = {0}, cpu[2] = {0};
    printf("%-5s %6s %6s | %21s %16s %12s | %21s %16s %12s\n", "layer", "rows", "cols", "gptq wall / CPU s", "codes",
           "objective", "qronos wall / CPU s", "codes", "objective");
    for (int l = 0; l < 7; l++) {
        int64_t N = lin[l].N, D = lin[l].D;
        float *W = synth_weights(N, D);
        struct piso_ec_problem p = {N, D, W, D == Dm ? H_D : H_F, NULL, NULL};
        printf("%-5s %6lld %6lld |", lin[l].name, (long long)N, (long long)D);
        for (int j = 0; j < 2; j++) {
            struct piso_layer_result r;
            double a = piso_time(), c = cpu_seconds();
            if (piso_rounding_layer(m[j].r)(&p, o, &r, NULL)) {
                fprintf(stderr, "bench_block: %s\n", piso_last_error());
                return 1;
            }
            double tw = piso_time() - a, tc = cpu_seconds() - c;
            wall[j] += tw, cpu[j] += tc;
            printf(" %9.2f / %9.2f %016llx %.6e |", tw, tc, (unsigned long long)codes_hash(r.codes, N * D), r.objective);
            piso_layer_result_free(&r);
        }
        printf("\n");
        free(W);
    }
    printf("block: GPTQ+absmax %.2f s wall, %.2f s CPU; Qronos+absmax %.2f s wall, %.2f s CPU\n", wall[0], cpu[0],
           wall[1], cpu[1]);
    return 0;
}

int main(int argc, char **argv) {
    int T = 16 * 2048, K = 1, rows_sample = 64, group = 128;
    const char *format = "int4";
    int rounders = 0, baseline = 1, rank = 0, gptq_only = 0, with_group = 1;
    const char *only = NULL; /* --layer NAME: time that layer alone */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokens") && i + 1 < argc) T = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--scale-down") && i + 1 < argc) K = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rows-sample") && i + 1 < argc) rows_sample = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--group") && i + 1 < argc) group = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--format") && i + 1 < argc) format = argv[++i];
        else if (!strcmp(argv[i], "--rounders")) rounders = 1;
        else if (!strcmp(argv[i], "--gptq-only")) gptq_only = 1;
        else if (!strcmp(argv[i], "--no-baseline")) baseline = 0; /* skip the (slow) full-sweep column */
        else if (!strcmp(argv[i], "--rank") && i + 1 < argc) rank = atoi(argv[++i]); /* minorant rank */
        else if (!strcmp(argv[i], "--layer") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(argv[i], "--no-group")) with_group = 0; /* skip the GPTQ+PiSO-group column */
        else {
            fprintf(stderr, "usage: bench_block [--tokens T] [--scale-down K] [--rows-sample R] [--group G] [--format F] [--rounders] [--no-baseline] [--rank K] [--gptq-only] [--layer NAME] [--no-group]\n");
            return 2;
        }
    }
    if (K < 1) K = 1;
    piso_prune_configure(0, rank);
    setvbuf(stdout, NULL, _IOLBF, 0);
    piso_set_quiet(1); /* the layer solvers' own progress lines */
    int64_t Dm = 2048 / K, F = 8192 / K, Hq = 2048 / K, Hkv = 512 / K;
    struct lin_shape lin[7] = {{"q", Hq, Dm}, {"k", Hkv, Dm}, {"v", Hkv, Dm}, {"o", Dm, Hq}, {"gate", F, Dm}, {"up", F, Dm}, {"down", Dm, F}};
    printf("synthetic Llama-3.2-1B block / %d: hidden %lld, intermediate %lld; %d calibration tokens; %s; %d threads\n", K,
           (long long)Dm, (long long)F, T, format, piso_num_threads());
    double t0 = piso_time();
    int need_F = rounders || !only || !strcmp(only, "down"); /* the 8192-wide statistics: only for down */
    float *H_D = synth_hessian((int)Dm, T), *H_F = need_F ? synth_hessian((int)F, T) : NULL;
    printf("statistics (once, same for every method): %.2f s\n", piso_time() - t0);

    struct piso_ec_opts o;
    piso_ec_opts_default(&o);
    if (piso_grid_init(&o.q.grid, format, 0)) {
        fprintf(stderr, "bench_block: %s\n", piso_last_error());
        return 1;
    }
    if (rounders) return bench_rounders(lin, Dm, H_D, H_F, &o);
    if (gptq_only) return bench_gptq_only(lin, Dm, H_D, H_F, &o);
    double t_abs = 0, t_piso_ch = 0, t_piso_grp = 0, t_fast = 0;
    printf("%-5s %6s %6s | %10s | %12s %10s | %10s | %10s %7s %6s\n", "layer", "rows", "cols", "gptq+absm",
           "piso-ch(ext)", "gptq(fix)", "gptq+piso-g", "gptq+piso-ch", "pruned", "minor.");
    for (int l = 0; l < 7; l++) {
        if (only && strcmp(only, lin[l].name)) continue;
        int64_t N = lin[l].N, D = lin[l].D;
        const float *H = D == Dm ? H_D : H_F;
        float *W = synth_weights(N, D);
        struct piso_ec_problem p = {N, D, W, H, NULL, NULL};
        struct piso_layer_result r;
        /* GPTQ + absmax (scales fixed on the original weights, channel-wise) */
        o.q.method = PISO_SCALE_ABSMAX, o.q.group = 0, o.interleave = PISO_INTERLEAVE_LAYER;
        double a = piso_time();
        piso_gptq_layer(&p, &o, &r, NULL);
        double ta = piso_time() - a;
        piso_layer_result_free(&r);
        /* PiSO channel-wise scale solve on a subset of rows, extrapolated */
        int64_t ns = rows_sample < N ? rows_sample : N;
        struct piso_quant_opts qo = o.q;
        qo.method = PISO_SCALE_PISO;
        struct piso_layer_problem lp = {ns, D, W, H, NULL, NULL, 0};
        double ts = 0;
        if (baseline) { /* today's full sweep on every interval */
            piso_prune_configure(1, 0);
            a = piso_time();
            piso_quantize_layer(&lp, &qo, &r);
            ts = (piso_time() - a) * (double)N / (double)ns;
            piso_layer_result_free(&r);
            piso_prune_configure(0, rank);
        }
        /* + GPTQ with fixed scales: same cost as GPTQ+absmax's sweep */
        double tc = ts + ta;
        /* GPTQ with PiSO interleaved per group, every row */
        o.q.method = PISO_SCALE_PISO, o.q.group = group, o.interleave = PISO_INTERLEAVE_GROUP;
        double tg = 0;
        if (with_group) {
            a = piso_time();
            piso_gptq_layer(&p, &o, &r, NULL);
            tg = piso_time() - a;
            piso_layer_result_free(&r);
        }
        /* GPTQ + PiSO channel-wise, every row, the pruned exact sweep (the pipeline's path) */
        o.q.method = PISO_SCALE_PISO, o.q.group = 0, o.interleave = PISO_INTERLEAVE_LAYER;
        struct piso_prune_stats ps;
        piso_prune_stats_take(&ps);
        a = piso_time();
        piso_gptq_layer(&p, &o, &r, NULL);
        double tf = piso_time() - a;
        piso_layer_result_free(&r);
        piso_prune_stats_take(&ps);
        double pruned = ps.intervals ? 100.0 * (1.0 - (double)ps.swept / (double)ps.intervals) : 0;
        printf("%-5s %6lld %6lld | %9.2fs | %11.2fs %9.2fs | %9.2fs | %11.2fs %6.1f%% %5.2fs (bound prunes %.1f%%)\n",
               lin[l].name, (long long)N, (long long)D, ta, ts, tc, tg, tf, pruned, ps.seconds_minorant,
               ps.intervals ? 100.0 * (1.0 - (double)ps.needed / (double)ps.intervals) : 0);
        printf("      scales split: minorant %.2f s, bounds %.2f s, GEMMs %.2f s, anchor windows %.2f s, other windows %.2f s "
               "(%lld windows, %lld passes over H; %lld of %lld intervals swept, %lld needed)\n",
               ps.seconds_minorant, ps.seconds_bound, ps.seconds_gemm, ps.seconds_walk, ps.seconds_windows,
               (long long)ps.windows, (long long)ps.rounds, (long long)ps.swept, (long long)ps.intervals,
               (long long)ps.needed);
        t_abs += ta, t_piso_ch += tc, t_piso_grp += tg, t_fast += tf;
        free(W);
    }
    printf("block: GPTQ+absmax %.2f s; GPTQ+PiSO channel-wise (scales extrapolated from %d rows/layer) %.2f s "
           "(ratio %.2f); GPTQ+PiSO group %d interleaved %.2f s (ratio %.2f)\n",
           t_abs, rows_sample, t_piso_ch, t_piso_ch / t_abs, group, t_piso_grp, t_piso_grp / t_abs);
    printf("block: GPTQ+PiSO channel-wise, pruned exact sweep, every row: %.2f s (ratio %.2f to GPTQ+absmax)\n", t_fast,
           t_fast / t_abs);
    free(H_D), free(H_F);
    return 0;
}
