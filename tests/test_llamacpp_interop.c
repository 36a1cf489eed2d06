/* Proof that real llama.cpp runs piso's GGUF files: stories260K is exported to F32, Q8_0, Q4_0 and
 * Q4_K (piso scales) and Q4_0 (llamacpp-ref scales); llama.cpp (npm node-llama-cpp, prebuilt CPU
 * build, installed by scripts/setup-llamacpp.sh) evaluates a token sequence from each file, and its
 * next-token log-probabilities must match piso's own evaluator on the same file: tightly for F32,
 * within quantization noise otherwise (llama.cpp rounds activations to Q8 for quantized matmuls
 * and to F16 for F16 weights). Without node or the package the test is skipped, except under
 * CI=true where that is a failure. */
#include "harness.h"
#include "piso/model.h"
#include "piso/tokenizer.h"

#include <cjson/cJSON.h>
#include <unistd.h>

static const char *TEXT = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.";

static int have_llamacpp(char *script, size_t n) {
    snprintf(script, n, "%s/tests/llamacpp/logprobs.mjs", PISO_SOURCE_DIR);
    char pkg[1024];
    const char *pre = getenv("PISO_LLAMACPP_PREFIX");
    snprintf(pkg, sizeof pkg, "%s/node_modules/node-llama-cpp/package.json", pre && *pre ? pre : PISO_SOURCE_DIR "/.tools/llamacpp");
    int node = test_run("node --version >/dev/null 2>&1", NULL) == 0;
    if (node && access(pkg, R_OK) == 0) return 1;
    const char *why = node ? "node-llama-cpp is not installed (run scripts/setup-llamacpp.sh)" : "node is not installed";
    if (test_in_ci()) {
        fprintf(stderr, "FAIL: %s (CI=true requires the llama.cpp interop test)\n", why);
        exit(1);
    }
    fprintf(stderr, "SKIP: %s\n", why);
    exit(77);
}

/* piso's log-softmax rows for tokens[0..n) of the model in `path` into lp [n, V]. */
static int piso_logprobs(const char *path, const int *tokens, int n, double *lp, int *V) {
    struct piso_model *m;
    if (piso_model_load(path, NULL, &m)) return -1;
    *V = m->cfg.vocab_size;
    float *logits = malloc(sizeof(float) * (size_t)n * (size_t)*V);
    int rc = piso_forward(m, tokens, n, 0, logits);
    for (int i = 0; i < n && !rc; i++) {
        const float *z = logits + (size_t)i * *V;
        double mx = -1e300, s = 0;
        for (int j = 0; j < *V; j++) mx = fmax(mx, z[j]);
        for (int j = 0; j < *V; j++) s += exp(z[j] - mx);
        for (int j = 0; j < *V; j++) lp[(size_t)i * *V + j] = z[j] - mx - log(s);
    }
    free(logits);
    piso_model_free(m);
    return rc;
}

struct tcase {
    const char *type, *scale;
    double tol_max_next, tol_mean_next; /* |Δ log p(next token)|: max, mean */
    double tol_max_all;                 /* |Δ| over the whole vocabulary (F32 only) */
};

int main(void) {
    char script[1024];
    const char *model = test_data("models/stories260K/stories260K.bin");
    const char *tokp = test_data("models/stories260K/tok512.bin");
    have_llamacpp(script, sizeof script);

    struct piso_tokenizer *tok;
    CHECK(piso_tokenizer_load(tokp, &tok) == 0, "tokenizer: %s", piso_last_error());
    int *ids = NULL, n = 0;
    CHECK(piso_tokenize(tok, TEXT, strlen(TEXT), 1, &ids, &n) == 0 && n > 10, "tokenize");
    piso_tokenizer_free(tok);
    char list[4096] = {0};
    for (int i = 0; i < n; i++) snprintf(list + strlen(list), sizeof list - strlen(list), "%s%d", i ? "," : "", ids[i]);

    char dir[] = "/tmp/piso_interop_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    const struct tcase cases[] = {
        /* F32 with llama.cpp's KV cache in F32: only summation order differs */
        {"F32", "piso", 1e-4, 1e-5, 2e-4},
        /* quantized: llama.cpp rounds activations (measured: max ~0.02-0.045, mean ~0.003-0.005);
         * a wrong block layout would be off by nats */
        {"Q8_0", "piso", 0.1, 0.015, 0},
        {"Q4_0", "piso", 0.1, 0.015, 0},
        {"Q4_0", "llamacpp-ref", 0.1, 0.015, 0},
        {"Q4_K", "piso", 0.1, 0.015, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const struct tcase *tc = &cases[c];
        char path[512], cmd[8192];
        snprintf(path, sizeof path, "%s/%s-%s.gguf", dir, tc->type, tc->scale);
        snprintf(cmd, sizeof cmd, "%s quantize --model %s --tokenizer %s --out %s --type %s --scale %s --quiet", PISO_BIN,
                 model, tokp, path, tc->type, tc->scale);
        CHECK(test_run(cmd, NULL) == 0, "export %s", cmd);
        snprintf(cmd, sizeof cmd, "node %s %s %s", script, path, list);
        char *out = NULL;
        int st = test_run(cmd, &out);
        CHECK(st == 0, "llama.cpp failed on %s (exit %d)", path, st);
        cJSON *js = st == 0 ? cJSON_Parse(out) : NULL;
        free(out);
        const cJSON *rows = cJSON_GetObjectItemCaseSensitive(js, "logprobs");
        CHECK(cJSON_IsArray(rows) && cJSON_GetArraySize(rows) == n, "%s: llama.cpp output", path);
        if (!cJSON_IsArray(rows) || cJSON_GetArraySize(rows) != n) {
            cJSON_Delete(js);
            continue;
        }
        int V = 0;
        double *lp = malloc(sizeof(double) * (size_t)n * 4096);
        CHECK(piso_logprobs(path, ids, n, lp, &V) == 0, "piso on %s: %s", path, piso_last_error());
        double max_next = 0, sum_next = 0, max_all = 0;
        int top_agree = 0;
        for (int i = 0; i < n; i++) {
            const cJSON *row = cJSON_GetArrayItem(rows, i);
            CHECK(cJSON_GetArraySize(row) == V, "row %d has %d entries, vocab %d", i, cJSON_GetArraySize(row), V);
            int am_l = 0, am_p = 0;
            for (int j = 0; j < V && j < cJSON_GetArraySize(row); j++) {
                double l = cJSON_GetArrayItem(row, j)->valuedouble, p = lp[(size_t)i * V + j];
                max_all = fmax(max_all, fabs(l - p));
                if (l > cJSON_GetArrayItem(row, am_l)->valuedouble) am_l = j;
                if (p > lp[(size_t)i * V + am_p]) am_p = j;
            }
            top_agree += am_l == am_p;
            if (i + 1 < n) {
                double d = fabs(cJSON_GetArrayItem(row, ids[i + 1])->valuedouble - lp[(size_t)i * V + ids[i + 1]]);
                max_next = fmax(max_next, d);
                sum_next += d;
            }
        }
        double mean_next = sum_next / (n - 1);
        printf("%-5s %-13s max|dlogp(next)| %.2e  mean %.2e  max over vocab %.2e  top-1 agree %d/%d\n", tc->type, tc->scale,
               max_next, mean_next, max_all, top_agree, n);
        CHECK(max_next <= tc->tol_max_next, "%s %s: max |dlogp| %g > %g", tc->type, tc->scale, max_next, tc->tol_max_next);
        CHECK(mean_next <= tc->tol_mean_next, "%s %s: mean |dlogp| %g > %g", tc->type, tc->scale, mean_next, tc->tol_mean_next);
        if (tc->tol_max_all > 0) CHECK(max_all <= tc->tol_max_all, "%s: max over vocab %g", tc->type, max_all);
        CHECK(top_agree >= n - 2, "%s %s: top-1 agrees on %d of %d", tc->type, tc->scale, top_agree, n);
        free(lp);
        cJSON_Delete(js);
    }
    free(ids);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
    return test_finish();
}
