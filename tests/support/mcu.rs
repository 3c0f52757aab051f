//! An afLib4 MCU written from `shared/specs/aflib4-uart.md`, playing the
//! UART master against tether's bridge over a pty, plus the rig that starts
//! a bridge on a pty path.
//!
//! The pty's slave path is reached through a symlink in a temporary
//! directory, like a udev name for a USB serial adapter: cutting the link
//! drops the MCU end and removes the symlink; restoring it makes a new pty
//! under the same name.
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_serial::{SerialPort, SerialStream};

mod rig;
mod sim;

pub use rig::{blink_profile, bridge_config, fast_tuning, ChannelUpstream, Rig, WAIT};
use sim::{message, update, with_len, Faults, Sim};
pub use sim::{LineFault, Target};

/// What the simulated MCU saw, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McuEvent {
    /// The boot sequence completed (count of boots so far).
    Booted(u32),
    /// The ASR SET one of our attributes; `refused` when we said no.
    Set {
        attr_id: u16,
        value: Vec<u8>,
        refused: bool,
    },
    /// The ASR asked for one of our attributes.
    Get { attr_id: u16 },
    /// The ASR updated a module attribute (e.g. 1024 after a cloud set).
    ModuleUpdate {
        attr_id: u16,
        value: Vec<u8>,
        reason: u8,
    },
}

#[derive(Default)]
struct Ctl {
    refuse: HashSet<u16>,
    silent: bool,
    values: HashMap<u16, Vec<u8>>,
    queued: VecDeque<Vec<u8>>,
    /// Bytes written as they are, outside any transaction (line noise).
    raw: VecDeque<Vec<u8>>,
    /// Damage done to the MCU's writes (see [`Mcu::inject`]).
    faults: Faults,
    /// A new MCU end for the sim: the adapter was plugged in again.
    replug: Option<SerialStream>,
    /// Messages the sim holds for the module (set by the sim).
    backlog: usize,
}

/// A running simulated MCU. Dropping it closes the MCU end of the pty.
pub struct Mcu {
    ctl: Arc<Mutex<Ctl>>,
    events: mpsc::Receiver<McuEvent>,
    task: tokio::task::JoinHandle<()>,
    next_id: Arc<Mutex<u8>>,
}

impl Drop for Mcu {
    fn drop(&mut self) {
        self.task.abort();
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
    /// Starts an MCU owning `values` (its attributes 1..=1023) on `port`.
    pub fn start(port: SerialStream, values: &[(u16, Vec<u8>)]) -> Mcu {
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
        }
    }

    fn id(&self) -> u8 {
        let mut n = self.next_id.lock().unwrap();
        *n = n.wrapping_add(1).max(1);
        *n
    }

    fn queue(&self, msg: Vec<u8>) {
        self.ctl.lock().unwrap().queued.push_back(msg);
    }

    /// The application changes one of its attributes: an UPDATE, reason 1.
    pub fn update(&self, attr_id: u16, value: &[u8]) {
        self.ctl
            .lock()
            .unwrap()
            .values
            .insert(attr_id, value.to_vec());
        self.queue(update(self.id(), attr_id, 0, 1, value));
    }

    /// The application SETs a module attribute (e.g. the LED 1024).
    pub fn set_module(&self, attr_id: u16, value: &[u8]) {
        self.queue(message(0x0B, self.id(), attr_id, &with_len(value)));
    }

    /// Writes `bytes` outside any transaction, like noise on the line.
    pub fn send_raw(&self, bytes: &[u8]) {
        self.ctl.lock().unwrap().raw.push_back(bytes.to_vec());
    }

    /// Damages every `every`th write (or read, for [`Target::Received`])
    /// of the MCU that `target` selects, `times` times in all, as
    /// a noisy or lossy line would. The MCU's own retries (afLib resends a
    /// message whose transaction broke) stay in force.
    pub fn inject(&self, fault: LineFault, target: Target, every: u32, times: u32) {
        self.ctl.lock().unwrap().faults = Faults::new(fault, target, every, times);
    }

    /// Writes damaged so far by [`Mcu::inject`], and whether more are due.
    pub fn faults_done(&self) -> (u32, bool) {
        let ctl = self.ctl.lock().unwrap();
        (ctl.faults.done, ctl.faults.left > 0)
    }

    /// Unplugs the serial adapter: the MCU end of the pty closes and the
    /// device path disappears. The MCU keeps running; its pending
    /// messages wait, as afLib's queue does.
    pub fn unplug(&self, link: &Path) {
        let (spare, _) = SerialStream::pair().expect("pty pair");
        std::fs::remove_file(link).expect("remove the device path");
        self.ctl.lock().unwrap().replug = Some(spare);
    }

    /// Plugs the adapter back in: a new pty under the same path.
    pub fn plug(&self, link: &Path) {
        self.ctl.lock().unwrap().replug = Some(pty_at(link));
    }

    /// Messages the MCU has not yet got through to the module.
    pub fn pending(&self) -> usize {
        let ctl = self.ctl.lock().unwrap();
        ctl.queued.len() + ctl.backlog
    }

    /// Sends the reboot command: SET 65012 = 01 00 00 00.
    pub fn request_reboot(&self) {
        self.set_module(65012, &[1, 0, 0, 0]);
    }

    /// Makes the application refuse (state 5, reason 0xFD) SETs of `attr_id`.
    pub fn refuse(&self, attr_id: u16) {
        self.ctl.lock().unwrap().refuse.insert(attr_id);
    }

    /// Stops answering anything (a hung MCU); bytes are read and dropped.
    pub fn set_silent(&self, silent: bool) {
        self.ctl.lock().unwrap().silent = silent;
    }

    /// The application's current value of an attribute.
    pub fn value(&self, attr_id: u16) -> Option<Vec<u8>> {
        self.ctl.lock().unwrap().values.get(&attr_id).cloned()
    }

    /// The next event matching `pred` within `timeout`, skipping others.
    pub async fn wait(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&McuEvent) -> bool,
    ) -> McuEvent {
        let deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) if pred(&e) => return e,
                Ok(Some(_)) => {}
                _ => panic!("MCU saw no {what} within {timeout:?}"),
            }
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
