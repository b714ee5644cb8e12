#!/usr/bin/env bash
# Server RSS and CPU during 20 concurrent uploads of 256 MiB each (64 MiB chunks, curl -T -),
# as root; the service runs as lfweb. Set LF to the binary (default: a release build), and
# SERVER_ENV to put variables in the service's environment (e.g. the unit's
# MALLOC_MMAP_THRESHOLD_=1048576).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${LF:-}" ] || { cargo build --release --locked -p linkfarm; LF=$PWD/target/release/linkfarm; }
id lfweb >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin lfweb
T=$(mktemp -d /var/tmp/rss20.XXXX); chmod 755 $T
mkdir -p $T/inbox/loras $T/models/loras $T/f/m $T/f/l $T/state
chown -R lfweb: $T/inbox $T/state
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > $T/c.yaml <<YAML
version: 1
farms: [{ name: f, target_dir: $T/f/m, link_dir: $T/f/l, entries: "*" }]
inboxes: [{ name: in, dir: $T/inbox, target_dir: $T/models, max_size: 100GiB }]
settings: { upload_log: $T/u.jsonl }
web: { listen: 127.0.0.1:$PORT, users_file: $T/users, reserve: 1GiB, max_uploads_per_user: 25 }
YAML
printf pw | $LF -c $T/c.yaml web user add u --password-stdin 2>/dev/null; chmod 644 $T/users
python3 - $T/src.safetensors <<'PY'
import json, os, struct, sys
n = 256*1048576 - 64
h = json.dumps({"w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode(); h += b" " * (56 - len(h))
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + os.urandom(n))
PY
env ${SERVER_ENV:-} setpriv --reuid=lfweb --regid=lfweb --clear-groups $LF -c $T/c.yaml web --state-dir $T/state 2>$T/log & PID=$!
until curl -fs -o /dev/null -X OPTIONS http://127.0.0.1:$PORT/files/; do sleep 0.1; done
echo "idle RSS: $(awk '/VmRSS/ {print $2}' /proc/$PID/status) kB"
LEN=$(stat -c %s $T/src.safetensors)
up() {
  meta="filename $(printf "x$1.safetensors" | base64 -w0),folder $(printf loras | base64 -w0)"
  id=$(curl -sS -D - -o /dev/null -u u:pw -H 'Tus-Resumable: 1.0.0' -H "Upload-Length: $LEN" -H "Upload-Metadata: $meta" -X POST http://127.0.0.1:$PORT/files/ | tr -d '\r' | sed -n 's|^location: /files/||Ip')
  off=0; while [ $off -lt $LEN ]; do
    dd if=$T/src.safetensors iflag=skip_bytes,count_bytes skip=$off count=$((64<<20)) bs=4M status=none | curl -sSf -o /dev/null -u u:pw -H 'Tus-Resumable: 1.0.0' -H "Upload-Offset: $off" -H 'Content-Type: application/offset+octet-stream' -X PATCH -T - http://127.0.0.1:$PORT/files/$id
    off=$((off + (64<<20))); [ $off -gt $LEN ] && off=$LEN
  done
}
t0=$(date +%s.%N)
UPS=()
for i in $(seq 1 20); do up $i & UPS+=($!); done
for p in "${UPS[@]}"; do wait "$p"; done
t1=$(date +%s.%N)
echo "complete: $(ls $T/inbox/loras | grep -c '^x') of 20"
echo "20 x 256 MiB concurrent: $(python3 -c "print(round($t1-$t0,1))") s; server peak RSS: $(awk '/VmHWM/ {print $2}' /proc/$PID/status) kB; CPU $(awk '{print ($14+$15)/100}' /proc/$PID/stat) s"
kill $PID; wait $PID || true; rm -rf $T
