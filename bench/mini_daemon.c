/* The limit for repair latency: the smallest daemon that can repair a deleted link. One inotify
 * watch on LINK_DIR; on IN_DELETE or IN_MOVED_FROM of a name it calls symlinkat(TARGET_DIR/name).
 * No config, no checks, no logging, no safety: what the kernel allows, not something to run.
 *   usage: mini_daemon LINK_DIR TARGET_DIR */
#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/inotify.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    int dirfd = open(argv[1], O_DIRECTORY | O_RDONLY);
    int in = inotify_init1(IN_CLOEXEC);
    if (dirfd < 0 || in < 0 || inotify_add_watch(in, argv[1], IN_DELETE | IN_MOVED_FROM) < 0) {
        perror("setup");
        return 2;
    }
    char ev[64 * 1024] __attribute__((aligned(8))), t[PATH_MAX];
    for (;;) {
        ssize_t len = read(in, ev, sizeof ev);
        if (len <= 0) return 1;
        for (char *p = ev; p < ev + len;) {
            struct inotify_event *e = (struct inotify_event *)p;
            if (e->len) {
                snprintf(t, sizeof t, "%s/%s", argv[2], e->name);
                (void)symlinkat(t, dirfd, e->name);
            }
            p += sizeof *e + e->len;
        }
    }
}
