//! The cloud's request payload (cloud-relay.md §1).
//!
//! The cloud writes it the way the Cloud Relay does ([`RestRequest::encode`]:
//! Newtonsoft's camel-cased keys, content headers only with a body). The
//! device reads it tolerantly ([`RestRequest::parse`]): unknown keys are
//! ignored, key lookup is case-insensitive (the API sends `content-Type`,
//! `content-Length`, ...), and values of a near-miss type are converted
//! rather than refused where the meaning is clear.

use serde::Serialize;
use serde_json::{Map, Value};

/// Why a request payload cannot be served as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The payload is not a request we can read; the text says which part
    /// is wrong.
    #[error("{0}")]
    Invalid(String),
    /// Not GET, PUT, POST or DELETE.
    #[error("method {0:?} is not allowed: only GET, PUT, POST and DELETE are relayed")]
    MethodNotAllowed(String),
}

/// The four methods the Cloud Relay routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    /// GET.
    Get,
    /// PUT.
    Put,
    /// POST.
    Post,
    /// DELETE.
    Delete,
}

impl HttpMethod {
    /// Parses a method name case-insensitively.
    ///
    /// # Errors
    /// [`RequestError::MethodNotAllowed`] for anything else.
    pub fn parse(name: &str) -> Result<Self, RequestError> {
        match name.trim().to_ascii_uppercase().as_str() {
            "GET" => Ok(Self::Get),
            "PUT" => Ok(Self::Put),
            "POST" => Ok(Self::Post),
            "DELETE" => Ok(Self::Delete),
            _ => Err(RequestError::MethodNotAllowed(name.to_string())),
        }
    }

    /// The canonical name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Put => "PUT",
            Self::Post => "POST",
            Self::Delete => "DELETE",
        }
    }

    /// Whether the method carries a body: the Cloud Relay strips body and
    /// content headers from GET and DELETE (§1, step 1), and so do we.
    pub fn has_body(self) -> bool {
        matches!(self, Self::Put | Self::Post)
    }
}

/// The headers that travel with a request. `Content-Length` is not here:
/// the device recomputes it from the bytes actually sent (§7.2), so only
/// the cloud's writer takes it ([`RestRequest::encode`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardHeaders {
    /// `Accept`, all values joined with `", "`.
    pub accept: Option<String>,
    /// `Content-Type` (POST and PUT only).
    pub content_type: Option<String>,
    /// `Content-Disposition` (POST and PUT only).
    pub content_disposition: Option<String>,
}

/// Where the request body comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestBody {
    /// No body (GET, DELETE, or a POST/PUT without `body`).
    None,
    /// Inline text, to be encoded in the Content-Type's charset.
    Inline(String),
    /// A blob SAS URL to download the bytes from.
    Blob(String),
}

/// One REST request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestRequest {
    /// The method.
    pub method: HttpMethod,
    /// The path as sent (`Remote-Query`, verbatim); the device checks it
    /// with [`super::path::check`] before use.
    pub path: String,
    /// Headers to forward.
    pub headers: ForwardHeaders,
    /// The body's source.
    pub body: RequestBody,
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
    headers: PayloadHeaders<'a>,
}

#[derive(Serialize)]
struct PayloadHeaders<'a> {
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

impl RestRequest {
    /// The payload as the Cloud Relay writes it; `content_length` is the
    /// client's byte count. Content headers and the length go only with
    /// POST and PUT (§1 step 1).
    pub fn encode(&self, content_length: Option<u64>) -> Vec<u8> {
        let with_body = self.method.has_body();
        fn content(v: &Option<String>, with_body: bool) -> Option<&str> {
            v.as_deref().filter(|_| with_body)
        }
        let (body, blob_url) = match &self.body {
            RequestBody::None => (None, None),
            RequestBody::Inline(text) => (Some(text.as_str()), None),
            RequestBody::Blob(url) => (None, Some(url.as_str())),
        };
        let payload = Payload {
            body,
            blob_url,
            path: &self.path,
            method: self.method.as_str(),
            headers: PayloadHeaders {
                accept: self.headers.accept.as_deref(),
                content_type: content(&self.headers.content_type, with_body),
                content_disposition: content(&self.headers.content_disposition, with_body),
                content_length: content_length.filter(|_| with_body),
            },
        };
        // Serializing plain strings and numbers cannot fail.
        serde_json::to_vec(&payload).unwrap_or_default()
    }

    /// Parses a method payload.
    ///
    /// # Errors
    /// [`RequestError::Invalid`] for JSON that is not an object or lacks
    /// `path`/`method`, or holds a header value that cannot go on the wire;
    /// [`RequestError::MethodNotAllowed`] for other methods.
    pub fn parse(payload: &[u8]) -> Result<Self, RequestError> {
        let invalid = |why: &str| RequestError::Invalid(why.to_string());
        let root: Value = serde_json::from_slice(payload)
            .map_err(|e| RequestError::Invalid(format!("payload is not JSON: {e}")))?;
        let Value::Object(root) = root else {
            return Err(invalid("payload is not a JSON object"));
        };
        let path = match get(&root, "path") {
            Some(Value::String(p)) if !p.is_empty() => p.clone(),
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(invalid("payload has no \"path\""))
            }
            Some(_) => return Err(invalid("\"path\" is not a string")),
        };
        let method = match get(&root, "method") {
            Some(Value::String(m)) => HttpMethod::parse(m)?,
            None | Some(Value::Null) => return Err(invalid("payload has no \"method\"")),
            Some(_) => return Err(invalid("\"method\" is not a string")),
        };
        let headers = match get(&root, "headers") {
            Some(Value::Object(h)) => h.clone(),
            // v1.0 of the API required headers; later ones may omit them.
            None | Some(Value::Null) => Map::new(),
            Some(_) => return Err(invalid("\"headers\" is not an object")),
        };
        let mut forward = ForwardHeaders {
            accept: header(&headers, "accept")?,
            content_type: None,
            content_disposition: None,
        };
        let mut body = RequestBody::None;
        if method.has_body() {
            forward.content_type = header(&headers, "content-type")?;
            forward.content_disposition = header(&headers, "content-disposition")?;
            // The API sends either `blobUrl` or `body`; should both come, the
            // blob is the complete one (inline bodies may be lossy).
            body = match (get(&root, "blobUrl"), get(&root, "body")) {
                (Some(Value::String(url)), _) => RequestBody::Blob(url.clone()),
                (Some(v), _) if !v.is_null() => return Err(invalid("\"blobUrl\" is not a string")),
                (_, Some(b)) => text_of(b).map_or(RequestBody::None, RequestBody::Inline),
                _ => RequestBody::None,
            };
        }
        Ok(Self {
            method,
            path,
            headers: forward,
            body,
        })
    }
}

/// Looks a key up case-insensitively (first match in key order).
pub(crate) fn get<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// A header's value as text: strings as-is, arrays of strings joined with
/// `", "` (how ASP.NET joins repeated Accept values), numbers printed.
fn header(headers: &Map<String, Value>, name: &str) -> Result<Option<String>, RequestError> {
    let value = match get(headers, name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(text_of)
            .collect::<Vec<_>>()
            .join(", "),
        Some(other) => match text_of(other) {
            Some(text) => text,
            None => return Ok(None),
        },
    };
    // A CR or LF here would split the header; refuse rather than send.
    if !is_header_value(&value) {
        return Err(RequestError::Invalid(format!(
            "header {name:?} has an invalid value"
        )));
    }
    Ok(Some(value))
}

/// What an HTTP header value may hold, as the `http` crate's
/// `HeaderValue::from_str` decides it: tabs and every byte from space up,
/// except DEL.
fn is_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| (b >= b' ' && b != 0x7f) || b == b'\t')
}

/// Text of a JSON value: strings verbatim, objects and arrays compact,
/// numbers and booleans printed; `None` for null.
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Encodes inline body text in the charset named by `content_type`, as
/// the Cloud Relay decoded it with that charset (§1 step 3, §7.2).
/// UTF-8 when there is no charset or one we do not know (the API falls back
/// to UTF-8 for charsets it cannot read).
///
/// # Errors
/// [`RequestError::Invalid`] when the text has characters the charset
/// cannot represent.
pub fn encode_body(text: &str, content_type: Option<&str>) -> Result<Vec<u8>, RequestError> {
    let charset = content_type.and_then(charset_of).unwrap_or_default();
    let unrepresentable = || {
        RequestError::Invalid(format!(
            "body has characters that charset {charset:?} cannot represent"
        ))
    };
    match charset.as_str() {
        "us-ascii" | "ascii" => text
            .chars()
            .map(|c| if c.is_ascii() { Some(c as u8) } else { None })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(unrepresentable),
        "iso-8859-1" | "latin1" | "iso_8859-1" | "l1" => text
            .chars()
            .map(|c| u8::try_from(u32::from(c)).ok())
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(unrepresentable),
        // .NET's "utf-16" is little-endian.
        "utf-16" | "utf-16le" => Ok(text.encode_utf16().flat_map(u16::to_le_bytes).collect()),
        "utf-16be" => Ok(text.encode_utf16().flat_map(u16::to_be_bytes).collect()),
        _ => Ok(text.as_bytes().to_vec()),
    }
}

/// The lowercased `charset` parameter of a media type.
fn charset_of(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"').to_ascii_lowercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(json: &str) -> RestRequest {
        RestRequest::parse(json.as_bytes()).unwrap_or_else(|e| panic!("{json} refused: {e}"))
    }

    #[test]
    fn spec_example_get() {
        let r = parsed(r#"{"path":"/api/rest/v1/info","method":"GET","headers":{"accept":"*/*"}}"#);
        assert_eq!(r.method, HttpMethod::Get);
        assert_eq!(r.path, "/api/rest/v1/info");
        assert_eq!(r.headers.accept.as_deref(), Some("*/*"));
        assert_eq!(r.body, RequestBody::None);
    }

    #[test]
    fn spec_example_post_with_camel_cased_header_keys() {
        let r = parsed(
            r#"{"body":"{\"value\":21.5}","path":"/api/rest/v1/some/resource?x=1","method":"POST","headers":{"accept":"application/json","content-Type":"application/json; charset=utf-8","content-Length":14}}"#,
        );
        assert_eq!(r.method, HttpMethod::Post);
        assert_eq!(r.body, RequestBody::Inline(r#"{"value":21.5}"#.into()));
        assert_eq!(
            r.headers.content_type.as_deref(),
            Some("application/json; charset=utf-8")
        );
    }

    #[test]
    fn spec_example_blob_request() {
        let r = parsed(
            r#"{"blobUrl":"https://acct.blob.core.windows.net/c/ECY-1/RestApi/0f8f?sv=1&sig=x","path":"/api/rest/v1/files","method":"POST","headers":{"accept":"*/*","content-Type":"multipart/form-data; boundary=----x","content-Length":2345678}}"#,
        );
        assert_eq!(
            r.body,
            RequestBody::Blob(
                "https://acct.blob.core.windows.net/c/ECY-1/RestApi/0f8f?sv=1&sig=x".into()
            )
        );
        assert_eq!(
            r.headers.content_type.as_deref(),
            Some("multipart/form-data; boundary=----x")
        );
    }

    #[test]
    fn keys_match_in_any_case_and_unknown_keys_are_ignored() {
        let r = parsed(
            r#"{"Path":"/x","METHOD":"put","Headers":{"ACCEPT":"a","Content-type":"text/plain","CONTENT-DISPOSITION":"inline","x-other":"y","authorization":"Bearer z"},"BODY":"hi","extra":[1]}"#,
        );
        assert_eq!(r.method, HttpMethod::Put);
        assert_eq!(r.path, "/x");
        assert_eq!(
            r.headers,
            ForwardHeaders {
                accept: Some("a".into()),
                content_type: Some("text/plain".into()),
                content_disposition: Some("inline".into()),
            }
        );
        assert_eq!(r.body, RequestBody::Inline("hi".into()));
    }

    #[test]
    fn accept_arrays_are_joined() {
        let r = parsed(r#"{"path":"/x","method":"GET","headers":{"accept":["a/b","c/d"]}}"#);
        assert_eq!(r.headers.accept.as_deref(), Some("a/b, c/d"));
    }

    #[test]
    fn get_and_delete_drop_body_and_content_headers() {
        for m in ["GET", "DELETE"] {
            let r = parsed(&format!(
                r#"{{"path":"/x","method":"{m}","headers":{{"content-Type":"a/b","content-Length":3}},"body":"abc"}}"#
            ));
            assert_eq!(r.body, RequestBody::None, "{m}");
            assert_eq!(r.headers.content_type, None, "{m}");
        }
    }

    #[test]
    fn missing_headers_and_empty_bodies_are_fine() {
        let r = parsed(r#"{"path":"/x","method":"POST","body":""}"#);
        assert_eq!(r.body, RequestBody::Inline(String::new()));
        assert_eq!(r.headers, ForwardHeaders::default());
        let r = parsed(r#"{"path":"/x","method":"POST","headers":null,"body":null}"#);
        assert_eq!(r.body, RequestBody::None);
    }

    #[test]
    fn object_bodies_are_sent_as_compact_json() {
        let r = parsed(r#"{"path":"/x","method":"POST","body":{"a": [1, 2]}}"#);
        assert_eq!(r.body, RequestBody::Inline(r#"{"a":[1,2]}"#.into()));
    }

    #[test]
    fn methods_are_case_insensitive_and_others_refused() {
        assert_eq!(
            parsed(r#"{"path":"/x","method":"delete"}"#).method,
            HttpMethod::Delete
        );
        for m in ["PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT", ""] {
            let err = RestRequest::parse(format!(r#"{{"path":"/x","method":"{m}"}}"#).as_bytes())
                .unwrap_err();
            assert_eq!(err, RequestError::MethodNotAllowed(m.into()), "{m}");
        }
    }

    #[test]
    fn malformed_payloads_are_invalid_requests() {
        for p in [
            "",
            "not json",
            "[]",
            "\"{}\"",
            "null",
            r#"{"method":"GET"}"#,
            r#"{"path":"","method":"GET"}"#,
            r#"{"path":1,"method":"GET"}"#,
            r#"{"path":"/x"}"#,
            r#"{"path":"/x","method":1}"#,
            r#"{"path":"/x","method":"GET","headers":"a"}"#,
            r#"{"path":"/x","method":"POST","blobUrl":5}"#,
            r#"{"path":"/x","method":"GET","headers":{"accept":"a\r\nX-Evil: 1"}}"#,
        ] {
            let err = RestRequest::parse(p.as_bytes()).unwrap_err();
            assert!(matches!(err, RequestError::Invalid(_)), "{p}: {err}");
        }
    }

    #[test]
    fn bodies_are_encoded_in_their_charset() {
        assert_eq!(encode_body("é", None).unwrap(), "é".as_bytes());
        assert_eq!(
            encode_body("é", Some("text/plain; charset=utf-8")).unwrap(),
            "é".as_bytes()
        );
        assert_eq!(
            encode_body("é", Some("text/plain; Charset=\"ISO-8859-1\"")).unwrap(),
            [0xe9]
        );
        assert_eq!(
            encode_body("é", Some("text/plain;charset=utf-16")).unwrap(),
            [0xe9, 0]
        );
        assert_eq!(
            encode_body("é", Some("text/plain;charset=utf-16be")).unwrap(),
            [0, 0xe9]
        );
        assert_eq!(
            encode_body("é", Some("text/plain; charset=x-unknown")).unwrap(),
            "é".as_bytes()
        );
        assert!(matches!(
            encode_body("€", Some("text/plain; charset=latin1")),
            Err(RequestError::Invalid(_))
        ));
        assert!(matches!(
            encode_body("é", Some("text/plain; charset=us-ascii")),
            Err(RequestError::Invalid(_))
        ));
    }

    #[test]
    fn requests_are_written_with_the_cloud_relay_key_names_and_get_drops_content() {
        let mut req = RestRequest {
            method: HttpMethod::Post,
            path: "/api/rest/v1/some/resource?x=1".into(),
            headers: ForwardHeaders {
                accept: Some("application/json".into()),
                content_type: Some("application/json; charset=utf-8".into()),
                content_disposition: None,
            },
            body: RequestBody::Inline(r#"{"value":21.5}"#.into()),
        };
        assert_eq!(
            String::from_utf8(req.encode(Some(14))).unwrap(),
            r#"{"body":"{\"value\":21.5}","path":"/api/rest/v1/some/resource?x=1","method":"POST","headers":{"accept":"application/json","content-Type":"application/json; charset=utf-8","content-Length":14}}"#
        );
        assert_eq!(RestRequest::parse(&req.encode(Some(14))).unwrap(), req);
        req.method = HttpMethod::Get;
        req.body = RequestBody::None;
        assert_eq!(
            String::from_utf8(req.encode(Some(14))).unwrap(),
            r#"{"path":"/api/rest/v1/some/resource?x=1","method":"GET","headers":{"accept":"application/json"}}"#
        );
    }

    #[test]
    fn header_values_follow_the_http_rule() {
        assert!(is_header_value("a\tb é ~"));
        for bad in ["a\rb", "a\nb", "a\u{7f}", "\0"] {
            assert!(!is_header_value(bad), "{bad:?}");
        }
    }
}
