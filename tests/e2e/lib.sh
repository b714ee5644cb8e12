# Helpers shared by the end-to-end scripts: PASS/FAIL lines, polling with deadlines, and the
# Debian mirror this machine already uses (never a hard-coded host).

PASSES=0
FAILS=0
pass() { PASSES=$((PASSES + 1)); echo "PASS: $*"; }
fail() { FAILS=$((FAILS + 1)); echo "FAIL: $*"; }
check() { # check "what" command...
    local what=$1; shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}
# wait_until SECONDS command...: polls every 50 ms until the command succeeds.
wait_until() {
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.05
    done
}
summary() {
    echo "== $PASSES passed, $FAILS failed"
    [ "$FAILS" -eq 0 ]
}

# The first Debian mirror of the host's apt sources (deb822 or one-line format).
debian_mirror() {
    local m
    m=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1 | awk '{print $2}')
    if [ -z "$m" ]; then
        m=$(grep -hE '^deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | grep -v security | head -n1 | awk '{print $2}')
    fi
    echo "${m:-}"
}

need_packages() { # need_packages cmd:package ...
    local missing=()
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing ${missing[*]}"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
    fi
}
