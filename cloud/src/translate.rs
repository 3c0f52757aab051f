//! A client's HTTP request body → the text of an inline request payload
//! (cloud-relay.md §1 steps 2-3), as the Cloud Relay reads it. The payloads
//! themselves are [`tether_protocol::relay`]'s. Pure: no IO.

/// Form bodies always go through a blob (§1 step 2).
pub fn is_form(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        let essence = ct.split(';').next().unwrap_or_default().trim();
        essence.eq_ignore_ascii_case("application/x-www-form-urlencoded")
            || essence.eq_ignore_ascii_case("multipart/form-data")
    })
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
