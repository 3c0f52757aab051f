//! The power-cut file system proves it forgets: what was not fsynced is
//! gone after a cut, what was is kept, and names follow the rules in
//! `powercut_rig/model.rs` (a new name needs a fsync of the file or of its
//! directory, a new directory a fsync of its parent, a rename a fsync of
//! the directory or of the renamed file; under `Rules::Posix` only a
//! directory fsync makes a name durable). The model is tested alone first,
//! then through a real mount with real processes.

use crate::powercut_rig;

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::powercut_rig::model::{Error, Model, Pages, ROOT};
use crate::powercut_rig::Rules;
use crate::powercut_rig::{at, Op, PowerCut};

fn name(s: &str) -> &OsStr {
    OsStr::new(s)
}

#[test]
fn pages_read_back_across_page_boundaries_and_resizes() {
    let mut p = Pages::default();
    p.write(4090, &[7u8; 20]);
    assert_eq!(p.size(), 4110);
    assert_eq!(p.read(4088, 30), [&[0u8; 2][..], &[7u8; 20]].concat());
    p.resize(4095);
    p.resize(5000);
    assert_eq!(p.read(4090, 10), [&[7u8; 5][..], &[0u8; 5]].concat());
    p.write(9000, b"x");
    assert_eq!(p.read(8999, 5), [0u8, b'x']);
}

#[test]
fn the_model_forgets_what_was_not_synced() {
    let mut m = Model::default();
    let (file, fh) = m.create(ROOT, name("f"), 0o644, false).unwrap();
    m.write(file.ino, fh, 0, b"synced").unwrap();
    m.fsync(file.ino).unwrap();
    m.write(file.ino, fh, 0, b"SYNCED and more").unwrap();
    let (other, _) = m.create(ROOT, name("never-synced"), 0o644, false).unwrap();
    m.revert();
    assert_eq!(m.read(file.ino, 0, 100).unwrap(), b"synced");
    assert_eq!(
        m.lookup(ROOT, name("never-synced")).unwrap_err(),
        Error::NotFound
    );
    assert_eq!(m.getattr(other.ino).unwrap_err(), Error::NotFound);
}

#[test]
fn the_model_needs_a_parent_fsync_for_a_new_directory() {
    let mut m = Model::default();
    let dir = m.mkdir(ROOT, name("d"), 0o755).unwrap();
    let (f, fh) = m.create(dir.ino, name("f"), 0o644, false).unwrap();
    m.write(f.ino, fh, 0, b"x").unwrap();
    m.fsync(f.ino).unwrap();
    m.fsync(dir.ino).unwrap();
    m.revert();
    assert_eq!(m.lookup(ROOT, name("d")).unwrap_err(), Error::NotFound);

    let dir = m.mkdir(ROOT, name("d"), 0o755).unwrap();
    m.fsync(ROOT).unwrap();
    let (f, fh) = m.create(dir.ino, name("f"), 0o644, false).unwrap();
    m.write(f.ino, fh, 0, b"x").unwrap();
    m.fsync(f.ino).unwrap();
    m.revert();
    assert_eq!(m.lookup(dir.ino, name("f")).unwrap().size, 1);
}

#[test]
fn the_model_persists_a_rename_by_a_fsync_of_the_renamed_file() {
    let mut m = Model::default();
    let (old, fh) = m.create(ROOT, name("state"), 0o644, false).unwrap();
    m.write(old.ino, fh, 0, b"old").unwrap();
    m.fsync(old.ino).unwrap();
    let (tmp, fh) = m.create(ROOT, name("state.tmp"), 0o644, false).unwrap();
    m.write(tmp.ino, fh, 0, b"new").unwrap();
    m.rename((ROOT, name("state.tmp")), (ROOT, name("state")), false)
        .unwrap();
    m.fsync(tmp.ino).unwrap();
    m.revert();
    let state = m.lookup(ROOT, name("state")).unwrap();
    assert_eq!(m.read(state.ino, 0, 10).unwrap(), b"new");
    assert_eq!(
        m.lookup(ROOT, name("state.tmp")).unwrap_err(),
        Error::NotFound
    );
}

#[test]
fn under_posix_rules_only_a_directory_fsync_makes_a_name_durable() {
    let mut m = Model::default();
    m.rules = Rules::Posix;
    let (f, fh) = m.create(ROOT, name("f"), 0o644, false).unwrap();
    m.write(f.ino, fh, 0, b"data").unwrap();
    m.fsync(f.ino).unwrap();
    m.revert();
    assert_eq!(m.lookup(ROOT, name("f")).unwrap_err(), Error::NotFound);

    let (f, fh) = m.create(ROOT, name("f"), 0o644, false).unwrap();
    m.write(f.ino, fh, 0, b"data").unwrap();
    m.fsync(f.ino).unwrap();
    m.fsync(ROOT).unwrap();
    m.rename((ROOT, name("f")), (ROOT, name("g")), false)
        .unwrap();
    m.fsync(f.ino).unwrap();
    m.revert();
    let kept = m.lookup(ROOT, name("f")).unwrap();
    assert_eq!(
        m.read(kept.ino, 0, 10).unwrap(),
        b"data",
        "the rename was not"
    );
}

#[test]
fn the_model_keeps_an_unsynced_unlink_and_forgets_it_at_a_cut() {
    let mut m = Model::default();
    let (f, fh) = m.create(ROOT, name("f"), 0o644, false).unwrap();
    m.write(f.ino, fh, 0, b"kept").unwrap();
    m.fsync(f.ino).unwrap();
    m.remove(ROOT, name("f"), false).unwrap();
    assert_eq!(m.read(f.ino, 0, 10).unwrap(), b"kept", "still open");
    m.revert();
    let back = m.lookup(ROOT, name("f")).unwrap();
    assert_eq!(m.read(back.ino, 0, 10).unwrap(), b"kept");
    m.remove(ROOT, name("f"), false).unwrap();
    m.fsync(ROOT).unwrap();
    m.revert();
    assert_eq!(m.lookup(ROOT, name("f")).unwrap_err(), Error::NotFound);
}

#[test]
fn a_trigger_freezes_before_the_operation_it_accepts() {
    let mut m = Model::default();
    m.arm(powercut_rig::after_ops(2));
    let (f, fh) = m.create(ROOT, name("f"), 0o644, false).unwrap();
    assert_eq!(m.write(f.ino, fh, 0, b"x").unwrap_err(), Error::PoweredOff);
    assert!(m.tripped);
    assert_eq!(m.getattr(ROOT).unwrap_err(), Error::PoweredOff);
    m.revert();
    assert_eq!(m.lookup(ROOT, name("f")).unwrap_err(), Error::NotFound);
}

fn read(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

fn sync_dir(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

/// A child that does nothing, so `cut` has a process to kill.
fn idle() -> std::process::Child {
    Command::new("sleep").arg("60").spawn().unwrap()
}

#[test]
fn a_mounted_file_system_forgets_unsynced_writes_at_a_cut() {
    let Some(pc) = PowerCut::mount_or_skip("powercut_fs", Rules::Ext4) else {
        return;
    };
    let root = pc.path();
    let (unsynced, synced, datasynced) = (
        root.join("unsynced"),
        root.join("synced"),
        root.join("data"),
    );
    std::fs::write(&synced, b"old").unwrap();
    pc.settle();

    std::fs::write(&unsynced, b"gone").unwrap();
    let mut f = OpenOptions::new().write(true).open(&synced).unwrap();
    f.write_all(b"new").unwrap();
    f.sync_all().unwrap();
    f.write_all(b" and unsynced").unwrap();
    drop(f);
    let mut f = File::create(&datasynced).unwrap();
    f.write_all(b"kept").unwrap();
    f.sync_data().unwrap();
    drop(f);
    assert_eq!(read(&unsynced).as_deref(), Some(&b"gone"[..]));

    pc.cut(&mut idle());
    assert_eq!(read(&unsynced), None, "never fsynced: gone");
    assert_eq!(read(&synced).as_deref(), Some(&b"new"[..]));
    assert_eq!(
        read(&datasynced).as_deref(),
        Some(&b"kept"[..]),
        "fdatasync counts"
    );
}

#[test]
fn a_mounted_file_system_needs_a_directory_fsync_for_a_rename() {
    let Some(pc) = PowerCut::mount_or_skip("powercut_fs", Rules::Ext4) else {
        return;
    };
    let root = pc.path();
    let (state, tmp) = (root.join("state"), root.join("state.tmp"));
    std::fs::write(&state, b"old").unwrap();
    pc.settle();

    let write_tmp = |content: &[u8]| {
        let mut f = File::create(&tmp).unwrap();
        f.write_all(content).unwrap();
        f.sync_all().unwrap();
    };
    write_tmp(b"new");
    std::fs::rename(&tmp, &state).unwrap();
    pc.cut(&mut idle());
    assert_eq!(
        read(&state).as_deref(),
        Some(&b"old"[..]),
        "rename not durable"
    );
    assert_eq!(
        read(&tmp).as_deref(),
        Some(&b"new"[..]),
        "the fsynced tmp is"
    );

    write_tmp(b"newer");
    std::fs::rename(&tmp, &state).unwrap();
    sync_dir(root);
    pc.cut(&mut idle());
    assert_eq!(read(&state).as_deref(), Some(&b"newer"[..]));
    assert_eq!(read(&tmp), None);

    std::fs::create_dir(root.join("d")).unwrap();
    std::fs::write(root.join("d/f"), b"x").unwrap();
    File::open(root.join("d/f")).unwrap().sync_all().unwrap();
    sync_dir(&root.join("d"));
    pc.cut(&mut idle());
    assert!(!root.join("d").exists(), "the parent was never fsynced");
}

#[tokio::test]
async fn an_armed_cut_kills_the_writer_before_its_third_fsync() {
    let Some(pc) = PowerCut::mount_or_skip("powercut_fs", Rules::Ext4) else {
        return;
    };
    let file = pc.path().join("f");
    // Each round appends 4 KiB and fsyncs it; then the child idles.
    let script = "for i in 1 2 3 4 5; do dd if=/dev/zero of=\"$1\" bs=4096 count=1 \
                  oflag=append conv=notrunc,fsync status=none 2>/dev/null || exit 1; done; exec sleep 60";
    let mut child = Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(&file)
        .spawn()
        .unwrap();
    pc.arm(&child, at(Op::Fsync, "f", 3));
    let fired = pc.finish_armed(&mut child, Duration::from_secs(20)).await;
    assert!(fired, "the child reached its third fsync");
    assert!(!child.try_wait().unwrap().unwrap().success(), "killed");
    let len = std::fs::metadata(&file).unwrap().len();
    assert_eq!(
        len,
        2 * 4096,
        "two fsynced blocks; the third was written, never synced"
    );
}

#[test]
fn a_mounted_posix_file_system_keeps_a_new_name_only_after_a_directory_fsync() {
    let Some(pc) = PowerCut::mount_or_skip("powercut_fs", Rules::Posix) else {
        return;
    };
    let (lost, kept) = (pc.path().join("lost"), pc.path().join("kept"));
    for path in [&kept, &lost] {
        let mut f = File::create(path).unwrap();
        f.write_all(b"data").unwrap();
        f.sync_data().unwrap();
        if path == &kept {
            sync_dir(pc.path());
        }
    }
    pc.cut(&mut idle());
    assert_eq!(read(&lost), None, "the file was fsynced, its directory not");
    assert_eq!(read(&kept).as_deref(), Some(&b"data"[..]));
}
