#!/usr/bin/env bash
# SPEC §14 on a real FUSE filesystem without renameat2 flags: Debian's bindfs (1.14) mounted over a
# temp dir refuses RENAME_NOREPLACE and RENAME_EXCHANGE with EINVAL, as Linux NFS does. On it:
#   1. the fs crate's tests, hostile races included (LINKFARM_TEST_DIR puts their temp trees on
#      the mount, and each farm probes the real filesystem), and the web service's part-file
#      writer (O_DIRECT where a filesystem takes it);
#   2. the CLI: a link hijacked to /etc is replaced, a client-made folder is adopted, doctor names
#      the fallback, and the daemon repairs a hijack; the daemon's probe of the filesystem is in
#      `status --json` (exchange false, the fallback) and in `status`, is logged once, and is
#      made again after a remount; the doctor and daemon tests that check the probe on FUSE;
#   3. a config on the mount replaced by an editor (renamed away, written anew) is reloaded
#      without a failed reload;
#   4. an inbox (SPEC §10) accepts uploads that were still open when it first saw them;
#   5. a short chaos campaign, inbox drops included (TMPDIR puts its trees on the mount).
# Prints one PASS/FAIL line per assertion. Needs root and /dev/fuse; installs bindfs and fuse3.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/e2e/lib.sh

[ "$(id -u)" -eq 0 ] || { echo "needs root"; exit 1; }
[ -e /dev/fuse ] || { echo "needs /dev/fuse (a container started without it cannot mount FUSE)"; exit 1; }
need_packages bindfs:bindfs fusermount3:fuse3 jq:jq

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

# The web service's part-file writer (O_DIRECT where the filesystem takes it) on the mount.
mkdir -p "$MNT/web-tests"
if LINKFARM_TEST_DIR=$MNT/web-tests cargo test --locked -p linkfarm-web --lib part:: 2>&1 | tail -n 8; then
    pass "the web service's part-file writer lands every PATCH byte for byte on FUSE"
else
    fail "the web service's part-file writer on FUSE"
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
# SPEC §14: the probe made at start-up is in the state file and in status.
status_json=$("$LF" -c "$T/linkfarm.yaml" status --json || true)
fs_of() { jq -r ".farms[0].filesystem.$1" <<<"$status_json"; }
echo "filesystem: $(jq -c '.farms[0].filesystem' <<<"$status_json")"
check "status --json: the probe found no RENAME_EXCHANGE" test "$(fs_of exchange)" = false
check "status --json: the fallback is move-aside + symlinkat" \
    bash -c 'grep -q "^links are replaced by move-aside" <<<"$1"' _ "$(fs_of fallback)"
check "status --json: the window is named" test -n "$(fs_of window)" -a "$(fs_of window)" != null
check "status names the fallback in use" \
    bash -c '"$1" -c "$2" status | grep -q "filesystem fallback: links are replaced by move-aside"' _ "$LF" "$T/linkfarm.yaml"
check "the probe is logged once" test "$(grep -c "filesystem of $W/l probed" "$T/linkfarm.log")" -eq 1
# A remount: the volume is lazily unmounted (the daemon holds link_dir's fd) and mounted anew,
# on a new device; the next pass probes again.
umount -l "$MNT" && bindfs "$T/under" "$MNT"
check "after a remount the filesystem is probed again" \
    wait_until 15 grep -q "filesystem of $W/l probed again" "$T/linkfarm.log"
check "after a remount the probe result is still in status --json" \
    wait_until 15 bash -c '"$1" -c "$2" status --json | jq -e ".farms[0].filesystem.exchange == false" >/dev/null' _ "$LF" "$T/linkfarm.yaml"
kill "$LF_PID" && wait "$LF_PID" 2>/dev/null || true
LF_PID=
check "the daemon logged no action error" bash -c '! grep -q ERROR "$1"' _ "$T/linkfarm.log"
check "no temp names left after the daemon" test -z "$(find "$W" -name '.linkfarm-tmp.*')"
# The doctor and daemon tests written for FUSE (LINKFARM_TEST_FUSE relaxes what differs there).
mkdir -p "$MNT/tests"
for t in doctor:one_farm_is_one_farm_and_the_filesystem_fallback_is_named \
    daemon:the_filesystem_probe_is_in_the_state_file_after_start; do
    out=$(TMPDIR=$MNT/tests LINKFARM_TEST_FUSE=1 cargo test --locked -p linkfarm --test "${t%%:*}" -- "${t#*:}" 2>&1) || true
    tail -n 4 <<<"$out"
    check "test ${t#*:} on FUSE" grep -q "test result: ok. 1 passed" <<<"$out"
done

# --- 3. a config on the mount replaced as an editor does -----------------------------------------------
C=$MNT/cfg
mkdir -p "$C/t/a" "$C/t/b" "$C/l"
chmod 755 "$C"
conf() { echo "version: 1
farms:
  - { name: c, target_dir: $C/t, link_dir: $C/l, entries: [$1] }
settings: { state_file: $T/state-cfg.json, watcher: inotify }"; }
conf a >"$C/linkfarm.yaml"
"$LF" run -c "$C/linkfarm.yaml" 2>"$T/linkfarm-cfg.log" &
LF_PID=$!
wait_until 10 test -L "$C/l/a" || { cat "$T/linkfarm-cfg.log"; exit 1; }
for i in 1 2 3 4 5; do
    mv "$C/linkfarm.yaml" "$C/linkfarm.yaml~"
    if [ $((i % 2)) -eq 1 ]; then conf "a, b" >"$C/linkfarm.yaml"; else conf a >"$C/linkfarm.yaml"; fi
    rm "$C/linkfarm.yaml~"
done
check "the config replaced by an editor is reloaded" wait_until 15 test -L "$C/l/b"
if grep -q "reload failed" "$T/linkfarm-cfg.log"; then
    fail "no reload failed while the config was briefly absent"
    grep -E "reload|WARN|ERROR" "$T/linkfarm-cfg.log" | tail -n 12
else
    pass "no reload failed while the config was briefly absent"
fi
kill "$LF_PID" && wait "$LF_PID" 2>/dev/null || true
LF_PID=

# --- 4. an inbox on the mount: files still open when first seen are taken, put back, and then
# accepted. FUSE's attribute cache (1 s here) once showed the put-back file with 2 links
# (refused as not_plain) and a taken file as changed after its check (back and forth forever).
I=$MNT/inboxes
mkdir -p "$I/models/loras" "$I/links"
cat >"$I/linkfarm.yaml" <<YAML
version: 1
farms: [{ name: f, target_dir: $I/models, link_dir: $I/links, entries: "*" }]
inboxes: [{ name: in, dir: $I/inbox, target_dir: $I/models, settle: 0s }]
settings: { state_file: $T/state-inbox.json, upload_log: $T/uploads.jsonl }
YAML
LINKFARM_LOG=debug "$LF" run -c "$I/linkfarm.yaml" 2>"$T/linkfarm-inbox.log" &
LF_PID=$!
wait_until 10 test -d "$I/inbox/loras" || { cat "$T/linkfarm-inbox.log"; exit 1; }
for i in 1 2 3 4 5; do
    python3 -c '
import json, struct, sys
h = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h)))
    f.flush()
    f.write(h + b"7" * 8)' "$I/inbox/loras/m$i.safetensors"
done
accepted() { [ "$(grep -c '"action":"accept"' "$T/uploads.jsonl" 2>/dev/null)" = 5 ]; }
check "an inbox on FUSE accepts 5 valid uploads that were open when first seen" wait_until 20 accepted
check "none refused" bash -c '! grep -q "\"action\":\"refuse\"" "$1"' _ "$T/uploads.jsonl"
loops=$(grep -c "changed while it was checked" "$T/linkfarm-inbox.log" || true)
check "no file went back and forth ($loops returns to the inbox)" test "$loops" -le 5
kill "$LF_PID" && wait "$LF_PID" 2>/dev/null || true
LF_PID=

# --- 5. a short chaos campaign on the mount -----------------------------------------------------------
mkdir -p "$MNT/chaos"
if TMPDIR=$MNT/chaos cargo test --locked -p linkfarm --test campaigns chaos -- --nocapture 2>&1 | tee "$T/chaos.log" | tail -n 5; then
    pass "short chaos campaign on FUSE: $(grep -o 'chaos campaign: [^;]*' "$T/chaos.log")"
else
    fail "short chaos campaign on FUSE"
    grep -A3 "panicked" "$T/chaos.log" | head -n 12
fi

summary
