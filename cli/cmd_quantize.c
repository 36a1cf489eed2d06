/* piso quantize — whole-model quantization. GGUF output (--type, or --out *.gguf) is handled by
 * cmd_quantize_gguf (llama.cpp block formats); everything else writes a Hugging Face directory. */
#include "cli.h"

#include <string.h>

static int wants_gguf(int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--type") || !strncmp(argv[i], "--type=", 7)) return 1;
        const char *out = NULL;
        if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[i + 1];
        if (!strncmp(argv[i], "--out=", 6)) out = argv[i] + 6;
        if (out) {
            size_t n = strlen(out);
            if (n > 5 && !strcmp(out + n - 5, ".gguf")) return 1;
        }
    }
    return 0;
}

int cmd_quantize(int argc, char **argv) {
    if (wants_gguf(argc, argv)) return cmd_quantize_gguf(argc, argv);
    return cli_fail("quantize", "not implemented yet");
}
