/* Model loading refuses NaN/Inf weights with a message naming the tensor, and a directory that
 * holds one llama2.c checkpoint loads as that checkpoint. */
#include "harness.h"
#include "piso/model.h"

#include <unistd.h>

static int copy_with_poison(const char *src, const char *dst, long offset, float value) {
    char *buf;
    size_t n;
    if (piso_read_file(src, &buf, &n) != 0) return -1;
    if (offset >= 0) memcpy(buf + offset, &value, 4);
    FILE *f = fopen(dst, "wb");
    if (!f) return -1;
    fwrite(buf, 1, n, f);
    fclose(f);
    free(buf);
    return 0;
}

int main(void) {
    const char *bin = test_data("models/stories260K/stories260K.bin");
    char dir[] = "/tmp/piso_model_err_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char path[512];
    snprintf(path, sizeof path, "%s/poisoned.bin", dir);

    /* header: 7 int32; then the token embedding table [512, 64]: element 5 of row 0 */
    CHECK(copy_with_poison(bin, path, 28 + 4 * 5, NAN) == 0, "copy");
    struct piso_model *m = NULL;
    CHECK(piso_model_load(path, NULL, &m) != 0 && m == NULL, "a NaN embedding must be refused");
    CHECK(strstr(piso_last_error(), "token embeddings") && strstr(piso_last_error(), "non-finite") &&
              strstr(piso_last_error(), "index 5"),
          "message: %s", piso_last_error());

    /* an Inf in layer 0's attention norm (right after the 512*64 embedding table) */
    CHECK(copy_with_poison(bin, path, 28 + 4L * 512 * 64 + 4 * 3, INFINITY) == 0, "copy");
    CHECK(piso_model_load(path, NULL, &m) != 0, "an Inf norm weight must be refused");
    CHECK(strstr(piso_last_error(), "layer 0 attn_norm"), "message: %s", piso_last_error());

    /* the model directory form: stories260K/ holds stories260K.bin + tok512.bin, no config.json */
    char mdir[4096];
    snprintf(mdir, sizeof mdir, "%s", bin);
    *strrchr(mdir, '/') = 0;
    CHECK(piso_model_load(mdir, NULL, &m) == 0, "load %s: %s", mdir, piso_last_error());
    if (m) {
        CHECK(m->cfg.dim == 64 && m->cfg.n_layers == 5 && m->tok != NULL, "stories260K via its directory");
        piso_model_free(m);
    }
    unlink(path);
    rmdir(dir);
    return test_finish();
}
