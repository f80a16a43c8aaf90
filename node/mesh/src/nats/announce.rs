//! Node announcements on `mesh.node.announce.v1` (seed 003's subject).
//!
//! Every node publishes an [`Announcement`] at start and every `announce_interval_secs`, and
//! listens to everyone's: announcements of other nodes of the same cluster become
//! [`Source::Nats`] sightings in the peer table. Our own, other clusters', oversized and malformed
//! messages are dropped (malformed ones with a warning). Core NATS is at-most-once, which is fine
//! here: the next announcement repeats everything.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::discovery::{LocalNode, PeerTable, Sighting, Source};
use crate::tasks::Ticker;

use super::rfc3339_now;

/// The announcement subject.
pub const ANNOUNCE_SUBJECT: &str = "mesh.node.announce.v1";
/// Announcements larger than this are dropped unread.
pub const MAX_ANNOUNCEMENT_BYTES: usize = 64 * 1024;

/// The JSON body published on [`ANNOUNCE_SUBJECT`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// Node id (hex).
    pub node_id: String,
    /// Human name.
    pub name: String,
    /// Cluster id.
    pub cluster: String,
    /// QUIC endpoint addresses (`ip:port`).
    pub addresses: Vec<SocketAddr>,
    /// QUIC port.
    pub quic_port: u16,
    /// Capability tags.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Collections replicated (empty: all).
    #[serde(default)]
    pub collections: Vec<String>,
    /// Meshlite version.
    pub version: String,
    /// When it was sent, RFC 3339 UTC.
    pub ts: String,
}

impl Announcement {
    /// This node's announcement as of now.
    pub fn of(local: &LocalNode) -> Self {
        Self {
            node_id: local.node_id.clone(),
            name: local.name.clone(),
            cluster: local.cluster.clone(),
            addresses: local.advertised_addresses(),
            quic_port: local.quic_port,
            capabilities: local.capabilities.clone(),
            collections: local.collections.clone(),
            version: local.version.clone(),
            ts: rfc3339_now(),
        }
    }

    fn sighting(self) -> Sighting {
        Sighting::node(Source::Nats, self.node_id)
            .with_addresses(self.addresses)
            .with_name(self.name)
            .with_collections(self.collections)
            .with_version(self.version)
    }
}

/// Why a received announcement was not used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnnouncementError {
    /// Larger than [`MAX_ANNOUNCEMENT_BYTES`].
    #[error("announcement of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// Not a valid announcement.
    #[error("malformed announcement: {0}")]
    Malformed(#[from] serde_json::Error),
    /// No node id.
    #[error("announcement without node id")]
    NoNodeId,
}

/// What to do with a received announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Another node of our cluster: record it.
    Peer(Sighting),
    /// Our own announcement, echoed back.
    Own,
    /// A node of another cluster.
    OtherCluster(String),
}

/// Decodes `payload` relative to `local`.
pub fn receive(payload: &[u8], local: &LocalNode) -> Result<Received, AnnouncementError> {
    if payload.len() > MAX_ANNOUNCEMENT_BYTES {
        return Err(AnnouncementError::TooLarge(payload.len()));
    }
    let a: Announcement = serde_json::from_slice(payload)?;
    if a.node_id.is_empty() {
        return Err(AnnouncementError::NoNodeId);
    }
    Ok(if a.node_id == local.node_id {
        Received::Own
    } else if a.cluster != local.cluster {
        Received::OtherCluster(a.cluster)
    } else {
        Received::Peer(a.sighting())
    })
}

/// Error of the announcement tasks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnnounceError {
    /// Subscribing failed (the client was closed).
    #[error("subscribing to {ANNOUNCE_SUBJECT}: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    /// The subscription ended while the node was running.
    #[error("subscription to {ANNOUNCE_SUBJECT} ended")]
    SubscriptionEnded,
}

/// Publishes this node's announcement now and every `every` until `cancel`. Publishing while
/// disconnected is buffered by the client; failures are logged and retried next period.
pub async fn run_announcer(
    client: async_nats::Client,
    local: LocalNode,
    every: Duration,
    cancel: CancellationToken,
) -> Result<(), AnnounceError> {
    let mut ticker = Ticker::now_and_every(every, cancel);
    while ticker.tick().await {
        let body = match serde_json::to_vec(&Announcement::of(&local)) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode announcement");
                continue;
            }
        };
        if let Err(e) = client.publish(ANNOUNCE_SUBJECT, body.into()).await {
            tracing::warn!(error = %e, "announcement not published");
        }
    }
    Ok(())
}

/// Feeds other nodes' announcements into `table` until `cancel`.
pub async fn run_listener(
    client: async_nats::Client,
    local: LocalNode,
    table: PeerTable,
    cancel: CancellationToken,
) -> Result<(), AnnounceError> {
    let mut sub = client.subscribe(ANNOUNCE_SUBJECT).await?;
    loop {
        let msg = tokio::select! {
            biased;
            () = cancel.cancelled() => return Ok(()),
            msg = sub.next() => msg.ok_or(AnnounceError::SubscriptionEnded)?,
        };
        match receive(&msg.payload, &local) {
            Ok(Received::Peer(sighting)) => table.observe(sighting),
            Ok(Received::Own) => {}
            Ok(Received::OtherCluster(cluster)) => {
                tracing::debug!(%cluster, "ignoring announcement of another cluster");
            }
            Err(e) => tracing::warn!(error = %e, "dropped announcement"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> LocalNode {
        LocalNode {
            node_id: "aa".into(),
            name: "me".into(),
            cluster: "c1".into(),
            quic_port: 7400,
            version: "0.1.0".into(),
            addresses: vec!["10.0.0.1:7400".parse().unwrap()],
            collections: vec!["jobs".into()],
            capabilities: vec!["gpu".into()],
        }
    }

    #[test]
    fn announcement_round_trips_and_classifies() {
        let me = local();
        let own = serde_json::to_vec(&Announcement::of(&me)).unwrap();
        assert_eq!(receive(&own, &me).unwrap(), Received::Own);

        let mut other = Announcement::of(&me);
        other.node_id = "bb".into();
        let json = serde_json::to_value(&other).unwrap();
        assert_eq!(json["addresses"][0], "10.0.0.1:7400");
        assert_eq!(json["capabilities"][0], "gpu");
        assert!(json["ts"].as_str().unwrap().ends_with('Z'));
        let Received::Peer(s) = receive(json.to_string().as_bytes(), &me).unwrap() else {
            panic!("expected a peer")
        };
        assert_eq!(s.key, crate::discovery::PeerKey::Node("bb".into()));
        assert_eq!(s.collections, Some(vec!["jobs".to_owned()]));

        other.cluster = "c2".into();
        let foreign = serde_json::to_vec(&other).unwrap();
        assert_eq!(
            receive(&foreign, &me).unwrap(),
            Received::OtherCluster("c2".into())
        );
    }

    #[test]
    fn malformed_and_oversized_are_errors() {
        let me = local();
        assert!(matches!(
            receive(b"{", &me),
            Err(AnnouncementError::Malformed(_))
        ));
        assert!(matches!(
            receive(b"{\"node_id\":1}", &me),
            Err(AnnouncementError::Malformed(_))
        ));
        let big = vec![b' '; MAX_ANNOUNCEMENT_BYTES + 1];
        assert!(matches!(
            receive(&big, &me),
            Err(AnnouncementError::TooLarge(_))
        ));
    }
}
