//! A store directory opened with its engine directly, below tether: how the
//! tests put an older tether's store on disk (`format1`), damage a store,
//! or read a key back once tether stopped. What an engine holds is one
//! ordered keyspace of byte keys and values: sled's default tree in the
//! directory, or the table `outbox` in its `outbox.redb` (README,
//! Configuration: `[store] engine`).

use std::path::Path;

use redb::{ReadableDatabase, TableDefinition};

/// The file of a redb store, inside the store directory.
const REDB_FILE: &str = "outbox.redb";
/// The table that holds the keyspace in it.
const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("outbox");

/// The engine `TETHER_TEST_ENGINE` names, sled without it (as
/// [`super::config_text`] configures tether).
pub(crate) fn test_engine() -> &'static str {
    if std::env::var("TETHER_TEST_ENGINE").as_deref() == Ok("redb") {
        "redb"
    } else {
        "sled"
    }
}

/// The data file of a [`test_engine`] store, inside its directory: sled's
/// `db` or redb's file.
pub(crate) fn test_engine_file() -> &'static str {
    if test_engine() == "redb" {
        REDB_FILE
    } else {
        "db"
    }
}

/// Keys and values, in key order.
pub(crate) type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// A store directory opened with the engine that wrote it.
pub(crate) enum RawStore {
    Sled(sled::Db),
    Redb(redb::Database),
}

impl RawStore {
    /// Opens the store in `dir`, creating it when there is none, with
    /// `engine` (`store.engine`: "sled" or "redb").
    ///
    /// # Errors
    /// The engine's, as text (a killed tether's lock may still be held).
    pub(crate) fn open(engine: &str, dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        match engine {
            "sled" => sled::open(dir).map(Self::Sled).map_err(|e| e.to_string()),
            "redb" => redb::Database::create(dir.join(REDB_FILE))
                .map(Self::Redb)
                .map_err(|e| e.to_string()),
            other => Err(format!("no engine {other:?}")),
        }
    }

    /// The value at `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self {
            Self::Sled(db) => db.get(key).unwrap().map(|v| v.to_vec()),
            Self::Redb(db) => {
                let tx = db.begin_read().unwrap();
                let table = tx.open_table(TABLE).ok()?;
                table.get(key).unwrap().map(|v| v.value().to_vec())
            }
        }
    }

    /// Every entry with `from <= key < to`.
    pub(crate) fn scan(&self, from: &[u8], to: &[u8]) -> Rows {
        match self {
            Self::Sled(db) => db
                .range(from..to)
                .map(|r| {
                    let (k, v) = r.unwrap();
                    (k.to_vec(), v.to_vec())
                })
                .collect(),
            Self::Redb(db) => {
                let tx = db.begin_read().unwrap();
                let Ok(table) = tx.open_table(TABLE) else {
                    return Vec::new();
                };
                table
                    .range(from..to)
                    .unwrap()
                    .map(|r| {
                        let (k, v) = r.unwrap();
                        (k.value().to_vec(), v.value().to_vec())
                    })
                    .collect()
            }
        }
    }

    /// Writes `rows` in one atomic batch and makes them durable.
    pub(crate) fn put(&self, rows: Rows) {
        match self {
            Self::Sled(db) => {
                let mut batch = sled::Batch::default();
                for (k, v) in rows {
                    batch.insert(k, v);
                }
                db.apply_batch(batch).unwrap();
                db.flush().unwrap();
            }
            Self::Redb(db) => {
                let tx = db.begin_write().unwrap();
                {
                    let mut table = tx.open_table(TABLE).unwrap();
                    for (k, v) in rows {
                        table.insert(k.as_slice(), v.as_slice()).unwrap();
                    }
                }
                tx.commit().unwrap();
            }
        }
    }
}
