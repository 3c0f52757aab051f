//! The demo as a user runs it (`cargo run -- demo`): the real `tether-demo`
//! binary, no configuration, nothing else installed (its broker, controller
//! and MCU are simulated in-process). CI checks its summary line.

use std::collections::HashMap;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The demo finishes in a few seconds; this only stops a hang.
const LIMIT: Duration = Duration::from_secs(60);

fn demo(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tether-demo"))
        .arg("demo")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tether demo starts")
}

/// Waits for exit within `limit`, killing the process after it.
fn wait(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for tether demo") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tether demo did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_all(r: Option<impl Read>) -> String {
    let mut s = String::new();
    if let Some(mut r) = r {
        let _ = r.read_to_string(&mut s);
    }
    s
}

/// The `summary:` line's `key=value` pairs.
fn summary(stdout: &str) -> HashMap<String, String> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("summary: "))
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The walkthrough runs to the end on a bare machine: both REST calls are
/// relayed with 2xx, `setAttribute` reaches the MCU, updates made during
/// the outage are kept and delivered, nothing is lost, exit 0.
#[test]
fn the_demo_walks_through_every_step_and_loses_nothing() {
    let started = Instant::now();
    let mut child = demo(&[]);
    let status = wait(&mut child, LIMIT);
    let stdout = read_all(child.stdout.take());
    let stderr = read_all(child.stderr.take());
    assert!(status.success(), "exit {status}\n{stdout}\n{stderr}");
    let s = summary(&stdout);
    let n = |k: &str| -> u64 {
        s.get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("summary has no number {k}:\n{stdout}"))
    };
    assert_eq!(n("relay_calls"), 2, "{stdout}");
    assert_eq!(n("ok"), n("relay_calls"), "{stdout}");
    assert_eq!(s["set_attribute"], "ok", "{stdout}");
    assert!(n("attributes_accepted") >= 6, "{stdout}");
    assert_eq!(n("delivered"), n("attributes_accepted"), "{stdout}");
    assert_eq!(n("lost"), 0, "{stdout}");
    assert!(n("outage_kept") >= 3, "{stdout}");
    assert_eq!(s["result"], "pass", "{stdout}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the demo took {:?}",
        started.elapsed()
    );
}

/// With `--keep` everything stays up after the summary; SIGINT (Ctrl-C)
/// stops it all cleanly (exit 0: that is how a kept demo ends) and
/// removes the demo's files.
#[test]
fn ctrl_c_stops_a_kept_demo_and_cleans_up() {
    let mut child = demo(&["--keep"]);
    let mut stdout = child.stdout.take().expect("stdout");
    // Read until the hints appear: the walkthrough is over, all still runs.
    let mut seen = String::new();
    let deadline = Instant::now() + LIMIT;
    let mut buf = [0u8; 4096];
    while !seen.contains("Everything keeps running") {
        assert!(Instant::now() < deadline, "no --keep hints:\n{seen}");
        let n = stdout.read(&mut buf).expect("read stdout");
        assert!(n > 0, "tether demo closed stdout early:\n{seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let dir = seen
        .split_whitespace()
        .find(|w| w.contains("/tether-demo-") && !w.ends_with(".toml"))
        .expect("the files line names the demo directory")
        .to_string();
    assert!(
        std::path::Path::new(&dir).is_dir(),
        "{dir} exists while kept"
    );
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill -INT failed");
    let status = wait(&mut child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{seen}");
    assert!(!std::path::Path::new(&dir).exists(), "{dir} was removed");
}
