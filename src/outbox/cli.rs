//! The client side of `tether failures ...`, `tether outbox stats` and
//! `tether outbox import`: one
//! HTTP/1.1 request to the admin API (TCP or unix socket, from the config
//! file), with the bearer token, printing the JSON answer.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::config::{self, AdminListen};

/// What the CLI asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `failures list`.
    List {
        /// Page size.
        limit: usize,
        /// Older than this failure id.
        before: Option<String>,
    },
    /// `failures show ID`.
    Show(String),
    /// `failures delete ID`.
    Delete(String),
    /// `failures replay ID`.
    Replay(String),
    /// `failures replay --all [--partner NAME]`.
    ReplayAll(Option<String>),
    /// `outbox stats`.
    Stats,
}

impl Command {
    fn request(&self) -> (&'static str, String) {
        match self {
            Command::List { limit, before } => (
                "GET",
                match before {
                    Some(b) => format!("/v1/pushFailures?limit={limit}&before={}", enc(b)),
                    None => format!("/v1/pushFailures?limit={limit}"),
                },
            ),
            Command::Show(id) => ("GET", format!("/v1/pushFailures/{}", enc(id))),
            Command::Delete(id) => ("DELETE", format!("/v1/pushFailures/{}", enc(id))),
            Command::Replay(id) => ("POST", format!("/v1/pushFailures/{}/replay", enc(id))),
            Command::ReplayAll(None) => ("POST", "/v1/pushFailures/replay".into()),
            Command::ReplayAll(Some(p)) => (
                "POST",
                format!("/v1/pushFailures/replay?partnerId={}", enc(p)),
            ),
            Command::Stats => ("GET", "/v1/outbox/stats".into()),
        }
    }
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Runs `cmd` against the admin API configured in `config_path`; prints
/// the answer and returns the exit code (0 on 2xx, 1 otherwise, 64 for a
/// bad config, 69 when the daemon cannot be reached).
pub fn run(config_path: &Path, cmd: &Command) -> i32 {
    let (method, target) = cmd.request();
    call(config_path, method, &target, None, Duration::from_secs(30))
}

/// `tether outbox import DIR`: checks `dir` here (clear errors before
/// anything is sent), then asks the daemon to salvage it and prints the
/// counts. The daemon does the reading and importing, so the records go
/// into its store with their progress in the same batches: an import that
/// is interrupted (or repeated) resumes without loss or duplicates.
pub fn import(config_path: &Path, dir: &Path) -> i32 {
    if !dir.is_dir() {
        eprintln!(
            "tether: {} does not exist or is not a directory",
            dir.display()
        );
        return 1;
    }
    if crate::outbox::store::engine_in(dir).is_none() {
        eprintln!(
            "tether: {} is not an outbox store (it has no sled `db` file and no redb \
             `outbox.redb` file)",
            dir.display()
        );
        return 1;
    }
    let full = match dir.canonicalize() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("tether: cannot resolve {}: {e}", dir.display());
            return 1;
        }
    };
    let body = serde_json::json!({ "path": full }).to_string();
    // A large store takes a while; the daemon finishes it even if this
    // client gives up.
    call(
        config_path,
        "POST",
        "/v1/outbox/import",
        Some(&body),
        Duration::from_secs(3600),
    )
}

fn call(
    config_path: &Path,
    method: &str,
    target: &str,
    body: Option<&str>,
    timeout: Duration,
) -> i32 {
    let cfg = match config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tether: invalid configuration: {e}");
            return crate::app::EXIT_CONFIG;
        }
    };
    let Some(listen) = &cfg.admin.listen else {
        eprintln!(
            "tether: admin.listen is not set in {}: the admin API is off",
            config_path.display()
        );
        return crate::app::EXIT_CONFIG;
    };
    let token = cfg.admin.token.as_ref().map(|t| t.expose().to_string());
    match exchange(listen, token.as_deref(), method, target, body, timeout) {
        Ok((status, body)) => {
            let text = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            if (200..300).contains(&status) {
                if !text.is_empty() {
                    println!("{text}");
                }
                0
            } else {
                eprintln!("tether: the admin API answered {status}: {text}");
                1
            }
        }
        Err(e) => {
            eprintln!(
                "tether: cannot reach the admin API at {}: {e} (is tether running?)",
                describe(listen)
            );
            69
        }
    }
}

fn describe(l: &AdminListen) -> String {
    match l {
        AdminListen::Tcp(a) => a.to_string(),
        AdminListen::Unix(p) => format!("unix:{}", p.display()),
    }
}

/// One request; returns the status and the (de-chunked) body.
///
/// # Errors
/// On connection or protocol errors.
pub fn send(
    listen: &AdminListen,
    token: Option<&str>,
    method: &str,
    target: &str,
) -> std::io::Result<(u16, Vec<u8>)> {
    exchange(listen, token, method, target, None, Duration::from_secs(30))
}

fn exchange(
    listen: &AdminListen,
    token: Option<&str>,
    method: &str,
    target: &str,
    body: Option<&str>,
    timeout: Duration,
) -> std::io::Result<(u16, Vec<u8>)> {
    let body = body.unwrap_or("");
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(body);
    let timeout = Some(timeout);
    let mut raw = Vec::new();
    match listen {
        AdminListen::Tcp(addr) => {
            let mut s = TcpStream::connect_timeout(addr, Duration::from_secs(5))?;
            s.set_read_timeout(timeout)?;
            s.write_all(head.as_bytes())?;
            s.read_to_end(&mut raw)?;
        }
        AdminListen::Unix(path) => {
            let mut s = UnixStream::connect(path)?;
            s.set_read_timeout(timeout)?;
            s.write_all(head.as_bytes())?;
            s.read_to_end(&mut raw)?;
        }
    }
    parse_response(&raw).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed HTTP response")
    })
}

fn parse_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let body = &raw[end + 4..];
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    if !chunked {
        return Some((status, body.to_vec()));
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).ok()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some((status, out));
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse_plain_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain), Some((200, b"{}".to_vec())));
        let chunked = b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), Some((404, b"abcde".to_vec())));
        assert_eq!(parse_response(b"garbage"), None);
    }
}
