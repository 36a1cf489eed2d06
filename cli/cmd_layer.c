/* piso layer — placeholder until its issue lands. */
#include "cli.h"

int cmd_layer(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cli_fail("layer", "not implemented yet");
}
