/* The streaming JSON writer (piso/json_out.h). The three layouts differ only in the separators
 * written between items, so one emitter serves them all. */
#include "piso/json_out.h"
#include "piso/common.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static void put(struct piso_json *w, const char *s, size_t n) {
    if (!w->failed) piso_buf_put(&w->out, s, n);
    if (w->out.failed) w->failed = 1;
}

static void puts_(struct piso_json *w, const char *s) { put(w, s, strlen(s)); }

static void tabs(struct piso_json *w, int n) {
    for (int i = 0; i < n; i++) put(w, "\t", 1);
}

static void put_string(struct piso_json *w, const char *s) {
    put(w, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        const unsigned char *run = p; /* bytes that need no escape go out in one piece */
        while (*p && *p >= 0x20 && *p != '"' && *p != '\\') p++;
        put(w, (const char *)run, (size_t)(p - run));
        if (!*p) break;
        char esc[8];
        switch (*p) {
        case '"': strcpy(esc, "\\\""); break;
        case '\\': strcpy(esc, "\\\\"); break;
        case '\b': strcpy(esc, "\\b"); break;
        case '\f': strcpy(esc, "\\f"); break;
        case '\n': strcpy(esc, "\\n"); break;
        case '\r': strcpy(esc, "\\r"); break;
        case '\t': strcpy(esc, "\\t"); break;
        default: snprintf(esc, sizeof esc, "\\u%04x", *p); break;
        }
        puts_(w, esc);
    }
    put(w, "\"", 1);
}

/* The separator and key before a new item at the current level. */
static void item(struct piso_json *w, const char *key) {
    if (w->failed) return;
    if (w->depth == 0) { /* nothing open: only begin() may write here */
        w->failed = 1;
        return;
    }
    int d = w->depth - 1;
    int is_array = w->is_array[d];
    if (!is_array != (key != NULL)) { /* a key inside an object, none inside an array */
        w->failed = 1;
        return;
    }
    if (w->has_items[d])
        puts_(w, w->style == PISO_JSON_COMPACT ? "," : w->style == PISO_JSON_SPACED || is_array ? ", " : ",\n");
    w->has_items[d] = 1;
    if (is_array) return;
    if (w->style == PISO_JSON_PRETTY) tabs(w, w->depth);
    put_string(w, key);
    puts_(w, w->style == PISO_JSON_COMPACT ? ":" : w->style == PISO_JSON_SPACED ? ": " : ":\t");
}

static void open_level(struct piso_json *w, int is_array) {
    if (w->failed) return;
    if (w->depth >= PISO_JSON_MAX_DEPTH) {
        w->failed = 1;
        return;
    }
    put(w, is_array ? "[" : "{", 1);
    if (!is_array && w->style == PISO_JSON_PRETTY) put(w, "\n", 1);
    w->is_array[w->depth] = (unsigned char)is_array;
    w->has_items[w->depth] = 0;
    w->depth++;
}

static void close_level(struct piso_json *w, int is_array) {
    if (w->failed) return;
    if (w->depth == 0 || w->is_array[w->depth - 1] != is_array) {
        w->failed = 1;
        return;
    }
    if (!is_array && w->style == PISO_JSON_PRETTY) {
        if (w->has_items[w->depth - 1]) put(w, "\n", 1);
        tabs(w, w->depth - 1);
    }
    put(w, is_array ? "]" : "}", 1);
    w->depth--;
}

void piso_json_begin(struct piso_json *w, enum piso_json_style style) {
    memset(w, 0, sizeof *w);
    w->style = style;
    open_level(w, 0);
}

void piso_json_object_begin(struct piso_json *w, const char *key) {
    item(w, key);
    open_level(w, 0);
}
void piso_json_object_end(struct piso_json *w) { close_level(w, 0); }

void piso_json_array_begin(struct piso_json *w, const char *key) {
    item(w, key);
    open_level(w, 1);
}
void piso_json_array_end(struct piso_json *w) { close_level(w, 1); }

void piso_json_string(struct piso_json *w, const char *key, const char *s) {
    item(w, key);
    if (s)
        put_string(w, s);
    else
        puts_(w, "null");
}

void piso_json_bool(struct piso_json *w, const char *key, int b) {
    item(w, key);
    puts_(w, b ? "true" : "false");
}

void piso_json_null(struct piso_json *w, const char *key) {
    item(w, key);
    puts_(w, "null");
}

void piso_json_int(struct piso_json *w, const char *key, int64_t v) {
    char t[32];
    snprintf(t, sizeof t, "%lld", (long long)v);
    item(w, key);
    puts_(w, t);
}

/* A number in printf format fmt, or null when it is not finite (JSON has no NaN or infinity). */
static void put_number(struct piso_json *w, const char *key, double v, const char *fmt, int precision) {
    char t[512];
    if (isfinite(v))
        snprintf(t, sizeof t, fmt, precision, v);
    else
        strcpy(t, "null");
    item(w, key);
    puts_(w, t);
}

void piso_json_number(struct piso_json *w, const char *key, double v) {
    char t[64];
    /* 15 significant digits unless that loses the value beyond one rounding step */
    snprintf(t, sizeof t, "%1.15g", v);
    double back = strtod(t, NULL);
    int precision = fabs(back - v) <= fmax(fabs(back), fabs(v)) * DBL_EPSILON ? 15 : 17;
    put_number(w, key, v, "%1.*g", precision);
}

void piso_json_fixed(struct piso_json *w, const char *key, double v, int decimals) {
    put_number(w, key, v, "%.*f", decimals);
}

void piso_json_sig(struct piso_json *w, const char *key, double v, int digits) {
    put_number(w, key, v, "%.*g", digits);
}

char *piso_json_finish(struct piso_json *w) {
    while (!w->failed && w->depth > 0) close_level(w, w->is_array[w->depth - 1]);
    char *text = w->failed ? NULL : w->out.data;
    if (!text) {
        piso_buf_free(&w->out);
        piso_errorf("JSON output: could not build the document (out of memory or a writer misuse)");
    }
    memset(w, 0, sizeof *w);
    return text;
}

int piso_json_print(struct piso_json *w, FILE *f) {
    char *text = piso_json_finish(w);
    if (!text) return -1;
    int rc = fprintf(f, "%s\n", text) < 0 ? piso_errorf("JSON output: write failed") : 0;
    free(text);
    return rc;
}

void piso_json_free(struct piso_json *w) {
    piso_buf_free(&w->out);
    memset(w, 0, sizeof *w);
}
