/* Whole models with accumulator limits (stories260K, W4A8):
 *  - `piso quantize --accumulator-bits P --act-format int8` (data-free RTN, GPTQ; GPFQ with int8-asym
 *    activations, codes 0..255): the codes it
 *    writes are checked here row by row with the closed form (own code), and the checker of the
 *    simulator agrees;
 *  - the simulated integer matmul: an AXE model gives bit-identical logits with a wrapping P-bit
 *    accumulator and with the exact one (P = 64); the exact integer path agrees with the float path
 *    (x̂·ŵ in fp32 GEMMs, a second code path) to fp32 rounding; an unconstrained model's codes break
 *    the limits and its logits change under the same P-bit wraparound;
 *  - bad options: no integer activations, P too small (names the layer), a tile that does not divide
 *    a row (names the layer): exit status, message, and no output directory. */
#include "harness.h"
#include "piso/accum_sim.h"
#include "piso/safetensors.h"

#include <unistd.h>

static char dir[64];

static const char *act_format = "int8";
static int act_min = -127, act_max = 127; /* its integer codes */

static int quantize(const char *out, const char *args) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s quantize --model %s --out %s --format int4 --act-format %s %s --quiet 2>&1",
             PISO_BIN, test_data("models/stories260K/stories260K.bin"), out, act_format, args);
    char *text = NULL;
    int rc = test_run(cmd, &text);
    if (rc) fprintf(stderr, "%s\n%s\n", cmd, text ? text : "");
    free(text);
    return rc;
}

/* the largest worst case over the rows of every layer in dir (tile = the row), by the closed form */
static long long worst_of_dir(const char *out, int in_min, int in_max) {
    char path[256];
    snprintf(path, sizeof path, "%s/quantization.safetensors", out);
    struct piso_st_file f;
    if (piso_st_open(&f, path)) return -1;
    long long worst = 0;
    for (int i = 0; i < f.n_tensors; i++) {
        const struct piso_st_tensor *t = &f.tensors[i];
        if (t->dtype != PISO_DTYPE_I8) continue;
        for (int64_t r = 0; r < t->shape[0]; r++) {
            long long p = 0, n = 0;
            for (int64_t j = 0; j < t->shape[1]; j++) {
                int q = ((const int8_t *)t->data)[r * t->shape[1] + j];
                if (q > 0) p += q;
                else n += q;
            }
            long long hi = (long long)in_max * p + (long long)in_min * n, lo = (long long)in_min * p + (long long)in_max * n;
            if (hi > worst) worst = hi;
            if (-lo > worst) worst = -lo;
        }
    }
    piso_st_close(&f);
    return worst;
}

static const int tokens[] = {1, 403, 407, 261, 378, 285, 1, 402, 300, 260, 301, 303, 270, 280, 290, 310};
enum { NT = 16 };

/* logits of the model in dir, with the simulator at P bits (0: the float path) */
static float *logits_of(const char *out, int P, int64_t *overflowed, long long *check_violations) {
    struct piso_model *m = NULL;
    if (piso_model_load(out, NULL, &m)) {
        CHECK(0, "load %s: %s", out, piso_last_error());
        return NULL;
    }
    struct piso_accum_sim sim;
    memset(&sim, 0, sizeof sim);
    if (P) {
        if (piso_accum_sim_load(&sim, m, out, P, 0, 0)) {
            CHECK(0, "simulator for %s: %s", out, piso_last_error());
            piso_model_free(m);
            return NULL;
        }
        m->accum_sim = &sim;
        if (check_violations && P <= 62) {
            struct piso_accum a = {.bits = P, .in_min = act_min, .in_max = act_max};
            struct piso_accum_report rep;
            piso_accum_sim_check(&sim, &a, &rep);
            *check_violations = rep.violations;
        }
    }
    float *lg = malloc(sizeof(float) * (size_t)NT * m->cfg.vocab_size);
    CHECK(piso_forward(m, tokens, NT, 0, lg) == 0, "forward: %s", piso_last_error());
    if (overflowed) *overflowed = sim.overflowed;
    piso_accum_sim_free(&sim);
    piso_model_free(m);
    return lg;
}

static void test_axe_model(const char *out, const char *args, int P) {
    if (quantize(out, args)) {
        CHECK(0, "quantize %s failed", args);
        return;
    }
    long long worst = worst_of_dir(out, act_min, act_max), A = (1ll << (P - 1)) - 1;
    CHECK(worst >= 0 && worst <= A, "%s: worst case %lld > %lld", args, worst, A);
    CHECK(worst > A / 2, "%s: worst case %lld: the limit does not bind (the test is vacuous)", args, worst);
    int64_t ov = -1;
    long long viol = -1;
    float *lp = logits_of(out, P, &ov, &viol), *le = logits_of(out, 64, NULL, NULL), *lf = logits_of(out, 0, NULL, NULL);
    CHECK(viol == 0, "%s: simulator's checker: %lld violations", args, viol);
    CHECK(ov == 0, "%s: %lld tile sums overflowed", args, (long long)ov);
    if (lp && le && lf) {
        size_t nb = sizeof(float) * NT * 512;
        CHECK(memcmp(lp, le, nb) == 0, "%s: logits with the %d-bit accumulator differ from the exact ones", args, P);
        double md = 0, mx = 0;
        for (int i = 0; i < NT * 512; i++) md = fmax(md, fabs(le[i] - lf[i])), mx = fmax(mx, fabs(lf[i]));
        CHECK(md <= 1e-3 * mx, "%s: exact integer path vs float path: max diff %g (max |logit| %g)", args, md, mx);
    }
    free(lp), free(le), free(lf);
}

static void expect_error(const char *args, int code, const char *words) {
    char out[128], cmd[4096];
    snprintf(out, sizeof out, "%s/never", dir);
    snprintf(cmd, sizeof cmd, "%s quantize --model %s --out %s --format int4 %s --quiet 2>&1", PISO_BIN,
             test_data("models/stories260K/stories260K.bin"), out, args);
    test_expect_refusal(args, cmd, code, "error", words, out);
}

int main(void) {
    piso_set_quiet(1);
    test_data("models/stories260K/stories260K.bin");
    snprintf(dir, sizeof dir, "/tmp/piso_test_accum_model_%d", (int)getpid());
    mkdir(dir, 0755);
    char out[128], calib[1024];
    snprintf(out, sizeof out, "%s/rtn14", dir);
    test_axe_model(out, "--rounding rtn --scale absmax --accumulator-bits 14", 14);
    snprintf(out, sizeof out, "%s/gptq13", dir);
    snprintf(calib, sizeof calib,
             "--calib %s --nsamples 4 --seqlen 64 --rounding gptq --scale piso --accumulator-bits 13",
             test_data("data/tinystories/TinyStories-valid.small30KB.txt"));
    test_axe_model(out, calib, 13);
    /* asymmetric activations: unsigned codes 0..255, the zero point subtracted wide */
    act_format = "int8-asym", act_min = 0, act_max = 255;
    snprintf(out, sizeof out, "%s/asym15", dir);
    snprintf(calib, sizeof calib,
             "--calib %s --nsamples 4 --seqlen 64 --rounding gpfq --scale piso --calib-act-quant --accumulator-bits 15",
             test_data("data/tinystories/TinyStories-valid.small30KB.txt"));
    test_axe_model(out, calib, 15);
    act_format = "int8", act_min = -127, act_max = 127;
    /* unconstrained: the codes break a 12-bit limit and the wraparound changes the logits */
    snprintf(out, sizeof out, "%s/free", dir);
    if (quantize(out, "--rounding rtn --scale absmax") == 0) {
        long long worst = worst_of_dir(out, act_min, act_max);
        CHECK(worst > 2047, "unconstrained worst case %lld fits 12 bits: the test is vacuous", worst);
        int64_t ov = 0;
        long long viol = 0;
        float *lw = logits_of(out, 12, &ov, &viol), *le = logits_of(out, 64, NULL, NULL);
        CHECK(viol > 0, "the checker finds no violation in the unconstrained model");
        CHECK(ov > 0, "no tile sum overflowed 12 bits");
        if (lw && le) CHECK(memcmp(lw, le, sizeof(float) * NT * 512) != 0, "wraparound left the logits unchanged");
        free(lw), free(le);
    } else {
        CHECK(0, "unconstrained quantize failed");
    }
    expect_error("--rounding rtn --scale absmax --accumulator-bits 14", 2, "integer activations");
    expect_error("--rounding rtn --scale absmax --act-format e4m3 --accumulator-bits 14", 1, "integer activations");
    expect_error("--rounding rtn --scale absmax --act-format int8 --accumulator-bits 7", 1,
                 "too small for any non-zero weight of layer model.layers.0.self_attn.q_proj");
    expect_error("--rounding rtn --scale absmax --act-format int8 --accumulator-bits 16 --accumulator-tile 32", 1,
                 "does not divide the 172 inputs of layer model.layers.0.mlp.down_proj");
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
    return test_finish();
}
