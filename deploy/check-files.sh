#!/usr/bin/env bash
# Static checks of the deployment files in deploy/ (run by deploy/test.sh before the tests):
# - shellcheck of every shell script in deploy/;
# - `systemd-analyze verify` of the units (in a scratch root holding stub binaries at the units'
#   ExecStart paths, so a missing binary on this machine is no error) and a dry run of the
#   sysusers file; any warning fails;
# - deploy/check-files.py: compose files parse and hang together (env files, build targets,
#   volumes, ports), env files name only variables the binaries read, the Dockerfile's runtime
#   stages are non-root, the Grafana dashboard parses and queries only exported metrics.
# Missing tools are installed from Debian's packages (shellcheck, python3-yaml); it never skips.
set -euo pipefail
cd "$(dirname "$0")"

need_apt=()
command -v shellcheck >/dev/null 2>&1 || need_apt+=(shellcheck)
python3 -c 'import yaml' >/dev/null 2>&1 || need_apt+=(python3-yaml)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "check-files.sh: installing ${need_apt[*]} from Debian's packages" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

echo "shellcheck:"
scripts=(*.sh)
shellcheck -x "${scripts[@]}"
echo "  ok   ${scripts[*]}"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

echo "systemd units:"
mkdir -p "$scratch/etc/systemd/system" "$scratch/usr/lib/systemd" "$scratch/usr/local/bin"
cp -a /usr/lib/systemd/system "$scratch/usr/lib/systemd/"
units=()
for unit in systemd/*.service; do
  cp "$unit" "$scratch/etc/systemd/system/"
  units+=("$(basename "$unit")")
  exe=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit")
  printf '#!/bin/sh\n' >"$scratch$exe"
  chmod +x "$scratch$exe"
done
# verify exits 0 on unknown keys and bad values (it only warns): any output is a failure.
out=$(systemd-analyze verify --root="$scratch" "${units[@]}" 2>&1) || {
  echo "$out" >&2
  exit 1
}
if [ -n "$out" ]; then
  echo "$out" >&2
  echo "check-files.sh: systemd-analyze verify reported problems" >&2
  exit 1
fi
echo "  ok   ${units[*]}"
out=$(systemd-sysusers --root="$scratch" --dry-run "$PWD/systemd/meshlite.sysusers.conf" 2>&1) || {
  echo "$out" >&2
  exit 1
}
if grep -qiE 'fail|ignor|warn' <<<"$out"; then
  echo "$out" >&2
  echo "check-files.sh: systemd-sysusers reported problems" >&2
  exit 1
fi
for user in meshlite meshlite-bridge; do
  grep -q "Creating user '$user'" <<<"$out" || {
    echo "$out" >&2
    echo "check-files.sh: sysusers does not create $user" >&2
    exit 1
  }
done
echo "  ok   systemd/meshlite.sysusers.conf"

python3 check-files.py
