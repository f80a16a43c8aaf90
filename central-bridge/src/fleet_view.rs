//! `<state>.nodes`: the fleet as the bridge sees it.
//!
//! Every sync interval the actor takes the transport's connected peers (node id, certificate
//! name, address, and the replica each serves, learned in sync sessions) and the peer table
//! (nodes announced by discovery or NATS, with their version and advertised addresses), and
//! upserts one row per node on a Postgres session of its own (reopened after an error). The
//! replica column is what lets seed 002's `sync_status` name a node rather than an origin:
//! `<state>.service_name(origin)` (migration 5) reads it.
//!
//! [`node_rows`] is the pure merge of the two views; [`run`] is the loop around it.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshlite_core::ReplicaId;
use meshlite_mesh::discovery::{PeerRow, PeerTable};
use meshlite_mesh::net::events::PeerInfo;
use meshlite_mesh::net::handle::NetHandle;
use tokio_util::sync::CancellationToken;

use crate::pg::{Ident, PgConn, PgTarget};

/// One node as the bridge sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    /// Fleet node id (hex).
    pub node_id: String,
    /// Its certificate or announced name.
    pub name: Option<String>,
    /// The replica it serves, once a sync session told.
    pub replica: Option<ReplicaId>,
    /// Where it is connected from, or what it announced (`host:port`, sorted).
    pub addresses: Vec<String>,
    /// The Meshlite version it announced.
    pub version: Option<String>,
    /// When it was last heard from.
    pub last_seen: SystemTime,
}

/// The nodes in `peers` (connected) and `table` (announced), one row per node id: a connected
/// peer's name, replica and address win, the table adds version and announced addresses.
pub fn node_rows(peers: &[PeerInfo], table: &[PeerRow]) -> Vec<NodeRow> {
    let mut rows: BTreeMap<String, NodeRow> = BTreeMap::new();
    for p in table {
        let Some(id) = p.node_id else { continue };
        let row = NodeRow {
            node_id: id.to_string(),
            name: p.name.clone(),
            replica: None,
            addresses: p.addresses.iter().map(ToString::to_string).collect(),
            version: p.version.clone(),
            last_seen: UNIX_EPOCH + Duration::from_millis(p.last_seen_unix_ms),
        };
        rows.insert(row.node_id.clone(), row);
    }
    for p in peers {
        let id = p.node_id.to_string();
        let row = rows.entry(id.clone()).or_insert_with(|| NodeRow {
            node_id: id,
            name: None,
            replica: None,
            addresses: Vec::new(),
            version: None,
            last_seen: UNIX_EPOCH,
        });
        if let Some(name) = &p.node_name {
            row.name = Some(name.as_str().to_owned());
        }
        row.replica = p.replica.or(row.replica);
        let addr = p.addr.to_string();
        if !row.addresses.contains(&addr) {
            row.addresses.push(addr);
        }
        row.addresses.sort();
        row.last_seen = row.last_seen.max(p.last_seen);
    }
    rows.into_values().collect()
}

/// Keeps `<state>.nodes` current every `interval` until `cancel`.
pub async fn run(
    net: NetHandle,
    table: PeerTable,
    target: PgTarget,
    state: Ident,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut conn: Option<PgConn> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let rows = node_rows(&net.peers().await, &table.snapshot());
        if rows.is_empty() {
            continue;
        }
        if conn.is_none() {
            conn = match target.connect().await {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::debug!(error = %e, "nodes not recorded: no Postgres session");
                    continue;
                }
            };
        }
        if let Some(c) = conn.as_mut()
            && let Err(e) = record(c, &state, &rows).await
        {
            tracing::debug!(error = %e, "nodes not recorded");
            conn = None;
        }
    }
}

/// Upserts `rows` in one transaction. A replica id moves to the node that now serves it (a
/// data directory moved to another device).
///
/// `last_seen_at` is written on Postgres' clock, as every other timestamp of the bridge's
/// tables: the bridge sends how long ago it heard from the node (two readings of its own clock,
/// so its skew cancels) and Postgres subtracts that from `now()`. A bridge whose clock ran hours
/// ahead once wrote times in the future that `greatest` then kept; `least(now(), …)` heals them.
async fn record(
    conn: &mut PgConn,
    state: &Ident,
    rows: &[NodeRow],
) -> Result<(), tokio_postgres::Error> {
    let tx = conn.client_mut().transaction().await?;
    let free = format!(
        "UPDATE {state}.nodes SET replica_id = NULL, updated_at = now() \
         WHERE replica_id = $1 AND node_id <> $2"
    );
    let upsert = format!(
        "INSERT INTO {state}.nodes AS n (node_id, name, replica_id, last_seen_at, addresses, version) \
         VALUES ($1, $2, $3, now() - make_interval(secs => $4), $5, $6) \
         ON CONFLICT (node_id) DO UPDATE SET name = coalesce(EXCLUDED.name, n.name), \
             replica_id = coalesce(EXCLUDED.replica_id, n.replica_id), \
             last_seen_at = least(now(), greatest(EXCLUDED.last_seen_at, n.last_seen_at)), \
             addresses = EXCLUDED.addresses, version = coalesce(EXCLUDED.version, n.version), \
             updated_at = now()"
    );
    let now = SystemTime::now();
    for row in rows {
        let replica = row.replica.map(|r| r.0.to_vec());
        let ago = now.duration_since(row.last_seen).unwrap_or_default();
        if let Some(r) = &replica {
            tx.execute(&free, &[r, &row.node_id]).await?;
        }
        tx.execute(
            &upsert,
            &[
                &row.node_id,
                &row.name,
                &replica,
                &ago.as_secs_f64(),
                &row.addresses,
                &row.version,
            ],
        )
        .await?;
    }
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshlite_mesh::discovery::PeerKey;
    use meshlite_mesh::fleet::NodeId;
    use meshlite_mesh::net::events::Direction;

    fn node_id(b: u8) -> NodeId {
        format!("{b:02x}").repeat(16).parse().expect("node id")
    }

    #[test]
    fn connected_peers_and_announcements_merge_by_node_id() {
        let seen = UNIX_EPOCH + Duration::from_secs(1_000);
        let peer = PeerInfo {
            node_id: node_id(1),
            node_name: None,
            addr: "127.0.0.1:7001".parse().unwrap(),
            replica: Some(ReplicaId([9; 16])),
            direction: Direction::Outbound,
            connected_since: seen,
            last_seen: seen,
            rtt: Duration::ZERO,
            bytes_sent: 0,
            bytes_received: 0,
            syncs: 1,
            errors: 0,
            pushes_sent: 0,
            pushes_merged: 0,
            pushes_dropped: 0,
            pushes_received: 0,
            push_txns_received: 0,
            queue_depth: 0,
        };
        let announced = |id: NodeId, name: &str| PeerRow {
            key: PeerKey::Node(id),
            node_id: Some(id),
            name: Some(name.into()),
            addresses: vec!["10.0.0.1:6374".parse().unwrap()],
            sources: Vec::new(),
            last_seen_unix_ms: 500_000,
            last_seen_ago_ms: 0,
            rtt_ms: None,
            consecutive_errors: 0,
            last_error: None,
            collections: Vec::new(),
            version: Some("0.1.0".into()),
        };
        let rows = node_rows(
            &[peer],
            &[
                announced(node_id(1), "pi-01"),
                announced(node_id(2), "pi-02"),
            ],
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].name.as_deref(), Some("pi-01"));
        assert_eq!(rows[0].replica, Some(ReplicaId([9; 16])));
        assert_eq!(rows[0].addresses, ["10.0.0.1:6374", "127.0.0.1:7001"]);
        assert_eq!(rows[0].version.as_deref(), Some("0.1.0"));
        assert_eq!(rows[0].last_seen, seen);
        assert_eq!(rows[1].replica, None, "announced, never synced");
    }
}
