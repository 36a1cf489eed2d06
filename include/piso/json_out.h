/* piso/json_out.h — one streaming JSON writer for every JSON the CLI prints or writes.
 *
 * Values are appended in order into a growing buffer. Each value call takes the member's key
 * inside an object and NULL inside an array. Strings are escaped as JSON requires (quote,
 * backslash, control characters; UTF-8 passes through unchanged); a non-finite number is written
 * as null, so the output always parses.
 *
 *   struct piso_json w;
 *   piso_json_begin(&w, PISO_JSON_SPACED);        // opens the top-level object
 *   piso_json_string(&w, "out", path);
 *   piso_json_fixed(&w, "seconds", dt, 3);
 *   piso_json_print(&w, stdout);                  // closes it, prints it with '\n', frees it
 */
#ifndef PISO_JSON_OUT_H
#define PISO_JSON_OUT_H

#include <stddef.h>
#include <stdint.h>
#include "piso/common.h"

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

enum piso_json_style {
    PISO_JSON_SPACED,  /* {"a": 1, "b": [1, 2]}  — one line, a space after ':' and ',' */
    PISO_JSON_COMPACT, /* {"a":1,"b":[1,2]}      — one line (cJSON_PrintUnformatted's layout) */
    PISO_JSON_PRETTY,  /* one member per line, tab-indented (cJSON_Print's layout) */
};

enum { PISO_JSON_MAX_DEPTH = 32 };

struct piso_json {
    struct piso_buf out;
    enum piso_json_style style;
    int depth;                                   /* open objects and arrays */
    unsigned char is_array[PISO_JSON_MAX_DEPTH]; /* per open level */
    unsigned char has_items[PISO_JSON_MAX_DEPTH];
    int failed; /* out of memory or misuse (nesting too deep, key missing); the output is dropped */
};

/* Starts a document whose top level is an object. */
void piso_json_begin(struct piso_json *w, enum piso_json_style style);
void piso_json_object_begin(struct piso_json *w, const char *key);
void piso_json_object_end(struct piso_json *w);
void piso_json_array_begin(struct piso_json *w, const char *key);
void piso_json_array_end(struct piso_json *w);

void piso_json_string(struct piso_json *w, const char *key, const char *s); /* NULL s: null */
void piso_json_bool(struct piso_json *w, const char *key, int b);
void piso_json_null(struct piso_json *w, const char *key);
void piso_json_int(struct piso_json *w, const char *key, int64_t v);
/* %.15g, or %.17g where %.15g does not read back as v: the same text cJSON prints for a
 * number. */
void piso_json_number(struct piso_json *w, const char *key, double v);
void piso_json_fixed(struct piso_json *w, const char *key, double v, int decimals); /* %.<decimals>f */
void piso_json_sig(struct piso_json *w, const char *key, double v, int digits);     /* %.<digits>g */

/* Closes every open level and returns the text (malloc'd; the writer is reset), or NULL with an
 * error message when the document could not be built. */
char *piso_json_finish(struct piso_json *w);
/* piso_json_finish, then prints the text and a newline to f. Returns 0, or -1 with a message. */
int piso_json_print(struct piso_json *w, FILE *f);
void piso_json_free(struct piso_json *w); /* drops an unfinished document */

#ifdef __cplusplus
}
#endif

#endif
