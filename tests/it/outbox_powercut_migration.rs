//! Power cuts while a format-1 store (one key per message) is migrated to
//! format 2 (segments), under the real binary on the power-cut file system
//! (`powercut_rig`). [`MESSAGES`] messages are written in the old layout
//! onto the mount; tether is then cut at each file operation of the first
//! start in turn, at the n-th fsync of a start (each migration step is one
//! synced batch with its progress key), and at random operations, while a
//! client posts whenever tether answers. Finally every old message and
//! every acknowledged new one reaches the broker, the store is in format
//! 2 and nothing was set aside. Both engines; `TETHER_CHAOS_LONG=1` runs
//! many more cycles.

use crate::outbox_rig;

use std::path::Path;
use std::time::Duration;

use crate::chaos_rig::long;
use crate::outbox_rig::raw::RawStore;
use crate::powercut_rig::{after_ops, at, Op, PowerCut, Rules};
use crate::powercut_run::{PowerRun, START_OPS};
use rand::Rng;

/// Messages in the format-1 store (five migration steps).
const MESSAGES: u64 = 20_000;
/// What a start that migrates (or resumes the migration) logs.
const MIGRATING: &str = "migrating the outbox store to format 2";
/// What the start that finished it logs.
const MIGRATED: &str = "the outbox store is migrated to format 2";

fn raw(engine: &str, dir: &Path) -> RawStore {
    RawStore::open(engine, dir).unwrap_or_else(|e| panic!("a {engine} store: {e}"))
}

/// Writes `MESSAGES` messages in the format-1 layout under the mount and
/// makes them durable; returns their ids.
fn write_format_1(run: &PowerRun) -> Vec<String> {
    let store = raw(run.engine, &run.store_root().join("outbox"));
    let ids = outbox_rig::format1::write(&store, MESSAGES);
    drop(store);
    run.settle();
    ids
}

/// The store's format version (`k:format`), read raw after tether stopped.
fn format_of(run: &PowerRun) -> Option<u32> {
    let v = raw(run.engine, &run.store_root().join("outbox")).get(b"k:format")?;
    Some(u32::from_be_bytes(v.as_slice().try_into().ok()?))
}

async fn power_cuts_during_migration(engine: &'static str) {
    let name = format!("outbox_powercut_migration ({engine})");
    let Some(pc) = PowerCut::mount_or_skip(&name, Rules::Posix) else {
        return;
    };
    let mut run = PowerRun::new(engine, pc).await;
    let old = write_format_1(&run);
    run.expect(&old);
    run.start_paced_load(Duration::from_millis(20));
    let at_start = run.sweep_start(START_OPS, false).await;
    // The fsync of each migration step in turn (and of the last batch,
    // which sets format 2): a cut before it loses that step only.
    let mut at_fsync = 0;
    for n in 1..=8 {
        at_fsync += u32::from(
            run.cut_at(at(Op::Fsync, "", n), false, Duration::from_secs(20))
                .await,
        );
    }
    let cycles: u32 = if long() { 150 } else { 16 };
    let mut rng = rand::thread_rng();
    for cycle in 0..cycles {
        let trigger = if cycle % 2 == 0 {
            after_ops(rng.gen_range(1..400))
        } else {
            at(Op::Fsync, "", rng.gen_range(1..8))
        };
        run.cut_at(trigger, cycle >= cycles / 2, Duration::from_secs(20))
            .await;
    }
    let cuts = run.pc.cuts();
    let t = run.finish(false).await;
    t.report(
        &format!(
            "power cut during migration ({engine}; {MESSAGES} in format 1; {at_start} at a \
             chosen start operation, {at_fsync} at a chosen fsync)"
        ),
        usize::try_from(cuts).unwrap_or(usize::MAX),
    );
    let text = std::fs::read_to_string(run.log_path()).unwrap_or_default();
    let (migrating, migrated) = (
        text.matches(MIGRATING).count(),
        text.matches(MIGRATED).count(),
    );
    eprintln!("{engine}: {migrating} starts migrated, {migrated} finished the migration");
    assert_eq!(t.lost, 0, "{engine}: messages lost: {t:?}");
    assert!(migrating > 1, "{engine}: the migration was never cut");
    assert!(migrated <= 1, "{engine}: the migration finished twice");
    assert!(!text.contains("moved aside"), "{engine}: nothing set aside");
    let aside = outbox_rig::set_aside(&run.store_root());
    assert!(aside.is_empty(), "{engine}: nothing set aside: {aside:?}");
    assert_eq!(format_of(&run), Some(2), "{engine}: format 2");
}

#[tokio::test]
async fn power_cuts_during_the_format_migration_lose_nothing_on_sled() {
    power_cuts_during_migration("sled").await;
}

#[tokio::test]
async fn power_cuts_during_the_format_migration_lose_nothing_on_redb() {
    power_cuts_during_migration("redb").await;
}
