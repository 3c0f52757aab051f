//! What the session does with each message the MCU sends (spec §5.4–§5.6,
//! §6): answer SETs and GETs of module attributes from the table, match
//! UPDATEs to our requests, refuse UPDATEs the MCU may not send.

use alloc::vec::Vec;

use crate::attrs::{
    ATTR_AFLIB_CAPABILITIES, ATTR_AFLIB_PROTOCOL_VERSION, ATTR_ASR_CAPABILITIES, ATTR_COMMAND,
};
use crate::error::ProtocolError;
use crate::event::{Event, Outcome};
use crate::message::{reason, state, Message};
use crate::module::Module;
use crate::queue::Tag;
use crate::requests::Kind;
use crate::table::{mcu_may_update, owner, Owner, MCU_TO_DEVICE_CHANNEL};

/// First value byte of the reboot command on attribute 65012.
const COMMAND_REBOOT: u8 = 1;

impl Module {
    pub(crate) fn on_mcu_payload(&mut self, bytes: &[u8], now: u64) {
        self.mcu_alive(now);
        let msg = match Message::decode(bytes) {
            Ok(msg) => msg,
            Err(e) => return self.emit(Event::ProtocolError(ProtocolError::BadMessage(e))),
        };
        match msg {
            Message::Set {
                request_id,
                attr_id,
                value,
            } => self.mcu_set(request_id, attr_id, value, now),
            Message::Get {
                request_id,
                attr_id,
            } => self.mcu_get(request_id, attr_id),
            Message::Update {
                request_id,
                attr_id,
                state,
                reason,
                value,
            } => {
                self.mcu_update(request_id, attr_id, state, reason, value, now);
            }
            other => {
                let (command, attr_id) = (other.command(), other.attr_id());
                self.emit(Event::ProtocolError(ProtocolError::UnexpectedMessage {
                    command,
                    attr_id,
                }));
            }
        }
    }

    /// Every SET gets an UPDATE echoing its id with reason MCU_SET, except
    /// the reboot command, which afLib does not expect an answer to.
    fn mcu_set(&mut self, request_id: u8, attr_id: u16, value: Vec<u8>, now: u64) {
        if attr_id == ATTR_COMMAND && value.first() == Some(&COMMAND_REBOOT) {
            return self.reboot_requested(now);
        }
        let (answer_state, answer_value) = match attr_id {
            ATTR_AFLIB_PROTOCOL_VERSION | ATTR_AFLIB_CAPABILITIES => {
                self.table.set_value(attr_id, value.clone());
                (state::UPDATED, value)
            }
            _ if owner(attr_id) == Owner::Mcu => (
                state::FORBIDDEN,
                self.table.current(attr_id).unwrap_or_default(),
            ),
            _ => match self.table.def(attr_id) {
                None => (state::UNKNOWN_UUID, Vec::new()),
                Some(def) if !def.operations.write => (
                    state::FORBIDDEN,
                    self.table.current(attr_id).unwrap_or_default(),
                ),
                Some(def) if value.len() > usize::from(def.length) => (
                    state::LENGTH_EXCEEDED,
                    self.table.current(attr_id).unwrap_or_default(),
                ),
                Some(_) => {
                    self.table.set_value(attr_id, value.clone());
                    self.emit(Event::ModuleAttributeSet {
                        attr_id,
                        value: value.clone(),
                    });
                    (state::UPDATED, value)
                }
            },
        };
        self.answer(
            request_id,
            attr_id,
            answer_state,
            reason::MCU_SET,
            answer_value,
        );
        if attr_id == ATTR_AFLIB_PROTOCOL_VERSION {
            self.mcu_version_received();
        }
    }

    /// GETs of any attribute are answered from the table, the MCU's own
    /// included (the one case where we UPDATE an MCU attribute).
    fn mcu_get(&mut self, request_id: u8, attr_id: u16) {
        let (answer_state, value) = if attr_id == ATTR_ASR_CAPABILITIES {
            (state::UPDATED, self.config.asr_capabilities.clone())
        } else {
            match self.table.current(attr_id) {
                Some(v) => (state::UPDATED, v),
                None => (state::UNKNOWN_UUID, Vec::new()),
            }
        };
        self.answer(
            request_id,
            attr_id,
            answer_state,
            reason::GET_RESPONSE,
            value,
        );
    }

    fn mcu_update(
        &mut self,
        request_id: u8,
        attr_id: u16,
        st: u8,
        why: u8,
        value: Vec<u8>,
        now: u64,
    ) {
        let refusal = if !mcu_may_update(attr_id) {
            Some(state::FORBIDDEN)
        } else if attr_id == MCU_TO_DEVICE_CHANNEL {
            None
        } else {
            match self.table.def(attr_id) {
                None => Some(state::UNKNOWN_UUID),
                Some(def) if value.len() > usize::from(def.length) => Some(state::LENGTH_EXCEEDED),
                Some(_) => None,
            }
        };
        if let Some(st) = refusal {
            let msg = Message::UpdateRejected {
                request_id,
                attr_id,
                state: st,
                reason: reason::LOCAL_OR_MCU_UPDATE,
            };
            // A full queue drops the rejection; the value stays unaccepted either way.
            let _ = self.enqueue(&msg, true, Tag::Plain);
            return;
        }
        self.table.set_value(attr_id, value.clone());
        let outcome = if st == state::UPDATED {
            Outcome::Updated(value.clone())
        } else {
            Outcome::Refused {
                state: st,
                reason: why,
                value: value.clone(),
            }
        };
        let matched = match why {
            reason::GET_RESPONSE => self.requests.take_gets(attr_id),
            reason::LOCAL_OR_MCU_UPDATE => Vec::new(),
            _ => self
                .requests
                .take_set(attr_id, request_id)
                .into_iter()
                .collect(),
        };
        if matched.is_empty() {
            return self.emit(Event::McuUpdate {
                attr_id,
                value,
                state: st,
                reason: why,
            });
        }
        for p in matched {
            if p.kind == Kind::Probe {
                self.probe_answered(now);
            }
            self.finish(p.handle, p.attr_id, p.kind, outcome.clone());
        }
    }

    fn answer(&mut self, request_id: u8, attr_id: u16, st: u8, why: u8, value: Vec<u8>) {
        let msg = Message::Update {
            request_id,
            attr_id,
            state: st,
            reason: why,
            value,
        };
        // Answers are bounded by the MCU's pace (one per transaction), so the
        // urgent lane only fills if the MCU floods us; then afLib times out.
        let _ = self.enqueue(&msg, true, Tag::Plain);
    }
}
