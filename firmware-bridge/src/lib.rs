//! The module (ASR) side of Afero's afLib4 UART protocol.
//!
//! The MCU runs afLib4 and is the UART master; this crate plays the Afero
//! Secure Radio. The protocol core is sans-IO: [`Module`] takes received
//! bytes and the current time in milliseconds and hands back bytes to
//! write, [`Event`]s and its next deadline. The drivers in [`driver`] only
//! move bytes and time between an `embedded-io` port and the core.
//!
//! | module | owns |
//! |---|---|
//! | [`frame`] | READY byte, 6-byte sync frames, checksums, payload envelope |
//! | [`message`] | SET / GET / UPDATE / UPDATE_REJECTED / SET_DEFAULT codec |
//! | `link` | the handshake state machine (READY, sync, ACK, data, timeouts) |
//! | `attrs` | the ids of the module attributes afLib4 defines (1206-1209, 2003, 65012, 65013) |
//! | `boot` | the boot sequence and the liveness probe |
//! | `mcu` | answers to the MCU's SET/GET, matching of its UPDATEs |
//! | [`table`] | attribute definitions, values and ownership |
//! | [`value`] | [`DataType`] and the bytes ↔ string conversion |
//! | `profile` | `device-description.json` loading (feature `std`) |
//! | [`driver`] | blocking and async drivers, reset lines |
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod attrs;
mod boot;
mod config;
pub mod driver;
mod error;
mod event;
pub mod frame;
mod link;
mod mcu;
pub mod message;
mod module;
#[cfg(feature = "std")]
mod profile;
mod queue;
mod requests;
pub mod table;
pub mod value;

pub use attrs::{
    ATTR_AFLIB_CAPABILITIES, ATTR_AFLIB_PROTOCOL_VERSION, ATTR_ASR_CAPABILITIES,
    ATTR_ASR_PROTOCOL_VERSION, ATTR_ASR_STATE, ATTR_COMMAND, ATTR_FIRMWARE_VERSION,
};
pub use config::Config;
pub use error::{ConvertError, DecodeError, Error, FrameError, ProtocolError};
pub use event::{Event, LinkDownReason, Outcome, RequestHandle};
pub use link::{GAP_MS, QUIET_AFTER_BROKEN_MS, READY_RETRIES, READY_RETRY_MS, STEP_TIMEOUT_MS};
pub use module::{Module, MAX_EVENTS};
#[cfg(feature = "std")]
pub use profile::{Profile, ProfileError};
pub use table::{AttributeDef, AttributeTable, Operations};
pub use value::DataType;
