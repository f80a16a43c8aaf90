//! Mutual TLS for QUIC: who may talk to us, and whom we agree to talk to.
//!
//! Both directions run the same two-step check:
//!
//! 1. **Chain** (webpki, ring provider): the presented certificate chains to a CA in our
//!    `ca.pem`, is within its validity dates, and carries the right extended key usage. Inbound
//!    this is rustls' [`WebPkiClientVerifier`]; outbound it is
//!    [`verify_server_cert_signed_by_trust_anchor`] *without* a DNS-name check, because peers
//!    are dialed by IP address (discovery, static lists) rather than by name.
//! 2. **Fleet policy** ([`PeerPolicy::check`]): the certificate carries a `meshlite://` identity
//!    whose node id matches its key, names our cluster, is not on the deny list, is not our own
//!    node id (a node discovering itself), and — when dialing a known peer — is the node id we
//!    expected.
//!
//! A refusal fails the handshake (the peer gets a TLS alert, never an application byte), is
//! logged with its reason, and is published as [`NetEvent::Refused`]. The deny list can be
//! replaced at run time ([`PeerPolicy::set_deny_list`]).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, RwLock};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    SignatureScheme,
};
use tokio::sync::broadcast;

use super::events::{Direction, NetEvent, RefusalReason};
use crate::fleet::{CertIdentity, ClusterId, NodeId, NodeIdentity, identity_of};

/// The ALPN protocol id of Meshlite's sync protocol over QUIC.
pub const ALPN: &[u8] = b"meshlite/1";

/// The TLS server name sent when dialing. Peers are dialed by address and the name is not
/// checked (see the module doc); it only has to be a valid DNS name.
pub const SERVER_NAME: &str = "peer.meshlite";

/// Installs rustls' ring provider as the process default. async-nats (and any other
/// `ClientConfig::builder()` caller) needs a process default; with only ring compiled in,
/// rustls cannot pick one itself. Idempotent: a provider already installed is kept.
pub fn install_crypto_provider() {
    // Err means a default already exists (ours, from an earlier call or another thread).
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The provider every Meshlite TLS configuration is built with.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls error that fails the handshake for `reason` (and picks the TLS alert).
fn tls_error(reason: &RefusalReason) -> rustls::Error {
    let cert_error = match reason {
        RefusalReason::Certificate(e) => e.clone(),
        other => CertificateError::Other(OtherError(Arc::new(other.clone()))),
    };
    rustls::Error::InvalidCertificate(cert_error)
}

/// The fleet policy applied to every peer certificate after its chain verified.
pub struct PeerPolicy {
    cluster_id: ClusterId,
    own_node_id: NodeId,
    deny: RwLock<BTreeSet<NodeId>>,
    events: broadcast::Sender<NetEvent>,
}

impl fmt::Debug for PeerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerPolicy")
            .field("cluster_id", &self.cluster_id)
            .field("deny", &self.deny_list().len())
            .finish_non_exhaustive()
    }
}

impl PeerPolicy {
    /// A policy for `identity`'s cluster with the given deny list; refusals are published on
    /// `events`.
    pub fn new(
        identity: &NodeIdentity,
        deny: impl IntoIterator<Item = NodeId>,
        events: broadcast::Sender<NetEvent>,
    ) -> Self {
        Self {
            cluster_id: identity.cluster_id(),
            own_node_id: identity.node_id(),
            deny: RwLock::new(deny.into_iter().collect()),
            events,
        }
    }

    /// Replaces the deny list. Existing connections are not affected here (the mesh closes
    /// them); new handshakes see the new list at once.
    pub fn set_deny_list(&self, deny: impl IntoIterator<Item = NodeId>) {
        let new: BTreeSet<NodeId> = deny.into_iter().collect();
        match self.deny.write() {
            Ok(mut guard) => *guard = new,
            // A panic while holding the lock cannot leave a half-written set: replace it anyway.
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }

    /// The current deny list.
    pub fn deny_list(&self) -> BTreeSet<NodeId> {
        match self.deny.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whether `node` is denied.
    pub fn is_denied(&self, node: &NodeId) -> bool {
        match self.deny.read() {
            Ok(guard) => guard.contains(node),
            Err(poisoned) => poisoned.into_inner().contains(node),
        }
    }

    /// Checks a certificate whose chain already verified.
    pub fn check(
        &self,
        cert: &CertificateDer<'_>,
        expected: Option<NodeId>,
    ) -> Result<CertIdentity, RefusalReason> {
        let id = identity_of(cert)?;
        if id.cluster_id != self.cluster_id {
            return Err(RefusalReason::WrongCluster {
                expected: self.cluster_id,
                presented: id.cluster_id,
            });
        }
        if self.is_denied(&id.node_id) {
            return Err(RefusalReason::Denied(id.node_id));
        }
        if id.node_id == self.own_node_id {
            return Err(RefusalReason::OwnNode(id.node_id));
        }
        match expected {
            Some(want) if want != id.node_id => Err(RefusalReason::UnexpectedNode {
                expected: want,
                presented: id.node_id,
            }),
            _ => Ok(id),
        }
    }

    /// Logs and publishes a refusal, and returns the error that fails the handshake.
    fn refuse(&self, direction: Direction, reason: RefusalReason) -> rustls::Error {
        tracing::warn!(%direction, %reason, "refused peer at TLS handshake");
        // No subscriber is fine: the refusal is logged either way.
        let _ = self.events.send(NetEvent::Refused {
            direction,
            reason: reason.clone(),
        });
        tls_error(&reason)
    }

    /// Chain result first, then the fleet policy.
    fn verify(
        &self,
        direction: Direction,
        chain: Result<(), rustls::Error>,
        cert: &CertificateDer<'_>,
        expected: Option<NodeId>,
    ) -> Result<(), rustls::Error> {
        match chain {
            Err(rustls::Error::InvalidCertificate(e)) => {
                Err(self.refuse(direction, RefusalReason::Certificate(e)))
            }
            Err(other) => {
                tracing::warn!(%direction, error = %other, "peer certificate check failed");
                Err(other)
            }
            Ok(()) => match self.check(cert, expected) {
                Ok(_) => Ok(()),
                Err(reason) => Err(self.refuse(direction, reason)),
            },
        }
    }
}

/// Inbound: rustls' client-certificate verifier, then the fleet policy.
#[derive(Debug)]
struct FleetClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    policy: Arc<PeerPolicy>,
}

impl ClientCertVerifier for FleetClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let chain = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
            .map(|_| ());
        self.policy
            .verify(Direction::Inbound, chain, end_entity, None)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Outbound: chain to our roots (no DNS-name check), then the fleet policy.
#[derive(Debug)]
struct FleetServerVerifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
    policy: Arc<PeerPolicy>,
    expected: Option<NodeId>,
}

impl ServerCertVerifier for FleetServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain = ParsedCertificate::try_from(end_entity).and_then(|parsed| {
            verify_server_cert_signed_by_trust_anchor(
                &parsed,
                &self.roots,
                intermediates,
                now,
                self.algorithms.all,
            )
        });
        self.policy
            .verify(Direction::Outbound, chain, end_entity, self.expected)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Building a TLS configuration failed (bad key or CA material).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// A CA certificate could not be used as a trust anchor.
    #[error("CA certificate unusable: {0}")]
    Roots(rustls::Error),
    /// rustls refused the configuration (for example a key that does not match).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// QUIC needs a TLS 1.3 suite the provider lacks (cannot happen with ring).
    #[error("no QUIC-compatible cipher suite: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// Shared material for building TLS configurations of one node.
#[derive(Debug, Clone)]
pub struct TlsContext {
    identity: NodeIdentity,
    roots: Arc<RootCertStore>,
    policy: Arc<PeerPolicy>,
}

impl TlsContext {
    /// Prepares the trust roots from the identity's `ca.pem`.
    pub fn new(identity: NodeIdentity, policy: Arc<PeerPolicy>) -> Result<Self, TlsSetupError> {
        let mut roots = RootCertStore::empty();
        for ca in identity.ca_certs() {
            roots.add(ca.clone()).map_err(TlsSetupError::Roots)?;
        }
        Ok(Self {
            identity,
            roots: Arc::new(roots),
            policy,
        })
    }

    /// The policy shared by every handshake of this node.
    pub fn policy(&self) -> &Arc<PeerPolicy> {
        &self.policy
    }

    /// The server side: mandatory client certificates, TLS 1.3, ALPN `meshlite/1`.
    pub fn server_crypto(&self) -> Result<Arc<QuicServerConfig>, TlsSetupError> {
        let provider = provider();
        let inner =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider.clone())
                .build()?;
        let verifier = Arc::new(FleetClientVerifier {
            inner,
            policy: self.policy.clone(),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![self.identity.cert().clone()],
                self.identity.private_key(),
            )?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Arc::new(QuicServerConfig::try_from(config)?))
    }

    /// The client side for one dial; `expected` pins the peer's node id when known.
    pub fn client_crypto(
        &self,
        expected: Option<NodeId>,
    ) -> Result<Arc<QuicClientConfig>, TlsSetupError> {
        let provider = provider();
        let verifier = Arc::new(FleetServerVerifier {
            roots: self.roots.clone(),
            algorithms: provider.signature_verification_algorithms,
            policy: self.policy.clone(),
            expected,
        });
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(
                vec![self.identity.cert().clone()],
                self.identity.private_key(),
            )?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Arc::new(QuicClientConfig::try_from(config)?))
    }
}

/// The peer's identity on an established connection (its certificate verified at handshake).
pub fn peer_identity(conn: &quinn::Connection) -> Option<CertIdentity> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    identity_of(certs.first()?).ok()
}
