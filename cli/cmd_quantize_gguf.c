/* piso quantize --out model.gguf --type T — a llama.cpp GGUF in ggml block formats, with piso's
 * exact block scales (default) or llama.cpp's reference rule (--scale llamacpp-ref), weighted by
 * an importance matrix (--imatrix) or by calibration text (--calib: imatrix + dense Hessians).
 * The options are declared with the others of `piso quantize` in cmd_quantize.c. */
#include "cli.h"
#include "piso/gguf.h"
#include "piso/gguf_export.h"
#include "piso/imatrix.h"
#include "piso/json_out.h"
#include "piso/model.h"
#include "piso/tokenizer.h"
#include "quantize.h"
#include "mixed.h"
#include "transform_opts.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

int cli_quantize_gguf(const struct cli_quantize_args *a) {
    if (a->calib && a->imatrix)
        return cli_usage_error("quantize", "option --imatrix: not with --calib (give one of them)");
    const int mixed = a->target_bpw > 0 || a->types; /* mixed precision (cli/mixed.h) */
    if (mixed && !(a->target_bpw > 0 && a->types))
        return cli_usage_error("quantize", "option %s: required with %s", a->types ? "--target-bpw" : "--types",
                               a->types ? "--types" : "--target-bpw");
    if (mixed && !a->calib)
        return cli_usage_error("quantize", "option --calib: required with --target-bpw (the costs are measured on it)");
    if (!mixed && (a->baseline || a->sensitivity || a->sensitivity_windows))
        return cli_usage_error("quantize", "option %s: only with --target-bpw and --types",
                               a->baseline ? "--baseline" : a->sensitivity ? "--sensitivity" : "--sensitivity-windows");
    struct piso_gguf_export_opts o = {.type = GGML_T_Q8_0, .output_type = -1};
    int mix_ftype, mix_base;
    if (piso_gguf_mixture_from_name(a->type, &mix_ftype, &mix_base) == 0 && (a->mix || strcasecmp(a->type, "Q2_K"))) {
        o.type = mix_base, o.mixture = mix_ftype; /* Q3_K_S, Q3_K_M, Q4_K_M, Q5_K_M; Q2_K with --mix */
    } else if (piso_ggml_type_from_name(a->type, &o.type)) {
        return cli_usage_error("quantize", "option --type: unknown type '%s'", a->type);
    } else if (a->mix) {
        static const char *const by_type[][2] = {{"q2_K", "Q2_K"}, {"q3_K", "Q3_K_M"}, {"q4_K", "Q4_K_M"}, {"q5_K", "Q5_K_M"}};
        const char *mname = NULL;
        for (int i = 0; i < 4; i++)
            if (!strcmp(piso_ggml_traits(o.type)->name, by_type[i][0])) mname = by_type[i][1];
        if (!mname) return cli_usage_error("quantize", "option --mix: no llama-quantize mixture for type '%s' (Q2_K, Q3_K, Q4_K, Q5_K)", a->type);
        piso_gguf_mixture_from_name(mname, &mix_ftype, &mix_base);
        o.mixture = mix_ftype;
    }
    if (a->output_type && piso_ggml_type_from_name(a->output_type, &o.output_type))
        return cli_usage_error("quantize", "option --output-type: unknown type '%s'", a->output_type);
    o.scale = !strcmp(a->scale, "llamacpp-ref") ? PISO_GGUF_SCALE_REF : PISO_GGUF_SCALE_PISO;
    o.blend = !strcmp(a->weighting, "blend");

    struct piso_model *m = NULL;
    struct piso_imatrix *im = NULL;
    struct piso_calib_hessians *hs = NULL;
    struct piso_calib_stream *cs = NULL;
    struct piso_gguf_stream *gs = NULL;
    int *ids = NULL, n = 0, rc = 1;
    struct piso_gguf_export_stats st;
    struct cli_mixed mx;
    memset(&mx, 0, sizeof mx);
    const struct piso_tokenizer *tk = NULL;
    struct piso_transform_opts to;
    if (piso_output_check(a->out, 0)) goto done; /* before any work */
    if (cli_transform_opts("quantize", a->rotate, a->rotate_block, a->permute, 1, a->seed, a->calib != NULL, 1, &to))
        goto done;
    /* Streaming (one block in F32 at a time, its tensors written at their offsets as it is done)
     * whenever nothing needs the whole model: an HF source, no transform, no mixed precision, and
     * no NVFP4 weight (their tensor-scale tensors exist only when the scale is not 1). */
    const int nvfp4 = (o.type == GGML_T_NVFP4 && !o.mixture) || o.output_type == GGML_T_NVFP4;
    const int stream = !a->no_stream && !mixed && !cli_transform_wanted(&to) && !nvfp4 && piso_model_can_stream(a->model);
    /* an HF source is first opened lazily (mmap, nothing converted), so that the memory check below
     * runs before an eager load converts the whole model */
    const int lazy_first = piso_model_can_stream(a->model);
    piso_log("loading %s%s\n", a->model, stream ? " (streaming: one block at a time)" : "");
    if (lazy_first ? piso_model_load_lazy(a->model, a->tokenizer, &m) : piso_model_load(a->model, a->tokenizer, &m))
        goto done;
    /* a tokenizer is needed for --calib and wanted in the file; without one the file is "no_vocab" */
    tk = cli_model_tokenizer(m);
    if (!tk && (a->tokenizer || a->calib)) goto done;
    if (a->imatrix && piso_imatrix_load(a->imatrix, &im)) goto done;
    if (a->calib && cli_tokenize_file(tk, a->calib, &ids, &n)) goto done;
    {   /* before any long work: refuse with the numbers when it cannot fit */
        int64_t n_chunk = a->calib && a->ctx > 0 ? n / a->ctx : 0;
        if (a->chunks > 0 && n_chunk > a->chunks) n_chunk = a->chunks;
        if (piso_gguf_memory_check(&m->cfg, stream, n_chunk, a->ctx, o.scale == PISO_GGUF_SCALE_PISO)) goto done;
    }
    if (lazy_first && !stream) { /* now the whole model in F32 */
        piso_model_free(m);
        m = NULL;
        if (piso_model_load(a->model, a->tokenizer, &m)) goto done;
        tk = cli_model_tokenizer(m);
        if (!tk && (a->tokenizer || a->calib)) goto done;
    }
    if (mixed && cli_gguf_mixed_prepare(a, m, &mx)) goto done; /* the bit range: before any long work */
    /* rotations / permutations (checked by cmd_quantize: fused only) before any statistics; the
     * permutations are calibrated on the text in windows of --ctx tokens */
    if (cli_transform_wanted(&to)) {
        int len = n < (int)a->ctx ? n : (int)a->ctx, nwin = len > 0 ? n / len : 0;
        if (piso_transform_model(m, &to, ids, nwin, len, NULL)) goto done;
    }
    const struct piso_tokenizer_vocab *v = tk ? piso_tokenizer_vocab(tk) : NULL;
    if (a->calib && stream) { /* the statistics block by block, as the blocks are written */
        if (piso_calib_stream_begin(m, ids, n, (int)a->ctx, (int)a->chunks, v->bos_id, a->calib,
                                    o.scale == PISO_GGUF_SCALE_PISO, &cs))
            goto done;
        o.imatrix = piso_calib_stream_imatrix(cs);
    } else if (a->calib) {
        int bos = v->bos_id;
        if (piso_imatrix_compute(m, ids, n, (int)a->ctx, (int)a->chunks, bos, a->calib, &im)) goto done;
        if (o.scale == PISO_GGUF_SCALE_PISO &&
            piso_calib_hessians_compute(m, ids, n, (int)a->ctx, (int)a->chunks, bos, &hs))
            goto done;
    }
    if (!cs) o.imatrix = im;
    o.hessians = hs;
    if (mixed && cli_gguf_mixed(a, m, ids, n, piso_tokenizer_vocab(tk)->bos_id, &o, &mx)) goto done;
    if (!tk) piso_log("quantize: warning: no tokenizer; the file gets tokenizer.ggml.model = no_vocab\n");
    if (stream) {
        if (piso_gguf_stream_begin(m, v, &o, a->out, &gs)) goto done;
        for (int l = 0; l < m->cfg.n_layers; l++) {
            if (piso_model_block_acquire(m, l) || (cs && piso_calib_stream_block(cs, m, l)) ||
                piso_gguf_stream_block(gs, m, l, NULL, cs ? piso_calib_stream_hessians(cs) : NULL))
                goto done;
            piso_model_block_release(m, l);
        }
        struct piso_gguf_stream *s = gs;
        gs = NULL; /* finish frees it, whatever happens */
        if (piso_gguf_stream_finish(s, m, &st)) goto done;
    } else if (piso_gguf_export(m, v, &o, a->out, &st))
        goto done;
    if (a->common.json) {
        struct piso_json w;
        piso_json_begin(&w, PISO_JSON_SPACED);
        piso_json_string(&w, "out", a->out);
        piso_json_string(&w, "type", piso_ggml_traits(o.type)->name);
        if (o.mixture) piso_json_int(&w, "mixture_file_type", o.mixture);
        piso_json_string(&w, "scale", a->scale);
        piso_json_string(&w, "importance", a->calib ? "calib" : a->imatrix ? "imatrix" : "none");
        piso_json_int(&w, "tensors", st.n_tensors);
        piso_json_int(&w, "fallback_tensors", st.n_fallback);
        piso_json_int(&w, "bytes", (int64_t)st.file_bytes);
        piso_json_sig(&w, "objective", st.objective, 9);
        piso_json_fixed(&w, "seconds", st.seconds, 3);
        /* every weight stored in a fallback type: its row length is not a multiple of the block */
        piso_json_array_begin(&w, "fallbacks");
        for (int64_t i = 0; i < st.n_fallback && i < PISO_GGUF_MAX_FALLBACKS; i++) {
            piso_json_object_begin(&w, NULL);
            piso_json_string(&w, "tensor", st.fallbacks[i].name);
            piso_json_int(&w, "columns", st.fallbacks[i].ne0);
            piso_json_string(&w, "type", piso_ggml_traits(st.fallbacks[i].want)->name);
            piso_json_string(&w, "stored", piso_ggml_traits(st.fallbacks[i].got)->name);
            piso_json_object_end(&w);
        }
        piso_json_array_end(&w);
        piso_json_object_begin(&w, "tensor_types");
        for (int t = 0; t < 64; t++)
            if (st.counts[t]) piso_json_int(&w, piso_ggml_traits(t)->name, st.counts[t]);
        piso_json_object_end(&w);
        if (mixed) cli_gguf_mixed_json(&w, &mx, m);
        if (piso_json_print(&w, stdout)) goto done;
    } else {
        for (int64_t i = 0; i < st.n_fallback && i < PISO_GGUF_MAX_FALLBACKS; i++)
            piso_log("quantize: %s: %lld columns are not a multiple of %s's block of %d: stored as %s\n", st.fallbacks[i].name,
                     (long long)st.fallbacks[i].ne0, piso_ggml_traits(st.fallbacks[i].want)->name,
                     piso_ggml_traits(st.fallbacks[i].want)->blck_size, piso_ggml_traits(st.fallbacks[i].got)->name);
        piso_log("quantize: %s (%s scales) -> %s: %lld tensors (%lld in a fallback type), %llu bytes, %.2f s\n",
                 piso_ggml_traits(o.type)->name, a->scale, a->out, (long long)st.n_tensors, (long long)st.n_fallback,
                 (unsigned long long)st.file_bytes, st.seconds);
    }
    rc = 0;
done:
    if (rc) cli_fail("quantize", piso_last_error());
    piso_gguf_stream_abort(gs); /* a failure before the end: nothing is left */
    piso_calib_stream_free(cs);
    cli_mixed_free(&mx);
    piso_calib_hessians_free(hs);
    piso_imatrix_free(im);
    free(ids);
    piso_model_free(m);
    return rc;
}
