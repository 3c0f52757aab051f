//! Messages lost between runs in ways sled does not report (store files
//! truncated or restored from an older copy, the store directory replaced
//! by an empty one) are noticed through the high-water record
//! (`outbox.state`), reported in `/healthz` and metrics, and sequence
//! numbers continue above everything ever accepted. A missing or damaged
//! record is no error. Real stores in temporary directories, written by
//! the outbox crate's public API; the report is read from the daemon's
//! `/healthz` and `/metrics`. The record file itself (missing, damaged)
//! is the outbox crate's own test (`highwater`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tether::app::Daemon;
use tether::config::AdminListen;
use tether_outbox::clock::SystemClock;
use tether_outbox::config::StoreConfig;
use tether_outbox::Outbox;
use tokio_util::sync::CancellationToken;

use crate::outbox_rig::raw::test_engine_file;
use crate::outbox_rig::{client, config_text, free_addr, run_daemon, set_aside, test_message};

/// The config of a daemon with its store under `root`, the hub at a port
/// nobody answers and the admin API on a port the system picks.
fn daemon_config_text(root: &Path) -> String {
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    config_text(free_addr().port(), root, "", Some(any_port))
}

fn store_config(root: &Path) -> StoreConfig {
    tether::config::parse(&daemon_config_text(root), root)
        .expect("valid config")
        .store
}

/// Opens the outbox (retrying while the previous run's writer thread still
/// holds sled's lock).
async fn open(cfg: &StoreConfig) -> Outbox {
    for _ in 0..100 {
        match Outbox::open(cfg, &[], std::sync::Arc::new(SystemClock), &|| {}) {
            Ok(o) => return o,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    panic!("the outbox never opened");
}

/// One run: opens, accepts `n` messages, stops cleanly (upkeep rounds as
/// the daemon's upkeep task runs them: one at start, the last at shutdown,
/// which writes the record). Returns the sequence numbers accepted and what
/// the start reported.
async fn run(cfg: &StoreConfig, n: usize) -> (Vec<u64>, Option<String>) {
    let outbox = open(cfg).await;
    let loss = outbox.core.store_loss();
    let upkeep = outbox.upkeep();
    upkeep.round(false).await;
    let mut seqs = Vec::new();
    for chunk in 0..n.div_ceil(10) {
        let msgs = (0..10.min(n - chunk * 10)).map(test_message).collect();
        let receipts = outbox.intake.submit(msgs).await.expect("accepted");
        seqs.extend(receipts.iter().map(|r| r.seq));
    }
    upkeep.round(true).await;
    (seqs, loss)
}

/// The daemon started on the store under `root`: its `/healthz` body and
/// `/metrics` text, read once it listens; then it stops.
async fn daemon_report(root: &Path) -> (Value, String) {
    let text = daemon_config_text(root);
    let path = root.join("tether.toml");
    std::fs::write(&path, &text).unwrap();
    let cfg = tether::config::parse(&text, root).expect("valid config");
    let stop = CancellationToken::new();
    let daemon = Daemon::new(path, Arc::new(SystemClock));
    let (task, at) = run_daemon(daemon, cfg, stop.clone()).await;
    let AdminListen::Tcp(addr) = at else {
        panic!("the admin API listens on TCP, not {at:?}")
    };
    let http = client();
    let get = |path: &str| http.get(format!("http://{addr}{path}")).send();
    let health: Value = get("/healthz").await.unwrap().json().await.unwrap();
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    stop.cancel();
    assert_eq!(task.await.unwrap(), 0, "the daemon stops cleanly");
    (health, metrics)
}

fn store_dir(cfg: &StoreConfig) -> PathBuf {
    cfg.path.join("outbox")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

async fn live(cfg: &StoreConfig) -> (u64, Option<String>, u64) {
    let outbox = open(cfg).await;
    let c = &outbox.core;
    let next = *c.durable().borrow();
    (c.stats().messages, c.store_loss(), next)
}

#[tokio::test]
async fn a_store_restored_from_an_older_copy_is_reported_and_numbers_continue() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = store_config(dir.path());
    let (first, loss) = run(&cfg, 50).await;
    assert_eq!(loss, None, "a first run reports nothing");
    let old = dir.path().join("older-copy");
    copy_dir(&store_dir(&cfg), &old);
    let (second, _) = run(&cfg, 50).await;
    std::fs::remove_dir_all(store_dir(&cfg)).unwrap();
    std::fs::rename(&old, store_dir(&cfg)).unwrap();
    let (held, loss, next) = live(&cfg).await;
    let loss = loss.expect("the lost writes are reported");
    assert!(loss.contains("lost writes"), "{loss}");
    assert_eq!(
        held, 50,
        "the older copy still holds the first run's messages"
    );
    assert!(
        next > *second.last().unwrap(),
        "numbers continue above {second:?}"
    );
    eprintln!(
        "STORE| restored older copy | accepted {} | kept {held} | reported: {loss}",
        first.len() + second.len()
    );
}

#[tokio::test]
async fn a_truncated_db_file_is_reported_and_numbers_continue() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = store_config(dir.path());
    let (first, _) = run(&cfg, 50).await;
    let db = store_dir(&cfg).join(test_engine_file());
    let len = std::fs::metadata(&db).unwrap().len();
    let (second, _) = run(&cfg, 50).await;
    let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    f.set_len(len).unwrap();
    drop(f);
    let outbox = open(&cfg).await;
    let loss = outbox.core.store_loss();
    let held = outbox.core.stats().messages;
    let r = outbox.intake.submit(vec![test_message(0)]).await.unwrap();
    assert!(
        r[0].seq > *second.last().unwrap(),
        "numbers continue: {} after {second:?}",
        r[0].seq
    );
    // Either the engine refuses the file (moved aside, to be salvaged by
    // the daemon: `outbox_salvage.rs`) or opens the earlier point (the
    // record notices): never silent.
    let aside = !set_aside(&cfg.path).is_empty();
    assert!(
        held >= 100 || loss.is_some() || aside,
        "held {held}, reported {loss:?}"
    );
    eprintln!(
        "STORE| truncated db | accepted {} | kept {held} | reported: {loss:?}",
        first.len() + second.len()
    );
}

#[tokio::test]
async fn an_emptied_store_directory_is_reported_and_numbers_continue() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = store_config(dir.path());
    let (first, _) = run(&cfg, 50).await;
    std::fs::remove_dir_all(store_dir(&cfg)).unwrap();
    std::fs::create_dir(store_dir(&cfg)).unwrap();
    let (health, text) = daemon_report(dir.path()).await;
    let details = &health["components"]["outbox"]["details"];
    let loss = details["storeLoss"]
        .as_str()
        .unwrap_or_else(|| panic!("the replaced store is reported: {details}"))
        .to_string();
    assert!(text.contains("tether_outbox_store_lost_total 1"), "{text}");
    assert!(loss.contains("50 messages"), "{loss}");
    let (held, again, next) = live(&cfg).await;
    assert_eq!(held, 0);
    assert!(
        next > *first.last().unwrap(),
        "numbers continue above {first:?}"
    );
    assert_eq!(again, None, "reported once, not at every start");
    eprintln!("STORE| emptied directory | accepted 50 | kept 0 | reported: {loss}");
}

/// The record still names a store that an earlier run set aside (a power
/// cut came before the new store's record was written): its messages are
/// not gone, salvage imports them, so this is no loss. Once that store is
/// marked salvaged, a record naming another store is a loss again.
#[tokio::test]
async fn a_record_naming_a_store_set_aside_and_not_yet_salvaged_is_no_loss() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = store_config(dir.path());
    run(&cfg, 50).await;
    let aside = cfg.path.join("outbox.corrupt-1");
    std::fs::rename(store_dir(&cfg), &aside).unwrap();
    let outbox = open(&cfg).await;
    assert_eq!(outbox.core.store_loss(), None);
    drop(outbox);

    run(&cfg, 20).await;
    std::fs::remove_dir_all(store_dir(&cfg)).unwrap();
    std::fs::write(aside.join("tether-salvaged.json"), "{}").unwrap();
    let outbox = open(&cfg).await;
    let loss = outbox
        .core
        .store_loss()
        .expect("a replaced store is a loss");
    assert!(loss.contains("not the one"), "{loss}");
}
