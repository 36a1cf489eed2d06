/* Byte-level BPE segments (GPT-2 family): regex pre-tokenization with PCRE2, the GPT-2
 * byte-to-unicode map, then rank merges per pre-token. The regexes for GGUF vocabularies are the
 * ones llama.cpp selects from tokenizer.ggml.pre, so GGUF files tokenize as llama.cpp does. */
#include "tokenizer/tok_internal.h"

#include <stdlib.h>
#include <string.h>

/* GPT-2: printable bytes map to themselves; the other 68 go, in byte order, to U+0100.. */
static int byte_is_printable(unsigned b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

/* The 68 other bytes, in order, are 0x00-0x20 (33), 0x7F-0xA0 (34) and 0xAD (1). */
uint32_t piso_tok_byte_to_cp(unsigned char b) {
    if (byte_is_printable(b)) return b;
    if (b <= 0x20) return 256u + b;
    if (b >= 0x7F && b <= 0xA0) return 256u + 33 + (b - 0x7Fu);
    return 256u + 67; /* 0xAD */
}

int piso_tok_cp_to_byte(uint32_t cp) {
    if (cp < 256) return byte_is_printable(cp) ? (int)cp : -1;
    uint32_t k = cp - 256;
    if (k < 33) return (int)k;
    if (k < 67) return (int)(0x7F + k - 33);
    return k == 67 ? 0xAD : -1;
}

int piso_tok_add_regex(struct piso_tokenizer *t, const char *pattern) {
    int err;
    PCRE2_SIZE at;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &err, &at, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return piso_errorf("%s: pre-tokenizer regex does not compile at offset %zu: %s (pattern %s)",
                           t->source, (size_t)at, (const char *)msg, pattern);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional speed-up; falls back to the interpreter */
    t->regex = realloc(t->regex, (size_t)(t->n_regex + 1) * sizeof *t->regex);
    t->regex[t->n_regex++] = re;
    return 0;
}

/* llama.cpp's pre-tokenizer regexes, by tokenizer.ggml.pre. */
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RE_LLAMA3_HEAD "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
#define RE_LLAMA3_TAIL "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
/* [一-龥ࠀ-一가-퟿]+ */
#define RE_CJK "[\xe4\xb8\x80-\xe9\xbe\xa5\xe0\xa0\x80-\xe4\xb8\x80\xea\xb0\x80-\xed\x9f\xbf]+"

static const char *const RE_DEEPSEEK_LLM_LETTERS =
    "\\s?[A-Za-z\xc2\xb5\xc3\x80-\xc3\x96\xc3\x98-\xc3\xb6\xc3\xb8-\xc6\xba\xc6\xbc-\xc6\xbf\xc7\x84-\xca\x93"
    "\xca\x95-\xca\xaf\xcd\xb0-\xcd\xb3\xcd\xb6\xcd\xb7\xcd\xbb-\xcd\xbd\xcd\xbf\xce\x86\xce\x88-\xce\x8a"
    "\xce\x8c\xce\x8e-\xce\xa1\xce\xa3-\xcf\xb5\xcf\xb7-\xd2\x81\xd2\x8a-\xd4\xaf\xd4\xb1-\xd5\x96"
    "\xe1\x82\xa0-\xe1\x83\x85\xe1\x8e\xa0-\xe1\x8f\xb5\xe1\x8f\xb8-\xe1\x8f\xbd\xe1\xb2\x90-\xe1\xb2\xba"
    "\xe1\xb2\xbd-\xe1\xb2\xbf\xe1\xb4\x80-\xe1\xb4\xab\xe1\xb5\xab-\xe1\xb5\xb7\xe1\xb5\xb9-\xe1\xb6\x9a"
    "\xe1\xb8\x80-\xe1\xbc\x95\xe1\xbc\x98-\xe1\xbc\x9d\xe1\xbc\xa0-\xe1\xbd\x85\xe1\xbd\x88-\xe1\xbd\x8d"
    "\xe1\xbd\x90-\xe1\xbd\x97\xe1\xbd\x99\xe1\xbd\x9b\xe1\xbd\x9d\xe1\xbd\x9f-\xe1\xbd\xbd"
    "\xe1\xbe\x80-\xe1\xbe\xb4\xe1\xbe\xb6-\xe1\xbe\xbc\xe1\xbe\xbe\xe1\xbf\x82-\xe1\xbf\x84"
    "\xe1\xbf\x86-\xe1\xbf\x8c\xe1\xbf\x90-\xe1\xbf\x93\xe1\xbf\x96-\xe1\xbf\x9b\xe1\xbf\xa0-\xe1\xbf\xac"
    "\xe1\xbf\xb2-\xe1\xbf\xb4\xe1\xbf\xb6-\xe1\xbf\xbc\xe2\x84\x82\xe2\x84\x87\xe2\x84\x8a-\xe2\x84\x93"
    "\xe2\x84\x95\xe2\x84\x99-\xe2\x84\x9d\xe2\x84\xa4\xe2\x84\xa6\xe2\x84\xa8\xe2\x84\xaa-\xe2\x84\xad"
    "\xe2\x84\xaf-\xe2\x84\xb4\xe2\x84\xb9\xe2\x84\xbc-\xe2\x84\xbf\xe2\x85\x85-\xe2\x85\x89\xe2\x85\x8e"
    "\xe2\x86\x83\xe2\x86\x84\xe2\xb0\x80-\xe2\xb1\xbb\xe2\xb1\xbe-\xe2\xb3\xa4\xe2\xb3\xab-\xe2\xb3\xae"
    "\xe2\xb3\xb2\xe2\xb3\xb3\xea\x99\x80-\xea\x99\xad\xea\x9a\x80-\xea\x9a\x9b\xea\x9c\xa2-\xea\x9d\xaf"
    "\xea\x9d\xb1-\xea\x9e\x87\xea\x9e\x8b-\xea\x9e\x8e\xea\xad\xb0-\xea\xae\xbf\xef\xac\x80-\xef\xac\x86"
    "\xef\xac\x93-\xef\xac\x97\xef\xbc\xa1-\xef\xbc\xba\xef\xbd\x81-\xef\xbd\x9a\xf0\x90\x90\x80-\xf0\x90\x91\x8f"
    "\xf0\x90\x92\xb0-\xf0\x90\x93\x93\xf0\x90\x93\x98-\xf0\x90\x93\xbb\xf0\x90\xb2\x80-\xf0\x90\xb2\xb2"
    "\xf0\x90\xb3\x80-\xf0\x90\xb3\xb2\xf0\x91\xa2\xa0-\xf0\x91\xa3\x9f\xf0\x9e\xa4\x80-\xf0\x9e\xa5\x83]+";

int piso_tok_add_pre_regexes(struct piso_tokenizer *t, const char *pre) {
    const char *list[8] = {0};
    int n = 0;
#define IS(name) (strcmp(pre, name) == 0)
    int llama3 = IS("llama3") || IS("llama-v3") || IS("llama-bpe") || IS("falcon3") || IS("falcon-h1") ||
                 IS("pixtral") || IS("midm-2.0") || IS("lfm2");
    if (llama3 || IS("dbrx") || IS("smaug-bpe") || IS("chatglm-bpe") || IS("glm4")) {
        list[n++] = RE_LLAMA3_HEAD "\\p{N}{1,3}" RE_LLAMA3_TAIL;
        t->ignore_merges = llama3;
    } else if (IS("qwen2") || IS("stablelm2") || IS("deepseek-r1-qwen") || IS("kormo") || IS("f2llmv2")) {
        list[n++] = RE_LLAMA3_HEAD "\\p{N}" RE_LLAMA3_TAIL;
    } else if (IS("qwen35")) {
        list[n++] = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|"
                    "\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    } else if (IS("deepseek-llm")) {
        list[n++] = "[\r\n]";
        list[n++] = RE_DEEPSEEK_LLM_LETTERS;
        list[n++] = "\\s?[!-/:-~\xef\xbc\x81-\xef\xbc\x8f\xef\xbc\x9a-\xef\xbd\x9e\xe2\x80\x98-\xe2\x80\x9f"
                    "\xe3\x80\x80-\xe3\x80\x82]+"; /* \s?[!-/:-~！-／：-～‘-‟　-。]+ */
        list[n++] = "\\s+$";
        list[n++] = RE_CJK;
        list[n++] = "\\p{N}+";
    } else if (IS("deepseek-coder")) {
        list[n++] = "[\r\n]";
        list[n++] = "\\s?\\p{L}+";
        list[n++] = "\\s?\\p{P}+";
        list[n++] = RE_CJK;
        list[n++] = "\\p{N}";
    } else if (IS("falcon")) {
        list[n++] = "[\\p{P}\\$\\+<=>\\^~\\|`]+";
        list[n++] = RE_GPT2;
        list[n++] = "[0-9][0-9][0-9]";
    } else if (IS("starcoder") || IS("refact") || IS("command-r") || IS("smollm") || IS("codeshell") ||
               IS("exaone") || IS("minerva-7b")) {
        list[n++] = "\\p{N}";
        list[n++] = RE_GPT2;
    } else if (IS("gpt-2") || IS("mpt") || IS("olmo") || IS("jais") || IS("phi-2") || IS("jina-es") ||
               IS("jina-de") || IS("jina-v2-es") || IS("jina-v2-de") || IS("jina-v2-code") || IS("gigachat") ||
               IS("jina-v1-en") || IS("a.x-4.0") || IS("mellum") || IS("roberta-bpe") || IS("modern-bert") ||
               IS("exaone4")) {
        list[n++] = RE_GPT2;
    } else if (IS("default") || IS("")) {
        list[n++] = "[\\p{P}\\$\\+<=>\\^~\\|]+";
        list[n++] = RE_GPT2;
        list[n++] = "\\p{N}+";
        list[n++] = "[0-9][0-9][0-9]";
    } else {
        return -2;
    }
#undef IS
    for (int i = 0; i < n; i++)
        if (piso_tok_add_regex(t, list[i]) != 0) return -1;
    return 0;
}

/* Offset of the first byte that does not start a valid UTF-8 sequence (strict: no overlong forms,
 * no surrogates, at most U+10FFFF), or n if all is valid. */
size_t piso_tok_utf8_invalid_at(const char *text, size_t n) {
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) { i++; continue; }
        int len = piso_tok_utf8_len((unsigned char)c);
        if (len == 1 || c == 0xC0 || c == 0xC1 || c > 0xF4 || i + (size_t)len > n) return i;
        uint32_t cp = c & (0x7Fu >> len);
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return i;
        i += (size_t)len;
    }
    return n;
}

/* ---- encoding ------------------------------------------------------------------------------- */
struct split_ctx {
    const struct piso_tokenizer *t;
    pcre2_match_data **md; /* one per regex level */
    struct tok_ids *out;
    char *mapped; /* scratch: a pre-token through the byte map (<= 2 bytes per byte) */
    size_t mapped_cap;
    int failed;
    int prefixed; /* the piece at prefix_level already got its space */
};

static void encode_pretoken(struct split_ctx *c, const char *s, size_t n) {
    if (n == 0) return;
    if (2 * n > c->mapped_cap) {
        c->mapped_cap = 4 * n;
        c->mapped = realloc(c->mapped, c->mapped_cap);
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) o += (size_t)piso_tok_utf8_put(piso_tok_byte_to_cp((unsigned char)s[i]), c->mapped + o);
    const struct piso_tokenizer *t = c->t;
    if (t->ignore_merges) {
        int id = piso_tok_lookup(t, c->mapped, o);
        if (id >= 0) {
            piso_tok_ids_push(c->out, id);
            return;
        }
    }
    if (piso_tok_merge_word(t, c->mapped, o, c->out) != 0) c->failed = 1;
}

/* Splits s[n] with regex `level` into matches and the gaps between them (HF "Isolated"), each
 * passed on to the next level; the last level's pieces are encoded. */
static void split_level(struct split_ctx *c, int level, const char *s, size_t n) {
    if (c->failed || n == 0) return;
    if (c->t->add_prefix_space && level == c->t->prefix_level && s[0] != ' ' && !c->prefixed) {
        char *p = malloc(n + 1); /* HF ByteLevel add_prefix_space */
        p[0] = ' ';
        memcpy(p + 1, s, n);
        c->prefixed = 1;
        split_level(c, level, p, n + 1);
        c->prefixed = 0;
        free(p);
        return;
    }
    if (level == c->t->n_regex) {
        encode_pretoken(c, s, n);
        return;
    }
    pcre2_code *re = c->t->regex[level];
    pcre2_match_data *md = c->md[level];
    size_t pos = 0, gap = 0;
    while (pos < n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT) /* the interpreter keeps its backtracking on the heap */
            rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            piso_errorf("%s: pre-tokenizer regex failed: %s", c->t->source, (const char *)msg);
            c->failed = 1;
            return;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t a = ov[0], b = ov[1];
        if (b == a) { /* empty match: step over one character */
            pos = a + (size_t)piso_tok_utf8_len((unsigned char)s[a]);
            continue;
        }
        if (a > gap) split_level(c, level + 1, s + gap, a - gap);
        split_level(c, level + 1, s + a, b - a);
        pos = gap = b;
    }
    if (n > gap) split_level(c, level + 1, s + gap, n - gap);
}

int piso_tok_bytelevel_encode_segment(const struct piso_tokenizer *t, const char *text, size_t n,
                                 struct tok_ids *out) {
    if (n == 0) return 0;
    /* PCRE2 needs valid UTF-8; checking once here lets every match skip the check */
    size_t bad = piso_tok_utf8_invalid_at(text, n);
    if (bad < n) return piso_errorf("%s: text is not valid UTF-8 (at byte %zu)", t->source, bad);
    struct split_ctx c = {.t = t, .out = out};
    c.md = calloc((size_t)t->n_regex + 1, sizeof *c.md);
    for (int i = 0; i < t->n_regex; i++) c.md[i] = pcre2_match_data_create_from_pattern(t->regex[i], NULL);
    split_level(&c, 0, text, n);
    for (int i = 0; i < t->n_regex; i++) pcre2_match_data_free(c.md[i]);
    free(c.md);
    free(c.mapped);
    return c.failed ? -1 : 0;
}
