/* piso/pipeline.h — whole-model quantization with calibration data, and the HF directory export.
 *
 * Block by block through the decoder: X̃ (inputs in the partially quantized model) comes from the
 * already-quantized blocks, X from the float model run alongside. Inside a block the linear layers
 * are quantized in data-flow order q,k,v → o → gate,up → down, re-running the block for each stage
 * so that o and down see quantized predecessors. Memory: the two residual streams
 * [nsamples·seqlen, D] plus one window's activations and the D×D statistics of one input. */
#ifndef PISO_PIPELINE_H
#define PISO_PIPELINE_H

#include "piso/checkpoint.h"
#include "piso/model.h"
#include "piso/schema.h"
#include "piso/solve.h"

/* ---- calibration windows ------------------------------------------------------------------ */
struct piso_calib {
    int nsamples, seqlen;
    int *tokens;        /* [nsamples, seqlen]; each window starts with BOS when the model has one */
    int n_text_tokens;  /* tokens in the whole text */
};
/* Tokenizes the text file at path and draws windows with `seed`. nsamples/seqlen <= 0 pick the
 * defaults: seqlen = min(2048, ctx, text tokens), nsamples = min(128, text tokens / seqlen).
 * When nsamples·seqlen fits in the text, window k starts at a random offset inside the k-th of
 * nsamples equal slices (disjoint windows covering the text); otherwise offsets are uniform.
 * Errors (naming the file): missing or empty file, text shorter than one window. */
int piso_calib_load(const struct piso_tokenizer *tok, const char *path, int nsamples, int seqlen, int ctx,
                    uint64_t seed, struct piso_calib *c);
void piso_calib_free(struct piso_calib *c);

/* ---- the pipeline ------------------------------------------------------------------------- */
enum piso_objective { PISO_OBJ_X_X = 0, PISO_OBJ_XQ_XQ, PISO_OBJ_X_XQ };
int piso_objective_from_name(const char *name, enum piso_objective *out);
const char *piso_objective_name(enum piso_objective o);

/* enum piso_linear (the linear layers of a block): piso/schema.h */
/* HF name of a linear layer: "model.layers.3.self_attn.q_proj" (without ".weight"). */
void piso_linear_hf_name(int layer, enum piso_linear k, char *buf, size_t n);

struct piso_pipeline_result;
struct piso_pipeline_opts {
    enum piso_rounding rounding;
    struct piso_ec_opts ec;          /* grid, group, scale method, interleave, act order, damping */
    enum piso_objective objective;
    /* sr/beam/gpfq: draw α per linear layer from U(0, 1) (a hash of seed, block and layer kind)
     * instead of using ec.alpha for all */
    int alpha_sample;
    uint64_t alpha_seed;
    /* Mixed precision (piso/mixed.h). layer_ec [n_blocks · PISO_LIN_COUNT], indexed
     * block · PISO_LIN_COUNT + linear: each layer's own options (grid, group, interleave) instead
     * of ec; NULL: ec for every layer. */
    const struct piso_ec_opts *layer_ec;
    /* Cost pass (mixed precision): with n_cost > 0 the model is NOT modified, so every layer sees
     * the float model's inputs (X̃ = X), and each linear is quantized with every cost_ec[c]:
     * cost[i·n_cost + c] = Σ_rows (w − ŵ)ᵀ H (w − ŵ), H = XᵀX, i = block · PISO_LIN_COUNT + linear.
     * keep (optional, [n_blocks · PISO_LIN_COUNT · n_cost]) receives ŵ [N, D] (malloc'd, the caller
     * frees) of the candidates whose bit is set in keep_mask. The reports carry no scales/codes. */
    int n_cost;
    const struct piso_ec_opts *cost_ec;
    double *cost;
    float **keep;
    unsigned keep_mask;
    /* The per-layer error report (rel_err, rel_err_absmax): 0 = from the first calibration window's
     * outputs for layers with ≥ 512 inputs (an estimate; the statistics then skip the products only
     * the report reads), else from all windows' statistics; 1 = from the first window for every
     * layer; −1 = from all windows for every layer. */
    int report_window0;
    /* Streaming (lazy models, piso_model_load_lazy): the pipeline acquires each block of mq and mf
     * before its work and releases it after; block_done (optional) runs in between, once the block
     * is quantized and both residual streams have passed it, so that an exporter can write it (the
     * block's reports and its weights in mq). Nonzero from it stops the run (an error). */
    int (*block_done)(int block, struct piso_model *mq, struct piso_pipeline_result *res, void *ctx);
    void *block_ctx;
    /* Bytes each of the quantized side's caches (down_proj's input, which saves one quantized block
     * pass, and o_proj's, which saves running q/k/v and the attention again) may take; 0: 2 GiB. */
    double keep_down_budget;
};
/* The α that alpha_sample gives linear k of block `layer`: U(0, 1) from splitmix64. */
double piso_alpha_sample(uint64_t seed, int layer, enum piso_linear k);

struct piso_layer_report {
    char name[96];                   /* HF name, e.g. model.layers.0.self_attn.q_proj */
    int layer;
    enum piso_linear kind;
    int64_t N, D;
    int group;                       /* group size asked (0 = channel-wise) */
    int last_group;                  /* size of the last group when D is not a multiple (else = group) */
    int64_t n_groups;
    float tensor_scale;              /* NVFP4: the per-tensor scale inside every scale (0 otherwise) */
    double rel_err;                  /* ‖Xw − X̃ŵ‖² / ‖Xw‖² summed over rows, chosen method (over the
                                      * first window only: see report_window0) */
    double rel_err_absmax;           /* the same for absmax RTN on the same inputs */
    double objective;                /* the solver's own objective value */
    double alpha;                    /* sr/beam/gpfq: the α used (sampled or fixed); else 0 */
    double seconds;
    struct piso_prune_stats sweep;   /* the channel-wise PiSO sweep of this layer (rows = 0: none) */
    float *scales;                   /* [N, n_groups], rows in the model's order */
    int16_t *codes;                  /* [N, D]; asym: c − z */
    int16_t *zeros;                  /* [N, n_groups] asym zero points, else NULL */
    int32_t *g_idx;                  /* [D] group of each input (desc_act groups), else NULL: i / group */
};

struct piso_pipeline_timing {
    double float_forward;   /* seconds in the float model's blocks */
    double quant_forward;   /* seconds in the quantized model's blocks (partial passes included) */
    double statistics;      /* H, G, XᵀX accumulation */
    double solves;          /* the layer solvers (scales + rounding) and their error reports */
    double one_float_block; /* one full float block forward over all windows (mean), the unit; when
                             * the float side runs over the first window only (an X̃–X̃ objective),
                             * that window's time × the windows */
    double block_forwards;  /* (float + quantized forward seconds) / one_float_block / blocks */
};
struct piso_pipeline_result {
    int n_layers;                    /* reports: n_blocks · 7 */
    struct piso_layer_report *layers;
    double seconds;
    struct piso_pipeline_timing timing;
};

/* Quantizes mq in place (its weights must be writable: piso_model_make_writable) using mf, the
 * same model kept in float, for X. Embeddings, norms and the output head stay float. */
int piso_quantize_model(struct piso_model *mq, const struct piso_model *mf, const struct piso_calib *c,
                        const struct piso_pipeline_opts *o, struct piso_pipeline_result *res);
void piso_pipeline_result_free(struct piso_pipeline_result *res);

/* Memory a piso_quantize_model run needs, in bytes, split for messages (a lower estimate: only the
 * large buffers). model: one F32 copy of the weights; block: one block's F32 weights; float_side:
 * the float model's F32 weights, the model (eager) or its largest linear (streaming: converted one
 * at a time). An eager run holds the model twice, a streaming one (lazy models) one block and
 * float_side; both hold the streams and caches, then the larger of the statistics (fp64, while
 * accumulated) and the solves' peak (the statistics as fp32 plus solver). o (may be NULL: the
 * most any options need) gives the statistics, the float side's windows and the solver's buffers;
 * the calibration set is nsamples windows of seqlen tokens. */
struct piso_pipeline_memory {
    double model, block, float_side, streams, statistics, caches, solver, total;
    int streaming;
};
void piso_pipeline_memory_estimate(const struct piso_config *cfg, int nsamples, int seqlen, int streaming,
                                   const struct piso_pipeline_opts *o, struct piso_pipeline_memory *m);
/* Memory available now in bytes (MemAvailable of /proc/meminfo; env PISO_MEM_AVAILABLE_MB
 * overrides it, for tests); −1 when unknown. */
double piso_mem_available(void);
/* Refuses (−1, with the numbers in the error) when the estimate exceeds the memory available now
 * plus `already` bytes the caller holds and counts in the estimate (MemAvailable of /proc/meminfo;
 * env PISO_MEM_AVAILABLE_MB overrides it, for tests). 0 when it fits or nothing is known. */
int piso_pipeline_memory_check(const struct piso_config *cfg, int nsamples, int seqlen, int streaming,
                               const struct piso_pipeline_opts *o, double already);
/* What the down_proj input cache may take (piso_pipeline_opts.keep_down_budget): 2 GiB, 1 GiB when
 * streaming (it is then the largest buffer after the statistics). */
double piso_pipeline_keep_down_budget(int streaming);

/* ---- HF directory export ------------------------------------------------------------------ */
struct piso_hf_export_opts {
    const char *tokenizer_json;      /* a tokenizer.json to copy, or NULL: generated from m->tok */
    const char *source_dir;          /* HF source directory (tokenizer_config/generation_config), or NULL */
    const char *quantization_json;   /* text of quantization.json, or NULL */
    const struct piso_pipeline_result *res; /* scales and codes for quantization.safetensors, or NULL */
    const char *transform_json;      /* text of transform.json (rotations; piso/transform.h), or NULL */
    /* a deployable checkpoint (needs res): the linear layers that pack are written as GPTQ or
     * compressed-tensors tensors (piso/checkpoint.h), the others stay dense; 0: dense weights */
    enum piso_ckpt_format ckpt;
    int bits, group, asym, act_order; /* of the quantization, for quantization_config */
};
/* Writes dir atomically (built in a temporary sibling, then renamed; an existing model directory
 * is replaced only after the new one is complete): config.json, model.safetensors (model dtype,
 * HF names, q/k rows in rotate-half order), tokenizer.json, tokenizer_config.json,
 * generation_config.json, and quantization.json/.safetensors when given. */
int piso_hf_export(const struct piso_model *m, const char *dir, const struct piso_hf_export_opts *o);
/* Checks up front that dir can be written (absent with an existing parent, an empty directory, or
 * a previous model directory to replace). */
int piso_hf_export_check(const char *dir);
/* Writes an HF tokenizer.json for an SPM (llama2.c-style) vocabulary into a malloc'd string:
 * BPE with byte fallback, merges = for each piece by descending score, every split into two
 * vocabulary pieces (ordered by the ids of left, right). */
char *piso_spm_tokenizer_json(const struct piso_tokenizer_vocab *v);

/* Streamed export (lazy models): the same directory, byte for byte, written block by block so that
 * neither the model nor the layer reports are held whole. begin: the checks, the temporary
 * directory, the tensors before the first block (embeddings, from the file) into spill files there.
 * piso_hf_stream_block is a piso_pipeline_opts.block_done (ctx: the stream): it appends the block's
 * weights and its reports' scales and codes, then frees the codes. finish (o with res and
 * the records): the tensors after the blocks, model.safetensors and quantization.safetensors from
 * the spills, the text files, then the rename; it frees the stream. abort (any failure, or instead
 * of finish) removes everything written: nothing partial remains. */
struct piso_hf_stream;
int piso_hf_stream_begin(const struct piso_model *m, const char *dir, const struct piso_hf_export_opts *o,
                         struct piso_hf_stream **out);
int piso_hf_stream_block(int block, struct piso_model *mq, struct piso_pipeline_result *res, void *stream);
int piso_hf_stream_finish(struct piso_hf_stream *s, const struct piso_model *m, const struct piso_hf_export_opts *o);
void piso_hf_stream_abort(struct piso_hf_stream *s);

#endif
