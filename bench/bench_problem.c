/* bench_problem — writes a layer problem file for `piso layer` (examples, benchmarks):
 * `weight` [N, D] (Gaussian, or a real tensor from a safetensors model) and either `hessian`
 * [D, D] = XᵀX/T or (--inputs) `inputs` [T, D] = X̃ and `inputs_float` [T, D] = X, where
 * X = Z·M (Z Gaussian, M = I + Gaussian mixing / sqrt(D)) has D/512+1 outlier channels ×20 and
 * X̃ = X + 1% noise (a stand-in for the inputs of a partially quantized model).
 *
 * usage: bench_problem OUT.safetensors [N D T] [--inputs] [--from MODEL.safetensors TENSOR]
 * (with --from, N and D come from the tensor: pass 0 0 T to set T) */
#include "piso/linalg.h"
#include "piso/safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float nrand(void) {
    double u[2];
    for (int k = 0; k < 2; k++) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        u[k] = (double)(rng >> 11) / 9007199254740992.0;
    }
    return (float)(sqrt(-2 * log(u[0] * 0.999999 + 1e-7)) * cos(6.283185307179586 * u[1]));
}

int main(int argc, char **argv) {
    const char *out = NULL, *from = NULL, *tensor = NULL;
    int64_t N = 256, D = 256, T = 1024;
    int inputs = 0, npos = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--inputs")) inputs = 1;
        else if (!strcmp(argv[i], "--from") && i + 2 < argc) from = argv[++i], tensor = argv[++i];
        else if (!out) out = argv[i];
        else if (npos == 0) N = atoll(argv[i]), npos++;
        else if (npos == 1) D = atoll(argv[i]), npos++;
        else if (npos == 2) T = atoll(argv[i]), npos++;
    }
    if (!out || (!from && (N < 1 || D < 1)) || T < 1) {
        fprintf(stderr, "usage: bench_problem OUT.safetensors [N D T] [--inputs] [--from MODEL TENSOR]\n");
        return 2;
    }
    float *W = NULL;
    if (from) {
        struct piso_st_file f;
        int64_t shape[2];
        if (piso_st_open(&f, from) != 0 || !(W = piso_st_load_f32(&f, tensor, 2, shape))) {
            fprintf(stderr, "bench_problem: %s\n", piso_last_error());
            return 1;
        }
        N = shape[0];
        D = shape[1];
        piso_st_close(&f);
    } else {
        W = malloc(sizeof(float) * (size_t)(N * D));
        for (int64_t k = 0; k < N * D; k++) W[k] = 0.02f * nrand();
    }
    float *Z = malloc(sizeof(float) * (size_t)(T * D)), *M = malloc(sizeof(float) * (size_t)(D * D));
    float *X = malloc(sizeof(float) * (size_t)(T * D));
    for (int64_t k = 0; k < T * D; k++) Z[k] = nrand();
    for (int64_t k = 0; k < D * D; k++) M[k] = nrand() / sqrtf((float)D);
    for (int64_t i = 0; i < D; i++) M[i * D + i] += 1.0f;
    piso_la_sgemm(0, 0, T, D, D, 1.0f, Z, D, M, D, 0.0f, X, D);
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 3; j < D; j += 512) X[t * D + j] *= 20.0f;
    struct piso_st_writer *wr = piso_st_writer_new();
    int64_t sw[2] = {N, D}, sx[2] = {T, D}, sh[2] = {D, D};
    piso_st_writer_add(wr, "weight", PISO_DTYPE_F32, 2, sw, W);
    float *H = NULL;
    if (inputs) {
        for (int64_t k = 0; k < T * D; k++) Z[k] = X[k] + 0.01f * fabsf(X[k]) * nrand(); /* X̃ */
        piso_st_writer_add(wr, "inputs", PISO_DTYPE_F32, 2, sx, Z);
        piso_st_writer_add(wr, "inputs_float", PISO_DTYPE_F32, 2, sx, X);
    } else {
        H = malloc(sizeof(float) * (size_t)(D * D));
        piso_la_ssyrk_t(D, T, 1.0f / (float)T, X, D, 0.0f, H, D);
        for (int64_t i = 0; i < D; i++)
            for (int64_t j = i + 1; j < D; j++) H[j * D + i] = H[i * D + j];
        piso_st_writer_add(wr, "hessian", PISO_DTYPE_F32, 2, sh, H);
    }
    int rc = piso_st_writer_write(wr, out);
    if (rc) fprintf(stderr, "bench_problem: %s\n", piso_last_error());
    else printf("wrote %s: weight [%lld, %lld]%s, T = %lld\n", out, (long long)N, (long long)D,
                inputs ? ", inputs + inputs_float" : ", hessian", (long long)T);
    piso_st_writer_free(wr);
    free(W), free(Z), free(M), free(X), free(H);
    return rc ? 1 : 0;
}
