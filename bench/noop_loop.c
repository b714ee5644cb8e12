/* The physical limit of a no-op pass: lstat() and readlink() of every link, compared with the
 * expected text. usage: noop_loop TARGET_DIR LINK_DIR N */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    int n = atoi(argv[3]), bad = 0;
    char t[4096], l[4096], buf[4096];
    struct stat st;
    for (int i = 0; i < n; i++) {
        snprintf(t, sizeof t, "%s/m%06d", argv[1], i);
        snprintf(l, sizeof l, "%s/m%06d", argv[2], i);
        if (lstat(l, &st) != 0 || !S_ISLNK(st.st_mode)) { bad++; continue; }
        ssize_t k = readlink(l, buf, sizeof buf - 1);
        if (k < 0) { bad++; continue; }
        buf[k] = 0;
        if (strcmp(buf, t) != 0) bad++;
    }
    return bad != 0;
}
