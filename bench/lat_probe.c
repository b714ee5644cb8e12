/* Repair latency probe. For each of COUNT names (m000000, m000001, ...) and each LINK_DIR in
 * turn, it breaks the link LINK_DIR/<name> and waits, with inotify (no polling), until a symlink
 * pointing at TARGET_DIR/<name> is back at that name; the time from just before the break to the
 * event is taken with CLOCK_MONOTONIC. Link dirs are served by different daemons: taking their
 * samples in turn means a machine that gets slower or faster during the run affects every daemon
 * alike. Names are used once each (a link broken again and again is "flapping" to linkfarm).
 * Between samples it waits GAP_MS so every daemon starts idle.
 *   usage: lat_probe MODE TARGET_DIR FIRST COUNT GAP_MS LINK_DIR...
 *   MODE link:   unlink the link
 *        folder: swap the link for a real folder with one file in it (renameat2 RENAME_EXCHANGE,
 *                with a folder made beside link_dir; the link is then unlinked there): what an SMB client does
 *                in two steps, done at once so that a fast daemon cannot put the link back
 *                in between; the daemon must adopt the file and relink.
 *        ready:  waits until the daemon under test repairs links at all (its watches are set
 *                up): breaks the link, and puts it back itself if it is not back in 200 ms,
 *                until it is repaired by the daemon (10 s at most). Prints nothing.
 * Prints per LINK_DIR: p50 p90 p99 max (microseconds) and the number of samples that timed out
 * (10 s). LAT_RAW=1 in the environment prints every sample to stderr. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

/* Whether name in dirfd is a symlink to want. */
static int is_back(int dirfd, const char *name, const char *want) {
    char buf[PATH_MAX];
    ssize_t k = readlinkat(dirfd, name, buf, sizeof buf - 1);
    if (k < 0) return 0;
    buf[k] = 0;
    return strcmp(buf, want) == 0;
}

static void die(const char *what, const char *where) {
    fprintf(stderr, "lat_probe: %s %s: %s\n", what, where, strerror(errno));
    exit(2);
}

/* Breaks name in link dir d, waits for it to come back; returns ns, or -1 after the deadline. */
static long long sample(const char *mode, const char *ldir, int dirfd, int in, const char *tdir,
                        const char *name, int i, long long wait_ns) {
    char want[PATH_MAX], stage[PATH_MAX], ev[64 * 1024] __attribute__((aligned(8)));
    snprintf(want, sizeof want, "%s/%s", tdir, name);
    if (!is_back(dirfd, name, want)) {
        fprintf(stderr, "lat_probe: %s/%s is not a link to %s before the test\n", ldir, name, want);
        exit(2);
    }
    int folder = strcmp(mode, "folder") == 0;
    if (folder) {
        /* Made beside link_dir, so that making it wakes no daemon. */
        snprintf(stage, sizeof stage, "%s/../.probe-%s", ldir, name);
        char f[PATH_MAX + 32];
        snprintf(f, sizeof f, "%s/upload-%d.bin", stage, i);
        if (mkdir(stage, 0755) != 0) die("mkdir", stage);
        int fd = open(f, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd < 0 || write(fd, "model", 5) != 5 || close(fd) != 0) die("upload", f);
    }
    /* Drain events left from earlier samples. */
    while (poll(&(struct pollfd){in, POLLIN, 0}, 1, 0) > 0) (void)!read(in, ev, sizeof ev);
    long long t0 = now_ns();
    if (folder) {
        if (renameat2(AT_FDCWD, stage, dirfd, name, RENAME_EXCHANGE) != 0) die("exchange", stage);
        if (unlink(stage) != 0) die("unlink", stage);
    } else if (unlinkat(dirfd, name, 0) != 0) {
        die("unlink", name);
    }
    long long deadline = t0 + wait_ns;
    for (;;) {
        int left = (int)((deadline - now_ns()) / 1000000);
        if (left <= 0) return -1;
        if (poll(&(struct pollfd){in, POLLIN, 0}, 1, left) <= 0) continue;
        ssize_t len = read(in, ev, sizeof ev);
        long long t = now_ns();
        for (char *p = ev; len > 0 && p < ev + len;) {
            struct inotify_event *e = (struct inotify_event *)p;
            if (e->len && strcmp(e->name, name) == 0 && is_back(dirfd, name, want)) return t - t0;
            p += sizeof *e + e->len;
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: lat_probe link|folder|ready TARGET_DIR FIRST COUNT GAP_MS LINK_DIR...\n");
        return 2;
    }
    const char *mode = argv[1], *tdir = argv[2];
    int first = atoi(argv[3]), count = atoi(argv[4]), gap_ms = atoi(argv[5]);
    int nd = argc - 6;
    char **ldirs = argv + 6;
    int *dirfd = calloc(nd, sizeof *dirfd), *in = calloc(nd, sizeof *in), *n = calloc(nd, sizeof *n);
    int *timeouts = calloc(nd, sizeof *timeouts);
    long long **lat = calloc(nd, sizeof *lat);
    for (int d = 0; d < nd; d++) {
        dirfd[d] = open(ldirs[d], O_DIRECTORY | O_RDONLY);
        in[d] = inotify_init1(IN_CLOEXEC);
        if (dirfd[d] < 0 || in[d] < 0 || inotify_add_watch(in[d], ldirs[d], IN_CREATE | IN_MOVED_TO) < 0)
            die("watch", ldirs[d]);
        lat[d] = calloc(count, sizeof **lat);
    }
    char name[64];
    if (strcmp(mode, "ready") == 0) {
        snprintf(name, sizeof name, "m%06d", first);
        char want[PATH_MAX];
        snprintf(want, sizeof want, "%s/%s", tdir, name);
        long long start = now_ns();
        while (now_ns() - start < 10000000000LL) {
            if (sample("link", ldirs[0], dirfd[0], in[0], tdir, name, 0, 200000000LL) >= 0) return 0;
            if (symlinkat(want, dirfd[0], name) != 0 && errno != EEXIST) die("symlink", name);
        }
        return 1;
    }
    for (int i = 0; i < count; i++) {
        snprintf(name, sizeof name, "m%06d", first + i);
        for (int d = 0; d < nd; d++) {
            long long t = sample(mode, ldirs[d], dirfd[d], in[d], tdir, name, i, 10000000000LL);
            if (getenv("LAT_RAW")) fprintf(stderr, "%s %s %lld\n", ldirs[d], name, t / 1000);
            if (t >= 0) {
                lat[d][n[d]++] = t;
            } else {
                timeouts[d]++;
                fprintf(stderr, "lat_probe: %s/%s not back after 10 s\n", ldirs[d], name);
            }
            struct timespec g = {gap_ms / 1000, (gap_ms % 1000) * 1000000L};
            nanosleep(&g, NULL);
        }
    }
    int bad = 0;
    for (int d = 0; d < nd; d++) {
        long long *v = lat[d];
        int k = n[d];
        qsort(v, k, sizeof *v, cmp);
#define PCT(p) (k ? v[(k - 1) * (p) / 100] / 1000.0 : 0.0)
        printf("%.1f %.1f %.1f %.1f %d\n", PCT(50), PCT(90), PCT(99), PCT(100), timeouts[d]);
        bad |= timeouts[d] != 0;
    }
    return bad;
}
