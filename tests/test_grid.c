/* Grids against closed forms (value sets, counts, extremes, smallest subnormals) and nearest
 * rounding against a linear scan, with the tie rule worked by hand. */
#include "harness.h"
#include "piso/quant.h"

static int has_value(const struct piso_grid *g, float x) {
    for (int k = 0; k < g->n; k++)
        if (g->v[k] == x) return 1;
    return 0;
}

static float min_positive(const struct piso_grid *g) {
    for (int k = 0; k < g->n; k++)
        if (g->v[k] > 0) return g->v[k];
    return 0;
}

static void check_sorted_with_zero(const struct piso_grid *g) {
    int ok = 1;
    for (int k = 1; k < g->n; k++) ok &= g->v[k - 1] < g->v[k];
    CHECK(ok, "%s not strictly increasing", g->name);
    CHECK(has_value(g, 0.0f), "%s has no 0", g->name);
}

static void test_int_grids(void) {
    for (int b = 2; b <= 8; b++) {
        char name[16];
        snprintf(name, sizeof name, "int%d", b);
        struct piso_grid g, gn;
        CHECK(piso_grid_init(&g, name, 0) == 0, "%s: %s", name, piso_last_error());
        CHECK(piso_grid_init(&gn, name, 1) == 0, "%s narrow", name);
        int half = 1 << (b - 1);
        CHECK(g.n == 2 * half, "%s count %d", name, g.n);
        CHECK(g.v[0] == -half && g.v[g.n - 1] == half - 1, "%s range %g..%g", name, g.v[0], g.v[g.n - 1]);
        CHECK(gn.n == 2 * half - 1 && gn.v[0] == -(half - 1), "%s narrow range", name);
        CHECK(!g.symmetric && gn.symmetric && g.is_int, "%s flags", name);
        CHECK(piso_grid_maxabs(&g) == half && piso_grid_maxabs(&gn) == half - 1, "%s maxabs", name);
        check_sorted_with_zero(&g);
        check_sorted_with_zero(&gn);
    }
    struct piso_grid g;
    CHECK(piso_grid_init(&g, "int2", 1) == 0 && g.n == 3 && g.v[0] == -1 && g.v[2] == 1, "int2 narrow = {-1,0,1}");
    CHECK(piso_grid_init(&g, "int9", 0) != 0 && strstr(piso_last_error(), "int9"), "int9 rejected");
    CHECK(piso_grid_init(&g, "int1", 0) != 0, "int1 rejected");
    CHECK(piso_grid_init(&g, "fp7", 0) != 0 && strstr(piso_last_error(), "fp7"), "unknown rejected");
}

static void test_float_grids(void) {
    struct piso_grid g;
    const float e2m1[] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
    CHECK(piso_grid_init(&g, "e2m1", 0) == 0, "e2m1");
    CHECK(g.n == 15, "e2m1 count %d", g.n);
    for (int k = 0; k < 8; k++) CHECK(has_value(&g, e2m1[k]) && has_value(&g, -e2m1[k]), "e2m1 has %g", e2m1[k]);
    CHECK(piso_grid_init(&g, "fp4_e2m1", 0) == 0 && g.n == 15, "alias fp4_e2m1");
    /* (magnitude codes − 1)·2 + 1 values; max = (2 − 2^−m)·2^(emax − bias) unless reserved */
    struct {
        const char *name;
        int n;
        float max, min_sub;
    } f[] = {
        {"e2m3", 63, 7.5f, 0.125f},
        {"e3m2", 63, 28.0f, 0.0625f},
        {"e4m3", 253, 448.0f, 0.001953125f},     /* 127 codes (0x7f is NaN), 2^-9 */
        {"e5m2", 247, 57344.0f, 1.52587890625e-05f}, /* 124 codes (exponent 31 reserved), 2^-16 */
    };
    for (int i = 0; i < 4; i++) {
        CHECK(piso_grid_init(&g, f[i].name, 0) == 0, "%s", f[i].name);
        CHECK(g.n == f[i].n, "%s count %d, want %d", f[i].name, g.n, f[i].n);
        CHECK(g.v[g.n - 1] == f[i].max && g.v[0] == -f[i].max, "%s max %g, want %g", f[i].name, g.v[g.n - 1], f[i].max);
        CHECK(min_positive(&g) == f[i].min_sub, "%s min subnormal %g", f[i].name, min_positive(&g));
        CHECK(g.symmetric && !g.is_int, "%s flags", f[i].name);
        check_sorted_with_zero(&g);
    }
    /* a few interior values by hand: e4m3 1.125 = 1+1/8, 240 = 1.875·2^7, 0.875·2^-6 subnormal */
    CHECK(piso_grid_init(&g, "e4m3", 0) == 0 && has_value(&g, 1.125f) && has_value(&g, 240.0f) &&
              has_value(&g, 0.875f / 64) && !has_value(&g, 480.0f),
          "e4m3 values");
    CHECK(piso_grid_init(&g, "e5m2", 0) == 0 && has_value(&g, 1.25f) && has_value(&g, 49152.0f) &&
              !has_value(&g, 1.125f),
          "e5m2 values");
}

static void test_round(void) {
    struct piso_grid g;
    piso_grid_init(&g, "int4", 0);
    int idx;
    CHECK(piso_grid_round(&g, 2.5f, &idx) == 2 && idx == 10, "int 2.5 -> 2 (half even), idx %d", idx);
    CHECK(piso_grid_round(&g, -2.5f, NULL) == -2, "int -2.5 -> -2");
    CHECK(piso_grid_round(&g, 3.5f, NULL) == 4, "int 3.5 -> 4");
    CHECK(piso_grid_round(&g, 100.0f, NULL) == 7 && piso_grid_round(&g, -100.0f, NULL) == -8, "int clamps");
    CHECK(piso_grid_round(&g, -7.6f, &idx) == -8 && idx == 0, "int -7.6 -> -8");
    piso_grid_init(&g, "e2m1", 0);
    CHECK(piso_grid_round(&g, 2.5f, NULL) == 2, "e2m1 2.5 -> 2 (even code)");
    CHECK(piso_grid_round(&g, 5.0f, NULL) == 4, "e2m1 5 -> 4");
    CHECK(piso_grid_round(&g, 1.25f, NULL) == 1, "e2m1 1.25 -> 1");
    CHECK(piso_grid_round(&g, 1.75f, NULL) == 2, "e2m1 1.75 -> 2");
    CHECK(piso_grid_round(&g, -0.25f, NULL) == 0, "e2m1 -0.25 -> 0");
    CHECK(piso_grid_round(&g, 0.26f, NULL) == 0.5f, "e2m1 0.26 -> 0.5");
    CHECK(piso_grid_round(&g, 7.0f, &idx) == 6 && idx == 14, "e2m1 7 -> 6");
    CHECK(piso_grid_round(&g, -1e30f, &idx) == -6 && idx == 0, "e2m1 -inf side");
    /* nearest against a linear scan, every grid */
    const char *names[] = {"int2", "int3", "int8", "e2m1", "e2m3", "e3m2", "e4m3", "e5m2"};
    srand(7);
    for (int n = 0; n < 8; n++) {
        piso_grid_init(&g, names[n], 0);
        int bad = 0;
        for (int t = 0; t < 2000; t++) {
            float x = ((float)rand() / RAND_MAX * 2 - 1) * piso_grid_maxabs(&g) * 1.2f;
            if (t % 3 == 0) x *= 1e-3f;
            float r = piso_grid_round(&g, x, &idx);
            float best = INFINITY;
            for (int k = 0; k < g.n; k++) best = fminf(best, fabsf(g.v[k] - x));
            if (fabsf(r - x) != best || g.v[idx] != r) bad++;
        }
        CHECK(bad == 0, "%s: %d roundings not nearest", names[n], bad);
    }
}

int main(void) {
    test_int_grids();
    test_float_grids();
    test_round();
    return test_finish();
}
