/* llama2.c legacy checkpoints (export.py legacy_export): 7 int32 header
 * dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size (< 0: separate classifier), seq_len,
 * then fp32 arrays token_embedding [V, D], rms_att [L, D], wq [L, Hq, D], wk [L, Hkv, D],
 * wv [L, Hkv, D], wo [L, D, Hq], rms_ffn [L, D], w1 [L, F, D], w2 [L, D, F], w3 [L, F, D],
 * rms_final [D], freq_cis_real and freq_cis_imag [seq_len, hd/2] (unused), wcls [V, D] if separate.
 * The mapping is used in place (copy-on-write); RoPE uses adjacent pairs. */
#include "model/model_internal.h"

#include <stdlib.h>
#include <string.h>

int load_llama2c(const char *path, struct piso_model **out) {
    struct piso_mmap map;
    if (piso_mmap_open(&map, path) != 0) return -1;
    int32_t h[7];
    if (map.size < sizeof h) {
        piso_mmap_close(&map);
        return piso_errorf("%s: %zu bytes: too short for a llama2.c checkpoint header (and not GGUF)", path, map.size);
    }
    memcpy(h, map.data, sizeof h);
    static const char *fields[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
    for (int i = 0; i < 7; i++) {
        if (h[i] == 0 || (h[i] < 0 && i != 5) || h[i] < -(1 << 24)) {
            piso_mmap_close(&map);
            return piso_errorf("%s: llama2.c header field %s = %d is invalid (not a llama2.c checkpoint?)", path,
                               fields[i], h[i]);
        }
    }
    struct piso_config c = {0};
    snprintf(c.arch, sizeof c.arch, "llama");
    c.dim = h[0];
    c.hidden_dim = h[1];
    c.n_layers = h[2];
    c.n_heads = h[3];
    c.n_kv_heads = h[4];
    int shared = h[5] > 0;
    c.vocab_size = shared ? h[5] : -h[5];
    c.max_seq_len = h[6];
    c.head_dim = c.n_heads > 0 && c.dim % c.n_heads == 0 ? c.dim / c.n_heads : 0;
    c.norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.rope_style = PISO_ROPE_ADJACENT;
    c.tied_embeddings = shared;
    c.dtype = PISO_DTYPE_F32;
    c.source = PISO_SRC_LLAMA2C;
    if (c.head_dim == 0) {
        piso_mmap_close(&map);
        return piso_errorf("%s: llama2.c header: dim %d is not a multiple of n_heads %d", path, c.dim, c.n_heads);
    }
    if (piso_config_validate(&c, path) != 0) {
        piso_mmap_close(&map);
        return -1;
    }
    uint64_t D = (uint64_t)c.dim, F = (uint64_t)c.hidden_dim, L = (uint64_t)c.n_layers, V = (uint64_t)c.vocab_size;
    uint64_t Hq = (uint64_t)c.n_heads * c.head_dim, Hkv = (uint64_t)c.n_kv_heads * c.head_dim;
    uint64_t per_layer = D + Hq * D + 2 * Hkv * D + D * Hq + D + 3 * F * D;
    uint64_t need = V * D + L * per_layer + D + (uint64_t)c.max_seq_len * c.head_dim + (shared ? 0 : V * D);
    if (need > (map.size - sizeof h) / sizeof(float)) {
        uint64_t have = (map.size - sizeof h) / sizeof(float);
        piso_mmap_close(&map);
        return piso_errorf("%s: llama2.c checkpoint truncated: the header (dim %d, hidden %d, %d layers, vocab %d, "
                           "seq_len %d) needs %llu floats, the file holds %llu",
                           path, c.dim, c.hidden_dim, c.n_layers, c.vocab_size, c.max_seq_len,
                           (unsigned long long)need, (unsigned long long)have);
    }
    struct piso_model *m = model_new(&c, path);
    m->storage->map = map;
    float *p = (float *)(uintptr_t)(map.data + sizeof h); /* 28-byte header: 4-aligned floats */
#define TAKE(n) (p += (n), p - (n))
    m->tok_embd = TAKE(V * D);
    for (uint64_t l = 0; l < L; l++) m->layers[l].attn_norm = TAKE(D);
    for (uint64_t l = 0; l < L; l++) m->layers[l].wq = TAKE(Hq * D);
    for (uint64_t l = 0; l < L; l++) m->layers[l].wk = TAKE(Hkv * D);
    for (uint64_t l = 0; l < L; l++) m->layers[l].wv = TAKE(Hkv * D);
    for (uint64_t l = 0; l < L; l++) m->layers[l].wo = TAKE(D * Hq);
    for (uint64_t l = 0; l < L; l++) m->layers[l].ffn_norm = TAKE(D);
    for (uint64_t l = 0; l < L; l++) m->layers[l].w_gate = TAKE(F * D);
    for (uint64_t l = 0; l < L; l++) m->layers[l].w_down = TAKE(D * F);
    for (uint64_t l = 0; l < L; l++) m->layers[l].w_up = TAKE(F * D);
    m->out_norm = TAKE(D);
    p += (uint64_t)c.max_seq_len * c.head_dim; /* freq_cis_real, freq_cis_imag: recomputed */
    m->output = shared ? m->tok_embd : TAKE(V * D);
#undef TAKE
    *out = m;
    return 0;
}
