//! One sink's position in the outbox: its cursor (everything below is done
//! for it), the ranges it finished above the cursor (out-of-order PUBACKs,
//! messages addressed to another sink), and its depth.

use std::collections::BTreeMap;

use crate::counters::SinkCounters;
use crate::keys;
use crate::store::Batch;

/// Done ranges persisted with a cursor at most: beyond them a restart
/// forgets (and resends: at least once), so the record stays small.
pub(super) const MAX_SAVED_RANGES: usize = 32;

/// A run of finished messages `start..end` and their bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    end: u64,
    bytes: u64,
}

/// Finished sequence numbers above a cursor, as disjoint ranges, so a
/// long run (a replay addressed to another sink) costs one entry.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct DoneSet {
    runs: BTreeMap<u64, Run>,
}

impl DoneSet {
    /// Whether `seq` is in the set.
    pub(crate) fn contains(&self, seq: u64) -> bool {
        self.runs
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, r)| seq < r.end)
    }

    /// Whether every seq in `first..=last` is in the set.
    pub(crate) fn covers(&self, first: u64, last: u64) -> bool {
        self.runs
            .range(..=first)
            .next_back()
            .is_some_and(|(_, r)| last < r.end)
    }

    /// Adds `seq` (not yet in the set), merging with its neighbours.
    pub(crate) fn insert(&mut self, seq: u64, bytes: u64) {
        self.insert_run(seq, seq + 1, bytes);
    }

    fn insert_run(&mut self, start: u64, end: u64, bytes: u64) {
        let mut run = Run { end, bytes };
        let mut start = start;
        if let Some((&s, left)) = self.runs.range_mut(..start).next_back() {
            if left.end == start {
                left.end = run.end;
                left.bytes += run.bytes;
                run = *left;
                start = s;
            }
        }
        if let Some(right) = self.runs.remove(&run.end) {
            run.end = right.end;
            run.bytes += right.bytes;
        }
        self.runs.insert(start, run);
    }

    /// Removes and returns the run starting at `at`: `(end, bytes)`.
    fn take_from(&mut self, at: u64) -> Option<(u64, u64)> {
        self.runs.remove(&at).map(|r| (r.end, r.bytes))
    }

    /// Number of runs.
    #[cfg(test)]
    pub(crate) fn runs(&self) -> usize {
        self.runs.len()
    }
}

/// A sink as the ledger sees it.
pub(crate) struct SinkState {
    pub name: String,
    pub cursor: u64,
    pub done: DoneSet,
    /// Messages not yet done for this sink (depth), and their bytes.
    pub pending_n: u64,
    pub pending_b: u64,
    /// Why the last attempt failed; becomes a failure's `errorMessage`.
    pub last_error: Option<String>,
    pub counters: SinkCounters,
}

impl SinkState {
    /// A sink starting at `cursor` with nothing pending.
    pub(crate) fn new(name: &str, cursor: u64) -> Self {
        Self {
            name: name.to_string(),
            cursor,
            done: DoneSet::default(),
            pending_n: 0,
            pending_b: 0,
            last_error: None,
            counters: SinkCounters::default(),
        }
    }

    pub(crate) fn is_done(&self, seq: u64) -> bool {
        seq < self.cursor || self.done.contains(seq)
    }

    /// Whether every message in `first..=last` is done.
    pub(crate) fn all_done(&self, first: u64, last: u64) -> bool {
        last < self.cursor || self.done.covers(first.max(self.cursor), last)
    }

    /// Marks `seq` done; false when it already was.
    pub(crate) fn mark_done(&mut self, seq: u64, bytes: u64) -> bool {
        if self.is_done(seq) {
            return false;
        }
        self.done.insert(seq, bytes);
        self.pending_n = self.pending_n.saturating_sub(1);
        self.pending_b = self.pending_b.saturating_sub(bytes);
        self.advance();
        true
    }

    /// Moves the cursor over the run that starts at it.
    fn advance(&mut self) {
        if let Some((end, _)) = self.done.take_from(self.cursor) {
            self.cursor = end;
        }
    }

    /// Writes the cursor, the depth a restart will find, and the first
    /// [`MAX_SAVED_RANGES`] done runs; later runs count as pending again.
    pub(crate) fn persist(&self, batch: &mut Batch) {
        let (mut n, mut b) = (self.pending_n, self.pending_b);
        let mut saved = Vec::new();
        for (i, (&start, run)) in self.done.runs.iter().enumerate() {
            if i < MAX_SAVED_RANGES {
                saved.push((start, *run));
            } else {
                n += run.end - start;
                b += run.bytes;
            }
        }
        let mut v = keys::pair(self.cursor, n);
        v.extend_from_slice(&b.to_be_bytes());
        for (start, run) in saved {
            v.extend_from_slice(&keys::pair(start, run.end));
            v.extend_from_slice(&run.bytes.to_be_bytes());
        }
        batch.put(keys::cursor(&self.name), v);
    }

    /// Reads what [`SinkState::persist`] wrote (format 1 wrote the first
    /// 24 bytes only); `None` when malformed.
    pub(crate) fn decode(name: &str, v: &[u8]) -> Option<Self> {
        let [cursor, n, b] = keys::u64s::<3>(v)?;
        let rest = &v[24..];
        if !rest.len().is_multiple_of(24) {
            return None;
        }
        let mut s = Self::new(name, cursor);
        s.pending_n = n;
        s.pending_b = b;
        for r in rest.chunks_exact(24) {
            let [start, end, bytes] = keys::u64s::<3>(r)?;
            if start < s.cursor || end <= start || s.done.contains(start) {
                return None;
            }
            s.done.insert_run(start, end, bytes);
        }
        s.advance();
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Op;

    fn saved(s: &SinkState) -> Vec<u8> {
        let mut b = Batch::default();
        s.persist(&mut b);
        match b.ops.pop() {
            Some(Op::Put(_, v)) => v,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn out_of_order_completions_merge_and_move_the_cursor() {
        let mut s = SinkState::new("hub", 10);
        s.pending_n = 6;
        s.pending_b = 60;
        for seq in [12, 14, 13] {
            assert!(s.mark_done(seq, 10));
        }
        assert_eq!((s.cursor, s.done.runs()), (10, 1));
        assert!(s.all_done(12, 14) && !s.all_done(11, 14));
        assert!(!s.mark_done(13, 10), "already done");
        assert!(s.mark_done(10, 10) && s.mark_done(11, 10));
        assert_eq!((s.cursor, s.done.runs(), s.pending_n), (15, 0, 1));
    }

    #[test]
    fn done_ranges_survive_a_restart_and_only_the_first_ones_are_kept() {
        let mut s = SinkState::new("hub", 1);
        s.pending_n = 200;
        s.pending_b = 2000;
        for seq in (3..200).step_by(3) {
            s.mark_done(seq, 10);
        }
        let again = SinkState::decode("hub", &saved(&s)).unwrap();
        assert_eq!(again.cursor, 1);
        assert_eq!(again.done.runs(), MAX_SAVED_RANGES);
        let kept = MAX_SAVED_RANGES as u64;
        assert!(again.is_done(3) && again.is_done(3 * kept) && !again.is_done(3 * kept + 3));
        let forgotten = s.done.runs() as u64 - kept;
        assert_eq!(again.pending_n, s.pending_n + forgotten);
        assert_eq!(again.pending_b, s.pending_b + forgotten * 10);
    }

    #[test]
    fn a_format_1_cursor_reads_as_a_cursor_without_ranges() {
        let mut v = keys::pair(7, 3);
        v.extend_from_slice(&30u64.to_be_bytes());
        let s = SinkState::decode("hub", &v).unwrap();
        assert_eq!(
            (s.cursor, s.pending_n, s.pending_b, s.done.runs()),
            (7, 3, 30, 0)
        );
        assert!(SinkState::decode("hub", &v[..20]).is_none());
        let mut bad = v.clone();
        bad.extend_from_slice(&keys::pair(2, 5));
        bad.extend_from_slice(&0u64.to_be_bytes());
        assert!(
            SinkState::decode("hub", &bad).is_none(),
            "a range below the cursor"
        );
    }
}
