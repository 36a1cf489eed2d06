/* Tokenizer object: vocab hash maps, merge table, added-token splitting, the public entry points
 * and the loader dispatch (tokenizer.json, llama2.c tokenizer.bin, GGUF, model directory). */
#include "tokenizer/tok_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct piso_tokenizer *piso_tok_new(enum piso_tok_kind kind, int n_vocab, const char *source) {
    struct piso_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->v.kind = kind;
    t->v.n_vocab = n_vocab;
    t->v.pieces = calloc((size_t)n_vocab + 1, sizeof(char *));
    t->v.scores = calloc((size_t)n_vocab + 1, sizeof(float));
    t->v.types = calloc((size_t)n_vocab + 1, sizeof(int));
    t->piece_len = calloc((size_t)n_vocab + 1, sizeof(int));
    for (int i = 0; t->v.types && i < n_vocab; i++) t->v.types[i] = TOK_TYPE_NORMAL;
    t->v.bos_id = t->v.eos_id = t->v.unk_id = t->v.pad_id = -1;
    t->parse_special = 1;
    t->source = strdup(source ? source : "?");
    for (int b = 0; b < 256; b++) t->byte_token[b] = -1;
    if (!t->v.pieces || !t->v.scores || !t->v.types || !t->piece_len || !t->source) {
        t->v.n_vocab = 0; /* nothing to free piece by piece */
        piso_tokenizer_free(t);
        return NULL;
    }
    return t;
}

void piso_tokenizer_free(struct piso_tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->v.n_vocab; i++) free(t->v.pieces[i]);
    for (int i = 0; i < t->v.n_merges; i++) free(t->v.merges ? t->v.merges[i] : NULL);
    free(t->v.pieces);
    free(t->v.scores);
    free(t->v.types);
    free(t->v.merges);
    free(t->piece_len);
    free(t->vocab_map.slots);
    free(t->merge_result);
    free(t->pairs.keys);
    free(t->pairs.val);
    for (int i = 0; i < t->n_regex; i++) pcre2_code_free(t->regex[i]);
    free(t->regex);
    free(t->added);
    free(t->is_added);
    free(t->strip);
    free(t->source);
    free(t);
}

const struct piso_tokenizer_vocab *piso_tokenizer_vocab(const struct piso_tokenizer *t) { return &t->v; }

void piso_tokenizer_set_parse_special(struct piso_tokenizer *t, int parse_special) {
    t->parse_special = parse_special;
}

/* ---- hashing -------------------------------------------------------------------------------- */
uint32_t piso_tok_hash(const char *s, size_t n) { /* FNV-1a */
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static uint32_t pow2_at_least(uint64_t n) {
    uint32_t c = 16;
    while (c < 2 * n) c <<= 1;
    return c;
}

int piso_tok_lookup(const struct piso_tokenizer *t, const char *s, size_t n) {
    const struct tok_strmap *m = &t->vocab_map;
    if (!m->slots) return -1;
    for (uint32_t h = piso_tok_hash(s, n) & m->mask;; h = (h + 1) & m->mask) {
        int32_t id = m->slots[h];
        if (id < 0) return -1;
        if ((size_t)t->piece_len[id] == n && memcmp(t->v.pieces[id], s, n) == 0) return id;
    }
}

int piso_tok_index_vocab(struct piso_tokenizer *t) {
    uint32_t cap = pow2_at_least((uint64_t)t->v.n_vocab);
    struct tok_strmap *m = &t->vocab_map;
    free(m->slots);
    m->slots = malloc(cap * sizeof(int32_t));
    if (!m->slots) return piso_errorf("%s: out of memory for the vocabulary index", t->source);
    for (int id = 0; id < t->v.n_vocab; id++)
        if (!t->v.pieces[id]) return piso_errorf("%s: out of memory for token %d", t->source, id);
    m->mask = cap - 1;
    for (uint32_t i = 0; i < cap; i++) m->slots[i] = -1;
    for (int id = 0; id < t->v.n_vocab; id++) {
        const char *p = t->v.pieces[id];
        size_t n = (size_t)t->piece_len[id];
        for (uint32_t h = piso_tok_hash(p, n) & m->mask;; h = (h + 1) & m->mask) {
            int32_t o = m->slots[h];
            if (o < 0 || ((size_t)t->piece_len[o] == n && memcmp(t->v.pieces[o], p, n) == 0)) {
                m->slots[h] = id; /* a later duplicate replaces the earlier one (llama.cpp) */
                break;
            }
        }
    }
    t->max_piece_len = 0;
    for (int id = 0; id < t->v.n_vocab; id++)
        if (t->piece_len[id] > t->max_piece_len) t->max_piece_len = t->piece_len[id];
    /* ASCII bytes that occur in no longer piece */
    memset(t->split_ok, 1, sizeof t->split_ok);
    for (int id = 0; id < t->v.n_vocab; id++) {
        if (t->piece_len[id] < 2) continue;
        for (int k = 0; k < t->piece_len[id]; k++) {
            unsigned char c = (unsigned char)t->v.pieces[id][k];
            if (c < 128) t->split_ok[c] = 0;
        }
    }
    /* byte tables */
    for (int b = 0; b < 256; b++) {
        char buf[8];
        int n;
        if (t->v.kind == PISO_TOK_SPM) n = snprintf(buf, sizeof buf, "<0x%02X>", b);
        else n = piso_tok_utf8_put(piso_tok_byte_to_cp((unsigned char)b), buf);
        t->byte_token[b] = piso_tok_lookup(t, buf, (size_t)n);
    }
    return 0;
}

/* ---- merges --------------------------------------------------------------------------------- */
int piso_tok_pairs_init(struct piso_tokenizer *t, int n) {
    uint32_t cap = pow2_at_least((uint64_t)n);
    t->pairs.keys = calloc(cap, sizeof(uint64_t));
    t->pairs.val = malloc(cap * sizeof(int32_t));
    t->pairs.mask = cap - 1;
    t->merge_result = malloc(((size_t)n + 1) * sizeof(int32_t));
    if (!t->pairs.keys || !t->pairs.val || !t->merge_result)
        return piso_errorf("%s: out of memory for %d merges", t->source, n);
    return 0;
}

static uint32_t pair_hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (uint32_t)k;
}

void piso_tok_add_merge(struct piso_tokenizer *t, int rank, const char *l, size_t ln, const char *r, size_t rn) {
    t->merge_result[rank] = -1;
    int a = piso_tok_lookup(t, l, ln), b = piso_tok_lookup(t, r, rn);
    if (a < 0 || b < 0) return;
    char stack[256];
    char *buf = ln + rn <= sizeof stack ? stack : malloc(ln + rn);
    memcpy(buf, l, ln);
    memcpy(buf + ln, r, rn);
    int m = piso_tok_lookup(t, buf, ln + rn);
    if (buf != stack) free(buf);
    if (m < 0) return;
    t->merge_result[rank] = m;
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    for (uint32_t h = pair_hash(key) & t->pairs.mask;; h = (h + 1) & t->pairs.mask) {
        if (t->pairs.keys[h] == key) return; /* first rank wins */
        if (t->pairs.keys[h] == 0) {
            t->pairs.keys[h] = key;
            t->pairs.val[h] = rank;
            return;
        }
    }
}

int piso_tok_pair_find(const struct piso_tokenizer *t, int left, int right) {
    if (!t->pairs.keys || left < 0 || right < 0) return -1;
    uint64_t key = (((uint64_t)(uint32_t)left << 32) | (uint32_t)right) + 1;
    for (uint32_t h = pair_hash(key) & t->pairs.mask;; h = (h + 1) & t->pairs.mask) {
        if (t->pairs.keys[h] == key) return t->pairs.val[h];
        if (t->pairs.keys[h] == 0) return -1;
    }
}

/* ---- small helpers -------------------------------------------------------------------------- */
void piso_tok_ids_push(struct tok_ids *a, int x) {
    if (a->oom) return;
    if (a->n == a->cap) {
        int cap = a->cap ? 2 * a->cap : 256;
        int *v = realloc(a->v, (size_t)cap * sizeof(int));
        if (!v) {
            a->oom = 1;
            return;
        }
        a->v = v, a->cap = cap;
    }
    a->v[a->n++] = x;
}

int piso_tok_utf8_put(uint32_t cp, char *buf) {
    unsigned char *o = (unsigned char *)buf;
    if (cp < 0x80) { o[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) { o[0] = (unsigned char)(0xC0 | (cp >> 6)); o[1] = (unsigned char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

int piso_tok_utf8_len(unsigned char c) {
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) return 2;
    if ((c & 0xF0) == 0xE0) return 3;
    if ((c & 0xF8) == 0xF0) return 4;
    return 1;
}

/* ---- added tokens --------------------------------------------------------------------------- */
void piso_tok_add_added(struct piso_tokenizer *t, int id) {
    if (id < 0 || id >= t->v.n_vocab || t->piece_len[id] == 0) return;
    if (!t->is_added && !(t->is_added = calloc((size_t)t->v.n_vocab, 1))) return;
    if (t->is_added[id]) return;
    if (t->n_added == t->added_cap) {
        int cap = t->added_cap ? 2 * t->added_cap : 16;
        int *na = realloc(t->added, (size_t)cap * sizeof(int));
        if (!na) return;
        t->added = na, t->added_cap = cap;
    }
    t->is_added[id] = 1;
    t->added[t->n_added++] = id;
}

static int cmp_added(const void *a, const void *b) {
    const int *x = a, *y = b; /* triples (piece length, insertion position, id) */
    if (x[0] != y[0]) return x[0] > y[0] ? -1 : 1;
    return (x[1] > y[1]) - (x[1] < y[1]);
}

void piso_tok_sort_added(struct piso_tokenizer *t) {
    if (t->n_added < 2) return;
    int *tr = malloc(3 * sizeof(int) * (size_t)t->n_added);
    if (!tr) return; /* keeps insertion order: matching then may prefer a shorter token */
    for (int i = 0; i < t->n_added; i++) tr[3 * i] = t->piece_len[t->added[i]], tr[3 * i + 1] = i, tr[3 * i + 2] = t->added[i];
    qsort(tr, (size_t)t->n_added, 3 * sizeof(int), cmp_added);
    for (int i = 0; i < t->n_added; i++) t->added[i] = tr[3 * i + 2];
    free(tr);
}

static int match_added(const struct piso_tokenizer *t, const char *s, size_t n, int *len) {
    for (int i = 0; i < t->n_added; i++) {
        int id = t->added[i];
        size_t l = (size_t)t->piece_len[id];
        if (l > n || t->v.pieces[id][0] != s[0] || memcmp(t->v.pieces[id], s, l) != 0) continue;
        int ty = t->v.types[id];
        if (!t->parse_special && ty != TOK_TYPE_USER) continue;
        if (t->match_normalized && t->strip && (t->strip[id] & 4)) continue; /* matched after normalizing */
        *len = (int)l;
        return id;
    }
    return -1;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

static int encode_segment(const struct piso_tokenizer *t, const char *s, size_t n, int first,
                          struct tok_ids *out) {
    char *norm = NULL;
    if (t->nfc) { /* the normalizer runs on each piece between added tokens, as in HF */
        size_t bad = piso_tok_utf8_invalid_at(s, n);
        if (bad < n) return piso_errorf("%s: text is not valid UTF-8 (at byte %zu)", t->source, bad);
        size_t nn;
        norm = piso_tok_nfc(s, n, &nn);
        if (norm) {
            s = norm;
            n = nn;
        }
    }
    int rc = t->v.kind == PISO_TOK_SPM   ? piso_tok_spm_encode_segment(t, s, n, first, out)
             : t->v.kind == PISO_TOK_WPM ? piso_tok_wpm_encode_segment(t, s, n, out)
                                         : piso_tok_bytelevel_encode_segment(t, s, n, out);
    free(norm);
    return rc;
}

int piso_tokenize(const struct piso_tokenizer *t, const char *text, size_t len, int add_bos, int **ids,
                  int *n_ids) {
    struct tok_ids out = {0};
    *ids = NULL;
    *n_ids = 0;
    if (add_bos) {
        if (t->v.bos_id < 0) return piso_errorf("%s: BOS requested but the tokenizer has no BOS token", t->source);
        piso_tok_ids_push(&out, t->v.bos_id);
    }
    unsigned char first_bytes[32] = {0};
    for (int i = 0; i < t->n_added; i++) {
        unsigned char c = (unsigned char)t->v.pieces[t->added[i]][0];
        first_bytes[c >> 3] |= (unsigned char)(1u << (c & 7));
    }
    size_t seg = 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)text[i];
        int mlen = 0, id = -1;
        if (first_bytes[c >> 3] & (1u << (c & 7))) id = match_added(t, text + i, len - i, &mlen);
        if (id < 0) {
            i++;
            continue;
        }
        size_t end = i, next = i + (size_t)mlen;
        if (t->strip && (t->strip[id] & 1)) /* lstrip: the token absorbs the whitespace before it */
            while (end > seg && is_space(text[end - 1])) end--;
        if (t->strip && (t->strip[id] & 2)) /* rstrip: ... and after it */
            while (next < len && is_space(text[next])) next++;
        if (end > seg && encode_segment(t, text + seg, end - seg, seg == 0, &out) != 0) goto fail;
        piso_tok_ids_push(&out, id);
        i = seg = next;
    }
    if (len > seg && encode_segment(t, text + seg, len - seg, seg == 0, &out) != 0) goto fail;
    if (!out.v && !out.oom && !(out.v = malloc(sizeof(int)))) out.oom = 1;
    if (out.oom) {
        piso_errorf("%s: out of memory tokenizing %zu bytes", t->source, len);
        goto fail;
    }
    *ids = out.v;
    *n_ids = out.n;
    return 0;
fail:
    free(out.v);
    return -1;
}

/* ---- loading -------------------------------------------------------------------------------- */

/* What kind of file `path` looks like from its first bytes: 'G' GGUF, 'J' JSON (after an optional
 * UTF-8 BOM and any whitespace), 0 otherwise (a llama2.c tokenizer.bin or something else). */
static int sniff(const char *path, int *kind) {
    FILE *f = fopen(path, "rb");
    if (!f) return piso_errorf("%s: cannot open tokenizer: %s", path, strerror(errno));
    unsigned char head[4096];
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    *kind = 0;
    if (n >= 4 && memcmp(head, "GGUF", 4) == 0) {
        *kind = 'G';
        return 0;
    }
    size_t i = n >= 3 && memcmp(head, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
    while (i < n && (head[i] == ' ' || head[i] == '\n' || head[i] == '\r' || head[i] == '\t')) i++;
    if (i < n && head[i] == '{') *kind = 'J';
    return 0;
}

/* Loads one tokenizer file. A llama2.c checkpoint is not a tokenizer: with `beside` the tokenizer
 * next to it is used (once: a file found that way is never itself looked beside, so two broken
 * files side by side cannot send this into a loop). */
static int load_file(const char *path, int beside, struct piso_tokenizer **out) {
    int kind;
    if (sniff(path, &kind) != 0) return -1;
    if (kind == 'G') return piso_tok_load_gguf_path(path, out);
    if (kind == 'J') return piso_tok_load_hf_json(path, out);
    if (piso_tok_load_llama2c(path, out) == 0) return 0;
    char why[512];
    snprintf(why, sizeof why, "%s", piso_last_error());
    if (beside) { /* a llama2.c checkpoint: use the tokenizer beside it */
        char *dir = strdup(path);
        if (!dir) return piso_errorf("%s: out of memory", path);
        char *slash = strrchr(dir, '/');
        if (slash) *slash = 0;
        else strcpy(dir, ".");
        static const char *names[] = {"tokenizer.bin", "tok512.bin", "tokenizer.json"};
        for (int k = 0; k < 3; k++) {
            char *p = piso_path_join(dir, names[k]);
            if (p && strcmp(p, path) != 0 && piso_file_exists(p)) {
                int rc = load_file(p, 0, out);
                if (rc != 0) {
                    char inner[1024];
                    snprintf(inner, sizeof inner, "%s", piso_last_error());
                    piso_errorf("%s: not a tokenizer (as a llama2.c tokenizer.bin: %s), and the tokenizer beside it "
                                "failed: %s", path, why, inner);
                }
                free(p);
                free(dir);
                return rc;
            }
            free(p);
        }
        free(dir);
    }
    return piso_errorf("%s: not a tokenizer: not GGUF, not a tokenizer.json, and as a llama2.c tokenizer.bin: %s%s",
                       path, why, beside ? "; and no tokenizer.bin, tok512.bin or tokenizer.json beside it" : "");
}

/* "no such file" only when there is none: a device, a FIFO or a socket is named as what it is */
static int not_a_file(const char *path, const char *what) {
    struct stat st;
    if (stat(path, &st) != 0) return piso_errorf("%s: no such %s: %s", path, what, strerror(errno));
    return piso_errorf("%s: not a regular file (a %s): cannot be a %s", path,
                       S_ISCHR(st.st_mode) ? "character device" : S_ISBLK(st.st_mode) ? "block device"
                       : S_ISFIFO(st.st_mode) ? "FIFO" : S_ISSOCK(st.st_mode) ? "socket" : "special file", what);
}

int piso_tokenizer_load(const char *path, struct piso_tokenizer **out) {
    *out = NULL;
    if (!piso_is_dir(path)) {
        if (!piso_file_exists(path)) return not_a_file(path, "tokenizer file or directory");
        return load_file(path, 1, out);
    }
    static const char *names[] = {"tokenizer.json", "tokenizer.bin", "tok512.bin"};
    for (int k = 0; k < 3; k++) {
        char *p = piso_path_join(path, names[k]);
        if (piso_file_exists(p)) {
            int rc = load_file(p, 0, out);
            free(p);
            return rc;
        }
        free(p);
    }
    return piso_errorf("%s: model directory has no tokenizer.json, tokenizer.bin or tok512.bin", path);
}
