//! A real full disk under the store: the binary runs with its store on a
//! small tmpfs while the hub link is held (blackhole proxy), the test fills
//! the tmpfs and posts until intake answers 507. Then: tether is still up,
//! `/healthz` reports the unwritable store, and once space returns intake
//! accepts again; when the link heals, every id answered 202 arrives and
//! nothing of a refused request does.
//!
//! Mounting needs root with CAP_SYS_ADMIN; without it the test says so and
//! returns, except in CI (`CI=true`), where it fails. The outbox's own
//! answer to a full disk is also tested without one, in `tether-outbox`
//! (`intake::tests`, syncs that fail as on a full disk).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::chaos_rig::{health, tally_counts, wait_drained};
use crate::outbox_rig::{client, daemon_config, wait_healthy, Subscriber, Tether, EVENTS, TOKEN};
use serde_json::{json, Value};
use tether_demo::proxy::Mode;
use tether_testkit::{Broker, BrokerOptions};

const TMPFS_MIB: u64 = 16;
/// Fill, refuse, free, recover: this many times in one run.
const CYCLES: usize = 3;

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts it on `dir`, or `None` after saying why the test is skipped
    /// (in CI a failed mount fails the test).
    fn mount_or_skip(dir: &Path) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_MIB}m"), "tmpfs"])
            .arg(dir)
            .output();
        let failed = match out {
            Ok(o) if o.status.success() => return Some(Tmpfs(dir.to_path_buf())),
            Ok(o) => format!(
                "cannot mount a tmpfs ({})",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => format!("cannot run mount ({e})"),
        };
        crate::ci::skip_or_fail("chaos_disk_full", &failed, "root (CAP_SYS_ADMIN)");
        None
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes `path` until the file system is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5Au8; 64 * 1024];
    let mut n = 0;
    while f.write_all(&chunk).is_ok() {
        n += chunk.len() as u64;
    }
    let _ = f.sync_all();
    n
}

/// Posts one batch of 10 attributes; the status and the ids on 202.
async fn post(http: &reqwest::Client, addr: SocketAddr, n: u32) -> (u16, Vec<String>) {
    let batch: Vec<Value> = (0..10)
        .map(|i| json!({"attributeId": i, "value": n, "attributeDataType": "SINT32"}))
        .collect();
    let sent = http
        .post(format!("http://{addr}/v1/attributes"))
        .bearer_auth(TOKEN)
        .json(&batch)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    let Ok(r) = sent else { return (0, Vec::new()) };
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or_default();
    let ids = body["ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    (status, ids)
}

/// Leaves the store 2 MiB of the tmpfs, then posts until intake answered
/// 507 twenty times. Returns the filler's size.
async fn fill_until_507(
    dir: &tempfile::TempDir,
    http: &reqwest::Client,
    addr: SocketAddr,
    accepted: &mut Vec<String>,
    statuses: &mut HashMap<u16, usize>,
    n: &mut u32,
) -> u64 {
    let spare = dir.path().join("store").join("spare");
    std::fs::write(&spare, vec![0u8; 2 << 20]).unwrap();
    let filled = fill(&dir.path().join("store").join("filler"));
    std::fs::remove_file(&spare).unwrap();
    let mut refused = 0;
    let mut posts = 0;
    while refused < 20 {
        posts += 1;
        assert!(posts < 50_000, "intake never answered 507: {statuses:?}");
        *n += 1;
        let (status, ids) = post(http, addr, *n).await;
        *statuses.entry(status).or_default() += 1;
        refused += usize::from(status == 507);
        accepted.extend(ids);
    }
    filled
}

/// Posts until intake accepts again (space was returned), then 20 more
/// that must all be accepted.
async fn recover(
    http: &reqwest::Client,
    addr: SocketAddr,
    log: &Path,
    accepted: &mut Vec<String>,
    statuses: &mut HashMap<u16, usize>,
    n: &mut u32,
) {
    let mut recovered = false;
    for _ in 0..300 {
        *n += 1;
        let (status, ids) = post(http, addr, *n).await;
        *statuses.entry(status).or_default() += 1;
        accepted.extend(ids);
        if status == 202 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(30).collect();
    assert!(
        recovered,
        "intake accepts once space returns: {statuses:?}\n{tail:#?}"
    );
    for _ in 0..20 {
        *n += 1;
        let (status, ids) = post(http, addr, *n).await;
        *statuses.entry(status).or_default() += 1;
        assert_eq!(status, 202, "{statuses:?}");
        accepted.extend(ids);
    }
}

#[tokio::test]
async fn a_full_disk_refuses_with_507_loses_nothing_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_tmpfs) = Tmpfs::mount_or_skip(&dir.path().join("store")) else {
        return;
    };
    let broker = Broker::start(BrokerOptions::new().extra_config("max_queued_messages 0"));
    let proxy = tether_testkit::link_cutter(broker.plain_port()).await;
    let mut sub = Subscriber::connect(broker.plain_port(), &format!("{EVENTS}#")).await;
    let (cfg, log, addr) = daemon_config(dir.path(), proxy.port());
    let http = client();
    let mut tether = Tether::start(&cfg, &log);
    wait_healthy(&http, addr).await;
    // Hold delivery: the link hangs, so the store only grows.
    proxy.set(Mode::Blackhole);
    proxy.cut();
    let mut accepted = Vec::new();
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    let mut n = 0;
    for cycle in 0..CYCLES {
        let filled = fill_until_507(&dir, &http, addr, &mut accepted, &mut statuses, &mut n).await;
        let full_health = health(&http, addr).await;
        assert!(
            tether.child.try_wait().unwrap().is_none(),
            "tether is still running"
        );
        let outbox = &full_health["components"]["outbox"];
        assert_eq!(
            (&outbox["ok"], &outbox["details"]["storeWritable"]),
            (&Value::Bool(false), &Value::Bool(false)),
            "cycle {cycle}: {statuses:?} {full_health}"
        );
        std::fs::remove_file(dir.path().join("store").join("filler")).unwrap();
        recover(&http, addr, &log, &mut accepted, &mut statuses, &mut n).await;
        // The hub link is still held, so only the outbox's own check counts.
        let after = health(&http, addr).await;
        assert_eq!(after["components"]["outbox"]["ok"], true, "{after}");
        eprintln!("disk full cycle {cycle}: filler {filled} bytes, answers so far {statuses:?}");
    }

    proxy.heal();
    assert!(
        wait_drained(&http, addr, Duration::from_secs(60)).await,
        "drained"
    );
    let (t, copies) = tally_counts(&mut sub, &accepted, Duration::from_secs(30)).await;
    eprintln!("disk full: tmpfs {TMPFS_MIB} MiB, answers {statuses:?}");
    t.report("disk full (tmpfs)", CYCLES);
    assert_eq!(t.lost, 0, "{t:?}");
    let answered: HashSet<&String> = accepted.iter().collect();
    let unanswered: Vec<&String> = copies.keys().filter(|id| !answered.contains(id)).collect();
    assert!(
        unanswered.is_empty(),
        "delivered without a 202 (a refused request kept?), answers {statuses:?}: {unanswered:?}"
    );
    tether.kill();
}
