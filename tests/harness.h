/* tests/harness.h — a minimal test harness (header-only; one test program per file).
 *
 *   CHECK(cond, fmt, ...)          records a failure and continues
 *   CHECK_NEAR(a, b, tol, what)    |a - b| <= tol
 *   test_data(rel)                 path under $PISO_DATA (default ../shared); if the file is
 *                                  missing the test is skipped (exit 77) with a notice, except
 *                                  under CI=true where missing data is a failure.
 *   test_run(cmd, &out)            runs a shell command, captures stdout, returns exit status
 *   test_expect_refusal(...)       a command that must fail with a message and write nothing
 *   return test_finish();          prints "N passed, N failed" and sets the exit code
 */
#ifndef PISO_TEST_HARNESS_H
#define PISO_TEST_HARNESS_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int t_pass, t_fail;

#define CHECK(cond, ...)                                                                  \
    do {                                                                                  \
        if (cond) {                                                                       \
            t_pass++;                                                                     \
        } else {                                                                          \
            t_fail++;                                                                     \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                 \
            fprintf(stderr, "\n");                                                        \
        }                                                                                 \
    } while (0)

#define CHECK_NEAR(a, b, tol, what)                                                       \
    do {                                                                                  \
        double _a = (double)(a), _b = (double)(b);                                        \
        CHECK(fabs(_a - _b) <= (tol), "%s: %.10g vs %.10g (tol %g)", what, _a, _b, (double)(tol)); \
    } while (0)

static inline const char *test_data_root(void) {
    const char *e = getenv("PISO_DATA");
    return e && *e ? e : PISO_DATA_DEFAULT;
}

static inline int test_in_ci(void) {
    const char *ci = getenv("CI");
    return ci && (!strcmp(ci, "true") || !strcmp(ci, "1"));
}

/* Returns a static path buffer (rotating, 8 slots) for rel under the data root. */
static inline const char *test_data(const char *rel) {
    static char bufs[8][4096];
    static int k;
    char *b = bufs[k++ & 7];
    snprintf(b, 4096, "%s/%s", test_data_root(), rel);
    struct stat st;
    if (stat(b, &st) != 0) {
        if (test_in_ci()) {
            fprintf(stderr, "FAIL: test data %s is missing (CI=true requires it; set PISO_DATA)\n", b);
            exit(1);
        }
        fprintf(stderr, "SKIP: test data %s is missing (set PISO_DATA to the shared data folder)\n", b);
        exit(77);
    }
    return b;
}

/* Runs cmd through /bin/sh; stdout goes to *out (malloc'd, may be NULL), stderr passes through.
 * Returns the exit status (or -1). */
static inline int test_run(const char *cmd, char **out) {
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += r;
        if (cap - n < 2) buf = realloc(buf, cap *= 2);
    }
    buf[n] = 0;
    int st = pclose(p);
    if (out) *out = buf;
    else free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A command that must be refused: runs cmd (which folds stderr into stdout with 2>&1), checks the
 * exit status (code; -1: any failure), that the captured text holds prefix (NULL: not checked) and
 * words, and that never (the output it was asked to write) does not exist. what names the case. */
static inline void test_expect_refusal(const char *what, const char *cmd, int code, const char *prefix,
                                       const char *words, const char *never) {
    char *text = NULL;
    int rc = test_run(cmd, &text);
    CHECK(code < 0 ? rc != 0 : rc == code, "%s: exit %d", what, rc);
    CHECK(text && (!prefix || strstr(text, prefix)) && strstr(text, words), "%s: message '%s' lacks '%s'", what,
          text ? text : "", words);
    CHECK(access(never, F_OK) != 0, "%s: %s left behind", what, never);
    free(text);
}

/* Real llama.cpp for the interop tests: node and the node-llama-cpp package (scripts/setup-llamacpp.sh,
 * under $PISO_LLAMACPP_PREFIX or SOURCE/.tools/llamacpp). Without them the test is skipped (exit
 * 77), except under CI=true where that is a failure. */
static inline void test_require_llamacpp(void) {
    char pkg[1024];
    const char *pre = getenv("PISO_LLAMACPP_PREFIX");
    snprintf(pkg, sizeof pkg, "%s/node_modules/node-llama-cpp/package.json", pre && *pre ? pre : PISO_SOURCE_DIR "/.tools/llamacpp");
    struct stat st;
    int node = test_run("node --version >/dev/null 2>&1", NULL) == 0;
    if (node && stat(pkg, &st) == 0) return;
    const char *why = node ? "node-llama-cpp is not installed (run scripts/setup-llamacpp.sh)" : "node is not installed";
    if (test_in_ci()) {
        fprintf(stderr, "FAIL: %s (CI=true requires the llama.cpp interop test)\n", why);
        exit(1);
    }
    fprintf(stderr, "SKIP: %s\n", why);
    exit(77);
}

static inline int test_finish(void) {
    printf("%d passed, %d failed\n", t_pass, t_fail);
    return t_fail ? 1 : 0;
}

/* Reference solver for the tests, independent of src/linalg: A x = b (A [n, n], destroyed; x
 * overwrites b) by Gaussian elimination with partial pivoting. */
static inline void test_gauss_solve(double *A, double *b, int n) {
    for (int c = 0; c < n; c++) {
        int p = c;
        for (int r = c + 1; r < n; r++)
            if (fabs(A[r * n + c]) > fabs(A[p * n + c])) p = r;
        for (int k = 0; k < n; k++) {
            double t = A[c * n + k];
            A[c * n + k] = A[p * n + k], A[p * n + k] = t;
        }
        double t = b[c];
        b[c] = b[p], b[p] = t;
        for (int r = c + 1; r < n; r++) {
            double f = A[r * n + c] / A[c * n + c];
            for (int k = c; k < n; k++) A[r * n + k] -= f * A[c * n + k];
            b[r] -= f * b[c];
        }
    }
    for (int c = n - 1; c >= 0; c--) {
        double s = b[c];
        for (int k = c + 1; k < n; k++) s -= A[c * n + k] * b[k];
        b[c] = s / A[c * n + c];
    }
}

#endif
