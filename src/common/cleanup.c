/* Interrupted runs lose nothing: temporary outputs are registered here while they are written, and
 * SIGINT/SIGTERM/SIGHUP remove them (files, or flat directories) before the process ends with the
 * signal. The handler uses only async-signal-safe calls (unlink, getdents64, rmdir, write). While a
 * commit renames a finished output into place, a signal waits until the commit is done, so an
 * existing output is replaced whole or not at all. */
#include "piso/common.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { SLOTS = 32, PATH_CAP = 4096 };

static struct {
    char path[PATH_CAP];
    int is_dir;
    volatile sig_atomic_t used;
} slots[SLOTS];
static char prog_name[64] = "piso";
static volatile sig_atomic_t in_commit, pending, handling;
static int test_signal, test_at = -1, registrations; /* PISO_TEST_SIGNAL=INT|TERM[:N] */

static size_t slen(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

static void say(const char *s) {
    ssize_t r = write(2, s, slen(s));
    (void)r;
}

struct dirent64_raw {
    unsigned long long d_ino;
    long long d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

/* Removes a flat directory (files only) with raw system calls. */
static void remove_dir_raw(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        char buf[4096] __attribute__((aligned(8)));
        for (;;) {
            long n = syscall(SYS_getdents64, fd, buf, sizeof buf);
            if (n <= 0) break;
            for (long off = 0; off < n;) {
                struct dirent64_raw *d = (struct dirent64_raw *)(buf + off);
                off += d->d_reclen;
                if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, "..")) continue;
                unlinkat(fd, d->d_name, 0);
            }
        }
        close(fd);
    }
    rmdir(path);
}

static void cleanup_all(int *removed) {
    for (int i = 0; i < SLOTS; i++) {
        if (!slots[i].used) continue;
        if (slots[i].is_dir) remove_dir_raw(slots[i].path);
        else unlink(slots[i].path);
        slots[i].used = 0;
        (*removed)++;
    }
}

static void handler(int sig) {
    if (in_commit) { /* finish the rename first; piso_commit_end re-raises */
        pending = sig;
        return;
    }
    if (handling) return;
    handling = 1;
    int removed = 0;
    cleanup_all(&removed);
    say(prog_name);
    say(sig == SIGINT ? ": interrupted (SIGINT)" : sig == SIGTERM ? ": terminated (SIGTERM)" : ": hung up (SIGHUP)");
    say(removed ? "; removed the temporary output, an existing output is untouched\n" : "; nothing was written\n");
    signal(sig, SIG_DFL);
    raise(sig);
    _exit(128 + sig);
}

void piso_interrupt_install(const char *prog) {
    snprintf(prog_name, sizeof prog_name, "%s", prog ? prog : "piso");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGINT);
    sigaddset(&sa.sa_mask, SIGTERM);
    sigaddset(&sa.sa_mask, SIGHUP);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    const char *t = getenv("PISO_TEST_SIGNAL");
    if (t && *t) {
        test_signal = !strncmp(t, "TERM", 4) ? SIGTERM : SIGINT;
        const char *colon = strchr(t, ':');
        test_at = colon ? atoi(colon + 1) : 1;
    }
}

int piso_cleanup_add(const char *path, int is_dir) {
    if (slen(path) >= PATH_CAP) return -1;
    int id = -1;
    for (int i = 0; i < SLOTS && id < 0; i++)
        if (!slots[i].used) id = i;
    if (id < 0) return -1;
    memcpy(slots[id].path, path, slen(path) + 1);
    slots[id].is_dir = is_dir;
    slots[id].used = 1;
    if (test_signal && ++registrations == test_at) raise(test_signal); /* tests: interrupt right here */
    return id;
}

void piso_cleanup_remove(int id) {
    if (id >= 0 && id < SLOTS) slots[id].used = 0;
}

void piso_commit_begin(void) { in_commit = 1; }

void piso_commit_end(void) {
    in_commit = 0;
    if (pending) {
        int sig = pending;
        pending = 0;
        raise(sig);
    }
}
