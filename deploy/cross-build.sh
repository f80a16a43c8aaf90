#!/usr/bin/env bash
# Cross-builds the release binaries `meshlite` and `meshlite-bridge` for aarch64 Linux (Jetson
# Orin Nano, Raspberry Pi 5) on an x86_64 Debian machine, and prints their stripped sizes and
# what their code is made of.
#
#   deploy/cross-build.sh                 # aarch64-unknown-linux-gnu
#   deploy/cross-build.sh --with-host     # also the host's x86_64 build, for the size comparison
#
# Installs what it needs when missing (deploy/cross-env.sh): the Rust target (rustup) and Debian's
# gcc-aarch64-linux-gnu and libc6-dev-arm64-cross (the C compiler and glibc the bundled SQLite and
# ring are compiled and linked with). Output: <target dir>/aarch64-unknown-linux-gnu/release/
# (respects CARGO_TARGET_DIR) plus stripped copies under <target dir>/stripped/<triple>/, and the
# code size of `meshlite` by crate (deploy/size-by-crate.py, from the unstripped symbols).
#
# The core tests for aarch64 under qemu-user emulation: deploy/cross-test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

with_host=false
for arg in "$@"; do
  case "$arg" in
    --with-host) with_host=true ;;
    *) echo "usage: $0 [--with-host]" >&2; exit 2 ;;
  esac
done

# shellcheck source=cross-env.sh source-path=SCRIPTDIR
. deploy/cross-env.sh

targets=(--target "$CROSS_TRIPLE")
if $with_host; then
  targets+=(--target x86_64-unknown-linux-gnu)
fi
cargo build --locked --release "${targets[@]}" -p meshlite-node -p meshlite-bridge

target_dir=${CARGO_TARGET_DIR:-target}
report() {
  local triple=$1 strip=$2
  mkdir -p "$target_dir/stripped/$triple"
  for bin in meshlite meshlite-bridge; do
    local out="$target_dir/stripped/$triple/$bin"
    "$strip" -o "$out" "$target_dir/$triple/release/$bin"
    awk -v t="$triple" -v b="$bin" -v n="$(stat -c %s "$out")" \
      'BEGIN { printf "%-28s %-16s %6.1f MiB stripped (%d bytes)\n", t, b, n / 1048576, n }'
  done
}
report "$CROSS_TRIPLE" "$CROSS_GNU-strip"
if $with_host; then
  report x86_64-unknown-linux-gnu strip
fi
python3 deploy/size-by-crate.py "$target_dir/$CROSS_TRIPLE/release/meshlite" --top 12
