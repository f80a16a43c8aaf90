//! Fleet identifiers: the cluster id, node ids derived from keys, and validated node names.
//!
//! All three appear inside node certificates (see `fleet::cert`) and in configuration files, so
//! each has one canonical text form (lowercase hex for ids) that `Display`, `FromStr` and serde
//! share.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a textual id or name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The text is not lowercase hex of the expected length.
    #[error("{what} must be {len} lowercase hex characters, got {got:?}")]
    BadHex {
        /// Which id was being parsed.
        what: &'static str,
        /// Expected number of hex characters.
        len: usize,
        /// The refused text.
        got: String,
    },
    /// The node name is not a safe identifier.
    #[error(
        "invalid node name {name:?}: use 1-63 characters from a-z, 0-9 and '-', \
         starting with a letter or digit and not ending with '-'"
    )]
    BadNodeName {
        /// The refused name.
        name: String,
    },
}

/// Parses exactly `N` bytes of lowercase hex.
fn parse_hex<const N: usize>(what: &'static str, s: &str) -> Result<[u8; N], IdError> {
    let bad = || IdError::BadHex {
        what,
        len: N * 2,
        got: s.to_owned(),
    };
    if s.len() != N * 2 || s.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(bad());
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|_| bad())?;
    Ok(out)
}

macro_rules! hex_id {
    ($name:ident, $len:literal, $what:literal) => {
        impl $name {
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Wraps raw bytes.
            pub fn from_bytes(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, IdError> {
                parse_hex::<$len>($what, s).map(Self)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// The fleet's cluster id: 8 random bytes, written as 16 lowercase hex characters.
///
/// Every node certificate names its cluster; peers from another cluster are refused even when
/// their certificate chains to a trusted CA.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterId([u8; 8]);
hex_id!(ClusterId, 8, "cluster id");

impl ClusterId {
    /// A fresh random cluster id.
    pub fn random() -> Self {
        Self(rand::random())
    }
}

/// A node's id: the first 16 bytes of BLAKE3 over the DER of its certificate's
/// SubjectPublicKeyInfo, written as 32 lowercase hex characters.
///
/// Derived from the key, so any peer can recompute it from the presented certificate; it stays
/// the same when a certificate is renewed with the same key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId([u8; 16]);
hex_id!(NodeId, 16, "node id");

impl NodeId {
    /// Derives the node id from a DER-encoded SubjectPublicKeyInfo.
    pub fn from_spki_der(spki: &[u8]) -> Self {
        let hash = blake3::hash(spki);
        let mut id = [0u8; 16];
        id.copy_from_slice(&hash.as_bytes()[..16]);
        Self(id)
    }
}

/// A human-chosen node name, safe as a DNS label, a file name and a log field:
/// 1–63 characters from `a-z`, `0-9` and `-`, not starting or ending with `-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeName(String);

impl NodeName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, IdError> {
        let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        let valid = (1..=63).contains(&name.len())
            && name.chars().all(ok_char)
            && !name.starts_with('-')
            && !name.ends_with('-');
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(IdError::BadNodeName {
                name: name.to_owned(),
            })
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for NodeName {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl Serialize for NodeName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::new(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text() {
        let c = ClusterId::random();
        assert_eq!(c.to_string().parse::<ClusterId>(), Ok(c));
        let n = NodeId::from_spki_der(b"spki");
        assert_eq!(n.to_string().len(), 32);
        assert_eq!(n.to_string().parse::<NodeId>(), Ok(n));
    }

    #[test]
    fn bad_hex_is_refused() {
        assert!("0123".parse::<ClusterId>().is_err());
        assert!("0123456789ABCDEF".parse::<ClusterId>().is_err());
        assert!("0123456789abcdeg".parse::<ClusterId>().is_err());
        assert!("0123456789abcdef".parse::<ClusterId>().is_ok());
    }

    #[test]
    fn node_names_are_safe_labels() {
        for ok in ["a", "pi-5", "jetson01", &"x".repeat(63)] {
            assert!(NodeName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a.b",
            "../x",
            "a b",
            &"x".repeat(64),
        ] {
            assert!(NodeName::new(bad).is_err(), "{bad}");
        }
    }
}
