/* LD_PRELOAD shim for the daemon-hardening tests: fdatasync(2) and fsync(2) fail with EIO
 * while the file named by EDGECAP_SHIM_FAIL_IF exists, as on an SD card that stopped taking
 * writes. Built by the tests with `cc -shared -fPIC`; nothing else uses it. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

static int failing(void) {
    const char *trigger = getenv("EDGECAP_SHIM_FAIL_IF");
    return trigger != NULL && access(trigger, F_OK) == 0;
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (failing()) {
        errno = EIO;
        return -1;
    }
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real(fd);
}

int fsync(int fd) {
    static int (*real)(int);
    if (failing()) {
        errno = EIO;
        return -1;
    }
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real(fd);
}
