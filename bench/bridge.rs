//! Scenario 5: tether's CPU time per afLib4 transaction. The simulated MCU
//! (`tether_testkit::mcu`) sends attribute UPDATEs through a pty (no baud
//! timing, so the link is as fast as both ends) to the real binary, which
//! forwards each to the outbox and the broker. CPU is tether's utime+stime.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::procs::{self, Mosquitto, Tether};
use crate::Params;
use tether_testkit::mcu::{blink_profile, Mcu};

/// Bytes on the line for one MCU → module UPDATE of a 1-byte attribute
/// (spec §4.3): MCU sync 6 + ASR sync response 6 + READY 1 + MCU sync 6 +
/// READY 1 + payload (2 + 9) + READY 1.
pub const UPDATE_WIRE_BYTES: u64 = 32;
/// 115200 baud, 8N1: 10 bits a byte.
const BYTES_PER_S_115200: f64 = 11_520.0;

async fn accepted(t: &Tether, http: &reqwest::Client) -> u64 {
    t.stats(http).await["accepted"].as_u64().unwrap_or(0)
}

pub async fn run(p: &Params, bin: &Path) -> Value {
    let broker = Mosquitto::start(false);
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyMCU");
    let mut mcu = Mcu::at(&link, &[(1, vec![0])]);
    let admin: SocketAddr = format!("127.0.0.1:{}", procs::free_port()).parse().unwrap();
    let extra = format!(
        "[bridge]\ndevice = \"{}\"\nbaud = 115200\nprofile = \"{}\"\n",
        link.display(),
        blink_profile().display()
    );
    let cfg = dir.path().join("tether.toml");
    let text = procs::config(broker.port, admin, dir.path(), &p.store, &extra);
    std::fs::write(&cfg, text).unwrap();
    let http = reqwest::Client::new();
    let tether = Tether::start(bin, &cfg, admin, &p.tether_env);
    tether.connected(&http).await;
    mcu.booted(1, Duration::from_secs(30)).await;

    // Warm-up, then the idle CPU rate to subtract.
    let a0 = accepted(&tether, &http).await;
    for i in 0..50u8 {
        mcu.update(1, &[i % 2]);
    }
    wait_accepted(&tether, &http, a0 + 50).await;
    let (c0, t0) = (tether.cpu(), Instant::now());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_rate = (tether.cpu() - c0).as_secs_f64() / t0.elapsed().as_secs_f64();

    let n = p.bridge_tx;
    let line_us = UPDATE_WIRE_BYTES as f64 / BYTES_PER_S_115200 * 1e6;
    // The MCU sends at 115200's line rate: a pty has no baud timing, and
    // faster than the line the bridge's upstream queue (one outbox submit
    // at a time) overflows and drops, counted, after 1,024 changes.
    let mut line = tokio::time::interval(Duration::from_micros(line_us as u64));
    let a0 = accepted(&tether, &http).await;
    let (c0, t0) = (tether.cpu(), Instant::now());
    for i in 0..n {
        line.tick().await;
        mcu.update(1, &[(i % 2) as u8]);
    }
    wait_accepted(&tether, &http, a0 + n).await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (tether.cpu() - c0).as_secs_f64() - idle_rate * wall;
    let cpu_us = cpu / n as f64 * 1e6;
    let rss = tether.rss_kib();
    tether.stop();
    json!({
        "transactions": n,
        "wall_s": wall,
        "tx_per_s_through_pty": (n as f64 / wall).round(),
        "cpu_us_per_tx": cpu_us.round(),
        "wire_bytes_per_tx": UPDATE_WIRE_BYTES,
        "line_time_us_per_tx_115200": line_us.round(),
        "cpu_share_of_line_time_at_115200": cpu_us / line_us,
        "headroom_x": line_us / cpu_us,
        "idle_cpu_share": idle_rate,
        "rss_kib": {"end": rss.0, "hwm": rss.1},
        "note": "CPU includes the outbox append (group commit + fdatasync) and the MQTT publish of each forwarded UPDATE",
    })
}

async fn wait_accepted(t: &Tether, http: &reqwest::Client, n: u64) {
    let start = Instant::now();
    while accepted(t, http).await < n {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "the bridge did not forward every UPDATE"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
