//! An async driver over `embedded_io_async::{Read, Write}`. It owns no
//! clock: the host passes a [`TimeSource`] (tokio's in the daemon).

use alloc::vec::Vec;
use core::future::{poll_fn, Future};
use core::pin::pin;
use core::task::Poll;

use embedded_hal::digital::{InputPin, OutputPin};
use embedded_io_async::{Read, Write};

use super::{pin_error, DriverError, NoPin, ResetInput, ResetState, READ_CHUNK, RESET_PULSE_MS};
use crate::{Event, Module};

/// How often the reset input is sampled while nothing else happens.
const RESET_INPUT_POLL_MS: u64 = 20;

/// The host's clock.
pub trait TimeSource {
    /// Milliseconds since an arbitrary, fixed origin.
    fn now_ms(&self) -> u64;
    /// Completes at `deadline_ms` (at once if it has passed).
    fn sleep_until(&self, deadline_ms: u64) -> impl Future<Output = ()>;
}

/// Runs a [`Module`] over an async UART.
#[derive(Debug)]
pub struct AsyncDriver<U, T, O = NoPin, I = NoPin> {
    uart: U,
    time: T,
    module: Module,
    /// Chunk being written and how much of it is out, kept across calls so
    /// that cancelling [`AsyncDriver::poll`] loses no bytes.
    pending: Option<(Vec<u8>, usize)>,
    mcu_reset: Option<O>,
    our_reset: Option<(I, ResetInput)>,
}

impl<U: Read + Write, T: TimeSource> AsyncDriver<U, T> {
    /// A driver without reset lines.
    pub fn new(uart: U, time: T, module: Module) -> Self {
        Self {
            uart,
            time,
            module,
            pending: None,
            mcu_reset: None,
            our_reset: None,
        }
    }
}

impl<U: Read + Write, T: TimeSource, O: OutputPin, I: InputPin> AsyncDriver<U, T, O, I> {
    /// Adds the line that resets the MCU (active low).
    pub fn with_mcu_reset<O2: OutputPin>(self, pin: O2) -> AsyncDriver<U, T, O2, I> {
        let Self {
            uart,
            time,
            module,
            pending,
            our_reset,
            ..
        } = self;
        AsyncDriver {
            uart,
            time,
            module,
            pending,
            mcu_reset: Some(pin),
            our_reset,
        }
    }

    /// Adds the active-low line on which the MCU resets us.
    pub fn with_reset_input<I2: InputPin>(self, pin: I2) -> AsyncDriver<U, T, O, I2> {
        let Self {
            uart,
            time,
            module,
            pending,
            mcu_reset,
            ..
        } = self;
        AsyncDriver {
            uart,
            time,
            module,
            pending,
            mcu_reset,
            our_reset: Some((pin, ResetInput::default())),
        }
    }

    /// The session, for commands; pass [`AsyncDriver::now_ms`] as time.
    pub fn module_mut(&mut self) -> &mut Module {
        &mut self.module
    }

    /// The host clock's time.
    pub fn now_ms(&self) -> u64 {
        self.time.now_ms()
    }

    /// Ends the driver and hands back the UART, the time source and the
    /// module, so the host keeps the session (attribute table, boot state)
    /// across a reopened port. The reset pins are dropped, releasing the
    /// lines, and so is a chunk only partly written: the link it was
    /// written to is being given up.
    pub fn into_parts(self) -> (U, T, Module) {
        (self.uart, self.time, self.module)
    }

    /// Runs IO until the session has an event.
    ///
    /// Cancel safety: safe to drop at any await (e.g. in `select!` against
    /// a command channel) as long as the UART's `read` is cancel-safe, as
    /// tokio's is through `FromTokio`. Partly written chunks resume.
    ///
    /// # Errors
    /// [`DriverError`] when the UART or a pin fails.
    pub async fn poll(&mut self) -> Result<Event, DriverError<U::Error>> {
        loop {
            let now = self.time.now_ms();
            let held = self.sample_reset_input(now)?;
            if !held {
                self.write_pending().await?;
                if let Some(event) = self.module.poll_event() {
                    if event == Event::McuStuck {
                        self.pulse_mcu_reset().await?;
                    }
                    return Ok(event);
                }
            }
            let deadline = self.module.poll_timeout();
            if !held && deadline.is_some_and(|d| d <= now) {
                self.module.handle_timeout(now);
                continue;
            }
            let wake = match (deadline, self.our_reset.is_some()) {
                (Some(d), true) => Some(d.min(now + RESET_INPUT_POLL_MS)),
                (None, true) => Some(now + RESET_INPUT_POLL_MS),
                (d, false) => d,
            };
            let mut buf = [0u8; READ_CHUNK];
            match self.read_or_sleep(&mut buf, wake).await {
                Some(Ok(0)) => return Err(DriverError::Closed),
                Some(Ok(n)) if !held => self.module.handle_rx(&buf[..n], self.time.now_ms()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(DriverError::Uart(e)),
                None => {}
            }
        }
    }

    /// `Some(read result)` when bytes came first, `None` when `wake` passed.
    async fn read_or_sleep(
        &mut self,
        buf: &mut [u8],
        wake: Option<u64>,
    ) -> Option<Result<usize, U::Error>> {
        let Some(wake) = wake else {
            return Some(self.uart.read(buf).await);
        };
        let mut read = pin!(self.uart.read(buf));
        let mut sleep = pin!(self.time.sleep_until(wake));
        poll_fn(|cx| {
            if let Poll::Ready(r) = read.as_mut().poll(cx) {
                return Poll::Ready(Some(r));
            }
            sleep.as_mut().poll(cx).map(|()| None)
        })
        .await
    }

    fn sample_reset_input(&mut self, now: u64) -> Result<bool, DriverError<U::Error>> {
        let Some((pin, input)) = &mut self.our_reset else {
            return Ok(false);
        };
        match input.sample(pin).map_err(DriverError::Pin)? {
            ResetState::Held => Ok(true),
            ResetState::Released => {
                self.pending = None;
                self.module.reset_by_mcu(now);
                Ok(false)
            }
            ResetState::Running => Ok(false),
        }
    }

    async fn write_pending(&mut self) -> Result<(), DriverError<U::Error>> {
        loop {
            if self.pending.is_none() {
                self.pending = self.module.poll_transmit().map(|chunk| (chunk, 0));
            }
            let Some((chunk, done)) = &mut self.pending else {
                return Ok(());
            };
            while *done < chunk.len() {
                let n = self
                    .uart
                    .write(&chunk[*done..])
                    .await
                    .map_err(DriverError::Uart)?;
                if n == 0 {
                    return Err(DriverError::Closed);
                }
                *done += n;
            }
            self.pending = None;
            self.uart.flush().await.map_err(DriverError::Uart)?;
        }
    }

    async fn pulse_mcu_reset(&mut self) -> Result<(), DriverError<U::Error>> {
        let Some(pin) = &mut self.mcu_reset else {
            return Ok(());
        };
        pin.set_low().map_err(|e| DriverError::Pin(pin_error(e)))?;
        self.time
            .sleep_until(self.time.now_ms() + u64::from(RESET_PULSE_MS))
            .await;
        pin.set_high().map_err(|e| DriverError::Pin(pin_error(e)))?;
        self.module.mcu_reset_done(self.time.now_ms());
        Ok(())
    }
}
