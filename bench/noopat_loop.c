/* The limit of a no-op pass, relative to a directory: readlinkat() of every link on an open
 * LINK_DIR, compared with the expected text; no lstat (readlinkat fails on a non-link).
 * usage: noopat_loop TARGET_DIR LINK_DIR N */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    int n = atoi(argv[3]), bad = 0;
    int dir = open(argv[2], O_RDONLY | O_DIRECTORY);
    if (dir < 0) { perror(argv[2]); return 1; }
    char t[4096], l[64], buf[4096];
    for (int i = 0; i < n; i++) {
        snprintf(t, sizeof t, "%s/m%06d", argv[1], i);
        snprintf(l, sizeof l, "m%06d", i);
        ssize_t k = readlinkat(dir, l, buf, sizeof buf - 1);
        if (k < 0) { bad++; continue; }
        buf[k] = 0;
        if (strcmp(buf, t) != 0) bad++;
    }
    return bad != 0;
}
