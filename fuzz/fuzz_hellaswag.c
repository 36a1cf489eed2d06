/* HellaSwag task files (piso/hellaswag.h). Invariants: an accepted file has 6 lines per task, every
 * task has a context and 4 endings inside the text and a gold index 0..3, and the task draw over
 * it returns distinct indices in range. */
#include "fuzz_common.h"
#include "piso/hellaswag.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *in = fuzz_file(data, size, "in.txt");
    struct piso_hellaswag_set s;
    if (piso_hellaswag_load(in, &s) != 0) return 0;
    FUZZ_CHECK(s.n >= 1, "no tasks accepted");
    for (int i = 0; i < s.n; i++) {
        const struct piso_hellaswag_task *t = &s.tasks[i];
        FUZZ_CHECK(t->gold >= 0 && t->gold <= 3 && t->context && t->line == 6 * i + 1, "task %d", i);
        for (int e = 0; e < 4; e++) FUZZ_CHECK(t->ending[e] && !strchr(t->ending[e], '\n'), "task %d ending %d", i, e);
    }
    const int n = s.n < 64 ? s.n : 64;
    int *order = malloc(sizeof *order * (size_t)n);
    char *seen = calloc((size_t)s.n, 1);
    FUZZ_CHECK(order && seen && piso_hellaswag_select(s.n, n, 0, order) == 0, "select");
    for (int i = 0; i < n; i++) {
        FUZZ_CHECK(order[i] >= 0 && order[i] < s.n && !seen[order[i]], "draw %d: %d", i, order[i]);
        seen[order[i]] = 1;
    }
    free(order);
    free(seen);
    piso_hellaswag_free(&s);
    return 0;
}
