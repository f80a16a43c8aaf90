#!/usr/bin/env bash
# Runs the store benches on this machine and writes one comparable report (JSON + a short
# Markdown table) — the same script, unchanged, on a Raspberry Pi 5, a Jetson Orin Nano or an
# x86_64 workstation. Then compare two machines' reports side by side.
#
#   benches/arm-report.sh                     # full sizes (≈ 15 min on x86 here; longer on a Pi)
#   benches/arm-report.sh --quick             # small sizes, criterion --quick (a few minutes)
#   benches/arm-report.sh --out DIR           # where reports go (default: bench-reports/)
#   benches/arm-report.sh --no-build          # binaries already in <target dir>/<host triple>/release
#                                             # (e.g. copied from deploy/cross-build.sh); no criterion
#   benches/arm-report.sh compare A.json B.json [--all]
#
# What runs (release builds, on this machine's own CPU; nothing emulated):
#   store_ratios  document upserts, log appends, remote apply vs raw SQLite (rates and ratios)
#   sync_cost     sync round trips and bytes between two stores
#   rss           peak RSS serving random reads from a 100k-document store
#   footprint     `meshlite run` start-up to its ready line and idle RSS, empty and 100k store
#   opcount       wall time per insert / update / read / remote-apply change (native only)
#   insn          instructions per operation from `perf stat` when perf works here (real counters)
#   criterion     benches/store_writes.rs and benches/remote_apply.rs (median and mean)
# The bridge benches need Postgres and belong on the central VPS, not in this report.
# Needs: cargo (rustup), a C compiler, python3, git. Report name: <hostname>-<arch>-<mode>.json.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = compare ]; then
  shift
  exec python3 benches/report.py compare "$@"
fi

mode=full
out=bench-reports
build=true
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) mode=quick; shift ;;
    --out) out=$2; shift 2 ;;
    --no-build) build=false; shift ;;
    *) echo "usage: $0 [--quick] [--out DIR] [--no-build] | compare A.json B.json [--all]" >&2; exit 2 ;;
  esac
done

# Built for the host's triple explicitly, so the binaries share their build with
# deploy/cross-build.sh --with-host and benches/insn-count.sh.
host=$(rustc -vV | sed -n 's/^host: //p')
target_dir=${CARGO_TARGET_DIR:-target}
bin="$target_dir/$host/release"
name="$(hostname)-$(uname -m)-$mode"
raw="$out/raw-$name"
rm -rf "$raw"
mkdir -p "$raw"

if [ "$mode" = quick ]; then
  store_ratios=(--rounds 5 --update-rounds 3 --remote-txns 500)
  sync_cost=(--docs 20000 --changed 200)
  rss=(--docs 20000 --reads 2000)
  footprint=(--docs 20000 --runs 2 --idle-seconds 1)
  ops_n=500
  criterion=(--quick --warm-up-time 1 --measurement-time 2)
else
  store_ratios=() sync_cost=() rss=() footprint=() criterion=()
  ops_n=5000
fi

step() { echo "arm-report: $*" >&2; }

if $build; then
  step "building (release)"
  cargo build --locked --release --target "$host" -p meshlite-node -p meshlite-benches --bin meshlite \
    --bin store_ratios --bin sync_cost --bin rss --bin opcount --bin footprint
fi

step "store_ratios ${store_ratios[*]}"
"$bin/store_ratios" "${store_ratios[@]}" > "$raw/store_ratios.jsonl"
step "sync_cost ${sync_cost[*]}"
"$bin/sync_cost" "${sync_cost[@]}" > "$raw/sync_cost.jsonl"
step "rss ${rss[*]}"
"$bin/rss" "${rss[@]}" > "$raw/rss.jsonl"
step "footprint ${footprint[*]}"
"$bin/footprint" --meshlite "$bin/meshlite" "${footprint[@]}" > "$raw/footprint.jsonl"
for op in insert update read remote-apply; do
  step "opcount --op $op --n $ops_n"
  "$bin/opcount" --op "$op" --n "$ops_n" >> "$raw/opcount.jsonl"
done
# perf exits 0 even when the counter is "<not supported>" (as in most VMs): look for a number.
if command -v perf >/dev/null 2>&1 && perf stat -x, -e instructions:u true 2>&1 | grep -q '^[0-9]'; then
  step "instructions per operation (perf)"
  no_build=()
  $build || no_build=(--no-build)
  benches/insn-count.sh --counter perf --n "$ops_n" "${no_build[@]}" > "$raw/insn.jsonl"
else
  step "no instruction counter here (perf missing, or instructions:u not supported / not allowed): no instruction counts"
fi
if $build; then
  step "criterion ${criterion[*]}"
  CRITERION_HOME="$raw/criterion" cargo bench --locked --target "$host" -p meshlite-benches \
    --bench store_writes --bench remote_apply -- "${criterion[@]}" > "$raw/criterion.log" 2>&1 \
    || { tail -20 "$raw/criterion.log" >&2; exit 1; }
else
  step "--no-build: criterion benches not run (they are built by cargo bench)"
fi

python3 benches/report.py collect --raw "$raw" --mode "$mode" --out "$out/$name.json"
