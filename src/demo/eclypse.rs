//! A simulated Distech ECLYPSE controller REST API: a few endpoints in the
//! shape of `/api/rest/v1/...`, behind HTTP Basic auth like the real one,
//! so tether's relay does exactly what it does on a device.
//!
//! - `GET /api/rest/v1/info`: the controller's identity.
//! - `GET /api/rest/v1/protocols/bacnet/local/objects`: its BACnet points.
//! - `GET|PUT /api/rest/v1/protocols/bacnet/local/objects/analog-value/{n}/properties/present-value`:
//!   read a point, or write a writable one with `{"value": 23.5}`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The Basic-auth user tether is configured with.
pub const USER: &str = "admin";

/// One BACnet analog value.
#[derive(Debug, Clone)]
struct Point {
    name: &'static str,
    units: &'static str,
    value: f64,
    writable: bool,
}

struct Controller {
    /// `Basic base64(user:password)`.
    authorization: String,
    points: Mutex<BTreeMap<u32, Point>>,
    calls: AtomicU64,
}

/// A running simulated controller.
pub struct Eclypse {
    addr: SocketAddr,
    state: Arc<Controller>,
}

impl Eclypse {
    /// Serves on `listen` (port 0: a free one) until `stop`, accepting
    /// [`USER`] with `password`.
    ///
    /// # Errors
    /// When `listen` cannot be bound.
    pub async fn start(
        listen: SocketAddr,
        password: &str,
        stop: CancellationToken,
    ) -> std::io::Result<Eclypse> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let state = Arc::new(Controller {
            authorization: format!("Basic {}", b64.encode(format!("{USER}:{password}"))),
            points: Mutex::new(initial_points()),
            calls: AtomicU64::new(0),
        });
        const PV: &str =
            "/api/rest/v1/protocols/bacnet/local/objects/analog-value/{instance}/properties/present-value";
        let app = Router::new()
            .route("/api/rest/v1/info", get(info))
            .route("/api/rest/v1/protocols/bacnet/local/objects", get(objects))
            .route(PV, get(read_value).put(write_value))
            .fallback(|| async { (StatusCode::NOT_FOUND, "Not found") })
            .with_state(state.clone());
        tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = server.await {
                tracing::warn!(error = %e, "the simulated controller stopped");
            }
        });
        Ok(Eclypse { addr, state })
    }

    /// Its base URL: the `[controller] base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests it has answered (any status).
    pub fn calls(&self) -> u64 {
        self.state.calls.load(Ordering::Relaxed)
    }

    /// A point's present value.
    pub fn value(&self, instance: u32) -> Option<f64> {
        lock(&self.state).get(&instance).map(|p| p.value)
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

fn lock(c: &Controller) -> std::sync::MutexGuard<'_, BTreeMap<u32, Point>> {
    c.points.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counts the call and checks Basic auth, as the controller's web server
/// does before any route.
fn admitted(c: &Controller, headers: &HeaderMap) -> bool {
    c.calls.fetch_add(1, Ordering::Relaxed);
    let given = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    given == Some(c.authorization.as_bytes())
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"ECLYPSE\"")],
        "Unauthorized",
    )
        .into_response()
}

async fn info(State(c): State<Arc<Controller>>, headers: HeaderMap) -> Response {
    if !admitted(&c, &headers) {
        return unauthorized();
    }
    Json(json!({
        "apiRevision": "8.0",
        "model": "ECY-S1000 (simulated)",
        "hostName": "eclypse-demo",
        "firmwareVersion": "1.19.22345.1",
        "serialNumber": "DEMO-0001",
    }))
    .into_response()
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

async fn objects(State(c): State<Arc<Controller>>, headers: HeaderMap) -> Response {
    if !admitted(&c, &headers) {
        return unauthorized();
    }
    let list: Vec<Value> = lock(&c).iter().map(|(i, p)| describe(*i, p)).collect();
    Json(json!({ "objects": list })).into_response()
}

async fn read_value(
    State(c): State<Arc<Controller>>,
    Path(instance): Path<u32>,
    headers: HeaderMap,
) -> Response {
    if !admitted(&c, &headers) {
        return unauthorized();
    }
    match lock(&c).get(&instance) {
        Some(p) => Json(json!({ "value": p.value })).into_response(),
        None => (StatusCode::NOT_FOUND, "No such object").into_response(),
    }
}

/// Writes take `{"value": number}` and answer the new value.
async fn write_value(
    State(c): State<Arc<Controller>>,
    Path(instance): Path<u32>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !admitted(&c, &headers) {
        return unauthorized();
    }
    let value = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("value").and_then(Value::as_f64));
    let Some(value) = value else {
        return (StatusCode::BAD_REQUEST, "expected {\"value\": number}").into_response();
    };
    let mut points = lock(&c);
    match points.get_mut(&instance) {
        Some(p) if p.writable => {
            p.value = value;
            Json(json!({ "value": value })).into_response()
        }
        Some(_) => (StatusCode::FORBIDDEN, "Read-only object").into_response(),
        None => (StatusCode::NOT_FOUND, "No such object").into_response(),
    }
}
