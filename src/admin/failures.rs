//! Push failures, served locally in the shape of Afero's failure API, and
//! the outbox stats:
//! - `GET /v1/pushFailures?limit=50&before=ID`: newest first, paged;
//! - `GET|DELETE /v1/pushFailures/{id}`;
//! - `POST /v1/pushFailures/{id}/replay`: enqueue it again for its sink;
//! - `POST /v1/pushFailures/replay[?partnerId=NAME]`: replay all (or one
//!   sink's);
//! - `GET /v1/outbox/stats`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::attributes::intake_error;
use crate::outbox::{Core, Intake, StoreError};

/// Largest page.
const MAX_PAGE: usize = 1000;

/// What the failure routes need.
pub struct FailuresApi {
    /// The outbox.
    pub core: Arc<Core>,
    /// For replays.
    pub intake: Intake,
}

/// The `/v1` routes for failures and stats.
pub fn router(api: Arc<FailuresApi>) -> Router {
    Router::new()
        .route("/pushFailures", get(list))
        .route("/pushFailures/replay", post(replay_all))
        .route("/pushFailures/{id}", get(show).delete(delete))
        .route("/pushFailures/{id}/replay", post(replay_one))
        .route("/outbox/stats", get(stats))
        .with_state(api)
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
    before: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReplayQuery {
    partner_id: Option<String>,
}

fn store_error(e: &StoreError) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({"error": e.to_string()})),
    )
        .into_response()
}

fn not_found(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "not found", "partnerPushFailureId": id})),
    )
        .into_response()
}

async fn list(State(api): State<Arc<FailuresApi>>, Query(q): Query<ListQuery>) -> Response {
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    match api.core.list_failures(limit, q.before.as_deref()) {
        Ok(page) => Json(page).into_response(),
        Err(e) => store_error(&e),
    }
}

async fn show(State(api): State<Arc<FailuresApi>>, Path(id): Path<String>) -> Response {
    match api.core.failure(&id) {
        Ok(Some(f)) => Json(f).into_response(),
        Ok(None) => not_found(&id),
        Err(e) => store_error(&e),
    }
}

async fn delete(State(api): State<Arc<FailuresApi>>, Path(id): Path<String>) -> Response {
    match api.core.delete_failure(&id) {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => not_found(&id),
        Err(e) => store_error(&e),
    }
}

async fn replay_one(State(api): State<Arc<FailuresApi>>, Path(id): Path<String>) -> Response {
    let f = match api.core.failure(&id) {
        Ok(Some(f)) => f,
        Ok(None) => return not_found(&id),
        Err(e) => return store_error(&e),
    };
    // Enqueued durably first, then the failure goes: a crash in between
    // leaves both (a possible duplicate), never neither.
    if let Err(e) = api.intake.submit(vec![Core::replay_message(&f)]).await {
        return intake_error(&e);
    }
    if let Err(e) = api.core.delete_failure(&id) {
        return store_error(&e);
    }
    (StatusCode::ACCEPTED, Json(json!({"replayed": 1}))).into_response()
}

async fn replay_all(State(api): State<Arc<FailuresApi>>, Query(q): Query<ReplayQuery>) -> Response {
    // Paging downwards from the newest: failures recorded meanwhile (newer
    // ids) are not visited, so this ends.
    let mut before: Option<String> = None;
    let mut replayed = 0usize;
    loop {
        let page = match api.core.list_failures(256, before.as_deref()) {
            Ok(p) => p,
            Err(e) => return store_error(&e),
        };
        let chosen: Vec<_> = page
            .push_failures
            .iter()
            .filter(|f| q.partner_id.as_ref().is_none_or(|p| *p == f.partner_id))
            .collect();
        if !chosen.is_empty() {
            let msgs = chosen.iter().map(|f| Core::replay_message(f)).collect();
            if let Err(e) = api.intake.submit(msgs).await {
                return intake_error(&e);
            }
            for f in &chosen {
                if let Err(e) = api.core.delete_failure(&f.partner_push_failure_id) {
                    return store_error(&e);
                }
            }
            replayed += chosen.len();
        }
        match page.next {
            Some(n) => before = Some(n),
            None => break,
        }
    }
    (StatusCode::ACCEPTED, Json(json!({"replayed": replayed}))).into_response()
}

async fn stats(State(api): State<Arc<FailuresApi>>) -> Response {
    Json(api.core.stats()).into_response()
}
