//! The benchmark suite: drives the release `tether` binary as a process
//! against its own Mosquitto and local HTTP server, runs every scenario's
//! baseline in the same run, writes `bench/results/*.json` and regenerates
//! the table in `BENCHMARKS.md`. Run it with `bench/run.sh` (see there for
//! the parameters); `cargo test` never builds it.

mod bridge;
mod check;
mod clients;
mod procs;
mod relay;
mod report;
mod throughput;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

/// Scenario parameters, from the environment (see bench/run.sh).
pub struct Params {
    pub duration: Duration,
    pub idle: Duration,
    pub backlog: u64,
    pub calls: u64,
    pub repeat: usize,
    pub bridge_tx: u64,
    /// Extra `[store]` lines for tether (e.g. `cache_bytes = 1048576`).
    pub store: String,
    /// Extra environment for tether (e.g. MALLOC_ARENA_MAX=2).
    pub tether_env: Vec<(String, String)>,
    pub only: Vec<String>,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

impl Params {
    fn from_env() -> Params {
        let list = |name: &str| -> Vec<String> {
            std::env::var(name)
                .unwrap_or_default()
                .split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        Params {
            duration: Duration::from_secs(env_u64("BENCH_DURATION", 30)),
            idle: Duration::from_secs(env_u64("BENCH_IDLE", 600)),
            backlog: env_u64("BENCH_BACKLOG", 1_000_000),
            calls: env_u64("BENCH_CALLS", 10_000),
            repeat: env_u64("BENCH_REPEAT", 3).max(1) as usize,
            bridge_tx: env_u64("BENCH_BRIDGE_TX", 2_000),
            store: std::env::var("BENCH_STORE").unwrap_or_default(),
            tether_env: list("BENCH_TETHER_ENV")
                .iter()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            only: list("BENCH_ONLY"),
        }
    }

    fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }

    fn to_json(&self) -> Value {
        json!({
            "duration_s": self.duration.as_secs(), "idle_s": self.idle.as_secs(),
            "backlog": self.backlog, "calls": self.calls, "repeat": self.repeat,
            "bridge_tx": self.bridge_tx, "store_extra": self.store,
            "tether_env": self.tether_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "only": self.only,
        })
    }
}

/// p50/p99/p99.9/max of microsecond samples.
pub fn stats_us(v: &mut [u64]) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    json!({"p50": at(0.5), "p99": at(0.99), "p999": at(0.999), "max": v[v.len() - 1]})
}

pub fn median(v: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = v.collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let s = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&s)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

fn machine(bin: &Path) -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or(String::new(), |(_, v)| v.trim().to_string());
    let dirty = !sh("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    json!({
        "date": sh("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        "commit": sh("git", &["rev-parse", "--short=12", "HEAD"]),
        "worktree_dirty": dirty,
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "kernel": sh("uname", &["-r"]),
        "rustc": sh("rustc", &["--version"]),
        "mosquitto": sh("mosquitto", &["-h"]),
        "binary": bin.display().to_string(),
        "command": std::env::var("BENCH_COMMAND").unwrap_or_else(|_| "cargo bench --bench suite".into()),
        "build_command": std::env::var("BENCH_BUILD_COMMAND").unwrap_or_default(),
    })
}

/// Stripped release binary sizes found in the target directory.
fn sizes(bin: &Path) -> Value {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or(root.join("target"), PathBuf::from);
    let mut out = json!({"under_test": std::fs::metadata(bin).map_or(0, |m| m.len())});
    for t in [
        "x86_64-unknown-linux-gnu",
        "aarch64-unknown-linux-musl",
        "armv7-unknown-linux-gnueabihf",
    ] {
        let p = target.join(t).join("release/tether");
        if let Ok(m) = std::fs::metadata(&p) {
            out[t] = json!(m.len());
        }
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    tether::tls::install_crypto_provider();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Some(from) = std::env::var_os("BENCH_REPORT_FROM") {
        // Regenerate BENCHMARKS.md from a results file; run nothing.
        let text = std::fs::read_to_string(from).expect("results file");
        let results: Value = serde_json::from_str(&text).expect("results JSON");
        report::write(&root.join("BENCHMARKS.md"), &results);
        println!("{}", report::table(&results));
        return;
    }
    let p = Params::from_env();
    let bin = std::env::var_os("TETHER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tether")));
    let mut results =
        json!({"machine": machine(&bin), "params": p.to_json(), "sizes": sizes(&bin)});
    eprintln!("bench: {}", results["params"]);
    for (name, scenario) in [("durable", 1), ("backlog", 2), ("relay", 3), ("bridge", 5)] {
        if !p.wants(name) {
            continue;
        }
        eprintln!("bench: scenario {scenario} ({name})");
        let r = match name {
            "durable" => throughput::durable(&p, &bin).await,
            "backlog" => throughput::backlog(&p, &bin).await,
            "relay" => relay::run(&p, &bin).await,
            _ => bridge::run(&p, &bin).await,
        };
        eprintln!("bench: {name}: {r}");
        results[name] = r;
    }
    if std::env::var_os("BENCH_SMOKE").is_some() {
        // CI's smoke run: correctness only (tiny counts make the budget
        // table meaningless), and no results files.
        let wanted: Vec<&str> = ["durable", "backlog", "relay", "bridge"]
            .into_iter()
            .filter(|s| p.wants(s))
            .collect();
        let bad = check::failures(&results, &wanted);
        if !bad.is_empty() {
            eprintln!("bench smoke: FAILED\n  {}", bad.join("\n  "));
            std::process::exit(1);
        }
        eprintln!("bench smoke: every scenario ran; nothing lost, every call answered");
        return;
    }
    let dir = root.join("bench/results");
    std::fs::create_dir_all(&dir).expect("results dir");
    let stamp = results["machine"]["date"]
        .as_str()
        .unwrap_or("run")
        .replace(':', "");
    let text = serde_json::to_string_pretty(&results).unwrap();
    std::fs::write(dir.join(format!("{stamp}.json")), &text).expect("write results");
    if std::env::var("BENCH_NO_REPORT").is_err() {
        // An experiment (BENCH_NO_REPORT) leaves the recorded run alone.
        std::fs::write(dir.join("latest.json"), &text).expect("write results");
        report::write(&root.join("BENCHMARKS.md"), &results);
    }
    println!("{}", report::table(&results));
}
