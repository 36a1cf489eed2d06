/* piso imatrix — placeholder until its issue lands. */
#include "cli.h"

int cmd_imatrix(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cli_fail("imatrix", "not implemented yet");
}
