/* The option parser and help generator of the CLI (cli/options.h). */
#include "options.h"
#include "piso/common.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { HELP_COLUMN = 26, MAX_OPTIONS = 128 };

/* The options every command has; their values live in struct cli_common, the first member of
 * each command's argument struct, so these offsets hold for all of them. */
static const struct cli_option common_options[] = {
    {"--json", NULL, CLI_FLAG, offsetof(struct cli_common, json), .help = "print one JSON object on stdout"},
    {"--quiet", NULL, CLI_FLAG, offsetof(struct cli_common, quiet), .help = "no progress messages on stderr"},
    {"--help", "-h", CLI_HELP, 0, .help = "print this help and exit"},
    {0},
};

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "piso %s: error: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(piso %s --help lists the options)\n", cmd);
    va_end(ap);
    return 2;
}

/* ---- looking options up ------------------------------------------------------------------ */

/* Visits the command's sections, then the common one (as section index -1). */
#define FOR_EACH_SECTION(cmd, s, idx)                                                                                  \
    for (int idx = 0, idx##_n = section_count(cmd); idx <= idx##_n; idx++)                                             \
        for (const struct cli_section *s = idx < idx##_n ? &(cmd)->sections[idx] : &common_section; s; s = NULL)

static const struct cli_section common_section = {"output", NULL, common_options};

static int section_count(const struct cli_command *cmd) {
    int n = 0;
    while (cmd->sections[n].options) n++;
    return n;
}

static int section_active(const struct cli_command *cmd, unsigned active, int idx) {
    return idx >= section_count(cmd) || idx >= 32 || (active >> idx & 1u);
}

/* How arg names option o: 0 no; 1 exactly (value in the next argument); 2 with "=VALUE". */
static int names(const struct cli_option *o, const char *arg, const char **inline_value) {
    const char *names_[2] = {o->name, o->alias};
    for (int k = 0; k < 2; k++) {
        const char *n = names_[k];
        if (!n) continue;
        size_t len = strlen(n);
        if (strncmp(arg, n, len) != 0) continue;
        if (arg[len] == 0) return 1;
        if (arg[len] == '=') {
            *inline_value = arg + len + 1;
            return 2;
        }
    }
    return 0;
}

/* ---- values ------------------------------------------------------------------------------ */

/* Stores text as o's value; on a bad value prints the error (when cmd is given) and returns -1. */
static int store(const struct cli_command *cmd, const struct cli_option *o, const char *text, void *args,
                 int check_range) {
    void *dst = (char *)args + o->offset;
    const char *what = NULL;
    char why[512];
    switch (o->kind) {
    case CLI_FLAG:
    case CLI_HELP: *(int *)dst = 1; return 0;
    case CLI_STRING: *(const char **)dst = text; return 0;
    case CLI_CHOICE:
        for (const char *const *c = o->choices; *c; c++)
            if (!strcmp(text, *c)) {
                *(const char **)dst = *c;
                return 0;
            }
        {
            size_t k = (size_t)snprintf(why, sizeof why, "unknown value '%s' (one of:", text);
            for (const char *const *c = o->choices; *c && k < sizeof why; c++)
                k += (size_t)snprintf(why + k, sizeof why - k, "%s %s", c == o->choices ? "" : ",", *c);
            if (k < sizeof why) snprintf(why + k, sizeof why - k, ")");
        }
        what = why;
        break;
    case CLI_INT: {
        char *end;
        errno = 0;
        long long v = strtoll(text, &end, 10);
        int is_number = (*text == '-' || *text == '+' || (*text >= '0' && *text <= '9')) && end != text && *end == 0;
        if (!is_number) {
            snprintf(why, sizeof why, "'%s' is not an integer", text);
        } else if (check_range && (errno == ERANGE || v > o->imax)) {
            snprintf(why, sizeof why, "%s is too large (at most %" PRId64 ")", text, o->imax);
        } else if (check_range && v < o->imin) {
            snprintf(why, sizeof why, "%s is too small (at least %" PRId64 ")", text, o->imin);
        } else {
            *(int64_t *)dst = (int64_t)v;
            return 0;
        }
        what = why;
        break;
    }
    case CLI_DOUBLE: {
        char *end;
        double v = strtod(text, &end);
        if (end == text || *end != 0 || !isfinite(v)) {
            snprintf(why, sizeof why, "'%s' is not a finite number", text);
        } else if (check_range && v > o->dmax) {
            snprintf(why, sizeof why, "%s is too large (at most %g)", text, o->dmax);
        } else if (check_range && v < o->dmin) {
            snprintf(why, sizeof why, "%s is too small (at least %g)", text, o->dmin);
        } else {
            *(double *)dst = v;
            return 0;
        }
        what = why;
        break;
    }
    }
    if (cmd) cli_usage_error(cmd->name, "option %s: %s", o->name, what);
    return -1;
}

const char *cli_peek(int argc, char **argv, const char *name) {
    const char *found = NULL;
    struct cli_option o = {.name = name};
    for (int i = 0; i < argc; i++) {
        const char *v = NULL;
        int how = names(&o, argv[i], &v);
        if (how == 1 && i + 1 < argc)
            found = argv[++i];
        else if (how == 2)
            found = v;
    }
    return found;
}

int cli_parse(const struct cli_command *cmd, unsigned active, int argc, char **argv, struct cli_common *args) {
    /* defaults first, so that a given value overrides them */
    FOR_EACH_SECTION(cmd, s, si) {
        if (!section_active(cmd, active, si)) continue;
        for (const struct cli_option *o = s->options; o->name; o++)
            if (o->def && store(NULL, o, o->def, args, 0) != 0) {
                fprintf(stderr, "piso %s: internal error: bad default '%s' of %s\n", cmd->name, o->def, o->name);
                return 2;
            }
    }
    unsigned char seen[MAX_OPTIONS] = {0}; /* by position among all options */
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i], *value = NULL;
        const struct cli_option *hit = NULL, *inactive = NULL;
        const struct cli_section *inactive_section = NULL;
        int how = 0, pos = 0, hit_pos = -1;
        FOR_EACH_SECTION(cmd, s, si) {
            for (const struct cli_option *o = s->options; o->name; o++, pos++) {
                if (hit) continue;
                const char *v = NULL;
                int h = names(o, arg, &v);
                if (!h) continue;
                if (!section_active(cmd, active, si)) {
                    if (!inactive) inactive = o, inactive_section = s;
                    continue;
                }
                hit = o, how = h, value = v, hit_pos = pos;
            }
        }
        if (!hit && inactive)
            return cli_usage_error(cmd->name, "option %s: only for %s (%s)", inactive->name, inactive_section->title,
                                   inactive_section->when ? inactive_section->when : "");
        if (!hit) {
            if (arg[0] == '-' && arg[1]) {
                size_t n = strcspn(arg, "=");
                return cli_usage_error(cmd->name, "option %.*s: unknown option", (int)n, arg);
            }
            return cli_usage_error(cmd->name, "unexpected argument '%s' (every value follows its option)", arg);
        }
        if (hit->kind == CLI_HELP) {
            cli_print_help(cmd);
            return 0;
        }
        if (hit->kind == CLI_FLAG && how == 2)
            return cli_usage_error(cmd->name, "option %s: takes no value", hit->name);
        if (hit->kind != CLI_FLAG && how == 1) {
            if (i + 1 >= argc)
                return cli_usage_error(cmd->name, "option %s: missing its value (%s)", hit->name,
                                       hit->arg ? hit->arg : "a value");
            value = argv[++i];
        }
        if (store(cmd, hit, value, args, 1) != 0) return 2;
        if (hit_pos < MAX_OPTIONS) seen[hit_pos] = 1;
    }
    int pos = 0;
    FOR_EACH_SECTION(cmd, s, si) {
        for (const struct cli_option *o = s->options; o->name; o++, pos++)
            if (o->required && section_active(cmd, active, si) && pos < MAX_OPTIONS && !seen[pos])
                return cli_usage_error(cmd->name, "option %s: required%s%s", o->name, o->arg ? ", give " : "",
                                       o->arg ? o->arg : "");
    }
    if (args->quiet) piso_set_quiet(1);
    return CLI_CONTINUE;
}

/* ---- help -------------------------------------------------------------------------------- */

/* "-o, --out FILE", "--rounding rtn|gptq|qronos" */
static void option_synopsis(const struct cli_option *o, char *buf, size_t size) {
    size_t k = (size_t)snprintf(buf, size, "%s%s%s", o->alias ? o->alias : "", o->alias ? ", " : "", o->name);
    if (o->kind == CLI_CHOICE) {
        for (const char *const *c = o->choices; *c && k < size; c++)
            k += (size_t)snprintf(buf + k, size - k, "%s%s", c == o->choices ? " " : "|", *c);
    } else if (o->kind != CLI_FLAG && o->kind != CLI_HELP && k < size) {
        snprintf(buf + k, size - k, " %s", o->arg ? o->arg : "VALUE");
    }
}

/* text with every line after the first indented to the help column */
static void print_indented(const char *text) {
    for (const char *p = text; *p; p++) {
        putchar(*p);
        if (*p == '\n' && p[1]) printf("%*s", HELP_COLUMN, "");
    }
}

static void print_option(const struct cli_option *o) {
    char syn[512];
    option_synopsis(o, syn, sizeof syn);
    printf("  %s", syn);
    int width = 2 + (int)strlen(syn);
    if (width + 1 < HELP_COLUMN)
        printf("%*s", HELP_COLUMN - width, "");
    else
        printf("\n%*s", HELP_COLUMN, "");
    print_indented(o->help ? o->help : "");
    if (o->def) printf(" (default: %s)", o->def);
    if (o->required) printf(" (required)");
    printf("\n");
}

void cli_print_help(const struct cli_command *cmd) {
    printf("usage: piso %s ", cmd->name);
    if (cmd->usage) {
        printf("%s\n", cmd->usage);
    } else { /* the required options, then the rest */
        for (int si = 0; cmd->sections[si].options; si++)
            for (const struct cli_option *o = cmd->sections[si].options; o->name; o++)
                if (o->required) printf("%s %s ", o->name, o->arg ? o->arg : "VALUE");
        printf("[options]\n");
    }
    printf("%s\n", cmd->summary);
    FOR_EACH_SECTION(cmd, s, si) {
        if (s->title)
            printf("\n%s%s%s:\n", s->title, s->when ? ", " : "", s->when ? s->when : "");
        else
            printf("\noptions:\n");
        for (const struct cli_option *o = s->options; o->name; o++) print_option(o);
    }
    if (cmd->notes) printf("\n%s", cmd->notes);
}
