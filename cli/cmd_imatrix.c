/* piso imatrix — llama.cpp-compatible importance matrix (per input column, the mean of squared
 * activations, keyed by GGUF tensor name) from calibration text, llama-imatrix's chunking. */
#include "cli.h"
#include "piso/imatrix.h"
#include "piso/model.h"
#include "piso/tokenizer.h"

#include <stdlib.h>
#include <string.h>

static const char *USAGE =
    "usage: piso imatrix --model PATH --calib FILE -o imatrix.gguf [--tokenizer PATH] [--ctx 512]\n"
    "                    [--chunks N] [--format gguf|dat] [--json] [--quiet]\n";

int cmd_imatrix(int argc, char **argv) {
    const char *model = NULL, *tok = NULL, *calib = NULL, *out = NULL, *format = NULL;
    long ctx = 512, chunks = 0;
    int json = 0;
    for (int i = 0; i < argc; i++) {
        if (cli_opt(argc, argv, &i, "--model", &model) || cli_opt(argc, argv, &i, "--tokenizer", &tok) ||
            cli_opt(argc, argv, &i, "--calib", &calib) || cli_opt(argc, argv, &i, "-o", &out) ||
            cli_opt(argc, argv, &i, "--out", &out) || cli_opt(argc, argv, &i, "--format", &format) ||
            cli_opt_int(argc, argv, &i, "--ctx", &ctx) || cli_opt_int(argc, argv, &i, "--chunks", &chunks))
            continue;
        if (cli_flag(argc, argv, &i, "--json")) json = 1;
        else if (cli_flag(argc, argv, &i, "--quiet")) piso_set_quiet(1);
        else if (cli_flag(argc, argv, &i, "--help") || cli_flag(argc, argv, &i, "-h")) {
            fputs(USAGE, stdout);
            return 0;
        } else
            return cli_usage_error("imatrix", "unknown option '%s'\n%s", argv[i], USAGE);
    }
    if (!model || !calib || !out) return cli_usage_error("imatrix", "--model, --calib and -o are required\n%s", USAGE);
    if (ctx < 16 || ctx > 1 << 20) return cli_usage_error("imatrix", "--ctx %ld out of range (16..1048576)", ctx);
    size_t ol = strlen(out);
    int dat = format ? !strcmp(format, "dat") : (ol > 4 && !strcmp(out + ol - 4, ".dat"));
    if (format && strcmp(format, "dat") && strcmp(format, "gguf"))
        return cli_usage_error("imatrix", "--format must be gguf or dat, got '%s'", format);
    struct piso_model *m = NULL;
    int *ids = NULL, n = 0, rc = 1;
    struct piso_imatrix *im = NULL;
    const struct piso_tokenizer *tk = NULL;
    double t0 = piso_time();
    if (piso_model_load(model, tok, &m) || !(tk = cli_model_tokenizer(m)) ||
        cli_tokenize_file(tk, calib, &ids, &n))
        goto done;
    const struct piso_tokenizer_vocab *v = piso_tokenizer_vocab(tk);
    if (piso_imatrix_compute(m, ids, n, (int)ctx, (int)chunks, v->bos_id, calib, &im)) goto done;
    if (dat ? piso_imatrix_save_dat(im, out) : piso_imatrix_save_gguf(im, out)) goto done;
    if (json)
        printf("{\"out\": \"%s\", \"format\": \"%s\", \"entries\": %d, \"chunks\": %d, \"ctx\": %ld, \"tokens\": %d, "
               "\"seconds\": %.3f}\n", out, dat ? "dat" : "gguf", im->n, im->chunk_count, ctx, n, piso_time() - t0);
    else
        piso_log("imatrix: %d entries from %d chunks of %ld tokens -> %s\n", im->n, im->chunk_count, ctx, out);
    rc = 0;
done:
    if (rc) cli_fail("imatrix", piso_last_error());
    piso_imatrix_free(im);
    free(ids);
    piso_model_free(m);
    return rc;
}
