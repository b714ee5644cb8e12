/* The limit for repair latency: the smallest daemon that can repair a deleted link. One inotify
 * watch on LINK_DIR; on IN_DELETE or IN_MOVED_FROM of a name it calls symlinkat(TARGET_DIR/name).
 * No config, no checks, no logging: what the kernel allows, not something to run.
 *   usage: mini_daemon [--safe] LINK_DIR TARGET_DIR
 * --safe adds, per event, the syscalls SPEC section 4 cost linkfarm before its 2026-12-01
 * amendment (linkfarm now holds link_dir's fd, guarded by watches) and nothing else: open
 * LINK_DIR's parent by path, compare its real path (readlink of /proc/self/fd/N) with the one
 * seen at start-up, open LINK_DIR from it with O_NOFOLLOW, and create the link there with
 * symlinkat on the final name (which fails if anything is there): the syscalls linkfarm made
 * from the event to the link, no more. It shows what those rules cost, apart from linkfarm. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

static char parent[PATH_MAX], base[NAME_MAX + 1], anchor[PATH_MAX];

/* The real path of fd, as /proc shows it. */
static int real_path(int fd, char *out, size_t n) {
    char p[64];
    snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
    ssize_t k = readlink(p, out, n - 1);
    if (k < 0) return -1;
    out[k] = 0;
    return 0;
}

static void repair_safe(const char *tdir, const char *name) {
    char t[PATH_MAX], now[PATH_MAX];
    int pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (pfd < 0) return;
    int dfd = -1;
    if (real_path(pfd, now, sizeof now) == 0 && strcmp(now, anchor) == 0)
        dfd = openat(pfd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd >= 0) {
        snprintf(t, sizeof t, "%s/%s", tdir, name);
        (void)symlinkat(t, dfd, name);
    }
    if (dfd >= 0) close(dfd);
    close(pfd);
}

int main(int argc, char **argv) {
    int safe = argc == 4 && strcmp(argv[1], "--safe") == 0;
    if (argc != 3 + safe) return 2;
    const char *ldir = argv[1 + safe], *tdir = argv[2 + safe];
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", ldir);
    snprintf(base, sizeof base, "%s", basename(tmp));
    snprintf(tmp, sizeof tmp, "%s", ldir);
    snprintf(parent, sizeof parent, "%s", dirname(tmp));
    int pfd = open(parent, O_RDONLY | O_DIRECTORY);
    if (pfd < 0 || real_path(pfd, anchor, sizeof anchor) != 0) { perror(parent); return 2; }
    close(pfd);
    int dirfd = open(ldir, O_DIRECTORY | O_RDONLY);
    int in = inotify_init1(IN_CLOEXEC);
    if (dirfd < 0 || in < 0 || inotify_add_watch(in, ldir, IN_DELETE | IN_MOVED_FROM) < 0) {
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
                if (safe) {
                    repair_safe(tdir, e->name);
                } else {
                    snprintf(t, sizeof t, "%s/%s", tdir, e->name);
                    (void)symlinkat(t, dirfd, e->name);
                }
            }
            p += sizeof *e + e->len;
        }
    }
}
