#!/usr/bin/env bash
# The upload flow of the admin guide over real SMB: a private smbd on 127.0.0.1 shares a temp copy
# of the cw layout as ki_Daten, `linkfarm run` keeps its links, and smbclient does what clients
# do, right and wrong. Prints one PASS/FAIL line per assertion; ends with an inventory proving no
# uploaded file was lost except where the documented deltree hazard is shown on purpose.
# Then the guarded uploads of SPEC §10 through an inbox share: accepted within settle + 1 s with
# an equal checksum, a slow writer never moved, a truncated file and an existing name refused with
# a .why.txt read back over SMB, and a real clamd (a signature database the test writes) refusing
# a signed file.
#
# Needs root. Installs samba, smbclient, samba-vfs-modules and clamav-daemon when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/e2e/lib.sh

[ "$(id -u)" -eq 0 ] || { echo "needs root"; exit 1; }
need_packages smbd:samba smbclient:smbclient testparm:samba-common-bin
dpkg -s samba-vfs-modules >/dev/null 2>&1 || need_packages __none__:samba-vfs-modules
need_packages clamd:clamav-daemon clamdscan:clamav-daemon python3:python3

t0=$SECONDS
T=$(mktemp -d)
chmod 755 "$T"
SMBD_PID=
LF_PID=
CLAMD_PID=
cleanup() {
    set +e
    [ -n "$SMBD_PID" ] && kill "$SMBD_PID" 2>/dev/null && wait "$SMBD_PID" 2>/dev/null
    [ -n "$CLAMD_PID" ] && kill "$CLAMD_PID" 2>/dev/null
    [ -n "$LF_PID" ] && kill -CONT "$LF_PID" 2>/dev/null; [ -n "$LF_PID" ] && kill "$LF_PID" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT

cargo build --release --locked -p linkfarm
LF=$PWD/target/release/linkfarm
TYPES="checkpoints loras vae controlnet upscale_models embeddings clip diffusion_models"
SHARE=$T/cw
MODELS=$SHARE/storage-models/models
UP=$SHARE/storage-user/models-upload
id lfsmb >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin lfsmb
for t in $TYPES; do mkdir -p "$MODELS/$t"; done
mkdir -p "$SHARE/storage-user"
chown -R lfsmb:lfsmb "$SHARE"

# --- clamd with a signature database the test writes (no freshclam, no internet) ------------------
mkst() { # mkst FILE NBYTES: a valid safetensors holding one U8 tensor of NBYTES random bytes
    python3 - "$1" "$2" <<'PY'
import json, os, struct, sys
path, n = sys.argv[1], int(sys.argv[2])
header = json.dumps({"w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(header)) + header + os.urandom(n))
PY
}
mkdir -p "$T/src" "$T/clamdb"
mkst "$T/src/signed.safetensors" 5000
printf '%s:%s:Linkfarm.Test.Signed\n' "$(md5sum <"$T/src/signed.safetensors" | awk '{print $1}')" \
    "$(stat -c %s "$T/src/signed.safetensors")" >"$T/clamdb/linkfarm-test.hdb"
# clamd binds its socket after dropping to the clamav user: a folder of its own.
mkdir -p "$T/clamd-run"
chown clamav "$T/clamd-run"
cat >"$T/clamd.conf" <<EOF
LocalSocket $T/clamd-run/clamd.sock
LocalSocketMode 666
DatabaseDirectory $T/clamdb
Foreground yes
User clamav
EOF
chmod 755 "$T/clamdb"
chmod 644 "$T/clamdb/linkfarm-test.hdb"
clamd --config-file="$T/clamd.conf" >"$T/clamd.out" 2>&1 &
CLAMD_PID=$!
clamd_ready() { clamdscan --config-file="$T/clamd.conf" --fdpass --no-summary "$T/clamd.conf" >/dev/null 2>&1; }
wait_until 60 clamd_ready || { cat "$T/clamd.out"; exit 1; }
echo "clamd ready after $((SECONDS - t0)) s"

# --- linkfarm ----------------------------------------------------------------------------------------
INBOX=$SHARE/storage-user/models-inbox
cat >"$T/farm-only.yaml" <<EOF
version: 1
farms:
  - name: models-upload
    target_dir: cw/storage-models/models
    link_dir: cw/storage-user/models-upload
    entries: [$(echo $TYPES | sed 's/ /, /g')]
    owner: "lfsmb:lfsmb"
settings:
  state_file: state.json
EOF
cat >"$T/linkfarm.yaml" <<EOF
version: 1
farms:
  - name: models-upload
    target_dir: cw/storage-models/models
    link_dir: cw/storage-user/models-upload
    entries: [$(echo $TYPES | sed 's/ /, /g')]
    owner: "lfsmb:lfsmb"
inboxes:
  - name: models-inbox
    dir: cw/storage-user/models-inbox
    target_dir: cw/storage-models/models
    folders: [loras, vae, checkpoints]
    settle: 2s
    owner: "lfsmb:lfsmb"
    scanner: [clamdscan, "--config-file=$T/clamd.conf", --fdpass, --no-summary, "{}"]
settings:
  adopt_after: 1s
  state_file: state.json
  upload_log: uploads.jsonl
EOF
"$LF" run -c "$T/linkfarm.yaml" 2>"$T/linkfarm.log" &
LF_PID=$!
wait_until 10 test -L "$UP/diffusion_models" || { cat "$T/linkfarm.log"; exit 1; }
wait_until 10 test -d "$INBOX/loras" || { cat "$T/linkfarm.log"; exit 1; }

# --- smbd ----------------------------------------------------------------------------------------------
PORT=$((20000 + RANDOM % 20000))
mkdir -p "$T"/{lock,state,cache,pid,private,ncalrpc,log}
cat >"$T/smb.conf" <<EOF
[global]
    server role = standalone server
    smb ports = $PORT
    interfaces = 127.0.0.1
    bind interfaces only = yes
    lock directory = $T/lock
    state directory = $T/state
    cache directory = $T/cache
    pid directory = $T/pid
    private dir = $T/private
    ncalrpc dir = $T/ncalrpc
    log file = $T/log/log.%m
    passdb backend = tdbsam:$T/private/passdb.tdb
    load printers = no
    printing = bsd
    printcap name = /dev/null
    disable spoolss = yes
[ki_Daten]
    path = $SHARE
    read only = no
    follow symlinks = yes
    wide links = no
[ki_Recycle]
    path = $SHARE
    read only = no
    follow symlinks = yes
    wide links = no
    vfs objects = recycle
    recycle:repository = .recycle
    recycle:keeptree = yes
    recycle:versions = yes
[models-inbox]
    path = $INBOX
    read only = no
    hide unreadable = yes
    veto files = /.linkfarm-*/
EOF
check "testparm accepts the test's smb.conf" testparm -s "$T/smb.conf" >/dev/null 2>&1
printf 'pw\npw\n' | smbpasswd -c "$T/smb.conf" -a -s lfsmb >/dev/null
# No --no-process-group: with it, smbd signals the caller's whole process group on shutdown.
smbd --foreground --configfile="$T/smb.conf" >"$T/smbd.out" 2>&1 &
SMBD_PID=$!
smb() { # smb SHARE "commands"
    smbclient "//127.0.0.1/$1" -p "$PORT" -U "lfsmb%pw" -c "$2" 2>&1 || true
}
ready() { smb ki_Daten "ls" | grep -q storage-user; }
wait_until 10 ready || { cat "$T/smbd.out"; exit 1; }
echo "smbd ready on port $PORT after $((SECONDS - t0)) s"

# Every upload is recorded: sha256 and name. Expected losses are listed separately.
: >"$T/uploaded.sha"
: >"$T/expected-lost.sha"
upload() { # upload SHARE DIR NAME: a fresh random file put through SMB into DIR
    local f=$T/src/$3
    head -c $((4096 + RANDOM)) /dev/urandom >"$f"
    sha256sum "$f" | awk -v n="$3" '{print $1, n}' >>"$T/uploaded.sha"
    smb "$1" "cd $2; put $f $3"
}
no_error() { ! grep -q NT_STATUS <<<"$1"; }
has() { # has TEXT PATTERN...: every pattern occurs in TEXT
    local text=$1; shift
    for p in "$@"; do grep -qF -- "$p" <<<"$text" || return 1; done
}
creates() { grep -c "create $1 -> " "$T/linkfarm.log" || true; }

# --- a client removes an (empty) type folder: the link is back within 1 s ----------------------------
before=$(creates clip)
out=$(smb ki_Daten "rmdir storage-user/models-upload/clip")
check "client rmdir of the symlinked clip folder succeeds over SMB" no_error "$out"
check "it removed the link and linkfarm restored it within 1 s" \
    wait_until 1 bash -c "test -L '$UP/clip' && [ \$(grep -c 'create clip -> ' '$T/linkfarm.log') -gt $before ]"
out=$(upload ki_Daten storage-user/models-upload/clip after-rmdir.safetensors)
landed() { test -f "$MODELS/clip/after-rmdir.safetensors" && no_error "$out"; }
check "a put after the rmdir lands in the real clip folder" landed

# --- a client makes a real folder where a link was: adopted ------------------------------------------
# Stopped, linkfarm cannot win the race between the client's rmdir and mkdir; this is the state a
# daemon restart or a burst of client operations leaves.
kill -STOP "$LF_PID"
out=$(smb ki_Daten "rmdir storage-user/models-upload/embeddings; mkdir storage-user/models-upload/embeddings")
check "client replaces the embeddings link with a real folder" test -d "$UP/embeddings" -a ! -L "$UP/embeddings"
upload ki_Daten storage-user/models-upload/embeddings style-a.safetensors >/dev/null
upload ki_Daten storage-user/models-upload/embeddings style-b.safetensors >/dev/null
check "the client's files are in the real folder at the link path" test -f "$UP/embeddings/style-b.safetensors"
kill -CONT "$LF_PID"
check "linkfarm adopts the settled files and restores the link" wait_until 15 test -L "$UP/embeddings"
sums_ok() {
    for n in style-a style-b; do
        want=$(awk -v n="$n.safetensors" '$2 == n {print $1}' "$T/uploaded.sha")
        got=$(sha256sum "$MODELS/embeddings/$n.safetensors" 2>/dev/null | awk '{print $1}')
        [ -n "$want" ] && [ "$want" = "$got" ] || return 1
    done
}
check "the adopted files are in the real embeddings folder with equal checksums" sums_ok

# --- a put through every type folder ---------------------------------------------------------------
all=ok
for t in $TYPES; do
    out=$(upload ki_Daten "storage-user/models-upload/$t" "$t-model.safetensors")
    if grep -q NT_STATUS <<<"$out" || [ ! -f "$MODELS/$t/$t-model.safetensors" ]; then all="failed at $t: $out"; fi
done
check "a put through every type folder lands in the real folder ($all)" test "$all" = ok

# --- a client renames a type folder ----------------------------------------------------------------
out=$(smb ki_Daten "rename storage-user/models-upload/loras storage-user/models-upload/loras-old")
check "client rename of the loras link succeeds over SMB" no_error "$out"
check "linkfarm restores loras and prunes the renamed link" \
    wait_until 5 bash -c "test -L '$UP/loras' && ! test -e '$UP/loras-old' && ! test -L '$UP/loras-old'"
check "the real loras folder is untouched" test -f "$MODELS/loras/loras-model.safetensors"

# --- deltree with the recycle VFS: recoverable -------------------------------------------------------
upload ki_Daten storage-user/models-upload/upscale_models second.safetensors >/dev/null
smb ki_Recycle "deltree storage-user/models-upload/upscale_models" >/dev/null
recovered() {
    for n in upscale_models-model second; do
        want=$(awk -v n="$n.safetensors" '$2 == n {print $1}' "$T/uploaded.sha")
        find "$SHARE/.recycle" -type f -name "$n.safetensors" -exec sha256sum {} + 2>/dev/null | grep -q "$want" || return 1
    done
}
check "with vfs objects = recycle a client deltree leaves the files recoverable in .recycle" recovered
check "and linkfarm restores the type folder link" wait_until 5 test -L "$UP/upscale_models"

# --- the documented hazard: deltree without recycle deletes the model files --------------------------
awk '$2 == "vae-model.safetensors"' "$T/uploaded.sha" >>"$T/expected-lost.sha"
smb ki_Daten "deltree storage-user/models-upload/vae" >/dev/null
check "documented hazard shown: deltree without recycle deleted the real vae files (doctor warns)" \
    test ! -e "$MODELS/vae/vae-model.safetensors"
check "and linkfarm restores the vae link" wait_until 5 test -L "$UP/vae"

# --- guarded uploads: an inbox (SPEC §10) --------------------------------------------------------
SETTLE=2
record() { sha256sum "$T/src/$1" | awk -v n="$1" '{print $1, n}' >>"$T/uploaded.sha"; }
same_sum() { [ "$(sha256sum <"$1" | awk '{print $1}')" = "$(sha256sum <"$2" | awk '{print $1}')" ]; }
now() { date +%s.%N; }

mkst "$T/src/good.safetensors" 300000
record good.safetensors
out=$(smb models-inbox "cd loras; put $T/src/good.safetensors good.safetensors")
put_done=$(now)
check "put into the inbox's loras folder succeeds over SMB" no_error "$out"
accepted() { test -f "$MODELS/loras/good.safetensors" && same_sum "$MODELS/loras/good.safetensors" "$T/src/good.safetensors"; }
wait_until 15 accepted || true
took=$(awk -v a="$put_done" -v b="$(now)" 'BEGIN {printf "%.2f", b - a}')
check "accepted into the real loras folder with an equal checksum" accepted
check "within settle + 1 s: ${took} s after the put returned (settle ${SETTLE} s)" \
    awk -v t="$took" -v s="$SETTLE" 'BEGIN {exit !(t <= s + 1)}'
check "and gone from the inbox" test ! -e "$INBOX/loras/good.safetensors"
check "owned as configured (lfsmb), mode 644" test "$(stat -c %U:%a "$MODELS/loras/good.safetensors")" = lfsmb:644
check "the upload log has the accept with its sha256" \
    grep -q "\"action\":\"accept\".*\"sha256\":\"$(sha256sum <"$T/src/good.safetensors" | awk '{print $1}')\"" "$T/uploads.jsonl"

# A slow writer: holds the file open and writes a chunk every second for 6 s (3 x settle).
mkst "$T/src/slow.safetensors" 6000
record slow.safetensors
python3 - "$T/src/slow.safetensors" "$INBOX/loras/slow.safetensors" <<'PY' &
import sys, time
data = open(sys.argv[1], "rb").read()
with open(sys.argv[2], "wb") as f:
    step = len(data) // 6 + 1
    for i in range(0, len(data), step):
        f.write(data[i:i + step]); f.flush(); time.sleep(1)
PY
WRITER=$!
wait_until 10 test -e "$INBOX/loras/slow.safetensors"
moved=no
while kill -0 "$WRITER" 2>/dev/null; do
    [ -e "$INBOX/loras/slow.safetensors" ] || moved=yes
    [ -e "$MODELS/loras/slow.safetensors" ] && moved=yes
    sleep 0.05
done
wait "$WRITER"
check "a slow writer (a chunk a second for 3 x settle) is never moved while it writes" test "$moved" = no
check "and is accepted once it closed the file, whole" \
    wait_until $((SETTLE + 5)) bash -c "test -f '$MODELS/loras/slow.safetensors' && cmp -s '$MODELS/loras/slow.safetensors' '$T/src/slow.safetensors'"

# A truncated upload: refused, with a reason the client reads back over SMB.
mkst "$T/src/cut.safetensors" 20000
truncate -s -1000 "$T/src/cut.safetensors"
record cut.safetensors
smb models-inbox "cd vae; put $T/src/cut.safetensors cut.safetensors" >/dev/null
check "a truncated safetensors is refused into _refused/vae" wait_until $((SETTLE + 5)) test -f "$INBOX/_refused/vae/cut.safetensors.why.txt"
smb models-inbox "get _refused/vae/cut.safetensors.why.txt $T/cut.why.txt" >/dev/null
check "its .why.txt, read back with smbclient get, says it is truncated" grep -q "truncated" "$T/cut.why.txt"
check "the refused file is kept whole" same_sum "$INBOX/_refused/vae/cut.safetensors" "$T/src/cut.safetensors"
check "nothing reached the real vae folder" test ! -e "$MODELS/vae/cut.safetensors"

# A name that exists in the target is not overwritten.
mkst "$T/src/exists.safetensors" 1000
mkst "$MODELS/checkpoints/exists.safetensors" 1000
cp "$MODELS/checkpoints/exists.safetensors" "$T/src/exists-original.safetensors"
record exists.safetensors
record exists-original.safetensors
smb models-inbox "cd checkpoints; put $T/src/exists.safetensors exists.safetensors" >/dev/null
check "an upload named like an existing model is refused" wait_until $((SETTLE + 5)) test -f "$INBOX/_refused/checkpoints/exists.safetensors.why.txt"
check "the existing model is not overwritten" same_sum "$MODELS/checkpoints/exists.safetensors" "$T/src/exists-original.safetensors"
check "the reason says a model of that name exists" grep -q "a model of that name exists" "$INBOX/_refused/checkpoints/exists.safetensors.why.txt"

# ClamAV: the file whose signature the test wrote is refused with clamd's verdict.
record signed.safetensors
smb models-inbox "cd loras; put $T/src/signed.safetensors signed.safetensors" >/dev/null
check "clamd's signature refuses the signed file" wait_until $((SETTLE + 10)) test -f "$INBOX/_refused/loras/signed.safetensors.why.txt"
smb models-inbox "get _refused/loras/signed.safetensors.why.txt $T/signed.why.txt" >/dev/null
check "its .why.txt carries ClamAV's verdict" grep -q "Linkfarm.Test.Signed.UNOFFICIAL FOUND" "$T/signed.why.txt"
check "the upload log records reason scanner" grep -q '"file":"signed.safetensors".*"reason":"scanner"' "$T/uploads.jsonl"
check "every decision is logged with its inbox, action and reason" \
    bash -c "[ \$(grep -c 'inbox=models-inbox.*action=' '$T/linkfarm.log') -ge 5 ]"

# --- inventory: nothing else lost ------------------------------------------------------------------
find "$SHARE" -type f -exec sha256sum {} + | awk '{print $1}' | sort -u >"$T/present"
lost=$(awk '{print $1}' "$T/uploaded.sha" | sort -u | comm -23 - "$T/present" | comm -23 - <(awk '{print $1}' "$T/expected-lost.sha" | sort -u) | wc -l)
check "no uploaded file lost ($(wc -l <"$T/uploaded.sha") uploads; $lost lost outside the hazard step)" test "$lost" -eq 0
check "linkfarm reports the farm converged" bash -c "'$LF' -c '$T/linkfarm.yaml' status | grep -q 'converged (8/8'"

# --- the doctor on real Samba configs --------------------------------------------------------------
doctor() { "$LF" -c "$T/farm-only.yaml" doctor --smb-conf "$1" 2>&1 || true; }
out=$(doctor "$T/smb.conf")
check "doctor: the test shares pass (no FAIL)" has "$out" " 0 FAIL"
check "doctor: warns that ki_Daten lacks the recycle VFS" has "$out" "WARN  samba [ki_Daten]: no recycle VFS"
printf '[global]\n   unix extensions = no\n[ki_Daten]\n    path = %s\n    follow symlinks = yes\n    wide links = yes\n' "$SHARE" >"$T/guide.conf"
out=$(doctor "$T/guide.conf")
echo "$out" | sed -n '/samba/,$p' | sed 's/^/    doctor on the admin guide smb.conf: /'
check "doctor on the admin guide's smb.conf: wide links not needed, read only blocks uploads" \
    has "$out" "wide links = yes is not needed" "FAIL  samba [ki_Daten]: read only = yes"
sed "s|/vol/service/cw|$SHARE|" examples/smb.conf >"$T/example.conf"
check "examples/smb.conf passes testparm" testparm -s "$T/example.conf" >/dev/null 2>&1
out=$(doctor "$T/example.conf")
grep -E '^(WARN|FAIL)' <<<"$out" | sed 's/^/    doctor on examples\/smb.conf: /' || true
check "examples/smb.conf passes the doctor (no WARN, no FAIL)" has "$out" "0 WARN, 0 FAIL"
out=$("$LF" -c "$T/linkfarm.yaml" doctor --smb-conf "$T/example.conf" 2>&1 || true)
check "doctor with the inbox: same filesystem, clamdscan runnable, inbox share writable, no FAIL" \
    has "$out" "are on one filesystem" "is runnable" "clients can drop files into inbox models-inbox" " 0 FAIL"
check "doctor with the inbox: warns that [ki_Daten] lets clients write the models around it" \
    has "$out" "WARN  samba [ki_Daten]: clients can write the model folders"

echo "total $((SECONDS - t0)) s"
summary
