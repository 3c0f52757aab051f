//! An in-test TCP proxy between tether and the broker that misbehaves on
//! demand: clean cut (FIN), half-open link (blackhole: bytes accepted and
//! dropped, no FIN, no RST), added latency, slow drip, and a reset in the
//! middle of a packet. Faults act on every open connection and on new ones
//! until [`Proxy::heal`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

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

/// A running proxy; stops with the test's runtime or on drop.
pub struct Proxy {
    port: u16,
    mode: watch::Sender<Mode>,
    /// Cancelled to cut every open connection; replaced after each cut.
    cut: Arc<Mutex<CancellationToken>>,
    accepted: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Proxy {
    /// Listens on an ephemeral loopback port and forwards to
    /// `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let (mode, mode_rx) = watch::channel(Mode::Pass);
        let cut = Arc::new(Mutex::new(CancellationToken::new()));
        let accepted = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let (c, a, s) = (cut.clone(), accepted.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    r = listener.accept() => match r {
                        Ok((sock, _)) => sock,
                        Err(_) => continue,
                    },
                    () = s.cancelled() => return,
                };
                a.fetch_add(1, Ordering::SeqCst);
                let token = c.lock().unwrap().child_token();
                let stop = s.clone();
                let mode = mode_rx.clone();
                tokio::spawn(async move {
                    if let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)).await {
                        link(client, up, mode, token, stop).await;
                    }
                });
            }
        });
        Proxy {
            port,
            mode,
            cut,
            accepted,
            stop,
        }
    }

    /// The port tether should connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Switches every connection, open or new, to `mode`.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Back to forwarding at once.
    pub fn heal(&self) {
        self.set(Mode::Pass);
    }

    /// Closes every open connection cleanly (FIN to both ends).
    pub fn cut(&self) {
        let mut cut = self.cut.lock().unwrap();
        cut.cancel();
        *cut = CancellationToken::new();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut.lock().unwrap().cancel();
    }
}

/// Pumps both directions until either side closes, a cut, or a reset.
async fn link(
    client: TcpStream,
    up: TcpStream,
    mode: watch::Receiver<Mode>,
    cut: CancellationToken,
    stop: CancellationToken,
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
        () = stop.cancelled() => {}
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
        let chunk = &buf[..n];
        let current = *mode.borrow();
        let ok = match current {
            Mode::Pass => to.write_all(chunk).await.is_ok(),
            Mode::Blackhole => true,
            Mode::Latency(d) => {
                tokio::time::sleep(d).await;
                to.write_all(chunk).await.is_ok()
            }
            Mode::Drip(every) => {
                let mut ok = true;
                for byte in chunk {
                    tokio::time::sleep(every).await;
                    if to.write_all(std::slice::from_ref(byte)).await.is_err() {
                        ok = false;
                        break;
                    }
                }
                ok
            }
            Mode::ResetMidPacket => {
                let _ = to.write_all(&chunk[..n.div_ceil(2)]).await;
                reset.cancel();
                false
            }
        };
        if !ok {
            break;
        }
    }
    if !reset.is_cancelled() {
        let _ = to.shutdown().await;
    }
    to
}
