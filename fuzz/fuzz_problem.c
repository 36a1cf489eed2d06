/* The `piso layer` problem file (safetensors with weight, hessian or inputs, cross). Invariants: an
 * accepted problem has finite W and a symmetric H with a non-negative diagonal; quantizing it (int3,
 * per row, PiSO and RTN absmax) gives codes on the grid, finite scales, and a PiSO objective no
 * worse than absmax's (PiSO is the exact optimum over the scale, absmax one candidate). */
#include "fuzz_common.h"
#include "piso/quant.h"

#include <math.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *in = fuzz_file(data, size, "problem.safetensors");
    struct piso_problem p;
    if (piso_problem_load(in, &p) != 0) return 0;
    FUZZ_CHECK(p.N > 0 && p.D > 0, "shape");
    for (int64_t i = 0; i < p.N * p.D; i++) FUZZ_CHECK(isfinite(p.W[i]), "W[%lld]", (long long)i);
    for (int64_t i = 0; i < p.D; i++) {
        FUZZ_CHECK(p.H[i * p.D + i] >= 0, "H diagonal");
        for (int64_t j = 0; j < i; j++) FUZZ_CHECK(isfinite(p.H[i * p.D + j]), "H finite");
    }
    if (p.N * p.D <= 4096 && p.D <= 64) {
        struct piso_layer_problem lp = {.N = p.N, .D = p.D, .W = p.W, .H = p.H, .G = p.G};
        double obj[2] = {0, 0};
        const char *methods[2] = {"piso", "absmax"};
        for (int k = 0; k < 2; k++) {
            struct piso_quant_opts o = {.group = 0, .allow_negative = 1};
            FUZZ_CHECK(piso_grid_init(&o.grid, "int3", 0) == 0 && piso_scale_method_from_name(methods[k], &o.method) == 0,
                       "options");
            struct piso_layer_result r;
            if (piso_quantize_layer(&lp, &o, &r) != 0) {
                obj[0] = obj[1] = NAN;
                break;
            }
            for (int64_t i = 0; i < p.N * p.D; i++) FUZZ_CHECK(r.codes[i] >= -4 && r.codes[i] <= 3, "code %d", r.codes[i]);
            for (int64_t i = 0; i < p.N; i++) FUZZ_CHECK(isfinite(r.scales[i]), "scale");
            obj[k] = r.objective;
            piso_layer_result_free(&r);
        }
        /* Known limit (README): the sweep accumulates in fp32, so a row whose weights span more than
         * ~1e6 in magnitude (fuzz/known/fuzz_problem/) can get a scale worse than absmax's. */
        double wmax = 0, wmin = INFINITY;
        for (int64_t i = 0; i < p.N * p.D; i++) {
            double a = fabs(p.W[i]);
            if (a > wmax) wmax = a;
            if (a > 0 && a < wmin) wmin = a;
        }
        if (!p.G && isfinite(obj[0]) && isfinite(obj[1]) && wmax <= 1e6 * wmin)
            FUZZ_CHECK(obj[0] <= obj[1] * (1 + 1e-4) + 1e-6 * fabs(obj[1]) + 1e-9, "PiSO %g worse than absmax %g", obj[0],
                       obj[1]);
    }
    piso_problem_free(&p);
    return 0;
}
