/* safetensors: u64 LE header length N, N bytes of JSON {name: {dtype, shape, data_offsets}},
 * then the data. Every field is validated before use: the file may be hostile. */
#include "piso/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <sys/types.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#define ST_MAX_HEADER (100u << 20)

static int st_fail(struct piso_st_file *f, const char *path) {
    piso_error_context("%s", path);
    piso_st_close(f);
    return -1;
}

static int parse_tensor(struct piso_st_tensor *t, const cJSON *e, size_t data_size) {
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt)) return piso_errorf("tensor '%s': missing or non-string \"dtype\"", t->name);
    if (piso_dtype_from_name(dt->valuestring, &t->dtype) != 0)
        return piso_errorf("tensor '%s': unsupported dtype \"%s\"", t->name, dt->valuestring);
    if (!cJSON_IsArray(sh)) return piso_errorf("tensor '%s': missing \"shape\" array", t->name);
    int nd = cJSON_GetArraySize(sh);
    if (nd > PISO_ST_MAX_DIMS) return piso_errorf("tensor '%s': %d dims (max %d)", t->name, nd, PISO_ST_MAX_DIMS);
    t->ndim = nd;
    t->numel = 1;
    for (int i = 0; i < nd; i++) {
        const cJSON *d = cJSON_GetArrayItem(sh, i);
        if (!cJSON_IsNumber(d) || d->valuedouble < 0 || d->valuedouble > 9.0e15 ||
            d->valuedouble != (double)(int64_t)d->valuedouble)
            return piso_errorf("tensor '%s': bad shape entry %d", t->name, i);
        t->shape[i] = (int64_t)d->valuedouble;
        if (t->shape[i] && t->numel > INT64_MAX / 16 / t->shape[i])
            return piso_errorf("tensor '%s': shape overflows", t->name);
        t->numel *= t->shape[i];
    }
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2)
        return piso_errorf("tensor '%s': missing \"data_offsets\" [begin, end]", t->name);
    double b = cJSON_GetArrayItem(off, 0)->valuedouble, en = cJSON_GetArrayItem(off, 1)->valuedouble;
    if (!(b >= 0 && en >= b && en <= (double)data_size))
        return piso_errorf("tensor '%s': data_offsets [%.0f, %.0f] outside the %zu data bytes (truncated file?)",
                           t->name, b, en, data_size);
    t->nbytes = (size_t)en - (size_t)b;
    if ((uint64_t)t->numel * piso_dtype_size(t->dtype) != t->nbytes)
        return piso_errorf("tensor '%s': shape needs %lld bytes of %s but data_offsets span %zu", t->name,
                           (long long)(t->numel * (int64_t)piso_dtype_size(t->dtype)), dt->valuestring, t->nbytes);
    t->data = (const void *)(uintptr_t)b; /* offset for now; rebased by the caller */
    return 0;
}

static int cmp_str_ptr(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int cmp_by_offset(const void *a, const void *b) {
    const struct piso_st_tensor *x = *(struct piso_st_tensor *const *)a, *y = *(struct piso_st_tensor *const *)b;
    return ((const uint8_t *)x->data > (const uint8_t *)y->data) - ((const uint8_t *)x->data < (const uint8_t *)y->data);
}

/* A file describes itself consistently (as the reference loader demands): names and metadata keys
 * unique, and the tensors' byte ranges tile the data section exactly, without overlap or gap. */
static int check_layout(struct piso_st_file *f, size_t data_size) {
    int n = f->n_tensors, rc = 0;
    size_t cap = (size_t)(n > f->n_meta ? n : f->n_meta) + 1;
    char **names = malloc(sizeof(char *) * cap);
    struct piso_st_tensor **order = malloc(sizeof *order * cap);
    if (!names || !order) {
        free(names), free(order);
        return piso_errorf("out of memory checking %d tensors", n);
    }
    for (int i = 0; i < n; i++) names[i] = f->tensors[i].name;
    qsort(names, (size_t)n, sizeof *names, cmp_str_ptr);
    for (int i = 1; i < n && !rc; i++)
        if (!strcmp(names[i], names[i - 1])) rc = piso_errorf("tensor '%s' appears more than once", names[i]);
    for (int i = 0; i < f->n_meta; i++) names[i] = f->meta_keys[i];
    qsort(names, (size_t)f->n_meta, sizeof *names, cmp_str_ptr);
    for (int i = 1; i < f->n_meta && !rc; i++)
        if (!strcmp(names[i], names[i - 1])) rc = piso_errorf("__metadata__ key '%s' appears more than once", names[i]);
    if (!rc) {
        for (int i = 0; i < n; i++) order[i] = &f->tensors[i];
        qsort(order, (size_t)n, sizeof *order, cmp_by_offset);
        const uint8_t *base = f->map.data + (f->map.size - data_size), *at = base;
        for (int i = 0; i < n && !rc; i++) {
            const uint8_t *b = order[i]->data;
            if (b != at)
                rc = piso_errorf("tensor '%s' starts at data offset %zu, expected %zu (the end of %s): tensors %s",
                                 order[i]->name, (size_t)(b - base), (size_t)(at - base),
                                 i ? order[i - 1]->name : "the header", b < at ? "overlap" : "leave a gap");
            at = b + order[i]->nbytes;
        }
        if (!rc && (size_t)(at - base) != data_size)
            rc = piso_errorf("the tensors end at data offset %zu, but the file has %zu bytes of data after the "
                             "header (trailing bytes)", (size_t)(at - base), data_size);
    }
    free(names), free(order);
    return rc;
}

int piso_st_open(struct piso_st_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    if (piso_mmap_open(&f->map, path) != 0) return -1;
    if (f->map.size < 8) {
        piso_errorf("file is %zu bytes, too short for a safetensors header", f->map.size);
        return st_fail(f, path);
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | f->map.data[i];
    if (hlen > ST_MAX_HEADER || hlen > f->map.size - 8) {
        piso_errorf("header length %llu exceeds the file size %zu (truncated or not safetensors)",
                    (unsigned long long)hlen, f->map.size);
        return st_fail(f, path);
    }
    cJSON *root = cJSON_ParseWithLength((const char *)f->map.data + 8, (size_t)hlen);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        piso_errorf("header is not a JSON object");
        return st_fail(f, path);
    }
    const uint8_t *base = f->map.data + 8 + hlen;
    size_t data_size = f->map.size - 8 - (size_t)hlen;
    int n = cJSON_GetArraySize(root);
    f->tensors = calloc((size_t)n + 1, sizeof *f->tensors);
    if (!f->tensors) {
        cJSON_Delete(root);
        piso_errorf("out of memory for %d tensors", n);
        return st_fail(f, path);
    }
    for (const cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(e)) { /* an array's entries carry no keys */
                cJSON_Delete(root);
                piso_errorf("__metadata__ is not an object of string values");
                return st_fail(f, path);
            }
            for (const cJSON *m = e->child; m; m = m->next) {
                if (!cJSON_IsString(m)) continue;
                char **nk = realloc(f->meta_keys, sizeof(char *) * (size_t)(f->n_meta + 1));
                if (nk) f->meta_keys = nk;
                char **nv = nk ? realloc(f->meta_values, sizeof(char *) * (size_t)(f->n_meta + 1)) : NULL;
                if (nv) f->meta_values = nv;
                char *k = nv ? strdup(m->string) : NULL, *v = k ? strdup(m->valuestring) : NULL;
                if (!v) {
                    free(k);
                    cJSON_Delete(root);
                    piso_errorf("out of memory for the metadata");
                    return st_fail(f, path);
                }
                f->meta_keys[f->n_meta] = k;
                f->meta_values[f->n_meta] = v;
                f->n_meta++;
            }
            continue;
        }
        struct piso_st_tensor *t = &f->tensors[f->n_tensors++];
        t->name = strdup(e->string);
        if (!t->name) {
            cJSON_Delete(root);
            piso_errorf("out of memory for the tensor names");
            return st_fail(f, path);
        }
        if (!cJSON_IsObject(e) || parse_tensor(t, e, data_size) != 0) {
            if (!cJSON_IsObject(e)) piso_errorf("tensor '%s': entry is not an object", t->name);
            cJSON_Delete(root);
            return st_fail(f, path);
        }
        t->data = base + (uintptr_t)t->data;
    }
    cJSON_Delete(root);
    if (check_layout(f, data_size) != 0) return st_fail(f, path);
    return 0;
}

void piso_st_close(struct piso_st_file *f) {
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->meta_keys);
    free(f->meta_values);
    piso_mmap_close(&f->map);
    memset(f, 0, sizeof *f);
}

const struct piso_st_tensor *piso_st_find(const struct piso_st_file *f, const char *name) {
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *piso_st_meta(const struct piso_st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
    return NULL;
}

int piso_st_read_f32(const struct piso_st_file *f, const struct piso_st_tensor *t, float *dst, size_t n) {
    if ((size_t)t->numel != n)
        return piso_errorf("%s: tensor '%s' has %lld elements, expected %zu", f->map.path, t->name,
                           (long long)t->numel, n);
    if (piso_convert_to_f32(t->dtype, t->data, dst, n) != 0)
        return piso_error_context("%s: tensor '%s'", f->map.path, t->name);
    return 0;
}

float *piso_st_load_f32(const struct piso_st_file *f, const char *name, int expect_ndim, int64_t *shape_out) {
    const struct piso_st_tensor *t = piso_st_find(f, name);
    if (!t) {
        piso_errorf("%s: no tensor named '%s'", f->map.path, name);
        return NULL;
    }
    if (expect_ndim > 0 && t->ndim != expect_ndim) {
        piso_errorf("%s: tensor '%s' has %d dims, expected %d", f->map.path, name, t->ndim, expect_ndim);
        return NULL;
    }
    float *x = malloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
    if (!x) {
        piso_errorf("%s: tensor '%s': out of memory for %lld values", f->map.path, name, (long long)t->numel);
        return NULL;
    }
    if (piso_st_read_f32(f, t, x, (size_t)t->numel) != 0) {
        free(x);
        return NULL;
    }
    int64_t bad = piso_find_nonfinite(x, (size_t)t->numel);
    if (bad >= 0) {
        piso_errorf("%s: tensor '%s' has a non-finite value (%g) at flat index %lld", f->map.path, name,
                    (double)x[bad], (long long)bad);
        free(x);
        return NULL;
    }
    if (shape_out)
        for (int i = 0; i < t->ndim; i++) shape_out[i] = t->shape[i];
    return x;
}

/* ---- writer ------------------------------------------------------------------------------- */
struct st_wtensor {
    char *name;
    enum piso_dtype dtype;
    int ndim;
    int64_t shape[PISO_ST_MAX_DIMS];
    const void *data;
    void *owned;
    int64_t spill_off; /* >= 0: the bytes are in the spill file at this offset (data NULL) */
};

struct piso_st_writer {
    int n, cap;
    int oom; /* an add failed for lack of memory (or the spill file failed): write() refuses */
    struct st_wtensor *t;
    cJSON *meta;
    FILE *spill;      /* spill mode (piso_st_writer_spill): tensor bytes appended here */
    char *spill_path;
    int64_t spill_size;
};

struct piso_st_writer *piso_st_writer_new(void) { return calloc(1, sizeof(struct piso_st_writer)); }

void piso_st_writer_add(struct piso_st_writer *w, const char *name, enum piso_dtype dtype, int ndim,
                        const int64_t *shape, const void *data) {
    if (!w || w->oom) {
        if (w) w->oom = 1;
        return;
    }
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 16;
        struct st_wtensor *nt = realloc(w->t, sizeof *w->t * (size_t)cap);
        if (!nt) {
            w->oom = 1;
            return;
        }
        w->t = nt, w->cap = cap;
    }
    struct st_wtensor *t = &w->t[w->n++];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name) {
        w->n--;
        w->oom = 1;
        return;
    }
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->data = data;
    t->spill_off = -1;
}

static size_t wt_bytes(const struct st_wtensor *t) {
    size_t n = piso_dtype_size(t->dtype);
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    return n;
}

void piso_st_writer_add_copy(struct piso_st_writer *w, const char *name, enum piso_dtype dtype, int ndim,
                             const int64_t *shape, const void *data) {
    piso_st_writer_add(w, name, dtype, ndim, shape, NULL);
    if (!w || w->oom) return;
    struct st_wtensor *t = &w->t[w->n - 1];
    size_t nb = wt_bytes(t);
    if (w->spill) {
        if (fwrite(data, 1, nb, w->spill) != nb) w->oom = 1;
        t->spill_off = w->spill_size, w->spill_size += (int64_t)nb;
        return;
    }
    t->owned = malloc(nb ? nb : 1);
    if (!t->owned) {
        w->oom = 1;
        return;
    }
    memcpy(t->owned, data, nb);
    t->data = t->owned;
}

int piso_st_writer_spill(struct piso_st_writer *w, const char *spill_path) {
    if (!w) return piso_errorf("%s: out of memory", spill_path);
    w->spill_path = strdup(spill_path);
    w->spill = w->spill_path ? fopen(spill_path, "w+b") : NULL;
    if (!w->spill) return piso_errorf("cannot create %s: %s", spill_path, strerror(errno));
    return 0;
}

int piso_st_writer_add_begin(struct piso_st_writer *w, const char *name, enum piso_dtype dtype, int ndim,
                             const int64_t *shape) {
    if (!w || !w->spill) return piso_errorf("%s: piso_st_writer_add_begin needs spill mode", name);
    piso_st_writer_add(w, name, dtype, ndim, shape, NULL);
    if (w->oom) return piso_errorf("%s: out of memory", name);
    w->t[w->n - 1].spill_off = w->spill_size;
    return 0;
}

int piso_st_writer_append(struct piso_st_writer *w, const void *data, size_t n) {
    if (fwrite(data, 1, n, w->spill) != n) {
        w->oom = 1;
        return piso_errorf("cannot write %s: %s", w->spill_path, strerror(errno));
    }
    w->spill_size += (int64_t)n;
    return 0;
}

/* Copies n spilled bytes at off into the output through a bounded buffer. */
static int copy_spilled(struct piso_st_writer *w, int64_t off, size_t n, struct piso_outfile *o, char *buf, size_t cap) {
    if (fseeko(w->spill, (off_t)off, SEEK_SET) != 0) return piso_errorf("%s: cannot seek: %s", w->spill_path, strerror(errno));
    while (n > 0) {
        size_t k = n < cap ? n : cap;
        if (fread(buf, 1, k, w->spill) != k) return piso_errorf("%s: cannot read back", w->spill_path);
        if (piso_outfile_write(o, buf, k)) return -1;
        n -= k;
    }
    return 0;
}

void piso_st_writer_meta(struct piso_st_writer *w, const char *key, const char *value) {
    if (!w) return; /* piso_st_writer_new ran out of memory: write() reports it */
    if (!w->meta) w->meta = cJSON_CreateObject();
    cJSON_AddStringToObject(w->meta, key, value);
}

int piso_st_writer_write(struct piso_st_writer *w, const char *path) {
    if (!w || w->oom) return piso_errorf("%s: out of memory collecting the tensors", path);
    cJSON *root = cJSON_CreateObject();
    if (w->meta) cJSON_AddItemReferenceToObject(root, "__metadata__", w->meta);
    size_t off = 0;
    for (int i = 0; i < w->n; i++) {
        struct st_wtensor *t = &w->t[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "dtype", piso_dtype_name(t->dtype));
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < t->ndim; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->shape[d]));
        cJSON *of = cJSON_AddArrayToObject(e, "data_offsets");
        size_t nb = wt_bytes(t);
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)(off + nb)));
        off += nb;
        cJSON_AddItemToObject(root, t->name, e);
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    size_t jl = strlen(json), padded = (jl + 7) & ~(size_t)7; /* 8-byte aligned data start */
    uint8_t hdr[8];
    for (int i = 0; i < 8; i++) hdr[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    struct piso_outfile o;
    if (piso_outfile_open(&o, path) != 0) {
        free(json);
        return -1;
    }
    int rc = piso_outfile_write(&o, hdr, 8);
    if (!rc) rc = piso_outfile_write(&o, json, jl);
    if (!rc) rc = piso_outfile_write(&o, "        ", padded - jl);
    const size_t cap = (size_t)8 << 20;
    char *buf = w->spill ? malloc(cap) : NULL;
    if (w->spill && (!buf || fflush(w->spill) != 0)) rc = piso_errorf("%s: cannot read back the spilled tensors", path);
    for (int i = 0; i < w->n && !rc; i++) {
        const struct st_wtensor *t = &w->t[i];
        rc = t->spill_off >= 0 ? copy_spilled(w, t->spill_off, wt_bytes(t), &o, buf, cap)
                               : piso_outfile_write(&o, t->data, wt_bytes(t));
    }
    free(buf);
    free(json);
    if (rc) {
        piso_outfile_abort(&o);
        return -1;
    }
    return piso_outfile_commit(&o);
}

void piso_st_writer_free(struct piso_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) {
        free(w->t[i].name);
        free(w->t[i].owned);
    }
    free(w->t);
    cJSON_Delete(w->meta);
    if (w->spill) fclose(w->spill), unlink(w->spill_path);
    free(w->spill_path);
    free(w);
}
