//! Maps rumqttc's packet ids back to the caller's delivery tokens, so the
//! outbox learns which message a PUBACK confirms. rumqttc offers no
//! per-publish acknowledgement, so this follows its event stream:
//! QoS 1 requests enter its channel in the order `queued` records them, and
//! each one surfaces as `Outgoing::Publish(pkid)` (or `AwaitAck(pkid)` on a
//! packet-id collision) in that same order.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

/// A delivery token: the caller's id for a tracked publish.
pub(crate) type Token = u64;

/// The order in which QoS 1 requests were handed to rumqttc; shared between
/// publishers (push) and the session task (pop). `None` marks an untracked
/// QoS 1 publish (presence, reported properties).
#[derive(Debug, Clone, Default)]
pub(crate) struct Queued(Arc<Mutex<VecDeque<Option<Token>>>>);

impl Queued {
    /// Runs `send` with the queue locked and records `token` only if it
    /// succeeded, so the order of records is the order of the channel.
    pub(crate) fn push_with<E>(
        &self,
        token: Option<Token>,
        send: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), E> {
        let mut q = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        send()?;
        q.push_back(token);
        Ok(())
    }

    fn pop(&self) -> Option<Option<Token>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }

    fn drop_front(&self, n: usize) {
        let mut q = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = n.min(q.len());
        q.drain(..n);
    }
}

/// Packet-id bookkeeping for one session task.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    queued: Queued,
    in_flight: HashMap<u16, Option<Token>>,
    collided: Option<(u16, Option<Token>)>,
}

impl Tracker {
    /// A tracker reading from `queued`.
    pub(crate) fn new(queued: Queued) -> Self {
        Self {
            queued,
            in_flight: HashMap::new(),
            collided: None,
        }
    }

    /// rumqttc wrote a QoS 1 publish with `pkid`.
    pub(crate) fn on_outgoing_publish(&mut self, pkid: u16) {
        if pkid == 0 || self.in_flight.contains_key(&pkid) {
            // QoS 0, or a retransmission of a publish already mapped.
            return;
        }
        let entry = match self.collided.take() {
            Some((p, entry)) if p == pkid => entry,
            other => {
                self.collided = other;
                self.queued.pop().flatten()
            }
        };
        self.in_flight.insert(pkid, entry);
    }

    /// rumqttc parked a publish because `pkid` is still unacknowledged; it
    /// sends it (as `Outgoing::Publish(pkid)`) once that PUBACK arrives.
    pub(crate) fn on_await_ack(&mut self, pkid: u16) {
        let entry = self.queued.pop().flatten();
        self.collided = Some((pkid, entry));
    }

    /// A PUBACK arrived; returns the token it confirms, if tracked.
    pub(crate) fn on_puback(&mut self, pkid: u16) -> Option<Token> {
        self.in_flight.remove(&pkid).flatten()
    }

    /// The connection dropped. `drained` is how many QoS 1 requests rumqttc
    /// pulled back out of its channel without sending them (they are the
    /// oldest queued records). Everything in flight is forgotten: the owner
    /// of the tokens resends what was not confirmed.
    pub(crate) fn on_connection_lost(&mut self, drained: usize) {
        self.queued.drop_front(drained);
        self.in_flight.clear();
        self.collided = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(tokens: &[Option<Token>]) -> Queued {
        let q = Queued::default();
        for t in tokens {
            q.push_with(*t, || Ok::<_, ()>(())).unwrap();
        }
        q
    }

    #[test]
    fn pubacks_confirm_the_tokens_in_publish_order() {
        let q = queue(&[Some(10), None, Some(12)]);
        let mut t = Tracker::new(q.clone());
        t.on_outgoing_publish(1);
        t.on_outgoing_publish(2);
        t.on_outgoing_publish(3);
        assert!(q.0.lock().unwrap().is_empty());
        assert_eq!(t.on_puback(3), Some(12));
        assert_eq!(t.on_puback(2), None);
        assert_eq!(t.on_puback(1), Some(10));
        assert_eq!(t.on_puback(1), None, "a second puback confirms nothing");
    }

    #[test]
    fn qos0_and_retransmissions_do_not_consume_records() {
        let q = queue(&[Some(1)]);
        let mut t = Tracker::new(q.clone());
        t.on_outgoing_publish(0);
        t.on_outgoing_publish(5);
        t.on_outgoing_publish(5);
        assert_eq!(t.on_puback(5), Some(1));
    }

    #[test]
    fn a_collided_publish_is_mapped_when_it_is_finally_sent() {
        let q = queue(&[Some(1), Some(2)]);
        let mut t = Tracker::new(q);
        t.on_outgoing_publish(7);
        t.on_await_ack(7);
        assert_eq!(t.on_puback(7), Some(1));
        t.on_outgoing_publish(7);
        assert_eq!(t.on_puback(7), Some(2));
    }

    #[test]
    fn a_lost_connection_forgets_in_flight_and_drained_requests_only() {
        let q = queue(&[Some(1), Some(2), Some(3), Some(4)]);
        let mut t = Tracker::new(q.clone());
        t.on_outgoing_publish(1);
        // Tokens 2 and 3 were drained back out of the channel; 4 was sent to
        // the channel after the drain and will go out on the next connection.
        t.on_connection_lost(2);
        assert_eq!(t.in_flight.len(), 0);
        assert_eq!(t.on_puback(1), None);
        t.on_outgoing_publish(1);
        assert_eq!(t.on_puback(1), Some(4));
    }

    #[test]
    fn a_failed_send_records_nothing() {
        let q = Queued::default();
        assert!(q.push_with(Some(1), || Err("full")).is_err());
        assert!(q.0.lock().unwrap().is_empty());
    }
}
