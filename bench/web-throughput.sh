#!/usr/bin/env bash
# Loopback throughput of one tus upload through `linkfarm web` (64 MiB chunks streamed by curl
# -T -, chunked) against
# `cp` + `sync` of the same file to the same disk, plus the server's peak RSS and CPU time.
# Usage (as root): bench/web-throughput.sh [SIZE_MIB, default 4096]. Set LF to skip the build.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/e2e/lib.sh
SIZE_MIB=${1:-4096}
[ -n "${LF:-}" ] || { cargo build --release --locked -p linkfarm; LF=$PWD/target/release/linkfarm; }
id lfweb >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin lfweb
T=$(mktemp -d "${BENCH_DIR:-/var/tmp}/lfweb-bench.XXXX")
chmod 755 "$T"
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$T"' EXIT
mkdir -p "$T/inbox/loras" "$T/models/loras" "$T/farm/m" "$T/farm/l" "$T/state" "$T/cp"
chown -R lfweb: "$T/inbox" "$T/state"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$T/c.yaml" <<YAML
version: 1
farms: [{ name: f, target_dir: $T/farm/m, link_dir: $T/farm/l, entries: "*" }]
inboxes: [{ name: in, dir: $T/inbox, target_dir: $T/models, max_size: 100GiB }]
settings: { upload_log: $T/uploads.jsonl }
web: { listen: 127.0.0.1:$PORT, users_file: $T/users, reserve: 1GiB }
YAML
printf pw | "$LF" -c "$T/c.yaml" web user add u --password-stdin 2>/dev/null
chmod 644 "$T/users"
# A safetensors header, then random bytes.
python3 - "$T/src.safetensors" "$SIZE_MIB" <<'PY'
import json, os, struct, sys
n = int(sys.argv[2]) * 1048576 - 64
h = json.dumps({"w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
h += b" " * (64 - 8 - len(h))
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    left = n
    while left:
        k = min(left, 1 << 24); f.write(os.urandom(k)); left -= k
PY
LEN=$(stat -c %s "$T/src.safetensors")
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
cat "$T/src.safetensors" >/dev/null  # both runs read from the page cache
t0=$(date +%s.%N); cp "$T/src.safetensors" "$T/cp/x"; sync "$T/cp/x"; t1=$(date +%s.%N)
rm -f "$T/cp/x"
setpriv --reuid=lfweb --regid=lfweb --clear-groups "$LF" -c "$T/c.yaml" web --state-dir "$T/state" 2>"$T/web.log" &
PID=$!
wait_until 20 curl -fs -o /dev/null -X OPTIONS "http://127.0.0.1:$PORT/files/"
meta="filename $(printf x.safetensors | base64 -w0),folder $(printf loras | base64 -w0)"
[ -n "${PERF_OUT:-}" ] && { perf record -g -o "$PERF_OUT" -p "$PID" >/dev/null 2>&1 & PERF=$!; sleep 0.5; }
t2=$(date +%s.%N)
id=$(curl -sS -D - -o /dev/null -u u:pw -H 'Tus-Resumable: 1.0.0' -H "Upload-Length: $LEN" -H "Upload-Metadata: $meta" -X POST "http://127.0.0.1:$PORT/files/" | tr -d '\r' | sed -n 's|^location: /files/||Ip')
off=0; chunk=$((64 << 20))
while [ "$off" -lt "$LEN" ]; do
    dd if="$T/src.safetensors" iflag=skip_bytes,count_bytes skip="$off" count="$chunk" bs=4M status=none |
        curl -sS -f -o /dev/null -u u:pw -H 'Tus-Resumable: 1.0.0' -H "Upload-Offset: $off" \
            -H 'Content-Type: application/offset+octet-stream' -X PATCH -T - "http://127.0.0.1:$PORT/files/$id"
    off=$((off + chunk)); [ "$off" -gt "$LEN" ] && off=$LEN
done
t3=$(date +%s.%N)
[ -n "${PERF_OUT:-}" ] && { kill -INT "$PERF"; wait "$PERF" || true; }
rss=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
cpu=$(awk '{print ($14 + $15) / 100}' "/proc/$PID/stat")
cmp -s "$T/src.safetensors" "$T/inbox/loras/x.safetensors" || { echo "FAIL: upload differs"; exit 1; }
python3 - "$t0" "$t1" "$t2" "$t3" "$LEN" "$rss" "$cpu" <<'PY'
import sys
t0, t1, t2, t3, n, rss, cpu = map(float, sys.argv[1:])
gib = n / 2**30
cp, up = t1 - t0, t3 - t2
print(f"size {gib:.2f} GiB: cp+sync {cp:.2f} s ({gib/cp*1024:.0f} MiB/s), tus upload {up:.2f} s ({gib/up*1024:.0f} MiB/s), ratio {cp/up:.2f}x of cp")
print(f"server peak RSS {rss/1024:.1f} MiB, server CPU {cpu:.2f} s = {cpu/gib:.2f} s/GiB")
PY
