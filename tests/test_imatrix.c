/* Importance matrices: layer 0's q/k/v entry against a closed form (the mean over tokens of
 * (rmsnorm(embedding) ⊙ attn_norm)², worked here from the weights, with llama.cpp's chunking and BOS
 * replacement), GGUF and legacy .dat round trips, a hand-written legacy file, hostile files. */
#include "harness.h"
#include "piso/gguf_write.h"
#include "piso/imatrix.h"
#include "piso/model.h"

#include <unistd.h>

static void test_closed_form(const char *dir) {
    struct piso_model *m;
    CHECK(piso_model_load(test_data("models/stories260K/stories260K.bin"), NULL, &m) == 0, "load: %s", piso_last_error());
    enum { CTX = 32, NTOK = 70 }; /* 2 chunks; 6 tokens dropped */
    int toks[NTOK];
    for (int i = 0; i < NTOK; i++) toks[i] = (i * 37 + 11) % 512;
    struct piso_imatrix *im;
    CHECK(piso_imatrix_compute(m, toks, NTOK, CTX, 0, 1, "synthetic", &im) == 0, "compute: %s", piso_last_error());
    CHECK(im->n == 5 * 7 && im->chunk_count == 2 && im->chunk_size == CTX, "entries %d chunks %d", im->n, im->chunk_count);
    const int D = m->cfg.dim;
    double ref[64] = {0};
    for (int ch = 0; ch < 2; ch++)
        for (int t = 0; t < CTX; t++) {
            int tok = t == 0 ? 1 : toks[ch * CTX + t];
            const float *e = m->tok_embd + (size_t)tok * D;
            double ss = 0;
            for (int j = 0; j < D; j++) ss += (double)e[j] * e[j];
            double r = 1.0 / sqrt(ss / D + m->cfg.norm_eps);
            for (int j = 0; j < D; j++) {
                double a = e[j] * r * m->layers[0].attn_norm[j];
                ref[j] += a * a / (2 * CTX);
            }
        }
    float got[64], gk[64];
    CHECK(piso_imatrix_get(im, "blk.0.attn_q.weight", D, got) == 0, "entry q");
    CHECK(piso_imatrix_get(im, "blk.0.attn_k.weight", D, gk) == 0, "entry k");
    double worst = 0;
    for (int j = 0; j < D; j++) worst = fmax(worst, fabs(got[j] - ref[j]) / (ref[j] + 1e-12));
    CHECK(worst < 1e-4, "layer-0 imatrix vs closed form: relative error %g", worst);
    CHECK(!memcmp(got, gk, sizeof got), "q and k share their input");
    float fd[172];
    CHECK(piso_imatrix_get(im, "blk.4.ffn_down.weight", 172, fd) == 0, "ffn_down entry");
    CHECK(piso_imatrix_get(im, "blk.4.ffn_down.weight", 64, fd) == -1 && strstr(piso_last_error(), "172"), "length checked");
    CHECK(piso_imatrix_get(im, "output.weight", 64, fd) == 1, "no output entry (llama-imatrix default)");

    /* GGUF round trip */
    char p1[512], p2[512];
    snprintf(p1, sizeof p1, "%s/im.gguf", dir);
    snprintf(p2, sizeof p2, "%s/im.dat", dir);
    CHECK(piso_imatrix_save_gguf(im, p1) == 0, "save gguf: %s", piso_last_error());
    CHECK(piso_imatrix_save_dat(im, p2) == 0, "save dat: %s", piso_last_error());
    for (int k = 0; k < 2; k++) {
        struct piso_imatrix *back;
        CHECK(piso_imatrix_load(k ? p2 : p1, &back) == 0, "load: %s", piso_last_error());
        CHECK(back->n == im->n, "entries back %d", back->n);
        double w2 = 0;
        for (int e = 0; e < im->n && e < back->n; e++) {
            CHECK(!strcmp(im->e[e].name, back->e[e].name), "name %s", back->e[e].name);
            float a[172], b[172];
            piso_imatrix_get(im, im->e[e].name, im->e[e].n, a);
            piso_imatrix_get(back, im->e[e].name, im->e[e].n, b);
            for (int j = 0; j < im->e[e].n; j++) w2 = fmax(w2, fabs(a[j] - b[j]) / (fabs(a[j]) + 1e-20));
        }
        CHECK(w2 < 1e-6, "%s round trip: relative error %g", k ? "dat" : "gguf", w2);
        CHECK(back->chunk_count == 2, "chunk count back");
        piso_imatrix_free(back);
    }
    piso_imatrix_free(im);
    piso_model_free(m);
}

static void write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(p, 1, n, f);
    fclose(f);
}

static void test_hand_written(const char *dir) {
    /* legacy .dat: 1 entry "blk.0.ffn_up.weight", ncall 4, values {8, 2}: means {2, 0.5} */
    uint8_t buf[256];
    size_t o = 0;
    int32_t n = 1, len = 19, ncall = 4, nval = 2, last = 4, dl = 3;
    float vals[2] = {8, 2};
    memcpy(buf + o, &n, 4), o += 4;
    memcpy(buf + o, &len, 4), o += 4;
    memcpy(buf + o, "blk.0.ffn_up.weight", 19), o += 19;
    memcpy(buf + o, &ncall, 4), o += 4;
    memcpy(buf + o, &nval, 4), o += 4;
    memcpy(buf + o, vals, 8), o += 8;
    memcpy(buf + o, &last, 4), o += 4;
    memcpy(buf + o, &dl, 4), o += 4;
    memcpy(buf + o, "abc", 3), o += 3;
    char p[512];
    snprintf(p, sizeof p, "%s/hand.dat", dir);
    write_file(p, buf, o);
    struct piso_imatrix *im;
    CHECK(piso_imatrix_load(p, &im) == 0, "hand .dat: %s", piso_last_error());
    float mean[2] = {0};
    CHECK(im && piso_imatrix_get(im, "blk.0.ffn_up.weight", 2, mean) == 0 && mean[0] == 2 && mean[1] == 0.5f,
          "means %g %g", mean[0], mean[1]);
    CHECK(im && im->dataset && !strcmp(im->dataset, "abc"), "dataset name");
    piso_imatrix_free(im);
    /* truncated: the values run past the end */
    write_file(p, buf, 30);
    CHECK(piso_imatrix_load(p, &im) != 0 && strstr(piso_last_error(), "blk.0.ffn_up.weight"), "truncated: %s",
          piso_last_error());

    /* GGUF imatrix written through the generic writer: in_sum2 {3, 6}, counts {3} -> means {1, 2} */
    snprintf(p, sizeof p, "%s/hand.gguf", dir);
    struct piso_gguf_writer *w = piso_gguf_writer_new();
    piso_gguf_set_str(w, "general.type", "imatrix");
    float s2[2] = {3, 6}, cnt[1] = {3};
    int64_t ne_s[2] = {2, 1}, ne_c[2] = {1, 1};
    piso_gguf_add_tensor(w, "blk.1.attn_v.weight.in_sum2", 2, ne_s, 0, s2, 8, 0);
    piso_gguf_add_tensor(w, "blk.1.attn_v.weight.counts", 2, ne_c, 0, cnt, 4, 0);
    CHECK(piso_gguf_writer_write(w, p) == 0, "write");
    piso_gguf_writer_free(w);
    CHECK(piso_imatrix_load(p, &im) == 0, "hand gguf: %s", piso_last_error());
    CHECK(im && piso_imatrix_get(im, "blk.1.attn_v.weight", 2, mean) == 0 && mean[0] == 1 && mean[1] == 2, "gguf means");
    piso_imatrix_free(im);
    /* an in_sum2 without counts is refused */
    w = piso_gguf_writer_new();
    piso_gguf_add_tensor(w, "x.weight.in_sum2", 2, ne_s, 0, s2, 8, 0);
    piso_gguf_writer_write(w, p);
    piso_gguf_writer_free(w);
    CHECK(piso_imatrix_load(p, &im) != 0 && strstr(piso_last_error(), "counts"), "%s", piso_last_error());
}

int main(void) {
    char dir[] = "/tmp/piso_imatrix_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    test_hand_written(dir);
    test_closed_form(dir);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
    return test_finish();
}
