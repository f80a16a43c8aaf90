//! mDNS: announce this node as `_meshlite._udp.local.` and browse for other nodes.
//!
//! The responder ([`mdns_sd::ServiceDaemon`]) runs its own thread; this module registers one
//! service instance whose TXT records carry the node id, cluster id, QUIC port and version, and
//! turns resolved instances of other nodes of the same cluster into [`Sighting`]s. Instances
//! without a node id, with our own node id or with another cluster id are skipped. A goodbye
//! (`ServiceRemoved`) withdraws the mDNS source from the peer.
//!
//! Interfaces are configurable (`discovery.mdns_interfaces`, names or addresses) so that tests can
//! run on loopback or inside network namespaces; the UDP port too (`discovery.mdns_port`), so that
//! concurrent test runs do not hear each other.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mdns_sd::{IfKind, Receiver, ResolvedService, ServiceDaemon, ServiceEvent, ServiceInfo};
use tokio_util::sync::CancellationToken;

use super::LocalNode;
use super::config::DiscoveryConfig;
use super::table::{PeerKey, PeerTable, Sighting, Source};

/// The DNS-SD service type of Meshlite nodes.
pub const SERVICE_TYPE: &str = "_meshlite._udp.local.";
/// TXT key: the node id (hex).
pub const TXT_NODE_ID: &str = "node_id";
/// TXT key: the cluster id.
pub const TXT_CLUSTER: &str = "cluster";
/// TXT key: the QUIC port.
pub const TXT_PORT: &str = "port";
/// TXT key: the Meshlite version.
pub const TXT_VERSION: &str = "version";
/// TXT key: the node's human name.
pub const TXT_NAME: &str = "name";

/// Longest DNS label; instance names are cut to fit.
const MAX_LABEL: usize = 63;
/// How long shutdown waits for the goodbye packets and the responder thread.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Error starting or running the mDNS responder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MdnsError {
    /// The responder refused an operation.
    #[error("mdns {what}: {source}")]
    Daemon {
        /// What was attempted.
        what: &'static str,
        /// The responder's error.
        source: mdns_sd::Error,
    },
    /// The responder's event channel closed unexpectedly.
    #[error("mdns browse channel closed")]
    BrowseClosed,
}

fn daemon_err(what: &'static str) -> impl FnOnce(mdns_sd::Error) -> MdnsError {
    move |source| MdnsError::Daemon { what, source }
}

/// A registered, browsing mDNS responder. [`Self::run`] consumes it.
pub struct MdnsResponder {
    daemon: ServiceDaemon,
    fullname: String,
    browse: Receiver<ServiceEvent>,
    node_id: String,
    cluster: String,
}

impl MdnsResponder {
    /// Starts the responder on the configured interfaces and port, registers this node and
    /// starts browsing.
    pub fn start(cfg: &DiscoveryConfig, local: &LocalNode) -> Result<Self, MdnsError> {
        let daemon = ServiceDaemon::new_with_port(cfg.mdns_port).map_err(daemon_err("start"))?;
        let started = Self::register_and_browse(&daemon, cfg, local);
        match started {
            Ok((fullname, browse)) => Ok(Self {
                daemon,
                fullname,
                browse,
                node_id: local.node_id.clone(),
                cluster: local.cluster.clone(),
            }),
            Err(e) => {
                let _ = daemon.shutdown();
                Err(e)
            }
        }
    }

    fn register_and_browse(
        daemon: &ServiceDaemon,
        cfg: &DiscoveryConfig,
        local: &LocalNode,
    ) -> Result<(String, Receiver<ServiceEvent>), MdnsError> {
        if !cfg.mdns_interfaces.is_empty() {
            daemon
                .disable_interface(IfKind::All)
                .map_err(daemon_err("disable interfaces"))?;
            let kinds: Vec<IfKind> = cfg.mdns_interfaces.iter().map(|i| if_kind(i)).collect();
            daemon
                .enable_interface(kinds)
                .map_err(daemon_err("enable interfaces"))?;
        }
        let info = service_info(local)?;
        let fullname = info.get_fullname().to_owned();
        daemon.register(info).map_err(daemon_err("register"))?;
        let browse = daemon.browse(SERVICE_TYPE).map_err(daemon_err("browse"))?;
        Ok((fullname, browse))
    }

    /// Feeds resolved peers into `table` until `cancel`, then says goodbye and stops.
    pub async fn run(self, table: PeerTable, cancel: CancellationToken) -> Result<(), MdnsError> {
        let mut instances: HashMap<String, String> = HashMap::new();
        let result = loop {
            let event = tokio::select! {
                biased;
                () = cancel.cancelled() => break Ok(()),
                event = self.browse.recv_async() => event,
            };
            let Ok(event) = event else {
                break Err(MdnsError::BrowseClosed);
            };
            self.handle(event, &table, &mut instances);
        };
        self.stop().await;
        result
    }

    fn handle(
        &self,
        event: ServiceEvent,
        table: &PeerTable,
        instances: &mut HashMap<String, String>,
    ) {
        match event {
            ServiceEvent::ServiceResolved(service) => {
                if let Some(sighting) = self.sighting(&service) {
                    if let PeerKey::Node(id) = &sighting.key {
                        instances.insert(service.get_fullname().to_owned(), id.clone());
                    }
                    tracing::debug!(peer = %sighting.key, addrs = ?sighting.addresses, "mdns peer");
                    table.observe(sighting);
                }
            }
            ServiceEvent::ServiceRemoved(_, fullname) => {
                if let Some(id) = instances.remove(&fullname) {
                    table.remove_source(&PeerKey::Node(id), Source::Mdns);
                }
            }
            _ => {}
        }
    }

    /// The sighting for a resolved instance, or `None` for ourselves and foreign clusters.
    fn sighting(&self, service: &ResolvedService) -> Option<Sighting> {
        peer_sighting(service, &self.node_id, &self.cluster)
    }

    async fn stop(self) {
        if let Ok(rx) = self.daemon.unregister(&self.fullname) {
            let _ = tokio::time::timeout(STOP_TIMEOUT, rx.recv_async()).await;
        }
        if let Ok(rx) = self.daemon.shutdown() {
            let _ = tokio::time::timeout(STOP_TIMEOUT, rx.recv_async()).await;
        }
    }
}

impl std::fmt::Debug for MdnsResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MdnsResponder")
            .field("fullname", &self.fullname)
            .finish_non_exhaustive()
    }
}

/// Reads a resolved instance's TXT records; `None` unless it is another node of `cluster`.
fn peer_sighting(service: &ResolvedService, own_id: &str, cluster: &str) -> Option<Sighting> {
    let node_id = service
        .get_property_val_str(TXT_NODE_ID)
        .filter(|id| !id.is_empty())?;
    if node_id == own_id {
        return None;
    }
    if service.get_property_val_str(TXT_CLUSTER) != Some(cluster) {
        tracing::debug!(node_id, "mdns: ignoring node of another cluster");
        return None;
    }
    let port = service
        .get_property_val_str(TXT_PORT)
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(service.get_port());
    let mut ips: Vec<IpAddr> = service
        .get_addresses()
        .iter()
        .map(|ip| ip.to_ip_addr())
        .collect();
    ips.retain(|ip| super::dialable(*ip));
    ips.sort();
    let mut sighting = Sighting::node(Source::Mdns, node_id)
        .with_addresses(ips.into_iter().map(|ip| SocketAddr::new(ip, port)));
    if let Some(name) = service.get_property_val_str(TXT_NAME) {
        sighting = sighting.with_name(name);
    }
    if let Some(version) = service.get_property_val_str(TXT_VERSION) {
        sighting = sighting.with_version(version);
    }
    Some(sighting)
}

/// An interface given by name, or by one of its addresses.
fn if_kind(spec: &str) -> IfKind {
    match spec.trim().parse::<IpAddr>() {
        Ok(ip) => IfKind::Addr(ip),
        Err(_) => IfKind::Name(spec.trim().to_owned()),
    }
}

/// This node's service record: instance `<name>-<node id prefix>`, addresses filled in by the
/// responder from the enabled interfaces.
fn service_info(local: &LocalNode) -> Result<ServiceInfo, MdnsError> {
    let instance = instance_name(&local.name, &local.node_id);
    let host = format!("{instance}.local.");
    let port = local.quic_port.to_string();
    let txt = [
        (TXT_NODE_ID, local.node_id.as_str()),
        (TXT_CLUSTER, local.cluster.as_str()),
        (TXT_PORT, port.as_str()),
        (TXT_VERSION, local.version.as_str()),
        (TXT_NAME, local.name.as_str()),
    ];
    let info = ServiceInfo::new(
        SERVICE_TYPE,
        &instance,
        &host,
        (),
        local.quic_port,
        &txt[..],
    )
    .map_err(daemon_err("service record"))?;
    Ok(info.enable_addr_auto())
}

/// A DNS-label-safe, unique instance name: sanitized node name plus 12 hex digits of the id.
fn instance_name(name: &str, node_id: &str) -> String {
    let id: String = node_id.chars().take(12).collect();
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(MAX_LABEL - id.len() - 1)
        .collect();
    let clean = clean.trim_matches('-');
    if clean.is_empty() {
        format!("meshlite-{id}")
    } else {
        format!("{clean}-{id}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_fit_a_dns_label() {
        let id = "ab".repeat(32);
        let long = "x".repeat(100);
        assert!(instance_name(&long, &id).len() <= MAX_LABEL);
        assert_eq!(instance_name("pi 5.lan", &id), "pi-5-lan-abababababab");
        assert_eq!(instance_name("..", &id), "meshlite-abababababab");
    }

    #[test]
    fn link_local_v6_and_unspecified_are_not_dialable() {
        let ok: IpAddr = "192.168.1.5".parse().unwrap();
        assert!(super::super::dialable(ok));
        for bad in ["fe80::1", "0.0.0.0", "::", "224.0.0.251"] {
            assert!(!super::super::dialable(bad.parse().unwrap()), "{bad}");
        }
        assert!(super::super::dialable("fd7a:115c:a1e0::1".parse().unwrap()));
    }

    #[test]
    fn interface_specs_parse_as_address_or_name() {
        assert!(matches!(if_kind("127.0.0.1"), IfKind::Addr(_)));
        assert!(matches!(if_kind("eth0"), IfKind::Name(n) if n == "eth0"));
    }
}
