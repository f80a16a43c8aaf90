//! Where a running daemon serves its HTTP API, recorded in its data directory
//! (`DATA/daemon.json`, `{"http": "127.0.0.1:8100", "pid": 1234}`) so that CLI commands refused by
//! the store's directory lock (`summary`, `bundle export`, `bundle import`) can ask the daemon
//! instead.
//!
//! The daemon writes the file once it listens and removes it when it stops. A file left behind by
//! a killed daemon is harmless: the CLI reads it only while the directory lock is held, that is
//! while a daemon runs, and the running daemon rewrote it at its start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The file's name inside the data directory.
pub const ENDPOINT_FILE: &str = "daemon.json";

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Endpoint {
    http: SocketAddr,
    pid: u32,
}

fn path(dir: &Path) -> PathBuf {
    dir.join(ENDPOINT_FILE)
}

/// Records `http` as this process's HTTP address (written to a temporary file, then renamed).
pub fn write(dir: &Path, http: SocketAddr) -> std::io::Result<()> {
    let body = serde_json::to_vec(&Endpoint {
        http,
        pid: std::process::id(),
    })?;
    let tmp = dir.join(format!("{ENDPOINT_FILE}.tmp"));
    std::fs::write(&tmp, body)?;
    std::fs::rename(tmp, path(dir))
}

/// Removes the record (at shutdown); a missing file is fine.
pub fn remove(dir: &Path) {
    match std::fs::remove_file(path(dir)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(error = %e, "cannot remove {}", path(dir).display()),
    }
}

/// The recorded HTTP address, if a readable record exists.
pub fn read(dir: &Path) -> Option<SocketAddr> {
    let bytes = std::fs::read(path(dir)).ok()?;
    serde_json::from_slice::<Endpoint>(&bytes)
        .ok()
        .map(|e| e.http)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_removal() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read(dir.path()), None);
        let addr: SocketAddr = ([127, 0, 0, 1], 8100).into();
        write(dir.path(), addr).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read(dir.path()), Some(addr));
        remove(dir.path());
        assert_eq!(read(dir.path()), None);
        remove(dir.path());
    }
}
