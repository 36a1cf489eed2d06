/* piso quantize --out model.gguf --type Q4_K — placeholder until the GGUF export lands. */
#include "cli.h"

int cmd_quantize_gguf(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cli_fail("quantize", "GGUF export not implemented yet");
}
