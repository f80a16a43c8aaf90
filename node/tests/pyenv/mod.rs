//! Real Python clients for the tests: a virtual environment under `<target>/py-clients/<set>`
//! with pinned packages from PyPI, created once and reused (`registry.rs` needs `requests`,
//! `supabase_py.rs` the `supabase` package). A fresh machine needs python3 with `venv` and
//! `ensurepip` (Debian: `python3-venv`, which deploy/test.sh installs); when the environment
//! cannot be created or pip fails, the test fails with the tool's output — it is never skipped.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Python interpreter of a venv holding `packages` (`(name, exact version)`), installing it
/// on first use. `set` names the directory (one per package set).
pub fn python_with(set: &str, packages: &[(&str, &str)]) -> PathBuf {
    let target = Path::new(env!("CARGO_BIN_EXE_meshlite"))
        .ancestors()
        .nth(2)
        .expect("the binary lives in <target>/<profile>/");
    let root = target.join("py-clients");
    let dir = root.join(set);
    let python = dir.join("bin").join("python");
    let marker = dir.join(".complete");
    let pins: Vec<String> = packages.iter().map(|(p, v)| format!("{p}=={v}")).collect();
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == pins.join("\n")) {
        return python;
    }
    std::fs::create_dir_all(&root).unwrap();
    // One installer at a time (test processes run in parallel): the others wait on the lock,
    // then find the environment complete. Without it, a late installer replaced the directory
    // under a test already running from it.
    let lock = std::fs::File::create(root.join(format!("{set}.lock"))).unwrap();
    lock.lock().expect("lock the venv install lock file");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == pins.join("\n")) {
        return python;
    }
    // Build in a private directory and rename it into place, so an interrupted install never
    // leaves a half-installed environment that looks complete.
    let staging = root.join(format!("{set}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    run(Command::new("python3").args(["-m", "venv"]).arg(&staging));
    let pip = staging.join("bin").join("pip");
    run(Command::new(&pip)
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(&pins));
    std::fs::write(staging.join(".complete"), pins.join("\n")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&staging, &dir).expect("move the new venv into place");
    drop(lock);
    // Scripts inside a renamed venv carry the old path in their shebang; the interpreter itself
    // works from any path, which is all the tests use (`python -m`, `python script.py`).
    assert!(python.exists(), "{} is missing", python.display());
    python
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (python3 must be installed)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}); on Debian install python3-venv (deploy/test.sh does):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
