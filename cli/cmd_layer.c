/* piso layer — solve one layer problem file with a scale method and report/write the result. */
#include "cli.h"
#include "piso/quant.h"
#include "piso/safetensors.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static void usage(FILE *out) {
    fprintf(out,
            "usage: piso layer --problem P.safetensors --format FMT [--group G] [--scale METHOD]\n"
            "                  [--narrow] [--no-negative] [--json] [--out Q.safetensors] [--quiet]\n"
            "                  [--threads N]\n\n"
            "  --problem   F32 'weight' [N, D] and 'hessian' [D, D] (+ 'cross' [D, D] = G), or\n"
            "              'inputs' [T, D] (+ 'inputs_float' [T, D]): H = X~^T X~, G = X~^T X\n"
            "  --format    int2..int8, e2m1, e2m3, e3m2, e4m3, e5m2\n"
            "  --group     group size along D (must divide D); default: one scale per row\n"
            "  --scale     absmax | mse-grid | piso-datafree | piso-diag | piso (default) | piso-seq\n"
            "  --narrow    symmetric integer range (int4: -7..7)\n"
            "  --no-negative  never use negative scales on asymmetric grids\n"
            "  --json      print one JSON object on stdout\n"
            "  --out       write dequant [N, D] F32, scales [N, D/g] F32, codes [N, D] (I8 for\n"
            "              integer grids, U8 grid index for minifloats)\n");
}

static int write_result(const char *path, const struct piso_layer_result *r, const struct piso_quant_opts *o,
                        const char *format) {
    int64_t N = r->N, D = r->D;
    int64_t sh_nd[2] = {N, D}, sh_s[2] = {N, r->n_groups};
    struct piso_st_writer *w = piso_st_writer_new();
    piso_st_writer_add(w, "dequant", PISO_DTYPE_F32, 2, sh_nd, r->dequant);
    piso_st_writer_add(w, "scales", PISO_DTYPE_F32, 2, sh_s, r->scales);
    void *codes = malloc((size_t)(N * D));
    if (o->grid.is_int) {
        int8_t *c = codes;
        for (int64_t k = 0; k < N * D; k++) c[k] = (int8_t)r->codes[k];
    } else {
        uint8_t *c = codes;
        for (int64_t k = 0; k < N * D; k++) c[k] = (uint8_t)r->codes[k];
    }
    piso_st_writer_add(w, "codes", o->grid.is_int ? PISO_DTYPE_I8 : PISO_DTYPE_U8, 2, sh_nd, codes);
    char gbuf[32];
    snprintf(gbuf, sizeof gbuf, "%d", o->group);
    piso_st_writer_meta(w, "format", format);
    piso_st_writer_meta(w, "grid", o->grid.name);
    piso_st_writer_meta(w, "method", piso_scale_method_name(o->method));
    piso_st_writer_meta(w, "group", gbuf);
    int rc = piso_st_writer_write(w, path);
    piso_st_writer_free(w);
    free(codes);
    return rc;
}

static void print_json(const struct piso_layer_result *r, const struct piso_quant_opts *o, const char *format,
                       const char *problem, double seconds, double load_seconds) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "problem", problem);
    cJSON_AddStringToObject(j, "format", format);
    cJSON_AddStringToObject(j, "grid", o->grid.name);
    cJSON_AddBoolToObject(j, "narrow", o->grid.narrow);
    cJSON_AddNumberToObject(j, "group", o->group);
    cJSON_AddStringToObject(j, "method", piso_scale_method_name(o->method));
    cJSON_AddNumberToObject(j, "N", (double)r->N);
    cJSON_AddNumberToObject(j, "D", (double)r->D);
    cJSON_AddNumberToObject(j, "n_groups", (double)r->n_groups);
    cJSON_AddNumberToObject(j, "objective", r->objective);
    cJSON_AddBoolToObject(j, "constant_dropped", r->constant_dropped);
    cJSON *rows = cJSON_AddArrayToObject(j, "rows");
    for (int64_t i = 0; i < r->N; i++) {
        cJSON *row = cJSON_CreateObject();
        if (r->n_groups == 1) {
            cJSON_AddNumberToObject(row, "scale", r->scales[i]);
        } else {
            cJSON *s = cJSON_AddArrayToObject(row, "scales");
            for (int64_t k = 0; k < r->n_groups; k++)
                cJSON_AddItemToArray(s, cJSON_CreateNumber(r->scales[i * r->n_groups + k]));
        }
        cJSON_AddNumberToObject(row, "objective", r->row_objective[i]);
        cJSON_AddItemToArray(rows, row);
    }
    cJSON_AddNumberToObject(j, "seconds", seconds);
    cJSON_AddNumberToObject(j, "load_seconds", load_seconds);
    cJSON_AddNumberToObject(j, "threads", piso_num_threads());
    char *s = cJSON_PrintUnformatted(j);
    printf("%s\n", s);
    free(s);
    cJSON_Delete(j);
}

int cmd_layer(int argc, char **argv) {
    const char *problem = NULL, *format = NULL, *method = "piso", *out = NULL;
    long group = 0, threads = 0;
    int narrow = 0, json = 0, quiet = 0, no_negative = 0;
    for (int i = 0; i < argc; i++) {
        if (cli_opt(argc, argv, &i, "--problem", &problem)) continue;
        if (cli_opt(argc, argv, &i, "--format", &format)) continue;
        if (cli_opt(argc, argv, &i, "--scale", &method)) continue;
        if (cli_opt(argc, argv, &i, "--out", &out)) continue;
        if (cli_opt_int(argc, argv, &i, "--group", &group)) continue;
        if (cli_opt_int(argc, argv, &i, "--threads", &threads)) continue;
        if (cli_flag(argc, argv, &i, "--narrow")) { narrow = 1; continue; }
        if (cli_flag(argc, argv, &i, "--no-negative")) { no_negative = 1; continue; }
        if (cli_flag(argc, argv, &i, "--json")) { json = 1; continue; }
        if (cli_flag(argc, argv, &i, "--quiet")) { quiet = 1; continue; }
        if (cli_flag(argc, argv, &i, "--help") || cli_flag(argc, argv, &i, "-h")) {
            usage(stdout);
            return 0;
        }
        usage(stderr);
        return cli_usage_error("layer", "unknown argument '%s'", argv[i]);
    }
    if (!problem || !format) {
        usage(stderr);
        return cli_usage_error("layer", "--problem and --format are required");
    }
    if (group < 0 || group > (1L << 30)) return cli_usage_error("layer", "--group must be positive, got %ld", group);
    if (threads < 0) return cli_usage_error("layer", "--threads must be positive, got %ld", threads);
#ifdef _OPENMP
    if (threads > 0) omp_set_num_threads((int)threads);
#endif
    piso_set_quiet(quiet);
    struct piso_quant_opts opts = {.group = (int)group, .allow_negative = !no_negative};
    if (piso_grid_init(&opts.grid, format, narrow) != 0) return cli_fail("layer", piso_last_error());
    if (piso_scale_method_from_name(method, &opts.method) != 0) return cli_fail("layer", piso_last_error());

    double t0 = piso_time();
    struct piso_problem p;
    if (piso_problem_load(problem, &p) != 0) return cli_fail("layer", piso_last_error());
    double t1 = piso_time();
    if (group > 0 && p.D % group != 0) {
        piso_problem_free(&p);
        char msg[256];
        snprintf(msg, sizeof msg, "--group %ld does not divide D = %lld (the columns of 'weight' in %s)",
                 group, (long long)p.D, problem);
        return cli_fail("layer", msg);
    }
    piso_log("piso layer: %s: N = %lld, D = %lld, %s, %s, group %ld%s\n", problem, (long long)p.N,
             (long long)p.D, opts.grid.name, method, group, p.G ? ", cross term" : "");
    struct piso_layer_problem lp = {.N = p.N, .D = p.D, .W = p.W, .H = p.H, .G = p.G};
    struct piso_layer_result r;
    if (piso_quantize_layer(&lp, &opts, &r) != 0) {
        piso_problem_free(&p);
        return cli_fail("layer", piso_last_error());
    }
    double t2 = piso_time();
    int rc = 0;
    if (out && write_result(out, &r, &opts, format) != 0) rc = cli_fail("layer", piso_last_error());
    if (!rc) {
        if (json) {
            print_json(&r, &opts, format, problem, t2 - t1, t1 - t0);
        } else {
            printf("objective %.10g%s\n", r.objective, r.constant_dropped ? " (constant dropped)" : "");
            printf("rows %lld, groups per row %lld, %s, %s, %.3f s\n", (long long)r.N, (long long)r.n_groups,
                   opts.grid.name, method, t2 - t1);
            if (out) printf("wrote %s\n", out);
        }
    }
    piso_layer_result_free(&r);
    piso_problem_free(&p);
    return rc;
}
