//! Key layout of the single ordered keyspace (store format 2). One
//! keyspace, so a batch touching segments, cursors and counters is atomic.
//!
//! - `s` + first seq (u64 BE) + last seq (u64 BE) + record bytes (u32 BE):
//!   a segment, the messages `first..=last` of one group commit (see
//!   [`super::segment`]). BE keys iterate in FIFO order, and a key-only
//!   scan knows each segment's range and size without reading it.
//! - `f` + failure id (u64 BE): a push failure (JSON), oldest first.
//! - `c:` + sink name: the sink's cursor, restart depth and the ranges it
//!   finished above the cursor.
//! - `k:*`: counters and the age-clock checkpoint; `k:format` the layout.
//!
//! Format 1 kept one `m` + seq (u64 BE) key per message; only the
//! migration (`super::migrate`) still reads it.

/// Segment prefix.
pub(crate) const SEG: u8 = b's';
/// Format-1 message prefix (read by the migration only).
pub(crate) const MSG_V1: u8 = b'm';
/// Failure prefix.
pub(crate) const FAIL: u8 = b'f';
/// Live message count and bytes: 16 bytes.
pub(crate) const LIVE: &[u8] = b"k:live";
/// Next sequence number: 8 bytes.
pub(crate) const NEXT: &[u8] = b"k:next";
/// Age clock checkpoint.
pub(crate) const CLOCK: &[u8] = b"k:clock";
/// Next failure id and stored failure count: 16 bytes.
pub(crate) const FAILS: &[u8] = b"k:fails";
/// The store's identity (UTF-8 UUID), checked against the high-water record.
pub(crate) const ID: &[u8] = b"k:id";
/// Migration progress (format 1 to 2): messages converted so far, 8 bytes.
pub(crate) const MIGRATED: &[u8] = b"k:migrated";

/// `prefix` + `n` big-endian.
pub(crate) fn numbered(prefix: u8, n: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&n.to_be_bytes());
    k
}

/// The number in a [`numbered`] key.
pub(crate) fn number(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(1..9)?.try_into().ok()?))
}

/// A segment's key range and size, as its key holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegKey {
    /// First sequence number.
    pub(crate) first: u64,
    /// Last sequence number (inclusive).
    pub(crate) last: u64,
    /// Bytes of its records, uncompressed (what the live counters count).
    pub(crate) bytes: u32,
}

impl SegKey {
    /// The key bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(21);
        k.push(SEG);
        k.extend_from_slice(&self.first.to_be_bytes());
        k.extend_from_slice(&self.last.to_be_bytes());
        k.extend_from_slice(&self.bytes.to_be_bytes());
        k
    }

    /// Reads a segment key; `None` for any other key.
    pub(crate) fn decode(key: &[u8]) -> Option<Self> {
        if key.len() != 21 || key[0] != SEG {
            return None;
        }
        let [first, last] = u64s::<2>(&key[1..17])?;
        let bytes = u32::from_be_bytes(key[17..21].try_into().ok()?);
        (first <= last).then_some(Self { first, last, bytes })
    }

    /// Messages in the segment.
    pub(crate) fn count(&self) -> u64 {
        self.last - self.first + 1
    }
}

/// The smallest key of a segment starting at `first` or later: scan bound.
pub(crate) fn seg_from(first: u64) -> Vec<u8> {
    numbered(SEG, first).to_vec()
}

/// The end of the segment keyspace.
pub(crate) const SEG_END: [u8; 1] = [SEG + 1];

/// A sink's cursor key.
pub(crate) fn cursor(sink: &str) -> Vec<u8> {
    [b"c:".as_slice(), sink.as_bytes()].concat()
}

/// Two u64s, big-endian.
pub(crate) fn pair(a: u64, b: u64) -> Vec<u8> {
    let mut v = a.to_be_bytes().to_vec();
    v.extend_from_slice(&b.to_be_bytes());
    v
}

/// Reads `n` big-endian u64s.
pub(crate) fn u64s<const N: usize>(b: &[u8]) -> Option<[u64; N]> {
    let mut out = [0u64; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u64::from_be_bytes(b.get(i * 8..i * 8 + 8)?.try_into().ok()?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_keys_round_trip_and_sort_by_first_seq() {
        let a = SegKey {
            first: 5,
            last: 260,
            bytes: 9000,
        };
        let b = SegKey {
            first: 261,
            last: 261,
            bytes: 1,
        };
        assert_eq!(SegKey::decode(&a.encode()), Some(a));
        assert!(a.encode() < b.encode());
        assert!(seg_from(261) <= b.encode() && seg_from(262) > b.encode());
        assert_eq!(SegKey::decode(&numbered(FAIL, 1)), None);
        assert_eq!(a.count(), 256);
    }
}
