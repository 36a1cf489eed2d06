/* Per-thread error messages and stderr logging/progress. */
#include "piso/common.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static _Thread_local char g_error[2048];
static int g_quiet;

int piso_errorf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_error, sizeof g_error, fmt, ap);
    va_end(ap);
    return -1;
}

int piso_error_context(const char *fmt, ...) {
    char prefix[1024], old[sizeof g_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, g_error, sizeof old);
    size_t n = strlen(prefix);
    if (n > sizeof g_error - 3) n = sizeof g_error - 3;
    memcpy(g_error, prefix, n);
    memcpy(g_error + n, ": ", 2);
    const char *rest = old[0] ? old : "failed";
    size_t m = strlen(rest), room = sizeof g_error - n - 3;
    if (m > room) m = room;
    memcpy(g_error + n + 2, rest, m);
    g_error[n + 2 + m] = 0;
    return -1;
}

const char *piso_last_error(void) { return g_error[0] ? g_error : "unknown error"; }
void piso_clear_error(void) { g_error[0] = 0; }

void piso_set_quiet(int quiet) { g_quiet = quiet; }
int piso_is_quiet(void) { return g_quiet; }

void piso_log(const char *fmt, ...) {
    if (g_quiet) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

double piso_time(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void *piso_malloc_touched(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (p) memset(p, 0, bytes);
    return p;
}

void piso_progress_begin(struct piso_progress *p, const char *stage, const char *unit, int64_t total) {
    p->stage = stage;
    p->unit = unit;
    p->total = total;
    p->t_start = piso_time();
    p->t_last_print = 0;
}

void piso_progress_update(struct piso_progress *p, int64_t done) {
    if (g_quiet) return;
    double now = piso_time();
    int last = done >= p->total;
    if (!last && now - p->t_last_print < 0.5) return;
    p->t_last_print = now;
    double el = now - p->t_start;
    double rate = el > 0 ? (double)done / el : 0;
    double eta = rate > 0 ? (double)(p->total - done) / rate : 0;
    fprintf(stderr, "\r%s: %lld/%lld %s  %.1f %s/s  elapsed %.1fs  ETA %.1fs   ", p->stage,
            (long long)done, (long long)p->total, p->unit, rate, p->unit, el, eta);
    if (last) fputc('\n', stderr);
    fflush(stderr);
}
