//! Real HTTP servers on `127.0.0.1:0`, plain or TLS, for tests of
//! tether's HTTP clients, on the demo's server ([`Server`]). No mocks:
//! tether talks to these over real sockets.
//!
//! - [`eclypse`], [`eclypse_tls`]: the demo's simulated controller,
//!   with the test password.
//! - [`UploadHub`]: plays IoT Hub file upload and the blob store behind it.
//! - [`blob_source`]: blobs to download.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub use tether_demo::eclypse::Eclypse;
pub use tether_demo::http::{Reply, Request, Server};

use super::certs::Issued;

/// The controller's admin user.
pub const ECLYPSE_USER: &str = tether_demo::eclypse::USER;
/// Its password in the tests.
pub const ECLYPSE_PASSWORD: &str = "eclypse-secret";

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// The simulated controller over plain HTTP; it stops when dropped.
pub async fn eclypse() -> Eclypse {
    Eclypse::start(any_port(), ECLYPSE_PASSWORD, CancellationToken::new())
        .await
        .expect("start the simulated controller on 127.0.0.1")
}

/// The simulated controller over HTTPS with `cert`.
pub async fn eclypse_tls(cert: &Issued) -> Eclypse {
    let stop = CancellationToken::new();
    Eclypse::start_tls(
        any_port(),
        ECLYPSE_PASSWORD,
        &cert.cert_pem,
        &cert.key_pem,
        stop,
    )
    .await
    .expect("start the simulated controller on 127.0.0.1 over TLS")
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
            Some(c) => Server::start_tls(&c.cert_pem, &c.key_pem, handler).await,
            None => Server::start(handler).await,
        }
        .expect("start the upload hub on 127.0.0.1");
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
    Server::start_tls(&cert.cert_pem, &cert.key_pem, move |req| {
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
    .expect("start the blob source on 127.0.0.1")
}
