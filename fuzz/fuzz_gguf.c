/* GGUF reader (piso_gguf_open), then the model and tokenizer loaders on the same file. Invariants:
 * every tensor lies inside the data section, in order and without overlap, with nbytes matching
 * type × ne; a file that parses re-serialises (piso_gguf_writer: the key types it writes and every
 * tensor) to one that parses the same; a model that loads gives finite logits or an error. */
#include "fuzz_common.h"
#include "piso/gguf.h"
#include "piso/gguf_write.h"
#include "piso/model.h"
#include "piso/tokenizer.h"

#include <math.h>

static void roundtrip(const struct piso_gguf *g) {
    struct piso_gguf_writer *w = piso_gguf_writer_new();
    int rc = 0;
    for (int64_t i = 0; i < g->n_kv && !rc; i++) {
        const struct piso_gguf_kv *kv = &g->kv[i];
        if (!strcmp(kv->key, "general.alignment")) continue; /* the writer sets its own */
        char *s;
        switch (kv->type) {
        case GGUF_VT_UINT32: rc = piso_gguf_set_u32(w, kv->key, (uint32_t)kv->val.u64); break;
        case GGUF_VT_INT32: rc = piso_gguf_set_i32(w, kv->key, (int32_t)kv->val.i64); break;
        case GGUF_VT_BOOL: rc = piso_gguf_set_bool(w, kv->key, kv->val.u64 != 0); break;
        case GGUF_VT_STRING:
            s = strndup(kv->str, kv->str_len);
            if (strlen(s) == kv->str_len) rc = piso_gguf_set_str(w, kv->key, s); /* no NUL inside */
            free(s);
            break;
        default: break;
        }
    }
    FUZZ_CHECK(rc == 0, "writer refused a key: %s", piso_last_error());
    for (int64_t i = 0; i < g->n_tensors; i++) {
        const struct piso_gguf_tensor *t = &g->tensors[i];
        rc = piso_gguf_add_tensor(w, t->name, t->n_dims, t->ne, t->type, (void *)(uintptr_t)t->data, t->nbytes, 0);
        if (rc) break; /* the writer is stricter (e.g. ne[0] a block multiple): no round trip then */
    }
    if (!rc) {
        const char *out = fuzz_path("out.gguf");
        FUZZ_CHECK(piso_gguf_writer_write(w, out) == 0, "writing: %s", piso_last_error());
        struct piso_gguf h;
        FUZZ_CHECK(piso_gguf_open(&h, out) == 0, "the re-serialised GGUF does not parse: %s", piso_last_error());
        FUZZ_CHECK(h.n_tensors == g->n_tensors, "tensor count");
        for (int64_t i = 0; i < g->n_tensors; i++) {
            const struct piso_gguf_tensor *a = &g->tensors[i], *b = piso_gguf_find_tensor(&h, a->name);
            FUZZ_CHECK(b && b->type == a->type && b->n_dims == a->n_dims && b->nbytes == a->nbytes, "tensor %s", a->name);
            for (int d = 0; d < 4; d++) FUZZ_CHECK(a->ne[d] == b->ne[d], "tensor %s ne", a->name);
            FUZZ_CHECK(!a->nbytes || !memcmp(a->data, b->data, a->nbytes), "tensor %s bytes", a->name);
        }
        for (int64_t i = 0; i < g->n_kv; i++) {
            const struct piso_gguf_kv *a = &g->kv[i];
            if (a->type != GGUF_VT_UINT32 && a->type != GGUF_VT_INT32 && a->type != GGUF_VT_BOOL) continue;
            if (!strcmp(a->key, "general.alignment")) continue;
            const struct piso_gguf_kv *b = piso_gguf_find(&h, a->key);
            FUZZ_CHECK(b && b->type == a->type && b->val.u64 == a->val.u64, "key %s", a->key);
        }
        piso_gguf_close(&h);
    }
    piso_gguf_writer_free(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *in = fuzz_file(data, size, "in.gguf");
    struct piso_gguf g;
    if (piso_gguf_open(&g, in) != 0) return 0;
    const uint8_t *lo = g.map.data, *hi = g.map.data + g.map.size, *prev_end = NULL;
    for (int64_t i = 0; i < g.n_tensors; i++) {
        const struct piso_gguf_tensor *t = &g.tensors[i];
        FUZZ_CHECK(t->n_dims >= 1 && t->n_dims <= 4, "tensor %s: %d dims", t->name, t->n_dims);
        FUZZ_CHECK(!t->nbytes || ((const uint8_t *)t->data >= lo && (const uint8_t *)t->data + t->nbytes <= hi),
                   "tensor %s outside the file", t->name);
        FUZZ_CHECK(!prev_end || (const uint8_t *)t->data >= prev_end, "tensor %s overlaps the one before", t->name);
        prev_end = (const uint8_t *)t->data + t->nbytes;
        FUZZ_CHECK(piso_gguf_find_tensor(&g, t->name) == t, "tensor %s found twice", t->name);
    }
    if (g.n_tensors <= 64) roundtrip(&g);
    piso_gguf_close(&g);

    /* the same bytes as a model (its tokenizer included) */
    struct piso_model *m = NULL;
    if (piso_model_load(in, NULL, &m) == 0) {
        const struct piso_config *c = &m->cfg;
        FUZZ_CHECK(c->dim > 0 && c->n_layers > 0 && c->vocab_size > 0 && c->head_dim > 0, "config");
        if ((int64_t)c->vocab_size * c->dim < (1 << 22)) {
            int toks[2] = {0, c->vocab_size - 1};
            float *logits = malloc(sizeof(float) * 2 * (size_t)c->vocab_size);
            (void)piso_forward(m, toks, 2, 0, logits); /* runs without a crash or a sanitizer report */
            free(logits);
        }
        piso_model_free(m);
    }
    struct piso_tokenizer *t = NULL;
    if (piso_tokenizer_load(in, &t) == 0) {
        int *ids, n;
        const char *text = "Hello world, 123 \xC3\xA9t\xC3\xA9 <s>";
        if (piso_tokenize(t, text, strlen(text), 1, &ids, &n) == 0) {
            int nv = piso_tokenizer_vocab(t)->n_vocab;
            for (int i = 0; i < n; i++) FUZZ_CHECK(ids[i] >= 0 && ids[i] < nv, "id %d of %d", ids[i], nv);
            free(piso_detokenize(t, ids, n, 0));
            free(ids);
        }
        piso_tokenizer_free(t);
    }
    return 0;
}
