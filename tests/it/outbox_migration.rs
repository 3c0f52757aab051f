//! Store format 1 (one key per message) to 2 (segments), on the real
//! binary: a format-1 store of 50,000 messages written directly in the
//! old layout is migrated while tether is SIGKILLed at random moments of
//! the migration; every message then reaches the broker, none lost.
//! `TETHER_TEST_ENGINE=redb` runs it on redb.

use crate::outbox_rig;

use std::path::Path;
use std::time::Duration;

use crate::outbox_rig::raw::{test_engine, RawStore};
use crate::outbox_rig::{client, daemon_config, wait_healthy, Subscriber, Tether, EVENTS};
use rand::Rng;
use tether_testkit::{Broker, BrokerOptions};

const MESSAGES: u64 = 50_000;
const STARTED: &str = "migrating the outbox store to format 2";
const READY: &str = "tether started";

/// Writes `MESSAGES` messages in the format-1 layout and returns their ids.
fn write_format_1(store_dir: &Path) -> Vec<String> {
    let store = RawStore::open(test_engine(), &store_dir.join("outbox")).unwrap();
    outbox_rig::format1::write(&store, MESSAGES)
}

fn log_has(log: &Path, what: &str) -> usize {
    std::fs::read_to_string(log).map_or(0, |t| t.matches(what).count())
}

/// Waits until the log holds one of `what` more often than `before` says,
/// or the process exited; false when it exited first.
async fn wait_log(log: &Path, what: &[(&str, usize)], tether: &mut Tether) -> bool {
    for _ in 0..1200 {
        if what.iter().any(|&(w, before)| log_has(log, w) > before) {
            return true;
        }
        if tether.child.try_wait().ok().flatten().is_some() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("tether never logged any of {what:?}");
}

/// SIGKILL at random moments of the migration, restart, until a start
/// finishes it; then every message is delivered.
#[tokio::test]
async fn a_migration_killed_at_random_moments_finishes_and_loses_nothing() {
    let broker = Broker::start(BrokerOptions::new().extra_config("max_queued_messages 0"));
    let mut sub = Subscriber::connect(broker.plain_port(), &format!("{EVENTS}#")).await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, log, addr) = daemon_config(dir.path(), broker.plain_port());
    let ids = write_format_1(&dir.path().join("store"));
    let mut rng = rand::thread_rng();
    let mut kills = 0;
    let mut tether = loop {
        let started = log_has(&log, STARTED);
        let ready = log_has(&log, READY);
        let mut tether = Tether::start(&cfg, &log);
        // A kill just after the last step leaves nothing to migrate: then
        // the start goes straight to ready.
        let waits = [(STARTED, started), (READY, ready)];
        assert!(wait_log(&log, &waits, &mut tether).await, "tether exited");
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..400))).await;
        if log_has(&log, READY) > ready || kills >= 12 {
            break tether;
        }
        tether.kill();
        kills += 1;
    };
    assert!(
        wait_log(&log, &[(READY, 0)], &mut tether).await,
        "tether exited"
    );
    wait_healthy(&client(), addr).await;
    sub.until_all(&ids, Duration::from_secs(180)).await;
    tether.kill();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("moved aside"),
        "the store was never set aside:\n{text}"
    );
    assert!(kills > 0, "the migration was never interrupted");
    eprintln!("migrated after {kills} kills");
}
