/* The limit of a cold converge, relative to a directory: one symlinkat() per link on an open
 * LINK_DIR, nothing else (no path walk per link, which is what symlink_loop.c pays).
 * usage: symlinkat_loop TARGET_DIR LINK_DIR N */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    int n = atoi(argv[3]);
    int dir = open(argv[2], O_RDONLY | O_DIRECTORY);
    if (dir < 0) { perror(argv[2]); return 1; }
    char t[4096], l[64];
    for (int i = 0; i < n; i++) {
        snprintf(t, sizeof t, "%s/m%06d", argv[1], i);
        snprintf(l, sizeof l, "m%06d", i);
        if (symlinkat(t, dir, l) != 0) { perror(l); return 1; }
    }
    return 0;
}
