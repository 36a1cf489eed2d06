/* piso/common.h — errors, logging and progress, number conversions, files.
 *
 * Conventions used across the library:
 *  - functions that can fail return int: 0 on success, -1 on failure; the failure's message
 *    (naming the file, tensor or field and what is wrong) is kept per thread and read with
 *    piso_last_error();
 *  - matrices are row-major float arrays; shapes are written in comments as [rows, cols];
 *  - storage is fp32, long sums accumulate in fp64.
 */
#ifndef PISO_COMMON_H
#define PISO_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors ----------------------------------------------------------------------------- */
/* Records a printf-style message as the current error and returns -1 (so `return piso_errorf(..)`). */
int piso_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prepends context ("while loading X: ") to the current error and returns -1. */
int piso_error_context(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *piso_last_error(void);
void piso_clear_error(void);

/* ---- logging and progress (stderr; silenced by piso_set_quiet(1)) ------------------------ */
void piso_set_quiet(int quiet);
int piso_is_quiet(void);
void piso_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A progress line "stage: k/n  rate unit/s  ETA". Call with k = 0 first (starts the clock),
 * then after each item; prints at most a few times a second and always at k == n. */
struct piso_progress {
    const char *stage;
    const char *unit; /* e.g. "layers", "tokens" */
    double t_start, t_last_print;
    int64_t total;
};
void piso_progress_begin(struct piso_progress *p, const char *stage, const char *unit, int64_t total);
void piso_progress_update(struct piso_progress *p, int64_t done);

double piso_time(void); /* monotonic seconds */
/* malloc, then zero-filled by the calling thread (reads as zeros, as calloc): a large buffer's pages
 * are faulted in by one thread. In VMs, faults from several threads at once can cost several times
 * more (512 MB from calloc, first touched by a parallel GEMM: 1.3 s more than after a memset).
 * NULL when out of memory. */
void *piso_malloc_touched(size_t bytes);

/* ---- number formats ---------------------------------------------------------------------- */
enum piso_dtype {
    PISO_DTYPE_F32 = 0,
    PISO_DTYPE_F16,
    PISO_DTYPE_BF16,
    PISO_DTYPE_F64,
    PISO_DTYPE_I8,
    PISO_DTYPE_U8,
    PISO_DTYPE_I16,
    PISO_DTYPE_I32,
    PISO_DTYPE_I64,
    PISO_DTYPE_BOOL,
    PISO_DTYPE_COUNT
};
const char *piso_dtype_name(enum piso_dtype t); /* safetensors spelling: "F32", "BF16", ... */
size_t piso_dtype_size(enum piso_dtype t);
int piso_dtype_from_name(const char *name, enum piso_dtype *out); /* -1 if unknown (no message) */

uint16_t piso_fp32_to_fp16(float f);  /* round to nearest even, saturates to inf like IEEE */
float piso_fp16_to_fp32(uint16_t h);
uint16_t piso_fp32_to_bf16(float f);  /* round to nearest even; NaN stays NaN */
float piso_bf16_to_fp32(uint16_t h);
/* Converts n elements of type t at src into fp32 dst. -1 for non-float types. */
int piso_convert_to_f32(enum piso_dtype t, const void *src, float *dst, size_t n);
/* Index of the first non-finite value in x[0..n), or -1 if all are finite. */
int64_t piso_find_nonfinite(const float *x, size_t n);

/* ---- files -------------------------------------------------------------------------------- */
struct piso_mmap {
    const uint8_t *data;
    size_t size;
    char *path; /* owned copy, for messages */
};
int piso_mmap_open(struct piso_mmap *m, const char *path);
void piso_mmap_close(struct piso_mmap *m);
/* Reads a whole file into a NUL-terminated malloc'd buffer, refusing (with a message naming the
 * path and the limit) a file larger than piso_read_limit(): 1 GiB, or $PISO_READ_LIMIT bytes. */
#define PISO_READ_LIMIT_DEFAULT ((size_t)1 << 30)
int piso_read_file(const char *path, char **out, size_t *size);
/* The same with an explicit limit in bytes (e.g. 64 MiB for a config.json). */
int piso_read_file_max(const char *path, char **out, size_t *size, size_t max);
size_t piso_read_limit(void);
#define PISO_JSON_LIMIT ((size_t)64 << 20) /* config.json, an index, tokenizer_config.json */
int piso_file_exists(const char *path);
int piso_is_dir(const char *path);
/* Joins a directory and a file name into a malloc'd string. */
char *piso_path_join(const char *dir, const char *name);
int piso_mkdir_p(const char *path);

/* A growable byte buffer, kept NUL-terminated (so text can be read from it as a C string). An
 * allocation failure sets `failed` and drops later appends; the owner checks it once at the end. */
struct piso_buf {
    char *data;
    size_t len, cap;
    int failed;
};
void piso_buf_put(struct piso_buf *b, const void *p, size_t n);
void piso_buf_free(struct piso_buf *b);

/* Atomic output: write into a temporary file beside `path`, then rename over it on commit.
 * On abort (or any failure) the temporary is removed, so a partial output never appears. */
struct piso_outfile {
    FILE *f;
    char *path;
    char *tmp_path;
    int cleanup_id; /* the temporary's slot in the interrupt cleanup */
};
int piso_outfile_open(struct piso_outfile *o, const char *path);
/* Checks, before any work, that `path` can become an output (a file, or with is_dir a directory):
 * not empty, not the wrong kind of existing thing, in an existing writable directory. The message
 * names the path. */
int piso_output_check(const char *path, int is_dir);
int piso_outfile_write(struct piso_outfile *o, const void *data, size_t n);
int piso_outfile_commit(struct piso_outfile *o); /* flush, fsync, rename; frees */
void piso_outfile_abort(struct piso_outfile *o);

/* ---- interrupted runs (common/cleanup.c) ------------------------------------------------
 * piso_interrupt_install makes SIGINT/SIGTERM/SIGHUP remove every registered temporary output
 * (a file, or with is_dir a flat directory), print "<prog>: interrupted ..." and end the process
 * with the signal. Between piso_commit_begin and _end (renaming a finished output into place) a
 * signal is held until the end. Tests: PISO_TEST_SIGNAL=INT|TERM[:N] raises the signal right after
 * the N-th (default first) registration. */
void piso_interrupt_install(const char *prog);
int piso_cleanup_add(const char *path, int is_dir); /* slot id, or -1 (then not protected) */
void piso_cleanup_remove(int id);
void piso_commit_begin(void);
void piso_commit_end(void);

/* ---- data location (tests, benches): $PISO_DATA or the given default -------------------- */
const char *piso_data_dir(const char *fallback);

/* Number of OpenMP threads in use (1 without OpenMP). */
int piso_num_threads(void);

#ifdef __cplusplus
}
#endif
#endif
