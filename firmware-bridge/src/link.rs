//! The transaction (handshake) state machine of spec §4, module side.
//!
//! Driven by protocol state, never by scanning for magic bytes: `0x30`,
//! `0x31` and `0x32` occur freely inside counts, checksums and values.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::mem;

use crate::error::ProtocolError;
use crate::frame::{SyncFrame, SyncKind, MAX_PAYLOAD_LEN, READY, SYNC, SYNC_ACK, SYNC_FRAME_LEN};
use crate::queue::{OutItem, OutQueue, Payload, Tag};

/// Interval between READY retries while the MCU has not answered (spec §4.6).
pub const READY_RETRY_MS: u64 = 1_000;
/// READY retries after the first one before the offer counts as broken.
pub const READY_RETRIES: u8 = 3;
/// How long the MCU may pause inside a handshake. afLib answers each of our
/// steps within its loop and the Arduino port gives up after 1 s per byte;
/// a longer pause means it abandoned the transaction.
pub const STEP_TIMEOUT_MS: u64 = 2_000;
/// Quiet gap after "procedure complete" before our next READY, so a READY
/// cannot land while afLib still has one pending (the duplicate-READY bug).
pub const GAP_MS: u64 = 30;
/// Silence after a broken transaction: afLib's 10 s read window plus its 1 s
/// sync-retry delay, so a blocked MCU times out before we speak again.
pub const QUIET_AFTER_BROKEN_MS: u64 = 11_000;

/// What the link tells the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LinkEvent {
    /// A complete payload from the MCU, without its length prefix.
    Received(Vec<u8>),
    /// A queued item reached the MCU.
    Delivered(Tag),
    /// The MCU broke the protocol.
    Error(ProtocolError),
    /// A transaction was abandoned; this many in a row so far.
    Broken(u8),
}

/// Bytes to send and events, filled by the link.
#[derive(Debug, Default)]
pub(crate) struct LinkOut {
    pub tx: VecDeque<Vec<u8>>,
    pub events: VecDeque<LinkEvent>,
}

#[derive(Debug)]
enum State {
    Idle,
    /// We sent READY and wait for the MCU's SYNC REQUEST.
    Offered {
        sent_at: u64,
        retries: u8,
    },
    /// We answered a SYNC REQUEST and wait for its ACK.
    AwaitAck {
        mcu_count: u16,
        asr_count: u16,
        sending: Option<OutItem>,
        since: u64,
    },
    /// The MCU sends its payload.
    Receiving {
        expected: u16,
        buf: Vec<u8>,
        received: usize,
        since: u64,
    },
}

/// Handshake state plus the partial sync frame being assembled.
#[derive(Debug)]
pub(crate) struct Link {
    state: State,
    sync_buf: [u8; SYNC_FRAME_LEN],
    sync_len: usize,
    sync_started: u64,
    quiet_until: u64,
    failures: u8,
    /// Bytes thrown away outside any frame (line noise), ever.
    stray: u64,
}

impl Default for Link {
    fn default() -> Self {
        Self {
            state: State::Idle,
            sync_buf: [0; SYNC_FRAME_LEN],
            sync_len: 0,
            sync_started: 0,
            quiet_until: 0,
            failures: 0,
            stray: 0,
        }
    }
}

impl Link {
    /// Feeds received bytes.
    pub(crate) fn handle_rx(
        &mut self,
        bytes: &[u8],
        now: u64,
        q: &mut OutQueue,
        out: &mut LinkOut,
    ) {
        for &b in bytes {
            if matches!(self.state, State::Receiving { .. }) {
                self.payload_byte(b, now, out);
                continue;
            }
            // afLib's transport discards stray bytes the same way.
            if self.sync_len == 0 && b != SYNC && b != SYNC_ACK {
                self.stray += 1;
                continue;
            }
            if self.sync_len == 0 {
                self.sync_started = now;
            }
            self.sync_buf[self.sync_len] = b;
            self.sync_len += 1;
            if self.sync_len == SYNC_FRAME_LEN {
                self.sync_len = 0;
                match SyncFrame::parse(&self.sync_buf) {
                    Ok(frame) => self.frame(frame, now, q, out),
                    Err(e) => {
                        out.events
                            .push_back(LinkEvent::Error(ProtocolError::BadSyncFrame(e)));
                        self.resync();
                    }
                }
            }
        }
    }

    /// Bytes discarded outside any frame since the link was made.
    pub(crate) fn stray_bytes(&self) -> u64 {
        self.stray
    }

    /// Earliest time [`Link::handle_timeout`] has work to do.
    pub(crate) fn poll_timeout(&self, q: &OutQueue) -> Option<u64> {
        let partial = (self.sync_len > 0).then_some(self.sync_started + STEP_TIMEOUT_MS);
        let state = match &self.state {
            State::Idle if self.sync_len == 0 && !q.is_empty() => Some(self.quiet_until),
            State::Idle => None,
            State::Offered { sent_at, .. } => Some(sent_at + READY_RETRY_MS),
            State::AwaitAck { since, .. } | State::Receiving { since, .. } => {
                Some(since + STEP_TIMEOUT_MS)
            }
        };
        match (partial, state) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs timers and starts an offer when something waits.
    pub(crate) fn handle_timeout(&mut self, now: u64, q: &mut OutQueue, out: &mut LinkOut) {
        if self.sync_len > 0 && now >= self.sync_started + STEP_TIMEOUT_MS {
            // A byte of the frame was lost on the line; the MCU sends it again.
            out.events
                .push_back(LinkEvent::Error(ProtocolError::TruncatedSyncFrame(
                    self.sync_len as u8,
                )));
            self.sync_len = 0;
        }
        match &mut self.state {
            State::Idle => {
                if self.sync_len == 0 && !q.is_empty() && now >= self.quiet_until {
                    out.tx.push_back(alloc::vec![READY]);
                    self.state = State::Offered {
                        sent_at: now,
                        retries: 0,
                    };
                }
            }
            State::Offered { sent_at, retries } => {
                if now < *sent_at + READY_RETRY_MS {
                    return;
                }
                if self.sync_len > 0 {
                    // The MCU is answering right now; another READY would be a duplicate.
                    *sent_at = now;
                } else if *retries < READY_RETRIES {
                    out.tx.push_back(alloc::vec![READY]);
                    *sent_at = now;
                    *retries += 1;
                } else {
                    out.events
                        .push_back(LinkEvent::Error(ProtocolError::NoSyncRequest));
                    self.broken(now, q, out);
                }
            }
            State::AwaitAck { since, .. } | State::Receiving { since, .. } => {
                if now >= *since + STEP_TIMEOUT_MS {
                    out.events
                        .push_back(LinkEvent::Error(ProtocolError::TransactionTimeout));
                    self.broken(now, q, out);
                }
            }
        }
    }

    /// Abandons any transaction without the quiet period (the session is
    /// restarting and clears the queue itself).
    pub(crate) fn reset(&mut self, q: &mut OutQueue) {
        if let State::AwaitAck {
            sending: Some(item),
            ..
        } = mem::replace(&mut self.state, State::Idle)
        {
            q.unpop(item);
        }
        self.sync_len = 0;
        self.quiet_until = 0;
    }

    fn frame(&mut self, frame: SyncFrame, now: u64, q: &mut OutQueue, out: &mut LinkOut) {
        match frame.kind {
            SyncKind::Sync => self.answer(frame.mcu_count, now, q, out),
            SyncKind::Ack => match mem::replace(&mut self.state, State::Idle) {
                State::AwaitAck {
                    mcu_count,
                    asr_count,
                    sending,
                    ..
                } if frame.mcu_count == mcu_count && frame.asr_count == asr_count => {
                    self.acked(mcu_count, sending, now, out);
                }
                State::AwaitAck { sending, .. } => {
                    let (mcu_count, asr_count) = (frame.mcu_count, frame.asr_count);
                    out.events
                        .push_back(LinkEvent::Error(ProtocolError::AckMismatch {
                            mcu_count,
                            asr_count,
                        }));
                    self.state = State::AwaitAck {
                        mcu_count: 0,
                        asr_count: 0,
                        sending,
                        since: now,
                    };
                    self.broken(now, q, out);
                }
                other => {
                    self.state = other;
                    out.events
                        .push_back(LinkEvent::Error(ProtocolError::UnexpectedAck));
                }
            },
        }
    }

    /// Answers a SYNC REQUEST, whatever state we are in (spec §4.6 rule c).
    /// When the MCU has data, it wins: we offer nothing (spec §4.5).
    fn answer(&mut self, mcu_count: u16, now: u64, q: &mut OutQueue, out: &mut LinkOut) {
        let mut sending = match mem::replace(&mut self.state, State::Idle) {
            State::AwaitAck { sending, .. } => sending,
            _ => None,
        };
        if mcu_count > 0 {
            if let Some(item) = sending.take() {
                q.unpop(item);
            }
        } else if sending.is_none() {
            sending = q.pop();
        }
        let asr_count = match &sending {
            // Payloads are bounded by MAX_PAYLOAD_LEN, far below u16::MAX.
            Some(OutItem {
                payload: Payload::Bytes(b),
                ..
            }) => b.len() as u16,
            _ => 0,
        };
        let mut bytes = SyncFrame::response(mcu_count, asr_count)
            .to_bytes()
            .to_vec();
        bytes.push(READY);
        out.tx.push_back(bytes);
        self.state = State::AwaitAck {
            mcu_count,
            asr_count,
            sending,
            since: now,
        };
    }

    fn acked(&mut self, mcu_count: u16, sending: Option<OutItem>, now: u64, out: &mut LinkOut) {
        if mcu_count > 0 {
            out.tx.push_back(alloc::vec![READY]);
            let buf = Vec::with_capacity(usize::from(mcu_count).min(MAX_PAYLOAD_LEN));
            self.state = State::Receiving {
                expected: mcu_count,
                buf,
                received: 0,
                since: now,
            };
            return;
        }
        let mut bytes = alloc::vec![READY];
        if let Some(item) = sending {
            if let Payload::Bytes(payload) = &item.payload {
                // "Sync complete" READY, the data, then "procedure complete".
                bytes.extend_from_slice(payload);
                bytes.push(READY);
            }
            out.events.push_back(LinkEvent::Delivered(item.tag));
        }
        out.tx.push_back(bytes);
        self.complete(now);
    }

    fn payload_byte(&mut self, b: u8, now: u64, out: &mut LinkOut) {
        let State::Receiving {
            expected,
            buf,
            received,
            ..
        } = &mut self.state
        else {
            return;
        };
        *received += 1;
        if buf.len() < MAX_PAYLOAD_LEN {
            buf.push(b);
        }
        let expected = *expected;
        if *received == 2
            && buf[0] == SYNC
            && u16::from_le_bytes([buf[0], buf[1]]) != expected.wrapping_sub(2)
        {
            // Not our payload's length prefix: the MCU gave up and started a
            // new SYNC REQUEST (spec §4.6 rule c).
            self.sync_buf[..2].copy_from_slice(&buf[..2]);
            self.sync_len = 2;
            self.sync_started = now;
            self.state = State::Idle;
            return;
        }
        if *received < usize::from(expected) {
            return;
        }
        let payload = mem::take(buf);
        out.tx.push_back(alloc::vec![READY]);
        self.complete(now);
        if usize::from(expected) > MAX_PAYLOAD_LEN {
            out.events
                .push_back(LinkEvent::Error(ProtocolError::PayloadTooLarge(expected)));
        } else {
            // afLib itself ignores the length prefix and trusts the sync
            // count; so do we.
            out.events.push_back(LinkEvent::Received(
                payload.get(2..).unwrap_or_default().to_vec(),
            ));
        }
    }

    fn complete(&mut self, now: u64) {
        self.state = State::Idle;
        self.quiet_until = now + GAP_MS;
        self.failures = 0;
    }

    fn broken(&mut self, now: u64, q: &mut OutQueue, out: &mut LinkOut) {
        if let State::AwaitAck {
            sending: Some(item),
            ..
        } = mem::replace(&mut self.state, State::Idle)
        {
            q.unpop(item);
        }
        self.sync_len = 0;
        self.quiet_until = now + QUIET_AFTER_BROKEN_MS;
        self.failures = self.failures.saturating_add(1);
        out.events.push_back(LinkEvent::Broken(self.failures));
    }

    /// After a bad frame, keeps the tail from the next plausible type byte so
    /// one corrupted byte does not hide the following frame.
    fn resync(&mut self) {
        let buf = self.sync_buf;
        if let Some(pos) = buf[1..].iter().position(|b| *b == SYNC || *b == SYNC_ACK) {
            let tail = &buf[1 + pos..];
            self.sync_buf[..tail.len()].copy_from_slice(tail);
            self.sync_len = tail.len();
        }
    }
}
