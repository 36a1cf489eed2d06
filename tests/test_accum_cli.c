/* `piso layer --accumulator-bits P [--accumulator-tile T] --input-bits N [--input-signed]`: the codes
 * it writes are checked here, row by row and tile by tile, with the worst case computed directly
 * (max over the corners of the input range of |Σ q_i x_i| = max(μ_max·p + μ_min·n, −(μ_min·p + μ_max·n)),
 * the closed form that test_accum checks against enumeration); the JSON report of the checker must
 * agree; dequant = scale · code. Bad options fail with a message naming the problem and leave no output. */
#include "harness.h"
#include "piso/safetensors.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <unistd.h>

static char dir[64];

static double nrand(void) {
    double a = (double)rand() / RAND_MAX * 0.999999 + 1e-6, b = (double)rand() / RAND_MAX;
    return sqrt(-2 * log(a)) * cos(6.283185307179586 * b);
}

enum { N = 16, D = 64, T_IN = 200 };

static void write_problem(const char *path) {
    static float W[N * D], X[T_IN * D], Xt[T_IN * D];
    for (int k = 0; k < N * D; k++) W[k] = (float)(0.05 * nrand());
    for (int t = 0; t < T_IN; t++)
        for (int j = 0; j < D; j++) {
            X[t * D + j] = (float)(nrand() * (j % 9 == 0 ? 4 : 1));
            Xt[t * D + j] = X[t * D + j] + (float)(0.1 * nrand());
        }
    struct piso_st_writer *w = piso_st_writer_new();
    int64_t sw[2] = {N, D}, sx[2] = {T_IN, D};
    piso_st_writer_add(w, "weight", PISO_DTYPE_F32, 2, sw, W);
    piso_st_writer_add(w, "inputs", PISO_DTYPE_F32, 2, sx, Xt);
    piso_st_writer_add(w, "inputs_float", PISO_DTYPE_F32, 2, sx, X);
    CHECK(piso_st_writer_write(w, path) == 0, "write %s", path);
    piso_st_writer_free(w);
}

static double json_num(const cJSON *j, const char *k) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, k);
    return cJSON_IsNumber(x) ? x->valuedouble : NAN;
}

/* one run; returns the largest worst case found here over all (row, tile) (-1 on failure) */
static int64_t run(const char *problem, const char *args, int P, int T, int64_t mn, int64_t mx, int64_t *nonzero) {
    char cmd[2048], out[256];
    snprintf(out, sizeof out, "%s/q.safetensors", dir);
    unlink(out);
    snprintf(cmd, sizeof cmd, "%s layer --problem %s %s --json --quiet --out %s", PISO_BIN, problem, args, out);
    char *text = NULL;
    int rc = test_run(cmd, &text);
    CHECK(rc == 0, "%s: exit %d", cmd, rc);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    free(text);
    struct piso_st_file f;
    if (rc || !j || piso_st_open(&f, out) != 0) {
        cJSON_Delete(j);
        return -1;
    }
    const struct piso_st_tensor *tc = piso_st_find(&f, "codes");
    float *dq = piso_st_load_f32(&f, "dequant", 2, NULL), *sc = piso_st_load_f32(&f, "scales", 2, NULL);
    const int8_t *codes = tc->data;
    const cJSON *acc = cJSON_GetObjectItemCaseSensitive(j, "accumulator");
    int64_t worst = 0, A = ((int64_t)1 << (P - 1)) - 1, bad = 0, nz = 0;
    int groups = (int)json_num(j, "n_groups");
    for (int r = 0; r < N; r++)
        for (int t0 = 0; t0 < D; t0 += T) {
            int64_t p = 0, n = 0;
            for (int i = t0; i < t0 + T; i++) {
                int q = codes[r * D + i];
                p += q > 0 ? q : 0, n += q < 0 ? q : 0, nz += q != 0;
                if (dq[r * D + i] != sc[r * groups + i / (D / groups)] * (float)q) bad++;
            }
            int64_t hi = mx * p + mn * n, lo = mn * p + mx * n;
            int64_t wc = hi > -lo ? hi : -lo;
            if (wc > worst) worst = wc;
        }
    CHECK(worst <= A, "%s: worst case %lld exceeds %lld", cmd, (long long)worst, (long long)A);
    CHECK(bad == 0, "%s: %lld dequant values are not scale * code", cmd, (long long)bad);
    CHECK(acc && json_num(acc, "worst") == (double)worst && json_num(acc, "limit") == (double)A &&
              json_num(acc, "violations") == 0 && json_num(acc, "tile") == T,
          "%s: report worst %g limit %g tile %g vs %lld %lld %d", cmd, acc ? json_num(acc, "worst") : NAN,
          acc ? json_num(acc, "limit") : NAN, acc ? json_num(acc, "tile") : NAN, (long long)worst, (long long)A, T);
    *nonzero = nz;
    free(dq), free(sc);
    piso_st_close(&f);
    cJSON_Delete(j);
    return worst;
}

static void expect_error(const char *problem, const char *args, int code, const char *words) {
    char cmd[2048], out[256];
    snprintf(out, sizeof out, "%s/never.safetensors", dir);
    snprintf(cmd, sizeof cmd, "%s layer --problem %s %s --quiet --out %s 2>&1", PISO_BIN, problem, args, out);
    test_expect_refusal(cmd, cmd, code, "piso layer: error:", words, out);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/piso_test_accum_cli_%d", (int)getpid());
    mkdir(dir, 0755);
    char problem[256];
    snprintf(problem, sizeof problem, "%s/p.safetensors", dir);
    srand(3);
    write_problem(problem);
    static const char *const roundings[] = {"rtn --scale absmax", "rtn --scale piso", "gptq --scale absmax",
                                            "gptq --scale piso --act-order", "qronos --scale piso",
                                            "gpfq --scale absmax", "gpfq --scale piso"};
    struct {
        int P, T, bits, sgn;
        const char *extra;
    } cfg[] = {{10, 64, 4, 0, ""}, {12, 16, 8, 1, "--accumulator-tile 16"}, {14, 32, 8, 0, "--group 32"},
               {16, 64, 8, 1, ""}, {9, 16, 4, 1, "--group 16 --accumulator-tile 16"}};
    for (size_t c = 0; c < sizeof cfg / sizeof *cfg; c++)
        for (size_t k = 0; k < sizeof roundings / sizeof *roundings; k++) {
            char args[512];
            int64_t mn = cfg[c].sgn ? -((int64_t)1 << (cfg[c].bits - 1)) : 0;
            int64_t mx = cfg[c].sgn ? ((int64_t)1 << (cfg[c].bits - 1)) - 1 : ((int64_t)1 << cfg[c].bits) - 1;
            snprintf(args, sizeof args, "--format int4 --rounding %s --accumulator-bits %d --input-bits %d %s %s",
                     roundings[k], cfg[c].P, cfg[c].bits, cfg[c].sgn ? "--input-signed" : "", cfg[c].extra);
            int64_t nz = 0;
            int64_t worst = run(problem, args, cfg[c].P, cfg[c].T, mn, mx, &nz);
            CHECK(worst >= 0 && nz > N, "%s: %lld non-zero codes", args, (long long)nz);
        }
    /* the result does not depend on the thread count */
    char outs[2][300], cmd2[2048];
    for (int t = 0; t < 2; t++) {
        snprintf(outs[t], sizeof outs[t], "%s/threads%d.safetensors", dir, t + 1);
        snprintf(cmd2, sizeof cmd2,
                 "%s layer --problem %s --format int4 --rounding gpfq --scale piso --act-order --accumulator-bits 12 "
                 "--accumulator-tile 16 --input-bits 8 --input-signed --threads %d --quiet --out %s",
                 PISO_BIN, problem, t + 1, outs[t]);
        CHECK(test_run(cmd2, NULL) == 0, "%s", cmd2);
    }
    snprintf(cmd2, sizeof cmd2, "cmp -s %s %s", outs[0], outs[1]);
    CHECK(system(cmd2) == 0, "1 and 2 threads give different files");
    /* bad options: nothing written, the message says what is wrong */
    expect_error(problem, "--format int4 --accumulator-bits 8 --input-bits 8 --input-signed", 1, "too small");
    expect_error(problem, "--format int4 --accumulator-bits 8 --input-bits 8 --input-signed", 1, problem);
    expect_error(problem, "--format int4 --accumulator-bits 16 --input-bits 8 --accumulator-tile 24", 1,
                 "does not divide");
    expect_error(problem, "--format int4 --accumulator-bits 16", 2, "--input-bits");
    expect_error(problem, "--format int4 --input-bits 8", 2, "only with --accumulator-bits");
    expect_error(problem, "--format e2m1 --accumulator-bits 16 --input-bits 8", 1, "integer weight format");
    expect_error(problem, "--format int4 --rounding beam --accumulator-bits 16 --input-bits 8", 1, "beam");
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
    return test_finish();
}
