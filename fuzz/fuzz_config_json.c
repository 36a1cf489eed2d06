/* config.json of an HF model directory (+ model.safetensors.index.json when the input says so).
 * The directory holds the fuzzed config.json and, when $PISO_DATA has it, stories260K-hf's weights
 * and tokenizer, so that configurations close to the real one get past the shape checks.
 * Invariants: an accepted configuration is self-consistent (dims positive, head_dim·n_heads and
 * n_kv_heads dividing n_heads), and the loaded model runs a forward pass without a fault. */
#include "fuzz_common.h"
#include "piso/model.h"

static char model_dir[512];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    snprintf(model_dir, sizeof model_dir, "%s", fuzz_path("hf"));
    mkdir(model_dir, 0700);
    const char *data = fuzz_data_root();
    char src[1024], dst[1024];
    static const char *names[] = {"model.safetensors", "tokenizer.json"};
    for (int i = 0; data && *data && i < 2; i++) {
        snprintf(src, sizeof src, "%s/models/stories260K-hf/%s", data, names[i]);
        snprintf(dst, sizeof dst, "%s/%s", model_dir, names[i]);
        if (access(src, R_OK) == 0 && symlink(src, dst) != 0) perror("symlink");
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char p[1024];
    snprintf(p, sizeof p, "%s/config.json", model_dir);
    FILE *f = fopen(p, "wb");
    if (!f) abort();
    fwrite(data, 1, size, f);
    fclose(f);
    struct piso_model *m = NULL;
    if (piso_model_load(model_dir, NULL, &m) != 0) return 0;
    const struct piso_config *c = &m->cfg;
    FUZZ_CHECK(c->dim > 0 && c->hidden_dim > 0 && c->n_layers > 0 && c->n_heads > 0 && c->n_kv_heads > 0 &&
                   c->vocab_size > 0 && c->head_dim > 0 && c->n_heads % c->n_kv_heads == 0,
               "inconsistent config accepted: dim %d hidden %d layers %d heads %d/%d vocab %d head_dim %d", c->dim,
               c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size, c->head_dim);
    int toks[3] = {1, 2 % c->vocab_size, c->vocab_size - 1};
    float *logits = malloc(sizeof(float) * 3 * (size_t)c->vocab_size);
    (void)piso_forward(m, toks, 3, 0, logits);
    free(logits);
    piso_model_free(m);
    return 0;
}
