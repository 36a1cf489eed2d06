/* cli/quantize.h — the arguments of `piso quantize`, shared by its two outputs: a Hugging Face
 * directory (cmd_quantize.c) and a llama.cpp GGUF file (cmd_quantize_gguf.c). One option table
 * (in cmd_quantize.c) declares both, in sections. */
#ifndef PISO_CLI_QUANTIZE_H
#define PISO_CLI_QUANTIZE_H

#include "options.h"

struct cli_quantize_args {
    struct cli_common common;
    const char *model, *tokenizer, *calib, *out, *scale;
    int64_t ctx;
    /* Hugging Face output */
    const char *format, *rounding, *interleave, *objective, *eval;
    int64_t group, nsamples, seqlen, seed;
    double damp; /* < 0: the rounding's default */
    int narrow, act_order;
    int asym;                 /* --asym: zero points */
    int static_groups;        /* --static-groups: checkpoints keep contiguous groups under --act-order */
    const char *out_format;   /* --out-format hf | gptq | compressed-tensors */
    /* sr / beam / gpfq */
    double alpha; /* < 0: not given */
    int64_t beam, candidates;
    int alpha_sample;
    /* mixed precision (cli/mixed.h) */
    const char *formats, *baseline, *sensitivity;
    double target_bits; /* 0: not given */
    int sensitivity_check, evaluate_baselines;
    int64_t sensitivity_windows; /* 0: min(8, calibration windows) */
    /* activation quantization (cli/act_quant.h) */
    const char *act_format, *kv_format;
    int64_t act_group;
    int calib_act_quant;
    int no_stream; /* load the whole model in F32 (twice) and export at the end */
    /* accumulator limits (cli/accum.h) */
    int64_t acc_bits, acc_tile;
    int no_soft_threshold;
    /* smoothing before quantization */
    double smooth, smooth_quantile, smooth_sketch_error; /* smooth < 0, quantile NaN: not given */
    const char *smooth_stats;
    /* GGUF output */
    const char *type, *imatrix, *output_type, *weighting;
    int mix; /* --mix: llama-quantize's mixture for the type */
    const char *types; /* --types: mixed-precision candidates (with --target-bpw) */
    double target_bpw; /* 0: not given */
    int64_t chunks;
    /* transforms (both outputs; cli/transform_opts.h) */
    const char *rotate, *permute;
    int64_t rotate_block;
    int no_online;
};

/* Writes the GGUF file a asks for; returns the exit code. */
int cli_quantize_gguf(const struct cli_quantize_args *a);

#endif
