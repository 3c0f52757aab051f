//! The module attributes afLib4 defines (spec §6), by id: the boot
//! sequence announces them, the session answers the MCU's SETs and GETs of
//! them, and the module requires the firmware version in its table.

/// ASR capabilities, answered to the MCU's GET.
pub const ATTR_ASR_CAPABILITIES: u16 = 1206;
/// afLib capabilities, SET by the MCU when it becomes ready.
pub const ATTR_AFLIB_CAPABILITIES: u16 = 1207;
/// Our (the ASR's) MCU protocol version.
pub const ATTR_ASR_PROTOCOL_VERSION: u16 = 1208;
/// afLib's MCU protocol version, SET by the MCU.
pub const ATTR_AFLIB_PROTOCOL_VERSION: u16 = 1209;
/// Application (ASR firmware) version, required for afLib readiness.
pub const ATTR_FIRMWARE_VERSION: u16 = 2003;
/// System command; first byte 1 = reboot the ASR.
pub const ATTR_COMMAND: u16 = 65012;
/// ASR state.
pub const ATTR_ASR_STATE: u16 = 65013;
