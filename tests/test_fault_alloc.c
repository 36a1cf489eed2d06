/* Allocation failures inside the parallel row loops (issue 15, fault injection): the library is
 * linked with tests/fault/fault_inject.c, and for every n the n-th allocation of a layer solve fails.
 * Each run must either fail cleanly (-1, an "out of memory" message, an empty result; LSan in the
 * sanitizer build checks that nothing leaked) or, where the code has a fallback that needs no
 * memory, give exactly the result of the run without a fault. The faultless results are also
 * compared across thread counts (1, 2, 3 threads: bit-identical).
 * Covered: piso_quantize_layer (piso channel/group, piso-seq with G, piso-diag, piso-datafree,
 * NVFP4 with its tensor scale), piso_gptq_layer (interleave group and layer), the exact sweep's
 * radix-sort fallback on a long event list, and the GGUF block quantizer (its per-block sweeps
 * allocate inside the row loop: Q4_0, Q8_0, Q4_K, Q6_K, Q3_K, IQ4_NL). */
#include "harness.h"
#include "piso/block_scales.h"
#include "piso/common.h"
#include "piso/gguf.h"
#include "piso/quant.h"
#include "piso/solve.h"

#include <omp.h>
#include <stdint.h>

void piso_fault_alloc_after(long n);
long piso_fault_allocs(void);
long piso_fault_hits(void);

enum { N = 6, D = 32, T = 48 };
static float W[N * D], H[D * D], G[D * D];

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double unif(void) { /* xorshift64*, uniform in [-1, 1) */
    rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
    return (double)((rng * 0x2545f4914f6cdd1dull) >> 11) / 4503599627370496.0 - 1.0;
}

static void make_problem(void) {
    static double X[T * D], Xq[T * D];
    for (int i = 0; i < T * D; i++) X[i] = unif(), Xq[i] = X[i] + 0.05 * unif();
    for (int i = 0; i < N * D; i++) W[i] = (float)unif();
    for (int a = 0; a < D; a++)
        for (int b = 0; b < D; b++) {
            double h = 0, g = 0;
            for (int t = 0; t < T; t++) h += Xq[t * D + a] * Xq[t * D + b], g += Xq[t * D + a] * X[t * D + b];
            H[a * D + b] = (float)h, G[a * D + b] = (float)g;
        }
    for (int a = 0; a < D; a++) /* H symmetric to the bit */
        for (int b = 0; b < a; b++) H[a * D + b] = H[b * D + a];
}

struct config {
    const char *name, *grid;
    int group, ec; /* ec: 0 quantize_layer, 1 GPTQ interleave group, 2 GPTQ interleave layer */
    enum piso_scale_method method;
    int with_g;
};

static int run(const struct config *c, struct piso_layer_result *r) {
    struct piso_quant_opts q = {.group = c->group, .method = c->method, .allow_negative = 1};
    if (piso_grid_init(&q.grid, c->grid, 0)) return -2;
    if (!c->ec) {
        struct piso_layer_problem p = {N, D, W, H, c->with_g ? G : NULL, NULL, 0};
        return piso_quantize_layer(&p, &q, r);
    }
    struct piso_ec_opts o;
    piso_ec_opts_default(&o);
    o.q = q;
    o.interleave = c->ec == 1 ? PISO_INTERLEAVE_GROUP : PISO_INTERLEAVE_LAYER;
    struct piso_ec_problem p = {N, D, W, H, c->with_g ? G : NULL, NULL};
    struct piso_ec_stats st;
    return piso_gptq_layer(&p, &o, r, &st);
}

static int same(const struct piso_layer_result *a, const struct piso_layer_result *b) {
    return a->N == b->N && a->D == b->D && a->n_groups == b->n_groups &&
           !memcmp(a->scales, b->scales, sizeof(float) * (size_t)(a->N * a->n_groups)) &&
           !memcmp(a->dequant, b->dequant, sizeof(float) * (size_t)(a->N * a->D)) &&
           !memcmp(a->codes, b->codes, sizeof(int16_t) * (size_t)(a->N * a->D)) &&
           !memcmp(&a->objective, &b->objective, sizeof(double));
}

static int is_empty(const struct piso_layer_result *r) {
    return !r->scales && !r->dequant && !r->codes && !r->row_objective;
}

static void check_config(const struct config *c) {
    struct piso_layer_result ref, r;
    omp_set_num_threads(1);
    long a0 = piso_fault_allocs();
    int rc = run(c, &ref);
    long K = piso_fault_allocs() - a0;
    CHECK(rc == 0, "%s: faultless run failed: %s", c->name, piso_last_error());
    if (rc) return;
    for (int t = 2; t <= 3; t++) { /* thread-count independence */
        omp_set_num_threads(t);
        rc = run(c, &r);
        CHECK(rc == 0 && same(&ref, &r), "%s: %d threads differ from 1", c->name, t);
        if (!rc) piso_layer_result_free(&r);
    }
    int failed = 0, survived = 0;
    for (int t = 1; t <= 2; t++) {
        omp_set_num_threads(t);
        for (long n = 1; n <= K; n++) {
            long h0 = piso_fault_hits();
            piso_fault_alloc_after(n);
            rc = run(c, &r);
            piso_fault_alloc_after(0);
            const int hit = piso_fault_hits() > h0;
            CHECK(hit, "%s: allocation %ld of %ld was not reached (%d threads)", c->name, n, K, t);
            if (rc) {
                failed++;
                CHECK(strstr(piso_last_error(), "out of memory") != NULL, "%s, allocation %ld, %d threads: message \"%s\"",
                      c->name, n, t, piso_last_error());
                CHECK(is_empty(&r), "%s, allocation %ld: a failed run left a result", c->name, n);
            } else {
                survived++;
                CHECK(same(&ref, &r), "%s, allocation %ld, %d threads: succeeded with a different result", c->name, n, t);
                piso_layer_result_free(&r);
            }
        }
    }
    printf("%-28s %4ld allocations: %4d clean errors, %3d identical results (1 and 2 threads)\n", c->name, K, failed,
           survived);
    piso_layer_result_free(&ref);
}

/* The exact sweep sorts a long event list (>= 65536) with 16-bit digits in a heap count table;
 * without it, 8-bit digits on the stack give the same stable order. */
static void check_sort_fallback(void) {
    enum { n = 600 };
    static float w[n], hd[n];
    for (int i = 0; i < n; i++) w[i] = (float)unif(), hd[i] = (float)(1.5 + unif());
    struct piso_grid g;
    CHECK(piso_grid_init(&g, "int8", 0) == 0, "int8 grid: %s", piso_last_error());
    double E0;
    long a0 = piso_fault_allocs();
    const float s0 = piso_solve_scale_diag(w, n, hd, NULL, &g, 1, &E0);
    long K = piso_fault_allocs() - a0;
    CHECK(K >= 5 && isfinite(s0), "the faultless sweep: %ld allocations, scale %g", K, s0);
    int fallback = 0;
    for (long k = 1; k <= K; k++) {
        double E;
        piso_fault_alloc_after(k);
        const float s = piso_solve_scale_diag(w, n, hd, NULL, &g, 1, &E);
        piso_fault_alloc_after(0);
        if (isnan(s)) {
            CHECK(isnan(E), "allocation %ld: NaN scale but E = %g", k, E);
        } else {
            fallback++;
            CHECK(!memcmp(&s, &s0, sizeof s) && !memcmp(&E, &E0, sizeof E),
                  "allocation %ld: the fallback sort gives scale %.9g (E %.17g), not %.9g (%.17g)", k, s, E, s0, E0);
        }
    }
    CHECK(fallback >= 1, "no allocation of the sweep has a fallback (the count table was not allocated?)");
    printf("sweep of %d entries (int8)   %4ld allocations: %d with the sort fallback, identical\n", n, K, fallback);
}

/* piso_ggml_quantize_piso: every allocation of a 3-row tensor fails in turn: 0 bytes with an
 * "out of memory" message, never a silently different block. */
static void check_ggml(int type, const char *name) {
    enum { R = 3, C = 256 };
    static float x[R * C], imp[C];
    for (int i = 0; i < R * C; i++) x[i] = (float)unif();
    for (int i = 0; i < C; i++) imp[i] = (float)(1.2 + unif());
    const size_t rs = piso_ggml_row_size(type, C), nbytes = rs * R;
    uint8_t *ref = malloc(nbytes), *out = malloc(nbytes);
    CHECK(ref && out, "test buffers");
    if (!ref || !out) return;
    omp_set_num_threads(1);
    long a0 = piso_fault_allocs();
    size_t done = piso_ggml_quantize_piso(type, x, ref, R, C, imp);
    long K = piso_fault_allocs() - a0;
    CHECK(done == nbytes, "%s: faultless run wrote %zu of %zu bytes: %s", name, done, nbytes, piso_last_error());
    omp_set_num_threads(2);
    done = piso_ggml_quantize_piso(type, x, out, R, C, imp);
    CHECK(done == nbytes && !memcmp(ref, out, nbytes), "%s: 2 threads differ from 1", name);
    int failed = 0;
    for (int t = 1; t <= 2; t++) {
        omp_set_num_threads(t);
        for (long n = 1; n <= K; n++) {
            piso_fault_alloc_after(n);
            done = piso_ggml_quantize_piso(type, x, out, R, C, imp);
            piso_fault_alloc_after(0);
            if (done == 0) {
                failed++;
                CHECK(strstr(piso_last_error(), "out of memory") != NULL, "%s, allocation %ld: message \"%s\"", name, n,
                      piso_last_error());
            } else {
                CHECK(done == nbytes && !memcmp(ref, out, nbytes), "%s, allocation %ld, %d threads: a different result",
                      name, n, t);
            }
        }
    }
    printf("%-28s %4ld allocations: %4d clean errors (1 and 2 threads)\n", name, K, failed);
    free(ref), free(out);
}

int main(void) {
    piso_set_quiet(1);
    make_problem();
    const struct config cs[] = {
        {"int4 piso channel", "int4", 0, 0, PISO_SCALE_PISO, 0},
        {"int3 piso group 8", "int3", 8, 0, PISO_SCALE_PISO, 0},
        {"int4 piso-seq group 8, G", "int4", 8, 0, PISO_SCALE_PISO_SEQ, 1},
        {"int4 piso-diag group 8", "int4", 8, 0, PISO_SCALE_PISO_DIAG, 0},
        {"int4 piso-datafree group 8", "int4", 8, 0, PISO_SCALE_PISO_DATAFREE, 0},
        {"nvfp4 piso", "nvfp4", 0, 0, PISO_SCALE_PISO, 0},
        {"gptq int4 group 8 interleave", "int4", 8, 1, PISO_SCALE_PISO, 1},
        {"gptq int4 piso-diag layer", "int4", 8, 2, PISO_SCALE_PISO_DIAG, 0},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) check_config(&cs[i]);
    check_sort_fallback();
    const struct { int type; const char *name; } gg[] = {{GGML_T_Q4_0, "gguf Q4_0"}, {GGML_T_Q8_0, "gguf Q8_0"},
                                                       {GGML_T_Q4_K, "gguf Q4_K"}, {GGML_T_Q6_K, "gguf Q6_K"},
                                                       {GGML_T_Q3_K, "gguf Q3_K"}, {GGML_T_IQ4_NL, "gguf IQ4_NL"}};
    for (size_t i = 0; i < sizeof gg / sizeof gg[0]; i++) check_ggml(gg[i].type, gg[i].name);
    return test_finish();
}
