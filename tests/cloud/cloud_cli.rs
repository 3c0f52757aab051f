//! `tether-cloud invoke` (the real binary) against a real Mosquitto and
//! scripted devices: the answer on stdout, the outcome in the exit code.

use crate::cloud_support;

use std::sync::Arc;
use std::time::Duration;

use crate::cloud_support::{set_presence, FakeDevice};
use tether_testkit::{Broker, BrokerOptions};

/// Runs `tether-cloud invoke` against `port` with `extra` arguments.
async fn invoke(port: u16, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut args: Vec<String> = [
        "invoke",
        "--broker",
        &format!("mqtt://127.0.0.1:{port}"),
        "--allow-insecure",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tether-cloud"))
            .args(&args)
            .output()
            .unwrap()
    });
    let out = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .unwrap()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// 2xx → 0 with `{"status","payload"}` on stdout; other statuses → 3;
/// not connected → 4; no answer → 5; bad JSON payload → 64.
#[tokio::test]
async fn invoke_prints_the_answer_and_its_exit_code_says_how_it_went() {
    let broker = Broker::start(BrokerOptions::new());
    let port = broker.plain_port();
    let _ok = FakeDevice::start(
        port,
        "dev1",
        Arc::new(|p: &[u8]| {
            let asked: serde_json::Value = serde_json::from_slice(p).ok()?;
            let status = asked["want"].as_u64().unwrap_or(200) as u16;
            Some((
                status,
                serde_json::json!({"echo": asked}).to_string().into_bytes(),
            ))
        }),
    )
    .await;
    set_presence(port, "ghost", Some(true)).await;

    let (code, out, err) = invoke(
        port,
        &[
            "--device",
            "dev1",
            "--method",
            "reboot",
            "--payload",
            r#"{"delay":5}"#,
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let printed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(printed["status"], 200);
    assert_eq!(printed["payload"]["echo"]["delay"], 5);

    let (code, out, _) = invoke(
        port,
        &[
            "--device",
            "dev1",
            "--method",
            "reboot",
            "--payload",
            r#"{"want":404}"#,
        ],
    )
    .await;
    assert_eq!(code, Some(3));
    assert!(out.contains("404"), "{out}");

    let (code, _, err) = invoke(port, &["--device", "nobody", "--method", "reboot"]).await;
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("not connected"), "{err}");

    let (code, _, err) = invoke(
        port,
        &["--device", "ghost", "--method", "reboot", "--timeout", "1s"],
    )
    .await;
    assert_eq!(code, Some(5), "{err}");

    let (code, _, _) = invoke(
        port,
        &[
            "--device",
            "dev1",
            "--method",
            "reboot",
            "--payload",
            "{not json",
        ],
    )
    .await;
    assert_eq!(code, Some(64));
}

/// An unreachable broker is exit code 6.
#[tokio::test]
async fn invoke_without_a_broker_exits_6() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (code, _, err) = invoke(port, &["--device", "dev1", "--method", "m"]).await;
    assert_eq!(code, Some(6), "{err}");
}

/// `tether-cloud serve --config FILE` (the real binary) answers with the
/// error table, requires its token, and stops cleanly (exit 0) on
/// SIGTERM.
#[tokio::test]
async fn serve_runs_from_a_config_file_and_stops_on_sigterm() {
    let broker = Broker::start(BrokerOptions::new());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokens"), "# API clients\ntok-123\n").unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = dir.path().join("cloud.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\n[broker]\nurl = \"mqtt://127.0.0.1:{}\"\nallow_insecure = true\n[auth]\ntokens_file = \"tokens\"\n[blobs]\ndir = \"blobs\"\n",
            broker.plain_port()
        ),
    )
    .unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tether-cloud"))
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Reap(Some(child));
    tether::tls::install_crypto_provider();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://127.0.0.1:{port}/api/v1/devices/nobody/request");
    let deadline = tokio::time::Instant::now() + cloud_support::WAIT;
    let resp = loop {
        let sent = http
            .get(&url)
            .header("Remote-Query", "/x")
            .bearer_auth("tok-123")
            .send()
            .await;
        match sent {
            Ok(r) => break r,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("serve never listened: {e}"),
        }
    };
    let body = cloud_support::problem(resp, 404).await;
    assert_eq!(body["errorCode"], 1000);
    let unauthorized = http
        .get(&url)
        .header("Remote-Query", "/x")
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    assert!(dir.path().join("blobs/iothub-fileupload").is_dir());

    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.pid().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let mut taken = child.0.take().unwrap();
    let status = tokio::task::spawn_blocking(move || taken.wait().unwrap());
    let status = tokio::time::timeout(Duration::from_secs(10), status)
        .await
        .expect("serve stops within 10 s of SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Kills the child (by its id) if the test ends before it was reaped.
struct Reap(Option<std::process::Child>);

impl Reap {
    fn pid(&self) -> u32 {
        self.0.as_ref().map_or(0, std::process::Child::id)
    }
}

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
