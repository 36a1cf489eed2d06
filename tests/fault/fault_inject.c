/* Fault injection for the piso CLI (CMake -DPISO_FAULT=ON; driver: scripts/fault.sh). Linked into the
 * piso executable with -Wl,--wrap=..., so every call from piso's own code goes through here (the
 * allocator of shared libraries such as cJSON is not wrapped):
 *   PISO_FAULT_ALLOC=n    the n-th allocation (malloc, calloc, realloc, strdup, strndup) returns NULL
 *   PISO_FAULT_WRITE=n    the n-th fwrite writes half its bytes and fails with ENOSPC
 *   PISO_FAULT_RENAME=n   the n-th rename fails with EIO
 *   PISO_FAULT_REPORT=F   at exit, writes "allocs A writes W renames R faults_hit H" to F
 * Counting is process-wide and atomic; run with OMP_NUM_THREADS=1 for a deterministic order. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t a, size_t b);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
size_t __real_fwrite(const void *p, size_t size, size_t n, FILE *f);
int __real_rename(const char *a, const char *b);

static atomic_long allocs, writes, renames, hits;
static long fail_alloc = -2, fail_write, fail_rename; /* -2: not read yet */

static void report(void) {
    const char *r = getenv("PISO_FAULT_REPORT");
    if (!r) return;
    FILE *f = fopen(r, "w");
    if (!f) return;
    fprintf(f, "allocs %ld writes %ld renames %ld faults_hit %ld\n", (long)allocs, (long)writes, (long)renames,
            (long)hits);
    fclose(f);
}

static void init(void) {
    if (fail_alloc != -2) return;
    const char *a = getenv("PISO_FAULT_ALLOC"), *w = getenv("PISO_FAULT_WRITE"), *r = getenv("PISO_FAULT_RENAME");
    fail_write = w ? atol(w) : 0;
    fail_rename = r ? atol(r) : 0;
    atexit(report);
    fail_alloc = a ? atol(a) : 0;
}

static int alloc_fails(void) {
    init();
    long k = ++allocs;
    if (k == fail_alloc) {
        hits++;
        return 1;
    }
    return 0;
}

/* In-process use (tests/test_fault_alloc.c): fail the n-th allocation from now (0: none); the
 * number of allocations so far; how many faults were injected. */
void piso_fault_alloc_after(long n);
long piso_fault_allocs(void);
long piso_fault_hits(void);
void piso_fault_alloc_after(long n) {
    init();
    fail_alloc = n > 0 ? (long)allocs + n : 0;
}
long piso_fault_allocs(void) { return (long)allocs; }
long piso_fault_hits(void) { return (long)hits; }

void *__wrap_malloc(size_t n) { return alloc_fails() ? (errno = ENOMEM, NULL) : __real_malloc(n); }
void *__wrap_calloc(size_t a, size_t b) { return alloc_fails() ? (errno = ENOMEM, NULL) : __real_calloc(a, b); }
void *__wrap_realloc(void *p, size_t n) { return alloc_fails() ? (errno = ENOMEM, NULL) : __real_realloc(p, n); }
char *__wrap_strdup(const char *s) { return alloc_fails() ? (errno = ENOMEM, NULL) : __real_strdup(s); }
char *__wrap_strndup(const char *s, size_t n) { return alloc_fails() ? (errno = ENOMEM, NULL) : __real_strndup(s, n); }

size_t __wrap_fwrite(const void *p, size_t size, size_t n, FILE *f) {
    init();
    if (f != stdout && f != stderr && ++writes == fail_write) {
        hits++;
        size_t half = size ? n / 2 : 0;
        if (half) __real_fwrite(p, size, half, f);
        errno = ENOSPC;
        return half;
    }
    return __real_fwrite(p, size, n, f);
}

int __wrap_rename(const char *a, const char *b) {
    init();
    if (++renames == fail_rename) {
        hits++;
        errno = EIO;
        return -1;
    }
    return __real_rename(a, b);
}
