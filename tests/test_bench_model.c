/* Smoke test of bench/bench_model on its tiny shape (the real shapes never run in CI): the synthetic
 * directory is a valid sharded HF checkpoint (every tensor the index names is in the shard it
 * names, BF16, with the configured shapes), `piso quantize` runs on it, and the report is
 * consistent: the parts of the split add up to at most the wall time and the block-forward ratio is
 * reported (its value is a timing: bench/, not tests). Needs $PISO_DATA (tokenizer, text). */
#include "harness.h"
#include "piso/safetensors.h"

#include <cjson/cJSON.h>
#include <unistd.h>

int main(void) {
    const char *tok = test_data("tokenizers/llama3/tokenizer.json");
    (void)tok;
    test_data("data/wikitext-2/test.tokens");
    char bench[4096], dir[256], cmd[8192];
    snprintf(bench, sizeof bench, "%s", PISO_BIN);
    char *slash = strrchr(bench, '/');
    snprintf(slash ? slash + 1 : bench, 64, "bench_model");
    snprintf(dir, sizeof dir, "/tmp/piso_test_bench_model_%d", (int)getpid());
    snprintf(cmd, sizeof cmd, "PISO_DATA='%s' %s --shape tiny --nsamples 2 --seqlen 128 --shard-mb 12 --keep --dir %s 2>/dev/null",
             test_data_root(), bench, dir);
    char *out = NULL;
    int rc = test_run(cmd, &out);
    CHECK(rc == 0, "bench_model exit %d", rc);
    cJSON *j = out ? cJSON_Parse(out) : NULL;
    CHECK(j != NULL, "bench_model prints one JSON object: %s", out ? out : "(none)");
    if (j) {
        double wall = cJSON_GetObjectItem(j, "wall_s")->valuedouble, rss = cJSON_GetObjectItem(j, "peak_rss_mb")->valuedouble;
        double bf = cJSON_GetObjectItem(j, "block_forwards_per_block")->valuedouble;
        CHECK(wall > 0 && rss > 10, "wall %g s, peak RSS %g MB", wall, rss);
        /* a ratio of measured times: its value belongs to bench/ (it swings with machine load), only
         * its presence is checked here */
        CHECK(bf > 0, "block forwards per block %g", bf);
        const cJSON *sp = cJSON_GetObjectItem(j, "split_s");
        double sum = 0;
        for (const cJSON *e = sp ? sp->child : NULL; e; e = e->next) {
            CHECK(e->valuedouble >= 0, "%s %g", e->string, e->valuedouble);
            sum += e->valuedouble;
        }
        CHECK(sum > 0 && sum <= wall * 1.05 + 0.05, "split sums to %g s of %g s wall", sum, wall);
        cJSON_Delete(j);
    }
    /* the checkpoint: index → shards (more than one at 12 MB) → tensors */
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "%s exists", path);
    if (f) {
        static char text[1 << 16];
        size_t n = fread(text, 1, sizeof text - 1, f);
        text[n] = 0;
        fclose(f);
        cJSON *idx = cJSON_Parse(text);
        const cJSON *map = idx ? cJSON_GetObjectItem(idx, "weight_map") : NULL;
        int count = 0, ok = 0, shards_seen = 0;
        char last[128] = "";
        for (const cJSON *e = map ? map->child : NULL; e; e = e->next, count++) {
            snprintf(path, sizeof path, "%s/%s", dir, e->valuestring);
            if (strcmp(last, e->valuestring)) shards_seen++, snprintf(last, sizeof last, "%s", e->valuestring);
            struct piso_st_file sf;
            if (piso_st_open(&sf, path)) continue;
            const struct piso_st_tensor *t = piso_st_find(&sf, e->string);
            ok += t && t->dtype == PISO_DTYPE_BF16;
            piso_st_close(&sf);
        }
        /* tiny: embed + 2 layers × 9 + final norm */
        CHECK(count == 1 + 2 * 9 + 1, "index names %d tensors", count);
        CHECK(ok == count, "%d of %d found as BF16 in their shard", ok, count);
        CHECK(shards_seen >= 2, "%d shards", shards_seen);
        cJSON_Delete(idx);
    }
    snprintf(path, sizeof path, "%s.out/quantization.json", dir);
    CHECK(access(path, R_OK) == 0, "quantized output %s", path);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s.out'", dir, dir);
    CHECK(system(cmd) == 0, "cleanup");
    free(out);
    return test_finish();
}
