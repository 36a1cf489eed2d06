/* Lazy (streaming) models: piso_model_load_lazy keeps the weights in the file; acquiring a block
 * gives exactly the F32 weights the eager loader gives (F32 and BF16 sources, q/k rows in piso's
 * RoPE order), releasing frees them, embeddings looked up from the file equal the eager rows, and
 * a whole forward pass block by block matches the eager model bit for bit, also with the linears
 * converted on demand (piso_model_set_linears_on_demand: acquire leaves them NULL, each product
 * converts its weight). A NaN in a block is refused when that block is acquired, or, on demand,
 * when the forward reaches it, naming the layer. */
#include "harness.h"
#include "piso/pipeline.h"
#include "piso/safetensors.h"
#include "piso/schema.h"

#include <unistd.h>

/* Compares the lazy model with the eager one on `path`. */
static void compare(const char *path, const char *what) {
    struct piso_model *e = NULL, *z = NULL, *d = NULL;
    CHECK(piso_model_load(path, NULL, &e) == 0, "%s: eager load: %s", what, piso_last_error());
    CHECK(piso_model_load_lazy(path, NULL, &z) == 0, "%s: lazy load: %s", what, piso_last_error());
    CHECK(piso_model_load_lazy(path, NULL, &d) == 0, "%s: lazy load: %s", what, piso_last_error());
    if (!e || !z || !d) goto out;
    piso_model_set_linears_on_demand(d, 1);
    const struct piso_config *c = &e->cfg;
    CHECK(piso_model_is_lazy(z) && !piso_model_is_lazy(e), "%s: lazy flags", what);
    CHECK(z->cfg.dtype == c->dtype && z->cfg.tied_embeddings == c->tied_embeddings && z->cfg.rope_style == c->rope_style,
          "%s: config differs", what);
    CHECK(z->tok_embd == NULL && z->layers[0].wq == NULL, "%s: weights must stay in the file before acquire", what);
    CHECK(z->out_norm && !memcmp(z->out_norm, e->out_norm, sizeof(float) * c->dim), "%s: out_norm", what);
    /* embeddings: every row through piso_model_rows, some through piso_embed */
    float *row = malloc(sizeof(float) * c->dim);
    int bad_rows = 0;
    for (int v = 0; v < c->vocab_size; v++) {
        piso_model_rows(z, 0, v, 1, row);
        bad_rows += memcmp(row, e->tok_embd + (size_t)v * c->dim, sizeof(float) * c->dim) != 0;
    }
    CHECK(bad_rows == 0, "%s: %d embedding rows differ", what, bad_rows);
    free(row);
    const int n = 24;
    int tokens[24];
    for (int i = 0; i < n; i++) tokens[i] = (i * 37 + 1) % c->vocab_size;
    float *xe = malloc(sizeof(float) * n * c->dim), *xz = malloc(sizeof(float) * n * c->dim);
    float *xd = malloc(sizeof(float) * n * c->dim);
    piso_embed(e, tokens, n, xe), piso_embed(z, tokens, n, xz), piso_embed(d, tokens, n, xd);
    CHECK(!memcmp(xe, xz, sizeof(float) * n * c->dim), "%s: piso_embed differs", what);
    for (int b = 0; b < c->n_layers; b++) {
        CHECK(piso_model_block_acquire(z, b) == 0, "%s: acquire %d: %s", what, b, piso_last_error());
        CHECK(piso_model_block_acquire(z, b) == 0, "%s: acquire twice %d", what, b);
        for (int st = PISO_TR_FIRST_BLOCK; st < PISO_TR_FIRST_BLOCK + PISO_TR_N_BLOCK; st++) {
            const struct piso_tensor_info *t = &piso_schema[st];
            const float *pe = piso_schema_data(e, t, b), *pz = piso_schema_data(z, t, b);
            CHECK(!pe == !pz, "%s: block %d %s present in one model only", what, b, t->label);
            if (pe && pz)
                CHECK(!memcmp(pe, pz, sizeof(float) * (size_t)piso_schema_numel(c, t)), "%s: block %d %s differs", what, b,
                      t->label);
        }
        /* on demand: the norms are acquired, the linears converted where used, the same values */
        CHECK(piso_model_block_acquire(d, b) == 0, "%s: acquire on demand %d: %s", what, b, piso_last_error());
        CHECK(d->layers[b].wq == NULL && d->layers[b].w_down == NULL && d->layers[b].attn_norm != NULL,
              "%s: on demand, block %d holds linears or lacks its norms", what, b);
        for (int k = 0; k < PISO_LIN_COUNT; k++) {
            const struct piso_tensor_info *t = piso_schema_linear((enum piso_linear)k);
            float *owned = NULL;
            const float *w = piso_model_linear_f32(d, b, k, &owned);
            CHECK(w && w == owned && !memcmp(w, piso_schema_data(e, t, b), sizeof(float) * (size_t)piso_schema_numel(c, t)),
                  "%s: block %d %s on demand differs", what, b, t->label);
            free(owned);
            w = piso_model_linear_f32(z, b, k, &owned); /* an acquired linear: the model's own */
            CHECK(w == piso_schema_data(z, t, b) && !owned, "%s: block %d %s: acquired weights not returned", what, b,
                  t->label);
        }
        /* the forward pass on the acquired block is the eager one, bit for bit */
        CHECK(piso_block_forward(e, b, xe, n, NULL) == 0 && piso_block_forward(z, b, xz, n, NULL) == 0 &&
                  piso_block_forward(d, b, xd, n, NULL) == 0,
              "%s: forward", what);
        CHECK(!memcmp(xe, xz, sizeof(float) * n * c->dim), "%s: residual stream after block %d differs", what, b);
        CHECK(!memcmp(xe, xd, sizeof(float) * n * c->dim), "%s: on demand: residual stream after block %d differs", what, b);
        piso_model_block_release(d, b);
        piso_model_block_release(z, b);
        CHECK(z->layers[b].wq == NULL && z->layers[b].w_down == NULL && z->layers[b].attn_norm == NULL,
              "%s: release leaves block %d's weights", what, b);
    }
    free(xe), free(xz), free(xd);
    /* eager models: acquire and release are no-ops */
    CHECK(piso_model_block_acquire(e, 0) == 0 && e->layers[0].wq != NULL, "%s: eager acquire", what);
    piso_model_block_release(e, 0);
    CHECK(e->layers[0].wq != NULL, "%s: eager release must keep the weights", what);
out:
    piso_model_free(e), piso_model_free(z), piso_model_free(d);
}

int main(void) {
    const char *hf = test_data("models/stories260K-hf");
    char dir[256], path[512];
    snprintf(dir, sizeof dir, "/tmp/piso_test_lazy_%d", (int)getpid());
    compare(hf, "stories260K-hf (F32)");
    /* a BF16 copy (and an F32 copy to poison): written by the eager exporter */
    struct piso_model *m = NULL;
    CHECK(piso_model_load(hf, NULL, &m) == 0, "load: %s", piso_last_error());
    if (!m) return test_finish();
    snprintf(path, sizeof path, "%s/tokenizer.json", hf);
    struct piso_hf_export_opts o = {.tokenizer_json = path, .source_dir = hf};
    char bf16[300], f32[300];
    snprintf(bf16, sizeof bf16, "%s-bf16", dir), snprintf(f32, sizeof f32, "%s-f32", dir);
    CHECK(piso_hf_export(m, f32, &o) == 0, "export F32: %s", piso_last_error());
    m->cfg.dtype = PISO_DTYPE_BF16;
    CHECK(piso_hf_export(m, bf16, &o) == 0, "export BF16: %s", piso_last_error());
    piso_model_free(m);
    compare(bf16, "BF16 copy");
    /* a NaN in block 1's up_proj: loading still works, acquiring block 1 is refused */
    snprintf(path, sizeof path, "%s/model.safetensors", f32);
    struct piso_st_file f;
    long off = -1;
    if (piso_st_open(&f, path) == 0) {
        const struct piso_st_tensor *t = piso_st_find(&f, "model.layers.1.mlp.up_proj.weight");
        if (t) off = (long)((const uint8_t *)t->data - f.map.data) + 4 * 7;
        piso_st_close(&f);
    }
    CHECK(off > 0, "up_proj of layer 1 in %s", path);
    FILE *fp = fopen(path, "r+b");
    float nan = NAN;
    CHECK(fp && fseek(fp, off, SEEK_SET) == 0 && fwrite(&nan, 4, 1, fp) == 1, "poison %s", path);
    if (fp) fclose(fp);
    struct piso_model *z = NULL;
    CHECK(piso_model_load_lazy(f32, NULL, &z) == 0, "lazy load of the poisoned copy: %s", piso_last_error());
    if (z) {
        CHECK(piso_model_block_acquire(z, 0) == 0, "block 0 is clean");
        CHECK(piso_model_block_acquire(z, 1) != 0, "block 1 must be refused");
        const char *msg = piso_last_error();
        CHECK(strstr(msg, "layer 1") && strstr(msg, "non-finite") && strstr(msg, "index 7"), "message: %s", msg);
        CHECK(z->layers[1].wq == NULL && z->layers[1].w_up == NULL, "a refused block holds nothing");
        piso_model_free(z); /* frees block 0 too */
    }
    /* on demand: block 1 acquires (norms only); its forward stops at up_proj, naming it */
    z = NULL;
    CHECK(piso_model_load_lazy(f32, NULL, &z) == 0, "lazy load of the poisoned copy: %s", piso_last_error());
    if (z) {
        piso_model_set_linears_on_demand(z, 1);
        float *x = calloc((size_t)4 * z->cfg.dim, sizeof(float));
        for (int i = 0; i < 4 * z->cfg.dim; i++) x[i] = (float)((i % 13) - 6) / 8;
        CHECK(piso_model_block_acquire(z, 1) == 0, "on demand: block 1's norms are clean");
        CHECK(piso_block_forward(z, 1, x, 4, NULL) != 0, "on demand: the forward through block 1 must fail");
        const char *msg = piso_last_error();
        CHECK(strstr(msg, "layer 1") && strstr(msg, "non-finite") && strstr(msg, "index 7"), "message: %s", msg);
        free(x);
        piso_model_free(z);
    }
    /* what streaming does not read */
    CHECK(piso_model_load_lazy(test_data("models/stories260K/stories260K.bin"), NULL, &z) != 0 &&
              strstr(piso_last_error(), "Hugging Face"),
          "a llama2.c file must be refused: %s", piso_last_error());
    CHECK(piso_model_can_stream(hf) && !piso_model_can_stream(test_data("models/stories260K/stories260K.bin")),
          "piso_model_can_stream");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", bf16, f32);
    CHECK(system(cmd) == 0, "cleanup");
    return test_finish();
}
