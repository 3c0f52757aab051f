//! The message on its way into the outbox (an Afero attribute message,
//! [`tether_protocol::afero`], or any other JSON), the checks every
//! message passes before it is stored, and the compact record kept in the
//! store.

use std::time::SystemTime;

use serde_json::{Map, Value};
use tether_protocol::afero::{AttributeChange, AttributeMessage};
use tether_protocol::time::unix_ms;
use uuid::Uuid;

pub(crate) use tether_protocol::afero::ATTRIBUTE;

/// Largest message body the outbox stores (the hub's telemetry limit).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// A message on its way into the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Set once at acceptance and kept across retries (`$.mid`).
    pub id: Uuid,
    /// The `type` property: `attribute`, `relay-schedule`, ...
    pub message_type: String,
    /// The JSON body, sent as is.
    pub body: Vec<u8>,
    /// Deliver to this sink only (replays); `None` for every sink.
    pub only_sink: Option<String>,
}

/// A new message id: a random (version 4) UUID from the thread's CSPRNG.
/// `Uuid::new_v4` asks the kernel for 16 bytes each time, a system call
/// per accepted message (1-2 % of tether's CPU under load).
pub(crate) fn new_id() -> Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}

/// Length of a message id's text form.
pub const ID_LEN: usize = uuid::fmt::Hyphenated::LENGTH;

/// `id` in its hyphenated lower-case form, written into `buf` (no
/// allocation; the `Display` impl costs several times more).
pub fn id_str<'b>(id: &Uuid, buf: &'b mut [u8; ID_LEN]) -> &'b str {
    id.hyphenated().encode_lower(buf)
}

impl NewMessage {
    /// Any message type with a JSON body (relay schedules, bridge events).
    pub fn json(message_type: &str, body: &Value) -> Self {
        Self {
            id: new_id(),
            message_type: message_type.to_string(),
            body: body.to_string().into_bytes(),
            only_sink: None,
        }
    }

    /// An attribute change in Afero's shape, stamped `now`.
    pub fn attribute(
        device_id: &str,
        change: &AttributeChange,
        extended: &Map<String, Value>,
        now: SystemTime,
    ) -> Self {
        let id = new_id();
        let mut id_buf = [0; ID_LEN];
        let body = AttributeMessage::new(
            id_str(&id, &mut id_buf),
            device_id,
            unix_ms(now),
            change,
            extended,
        );
        Self {
            id,
            message_type: ATTRIBUTE.to_string(),
            body: body.encode(),
            only_sink: None,
        }
    }

    /// The checks every message passes before it is stored, whether it
    /// comes through intake or from a salvaged store.
    ///
    /// # Errors
    /// [`Unstorable`] says which check failed.
    pub(crate) fn check(&self) -> Result<(), Unstorable> {
        let type_ok = !self.message_type.is_empty()
            && self.message_type.len() <= 64
            && self
                .message_type
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !type_ok {
            return Err(Unstorable::BadType(self.message_type.clone()));
        }
        if self.body.len() > MAX_BODY_BYTES {
            return Err(Unstorable::TooLarge {
                size: self.body.len() as u64,
                max: MAX_BODY_BYTES as u64,
            });
        }
        Ok(())
    }
}

/// Why a message cannot be stored ([`NewMessage::check`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Unstorable {
    /// The `type` property is not 1-64 letters, digits, `-` or `_`.
    #[error("message type {0:?} must be 1-64 letters, digits, - or _")]
    BadType(String),
    /// The body is over [`MAX_BODY_BYTES`].
    #[error("{size} bytes exceed what the outbox accepts at once ({max} bytes)")]
    TooLarge {
        /// Body size.
        size: u64,
        /// The limit.
        max: u64,
    },
}

/// A message as stored, with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Position in the outbox (FIFO order).
    pub seq: u64,
    /// `$.mid`.
    pub id: Uuid,
    /// `type` property.
    pub message_type: String,
    /// Wall-clock acceptance time (ms since the epoch).
    pub utc_ms: u64,
    /// Acceptance time on the outbox's age clock (ms).
    pub accepted_ms: u64,
    /// Deliver to this sink only.
    pub only_sink: Option<String>,
    /// JSON body.
    pub body: Vec<u8>,
}

const RECORD_V1: u8 = 1;

impl Stored {
    /// The record's bytes: version, times, id, type, sink, body.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let sink = self.only_sink.as_deref().unwrap_or("");
        let mut out =
            Vec::with_capacity(36 + self.message_type.len() + sink.len() + self.body.len());
        out.push(RECORD_V1);
        out.extend_from_slice(&self.utc_ms.to_be_bytes());
        out.extend_from_slice(&self.accepted_ms.to_be_bytes());
        out.extend_from_slice(self.id.as_bytes());
        for s in [self.message_type.as_str(), sink] {
            // Types and sink names are short (checked at intake and config).
            out.push(s.len().min(255) as u8);
            out.extend_from_slice(&s.as_bytes()[..s.len().min(255)]);
        }
        out.extend_from_slice(&self.body);
        out
    }

    /// The length of the record this message is stored as (what the live
    /// counters count), without encoding it.
    pub fn encoded_len(&self) -> u64 {
        let sink = self.only_sink.as_deref().map_or(0, |s| s.len().min(255));
        (35 + self.message_type.len().min(255) + sink + self.body.len()) as u64
    }

    /// Reads a record written by [`Stored::encode`].
    ///
    /// # Errors
    /// A description of what is malformed.
    pub(crate) fn decode(seq: u64, b: &[u8]) -> Result<Self, String> {
        let short = || format!("record {seq} is truncated");
        if b.first() != Some(&RECORD_V1) {
            return Err(format!("record {seq} has an unknown version"));
        }
        let fixed = b.get(1..33).ok_or_else(short)?;
        let utc_ms = u64::from_be_bytes(fixed[0..8].try_into().map_err(|_| short())?);
        let accepted_ms = u64::from_be_bytes(fixed[8..16].try_into().map_err(|_| short())?);
        let id = Uuid::from_slice(&fixed[16..32]).map_err(|_| short())?;
        let mut pos = 33;
        let mut strings = [String::new(), String::new()];
        for s in &mut strings {
            let len = *b.get(pos).ok_or_else(short)? as usize;
            let bytes = b.get(pos + 1..pos + 1 + len).ok_or_else(short)?;
            *s =
                String::from_utf8(bytes.to_vec()).map_err(|_| format!("record {seq}: bad text"))?;
            pos += 1 + len;
        }
        let [message_type, sink] = strings;
        Ok(Self {
            seq,
            id,
            message_type,
            utc_ms,
            accepted_ms,
            only_sink: (!sink.is_empty()).then_some(sink),
            body: b[pos..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn an_attribute_message_carries_its_id_and_time() {
        let change = AttributeChange {
            attribute_id: 7,
            data: vec![1],
            data_type: tether_protocol::afero::DataType::Boolean,
        };
        let now = UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        let m = NewMessage::attribute("dev1", &change, &Map::new(), now);
        let body: Value = serde_json::from_slice(&m.body).unwrap();
        assert_eq!(body["id"], m.id.to_string());
        assert_eq!(body["utcTimestamp"], 1_700_000_000_123_u64);
        assert_eq!(m.message_type, ATTRIBUTE);
    }

    #[test]
    fn records_round_trip() {
        let s = Stored {
            seq: 7,
            id: Uuid::new_v4(),
            message_type: "relay-schedule".into(),
            utc_ms: 1,
            accepted_ms: 2,
            only_sink: Some("partner".into()),
            body: b"{}".to_vec(),
        };
        assert_eq!(Stored::decode(7, &s.encode()).unwrap(), s);
        assert_eq!(s.encoded_len(), s.encode().len() as u64);
        assert!(Stored::decode(7, &s.encode()[..20]).is_err());
    }
}
