//! The `tether` binary as an operator and systemd see it: exit codes,
//! `check-config`, `sas-token`, readiness and watchdog notifications,
//! SIGHUP reloads, SIGTERM shutdown, and no secrets in trace-level logs.

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tether_testkit::{Broker, BrokerOptions};

const BIN: &str = env!("CARGO_BIN_EXE_tether");
const PASSWORD: &str = "pw-Zq81-never-logged";

fn tether(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run tether")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn broker_config(broker: &Broker, password: &str) -> String {
    format!(
        r#"
[hub]
url = "mqtts://localhost:{port}"
device_id = "dev1"
username = "dev1"
password = "{password}"
ca_file = "{ca}"
keep_alive = "5s"

[store]
# Relative to the config file: each test daemon has its own store.
path = "state"

[log]
level = "trace"
"#,
        port = broker.tls_port(),
        ca = broker.ca_pem_path().display(),
    )
}

/// `--version` prints the crate version.
#[test]
fn version_prints_the_version() {
    let out = tether(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("tether {}", env!("CARGO_PKG_VERSION"))
    );
}

/// A TOML syntax error is reported with its line and column, exit 64.
#[test]
fn check_config_reports_syntax_errors_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "bad.toml",
        "[hub]\nurl = \"mqtts://h:8883\"\ndevice_id = \n",
    );
    let out = tether(&["check-config", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("column"), "{err}");
}

/// A semantic error names the key; secrets never appear in the output.
#[test]
fn check_config_names_the_key_and_hides_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "t.toml",
        "[hub]\nconnection_string = \"HostName=h.net;SharedAccessKey=c2VjcmV0LWtleQ==\"\n",
    );
    let out = tether(&["check-config", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("hub.connection_string: missing DeviceId"),
        "{err}"
    );
    assert!(!err.contains("c2VjcmV0LWtleQ"), "{err}");

    let good = write(
        dir.path(),
        "good.toml",
        "[hub]\nconnection_string = \"HostName=h.net;DeviceId=d1;SharedAccessKey=c2VjcmV0LWtleQ==\"\n",
    );
    let out = tether(&["check-config", "-c", good.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("d1"), "{text}");
    assert!(!text.contains("c2VjcmV0LWtleQ"), "{text}");
}

/// `sas-token` prints the spec's vector V1 byte for byte.
#[test]
fn sas_token_matches_the_published_vector() {
    let out = tether(&[
        "sas-token",
        "--connection-string",
        "HostName=pontifex.azure-devices.net;DeviceId=FirstDevice;SharedAccessKey=O+H9VTcdJP0TQkl7bh4nVG0OJNrEataMpuWB54D0VEc=",
        "--expiry",
        "1593353305",
    ]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "SharedAccessSignature sr=pontifex.azure-devices.net%2Fdevices%2FFirstDevice\
         &sig=CKYVArtLm72J2UNWLb4V3XqPc679Ig3LX83G3nPExUc%3D&se=1593353305"
    );
}

/// An invalid config at start exits 64 so systemd does not restart-loop.
#[test]
fn run_with_an_invalid_config_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "t.toml",
        "[hub]\nurl = \"ftp://x\"\ndevice_id = \"d\"\n",
    );
    let out = tether(&["run", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hub.url"));
}

/// A config whose store path is a file, followed by `extra`: the outbox
/// cannot open, so tether logs an error and exits.
fn unopenable_store_config(dir: &Path, extra: &str) -> PathBuf {
    write(dir, "not-a-directory", "");
    let text = "[hub]\nurl = \"mqtt://127.0.0.1:1\"\nallow_insecure = true\ndevice_id = \"d\"\n\n[store]\npath = \"not-a-directory\"\n";
    write(dir, "t.toml", &format!("{text}{extra}"))
}

/// Runs the daemon on [`unopenable_store_config`] with `extra`, and
/// `RUST_LOG` set to `rust_log` (removed for `None`); its stderr, after
/// checking that it exited with an error.
fn failed_start_stderr(extra: &str, rust_log: Option<&str>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = unopenable_store_config(dir.path(), extra);
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "-c", config.to_str().unwrap()]);
    match rust_log {
        Some(filter) => cmd.env("RUST_LOG", filter),
        None => cmd.env_remove("RUST_LOG"),
    };
    let out = cmd.output().expect("run tether");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{err}");
    err
}

/// A log that is not a terminal gets no colour codes: tether's stderr
/// redirected to a file (as `tether demo > out.txt 2>&1` does) holds the
/// level and the message as plain text.
#[test]
fn logs_to_a_file_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let config = unopenable_store_config(dir.path(), "");
    let log_path = dir.path().join("stderr.log");
    let status = Command::new(BIN)
        .args(["run", "-c", config.to_str().unwrap()])
        .env_remove("JOURNAL_STREAM")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .status()
        .expect("run tether");
    let log = std::fs::read(&log_path).unwrap();
    let text = String::from_utf8_lossy(&log);
    assert!(!status.success(), "{text}");
    assert!(text.contains("ERROR"), "no error line logged: {text}");
    assert!(!log.contains(&0x1b), "escape codes in the log: {text:?}");
}

struct Running {
    child: Child,
    /// stderr, read as it comes: at trace level a pipe left unread fills
    /// up and blocks the daemon's logging (and so its shutdown).
    err: std::thread::JoinHandle<String>,
    notify: UnixDatagram,
    _dir: tempfile::TempDir,
    config: PathBuf,
}

impl Running {
    fn start(config_text: &str) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let config = write(dir.path(), "tether.toml", config_text);
        let sock = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&sock).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        // systemd sets WATCHDOG_PID to the service's pid: exec keeps the
        // shell's pid, so `$$` is tether's.
        let mut child = Command::new("sh")
            .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\"", BIN, "run", "-c"])
            .arg(&config)
            .env("NOTIFY_SOCKET", &sock)
            .env("WATCHDOG_USEC", "1000000")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut pipe = child.stderr.take().unwrap();
        let err = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        });
        Running {
            child,
            err,
            notify,
            _dir: dir,
            config,
        }
    }

    /// Waits for a notification containing `needle`.
    fn expect_notify(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.notify.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if msg.contains(needle) {
                    return msg;
                }
            }
        }
        panic!("no {needle} notification within 10 s");
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// Sends SIGTERM and returns (exit code, stderr).
    fn stop(mut self) -> (Option<i32>, String) {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "tether did not stop within 15 s");
            std::thread::sleep(Duration::from_millis(50));
        };
        (status.code(), self.err.join().unwrap())
    }
}

/// READY=1 comes once config and state are up, STATUS= follows the hub,
/// the watchdog is fed; SIGHUP with a broken file keeps the running config,
/// SIGHUP with a new password reconnects; SIGTERM exits 0 promptly. At
/// trace level the password never appears in the logs.
#[test]
fn the_daemon_notifies_systemd_reloads_and_stops_cleanly() {
    let broker = Broker::start(BrokerOptions::new().user("dev1", PASSWORD));
    let run = Running::start(&broker_config(&broker, PASSWORD));
    run.expect_notify("READY=1");
    run.expect_notify("STATUS=hub connected");
    run.expect_notify("WATCHDOG=1");

    std::fs::write(&run.config, "[hub\nbroken").unwrap();
    run.signal("-HUP");
    run.expect_notify("RELOADING=1");
    run.expect_notify("READY=1");
    run.expect_notify("WATCHDOG=1");

    let new_password = "pw-second-9f2c";
    broker.set_users(&[("dev1", new_password)]);
    broker.reload();
    std::fs::write(&run.config, broker_config(&broker, new_password)).unwrap();
    run.signal("-HUP");
    run.expect_notify("RELOADING=1");
    let mark = broker.log_mark();
    assert!(
        broker.wait_for_log_since(mark, "New client connected", Duration::from_secs(10)),
        "no reconnect after the reload:\n{}",
        broker.log()
    );

    let (code, err) = run.stop();
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("keeping the running one"), "{err}");
    assert!(err.contains("configuration reloaded"), "{err}");
    assert!(err.contains("stopped"), "{err}");
    assert!(!err.contains(PASSWORD), "the password leaked into the logs");
    assert!(
        !err.contains(new_password),
        "the password leaked into the logs"
    );
}

/// The daemon starts and reports READY with the hub unreachable: offline
/// start must work, the hub may be down for hours.
#[test]
fn the_daemon_starts_offline() {
    let broker = Broker::start(BrokerOptions::new().user("dev1", PASSWORD));
    let keep = tempfile::tempdir().unwrap();
    let ca = keep.path().join("ca.pem");
    std::fs::copy(broker.ca_pem_path(), &ca).unwrap();
    let text = broker_config(&broker, PASSWORD).replace(
        &broker.ca_pem_path().display().to_string(),
        &ca.display().to_string(),
    );
    drop(broker);
    let run = Running::start(&text);
    run.expect_notify("READY=1");
    run.expect_notify("STATUS=hub disconnected");
    let (code, err) = run.stop();
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("cannot reach localhost"), "{err}");
}

/// The daemon does not load glibc's libm: `pow`, the one C math function
/// its dependencies call, is its own (src/main.rs). Mapping libm costs 0.5
/// MiB resident at idle, so a dependency that starts needing another math
/// function should be a decision, not an accident.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn the_daemon_runs_without_libm() {
    let broker = Broker::start(BrokerOptions::new().user("dev1", PASSWORD));
    let run = Running::start(&broker_config(&broker, PASSWORD));
    run.expect_notify("READY=1");
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", run.child.id())).unwrap();
    let (code, err) = run.stop();
    assert_eq!(code, Some(0), "{err}");
    assert!(maps.contains("libc.so"), "not a glibc process? {maps}");
    assert!(!maps.contains("libm.so"), "tether mapped libm:\n{maps}");
}

/// `[log] format = "json"` writes one JSON object per line, with the
/// level and the message as fields.
#[test]
fn json_logs_are_one_object_per_line() {
    let err = failed_start_stderr("\n[log]\nformat = \"json\"\n", None);
    assert!(err.lines().count() > 0, "nothing logged");
    for line in err.lines() {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(event["level"].is_string(), "{line}");
        assert!(event["message"].is_string(), "{line}");
    }
    assert!(err.contains("\"level\":\"ERROR\""), "{err}");
}

/// A `RUST_LOG` that is not a filter does not silence the daemon: it logs
/// at the config's level and says why.
#[test]
fn an_invalid_rust_log_falls_back_to_the_config_level() {
    let err = failed_start_stderr("\n[log]\nlevel = \"warn\"\n", Some("tether=loud"));
    assert!(err.contains("RUST_LOG is not a valid filter"), "{err}");
    assert!(
        err.contains("ERROR"),
        "the store error was not logged: {err}"
    );
}

/// At trace level, neither the SAS key nor a token or its signature shows
/// up in the output: connecting with a key (the broker refuses the token),
/// retrying, then reloading to a pre-made token and being refused again.
#[test]
fn sas_keys_and_tokens_never_reach_trace_logs() {
    // base64 of "device-key-for-tests-0123456789!"
    const KEY_B64: &str = "ZGV2aWNlLWtleS1mb3ItdGVzdHMtMDEyMzQ1Njc4OSE=";
    const SIG: &str = "c2lnbmF0dXJlLXNlY3JldC0wMTIzNDU2Nzg5YWJjZGU%3D";
    let broker = Broker::start(BrokerOptions::new().user("dev1", PASSWORD));
    let config = |auth: &str| {
        format!(
            "[hub]\nconnection_string = \"HostName=localhost;DeviceId=dev1;{auth}\"\n\
             port = {port}\nca_file = \"{ca}\"\nkeep_alive = \"5s\"\nconnect_timeout = \"2s\"\n\
             [store]\npath = \"state\"\n[log]\nlevel = \"trace\"\n",
            port = broker.tls_port(),
            ca = broker.ca_pem_path().display(),
        )
    };
    let run = Running::start(&config(&format!("SharedAccessKey={KEY_B64}")));
    run.expect_notify("READY=1");
    run.expect_notify("STATUS=hub disconnected");
    // A few refused attempts, each with a freshly minted token.
    std::thread::sleep(Duration::from_secs(2));
    let premade = format!(
        "SharedAccessSignature=SharedAccessSignature sr=localhost%2Fdevices%2Fdev1&sig={SIG}&se=4102444800"
    );
    std::fs::write(&run.config, config(&premade)).unwrap();
    run.signal("-HUP");
    run.expect_notify("RELOADING=1");
    std::thread::sleep(Duration::from_secs(2));
    let (code, err) = run.stop();
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("refused the credentials"), "{err}");
    let sig_plain = SIG.replace("%3D", "=");
    for secret in [
        KEY_B64,
        "device-key-for-tests",
        SIG,
        sig_plain.as_str(),
        "sig=",
        "SharedAccessSignature sr=",
    ] {
        assert!(!err.contains(secret), "{secret:?} leaked into the logs");
    }
}
