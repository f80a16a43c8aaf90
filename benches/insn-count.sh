#!/usr/bin/env bash
# Instructions per store operation (insert, update, read, remote apply) for x86_64 and for
# aarch64, counted, not timed: each operation's count is
#   (instructions of `opcount --op OP --n N`  −  instructions of the same run with --dry) / N
# so start-up, set-up and input generation cancel out (src/bin/opcount.rs).
#
#   benches/insn-count.sh                         # both architectures under QEMU (emulated)
#   benches/insn-count.sh --arch aarch64 --n 1000 --ops "insert read"
#   benches/insn-count.sh --counter perf          # real hardware counters of this machine (a Pi)
#   benches/insn-count.sh --no-build              # use the opcount binaries already built
#
# Counters:
#   qemu  (default) qemu-user with benches/qemu/insn_count.c, a TCG plugin counting executed guest
#         instructions (all threads). aarch64 binaries are cross-built (deploy/cross-env.sh) and
#         run with the cross glibc; x86_64 binaries run under qemu-x86_64 with the same plugin, so
#         both architectures are counted the same way. The counts are exact for the emulated
#         CPU model; QEMU times are meaningless and are never printed.
#   perf  `perf stat -e instructions:u` on this machine's own CPU, native architecture only
#         (for a real Pi or Jetson; needs perf and kernel.perf_event_paranoid ≤ 2).
#
# Output: one JSON line per (architecture, operation) on stdout, a table on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

n=2000
ops="insert update read remote-apply"
arch=both
counter=qemu
build=true
while [ $# -gt 0 ]; do
  case "$1" in
    --n) n=$2; shift 2 ;;
    --ops) ops=$2; shift 2 ;;
    --arch) arch=$2; shift 2 ;;
    --counter) counter=$2; shift 2 ;;
    --no-build) build=false; shift ;;
    *) echo "usage: $0 [--n N] [--ops \"insert update read remote-apply\"] [--arch x86_64|aarch64|both] [--counter qemu|perf] [--no-build]" >&2; exit 2 ;;
  esac
done
native=$(uname -m)
case "$arch" in
  both) arches=(x86_64 aarch64) ;;
  x86_64|aarch64) arches=("$arch") ;;
  *) echo "insn-count.sh: unknown --arch $arch" >&2; exit 2 ;;
esac
if [ "$counter" = perf ]; then
  arches=("$native")
  command -v perf >/dev/null 2>&1 || { echo "insn-count.sh: perf not found (Debian: linux-perf)" >&2; exit 1; }
elif [ "$counter" != qemu ]; then
  echo "insn-count.sh: unknown --counter $counter" >&2; exit 2
fi

target_dir=${CARGO_TARGET_DIR:-target}
mkdir -p "$target_dir/insn-count"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ "$counter" = qemu ]; then
  export CROSS_NEED_QEMU=1
  # shellcheck source=../deploy/cross-env.sh source-path=SCRIPTDIR
  . deploy/cross-env.sh
  command -v cc >/dev/null 2>&1 || { echo "insn-count.sh: needs a C compiler (Debian: gcc)" >&2; exit 1; }
  plugin="$target_dir/insn-count/insn_count.so"
  cc -shared -fPIC -O2 -Wall -o "$plugin" benches/qemu/insn_count.c
  qemu_version=$(qemu-aarch64 --version | head -1 | sed 's/^qemu-aarch64 version/qemu-user/')
fi

binary_for() {
  local triple="$1-unknown-linux-gnu"
  if $build; then
    cargo build --locked --release --target "$triple" -p meshlite-benches --bin opcount >&2
  fi
  echo "$target_dir/$triple/release/opcount"
}

# count ARCH BINARY ARGS...: prints the instructions the run executed.
count() {
  local a=$1 bin=$2 log="$work/count.log"
  shift 2
  rm -f "$log"
  if [ "$counter" = perf ]; then
    perf stat -x, -e instructions:u -o "$log" "$bin" "$@" >/dev/null
    awk -F, '/instructions/ && $1 ~ /^[0-9]+$/ { print $1; exit }' "$log"
  else
    local qemu=(qemu-x86_64)
    [ "$a" = aarch64 ] && qemu=(qemu-aarch64 -L "$CROSS_SYSROOT")
    "${qemu[@]}" -plugin "$plugin" -d plugin -D "$log" "$bin" "$@" >/dev/null
    awk '/^qemu-insn-count:/ { print $2 }' "$log"
  fi
}

printf '%-8s %-13s %8s %16s %16s %14s\n' arch op n "insns (dry)" "insns (full)" "insns/op" >&2
for a in "${arches[@]}"; do
  bin=$(binary_for "$a")
  for op in $ops; do
    dry=$(count "$a" "$bin" --op "$op" --n "$n" --dry)
    full=$(count "$a" "$bin" --op "$op" --n "$n")
    if [ -z "$dry" ] || [ -z "$full" ]; then
      echo "insn-count.sh: no count for $a $op (counter $counter)" >&2
      exit 1
    fi
    per_op=$(( (full - dry) / n ))
    if [ "$counter" = qemu ]; then
      method="qemu-user TCG plugin (emulated; counts only, no time): $qemu_version"
      emulated=true
    else
      method="perf stat instructions:u (real hardware)"
      emulated=false
    fi
    printf '{"figure":"instructions_per_op","arch":"%s","op":"%s","n":%d,"insns_dry":%d,"insns_full":%d,"insns_per_op":%d,"emulated":%s,"method":"%s"}\n' \
      "$a" "$op" "$n" "$dry" "$full" "$per_op" "$emulated" "$method"
    printf '%-8s %-13s %8d %16d %16d %14d\n' "$a" "$op" "$n" "$dry" "$full" "$per_op" >&2
  done
done
