//! The real binary on the power-cut file system (`powercut_rig`), for the
//! `outbox_powercut*` scenarios: one engine's mount, broker, persistent
//! subscriber, HTTP load and config, with the ways to cut it (while
//! starting, while running, at an armed file operation) and the final run
//! that checks every acknowledged message arrived.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use std::collections::HashMap;

use crate::chaos_rig::{health, tally_counts, wait_drained, Load, Tally};
use crate::outbox_rig::{client, free_addr, wait_healthy, Subscriber, Tether, EVENTS, TOKEN};
use crate::powercut_rig::{after_ops, PowerCut, Trigger};
use tether_testkit::{Broker, BrokerOptions};

/// Changing file operations from exec to the admin API answering: 25-27
/// (sled), 26 (redb; 39 creating the store), counted with
/// [`PowerCut::ops`]. Every one of these (and a few of the first intake's)
/// gets a cut.
pub(crate) const START_OPS: u64 = 40;

/// One engine's power-cut run: the mount, the broker and subscriber, the
/// load, and the config of the binary.
pub(crate) struct PowerRun {
    pub engine: &'static str,
    pub http: reqwest::Client,
    pub addr: SocketAddr,
    cfg: PathBuf,
    log: PathBuf,
    broker: Broker,
    pub sub: Subscriber,
    load: Option<Load>,
    /// Ids acknowledged so far by [`PowerRun::queue`] and stopped loads.
    acked: Vec<String>,
    /// A port where no broker listens (the hub is down).
    dead_port: u16,
    /// Config and log, off the power-cut mount; dropped after `pc`.
    _dir: tempfile::TempDir,
    /// Dropped after every tether started by the test has been reaped.
    pub pc: PowerCut,
}

impl PowerRun {
    pub(crate) async fn new(engine: &'static str, pc: PowerCut) -> PowerRun {
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
            acked: Vec::new(),
            _dir: dir,
            pc,
        }
    }

    /// `store.path`: created by tether itself on the first start.
    pub(crate) fn store_root(&self) -> PathBuf {
        self.pc.path().join("store")
    }

    /// Makes what the test wrote under the mount durable.
    pub(crate) fn settle(&self) {
        self.pc.settle();
    }

    /// Starts the binary with the hub up or down.
    pub(crate) fn start(&self, hub_up: bool) -> Tether {
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
        Tether::start_group(&self.cfg, &self.log)
    }

    /// Starts posting (3 clients) until [`PowerRun::finish`].
    pub(crate) fn start_load(&mut self) {
        self.load = Some(Load::start(&self.http, self.addr, 3));
    }

    pub(crate) fn accepted(&self) -> usize {
        self.load.as_ref().map_or(0, Load::count)
    }

    /// Starts tether and cuts the power at its `op`-th changing file
    /// operation (opening the store, migrating, salvaging, or later when
    /// opening takes fewer). Returns whether the cut came at that operation.
    pub(crate) async fn cut_while_starting(&self, op: u64, hub_up: bool) -> bool {
        let mut tether = self.start(hub_up);
        self.pc.arm(&tether.child, after_ops(op));
        self.pc
            .finish_armed(&mut tether.child, Duration::from_secs(20))
            .await
    }

    /// [`PowerRun::cut_while_starting`] at each of the first `ops` file
    /// operations in turn; returns how many cuts came at their operation.
    pub(crate) async fn sweep_start(&self, ops: u64, hub_up: bool) -> u32 {
        let mut at = 0;
        for op in 1..=ops {
            at += u32::from(self.cut_while_starting(op, hub_up).await);
        }
        at
    }

    /// Starts tether, waits until it accepts messages (and, with the hub
    /// up, is connected), then lets it run and cuts the power: after
    /// `run`, or at the `op`-th changing file operation after that.
    pub(crate) async fn cut_while_running(&self, hub_up: bool, run: Duration, op: Option<u64>) {
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
    pub(crate) async fn wait_accepting(&self, hub_up: bool) {
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

    /// tether's log (every start appends to it).
    pub(crate) fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut tail: Vec<&str> = text.lines().rev().take(40).collect();
        tail.reverse();
        tail.join("\n")
    }

    /// Adds ids that [`PowerRun::finish`] expects (messages of a store the
    /// test prepared).
    pub(crate) fn expect(&mut self, ids: &[String]) {
        self.acked.extend(ids.iter().cloned());
    }

    /// Starts posting one batch every `every` (one client) until
    /// [`PowerRun::stop_load`] or [`PowerRun::finish`].
    pub(crate) fn start_paced_load(&mut self, every: Duration) {
        self.load = Some(Load::paced(&self.http, self.addr, every));
    }

    /// Stops the load; what it had acknowledged joins the ids
    /// [`PowerRun::finish`] expects.
    pub(crate) async fn stop_load(&mut self) {
        if let Some(load) = self.load.take() {
            self.acked.extend(load.stop().await);
        }
    }

    /// Stops the load, starts tether with the hub up, waits until the
    /// outbox drained and tallies what the subscriber got. Fails when the
    /// log says a store was lost, or was moved aside unless `aside`.
    pub(crate) async fn finish(&mut self, aside: bool) -> Tally {
        self.finish_counts(aside).await.0
    }

    /// [`PowerRun::finish`], with the copies received of every id.
    pub(crate) async fn finish_counts(&mut self, aside: bool) -> (Tally, HashMap<String, usize>) {
        self.stop_load().await;
        let _tether = self.start(true);
        wait_healthy(&self.http, self.addr).await;
        assert!(
            wait_drained(&self.http, self.addr, Duration::from_secs(90)).await,
            "{}: the outbox never drained after the power cuts; log tail:\n{}",
            self.engine,
            self.log_tail()
        );
        let t = tally_counts(&mut self.sub, &self.acked, Duration::from_secs(30)).await;
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

impl PowerRun {
    /// Starts tether with the hub up or down and cuts the power at the
    /// first file operation `trigger` accepts (or after `timeout`).
    /// Returns whether the cut came at that operation.
    pub(crate) async fn cut_at(&self, trigger: Trigger, hub_up: bool, timeout: Duration) -> bool {
        let mut tether = self.start(hub_up);
        self.pc.arm(&tether.child, trigger);
        self.pc.finish_armed(&mut tether.child, timeout).await
    }

    /// Waits until the admin API answers (the hub may be down).
    pub(crate) async fn wait_up(&self) {
        for _ in 0..400 {
            if !health(&self.http, self.addr).await.is_null() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "{}: tether's admin API never answered; log tail:\n{}",
            self.engine,
            self.log_tail()
        );
    }

    /// Posts `n` attribute changes, 100 per request, to the running
    /// tether; returns the ids it acknowledged (which [`PowerRun::finish`]
    /// then expects).
    pub(crate) async fn queue(&mut self, n: usize) -> Vec<String> {
        let ids = crate::outbox_rig::post_attributes(&self.http, self.addr, n).await;
        self.acked.extend(ids.iter().cloned());
        ids
    }

    /// `/healthz` `components.outbox.details`.
    pub(crate) async fn details(&self) -> Value {
        health(&self.http, self.addr).await["components"]["outbox"]["details"].clone()
    }
}
