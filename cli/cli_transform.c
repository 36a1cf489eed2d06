/* The options of the model transforms (cli/transform_opts.h). */
#include "cli.h"
#include "transform_opts.h"

#include <string.h>

const char *const cli_rotate_choices[] = {"none", "had", "block", NULL};
const char *const cli_permute_choices[] = {"none", "massdiff", "zigzag", "absmax", "random", NULL};

int cli_transform_opts(const char *cmd, const char *rotate, int64_t block, const char *permute, int no_online,
                       int64_t seed, int has_calib, int gguf, struct piso_transform_opts *o) {
    memset(o, 0, sizeof *o);
    if (piso_rotate_mode_from_name(rotate, &o->rotate) || piso_permute_mode_from_name(permute, &o->permute))
        return cli_usage_error(cmd, "%s", piso_last_error());
    if (o->rotate == PISO_ROTATE_BLOCK && block == 0)
        return cli_usage_error(cmd, "option --rotate block: needs --rotate-block B");
    if (o->rotate != PISO_ROTATE_BLOCK && block != 0)
        return cli_usage_error(cmd, "option --rotate-block: only with --rotate block");
    if (block && !piso_hadamard_supported((int)block))
        return cli_usage_error(cmd, "option --rotate-block: no Hadamard matrix of size %lld (2^k * K, K in 1, 12, 20, "
                                    "28, 36, 52, 60, 108, 140, 152, 156, 172)",
                               (long long)block);
    if (o->permute != PISO_PERMUTE_NONE && o->permute != PISO_PERMUTE_RANDOM && !has_calib)
        return cli_usage_error(cmd, "option --permute %s: calibrated on activations, needs --calib", permute);
    if (gguf && o->rotate != PISO_ROTATE_NONE && !no_online)
        return cli_usage_error(cmd, "option --rotate: GGUF output accepts fused rotations only; the online rotations "
                                    "of the down_proj and o_proj inputs need piso's runtime (add --no-online)");
    o->block = (int)block;
    o->online = !no_online;
    o->seed = (uint64_t)seed;
    return 0;
}

int cli_transform_wanted(const struct piso_transform_opts *o) {
    return o->rotate != PISO_ROTATE_NONE || o->permute != PISO_PERMUTE_NONE;
}
