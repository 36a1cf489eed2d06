/* safetensors header and tensor table (piso_st_open). Invariant: every accepted tensor's byte range
 * lies in the file and matches dtype × shape; a file that parses re-serialises (piso_st_writer) to
 * one that parses the same: names, dtypes, shapes, bytes and metadata; F32 reads agree. */
#include "fuzz_common.h"
#include "piso/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *in = fuzz_file(data, size, "in.safetensors");
    struct piso_st_file f;
    if (piso_st_open(&f, in) != 0) return 0;
    struct piso_st_writer *w = piso_st_writer_new();
    for (int i = 0; i < f.n_tensors; i++) {
        const struct piso_st_tensor *t = &f.tensors[i];
        const uint8_t *lo = f.map.data, *hi = f.map.data + f.map.size;
        FUZZ_CHECK(t->nbytes == (size_t)t->numel * piso_dtype_size(t->dtype), "tensor %s: %zu bytes", t->name, t->nbytes);
        FUZZ_CHECK(t->nbytes == 0 || ((const uint8_t *)t->data >= lo && (const uint8_t *)t->data + t->nbytes <= hi),
                   "tensor %s outside the file", t->name);
        int64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= t->shape[d];
        FUZZ_CHECK(numel == t->numel, "tensor %s numel", t->name);
        FUZZ_CHECK(piso_st_find(&f, t->name) == t, "tensor %s: find returns another (duplicate names?)", t->name);
        piso_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    for (int i = 0; i < f.n_meta; i++) piso_st_writer_meta(w, f.meta_keys[i], f.meta_values[i]);
    const char *out = fuzz_path("out.safetensors");
    int wrc = piso_st_writer_write(w, out);
    piso_st_writer_free(w);
    FUZZ_CHECK(wrc == 0, "re-serialising failed: %s", piso_last_error());
    struct piso_st_file g;
    FUZZ_CHECK(piso_st_open(&g, out) == 0, "the re-serialised file does not parse: %s", piso_last_error());
    FUZZ_CHECK(g.n_tensors == f.n_tensors && g.n_meta == f.n_meta, "counts %d/%d vs %d/%d", g.n_tensors, g.n_meta,
               f.n_tensors, f.n_meta);
    for (int i = 0; i < f.n_tensors; i++) {
        const struct piso_st_tensor *a = &f.tensors[i], *b = piso_st_find(&g, a->name);
        FUZZ_CHECK(b && b->dtype == a->dtype && b->ndim == a->ndim && b->nbytes == a->nbytes, "tensor %s differs", a->name);
        for (int d = 0; d < a->ndim; d++) FUZZ_CHECK(a->shape[d] == b->shape[d], "tensor %s shape", a->name);
        FUZZ_CHECK(a->nbytes == 0 || memcmp(a->data, b->data, a->nbytes) == 0, "tensor %s bytes", a->name);
        if (a->dtype == PISO_DTYPE_F32 || a->dtype == PISO_DTYPE_F16 || a->dtype == PISO_DTYPE_BF16) {
            size_t n = (size_t)a->numel;
            float *x = malloc(sizeof(float) * (n ? n : 1)), *y = malloc(sizeof(float) * (n ? n : 1));
            int ra = piso_st_read_f32(&f, a, x, n), rb = piso_st_read_f32(&g, b, y, n);
            FUZZ_CHECK(ra == 0 && rb == 0 && memcmp(x, y, sizeof(float) * n) == 0, "tensor %s as F32", a->name);
            free(x), free(y);
        }
    }
    for (int i = 0; i < f.n_meta; i++) {
        const char *v = piso_st_meta(&g, f.meta_keys[i]);
        FUZZ_CHECK(v && strcmp(v, f.meta_values[i]) == 0, "metadata %s", f.meta_keys[i]);
    }
    piso_st_close(&g);
    piso_st_close(&f);
    return 0;
}
