//! Push failures, served locally as Afero's failure API serves them, and
//! the outbox stats. A partner is an outbox sink: `hub` or a webhook's
//! `name`.
//!
//! Afero's paths and shapes:
//! - `GET /v1/partners/{partnerId}/pushFailures[?limit=N&after=ID&before=ID]`:
//!   a bare JSON array, oldest first; without `limit` up to `LIST_CAP`
//!   failures (and `LIST_BYTES`); when more remain, a `Link` header
//!   (`rel="next"`) names the next page;
//! - `DELETE /v1/partners/{partnerId}/pushFailures/{partnerPushFailureId}`:
//!   204, or 404 when it does not exist (any more) for that partner.
//!
//! tether's extensions, on the same implementation:
//! - `GET /v1/partners/{partnerId}/pushFailures/{id}`: one failure;
//! - `POST /v1/partners/{partnerId}/pushFailures/{id}/replay`: enqueue it
//!   again for its sink; `POST /v1/partners/{partnerId}/pushFailures/replay`:
//!   all of that partner's;
//! - `GET /v1/pushFailures?limit=50&before=ID`: every partner's, newest
//!   first, as `{"pushFailures": [...], "next": ID}`;
//! - `GET|DELETE /v1/pushFailures/{id}`, `POST /v1/pushFailures/{id}/replay`,
//!   `POST /v1/pushFailures/replay[?partnerId=NAME]`;
//! - `GET /v1/outbox/stats`.
//!
//! Ids are UUIDs (`FailureIds`); the decimal ids of earlier releases
//! still resolve for one release.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use serde_json::json;
use tether_outbox::{Core, Intake, IntakeError, PushFailure, StoreError};

use super::attributes::intake_error;
use super::failure_page::{
    gather, next_link, parse_query, AferoFailure, ListQuery, Order, Page, QueryError, CHUNK,
    LIST_BYTES, LIST_CAP,
};

/// Page size of `/v1/pushFailures` without `limit`.
const LEGACY_PAGE: usize = 50;
/// Characters left as they are in a partner name inside a path.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// What the failure routes need.
pub(crate) struct FailuresApi {
    /// The outbox.
    pub core: Arc<Core>,
    /// For replays.
    pub intake: Intake,
}

/// The `/v1` routes for failures and stats.
pub(crate) fn router(api: Arc<FailuresApi>) -> Router {
    Router::new()
        .route("/partners/{partner}/pushFailures", get(list_partner))
        .route(
            "/partners/{partner}/pushFailures/replay",
            post(replay_partner),
        )
        .route(
            "/partners/{partner}/pushFailures/{id}",
            get(show_partner).delete(delete_partner),
        )
        .route(
            "/partners/{partner}/pushFailures/{id}/replay",
            post(replay_one_partner),
        )
        .route("/pushFailures", get(list_all))
        .route("/pushFailures/replay", post(replay_all))
        .route("/pushFailures/{id}", get(show).delete(delete))
        .route("/pushFailures/{id}/replay", post(replay_one))
        .route("/outbox/stats", get(stats))
        .with_state(api)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReplayQuery {
    partner_id: Option<String>,
}

/// Why a failure route could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FailureApiError {
    /// The store failed: 500.
    #[error("the outbox store failed: {0}")]
    Store(#[from] StoreError),
    /// No such failure (for that partner): 404.
    #[error("no push failure {id:?}{}", whose(partner.as_deref()))]
    NotFound {
        /// The id asked for.
        id: String,
        /// The partner of the path, if any.
        partner: Option<String>,
    },
    /// The partner is not an outbox sink: 404.
    #[error("partnerId {partner:?} is not an outbox sink of this tether")]
    UnknownPartner {
        /// The partner asked for.
        partner: String,
        /// The sinks there are.
        known: Vec<String>,
    },
    /// A query parameter is unusable: 400.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// A replay was not accepted (the intake's status).
    #[error(transparent)]
    Intake(#[from] IntakeError),
    /// The listing task died: 500.
    #[error("listing the push failures failed: {0}")]
    Task(String),
}

fn whose(partner: Option<&str>) -> String {
    partner.map_or(String::new(), |p| format!(" of partnerId {p:?}"))
}

impl IntoResponse for FailureApiError {
    fn into_response(self) -> Response {
        let msg = self.to_string();
        let (code, body) = match self {
            Self::NotFound { id, .. } => (
                StatusCode::NOT_FOUND,
                json!({
                    "error": "not found",
                    "partnerPushFailureId": id,
                    "detail": format!(
                        "{msg}: it was deleted, replayed or purged after store.failure_ttl, or \
                         never existed; list them again for current ids"
                    ),
                }),
            ),
            Self::UnknownPartner { partner, known } => (
                StatusCode::NOT_FOUND,
                json!({
                    "error": "unknown partnerId",
                    "partnerId": partner,
                    "detail": format!("{msg}; the partners here are: {}", known.join(", ")),
                }),
            ),
            Self::Query(e) => (
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid query", "field": e.field, "detail": e.detail}),
            ),
            Self::Intake(e) => return intake_error(&e),
            Self::Store(_) | Self::Task(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, json!({"error": msg}))
            }
        };
        (code, Json(body)).into_response()
    }
}

/// A handler's answer.
type Answer = Result<Response, FailureApiError>;

fn not_found(id: &str, partner: Option<&str>) -> FailureApiError {
    FailureApiError::NotFound {
        id: id.to_string(),
        partner: partner.map(str::to_string),
    }
}

fn known_partner(core: &Core, partner: &str) -> Result<(), FailureApiError> {
    match core.sink_id(partner) {
        Some(_) => Ok(()),
        None => Err(FailureApiError::UnknownPartner {
            partner: partner.to_string(),
            known: core.sink_names(),
        }),
    }
}

/// The failure `id` names, if it exists and belongs to `partner` (any
/// partner when `None`).
fn find(
    core: &Core,
    partner: Option<&str>,
    id: &str,
) -> Result<(u64, PushFailure), FailureApiError> {
    let n = core
        .failure_ids()?
        .number(id)
        .ok_or_else(|| not_found(id, partner))?;
    match core.failure(n)? {
        Some(f) if partner.is_none_or(|p| p == f.partner_id) => Ok((n, f)),
        _ => Err(not_found(id, partner)),
    }
}

/// Gathers a page off the async runtime (it may read many records).
async fn page(
    core: Arc<Core>,
    order: Order,
    partner: Option<String>,
    q: ListQuery,
) -> Result<Page, FailureApiError> {
    let newest_first = order == Order::NewestFirst;
    let work = move || {
        gather(
            order,
            q.bounds,
            partner.as_deref(),
            q.limit,
            LIST_BYTES,
            |b, n| core.failure_rows(b.after, b.before, n, newest_first),
        )
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(p) => Ok(p?),
        Err(e) => Err(FailureApiError::Task(e.to_string())),
    }
}

async fn list_partner(
    State(api): State<Arc<FailuresApi>>,
    Path(partner): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    known_partner(&api.core, &partner)?;
    let ids = api.core.failure_ids()?;
    let q = parse_query(&q, &ids, LIST_CAP)?;
    let p = page(
        api.core.clone(),
        Order::OldestFirst,
        Some(partner.clone()),
        q,
    )
    .await?;
    let more = p.more;
    let list: Vec<AferoFailure> = p
        .rows
        .into_iter()
        .map(|r| AferoFailure::new(&ids, r.number, r.failure))
        .collect();
    let link = list.last().filter(|_| more).map(|last| {
        let path = format!(
            "/v1/partners/{}/pushFailures",
            percent_encoding::utf8_percent_encode(&partner, SEGMENT)
        );
        next_link(&path, &last.partner_push_failure_id, &q, &ids)
    });
    Ok(match link {
        Some(l) => ([(header::LINK, l)], Json(list)).into_response(),
        None => Json(list).into_response(),
    })
}

async fn list_all(
    State(api): State<Arc<FailuresApi>>,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    let ids = api.core.failure_ids()?;
    let q = parse_query(&q, &ids, LEGACY_PAGE)?;
    let p = page(api.core.clone(), Order::NewestFirst, None, q).await?;
    let more = p.more;
    let list: Vec<AferoFailure> = p
        .rows
        .into_iter()
        .map(|r| AferoFailure::new(&ids, r.number, r.failure))
        .collect();
    let next = list
        .last()
        .filter(|_| more)
        .map(|f| f.partner_push_failure_id.clone());
    let body = match next {
        Some(n) => json!({"pushFailures": list, "next": n}),
        None => json!({"pushFailures": list}),
    };
    Ok(Json(body).into_response())
}

fn show_inner(core: &Core, partner: Option<&str>, id: &str) -> Answer {
    if let Some(p) = partner {
        known_partner(core, p)?;
    }
    let ids = core.failure_ids()?;
    let (number, failure) = find(core, partner, id)?;
    Ok(Json(AferoFailure::new(&ids, number, failure)).into_response())
}

fn delete_inner(core: &Core, partner: Option<&str>, id: &str) -> Answer {
    if let Some(p) = partner {
        known_partner(core, p)?;
    }
    let (n, _) = find(core, partner, id)?;
    if core.delete_failure(n)? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        // Deleted meanwhile by another request: only one of them wins.
        Err(not_found(id, partner))
    }
}

async fn replay_one_inner(api: &FailuresApi, partner: Option<&str>, id: &str) -> Answer {
    if let Some(p) = partner {
        known_partner(&api.core, p)?;
    }
    let (n, f) = find(&api.core, partner, id)?;
    // Enqueued durably first, then the failure goes: a crash in between
    // leaves both (a possible duplicate), never neither.
    api.intake.submit(vec![Core::replay_message(&f)]).await?;
    api.core.delete_failure(n)?;
    Ok((StatusCode::ACCEPTED, Json(json!({"replayed": 1}))).into_response())
}

/// Replays every failure of `partner` (all when `None`), in chunks.
async fn replay_many(api: &FailuresApi, partner: Option<&str>) -> Answer {
    // Paging downwards from the newest: failures recorded meanwhile (newer
    // numbers) are not visited, so this ends.
    let mut before: Option<u64> = None;
    let mut replayed = 0usize;
    loop {
        let rows = api.core.failure_rows(None, before, CHUNK, true)?;
        let Some(last) = rows.last() else { break };
        before = Some(last.number);
        let exhausted = rows.len() < CHUNK;
        let chosen: Vec<_> = rows
            .iter()
            .filter(|r| partner.is_none_or(|p| p == r.failure.partner_id))
            .collect();
        if !chosen.is_empty() {
            let msgs = chosen
                .iter()
                .map(|r| Core::replay_message(&r.failure))
                .collect();
            api.intake.submit(msgs).await?;
            for r in &chosen {
                api.core.delete_failure(r.number)?;
            }
            replayed += chosen.len();
        }
        if exhausted {
            break;
        }
    }
    Ok((StatusCode::ACCEPTED, Json(json!({"replayed": replayed}))).into_response())
}

async fn show_partner(
    State(api): State<Arc<FailuresApi>>,
    Path((partner, id)): Path<(String, String)>,
) -> Answer {
    show_inner(&api.core, Some(&partner), &id)
}

async fn delete_partner(
    State(api): State<Arc<FailuresApi>>,
    Path((partner, id)): Path<(String, String)>,
) -> Answer {
    delete_inner(&api.core, Some(&partner), &id)
}

async fn replay_one_partner(
    State(api): State<Arc<FailuresApi>>,
    Path((partner, id)): Path<(String, String)>,
) -> Answer {
    replay_one_inner(&api, Some(&partner), &id).await
}

async fn replay_partner(
    State(api): State<Arc<FailuresApi>>,
    Path(partner): Path<String>,
) -> Answer {
    known_partner(&api.core, &partner)?;
    replay_many(&api, Some(&partner)).await
}

async fn show(State(api): State<Arc<FailuresApi>>, Path(id): Path<String>) -> Answer {
    show_inner(&api.core, None, &id)
}

async fn delete(State(api): State<Arc<FailuresApi>>, Path(id): Path<String>) -> Answer {
    delete_inner(&api.core, None, &id)
}

async fn replay_one(State(api): State<Arc<FailuresApi>>, Path(id): Path<String>) -> Answer {
    replay_one_inner(&api, None, &id).await
}

async fn replay_all(State(api): State<Arc<FailuresApi>>, Query(q): Query<ReplayQuery>) -> Answer {
    replay_many(&api, q.partner_id.as_deref()).await
}

async fn stats(State(api): State<Arc<FailuresApi>>) -> Response {
    Json(api.core.stats()).into_response()
}
