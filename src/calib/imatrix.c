/* llama.cpp-compatible importance matrices: computed from piso's forward pass (the taps on the
 * inputs of every linear layer), read and written in the GGUF and legacy .dat formats. */
#include "piso/imatrix.h"
#include "piso/linalg.h"
#include "piso/gguf.h"
#include "piso/gguf_write.h"
#include "piso/model.h"
#include "piso/schema.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void piso_imatrix_free(struct piso_imatrix *im) {
    if (!im) return;
    for (int i = 0; i < im->n; i++) free(im->e[i].name), free(im->e[i].sum2);
    free(im->e), free(im->dataset), free(im);
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const struct piso_imatrix_entry *)a)->name, ((const struct piso_imatrix_entry *)b)->name);
}

static struct piso_imatrix_entry *add_entry(struct piso_imatrix *im, const char *name, int64_t n) {
    struct piso_imatrix_entry *ne = realloc(im->e, sizeof *ne * (size_t)(im->n + 1));
    if (!ne) return NULL;
    im->e = ne;
    struct piso_imatrix_entry *e = &im->e[im->n];
    e->name = strdup(name);
    e->sum2 = calloc((size_t)(n > 0 ? n : 1), sizeof(double));
    e->n = n, e->count = 0;
    if (!e->name || !e->sum2) {
        free(e->name), free(e->sum2);
        return NULL;
    }
    im->n++;
    return e;
}

const struct piso_imatrix_entry *piso_imatrix_find(const struct piso_imatrix *im, const char *name) {
    if (!im || im->n <= 0) return NULL;
    struct piso_imatrix_entry key = {.name = (char *)name};
    return bsearch(&key, im->e, (size_t)im->n, sizeof key, cmp_entry);
}

int piso_imatrix_get(const struct piso_imatrix *im, const char *name, int64_t n, float *out) {
    const struct piso_imatrix_entry *e = piso_imatrix_find(im, name);
    if (!e) return 1;
    if (e->n != n)
        return piso_errorf("imatrix entry '%s' has %lld values, the weight has %lld input columns", name,
                           (long long)e->n, (long long)n);
    for (int64_t j = 0; j < n; j++) out[j] = e->count > 0 ? (float)(e->sum2[j] / (double)e->count) : 1.0f;
    return 0;
}

/* ---- computing ------------------------------------------------------------------------------- */

/* sum2[j] += Σ_t a[t, j]² for a [n, d]; columns in parallel, each summed in token order. */
/* llama.cpp's chunking (imatrix and perplexity): n_chunk windows of n_ctx tokens, each window's
 * first token replaced by BOS, every token counted. Runs the model over each window and hands the
 * inputs of every block's linear layers to visit(). */
typedef int (*taps_visitor)(void *ctx, int layer, const struct piso_block_taps *taps, int n);

static int run_chunks(const struct piso_model *m, const int *tokens, int n_chunk, int n_ctx, int bos_id,
                      const char *stage, taps_visitor visit, void *ctx) {
    const struct piso_config *c = &m->cfg;
    const size_t D = (size_t)c->dim, F = (size_t)c->hidden_dim, Hq = (size_t)c->n_heads * (size_t)c->head_dim;
    const size_t n = (size_t)n_ctx;
    float *x = malloc(sizeof(float) * n * D);
    struct piso_block_taps taps = {malloc(sizeof(float) * n * D), malloc(sizeof(float) * n * Hq),
                                   malloc(sizeof(float) * n * D), malloc(sizeof(float) * n * F)};
    int *chunk = malloc(sizeof(int) * n);
    int rc = -1;
    if (!x || !taps.attn_in || !taps.o_in || !taps.ffn_in || !taps.down_in || !chunk) {
        piso_errorf("%s: out of memory for a chunk of %d tokens", stage, n_ctx);
        goto done;
    }
    struct piso_progress pr;
    piso_progress_begin(&pr, stage, "chunks", n_chunk);
    for (int ch = 0; ch < n_chunk; ch++) {
        memcpy(chunk, tokens + (size_t)ch * n, sizeof(int) * n);
        if (bos_id >= 0) chunk[0] = bos_id;
        piso_embed(m, chunk, n_ctx, x);
        for (int l = 0; l < c->n_layers; l++)
            if (piso_block_forward(m, l, x, n_ctx, &taps) || visit(ctx, l, &taps, n_ctx)) goto done;
        piso_progress_update(&pr, ch + 1);
    }
    rc = 0;
done:
    free(x), free(taps.attn_in), free(taps.o_in), free(taps.ffn_in), free(taps.down_in), free(chunk);
    return rc;
}

static void accumulate(struct piso_imatrix_entry *e, const float *a, int n, int64_t d) {
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < d; j++) {
        double s = 0;
        for (int t = 0; t < n; t++) s += (double)a[(size_t)t * d + j] * a[(size_t)t * d + j];
        e->sum2[j] += s;
    }
    e->count += n;
}

/* Sums x_j² per input column of every weight (entries of layer l sit at l*PISO_LIN_COUNT + k, k
 * the enum piso_linear; each reads its input from the taps). */
static int imatrix_visit(void *ctx, int l, const struct piso_block_taps *taps, int n) {
    struct piso_imatrix *im = ctx;
    struct piso_imatrix_entry *e = &im->e[l * PISO_LIN_COUNT];
    struct piso_block_taps t = *taps;
    for (int k = 0; k < PISO_LIN_COUNT; k++)
        accumulate(&e[k], *piso_block_tap(&t, piso_schema_linear((enum piso_linear)k)->input), n, e[k].n);
    return 0;
}

/* Whole chunks of n_ctx tokens in the text, at most max_chunks (> 0); < 1 after setting the error. */
static int chunk_count(int n_tokens, int n_ctx, int max_chunks, const char *what) {
    int n_chunk = n_ctx > 0 ? n_tokens / n_ctx : 0;
    if (max_chunks > 0 && n_chunk > max_chunks) n_chunk = max_chunks;
    if (n_chunk < 1)
        piso_errorf("%s: %d tokens are fewer than one chunk of %d (use a longer text or a smaller --ctx)", what,
                    n_tokens, n_ctx);
    return n_chunk;
}

int piso_imatrix_compute(const struct piso_model *m, const int *tokens, int n_tokens, int n_ctx, int max_chunks,
                         int bos_id, const char *dataset, struct piso_imatrix **out) {
    const struct piso_config *c = &m->cfg;
    if (n_ctx < 16) return piso_errorf("imatrix: context %d is too short (llama.cpp needs >= 16 tokens)", n_ctx);
    int n_chunk = chunk_count(n_tokens, n_ctx, max_chunks, "imatrix");
    if (n_chunk < 1) return -1;
    struct piso_imatrix *im = calloc(1, sizeof *im);
    if (!im) return piso_errorf("imatrix: out of memory");
    int rc = -1;
    for (int l = 0; l < c->n_layers; l++)
        for (int k = 0; k < PISO_LIN_COUNT; k++) {
            const struct piso_tensor_info *t = piso_schema_linear((enum piso_linear)k);
            char nm[64];
            piso_schema_name(t, PISO_NAME_GGUF, l, nm, sizeof nm);
            if (!add_entry(im, nm, piso_schema_dim(c, t->cols))) {
                piso_errorf("imatrix: out of memory");
                goto fail;
            }
        }
    /* entries are added in (layer, kind) order: index l*PISO_LIN_COUNT + k until sorted at the end */
    if (run_chunks(m, tokens, n_chunk, n_ctx, bos_id, "imatrix", imatrix_visit, im) != 0) goto fail;
    qsort(im->e, (size_t)im->n, sizeof *im->e, cmp_entry);
    im->chunk_count = n_chunk;
    im->chunk_size = n_ctx;
    im->dataset = dataset ? strdup(dataset) : NULL;
    rc = 0;
fail:
    if (rc) piso_imatrix_free(im);
    else *out = im;
    return rc;
}

/* ---- GGUF format ----------------------------------------------------------------------------- */

int piso_imatrix_save_gguf(const struct piso_imatrix *im, const char *path) {
    struct piso_gguf_writer *w = piso_gguf_writer_new();
    if (!w) return piso_errorf("%s: out of memory", path);
    const char *ds[1] = {im->dataset ? im->dataset : ""};
    int rc = piso_gguf_set_str(w, "general.type", "imatrix") || piso_gguf_set_arr_str(w, "imatrix.datasets", ds, im->dataset ? 1 : 0) ||
             piso_gguf_set_u32(w, "imatrix.chunk_count", (uint32_t)im->chunk_count) ||
             piso_gguf_set_u32(w, "imatrix.chunk_size", (uint32_t)im->chunk_size);
    for (int i = 0; i < im->n && !rc; i++) {
        const struct piso_imatrix_entry *e = &im->e[i];
        char nm[96];
        float *s = malloc(sizeof(float) * (size_t)e->n), *cnt = malloc(sizeof(float));
        if (!s || !cnt) {
            free(s), free(cnt);
            rc = piso_errorf("%s: out of memory", path);
            break;
        }
        for (int64_t j = 0; j < e->n; j++) s[j] = (float)e->sum2[j];
        cnt[0] = (float)e->count;
        int64_t ne_s[2] = {e->n, 1}, ne_c[2] = {1, 1};
        snprintf(nm, sizeof nm, "%s.in_sum2", e->name);
        rc = piso_gguf_add_tensor(w, nm, 2, ne_s, GGML_T_F32, s, sizeof(float) * (size_t)e->n, 1);
        snprintf(nm, sizeof nm, "%s.counts", e->name);
        if (!rc) rc = piso_gguf_add_tensor(w, nm, 2, ne_c, GGML_T_F32, cnt, sizeof(float), 1);
        else free(cnt);
    }
    if (!rc) rc = piso_gguf_writer_write(w, path);
    piso_gguf_writer_free(w);
    return rc;
}

static int piso_load_gguf(const char *path, struct piso_imatrix *im) {
    struct piso_gguf g;
    if (piso_gguf_open(&g, path)) return -1;
    int rc = -1;
    uint32_t u;
    if (piso_gguf_get_u32(&g, "imatrix.chunk_count", &u) == 0) im->chunk_count = (int)u;
    if (piso_gguf_get_u32(&g, "imatrix.chunk_size", &u) == 0) im->chunk_size = (int)u;
    const struct piso_gguf_kv *ds = piso_gguf_find(&g, "imatrix.datasets");
    if (ds && ds->type == GGUF_VT_ARRAY && ds->arr_type == GGUF_VT_STRING && ds->arr_n > 0) im->dataset = piso_gguf_arr_str(ds, 0);
    for (int64_t i = 0; i < g.n_tensors; i++) {
        const struct piso_gguf_tensor *t = &g.tensors[i];
        size_t len = strlen(t->name);
        if (len < 8 || strcmp(t->name + len - 8, ".in_sum2")) continue;
        char base[256], cname[272]; /* as the .dat reader: names of up to 255 bytes */
        if (len == 8 || len - 8 >= sizeof base) {
            piso_errorf("%s: imatrix tensor '%s' does not name a weight (the name before .in_sum2 must have 1..%zu "
                        "characters)", path, t->name, sizeof base - 1);
            goto done;
        }
        snprintf(base, sizeof base, "%.*s", (int)(len - 8), t->name);
        snprintf(cname, sizeof cname, "%s.counts", base);
        const struct piso_gguf_tensor *c = piso_gguf_find_tensor(&g, cname);
        if (!c) {
            piso_errorf("%s: imatrix tensor '%s' has no '%s'", path, t->name, cname);
            goto done;
        }
        if (t->type != GGML_T_F32 || c->type != GGML_T_F32) {
            piso_errorf("%s: imatrix tensors of '%s' must be F32", path, base);
            goto done;
        }
        if (t->ne[2] * t->ne[3] != 1 || t->ne[1] != 1 || c->ne[0] * c->ne[1] * c->ne[2] * c->ne[3] != 1) {
            piso_errorf("%s: imatrix entry '%s' has %lld matrices (experts): only dense models are supported", path,
                        base, (long long)t->ne[1]);
            goto done;
        }
        struct piso_imatrix_entry *e = add_entry(im, base, t->ne[0]);
        if (!e) {
            piso_errorf("%s: out of memory", path);
            goto done;
        }
        float cnt;
        memcpy(&cnt, c->data, 4);
        for (int64_t j = 0; j < t->ne[0]; j++) {
            float v;
            memcpy(&v, (const uint8_t *)t->data + 4 * j, 4);
            if (!isfinite(v) || v < 0) {
                piso_errorf("%s: imatrix entry '%s' value %lld is %g", path, base, (long long)j, v);
                goto done;
            }
            e->sum2[j] = v;
        }
        if (!isfinite(cnt) || cnt < 0 || cnt > 9.0e15f) { /* a token count: below 2^53, and an int64 */
            piso_errorf("%s: imatrix entry '%s' has count %g", path, base, cnt);
            goto done;
        }
        e->count = (int64_t)cnt;
    }
    rc = 0;
done:
    piso_gguf_close(&g);
    return rc;
}

/* ---- legacy .dat ----------------------------------------------------------------------------- */

int piso_imatrix_save_dat(const struct piso_imatrix *im, const char *path) {
    struct piso_outfile o;
    if (piso_outfile_open(&o, path)) return -1;
    int rc = 0;
    int32_t n = im->n;
    rc |= piso_outfile_write(&o, &n, 4);
    for (int i = 0; i < im->n && !rc; i++) {
        const struct piso_imatrix_entry *e = &im->e[i];
        /* ncall: the number of chunks the entry saw; values are mean·ncall, as llama.cpp writes */
        int64_t cs = im->chunk_size > 0 ? im->chunk_size : 1;
        int64_t calls = e->count <= 0 ? 1 : e->count / cs + (e->count % cs != 0); /* count 0: the neutral 1.0 */
        size_t name_len = strlen(e->name);
        if (calls > INT32_MAX || e->n > INT32_MAX || name_len > INT32_MAX) {
            rc = piso_errorf("%s: imatrix entry '%s' (%lld values, %lld chunks) does not fit the legacy .dat "
                             "format's 32-bit fields; save it as GGUF",
                             path, e->name, (long long)e->n, (long long)calls);
            break;
        }
        int32_t len = (int32_t)name_len, ncall = (int32_t)calls, nval = (int32_t)e->n;
        rc |= piso_outfile_write(&o, &len, 4) | piso_outfile_write(&o, e->name, (size_t)len) |
              piso_outfile_write(&o, &ncall, 4) | piso_outfile_write(&o, &nval, 4);
        for (int64_t j = 0; j < e->n && !rc; j++) {
            float v = e->count > 0 ? (float)(e->sum2[j] / (double)e->count * ncall) : 1.0f;
            rc |= piso_outfile_write(&o, &v, 4);
        }
    }
    int32_t last = im->chunk_count, dl = im->dataset ? (int32_t)strlen(im->dataset) : 0;
    if (!rc) rc |= piso_outfile_write(&o, &last, 4) | piso_outfile_write(&o, &dl, 4);
    if (!rc && dl) rc |= piso_outfile_write(&o, im->dataset, (size_t)dl);
    if (rc) {
        piso_outfile_abort(&o);
        return -1;
    }
    return piso_outfile_commit(&o);
}

static int load_dat(const char *path, const struct piso_mmap *f, struct piso_imatrix *im) {
    const uint8_t *p = f->data, *end = f->data + f->size;
#define TAKE(dst, nbytes, what)                                                                      \
    do {                                                                                             \
        if ((size_t)(end - p) < (size_t)(nbytes))                                                    \
            return piso_errorf("%s: legacy imatrix truncated reading %s", path, what);               \
        memcpy(dst, p, nbytes);                                                                      \
        p += (nbytes);                                                                               \
    } while (0)
    int32_t n;
    TAKE(&n, 4, "the entry count");
    if (n < 0 || n > 1000000) return piso_errorf("%s: not an imatrix (entry count %d)", path, n);
    for (int i = 0; i < n; i++) {
        int32_t len, ncall, nval;
        char name[256];
        TAKE(&len, 4, "a name length");
        if (len <= 0 || len >= (int32_t)sizeof name) return piso_errorf("%s: entry %d: bad name length %d", path, i, len);
        TAKE(name, (size_t)len, "a name");
        name[len] = 0;
        if (strlen(name) != (size_t)len) return piso_errorf("%s: entry %d: the name contains a NUL byte", path, i);
        TAKE(&ncall, 4, name);
        TAKE(&nval, 4, name);
        if (nval <= 0 || (size_t)(end - p) / 4 < (size_t)nval)
            return piso_errorf("%s: entry '%s': %d values run past the end of the file", path, name, nval);
        struct piso_imatrix_entry *e = add_entry(im, name, nval);
        if (!e) return piso_errorf("%s: out of memory", path);
        for (int j = 0; j < nval; j++) {
            float v;
            TAKE(&v, 4, name);
            if (!isfinite(v) || v < 0) return piso_errorf("%s: entry '%s' value %d is %g", path, name, j, v);
            e->sum2[j] = v;
        }
        /* stored values are mean·ncall: keep sum = value and count = ncall, so sum/count = mean */
        e->count = ncall > 0 ? ncall : 1;
    }
    int32_t last, dl;
    if ((size_t)(end - p) >= 8) {
        TAKE(&last, 4, "the chunk count");
        TAKE(&dl, 4, "the dataset name length");
        im->chunk_count = last;
        if (dl > 0 && (size_t)(end - p) >= (size_t)dl) im->dataset = strndup((const char *)p, (size_t)dl);
    }
#undef TAKE
    return 0;
}

int piso_imatrix_load(const char *path, struct piso_imatrix **out) {
    struct piso_imatrix *im = calloc(1, sizeof *im);
    if (!im) return piso_errorf("%s: out of memory", path);
    struct piso_mmap f;
    if (piso_mmap_open(&f, path)) {
        free(im);
        return -1;
    }
    int is_gguf = f.size >= 4 && !memcmp(f.data, "GGUF", 4);
    int rc = is_gguf ? piso_load_gguf(path, im) : load_dat(path, &f, im);
    piso_mmap_close(&f);
    if (rc) {
        piso_imatrix_free(im);
        return -1;
    }
    if (im->n == 0) {
        piso_errorf("%s: imatrix has no entries (%s)", path,
                    is_gguf ? "a GGUF without <name>.in_sum2 tensors: a model, not an imatrix?" : "entry count 0");
        piso_imatrix_free(im);
        return -1;
    }
    qsort(im->e, (size_t)im->n, sizeof *im->e, cmp_entry);
    for (int i = 1; i < im->n; i++)
        if (!strcmp(im->e[i].name, im->e[i - 1].name)) {
            piso_errorf("%s: duplicate imatrix entry '%s'", path, im->e[i].name);
            piso_imatrix_free(im);
            return -1;
        }
    *out = im;
    return 0;
}

/* ---- dense calibration Hessians -------------------------------------------------------------- */

void piso_calib_hessians_free(struct piso_calib_hessians *hs) {
    if (!hs) return;
    for (int i = 0; hs->h && i < 4 * hs->n_layers; i++) free(hs->h[i]);
    free(hs->h), free(hs);
}

/* Accumulates XᵀX (fp64, per window by piso_la_gram_add) of the four distinct linear inputs of
 * each block. */
struct hessian_acc {
    double **acc; /* [n_layers * 4] */
    int64_t dims[4];
    float *scratch; /* [max dim, max dim] */
};

static int hessian_visit(void *ctx, int l, const struct piso_block_taps *taps, int n) {
    struct hessian_acc *h = ctx;
    const float *in[4] = {taps->attn_in, taps->o_in, taps->ffn_in, taps->down_in};
    for (int k = 0; k < 4; k++) piso_la_gram_add(h->acc[4 * l + k], in[k], in[k], n, h->dims[k], h->dims[k], h->scratch);
    return 0;
}

int piso_calib_hessians_compute(const struct piso_model *m, const int *tokens, int n_tokens, int n_ctx,
                                int max_chunks, int bos_id, struct piso_calib_hessians **out) {
    const struct piso_config *c = &m->cfg;
    int n_chunk = chunk_count(n_tokens, n_ctx, max_chunks, "calibration");
    if (n_chunk < 1) return -1;
    struct piso_calib_hessians *hs = calloc(1, sizeof *hs);
    const int64_t D = c->dim, F = c->hidden_dim, Hq = (int64_t)c->n_heads * c->head_dim;
    const int64_t dims[4] = {D, Hq, D, F};
    int rc = -1;
    float *scratch = NULL; /* one window's XᵀX */
    double **acc = calloc((size_t)c->n_layers * 4, sizeof(double *));
    if (!hs || !acc) goto oom;
    hs->n_layers = c->n_layers, hs->D = D, hs->Hq = Hq, hs->F = F;
    if (!(hs->h = calloc((size_t)c->n_layers * 4, sizeof(float *)))) goto oom;
    for (int i = 0; i < 4 * c->n_layers; i++)
        if (!(acc[i] = calloc((size_t)(dims[i % 4] * dims[i % 4]), sizeof(double)))) goto oom;
    int64_t dmax = D > Hq ? D : Hq;
    dmax = dmax > F ? dmax : F;
    if (!(scratch = malloc(sizeof(float) * (size_t)(dmax * dmax)))) goto oom;
    struct hessian_acc ha = {acc, {D, Hq, D, F}, scratch};
    if (run_chunks(m, tokens, n_chunk, n_ctx, bos_id, "calibration", hessian_visit, &ha) != 0) goto done;
    hs->n_tokens = (int64_t)n_chunk * n_ctx;
    for (int i = 0; i < 4 * c->n_layers; i++) {
        const int64_t d = dims[i % 4];
        if (!(hs->h[i] = malloc(sizeof(float) * (size_t)(d * d)))) goto oom;
        for (int64_t r = 0; r < d; r++)
            for (int64_t q = r; q < d; q++)
                hs->h[i][r * d + q] = hs->h[i][q * d + r] = (float)(acc[i][r * d + q] / (double)hs->n_tokens);
    }
    rc = 0;
    goto done;
oom:
    piso_errorf("calibration: out of memory");
done:
    for (int i = 0; acc && i < 4 * c->n_layers; i++) free(acc[i]);
    free(acc), free(scratch);
    if (rc) piso_calib_hessians_free(hs);
    else *out = hs;
    return rc;
}

const float *piso_calib_hessian_for(const struct piso_calib_hessians *hs, const char *name, int64_t n) {
    int l, off = 0;
    if (!hs || sscanf(name, "blk.%d.%n", &l, &off) != 1 || off == 0 || l < 0 || l >= hs->n_layers) return NULL;
    const char *kind = name + off;
    int k = -1; /* the block input (enum piso_block_input) of the linear layer named */
    for (int j = 0; j < PISO_LIN_COUNT && k < 0; j++)
        if (!strcmp(kind, piso_schema_linear((enum piso_linear)j)->gguf)) k = piso_schema_linear((enum piso_linear)j)->input;
    const int64_t dims[4] = {hs->D, hs->Hq, hs->D, hs->F};
    if (k < 0 || dims[k] != n) return NULL;
    return hs->h[4 * l + k];
}

/* ---- block at a time (streaming) ------------------------------------------------------------- */

/* The same chunks as piso_imatrix_compute / piso_calib_hessians_compute, run block by block: the
 * residual streams of every chunk are kept, so that block l needs only its own weights. Per entry
 * the sums are added chunk by chunk in chunk order, as the whole-model walk adds them, so the
 * results are bitwise the same. */
struct piso_calib_stream {
    int n_chunk, n_ctx, next_layer;
    float *x;                       /* [n_chunk, n_ctx, D] residual streams after next_layer - 1 */
    struct piso_block_taps taps;    /* one chunk */
    struct piso_imatrix *im;        /* every entry, filled up to next_layer - 1 */
    struct piso_calib_hessians *hs; /* NULL without Hessians; h of the last block run only */
    double *acc[4];                 /* that block's fp64 sums */
    float *scratch;
};

void piso_calib_stream_free(struct piso_calib_stream *s) {
    if (!s) return;
    free(s->x), free(s->taps.attn_in), free(s->taps.o_in), free(s->taps.ffn_in), free(s->taps.down_in);
    piso_imatrix_free(s->im);
    piso_calib_hessians_free(s->hs);
    for (int k = 0; k < 4; k++) free(s->acc[k]);
    free(s->scratch), free(s);
}

int piso_calib_stream_begin(const struct piso_model *m, const int *tokens, int n_tokens, int n_ctx, int max_chunks,
                            int bos_id, const char *dataset, int hessians, struct piso_calib_stream **out) {
    const struct piso_config *c = &m->cfg;
    *out = NULL;
    if (n_ctx < 16) return piso_errorf("imatrix: context %d is too short (llama.cpp needs >= 16 tokens)", n_ctx);
    const int n_chunk = chunk_count(n_tokens, n_ctx, max_chunks, "imatrix");
    if (n_chunk < 1) return -1;
    const size_t D = (size_t)c->dim, F = (size_t)c->hidden_dim, Hq = (size_t)c->n_heads * (size_t)c->head_dim;
    const size_t n = (size_t)n_ctx;
    struct piso_calib_stream *s = calloc(1, sizeof *s);
    int *chunk = malloc(sizeof(int) * n);
    if (!s || !chunk) goto oom;
    s->n_chunk = n_chunk, s->n_ctx = n_ctx;
    s->x = malloc(sizeof(float) * (size_t)n_chunk * n * D);
    s->taps = (struct piso_block_taps){malloc(sizeof(float) * n * D), malloc(sizeof(float) * n * Hq),
                                       malloc(sizeof(float) * n * D), malloc(sizeof(float) * n * F)};
    if (!s->x || !s->taps.attn_in || !s->taps.o_in || !s->taps.ffn_in || !s->taps.down_in) {
        piso_errorf("calibration: out of memory for the residual streams of %d chunks of %d tokens (%.0f MB)", n_chunk,
                    n_ctx, 4.0 * n_chunk * (double)n * (double)D / 1e6);
        goto fail;
    }
    if (!(s->im = calloc(1, sizeof *s->im))) goto oom;
    for (int l = 0; l < c->n_layers; l++)
        for (int k = 0; k < PISO_LIN_COUNT; k++) {
            const struct piso_tensor_info *t = piso_schema_linear((enum piso_linear)k);
            char nm[64];
            piso_schema_name(t, PISO_NAME_GGUF, l, nm, sizeof nm);
            if (!add_entry(s->im, nm, piso_schema_dim(c, t->cols))) goto oom;
        }
    qsort(s->im->e, (size_t)s->im->n, sizeof *s->im->e, cmp_entry);
    s->im->chunk_count = n_chunk, s->im->chunk_size = n_ctx;
    if (dataset && !(s->im->dataset = strdup(dataset))) goto oom;
    if (hessians) {
        if (!(s->hs = calloc(1, sizeof *s->hs))) goto oom;
        s->hs->n_layers = c->n_layers, s->hs->D = (int64_t)D, s->hs->Hq = (int64_t)Hq, s->hs->F = (int64_t)F;
        s->hs->n_tokens = (int64_t)n_chunk * n_ctx;
        if (!(s->hs->h = calloc((size_t)c->n_layers * 4, sizeof(float *)))) goto oom;
    }
    for (int ch = 0; ch < n_chunk; ch++) { /* llama.cpp's chunking, as run_chunks */
        memcpy(chunk, tokens + (size_t)ch * n, sizeof(int) * n);
        if (bos_id >= 0) chunk[0] = bos_id;
        piso_embed(m, chunk, n_ctx, s->x + (size_t)ch * n * D);
    }
    free(chunk);
    *out = s;
    return 0;
oom:
    piso_errorf("calibration: out of memory");
fail:
    free(chunk);
    piso_calib_stream_free(s);
    return -1;
}

int piso_calib_stream_chunks(const struct piso_calib_stream *s) { return s->n_chunk; }
const struct piso_imatrix *piso_calib_stream_imatrix(const struct piso_calib_stream *s) { return s->im; }
const struct piso_calib_hessians *piso_calib_stream_hessians(const struct piso_calib_stream *s) { return s->hs; }

int piso_calib_stream_block(struct piso_calib_stream *s, const struct piso_model *m, int l) {
    const struct piso_config *c = &m->cfg;
    if (l != s->next_layer || l >= c->n_layers)
        return piso_errorf("calibration: block %d run out of order (expected %d of %d)", l, s->next_layer, c->n_layers);
    const int64_t D = c->dim, dims[4] = {c->dim, (int64_t)c->n_heads * c->head_dim, c->dim, c->hidden_dim};
    struct piso_imatrix_entry *e[PISO_LIN_COUNT];
    for (int k = 0; k < PISO_LIN_COUNT; k++) {
        char nm[64];
        piso_schema_name(piso_schema_linear((enum piso_linear)k), PISO_NAME_GGUF, l, nm, sizeof nm);
        e[k] = (struct piso_imatrix_entry *)piso_imatrix_find(s->im, nm);
    }
    if (s->hs) {
        /* the fp64 sums and the scratch live only while the block runs: the block's quantization
         * (GPTQ on down_proj's H) comes after, and would otherwise hold them at its peak */
        int64_t dmax = 0;
        for (int k = 0; k < 4; k++) {
            dmax = dims[k] > dmax ? dims[k] : dmax;
            if (!(s->acc[k] = calloc((size_t)(dims[k] * dims[k]), sizeof(double))))
                return piso_errorf("calibration: out of memory for block %d's Hessians", l);
        }
        if (!(s->scratch = malloc(sizeof(float) * (size_t)(dmax * dmax))))
            return piso_errorf("calibration: out of memory for block %d's Hessians", l);
        for (int k = 0; l > 0 && k < 4; k++) { /* the block before is exported: one block's Hessians at a time */
            free(s->hs->h[4 * (l - 1) + k]);
            s->hs->h[4 * (l - 1) + k] = NULL;
        }
    }
    for (int ch = 0; ch < s->n_chunk; ch++) {
        struct piso_block_taps t = s->taps;
        if (piso_block_forward(m, l, s->x + (size_t)ch * (size_t)s->n_ctx * (size_t)D, s->n_ctx, &t)) return -1;
        for (int k = 0; k < PISO_LIN_COUNT; k++)
            accumulate(e[k], *piso_block_tap(&t, piso_schema_linear((enum piso_linear)k)->input), s->n_ctx, e[k]->n);
        if (s->hs) {
            const float *in[4] = {t.attn_in, t.o_in, t.ffn_in, t.down_in};
            for (int k = 0; k < 4; k++) piso_la_gram_add(s->acc[k], in[k], in[k], s->n_ctx, dims[k], dims[k], s->scratch);
        }
    }
    for (int k = 0; s->hs && k < 4; k++) {
        const int64_t d = dims[k];
        float *h = malloc(sizeof(float) * (size_t)(d * d));
        if (!h) return piso_errorf("calibration: out of memory");
        for (int64_t r = 0; r < d; r++)
            for (int64_t q = r; q < d; q++)
                h[r * d + q] = h[q * d + r] = (float)(s->acc[k][r * d + q] / (double)s->hs->n_tokens);
        s->hs->h[4 * l + k] = h;
        free(s->acc[k]), s->acc[k] = NULL;
    }
    free(s->scratch), s->scratch = NULL;
    s->next_layer = l + 1;
    return 0;
}
