//! The broker SIGKILLed and SIGSTOPped under load, repeatedly: tether
//! reconnects each time and every id answered 202 reaches the subscriber.
//! `TETHER_CHAOS_LONG=1` repeats each fault more often.

use std::time::Duration;

use crate::chaos_rig::{long, subscriber_back, tally, wait_drained, Load};
use crate::outbox_rig::{client, daemon_config, wait_healthy, Subscriber, Tether, EVENTS};
use tether_demo::proxy::{Mode, Proxy};
use tether_testkit::{Broker, BrokerOptions};

struct Run {
    broker: Broker,
    proxy: Proxy,
    sub: Subscriber,
    http: reqwest::Client,
    addr: std::net::SocketAddr,
    log: std::path::PathBuf,
    _tether: Tether,
    _dir: tempfile::TempDir,
}

/// tether reaches the broker through a proxy, so a test can hold its
/// reconnect back until the subscriber is back (a restarted broker without
/// persistence forgets subscriptions: messages before that are the
/// broker's loss, not tether's).
async fn start() -> Run {
    let broker = Broker::start(BrokerOptions::new().extra_config("max_queued_messages 0"));
    let proxy = tether_testkit::link_cutter(broker.plain_port()).await;
    let sub = Subscriber::connect(broker.plain_port(), &format!("{EVENTS}#")).await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, log, addr) = daemon_config(dir.path(), proxy.port());
    let tether = Tether::start(&cfg, &log);
    let http = client();
    wait_healthy(&http, addr).await;
    Run {
        broker,
        proxy,
        sub,
        http,
        addr,
        log,
        _tether: tether,
        _dir: dir,
    }
}

impl Run {
    async fn subscriber_back(&mut self) {
        subscriber_back(&mut self.sub, self.broker.plain_port()).await;
    }

    async fn finish(mut self, load: Load, fault: &str, runs: usize) {
        let accepted = load.stop().await;
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(
            wait_drained(&self.http, self.addr, Duration::from_secs(60)).await,
            "outbox drained; log tail:\n{}",
            text.lines().rev().take(30).collect::<Vec<_>>().join("\n")
        );
        let t = tally(&mut self.sub, &accepted, Duration::from_secs(30)).await;
        t.report(fault, runs);
        assert!(t.accepted > 200, "load ran: {t:?}");
        assert_eq!(t.lost, 0, "{t:?}");
    }
}

#[tokio::test]
async fn broker_sigkilled_under_load_repeatedly_loses_nothing() {
    let runs = if long() { 20 } else { 3 };
    let mut run = start().await;
    let load = Load::start(&run.http, run.addr, 2);
    for _ in 0..runs {
        tokio::time::sleep(Duration::from_millis(800)).await;
        // Dialling fails while the proxy drops everything. The broker gets
        // a moment to hand what it already acknowledged to the subscriber:
        // mosquitto may send a PUBACK before it writes the message to a
        // subscriber, and what a SIGKILL catches in between is the broker's
        // loss (it had taken responsibility), not tether's.
        run.proxy.set(Mode::Blackhole);
        tokio::time::sleep(Duration::from_millis(500)).await;
        run.broker.kill();
        run.broker.restart();
        run.subscriber_back().await;
        run.proxy.heal();
        wait_healthy(&run.http, run.addr).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    run.finish(load, "broker SIGKILL", runs).await;
}

#[tokio::test]
async fn broker_frozen_under_load_repeatedly_loses_nothing() {
    let runs = if long() { 10 } else { 2 };
    let mut run = start().await;
    let load = Load::start(&run.http, run.addr, 2);
    // A short freeze (the session survives) and one past 1.5 keep-alives
    // (the half-open watch drops the link), alternately.
    for i in 0..runs {
        tokio::time::sleep(Duration::from_millis(800)).await;
        run.broker.freeze();
        let held = if i % 2 == 0 { 2 } else { 9 };
        tokio::time::sleep(Duration::from_secs(held)).await;
        run.broker.thaw();
        wait_healthy(&run.http, run.addr).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    run.subscriber_back().await;
    run.finish(load, "broker SIGSTOP", runs).await;
}
