//! Log lines about the NATS connection that a user can act on.
//!
//! The client retries forever (every 0.1–2 s) and reports each failed attempt as an event
//! carrying only an error kind (`IO error`). This module turns those events into warnings that
//! name the server URLs and the cause, found by a TCP connect to each server (`Connection refused
//! (os error 111)`, a DNS failure, a timeout) or, when TCP works, the client's error kind (TLS,
//! handshake, authorization). Repeats back off: the 1st, 2nd, 4th, 8th, … consecutive failure
//! is logged, each line saying how many attempts failed so far; a success after failures says
//! so once.

use std::sync::Mutex;
use std::time::Duration;

use async_nats::ServerAddr;

/// Bound on the diagnostic TCP connect to one server.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Consecutive failed connection attempts, and which of them get a log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FailureCount {
    failures: u64,
}

impl FailureCount {
    /// Records a failure; whether it is one to log (the 1st, 2nd, 4th, 8th, …).
    pub fn fail(&mut self) -> bool {
        self.failures += 1;
        self.failures.is_power_of_two()
    }

    /// Records a success; the failures it ends (0 if none).
    pub fn succeed(&mut self) -> u64 {
        std::mem::take(&mut self.failures)
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u64 {
        self.failures
    }
}

/// The connection's log state, shared by the client's event callback.
#[derive(Debug)]
pub struct ConnLog {
    servers: Vec<ServerAddr>,
    shown: String,
    count: Mutex<FailureCount>,
}

impl ConnLog {
    /// For a client connecting to `servers`.
    pub fn new(servers: Vec<ServerAddr>) -> Self {
        let shown = servers.iter().map(display).collect::<Vec<_>>().join(", ");
        Self {
            servers,
            shown,
            count: Mutex::new(FailureCount::default()),
        }
    }

    /// The servers as logged: `nats://host:port`, credentials left out.
    pub fn servers(&self) -> &str {
        &self.shown
    }

    fn with_count<T>(&self, f: impl FnOnce(&mut FailureCount) -> T) -> T {
        let mut guard = self.count.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Handles one client event.
    pub async fn event(&self, event: async_nats::Event) {
        use async_nats::Event;
        match event {
            Event::Connected => {
                let failed = self.with_count(FailureCount::succeed);
                match failed {
                    0 => tracing::info!(servers = %self.shown, "NATS connected"),
                    n => tracing::info!(
                        servers = %self.shown,
                        "NATS connected after {n} failed attempts"
                    ),
                }
            }
            Event::Disconnected => {
                tracing::warn!(servers = %self.shown, "NATS disconnected; reconnecting");
            }
            Event::ClientError(async_nats::ClientError::Other(kind)) => {
                let (log, failures) = self.with_count(|c| (c.fail(), c.failures()));
                if log {
                    let cause = self.cause(&kind).await;
                    tracing::warn!(
                        servers = %self.shown,
                        failures,
                        "cannot connect to NATS at {}: {cause}; retrying (repeats are logged \
                         after 2, 4, 8, … failures)",
                        self.shown
                    );
                }
            }
            other => tracing::warn!(servers = %self.shown, "NATS: {other}"),
        }
    }

    /// Why connecting fails: the TCP error of each server, or the client's error kind when TCP
    /// connects.
    async fn cause(&self, kind: &str) -> String {
        let mut causes = Vec::new();
        for server in &self.servers {
            let target = (server.host().to_owned(), server.port());
            let probe = tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(target));
            let why = match probe.await {
                Ok(Ok(_)) => format!("TCP connects, then the client fails: {kind}"),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no TCP answer within {PROBE_TIMEOUT:?}"),
            };
            causes.push(if self.servers.len() == 1 {
                why
            } else {
                format!("{}: {why}", display(server))
            });
        }
        causes.join("; ")
    }
}

fn display(server: &ServerAddr) -> String {
    format!("{}://{}:{}", server.scheme(), server.host(), server.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_powers_of_two_and_resets() {
        let mut c = FailureCount::default();
        let logged: Vec<u64> = (1..=20).filter(|_| c.fail()).collect();
        assert_eq!(logged, [1, 2, 4, 8, 16]);
        assert_eq!(c.succeed(), 20);
        assert!(c.fail());
    }

    #[test]
    fn servers_are_shown_without_credentials() {
        let addr: ServerAddr = "nats://user:secret@example.test:4333"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let log = ConnLog::new(vec![addr]);
        assert_eq!(log.servers(), "nats://example.test:4333");
    }
}
