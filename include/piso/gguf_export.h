/* piso/gguf_export.h — writes a loaded model as a llama.cpp GGUF (architecture "llama") in one of
 * ggml's tensor types, with llama.cpp's reference scales or piso's exact block scales. */
#ifndef PISO_GGUF_EXPORT_H
#define PISO_GGUF_EXPORT_H

#include "piso/common.h"

struct piso_model;
struct piso_tokenizer_vocab;
struct piso_imatrix;

enum piso_gguf_scale { PISO_GGUF_SCALE_PISO = 0, PISO_GGUF_SCALE_REF };

struct piso_calib_hessians; /* imatrix.h */

struct piso_gguf_export_opts {
    int type;                    /* ggml type of the 2-D weights (F32, F16, BF16, Q8_0, ..., Q6_K) */
    int output_type;             /* type of output.weight (or the tied token_embd); -1: llama.cpp's
                                    choice (Q6_K for quantized files, falling back like the rest) */
    enum piso_gguf_scale scale;  /* piso exact scales or llamacpp-ref */
    const struct piso_imatrix *imatrix;          /* importance (may be NULL) */
    const struct piso_calib_hessians *hessians;  /* dense calibration (may be NULL; piso only) */
    const char *name;            /* general.name (may be NULL) */
    int blend;                   /* piso scales: weigh by h·sqrt(σ²+x²) (llama.cpp's blend), not h */
    int mixture;                 /* 0: `type` for every weight; else a LLAMA_FTYPE id of a
                                    llama-quantize mixture (10 Q2_K, 11 Q3_K_S, 12 Q3_K_M, 15 Q4_K_M,
                                    17 Q5_K_M): per-tensor types as llama-quantize picks them */
    const int *linear_types;     /* mixed precision: the type of linear k of block l at [l · PISO_LIN_COUNT + k]
                                    (before the row fallback), overriding type and mixture; or NULL */
};

/* The values the export stores for weight `name` W [N, D] in `type` (after the row fallback), with
 * the scales, imatrix and Hessians of o, dequantized into out [N, D] (NVFP4: times its tensor
 * scale). Rows are quantized independently, so any row order gives the same rows. */
int piso_gguf_weight_roundtrip(const struct piso_gguf_export_opts *o, const char *name, const float *W, int64_t N,
                               int64_t D, int type, int tensor_scale_ok, float *out);

/* The llama-quantize mixtures piso reproduces: name → LLAMA_FTYPE id and its base type; -1 if unknown. */
int piso_gguf_mixture_from_name(const char *name, int *ftype, int *base_type);
/* The type llama-quantize's mixture `ftype` gives weight `role` (enum piso_tensor_role) of layer
 * `layer` with ne0 inputs, before the row fallback; counters are the layer index and n_layers
 * (dense llama-style models: no experts, not Falcon, not 70B). */
int piso_gguf_mixture_type(int ftype, int base_type, int role, int layer, int n_layers, int n_gqa, int64_t ne0,
                           int tied);

struct piso_gguf_export_stats {
    int64_t n_tensors, n_fallback;  /* tensors written; weights written in a fallback type */
    uint64_t file_bytes;
    double seconds;
    int counts[64];                 /* tensors per ggml type */
    double objective;               /* Σ over the quantized blk.* weights of Σ_j h_j (w − ŵ)², h the
                                       imatrix entry (1 without one) */
    struct {                        /* the first PISO_GGUF_MAX_FALLBACKS weights stored in a fallback type */
        char name[96];
        int64_t ne0;
        int want, got;
    } fallbacks[64];
};
#define PISO_GGUF_MAX_FALLBACKS 64

/* Fallback for a row length that is not a multiple of the block size (llama.cpp's rule: Q4_K→Q5_0,
 * Q5_K→Q5_1, Q6_K→Q8_0, and F16 when even 32 does not divide the row). */
int piso_gguf_type_for_row(int type, int64_t ne0);

int piso_gguf_export(const struct piso_model *m, const struct piso_tokenizer_vocab *vocab,
                     const struct piso_gguf_export_opts *opts, const char *path, struct piso_gguf_export_stats *st);

/* Streamed export: the same file as piso_gguf_export, byte for byte, with one block's weights in
 * F32 at a time (a lazy model: piso_model_load_lazy; any model works). begin checks what the eager
 * export checks, computes the header (every key and tensor info: names, shapes, types from the
 * config and the options, offsets) and writes it to a temporary file next to path; block(l), for
 * l = 0, 1, ... in order with block l's weights present, quantizes and writes block l's tensors at
 * their offsets, weighted by imatrix / hessians when given (else those of the options: a stream of
 * statistics computed block by block passes them here); finish writes the global tensors (the
 * embeddings and the output head in panels of rows from the model's file), renames the file into
 * place and frees the stream, whatever happens. abort (NULL: no-op) removes the temporary file.
 * Not streamed (begin refuses): mixed precision (linear_types) and NVFP4 weights, whose tensor
 * scale tensors exist only when the scale is not 1. */
struct piso_gguf_stream;
int piso_gguf_stream_begin(const struct piso_model *m, const struct piso_tokenizer_vocab *vocab,
                           const struct piso_gguf_export_opts *opts, const char *path, struct piso_gguf_stream **out);
int piso_gguf_stream_block(struct piso_gguf_stream *s, const struct piso_model *m, int layer,
                           const struct piso_imatrix *imatrix, const struct piso_calib_hessians *hessians);
int piso_gguf_stream_finish(struct piso_gguf_stream *s, const struct piso_model *m, struct piso_gguf_export_stats *st);
void piso_gguf_stream_abort(struct piso_gguf_stream *s);

/* Memory a `piso quantize --gguf` run needs, in bytes (a lower estimate: the large buffers only).
 * weights: the F32 weights (streaming: one block; else the model); calib: the residual streams
 * (streaming: every chunk's, kept across blocks; else one chunk's) and one block's taps;
 * hessians: the dense statistics of piso scales (streaming: one block's in fp64 while accumulated
 * plus the block before as fp32; else every block's, fp64 and fp32); solver: the fp64 factor of
 * the widest Hessian. n_chunk = 0: no calibration text. */
struct piso_gguf_memory {
    double weights, calib, hessians, solver, total;
    int streaming;
};
struct piso_config;
void piso_gguf_memory_estimate(const struct piso_config *cfg, int streaming, int64_t n_chunk, int64_t n_ctx,
                               int hessians, struct piso_gguf_memory *m);
/* −1 with the numbers in the error when the estimate exceeds the memory available (see
 * piso_mem_available); 0 when it fits or nothing is known. */
int piso_gguf_memory_check(const struct piso_config *cfg, int streaming, int64_t n_chunk, int64_t n_ctx, int hessians);

/* llama_ftype value for general.file_type (-1 when there is none, e.g. BF16 is 32). */
int piso_gguf_file_type(int type);

#endif
