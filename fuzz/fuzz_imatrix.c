/* imatrix files: GGUF (<name>.in_sum2 + <name>.counts) and the legacy .dat. Invariants: an accepted
 * imatrix has entries, sorted and unique by name, with finite non-negative values; it saves in both
 * formats and loads back with the same names and lengths, and the same means (sum2/count) within
 * float rounding. */
#include "fuzz_common.h"
#include "piso/imatrix.h"

#include <math.h>

static void same(const struct piso_imatrix *a, const struct piso_imatrix *b, const char *how) {
    FUZZ_CHECK(a->n == b->n, "%s: %d entries vs %d", how, a->n, b->n);
    for (int i = 0; i < a->n; i++) {
        const struct piso_imatrix_entry *x = &a->e[i], *y = &b->e[i];
        FUZZ_CHECK(!strcmp(x->name, y->name) && x->n == y->n, "%s: entry %d", how, i);
        float *mx = malloc(sizeof(float) * (size_t)x->n), *my = malloc(sizeof(float) * (size_t)x->n);
        FUZZ_CHECK(piso_imatrix_get(a, x->name, x->n, mx) == 0 && piso_imatrix_get(b, y->name, y->n, my) == 0, "get");
        for (int64_t j = 0; j < x->n; j++)
            FUZZ_CHECK(isfinite(my[j]) && fabsf(mx[j] - my[j]) <= 1e-5f * fabsf(mx[j]) + 1e-30f, "%s: %s[%lld]: %g vs %g",
                       how, x->name, (long long)j, (double)mx[j], (double)my[j]);
        free(mx), free(my);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *in = fuzz_file(data, size, "in.imatrix");
    struct piso_imatrix *im = NULL;
    if (piso_imatrix_load(in, &im) != 0) return 0;
    FUZZ_CHECK(im->n > 0, "an imatrix without entries was accepted");
    for (int i = 0; i < im->n; i++) {
        FUZZ_CHECK(i == 0 || strcmp(im->e[i - 1].name, im->e[i].name) < 0, "entries not sorted/unique");
        for (int64_t j = 0; j < im->e[i].n; j++) FUZZ_CHECK(isfinite(im->e[i].sum2[j]) && im->e[i].sum2[j] >= 0, "value");
        FUZZ_CHECK(piso_imatrix_find(im, im->e[i].name) == &im->e[i], "find");
    }
    /* the means must survive a float round trip: skip values a float cannot hold */
    int representable = 1;
    for (int i = 0; i < im->n && representable; i++)
        for (int64_t j = 0; j < im->e[i].n; j++) {
            double mean = im->e[i].count > 0 ? im->e[i].sum2[j] / (double)im->e[i].count : 1;
            if (!(mean < 1e30) || (mean > 0 && mean < 1e-30)) representable = 0;
        }
    if (!representable || im->e[0].count > (1 << 24)) {
        piso_imatrix_free(im);
        return 0;
    }
    const char *out_gguf = fuzz_path("out.gguf"), *out_dat = fuzz_path("out.dat");
    struct piso_imatrix *a = NULL, *b = NULL;
    if (piso_imatrix_save_gguf(im, out_gguf) == 0) {
        FUZZ_CHECK(piso_imatrix_load(out_gguf, &a) == 0, "saved GGUF imatrix does not load: %s", piso_last_error());
        same(im, a, "GGUF");
    }
    int wrote_dat = 1;
    for (int i = 0; i < im->n; i++) wrote_dat &= strlen(im->e[i].name) < 256 && im->e[i].n <= INT32_MAX;
    if (wrote_dat && piso_imatrix_save_dat(im, out_dat) == 0) {
        FUZZ_CHECK(piso_imatrix_load(out_dat, &b) == 0, "saved .dat imatrix does not load: %s", piso_last_error());
        same(im, b, ".dat");
    }
    piso_imatrix_free(a), piso_imatrix_free(b), piso_imatrix_free(im);
    return 0;
}
