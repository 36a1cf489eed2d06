/* piso generate — placeholder until its issue lands. */
#include "cli.h"

int cmd_generate(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cli_fail("generate", "not implemented yet");
}
