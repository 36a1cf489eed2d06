/* bench_model — a whole real-size model through `piso quantize`, without downloading one.
 *
 * Writes a synthetic Hugging Face model directory with the real configuration values of
 * Llama-3.2-1B (hidden 2048, 16 layers, 32 heads, 8 KV heads, FFN 8192, vocab 128256, tied
 * embeddings, Llama-3 rope scaling), Qwen2.5-0.5B (q/k/v biases) or Llama-3.1-8B: BF16 weights in
 * sharded safetensors with model.safetensors.index.json, rows with heavy tails (Student-t, 3
 * degrees of freedom, a per-row scale spread) and a few residual channels carrying massive
 * activations (large embedding columns), and the shared Llama-3 tokenizer.json (symlinked, never
 * copied). Then runs `piso quantize --json` on it as a child process and reports wall and CPU time,
 * peak RSS, and the split into float forward, quantized forward, statistics, solves and export,
 * each also as a ratio to one float forward pass over the same calibration tokens (one float block
 * forward × layers), plus block-forward equivalents per block, and how good the progress ETA was:
 * the ETA printed on the first progress line after the first block, as a predicted end of the run
 * (its time since the child started + the ETA), against the real end (item 7 of issue 16 asks for
 * within 30 %). The child's stderr (progress) is passed through and time-stamped as it arrives.
 *
 * usage: bench_model [--shape tiny|llama-1b|qwen-0.5b|llama-8b] [--layers N] [--dir DIR] [--keep]
 *                    [--shard-mb M] [--calib TXT] [--nsamples N] [--seqlen L] [--piso BIN]
 *                    [--generate-only] [--gguf] [-- extra quantize options (default: --format int4
 *                    --group 128 --rounding gptq --scale piso; with --gguf: --type Q4_K)]
 * --gguf writes a GGUF file (calibrated: --nsamples chunks of --seqlen tokens, as --chunks/--ctx);
 * GGUF output has no timing split, so only the wall and CPU time and the peak RSS are reported.
 * The data root is $PISO_DATA (default ../shared): tokenizers/llama3/tokenizer.json and the
 * calibration text data/wikitext-2/test.tokens. Big shapes take minutes to hours: use --layers. */
#include "piso/common.h"
#include "piso/safetensors.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

struct shape {
    const char *name, *model_type, *arch;
    int hidden, inter, layers, heads, kv_heads, vocab, tied, qkv_bias, max_pos;
    double rope_theta, rope_factor, rms_eps;
};

static const struct shape shapes[] = {
    {"tiny", "llama", "LlamaForCausalLM", 128, 384, 2, 4, 2, 128256, 1, 0, 8192, 500000, 32, 1e-5},
    {"llama-1b", "llama", "LlamaForCausalLM", 2048, 8192, 16, 32, 8, 128256, 1, 0, 131072, 500000, 32, 1e-5},
    {"qwen-0.5b", "qwen2", "Qwen2ForCausalLM", 896, 4864, 24, 14, 2, 151936, 1, 1, 32768, 1000000, 0, 1e-6},
    {"llama-8b", "llama", "LlamaForCausalLM", 4096, 14336, 32, 32, 8, 128256, 0, 0, 131072, 500000, 8, 1e-5},
};

/* ---- deterministic random numbers: one stream per (tensor, row) ---- */
static uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double u01(uint64_t *s) {
    *s = mix(*s + 0x9E3779B97F4A7C15ull);
    return ((double)(*s >> 11) + 0.5) / 9007199254740992.0;
}
static double gauss(uint64_t *s) { return sqrt(-2 * log(u01(s))) * cos(6.283185307179586 * u01(s)); }
static double student_t3(uint64_t *s) {
    double c = 0;
    for (int i = 0; i < 3; i++) {
        double z = gauss(s);
        c += z * z;
    }
    return gauss(s) / sqrt(c / 3);
}

enum kind { K_LINEAR, K_EMBED, K_NORM, K_BIAS };

/* BF16 data of one tensor [rows, cols] */
static uint16_t *make_tensor(enum kind k, int64_t rows, int64_t cols, uint64_t seed, int hidden) {
    uint16_t *d = malloc(sizeof(uint16_t) * (size_t)(rows * cols));
    if (!d) return NULL;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        uint64_t s = mix(seed * 0x100000001B3ull + (uint64_t)r);
        double sigma = 0.02 * exp(0.3 * gauss(&s)); /* rows differ in scale */
        for (int64_t c = 0; c < cols; c++) {
            double v;
            if (k == K_NORM) v = 1.0;
            else if (k == K_BIAS) v = 0.02 * gauss(&s);
            else if (k == K_EMBED) /* a few residual channels carry massive activations */
                v = 0.02 * gauss(&s) * ((c == 7 || c == hidden / 3 || c == 2 * hidden / 3) ? 30.0 : 1.0);
            else v = sigma * student_t3(&s);
            d[r * cols + c] = piso_fp32_to_bf16((float)v);
        }
    }
    return d;
}

struct tensor_spec {
    char name[128];
    enum kind kind;
    int64_t rows, cols; /* cols 0: 1-D [rows] */
};

static int list_tensors(const struct shape *sh, struct tensor_spec **out) {
    int D = sh->hidden, F = sh->inter, hd = sh->hidden / sh->heads;
    int Hq = sh->heads * hd, Hkv = sh->kv_heads * hd;
    int cap = 4 + sh->layers * 12, n = 0;
    struct tensor_spec *t = calloc((size_t)cap, sizeof *t);
    if (!t) return -1;
#define ADD(k, r, c, ...) (snprintf(t[n].name, sizeof t[n].name, __VA_ARGS__), t[n].kind = k, t[n].rows = r, t[n].cols = c, n++)
    ADD(K_EMBED, sh->vocab, D, "model.embed_tokens.weight");
    for (int l = 0; l < sh->layers; l++) {
        ADD(K_NORM, D, 0, "model.layers.%d.input_layernorm.weight", l);
        ADD(K_LINEAR, Hq, D, "model.layers.%d.self_attn.q_proj.weight", l);
        ADD(K_LINEAR, Hkv, D, "model.layers.%d.self_attn.k_proj.weight", l);
        ADD(K_LINEAR, Hkv, D, "model.layers.%d.self_attn.v_proj.weight", l);
        if (sh->qkv_bias) {
            ADD(K_BIAS, Hq, 0, "model.layers.%d.self_attn.q_proj.bias", l);
            ADD(K_BIAS, Hkv, 0, "model.layers.%d.self_attn.k_proj.bias", l);
            ADD(K_BIAS, Hkv, 0, "model.layers.%d.self_attn.v_proj.bias", l);
        }
        ADD(K_LINEAR, D, Hq, "model.layers.%d.self_attn.o_proj.weight", l);
        ADD(K_NORM, D, 0, "model.layers.%d.post_attention_layernorm.weight", l);
        ADD(K_LINEAR, F, D, "model.layers.%d.mlp.gate_proj.weight", l);
        ADD(K_LINEAR, F, D, "model.layers.%d.mlp.up_proj.weight", l);
        ADD(K_LINEAR, D, F, "model.layers.%d.mlp.down_proj.weight", l);
    }
    ADD(K_NORM, D, 0, "model.norm.weight");
    if (!sh->tied) ADD(K_LINEAR, sh->vocab, D, "lm_head.weight");
#undef ADD
    *out = t;
    return n;
}

static int write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    int ok = fputs(text, f) >= 0;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

static int write_config(const char *dir, const struct shape *sh) {
    char buf[4096], rope[512] = "null";
    if (sh->rope_factor > 0)
        snprintf(rope, sizeof rope,
                 "{\"factor\": %g, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
                 "\"original_max_position_embeddings\": 8192, \"rope_type\": \"llama3\"}",
                 sh->rope_factor);
    snprintf(buf, sizeof buf,
             "{\n  \"architectures\": [\"%s\"],\n  \"model_type\": \"%s\",\n  \"hidden_size\": %d,\n"
             "  \"intermediate_size\": %d,\n  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n"
             "  \"num_key_value_heads\": %d,\n  \"head_dim\": %d,\n  \"vocab_size\": %d,\n"
             "  \"max_position_embeddings\": %d,\n  \"rms_norm_eps\": %g,\n  \"rope_theta\": %g,\n"
             "  \"rope_scaling\": %s,\n  \"hidden_act\": \"silu\",\n  \"tie_word_embeddings\": %s,\n"
             "  \"attention_bias\": %s,\n  \"bos_token_id\": 128000,\n  \"eos_token_id\": 128001,\n"
             "  \"torch_dtype\": \"bfloat16\"\n}\n",
             sh->arch, sh->model_type, sh->hidden, sh->inter, sh->layers, sh->heads, sh->kv_heads,
             sh->hidden / sh->heads, sh->vocab, sh->max_pos, sh->rms_eps, sh->rope_theta, rope,
             sh->tied ? "true" : "false", sh->qkv_bias ? "true" : "false");
    char *path = piso_path_join(dir, "config.json");
    int rc = path ? write_text(path, buf) : -1;
    free(path);
    return rc;
}

/* Shards of at most shard_bytes (a tensor never straddles two) and the index file. */
static int write_weights(const char *dir, const struct shape *sh, int64_t shard_bytes, int64_t *total_bytes) {
    struct tensor_spec *t;
    int n = list_tensors(sh, &t);
    if (n < 0) return -1;
    int *shard_of = malloc(sizeof(int) * n), nshards = 1;
    int64_t cur = 0, total = 0;
    for (int i = 0; i < n; i++) {
        int64_t bytes = 2 * t[i].rows * (t[i].cols ? t[i].cols : 1);
        if (cur > 0 && cur + bytes > shard_bytes) nshards++, cur = 0;
        shard_of[i] = nshards - 1, cur += bytes, total += bytes;
    }
    *total_bytes = total;
    cJSON *index = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(index, "metadata");
    cJSON_AddNumberToObject(meta, "total_size", (double)total);
    cJSON *map = cJSON_AddObjectToObject(index, "weight_map");
    int rc = 0;
    for (int s = 0; s < nshards && !rc; s++) {
        char fname[64];
        snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", s + 1, nshards);
        char *path = piso_path_join(dir, fname);
        struct piso_st_writer *w = piso_st_writer_new();
        uint16_t **bufs = calloc((size_t)n, sizeof *bufs);
        for (int i = 0; i < n && !rc; i++) {
            if (shard_of[i] != s) continue;
            int64_t shape[2] = {t[i].rows, t[i].cols};
            bufs[i] = make_tensor(t[i].kind, t[i].rows, t[i].cols ? t[i].cols : 1, (uint64_t)i + 1, sh->hidden);
            if (!bufs[i]) rc = -1;
            else piso_st_writer_add(w, t[i].name, PISO_DTYPE_BF16, t[i].cols ? 2 : 1, shape, bufs[i]);
            cJSON_AddStringToObject(map, t[i].name, fname);
        }
        piso_st_writer_meta(w, "format", "pt");
        if (!rc && piso_st_writer_write(w, path)) rc = -1;
        piso_st_writer_free(w);
        for (int i = 0; i < n; i++) free(bufs[i]);
        free(bufs);
        fprintf(stderr, "bench_model: wrote %s\n", path);
        free(path);
    }
    char *text = cJSON_Print(index), *path = piso_path_join(dir, "model.safetensors.index.json");
    if (!rc && (!text || !path || write_text(path, text))) rc = -1;
    free(text), free(path);
    cJSON_Delete(index);
    free(shard_of), free(t);
    return rc;
}

static double num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

int main(int argc, char **argv) {
    const char *shape_name = "tiny", *dir = NULL, *calib = NULL, *piso_bin = NULL;
    int layers = 0, nsamples = 4, seqlen = 512, keep = 0, gen_only = 0, extra_at = 0, gguf = 0;
    double shard_mb = 1000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--shape") && i + 1 < argc) shape_name = argv[++i];
        else if (!strcmp(argv[i], "--layers") && i + 1 < argc) layers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--keep")) keep = 1;
        else if (!strcmp(argv[i], "--gguf")) gguf = 1;
        else if (!strcmp(argv[i], "--generate-only")) gen_only = keep = 1;
        else if (!strcmp(argv[i], "--shard-mb") && i + 1 < argc) shard_mb = atof(argv[++i]);
        else if (!strcmp(argv[i], "--calib") && i + 1 < argc) calib = argv[++i];
        else if (!strcmp(argv[i], "--nsamples") && i + 1 < argc) nsamples = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seqlen") && i + 1 < argc) seqlen = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--piso") && i + 1 < argc) piso_bin = argv[++i];
        else if (!strcmp(argv[i], "--")) {
            extra_at = i + 1;
            break;
        } else {
            fprintf(stderr, "usage: bench_model [--shape tiny|llama-1b|qwen-0.5b|llama-8b] [--layers N] [--dir DIR] "
                            "[--keep] [--generate-only] [--gguf] [--shard-mb M] [--calib TXT] [--nsamples N] [--seqlen L] "
                            "[--piso BIN] [-- quantize options]\n");
            return 2;
        }
    }
    struct shape sh;
    int found = 0;
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
        if (!strcmp(shapes[k].name, shape_name)) sh = shapes[k], found = 1;
    if (!found) {
        fprintf(stderr, "bench_model: unknown --shape %s\n", shape_name);
        return 2;
    }
    if (layers > 0) sh.layers = layers;
    const char *root = getenv("PISO_DATA") && *getenv("PISO_DATA") ? getenv("PISO_DATA") : "../shared";
    char tok[4096], calib_buf[4096], dirbuf[4096], bin[4096], path[8192];
    snprintf(tok, sizeof tok, "%s/tokenizers/llama3/tokenizer.json", root);
    if (!calib) snprintf(calib_buf, sizeof calib_buf, "%s/data/wikitext-2/test.tokens", root), calib = calib_buf;
    if (!dir) snprintf(dirbuf, sizeof dirbuf, "/tmp/bench_model-%s-%dL-%d", sh.name, sh.layers, (int)getpid()), dir = dirbuf;
    if (!piso_bin) { /* the piso binary next to this one */
        snprintf(bin, sizeof bin, "%s", argv[0]);
        char *slash = strrchr(bin, '/');
        snprintf(slash ? slash + 1 : bin, sizeof bin - (size_t)(slash ? slash + 1 - bin : 0), "piso");
        piso_bin = bin;
    }
    struct stat st;
    if (stat(tok, &st) || stat(calib, &st)) {
        fprintf(stderr, "bench_model: SKIP: %s or %s is missing (set PISO_DATA)\n", tok, calib);
        return 77;
    }
    if (mkdir(dir, 0755) && stat(dir, &st)) {
        fprintf(stderr, "bench_model: cannot create %s\n", dir);
        return 1;
    }
    double t0 = piso_time();
    int64_t bytes = 0;
    if (write_config(dir, &sh) || write_weights(dir, &sh, (int64_t)(shard_mb * 1e6), &bytes)) {
        fprintf(stderr, "bench_model: writing %s failed: %s\n", dir, piso_last_error());
        return 1;
    }
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    unlink(path);
    if (symlink(tok, path)) {
        fprintf(stderr, "bench_model: cannot link %s\n", path);
        return 1;
    }
    double t_gen = piso_time() - t0;
    fprintf(stderr, "bench_model: %s, %d layers, %.1f MB of BF16 weights in %s (%.1f s)\n", sh.name, sh.layers, bytes / 1e6,
            dir, t_gen);
    if (gen_only) return 0;

    /* piso quantize as a child: its peak RSS and CPU time come from wait4 */
    char cmd[16384], out[4200];
    snprintf(out, sizeof out, gguf ? "%s.out.gguf" : "%s.out", dir);
    int len = snprintf(cmd, sizeof cmd, "%s quantize --model %s --calib %s --%s %d --%s %d --out %s --json", piso_bin, dir,
                       calib, gguf ? "chunks" : "nsamples", nsamples, gguf ? "ctx" : "seqlen", seqlen, out);
    if (extra_at)
        for (int i = extra_at; i < argc; i++) len += snprintf(cmd + len, sizeof cmd - (size_t)len, " %s", argv[i]);
    else
        len += snprintf(cmd + len, sizeof cmd - (size_t)len, "%s",
                        gguf ? " --type Q4_K" : " --format int4 --group 128 --rounding gptq --scale piso");
    fprintf(stderr, "bench_model: %s\n", cmd);
    int pipefd[2], errfd[2];
    if (pipe(pipefd) || pipe(errfd)) return 1;
    double tw = piso_time();
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pipefd[1], 1), dup2(errfd[1], 2);
        close(pipefd[0]), close(pipefd[1]), close(errfd[0]), close(errfd[1]);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]), close(errfd[1]);
    size_t cap = 1 << 16, n = 0;
    char *json = malloc(cap), line[4096];
    size_t ll = 0;
    /* ETA check: the first progress line of block 2 ("block 2/N, ... ETA x s") */
    double eta_at = -1, eta_s = -1;
    struct pollfd pf[2] = {{pipefd[0], POLLIN, 0}, {errfd[0], POLLIN, 0}};
    int open_fds = 2;
    while (open_fds > 0) {
        if (poll(pf, 2, -1) < 0) break;
        for (int f = 0; f < 2; f++) {
            if (pf[f].fd < 0 || !(pf[f].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char buf[4096];
            ssize_t r = read(pf[f].fd, f == 0 ? json + n : buf, f == 0 ? cap - n - 1 : sizeof buf);
            if (r <= 0) {
                close(pf[f].fd), pf[f].fd = -1, open_fds--;
                continue;
            }
            if (f == 0) {
                if ((n += (size_t)r) + 1 >= cap) json = realloc(json, cap *= 2);
                continue;
            }
            fwrite(buf, 1, (size_t)r, stderr);
            for (ssize_t i = 0; i < r; i++) { /* split into lines; look at each once complete */
                if (buf[i] != '\n') {
                    if (ll + 1 < sizeof line) line[ll++] = buf[i];
                    continue;
                }
                line[ll] = 0, ll = 0;
                const char *e = strstr(line, "ETA ");
                if (eta_at < 0 && !strncmp(line, "block 2/", 8) && e) eta_at = piso_time() - tw, eta_s = atof(e + 4);
            }
        }
    }
    json[n] = 0;
    int status = 0;
    struct rusage ru;
    wait4(pid, &status, 0, &ru);
    double wall = piso_time() - tw;
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bench_model: piso quantize failed (status %d)\n", status);
        return 1;
    }
    cJSON *j = cJSON_Parse(json);
    const cJSON *tm = j ? cJSON_GetObjectItemCaseSensitive(j, "timing") : NULL;
    if (gguf && j) { /* no split: the totals */
        printf("{\"shape\": \"%s\", \"layers\": %d, \"weights_mb\": %.1f, \"out\": \"gguf\", \"file_mb\": %.1f, "
               "\"tokens\": %d, \"wall_s\": %.2f, \"cpu_s\": %.2f, \"peak_rss_mb\": %.1f}\n",
               sh.name, sh.layers, bytes / 1e6, num(j, "bytes") / 1e6, nsamples * seqlen, wall, cpu, ru.ru_maxrss / 1024.0);
    } else if (!tm) {
        fprintf(stderr, "bench_model: no timing in piso's JSON output\n");
        return 1;
    } else {
        double one = num(tm, "one_float_block") * sh.layers; /* one float forward over the calibration tokens */
        const char *parts[] = {"float_forward", "quantized_forward", "statistics", "solves", "export"};
        printf("{\"shape\": \"%s\", \"layers\": %d, \"hidden\": %d, \"intermediate\": %d, \"vocab\": %d, \"weights_mb\": %.1f,\n",
               sh.name, sh.layers, sh.hidden, sh.inter, sh.vocab, bytes / 1e6);
        printf(" \"tokens\": %d, \"wall_s\": %.2f, \"cpu_s\": %.2f, \"peak_rss_mb\": %.1f, \"generate_s\": %.2f,\n",
               nsamples * seqlen, wall, cpu, ru.ru_maxrss / 1024.0, t_gen);
        printf(" \"one_float_forward_s\": %.3f, \"block_forwards_per_block\": %.2f,\n", one, num(tm, "block_forwards"));
        if (eta_at >= 0) /* predicted end of the run after the first block, against the real end */
            printf(" \"eta_after_first_block\": {\"at_s\": %.1f, \"eta_s\": %.1f, \"predicted_end_s\": %.1f, \"error_of_total\": %.3f},\n",
                   eta_at, eta_s, eta_at + eta_s, (eta_at + eta_s - wall) / wall);
        printf(" \"split_s\": {");
        for (int k = 0; k < 5; k++) printf("\"%s\": %.2f%s", parts[k], num(tm, parts[k]), k < 4 ? ", " : "},\n");
        printf(" \"split_in_float_forwards\": {");
        for (int k = 0; k < 5; k++) printf("\"%s\": %.2f%s", parts[k], one > 0 ? num(tm, parts[k]) / one : 0, k < 4 ? ", " : "}}\n");
    }
    cJSON_Delete(j);
    free(json);
    if (!keep) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", dir, out);
        if (system(cmd)) fprintf(stderr, "bench_model: could not remove %s\n", dir);
    }
    return 0;
}
