//! `POST /v1/outbox/import` with `{"path": DIR}`: salvages the store in
//! `DIR` (set aside or copied) into the running outbox and answers the
//! counts (`tether outbox import DIR`). The salvage runs in its own thread
//! and finishes even if the client goes away.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tether_outbox::salvage::{SalvageError, Salvager};
use tokio::sync::oneshot;

/// What the import route needs.
pub(crate) struct ImportApi {
    /// The daemon's salvager.
    pub salvager: Arc<Salvager>,
}

/// The `/v1` route for imports.
pub(crate) fn router(api: Arc<ImportApi>) -> Router {
    Router::new()
        .route("/outbox/import", post(import))
        .with_state(api)
}

#[derive(Deserialize)]
struct ImportRequest {
    path: PathBuf,
}

async fn import(State(api): State<Arc<ImportApi>>, Json(req): Json<ImportRequest>) -> Response {
    let (tx, rx) = oneshot::channel();
    let salvager = api.salvager.clone();
    let started = std::thread::Builder::new()
        .name("outbox-import".into())
        .spawn(move || {
            let _ = tx.send(salvager.salvage(&req.path));
        });
    if let Err(e) = started {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot start the import: {e}"),
        );
    }
    match rx.await {
        Ok(Ok(outcome)) => Json(outcome).into_response(),
        Ok(Err(e)) => {
            let code = match e {
                SalvageError::Missing(_) | SalvageError::NotAStore(_) => StatusCode::BAD_REQUEST,
                SalvageError::Live(_) | SalvageError::SameStore(_) => StatusCode::CONFLICT,
                SalvageError::Stopping | SalvageError::Unavailable(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(code, e.to_string())
        }
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the import ended without an answer".into(),
        ),
    }
}

fn error(code: StatusCode, detail: String) -> Response {
    (code, Json(json!({"error": detail}))).into_response()
}
