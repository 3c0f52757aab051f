//! A blocking driver over `embedded_io::{Read, Write, ReadReady}` and
//! `embedded_hal::delay::DelayNs`.

use embedded_hal::delay::DelayNs;
use embedded_hal::digital::{InputPin, OutputPin};
use embedded_io::{Read, ReadReady, Write};

use super::{pin_error, DriverError, NoPin, ResetInput, ResetState, READ_CHUNK, RESET_PULSE_MS};
use crate::{Event, Module};

/// Runs a [`Module`] over a blocking UART.
///
/// There is no clock: time advances by the delays the driver makes (one
/// `tick_ms` per idle step, the reset pulse). Reads never block, because
/// the driver asks `read_ready` first. At 9600 baud the time spent writing
/// is small against the protocol's 30 ms to 11 s timers.
#[derive(Debug)]
pub struct BlockingDriver<U, D, O = NoPin, I = NoPin> {
    uart: U,
    delay: D,
    module: Module,
    now_ms: u64,
    tick_ms: u32,
    mcu_reset: Option<O>,
    our_reset: Option<(I, ResetInput)>,
}

impl<U, D> BlockingDriver<U, D>
where
    U: Read + Write + ReadReady,
    D: DelayNs,
{
    /// A driver without reset lines, idling `tick_ms` per step (1–10 ms).
    pub fn new(uart: U, delay: D, module: Module, tick_ms: u32) -> Self {
        Self {
            uart,
            delay,
            module,
            now_ms: 0,
            tick_ms: tick_ms.max(1),
            mcu_reset: None,
            our_reset: None,
        }
    }
}

impl<U, D, O, I> BlockingDriver<U, D, O, I>
where
    U: Read + Write + ReadReady,
    D: DelayNs,
    O: OutputPin,
    I: InputPin,
{
    /// Adds the line that resets the MCU (active low), pulsed when the
    /// session reports [`Event::McuStuck`].
    pub fn with_mcu_reset<O2: OutputPin>(self, pin: O2) -> BlockingDriver<U, D, O2, I> {
        let Self {
            uart,
            delay,
            module,
            now_ms,
            tick_ms,
            our_reset,
            ..
        } = self;
        BlockingDriver {
            uart,
            delay,
            module,
            now_ms,
            tick_ms,
            mcu_reset: Some(pin),
            our_reset,
        }
    }

    /// Adds the active-low line on which the MCU resets us.
    pub fn with_reset_input<I2: InputPin>(self, pin: I2) -> BlockingDriver<U, D, O, I2> {
        let Self {
            uart,
            delay,
            module,
            now_ms,
            tick_ms,
            mcu_reset,
            ..
        } = self;
        BlockingDriver {
            uart,
            delay,
            module,
            now_ms,
            tick_ms,
            mcu_reset,
            our_reset: Some((pin, ResetInput::default())),
        }
    }

    /// The session, for commands; pass [`BlockingDriver::now_ms`] as time.
    pub fn module_mut(&mut self) -> &mut Module {
        &mut self.module
    }

    /// The driver's time in milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Does one step of IO: writes what the session has, reads what is
    /// there, runs due timers or idles one tick. Returns the next event.
    ///
    /// # Errors
    /// [`DriverError`] when the UART or a pin fails.
    pub fn poll(&mut self) -> Result<Option<Event>, DriverError<U::Error>> {
        if let Some((pin, input)) = &mut self.our_reset {
            match input.sample(pin).map_err(DriverError::Pin)? {
                ResetState::Held => {
                    self.idle();
                    return Ok(None);
                }
                ResetState::Released => self.module.reset_by_mcu(self.now_ms),
                ResetState::Running => {}
            }
        }
        self.flush()?;
        if let Some(event) = self.module.poll_event() {
            if event == Event::McuStuck {
                self.pulse_mcu_reset()?;
            }
            return Ok(Some(event));
        }
        if self.uart.read_ready().map_err(DriverError::Uart)? {
            let mut buf = [0u8; READ_CHUNK];
            let n = self.uart.read(&mut buf).map_err(DriverError::Uart)?;
            if n == 0 {
                return Err(DriverError::Closed);
            }
            self.module.handle_rx(&buf[..n], self.now_ms);
        } else if self.module.poll_timeout().is_some_and(|t| t <= self.now_ms) {
            self.module.handle_timeout(self.now_ms);
        } else {
            self.idle();
        }
        self.flush()?;
        Ok(self.module.poll_event())
    }

    fn idle(&mut self) {
        self.delay.delay_ms(self.tick_ms);
        self.now_ms += u64::from(self.tick_ms);
    }

    fn flush(&mut self) -> Result<(), DriverError<U::Error>> {
        let mut wrote = false;
        while let Some(chunk) = self.module.poll_transmit() {
            self.uart.write_all(&chunk).map_err(DriverError::Uart)?;
            wrote = true;
        }
        if wrote {
            self.uart.flush().map_err(DriverError::Uart)?;
        }
        Ok(())
    }

    fn pulse_mcu_reset(&mut self) -> Result<(), DriverError<U::Error>> {
        let Some(pin) = &mut self.mcu_reset else {
            return Ok(());
        };
        pin.set_low().map_err(|e| DriverError::Pin(pin_error(e)))?;
        self.delay.delay_ms(RESET_PULSE_MS);
        pin.set_high().map_err(|e| DriverError::Pin(pin_error(e)))?;
        self.now_ms += u64::from(RESET_PULSE_MS);
        self.module.mcu_reset_done(self.now_ms);
        Ok(())
    }
}
