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

/* The positive FP8 E4M3 values (codes 1..0x7E; 0x7F is NaN), increasing with the code. */
static double e4m3_value(int code) {
    const int e = (code >> 3) & 15, m = code & 7;
    return e == 0 ? ldexp((double)m, -9) : ldexp(1.0 + m / 8.0, e - 7);
}

int piso_grid_scale_count(const struct piso_grid *g) {
    return g->scale_set == PISO_SSET_POW2 ? 255 : g->scale_set == PISO_SSET_UE4M3 ? 126 : 0;
}

double piso_grid_scale_at(const struct piso_grid *g, int k) {
    if (g->scale_set == PISO_SSET_POW2) return ldexp(1.0, k - 127);
    if (g->scale_set == PISO_SSET_UE4M3) return e4m3_value(k + 1) * (double)g->scale_mult;
    return 0;
}

void piso_grid_scale_bracket(const struct piso_grid *g, double s, double *below, double *above) {
    const int n = piso_grid_scale_count(g);
    if (!n) {
        *below = *above = s;
        return;
    }
    /* binary search over the increasing list */
    int lo = -1, hi = n; /* scale_at(lo) <= s < scale_at(hi) */
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (piso_grid_scale_at(g, mid) <= s) lo = mid;
        else hi = mid;
    }
    *below = lo >= 0 ? piso_grid_scale_at(g, lo) : 0;
    *above = lo >= 0 && piso_grid_scale_at(g, lo) == s ? s : hi < n ? piso_grid_scale_at(g, hi) : INFINITY;
}

float piso_grid_recipe_scale(const struct piso_grid *g, float amax) {
    if (!(amax > 0) || !isfinite(amax)) return 1.0f;
    if (g->scale_set == PISO_SSET_POW2) {
        int k = (int)floor(log2((double)amax)) - g->emax;
        k = k < -127 ? -127 : k > 127 ? 127 : k;
        return (float)ldexp(1.0, k);
    }
    if (g->scale_set == PISO_SSET_UE4M3) {
        /* E4M3 round-to-nearest-even of amax/(6·mult): the nearest code, ties to the even one */
        double t = (double)amax / (6.0 * (double)g->scale_mult);
        int best = 1;
        for (int c = 2; c <= 0x7E; c++) {
            const double dc = fabs(e4m3_value(c) - t), db = fabs(e4m3_value(best) - t);
            if (dc < db || (dc == db && (c & 1) == 0)) best = c;
        }
        return (float)(e4m3_value(best) * (double)g->scale_mult);
    }
    return amax / piso_grid_maxabs(g);
}

int piso_grid_init(struct piso_grid *g, const char *format, int narrow) {
    memset(g, 0, sizeof *g);
    g->scale_mult = 1.0f;
    if (!format) return piso_errorf("grid: no format given");
    if (!strncmp(format, "mx", 2) || !strcmp(format, "nvfp4")) {
        static const struct {
            const char *name, *elem;
            int sset, block;
        } hw[] = {{"mxfp4", "e2m1", PISO_SSET_POW2, 32},      {"mxfp6_e2m3", "e2m3", PISO_SSET_POW2, 32},
                  {"mxfp6_e3m2", "e3m2", PISO_SSET_POW2, 32}, {"mxfp8_e4m3", "e4m3", PISO_SSET_POW2, 32},
                  {"mxfp8_e5m2", "e5m2", PISO_SSET_POW2, 32}, {"mxint8", "int8", PISO_SSET_POW2, 32},
                  {"nvfp4", "e2m1", PISO_SSET_UE4M3, 16}};
        for (size_t i = 0; i < sizeof hw / sizeof hw[0]; i++) {
            if (strcmp(format, hw[i].name)) continue;
            if (piso_grid_init(g, hw[i].elem, 0)) return -1;
            g->scale_set = hw[i].sset, g->block = hw[i].block, g->scale_mult = 1.0f;
            g->emax = (int)floor(log2((double)g->v[g->n - 1]));
            snprintf(g->name, sizeof g->name, "%s", hw[i].name);
            return 0;
        }
        return piso_errorf("grid: unknown format '%s' (mxfp4, mxfp6_e2m3, mxfp6_e3m2, mxfp8_e4m3, mxfp8_e5m2, mxint8, nvfp4)",
                           format);
    }
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
        return piso_errorf("grid: unknown format '%s' (int2..int8, e2m1, e2m3, e3m2, e4m3, e5m2, mxfp4, mxfp6_e2m3, "
                           "mxfp6_e3m2, mxfp8_e4m3, mxfp8_e5m2, mxint8, nvfp4)", format);
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
