#!/usr/bin/env bash
# Builds the .deb (cargo-deb, checked with lintian) and the .rpm (cargo-generate-rpm) from the
# repository: target/debian/linkfarm_*.deb and target/generate-rpm/linkfarm-*.rpm.
# Installs the tools it needs when they are missing. The binary is built on this machine (Debian
# bookworm in CI), so it runs on bookworm's glibc.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
command -v cargo-generate-rpm >/dev/null || cargo install --locked cargo-generate-rpm
if ! command -v lintian >/dev/null; then
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q lintian >/dev/null
fi

cargo build --release --locked -p linkfarm
cargo deb -p linkfarm --no-build
deb=$(ls -t target/debian/linkfarm_*_amd64.deb | head -n1)
# Overrides, each justified, are in packaging/debian/linkfarm.lintian-overrides.
lintian --fail-on error,warning "$deb"
echo "lintian: clean ($deb)"
# lintian does not parse the maintainer scripts cargo-deb assembled; sh -n does.
ctl=$(mktemp -d)
dpkg-deb -e "$deb" "$ctl"
for s in "$ctl"/preinst "$ctl"/postinst "$ctl"/prerm "$ctl"/postrm; do
    [ ! -e "$s" ] || sh -n "$s" || { echo "broken maintainer script: $(basename "$s")"; exit 1; }
done
rm -rf "$ctl"
cargo generate-rpm -p crates/linkfarm
ls -t target/generate-rpm/linkfarm-*.rpm | head -n1
