//! The drivers move bytes, time and reset pulses between IO and the core.
#![cfg(feature = "std")] // the helpers load profiles

mod common;

use std::cell::Cell;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use common::emulator_module;
use embedded_hal_mock::eh1::delay::{CheckedDelay, NoopDelay, Transaction as DelayTx};
use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as PinTx};
use firmware_bridge::driver::{AsyncDriver, BlockingDriver, TimeSource, RESET_PULSE_MS};
use firmware_bridge::{Event, ProtocolError};

/// A UART whose MCU never answers; it records what we write.
#[derive(Default)]
struct SilentUart {
    rx: VecDeque<u8>,
    tx: Vec<u8>,
}

impl embedded_io::ErrorType for SilentUart {
    type Error = Infallible;
}

impl embedded_io::Read for SilentUart {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let n = buf.len().min(self.rx.len());
        for b in buf.iter_mut().take(n) {
            *b = self.rx.pop_front().unwrap_or_default();
        }
        Ok(n)
    }
}

impl embedded_io::ReadReady for SilentUart {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(!self.rx.is_empty())
    }
}

impl embedded_io::Write for SilentUart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        self.tx.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

impl embedded_io_async::Read for SilentUart {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        if self.rx.is_empty() {
            std::future::pending::<()>().await;
        }
        embedded_io::Read::read(self, buf)
    }
}

impl embedded_io_async::Write for SilentUart {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        embedded_io::Write::write(self, buf)
    }

    async fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

/// A clock that jumps to every deadline it is asked to sleep until.
#[derive(Default)]
struct JumpClock(Cell<u64>);

impl TimeSource for &JumpClock {
    fn now_ms(&self) -> u64 {
        self.0.get()
    }

    async fn sleep_until(&self, deadline_ms: u64) {
        self.0.set(self.0.get().max(deadline_ms));
    }
}

fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

#[test]
fn the_blocking_driver_holds_still_while_the_mcu_resets_us_then_boots_again() {
    let module = emulator_module("afBlink_Plumo-2D_UART", &[]);
    let mut input = PinMock::new(&[
        PinTx::get(State::Low),
        PinTx::get(State::Low),
        PinTx::get(State::High),
    ]);
    let mut delay = CheckedDelay::new(&[
        DelayTx::delay_ms(5),
        DelayTx::delay_ms(5),
        DelayTx::delay_ms(5),
    ]);
    let mut driver = BlockingDriver::new(SilentUart::default(), delay.clone(), module, 5)
        .with_reset_input(input.clone());
    assert_eq!(driver.poll().unwrap(), None);
    assert_eq!(driver.poll().unwrap(), None);
    assert_eq!(driver.now_ms(), 10, "time advances by the delays");
    assert_eq!(
        driver.poll().unwrap(),
        None,
        "released: boots again, then idles a tick"
    );
    assert_eq!(
        driver.module_mut().poll_transmit(),
        None,
        "the boot's READY was written"
    );
    input.done();
    delay.done();
}

#[test]
fn the_blocking_driver_pulses_the_mcu_reset_line_when_the_mcu_is_stuck() {
    let module = emulator_module("afBlink_Plumo-2D_UART", &[]);
    let mut reset = PinMock::new(&[PinTx::set(State::Low), PinTx::set(State::High)]);
    let mut driver = BlockingDriver::new(SilentUart::default(), NoopDelay::new(), module, 10)
        .with_mcu_reset(reset.clone());
    let mut events = Vec::new();
    while !events.contains(&Event::McuStuck) && driver.now_ms() < 200_000 {
        events.extend(driver.poll().unwrap());
    }
    assert!(events.contains(&Event::McuStuck));
    assert_eq!(
        events
            .iter()
            .filter(|e| **e == Event::ProtocolError(ProtocolError::NoSyncRequest))
            .count(),
        3
    );
    reset.done();
}

#[test]
fn the_async_driver_takes_time_from_the_host_clock_and_pulses_the_reset_line() {
    let clock = JumpClock::default();
    let module = emulator_module("afBlink_Plumo-2D_UART", &[]);
    let mut reset = PinMock::new(&[PinTx::set(State::Low), PinTx::set(State::High)]);
    let mut driver =
        AsyncDriver::new(SilentUart::default(), &clock, module).with_mcu_reset(reset.clone());
    let first = block_on(driver.poll()).unwrap();
    assert_eq!(first, Event::ProtocolError(ProtocolError::NoSyncRequest));
    assert_eq!(
        clock.0.get(),
        4_000,
        "READY at 0 and retries at 1, 2 and 3 s; broken at 4 s"
    );
    let mut stuck_at = None;
    while stuck_at.is_none() {
        if block_on(driver.poll()).unwrap() == Event::McuStuck {
            stuck_at = Some(clock.0.get());
        }
    }
    reset.done();
    let after_pulse = stuck_at.unwrap();
    assert_eq!(
        after_pulse % 1_000,
        u64::from(RESET_PULSE_MS),
        "the pulse slept on the host clock"
    );
}

/// A host that gives up a port keeps the session: `into_parts` hands back
/// the UART with what was written to it and the module with its state.
#[test]
fn the_async_driver_hands_back_its_uart_and_module() {
    let clock = JumpClock::default();
    let module = emulator_module("afBlink_Plumo-2D_UART", &[]);
    let attributes = module.table().defs().count();
    let mut driver = AsyncDriver::new(SilentUart::default(), &clock, module);
    let first = block_on(driver.poll()).unwrap();
    assert_eq!(first, Event::ProtocolError(ProtocolError::NoSyncRequest));
    let (uart, time, module) = driver.into_parts();
    assert!(!uart.tx.is_empty(), "the sync requests stay written");
    assert!(std::ptr::eq(time, &clock), "the same clock");
    assert_eq!(module.table().defs().count(), attributes);
    assert!(!module.is_up(), "the session state is the driver's last");
}
