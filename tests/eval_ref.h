/* tests/eval_ref.h — the independent C++ reference for llama-perplexity's HellaSwag task draw
 * (tests/ref/hellaswag_draw.cpp: std::mt19937 + libstdc++'s uniform_int_distribution), compiled
 * with g++ (build-essential) into dir. Without g++ the caller's test is skipped (a failure under
 * CI=true). */
#ifndef PISO_TEST_EVAL_REF_H
#define PISO_TEST_EVAL_REF_H

#include "harness.h"

static inline void eval_ref_build_draw(const char *dir, char *bin, size_t n) {
    snprintf(bin, n, "%s/hellaswag_draw", dir);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "g++ -O1 -std=c++17 -o %s %s/tests/ref/hellaswag_draw.cpp 2>&1", bin, PISO_SOURCE_DIR);
    if (test_run("g++ --version >/dev/null 2>&1", NULL) != 0) {
        if (test_in_ci()) {
            fprintf(stderr, "FAIL: g++ is not installed (CI=true requires the C++ reference)\n");
            exit(1);
        }
        fprintf(stderr, "SKIP: g++ is not installed (the C++ reference for the task draw)\n");
        exit(77);
    }
    CHECK(test_run(cmd, NULL) == 0, "compiling the C++ reference: %s", cmd);
}

/* Runs the reference with args; fills out[cap] with the numbers it prints; returns their count. */
static inline int eval_ref_numbers(const char *bin, const char *args, long long *out, int cap) {
    char cmd[2048], *txt = NULL;
    snprintf(cmd, sizeof cmd, "%s %s", bin, args);
    if (test_run(cmd, &txt) != 0) {
        free(txt);
        return -1;
    }
    int n = 0;
    char *p = txt, *e;
    for (long long v = strtoll(p, &e, 10); e != p && n < cap; v = strtoll(p, &e, 10)) out[n++] = v, p = e;
    free(txt);
    return n;
}

#endif
