//! Reading a store out for salvage: its header, then every message and push
//! failure after a resume point, as [`Frame`]s, in bounded pages.
//!
//! This is the one place that knows the store layouts for salvage:
//! [`export`] reads segments (format 2) and `m` keys (format 1, or one in
//! the middle of its migration to 2) and reuses the frames.

use std::io;

use serde::{Deserialize, Serialize};

use super::frame::{Frame, Header};
use crate::keys::{self, SegKey};
use crate::segment;
use crate::store::{Storage, StoreError};

/// Rows read per scan, so memory stays bounded whatever the store holds.
const PAGE: usize = 256;

/// Where reading resumes: after these source numbers (0: from the start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Resume {
    /// Last source message sequence number imported.
    pub(crate) after_seq: u64,
    /// Last source failure number imported.
    pub(crate) after_failure: u64,
}

/// Reading stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExportError {
    /// The engine failed while reading the store.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The stream's reader went away.
    #[error("cannot write the export stream: {0}")]
    Out(#[from] io::Error),
    /// The store cannot be opened for now (not its fault).
    #[error("{0}")]
    Unavailable(StoreError),
    /// A layout this build cannot read.
    #[error("format {0} cannot be read by this tether")]
    Format(u32),
}

/// The store's header (format 1 keeps it in `k:*` and `c:*` keys).
///
/// # Errors
/// When the engine fails.
pub(crate) fn header(storage: &dyn Storage, format: u32) -> Result<Header, StoreError> {
    let pair = |key: &[u8]| -> Result<[u64; 2], StoreError> {
        Ok(storage
            .get(key)?
            .and_then(|v| keys::u64s::<2>(&v))
            .unwrap_or([0, 0]))
    };
    let cursors = storage
        .scan(b"c:", b"c;", PAGE, false)?
        .into_iter()
        .filter_map(|(k, v)| {
            let name = String::from_utf8_lossy(k.get(2..)?).into_owned();
            Some((name, keys::u64s::<1>(&v)?[0]))
        })
        .collect();
    Ok(Header {
        format,
        store_id: storage
            .get(keys::ID)?
            .and_then(|v| String::from_utf8(v).ok()),
        clock: storage.get(keys::CLOCK)?,
        messages: pair(keys::LIVE)?[0],
        failures: pair(keys::FAILS)?[1],
        cursors,
    })
}

/// Sends every message, then every failure, after `from` to `out`.
///
/// # Errors
/// When the engine fails (what was sent before stays valid) or `out` does.
pub(crate) fn export(
    storage: &dyn Storage,
    format: u32,
    from: Resume,
    out: &mut dyn FnMut(Frame) -> io::Result<()>,
) -> Result<(), ExportError> {
    match format {
        // Format 1 in the middle of its migration holds segments below the
        // remaining `m` keys: both, in sequence order.
        0..=2 => {
            segmented(storage, from.after_seq, &mut |seq, record| {
                out(Frame::Message { seq, record })
            })?;
            numbered(storage, keys::MSG_V1, from.after_seq, &mut |seq, record| {
                out(Frame::Message { seq, record })
            })?;
            numbered(
                storage,
                keys::FAIL,
                from.after_failure,
                &mut |id, record| out(Frame::Failure { id, record }),
            )
        }
        other => Err(ExportError::Format(other)),
    }
}

/// Every message in segments (format 2) above `after`, in order, a few
/// segments at a time; each message of an unreadable segment comes as an
/// empty (unreadable) record, so salvage counts what was lost.
fn segmented(
    storage: &dyn Storage,
    after: u64,
    out: &mut dyn FnMut(u64, Vec<u8>) -> io::Result<()>,
) -> Result<(), ExportError> {
    const SEGMENTS: usize = 16;
    let mut from = after.saturating_add(1);
    loop {
        let rows = crate::ledger::segments(storage, from, u64::MAX, SEGMENTS)?;
        if rows.is_empty() {
            return Ok(());
        }
        for (k, v) in &rows {
            let Some(key) = SegKey::decode(k) else {
                continue;
            };
            from = key.last.saturating_add(1);
            match segment::decode(key, v) {
                Ok(seg) => {
                    for m in seg.records.iter().filter(|m| m.seq > after) {
                        out(m.seq, m.encode())?;
                    }
                }
                Err(e) => {
                    // Each of its messages counts as an unreadable record.
                    tracing::error!(error = %e, "an unreadable segment while salvaging");
                    for seq in key.first.max(after.saturating_add(1))..=key.last {
                        out(seq, Vec::new())?;
                    }
                }
            }
        }
        if rows.len() < SEGMENTS || from == u64::MAX {
            return Ok(());
        }
    }
}

/// Every `prefix` + number key above `after`, in order, a page at a time.
fn numbered(
    storage: &dyn Storage,
    prefix: u8,
    after: u64,
    out: &mut dyn FnMut(u64, Vec<u8>) -> io::Result<()>,
) -> Result<(), ExportError> {
    let end = [prefix + 1];
    let mut from = keys::numbered(prefix, after.saturating_add(1)).to_vec();
    loop {
        let rows = storage.scan(&from, &end, PAGE, false)?;
        let Some((last, _)) = rows.last() else {
            return Ok(());
        };
        let next = keys::number(last).map(|n| keys::numbered(prefix, n.saturating_add(1)));
        for (k, v) in rows {
            if let Some(n) = keys::number(&k) {
                out(n, v)?;
            }
        }
        match next {
            Some(k) if k.as_slice() > from.as_slice() => from = k.to_vec(),
            _ => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Batch, SledStorage};

    #[test]
    fn records_after_the_resume_point_come_in_order_in_pages() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStorage::open(dir.path(), 1 << 20).unwrap();
        let mut b = Batch::default();
        for n in 1..=600u64 {
            b.put(
                keys::numbered(keys::MSG_V1, n).to_vec(),
                n.to_be_bytes().to_vec(),
            );
        }
        for n in 1..=3u64 {
            b.put(keys::numbered(keys::FAIL, n).to_vec(), vec![0; 8]);
        }
        b.put(keys::LIVE.to_vec(), keys::pair(600, 4800));
        b.put(keys::cursor("hub"), keys::pair(5, 0));
        s.apply(b).unwrap();
        let h = header(&s, 1).unwrap();
        assert_eq!(h.messages, 600);
        assert_eq!(h.cursors, vec![("hub".to_string(), 5)]);
        let mut seen = Vec::new();
        let from = Resume {
            after_seq: 10,
            after_failure: 1,
        };
        export(&s, 1, from, &mut |f| {
            seen.push(f);
            Ok(())
        })
        .unwrap();
        let seqs: Vec<u64> = seen
            .iter()
            .filter_map(|f| match f {
                Frame::Message { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect();
        assert_eq!(seqs, (11..=600).collect::<Vec<_>>());
        assert!(matches!(seen.last(), Some(Frame::Failure { id: 3, .. })));
        assert_eq!(seen.len(), 590 + 2);
    }
}
