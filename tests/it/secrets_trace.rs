//! No secret reaches the output at trace level (RUST_LOG=trace, so
//! rumqttc's, rustls' and hyper's own records included) across a
//! successful SAS connect, a reconnect, a token renewal and an auth error:
//! neither the device key, nor a token, nor its signature (raw or
//! URL-encoded), nor the broker's password, nor the admin token.
//!
//! The daemon binary runs the connect, reconnect, admin calls and the auth
//! error; renewal needs a token life of seconds, which only an injected
//! clock gives, so it runs the daemon in-process (`tether::app::Daemon`)
//! in a child copy of this test binary that logs through `tether::logging`
//! exactly as the daemon binary does.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tether::app::Daemon;
use tether_protocol::time::unix_seconds;
use tether_protocol::{iothub, sas};
use tether_testkit::{Broker, BrokerOptions, ManualClock};
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_tether");
/// base64 of "device-key-for-tests-0123456789!"
const KEY_B64: &str = "ZGV2aWNlLWtleS1mb3ItdGVzdHMtMDEyMzQ1Njc4OSE=";
const KEY: &[u8] = b"device-key-for-tests-0123456789!";
const ADMIN_TOKEN: &str = "admin-tok-7Hq2-never-logged";
const T0: u64 = 1_900_000_000;
const CHILD: &str = "TETHER_SECRETS_CHILD";
/// [`renewal_child`]'s name in the test binary, for `--exact`.
const CHILD_TEST: &str = "secrets_trace::renewal_child";
/// A record rumqttc logs itself (through the `log` bridge) on every
/// connect: proof that its output is part of what is checked.
const RUMQTTC_RECORD: &str = "Subscribe. Topics";

/// What the daemon names itself in its IoT Hub username.
const DEVICE_CLIENT_TYPE: &str = concat!("tether/", env!("CARGO_PKG_VERSION"));

fn username() -> String {
    iothub::username("localhost", "dev1", DEVICE_CLIENT_TYPE)
}

fn token(key: &[u8], se: u64) -> String {
    sas::sign(key, &sas::resource_uri("localhost", "dev1", None), se)
        .expose()
        .to_string()
}

/// A token and the parts of it that must not show: the whole string, its
/// signature URL-encoded and raw.
fn token_secrets(token: &str) -> Vec<String> {
    let sig = token
        .split("&sig=")
        .nth(1)
        .and_then(|s| s.split('&').next())
        .expect("a token has a signature");
    let raw = percent_encoding::percent_decode_str(sig)
        .decode_utf8()
        .expect("the signature is base64")
        .into_owned();
    vec![token.to_string(), sig.to_string(), raw]
}

/// Every secret of a run with `tokens` presented: key, tokens, signatures.
fn secrets(tokens: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut all = vec![
        KEY_B64.to_string(),
        String::from_utf8_lossy(KEY).into_owned(),
        ADMIN_TOKEN.to_string(),
        "SharedAccessSignature sr=".to_string(),
        "sig=".to_string(),
    ];
    for t in tokens {
        all.extend(token_secrets(&t));
    }
    all
}

fn assert_clean(output: &str, secrets: &[String]) {
    for s in secrets {
        assert!(!output.contains(s.as_str()), "{s:?} leaked into the output");
    }
}

fn config(broker: &Broker, auth: &str, admin: u16) -> String {
    format!(
        "[hub]\nconnection_string = \"HostName=localhost;DeviceId=dev1;{auth}\"\n\
         port = {port}\nca_file = \"{ca}\"\nsas_ttl = \"1h\"\nkeep_alive = \"5s\"\n\
         connect_timeout = \"2s\"\n[store]\npath = \"state\"\n\
         [admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"{ADMIN_TOKEN}\"\n\
         [log]\nlevel = \"trace\"\n",
        port = broker.tls_port(),
        ca = broker.ca_pem_path().display(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Polls `/healthz` until the hub reports `connects` connections and is
/// connected.
fn wait_connects(port: u16, connects: u32) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let want = format!("\"connects\":{connects},");
    loop {
        let answer = admin_get(port, "/healthz", "");
        if answer.contains(&want) && answer.contains("\"state\":\"connected\"") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no connection #{connects}: {answer}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One admin API request with `token`; the whole answer.
fn admin_get(port: u16, path: &str, token: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conn = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("admin API not listening: {e}"),
        }
    };
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut answer = String::new();
    conn.read_to_string(&mut answer).expect("read the answer");
    answer
}

fn wait_logged(broker: &Broker, mark: tether_testkit::LogMark, needle: &str) {
    assert!(
        broker.wait_for_log_since(mark, needle, Duration::from_secs(15)),
        "the broker never logged {needle:?}:\n{}",
        broker.log()
    );
}

/// The daemon at trace level: connects with a pre-made SAS token the
/// broker's password file holds, reconnects after a broker restart,
/// answers admin calls with and without the token, then (reloaded to a
/// device key whose tokens the broker does not know) is refused.
#[test]
fn the_daemon_logs_no_secret_through_connect_reconnect_and_refusal() {
    let premade = token(KEY, 4_102_444_800);
    let mut broker = Broker::start(BrokerOptions::new().user(&username(), &premade));
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("tether.toml");
    let admin = free_port();
    let started = unix_seconds(std::time::SystemTime::now());
    std::fs::write(
        &cfg,
        config(&broker, &format!("SharedAccessSignature={premade}"), admin),
    )
    .expect("write the config");
    let out = std::fs::File::create(dir.path().join("out.log")).expect("log file");
    let mut child = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&cfg)
        .env("RUST_LOG", "trace")
        .stdout(out.try_clone().expect("log file"))
        .stderr(out)
        .spawn()
        .expect("start tether");
    wait_connects(admin, 1);
    broker.restart();
    wait_connects(admin, 2);

    let status = |a: String| a.lines().next().unwrap_or_default().to_string();
    assert!(status(admin_get(admin, "/v1/outbox/stats", ADMIN_TOKEN)).contains(" 200"));
    assert!(status(admin_get(admin, "/v1/outbox/stats", "wrong-token")).contains(" 401"));

    let mark = broker.log_mark();
    std::fs::write(
        &cfg,
        config(&broker, &format!("SharedAccessKey={KEY_B64}"), admin),
    )
    .expect("rewrite the config");
    signal(child.id(), "-HUP");
    wait_logged(&broker, mark, "not authorised");
    std::thread::sleep(Duration::from_secs(1));
    signal(child.id(), "-TERM");
    let status = child.wait().expect("tether exits");
    let ended = unix_seconds(std::time::SystemTime::now());
    let output = std::fs::read_to_string(dir.path().join("out.log")).expect("read the output");
    assert!(status.success(), "{output}");
    assert!(output.contains("TRACE"), "not at trace level:\n{output}");
    assert!(
        output.contains(RUMQTTC_RECORD),
        "no rumqttc output:\n{output}"
    );
    assert!(output.contains("refused the credentials"), "{output}");
    // Every token the key could have minted during the run.
    let minted = (started..=ended + 1).map(|t| token(KEY, t + 3600));
    assert_clean(&output, &secrets(minted.chain([premade])));
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// Runs [`renewal_child`] in a child process at trace level and checks its
/// output: connect, renewals by reconnecting, and a refused renewal.
#[test]
fn token_renewal_logs_no_secret() {
    let output = tether_testkit::child::run_at_trace(CHILD_TEST, CHILD);
    assert!(
        output.contains(RUMQTTC_RECORD),
        "no rumqttc output:\n{output}"
    );
    assert!(
        output.contains("the SAS token is due for renewal")
            && output.contains("reconnecting with fresh credentials"),
        "{output}"
    );
    assert!(output.contains("refused the credentials"), "{output}");
    let minted = (T0..=T0 + 400).map(|se| token(KEY, se));
    let wrong = token(b"another key", T0 + 204);
    assert_clean(&output, &secrets(minted.chain([wrong])));
}

/// `/healthz`'s `hub` part, once the admin API answers.
async fn hub_health(admin: u16) -> Option<serde_json::Value> {
    let answer = reqwest::get(format!("http://127.0.0.1:{admin}/healthz"))
        .await
        .ok()?;
    let mut health: serde_json::Value = answer.json().await.ok()?;
    Some(health["hub"].take())
}

/// Polls `/healthz` until the hub's part satisfies `f` (the admin API is
/// the daemon's own report of its session).
async fn hub_until(
    admin: u16,
    what: &str,
    f: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        if let Some(hub) = hub_health(admin).await {
            if f(&hub) {
                return hub;
            }
            last = Some(hub);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the hub never reached {what}: {last:?}");
}

/// The child of [`token_renewal_logs_no_secret`]: the daemon in this
/// process with tether's logging at trace level, a SAS session with
/// 4-second tokens on an injected clock, two renewals the broker accepts
/// and one it refuses; `/healthz` tells how far it got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by token_renewal_logs_no_secret in a child process"]
async fn renewal_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    tether::logging::init("trace", tether::config::LogFormat::Text);
    // The admin API is polled (reqwest, rustls) before the daemon task has
    // run far enough to install the provider itself.
    tether::tls::install_crypto_provider();
    let ttl = 4;
    let broker = Broker::start(BrokerOptions::new().user(&username(), &token(KEY, T0 + ttl)));
    let clock = ManualClock::at_unix(T0);
    let state = tempfile::tempdir().expect("temp dir");
    let admin = free_port();
    let text = format!(
        "[hub]\nconnection_string = \"HostName=localhost;DeviceId=dev1;SharedAccessKey={KEY_B64}\"\n\
         port = {}\nca_file = \"{}\"\nkeep_alive = \"5s\"\nconnect_timeout = \"5s\"\n\
         [store]\npath = \"{}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"{ADMIN_TOKEN}\"\n",
        broker.tls_port(),
        broker.ca_pem_path().display(),
        state.path().display(),
    );
    let mut cfg = tether::config::parse(&text, Path::new(".")).expect("valid test config");
    // The config file insists on at least a minute; the test needs seconds.
    cfg.hub.sas_ttl = Duration::from_secs(ttl);
    let stop = CancellationToken::new();
    let daemon = Daemon::new(state.path().join("tether.toml"), Arc::new(clock.clone()));
    let run = tokio::spawn(daemon.run_until(cfg, stop.clone()));
    let connected = |hub: &serde_json::Value| hub["state"] == "connected";
    hub_until(admin, "connected", connected).await;
    for (n, at) in [(2, 100), (3, 200)] {
        // The jump makes the renewal due; its first attempt meets the old
        // password (an auth error), the next one the reloaded file.
        let dropped = hub_until(admin, "connected", connected).await["disconnects"].clone();
        clock.set_unix(T0 + at);
        hub_until(admin, "renewal", |h| {
            h["disconnects"].as_u64() > dropped.as_u64()
        })
        .await;
        broker.set_users(&[(&username(), &token(KEY, T0 + at + ttl))]);
        broker.reload();
        hub_until(admin, "renewed", |h| {
            connected(h) && h["connects"].as_u64() >= Some(n)
        })
        .await;
    }
    broker.set_users(&[(&username(), &token(b"another key", T0 + 204))]);
    broker.reload();
    // The refusal's sentence (a `Failure::Auth`); connecting clears it.
    hub_until(admin, "refused", |h| {
        h["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("refused the credentials"))
    })
    .await;
    stop.cancel();
    assert_eq!(run.await.expect("the daemon task"), 0);
}
