#!/usr/bin/env bash
# Runs Meshlite's whole test suite on a fresh machine.
#
# Installs what the tests need when it is missing (nats-server, iproute2, the Postgres 15 server and
# node + npm, python3 with venv and libfaketime from Debian's packages; `useradd` and `setpriv` come with Debian's
# base system; the supabase-js test installs the npm packages it drives into the target directory,
# the supabase-py and registry tests pinned PyPI packages (`supabase`, `requests`) into virtual
# environments under <target>/py-clients), checks the deployment files with
# deploy/check-files.sh (shell scripts, systemd units, compose, env, dashboard), then runs every
# test of the workspace with cargo-nextest (or cargo test when nextest is absent).
# Tests start their own servers (nats-server on free loopback ports, network namespaces with
# unique names, throwaway Postgres clusters run as the unprivileged user `meshlite-pg`, which the
# harness creates when run as root) and stop them; nothing is left running. Set DATABASE_URL to run
# the Postgres tests against an existing server instead (each test creates its own database).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need_apt+=(nats-server)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
if [ -z "${DATABASE_URL:-}" ] && ! command -v initdb >/dev/null 2>&1 \
  && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need_apt+=(postgresql-15)
fi
command -v setpriv >/dev/null 2>&1 || need_apt+=(util-linux)
# libfaketime: the clock-skew test (node/tests/faults.rs) preloads it into daemons.
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] || need_apt+=(faketime)
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_apt+=(python3-venv)
command -v useradd >/dev/null 2>&1 || [ -x /usr/sbin/useradd ] || need_apt+=(passwd)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "test.sh: installing ${need_apt[*]} from Debian's packages" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin:/sbin"

# Static checks of the deployment files (shellcheck, systemd-analyze verify, compose, env, dashboard).
deploy/check-files.sh

# Build every test first, then hand the tests that run real `meshlite` nodes (the bridge's) the
# node binary that build made: otherwise each such test process runs `cargo build -p
# meshlite-node` itself (fixtures/src/bins.rs), which rebuilds the node with that package's own
# features while the suite runs (measured: 88 s of one test's time on a busy 2-core machine) and
# serializes those tests on cargo's lock.
target_dir="$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
export MESHLITE_TEST_BIN_MESHLITE="$target_dir/debug/meshlite"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --config-file .ci/nextest.toml --profile ci --workspace --no-run "$@"
  cargo nextest run --config-file .ci/nextest.toml --profile ci --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-run "$@"
  cargo test --workspace --no-fail-fast "$@"
fi
