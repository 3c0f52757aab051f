//! The cloud's side: `setAttribute` / `getAttribute` direct methods, the
//! `setAttribute` C2D message and desired properties under `attributes`,
//! parsed here and handed to the bridge task as [`Command`]s. Answers carry
//! the MCU's UPDATE with its state mapped to an HTTP-like status.

use firmware_bridge::value::hex;
use firmware_bridge::DataType;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tracing::warn;

use super::BridgeHandle;
use crate::hub::{C2dMessage, MethodCall, MethodResponse, Router};

/// A value as the cloud gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ValueInput {
    /// `value`: the string form of the profile's data type (`"true"`, `"21"`).
    Text(String),
    /// `attributeData`: raw bytes in hex.
    Hex(String),
}

/// Where a SET came from; only direct methods wait for the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Method,
    C2d,
    Desired,
}

/// Work for the bridge task.
#[derive(Debug)]
pub(crate) enum Command {
    Set {
        attr_id: u16,
        value: ValueInput,
        origin: Origin,
        reply: Option<oneshot::Sender<Reply>>,
    },
    Get {
        attr_id: u16,
        reply: oneshot::Sender<Reply>,
    },
}

/// The answer to a cloud request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    /// HTTP-like status: 200, 400, 403, 404, 409, 502, 503, 504.
    pub(crate) status: u16,
    /// JSON body.
    pub(crate) body: Value,
}

impl Reply {
    /// An error answer naming the attribute when known.
    pub(crate) fn error(status: u16, attr_id: Option<u16>, error: &str, detail: &str) -> Self {
        let mut body = json!({ "error": error, "detail": detail });
        if let Some(id) = attr_id {
            body["attributeId"] = json!(id);
        }
        Self { status, body }
    }

    /// An answer carrying a value, in the UPDATE's terms.
    pub(crate) fn value(
        attr_id: u16,
        data_type: DataType,
        data: &[u8],
        state: u8,
        reason: u8,
    ) -> Self {
        Self {
            status: status_for(state, reason),
            body: json!({
                "attributeId": attr_id,
                "attributeData": hex(data),
                "attributeDataType": data_type.as_str(),
                "value": data_type.to_display(data),
                "state": state,
                "reason": reason,
            }),
        }
    }

    /// As a direct-method response.
    pub(crate) fn into_response(self) -> MethodResponse {
        MethodResponse::json(self.status, &self.body)
    }
}

/// Maps an UPDATE state (spec §5.3) to the status of the cloud's answer:
/// 200 updated, 404 unknown attribute, 400 length exceeded, 403 forbidden,
/// 409 conflict or refused by the MCU application (state 5 + reason 0xFD),
/// 502 any other failure.
pub(crate) fn status_for(state: u8, reason: u8) -> u16 {
    use firmware_bridge::message::{reason as why, state as st};
    const CONFLICT: u8 = 4;
    match state {
        st::UPDATED => 200,
        st::UNKNOWN_UUID => 404,
        st::LENGTH_EXCEEDED => 400,
        st::FORBIDDEN => 403,
        CONFLICT => 409,
        st::FAILED if reason == why::INTERNAL_SET_REJECTED => 409,
        _ => 502,
    }
}

fn bad_request(detail: &str) -> Reply {
    Reply::error(400, None, "invalid request", detail)
}

/// Reads `attributeId` (1..=65535) from a request object.
fn attribute_id(doc: &Value) -> Result<u16, Reply> {
    let id = doc
        .get("attributeId")
        .ok_or_else(|| bad_request("attributeId is required"))?;
    id.as_u64()
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| bad_request("attributeId must be an integer from 1 to 65535"))
}

/// The string form of a JSON scalar; numbers and booleans are accepted
/// because JSON writers rarely quote them.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn parse_object(body: &[u8]) -> Result<Value, Reply> {
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| bad_request(&format!("the payload is not JSON: {e}")))?;
    if !doc.is_object() {
        return Err(bad_request("the payload must be a JSON object"));
    }
    Ok(doc)
}

/// Parses `{"attributeId": 1, "value": "true"}` or
/// `{"attributeId": 1, "attributeData": "01"}`.
///
/// # Errors
/// A 400 [`Reply`] naming what is wrong.
pub(crate) fn parse_set(body: &[u8]) -> Result<(u16, ValueInput), Reply> {
    let doc = parse_object(body)?;
    let id = attribute_id(&doc)?;
    match (doc.get("value"), doc.get("attributeData")) {
        (Some(_), Some(_)) => Err(bad_request("give either value or attributeData, not both")),
        (Some(v), None) => scalar_text(v)
            .map(|t| (id, ValueInput::Text(t)))
            .ok_or_else(|| bad_request("value must be a string, number or boolean")),
        (None, Some(Value::String(h))) => Ok((id, ValueInput::Hex(h.clone()))),
        (None, Some(_)) => Err(bad_request("attributeData must be a hex string")),
        (None, None) => Err(bad_request("value or attributeData is required")),
    }
}

/// Parses `{"attributeId": 1}`.
///
/// # Errors
/// A 400 [`Reply`].
pub(crate) fn parse_get(body: &[u8]) -> Result<u16, Reply> {
    attribute_id(&parse_object(body)?)
}

/// The SETs a desired-properties document asks for: `attributes` maps
/// attribute ids (as strings) to values in their string form.
pub(crate) fn parse_desired(doc: &Value) -> Vec<(u16, ValueInput)> {
    let Some(attrs) = doc.get("attributes").and_then(Value::as_object) else {
        return Vec::new();
    };
    attrs
        .iter()
        .filter_map(|(k, v)| {
            let parsed = k.parse::<u16>().ok().zip(scalar_text(v));
            if parsed.is_none() && !v.is_null() {
                warn!(key = %k, "ignoring desired attribute: not an id with a scalar value");
            }
            parsed.map(|(id, t)| (id, ValueInput::Text(t)))
        })
        .collect()
}

/// Registers `setAttribute` / `getAttribute`, the `setAttribute` C2D
/// handler and the desired-properties handler. Call before the hub starts;
/// the bridge task may start before or after.
pub(crate) fn register(router: &mut Router, handle: &BridgeHandle) {
    let h = handle.clone();
    router.method("setAttribute", move |call: MethodCall| {
        let h = h.clone();
        async move { h.set_attribute(&call.payload).await.into_response() }
    });
    let h = handle.clone();
    router.method("getAttribute", move |call: MethodCall| {
        let h = h.clone();
        async move { h.get_attribute(&call.payload).await.into_response() }
    });
    let h = handle.clone();
    router.c2d("setAttribute", move |m: C2dMessage| {
        let h = h.clone();
        async move { h.set_attribute_c2d(&m.payload).await }
    });
    let h = handle.clone();
    router.desired(move |doc, _full| h.apply_desired(&doc));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_states_map_to_http_like_statuses() {
        assert_eq!(status_for(0, 2), 200);
        assert_eq!(status_for(2, 2), 404);
        assert_eq!(status_for(3, 2), 400);
        assert_eq!(status_for(6, 2), 403);
        assert_eq!(status_for(4, 2), 409);
        assert_eq!(status_for(5, 0xFD), 409);
        assert_eq!(status_for(5, 2), 502);
        assert_eq!(status_for(1, 2), 502);
    }

    #[test]
    fn set_requests_take_a_typed_value_or_raw_hex() {
        assert_eq!(
            parse_set(br#"{"attributeId": 1, "value": "true"}"#).unwrap(),
            (1, ValueInput::Text("true".into()))
        );
        assert_eq!(
            parse_set(br#"{"attributeId": 1024, "value": 3}"#).unwrap(),
            (1024, ValueInput::Text("3".into()))
        );
        assert_eq!(
            parse_set(br#"{"attributeId": 1, "attributeData": "01"}"#).unwrap(),
            (1, ValueInput::Hex("01".into()))
        );
    }

    #[test]
    fn malformed_requests_get_400_naming_the_problem() {
        for body in [
            &b"not json"[..],
            br#"[1]"#,
            br#"{"value": "true"}"#,
            br#"{"attributeId": 70000, "value": "1"}"#,
            br#"{"attributeId": 1}"#,
            br#"{"attributeId": 1, "value": "1", "attributeData": "01"}"#,
            br#"{"attributeId": 1, "value": {"x": 1}}"#,
        ] {
            let e = parse_set(body).unwrap_err();
            assert_eq!(e.status, 400, "{}", String::from_utf8_lossy(body));
        }
        assert_eq!(parse_get(br#"{"attributeId": 0}"#).unwrap_err().status, 400);
    }

    #[test]
    fn desired_attributes_become_sets_and_other_keys_are_ignored() {
        let doc = json!({"attributes": {"1": "true", "1024": 2, "x": "1"}, "$version": 3});
        let mut got = parse_desired(&doc);
        got.sort_by_key(|(id, _)| *id);
        assert_eq!(
            got,
            [
                (1, ValueInput::Text("true".into())),
                (1024, ValueInput::Text("2".into()))
            ]
        );
        assert!(parse_desired(&json!({"site": "B2"})).is_empty());
    }

    #[test]
    fn value_answers_carry_hex_type_and_display_form() {
        let r = Reply::value(1, DataType::Boolean, &[1], 0, 2);
        assert_eq!(r.status, 200);
        assert_eq!(r.body["attributeData"], "01");
        assert_eq!(r.body["attributeDataType"], "BOOLEAN");
        assert_eq!(r.body["value"], "true");
    }
}
