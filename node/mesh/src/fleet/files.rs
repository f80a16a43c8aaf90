//! On-disk forms of fleet material: `fleet.toml`, PEM files, and careful file writing.
//!
//! Keys are created with mode 0600 and never overwritten; certificates and `fleet.toml` are
//! replaced atomically (write to a temporary file in the same directory, then rename) so a
//! crash never leaves a half-written bundle.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use super::FleetError;
use super::ids::{ClusterId, NodeId, NodeName};

/// File names inside a fleet directory and a node bundle.
pub const CA_CERT: &str = "ca.pem";
/// The CA's private key (fleet directory only).
pub const CA_KEY: &str = "ca.key";
/// Cluster id and fingerprints.
pub const FLEET_TOML: &str = "fleet.toml";
/// A node's certificate.
pub const NODE_CERT: &str = "node.pem";
/// A node's private key.
pub const NODE_KEY: &str = "node.key";
/// Sub-directory of a fleet directory holding issued node bundles.
pub const NODES_DIR: &str = "nodes";

/// Mode of private keys.
pub const KEY_MODE: u32 = 0o600;
/// Mode of certificates and `fleet.toml`.
pub const PUBLIC_MODE: u32 = 0o644;

/// Contents of `fleet.toml`, in a fleet directory (cluster fields only) and in a node bundle
/// (also the node fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetFile {
    /// The cluster id (16 hex characters).
    pub cluster_id: ClusterId,
    /// SHA-256 fingerprint of the issuing CA certificate (informational: compare out of band).
    pub ca_fingerprint: String,
    /// The node's name (bundles only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<NodeName>,
    /// The node id derived from `node.key` (bundles only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<NodeId>,
    /// End of the node certificate's validity, seconds since the Unix epoch (bundles only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after_unix: Option<u64>,
}

impl FleetFile {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Self, FleetError> {
        let text = read_text(path)?;
        toml::from_str(&text).map_err(|e| malformed(path, e))
    }

    /// Renders the file with a header comment.
    pub fn render(&self) -> Result<String, FleetError> {
        let body = toml::to_string(self).map_err(|e| FleetError::Malformed {
            what: FLEET_TOML.into(),
            reason: e.to_string(),
        })?;
        Ok(format!(
            "# Meshlite fleet identity (written by `meshlite fleet`).\n\
             # cluster_id: peers with another cluster id are refused at the TLS handshake.\n\
             # ca_fingerprint: compare with `openssl x509 -noout -fingerprint -sha256 -in ca.pem`.\n\
             {body}"
        ))
    }
}

/// A [`FleetError::Malformed`] naming `path`.
pub fn malformed(path: &Path, reason: impl ToString) -> FleetError {
    FleetError::Malformed {
        what: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// An [`FleetError::Io`] naming `path`.
pub fn io_error(path: &Path, source: io::Error) -> FleetError {
    FleetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a UTF-8 text file.
pub fn read_text(path: &Path) -> Result<String, FleetError> {
    fs::read_to_string(path).map_err(|e| io_error(path, e))
}

/// Parses every certificate in a PEM text; at least one is required.
pub fn parse_certs(what: &str, pem: &str) -> Result<Vec<CertificateDer<'static>>, FleetError> {
    let bad = |reason: String| FleetError::Malformed {
        what: what.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// Parses the first private key in a PEM text.
pub fn parse_key(what: &str, pem: &str) -> Result<PrivateKeyDer<'static>, FleetError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| FleetError::Malformed {
        what: what.to_owned(),
        reason: e.to_string(),
    })
}

/// Creates `path` with `contents` and `mode`; fails if it exists.
pub fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), FleetError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(path, e))
}

/// Atomically replaces (or creates) `path` with `contents` and `mode`.
pub fn write_replace(path: &Path, contents: &str, mode: u32) -> Result<(), FleetError> {
    let tmp = temp_sibling(path);
    // A stale temporary file from a crash would make `write_new` fail; it holds nothing of value.
    let _ = fs::remove_file(&tmp);
    write_new(&tmp, contents, mode)?;
    fs::rename(&tmp, path).map_err(|e| io_error(path, e))
}

fn temp_sibling(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Creates `dir` (and parents) if missing.
pub fn ensure_dir(dir: &Path) -> Result<(), FleetError> {
    fs::create_dir_all(dir).map_err(|e| io_error(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_file_round_trips() {
        let file = FleetFile {
            cluster_id: ClusterId::random(),
            ca_fingerprint: "sha256:00".into(),
            node_name: NodeName::new("pi").ok(),
            node_id: Some(NodeId::from_spki_der(b"x")),
            not_after_unix: Some(42),
        };
        let text = file.render().expect("render");
        assert_eq!(toml::from_str::<FleetFile>(&text).expect("parse"), file);
    }

    #[test]
    fn keys_are_private_and_never_overwritten() -> Result<(), FleetError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().map_err(|e| io_error(Path::new("tmp"), e))?;
        let path = dir.path().join("k");
        write_new(&path, "secret", KEY_MODE)?;
        let mode = fs::metadata(&path)
            .map_err(|e| io_error(&path, e))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(write_new(&path, "other", KEY_MODE).is_err());
        write_replace(&path, "new", PUBLIC_MODE)?;
        assert_eq!(read_text(&path)?, "new");
        Ok(())
    }
}
