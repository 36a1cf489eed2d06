/* piso/imatrix.h — llama.cpp importance matrices: per input column, the mean of the squared
 * activations entering a weight, keyed by the GGUF tensor name (shared/docs/llamacpp-formats.md §4).
 * Reads and writes the GGUF imatrix format (<name>.in_sum2 + <name>.counts) and the legacy .dat. */
#ifndef PISO_IMATRIX_H
#define PISO_IMATRIX_H

#include "piso/common.h"

struct piso_model;

struct piso_imatrix_entry {
    char *name;      /* GGUF tensor name, e.g. "blk.0.attn_q.weight" */
    int64_t n;       /* input columns (n_mat = 1: dense models) */
    double *sum2;    /* [n] Σ over tokens of a_j² */
    int64_t count;   /* tokens accumulated */
};

struct piso_imatrix {
    int n;
    struct piso_imatrix_entry *e; /* sorted by name */
    int chunk_count, chunk_size;
    char *dataset;   /* calibration file name (may be NULL) */
};

/* Computes the imatrix of a model on tokens[n_tokens] with llama.cpp's chunking: n_chunk =
 * n_tokens / n_ctx non-overlapping chunks (capped by max_chunks > 0), each chunk's first token
 * replaced by bos_id (if >= 0); every token of every chunk contributes. Entries for every linear
 * weight of the blocks (blk.N.*), as llama-imatrix records them. */
int piso_imatrix_compute(const struct piso_model *m, const int *tokens, int n_tokens, int n_ctx, int max_chunks,
                         int bos_id, const char *dataset, struct piso_imatrix **out);
/* Loads a GGUF imatrix, or (if the file is not GGUF) a legacy .dat. */
int piso_imatrix_load(const char *path, struct piso_imatrix **out);
int piso_imatrix_save_gguf(const struct piso_imatrix *im, const char *path);
int piso_imatrix_save_dat(const struct piso_imatrix *im, const char *path);
void piso_imatrix_free(struct piso_imatrix *im);

/* The mean of squared activations for `name` into out[n] (sum2/count, as llama-quantize uses it).
 * Returns 0, 1 if there is no entry (out untouched), or -1 if the entry has another length. */
int piso_imatrix_get(const struct piso_imatrix *im, const char *name, int64_t n, float *out);
/* The entry for `name`, or NULL. */
const struct piso_imatrix_entry *piso_imatrix_find(const struct piso_imatrix *im, const char *name);

/* Dense calibration: per decoder layer, the second moments H = XᵀX/n of the inputs of its linear
 * layers (attn: input of q/k/v [D,D]; o: input of attn_output [Hq,Hq]; ffn: input of gate/up [D,D];
 * down: input of ffn_down [F,F]), same chunking as piso_imatrix_compute. Sums in fp64. */
struct piso_calib_hessians {
    int n_layers;
    int64_t D, Hq, F;
    float **h;        /* [n_layers * 4]: attn, o, ffn, down, each row-major */
    int64_t n_tokens;
};
int piso_calib_hessians_compute(const struct piso_model *m, const int *tokens, int n_tokens, int n_ctx,
                                int max_chunks, int bos_id, struct piso_calib_hessians **out);
void piso_calib_hessians_free(struct piso_calib_hessians *hs);
/* The Hessian of the input of GGUF weight `name` (blk.N.*.weight) if it has n input columns, else NULL. */
const float *piso_calib_hessian_for(const struct piso_calib_hessians *hs, const char *name, int64_t n);

/* The imatrix and Hessians of piso_imatrix_compute and piso_calib_hessians_compute (bitwise), one
 * block at a time for streaming: begin embeds every chunk and keeps the residual streams
 * (n_chunk * n_ctx * dim floats); block(l), for l = 0, 1, ... in order and with block l's weights
 * present, runs block l on every chunk and fills the imatrix entries of blk.l (the imatrix has
 * every entry from the start, zero until its block runs) and the Hessians of block l (those of the
 * block before are freed; NULL for the others). hessians = 0: the imatrix only. */
struct piso_calib_stream;
int piso_calib_stream_begin(const struct piso_model *m, const int *tokens, int n_tokens, int n_ctx, int max_chunks,
                            int bos_id, const char *dataset, int hessians, struct piso_calib_stream **out);
int piso_calib_stream_block(struct piso_calib_stream *s, const struct piso_model *m, int layer);
int piso_calib_stream_chunks(const struct piso_calib_stream *s);
const struct piso_imatrix *piso_calib_stream_imatrix(const struct piso_calib_stream *s);
const struct piso_calib_hessians *piso_calib_stream_hessians(const struct piso_calib_stream *s);
void piso_calib_stream_free(struct piso_calib_stream *s);

#endif
