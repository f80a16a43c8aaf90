//! The Phoenix channel protocol of one socket as a state machine without I/O: client frames in,
//! reply frames out, and the joined channels ([`Channel`]) that changes are routed to.
//!
//! | topic          | event          | answer                                                   |
//! |----------------|----------------|----------------------------------------------------------|
//! | `phoenix`      | `heartbeat`    | `phx_reply` ok                                            |
//! | `realtime:<n>` | `phx_join`     | ok with the `postgres_changes` ids, then a `system` "Subscribed to PostgreSQL"; an error reply with a reason for a bad config, presence, a refused token |
//! | `realtime:<n>` | `phx_leave`    | ok; the channel stops receiving                          |
//! | `realtime:<n>` | `access_token` | nothing; a refused token gets a `system` error and `phx_close` |
//! | any            | `broadcast`, `presence` | error reply: not supported by this node         |
//! | other topics, or a channel not joined | anything | error reply `unmatched topic` (Phoenix's answer) |
//!
//! A socket holds at most [`MAX_CHANNELS`] channels of at most [`MAX_SUBSCRIPTIONS`] entries.

use std::collections::BTreeMap;
use std::sync::Arc;

use meshlite_core::schema::Schema;
use serde_json::{Value, json};

use super::access::{Denied, Gate, may_read};
use super::change::Rendered;
use super::frame::{Frame, Ref, Status};
use super::subscription::{EventKind, Subscription, SubscriptionError};

/// Channels one socket may join.
pub const MAX_CHANNELS: usize = 100;
/// `postgres_changes` entries of one channel.
pub const MAX_SUBSCRIPTIONS: usize = 100;

/// The topic prefix of Realtime channels.
const TOPIC_PREFIX: &str = "realtime:";

/// Why broadcast and presence are refused (sent as the error reason).
pub const UNSUPPORTED: &str = "is not supported by this node: Meshlite serves Realtime postgres_changes only (see the README section \"Realtime\")";

/// Why a `phx_join` was refused (sent as the error reply's `reason`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    /// `realtime:` with nothing after it.
    #[error("You must provide a topic name")]
    NoTopic,
    /// [`MAX_CHANNELS`] joined already.
    #[error("too many channels on this socket (at most {MAX_CHANNELS})")]
    TooManyChannels,
    /// A payload that is not an object.
    #[error("the phx_join payload must be an object {{config, access_token}}")]
    Payload,
    /// A non-string `access_token`.
    #[error("access_token must be a string")]
    TokenType,
    /// The credential was refused.
    #[error("{0}")]
    Denied(#[from] Denied),
    /// Presence enabled.
    #[error("presence {UNSUPPORTED}")]
    Presence,
    /// `postgres_changes` is not an array, or too long.
    #[error("config.postgres_changes must be an array of at most {MAX_SUBSCRIPTIONS} entries")]
    Entries,
    /// A bad entry.
    #[error(transparent)]
    Subscription(#[from] SubscriptionError),
}

/// A joined channel.
#[derive(Clone, Debug)]
pub struct Channel {
    /// `realtime:<name>`.
    pub topic: String,
    /// The `ref` of its `phx_join` (every push on the channel carries it).
    pub join_ref: Option<Ref>,
    /// Its `postgres_changes` entries.
    pub subs: Vec<Subscription>,
}

impl Channel {
    fn name(&self) -> &str {
        self.topic.strip_prefix(TOPIC_PREFIX).unwrap_or(&self.topic)
    }

    /// A `system` message on the channel.
    pub fn system(&self, extension: &str, status: &str, message: &str) -> Frame {
        let payload = json!({
            "extension": extension, "status": status, "message": message, "channel": self.name(),
        });
        Frame::push(&self.topic, &self.join_ref, "system", payload)
    }

    /// The `postgres_changes` push of `change` when an entry matches it.
    fn delivery(&self, change: &Rendered) -> Option<Frame> {
        let mut ids: Vec<u32> = Vec::new();
        let mut scoped = false;
        for s in &self.subs {
            if s.matches(change.kind, &change.table, &change.row) && !ids.contains(&s.id) {
                ids.push(s.id);
                scoped |= s.owner_scoped();
            }
        }
        if ids.is_empty() {
            return None;
        }
        let data = match (&change.key_only, scoped) {
            (Some(key_only), true) => key_only,
            _ => &change.data,
        };
        let payload = json!({ "ids": ids, "data": data });
        Some(Frame::push(
            &self.topic,
            &self.join_ref,
            "postgres_changes",
            payload,
        ))
    }
}

/// The channels changes are routed to, shared with the socket's change forwarder.
pub type Routes = Arc<Vec<Channel>>;

/// The pushes of `change` on every channel of `routes` with a matching entry.
pub fn deliveries(routes: &[Channel], change: &Rendered) -> Vec<Frame> {
    routes.iter().filter_map(|c| c.delivery(change)).collect()
}

/// True when some entry may receive a delete from `table` (its last state is then read, to be
/// sent as `old_record` and matched by filters).
pub fn wants_deletes(routes: &[Channel], table: &str) -> bool {
    routes
        .iter()
        .flat_map(|c| &c.subs)
        .any(|s| s.event.wants(EventKind::Delete) && s.table.as_deref().is_none_or(|t| t == table))
}

/// What handling one client frame produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Frames to send, in order.
    pub frames: Vec<Frame>,
    /// The joined channels changed: publish [`Session::routes`] after sending `frames`.
    pub routes_changed: bool,
}

impl Outcome {
    fn send(frame: Frame) -> Self {
        Outcome {
            frames: vec![frame],
            routes_changed: false,
        }
    }
}

/// One socket's protocol state.
#[derive(Debug)]
pub struct Session {
    schema: Arc<Schema>,
    apikey: Option<String>,
    gate: Gate,
    channels: BTreeMap<String, Channel>,
}

impl Session {
    /// A socket opened with `apikey` over a store with `schema`; `gate` checks credentials.
    pub fn new(schema: Arc<Schema>, apikey: Option<String>, gate: Gate) -> Self {
        Session {
            schema,
            apikey,
            gate,
            channels: BTreeMap::new(),
        }
    }

    /// The joined channels.
    pub fn routes(&self) -> Routes {
        Arc::new(self.channels.values().cloned().collect())
    }

    /// Handles one client frame.
    pub fn handle(&mut self, f: Frame) -> Outcome {
        match (f.topic.as_str(), f.event.as_str()) {
            ("phoenix", "heartbeat") => Outcome::send(Frame::reply(&f, Status::Ok, json!({}))),
            (_, "broadcast") => {
                Outcome::send(Frame::error_reply(&f, format!("broadcast {UNSUPPORTED}")))
            }
            (_, "presence") => {
                Outcome::send(Frame::error_reply(&f, format!("presence {UNSUPPORTED}")))
            }
            (t, "phx_join") if t.starts_with(TOPIC_PREFIX) => self.join(f),
            (t, _) if !self.channels.contains_key(t) => {
                Outcome::send(Frame::error_reply(&f, "unmatched topic"))
            }
            (_, "phx_leave") => self.leave(f),
            (_, "access_token") => self.access_token(f),
            (_, event) => {
                let reason = format!(
                    "unknown event {event:?}: a Realtime channel takes phx_join, phx_leave, access_token"
                );
                Outcome::send(Frame::error_reply(&f, reason))
            }
        }
    }

    fn join(&mut self, f: Frame) -> Outcome {
        match self.check_join(&f) {
            Ok(channel) => {
                let mut out = Outcome {
                    frames: Vec::new(),
                    routes_changed: true,
                };
                if let Some(old) = self.channels.remove(&f.topic) {
                    // Phoenix closes the previous join of the same topic.
                    out.frames.push(Frame::push(
                        &old.topic,
                        &old.join_ref,
                        "phx_close",
                        json!({}),
                    ));
                }
                let ids: Vec<&Value> = channel.subs.iter().map(|s| &s.echo).collect();
                out.frames.push(Frame::reply(
                    &f,
                    Status::Ok,
                    json!({ "postgres_changes": ids }),
                ));
                if !channel.subs.is_empty() {
                    let msg = "Subscribed to PostgreSQL";
                    out.frames
                        .push(channel.system("postgres_changes", "ok", msg));
                }
                if replication_ready(&f.payload) {
                    let msg = "Replication connection established";
                    out.frames.push(channel.system("system", "ok", msg));
                }
                self.channels.insert(f.topic.clone(), channel);
                out
            }
            Err(reason) => Outcome::send(Frame::error_reply(&f, reason)),
        }
    }

    fn check_join(&self, f: &Frame) -> Result<Channel, JoinError> {
        if f.topic == TOPIC_PREFIX {
            return Err(JoinError::NoTopic);
        }
        if !self.channels.contains_key(&f.topic) && self.channels.len() >= MAX_CHANNELS {
            return Err(JoinError::TooManyChannels);
        }
        let empty = serde_json::Map::new();
        let payload = match &f.payload {
            Value::Object(o) => o,
            Value::Null => &empty,
            _ => return Err(JoinError::Payload),
        };
        let token = match payload.get("access_token") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => return Err(JoinError::TokenType),
        };
        let caller = self.gate.caller(self.apikey.as_deref(), token)?;
        let config = payload.get("config").unwrap_or(&Value::Null);
        if config.pointer("/presence/enabled") == Some(&Value::Bool(true)) {
            return Err(JoinError::Presence);
        }
        let none = Vec::new();
        let entries = match config.get("postgres_changes") {
            None | Some(Value::Null) => &none,
            Some(Value::Array(a)) if a.len() <= MAX_SUBSCRIPTIONS => a,
            Some(_) => return Err(JoinError::Entries),
        };
        let mut subs = entries
            .iter()
            .map(|e| Subscription::parse(&self.schema, e))
            .collect::<Result<Vec<Subscription>, _>>()?;
        for sub in &mut subs {
            sub.scope = may_read(&caller, &self.schema, sub.table.as_deref())?;
        }
        Ok(Channel {
            topic: f.topic.clone(),
            join_ref: f.join_ref.clone().or_else(|| f.msg_ref.clone()),
            subs,
        })
    }

    /// Whether `caller` may still follow every table of the channel `topic`; the channel's
    /// scopes become the caller's (a refreshed token may name another `sub`). True when they
    /// changed.
    fn rescope(&mut self, caller: &crate::auth::Caller, topic: &str) -> Result<bool, Denied> {
        let Some(ch) = self.channels.get(topic) else {
            return Ok(false);
        };
        let scopes = ch
            .subs
            .iter()
            .map(|sub| may_read(caller, &self.schema, sub.table.as_deref()))
            .collect::<Result<Vec<_>, _>>()?;
        let Some(ch) = self.channels.get_mut(topic) else {
            return Ok(false);
        };
        let mut changed = false;
        for (sub, scope) in ch.subs.iter_mut().zip(scopes) {
            changed |= sub.scope != scope;
            sub.scope = scope;
        }
        Ok(changed)
    }

    fn leave(&mut self, f: Frame) -> Outcome {
        self.channels.remove(&f.topic);
        Outcome {
            frames: vec![Frame::reply(&f, Status::Ok, json!({}))],
            routes_changed: true,
        }
    }

    fn access_token(&mut self, f: Frame) -> Outcome {
        let token = f.payload.get("access_token").and_then(Value::as_str);
        let still = self
            .gate
            .caller(self.apikey.as_deref(), token)
            .and_then(|caller| self.rescope(&caller, &f.topic));
        match still {
            Ok(changed) => Outcome {
                frames: Vec::new(),
                routes_changed: changed,
            },
            Err(Denied(why)) => {
                let Some(ch) = self.channels.remove(&f.topic) else {
                    return Outcome::default();
                };
                let frames = vec![
                    ch.system("system", "error", &why),
                    Frame::push(&ch.topic, &ch.join_ref, "phx_close", json!({})),
                ];
                Outcome {
                    frames,
                    routes_changed: true,
                }
            }
        }
    }
}

fn replication_ready(payload: &Value) -> bool {
    payload.pointer("/config/broadcast/replication_ready") == Some(&Value::Bool(true))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::realtime::frame::Vsn;

    fn session() -> Session {
        let schema = Schema::from_toml(
            "version = 1\nstrict = true\n[collections.tasks.fields]\nstatus = { type = \"text\" }\n",
        )
        .unwrap();
        Session::new(
            Arc::new(schema),
            Some("key".into()),
            Gate::new(
                Arc::new(crate::auth::Auth::off()),
                Some(std::net::Ipv4Addr::LOCALHOST.into()),
            ),
        )
    }

    fn frame(text: &str) -> Frame {
        Frame::decode(text, Vsn::V2).unwrap()
    }

    fn status(f: &Frame) -> &str {
        f.payload["status"].as_str().unwrap_or("")
    }

    #[test]
    fn heartbeat_join_leave() {
        let mut s = session();
        let hb = s.handle(frame(r#"[null,"1","phoenix","heartbeat",{}]"#));
        assert_eq!(hb.frames[0].event, "phx_reply");
        assert_eq!(status(&hb.frames[0]), "ok");
        let join = s.handle(frame(
            r#"["2","2","realtime:x","phx_join",{"config":{"broadcast":{"ack":false,"self":false},"presence":{"key":"","enabled":false},"postgres_changes":[{"event":"*","schema":"public","table":"tasks","filter":"status=eq.running"}],"private":false},"access_token":"key"}]"#,
        ));
        assert!(join.routes_changed);
        assert_eq!(status(&join.frames[0]), "ok");
        let echo = &join.frames[0].payload["response"]["postgres_changes"][0];
        assert_eq!(echo["filter"], "status=eq.running");
        assert!(echo["id"].is_u64());
        assert_eq!(join.frames[1].event, "system");
        assert_eq!(
            join.frames[1].payload["message"],
            "Subscribed to PostgreSQL"
        );
        assert_eq!(join.frames[1].payload["channel"], "x");
        assert_eq!(s.routes().len(), 1);
        let leave = s.handle(frame(r#"["2","3","realtime:x","phx_leave",{}]"#));
        assert_eq!(status(&leave.frames[0]), "ok");
        assert!(s.routes().is_empty());
    }

    #[test]
    fn refusals_are_error_replies() {
        let mut s = session();
        let reason = |o: Outcome| {
            assert_eq!(status(&o.frames[0]), "error", "{:?}", o.frames);
            o.frames[0].payload["response"]["reason"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let presence = s.handle(frame(
            r#"["1","1","realtime:p","phx_join",{"config":{"presence":{"enabled":true}}}]"#,
        ));
        assert!(reason(presence).starts_with("presence is not supported"));
        let bcast = s.handle(frame(
            r#"[null,"2","realtime:p","broadcast",{"event":"e"}]"#,
        ));
        assert!(reason(bcast).starts_with("broadcast is not supported"));
        let unknown_table = s.handle(frame(
            r#"["1","3","realtime:t","phx_join",{"config":{"postgres_changes":[{"event":"*","schema":"public","table":"nope"}]}}]"#,
        ));
        assert!(reason(unknown_table).contains("nope"));
        let not_joined = s.handle(frame(r#"["1","4","realtime:q","phx_leave",{}]"#));
        assert_eq!(reason(not_joined), "unmatched topic");
        let other = s.handle(frame(r#"[null,"5","rooms:1","phx_join",{}]"#));
        assert_eq!(reason(other), "unmatched topic");
        let empty = s.handle(frame(r#"[null,"6","realtime:","phx_join",{}]"#));
        assert_eq!(reason(empty), "You must provide a topic name");
        let bad_payload = s.handle(frame(r#"[null,"7","realtime:a","phx_join",[1]]"#));
        assert!(reason(bad_payload).contains("payload"));
        assert!(s.routes().is_empty());
    }

    #[test]
    fn rejoin_closes_the_previous_join() {
        let mut s = session();
        s.handle(frame(r#"["1","1","realtime:a","phx_join",{}]"#));
        let again = s.handle(frame(r#"["2","2","realtime:a","phx_join",{}]"#));
        assert_eq!(again.frames[0].event, "phx_close");
        assert_eq!(status(&again.frames[1]), "ok");
        assert_eq!(s.routes().len(), 1);
        assert_eq!(
            s.routes()[0].join_ref,
            Some(frame(r#"["2",null,"t","e",{}]"#).join_ref.unwrap())
        );
    }

    #[test]
    fn channel_limit() {
        let mut s = session();
        for i in 0..MAX_CHANNELS {
            let o = s.handle(frame(&format!(
                r#"["{i}","{i}","realtime:c{i}","phx_join",{{}}]"#
            )));
            assert_eq!(status(&o.frames[0]), "ok");
        }
        let o = s.handle(frame(r#"["x","x","realtime:more","phx_join",{}]"#));
        assert_eq!(status(&o.frames[0]), "error");
    }
}
