/* Helpers shared by the subcommands that load a model and read calibration text. */
#include "act_quant.h"
#include "cli.h"
#include "piso/model.h"
#include "piso/tokenizer.h"

#include <stdlib.h>
#include <string.h>

const struct piso_tokenizer *cli_model_tokenizer(const struct piso_model *m) {
    if (!m->tok) piso_errorf("%s: no tokenizer in or beside the model (pass --tokenizer PATH)", m->path);
    return m->tok;
}

int cli_tokenize_file(const struct piso_tokenizer *t, const char *path, int **ids, int *n) {
    char *text;
    size_t len;
    if (piso_read_file(path, &text, &len) != 0) return -1;
    if (len == 0) {
        free(text);
        return piso_errorf("%s: the text is empty", path);
    }
    int rc = piso_tokenize(t, text, len, piso_tokenizer_vocab(t)->add_bos, ids, n);
    free(text);
    return rc;
}

int cli_act_quant_check(const char *cmd, const char *act_format, int64_t act_group, const char *kv_format) {
    struct piso_act_format f;
    if (act_format && piso_act_format_init(&f, act_format, (int)act_group))
        return cli_usage_error(cmd, "option --act-format: %s", piso_last_error());
    if (kv_format && piso_act_format_init(&f, kv_format, 0))
        return cli_usage_error(cmd, "option --kv-format: %s", piso_last_error());
    if (act_group > 0 && (!act_format || !strcmp(act_format, "none")))
        return cli_usage_error(cmd, "option --act-group: needs --act-format");
    return 0;
}

int cli_act_quant_apply(struct piso_model *m, const char *act_format, int64_t act_group, const char *kv_format) {
    if (!act_format && !kv_format && act_group == 0) return 0;
    struct piso_act_quant q;
    /* a format not given keeps the recorded one */
    const char *act = act_format ? act_format : m->act.act.name[0] ? m->act.act.name : NULL;
    const char *kv = kv_format ? kv_format : m->act.kv.name[0] ? m->act.kv.name : NULL;
    int group = act_format ? (int)act_group : m->act.act.kind == PISO_ACT_MX ? 0 : m->act.act.group;
    if (piso_act_quant_init(&q, &m->cfg, act, group, kv)) return -1;
    m->act = q;
    return 0;
}
