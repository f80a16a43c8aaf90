# shellcheck shell=bash
# Sourced by cross-build.sh, cross-test.sh and benches/insn-count.sh: installs what building for
# (and, with CROSS_NEED_QEMU=1, running) aarch64-unknown-linux-gnu on an x86_64 Debian machine
# needs, when missing, and exports the cargo/cc variables for that target.
#
#   Rust target     rustup target add aarch64-unknown-linux-gnu
#   Debian          gcc-aarch64-linux-gnu, libc6-dev-arm64-cross (the C compiler, glibc headers and
#                   libraries the bundled SQLite and ring are built and linked with);
#                   qemu-user (qemu-aarch64) when CROSS_NEED_QEMU=1
#
# After sourcing: CROSS_TRIPLE, CROSS_GNU, CROSS_SYSROOT, and cargo's linker / cc / ar / runner
# variables for the target (the runner: qemu-aarch64 with the cross glibc as its sysroot).

CROSS_TRIPLE=aarch64-unknown-linux-gnu
CROSS_GNU=aarch64-linux-gnu
CROSS_SYSROOT=/usr/$CROSS_GNU

cross_install() {
  local need_apt=()
  command -v "$CROSS_GNU-gcc" >/dev/null 2>&1 || need_apt+=(gcc-aarch64-linux-gnu)
  [ -e "$CROSS_SYSROOT/lib/libc.so.6" ] || need_apt+=(libc6-dev-arm64-cross)
  if [ "${CROSS_NEED_QEMU:-0}" = 1 ]; then
    command -v qemu-aarch64 >/dev/null 2>&1 || need_apt+=(qemu-user)
  fi
  if [ ${#need_apt[@]} -gt 0 ]; then
    echo "cross-env: installing ${need_apt[*]} from Debian's packages" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
  fi
  if ! rustup target list --installed | grep -qx "$CROSS_TRIPLE"; then
    rustup target add "$CROSS_TRIPLE"
  fi
}

cross_install
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER="$CROSS_GNU-gcc"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L $CROSS_SYSROOT"
export CC_aarch64_unknown_linux_gnu="$CROSS_GNU-gcc"
export AR_aarch64_unknown_linux_gnu="$CROSS_GNU-ar"
