/* Model lifetime: format detection, config validation, in-memory allocation, freeing. */
#include "model/model_internal.h"
#include "piso/schema.h"
#include "piso/transform.h"

#include <stdlib.h>
#include <dirent.h>
#include <string.h>

struct piso_model *piso_model_new(const struct piso_config *cfg, const char *path) {
    struct piso_model *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->cfg = *cfg;
    m->path = strdup(path ? path : "(memory)");
    m->storage = calloc(1, sizeof *m->storage);
    m->layers = calloc((size_t)(cfg->n_layers > 0 ? cfg->n_layers : 1), sizeof *m->layers);
    if (!m->path || !m->storage || !m->layers) {
        piso_model_free(m);
        piso_errorf("%s: out of memory for the model", path ? path : "model");
        return NULL;
    }
    return m;
}

float *piso_model_own(struct piso_model *m, size_t n) {
    struct piso_model_storage *s = m->storage;
    if (s->n_owned == s->cap_owned) {
        s->cap_owned = s->cap_owned ? 2 * s->cap_owned : 64;
        s->owned = realloc(s->owned, (size_t)s->cap_owned * sizeof *s->owned);
    }
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) return NULL;
    s->owned[s->n_owned++] = p;
    return p;
}

void piso_model_free(struct piso_model *m) {
    if (!m) return;
    struct piso_model_storage *s = m->storage;
    if (s) {
        for (int i = 0; i < s->n_st; i++) piso_st_close(&s->st[i]);
        free(s->st);
        if (s->gguf) piso_gguf_close(s->gguf);
        free(s->gguf);
        piso_mmap_close(&s->map);
        for (int i = 0; i < s->n_owned; i++) free(s->owned[i]);
        free(s->owned);
        for (int b = 0; s->acquired && b < m->cfg.n_layers; b++)
            if (s->acquired[b]) piso_model_block_release(m, b);
        free(s->acquired);
        free(s);
    }
    if (m->tok) piso_tokenizer_free(m->tok);
    free(m->layers);
    free(m->llamacpp_weight_types);
    free(m->path);
    free(m);
}

int piso_config_validate(const struct piso_config *c, const char *what) {
#define NEED(cond, ...)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            piso_errorf(__VA_ARGS__);                                                              \
            return piso_error_context("%s", what);                                                 \
        }                                                                                          \
    } while (0)
    NEED(c->dim > 0 && c->hidden_dim > 0 && c->n_layers > 0 && c->vocab_size > 0,
         "sizes must be positive (dim %d, hidden_dim %d, n_layers %d, vocab_size %d)", c->dim, c->hidden_dim,
         c->n_layers, c->vocab_size);
    NEED(c->n_heads > 0 && c->n_kv_heads > 0, "n_heads %d and n_kv_heads %d must be positive", c->n_heads,
         c->n_kv_heads);
    NEED(c->n_heads % c->n_kv_heads == 0, "n_heads %d is not a multiple of n_kv_heads %d", c->n_heads, c->n_kv_heads);
    NEED(c->head_dim > 0 && c->head_dim % 2 == 0, "head_dim %d must be positive and even (RoPE pairs)", c->head_dim);
    NEED(c->dim < (1 << 20) && c->hidden_dim < (1 << 22) && c->n_layers < 4096 && c->vocab_size < (1 << 24) &&
             c->n_heads < 4096 && c->head_dim < 8192,
         "implausible sizes (dim %d, hidden_dim %d, n_layers %d, vocab %d, heads %d, head_dim %d)", c->dim,
         c->hidden_dim, c->n_layers, c->vocab_size, c->n_heads, c->head_dim);
    NEED(c->norm_eps > 0 && c->norm_eps < 1, "norm_eps %g out of range", (double)c->norm_eps);
    NEED(c->rope_theta > 0, "rope_theta %g must be positive", (double)c->rope_theta);
    if (c->rope_llama3)
        NEED(c->rope_factor > 0 && c->rope_low_freq_factor > 0 && c->rope_high_freq_factor > c->rope_low_freq_factor &&
                 c->rope_orig_ctx > 0,
             "rope_scaling (llama3): factor %g, low_freq_factor %g, high_freq_factor %g, "
             "original_max_position_embeddings %d are inconsistent",
             (double)c->rope_factor, (double)c->rope_low_freq_factor, (double)c->rope_high_freq_factor, c->rope_orig_ctx);
    return 0;
#undef NEED
}

int piso_model_alloc(const struct piso_config *cfg, struct piso_model **out) {
    *out = NULL;
    if (piso_config_validate(cfg, "model config") != 0) return -1;
    struct piso_model *m = piso_model_new(cfg, NULL);
    if (!m) return -1;
    for (int s = 0, l; s < piso_schema_steps(cfg); s++) {
        const struct piso_tensor_info *t = piso_schema_step(cfg, s, &l);
        if (piso_schema_present(cfg, t)) *piso_schema_slot(m, t, l) = piso_model_own(m, (size_t)piso_schema_numel(cfg, t));
    }
    if (cfg->tied_embeddings) m->output = m->tok_embd;
    for (int i = 0; i < m->storage->n_owned; i++)
        if (!m->storage->owned[i]) {
            piso_model_free(m);
            return piso_errorf("model config: out of memory allocating the weights");
        }
    *out = m;
    return 0;
}

int piso_model_make_writable(struct piso_model *m) {
    /* Every weight already lives in an owned buffer or a MAP_PRIVATE | PROT_WRITE mapping
     * (copy-on-write, see piso_mmap_open), so writes stay private to this process. */
    if (!m || (!m->tok_embd && !piso_model_is_lazy(m)) || !m->layers) return piso_errorf("make_writable: model is not loaded");
    return 0;
}

int piso_model_untie(struct piso_model *m) {
    if (!m->cfg.tied_embeddings && m->output != m->tok_embd) return 0;
    size_t n = (size_t)m->cfg.vocab_size * m->cfg.dim;
    float *out = piso_model_own(m, n);
    if (!out) return piso_errorf("%s: out of memory untying the output head", m->path);
    memcpy(out, m->tok_embd, n * sizeof *out);
    m->output = out;
    m->cfg.tied_embeddings = 0;
    return 0;
}

/* Loads the tokenizer for a llama2.c checkpoint: tok<vocab>.bin beside it (tok512.bin for
 * stories260K), else tokenizer.bin / tokenizer.json beside it. */
static int llama2c_tokenizer(struct piso_model *m, struct piso_tokenizer **out) {
    char *dir = strdup(m->path), *slash = dir ? strrchr(dir, '/') : NULL;
    if (!dir) return piso_errorf("%s: out of memory", m->path);
    if (slash) *slash = 0;
    else strcpy(dir, ".");
    char name[32];
    snprintf(name, sizeof name, "tok%d.bin", m->cfg.vocab_size);
    const char *names[] = {name, "tokenizer.bin", "tokenizer.json"};
    int rc = 0;
    for (int i = 0; i < 3 && !*out && rc == 0; i++) {
        char *p = piso_path_join(dir, names[i]);
        if (piso_file_exists(p)) rc = piso_tokenizer_load(p, out);
        free(p);
    }
    free(dir);
    return rc;
}

/* Picks the tokenizer: the explicit path, else whatever the model carries or has beside it
 * (none is fine: tok stays NULL). */
static int attach_tokenizer(struct piso_model *m, const char *tokenizer_path) {
    int rc = 0;
    if (tokenizer_path) {
        rc = piso_tokenizer_load(tokenizer_path, &m->tok);
    } else if (m->cfg.source == PISO_SRC_GGUF) {
        if (piso_gguf_find(m->storage->gguf, "tokenizer.ggml.tokens"))
            rc = piso_tokenizer_from_gguf(m->storage->gguf, &m->tok);
    } else if (m->cfg.source == PISO_SRC_HF) {
        const char *names[] = {"tokenizer.json", "tokenizer.bin"};
        for (int i = 0; i < 2 && !m->tok && rc == 0; i++) {
            char *p = piso_path_join(m->path, names[i]);
            if (piso_file_exists(p)) rc = piso_tokenizer_load(p, &m->tok);
            free(p);
        }
    } else {
        rc = llama2c_tokenizer(m, &m->tok);
    }
    if (rc != 0) return piso_error_context("%s: tokenizer", m->path);
    if (m->tok) {
        int nv = piso_tokenizer_vocab(m->tok)->n_vocab;
        if (nv > m->cfg.vocab_size)
            return piso_errorf("%s: the tokenizer has %d tokens but the model's vocabulary has %d", m->path, nv,
                               m->cfg.vocab_size);
    }
    return 0;
}

/* Refuses weights with NaN/Inf, naming the tensor and the index: a poisoned checkpoint must not
 * quietly turn every later number into NaN. */
static int check_tensor_finite(const struct piso_model *m, const float *p, size_t n, const char *name, int layer) {
    if (!p) return 0;
    int64_t bad = piso_find_nonfinite(p, n);
    if (bad < 0) return 0;
    if (layer < 0) return piso_errorf("%s: %s has a non-finite value at index %lld", m->path, name, (long long)bad);
    return piso_errorf("%s: layer %d %s has a non-finite value at index %lld", m->path, layer, name, (long long)bad);
}

static int check_finite(const struct piso_model *m) {
    const struct piso_config *c = &m->cfg;
    for (int s = 0, l; s < piso_schema_steps(c); s++) {
        const struct piso_tensor_info *t = piso_schema_step(c, s, &l);
        if (check_tensor_finite(m, piso_schema_data(m, t, l), (size_t)piso_schema_numel(c, t), t->label, l)) return -1;
    }
    return 0;
}

/* A directory without config.json holding one llama2.c checkpoint (*.bin other than the
 * tokenizer) is taken as that checkpoint. Returns a malloc'd path or NULL. */
static char *llama2c_in_dir(const char *dir) {
    char *cfg = piso_path_join(dir, "config.json");
    int has_cfg = piso_file_exists(cfg);
    free(cfg);
    if (has_cfg) return NULL;
    DIR *d = opendir(dir);
    if (!d) return NULL;
    char *found = NULL;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n < 5 || strcmp(e->d_name + n - 4, ".bin") != 0) continue;
        if (!strncmp(e->d_name, "tok", 3)) continue; /* tokenizer.bin, tok512.bin */
        count++;
        free(found);
        found = piso_path_join(dir, e->d_name);
    }
    closedir(d);
    if (count != 1) {
        free(found);
        return NULL;
    }
    return found;
}

/* A piso output directory records the activation quantization its model was quantized for
 * (quantization.json "activations"); the runtime applies it again. */
static int recorded_act_quant(struct piso_model *m) {
    if (m->cfg.source != PISO_SRC_HF) return 0;
    char *p = piso_path_join(m->path, "quantization.json");
    int rc = p && piso_file_exists(p) ? piso_act_quant_load_json(p, &m->cfg, &m->act) : 0;
    free(p);
    return rc;
}

static int model_load(const char *path, const char *tokenizer_path, int lazy, struct piso_model **out) {
    *out = NULL;
    int rc;
    char *ckpt = piso_is_dir(path) ? llama2c_in_dir(path) : NULL;
    if (ckpt && lazy) {
        free(ckpt);
        return piso_errorf("%s: streaming reads Hugging Face directories only (this is a llama2.c checkpoint)", path);
    }
    if (ckpt) {
        rc = piso_model_load(ckpt, tokenizer_path, out);
        free(ckpt);
        return rc;
    }
    if (lazy && !piso_is_dir(path))
        return piso_errorf("%s: streaming reads Hugging Face directories only", path);
    if (piso_is_dir(path)) {
        rc = piso_load_hf(path, lazy, out);
    } else {
        FILE *f = fopen(path, "rb");
        if (!f) return piso_errorf("%s: cannot open (expected an HF model directory, a llama2.c .bin or a .gguf)", path);
        char magic[4] = {0};
        size_t got = fread(magic, 1, 4, f);
        fclose(f);
        if (got == 4 && memcmp(magic, "GGUF", 4) == 0) {
            rc = piso_load_gguf(path, out);
        } else {
            size_t n = strlen(path);
            if (n >= 12 && strcmp(path + n - 12, ".safetensors") == 0)
                return piso_errorf("%s: pass the model directory (with config.json), not the .safetensors file", path);
            rc = piso_load_llama2c(path, out);
        }
    }
    if (rc != 0) return -1;
    /* an HF directory written by a transform may carry online rotations (transform.json) */
    if (check_finite(*out) != 0 || ((*out)->storage->lazy && piso_lazy_check_globals(*out) != 0) ||
        attach_tokenizer(*out, tokenizer_path) != 0 || recorded_act_quant(*out) != 0 ||
        ((*out)->cfg.source == PISO_SRC_HF && piso_online_load(*out, path) != 0)) {
        piso_model_free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

int piso_model_load(const char *path, const char *tokenizer_path, struct piso_model **out) {
    return model_load(path, tokenizer_path, 0, out);
}

int piso_model_load_lazy(const char *path, const char *tokenizer_path, struct piso_model **out) {
    return model_load(path, tokenizer_path, 1, out);
}
