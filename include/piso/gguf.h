/* piso/gguf.h — GGUF files (read: mmap + validation; write: atomic) and the ggml tensor types.
 * Layout and rules: shared/docs/llamacpp-formats.md §1-§2. */
#ifndef PISO_GGUF_H
#define PISO_GGUF_H

#include "piso/common.h"

enum piso_gguf_vtype {
    GGUF_VT_UINT8 = 0, GGUF_VT_INT8 = 1, GGUF_VT_UINT16 = 2, GGUF_VT_INT16 = 3, GGUF_VT_UINT32 = 4,
    GGUF_VT_INT32 = 5, GGUF_VT_FLOAT32 = 6, GGUF_VT_BOOL = 7, GGUF_VT_STRING = 8, GGUF_VT_ARRAY = 9,
    GGUF_VT_UINT64 = 10, GGUF_VT_INT64 = 11, GGUF_VT_FLOAT64 = 12, GGUF_VT_COUNT
};

/* ggml tensor type ids (stable subset). */
enum piso_ggml_type {
    GGML_T_F32 = 0, GGML_T_F16 = 1, GGML_T_Q4_0 = 2, GGML_T_Q4_1 = 3, GGML_T_Q5_0 = 6, GGML_T_Q5_1 = 7,
    GGML_T_Q8_0 = 8, GGML_T_Q8_1 = 9, GGML_T_Q2_K = 10, GGML_T_Q3_K = 11, GGML_T_Q4_K = 12,
    GGML_T_Q5_K = 13, GGML_T_Q6_K = 14, GGML_T_Q8_K = 15, GGML_T_IQ4_NL = 20, GGML_T_BF16 = 30,
    GGML_T_MXFP4 = 39, GGML_T_NVFP4 = 40, GGML_T_COUNT = 64,
    GGML_T_NONE = -1 /* no type (a traits row without fallback) */
};

/* How llama.cpp's reference rule uses an importance matrix h for a block type. */
enum piso_ggml_imatrix_rule {
    PISO_IMAT_UNUSED,      /* ignored (Q8_0, the float types) */
    PISO_IMAT_H,           /* weights h (Q6_K) */
    PISO_IMAT_ROW_SIGMA,   /* h·sqrt(σ² + x²), σ² the row's mean square (Q4_0, Q4_1, Q5_0, Q5_1) */
    PISO_IMAT_BLOCK_SIGMA, /* h·sqrt(σ² + x²), σ² twice the block's mean square (IQ4_NL, Q3_K, Q4_K, Q5_K) */
    PISO_IMAT_SUPER_SIGMA1 /* h·sqrt(σ² + x²), σ² the super-block's mean square (Q2_K) */
};

/* How a block type stores its scales. */
enum piso_ggml_scale_kind {
    PISO_SCALE_FP16 = 0, /* IEEE half (the legacy and K-quant types) */
    PISO_SCALE_E8M0,     /* a power of two 2^(e-128) per 32 (MXFP4) */
    PISO_SCALE_UE4M3     /* unsigned FP8 E4M3 per 16, times ½ (NVFP4) */
};

/* One table of traits per ggml type (ggml style): every fact about a type lives here (ggml_types.c).
 *
 * Levels of the block types: an element is stored as the code q = l + code_zero with the level l in
 * [level_min, level_max], and dequantizes to d·l (Q8_0, Q4_0, Q5_0; Q6_K with d·sc per sub-block),
 * to d·q + m when has_min (Q4_1, Q5_1; Q4_K/Q5_K as d·sc·q − dmin·mn per sub-block), or to
 * d·level_values[q] when level_values is set (IQ4_NL; MXFP4/NVFP4 with the doubled E2M1 table and
 * an E8M0/UE4M3 scale, scale_kind).
 *
 * Functions are NULL where not implemented. to_float dequantizes k values (a multiple of blck_size);
 * from_float quantizes k values with llama.cpp's reference rule without an imatrix; quantize_ref is
 * that rule for one row of k values, importance-weighted when imatrix ([k]) is given; pack/unpack
 * convert one decoded block (struct piso_blk32 for 32-blocks, struct piso_blk256 for 256-blocks,
 * ggml_quants.h) to and from its bytes. */
struct piso_ggml_traits {
    const char *name;
    int blck_size;  /* elements per block */
    int type_size;  /* bytes per block */
    int fallback;   /* type for rows whose length is not a multiple of blck_size (llama.cpp's choice);
                       GGML_T_NONE where blck_size is 1 */
    int file_type;  /* LLAMA_FTYPE id written as general.file_type for a model of this type; -1: none */
    enum piso_dtype dtype; /* what a model keeps from weights of this type (quantized: F32) */
    int level_min, level_max, code_zero, has_min;
    const int8_t *level_values;
    int sub_size;   /* elements sharing one scale (32; Q2_K, Q3_K, Q6_K, NVFP4 16) */
    const char *grid; /* piso grid with the same levels (symmetric 32-blocks), for the dense scale solver */
    enum piso_ggml_imatrix_rule imatrix_rule;
    enum piso_ggml_scale_kind scale_kind;
    void (*to_float)(const void *src, float *dst, int64_t k);
    void (*from_float)(const float *src, void *dst, int64_t k);
    void (*quantize_ref)(const float *x, void *dst, int64_t k, const float *imatrix);
    void (*pack)(const void *blk, void *dst);
    void (*unpack)(const void *src, void *blk);
};
const struct piso_ggml_traits *piso_ggml_traits(int type); /* NULL for unknown ids */
/* First type along the fallback chain whose block size divides a row of ne0 values. */
int piso_ggml_type_for_row(int type, int64_t ne0);
int piso_ggml_type_from_name(const char *name, int *type);   /* "Q4_K", "f16", ... (any case) */
size_t piso_ggml_row_size(int type, int64_t ne0);

struct piso_gguf_kv {
    char *key;
    enum piso_gguf_vtype type;
    /* scalars: */
    union {
        uint64_t u64;
        int64_t i64;
        double f64;
    } val;
    /* strings: points into the mapping, NOT NUL-terminated */
    const char *str;
    uint64_t str_len;
    /* arrays: element type, count, and the raw elements (for string arrays, use piso_gguf_arr_str) */
    enum piso_gguf_vtype arr_type;
    uint64_t arr_n;
    const uint8_t *arr_data;
    const uint8_t **arr_str; /* string arrays: pointers to each element's u64 length prefix */
};

struct piso_gguf_tensor {
    char *name;
    int n_dims;
    int64_t ne[4];  /* ne[0] innermost (the input dimension of a weight) */
    int type;       /* enum piso_ggml_type */
    uint64_t offset;
    const void *data;
    size_t nbytes;
};

struct piso_gguf {
    struct piso_mmap map;
    uint32_t version;
    uint32_t alignment;
    int64_t n_kv, n_tensors;
    struct piso_gguf_kv *kv;
    struct piso_gguf_tensor *tensors;
};

/* Opens and validates every field (magic, version, counts vs file size, string lengths, types,
 * tensor dims, offsets and sizes inside the file). Errors name the file and the key/tensor. */
int piso_gguf_open(struct piso_gguf *g, const char *path);
void piso_gguf_close(struct piso_gguf *g);
const struct piso_gguf_kv *piso_gguf_find(const struct piso_gguf *g, const char *key);
const struct piso_gguf_tensor *piso_gguf_find_tensor(const struct piso_gguf *g, const char *name);
/* Typed getters: 0 on success; -1 with a message if absent or of an incompatible type
 * (integers convert between widths when the value fits). */
int piso_gguf_get_u32(const struct piso_gguf *g, const char *key, uint32_t *out);
int piso_gguf_get_f32(const struct piso_gguf *g, const char *key, float *out);
int piso_gguf_get_bool(const struct piso_gguf *g, const char *key, int *out);
/* malloc'd NUL-terminated copy */
char *piso_gguf_get_str(const struct piso_gguf *g, const char *key);
/* i-th string of a string array (malloc'd, NUL-terminated), NULL if out of range. */
char *piso_gguf_arr_str(const struct piso_gguf_kv *kv, uint64_t i);
/* Dequantizes a tensor into dst (numel floats). */
int piso_gguf_tensor_to_f32(const struct piso_gguf *g, const struct piso_gguf_tensor *t, float *dst);

#endif
