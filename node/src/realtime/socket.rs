//! One websocket: the loop that reads client frames and writes the outbox, and the forwarder
//! that turns store events into `postgres_changes` pushes.
//!
//! Memory per socket is bounded in bytes, as `/v1/changes` bounds a subscriber: the forwarder
//! drains the store's broadcast at once and queues encoded pushes in the socket's outbox,
//! counting their bytes; replies are queued there too. When the outbox would pass
//! `http.changes_buffer_bytes` (a client that does not read), or the broadcast itself lagged,
//! each joined channel gets a `system` error saying how many changes it missed, and the socket
//! closes with code 1013 (try again later): realtime-js reconnects and rejoins, and the app
//! re-reads what it missed. A client that sends nothing (not even realtime-js's heartbeat,
//! every 25 s) for `http.idle_timeout_ms`, or does not take a message within that time, is
//! closed too. When the daemon stops, every socket closes with 1001 (going away).
//!
//! Undecodable frames close the socket with 1007 and the reason; frames over
//! [`MAX_MESSAGE_BYTES`] with 1009; binary frames other than a broadcast push with 1003.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use meshlite_core::store::{Query, RecordChange, Store, StoreEvent};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;

use super::change::{commit_timestamp, kind_of, render};
use super::frame::{Frame, Vsn, decode_binary};
use super::session::{Routes, Session, deliveries, wants_deletes};
use super::subscription::EventKind;

/// Largest client message (a join with [`super::session::MAX_SUBSCRIPTIONS`] entries is a few
/// KiB; broadcast payloads are refused anyway).
pub const MAX_MESSAGE_BYTES: usize = 256 << 10;

/// What the socket loop takes from the outbox.
#[derive(Debug)]
enum Out {
    /// An encoded frame and its size.
    Text(String),
    /// The forwarder stopped: this many changes (at least) were not delivered.
    Lagged(u64),
}

/// Encoded frames waiting for the socket, with their total size.
#[derive(Clone)]
struct Outbox {
    tx: mpsc::UnboundedSender<Out>,
    bytes: Arc<AtomicUsize>,
    budget: usize,
}

impl Outbox {
    /// Queues `text`; false when the budget is spent (the caller reports a lag) or the socket
    /// is gone. One message larger than the budget still goes through an empty outbox.
    fn push(&self, text: String) -> bool {
        let len = text.len();
        let queued = self.bytes.load(Ordering::Acquire);
        if queued > 0 && queued + len > self.budget {
            return false;
        }
        self.bytes.fetch_add(len, Ordering::AcqRel);
        self.tx.send(Out::Text(text)).is_ok()
    }

    fn lagged(&self, missed: u64) {
        let _ = self.tx.send(Out::Lagged(missed));
    }

    fn taken(&self, text: &str) {
        self.bytes.fetch_sub(text.len(), Ordering::AcqRel);
    }
}

/// What a socket needs from the daemon.
#[derive(Debug, Clone)]
pub struct SocketConfig {
    /// The store.
    pub store: Store,
    /// Serializer.
    pub vsn: Vsn,
    /// The connection's `apikey` (see [`super::access`]).
    pub apikey: Option<String>,
    /// Who may join what (see [`super::access`]).
    pub gate: super::access::Gate,
    /// Outbox budget in bytes (`http.changes_buffer_bytes`).
    pub budget: usize,
    /// Silence allowed from the client, and time allowed for one send.
    pub idle: Duration,
    /// Fires when the daemon stops.
    pub shutdown: CancellationToken,
}

/// Why the loop ended, sent as the close frame.
struct Close(u16, String);

impl Close {
    fn frame(self) -> Message {
        // A close reason is at most 123 bytes.
        let mut reason = self.1;
        while reason.len() > 123 {
            reason.pop();
        }
        Message::Close(Some(CloseFrame {
            code: self.0,
            reason: Utf8Bytes::from(reason),
        }))
    }
}

/// Serves one upgraded socket until it closes.
pub async fn serve(mut ws: WebSocket, cfg: SocketConfig) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let outbox = Outbox {
        tx,
        bytes: Arc::new(AtomicUsize::new(0)),
        budget: cfg.budget,
    };
    let mut session = Session::new(cfg.store.schema(), cfg.apikey.clone(), cfg.gate.clone());
    let (routes_tx, routes_rx) = watch::channel(session.routes());
    // Ends on its own once the outbox's receiver is dropped; joined below.
    let forwarder = tokio::spawn(forward(
        cfg.store.subscribe(),
        cfg.store.clone(),
        cfg.vsn,
        routes_rx,
        outbox.clone(),
        cfg.shutdown.clone(),
    ));
    let mut deadline = Instant::now() + cfg.idle;
    let close = loop {
        tokio::select! {
            biased;
            _ = cfg.shutdown.cancelled() => break Some(Close(close_code::AWAY, "server shutting down".into())),
            out = rx.recv() => match out {
                Some(Out::Text(text)) => {
                    outbox.taken(&text);
                    if !send(&mut ws, Message::text(text), cfg.idle).await {
                        break None;
                    }
                }
                Some(Out::Lagged(missed)) => break Some(lagged(&mut ws, &session, missed, cfg.vsn, cfg.idle).await),
                None => break None,
            },
            _ = tokio::time::sleep_until(deadline) => {
                let why = format!("no message from the client for {} ms (heartbeat timeout)", cfg.idle.as_millis());
                break Some(Close(close_code::NORMAL, why));
            }
            msg = ws.recv() => {
                deadline = Instant::now() + cfg.idle;
                match incoming(msg, &mut session, &outbox, cfg.vsn) {
                    Ok(Some(routes)) => { let _ = routes_tx.send(routes); }
                    Ok(None) => {}
                    Err(close) => break close,
                }
            }
        }
    };
    if let Some(close) = close {
        let _ = tokio::time::timeout(cfg.idle, ws.send(close.frame())).await;
    }
    drop(rx);
    if let Err(e) = forwarder.await {
        tracing::error!(error = %e, "realtime change forwarder failed");
    }
}

/// Sends one message within `idle`; false when the socket is gone or the client stopped reading.
async fn send(ws: &mut WebSocket, msg: Message, idle: Duration) -> bool {
    matches!(tokio::time::timeout(idle, ws.send(msg)).await, Ok(Ok(())))
}

/// Tells every joined channel it missed changes; the close to send.
async fn lagged(
    ws: &mut WebSocket,
    session: &Session,
    missed: u64,
    vsn: Vsn,
    idle: Duration,
) -> Close {
    let why = format!(
        "this subscriber fell behind and missed {missed} change(s): reconnect, rejoin, and re-read the rows you follow"
    );
    for ch in session.routes().iter() {
        let f = ch.system("postgres_changes", "error", &why);
        if !send(ws, Message::text(f.encode(vsn)), idle).await {
            break;
        }
    }
    Close(close_code::AGAIN, why)
}

/// Handles one websocket message: new routes when the channels changed, or the close to send
/// (`None` inside: end without one).
fn incoming(
    msg: Option<Result<Message, axum::Error>>,
    session: &mut Session,
    outbox: &Outbox,
    vsn: Vsn,
) -> Result<Option<Routes>, Option<Close>> {
    let frame = match msg {
        None | Some(Ok(Message::Close(_))) => return Err(None),
        Some(Err(e)) => return Err(read_error(e)),
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Ok(None),
        Some(Ok(Message::Text(t))) => Frame::decode(t.as_str(), vsn)
            .map_err(|e| Close(close_code::INVALID, format!("malformed message: {e}")))?,
        Some(Ok(Message::Binary(b))) => decode_binary(&b).map_err(|e| {
            Close(
                close_code::UNSUPPORTED,
                format!("unsupported binary message: {e}"),
            )
        })?,
    };
    let out = session.handle(frame);
    for f in out.frames {
        if !outbox.push(f.encode(vsn)) {
            // The client sends but does not read its replies.
            return Err(Some(Close(
                close_code::POLICY,
                "replies are not being read".into(),
            )));
        }
    }
    Ok(out.routes_changed.then(|| session.routes()))
}

/// The close for a read error: 1009 for an oversized message, none when the connection broke.
fn read_error(e: axum::Error) -> Option<Close> {
    let inner = e.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(c)) => Some(Close(
            close_code::SIZE,
            format!("message too big: {c} (limit {MAX_MESSAGE_BYTES} bytes)"),
        )),
        Some(tungstenite::Error::Protocol(p)) => {
            Some(Close(close_code::PROTOCOL, format!("protocol error: {p}")))
        }
        Some(tungstenite::Error::Utf8(_)) => Some(Close(
            close_code::INVALID,
            "text message is not UTF-8".into(),
        )),
        _ => {
            tracing::debug!(error = %inner, "realtime socket read failed");
            None
        }
    }
}

/// Drains the store's broadcast into the outbox until the budget is spent, the socket is gone,
/// the store closes or the daemon stops.
async fn forward(
    mut events: broadcast::Receiver<StoreEvent>,
    store: Store,
    vsn: Vsn,
    routes: watch::Receiver<Routes>,
    outbox: Outbox,
    shutdown: CancellationToken,
) {
    loop {
        let ev = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = outbox.tx.closed() => return,
            ev = events.recv() => ev,
        };
        let changes = match ev {
            Ok(StoreEvent::Committed { changes, .. }) => changes,
            Ok(_) => continue,
            Err(RecvError::Lagged(n)) => return outbox.lagged(n),
            Err(RecvError::Closed) => return,
        };
        let at = commit_timestamp(time::OffsetDateTime::now_utc());
        let total = changes.len() as u64;
        for (i, change) in changes.iter().enumerate() {
            let routes = routes.borrow().clone();
            if routes.is_empty() {
                continue;
            }
            for f in deliver(&store, &routes, change, &at).await {
                if !outbox.push(f.encode(vsn)) {
                    return outbox.lagged(total - i as u64);
                }
            }
        }
    }
}

/// The pushes of one change to the channels of `routes`.
async fn deliver(
    store: &Store,
    routes: &[super::session::Channel],
    change: &RecordChange,
    at: &str,
) -> Vec<Frame> {
    let last = match kind_of(change.kind) {
        EventKind::Delete if wants_deletes(routes, &change.collection) => {
            last_state(store, change).await
        }
        _ => None,
    };
    deliveries(routes, &render(&store.schema(), change, last, at))
}

/// A deleted record's last state (`None` when it cannot be read).
async fn last_state(store: &Store, change: &RecordChange) -> Option<Value> {
    let key = store
        .schema()
        .collection_or_default(&change.collection)
        .primary_key;
    let q = Query {
        filters: vec![(key, Value::String(change.id.clone()))],
        limit: Some(1),
        include_deleted: true,
        ..Query::default()
    };
    match store.query_async(&change.collection, &q).await {
        Ok(rows) => rows.into_iter().next(),
        Err(e) => {
            tracing::debug!(error = %e, collection = %change.collection, "realtime: last state of a deleted record unreadable");
            None
        }
    }
}
