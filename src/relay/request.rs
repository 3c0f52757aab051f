//! The cloud's request payload (cloud-relay.md §1), parsed tolerantly:
//! unknown keys are ignored, key lookup is case-insensitive (the API sends
//! `content-Type`, `content-Length`, ...), and values of a near-miss type
//! are converted rather than refused where the meaning is clear.

use reqwest::header::HeaderValue;
use serde_json::{Map, Value};

use super::error::Failure;

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
    /// [`Failure::MethodNotAllowed`] for anything else.
    pub fn parse(name: &str) -> Result<Self, Failure> {
        match name.trim().to_ascii_uppercase().as_str() {
            "GET" => Ok(Self::Get),
            "PUT" => Ok(Self::Put),
            "POST" => Ok(Self::Post),
            "DELETE" => Ok(Self::Delete),
            _ => Err(Failure::MethodNotAllowed(name.to_string())),
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

    pub(crate) fn to_reqwest(self) -> reqwest::Method {
        match self {
            Self::Get => reqwest::Method::GET,
            Self::Put => reqwest::Method::PUT,
            Self::Post => reqwest::Method::POST,
            Self::Delete => reqwest::Method::DELETE,
        }
    }
}

/// The headers that may reach the controller. `Content-Length` is not
/// here: it is recomputed from the bytes actually sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardHeaders {
    /// `Accept`.
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

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestRequest {
    /// The method.
    pub method: HttpMethod,
    /// The path as sent (checked later by [`super::path::check`]).
    pub path: String,
    /// Headers to forward.
    pub headers: ForwardHeaders,
    /// The body's source.
    pub body: RequestBody,
}

/// Parses a method payload.
///
/// # Errors
/// [`Failure::InvalidRequest`] for JSON that is not an object or lacks
/// `path`/`method`, or holds a header value that cannot go on the wire;
/// [`Failure::MethodNotAllowed`] for other methods.
pub fn parse(payload: &[u8]) -> Result<RestRequest, Failure> {
    let root: Value = serde_json::from_slice(payload)
        .map_err(|e| Failure::InvalidRequest(format!("payload is not JSON: {e}")))?;
    let Value::Object(root) = root else {
        return Err(Failure::InvalidRequest(
            "payload is not a JSON object".into(),
        ));
    };
    let path = match get(&root, "path") {
        Some(Value::String(p)) if !p.is_empty() => p.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(Failure::InvalidRequest("payload has no \"path\"".into()))
        }
        Some(_) => return Err(Failure::InvalidRequest("\"path\" is not a string".into())),
    };
    let method = match get(&root, "method") {
        Some(Value::String(m)) => HttpMethod::parse(m)?,
        None | Some(Value::Null) => {
            return Err(Failure::InvalidRequest("payload has no \"method\"".into()))
        }
        Some(_) => return Err(Failure::InvalidRequest("\"method\" is not a string".into())),
    };
    let headers = match get(&root, "headers") {
        Some(Value::Object(h)) => h.clone(),
        // v1.0 of the API required headers; later ones may omit them.
        None | Some(Value::Null) => Map::new(),
        Some(_) => {
            return Err(Failure::InvalidRequest(
                "\"headers\" is not an object".into(),
            ))
        }
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
            (Some(v), _) if !v.is_null() => {
                return Err(Failure::InvalidRequest(
                    "\"blobUrl\" is not a string".into(),
                ))
            }
            (_, Some(b)) => match text_of(b) {
                Some(text) => RequestBody::Inline(text),
                None => RequestBody::None,
            },
            _ => RequestBody::None,
        };
    }
    Ok(RestRequest {
        method,
        path,
        headers: forward,
        body,
    })
}

/// Looks a key up case-insensitively (first match in key order).
fn get<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// A header's value as text: strings as-is, arrays of strings joined with
/// `", "` (how ASP.NET joins repeated Accept values), numbers printed.
fn header(headers: &Map<String, Value>, name: &str) -> Result<Option<String>, Failure> {
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
    HeaderValue::from_str(&value)
        .map_err(|_| Failure::InvalidRequest(format!("header {name:?} has an invalid value")))?;
    Ok(Some(value))
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
/// [`Failure::InvalidRequest`] when the text has characters the charset
/// cannot represent.
pub fn encode_body(text: &str, content_type: Option<&str>) -> Result<Vec<u8>, Failure> {
    let charset = content_type.and_then(charset_of).unwrap_or_default();
    let unrepresentable = || {
        Failure::InvalidRequest(format!(
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
        parse(json.as_bytes()).unwrap_or_else(|e| panic!("{json} refused: {e}"))
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
            let err = parse(format!(r#"{{"path":"/x","method":"{m}"}}"#).as_bytes()).unwrap_err();
            assert_eq!(err.status(), 405, "{m}");
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
            let err = parse(p.as_bytes()).unwrap_err();
            assert_eq!(err.status(), 400, "{p}: {err}");
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
        assert_eq!(
            encode_body("€", Some("text/plain; charset=latin1"))
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            encode_body("é", Some("text/plain; charset=us-ascii"))
                .unwrap_err()
                .status(),
            400
        );
    }
}
