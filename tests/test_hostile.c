/* Hostile input (issue 15): every bug found by trying piso as a hostile user, as a regression test.
 * Each case builds its bad input from the shared data (or by hand), runs the CLI or the library,
 * and checks the exit status and that the message names the file/field/option and the cause —
 * or, where the input is valid but large, that the work finishes within a generous time. Also:
 * outputs checked before any work, and SIGINT/SIGTERM removing temporary outputs. */
#include "harness.h"
#include "piso/common.h"
#include "piso/gguf.h"
#include "piso/gguf_write.h"
#include "piso/safetensors.h"
#include "piso/tokenizer.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <unistd.h>

static char dir[64];

static const char *tmp(const char *name) {
    static char bufs[8][512];
    static int k;
    char *b = bufs[k++ & 7];
    snprintf(b, 512, "%s/%s", dir, name);
    return b;
}

/* Runs `[env] piso ARGS`; stderr into *err (malloc'd), stdout discarded. Returns the exit status,
 * or 128 + signal when the process ended by a signal. */
static int piso_env(const char *env, const char *args, char **err, double *seconds) {
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "%s %s %s >/dev/null 2>%s/stderr.txt", env ? env : "", PISO_BIN, args, dir);
    double t0 = piso_time();
    int st = system(cmd);
    if (seconds) *seconds = piso_time() - t0;
    if (err) {
        size_t n;
        if (piso_read_file(tmp("stderr.txt"), err, &n) != 0) *err = strdup("");
    }
    if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return rc;
}
static int piso(const char *args, char **err) { return piso_env(NULL, args, err, NULL); }

static int has(const char *s, const char *want) { return s && strstr(s, want) != NULL; }

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(data, 1, n, f);
        fclose(f);
    }
}

static unsigned char *slurp(const char *path, size_t *n) {
    char *b = NULL;
    if (piso_read_file(path, &b, n) != 0) return NULL;
    return (unsigned char *)b;
}

/* Expects `piso ARGS` to fail with status rc and a stderr naming every string in want[]. */
static void expect_fail(const char *what, const char *env, const char *args, int rc, const char *const *want) {
    char *err = NULL;
    double secs;
    int got = piso_env(env, args, &err, &secs);
    CHECK(got == rc, "%s: exit %d, expected %d (stderr: %s)", what, got, rc, err ? err : "");
    for (int k = 0; want && want[k]; k++)
        CHECK(has(err, want[k]), "%s: message should contain '%s': %s", what, want[k], err ? err : "");
    CHECK(!has(err, "AddressSanitizer") && !has(err, "runtime error"), "%s: sanitizer report: %s", what, err);
    free(err);
}
#define WANT(...) ((const char *const[]){__VA_ARGS__, NULL})

/* ---- unbounded reads --------------------------------------------------------------------- */
static void test_read_limits(void) {
    const char *model = test_data("models/stories260K/stories260K.bin");
    char args[4096];
    snprintf(args, sizeof args, "perplexity --model %s --text /dev/zero", model);
    expect_fail("perplexity --text /dev/zero", "PISO_READ_LIMIT=1048576", args, 1, WANT("/dev/zero", "1 MiB"));
    snprintf(args, sizeof args, "tokenize --tokenizer %s --file /dev/zero",
             test_data("models/stories260K/tok512.bin"));
    expect_fail("tokenize --file /dev/zero", "PISO_READ_LIMIT=1048576", args, 1, WANT("/dev/zero", "too large"));
    /* a model directory whose config.json is a link to /dev/zero: the 64 MiB JSON limit, not 1 GiB */
    const char *md = tmp("zero_model");
    mkdir(md, 0755);
    CHECK(symlink("/dev/zero", tmp("zero_model/config.json")) == 0, "symlink");
    snprintf(args, sizeof args, "perplexity --model %s --text %s", md, model);
    expect_fail("config.json -> /dev/zero", NULL, args, 1, WANT("config.json", "64 MiB"));

    /* the library: a file of exactly the limit is read whole, one byte more is refused */
    unsigned char buf[1000];
    for (int i = 0; i < 1000; i++) buf[i] = (unsigned char)(i * 7);
    write_bytes(tmp("k.bin"), buf, sizeof buf);
    char *out = NULL;
    size_t n = 0;
    CHECK(piso_read_file_max(tmp("k.bin"), &out, &n, 1000) == 0 && n == 1000 && !memcmp(out, buf, 1000) && out[1000] == 0,
          "exactly at the limit: %s", piso_last_error());
    free(out);
    out = NULL;
    CHECK(piso_read_file_max(tmp("k.bin"), &out, &n, 999) != 0 && !out && has(piso_last_error(), "999 bytes"),
          "one past the limit: %s", piso_last_error());
    FILE *f = popen("head -c 5000 /dev/zero", "r"); /* a pipe: no size known in advance */
    (void)f;
    if (f) pclose(f);
    CHECK(piso_read_file_max("/dev/zero", &out, &n, 4096) != 0 && has(piso_last_error(), "4096 bytes"),
          "a device: %s", piso_last_error());
}

/* ---- the tokenizer beside it ------------------------------------------------------------- */
static void test_tokenizer_files(void) {
    const char *td = tmp("toks");
    mkdir(td, 0755);
    write_bytes(tmp("toks/tokenizer.json"), "", 0);
    unsigned char junk[100];
    for (int i = 0; i < 100; i++) junk[i] = (unsigned char)(i * 37 + 11);
    write_bytes(tmp("toks/tokenizer.bin"), junk, sizeof junk);
    char args[4096];
    /* two unparseable files side by side: used to recurse until the stack overflowed (Release 139) */
    snprintf(args, sizeof args, "tokenize --tokenizer %s --text hi", tmp("toks/tokenizer.bin"));
    expect_fail("junk tokenizer.bin beside 0-byte tokenizer.json", NULL, args, 1,
                WANT("toks/tokenizer.bin", "toks/tokenizer.json", "beside"));
    snprintf(args, sizeof args, "tokenize --tokenizer %s --text hi", tmp("toks/tokenizer.json"));
    expect_fail("0-byte tokenizer.json beside junk tokenizer.bin", NULL, args, 1, WANT("toks/tokenizer.json"));
    snprintf(args, sizeof args, "tokenize --tokenizer %s --text hi", td);
    expect_fail("directory of broken tokenizers", NULL, args, 1, WANT("toks/tokenizer.json"));
    /* a llama2.c checkpoint whose neighbours are both broken */
    size_t mn;
    unsigned char *mb = slurp(test_data("models/stories260K/stories260K.bin"), &mn);
    CHECK(mb != NULL, "read stories260K.bin");
    if (mb) write_bytes(tmp("toks/model.bin"), mb, mn);
    free(mb);
    snprintf(args, sizeof args, "perplexity --model %s --text %s", tmp("toks/model.bin"), tmp("toks/tokenizer.bin"));
    expect_fail("checkpoint beside broken tokenizers", NULL, args, 1, WANT("tokenizer"));

    /* a broken tok512.bin names its real reason (truncated), not just "not a tokenizer" */
    size_t tn;
    unsigned char *tb = slurp(test_data("models/stories260K/tok512.bin"), &tn);
    CHECK(tb && tn > 100, "read tok512.bin");
    if (tb) write_bytes(tmp("tok512.bin"), tb, tn - 3);
    snprintf(args, sizeof args, "tokenize --tokenizer %s --text hi", tmp("tok512.bin"));
    expect_fail("truncated tok512.bin", NULL, args, 1, WANT("tok512.bin", "truncated"));

    /* a tokenizer.json with a BOM and 40 leading spaces is still a tokenizer.json, giving the same ids */
    size_t jn;
    unsigned char *jb = slurp(test_data("models/stories260K-hf/tokenizer.json"), &jn);
    CHECK(jb != NULL, "read tokenizer.json");
    if (jb) {
        FILE *f = fopen(tmp("bom.json"), "wb");
        fputs("\xEF\xBB\xBF", f);
        for (int i = 0; i < 40; i++) fputc(' ', f);
        fwrite(jb, 1, jn, f);
        fclose(f);
        struct piso_tokenizer *a = NULL, *b = NULL;
        int ra = piso_tokenizer_load(test_data("models/stories260K-hf/tokenizer.json"), &a);
        int rb = piso_tokenizer_load(tmp("bom.json"), &b);
        CHECK(ra == 0 && rb == 0, "BOM + spaces tokenizer.json loads: %s", piso_last_error());
        if (a && b) {
            const char *text = "Once upon a time, a little dog ran home.";
            int *ia, *ib, na, nb;
            CHECK(piso_tokenize(a, text, strlen(text), 1, &ia, &na) == 0 &&
                      piso_tokenize(b, text, strlen(text), 1, &ib, &nb) == 0 && na == nb && na > 5 &&
                      !memcmp(ia, ib, sizeof(int) * (size_t)na),
                  "BOM tokenizer gives the same ids");
            free(ia), free(ib);
        }
        piso_tokenizer_free(a), piso_tokenizer_free(b);
    }
    free(jb);
    free(tb);
    /* /dev/null is not "no such file" */
    expect_fail("tokenizer /dev/null", NULL, "tokenize --tokenizer /dev/null --text hi", 1,
                WANT("/dev/null", "character device"));
    expect_fail("tokenizer missing", NULL, "tokenize --tokenizer /nonexistent/tok.json --text hi", 1,
                WANT("/nonexistent/tok.json", "no such"));
}

/* ---- imatrix ------------------------------------------------------------------------------ */
static void write_dat(const char *path, const char *name, int nval) {
    FILE *f = fopen(path, "wb");
    int32_t n = name ? 1 : 0;
    fwrite(&n, 4, 1, f);
    if (name) {
        int32_t len = (int32_t)strlen(name), ncall = 1, nv = nval;
        fwrite(&len, 4, 1, f);
        fwrite(name, 1, (size_t)len, f);
        fwrite(&ncall, 4, 1, f);
        fwrite(&nv, 4, 1, f);
        for (int j = 0; j < nval; j++) {
            float v = 1.0f + (float)j;
            fwrite(&v, 4, 1, f);
        }
    }
    fclose(f);
}

static void test_imatrix(void) {
    const char *model = test_data("models/stories260K/stories260K.bin");
    char args[4096];
    write_dat(tmp("zero.dat"), NULL, 0);
    snprintf(args, sizeof args, "quantize --model %s --type Q4_0 --imatrix %s --out %s", model, tmp("zero.dat"),
             tmp("im.gguf"));
    expect_fail("imatrix of zero entries", NULL, args, 1, WANT("zero.dat", "no entries"));
    /* a model GGUF as the imatrix */
    snprintf(args, sizeof args, "quantize --model %s --type F32 --out %s --quiet", model, tmp("model.gguf"));
    CHECK(piso(args, NULL) == 0, "write a model GGUF");
    snprintf(args, sizeof args, "quantize --model %s --type Q4_0 --imatrix %s --out %s", model, tmp("model.gguf"),
             tmp("im.gguf"));
    expect_fail("a model GGUF as the imatrix", NULL, args, 1, WANT("model.gguf", "no entries"));
    /* entries that match no weight */
    write_dat(tmp("other.dat"), "blk.0.not_a_weight.weight", 64);
    snprintf(args, sizeof args, "quantize --model %s --type Q4_0 --imatrix %s --out %s", model, tmp("other.dat"),
             tmp("im.gguf"));
    expect_fail("imatrix of another model", NULL, args, 1, WANT("blk.0.not_a_weight.weight", "another model"));
    CHECK(access(tmp("im.gguf"), F_OK) != 0, "no output after a refused imatrix");
    /* one matching entry is accepted */
    write_dat(tmp("one.dat"), "blk.0.attn_q.weight", 64);
    snprintf(args, sizeof args, "quantize --model %s --type Q4_0 --imatrix %s --out %s --quiet", model, tmp("one.dat"),
             tmp("im.gguf"));
    char *err = NULL;
    CHECK(piso(args, &err) == 0 && access(tmp("im.gguf"), F_OK) == 0, "imatrix with a matching entry: %s", err);
    free(err);
}

/* ---- caps and quadratic loaders ------------------------------------------------------------ */
static void test_scaling(void) {
    const char *model = test_data("models/stories260K/stories260K.bin");
    char args[4096], *err = NULL;
    /* -n 1000000 is capped at the context (512); stories260K stops on BOS earlier or at the cap */
    snprintf(args, sizeof args, "generate --model %s --prompt Once -n 1000000", model);
    double secs;
    int rc = piso_env(NULL, args, &err, &secs);
    CHECK(rc == 0 && has(err, "capped at 510"), "generate -n 1000000: exit %d: %s", rc, err);
    free(err);
    /* a prompt longer than the context is an error */
    char *prompt = malloc(8000);
    strcpy(prompt, "'");
    for (int i = 0; i < 700; i++) strcat(prompt, "cat ");
    strcat(prompt, "'");
    snprintf(args, sizeof args, "generate --model %s --prompt %s -n 4", model, prompt);
    free(prompt);
    expect_fail("prompt past the context", NULL, args, 1, WANT("context of 512"));

    /* a vocab GGUF of 200k tokens, every one a control token of growing length: loads in O(n log n) */
    enum { NV = 200000 };
    char **toks = malloc(sizeof(char *) * NV);
    float *scores = malloc(sizeof(float) * NV);
    int32_t *types = malloc(sizeof(int32_t) * NV);
    for (int i = 0; i < NV; i++) {
        char b[32];
        snprintf(b, sizeof b, "<c%d>", i);
        toks[i] = strdup(b);
        scores[i] = 0;
        types[i] = 3; /* control */
    }
    struct piso_gguf_writer *w = piso_gguf_writer_new();
    piso_gguf_set_str(w, "general.architecture", "llama");
    piso_gguf_set_str(w, "tokenizer.ggml.model", "llama");
    piso_gguf_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)toks, NV);
    piso_gguf_set_arr_f32(w, "tokenizer.ggml.scores", scores, NV);
    piso_gguf_set_arr_i32(w, "tokenizer.ggml.token_type", types, NV);
    CHECK(piso_gguf_writer_write(w, tmp("vocab.gguf")) == 0, "write vocab: %s", piso_last_error());
    piso_gguf_writer_free(w);
    for (int i = 0; i < NV; i++) free(toks[i]);
    free(toks), free(scores), free(types);
    struct piso_tokenizer *t = NULL;
    double t0 = piso_time();
    rc = piso_tokenizer_load(tmp("vocab.gguf"), &t);
    double dt = piso_time() - t0;
    CHECK(rc == 0 && dt < 10, "200k control tokens load in %.2f s (rc %d: %s)", dt, rc, piso_last_error());
    if (t) { /* longest first: "<c199999>" is matched whole, not "<c1999>" + "99>" */
        int *ids, n;
        CHECK(piso_tokenize(t, "<c199999>", 9, 0, &ids, &n) == 0 && n == 1 && ids[0] == 199999,
              "longest added token wins");
        if (n >= 1) free(ids);
    }
    piso_tokenizer_free(t);

    /* an HF index naming 200k different shards: de-duplicated in O(n log n), then the first missing
     * shard is named */
    const char *hd = tmp("index_model");
    mkdir(hd, 0755);
    size_t cn;
    unsigned char *cfg = slurp(test_data("models/stories260K-hf/config.json"), &cn);
    if (cfg) write_bytes(tmp("index_model/config.json"), cfg, cn);
    free(cfg);
    FILE *f = fopen(tmp("index_model/model.safetensors.index.json"), "wb");
    fputs("{\"weight_map\": {", f);
    for (int i = 0; i < NV; i++) fprintf(f, "%s\"t%d\": \"shard-%06d.safetensors\"", i ? ", " : "", i, i % (NV / 2));
    fputs("}}", f);
    fclose(f);
    snprintf(args, sizeof args, "perplexity --model %s --text %s", hd, model);
    err = NULL;
    rc = piso_env(NULL, args, &err, &secs);
    CHECK(rc == 1 && has(err, "shard-000000.safetensors") && secs < 20, "index of 200k names: exit %d in %.2f s: %s", rc,
          secs, err);
    free(err);
}

/* ---- files that do not describe themselves consistently ---------------------------------- */
static void patch_i32(const char *path, size_t off, int32_t v) {
    FILE *f = fopen(path, "r+b");
    fseek(f, (long)off, SEEK_SET);
    fwrite(&v, 4, 1, f);
    fclose(f);
}

/* minimal GGUF v3 with F32/F16 1-D tensors a and b: (type, ne, offset) each; data of data_bytes */
static void write_gguf2(const char *path, int ta, int64_t na, uint64_t oa, int tb, int64_t nb, uint64_t ob,
                        size_t data_bytes) {
    FILE *f = fopen(path, "wb");
    uint32_t v = 3;
    int64_t nt = 2, nkv = 0;
    fwrite("GGUF", 1, 4, f);
    fwrite(&v, 4, 1, f);
    fwrite(&nt, 8, 1, f);
    fwrite(&nkv, 8, 1, f);
    const char *names[2] = {"a", "b"};
    int types[2] = {ta, tb};
    int64_t ne[2] = {na, nb};
    uint64_t offs[2] = {oa, ob};
    for (int i = 0; i < 2; i++) {
        uint64_t len = 1;
        uint32_t nd = 1, ty = (uint32_t)types[i];
        fwrite(&len, 8, 1, f);
        fwrite(names[i], 1, 1, f);
        fwrite(&nd, 4, 1, f);
        fwrite(&ne[i], 8, 1, f);
        fwrite(&ty, 4, 1, f);
        fwrite(&offs[i], 8, 1, f);
    }
    long pos = ftell(f);
    while (pos % 32) fputc(0, f), pos++;
    for (size_t i = 0; i < data_bytes; i++) fputc(0, f);
    fclose(f);
}

static void expect_gguf_error(const char *what, const char *want) {
    struct piso_gguf g;
    int rc = piso_gguf_open(&g, tmp("t.gguf"));
    CHECK(rc != 0 && has(piso_last_error(), want) && has(piso_last_error(), "t.gguf"), "%s: rc %d, '%s'", what, rc,
          rc ? piso_last_error() : "");
    if (rc == 0) piso_gguf_close(&g);
}

static void test_consistency(void) {
    /* GGUF: a good layout opens; overlapping tensors, a type whose size does not match, an enlarged ne fail */
    write_gguf2(tmp("t.gguf"), 0, 32, 0, 0, 32, 128, 256);
    struct piso_gguf g;
    CHECK(piso_gguf_open(&g, tmp("t.gguf")) == 0, "good two-tensor GGUF: %s", piso_last_error());
    piso_gguf_close(&g);
    write_gguf2(tmp("t.gguf"), 0, 32, 0, 0, 32, 0, 256);
    expect_gguf_error("overlapping tensors", "overlap");
    write_gguf2(tmp("t.gguf"), 1, 32, 0, 0, 32, 128, 256); /* a says F16: 64 bytes, but b starts at 128 */
    expect_gguf_error("type smaller than its data", "does not match");
    write_gguf2(tmp("t.gguf"), 0, 64, 0, 0, 32, 128, 384); /* a's ne enlarged over b */
    expect_gguf_error("enlarged ne", "overlap");
    write_gguf2(tmp("t.gguf"), 0, 32, 0, 1, 32, 128, 256); /* b says F16 but 128 bytes follow */
    expect_gguf_error("last tensor's type smaller", "does not match");

    /* llama2.c header with n_layers or hidden_dim lowered */
    const char *model = test_data("models/stories260K/stories260K.bin");
    size_t mn;
    unsigned char *mb = slurp(model, &mn);
    CHECK(mb != NULL, "read model");
    if (!mb) return;
    int32_t h[7];
    memcpy(h, mb, sizeof h);
    char args[4096];
    const char *text = test_data("data/tinystories/tinystories_sample.cs336.txt");
    write_bytes(tmp("fewer_layers.bin"), mb, mn);
    patch_i32(tmp("fewer_layers.bin"), 8, h[2] - 1);
    snprintf(args, sizeof args, "perplexity --model %s --tokenizer %s --text %s", tmp("fewer_layers.bin"),
             test_data("models/stories260K/tok512.bin"), text);
    expect_fail("llama2.c n_layers lowered", NULL, args, 1, WANT("fewer_layers.bin", "does not match"));
    write_bytes(tmp("less_hidden.bin"), mb, mn);
    patch_i32(tmp("less_hidden.bin"), 4, h[1] - 4);
    snprintf(args, sizeof args, "perplexity --model %s --tokenizer %s --text %s", tmp("less_hidden.bin"),
             test_data("models/stories260K/tok512.bin"), text);
    expect_fail("llama2.c hidden_dim lowered", NULL, args, 1, WANT("less_hidden.bin", "does not match"));

    /* weights of 3e38: finite, but the logits are not; perplexity must not print -nan */
    float *w = (float *)(mb + 28);
    for (int i = 0; i < h[0] * 8; i++) w[i] = 3e38f;
    write_bytes(tmp("huge.bin"), mb, mn);
    snprintf(args, sizeof args, "perplexity --model %s --tokenizer %s --text %s", tmp("huge.bin"),
             test_data("models/stories260K/tok512.bin"), text);
    expect_fail("weights of 3e38", NULL, args, 1, WANT("not finite"));
    free(mb);

    /* a text file as --model */
    snprintf(args, sizeof args, "perplexity --model %s --text %s", text, text);
    expect_fail("text as model", NULL, args, 1, WANT("tinystories_sample.cs336.txt", "text, not a model"));

    /* GGUF block_count lowered: blk.N tensors past it are an error, not ignored */
    snprintf(args, sizeof args, "quantize --model %s --type F32 --out %s --quiet", model, tmp("bc.gguf"));
    CHECK(piso(args, NULL) == 0, "write GGUF");
    size_t gn;
    unsigned char *gb = slurp(tmp("bc.gguf"), &gn);
    const char *key = "llama.block_count";
    unsigned char *kp = gb ? memmem(gb, gn, key, strlen(key)) : NULL;
    CHECK(kp != NULL, "block_count key in the GGUF");
    if (kp) {
        uint32_t type, val;
        memcpy(&type, kp + strlen(key), 4);
        memcpy(&val, kp + strlen(key) + 4, 4);
        CHECK(type == 4 && val == (uint32_t)h[2], "block_count u32 = %u", val);
        val -= 1;
        memcpy(kp + strlen(key) + 4, &val, 4);
        write_bytes(tmp("bc.gguf"), gb, gn);
        snprintf(args, sizeof args, "perplexity --model %s --text %s", tmp("bc.gguf"), text);
        expect_fail("GGUF block_count lowered", NULL, args, 1, WANT("bc.gguf", "block_count"));
    }
    free(gb);

    /* HF num_hidden_layers lowered */
    const char *hd = tmp("hf_fewer");
    mkdir(hd, 0755);
    size_t cn;
    char *ctext = (char *)slurp(test_data("models/stories260K-hf/config.json"), &cn);
    cJSON *cfg = ctext ? cJSON_Parse(ctext) : NULL;
    free(ctext);
    cJSON *nl = cJSON_GetObjectItem(cfg, "num_hidden_layers");
    CHECK(cJSON_IsNumber(nl) && nl->valueint > 1, "num_hidden_layers in config.json");
    if (cJSON_IsNumber(nl)) {
        cJSON_SetNumberValue(nl, nl->valueint - 1);
        char *o = cJSON_Print(cfg);
        write_bytes(tmp("hf_fewer/config.json"), o, strlen(o));
        free(o);
        char src[4096];
        snprintf(src, sizeof src, "%s", test_data("models/stories260K-hf/model.safetensors"));
        CHECK(symlink(src, tmp("hf_fewer/model.safetensors")) == 0, "link");
        snprintf(src, sizeof src, "%s", test_data("models/stories260K-hf/tokenizer.json"));
        CHECK(symlink(src, tmp("hf_fewer/tokenizer.json")) == 0, "link");
        snprintf(args, sizeof args, "perplexity --model %s --text %s", hd, text);
        expect_fail("HF num_hidden_layers lowered", NULL, args, 1, WANT("num_hidden_layers", "model.layers."));
    }
    cJSON_Delete(cfg);
}

/* ---- options and messages ------------------------------------------------------------------ */
static void write_problem(const char *path, int N, int D) {
    float *W = malloc(sizeof(float) * (size_t)N * D), *H = calloc((size_t)D * D, sizeof(float));
    for (int i = 0; i < N * D; i++) W[i] = (float)((i * 37) % 17) / 17.0f - 0.5f;
    for (int i = 0; i < D; i++) H[i * D + i] = 1.0f + (float)i;
    struct piso_st_writer *w = piso_st_writer_new();
    int64_t sw[2] = {N, D}, sh[2] = {D, D};
    piso_st_writer_add_copy(w, "weight", PISO_DTYPE_F32, 2, sw, W);
    piso_st_writer_add_copy(w, "hessian", PISO_DTYPE_F32, 2, sh, H);
    CHECK(piso_st_writer_write(w, path) == 0, "write problem: %s", piso_last_error());
    piso_st_writer_free(w);
    free(W), free(H);
}

static void test_options_and_messages(void) {
    const char *model = test_data("models/stories260K/stories260K.bin");
    const char *text = test_data("data/tinystories/tinystories_sample.cs336.txt");
    char args[4096];
    snprintf(args, sizeof args, "perplexity --model %s --text %s --ctx 4294967312", model, text);
    expect_fail("--ctx 2^32+16", NULL, args, 2, WANT("--ctx", "too large"));
    const char *q[] = {"--nsamples 4294967297", "--seqlen 4294967297", "--damp nan", "--damp inf"};
    const char *qo[] = {"--nsamples", "--seqlen", "--damp", "--damp"};
    for (int i = 0; i < 4; i++) {
        snprintf(args, sizeof args, "quantize --model %s --format int3 --calib %s --out %s %s", model, text,
                 tmp("qo"), q[i]);
        expect_fail(q[i], NULL, args, 2, WANT(qo[i]));
    }
    snprintf(args, sizeof args, "imatrix --model %s --calib %s -o %s --chunks 4294967297", model, text, tmp("i.gguf"));
    expect_fail("--chunks 2^32+1", NULL, args, 2, WANT("--chunks", "too large"));
    write_problem(tmp("p.safetensors"), 4, 8);
    snprintf(args, sizeof args, "layer --problem %s --format int3 --group 1073741825", tmp("p.safetensors"));
    expect_fail("--group 2^30+1", NULL, args, 2, WANT("--group", "too large"));
    /* --group 3 does not divide D = 8: the message reads D before the problem is freed */
    snprintf(args, sizeof args, "layer --problem %s --format int3 --group 3", tmp("p.safetensors"));
    expect_fail("--group 3", NULL, args, 1, WANT("does not divide D = 8"));

    /* outputs refused before any work, naming the path */
    snprintf(args, sizeof args, "quantize --model %s --format int3 --calib %s --out ''", model, text);
    expect_fail("quantize --out ''", NULL, args, 1, WANT("''", "empty"));
    snprintf(args, sizeof args, "quantize --model %s --type Q8_0 --out ''", model);
    expect_fail("quantize --type --out ''", NULL, args, 1, WANT("empty"));
    snprintf(args, sizeof args, "quantize --model %s --type Q4_0 --calib %s --out %s/missing/x.gguf", model, text, dir);
    double secs;
    char *err = NULL;
    int rc = piso_env(NULL, args, &err, &secs);
    CHECK(rc == 1 && has(err, "missing/x.gguf") && has(err, "does not exist") && !has(err, "imatrix:"),
          "GGUF output in a missing directory, before the work: exit %d: %s", rc, err);
    free(err);
    snprintf(args, sizeof args, "quantize --model %s --format int3 --calib %s --out %s/missing/q", model, text, dir);
    expect_fail("HF output in a missing directory", NULL, args, 1, WANT("missing/q", "does not exist"));
    snprintf(args, sizeof args, "imatrix --model %s --calib %s -o ''", model, text);
    expect_fail("imatrix -o ''", NULL, args, 1, WANT("empty"));
    snprintf(args, sizeof args, "imatrix --model %s --calib %s -o %s/missing/i.gguf", model, text, dir);
    expect_fail("imatrix -o missing dir", NULL, args, 1, WANT("missing/i.gguf", "does not exist"));
    snprintf(args, sizeof args, "layer --problem %s --format int3 --out %s/missing/q.safetensors", tmp("p.safetensors"),
             dir);
    expect_fail("layer --out missing dir", NULL, args, 1, WANT("missing/q.safetensors", "does not exist"));
    snprintf(args, sizeof args, "layer --problem %s --format int3 --out %s", tmp("p.safetensors"), dir);
    expect_fail("layer --out a directory", NULL, args, 1, WANT("directory"));

    /* an empty text names the file */
    write_bytes(tmp("empty.txt"), "", 0);
    snprintf(args, sizeof args, "perplexity --model %s --text %s", model, tmp("empty.txt"));
    expect_fail("empty text", NULL, args, 1, WANT("empty.txt", "empty"));
    snprintf(args, sizeof args, "imatrix --model %s --calib %s -o %s", model, tmp("empty.txt"), tmp("e.gguf"));
    expect_fail("empty calibration text", NULL, args, 1, WANT("empty.txt", "empty"));
    snprintf(args, sizeof args, "quantize --model %s --format int4 --rounding rtn --scale absmax --eval %s --out %s", model,
             tmp("empty.txt"), tmp("e_hf"));
    expect_fail("empty --eval text", NULL, args, 1, WANT("empty.txt", "empty"));
    snprintf(args, sizeof args, "quantize --model %s --format int4 --calib %s --out %s", model, tmp("empty.txt"),
             tmp("e_hf"));
    expect_fail("empty --calib text", NULL, args, 1, WANT("empty.txt", "empty"));
}

/* ---- interrupted runs ----------------------------------------------------------------------- */
/* Names in dir that look like piso temporaries. */
static int leftovers(const char *d, char *first, size_t size) {
    DIR *dd = opendir(d);
    int n = 0;
    struct dirent *e;
    while (dd && (e = readdir(dd)))
        if (strstr(e->d_name, ".tmp.") || strstr(e->d_name, ".piso-tmp-") || strstr(e->d_name, ".piso-old-")) {
            if (!n) snprintf(first, size, "%s", e->d_name);
            n++;
        }
    if (dd) closedir(dd);
    return n;
}

static void expect_interrupted(const char *what, const char *sig, const char *args, const char *existing,
                               const char *out_dir) {
    static const char old[] = "an existing output that must survive\n";
    if (existing) write_bytes(existing, old, sizeof old - 1);
    char env[64], *err = NULL;
    snprintf(env, sizeof env, "PISO_TEST_SIGNAL=%s", sig);
    int rc = piso_env(env, args, &err, NULL);
    int want = !strncmp(sig, "TERM", 4) ? 128 + SIGTERM : 128 + SIGINT;
    CHECK(rc == want, "%s: exit %d, expected %d: %s", what, rc, want, err);
    CHECK(has(err, "interrupted") || has(err, "terminated"), "%s: message: %s", what, err);
    CHECK(has(err, "removed the temporary output"), "%s: says it removed the temporary: %s", what, err);
    free(err);
    char first[256] = "";
    CHECK(leftovers(out_dir, first, sizeof first) == 0, "%s: temporary '%s' left in %s", what, first, out_dir);
    if (existing) {
        size_t n;
        unsigned char *b = slurp(existing, &n);
        CHECK(b && n == sizeof old - 1 && !memcmp(b, old, n), "%s: the existing output was damaged", what);
        free(b);
    }
}

static void test_interrupts(void) {
    const char *model = test_data("models/stories260K/stories260K.bin");
    const char *calib = test_data("data/tinystories/TinyStories-valid.small30KB.txt");
    char od[512];
    snprintf(od, sizeof od, "%s", tmp("sig"));
    mkdir(od, 0755);
    char args[4096];
    snprintf(args, sizeof args, "quantize --model %s --type Q4_0 --out %s/q.gguf --quiet", model, od);
    expect_interrupted("GGUF quantize, SIGINT", "INT", args, tmp("sig/q.gguf"), od);
    expect_interrupted("GGUF quantize, SIGTERM", "TERM", args, tmp("sig/q.gguf"), od);
    /* HF: the temporary directory (1st registration) and a file inside it (2nd) */
    snprintf(args, sizeof args, "quantize --model %s --format int4 --rounding rtn --scale absmax --out %s/hf --quiet",
             model, od);
    expect_interrupted("HF quantize, in the directory", "INT:1", args, NULL, od);
    expect_interrupted("HF quantize, in a file", "TERM:2", args, NULL, od);
    CHECK(access(tmp("sig/hf"), F_OK) != 0, "HF quantize: no output directory after the interrupt");
    /* an existing model directory is kept when the replacement is interrupted */
    char *err = NULL;
    CHECK(piso(args, &err) == 0 && piso_file_exists(tmp("sig/hf/config.json")), "HF quantize: %s", err);
    free(err);
    size_t n0;
    unsigned char *before = slurp(tmp("sig/hf/model.safetensors"), &n0);
    snprintf(args, sizeof args, "quantize --model %s --format int3 --rounding rtn --scale absmax --out %s/hf --quiet",
             model, od);
    expect_interrupted("HF quantize over an existing model", "INT:3", args, NULL, od);
    size_t n1;
    unsigned char *after = slurp(tmp("sig/hf/model.safetensors"), &n1);
    CHECK(before && after && n0 == n1 && !memcmp(before, after, n0), "the existing model directory was damaged");
    free(before), free(after);
    snprintf(args, sizeof args, "imatrix --model %s --calib %s --ctx 64 --chunks 2 -o %s/im.gguf --quiet", model,
             calib, od);
    expect_interrupted("imatrix, SIGINT", "INT", args, tmp("sig/im.gguf"), od);
    write_problem(tmp("sig/p.safetensors"), 4, 8);
    snprintf(args, sizeof args, "layer --problem %s --format int3 --out %s/l.safetensors", tmp("sig/p.safetensors"), od);
    expect_interrupted("layer, SIGTERM", "TERM", args, tmp("sig/l.safetensors"), od);

    /* a real signal at an arbitrary moment: whatever the moment, no temporary is left and the output
     * is either the old file or a complete new one */
    for (int k = 0; k < 3; k++) {
        static const char old[] = "old\n";
        write_bytes(tmp("sig/r.gguf"), old, 4);
        char cmd[8192];
        snprintf(cmd, sizeof cmd, "timeout -s INT 0.%d %s quantize --model %s --type Q4_0 --calib %s --ctx 64 --chunks 4 "
                 "--out %s/r.gguf --quiet 2>/dev/null", 2 + 3 * k, PISO_BIN, model, calib, od);
        int st = system(cmd);
        (void)st;
        char first[256] = "";
        CHECK(leftovers(od, first, sizeof first) == 0, "timed SIGINT %d: temporary '%s' left", k, first);
        size_t n;
        unsigned char *b = slurp(tmp("sig/r.gguf"), &n);
        int intact = b && n == 4 && !memcmp(b, old, 4);
        struct piso_gguf g;
        int complete = !intact && piso_gguf_open(&g, tmp("sig/r.gguf")) == 0;
        if (complete) piso_gguf_close(&g);
        CHECK(intact || complete, "timed SIGINT %d: the output is neither the old file nor a complete GGUF", k);
        free(b);
    }
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/piso_hostile_%d", (int)getpid());
    mkdir(dir, 0755);
    test_read_limits();
    test_tokenizer_files();
    test_imatrix();
    test_scaling();
    test_consistency();
    test_options_and_messages();
    test_interrupts();
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
    return test_finish();
}
