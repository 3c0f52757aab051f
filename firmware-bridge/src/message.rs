//! The attribute messages carried inside a payload (spec §5.2–§5.3):
//! `cmd u8 | request_id u8 | attr_id u16 LE | body`.

use alloc::vec::Vec;

use crate::error::DecodeError;
use crate::frame::MAX_VALUE_LEN;

/// Command byte of a SET.
pub const CMD_SET: u8 = 0x0B;
/// Command byte of a GET.
pub const CMD_GET: u8 = 0x0C;
/// Command byte of an UPDATE.
pub const CMD_UPDATE: u8 = 0x0D;
/// Command byte of an UPDATE_REJECTED (protocol v2).
pub const CMD_UPDATE_REJECTED: u8 = 0x29;
/// Command byte of a SET_DEFAULT.
pub const CMD_SET_DEFAULT: u8 = 0x2A;

/// UPDATE state codes (spec §5.3).
pub mod state {
    /// The value is current.
    pub const UPDATED: u8 = 0;
    /// Unknown attribute.
    pub const UNKNOWN_UUID: u8 = 2;
    /// Value too long for the attribute.
    pub const LENGTH_EXCEEDED: u8 = 3;
    /// The SET failed or was refused (with reason `INTERNAL_SET_REJECTED`).
    pub const FAILED: u8 = 5;
    /// The sender may not change this attribute.
    pub const FORBIDDEN: u8 = 6;
}

/// UPDATE reason codes (spec §5.3).
pub mod reason {
    /// Unsolicited change by the owner.
    pub const LOCAL_OR_MCU_UPDATE: u8 = 1;
    /// Answer to a SET from the service (our SET to the MCU).
    pub const SERVICE_SET: u8 = 2;
    /// Answer to the MCU's SET.
    pub const MCU_SET: u8 = 3;
    /// Answer to a GET.
    pub const GET_RESPONSE: u8 = 0x0B;
    /// The MCU application refused our SET.
    pub const INTERNAL_SET_REJECTED: u8 = 0xFD;
}

/// One decoded attribute message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Ask the owner to change an attribute.
    Set {
        /// Request id, echoed by the owner's UPDATE.
        request_id: u8,
        /// Attribute id.
        attr_id: u16,
        /// Raw value bytes.
        value: Vec<u8>,
    },
    /// Ask for an attribute's value.
    Get {
        /// Request id.
        request_id: u8,
        /// Attribute id.
        attr_id: u16,
    },
    /// The owner reports a value.
    Update {
        /// Request id (echo of a SET/GET, or 0 when unsolicited).
        request_id: u8,
        /// Attribute id.
        attr_id: u16,
        /// State code, see [`state`].
        state: u8,
        /// Reason code, see [`reason`].
        reason: u8,
        /// Raw value bytes.
        value: Vec<u8>,
    },
    /// The module refuses an UPDATE from the MCU. Carries no value.
    UpdateRejected {
        /// Request id.
        request_id: u8,
        /// Attribute id.
        attr_id: u16,
        /// State code saying why.
        state: u8,
        /// Reason code.
        reason: u8,
    },
    /// Tell the MCU an attribute's profile default. Gets no reply.
    SetDefault {
        /// Request id.
        request_id: u8,
        /// Attribute id.
        attr_id: u16,
        /// Raw default value.
        value: Vec<u8>,
    },
}

impl Message {
    /// Attribute id of any message.
    pub fn attr_id(&self) -> u16 {
        match self {
            Message::Set { attr_id, .. }
            | Message::Get { attr_id, .. }
            | Message::Update { attr_id, .. }
            | Message::UpdateRejected { attr_id, .. }
            | Message::SetDefault { attr_id, .. } => *attr_id,
        }
    }

    /// Command byte of the message.
    pub fn command(&self) -> u8 {
        match self {
            Message::Set { .. } => CMD_SET,
            Message::Get { .. } => CMD_GET,
            Message::Update { .. } => CMD_UPDATE,
            Message::UpdateRejected { .. } => CMD_UPDATE_REJECTED,
            Message::SetDefault { .. } => CMD_SET_DEFAULT,
        }
    }

    /// Encodes the message without the payload length prefix. Values are
    /// bounded by the constructors' callers to [`MAX_VALUE_LEN`], so the
    /// `u16` length cannot overflow.
    pub fn encode(&self) -> Vec<u8> {
        let (request_id, attr_id) = match self {
            Message::Set {
                request_id,
                attr_id,
                ..
            }
            | Message::Get {
                request_id,
                attr_id,
            }
            | Message::Update {
                request_id,
                attr_id,
                ..
            }
            | Message::UpdateRejected {
                request_id,
                attr_id,
                ..
            }
            | Message::SetDefault {
                request_id,
                attr_id,
                ..
            } => (*request_id, *attr_id),
        };
        let mut out = Vec::with_capacity(8);
        out.push(self.command());
        out.push(request_id);
        out.extend_from_slice(&attr_id.to_le_bytes());
        match self {
            Message::Set { value, .. } | Message::SetDefault { value, .. } => {
                push_value(&mut out, value)
            }
            Message::Get { .. } => {}
            Message::Update {
                state,
                reason,
                value,
                ..
            } => {
                out.push(*state);
                out.push(*reason);
                push_value(&mut out, value);
            }
            Message::UpdateRejected { state, reason, .. } => {
                out.push(*state);
                out.push(*reason);
            }
        }
        out
    }

    /// Decodes a message (the payload without its length prefix). Bytes after
    /// the declared value are ignored, as afLib ignores them.
    ///
    /// # Errors
    /// [`DecodeError`] for short input, an unknown command or an oversized value.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let header = bytes.get(..4).ok_or(DecodeError::Truncated {
            needed: 4,
            got: bytes.len(),
        })?;
        let (command, request_id) = (header[0], header[1]);
        let attr_id = u16::from_le_bytes([header[2], header[3]]);
        let body = &bytes[4..];
        match command {
            CMD_SET => Ok(Message::Set {
                request_id,
                attr_id,
                value: read_value(body, 4)?,
            }),
            CMD_SET_DEFAULT => Ok(Message::SetDefault {
                request_id,
                attr_id,
                value: read_value(body, 4)?,
            }),
            CMD_GET => Ok(Message::Get {
                request_id,
                attr_id,
            }),
            CMD_UPDATE => {
                let sr = body.get(..2).ok_or(DecodeError::Truncated {
                    needed: 6,
                    got: bytes.len(),
                })?;
                let value = read_value(&body[2..], 6)?;
                Ok(Message::Update {
                    request_id,
                    attr_id,
                    state: sr[0],
                    reason: sr[1],
                    value,
                })
            }
            CMD_UPDATE_REJECTED => {
                let sr = body.get(..2).ok_or(DecodeError::Truncated {
                    needed: 6,
                    got: bytes.len(),
                })?;
                Ok(Message::UpdateRejected {
                    request_id,
                    attr_id,
                    state: sr[0],
                    reason: sr[1],
                })
            }
            other => Err(DecodeError::UnknownCommand(other)),
        }
    }
}

fn push_value(out: &mut Vec<u8>, value: &[u8]) {
    let len = value.len().min(MAX_VALUE_LEN);
    out.extend_from_slice(&(len as u16).to_le_bytes());
    out.extend_from_slice(&value[..len]);
}

/// Reads `value_len u16 | value`; `offset` is where `body` starts in the
/// message, only used to report absolute lengths.
fn read_value(body: &[u8], offset: usize) -> Result<Vec<u8>, DecodeError> {
    let len_bytes = body.get(..2).ok_or(DecodeError::Truncated {
        needed: offset + 2,
        got: offset + body.len(),
    })?;
    let len = usize::from(u16::from_le_bytes([len_bytes[0], len_bytes[1]]));
    if len > MAX_VALUE_LEN {
        return Err(DecodeError::ValueTooLong(len));
    }
    let value = body.get(2..2 + len).ok_or(DecodeError::Truncated {
        needed: offset + 2 + len,
        got: offset + body.len(),
    })?;
    Ok(value.to_vec())
}
