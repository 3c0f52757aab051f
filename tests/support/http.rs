//! Small real HTTP/1.1 servers on `127.0.0.1:0`, plain or TLS, for tests of
//! tether's HTTP clients. No mocks: tether talks to these over real sockets.
//!
//! - [`Server`]: a server around an async handler; it records every request.
//! - [`Eclypse`]: plays the controller's REST API with Basic auth.
//! - [`UploadHub`]: plays IoT Hub file upload and the blob store behind it.
//!
//! One request per connection (`Connection: close`), bodies by
//! `Content-Length` only: enough for reqwest, small enough to trust.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::certs::Issued;

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
    pub status: u16,
    pub headers: Vec<(String, String)>,
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

/// A running server; stops when dropped.
pub struct Server {
    addr: SocketAddr,
    tls: bool,
    log: Arc<Mutex<Vec<Request>>>,
    task: JoinHandle<()>,
}

impl Server {
    /// A plain HTTP server.
    pub async fn start<F, Fut>(handler: F) -> Server
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        Server::spawn(None, Arc::new(move |r| Box::pin(handler(r)))).await
    }

    /// An HTTPS server presenting `cert`.
    pub async fn start_tls<F, Fut>(cert: &Issued, handler: F) -> Server
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("test certificate is PEM");
        let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("test key is PEM");
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("test certificate and key match");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Server::spawn(Some(acceptor), Arc::new(move |r| Box::pin(handler(r)))).await
    }

    async fn spawn(tls: Option<tokio_rustls::TlsAcceptor>, handler: Handler) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("bound address");
        let log = Arc::new(Mutex::new(Vec::new()));
        let is_tls = tls.is_some();
        let task_log = log.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (handler, log, tls) = (handler.clone(), task_log.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            // A client refusing our certificate ends here.
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve_one(stream, handler, log).await;
                            }
                        }
                        None => serve_one(stream, handler, log).await,
                    }
                });
            }
        });
        Server {
            addr,
            tls: is_tls,
            log,
            task,
        }
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

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().expect("log lock").clone()
    }

    /// Waits until at least `n` requests arrived (5 s at most).
    pub async fn wait_for_requests(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.requests().len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {n} requests"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_one<S>(mut stream: S, handler: Handler, log: Arc<Mutex<Vec<Request>>>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    log.lock().expect("log lock").push(request.clone());
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

async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 64 * 1024 {
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

/// The controller's admin user, as the stand-in expects it.
pub const ECLYPSE_USER: &str = "admin";
/// Its password.
pub const ECLYPSE_PASSWORD: &str = "eclypse-secret";

/// Plays the ECLYPSE REST API. Every route needs Basic auth with
/// [`ECLYPSE_USER`]/[`ECLYPSE_PASSWORD`] (401 otherwise). Routes:
/// - `GET /api/rest/v1/info`: `{"apiRevision":"8.0"}` plus headers the
///   relay must drop (Set-Cookie, ETag, X-Powered-By).
/// - `/echo...`, `/api/rest/v1/some...`: 200, the request body back with
///   its Content-Type.
/// - `/size/{n}`: 200, `n` bytes of `a` as text/plain.
/// - `/binary`: 200, every byte value, application/octet-stream.
/// - `/backup`: 200, a binary "zip" with a Content-Disposition.
/// - `/status/{code}/{n}`: that status, `n` bytes of `x`.
/// - `/slow`: answers after 3 s.
/// - `/hold`: answers once [`Eclypse::release`] is notified.
/// - `/redirect`: 302 to another host.
/// - anything else: 404 `Not found`.
pub struct Eclypse {
    pub server: Server,
    pub release: Arc<Notify>,
}

impl Eclypse {
    /// Over plain HTTP.
    pub async fn start() -> Eclypse {
        let release = Arc::new(Notify::new());
        let r = release.clone();
        let server = Server::start(move |req| eclypse(req, r.clone())).await;
        Eclypse { server, release }
    }

    /// Over HTTPS with `cert`.
    pub async fn start_tls(cert: &Issued) -> Eclypse {
        let release = Arc::new(Notify::new());
        let r = release.clone();
        let server = Server::start_tls(cert, move |req| eclypse(req, r.clone())).await;
        Eclypse { server, release }
    }
}

async fn eclypse(req: Request, release: Arc<Notify>) -> Reply {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{ECLYPSE_USER}:{ECLYPSE_PASSWORD}"))
    );
    if req.header("authorization") != Some(expected.as_str()) {
        return Reply::typed(401, "text/plain", "Unauthorized")
            .header("WWW-Authenticate", "Basic realm=\"ECLYPSE\"");
    }
    let path = req.path().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", "rest", "v1", "info"] => Reply::typed(
            200,
            "application/json;charset=UTF-8",
            r#"{"apiRevision":"8.0"}"#,
        )
        .header("Set-Cookie", "session=abc")
        .header("ETag", "\"v1\"")
        .header("X-Powered-By", "ECLYPSE"),
        ["echo", ..] | ["api", "rest", "v1", "some", ..] => {
            let ct = req
                .header("content-type")
                .unwrap_or("text/plain")
                .to_string();
            Reply::typed(200, &ct, req.body)
        }
        ["size", n] => Reply::typed(200, "text/plain", vec![b'a'; n.parse().unwrap_or(0)]),
        ["binary"] => Reply::typed(
            200,
            "application/octet-stream",
            (0..=255u8).collect::<Vec<_>>(),
        ),
        ["backup"] => Reply::typed(
            200,
            "application/zip",
            b"PK\x03\x04\xff\xfe binary zip".to_vec(),
        )
        .header("Content-Disposition", "attachment; filename=\"backup.zip\""),
        ["status", code, n] => Reply::typed(
            code.parse().unwrap_or(500),
            "text/plain",
            vec![b'x'; n.parse().unwrap_or(0)],
        ),
        ["slow"] => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Reply::typed(200, "text/plain", "slow")
        }
        ["hold"] => {
            release.notified().await;
            Reply::typed(200, "text/plain", "released")
        }
        ["redirect"] => Reply::new(302, "").header("Location", "http://elsewhere.example/"),
        _ => Reply::typed(404, "text/plain", "Not found"),
    }
}

/// A blob stored through [`UploadHub`].
#[derive(Debug, Clone)]
pub struct StoredBlob {
    /// `{container}/{blobName}`.
    pub path: String,
    /// The full PUT target (with the SAS query).
    pub target: String,
    pub content_type: Option<String>,
    pub blob_type: Option<String>,
    pub body: Vec<u8>,
}

#[derive(Default)]
struct HubState {
    blobs: Vec<StoredBlob>,
    notifications: Vec<Value>,
    fail_puts: bool,
}

/// The container the stand-in hands out.
pub const UPLOAD_CONTAINER: &str = "iothub-fileupload";

/// Plays IoT Hub file upload (`POST /devices/{id}/files`, `POST
/// /devices/{id}/files/notifications`) and the blob store (`PUT
/// /{container}/{blobName}`) on one server, so `hostName` is this server's
/// `127.0.0.1:{port}`. Records blobs and notifications; authorization is
/// left to the test (see [`Server::requests`]).
pub struct UploadHub {
    pub server: Server,
    state: Arc<Mutex<HubState>>,
}

impl UploadHub {
    /// Over plain HTTP.
    pub async fn start() -> UploadHub {
        UploadHub::with(None).await
    }

    /// Over HTTPS with `cert`.
    pub async fn start_tls(cert: &Issued) -> UploadHub {
        UploadHub::with(Some(cert)).await
    }

    async fn with(cert: Option<&Issued>) -> UploadHub {
        let state = Arc::new(Mutex::new(HubState::default()));
        let host = Arc::new(Mutex::new(String::new()));
        let (s, h) = (state.clone(), host.clone());
        let handler = move |req: Request| {
            let (s, h) = (s.clone(), h.lock().expect("host lock").clone());
            async move { upload_hub(req, &s, &h) }
        };
        let server = match cert {
            Some(c) => Server::start_tls(c, handler).await,
            None => Server::start(handler).await,
        };
        *host.lock().expect("host lock") = server.host_port();
        UploadHub { server, state }
    }

    /// Blobs stored so far.
    pub fn blobs(&self) -> Vec<StoredBlob> {
        self.state.lock().expect("state lock").blobs.clone()
    }

    /// Notifications received so far.
    pub fn notifications(&self) -> Vec<Value> {
        self.state.lock().expect("state lock").notifications.clone()
    }

    /// Makes the blob store refuse PUTs (500).
    pub fn fail_puts(&self, fail: bool) {
        self.state.lock().expect("state lock").fail_puts = fail;
    }
}

fn upload_hub(req: Request, state: &Mutex<HubState>, host: &str) -> Reply {
    let path = req.path().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(4, '/').collect();
    let mut st = state.lock().expect("state lock");
    match (req.method.as_str(), parts.as_slice()) {
        ("POST", ["devices", device, "files"]) => {
            if !req.target.contains("api-version=") {
                return Reply::new(400, "api-version missing");
            }
            let Ok(asked) = serde_json::from_slice::<Value>(&req.body) else {
                return Reply::new(400, "not JSON");
            };
            let name = asked["blobName"].as_str().unwrap_or_default();
            let n = st.notifications.len() + st.blobs.len();
            let slot = json!({
                "correlationId": format!("corr-{n}-{name}"),
                "hostName": host,
                "containerName": UPLOAD_CONTAINER,
                "blobName": format!("{device}/{name}"),
                "sasToken": "?sv=2021-08-06&sr=b&sp=w&sig=test%2Bsig",
            });
            Reply::typed(200, "application/json", slot.to_string())
        }
        ("POST", ["devices", _, "files", "notifications"]) => {
            match serde_json::from_slice::<Value>(&req.body) {
                Ok(v) => {
                    st.notifications.push(v);
                    Reply::new(204, "")
                }
                Err(_) => Reply::new(400, "not JSON"),
            }
        }
        ("PUT", [container, ..]) if *container == UPLOAD_CONTAINER => {
            if st.fail_puts {
                return Reply::new(500, "storage unavailable");
            }
            if req.header("x-ms-blob-type") != Some("BlockBlob") {
                return Reply::new(400, "x-ms-blob-type missing");
            }
            st.blobs.push(StoredBlob {
                path: path.trim_start_matches('/').to_string(),
                target: req.target.clone(),
                content_type: req.header("content-type").map(str::to_string),
                blob_type: req.header("x-ms-blob-type").map(str::to_string),
                body: req.body,
            });
            Reply::new(201, "")
        }
        _ => Reply::new(404, "no such route"),
    }
}

/// A map from path to bytes, served over GET: a blob source for `blobUrl`
/// downloads. Requests for other paths get 404.
pub async fn blob_source(cert: &Issued, blobs: HashMap<String, Vec<u8>>) -> Server {
    let blobs = Arc::new(blobs);
    Server::start_tls(cert, move |req| {
        let blobs = blobs.clone();
        async move {
            match blobs.get(req.path()) {
                Some(bytes) if req.method == "GET" => {
                    Reply::typed(200, "application/octet-stream", bytes.clone())
                }
                _ => Reply::new(404, "BlobNotFound"),
            }
        }
    })
    .await
}
