//! Network faults between tether and the broker, through the in-test proxy
//! (`tether_demo::proxy`): clean cut, half-open link, latency, slow drip and a
//! reset mid-packet. The session must notice a half-open link within 1.5
//! keep-alive intervals and say so in its status, and under load no
//! accepted message may be lost. `TETHER_CHAOS_LONG=1` repeats each fault.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::chaos_rig::{health, long, tally, wait_drained, Load};
use crate::outbox_rig::{
    client, config_text, free_addr, run_daemon, wait_healthy, Subscriber, Tether, EVENTS,
};
use serde_json::Value;
use tether::app::Daemon;
use tether::clock::SystemClock;
use tether::config::AdminListen;
use tether_demo::proxy::{Mode, Proxy};
use tether_testkit::{Broker, BrokerOptions};
use tokio_util::sync::CancellationToken;

/// The shortest keep-alive the config accepts.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How long a reconnect may take.
const WAIT: Duration = Duration::from_secs(20);

/// A config for tether against the hub at `port` with the keep-alive
/// above, the store in `dir` and the admin API at `admin`.
fn keep_alive_config(port: u16, dir: &std::path::Path, admin: SocketAddr) -> String {
    config_text(port, dir, "", Some(admin)).replace(
        "keep_alive = \"5s\"",
        &format!("keep_alive = \"{}s\"", KEEP_ALIVE.as_secs()),
    )
}

/// Polls `/healthz` (every 10 ms: the test times the moment it changes)
/// until `f` holds for its body.
async fn health_until(
    http: &reqwest::Client,
    addr: SocketAddr,
    what: &str,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let h = health(http, addr).await;
        if f(&h) {
            return h;
        }
        assert!(tokio::time::Instant::now() < deadline, "never {what}: {h}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The session notices a blackholed link within 1.5 keep-alives (rumqttc
/// alone takes up to two), reports it, and reconnects once the link heals.
#[tokio::test]
async fn a_half_open_link_is_detected_within_one_and_a_half_keep_alives() {
    let broker = Broker::start(BrokerOptions::new());
    let proxy = tether_testkit::link_cutter(broker.plain_port()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = keep_alive_config(
        proxy.port(),
        dir.path(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    );
    let path = dir.path().join("tether.toml");
    std::fs::write(&path, &text).unwrap();
    let cfg = tether::config::parse(&text, dir.path()).expect("valid config");
    let stop = CancellationToken::new();
    let daemon = Daemon::new(path, Arc::new(SystemClock));
    let (task, at) = run_daemon(daemon, cfg, stop.clone()).await;
    let AdminListen::Tcp(addr) = at else {
        panic!("listening on TCP, not {at:?}")
    };
    let http = client();
    health_until(&http, addr, "connected", |h| {
        h["hub"]["state"] == "connected"
    })
    .await;
    for round in 0..if long() { 5 } else { 1 } {
        // Start mid-interval, after a PINGRESP has refreshed the session.
        tokio::time::sleep(KEEP_ALIVE + Duration::from_millis(300)).await;
        proxy.set(Mode::Blackhole);
        let cut = Instant::now();
        let down = health_until(&http, addr, "noticed the half-open link", |h| {
            h["hub"]["state"].as_str().is_some_and(|s| s != "connected")
        })
        .await;
        let took = cut.elapsed();
        assert!(
            took <= KEEP_ALIVE * 3 / 2 + Duration::from_millis(250),
            "round {round}: noticed only after {took:?}"
        );
        let err = down["hub"]["lastError"].as_str().unwrap_or_default();
        assert!(err.contains("half-open"), "status says why: {down}");
        proxy.heal();
        let up = health_until(&http, addr, "reconnected", |h| {
            h["hub"]["state"] == "connected"
        })
        .await;
        assert_eq!(up["hub"]["connects"], round + 2, "{up}");
        eprintln!("round {round}: half-open link noticed after {took:?}");
    }
    stop.cancel();
    assert_eq!(task.await.unwrap(), 0);
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Cut,
    Blackhole,
    Latency,
    Drip,
    Reset,
}

/// Runs tether (the binary) through the proxy under load, applies `fault`
/// `runs` times, and checks every accepted id arrives.
async fn under_load(fault: Fault, runs: usize) {
    let broker = Broker::start(BrokerOptions::new().extra_config("max_queued_messages 0"));
    let proxy = tether_testkit::link_cutter(broker.plain_port()).await;
    let mut sub = Subscriber::connect(broker.plain_port(), &format!("{EVENTS}#")).await;
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let text = keep_alive_config(proxy.port(), dir.path(), addr);
    let cfg = dir.path().join("tether.toml");
    std::fs::write(&cfg, text).unwrap();
    let log = dir.path().join("tether.log");
    let _tether = Tether::start(&cfg, &log);
    let http = client();
    wait_healthy(&http, addr).await;
    let load = Load::start(&http, addr, 2);
    for _ in 0..runs {
        tokio::time::sleep(Duration::from_millis(400)).await;
        apply(fault, &proxy, &http, addr).await;
        proxy.heal();
        wait_healthy(&http, addr).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let accepted = load.stop().await;
    assert!(accepted.len() > 50, "load ran: {}", accepted.len());
    let drained = wait_drained(&http, addr, Duration::from_secs(30)).await;
    let t = tally(&mut sub, &accepted, Duration::from_secs(20)).await;
    t.report(&format!("link {fault:?}"), runs);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(30).collect();
    assert!(drained, "outbox drained; log tail:\n{}", tail.join("\n"));
    assert_eq!(t.lost, 0, "{t:?}");
}

async fn apply(fault: Fault, proxy: &Proxy, http: &reqwest::Client, addr: std::net::SocketAddr) {
    match fault {
        Fault::Cut => proxy.cut(),
        Fault::Blackhole => {
            proxy.set(Mode::Blackhole);
            let at = Instant::now();
            let limit = KEEP_ALIVE * 3 / 2 + Duration::from_millis(500);
            loop {
                let h = health(http, addr).await;
                if h["hub"]["state"] == "disconnected" {
                    let err = h["hub"]["lastError"].as_str().unwrap_or_default();
                    assert!(err.contains("half-open"), "health says why: {h}");
                    break;
                }
                assert!(at.elapsed() < limit, "not noticed in {limit:?}: {h}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Fault::Latency => {
            // Well under the keep-alive: no reason to drop the link.
            let before = health(http, addr).await["hub"]["connects"].clone();
            proxy.set(Mode::Latency(Duration::from_millis(300)));
            tokio::time::sleep(KEEP_ALIVE * 2).await;
            let h = health(http, addr).await;
            assert_eq!(h["hub"]["connects"], before, "session kept: {h}");
            assert_eq!(h["hub"]["state"], "connected", "{h}");
        }
        Fault::Drip => {
            proxy.set(Mode::Drip(Duration::from_millis(2)));
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        Fault::Reset => {
            let before = proxy.accepted();
            proxy.set(Mode::ResetMidPacket);
            // Heal as soon as the session dialled again, so only the live
            // connection is reset mid-packet.
            let at = Instant::now();
            while proxy.accepted() == before && at.elapsed() < Duration::from_secs(5) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

fn runs() -> usize {
    if long() {
        10
    } else {
        2
    }
}

#[tokio::test]
async fn clean_cuts_under_load_lose_nothing() {
    under_load(Fault::Cut, runs()).await;
}

#[tokio::test]
async fn half_open_links_under_load_lose_nothing() {
    under_load(Fault::Blackhole, if long() { 5 } else { 1 }).await;
}

#[tokio::test]
async fn latency_under_load_loses_nothing() {
    under_load(Fault::Latency, 1).await;
}

#[tokio::test]
async fn slow_drip_under_load_loses_nothing() {
    under_load(Fault::Drip, 1).await;
}

#[tokio::test]
async fn resets_mid_packet_under_load_lose_nothing() {
    under_load(Fault::Reset, runs()).await;
}
