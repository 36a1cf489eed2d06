/* GGUF reader: mmap the file, then walk header, key/values and tensor infos with a bounds-checked
 * cursor. Every count, length, type, shape and offset is validated before use: the file may be
 * hostile. Layout: shared/docs/llamacpp-formats.md §1. */
#include "piso/gguf.h"

#include <stdlib.h>
#include <string.h>

#define GGUF_MAGIC 0x46554747u /* "GGUF" read little-endian */
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_NAME 64

struct cursor {
    const uint8_t *p, *end;
};

static size_t cur_left(const struct cursor *c) { return (size_t)(c->end - c->p); }

static int cur_take(struct cursor *c, void *dst, size_t n, const char *what) {
    if (cur_left(c) < n) return piso_errorf("unexpected end of file reading %s", what);
    memcpy(dst, c->p, n);
    c->p += n;
    return 0;
}

/* A gguf_string: u64 length then bytes (no NUL). */
static int cur_string(struct cursor *c, const char **s, uint64_t *len, const char *what) {
    if (cur_take(c, len, 8, what) != 0) return -1;
    if (*len > cur_left(c))
        return piso_errorf("%s: string length %llu runs past the end of the file", what, (unsigned long long)*len);
    *s = (const char *)c->p;
    c->p += *len;
    return 0;
}

static size_t vtype_size(enum piso_gguf_vtype t) {
    switch (t) {
    case GGUF_VT_UINT8: case GGUF_VT_INT8: case GGUF_VT_BOOL: return 1;
    case GGUF_VT_UINT16: case GGUF_VT_INT16: return 2;
    case GGUF_VT_UINT32: case GGUF_VT_INT32: case GGUF_VT_FLOAT32: return 4;
    case GGUF_VT_UINT64: case GGUF_VT_INT64: case GGUF_VT_FLOAT64: return 8;
    default: return 0; /* string, array: variable */
    }
}

static const char *vtype_name(enum piso_gguf_vtype t) {
    static const char *names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
                                  "string", "array", "u64", "i64", "f64"};
    return (unsigned)t < GGUF_VT_COUNT ? names[t] : "invalid";
}

/* Decodes a little-endian scalar of type t into the kv's union. */
static void scalar_value(struct piso_gguf_kv *kv, const uint8_t *p) {
    switch (kv->type) {
    case GGUF_VT_UINT8: case GGUF_VT_BOOL: kv->val.u64 = p[0]; break;
    case GGUF_VT_INT8: kv->val.i64 = (int8_t)p[0]; break;
    case GGUF_VT_UINT16: { uint16_t v; memcpy(&v, p, 2); kv->val.u64 = v; break; }
    case GGUF_VT_INT16: { int16_t v; memcpy(&v, p, 2); kv->val.i64 = v; break; }
    case GGUF_VT_UINT32: { uint32_t v; memcpy(&v, p, 4); kv->val.u64 = v; break; }
    case GGUF_VT_INT32: { int32_t v; memcpy(&v, p, 4); kv->val.i64 = v; break; }
    case GGUF_VT_FLOAT32: { float v; memcpy(&v, p, 4); kv->val.f64 = v; break; }
    case GGUF_VT_UINT64: memcpy(&kv->val.u64, p, 8); break;
    case GGUF_VT_INT64: memcpy(&kv->val.i64, p, 8); break;
    case GGUF_VT_FLOAT64: memcpy(&kv->val.f64, p, 8); break;
    default: break;
    }
}

/* The name of key or tensor `index` (kind: "key" or "tensor"): non-empty, no NUL byte, at most
 * max_len bytes (0: no limit); a malloc'd copy in *out. */
static int cur_name(struct cursor *c, const char *kind, int64_t index, uint64_t max_len, char **out) {
    const char *name = NULL;
    uint64_t len = 0;
    char what[64];
    snprintf(what, sizeof what, "%s %lld", kind, (long long)index);
    if (cur_string(c, &name, &len, what) != 0) return -1;
    if (len == 0) return piso_errorf("%s: the name is empty", what);
    if (max_len && len > max_len)
        return piso_errorf("%s: name of %llu bytes is too long (max %llu)", what, (unsigned long long)len,
                           (unsigned long long)max_len);
    if (memchr(name, 0, len)) return piso_errorf("%s: the name contains a NUL byte", what);
    *out = strndup(name, len);
    if (!*out) return piso_errorf("%s: out of memory", what);
    return 0;
}

static int parse_kv(struct cursor *c, struct piso_gguf_kv *kv, int64_t index) {
    if (cur_name(c, "key", index, 0, &kv->key) != 0) return -1;
    uint32_t t = 0;
    if (cur_take(c, &t, 4, kv->key) != 0) return -1;
    if (t >= GGUF_VT_COUNT) return piso_errorf("key '%s': invalid value type %u", kv->key, t);
    kv->type = (enum piso_gguf_vtype)t;
    if (kv->type == GGUF_VT_STRING) return cur_string(c, &kv->str, &kv->str_len, kv->key);
    if (kv->type != GGUF_VT_ARRAY) {
        size_t n = vtype_size(kv->type);
        if (cur_left(c) < n) return piso_errorf("key '%s': unexpected end of file reading its value", kv->key);
        scalar_value(kv, c->p);
        if (kv->type == GGUF_VT_BOOL && c->p[0] > 1)
            return piso_errorf("key '%s': bool value %u is not 0 or 1", kv->key, c->p[0]);
        c->p += n;
        return 0;
    }
    uint32_t et = 0;
    if (cur_take(c, &et, 4, kv->key) != 0 || cur_take(c, &kv->arr_n, 8, kv->key) != 0) return -1;
    if (et >= GGUF_VT_COUNT || et == GGUF_VT_ARRAY)
        return piso_errorf("key '%s': invalid array element type %u", kv->key, et);
    kv->arr_type = (enum piso_gguf_vtype)et;
    kv->arr_data = c->p;
    if (kv->arr_type != GGUF_VT_STRING) {
        size_t es = vtype_size(kv->arr_type);
        if (kv->arr_n > cur_left(c) / es)
            return piso_errorf("key '%s': array of %llu %s elements runs past the end of the file", kv->key,
                               (unsigned long long)kv->arr_n, vtype_name(kv->arr_type));
        c->p += kv->arr_n * es;
        return 0;
    }
    /* each string takes at least its 8-byte length: bounds the allocation before walking */
    if (kv->arr_n > cur_left(c) / 8)
        return piso_errorf("key '%s': array of %llu strings runs past the end of the file", kv->key,
                           (unsigned long long)kv->arr_n);
    kv->arr_str = malloc((kv->arr_n ? kv->arr_n : 1) * sizeof *kv->arr_str);
    if (!kv->arr_str) return piso_errorf("key '%s': out of memory for %llu strings", kv->key, (unsigned long long)kv->arr_n);
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        kv->arr_str[i] = c->p;
        const char *s;
        uint64_t len;
        if (cur_string(c, &s, &len, kv->key) != 0)
            return piso_error_context("element %llu", (unsigned long long)i);
    }
    return 0;
}

static int parse_tensor_info(struct cursor *c, struct piso_gguf_tensor *t, int64_t index) {
    if (cur_name(c, "tensor", index, GGUF_MAX_NAME - 1, &t->name) != 0) return -1;
    uint32_t nd = 0;
    if (cur_take(c, &nd, 4, t->name) != 0) return -1;
    if (nd > 4) return piso_errorf("tensor '%s': n_dims = %u (max 4)", t->name, nd);
    t->n_dims = (int)nd;
    for (int d = 0; d < 4; d++) t->ne[d] = 1;
    int64_t numel = 1;
    for (uint32_t d = 0; d < nd; d++) {
        if (cur_take(c, &t->ne[d], 8, t->name) != 0) return -1;
        if (t->ne[d] < 0) return piso_errorf("tensor '%s': ne[%u] = %lld is negative", t->name, d, (long long)t->ne[d]);
        if (t->ne[d] && numel > INT64_MAX / 64 / t->ne[d])
            return piso_errorf("tensor '%s': element count overflows", t->name);
        numel *= t->ne[d];
    }
    uint32_t type = 0;
    if (cur_take(c, &type, 4, t->name) != 0 || cur_take(c, &t->offset, 8, t->name) != 0) return -1;
    const struct piso_ggml_traits *tr = piso_ggml_traits((int)type);
    if (!tr) return piso_errorf("tensor '%s': unknown ggml type %u", t->name, type);
    t->type = (int)type;
    if (t->ne[0] % tr->blck_size != 0)
        return piso_errorf("tensor '%s': ne[0] = %lld is not a multiple of the %s block size %d", t->name,
                           (long long)t->ne[0], tr->name, tr->blck_size);
    t->nbytes = (size_t)(numel / tr->blck_size) * (size_t)tr->type_size;
    return 0;
}

static int cmp_str_ptr(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Returns the first duplicated name among n strings, sorting the array in place (O(n log n) even
 * for hostile n). */
static const char *find_duplicate(char **s, int64_t n) {
    if (n < 2) return NULL;
    qsort(s, (size_t)n, sizeof *s, cmp_str_ptr);
    const char *dup = NULL;
    for (int64_t i = 1; i < n && !dup; i++)
        if (strcmp(s[i - 1], s[i]) == 0) dup = s[i];
    return dup;
}

static int gguf_parse(struct piso_gguf *g) {
    struct cursor c = {g->map.data, g->map.data + g->map.size};
    uint32_t magic = 0;
    if (cur_take(&c, &magic, 4, "the magic") != 0) return -1;
    if (magic != GGUF_MAGIC) return piso_errorf("not a GGUF file (bad magic 0x%08x)", magic);
    if (cur_take(&c, &g->version, 4, "the version") != 0) return -1;
    if (g->version == 1) return piso_errorf("GGUF version 1 is not supported (only 2 and 3)");
    if ((g->version & 0xffff) == 0) return piso_errorf("GGUF file is big-endian (version 0x%08x); not supported", g->version);
    if (g->version > 3) return piso_errorf("GGUF version %u is not supported (only 2 and 3)", g->version);
    if (cur_take(&c, &g->n_tensors, 8, "n_tensors") != 0 || cur_take(&c, &g->n_kv, 8, "n_kv") != 0) return -1;
    /* minimal record sizes: kv = key length + type (12 bytes); tensor info = length + n_dims +
     * type + offset (24 bytes) */
    if (g->n_kv < 0 || (uint64_t)g->n_kv > cur_left(&c) / 12)
        return piso_errorf("n_kv = %lld is impossible for a file of %zu bytes", (long long)g->n_kv, g->map.size);
    if (g->n_tensors < 0 || (uint64_t)g->n_tensors > cur_left(&c) / 24)
        return piso_errorf("n_tensors = %lld is impossible for a file of %zu bytes", (long long)g->n_tensors, g->map.size);
    g->kv = calloc((size_t)g->n_kv + 1, sizeof *g->kv);
    if (!g->kv) return piso_errorf("out of memory for %lld keys", (long long)g->n_kv);
    int64_t n_kv = g->n_kv;
    g->n_kv = 0; /* counts parsed entries so close() frees exactly those */
    for (int64_t i = 0; i < n_kv; i++) {
        g->n_kv++;
        if (parse_kv(&c, &g->kv[i], i) != 0) return -1;
    }
    char **keys = malloc(((size_t)n_kv + 1) * sizeof *keys);
    if (!keys) return piso_errorf("out of memory checking %lld keys", (long long)n_kv);
    for (int64_t i = 0; i < n_kv; i++) keys[i] = g->kv[i].key;
    const char *dup = find_duplicate(keys, n_kv);
    free(keys);
    if (dup) return piso_errorf("key '%s' appears more than once", dup);

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const struct piso_gguf_kv *al = piso_gguf_find(g, "general.alignment");
    if (al) {
        if (al->type != GGUF_VT_UINT32)
            return piso_errorf("key 'general.alignment' has type %s, expected u32", vtype_name(al->type));
        if (al->val.u64 == 0 || (al->val.u64 & (al->val.u64 - 1)) != 0)
            return piso_errorf("key 'general.alignment' = %llu is not a power of 2", (unsigned long long)al->val.u64);
        g->alignment = (uint32_t)al->val.u64;
    }

    int64_t n_t = g->n_tensors;
    g->tensors = calloc((size_t)n_t + 1, sizeof *g->tensors);
    if (!g->tensors) return piso_errorf("out of memory for %lld tensor infos", (long long)n_t);
    g->n_tensors = 0;
    for (int64_t i = 0; i < n_t; i++) {
        g->n_tensors++;
        if (parse_tensor_info(&c, &g->tensors[i], i) != 0) return -1;
    }
    char **names = malloc(((size_t)n_t + 1) * sizeof *names);
    if (!names) return piso_errorf("out of memory checking %lld tensor names", (long long)n_t);
    for (int64_t i = 0; i < n_t; i++) names[i] = g->tensors[i].name;
    dup = find_duplicate(names, n_t);
    free(names);
    if (dup) return piso_errorf("tensor '%s' appears more than once", dup);

    size_t header_end = (size_t)(c.p - g->map.data);
    size_t data_start = (header_end + g->alignment - 1) / g->alignment * g->alignment;
    if (n_t > 0 && data_start > g->map.size)
        return piso_errorf("tensor data section starts at %zu, past the end of the %zu-byte file", data_start,
                           g->map.size);
    size_t data_size = data_start <= g->map.size ? g->map.size - data_start : 0;
    uint64_t expect = 0; /* as llama.cpp: tensors lie in order, each at the aligned end of the one before */
    for (int64_t i = 0; i < n_t; i++) {
        struct piso_gguf_tensor *t = &g->tensors[i];
        if (t->offset % g->alignment != 0)
            return piso_errorf("tensor '%s': offset %llu is not a multiple of the alignment %u", t->name,
                               (unsigned long long)t->offset, g->alignment);
        if (t->offset > data_size || t->nbytes > data_size - t->offset)
            return piso_errorf("tensor '%s': data [%llu, %llu) lies outside the %zu bytes of tensor data "
                               "(truncated file?)", t->name, (unsigned long long)t->offset,
                               (unsigned long long)(t->offset + t->nbytes), data_size);
        if (t->offset != expect)
            return piso_errorf("tensor '%s': offset %llu, expected %llu (the aligned end of %s): tensors overlap, "
                               "or a shape or type does not match the data", t->name, (unsigned long long)t->offset,
                               (unsigned long long)expect, i ? g->tensors[i - 1].name : "the start of the data");
        t->data = g->map.data + data_start + t->offset;
        expect = (t->offset + t->nbytes + g->alignment - 1) / g->alignment * g->alignment;
    }
    if (n_t > 0 && data_size > expect && data_size - expect >= g->alignment)
        return piso_errorf("%zu bytes of tensor data, but the tensors take %llu: a shape or type does not match "
                           "the data", data_size, (unsigned long long)expect);
    return 0;
}

int piso_gguf_open(struct piso_gguf *g, const char *path) {
    memset(g, 0, sizeof *g);
    if (piso_mmap_open(&g->map, path) != 0) return -1;
    if (gguf_parse(g) != 0) {
        piso_error_context("%s", path);
        piso_gguf_close(g);
        return -1;
    }
    return 0;
}

void piso_gguf_close(struct piso_gguf *g) {
    for (int64_t i = 0; g->kv && i < g->n_kv; i++) {
        free(g->kv[i].key);
        free(g->kv[i].arr_str);
    }
    for (int64_t i = 0; g->tensors && i < g->n_tensors; i++) free(g->tensors[i].name);
    free(g->kv);
    free(g->tensors);
    piso_mmap_close(&g->map);
    memset(g, 0, sizeof *g);
}

const struct piso_gguf_kv *piso_gguf_find(const struct piso_gguf *g, const char *key) {
    for (int64_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].key && strcmp(g->kv[i].key, key) == 0) return &g->kv[i];
    return NULL;
}

const struct piso_gguf_tensor *piso_gguf_find_tensor(const struct piso_gguf *g, const char *name) {
    for (int64_t i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].name && strcmp(g->tensors[i].name, name) == 0) return &g->tensors[i];
    return NULL;
}

static const struct piso_gguf_kv *find_or_fail(const struct piso_gguf *g, const char *key) {
    const struct piso_gguf_kv *kv = piso_gguf_find(g, key);
    if (!kv) piso_errorf("%s: key '%s' not found", g->map.path, key);
    return kv;
}

int piso_gguf_get_u32(const struct piso_gguf *g, const char *key, uint32_t *out) {
    const struct piso_gguf_kv *kv = find_or_fail(g, key);
    if (!kv) return -1;
    switch (kv->type) {
    case GGUF_VT_UINT8: case GGUF_VT_UINT16: case GGUF_VT_UINT32: case GGUF_VT_UINT64:
        if (kv->val.u64 > UINT32_MAX) break;
        *out = (uint32_t)kv->val.u64;
        return 0;
    case GGUF_VT_INT8: case GGUF_VT_INT16: case GGUF_VT_INT32: case GGUF_VT_INT64:
        if (kv->val.i64 < 0 || kv->val.i64 > (int64_t)UINT32_MAX) break;
        *out = (uint32_t)kv->val.i64;
        return 0;
    default:
        return piso_errorf("%s: key '%s' has type %s, expected an integer", g->map.path, key, vtype_name(kv->type));
    }
    return piso_errorf("%s: key '%s': value does not fit in u32", g->map.path, key);
}

int piso_gguf_get_f32(const struct piso_gguf *g, const char *key, float *out) {
    const struct piso_gguf_kv *kv = find_or_fail(g, key);
    if (!kv) return -1;
    if (kv->type != GGUF_VT_FLOAT32 && kv->type != GGUF_VT_FLOAT64)
        return piso_errorf("%s: key '%s' has type %s, expected f32", g->map.path, key, vtype_name(kv->type));
    *out = (float)kv->val.f64;
    return 0;
}

int piso_gguf_get_bool(const struct piso_gguf *g, const char *key, int *out) {
    const struct piso_gguf_kv *kv = find_or_fail(g, key);
    if (!kv) return -1;
    if (kv->type != GGUF_VT_BOOL)
        return piso_errorf("%s: key '%s' has type %s, expected bool", g->map.path, key, vtype_name(kv->type));
    *out = kv->val.u64 != 0;
    return 0;
}

char *piso_gguf_get_str(const struct piso_gguf *g, const char *key) {
    const struct piso_gguf_kv *kv = find_or_fail(g, key);
    if (!kv) return NULL;
    if (kv->type != GGUF_VT_STRING) {
        piso_errorf("%s: key '%s' has type %s, expected string", g->map.path, key, vtype_name(kv->type));
        return NULL;
    }
    return strndup(kv->str, kv->str_len);
}

char *piso_gguf_arr_str(const struct piso_gguf_kv *kv, uint64_t i) {
    if (kv->type != GGUF_VT_ARRAY || kv->arr_type != GGUF_VT_STRING || i >= kv->arr_n) return NULL;
    uint64_t len;
    memcpy(&len, kv->arr_str[i], 8); /* validated at open */
    return strndup((const char *)kv->arr_str[i] + 8, len);
}

int piso_gguf_tensor_to_f32(const struct piso_gguf *g, const struct piso_gguf_tensor *t, float *dst) {
    const struct piso_ggml_traits *tr = piso_ggml_traits(t->type);
    if (!tr || !tr->to_float)
        return piso_errorf("%s: tensor '%s': cannot convert type %s to f32", g->map.path, t->name,
                           tr ? tr->name : "unknown");
    int64_t numel = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    tr->to_float(t->data, dst, numel);
    return 0;
}
