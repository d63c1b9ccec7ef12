/* bench/spawn.c — see spawn.h. */
#define _GNU_SOURCE
#include "spawn.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int nsp_bench_spawn(const char *exe, char *const argv[], const char *const env[], char *out,
                    size_t outlen)
{
    int fds[2];
    if (outlen == 0 || pipe(fds) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        for (size_t i = 0; env && env[i]; i++) {
            const char *eq = strchr(env[i], '=');
            if (!eq) {
                unsetenv(env[i]);
            } else {
                char name[128];
                size_t n = (size_t)(eq - env[i]);
                if (n >= sizeof name)
                    _exit(126);
                memcpy(name, env[i], n);
                name[n] = 0;
                setenv(name, eq + 1, 1);
            }
        }
        execv(exe, argv);
        _exit(127);
    }
    close(fds[1]);
    size_t got = 0;
    ssize_t r;
    while ((r = read(fds[0], out + got, outlen - 1 - got)) > 0)
        got += (size_t)r;
    close(fds[0]);
    out[got] = 0;
    int status;
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}
