//! The simulated afLib4 MCU of the demo ([`tether_demo::mcu`]) as
//! the bridge tests use it: on a pty reached through a symlink, with
//! waits that fail the test (the bridge's rig is in-crate,
//! `src/bridge/tests/rig.rs`).
//!
//! The symlink in a temporary directory is like a udev name for a USB
//! serial adapter: unplugging drops the MCU end and removes the symlink;
//! plugging makes a new pty under the same name.
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tether_demo::mcu;
use tokio_serial::{SerialPort, SerialStream};

pub use mcu::{LineFault, McuEvent, Target};

/// The afBlink Plumo-2D profile (attribute 1 BOOLEAN R/W, LED 1024 R/W,
/// button 1030 R), as firmware-bridge's tests keep it.
pub fn blink_profile() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../firmware-bridge/tests/data/profiles/afBlink_Plumo-2D_UART.json")
}

/// A running simulated MCU; everything else it does is
/// [`tether_demo::mcu::Mcu`]'s.
pub struct Mcu(mcu::Mcu);

impl Deref for Mcu {
    type Target = mcu::Mcu;

    fn deref(&self) -> &mcu::Mcu {
        &self.0
    }
}

impl DerefMut for Mcu {
    fn deref_mut(&mut self) -> &mut mcu::Mcu {
        &mut self.0
    }
}

/// Makes a pty whose slave is reachable at `link`; returns the MCU end.
pub fn pty_at(link: &Path) -> SerialStream {
    let (master, slave) = SerialStream::pair().expect("pty pair");
    let name = slave.name().expect("pty slave name");
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(name, link).expect("symlink to the pty");
    // The bridge opens the path itself, as it would a real device.
    drop(slave);
    master
}

impl Mcu {
    /// Starts an MCU owning `values` (its attributes 1..=1023) on a new
    /// pty reachable at `link`.
    pub fn at(link: &Path, values: &[(u16, Vec<u8>)]) -> Mcu {
        Mcu(mcu::Mcu::on(pty_at(link), link.to_path_buf(), values))
    }

    /// Unplugs the serial adapter: the MCU end of the pty closes and the
    /// device path disappears.
    pub fn unplug(&self, link: &Path) {
        self.0.unplug().expect("pty pair");
        std::fs::remove_file(link).expect("remove the device path");
    }

    /// Plugs the adapter back in: a new pty under the same path.
    pub fn plug(&self, link: &Path) {
        self.0.plug(pty_at(link));
    }

    /// The next event matching `pred` within `timeout`, skipping others;
    /// fails the test when none came.
    pub async fn wait(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&McuEvent) -> bool,
    ) -> McuEvent {
        match self.0.wait(timeout, pred).await {
            Some(e) => e,
            None => panic!("MCU saw no {what} within {timeout:?}"),
        }
    }

    /// Waits for the `n`th completed boot.
    pub async fn booted(&mut self, n: u32, timeout: Duration) {
        self.wait(&format!("boot #{n}"), timeout, |e| {
            *e == McuEvent::Booted(n)
        })
        .await;
    }
}
