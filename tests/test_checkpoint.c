/* GPTQ and compressed-tensors checkpoints end to end on stories260K: quantize (GPTQ/RTN, sym and
 * asym, 3 and 4 bits, act order with contiguous groups and with groups through g_idx), write the checkpoint, load it back, and compare every tensor bit for bit with
 * the quantized model in memory (a second code path: the pipeline's own dequantized weights). Then
 * malformed packed tensors (dtype, shape, missing) and options the formats cannot hold: clear errors
 * naming the tensor or option, nothing written. (The independent numpy unpacker is
 * tests/ckpt_unpack.py, ctest test_ckpt_python.) */
#include "harness.h"
#include "piso/checkpoint.h"
#include "piso/pipeline.h"
#include "piso/safetensors.h"

#include <unistd.h>

static char tmpdir[256];
static const char *calib, *model_bin;

static int compare_models(const struct piso_model *a, const struct piso_model *b, const char *what) {
    const struct piso_config *c = &a->cfg;
    int bad = 0, tensors = 0;
    for (int s = 0, l; s < piso_schema_steps(c); s++) {
        const struct piso_tensor_info *t = piso_schema_step(c, s, &l);
        const float *x = piso_schema_data(a, t, l), *y = piso_schema_data(b, t, l);
        if (!x && !y) continue;
        if (!x || !y) {
            bad++;
            continue;
        }
        const int64_t n = piso_schema_numel(c, t);
        tensors++;
        if (memcmp(x, y, sizeof(float) * (size_t)n) != 0) {
            int64_t k = 0;
            while (k < n && x[k] == y[k]) k++;
            fprintf(stderr, "%s: tensor role %d layer %d differs at %lld: %.9g vs %.9g\n", what, (int)t->role, l,
                    (long long)k, (double)x[k], (double)y[k]);
            bad++;
        }
    }
    CHECK(bad == 0 && tensors > 0, "%s: %d of %d tensors differ after reload", what, bad, tensors);
    return bad;
}

static int has_tensor(const char *dir, const char *name) {
    char p[512];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    struct piso_st_file f;
    if (piso_st_open(&f, p)) return 0;
    int found = piso_st_find(&f, name) != NULL;
    piso_st_close(&f);
    return found;
}

/* Copies dir to out with model.safetensors rewritten: tensor `name` dropped (mode 0), its dtype
 * relabelled F32 (mode 1, same bytes), its first dimension halved (mode 2), or, for an I64 tensor,
 * its first value changed (mode 3). */
static int corrupt(const char *dir, const char *out, const char *name, int mode) {
    char cmd[2048], p[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s' && rm '%s/model.safetensors'", out, dir, out, out);
    if (system(cmd) != 0) return -1;
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    struct piso_st_file f;
    if (piso_st_open(&f, p)) return -1;
    struct piso_st_writer *w = piso_st_writer_new();
    int64_t changed = 0;
    for (int i = 0; i < f.n_tensors; i++) {
        const struct piso_st_tensor *t = &f.tensors[i];
        int64_t shape[PISO_ST_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        if (!strcmp(t->name, name)) {
            if (mode == 0) continue;
            if (mode == 1) {
                piso_st_writer_add_copy(w, t->name, PISO_DTYPE_F32, t->ndim, shape, t->data);
                continue;
            }
            if (mode == 2) {
                shape[0] /= 2;
                piso_st_writer_add_copy(w, t->name, t->dtype, t->ndim, shape, t->data);
                continue;
            }
            memcpy(&changed, t->data, 8);
            changed += 1;
            int64_t v[2];
            memcpy(v, t->data, 16);
            v[0] = changed;
            piso_st_writer_add_copy(w, t->name, t->dtype, t->ndim, shape, v);
            continue;
        }
        piso_st_writer_add_copy(w, t->name, t->dtype, t->ndim, shape, t->data);
    }
    snprintf(p, sizeof p, "%s/model.safetensors", out);
    int rc = piso_st_writer_write(w, p);
    piso_st_writer_free(w);
    piso_st_close(&f);
    return rc;
}

static void expect_load_error(const char *dir, const char *name, int mode, const char *needle) {
    char out[400];
    snprintf(out, sizeof out, "%s/bad", tmpdir);
    if (corrupt(dir, out, name, mode)) {
        CHECK(0, "could not build the corrupted copy for %s", name);
        return;
    }
    struct piso_model *m = NULL;
    int rc = piso_model_load(out, NULL, &m);
    CHECK(rc != 0, "%s (mode %d): a malformed checkpoint loaded", name, mode);
    if (rc) CHECK(strstr(piso_last_error(), needle) != NULL, "%s (mode %d): message '%s' lacks '%s'", name, mode,
                  piso_last_error(), needle);
    piso_model_free(m);
}

static void roundtrip(enum piso_ckpt_format f, const char *format, int group, int asym, enum piso_rounding rnd,
                      enum piso_scale_method method, int check_errors, int desc_act) {
    struct piso_model *mq = NULL, *mf = NULL, *back = NULL;
    struct piso_calib cal;
    struct piso_pipeline_result res;
    memset(&cal, 0, sizeof cal), memset(&res, 0, sizeof res);
    char what[160], dir[400];
    snprintf(what, sizeof what, "%s %s group %d %s %s%s", piso_ckpt_format_name(f), format, group,
             asym ? "asym" : "sym", piso_rounding_name(rnd), desc_act ? " desc_act" : "");
    snprintf(dir, sizeof dir, "%s/ckpt", tmpdir);
    struct piso_pipeline_opts po;
    memset(&po, 0, sizeof po);
    piso_ec_opts_default(&po.ec);
    piso_grid_init(&po.ec.q.grid, format, 0);
    po.ec.q.group = group, po.ec.q.method = method, po.ec.q.allow_negative = 1;
    po.ec.q.asym = asym, po.ec.q.zero_min = f == PISO_CKPT_GPTQ, po.ec.q.scale_fp16 = 1;
    po.ec.interleave = group ? PISO_INTERLEAVE_GROUP : PISO_INTERLEAVE_LAYER;
    po.ec.act_order = 1, po.ec.desc_act_groups = desc_act;
    po.rounding = rnd;
    po.objective = rnd == PISO_ROUND_GPTQ ? PISO_OBJ_XQ_XQ : PISO_OBJ_X_XQ;
    if (piso_model_load(model_bin, NULL, &mq) || piso_model_load(model_bin, NULL, &mf) ||
        piso_model_make_writable(mq) || piso_calib_load(mq->tok, calib, 2, 64, mq->cfg.max_seq_len, 1, &cal) ||
        piso_quantize_model(mq, mf, &cal, &po, &res)) {
        CHECK(0, "%s: quantize: %s", what, piso_last_error());
        goto done;
    }
    struct piso_hf_export_opts eo = {.res = &res, .ckpt = f, .bits = po.ec.q.grid.bits, .group = group, .asym = asym, .act_order = 1};
    if (piso_hf_export(mq, dir, &eo)) {
        CHECK(0, "%s: export: %s", what, piso_last_error());
        goto done;
    }
    const char *packed = f == PISO_CKPT_GPTQ ? "model.layers.0.self_attn.q_proj.qweight"
                                             : "model.layers.0.self_attn.q_proj.weight_packed";
    CHECK(has_tensor(dir, packed), "%s: no %s", what, packed);
    CHECK(!has_tensor(dir, "model.layers.0.self_attn.q_proj.weight"), "%s: q_proj also dense", what);
    if (desc_act) { /* groups follow the act order: some layer's g_idx is not i / group */
        int permuted = 0, with_gidx = 0;
        for (int i = 0; i < res.n_layers; i++) {
            const struct piso_layer_report *r = &res.layers[i];
            if (!r->g_idx) continue;
            with_gidx++;
            for (int64_t c = 0; c < r->D; c++) permuted |= r->g_idx[c] != (int32_t)(c / group);
        }
        CHECK(with_gidx > 0 && permuted, "%s: %d layers with g_idx, none permuted", what, with_gidx);
        CHECK(has_tensor(dir, f == PISO_CKPT_GPTQ ? "model.layers.0.self_attn.q_proj.g_idx"
                                                  : "model.layers.0.self_attn.q_proj.weight_g_idx"),
              "%s: no g_idx written", what);
    }
    if (piso_model_load(dir, NULL, &back)) {
        CHECK(0, "%s: reload: %s", what, piso_last_error());
        goto done;
    }
    compare_models(mq, back, what);
    if (check_errors && f == PISO_CKPT_GPTQ) {
        expect_load_error(dir, "model.layers.0.self_attn.q_proj.qweight", 1, "model.layers.0.self_attn.q_proj.qweight");
        expect_load_error(dir, "model.layers.1.self_attn.k_proj.qzeros", 0, "model.layers.1.self_attn.k_proj.qzeros");
        expect_load_error(dir, "model.layers.2.self_attn.v_proj.scales", 2, "model.layers.2.self_attn.v_proj.scales");
        expect_load_error(dir, "model.layers.0.self_attn.o_proj.g_idx", 2, "model.layers.0.self_attn.o_proj.g_idx");
    }
    if (check_errors && f == PISO_CKPT_COMPRESSED) {
        expect_load_error(dir, "model.layers.0.mlp.up_proj.weight_shape", 3, "model.layers.0.mlp.up_proj.weight_shape");
        expect_load_error(dir, "model.layers.1.mlp.up_proj.weight_packed", 2, "model.layers.1.mlp.up_proj.weight_packed");
        if (asym)
            expect_load_error(dir, "model.layers.3.mlp.gate_proj.weight_zero_point", 1,
                              "model.layers.3.mlp.gate_proj.weight_zero_point");
    }
done:
    piso_model_free(back), piso_model_free(mq), piso_model_free(mf);
    piso_calib_free(&cal);
    piso_pipeline_result_free(&res);
}

static void cli_errors(void) {
    struct {
        const char *args, *needle;
    } cases[] = {
        {"--format e4m3 --out-format gptq", "e4m3"},
        {"--format mxfp4 --out-format compressed-tensors", "mxfp4"},
        {"--format int5 --out-format gptq", "5-bit"},
        {"--format int4 --group 16 --out-format compressed-tensors", "--group 16"},
        {"--format e2m1 --asym", "--asym"},
        {"--format int4 --asym --narrow", "--narrow"},
        {"--format int4 --static-groups", "--static-groups"},
        {"--format int4 --asym --rounding sr --calib CALIB", "--asym"},
    };
    char out[400], cmd[4096], args[1024];
    snprintf(out, sizeof out, "%s/should-not-exist", tmpdir);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(args, sizeof args, "%s", cases[i].args);
        char *p = strstr(args, "CALIB");
        if (p) snprintf(p, sizeof args - (size_t)(p - args), "%s", calib);
        snprintf(cmd, sizeof cmd, "%s quantize --model %s --rounding rtn --scale absmax %s --out %s 2>&1", PISO_BIN,
                 model_bin, args, out);
        if (strstr(args, "--rounding sr"))
            snprintf(cmd, sizeof cmd, "%s quantize --model %s %s --out %s 2>&1", PISO_BIN, model_bin, args, out);
        test_expect_refusal(args, cmd, -1, NULL, cases[i].needle, out);
    }
}

int main(void) {
    calib = test_data("data/tinystories/TinyStories-valid.small30KB.txt");
    model_bin = test_data("models/stories260K/stories260K.bin");
    snprintf(tmpdir, sizeof tmpdir, "/tmp/piso-test-checkpoint-XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    piso_set_quiet(1);
    roundtrip(PISO_CKPT_GPTQ, "int3", 0, 1, PISO_ROUND_GPTQ, PISO_SCALE_PISO, 1, 0);
    roundtrip(PISO_CKPT_GPTQ, "int4", 32, 0, PISO_ROUND_RTN, PISO_SCALE_PISO, 0, 0);
    roundtrip(PISO_CKPT_COMPRESSED, "int4", 32, 1, PISO_ROUND_QRONOS, PISO_SCALE_PISO, 1, 0);
    roundtrip(PISO_CKPT_COMPRESSED, "int3", 0, 0, PISO_ROUND_GPTQ, PISO_SCALE_ABSMAX, 0, 0);
    /* act order through g_idx (GPTQ desc_act, compressed-tensors actorder "group") */
    roundtrip(PISO_CKPT_GPTQ, "int4", 32, 1, PISO_ROUND_GPTQ, PISO_SCALE_PISO, 1, 1);
    roundtrip(PISO_CKPT_COMPRESSED, "int3", 32, 0, PISO_ROUND_QRONOS, PISO_SCALE_ABSMAX, 0, 1);
    cli_errors();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_finish();
}
