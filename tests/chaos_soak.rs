//! Soak: random faults one after another under steady load for
//! `TETHER_CHAOS_SOAK_SECS` seconds (one hour: 3600), then every accepted
//! id must have arrived. Without the variable the test returns at once, so
//! CI does not run it:
//!
//! `TETHER_CHAOS_SOAK_SECS=3600 cargo test --test chaos_soak -- --nocapture`

mod outbox_rig;
mod support;

mod chaos_rig;

use std::time::{Duration, Instant};

use chaos_rig::{tally, wait_drained, Load};
use outbox_rig::{client, config_text, free_addr, wait_healthy, Subscriber, Tether, EVENTS};
use rand::Rng;
use support::proxy::{Mode, Proxy};
use support::{Broker, BrokerOptions};

#[tokio::test]
async fn soak_under_random_faults() {
    let Some(secs) = std::env::var("TETHER_CHAOS_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return;
    };
    let broker = Broker::start(BrokerOptions::new().extra_config("max_queued_messages 0"));
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
    // One client: an hour at full speed would fill the store's disk.
    let load = Load::start(&http, addr, 1);
    let end = Instant::now() + Duration::from_secs(secs);
    let mut rng = rand::thread_rng();
    let mut faults = [0usize; 5];
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(500..3000))).await;
        let f = rng.gen_range(0..faults.len());
        faults[f] += 1;
        match f {
            0 => proxy.cut(),
            1 => {
                proxy.set(Mode::Blackhole);
                tokio::time::sleep(Duration::from_secs(8)).await;
            }
            2 => {
                proxy.set(Mode::ResetMidPacket);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            3 => {
                tether.kill();
                tether = Tether::start(&cfg, &log);
            }
            _ => {
                broker.freeze();
                tokio::time::sleep(Duration::from_secs(rng.gen_range(1..10))).await;
                broker.thaw();
            }
        }
        proxy.heal();
        wait_healthy(&http, addr).await;
    }
    let accepted = load.stop().await;
    assert!(wait_drained(&http, addr, Duration::from_secs(120)).await);
    let t = tally(&mut sub, &accepted, Duration::from_secs(60)).await;
    eprintln!("faults: cut, blackhole, reset, tether SIGKILL, broker SIGSTOP = {faults:?}");
    t.report("soak (random faults)", faults.iter().sum());
    assert_eq!(t.lost, 0, "{t:?}");
}
