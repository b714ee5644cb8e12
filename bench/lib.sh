# Shared by the bench scripts: tools, a farm of N target folders, and the peers that keep a link
# dir of it converged (each in its own process group, so its whole cost can be read).
# Needs: W (work dir), S (a tmpfs dir for linkfarm's state file); make_farm also N.

build_tools() {
    [[ -n ${LF:-} ]] || { cargo build --release -q -p linkfarm; LF=$PWD/target/release/linkfarm; }
    local t
    for t in lat_probe mini_daemon symlink_loop symlinkat_loop noop_loop noopat_loop; do gcc -O2 -o "$W/$t" "bench/$t.c"; done
}

# make_farm: N target folders in $W/models, the link dirs c, cs, ln, tmpfiles (converged by the
# C loop) and lf (by linkfarm, config $W/lf.yaml), and $W/tmpfiles.conf. BENCH_METRICS=1 also
# sets linkfarm's metrics_file (in $S).
make_farm() {
    M=$W/models
    mkdir -p "$M"
    (cd "$M" && seq -f 'm%06g' 0 $((N - 1)) | xargs mkdir)
    local d
    for d in c cs ln tmpfiles; do mkdir "$W/$d" && "$W/symlink_loop" "$M" "$W/$d" "$N"; done
    mkdir "$W/lf"
    cat >"$W/lf.yaml" <<YAML
version: 1
farms:
  - name: bench
    target_dir: $M
    link_dir: $W/lf
    entries: "*"
settings:
  state_file: $S/state.json
  adopt_after: 0s
${BENCH_METRICS:+  metrics_file: $S/linkfarm.prom}
YAML
    "$LF" -c "$W/lf.yaml" apply >/dev/null
    seq -f 'm%06g' 0 $((N - 1)) |
        awk -v w="$W" '{printf "L %s/tmpfiles/%s - - - - %s/models/%s\n", w, $1, w, $1}' >"$W/tmpfiles.conf"
}

PEER_NAMES=("minimal C inotify daemon (limit)" "the same C daemon re-opening link_dir by path (issue-7 SPEC §4)"
    "inotifywait -m + ln -sfn" "inotifywait -m + systemd-tmpfiles --create" "linkfarm run")
PEER_DIRS=(c cs ln tmpfiles lf)
declare -A PGID

# start_peers READY_NAME: starts every peer and waits until each repairs READY_NAME in its dir.
start_peers() {
    local i cmd
    for i in "${!PEER_DIRS[@]}"; do
        case ${PEER_DIRS[$i]} in
        c) cmd="exec $W/mini_daemon $W/c $M" ;;
        cs) cmd="exec $W/mini_daemon --safe $W/cs $M" ;;
        ln) cmd="inotifywait -m -q -e delete,moved_from --format %f $W/ln | while IFS= read -r n; do ln -sfn $M/\$n $W/ln/\$n; done" ;;
        tmpfiles) cmd="inotifywait -m -q -e delete,moved_from --format %f $W/tmpfiles | while IFS= read -r n; do systemd-tmpfiles --create $W/tmpfiles.conf; done" ;;
        lf) cmd="exec ${LF_WRAP:-} $LF -c $W/lf.yaml run" ;;
        esac
        setsid bash -c "$cmd" >"$W/${PEER_DIRS[$i]}.log" 2>&1 &
        PGID[${PEER_DIRS[$i]}]=$!
        "$W/lat_probe" ready "$M" "$1" 1 0 "$W/${PEER_DIRS[$i]}" ||
            { echo "did not start: $cmd" >&2; cat "$W/${PEER_DIRS[$i]}.log" >&2; exit 1; }
    done
}

# stop_peers: SIGTERM to every peer's process group, then waits (10 s, then SIGKILL) until no
# process of any group is left: a peer still running would re-create links while the caller's
# `rm -rf` empties its dir, and the rm fails with "Directory not empty".
stop_peers() {
    local p
    for p in "${PGID[@]}"; do kill -- -"$p" 2>/dev/null || true; done
    for p in "${PGID[@]}"; do wait_group_gone "$p"; done
}

# wait_group_gone PGID: polls until the process group is empty; SIGKILL after 10 s.
wait_group_gone() {
    local i
    for ((i = 0; i < 200; i++)); do
        pgrep -g "$1" >/dev/null || { wait "$1" 2>/dev/null || true; return 0; }
        sleep 0.05
    done
    kill -KILL -- -"$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do pgrep -g "$1" >/dev/null || return 0; sleep 0.05; done
    echo "peer group $1 outlived SIGKILL" >&2
}

# cost PGID: "cpu_ns ctx_switches voluntary rss_kib peak_kib processes" summed over every thread
# of every process in the group; the CPU of children already reaped (cutime + cstime, in ticks)
# is included.
cost() {
    local pid tid cpu=0 ctx=0 vol=0 rss=0 hwm=0 procs=0 v hz
    hz=$(getconf CLK_TCK)
    for pid in $(pgrep -g "$1"); do
        procs=$((procs + 1))
        v=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $14 + $15}') || v=0
        cpu=$((cpu + ${v:-0} * 1000000000 / hz))
        rss=$((rss + $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)))
        hwm=$((hwm + $(awk '/^VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)))
        for tid in /proc/"$pid"/task/*; do
            read -r v _ <"$tid/schedstat" 2>/dev/null || continue
            cpu=$((cpu + v))
            v=$(awk '/^voluntary_ctxt_switches/ {a=$2} /^nonvoluntary_ctxt_switches/ {b=$2} END {print a+0, b+0}' "$tid/status")
            vol=$((vol + ${v% *}))
            ctx=$((ctx + ${v% *} + ${v#* }))
        done
    done
    echo "$cpu $ctx $vol $rss $hwm $procs"
}
