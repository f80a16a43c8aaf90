#!/usr/bin/env python3
"""One comparable benchmark report per machine, and a side-by-side comparison of two.

Used by benches/arm-report.sh (which runs the benches and then calls `collect`):

    python3 benches/report.py collect --raw DIR --mode quick|full --out REPORT.json
    python3 benches/report.py compare A.json B.json [--all]

`collect` reads the JSON lines the bench binaries printed (DIR/<bench>.jsonl) and criterion's
estimates (DIR/criterion/<group>/<function>/new/estimates.json), describes the machine, and
writes REPORT.json plus REPORT.md (a short table of the headline figures). Every numeric field of
every result line becomes a metric named `<bench>/<result>/<field>`; the table shows the headline
ones (HEADLINE below). `compare` prints the metrics both reports have, side by side, with B / A.

Reports only hold what was measured on the machine that wrote them: times are that machine's
own. Instruction counts from emulation are not part of a report (benches/insn-count.sh prints
them separately, labelled emulated); a report's instruction counts come from `perf` on real
hardware and are marked so.
"""

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

FORMAT = "meshlite-bench-report/1"

# Fields that name a result line, in order of preference, and the prefix each gets.
NAME_KEYS = (("figure", ""), ("sync", "sync:"), ("op", "op:"))

# Headline metrics (regular expressions over metric names) for the short table.
HEADLINE = [
    r"^store_ratios/[a-z_]+/store_per_cpu_s$",
    r"^store_ratios/[a-z_]+/cpu_ratio$",
    r"^sync_cost/sync:[a-z_0-9]+/ratio_vs_changes$",
    r"^rss/peak_rss_100k_docs_10k_reads/store_peak_mib$",
    r"^footprint/node_start_[a-z]+/(ready_ms_median|idle_rss_mib_median)$",
    r"^opcount/op:[a-z_]+/native_(cpu_)?us_per_op$",
    r"^insn/op:[a-z_]+/insns_per_op$",
    r"^criterion/.+/median_ns$",
]


def run_text(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_model():
    model = Path("/proc/device-tree/model")
    if model.exists():
        return model.read_bytes().rstrip(b"\0").decode(errors="replace")
    for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def mem_total_mib():
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return None


def machine(repo):
    detect = run_text(["bash", str(repo / "deploy" / "detect-platform.sh")])
    facts = dict(line.split("=", 1) for line in detect.splitlines() if "=" in line)
    return {
        "hostname": platform.node(),
        "arch": platform.machine(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "mem_mib": mem_total_mib(),
        "kernel": platform.release(),
        "platform": facts.get("PLATFORM", "unknown"),
        "rustc": run_text(["rustc", "-V"]),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


def result_name(line):
    for key, prefix in NAME_KEYS:
        if isinstance(line.get(key), str):
            return prefix + line[key]
    return None


def numeric_fields(line):
    for field, value in line.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            yield field, value


def read_lines(path):
    lines = []
    for text in path.read_text().splitlines():
        text = text.strip()
        if text.startswith("{"):
            lines.append(json.loads(text))
    return lines


def per_op_micros(line):
    """opcount's phase times as microseconds per operation (wall and CPU)."""
    fields = (("native_ops_seconds", "native_us_per_op"), ("native_ops_cpu_seconds", "native_cpu_us_per_op"))
    return {out: line[src] * 1e6 / line["n"] for src, out in fields if src in line}


def bench_metrics(raw):
    """Metrics from every DIR/<bench>.jsonl."""
    metrics, results = {}, {}
    for path in sorted(raw.glob("*.jsonl")):
        bench = path.stem
        lines = read_lines(path)
        results[bench] = lines
        for line in lines:
            if bench == "opcount" and line.get("n"):
                line = dict(line, **per_op_micros(line))
            name = f"op:{line['op']}" if bench == "insn" and "op" in line else result_name(line)
            if name is None or "run" in line:
                continue
            for field, value in numeric_fields(line):
                metrics[f"{bench}/{name}/{field}"] = value
    return metrics, results


def criterion_metrics(raw):
    metrics = {}
    for est in sorted((raw / "criterion").glob("*/*/new/estimates.json")):
        function, group = est.parent.parent.name, est.parent.parent.parent.name
        data = json.loads(est.read_text())
        for stat in ("median", "mean"):
            metrics[f"criterion/{group}/{function}/{stat}_ns"] = data[stat]["point_estimate"]
    return metrics


def headline(metrics):
    patterns = [re.compile(p) for p in HEADLINE]
    return [m for m in sorted(metrics) if any(p.search(m) for p in patterns)]


def fmt(value):
    if value is None:
        return "—"
    if abs(value) >= 1000 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.3g}"


def table(report):
    m = report["machine"]
    out = [
        f"# Meshlite bench report: {m['hostname']} ({m['arch']}, {m['platform']})",
        "",
        f"{m['cpu']}, {m['cpus']} CPUs, {m['mem_mib']} MiB, Linux {m['kernel']}, {m['rustc']}; "
        f"mode {report['mode']}, commit {report['commit'][:12]}, {report['date']}, "
        f"load {' '.join(m['loadavg'])}",
        "",
        "| metric | value |",
        "| --- | ---: |",
    ]
    out += [f"| {name} | {fmt(report['metrics'][name])} |" for name in headline(report["metrics"])]
    return "\n".join(out) + "\n"


def collect(args):
    raw = Path(args.raw)
    repo = Path(__file__).resolve().parent.parent
    metrics, results = bench_metrics(raw)
    metrics.update(criterion_metrics(raw))
    if not metrics:
        sys.exit(f"report.py: no results under {raw}")
    report = {
        "format": FORMAT,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": args.mode,
        "commit": run_text(["git", "-C", str(repo), "rev-parse", "HEAD"]) or "unknown",
        "machine": machine(repo),
        "metrics": metrics,
        "results": results,
    }
    out = Path(args.out)
    out.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    out.with_suffix(".md").write_text(table(report))
    print(table(report))
    print(f"report: {out} and {out.with_suffix('.md')}")


def describe(report):
    m = report["machine"]
    return f"{m['hostname']} {m['arch']} ({m['cpu']}, {m['cpus']} CPUs), {report['mode']}"


def compare(args):
    a, b = (json.loads(Path(p).read_text()) for p in (args.a, args.b))
    for r, p in ((a, args.a), (b, args.b)):
        if r.get("format") != FORMAT:
            sys.exit(f"report.py: {p} is not a {FORMAT} report")
    common = sorted(set(a["metrics"]) & set(b["metrics"]))
    names = common if args.all else [n for n in headline(a["metrics"]) if n in common]
    print(f"A: {describe(a)}\nB: {describe(b)}")
    if a["mode"] != b["mode"]:
        print("warning: the reports ran in different modes; sizes differ, compare with care")
    print("\n| metric | A | B | B / A |\n| --- | ---: | ---: | ---: |")
    for name in names:
        va, vb = a["metrics"][name], b["metrics"][name]
        ratio = f"{vb / va:.2f}" if va else "—"
        print(f"| {name} | {fmt(va)} | {fmt(vb)} | {ratio} |")
    only = sorted(set(a["metrics"]) ^ set(b["metrics"]))
    if only:
        print(f"\n{len(only)} metrics are in one report only (e.g. {only[0]})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="build a report from a directory of bench results")
    c.add_argument("--raw", required=True)
    c.add_argument("--mode", required=True, choices=["quick", "full"])
    c.add_argument("--out", required=True)
    c.set_defaults(func=collect)
    p = sub.add_parser("compare", help="two reports side by side")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--all", action="store_true", help="every common metric, not only headlines")
    p.set_defaults(func=compare)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
