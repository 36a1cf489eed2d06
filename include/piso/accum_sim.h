/* piso/accum_sim.h — a simulated integer matmul with a narrow accumulator in the runtime
 * (`piso perplexity --simulate-accumulator P`; AXE, piso/accum.h).
 *
 * Every linear layer of the blocks runs as integer weights × integer activations: the activation row
 * is quantized to its integer codes c (the model's integer --act-format; x̂ = s_a·(c − z)), every
 * tile of T inputs sums q·c in a P-bit signed accumulator that wraps around (two's complement) or
 * saturates (clamped after every addition, inputs in column order), the tile results are summed wide
 * (int64), the zero-point term z·Σq of a tile is subtracted wide (a per-row constant in hardware),
 * and the output is Σ over segments of s_w·s_a·(integer sum) in fp64. With P = 64 nothing wraps: the
 * exact integer product. A model whose codes satisfy the AXE guarantee for P gives bit-identical
 * logits with P and with 64. */
#ifndef PISO_ACCUM_SIM_H
#define PISO_ACCUM_SIM_H

#include "piso/accum.h"
#include "piso/schema.h"

struct piso_int_linear {
    int64_t N, D, n_groups;
    int group;       /* columns per weight scale (D for one per row; the last group may be shorter) */
    int16_t *codes;  /* [N, D] integer weight codes, rows in the model's order */
    float *scales;   /* [N, n_groups] */
};

struct piso_accum_sim {
    int bits;        /* P (2..64); 64: exact */
    int tile;        /* T (0: one tile per weight group, the whole row without groups) */
    int saturate;    /* 1: clamp at ±(2^(P−1)) after every addition instead of wrapping */
    int n_layers;
    struct piso_int_linear *lin; /* [n_layers · PISO_LIN_COUNT] */
    int64_t tiles, overflowed;   /* tile sums computed / outside the P-bit range (counted by the runs) */
};

/* Reads the integer codes and scales of a piso output directory (quantization.safetensors, with the
 * group of quantization.json) for the model m loaded from it, q/k rows reordered as the loader
 * reorders the weights, and checks that every weight of m is scale·code (errors name the tensor).
 * bits, tile, saturate as above; the tile must lie inside one weight group and one activation group
 * and divide the row (a shorter last one only as the shorter last group). m must have an integer
 * activation format. */
int piso_accum_sim_load(struct piso_accum_sim *s, const struct piso_model *m, const char *dir, int bits, int tile,
                        int saturate);
void piso_accum_sim_free(struct piso_accum_sim *s);
/* The checker on the loaded codes for accumulator a (input range of m's activation format). */
void piso_accum_sim_check(const struct piso_accum_sim *s, const struct piso_accum *a, struct piso_accum_report *total);
/* y [n, out] = x̂ [n, in] through the integer path of lin (x: the fake-quantized inputs; their integer
 * codes are recomputed, bit-exactly); y = beta·y + ... Rows in parallel, deterministic. */
void piso_accum_sim_linear(struct piso_accum_sim *s, const struct piso_int_linear *lin,
                           const struct piso_act_format *act, const float *x, float *y, int n, float beta);

#endif
