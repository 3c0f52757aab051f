//! A store in the format-1 layout (one `m` + seq key per message), written
//! directly with the engine ([`RawStore`]), for the migration tests. Format 1 is
//! frozen: the stores that tether must still migrate hold exactly these
//! bytes, so they are spelled out here from the format rather than taken
//! from the outbox's current encoders (a change to those must not change
//! what this writes).
//!
//! The layout (all integers big-endian):
//! - `m` + seq (u64): a message record: version 1, wall-clock and age-clock
//!   acceptance times (ms, u64 each), the id (16 bytes), the type and the
//!   only-sink name (a length byte and the text each), then the body;
//! - `k:next`: the next sequence number (u64);
//! - `k:live`: live messages and their record bytes (u64 each);
//! - `c:` + sink name: the sink's cursor, messages and bytes queued (u64
//!   each);
//! - `k:clock`: the age-clock checkpoint, store ms and wall ms (u64 each);
//! - `k:format`: 1 (u32).

use super::raw::{RawStore, Rows};

/// Record version 1.
const RECORD_V1: u8 = 1;

/// The format-1 record of an attribute message.
fn record(id: &uuid::Uuid, utc_ms: u64, body: &[u8]) -> Vec<u8> {
    let mut v = vec![RECORD_V1];
    v.extend_from_slice(&utc_ms.to_be_bytes());
    // Accepted at store time 0.
    v.extend_from_slice(&0u64.to_be_bytes());
    v.extend_from_slice(id.as_bytes());
    v.push(b"attribute".len() as u8);
    v.extend_from_slice(b"attribute");
    // For every sink.
    v.push(0);
    v.extend_from_slice(body);
    v
}

/// Big-endian u64s, concatenated.
fn u64s(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

/// Writes `messages` attribute messages in the format-1 layout (`m` + seq
/// keys, the counters, a hub cursor, the age-clock checkpoint, format 1)
/// into `store`, durably, and returns their ids in order.
pub(crate) fn write(store: &RawStore, messages: u64) -> Vec<String> {
    let mut ids = Vec::new();
    let mut live_b = 0;
    for chunk in (1..=messages).collect::<Vec<_>>().chunks(5000) {
        let mut batch = Rows::new();
        for &seq in chunk {
            let id = uuid::Uuid::new_v4();
            let body = serde_json::json!({"id": id.to_string(), "n": seq, "pad": "x".repeat(100)})
                .to_string();
            let v = record(&id, 1_700_000_000_000, body.as_bytes());
            live_b += v.len() as u64;
            let mut key = vec![b'm'];
            key.extend_from_slice(&seq.to_be_bytes());
            batch.push((key, v));
            ids.push(id.to_string());
        }
        store.put(batch);
    }
    store.put(vec![
        (b"k:next".to_vec(), u64s(&[messages + 1])),
        (b"k:live".to_vec(), u64s(&[messages, live_b])),
        (b"c:hub".to_vec(), u64s(&[1, messages, live_b])),
        // Every format-1 commit wrote the age-clock checkpoint: without it
        // the messages (accepted at store time 0) would count as one TTL old.
        (b"k:clock".to_vec(), u64s(&[0, 0])),
        (b"k:format".to_vec(), 1u32.to_be_bytes().to_vec()),
    ]);
    ids
}
