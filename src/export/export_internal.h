/* src/export/export_internal.h — shared by the writers of src/export (HF directory, checkpoints). */
#ifndef PISO_EXPORT_INTERNAL_H
#define PISO_EXPORT_INTERNAL_H

#include "piso/checkpoint.h"
#include "piso/safetensors.h"

#include <cjson/cJSON.h>

/* Adds the packed tensors of one linear layer (prefix: its HF name without ".weight") in format f.
 * scales [N, ng] (fp32 values that fp16 holds exactly), codes [N, D] (q = c − z), zeros [N, ng] or
 * NULL (symmetric: z = 2^(bits−1)), g_idx [D] the group of each input or NULL (i / group; given:
 * GPTQ desc_act, compressed-tensors weight_g_idx); rows already in HF order. */
int piso_ckpt_add_layer(struct piso_st_writer *w, enum piso_ckpt_format f, const char *prefix, int bits, int group,
                        int64_t N, int64_t D, int64_t ng, const float *scales, const int16_t *codes,
                        const int16_t *zeros, const int32_t *g_idx);
/* config.json's quantization_config. skipped: HF names of the linear layers kept dense;
 * in_block: the module names inside a block that are packed ("self_attn.q_proj", ...). */
cJSON *piso_ckpt_config_json(enum piso_ckpt_format f, int bits, int group, int asym, int act_order, int desc_act,
                             const char *const *skipped, int n_skipped, const char *const *in_block, int n_in_block);

#endif
