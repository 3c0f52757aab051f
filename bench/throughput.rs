//! Scenario 1 (durable throughput against the no-persistence baseline, plus
//! idle RSS) and scenario 2 (1,000,000-message backlog: RSS, disk, start-up
//! to READY, drain with a subscriber counting distinct ids).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::clients::{baseline_publisher, post_load, Seen, Subscriber};
use crate::procs::{self, dir_bytes, Mosquitto, Tether};
use crate::{median, Params};

/// Samples a process's VmRSS every 100 ms until dropped; keeps the max.
struct RssSampler {
    max: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let (max, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (m, s) = (max.clone(), stop.clone());
        tokio::spawn(async move {
            while !s.load(Ordering::SeqCst) {
                m.fetch_max(procs::rss_kib(pid).0, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        RssSampler { max, stop }
    }

    fn take(&self) -> u64 {
        self.max.swap(0, Ordering::SeqCst)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

async fn depth(t: &Tether, http: &reqwest::Client) -> (u64, Value) {
    let s = t.stats(http).await;
    (s["sinks"][0]["depth"].as_u64().unwrap_or(u64::MAX), s)
}

/// Polls until the hub sink's queue is empty; returns the time taken.
async fn wait_empty(t: &Tether, http: &reqwest::Client, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let (d, s) = depth(t, http).await;
        if d == 0 {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "queue never drained: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn write_config(dir: &Path, port: u16, p: &Params) -> (std::path::PathBuf, SocketAddr) {
    let admin: SocketAddr = format!("127.0.0.1:{}", procs::free_port()).parse().unwrap();
    let cfg = dir.join("tether.toml");
    std::fs::write(&cfg, procs::config(port, admin, dir, &p.store, "")).unwrap();
    (cfg, admin)
}

fn reset(sub: &Subscriber) -> Seen {
    std::mem::take(&mut *sub.seen.lock().unwrap())
}

/// Scenario 1 and idle RSS.
pub async fn durable(p: &Params, bin: &Path) -> Value {
    let broker = Mosquitto::start(false);
    let sub = Subscriber::connect(broker.port, "bench-sub-1").await;
    let http = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let (cfg, admin) = write_config(dir.path(), broker.port, p);
    let tether = Tether::start(bin, &cfg, admin, &p.tether_env);
    tether.connected(&http).await;

    // Idle: connected, nothing to do.
    eprintln!("  idle {} s", p.idle.as_secs());
    let sampler = RssSampler::start(tether.pid);
    let cpu0 = tether.cpu();
    tokio::time::sleep(p.idle).await;
    let idle = json!({
        "seconds": p.idle.as_secs(),
        "rss_kib_end": tether.rss_kib().0,
        "rss_kib_max": sampler.take(),
        "cpu_ms": (tether.cpu() - cpu0).as_millis() as u64,
    });

    let mut runs = Vec::new();
    for round in 0..p.repeat {
        eprintln!(
            "  durable round {}: tether {} s",
            round + 1,
            p.duration.as_secs()
        );
        reset(&sub);
        sampler.take();
        let s0 = tether.stats(&http).await;
        let d0 = s0["sinks"][0]["delivered"].as_u64().unwrap_or(0);
        let cpu_start = tether.cpu();
        let start = Instant::now();
        let posted = post_load(&http, admin, None, Some(start + p.duration)).await;
        let s1 = tether.stats(&http).await;
        let d1 = s1["sinks"][0]["delivered"].as_u64().unwrap_or(0);
        let during = start.elapsed();
        let rest = wait_empty(&tether, &http, Duration::from_secs(600)).await;
        let e2e = start.elapsed();
        // CPU time is counted per process, so unlike the rates it barely
        // moves when something else runs on the machine.
        let cpu_us_per_msg =
            (tether.cpu() - cpu_start).as_micros() as f64 / posted.accepted.max(1) as f64;
        let rss = sampler.take();
        let got = sub
            .wait_distinct(posted.accepted, Duration::from_secs(10))
            .await;
        let seen = reset(&sub);
        let (topic_len, payload_len) = (
            (seen.topic_bytes / seen.publishes.max(1)) as usize,
            (seen.payload_bytes / seen.publishes.max(1)) as usize,
        );
        eprintln!("  durable round {}: baseline", round + 1);
        let (acks, took) =
            baseline_publisher(broker.port, p.duration, topic_len, payload_len).await;
        let tether_rate = posted.accepted as f64 / e2e.as_secs_f64();
        let base_rate = acks as f64 / took.as_secs_f64();
        runs.push(json!({
            "accepted": posted.accepted,
            "refused": posted.refused,
            "accept_per_s": (posted.accepted as f64 / posted.elapsed.as_secs_f64()).round(),
            "puback_per_s_during_load": ((d1 - d0) as f64 / during.as_secs_f64()).round(),
            "drain_after_load_s": rest.as_secs_f64(),
            "accepted_to_pubacked_per_s": tether_rate.round(),
            "subscriber_distinct": got,
            "topic_bytes": topic_len, "payload_bytes": payload_len,
            "baseline_pubacks": acks,
            "baseline_per_s": base_rate.round(),
            "ratio": tether_rate / base_rate,
            "tether_cpu_us_per_msg": cpu_us_per_msg,
            "rss_kib_max": rss,
        }));
        eprintln!("  -> {}", runs.last().unwrap());
    }
    let m = |k: &str| median(runs.iter().map(|r| r[k].as_f64().unwrap_or(0.0)));
    let summary = json!({
        "accepted_to_pubacked_per_s": m("accepted_to_pubacked_per_s"),
        "accept_per_s": m("accept_per_s"),
        "baseline_per_s": m("baseline_per_s"),
        "ratio": m("ratio"),
        "tether_cpu_us_per_msg": m("tether_cpu_us_per_msg"),
        "rss_kib_max": runs.iter().filter_map(|r| r["rss_kib_max"].as_u64()).max(),
    });
    let hwm = tether.rss_kib().1;
    tether.stop();
    json!({"idle": idle, "runs": runs, "median": summary, "rss_kib_hwm": hwm})
}

/// Scenario 2 with the backlog footprint.
pub async fn backlog(p: &Params, bin: &Path) -> Value {
    // A persistent subscriber session, saved by a clean broker stop, so the
    // subscriber misses nothing published before it reconnects.
    let mut broker = Mosquitto::start(true);
    let sub = Subscriber::connect(broker.port, "bench-sub-2").await;
    broker.stop();
    let http = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let (cfg, admin) = write_config(dir.path(), broker.port, p);
    let tether = Tether::start(bin, &cfg, admin, &p.tether_env);
    let ready_empty = tether.ready_after;
    let sampler = RssSampler::start(tether.pid);
    eprintln!("  accepting {} messages, broker down", p.backlog);
    let posted = post_load(&http, admin, Some(p.backlog), None).await;
    let rss_loading = sampler.take();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (depth_now, s) = depth(&tether, &http).await;
    let disk = s["diskBytes"].as_u64().unwrap_or(0);
    let store_dir = dir.path().join("store");
    let rss_loaded = tether.rss_kib().0;
    tether.stop();
    drop(sampler);
    let disk_files = dir_bytes(&store_dir);
    // A copy of the loaded store for the salvage start at the end.
    let store_copy = dir.path().join("store-copy");
    procs::copy_dir(&store_dir, &store_copy);

    // Start-up to READY with the backlog, repeated; RSS after each start.
    let mut readies = Vec::new();
    let mut rss_restarted = Vec::new();
    let mut tether = None;
    for i in 0..p.repeat.max(3) {
        if let Some(t) = tether.take() {
            Tether::stop(t);
        }
        let t = Tether::start(bin, &cfg, admin, &p.tether_env);
        readies.push(t.ready_after.as_secs_f64() * 1000.0);
        if i == 0 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            rss_restarted.push(t.rss_kib().0);
        }
        tether = Some(t);
    }
    let tether = tether.unwrap();
    let (d, _) = depth(&tether, &http).await;
    assert_eq!(d, depth_now, "the backlog survived restarts");

    eprintln!("  broker up: draining {} messages", posted.accepted);
    let sampler = RssSampler::start(tether.pid);
    let cpu_start = tether.cpu();
    let start = Instant::now();
    broker.restart();
    // Drain time counts from the first PUBACK: reconnect backoff is not
    // the outbox's speed (reported apart).
    while depth(&tether, &http).await.0 >= depth_now {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "never reconnected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reconnect = start.elapsed();
    let drain = wait_empty(&tether, &http, Duration::from_secs(3600)).await;
    let cpu_us_per_msg =
        (tether.cpu() - cpu_start).as_micros() as f64 / posted.accepted.max(1) as f64;
    let rss_drain = sampler.take();
    let distinct = sub
        .wait_distinct(posted.accepted, Duration::from_secs(30))
        .await;
    let seen = reset(&sub);
    let after = tether.stats(&http).await;
    let hwm = tether.rss_kib().1;
    tether.stop();
    broker.stop();
    let salvage = salvage_start(bin, &cfg, admin, p, &store_dir, &store_copy, &http).await;
    json!({
        "salvage": salvage,
        "reconnect_s": reconnect.as_secs_f64(),
        "accepted": posted.accepted,
        "accept_per_s_broker_down": (posted.accepted as f64 / posted.elapsed.as_secs_f64()).round(),
        "drain_s": drain.as_secs_f64(),
        "drain_per_s": (posted.accepted as f64 / drain.as_secs_f64()).round(),
        "drain_tether_cpu_us_per_msg": cpu_us_per_msg,
        "subscriber_distinct": distinct,
        "subscriber_publishes": seen.publishes,
        "lost": posted.accepted.saturating_sub(distinct),
        "duplicates_reported": after["sinks"][0]["duplicates"],
        "disk_bytes_stats": disk,
        "disk_bytes_files": disk_files,
        "disk_bytes_per_message": disk_files as f64 / posted.accepted.max(1) as f64,
        "ready_ms_empty_store": ready_empty.as_secs_f64() * 1000.0,
        "ready_ms_backlog": readies,
        "ready_ms_backlog_median": median(readies.iter().copied()),
        "rss_kib": {
            "accepting_max": rss_loading,
            "backlog_loaded": rss_loaded,
            "backlog_after_restart": rss_restarted,
            "draining_max": rss_drain,
            "hwm_last_process": hwm,
        },
    })
}

/// Start-up to READY while a set-aside store is salvaged: the loaded
/// backlog's copy goes back in place with a panic record in its opening
/// marker (what a real engine panic leaves), so this start sets it aside,
/// opens a fresh store at once and imports the backlog in the background.
/// The broker is down, so nothing is delivered meanwhile.
async fn salvage_start(
    bin: &Path,
    cfg: &Path,
    admin: SocketAddr,
    p: &Params,
    store_dir: &Path,
    copy: &Path,
    http: &reqwest::Client,
) -> Value {
    std::fs::remove_dir_all(store_dir).expect("remove the drained store");
    std::fs::rename(copy, store_dir).expect("put the backlog's copy in place");
    std::fs::write(
        store_dir.join("outbox.opening"),
        "panic\nbench: a simulated engine panic while opening\n",
    )
    .expect("write the panic record");
    eprintln!("  salvage: start with the backlog's store set aside");
    let tether = Tether::start(bin, cfg, admin, &p.tether_env);
    let ready_ms = tether.ready_after.as_secs_f64() * 1000.0;
    let sampler = RssSampler::start(tether.pid);
    let start = Instant::now();
    let details = loop {
        let h = tether.health(http).await;
        let s = &h["components"]["outbox"]["details"]["salvage"];
        match s["state"].as_str() {
            Some("done") => break s.clone(),
            Some("failed") => panic!("the salvage failed: {s}"),
            _ => {}
        }
        assert!(
            start.elapsed() < Duration::from_secs(1800),
            "the salvage never ended: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = start.elapsed();
    let rss = sampler.take();
    let (depth_after, _) = depth(&tether, http).await;
    tether.stop();
    json!({
        "ready_ms": ready_ms,
        "salvage_s": took.as_secs_f64(),
        "messages": details["messages"],
        "unreadable": details["unreadable"],
        "depth_after": depth_after,
        "rss_kib_max": rss,
    })
}
