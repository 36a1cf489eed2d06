/* mmap'd inputs, whole-file reads, atomic outputs, paths. */
#include "piso/common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

int piso_mmap_open(struct piso_mmap *m, const char *path) {
    memset(m, 0, sizeof *m);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return piso_errorf("%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return piso_errorf("%s: not a regular file", path);
    }
    m->size = (size_t)st.st_size;
    static const uint8_t empty[8]; /* an empty file maps to a valid empty range, never NULL + 0 */
    m->data = empty;
    if (m->size > 0) {
        /* copy-on-write: callers may modify mapped data (e.g. quantize an F32 weight in place);
         * pages they write become private copies and the file is never touched */
        void *p = mmap(NULL, m->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            close(fd);
            return piso_errorf("%s: mmap failed: %s", path, strerror(errno));
        }
        m->data = p;
    }
    close(fd);
    m->path = strdup(path);
    return 0;
}

void piso_mmap_close(struct piso_mmap *m) {
    if (m->data && m->size) munmap((void *)m->data, m->size);
    free(m->path);
    memset(m, 0, sizeof *m);
}

size_t piso_read_limit(void) {
    const char *e = getenv("PISO_READ_LIMIT"); /* bytes; tests lower it */
    if (e && *e) {
        char *end;
        unsigned long long v = strtoull(e, &end, 10);
        if (*end == 0 && v > 0) return (size_t)v;
    }
    return PISO_READ_LIMIT_DEFAULT;
}

static void format_bytes(size_t n, char *buf, size_t size) {
    if (n >= (1u << 20) && n % (1u << 20) == 0) snprintf(buf, size, "%zu MiB", n >> 20);
    else snprintf(buf, size, "%zu bytes", n);
}

int piso_read_file_max(const char *path, char **out, size_t *size, size_t max) {
    *out = NULL;
    if (size) *size = 0;
    char lim[64];
    format_bytes(max, lim, sizeof lim);
    if (!path) return piso_errorf("out of memory (no path to read)");
    FILE *f = fopen(path, "rb");
    if (!f) return piso_errorf("%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            fclose(f);
            return piso_errorf("%s: is a directory, not a file", path);
        }
        if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > (uint64_t)max) {
            fclose(f);
            return piso_errorf("%s: too large (%lld bytes; the limit for this input is %s)", path,
                               (long long)st.st_size, lim);
        }
    }
    struct piso_buf buf = {0};
    piso_buf_put(&buf, "", 0); /* an empty file reads as "" */
    char chunk[1 << 16];
    size_t r;
    while (!buf.failed && (r = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (r > max - buf.len) {
            piso_buf_free(&buf);
            fclose(f);
            return piso_errorf("%s: too large (more than %s, the limit for this input)", path, lim);
        }
        piso_buf_put(&buf, chunk, r);
    }
    int err = ferror(f);
    int e = errno;
    fclose(f);
    if (buf.failed) {
        piso_buf_free(&buf);
        return piso_errorf("%s: out of memory reading the file", path);
    }
    if (err) {
        piso_buf_free(&buf);
        return piso_errorf("%s: read error: %s", path, strerror(e));
    }
    *out = buf.data;
    if (size) *size = buf.len;
    return 0;
}

int piso_read_file(const char *path, char **out, size_t *size) {
    return piso_read_file_max(path, out, size, piso_read_limit());
}

int piso_output_check(const char *path, int is_dir) {
    if (!path || !*path) return piso_errorf("output path '' is empty: name a %s to write", is_dir ? "directory" : "file");
    size_t n = strlen(path);
    if (!is_dir && path[n - 1] == '/') return piso_errorf("output %s ends in '/': name a file, not a directory", path);
    struct stat st;
    if (stat(path, &st) == 0) {
        if (!is_dir && S_ISDIR(st.st_mode)) return piso_errorf("output %s is an existing directory, not a file", path);
        if (is_dir && !S_ISDIR(st.st_mode)) return piso_errorf("output %s exists and is not a directory", path);
    }
    /* the output is written beside itself under a temporary name and renamed: its parent must be a
     * writable directory */
    char *parent = strdup(path);
    if (!parent) return piso_errorf("%s: out of memory", path);
    size_t k = n;
    while (k > 1 && parent[k - 1] == '/') parent[--k] = 0; /* "dir/" names dir */
    char *slash = strrchr(parent, '/');
    const char *dir = ".";
    if (slash == parent) parent[1] = 0, dir = parent;
    else if (slash) *slash = 0, dir = parent;
    int rc = 0;
    if (stat(dir, &st) != 0)
        rc = piso_errorf("cannot write %s: its directory %s does not exist", path, dir);
    else if (!S_ISDIR(st.st_mode))
        rc = piso_errorf("cannot write %s: %s is not a directory", path, dir);
    else if (access(dir, W_OK | X_OK) != 0)
        rc = piso_errorf("cannot write %s: directory %s is not writable: %s", path, dir, strerror(errno));
    free(parent);
    return rc;
}

int piso_file_exists(const char *path) {
    struct stat st;
    return path && stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int piso_is_dir(const char *path) {
    struct stat st;
    return path && stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

char *piso_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *s = malloc(a + b + 2);
    if (!s) { /* callers pass NULL on to piso_file_exists & co., which treat it as absent */
        piso_errorf("%s/%s: out of memory", dir, name);
        return NULL;
    }
    memcpy(s, dir, a);
    size_t k = a;
    if (a && dir[a - 1] != '/') s[k++] = '/';
    memcpy(s + k, name, b + 1);
    return s;
}

int piso_mkdir_p(const char *path) {
    char *p = strdup(path);
    for (char *c = p + 1; *c; c++) {
        if (*c != '/') continue;
        *c = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            int e = errno;
            free(p);
            return piso_errorf("%s: cannot create directory: %s", path, strerror(e));
        }
        *c = '/';
    }
    int rc = mkdir(p, 0755);
    int e = errno;
    free(p);
    if (rc != 0 && e != EEXIST) return piso_errorf("%s: cannot create directory: %s", path, strerror(e));
    if (!piso_is_dir(path)) return piso_errorf("%s: exists and is not a directory", path);
    return 0;
}

int piso_outfile_open(struct piso_outfile *o, const char *path) {
    memset(o, 0, sizeof *o);
    o->cleanup_id = -1;
    if (piso_output_check(path, 0)) return -1;
    size_t n = strlen(path);
    o->path = strdup(path);
    o->tmp_path = malloc(n + 16);
    if (!o->path || !o->tmp_path) {
        free(o->path), free(o->tmp_path);
        memset(o, 0, sizeof *o);
        return piso_errorf("%s: out of memory", path);
    }
    snprintf(o->tmp_path, n + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(o->tmp_path);
    if (fd < 0) {
        int e = errno;
        free(o->path);
        free(o->tmp_path);
        memset(o, 0, sizeof *o);
        return piso_errorf("%s: cannot create output: %s", path, strerror(e));
    }
    o->cleanup_id = piso_cleanup_add(o->tmp_path, 0);
    if (fchmod(fd, 0644) != 0 || !(o->f = fdopen(fd, "wb"))) {
        int e = errno;
        if (!o->f) close(fd);
        o->f = NULL;
        piso_outfile_abort(o);
        return piso_errorf("%s: cannot create output: %s", path, strerror(e));
    }
    return 0;
}

int piso_outfile_write(struct piso_outfile *o, const void *data, size_t n) {
    if (n && fwrite(data, 1, n, o->f) != n)
        return piso_errorf("%s: write failed: %s", o->path, errno ? strerror(errno) : "short write");
    return 0;
}

int piso_outfile_commit(struct piso_outfile *o) {
    int rc = 0;
    errno = 0;
    if (fflush(o->f) != 0 || fsync(fileno(o->f)) != 0)
        rc = piso_errorf("%s: write failed: %s", o->path, errno ? strerror(errno) : "short write");
    if (fclose(o->f) != 0 && rc == 0) rc = piso_errorf("%s: close failed: %s", o->path, strerror(errno));
    o->f = NULL;
    piso_commit_begin(); /* a signal now waits until the output is renamed or removed */
    if (rc == 0 && rename(o->tmp_path, o->path) != 0) rc = piso_errorf("%s: rename failed: %s", o->path, strerror(errno));
    if (rc != 0) unlink(o->tmp_path);
    piso_cleanup_remove(o->cleanup_id);
    piso_commit_end();
    free(o->path);
    free(o->tmp_path);
    memset(o, 0, sizeof *o);
    o->cleanup_id = -1;
    return rc;
}

void piso_outfile_abort(struct piso_outfile *o) {
    if (o->f) fclose(o->f);
    if (o->tmp_path) unlink(o->tmp_path);
    piso_cleanup_remove(o->cleanup_id);
    free(o->path);
    free(o->tmp_path);
    memset(o, 0, sizeof *o);
    o->cleanup_id = -1;
}

const char *piso_data_dir(const char *fallback) {
    const char *e = getenv("PISO_DATA");
    return e && *e ? e : fallback;
}

int piso_num_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
