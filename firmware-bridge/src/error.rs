//! Typed errors of every layer. All are `core::error::Error`, so they work in
//! `no_std` and convert into `std`/`anyhow` errors in the daemon.

use thiserror::Error;

/// A sync frame or payload envelope that cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FrameError {
    /// First byte is neither `0x30` nor `0x31`.
    #[error("unknown sync frame type 0x{0:02x}")]
    UnknownType(u8),
    /// The checksum byte does not match the sum of the first five bytes.
    #[error("sync frame checksum 0x{found:02x}, expected 0x{expected:02x}")]
    BadChecksum {
        /// Checksum computed over the received bytes.
        expected: u8,
        /// Checksum byte received.
        found: u8,
    },
    /// A payload larger than [`crate::frame::MAX_PAYLOAD_LEN`].
    #[error("payload of {0} bytes exceeds the limit")]
    PayloadTooLarge(usize),
}

/// A message body that cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The message ends before its header or declared value does.
    #[error("message truncated: need {needed} bytes, have {got}")]
    Truncated {
        /// Bytes the header or value length asks for.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// A command byte we do not know (afLib also drops these).
    #[error("unknown message command 0x{0:02x}")]
    UnknownCommand(u8),
    /// A value longer than [`crate::frame::MAX_VALUE_LEN`].
    #[error("value of {0} bytes exceeds the limit")]
    ValueTooLong(usize),
}

/// Something the MCU sent that broke the protocol. Reported as an event; the
/// session recovers on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ProtocolError {
    /// A sync frame with a bad type or checksum.
    #[error("bad sync frame: {0}")]
    BadSyncFrame(#[source] FrameError),
    /// A SYNC ACK arrived when no handshake was open.
    #[error("unexpected SYNC ACK")]
    UnexpectedAck,
    /// The SYNC ACK's counts differ from what our response agreed.
    #[error("SYNC ACK counts ({mcu_count}, {asr_count}) differ from the handshake")]
    AckMismatch {
        /// MCU count in the ACK.
        mcu_count: u16,
        /// Module count in the ACK.
        asr_count: u16,
    },
    /// The MCU announced a payload larger than we buffer; it was dropped.
    #[error("MCU payload of {0} bytes dropped (too large)")]
    PayloadTooLarge(u16),
    /// The MCU's payload did not decode.
    #[error("bad message from the MCU: {0}")]
    BadMessage(#[source] DecodeError),
    /// A well-formed message the MCU must not send (e.g. SET_DEFAULT).
    #[error("unexpected message 0x{command:02x} for attribute {attr_id}")]
    UnexpectedMessage {
        /// Command byte.
        command: u8,
        /// Attribute id of the message.
        attr_id: u16,
    },
    /// A sync frame stopped after this many of its 6 bytes (bytes lost
    /// on the line); it was dropped.
    #[error("sync frame truncated after {0} of 6 bytes")]
    TruncatedSyncFrame(u8),
    /// The MCU stopped in the middle of a handshake.
    #[error("transaction timed out")]
    TransactionTimeout,
    /// The MCU did not start a transaction after our READY and its retries.
    #[error("no SYNC REQUEST after READY")]
    NoSyncRequest,
}

/// A value string that cannot be converted to wire bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ConvertError {
    /// Not a number of the expected form.
    #[error("not a valid number")]
    InvalidNumber,
    /// A number outside the data type's range.
    #[error("number out of range for the data type")]
    OutOfRange,
    /// Neither `true`/`false` nor `1`/`0`.
    #[error("not a boolean")]
    InvalidBool,
    /// Not an even-length hex string.
    #[error("not a hex string")]
    InvalidHex,
    /// More bytes than the attribute's declared length allows.
    #[error("value of {len} bytes exceeds the declared length {max}")]
    TooLong {
        /// Length of the converted value.
        len: usize,
        /// Declared length.
        max: usize,
    },
}

/// Errors of the commands the host calls on [`crate::Module`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Error {
    /// The outgoing queue is full; try again after the MCU drained it.
    #[error("outgoing queue full")]
    QueueFull,
    /// A SET of this attribute is still waiting for the MCU's answer; the
    /// protocol allows one in flight per attribute.
    #[error("a SET of attribute {0} is already in flight")]
    Busy(u16),
    /// SET/GET go only to MCU attributes (1..=1023).
    #[error("attribute {0} is not an MCU attribute")]
    NotMcuAttribute(u16),
    /// Module UPDATEs go only to attributes the module owns.
    #[error("attribute {0} is not owned by the module")]
    NotModuleAttribute(u16),
    /// The value is longer than the attribute's declared length.
    #[error("value of {len} bytes for attribute {attr_id} exceeds {max}")]
    ValueTooLong {
        /// Attribute id.
        attr_id: u16,
        /// Value length.
        len: usize,
        /// Allowed length.
        max: usize,
    },
}
