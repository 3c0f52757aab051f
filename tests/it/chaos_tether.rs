//! tether itself SIGKILLed at random moments under load, many times in a
//! row and restarted each time: every id ever answered 202 reaches the
//! subscriber (duplicates allowed and counted, same id), and the store
//! opens again after every kill. The single kill is in `outbox_crash.rs`;
//! this is the repeated one. `TETHER_CHAOS_LONG=1` does 100 kills.

use std::time::Duration;

use crate::chaos_rig::{long, tally, wait_drained, Load};
use crate::outbox_rig::{client, daemon_config, wait_healthy, Subscriber, Tether, EVENTS};
use rand::Rng;
use tether_testkit::{Broker, BrokerOptions};

#[tokio::test]
async fn repeated_sigkill_under_load_loses_no_accepted_message() {
    let kills = if long() { 100 } else { 22 };
    let broker = Broker::start(BrokerOptions::new().extra_config("max_queued_messages 0"));
    let mut sub = Subscriber::connect(broker.plain_port(), &format!("{EVENTS}#")).await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, log, addr) = daemon_config(dir.path(), broker.plain_port());
    let http = client();
    let load = Load::start(&http, addr, 3);
    let mut rng = rand::thread_rng();
    for _ in 0..kills {
        let mut tether = Tether::start(&cfg, &log);
        // Healthy means the store opened and the hub is connected.
        wait_healthy(&http, addr).await;
        let run = Duration::from_millis(rng.gen_range(50..900));
        tokio::time::sleep(run).await;
        tether.kill();
    }
    let accepted = load.stop().await;
    let _tether = Tether::start(&cfg, &log);
    wait_healthy(&http, addr).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_drained(&http, addr, Duration::from_secs(60)).await,
        "outbox drained; log tail:\n{}",
        text.lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    let t = tally(&mut sub, &accepted, Duration::from_secs(30)).await;
    t.report("tether SIGKILL", kills);
    assert!(t.accepted > 1000, "load ran: {t:?}");
    assert_eq!(t.lost, 0, "{t:?}");
    assert!(
        !text.contains("moved aside"),
        "no kill left a store sled could not open"
    );
    // The high-water record is never ahead of the store, so a kill at any
    // moment must not look like lost writes.
    assert!(
        !text.contains("lost writes") && !text.contains("not the one tether last ran with"),
        "no kill is reported as a store loss"
    );
}
