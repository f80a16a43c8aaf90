//! Prometheus text exposition of the node's state, rendered at scrape time from snapshots
//! (store status, connected peers, gossip and NATS counters) so no hot path updates a registry.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use meshlite_core::store::{CommitStats, Status};

use crate::cert_expiry::CertExpiry;

use meshlite_mesh::discovery::table::{PeerRow, prometheus_text};
use meshlite_mesh::epidemic::stats::EpidemicStats;
use meshlite_mesh::gossip::GossipStats;
use meshlite_mesh::nats::NatsStats;
use meshlite_mesh::net::apply::ApplyCounts;
use meshlite_mesh::net::events::PeerInfo;

/// Everything one scrape shows.
#[derive(Debug)]
pub struct Snapshot<'a> {
    /// The store's status (None if it could not be read: `meshlite_store_up 0`).
    pub status: Option<&'a Status>,
    /// The store writer's commit counters (group commit).
    pub commits: CommitStats,
    /// Connected QUIC peers.
    pub connections: &'a [PeerInfo],
    /// The discovery peer table.
    pub table: &'a [PeerRow],
    /// Gossip counters (None without a mesh).
    pub gossip: Option<&'a GossipStats>,
    /// Overlay-mode counters (None without a mesh).
    pub epidemic: Option<&'a EpidemicStats>,
    /// NATS counters (None without NATS).
    pub nats: Option<&'a NatsStats>,
    /// The node certificate's expiry (None without a mesh).
    pub cert: Option<&'a CertExpiry>,
    /// Inbound QUIC handshakes ignored by the per-source rate limit (None without a mesh).
    pub handshakes_rate_limited: Option<u64>,
    /// Inbound QUIC Initials answered with a Retry (None without a mesh).
    pub handshakes_retried: Option<u64>,
    /// The push applier's counters: received pushes applied in coalesced batches (None without
    /// a mesh).
    pub push_applies: Option<ApplyCounts>,
}

/// Writes one metric family header.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = write!(out, "{sep}{k}=\"{v}\"");
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Renders the whole exposition.
pub fn render(snap: &Snapshot<'_>) -> String {
    let mut out = String::with_capacity(4096);
    store_metrics(&mut out, snap.status);
    commit_metrics(&mut out, snap.commits);
    connection_metrics(&mut out, snap.connections);
    if let Some(g) = snap.gossip {
        gossip_metrics(&mut out, g);
    }
    if let Some(e) = snap.epidemic {
        out.push_str(&e.prometheus_text());
    }
    if let Some(n) = snap.nats {
        nats_metrics(&mut out, n);
    }
    if let Some(c) = snap.cert {
        cert_metrics(&mut out, c);
    }
    if let Some(n) = snap.handshakes_rate_limited {
        family(
            &mut out,
            "meshlite_quic_handshakes_rate_limited_total",
            "counter",
            "Inbound QUIC handshakes ignored by the per-source rate limit.",
        );
        sample(
            &mut out,
            "meshlite_quic_handshakes_rate_limited_total",
            &[],
            n,
        );
    }
    if let Some(n) = snap.handshakes_retried {
        let name = "meshlite_quic_retries_total";
        family(
            &mut out,
            name,
            "counter",
            "Inbound QUIC Initials answered with a Retry (address validation under handshake pressure).",
        );
        sample(&mut out, name, &[], n);
    }
    if let Some(a) = snap.push_applies {
        push_apply_metrics(&mut out, a);
    }
    out.push_str(&prometheus_text(snap.table));
    out
}

/// The push applier's batches, the push reads they held and their transactions: the quotients
/// say how much coalescing happened (see `meshlite_mesh::net::apply`).
fn push_apply_metrics(out: &mut String, a: ApplyCounts) {
    for (name, help, value) in [
        (
            "meshlite_push_apply_batches_total",
            "Batches of received pushes applied (each one store call and one SQLite transaction).",
            a.batches,
        ),
        (
            "meshlite_push_apply_reads_total",
            "Reads of push streams handed to the applier (each one or more Push frames).",
            a.jobs,
        ),
        (
            "meshlite_push_apply_txns_total",
            "Transactions handed to the store by the applier (duplicates within a batch dropped).",
            a.txns,
        ),
    ] {
        family(out, name, "counter", help);
        sample(out, name, &[], value);
    }
}

fn cert_metrics(out: &mut String, cert: &CertExpiry) {
    family(
        out,
        "meshlite_cert_expiry_seconds",
        "gauge",
        "Seconds until the node certificate expires (negative once expired).",
    );
    let left = cert.seconds_left(std::time::SystemTime::now());
    sample(out, "meshlite_cert_expiry_seconds", &[], left);
}

fn store_metrics(out: &mut String, status: Option<&Status>) {
    family(
        out,
        "meshlite_store_up",
        "gauge",
        "1 when the store answered this scrape.",
    );
    sample(out, "meshlite_store_up", &[], u8::from(status.is_some()));
    let Some(s) = status else { return };
    family(
        out,
        "meshlite_store_records",
        "gauge",
        "Materialized records per collection and state.",
    );
    for c in &s.collections {
        sample(
            out,
            "meshlite_store_records",
            &[("collection", &c.name), ("state", "live")],
            c.live,
        );
        sample(
            out,
            "meshlite_store_records",
            &[("collection", &c.name), ("state", "deleted")],
            c.deleted,
        );
    }
    family(
        out,
        "meshlite_store_txns_held",
        "gauge",
        "Transactions held (all origins).",
    );
    sample(out, "meshlite_store_txns_held", &[], s.txn_count);
    family(
        out,
        "meshlite_store_txns_stored",
        "gauge",
        "Transactions stored for relaying.",
    );
    sample(out, "meshlite_store_txns_stored", &[], s.stored_txns);
    family(
        out,
        "meshlite_store_txns_parked",
        "gauge",
        "Transactions waiting for dependencies.",
    );
    sample(out, "meshlite_store_txns_parked", &[], s.parked);
    family(
        out,
        "meshlite_store_db_bytes",
        "gauge",
        "Database file size in bytes.",
    );
    sample(out, "meshlite_store_db_bytes", &[], s.db_bytes);
    family(
        out,
        "meshlite_store_origins",
        "gauge",
        "Origins (replicas) whose changes are held.",
    );
    sample(out, "meshlite_store_origins", &[], s.origins.len());
    family(
        out,
        "meshlite_peer_sync_lag_txns",
        "gauge",
        "Transactions a peer replica had not acknowledged at its last sync.",
    );
    for p in &s.peers {
        sample(
            out,
            "meshlite_peer_sync_lag_txns",
            &[("replica", &p.replica.to_hex())],
            p.missing,
        );
    }
}

/// Commit groups and the commands they held: their quotient is how many writes shared a commit.
fn commit_metrics(out: &mut String, c: CommitStats) {
    let groups = "meshlite_store_commit_groups_total";
    family(
        out,
        groups,
        "counter",
        "SQLite transactions the store's writer committed (each a group of queued commands).",
    );
    sample(out, groups, &[], c.groups);
    let commands = "meshlite_store_commands_committed_total";
    family(
        out,
        commands,
        "counter",
        "Writer commands (local transactions, remote applies, acknowledgements) in committed groups.",
    );
    sample(out, commands, &[], c.commands);
}

fn connection_metrics(out: &mut String, peers: &[PeerInfo]) {
    family(
        out,
        "meshlite_connections",
        "gauge",
        "Connected QUIC peers.",
    );
    sample(out, "meshlite_connections", &[], peers.len());
    family(
        out,
        "meshlite_peer_push_queue_depth",
        "gauge",
        "Push frames queued for a peer.",
    );
    for p in peers {
        sample(
            out,
            "meshlite_peer_push_queue_depth",
            &[("peer", &p.node_id.to_string())],
            p.queue_depth,
        );
    }
    family(
        out,
        "meshlite_peer_pushes_dropped_total",
        "counter",
        "Pushes dropped because a peer's queue was full.",
    );
    for p in peers {
        sample(
            out,
            "meshlite_peer_pushes_dropped_total",
            &[("peer", &p.node_id.to_string())],
            p.pushes_dropped,
        );
    }
    family(
        out,
        "meshlite_peer_bytes_total",
        "counter",
        "UDP payload bytes per peer and direction.",
    );
    for p in peers {
        let id = p.node_id.to_string();
        sample(
            out,
            "meshlite_peer_bytes_total",
            &[("peer", &id), ("direction", "sent")],
            p.bytes_sent,
        );
        sample(
            out,
            "meshlite_peer_bytes_total",
            &[("peer", &id), ("direction", "received")],
            p.bytes_received,
        );
    }
}

fn gossip_metrics(out: &mut String, g: &GossipStats) {
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    family(
        out,
        "meshlite_changes_sent_total",
        "counter",
        "Transactions sent by push, by kind.",
    );
    sample(
        out,
        "meshlite_changes_sent_total",
        &[("kind", "local")],
        get(&g.txns_pushed),
    );
    sample(
        out,
        "meshlite_changes_sent_total",
        &[("kind", "relayed")],
        get(&g.txns_relayed),
    );
    family(
        out,
        "meshlite_changes_received_total",
        "counter",
        "Transactions received that were new here, by path.",
    );
    sample(
        out,
        "meshlite_changes_received_total",
        &[("path", "push")],
        get(&g.txns_push_received),
    );
    sample(
        out,
        "meshlite_changes_received_total",
        &[("path", "anti_entropy")],
        get(&g.txns_pulled),
    );
    family(
        out,
        "meshlite_sync_rounds_total",
        "counter",
        "Anti-entropy rounds by result.",
    );
    sample(
        out,
        "meshlite_sync_rounds_total",
        &[("result", "ok")],
        get(&g.syncs_ok),
    );
    sample(
        out,
        "meshlite_sync_rounds_total",
        &[("result", "failed")],
        get(&g.syncs_failed),
    );
    family(
        out,
        "meshlite_store_events_lagged_total",
        "counter",
        "Store events the gossip actor missed (recovered by anti-entropy).",
    );
    sample(
        out,
        "meshlite_store_events_lagged_total",
        &[],
        get(&g.events_lagged),
    );
}

fn nats_metrics(out: &mut String, n: &NatsStats) {
    family(
        out,
        "meshlite_nats_events_total",
        "counter",
        "Change events published on NATS, and lost.",
    );
    sample(
        out,
        "meshlite_nats_events_total",
        &[("result", "published")],
        n.events.published(),
    );
    sample(
        out,
        "meshlite_nats_events_total",
        &[("result", "lost")],
        n.events.lost(),
    );
    family(
        out,
        "meshlite_nats_relay_published_total",
        "counter",
        "Local transactions acknowledged by the JetStream relay.",
    );
    sample(
        out,
        "meshlite_nats_relay_published_total",
        &[],
        n.relay.published(),
    );
    family(
        out,
        "meshlite_nats_relay_applied_total",
        "counter",
        "Transactions received from the JetStream relay and committed.",
    );
    sample(
        out,
        "meshlite_nats_relay_applied_total",
        &[],
        n.relay.applied(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_families_typed() {
        let mut out = String::new();
        family(&mut out, "m", "gauge", "help");
        sample(&mut out, "m", &[("a", "x\"y\\z\nw")], 3);
        assert_eq!(
            out,
            "# HELP m help\n# TYPE m gauge\nm{a=\"x\\\"y\\\\z\\nw\"} 3\n"
        );
    }

    #[test]
    fn a_dead_store_is_visible() {
        let text = render(&Snapshot {
            status: None,
            commits: CommitStats::default(),
            connections: &[],
            table: &[],
            gossip: None,
            epidemic: None,
            nats: None,
            cert: None,
            handshakes_rate_limited: None,
            handshakes_retried: None,
            push_applies: None,
        });
        assert!(text.contains("meshlite_store_up 0"));
        assert!(!text.contains("meshlite_push_apply"));
        assert!(text.contains("meshlite_store_commit_groups_total 0"));
        assert!(text.contains("meshlite_connections 0"));
    }
}
