//! A subscriber to one node's `GET /v1/changes` stream that timestamps, per transaction, the
//! moment its change event arrived.
//!
//! The request goes over a plain hyper HTTP/1.1 connection; the body's chunks are fed to
//! [`EventParser`], a minimal server-sent-events parser (`event:` and `data:` fields, blank line
//! ends an event, `:` comments such as keep-alives ignored). [`Subscription::open`] returns only
//! after the response headers arrived, i.e. after the node subscribed to its store: a write made
//! after that is guaranteed to show up on the stream (or as a `lagged` event).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{Context as _, bail};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::{Bytes, Incoming};
use tokio::sync::watch;

/// One parsed server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field (`message` when absent).
    pub event: String,
    /// The `data:` lines joined by `\n`.
    pub data: String,
}

/// Incremental server-sent-events parser.
#[derive(Debug, Default)]
pub struct EventParser {
    line: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
}

impl EventParser {
    /// Feeds bytes; returns the events they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            if let Some(event) = self.on_line(&String::from_utf8_lossy(line)) {
                out.push(event);
            }
        }
        out
    }

    fn on_line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let data = self.data.take();
            let event = self.event.take().unwrap_or_else(|| "message".to_owned());
            return data.map(|data| SseEvent { event, data });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
        None
    }
}

/// What one node's stream showed.
#[derive(Debug, Default)]
pub struct Seen {
    /// First arrival of each record (its id): the write that created it is visible there.
    pub first: HashMap<String, Instant>,
    /// Changes the node reported as missed (`lagged` events).
    pub lagged: u64,
    /// Why the stream ended early, if it did.
    pub error: Option<String>,
}

/// The field of a `change` event the bench needs: one event per changed record. (Its `txns`
/// name every transaction of the commit, which under coalescing includes other collections'.)
#[derive(Debug, serde::Deserialize)]
struct Change {
    id: String,
}

/// An open change stream.
#[derive(Debug)]
pub struct Subscription {
    body: Incoming,
    driver: tokio::task::JoinHandle<()>,
}

impl Subscription {
    /// Opens `GET /v1/changes?collection=...` and waits for the response headers.
    pub async fn open(addr: SocketAddr, collection: &str) -> anyhow::Result<Subscription> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = hyper::Request::get(format!("/v1/changes?collection={collection}"))
            .header("host", addr.to_string())
            .header("accept", "text/event-stream")
            .body(Empty::<Bytes>::new())?;
        let res = sender.send_request(req).await?;
        if !res.status().is_success() {
            driver.abort();
            bail!("GET /v1/changes on {addr}: {}", res.status());
        }
        Ok(Subscription {
            body: res.into_body(),
            driver,
        })
    }

    /// Records arrivals until `expected` distinct records were seen, the stream ends, or `stop`
    /// turns true.
    pub async fn collect(mut self, expected: usize, mut stop: watch::Receiver<bool>) -> Seen {
        let mut seen = Seen::default();
        let mut parser = EventParser::default();
        while seen.first.len() < expected {
            let frame = tokio::select! {
                frame = self.body.frame() => frame,
                _ = stop.wait_for(|s| *s) => break,
            };
            let now = Instant::now();
            let bytes = match frame {
                Some(Ok(frame)) => frame.into_data().unwrap_or_default(),
                Some(Err(e)) => {
                    seen.error = Some(e.to_string());
                    break;
                }
                None => {
                    seen.error = Some("stream ended".to_owned());
                    break;
                }
            };
            for event in parser.push(&bytes) {
                record(&mut seen, &event, now);
            }
        }
        self.driver.abort();
        seen
    }
}

fn record(seen: &mut Seen, event: &SseEvent, now: Instant) {
    match event.event.as_str() {
        "change" => match serde_json::from_str::<Change>(&event.data) {
            Ok(change) => {
                seen.first.entry(change.id).or_insert(now);
            }
            Err(e) => seen.error = Some(format!("bad change event: {e}")),
        },
        "lagged" => seen.lagged += event.data.trim().parse::<u64>().unwrap_or(1),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_comments_are_skipped() {
        let mut p = EventParser::default();
        assert!(p.push(b":keep-alive\n\nevent: cha").is_empty());
        let out = p.push(b"nge\r\ndata: {\"a\":1}\ndata:x\n\nevent: lagged\ndata: 3\n\n");
        assert_eq!(
            out,
            vec![
                SseEvent {
                    event: "change".into(),
                    data: "{\"a\":1}\nx".into()
                },
                SseEvent {
                    event: "lagged".into(),
                    data: "3".into()
                },
            ]
        );
    }

    #[test]
    fn change_events_record_first_arrival_and_lag() {
        let mut seen = Seen::default();
        let t0 = Instant::now();
        let change = |id: &str| SseEvent {
            event: "change".into(),
            data: format!("{{\"txns\":[\"a-1\",\"b-2\"],\"local\":false,\"id\":\"{id}\"}}"),
        };
        record(&mut seen, &change("a-1"), t0);
        let later = t0 + std::time::Duration::from_millis(5);
        record(&mut seen, &change("a-1"), later);
        record(&mut seen, &change("b-2"), later);
        record(
            &mut seen,
            &SseEvent {
                event: "lagged".into(),
                data: "7".into(),
            },
            later,
        );
        assert_eq!(seen.first["a-1"], t0);
        assert_eq!(seen.first["b-2"], later);
        assert_eq!(seen.lagged, 7);
    }
}
