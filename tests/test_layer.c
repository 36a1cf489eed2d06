/* piso_quantize_layer and `piso layer`, against recomputations done here:
 *  - the objective the CLI reports equals Σ (w−ŵ)ᵀH(w−ŵ) (or ŵᵀHŵ − 2ŵᵀGw with a cross term, or
 *    ||X̃ŵ||² − 2(X̃ŵ)·(Xw) for an inputs problem) recomputed from the written dequant;
 *  - dequant = scale · grid value of the written code; piso never loses to absmax/mse-grid
 *    channel-wise; piso-seq's last group minimises the full row objective with the others fixed;
 *  - piso == piso-diag for diagonal H; results independent of the thread count; degenerate rows;
 *  - bad problem files fail with a clear message and leave no output. */
#include "harness.h"
#include "piso/quant.h"
#include "piso/safetensors.h"

#include <cjson/cJSON.h>
#include <omp.h>
#include <unistd.h>

static char dir[64];

static double nrand(void) {
    double a = (double)rand() / RAND_MAX * 0.999999 + 1e-6, b = (double)rand() / RAND_MAX;
    return sqrt(-2 * log(a)) * cos(6.283185307179586 * b);
}

/* correlated inputs X = Z·M with an outlier channel; X̃ = X + small noise */
static void make_inputs(int T, int D, float *X, float *Xt) {
    float *M = malloc(sizeof(float) * (size_t)(D * D));
    for (int i = 0; i < D * D; i++) M[i] = (float)(nrand() / sqrt(D)) + ((i % (D + 1)) == 0 ? 1.0f : 0.0f);
    for (int t = 0; t < T; t++) {
        float z[64];
        for (int k = 0; k < D; k++) z[k] = (float)nrand();
        for (int j = 0; j < D; j++) {
            double acc = 0;
            for (int k = 0; k < D; k++) acc += z[k] * M[k * D + j];
            if (j == 2) acc *= 20; /* outlier channel */
            X[t * D + j] = (float)acc;
            Xt[t * D + j] = (float)(acc + 0.05 * nrand());
        }
    }
    free(M);
}

static void gram(const float *A, const float *B, int T, int D, double *out) { /* AᵀB */
    for (int i = 0; i < D; i++)
        for (int j = 0; j < D; j++) {
            double acc = 0;
            for (int t = 0; t < T; t++) acc += (double)A[t * D + i] * B[t * D + j];
            out[i * D + j] = acc;
        }
}

static void write_problem(const char *path, int N, int D, const float *W, const float *H, const float *G,
                          int T, const float *Xt, const float *X) {
    struct piso_st_writer *w = piso_st_writer_new();
    int64_t sw[2] = {N, D}, sh[2] = {D, D}, sx[2] = {T, D};
    piso_st_writer_add(w, "weight", PISO_DTYPE_F32, 2, sw, W);
    if (H) piso_st_writer_add(w, "hessian", PISO_DTYPE_F32, 2, sh, H);
    if (G) piso_st_writer_add(w, "cross", PISO_DTYPE_F32, 2, sh, G);
    if (Xt) piso_st_writer_add(w, "inputs", PISO_DTYPE_F32, 2, sx, Xt);
    if (X) piso_st_writer_add(w, "inputs_float", PISO_DTYPE_F32, 2, sx, X);
    CHECK(piso_st_writer_write(w, path) == 0, "write %s: %s", path, piso_last_error());
    piso_st_writer_free(w);
}

/* Runs the CLI with --json --out; returns the parsed JSON (caller deletes) and loads the outputs. */
static cJSON *run_layer(const char *problem, const char *args, float **dq, float **sc, void **codes,
                        int *codes_dtype) {
    char cmd[1024], out[256];
    snprintf(out, sizeof out, "%s/q.safetensors", dir);
    unlink(out);
    snprintf(cmd, sizeof cmd, "%s layer --problem %s %s --json --quiet --out %s", PISO_BIN, problem, args, out);
    char *text = NULL;
    int rc = test_run(cmd, &text);
    CHECK(rc == 0, "%s: exit %d", cmd, rc);
    cJSON *j = cJSON_Parse(text);
    CHECK(j != NULL, "%s: stdout is not JSON: %.200s", cmd, text);
    free(text);
    struct piso_st_file f;
    if (rc != 0 || piso_st_open(&f, out) != 0) {
        cJSON_Delete(j);
        return NULL;
    }
    *dq = piso_st_load_f32(&f, "dequant", 2, NULL);
    *sc = piso_st_load_f32(&f, "scales", 2, NULL);
    const struct piso_st_tensor *t = piso_st_find(&f, "codes");
    *codes = malloc(t->nbytes);
    memcpy(*codes, t->data, t->nbytes);
    *codes_dtype = t->dtype;
    piso_st_close(&f);
    return j;
}

static double json_num(const cJSON *j, const char *k) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, k);
    return cJSON_IsNumber(x) ? x->valuedouble : NAN;
}

/* Σ rows: (w−ŵ)ᵀH(w−ŵ), or ŵᵀHŵ − 2ŵᵀGw when G != NULL */
static double objective_of(const float *W, const float *dq, int N, int D, const double *H, const double *G,
                           double *rows) {
    double total = 0;
    for (int r = 0; r < N; r++) {
        const float *w = W + r * D, *q = dq + r * D;
        double o = 0;
        for (int i = 0; i < D; i++)
            for (int j = 0; j < D; j++) {
                if (G) o += (double)q[i] * H[i * D + j] * q[j] - 2.0 * q[i] * G[i * D + j] * w[j];
                else o += ((double)w[i] - q[i]) * H[i * D + j] * ((double)w[j] - q[j]);
            }
        if (rows) rows[r] = o;
        total += o;
    }
    return total;
}

static void check_codes(const char *what, const float *dq, const float *sc, const void *codes, int dtype, int N,
                        int D, int gs, const struct piso_grid *g) {
    int bad = 0;
    for (int r = 0; r < N; r++)
        for (int i = 0; i < D; i++) {
            float s = sc[r * (D / gs) + i / gs];
            float v = g->is_int ? (float)((const int8_t *)codes)[r * D + i] : g->v[((const uint8_t *)codes)[r * D + i]];
            if (dq[r * D + i] != s * v) bad++;
        }
    CHECK(dtype == (g->is_int ? PISO_DTYPE_I8 : PISO_DTYPE_U8), "%s: codes dtype %d", what, dtype);
    CHECK(bad == 0, "%s: %d dequant values are not scale * grid[code]", what, bad);
}

static void test_cli_objectives(void) {
    enum { N = 6, D = 32, T = 96 };
    static float W[N * D], X[T * D], Xt[T * D], Hf[D * D], Gf[D * D];
    static double H[D * D], G[D * D];
    srand(11);
    make_inputs(T, D, X, Xt);
    for (int i = 0; i < N * D; i++) W[i] = (float)(nrand() * 0.05);
    for (int i = 0; i < D; i++) W[3 * D + i] = 0; /* an all-zero row */
    gram(Xt, Xt, T, D, H);
    gram(Xt, X, T, D, G);
    for (int i = 0; i < D * D; i++) {
        Hf[i] = (float)H[i];
        Gf[i] = (float)G[i];
        H[i] = Hf[i]; /* what the file holds */
        G[i] = Gf[i];
    }
    char p_h[256], p_hg[256], p_x[256];
    snprintf(p_h, sizeof p_h, "%s/h.safetensors", dir);
    snprintf(p_hg, sizeof p_hg, "%s/hg.safetensors", dir);
    snprintf(p_x, sizeof p_x, "%s/x.safetensors", dir);
    write_problem(p_h, N, D, W, Hf, NULL, 0, NULL, NULL);
    write_problem(p_hg, N, D, W, Hf, Gf, 0, NULL, NULL);
    write_problem(p_x, N, D, W, NULL, NULL, T, Xt, X);

    const char *formats[] = {"int3", "int4 --narrow", "int2", "e2m1", "e4m3"};
    const char *methods[] = {"absmax", "mse-grid", "piso-datafree", "piso-diag", "piso", "piso-seq"};
    for (int fi = 0; fi < 5; fi++)
        for (int gsel = 0; gsel < 2; gsel++) {
            int gs = gsel ? 8 : D;
            struct piso_grid g;
            char fmt[16];
            sscanf(formats[fi], "%15s", fmt);
            piso_grid_init(&g, fmt, strstr(formats[fi], "narrow") != NULL);
            double row_obj[6][N];
            for (int mi = 0; mi < 6; mi++)
                for (int with_g = 0; with_g <= 1; with_g++) {
                    char args[128];
                    snprintf(args, sizeof args, "--format %s --scale %s%s", formats[fi], methods[mi],
                             gsel ? " --group 8" : "");
                    float *dq = NULL, *sc = NULL;
                    void *codes = NULL;
                    int cdt = 0;
                    cJSON *j = run_layer(with_g ? p_hg : p_h, args, &dq, &sc, &codes, &cdt);
                    if (!j || !dq) {
                        cJSON_Delete(j);
                        continue;
                    }
                    char what[256];
                    snprintf(what, sizeof what, "%s%s", args, with_g ? " (cross)" : "");
                    double rows[N];
                    double mine = objective_of(W, dq, N, D, H, with_g ? G : NULL, rows);
                    double rep = json_num(j, "objective");
                    CHECK(fabs(rep - mine) <= 1e-7 * (fabs(mine) + 1e-3), "%s: objective %.12g, recomputed %.12g",
                          what, rep, mine);
                    const cJSON *cd = cJSON_GetObjectItemCaseSensitive(j, "constant_dropped");
                    CHECK(with_g ? cJSON_IsTrue(cd) : cJSON_IsFalse(cd), "%s: constant_dropped", what);
                    const cJSON *jr = cJSON_GetObjectItemCaseSensitive(j, "rows");
                    CHECK(cJSON_GetArraySize(jr) == N, "%s: rows", what);
                    for (int r = 0; r < N && r < cJSON_GetArraySize(jr); r++) {
                        const cJSON *row = cJSON_GetArrayItem(jr, r);
                        CHECK(fabs(json_num(row, "objective") - rows[r]) <= 1e-7 * (fabs(rows[r]) + 1e-3),
                              "%s: row %d objective", what, r);
                        if (gsel) {
                            const cJSON *ss = cJSON_GetObjectItemCaseSensitive(row, "scales");
                            CHECK(cJSON_GetArraySize(ss) == D / gs &&
                                      (float)cJSON_GetArrayItem(ss, 1)->valuedouble == sc[r * (D / gs) + 1],
                                  "%s: row %d scales", what, r);
                        } else {
                            CHECK((float)json_num(row, "scale") == sc[r], "%s: row %d scale", what, r);
                        }
                        if (!with_g) row_obj[mi][r] = rows[r];
                    }
                    CHECK(!isnan(json_num(j, "seconds")) && json_num(j, "N") == N && json_num(j, "D") == D,
                          "%s: seconds/N/D", what);
                    check_codes(what, dq, sc, codes, cdt, N, D, gs, &g);
                    int finite = 1;
                    for (int i = 0; i < N * D; i++) finite &= isfinite(dq[i]);
                    CHECK(finite, "%s: non-finite dequant", what);
                    for (int i = 0; i < D; i++) finite &= dq[3 * D + i] == 0;
                    CHECK(finite, "%s: all-zero row must stay zero", what);
                    free(dq);
                    free(sc);
                    free(codes);
                    cJSON_Delete(j);
                }
            if (!gsel) /* channel-wise piso is the exact optimum of each row's objective */
                for (int r = 0; r < N; r++)
                    for (int mi = 0; mi < 4; mi++)
                        CHECK(row_obj[4][r] <= row_obj[mi][r] + 1e-6 * fabs(row_obj[mi][r]) + 1e-12,
                              "%s row %d: piso %.10g worse than %s %.10g", formats[fi], r, row_obj[4][r], methods[mi],
                              row_obj[mi][r]);
        }

    /* --no-negative: only positive scales, and (channel-wise, exact) never a better objective */
    for (int fi = 0; fi < 2; fi++) {
        const char *fmt = fi ? "int3" : "int2";
        double obj[2] = {0, 0};
        int negatives[2] = {0, 0};
        for (int nn = 0; nn <= 1; nn++) {
            char args[128];
            snprintf(args, sizeof args, "--format %s --scale piso%s", fmt, nn ? " --no-negative" : "");
            float *dq = NULL, *sc = NULL;
            void *codes = NULL;
            int cdt;
            cJSON *j = run_layer(p_h, args, &dq, &sc, &codes, &cdt);
            if (j && sc) {
                obj[nn] = json_num(j, "objective");
                for (int r = 0; r < N; r++) negatives[nn] += sc[r] < 0;
            }
            free(dq), free(sc), free(codes);
            cJSON_Delete(j);
        }
        CHECK(negatives[1] == 0, "%s --no-negative: %d negative scales", fmt, negatives[1]);
        CHECK(obj[0] <= obj[1] + 1e-6 * fabs(obj[1]), "%s: negatives allowed %.10g worse than not %.10g", fmt, obj[0],
              obj[1]);
        fprintf(stderr, "%s: %d of %d rows chose a negative scale\n", fmt, negatives[0], N);
    }

    /* inputs problem: objective = Σ ||X̃ŵ||² − 2(X̃ŵ)·(Xw), computed straight from the data */
    float *dq = NULL, *sc = NULL;
    void *codes = NULL;
    int cdt;
    cJSON *j = run_layer(p_x, "--format int4 --scale piso --group 16", &dq, &sc, &codes, &cdt);
    if (j && dq) {
        double direct = 0;
        for (int r = 0; r < N; r++)
            for (int t = 0; t < T; t++) {
                double a = 0, b = 0;
                for (int i = 0; i < D; i++) {
                    a += (double)Xt[t * D + i] * dq[r * D + i];
                    b += (double)X[t * D + i] * W[r * D + i];
                }
                direct += a * a - 2 * a * b;
            }
        double rep = json_num(j, "objective");
        CHECK(fabs(rep - direct) <= 1e-6 * fabs(direct), "inputs problem: objective %.12g vs direct %.12g", rep, direct);
        CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "constant_dropped")), "inputs: constant dropped");
    }
    free(dq);
    free(sc);
    free(codes);
    cJSON_Delete(j);
}

/* piso-seq: the group solved last (lowest Σ H_ii) sees every other group final, so its scale
 * minimises the full row objective over that group's scale; scan it by brute force here. */
static void test_seq_last_group(void) {
    enum { N = 3, D = 24, T = 80, GS = 8 };
    static float W[N * D], X[T * D], Xt[T * D], Hf[D * D];
    static double H[D * D];
    srand(23);
    make_inputs(T, D, X, Xt);
    for (int i = 0; i < N * D; i++) W[i] = (float)(nrand() * 0.05);
    gram(Xt, Xt, T, D, H);
    for (int i = 0; i < D * D; i++) Hf[i] = (float)H[i], H[i] = Hf[i];
    struct piso_quant_opts o = {.group = GS, .method = PISO_SCALE_PISO_SEQ, .allow_negative = 1};
    piso_grid_init(&o.grid, "int3", 0);
    struct piso_layer_problem p = {.N = N, .D = D, .W = W, .H = Hf, .G = NULL};
    struct piso_layer_result r;
    CHECK(piso_quantize_layer(&p, &o, &r) == 0, "seq: %s", piso_last_error());
    /* group order by Σ H_ii: the last one */
    int last = 0;
    double lowest = INFINITY;
    for (int g = 0; g < D / GS; g++) {
        double s = 0;
        for (int i = g * GS; i < (g + 1) * GS; i++) s += H[i * D + i];
        if (s < lowest) lowest = s, last = g;
    }
    for (int row = 0; row < N; row++) {
        float q[D];
        memcpy(q, r.dequant + row * D, sizeof q);
        double chosen = objective_of(W + row * D, q, 1, D, H, NULL, NULL);
        double best = INFINITY;
        const float *w = W + row * D;
        double wmax = 0;
        for (int i = last * GS; i < (last + 1) * GS; i++) wmax = fmax(wmax, fabs(w[i]));
        for (int k = -4000; k <= 4000; k++) {
            if (!k) continue;
            double s = wmax / 4 * k / 4000.0 * 3;
            for (int i = last * GS; i < (last + 1) * GS; i++) {
                double x = w[i] / s, v = fmin(3, fmax(-4, nearbyint(x)));
                q[i] = (float)(s * v);
            }
            best = fmin(best, objective_of(w, q, 1, D, H, NULL, NULL));
        }
        CHECK(chosen <= best + 1e-6 * fabs(best), "seq row %d: last group objective %.10g, scan %.10g", row, chosen, best);
    }
    piso_layer_result_free(&r);
}

static void test_library_properties(void) {
    enum { N = 10, D = 16 };
    static float W[N * D], Hd[D * D];
    srand(3);
    for (int i = 0; i < N * D; i++) W[i] = (float)nrand();
    for (int i = 0; i < D; i++) Hd[i * D + i] = i == 5 ? 0.0f : (float)(1 + 3 * ((double)rand() / RAND_MAX));
    struct piso_layer_problem p = {.N = N, .D = D, .W = W, .H = Hd};
    const char *fmts[] = {"int4", "e2m1"};
    for (int f = 0; f < 2; f++)
        for (int gs = 0; gs <= 8; gs += 8) {
            struct piso_quant_opts od = {.group = gs, .method = PISO_SCALE_PISO_DIAG, .allow_negative = 1};
            struct piso_quant_opts ox = od;
            ox.method = PISO_SCALE_PISO;
            piso_grid_init(&od.grid, fmts[f], 0);
            ox.grid = od.grid;
            struct piso_layer_result rd, rx;
            piso_quantize_layer(&p, &od, &rd);
            piso_quantize_layer(&p, &ox, &rx);
            /* 1e-6: a dead input (H_55 = 0) makes E continuous across its breakpoints, so the two solvers
               may settle on either side of one within the interval margin */
            CHECK(fabs(rd.objective - rx.objective) <= 1e-6 * fabs(rd.objective), "%s g%d: diag H: piso-diag %.12g vs piso %.12g",
                  fmts[f], gs, rd.objective, rx.objective);
            piso_layer_result_free(&rd);
            piso_layer_result_free(&rx);
        }
    /* thread count independence, bitwise */
    enum { N2 = 16, D2 = 32, T2 = 64 };
    static float W2[N2 * D2], X[T2 * D2], Xt[T2 * D2], H2[D2 * D2];
    static double Hd2[D2 * D2];
    make_inputs(T2, D2, X, Xt);
    gram(Xt, Xt, T2, D2, Hd2);
    for (int i = 0; i < D2 * D2; i++) H2[i] = (float)Hd2[i];
    for (int i = 0; i < N2 * D2; i++) W2[i] = (float)nrand();
    struct piso_layer_problem p2 = {.N = N2, .D = D2, .W = W2, .H = H2};
    for (int m = PISO_SCALE_PISO; m <= PISO_SCALE_PISO_SEQ; m++) {
        struct piso_quant_opts o = {.group = 8, .method = (enum piso_scale_method)m, .allow_negative = 1};
        piso_grid_init(&o.grid, "int3", 0);
        struct piso_layer_result a, b;
        omp_set_num_threads(1);
        piso_quantize_layer(&p2, &o, &a);
        omp_set_num_threads(2);
        piso_quantize_layer(&p2, &o, &b);
        CHECK(a.objective == b.objective && !memcmp(a.dequant, b.dequant, sizeof(float) * N2 * D2),
              "%s: result depends on the thread count", piso_scale_method_name(o.method));
        piso_layer_result_free(&a);
        piso_layer_result_free(&b);
    }
    /* the fp64 GEMMs (G·w, objectives) at a size where BLAS does use threads */
    {
        enum { NB = 320, DB = 256 };
        float *Wb = malloc(sizeof(float) * NB * DB), *Hb = calloc(DB * DB, sizeof(float));
        for (int i = 0; i < NB * DB; i++) Wb[i] = (float)nrand();
        for (int i = 0; i < DB; i++)
            for (int j = 0; j <= i; j++) Hb[i * DB + j] = Hb[j * DB + i] = i == j ? 4.0f : (float)(0.01 * nrand());
        struct piso_layer_problem pb = {.N = NB, .D = DB, .W = Wb, .H = Hb, .G = Hb};
        struct piso_quant_opts o = {.group = 0, .method = PISO_SCALE_ABSMAX, .allow_negative = 1};
        piso_grid_init(&o.grid, "int4", 0);
        struct piso_layer_result a, b;
        omp_set_num_threads(1);
        piso_quantize_layer(&pb, &o, &a);
        omp_set_num_threads(2);
        piso_quantize_layer(&pb, &o, &b);
        CHECK(!memcmp(a.row_objective, b.row_objective, sizeof(double) * NB), "large: objectives depend on threads");
        piso_layer_result_free(&a);
        piso_layer_result_free(&b);
        free(Wb);
        free(Hb);
    }
    /* group must divide D */
    struct piso_quant_opts o = {.group = 5, .method = PISO_SCALE_PISO};
    piso_grid_init(&o.grid, "int4", 0);
    struct piso_layer_result r;
    CHECK(piso_quantize_layer(&p, &o, &r) != 0 && strstr(piso_last_error(), "divide"), "group 5 of 16: %s",
          piso_last_error());
}

/* each bad file: exit 1, "piso layer: error:" + the expected words, and no output file left */
static void expect_error(const char *problem, const char *args, const char *words) {
    char cmd[1024], out[256];
    snprintf(out, sizeof out, "%s/never.safetensors", dir);
    snprintf(cmd, sizeof cmd, "%s layer --problem %s %s --quiet --out %s 2>&1", PISO_BIN, problem, args, out);
    test_expect_refusal(cmd, cmd, 1, "piso layer: error:", words, out);
}

static void test_bad_files(void) {
    enum { N = 2, D = 4 };
    float W[N * D] = {1, 2, 3, 4, 5, 6, 7, 8}, H[D * D] = {0}, H5[25] = {0}, X[3 * D] = {0};
    for (int i = 0; i < D; i++) H[i * D + i] = 1;
    char p[256];
    snprintf(p, sizeof p, "%s/bad.safetensors", dir);

    write_problem(p, N, D, W, H, NULL, 0, NULL, NULL);
    expect_error(p, "--format int4 --group 3", "does not divide");
    expect_error(p, "--format int42", "int42");

    write_problem(p, N, D, W, NULL, NULL, 0, NULL, NULL);
    expect_error(p, "--format int4", "'hessian'");

    struct piso_st_writer *w = piso_st_writer_new();
    int64_t sw[2] = {N, D}, s5[2] = {5, 5};
    piso_st_writer_add(w, "weight", PISO_DTYPE_F32, 2, sw, W);
    piso_st_writer_add(w, "hessian", PISO_DTYPE_F32, 2, s5, H5);
    piso_st_writer_write(w, p);
    piso_st_writer_free(w);
    expect_error(p, "--format int4", "shape [5, 5], expected [4, 4]");

    write_problem(p, N, D, W, H, NULL, 3, X, NULL);
    expect_error(p, "--format int4", "exactly one");

    float Wn[N * D];
    memcpy(Wn, W, sizeof Wn);
    Wn[5] = NAN;
    write_problem(p, N, D, Wn, H, NULL, 0, NULL, NULL);
    expect_error(p, "--format int4", "non-finite");

    float Hbad[D * D];
    memcpy(Hbad, H, sizeof Hbad);
    Hbad[0 * D + 1] = Hbad[1 * D + 0] = 2; /* [[1,2],[2,1]] block: eigenvalue −1 */
    write_problem(p, N, D, W, Hbad, NULL, 0, NULL, NULL);
    expect_error(p, "--format int4", "not positive semidefinite");

    Hbad[1 * D + 0] = 0.5f;
    write_problem(p, N, D, W, Hbad, NULL, 0, NULL, NULL);
    expect_error(p, "--format int4", "not symmetric");

    Hbad[1 * D + 0] = 2;
    Hbad[2 * D + 2] = -1;
    write_problem(p, N, D, W, Hbad, NULL, 0, NULL, NULL);
    expect_error(p, "--format int4", "negative diagonal");

    /* singular but PSD (rank 1, a dead input) is accepted */
    float Hs[D * D] = {0};
    float v[D] = {1, 2, 0, -1};
    for (int i = 0; i < D; i++)
        for (int j = 0; j < D; j++) Hs[i * D + j] = v[i] * v[j];
    write_problem(p, N, D, W, Hs, NULL, 0, NULL, NULL);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s layer --problem %s --format int4 --json --quiet", PISO_BIN, p);
    char *text = NULL;
    CHECK(test_run(cmd, &text) == 0 && text && strstr(text, "\"objective\""), "singular PSD H rejected");
    free(text);

    /* truncated header: 8-byte length claims more than the file has */
    FILE *f = fopen(p, "wb");
    uint64_t len = 200;
    fwrite(&len, 8, 1, f);
    fputs("{\"weight\":{", f);
    fclose(f);
    expect_error(p, "--format int4", p);
    expect_error("/nonexistent/x.safetensors", "--format int4", "/nonexistent/x.safetensors");
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/piso_layer_XXXXXX");
    if (!mkdtemp(dir)) return 1;
    piso_set_quiet(1);
    test_library_properties();
    test_seq_last_group();
    test_bad_files();
    test_cli_objectives();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return test_finish();
}
