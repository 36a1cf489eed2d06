/* GGUF reader: a file built byte by byte here (independent of the library) reads back exactly;
 * hostile variants get clear errors, never a crash; the real llama.cpp vocab-only GGUFs give the
 * tokenizer facts published with them (Llama-2 SPM: 32000 tokens, <unk> <s> </s>; ...). */
#include "harness.h"
#include "piso/gguf.h"

#include <stdint.h>
#include <unistd.h>

/* ---- a tiny byte builder ----------------------------------------------------------------- */
struct buf {
    uint8_t *p;
    size_t n, cap;
};
static void put(struct buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_u32(struct buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(struct buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(struct buf *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void pad_to(struct buf *b, size_t align) {
    while (b->n % align) put(b, "", 1);
}

/* Offsets of fields that the hostile variants patch. */
struct layout {
    size_t n_kv_at, key0_len_at, tensor_ndims_at[4], tensor_type_at[4], tensor_off_at[4], data_at;
};

/* A valid GGUF v3: 6 keys, 4 tensors (F32 [4,2], Q8_0 [32], F16 [2], BF16 [2]), alignment 32. */
static struct buf build(struct layout *L) {
    struct buf b = {0};
    put(&b, "GGUF", 4);
    put_u32(&b, 3);
    put_u64(&b, 4); /* n_tensors */
    L->n_kv_at = b.n;
    put_u64(&b, 6); /* n_kv */
    L->key0_len_at = b.n;
    put_str(&b, "general.architecture");
    put_u32(&b, 8);
    put_str(&b, "llama");
    put_str(&b, "llama.block_count");
    put_u32(&b, 4);
    put_u32(&b, 3);
    put_str(&b, "llama.attention.layer_norm_rms_epsilon");
    put_u32(&b, 6);
    float eps = 1e-5f;
    put(&b, &eps, 4);
    put_str(&b, "some.i32");
    put_u32(&b, 5);
    int32_t neg = -7;
    put(&b, &neg, 4);
    put_str(&b, "tokenizer.ggml.tokens");
    put_u32(&b, 9);
    put_u32(&b, 8);
    put_u64(&b, 3);
    put_str(&b, "<s>");
    put_str(&b, "");
    put_str(&b, "hello");
    put_str(&b, "tokenizer.ggml.add_bos_token");
    put_u32(&b, 7);
    put(&b, "\1", 1);
    /* tensor infos: name, n_dims, ne..., type, offset */
    const char *names[4] = {"w", "q", "h", "b"};
    int nd[4] = {2, 1, 1, 1}, types[4] = {0, 8, 1, 30};
    int64_t ne[4][2] = {{4, 2}, {32, 1}, {2, 1}, {2, 1}};
    uint64_t off[4] = {0, 32, 96, 128};
    for (int t = 0; t < 4; t++) {
        put_str(&b, names[t]);
        L->tensor_ndims_at[t] = b.n;
        put_u32(&b, (uint32_t)nd[t]);
        for (int d = 0; d < nd[t]; d++) put_u64(&b, (uint64_t)ne[t][d]);
        L->tensor_type_at[t] = b.n;
        put_u32(&b, (uint32_t)types[t]);
        L->tensor_off_at[t] = b.n;
        put_u64(&b, off[t]);
    }
    pad_to(&b, 32);
    L->data_at = b.n;
    for (int i = 0; i < 8; i++) { /* w = 0, 1.5, 3, ... */
        float v = 1.5f * (float)i;
        put(&b, &v, 4);
    }
    pad_to(&b, 32);
    uint16_t half_d = 0x3800; /* fp16 0.5 */
    put(&b, &half_d, 2);
    for (int j = 0; j < 32; j++) {
        int8_t q = (int8_t)(j - 16);
        put(&b, &q, 1);
    }
    pad_to(&b, 32);
    uint16_t h2[2] = {0x3c00, 0xc000}; /* fp16 1, -2 */
    put(&b, h2, 4);
    pad_to(&b, 32);
    uint16_t b2[2] = {0x3f80, 0xc040}; /* bf16 1, -3 */
    put(&b, b2, 4);
    return b;
}

static const char *tmp_path(void) {
    static char p[64];
    snprintf(p, sizeof p, "/tmp/piso_test_gguf_%d.gguf", (int)getpid());
    return p;
}

static void write_file(const void *d, size_t n) {
    FILE *f = fopen(tmp_path(), "wb");
    fwrite(d, 1, n, f);
    fclose(f);
}

static void test_valid(void) {
    struct layout L;
    struct buf b = build(&L);
    write_file(b.p, b.n);
    struct piso_gguf g;
    int rc = piso_gguf_open(&g, tmp_path());
    CHECK(rc == 0, "open valid file: %s", piso_last_error());
    if (rc == 0) {
        CHECK(g.version == 3 && g.n_kv == 6 && g.n_tensors == 4 && g.alignment == 32, "header");
        char *arch = piso_gguf_get_str(&g, "general.architecture");
        CHECK(arch && !strcmp(arch, "llama"), "architecture");
        free(arch);
        uint32_t u;
        CHECK(piso_gguf_get_u32(&g, "llama.block_count", &u) == 0 && u == 3, "block_count");
        CHECK(piso_gguf_get_u32(&g, "some.i32", &u) != 0, "negative i32 must not convert to u32");
        CHECK(piso_gguf_get_u32(&g, "missing.key", &u) != 0 && strstr(piso_last_error(), "missing.key"),
              "missing key names the key: %s", piso_last_error());
        CHECK(piso_gguf_get_u32(&g, "general.architecture", &u) != 0, "string is not u32");
        float f;
        CHECK(piso_gguf_get_f32(&g, "llama.attention.layer_norm_rms_epsilon", &f) == 0 && f == 1e-5f, "eps");
        int bo;
        CHECK(piso_gguf_get_bool(&g, "tokenizer.ggml.add_bos_token", &bo) == 0 && bo == 1, "bool");
        const struct piso_gguf_kv *tok = piso_gguf_find(&g, "tokenizer.ggml.tokens");
        CHECK(tok && tok->type == GGUF_VT_ARRAY && tok->arr_type == GGUF_VT_STRING && tok->arr_n == 3, "tokens");
        if (tok) {
            char *s0 = piso_gguf_arr_str(tok, 0), *s1 = piso_gguf_arr_str(tok, 1), *s2 = piso_gguf_arr_str(tok, 2);
            CHECK(s0 && !strcmp(s0, "<s>") && s1 && !strcmp(s1, "") && s2 && !strcmp(s2, "hello"), "token strings");
            CHECK(piso_gguf_arr_str(tok, 3) == NULL, "out of range");
            free(s0), free(s1), free(s2);
        }
        const struct piso_gguf_tensor *w = piso_gguf_find_tensor(&g, "w");
        CHECK(w && w->n_dims == 2 && w->ne[0] == 4 && w->ne[1] == 2 && w->nbytes == 32, "tensor w");
        float out[32];
        if (w && piso_gguf_tensor_to_f32(&g, w, out) == 0) CHECK(out[5] == 7.5f && out[7] == 10.5f, "w data");
        const struct piso_gguf_tensor *q = piso_gguf_find_tensor(&g, "q");
        CHECK(q && q->nbytes == 34, "q8_0 size");
        if (q && piso_gguf_tensor_to_f32(&g, q, out) == 0)
            CHECK(out[0] == -8.0f && out[31] == 7.5f && out[16] == 0.0f, "q8_0 data: %g %g", out[0], out[31]);
        const struct piso_gguf_tensor *h = piso_gguf_find_tensor(&g, "h"), *bt = piso_gguf_find_tensor(&g, "b");
        if (h && piso_gguf_tensor_to_f32(&g, h, out) == 0) CHECK(out[0] == 1.0f && out[1] == -2.0f, "f16 data");
        if (bt && piso_gguf_tensor_to_f32(&g, bt, out) == 0) CHECK(out[0] == 1.0f && out[1] == -3.0f, "bf16 data");
        CHECK(piso_gguf_find_tensor(&g, "nope") == NULL, "absent tensor");
        piso_gguf_close(&g);
    }
    free(b.p);
}

/* Writes the patched bytes, expects open to fail with a message containing `want`. */
static void expect_fail(const uint8_t *d, size_t n, const char *want, const char *what) {
    write_file(d, n);
    struct piso_gguf g;
    int rc = piso_gguf_open(&g, tmp_path());
    CHECK(rc != 0, "%s: hostile file was accepted", what);
    if (rc != 0) {
        const char *e = piso_last_error();
        CHECK(strstr(e, tmp_path()) && strstr(e, want), "%s: message '%s' should name the file and say '%s'", what,
              e, want);
    } else {
        piso_gguf_close(&g);
    }
}

static void patch_u32(uint8_t *d, size_t at, uint32_t v) { memcpy(d + at, &v, 4); }
static void patch_u64(uint8_t *d, size_t at, uint64_t v) { memcpy(d + at, &v, 8); }

static void test_hostile(void) {
    struct layout L;
    struct buf b = build(&L);
    uint8_t *d = malloc(b.n);
#define RESET() memcpy(d, b.p, b.n)
    RESET();
    d[0] = 'X';
    expect_fail(d, b.n, "magic", "bad magic");
    RESET();
    patch_u32(d, 4, 1);
    expect_fail(d, b.n, "version 1", "version 1");
    RESET();
    patch_u32(d, 4, 7);
    expect_fail(d, b.n, "version 7", "future version");
    RESET();
    patch_u64(d, L.n_kv_at, (uint64_t)1 << 60);
    expect_fail(d, b.n, "n_kv", "absurd n_kv");
    RESET();
    patch_u64(d, L.n_kv_at - 8, (uint64_t)-5);
    expect_fail(d, b.n, "n_tensors", "negative n_tensors");
    RESET();
    patch_u64(d, L.key0_len_at, 1u << 30);
    expect_fail(d, b.n, "past the end", "string length beyond EOF");
    RESET();
    patch_u32(d, L.tensor_ndims_at[1], 5);
    expect_fail(d, b.n, "n_dims = 5", "n_dims > 4");
    RESET();
    patch_u64(d, L.tensor_off_at[3], 1u << 20);
    expect_fail(d, b.n, "outside", "tensor offset out of range");
    RESET();
    patch_u64(d, L.tensor_off_at[2], 97);
    expect_fail(d, b.n, "alignment", "misaligned offset");
    RESET();
    patch_u32(d, L.tensor_type_at[0], 4); /* removed type id */
    expect_fail(d, b.n, "unknown ggml type", "unknown type");
    RESET();
    patch_u32(d, L.tensor_type_at[2], 8); /* q8_0 with ne[0] = 2 */
    expect_fail(d, b.n, "block size", "partial block");
    /* duplicate keys, duplicate tensor names */
    {
        struct buf x = {0};
        put(&x, "GGUF", 4), put_u32(&x, 3), put_u64(&x, 0), put_u64(&x, 2);
        put_str(&x, "a.key"), put_u32(&x, 4), put_u32(&x, 1);
        put_str(&x, "a.key"), put_u32(&x, 4), put_u32(&x, 2);
        expect_fail(x.p, x.n, "'a.key' appears more than once", "duplicate key");
        x.n = 0;
        put(&x, "GGUF", 4), put_u32(&x, 3), put_u64(&x, 2), put_u64(&x, 0);
        for (int t = 0; t < 2; t++) put_str(&x, "t"), put_u32(&x, 1), put_u64(&x, 1), put_u32(&x, 0), put_u64(&x, (uint64_t)t * 32);
        pad_to(&x, 32);
        put(&x, "12345678901234567890123456789012345678", 36);
        expect_fail(x.p, x.n, "'t' appears more than once", "duplicate tensor");
        free(x.p);
    }
    /* truncations at many points: header, keys, tensor infos, data */
    size_t cuts[] = {0, 3, 10, 20, L.key0_len_at + 4, L.key0_len_at + 20, L.tensor_ndims_at[0], L.data_at - 1,
                     L.data_at + 10, b.n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        RESET();
        write_file(d, cuts[i]);
        struct piso_gguf g;
        int rc = piso_gguf_open(&g, tmp_path());
        CHECK(rc != 0, "truncated at %zu accepted", cuts[i]);
        if (rc == 0) piso_gguf_close(&g);
        else CHECK(strstr(piso_last_error(), tmp_path()) != NULL, "truncation message names the file");
    }
    /* every single-byte corruption of the header region: must never crash (result may be ok) */
    for (size_t at = 0; at < L.data_at; at += 3) {
        RESET();
        d[at] ^= 0xA5;
        write_file(d, b.n);
        struct piso_gguf g;
        if (piso_gguf_open(&g, tmp_path()) == 0) piso_gguf_close(&g);
    }
    CHECK(1, "byte flips survived");
    free(d);
    free(b.p);
    unlink(tmp_path());
#undef RESET
}

/* The real vocab-only files. A file that was once decoded as text has every invalid UTF-8 byte
 * replaced by U+FFFD (EF BF BD) and is then valid UTF-8 as a whole: such a copy is damaged, not
 * a GGUF, and must be rejected cleanly; the published facts are checked on intact copies. */
static int looks_text_mangled(const char *path) {
    char *s;
    size_t n;
    if (piso_read_file(path, &s, &n) != 0) return 0;
    int has_fffd = memmem(s, n, "\xef\xbf\xbd", 3) != NULL;
    free(s);
    return has_fffd;
}

struct vocab_fact {
    const char *file, *model, *first3[3];
    uint64_t n_tokens;
    uint32_t bos, eos;
};

static void test_real(void) {
    static const struct vocab_fact facts[] = {
        {"ggml-vocab-llama-spm.gguf", "llama", {"<unk>", "<s>", "</s>"}, 32000, 1, 2},
        {"ggml-vocab-phi-3.gguf", "llama", {"<unk>", "<s>", "</s>"}, 32064, 1, 32000},
        {"ggml-vocab-starcoder.gguf", "gpt2", {"<|endoftext|>", "<fim_prefix>", "<fim_middle>"}, 49152, 0, 0},
    };
    int checked = 0;
    for (size_t i = 0; i < sizeof facts / sizeof facts[0]; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "tokenizers/llamacpp-vocab/%s", facts[i].file);
        const char *path = test_data(rel);
        struct piso_gguf g;
        int rc = piso_gguf_open(&g, path);
        if (rc != 0) {
            int mangled = looks_text_mangled(path);
            CHECK(mangled, "%s: intact file rejected: %s", path, piso_last_error());
            CHECK(strstr(piso_last_error(), path) != NULL, "error names the file");
            if (!mangled) continue;
            fprintf(stderr, "NOTE: %s is damaged (bytes replaced by U+FFFD); rejected cleanly: %s\n", path,
                    piso_last_error());
            /* the intact copy from llama.cpp's own models/ folder (scripts/setup-llamacpp-vocab.sh) */
            char intact[1024];
            snprintf(intact, sizeof intact, "%s/.tools/llamacpp-vocab/%s", PISO_SOURCE_DIR, facts[i].file);
            if (!piso_file_exists(intact)) continue;
            CHECK(piso_gguf_open(&g, intact) == 0, "%s: %s", intact, piso_last_error());
        }
        checked++;
        char *model = piso_gguf_get_str(&g, "tokenizer.ggml.model");
        CHECK(model && !strcmp(model, facts[i].model), "%s: model %s", facts[i].file, model ? model : "(null)");
        free(model);
        const struct piso_gguf_kv *tok = piso_gguf_find(&g, "tokenizer.ggml.tokens");
        CHECK(tok && tok->arr_type == GGUF_VT_STRING && tok->arr_n == facts[i].n_tokens, "%s: token count",
              facts[i].file);
        for (int j = 0; tok && j < 3; j++) {
            char *s = piso_gguf_arr_str(tok, (uint64_t)j);
            CHECK(s && !strcmp(s, facts[i].first3[j]), "%s: token %d = %s", facts[i].file, j, s ? s : "(null)");
            free(s);
        }
        uint32_t bos = 99, eos = 99;
        CHECK(piso_gguf_get_u32(&g, "tokenizer.ggml.bos_token_id", &bos) == 0 && bos == facts[i].bos, "bos");
        CHECK(piso_gguf_get_u32(&g, "tokenizer.ggml.eos_token_id", &eos) == 0 && eos == facts[i].eos, "eos");
        CHECK(g.n_tensors == 0, "vocab-only files have no tensors");
        piso_gguf_close(&g);
    }
    if (!checked) fprintf(stderr, "NOTE: no intact vocab GGUF found; published facts not checked\n");
    CHECK(checked > 0 || !test_in_ci(), "under CI the published facts must be checked on intact copies");
}

static void test_types(void) {
    int t = -1;
    CHECK(piso_ggml_type_from_name("Q4_K", &t) == 0 && t == GGML_T_Q4_K, "Q4_K");
    CHECK(piso_ggml_type_from_name("f16", &t) == 0 && t == GGML_T_F16, "f16");
    CHECK(piso_ggml_type_from_name("IQ4_NL", &t) == 0 && t == GGML_T_IQ4_NL, "iq4_nl");
    CHECK(piso_ggml_type_from_name("q7_0", &t) != 0, "unknown name");
    /* row sizes from the block table of llamacpp-formats.md §2 */
    CHECK(piso_ggml_row_size(GGML_T_Q4_K, 4096) == 16 * 144, "q4_K row");
    CHECK(piso_ggml_row_size(GGML_T_Q8_0, 64) == 68, "q8_0 row");
    CHECK(piso_ggml_row_size(GGML_T_F32, 10) == 40, "f32 row");
    CHECK(piso_ggml_row_size(GGML_T_Q6_K, 256) == 210, "q6_K row");
    CHECK(piso_ggml_row_size(GGML_T_MXFP4, 32) == 17, "mxfp4 row");
    CHECK(piso_ggml_traits(4) == NULL && piso_ggml_traits(-1) == NULL && piso_ggml_traits(999) == NULL, "unknown ids");
}

int main(void) {
    test_types();
    test_valid();
    test_hostile();
    test_real();
    return test_finish();
}
