/* Helpers shared by the subcommands that load a model and read calibration text. */
#include "cli.h"
#include "piso/model.h"
#include "piso/tokenizer.h"

#include <stdlib.h>

const struct piso_tokenizer *cli_model_tokenizer(const struct piso_model *m) {
    if (!m->tok) piso_errorf("%s: no tokenizer in or beside the model (pass --tokenizer PATH)", m->path);
    return m->tok;
}

int cli_tokenize_file(const struct piso_tokenizer *t, const char *path, int **ids, int *n) {
    char *text;
    size_t len;
    if (piso_read_file(path, &text, &len) != 0) return -1;
    if (len == 0) {
        free(text);
        return piso_errorf("%s: the text is empty", path);
    }
    int rc = piso_tokenize(t, text, len, piso_tokenizer_vocab(t)->add_bos, ids, n);
    free(text);
    return rc;
}
