//! Salvage: a store that was set aside (the engine reported corruption or
//! panicked on it) is not forgotten. tether starts a fresh store at once,
//! then imports every readable message and push failure of the set-aside
//! one in the background, and counts what it could not read.
//! `tether outbox import DIR` does the same by hand for any set-aside or
//! copied store (through the admin API: the daemon runs the salvage).
//!
//! - [`export`]: the reading child, `tether outbox export DIR` (hidden). A
//!   damaged store may make the engine panic, and release builds abort on
//!   panic, so the store is read in a child process: a panic kills only it.
//! - `frame`: the stream the child writes on its stdout.
//! - `reader`: the store layouts as salvage reads them (format 1 now;
//!   format 2 adds its arm to `reader::export`).
//! - `plan`: the decisions without IO: ages carried over, groups, counts.
//! - `import`: the import path through the group commit
//!   (`Intake::import`), progress in the same batch.
//! - `run`: the driver; `status`: `/healthz` and metrics.
//!
//! Guarantees: every group is imported with its progress in one durable
//! batch, so a kill mid-salvage resumes after the last durable group, with
//! no loss and no duplicates; the progress key is the source store's id
//! (`k:salvage:<id>`), so importing the same store again (or a copy of it)
//! imports nothing twice. Messages keep their id, type, body, `only_sink`,
//! UTC time and age; failures keep their fields under a new number.

pub mod export;
pub(crate) mod frame;
mod import;
pub(crate) mod plan;
pub(crate) mod reader;
pub(crate) mod run;
pub(crate) mod status;

pub(crate) use self::plan::ImportBatch;
pub use self::run::{Outcome, SalvageError, Salvager};
pub use self::status::{SalvageView, Status};

pub(crate) use self::import::Undo;
