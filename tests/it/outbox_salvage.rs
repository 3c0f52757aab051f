//! Never abandoning a store, with the real binary and real files: tether
//! killed any number of times while it opens its store still delivers the
//! whole backlog afterwards, and nothing is set aside; a store that is set
//! aside (an engine panic recorded while opening, corrupt data) is
//! salvaged in the background and its readable messages are delivered,
//! also when tether is killed mid-salvage; `tether outbox import DIR`
//! imports a copied store, once. `TETHER_TEST_ENGINE=redb` runs them on
//! redb; `TETHER_CHAOS_LONG=1` kills 600 times instead of 150.

use crate::outbox_rig;

use crate::chaos_rig;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::chaos_rig::{long, tally, wait_drained};
use crate::outbox_rig::raw::{test_engine, RawStore};
use crate::outbox_rig::{
    client, daemon_config, wait_healthy, Subscriber, Tether, EVENTS, SET_ASIDE_PREFIX,
};
use rand::Rng;
use serde_json::Value;
use tether_testkit::{Broker, BrokerOptions};

/// Waits until the admin API answers (the hub may be down).
async fn wait_up(http: &reqwest::Client, addr: SocketAddr) {
    for _ in 0..200 {
        if !chaos_rig::health(http, addr).await.is_null() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("tether's admin API never answered at {addr}");
}

/// The reproduction: a backlog queued with the broker down, then
/// tether SIGKILLed at random moments in its first 80 ms, many times: the
/// store is never set aside and every message is delivered afterwards.
#[tokio::test]
async fn killed_any_number_of_times_while_opening_the_backlog_is_delivered() {
    let kills = if long() { 600 } else { 150 };
    let mut broker = Broker::start(broker_options());
    let dir = tempfile::tempdir().unwrap();
    let (cfg, log, addr) = daemon_config(dir.path(), broker.plain_port());
    let http = client();
    broker.kill();
    let mut tether = Tether::start(&cfg, &log);
    wait_up(&http, addr).await;
    let accepted = outbox_rig::post_attributes(&http, addr, 5000).await;
    tether.kill();
    let mut rng = rand::thread_rng();
    for _ in 0..kills {
        let mut t = Tether::start(&cfg, &log);
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..80)));
        t.kill();
    }
    broker.restart();
    let mut sub = Subscriber::connect(broker.plain_port(), &format!("{EVENTS}#")).await;
    let _tether = Tether::start(&cfg, &log);
    let health = wait_healthy(&http, addr).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let tail = text.lines().rev().take(30).collect::<Vec<_>>().join("\n");
    assert!(
        wait_drained(&http, addr, Duration::from_secs(60)).await,
        "drained; log tail:\n{tail}"
    );
    let t = tally(&mut sub, &accepted, Duration::from_secs(30)).await;
    t.report("SIGKILL while opening", kills);
    // Each start after a kill mid-open says so; two in a row is what the
    // old crash count took for a corrupt store. Every start first warns
    // about the test config's mode, which splits the log into starts.
    let starts: Vec<bool> = text
        .split("holds inline secrets")
        .skip(1)
        .map(|run| run.contains("an earlier open of the outbox store was interrupted"))
        .collect();
    let in_row = starts.windows(2).filter(|w| w[0] && w[1]).count();
    eprintln!(
        "interrupted opens: {} in {} starts, {in_row} twice in a row",
        starts.iter().filter(|i| **i).count(),
        starts.len()
    );
    assert_eq!(t.lost, 0, "{t:?}\n{tail}");
    assert!(!text.contains("moved aside"), "nothing set aside:\n{tail}");
    let aside = outbox_rig::set_aside(&dir.path().join("store"));
    assert!(aside.is_empty(), "{aside:?}");
    assert!(
        health["components"]["outbox"]["details"]["storeLoss"].is_null(),
        "{health}"
    );
}

/// The broker queues without limit for the subscriber (its default of
/// 1,000 queued messages would drop some of a large backlog).
fn broker_options() -> BrokerOptions {
    BrokerOptions::new().extra_config("max_queued_messages 0")
}

/// Opens the store in `dir` raw (waiting while a killed tether's lock goes).
fn raw_store(dir: &Path) -> RawStore {
    for _ in 0..250 {
        match RawStore::open(test_engine(), dir) {
            Ok(s) => return s,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    panic!("cannot open {} raw", dir.display());
}

/// Starts tether until its admin API answers: the first start may meet
/// the lock of the store the test just closed.
async fn start_up(cfg: &Path, log: &Path, http: &reqwest::Client, addr: SocketAddr) -> Tether {
    for _ in 0..50 {
        let mut t = Tether::start(cfg, log);
        for _ in 0..100 {
            if !chaos_rig::health(http, addr).await.is_null() {
                return t;
            }
            if t.child.try_wait().ok().flatten().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        t.kill();
    }
    panic!(
        "tether never started; log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// `/healthz` `components.outbox.details` once `done(details)` holds.
async fn details_when(
    http: &reqwest::Client,
    addr: SocketAddr,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..1200 {
        let h = chaos_rig::health(http, addr).await;
        let d = &h["components"]["outbox"]["details"];
        if done(d) {
            return d.clone();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("never: {what}");
}

fn salvage_done(d: &Value) -> bool {
    d["salvage"]["state"] == "done"
}

async fn metrics(http: &reqwest::Client, addr: SocketAddr) -> String {
    http.get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The sequence numbers a segment key names. Store format 2 keeps the
/// messages of one group commit under one key: `s`, the first and the
/// last sequence number (u64 big-endian each), the record bytes (u32); the
/// damage below is written in that layout.
fn segment_range(key: &[u8]) -> (u64, u64) {
    assert_eq!((key.len(), key[0]), (21, b's'), "a segment key: {key:?}");
    let first = u64::from_be_bytes(key[1..9].try_into().unwrap());
    let last = u64::from_be_bytes(key[9..17].try_into().unwrap());
    (first, last)
}

fn set_aside_dirs(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(SET_ASIDE_PREFIX)
        })
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// A store of `n` messages queued with the hub down, tether killed after.
struct Queued {
    broker: Broker,
    dir: tempfile::TempDir,
    cfg: PathBuf,
    log: PathBuf,
    addr: SocketAddr,
    http: reqwest::Client,
    ids: Vec<String>,
}

async fn queued(n: usize) -> Queued {
    let mut broker = Broker::start(broker_options());
    let dir = tempfile::tempdir().unwrap();
    let (cfg, log, addr) = daemon_config(dir.path(), broker.plain_port());
    let http = client();
    broker.kill();
    let mut t = Tether::start(&cfg, &log);
    wait_up(&http, addr).await;
    let ids = outbox_rig::post_attributes(&http, addr, n).await;
    t.kill();
    Queued {
        broker,
        dir,
        cfg,
        log,
        addr,
        http,
        ids,
    }
}

impl Queued {
    fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Stops `tether`, starts the broker, a subscriber and tether again
    /// (so nothing is published before the subscription), then checks every
    /// queued id arrives.
    async fn all_delivered(&mut self, mut tether: Tether) {
        tether.kill();
        self.broker.restart();
        let mut sub = Subscriber::connect(self.broker.plain_port(), &format!("{EVENTS}#")).await;
        let _tether = start_up(&self.cfg, &self.log, &self.http, self.addr).await;
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail = text.lines().rev().take(30).collect::<Vec<_>>().join("\n");
        assert!(
            wait_drained(&self.http, self.addr, Duration::from_secs(60)).await,
            "drained; log tail:\n{tail}"
        );
        let t = tally(&mut sub, &self.ids, Duration::from_secs(30)).await;
        assert_eq!(t.lost, 0, "{t:?}\n{tail}");
    }
}

/// A panic recorded while opening (what a release build, which aborts on
/// panic, leaves behind) sets the store aside without opening it again;
/// salvage imports all of it and nothing counts as lost.
#[tokio::test]
async fn a_store_set_aside_after_an_engine_panic_is_salvaged_and_delivered() {
    let mut q = queued(3000).await;
    std::fs::write(
        q.root().join("outbox.opening"),
        "panic\nindex out of bounds (thread main)\n",
    )
    .unwrap();
    let t = Tether::start(&q.cfg, &q.log);
    wait_up(&q.http, q.addr).await;
    let d = details_when(&q.http, q.addr, "salvage done", salvage_done).await;
    assert_eq!(d["salvage"]["messages"], 3000, "{d}");
    assert_eq!(d["salvage"]["unreadable"], 0, "{d}");
    assert!(d["storeLoss"].is_null(), "nothing lost: {d}");
    let aside = set_aside_dirs(&q.root());
    assert_eq!(aside.len(), 1);
    assert!(aside[0].join("tether-salvaged.json").exists());
    let m = metrics(&q.http, q.addr).await;
    assert!(
        m.contains("tether_outbox_salvaged_total{kind=\"message\"} 3000"),
        "{m}"
    );
    assert!(m.contains("tether_outbox_unreadable_total 0"), "{m}");
    let text = std::fs::read_to_string(&q.log).unwrap();
    assert!(
        text.contains("moved aside") && text.contains("outbox salvage ended"),
        "{text}"
    );
    q.all_delivered(t).await;
}

/// Corrupt data (a malformed counter, undecodable segments) sets the store
/// aside; salvage delivers every readable message and counts the rest in
/// `/healthz`, `storeLoss` and the metrics.
#[tokio::test]
async fn a_corrupt_store_is_set_aside_and_its_readable_messages_delivered() {
    let mut q = queued(1000).await;
    let store = q.root().join("outbox");
    let s = raw_store(&store);
    let rows = s.scan(b"s", b"t");
    let ranges: Vec<(u64, u64)> = rows.iter().map(|(k, _)| segment_range(k)).collect();
    let held: u64 = ranges.iter().map(|(first, last)| last - first + 1).sum();
    assert_eq!(held, 1000);
    // The store was new and the messages were posted one request after the
    // other: sequence number n is the n-th id posted.
    assert_eq!(
        (ranges[0].0, ranges[ranges.len() - 1].1),
        (1, 1000),
        "{ranges:?}"
    );
    let mut damage = vec![(b"k:live".to_vec(), b"bad".to_vec())];
    let mut damaged = Vec::new();
    for ((k, _), (first, last)) in rows.iter().zip(&ranges).step_by(10) {
        damage.push((k.clone(), b"\x07garbage".to_vec()));
        damaged.extend(q.ids[(first - 1) as usize..*last as usize].iter().cloned());
    }
    s.put(damage);
    drop(s);
    q.ids.retain(|id| !damaged.contains(id));
    let t = start_up(&q.cfg, &q.log, &q.http, q.addr).await;
    let d = details_when(&q.http, q.addr, "salvage done", salvage_done).await;
    let lost = damaged.len();
    assert!(lost > 0 && lost < 1000);
    assert_eq!(d["salvage"]["messages"], 1000 - lost, "{d}");
    assert_eq!(d["salvage"]["unreadable"], lost, "{d}");
    let loss = d["storeLoss"].as_str().unwrap_or_default();
    assert!(
        loss.contains(&format!("{lost} records could not be read")),
        "{d}"
    );
    let m = metrics(&q.http, q.addr).await;
    assert!(
        m.contains(&format!("tether_outbox_unreadable_total {lost}")),
        "{m}"
    );
    q.all_delivered(t).await;
}

/// tether killed while it salvages resumes after the last durable group:
/// the new store ends with every message exactly once.
#[tokio::test]
async fn a_kill_during_salvage_resumes_without_loss_or_duplicates() {
    let n = 20_000;
    let mut q = queued(n).await;
    std::fs::write(q.root().join("outbox.opening"), "panic\nboom\n").unwrap();
    let mut kills = 0;
    let running = loop {
        let mut t = Tether::start(&q.cfg, &q.log);
        wait_up(&q.http, q.addr).await;
        let d = details_when(&q.http, q.addr, "salvage under way", |d| {
            d["salvage"]["messages"].as_u64().unwrap_or(0) > 0 || salvage_done(d)
        })
        .await;
        if salvage_done(&d) || kills == 3 {
            break t;
        }
        t.kill();
        kills += 1;
    };
    let d = details_when(&q.http, q.addr, "salvage done", salvage_done).await;
    eprintln!("salvage killed {kills} times: {d}");
    assert!(kills > 0, "the salvage was never caught under way: {d}");
    assert_eq!(d["salvage"]["messages"], n, "{d}");
    assert_eq!(d["messages"], n, "each message once in the new store: {d}");
    q.all_delivered(running).await;
}

/// `tether outbox import DIR` imports a copied store into the running
/// daemon's, prints the counts, and imports nothing twice; bad input gets
/// clear errors.
#[tokio::test]
async fn tether_outbox_import_of_a_copied_store_imports_it_once() {
    let source = queued(500).await;
    let copy = tempfile::tempdir().unwrap();
    let copied = copy.path().join("outbox");
    copy_dir(&source.root().join("outbox"), &copied);
    let mut q = queued(0).await;
    q.ids = source.ids.clone();
    let tether = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(args)
            .arg("-c")
            .arg(&q.cfg)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let dir = copied.to_str().unwrap();
    let (code, _, err) = tether(&["outbox", "import", dir]);
    assert_eq!(code, Some(69), "daemon not running: {err}");
    assert!(err.contains("is tether running?"), "{err}");
    let t = Tether::start(&q.cfg, &q.log);
    wait_up(&q.http, q.addr).await;
    let (code, out, err) = tether(&["outbox", "import", dir]);
    assert_eq!(code, Some(0), "{out}{err}");
    let o: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(o["messages"], 500, "{o}");
    assert_eq!(o["unreadable"], 0, "{o}");
    assert_eq!(o["already"], false, "{o}");
    let (code, out, _) = tether(&["outbox", "import", dir]);
    assert_eq!(code, Some(0));
    let again: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(again["already"], true, "{again}");
    let d = details_when(&q.http, q.addr, "imported", |d| d["messages"] == 500).await;
    assert_eq!(d["messages"], 500, "nothing twice: {d}");
    assert!(
        !copied.join("tether-salvaged.json").exists(),
        "a copy is left as it is"
    );

    let missing = copy.path().join("nope");
    let (code, _, err) = tether(&["outbox", "import", missing.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("does not exist"), "{err}");
    let (code, _, err) = tether(&["outbox", "import", copy.path().to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("is not an outbox store"), "{err}");
    let live = q.root().join("outbox");
    let (code, _, err) = tether(&["outbox", "import", live.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("409") && err.contains("runs with"), "{err}");
    q.all_delivered(t).await;
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// A store the other engine wrote imports too (a way to switch engines
/// without losing the queue).
#[tokio::test]
async fn a_store_of_the_other_engine_imports() {
    let other = if test_engine() == "redb" {
        "sled"
    } else {
        "redb"
    };
    let mut broker = Broker::start(broker_options());
    let src = tempfile::tempdir().unwrap();
    let (cfg, log, addr) = daemon_config(src.path(), broker.plain_port());
    let text: String = std::fs::read_to_string(&cfg)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("engine ="))
        .map(|l| format!("{l}\n"))
        .collect();
    let text = text.replace("[store]\n", &format!("[store]\nengine = \"{other}\"\n"));
    std::fs::write(&cfg, text).unwrap();
    let http = client();
    broker.kill();
    let mut t = Tether::start(&cfg, &log);
    wait_up(&http, addr).await;
    let ids = outbox_rig::post_attributes(&http, addr, 300).await;
    t.kill();
    drop(broker);
    let mut q = queued(0).await;
    q.ids = ids;
    let t = Tether::start(&q.cfg, &q.log);
    wait_up(&q.http, q.addr).await;
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["outbox", "import"])
        .arg(src.path().join("store").join("outbox"))
        .arg("-c")
        .arg(&q.cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let o: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(o["messages"], 300, "{o}");
    q.all_delivered(t).await;
}
