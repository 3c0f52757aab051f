//! The device's answer payload (cloud-relay.md §2).
//!
//! The device writes the modern form ([`Answer::encode`]): root `status`,
//! `headers` with only `Content-Type` and `Content-Disposition`, then
//! `body` (text) or `blobUrl` (a blob name relative to the device's upload
//! folder). The cloud reads answers as tolerantly as the Cloud Relay
//! ([`Answer::parse`]): keys case-insensitive, a double-encoded string
//! unwrapped, the legacy `headers.status`, unknown keys ignored.

use serde::Serialize;
use serde_json::{Map, Value};

use super::request::get;

/// Keep serialized answers under this; IoT Hub's limit is 128 KiB and the
/// rest is headroom for the MQTT and hub framing (§7.1).
pub const MAX_PAYLOAD_BYTES: usize = 120 * 1024;

/// Content-Type of blob answers without one: the Cloud Relay needs a
/// Content-Type for blob answers (a null one makes it answer 500).
pub const DEFAULT_BLOB_CONTENT_TYPE: &str = "application/octet-stream";

/// Why an answer is an "Invalid result" (1002) for the Cloud Relay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The payload is not JSON.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// The payload is a JSON string whose content is not JSON.
    #[error("inner string not JSON: {0}")]
    InnerNotJson(String),
    /// The payload is JSON but not an object.
    #[error("the answer is not a JSON object")]
    NotObject,
    /// `status` or `headers.status` is not an integer.
    #[error("{field}: {reason}")]
    Status {
        /// `status` or `headers.status`.
        field: &'static str,
        /// What the value is.
        reason: String,
    },
    /// `headers` is not an object.
    #[error("headers is not an object")]
    HeadersNotObject,
    /// `blobUrl` is present but not a string.
    #[error("blobUrl is not a string")]
    BlobUrlNotString,
    /// An inline answer's status is outside 100-599.
    #[error("status {0} is not an HTTP status")]
    NotHttpStatus(i64),
}

/// The headers an answer carries (the Cloud Relay passes only these two
/// on, §5).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnswerHeaders {
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Content-Disposition`.
    pub content_disposition: Option<String>,
}

/// Where the answer's body is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerBody {
    /// In the answer, as text.
    Inline(String),
    /// In an uploaded blob, named relative to the device's upload folder,
    /// e.g. `RestApi/<uuid>`.
    Blob(String),
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status. The Cloud Relay answers blob answers 200 whatever
    /// this says.
    pub status: u16,
    /// Headers for the client.
    pub headers: AnswerHeaders,
    /// The body.
    pub body: AnswerBody,
}

#[derive(Serialize)]
struct Payload<'a> {
    status: u16,
    headers: PayloadHeaders<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    #[serde(rename = "blobUrl", skip_serializing_if = "Option::is_none")]
    blob_url: Option<&'a str>,
}

#[derive(Serialize)]
struct PayloadHeaders<'a> {
    #[serde(rename = "Content-Type", skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    #[serde(
        rename = "Content-Disposition",
        skip_serializing_if = "Option::is_none"
    )]
    content_disposition: Option<&'a str>,
}

impl Answer {
    /// The payload in the modern form. Blob answers always name a
    /// Content-Type ([`DEFAULT_BLOB_CONTENT_TYPE`] when there is none).
    pub fn encode(&self) -> Vec<u8> {
        let (body, blob_url, default_type) = match &self.body {
            AnswerBody::Inline(text) => (Some(text.as_str()), None, None),
            AnswerBody::Blob(name) => (None, Some(name.as_str()), Some(DEFAULT_BLOB_CONTENT_TYPE)),
        };
        let payload = Payload {
            status: self.status,
            headers: PayloadHeaders {
                content_type: self.headers.content_type.as_deref().or(default_type),
                content_disposition: self.headers.content_disposition.as_deref(),
            },
            body,
            blob_url,
        };
        // Serializing plain strings and numbers cannot fail.
        serde_json::to_vec(&payload).unwrap_or_default()
    }

    /// Parses an answer as the Cloud Relay does. An inline answer's status
    /// is `status`, else `headers.status`, else 200; its body is a string
    /// verbatim, other JSON compact, booleans as C# prints them.
    ///
    /// # Errors
    /// [`AnswerError`] for what makes it an "Invalid result" (1002).
    pub fn parse(payload: &[u8]) -> Result<Self, AnswerError> {
        let mut root: Value =
            serde_json::from_slice(payload).map_err(|e| AnswerError::NotJson(e.to_string()))?;
        if let Value::String(inner) = &root {
            root = serde_json::from_str(inner)
                .map_err(|e| AnswerError::InnerNotJson(e.to_string()))?;
        }
        let Value::Object(root) = root else {
            return Err(AnswerError::NotObject);
        };
        let status = int(get(&root, "status"), "status")?;
        let headers = match get(&root, "headers") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(h)) => h.clone(),
            Some(_) => return Err(AnswerError::HeadersNotObject),
        };
        let status = status.or(int(get(&headers, "status"), "headers.status")?);
        let text = |k: &str| match get(&headers, k) {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        let headers = AnswerHeaders {
            content_type: text("Content-Type"),
            content_disposition: text("Content-Disposition"),
        };
        if let Some((_, blob)) = root.iter().find(|(k, _)| k.eq_ignore_ascii_case("blobUrl")) {
            let Value::String(name) = blob else {
                return Err(AnswerError::BlobUrlNotString);
            };
            return Ok(Self {
                status: status.and_then(|s| u16::try_from(s).ok()).unwrap_or(200),
                headers,
                body: AnswerBody::Blob(name.clone()),
            });
        }
        let status = status.unwrap_or(200);
        let status = u16::try_from(status)
            .ok()
            .filter(|s| (100..=599).contains(s))
            .ok_or(AnswerError::NotHttpStatus(status))?;
        let body = match get(&root, "body") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            // C#'s bool ToString().
            Some(Value::Bool(b)) => if *b { "True" } else { "False" }.to_string(),
            Some(v) => v.to_string(),
        };
        Ok(Self {
            status,
            headers,
            body: AnswerBody::Inline(body),
        })
    }
}

/// Newtonsoft's `int?`: null, an integer, a rounded float or a numeric
/// string; anything else is an error naming `field`.
fn int(v: Option<&Value>, field: &'static str) -> Result<Option<i64>, AnswerError> {
    let not_int = |what: String| AnswerError::Status {
        field,
        reason: format!("{what} is not an integer"),
    };
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f.round() as i64))
            .map(Some)
            .ok_or_else(|| not_int(n.to_string())),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| not_int(format!("{s:?}"))),
        Some(other) => Err(not_int(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inline(status: u16, content_type: Option<&str>, body: &str) -> Answer {
        Answer {
            status,
            headers: AnswerHeaders {
                content_type: content_type.map(str::to_string),
                content_disposition: None,
            },
            body: AnswerBody::Inline(body.into()),
        }
    }

    #[test]
    fn spec_examples_read_and_write_byte_exact() {
        for example in [
            r#"{"status":200,"headers":{"Content-Type":"application/json;charset=UTF-8"},"body":"{\"apiRevision\":\"8.0\"}"}"#,
            r#"{"status":200,"headers":{"Content-Type":"application/zip","Content-Disposition":"attachment; filename=\"backup.zip\""},"blobUrl":"RestApi/7c9e6679-7425-40de-944b-e07fc1f90ae7"}"#,
        ] {
            let a = Answer::parse(example.as_bytes()).unwrap();
            assert_eq!(String::from_utf8(a.encode()).unwrap(), example);
        }
    }

    #[test]
    fn blob_answers_always_name_a_content_type() {
        let a = Answer {
            status: 200,
            headers: AnswerHeaders::default(),
            body: AnswerBody::Blob("RestApi/x".into()),
        };
        let text = String::from_utf8(a.encode()).unwrap();
        assert!(text.contains(r#""Content-Type":"application/octet-stream""#));
    }

    #[test]
    fn answers_parse_in_modern_legacy_and_double_encoded_forms() {
        let modern =
            br#"{"status":201,"headers":{"Content-Type":"application/json"},"body":"{\"a\":1}"}"#;
        assert_eq!(
            Answer::parse(modern).unwrap(),
            inline(201, Some("application/json"), r#"{"a":1}"#)
        );
        let legacy =
            br#"{"Headers":{"Status":404,"content-type":"text/plain"},"Body":"Not found"}"#;
        assert_eq!(
            Answer::parse(legacy).unwrap(),
            inline(404, Some("text/plain"), "Not found")
        );
        let double =
            serde_json::to_vec(&Value::String(r#"{"Status":200,"Body":{"x":[1]}}"#.into()))
                .unwrap();
        assert_eq!(
            Answer::parse(&double).unwrap(),
            inline(200, None, r#"{"x":[1]}"#)
        );
        assert_eq!(
            Answer::parse(br#"{"body":true}"#).unwrap(),
            inline(200, None, "True")
        );
        let blob =
            br#"{"status":200,"headers":{"Content-Type":"application/zip"},"blobUrl":"RestApi/1"}"#;
        assert!(matches!(
            Answer::parse(blob),
            Ok(Answer { body: AnswerBody::Blob(name), .. }) if name == "RestApi/1"
        ));
    }

    #[test]
    fn malformed_answers_are_invalid_results() {
        for bad in [
            &b"[1,2]"[..],
            b"null",
            b"42",
            b"\"not an object\"",
            br#"{"status":"abc"}"#,
            br#"{"status":true}"#,
            br#"{"headers":[]}"#,
            br#"{"blobUrl":null}"#,
            br#"{"status":42}"#,
            b"",
        ] {
            assert!(
                Answer::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            Answer::parse(br#"{"status":"abc"}"#)
                .unwrap_err()
                .to_string(),
            r#"status: "abc" is not an integer"#
        );
    }
}
