/* The physical limit of a cold converge: one symlink() per link, nothing else.
 * usage: symlink_loop TARGET_DIR LINK_DIR N */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    int n = atoi(argv[3]);
    char t[4096], l[4096];
    for (int i = 0; i < n; i++) {
        snprintf(t, sizeof t, "%s/m%06d", argv[1], i);
        snprintf(l, sizeof l, "%s/m%06d", argv[2], i);
        if (symlink(t, l) != 0) { perror(l); return 1; }
    }
    return 0;
}
