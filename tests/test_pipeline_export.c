/* tokenizer.json generated from the llama2.c vocabulary of stories260K equals the published HF
 * twin's (vocab, merges, added tokens compared as parsed JSON), and the generated file tokenizes
 * the TinyStories sample to the same ids as the llama2.c tokenizer. */
#include "harness.h"
#include "piso/pipeline.h"

#include <cjson/cJSON.h>

static void compare_tokenizers(void) {
    struct piso_tokenizer *t = NULL;
    CHECK(piso_tokenizer_load(test_data("models/stories260K/tok512.bin"), &t) == 0, "load: %s", piso_last_error());
    if (!t) return;
    char *gen = piso_spm_tokenizer_json(piso_tokenizer_vocab(t));
    CHECK(gen != NULL, "generated");
    char *ref = NULL;
    size_t n = 0;
    CHECK(piso_read_file(test_data("models/stories260K-hf/tokenizer.json"), &ref, &n) == 0, "read reference");
    cJSON *a = cJSON_Parse(gen), *b = cJSON_Parse(ref);
    CHECK(a && b, "both parse");
    if (a && b) {
        const char *keys[] = {"added_tokens", "normalizer", "pre_tokenizer", "post_processor", "decoder"};
        for (int i = 0; i < 5; i++)
            CHECK(cJSON_Compare(cJSON_GetObjectItem(a, keys[i]), cJSON_GetObjectItem(b, keys[i]), 1), "%s differs",
                  keys[i]);
        cJSON *ma = cJSON_GetObjectItem(a, "model"), *mb = cJSON_GetObjectItem(b, "model");
        CHECK(cJSON_Compare(cJSON_GetObjectItem(ma, "vocab"), cJSON_GetObjectItem(mb, "vocab"), 1), "vocab differs");
        cJSON *ga = cJSON_GetObjectItem(ma, "merges"), *gb = cJSON_GetObjectItem(mb, "merges");
        CHECK(cJSON_GetArraySize(ga) == cJSON_GetArraySize(gb), "merges: %d vs %d", cJSON_GetArraySize(ga),
              cJSON_GetArraySize(gb));
        int first_diff = -1;
        for (int i = 0; i < cJSON_GetArraySize(ga) && i < cJSON_GetArraySize(gb); i++)
            if (strcmp(cJSON_GetArrayItem(ga, i)->valuestring, cJSON_GetArrayItem(gb, i)->valuestring)) {
                first_diff = i;
                break;
            }
        CHECK(first_diff < 0, "merge %d differs", first_diff);
        CHECK(cJSON_Compare(ma, mb, 1), "model section differs");
    }
    cJSON_Delete(a), cJSON_Delete(b);
    /* the generated file tokenizes like the llama2.c tokenizer */
    char tmpl[] = "/tmp/piso-tokjson-XXXXXX";
    int fd = mkstemp(tmpl);
    if (fd >= 0) {
        FILE *f = fdopen(fd, "wb");
        fwrite(gen, 1, strlen(gen), f);
        fclose(f);
        struct piso_tokenizer *t2 = NULL;
        CHECK(piso_tokenizer_load(tmpl, &t2) == 0, "load generated: %s", piso_last_error());
        char *text = NULL;
        size_t len = 0;
        piso_read_file(test_data("data/tinystories/tinystories_sample.cs336.txt"), &text, &len);
        int *i1 = NULL, *i2 = NULL, n1 = 0, n2 = 0;
        if (t2 && text) {
            piso_tokenize(t, text, len, 1, &i1, &n1);
            piso_tokenize(t2, text, len, 1, &i2, &n2);
            CHECK(n1 == n2 && n1 > 100 && !memcmp(i1, i2, sizeof(int) * n1), "token ids differ (%d vs %d)", n1, n2);
        }
        free(i1), free(i2), free(text);
        piso_tokenizer_free(t2);
        unlink(tmpl);
    }
    free(gen), free(ref);
    piso_tokenizer_free(t);
}

int main(void) {
    compare_tokenizers();
    return test_finish();
}
