//! The link cutter: a TCP proxy between tether and the broker. Cutting it
//! drops every open connection and closes the listener, so tether sees
//! what a dead uplink looks like (reset, then refused connects) while the
//! cloud side, connected to the broker directly, stays up.

use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// How long `restore` retries binding the old port: the previous
/// listener is dropped by its task, a moment after `cut`.
const REBIND_WAIT: Duration = Duration::from_secs(2);

/// A running proxy.
pub struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    /// Cancelled by `cut`: ends the listener and every connection of the
    /// current generation.
    generation: Mutex<CancellationToken>,
    stop: CancellationToken,
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
        let generation = stop.child_token();
        tokio::spawn(serve(listener, upstream, generation.clone()));
        Ok(Proxy {
            addr,
            upstream,
            generation: Mutex::new(generation),
            stop,
        })
    }

    /// Where tether connects.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts the link: open connections are dropped, new ones refused.
    pub fn cut(&self) {
        self.generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cancel();
    }

    /// Restores the link on the same port.
    ///
    /// # Errors
    /// When the port cannot be bound again within a short wait.
    pub async fn restore(&self) -> std::io::Result<()> {
        let deadline = tokio::time::Instant::now() + REBIND_WAIT;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let generation = self.stop.child_token();
        *self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = generation.clone();
        tokio::spawn(serve(listener, self.upstream, generation));
        Ok(())
    }
}

/// Accepts until `generation` ends; the listener is dropped on return.
async fn serve(listener: TcpListener, upstream: SocketAddr, generation: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            biased;
            () = generation.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((client, _)) => {
                tokio::spawn(pipe(client, upstream, generation.clone()));
            }
            Err(e) => {
                debug!(error = %e, "proxy accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Copies both ways until either side closes or the link is cut; dropping
/// both sockets is what tether sees as the outage.
async fn pipe(mut client: TcpStream, upstream: SocketAddr, cut: CancellationToken) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        () = cut.cancelled() => {}
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
    }
}
