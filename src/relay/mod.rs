//! The relay: the cloud invokes the `RestApi` direct method carrying a REST
//! request (shared/specs/cloud-relay.md); tether runs it against the
//! controller's local REST API and answers with the result.
//!
//! Map:
//! - the payloads are [`tether_protocol::relay`]'s: the request, parsed
//!   tolerantly, and the answer.
//! - [`tether_protocol::relay::path`]: what a path may be (pure checks).
//! - `controller`: the HTTP client for the controller (auth, TLS).
//! - `response`: the answer's shape, inline vs blob, truncation.
//! - `blob`: request bodies from blob URLs, responses through file upload.
//! - `limits`: concurrency, wait queue and `$rid` de-duplication.
//! - `schedule`: calls made on a timer, results sent upstream.
//! - `metrics`, `audit`: counters and the per-call log line.
//! - `tests`: component tests, a call in and an answer out against real
//!   HTTP servers.
//!
//! `Relay::handle` always answers: every failure becomes an answer the
//! Cloud Relay understands (400, 403, 405, 413, 502, 503, 504), and when the
//! controller answered, its status and body are passed on as they are.

pub(crate) mod audit;
pub(crate) mod blob;
pub(crate) mod controller;
mod error;
pub(crate) mod limits;
pub(crate) mod metrics;
pub(crate) mod response;
pub(crate) mod schedule;
#[cfg(test)]
mod tests;
mod uploader;

use std::sync::Arc;
use std::time::Duration;

use tether_protocol::relay::answer::DEFAULT_BLOB_CONTENT_TYPE;
use tether_protocol::relay::path;
use tether_protocol::relay::request::encode_body;
use tether_protocol::relay::{ForwardHeaders, HttpMethod, RequestBody, RestRequest};
use tokio::time::{timeout_at, Instant};

use crate::clock::{SharedClock, SystemClock};
use crate::config::{ControllerConfig, RelayConfig};
use crate::hub::methods::{MethodCall, MethodResponse};

pub(crate) use error::{Failure, RelayError};
pub(crate) use metrics::RelayMetrics;
pub(crate) use schedule::spawn_schedules;
pub(crate) use uploader::{EndpointAuth, Uploader};

use audit::Audit;
use blob::Cloud;
use controller::Controller;
use limits::{Admission, Dedup, Limiter};
use response::Shape;

/// Largest request blob or controller response carried, by default.
pub(crate) const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// How long an answer is kept for a repeated `$rid`.
pub(crate) const DEDUP_TTL: Duration = Duration::from_secs(60);

/// How many answers the de-duplication cache holds at most.
const DEDUP_CAPACITY: usize = 1024;

/// The relay service: a pure request → answer service over an HTTP client
/// for the controller; it does not know MQTT.
pub(crate) struct Relay {
    method_name: String,
    allowed_paths: Vec<String>,
    request_timeout: Duration,
    inline_limit: usize,
    max_body_bytes: usize,
    controller: Controller,
    cloud: Cloud,
    limiter: Limiter,
    dedup: Dedup,
    metrics: RelayMetrics,
    clock: SharedClock,
}

impl Relay {
    /// Builds the relay and its HTTP clients. Nothing is contacted yet.
    ///
    /// # Errors
    /// An unusable `controller.base_url` or upload URL, unreadable CA
    /// files, or `accept_invalid_certs` for a host that is not loopback or
    /// link-local.
    pub(crate) fn new(
        cfg: &RelayConfig,
        controller: &ControllerConfig,
        uploader: Uploader,
    ) -> Result<Relay, RelayError> {
        Ok(Relay {
            method_name: cfg.method_name.clone(),
            allowed_paths: cfg.allowed_paths.clone(),
            request_timeout: cfg.request_timeout,
            inline_limit: cfg.inline_limit,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            controller: Controller::new(controller, cfg.request_timeout)?,
            cloud: Cloud::new(uploader, cfg.request_timeout)?,
            limiter: Limiter::new(cfg.max_concurrent, cfg.max_queued),
            dedup: Dedup::new(DEDUP_TTL, DEDUP_CAPACITY),
            metrics: RelayMetrics::default(),
            clock: Arc::new(SystemClock),
        })
    }

    /// Sets the largest request blob or controller response carried
    /// (default [`DEFAULT_MAX_BODY_BYTES`]); larger ones are answered 413.
    /// The daemon keeps the default; tests lower it to reach it.
    #[cfg(test)]
    #[must_use]
    pub(crate) fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Sets the clock stamping scheduled results (default: the system's).
    #[must_use]
    pub(crate) fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The direct method to register (`relay.method_name`).
    pub(crate) fn method_name(&self) -> &str {
        &self.method_name
    }

    /// Counters for `/metrics`.
    pub(crate) fn metrics(&self) -> &RelayMetrics {
        &self.metrics
    }

    pub(crate) fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Serves one direct-method call. Never panics and always answers; a
    /// repeated `$rid` on the same connection gets the first answer again
    /// without a second execution.
    pub(crate) async fn handle(&self, call: MethodCall) -> MethodResponse {
        let started = Instant::now();
        let ticket = match self.dedup.admit(call.connection, &call.rid) {
            Admission::Fresh(ticket) => ticket,
            Admission::Cached(resp) => return self.repeated(&call, resp, started),
            Admission::Wait(mut rx) => {
                let first =
                    timeout_at(started + self.request_timeout, rx.wait_for(Option::is_some))
                        .await
                        .ok()
                        .and_then(|r| r.ok().and_then(|v| v.clone()));
                let resp = first.unwrap_or_else(|| {
                    response::failure(&Failure::Busy(
                        "the first delivery of this call did not finish".into(),
                    ))
                });
                return self.repeated(&call, resp, started);
            }
        };
        let mut audit = Audit::default();
        let outcome = match RestRequest::parse(&call.payload) {
            Ok(req) => self.run(req, started, &mut audit).await,
            Err(e) => Err(e.into()),
        };
        let resp = self.finish(outcome, &mut audit);
        // Busy is transient: a repeat of this rid deserves a new try.
        ticket.finish(&resp, audit.error != Some("busy"));
        self.metrics
            .record(resp.status, started.elapsed(), audit.sent, audit.received);
        audit.log(&call.rid, call.connection, resp.status, started.elapsed());
        resp
    }

    /// Serves a scheduled call (no `$rid`, no de-duplication).
    pub(crate) async fn call_scheduled(
        &self,
        name: &str,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> MethodResponse {
        let started = Instant::now();
        let mut audit = Audit::default();
        let outcome = match HttpMethod::parse(method) {
            Ok(method) => {
                let headers = ForwardHeaders {
                    accept: None,
                    content_type: body.filter(|_| method.has_body()).map(|b| {
                        if serde_json::from_str::<serde_json::Value>(b).is_ok() {
                            "application/json".to_string()
                        } else {
                            "text/plain; charset=utf-8".to_string()
                        }
                    }),
                    content_disposition: None,
                };
                let req = RestRequest {
                    method,
                    path: path.to_string(),
                    headers,
                    body: body
                        .filter(|_| method.has_body())
                        .map_or(RequestBody::None, |b| RequestBody::Inline(b.to_string())),
                };
                self.run(req, started, &mut audit).await
            }
            Err(e) => Err(e.into()),
        };
        let resp = self.finish(outcome, &mut audit);
        self.metrics
            .record(resp.status, started.elapsed(), audit.sent, audit.received);
        audit.log(
            &format!("schedule:{name}"),
            0,
            resp.status,
            started.elapsed(),
        );
        resp
    }

    fn repeated(
        &self,
        call: &MethodCall,
        resp: MethodResponse,
        started: Instant,
    ) -> MethodResponse {
        self.metrics.deduplicated();
        tracing::info!(
            target: "tether::relay::audit",
            rid = %call.rid,
            connection = call.connection,
            status = resp.status,
            duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "repeated $rid answered with the first answer"
        );
        resp
    }

    fn finish(
        &self,
        outcome: Result<MethodResponse, Failure>,
        audit: &mut Audit,
    ) -> MethodResponse {
        match outcome {
            Ok(resp) => resp,
            Err(f) => {
                audit.error = Some(f.code());
                if matches!(f, Failure::Busy(_)) {
                    self.metrics.busy();
                }
                response::failure(&f)
            }
        }
    }

    /// Checks, waits for a slot, executes, shapes, all before the deadline.
    async fn run(
        &self,
        req: RestRequest,
        started: Instant,
        audit: &mut Audit,
    ) -> Result<MethodResponse, Failure> {
        audit.method = Some(req.method.as_str());
        audit.path = Some(audit::redact(&req.path));
        let checked = path::check(&req.path)?;
        if !path::allowed(&checked.path, &self.allowed_paths) {
            return Err(Failure::PathNotAllowed(checked.path));
        }
        let url = self.controller.url_for(&checked)?;
        let deadline = started + self.request_timeout;
        let _slot = match timeout_at(deadline, self.limiter.acquire()).await {
            Ok(Ok(slot)) => slot,
            Ok(Err(limits::Full)) => {
                return Err(Failure::Busy(
                    "every slot and wait-queue place is taken".into(),
                ))
            }
            Err(_) => return Err(Failure::Busy("no slot freed before the timeout".into())),
        };
        match timeout_at(deadline, self.exchange(req, url, audit)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::Timeout(format!(
                "no answer within {} ms",
                self.request_timeout.as_millis()
            ))),
        }
    }

    /// Fetches the body, calls the controller and shapes the answer.
    async fn exchange(
        &self,
        req: RestRequest,
        url: reqwest::Url,
        audit: &mut Audit,
    ) -> Result<MethodResponse, Failure> {
        let body = if req.method.has_body() {
            Some(match &req.body {
                RequestBody::None => Vec::new(),
                RequestBody::Inline(text) => {
                    encode_body(text, req.headers.content_type.as_deref())?
                }
                RequestBody::Blob(url) => self.cloud.download(url, self.max_body_bytes).await?,
            })
        } else {
            None
        };
        audit.sent = body.as_ref().map_or(0, |b| b.len() as u64);
        let mut reply = self
            .controller
            .send(req.method, url, &req.headers, body, self.max_body_bytes)
            .await?;
        audit.received = reply.body.len() as u64;
        match response::shape(&reply, self.inline_limit) {
            Shape::Inline(resp) => Ok(resp),
            Shape::Blob if self.cloud.can_upload() => {
                let name = format!("{}/{}", self.method_name, uuid::Uuid::new_v4());
                let content_type = reply
                    .content_type
                    .clone()
                    .unwrap_or_else(|| DEFAULT_BLOB_CONTENT_TYPE.to_string());
                let bytes = std::mem::take(&mut reply.body);
                let uploaded = self.cloud.upload(&name, &content_type, bytes).await;
                self.metrics.upload(uploaded.is_ok());
                uploaded?;
                audit.blob = Some(name.clone());
                Ok(response::blob(&reply, &name))
            }
            Shape::Blob => response::inline_without_upload(&reply),
        }
    }
}
