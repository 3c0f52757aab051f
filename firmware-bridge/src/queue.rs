//! Messages waiting for a transaction to the MCU. Answers to the MCU's
//! requests go first: afLib drops an outstanding SET/GET after 10 s.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// Most items each priority class holds, so a host that keeps calling
/// commands while the MCU is away cannot grow memory without bound.
pub(crate) const MAX_QUEUED: usize = 64;

/// What the module learns when an item has been handed to the MCU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tag {
    /// Nothing to track.
    Plain,
    /// A SET or GET whose answer deadline starts now.
    Request(u32),
    /// UPDATE 1208: the boot sequence now waits for the MCU's SET 1209.
    ProtocolVersion,
    /// UPDATE 65013 = INITIALIZED: the link is up.
    Initialized,
}

/// Bytes to offer, or an empty handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Payload {
    /// A zero sync (spec §4.4): a handshake with both counts 0.
    ZeroSync,
    /// A framed payload (`[len][message]`).
    Bytes(Vec<u8>),
}

/// One queued item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutItem {
    pub payload: Payload,
    pub urgent: bool,
    pub tag: Tag,
}

/// Two FIFOs: answers (urgent) before everything else.
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    urgent: VecDeque<OutItem>,
    normal: VecDeque<OutItem>,
}

impl OutQueue {
    fn lane(&mut self, urgent: bool) -> &mut VecDeque<OutItem> {
        if urgent {
            &mut self.urgent
        } else {
            &mut self.normal
        }
    }

    /// Appends an item; hands it back when its lane is full.
    pub(crate) fn push(&mut self, item: OutItem) -> Result<(), OutItem> {
        let lane = self.lane(item.urgent);
        if lane.len() >= MAX_QUEUED {
            return Err(item);
        }
        lane.push_back(item);
        Ok(())
    }

    /// Appends an item of the boot sequence, which is bounded by the
    /// attribute table rather than by [`MAX_QUEUED`]: dropping part of it
    /// would leave afLib waiting for INITIALIZED forever.
    pub(crate) fn push_boot(&mut self, item: OutItem) {
        self.lane(item.urgent).push_back(item);
    }

    /// Takes the next item to send.
    pub(crate) fn pop(&mut self) -> Option<OutItem> {
        self.urgent.pop_front().or_else(|| self.normal.pop_front())
    }

    /// Puts back an item whose transaction did not finish, ahead of the rest.
    pub(crate) fn unpop(&mut self, item: OutItem) {
        self.lane(item.urgent).push_front(item);
    }

    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.urgent.is_empty() && self.normal.is_empty()
    }

    /// Removes everything, returning the tags so requests can be failed.
    pub(crate) fn clear(&mut self) -> Vec<Tag> {
        self.urgent
            .drain(..)
            .chain(self.normal.drain(..))
            .map(|i| i.tag)
            .collect()
    }
}
