#!/usr/bin/env bash
# Loopback throughput of a tus upload through `linkfarm web` against `cp` + `sync` of the same
# file to the same disk, in turn REPS times (default 3; medians), with two clients sending 64 MiB
# PATCHes (the default max_chunk): dd | curl -T - (chunked), and bench/tus_sendfile.py (one
# connection, sendfile(2), the least client CPU; on 2 cores the client competes with the
# server; each client's own CPU per GiB is printed). Plus the server's peak RSS and CPU per GiB.
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
REPS=${REPS:-3}
setpriv --reuid=lfweb --regid=lfweb --clear-groups "$LF" -c "$T/c.yaml" web --state-dir "$T/state" 2>"$T/web.log" &
PID=$!
wait_until 20 curl -fs -o /dev/null -X OPTIONS "http://127.0.0.1:$PORT/files/"
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
cat "$T/src.safetensors" >/dev/null  # every run reads from the page cache
now() { date +%s.%N; }
# upload CLIENT NAME: one tus upload of the file in 64 MiB PATCHes (the default max_chunk);
# prints the seconds it took. curl: each chunk cut by dd and streamed by curl -T - (chunked);
# sendfile: bench/tus_sendfile.py, one connection, Content-Length bodies sent with sendfile(2).
upload() {
    local t0 t1 id off=0 chunk=$((64 << 20)) meta
    meta="filename $(printf %s "$2" | base64 -w0),folder $(printf loras | base64 -w0)"
    t0=$(now)
    id=$(curl -sS -D - -o /dev/null -u u:pw -H 'Tus-Resumable: 1.0.0' -H "Upload-Length: $LEN" -H "Upload-Metadata: $meta" -X POST "http://127.0.0.1:$PORT/files/" | tr -d '\r' | sed -n 's|^location: /files/||Ip')
    if [ "$1" = curl ]; then
        while [ "$off" -lt "$LEN" ]; do
            dd if="$T/src.safetensors" iflag=skip_bytes,count_bytes skip="$off" count="$chunk" bs=4M status=none |
                curl -sS -f -o /dev/null -u u:pw -H 'Tus-Resumable: 1.0.0' -H "Upload-Offset: $off" \
                    -H 'Content-Type: application/offset+octet-stream' -X PATCH -T - "http://127.0.0.1:$PORT/files/$id"
            off=$((off + chunk)); [ "$off" -gt "$LEN" ] && off=$LEN
        done
    else
        python3 bench/tus_sendfile.py 127.0.0.1 "$PORT" "/files/$id" "$T/src.safetensors" "$chunk" u:pw
    fi
    t1=$(now)
    # The client's own CPU (this subshell's children: dd, curl, python), beside the time: on 2
    # cores the client competes with the server.
    local cpu
    times >"$T/times"  # (not in a pipe: that would be a child with no children)
    cpu=$(sed -n 2p "$T/times" | awk '{ n = 0; for (i = 1; i <= 2; i++) { split($i, p, /[ms]/); n += p[1] * 60 + p[2] } print n }')
    cmp -s "$T/src.safetensors" "$T/inbox/loras/$2" || { echo "FAIL: upload $2 differs" >&2; exit 1; }
    rm -f "$T/inbox/loras/$2"
    awk -v a="$t0" -v b="$t1" -v c="$cpu" 'BEGIN { print b - a ":" c }'
}
cpt=() curlt=() sft=()
[ -n "${PERF_OUT:-}" ] && { perf record -g -o "$PERF_OUT" -p "$PID" >/dev/null 2>&1 & PERF=$!; sleep 0.5; }
# The peers in turn, REPS times: a disk that gets faster or slower affects them alike.
for r in $(seq "$REPS"); do
    t0=$(now); cp "$T/src.safetensors" "$T/cp/x"; sync "$T/cp/x"; t1=$(now)
    rm -f "$T/cp/x"
    cpt+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
    curlt+=("$(upload curl "c$r.safetensors")")
    sft+=("$(upload sendfile "s$r.safetensors")")
done
[ -n "${PERF_OUT:-}" ] && { kill -INT "$PERF"; wait "$PERF" || true; }
rss=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
cpu=$(awk '{print ($14 + $15) / 100}' "/proc/$PID/stat")
python3 - "$LEN" "$rss" "$cpu" "$REPS" "${cpt[*]}" "${curlt[*]}" "${sft[*]}" <<'PY'
import statistics, sys
n, rss, cpu, reps = map(float, sys.argv[1:5])
cp = [float(x) for x in sys.argv[5].split()]
cu, sf = ([float(x.split(":")[0]) for x in a.split()] for a in sys.argv[6:8])
cu_cpu, sf_cpu = ([float(x.split(":")[1]) for x in a.split()] for a in sys.argv[6:8])
gib = n / 2**30
med = statistics.median
rate = lambda t: f"{gib / t * 1024:.0f} MiB/s"
print(f"size {gib:.2f} GiB, {int(reps)} rounds, medians (all: cp {cp}, curl {cu}, sendfile {sf}):")
print(f"  cp + sync       {med(cp):.2f} s ({rate(med(cp))})")
print(f"  tus, dd | curl  {med(cu):.2f} s ({rate(med(cu))}): {med(cp) / med(cu):.2f}x of cp; client CPU {med(cu_cpu) / gib:.2f} s/GiB")
print(f"  tus, sendfile   {med(sf):.2f} s ({rate(med(sf))}): {med(cp) / med(sf):.2f}x of cp; client CPU {med(sf_cpu) / gib:.2f} s/GiB")
print(f"server peak RSS {rss / 1024:.1f} MiB, server CPU {cpu:.2f} s over {2 * reps * gib:.1f} GiB = {cpu / (2 * reps * gib):.2f} s/GiB")
PY
