/* llama.cpp's CPU activation rounding (see piso/llamacpp_act.h). */
#include "piso/llamacpp_act.h"
#include "model_internal.h"
#include "piso/schema.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

enum vec_dot { VD_UNKNOWN = 0, VD_F32, VD_F16, VD_BF16, VD_Q8_0, VD_Q8_K };

/* ggml-cpu's type traits: which conversion the activation gets for each weight type. */
static enum vec_dot vec_dot_of(int weight_type) {
    switch (weight_type) {
    case GGML_T_F32: return VD_F32;
    case GGML_T_F16: return VD_F16;
    case GGML_T_BF16: return VD_BF16;
    case GGML_T_Q4_0: case GGML_T_Q4_1: case GGML_T_Q5_0: case GGML_T_Q5_1: case GGML_T_Q8_0:
    case GGML_T_IQ4_NL: case GGML_T_MXFP4: return VD_Q8_0;
    case GGML_T_Q2_K: case GGML_T_Q3_K: case GGML_T_Q4_K: case GGML_T_Q5_K: case GGML_T_Q6_K: return VD_Q8_K;
    default: return VD_UNKNOWN;
    }
}

const char *piso_llamacpp_vec_dot_name(int weight_type) {
    static const char *const names[] = {NULL, "f32", "f16", "bf16", "q8_0", "q8_K"};
    return names[vec_dot_of(weight_type)];
}

/* Q8_0 blocks of 32 as ggml-cpu's x86 SIMD quantizer writes them: scale d = amax/127 kept as fp16,
 * the codes round x·(127/amax) to nearest even; x̂ = fp16(d)·q. */
static void round_q8_0(float *x, int64_t n) {
    float amax = 0;
    for (int64_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
    const float d = piso_fp16_to_fp32(piso_fp32_to_fp16(amax / 127.0f));
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    for (int64_t i = 0; i < n; i++) x[i] = d * nearbyintf(x[i] * id);
}

/* Q8_K blocks of 256 (ggml's reference quantizer, which x86 uses): max is the element of largest
 * magnitude (first one on ties), s = -127/max, q = min(127, round_even(s·x)), x̂ = (1/s)·q. */
static void round_q8_k(float *x, int64_t n) {
    float amax = 0, max = 0;
    for (int64_t i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) amax = fabsf(x[i]), max = x[i];
    if (amax == 0.0f) {
        for (int64_t i = 0; i < n; i++) x[i] = 0.0f;
        return;
    }
    const float iscale = -127.0f / max, d = 1.0f / iscale;
    for (int64_t i = 0; i < n; i++) x[i] = d * fminf(127.0f, nearbyintf(iscale * x[i]));
}

static void round_row(enum vec_dot vd, float *x, int64_t d) {
    switch (vd) {
    case VD_F16:
        for (int64_t i = 0; i < d; i++) x[i] = piso_fp16_to_fp32(piso_fp32_to_fp16(x[i]));
        break;
    case VD_BF16:
        for (int64_t i = 0; i < d; i++) x[i] = piso_bf16_to_fp32(piso_fp32_to_bf16(x[i]));
        break;
    case VD_Q8_0:
    case VD_Q8_K: {
        const int64_t B = vd == VD_Q8_0 ? 32 : 256;
        for (int64_t j = 0; j < d; j += B) (vd == VD_Q8_0 ? round_q8_0 : round_q8_k)(x + j, d - j < B ? d - j : B);
        break;
    }
    default: break;
    }
}

void piso_llamacpp_act_rows(int weight_type, float *x, int64_t n, int64_t d) {
    const enum vec_dot vd = vec_dot_of(weight_type);
    if (vd == VD_F32 || vd == VD_UNKNOWN || n <= 0 || d <= 0) return;
#pragma omp parallel for schedule(static) if (n * d > (1 << 16))
    for (int64_t i = 0; i < n; i++) round_row(vd, x + i * d, d);
}

/* The ggml type of GGUF tensor `name`; -1 with an error naming it when absent or unknown. */
static int weight_type_of(const struct piso_gguf *g, const char *name) {
    const struct piso_gguf_tensor *t = piso_gguf_find_tensor(g, name);
    if (!t) return piso_errorf("%s: tensor '%s' not found", g->map.path, name), -1;
    if (vec_dot_of(t->type) == VD_UNKNOWN) {
        const struct piso_ggml_traits *tr = piso_ggml_traits(t->type);
        return piso_errorf("%s: tensor '%s' of type %s: llama.cpp's activation conversion for it is not emulated",
                           g->map.path, name, tr ? tr->name : "?"), -1;
    }
    return t->type;
}

int piso_llamacpp_act_enable(struct piso_model *m) {
    const struct piso_gguf *g = m->storage ? m->storage->gguf : NULL;
    if (!g || m->cfg.source != PISO_SRC_GGUF)
        return piso_errorf("%s: llama.cpp's activation rounding needs a GGUF model (it follows each weight's GGUF type)",
                           m->path ? m->path : "model");
    const int L = m->cfg.n_layers;
    int *types = malloc(((size_t)L * PISO_LIN_COUNT + 1) * sizeof *types);
    if (!types) return piso_errorf("out of memory");
    char name[160];
    for (int l = 0; l < L; l++)
        for (int k = 0; k < PISO_LIN_COUNT; k++) {
            snprintf(name, sizeof name, "blk.%d.%s", l, piso_schema_linear((enum piso_linear)k)->gguf);
            if ((types[l * PISO_LIN_COUNT + k] = weight_type_of(g, name)) < 0) {
                free(types);
                return -1;
            }
        }
    const char *head = piso_gguf_find_tensor(g, "output.weight") ? "output.weight" : "token_embd.weight";
    if ((types[(size_t)L * PISO_LIN_COUNT] = weight_type_of(g, head)) < 0) {
        free(types);
        return -1;
    }
    free(m->llamacpp_weight_types);
    m->llamacpp_weight_types = types;
    return 0;
}
