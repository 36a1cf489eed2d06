/* piso/gguf_write.h — GGUF v3 writer (little-endian, general.alignment 32 by default, contiguous
 * padded tensor offsets in tensor-info order: shared/docs/llamacpp-formats.md §1). The file is
 * written atomically (temporary name, then rename). */
#ifndef PISO_GGUF_WRITE_H
#define PISO_GGUF_WRITE_H

#include "piso/common.h"

struct piso_gguf_writer;

struct piso_gguf_writer *piso_gguf_writer_new(void);
void piso_gguf_writer_free(struct piso_gguf_writer *w);

/* Metadata. Keys must be non-empty and unique (a duplicate is an error naming the key). */
int piso_gguf_set_u32(struct piso_gguf_writer *w, const char *key, uint32_t v);
int piso_gguf_set_i32(struct piso_gguf_writer *w, const char *key, int32_t v);
int piso_gguf_set_f32(struct piso_gguf_writer *w, const char *key, float v);
int piso_gguf_set_bool(struct piso_gguf_writer *w, const char *key, int v);
int piso_gguf_set_str(struct piso_gguf_writer *w, const char *key, const char *v);
int piso_gguf_set_arr_str(struct piso_gguf_writer *w, const char *key, const char *const *v, uint64_t n);
int piso_gguf_set_arr_f32(struct piso_gguf_writer *w, const char *key, const float *v, uint64_t n);
int piso_gguf_set_arr_i32(struct piso_gguf_writer *w, const char *key, const int32_t *v, uint64_t n);

/* Adds a tensor (ne[0] innermost; n_dims 1..4; ne[0] a multiple of the type's block size; nbytes
 * must equal the packed size). The writer takes ownership of data when owned is set (freed with
 * the writer), otherwise data must stay valid until the file is written. */
int piso_gguf_add_tensor(struct piso_gguf_writer *w, const char *name, int n_dims, const int64_t *ne, int type,
                         void *data, size_t nbytes, int owned);

/* The file's layout, for writers that stream the tensor data (tensors added with data NULL, not
 * owned): the header (magic .. tensor infos, unpadded) into *h (free with piso_buf_free), each
 * tensor's absolute file offset into offsets[i] (tensor order; may be NULL), the file size with
 * the last tensor's padding into *file_size (may be NULL). Data and padding are zeros between. */
int64_t piso_gguf_writer_n_tensors(const struct piso_gguf_writer *w);
int piso_gguf_writer_layout(const struct piso_gguf_writer *w, struct piso_buf *h, uint64_t *offsets,
                            uint64_t *file_size);

/* Writes the file atomically. */
int piso_gguf_writer_write(struct piso_gguf_writer *w, const char *path);

#endif
