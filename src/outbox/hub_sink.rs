//! Delivery to the hub at QoS 1. A message leaves the outbox only on its
//! PUBACK, mapped back through the session's delivery tokens (token = the
//! first sequence number of a publish). At most [`MAX_IN_FLIGHT`] publishes
//! are unacknowledged; when the connection drops they are all sent again by
//! us (rumqttc would silently drop them on a new session), and so are
//! publishes with no PUBACK for [`ACK_TIMEOUT`] (a lost notice).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::hub::{Delivery, HubHandle, HubStatus, PublishError, Telemetry};
use crate::service::Beat;

use super::core::{Core, SinkId};
use super::message::{Stored, ATTRIBUTE};
use super::pacing::Pacer;

/// Unacknowledged publishes at most (each may carry a batch).
pub const MAX_IN_FLIGHT: usize = 32;
/// A publish without PUBACK for this long while connected is sent again.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Messages read per batch when batching.
const BATCH_READ: usize = 64;

/// Hub delivery settings.
#[derive(Debug, Clone, Default)]
pub struct HubSinkOptions {
    /// `hub.max_messages_per_second`; `None` is unlimited.
    pub max_messages_per_second: Option<u32>,
    /// `store.batch_max_bytes`: several attribute messages per publish as a
    /// JSON array up to this size; 0 = one message per publish.
    pub batch_max_bytes: usize,
}

struct Flight {
    token: u64,
    /// `(seq, bytes)` of the messages it carries.
    msgs: Vec<(u64, u64)>,
    telemetry: Telemetry,
    sent: Instant,
}

pub(crate) struct HubSink {
    pub core: Arc<Core>,
    pub sink: SinkId,
    pub hub: HubHandle,
    pub deliveries: mpsc::Receiver<Delivery>,
    pub options: HubSinkOptions,
    pub beat: Beat,
    pub shutdown: CancellationToken,
}

impl HubSink {
    pub async fn run(mut self) {
        let mut flights: VecDeque<Flight> = VecDeque::new();
        let mut last_read = self.core.cursor(self.sink).saturating_sub(1);
        let mut pacer = Pacer::new(self.options.max_messages_per_second);
        let mut durable = self.core.durable();
        let mut status = self.hub.watch_status();
        loop {
            self.beat.beat_expecting(ACK_TIMEOUT * 2);
            while let Ok(d) = self.deliveries.try_recv() {
                if !self.on_delivery(d, &mut flights).await {
                    return;
                }
            }
            let st = status.borrow_and_update().clone();
            self.note_status(&st);
            if st.is_connected() && flights.len() < MAX_IN_FLIGHT {
                match self.fill(&mut flights, &mut last_read, &mut pacer).await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(()) => return,
                }
            }
            if st.is_connected()
                && flights
                    .front()
                    .is_some_and(|f| f.sent.elapsed() >= ACK_TIMEOUT)
            {
                warn!(
                    in_flight = flights.len(),
                    "no PUBACK from the hub within {ACK_TIMEOUT:?}; sending again"
                );
                if !self.resend(&mut flights).await {
                    return;
                }
            }
            // Every branch is cancel-safe: receiving from an mpsc or waiting
            // on a watch loses nothing when another branch wins.
            tokio::select! {
                d = self.deliveries.recv() => match d {
                    Some(d) => if !self.on_delivery(d, &mut flights).await { return },
                    None => return,
                },
                r = durable.changed() => if r.is_err() { return },
                r = status.changed() => if r.is_err() { return },
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    if let Some(f) = flights.front() {
                        debug!(in_flight = flights.len(), token = f.token, waiting = ?f.sent.elapsed(), "waiting for PUBACKs");
                    }
                }
                () = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Handles one notice; false when the session is gone.
    async fn on_delivery(&self, d: Delivery, flights: &mut VecDeque<Flight>) -> bool {
        match d {
            Delivery::Acked(token) => {
                if let Some(i) = flights.iter().position(|f| f.token == token) {
                    if let Some(f) = flights.remove(i) {
                        self.core.delivered(self.sink, &f.msgs);
                    }
                }
                true
            }
            Delivery::InFlightLost => self.resend(flights).await,
            Delivery::Connected(_) => {
                let now = Instant::now();
                for f in flights.iter_mut() {
                    f.sent = now;
                }
                true
            }
        }
    }

    /// Sends every unacknowledged publish again, in order, leaving out
    /// messages that expired or were dropped meanwhile.
    async fn resend(&self, flights: &mut VecDeque<Flight>) -> bool {
        flights.retain(|f| {
            f.msgs
                .iter()
                .any(|(seq, _)| !self.core.is_done(self.sink, *seq))
        });
        let n: usize = flights.iter().map(|f| f.msgs.len()).sum();
        if n > 0 {
            debug!(messages = n, "resending unacknowledged messages");
            self.core.count_duplicates(self.sink, n as u64);
        }
        for f in flights.iter_mut() {
            if let Err(PublishError::Closed) = self
                .hub
                .publish_telemetry(&f.telemetry, Some(f.token))
                .await
            {
                return false;
            }
            f.sent = Instant::now();
        }
        true
    }

    /// Publishes new messages into the free window. `Ok(true)` when some
    /// went out; `Err` when the session is gone.
    async fn fill(
        &self,
        flights: &mut VecDeque<Flight>,
        last_read: &mut u64,
        pacer: &mut Pacer,
    ) -> Result<bool, ()> {
        let room = MAX_IN_FLIGHT - flights.len();
        let batching = self.options.batch_max_bytes > 0;
        let limit = if batching { BATCH_READ } else { room };
        let msgs = match self.core.read(self.sink, *last_read, limit) {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "cannot read the outbox");
                return Ok(false);
            }
        };
        if msgs.is_empty() {
            return Ok(false);
        }
        let mut rest = msgs.as_slice();
        let mut sent = 0;
        while !rest.is_empty() && flights.len() < MAX_IN_FLIGHT {
            let take = if batching { self.batch_len(rest) } else { 1 };
            let (group, tail) = rest.split_at(take);
            rest = tail;
            let flight = flight(group);
            pacer.acquire().await;
            match self
                .hub
                .publish_telemetry(&flight.telemetry, Some(flight.token))
                .await
            {
                Ok(()) => {
                    *last_read = group[group.len() - 1].seq;
                    flights.push_back(flight);
                    sent += 1;
                }
                Err(PublishError::Closed) => return Err(()),
                Err(e @ PublishError::TooLarge { .. }) => {
                    *last_read = group[group.len() - 1].seq;
                    for m in group {
                        if let Err(err) = self.core.give_up(self.sink, m, &e.to_string()) {
                            warn!(error = %err, "cannot record a push failure");
                        }
                    }
                }
            }
        }
        Ok(sent > 0)
    }

    /// How many leading messages of `msgs` fit one batch: consecutive
    /// attribute messages whose JSON array stays within the limit.
    fn batch_len(&self, msgs: &[Stored]) -> usize {
        if msgs[0].message_type != ATTRIBUTE {
            return 1;
        }
        let mut size = 2 + msgs[0].body.len();
        let mut n = 1;
        for m in &msgs[1..] {
            if m.message_type != ATTRIBUTE || size + 1 + m.body.len() > self.options.batch_max_bytes
            {
                break;
            }
            size += 1 + m.body.len();
            n += 1;
        }
        n
    }

    fn note_status(&self, st: &HubStatus) {
        let error = (!st.is_connected()).then(|| {
            let since = humantime::format_rfc3339_seconds(st.since);
            match &st.last_error {
                Some(e) => format!("hub unreachable since {since}: {e}"),
                None => format!("hub unreachable since {since}"),
            }
        });
        if error.is_some() {
            self.core.set_error(self.sink, error);
        }
    }
}

/// One publish for `group` (one message, or a JSON array of several).
fn flight(group: &[Stored]) -> Flight {
    let first = &group[0];
    let payload = if group.len() == 1 {
        first.body.clone()
    } else {
        let mut p = Vec::with_capacity(group.iter().map(|m| m.body.len() + 1).sum::<usize>() + 1);
        p.push(b'[');
        for (i, m) in group.iter().enumerate() {
            if i > 0 {
                p.push(b',');
            }
            p.extend_from_slice(&m.body);
        }
        p.push(b']');
        p
    };
    Flight {
        token: first.seq,
        msgs: group.iter().map(|m| (m.seq, m.encoded_len())).collect(),
        telemetry: Telemetry {
            message_id: first.id.to_string(),
            message_type: first.message_type.clone(),
            payload,
            properties: Vec::new(),
        },
        sent: Instant::now(),
    }
}
