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

int piso_read_file(const char *path, char **out, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return piso_errorf("%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return piso_errorf("%s: read error", path);
    }
    buf[n] = 0;
    *out = buf;
    if (size) *size = n;
    return 0;
}

int piso_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int piso_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

char *piso_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *s = malloc(a + b + 2);
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
    size_t n = strlen(path);
    o->path = strdup(path);
    o->tmp_path = malloc(n + 16);
    snprintf(o->tmp_path, n + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(o->tmp_path);
    if (fd < 0) {
        int e = errno;
        free(o->path);
        free(o->tmp_path);
        memset(o, 0, sizeof *o);
        return piso_errorf("%s: cannot create output: %s", path, strerror(e));
    }
    fchmod(fd, 0644);
    o->f = fdopen(fd, "wb");
    return 0;
}

int piso_outfile_write(struct piso_outfile *o, const void *data, size_t n) {
    if (n && fwrite(data, 1, n, o->f) != n) return piso_errorf("%s: write failed: %s", o->path, strerror(errno));
    return 0;
}

int piso_outfile_commit(struct piso_outfile *o) {
    int rc = 0;
    if (fflush(o->f) != 0 || fsync(fileno(o->f)) != 0) rc = piso_errorf("%s: write failed: %s", o->path, strerror(errno));
    if (fclose(o->f) != 0 && rc == 0) rc = piso_errorf("%s: close failed: %s", o->path, strerror(errno));
    o->f = NULL;
    if (rc == 0 && rename(o->tmp_path, o->path) != 0) rc = piso_errorf("%s: rename failed: %s", o->path, strerror(errno));
    if (rc != 0) unlink(o->tmp_path);
    free(o->path);
    free(o->tmp_path);
    memset(o, 0, sizeof *o);
    return rc;
}

void piso_outfile_abort(struct piso_outfile *o) {
    if (o->f) fclose(o->f);
    if (o->tmp_path) unlink(o->tmp_path);
    free(o->path);
    free(o->tmp_path);
    memset(o, 0, sizeof *o);
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
