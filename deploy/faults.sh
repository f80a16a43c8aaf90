#!/usr/bin/env bash
# Meshlite's fault-injection suite in one command: real daemons, real SQLite files, real QUIC on
# loopback and between Linux network namespaces, real nats-server and Postgres. Needs root (network
# namespaces, tmpfs mounts) and installs libfaketime (clock skew) when it is missing.
#
#   deploy/faults.sh          the sizes CI runs (a few minutes on a quiet 2-core machine)
#   deploy/faults.sh --long   the documented long run: 120 node SIGKILLs, 30 link flaps, 200
#                             writer-process crashes, 100 bridge SIGKILLs, 50 nats-server
#                             SIGKILLs (tens of minutes)
#
# Every scenario checks what RELIABILITY.md lists: no acknowledged write lost, no half transaction
# visible, counters equal the sum of acknowledged increments, replicas (and Postgres) converge,
# nothing duplicated. Extra arguments go to `cargo test` (e.g. --release).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

long=0
if [ "${1:-}" = "--long" ]; then
  long=1
  shift
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "faults.sh: needs root (network namespaces, tmpfs mounts)" >&2
  exit 1
fi
if [ ! -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ]; then
  echo "faults.sh: installing faketime from Debian's packages" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null
fi

threads=()
if [ "$long" -eq 1 ]; then
  export MESHLITE_FAULT_KILLS="${MESHLITE_FAULT_KILLS:-120}"
  export MESHLITE_FAULT_FLAPS="${MESHLITE_FAULT_FLAPS:-30}"
  export MESHLITE_CRASH_ROUNDS="${MESHLITE_CRASH_ROUNDS:-200}"
  export MESHLITE_BRIDGE_KILLS="${MESHLITE_BRIDGE_KILLS:-100}"
  export MESHLITE_FAULT_NATS_KILLS="${MESHLITE_FAULT_NATS_KILLS:-50}"
  # One scenario at a time, so kills and timings are not distorted by the others.
  threads=(--test-threads=1)
fi

run() {
  local started=$SECONDS
  echo "== $*" >&2
  cargo test "$@" -- --nocapture "${threads[@]}"
  echo "== done in $((SECONDS - started)) s: $*" >&2
}

# Node: SIGKILL under writes and sync, full disk, clock skew, flapping links and partitions,
# SIGTERM/SIGKILL catch-up, NATS restarts, a QUIC handshake flood.
run -p meshlite-node "$@" --test faults --test mesh_partition --test mesh_restart \
  --test nats_relay --test net_flood
# A writer process killed mid-transaction (SQLite WAL).
run -p meshlite-fixtures "$@" --test crash
# The bridge killed mid-batch; Postgres stopped and restarted under it.
run -p meshlite-bridge "$@" --test crash
