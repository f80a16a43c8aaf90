//! Certificate contents: what the fleet CA signs and how a presented certificate is read back.
//!
//! A node certificate carries its identity in two subject alternative names:
//!
//! - URI `meshlite://<cluster-id>/<node-id>` — authoritative. The node id must equal the one
//!   derived from the certificate's own public key ([`NodeId::from_spki_der`]), so a certificate
//!   cannot claim another node's id.
//! - DNS `<node-name>.<cluster-id>.meshlite` — the human name, for logs and `meshlite peers`.
//!
//! Both extended key usages (server and client auth) are set: every node both dials and accepts.
//! The CA's subject is a pure function of the cluster id ([`ca_params`]), which lets us rebuild
//! the issuer from `ca.key` alone without an X.509 parser; [`super::FleetCa::issue_cert`] then
//! verifies every certificate it issues against `ca.pem`, so a mismatch cannot go unnoticed.

use std::time::SystemTime;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;

use super::ids::{ClusterId, NodeId, NodeName};

/// The DNS suffix of node names inside certificates.
pub const DNS_SUFFIX: &str = "meshlite";
/// The URI scheme of the identity SAN.
pub const URI_PREFIX: &str = "meshlite://";

/// The identity a node certificate claims (the node id is also proven: it is derived from the
/// certificate's key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    /// The cluster named in the certificate.
    pub cluster_id: ClusterId,
    /// The node id, derived from the certificate's public key.
    pub node_id: NodeId,
    /// The node name from the DNS SAN, when present and well formed.
    pub node_name: Option<NodeName>,
    /// DER of the certificate's SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
}

/// Why a certificate does not carry a usable Meshlite identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertIdentityError {
    /// The certificate is not parseable X.509 (as webpki reads it).
    #[error("malformed certificate: {reason}")]
    Malformed {
        /// The parser's reason.
        reason: String,
    },
    /// No `meshlite://` URI SAN.
    #[error("certificate has no meshlite:// identity URI")]
    MissingIdentity,
    /// More than one `meshlite://` URI SAN.
    #[error("certificate has several meshlite:// identity URIs")]
    AmbiguousIdentity,
    /// The identity URI is not `meshlite://<cluster-id>/<node-id>`.
    #[error("bad identity URI {uri:?}")]
    BadIdentity {
        /// The URI as presented.
        uri: String,
    },
    /// The node id in the URI is not the one derived from the certificate's key.
    #[error("certificate claims node id {claimed} but its key gives {derived}")]
    NodeIdMismatch {
        /// The id written in the certificate.
        claimed: NodeId,
        /// The id derived from the key.
        derived: NodeId,
    },
}

/// Reads the identity out of a node certificate. Does not check the signature chain or validity
/// dates: that is the TLS verifier's job, which runs first.
pub fn identity_of(cert: &CertificateDer<'_>) -> Result<CertIdentity, CertIdentityError> {
    let parsed =
        webpki::EndEntityCert::try_from(cert).map_err(|e| CertIdentityError::Malformed {
            reason: e.to_string(),
        })?;
    let spki_der = parsed.subject_public_key_info().as_ref().to_vec();
    let derived = NodeId::from_spki_der(&spki_der);
    let (cluster_id, claimed) = identity_uri(parsed.valid_uri_names())?;
    if claimed != derived {
        return Err(CertIdentityError::NodeIdMismatch { claimed, derived });
    }
    let node_name = parsed
        .valid_dns_names()
        .find_map(|dns| node_name_from_dns(dns, cluster_id));
    Ok(CertIdentity {
        cluster_id,
        node_id: derived,
        node_name,
        spki_der,
    })
}

/// Finds the single `meshlite://` URI among `uris` and parses it.
fn identity_uri<'a>(
    mut uris: impl Iterator<Item = &'a str>,
) -> Result<(ClusterId, NodeId), CertIdentityError> {
    let mut ours = uris.by_ref().filter(|u| u.starts_with(URI_PREFIX));
    let uri = ours.next().ok_or(CertIdentityError::MissingIdentity)?;
    if ours.next().is_some() {
        return Err(CertIdentityError::AmbiguousIdentity);
    }
    parse_identity_uri(uri).ok_or_else(|| CertIdentityError::BadIdentity {
        uri: uri.to_owned(),
    })
}

fn parse_identity_uri(uri: &str) -> Option<(ClusterId, NodeId)> {
    let (cluster, node) = uri.strip_prefix(URI_PREFIX)?.split_once('/')?;
    Some((cluster.parse().ok()?, node.parse().ok()?))
}

/// `<name>.<cluster>.meshlite` → name, when the cluster part matches.
fn node_name_from_dns(dns: &str, cluster_id: ClusterId) -> Option<NodeName> {
    let rest = dns.strip_suffix(DNS_SUFFIX)?.strip_suffix('.')?;
    let (name, cluster) = rest.rsplit_once('.')?;
    (cluster == cluster_id.to_string())
        .then(|| NodeName::new(name).ok())
        .flatten()
}

/// The identity URI SAN for a node.
pub fn identity_uri_for(cluster_id: ClusterId, node_id: NodeId) -> String {
    format!("{URI_PREFIX}{cluster_id}/{node_id}")
}

/// The DNS SAN for a node.
pub fn dns_name_for(name: &NodeName, cluster_id: ClusterId) -> String {
    format!("{name}.{cluster_id}.{DNS_SUFFIX}")
}

/// The CA subject: a pure function of the cluster id so the issuer can be rebuilt from the key.
fn ca_subject(cluster_id: ClusterId) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Meshlite fleet");
    dn.push(
        DnType::CommonName,
        format!("Meshlite fleet CA {cluster_id}"),
    );
    dn
}

/// Parameters of the fleet CA certificate (also used to rebuild the issuer when signing).
pub fn ca_params(
    cluster_id: ClusterId,
    not_before: SystemTime,
    not_after: SystemTime,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = ca_subject(cluster_id);
    // Path length 0: the CA signs node certificates only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    params.not_before = OffsetDateTime::from(not_before);
    params.not_after = OffsetDateTime::from(not_after);
    params
}

/// What a node certificate says; see the module doc.
#[derive(Debug, Clone)]
pub struct NodeCertFields<'a> {
    /// The node's name.
    pub node_name: &'a NodeName,
    /// The cluster written into the certificate.
    pub cluster_id: ClusterId,
    /// The node id (derived from the key being certified).
    pub node_id: NodeId,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

/// Parameters of a node certificate.
pub fn node_params(fields: &NodeCertFields<'_>) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Meshlite fleet");
    dn.push(DnType::CommonName, fields.node_name.as_str());
    params.distinguished_name = dn;
    params.subject_alt_names = vec![
        SanType::DnsName(dns_name_for(fields.node_name, fields.cluster_id).try_into()?),
        SanType::URI(identity_uri_for(fields.cluster_id, fields.node_id).try_into()?),
    ];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    params.not_before = OffsetDateTime::from(fields.not_before);
    params.not_after = OffsetDateTime::from(fields.not_after);
    Ok(params)
}

/// 16 random bytes with the top bit clear (serials are positive DER integers).
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

/// SHA-256 fingerprint of a certificate, as `openssl x509 -fingerprint -sha256` prints it.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    format!("sha256:{}", hex.join(":"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_uri_parses_only_the_exact_form() {
        let c = ClusterId::random();
        let n = NodeId::from_spki_der(b"k");
        assert_eq!(parse_identity_uri(&identity_uri_for(c, n)), Some((c, n)));
        assert_eq!(parse_identity_uri("meshlite://zz/yy"), None);
        assert_eq!(parse_identity_uri(&format!("meshlite://{c}")), None);
        assert_eq!(parse_identity_uri(&format!("meshlite://{c}/{n}/x")), None);
    }

    #[test]
    fn node_name_needs_matching_cluster() {
        let c = ClusterId::random();
        let name = NodeName::new("pi-5").ok();
        assert_eq!(node_name_from_dns(&format!("pi-5.{c}.meshlite"), c), name);
        let other = ClusterId::random();
        assert_eq!(
            node_name_from_dns(&format!("pi-5.{other}.meshlite"), c),
            None
        );
        assert_eq!(node_name_from_dns("pi-5.meshlite", c), None);
    }
}
