//! `tether-cloud serve`: the Cloud Relay HTTP API over a broker.
//!
//! `GET|PUT|POST|DELETE /api/v1/devices/{deviceId}/request` with the
//! target in `Remote-Query`, `responseTimeout` (seconds, clamped), bodies
//! inline or through the blob store, and the §4 error table. Also hosts
//! the upload endpoint ([`super::upload`]) and `GET /healthz` (200 while
//! the broker connection is up, for load balancers).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::auth::Authenticator;
use super::blobs::{
    spawn_cleanup, BlobError, BlobStore, Spooled, DEVICE_CONTAINER, SERVER_CONTAINER,
};
use super::broker::Broker;
use super::config::ServeConfig;
use super::devices::DeviceCheck;
use super::error::CloudError;
use super::problem::ApiError;
use super::state::App;
use super::translate;
use super::upload::{self, stream_file};
use tether_protocol::relay::answer::DEFAULT_BLOB_CONTENT_TYPE;
use tether_protocol::relay::{
    Answer, AnswerBody, AnswerHeaders, ForwardHeaders, HttpMethod, RequestBody, RestRequest,
};
use tether_protocol::topics::cloud::is_topic_level;

/// How long devices may download a request blob (Cloud Relay's
/// `ReadAccessExpiryDelay`).
const READ_TTL: Duration = Duration::from_secs(20 * 60);

/// A running server.
pub struct ServeHandle {
    addr: SocketAddr,
    public_url: String,
    broker: Broker,
    task: JoinHandle<()>,
}

impl ServeHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL devices use: the API's base, and the value for a device's
    /// `relay.upload_url`.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Whether the broker connection is up (subscribed), waiting at most
    /// `wait` for a first attempt.
    pub async fn broker_ready(&self, wait: Duration) -> bool {
        self.broker.ready(wait).await.is_ok()
    }

    /// A device's last presence as this server knows it (`None`: never
    /// seen), e.g. to wait for a device to come online.
    pub fn device_online(&self, device: &str) -> Option<bool> {
        self.broker.presence(device)
    }

    /// Waits for the server to finish after its shutdown token fired.
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

/// Starts the API: binds, starts the broker connection and the blob
/// cleanup, and returns once listening. Everything stops when `shutdown`
/// is cancelled.
///
/// # Errors
/// Invalid settings, unusable TLS or auth files, an uncreatable blob
/// directory, or a listen address that cannot be bound.
pub async fn serve(
    cfg: ServeConfig,
    shutdown: CancellationToken,
) -> Result<ServeHandle, CloudError> {
    if !is_topic_level(&cfg.method_name) {
        return Err(CloudError::config("method_name", "must be one topic level"));
    }
    let auth = Authenticator::new(&cfg.auth)?;
    let blobs = BlobStore::open(&cfg.blobs)?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| CloudError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| CloudError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let public_url = cfg
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"))
        .trim_end_matches('/')
        .to_string();
    let public_host = public_host(&public_url)?;
    let broker = Broker::start(&cfg.broker, cfg.max_pending, shutdown.child_token())?;
    spawn_cleanup(&cfg.blobs, shutdown.clone());
    let app = Arc::new(App {
        broker: broker.clone(),
        auth,
        blobs,
        devices: DeviceCheck::new(cfg.device_auth, cfg.broker.clone()),
        public_url: public_url.clone(),
        public_host,
        method_name: cfg.method_name,
        response_timeout: cfg.response_timeout,
        bounds: cfg.response_timeout_bounds,
        inline_limit: cfg.inline_limit,
    });
    let router = Router::new()
        .route(
            "/api/v1/devices/{device_id}/request",
            get(api).put(api).post(api).delete(api),
        )
        .route("/healthz", get(healthz))
        .merge(upload::routes())
        .with_state(app);
    tracing::info!(%addr, public_url, "cloud relay API listening");
    let task = tokio::spawn(async move {
        let server =
            axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned());
        if let Err(e) = server.await {
            tracing::error!(error = %e, "cloud relay API stopped");
        }
    });
    Ok(ServeHandle {
        addr,
        public_url,
        broker,
        task,
    })
}

/// `host[:port]` of an `http(s)://host[:port]` URL without a path: the
/// upload slot's `hostName` cannot carry a path.
fn public_host(url: &str) -> Result<String, CloudError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| CloudError::config("public_url", "must start with http:// or https://"))?;
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return Err(CloudError::config(
            "public_url",
            "must be scheme://host[:port] without a path",
        ));
    }
    Ok(rest.to_string())
}

async fn healthz(State(app): State<Arc<App>>) -> StatusCode {
    match app.broker.ready(Duration::ZERO).await {
        Ok(_) => StatusCode::OK,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn api(
    State(app): State<Arc<App>>,
    Path(device): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(method) = HttpMethod::parse(method.as_str()) else {
        // axum routes HEAD with GET; the Cloud Relay routes only the four
        // methods, so HEAD is refused as axum refuses any other method.
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    };
    match relay(&app, &device, method, &uri, &headers, body).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

/// One API call: checks, body, method call, answer.
async fn relay(
    app: &App,
    device: &str,
    method: HttpMethod,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    app.auth.check(headers).map_err(ApiError::Unauthorized)?;
    let path = header_text(headers, "remote-query").ok_or(ApiError::MissingRemoteQuery)?;
    let timeout = response_timeout(uri.query(), app.response_timeout, app.bounds)?;
    if !is_topic_level(device) {
        return Err(ApiError::DeviceNotFound(device.to_string()));
    }
    // Refuse before storing a body for a device that cannot take it.
    app.broker.preflight(device).await?;
    let accept: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let forward = ForwardHeaders {
        accept: (!accept.is_empty()).then(|| accept.join(", ")),
        content_type: header_text(headers, "content-type"),
        content_disposition: header_text(headers, "content-disposition"),
    };
    let content_length = header_text(headers, "content-length").and_then(|v| v.parse().ok());
    let body = if method.has_body() {
        let to_blob = translate::is_form(forward.content_type.as_deref())
            || content_length.is_some_and(|n: u64| n > app.inline_limit as u64);
        let spooled = app
            .blobs
            .spool(body, device, &app.method_name, app.inline_limit, to_blob)
            .await
            .map_err(|e| match e {
                BlobError::TooLarge(max) => ApiError::BodyTooLarge(max),
                other => ApiError::Internal(other.to_string()),
            })?;
        match spooled {
            Spooled::Memory(bytes) => RequestBody::Inline(translate::decode_text(
                &bytes,
                forward.content_type.as_deref(),
            )),
            Spooled::Blob { path, .. } => {
                let sas = app.blobs.sas('r', SERVER_CONTAINER, &path, READ_TTL);
                RequestBody::Blob(format!("{}/{SERVER_CONTAINER}/{path}{sas}", app.public_url))
            }
        }
    } else {
        RequestBody::None
    };
    let req = RestRequest {
        method,
        path,
        headers: forward,
        body,
    };
    let payload = req.encode(content_length);
    let answer = app
        .broker
        .call(device, &app.method_name, payload, timeout)
        .await?;
    let parsed =
        Answer::parse(&answer.payload).map_err(|e| ApiError::InvalidResult(e.to_string()))?;
    respond(app, device, parsed).await
}

/// The HTTP response for a device answer: only `Content-Type` and
/// `Content-Disposition` pass (§5).
async fn respond(app: &App, device: &str, answer: Answer) -> Result<Response, ApiError> {
    let invalid = |what: &str| ApiError::InvalidResult(what.to_string());
    let AnswerHeaders {
        content_type,
        content_disposition,
    } = answer.headers;
    match answer.body {
        AnswerBody::Inline(body) => {
            let status = answer.status;
            let status = StatusCode::from_u16(status).map_err(|_| invalid("bad status"))?;
            let mut resp = (status, body).into_response();
            let ct = content_type
                .as_deref()
                .unwrap_or("text/plain; charset=utf-8");
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_str(ct).map_err(|_| invalid("bad Content-Type"))?,
            );
            if let Some(d) = content_disposition {
                h.insert(
                    header::CONTENT_DISPOSITION,
                    HeaderValue::from_str(&d).map_err(|_| invalid("bad Content-Disposition"))?,
                );
            }
            Ok(resp)
        }
        AnswerBody::Blob(name) => {
            let file = app
                .blobs
                .file(DEVICE_CONTAINER, &format!("{device}/{name}"))
                .map_err(|e| ApiError::InvalidResult(e.to_string()))?;
            // The Cloud Relay answers 500 without a Content-Type; a
            // generic one is more useful.
            let ct = content_type.as_deref().unwrap_or(DEFAULT_BLOB_CONTENT_TYPE);
            stream_file(&file, ct, content_disposition.as_deref())
                .await
                .map_err(|e| match e {
                    BlobError::NotFound => {
                        ApiError::InvalidResult(format!("blob {name:?} was never uploaded"))
                    }
                    BlobError::BadName(_) => invalid("bad Content-Type or Content-Disposition"),
                    other => ApiError::Internal(other.to_string()),
                })
        }
    }
}

/// The first non-empty value of `name` as text.
fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| !v.is_empty())
        .map(str::to_string)
}

/// `responseTimeout` (any case) in whole seconds, clamped to `bounds`.
///
/// # Errors
/// [`ApiError::InvalidResponseTimeout`] when it is not an integer.
pub fn response_timeout(
    query: Option<&str>,
    default: Duration,
    bounds: (Duration, Duration),
) -> Result<Duration, ApiError> {
    let value = query.unwrap_or_default().split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        k.eq_ignore_ascii_case("responseTimeout").then_some(v)
    });
    let wanted = match value {
        None => default,
        Some(v) => {
            let secs: i64 = v
                .trim()
                .parse()
                .map_err(|_| ApiError::InvalidResponseTimeout)?;
            Duration::from_secs(secs.max(0).unsigned_abs())
        }
    };
    Ok(wanted.clamp(bounds.0, bounds.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_timeouts_are_clamped_and_non_integers_refused() {
        let d = Duration::from_secs(30);
        let b = (Duration::from_secs(5), Duration::from_secs(300));
        let t = |q| response_timeout(q, d, b);
        assert_eq!(t(None).unwrap(), d);
        assert_eq!(
            t(Some("responsetimeout=1")).unwrap(),
            Duration::from_secs(5)
        );
        assert_eq!(
            t(Some("x=1&ResponseTimeout=60")).unwrap(),
            Duration::from_secs(60)
        );
        assert_eq!(
            t(Some("responseTimeout=9999")).unwrap(),
            Duration::from_secs(300)
        );
        assert_eq!(
            t(Some("responseTimeout=-3")).unwrap(),
            Duration::from_secs(5)
        );
        assert_eq!(
            t(Some("responseTimeout=abc")),
            Err(ApiError::InvalidResponseTimeout)
        );
        assert_eq!(
            t(Some("responseTimeout=1.5")),
            Err(ApiError::InvalidResponseTimeout)
        );
    }

    #[test]
    fn public_urls_must_be_a_bare_origin() {
        assert_eq!(
            public_host("https://relay.example.com:8443").unwrap(),
            "relay.example.com:8443"
        );
        assert!(public_host("https://relay.example.com/api").is_err());
        assert!(public_host("ftp://x").is_err());
    }
}
