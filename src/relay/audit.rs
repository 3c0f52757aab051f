//! The one log line per relayed call. It names what was asked and what
//! came of it, never bodies or secrets: query values whose name or shape
//! suggests a credential are replaced by `***`, and control characters are
//! escaped so a hostile path cannot forge log lines.

use std::time::Duration;

/// Facts gathered while serving a call.
#[derive(Debug, Default, Clone)]
pub(crate) struct Audit {
    /// HTTP method, once known.
    pub method: Option<&'static str>,
    /// The redacted path, once known.
    pub path: Option<String>,
    /// Body bytes sent to the controller.
    pub sent: u64,
    /// Body bytes received from the controller.
    pub received: u64,
    /// The blob name when the answer went through file upload.
    pub blob: Option<String>,
    /// The failure code, when the call failed.
    pub error: Option<&'static str>,
}

impl Audit {
    /// Emits the line.
    pub(crate) fn log(&self, rid: &str, connection: u64, status: u16, took: Duration) {
        tracing::info!(
            target: "tether::relay::audit",
            rid = %escape(rid),
            connection,
            method = self.method.unwrap_or("-"),
            path = self.path.as_deref().unwrap_or("-"),
            status,
            duration_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            sent_bytes = self.sent,
            received_bytes = self.received,
            blob = self.blob.as_deref().unwrap_or("-"),
            error = self.error.unwrap_or("-"),
            "relayed call"
        );
    }
}

/// Query parameter names whose values are never logged.
const SECRET_NAMES: [&str; 10] = [
    "pass", "pwd", "secret", "token", "key", "sig", "auth", "cred", "session", "jwt",
];

/// The path for the log: the fragment dropped, secret-looking query values
/// replaced by `***`, control characters escaped.
pub(crate) fn redact(raw: &str) -> String {
    let without_fragment = raw.split_once('#').map_or(raw, |(p, _)| p);
    let redacted = match without_fragment.split_once('?') {
        None => without_fragment.to_string(),
        Some((path, query)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, value)) if is_secret(name, value) => format!("{name}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", pairs.join("&"))
        }
    };
    escape(&redacted)
}

fn is_secret(name: &str, value: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_NAMES.iter().any(|s| name.contains(s)) || looks_random(value)
}

/// Long runs of base64/hex characters mixing letters and digits: how
/// tokens look whatever their parameter is called.
fn looks_random(value: &str) -> bool {
    value.len() >= 24
        && value.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '%' | '+' | '/' | '=' | '-' | '_' | '.')
        })
        && value.chars().any(|c| c.is_ascii_digit())
        && value.chars().any(|c| c.is_ascii_alphabetic())
}

fn escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_query_values_are_replaced_and_others_kept() {
        assert_eq!(
            redact("/api/x?id=5&password=hunter2&Access_Token=abc&sig=x&page=2#frag"),
            "/api/x?id=5&password=***&Access_Token=***&sig=***&page=2"
        );
    }

    #[test]
    fn random_looking_values_are_replaced_whatever_their_name() {
        assert_eq!(redact("/x?q=dGhpcyBpcyBhIHNlY3JldCB2YWx1ZQ12"), "/x?q=***");
        assert_eq!(
            redact("/x?name=a-perfectly-ordinary-name"),
            "/x?name=a-perfectly-ordinary-name"
        );
    }

    #[test]
    fn control_characters_cannot_forge_log_lines() {
        assert_eq!(redact("/a\r\nINFO forged"), "/a\\r\\nINFO forged");
    }
}
