/* piso eval hellaswag --model PATH --tasks FILE [--limit N] [--first] [--ctx N] [--llamacpp-activations] [--json] [--quiet]
 * Zero-shot benchmark scores with llama-perplexity's protocol (piso/hellaswag.h). */
#include "cli.h"
#include "piso/hellaswag.h"
#include "piso/json_out.h"
#include "piso/llamacpp_act.h"

#include <stdlib.h>
#include <string.h>

struct eval_args {
    struct cli_common common;
    const char *model, *tokenizer, *tasks;
    int64_t limit, ctx;
    int first, per_task;
    int llamacpp_activations;
};

static const struct cli_option eval_options[] = {
    CLI_OPTION_MODEL(struct eval_args),
    CLI_OPTION_TOKENIZER(struct eval_args),
    {"--tasks", NULL, CLI_STRING, offsetof(struct eval_args, tasks), .arg = "FILE",
     .help = "HellaSwag tasks in llama.cpp's 6-line layout (e.g. data/hellaswag/hellaswag_val_full.txt)", .required = 1},
    {"--limit", NULL, CLI_INT, offsetof(struct eval_args, limit), .arg = "N",
     .help = "score N tasks (as llama-perplexity --hellaswag-tasks N; more than the file holds: all)", .def = "400",
     .imin = 1, .imax = INT32_MAX},
    {"--first", NULL, CLI_FLAG, offsetof(struct eval_args, first),
     .help = "the first N tasks of the file instead of llama-perplexity's random draw"},
    {"--ctx", NULL, CLI_INT, offsetof(struct eval_args, ctx), .arg = "N",
     .help = "refuse tasks llama-perplexity -c N refuses (shared prefix + 4 endings > N); the score\n"
             "does not depend on it; 0: no check",
     .imin = 0, .imax = 1 << 20},
    {"--per-task", NULL, CLI_FLAG, offsetof(struct eval_args, per_task),
     .help = "also print each task: index, gold, prediction, the 4 normalised log-likelihoods (JSON: \"per_task\")"},
    CLI_OPTION_LLAMACPP_ACTIVATIONS(struct eval_args),
    {0},
};

static const struct cli_section eval_sections[] = {{NULL, NULL, eval_options}, {0}};

static const struct cli_command eval_command = {
    .name = "eval hellaswag",
    .summary = "HellaSwag acc_norm with llama-perplexity's protocol (tokenization, scoring, task draw).",
    .notes = "Prints llama-perplexity's final line: tasks, acc_norm %, [95% Wilson interval].\n"
             "--json prints {\"acc_norm\", \"ci95\": [lo, hi], \"correct\", \"tasks\", \"selection\", \"seconds\"}\n"
             "(percentages, as llama-perplexity prints them).\n",
    .sections = eval_sections,
};

static int run_hellaswag(int argc, char **argv) {
    struct eval_args a = {0};
    int prc = cli_parse(&eval_command, CLI_ALL_SECTIONS, argc, argv, &a.common);
    if (prc != CLI_CONTINUE) return prc;
    struct piso_hellaswag_set set;
    if (piso_hellaswag_load(a.tasks, &set)) return cli_fail("eval", piso_last_error());
    const int n = a.limit < set.n ? (int)a.limit : set.n;
    int *order = malloc(sizeof *order * (size_t)n);
    struct piso_hellaswag_task_score *per = calloc((size_t)n, sizeof *per);
    struct piso_model *m = NULL;
    struct piso_hellaswag_result r;
    int rc = !order || !per ? piso_errorf("out of memory for %d tasks", n) : 0;
    if (rc == 0) rc = piso_hellaswag_select(set.n, n, a.first, order);
    if (rc == 0) rc = piso_model_load(a.model, a.tokenizer, &m);
    if (rc == 0 && a.llamacpp_activations) rc = piso_llamacpp_act_enable(m);
    if (rc == 0) piso_log("hellaswag: %d tasks in %s, scoring %d (%s)\n", set.n, a.tasks, n, a.first ? "the first" : "llama.cpp's random draw");
    if (rc == 0) rc = piso_hellaswag_score(m, &set, order, n, (int)a.ctx, per, &r);
    piso_model_free(m);
    piso_hellaswag_free(&set);
    free(order);
    if (rc == 0 && a.common.json) {
        struct piso_json w;
        piso_json_begin(&w, PISO_JSON_SPACED);
        piso_json_fixed(&w, "acc_norm", r.acc_norm, 8);
        piso_json_array_begin(&w, "ci95");
        piso_json_fixed(&w, NULL, r.ci_lo, 4);
        piso_json_fixed(&w, NULL, r.ci_hi, 4);
        piso_json_array_end(&w);
        piso_json_int(&w, "correct", r.correct);
        piso_json_int(&w, "tasks", r.tasks);
        piso_json_string(&w, "selection", a.first ? "first" : "llama.cpp");
        piso_json_fixed(&w, "seconds", r.seconds, 3);
        if (a.per_task) {
            piso_json_array_begin(&w, "per_task");
            for (int i = 0; i < n; i++) {
                piso_json_object_begin(&w, NULL);
                piso_json_int(&w, "task", per[i].task);
                piso_json_int(&w, "gold", per[i].gold);
                piso_json_int(&w, "pred", per[i].pred);
                piso_json_array_begin(&w, "logprob");
                for (int e = 0; e < 4; e++) piso_json_sig(&w, NULL, per[i].logprob[e], 9);
                piso_json_array_end(&w);
                piso_json_object_end(&w);
            }
            piso_json_array_end(&w);
        }
        rc = piso_json_print(&w, stdout);
    } else if (rc == 0) {
        if (a.per_task)
            for (int i = 0; i < n; i++)
                printf("task %d gold %d pred %d  %.6f %.6f %.6f %.6f\n", per[i].task, per[i].gold, per[i].pred,
                       per[i].logprob[0], per[i].logprob[1], per[i].logprob[2], per[i].logprob[3]);
        printf("task\tacc_norm\t95%% confidence interval\n");
        printf("%d\t%3.8f%%\t[%3.4f%%, %3.4f%%]\n", r.tasks, r.acc_norm, r.ci_lo, r.ci_hi);
    }
    free(per);
    return rc ? cli_fail("eval", piso_last_error()) : 0;
}

int cmd_eval(int argc, char **argv) {
    if (argc >= 1 && !strcmp(argv[0], "hellaswag")) return run_hellaswag(argc - 1, argv + 1);
    FILE *out = argc >= 1 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h")) ? stdout : stderr;
    fprintf(out, "usage: piso eval hellaswag --model PATH --tasks FILE [--limit N] [--first] [--json]\n"
                 "benchmarks: hellaswag (piso eval hellaswag --help)\n");
    if (argc >= 1 && out == stderr) fprintf(stderr, "piso eval: error: unknown benchmark '%s'\n", argv[0]);
    return out == stdout ? 0 : 2;
}
