/* The growable byte buffer (piso/common.h) behind the JSON writer and the GGUF metadata writer. */
#include "piso/common.h"

#include <stdlib.h>
#include <string.h>

void piso_buf_put(struct piso_buf *b, const void *p, size_t n) {
    if (b->failed) return;
    if (n > SIZE_MAX / 2 - b->len) {
        b->failed = 1;
        return;
    }
    if (!b->data || b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->len + n + 1 > cap) cap *= 2;
        char *nb = realloc(b->data, cap);
        if (!nb) {
            b->failed = 1;
            return;
        }
        b->data = nb, b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}

void piso_buf_free(struct piso_buf *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}
