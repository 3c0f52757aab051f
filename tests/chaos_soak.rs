//! Soak: steady load (`TETHER_CHAOS_SOAK_RATE` messages a second, default
//! 200) for `TETHER_CHAOS_SOAK_SECS` seconds (one hour: 3600) with the
//! broker SIGKILLed and restarted every 5 minutes (a third of the run when
//! shorter) and random link faults and broker freezes in between. tether's
//! RSS and open files are sampled every 10 s and must stay flat; every
//! accepted id must arrive. One tether process runs throughout (its SIGKILLs
//! are `chaos_tether.rs`), so the samples describe one process. Without the
//! variable the test returns at once, so CI does not run it:
//!
//! `TETHER_CHAOS_SOAK_SECS=3600 cargo test --test chaos_soak -- --nocapture`

mod outbox_rig;
mod support;

mod chaos_rig;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chaos_rig::{healthy_within, subscriber_back, tally, wait_drained, Load};
use outbox_rig::{client, config_text, free_addr, wait_healthy, Subscriber, Tether, EVENTS};
use rand::Rng;
use support::proxy::{Mode, Proxy};
use support::{Broker, BrokerOptions};
use tokio_util::sync::CancellationToken;

const SAMPLE_EVERY: Duration = Duration::from_secs(10);
const MIB: u64 = 1024;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// One sample of the process: seconds since start, VmRSS in KiB, open fds.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: u64,
    rss_kib: u64,
    fds: u64,
}

fn sample(pid: u32, start: Instant) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(Sample {
        at: start.elapsed().as_secs(),
        rss_kib,
        fds,
    })
}

/// Samples `pid` every [`SAMPLE_EVERY`] until `stop`.
fn spawn_sampler(pid: u32, stop: CancellationToken) -> Arc<Mutex<Vec<Sample>>> {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let out = samples.clone();
    tokio::spawn(async move {
        let start = Instant::now();
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        while !stop.is_cancelled() {
            tick.tick().await;
            if let Some(s) = sample(pid, start) {
                out.lock().unwrap().push(s);
            }
        }
    });
    samples
}

/// first / median / max / final of one measure, printed for the record.
fn summary(name: &str, values: &[u64]) {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    eprintln!(
        "SOAK| {name} | first {} | median {} | max {} | final {}",
        values[0],
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
        values[values.len() - 1]
    );
}

/// Asserts the last window's peak stays near the first window's: RSS
/// within x1.5 + 4 MiB, open files within +10.
fn assert_flat(samples: &[Sample], secs: u64) {
    let window = (secs / 4).min(600);
    let end = samples.last().map_or(0, |s| s.at);
    let first: Vec<&Sample> = samples.iter().filter(|s| s.at <= window).collect();
    let last: Vec<&Sample> = samples.iter().filter(|s| s.at + window >= end).collect();
    assert!(!first.is_empty() && !last.is_empty(), "{samples:?}");
    let peak = |v: &[&Sample], f: fn(&Sample) -> u64| v.iter().map(|s| f(s)).max().unwrap_or(0);
    let (rss0, rss1) = (peak(&first, |s| s.rss_kib), peak(&last, |s| s.rss_kib));
    let (fd0, fd1) = (peak(&first, |s| s.fds), peak(&last, |s| s.fds));
    eprintln!(
        "SOAK| window {window} s | RSS peak first {rss0} KiB, last {rss1} KiB | fds peak first \
         {fd0}, last {fd1}"
    );
    assert!(
        rss1 <= rss0 * 3 / 2 + 4 * MIB,
        "RSS grew: {rss0} -> {rss1} KiB"
    );
    assert!(fd1 <= fd0 + 10, "open files grew: {fd0} -> {fd1}");
}

#[tokio::test]
async fn soak_under_steady_load_broker_restarts_and_random_faults() {
    let Some(secs) = env_u64("TETHER_CHAOS_SOAK_SECS") else {
        return;
    };
    let rate = env_u64("TETHER_CHAOS_SOAK_RATE").unwrap_or(200) as u32;
    let restart_every = Duration::from_secs((secs / 3).clamp(10, 300));
    let mut broker = Broker::start(BrokerOptions::new().extra_config("max_queued_messages 0"));
    let proxy = Proxy::start(broker.plain_port()).await;
    let mut sub = Subscriber::connect(broker.plain_port(), &format!("{EVENTS}#")).await;
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let cfg = dir.path().join("tether.toml");
    std::fs::write(&cfg, config_text(proxy.port(), dir.path(), "", Some(addr))).unwrap();
    let log = dir.path().join("tether.log");
    let http = client();
    let mut tether = Tether::start(&cfg, &log);
    wait_healthy(&http, addr).await;
    let stop_sampling = CancellationToken::new();
    let samples = spawn_sampler(tether.child.id(), stop_sampling.clone());
    let load = Load::steady(&http, addr, rate);
    let started = Instant::now();
    let end = started + Duration::from_secs(secs);
    let mut next_restart = started + restart_every;
    let mut rng = rand::thread_rng();
    let mut faults = [0usize; 5];
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(500..3000))).await;
        let f = if Instant::now() >= next_restart {
            next_restart += restart_every;
            0
        } else {
            rng.gen_range(1..faults.len())
        };
        faults[f] += 1;
        match f {
            0 => {
                // Hold tether back, let the subscriber take what the broker
                // has, then SIGKILL the broker: messages it queued for the
                // subscriber would be the broker's loss, not tether's.
                proxy.set(Mode::Blackhole);
                tokio::time::sleep(Duration::from_secs(1)).await;
                broker.kill();
                broker.restart();
                subscriber_back(&mut sub, broker.plain_port()).await;
            }
            1 => proxy.cut(),
            2 => {
                proxy.set(Mode::Blackhole);
                tokio::time::sleep(Duration::from_secs(8)).await;
            }
            3 => {
                proxy.set(Mode::ResetMidPacket);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            _ => {
                broker.freeze();
                tokio::time::sleep(Duration::from_secs(rng.gen_range(1..10))).await;
                broker.thaw();
            }
        }
        proxy.heal();
        // Reconnect backoff after a long outage can pass 10 s.
        if let Err(h) = healthy_within(&http, addr, Duration::from_secs(60)).await {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            panic!("not healthy 60 s after fault {f} ({faults:?}): {h}\n{tail:#?}");
        }
    }
    let accepted = load.stop().await;
    let load_secs = started.elapsed().as_secs_f64();
    assert!(wait_drained(&http, addr, Duration::from_secs(120)).await);
    stop_sampling.cancel();
    let samples = samples.lock().unwrap().clone();
    assert!(
        tether.child.try_wait().unwrap().is_none(),
        "tether ran throughout"
    );
    let t = tally(&mut sub, &accepted, Duration::from_secs(60)).await;
    eprintln!(
        "faults: broker SIGKILL+restart, cut, blackhole, reset, broker SIGSTOP = {faults:?}; \
         {} samples, {rate} msg/s target, {:.0} msg/s accepted",
        samples.len(),
        t.accepted as f64 / load_secs
    );
    let rss: Vec<u64> = samples.iter().map(|s| s.rss_kib).collect();
    let fds: Vec<u64> = samples.iter().map(|s| s.fds).collect();
    summary("RSS KiB", &rss);
    summary("open files", &fds);
    t.report(
        "soak (steady load, broker restarts, random faults)",
        faults.iter().sum(),
    );
    assert_eq!(t.lost, 0, "{t:?}");
    assert_flat(&samples, secs);
    tether.kill();
}
