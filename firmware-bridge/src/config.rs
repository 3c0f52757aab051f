//! Settings of a [`crate::Module`] session, with the defaults the spec's
//! reference emulator used against the real afLib4.

use alloc::vec::Vec;

/// Session settings. Times are milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Firmware version reported as attribute 2003 when the table has none.
    /// afLib waits for INITIALIZED only when it is above 0x5062 (spec §6).
    pub firmware_version: u64,
    /// Module attributes announced with an UPDATE during boot, in this
    /// order, when the table has a value or default for them. 2003 is always
    /// announced, and first when missing here.
    pub boot_announcements: Vec<u16>,
    /// Answer to the MCU's GET 1206 (ASR capabilities; `0x80` = MCU OTA).
    pub asr_capabilities: Vec<u8>,
    /// MCU attribute to GET as a liveness probe; `None` picks the lowest
    /// MCU attribute in the table.
    pub probe_attribute: Option<u16>,
    /// Silence from the MCU after which we probe; `None` disables probing.
    pub probe_interval_ms: Option<u64>,
    /// Wait for the probe's answer before assuming the MCU rebooted.
    pub probe_timeout_ms: u64,
    /// Wait for the MCU's answer to our SET. afLib gives its application
    /// 60 s before answering "failed" itself (spec §4.6).
    pub set_timeout_ms: u64,
    /// Wait for the MCU's answer to our GET.
    pub get_timeout_ms: u64,
    /// Wait for the MCU's SET 1209 after our UPDATE 1208 before going on.
    pub version_wait_ms: u64,
    /// Silence after the MCU's reboot command before booting again.
    pub reboot_delay_ms: u64,
    /// Broken transactions in a row after which the MCU counts as stuck.
    pub stuck_after_failures: u8,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            firmware_version: 30_000,
            boot_announcements: alloc::vec![
                2001, 2003, 2004, 65019, 1202, 65004, 65005, 65015, 1031
            ],
            asr_capabilities: alloc::vec![0],
            probe_attribute: None,
            probe_interval_ms: Some(30_000),
            probe_timeout_ms: 10_000,
            set_timeout_ms: 65_000,
            get_timeout_ms: 10_000,
            version_wait_ms: 1_000,
            reboot_delay_ms: 1_000,
            stuck_after_failures: 3,
        }
    }
}
