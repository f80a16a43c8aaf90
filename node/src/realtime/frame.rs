//! Phoenix channel messages on the wire, in both serializers realtime-js speaks: `vsn=1.0.0`, a
//! JSON object `{"join_ref", "ref", "topic", "event", "payload"}`, and `vsn=2.0.0` (realtime-js's
//! default), a JSON array `[join_ref, ref, topic, event, payload]`. Binary frames exist in 2.0.0
//! only for broadcast, which this node refuses: [`decode_binary`] reads just enough of one
//! (its refs and topic) to answer with an error.
//!
//! Pure functions over bytes: a frame that cannot be read is a [`FrameError`], never a panic.

use serde_json::{Map, Value, json};

/// Longest topic accepted (Phoenix topics are short; realtime-js caps binary ones at 255).
pub const MAX_TOPIC: usize = 255;

/// The serializer of a connection (`vsn` query parameter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vsn {
    /// `1.0.0`: JSON objects (Phoenix's default when `vsn` is absent).
    V1,
    /// `2.0.0`: JSON arrays.
    V2,
}

impl Vsn {
    /// From the `vsn` query parameter; `None` when it names another version.
    pub fn parse(v: Option<&str>) -> Option<Vsn> {
        match v {
            None | Some("1.0.0") => Some(Vsn::V1),
            Some("2.0.0") => Some(Vsn::V2),
            Some(_) => None,
        }
    }
}

/// A message reference (`ref`, `join_ref`): the client's string (or number), echoed verbatim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ref(Value);

impl Ref {
    fn from_value(v: Value, what: &'static str) -> Result<Option<Ref>, FrameError> {
        match v {
            Value::Null => Ok(None),
            v @ (Value::String(_) | Value::Number(_)) => Ok(Some(Ref(v))),
            _ => Err(FrameError::Field(what, "a string, a number or null")),
        }
    }

    /// A reference given as text (binary frames).
    fn text(s: String) -> Option<Ref> {
        (!s.is_empty()).then_some(Ref(Value::String(s)))
    }

    fn to_value(r: &Option<Ref>) -> Value {
        r.as_ref().map_or(Value::Null, |r| r.0.clone())
    }
}

/// One Phoenix message.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// The `ref` of the join that opened the channel.
    pub join_ref: Option<Ref>,
    /// This message's reference (a reply carries the request's).
    pub msg_ref: Option<Ref>,
    /// `realtime:<channel>`, or `phoenix` for heartbeats.
    pub topic: String,
    /// `phx_join`, `heartbeat`, `postgres_changes`, ...
    pub event: String,
    /// The payload.
    pub payload: Value,
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// Not JSON.
    #[error("not JSON: {0}")]
    Json(String),
    /// JSON of another shape.
    #[error("expected {0}")]
    Shape(&'static str),
    /// A field of the wrong type.
    #[error("field {0:?} must be {1}")]
    Field(&'static str, &'static str),
    /// A binary frame that is not a client broadcast push.
    #[error("binary frames carry only broadcast pushes (vsn 2.0.0); got kind {0}")]
    BinaryKind(u8),
    /// A binary frame shorter than its header says.
    #[error("truncated binary frame")]
    Truncated,
}

/// The reply status of `phx_reply`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// `ok`
    Ok,
    /// `error`
    Error,
}

impl Frame {
    /// A `phx_reply` to `req`.
    pub fn reply(req: &Frame, status: Status, response: Value) -> Frame {
        let status = match status {
            Status::Ok => "ok",
            Status::Error => "error",
        };
        Frame {
            join_ref: req.join_ref.clone(),
            msg_ref: req.msg_ref.clone(),
            topic: req.topic.clone(),
            event: "phx_reply".into(),
            payload: json!({ "status": status, "response": response }),
        }
    }

    /// An error reply to `req` with `reason` (what realtime-js shows as the channel error).
    pub fn error_reply(req: &Frame, reason: impl std::fmt::Display) -> Frame {
        Frame::reply(req, Status::Error, json!({ "reason": reason.to_string() }))
    }

    /// A server push on a joined channel.
    pub fn push(topic: &str, join_ref: &Option<Ref>, event: &str, payload: Value) -> Frame {
        Frame {
            join_ref: join_ref.clone(),
            msg_ref: None,
            topic: topic.to_owned(),
            event: event.to_owned(),
            payload,
        }
    }

    /// Reads a text frame.
    pub fn decode(text: &str, vsn: Vsn) -> Result<Frame, FrameError> {
        let v: Value = serde_json::from_str(text).map_err(|e| FrameError::Json(e.to_string()))?;
        let (join_ref, msg_ref, topic, event, payload) = match (vsn, v) {
            (Vsn::V2, Value::Array(a)) => {
                let [join_ref, msg_ref, topic, event, payload]: [Value; 5] =
                    a.try_into().map_err(|_| {
                        FrameError::Shape("an array [join_ref, ref, topic, event, payload]")
                    })?;
                (join_ref, msg_ref, topic, event, payload)
            }
            (Vsn::V2, _) => {
                return Err(FrameError::Shape(
                    "an array [join_ref, ref, topic, event, payload] (vsn 2.0.0)",
                ));
            }
            (Vsn::V1, Value::Object(mut o)) => {
                let mut take = |k: &str| o.remove(k).unwrap_or(Value::Null);
                (
                    take("join_ref"),
                    take("ref"),
                    take("topic"),
                    take("event"),
                    take("payload"),
                )
            }
            (Vsn::V1, _) => {
                return Err(FrameError::Shape(
                    "an object {topic, event, payload, ref} (vsn 1.0.0)",
                ));
            }
        };
        let text_field = |v: Value, what: &'static str| match v {
            Value::String(s) if !s.is_empty() && s.len() <= MAX_TOPIC => Ok(s),
            _ => Err(FrameError::Field(
                what,
                "a non-empty string of at most 255 bytes",
            )),
        };
        Ok(Frame {
            join_ref: Ref::from_value(join_ref, "join_ref")?,
            msg_ref: Ref::from_value(msg_ref, "ref")?,
            topic: text_field(topic, "topic")?,
            event: text_field(event, "event")?,
            payload,
        })
    }

    /// The frame as text in `vsn`'s serializer.
    pub fn encode(&self, vsn: Vsn) -> String {
        let (join_ref, msg_ref) = (Ref::to_value(&self.join_ref), Ref::to_value(&self.msg_ref));
        let v = match vsn {
            Vsn::V2 => json!([join_ref, msg_ref, self.topic, self.event, self.payload]),
            Vsn::V1 => {
                let mut o = Map::new();
                o.insert("topic".into(), self.topic.clone().into());
                o.insert("event".into(), self.event.clone().into());
                o.insert("payload".into(), self.payload.clone());
                o.insert("ref".into(), msg_ref);
                o.insert("join_ref".into(), join_ref);
                Value::Object(o)
            }
        };
        v.to_string()
    }
}

/// Kind byte of a client broadcast push (realtime-js `KINDS.userBroadcastPush`).
const USER_BROADCAST_PUSH: u8 = 3;

/// Reads the header of a binary client broadcast push: the frame it asks for (event
/// `broadcast`, payload null), so that it can be answered.
///
/// Layout: kind, then the lengths of join_ref, ref, topic, user event and metadata, an encoding
/// byte, then those strings and the user payload.
pub fn decode_binary(bytes: &[u8]) -> Result<Frame, FrameError> {
    let (&kind, rest) = bytes.split_first().ok_or(FrameError::Truncated)?;
    if kind != USER_BROADCAST_PUSH {
        return Err(FrameError::BinaryKind(kind));
    }
    let header = rest.get(..6).ok_or(FrameError::Truncated)?;
    let mut at = 7;
    let mut take = |len: u8| -> Result<String, FrameError> {
        let end = at + usize::from(len);
        let s = bytes.get(at..end).ok_or(FrameError::Truncated)?;
        at = end;
        Ok(String::from_utf8_lossy(s).into_owned())
    };
    let join_ref = take(header[0])?;
    let msg_ref = take(header[1])?;
    let topic = take(header[2])?;
    if topic.is_empty() {
        return Err(FrameError::Field("topic", "a non-empty string"));
    }
    Ok(Frame {
        join_ref: Ref::text(join_ref),
        msg_ref: Ref::text(msg_ref),
        topic,
        event: "broadcast".into(),
        payload: Value::Null,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn both_serializers_round_trip() {
        let f = Frame {
            join_ref: Some(Ref(json!("1"))),
            msg_ref: Some(Ref(json!("2"))),
            topic: "realtime:x".into(),
            event: "phx_join".into(),
            payload: json!({"config": {}}),
        };
        for vsn in [Vsn::V1, Vsn::V2] {
            assert_eq!(Frame::decode(&f.encode(vsn), vsn).unwrap(), f);
        }
        assert!(
            f.encode(Vsn::V2)
                .starts_with(r#"["1","2","realtime:x","phx_join""#)
        );
    }

    #[test]
    fn malformed_frames_are_errors() {
        let v2 = |s| Frame::decode(s, Vsn::V2);
        assert!(matches!(v2("nope"), Err(FrameError::Json(_))));
        assert!(matches!(v2("{}"), Err(FrameError::Shape(_))));
        assert!(matches!(v2("[1,2,3]"), Err(FrameError::Shape(_))));
        assert!(matches!(
            v2(r#"[null,null,7,"e",{}]"#),
            Err(FrameError::Field("topic", _))
        ));
        assert!(matches!(
            v2(r#"[null,{},"t","e",{}]"#),
            Err(FrameError::Field("ref", _))
        ));
        assert!(matches!(
            v2(r#"[null,null,"t","",{}]"#),
            Err(FrameError::Field("event", _))
        ));
        assert!(matches!(
            Frame::decode("[]", Vsn::V1),
            Err(FrameError::Shape(_))
        ));
        let long = format!(r#"[null,null,"{}","e",{{}}]"#, "t".repeat(300));
        assert!(v2(&long).is_err());
    }

    #[test]
    fn numeric_refs_are_echoed() {
        let f = Frame::decode(
            r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":7}"#,
            Vsn::V1,
        )
        .unwrap();
        let r = Frame::reply(&f, Status::Ok, json!({}));
        assert!(r.encode(Vsn::V1).contains(r#""ref":7"#));
    }

    #[test]
    fn binary_broadcast_header() {
        let mut b = vec![3, 1, 1, 4, 2, 0, 1];
        b.extend_from_slice(b"12topice1");
        b.extend_from_slice(b"{}");
        let f = decode_binary(&b).unwrap();
        assert_eq!(f.topic, "topi");
        assert_eq!(f.msg_ref, Some(Ref(json!("2"))));
        assert_eq!(decode_binary(&[4]), Err(FrameError::BinaryKind(4)));
        assert_eq!(
            decode_binary(&[3, 9, 9, 9, 0, 0, 1]),
            Err(FrameError::Truncated)
        );
        assert_eq!(decode_binary(&[]), Err(FrameError::Truncated));
    }
}
