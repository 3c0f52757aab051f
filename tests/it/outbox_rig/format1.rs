//! A store in the format-1 layout (one `m` + seq key per message), written
//! directly, for the migration tests.

use tether_outbox::ages::Checkpoint;
use tether_outbox::keys;
use tether_outbox::message::Stored;
use tether_outbox::store::{Batch, Storage};

/// Writes `messages` attribute messages in the format-1 layout (`m` + seq
/// keys, the counters, a hub cursor, the age-clock checkpoint, format 1)
/// into `storage`, syncs, and returns their ids in order.
pub(crate) fn write(storage: &dyn Storage, messages: u64) -> Vec<String> {
    let mut ids = Vec::new();
    let mut live_b = 0;
    for chunk in (1..=messages).collect::<Vec<_>>().chunks(5000) {
        let mut batch = Batch::default();
        for &seq in chunk {
            let id = uuid::Uuid::new_v4();
            let m = Stored {
                seq,
                id,
                message_type: "attribute".into(),
                utc_ms: 1_700_000_000_000,
                accepted_ms: 0,
                only_sink: None,
                body: serde_json::json!({"id": id.to_string(), "n": seq, "pad": "x".repeat(100)})
                    .to_string()
                    .into_bytes(),
            };
            let v = m.encode();
            live_b += v.len() as u64;
            batch.put(keys::numbered(keys::MSG_V1, seq).to_vec(), v);
            ids.push(id.to_string());
        }
        storage.apply(batch).unwrap();
    }
    let mut batch = Batch::default();
    batch.put(keys::NEXT.to_vec(), (messages + 1).to_be_bytes().to_vec());
    batch.put(keys::LIVE.to_vec(), keys::pair(messages, live_b));
    let mut cursor = keys::pair(1, messages);
    cursor.extend_from_slice(&live_b.to_be_bytes());
    batch.put(keys::cursor("hub"), cursor);
    // Every format-1 commit wrote the age-clock checkpoint: without it the
    // messages (accepted at store time 0) would count as one TTL old.
    batch.put(keys::CLOCK.to_vec(), Checkpoint::default().encode());
    batch.put(b"k:format".to_vec(), 1u32.to_be_bytes().to_vec());
    storage.apply(batch).unwrap();
    storage.sync().unwrap();
    ids
}
