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
//! damaged store to salvage) write it under `PowerRun::store_root`, call
//! `PowerRun::settle`, then cut with `PowerRun::cut_while_starting`
//! (`tests/it/powercut_run/`).

use crate::outbox_rig;

use std::time::Duration;

use crate::chaos_rig::long;
use crate::powercut_rig::{PowerCut, Rules};
use crate::powercut_run::{PowerRun, START_OPS};
use rand::Rng;

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
    let aside = outbox_rig::set_aside(&run.store_root());
    assert_eq!(aside.len(), 1, "moved aside once: {aside:?}");
    assert!(aside[0].join("outbox.redb").exists());
}
