//! Tests that read a whole process's log output run part of themselves
//! again in a child process of the test binary, so the tracing subscriber
//! (one per process) can be set up at trace level and captured whole.

use std::process::{Command, Stdio};

/// Runs the ignored test `name` (its path in the test binary, e.g.
/// `secrets_trace::renewal_child`) alone in a child process of this test
/// binary, with `marker=1` and `RUST_LOG=trace` in its environment, and
/// returns its stdout and stderr together. Fails the calling test when the
/// child failed, did not run `name`, or logged nothing at trace level.
pub fn run_at_trace(name: &str, marker: &str) -> String {
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(exe)
        .args(["--exact", name, "--ignored", "--nocapture"])
        .env(marker, "1")
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .output()
        .expect("run the child test");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{output}");
    let test = name.rsplit("::").next().unwrap_or(name);
    assert!(output.contains(&format!("{test} ... ok")), "{output}");
    assert!(output.contains("TRACE"), "not at trace level:\n{output}");
    output
}
