/* cli/mixed.h — `piso quantize --target-bits B --formats F1,F2,...` (Hugging Face output): one
 * candidate format per linear layer, the exact optimum of the knapsack of piso/mixed.h on costs
 * measured from the calibration data, plus the uniform and KL-greedy baselines. */
#ifndef PISO_CLI_MIXED_H
#define PISO_CLI_MIXED_H

#include "piso/json_out.h"
#include "piso/mixed.h"
#include "piso/pipeline.h"
#include "quantize.h"

/* the assignments: the optimum and the baselines (llama.cpp's mixtures: GGUF only) */
enum { CLI_MIXED_OPTIMAL = 0, CLI_MIXED_UNIFORM, CLI_MIXED_KL_GREEDY, CLI_MIXED_LLAMACPP, CLI_MIXED_N };

struct cli_mixed {
    int n_cand, n_lin;      /* candidates; linear layers = n_blocks · PISO_LIN_COUNT */
    int probe_windows;      /* calibration windows of the KL probes */
    int ref;                /* the lightest candidate: the one whose KL probes each layer's sensitivity */
    struct piso_ec_opts *cand; /* [n_cand] HF: the candidates' options */
    int *types;             /* [n_cand] GGUF: the candidates' ggml types */
    char mixture[16];       /* GGUF: the llama.cpp mixture of the llamacpp assignment */
    char (*spec)[32];       /* [n_cand] the candidate as given ("int3g32") */
    int64_t *bits;          /* [n_lin, n_cand] bits as stored: codes + scales */
    int64_t n_params;       /* weights of the linear layers */
    double *err;            /* [n_lin, n_cand] Σ_rows (w − ŵ)ᵀH(w − ŵ) on float inputs */
    double *sens;           /* [n_lin] KL(float ‖ only this layer at the lightest candidate), calibration windows */
    double *cost;           /* [n_lin, n_cand] predicted loss: sens / err[ref] · err (KL nats), or err */
    double *measured;       /* [n_lin, n_cand] --sensitivity-check: KL of each single-layer change on --eval; or NULL */
    int plain_error;        /* --sensitivity output: cost = err */
    double spearman;        /* rank correlation of cost and measured */
    int *choice[CLI_MIXED_N]; /* [n_lin] each assignment, NULL when it does not exist (uniform) */
    int applied;            /* the assignment written (--baseline) */
    double eval_kl[CLI_MIXED_N], eval_ppl[CLI_MIXED_N]; /* --eval: each evaluated assignment's, < 0: not run */
    double target, kld_after; /* kld_after: KL(float ‖ quantized) on --eval, < 0 when not measured */
    struct piso_ec_opts *layer_ec; /* [n_lin] the applied assignment, for the pipeline */
    int *linear_types;      /* [n_lin] GGUF: the applied assignment's types, for the export */
    double mix_bpw[5], mix_cost[5]; /* GGUF: llama-quantize's Q2_K, Q3_K_S, Q3_K_M, Q4_K_M, Q5_K_M (-1: not representable) */
};

/* True when a asks for mixed precision; checks the option combinations (usage error, exit 2,
 * returned through *rc). */
int cli_mixed_wanted(const struct cli_quantize_args *a, int *rc);
/* Parses --formats into candidates built on base (rounding options, scale method), counts each
 * layer's bits for each candidate, and checks --target-bits against the lightest and heaviest
 * assignment (error naming both numbers). */
int cli_mixed_prepare(const struct cli_quantize_args *a, const struct piso_ec_opts *base, const struct piso_model *m,
                      struct cli_mixed *x);
/* The costs (first pass on float inputs), the sensitivities, the assignments, and the final
 * block-by-block pass with the applied one into res (mq quantized in place). */
int cli_mixed_run(const struct cli_quantize_args *a, struct piso_model *mq, const struct piso_model *mf,
                  const struct piso_calib *cal, struct piso_pipeline_opts *po, const char *eval_text, size_t eval_len,
                  struct cli_mixed *x, struct piso_pipeline_result *res);
/* The assignment summary (target, bits, predicted loss of each assignment, sensitivity check). */
void cli_mixed_json(struct piso_json *w, const struct cli_mixed *x);
/* Per-layer fields of the applied assignment: format, bits, predicted cost, output error. */
void cli_mixed_layer_json(struct piso_json *w, const struct cli_mixed *x, const struct piso_layer_report *r);
void cli_mixed_free(struct cli_mixed *x);

struct piso_gguf_export_opts;
/* GGUF: parses --types, counts each weight's bits per type (after the row fallback), checks
 * --target-bpw against the lightest and heaviest assignment. */
int cli_gguf_mixed_prepare(const struct cli_quantize_args *a, const struct piso_model *m, struct cli_mixed *x);
/* GGUF (--target-bpw B --types ...): costs from the export's own quantize/read-back with the
 * calibration Hessians, KL probes on the --calib chunks (ids [n_ids], ctx of a), the assignments
 * (with llama.cpp's mixtures), and o->linear_types set to the applied one. */
int cli_gguf_mixed(const struct cli_quantize_args *a, const struct piso_model *m, const int *ids, int n_ids, int bos,
                   struct piso_gguf_export_opts *o, struct cli_mixed *x);
/* cli_mixed_json plus the mixtures and the per-weight types. */
void cli_gguf_mixed_json(struct piso_json *w, const struct cli_mixed *x, const struct piso_model *m);

#endif
