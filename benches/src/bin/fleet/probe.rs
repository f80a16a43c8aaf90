//! What the bench reads from outside the nodes: `/metrics` (Prometheus text) over HTTP, and CPU
//! time and memory from `/proc/<pid>`.

use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use meshlite_node::httpc;

/// One scrape of a node's `/metrics`.
#[derive(Debug, Clone)]
pub struct Metrics(String);

impl Metrics {
    /// Scrapes `GET /metrics`.
    pub async fn scrape(addr: SocketAddr) -> anyhow::Result<Metrics> {
        let (status, body) = httpc::get(addr, "/metrics").await?;
        if !status.is_success() {
            bail!("GET /metrics on {addr}: {status}");
        }
        Ok(Metrics(String::from_utf8_lossy(&body).into_owned()))
    }

    /// Sum of the samples of `name` whose labels include every `(key, value)` of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(parse_sample)
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.contains(&format!("{k}=\"{v}\"")))
            })
            .map(|s| s.value)
            .sum()
    }
}

struct Sample<'a> {
    name: &'a str,
    labels: &'a str,
    value: f64,
}

/// `name{labels} value` or `name value` (label values never contain a space here: node ids,
/// fixed words).
fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, rest.strip_suffix('}')?),
        None => (series, ""),
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// One QUIC connection of a node, from `GET /peers`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Connection {
    /// The peer's node id.
    pub node_id: String,
    /// When the connection was established (kept opaque: only compared).
    pub connected_since: serde_json::Value,
    /// UDP payload bytes sent on this connection.
    pub bytes_sent: u64,
    /// Push frames received on it (0 from a daemon that does not report it).
    #[serde(default)]
    pub pushes_received: u64,
    /// Transactions in those frames (more than the frames when the sender merged pushes).
    #[serde(default)]
    pub push_txns_received: u64,
}

impl Connection {
    /// Identifies the connection (a replaced connection to the same peer has another key).
    pub fn key(&self) -> String {
        format!("{}@{}", self.node_id, self.connected_since)
    }
}

#[derive(Debug, serde::Deserialize)]
struct Peers {
    connections: Vec<Connection>,
}

/// A node's live connections (`GET /peers`), sorted by key.
pub async fn connections(addr: SocketAddr) -> anyhow::Result<Vec<Connection>> {
    let (status, body) = httpc::get(addr, "/peers").await?;
    if !status.is_success() {
        bail!("GET /peers on {addr}: {status}");
    }
    let mut peers: Peers = serde_json::from_slice(&body).context("parsing /peers")?;
    peers.connections.sort_by_key(Connection::key);
    Ok(peers.connections)
}

/// Bytes sent between two snapshots of every node's connections, and how many connections
/// changed (a connection that appeared counts whole; the bytes of one that went are lost).
pub fn bytes_sent_between(before: &[Vec<Connection>], after: &[Vec<Connection>]) -> (u64, usize) {
    let mut bytes = 0;
    let mut churn = 0;
    for (b, a) in before.iter().zip(after) {
        for conn in a {
            match b.iter().find(|c| c.key() == conn.key()) {
                Some(old) => bytes += conn.bytes_sent.saturating_sub(old.bytes_sent),
                None => {
                    bytes += conn.bytes_sent;
                    churn += 1;
                }
            }
        }
        churn += b
            .iter()
            .filter(|c| !a.iter().any(|n| n.key() == c.key()))
            .count();
    }
    (bytes, churn)
}

/// Push frames and the transactions in them received between two snapshots (connections
/// present in both), over every node.
pub fn pushes_received_between(
    before: &[Vec<Connection>],
    after: &[Vec<Connection>],
) -> (u64, u64) {
    let mut frames = 0;
    let mut txns = 0;
    for (b, a) in before.iter().zip(after) {
        for conn in a {
            if let Some(old) = b.iter().find(|c| c.key() == conn.key()) {
                frames += conn.pushes_received.saturating_sub(old.pushes_received);
                txns += conn
                    .push_txns_received
                    .saturating_sub(old.push_txns_received);
            }
        }
    }
    (frames, txns)
}

/// Sums one metric over several scrapes.
pub fn fleet_sum(scrapes: &[Metrics], name: &str, labels: &[(&str, &str)]) -> f64 {
    scrapes.iter().map(|m| m.sum(name, labels)).sum()
}

/// User plus system CPU time of a process, in clock ticks (`/proc/<pid>/stat` fields 14, 15).
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; fields after it are plain numbers.
    let (_, rest) = stat.rsplit_once(')').context("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<u64> {
        Ok(fields.get(i).context("short /proc stat")?.parse()?)
    };
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    Ok(field(11)? + field(12)?)
}

/// Busy CPU time of the whole machine, all cores, in clock ticks (`/proc/stat`: user, nice,
/// system, irq, softirq, steal).
pub fn machine_busy_ticks() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let get = |i: usize| fields.get(i).copied().unwrap_or(0);
    Ok(get(0) + get(1) + get(2) + get(5) + get(6) + get(7))
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 when unavailable: Linux's USER_HZ).
pub fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// Resident and peak resident memory of a process in KiB (`VmRSS`, `VmHWM`).
pub fn memory_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let kib = line
            .trim_start_matches(':')
            .split_whitespace()
            .next()
            .unwrap_or("");
        Ok(kib.parse()?)
    };
    Ok((field("VmRSS")?, field("VmHWM")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_samples_by_name_and_labels() {
        let m = Metrics(
            "# HELP x y\nmeshlite_connections 19\n\
             meshlite_peer_bytes_total{peer=\"a\",direction=\"sent\"} 100\n\
             meshlite_peer_bytes_total{peer=\"a\",direction=\"received\"} 7\n\
             meshlite_peer_bytes_total{peer=\"b\",direction=\"sent\"} 23\n"
                .into(),
        );
        assert_eq!(m.sum("meshlite_connections", &[]), 19.0);
        assert_eq!(
            m.sum("meshlite_peer_bytes_total", &[("direction", "sent")]),
            123.0
        );
        assert_eq!(m.sum("meshlite_peer_bytes_total", &[]), 130.0);
        assert_eq!(m.sum("meshlite_peer_bytes", &[]), 0.0);
    }

    #[test]
    fn bytes_survive_connection_replacement() {
        let conn = |peer: &str, since: u64, bytes| Connection {
            node_id: peer.into(),
            connected_since: since.into(),
            bytes_sent: bytes,
            pushes_received: bytes / 10,
            push_txns_received: bytes / 5,
        };
        let before = vec![vec![conn("a", 1, 100), conn("b", 1, 50)]];
        let after = vec![vec![conn("a", 1, 160), conn("b", 2, 30)]];
        assert_eq!(bytes_sent_between(&before, &after), (60 + 30, 2));
        assert_eq!(bytes_sent_between(&before, &before), (0, 0));
        // Pushes count on connections present in both snapshots only ("a": 16-10, 32-20).
        assert_eq!(pushes_received_between(&before, &after), (6, 12));
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(cpu_ticks(pid).is_ok());
        assert!(machine_busy_ticks().unwrap() > 0);
        let (rss, hwm) = memory_kib(pid).unwrap();
        assert!(rss > 0 && hwm >= rss);
    }
}
