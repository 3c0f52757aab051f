//! Key layout of the single ordered keyspace (format version 1). One
//! keyspace, so a batch touching messages, cursors and counters is atomic.
//!
//! - `m` + seq (u64 BE): a message record; BE keys iterate in FIFO order.
//! - `f` + failure id (u64 BE): a push failure (JSON), oldest first.
//! - `c:` + sink name: the sink's cursor and restart depth.
//! - `k:*`: counters and the age-clock checkpoint.

/// Message prefix.
pub const MSG: u8 = b'm';
/// Failure prefix.
pub const FAIL: u8 = b'f';
/// Live message count and bytes: 16 bytes.
pub const LIVE: &[u8] = b"k:live";
/// Next sequence number: 8 bytes.
pub const NEXT: &[u8] = b"k:next";
/// Age clock checkpoint.
pub const CLOCK: &[u8] = b"k:clock";
/// Next failure id and stored failure count: 16 bytes.
pub const FAILS: &[u8] = b"k:fails";
/// The store's identity (UTF-8 UUID), checked against the high-water record.
pub const ID: &[u8] = b"k:id";

/// `prefix` + `n` big-endian.
pub fn numbered(prefix: u8, n: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&n.to_be_bytes());
    k
}

/// The number in a [`numbered`] key.
pub fn number(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(1..9)?.try_into().ok()?))
}

/// A sink's cursor key.
pub fn cursor(sink: &str) -> Vec<u8> {
    [b"c:".as_slice(), sink.as_bytes()].concat()
}

/// Two u64s, big-endian.
pub fn pair(a: u64, b: u64) -> Vec<u8> {
    let mut v = a.to_be_bytes().to_vec();
    v.extend_from_slice(&b.to_be_bytes());
    v
}

/// Reads `n` big-endian u64s.
pub fn u64s<const N: usize>(b: &[u8]) -> Option<[u64; N]> {
    let mut out = [0u64; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u64::from_be_bytes(b.get(i * 8..i * 8 + 8)?.try_into().ok()?);
    }
    Some(out)
}
