/* The tokenizers themselves on arbitrary bytes: stories260K's llama2.c tok512.bin (SPM, byte
 * fallback), its HF tokenizer.json, and Llama-3's and Qwen3's byte-level BPE tokenizer.json from
 * $PISO_DATA. Invariants: ids in range; byte-level BPE decodes every encoding back to the exact
 * input bytes when they are valid UTF-8 (Llama-3 has no normalizer); SPM with byte fallback decodes
 * back to the input (valid UTF-8 without NUL, after its leading-space convention). */
#include "fuzz_common.h"
#include "piso/tokenizer.h"

static struct piso_tokenizer *toks[4];
static int roundtrip[4]; /* 1: exact; 2: SPM (leading space added by the encoder, removed when decoding) */
static int n_toks;

static int valid_utf8(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!len || i + len > n) return 0;
        uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    fuzz_dir();
    const char *data = fuzz_data_root();
    static const char *files[] = {"models/stories260K/tok512.bin", "models/stories260K-hf/tokenizer.json",
                                  "tokenizers/llama3/tokenizer.json", "tokenizers/qwen3/tokenizer.json"};
    static const int rt[] = {2, 0, 1, 0};
    for (int i = 0; i < 4; i++) {
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", data, files[i]);
        if (piso_tokenizer_load(p, &toks[n_toks]) == 0) roundtrip[n_toks++] = rt[i];
        else fprintf(stderr, "fuzz_tokenize: skipping %s: %s\n", p, piso_last_error());
    }
    if (!n_toks) {
        const char *ci = getenv("CI");
        fprintf(stderr, "fuzz_tokenize: skipped: no tokenizer under %s (set PISO_DATA)\n", data);
        exit(ci && !strcmp(ci, "true") ? 1 : 77); /* skipped, as the tests skip without data */
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int utf8 = valid_utf8(data, size), has_nul = memchr(data, 0, size) != NULL;
    for (int k = 0; k < n_toks; k++) {
        struct piso_tokenizer *t = toks[k];
        const struct piso_tokenizer_vocab *v = piso_tokenizer_vocab(t);
        piso_tokenizer_set_parse_special(t, 0); /* the text is text: "<s>" stays characters */
        int *ids = NULL, n = 0;
        int rc = piso_tokenize(t, (const char *)data, size, 0, &ids, &n);
        piso_tokenizer_set_parse_special(t, 1);
        if (rc != 0) {
            FUZZ_CHECK(!utf8 || roundtrip[k] == 0, "tokenizer %d refused valid UTF-8: %s", k, piso_last_error());
            continue;
        }
        for (int i = 0; i < n; i++) FUZZ_CHECK(ids[i] >= 0 && ids[i] < v->n_vocab, "id %d", ids[i]);
        char *back = piso_detokenize(t, ids, n, 0);
        FUZZ_CHECK(back != NULL, "decode");
        if (roundtrip[k] == 1 && utf8 && !has_nul)
            FUZZ_CHECK(strlen(back) == size && !memcmp(back, data, size), "byte-level BPE %d: decode(encode(s)) != s", k);
        /* (a literal U+2581 in the text is SPM's own space symbol: it decodes to a space) */
        if (roundtrip[k] == 2 && utf8 && !has_nul && size > 0 && !memmem(data, size, "\xE2\x96\x81", 3)) {
            /* SPM: the encoder adds one space before the text; the decoder drops one leading space */
            FUZZ_CHECK(strlen(back) == size && !memcmp(back, data, size), "SPM %d: decode(encode(s)) != s ('%.*s' vs '%s')",
                       k, (int)size, (const char *)data, back);
        }
        free(back);
        free(ids);
    }
    return 0;
}
