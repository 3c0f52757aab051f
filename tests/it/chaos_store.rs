//! Store files damaged between runs (truncated, bytes flipped, emptied):
//! tether starts anyway, sets an unusable store aside and says so, keeps
//! accepting and delivering. Messages in a damaged store may be gone (that
//! is the damage), but never silently: the store is set aside or the loss
//! is reported in `/healthz`; everything accepted after the restart must
//! arrive.
//! `TETHER_CHAOS_LONG=1` is not needed: the four damages run in seconds.
//! The garbage-store case is `outbox_crash.rs`.

use crate::chaos_rig;

use std::path::Path;
use std::time::Duration;

use crate::chaos_rig::{tally, wait_drained, Load};
use crate::outbox_rig::{client, config_text, free_addr, wait_healthy, Subscriber, Tether, EVENTS};
use rand::Rng;
use tether_testkit::{Broker, BrokerOptions};

#[derive(Debug, Clone, Copy)]
enum Damage {
    TruncateHalf,
    FlipBytes,
    Empty,
    GarbageConf,
}

fn damage(store: &Path, how: Damage) {
    let db = store.join("db");
    let mut bytes = std::fs::read(&db).expect("the store has a db file");
    match how {
        Damage::TruncateHalf => bytes.truncate(bytes.len() / 2),
        Damage::FlipBytes => {
            let mut rng = rand::thread_rng();
            for _ in 0..64 {
                let i = rng.gen_range(0..bytes.len());
                bytes[i] ^= 1 << rng.gen_range(0..8);
            }
        }
        Damage::Empty => bytes.clear(),
        Damage::GarbageConf => {
            std::fs::write(store.join("conf"), b"\xff\xfe garbage").unwrap();
            return;
        }
    }
    std::fs::write(&db, bytes).unwrap();
}

#[tokio::test]
async fn a_damaged_store_is_survived() {
    for how in [
        Damage::TruncateHalf,
        Damage::FlipBytes,
        Damage::Empty,
        Damage::GarbageConf,
    ] {
        run(how).await;
    }
}

async fn run(how: Damage) {
    let mut broker = Broker::start(BrokerOptions::new().extra_config("max_queued_messages 0"));
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let cfg = dir.path().join("tether.toml");
    let text = config_text(broker.plain_port(), dir.path(), "", Some(addr));
    std::fs::write(&cfg, text).unwrap();
    let log = dir.path().join("tether.log");
    let http = client();
    // Fill the store while the hub is down, then kill tether without a goodbye.
    let mut tether = Tether::start(&cfg, &log);
    wait_healthy(&http, addr).await;
    broker.kill();
    let load = Load::start(&http, addr, 2);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = load.stop().await;
    // Let the high-water record catch up (it is rewritten at most once a
    // second): what it has not seen cannot be reported missing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tether.kill();
    damage(&dir.path().join("store").join("outbox"), how);

    broker.restart();
    let mut sub = Subscriber::connect(broker.plain_port(), &format!("{EVENTS}#")).await;
    let _tether = Tether::start(&cfg, &log);
    let mut health = serde_json::Value::Null;
    for _ in 0..100 {
        health = chaos_rig::health(&http, addr).await;
        if health["status"] == "ok" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let tail = text.lines().rev().take(20).collect::<Vec<_>>().join("\n");
    assert_eq!(health["status"], "ok", "{how:?}: {health}\n{tail}");
    let load = Load::start(&http, addr, 2);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = load.stop().await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_drained(&http, addr, Duration::from_secs(30)).await,
        "{how:?}: drained; log tail:\n{}",
        text.lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    let t = tally(&mut sub, &after, Duration::from_secs(20)).await;
    t.report(&format!("store {how:?} (after restart)"), 1);
    assert_eq!(t.lost, 0, "{how:?}: {t:?}");
    assert!(t.accepted > 50, "{how:?}: load ran after the damage: {t:?}");
    // What the damaged store still delivered, for the record.
    let old = tally(&mut sub, &before, Duration::from_secs(2)).await;
    let aside = text.contains("moved aside");
    eprintln!(
        "store {how:?}: {} accepted before the damage, {} of them delivered; set aside: {aside}",
        old.accepted, old.delivered
    );
    // sled may recover a damaged log to an earlier intact point without an
    // error; the high-water record outside sled must then report it.
    let reported = &health["components"]["outbox"]["details"]["storeLoss"];
    eprintln!("store {how:?}: reported {reported}");
    assert!(
        old.lost == 0 || aside || reported.is_string(),
        "{how:?}: {} accepted messages vanished without a report: {health}",
        old.lost
    );
}
