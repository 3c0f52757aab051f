//! Afero's attribute messages: the attribute data types, the changes the
//! daemon takes in (`POST /v1/attributes`, the MCU's updates) and the
//! Cloud Notify message it sends upstream for each.

use firmware_bridge::value::{hex, unhex};
use serde::Serialize;
use serde_json::{Map, Value};

/// Afero's attribute data types (`attributeDataType`) and their
/// bytes <-> text conversion, as the afLib4 module side defines them.
pub use firmware_bridge::DataType;

/// The `type` property of attribute messages.
pub const ATTRIBUTE: &str = "attribute";
/// Largest attribute value accepted (Afero's attribute size limit).
pub const MAX_VALUE_BYTES: usize = 1536;

/// One attribute change in Afero Cloud Notify's shape: fields in Afero's
/// order, `attributeData` in lowercase hex, `attributeDataConverted` the
/// value as text by its type, `extendedData` only when there is some.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttributeMessage<'a> {
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

impl<'a> AttributeMessage<'a> {
    /// The message `id` for `change` on `device_id`, stamped
    /// `utc_timestamp` (Unix milliseconds).
    pub fn new(
        id: &'a str,
        device_id: &'a str,
        utc_timestamp: u64,
        change: &AttributeChange,
        extended: &'a Map<String, Value>,
    ) -> Self {
        Self {
            id,
            device_id,
            utc_timestamp,
            attribute_id: change.attribute_id,
            attribute_data: hex(&change.data),
            attribute_data_type: change.data_type.as_str(),
            attribute_data_converted: change.data_type.to_display(&change.data),
            extended_data: (!extended.is_empty()).then_some(extended),
        }
    }

    /// The message's JSON bytes.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain strings, numbers and a JSON map cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
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
        let m = AttributeMessage::new("m1", "dev1", 1_700_000_000_123, &change, &ext);
        assert_eq!(
            String::from_utf8(m.encode()).unwrap(),
            r#"{"id":"m1","deviceId":"dev1","utcTimestamp":1700000000123,"attributeId":1024,"attributeData":"f4ff","attributeDataType":"SINT16","attributeDataConverted":"-12","extendedData":{"serial":"S1"}}"#
        );
        let none = Map::new();
        let bare = AttributeMessage::new("m2", "dev1", 1, &change, &none);
        assert!(!String::from_utf8(bare.encode())
            .unwrap()
            .contains("extendedData"));
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
}
