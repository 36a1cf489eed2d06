/* Tokenizers against llama.cpp's published reference vectors: every ggml-vocab-*.gguf.inp/.out
 * pair in tokenizers/llamacpp-vocab (test strings separated by "\n__ggml_vocab_test__\n", one
 * line of expected ids per string, tokenized without BOS and without parsing special tokens, as
 * llama.cpp's test-tokenizer-0 does), each with its GGUF vocab; the Llama-3 vectors also against
 * tokenizers/llama3/tokenizer.json. Each encoding must also decode back to its input. Reports
 * per-file pass counts. Vocabularies of a model piso does not implement are skipped with a notice. */
#include "harness.h"
#include "piso/tokenizer.h"

#include <dirent.h>

static char *slurp(const char *path, size_t *n) {
    char *s = NULL;
    if (piso_read_file(path, &s, n) != 0) return NULL;
    return s;
}

static void print_escaped(const char *s, size_t n) {
    for (size_t i = 0; i < n && i < 80; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') fputs("\\n", stderr);
        else if (c == '\t') fputs("\\t", stderr);
        else fputc(c, stderr);
    }
}

/* A copy made in text mode has every byte >= 0x80 replaced by U+FFFD (EF BF BD). */
static int is_damaged(const char *path) {
    FILE *f = fopen(path, "rb");
    char head[4096];
    size_t hn = f ? fread(head, 1, sizeof head, f) : 0;
    if (f) fclose(f);
    return memmem(head, hn, "\xef\xbf\xbd", 3) != NULL;
}

/* Returns the number of failing cases (or -1 if the files could not be read). */
static int run_pair(const char *label, const char *tok_path, const char *inp_path, const char *out_path) {
    size_t ni, no;
    char *inp = slurp(inp_path, &ni), *out = slurp(out_path, &no);
    if (!inp || !out) {
        CHECK(0, "cannot read %s / %s", inp_path, out_path);
        free(inp);
        free(out);
        return -1;
    }
    struct piso_tokenizer *t;
    if (piso_tokenizer_load(tok_path, &t) != 0) {
        /* a vocab whose bytes >= 0x80 were replaced by U+FFFD (a text-mode copy) cannot be read */
        if (is_damaged(tok_path)) {
            fprintf(stderr, "SKIP %s: %s is corrupted (bytes >= 0x80 replaced by U+FFFD): %s\n"
                            "  (intact copies: llama.cpp's models/ folder; point PISO_LLAMACPP_VOCAB at one)\n",
                    label, tok_path, piso_last_error());
            CHECK(!test_in_ci(), "%s: corrupted test data under CI", label);
            free(inp);
            free(out);
            return -1;
        }
        if (strstr(piso_last_error(), "not supported") || strstr(piso_last_error(), "not a pre-tokenizer piso knows")) {
            printf("%-34s skipped: %s\n", label, piso_last_error());
            free(inp);
            free(out);
            return -1;
        }
        CHECK(0, "%s: load %s: %s", label, tok_path, piso_last_error());
        free(inp);
        free(out);
        return -1;
    }
    piso_tokenizer_set_parse_special(t, 0);
    int lossy = piso_tokenizer_vocab(t)->kind == PISO_TOK_WPM;
    const char *sep = "\n__ggml_vocab_test__\n";
    size_t seplen = strlen(sep);
    char *line = out, *ip = inp, *iend = inp + ni;
    int cases = 0, pass = 0, roundtrip_fail = 0;
    while (ip < iend && *line) {
        char *next = memmem(ip, (size_t)(iend - ip), sep, seplen);
        size_t len = next ? (size_t)(next - ip) : (size_t)(iend - ip);
        char *eol = strchr(line, '\n');
        if (eol) *eol = 0;
        int expect[1024], ne = 0;
        for (char *p = line; *p && ne < 1024;) {
            char *e;
            long v = strtol(p, &e, 10);
            if (e == p) break;
            expect[ne++] = (int)v;
            p = e;
        }
        int *ids = NULL, n = 0;
        int ok = piso_tokenize(t, ip, len, 0, &ids, &n) == 0 && n == ne &&
                 (n == 0 || memcmp(ids, expect, (size_t)n * sizeof(int)) == 0);
        cases++;
        if (ok) {
            pass++;
            if (lossy) goto next; /* WordPiece lowercases, drops accents and spaces */
            char *back = piso_detokenize(t, ids, n, 0);
            if (strlen(back) != len || memcmp(back, ip, len) != 0) {
                roundtrip_fail++;
                fprintf(stderr, "  %s: decode does not round-trip '", label);
                print_escaped(ip, len);
                fprintf(stderr, "' -> '");
                print_escaped(back, strlen(back));
                fprintf(stderr, "'\n");
            }
            free(back);
        next:;
        } else if (cases - pass <= 3) {
            fprintf(stderr, "  %s case %d '", label, cases);
            print_escaped(ip, len);
            fprintf(stderr, "'\n    expected:");
            for (int k = 0; k < ne; k++) fprintf(stderr, " %d", expect[k]);
            fprintf(stderr, "\n    got:     ");
            for (int k = 0; k < n; k++) fprintf(stderr, " %d", ids[k]);
            fprintf(stderr, "\n");
        }
        free(ids);
        if (!next) break;
        ip = next + seplen;
        line = eol ? eol + 1 : line + strlen(line);
    }
    if (lossy)
        printf("%-34s %2d/%2d cases pass, decode not checked (WordPiece is lossy)  (%s)\n", label, pass, cases,
               tok_path);
    else
        printf("%-34s %2d/%2d cases pass, %d decode round-trip failures  (%s)\n", label, pass, cases,
               roundtrip_fail, tok_path);
    CHECK(cases >= 40 && pass == cases, "%s: %d of %d cases fail", label, cases - pass, cases);
    CHECK(roundtrip_fail == 0, "%s: %d decodes do not round-trip", label, roundtrip_fail);
    piso_tokenizer_free(t);
    free(inp);
    free(out);
    return cases - pass;
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Runs every .inp/.out pair of one folder. `fallback` (may be NULL) is a second folder holding
 * intact copies of damaged vocab files; a damaged file with an intact copy there is tested from it. */
static int run_dir(const char *dir, const char *fallback) {
    DIR *d = opendir(dir);
    CHECK(d != NULL, "opendir %s", dir);
    if (!d) return 0;
    char *names[256];
    int nn = 0;
    struct dirent *e;
    while ((e = readdir(d)) && nn < 256) {
        size_t l = strlen(e->d_name);
        if (l > 9 && !strcmp(e->d_name + l - 9, ".gguf.inp")) names[nn++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)nn, sizeof *names, cmp_names);
    int files = 0;
    for (int i = 0; i < nn; i++) {
        char base[512], inp[1024], out[1024], gguf[1024], alt[1024];
        snprintf(base, sizeof base, "%.*s", (int)(strlen(names[i]) - 4), names[i]); /* ggml-vocab-X.gguf */
        snprintf(inp, sizeof inp, "%s/%s.inp", dir, base);
        snprintf(out, sizeof out, "%s/%s.out", dir, base);
        snprintf(gguf, sizeof gguf, "%s/%s", dir, base);
        if (!strcmp(base, "ggml-vocab-llama-bpe.gguf")) {
            run_pair("llama-bpe vs llama3/tokenizer.json", test_data("tokenizers/llama3/tokenizer.json"), inp, out);
            files++;
        }
        if (!strcmp(base, "ggml-vocab-qwen2.gguf")) { /* Qwen3 kept Qwen2's vocabulary and pre-tokenizer */
            run_pair("qwen2 vs qwen3/tokenizer.json", test_data("tokenizers/qwen3/tokenizer.json"), inp, out);
            files++;
        }
        if (!piso_file_exists(gguf)) {
            printf("%-34s skipped: no %s beside the .inp/.out\n", base, base);
            continue;
        }
        if (fallback) {
            snprintf(alt, sizeof alt, "%s/%s", fallback, base);
            if (is_damaged(gguf) && piso_file_exists(alt)) {
                printf("%-34s damaged in %s: tested from the intact copy in %s\n", base, dir, fallback);
                continue;
            }
        }
        run_pair(base, gguf, inp, out);
        files++;
    }
    for (int i = 0; i < nn; i++) free(names[i]);
    return files;
}

int main(void) {
    /* The shared folder, then llama.cpp's own models/ folder (PISO_LLAMACPP_VOCAB, default
     * .tools/llamacpp-vocab extracted by scripts/setup-llamacpp-vocab.sh from the npm package). */
    const char *shared = test_data("tokenizers/llamacpp-vocab");
    const char *env = getenv("PISO_LLAMACPP_VOCAB");
    const char *intact = env && *env ? env : PISO_SOURCE_DIR "/.tools/llamacpp-vocab";
    int have_intact = piso_is_dir(intact);
    if (!have_intact)
        fprintf(stderr, "note: no intact llama.cpp vocab folder at %s (scripts/setup-llamacpp-vocab.sh)\n", intact);
    int files = run_dir(shared, have_intact ? intact : NULL);
    if (have_intact) files += run_dir(intact, NULL);
    CHECK(files > 0, "no vocab test pairs found in %s", shared);
    return test_finish();
}
