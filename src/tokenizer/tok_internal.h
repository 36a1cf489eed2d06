/* tokenizer/tok_internal.h — the tokenizer object shared by the loaders, encoders and decoder.
 *
 * One object serves every family. What differs is captured by a few switches:
 *  - merge_mode: TOK_MERGE_SCORE merges the adjacent pair whose concatenated text is the
 *    highest-scoring vocab piece (SentencePiece, llama2.c, GGUF "llama"); TOK_MERGE_RANK merges
 *    the pair with the lowest rank in the merges table (HF BPE, GGUF "gpt2").
 *  - kind (public vocab): SPM text is normalized with U+2581 for spaces; byte-level text is
 *    mapped through the GPT-2 byte-to-unicode table after regex pre-tokenization.
 *  - added tokens are cut out of the raw text before anything else. */
#ifndef PISO_TOK_INTERNAL_H
#define PISO_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "piso/tokenizer.h"

enum { TOK_TYPE_NORMAL = 1, TOK_TYPE_UNKNOWN = 2, TOK_TYPE_CONTROL = 3, TOK_TYPE_USER = 4,
       TOK_TYPE_UNUSED = 5, TOK_TYPE_BYTE = 6 };

enum tok_merge_mode { TOK_MERGE_SCORE = 0, TOK_MERGE_RANK = 1 };

/* SPM pre-processing of each text segment. */
enum tok_spm_prefix {
    TOK_PREFIX_NONE = 0,  /* no dummy prefix */
    TOK_PREFIX_SEGMENT,   /* "▁" before every segment (HF Prepend normalizer, llama.cpp, llama2.c) */
    TOK_PREFIX_FIRST,     /* only before the first segment of the text (HF Metaspace "first") */
};

/* Open-addressing hash set of ids keyed by their piece text. */
struct tok_strmap {
    int32_t *slots; /* id or -1 */
    uint32_t mask;
};

/* Hash map (left id, right id) -> merge index. */
struct tok_pairmap {
    uint64_t *keys; /* (left << 32 | right) + 1; 0 = empty */
    int32_t *val;
    uint32_t mask;
};

struct piso_tokenizer {
    struct piso_tokenizer_vocab v;
    int *piece_len;                 /* [n_vocab] bytes of pieces[i] (GGUF pieces may hold NUL bytes) */
    struct tok_strmap vocab_map;    /* piece -> id (later ids win on duplicates, as llama.cpp) */

    enum tok_merge_mode merge_mode;
    int32_t *merge_result;          /* [n_merges] id of the merged piece (rank = index) */
    struct tok_pairmap pairs;

    /* SPM options */
    enum tok_spm_prefix prefix;
    int byte_fallback;              /* unknown characters become <0xNN> tokens */
    int fuse_unk;                   /* consecutive unknowns collapse into one (HF) */
    unsigned char split_ok[128];    /* SPM: ASCII bytes inside no multi-byte piece can never merge,
                                       so words may be cut around them (exact, and much faster) */
    int metaspace;                  /* HF Metaspace: no dummy prefix when the segment starts with a space */
    int metaspace_split;            /* HF Metaspace split: each "▁" starts a new word */
    int max_piece_len;              /* longest piece in bytes (WordPiece) */
    int byte_token[256];            /* SPM: id of <0xNN>; byte-level: id of the mapped char; -1 */

    /* byte-level options */
    int ignore_merges;              /* a pre-token that is a whole vocab piece is emitted as is */
    int add_prefix_space;           /* HF ByteLevel add_prefix_space: " " before each piece that ... */
    int prefix_level;               /* ... reaches regex level prefix_level (ByteLevel's place in the Sequence) */
    int nfc;                        /* HF NFC normalizer */
    int n_regex;
    pcre2_code **regex;             /* applied in sequence, each splitting the previous pieces */

    /* added tokens matched in raw text (longest match at the leftmost position) */
    int n_added;
    int *added;                     /* ids, longest piece first once piso_tok_sort_added has run */
    int added_cap;
    unsigned char *is_added;        /* [n_vocab] or NULL */
    unsigned char *strip;           /* [n_vocab] or NULL: 1 = lstrip, 2 = rstrip, 4 = normalized (HF) */
    int match_normalized;           /* tokens flagged 4 are matched in the SPM-normalized text */
    int parse_special;              /* match control tokens too (default 1, as HF) */
    int bos_template;               /* HF post-processor adds BOS */
    char *source;                   /* path, for messages */
};

/* ---- tok_common.c ---- */
struct piso_tokenizer *piso_tok_new(enum piso_tok_kind kind, int n_vocab, const char *source);
uint32_t piso_tok_hash(const char *s, size_t n);
int piso_tok_lookup(const struct piso_tokenizer *t, const char *s, size_t n); /* id or -1 */
/* After pieces/lengths are set: builds vocab_map and the byte tables. */
int piso_tok_index_vocab(struct piso_tokenizer *t);
/* Sizes the pair map for n merges; then piso_tok_add_merge for rank = 0, 1, ... A merge whose parts or
 * result are not vocab pieces can never apply and is skipped; a repeated pair keeps its first rank. */
int piso_tok_pairs_init(struct piso_tokenizer *t, int n); /* -1: out of memory */
void piso_tok_add_merge(struct piso_tokenizer *t, int rank, const char *l, size_t ln, const char *r, size_t rn);
int piso_tok_pair_find(const struct piso_tokenizer *t, int left, int right); /* rank or -1 */
/* Appends an added token (duplicates ignored); every loader calls piso_tok_sort_added after the last
 * one, which orders them longest first (stable), as matching needs. Both O(n log n) overall. */
void piso_tok_add_added(struct piso_tokenizer *t, int id);
void piso_tok_sort_added(struct piso_tokenizer *t);
/* Growable int vector */
struct tok_ids {
    int *v;
    int n, cap;
    int oom; /* a push failed for lack of memory: the encoding is incomplete (piso_tokenize reports it) */
};
void piso_tok_ids_push(struct tok_ids *a, int x);
/* Appends the UTF-8 encoding of cp to buf (at most 4 bytes); returns bytes written. */
int piso_tok_utf8_put(uint32_t cp, char *buf);
/* Length of the UTF-8 sequence starting with byte c (1 for invalid lead bytes). */
int piso_tok_utf8_len(unsigned char c);
size_t piso_tok_utf8_invalid_at(const char *text, size_t n); /* bpe_bytelevel.c; n if valid */

/* ---- bpe_merge.c: merges over one word text[n]; appends ids. ---- */
int piso_tok_merge_word(const struct piso_tokenizer *t, const char *text, size_t n, struct tok_ids *out);

/* ---- spm.c / bpe_bytelevel.c: encode one segment of raw text (no added tokens inside). ---- */
int piso_tok_spm_encode_segment(const struct piso_tokenizer *t, const char *text, size_t n, int first,
                           struct tok_ids *out);
int piso_tok_wpm_encode_segment(const struct piso_tokenizer *t, const char *text, size_t n, struct tok_ids *out);
int piso_tok_bytelevel_encode_segment(const struct piso_tokenizer *t, const char *text, size_t n,
                                 struct tok_ids *out);
/* GPT-2 byte <-> unicode code point table. */
uint32_t piso_tok_byte_to_cp(unsigned char b);
int piso_tok_cp_to_byte(uint32_t cp); /* -1 if not in the table */
/* Compiles a regex (UTF + UCP, $ only at the end) and appends it to t->regex. */
int piso_tok_add_regex(struct piso_tokenizer *t, const char *pattern);
/* Regexes used by llama.cpp for a tokenizer.ggml.pre name; -2 if the name is unknown. */
int piso_tok_add_pre_regexes(struct piso_tokenizer *t, const char *pre);

/* ---- nfc.c: NFC of text[n] (malloc'd, length in *out_n), or NULL if the text is already NFC. */
char *piso_tok_nfc(const char *text, size_t n, size_t *out_n);

/* ---- loaders ---- */
int piso_tok_load_llama2c(const char *path, struct piso_tokenizer **out);
int piso_tok_load_hf_json(const char *path, struct piso_tokenizer **out);
int piso_tok_load_gguf_path(const char *path, struct piso_tokenizer **out);

#endif
