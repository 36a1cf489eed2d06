/* piso/safetensors.h — read (mmap) and write (atomically) .safetensors files. */
#ifndef PISO_SAFETENSORS_H
#define PISO_SAFETENSORS_H

#include "piso/common.h"

#define PISO_ST_MAX_DIMS 8

struct piso_st_tensor {
    char *name;
    enum piso_dtype dtype;
    int ndim;
    int64_t shape[PISO_ST_MAX_DIMS];
    int64_t numel;
    const void *data; /* points into the mapping */
    size_t nbytes;
};

struct piso_st_file {
    struct piso_mmap map;
    int n_tensors;
    struct piso_st_tensor *tensors;
    int n_meta;           /* "__metadata__" string pairs */
    char **meta_keys, **meta_values;
};

/* Opens and validates: header length, JSON, dtypes, shapes vs byte ranges, ranges inside file. */
int piso_st_open(struct piso_st_file *f, const char *path);
void piso_st_close(struct piso_st_file *f);
const struct piso_st_tensor *piso_st_find(const struct piso_st_file *f, const char *name);
const char *piso_st_meta(const struct piso_st_file *f, const char *key);
/* Copies a float tensor (F32/F16/BF16/F64) into dst as fp32; checks numel == n. */
int piso_st_read_f32(const struct piso_st_file *f, const struct piso_st_tensor *t, float *dst, size_t n);
/* Allocates and returns the tensor as fp32 (caller frees), rejecting NaN/Inf with a message
 * naming the file, tensor and index. */
float *piso_st_load_f32(const struct piso_st_file *f, const char *name, int expect_ndim, int64_t *shape_out);

/* Writer: collect tensors (data is referenced, not copied, until write), then write atomically. */
struct piso_st_writer;
struct piso_st_writer *piso_st_writer_new(void);
void piso_st_writer_add(struct piso_st_writer *w, const char *name, enum piso_dtype dtype, int ndim,
                        const int64_t *shape, const void *data);
/* Like add, but the writer takes a copy of the data (owned, freed with the writer). */
void piso_st_writer_add_copy(struct piso_st_writer *w, const char *name, enum piso_dtype dtype, int ndim,
                             const int64_t *shape, const void *data);
/* Spill mode, for outputs produced piece by piece that must not be held whole in memory: from now
 * on add_copy appends each tensor's bytes to the file spill_path (created; removed by free) and
 * write() copies them back in order through a small buffer. The file written is byte-identical. */
int piso_st_writer_spill(struct piso_st_writer *w, const char *spill_path);
/* Spill mode: a tensor whose bytes the caller then appends piece by piece (piso_st_writer_append,
 * exactly its size in all, before the next tensor is added). */
int piso_st_writer_add_begin(struct piso_st_writer *w, const char *name, enum piso_dtype dtype, int ndim,
                             const int64_t *shape);
int piso_st_writer_append(struct piso_st_writer *w, const void *data, size_t n);
void piso_st_writer_meta(struct piso_st_writer *w, const char *key, const char *value);
int piso_st_writer_write(struct piso_st_writer *w, const char *path);
void piso_st_writer_free(struct piso_st_writer *w);

#endif
