//! The MCU's side of the wire: afLib4's transaction rules (spec §4) and
//! its answers to the module's messages (spec §5, §6), with the faults
//! the handle injects (refusals, silence, line noise, unplugging).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_serial::SerialStream;

use super::{lock, Ctl, McuEvent};

const READY: u8 = 0x32;
/// How long the MCU waits for each step of the ASR (afLib's Arduino port: 1 s per byte).
const STEP: Duration = Duration::from_secs(2);

/// `cmd | request id | attribute id LE | body` (spec §5.2).
pub(super) fn message(cmd: u8, id: u8, attr_id: u16, body: &[u8]) -> Vec<u8> {
    let mut m = vec![cmd, id];
    m.extend_from_slice(&attr_id.to_le_bytes());
    m.extend_from_slice(body);
    m
}

/// `value_len u16 LE | value`.
pub(super) fn with_len(value: &[u8]) -> Vec<u8> {
    let mut b = (value.len() as u16).to_le_bytes().to_vec();
    b.extend_from_slice(value);
    b
}

/// An UPDATE message.
pub(super) fn update(id: u8, attr_id: u16, state: u8, reason: u8, value: &[u8]) -> Vec<u8> {
    let mut body = vec![state, reason];
    body.extend(with_len(value));
    message(0x0D, id, attr_id, &body)
}

/// A sync frame with its checksum (spec §3).
fn sync(kind: u8, mcu: u16, asr: u16) -> [u8; 6] {
    let (m, a) = (mcu.to_le_bytes(), asr.to_le_bytes());
    let head = [kind, m[0], m[1], a[0], a[1]];
    let sum = head.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    [head[0], head[1], head[2], head[3], head[4], sum]
}
/// The MCU's side of the wire: afLib's transaction rules, one step at a time.
pub(super) struct Sim {
    io: SerialStream,
    buf: VecDeque<u8>,
    ctl: Arc<Mutex<Ctl>>,
    events: mpsc::Sender<McuEvent>,
    next_id: Arc<Mutex<u8>>,
    /// Messages for the ASR; afLib holds them until the boot completed.
    out: VecDeque<Vec<u8>>,
    ready: bool,
    version: u64,
    boots: u32,
}

impl Sim {
    pub(super) fn new(
        io: SerialStream,
        ctl: Arc<Mutex<Ctl>>,
        events: mpsc::Sender<McuEvent>,
        next_id: Arc<Mutex<u8>>,
    ) -> Self {
        Self {
            io,
            buf: VecDeque::new(),
            ctl,
            events,
            next_id,
            out: VecDeque::new(),
            ready: false,
            version: 0,
            boots: 0,
        }
    }

    pub(super) async fn run(mut self) {
        loop {
            if !self.take_ctl().await {
                continue;
            }
            if let Some(msg) = self.next_out() {
                if !self.send(&msg).await {
                    self.out.push_front(msg);
                    self.after_failed_sync().await;
                }
                continue;
            }
            if self.byte(Duration::from_millis(20)).await == Some(READY) {
                self.receive().await;
            }
        }
    }

    /// Takes what the handle asked for: a new port, silence, raw bytes,
    /// queued messages. False while the MCU is silent (it read and dropped
    /// whatever came).
    async fn take_ctl(&mut self) -> bool {
        let (replug, silent, raw) = {
            let mut ctl = lock(&self.ctl);
            let raw: Vec<_> = ctl.raw.drain(..).collect();
            (ctl.replug.take(), ctl.silent, raw)
        };
        if let Some(port) = replug {
            self.io = port;
            self.buf.clear();
        }
        if silent {
            self.buf.clear();
            self.fill(Duration::from_millis(20)).await;
            self.buf.clear();
            return false;
        }
        for bytes in raw {
            self.write(&bytes).await;
        }
        let mut ctl = lock(&self.ctl);
        self.out.extend(ctl.queued.drain(..));
        ctl.backlog = self.out.len();
        true
    }

    /// afLib after a failed sync: bytes already received are thrown away
    /// and the SYNC REQUEST goes again at the next READY, or after 1 s
    /// without one (spec §4.5, §4.6). Resending at once would answer the
    /// module's leftover bytes and could stay misaligned for ever.
    async fn after_failed_sync(&mut self) {
        self.buf.clear();
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            if self.byte(Duration::from_millis(20)).await == Some(READY) {
                return;
            }
        }
    }

    /// Before the boot completes only the protocol-version SET may go out.
    fn next_out(&mut self) -> Option<Vec<u8>> {
        if self.ready {
            return self.out.pop_front();
        }
        let pos = self.out.iter().position(|m| {
            m.first() == Some(&0x0B) && m.get(2..4) == Some(&1209u16.to_le_bytes()[..])
        })?;
        self.out.remove(pos)
    }

    fn id(&self) -> u8 {
        let mut n = lock(&self.next_id);
        *n = n.wrapping_add(1).max(1);
        *n
    }

    fn emit(&self, e: McuEvent) {
        let _ = self.events.try_send(e);
    }

    async fn fill(&mut self, timeout: Duration) {
        let mut b = [0u8; 256];
        match tokio::time::timeout(timeout, self.io.read(&mut b)).await {
            Ok(Ok(n)) if n > 0 => {
                let got = lock(&self.ctl).faults.apply(&b[..n], true);
                self.buf.extend(got);
            }
            // EOF or EIO: nobody has the device open (yet); do not spin.
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(_) => {}
        }
    }

    async fn byte(&mut self, timeout: Duration) -> Option<u8> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(b) = self.buf.pop_front() {
                return Some(b);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.fill(left).await;
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> bool {
        let bytes = lock(&self.ctl).faults.apply(bytes, false);
        self.io.write_all(&bytes).await.is_ok() && self.io.flush().await.is_ok()
    }

    async fn expect_ready(&mut self) -> bool {
        self.byte(STEP).await == Some(READY)
    }

    /// The ASR's SYNC RESPONSE: READYs before it are skipped and the
    /// checksum is taken with type 0x30, as afLib does (spec §3.1).
    async fn sync_response(&mut self) -> Option<(u16, u16)> {
        let mut first = self.byte(STEP).await?;
        while first == READY {
            first = self.byte(STEP).await?;
        }
        let mut f = [first, 0, 0, 0, 0, 0];
        for slot in &mut f[1..] {
            *slot = self.byte(STEP).await?;
        }
        (sync(
            0x30,
            u16::from_le_bytes([f[1], f[2]]),
            u16::from_le_bytes([f[3], f[4]]),
        )[5] == f[5])
            .then(|| {
                (
                    u16::from_le_bytes([f[1], f[2]]),
                    u16::from_le_bytes([f[3], f[4]]),
                )
            })
    }

    /// MCU → ASR (spec §4.3); false when the ASR did not follow.
    async fn send(&mut self, msg: &[u8]) -> bool {
        let m = (msg.len() + 2) as u16;
        if !self.write(&sync(0x30, m, 0)).await {
            return false;
        }
        if self.sync_response().await != Some((m, 0)) || !self.expect_ready().await {
            return false;
        }
        if !self.write(&sync(0x31, m, 0)).await || !self.expect_ready().await {
            return false;
        }
        let payload = [(msg.len() as u16).to_le_bytes().to_vec(), msg.to_vec()].concat();
        if !self.write(&payload).await || !self.expect_ready().await {
            return false;
        }
        if msg.first() == Some(&0x0B)
            && msg.get(2..4) == Some(&65012u16.to_le_bytes()[..])
            && msg.get(6) == Some(&1)
        {
            // afLib blocks its traffic until the module boots again.
            self.ready = false;
        }
        true
    }

    /// ASR → MCU after a READY (spec §4.2, §4.4).
    async fn receive(&mut self) {
        if !self.write(&sync(0x30, 0, 0)).await {
            return;
        }
        let Some((_, n)) = self.sync_response().await else {
            return;
        };
        if !self.expect_ready().await || !self.write(&sync(0x31, 0, n)).await {
            return;
        }
        if !self.expect_ready().await || n == 0 {
            return;
        }
        let mut payload = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            match self.byte(STEP).await {
                Some(b) => payload.push(b),
                None => return,
            }
        }
        if self.expect_ready().await && payload.len() >= 6 {
            self.dispatch(&payload[2..]);
        }
    }

    fn dispatch(&mut self, msg: &[u8]) {
        let [cmd, id, a0, a1, ..] = *msg else {
            return;
        };
        let attr_id = u16::from_le_bytes([a0, a1]);
        let value_at = |off: usize| -> Vec<u8> {
            let len = msg
                .get(off..off + 2)
                .map_or(0, |l| usize::from(u16::from_le_bytes([l[0], l[1]])));
            msg.get(off + 2..off + 2 + len).unwrap_or_default().to_vec()
        };
        match cmd {
            0x0D => self.on_update(attr_id, msg.get(5).copied().unwrap_or(0), value_at(6)),
            0x0B => {
                let value = value_at(4);
                let refused = self.apply_set(id, attr_id, &value);
                self.emit(McuEvent::Set {
                    attr_id,
                    value,
                    refused,
                });
            }
            0x0C => {
                let value = lock(&self.ctl)
                    .values
                    .get(&attr_id)
                    .cloned()
                    .unwrap_or_default();
                // afLib answers a GET with a fresh id of its own (spec §5.5).
                self.out
                    .push_back(update(self.id(), attr_id, 0, 0x0B, &value));
                self.emit(McuEvent::Get { attr_id });
            }
            _ => {}
        }
    }

    /// The application applies a SET (an UPDATE, state 0, reason 2) or
    /// refuses it (state 5, reason 0xFD, with the old value); true when
    /// refused.
    fn apply_set(&mut self, id: u8, attr_id: u16, value: &[u8]) -> bool {
        let mut ctl = lock(&self.ctl);
        let refused = ctl.refuse.contains(&attr_id);
        let answer = if refused {
            let old = ctl.values.get(&attr_id).cloned().unwrap_or_default();
            update(id, attr_id, 5, 0xFD, &old)
        } else {
            ctl.values.insert(attr_id, value.to_vec());
            update(id, attr_id, 0, 2, value)
        };
        drop(ctl);
        self.out.push_back(answer);
        refused
    }

    fn on_update(&mut self, attr_id: u16, reason: u8, value: Vec<u8>) {
        match attr_id {
            1208 => {
                // A boot sequence starts: afLib answers with its version.
                self.ready = false;
                self.out
                    .push_back(message(0x0B, self.id(), 1209, &with_len(&[2, 0])));
            }
            1206 | 1207 | 1209 => {}
            2003 => {
                let mut b = [0u8; 8];
                let n = value.len().min(8);
                b[..n].copy_from_slice(&value[..n]);
                self.version = u64::from_le_bytes(b);
            }
            65013 => {
                let needed = if self.version > 0x5062 { 4 } else { 1 };
                if !self.ready && self.version > 0 && value.first() == Some(&needed) {
                    self.ready = true;
                    self.boots += 1;
                    self.out
                        .push_back(message(0x0B, self.id(), 1207, &with_len(&[0])));
                    self.out.push_back(message(0x0C, self.id(), 1206, &[]));
                    self.emit(McuEvent::Booted(self.boots));
                }
            }
            _ => self.emit(McuEvent::ModuleUpdate {
                attr_id,
                value,
                reason,
            }),
        }
    }
}
