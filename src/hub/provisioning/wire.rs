//! The DPS device API's topics and JSON documents (MQTT, api-version
//! 2019-03-31): what tether publishes and how it reads the answers on
//! `$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::hub::properties;

/// Where every answer arrives.
pub(crate) const RESPONSE_FILTER: &str = "$dps/registrations/res/#";
const RESPONSE_PREFIX: &str = "$dps/registrations/res/";

/// The register request's topic.
pub(crate) fn register_topic(rid: &str) -> String {
    format!("$dps/registrations/PUT/iotdps-register/?$rid={rid}")
}

/// The operation status request's topic.
pub(crate) fn poll_topic(rid: &str, operation_id: &str) -> String {
    format!(
        "$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={operation_id}"
    )
}

/// The register request's body: `{"registrationId": ..., "payload": ...}`.
pub(crate) fn register_body(registration_id: &str, payload: Option<&Value>) -> Vec<u8> {
    let mut body = json!({ "registrationId": registration_id });
    if let (Some(p), Some(map)) = (payload, body.as_object_mut()) {
        map.insert("payload".into(), p.clone());
    }
    body.to_string().into_bytes()
}

/// Whether `id` can go into a topic unchanged: DPS's operation ids are
/// made of these characters, and anything else (`+`, `#`, `&`, `/`) would
/// change the topic's meaning.
pub(crate) fn is_topic_safe(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~:".contains(c))
}

/// One answer from DPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    /// The HTTP-like status in the topic.
    pub status: u16,
    /// The request id it answers.
    pub rid: Option<String>,
    /// `retry-after`, when given.
    pub retry_after: Option<Duration>,
    /// The body (empty when it was not JSON).
    pub body: Body,
}

/// `RegistrationOperationStatus`, or an error document, as far as tether
/// reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Body {
    /// The operation to poll.
    pub operation_id: Option<String>,
    /// `assigning`, `assigned`, `failed`, `disabled`, `unassigned`.
    pub status: Option<String>,
    /// The registration, once DPS has one.
    pub registration_state: Option<RegistrationState>,
    /// Error documents: DPS's six-digit code.
    pub error_code: Option<u64>,
    /// Error documents: the message.
    pub message: Option<String>,
}

/// `DeviceRegistrationResult`, as far as tether reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct RegistrationState {
    /// The hub's host name.
    pub assigned_hub: Option<String>,
    /// The device id in that hub.
    pub device_id: Option<String>,
    /// Same values as the operation's status.
    pub status: Option<String>,
    /// Why it failed.
    pub error_code: Option<u64>,
    /// Why it failed, in words.
    pub error_message: Option<String>,
}

/// Reads an answer; `None` when `topic` is not one.
///
/// # Errors
/// A message saying what is wrong with an answer that cannot be read.
pub(crate) fn parse(topic: &str, payload: &[u8]) -> Option<Result<Response, String>> {
    let rest = topic.strip_prefix(RESPONSE_PREFIX)?;
    Some(parse_rest(rest, payload))
}

fn parse_rest(rest: &str, payload: &[u8]) -> Result<Response, String> {
    let (status, query) = rest.split_once('/').unwrap_or((rest, ""));
    let status: u16 = status
        .parse()
        .map_err(|_| format!("status {status:?} is not a number"))?;
    let query = properties::decode(query.strip_prefix('?').unwrap_or(query));
    let rid = properties::get(&query, "$rid").map(str::to_owned);
    let retry_after = properties::get(&query, "retry-after")
        .map(|v| {
            v.parse()
                .map(Duration::from_secs)
                .map_err(|_| format!("retry-after {v:?} is not a number of seconds"))
        })
        .transpose()?;
    // Error answers may carry no body or plain text: the status still says
    // what happened.
    let body = if (200..300).contains(&status) {
        serde_json::from_slice(payload)
            .map_err(|e| format!("the body is not the JSON expected: {e}"))?
    } else {
        serde_json::from_slice(payload).unwrap_or_default()
    };
    Ok(Response {
        status,
        rid,
        retry_after,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_the_documented_ones() {
        assert_eq!(
            register_topic("1"),
            "$dps/registrations/PUT/iotdps-register/?$rid=1"
        );
        assert_eq!(
            poll_topic("2", "4.d0a6.e717"),
            "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=4.d0a6.e717"
        );
    }

    #[test]
    fn the_register_body_carries_the_registration_id_and_the_payload() {
        let body = register_body("dev-7", Some(&json!({"site": "A"})));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"registrationId": "dev-7", "payload": {"site": "A"}})
        );
        let v: Value = serde_json::from_slice(&register_body("d", None)).unwrap();
        assert_eq!(v, json!({"registrationId": "d"}));
    }

    /// The example flow in azure-sdk-for-c's `az_iot_provisioning_client.c`.
    #[test]
    fn a_202_with_retry_after_and_an_assignment_are_read() {
        let r = parse(
            "$dps/registrations/res/202/?$rid=1&retry-after=3",
            br#"{"operationId":"4.d0a671905ea5b2c8.e7173b7b","status":"assigning"}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!((r.status, r.rid.as_deref()), (202, Some("1")));
        assert_eq!(r.retry_after, Some(Duration::from_secs(3)));
        assert_eq!(
            r.body.operation_id.as_deref(),
            Some("4.d0a671905ea5b2c8.e7173b7b")
        );
        let r = parse(
            "$dps/registrations/res/200/?$rid=2",
            br#"{"operationId":"x","status":"assigned","registrationState":{
                "registrationId":"dev-7","assignedHub":"h.azure-devices.net",
                "deviceId":"dev-7","status":"assigned","substatus":"initialAssignment"}}"#,
        )
        .unwrap()
        .unwrap();
        let state = r.body.registration_state.unwrap();
        assert_eq!(state.assigned_hub.as_deref(), Some("h.azure-devices.net"));
        assert_eq!(r.retry_after, None);
    }

    #[test]
    fn error_answers_keep_their_code_and_message_or_do_without() {
        let r = parse(
            "$dps/registrations/res/401/?$rid=1",
            br#"{"errorCode":401002,"trackingId":"t","message":"Invalid certificate."}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!((r.status, r.body.error_code), (401, Some(401_002)));
        let r = parse("$dps/registrations/res/429/?$rid=1&retry-after=5", b"busy")
            .unwrap()
            .unwrap();
        assert_eq!(r.body, Body::default());
    }

    #[test]
    fn other_topics_are_not_answers_and_garbage_is_an_error() {
        assert!(parse("$iothub/twin/res/200/?$rid=1", b"{}").is_none());
        assert!(parse("$dps/registrations/res/abc/?$rid=1", b"{}")
            .unwrap()
            .is_err());
        assert!(parse("$dps/registrations/res/200/?$rid=1", b"\xff")
            .unwrap()
            .is_err());
        assert!(parse("$dps/registrations/res/202/?retry-after=soon", b"{}")
            .unwrap()
            .is_err());
    }

    #[test]
    fn only_plain_operation_ids_go_into_a_topic() {
        assert!(is_topic_safe("4.d0a671905ea5b2c8.e7173b7b-0e54"));
        assert!(!is_topic_safe("a/b") && !is_topic_safe("a#") && !is_topic_safe(""));
    }
}
