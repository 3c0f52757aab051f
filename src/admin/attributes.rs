//! `POST /v1/attributes`: one attribute change or an array of them, each
//! `attributeId` + `attributeDataType` + either raw `attributeData` (hex,
//! any case) or a typed `value`. Answers 202 only once every message is on
//! disk; malformed input gets 400 naming the field, and nothing is kept.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tether_outbox::message::{id_str, ID_LEN};
use tether_outbox::{Intake, IntakeError, NewMessage};
use tether_protocol::afero::parse_changes;

use crate::clock::SharedClock;

/// What the attribute route needs.
pub(crate) struct AttributesApi {
    /// The outbox intake.
    pub intake: Intake,
    /// `deviceId` of the messages (the hub device id).
    pub device_id: String,
    /// `store.extended_data`.
    pub extended_data: Map<String, Value>,
    /// Stamps `utcTimestamp`.
    pub clock: SharedClock,
}

/// The `/v1` routes for attribute intake.
pub(crate) fn router(api: Arc<AttributesApi>) -> Router {
    Router::new()
        .route("/attributes", post(post_attributes))
        .with_state(api)
}

async fn post_attributes(State(api): State<Arc<AttributesApi>>, body: Bytes) -> Response {
    let changes = match parse_changes(&body) {
        Ok(c) => c,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "invalid", "field": e.field, "detail": e.detail})),
            )
                .into_response()
        }
    };
    let now = api.clock.now();
    let msgs: Vec<NewMessage> = changes
        .iter()
        .map(|c| NewMessage::attribute(&api.device_id, c, &api.extended_data, now))
        .collect();
    match api.intake.submit(msgs).await {
        Ok(receipts) => {
            let mut buf = [0; ID_LEN];
            let ids: Vec<String> = receipts
                .iter()
                .map(|r| id_str(&r.id, &mut buf).to_owned())
                .collect();
            (
                StatusCode::ACCEPTED,
                Json(json!({"accepted": ids.len(), "ids": ids})),
            )
                .into_response()
        }
        Err(e) => intake_error(&e),
    }
}

/// Maps an intake refusal to its HTTP answer.
pub(crate) fn intake_error(e: &IntakeError) -> Response {
    let body = Json(json!({"error": e.to_string()}));
    match e {
        IntakeError::Full { retry_after } => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(
                header::RETRY_AFTER,
                retry_after.as_secs().max(1).to_string(),
            )],
            body,
        )
            .into_response(),
        IntakeError::DiskFull => (StatusCode::INSUFFICIENT_STORAGE, body).into_response(),
        IntakeError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, body).into_response(),
        IntakeError::Invalid(_) => (StatusCode::BAD_REQUEST, body).into_response(),
        IntakeError::Closed => (StatusCode::SERVICE_UNAVAILABLE, body).into_response(),
        IntakeError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, body).into_response(),
    }
}
