/* piso quantize --out model.gguf --type T — a llama.cpp GGUF in ggml block formats, with piso's
 * exact block scales (default) or llama.cpp's reference rule (--scale llamacpp-ref), weighted by
 * an importance matrix (--imatrix) or by calibration text (--calib: imatrix + dense Hessians). */
#include "cli.h"
#include "piso/gguf.h"
#include "piso/gguf_export.h"
#include "piso/imatrix.h"
#include "piso/model.h"
#include "piso/tokenizer.h"

#include <stdlib.h>
#include <string.h>


static const char *USAGE =
    "usage: piso quantize --model PATH --out model.gguf --type T [--tokenizer PATH]\n"
    "                     [--calib FILE | --imatrix FILE] [--scale piso|llamacpp-ref]\n"
    "                     [--weighting raw|blend] [--output-type T] [--ctx 512] [--chunks N]\n"
    "                     [--json] [--quiet]\n"
    "  --weighting blend: piso scales weigh by h*sqrt(s2 + x^2) (llama.cpp's imatrix blend), not h\n"
    "  T: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q5_K Q6_K IQ4_NL\n";

int cmd_quantize_gguf(int argc, char **argv) {
    const char *model = NULL, *tok = NULL, *out = NULL, *type_s = NULL, *calib = NULL, *imat = NULL;
    const char *scale_s = "piso", *otype_s = NULL, *weighting = "raw";
    long ctx = 512, chunks = 0;
    int json = 0;
    for (int i = 0; i < argc; i++) {
        if (cli_opt(argc, argv, &i, "--model", &model) || cli_opt(argc, argv, &i, "--tokenizer", &tok) ||
            cli_opt(argc, argv, &i, "--out", &out) || cli_opt(argc, argv, &i, "--type", &type_s) ||
            cli_opt(argc, argv, &i, "--calib", &calib) || cli_opt(argc, argv, &i, "--imatrix", &imat) ||
            cli_opt(argc, argv, &i, "--scale", &scale_s) || cli_opt(argc, argv, &i, "--output-type", &otype_s) ||
            cli_opt(argc, argv, &i, "--weighting", &weighting) ||
            cli_opt_int(argc, argv, &i, "--ctx", &ctx) || cli_opt_int(argc, argv, &i, "--chunks", &chunks))
            continue;
        if (cli_flag(argc, argv, &i, "--json")) json = 1;
        else if (cli_flag(argc, argv, &i, "--quiet")) piso_set_quiet(1);
        else if (cli_flag(argc, argv, &i, "--help") || cli_flag(argc, argv, &i, "-h")) {
            fputs(USAGE, stdout);
            return 0;
        } else
            return cli_usage_error("quantize", "unknown option '%s'\n%s", argv[i], USAGE);
    }
    if (!model || !out) return cli_usage_error("quantize", "--model and --out are required\n%s", USAGE);
    if (calib && imat) return cli_usage_error("quantize", "give either --calib or --imatrix, not both");
    struct piso_gguf_export_opts o = {.type = GGML_T_Q8_0, .output_type = -1};
    if (type_s && piso_ggml_type_from_name(type_s, &o.type))
        return cli_usage_error("quantize", "unknown --type '%s'\n%s", type_s, USAGE);
    if (otype_s && piso_ggml_type_from_name(otype_s, &o.output_type))
        return cli_usage_error("quantize", "unknown --output-type '%s'", otype_s);
    if (!strcmp(scale_s, "piso")) o.scale = PISO_GGUF_SCALE_PISO;
    else if (!strcmp(scale_s, "llamacpp-ref")) o.scale = PISO_GGUF_SCALE_REF;
    else return cli_usage_error("quantize", "--scale must be piso or llamacpp-ref, got '%s'", scale_s);
    if (!strcmp(weighting, "blend")) o.blend = 1;
    else if (strcmp(weighting, "raw"))
        return cli_usage_error("quantize", "--weighting must be raw or blend, got '%s'", weighting);
    if (ctx < 16) return cli_usage_error("quantize", "--ctx %ld is too small", ctx);

    struct piso_model *m = NULL;
    struct piso_imatrix *im = NULL;
    struct piso_calib_hessians *hs = NULL;
    int *ids = NULL, n = 0, rc = 1;
    struct piso_gguf_export_stats st;
    const struct piso_tokenizer *tk = NULL;
    if (piso_model_load(model, tok, &m)) goto done;
    /* a tokenizer is needed for --calib and wanted in the file; without one the file is "no_vocab" */
    tk = cli_model_tokenizer(m);
    if (!tk && (tok || calib)) goto done;
    if (imat && piso_imatrix_load(imat, &im)) goto done;
    if (calib) {
        if (cli_tokenize_file(tk, calib, &ids, &n)) goto done;
        int bos = piso_tokenizer_vocab(tk)->bos_id;
        if (piso_imatrix_compute(m, ids, n, (int)ctx, (int)chunks, bos, calib, &im)) goto done;
        if (o.scale == PISO_GGUF_SCALE_PISO && piso_calib_hessians_compute(m, ids, n, (int)ctx, (int)chunks, bos, &hs))
            goto done;
    }
    o.imatrix = im;
    o.hessians = hs;
    const struct piso_tokenizer_vocab *v = tk ? piso_tokenizer_vocab(tk) : NULL;
    if (!tk) piso_log("quantize: warning: no tokenizer; the file gets tokenizer.ggml.model = no_vocab\n");
    if (piso_gguf_export(m, v, &o, out, &st)) goto done;
    if (json) {
        printf("{\"out\": \"%s\", \"type\": \"%s\", \"scale\": \"%s\", \"importance\": \"%s\", \"tensors\": %lld, "
               "\"fallback_tensors\": %lld, \"bytes\": %llu, \"objective\": %.9g, \"seconds\": %.3f, \"tensor_types\": {",
               out, piso_ggml_traits(o.type)->name, scale_s, calib ? "calib" : imat ? "imatrix" : "none",
               (long long)st.n_tensors, (long long)st.n_fallback, (unsigned long long)st.file_bytes, st.objective, st.seconds);
        int first = 1;
        for (int t = 0; t < 64; t++)
            if (st.counts[t]) printf("%s\"%s\": %d", first ? "" : ", ", piso_ggml_traits(t)->name, st.counts[t]), first = 0;
        printf("}}\n");
    } else {
        piso_log("quantize: %s (%s scales) -> %s: %lld tensors (%lld in a fallback type), %llu bytes, %.2f s\n",
                 piso_ggml_traits(o.type)->name, scale_s, out, (long long)st.n_tensors, (long long)st.n_fallback,
                 (unsigned long long)st.file_bytes, st.seconds);
    }
    rc = 0;
done:
    if (rc) cli_fail("quantize", piso_last_error());
    piso_calib_hessians_free(hs);
    piso_imatrix_free(im);
    free(ids);
    piso_model_free(m);
    return rc;
}
