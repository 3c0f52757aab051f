//! The `[store]` section as settings: the daemon's config module parses
//! the TOML file into these (with its defaults and error messages); the
//! outbox only reads them.

use std::path::PathBuf;
use std::time::Duration;

/// Durable outbox settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory holding the store (the engine's files); default
    /// `/var/lib/tether`.
    pub path: PathBuf,
    /// Retention before a message becomes a push failure; default 24 h.
    pub ttl: Duration,
    /// Cap on the store's size on disk; default 256 MiB.
    pub max_bytes: u64,
    /// What to do when full; default `drop-oldest`.
    pub full_policy: FullPolicy,
    /// Storage engine; default sled.
    pub engine: StoreEngine,
    /// The engine's page cache; default 4 MiB.
    pub cache_bytes: u64,
    /// Batch several messages into one publish up to this size; 0 = off.
    pub batch_max_bytes: usize,
    /// How long push failures are kept; default 24 h.
    pub failure_ttl: Duration,
    /// Free-form map added to every attribute message (`extendedData`).
    pub extended_data: serde_json::Map<String, serde_json::Value>,
}

/// Outbox policy when `store.max_bytes` is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullPolicy {
    /// Drop the oldest messages (recorded as failures).
    DropOldest,
    /// Refuse new messages with 503 + Retry-After.
    RejectNew,
}

/// `store.engine`: which embedded database holds the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreEngine {
    /// sled 0.34 in the store directory (the default).
    Sled,
    /// redb 4 in `<store dir>/outbox.redb`: memory bounded by
    /// `cache_bytes` whatever the backlog.
    Redb,
}
