#!/usr/bin/env bash
# End to end under a real systemd: builds the .deb, boots a Debian bookworm container with
# systemd-nspawn, installs the package there and exercises the real unit: READY, STATUS, repairs
# in journald with their fields, reload (good and broken), the watchdog, exit 78 without a restart
# loop, a clean stop, and the sandbox; then linkfarm-web.service as the package's own user,
# taking a tus upload that the daemon accepts. Prints one PASS/FAIL line per assertion.
#
# Needs root. Installs debootstrap and systemd-container when missing. The rootfs is built once
# and cached in $LINKFARM_E2E_CACHE (default /var/cache/linkfarm-e2e); --volatile=overlay keeps it
# clean. Cold run ~2 min (debootstrap), cached a few seconds plus the build.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/e2e/lib.sh

CACHE=${LINKFARM_E2E_CACHE:-/var/cache/linkfarm-e2e}
# Packages of the rootfs; changing the list rebuilds the cache. man-db: systemd-analyze verify
# checks the unit's Documentation=man: page with it; curl: a tus upload to linkfarm-web.
INCLUDE=systemd,systemd-sysv,procps,dbus,man-db,curl
ROOTFS=$CACHE/bookworm-$(echo "$INCLUDE" | md5sum | cut -c1-8)
CG_NAME=linkfarm-e2e-$$
WORK=$(mktemp -d)
NSPAWN_PID=
INIT=

cleanup() {
    set +e
    if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
        # nspawn turns SIGTERM into an orderly shutdown of the container.
        kill -TERM "$NSPAWN_PID"
        wait_until 30 bash -c "! kill -0 $NSPAWN_PID 2>/dev/null" || kill -KILL "$NSPAWN_PID"
        wait "$NSPAWN_PID" 2>/dev/null
    fi
    for h in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup; do
        [ -d "$h/$CG_NAME" ] && find "$h/$CG_NAME" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

[ "$(id -u)" -eq 0 ] || { echo "needs root"; exit 1; }
need_packages debootstrap:debootstrap systemd-nspawn:systemd-container nsenter:util-linux

t0=$SECONDS
# --- the package -------------------------------------------------------------------------------
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
cargo build --release --locked -p linkfarm
cargo deb -p linkfarm --no-build >/dev/null
DEB=$(ls -t target/debian/linkfarm_*_amd64.deb | head -n1)
mkdir -p "$WORK/deb" && cp "$DEB" "$WORK/deb/linkfarm.deb"

# --- the rootfs, once ----------------------------------------------------------------------------
if [ ! -x "$ROOTFS/sbin/init" ]; then
    MIRROR=$(debian_mirror)
    [ -n "$MIRROR" ] || { echo "no Debian mirror in the host's apt sources"; exit 1; }
    echo "building the bookworm rootfs from $MIRROR (cached in $ROOTFS)"
    rm -rf "$ROOTFS.tmp" && mkdir -p "$CACHE"
    debootstrap --variant=minbase --include="$INCLUDE" \
        bookworm "$ROOTFS.tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
        || { tail -n 20 "$CACHE/debootstrap.log"; exit 1; }
    mv "$ROOTFS.tmp" "$ROOTFS"
fi
echo "package and rootfs ready after $((SECONDS - t0)) s"

# --- boot ------------------------------------------------------------------------------------------
# No systemd on the host: nspawn gets its own cgroup directory, must not register with machined
# and must keep the caller's unit.
(
    for h in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified; do
        if [ -d "$h" ]; then mkdir -p "$h/$CG_NAME" && echo $BASHPID >"$h/$CG_NAME/cgroup.procs"; fi
    done
    exec systemd-nspawn --boot --register=no --keep-unit --volatile=overlay --console=read-only \
        --private-network --machine=linkfarm-e2e -D "$ROOTFS" --bind-ro="$WORK/deb:/mnt/deb" \
        >"$WORK/boot.log" 2>&1
) &
NSPAWN_PID=$!

find_init() { # the container's PID 1, seen from here: NSpid "<host pid> 1", below nspawn
    local s p
    for s in /proc/[0-9]*/status; do
        p=${s#/proc/}; p=${p%/status}
        if grep -qE "^NSpid:\s+$p\s+1$" "$s" 2>/dev/null; then
            local q=$p
            while [ -n "$q" ] && [ "$q" -gt 1 ]; do
                [ "$q" = "$NSPAWN_PID" ] && { INIT=$p; return 0; }
                q=$(awk '/^PPid:/{print $2}' "/proc/$q/status" 2>/dev/null)
            done
        fi
    done
    return 1
}
wait_until 60 find_init || { cat "$WORK/boot.log"; echo "container did not start"; exit 1; }
ct() { nsenter -t "$INIT" -a "$@"; }
wait_until 60 ct test -S /run/systemd/private || { tail -n 30 "$WORK/boot.log"; exit 1; }
state=$(ct systemctl is-system-running --wait || true)
echo "container up after $((SECONDS - t0)) s (system $state)"

# --- install ---------------------------------------------------------------------------------------
ct dpkg -i /mnt/deb/linkfarm.deb >/dev/null
check "the package installs the unit, disabled" test "$(ct systemctl is-enabled linkfarm || true)" = disabled
check "systemd-analyze verify is clean" test -z "$(ct systemd-analyze verify /lib/systemd/system/linkfarm.service 2>&1 | grep -v 'Unit.*not found' || true)"
exposure=$(ct systemd-analyze security linkfarm.service 2>/dev/null | awk '/Overall exposure level/{print $(NF-2)}')
# 1.4 before inboxes; their check worker needs setuid/setgid/setrlimit and CAP_SETUID, CAP_SETGID
# and CAP_LEASE (see the unit), which systemd-analyze weighs at +0.2.
check "sandbox exposure $exposure <= 1.6" awk -v e="$exposure" 'BEGIN{exit !(e <= 1.6 && e > 0)}'

# The admin guide's tree; the watchdog made short for the test.
ct bash -c 'mkdir -p /vol/service/cw/storage-user /vol/service/cw/storage-models/models/{checkpoints,loras,vae,controlnet,upscale_models,embeddings,clip,diffusion_models}'
ct mkdir -p /etc/systemd/system/linkfarm.service.d
ct bash -c 'printf "[Service]\nWatchdogSec=3s\n" >/etc/systemd/system/linkfarm.service.d/e2e.conf'
ct systemctl daemon-reload
UP=/vol/service/cw/storage-user/models-upload
CFG=/etc/linkfarm/linkfarm.yaml

# --- start -----------------------------------------------------------------------------------------
check "systemctl start returns once the daemon is READY" ct systemctl start linkfarm
check "the first pass made every link before READY" ct test -L $UP/diffusion_models
status=$(ct systemctl show -p StatusText --value linkfarm)
check "systemctl status shows the STATUS text ($status)" grep -q "1 farm, 8/8 links ok" <<<"$status"
check "links and the created link_dir belong to the configured owner" \
    test "$(ct stat -c %u:%g $UP/loras $UP | sort -u)" = "1000:1000"

# --- a repair, in journald -------------------------------------------------------------------------
# (journalctl 252 returns nothing for --after-cursor combined with field matches, so new records
# are told apart by counting.)
creates() { ct journalctl -u linkfarm LINKFARM_ACTION=create LINKFARM_LINK=loras -o json | grep -c '"LINKFARM_FARM":"models-upload"' || true; }
before=$(creates)
ct rm $UP/loras
check "a deleted link is repaired" wait_until 10 ct test -L $UP/loras
repair_logged() { [ "$(creates)" -gt "$before" ]; }
check "journalctl -u linkfarm LINKFARM_ACTION=create LINKFARM_LINK=loras shows it with LINKFARM_FARM" \
    wait_until 10 repair_logged
record=$(ct journalctl -u linkfarm LINKFARM_ACTION=create LINKFARM_LINK=loras -o json -n 1)
check "the record has SYSLOG_IDENTIFIER=linkfarm, PRIORITY=6 and LINKFARM_REASON=missing" \
    bash -c 'grep -q "\"SYSLOG_IDENTIFIER\":\"linkfarm\"" <<<"$1" && grep -q "\"PRIORITY\":\"6\"" <<<"$1" && grep -q "\"LINKFARM_REASON\":\"missing\"" <<<"$1"' _ "$record"

# --- reload ----------------------------------------------------------------------------------------
ct mkdir /vol/service/cw/storage-models/models/extra
ct cp $CFG $CFG.good
ct sed -i 's/^      - diffusion_models$/      - diffusion_models\n      - extra/' $CFG
ct systemctl reload linkfarm
check "systemctl reload with a changed config applies it" wait_until 10 ct test -L $UP/extra
logged() { ct journalctl -u linkfarm -o cat | grep -cE "$1" || true; }
before=$(logged 'reload failed.*linkfarm.yaml:[0-9]+:[0-9]+')
ct bash -c "sed 's/^    on_conflict: adopt$/    on_conflict: sometimes/' $CFG.good >$CFG.new && mv $CFG.new $CFG"
ct systemctl reload linkfarm
broken_logged() { [ "$(logged 'reload failed.*linkfarm.yaml:[0-9]+:[0-9]+')" -gt "$before" ]; }
check "a broken config on reload is logged with line and column" wait_until 10 broken_logged
check "and the service stays active" test "$(ct systemctl is-active linkfarm)" = active
ct rm $UP/vae
check "and the previous config keeps repairing" wait_until 10 ct test -L $UP/vae
ct cp $CFG.good $CFG

# --- watchdog --------------------------------------------------------------------------------------
pid=$(ct systemctl show -p MainPID --value linkfarm)
restarts=$(ct systemctl show -p NRestarts --value linkfarm)
ct kill -STOP "$pid"
restarted() {
    local now
    now=$(ct systemctl show -p MainPID --value linkfarm)
    [ "$(ct systemctl show -p NRestarts --value linkfarm)" -gt "$restarts" ] && [ "$now" != "$pid" ] \
        && [ "$now" != 0 ] && [ "$(ct systemctl is-active linkfarm)" = active ]
}
check "SIGSTOP to the main PID: the watchdog kills and restarts it" wait_until 30 restarted
ct rm $UP/clip
check "the restarted daemon repairs" wait_until 10 ct test -L $UP/clip

# --- one daemon per state file (SPEC §5): an admin tries `linkfarm run` in a terminal -------------
pid=$(ct systemctl show -p MainPID --value linkfarm)
second=$(ct timeout 20 linkfarm run 2>&1; echo "exit=$?")
check "a second 'linkfarm run' exits 1 at once, naming the service's pid ($pid)" \
    bash -c 'grep -q "exit=1$" <<<"$1" && grep -q "(pid $2)" <<<"$1"' _ "$second" "$pid"
check "and the service runs on" test "$(ct systemctl is-active linkfarm)" = active
check "a restart takes the lock over from the stopped daemon" ct systemctl restart linkfarm
ct rm $UP/clip
check "and the new daemon repairs" wait_until 10 ct test -L $UP/clip

# --- invalid config at start -----------------------------------------------------------------------
ct systemctl stop linkfarm
ct bash -c "printf 'version: 1\nfarms: []\n' >$CFG"
restarts=$(ct systemctl show -p NRestarts --value linkfarm)
check "an invalid config makes the start fail" bash -c "! nsenter -t $INIT -a systemctl start linkfarm 2>/dev/null"
check "with exit status 78" test "$(ct systemctl show -p ExecMainStatus --value linkfarm)" = 78
# RestartSec=2s: three of them without a restart shows there is no loop.
sleep 6
check "and no restart loop (RestartPreventExitStatus=78)" \
    test "$(ct systemctl show -p NRestarts --value linkfarm)" = "$restarts" -a "$(ct systemctl is-active linkfarm || true)" = failed
ct cp $CFG.good $CFG
ct systemctl reset-failed linkfarm

# --- the sandbox -----------------------------------------------------------------------------------
ct bash -c 'mkdir -p /srv/models/a /srv/links'
ct bash -c "sed -i 's|^settings:|  - name: outside\\n    target_dir: /srv/models\\n    link_dir: /srv/links\\n    entries: [a]\\nsettings:|' $CFG"
check "the config with a second farm is valid" ct linkfarm validate
check "the service starts with a farm outside its sandbox" ct systemctl start linkfarm
sandbox_logged() { [ "$(logged 'Read-only file system.*ReadWritePaths=/the/tree')" -gt 0 ]; }
check "a tree outside ReadWritePaths= is reported with the drop-in to add" wait_until 10 sandbox_logged
ct mkdir -p /etc/systemd/system/linkfarm.service.d
ct bash -c 'printf "[Service]\nReadWritePaths=/srv\n" >/etc/systemd/system/linkfarm.service.d/srv.conf'
ct systemctl daemon-reload
check "and restarts with the drop-in" ct systemctl restart linkfarm
check "after the drop-in, the tree is managed" wait_until 10 ct test -L /srv/links/a
check "the sandbox never stopped the daemon from managing the example tree" \
    ct bash -c "for n in checkpoints loras vae controlnet upscale_models embeddings clip diffusion_models; do test -L $UP/\$n || exit 1; done"

# --- metrics under the sandbox (SPEC §12) -----------------------------------------------------------
# The unit's ReadWritePaths=-/var/lib/prometheus/node-exporter lets the daemon write node
# exporter's textfile directory (made here before the restart, as installing node exporter would).
PROM=/var/lib/prometheus/node-exporter/linkfarm.prom
ct mkdir -p /var/lib/prometheus/node-exporter
ct bash -c "sed -i 's|^settings:|settings:\\n  metrics_file: $PROM|' $CFG"
check "with metrics_file set, the service restarts" ct systemctl restart linkfarm
check "the sandboxed daemon writes node exporter's textfile" \
    wait_until 10 ct grep -q '^linkfarm_farm_state{farm="models-upload",state="converged"} 1' $PROM
check "readable by node exporter's user (0644)" test "$(ct stat -c %a $PROM)" = 644

# --- linkfarm-web under systemd (SPEC §13) ----------------------------------------------------------
check "the package made linkfarm-web's user (sysusers.d)" ct getent passwd linkfarm-web
check "systemd-analyze verify of linkfarm-web.service is clean" \
    test -z "$(ct systemd-analyze verify /lib/systemd/system/linkfarm-web.service 2>&1 | grep -v 'Unit.*not found' || true)"
wexp=$(ct systemd-analyze security linkfarm-web.service 2>/dev/null | awk '/Overall exposure level/{print $(NF-2)}')
check "linkfarm-web sandbox exposure $wexp <= 1.2" awk -v e="$wexp" 'BEGIN{exit !(e <= 1.2 && e > 0)}'
IN=/vol/service/cw/storage-user/models-inbox
MODELS=/vol/service/cw/storage-models/models
WOWNER="$(ct id -u linkfarm-web):$(ct id -g linkfarm-web)"
# An inbox owned by the web service's user (its folders, and what it accepts), and a web section.
ct bash -c "sed -i 's|^settings:|inboxes:\n  - name: models-inbox\n    dir: $IN\n    target_dir: $MODELS\n    settle: 1s\n    owner: \"$WOWNER\"\nsettings:|' $CFG"
ct bash -c "printf 'web:\n  listen: 127.0.0.1:8470\n  reserve: 1MiB\n' >>$CFG"
check "the config with an inbox and a web section is valid" ct linkfarm validate
check "the daemon restarts with the inbox" ct systemctl restart linkfarm
check "and makes the inbox folders, owned by linkfarm-web" wait_until 10 ct bash -c "[ \"\$(stat -c %U $IN/loras)\" = linkfarm-web ]"
ct bash -c 'printf "pw-alice\n" | linkfarm web user add alice --password-stdin' >/dev/null
ct chgrp linkfarm-web /etc/linkfarm/web-users
check "systemctl start linkfarm-web returns once it is READY" ct systemctl start linkfarm-web
wpid=$(ct systemctl show -p MainPID --value linkfarm-web)
check "it runs as linkfarm-web, without capabilities" \
    ct bash -c "[ \"\$(stat -c %U /proc/$wpid)\" = linkfarm-web ] && grep -q '^CapEff:\s*0*$' /proc/$wpid/status"
# A valid model, made here and read by the container through the bind mount.
python3 - "$WORK/deb/m.safetensors" <<'PY'
import json, os, struct, sys
h = json.dumps({"lora_unet_a.lora_down.weight": {"dtype": "U8", "shape": [4096], "data_offsets": [0, 4096]}}).encode()
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + os.urandom(4096))
PY
size=$(stat -c %s "$WORK/deb/m.safetensors")
meta="Upload-Metadata: filename $(printf m.safetensors | base64 -w0),folder $(printf loras | base64 -w0)"
loc=$(ct curl -sS -D - -o /dev/null -u alice:pw-alice -H 'Tus-Resumable: 1.0.0' -X POST \
    -H "Upload-Length: $size" -H "$meta" http://127.0.0.1:8470/files/ | tr -d '\r' | sed -n 's|^[Ll]ocation: ||p')
check "a tus creation gets a Location ($loc)" test -n "$loc"
code=$(ct curl -sS -o /dev/null -w '%{http_code}' -u alice:pw-alice -H 'Tus-Resumable: 1.0.0' -X PATCH \
    -H 'Upload-Offset: 0' -H 'Content-Type: application/offset+octet-stream' \
    --data-binary @/mnt/deb/m.safetensors "http://127.0.0.1:8470$loc")
check "the whole file in one PATCH: 204 ($code)" test "$code" = 204
check "the daemon accepts it into the models, byte for byte" \
    wait_until 20 ct cmp -s /mnt/deb/m.safetensors $MODELS/loras/m.safetensors
sha=$(sha256sum "$WORK/deb/m.safetensors" | cut -d' ' -f1)
answer() { ct curl -sS -u alice:pw-alice "http://127.0.0.1:8470/api/uploads/${loc##*/}"; }
said_accepted() { answer | grep -q '"state":"accepted"' && answer | grep -q "$sha"; }
check "the web service reads the daemon's decision: accepted, with the sha256" wait_until 10 said_accepted
check "journald has the accept with the web user" \
    wait_until 10 bash -c "nsenter -t $INIT -a journalctl -u linkfarm LINKFARM_ACTION=accept -o json | grep -q 'alice'"
check "systemctl reload linkfarm-web keeps it active" \
    bash -c "nsenter -t $INIT -a systemctl reload linkfarm-web && [ \"\$(nsenter -t $INIT -a systemctl is-active linkfarm-web)\" = active ]"
ct systemctl stop linkfarm-web
check "systemctl stop linkfarm-web exits cleanly" \
    test "$(ct systemctl show -p ExecMainStatus --value linkfarm-web)/$(ct systemctl is-active linkfarm-web || true)" = "0/inactive"

# --- stop ------------------------------------------------------------------------------------------
ct systemctl stop linkfarm
check "systemctl stop exits cleanly (status 0, inactive)" \
    test "$(ct systemctl show -p ExecMainStatus --value linkfarm)/$(ct systemctl is-active linkfarm || true)" = "0/inactive"

echo "total $((SECONDS - t0)) s"
if [ -n "${LINKFARM_E2E_KEEP:-}" ]; then
    echo "keeping the container: nsenter -t $INIT -a ...; kill $NSPAWN_PID to end"
    touch "$LINKFARM_E2E_KEEP"; while [ -e "$LINKFARM_E2E_KEEP" ]; do sleep 1; done
fi
if [ "$FAILS" -gt 0 ]; then
    echo "--- diagnostics"
    ct systemd-analyze verify /lib/systemd/system/linkfarm.service 2>&1 | head -n 5 || true
    ct systemctl status --no-pager linkfarm 2>&1 | tail -n 15 || true
    ct journalctl -u linkfarm LINKFARM_ACTION=create -n 1 -o json 2>&1 | cut -c1-1500 || true
    ct journalctl -u linkfarm-web -n 20 --no-pager 2>&1 || true
    ct journalctl -u linkfarm -n 20 --no-pager 2>&1 | grep -i inbox || true
fi
summary
