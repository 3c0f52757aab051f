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

use bytes::Bytes;
use tether_outbox::message::{id_str, Stored, ID_LEN};
use tether_outbox::{Core, SinkId, READ_BYTES};
use tether_protocol::afero::ATTRIBUTE;

use crate::hub::{Delivery, HubHandle, HubStatus, Prepared, PublishError, Telemetry};
use crate::service::Beat;

use super::pacing::Pacer;

/// Unacknowledged publishes at most (each may carry a batch). The sink is
/// bound by the round trip to the hub, not by CPU: on a loaded 2-core
/// device 32 in flight gave 9-13k PUBACK/s while the intake was writing,
/// 128 gave 11-19k; 256 no more (BENCHMARKS.md, durable throughput). rumqttc's own
/// window ([`crate::hub::options::MAX_IN_FLIGHT`]) is larger, so other QoS 1
/// publishes (reported properties) still find a packet id.
pub(crate) const MAX_IN_FLIGHT: usize = 128;
/// Payload bytes in flight at most (at least one publish), so a window of
/// large messages stays bounded in memory: rumqttc holds a copy of each
/// until its PUBACK, and so do we, to resend it.
const MAX_IN_FLIGHT_BYTES: usize = 1 << 20;
const _: () = assert!(MAX_IN_FLIGHT < crate::hub::options::MAX_IN_FLIGHT as usize);
/// A full window is topped up only once this many publishes are free, so
/// a backlog goes out in bursts that the session writes with one syscall
/// (and the broker reads with one), not one publish per PUBACK. The rest
/// of the window keeps the link busy meanwhile; a window with room (no
/// backlog) sends at once.
const REFILL_MIN: usize = MAX_IN_FLIGHT / 4;
/// A publish without PUBACK for this long while connected is sent again.
pub(crate) const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Messages read per batch when batching; the read-ahead is topped up
/// below this so a batch is never cut short by the end of the buffer.
const BATCH_READ: usize = 64;
/// Messages read from the store at once, ahead of the window: one scan
/// serves hundreds of publishes instead of one per PUBACK. Bounded in bytes
/// by [`READ_BYTES`].
const READ_AHEAD: usize = 512;

/// Hub delivery settings.
#[derive(Debug, Clone, Default)]
pub(crate) struct HubSinkOptions {
    /// `hub.max_messages_per_second`; `None` is unlimited.
    pub max_messages_per_second: Option<u32>,
    /// `store.batch_max_bytes`: several attribute messages per publish as a
    /// JSON array up to this size; 0 = one message per publish.
    pub batch_max_bytes: usize,
}

/// The sink's position: what is in flight, and what was read but not yet
/// published (in store order, every sequence number above the in-flight
/// ones and at most `last_read`).
struct Window {
    flights: VecDeque<Flight>,
    ahead: VecDeque<Stored>,
    last_read: u64,
}

struct Flight {
    token: u64,
    /// `(seq, bytes)` of the messages it carries.
    msgs: Vec<(u64, u64)>,
    publish: Prepared,
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
    pub(crate) async fn run(mut self) {
        let mut w = Window {
            flights: VecDeque::new(),
            ahead: VecDeque::new(),
            last_read: self.core.cursor(self.sink).saturating_sub(1),
        };
        let mut pacer = Pacer::new(self.options.max_messages_per_second);
        let mut durable = self.core.durable();
        let mut status = self.hub.watch_status();
        // One timer for the "waiting for PUBACKs" line: a fresh sleep per
        // turn of the loop would register a timer per PUBACK.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.beat.beat_expecting(ACK_TIMEOUT * 2);
            if !self.drain_deliveries(&mut w.flights).await {
                return;
            }
            let connected = status.borrow_and_update().is_connected();
            if !connected {
                let st = status.borrow().clone();
                self.note_unreachable(&st);
            }
            if connected && wants_refill(w.flights.len()) {
                match self.fill(&mut w, &mut pacer).await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(()) => return,
                }
            }
            if connected
                && w.flights
                    .front()
                    .is_some_and(|f| f.sent.elapsed() >= ACK_TIMEOUT)
            {
                warn!(
                    in_flight = w.flights.len(),
                    "no PUBACK from the hub within {ACK_TIMEOUT:?}; sending again"
                );
                if !self.resend(&mut w.flights).await {
                    return;
                }
            }
            // Every branch is cancel-safe: receiving from an mpsc or waiting
            // on a watch loses nothing when another branch wins.
            tokio::select! {
                d = self.deliveries.recv() => match d {
                    Some(d) => if !self.on_delivery(d, &mut w.flights).await { return },
                    None => return,
                },
                r = durable.changed() => if r.is_err() { return },
                r = status.changed() => if r.is_err() { return },
                _ = tick.tick() => {
                    if let Some(f) = w.flights.front() {
                        debug!(in_flight = w.flights.len(), token = f.token, waiting = ?f.sent.elapsed(), "waiting for PUBACKs");
                    }
                }
                () = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Handles every notice already waiting, recording the PUBACKed
    /// messages with one call to the core; false when the session is gone.
    async fn drain_deliveries(&mut self, flights: &mut VecDeque<Flight>) -> bool {
        let mut acked = Vec::new();
        while let Ok(d) = self.deliveries.try_recv() {
            match d {
                Delivery::Acked(token) => take_acked(flights, token, &mut acked),
                other => {
                    self.record_delivered(&mut acked);
                    if !self.on_delivery(other, flights).await {
                        return false;
                    }
                }
            }
        }
        self.record_delivered(&mut acked);
        true
    }

    fn record_delivered(&self, acked: &mut Vec<(u64, u64)>) {
        if !acked.is_empty() {
            self.core.delivered(self.sink, acked);
            acked.clear();
        }
    }

    /// Handles one notice; false when the session is gone.
    async fn on_delivery(&self, d: Delivery, flights: &mut VecDeque<Flight>) -> bool {
        match d {
            Delivery::Acked(token) => {
                let mut acked = Vec::new();
                take_acked(flights, token, &mut acked);
                self.record_delivered(&mut acked);
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
            if let Err(PublishError::Closed) = self.hub.publish(&f.publish, Some(f.token)).await {
                return false;
            }
            f.sent = Instant::now();
        }
        true
    }

    /// Tops up the read-ahead when it runs low: one store scan serves
    /// hundreds of publishes instead of one per PUBACK. It holds at most
    /// about two [`READ_BYTES`] of bodies.
    fn read_ahead(&self, w: &mut Window) {
        if w.ahead.len() >= BATCH_READ
            || w.ahead.iter().map(|m| m.body.len()).sum::<usize>() >= READ_BYTES
        {
            return;
        }
        match self.core.read(self.sink, w.last_read, READ_AHEAD) {
            Ok(msgs) => {
                if let Some(m) = msgs.last() {
                    w.last_read = m.seq;
                }
                w.ahead.extend(msgs);
            }
            Err(e) => warn!(error = %e, "cannot read the outbox"),
        }
    }

    /// Publishes read-ahead messages into the free window. `Ok(true)` when
    /// some went out; `Err` when the session is gone.
    async fn fill(&self, w: &mut Window, pacer: &mut Pacer) -> Result<bool, ()> {
        self.read_ahead(w);
        let batching = self.options.batch_max_bytes > 0;
        // Read a while ago: some may have expired or been dropped since.
        let next = if batching {
            w.ahead.len()
        } else {
            MAX_IN_FLIGHT.saturating_sub(w.flights.len())
        };
        self.core.drop_done(self.sink, &mut w.ahead, next);
        let mut bytes: usize = w.flights.iter().map(|f| f.publish.payload_len()).sum();
        let mut sent = 0;
        while !w.ahead.is_empty() && has_room(&w.flights, bytes) {
            let take = if batching {
                self.batch_len(w.ahead.make_contiguous())
            } else {
                1
            };
            let mut group: Vec<Stored> = w.ahead.drain(..take).collect();
            let msgs = group.iter().map(|m| (m.seq, m.encoded_len())).collect();
            let telemetry = telemetry(&mut group);
            let publish = match self.hub.prepare(&telemetry) {
                Ok(p) => p,
                Err(e) => {
                    self.give_up(&mut group, telemetry, &e);
                    continue;
                }
            };
            pacer.acquire().await;
            let token = group[0].seq;
            if let Err(PublishError::Closed) = self.hub.publish(&publish, Some(token)).await {
                return Err(());
            }
            bytes += publish.payload_len();
            w.flights.push_back(Flight {
                token,
                msgs,
                publish,
                sent: Instant::now(),
            });
            sent += 1;
        }
        Ok(sent > 0)
    }

    /// Records the messages of a publish the hub cannot take as push
    /// failures, each with its own body.
    fn give_up(&self, group: &mut [Stored], telemetry: Telemetry, e: &PublishError) {
        if let [single] = group {
            single.body = telemetry.payload.to_vec();
        }
        for m in group.iter() {
            if let Err(err) = self.core.give_up(self.sink, m, &e.to_string()) {
                warn!(error = %err, "cannot record a push failure");
            }
        }
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

    /// Records why the hub is unreachable (for failures and stats).
    fn note_unreachable(&self, st: &HubStatus) {
        let since = humantime::format_rfc3339_seconds(st.since);
        let error = match &st.last_error {
            Some(e) => format!("hub unreachable since {since}: {e}"),
            None => format!("hub unreachable since {since}"),
        };
        self.core.set_error(self.sink, Some(error));
    }
}

/// Whether to top up a window holding `in_flight` publishes: once at least
/// [`REFILL_MIN`] are free.
fn wants_refill(in_flight: usize) -> bool {
    in_flight + REFILL_MIN <= MAX_IN_FLIGHT
}

/// Whether the window takes another publish: below both bounds, or empty
/// (one message larger than the byte bound still goes out alone).
fn has_room(flights: &VecDeque<Flight>, bytes: usize) -> bool {
    flights.is_empty() || (flights.len() < MAX_IN_FLIGHT && bytes < MAX_IN_FLIGHT_BYTES)
}

/// Moves the messages of the flight PUBACKed as `token` to `acked`.
/// Flights are in token order (tokens are increasing sequence numbers),
/// and PUBACKs mostly come in that order too.
fn take_acked(flights: &mut VecDeque<Flight>, token: u64, acked: &mut Vec<(u64, u64)>) {
    if let Ok(i) = flights.binary_search_by_key(&token, |f| f.token) {
        if let Some(f) = flights.remove(i) {
            acked.extend_from_slice(&f.msgs);
        }
    }
}

/// The telemetry for `group` (one message, or a JSON array of several).
/// A single message's body is moved into the payload, not copied.
fn telemetry(group: &mut [Stored]) -> Telemetry {
    let payload = if let [single] = group {
        Bytes::from(std::mem::take(&mut single.body))
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
        p.into()
    };
    let first = &group[0];
    Telemetry {
        message_id: id_str(&first.id, &mut [0; ID_LEN]).to_owned(),
        message_type: first.message_type.clone(),
        payload,
        properties: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flights(tokens: &[u64]) -> VecDeque<Flight> {
        tokens
            .iter()
            .map(|&t| Flight {
                token: t,
                msgs: vec![(t, 10), (t + 1, 20)],
                publish: Prepared::empty(),
                sent: Instant::now(),
            })
            .collect()
    }

    #[test]
    fn pubacks_in_any_order_collect_their_messages_once() {
        let mut f = flights(&[1, 3, 5]);
        let mut acked = Vec::new();
        take_acked(&mut f, 3, &mut acked);
        take_acked(&mut f, 1, &mut acked);
        take_acked(&mut f, 3, &mut acked);
        take_acked(&mut f, 99, &mut acked);
        assert_eq!(acked, [(3, 10), (4, 20), (1, 10), (2, 20)]);
        assert_eq!(f.iter().map(|f| f.token).collect::<Vec<_>>(), [5]);
    }

    #[test]
    fn a_full_window_is_topped_up_in_bursts_and_one_with_room_at_once() {
        assert!(wants_refill(0), "an idle window sends at once");
        assert!(wants_refill(MAX_IN_FLIGHT - REFILL_MIN));
        assert!(!wants_refill(MAX_IN_FLIGHT - REFILL_MIN + 1));
        assert!(!wants_refill(MAX_IN_FLIGHT));
    }

    #[test]
    fn the_window_is_bounded_by_count_and_bytes_but_never_empty() {
        let full: Vec<u64> = (0..MAX_IN_FLIGHT as u64).map(|t| t * 2).collect();
        assert!(has_room(&flights(&full[1..]), 0));
        assert!(!has_room(&flights(&full), 0));
        assert!(!has_room(&flights(&[1]), MAX_IN_FLIGHT_BYTES));
        assert!(has_room(&flights(&[]), MAX_IN_FLIGHT_BYTES * 4));
    }
}
