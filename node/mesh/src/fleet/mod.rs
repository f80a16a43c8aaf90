//! Fleet identity: a fleet CA, a cluster id, and node certificates whose node id is derived
//! from the node's key.
//!
//! # Files
//!
//! A **fleet directory** (`meshlite fleet init DIR`, kept offline by the operator):
//!
//! - `ca.key` — the CA's PKCS#8 private key, mode 0600. Never leaves this directory.
//! - `ca.pem` — the CA certificate (ECDSA P-256, 20 years by default). May hold several
//!   certificates: every one is trusted, and `ca.key` signs with the one that matches it.
//! - `fleet.toml` — `cluster_id` (16 hex characters, random) and `ca_fingerprint`
//!   (`sha256:AB:CD:…`, as `openssl x509 -noout -fingerprint -sha256` prints it).
//! - `nodes/<name>/` — one bundle per issued node (below).
//!
//! A **node bundle** (`meshlite fleet issue DIR NAME`; copy it to the device):
//!
//! - `node.key` (0600) and `node.pem` — the node's key and certificate, signed by the CA, with
//!   SANs `URI:meshlite://<cluster-id>/<node-id>` and `DNS:<name>.<cluster-id>.meshlite` and
//!   both server and client auth usages (see [`cert`]).
//! - `ca.pem` — a copy of the fleet directory's `ca.pem`: the trust roots for peers.
//! - `fleet.toml` — the cluster fields plus `node_name`, `node_id`, `not_after_unix`.
//!
//! The node id is the first 16 bytes of BLAKE3 over the certificate's SubjectPublicKeyInfo DER
//! ([`NodeId::from_spki_der`]); peers recompute it from the presented certificate.
//!
//! # Rotation
//!
//! - **Node certificate**: `issue_with(.., IssueOptions { renew: true, .. })` signs a new
//!   certificate for the bundle's existing `node.key`, so the node id stays the same; copy the new
//!   `node.pem` and restart the node ([`renew`], `meshlite fleet renew DIR NAME`). To change the key (a suspected leak), delete the bundle,
//!   issue again (a new node id) and put the old id on the deny list.
//! - **CA**: create the new CA with the same cluster id (`init_with(NEW, InitOptions {
//!   cluster_id: Some(old), .. })`), then make every node trust both: append the old `ca.pem` to
//!   the new one and distribute the two-certificate `ca.pem` to all nodes. Re-issue node bundles
//!   from the new directory (they carry the two-certificate `ca.pem` too). When every node runs a
//!   new certificate, remove the old CA certificate from `ca.pem` everywhere.
//!
//! # Revocation
//!
//! There is no CRL or OCSP (nodes may be offline for weeks). A node is revoked by listing its
//! node id in the transport configuration's `deny_nodes`; such peers are refused during the TLS
//! handshake, in both directions, and the refusal is logged with the node id. Expiry bounds the
//! lifetime of a forgotten revocation: keep node certificates short-lived (the default is one
//! year) and renew them with `renew`.

pub mod cert;
pub mod files;
pub mod ids;
pub mod validity;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{Issuer, KeyPair, PublicKeyData};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;

pub use cert::{CertIdentity, CertIdentityError, identity_of};
pub use ids::{ClusterId, IdError, NodeId, NodeName};

use files::{
    CA_CERT, CA_KEY, FLEET_TOML, FleetFile, KEY_MODE, NODE_CERT, NODE_KEY, NODES_DIR, PUBLIC_MODE,
};

/// Default validity of the fleet CA certificate (20 years).
pub const DEFAULT_CA_DAYS: u32 = 20 * 365;
/// Default validity of a node certificate (one year).
pub const DEFAULT_NODE_DAYS: u32 = 365;
/// Longest validity accepted for any certificate (100 years).
pub const MAX_DAYS: u32 = 100 * 365;
/// Certificates start this long before issuance, tolerating clock skew between devices.
pub const BACKDATE: Duration = Duration::from_secs(24 * 3600);

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Errors of the fleet operations ([`init`], [`issue`], [`load_node_identity`] and friends).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `init` found an existing fleet CA.
    #[error("{} already holds a fleet CA; refusing to overwrite it", path.display())]
    AlreadyInitialized {
        /// The fleet directory.
        path: PathBuf,
    },
    /// `issue` found an existing bundle and was not asked to renew it.
    #[error("node bundle {} already exists (renew it to re-issue its certificate)", path.display())]
    BundleExists {
        /// The bundle directory.
        path: PathBuf,
    },
    /// A node name or id was refused.
    #[error(transparent)]
    InvalidId(#[from] IdError),
    /// A validity period outside `1..=MAX_DAYS` days.
    #[error("validity of {days} days is out of range (1..={MAX_DAYS})")]
    InvalidDays {
        /// The refused number of days.
        days: u32,
    },
    /// A file's content could not be parsed.
    #[error("{what}: {reason}")]
    Malformed {
        /// The file (or PEM text) concerned.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Generating a key or certificate failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// `ca.key` matches none of the certificates in `ca.pem`.
    #[error("{}: ca.key matches no certificate in ca.pem", path.display())]
    CaKeyMismatch {
        /// The fleet directory.
        path: PathBuf,
    },
    /// The node key does not belong to the node certificate.
    #[error("node.key does not match the public key of node.pem")]
    KeyMismatch,
    /// The node certificate carries no usable Meshlite identity.
    #[error("node certificate: {0}")]
    Identity(#[from] CertIdentityError),
    /// The node certificate has no node name.
    #[error("node certificate has no <name>.<cluster-id>.meshlite DNS name")]
    MissingNodeName,
    /// `fleet.toml` and the certificate disagree.
    #[error("fleet.toml says {field} = {file}, but the certificate says {cert}")]
    Mismatch {
        /// The disagreeing field.
        field: &'static str,
        /// The value in `fleet.toml`.
        file: String,
        /// The value in the certificate.
        cert: String,
    },
    /// `renew` found no bundle to renew.
    #[error("no node bundle at {} to renew (issue one first)", path.display())]
    NoBundle {
        /// The bundle directory.
        path: PathBuf,
    },
    /// The certificate's validity dates could not be read.
    #[error(transparent)]
    Validity(#[from] validity::ValidityError),
    /// The node certificate does not verify against the trusted CAs (or is expired).
    #[error("node certificate is not valid for the fleet CA: {reason}")]
    Untrusted {
        /// The verifier's reason.
        reason: String,
    },
}

/// What [`init`] created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetInfo {
    /// The fleet directory.
    pub dir: PathBuf,
    /// The new cluster id.
    pub cluster_id: ClusterId,
    /// SHA-256 fingerprint of the CA certificate.
    pub ca_fingerprint: String,
}

/// What [`issue`] created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedNode {
    /// The bundle directory (`DIR/nodes/NAME`).
    pub bundle_dir: PathBuf,
    /// The node's name.
    pub node_name: NodeName,
    /// The node id derived from its key.
    pub node_id: NodeId,
    /// The cluster id in the certificate.
    pub cluster_id: ClusterId,
    /// End of the certificate's validity.
    pub not_after: SystemTime,
    /// Whether an existing key was kept (renewal).
    pub renewed: bool,
}

/// Options of [`init_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOptions {
    /// Reuse this cluster id (CA rotation); `None` draws a random one.
    pub cluster_id: Option<ClusterId>,
    /// Validity of the CA certificate in days.
    pub days: u32,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            cluster_id: None,
            days: DEFAULT_CA_DAYS,
        }
    }
}

/// Options of [`issue_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueOptions {
    /// Validity of the node certificate in days.
    pub days: u32,
    /// If the bundle exists, keep its `node.key` (same node id) and replace `node.pem`,
    /// `ca.pem` and `fleet.toml`. Without it an existing bundle is an error.
    pub renew: bool,
}

impl Default for IssueOptions {
    fn default() -> Self {
        Self {
            days: DEFAULT_NODE_DAYS,
            renew: false,
        }
    }
}

/// `meshlite fleet init DIR`: creates a fleet CA and a random cluster id in `dir`.
pub fn init(dir: &Path) -> Result<FleetInfo, FleetError> {
    init_with(dir, &InitOptions::default())
}

/// [`init`] with options.
pub fn init_with(dir: &Path, opts: &InitOptions) -> Result<FleetInfo, FleetError> {
    check_days(opts.days)?;
    files::ensure_dir(dir)?;
    let already = || FleetError::AlreadyInitialized {
        path: dir.to_path_buf(),
    };
    if dir.join(CA_KEY).exists() || dir.join(CA_CERT).exists() {
        return Err(already());
    }
    let cluster_id = opts.cluster_id.unwrap_or_else(ClusterId::random);
    let key = KeyPair::generate()?;
    let now = SystemTime::now();
    let params = cert::ca_params(cluster_id, now - BACKDATE, now + DAY * opts.days);
    let ca = params.self_signed(&key)?;
    let ca_fingerprint = cert::fingerprint(ca.der());
    let toml = FleetFile {
        cluster_id,
        ca_fingerprint: ca_fingerprint.clone(),
        node_name: None,
        node_id: None,
        not_after_unix: None,
    }
    .render()?;
    // The key first, with create_new: of two racing `init`s only one gets past this line.
    files::write_new(&dir.join(CA_KEY), &key.serialize_pem(), KEY_MODE)?;
    files::write_new(&dir.join(CA_CERT), &ca.pem(), PUBLIC_MODE)?;
    files::write_replace(&dir.join(FLEET_TOML), &toml, PUBLIC_MODE)?;
    Ok(FleetInfo {
        dir: dir.to_path_buf(),
        cluster_id,
        ca_fingerprint,
    })
}

/// `meshlite fleet issue DIR NAME --days N`: issues a node bundle into `DIR/nodes/NAME`.
pub fn issue(dir: &Path, name: &str, days: u32) -> Result<IssuedNode, FleetError> {
    issue_with(dir, name, &IssueOptions { days, renew: false })
}

/// `meshlite fleet renew DIR NAME --days N`: a new certificate for the existing bundle's key
/// (same node id), valid for `days` from now. Refuses when the bundle does not exist.
pub fn renew(dir: &Path, name: &str, days: u32) -> Result<IssuedNode, FleetError> {
    let node_name = NodeName::new(name)?;
    let bundle = dir.join(NODES_DIR).join(node_name.as_str());
    if !bundle.join(NODE_KEY).exists() {
        return Err(FleetError::NoBundle { path: bundle });
    }
    issue_with(dir, name, &IssueOptions { days, renew: true })
}

/// [`issue`] with options (renewal).
pub fn issue_with(dir: &Path, name: &str, opts: &IssueOptions) -> Result<IssuedNode, FleetError> {
    let node_name = NodeName::new(name)?;
    check_days(opts.days)?;
    let ca = FleetCa::load(dir)?;
    let bundle = dir.join(NODES_DIR).join(node_name.as_str());
    let key_path = bundle.join(NODE_KEY);
    let existing_key = if key_path.exists() {
        if !opts.renew {
            return Err(FleetError::BundleExists { path: bundle });
        }
        Some(files::read_text(&key_path)?)
    } else {
        None
    };
    let mut spec = CertSpec::new(&ca, node_name.clone(), opts.days);
    spec.key_pem = existing_key.clone();
    let issued = ca.issue_cert(&spec)?;
    write_bundle(&bundle, &ca, &issued, existing_key.is_none())?;
    Ok(IssuedNode {
        bundle_dir: bundle,
        node_name,
        node_id: issued.node_id,
        cluster_id: spec.cluster_id,
        not_after: spec.not_after,
        renewed: existing_key.is_some(),
    })
}

fn write_bundle(
    bundle: &Path,
    ca: &FleetCa,
    issued: &IssuedCert,
    new_key: bool,
) -> Result<(), FleetError> {
    files::ensure_dir(bundle)?;
    if new_key {
        files::write_new(&bundle.join(NODE_KEY), &issued.key_pem, KEY_MODE)?;
    }
    files::write_replace(&bundle.join(NODE_CERT), &issued.cert_pem, PUBLIC_MODE)?;
    files::write_replace(&bundle.join(CA_CERT), &ca.trusted_pem, PUBLIC_MODE)?;
    let toml = FleetFile {
        cluster_id: issued.cluster_id,
        ca_fingerprint: ca.fingerprint.clone(),
        node_name: Some(issued.node_name.clone()),
        node_id: Some(issued.node_id),
        not_after_unix: Some(unix_secs(issued.not_after)),
    }
    .render()?;
    files::write_replace(&bundle.join(FLEET_TOML), &toml, PUBLIC_MODE)
}

/// Loads and checks a node bundle directory (`node.pem`, `node.key`, `ca.pem`, `fleet.toml`):
/// the key matches the certificate, `fleet.toml` agrees with the certificate, and the
/// certificate verifies against `ca.pem` now (an expired certificate is an error).
pub fn load_node_identity(dir: &Path) -> Result<NodeIdentity, FleetError> {
    let file = FleetFile::read(&dir.join(FLEET_TOML))?;
    let identity = NodeIdentity::from_pem(
        &files::read_text(&dir.join(NODE_CERT))?,
        &files::read_text(&dir.join(NODE_KEY))?,
        &files::read_text(&dir.join(CA_CERT))?,
    )?;
    identity.check_fleet_file(&file)?;
    identity.verify_at(SystemTime::now())?;
    Ok(identity)
}

fn check_days(days: u32) -> Result<(), FleetError> {
    if (1..=MAX_DAYS).contains(&days) {
        Ok(())
    } else {
        Err(FleetError::InvalidDays { days })
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn mismatch(field: &'static str, file: impl ToString, cert: impl ToString) -> FleetError {
    FleetError::Mismatch {
        field,
        file: file.to_string(),
        cert: cert.to_string(),
    }
}

/// A loaded fleet CA (fleet directory), able to sign node certificates.
pub struct FleetCa {
    cluster_id: ClusterId,
    key: KeyPair,
    /// Every certificate of `ca.pem` (several during a CA rotation), as PEM text.
    trusted_pem: String,
    trusted: Vec<CertificateDer<'static>>,
    /// Fingerprint of the certificate matching `key`.
    fingerprint: String,
}

impl std::fmt::Debug for FleetCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetCa")
            .field("cluster_id", &self.cluster_id)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// What a node certificate should say; [`CertSpec::new`] fills the usual values.
#[derive(Debug, Clone)]
pub struct CertSpec {
    /// The node's name.
    pub node_name: NodeName,
    /// The cluster written into the certificate (normally the CA's).
    pub cluster_id: ClusterId,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// PEM of an existing key to certify; `None` generates a new ECDSA P-256 key.
    pub key_pem: Option<String>,
}

impl CertSpec {
    /// The CA's cluster, valid from [`BACKDATE`] ago for `days` days, with a new key.
    pub fn new(ca: &FleetCa, node_name: NodeName, days: u32) -> Self {
        let now = SystemTime::now();
        Self {
            node_name,
            cluster_id: ca.cluster_id,
            not_before: now - BACKDATE,
            not_after: now + DAY * days,
            key_pem: None,
        }
    }
}

/// A certificate issued by [`FleetCa::issue_cert`].
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The certified private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The node id derived from the key.
    pub node_id: NodeId,
    /// The node name in the certificate.
    pub node_name: NodeName,
    /// The cluster in the certificate.
    pub cluster_id: ClusterId,
    /// End of validity.
    pub not_after: SystemTime,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("node_id", &self.node_id)
            .field("node_name", &self.node_name)
            .field("cluster_id", &self.cluster_id)
            .finish_non_exhaustive()
    }
}

impl FleetCa {
    /// Loads `ca.key`, `ca.pem` and `fleet.toml` from a fleet directory.
    pub fn load(dir: &Path) -> Result<Self, FleetError> {
        let file = FleetFile::read(&dir.join(FLEET_TOML))?;
        let key_path = dir.join(CA_KEY);
        let key = KeyPair::from_pem(&files::read_text(&key_path)?)
            .map_err(|e| files::malformed(&key_path, e))?;
        let cert_path = dir.join(CA_CERT);
        let trusted_pem = files::read_text(&cert_path)?;
        let trusted = files::parse_certs(&cert_path.display().to_string(), &trusted_pem)?;
        let spki = key.subject_public_key_info();
        let own = trusted
            .iter()
            .find(|c| spki_of(c).as_deref() == Some(spki.as_slice()))
            .ok_or_else(|| FleetError::CaKeyMismatch {
                path: dir.to_path_buf(),
            })?;
        let fingerprint = cert::fingerprint(own);
        Ok(Self {
            cluster_id: file.cluster_id,
            key,
            trusted_pem,
            trusted,
            fingerprint,
        })
    }

    /// The fleet's cluster id.
    pub fn cluster_id(&self) -> ClusterId {
        self.cluster_id
    }

    /// Every trusted CA certificate (the content of `ca.pem`).
    pub fn trusted(&self) -> &[CertificateDer<'static>] {
        &self.trusted
    }

    /// The trusted CA certificates as PEM text (what a bundle's `ca.pem` holds).
    pub fn trusted_pem(&self) -> &str {
        &self.trusted_pem
    }

    /// Signs a node certificate as `spec` says, then checks that it verifies against `ca.pem`
    /// (at the middle of its validity, so expired test certificates can be made too).
    pub fn issue_cert(&self, spec: &CertSpec) -> Result<IssuedCert, FleetError> {
        let key = match &spec.key_pem {
            Some(pem) => KeyPair::from_pem(pem).map_err(|e| FleetError::Malformed {
                what: NODE_KEY.into(),
                reason: e.to_string(),
            })?,
            None => KeyPair::generate()?,
        };
        let node_id = NodeId::from_spki_der(&key.subject_public_key_info());
        let params = cert::node_params(&cert::NodeCertFields {
            node_name: &spec.node_name,
            cluster_id: spec.cluster_id,
            node_id,
            not_before: spec.not_before,
            not_after: spec.not_after,
        })?;
        let issuer_params = cert::ca_params(self.cluster_id, spec.not_before, spec.not_after);
        let issuer = Issuer::new(issuer_params, &self.key);
        let signed = params.signed_by(&key, &issuer)?;
        let issued = IssuedCert {
            cert_pem: signed.pem(),
            key_pem: key.serialize_pem(),
            node_id,
            node_name: spec.node_name.clone(),
            cluster_id: spec.cluster_id,
            not_after: spec.not_after,
        };
        let identity =
            NodeIdentity::from_pem(&issued.cert_pem, &issued.key_pem, &self.trusted_pem)?;
        identity.verify_at(midpoint(spec.not_before, spec.not_after))?;
        Ok(issued)
    }
}

fn midpoint(a: SystemTime, b: SystemTime) -> SystemTime {
    a + b.duration_since(a).unwrap_or_default() / 2
}

fn spki_of(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    Some(parsed.subject_public_key_info().as_ref().to_vec())
}

/// A node's own identity: what the transport presents and whom it trusts.
pub struct NodeIdentity {
    cluster_id: ClusterId,
    node_id: NodeId,
    node_name: NodeName,
    not_after: SystemTime,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    ca_certs: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("cluster_id", &self.cluster_id)
            .field("node_id", &self.node_id)
            .field("node_name", &self.node_name)
            .field("ca_certs", &self.ca_certs.len())
            .finish_non_exhaustive()
    }
}

impl Clone for NodeIdentity {
    fn clone(&self) -> Self {
        Self {
            cluster_id: self.cluster_id,
            node_id: self.node_id,
            node_name: self.node_name.clone(),
            not_after: self.not_after,
            cert: self.cert.clone(),
            key: self.key.clone_key(),
            ca_certs: self.ca_certs.clone(),
        }
    }
}

impl NodeIdentity {
    /// Builds an identity from PEM texts. Checks that the key matches the certificate and that
    /// the certificate carries a Meshlite identity, but not its chain or dates: see
    /// [`NodeIdentity::verify_at`] (which [`load_node_identity`] calls).
    pub fn from_pem(cert_pem: &str, key_pem: &str, ca_pem: &str) -> Result<Self, FleetError> {
        let cert = files::parse_certs(NODE_CERT, cert_pem)?.swap_remove(0);
        let ca_certs = files::parse_certs(CA_CERT, ca_pem)?;
        let key = files::parse_key(NODE_KEY, key_pem)?;
        let signing = KeyPair::from_pem(key_pem).map_err(|e| FleetError::Malformed {
            what: NODE_KEY.into(),
            reason: e.to_string(),
        })?;
        let id = identity_of(&cert)?;
        if signing.subject_public_key_info() != id.spki_der {
            return Err(FleetError::KeyMismatch);
        }
        Ok(Self {
            cluster_id: id.cluster_id,
            node_id: id.node_id,
            node_name: id.node_name.ok_or(FleetError::MissingNodeName)?,
            not_after: validity::not_after(&cert)?,
            cert,
            key,
            ca_certs,
        })
    }

    /// Checks the certificate against the trusted CAs at time `now` (signature chain, validity
    /// dates, client-auth usage), exactly as a peer's TLS verifier will.
    pub fn verify_at(&self, now: SystemTime) -> Result<(), FleetError> {
        let untrusted = |reason: String| FleetError::Untrusted { reason };
        let mut roots = RootCertStore::empty();
        for ca in &self.ca_certs {
            roots
                .add(ca.clone())
                .map_err(|e| untrusted(e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| untrusted(e.to_string()))?;
        let now = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
        verifier
            .verify_client_cert(&self.cert, &[], now)
            .map(|_| ())
            .map_err(|e| untrusted(e.to_string()))
    }

    fn check_fleet_file(&self, file: &FleetFile) -> Result<(), FleetError> {
        if file.cluster_id != self.cluster_id {
            return Err(mismatch("cluster_id", file.cluster_id, self.cluster_id));
        }
        if let Some(id) = file.node_id.filter(|id| *id != self.node_id) {
            return Err(mismatch("node_id", id, self.node_id));
        }
        match &file.node_name {
            Some(name) if *name != self.node_name => {
                Err(mismatch("node_name", name, &self.node_name))
            }
            _ => Ok(()),
        }
    }

    /// The cluster id in the certificate.
    pub fn cluster_id(&self) -> ClusterId {
        self.cluster_id
    }

    /// This node's id (derived from its key).
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// This node's name.
    pub fn node_name(&self) -> &NodeName {
        &self.node_name
    }

    /// End of the node certificate's validity.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The node certificate.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// A copy of the node's private key (for a TLS configuration).
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    /// The trusted CA certificates (`ca.pem`).
    pub fn ca_certs(&self) -> &[CertificateDer<'static>] {
        &self.ca_certs
    }
}
