/* Lazy (streaming) HF models: the shards stay mapped and weights stay in their source dtype; a
 * block is converted to F32 when the pipeline reaches it and freed when it is done, so one block
 * (not the model) is held in F32. The mapping's pages are dropped after each conversion: they are
 * file-backed and would otherwise stay resident (and counted) until the end. */
#include "model/model_internal.h"
#include "piso/schema.h"
#include "piso/transform.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int piso_model_is_lazy(const struct piso_model *m) { return m && m->storage && m->storage->lazy; }

void piso_lazy_drop_pages(const void *p, size_t n) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)p & ~(page - 1), e = ((uintptr_t)p + n + page - 1) & ~(page - 1);
    /* MAP_PRIVATE pages never written: dropping them only forgets what can be read again */
    if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
}

void piso_model_drop_file_pages(const struct piso_model *m) {
    const struct piso_model_storage *s = m->storage;
    for (int i = 0; s && s->lazy && i < s->n_st; i++) piso_lazy_drop_pages(s->st[i].map.data, s->st[i].map.size);
}

/* Block tensor t of block b from the mapping as F32 (malloc'd, q/k rows in piso's RoPE order,
 * every value checked finite); *out NULL when t is optional and absent. */
static int lazy_convert(struct piso_model *m, const struct piso_tensor_info *t, int b, float **out) {
    struct piso_model_storage *s = m->storage;
    const struct piso_config *c = &m->cfg;
    int fi;
    *out = NULL;
    const struct piso_st_tensor *src = piso_lazy_source(m, t, b, &fi);
    if (!src) return 0; /* optional and absent (validated at load) */
    const char *file = s->st[fi].map.path;
    float *p = malloc(sizeof(float) * (size_t)(src->numel ? src->numel : 1));
    if (!p) return piso_errorf("%s: tensor '%s': out of memory converting block %d to F32", file, src->name, b);
    int rc = piso_st_read_f32(&s->st[fi], src, p, (size_t)src->numel);
    piso_lazy_drop_pages(src->data, src->nbytes);
    int64_t bad = rc ? -1 : piso_find_nonfinite(p, (size_t)src->numel);
    if (bad >= 0) rc = piso_errorf("%s: layer %d %s has a non-finite value at index %lld", m->path, b, t->label, (long long)bad);
    const int64_t cols = piso_schema_dim(c, t->cols);
    if (!rc && t->rope && c->rope_style == PISO_ROPE_ADJACENT)
        rc = piso_rope_reorder_inplace(p, piso_schema_rope_heads(c, t), c->head_dim, cols ? cols : 1, PISO_ROPE_ADJACENT);
    if (rc) {
        free(p);
        return -1;
    }
    *out = p;
    return 0;
}

static int is_linear_weight(const struct piso_tensor_info *t) {
    for (int k = 0; k < PISO_LIN_COUNT; k++)
        if (t == piso_schema_linear((enum piso_linear)k)) return 1;
    return 0;
}

void piso_model_set_linears_on_demand(struct piso_model *m, int on) {
    if (piso_model_is_lazy(m)) m->storage->linears_on_demand = on;
}

const float *piso_model_linear_f32(const struct piso_model *m, int layer, int k, float **owned) {
    struct piso_model *mm = (struct piso_model *)(uintptr_t)m;
    const struct piso_tensor_info *t = piso_schema_linear((enum piso_linear)k);
    *owned = NULL;
    const float *w = *piso_schema_slot(mm, t, layer);
    if (w) return w;
    if (!piso_model_is_lazy(m)) {
        piso_errorf("%s: layer %d %s is not loaded", m->path, layer, t->label);
        return NULL;
    }
    if (lazy_convert(mm, t, layer, owned)) return NULL;
    if (!*owned) piso_errorf("%s: layer %d has no %s", m->path, layer, t->label);
    return *owned;
}

int piso_model_block_acquire(struct piso_model *m, int b) {
    struct piso_model_storage *s = m->storage;
    if (!s->lazy || s->acquired[b]) return 0;
    s->acquired[b] = 1; /* a failure part-way releases what was converted */
    for (int st = PISO_TR_FIRST_BLOCK; st < PISO_TR_FIRST_BLOCK + PISO_TR_N_BLOCK; st++) {
        const struct piso_tensor_info *t = &piso_schema[st];
        if (s->linears_on_demand && is_linear_weight(t)) continue; /* piso_model_linear_f32 at each use */
        if (lazy_convert(m, t, b, piso_schema_slot(m, t, b))) {
            piso_model_block_release(m, b);
            return -1;
        }
    }
    return 0;
}

void piso_model_block_release(struct piso_model *m, int b) {
    struct piso_model_storage *s = m->storage;
    if (!s->lazy || !s->acquired[b]) return;
    for (int st = PISO_TR_FIRST_BLOCK; st < PISO_TR_FIRST_BLOCK + PISO_TR_N_BLOCK; st++) {
        float **slot = piso_schema_slot(m, &piso_schema[st], b);
        free(*slot);
        *slot = NULL;
    }
    s->acquired[b] = 0;
}

int piso_model_rows(const struct piso_model *m, int output, int64_t row0, int64_t n, float *dst) {
    const int64_t D = m->cfg.dim;
    const float *mem = output && m->output ? m->output : m->tok_embd;
    if (mem) {
        memcpy(dst, mem + row0 * D, sizeof(float) * (size_t)(n * D));
        return 0;
    }
    struct piso_model *mm = (struct piso_model *)(uintptr_t)m;
    int fi;
    const struct piso_tensor_info *t = &piso_schema[output && !m->cfg.tied_embeddings ? PISO_TR_OUTPUT : PISO_TR_TOK_EMBD];
    const struct piso_st_tensor *src = piso_lazy_source(mm, t, -1, &fi);
    if (!src) return piso_errorf("%s: tensor '%s' is not in the model", m->path, t->hf ? t->hf : t->label);
    const size_t es = piso_dtype_size(src->dtype);
    const uint8_t *p = (const uint8_t *)src->data + (size_t)(row0 * D) * es;
    return piso_convert_to_f32(src->dtype, p, dst, (size_t)(n * D));
}

int piso_lazy_check_globals(struct piso_model *m) {
    const int64_t D = m->cfg.dim, V = m->cfg.vocab_size, chunk = 4096;
    float *buf = malloc(sizeof(float) * (size_t)(chunk * D));
    if (!buf) return piso_errorf("%s: out of memory", m->path);
    int rc = 0;
    for (int out = 0; out < 2 && !rc; out++) {
        if (out && m->cfg.tied_embeddings) break;
        int fi;
        const struct piso_tensor_info *t = &piso_schema[out ? PISO_TR_OUTPUT : PISO_TR_TOK_EMBD];
        const struct piso_st_tensor *src = piso_lazy_source(m, t, -1, &fi);
        if (!src) continue;
        for (int64_t r = 0; r < V && !rc; r += chunk) {
            int64_t n = V - r < chunk ? V - r : chunk;
            rc = piso_model_rows(m, out, r, n, buf);
            int64_t bad = rc ? -1 : piso_find_nonfinite(buf, (size_t)(n * D));
            if (bad >= 0) rc = piso_errorf("%s: %s has a non-finite value at index %lld", m->path, t->label, (long long)(r * D + bad));
        }
        piso_lazy_drop_pages(src->data, src->nbytes);
    }
    free(buf);
    return rc;
}
