//! Power cuts while a set-aside store is salvaged, under the real binary
//! on the power-cut file system (`powercut_rig`; a cut also kills the
//! salvage's reading process). The store of a first run, holding
//! [`SALVAGED`] acknowledged messages, gets a recorded engine panic, so
//! the next start sets it aside and salvages it into a new store while a
//! client keeps posting. The power is cut at each file operation of the
//! first start in turn (the rename aside, the new store, the first
//! groups), at random operations and at the n-th fsync (the group commits
//! that carry the progress key `k:salvage:<id>`), and at each operation of
//! writing `tether-salvaged.json`. The hub stays down through the cuts, so
//! the final run publishes each stored record exactly once: every
//! acknowledged message arrives, and the new store held each id once
//! (nothing imported twice); the set-aside store is marked done and kept.
//! Both engines; `TETHER_CHAOS_LONG=1` runs many more cycles.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::chaos_rig::long;
use crate::outbox_rig::{body_ids, SET_ASIDE_PREFIX as ASIDE};
use crate::powercut_rig::{after_ops, at, Op, PowerCut, Rules, Trigger};
use crate::powercut_run::{PowerRun, START_OPS};
use rand::Rng;
use serde_json::Value;

/// Messages in the store that is set aside and salvaged (some 40 import
/// groups).
const SALVAGED: usize = 20_000;
/// Changing file operations of that whole salvage with the load running
/// (about 600 on sled, 2,800 on redb, counted with `PowerCut::ops`): the
/// random cuts fall among them.
fn salvage_ops(engine: &str) -> u64 {
    if engine == "redb" {
        2800
    } else {
        600
    }
}
/// The marker salvage writes into a finished set-aside directory.
const DONE_FILE: &str = "tether-salvaged.json";
/// Longest wait for an armed operation (a whole salvage fits in it).
const ARMED: Duration = Duration::from_secs(30);

/// `inner`, but the power also fails before `tether-salvaged.json` is
/// created: the random cycles never let the salvage be marked done, so
/// the marker's own cuts come after them.
/// Counts in `late` the cuts that came at the marker (the salvage had
/// finished first).
fn before_marker(mut inner: Trigger, late: &Arc<AtomicU32>) -> Trigger {
    let late = late.clone();
    Box::new(move |op, name| {
        if inner(op, name) {
            return true;
        }
        let marker = op == Op::Create && name.to_string_lossy().contains(DONE_FILE);
        if marker {
            late.fetch_add(1, Ordering::Relaxed);
        }
        marker
    })
}

/// The power fails before the `fsync` of the set-aside directory that
/// follows the marker's own `fsync` (not one the reading process makes).
fn at_marker_dir_fsync() -> Trigger {
    let mut synced = false;
    Box::new(move |op, name| {
        let name = name.to_string_lossy();
        synced |= op == Op::Fsync && name.contains(DONE_FILE);
        synced && op == Op::FsyncDir && name.starts_with(ASIDE)
    })
}

fn set_aside(run: &PowerRun) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(run.store_root())
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    dirs.retain(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(ASIDE))
    });
    dirs.sort();
    dirs
}

/// A first run queues `SALVAGED` messages with the hub down; the power is
/// cut (they were acknowledged, so they are durable), and the store gets
/// the panic record a release build leaves when the engine panics while
/// opening it.
async fn prepare(run: &mut PowerRun) {
    let mut tether = run.start(false);
    run.wait_up().await;
    let ids = run.queue(SALVAGED).await;
    assert_eq!(ids.len(), SALVAGED);
    run.pc.cut(&mut tether.child);
    std::fs::write(
        run.store_root().join("outbox.opening"),
        "panic\nindex out of bounds (thread main)\n",
    )
    .unwrap();
    run.settle();
}

/// Starts tether with the hub down until the salvage is marked done;
/// returns the new store's live message count then, and cuts.
async fn salvaged_count(run: &PowerRun) -> u64 {
    let mut tether = run.start(false);
    run.wait_up().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let marked = set_aside(run).iter().any(|d| d.join(DONE_FILE).exists());
        let d = run.details().await;
        if marked && d["salvage"]["state"] != "running" {
            let live = d["messages"].as_u64().expect("a live count");
            run.pc.cut(&mut tether.child);
            return live;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: the salvage never finished: {d}; log tail:\n{}",
            run.engine,
            run.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads the subscriber until `total` copies arrived (or 20 s passed).
async fn read_all(
    run: &mut PowerRun,
    counts: &mut std::collections::HashMap<String, usize>,
    total: usize,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while counts.values().sum::<usize>() < total {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(p) = run.sub.next(left).await else {
            return;
        };
        for id in body_ids(&p.payload) {
            *counts.entry(id).or_default() += 1;
        }
    }
}

async fn power_cuts_during_salvage(engine: &'static str) {
    let name = format!("outbox_powercut_salvage ({engine})");
    let Some(pc) = PowerCut::mount_or_skip(&name, Rules::Posix) else {
        return;
    };
    let mut run = PowerRun::new(engine, pc).await;
    prepare(&mut run).await;
    run.start_paced_load(Duration::from_millis(20));
    let mut fired = Vec::new();
    // The set-aside rename itself, then every operation of a start in turn.
    fired.push(run.cut_at(at(Op::Rename, "outbox", 1), false, ARMED).await);
    let late = Arc::new(AtomicU32::new(0));
    let mut at_start = 0;
    for op in 1..=START_OPS {
        let trigger = before_marker(after_ops(op), &late);
        at_start += u32::from(run.cut_at(trigger, false, ARMED).await);
    }
    let cycles: u32 = if long() { 150 } else { 16 };
    let mut rng = rand::thread_rng();
    for cycle in 0..cycles {
        // Short runs (an eighth of a salvage, a few group commits), so the
        // cycles cut all along it rather than after it.
        let trigger = if cycle % 2 == 0 {
            after_ops(rng.gen_range(1..salvage_ops(engine) / 8))
        } else {
            // The group commits, each with its progress key.
            at(Op::Fsync, "", rng.gen_range(1..8))
        };
        run.cut_at(before_marker(trigger, &late), false, ARMED)
            .await;
    }
    // Each operation of marking the set-aside store done (the marker's
    // creation, its content, its fsync, the directory's fsync).
    for op in [Op::Create, Op::Write, Op::Fsync] {
        fired.push(run.cut_at(at(op, DONE_FILE, 1), false, ARMED).await);
    }
    fired.push(run.cut_at(at_marker_dir_fsync(), false, ARMED).await);
    run.stop_load().await;
    let live = salvaged_count(&run).await;
    let cuts = run.pc.cuts();
    let (t, mut counts) = run.finish_counts(true).await;
    let live = usize::try_from(live).unwrap_or(usize::MAX);
    read_all(&mut run, &mut counts, live).await;
    let copies: usize = counts.values().sum();
    t.report(
        &format!(
            "power cut during salvage ({engine}; {SALVAGED} salvaged; {at_start} at a chosen \
             start operation; {} file operations)",
            run.pc.ops()
        ),
        usize::try_from(cuts).unwrap_or(usize::MAX),
    );
    eprintln!(
        "{engine}: {} cuts came at the marker (the salvage had finished)",
        late.load(Ordering::Relaxed)
    );
    eprintln!(
        "{engine}: {live} messages in the new store, {} distinct ids and {copies} copies delivered",
        counts.len()
    );
    assert!(
        fired.iter().all(|f| *f),
        "{engine}: a chosen operation never came (rename, marker create/write/fsync/dir fsync): \
         {fired:?}"
    );
    assert!(t.accepted > SALVAGED + 100, "{engine}: the load ran: {t:?}");
    assert_eq!(t.lost, 0, "{engine}: acknowledged messages lost: {t:?}");
    assert_eq!(
        counts.len(),
        live,
        "{engine}: the new store held an id twice (imported twice): {t:?}"
    );
    let aside = set_aside(&run);
    assert_eq!(aside.len(), 1, "{engine}: set aside once: {aside:?}");
    let marker: Value =
        serde_json::from_slice(&std::fs::read(aside[0].join(DONE_FILE)).unwrap()).unwrap();
    assert_eq!(marker["messages"], SALVAGED, "{engine}: {marker}");
    assert_eq!(marker["unreadable"], 0, "{engine}: {marker}");
    let store_file = if engine == "redb" {
        "outbox.redb"
    } else {
        "db"
    };
    assert!(
        aside[0].join(store_file).exists(),
        "{engine}: the set-aside store is kept"
    );
    let text = std::fs::read_to_string(run.log_path()).unwrap_or_default();
    let ended = text.matches("outbox salvage ended").count();
    assert!(ended <= 1, "{engine}: the salvage ended {ended} times");
}

#[tokio::test]
async fn power_cuts_during_salvage_lose_nothing_and_import_nothing_twice_on_sled() {
    power_cuts_during_salvage("sled").await;
}

#[tokio::test]
async fn power_cuts_during_salvage_lose_nothing_and_import_nothing_twice_on_redb() {
    power_cuts_during_salvage("redb").await;
}
