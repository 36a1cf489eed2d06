/* GGUF vocabularies built by hand in the test: hand-worked tokenizations that pin down the merge
 * orders (SPM: highest piece score first, leftmost on ties; gpt2: lowest merge rank first), byte
 * fallback, special-token splitting, the regex pre-tokenizer, and clear errors for bad metadata. */
#include "harness.h"
#include "piso/gguf.h"
#include "piso/tokenizer.h"

#include <unistd.h>

/* ---- a minimal GGUF v3 writer (metadata only, no tensors) ---------------------------------- */
struct gb {
    unsigned char *p;
    size_t n, cap;
    int n_kv;
};

static void gb_put(struct gb *b, const void *s, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 256;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}
static void gb_u32(struct gb *b, uint32_t v) { gb_put(b, &v, 4); }
static void gb_u64(struct gb *b, uint64_t v) { gb_put(b, &v, 8); }
static void gb_str(struct gb *b, const char *s) {
    gb_u64(b, strlen(s));
    gb_put(b, s, strlen(s));
}
static void kv_str(struct gb *b, const char *k, const char *v) {
    gb_str(b, k);
    gb_u32(b, 8);
    gb_str(b, v);
    b->n_kv++;
}
static void kv_u32(struct gb *b, const char *k, uint32_t v) {
    gb_str(b, k);
    gb_u32(b, 4);
    gb_u32(b, v);
    b->n_kv++;
}
static void kv_strs(struct gb *b, const char *k, const char **v, int n) {
    gb_str(b, k);
    gb_u32(b, 9);
    gb_u32(b, 8);
    gb_u64(b, (uint64_t)n);
    for (int i = 0; i < n; i++) gb_str(b, v[i]);
    b->n_kv++;
}
static void kv_arr32(struct gb *b, const char *k, uint32_t type, const void *v, int n) {
    gb_str(b, k);
    gb_u32(b, 9);
    gb_u32(b, type);
    gb_u64(b, (uint64_t)n);
    gb_put(b, v, 4 * (size_t)n);
    b->n_kv++;
}

static char g_dir[64];

/* Writes header + kvs to a file and loads it as a tokenizer (NULL on failure). */
static struct piso_tokenizer *gb_load(struct gb *b, const char *name) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s.gguf", g_dir, name);
    FILE *f = fopen(path, "wb");
    uint32_t hdr[2] = {0x46554747u, 3};
    uint64_t counts[2] = {0, (uint64_t)b->n_kv};
    fwrite(hdr, 4, 2, f);
    fwrite(counts, 8, 2, f);
    fwrite(b->p, 1, b->n, f);
    fclose(f);
    free(b->p);
    memset(b, 0, sizeof *b);
    struct piso_tokenizer *t = NULL;
    if (piso_tokenizer_load(path, &t) != 0) t = NULL;
    unlink(path);
    return t;
}

static int ids_are(struct piso_tokenizer *t, const char *text, int add_bos, const int *want, int nw) {
    int *ids, n;
    if (piso_tokenize(t, text, strlen(text), add_bos, &ids, &n) != 0) return 0;
    int ok = n == nw && (n == 0 || memcmp(ids, want, (size_t)n * sizeof(int)) == 0);
    if (!ok) {
        fprintf(stderr, "  '%s' ->", text);
        for (int i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n");
    }
    free(ids);
    return ok;
}

/* ---- SPM: scores decide, not ids or lengths ------------------------------------------------ */
#define SP "\xe2\x96\x81"
static void test_spm(void) {
    /* ids: 0 <unk> 1 <s> 2 </s> 3 <0x41> ('A') 4 ▁ 5 a 6 b 7 ab 8 ▁a 9 ▁ab 10 ba 11 <|x|> */
    const char *tok[] = {"<unk>", "<s>", "</s>", "<0x41>", SP, "a", "b", "ab", SP "a", SP "ab", "ba", "<|x|>"};
    float score[] = {0, 0, 0, 0, -1, -2, -2, -5, -3, -6, -4, 0};
    int32_t type[] = {2, 3, 3, 6, 1, 1, 1, 1, 1, 1, 1, 4};
    struct gb b = {0};
    kv_str(&b, "tokenizer.ggml.model", "llama");
    kv_strs(&b, "tokenizer.ggml.tokens", tok, 12);
    kv_arr32(&b, "tokenizer.ggml.scores", 6, score, 12);
    kv_arr32(&b, "tokenizer.ggml.token_type", 5, type, 12);
    kv_u32(&b, "tokenizer.ggml.bos_token_id", 1);
    kv_u32(&b, "tokenizer.ggml.eos_token_id", 2);
    struct piso_tokenizer *t = gb_load(&b, "spm");
    CHECK(t != NULL, "load spm: %s", piso_last_error());
    if (!t) return;
    /* "ab" -> "▁ab": pairs ▁a (-3) and ab (-5): ▁a wins; then ▁a+b = ▁ab (-6) -> [9] */
    CHECK(ids_are(t, "ab", 0, (int[]){9}, 1), "ab");
    /* "ba" -> ▁ b a: pairs ▁b (none) and ba (-4) -> [▁, ba] */
    CHECK(ids_are(t, "ba", 1, (int[]){1, 4, 10}, 3), "ba with BOS");
    /* "bab" -> ▁ b a b: ba(-4) at 1 and ab(-5) at 2: ba wins, leaving ▁ ba b -> [4, 10, 6] */
    CHECK(ids_are(t, "bab", 0, (int[]){4, 10, 6}, 3), "bab");
    /* "aa" -> ▁ a a: ▁a (-3) first; then ▁a+a is not a piece -> [8, 5] */
    CHECK(ids_are(t, "aa", 0, (int[]){8, 5}, 2), "aa");
    /* "A" has no piece but a byte token; "C" has neither -> <unk> */
    CHECK(ids_are(t, "AC", 0, (int[]){4, 3, 0}, 3), "byte fallback and unk");
    /* a space: "▁▁" is not a piece -> two ▁ */
    CHECK(ids_are(t, " ", 0, (int[]){4, 4}, 2), "space");
    /* the user-defined token splits the text; the next segment gets its own dummy prefix */
    CHECK(ids_are(t, "a<|x|>b", 0, (int[]){8, 11, 4, 6}, 4), "user-defined token");
    CHECK(ids_are(t, "", 1, (int[]){1}, 1), "empty with BOS");
    char *s = piso_detokenize(t, (int[]){1, 9, 11, 4, 6, 3}, 6, 1);
    CHECK(!strcmp(s, "ab<|x|> bA"), "decode: '%s'", s);
    free(s);
    piso_tokenizer_free(t);
}

/* ---- gpt2: merge ranks decide; regex pre-tokenizer ------------------------------------------ */
static void test_gpt2(void) {
    /* 256 byte tokens (GPT-2 byte-to-unicode order) would be long to list; this vocab holds only
     * what the test texts need. "Ġ" (U+0120) is the space byte. */
    const char *tok[] = {"h", "e", "l", "o", "\xc4\xa0", "he", "ll", "hell", "hello", "\xc4\xa0h", "<|end|>", "1", "2"};
    const char *merges[] = {"l l", "h e", "he ll", "hell o", "\xc4\xa0 h"};
    int32_t type[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 3, 1, 1};
    struct gb b = {0};
    kv_str(&b, "tokenizer.ggml.model", "gpt2");
    kv_str(&b, "tokenizer.ggml.pre", "gpt-2");
    kv_strs(&b, "tokenizer.ggml.tokens", tok, 13);
    kv_arr32(&b, "tokenizer.ggml.token_type", 5, type, 13);
    kv_strs(&b, "tokenizer.ggml.merges", merges, 5);
    kv_u32(&b, "tokenizer.ggml.bos_token_id", 10);
    struct piso_tokenizer *t = gb_load(&b, "gpt2");
    CHECK(t != NULL, "load gpt2: %s", piso_last_error());
    if (!t) return;
    /* "hello": l l (rank 0) then h e (1), he ll (2), hell o (3) -> [hello] */
    CHECK(ids_are(t, "hello", 0, (int[]){8}, 1), "hello");
    /* " hello" is one pre-token "Ġhello": l l (0) -> Ġ h e ll o; then h e (1) beats Ġ h (4) for the
     * h -> Ġ he ll o; he ll (2), hell o (3) -> Ġ hello; no merge "Ġ hello" -> [Ġ, hello] */
    CHECK(ids_are(t, " hello", 0, (int[]){4, 8}, 2), "space hello");
    /* "hello hello" splits into "hello" and " hello" */
    CHECK(ids_are(t, "hello hello", 0, (int[]){8, 4, 8}, 3), "two words");
    /* " h" -> Ġh (rank 4) */
    CHECK(ids_are(t, " h", 0, (int[]){9}, 1), "space h");
    /* digits: the gpt-2 regex keeps "12" one pre-token; no merge "1 2" -> [1, 2] */
    CHECK(ids_are(t, "12", 0, (int[]){11, 12}, 2), "digits");
    /* control token in text is matched (parse_special on), and decoded back */
    CHECK(ids_are(t, "hello<|end|>", 0, (int[]){8, 10}, 2), "control token");
    piso_tokenizer_set_parse_special(t, 0);
    /* off: "<|end|>" is text, pre-tokenized as "<|", "end", "|>"; of those bytes only "e" has a
     * token here (the others have none and are dropped) -> [he, e] */
    CHECK(ids_are(t, "he<|end|>", 0, (int[]){5, 1}, 2), "control token as text");
    char *s = piso_detokenize(t, (int[]){8, 4, 8, 10}, 4, 0);
    CHECK(!strcmp(s, "hello hello<|end|>"), "decode: '%s'", s);
    free(s);
    s = piso_detokenize(t, (int[]){8, 10}, 2, 1);
    CHECK(!strcmp(s, "hello"), "decode skipping control: '%s'", s);
    free(s);
    piso_tokenizer_free(t);
}

/* ---- tokenizer.json -> GGUF metadata -> the same ids ------------------------------------------
 * The vocab a tokenizer.json yields (pieces, derived scores, types, merges, pre name) written as
 * GGUF keys must tokenize WikiText-2 exactly as the tokenizer.json does: for SPM this checks that
 * merging by the derived scores (llama.cpp's way) equals merging by rank (HF's way). */
static void test_json_to_gguf(const char *rel, const char *want_pre) {
    struct piso_tokenizer *j;
    CHECK(piso_tokenizer_load(test_data(rel), &j) == 0, "%s", piso_last_error());
    if (!j) return;
    const struct piso_tokenizer_vocab *v = piso_tokenizer_vocab(j);
    CHECK(!strcmp(v->pre, want_pre), "%s: pre '%s', expected '%s'", rel, v->pre, want_pre);
    struct gb b = {0};
    kv_str(&b, "tokenizer.ggml.model", v->kind == PISO_TOK_SPM ? "llama" : "gpt2");
    if (v->kind == PISO_TOK_BYTE_BPE) kv_str(&b, "tokenizer.ggml.pre", v->pre);
    kv_strs(&b, "tokenizer.ggml.tokens", (const char **)v->pieces, v->n_vocab);
    kv_arr32(&b, "tokenizer.ggml.scores", 6, v->scores, v->n_vocab);
    kv_arr32(&b, "tokenizer.ggml.token_type", 5, v->types, v->n_vocab);
    if (v->kind == PISO_TOK_BYTE_BPE) kv_strs(&b, "tokenizer.ggml.merges", (const char **)v->merges, v->n_merges);
    struct piso_tokenizer *g = gb_load(&b, "fromjson");
    CHECK(g != NULL, "%s as GGUF: %s", rel, piso_last_error());
    size_t len;
    char *text = NULL;
    piso_read_file(test_data("data/wikitext-2/wiki.test.raw"), &text, &len);
    if (g && text) {
        len = len < 300000 ? len : 300000;
        while (len > 0 && ((unsigned char)text[len] & 0xC0) == 0x80) len--; /* whole characters */
        int *a, na, *c, nc;
        CHECK(piso_tokenize(j, text, len, 0, &a, &na) == 0 && piso_tokenize(g, text, len, 0, &c, &nc) == 0, "tokenize");
        int same = na == nc && !memcmp(a, c, (size_t)na * sizeof(int));
        CHECK(same, "%s: tokenizer.json (%d tokens) and its GGUF form (%d) differ", rel, na, nc);
        free(a);
        free(c);
    }
    free(text);
    piso_tokenizer_free(g);
    piso_tokenizer_free(j);
}

/* ---- llama.cpp's name-based rstrip for Phi-3 special tokens ---------------------------------- */
static void test_phi3_strip(void) {
    /* 0 <unk> 1 <s> 2 </s> 3 ▁ 4 a 5 <|user|> 6 <0x0A> */
    const char *tok[] = {"<unk>", "<s>", "</s>", SP, "a", "<|user|>", "<0x0A>"};
    float score[] = {0, 0, 0, -1, -2, 0, 0};
    int32_t type[] = {2, 3, 3, 1, 1, 4, 6};
    for (int phi = 0; phi < 2; phi++) {
        struct gb b = {0};
        kv_str(&b, "general.name", phi ? "Phi-3 mini" : "other");
        kv_str(&b, "tokenizer.ggml.model", "llama");
        kv_strs(&b, "tokenizer.ggml.tokens", tok, 7);
        kv_arr32(&b, "tokenizer.ggml.scores", 6, score, 7);
        kv_arr32(&b, "tokenizer.ggml.token_type", 5, type, 7);
        struct piso_tokenizer *t = gb_load(&b, "phi3");
        CHECK(t != NULL, "load phi3: %s", piso_last_error());
        if (!t) continue;
        /* Phi-3: the newline after <|user|> is absorbed; otherwise it is text ("▁" + "\n") */
        if (phi) CHECK(ids_are(t, "<|user|>\na", 0, (int[]){5, 3, 4}, 3), "phi-3 rstrip");
        else CHECK(ids_are(t, "<|user|>\na", 0, (int[]){5, 3, 6, 4}, 4), "no rstrip");
        /* <s> keeps what follows in both */
        CHECK(ids_are(t, "<s> a", 0, (int[]){1, 3, 3, 4}, 4), "<s> is not stripped");
        piso_tokenizer_free(t);
    }
}

/* ---- bert: WordPiece as llama.cpp ----------------------------------------------------------- */
static void test_wpm(void) {
    /* 0 [UNK] 1 [CLS] 2 [SEP] 3 ▁hel 4 lo 5 ▁hello 6 ▁, 7 ▁cafe 8 ▁world 9 p 10 ▁中 */
    const char *tok[] = {"[UNK]", "[CLS]", "[SEP]", SP "hel", "lo", SP "hello", SP ",", SP "cafe", SP "world", "p",
                         SP "\xe4\xb8\xad"};
    int32_t type[] = {3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1};
    struct gb b = {0};
    kv_str(&b, "tokenizer.ggml.model", "bert");
    kv_strs(&b, "tokenizer.ggml.tokens", tok, 11);
    kv_arr32(&b, "tokenizer.ggml.token_type", 5, type, 11);
    kv_u32(&b, "tokenizer.ggml.unknown_token_id", 0);
    struct piso_tokenizer *t = gb_load(&b, "bert");
    CHECK(t != NULL, "load bert: %s", piso_last_error());
    if (!t) return;
    /* lowercased; "," is a word of its own; "É" -> NFD "E" + accent -> "e"; "!" has no piece -> [UNK];
     * the longest piece wins ("▁hello", not "▁hel" "lo") */
    CHECK(ids_are(t, "Hello, CAF\xc3\x89!", 0, (int[]){5, 6, 7, 0}, 4), "hello , cafe !");
    /* "▁help": "▁hel" then "p": both pieces -> [3, 9]; "▁helpx": no piece at "x" -> the whole word is [UNK] */
    CHECK(ids_are(t, "help helpx", 0, (int[]){3, 9, 0}, 3), "help helpx");
    /* CJK ideographs are words of their own; whitespace and control characters vanish */
    CHECK(ids_are(t, " \t\x01\xe4\xb8\xad\xe4\xb8\xadworld", 0, (int[]){10, 10, 8}, 3), "CJK");
    char *s = piso_detokenize(t, (int[]){5, 6, 8}, 3, 1);
    CHECK(!strcmp(s, "hello , world"), "decode: '%s'", s);
    free(s);
    piso_tokenizer_free(t);
}

/* ---- bad metadata ------------------------------------------------------------------------- */
static void test_errors(void) {
    struct gb b = {0};
    const char *tok[] = {"a", "b"};
    kv_strs(&b, "tokenizer.ggml.tokens", tok, 2);
    CHECK(gb_load(&b, "nomodel") == NULL && strstr(piso_last_error(), "tokenizer.ggml.model"), "%s", piso_last_error());

    kv_str(&b, "tokenizer.ggml.model", "t5");
    kv_strs(&b, "tokenizer.ggml.tokens", tok, 2);
    CHECK(gb_load(&b, "t5") == NULL && strstr(piso_last_error(), "t5"), "%s", piso_last_error());

    float score[3] = {0, 0, 0};
    kv_str(&b, "tokenizer.ggml.model", "llama");
    kv_strs(&b, "tokenizer.ggml.tokens", tok, 2);
    kv_arr32(&b, "tokenizer.ggml.scores", 6, score, 3);
    CHECK(gb_load(&b, "scores") == NULL && strstr(piso_last_error(), "tokenizer.ggml.scores"), "%s", piso_last_error());

    kv_str(&b, "tokenizer.ggml.model", "gpt2");
    kv_strs(&b, "tokenizer.ggml.tokens", tok, 2);
    CHECK(gb_load(&b, "nomerges") == NULL && strstr(piso_last_error(), "tokenizer.ggml.merges"), "%s", piso_last_error());

    const char *merges[] = {"a b"};
    kv_str(&b, "tokenizer.ggml.model", "gpt2");
    kv_str(&b, "tokenizer.ggml.pre", "no-such-pre");
    kv_strs(&b, "tokenizer.ggml.tokens", tok, 2);
    kv_strs(&b, "tokenizer.ggml.merges", merges, 1);
    CHECK(gb_load(&b, "pre") == NULL && strstr(piso_last_error(), "no-such-pre"), "%s", piso_last_error());

    kv_str(&b, "tokenizer.ggml.model", "llama");
    kv_u32(&b, "tokenizer.ggml.tokens", 7);
    CHECK(gb_load(&b, "tokens_type") == NULL && strstr(piso_last_error(), "tokenizer.ggml.tokens"), "%s", piso_last_error());
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/piso_tokgguf_XXXXXX");
    CHECK(mkdtemp(g_dir) != NULL, "mkdtemp");
    test_spm();
    test_gpt2();
    test_wpm();
    test_phi3_strip();
    test_errors();
    test_json_to_gguf("tokenizers/llama2/tokenizer.json", "");
    test_json_to_gguf("models/stories260K-hf/tokenizer.json", "");
    test_json_to_gguf("tokenizers/llama3/tokenizer.json", "llama-bpe");
    test_json_to_gguf("tokenizers/qwen3/tokenizer.json", "qwen2");
    rmdir(g_dir);
    return test_finish();
}
