//! SETs and GETs waiting for the MCU's UPDATE (spec §5.5): a SET answer
//! echoes our request id, a GET answer is matched by attribute and reason
//! only, because afLib answers it with a fresh id of its own.

use alloc::vec::Vec;

use crate::queue::MAX_QUEUED;

/// What a pending request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Set,
    Get,
    /// The liveness probe: a GET whose answer only proves the MCU is alive.
    Probe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pending {
    pub handle: u32,
    pub attr_id: u16,
    pub wire_id: u8,
    pub kind: Kind,
    /// `None` while still queued; the answer deadline once delivered.
    pub deadline: Option<u64>,
}

#[derive(Debug)]
pub(crate) struct Requests {
    list: Vec<Pending>,
    next_handle: u32,
    next_wire_id: u8,
}

impl Default for Requests {
    fn default() -> Self {
        // 0x40 is where the reference emulator started, which keeps our
        // frames comparable with the captured traces; any non-zero id works.
        Self {
            list: Vec::new(),
            next_handle: 1,
            next_wire_id: 0x40,
        }
    }
}

impl Requests {
    /// Registers a request; `None` when too many are open.
    pub(crate) fn open(&mut self, attr_id: u16, kind: Kind) -> Option<Pending> {
        if self.list.len() >= MAX_QUEUED {
            return None;
        }
        let handle = self.next_handle;
        self.next_handle = self.next_handle.wrapping_add(1).max(1);
        let wire_id = self.next_wire_id;
        // Id 0 marks unsolicited UPDATEs, so skip it when wrapping.
        self.next_wire_id = self.next_wire_id.wrapping_add(1).max(1);
        let pending = Pending {
            handle,
            attr_id,
            wire_id,
            kind,
            deadline: None,
        };
        self.list.push(pending);
        Some(pending)
    }

    /// Forgets a request whose message could not be queued.
    pub(crate) fn cancel(&mut self, handle: u32) {
        self.list.retain(|p| p.handle != handle);
    }

    /// Whether a SET of this attribute is open (one at a time, spec §5.4).
    pub(crate) fn set_in_flight(&self, attr_id: u16) -> bool {
        self.list
            .iter()
            .any(|p| p.kind == Kind::Set && p.attr_id == attr_id)
    }

    /// Starts the answer deadline of a delivered request.
    pub(crate) fn delivered(&mut self, handle: u32, now: u64, timeout: impl Fn(Kind) -> u64) {
        if let Some(p) = self.list.iter_mut().find(|p| p.handle == handle) {
            p.deadline = Some(now + timeout(p.kind));
        }
    }

    /// Takes the delivered SET this UPDATE answers.
    pub(crate) fn take_set(&mut self, attr_id: u16, wire_id: u8) -> Option<Pending> {
        let pos = self.list.iter().position(|p| {
            p.kind == Kind::Set
                && p.deadline.is_some()
                && p.attr_id == attr_id
                && p.wire_id == wire_id
        })?;
        Some(self.list.remove(pos))
    }

    /// Takes every delivered GET (and probe) of this attribute.
    pub(crate) fn take_gets(&mut self, attr_id: u16) -> Vec<Pending> {
        self.take_where(|p| p.kind != Kind::Set && p.deadline.is_some() && p.attr_id == attr_id)
    }

    /// Takes the requests whose deadline passed.
    pub(crate) fn take_expired(&mut self, now: u64) -> Vec<Pending> {
        self.take_where(|p| p.deadline.is_some_and(|d| now >= d))
    }

    /// Takes everything (the session restarts).
    pub(crate) fn take_all(&mut self) -> Vec<Pending> {
        core::mem::take(&mut self.list)
    }

    /// Earliest answer deadline.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.list.iter().filter_map(|p| p.deadline).min()
    }

    /// Whether a probe is open.
    pub(crate) fn probing(&self) -> bool {
        self.list.iter().any(|p| p.kind == Kind::Probe)
    }

    fn take_where(&mut self, pred: impl Fn(&Pending) -> bool) -> Vec<Pending> {
        let (taken, kept) = core::mem::take(&mut self.list)
            .into_iter()
            .partition(|p| pred(p));
        self.list = kept;
        taken
    }
}
