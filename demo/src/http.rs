//! A small real HTTP/1.1 server, plain or TLS, for the simulated parts
//! that tether's HTTP clients talk to (the ECLYPSE controller, and in the
//! tests webhooks and an upload hub). It records the requests it received,
//! as sent, so a test can check what tether put on the wire.
//!
//! One request per connection (`Connection: close`), bodies by
//! `Content-Length` only: enough for reqwest, small enough to trust.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Requests kept for [`Server::requests`]; older ones are forgotten (but
/// counted), so a long-running demo stays bounded.
const KEPT: usize = 1024;
/// A request head larger than this is refused (the connection closed).
const MAX_HEAD: usize = 64 * 1024;
/// A request body larger than this is refused.
const MAX_BODY: usize = 64 * 1024 * 1024;
/// How long [`Server::wait_for_requests`] waits.
const REQUEST_WAIT: Duration = Duration::from_secs(5);

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target: path and query as sent.
    pub target: String,
    /// Header names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path part of the target.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
}

/// What the handler answers.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Headers, in order (`Content-Length` and `Connection` are added).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A reply with a status and body, no headers.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// A reply with a Content-Type.
    pub fn typed(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        Reply::new(status, body).header("Content-Type", content_type)
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Handler = Arc<dyn Fn(Request) -> BoxFuture<Reply> + Send + Sync>;

/// What every connection records into.
struct Log {
    kept: Mutex<VecDeque<Request>>,
    /// Requests received so far, kept or not.
    count: watch::Sender<usize>,
}

impl Log {
    fn push(&self, request: Request) {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back(request);
        self.count.send_modify(|n| *n += 1);
    }
}

/// A running server; it stops with the token it was started with, or
/// when dropped.
pub struct Server {
    addr: SocketAddr,
    tls: bool,
    log: Arc<Log>,
    stop: CancellationToken,
}

impl Server {
    /// A plain HTTP server on a free loopback port.
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start<F, Fut>(handler: F) -> std::io::Result<Server>
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Server::bind(any, None, CancellationToken::new(), handler).await
    }

    /// An HTTPS server on a free loopback port, presenting the PEM
    /// certificate chain `cert_pem` with its key `key_pem`.
    ///
    /// # Errors
    /// Unusable PEM, or no loopback port.
    pub async fn start_tls<F, Fut>(
        cert_pem: &str,
        key_pem: &str,
        handler: F,
    ) -> std::io::Result<Server>
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let tls = acceptor(cert_pem, key_pem)?;
        Server::bind(any, Some(tls), CancellationToken::new(), handler).await
    }

    /// A server on `listen` (port 0: a free one), over TLS when `tls` is
    /// given, until `stop`.
    ///
    /// # Errors
    /// When `listen` cannot be bound.
    pub async fn bind<F, Fut>(
        listen: SocketAddr,
        tls: Option<TlsAcceptor>,
        stop: CancellationToken,
        handler: F,
    ) -> std::io::Result<Server>
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |r| Box::pin(handler(r)));
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let log = Arc::new(Log {
            kept: Mutex::new(VecDeque::new()),
            count: watch::Sender::new(0),
        });
        let stop = stop.child_token();
        let is_tls = tls.is_some();
        tokio::spawn(accept(listener, tls, handler, log.clone(), stop.clone()));
        Ok(Server {
            addr,
            tls: is_tls,
            log,
            stop,
        })
    }

    /// `http(s)://127.0.0.1:{port}`.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// `127.0.0.1:{port}`.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// The requests received so far (the latest 1,024), oldest first.
    pub fn requests(&self) -> Vec<Request> {
        let kept = self.log.kept.lock().unwrap_or_else(PoisonError::into_inner);
        kept.iter().cloned().collect()
    }

    /// How many requests arrived so far.
    pub fn request_count(&self) -> usize {
        *self.log.count.borrow()
    }

    /// Waits until at least `n` requests arrived; false when they have not
    /// after a few seconds.
    #[must_use]
    pub async fn wait_for_requests(&self, n: usize) -> bool {
        let mut count = self.log.count.subscribe();
        tokio::time::timeout(REQUEST_WAIT, count.wait_for(|c| *c >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A TLS acceptor presenting `cert_pem` (a chain) with `key_pem`.
///
/// # Errors
/// [`std::io::ErrorKind::InvalidInput`] for unusable PEM or a key that
/// does not match.
pub fn acceptor(cert_pem: &str, key_pem: &str) -> std::io::Result<TlsAcceptor> {
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what}: {e}"))
    };
    tether::tls::install_crypto_provider();
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("the server certificate is not PEM", &e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| invalid("the server key is not PEM", &e))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| invalid("the server certificate and key do not match", &e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts until `stop`, one task per connection.
async fn accept(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: Handler,
    log: Arc<Log>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let (handler, log, tls, stop) = (handler.clone(), log.clone(), tls.clone(), stop.clone());
        tokio::spawn(async move {
            let served = async {
                match tls {
                    // A client refusing our certificate ends here.
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            serve_one(stream, handler, &log).await;
                        }
                    }
                    None => serve_one(stream, handler, &log).await,
                }
            };
            tokio::select! {
                () = stop.cancelled() => {}
                () = served => {}
            }
        });
    }
}

async fn serve_one<S>(mut stream: S, handler: Handler, log: &Log)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    log.push(request.clone());
    let reply = handler(request).await;
    let mut head = format!("HTTP/1.1 {} X\r\n", reply.status);
    for (n, v) in &reply.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        reply.body.len()
    ));
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(&reply.body).await;
    let _ = stream.shutdown().await;
}

/// One request, or `None` for a connection that closed early or sent
/// something too large or malformed.
async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > MAX_HEAD {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    if length > MAX_BODY {
        return None;
    }
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Some(Request {
        method,
        target,
        headers,
        body,
    })
}
