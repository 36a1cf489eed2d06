/* What the streaming tests (test_stream_export.c, test_stream_gguf.c) share: counting what a run
 * left in a directory, and a copy of an HF model with one non-finite weight in block 1. */
#ifndef PISO_TEST_STREAM_FIXTURES_H
#define PISO_TEST_STREAM_FIXTURES_H

#include "harness.h"
#include "piso/model.h"
#include "piso/pipeline.h"

#include <dirent.h>
#include <math.h>

/* Entries of dir (other than . and ..). */
static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    if (d) closedir(d);
    return n;
}

/* The HF model at hf written to out (with its tokenizer) after *poison(m) = NaN: the exporter
 * writes what it is given, so the NaN reaches the file for piso quantize to refuse. */
static void write_poisoned_copy(const char *hf, const char *out, float *(*poison)(struct piso_model *)) {
    struct piso_model *m = NULL;
    char path[600];
    CHECK(piso_model_load(hf, NULL, &m) == 0, "load %s", hf);
    snprintf(path, sizeof path, "%s/tokenizer.json", hf);
    struct piso_hf_export_opts o = {.tokenizer_json = path, .source_dir = hf};
    if (m) {
        *poison(m) = NAN;
        CHECK(piso_hf_export(m, out, &o) == 0, "export: %s", piso_last_error());
    }
    piso_model_free(m);
}

#endif
