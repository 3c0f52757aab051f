//! A simulated afLib4 MCU on a pty, written from `shared/specs/aflib4-uart.md`:
//! it plays the UART master against tether's bridge, boots it, reports
//! attribute changes and applies the SETs the cloud sends.
//!
//! The bridge opens the pty's slave path itself, exactly as it would open
//! `/dev/ttyS1` on a device; the simulator holds the master end.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_serial::{SerialPort, SerialStream};

mod sim;

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

    fn on(port: SerialStream, path: PathBuf, values: &[(u16, Vec<u8>)]) -> Mcu {
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
