#!/usr/bin/env bash
# Cross-builds the release binaries `meshlite` and `meshlite-bridge` for aarch64 Linux (Jetson
# Orin Nano, Raspberry Pi 5) on an x86_64 Debian machine, and prints their stripped sizes.
#
#   deploy/cross-build.sh                 # aarch64-unknown-linux-gnu
#   deploy/cross-build.sh --with-host     # also the host's x86_64 build, for the size comparison
#
# Installs what it needs when missing: the Rust target (rustup) and Debian's
# gcc-aarch64-linux-gnu and libc6-dev-arm64-cross (the C compiler and glibc headers the bundled
# SQLite and ring are compiled with). Output: target/aarch64-unknown-linux-gnu/release/ (respects
# CARGO_TARGET_DIR) plus stripped copies under <target dir>/stripped/<triple>/.
#
# The core tests under emulation (Debian's qemu-user; not run by this script):
#   apt-get install qemu-user
#   CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu" \
#   CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
#   CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
#     cargo test -p meshlite-core --target aarch64-unknown-linux-gnu
set -euo pipefail
cd "$(dirname "$0")/.."

TRIPLE=aarch64-unknown-linux-gnu
GNU=aarch64-linux-gnu
with_host=false
for arg in "$@"; do
  case "$arg" in
    --with-host) with_host=true ;;
    *) echo "usage: $0 [--with-host]" >&2; exit 2 ;;
  esac
done

need_apt=()
command -v "$GNU-gcc" >/dev/null 2>&1 || need_apt+=(gcc-aarch64-linux-gnu)
[ -d "/usr/$GNU/include" ] || need_apt+=(libc6-dev-arm64-cross)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "cross-build.sh: installing ${need_apt[*]} from Debian's packages" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! rustup target list --installed | grep -qx "$TRIPLE"; then
  rustup target add "$TRIPLE"
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER="$GNU-gcc"
export CC_aarch64_unknown_linux_gnu="$GNU-gcc"
export AR_aarch64_unknown_linux_gnu="$GNU-ar"

targets=(--target "$TRIPLE")
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
      'BEGIN { printf "%-28s %-16s %6.1f MiB (%d bytes)\n", t, b, n / 1048576, n }'
  done
}
report "$TRIPLE" "$GNU-strip"
if $with_host; then
  report x86_64-unknown-linux-gnu strip
fi
