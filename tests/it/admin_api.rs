//! The admin listener: `/healthz` follows the hub, `/metrics` exports the
//! session's counters and expiries, `/v1` needs the bearer token, and the
//! unix-socket form works too.

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use tether::admin::{self, metrics::BuildInfo, metrics::HubMetrics, Admin};
use tether::clock::SystemClock;
use tether::config::{AdminListen, Secret};
use tether::hub::{HubStatus, Router};
use tether_testkit::{Broker, BrokerOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

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

/// Health is 503 while the hub is down and 200 once connected; metrics
/// show the connection; `/v1` refuses a missing or wrong token.
#[tokio::test]
async fn health_metrics_and_token_over_tcp() {
    let broker = Broker::start(BrokerOptions::new().user("dev1", "pw"));
    let text = format!(
        "[hub]\nurl = \"mqtts://localhost:{}\"\ndevice_id = \"dev1\"\nusername = \"dev1\"\n\
         password = \"pw\"\nca_file = \"{}\"\nkeep_alive = \"5s\"\n",
        broker.tls_port(),
        broker.ca_pem_path().display()
    );
    let cfg = tether::config::parse(&text, broker.dir()).unwrap();
    let (hub, stop) = tether_testkit::hub::start(&cfg, Router::new(), Arc::new(SystemClock));
    let state = Arc::new(Admin {
        hub: hub.handle.watch_status(),
        metrics: vec![
            Arc::new(BuildInfo),
            HubMetrics::new(hub.handle.watch_status(), Some(2_000_000_000)),
        ],
        checks: vec![],
        token: Some(Secret::new("t0ken")),
    });
    let v1 = axum::Router::new().route("/ping", get(|| async { "pong" }));
    let listen = AdminListen::Tcp("127.0.0.1:0".parse().unwrap());
    let bound = admin::bind(&listen).await.unwrap();
    let admin::Bound::Tcp(l) = &bound else {
        unreachable!()
    };
    let addr = l.local_addr().unwrap();
    let server = admin::serve(bound, admin::app(state, v1), stop.clone());
    let connect = || tokio::net::TcpStream::connect(addr);

    let mut status = hub.handle.watch_status();
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(HubStatus::is_subscribed),
    )
    .await
    .unwrap()
    .unwrap();
    let (code, body) = http(connect().await.unwrap(), &get_req("/healthz", None)).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""state":"connected""#), "{body}");
    assert!(body.contains(r#""subscribed":true"#), "{body}");

    let (code, body) = http(connect().await.unwrap(), &get_req("/metrics", None)).await;
    assert_eq!(code, 200);
    assert!(body.contains("tether_hub_connected 1"), "{body}");
    assert!(
        body.contains("tether_hub_certificate_expiry_timestamp_seconds 2000000000"),
        "{body}"
    );
    assert!(body.contains("tether_build_info{version="), "{body}");

    let (code, _) = http(connect().await.unwrap(), &get_req("/v1/ping", None)).await;
    assert_eq!(code, 401);
    let (code, _) = http(connect().await.unwrap(), &get_req("/v1/ping", Some("nope"))).await;
    assert_eq!(code, 401);
    let (code, body) = http(
        connect().await.unwrap(),
        &get_req("/v1/ping", Some("t0ken")),
    )
    .await;
    assert_eq!(code, 200);
    assert!(body.ends_with("pong"), "{body}");

    drop(broker);
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| !s.is_connected()),
    )
    .await
    .unwrap()
    .unwrap();
    let (code, body) = http(connect().await.unwrap(), &get_req("/healthz", None)).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(r#""status":"degraded""#), "{body}");
    stop.cancel();
    server.await.unwrap();
    hub.task.await.unwrap();
}

/// The unix-socket listener replaces a stale socket file left by a killed
/// process and serves the same routes.
#[tokio::test]
async fn unix_socket_listener_replaces_a_stale_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    std::fs::write(&path, "stale").unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(HubStatus::new(std::time::SystemTime::now()));
    let state = Arc::new(Admin {
        hub: rx,
        metrics: vec![Arc::new(BuildInfo)],
        checks: vec![],
        token: None,
    });
    let stop = CancellationToken::new();
    let bound = admin::bind(&AdminListen::Unix(path.clone())).await.unwrap();
    // Owner-only whatever the umask: the socket has no token check.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let server = admin::serve(bound, admin::app(state, axum::Router::new()), stop.clone());
    let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    let (code, body) = http(stream, &get_req("/metrics", None)).await;
    assert_eq!(code, 200);
    assert!(body.contains("tether_build_info"), "{body}");
    stop.cancel();
    server.await.unwrap();
}
