/* GGUF tokenizer.ggml.*: model "llama" (SentencePiece BPE by piece score, byte fallback) and
 * "gpt2" (byte-level BPE by merge rank, pre-tokenizer regexes chosen by tokenizer.ggml.pre as
 * llama.cpp does). */
#include "tokenizer/tok_internal.h"

#include "piso/gguf.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const struct piso_gguf_kv *find_array(const struct piso_gguf *g, const char *key,
                                             enum piso_gguf_vtype elem, uint64_t n, int required) {
    const struct piso_gguf_kv *kv = piso_gguf_find(g, key);
    if (!kv) {
        if (required) piso_errorf("%s: tokenizer key '%s' is missing", g->map.path, key);
        return NULL;
    }
    if (kv->type != GGUF_VT_ARRAY || kv->arr_type != elem) {
        piso_errorf("%s: tokenizer key '%s' has the wrong type", g->map.path, key);
        return NULL;
    }
    if (n && kv->arr_n != n) {
        piso_errorf("%s: tokenizer key '%s' has %llu entries, expected %llu", g->map.path, key,
                    (unsigned long long)kv->arr_n, (unsigned long long)n);
        return NULL;
    }
    return kv;
}

static const char *arr_string(const struct piso_gguf_kv *kv, uint64_t i, size_t *len) {
    uint64_t l;
    memcpy(&l, kv->arr_str[i], 8); /* validated by piso_gguf_open */
    *len = (size_t)l;
    return (const char *)kv->arr_str[i] + 8;
}

static int opt_id(const struct piso_gguf *g, const char *key, int n_vocab, int *out) {
    if (!piso_gguf_find(g, key)) return 0;
    uint32_t v;
    if (piso_gguf_get_u32(g, key, &v) != 0) return -1;
    if (v >= (uint32_t)n_vocab) {
        /* llama.cpp tolerates out-of-range special ids by ignoring them; so do we */
        return 0;
    }
    *out = (int)v;
    return 0;
}

static void set_strip(struct piso_tokenizer *t, const char *piece, int bit, int on) {
    int id = piso_tok_lookup(t, piece, strlen(piece));
    if (id < 0) return;
    if (!t->strip) t->strip = calloc((size_t)t->v.n_vocab, 1);
    t->strip[id] = (unsigned char)(on ? (t->strip[id] | bit) : (t->strip[id] & ~bit));
}

static int contains_any(const char *s, const char *const *subs) {
    for (; s && *subs; subs++)
        if (strstr(s, *subs)) return 1;
    return 0;
}

/* llama.cpp sets lstrip/rstrip on some special tokens by model name: the whitespace next to them
 * is absorbed when they are matched in text. */
static void name_based_strip(struct piso_tokenizer *t, const struct piso_gguf *g, const char *pre) {
    char *name = piso_gguf_find(g, "general.name") ? piso_gguf_get_str(g, "general.name") : NULL;
    char *arch = piso_gguf_find(g, "general.architecture") ? piso_gguf_get_str(g, "general.architecture") : NULL;
    for (char *p = name; p && *p; p++) *p = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
    if (contains_any(pre, (const char *[]){"jina-v2-de", "jina-v2-es", "jina-v2-code", NULL}) ||
        contains_any(arch, (const char *[]){"nomic-bert-moe", "jina-bert-v3", NULL})) {
        set_strip(t, "<mask>", 1, 1);
    } else if (contains_any(name, (const char *[]){"phi-3", "phi3", NULL})) {
        for (int i = 0; i < t->n_added; i++) {
            if (!t->strip) t->strip = calloc((size_t)t->v.n_vocab, 1);
            t->strip[t->added[i]] |= 2;
        }
        set_strip(t, "</s>", 2, 1);
        set_strip(t, "<unk>", 2, 0);
        set_strip(t, "<s>", 2, 0);
        set_strip(t, "<|endoftext|>", 2, 0);
    } else if (contains_any(name, (const char *[]){"modern-bert", NULL})) {
        set_strip(t, "[MASK]", 1, 1);
    }
    free(name);
    free(arch);
}

int piso_tokenizer_from_gguf(const struct piso_gguf *g, struct piso_tokenizer **out) {
    *out = NULL;
    const char *path = g->map.path;
    char *model = piso_gguf_get_str(g, "tokenizer.ggml.model");
    if (!model) return piso_errorf("%s: no tokenizer (tokenizer.ggml.model is missing)", path);
    enum piso_tok_kind kind;
    if (!strcmp(model, "llama")) kind = PISO_TOK_SPM;
    else if (!strcmp(model, "gpt2")) kind = PISO_TOK_BYTE_BPE;
    else if (!strcmp(model, "bert")) kind = PISO_TOK_WPM;
    else {
        piso_errorf("%s: tokenizer.ggml.model '%s' is not supported (only 'llama', 'gpt2' and 'bert')", path, model);
        free(model);
        return -1;
    }
    free(model);
    const struct piso_gguf_kv *tokens = find_array(g, "tokenizer.ggml.tokens", GGUF_VT_STRING, 0, 1);
    if (!tokens) return -1;
    if (tokens->arr_n == 0 || tokens->arr_n >= (1u << 24))
        return piso_errorf("%s: tokenizer.ggml.tokens has %llu entries", path, (unsigned long long)tokens->arr_n);
    int n = (int)tokens->arr_n;
    const struct piso_gguf_kv *scores = NULL, *types = NULL;
    if (piso_gguf_find(g, "tokenizer.ggml.scores") &&
        !(scores = find_array(g, "tokenizer.ggml.scores", GGUF_VT_FLOAT32, (uint64_t)n, 1)))
        return -1;
    if (piso_gguf_find(g, "tokenizer.ggml.token_type") &&
        !(types = find_array(g, "tokenizer.ggml.token_type", GGUF_VT_INT32, (uint64_t)n, 1)))
        return -1;
    const struct piso_gguf_kv *merges = NULL;
    if (kind == PISO_TOK_BYTE_BPE && !(merges = find_array(g, "tokenizer.ggml.merges", GGUF_VT_STRING, 0, 1)))
        return -1;

    struct piso_tokenizer *t = piso_tok_new(kind, n, path);
    if (!t) return piso_errorf("%s: out of memory for %d tokens", path, n);
    for (int i = 0; i < n; i++) {
        size_t len;
        const char *s = arr_string(tokens, (uint64_t)i, &len);
        t->v.pieces[i] = malloc(len + 1);
        if (!t->v.pieces[i]) {
            piso_errorf("%s: out of memory for token %d", path, i);
            goto fail;
        }
        memcpy(t->v.pieces[i], s, len);
        t->v.pieces[i][len] = 0;
        t->piece_len[i] = (int)len;
        if (scores) {
            memcpy(&t->v.scores[i], scores->arr_data + 4 * (size_t)i, 4);
            if (!isfinite(t->v.scores[i])) {
                piso_tokenizer_free(t);
                return piso_errorf("%s: tokenizer.ggml.scores[%d] is not finite", path, i);
            }
        }
        if (types) {
            int32_t ty;
            memcpy(&ty, types->arr_data + 4 * (size_t)i, 4);
            t->v.types[i] = ty;
        }
    }
    if (piso_tok_index_vocab(t) != 0) goto fail;
    if (opt_id(g, "tokenizer.ggml.bos_token_id", n, &t->v.bos_id) ||
        opt_id(g, "tokenizer.ggml.eos_token_id", n, &t->v.eos_id) ||
        opt_id(g, "tokenizer.ggml.unknown_token_id", n, &t->v.unk_id) ||
        opt_id(g, "tokenizer.ggml.padding_token_id", n, &t->v.pad_id))
        goto fail;
    int add_bos = kind == PISO_TOK_SPM, add_space = kind == PISO_TOK_SPM;
    if (piso_gguf_find(g, "tokenizer.ggml.add_bos_token") &&
        piso_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos))
        goto fail;
    if (piso_gguf_find(g, "tokenizer.ggml.add_space_prefix") &&
        piso_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &add_space))
        goto fail;
    t->v.add_bos = add_bos;
    /* control, user-defined and unknown tokens are cut out of the text before BPE (llama.cpp) */
    for (int i = 0; i < n; i++) {
        int ty = t->v.types[i];
        if (ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_USER || ty == TOK_TYPE_UNKNOWN) piso_tok_add_added(t, i);
    }
    if (kind == PISO_TOK_SPM) {
        if (t->v.unk_id < 0) t->v.unk_id = piso_tok_lookup(t, "<unk>", 5);
        t->merge_mode = TOK_MERGE_SCORE;
        t->prefix = add_space ? TOK_PREFIX_SEGMENT : TOK_PREFIX_NONE;
        t->byte_fallback = 1;
    } else if (kind == PISO_TOK_WPM) {
        t->prefix = TOK_PREFIX_SEGMENT; /* every word starts with "▁"; decoding drops the first */
    } else {
        t->merge_mode = TOK_MERGE_RANK;
        char *pre = piso_gguf_find(g, "tokenizer.ggml.pre") ? piso_gguf_get_str(g, "tokenizer.ggml.pre")
                                                              : strdup("default");
        if (!pre) goto fail;
        snprintf(t->v.pre, sizeof t->v.pre, "%s", pre);
        int rc = piso_tok_add_pre_regexes(t, pre);
        if (rc != 0) {
            if (rc == -2) piso_errorf("%s: tokenizer.ggml.pre '%s' is not a pre-tokenizer piso knows", path, pre);
            free(pre);
            goto fail;
        }
        free(pre);
        int nm = (int)merges->arr_n;
        if (piso_tok_pairs_init(t, nm) != 0) goto fail;
        t->v.merges = calloc((size_t)nm + 1, sizeof(char *));
        if (!t->v.merges) {
            piso_errorf("%s: out of memory for %d merges", path, nm);
            goto fail;
        }
        t->v.n_merges = nm;
        for (int i = 0; i < nm; i++) {
            size_t len;
            const char *s = arr_string(merges, (uint64_t)i, &len);
            const char *sp = len > 1 ? memchr(s + 1, ' ', len - 1) : NULL; /* as llama.cpp: from index 1 */
            if (!sp) {
                piso_errorf("%s: tokenizer.ggml.merges[%d] has no space between its two pieces", path, i);
                goto fail;
            }
            if (!(t->v.merges[i] = strndup(s, len))) {
                piso_errorf("%s: out of memory for merge %d", path, i);
                goto fail;
            }
            piso_tok_add_merge(t, i, s, (size_t)(sp - s), sp + 1, len - (size_t)(sp - s) - 1);
        }
    }
    name_based_strip(t, g, t->v.pre[0] ? t->v.pre : NULL);
    piso_tok_sort_added(t);
    *out = t;
    return 0;
fail:
    piso_tokenizer_free(t);
    return -1;
}

int piso_tok_load_gguf_path(const char *path, struct piso_tokenizer **out) {
    struct piso_gguf g;
    if (piso_gguf_open(&g, path) != 0) return -1;
    int rc = piso_tokenizer_from_gguf(&g, out);
    piso_gguf_close(&g);
    return rc;
}
