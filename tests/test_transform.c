/* Model transforms (src/transform): rotations and permutations fused into the weights, online
 * rotations run by the forward pass, MassDiff and the other permutations, bad input.
 *
 * References: (1) the float model's own logits before the transform — every transform must leave
 * them unchanged to fp32 round-off (random configs with GQA, biases, q/k norms, tied and untied
 * heads; stories260K), while the weights really changed; (2) the online rotations are needed: with
 * them switched off after the transform the logits move; (3) a reload of the exported directory
 * (transform.json) gives the same logits; (4) MassDiff, zigzag and absmax against naive
 * implementations of the published steps written here; (5) error messages for bad options, and
 * nothing written by the CLI. */
#include "harness.h"
#include "piso/pipeline.h"
#include "piso/smooth.h"
#include "piso/transform.h"

#include <omp.h>
#include <stdint.h>
#include <unistd.h>

static uint64_t rng_state = 0x2545f4914f6cdd1dull;
static double urand(void) {
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}
static float nrand(void) { /* Box–Muller */
    double u = urand() + 1e-12, v = urand();
    return (float)(sqrt(-2 * log(u)) * cos(2 * M_PI * v));
}
static void fill(float *p, size_t n, float scale, float offset) {
    for (size_t i = 0; i < n; i++) p[i] = offset + scale * nrand();
}

struct cfg_case {
    const char *name;
    int dim, hidden, heads, kv_heads, head_dim, tied, bias, qk_norm, block;
};

/* A random model of the case, the same for the same seed. */
static struct piso_model *random_model(const struct cfg_case *k, uint64_t seed) {
    struct piso_config c = {0};
    snprintf(c.arch, sizeof c.arch, "llama");
    c.dim = k->dim, c.hidden_dim = k->hidden, c.n_layers = 2, c.n_heads = k->heads, c.n_kv_heads = k->kv_heads;
    c.head_dim = k->head_dim, c.vocab_size = 37, c.max_seq_len = 64, c.norm_eps = 1e-5f, c.rope_theta = 10000.0f;
    c.tied_embeddings = k->tied, c.has_qkv_bias = k->bias, c.has_qk_norm = k->qk_norm;
    struct piso_model *m;
    if (piso_model_alloc(&c, &m) != 0) return NULL;
    rng_state = seed;
    int D = c.dim, F = c.hidden_dim, hd = c.head_dim, Hq = c.n_heads * hd, Hkv = c.n_kv_heads * hd, V = c.vocab_size;
    fill(m->tok_embd, (size_t)V * D, 0.5f, 0);
    if (!k->tied) fill(m->output, (size_t)V * D, 0.3f, 0);
    fill(m->out_norm, D, 0.2f, 1);
    for (int l = 0; l < c.n_layers; l++) {
        struct piso_layer_weights *w = &m->layers[l];
        fill(w->attn_norm, D, 0.2f, 1), fill(w->ffn_norm, D, 0.2f, 1);
        fill(w->wq, (size_t)Hq * D, 0.4f, 0), fill(w->wk, (size_t)Hkv * D, 0.4f, 0), fill(w->wv, (size_t)Hkv * D, 0.3f, 0);
        fill(w->wo, (size_t)D * Hq, 0.2f, 0);
        fill(w->w_gate, (size_t)F * D, 0.3f, 0), fill(w->w_up, (size_t)F * D, 0.3f, 0), fill(w->w_down, (size_t)D * F, 0.2f, 0);
        if (w->bq) fill(w->bq, Hq, 0.2f, 0), fill(w->bk, Hkv, 0.2f, 0), fill(w->bv, Hkv, 0.2f, 0);
        if (w->q_norm) fill(w->q_norm, hd, 0.2f, 1), fill(w->k_norm, hd, 0.2f, 1);
    }
    /* a few large residual channels, so that permutations have something to balance */
    for (int v = 0; v < V; v++) m->tok_embd[(size_t)v * D + 3] *= 8, m->tok_embd[(size_t)v * D + D - 2] *= 5;
    return m;
}

/* max |a − b| / max |a| over n values */
static double rel_diff(const float *a, const float *b, size_t n) {
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i])), s = fmax(s, fabs((double)a[i]));
    return d / (s > 0 ? s : 1);
}

enum { NTOK = 13, NWIN = 3, WLEN = 16 };

/* SmoothQuant smoothing (α, max statistic) of m from its own activations on the windows. */
static int smooth(struct piso_model *m, int *win, double alpha) {
    struct piso_calib cal = {.nsamples = NWIN, .seqlen = WLEN, .tokens = win};
    struct piso_act_stats_opts so = {0};
    struct piso_act_stats st;
    if (piso_act_stats_collect(m, &cal, &so, &st)) return -1;
    struct piso_smooth_opts o = {.alpha = alpha};
    int rc = piso_transform_smooth(m, &st, &o);
    piso_act_stats_free(&st);
    return rc;
}

/* smooth_alpha >= 0: SmoothQuant first (order smooth → permute → rotate) */
static void check_variant_smooth(const struct cfg_case *k, const char *what, struct piso_transform_opts o,
                                 double smooth_alpha) {
    struct piso_model *ref = random_model(k, 77), *m = random_model(k, 77), *m2 = random_model(k, 77);
    if (!ref || !m || !m2) {
        CHECK(0, "%s: alloc: %s", k->name, piso_last_error());
        return;
    }
    int V = ref->cfg.vocab_size, tok[NTOK], win[NWIN * WLEN];
    for (int i = 0; i < NTOK; i++) tok[i] = (int)(urand() * V);
    for (int i = 0; i < NWIN * WLEN; i++) win[i] = (int)(urand() * V);
    float *a = malloc((size_t)NTOK * V * 4), *b = malloc((size_t)NTOK * V * 4), *c = malloc((size_t)NTOK * V * 4);
    piso_forward(ref, tok, NTOK, 0, a);
    struct piso_transform_plan plan;
    if (smooth_alpha >= 0)
        CHECK(smooth(m, win, smooth_alpha) == 0 && smooth(m2, win, smooth_alpha) == 0, "%s %s: smooth: %s", k->name,
              what, piso_last_error());
    int rc = piso_transform_model(m, &o, win, NWIN, WLEN, &plan);
    CHECK(rc == 0, "%s %s: transform: %s", k->name, what, piso_last_error());
    if (rc == 0) {
        CHECK(piso_forward(m, tok, NTOK, 0, b) == 0, "%s %s: forward", k->name, what);
        double d = rel_diff(a, b, (size_t)NTOK * V);
        CHECK(d < 2e-5, "%s %s: logits moved by %g (relative)", k->name, what, d);
        CHECK(rel_diff(ref->layers[1].wq, m->layers[1].wq, (size_t)k->dim * 4) > 1e-3, "%s %s: weights unchanged",
              k->name, what);
        /* the same plan on a second copy: the same weights, the same logits bit for bit */
        CHECK(piso_transform_apply_plan(m2, &plan) == 0, "%s %s: apply plan: %s", k->name, what, piso_last_error());
        piso_forward(m2, tok, NTOK, 0, c);
        CHECK(memcmp(b, c, (size_t)NTOK * V * 4) == 0, "%s %s: plan on a second copy differs", k->name, what);
        /* the final norm is not all ones, so a tied head must be untied */
        CHECK(plan.untied == k->tied, "%s %s: untied %d", k->name, what, plan.untied);
        if (o.online && o.rotate != PISO_ROTATE_NONE) {
            CHECK(m->online.down_block > 0 && m->online.o_heads == k->heads, "%s %s: online %d %d", k->name, what,
                  m->online.down_block, m->online.o_heads);
            /* without the runtime's online rotations the function is different: they are really used */
            struct piso_online_rotations saved = m->online;
            m->online.down_block = 0;
            piso_forward(m, tok, NTOK, 0, c);
            CHECK(rel_diff(a, c, (size_t)NTOK * V) > 1e-3, "%s %s: down_proj online rotation has no effect", k->name,
                  what);
            m->online = saved, m->online.o_heads = 0;
            piso_forward(m, tok, NTOK, 0, c);
            CHECK(rel_diff(a, c, (size_t)NTOK * V) > 1e-3, "%s %s: o_proj online rotation has no effect", k->name, what);
            m->online = saved;
        } else {
            CHECK(m->online.down_block == 0 && m->online.o_heads == 0, "%s %s: online set", k->name, what);
        }
        piso_transform_plan_free(&plan);
    }
    free(a), free(b), free(c);
    piso_model_free(ref), piso_model_free(m), piso_model_free(m2);
}

static void check_variant(const struct cfg_case *k, const char *what, struct piso_transform_opts o) {
    check_variant_smooth(k, what, o, -1);
}

static void test_random_configs(void) {
    static const struct cfg_case cases[] = {
        /* GQA, q/k/v biases, q/k norms, tied head */
        {"gqa+bias+qknorm tied", 48, 56, 4, 2, 12, 1, 1, 1, 12},
        {"mha untied ffn172", 64, 172, 8, 8, 8, 0, 0, 0, 16},
        {"gqa 2:1 hd20 bias", 40, 80, 2, 1, 20, 0, 1, 0, 20},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct cfg_case *k = &cases[i];
        struct piso_transform_opts o = {.rotate = PISO_ROTATE_HAD, .online = 1};
        check_variant(k, "had", o);
        o.online = 0;
        check_variant(k, "had fused only", o);
        o = (struct piso_transform_opts){.rotate = PISO_ROTATE_BLOCK, .block = k->block, .online = 1};
        check_variant(k, "block", o);
        for (int p = PISO_PERMUTE_MASSDIFF; p <= PISO_PERMUTE_RANDOM; p++) {
            char what[64];
            o.permute = (enum piso_permute_mode)p, o.seed = 5;
            snprintf(what, sizeof what, "block + %s", piso_permute_mode_name(o.permute));
            check_variant(k, what, o);
        }
        o = (struct piso_transform_opts){.permute = PISO_PERMUTE_MASSDIFF};
        check_variant(k, "permute alone", o);
        /* with SmoothQuant first: SmoothRot, and smooth → MassDiff → block rotation */
        o = (struct piso_transform_opts){.rotate = PISO_ROTATE_HAD, .online = 1};
        check_variant_smooth(k, "smooth + had", o, 0.5);
        o = (struct piso_transform_opts){.rotate = PISO_ROTATE_BLOCK, .block = k->block, .online = 1,
                                         .permute = PISO_PERMUTE_MASSDIFF};
        check_variant_smooth(k, "smooth + massdiff + block", o, 0.5);
    }
}

/* The transformed weights do not depend on the thread count (a model large enough for the parallel
 * loops and the GEMM path to run in parallel). */
static void test_threads(void) {
    static const struct cfg_case k = {"threads", 384, 688, 8, 4, 48, 0, 1, 0, 96};
    int nt = omp_get_max_threads(), V = 37, win[NWIN * WLEN];
    for (int i = 0; i < NWIN * WLEN; i++) win[i] = (int)(urand() * V);
    struct piso_model *m[2];
    for (int t = 0; t < 2; t++) {
        omp_set_num_threads(t == 0 ? 1 : 3);
        m[t] = random_model(&k, 11);
        struct piso_transform_opts o = {.rotate = PISO_ROTATE_BLOCK, .block = 96, .online = 1,
                                        .permute = PISO_PERMUTE_MASSDIFF};
        CHECK(m[t] && piso_transform_model(m[t], &o, win, NWIN, WLEN, NULL) == 0, "threads %d: %s", t,
              piso_last_error());
    }
    omp_set_num_threads(nt);
    if (!m[0] || !m[1]) return;
    size_t D = 384, F = 688;
    CHECK(!memcmp(m[0]->tok_embd, m[1]->tok_embd, (size_t)V * D * 4) &&
              !memcmp(m[0]->layers[1].w_down, m[1]->layers[1].w_down, D * F * 4) &&
              !memcmp(m[0]->layers[1].wo, m[1]->layers[1].wo, D * D * 4) &&
              !memcmp(m[0]->layers[1].wv, m[1]->layers[1].wv, D / 2 * D * 4),
          "transformed weights differ between 1 and 3 threads");
    piso_model_free(m[0]), piso_model_free(m[1]);
}

/* ---- permutations against naive implementations of the published steps -------------------- */

/* MassDiff (MixQuant §7), written directly from the steps: score, seeds, then for every remaining
 * channel the block with the least mean over tokens of (block norm + |x_j|), full blocks = +inf. */
static void naive_massdiff(const float *X, int T, int d, int b, int *perm) {
    int nb = d / b;
    double *score = calloc((size_t)d, sizeof *score), *bn = calloc((size_t)T * nb, sizeof *bn);
    int *idx = malloc((size_t)d * sizeof *idx), *members = malloc((size_t)d * sizeof *members), *count = calloc((size_t)nb, sizeof *count);
    for (int j = 0; j < d; j++) {
        for (int t = 0; t < T; t++) score[j] += fabs(X[t * d + j]);
        score[j] /= T;
        idx[j] = j;
    }
    for (int i = 1; i < d; i++) /* insertion sort: score descending, index ascending */
        for (int j = i; j > 0 && (score[idx[j]] > score[idx[j - 1]] ||
                                  (score[idx[j]] == score[idx[j - 1]] && idx[j] < idx[j - 1]));
             j--) {
            int t = idx[j];
            idx[j] = idx[j - 1], idx[j - 1] = t;
        }
    for (int k = 0; k < nb; k++) {
        members[k * b + count[k]++] = idx[k];
        for (int t = 0; t < T; t++) bn[t * nb + k] = fabs(X[t * d + idx[k]]);
    }
    for (int r = nb; r < d; r++) {
        int j = idx[r], best = -1;
        double best_v = INFINITY;
        for (int k = 0; k < nb; k++) {
            double v = 0;
            for (int t = 0; t < T; t++) v += bn[t * nb + k] + fabs(X[t * d + j]);
            v = count[k] == b ? INFINITY : v / T;
            if (v < best_v) best_v = v, best = k;
        }
        members[best * b + count[best]++] = j;
        for (int t = 0; t < T; t++) bn[t * nb + best] += fabs(X[t * d + j]);
    }
    memcpy(perm, members, (size_t)d * sizeof *perm);
    free(score), free(bn), free(idx), free(members), free(count);
}

static int is_permutation(const int *p, int n) {
    int ok = 1, *seen = calloc((size_t)n, sizeof *seen);
    for (int i = 0; i < n; i++) {
        if (p[i] < 0 || p[i] >= n || seen[p[i]]) ok = 0;
        else seen[p[i]] = 1;
    }
    free(seen);
    return ok;
}

/* the largest per-block mean ℓ1 mass of X under permutation p */
static double max_block_mass(const float *X, int T, int d, int b, const int *p) {
    double worst = 0;
    for (int k = 0; k < d / b; k++) {
        double s = 0;
        for (int t = 0; t < T; t++)
            for (int i = 0; i < b; i++) s += fabs(X[t * d + p[k * b + i]]);
        worst = fmax(worst, s / T);
    }
    return worst;
}

static void test_permutations(void) {
    enum { T = 50, d = 96, b = 16 };
    float *X = malloc((size_t)T * d * sizeof *X);
    rng_state = 99;
    for (int i = 0; i < T * d; i++) X[i] = nrand() * (i % d < 10 ? 6.0f : 1.0f); /* 10 outlier channels, adjacent */
    int got[d], want[d], ident[d];
    for (int i = 0; i < d; i++) ident[i] = i;
    CHECK(piso_permutation(PISO_PERMUTE_MASSDIFF, X, T, d, b, 0, got) == 0, "massdiff: %s", piso_last_error());
    naive_massdiff(X, T, d, b, want);
    CHECK(memcmp(got, want, sizeof got) == 0, "massdiff differs from the naive implementation");
    CHECK(is_permutation(got, d), "massdiff is not a permutation");
    double m_id = max_block_mass(X, T, d, b, ident), m_md = max_block_mass(X, T, d, b, got);
    CHECK(m_md < 0.7 * m_id, "massdiff does not balance the blocks: %g vs identity %g", m_md, m_id);

    /* zigzag: channels by max |x| descending dealt in snake order over the blocks */
    CHECK(piso_permutation(PISO_PERMUTE_ZIGZAG, X, T, d, b, 0, got) == 0, "zigzag");
    int order[d];
    double mx[d];
    for (int j = 0; j < d; j++) {
        mx[j] = 0, order[j] = j;
        for (int t = 0; t < T; t++) mx[j] = fmax(mx[j], fabs(X[t * d + j]));
    }
    for (int i = 1; i < d; i++)
        for (int j = i; j > 0 && (mx[order[j]] > mx[order[j - 1]]); j--) {
            int t = order[j];
            order[j] = order[j - 1], order[j - 1] = t;
        }
    int fillc[d / b];
    memset(fillc, 0, sizeof fillc);
    for (int r = 0; r < d; r++) {
        int nb = d / b, pos = r % nb, blk = (r / nb) % 2 == 0 ? pos : nb - 1 - pos;
        want[blk * b + fillc[blk]++] = order[r];
    }
    CHECK(memcmp(got, want, sizeof got) == 0, "zigzag differs from the snake order");
    CHECK(piso_permutation(PISO_PERMUTE_ABSMAX, X, T, d, b, 0, got) == 0, "absmax");
    CHECK(memcmp(got, order, sizeof got) == 0, "absmax differs from the sort by max |x|");
    CHECK(piso_permutation(PISO_PERMUTE_RANDOM, NULL, 0, d, b, 7, got) == 0 && is_permutation(got, d), "random");
    CHECK(piso_permutation(PISO_PERMUTE_MASSDIFF, X, T, d, 20, 0, got) != 0, "block 20 does not divide 96");
    CHECK(strstr(piso_last_error(), "block 20 does not divide the dimension 96") != NULL, "msg: %s", piso_last_error());
    free(X);
}

/* ---- bad options --------------------------------------------------------------------------- */
static void test_bad_options(void) {
    static const struct cfg_case k = {"bad", 48, 56, 4, 2, 12, 1, 1, 1, 12};
    struct piso_model *m = random_model(&k, 3);
    struct piso_transform_opts o = {.rotate = PISO_ROTATE_BLOCK, .block = 32, .online = 1};
    CHECK(piso_transform_model(m, &o, NULL, 0, 0, NULL) != 0, "block 32 on dim 48");
    CHECK(strstr(piso_last_error(), "--rotate-block 32 does not divide the hidden size 48") != NULL, "msg: %s",
          piso_last_error());
    o.block = 6;
    CHECK(piso_transform_model(m, &o, NULL, 0, 0, NULL) != 0, "block 6");
    CHECK(strstr(piso_last_error(), "--rotate-block 6: no Hadamard matrix of that size") != NULL, "msg: %s",
          piso_last_error());
    o = (struct piso_transform_opts){.permute = PISO_PERMUTE_MASSDIFF};
    CHECK(piso_transform_model(m, &o, NULL, 0, 0, NULL) != 0, "massdiff without calibration");
    CHECK(strstr(piso_last_error(), "needs calibration text") != NULL, "msg: %s", piso_last_error());
    piso_model_free(m);
    static const struct cfg_case k2 = {"hd 10", 40, 80, 4, 4, 10, 0, 0, 0, 20};
    m = random_model(&k2, 3);
    o = (struct piso_transform_opts){.rotate = PISO_ROTATE_HAD};
    CHECK(piso_transform_model(m, &o, NULL, 0, 0, NULL) != 0, "head_dim 10");
    CHECK(strstr(piso_last_error(), "no Hadamard matrix of the head size 10") != NULL, "msg: %s", piso_last_error());
    piso_model_free(m);
}

/* ---- stories260K: the real model, the CLI, reload, GGUF refusal ----------------------------- */
static int piso_cli(const char *args, char **out) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", PISO_BIN, args);
    return test_run(cmd, out);
}

static void test_stories(void) {
    const char *bin = test_data("models/stories260K/stories260K.bin");
    const char *calib = test_data("data/tinystories/TinyStories-valid.small30KB.txt");
    if (!bin || !calib) return;
    struct piso_model *ref, *m;
    if (piso_model_load(bin, NULL, &ref) || piso_model_load(bin, NULL, &m)) {
        CHECK(0, "load: %s", piso_last_error());
        return;
    }
    int V = ref->cfg.vocab_size, tok[40];
    for (int i = 0; i < 40; i++) tok[i] = 1 + (i * 37) % (V - 1);
    float *a = malloc((size_t)40 * V * 4), *b = malloc((size_t)40 * V * 4);
    piso_forward(ref, tok, 40, 0, a);
    struct piso_transform_opts o = {.rotate = PISO_ROTATE_BLOCK, .block = 16, .online = 1,
                                    .permute = PISO_PERMUTE_MASSDIFF};
    struct piso_calib cal;
    CHECK(piso_calib_load(m->tok, calib, 4, 64, m->cfg.max_seq_len, 0, &cal) == 0, "calib: %s", piso_last_error());
    CHECK(piso_transform_model(m, &o, cal.tokens, cal.nsamples, cal.seqlen, NULL) == 0, "transform: %s",
          piso_last_error());
    piso_forward(m, tok, 40, 0, b);
    double d = rel_diff(a, b, (size_t)40 * V);
    CHECK(d < 2e-5, "stories260K block16+massdiff: logits moved by %g", d);
    piso_calib_free(&cal);
    piso_model_free(m);

    /* the CLI: piso transform writes a directory whose reload (transform.json) gives the same logits */
    char dir[64], args[4096], *out = NULL;
    snprintf(dir, sizeof dir, "/tmp/piso_test_transform_%d", (int)getpid());
    snprintf(args, sizeof args, "transform --model %s --rotate had --out %s/had --quiet", bin, dir);
    mkdir(dir, 0755);
    CHECK(piso_cli(args, &out) == 0, "piso transform: %s", out ? out : "");
    free(out), out = NULL;
    char had[128];
    snprintf(had, sizeof had, "%s/had", dir);
    if (piso_model_load(had, NULL, &m) == 0) {
        CHECK(m->online.down_block == 172 && m->online.o_heads == 8, "reloaded online: %d %d", m->online.down_block,
              m->online.o_heads);
        CHECK(!m->cfg.tied_embeddings, "the reloaded head is untied");
        piso_forward(m, tok, 40, 0, b);
        d = rel_diff(a, b, (size_t)40 * V);
        CHECK(d < 2e-5, "stories260K had, reloaded: logits moved by %g", d);
        piso_model_free(m);
    } else {
        CHECK(0, "reload: %s", piso_last_error());
    }
    /* quantizing the transformed directory keeps its online rotations: the reload scores the same */
    {
        const char *eval = test_data("data/tinystories/tinystories_sample.cs336.txt");
        snprintf(args, sizeof args,
                 "quantize --model %s/had --format int8 --rounding rtn --scale absmax --out %s/q --eval %s --json --quiet",
                 dir, dir, eval);
        CHECK(piso_cli(args, &out) == 0, "quantize the transformed model: %s", out ? out : "");
        const char *pa = out ? strstr(out, "\"perplexity_after\":") : NULL;
        double after = pa ? atof(pa + 19) : -1;
        free(out), out = NULL;
        snprintf(args, sizeof args, "perplexity --model %s/q --text %s --json --quiet", dir, eval);
        CHECK(piso_cli(args, &out) == 0, "perplexity of the reload: %s", out ? out : "");
        const char *pp = out ? strstr(out, "\"ppl\": ") : NULL;
        double reload = pp ? atof(pp + 7) : -2;
        CHECK(after > 8 && fabs(after - reload) < 1e-5 * after, "quantized in memory %.6f vs reloaded %.6f", after,
              reload);
        free(out), out = NULL;
    }
    /* bad input: block not dividing 64, unsupported size, online rotation into GGUF → nothing written */
    struct {
        const char *args, *msg;
        int code;
    } bad[] = {
        {"transform --model %s --rotate block --rotate-block 24 --out %s/x", "--rotate-block 24 does not divide the hidden size 64", 1},
        {"transform --model %s --rotate block --rotate-block 6 --out %s/x", "no Hadamard matrix of size 6", 2},
        {"transform --model %s --permute massdiff --out %s/x", "needs --calib", 2},
        {"quantize --model %s --type Q8_0 --rotate had --out %s/x.gguf", "GGUF output accepts fused rotations only", 2},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char a2[4096], path[256];
        snprintf(a2, sizeof a2, bad[i].args, bin, dir);
        int code = piso_cli(a2, &out);
        CHECK(code == bad[i].code && out && strstr(out, bad[i].msg), "%s: exit %d, %s", a2, code, out ? out : "");
        free(out), out = NULL;
        snprintf(path, sizeof path, "%s/x", dir);
        struct stat st;
        CHECK(stat(path, &st) != 0, "%s: output written", a2);
        snprintf(path, sizeof path, "%s/x.gguf", dir);
        CHECK(stat(path, &st) != 0, "%s: output written", a2);
    }
    /* fused rotations (and permutations) only are fine for GGUF */
    snprintf(args, sizeof args,
             "quantize --model %s --type F32 --rotate block --rotate-block 16 --permute massdiff --calib %s --chunks 4 "
             "--no-online --out %s/f.gguf --quiet",
             bin, calib, dir);
    CHECK(piso_cli(args, &out) == 0, "fused-only GGUF: %s", out ? out : "");
    free(out), out = NULL;
    snprintf(args, sizeof args, "%s/f.gguf", dir);
    if (piso_model_load(args, NULL, &m) == 0) {
        piso_forward(m, tok, 40, 0, b);
        d = rel_diff(a, b, (size_t)40 * V);
        CHECK(d < 2e-5, "stories260K fused block rotation + MassDiff through GGUF F32: logits moved by %g", d);
        CHECK(m->tok_embd[5] != 0 && rel_diff(ref->layers[0].wq, m->layers[0].wq, 64 * 64) > 1e-3,
              "the GGUF weights are not transformed");
        piso_model_free(m);
    }
    snprintf(args, sizeof args, "rm -rf %s", dir);
    test_run(args, NULL);
    free(a), free(b);
    piso_model_free(ref);
}

int main(void) {
    piso_set_quiet(1); /* no progress lines from the statistics pass */
    test_random_configs();
    test_threads();
    test_permutations();
    test_bad_options();
    test_stories();
    return test_finish();
}
