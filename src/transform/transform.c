/* The model transform driver: options → plan (calibrated permutations) → weights, and the
 * transform.json record that lets a reloaded model run its online rotations. */
#include "piso/json_out.h"
#include "transform_internal.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static const char *const rotate_names[] = {"none", "had", "block"};
static const char *const permute_names[] = {"none", "massdiff", "zigzag", "absmax", "random"};

static int from_name(const char *name, const char *const *names, int n) {
    for (int i = 0; name && i < n; i++)
        if (!strcmp(name, names[i])) return i;
    return -1;
}

int piso_rotate_mode_from_name(const char *name, enum piso_rotate_mode *out) {
    int i = from_name(name, rotate_names, 3);
    if (i < 0) return piso_errorf("unknown rotation '%s' (none, had, block)", name ? name : "");
    *out = (enum piso_rotate_mode)i;
    return 0;
}

int piso_permute_mode_from_name(const char *name, enum piso_permute_mode *out) {
    int i = from_name(name, permute_names, 5);
    if (i < 0) return piso_errorf("unknown permutation '%s' (none, massdiff, zigzag, absmax, random)", name ? name : "");
    *out = (enum piso_permute_mode)i;
    return 0;
}

const char *piso_rotate_mode_name(enum piso_rotate_mode m) { return (unsigned)m < 3 ? rotate_names[m] : "?"; }
const char *piso_permute_mode_name(enum piso_permute_mode m) { return (unsigned)m < 5 ? permute_names[m] : "?"; }

void piso_transform_plan_free(struct piso_transform_plan *p) {
    if (!p) return;
    free(p->resid_perm);
    if (p->ffn_perm)
        for (int l = 0; p->ffn_perm[l]; l++) free(p->ffn_perm[l]);
    free(p->ffn_perm);
    memset(p, 0, sizeof *p);
}

/* Checks the options against the model's sizes and fills the plan's blocks. */
static int plan_blocks(const struct piso_model *m, const struct piso_transform_opts *o, struct piso_transform_plan *p) {
    const struct piso_config *c = &m->cfg;
    int D = c->dim, F = c->hidden_dim;
    memset(p, 0, sizeof *p);
    p->opts = *o;
    if (o->rotate == PISO_ROTATE_NONE) {
        if (o->online) p->opts.online = 0; /* nothing to put online */
        return 0;
    }
    if (o->rotate == PISO_ROTATE_BLOCK) {
        if (o->block <= 0) return piso_errorf("--rotate block needs --rotate-block B");
        if (D % o->block)
            return piso_errorf("--rotate-block %d does not divide the hidden size %d of %s", o->block, D, m->path);
        if (!piso_hadamard_supported(o->block))
            return piso_errorf("--rotate-block %d: no Hadamard matrix of that size (2^k * K, K in 1, 12, 20, 28, 36, "
                               "52, 60, 108, 140, 152, 156, 172)",
                               o->block);
        p->resid_block = o->block;
    } else {
        if (!piso_hadamard_supported(D))
            return piso_errorf("--rotate had: no Hadamard matrix of the hidden size %d of %s (use --rotate block)", D,
                               m->path);
        p->resid_block = D;
    }
    if (!piso_hadamard_supported(c->head_dim))
        return piso_errorf("--rotate: no Hadamard matrix of the head size %d of %s", c->head_dim, m->path);
    p->head_block = c->head_dim;
    if (p->opts.online) {
        int down = o->rotate == PISO_ROTATE_BLOCK && F % o->block == 0 ? o->block : F;
        if (!piso_hadamard_supported(down))
            return piso_errorf("--rotate: no Hadamard matrix of the FFN size %d of %s for the online down_proj rotation "
                               "(leave the online rotations out)",
                               F, m->path);
        if (!piso_hadamard_supported(c->n_heads))
            return piso_errorf("--rotate: no Hadamard matrix of size n_heads = %d of %s for the online o_proj rotation "
                               "(leave the online rotations out)",
                               c->n_heads, m->path);
    }
    return 0;
}

/* The online down_proj block of a plan: the rotation block when it divides F, else F (full). */
static int down_block(const struct piso_model *m, const struct piso_transform_plan *p) {
    if (!p->opts.online || !p->resid_block) return 0;
    int F = m->cfg.hidden_dim, b = p->opts.rotate == PISO_ROTATE_BLOCK ? p->opts.block : F;
    return F % b == 0 ? b : F;
}

int piso_transform_apply_plan(struct piso_model *m, const struct piso_transform_plan *p) {
    int untied = 0;
    if (m->online.down_block || m->online.o_heads)
        return piso_errorf("%s: the model already carries online rotations (transform it once)", m->path);
    if (p->resid_block == 0 && !p->resid_perm && !p->ffn_perm) return 0; /* nothing to do */
    if (piso_tr_fold_norms(m, &untied)) return -1;
    if (p->resid_perm && piso_tr_permute_residual(m, p->resid_perm)) return -1;
    if (p->ffn_perm)
        for (int l = 0; l < m->cfg.n_layers; l++)
            if (piso_tr_permute_ffn(m, l, p->ffn_perm[l])) return -1;
    if (p->resid_block && piso_tr_rotate_residual(m, p->resid_block)) return -1;
    if (p->head_block && piso_tr_rotate_heads_vo(m)) return -1;
    int db = down_block(m, p), oh = p->opts.online && p->resid_block ? m->cfg.n_heads : 0;
    if (piso_tr_online_weights(m, db, oh)) return -1;
    m->online.down_block = db;
    m->online.o_heads = oh;
    return 0;
}

/* Calibrated permutations: the residual stream (one P shared by every layer, from the inputs of
 * q/k/v and gate/up of all layers), and per layer the FFN hidden channels (from down_proj's input). */
static int plan_permutations(const struct piso_model *m, const int *tokens, int nwin, int seqlen,
                             struct piso_transform_plan *p) {
    const struct piso_config *c = &m->cfg;
    int D = c->dim, F = c->hidden_dim, L = c->n_layers;
    enum piso_permute_mode mode = p->opts.permute;
    if (mode != PISO_PERMUTE_RANDOM && (!tokens || nwin <= 0 || seqlen <= 0))
        return piso_errorf("--permute %s needs calibration text (--calib)", piso_permute_mode_name(mode));
    struct piso_tr_acts a = {0};
    /* at most 256 MiB of activations */
    int64_t per_token = (int64_t)2 * L * D + (int64_t)L * F, max_tokens = ((int64_t)64 << 20) / per_token;
    if (max_tokens > 8192) max_tokens = 8192;
    if (mode != PISO_PERMUTE_RANDOM && piso_tr_collect(m, tokens, nwin, seqlen, max_tokens, &a)) return -1;
    int rb = p->resid_block ? p->resid_block : D, fb = down_block(m, p) ? down_block(m, p) : F;
    p->resid_perm = malloc((size_t)D * sizeof *p->resid_perm);
    p->ffn_perm = calloc((size_t)L + 1, sizeof *p->ffn_perm); /* NULL-terminated */
    int rc = !p->resid_perm || !p->ffn_perm ? piso_errorf("permutation: out of memory") : 0;
    if (rc == 0)
        rc = piso_permutation(mode, a.resid, 2 * L * a.ntok, D, rb, p->opts.seed, p->resid_perm);
    for (int l = 0; l < L && rc == 0; l++) {
        p->ffn_perm[l] = malloc((size_t)F * sizeof **p->ffn_perm);
        if (!p->ffn_perm[l]) rc = piso_errorf("permutation: out of memory");
        if (rc == 0)
            rc = piso_permutation(mode, a.ffn ? a.ffn + (size_t)l * a.ntok * F : NULL, a.ntok, F, fb,
                                  p->opts.seed + 0x9e37u * (uint64_t)(l + 1), p->ffn_perm[l]);
    }
    piso_tr_acts_free(&a);
    return rc;
}

int piso_transform_model(struct piso_model *m, const struct piso_transform_opts *o, const int *tokens, int nwin,
                         int seqlen, struct piso_transform_plan *plan) {
    struct piso_transform_plan p;
    if (plan_blocks(m, o, &p)) return -1;
    int rc = 0, untied = 0, was_tied = m->cfg.tied_embeddings;
    if (o->permute != PISO_PERMUTE_NONE) {
        /* fold first so that the permutation sees exactly the inputs the weights will get */
        rc = piso_tr_fold_norms(m, &untied);
        if (rc == 0) rc = plan_permutations(m, tokens, nwin, seqlen, &p);
    }
    if (rc == 0) rc = piso_transform_apply_plan(m, &p);
    p.untied = was_tied && !m->cfg.tied_embeddings;
    if (rc == 0 && plan) {
        *plan = p;
    } else {
        piso_transform_plan_free(&p);
    }
    return rc;
}

char *piso_transform_json(const struct piso_model *m, const struct piso_transform_plan *p) {
    struct piso_json w;
    piso_json_begin(&w, PISO_JSON_PRETTY);
    piso_json_string(&w, "rotate", piso_rotate_mode_name(p->opts.rotate));
    if (p->opts.rotate == PISO_ROTATE_BLOCK) piso_json_int(&w, "rotate_block", p->opts.block);
    piso_json_string(&w, "permute", piso_permute_mode_name(p->opts.permute));
    piso_json_string(&w, "norms", "RMSNorm weights folded into q/k/v, gate/up and the output head (all ones now)");
    piso_json_object_begin(&w, "fused");
    piso_json_int(&w, "residual_block", p->resid_block);
    piso_json_int(&w, "v_o_per_head_block", p->head_block);
    piso_json_bool(&w, "residual_permutation", p->resid_perm != NULL);
    piso_json_bool(&w, "ffn_permutation", p->ffn_perm != NULL);
    piso_json_object_end(&w);
    piso_json_object_begin(&w, "online");
    if (m->online.down_block) {
        piso_json_object_begin(&w, "down_proj_input");
        piso_json_int(&w, "hadamard_block", m->online.down_block);
        piso_json_object_end(&w);
    }
    if (m->online.o_heads) {
        piso_json_object_begin(&w, "o_proj_input");
        piso_json_int(&w, "hadamard_across_heads", m->online.o_heads);
        piso_json_object_end(&w);
    }
    piso_json_object_end(&w);
    piso_json_string(&w, "online_meaning",
                     "the runtime multiplies these linear inputs by a normalized Hadamard matrix before the layer: "
                     "down_proj input in blocks of hadamard_block, o_proj input across the heads (H_nh x I_hd)");
    return piso_json_finish(&w);
}

int piso_online_load(struct piso_model *m, const char *dir) {
    char *path = piso_path_join(dir, "transform.json"), *text = NULL;
    if (!path) return piso_errorf("%s: out of memory", dir);
    if (!piso_file_exists(path)) {
        free(path);
        return 0;
    }
    int rc = piso_read_file_max(path, &text, NULL, 1 << 20);
    cJSON *j = rc == 0 ? cJSON_Parse(text) : NULL;
    free(text);
    if (rc == 0 && !cJSON_IsObject(j)) rc = piso_errorf("%s: not a JSON object", path);
    const cJSON *on = rc == 0 ? cJSON_GetObjectItemCaseSensitive(j, "online") : NULL;
    const cJSON *down = cJSON_GetObjectItemCaseSensitive(on, "down_proj_input");
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(on, "o_proj_input");
    const cJSON *db = cJSON_GetObjectItemCaseSensitive(down, "hadamard_block");
    const cJSON *oh = cJSON_GetObjectItemCaseSensitive(o, "hadamard_across_heads");
    const struct piso_config *c = &m->cfg;
    if (rc == 0 && down) {
        int b = cJSON_IsNumber(db) ? db->valueint : -1;
        if (b <= 0 || c->hidden_dim % b || !piso_hadamard_supported(b))
            rc = piso_errorf("%s: online.down_proj_input.hadamard_block must be a Hadamard size dividing %d", path,
                             c->hidden_dim);
        else
            m->online.down_block = b;
    }
    if (rc == 0 && o) {
        int h = cJSON_IsNumber(oh) ? oh->valueint : -1;
        if (h != c->n_heads || !piso_hadamard_supported(h))
            rc = piso_errorf("%s: online.o_proj_input.hadamard_across_heads must equal n_heads = %d (a Hadamard size)",
                             path, c->n_heads);
        else
            m->online.o_heads = h;
    }
    cJSON_Delete(j);
    free(path);
    return rc;
}
