/* Tokenizer throughput on WikiText-2 test (1.3 MB): load time, encode MB/s and tokens/s, decode
 * MB/s, for each shared tokenizer found. Usage: bench_tokenize [DATA_DIR] [extra tokenizer paths...]
 * (DATA_DIR defaults to $PISO_DATA or ../shared). */
#include "piso/tokenizer.h"

#include <stdlib.h>
#include <string.h>

static void bench(const char *path, const char *text, size_t len) {
    double t0 = piso_time();
    struct piso_tokenizer *t;
    if (piso_tokenizer_load(path, &t) != 0) {
        printf("%-60s  load failed: %s\n", path, piso_last_error());
        return;
    }
    double t1 = piso_time();
    int *ids, n;
    if (piso_tokenize(t, text, len, 0, &ids, &n) != 0) {
        printf("%-60s  tokenize failed: %s\n", path, piso_last_error());
        piso_tokenizer_free(t);
        return;
    }
    double t2 = piso_time();
    char *back = piso_detokenize(t, ids, n, 0);
    double t3 = piso_time();
    int same = strlen(back) == len && memcmp(back, text, len) == 0;
    printf("%-60s  load %6.3f s  encode %7.2f MB/s (%8d tokens, %9.0f tok/s)  decode %7.1f MB/s  round-trip %s\n",
           path, t1 - t0, len / 1e6 / (t2 - t1), n, n / (t2 - t1), len / 1e6 / (t3 - t2), same ? "ok" : "DIFFERS");
    free(back);
    free(ids);
    piso_tokenizer_free(t);
}

int main(int argc, char **argv) {
    const char *data = argc > 1 ? argv[1] : piso_data_dir("../shared");
    char path[4096];
    snprintf(path, sizeof path, "%s/data/wikitext-2/wiki.test.raw", data);
    char *text;
    size_t len;
    if (piso_read_file(path, &text, &len) != 0) {
        fprintf(stderr, "bench_tokenize: %s\n", piso_last_error());
        return 1;
    }
    printf("text: %s (%zu bytes)\n", path, len);
    static const char *rel[] = {"models/stories260K/tok512.bin", "models/stories260K-hf/tokenizer.json",
                                "tokenizers/llama2/tokenizer.json", "tokenizers/llama3/tokenizer.json",
                                "tokenizers/qwen3/tokenizer.json"};
    for (size_t i = 0; i < sizeof rel / sizeof *rel; i++) {
        snprintf(path, sizeof path, "%s/%s", data, rel[i]);
        bench(path, text, len);
    }
    for (int i = 2; i < argc; i++) bench(argv[i], text, len);
    free(text);
    return 0;
}
