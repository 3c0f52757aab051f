//! Line damage for [`Mcu::inject`](super::Mcu::inject): what a noisy or
//! lossy UART does to the bytes between the MCU and the module.

/// How a damaged write (or read) is damaged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineFault {
    /// These bytes go out just before the write, between frames.
    NoiseBefore(Vec<u8>),
    /// These bytes are inserted after the write's first byte, inside a frame.
    NoiseInside(Vec<u8>),
    /// The write's last byte is lost (a dropped byte truncates the frame).
    DropLast,
}

/// Which of the MCU's writes a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    /// 6-byte sync frames (REQUEST, ACK): checksummed, so damage is seen.
    #[default]
    SyncFrames,
    /// Message payloads: afLib4 has no payload checksum.
    Payloads,
    /// What the MCU reads: the module's frames, READYs and payloads, as
    /// they arrive (one read at a time).
    Received,
}

/// Which writes get damaged, and how many are left to damage.
#[derive(Debug, Default)]
pub(super) struct Faults {
    fault: Option<LineFault>,
    target: Target,
    every: u32,
    pub(super) left: u32,
    pub(super) done: u32,
    seen: u32,
}

impl Faults {
    pub(super) fn new(fault: LineFault, target: Target, every: u32, times: u32) -> Self {
        Self {
            fault: Some(fault),
            target,
            every: every.max(1),
            left: times,
            ..Self::default()
        }
    }

    /// The bytes that reach the line (or the MCU, when `incoming`) for one
    /// write or read of `bytes`.
    pub(super) fn apply(&mut self, bytes: &[u8], incoming: bool) -> Vec<u8> {
        let sync = bytes.len() == 6 && (bytes[0] == 0x30 || bytes[0] == 0x31);
        let hit = match self.target {
            Target::Received => incoming,
            Target::SyncFrames => !incoming && sync,
            Target::Payloads => !incoming && !sync,
        };
        if !hit {
            return bytes.to_vec();
        }
        self.seen += 1;
        let fault = match &self.fault {
            Some(f) if self.left > 0 && self.seen.is_multiple_of(self.every) => f.clone(),
            _ => return bytes.to_vec(),
        };
        self.left -= 1;
        self.done += 1;
        match fault {
            LineFault::NoiseBefore(noise) => [noise, bytes.to_vec()].concat(),
            LineFault::NoiseInside(noise) => {
                let at = bytes.len().min(1);
                [&bytes[..at], &noise[..], &bytes[at..]].concat()
            }
            LineFault::DropLast => bytes[..bytes.len().saturating_sub(1)].to_vec(),
        }
    }
}
