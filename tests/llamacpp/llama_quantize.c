/* llama_quantize — llama.cpp's own quantizer (llama_model_quantize, i.e. what llama-quantize runs)
 * from the prebuilt library of node-llama-cpp, loaded with dlopen: the reference for piso's
 * mixtures (tensor types) and for --scale llamacpp-ref (bytes). No imatrix (llama.cpp passes it as
 * a C++ map, which C cannot build); the same rules with an imatrix are compared per tensor against
 * libggml-base's quantize_* functions in test_ggml_lowbit.
 * usage: llama_quantize IN.gguf OUT.gguf FTYPE [--pure]   (FTYPE: LLAMA_FTYPE id, e.g. 10 = Q2_K)
 * The library is found under $PISO_LLAMACPP_PREFIX (default: SOURCE/.tools/llamacpp). */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* llama_model_quantize_params begins { int32 nthread; int32 ftype; int32 output_tensor_type;
 * int32 token_embedding_type; bool allow_requantize, quantize_output_tensor, only_copy, pure; ... }
 * (stable across versions); the rest is left as llama_model_quantize_default_params() sets it. */
struct params_buf {
    unsigned char b[1024]; /* larger than the real struct: returned through a hidden pointer */
};

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: llama_quantize IN.gguf OUT.gguf FTYPE [--pure]\n");
        return 2;
    }
    const char *pre = getenv("PISO_LLAMACPP_PREFIX");
    char path[2048];
    snprintf(path, sizeof path, "%s/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libllama.v0.5.0.so",
             pre && *pre ? pre : PISO_SOURCE_DIR "/.tools/llamacpp");
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "llama_quantize: cannot load %s: %s\n", path, dlerror());
        return 77;
    }
    struct params_buf (*defaults)(void) = (struct params_buf(*)(void))dlsym(h, "llama_model_quantize_default_params");
    uint32_t (*quantize)(const char *, const char *, const void *) =
        (uint32_t(*)(const char *, const char *, const void *))dlsym(h, "llama_model_quantize");
    void (*backend_init)(void) = (void (*)(void))dlsym(h, "llama_backend_init");
    if (!defaults || !quantize) {
        fprintf(stderr, "llama_quantize: symbols missing in %s\n", path);
        return 1;
    }
    if (backend_init) backend_init();
    struct params_buf p = defaults();
    int32_t nthread = 1, ftype = atoi(argv[3]);
    memcpy(p.b, &nthread, 4);
    memcpy(p.b + 4, &ftype, 4);
    if (argc > 4 && !strcmp(argv[4], "--pure")) p.b[19] = 1;
    const uint32_t rc = quantize(argv[1], argv[2], &p);
    if (rc) fprintf(stderr, "llama_quantize: llama_model_quantize failed (%u)\n", rc);
    return rc ? 1 : 0;
}
