/* GGUF writer: the written bytes are checked directly (magic, version, counts, the first key as
 * laid out by the spec), then read back through the independent reader (gguf_read.c): every key
 * type, tensor shapes/types/data, contiguous 32-aligned offsets. Invalid input is refused with a
 * message and never leaves a file behind. */
#include "harness.h"
#include "piso/ggml_quants.h"
#include "piso/gguf.h"
#include "piso/gguf_write.h"

#include <unistd.h>

static void test_round_trip(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/t.gguf", dir);
    struct piso_gguf_writer *w = piso_gguf_writer_new();
    CHECK(piso_gguf_set_str(w, "general.architecture", "llama") == 0, "str");
    CHECK(piso_gguf_set_u32(w, "llama.block_count", 5) == 0, "u32");
    CHECK(piso_gguf_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f) == 0, "f32");
    CHECK(piso_gguf_set_bool(w, "tokenizer.ggml.add_bos_token", 1) == 0, "bool");
    CHECK(piso_gguf_set_i32(w, "x.i32", -7) == 0, "i32");
    const char *toks[3] = {"<unk>", "\xe2\x96\x81the", "b"};
    float sc[3] = {0, -1.5f, 2};
    int32_t ty[3] = {2, 1, 6};
    CHECK(piso_gguf_set_arr_str(w, "tokenizer.ggml.tokens", toks, 3) == 0, "arr str");
    CHECK(piso_gguf_set_arr_f32(w, "tokenizer.ggml.scores", sc, 3) == 0, "arr f32");
    CHECK(piso_gguf_set_arr_i32(w, "tokenizer.ggml.token_type", ty, 3) == 0, "arr i32");
    CHECK(piso_gguf_set_u32(w, "llama.block_count", 6) != 0 && strstr(piso_last_error(), "duplicate key"),
          "duplicate key refused: %s", piso_last_error());

    float norm[5] = {1, 2, 3, 4, 5};
    int64_t ne1[1] = {5};
    CHECK(piso_gguf_add_tensor(w, "output_norm.weight", 1, ne1, GGML_T_F32, norm, sizeof norm, 0) == 0, "f32 tensor");
    float x[64 * 3];
    for (int i = 0; i < 64 * 3; i++) x[i] = sinf((float)i);
    uint8_t q8[34 * 2 * 3];
    piso_ggml_quantize_ref(GGML_T_Q8_0, x, q8, 3, 64, NULL);
    int64_t ne2[2] = {64, 3};
    CHECK(piso_gguf_add_tensor(w, "blk.0.attn_q.weight", 2, ne2, GGML_T_Q8_0, q8, sizeof q8, 0) == 0, "q8 tensor");
    /* refused: row not a multiple of the block, wrong size, long name, duplicate name */
    int64_t ne3[2] = {48, 3};
    CHECK(piso_gguf_add_tensor(w, "bad", 2, ne3, GGML_T_Q4_0, q8, 18 * 3, 0) != 0 && strstr(piso_last_error(), "multiple"),
          "%s", piso_last_error());
    CHECK(piso_gguf_add_tensor(w, "bad", 2, ne2, GGML_T_Q4_0, q8, 17, 0) != 0 && strstr(piso_last_error(), "bytes"),
          "%s", piso_last_error());
    char longname[80];
    memset(longname, 'a', 70), longname[70] = 0;
    CHECK(piso_gguf_add_tensor(w, longname, 1, ne1, GGML_T_F32, norm, sizeof norm, 0) != 0, "long name refused");
    CHECK(piso_gguf_add_tensor(w, "output_norm.weight", 1, ne1, GGML_T_F32, norm, sizeof norm, 0) != 0 &&
              strstr(piso_last_error(), "duplicate"), "duplicate tensor");
    float *owned = malloc(sizeof(float) * 7);
    for (int i = 0; i < 7; i++) owned[i] = (float)i;
    int64_t ne4[1] = {7};
    CHECK(piso_gguf_add_tensor(w, "odd.weight", 1, ne4, GGML_T_F32, owned, 28, 1) == 0, "owned tensor");
    CHECK(piso_gguf_writer_write(w, path) == 0, "write: %s", piso_last_error());
    piso_gguf_writer_free(w);

    /* raw bytes: "GGUF", version 3, n_tensors 3, n_kv 8, first key */
    FILE *f = fopen(path, "rb");
    uint8_t head[64];
    CHECK(f && fread(head, 1, 64, f) == 64, "read head");
    if (f) fclose(f);
    CHECK(!memcmp(head, "GGUF", 4), "magic");
    CHECK(head[4] == 3 && head[5] == 0 && head[6] == 0 && head[7] == 0, "version 3");
    CHECK(head[8] == 3 && head[16] == 8, "counts %d %d", head[8], head[16]);
    CHECK(head[24] == 20 && !memcmp(head + 32, "general.architecture", 20), "first key");
    CHECK(head[52] == 8, "type string");

    struct piso_gguf g;
    CHECK(piso_gguf_open(&g, path) == 0, "read back: %s", piso_last_error());
    if (piso_last_error()[0] && g.n_tensors == 0) return;
    uint32_t u;
    float fv;
    int b;
    CHECK(piso_gguf_get_u32(&g, "llama.block_count", &u) == 0 && u == 5, "u32 back");
    CHECK(piso_gguf_get_f32(&g, "llama.attention.layer_norm_rms_epsilon", &fv) == 0 && fv == 1e-5f, "f32 back");
    CHECK(piso_gguf_get_bool(&g, "tokenizer.ggml.add_bos_token", &b) == 0 && b == 1, "bool back");
    const struct piso_gguf_kv *kv = piso_gguf_find(&g, "llama.block_count");
    CHECK(kv && kv->type == GGUF_VT_UINT32, "stored as u32");
    kv = piso_gguf_find(&g, "x.i32");
    CHECK(kv && kv->type == GGUF_VT_INT32 && kv->val.i64 == -7, "i32 back");
    char *arch = piso_gguf_get_str(&g, "general.architecture");
    CHECK(arch && !strcmp(arch, "llama"), "arch");
    free(arch);
    kv = piso_gguf_find(&g, "tokenizer.ggml.tokens");
    CHECK(kv && kv->arr_type == GGUF_VT_STRING && kv->arr_n == 3, "tokens array");
    if (kv) {
        char *t1 = piso_gguf_arr_str(kv, 1);
        CHECK(t1 && !strcmp(t1, toks[1]), "token 1");
        free(t1);
    }
    kv = piso_gguf_find(&g, "tokenizer.ggml.scores");
    float sc2[3];
    if (kv) memcpy(sc2, kv->arr_data, 12);
    CHECK(kv && kv->arr_type == GGUF_VT_FLOAT32 && sc2[1] == -1.5f, "scores");
    kv = piso_gguf_find(&g, "tokenizer.ggml.token_type");
    CHECK(kv && kv->arr_type == GGUF_VT_INT32 && kv->arr_n == 3, "types");
    CHECK(g.n_tensors == 3, "n_tensors %lld", (long long)g.n_tensors);
    uint64_t expect = 0;
    for (int i = 0; i < g.n_tensors && i < 3; i++) {
        CHECK(g.tensors[i].offset == expect, "tensor %d offset %llu, expected %llu", i,
              (unsigned long long)g.tensors[i].offset, (unsigned long long)expect);
        expect += (g.tensors[i].nbytes + 31) / 32 * 32;
    }
    const struct piso_gguf_tensor *t = piso_gguf_find_tensor(&g, "blk.0.attn_q.weight");
    CHECK(t && t->type == GGML_T_Q8_0 && t->ne[0] == 64 && t->ne[1] == 3 && !memcmp(t->data, q8, sizeof q8), "q8 data");
    t = piso_gguf_find_tensor(&g, "odd.weight");
    float back[7];
    CHECK(t && piso_gguf_tensor_to_f32(&g, t, back) == 0 && back[6] == 6.0f, "owned data");
    CHECK(((uintptr_t)g.tensors[1].data - (uintptr_t)g.map.data) % 32 == 0, "data aligned to 32");
    piso_gguf_close(&g);
}

static void test_atomic(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/missing-dir/x.gguf", dir);
    struct piso_gguf_writer *w = piso_gguf_writer_new();
    piso_gguf_set_str(w, "general.architecture", "llama");
    CHECK(piso_gguf_writer_write(w, path) != 0, "write into a missing directory fails");
    CHECK(!piso_file_exists(path), "no partial file");
    piso_gguf_writer_free(w);
}

int main(void) {
    char dir[] = "/tmp/piso_gguf_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    test_round_trip(dir);
    test_atomic(dir);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
    return test_finish();
}
