/* GGUF v3 writer: metadata is serialized as it is set; tensors are kept as (info, data) and written
 * with contiguous offsets padded to the alignment (32), in tensor-info order, as gguf.cpp checks. */
#include "piso/gguf_write.h"
#include "piso/gguf.h"

#include <stdlib.h>
#include <string.h>

#define GGUF_ALIGNMENT 32
#define GGUF_MAX_NAME 64

struct wtensor {
    char *name;
    int n_dims, type, owned;
    int64_t ne[4];
    void *data;
    size_t nbytes;
};

struct piso_gguf_writer {
    struct piso_buf kv; /* the metadata key/value section */
    char **keys;
    int64_t n_kv;
    struct wtensor *t;
    int64_t n_t, cap_t;
    int failed; /* allocation failure: reported at write */
};

struct piso_gguf_writer *piso_gguf_writer_new(void) { return calloc(1, sizeof(struct piso_gguf_writer)); }

void piso_gguf_writer_free(struct piso_gguf_writer *w) {
    if (!w) return;
    for (int64_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
    for (int64_t i = 0; i < w->n_t; i++) {
        free(w->t[i].name);
        if (w->t[i].owned) free(w->t[i].data);
    }
    piso_buf_free(&w->kv);
    free(w->keys), free(w->t), free(w);
}

/* Little-endian scalars (the hosts we build on are little-endian; memcpy keeps it portable to them). */
static void put_u32(struct piso_buf *b, uint32_t v) { piso_buf_put(b, &v, 4); }
static void put_u64(struct piso_buf *b, uint64_t v) { piso_buf_put(b, &v, 8); }
static void put_str(struct piso_buf *b, const char *s) {
    uint64_t n = strlen(s);
    put_u64(b, n);
    piso_buf_put(b, s, n);
}

static int new_key(struct piso_gguf_writer *w, const char *key, enum piso_gguf_vtype t) {
    if (!key || !*key) return piso_errorf("gguf writer: empty key");
    for (int64_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->keys[i], key)) return piso_errorf("gguf writer: duplicate key '%s'", key);
    char **nk = realloc(w->keys, sizeof(char *) * (size_t)(w->n_kv + 1));
    if (!nk) return piso_errorf("gguf writer: out of memory");
    w->keys = nk;
    if (!(w->keys[w->n_kv] = strdup(key))) return piso_errorf("gguf writer: out of memory");
    w->n_kv++;
    put_str(&w->kv, key);
    put_u32(&w->kv, (uint32_t)t);
    return 0;
}

/* A key with one fixed-size value of type t (bytes already little-endian). */
static int set_scalar(struct piso_gguf_writer *w, const char *key, enum piso_gguf_vtype t, const void *v, size_t n) {
    if (new_key(w, key, t)) return -1;
    piso_buf_put(&w->kv, v, n);
    return 0;
}
/* A key holding an array of n fixed-size elements of type et. */
static int set_array(struct piso_gguf_writer *w, const char *key, enum piso_gguf_vtype et, const void *v, uint64_t n,
                     size_t elem_size) {
    if (new_key(w, key, GGUF_VT_ARRAY)) return -1;
    put_u32(&w->kv, et);
    put_u64(&w->kv, n);
    piso_buf_put(&w->kv, v, elem_size * n);
    return 0;
}

int piso_gguf_set_u32(struct piso_gguf_writer *w, const char *key, uint32_t v) {
    return set_scalar(w, key, GGUF_VT_UINT32, &v, 4);
}
int piso_gguf_set_i32(struct piso_gguf_writer *w, const char *key, int32_t v) {
    return set_scalar(w, key, GGUF_VT_INT32, &v, 4);
}
int piso_gguf_set_f32(struct piso_gguf_writer *w, const char *key, float v) {
    return set_scalar(w, key, GGUF_VT_FLOAT32, &v, 4);
}
int piso_gguf_set_bool(struct piso_gguf_writer *w, const char *key, int v) {
    uint8_t b = v ? 1 : 0;
    return set_scalar(w, key, GGUF_VT_BOOL, &b, 1);
}
int piso_gguf_set_str(struct piso_gguf_writer *w, const char *key, const char *v) {
    if (new_key(w, key, GGUF_VT_STRING)) return -1;
    put_str(&w->kv, v);
    return 0;
}
int piso_gguf_set_arr_str(struct piso_gguf_writer *w, const char *key, const char *const *v, uint64_t n) {
    if (new_key(w, key, GGUF_VT_ARRAY)) return -1;
    put_u32(&w->kv, GGUF_VT_STRING);
    put_u64(&w->kv, n);
    for (uint64_t i = 0; i < n; i++) put_str(&w->kv, v[i] ? v[i] : "");
    return 0;
}
int piso_gguf_set_arr_f32(struct piso_gguf_writer *w, const char *key, const float *v, uint64_t n) {
    return set_array(w, key, GGUF_VT_FLOAT32, v, n, 4);
}
int piso_gguf_set_arr_i32(struct piso_gguf_writer *w, const char *key, const int32_t *v, uint64_t n) {
    return set_array(w, key, GGUF_VT_INT32, v, n, 4);
}

int piso_gguf_add_tensor(struct piso_gguf_writer *w, const char *name, int n_dims, const int64_t *ne, int type,
                         void *data, size_t nbytes, int owned) {
    int rc = -1;
    const struct piso_ggml_traits *tr = piso_ggml_traits(type);
    if (!name || !*name || strlen(name) >= GGUF_MAX_NAME) {
        piso_errorf("gguf writer: tensor name '%s' is empty or not shorter than %d bytes", name ? name : "", GGUF_MAX_NAME);
        goto done;
    }
    for (int64_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name)) {
            piso_errorf("gguf writer: duplicate tensor '%s'", name);
            goto done;
        }
    if (!tr) {
        piso_errorf("gguf writer: tensor '%s': unknown ggml type %d", name, type);
        goto done;
    }
    if (n_dims < 1 || n_dims > 4) {
        piso_errorf("gguf writer: tensor '%s': %d dimensions (1..4 allowed)", name, n_dims);
        goto done;
    }
    int64_t rows = 1;
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] < 0) {
            piso_errorf("gguf writer: tensor '%s': negative ne[%d]", name, d);
            goto done;
        }
        if (d) rows *= ne[d];
    }
    if (ne[0] % tr->blck_size) {
        piso_errorf("gguf writer: tensor '%s': row length %lld is not a multiple of the %s block size %d", name,
                    (long long)ne[0], tr->name, tr->blck_size);
        goto done;
    }
    size_t want = piso_ggml_row_size(type, ne[0]) * (size_t)rows;
    if (want != nbytes) {
        piso_errorf("gguf writer: tensor '%s': %zu bytes given, %s shape needs %zu", name, nbytes, tr->name, want);
        goto done;
    }
    if (w->n_t == w->cap_t) {
        int64_t cap = w->cap_t ? 2 * w->cap_t : 64;
        struct wtensor *nt = realloc(w->t, sizeof *nt * (size_t)cap);
        if (!nt) {
            piso_errorf("gguf writer: out of memory");
            goto done;
        }
        w->t = nt, w->cap_t = cap;
    }
    struct wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) {
        piso_errorf("gguf writer: out of memory");
        goto done;
    }
    t->n_dims = n_dims, t->type = type, t->data = data, t->nbytes = nbytes, t->owned = owned;
    for (int d = 0; d < 4; d++) t->ne[d] = d < n_dims ? ne[d] : 1;
    w->n_t++;
    return 0;
done:
    if (owned) free(data);
    return rc;
}

static size_t pad(size_t n) { return (n + GGUF_ALIGNMENT - 1) / GGUF_ALIGNMENT * GGUF_ALIGNMENT; }

int64_t piso_gguf_writer_n_tensors(const struct piso_gguf_writer *w) { return w->n_t; }

int piso_gguf_writer_layout(const struct piso_gguf_writer *w, struct piso_buf *h, uint64_t *offsets,
                            uint64_t *file_size) {
    memset(h, 0, sizeof *h);
    if (w->failed || w->kv.failed) return piso_errorf("out of memory while building the GGUF metadata");
    put_u32(h, 0x46554747u);
    put_u32(h, 3);
    put_u64(h, (uint64_t)w->n_t);
    put_u64(h, (uint64_t)w->n_kv);
    piso_buf_put(h, w->kv.data, w->kv.len);
    uint64_t off = 0;
    for (int64_t i = 0; i < w->n_t; i++) {
        const struct wtensor *t = &w->t[i];
        put_str(h, t->name);
        put_u32(h, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) put_u64(h, (uint64_t)t->ne[d]);
        put_u32(h, (uint32_t)t->type);
        put_u64(h, off);
        off += pad(t->nbytes);
    }
    if (h->failed) {
        piso_buf_free(h);
        return piso_errorf("out of memory building the GGUF header");
    }
    /* the data section starts at the padded header; offsets in the infos are relative to it */
    const uint64_t base = pad(h->len);
    if (offsets)
        for (int64_t i = 0, o = 0; i < w->n_t; o += (int64_t)pad(w->t[i].nbytes), i++) offsets[i] = base + (uint64_t)o;
    if (file_size) *file_size = base + off;
    return 0;
}

int piso_gguf_writer_write(struct piso_gguf_writer *w, const char *path) {
    struct piso_buf h;
    if (piso_gguf_writer_layout(w, &h, NULL, NULL)) return piso_error_context("%s", path);
    static const uint8_t zeros[GGUF_ALIGNMENT] = {0};
    struct piso_outfile o;
    if (piso_outfile_open(&o, path)) {
        piso_buf_free(&h);
        return -1;
    }
    int rc = piso_outfile_write(&o, h.data, h.len);
    if (!rc && pad(h.len) > h.len) rc = piso_outfile_write(&o, zeros, pad(h.len) - h.len);
    for (int64_t i = 0; i < w->n_t && !rc; i++) {
        const struct wtensor *t = &w->t[i];
        rc = piso_outfile_write(&o, t->data, t->nbytes);
        if (!rc && pad(t->nbytes) > t->nbytes) rc = piso_outfile_write(&o, zeros, pad(t->nbytes) - t->nbytes);
    }
    piso_buf_free(&h);
    if (rc) {
        piso_outfile_abort(&o);
        return piso_error_context("writing %s", path);
    }
    return piso_outfile_commit(&o);
}
