/* llama2.c legacy checkpoints (export.py legacy_export): 7 int32 header
 * dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size (< 0: separate classifier), seq_len,
 * then fp32 arrays token_embedding [V, D], rms_att [L, D], wq [L, Hq, D], wk [L, Hkv, D],
 * wv [L, Hkv, D], wo [L, D, Hq], rms_ffn [L, D], w1 [L, F, D], w2 [L, D, F], w3 [L, F, D],
 * rms_final [D], freq_cis_real and freq_cis_imag [seq_len, hd/2] (unused), wcls [V, D] if separate.
 * The mapping is used in place (copy-on-write); RoPE uses adjacent pairs. */
#include "model/model_internal.h"
#include "piso/schema.h"

#include <stdlib.h>
#include <string.h>

int piso_load_llama2c(const char *path, struct piso_model **out) {
    struct piso_mmap map;
    if (piso_mmap_open(&map, path) != 0) return -1;
    int32_t h[7];
    if (map.size < sizeof h) {
        piso_mmap_close(&map);
        return piso_errorf("%s: %zu bytes: too short for a llama2.c checkpoint header (and not GGUF)", path, map.size);
    }
    memcpy(h, map.data, sizeof h);
    int text = 1; /* a text file given as a model: say so instead of decoding its letters as numbers */
    for (size_t i = 0; i < sizeof h && text; i++) {
        unsigned char ch = map.data[i];
        text = (ch >= 0x20 && ch < 0x7f) || ch == '\n' || ch == '\r' || ch == '\t' || ch >= 0x80;
    }
    if (text) {
        piso_mmap_close(&map);
        return piso_errorf("%s: starts with text, not a model: expected an HF model directory, a llama2.c checkpoint "
                           "(.bin) or a GGUF file", path);
    }
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
    /* the schema's tensors by llama2.c position; freq_cis_real/imag [seq_len, hd/2] each before wcls */
    const struct piso_tensor_info *order[PISO_TR_COUNT];
    int n_order = 0;
    for (int pos = 0; pos < PISO_TR_COUNT; pos++)
        for (int r = 0; r < PISO_TR_COUNT; r++)
            if (piso_schema[r].llama2c == pos && piso_schema_present(&c, &piso_schema[r])) order[n_order++] = &piso_schema[r];
    const uint64_t freq_cis = (uint64_t)c.max_seq_len * c.head_dim;
    uint64_t need = freq_cis;
    for (int i = 0; i < n_order; i++)
        need += (uint64_t)piso_schema_numel(&c, order[i]) * (order[i]->per_layer ? (uint64_t)c.n_layers : 1);
    if (need > (map.size - sizeof h) / sizeof(float)) {
        uint64_t have = (map.size - sizeof h) / sizeof(float);
        piso_mmap_close(&map);
        return piso_errorf("%s: llama2.c checkpoint truncated: the header (dim %d, hidden %d, %d layers, vocab %d, "
                           "seq_len %d) needs %llu floats, the file holds %llu",
                           path, c.dim, c.hidden_dim, c.n_layers, c.vocab_size, c.max_seq_len,
                           (unsigned long long)need, (unsigned long long)have);
    }
    if (need * sizeof(float) != map.size - sizeof h) { /* more than the header describes */
        size_t have = map.size - sizeof h;
        piso_mmap_close(&map);
        return piso_errorf("%s: llama2.c header (dim %d, hidden_dim %d, %d layers, vocab %d, seq_len %d) describes "
                           "%llu bytes of weights, but the file holds %zu: the header does not match the file",
                           path, c.dim, c.hidden_dim, c.n_layers, c.vocab_size, c.max_seq_len,
                           (unsigned long long)need * sizeof(float), have);
    }
    struct piso_model *m = piso_model_new(&c, path);
    if (!m) {
        piso_mmap_close(&map);
        return -1;
    }
    m->storage->map = map;
    float *p = (float *)(uintptr_t)(map.data + sizeof h); /* 28-byte header: 4-aligned floats */
    for (int i = 0; i < n_order; i++) {
        const struct piso_tensor_info *t = order[i];
        const uint64_t n = (uint64_t)piso_schema_numel(&c, t);
        if (t->role == PISO_TR_OUTPUT) p += freq_cis; /* freq_cis_real, freq_cis_imag: recomputed */
        for (int l = 0; l < (t->per_layer ? c.n_layers : 1); l++, p += n) *piso_schema_slot(m, t, l) = p;
    }
    if (shared) m->output = m->tok_embd;
    *out = m;
    return 0;
}
