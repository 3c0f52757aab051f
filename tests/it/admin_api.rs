//! The admin listener of the daemon (in-process): `/healthz` follows the
//! hub, `/metrics` exports the session's counters and the client
//! certificate's expiry, `/v1` needs the bearer token, and the unix-socket
//! form works too.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tether::app::Daemon;
use tether::clock::SystemClock;
use tether::config::AdminListen;
use tether_testkit::{Broker, BrokerOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::outbox_rig::{free_addr, run_daemon};

/// The expiry of the client certificate the daemon is given: 2033-05-18.
const CERT_NOT_AFTER: u64 = 1_999_987_200;

async fn http(stream: impl AsyncReadExt + AsyncWriteExt + Unpin, request: &str) -> (u16, String) {
    let mut stream = stream;
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

fn get_req(path: &str, token: Option<&str>) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: admin\r\n{auth}Connection: close\r\n\r\n")
}

/// Starts the daemon with `text` (its store under `dir`) until `stop`;
/// where its admin API listens.
async fn daemon(
    dir: &Path,
    text: &str,
    stop: &CancellationToken,
) -> (JoinHandle<i32>, AdminListen) {
    let text = format!(
        "{text}[store]\npath = \"{}\"\n",
        dir.join("store").display()
    );
    let path = dir.join("tether.toml");
    std::fs::write(&path, &text).unwrap();
    let cfg = tether::config::parse(&text, dir).expect("valid config");
    run_daemon(Daemon::new(path, Arc::new(SystemClock)), cfg, stop.clone()).await
}

/// A self-signed client certificate expiring at [`CERT_NOT_AFTER`], and
/// its key, written to `dir`; their paths.
fn client_cert(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["dev1".to_string()]).unwrap();
    params.not_after = rcgen::date_time_ymd(2033, 5, 18);
    let cert = params.self_signed(&key).unwrap();
    let (cert_file, key_file) = (dir.join("client.pem"), dir.join("client.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    (cert_file, key_file)
}

/// `/healthz` (status code and body) over TCP at `addr`.
async fn health(addr: std::net::SocketAddr) -> (u16, Value) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (code, text) = http(stream, &get_req("/healthz", None)).await;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Polls `/healthz` until `f` holds for its body.
async fn health_until(addr: std::net::SocketAddr, what: &str, f: impl Fn(&Value) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, h) = health(addr).await;
        if f(&h) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "never {what}: {h}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Health is 503 while the hub is down and 200 once connected; metrics
/// show the connection; `/v1` refuses a missing or wrong token.
#[tokio::test]
async fn health_metrics_and_token_over_tcp() {
    let broker = Broker::start(BrokerOptions::new().user("dev1", "pw"));
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = client_cert(dir.path());
    let text = format!(
        "[hub]\nurl = \"mqtts://localhost:{}\"\ndevice_id = \"dev1\"\nusername = \"dev1\"\n\
         password = \"pw\"\nca_file = \"{}\"\nkeep_alive = \"5s\"\n\
         client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"t0ken-t0ken-t0ken\"\n",
        broker.tls_port(),
        broker.ca_pem_path().display(),
        cert_file.display(),
        key_file.display(),
    );
    let stop = CancellationToken::new();
    let (task, at) = daemon(dir.path(), &text, &stop).await;
    let AdminListen::Tcp(addr) = at else {
        panic!("listening on TCP, not {at:?}")
    };
    let connect = || tokio::net::TcpStream::connect(addr);

    health_until(addr, "subscribed", |h| h["hub"]["subscribed"] == true).await;
    let (code, body) = http(connect().await.unwrap(), &get_req("/healthz", None)).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""state":"connected""#), "{body}");
    assert!(body.contains(r#""subscribed":true"#), "{body}");

    let (code, body) = http(connect().await.unwrap(), &get_req("/metrics", None)).await;
    assert_eq!(code, 200);
    assert!(body.contains("tether_hub_connected 1"), "{body}");
    assert!(
        body.contains(&format!(
            "tether_hub_certificate_expiry_timestamp_seconds {CERT_NOT_AFTER}"
        )),
        "{body}"
    );
    assert!(body.contains("tether_build_info{version="), "{body}");

    let stats = "/v1/outbox/stats";
    let (code, _) = http(connect().await.unwrap(), &get_req(stats, None)).await;
    assert_eq!(code, 401);
    let (code, _) = http(connect().await.unwrap(), &get_req(stats, Some("nope"))).await;
    assert_eq!(code, 401);
    let (code, body) = http(
        connect().await.unwrap(),
        &get_req(stats, Some("t0ken-t0ken-t0ken")),
    )
    .await;
    assert_eq!(code, 200);
    assert!(body.contains(r#""sinks":[{"name":"hub""#), "{body}");

    drop(broker);
    health_until(addr, "disconnected", |h| {
        h["hub"]["state"].as_str().is_some_and(|s| s != "connected")
    })
    .await;
    let (code, body) = http(connect().await.unwrap(), &get_req("/healthz", None)).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(r#""status":"degraded""#), "{body}");
    stop.cancel();
    assert_eq!(task.await.unwrap(), 0);
}

/// The unix-socket listener replaces a stale socket file left by a killed
/// process and serves the same routes.
#[tokio::test]
async fn unix_socket_listener_replaces_a_stale_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    std::fs::write(&path, "stale").unwrap();
    let text = format!(
        "[hub]\nurl = \"mqtt://127.0.0.1:{}\"\ndevice_id = \"dev1\"\nallow_insecure = true\n\
         [admin]\nlisten = \"unix:{}\"\n",
        free_addr().port(),
        path.display()
    );
    let stop = CancellationToken::new();
    let (task, at) = daemon(dir.path(), &text, &stop).await;
    assert_eq!(at, AdminListen::Unix(path.clone()));
    // Owner-only whatever the umask: the socket has no token check.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    let (code, body) = http(stream, &get_req("/metrics", None)).await;
    assert_eq!(code, 200);
    assert!(body.contains("tether_build_info"), "{body}");
    stop.cancel();
    assert_eq!(task.await.unwrap(), 0);
}
