#!/bin/sh
# Runs every fuzz target RUNS times (default 300000) from seeds made by the real writers
# (tests/corpus/make_corpus.py), with libFuzzer refusing any single allocation over 16 MiB and
# any RSS over 512 MiB, so an allocation by a claimed length is a crash, not a slow test.
# Needs nightly and cargo-fuzz: rustup toolchain install nightly && cargo install cargo-fuzz
set -eu
RUNS=${RUNS:-300000}
here=$(cd "$(dirname "$0")" && pwd)
seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT
python3 "$here/../../../tests/corpus/make_corpus.py" "$seeds/all" 2>/dev/null
cd "$here"
for t in safetensors gguf pickle companion; do
    mkdir -p "corpus/$t"
    case $t in
        safetensors) pat='*.safetensors' ;;
        gguf) pat='*.gguf' ;;
        pickle) pat='*.[cp][kt]*' ;;
        companion) pat='*.[jpwty][spxea]*' ;;
    esac
    find "$seeds/all" -name "$pat" -size -64k -exec cp {} "corpus/$t/" \;
    cargo +nightly fuzz run -O "$t" "corpus/$t" -- -runs="$RUNS" -malloc_limit_mb=16 \
        -rss_limit_mb=512 -timeout=10 -max_len=65536 2>&1 | grep -E '^Done|ERROR|panicked' | sed "s/^/$t: /"
done
if ls artifacts/*/* >/dev/null 2>&1; then
    echo "crashes found: $(ls artifacts/*/*)" >&2
    exit 1
fi
