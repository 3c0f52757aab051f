//! The local admin API, on a loopback address or a unix socket:
//! - `GET /healthz`: hub state and component checks (JSON; 503 when degraded).
//! - `GET /metrics`: Prometheus text.
//! - `/v1/...`: operational routes added by components; they need the
//!   bearer token whenever one is configured (always on TCP).

pub(crate) mod attributes;
pub(crate) mod failure_page;
pub(crate) mod failures;
pub(crate) mod import;
pub(crate) mod metrics;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tether_protocol::time::unix_seconds;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{AdminListen, Secret};
use crate::hub::HubStatus;

pub(crate) use metrics::RenderMetrics;

/// A component's contribution to `/healthz`.
pub(crate) trait HealthCheck: Send + Sync {
    /// Name, healthy?, details.
    fn check(&self) -> (&'static str, bool, Value);
}

/// Shared state behind the admin routes.
pub(crate) struct Admin {
    /// Hub status.
    pub hub: watch::Receiver<HubStatus>,
    /// Metric sources.
    pub metrics: Vec<Arc<dyn RenderMetrics>>,
    /// Extra health checks.
    pub checks: Vec<Arc<dyn HealthCheck>>,
    /// Bearer token for `/v1/`.
    pub token: Option<Secret>,
}

/// The admin listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminError {
    /// Binding failed.
    #[error("admin.listen: cannot listen on {addr}: {source} (is another tether running?)")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A bound listener.
pub(crate) enum Bound {
    /// TCP.
    Tcp(TcpListener),
    /// Unix socket.
    Unix(UnixListener),
}

impl Bound {
    /// Where it listens: for TCP the bound address (with the port the
    /// system picked for port 0), else `listen` as configured.
    pub(crate) fn address(&self, listen: &AdminListen) -> AdminListen {
        match self {
            Bound::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| listen.clone(), AdminListen::Tcp),
            Bound::Unix(_) => listen.clone(),
        }
    }
}

/// Binds the admin listener (before READY, so a clash is an early error).
///
/// # Errors
/// When the address is taken or the socket path unusable.
pub(crate) async fn bind(listen: &AdminListen) -> Result<Bound, AdminError> {
    match listen {
        AdminListen::Tcp(addr) => TcpListener::bind(addr)
            .await
            .map(Bound::Tcp)
            .map_err(|source| AdminError::Bind {
                addr: addr.to_string(),
                source,
            }),
        AdminListen::Unix(path) => {
            // A socket left by a killed process would make bind fail.
            if path.exists() {
                let _ = std::fs::remove_file(path);
            }
            let err = |source| AdminError::Bind {
                addr: path.display().to_string(),
                source,
            };
            let listener = UnixListener::bind(path).map_err(err)?;
            // The socket carries no token check: only its owner may connect
            // (connecting needs write permission). bind() applies the umask,
            // which may leave it open to the group or everyone.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
            Ok(Bound::Unix(listener))
        }
    }
}

/// The routes: health, metrics, and `v1` behind the token.
pub(crate) fn app(admin: Arc<Admin>, v1: Router) -> Router {
    let v1 = v1.layer(middleware::from_fn_with_state(admin.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .with_state(admin)
        .nest("/v1", v1)
}

/// Serves `app` on `bound` until `shutdown`.
pub(crate) fn serve(bound: Bound, app: Router, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let stop = shutdown.clone();
        let result = match bound {
            Bound::Tcp(l) => {
                info!(addr = ?l.local_addr().ok(), "admin API listening");
                axum::serve(l, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
            }
            Bound::Unix(l) => {
                info!(path = ?l.local_addr().ok(), "admin API listening");
                axum::serve(l, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
            }
        };
        if let Err(e) = result {
            warn!(error = %e, "admin API stopped");
        }
    })
}

async fn healthz(State(admin): State<Arc<Admin>>) -> Response {
    let hub = admin.hub.borrow().clone();
    let mut healthy = hub.is_connected() && !hub.credential_expired;
    let mut components = serde_json::Map::new();
    for c in &admin.checks {
        let (name, ok, details) = c.check();
        healthy &= ok;
        components.insert(name.to_string(), json!({ "ok": ok, "details": details }));
    }
    let body = json!({
        "status": if healthy { "ok" } else { "degraded" },
        "hub": {
            "state": hub.state.as_str(),
            "subscribed": hub.is_subscribed(),
            "since": unix_seconds(hub.since),
            "lastError": hub.last_error,
            "tokenExpiresAt": hub.credential_expires_at,
            "tokenExpired": hub.credential_expired,
            "connects": hub.connects,
            "disconnects": hub.disconnects,
        },
        "components": components,
    });
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn metrics_text(State(admin): State<Arc<Admin>>) -> Response {
    let mut out = String::new();
    for m in &admin.metrics {
        m.render(&mut out);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

async fn require_token(State(admin): State<Arc<Admin>>, req: Request, next: Next) -> Response {
    let Some(token) = &admin.token else {
        return next.run(req).await;
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(p) if constant_time_eq(p.as_bytes(), token.expose().as_bytes()) => next.run(req).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"error": "unauthorized", "detail": "send Authorization: Bearer <admin.token>"})),
        )
            .into_response(),
    }
}

/// Compares without an early exit, so timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
