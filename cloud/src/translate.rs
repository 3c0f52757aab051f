//! HTTP request → Cloud Relay method payload (cloud-relay.md §1) and
//! device answer → HTTP response parts (§2). Pure: no IO.

use serde::Serialize;
use serde_json::{Map, Value};

/// The client request, reduced to what the Cloud Relay forwards.
#[derive(Debug, Clone, Default)]
pub struct ClientRequest {
    /// `GET`, `PUT`, `POST` or `DELETE`.
    pub method: String,
    /// The `Remote-Query` header, verbatim.
    pub path: String,
    /// `Accept`, all values joined with `", "`.
    pub accept: Option<String>,
    /// `Content-Type` (POST/PUT only).
    pub content_type: Option<String>,
    /// `Content-Disposition` (POST/PUT only).
    pub content_disposition: Option<String>,
    /// The client's byte count (POST/PUT only).
    pub content_length: Option<u64>,
}

/// Where the device finds the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyRef {
    /// GET/DELETE: none.
    None,
    /// Decoded text.
    Inline(String),
    /// A signed URL to GET.
    Blob(String),
}

/// Key names as Newtonsoft's camel-casing writes them: only the leading
/// capitals are lowered, hence `content-Type`.
#[derive(Serialize)]
struct Payload<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    #[serde(rename = "blobUrl", skip_serializing_if = "Option::is_none")]
    blob_url: Option<&'a str>,
    path: &'a str,
    method: &'a str,
    headers: Headers<'a>,
}

#[derive(Serialize)]
struct Headers<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    accept: Option<&'a str>,
    #[serde(rename = "content-Type", skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    #[serde(
        rename = "content-Disposition",
        skip_serializing_if = "Option::is_none"
    )]
    content_disposition: Option<&'a str>,
    #[serde(rename = "content-Length", skip_serializing_if = "Option::is_none")]
    content_length: Option<u64>,
}

/// Whether the method carries a body; GET and DELETE bodies and content
/// headers are dropped (§1 step 1).
pub fn has_body(method: &str) -> bool {
    matches!(method, "POST" | "PUT")
}

/// Form bodies always go through a blob (§1 step 2).
pub fn is_form(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        let essence = ct.split(';').next().unwrap_or_default().trim();
        essence.eq_ignore_ascii_case("application/x-www-form-urlencoded")
            || essence.eq_ignore_ascii_case("multipart/form-data")
    })
}

/// The method payload for `req` with `body`.
pub fn request_payload(req: &ClientRequest, body: &BodyRef) -> Vec<u8> {
    let with_body = has_body(&req.method);
    fn content(v: &Option<String>, with_body: bool) -> Option<&str> {
        v.as_deref().filter(|_| with_body)
    }
    let (body, blob_url) = match body {
        BodyRef::None => (None, None),
        BodyRef::Inline(text) => (Some(text.as_str()), None),
        BodyRef::Blob(url) => (None, Some(url.as_str())),
    };
    let payload = Payload {
        body,
        blob_url,
        path: &req.path,
        method: &req.method,
        headers: Headers {
            accept: req.accept.as_deref(),
            content_type: content(&req.content_type, with_body),
            content_disposition: content(&req.content_disposition, with_body),
            content_length: req.content_length.filter(|_| with_body),
        },
    };
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// Decodes a body to text in its charset: UTF-8 unless Latin-1 is named;
/// a BOM is stripped and invalid bytes become U+FFFD, like the Cloud
/// Relay's `StreamReader`.
pub fn decode_text(bytes: &[u8], content_type: Option<&str>) -> String {
    let charset = content_type
        .and_then(|ct| {
            ct.split(';')
                .filter_map(|p| p.trim().split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("charset"))
                .map(|(_, v)| v.trim().trim_matches('"').to_ascii_lowercase())
        })
        .unwrap_or_default();
    if matches!(charset.as_str(), "iso-8859-1" | "latin1" | "latin-1") {
        return bytes.iter().map(|&b| char::from(b)).collect();
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    String::from_utf8_lossy(bytes).into_owned()
}

/// A device answer, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceAnswer {
    /// The body is in the answer.
    Inline {
        /// `status`, else `headers.status`, else 200.
        status: u16,
        /// `headers.Content-Type`.
        content_type: Option<String>,
        /// `headers.Content-Disposition`.
        content_disposition: Option<String>,
        /// The body as it goes to the client.
        body: Vec<u8>,
    },
    /// The body is in an uploaded blob; always answered 200.
    Blob {
        /// `headers.Content-Type`.
        content_type: Option<String>,
        /// `headers.Content-Disposition`.
        content_disposition: Option<String>,
        /// Relative to the device's upload folder, e.g. `RestApi/<uuid>`.
        name: String,
    },
}

/// Parses a device answer as tolerantly as the Cloud Relay (§2): keys
/// case-insensitive, a double-encoded string unwrapped, unknown keys
/// ignored.
///
/// # Errors
/// What makes it an "Invalid result" (1002).
pub fn parse_answer(payload: &[u8]) -> Result<DeviceAnswer, String> {
    let mut root: Value = serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
    if let Value::String(inner) = &root {
        root = serde_json::from_str(inner).map_err(|e| format!("inner string not JSON: {e}"))?;
    }
    let Value::Object(root) = root else {
        return Err("the answer is not a JSON object".into());
    };
    let status = int(get(&root, "status")).map_err(|e| format!("status: {e}"))?;
    let headers = match get(&root, "headers") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(h)) => h.clone(),
        Some(_) => return Err("headers is not an object".into()),
    };
    let header_status = int(get(&headers, "status")).map_err(|e| format!("headers.status: {e}"))?;
    let text = |k: &str| match get(&headers, k) {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    let (content_type, content_disposition) = (text("Content-Type"), text("Content-Disposition"));
    if let Some(blob) = root.iter().find(|(k, _)| k.eq_ignore_ascii_case("blobUrl")) {
        let Value::String(name) = blob.1 else {
            return Err("blobUrl is not a string".into());
        };
        return Ok(DeviceAnswer::Blob {
            content_type,
            content_disposition,
            name: name.clone(),
        });
    }
    let status = status.or(header_status).unwrap_or(200);
    if !(100..=599).contains(&status) {
        return Err(format!("status {status} is not an HTTP status"));
    }
    let body = match get(&root, "body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.clone().into_bytes(),
        // C#'s bool ToString().
        Some(Value::Bool(b)) => if *b { "True" } else { "False" }.into(),
        Some(v) => v.to_string().into_bytes(),
    };
    Ok(DeviceAnswer::Inline {
        status: u16::try_from(status).map_err(|_| "status out of range".to_string())?,
        content_type,
        content_disposition,
        body,
    })
}

fn get<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// Newtonsoft's `int?`: null, an integer, a rounded float or a numeric
/// string; anything else is an error.
fn int(v: Option<&Value>) -> Result<Option<i64>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f.round() as i64))
            .map(Some)
            .ok_or_else(|| format!("{n} is not an integer")),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("{s:?} is not an integer")),
        Some(other) => Err(format!("{other} is not an integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_use_the_cloud_relay_key_names_and_drop_get_bodies() {
        let mut req = ClientRequest {
            method: "POST".into(),
            path: "/api/rest/v1/some/resource?x=1".into(),
            accept: Some("application/json".into()),
            content_type: Some("application/json; charset=utf-8".into()),
            content_length: Some(14),
            ..ClientRequest::default()
        };
        let body = BodyRef::Inline(r#"{"value":21.5}"#.into());
        assert_eq!(
            String::from_utf8(request_payload(&req, &body)).unwrap(),
            r#"{"body":"{\"value\":21.5}","path":"/api/rest/v1/some/resource?x=1","method":"POST","headers":{"accept":"application/json","content-Type":"application/json; charset=utf-8","content-Length":14}}"#
        );
        req.method = "GET".into();
        assert_eq!(
            String::from_utf8(request_payload(&req, &BodyRef::None)).unwrap(),
            r#"{"path":"/api/rest/v1/some/resource?x=1","method":"GET","headers":{"accept":"application/json"}}"#
        );
    }

    #[test]
    fn bodies_decode_in_their_charset() {
        assert_eq!(decode_text(b"\xEF\xBB\xBFhi", None), "hi");
        assert_eq!(
            decode_text(b"caf\xe9", Some("text/plain; charset=ISO-8859-1")),
            "café"
        );
        assert_eq!(decode_text(b"a\xffb", Some("text/plain")), "a\u{FFFD}b");
        assert!(is_form(Some("multipart/form-data; boundary=x")));
        assert!(!is_form(Some("application/json")));
    }

    #[test]
    fn answers_parse_in_modern_legacy_and_double_encoded_forms() {
        let modern =
            br#"{"status":201,"headers":{"Content-Type":"application/json"},"body":"{\"a\":1}"}"#;
        assert_eq!(
            parse_answer(modern).unwrap(),
            DeviceAnswer::Inline {
                status: 201,
                content_type: Some("application/json".into()),
                content_disposition: None,
                body: br#"{"a":1}"#.to_vec(),
            }
        );
        let legacy =
            br#"{"Headers":{"Status":404,"content-type":"text/plain"},"Body":"Not found"}"#;
        let DeviceAnswer::Inline { status, body, .. } = parse_answer(legacy).unwrap() else {
            panic!("inline expected")
        };
        assert_eq!((status, body.as_slice()), (404, &b"Not found"[..]));
        let double =
            serde_json::to_vec(&Value::String(r#"{"Status":200,"Body":{"x":[1]}}"#.into()))
                .unwrap();
        let DeviceAnswer::Inline { body, .. } = parse_answer(&double).unwrap() else {
            panic!("inline expected")
        };
        assert_eq!(body, br#"{"x":[1]}"#);
        let blob =
            br#"{"status":200,"headers":{"Content-Type":"application/zip"},"blobUrl":"RestApi/1"}"#;
        assert!(
            matches!(parse_answer(blob), Ok(DeviceAnswer::Blob { name, .. }) if name == "RestApi/1")
        );
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
                parse_answer(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
