/* Up-front refusal (issue 16): when the run's memory estimate exceeds what is available, piso
 * quantize stops before any long work with the numbers, exit 1, and writes nothing. The available
 * memory is set through PISO_MEM_AVAILABLE_MB; the F32 weight size in the message is checked against
 * the checkpoint's own size (a llama2.c file is a 28-byte header plus its fp32 weights). */
#include "harness.h"

#include <unistd.h>

int main(void) {
    const char *model = test_data("models/stories260K/stories260K.bin");
    const char *calib = test_data("data/tinystories/TinyStories-valid.small30KB.txt");
    char out[256], cmd[4096];
    snprintf(out, sizeof out, "/tmp/piso_test_memory_check_%d", (int)getpid());
    snprintf(cmd, sizeof cmd,
             "PISO_MEM_AVAILABLE_MB=1 %s quantize --model %s --calib %s --format int4 --rounding rtn --scale piso "
             "--out %s --quiet 2>&1 >/dev/null",
             PISO_BIN, model, calib, out);
    char *msg = NULL;
    int rc = test_run(cmd, &msg);
    CHECK(rc == 1, "exit %d", rc);
    CHECK(msg && strstr(msg, "not enough memory"), "message: %s", msg ? msg : "");
    CHECK(access(out, F_OK) != 0, "%s must not exist", out);
    double total = 0, model_gb = 0, avail = 0;
    const char *p = msg ? strstr(msg, "needs about ") : NULL;
    if (p) sscanf(p, "needs about %lf GB (two F32 copies of the weights 2 × %lf GB", &total, &model_gb);
    const char *q = msg ? strstr(msg, "but ") : NULL;
    if (q) sscanf(q, "but %lf GB", &avail);
    struct stat st;
    stat(model, &st);
    double expect = (double)(st.st_size - 28) / 1e9; /* fp32 weights of the checkpoint */
    CHECK(model_gb > 0 && fabs(model_gb - expect) <= 0.01 + 0.05 * expect, "model %g GB vs file %g GB", model_gb, expect);
    CHECK(total > 2 * model_gb && avail > 0 && avail < total, "total %g GB, available %g GB", total, avail);
    free(msg);
    /* with enough memory the same run goes through */
    snprintf(cmd, sizeof cmd,
             "PISO_MEM_AVAILABLE_MB=100000 %s quantize --model %s --calib %s --format int4 --rounding rtn --scale piso "
             "--out %s --quiet >/dev/null 2>&1",
             PISO_BIN, model, calib, out);
    CHECK(test_run(cmd, NULL) == 0, "run with enough memory");
    CHECK(access(out, F_OK) == 0, "%s written", out);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
    CHECK(system(cmd) == 0, "cleanup");
    return test_finish();
}
