//! The plain-broker upload endpoint: IoT Hub's file-upload URL layout
//! (azure-iothub-mqtt.md §5) plus blob `PUT`/`GET`, on the local
//! [`BlobStore`](super::blobs::BlobStore), so tether's relay (`relay.upload_url`) and the devices'
//! request-blob downloads work without Azure.
//!
//! - `POST /devices/{id}/files` → `{correlationId, hostName,
//!   containerName, blobName, sasToken}` (device auth);
//! - `PUT /iothub-fileupload/{id}/{name}?{sas}` with `x-ms-blob-type:
//!   BlockBlob` → 201 (single shot; block lists are not supported);
//! - `POST /devices/{id}/files/notifications[/{correlationId}]` → 204;
//! - `GET /{container}/{id}/{name}?{sas}` → the bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use rumqttc::{AsyncClient, ConnectionError, Event, Packet};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::blobs::{safe_path, BlobError, DEVICE_CONTAINER, SERVER_CONTAINER};
use super::broker::options;
use super::config::{BrokerConfig, DeviceAuth};
use super::serve::App;
use crate::hub::topics::cloud::is_topic_level;

/// How long device upload SAS tokens last.
const WRITE_TTL: Duration = Duration::from_secs(3600);
/// How long an accepted device credential is trusted without asking the
/// broker again.
const CREDENTIAL_TTL: Duration = Duration::from_secs(300);
const CREDENTIAL_CACHE: usize = 1024;

/// The routes, to merge into the API's router.
pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/devices/{device}/files", post(create_slot))
        .route("/devices/{device}/files/notifications", post(notify))
        .route(
            "/devices/{device}/files/notifications/{correlation}",
            post(notify),
        )
        .route(
            &format!("/{DEVICE_CONTAINER}/{{*blob}}"),
            get(get_blob).put(put_blob),
        )
        .route(&format!("/{SERVER_CONTAINER}/{{*blob}}"), get(get_blob))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SlotRequest {
    blob_name: String,
}

async fn create_slot(
    State(app): State<Arc<App>>,
    Path(device): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(status) = app.devices.check(&device, &headers).await {
        return status.into_response();
    }
    let Ok(bytes) = axum::body::to_bytes(body, 4096).await else {
        return (StatusCode::BAD_REQUEST, "body too large").into_response();
    };
    let Ok(req) = serde_json::from_slice::<SlotRequest>(&bytes) else {
        return (StatusCode::BAD_REQUEST, "expected {\"blobName\": ...}").into_response();
    };
    let path = format!("{device}/{}", req.blob_name);
    if app.blobs.file(DEVICE_CONTAINER, &path).is_err() {
        return (StatusCode::BAD_REQUEST, "unusable blobName").into_response();
    }
    let slot = serde_json::json!({
        "correlationId": uuid::Uuid::new_v4().to_string(),
        "hostName": app.public_host,
        "containerName": DEVICE_CONTAINER,
        "blobName": path,
        "sasToken": app.blobs.sas('w', DEVICE_CONTAINER, &path, WRITE_TTL),
    });
    axum::Json(slot).into_response()
}

async fn notify(
    State(app): State<Arc<App>>,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let device = params.get("device").map(String::as_str).unwrap_or_default();
    match app.devices.check(device, &headers).await {
        // Nothing waits for notifications: the answer names the blob.
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(status) => status.into_response(),
    }
}

async fn put_blob(
    State(app): State<Arc<App>>,
    Path(blob): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let query = uri.query().unwrap_or_default();
    if !app.blobs.verify('w', DEVICE_CONTAINER, &blob, query) {
        return (StatusCode::FORBIDDEN, "AuthenticationFailed").into_response();
    }
    if query.split('&').any(|kv| kv.starts_with("comp=")) {
        return (
            StatusCode::NOT_IMPLEMENTED,
            "block uploads are not supported",
        )
            .into_response();
    }
    if headers.get("x-ms-blob-type").and_then(|v| v.to_str().ok()) != Some("BlockBlob") {
        return (StatusCode::BAD_REQUEST, "x-ms-blob-type must be BlockBlob").into_response();
    }
    let file = match app.blobs.file(DEVICE_CONTAINER, &blob) {
        Ok(f) => f,
        Err(e) => return blob_error(&e),
    };
    match app.blobs.write(&file, None, body).await {
        Ok(_) => StatusCode::CREATED.into_response(),
        Err(e) => blob_error(&e),
    }
}

async fn get_blob(State(app): State<Arc<App>>, Path(blob): Path<String>, uri: Uri) -> Response {
    let container = uri
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    if !app
        .blobs
        .verify('r', container, &blob, uri.query().unwrap_or_default())
    {
        return (StatusCode::FORBIDDEN, "AuthenticationFailed").into_response();
    }
    match app.blobs.file(container, &blob) {
        Ok(file) => match stream_file(&file, "application/octet-stream", None).await {
            Ok(resp) => resp,
            Err(e) => blob_error(&e),
        },
        Err(e) => blob_error(&e),
    }
}

/// A 200 streaming `file`, with its length.
///
/// # Errors
/// [`BlobError::NotFound`] when it does not exist, other IO errors.
pub(crate) async fn stream_file(
    file: &std::path::Path,
    content_type: &str,
    disposition: Option<&str>,
) -> Result<Response, BlobError> {
    let f = tokio::fs::File::open(file)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => BlobError::NotFound,
            _ => BlobError::Io(e),
        })?;
    let len = f.metadata().await?.len();
    let mut resp = Body::from_stream(tokio_util::io::ReaderStream::new(f)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, len.into());
    let value = |v: &str| v.parse().map_err(|_| BlobError::BadName(v.to_string()));
    h.insert(header::CONTENT_TYPE, value(content_type)?);
    if let Some(d) = disposition {
        h.insert(header::CONTENT_DISPOSITION, value(d)?);
    }
    Ok(resp)
}

fn blob_error(e: &BlobError) -> Response {
    let status = match e {
        BlobError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        BlobError::BadName(_) => StatusCode::BAD_REQUEST,
        BlobError::NotFound => StatusCode::NOT_FOUND,
        BlobError::Body(_) => StatusCode::BAD_REQUEST,
        BlobError::Io(_) => {
            tracing::warn!(error = %e, "blob store failure");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    (status, e.to_string()).into_response()
}

/// Checks device credentials for the upload endpoint.
pub(crate) struct DeviceCheck {
    mode: DeviceAuth,
    broker: BrokerConfig,
    /// Digest of `user:password` → when the broker accepted it.
    accepted: Mutex<HashMap<[u8; 32], Instant>>,
}

impl DeviceCheck {
    pub(crate) fn new(mode: DeviceAuth, broker: BrokerConfig) -> Self {
        DeviceCheck {
            mode,
            broker,
            accepted: Mutex::new(HashMap::new()),
        }
    }

    /// Ok, or the status to answer (401, 503).
    pub(crate) async fn check(&self, device: &str, headers: &HeaderMap) -> Result<(), StatusCode> {
        if !is_topic_level(device) || !safe_path(device) {
            return Err(StatusCode::NOT_FOUND);
        }
        if self.mode == DeviceAuth::None {
            return Ok(());
        }
        let (user, password) = basic(headers).ok_or(StatusCode::UNAUTHORIZED)?;
        // tether's plain-broker convention: the username is the device id,
        // so accepted credentials also prove the identity.
        if user != device {
            return Err(StatusCode::UNAUTHORIZED);
        }
        let key: [u8; 32] = Sha256::digest(format!("{user}:{password}")).into();
        let fresh = |at: &Instant| at.elapsed() < CREDENTIAL_TTL;
        if self.cache().get(&key).is_some_and(fresh) {
            return Ok(());
        }
        self.ask_broker(&user, &password).await?;
        let mut cache = self.cache();
        if cache.len() >= CREDENTIAL_CACHE {
            cache.retain(|_, at| fresh(at));
            if cache.len() >= CREDENTIAL_CACHE {
                cache.clear();
            }
        }
        cache.insert(key, Instant::now());
        Ok(())
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Instant>> {
        self.accepted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One MQTT CONNECT with the credentials, under a throwaway client id
    /// so the device's own session is not taken over.
    async fn ask_broker(&self, user: &str, password: &str) -> Result<(), StatusCode> {
        let mut cfg = self.broker.clone();
        cfg.username = Some(user.to_string());
        cfg.password = Some(crate::config::Secret::new(password));
        let id = format!("tether-cloud-auth-{}", uuid::Uuid::new_v4().simple());
        let opts = options(&cfg, &id).map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
        let (client, mut eventloop) = AsyncClient::new(opts, 4);
        let outcome = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(ConnectionError::ConnectionRefused(_)) => {
                        return Err(StatusCode::UNAUTHORIZED)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot check device credentials with the broker");
                        return Err(StatusCode::SERVICE_UNAVAILABLE);
                    }
                }
            }
        })
        .await
        .unwrap_or(Err(StatusCode::SERVICE_UNAVAILABLE));
        if outcome.is_ok() {
            let _ = client.try_disconnect();
            let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
        }
        outcome
    }
}

/// `Authorization: Basic base64(user:password)`.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine as _;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}
