//! Store format 1 (one key per message) to 2 (segments), on the real
//! binary: a format-1 store of 50,000 messages written directly in the
//! old layout is migrated while tether is SIGKILLed at random moments of
//! the migration; every message then reaches the broker, none lost.
//! `TETHER_TEST_ENGINE=redb` runs it on redb.

mod outbox_rig;
mod support;

use std::path::Path;
use std::time::Duration;

use outbox_rig::{client, daemon_config, wait_healthy, Subscriber, Tether, EVENTS};
use rand::Rng;
use support::{Broker, BrokerOptions};
use tether::outbox::ages::Checkpoint;
use tether::outbox::keys;
use tether::outbox::message::Stored;
use tether::outbox::store::{Batch, RedbStorage, SledStorage, Storage};

const MESSAGES: u64 = 50_000;
const STARTED: &str = "migrating the outbox store to format 2";
const READY: &str = "tether started";

/// Writes `MESSAGES` messages in the format-1 layout (`m` + seq keys, a
/// hub cursor, the counters, format 1) and returns their ids.
fn write_format_1(store_dir: &Path) -> Vec<String> {
    let dir = store_dir.join("outbox");
    let storage: Box<dyn Storage> = if std::env::var("TETHER_TEST_ENGINE").as_deref() == Ok("redb")
    {
        Box::new(RedbStorage::open(&dir, 4 << 20).unwrap())
    } else {
        Box::new(SledStorage::open(&dir, 4 << 20).unwrap())
    };
    let mut ids = Vec::new();
    let mut live_b = 0;
    for chunk in (1..=MESSAGES).collect::<Vec<_>>().chunks(5000) {
        let mut batch = Batch::default();
        for &seq in chunk {
            let id = uuid::Uuid::new_v4();
            let m = Stored {
                seq,
                id,
                message_type: "attribute".into(),
                utc_ms: 1_700_000_000_000,
                accepted_ms: 0,
                only_sink: None,
                body: serde_json::json!({"id": id.to_string(), "n": seq, "pad": "x".repeat(100)})
                    .to_string()
                    .into_bytes(),
            };
            let v = m.encode();
            live_b += v.len() as u64;
            batch.put(keys::numbered(keys::MSG_V1, seq).to_vec(), v);
            ids.push(id.to_string());
        }
        storage.apply(batch).unwrap();
    }
    let mut batch = Batch::default();
    batch.put(keys::NEXT.to_vec(), (MESSAGES + 1).to_be_bytes().to_vec());
    batch.put(keys::LIVE.to_vec(), keys::pair(MESSAGES, live_b));
    let mut cursor = keys::pair(1, MESSAGES);
    cursor.extend_from_slice(&live_b.to_be_bytes());
    batch.put(keys::cursor("hub"), cursor);
    // Every format-1 commit wrote the age-clock checkpoint: the messages
    // (accepted at store time 0) are young, not one TTL old.
    batch.put(keys::CLOCK.to_vec(), Checkpoint::default().encode());
    batch.put(b"k:format".to_vec(), 1u32.to_be_bytes().to_vec());
    storage.apply(batch).unwrap();
    storage.sync().unwrap();
    ids
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
