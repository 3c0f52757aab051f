//! One registration with DPS over one MQTT connection, with no IO: subscribe
//! to the answers, register, poll the operation honouring `retry-after`,
//! repeat a throttled request, and end with an assignment or a reason.
//!
//! Like the hub's [`crate::hub::machine`]: the driver passes events with
//! the monotonic time they happened and drains [`Machine::poll_action`];
//! [`Action::WaitUntil`] asks it to call [`Machine::timeout`] then. Nothing
//! here reads a clock or touches a socket.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::Value;

use super::error::{detail, DpsError};
use super::wire::{self, Response};
use super::Assignment;

/// The shortest wait DPS's `retry-after` can impose: a `0` must not turn
/// polling into a busy loop.
pub(crate) const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// What the machine needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    /// The registration id (the request's `registrationId`).
    pub registration_id: String,
    /// Custom data for the request.
    pub payload: Option<Value>,
    /// The wait before polling when DPS gives no `retry-after`.
    pub poll_interval: Duration,
    /// How long an answer may take.
    pub response_timeout: Duration,
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Subscribe to this filter (QoS 1), then report [`Machine::subscribed`].
    Subscribe(String),
    /// Publish at QoS 1.
    Publish {
        /// The topic.
        topic: String,
        /// The body.
        payload: Vec<u8>,
    },
    /// Call [`Machine::timeout`] at this monotonic time (replaces any
    /// earlier wait).
    WaitUntil(Duration),
    /// DPS refused a request for now; it is repeated after the wait.
    Retrying(DpsError),
    /// DPS assigned a hub: disconnect, the registration is over.
    Done(Assignment),
    /// The attempt failed: disconnect; the caller retries later.
    Failed(DpsError),
}

/// What is sent or about to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Request {
    Register,
    Poll(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    /// Waiting for CONNACK.
    Connecting,
    /// Waiting for the SUBACK.
    Subscribing,
    /// Sent with this `$rid`; waiting for its answer.
    Awaiting(String, Request),
    /// Sending this request when the wait ends.
    Pausing(Request),
    /// Done or failed.
    Over,
}

/// One registration's state.
#[derive(Debug)]
pub(crate) struct Machine {
    settings: Settings,
    stage: Stage,
    rid: u64,
    actions: VecDeque<Action>,
}

impl Machine {
    /// A registration about to connect.
    pub(crate) fn new(settings: Settings) -> Self {
        Self {
            settings,
            stage: Stage::Connecting,
            rid: 0,
            actions: VecDeque::new(),
        }
    }

    /// The next action, if any.
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// CONNACK (accepted).
    pub(crate) fn connected(&mut self, now: Duration) {
        if self.stage != Stage::Connecting {
            return;
        }
        self.stage = Stage::Subscribing;
        self.actions
            .push_back(Action::Subscribe(wire::RESPONSE_FILTER.to_owned()));
        self.wait(now + self.settings.response_timeout);
    }

    /// The SUBACK; `granted` false when the filter was refused.
    pub(crate) fn subscribed(&mut self, now: Duration, granted: bool) {
        if self.stage != Stage::Subscribing {
            return;
        }
        if granted {
            self.send(now, Request::Register);
        } else {
            self.fail(DpsError::SubscribeRefused);
        }
    }

    /// A message arrived on `topic`.
    pub(crate) fn message(&mut self, now: Duration, topic: &str, payload: &[u8]) {
        let Stage::Awaiting(rid, request) = &self.stage else {
            return;
        };
        let response = match wire::parse(topic, payload) {
            None => return,
            Some(Err(why)) => return self.fail(DpsError::Unreadable(why)),
            Some(Ok(r)) => r,
        };
        // An answer to an earlier request (repeated after a timeout or
        // throttling) says nothing about the current one.
        if response.rid.as_deref() != Some(rid.as_str()) {
            return;
        }
        let request = request.clone();
        self.answer(now, request, response);
    }

    /// The time asked for with [`Action::WaitUntil`] has come.
    pub(crate) fn timeout(&mut self, now: Duration) {
        match &self.stage {
            Stage::Pausing(request) => {
                let request = request.clone();
                self.send(now, request);
            }
            Stage::Subscribing | Stage::Awaiting(..) => {
                self.fail(DpsError::Timeout(self.settings.response_timeout));
            }
            Stage::Connecting | Stage::Over => {}
        }
    }

    fn answer(&mut self, now: Duration, request: Request, r: Response) {
        let body = &r.body;
        let detail = detail(body.error_code, body.message.as_deref());
        match r.status {
            200..=299 => self.operation(now, r),
            401 | 403 => self.fail(DpsError::Unauthorized {
                status: r.status,
                detail,
            }),
            404 => self.fail(DpsError::NotFound {
                status: r.status,
                detail,
            }),
            429 => {
                let retry_after = self.retry_after(&r);
                self.actions
                    .push_back(Action::Retrying(DpsError::Throttled {
                        retry_after,
                        detail,
                    }));
                self.pause(now + retry_after, request);
            }
            500..=599 if r.retry_after.is_some() => {
                self.actions.push_back(Action::Retrying(DpsError::Server {
                    status: r.status,
                    detail,
                }));
                let after = self.retry_after(&r);
                self.pause(now + after, request);
            }
            500..=599 => self.fail(DpsError::Server {
                status: r.status,
                detail,
            }),
            status => self.fail(DpsError::Rejected { status, detail }),
        }
    }

    /// A `RegistrationOperationStatus`: still assigning, assigned or not.
    fn operation(&mut self, now: Duration, r: Response) {
        let state = r.body.registration_state.clone().unwrap_or_default();
        let status = r.body.status.clone().or(state.status.clone());
        match status.as_deref() {
            Some("assigned") => match Assignment::new(state.assigned_hub, state.device_id) {
                Ok(assignment) => {
                    self.stage = Stage::Over;
                    self.actions.push_back(Action::Done(assignment));
                }
                Err(why) => self.fail(DpsError::Unreadable(why)),
            },
            Some(s @ ("failed" | "disabled")) => {
                let code = state.error_code.or(r.body.error_code);
                let message = state.error_message.as_deref().or(r.body.message.as_deref());
                self.fail(DpsError::NotAssigned {
                    status: s.to_owned(),
                    detail: detail(code, message),
                });
            }
            Some("assigning" | "unassigned") => {
                let Some(operation) = r.body.operation_id.clone() else {
                    return self.fail(DpsError::Unreadable(
                        "an answer still assigning carries no operationId".into(),
                    ));
                };
                if !wire::is_topic_safe(&operation) {
                    return self.fail(DpsError::Unreadable(format!(
                        "operationId {operation:?} has characters a topic cannot carry"
                    )));
                }
                let after = self.retry_after(&r);
                self.pause(now + after, Request::Poll(operation));
            }
            other => self.fail(DpsError::Unreadable(format!(
                "operation status {other:?} is none of assigning, assigned, failed, disabled"
            ))),
        }
    }

    fn retry_after(&self, r: &Response) -> Duration {
        r.retry_after
            .map_or(self.settings.poll_interval, |d| d.max(MIN_RETRY_AFTER))
    }

    fn send(&mut self, now: Duration, request: Request) {
        self.rid += 1;
        let rid = self.rid.to_string();
        let (topic, payload) = match &request {
            Request::Register => (
                wire::register_topic(&rid),
                wire::register_body(
                    &self.settings.registration_id,
                    self.settings.payload.as_ref(),
                ),
            ),
            Request::Poll(operation) => (wire::poll_topic(&rid, operation), Vec::new()),
        };
        self.actions.push_back(Action::Publish { topic, payload });
        self.stage = Stage::Awaiting(rid, request);
        self.wait(now + self.settings.response_timeout);
    }

    fn pause(&mut self, until: Duration, request: Request) {
        self.stage = Stage::Pausing(request);
        self.wait(until);
    }

    fn wait(&mut self, until: Duration) {
        self.actions.push_back(Action::WaitUntil(until));
    }

    fn fail(&mut self, error: DpsError) {
        self.stage = Stage::Over;
        self.actions.push_back(Action::Failed(error));
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
