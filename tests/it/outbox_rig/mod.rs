//! Shared rig for the outbox tests: the daemon (`tether::app::Daemon`)
//! in-process against a real Mosquitto, from a TOML config, observed
//! through its admin API; a persistent-session subscriber playing the
//! cloud; the real binary for the tests that kill it.

pub(crate) mod format1;
pub(crate) mod raw;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tether::app::Daemon;
use tether::clock::{SharedClock, SystemClock};
use tether::config::AdminListen;
use tether_outbox::{NewMessage, Stats};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) const TOKEN: &str = "0123456789abcdef0123456789abcdef";
pub(crate) const EVENTS: &str = "devices/dev1/messages/events/";
/// How the name of a store tether set aside begins, in `store.path`
/// (`outbox.corrupt-<unix seconds>`; README, Store damage).
pub(crate) const SET_ASIDE_PREFIX: &str = "outbox.corrupt-";

/// How long the daemon may take to bind its admin API.
const START_WAIT: Duration = Duration::from_secs(10);

/// How to start tether in-process.
#[derive(Default)]
pub(crate) struct RigOptions {
    /// Lines for `[store]`.
    pub store: String,
    /// Wall clock (default: the system clock).
    pub clock: Option<SharedClock>,
    /// More sections for the config file (`[[webhook]]`, ...).
    pub sections: String,
}

/// The daemon running in this process, its admin API bound to a port the
/// system picked.
pub(crate) struct Rig {
    pub admin_addr: SocketAddr,
    pub http: reqwest::Client,
    pub stop: CancellationToken,
    pub dir: tempfile::TempDir,
}

/// A config for tether against `127.0.0.1:port` with the store in `dir`.
pub(crate) fn config_text(
    port: u16,
    dir: &Path,
    store: &str,
    admin: Option<std::net::SocketAddr>,
) -> String {
    let admin = admin.map_or(String::new(), |a| {
        format!("[admin]\nlisten = \"{a}\"\ntoken = \"{TOKEN}\"\n")
    });
    // `TETHER_TEST_ENGINE=redb cargo test -p tether --test it outbox_` runs the
    // store-level tests on the other engine.
    let engine = format!("engine = \"{}\"\n", raw::test_engine());
    format!(
        "[hub]\nurl = \"mqtt://127.0.0.1:{port}\"\ndevice_id = \"dev1\"\nallow_insecure = true\n\
         keep_alive = \"5s\"\nconnect_timeout = \"2s\"\n[store]\npath = \"{}\"\n{engine}{store}\n{admin}",
        dir.join("store").display()
    )
}

/// Starts `daemon` with `cfg` on this runtime until `stop`, and waits until
/// its admin API is bound; where it listens.
///
/// # Panics
/// When the daemon exits instead (its exit code says why) or does not bind
/// within [`START_WAIT`].
pub(crate) async fn run_daemon(
    daemon: Daemon,
    cfg: tether::config::Config,
    stop: CancellationToken,
) -> (JoinHandle<i32>, AdminListen) {
    let mut listening = daemon.admin_listening();
    let mut task = tokio::spawn(daemon.run_until(cfg, stop));
    let bound = tokio::time::timeout(START_WAIT, async {
        tokio::select! {
            at = listening.wait_for(Option::is_some) => at.ok().and_then(|a| a.clone()),
            code = &mut task => panic!("the daemon exited with {code:?} before its admin API listened"),
        }
    })
    .await
    .expect("the admin API listens within the start-up wait");
    (
        task,
        bound.expect("the daemon says where its admin API listens"),
    )
}

impl Rig {
    /// The daemon with the hub at `127.0.0.1:broker_port`, its store in a
    /// temporary directory, the admin API on a free loopback port.
    pub(crate) async fn start(broker_port: u16, opts: RigOptions) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        let text = format!(
            "{}\n{}",
            config_text(broker_port, dir.path(), &opts.store, Some(any_port)),
            opts.sections
        );
        let path = dir.path().join("tether.toml");
        std::fs::write(&path, &text).expect("write the config");
        let cfg = tether::config::parse(&text, dir.path()).expect("valid rig config");
        let clock = opts.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let stop = CancellationToken::new();
        let (_, at) = run_daemon(Daemon::new(path, clock), cfg, stop.clone()).await;
        let AdminListen::Tcp(admin_addr) = at else {
            panic!("the rig's admin API listens on TCP, not {at:?}")
        };
        Rig {
            admin_addr,
            http: client(),
            stop,
            dir,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    /// A request with the token; returns status, Retry-After and JSON body.
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Option<String>, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("admin API answers");
        let status = resp.status();
        let retry = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            retry,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    /// Posts `n` attribute changes to `/v1/attributes`, `per` per request,
    /// asserting each request is accepted; returns their ids in order.
    pub(crate) async fn submit(&self, n: usize, per: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        while ids.len() < n {
            let k = per.min(n - ids.len());
            let (status, _, body) = self
                .call(
                    reqwest::Method::POST,
                    "/v1/attributes",
                    Some(changes(ids.len(), k)),
                )
                .await;
            assert_eq!(
                status,
                StatusCode::ACCEPTED,
                "queueing attribute changes: {body}"
            );
            ids.extend(answered_ids(&body));
        }
        ids
    }

    /// The outbox's counts (`GET /v1/outbox/stats`).
    pub(crate) async fn stats(&self) -> Stats {
        let (status, _, body) = self
            .call(reqwest::Method::GET, "/v1/outbox/stats", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_value(body).expect("the outbox stats")
    }

    /// `/healthz`'s body, whatever its status.
    pub(crate) async fn health(&self) -> Value {
        let resp = self.http.get(self.url("/healthz")).send().await;
        resp.expect("/healthz answers")
            .json()
            .await
            .expect("/healthz is JSON")
    }

    /// Waits until `/healthz` says the hub session is connected.
    pub(crate) async fn wait_connected(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let h = self.health().await;
            if h["hub"]["state"] == "connected" {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the hub never connected: {h}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `f(stats)` holds.
    pub(crate) async fn wait_stats(
        &self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&Stats) -> bool,
    ) -> Stats {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.stats().await;
            if f(&s) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never reached: {what}; stats {s:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// `k` attribute changes (SINT32), numbered from `from`.
fn changes(from: usize, k: usize) -> Value {
    (from..from + k)
        .map(|i| serde_json::json!({"attributeId": i % 1000 + 1, "value": i, "attributeDataType": "SINT32"}))
        .collect()
}

/// The ids in an intake answer (`{"ids": [...]}`).
fn answered_ids(body: &Value) -> Vec<String> {
    body["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_str().expect("a string id").to_string())
        .collect()
}

/// A cloud-side subscriber with a persistent session (clean_session off),
/// re-subscribing on every CONNACK, so nothing is missed across broker
/// restarts when the broker persists sessions.
pub(crate) struct Subscriber {
    rx: mpsc::Receiver<rumqttc::Publish>,
    task: tokio::task::JoinHandle<()>,
    pub seen: Vec<rumqttc::Publish>,
}

impl Subscriber {
    pub(crate) async fn connect(port: u16, filter: &str) -> Subscriber {
        let id = format!("sub-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_clean_session(false);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let (tx, rx) = mpsc::channel(100_000);
        let (ready_tx, mut ready_rx) = mpsc::channel(1);
        let filter = filter.to_string();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.try_send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send(p).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(5), ready_rx.recv())
            .await
            .expect("SUBACK within 5 s");
        Subscriber {
            rx,
            task,
            seen: Vec::new(),
        }
    }

    /// The next publish within `timeout`, if any (not kept in `seen`).
    pub(crate) async fn next(&mut self, timeout: Duration) -> Option<rumqttc::Publish> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Collects publishes until every id in `want` was seen (as `$.mid` or
    /// inside a batch); returns the ids of every message seen, in order.
    pub(crate) async fn until_all(&mut self, want: &[String], timeout: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut missing: HashSet<&String> = want.iter().collect();
        let mut order = Vec::new();
        for p in &self.seen {
            for id in body_ids(&p.payload) {
                order.push(id);
            }
        }
        for id in &order {
            missing.remove(id);
        }
        while !missing.is_empty() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(p)) => {
                    for id in body_ids(&p.payload) {
                        missing.remove(&id);
                        order.push(id);
                    }
                    self.seen.push(p);
                }
                _ => panic!("{} of {} messages never arrived", missing.len(), want.len()),
            }
        }
        order
    }
}

/// An attribute-typed test message carrying its id and number `n`.
pub(crate) fn test_message(n: usize) -> NewMessage {
    let id = uuid::Uuid::new_v4();
    NewMessage {
        id,
        message_type: "attribute".into(),
        body: serde_json::json!({"id": id.to_string(), "n": n, "pad": "x".repeat(100)})
            .to_string()
            .into_bytes(),
        only_sink: None,
    }
}

/// Message ids in a payload: the `id` of a message, or of each element of
/// a batch.
pub(crate) fn body_ids(payload: &[u8]) -> Vec<String> {
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i["id"].as_str().map(str::to_string))
            .collect(),
        Ok(v) => v["id"].as_str().map(str::to_string).into_iter().collect(),
        Err(_) => Vec::new(),
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The real binary, killed when dropped.
pub(crate) struct Tether {
    pub child: Child,
}

impl Tether {
    pub(crate) fn start(cfg: &Path, log: &Path) -> Tether {
        Tether::spawn(cfg, log, false)
    }

    /// [`Tether::start`] in a process group of its own, so that killing
    /// the group takes its children (the salvage's reading process) with
    /// it, as a power cut does.
    pub(crate) fn start_group(cfg: &Path, log: &Path) -> Tether {
        Tether::spawn(cfg, log, true)
    }

    fn spawn(cfg: &Path, log: &Path, group: bool) -> Tether {
        use std::os::unix::process::CommandExt;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tether"));
        if group {
            cmd.process_group(0);
        }
        let child = cmd
            .args(["run", "-c"])
            .arg(cfg)
            .env(
                "RUST_LOG",
                std::env::var("TETHER_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start tether");
        Tether { child }
    }

    /// SIGKILL: no goodbye, no final sync (for its whole group, when it
    /// leads one).
    pub(crate) fn kill(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // ESRCH when it leads no group.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Tether {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) fn client() -> reqwest::Client {
    tether::tls::install_crypto_provider();
    reqwest::Client::new()
}

/// Writes `dir/tether.toml` for the real binary (the hub at `port`, the
/// store in `dir`, the admin API on a free loopback address); returns the
/// config path, the log path beside it and the admin address.
pub(crate) fn daemon_config(dir: &Path, port: u16) -> (PathBuf, PathBuf, SocketAddr) {
    let addr = free_addr();
    let cfg = dir.join("tether.toml");
    std::fs::write(&cfg, config_text(port, dir, "", Some(addr))).unwrap();
    (cfg, dir.join("tether.log"), addr)
}

/// The stores tether set aside under `root` (`outbox.corrupt-*`).
pub(crate) fn set_aside(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(SET_ASIDE_PREFIX)
        })
        .map(|e| e.path())
        .collect()
}

pub(crate) fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Posts `n` attribute changes to the admin API at `addr`, 100 per request,
/// asserting each request is accepted (202); returns the ids, in order.
pub(crate) async fn post_attributes(
    http: &reqwest::Client,
    addr: SocketAddr,
    n: usize,
) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        let r = http
            .post(format!("http://{addr}/v1/attributes"))
            .bearer_auth(TOKEN)
            .json(&changes(ids.len(), 100.min(n - ids.len())))
            .send()
            .await
            .expect("the admin API answers");
        assert_eq!(r.status().as_u16(), 202, "queueing attribute changes");
        let body: Value = r.json().await.expect("a JSON answer");
        ids.extend(answered_ids(&body));
    }
    ids
}

/// Waits for `/healthz` to answer 2xx. As long as the soak's wait: a daemon
/// restarted while the machine is loaded (CI) may take its backoff first.
pub(crate) async fn wait_healthy(http: &reqwest::Client, addr: SocketAddr) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if let Ok(r) = http.get(format!("http://{addr}/healthz")).send().await {
            if r.status().is_success() {
                return r.json().await.unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("tether never became healthy at {addr}");
}
