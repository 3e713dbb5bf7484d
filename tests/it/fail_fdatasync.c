/* LD_PRELOAD shim for the daemon-hardening tests: fdatasync(2) and fsync(2) fail with EIO
 * while the file named by EDGECAP_SHIM_FAIL_IF exists, as on an SD card that stopped taking
 * writes. With EDGECAP_SHIM_FAIL_MATCH set, only files whose path contains that string fail
 * (`.cursor`: a cursor that cannot be written). EDGECAP_SHIM_FAIL_OPS picks the calls that
 * fail: "sync" (the default: fdatasync and fsync), "pwrite" (pwrite and pwrite64, writing
 * nothing), or "all". The error is EIO, or ENOSPC with EDGECAP_SHIM_ERRNO=ENOSPC (a full disk).
 * Built by the tests with `cc -shared -fPIC`. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int shim_errno(void) {
    const char *name = getenv("EDGECAP_SHIM_ERRNO");
    return name != NULL && strcmp(name, "ENOSPC") == 0 ? ENOSPC : EIO;
}

/* op: 's' for a sync call, 'w' for a pwrite. */
static int op_selected(char op) {
    const char *ops = getenv("EDGECAP_SHIM_FAIL_OPS");
    if (ops == NULL || *ops == '\0' || strcmp(ops, "sync") == 0) return op == 's';
    if (strcmp(ops, "pwrite") == 0) return op == 'w';
    return strcmp(ops, "all") == 0;
}

static int failing(int fd, char op) {
    if (!op_selected(op)) return 0;
    const char *trigger = getenv("EDGECAP_SHIM_FAIL_IF");
    if (trigger == NULL || access(trigger, F_OK) != 0) return 0;
    const char *match = getenv("EDGECAP_SHIM_FAIL_MATCH");
    if (match == NULL || *match == '\0') return 1;
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0) return 0;
    path[n] = '\0';
    return strstr(path, match) != NULL;
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (failing(fd, 's')) {
        errno = shim_errno();
        return -1;
    }
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real(fd);
}

int fsync(int fd) {
    static int (*real)(int);
    if (failing(fd, 's')) {
        errno = shim_errno();
        return -1;
    }
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real(fd);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    static ssize_t (*real)(int, const void *, size_t, off_t);
    if (failing(fd, 'w')) {
        errno = shim_errno();
        return -1;
    }
    if (!real) real = (ssize_t (*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite");
    return real(fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off64_t offset) {
    static ssize_t (*real)(int, const void *, size_t, off64_t);
    if (failing(fd, 'w')) {
        errno = shim_errno();
        return -1;
    }
    if (!real) real = (ssize_t (*)(int, const void *, size_t, off64_t))dlsym(RTLD_NEXT, "pwrite64");
    return real(fd, buf, count, offset);
}
