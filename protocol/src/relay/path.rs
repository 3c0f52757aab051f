//! The request's `path` (cloud-relay.md §1: the `Remote-Query` value,
//! `/path[?query][#fragment]`, which the device appends to its local API
//! base URL): what a path may be and how it splits. Pure functions, no IO;
//! the device checks every path with [`check`] before anything reaches the
//! controller, and a cloud side may use the same rules to refuse early.
//!
//! The path is relative to the controller's base URL and must stay below
//! it: the cloud may only name resources of the controller's own API. What
//! is refused and why:
//! - no leading `/`, or a leading `//` (`//host` is an authority), or any
//!   other empty segment: after a URL normaliser they can turn into one;
//! - control characters (CR/LF would split the request line) and
//!   backslashes (WHATWG parsers read `\` as `/`), anywhere;
//! - `.` and `..` segments: `..` escapes the root, and both are rewritten
//!   by URL normalisation, so what [`allowed`] checked would differ from what
//!   the controller sees;
//! - percent-encoded dots, slashes and backslashes (`%2e`, `%2f`, `%5c`, any
//!   case) and encoded control characters in the path part: the controller
//!   decodes them after these checks, which would undo them;
//! - malformed percent escapes in the path part (no decoder agrees on them).
//!
//! A `#fragment` is dropped (it never goes over HTTP) and the query is
//! passed as given.

/// Why a path was refused; the message goes back to the cloud as `detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Empty, or not starting with `/` (a scheme, a host, a relative path).
    #[error("path must start with '/' and be relative to the controller's API")]
    NotAbsolute,
    /// `//` somewhere in the path part (authority injection, empty segment).
    #[error("path must not contain '//' (empty segments or an authority)")]
    EmptySegment,
    /// A control character (CR, LF, NUL, DEL, ...).
    #[error("path must not contain control characters")]
    ControlCharacter,
    /// A backslash.
    #[error("path must not contain backslashes")]
    Backslash,
    /// A `.` or `..` segment.
    #[error("path must not contain '.' or '..' segments")]
    DotSegment,
    /// `%2e`, `%2f`, `%5c` or an encoded control character.
    #[error(
        "path must not contain percent-encoded dots, slashes, backslashes or control characters"
    )]
    EncodedSeparator,
    /// `%` not followed by two hex digits.
    #[error("path contains a malformed percent escape")]
    MalformedEscape,
}

/// A path that passed every check: the path part and the optional query,
/// fragment dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedPath {
    /// From the leading `/` up to (not including) `?`.
    pub path: String,
    /// What follows `?`, as given; `None` when there was no `?`.
    pub query: Option<String>,
}

impl CheckedPath {
    /// `path[?query]`, what is appended to the controller's base URL.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

/// Checks `raw` (`/path[?query][#fragment]`) and splits it.
///
/// # Errors
/// The first rule `raw` breaks; see the module doc.
pub fn check(raw: &str) -> Result<CheckedPath, PathError> {
    // Control characters and backslashes are refused anywhere, query and
    // fragment included: they are never legitimate in a request target.
    if raw.chars().any(char::is_control) {
        return Err(PathError::ControlCharacter);
    }
    if raw.contains('\\') {
        return Err(PathError::Backslash);
    }
    let without_fragment = raw.split_once('#').map_or(raw, |(before, _)| before);
    let (path, query) = match without_fragment.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (without_fragment, None),
    };
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if path.contains("//") {
        return Err(PathError::EmptySegment);
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(PathError::DotSegment);
    }
    check_escapes(path)?;
    Ok(CheckedPath {
        path: path.to_string(),
        query,
    })
}

/// Refuses malformed escapes and the encoded characters that would undo
/// the checks above once the controller decodes them.
fn check_escapes(path: &str) -> Result<(), PathError> {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::MalformedEscape)?;
            let hex = std::str::from_utf8(hex).map_err(|_| PathError::MalformedEscape)?;
            let value = u8::from_str_radix(hex, 16).map_err(|_| PathError::MalformedEscape)?;
            if matches!(value, b'.' | b'/' | b'\\') || value < 0x20 || value == 0x7f {
                return Err(PathError::EncodedSeparator);
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// Whether `path` (a [`CheckedPath::path`]) is under one of `prefixes`.
/// An empty list allows everything; otherwise nothing else is allowed.
///
/// Matching respects segment boundaries: `/api/rest` allows `/api/rest` and
/// `/api/rest/x` but not `/api/restricted`. A prefix ending in `/` matches
/// anything that starts with it.
pub fn allowed(path: &str, prefixes: &[String]) -> bool {
    prefixes.is_empty()
        || prefixes
            .iter()
            .any(|prefix| match path.strip_prefix(prefix.as_str()) {
                Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
                None => false,
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> CheckedPath {
        check(raw).unwrap_or_else(|e| panic!("{raw:?} refused: {e}"))
    }

    #[test]
    fn a_plain_path_passes_unchanged() {
        let p = ok("/api/rest/v1/info");
        assert_eq!(p.path, "/api/rest/v1/info");
        assert_eq!(p.query, None);
        assert_eq!(p.path_and_query(), "/api/rest/v1/info");
    }

    #[test]
    fn the_query_is_passed_as_given_and_the_fragment_dropped() {
        let p = ok("/api/x?a=1&b=%2F..%2e&c=//x#frag?y=2");
        assert_eq!(p.path, "/api/x");
        assert_eq!(p.query.as_deref(), Some("a=1&b=%2F..%2e&c=//x"));
        assert_eq!(p.path_and_query(), "/api/x?a=1&b=%2F..%2e&c=//x");
        assert_eq!(ok("/a#x").path_and_query(), "/a");
        assert_eq!(ok("/a?").path_and_query(), "/a?");
    }

    #[test]
    fn the_root_and_trailing_slashes_pass() {
        assert_eq!(ok("/").path, "/");
        assert_eq!(ok("/api/").path, "/api/");
    }

    #[test]
    fn schemes_hosts_and_relative_paths_are_refused() {
        for raw in [
            "",
            "http://evil.example/x",
            "https://evil.example",
            "evil.example/x",
            "api/x",
            "?x=1",
            "#x",
            "@evil/x",
            ":8080/x",
            "mailto:a@b",
        ] {
            assert_eq!(check(raw), Err(PathError::NotAbsolute), "{raw:?}");
        }
    }

    #[test]
    fn authority_injection_with_double_slash_is_refused() {
        for raw in [
            "//evil.example/x",
            "//evil",
            "///x",
            "/api//x",
            "/http://evil/x",
        ] {
            assert_eq!(check(raw), Err(PathError::EmptySegment), "{raw:?}");
        }
    }

    #[test]
    fn dot_segments_are_refused_wherever_they_are() {
        for raw in [
            "/..",
            "/../etc/passwd",
            "/api/../../x",
            "/api/..",
            "/api/./x",
            "/.",
            "/a/..?x",
        ] {
            assert_eq!(check(raw), Err(PathError::DotSegment), "{raw:?}");
        }
        // Dots inside a segment are ordinary characters.
        assert_eq!(
            ok("/a..b/.hidden/x.json/...").path,
            "/a..b/.hidden/x.json/..."
        );
    }

    #[test]
    fn percent_encoded_dots_slashes_and_backslashes_are_refused_in_any_case() {
        for raw in [
            "/%2e%2e/x",
            "/%2E%2E/x",
            "/%2e%2E/x",
            "/.%2e/x",
            "/api%2f..%2fx",
            "/api%2Fx",
            "/api%5cx",
            "/api%5Cx",
            "/a%00b",
            "/a%0d%0aX-Injected:%201",
            "/a%7f",
        ] {
            assert_eq!(check(raw), Err(PathError::EncodedSeparator), "{raw:?}");
        }
        // Other escapes are fine.
        assert_eq!(ok("/a%20b/%C3%A9").path, "/a%20b/%C3%A9");
    }

    #[test]
    fn malformed_escapes_are_refused() {
        for raw in ["/a%", "/a%2", "/a%zz", "/a%2g/x"] {
            assert_eq!(check(raw), Err(PathError::MalformedEscape), "{raw:?}");
        }
    }

    #[test]
    fn backslashes_are_refused_anywhere() {
        for raw in ["/api\\x", "\\\\evil\\x", "/\\evil", "/a?x=\\", "/a#\\"] {
            assert_eq!(check(raw), Err(PathError::Backslash), "{raw:?}");
        }
    }

    #[test]
    fn control_characters_are_refused_anywhere() {
        for raw in [
            "/a\r\nX-Injected: 1",
            "/a\nb",
            "/a\0",
            "/a\tb",
            "/a\u{7f}",
            "/a?x=\r\n",
            "/a#\n",
            "/a\u{85}",
        ] {
            assert_eq!(check(raw), Err(PathError::ControlCharacter), "{raw:?}");
        }
    }

    #[test]
    fn an_empty_allow_list_allows_everything() {
        assert!(allowed("/anything", &[]));
    }

    #[test]
    fn allowed_prefixes_respect_segment_boundaries() {
        let prefixes = vec!["/api/rest".to_string(), "/files/".to_string()];
        assert!(allowed("/api/rest", &prefixes));
        assert!(allowed("/api/rest/v1/info", &prefixes));
        assert!(!allowed("/api/restricted", &prefixes));
        assert!(!allowed("/api", &prefixes));
        assert!(allowed("/files/x", &prefixes));
        assert!(!allowed("/files", &prefixes));
        assert!(!allowed("/admin", &prefixes));
    }
}
