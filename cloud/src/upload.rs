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
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::blobs::{BlobError, DEVICE_CONTAINER, SERVER_CONTAINER};
use super::state::App;

/// How long device upload SAS tokens last.
const WRITE_TTL: Duration = Duration::from_secs(3600);

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
