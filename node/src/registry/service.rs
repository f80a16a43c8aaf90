//! The registry's data, without I/O: a registration as a client sends it (validated whole before
//! anything is written), the record stored for it, and the entry the API shows, whose health is
//! computed from the heartbeat and a `now` passed in.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Longest service name (names are also path segments: `/api/services/{name}`).
pub const MAX_NAME_LEN: usize = 128;
/// Most capabilities one service may list.
pub const MAX_CAPABILITIES: usize = 64;
/// Longest capability, host, URL or version string.
pub const MAX_TEXT_LEN: usize = 1024;

/// Why a registration or a discovery request was refused (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidRequest {
    /// The body is not JSON.
    #[error("the body is not valid JSON: {0}")]
    Json(String),
    /// The JSON does not have the registration's (or the discovery's) shape.
    #[error("{0}")]
    Shape(String),
    /// A service name outside `[A-Za-z0-9._-]{1,128}`.
    #[error("invalid service name {0:?}: use 1 to {MAX_NAME_LEN} letters, digits, '.', '_' or '-'")]
    Name(String),
    /// A field's value is out of range.
    #[error("invalid {field}: {reason}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// How a service runs (the seed's `SERVICE_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceMode {
    /// Integrated with the main host's shared services.
    Docked,
    /// Running independently on an edge device.
    Standalone,
}

/// A registration (`POST /api/services`), in the seed's shape. Unknown fields are refused, so a
/// misspelt field is an error rather than silently dropped.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Unique name; registering it again updates the entry and its heartbeat.
    pub name: String,
    /// Where the service listens (an IP or host name).
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Docked or standalone (optional).
    #[serde(default)]
    pub mode: Option<ServiceMode>,
    /// What it can do; discovery matches on these.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The service's own health endpoint (stored and shown; the registry does not probe it).
    #[serde(default)]
    pub health_url: Option<String>,
    /// Free-form version string.
    #[serde(default)]
    pub version: Option<String>,
    /// Any further JSON object the service wants to publish.
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
}

impl Registration {
    /// Parses and validates a request body.
    pub fn parse(body: &[u8]) -> Result<Registration, InvalidRequest> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| InvalidRequest::Json(e.to_string()))?;
        let reg: Registration = serde_json::from_value(value)
            .map_err(|e| InvalidRequest::Shape(format!("invalid registration: {e}")))?;
        reg.validate()?;
        Ok(reg)
    }

    fn validate(&self) -> Result<(), InvalidRequest> {
        check_name(&self.name)?;
        check_text("host", &self.host)?;
        if self.port == 0 {
            return Err(field("port", "must be between 1 and 65535"));
        }
        if self.capabilities.len() > MAX_CAPABILITIES {
            return Err(field(
                "capabilities",
                format!("at most {MAX_CAPABILITIES} entries"),
            ));
        }
        for c in &self.capabilities {
            check_text("capabilities", c)?;
        }
        for (name, v) in [("health_url", &self.health_url), ("version", &self.version)] {
            if let Some(v) = v {
                check_text(name, v)?;
            }
        }
        Ok(())
    }

    /// The stored record: every field written (absent optional ones as null, so a
    /// re-registration replaces the previous entry whole), stamped with the heartbeat.
    pub fn to_record(&self, stamp: &Stamp) -> Map<String, Value> {
        let mut capabilities = self.capabilities.clone();
        capabilities.sort();
        capabilities.dedup();
        let record = json!({
            "name": self.name,
            "host": self.host,
            "port": self.port,
            "mode": self.mode,
            "capabilities": capabilities,
            "health_url": self.health_url,
            "version": self.version,
            "metadata": self.metadata,
            "last_heartbeat": stamp.rfc3339,
            "last_heartbeat_ms": stamp.ms,
            "registered_by": stamp.node,
        });
        match record {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }
}

/// When and where a registration was received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// ms since the Unix epoch.
    pub ms: u64,
    /// The same instant as RFC 3339 text.
    pub rfc3339: String,
    /// The node that received it.
    pub node: String,
}

impl Stamp {
    /// A stamp for `ms` since the Unix epoch.
    pub fn at(ms: u64, node: &str) -> Stamp {
        Stamp {
            ms,
            rfc3339: rfc3339(ms),
            node: node.to_owned(),
        }
    }
}

/// `ms` since the Unix epoch as RFC 3339 (UTC, milliseconds).
pub fn rfc3339(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn field(field: &'static str, reason: impl Into<String>) -> InvalidRequest {
    InvalidRequest::Field {
        field,
        reason: reason.into(),
    }
}

/// Checks a service name (also used for the `{name}` path segment).
pub fn check_name(name: &str) -> Result<(), InvalidRequest> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    match ok {
        true => Ok(()),
        false => Err(InvalidRequest::Name(name.chars().take(200).collect())),
    }
}

fn check_text(name: &'static str, v: &str) -> Result<(), InvalidRequest> {
    if v.trim().is_empty() {
        return Err(field(name, "must not be empty"));
    }
    if v.len() > MAX_TEXT_LEN {
        return Err(field(name, format!("longer than {MAX_TEXT_LEN} bytes")));
    }
    if v.chars().any(char::is_control) {
        return Err(field(name, "contains control characters"));
    }
    Ok(())
}

/// A service's health as the API reports it (`health_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Its last heartbeat is at most the TTL old.
    Healthy,
    /// Its last heartbeat is older than the TTL (or unreadable).
    Unhealthy,
}

/// The health of a service whose last heartbeat was at `heartbeat_ms`, at `now_ms`. A
/// heartbeat from the future (a peer's clock ahead of ours) counts as fresh.
pub fn health(heartbeat_ms: Option<u64>, now_ms: u64, ttl_ms: u64) -> Health {
    match heartbeat_ms {
        Some(at) if now_ms.saturating_sub(at) <= ttl_ms => Health::Healthy,
        _ => Health::Unhealthy,
    }
}

/// The entry the API shows for a stored record: the record without the store's key (when it is
/// not `name`), plus `health_status` and `heartbeat_age_seconds`.
pub fn entry(mut record: Map<String, Value>, key: &str, now_ms: u64, ttl_ms: u64) -> Value {
    if key != "name" {
        record.remove(key);
    }
    let beat = record.get("last_heartbeat_ms").and_then(Value::as_u64);
    let status = health(beat, now_ms, ttl_ms);
    record.insert("health_status".into(), json!(status));
    let age = beat.map(|b| now_ms.saturating_sub(b) as f64 / 1000.0);
    record.insert("heartbeat_age_seconds".into(), json!(age));
    Value::Object(record)
}

/// Whether an entry is healthy (as [`entry`] computed it).
pub fn is_healthy(entry: &Value) -> bool {
    entry["health_status"] == json!(Health::Healthy)
}

/// How discovery combines the requested capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Match {
    /// A service must have every requested capability (default).
    #[default]
    All,
    /// One of them suffices.
    Any,
}

/// A discovery request (`POST /api/discover`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discover {
    /// The capabilities looked for; empty matches every service.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// `all` (default) or `any`.
    #[serde(default, rename = "match")]
    pub mode: Match,
    /// Also return services whose heartbeat expired (default false).
    #[serde(default)]
    pub include_unhealthy: bool,
}

impl Discover {
    /// Parses a request body; an empty body means "every healthy service".
    pub fn parse(body: &[u8]) -> Result<Discover, InvalidRequest> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Discover {
                capabilities: Vec::new(),
                mode: Match::All,
                include_unhealthy: false,
            });
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|e| InvalidRequest::Json(e.to_string()))?;
        serde_json::from_value(value)
            .map_err(|e| InvalidRequest::Shape(format!("invalid discovery request: {e}")))
    }

    /// Whether `entry` (as [`entry`] shows it) answers this request.
    pub fn matches(&self, entry: &Value) -> bool {
        if !self.include_unhealthy && !is_healthy(entry) {
            return false;
        }
        let has = |c: &String| {
            entry["capabilities"]
                .as_array()
                .is_some_and(|caps| caps.iter().any(|v| v.as_str() == Some(c)))
        };
        match self.mode {
            Match::All => self.capabilities.iter().all(has),
            Match::Any => self.capabilities.is_empty() || self.capabilities.iter().any(has),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"{
        "name": "my-service", "host": "100.100.100.5", "port": 8080, "mode": "standalone",
        "capabilities": ["rag", "search"], "health_url": "http://100.100.100.5:8080/healthz"
    }"#;

    #[test]
    fn the_seed_registration_parses() {
        let r = Registration::parse(SEED.as_bytes()).unwrap();
        assert_eq!(r.name, "my-service");
        assert_eq!(r.port, 8080);
        assert_eq!(r.mode, Some(ServiceMode::Standalone));
        let rec = r.to_record(&Stamp::at(1_700_000_000_123, "n1"));
        assert_eq!(rec["last_heartbeat"], "2023-11-14T22:13:20.123Z");
        assert_eq!(rec["capabilities"], json!(["rag", "search"]));
        assert_eq!(rec["metadata"], Value::Null);
    }

    #[test]
    fn bad_registrations_say_why() {
        let cases = [
            ("{", "not valid JSON"),
            ("[]", "invalid registration"),
            (r#"{"name":"a","host":"h"}"#, "missing field `port`"),
            (
                r#"{"name":"a","host":"h","port":70000}"#,
                "invalid registration",
            ),
            (r#"{"name":"a","host":"h","port":0}"#, "invalid port"),
            (
                r#"{"name":"a b","host":"h","port":1}"#,
                "invalid service name",
            ),
            (r#"{"name":"a","host":" ","port":1}"#, "invalid host"),
            (
                r#"{"name":"a","host":"h","port":1,"mode":"x"}"#,
                "unknown variant",
            ),
            (
                r#"{"name":"a","host":"h","port":1,"prot":1}"#,
                "unknown field `prot`",
            ),
        ];
        for (body, want) in cases {
            let e = Registration::parse(body.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn health_follows_the_ttl() {
        assert_eq!(health(Some(1_000), 1_000, 500), Health::Healthy);
        assert_eq!(health(Some(1_000), 1_500, 500), Health::Healthy);
        assert_eq!(health(Some(1_000), 1_501, 500), Health::Unhealthy);
        assert_eq!(health(Some(9_000), 1_000, 500), Health::Healthy);
        assert_eq!(health(None, 1_000, 500), Health::Unhealthy);
    }

    #[test]
    fn entries_hide_the_key_and_show_health() {
        let r = Registration::parse(SEED.as_bytes()).unwrap();
        let mut rec = r.to_record(&Stamp::at(10_000, "n1"));
        rec.insert("id".into(), json!("my-service"));
        let e = entry(rec, "id", 12_000, 60_000);
        assert!(e.get("id").is_none());
        assert_eq!(e["health_status"], "healthy");
        assert_eq!(e["heartbeat_age_seconds"], 2.0);
    }

    #[test]
    fn discovery_matches_capabilities() {
        let r = Registration::parse(SEED.as_bytes()).unwrap();
        let live = entry(r.to_record(&Stamp::at(0, "n")), "id", 0, 1);
        let dead = entry(r.to_record(&Stamp::at(0, "n")), "id", 10, 1);
        let d = |b: &str| Discover::parse(b.as_bytes()).unwrap();
        assert!(d(r#"{"capabilities":["rag","search"]}"#).matches(&live));
        assert!(!d(r#"{"capabilities":["rag","clip"]}"#).matches(&live));
        assert!(d(r#"{"capabilities":["rag","clip"],"match":"any"}"#).matches(&live));
        assert!(d("").matches(&live));
        assert!(!d(r#"{"capabilities":["rag"]}"#).matches(&dead));
        assert!(d(r#"{"capabilities":["rag"],"include_unhealthy":true}"#).matches(&dead));
        assert!(Discover::parse(b"{\"capabilities\": 3}").is_err());
    }
}
