#!/usr/bin/env python3
"""What a release binary's code is made of: the sizes of its symbols, grouped by crate.

    deploy/size-by-crate.py target/aarch64-unknown-linux-gnu/release/meshlite [--top 15]

Reads `nm --print-size --size-sort -C` of a binary that still has its symbol table (the release
profile strips debug info only; cross-build.sh's stripped copies have none) and sums the sizes of
text (code) and read-only data symbols by the first path segment of each demangled name, the way
cargo-bloat attributes functions. Generic functions count towards the crate that defines them
(`core::ptr::drop_in_place<automerge::Automerge>` is `core`), so std/core/alloc include the
instantiations other crates asked for; `<T as Trait>::f` counts towards the trait's crate. Names
without a Rust path are grouped by prefix (see C_PREFIXES). For a cross-built binary the script uses the
target's nm (aarch64-linux-gnu-nm) when the host's cannot read it.
"""

import argparse
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

# Names without a Rust path: LLVM's unnamed constants, ring's C/asm (prefixed, plus a few tables),
# and the rest, which is almost all SQLite (its static functions carry no `sqlite3` prefix).
C_PREFIXES = (
    ("anon.", "unnamed Rust constants"),
    ("ring_core_", "ring (C/asm)"),
    ("ecp_nistz256", "ring (C/asm)"),
    ("OPENSSL_", "ring (C/asm)"),
)


def nm_lines(binary):
    tools = ["nm"]
    if shutil.which("aarch64-linux-gnu-nm"):
        tools.append("aarch64-linux-gnu-nm")
    for tool in tools:
        out = subprocess.run(
            [tool, "--print-size", "--size-sort", "-C", str(binary)],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode == 0 and out.stdout:
            return out.stdout.splitlines()
    sys.exit(f"size-by-crate: no nm could read {binary} (or it has no symbols)")


def crate_of(name):
    name = name.strip()
    while name.startswith(("<", "_<", "&", "*const ", "*mut ", "dyn ")):
        name = re.sub(r"^(_?<|&|\*const |\*mut |dyn )", "", name)
    generic = re.match(r"^[A-Z]\w* as ", name)
    if generic:
        name = name[generic.end():]
    if "::" in name:
        head = re.split(r"::|<| as ", name, maxsplit=1)[0]
        return head or "?"
    for prefix, group in C_PREFIXES:
        if name.startswith(prefix):
            return group
    return "SQLite and other C"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binary", type=Path)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    sizes = defaultdict(int)
    total = 0
    for line in nm_lines(args.binary):
        parts = line.split(None, 3)
        if len(parts) < 4 or parts[2].lower() not in ("t", "r", "w", "v"):
            continue
        size = int(parts[1], 16)
        sizes[crate_of(parts[3])] += size
        total += size
    file_size = args.binary.stat().st_size
    print(f"{args.binary}: {file_size / 1048576:.1f} MiB file, symbols of code and read-only data {total / 1048576:.1f} MiB")
    print(f"{'crate':<28} {'KiB':>8} {'share':>6}")
    for crate, size in sorted(sizes.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"{crate:<28} {size / 1024:>8.0f} {100 * size / total:>5.1f}%")


if __name__ == "__main__":
    main()
