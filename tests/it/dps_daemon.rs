//! The daemon with only `[hub.provisioning]` (no connection string): it
//! starts, shows DPS's throttling in `/healthz` while it registers, then
//! connects to the hub DPS assigned and reports healthy. The same run at
//! trace level, in a child process, logs no secret: neither the device key,
//! nor the DPS or hub SAS tokens, nor their signatures.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tether::app::Daemon;
use tether_protocol::{dps, iothub, sas};
use tether_testkit::dps::{Dps, Reply, Request};
use tether_testkit::{Broker, BrokerOptions, ManualClock};
use tokio_util::sync::CancellationToken;

const T0: u64 = 1_900_000_000;
const SCOPE: &str = "0ne00TEST1";
/// base64 of "device-key-for-tests-0123456789!"
const KEY_B64: &str = "ZGV2aWNlLWtleS1mb3ItdGVzdHMtMDEyMzQ1Njc4OSE=";
const KEY: &[u8] = b"device-key-for-tests-0123456789!";
const ADMIN_TOKEN: &str = "admin-tok-dps-never-logged";
const CHILD: &str = "TETHER_DPS_SECRETS_CHILD";
/// [`dps_child`]'s name in the test binary, for `--exact`.
const CHILD_TEST: &str = "dps_daemon::dps_child";
const WAIT: Duration = Duration::from_secs(30);
/// What the daemon names itself in its IoT Hub username.
const DEVICE_CLIENT_TYPE: &str = concat!("tether/", env!("CARGO_PKG_VERSION"));

fn dps_token() -> String {
    dps::sas_token(KEY, SCOPE, "dev1", T0 + 3600)
        .expose()
        .to_owned()
}

/// The IoT Hub username of `dev1`, naming this tether as the client (also
/// `relay_e2e`'s).
pub(crate) fn hub_username() -> String {
    iothub::username("localhost", "dev1", DEVICE_CLIENT_TYPE)
}

fn hub_token() -> String {
    sas::sign(
        KEY,
        &sas::resource_uri("localhost", "dev1", None),
        T0 + 3600,
    )
    .expose()
    .to_owned()
}

/// 429 first, then 202 and a poll that is assigned.
fn script(requests: &[Request]) -> Reply {
    match (requests.len(), requests.last().map(|r| r.kind)) {
        (1, _) => Reply::error(429, 429_001, "Too many requests", Some(1)),
        (_, Some("register")) => Reply::assigning("op-1", 1),
        _ => Reply::assigned("localhost", "dev1"),
    }
}

/// `/healthz` as JSON.
async fn healthz(admin: u16) -> Option<Value> {
    let answer = reqwest::get(format!("http://127.0.0.1:{admin}/healthz"))
        .await
        .ok()?;
    answer.json().await.ok()
}

/// Polls `/healthz` until `f` holds (the admin API is the daemon's own
/// report of its state).
async fn healthz_until(admin: u16, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        if let Some(h) = healthz(admin).await {
            if f(&h) {
                return h;
            }
            last = Some(h);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/healthz never showed {what}: {last:?}");
}

/// The run both tests share.
async fn scenario() {
    tether::tls::install_crypto_provider();
    let broker = Broker::start(
        BrokerOptions::new()
            .user(&dps::username(SCOPE, "dev1"), &dps_token())
            .user(&hub_username(), &hub_token()),
    );
    let dps = Dps::start(broker.plain_port(), Box::new(script)).await;
    let state = tempfile::tempdir().unwrap();
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let text = format!(
        r#"
        [hub]
        port = {port}
        ca_file = "{ca}"
        keep_alive = "5s"
        connect_timeout = "5s"
        [hub.provisioning]
        id_scope = "{SCOPE}"
        registration_id = "dev1"
        global_endpoint = "localhost"
        port = {port}
        symmetric_key = "{KEY_B64}"
        [store]
        path = "{state}"
        [admin]
        listen = "127.0.0.1:{admin}"
        token = "{ADMIN_TOKEN}"
        "#,
        port = broker.tls_port(),
        ca = broker.ca_pem_path().display(),
        state = state.path().display(),
    );
    let mut cfg = tether::config::parse(&text, broker.dir()).expect("valid config");
    let p = cfg.hub.provisioning.as_mut().expect("provisioning");
    p.retry_base = Duration::from_millis(100);
    p.retry_cap = Duration::from_millis(500);
    let stop = CancellationToken::new();
    let daemon = Daemon::new(
        state.path().join("tether.toml"),
        Arc::new(ManualClock::at_unix(T0)),
    );
    let run = tokio::spawn(daemon.run_until(cfg, stop.clone()));

    let throttled = healthz_until(admin, "DPS's 429", |h| {
        h["components"]["provisioning"]["details"]["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("429"))
    })
    .await;
    assert_eq!(throttled["status"], "degraded");
    assert_eq!(throttled["components"]["provisioning"]["ok"], false);
    let healthy = healthz_until(admin, "connected to the assigned hub", |h| {
        h["status"] == "ok"
    })
    .await;
    let details = &healthy["components"]["provisioning"]["details"];
    assert_eq!(details["state"], "assigned");
    assert_eq!(details["assignedHub"], "localhost");
    assert_eq!(details["deviceId"], "dev1");
    assert_eq!(healthy["hub"]["state"], "connected");
    assert_eq!(dps.requests().len(), 3);
    stop.cancel();
    assert_eq!(run.await.expect("the daemon task"), 0);
}

/// A controller with only `[hub.provisioning]` provisions itself, and
/// `/healthz` says how it goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_with_only_provisioning_registers_connects_and_reports_healthy() {
    scenario().await;
}

/// Runs [`dps_child`] at trace level in a child process and checks its
/// output holds no secret.
#[test]
fn provisioning_logs_no_secret() {
    let output = tether_testkit::child::run_at_trace(CHILD_TEST, CHILD);
    assert!(output.contains("DPS assigned the device"), "{output}");
    assert!(output.contains("DPS is throttling"), "{output}");
    let mut secrets = vec![
        KEY_B64.to_owned(),
        String::from_utf8_lossy(KEY).into_owned(),
        ADMIN_TOKEN.to_owned(),
        "SharedAccessSignature sr=".to_owned(),
        "sig=".to_owned(),
    ];
    for token in [dps_token(), hub_token()] {
        let sig = token
            .split("&sig=")
            .nth(1)
            .and_then(|s| s.split('&').next())
            .expect("a signature")
            .to_owned();
        let raw = percent_encoding::percent_decode_str(&sig)
            .decode_utf8()
            .expect("base64")
            .into_owned();
        secrets.extend([token, sig, raw]);
    }
    for s in &secrets {
        assert!(!output.contains(s.as_str()), "{s:?} leaked into the output");
    }
}

/// The child of [`provisioning_logs_no_secret`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by provisioning_logs_no_secret in a child process"]
async fn dps_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    tether::logging::init("trace", tether::config::LogFormat::Text);
    scenario().await;
}
