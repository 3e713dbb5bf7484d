/* LD_PRELOAD shim for the daemon-hardening tests: fdatasync(2) and fsync(2) fail with EIO
 * while the file named by EDGECAP_SHIM_FAIL_IF exists, as on an SD card that stopped taking
 * writes. With EDGECAP_SHIM_FAIL_MATCH set, only files whose path contains that string fail
 * (`.cursor`: a cursor that cannot be written). Built by the tests with `cc -shared -fPIC`. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failing(int fd) {
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
    if (failing(fd)) {
        errno = EIO;
        return -1;
    }
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real(fd);
}

int fsync(int fd) {
    static int (*real)(int);
    if (failing(fd)) {
        errno = EIO;
        return -1;
    }
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real(fd);
}
