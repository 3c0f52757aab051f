//! The message: Afero Cloud Notify's attribute shape, the checks on intake
//! input, and the compact record kept in the store.

use std::time::{SystemTime, UNIX_EPOCH};

use firmware_bridge::value::{hex, unhex};
use firmware_bridge::DataType;
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

/// The `type` property of attribute messages.
pub const ATTRIBUTE: &str = "attribute";
/// Largest attribute value accepted (Afero's attribute size limit).
pub const MAX_VALUE_BYTES: usize = 1536;
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
pub fn new_id() -> Uuid {
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
        let body = AttributeBody {
            id: id_str(&id, &mut id_buf),
            device_id,
            utc_timestamp: unix_ms(now),
            attribute_id: change.attribute_id,
            attribute_data: hex(&change.data),
            attribute_data_type: change.data_type.as_str(),
            attribute_data_converted: change.data_type.to_display(&change.data),
            extended_data: (!extended.is_empty()).then_some(extended),
        };
        Self {
            id,
            message_type: ATTRIBUTE.to_string(),
            // Serialising plain strings, numbers and a JSON map cannot fail.
            body: serde_json::to_vec(&body).unwrap_or_default(),
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

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AttributeBody<'a> {
    id: &'a str,
    device_id: &'a str,
    utc_timestamp: u64,
    attribute_id: u16,
    attribute_data: String,
    attribute_data_type: &'static str,
    attribute_data_converted: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    extended_data: Option<&'a Map<String, Value>>,
}

/// One validated attribute change from intake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeChange {
    /// Afero attribute id.
    pub attribute_id: u16,
    /// Raw value bytes.
    pub data: Vec<u8>,
    /// Their type.
    pub data_type: DataType,
}

/// Intake input that cannot be accepted, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {detail}")]
pub struct InputError {
    /// JSON path of the offending field, e.g. `[2].attributeData`.
    pub field: String,
    /// What is wrong with it.
    pub detail: String,
}

fn bad(field: String, detail: impl Into<String>) -> InputError {
    InputError {
        field,
        detail: detail.into(),
    }
}

/// Parses `POST /v1/attributes`: one change object or an array of them.
/// All or nothing: the first bad field rejects the whole request.
///
/// # Errors
/// [`InputError`] naming the first bad field.
pub fn parse_changes(body: &[u8]) -> Result<Vec<AttributeChange>, InputError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad("body".into(), format!("not JSON: {e}")))?;
    match value {
        Value::Array(items) if items.is_empty() => Err(bad("body".into(), "the array is empty")),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| parse_change(item, &format!("[{i}].")))
            .collect(),
        item @ Value::Object(_) => Ok(vec![parse_change(&item, "")?]),
        _ => Err(bad(
            "body".into(),
            "expected an object or an array of objects",
        )),
    }
}

fn parse_change(item: &Value, at: &str) -> Result<AttributeChange, InputError> {
    let field = |name: &str| format!("{at}{name}");
    let obj = item
        .as_object()
        .ok_or_else(|| bad(at.trim_end_matches('.').to_string(), "expected an object"))?;
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "attributeId" | "attributeData" | "attributeDataType" | "value"
        ) {
            return Err(bad(field(key), "unknown field"));
        }
    }
    let attribute_id = match obj.get("attributeId") {
        None => return Err(bad(field("attributeId"), "missing")),
        Some(v) => v
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| bad(field("attributeId"), "must be an integer from 0 to 65535"))?,
    };
    let data_type: DataType = match obj.get("attributeDataType") {
        None => return Err(bad(field("attributeDataType"), "missing")),
        Some(Value::String(s)) => s.parse().map_err(|_| {
            bad(
                field("attributeDataType"),
                format!("unknown type {s:?} (BOOLEAN, SINT8..SINT64, UINT8..UINT64, Q_15_16, UTF8S, BYTES)"),
            )
        })?,
        Some(_) => return Err(bad(field("attributeDataType"), "must be a string")),
    };
    let data = match (obj.get("attributeData"), obj.get("value")) {
        (Some(_), Some(_)) => {
            return Err(bad(
                field("value"),
                "give either attributeData or value, not both",
            ))
        }
        (None, None) => return Err(bad(field("attributeData"), "missing (or give value)")),
        (Some(Value::String(h)), None) => {
            let bytes = unhex(h)
                .map_err(|_| bad(field("attributeData"), "not an even-length hex string"))?;
            check_width(data_type, &bytes).map_err(|d| bad(field("attributeData"), d))?;
            bytes
        }
        (Some(_), None) => return Err(bad(field("attributeData"), "must be a hex string")),
        (None, Some(v)) => {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(bad(field("value"), "must be a string, number or boolean")),
            };
            data_type
                .parse(&text, MAX_VALUE_BYTES)
                .map_err(|e| bad(field("value"), format!("{e} for {data_type}")))?
        }
    };
    if data.len() > MAX_VALUE_BYTES {
        return Err(bad(
            field("attributeData"),
            format!("longer than {MAX_VALUE_BYTES} bytes"),
        ));
    }
    Ok(AttributeChange {
        attribute_id,
        data,
        data_type,
    })
}

/// Raw numbers must have exactly their type's width, so the converted
/// value is never a guess.
fn check_width(t: DataType, bytes: &[u8]) -> Result<(), String> {
    match t.width() {
        Some(w) if bytes.len() != w => Err(format!("{t} takes {w} bytes, got {}", bytes.len())),
        _ => Ok(()),
    }
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
    pub fn encode(&self) -> Vec<u8> {
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

    /// The length of [`Stored::encode`]'s output, without encoding.
    pub fn encoded_len(&self) -> u64 {
        let sink = self.only_sink.as_deref().map_or(0, |s| s.len().min(255));
        (35 + self.message_type.len().min(255) + sink + self.body.len()) as u64
    }

    /// Reads a record written by [`Stored::encode`].
    ///
    /// # Errors
    /// A description of what is malformed.
    pub fn decode(seq: u64, b: &[u8]) -> Result<Self, String> {
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
    use serde_json::json;

    #[test]
    fn an_attribute_message_has_afero_fields_in_order_and_lowercase_hex() {
        let change = parse_changes(
            br#"{"attributeId":1024,"attributeData":"F4FF","attributeDataType":"SINT16"}"#,
        )
        .unwrap()
        .remove(0);
        let ext = json!({"serial": "S1"}).as_object().unwrap().clone();
        let now = UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        let m = NewMessage::attribute("dev1", &change, &ext, now);
        let text = String::from_utf8(m.body).unwrap();
        let expected = format!(
            r#"{{"id":"{}","deviceId":"dev1","utcTimestamp":1700000000123,"attributeId":1024,"attributeData":"f4ff","attributeDataType":"SINT16","attributeDataConverted":"-12","extendedData":{{"serial":"S1"}}}}"#,
            m.id
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn typed_values_are_converted_by_their_type() {
        let cases = [
            (
                r#"{"attributeId":1,"value":true,"attributeDataType":"BOOLEAN"}"#,
                "01",
                "true",
            ),
            (
                r#"{"attributeId":1,"value":"21.5","attributeDataType":"Q_15_16"}"#,
                "00801500",
                "21.5",
            ),
            (
                r#"{"attributeId":1,"value":-12,"attributeDataType":"SINT8"}"#,
                "f4",
                "-12",
            ),
            (
                r#"{"attributeId":1,"value":"hi","attributeDataType":"UTF8S"}"#,
                "6869",
                "hi",
            ),
            (
                r#"{"attributeId":1,"value":"CAFE","attributeDataType":"BYTES"}"#,
                "cafe",
                "cafe",
            ),
        ];
        for (input, data, converted) in cases {
            let c = parse_changes(input.as_bytes()).unwrap().remove(0);
            assert_eq!(hex(&c.data), data, "{input}");
            assert_eq!(c.data_type.to_display(&c.data), converted, "{input}");
        }
    }

    #[test]
    fn bad_input_names_the_field() {
        let cases = [
            (
                r#"[{"attributeId":1,"value":1,"attributeDataType":"SINT8"},{"attributeId":70000}]"#,
                "[1].attributeId",
            ),
            (
                r#"{"attributeId":1,"attributeData":"abc","attributeDataType":"BYTES"}"#,
                "attributeData",
            ),
            (
                r#"{"attributeId":1,"attributeData":"01","attributeDataType":"SINT16"}"#,
                "attributeData",
            ),
            (
                r#"{"attributeId":1,"value":300,"attributeDataType":"SINT8"}"#,
                "value",
            ),
            (
                r#"{"attributeId":1,"value":1,"attributeDataType":"FLOAT"}"#,
                "attributeDataType",
            ),
            (
                r#"{"attributeId":1,"attributeDataType":"SINT8"}"#,
                "attributeData",
            ),
            (
                r#"{"attributeId":1,"value":1,"attributeDataType":"SINT8","x":1}"#,
                "x",
            ),
            (r#"[]"#, "body"),
            (r#"nope"#, "body"),
        ];
        for (input, field) in cases {
            let e = parse_changes(input.as_bytes()).unwrap_err();
            assert_eq!(e.field, field, "{input}: {e}");
        }
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
