//! `tether-cloud serve` in front of a real tether: a real Mosquitto
//! (TLS, password file), the daemon (`tether::app::Daemon`, in the test
//! process) in plain-broker mode, the ECLYPSE stand-in as controller, and
//! `serve`'s own upload endpoint as the relay's `relay.upload_url`. HTTP
//! calls go through `serve` to the controller and back.

use std::sync::Arc;
use std::time::Duration;

use crate::cloud_support::{problem, Serve, WAIT};
use tether::app::Daemon;
use tether::clock::SystemClock;
use tether::config::Secret;
use tether_cloud::{BrokerConfig, DeviceAuth};
use tether_testkit::http::{eclypse, Eclypse, ECLYPSE_PASSWORD, ECLYPSE_USER};
use tether_testkit::{Broker, BrokerOptions};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const DEVICE_PASSWORD: &str = "dev1-secret";
const CLOUD_PASSWORD: &str = "cloud-secret";

struct Rig {
    broker: Broker,
    controller: Eclypse,
    serve: Serve,
    /// The running daemon (its exit code) and what stops it.
    tether: Option<(JoinHandle<i32>, CancellationToken)>,
    _dir: tempfile::TempDir,
}

/// Broker with users `dev1` and `cloud`; `serve` on its TLS listener with
/// device auth checked against the broker; tether `dev1` relaying to the
/// controller and uploading answers to `serve`.
async fn rig() -> Rig {
    let broker = Broker::start(
        BrokerOptions::new()
            .user("dev1", DEVICE_PASSWORD)
            .user("cloud", CLOUD_PASSWORD),
    );
    let controller = eclypse().await;
    let mut cloud_broker = BrokerConfig::new(format!("mqtts://localhost:{}", broker.tls_port()));
    cloud_broker.username = Some("cloud".into());
    cloud_broker.password = Some(Secret::new(CLOUD_PASSWORD));
    cloud_broker.ca_file = Some(broker.ca_pem_path());
    let serve = Serve::start(cloud_broker, |c| c.device_auth = DeviceAuth::Broker).await;
    assert!(
        serve.handle.broker_ready(WAIT).await,
        "serve reached the broker over TLS"
    );

    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
        [hub]
        url = "mqtts://localhost:{port}"
        device_id = "dev1"
        username = "dev1"
        password = "{DEVICE_PASSWORD}"
        ca_file = "{ca}"
        keep_alive = "5s"
        connect_timeout = "5s"

        [controller]
        base_url = "{base}"
        username = "{ECLYPSE_USER}"
        password = "{ECLYPSE_PASSWORD}"

        [relay]
        upload_url = "{upload}"

        [store]
        path = "state"
        "#,
        port = broker.tls_port(),
        ca = broker.ca_pem_path().display(),
        base = controller.base_url(),
        upload = serve.handle.public_url(),
    );
    let cfg = tether::config::parse(&text, dir.path()).expect("valid config");
    let stop = CancellationToken::new();
    let daemon = Daemon::new(dir.path().join("tether.toml"), Arc::new(SystemClock));
    let run = tokio::spawn(daemon.run_until(cfg, stop.clone()));
    // tether subscribes before it announces itself online, so once serve
    // sees it online its calls are delivered.
    serve.wait_online("dev1").await;
    Rig {
        broker,
        controller,
        serve,
        tether: Some((run, stop)),
        _dir: dir,
    }
}

/// A GET goes through serve, the broker, tether and the controller and
/// back: status, body and Content-Type pass, the controller's other
/// headers do not; a POST body arrives at the controller as sent.
#[tokio::test]
async fn get_and_post_round_trip_through_a_real_tether() {
    let rig = rig().await;
    let resp = rig.serve.get("dev1", "/api/rest/v1/info").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/json;charset=UTF-8"
    );
    assert!(
        resp.headers().get("set-cookie").is_none(),
        "controller headers leaked"
    );
    assert_eq!(resp.text().await.unwrap(), r#"{"apiRevision":"8.0"}"#);

    let resp = rig
        .serve
        .http
        .post(rig.serve.url("dev1", "responseTimeout=10"))
        .header("Remote-Query", "/api/rest/v1/some/resource?x=1")
        .header("Content-Type", "application/json")
        .body(r#"{"value":21.5}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), r#"{"value":21.5}"#);
    let seen = rig.controller.requests();
    let post = seen
        .iter()
        .find(|r| r.method == "POST")
        .expect("POST reached the controller");
    assert_eq!(post.target, "/api/rest/v1/some/resource?x=1");
    assert_eq!(post.body, br#"{"value":21.5}"#);

    let resp = rig.serve.get("dev1", "/api/rest/v1/nothing-here").await;
    assert_eq!(
        resp.status(),
        404,
        "the controller's own status passes through"
    );
    assert_eq!(resp.text().await.unwrap(), "Not found");
    stop(rig).await;
}

/// Large and binary answers travel through the blob path: tether uploads
/// them to serve's upload endpoint (Basic auth checked against the
/// broker) and serve streams them back. A request body over the inline
/// limit goes the other way: serve stores it, tether downloads it.
#[tokio::test]
async fn large_and_binary_bodies_travel_through_the_blob_path() {
    let rig = rig().await;
    let resp = rig.serve.get("dev1", "/binary").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    assert_eq!(
        resp.bytes().await.unwrap().to_vec(),
        (0..=255u8).collect::<Vec<_>>()
    );

    let resp = rig.serve.get("dev1", "/backup").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-disposition"],
        "attachment; filename=\"backup.zip\""
    );
    assert_eq!(
        resp.bytes().await.unwrap().as_ref(),
        b"PK\x03\x04\xff\xfe binary zip"
    );

    let resp = rig.serve.get("dev1", "/size/300000").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.bytes().await.unwrap().len(),
        300_000,
        "over the 128 KiB method limit"
    );

    let big: Vec<u8> = (0..40_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let resp = rig
        .serve
        .http
        .put(rig.serve.url("dev1", ""))
        .header("Remote-Query", "/echo/upload")
        .header("Content-Type", "text/plain")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), big);
    let put = rig
        .controller
        .requests()
        .into_iter()
        .find(|r| r.method == "PUT")
        .unwrap();
    assert_eq!(
        put.body, big,
        "the controller got the body through the request blob"
    );

    // Form bodies go through a blob whatever their size (§1 step 2).
    let form = "a=1&b=2";
    let resp = rig
        .serve
        .http
        .post(rig.serve.url("dev1", ""))
        .header("Remote-Query", "/echo/form")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), form);

    let blobs = rig.serve.dir.path().join("blobs");
    assert!(
        blobs
            .join("iothub-fileupload/dev1/RestApi")
            .read_dir()
            .unwrap()
            .count()
            >= 3
    );
    assert_eq!(
        blobs
            .join("cloud-relay-fileupload/dev1/RestApi")
            .read_dir()
            .unwrap()
            .count(),
        2,
        "the large PUT and the form POST"
    );
    stop(rig).await;
}

/// Blob URLs need their signature, and the upload endpoint the device's
/// broker credentials.
#[tokio::test]
async fn blobs_and_uploads_refuse_strangers() {
    let rig = rig().await;
    let base = rig.serve.handle.public_url();
    let http = &rig.serve.http;
    let unsigned = http
        .get(format!("{base}/iothub-fileupload/dev1/RestApi/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 403);
    let slot = |auth: Option<(&str, &str)>| {
        let mut req = http
            .post(format!("{base}/devices/dev1/files?api-version=2021-04-12"))
            .json(&serde_json::json!({"blobName": "RestApi/x"}));
        if let Some((u, p)) = auth {
            req = req.basic_auth(u, Some(p));
        }
        req.send()
    };
    assert_eq!(slot(None).await.unwrap().status(), 401);
    assert_eq!(slot(Some(("dev1", "wrong"))).await.unwrap().status(), 401);
    assert_eq!(
        slot(Some(("cloud", CLOUD_PASSWORD)))
            .await
            .unwrap()
            .status(),
        401,
        "not dev1"
    );
    let ok = slot(Some(("dev1", DEVICE_PASSWORD))).await.unwrap();
    assert_eq!(ok.status(), 200);
    let slot: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(slot["blobName"], "dev1/RestApi/x");
    assert_eq!(slot["containerName"], "iothub-fileupload");
    stop(rig).await;
}

/// When tether stops cleanly its status goes offline and serve answers
/// 1000/404 at once.
#[tokio::test]
async fn a_stopped_tether_is_not_connected_at_once() {
    let mut rig = rig().await;
    stop_tether(rig.tether.take()).await;
    let deadline = Instant::now() + WAIT;
    while rig.serve.handle.device_online("dev1") != Some(false) {
        assert!(Instant::now() < deadline, "offline status never seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let body = problem(rig.serve.get("dev1", "/api/rest/v1/info").await, 404).await;
    assert_eq!(body["errorCode"], 1000);
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(rig.broker);
}

/// `tether-cloud request` (the real binary) through the real relay.
#[tokio::test]
async fn the_request_command_reaches_the_controller() {
    let rig = rig().await;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, CLOUD_PASSWORD).unwrap();
    let args: Vec<String> = [
        "request",
        "--broker",
        &format!("mqtts://localhost:{}", rig.broker.tls_port()),
        "--username",
        "cloud",
        "--password-file",
        &pw.display().to_string(),
        "--ca-file",
        &rig.broker.ca_pem_path().display().to_string(),
        "--device",
        "dev1",
        "--timeout",
        "10s",
        "GET",
        "/api/rest/v1/info",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tether-cloud"))
            .args(&args)
            .output()
            .unwrap()
    });
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        r#"{"apiRevision":"8.0"}"#
    );
    assert!(stderr.contains("HTTP 200"), "{stderr}");
    stop(rig).await;
}

async fn stop(mut rig: Rig) {
    stop_tether(rig.tether.take()).await;
}

/// Stops the daemon and checks it exited cleanly.
async fn stop_tether(tether: Option<(JoinHandle<i32>, CancellationToken)>) {
    if let Some((run, stop)) = tether {
        stop.cancel();
        let code = tokio::time::timeout(Duration::from_secs(15), run)
            .await
            .expect("the daemon stops within its grace period")
            .expect("the daemon task");
        assert_eq!(code, 0, "the daemon's exit code");
    }
}
