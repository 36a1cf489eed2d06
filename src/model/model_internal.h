/* Loader-private pieces shared by the src/model files: what a model keeps alive (mappings, owned
 * buffers) and the helpers the format loaders use. */
#ifndef PISO_MODEL_INTERNAL_H
#define PISO_MODEL_INTERNAL_H

#include "piso/gguf.h"
#include "piso/model.h"
#include "piso/safetensors.h"

struct piso_tensor_info;

struct piso_model_storage {
    struct piso_st_file *st; /* HF: one per safetensors shard */
    int n_st;
    struct piso_gguf *gguf;  /* GGUF source */
    struct piso_mmap map;    /* llama2.c source */
    void **owned;            /* malloc'd weight buffers (converted or allocated) */
    int n_owned, cap_owned;
    /* Lazy HF models (piso_model_load_lazy): block weights, embeddings and the output head stay in
     * the mapping in their source dtype; a block's F32 weights exist between acquire and release. */
    int lazy;
    unsigned char *acquired; /* [n_layers] */
    int linears_on_demand;   /* acquire leaves the linear weights NULL (piso_model_set_linears_on_demand) */
};

/* An empty model (cfg copied) with storage and the layer array allocated. */
struct piso_model *piso_model_new(const struct piso_config *cfg, const char *path);
/* n floats owned by the model (zeroed), freed with it. */
float *piso_model_own(struct piso_model *m, size_t n);

/* Reorders the rows the schema marks as RoPE rows (q/k weights, biases, q/k norms) from
 * rotate-half to adjacent pairs, the order piso runs every model in. */
int piso_model_rope_rows_to_adjacent(struct piso_model *m);

/* The tensor `name` in any HF shard (its shard index in *file), or NULL. */
const struct piso_st_tensor *piso_hf_find_tensor(struct piso_model *m, const char *name, int *file);

/* Deployable checkpoints (src/model/load_ckpt.c, layouts in piso/checkpoint.h). */
struct piso_ckpt_info {
    int format;       /* enum piso_ckpt_format; 0: dense */
    int bits, group;  /* group 0: per channel */
    int sym;
};
/* Reads config.json's quantization_config (absent: dense). Errors name the field. */
int piso_ckpt_parse_config(const void *cfg_json, const char *config_path, struct piso_ckpt_info *q);
/* Dequantizes the packed layer `prefix` (HF name without ".weight") into a model-owned [rows, cols]
 * buffer; NULL with *packed = 0 when the layer is stored dense, NULL with an error naming the
 * tensor when its packed tensors are malformed. */
float *piso_ckpt_load_linear(struct piso_model *m, const struct piso_ckpt_info *q, const char *prefix, int64_t rows,
                             int64_t cols, int *packed);

/* Format loaders: fill cfg and weights of *out (tokenizer not included). lazy (HF only): validate
 * every tensor but convert only the small globals (norms); see piso_model_load_lazy. */
int piso_load_hf(const char *dir, int lazy, struct piso_model **out);
/* The source tensor of schema tensor t in block `layer` (any shard; NULL when absent). */
const struct piso_st_tensor *piso_lazy_source(struct piso_model *m, const struct piso_tensor_info *t, int layer, int *file);
/* Drops the mapping's pages under [p, p + n) from memory (they are re-read from the file if used). */
void piso_lazy_drop_pages(const void *p, size_t n);
/* Checks the lazily kept embeddings / output head for NaN/Inf, a chunk at a time. */
int piso_lazy_check_globals(struct piso_model *m);
int piso_load_llama2c(const char *path, struct piso_model **out);
int piso_load_gguf(const char *path, struct piso_model **out);

#endif
