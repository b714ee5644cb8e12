#!/usr/bin/env bash
# Metrics and alerts against the real Prometheus tools (SPEC §12, issue 14):
#   1. the shipped alert rules: `promtool check rules` and `promtool test rules` on synthetic series;
#   2. a scripted day of `linkfarm run` with settings.metrics_file (repairs, an adoption, an
#      accepted and a refused upload into an inbox, a degraded farm, a flapping link):
#      `promtool check metrics` on the file it writes after each step reports no lint problem,
#      the file is 0644 and no temp file is left;
#   3. a private prometheus-node-exporter on 127.0.0.1 with --collector.textfile.directory at the
#      test's directory: a broken link moves linkfarm_repairs_total as node exporter serves it,
#      with node_textfile_scrape_error 0.
# Prints one PASS/FAIL line per assertion. Needs root (installs prometheus, for promtool, and
# prometheus-node-exporter from Debian when missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/e2e/lib.sh

[ "$(id -u)" -eq 0 ] || { echo "needs root"; exit 1; }
# Without recommends: promtool and node_exporter are all this needs. In a container without
# systemd their services are not started; on a host they are, and this test uses its own ports.
if ! command -v promtool >/dev/null || ! command -v prometheus-node-exporter >/dev/null || ! command -v curl >/dev/null; then
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus prometheus-node-exporter curl >/dev/null
fi

T=$(mktemp -d)
chmod 755 "$T"
LF_PID=
NE_PID=
cleanup() {
    set +e
    [ -n "$NE_PID" ] && kill "$NE_PID" 2>/dev/null
    [ -n "$LF_PID" ] && kill -CONT "$LF_PID" 2>/dev/null; [ -n "$LF_PID" ] && kill "$LF_PID" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT

# --- 1. the alert rules ---------------------------------------------------------------------------
check "promtool check rules: the shipped rules are valid" promtool check rules packaging/prometheus/linkfarm.rules.yml
check "promtool test rules: each alert fires when it should and only then" \
    promtool test rules packaging/prometheus/linkfarm.rules.test.yml

# --- 2. a scripted day ----------------------------------------------------------------------------
cargo build --release --locked -p linkfarm
LF=${CARGO_TARGET_DIR:-$PWD/target}/release/linkfarm
MODELS=$T/models
UP=$T/upload
PROM=$T/textfile/linkfarm.prom
mkdir -p "$MODELS"/{checkpoints,loras,vae} "$T/textfile" "$T/inbox"
cat >"$T/linkfarm.yaml" <<EOF
version: 1
farms:
  - name: models-upload
    target_dir: models
    link_dir: upload
    entries: [checkpoints, loras, vae]
inboxes:
  - name: models-inbox
    dir: inbox
    target_dir: models
    folders: [loras]
    settle: 1s
settings:
  upload_log: uploads.jsonl
  adopt_after: 1s
  resync_interval: 4s
  state_file: state.json
  metrics_file: textfile/linkfarm.prom
EOF

# metric NAME 'label="value"'...: the value of the one sample of NAME carrying all the labels, in
# the file the daemon wrote (or in the text on stdin with FROM=-).
metric() {
    local name=$1; shift
    awk -v name="$name" -v want="$*" '
        index($0, name "{") == 1 || $1 == name {
            ok = 1; n = split(want, w, " ")
            for (i = 1; i <= n; i++) if (index($1, w[i]) == 0) ok = 0
            if (ok) { print $2; exit }
        }' "${FROM:-$PROM}"
}
has() { # has VALUE NAME LABELS...: the sample is there with that value
    local want=$1; shift
    [ "$(metric "$@")" = "$want" ]
}
at_least() { # at_least N NAME LABELS...
    local n=$1 v; shift
    v=$(metric "$@"); [ -n "$v" ] && [ "${v%.*}" -ge "$n" ]
}
lint_clean() { # promtool reads the exposition on stdin; any output is a lint problem
    local out
    out=$(promtool check metrics <"$PROM" 2>&1) && [ -z "$out" ] || { echo "$out"; return 1; }
}
FARM='farm="models-upload"'
INBOX='inbox="models-inbox"'
inbox_files() { metric linkfarm_inbox_files_total "$INBOX" "result=\"$1\"" "reason=\"$2\""; }
repairs() { metric linkfarm_repairs_total "$FARM" "action=\"$1\"" "reason=\"$2\""; }

"$LF" run -c "$T/linkfarm.yaml" 2>"$T/linkfarm.log" &
LF_PID=$!
check "start-up: the farm converges and the file says so" wait_until 10 has 1 linkfarm_farm_state "$FARM" 'state="converged"'
check "every state is exported, 0 for the others" has 0 linkfarm_farm_state "$FARM" 'state="flapping"'
check "every repair counter is exported from start-up" has 0 linkfarm_repairs_total "$FARM" 'action="replace"' 'reason="foreign_link"'
check "the start-up creates are counted" has 3 linkfarm_repairs_total "$FARM" 'action="create"' 'reason="missing"'
check "links and links_ok" has 3 linkfarm_farm_links_ok "$FARM"
check "build_info carries the version" at_least 1 linkfarm_build_info 'version="'
check "every inbox counter is exported from start-up" has 0 linkfarm_inbox_files_total "$INBOX" 'result="refuse"' 'reason="scanner"'
check "the inbox's pending and accepted bytes from start-up" \
    test "$(metric linkfarm_inbox_pending "$INBOX"):$(metric linkfarm_inbox_accepted_bytes_total "$INBOX")" = 0:0
check "promtool check metrics: no lint problem after start-up" lint_clean
check "the file is mode 0644 for node exporter's user" test "$(stat -c %a "$PROM")" = 644

# The resync rewrites the file with nothing else happening (the stale alert depends on it).
m0=$(stat -c %y "$PROM")
rewritten() { [ "$(stat -c %y "$PROM")" != "$m0" ]; }
check "the resync rewrites the file with nothing else happening" wait_until 10 rewritten

# Morning: a client deletes a link, someone hijacks another.
rm "$UP/loras"
ln -sfn /etc "$UP/vae"
check "a deleted link is counted as create/missing" wait_until 10 has 4 linkfarm_repairs_total "$FARM" 'action="create"' 'reason="missing"'
check "a hijacked link is counted as replace/foreign_link" wait_until 10 has 1 linkfarm_repairs_total "$FARM" 'action="replace"' 'reason="foreign_link"'

# Noon: a client replaces a link by a folder with a model in it: adopted after adopt_after.
# (The daemon is paused meanwhile: it would re-create the link between the rm and the mkdir.)
kill -STOP "$LF_PID"
rm "$UP/checkpoints" && mkdir "$UP/checkpoints" && echo weights >"$UP/checkpoints/model.safetensors"
kill -CONT "$LF_PID"
check "the folder's file is adopted (adopt/conflict)" wait_until 15 has 1 linkfarm_repairs_total "$FARM" 'action="adopt"' 'reason="conflict"'
check "and the link made in its place (create/adopted)" wait_until 15 has 1 linkfarm_repairs_total "$FARM" 'action="create"' 'reason="adopted"'
check "the adopted model is in the target" test -f "$MODELS/checkpoints/model.safetensors"
check "promtool check metrics: no lint problem after the repairs" lint_clean

# Early afternoon: an upload into the inbox is accepted, another one refused for its format.
python3 - "$T/lora.safetensors" <<'PY'
import json, struct, sys
n = 4096
header = json.dumps({"w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(header)) + header + bytes(n))
PY
SIZE=$(stat -c %s "$T/lora.safetensors")
check "the daemon makes the inbox's folder" wait_until 10 test -d "$T/inbox/loras"
cp "$T/lora.safetensors" "$T/inbox/loras/.lora.safetensors.part" && mv "$T/inbox/loras/.lora.safetensors.part" "$T/inbox/loras/lora.safetensors"
echo "not a model" >"$T/inbox/loras/notes.exe"
check "an accepted upload is counted as accept/valid" wait_until 15 has 1 linkfarm_inbox_files_total "$INBOX" 'result="accept"' 'reason="valid"'
check "a refused upload is counted as refuse/format" wait_until 15 has 1 linkfarm_inbox_files_total "$INBOX" 'result="refuse"' 'reason="format"'
check "the accepted bytes are the upload's size ($SIZE)" has "$SIZE" linkfarm_inbox_accepted_bytes_total "$INBOX"
check "nothing pending once both are decided" has 0 linkfarm_inbox_pending "$INBOX"
check "the accepted model is in the target" test -f "$MODELS/loras/lora.safetensors"
check "promtool check metrics: no lint problem with the inbox series moved" lint_clean

# Afternoon: the models volume goes away, and comes back.
mv "$MODELS" "$T/models.away"
check "a missing target_dir makes the farm degraded" wait_until 15 has 1 linkfarm_farm_state "$FARM" 'state="degraded"'
check "promtool check metrics: no lint problem while degraded" lint_clean
mv "$T/models.away" "$MODELS"
check "back: converged again" wait_until 15 has 1 linkfarm_farm_state "$FARM" 'state="converged"'

# Evening: another program fights over a link (5 repairs within a minute make it flapping).
vae_repaired() { [ "$(readlink "$UP/vae")" = "$MODELS/vae" ]; }
for i in 1 2 3 4 5 6; do
    ln -sfn "$T" "$UP/vae.tmp" && mv -T "$UP/vae.tmp" "$UP/vae"
    # Each repair waited for, so each is a pass of its own; the sixth may be held back.
    wait_until 10 vae_repaired || break
    has 1 linkfarm_farm_state "$FARM" 'state="flapping"' && break
done
check "a fought-over link makes the farm flapping" wait_until 15 has 1 linkfarm_farm_state "$FARM" 'state="flapping"'
check "promtool check metrics: no lint problem while flapping" lint_clean
check "every pass is in the histogram" at_least 5 linkfarm_pass_duration_seconds_count
check "no temp file is left next to the metrics file" test "$(ls -A "$T/textfile")" = linkfarm.prom
check "status --json has the same counters" \
    test "$("$LF" -c "$T/linkfarm.yaml" status --json | grep -c '"wrong_target"\|"foreign_link"\|"pass_duration_seconds"')" -ge 3

# --- 3. through node exporter ---------------------------------------------------------------------
# Stop the fight's backoff from hiding the next repair: a fresh daemon, same files.
kill "$LF_PID"; wait "$LF_PID" || true
"$LF" run -c "$T/linkfarm.yaml" 2>>"$T/linkfarm.log" &
LF_PID=$!
NE_LOG=$T/node-exporter.log
for try in 1 2 3 4 5; do
    PORT=$((20000 + RANDOM % 20000))
    prometheus-node-exporter --web.listen-address="127.0.0.1:$PORT" \
        --collector.disable-defaults --collector.textfile \
        --collector.textfile.directory="$T/textfile" >"$NE_LOG" 2>&1 &
    NE_PID=$!
    up() { curl -fsS "http://127.0.0.1:$PORT/metrics" -o /dev/null; }
    if wait_until 10 up; then break; fi
    kill "$NE_PID" 2>/dev/null; wait "$NE_PID" 2>/dev/null || true; NE_PID=
done
[ -n "$NE_PID" ] || { cat "$NE_LOG"; echo "node exporter did not start"; exit 1; }
scrape() { curl -fsS "http://127.0.0.1:$PORT/metrics" >"$T/scrape.txt"; }
served() { # served N NAME LABELS...: node exporter serves the sample with a value >= N
    local n=$1; shift
    scrape && FROM=$T/scrape.txt at_least "$n" "$@"
}
check "node exporter serves linkfarm's metrics" wait_until 10 served 0 linkfarm_repairs_total "$FARM" 'action="create"' 'reason="missing"'
before=$(FROM=$T/scrape.txt metric linkfarm_repairs_total "$FARM" 'action="create"' 'reason="missing"')
rm "$UP/loras"
check "a broken link moves linkfarm_repairs_total as node exporter serves it ($before -> more)" \
    wait_until 10 served $((before + 1)) linkfarm_repairs_total "$FARM" 'action="create"' 'reason="missing"'
check "node_textfile_scrape_error is 0" test "$(FROM=$T/scrape.txt metric node_textfile_scrape_error)" = 0
check "node exporter reports the file's mtime (the stale alert's input)" \
    grep -q '^node_textfile_mtime_seconds{file=".*linkfarm.prom"}' "$T/scrape.txt"
check "node exporter logged no error about the file" test -z "$(grep -i 'level=error' "$NE_LOG" || true)"

[ "$FAILS" -eq 0 ] || { echo "--- linkfarm log"; tail -n 40 "$T/linkfarm.log"; echo "--- metrics file"; cat "$PROM"; }
summary
