//! Power cuts under the real binary: its store lives on the power-cut file
//! system (`powercut_rig`), which forgets every write not fsynced when the
//! power fails and SIGKILLs tether at the same instant. HTTP clients post
//! attribute batches the whole time and record every id answered 202;
//! tether is cut again and again (while it opens the store, at a random
//! moment, at a random file operation, with the hub down so the backlog
//! grows, and with the hub up so deliveries and cursor writes are cut
//! too), restarted after each cut, and finally every acknowledged id must
//! reach a persistent QoS 1 subscriber (duplicates are allowed, counted and
//! printed as a `CHAOS|` row). Both engines; `TETHER_CHAOS_LONG=1` runs many
//! more cycles.
//!
//! Scenarios that need a prepared store (an old format to migrate, a
//! damaged store to salvage) write it under [`PowerRun::store_root`], call
//! [`PowerRun::settle`], then cut with [`PowerRun::cut_while_starting`].

mod outbox_rig;
mod support;

mod chaos_rig;
mod powercut_rig;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use chaos_rig::{health, long, tally, wait_drained, Load, Tally};
use outbox_rig::{client, free_addr, wait_healthy, Subscriber, Tether, EVENTS, TOKEN};
use powercut_rig::{after_ops, PowerCut, Rules};
use rand::Rng;
use support::{Broker, BrokerOptions};

/// Changing file operations from exec to the admin API answering: 25-27
/// (sled), 26 (redb; 39 creating the store), counted with
/// [`PowerCut::ops`]. Every one of these (and a few of the first intake's)
/// gets a cut.
const START_OPS: u64 = 40;

/// One engine's power-cut run: the mount, the broker and subscriber, the
/// load, and the config of the binary.
struct PowerRun {
    engine: &'static str,
    http: reqwest::Client,
    addr: SocketAddr,
    cfg: PathBuf,
    log: PathBuf,
    broker: Broker,
    sub: Subscriber,
    load: Option<Load>,
    /// A port where no broker listens (the hub is down).
    dead_port: u16,
    /// Config and log, off the power-cut mount; dropped after `pc`.
    _dir: tempfile::TempDir,
    /// Dropped after every tether started by the test has been reaped.
    pc: PowerCut,
}

impl PowerRun {
    async fn new(engine: &'static str, pc: PowerCut) -> PowerRun {
        let broker = Broker::start(BrokerOptions::new().extra_config("max_queued_messages 0"));
        let sub = Subscriber::connect(broker.plain_port(), &format!("{EVENTS}#")).await;
        let dir = tempfile::tempdir().unwrap();
        PowerRun {
            engine,
            http: client(),
            addr: free_addr(),
            cfg: dir.path().join("tether.toml"),
            log: dir.path().join("tether.log"),
            dead_port: free_addr().port(),
            broker,
            sub,
            load: None,
            _dir: dir,
            pc,
        }
    }

    /// `store.path`: created by tether itself on the first start.
    fn store_root(&self) -> PathBuf {
        self.pc.path().join("store")
    }

    /// Makes what the test wrote under the mount durable.
    fn settle(&self) {
        self.pc.settle();
    }

    /// Starts the binary with the hub up or down.
    fn start(&self, hub_up: bool) -> Tether {
        let port = if hub_up {
            self.broker.plain_port()
        } else {
            self.dead_port
        };
        let text = format!(
            "[hub]\nurl = \"mqtt://127.0.0.1:{port}\"\ndevice_id = \"dev1\"\nallow_insecure = true\n\
             keep_alive = \"5s\"\nconnect_timeout = \"2s\"\n[store]\npath = \"{}\"\nengine = \"{}\"\n\
             [admin]\nlisten = \"{}\"\ntoken = \"{TOKEN}\"\n",
            self.store_root().display(),
            self.engine,
            self.addr
        );
        std::fs::write(&self.cfg, text).unwrap();
        // It holds the admin token: tether warns about a readable file.
        std::fs::set_permissions(&self.cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
        Tether::start(&self.cfg, &self.log)
    }

    /// Starts posting (3 clients) until [`PowerRun::finish`].
    fn start_load(&mut self) {
        self.load = Some(Load::start(&self.http, self.addr, 3));
    }

    fn accepted(&self) -> usize {
        self.load.as_ref().map_or(0, Load::count)
    }

    /// Starts tether and cuts the power at its `op`-th changing file
    /// operation (opening the store, migrating, salvaging, or later when
    /// opening takes fewer). Returns whether the cut came at that operation.
    async fn cut_while_starting(&self, op: u64, hub_up: bool) -> bool {
        let mut tether = self.start(hub_up);
        self.pc.arm(&tether.child, after_ops(op));
        self.pc
            .finish_armed(&mut tether.child, Duration::from_secs(20))
            .await
    }

    /// [`PowerRun::cut_while_starting`] at each of the first `ops` file
    /// operations in turn; returns how many cuts came at their operation.
    async fn sweep_start(&self, ops: u64, hub_up: bool) -> u32 {
        let mut at = 0;
        for op in 1..=ops {
            at += u32::from(self.cut_while_starting(op, hub_up).await);
        }
        at
    }

    /// Starts tether, waits until it accepts messages (and, with the hub
    /// up, is connected), then lets it run and cuts the power: after
    /// `run`, or at the `op`-th changing file operation after that.
    async fn cut_while_running(&self, hub_up: bool, run: Duration, op: Option<u64>) {
        let mut tether = self.start(hub_up);
        self.wait_accepting(hub_up).await;
        tokio::time::sleep(run).await;
        match op {
            Some(op) => {
                self.pc.arm(&tether.child, after_ops(op));
                self.pc
                    .finish_armed(&mut tether.child, Duration::from_secs(20))
                    .await;
            }
            None => self.pc.cut(&mut tether.child),
        }
    }

    /// Waits until the running tether answered 202 at least once more.
    async fn wait_accepting(&self, hub_up: bool) {
        if hub_up {
            wait_healthy(&self.http, self.addr).await;
        }
        let before = self.accepted();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.accepted() == before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: tether accepts nothing after a power cut; health {}; log tail:\n{}",
                self.engine,
                health(&self.http, self.addr).await,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut tail: Vec<&str> = text.lines().rev().take(40).collect();
        tail.reverse();
        tail.join("\n")
    }

    /// Stops the load, starts tether with the hub up, waits until the
    /// outbox drained and tallies what the subscriber got. Fails when the
    /// log says a store was lost, or was moved aside unless `aside`.
    async fn finish(&mut self, aside: bool) -> Tally {
        let accepted = match self.load.take() {
            Some(load) => load.stop().await,
            None => Vec::new(),
        };
        let _tether = self.start(true);
        wait_healthy(&self.http, self.addr).await;
        assert!(
            wait_drained(&self.http, self.addr, Duration::from_secs(90)).await,
            "{}: the outbox never drained after the power cuts; log tail:\n{}",
            self.engine,
            self.log_tail()
        );
        let t = tally(&mut self.sub, &accepted, Duration::from_secs(30)).await;
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let bad = [
            "moved aside",
            "lost writes",
            "not the one tether last ran with",
        ];
        for bad in bad.into_iter().skip(usize::from(aside)) {
            if let Some(at) = text.lines().position(|l| l.contains(bad)) {
                let lines: Vec<&str> = text.lines().collect();
                panic!(
                    "{}: a power cut made tether report `{bad}`:\n{}",
                    self.engine,
                    lines[at.saturating_sub(12)..(at + 4).min(lines.len())].join("\n")
                );
            }
        }
        t
    }
}

/// Cuts on `engine`: first at every file operation of a start in turn
/// (opening, creating or recovering the store), then cycles at random,
/// the first half with the hub down (intake only, the backlog grows), the
/// second with it up (delivery and cursor writes); each cycle cuts while
/// starting, at a random moment, or at a random file operation.
async fn power_cuts(engine: &'static str) {
    let name = format!("outbox_powercut ({engine})");
    let Some(pc) = PowerCut::mount_or_skip(&name, Rules::Posix) else {
        return;
    };
    let cycles: u32 = if long() { 150 } else { 12 };
    let mut run = PowerRun::new(engine, pc).await;
    run.start_load();
    let mut at_start = run.sweep_start(START_OPS, false).await;
    let mut rng = rand::thread_rng();
    for cycle in 0..cycles {
        let hub_up = cycle >= cycles / 2;
        let wait = Duration::from_millis(rng.gen_range(20..400));
        match cycle % 3 {
            0 => {
                let op = rng.gen_range(1..=START_OPS);
                at_start += u32::from(run.cut_while_starting(op, hub_up).await);
            }
            1 => run.cut_while_running(hub_up, wait, None).await,
            _ => {
                let op = rng.gen_range(1..400);
                run.cut_while_running(hub_up, wait, Some(op)).await;
            }
        }
    }
    let (cuts, ops) = (run.pc.cuts(), run.pc.ops());
    let t = run.finish(false).await;
    t.report(
        &format!(
            "power cut ({engine}; {at_start} at a chosen start operation; {ops} file operations)"
        ),
        usize::try_from(cuts).unwrap_or(usize::MAX),
    );
    assert!(t.accepted > 100, "{engine}: the load ran: {t:?}");
    assert_eq!(t.lost, 0, "{engine}: acknowledged messages lost: {t:?}");
}

#[tokio::test]
async fn power_cuts_lose_no_acknowledged_message_on_sled() {
    power_cuts("sled").await;
}

#[tokio::test]
async fn power_cuts_lose_no_acknowledged_message_on_redb() {
    power_cuts("redb").await;
}

/// A store tether cannot open is moved aside and a new one started: cuts
/// at every file operation of those starts lose nothing acknowledged
/// afterwards, and the damaged store ends up moved aside exactly once (a
/// move that a cut undid is done again, one that was durable is never
/// repeated). The pattern for every scenario that needs a prepared store
/// (an old format to migrate, a store to salvage): write it under
/// `store_root()`, `settle()`, `sweep_start(..)`, `finish(..)`.
#[tokio::test]
async fn power_cuts_while_a_damaged_store_is_moved_aside_lose_nothing_acknowledged() {
    let Some(pc) = PowerCut::mount_or_skip("outbox_powercut (moved aside)", Rules::Posix) else {
        return;
    };
    let mut run = PowerRun::new("redb", pc).await;
    let outbox = run.store_root().join("outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    std::fs::write(outbox.join("outbox.redb"), vec![0x5A; 64 * 1024]).unwrap();
    run.settle();
    run.start_load();
    let at_start = run.sweep_start(START_OPS, false).await;
    // The new store must keep what it acknowledges through more cuts.
    for ms in [100, 250, 400] {
        run.cut_while_running(true, Duration::from_millis(ms), None)
            .await;
    }
    let cuts = run.pc.cuts();
    let t = run.finish(true).await;
    t.report(
        &format!("power cut (redb; damaged store moved aside; {at_start} at a chosen operation)"),
        usize::try_from(cuts).unwrap_or(usize::MAX),
    );
    assert!(t.accepted > 100, "the load ran: {t:?}");
    assert_eq!(t.lost, 0, "acknowledged messages lost: {t:?}");
    let aside: Vec<_> = std::fs::read_dir(run.store_root())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("outbox.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "moved aside once: {aside:?}");
    assert!(aside[0].path().join("outbox.redb").exists());
}
