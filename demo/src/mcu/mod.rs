//! A simulated afLib4 MCU on a pty, written from `shared/specs/aflib4-uart.md`:
//! it plays the UART master against tether's bridge, boots it, reports
//! attribute changes and applies the SETs the cloud sends.
//!
//! The bridge opens the pty's slave path itself, exactly as it would open
//! `/dev/ttyS1` on a device; the simulator holds the master end.
//!
//! The bridge tests drive the same simulator through its fault hooks:
//! [`Mcu::inject`] damages the line, [`Mcu::refuse`] and
//! [`Mcu::set_silent`] make the application misbehave, [`Mcu::unplug`]
//! and [`Mcu::plug`] pull the serial adapter. A failed transaction is
//! retried as afLib retries it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_serial::{SerialPort, SerialStream};

mod fault;
mod sim;

use fault::Faults;
pub use fault::{LineFault, Target};
use sim::{message, update, with_len, Sim};

/// What the simulated MCU saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McuEvent {
    /// The boot sequence completed (count of boots so far).
    Booted(u32),
    /// The module (for the cloud) SET one of the MCU's attributes.
    Set {
        /// Attribute id.
        attr_id: u16,
        /// Raw value bytes.
        value: Vec<u8>,
        /// The application said no (see [`Mcu::refuse`]).
        refused: bool,
    },
    /// The module asked for one of the MCU's attributes.
    Get {
        /// Attribute id.
        attr_id: u16,
    },
    /// The module updated one of its own attributes (e.g. the LED 1024).
    ModuleUpdate {
        /// Attribute id.
        attr_id: u16,
        /// Raw value bytes.
        value: Vec<u8>,
        /// afLib's update reason.
        reason: u8,
    },
}

/// State shared between the handle and the wire task.
#[derive(Default)]
struct Ctl {
    values: HashMap<u16, Vec<u8>>,
    queued: VecDeque<Vec<u8>>,
    /// Attributes whose SETs the application refuses.
    refuse: HashSet<u16>,
    /// A hung MCU: bytes are read and dropped.
    silent: bool,
    /// Bytes written as they are, outside any transaction (line noise).
    raw: VecDeque<Vec<u8>>,
    /// Damage done to the MCU's writes or reads (see [`Mcu::inject`]).
    faults: Faults,
    /// A new MCU end for the sim: the adapter was plugged in again.
    replug: Option<SerialStream>,
    /// Messages the sim holds for the module (set by the sim).
    backlog: usize,
}

/// Locks `m` even if a holder panicked: the data are plain values that
/// stay consistent between statements.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The pty could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot create a pty for the simulated MCU: {0}")]
pub struct PtyError(#[from] tokio_serial::Error);

/// A running simulated MCU. Dropping it stops it and closes its pty end.
pub struct Mcu {
    ctl: Arc<Mutex<Ctl>>,
    events: mpsc::Receiver<McuEvent>,
    task: tokio::task::JoinHandle<()>,
    next_id: Arc<Mutex<u8>>,
    path: PathBuf,
}

impl Drop for Mcu {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Mcu {
    /// Makes a pty and starts an MCU owning `values` (its attributes
    /// 1..=1023) on its master end; [`Mcu::path`] is the device to open.
    ///
    /// # Errors
    /// When no pty can be allocated.
    pub fn start(values: &[(u16, Vec<u8>)]) -> Result<Mcu, PtyError> {
        let (master, slave) = SerialStream::pair()?;
        let path = PathBuf::from(slave.name().unwrap_or_default());
        // The bridge opens the path itself, as it would a real device.
        drop(slave);
        Ok(Self::on(master, path, values))
    }

    /// Starts an MCU owning `values` on `port`, the master end of a pty
    /// whose slave the bridge reaches at `path`.
    pub fn on(port: SerialStream, path: PathBuf, values: &[(u16, Vec<u8>)]) -> Mcu {
        let ctl = Arc::new(Mutex::new(Ctl {
            values: values.iter().cloned().collect(),
            ..Ctl::default()
        }));
        let (tx, events) = mpsc::channel(1024);
        let next_id = Arc::new(Mutex::new(1u8));
        let sim = Sim::new(port, ctl.clone(), tx, next_id.clone());
        Mcu {
            ctl,
            events,
            task: tokio::spawn(sim.run()),
            next_id,
            path,
        }
    }

    /// The pty's slave path: the `[bridge] device`.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn id(&self) -> u8 {
        let mut n = lock(&self.next_id);
        *n = n.wrapping_add(1).max(1);
        *n
    }

    /// The application changes one of its attributes: an UPDATE, reason 1.
    pub fn update(&self, attr_id: u16, value: &[u8]) {
        let msg = update(self.id(), attr_id, 0, 1, value);
        let mut ctl = lock(&self.ctl);
        ctl.values.insert(attr_id, value.to_vec());
        ctl.queued.push_back(msg);
    }

    /// The application SETs a module attribute (e.g. the LED 1024).
    pub fn set_module(&self, attr_id: u16, value: &[u8]) {
        let msg = message(0x0B, self.id(), attr_id, &with_len(value));
        lock(&self.ctl).queued.push_back(msg);
    }

    /// Sends the reboot command: SET 65012 = 01 00 00 00.
    pub fn request_reboot(&self) {
        self.set_module(65012, &[1, 0, 0, 0]);
    }

    /// Messages the MCU has not yet got through to the module.
    pub fn pending(&self) -> usize {
        let ctl = lock(&self.ctl);
        ctl.queued.len() + ctl.backlog
    }

    /// Makes the application refuse (state 5, reason 0xFD) SETs of `attr_id`.
    pub fn refuse(&self, attr_id: u16) {
        lock(&self.ctl).refuse.insert(attr_id);
    }

    /// Stops answering anything (a hung MCU); bytes are read and dropped.
    pub fn set_silent(&self, silent: bool) {
        lock(&self.ctl).silent = silent;
    }

    /// Writes `bytes` outside any transaction, like noise on the line.
    pub fn send_raw(&self, bytes: &[u8]) {
        lock(&self.ctl).raw.push_back(bytes.to_vec());
    }

    /// Damages every `every`th write (or read, for [`Target::Received`])
    /// of the MCU that `target` selects, `times` times in all, as a noisy
    /// or lossy line would. The MCU's own retries (afLib resends a message
    /// whose transaction broke) stay in force.
    pub fn inject(&self, fault: LineFault, target: Target, every: u32, times: u32) {
        lock(&self.ctl).faults = Faults::new(fault, target, every, times);
    }

    /// Writes damaged so far by [`Mcu::inject`], and whether more are due.
    pub fn faults_done(&self) -> (u32, bool) {
        let ctl = lock(&self.ctl);
        (ctl.faults.done, ctl.faults.left > 0)
    }

    /// Unplugs the serial adapter: the MCU's end of the pty closes, so the
    /// bridge's end hangs up. The MCU keeps running; its pending messages
    /// wait, as afLib's queue does.
    ///
    /// # Errors
    /// When no pty can be allocated for the unplugged MCU to hold.
    pub fn unplug(&self) -> Result<(), PtyError> {
        let (spare, _) = SerialStream::pair()?;
        lock(&self.ctl).replug = Some(spare);
        Ok(())
    }

    /// Plugs the adapter back in: the MCU continues on `port`, the master
    /// end of a new pty.
    pub fn plug(&self, port: SerialStream) {
        lock(&self.ctl).replug = Some(port);
    }

    /// The application's current value of an attribute.
    pub fn value(&self, attr_id: u16) -> Option<Vec<u8>> {
        lock(&self.ctl).values.get(&attr_id).cloned()
    }

    /// The next event matching `pred` within `timeout`, skipping others;
    /// `None` when none came.
    pub async fn wait(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&McuEvent) -> bool,
    ) -> Option<McuEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) if pred(&e) => return Some(e),
                Ok(Some(_)) => {}
                _ => return None,
            }
        }
    }
}
