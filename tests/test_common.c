/* Foundation tests: fp16/bf16 conversion against closed forms, safetensors round trip and
 * rejection of hostile headers, atomic output files. */
#include "harness.h"
#include "piso/common.h"
#include "piso/safetensors.h"

#include <unistd.h>

static void test_fp16(void) {
    /* closed forms: 1 = 0x3c00, -2 = 0xc000, 65504 = 0x7bff (max), 2^-24 = 0x0001 (min subnormal) */
    CHECK(piso_fp32_to_fp16(1.0f) == 0x3c00, "1.0");
    CHECK(piso_fp32_to_fp16(-2.0f) == 0xc000, "-2.0");
    CHECK(piso_fp32_to_fp16(65504.0f) == 0x7bff, "max");
    CHECK(piso_fp32_to_fp16(65520.0f) == 0x7c00, "overflow rounds to inf");
    CHECK(piso_fp32_to_fp16(ldexpf(1.0f, -24)) == 0x0001, "min subnormal");
    CHECK(piso_fp32_to_fp16(ldexpf(1.0f, -25)) == 0x0000, "half of min subnormal ties to even (0)");
    CHECK(piso_fp32_to_fp16(ldexpf(3.0f, -25)) == 0x0002, "1.5 ulp subnormal ties to even (2)");
    /* 1 + 2^-11 is exactly halfway between 1 and 1+2^-10: ties to even -> 1.0 */
    CHECK(piso_fp32_to_fp16(1.0f + ldexpf(1.0f, -11)) == 0x3c00, "tie to even");
    CHECK(piso_fp32_to_fp16(1.0f + 3 * ldexpf(1.0f, -11)) == 0x3c02, "tie to even, odd base");
    /* every half value round-trips exactly */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00) == 0x7c00) continue;
        float f = piso_fp16_to_fp32((uint16_t)h);
        if (piso_fp32_to_fp16(f) != h) bad++;
    }
    CHECK(bad == 0, "%d half values do not round-trip", bad);
    CHECK(piso_fp32_to_bf16(1.0f) == 0x3f80, "bf16 1.0");
    CHECK(piso_bf16_to_fp32(0xc040) == -3.0f, "bf16 -3");
    /* 1 + 2^-8 is halfway between bf16 1 and 1+2^-7: ties to even -> 1.0 */
    CHECK(piso_fp32_to_bf16(1.0f + ldexpf(1.0f, -8)) == 0x3f80, "bf16 tie");
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(p, 1, n, f);
    fclose(f);
}

static void test_safetensors(void) {
    char dir[] = "/tmp/piso_test_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char path[256];
    snprintf(path, sizeof path, "%s/a.safetensors", dir);
    float w[6] = {1, -2, 3.5f, 0, 5, 6};
    int8_t c[4] = {-8, 7, 0, 1};
    int64_t sw[2] = {2, 3}, sc[1] = {4};
    struct piso_st_writer *wr = piso_st_writer_new();
    piso_st_writer_add(wr, "weight", PISO_DTYPE_F32, 2, sw, w);
    piso_st_writer_add(wr, "codes", PISO_DTYPE_I8, 1, sc, c);
    piso_st_writer_meta(wr, "format", "pt");
    CHECK(piso_st_writer_write(wr, path) == 0, "write: %s", piso_last_error());
    piso_st_writer_free(wr);

    struct piso_st_file f;
    CHECK(piso_st_open(&f, path) == 0, "open: %s", piso_last_error());
    CHECK(f.n_tensors == 2, "n_tensors %d", f.n_tensors);
    int64_t shape[2];
    float *x = piso_st_load_f32(&f, "weight", 2, shape);
    CHECK(x && shape[0] == 2 && shape[1] == 3 && x[2] == 3.5f, "weight round trip");
    free(x);
    const struct piso_st_tensor *t = piso_st_find(&f, "codes");
    CHECK(t && t->dtype == PISO_DTYPE_I8 && ((const int8_t *)t->data)[0] == -8, "codes round trip");
    CHECK(piso_st_meta(&f, "format") && !strcmp(piso_st_meta(&f, "format"), "pt"), "metadata");
    piso_st_close(&f);

    /* hostile inputs: each must fail with a message naming the problem */
    char bad[256];
    snprintf(bad, sizeof bad, "%s/bad.safetensors", dir);
    uint8_t huge[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}'};
    write_bytes(bad, huge, 10);
    CHECK(piso_st_open(&f, bad) != 0 && strstr(piso_last_error(), "header length"), "%s", piso_last_error());
    const char *js = "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}";
    uint8_t buf[256] = {0};
    size_t jl = strlen(js);
    buf[0] = (uint8_t)jl;
    memcpy(buf + 8, js, jl);
    write_bytes(bad, buf, 8 + jl + 8); /* only 8 of 16 data bytes: truncated */
    CHECK(piso_st_open(&f, bad) != 0 && strstr(piso_last_error(), "'w'"), "%s", piso_last_error());
    js = "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}";
    jl = strlen(js);
    buf[0] = (uint8_t)jl;
    memcpy(buf + 8, js, jl);
    write_bytes(bad, buf, 8 + jl + 16);
    CHECK(piso_st_open(&f, bad) != 0 && strstr(piso_last_error(), "shape needs"), "%s", piso_last_error());
    /* NaN weight is refused by the loader */
    float nanw[2] = {1, NAN};
    int64_t s2[1] = {2};
    wr = piso_st_writer_new();
    piso_st_writer_add(wr, "w", PISO_DTYPE_F32, 1, s2, nanw);
    piso_st_writer_write(wr, bad);
    piso_st_writer_free(wr);
    CHECK(piso_st_open(&f, bad) == 0, "open nan file");
    CHECK(piso_st_load_f32(&f, "w", 1, NULL) == NULL && strstr(piso_last_error(), "non-finite"), "%s",
          piso_last_error());
    piso_st_close(&f);

    /* aborted output leaves nothing behind */
    char out[256];
    snprintf(out, sizeof out, "%s/never.bin", dir);
    struct piso_outfile o;
    CHECK(piso_outfile_open(&o, out) == 0, "outfile open");
    piso_outfile_write(&o, "abc", 3);
    piso_outfile_abort(&o);
    CHECK(!piso_file_exists(out), "aborted output must not exist");
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
}

int main(void) {
    test_fp16();
    test_safetensors();
    return test_finish();
}
