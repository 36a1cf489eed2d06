/* fuzz/fuzz_common.h — shared by the libFuzzer targets (scripts/fuzz.sh).
 *
 * piso's parsers read files (mmap), so each input is written to a file in a private temporary
 * directory first. FUZZ_CHECK aborts with a message when an invariant fails: libFuzzer then saves
 * the input as a crash, like a sanitizer report. */
#ifndef PISO_FUZZ_COMMON_H
#define PISO_FUZZ_COMMON_H

#include "piso/common.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FUZZ_CHECK(cond, ...)                                                                  \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "fuzz invariant failed at %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fprintf(stderr, "\n");                                                             \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

static char fuzz_dir_path[256];

/* At exit: the private directory and the files in it (and in its one subdirectory level) go. */
static inline void fuzz_dir_remove(void) {
    DIR *d = opendir(fuzz_dir_path);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[600];
        snprintf(p, sizeof p, "%s/%s", fuzz_dir_path, e->d_name);
        if (unlink(p) != 0) { /* a directory (fuzz_config_json's model directory) */
            DIR *s = opendir(p);
            struct dirent *f;
            while (s && (f = readdir(s))) {
                if (f->d_name[0] == '.') continue;
                char q[1200];
                snprintf(q, sizeof q, "%s/%s", p, f->d_name);
                unlink(q);
            }
            if (s) closedir(s);
            rmdir(p);
        }
    }
    if (d) closedir(d);
    rmdir(fuzz_dir_path);
}

/* The private directory (created on first use; /dev/shm when there is one; removed at exit). */
static inline const char *fuzz_dir(void) {
    char *dir = fuzz_dir_path;
    if (!dir[0]) {
        struct stat st;
        const char *base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
        snprintf(dir, sizeof fuzz_dir_path, "%s/piso-fuzz-%d", base, (int)getpid());
        mkdir(dir, 0700);
        atexit(fuzz_dir_remove);
        piso_set_quiet(1);
    }
    return dir;
}

/* The shared data: $PISO_DATA, else the build's default. */
static inline const char *fuzz_data_root(void) {
    const char *e = getenv("PISO_DATA");
#ifdef PISO_DATA_DEFAULT
    return e && *e ? e : PISO_DATA_DEFAULT;
#else
    return e && *e ? e : "../shared";
#endif
}

/* dir/name, in a static buffer (4 rotating slots). */
static inline const char *fuzz_path(const char *name) {
    static char bufs[4][512];
    static int k;
    char *b = bufs[k++ & 3];
    snprintf(b, 512, "%s/%s", fuzz_dir(), name);
    return b;
}

/* Writes the input to dir/name and returns the path. */
static inline const char *fuzz_file(const uint8_t *data, size_t size, const char *name) {
    const char *p = fuzz_path(name);
    FILE *f = fopen(p, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    return p;
}

static inline unsigned char *fuzz_slurp(const char *path, size_t *n) {
    char *b = NULL;
    if (piso_read_file(path, &b, n) != 0) return NULL;
    return (unsigned char *)b;
}

#endif
