/*
 * tests/helper_plain.c — a plain program (it knows nothing of numaspan's API) for
 * tests/test_process.sh to run with libnumaspan.so preloaded: the process's life as the
 * allocator must leave it (its own threads only, pthread_exit from main, fork from a thread).
 *   helper_plain threads           allocates, prints "threads=N" (the kernel's count)
 *   helper_plain pthread-exit      allocates, prints "threads=N", then main calls pthread_exit:
 *                                  the process must end with status 0
 *   helper_plain pthread-exit-last  main starts a thread and calls pthread_exit; the thread
 *                                  allocates for 200 ms, prints "last thread done" and returns:
 *                                  the process must end with status 0 then
 *   helper_plain fork-from-thread  a second thread allocates and forks; the child allocates,
 *                                  prints "child threads=N" and ends with pthread_exit; the
 *                                  parent prints "child status=S" (S: the child's exit status,
 *                                  or "hung" after 10 s)
 * Every allocation goes through enough sizes to take slow paths (refills, a large object).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void allocate(void)
{
    static void *volatile sink;
    for (size_t n = 16; n <= ((size_t)1 << 20); n *= 2) {
        sink = malloc(n);
        free(sink);
    }
}

/* The kernel's count of this process's threads (a zombie main thread included). */
static int threads(void)
{
    char line[256];
    int n = -1;
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    if (f)
        fclose(f);
    return n;
}

static void *last(void *arg)
{
    (void)arg;
    struct timespec ts = {0, 20000000};
    for (int i = 0; i < 10; i++) {
        allocate();
        nanosleep(&ts, NULL);
    }
    printf("last thread done\n");
    fflush(stdout);
    return NULL;
}

static void *forker(void *arg)
{
    (void)arg;
    allocate();
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        allocate();
        printf("child threads=%d\n", threads());
        fflush(stdout);
        pthread_exit(NULL); /* the child's only thread of its own: the child must end, status 0 */
    }
    int status = 0;
    for (int i = 0; i < 1000; i++) {
        if (waitpid(pid, &status, WNOHANG) == pid) {
            if (WIFEXITED(status))
                printf("child status=%d\n", WEXITSTATUS(status));
            else
                printf("child status=signal %d\n", WTERMSIG(status));
            return NULL;
        }
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    printf("child status=hung\n");
    return NULL;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "";
    allocate();
    if (strcmp(cmd, "threads") == 0) {
        printf("threads=%d\n", threads());
        return 0;
    }
    if (strcmp(cmd, "pthread-exit") == 0) {
        printf("threads=%d\n", threads());
        fflush(stdout);
        pthread_exit(NULL);
    }
    if (strcmp(cmd, "pthread-exit-last") == 0) {
        pthread_t t;
        pthread_create(&t, NULL, last, NULL);
        pthread_exit(NULL);
    }
    if (strcmp(cmd, "fork-from-thread") == 0) {
        pthread_t t;
        pthread_create(&t, NULL, forker, NULL);
        pthread_join(t, NULL);
        return 0;
    }
    fprintf(stderr, "helper_plain: unknown command \"%s\"\n", cmd);
    return 2;
}
