/* piso imatrix — llama.cpp-compatible importance matrix (per input column, the mean of squared
 * activations, keyed by GGUF tensor name) from calibration text, llama-imatrix's chunking. */
#include "cli.h"
#include "piso/imatrix.h"
#include "piso/json_out.h"
#include "piso/model.h"
#include "piso/tokenizer.h"

#include <stdlib.h>
#include <string.h>

struct imatrix_args {
    struct cli_common common;
    const char *model, *tokenizer, *calib, *out, *format;
    int64_t ctx, chunks;
};

static const char *const imatrix_formats[] = {"gguf", "dat", NULL};

static const struct cli_option imatrix_options[] = {
    CLI_OPTION_MODEL(struct imatrix_args),
    {"--calib", NULL, CLI_STRING, offsetof(struct imatrix_args, calib), .arg = "FILE", .help = "calibration text",
     .required = 1},
    {"--out", "-o", CLI_STRING, offsetof(struct imatrix_args, out), .arg = "FILE",
     .help = "the importance matrix to write", .required = 1},
    CLI_OPTION_TOKENIZER(struct imatrix_args),
    {"--ctx", NULL, CLI_INT, offsetof(struct imatrix_args, ctx), .arg = "N", .help = "tokens per chunk", .def = "512",
     .imin = 16, .imax = 1 << 20},
    {"--chunks", NULL, CLI_INT, offsetof(struct imatrix_args, chunks), .arg = "N",
     .help = "chunks to use; 0: all the text gives", .imin = 0, .imax = 1 << 30},
    {"--format", NULL, CLI_CHOICE, offsetof(struct imatrix_args, format),
     .help = "file format; by default dat when FILE ends in .dat, else gguf", .choices = imatrix_formats},
    {0},
};

static const struct cli_section imatrix_sections[] = {{NULL, NULL, imatrix_options}, {0}};

static const struct cli_command imatrix_command = {
    .name = "imatrix",
    .summary = "Compute a llama.cpp importance matrix (mean squared activation per input column)\n"
               "from calibration text, chunked as llama-imatrix does.",
    .notes = "--json prints {\"out\", \"format\", \"entries\", \"chunks\", \"ctx\", \"tokens\", \"seconds\"}.\n",
    .sections = imatrix_sections,
};

int cmd_imatrix(int argc, char **argv) {
    struct imatrix_args a = {0};
    int prc = cli_parse(&imatrix_command, CLI_ALL_SECTIONS, argc, argv, &a.common);
    if (prc != CLI_CONTINUE) return prc;
    if (piso_output_check(a.out, 0) != 0) return cli_fail("imatrix", piso_last_error()); /* before any work */
    size_t ol = strlen(a.out);
    int dat = a.format ? !strcmp(a.format, "dat") : (ol > 4 && !strcmp(a.out + ol - 4, ".dat"));
    struct piso_model *m = NULL;
    int *ids = NULL, n = 0, rc = 1;
    struct piso_imatrix *im = NULL;
    const struct piso_tokenizer *tk = NULL;
    double t0 = piso_time();
    if (piso_model_load(a.model, a.tokenizer, &m) || !(tk = cli_model_tokenizer(m)) ||
        cli_tokenize_file(tk, a.calib, &ids, &n))
        goto done;
    const struct piso_tokenizer_vocab *v = piso_tokenizer_vocab(tk);
    if (piso_imatrix_compute(m, ids, n, (int)a.ctx, (int)a.chunks, v->bos_id, a.calib, &im)) goto done;
    if (dat ? piso_imatrix_save_dat(im, a.out) : piso_imatrix_save_gguf(im, a.out)) goto done;
    if (a.common.json) {
        struct piso_json w;
        piso_json_begin(&w, PISO_JSON_SPACED);
        piso_json_string(&w, "out", a.out);
        piso_json_string(&w, "format", dat ? "dat" : "gguf");
        piso_json_int(&w, "entries", im->n);
        piso_json_int(&w, "chunks", im->chunk_count);
        piso_json_int(&w, "ctx", a.ctx);
        piso_json_int(&w, "tokens", n);
        piso_json_fixed(&w, "seconds", piso_time() - t0, 3);
        if (piso_json_print(&w, stdout)) goto done;
    } else {
        piso_log("imatrix: %d entries from %d chunks of %lld tokens -> %s\n", im->n, im->chunk_count, (long long)a.ctx,
                 a.out);
    }
    rc = 0;
done:
    if (rc) cli_fail("imatrix", piso_last_error());
    piso_imatrix_free(im);
    free(ids);
    piso_model_free(m);
    return rc;
}
