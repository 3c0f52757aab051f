//! What the session reports to its host.

use alloc::vec::Vec;

use crate::error::ProtocolError;

/// Identifies a SET or GET the host started, in its result event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestHandle(pub u32);

/// How a SET or GET ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The MCU answered with state UPDATED and this value.
    Updated(Vec<u8>),
    /// The MCU answered with another state (e.g. 5 + reason 0xFD when its
    /// application refused a SET); `value` is its current value.
    Refused {
        /// UPDATE state code.
        state: u8,
        /// UPDATE reason code.
        reason: u8,
        /// Current value.
        value: Vec<u8>,
    },
    /// No answer in time.
    TimedOut,
    /// The session restarted before an answer came.
    Aborted,
}

/// Why the link went down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkDownReason {
    /// The MCU sent the reboot command (SET 65012 = 1).
    RebootRequested,
    /// The liveness probe got no answer: the MCU most likely rebooted.
    McuUnresponsive,
    /// The MCU pulsed our reset input.
    ResetByMcu,
    /// The host pulsed the MCU's reset line.
    McuResetByHost,
    /// The host asked for a restart.
    HostRestart,
}

/// An event for the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The boot sequence finished: afLib is ready for traffic.
    LinkUp,
    /// The link went down; the boot sequence runs again.
    LinkDown(LinkDownReason),
    /// The MCU reported a value of its own attribute that no request of the
    /// host was waiting for (a local change, or a boot GET's answer).
    McuUpdate {
        /// Attribute id.
        attr_id: u16,
        /// Raw value.
        value: Vec<u8>,
        /// UPDATE state code.
        state: u8,
        /// UPDATE reason code.
        reason: u8,
    },
    /// The MCU changed a writable module attribute (e.g. the LED 1024).
    ModuleAttributeSet {
        /// Attribute id.
        attr_id: u16,
        /// New raw value, already stored in the table.
        value: Vec<u8>,
    },
    /// Answer to [`crate::Module::set_attribute`].
    SetResult {
        /// The handle the call returned.
        handle: RequestHandle,
        /// Attribute id.
        attr_id: u16,
        /// Result.
        outcome: Outcome,
    },
    /// Answer to [`crate::Module::get_attribute`].
    GetResult {
        /// The handle the call returned.
        handle: RequestHandle,
        /// Attribute id.
        attr_id: u16,
        /// Result.
        outcome: Outcome,
    },
    /// Several transactions in a row broke: the MCU looks stuck. A driver
    /// with a reset line pulses it and calls
    /// [`crate::Module::mcu_reset_done`].
    McuStuck,
    /// The MCU broke the protocol; the session recovers by itself.
    ProtocolError(ProtocolError),
}
