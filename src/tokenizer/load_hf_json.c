/* Hugging Face tokenizer.json (model type BPE) in both families:
 *  - SentencePiece style: normalizer Prepend("▁") + Replace(" ", "▁") or a Metaspace
 *    pre-tokenizer, byte_fallback, merges by rank (Llama-2, TinyLlama, stories260K-hf);
 *  - byte-level: pre_tokenizer Split(regex) and/or ByteLevel (GPT-2, Llama-3, Qwen2/3).
 * Special tokens (bos/eos) come from tokenizer_config.json beside the file, else config.json,
 * else the post-processor template. Unsupported components are rejected by name. */
#include "tokenizer/tok_internal.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#define METASPACE "\xE2\x96\x81"

static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(x) ? x->valuestring : NULL;
}

static int jbool(const cJSON *o, const char *key, int dflt) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(x) ? cJSON_IsTrue(x) : dflt;
}

struct hf_load {
    struct piso_tokenizer *t;
    const char *path;
    int saw_prepend, saw_replace, saw_bytelevel, saw_metaspace;
    int n_split;           /* Split pre-tokenizers seen */
    const char *pre_guess; /* llama.cpp's tokenizer.ggml.pre name for a regex we recognise */
};

/* The Split regexes of well-known byte-level tokenizers, and llama.cpp's names for them (so a GGUF
 * export can say which pre-tokenizer to use). */
static const char *const KNOWN_SPLITS[][2] = {
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
     "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", "llama-bpe"},
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
     "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", "qwen2"},
};

static int normalizer(struct hf_load *L, const cJSON *n) {
    if (!n || cJSON_IsNull(n)) return 0;
    const char *type = jstr(n, "type");
    if (!type) return piso_errorf("%s: normalizer without a type", L->path);
    if (!strcmp(type, "Sequence")) {
        const cJSON *x;
        cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(n, "normalizers"))
            if (normalizer(L, x) != 0) return -1;
        return 0;
    }
    if (!strcmp(type, "Prepend")) {
        const char *p = jstr(n, "prepend");
        if (!p || strcmp(p, METASPACE) != 0)
            return piso_errorf("%s: normalizer Prepend(\"%s\") is not supported (only \"\u2581\")", L->path,
                               p ? p : "");
        L->saw_prepend = 1;
        return 0;
    }
    if (!strcmp(type, "Replace")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(n, "pattern");
        const char *from = jstr(pat, "String"), *to = jstr(n, "content");
        if (!from || !to || strcmp(from, " ") != 0 || strcmp(to, METASPACE) != 0)
            return piso_errorf("%s: normalizer Replace is supported only as \" \" -> \"\u2581\"", L->path);
        L->saw_replace = 1;
        return 0;
    }
    if (!strcmp(type, "NFC")) {
        L->t->nfc = 1;
        return 0;
    }
    return piso_errorf("%s: normalizer type '%s' is not supported", L->path, type);
}

static int pre_tokenizer(struct hf_load *L, const cJSON *p) {
    struct piso_tokenizer *t = L->t;
    if (!p || cJSON_IsNull(p)) return 0;
    const char *type = jstr(p, "type");
    if (!type) return piso_errorf("%s: pre_tokenizer without a type", L->path);
    if (!strcmp(type, "Sequence")) {
        const cJSON *x;
        cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(p, "pretokenizers"))
            if (pre_tokenizer(L, x) != 0) return -1;
        return 0;
    }
    if (!strcmp(type, "Split")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
        const char *re = jstr(pat, "Regex"), *lit = jstr(pat, "String");
        const char *beh = jstr(p, "behavior");
        if (!beh || strcmp(beh, "Isolated") != 0 || jbool(p, "invert", 0))
            return piso_errorf("%s: pre_tokenizer Split behavior '%s'%s is not supported (only Isolated)",
                               L->path, beh ? beh : "?", jbool(p, "invert", 0) ? " inverted" : "");
        if (re) {
            L->n_split++;
            for (size_t k = 0; k < sizeof KNOWN_SPLITS / sizeof *KNOWN_SPLITS; k++)
                if (!strcmp(re, KNOWN_SPLITS[k][0])) L->pre_guess = KNOWN_SPLITS[k][1];
            return piso_tok_add_regex(t, re);
        }
        if (!lit) return piso_errorf("%s: pre_tokenizer Split without a pattern", L->path);
        char *q = malloc(strlen(lit) + 8);
        sprintf(q, "\\Q%s\\E", lit);
        int rc = strstr(lit, "\\E") ? piso_errorf("%s: Split pattern with \\E", L->path) : piso_tok_add_regex(t, q);
        free(q);
        return rc;
    }
    if (!strcmp(type, "ByteLevel")) {
        L->saw_bytelevel = 1;
        t->add_prefix_space = jbool(p, "add_prefix_space", 0);
        t->prefix_level = t->n_regex; /* pieces split by earlier Split regexes each get the space */
        if (jbool(p, "use_regex", 1)) {
            if (!t->add_prefix_space) L->pre_guess = "gpt-2";
            L->n_split++;
            return piso_tok_add_regex(t, "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|"
                                    "\\s+(?!\\S)|\\s+");
        }
        return 0;
    }
    if (!strcmp(type, "Digits")) {
        L->n_split++;
        return piso_tok_add_regex(t, jbool(p, "individual_digits", 0) ? "\\p{N}" : "\\p{N}+");
    }
    if (!strcmp(type, "Metaspace")) {
        const char *rep = jstr(p, "replacement");
        if (rep && strcmp(rep, METASPACE) != 0)
            return piso_errorf("%s: Metaspace replacement '%s' is not supported", L->path, rep);
        L->saw_metaspace = 1;
        t->metaspace = 1;
        const char *scheme = jstr(p, "prepend_scheme");
        if (scheme) t->prefix = !strcmp(scheme, "always") ? TOK_PREFIX_SEGMENT
                                : !strcmp(scheme, "first") ? TOK_PREFIX_FIRST : TOK_PREFIX_NONE;
        else t->prefix = jbool(p, "add_prefix_space", 1) ? TOK_PREFIX_SEGMENT : TOK_PREFIX_NONE;
        t->metaspace_split = jbool(p, "split", 1);
        return 0;
    }
    return piso_errorf("%s: pre_tokenizer type '%s' is not supported", L->path, type);
}

/* A token given as "text" or {"content": "text"} (tokenizer_config.json) -> id, or -1. */
static int config_token(const struct piso_tokenizer *t, const cJSON *cfg, const char *key) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(cfg, key);
    const char *s = cJSON_IsString(x) ? x->valuestring : jstr(x, "content");
    return s ? piso_tok_lookup(t, s, strlen(s)) : -1;
}

static cJSON *read_json_beside(const char *path, const char *name) {
    char *dir = strdup(path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else strcpy(dir, ".");
    char *p = piso_path_join(dir, name);
    free(dir);
    char *text = NULL;
    size_t n;
    cJSON *j = NULL;
    if (piso_file_exists(p) && piso_read_file_max(p, &text, &n, PISO_JSON_LIMIT) == 0) j = cJSON_ParseWithLength(text, n);
    free(text);
    free(p);
    return j;
}

static void special_ids(struct piso_tokenizer *t, const char *path, const cJSON *root) {
    cJSON *cfg = read_json_beside(path, "tokenizer_config.json");
    cJSON *mcfg = read_json_beside(path, "config.json");
    struct { const char *name; int *id; } roles[] = {
        {"bos", &t->v.bos_id}, {"eos", &t->v.eos_id}, {"pad", &t->v.pad_id}, {"unk", &t->v.unk_id}};
    for (int r = 0; r < 4; r++) {
        char key[32];
        snprintf(key, sizeof key, "%s_token", roles[r].name);
        int id = cfg ? config_token(t, cfg, key) : -1;
        if (id < 0 && mcfg) {
            snprintf(key, sizeof key, "%s_token_id", roles[r].name);
            const cJSON *x = cJSON_GetObjectItemCaseSensitive(mcfg, key);
            if (cJSON_IsArray(x)) x = cJSON_GetArrayItem(x, 0);
            if (cJSON_IsNumber(x) && x->valueint >= 0 && x->valueint < t->v.n_vocab) id = x->valueint;
        }
        if (id >= 0) *roles[r].id = id;
    }
    /* post-processor template: a special token before the sequence is the BOS */
    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    const char *pt = jstr(pp, "type");
    if (pt && !strcmp(pt, "TemplateProcessing")) {
        const cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(pp, "single"), 0);
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(first, "SpecialToken");
        const char *name = jstr(sp, "id");
        if (name) {
            t->bos_template = 1;
            int id = piso_tok_lookup(t, name, strlen(name));
            if (t->v.bos_id < 0) t->v.bos_id = id;
        }
    }
    if (t->v.kind == PISO_TOK_SPM) { /* SentencePiece conventions */
        if (t->v.bos_id < 0) t->v.bos_id = piso_tok_lookup(t, "<s>", 3);
        if (t->v.eos_id < 0) t->v.eos_id = piso_tok_lookup(t, "</s>", 4);
    }
    t->v.add_bos = cfg && cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token"))
                       ? jbool(cfg, "add_bos_token", 0)
                       : t->bos_template;
    cJSON_Delete(cfg);
    cJSON_Delete(mcfg);
}

static int load_merges(struct hf_load *L, const cJSON *merges) {
    struct piso_tokenizer *t = L->t;
    int n = cJSON_GetArraySize(merges);
    if (piso_tok_pairs_init(t, n) != 0) return -1;
    t->v.merges = calloc((size_t)n + 1, sizeof(char *));
    if (!t->v.merges) return piso_errorf("%s: out of memory for %d merges", L->path, n);
    t->v.n_merges = n;
    int rank = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, merges) {
        const char *a, *b;
        size_t al, bl;
        if (cJSON_IsString(m)) { /* "left right" */
            const char *s = m->valuestring, *sp = strchr(s, ' ');
            if (!sp || strchr(sp + 1, ' '))
                return piso_errorf("%s: model.merges[%d] \"%s\" is not two pieces separated by one space",
                                   L->path, rank, s);
            a = s; al = (size_t)(sp - s); b = sp + 1; bl = strlen(b);
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(cJSON_GetArrayItem(m, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(m, 1))) { /* ["left", "right"] */
            a = cJSON_GetArrayItem(m, 0)->valuestring; al = strlen(a);
            b = cJSON_GetArrayItem(m, 1)->valuestring; bl = strlen(b);
        } else {
            return piso_errorf("%s: model.merges[%d] is neither \"a b\" nor [\"a\", \"b\"]", L->path, rank);
        }
        char *joined = malloc(al + bl + 2);
        if (!joined) return piso_errorf("%s: out of memory for merge %d", L->path, rank);
        memcpy(joined, a, al);
        joined[al] = ' ';
        memcpy(joined + al + 1, b, bl);
        joined[al + bl + 1] = 0;
        t->v.merges[rank] = joined;
        piso_tok_add_merge(t, rank, a, al, b, bl);
        rank++;
    }
    return 0;
}

static int load_root(struct hf_load *L, const cJSON *root, struct piso_tokenizer **out) {
    const char *path = L->path;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const char *mtype = jstr(model, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (!model) return piso_errorf("%s: no \"model\" object", path);
    if (!mtype || strcmp(mtype, "BPE") != 0)
        return piso_errorf("%s: model.type '%s' is not supported (only BPE)", path, mtype ? mtype : "?");
    if (!cJSON_IsObject(vocab)) return piso_errorf("%s: model.vocab is missing or not an object", path);
    if (!cJSON_IsArray(merges)) return piso_errorf("%s: model.merges is missing or not an array", path);
    if (jstr(model, "continuing_subword_prefix") && *jstr(model, "continuing_subword_prefix"))
        return piso_errorf("%s: model.continuing_subword_prefix is not supported", path);
    if (jstr(model, "end_of_word_suffix") && *jstr(model, "end_of_word_suffix"))
        return piso_errorf("%s: model.end_of_word_suffix is not supported", path);
    long n_vocab = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, vocab) {
        if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble >= (1 << 24))
            return piso_errorf("%s: model.vocab[\"%s\"] is not a valid id", path, x->string);
        if (x->valueint + 1 > n_vocab) n_vocab = x->valueint + 1;
    }
    cJSON_ArrayForEach(x, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(x, "id");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= (1 << 24) || !jstr(x, "content"))
            return piso_errorf("%s: added_tokens entry without a valid id and content", path);
        if (id->valueint + 1 > n_vocab) n_vocab = id->valueint + 1;
    }
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    char *pre_text = pre ? cJSON_PrintUnformatted(pre) : NULL;
    int is_bytelevel = pre_text && strstr(pre_text, "\"ByteLevel\"") != NULL;
    free(pre_text);
    struct piso_tokenizer *t = piso_tok_new(is_bytelevel ? PISO_TOK_BYTE_BPE : PISO_TOK_SPM, (int)n_vocab, path);
    if (!t) return piso_errorf("%s: out of memory for %ld tokens", path, n_vocab);
    L->t = t;
    cJSON_ArrayForEach(x, vocab) {
        int id = x->valueint;
        free(t->v.pieces[id]);
        if (!(t->v.pieces[id] = strdup(x->string))) return piso_errorf("%s: out of memory for token %d", path, id);
        t->piece_len[id] = (int)strlen(x->string);
    }
    cJSON_ArrayForEach(x, added) {
        int id = cJSON_GetObjectItemCaseSensitive(x, "id")->valueint;
        const char *c = jstr(x, "content");
        free(t->v.pieces[id]);
        if (!(t->v.pieces[id] = strdup(c))) return piso_errorf("%s: out of memory for token %d", path, id);
        t->piece_len[id] = (int)strlen(c);
        t->v.types[id] = jbool(x, "special", 0) ? TOK_TYPE_CONTROL : TOK_TYPE_USER;
        int strip = (jbool(x, "lstrip", 0) ? 1 : 0) | (jbool(x, "rstrip", 0) ? 2 : 0) |
                    (jbool(x, "normalized", 0) ? 4 : 0);
        if (strip && !t->strip) t->strip = calloc((size_t)t->v.n_vocab, 1);
        if (strip) t->strip[id] = (unsigned char)strip;
    }
    for (int i = 0; i < t->v.n_vocab; i++) {
        if (!t->v.pieces[i]) {
            if (!(t->v.pieces[i] = strdup(""))) return piso_errorf("%s: out of memory", path);
            t->v.types[i] = TOK_TYPE_UNUSED;
        }
        const char *p = t->v.pieces[i];
        if (!is_bytelevel && t->v.types[i] == TOK_TYPE_NORMAL && t->piece_len[i] == 6 && p[0] == '<' && p[1] == '0' &&
            p[2] == 'x' && p[5] == '>')
            t->v.types[i] = TOK_TYPE_BYTE;
        t->v.scores[i] = 0;
    }
    if (piso_tok_index_vocab(t) != 0) return -1;
    cJSON_ArrayForEach(x, added) piso_tok_add_added(t, cJSON_GetObjectItemCaseSensitive(x, "id")->valueint);
    t->merge_mode = TOK_MERGE_RANK;
    t->byte_fallback = jbool(model, "byte_fallback", 0);
    t->fuse_unk = jbool(model, "fuse_unk", 0);
    t->ignore_merges = jbool(model, "ignore_merges", 0);
    const char *unk = jstr(model, "unk_token");
    if (unk) t->v.unk_id = piso_tok_lookup(t, unk, strlen(unk));
    if (load_merges(L, merges) != 0) return -1;
    /* tokenizer.json has no scores. Give each piece minus the rank of the first merge that makes it,
     * so that merging by score (llama.cpp's SPM, e.g. after a GGUF export) follows the merge ranks;
     * pieces that no merge makes keep 0 (single characters, bytes, added tokens). */
    for (int r = t->v.n_merges - 1; r >= 0; r--)
        if (t->merge_result[r] >= 0) t->v.scores[t->merge_result[r]] = -(float)(r + 1);
    if (normalizer(L, cJSON_GetObjectItemCaseSensitive(root, "normalizer")) != 0) return -1;
    if (pre_tokenizer(L, pre) != 0) return -1;
    if (t->v.kind == PISO_TOK_SPM) {
        if (L->saw_prepend) t->prefix = TOK_PREFIX_SEGMENT;
        int any_normalized = 0; /* HF matches these added tokens after the normalizer has run */
        for (int i = 0; t->strip && i < t->v.n_vocab; i++) any_normalized |= t->strip[i] & 4;
        t->match_normalized = L->saw_replace && any_normalized;
        if (!L->saw_metaspace && !L->saw_replace)
            return piso_errorf("%s: neither a ByteLevel pre-tokenizer nor the SentencePiece normalizer "
                               "(Replace \" \" -> \"\u2581\" or Metaspace): unsupported tokenizer layout", path);
        if (t->n_regex > 0) return piso_errorf("%s: Split pre-tokenizers without ByteLevel are not supported", path);
    }
    if (t->v.kind == PISO_TOK_BYTE_BPE && L->n_split == 1 && L->pre_guess)
        snprintf(t->v.pre, sizeof t->v.pre, "%s", L->pre_guess);
    special_ids(t, path, root);
    piso_tok_sort_added(t);
    *out = t;
    return 0;
}

int piso_tok_load_hf_json(const char *path, struct piso_tokenizer **out) {
    char *text = NULL;
    size_t n;
    *out = NULL;
    if (piso_read_file(path, &text, &n) != 0) return -1;
    cJSON *root = cJSON_ParseWithLength(text, n);
    free(text);
    if (!root) return piso_errorf("%s: not valid JSON", path);
    struct hf_load L = {.path = path};
    int rc = load_root(&L, root, out);
    cJSON_Delete(root);
    if (rc != 0) {
        piso_tokenizer_free(L.t);
        *out = NULL;
    }
    return rc;
}
