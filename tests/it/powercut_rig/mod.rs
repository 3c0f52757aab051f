//! A file system that forgets unsynced writes, for power-cut tests: FUSE
//! served from a thread of the test process, over an in-memory [`Model`]
//! (its module doc states the durability rules).
//!
//! A cut is atomic for the process under test: the file system freezes
//! (every further operation fails with EIO and changes nothing), the
//! process is SIGKILLed and reaped, every file and directory goes back to
//! its durable state, and only then does the power come back. A cut can
//! come from the test at any moment ([`PowerCut::cut`]), or at a chosen
//! operation ([`PowerCut::arm`] with [`after_ops`] or [`at`]): the file
//! system then freezes before applying that operation and kills the process
//! itself, before answering it.
//!
//! Mounting needs root (CAP_SYS_ADMIN) and `/dev/fuse`. Without them,
//! [`PowerCut::mount_or_skip`] prints why and the test returns, except in
//! CI (`CI=true`), where it fails.

pub(crate) mod fuse;
pub(crate) mod model;

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use fuser::{BackgroundSession, Config, MountOption};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use self::fuse::{PowerCutFs, Shared};
pub(crate) use self::model::{Op, Rules, Trigger};

/// A mounted power-cut file system, unmounted on drop (stop the processes
/// using it first: drop them before this).
pub(crate) struct PowerCut {
    shared: Arc<Shared>,
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
    _dir: tempfile::TempDir,
}

impl PowerCut {
    /// Mounts a new, empty file system on a fresh temporary directory.
    ///
    /// # Errors
    /// When FUSE cannot be mounted here (no `/dev/fuse`, not root).
    pub(crate) fn mount(rules: Rules) -> std::io::Result<PowerCut> {
        let dir = tempfile::tempdir()?;
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&mountpoint)?;
        let meta = std::fs::metadata(&mountpoint)?;
        let shared = Arc::new(Shared::default());
        shared.lock().rules = rules;
        let fs = PowerCutFs {
            shared: shared.clone(),
            uid: meta.uid(),
            gid: meta.gid(),
        };
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("powercut".into()),
            MountOption::Subtype("powercut".into()),
        ];
        let session = fuser::spawn_mount(fs, &mountpoint, &config)?;
        Ok(PowerCut {
            shared,
            session: Some(session),
            mountpoint,
            _dir: dir,
        })
    }

    /// [`PowerCut::mount`], or `None` after saying why the test `name` is
    /// skipped. In CI (`CI=true`) a mount failure panics instead: the
    /// power-cut tests must run there.
    pub(crate) fn mount_or_skip(name: &str, rules: Rules) -> Option<PowerCut> {
        match PowerCut::mount(rules) {
            Ok(p) => Some(p),
            Err(e) => {
                crate::ci::skip_or_fail(
                    name,
                    &format!("cannot mount the power-cut FUSE file system ({e})"),
                    "root and /dev/fuse (modprobe fuse)",
                );
                None
            }
        }
    }

    /// The mount point.
    pub(crate) fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// Makes everything written so far durable (what a test prepared
    /// before the first start, as if it had all been fsynced).
    pub(crate) fn settle(&self) {
        self.shared.lock().settle();
    }

    /// Cuts the power now: freezes the file system, SIGKILLs `child` (and
    /// its process group, when it leads one) and reaps it, waits until the
    /// rest of its group is gone, reverts every file to its durable state,
    /// thaws.
    pub(crate) fn cut(&self, child: &mut Child) {
        self.shared.lock().freeze();
        let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = child.kill();
        let _ = child.wait();
        wait_group_gone(pid);
        self.revert();
    }

    /// Arms a cut at the first operation `trigger` accepts: the file system
    /// then freezes and SIGKILLs `child`. Finish it with
    /// [`PowerCut::finish_armed`].
    pub(crate) fn arm(&self, child: &Child, trigger: Trigger) {
        *self
            .shared
            .victim
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(child.id());
        self.shared.lock().arm(trigger);
    }

    /// Waits until the armed trigger fired (or `child` ended by itself),
    /// then reaps `child` and reverts; after `timeout` it cuts anyway.
    /// Returns whether the trigger fired.
    pub(crate) async fn finish_armed(&self, child: &mut Child, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let fired = loop {
            if self.shared.lock().tripped {
                break true;
            }
            if matches!(child.try_wait(), Ok(Some(_))) || tokio::time::Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        self.shared.lock().disarm();
        *self
            .shared
            .victim
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        self.cut(child);
        fired
    }

    fn revert(&self) {
        self.shared.lock().revert();
    }

    /// Changing file operations so far.
    pub(crate) fn ops(&self) -> u64 {
        self.shared.lock().ops
    }

    /// Power cuts so far.
    pub(crate) fn cuts(&self) -> u64 {
        self.shared.lock().cuts
    }
}

impl Drop for PowerCut {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        if session.umount_and_join().is_err() {
            // Still busy (a process the test did not stop): detach it so the
            // temporary directory can go; the kernel ends the mount when the
            // last user closes it.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mountpoint)
                .status();
        }
    }
}

/// Waits until no live process is left in the process group `pgid` (a
/// killed member's file operations are answered before it exits, so none
/// reaches the file system after the revert). Members that init has not
/// reaped yet are dead (`Z`) and count as gone.
fn wait_group_gone(pgid: i32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while group_alive(pgid) {
        assert!(
            std::time::Instant::now() < deadline,
            "process group {pgid} still alive 10 s after SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parens.
        let mut fields = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace();
        let state = fields.next().unwrap_or("Z");
        let group = fields.nth(1).and_then(|g| g.parse::<i32>().ok());
        group == Some(pgid) && state != "Z" && state != "X"
    })
}

/// Power fails just before the `n`-th changing operation from now (1 is
/// the very next one).
pub(crate) fn after_ops(n: u64) -> Trigger {
    let mut left = n.max(1);
    Box::new(move |_, _| {
        left -= 1;
        left == 0
    })
}

/// Power fails just before the `nth` (from 1) operation `op` on a name
/// containing `name`.
pub(crate) fn at(op: Op, name: &str, nth: u64) -> Trigger {
    let (name, mut left) = (name.to_string(), nth.max(1));
    Box::new(move |o, n: &OsStr| {
        if o != op || !n.to_string_lossy().contains(&name) {
            return false;
        }
        left -= 1;
        left == 0
    })
}
