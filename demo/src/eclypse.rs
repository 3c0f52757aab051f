//! A simulated Distech ECLYPSE controller REST API, behind HTTP Basic auth
//! like the real one, so tether's relay does exactly what it does on a
//! device. `tether demo` reads and writes its BACnet points; the relay
//! tests use the routes that answer in every shape a controller can.
//!
//! Every route needs Basic auth with [`USER`] and the password it was
//! started with (401 with `WWW-Authenticate` otherwise):
//! - `GET /api/rest/v1/info`: `{"apiRevision":"8.0"}` plus headers the
//!   relay must drop (Set-Cookie, ETag, X-Powered-By).
//! - `GET /api/rest/v1/protocols/bacnet/local/objects`: its BACnet points.
//! - `GET|PUT /api/rest/v1/protocols/bacnet/local/objects/analog-value/{n}/properties/present-value`:
//!   read a point, or write a writable one with `{"value": 23.5}`.
//! - `/echo...`, `/api/rest/v1/some...`: 200, the request body back with
//!   its Content-Type.
//! - `/size/{n}`: 200, `n` bytes of `a` as text/plain.
//! - `/binary`: 200, every byte value, application/octet-stream.
//! - `/backup`: 200, a binary "zip" with a Content-Disposition.
//! - `/status/{code}/{n}`: that status, `n` bytes of `x`.
//! - `/slow`: answers after 3 s.
//! - `/hold`: answers once [`Eclypse::release`] is called.
//! - `/redirect`: 302 to another host.
//! - anything else: 404 `Not found`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::http::{self, Reply, Request, Server};

/// The Basic-auth user tether is configured with.
pub const USER: &str = "admin";
/// How long `/slow` takes.
const SLOW: Duration = Duration::from_secs(3);
/// Where the BACnet points are.
const OBJECTS: [&str; 6] = ["api", "rest", "v1", "protocols", "bacnet", "local"];

/// One BACnet analog value.
#[derive(Debug, Clone)]
struct Point {
    name: &'static str,
    units: &'static str,
    value: f64,
    writable: bool,
}

/// What the handler shares with the [`Eclypse`] handle.
struct Controller {
    /// `Basic base64(user:password)`.
    authorization: String,
    points: Mutex<BTreeMap<u32, Point>>,
    /// Notified by [`Eclypse::release`]: answers every `/hold`.
    release: Notify,
}

impl Controller {
    fn points(&self) -> MutexGuard<'_, BTreeMap<u32, Point>> {
        self.points.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running simulated controller; it stops with the token it was started
/// with, or when dropped.
pub struct Eclypse {
    server: Server,
    state: Arc<Controller>,
}

impl Eclypse {
    /// Serves plain HTTP on `listen` (port 0: a free one) until `stop`,
    /// accepting [`USER`] with `password`.
    ///
    /// # Errors
    /// When `listen` cannot be bound.
    pub async fn start(
        listen: SocketAddr,
        password: &str,
        stop: CancellationToken,
    ) -> std::io::Result<Eclypse> {
        Eclypse::serve(listen, password, None, stop).await
    }

    /// The same over HTTPS, presenting the PEM chain `cert_pem` with its
    /// key `key_pem`.
    ///
    /// # Errors
    /// Unusable PEM, or when `listen` cannot be bound.
    pub async fn start_tls(
        listen: SocketAddr,
        password: &str,
        cert_pem: &str,
        key_pem: &str,
        stop: CancellationToken,
    ) -> std::io::Result<Eclypse> {
        let tls = http::acceptor(cert_pem, key_pem)?;
        Eclypse::serve(listen, password, Some(tls), stop).await
    }

    async fn serve(
        listen: SocketAddr,
        password: &str,
        tls: Option<tokio_rustls::TlsAcceptor>,
        stop: CancellationToken,
    ) -> std::io::Result<Eclypse> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let state = Arc::new(Controller {
            authorization: format!("Basic {}", b64.encode(format!("{USER}:{password}"))),
            points: Mutex::new(initial_points()),
            release: Notify::new(),
        });
        let shared = state.clone();
        let handler = move |req| answer(shared.clone(), req);
        let server = Server::bind(listen, tls, stop, handler).await?;
        Ok(Eclypse { server, state })
    }

    /// Its base URL: the `[controller] base_url`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// `127.0.0.1:{port}`, as a `Host` header says it.
    pub fn host_port(&self) -> String {
        self.server.host_port()
    }

    /// Requests it has received (any status), oldest first.
    pub fn requests(&self) -> Vec<Request> {
        self.server.requests()
    }

    /// Waits until at least `n` requests arrived; false when they have not
    /// after a few seconds.
    #[must_use]
    pub async fn wait_for_requests(&self, n: usize) -> bool {
        self.server.wait_for_requests(n).await
    }

    /// Answers every `/hold` request waiting now.
    pub fn release(&self) {
        self.state.release.notify_waiters();
    }

    /// A point's present value.
    pub fn value(&self, instance: u32) -> Option<f64> {
        self.state.points().get(&instance).map(|p| p.value)
    }
}

fn initial_points() -> BTreeMap<u32, Point> {
    let point = |name, units, value, writable| Point {
        name,
        units,
        value,
        writable,
    };
    BTreeMap::from([
        (1, point("Zone temperature", "degrees-celsius", 21.4, false)),
        (2, point("Zone setpoint", "degrees-celsius", 22.0, true)),
        (3, point("Supply fan speed", "percent", 65.0, false)),
    ])
}

/// Checks Basic auth, as the controller's web server does before any
/// route, then routes.
async fn answer(c: Arc<Controller>, req: Request) -> Reply {
    if req.header("authorization") != Some(c.authorization.as_str()) {
        return Reply::typed(401, "text/plain", "Unauthorized")
            .header("WWW-Authenticate", "Basic realm=\"ECLYPSE\"");
    }
    let path = req.path().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let Some(rest) = parts.strip_prefix(OBJECTS.as_slice()) {
        return bacnet(&c, &req, rest);
    }
    match parts.as_slice() {
        ["api", "rest", "v1", "info"] => Reply::typed(
            200,
            "application/json;charset=UTF-8",
            r#"{"apiRevision":"8.0"}"#,
        )
        .header("Set-Cookie", "session=abc")
        .header("ETag", "\"v1\"")
        .header("X-Powered-By", "ECLYPSE"),
        ["echo", ..] | ["api", "rest", "v1", "some", ..] => {
            let ct = req
                .header("content-type")
                .unwrap_or("text/plain")
                .to_string();
            Reply::typed(200, &ct, req.body)
        }
        ["slow"] => {
            tokio::time::sleep(SLOW).await;
            Reply::typed(200, "text/plain", "slow")
        }
        ["hold"] => {
            c.release.notified().await;
            Reply::typed(200, "text/plain", "released")
        }
        other => fixed(other),
    }
}

/// The routes whose answer depends on the path alone.
fn fixed(parts: &[&str]) -> Reply {
    match parts {
        ["size", n] => Reply::typed(200, "text/plain", vec![b'a'; n.parse().unwrap_or(0)]),
        ["binary"] => Reply::typed(
            200,
            "application/octet-stream",
            (0..=255u8).collect::<Vec<_>>(),
        ),
        ["backup"] => Reply::typed(
            200,
            "application/zip",
            b"PK\x03\x04\xff\xfe binary zip".to_vec(),
        )
        .header("Content-Disposition", "attachment; filename=\"backup.zip\""),
        ["status", code, n] => Reply::typed(
            code.parse().unwrap_or(500),
            "text/plain",
            vec![b'x'; n.parse().unwrap_or(0)],
        ),
        ["redirect"] => Reply::new(302, "").header("Location", "http://elsewhere.example/"),
        _ => not_found(),
    }
}

fn not_found() -> Reply {
    Reply::typed(404, "text/plain", "Not found")
}

fn json_reply(value: &Value) -> Reply {
    Reply::typed(200, "application/json", value.to_string())
}

/// `.../objects` and `.../objects/analog-value/{n}/properties/present-value`.
fn bacnet(c: &Controller, req: &Request, rest: &[&str]) -> Reply {
    match (req.method.as_str(), rest) {
        ("GET", ["objects"]) => {
            let list: Vec<Value> = c.points().iter().map(|(i, p)| describe(*i, p)).collect();
            json_reply(&json!({ "objects": list }))
        }
        (method, ["objects", "analog-value", n, "properties", "present-value"]) => {
            let Ok(instance) = n.parse::<u32>() else {
                return not_found();
            };
            match method {
                "GET" => match c.points().get(&instance) {
                    Some(p) => json_reply(&json!({ "value": p.value })),
                    None => Reply::typed(404, "text/plain", "No such object"),
                },
                "PUT" => write_value(c, instance, &req.body),
                _ => Reply::typed(405, "text/plain", "Method not allowed"),
            }
        }
        _ => not_found(),
    }
}

fn describe(instance: u32, p: &Point) -> Value {
    json!({
        "type": "analog-value",
        "instance": instance,
        "name": p.name,
        "units": p.units,
        "presentValue": p.value,
        "writable": p.writable,
    })
}

/// Writes take `{"value": number}` and answer the new value.
fn write_value(c: &Controller, instance: u32, body: &[u8]) -> Reply {
    let value = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("value").and_then(Value::as_f64));
    let Some(value) = value else {
        return Reply::typed(400, "text/plain", "expected {\"value\": number}");
    };
    let mut points = c.points();
    match points.get_mut(&instance) {
        Some(p) if p.writable => {
            p.value = value;
            json_reply(&json!({ "value": value }))
        }
        Some(_) => Reply::typed(403, "text/plain", "Read-only object"),
        None => Reply::typed(404, "text/plain", "No such object"),
    }
}
