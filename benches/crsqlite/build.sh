#!/usr/bin/env bash
# Builds cr-sqlite's loadable extension (crsqlite.so) from the @vlcn.io/crsqlite npm source
# tarball, for the third column of store_ratios (issue 13).
#
#   bash benches/crsqlite/build.sh [OUT_DIR]     # default OUT_DIR: target/crsqlite
#
# The package's install step downloads a prebuilt binary, which cannot work here, so the tarball
# is unpacked and built with `make loadable`, using the installed nightly toolchain (the
# package pins nightly-2023-10-05, which cannot be downloaded; RUSTUP_TOOLCHAIN overrides the
# pin) and Debian's libclang for bindgen (`apt-get install libclang-dev`). Prints the path of the
# built library on its last line; exits non-zero, saying why, when it cannot build it.
set -euo pipefail

VERSION="${CRSQLITE_VERSION:-0.16.3}"
OUT="${1:-target/crsqlite}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
SO="$OUT/crsqlite-$VERSION.so"
if [[ -f "$SO" ]]; then
    echo "$SO"
    exit 0
fi

need() { command -v "$1" >/dev/null || { echo "cr-sqlite build: $1 not found ($2)" >&2; exit 1; }; }
need npm "install Node.js and npm"
need make "apt-get install make"
need gcc "apt-get install gcc"
need rustup "the nightly toolchain is needed"
rustup toolchain list | grep -q '^nightly' || { echo "cr-sqlite build: no nightly toolchain (rustup toolchain install nightly)" >&2; exit 1; }
if [[ -z "${LIBCLANG_PATH:-}" ]]; then
    LIBCLANG_PATH="$(dirname "$(ls /usr/lib/llvm-*/lib/libclang.so 2>/dev/null | sort -V | tail -1)" 2>/dev/null || true)"
fi
[[ -n "$LIBCLANG_PATH" && -d "$LIBCLANG_PATH" ]] || { echo "cr-sqlite build: libclang not found (apt-get install libclang-dev)" >&2; exit 1; }
export LIBCLANG_PATH

WORK="$OUT/src-$VERSION"
if [[ ! -d "$WORK/package" ]]; then
    rm -rf "$WORK" && mkdir -p "$WORK"
    (cd "$WORK" && npm pack --silent "@vlcn.io/crsqlite@$VERSION" >/dev/null && tar xzf vlcn.io-crsqlite-"$VERSION".tgz)
fi
cd "$WORK/package"
# Patches for today's nightly (the source targets nightly-2023-10-05): `concat_idents` was
# removed from the compiler and sqlite3_capi declares it without using it.
sed -i '/#!\[feature(concat_idents)\]/d' rs/sqlite-rs-embedded/sqlite3_capi/src/lib.rs
# The Makefile stamps the build with `git rev-parse HEAD`; the tarball is not a checkout.
export CRSQLITE_COMMIT_SHA="npm-$VERSION"
export RUSTUP_TOOLCHAIN=nightly
# The Makefile copies the library from the crate's own target directory.
unset CARGO_TARGET_DIR
make loadable >"$OUT/build-$VERSION.log" 2>&1 || {
    echo "cr-sqlite build: make loadable failed; see $OUT/build-$VERSION.log" >&2
    tail -20 "$OUT/build-$VERSION.log" >&2
    exit 1
}
cp dist/crsqlite.so "$SO"
echo "$SO"
