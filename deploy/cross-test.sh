#!/usr/bin/env bash
# Runs the core test suite (meshlite-core) built for aarch64-unknown-linux-gnu under qemu-user
# emulation on an x86_64 Debian machine, installing the cross toolchain and qemu-user when missing
# (deploy/cross-env.sh).
#
#   deploy/cross-test.sh                          # cargo test -p meshlite-core, aarch64, emulated
#   deploy/cross-test.sh -- --test-threads=1      # extra arguments go to cargo test
#
# Every test binary runs as `qemu-aarch64 -L /usr/aarch64-linux-gnu <test binary>` (cargo's
# target runner). The result is a functional check of the aarch64 build: emulated run times say
# nothing about a real ARM core's speed. Not part of CI (a debug build of the core and its
# dependencies for a second target, then the suite under emulation, would not fit its budget);
# its last result is recorded in deploy/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export CROSS_NEED_QEMU=1
# shellcheck source=cross-env.sh source-path=SCRIPTDIR
. deploy/cross-env.sh

started=$(date +%s)
cargo test --locked --target "$CROSS_TRIPLE" -p meshlite-core "$@"
echo "cross-test.sh: meshlite-core tests for $CROSS_TRIPLE under $(qemu-aarch64 --version | head -1) passed in $(( $(date +%s) - started )) s" >&2
