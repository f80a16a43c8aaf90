#!/usr/bin/env python3
"""Static checks of deploy/'s compose, env, Dockerfile and Grafana files (run by check-files.sh).

Each check prints what it checked; any problem is printed and the exit status is 1. Checks are
tied to the code: env files may only name variables the node, the bridge or the Postgres image
read, and the dashboard may only query metrics the node or the bridge export.
"""

import json
import pathlib
import re
import sys

try:
    import yaml
except ImportError:
    sys.exit("check-files: the python3 yaml module is missing (Debian: python3-yaml)")

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROBLEMS = []

# Variables read by the postgres image of compose/central.yml (not by Meshlite).
POSTGRES_IMAGE_VARS = {"POSTGRES_PASSWORD", "POSTGRES_DB"}
# Sources that read environment variables, and the patterns that read them.
ENV_SOURCES = ["node/src", "central-bridge/src"]
ENV_PATTERNS = [
    r'get\("([A-Z0-9_]+)"\)',
    r'env = "([A-Z0-9_]+)"',
    r'try_from_env\("([A-Z0-9_]+)"\)',
    r'EnvOverride \{\s*name: "([A-Z0-9_]+)"',  # node/src/config.rs ENV_OVERRIDES
]
# Sources that export Prometheus metrics.
METRIC_SOURCES = [
    "node/src/metrics.rs",
    "node/mesh/src/discovery/table.rs",
    "central-bridge/src/http.rs",
]


def problem(msg):
    PROBLEMS.append(msg)
    print(f"  FAIL {msg}")


def rel(path):
    return path.relative_to(ROOT)


def read_vars():
    names = set()
    for src in ENV_SOURCES:
        for f in (ROOT / src).rglob("*.rs"):
            text = f.read_text()
            for pat in ENV_PATTERNS:
                names.update(re.findall(pat, text))
    return names


def check_env_files(read):
    for f in sorted((DEPLOY / "env").glob("*.env")):
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            m = re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line)
            if not m:
                problem(f"{rel(f)}:{n}: not KEY=VALUE: {line!r}")
                continue
            key = m.group(1)
            if key not in read and key not in POSTGRES_IMAGE_VARS:
                problem(f"{rel(f)}:{n}: {key} is read by neither meshlite nor meshlite-bridge")
        print(f"  ok   {rel(f)}")


def dockerfile_stages(path):
    stages = set()
    for line in path.read_text().splitlines():
        m = re.match(r"FROM\s+(?:--platform=\S+\s+)?\S+(?:\s+AS\s+(\S+))?", line, re.I)
        if m and m.group(1):
            stages.add(m.group(1))
    return stages


def check_dockerfile(path):
    text = path.read_text()
    stages, current, users = [], None, {}
    for n, line in enumerate(text.splitlines(), 1):
        m = re.match(r"FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if m:
            current = m.group(2) or f"stage{len(stages)}"
            stages.append(current)
            if m.group(1).endswith(":latest"):
                problem(f"{rel(path)}:{n}: unpinned base image {m.group(1)}")
            continue
        m = re.match(r"COPY\s+--from=(\S+)", line)
        if m and m.group(1) not in stages:
            problem(f"{rel(path)}:{n}: COPY --from={m.group(1)}: no earlier stage of that name")
        m = re.match(r"USER\s+(\S+)", line)
        if m:
            users[current] = m.group(1)
        if re.match(r"(ADD\s+https?:|RUN\s+.*curl .*\|\s*sh)", line):
            problem(f"{rel(path)}:{n}: remote code fetched at build time")
    for stage in stages[1:]:
        user = users.get(stage, "root")
        if user.split(":")[0] in ("root", "0"):
            problem(f"{rel(path)}: runtime stage {stage} runs as root")
    if "--locked" not in text:
        problem(f"{rel(path)}: cargo build without --locked")
    print(f"  ok   {rel(path)} (stages: {', '.join(stages)})")


def check_compose(path):
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        problem(f"{rel(path)}: YAML: {e}")
        return
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
        problem(f"{rel(path)}: no services mapping")
        return
    base = path.parent
    volumes = set((doc.get("volumes") or {}).keys())
    services = doc["services"]
    for name, svc in services.items():
        where = f"{rel(path)}: service {name}"
        if "image" not in svc and "build" not in svc:
            problem(f"{where}: neither image nor build")
        build = svc.get("build")
        if isinstance(build, dict):
            ctx = (base / build.get("context", ".")).resolve()
            dockerfile = ctx / build.get("dockerfile", "Dockerfile")
            if not dockerfile.is_file():
                problem(f"{where}: Dockerfile {dockerfile} missing")
            elif build.get("target") and build["target"] not in dockerfile_stages(dockerfile):
                problem(f"{where}: build target {build['target']} is not a stage of {rel(dockerfile)}")
        for env_file in svc.get("env_file", []):
            if not (base / env_file).is_file():
                problem(f"{where}: env_file {env_file} missing")
        for vol in svc.get("volumes", []):
            source = str(vol).split(":")[0]
            if source.startswith("."):
                if not (base / source).exists():
                    problem(f"{where}: bind source {source} missing")
            elif not source.startswith("/") and source not in volumes:
                problem(f"{where}: volume {source} not declared under top-level volumes")
        deps = svc.get("depends_on") or {}
        for dep in deps:
            if dep not in services:
                problem(f"{where}: depends_on {dep}: no such service")
        for port in svc.get("ports", []):
            if not re.fullmatch(r"(\d+\.\d+\.\d+\.\d+:)?\d+:\d+(/(tcp|udp))?", str(port)):
                problem(f"{where}: port {port!r} is not [IP:]HOST:CONTAINER[/proto]")
        if svc.get("network_mode") == "host" and svc.get("ports"):
            problem(f"{where}: ports are ignored with network_mode: host")
    print(f"  ok   {rel(path)} (services: {', '.join(services)})")


def check_dashboard(path):
    try:
        dash = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        problem(f"{rel(path)}: JSON: {e}")
        return
    exported = set()
    for src in METRIC_SOURCES:
        exported.update(re.findall(r"meshlite_[a-z_]+", (ROOT / src).read_text()))
    exprs = [t["expr"] for p in dash.get("panels", []) for t in p.get("targets", [])]
    if not exprs:
        problem(f"{rel(path)}: no queries")
    for expr in exprs:
        for metric in re.findall(r"meshlite_[a-z_]+", expr):
            if metric not in exported:
                problem(f"{rel(path)}: {metric} is exported by neither the node nor the bridge")
    ids = [p["id"] for p in dash["panels"]]
    if len(ids) != len(set(ids)):
        problem(f"{rel(path)}: duplicate panel ids")
    print(f"  ok   {rel(path)} ({len(exprs)} queries)")


def main():
    print("env files:")
    check_env_files(read_vars())
    print("Dockerfiles:")
    for f in sorted((DEPLOY / "docker").glob("Dockerfile*")):
        check_dockerfile(f)
    print("compose files:")
    for f in sorted((DEPLOY / "compose").glob("*.yml")):
        check_compose(f)
    print("Grafana dashboards:")
    for f in sorted((DEPLOY / "grafana").glob("*.json")):
        check_dashboard(f)
    if PROBLEMS:
        sys.exit(f"check-files: {len(PROBLEMS)} problem(s)")


if __name__ == "__main__":
    main()
