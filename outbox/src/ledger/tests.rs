//! The ledger over an in-memory store: every event applied in order, time
//! passed in, no sockets and no sleeps.

use std::time::Duration;

use crate::append::{IntakeError, Request};
use crate::config::FullPolicy;
use crate::keys::{self, SegKey};
use crate::message::{NewMessage, Stored};
use crate::segment;
use crate::store::mem::MemStorage;
use crate::store::{Batch, Storage};

use super::*;

const TTL_MS: u64 = 60_000;

struct Rig {
    store: MemStorage,
    ledger: Ledger,
    sinks: Vec<String>,
    limits: Limits,
}

fn limits(max_bytes: u64, full_policy: FullPolicy) -> Limits {
    Limits {
        ttl_ms: TTL_MS,
        ttl_text: "1m".into(),
        max_bytes,
        full_policy,
    }
}

fn at(store_ms: u64) -> Now {
    Now {
        store_ms,
        wall_ms: 1_700_000_000_000 + store_ms,
    }
}

fn msg(i: usize) -> NewMessage {
    NewMessage::json(
        "attribute",
        &serde_json::json!({ "i": i, "pad": "x".repeat(150) }),
    )
}

impl Rig {
    fn new(limits: Limits) -> Self {
        let store = MemStorage::default();
        let sinks = vec!["hub".to_string(), "partner".to_string()];
        let (ledger, batch) = Ledger::load(&store, &sinks, limits.clone()).unwrap();
        store.apply(batch).unwrap();
        Self {
            store,
            ledger,
            sinks,
            limits,
        }
    }

    fn apply(&self, batch: Batch) {
        self.store.apply(batch).unwrap();
    }

    /// Appends one request per entry of `sizes`; returns the answers.
    fn append(
        &mut self,
        requests: Vec<Vec<NewMessage>>,
        now: Now,
    ) -> Vec<Result<Vec<u64>, IntakeError>> {
        let disk = self.store.disk_bytes();
        let requests = requests.into_iter().map(Request::New).collect();
        let acc = self.ledger.append(&self.store, requests, disk, now);
        self.apply(acc.batch);
        acc.answers
            .into_iter()
            .map(|a| a.map(|r| r.iter().map(|x| x.seq).collect()))
            .collect()
    }

    fn read(&mut self, sink: usize, after: u64, limit: usize) -> Vec<Stored> {
        let from = self.ledger.sinks[sink].cursor.max(after + 1);
        let to = self.ledger.next_seq;
        let rows = segments(&self.store, from, to, 64).unwrap();
        let segs: Vec<segment::Segment> = rows
            .iter()
            .map(|(k, v)| segment::decode(SegKey::decode(k).unwrap(), v).unwrap())
            .collect();
        let refs: Vec<&segment::Segment> = segs.iter().collect();
        self.ledger.pick(sink, &refs, from, to, limit, usize::MAX)
    }

    fn ack(&mut self, sink: usize, msgs: &[&Stored]) -> usize {
        let done: Vec<(u64, u64)> = msgs.iter().map(|m| (m.seq, m.encoded_len())).collect();
        self.ledger.delivered(sink, &done)
    }

    /// Writes what a compaction tick writes (cursors, counters, freed segments).
    fn tick(&mut self) {
        if let Some(b) = self.ledger.compact(&self.store).unwrap() {
            self.apply(b);
        }
    }

    fn restart(&mut self) {
        let (ledger, batch) = Ledger::load(&self.store, &self.sinks, self.limits.clone()).unwrap();
        self.apply(batch);
        self.ledger = ledger;
    }

    fn failures(&self) -> Vec<crate::PushFailure> {
        self.store
            .scan(&[keys::FAIL], &[keys::FAIL + 1], usize::MAX, false)
            .unwrap()
            .iter()
            .map(|(_, v)| serde_json::from_slice(&v[8..]).unwrap())
            .collect()
    }

    fn segment_keys(&self) -> Vec<SegKey> {
        self.store
            .scan_keys(&[keys::SEG], &keys::SEG_END, usize::MAX, false)
            .unwrap()
            .iter()
            .filter_map(|k| SegKey::decode(k))
            .collect()
    }
}

fn seqs(msgs: &[Stored]) -> Vec<u64> {
    msgs.iter().map(|m| m.seq).collect()
}

#[test]
fn each_sink_reads_in_fifo_order_across_groups_and_segments() {
    let mut r = Rig::new(limits(1 << 30, FullPolicy::RejectNew));
    let first: Vec<NewMessage> = (0..300).map(msg).collect();
    let second: Vec<NewMessage> = (300..310).map(msg).collect();
    r.append(vec![first, second], at(0));
    assert!(
        r.segment_keys().len() >= 3,
        "a group of 310 is several segments"
    );
    for sink in 0..2 {
        let mut after = 0;
        let mut got = Vec::new();
        loop {
            let batch = r.read(sink, after, 50);
            let Some(last) = batch.last() else { break };
            after = last.seq;
            got.extend(seqs(&batch));
        }
        assert_eq!(got, (1..=310).collect::<Vec<u64>>(), "sink {sink}");
    }
}

#[test]
fn out_of_order_acks_move_the_cursor_only_over_a_complete_prefix_and_survive_a_restart() {
    let mut r = Rig::new(limits(1 << 30, FullPolicy::RejectNew));
    r.append(vec![(0..10).map(msg).collect()], at(0));
    let read = r.read(0, 0, 10);
    assert_eq!(r.ack(0, &[&read[4], &read[2], &read[3]]), 3);
    assert_eq!(r.ledger.sinks[0].cursor, 1, "1 is not acked yet");
    assert_eq!(r.ack(0, &[&read[2]]), 0, "a second PUBACK counts once");
    r.tick();
    r.restart();
    let again = r.read(0, 0, 10);
    assert_eq!(
        seqs(&again),
        [1, 2, 6, 7, 8, 9, 10],
        "acked ones are not resent"
    );
    assert_eq!(r.ledger.sinks[0].pending_n, 7);
    assert_eq!(r.ack(0, &[&again[0], &again[1]]), 2);
    assert_eq!(r.ledger.sinks[0].cursor, 6);
}

#[test]
fn a_lost_connection_resends_everything_not_acked_from_the_cursor() {
    let mut r = Rig::new(limits(1 << 30, FullPolicy::RejectNew));
    r.append(vec![(0..6).map(msg).collect()], at(0));
    let sent = r.read(0, 0, 6);
    r.ack(0, &[&sent[1], &sent[5]]);
    // The sink starts over from its cursor: everything in flight and not
    // acked comes again, with the same ids.
    let resent = r.read(0, 0, 6);
    assert_eq!(seqs(&resent), [1, 3, 4, 5]);
    assert_eq!(resent[0].id, sent[0].id);
}

#[test]
fn messages_past_the_ttl_become_push_failures_per_sink_that_had_not_finished_them() {
    let mut r = Rig::new(limits(1 << 30, FullPolicy::RejectNew));
    r.append(vec![(0..3).map(msg).collect()], at(0));
    r.append(vec![(3..5).map(msg).collect()], at(30_000));
    let hub = r.read(0, 0, 10);
    r.ack(0, &[&hub[0]]);
    r.ledger.sinks[1].last_error = Some("503 Service Unavailable".into());
    let e = r
        .ledger
        .expire(&r.store, at(TTL_MS - 1), 6, Duration::from_secs(1))
        .unwrap();
    assert!(e.batch.is_empty());
    assert_eq!(
        e.wait,
        Duration::from_millis(1),
        "woken when the first is due"
    );
    let e = r
        .ledger
        .expire(&r.store, at(TTL_MS), 6, Duration::from_secs(60))
        .unwrap();
    r.apply(e.batch);
    assert_eq!(
        e.wait,
        Duration::from_millis(30_000),
        "the second group is due later"
    );
    let f = r.failures();
    assert_eq!(f.len(), 2 + 3, "hub: 2 of the first group, partner: all 3");
    assert!(f
        .iter()
        .any(|f| f.partner_id == "partner" && f.error_message.contains("503")));
    assert!(f
        .iter()
        .any(|f| f.partner_id == "hub" && f.error_message.contains("store.ttl (1m)")));
    assert_eq!(r.ledger.fail_n, 5);
    assert_eq!((r.ledger.sinks[0].cursor, r.ledger.sinks[1].cursor), (4, 4));
    assert_eq!(r.ledger.sinks[1].counters.expired, 3);
    r.tick();
    assert_eq!(r.ledger.live_n, 2, "the expired segment is compacted");
}

#[test]
fn drop_oldest_deletes_the_oldest_segments_into_failures_and_keeps_accepting() {
    let max = 64 * 1024;
    let mut r = Rig::new(limits(max, FullPolicy::DropOldest));
    for g in 0..20 {
        let answers = r.append(vec![(g * 50..g * 50 + 50).map(msg).collect()], at(g as u64));
        assert!(answers[0].is_ok(), "group {g}: {:?}", answers[0]);
        assert!(r.ledger.live_b <= max / 2, "group {g}: {}", r.ledger.live_b);
    }
    let f = r.failures();
    assert!(!f.is_empty());
    assert!(f.iter().all(|f| f.error_message.contains("drop-oldest")));
    assert_eq!(f.len() as u64, r.ledger.sinks[0].counters.dropped * 2);
    let first_kept = r.segment_keys()[0].first;
    assert!(first_kept > 1);
    assert_eq!(
        seqs(&r.read(0, 0, 1)),
        [first_kept],
        "sinks skip what was dropped"
    );
    let live: u64 = r.segment_keys().iter().map(|k| u64::from(k.bytes)).sum();
    assert_eq!(
        live, r.ledger.live_b,
        "the live counter matches the segments"
    );
}

#[test]
fn reject_new_refuses_the_whole_request_and_writes_nothing_of_it() {
    let max = 64 * 1024;
    let mut r = Rig::new(limits(max, FullPolicy::RejectNew));
    let mut accepted = 0;
    let mut refused = 0;
    for g in 0..20 {
        match &r.append(vec![(g * 50..g * 50 + 50).map(msg).collect()], at(0))[0] {
            Ok(s) => accepted += s.len() as u64,
            Err(IntakeError::Full { .. }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused > 0 && accepted > 0);
    assert_eq!(r.ledger.live_n, accepted);
    assert_eq!(
        r.ledger.next_seq,
        accepted + 1,
        "refused requests take no seqs"
    );
    assert!(r.failures().is_empty(), "nothing dropped");
    let too_big = r.append(
        vec![vec![NewMessage::json(
            "attribute",
            &serde_json::json!("x".repeat(40_000)),
        )]],
        at(0),
    );
    assert!(matches!(too_big[0], Err(IntakeError::TooLarge { .. })));
}

#[test]
fn a_replay_goes_to_its_sink_only() {
    let mut r = Rig::new(limits(1 << 30, FullPolicy::RejectNew));
    let mut replay = msg(0);
    replay.only_sink = Some("partner".into());
    r.append(vec![vec![replay.clone()], vec![msg(1)]], at(0));
    assert_eq!(seqs(&r.read(0, 0, 10)), [2], "the hub skips the replay");
    let partner = r.read(1, 0, 10);
    assert_eq!(seqs(&partner), [1, 2]);
    assert_eq!(partner[0].id, replay.id, "a replay keeps its id");
    assert_eq!(r.ledger.sinks[0].pending_n, 1);
}

#[test]
fn purging_failures_counts_them_down_and_delivered_segments_are_compacted() {
    let mut r = Rig::new(limits(1 << 30, FullPolicy::RejectNew));
    r.append(vec![(0..4).map(msg).collect()], at(0));
    let m = r.read(0, 0, 10);
    let gave_up = r
        .ledger
        .give_up(0, &m[0], "too large for the hub", at(5))
        .unwrap();
    r.apply(gave_up);
    assert!(r.ledger.give_up(0, &m[0], "again", at(6)).is_none(), "once");
    let ids: Vec<Vec<u8>> = r
        .store
        .scan_keys(&[keys::FAIL], &[keys::FAIL + 1], 10, false)
        .unwrap();
    assert_eq!((ids.len(), r.ledger.fail_n), (1, 1));
    let b = r.ledger.forget_failures(&ids);
    r.apply(b);
    assert_eq!(r.ledger.fail_n, 0);
    assert!(r.failures().is_empty());
    r.ack(0, &[&m[1], &m[2], &m[3]]);
    let p = r.read(1, 0, 10);
    r.ack(1, &p.iter().collect::<Vec<_>>());
    r.tick();
    assert!(r.segment_keys().is_empty());
    assert_eq!((r.ledger.live_n, r.ledger.live_b), (0, 0));
    assert_eq!(r.ledger.sinks.iter().map(|s| s.pending_n).sum::<u64>(), 0);
}

#[test]
fn a_restart_loads_counters_cursors_and_sequence_from_what_was_written() {
    let mut r = Rig::new(limits(1 << 30, FullPolicy::RejectNew));
    r.append(vec![(0..600).map(msg).collect()], at(0));
    let m = r.read(1, 0, 100);
    r.ack(1, &m.iter().collect::<Vec<_>>());
    r.tick();
    let before = (r.ledger.next_seq, r.ledger.live_n, r.ledger.live_b);
    r.restart();
    assert_eq!(
        (r.ledger.next_seq, r.ledger.live_n, r.ledger.live_b),
        before
    );
    assert_eq!(
        (r.ledger.sinks[0].cursor, r.ledger.sinks[1].cursor),
        (1, 101)
    );
    assert_eq!(
        (r.ledger.sinks[0].pending_n, r.ledger.sinks[1].pending_n),
        (600, 500)
    );
    // k:next lost (an older copy): the last segment still sets the sequence.
    let mut b = Batch::default();
    b.del(keys::NEXT.to_vec());
    r.apply(b);
    r.restart();
    assert_eq!(r.ledger.next_seq, 601);
}

#[test]
fn a_rolled_back_group_is_never_read_and_leaves_no_segment() {
    let mut r = Rig::new(limits(1 << 30, FullPolicy::RejectNew));
    r.append(vec![(0..2).map(msg).collect()], at(0));
    let disk = r.store.disk_bytes();
    let acc = r.ledger.append(
        &r.store,
        vec![Request::New((2..400).map(msg).collect())],
        disk,
        at(1),
    );
    r.apply(acc.batch);
    let b = r
        .ledger
        .rollback(&acc.written, &acc.segments, acc.undo)
        .unwrap();
    r.apply(b);
    assert_eq!(seqs(&r.read(0, 0, 1000)), [1, 2]);
    assert_eq!(r.segment_keys().len(), 1);
    assert_eq!(r.ledger.live_n, 2);
}
