//! The salvage driver: runs the reading child on a source store, feeds its
//! stream to the [`Plan`], imports each group through the intake (durable,
//! with its progress, before the next is read), and reports the outcome.
//! One salvage at a time per process, so two can never import the same
//! source twice.
//!
//! Durability points, in order: each group (records + progress) is synced
//! by the group commit before the next is read; the last group carries
//! `done`; only then is a set-aside directory marked with
//! [`DONE_FILE`] (synced, with its directory).

use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::export::resume_line;
use super::frame::{self, Frame, Header};
use super::plan::{source_name, ImportBatch, Plan, Progress};
use crate::ages::{AgeClock, Checkpoint};
use crate::clock::SharedClock;
use crate::store::{engine_in, SET_ASIDE_PREFIX};
use crate::{keys, Core, Intake, IntakeError, Outbox, StoreError};

/// Written into a set-aside directory once its salvage finished.
pub(crate) const DONE_FILE: &str = "tether-salvaged.json";
/// Tries while a set-aside store is unavailable, and the wait between.
const UNAVAILABLE_TRIES: u32 = 30;
const UNAVAILABLE_WAIT: Duration = Duration::from_secs(1);
/// Wait before importing again into a full store.
const FULL_RETRY: Duration = Duration::from_secs(5);

/// A salvage could not run or did not finish; a set-aside store is tried
/// again at the next start, and what was imported stays imported.
#[derive(Debug, thiserror::Error)]
pub enum SalvageError {
    /// No such directory.
    #[error("{0} does not exist")]
    Missing(PathBuf),
    /// The directory holds no store.
    #[error(
        "{0} is not an outbox store (it has no sled `db` file and no redb `outbox.redb` file)"
    )]
    NotAStore(PathBuf),
    /// The directory is the store this tether runs with.
    #[error(
        "{0} is the store this tether runs with; import a set-aside store or a copy of another one"
    )]
    Live(PathBuf),
    /// A copy of this tether's own store: its messages are here already.
    #[error(
        "{0} is a copy of the store this tether runs with (same store id): its messages are \
         already in it, importing them again would send them twice"
    )]
    SameStore(PathBuf),
    /// The store cannot be opened for now (a lock held by another
    /// process, permissions): nothing was read.
    #[error("cannot open the store for now: {0}")]
    Unavailable(String),
    /// The reading child could not be started.
    #[error("cannot start the reading process {exe}: {source}")]
    Spawn {
        /// The program.
        exe: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The store refused the salvaged records.
    #[error("the outbox did not take the salvaged records ({0}); the salvage resumes at the next start or import")]
    Intake(#[from] IntakeError),
    /// Reading the progress failed.
    #[error("cannot read the salvage progress: {0}")]
    Store(#[from] StoreError),
    /// tether is stopping.
    #[error("tether is stopping; the salvage resumes at the next start")]
    Stopping,
}

/// How a salvage ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// The source store.
    pub store: String,
    /// Messages imported (over all runs of this salvage).
    pub messages: u64,
    /// Push failures imported.
    pub failures: u64,
    /// Messages the source had already finished (not imported).
    pub finished: u64,
    /// Records that could not be read.
    pub unreadable: u64,
    /// Why reading stopped early, if it did.
    pub stopped: Option<String>,
    /// The store could not be opened at all.
    pub unopened: bool,
    /// It had been salvaged before: nothing was imported now.
    pub already: bool,
}

impl Outcome {
    fn new(store: &Path, p: &Progress, already: bool) -> Self {
        Self {
            store: store.display().to_string(),
            messages: p.messages,
            failures: p.failures,
            finished: p.finished,
            unreadable: p.unreadable,
            stopped: p.stopped.clone(),
            unopened: false,
            already,
        }
    }

    /// Whether anything was lost (then `storeLoss` says so).
    pub(crate) fn lost(&self) -> bool {
        self.unreadable > 0 || self.unopened
    }
}

/// Salvages stores into the running outbox.
pub struct Salvager {
    core: Arc<Core>,
    intake: Intake,
    root: PathBuf,
    exporter: PathBuf,
    clock: SharedClock,
    runtime: Handle,
    shutdown: CancellationToken,
    turn: Mutex<()>,
}

impl Salvager {
    /// A salvager for `outbox` (whose `store.path` is `root`), reading with
    /// `exporter` (this program: `tether outbox export DIR`). Call from
    /// within the runtime.
    pub fn new(
        outbox: &Outbox,
        root: PathBuf,
        exporter: PathBuf,
        clock: SharedClock,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            core: outbox.core.clone(),
            intake: outbox.intake.clone(),
            root,
            exporter,
            clock,
            runtime: Handle::current(),
            shutdown,
            turn: Mutex::new(()),
        }
    }

    /// Salvages, in a background thread, every set-aside store in the root
    /// not yet marked done.
    ///
    /// # Errors
    /// When the thread cannot start.
    pub fn spawn_pending(self: Arc<Self>) -> std::io::Result<()> {
        let pending = pending(&self.root);
        if pending.is_empty() {
            return Ok(());
        }
        std::thread::Builder::new()
            .name("outbox-salvage".into())
            .spawn(move || {
                for dir in pending {
                    self.salvage_retrying(&dir);
                    if self.shutdown.is_cancelled() {
                        return;
                    }
                }
            })
            .map(|_| ())
    }

    /// [`Salvager::salvage`], trying again a few times while the store is
    /// unavailable (the reading child of a tether killed a moment ago may
    /// still hold its lock).
    fn salvage_retrying(&self, dir: &Path) {
        for attempt in 1..=UNAVAILABLE_TRIES {
            match self.salvage(dir) {
                Ok(_) | Err(SalvageError::Stopping) => return,
                Err(SalvageError::Unavailable(_)) if attempt < UNAVAILABLE_TRIES => {
                    std::thread::sleep(UNAVAILABLE_WAIT);
                }
                Err(e) => {
                    error!(store = %dir.display(), "outbox salvage failed: {e}");
                    return;
                }
            }
        }
    }

    /// Imports every readable message and push failure of the store in
    /// `dir` that is not already imported; reports the outcome (log line,
    /// `/healthz`, metrics) and marks a set-aside directory done.
    ///
    /// # Errors
    /// See [`SalvageError`].
    pub fn salvage(&self, dir: &Path) -> Result<Outcome, SalvageError> {
        let _turn = self.turn.lock().unwrap_or_else(PoisonError::into_inner);
        self.check(dir)?;
        let status = &self.core.counters.salvage;
        let name = dir.display().to_string();
        let result = self.read_into_store(dir);
        match &result {
            Ok(o) => {
                self.report(o);
                if self.is_set_aside(dir) {
                    mark_done(dir, o);
                }
            }
            Err(SalvageError::Stopping) => {}
            Err(e) => status.failed(&name, e.to_string()),
        }
        result
    }

    fn check(&self, dir: &Path) -> Result<(), SalvageError> {
        if !dir.is_dir() {
            return Err(SalvageError::Missing(dir.to_path_buf()));
        }
        if engine_in(dir).is_none() {
            return Err(SalvageError::NotAStore(dir.to_path_buf()));
        }
        let live = self.root.join("outbox");
        if let (Ok(a), Ok(b)) = (dir.canonicalize(), live.canonicalize()) {
            if a == b {
                return Err(SalvageError::Live(dir.to_path_buf()));
            }
        }
        Ok(())
    }

    fn is_set_aside(&self, dir: &Path) -> bool {
        let in_root = match (
            dir.parent().map(Path::canonicalize),
            self.root.canonicalize(),
        ) {
            (Some(Ok(p)), Ok(r)) => p == r,
            _ => false,
        };
        in_root
            && dir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(SET_ASIDE_PREFIX))
    }

    fn read_into_store(&self, dir: &Path) -> Result<Outcome, SalvageError> {
        let mut child = Command::new(&self.exporter)
            .args(["outbox", "export"])
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| SalvageError::Spawn {
                exe: self.exporter.clone(),
                source,
            })?;
        let result = self.follow(dir, &mut child);
        // Done or not, the child must not outlive the salvage.
        let _ = child.kill();
        let _ = child.wait();
        result
    }

    fn follow(&self, dir: &Path, child: &mut Child) -> Result<Outcome, SalvageError> {
        let name = dir.display().to_string();
        let status = &self.core.counters.salvage;
        let Some(stdout) = child.stdout.take() else {
            return Err(SalvageError::Spawn {
                exe: self.exporter.clone(),
                source: std::io::Error::other("no stdout pipe"),
            });
        };
        let mut input = BufReader::new(stdout);
        let header = match frame::read(&mut input) {
            Ok(Some(Frame::Header(h))) => h,
            Ok(Some(Frame::Unavailable(why))) => return Err(SalvageError::Unavailable(why)),
            other => {
                let why = match other {
                    Ok(Some(Frame::Stopped(why))) => why,
                    Ok(_) => match ended(child) {
                        End::Fault(why) => why,
                        End::Interrupted(why) => return Err(SalvageError::Unavailable(why)),
                    },
                    Err(e) => e.to_string(),
                };
                status.unopened(&name, &why);
                let mut o = Outcome::new(dir, &Progress::default(), false);
                o.stopped = Some(why);
                o.unopened = true;
                return Ok(o);
            }
        };
        let dir_name = dir
            .file_name()
            .map_or_else(|| name.clone(), |n| n.to_string_lossy().into_owned());
        let source = source_name(&header, &dir_name);
        let own = self.core.storage.get(keys::ID)?;
        if own.as_deref() == Some(source.as_bytes()) {
            return Err(SalvageError::SameStore(dir.to_path_buf()));
        }
        let key = Progress::key(&source);
        let progress = self
            .core
            .storage
            .get(&key)?
            .and_then(|v| Progress::decode(&v))
            .unwrap_or_default();
        if progress.done {
            return Ok(Outcome::new(dir, &progress, true));
        }
        status.started(&name, &progress);
        let mut before = progress.clone();
        let mut plan = Plan::new(key, &header, progress, self.source_now(&header));
        if let Some(mut stdin) = child.stdin.take() {
            // A child that already died shows in the stream's end.
            let _ = stdin.write_all(resume_line(plan.resume()).as_bytes());
        }
        let stopped = loop {
            match frame::read(&mut input) {
                Ok(Some(Frame::Message { seq, record })) => plan.message(seq, &record),
                Ok(Some(Frame::Failure { id, record })) => plan.failure(id, &record),
                Ok(Some(Frame::Done)) => break None,
                Ok(Some(Frame::Stopped(why))) => break Some(why),
                Ok(Some(Frame::Header(_) | Frame::Unavailable(_))) => {
                    break Some("the export stream is out of order".into())
                }
                Ok(None) => match ended(child) {
                    End::Fault(why) => break Some(why),
                    End::Interrupted(why) => return Err(SalvageError::Unavailable(why)),
                },
                Err(e) => break Some(e.to_string()),
            }
            if let Some(group) = plan.full_batch() {
                self.import(group, &mut before)?;
            }
        };
        let last = plan.finish(stopped);
        let outcome = Outcome::new(dir, &last.progress, false);
        self.import(last, &mut before)?;
        Ok(outcome)
    }

    /// The source store's clock now: its checkpoint plus the downtime since,
    /// as a restart of it would count (bounded by the TTL).
    fn source_now(&self, header: &Header) -> u64 {
        let cap = self.core.settings.ttl.max(self.core.settings.failure_ttl);
        let checkpoint = header.clock.as_deref().and_then(Checkpoint::decode);
        match checkpoint {
            Some(ck) => AgeClock::resume(self.clock.clone(), Some(ck), cap).now_ms(),
            // No clock: every record counts as new.
            None => 0,
        }
    }

    /// Imports one group, durable with its progress (then `before`, the
    /// progress so far, becomes it); waits while the store is full.
    fn import(&self, group: ImportBatch, before: &mut Progress) -> Result<(), SalvageError> {
        loop {
            if self.shutdown.is_cancelled() {
                return Err(SalvageError::Stopping);
            }
            match self.runtime.block_on(self.intake.import(group.clone())) {
                Ok(_) => {
                    self.core
                        .counters
                        .salvage
                        .progressed(before, &group.progress);
                    *before = group.progress;
                    return Ok(());
                }
                Err(e @ (IntakeError::Full { .. } | IntakeError::DiskFull)) => {
                    warn!(error = %e, "the outbox is full; salvage waits for room");
                    let stop = self.shutdown.clone();
                    self.runtime.block_on(async move {
                        tokio::select! {
                            () = tokio::time::sleep(FULL_RETRY) => {}
                            () = stop.cancelled() => {}
                        }
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn report(&self, o: &Outcome) {
        if o.already {
            return;
        }
        let counters = &self.core.counters;
        if o.unopened {
            let why = o.stopped.as_deref().unwrap_or("unknown");
            error!(
                store = %o.store,
                reason = %why,
                "outbox salvage: the set-aside store could not be read at all; it is kept as it is"
            );
            counters.store_lost(format!(
                "the outbox store {} could not be read at all ({why}); its messages were not \
                 delivered (the directory is kept)",
                o.store
            ));
            return;
        }
        error!(
            store = %o.store,
            messages = o.messages,
            failures = o.failures,
            finished = o.finished,
            unreadable = o.unreadable,
            stopped = o.stopped.as_deref().unwrap_or(""),
            "outbox salvage ended: {} messages and {} push failures imported, {} records unreadable",
            o.messages,
            o.failures,
            o.unreadable
        );
        if o.lost() {
            counters.store_lost(format!(
                "the outbox store {} was salvaged: {} messages and {} push failures imported, \
                 {} records could not be read{}",
                o.store,
                o.messages,
                o.failures,
                o.unreadable,
                o.stopped
                    .as_ref()
                    .map_or(String::new(), |s| format!(" (reading stopped: {s})"))
            ));
        }
    }
}

/// Why the reading child ended without `Done`.
enum End {
    /// The engine panicked on the store (an abort, or exit code 101).
    Fault(String),
    /// Something else ended it (SIGKILL, the OOM killer): not the store's
    /// fault, so the salvage is tried again rather than finished.
    Interrupted(String),
}

fn ended(child: &mut Child) -> End {
    use std::os::unix::process::ExitStatusExt;
    match child.wait() {
        Ok(s) if s.signal() == Some(SIGABRT) || s.code() == Some(101) => End::Fault(format!(
            "the storage engine panicked while reading the store (the reading process ended: {s})"
        )),
        Ok(s) => End::Interrupted(format!("the reading process ended early ({s})")),
        Err(e) => End::Interrupted(format!("the reading process was lost ({e})")),
    }
}

/// SIGABRT, what `panic = "abort"` ends a process with.
const SIGABRT: i32 = 6;

/// Set-aside stores in `root` not yet marked done, oldest name first.
pub(crate) fn pending(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(SET_ASIDE_PREFIX)
        })
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !p.join(DONE_FILE).exists())
        .collect();
    dirs.sort();
    dirs
}

/// Marks a set-aside store done, durably. It is kept, not removed: what
/// the engine could not read is evidence for whoever looks at it, and the
/// operator decides when it goes.
fn mark_done(dir: &Path, o: &Outcome) {
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(dir.join(DONE_FILE))?;
        f.write_all(&serde_json::to_vec_pretty(o).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::File::open(dir)?.sync_all()
    };
    if let Err(e) = write() {
        // Harmless: the progress in the store says done, so the next start
        // reads the store's header again and imports nothing.
        warn!(store = %dir.display(), error = %e, "cannot mark the salvaged store done");
    }
}
