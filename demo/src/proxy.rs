//! The link cutter: a TCP proxy between tether and the broker that
//! misbehaves on demand, so tether sees what a bad uplink looks like while
//! the cloud side, connected to the broker directly, stays up.
//!
//! - [`Proxy::cut`]: every open connection closes cleanly (FIN to both
//!   ends); new ones are still accepted.
//! - [`Proxy::unplug`] and [`Proxy::replug`]: a dead uplink (reset, then
//!   refused connects) and its return on the same port.
//! - [`Proxy::set`] a [`Mode`]: a half-open link (blackhole), added
//!   latency, a slow drip, a reset in the middle of a packet. Modes act on
//!   every open connection and on new ones until [`Proxy::heal`].
//!
//! `tether demo` cuts the link in its outage step; the chaos tests use
//! every fault.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// How long `replug` retries binding the old port: the previous
/// listener is dropped by its task, a moment after `unplug`.
const REBIND_WAIT: Duration = Duration::from_secs(2);
/// A pause after a failed accept (out of file descriptors, say), so the
/// loop does not spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// How the proxy treats bytes it reads, in both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward at once.
    Pass,
    /// Read and drop: the peer's TCP stack still acknowledges, so neither
    /// end sees an error (a dead NAT entry, a pulled cable upstream).
    Blackhole,
    /// Forward each chunk after this delay.
    Latency(Duration),
    /// Forward one byte per interval.
    Drip(Duration),
    /// Forward half of the next chunk, then reset both sides (RST).
    ResetMidPacket,
}

/// What the listener task and every connection share.
struct Shared {
    upstream: SocketAddr,
    mode: watch::Receiver<Mode>,
    /// Cancelled by `cut`, then replaced: ends every open connection.
    connections: Mutex<CancellationToken>,
    accepted: AtomicU64,
    stop: CancellationToken,
}

impl Shared {
    fn connections(&self) -> std::sync::MutexGuard<'_, CancellationToken> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running proxy; it stops with the token given to [`Proxy::start`] or
/// when dropped.
pub struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    /// Cancelled by `unplug`: ends the current listener.
    listening: Mutex<CancellationToken>,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listens on `listen` (port 0: a free one) and forwards each
    /// connection to `upstream`, until `stop`.
    ///
    /// # Errors
    /// When `listen` cannot be bound.
    pub async fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        stop: CancellationToken,
    ) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let stop = stop.child_token();
        let (mode, mode_rx) = watch::channel(Mode::Pass);
        let shared = Arc::new(Shared {
            upstream,
            mode: mode_rx,
            connections: Mutex::new(stop.child_token()),
            accepted: AtomicU64::new(0),
            stop,
        });
        let listening = shared.stop.child_token();
        tokio::spawn(serve(listener, shared.clone(), listening.clone()));
        Ok(Proxy {
            addr,
            mode,
            listening: Mutex::new(listening),
            shared,
        })
    }

    /// Where tether connects.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Switches every connection, open or new, to `mode`.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Back to forwarding at once.
    pub fn heal(&self) {
        self.set(Mode::Pass);
    }

    /// Closes every open connection cleanly (FIN to both ends); new
    /// connections are accepted as before.
    pub fn cut(&self) {
        let mut connections = self.shared.connections();
        connections.cancel();
        *connections = self.shared.stop.child_token();
    }

    /// Pulls the plug: open connections close and the port refuses new
    /// ones until [`Proxy::replug`].
    pub fn unplug(&self) {
        self.listening
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cancel();
        self.cut();
    }

    /// Listens again on the same port after [`Proxy::unplug`].
    ///
    /// # Errors
    /// When the port cannot be bound again within a short wait.
    pub async fn replug(&self) -> std::io::Result<()> {
        let deadline = tokio::time::Instant::now() + REBIND_WAIT;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let listening = self.shared.stop.child_token();
        *self
            .listening
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = listening.clone();
        tokio::spawn(serve(listener, self.shared.clone(), listening));
        Ok(())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

/// Accepts until `listening` ends; the listener is dropped on return.
async fn serve(listener: TcpListener, shared: Arc<Shared>, listening: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            biased;
            () = listening.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((client, _)) => {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                let cut = shared.connections().child_token();
                let (upstream, mode) = (shared.upstream, shared.mode.clone());
                tokio::spawn(async move {
                    if let Ok(up) = TcpStream::connect(upstream).await {
                        link(client, up, mode, cut).await;
                    }
                });
            }
            Err(e) => {
                debug!(error = %e, "link cutter: accept failed");
                tokio::time::sleep(ACCEPT_PAUSE).await;
            }
        }
    }
}

/// Pumps both directions until either side closes, a cut, or a reset;
/// dropping both sockets is what tether sees as the outage.
async fn link(
    client: TcpStream,
    up: TcpStream,
    mode: watch::Receiver<Mode>,
    cut: CancellationToken,
) {
    let _ = client.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (ur, uw) = up.into_split();
    // Set by the pump that decides to reset: both sockets then close with RST.
    let reset = CancellationToken::new();
    let a = pump(cr, uw, mode.clone(), reset.clone());
    let b = pump(ur, cw, mode, reset.clone());
    tokio::select! {
        (cw, uw) = async { tokio::join!(a, b) } => {
            if reset.is_cancelled() {
                // A zero linger turns the close into an RST.
                let _ = cw.as_ref().set_zero_linger();
                let _ = uw.as_ref().set_zero_linger();
            }
        }
        () = cut.cancelled() => {}
    }
}

/// Copies `from` to `to` as `mode` says; returns the write half so the
/// caller decides how it closes.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mode: watch::Receiver<Mode>,
    reset: CancellationToken,
) -> OwnedWriteHalf {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            () = reset.cancelled() => break,
        };
        let current = *mode.borrow();
        if !forward(&mut to, &buf[..n], current, &reset).await {
            break;
        }
    }
    if !reset.is_cancelled() {
        let _ = to.shutdown().await;
    }
    to
}

/// Writes one chunk as `mode` says; false when the link is over.
async fn forward(
    to: &mut OwnedWriteHalf,
    chunk: &[u8],
    mode: Mode,
    reset: &CancellationToken,
) -> bool {
    match mode {
        Mode::Pass => to.write_all(chunk).await.is_ok(),
        Mode::Blackhole => true,
        Mode::Latency(d) => {
            tokio::time::sleep(d).await;
            to.write_all(chunk).await.is_ok()
        }
        Mode::Drip(every) => {
            for byte in chunk {
                tokio::time::sleep(every).await;
                if to.write_all(std::slice::from_ref(byte)).await.is_err() {
                    return false;
                }
            }
            true
        }
        Mode::ResetMidPacket => {
            let _ = to.write_all(&chunk[..chunk.len().div_ceil(2)]).await;
            reset.cancel();
            false
        }
    }
}
