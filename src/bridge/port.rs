//! The IO ends of the bridge: the serial device (tokio-serial, wrapped for
//! firmware-bridge's embedded-io driver), tokio's clock as the driver's
//! [`TimeSource`], and the GPIO reset lines through gpio-cdev.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use embedded_io_adapters::tokio_1::FromTokio;
use firmware_bridge::driver::TimeSource;
use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
use linux_embedded_hal::CdevPin;
use tokio::time::Instant;
use tokio_serial::{SerialPortBuilderExt, SerialStream};

/// Consumer label shown by `gpioinfo` for lines tether holds.
const GPIO_CONSUMER: &str = "tether-bridge";

/// The serial port as the driver sees it.
pub(crate) type Port = FromTokio<SerialStream>;

/// Opens the serial device at `baud`, 8N1, no flow control (spec §1).
///
/// The device is opened exclusively (tokio-serial's default), so a second
/// tether, or a stray `screen`, cannot silently steal bytes from the link.
pub(crate) fn open(device: &Path, baud: u32) -> Result<Port, tokio_serial::Error> {
    let stream = tokio_serial::new(device.to_string_lossy(), baud)
        .data_bits(tokio_serial::DataBits::Eight)
        .parity(tokio_serial::Parity::None)
        .stop_bits(tokio_serial::StopBits::One)
        .flow_control(tokio_serial::FlowControl::None)
        .open_native_async()?;
    Ok(FromTokio::new(stream))
}

/// Tokio's clock in milliseconds since a fixed origin, shared by every
/// session so the module's timers stay valid across reopens. Using tokio's
/// `Instant` keeps paused-time tests possible.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokioClock {
    origin: Instant,
}

impl TokioClock {
    pub(crate) fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl TimeSource for TokioClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn sleep_until(&self, deadline_ms: u64) -> impl Future<Output = ()> {
        tokio::time::sleep_until(self.origin + Duration::from_millis(deadline_ms))
    }
}

/// A GPIO line could not be requested.
#[derive(Debug, thiserror::Error)]
#[error("GPIO {chip}:{line}: {source}")]
pub(crate) struct GpioError {
    /// The chip device, e.g. `/dev/gpiochip0`.
    pub chip: String,
    /// Line offset on the chip.
    pub line: u32,
    /// What gpio-cdev said.
    #[source]
    pub source: linux_embedded_hal::gpio_cdev::errors::Error,
}

/// A reset line as configured: `(/dev/gpiochipN, line)`.
pub(crate) type LineSpec = (PathBuf, u32);

fn request(spec: &LineSpec, flags: LineRequestFlags, default: u8) -> Result<CdevPin, GpioError> {
    let (chip, line) = spec;
    let err = |source| GpioError {
        chip: chip.display().to_string(),
        line: *line,
        source,
    };
    let handle = Chip::new(chip)
        .and_then(|mut c| c.get_line(*line))
        .and_then(|l| l.request(flags, default, GPIO_CONSUMER))
        .map_err(err)?;
    CdevPin::new(handle).map_err(err)
}

/// The active-low line that resets the MCU, requested released (high).
pub(crate) fn mcu_reset_pin(spec: &LineSpec) -> Result<CdevPin, GpioError> {
    request(spec, LineRequestFlags::OUTPUT, 1)
}

/// The active-low line on which the MCU resets us.
pub(crate) fn module_reset_pin(spec: &LineSpec) -> Result<CdevPin, GpioError> {
    request(spec, LineRequestFlags::INPUT, 0)
}
