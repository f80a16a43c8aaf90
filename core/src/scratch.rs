//! Scratch directories for the test harnesses' stores on files ([`crate::hostile`], store
//! templates): on a tmpfs when the machine has one (`/dev/shm`), else in the default
//! temporary directory. A harness execution opens several SQLite files and throws them away;
//! on a disk-backed `/tmp` their creation and WAL checkpoints cost about two-thirds of it
//! (48 convergence scripts: 2.4 s on `/tmp` on disk, 0.8 s on `/dev/shm`). `TMPDIR`, when set,
//! wins, so a run can be pointed elsewhere.

use tempfile::TempDir;

/// A fresh directory, deleted on drop.
pub fn dir() -> TempDir {
    let shm = std::path::Path::new("/dev/shm");
    let in_shm = std::env::var_os("TMPDIR").is_none() && shm.is_dir();
    let made = if in_shm {
        TempDir::new_in(shm).or_else(|_| TempDir::new())
    } else {
        TempDir::new()
    };
    made.expect("a temporary directory")
}
