/* Quantization grids: signed integers (full or narrow range) and OCP minifloats, as sorted value
 * sets containing 0; nearest-value rounding with ties to the even code. */
#include "piso/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Minifloat eXmY with bias 2^(e-1)-1: all finite magnitudes, both signs. `max_codes` limits the
 * magnitude codes (OCP e4m3 drops its NaN code S.1111.111; OCP e5m2 drops the inf/NaN exponent). */
static void grid_minifloat(struct piso_grid *g, int e, int m, int max_codes) {
    int bias = (1 << (e - 1)) - 1, n = 0;
    float mag[PISO_GRID_MAX];
    for (int code = 0; code < max_codes; code++) {
        int E = code >> m, M = code & ((1 << m) - 1);
        float frac = (float)M / (float)(1 << m) + (E > 0 ? 1.0f : 0.0f);
        mag[n++] = ldexpf(frac, (E > 0 ? E : 1) - bias);
    }
    g->n = 0;
    for (int k = n - 1; k >= 1; k--) g->v[g->n++] = -mag[k];
    for (int k = 0; k < n; k++) g->v[g->n++] = mag[k];
    qsort(g->v, (size_t)g->n, sizeof(float), cmp_float);
    g->is_int = 0;
    g->bits = 1 + e + m;
    g->narrow = 0;
    g->symmetric = 1;
}

int piso_grid_init(struct piso_grid *g, const char *format, int narrow) {
    memset(g, 0, sizeof *g);
    if (!format) return piso_errorf("grid: no format given");
    if (!strncmp(format, "int", 3)) {
        char *end;
        long b = strtol(format + 3, &end, 10);
        if (end == format + 3 || *end || b < 2 || b > 8)
            return piso_errorf("grid: unknown format '%s' (integers: int2..int8)", format);
        int lo = -(1 << (b - 1)) + (narrow ? 1 : 0), hi = (1 << (b - 1)) - 1;
        for (int v = lo; v <= hi; v++) g->v[g->n++] = (float)v;
        g->is_int = 1;
        g->bits = (int)b;
        g->narrow = narrow ? 1 : 0;
        g->symmetric = narrow ? 1 : 0;
        snprintf(g->name, sizeof g->name, "int%ld%s", b, narrow ? "n" : "");
        return 0;
    }
    const char *f = format;
    if (!strncmp(f, "fp4_", 4) || !strncmp(f, "fp6_", 4) || !strncmp(f, "fp8_", 4)) f += 4;
    if (!strcmp(f, "e2m1")) grid_minifloat(g, 2, 1, 8);
    else if (!strcmp(f, "e2m3")) grid_minifloat(g, 2, 3, 32);
    else if (!strcmp(f, "e3m2")) grid_minifloat(g, 3, 2, 32);
    else if (!strcmp(f, "e4m3")) grid_minifloat(g, 4, 3, 127);     /* 0x7f is NaN: max 448 */
    else if (!strcmp(f, "e5m2")) grid_minifloat(g, 5, 2, 31 * 4);  /* exponent 31 is inf/NaN */
    else
        return piso_errorf("grid: unknown format '%s' (int2..int8, e2m1, e2m3, e3m2, e4m3, e5m2)", format);
    snprintf(g->name, sizeof g->name, "%s", f);
    return 0;
}

int piso_grid_zero_index(const struct piso_grid *g) {
    for (int k = 0; k < g->n; k++)
        if (g->v[k] == 0.0f) return k;
    return -1;
}

float piso_grid_maxabs(const struct piso_grid *g) {
    float a = fabsf(g->v[0]), b = fabsf(g->v[g->n - 1]);
    return a > b ? a : b;
}

float piso_grid_round(const struct piso_grid *g, float x, int *index) {
    int k;
    if (g->is_int) {
        /* nearbyint rounds half to even in the default mode: the even integer is the even code */
        float r = nearbyintf(x);
        if (!(r >= g->v[0])) r = g->v[0]; /* also maps NaN to the low end instead of UB */
        if (r > g->v[g->n - 1]) r = g->v[g->n - 1];
        k = (int)(r - g->v[0]);
    } else {
        /* binary search for the first value >= x, then pick the nearer neighbour */
        int lo = 0, hi = g->n - 1;
        if (!(x > g->v[0])) {
            k = 0;
        } else if (x >= g->v[hi]) {
            k = hi;
        } else {
            while (hi - lo > 1) {
                int mid = (lo + hi) / 2;
                if (g->v[mid] <= x) lo = mid;
                else hi = mid;
            }
            float dlo = x - g->v[lo], dhi = g->v[hi] - x;
            if (dlo < dhi) k = lo;
            else if (dhi < dlo) k = hi;
            else {
                /* tie: the even magnitude code (IEEE round-half-even); the grid is symmetric
                 * with 0 at index n/2, so code parity is the parity of |index - n/2| */
                int z = g->n / 2;
                k = (abs(lo - z) % 2 == 0) ? lo : hi;
            }
        }
    }
    if (index) *index = k;
    return g->v[k];
}
