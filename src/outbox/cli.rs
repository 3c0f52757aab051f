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
use crate::service::exit::EXIT_CONFIG;

/// What the CLI asks for. Failures are addressed on Afero's partner
/// paths (`/v1/partners/{partnerId}/pushFailures...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `failures list`.
    List {
        /// The partner (`hub` or a webhook's name).
        partner: String,
        /// Page size; the server's cap without it.
        limit: Option<usize>,
        /// Newer than this failure id (from the previous page's `Link`).
        after: Option<String>,
    },
    /// `failures show ID`.
    Show {
        /// The partner.
        partner: String,
        /// The failure id.
        id: String,
    },
    /// `failures delete ID`.
    Delete {
        /// The partner.
        partner: String,
        /// The failure id.
        id: String,
    },
    /// `failures replay ID`.
    Replay {
        /// The partner.
        partner: String,
        /// The failure id.
        id: String,
    },
    /// `failures replay --all [--partner NAME]`.
    ReplayAll(Option<String>),
    /// `outbox stats`.
    Stats,
}

impl Command {
    fn request(&self) -> (&'static str, String) {
        let base = |p: &str| format!("/v1/partners/{}/pushFailures", enc(p));
        match self {
            Command::List {
                partner,
                limit,
                after,
            } => {
                let mut query: Vec<String> = Vec::new();
                if let Some(l) = limit {
                    query.push(format!("limit={l}"));
                }
                if let Some(a) = after {
                    query.push(format!("after={}", enc(a)));
                }
                let q = if query.is_empty() {
                    String::new()
                } else {
                    format!("?{}", query.join("&"))
                };
                ("GET", format!("{}{q}", base(partner)))
            }
            Command::Show { partner, id } => ("GET", format!("{}/{}", base(partner), enc(id))),
            Command::Delete { partner, id } => ("DELETE", format!("{}/{}", base(partner), enc(id))),
            Command::Replay { partner, id } => {
                ("POST", format!("{}/{}/replay", base(partner), enc(id)))
            }
            Command::ReplayAll(None) => ("POST", "/v1/pushFailures/replay".into()),
            Command::ReplayAll(Some(p)) => ("POST", format!("{}/replay", base(p))),
            Command::Stats => ("GET", "/v1/outbox/stats".into()),
        }
    }
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The `after` of a `Link: <...?after=ID&...>; rel="next"` header.
fn next_after(link: &str) -> Option<&str> {
    let start = link.find("after=")? + "after=".len();
    let rest = &link[start..];
    let end = rest.find(['&', '>']).unwrap_or(rest.len());
    Some(&rest[..end])
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
    if tether_outbox::store::engine_in(dir).is_none() {
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
            return EXIT_CONFIG;
        }
    };
    let Some(listen) = &cfg.admin.listen else {
        eprintln!(
            "tether: admin.listen is not set in {}: the admin API is off",
            config_path.display()
        );
        return EXIT_CONFIG;
    };
    let token = cfg.admin.token.as_ref().map(|t| t.expose().to_string());
    match exchange(listen, token.as_deref(), method, target, body, timeout) {
        Ok(Reply { status, link, body }) => {
            let text = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            if (200..300).contains(&status) {
                if !text.is_empty() {
                    println!("{text}");
                }
                if let Some(after) = link.as_deref().and_then(next_after) {
                    eprintln!("tether: more failures follow: list again with --after {after}");
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

/// An answer of the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The `Link` header, if any (the next page of a list).
    pub link: Option<String>,
    /// The de-chunked body.
    pub body: Vec<u8>,
}

/// One request.
///
/// # Errors
/// On connection or protocol errors.
pub fn send(
    listen: &AdminListen,
    token: Option<&str>,
    method: &str,
    target: &str,
) -> std::io::Result<Reply> {
    exchange(listen, token, method, target, None, Duration::from_secs(30))
}

fn exchange(
    listen: &AdminListen,
    token: Option<&str>,
    method: &str,
    target: &str,
    body: Option<&str>,
    timeout: Duration,
) -> std::io::Result<Reply> {
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

fn parse_response(raw: &[u8]) -> Option<Reply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let link = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("link")
            .then(|| value.trim().to_string())
    });
    let body = &raw[end + 4..];
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    if !chunked {
        return Some(Reply {
            status,
            link,
            body: body.to_vec(),
        });
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).ok()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(Reply {
                status,
                link,
                body: out,
            });
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse_plain_and_chunked_with_their_link() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nlink: <x?after=A&limit=2>; rel=\"next\"\r\n\r\n{}";
        let r = parse_response(plain).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, b"{}".as_slice()));
        assert_eq!(r.link.as_deref().and_then(next_after), Some("A"));
        let chunked = b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let r = parse_response(chunked).unwrap();
        assert_eq!((r.status, r.link, r.body), (404, None, b"abcde".to_vec()));
        assert_eq!(parse_response(b"garbage"), None);
    }

    #[test]
    fn failure_commands_use_aferos_partner_paths() {
        let list = Command::List {
            partner: "my hook".into(),
            limit: Some(5),
            after: Some("A".into()),
        };
        assert_eq!(
            list.request(),
            (
                "GET",
                "/v1/partners/my%20hook/pushFailures?limit=5&after=A".into()
            )
        );
        let delete = Command::Delete {
            partner: "hub".into(),
            id: "X".into(),
        };
        assert_eq!(
            delete.request(),
            ("DELETE", "/v1/partners/hub/pushFailures/X".into())
        );
        assert_eq!(
            Command::ReplayAll(Some("hub".into())).request(),
            ("POST", "/v1/partners/hub/pushFailures/replay".into())
        );
    }
}
