//! The boot sequence of spec §6, in the order the reference emulator used
//! and afLib4 accepted: zero sync → UPDATE 1208 → [MCU SET 1209 → UPDATE
//! 1209] → 65013 = REBOOTED → announcements (2003 among them) → SET_DEFAULT
//! and GET of each MCU attribute → 65013 = LINKED → 65013 = INITIALIZED.

use alloc::vec::Vec;

use crate::attrs::{ATTR_ASR_PROTOCOL_VERSION, ATTR_ASR_STATE, ATTR_FIRMWARE_VERSION};
use crate::event::Event;
use crate::frame::encode_payload;
use crate::message::{reason, state, Message};
use crate::module::{Boot, Module};
use crate::queue::{OutItem, Payload, Tag};
use crate::requests::Kind;
use crate::table::{owner, Owner};

/// Protocol version we speak.
const PROTOCOL_VERSION: u16 = 2;
/// Values of the ASR state attribute 65013.
const STATE_REBOOTED: u8 = 0;
const STATE_LINKED: u8 = 1;
const STATE_INITIALIZED: u8 = 4;

impl Module {
    /// Queues the zero sync and UPDATE 1208 (the queue must be empty).
    pub(crate) fn start_boot(&mut self) {
        self.boot = Boot::AwaitVersion { deadline: None };
        let zero = OutItem {
            payload: Payload::ZeroSync,
            urgent: false,
            tag: Tag::Plain,
        };
        self.queue.push_boot(zero);
        let version = PROTOCOL_VERSION.to_le_bytes().to_vec();
        self.announce(ATTR_ASR_PROTOCOL_VERSION, version, Tag::ProtocolVersion);
    }

    /// UPDATE 1208 reached the MCU: give it time to send SET 1209.
    pub(crate) fn version_delivered(&mut self, now: u64) {
        if let Boot::AwaitVersion { deadline: None } = self.boot {
            self.boot = Boot::AwaitVersion {
                deadline: Some(now + self.config.version_wait_ms),
            };
        }
    }

    /// The MCU's SET 1209 (already answered) arrived.
    pub(crate) fn mcu_version_received(&mut self) {
        if let Boot::AwaitVersion { .. } = self.boot {
            self.queue_announcements();
        }
    }

    /// INITIALIZED reached the MCU: afLib is ready.
    pub(crate) fn initialized(&mut self, now: u64) {
        if self.boot == Boot::Announcing {
            self.boot = Boot::Up {
                next_probe: self.config.probe_interval_ms.map(|i| now + i),
            };
            self.emit(Event::LinkUp);
        }
    }

    /// The MCU asked us to reboot: go quiet, then boot again.
    pub(crate) fn reboot_requested(&mut self, now: u64) {
        self.go_down(crate::event::LinkDownReason::RebootRequested);
        self.boot = Boot::Rebooting {
            at: now + self.config.reboot_delay_ms,
        };
    }

    /// Any message from the MCU proves it alive: push the probe back.
    pub(crate) fn mcu_alive(&mut self, now: u64) {
        if let Boot::Up {
            next_probe: Some(_),
        } = self.boot
        {
            self.boot = Boot::Up {
                next_probe: self.config.probe_interval_ms.map(|i| now + i),
            };
        }
    }

    pub(crate) fn run_boot_timers(&mut self, now: u64) {
        match self.boot {
            Boot::AwaitVersion { deadline: Some(d) } if now >= d => self.queue_announcements(),
            Boot::Rebooting { at } if now >= at => self.start_boot(),
            Boot::Up {
                next_probe: Some(at),
            } if now >= at => {
                // The answer (or its absence) decides what comes next.
                self.boot = Boot::Up { next_probe: None };
                self.send_probe();
            }
            _ => {}
        }
    }

    /// Re-arms the probe timer once the probe's answer came.
    pub(crate) fn probe_answered(&mut self, now: u64) {
        if let Boot::Up { .. } = self.boot {
            self.boot = Boot::Up {
                next_probe: self.config.probe_interval_ms.map(|i| now + i),
            };
        }
    }

    fn send_probe(&mut self) {
        let first_mcu = || {
            self.table
                .defs()
                .map(|d| d.id)
                .find(|id| owner(*id) == Owner::Mcu)
        };
        let Some(attr_id) = self.config.probe_attribute.or_else(first_mcu) else {
            return;
        };
        if self.requests.probing() {
            return;
        }
        if let Some(p) = self.requests.open(attr_id, Kind::Probe) {
            let msg = Message::Get {
                request_id: p.wire_id,
                attr_id,
            };
            if self.enqueue(&msg, false, Tag::Request(p.handle)).is_err() {
                self.requests.cancel(p.handle);
            }
        }
    }

    fn queue_announcements(&mut self) {
        self.boot = Boot::Announcing;
        self.announce(ATTR_ASR_STATE, alloc::vec![STATE_REBOOTED], Tag::Plain);
        let mut ids = self.config.boot_announcements.clone();
        if !ids.contains(&ATTR_FIRMWARE_VERSION) {
            ids.insert(0, ATTR_FIRMWARE_VERSION);
        }
        for id in ids {
            let value = self
                .table
                .value(id)
                .map(<[u8]>::to_vec)
                .or_else(|| self.table.def(id).and_then(|d| d.default.clone()));
            if let Some(value) = value {
                self.announce(id, value, Tag::Plain);
            }
        }
        let mcu_attrs: Vec<(u16, Option<Vec<u8>>)> = self
            .table
            .defs()
            .filter(|d| owner(d.id) == Owner::Mcu)
            .map(|d| (d.id, d.default.clone()))
            .collect();
        for (attr_id, default) in mcu_attrs {
            if let Some(value) = default {
                self.boot_message(
                    &Message::SetDefault {
                        request_id: 0,
                        attr_id,
                        value,
                    },
                    Tag::Plain,
                );
            }
            // afLib answers it once ready; the answer is reported as an McuUpdate.
            self.boot_message(
                &Message::Get {
                    request_id: 0,
                    attr_id,
                },
                Tag::Plain,
            );
        }
        self.announce(ATTR_ASR_STATE, alloc::vec![STATE_LINKED], Tag::Plain);
        self.announce(
            ATTR_ASR_STATE,
            alloc::vec![STATE_INITIALIZED],
            Tag::Initialized,
        );
    }

    /// Records a module value and queues its unsolicited UPDATE (id 0).
    fn announce(&mut self, attr_id: u16, value: Vec<u8>, tag: Tag) {
        self.table.set_value(attr_id, value.clone());
        let msg = Message::Update {
            request_id: 0,
            attr_id,
            state: state::UPDATED,
            reason: reason::LOCAL_OR_MCU_UPDATE,
            value,
        };
        self.boot_message(&msg, tag);
    }

    fn boot_message(&mut self, msg: &Message, tag: Tag) {
        // Values in the table are bounded by MAX_VALUE_LEN, so framing cannot fail.
        if let Ok(payload) = encode_payload(&msg.encode()) {
            self.queue.push_boot(OutItem {
                payload: Payload::Bytes(payload),
                urgent: false,
                tag,
            });
        }
    }
}
