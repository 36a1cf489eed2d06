/* piso/tokenizer.h — bit-exact tokenizers: HF tokenizer.json (SentencePiece-style BPE with byte
 * fallback, and byte-level BPE with PCRE2 pre-tokenizer regexes), llama2.c tokenizer.bin, and
 * GGUF tokenizer.ggml.* (models "llama" and "gpt2"). */
#ifndef PISO_TOKENIZER_H
#define PISO_TOKENIZER_H

#include "piso/common.h"

struct piso_gguf;

enum piso_tok_kind {
    PISO_TOK_SPM = 0,   /* SentencePiece-style BPE (Llama-2, llama2.c, GGUF "llama") */
    PISO_TOK_BYTE_BPE,  /* byte-level BPE (GPT-2, Llama-3, Qwen2; GGUF "gpt2") */
    PISO_TOK_WPM,       /* WordPiece (GGUF "bert"), encode as llama.cpp */
};

/* GGUF token types (llama.cpp): 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte. */
struct piso_tokenizer_vocab {
    enum piso_tok_kind kind;
    int n_vocab;
    char **pieces;       /* [n_vocab] token text as stored (SPM: with U+2581; BPE: byte-level chars) */
    float *scores;       /* [n_vocab] */
    int *types;          /* [n_vocab] */
    int n_merges;
    char **merges;       /* "a b" strings (BPE), NULL for SPM */
    int bos_id, eos_id, unk_id, pad_id; /* -1 when absent */
    int add_bos;         /* the tokenizer adds BOS by default */
    char pre[32];        /* GGUF tokenizer.ggml.pre name for byte-level BPE ("llama-bpe", "qwen2", ...) */
};

struct piso_tokenizer;

/* path: a tokenizer.json, a model directory (uses its tokenizer.json or tokenizer.bin),
 * a llama2.c tokenizer.bin, or a GGUF file. */
int piso_tokenizer_load(const char *path, struct piso_tokenizer **out);
int piso_tokenizer_from_gguf(const struct piso_gguf *g, struct piso_tokenizer **out);
void piso_tokenizer_free(struct piso_tokenizer *t);

/* Encodes text[len] (UTF-8). add_bos: prepend BOS. *ids is malloc'd. */
int piso_tokenize(const struct piso_tokenizer *t, const char *text, size_t len, int add_bos, int **ids,
                  int *n_ids);
/* Decodes ids to UTF-8 text (malloc'd, NUL-terminated). skip_special drops control tokens. */
char *piso_detokenize(const struct piso_tokenizer *t, const int *ids, int n_ids, int skip_special);
const struct piso_tokenizer_vocab *piso_tokenizer_vocab(const struct piso_tokenizer *t);
/* Whether control tokens written in the text (e.g. "<|endoftext|>", "<s>") become their ids.
 * Default 1, as HF tokenizers do; 0 is llama.cpp's default (parse_special = false): control
 * tokens are then tokenized as plain text, user-defined added tokens still match. */
void piso_tokenizer_set_parse_special(struct piso_tokenizer *t, int parse_special);

#endif
