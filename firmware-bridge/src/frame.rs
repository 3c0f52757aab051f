//! Wire framing below the message layer: the READY byte, the 6-byte sync
//! frames and the `[len u16 LE][message]` payload envelope (spec §2, §3, §5.1).

use alloc::vec::Vec;

use crate::error::FrameError;

/// The READY ("interrupt") byte. Only the module ever sends it.
pub const READY: u8 = 0x32;
/// Type byte of a SYNC REQUEST and of our SYNC RESPONSE.
pub const SYNC: u8 = 0x30;
/// Type byte of a SYNC ACK.
pub const SYNC_ACK: u8 = 0x31;
/// Length of every sync frame on the wire, checksum included.
pub const SYNC_FRAME_LEN: usize = 6;
/// Largest attribute value we accept (UTF8S/BYTES on newer tooling, spec §8).
pub const MAX_VALUE_LEN: usize = 1536;
/// Largest payload we buffer: length prefix + UPDATE header + largest value.
/// Anything longer is counted and dropped so a hostile count cannot make us
/// allocate 64 KiB.
pub const MAX_PAYLOAD_LEN: usize = 2 + 8 + MAX_VALUE_LEN;

/// Kind of a sync frame, taken from its type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    /// `0x30`: SYNC REQUEST from the MCU, SYNC RESPONSE from the module.
    Sync,
    /// `0x31`: SYNC ACK from the MCU.
    Ack,
}

/// A decoded sync frame. Both counts are named from the MCU's point of view
/// in both directions, as afLib names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncFrame {
    /// Type of the frame.
    pub kind: SyncKind,
    /// MCU→module byte count (offset 1).
    pub mcu_count: u16,
    /// Module→MCU byte count (offset 3).
    pub asr_count: u16,
}

/// Unsigned 8-bit sum of `bytes`, modulo 256.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
}

impl SyncFrame {
    /// The SYNC RESPONSE to a request: the MCU's count echoed and our own
    /// count. Always typed `0x30`, because afLib validates the checksum as if
    /// the type were `0x30` whatever we send (spec §3.1).
    pub fn response(mcu_count: u16, asr_count: u16) -> Self {
        Self {
            kind: SyncKind::Sync,
            mcu_count,
            asr_count,
        }
    }

    /// Serialises the frame with its checksum.
    pub fn to_bytes(self) -> [u8; SYNC_FRAME_LEN] {
        let ty = match self.kind {
            SyncKind::Sync => SYNC,
            SyncKind::Ack => SYNC_ACK,
        };
        let m = self.mcu_count.to_le_bytes();
        let a = self.asr_count.to_le_bytes();
        let head = [ty, m[0], m[1], a[0], a[1]];
        [head[0], head[1], head[2], head[3], head[4], checksum(&head)]
    }

    /// Parses exactly one 6-byte frame.
    ///
    /// # Errors
    /// [`FrameError::UnknownType`] for a type other than `0x30`/`0x31`,
    /// [`FrameError::BadChecksum`] when the sum does not match.
    pub fn parse(bytes: &[u8; SYNC_FRAME_LEN]) -> Result<Self, FrameError> {
        let kind = match bytes[0] {
            SYNC => SyncKind::Sync,
            SYNC_ACK => SyncKind::Ack,
            other => return Err(FrameError::UnknownType(other)),
        };
        let expected = checksum(&bytes[..5]);
        if expected != bytes[5] {
            return Err(FrameError::BadChecksum {
                expected,
                found: bytes[5],
            });
        }
        Ok(Self {
            kind,
            mcu_count: u16::from_le_bytes([bytes[1], bytes[2]]),
            asr_count: u16::from_le_bytes([bytes[3], bytes[4]]),
        })
    }
}

/// Wraps an encoded message in its payload envelope.
///
/// # Errors
/// [`FrameError::PayloadTooLarge`] when the message does not fit the bound.
pub fn encode_payload(message: &[u8]) -> Result<Vec<u8>, FrameError> {
    if message.len() + 2 > MAX_PAYLOAD_LEN {
        return Err(FrameError::PayloadTooLarge(message.len() + 2));
    }
    // The bound above keeps the length well inside u16.
    let len = message.len() as u16;
    let mut out = Vec::with_capacity(message.len() + 2);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(message);
    Ok(out)
}
