//! The session: the module side of afLib4 as a sans-IO state machine.
//! Bytes and the current time go in; bytes, events and the next deadline
//! come out. Nothing here reads a clock or touches IO.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use crate::config::Config;
use crate::error::Error;
use crate::event::{Event, LinkDownReason, Outcome, RequestHandle};
use crate::frame::{encode_payload, MAX_VALUE_LEN};
use crate::link::{Link, LinkEvent, LinkOut};
use crate::message::{state, Message};
use crate::queue::{OutItem, OutQueue, Payload, Tag};
use crate::requests::{Kind, Requests};
use crate::table::{owner, AttributeTable, Owner};

/// Events kept for the host before new ones are dropped.
pub const MAX_EVENTS: usize = 256;

/// Where the boot sequence (spec §6) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Boot {
    /// Zero sync and UPDATE 1208 queued; after 1208 is delivered we wait
    /// until `deadline` for the MCU's SET 1209.
    AwaitVersion { deadline: Option<u64> },
    /// Notifications queued, waiting for INITIALIZED to be delivered.
    Announcing,
    /// afLib is ready; `next_probe` is when the liveness probe is due.
    Up { next_probe: Option<u64> },
    /// The MCU asked us to reboot; we boot again at `at`.
    Rebooting { at: u64 },
}

/// The module (ASR) side of one afLib4 UART link.
///
/// Call [`Module::handle_rx`] with received bytes, [`Module::handle_timeout`]
/// when [`Module::poll_timeout`] says so, and drain
/// [`Module::poll_transmit`] and [`Module::poll_event`] after every call.
/// The session boots by itself from the first call.
#[derive(Debug)]
pub struct Module {
    pub(crate) config: Config,
    pub(crate) table: AttributeTable,
    pub(crate) link: Link,
    pub(crate) link_out: LinkOut,
    pub(crate) queue: OutQueue,
    pub(crate) requests: Requests,
    pub(crate) boot: Boot,
    events: VecDeque<Event>,
    dropped_events: usize,
}

impl Module {
    /// A session over this attribute table, about to boot. Attribute 2003
    /// gets [`Config::firmware_version`] unless the table has a value.
    pub fn new(config: Config, mut table: AttributeTable) -> Self {
        if table.value(crate::attrs::ATTR_FIRMWARE_VERSION).is_none() {
            table.set_value(
                crate::attrs::ATTR_FIRMWARE_VERSION,
                config.firmware_version.to_le_bytes().to_vec(),
            );
        }
        let mut module = Self {
            config,
            table,
            link: Link::default(),
            link_out: LinkOut::default(),
            queue: OutQueue::default(),
            requests: Requests::default(),
            boot: Boot::Announcing,
            events: VecDeque::new(),
            dropped_events: 0,
        };
        module.start_boot();
        module
    }

    /// Feeds bytes received from the MCU, in any chunking.
    pub fn handle_rx(&mut self, bytes: &[u8], now_ms: u64) {
        self.link
            .handle_rx(bytes, now_ms, &mut self.queue, &mut self.link_out);
        self.pump(now_ms);
    }

    /// Runs timers; call when [`Module::poll_timeout`]'s time has come.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.pump(now_ms);
    }

    /// The next time (ms) [`Module::handle_timeout`] must be called, if any.
    /// It may lie in the past: call it right away then.
    pub fn poll_timeout(&self) -> Option<u64> {
        let boot = match self.boot {
            Boot::AwaitVersion { deadline } => deadline,
            Boot::Announcing => None,
            Boot::Up { next_probe } => next_probe,
            Boot::Rebooting { at } => Some(at),
        };
        [
            self.link.poll_timeout(&self.queue),
            boot,
            self.requests.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Next chunk of bytes to write to the MCU, in order.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.link_out.tx.pop_front()
    }

    /// Next event for the host.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Events dropped because the host did not drain them (bounded at
    /// [`MAX_EVENTS`]).
    pub fn dropped_events(&self) -> usize {
        self.dropped_events
    }

    /// Bytes received outside any frame and thrown away (line noise),
    /// over the module's whole life: restarts do not reset it.
    pub fn stray_bytes(&self) -> u64 {
        self.link.stray_bytes()
    }

    /// Whether the boot sequence has finished and afLib is ready.
    pub fn is_up(&self) -> bool {
        matches!(self.boot, Boot::Up { .. })
    }

    /// The attribute table: definitions, module values set by the host and
    /// the MCU values last reported.
    pub fn table(&self) -> &AttributeTable {
        &self.table
    }

    /// Asks the MCU to change one of its attributes (1..=1023). The answer
    /// arrives as [`Event::SetResult`] with the returned handle.
    ///
    /// # Errors
    /// [`Error::NotMcuAttribute`], [`Error::ValueTooLong`], [`Error::Busy`]
    /// while a SET of the attribute is open, [`Error::QueueFull`].
    pub fn set_attribute(
        &mut self,
        attr_id: u16,
        value: Vec<u8>,
        now_ms: u64,
    ) -> Result<RequestHandle, Error> {
        if owner(attr_id) != Owner::Mcu {
            return Err(Error::NotMcuAttribute(attr_id));
        }
        self.check_len(attr_id, value.len())?;
        if self.requests.set_in_flight(attr_id) {
            return Err(Error::Busy(attr_id));
        }
        let handle = self.request(attr_id, Kind::Set, |request_id| Message::Set {
            request_id,
            attr_id,
            value,
        })?;
        self.pump(now_ms);
        Ok(handle)
    }

    /// Asks the MCU for one of its attributes. The answer arrives as
    /// [`Event::GetResult`].
    ///
    /// # Errors
    /// [`Error::NotMcuAttribute`], [`Error::QueueFull`].
    pub fn get_attribute(&mut self, attr_id: u16, now_ms: u64) -> Result<RequestHandle, Error> {
        if owner(attr_id) != Owner::Mcu {
            return Err(Error::NotMcuAttribute(attr_id));
        }
        let handle = self.request(attr_id, Kind::Get, |request_id| Message::Get {
            request_id,
            attr_id,
        })?;
        self.pump(now_ms);
        Ok(handle)
    }

    /// Stores a new value of a module-owned attribute and sends it to the
    /// MCU as an UPDATE with `update_reason`: [`crate::message::reason::SERVICE_SET`]
    /// (2) when the cloud changed it, [`crate::message::reason::LOCAL_OR_MCU_UPDATE`] (1) for a
    /// local change.
    ///
    /// # Errors
    /// [`Error::NotModuleAttribute`], [`Error::ValueTooLong`], [`Error::QueueFull`].
    pub fn update_module_attribute(
        &mut self,
        attr_id: u16,
        value: Vec<u8>,
        update_reason: u8,
        now_ms: u64,
    ) -> Result<(), Error> {
        if owner(attr_id) != Owner::Module {
            return Err(Error::NotModuleAttribute(attr_id));
        }
        self.check_len(attr_id, value.len())?;
        self.table.set_value(attr_id, value.clone());
        let msg = Message::Update {
            request_id: 0,
            attr_id,
            state: state::UPDATED,
            reason: update_reason,
            value,
        };
        self.enqueue(&msg, false, Tag::Plain)
            .map_err(|_| Error::QueueFull)?;
        self.pump(now_ms);
        Ok(())
    }

    /// Restarts the boot sequence at the host's request.
    pub fn restart(&mut self, now_ms: u64) {
        self.go_down(LinkDownReason::HostRestart);
        self.start_boot();
        self.pump(now_ms);
    }

    /// The MCU pulsed our reset input: behave like a freshly reset module.
    pub fn reset_by_mcu(&mut self, now_ms: u64) {
        self.go_down(LinkDownReason::ResetByMcu);
        self.start_boot();
        self.pump(now_ms);
    }

    /// The host pulsed the MCU's reset line (after [`Event::McuStuck`]).
    pub fn mcu_reset_done(&mut self, now_ms: u64) {
        self.go_down(LinkDownReason::McuResetByHost);
        self.start_boot();
        self.pump(now_ms);
    }

    fn check_len(&self, attr_id: u16, len: usize) -> Result<(), Error> {
        let max = self
            .table
            .def(attr_id)
            .map_or(MAX_VALUE_LEN, |d| usize::from(d.length).min(MAX_VALUE_LEN));
        if len > max {
            return Err(Error::ValueTooLong { attr_id, len, max });
        }
        Ok(())
    }

    fn request(
        &mut self,
        attr_id: u16,
        kind: Kind,
        build: impl FnOnce(u8) -> Message,
    ) -> Result<RequestHandle, Error> {
        let pending = self.requests.open(attr_id, kind).ok_or(Error::QueueFull)?;
        if self
            .enqueue(&build(pending.wire_id), false, Tag::Request(pending.handle))
            .is_err()
        {
            self.requests.cancel(pending.handle);
            return Err(Error::QueueFull);
        }
        Ok(RequestHandle(pending.handle))
    }

    /// Frames and queues a message; `urgent` puts answers first.
    pub(crate) fn enqueue(&mut self, msg: &Message, urgent: bool, tag: Tag) -> Result<(), ()> {
        let payload = encode_payload(&msg.encode()).map_err(|_| ())?;
        self.queue
            .push(OutItem {
                payload: Payload::Bytes(payload),
                urgent,
                tag,
            })
            .map_err(|_| ())
    }

    pub(crate) fn emit(&mut self, event: Event) {
        if self.events.len() >= MAX_EVENTS {
            self.dropped_events += 1;
        } else {
            self.events.push_back(event);
        }
    }

    /// Tears the session down: fails open requests, empties the queue and
    /// tells the host when the link had been up.
    pub(crate) fn go_down(&mut self, why: LinkDownReason) {
        for p in self.requests.take_all() {
            self.finish(p.handle, p.attr_id, p.kind, Outcome::Aborted);
        }
        self.queue.clear();
        self.link.reset(&mut self.queue);
        if self.is_up() {
            self.emit(Event::LinkDown(why));
        }
    }

    /// Reports a request's end to the host (probes are internal).
    pub(crate) fn finish(&mut self, handle: u32, attr_id: u16, kind: Kind, outcome: Outcome) {
        let handle = RequestHandle(handle);
        match kind {
            Kind::Set => self.emit(Event::SetResult {
                handle,
                attr_id,
                outcome,
            }),
            Kind::Get => self.emit(Event::GetResult {
                handle,
                attr_id,
                outcome,
            }),
            Kind::Probe => {}
        }
    }

    /// Runs every timer due at `now` and moves link output to the host.
    fn pump(&mut self, now: u64) {
        self.drain_link(now);
        self.run_boot_timers(now);
        let mut probe_lost = false;
        for p in self.requests.take_expired(now) {
            probe_lost |= p.kind == Kind::Probe;
            self.finish(p.handle, p.attr_id, p.kind, Outcome::TimedOut);
        }
        if probe_lost {
            // Without a reset line an MCU reboot is silent: afLib holds
            // everything until it sees a boot sequence again.
            self.go_down(LinkDownReason::McuUnresponsive);
            self.start_boot();
        }
        self.link
            .handle_timeout(now, &mut self.queue, &mut self.link_out);
        self.drain_link(now);
    }

    fn drain_link(&mut self, now: u64) {
        while let Some(event) = self.link_out.events.pop_front() {
            match event {
                LinkEvent::Received(bytes) => self.on_mcu_payload(&bytes, now),
                LinkEvent::Delivered(tag) => self.on_delivered(tag, now),
                LinkEvent::Error(e) => self.emit(Event::ProtocolError(e)),
                LinkEvent::Broken(n) if n == self.config.stuck_after_failures => {
                    self.emit(Event::McuStuck)
                }
                LinkEvent::Broken(_) => {}
            }
        }
    }

    fn on_delivered(&mut self, tag: Tag, now: u64) {
        match tag {
            Tag::Plain => {}
            Tag::Request(handle) => {
                let (set, get, probe) = (
                    self.config.set_timeout_ms,
                    self.config.get_timeout_ms,
                    self.config.probe_timeout_ms,
                );
                self.requests.delivered(handle, now, |kind| match kind {
                    Kind::Set => set,
                    Kind::Get => get,
                    Kind::Probe => probe,
                });
            }
            Tag::ProtocolVersion => self.version_delivered(now),
            Tag::Initialized => self.initialized(now),
        }
    }
}
