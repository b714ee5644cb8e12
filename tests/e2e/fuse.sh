#!/usr/bin/env bash
# SPEC §14 on a real FUSE filesystem without renameat2 flags: Debian's bindfs (1.14) mounted over a
# temp dir refuses RENAME_NOREPLACE and RENAME_EXCHANGE with EINVAL, as Linux NFS does. On it:
#   1. the fs crate's tests, hostile races included (LINKFARM_TEST_DIR puts their temp trees on
#      the mount, and each farm probes the real filesystem);
#   2. the CLI: a link hijacked to /etc is replaced, a client-made folder is adopted, doctor names
#      the fallback, and the daemon repairs a hijack;
#   3. a short chaos campaign (TMPDIR puts its trees on the mount).
# Prints one PASS/FAIL line per assertion. Needs root and /dev/fuse; installs bindfs and fuse3.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/e2e/lib.sh

[ "$(id -u)" -eq 0 ] || { echo "needs root"; exit 1; }
[ -e /dev/fuse ] || { echo "needs /dev/fuse (a container started without it cannot mount FUSE)"; exit 1; }
need_packages bindfs:bindfs fusermount3:fuse3

T=$(mktemp -d)
MNT=$T/mnt
LF_PID=
cleanup() {
    set +e
    [ -n "$LF_PID" ] && kill -CONT "$LF_PID" 2>/dev/null; [ -n "$LF_PID" ] && kill "$LF_PID" 2>/dev/null && wait "$LF_PID" 2>/dev/null
    if mountpoint -q "$MNT"; then fusermount3 -u "$MNT" || umount -l "$MNT"; fi
    rm -rf "$T"
}
trap cleanup EXIT

mkdir -p "$T/under" "$MNT"
bindfs "$T/under" "$MNT"
check "bindfs is mounted over $T/under" mountpoint -q "$MNT"
check "the mount is FUSE" test "$(stat -f -c %T "$MNT")" = fuseblk -o "$(stat -f -c %T "$MNT")" = fuse

cargo build --locked -p linkfarm
LF=${CARGO_TARGET_DIR:-$PWD/target}/debug/linkfarm

# --- 1. the fs crate's tests on the mount ------------------------------------------------------------
mkdir -p "$MNT/fs-tests"
if LINKFARM_TEST_DIR=$MNT/fs-tests cargo test --locked -p linkfarm-fs --test fs --test prop 2>&1 | tail -n 25; then
    pass "fs crate tests (hostile races included) on FUSE"
else
    fail "fs crate tests on FUSE"
fi

# --- 2. the CLI ----------------------------------------------------------------------------------------
W=$MNT/cli
mkdir -p "$W/t/vae" "$W/t/loras" "$W/t/clip" "$W/l/loras/sub"
echo "client upload" >"$W/l/loras/a.safetensors"
echo "deeper upload" >"$W/l/loras/sub/b.bin"
ln -s /etc "$W/l/vae"
cat >"$T/linkfarm.yaml" <<EOF
version: 1
farms:
  - { name: m, target_dir: $W/t, link_dir: $W/l, entries: [vae, loras, clip] }
settings: { adopt_after: 0s, state_file: $T/state.json, watcher: poll, poll_interval: 1s }
EOF
doctor=$("$LF" -c "$T/linkfarm.yaml" doctor --smb-conf /nonexistent || true)
echo "$doctor" | grep "filesystem of link_dir" || true
check "the probe finds no RENAME_EXCHANGE on bindfs" grep -q "RENAME_EXCHANGE no" <<<"$doctor"
check "doctor names the fallback and the window" grep -q "fallback: links are replaced by move-aside.*window: " <<<"$doctor"
out=$("$LF" -c "$T/linkfarm.yaml" apply 2>&1) && rc=0 || rc=$?
echo "$out"
check "apply exits 0" test "$rc" -eq 0
check "apply reports no failure" bash -c '! grep -q FAILED <<<"$1"' _ "$out"
check "the link hijacked to /etc is replaced" test "$(readlink "$W/l/vae")" = "$W/t/vae"
check "the client-made folder is adopted and the link made" test "$(readlink "$W/l/loras")" = "$W/t/loras"
check "the adopted file is in the target" grep -qx "client upload" "$W/t/loras/a.safetensors"
check "the adopted subfolder's file is in the target" grep -qx "deeper upload" "$W/t/loras/sub/b.bin"
check "check exits 0 (converged)" "$LF" -c "$T/linkfarm.yaml" check
check "no temp names left" test -z "$(find "$W" -name '.linkfarm-tmp.*')"

"$LF" run -c "$T/linkfarm.yaml" 2>"$T/linkfarm.log" &
LF_PID=$!
wait_until 10 test -e "$T/state.json" || { cat "$T/linkfarm.log"; exit 1; }
rm "$W/l/clip" && ln -s /etc "$W/l/clip"
check "the daemon replaces a link hijacked while it runs" \
    wait_until 15 bash -c 'test "$(readlink "$1")" = "$2"' _ "$W/l/clip" "$W/t/clip"
# What a client does over SMB: delete the link, make a folder of that name. The daemon is paused
# meanwhile, or it would put the link back before the folder is made.
kill -STOP "$LF_PID"
rm "$W/l/clip" && mkdir "$W/l/clip" && echo "late" >"$W/l/clip/c.bin"
kill -CONT "$LF_PID"
check "the daemon adopts a folder made while it runs" \
    wait_until 15 bash -c 'test -L "$1" && grep -qsx late "$2"' _ "$W/l/clip" "$W/t/clip/c.bin"
kill "$LF_PID" && wait "$LF_PID" 2>/dev/null || true
LF_PID=
check "the daemon logged no action error" bash -c '! grep -q ERROR "$1"' _ "$T/linkfarm.log"

# --- 3. a short chaos campaign on the mount -----------------------------------------------------------
mkdir -p "$MNT/chaos"
if TMPDIR=$MNT/chaos cargo test --locked -p linkfarm --test campaigns chaos -- --nocapture 2>&1 | tee "$T/chaos.log" | tail -n 5; then
    pass "short chaos campaign on FUSE: $(grep -o 'chaos campaign: [^;]*' "$T/chaos.log")"
else
    fail "short chaos campaign on FUSE"
fi

summary
